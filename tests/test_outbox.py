"""The event outbox: order, per-sink cursors, the bound and its drop policy, replay, and durability under kill -9."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from kakehashi.events.event import Event
from kakehashi.events.outbox import Outbox


def make_event(frame: int, stream: str = "cam1", snapshot: bytes | None = None) -> Event:
    return Event(
        stream=stream,
        rule="door",
        kind="enter",
        frame_time=1_700_000_000.0 + frame / 10,
        frame=frame,
        track_id=frame % 3,
        detections=[{"label": "person", "score": 0.9, "box": [1, 2, 3, 4], "track_id": frame % 3}],
        data={"count": frame},
        snapshot=snapshot,
    )


def frames(pairs: list[tuple[int, Event]]) -> list[int]:
    return [event.frame for _, event in pairs]


def dropped_total() -> float:
    return REGISTRY.get_sample_value("kakehashi_outbox_dropped_total") or 0.0


def test_events_keep_their_order_and_each_sink_its_cursor(tmp_path: Path) -> None:
    async def scenario() -> None:
        path = tmp_path / "outbox.db"
        async with Outbox(path, ["hook", "mqtt"]) as outbox:
            seqs = await outbox.record([make_event(i, snapshot=b"\xff\xd8jpeg" if i == 2 else None) for i in range(5)])
            assert seqs == sorted(seqs) and len(set(seqs)) == 5
            assert [seq for seq, _ in await outbox.pending("hook", 10)] == seqs
            assert (await outbox.pending("hook", 10))[2][1] == make_event(2, snapshot=b"\xff\xd8jpeg")
            assert frames(await outbox.pending("hook", 2)) == [0, 1]
            await outbox.acknowledge("hook", seqs[2])
            await outbox.acknowledge("hook", seqs[0])  # never backwards
            assert frames(await outbox.pending("hook", 10)) == [3, 4]
            assert frames(await outbox.pending("mqtt", 10)) == [0, 1, 2, 3, 4]
            assert await outbox.queued("hook") == 2
            with pytest.raises(KeyError, match="unknown"):
                await outbox.pending("unknown", 10)
        async with Outbox(path, ["hook", "mqtt"]) as outbox:  # cursors are on disk
            assert frames(await outbox.pending("hook", 10)) == [3, 4]
            assert await outbox.queued("mqtt") == 5
            later = await outbox.record([make_event(5)])
            assert later[0] > seqs[-1]

    asyncio.run(scenario())


def test_new_sinks_start_at_the_end_and_removed_sinks_protect_nothing(tmp_path: Path, caplog) -> None:
    async def scenario() -> None:
        path = tmp_path / "outbox.db"
        async with Outbox(path, ["old"], max_events=4) as outbox:
            await outbox.record([make_event(i) for i in range(3)])
        async with Outbox(path, ["new"], max_events=4) as outbox:
            assert await outbox.pending("new", 10) == []
            await outbox.record([make_event(3)])
            assert frames(await outbox.pending("new", 10)) == [3]
            before = dropped_total()
            await outbox.record([make_event(4), make_event(5)])  # 6 > 4: "new" never had frames 0-1, "old" is ignored
            assert dropped_total() == before
            assert frames(await outbox.recent()) == [2, 3, 4, 5]
        async with Outbox(path, ["old", "new"], max_events=4) as outbox:
            assert frames(await outbox.pending("old", 10)) == [2, 3, 4, 5]  # resumes where it was, as far as kept

    caplog.set_level(logging.WARNING)
    asyncio.run(scenario())
    assert "dropped" not in caplog.text


def test_the_bound_removes_delivered_events_first_then_drops_the_oldest_undelivered(tmp_path: Path, caplog) -> None:
    async def scenario() -> None:
        async with Outbox(tmp_path / "outbox.db", ["fast", "slow"], max_events=5) as outbox:
            seqs = await outbox.record([make_event(i) for i in range(4)])
            await outbox.acknowledge("fast", seqs[3])
            await outbox.acknowledge("slow", seqs[1])
            before = dropped_total()
            await outbox.record([make_event(4), make_event(5)])  # 6 > 5: frame 0, delivered to both, goes
            assert frames(await outbox.recent()) == [1, 2, 3, 4, 5]
            assert dropped_total() == before
            assert "dropped" not in caplog.text

            await outbox.record([make_event(6), make_event(7), make_event(8)])  # 8 > 5: 1 delivered, 2 undelivered
            assert frames(await outbox.recent()) == [4, 5, 6, 7, 8]
            assert dropped_total() == before + 2
            assert frames(await outbox.pending("slow", 10)) == [4, 5, 6, 7, 8]
            assert frames(await outbox.pending("fast", 10)) == [4, 5, 6, 7, 8]
            assert await outbox.queued("slow") == 5

    caplog.set_level(logging.WARNING, logger="kakehashi.events.outbox")
    asyncio.run(scenario())
    warnings = [record.getMessage() for record in caplog.records if "dropped" in record.getMessage()]
    assert len(warnings) == 1
    assert "dropped the 2 oldest undelivered events" in warnings[0]
    assert "2 for sink 'slow'" in warnings[0] and "'fast'" not in warnings[0]  # fast had delivered them


def test_replay_serves_delivered_events_by_stream_and_after_a_seq(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with Outbox(tmp_path / "outbox.db", ["hook"]) as outbox:
            seqs = await outbox.record([make_event(i, stream="cam1" if i % 2 else "cam2") for i in range(10)])
            await outbox.acknowledge("hook", seqs[-1])  # all delivered: still there for replay
            assert await outbox.pending("hook", 10) == []
            assert frames(await outbox.recent()) == list(range(10))
            assert frames(await outbox.recent(limit=3)) == [7, 8, 9]
            assert frames(await outbox.recent(stream="cam1")) == [1, 3, 5, 7, 9]
            assert frames(await outbox.recent(limit=2, stream="cam2")) == [6, 8]
            assert frames(await outbox.recent(limit=3, after_seq=seqs[4])) == [5, 6, 7]
            assert frames(await outbox.recent(stream="cam1", after_seq=seqs[4])) == [5, 7, 9]
            assert [seq for seq, _ in await outbox.recent(limit=3, after_seq=seqs[4])] == seqs[5:8]

    asyncio.run(scenario())


_WRITER = """
import asyncio, sys
from pathlib import Path
from kakehashi.events.outbox import Outbox
from test_outbox import make_event

async def main():
    async with Outbox(Path(sys.argv[1]), ["hook"]) as outbox:
        for frame in range(1_000_000):
            (seq,) = await outbox.record([make_event(frame, snapshot=bytes(2000))])
            print(seq, frame, flush=True)

asyncio.run(main())
"""


def test_every_event_record_returned_for_survives_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(_WRITER), str(path)], stdout=subprocess.PIPE, env=env, text=True
    )
    assert child.stdout is not None
    printed = []
    try:
        for line in child.stdout:
            printed.append(tuple(map(int, line.split())))
            if len(printed) == 50:
                child.send_signal(signal.SIGKILL)
                break
    finally:
        child.kill()
        rest, _ = child.communicate(timeout=10)
    printed += [tuple(map(int, line.split())) for line in rest.splitlines()]
    assert child.returncode == -signal.SIGKILL
    assert len(printed) >= 50

    async def reopen() -> list[tuple[int, Event]]:
        async with Outbox(path, ["hook"]) as outbox:
            return await outbox.pending("hook", 1_000_000)

    stored = asyncio.run(reopen())
    stored_by_seq = {seq: event for seq, event in stored}
    assert [seq for seq, _ in stored] == sorted(stored_by_seq)
    for seq, frame in printed:
        assert stored_by_seq[seq] == make_event(frame, snapshot=bytes(2000))
    assert [stored_by_seq[seq].frame for seq, _ in printed] == [frame for _, frame in printed]

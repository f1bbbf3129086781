"""Load decisions (the faster runtime, the batch size, whether outputs follow the batch) are measured at a model's
first load on a machine, kept on disk, and reused by later loads until the model, its configuration, the runtimes
or the machine change."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from conftest import YOLO11, YOLO26
from inprocess import load
from kakehashi.backends import SWITCH_GAIN
from kakehashi.backends.onnxruntime import OnnxRuntimeBackend
from kakehashi.repository import repository as repository_module
from kakehashi.repository.handle import WARM_NICENESS, ModelHandle
from kakehashi.repository.measuring import fastest_batch_size
from kakehashi.repository.repository import ModelRepository
from kakehashi.servable import ModelState
from kakehashi.settings import Limits
from onnx_builders import tiny_model

MEASURED = " per inference"  # the log line of `auto` timing the runtimes
REUSED = "load decisions reused"
OTHER = {"onnxruntime": "openvino", "openvino": "onnxruntime"}


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "decisions"
    monkeypatch.setenv("KAKEHASHI_CACHE_DIR", str(folder))
    return folder


SMALL = "batching: {max_batch_size: 2}\ninput: {size: 160}\n"  # quick to time (YOLO26 needs 300 anchors)


def _repository(root: Path, model: Path = YOLO11, yaml: str = SMALL) -> Path:
    folder = root / "yolo"
    (folder / "1").mkdir(parents=True, exist_ok=True)
    shutil.copy(model, folder / "1" / "model.onnx")
    (folder / "model.yaml").write_text(yaml)
    return folder


def _load(folder: Path, caplog: pytest.LogCaptureFixture):
    caplog.clear()
    with caplog.at_level(logging.INFO):
        handle = load(folder)
    assert handle.ready, handle.reason
    return handle, caplog.text


def _runtime(handle) -> str:
    return "openvino" if handle.backend.platform == "openvino" else "onnxruntime"


def test_the_first_load_measures_and_later_loads_reuse_what_it_found(tmp_path, cache, caplog):
    folder = _repository(tmp_path)
    first, text = _load(folder, caplog)
    assert MEASURED in text and REUSED not in text
    [stored] = cache.glob("*.json")
    decision = json.loads(stored.read_text())
    assert decision | {"agreement": ""} == {
        "runtime": _runtime(first),
        "precision": "f32",
        "agreement": "",
        "batch_size": first.preferred_batch_size,
        "rows_follow_batch": True,
    }
    # random weights find nothing on the calibration images: bf16 (where this CPU computes in it) is judged, and
    # refused, exactly when it ranked before every f32 runtime (the reference's time against the others' times
    # SWITCH_GAIN)
    timed = {
        f"{runtime} {precision}": float(ms) * (1 if (runtime, precision) == ("onnxruntime", "f32") else SWITCH_GAIN)
        for runtime, precision, ms in re.findall(r"(\w+) (f32|bf16) ([0-9.]+) ms", text.split(" per inference")[0])
    }
    judged = "openvino bf16" in timed and timed.pop("openvino bf16") < min(timed.values())
    refused = "openvino bf16 refused: disagrees with f32: nothing to compare"
    assert decision["agreement"].startswith(refused) if judged else decision["agreement"] == "", (timed, decision)
    assert first.agreement == decision["agreement"]
    second, text = _load(folder, caplog)
    assert REUSED in text and MEASURED not in text
    assert (_runtime(second), second.preferred_batch_size) == (_runtime(first), first.preferred_batch_size)
    assert second.agreement == first.agreement


def _decision(runtime: str, batch_size: int, rows_follow_batch: bool) -> dict:
    return {
        "runtime": runtime,
        "precision": "f32",
        "agreement": "",
        "batch_size": batch_size,
        "rows_follow_batch": rows_follow_batch,
    }


def test_a_stored_decision_is_what_serves(tmp_path, cache, caplog):
    """Edited on disk to the other runtime and batch size 1, the decision is obeyed, so it is really read."""
    folder = _repository(tmp_path)
    first, _ = _load(folder, caplog)
    [stored] = cache.glob("*.json")
    stored.write_text(json.dumps(_decision(OTHER[_runtime(first)], 1, True)))
    second, _ = _load(folder, caplog)
    assert (_runtime(second), second.preferred_batch_size) == (OTHER[_runtime(first)], 1)
    stored.write_text(json.dumps(_decision(_runtime(first), 2, False)))
    third, text = _load(folder, caplog)
    assert third.max_batch_size == 1 and "never batched together" in text


def _tiny_on_two_cores(root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A tiny model whose ONNX Runtime layout on two cores is a solo session (both cores) and two single-thread
    sessions for a queue, loaded once so its decisions are kept."""
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    tiny_model(root / "tiny" / "1" / "model.onnx")
    (root / "tiny" / "model.yaml").write_text("backend: onnxruntime\ntask: tensor\n")
    assert load(root).ready  # measures and keeps its decisions
    return root


def _recorded(monkeypatch: pytest.MonkeyPatch, queue_run_seconds: float = 0.0) -> list[tuple]:
    """Events in order as they end: ("run", session id, solo, the running thread's niceness) of every ONNX Runtime
    run, and ("state", state) of every handle; a queue session's run takes `queue_run_seconds` longer."""
    events: list[tuple] = []
    run, set_state = OnnxRuntimeBackend.run, ModelHandle._set_state

    def recorded_run(self, feeds):
        answer = run(self, feeds)
        if not self.solo:
            time.sleep(queue_run_seconds)
        events.append(("run", id(self), self.solo, os.getpriority(os.PRIO_PROCESS, threading.get_native_id())))
        return answer

    def recorded_state(self, state):
        events.append(("state", state))
        set_state(self, state)

    monkeypatch.setattr(OnnxRuntimeBackend, "run", recorded_run)
    monkeypatch.setattr(ModelHandle, "_set_state", recorded_state)
    return events


def _queue_sessions(handle: ModelHandle) -> set[int]:
    return {id(instance) for instance in handle._instances if not instance.solo}


def test_a_reused_decision_serves_once_the_solo_session_is_warm_and_warms_the_others_after_at_a_lower_priority(
    tmp_path, cache, monkeypatch
):
    root = _tiny_on_two_cores(tmp_path, monkeypatch)
    events = _recorded(monkeypatch)
    handle = load(root)  # reuses the decisions
    assert handle.ready and handle._measuring is not None
    handle._measuring.join(30)
    assert not handle._measuring.is_alive()
    ready = events.index(("state", ModelState.READY))
    before = [e for e in events[:ready] if e[0] == "run"]
    after = [e for e in events[ready:] if e[0] == "run"]
    assert before and all(solo for _, _, solo, _ in before), before
    lower = min(19, os.getpriority(os.PRIO_PROCESS, 0) + WARM_NICENESS)
    assert {(solo, niceness) for _, _, solo, niceness in after} == {(False, lower)}, after
    assert {session for _, session, _, _ in after} == _queue_sessions(handle)  # both queue sessions warmed


def test_a_reload_takes_over_once_every_session_of_the_new_version_is_warm(tmp_path, cache, monkeypatch):
    root = _tiny_on_two_cores(tmp_path, monkeypatch)
    repository = ModelRepository(root, ThreadPoolExecutor(2), Limits())
    repository.load_all()
    old = repository.get("tiny")
    assert old._measuring is not None
    old._measuring.join(30)  # its own queue sessions warmed
    events = _recorded(monkeypatch, queue_run_seconds=0.3)  # warming a queue session takes a while
    asyncio.run(repository.load("tiny"))  # a reload reusing the decisions
    new = repository.get("tiny")
    assert new is not old and new.ready and old.state is ModelState.UNLOADED
    warmed = {session for _, session, solo, _ in (e for e in events if e[0] == "run") if not solo}
    assert warmed == _queue_sessions(new)  # before the reload returned: the old version served meanwhile


def test_a_reload_whose_new_version_warms_too_long_takes_over_anyway_and_says_so(tmp_path, cache, monkeypatch, caplog):
    """A busy server may hold the lower-priority warm-up back for long; a reload holds every other load meanwhile:
    past `WARM_WAIT_SECONDS` the new version takes over cold, and goes on warming as it serves."""
    root = _tiny_on_two_cores(tmp_path, monkeypatch)
    repository = ModelRepository(root, ThreadPoolExecutor(2), Limits())
    repository.load_all()
    old = repository.get("tiny")
    assert old._measuring is not None
    old._measuring.join(30)
    monkeypatch.setattr(repository_module, "WARM_WAIT_SECONDS", 0.2)
    held = threading.Event()  # queue sessions' runs (their warm-up) wait for it
    run = OnnxRuntimeBackend.run

    def held_run(self, feeds):
        if not self.solo:
            held.wait(30)
        return run(self, feeds)

    monkeypatch.setattr(OnnxRuntimeBackend, "run", held_run)
    try:
        with caplog.at_level(logging.WARNING):
            asyncio.run(repository.load("tiny"))
        new = repository.get("tiny")
        assert new is not old and new.ready and old.state is ModelState.UNLOADED
        assert not new.wait_warm(0)  # it took over still warming
        assert any(
            "version 1: still warming up after" in r.message and "it takes over now" in r.message
            for r in caplog.records
        )
    finally:
        held.set()
    assert new.wait_warm(30)  # and went on warming as it served
    asyncio.run(repository.close_all())


def test_another_model_or_configuration_is_measured_again(tmp_path, cache, caplog):
    _load(_repository(tmp_path / "a"), caplog)
    _, text = _load(_repository(tmp_path / "b", YOLO26), caplog)  # other bytes
    assert MEASURED in text
    _, text = _load(_repository(tmp_path / "c", yaml=SMALL + "threads: 1\n"), caplog)
    assert MEASURED in text
    assert len(list(cache.glob("*.json"))) == 3


def test_an_unreadable_decision_is_measured_again_and_replaced(tmp_path, cache, caplog):
    folder = _repository(tmp_path)
    _load(folder, caplog)
    [stored] = cache.glob("*.json")
    stored.write_text('{"runtime": "openvino", "batch')
    _, text = _load(folder, caplog)
    assert "ignoring the unreadable load decisions" in text and MEASURED in text
    assert json.loads(stored.read_text())["rows_follow_batch"] is True


def test_an_empty_cache_dir_turns_caching_off(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("KAKEHASHI_CACHE_DIR", "")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    folder = _repository(tmp_path)
    _load(folder, caplog)
    _, text = _load(folder, caplog)
    assert MEASURED in text and REUSED not in text
    assert not any(tmp_path.rglob("*.json"))


def test_without_kakehashi_cache_dir_decisions_go_to_the_xdg_cache(tmp_path, monkeypatch, caplog):
    monkeypatch.delenv("KAKEHASHI_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    _load(_repository(tmp_path), caplog)
    assert len(list((tmp_path / "xdg" / "kakehashi").glob("*.json"))) == 1


class _Costed:
    """A backend whose batch of n rows takes `cost(n)` seconds, one run at a time, recording the sizes it ran."""

    concurrent_runs = 1
    solo = False

    def __init__(self, cost) -> None:
        self.cost, self.sizes = cost, []

    def run(self, feeds):
        rows = len(next(iter(feeds.values())))
        self.sizes.append(rows)
        time.sleep(self.cost(rows))
        return {}


FEEDS = {rows: {"x": np.zeros((rows, 1), np.float32)} for rows in range(1, 9)}


def test_batch_sizes_are_timed_until_two_larger_ones_stop_paying():
    # rows per second: 1 → 25, 2 → 50, 4 → 40, 8 → 40 (no gain twice: stop), so 16 is never run and 2 is chosen
    # (4 and 8 lose by a fifth, so a late wake-up from sleep on a busy machine cannot turn one into a gain)
    feeds = {rows: {"x": np.zeros((rows, 1), np.float32)} for rows in range(1, 17)}
    flat = _Costed(lambda rows: 0.04 if rows <= 2 else 0.025 * rows)
    assert fastest_batch_size([flat], feeds) == 2
    assert sorted(set(flat.sizes)) == [1, 2, 4, 8]
    # one size timed while the machine was busy does not end the search: 4 looks slow, 8 pays, 8 is chosen
    busy_at_four = _Costed(lambda rows: {1: 0.04, 2: 0.05, 4: 0.2}.get(rows, 0.03 + 0.001 * rows))
    assert fastest_batch_size([busy_at_four], FEEDS) == 8
    # every doubling pays (a fixed cost per batch): all the powers of two up to 8 are timed, and 8 is chosen
    growing = _Costed(lambda rows: 0.04 + 0.002 * rows)
    assert fastest_batch_size([growing], FEEDS) == 8
    assert sorted(set(growing.sizes)) == [1, 2, 4, 8]


def test_a_larger_batch_size_is_chosen_only_where_it_pays_a_tenth_more():
    # rows per second: 1 → 25, 2 → 26.7 (+7 %), 4 → 26.7, 8 → 20: the few per cent a larger batch gains on a CPU
    # do not pay for its memory and latency: 1
    modest = _Costed(lambda rows: {1: 0.04, 2: 0.075, 4: 0.15}.get(rows, 0.05 * rows))
    assert fastest_batch_size([modest], FEEDS) == 1
    # 2 gains 7 % on 1 (not enough), 4 gains 40 % on 1: 4
    later = _Costed(lambda rows: {1: 0.04, 2: 0.075, 4: 0.115}.get(rows, 0.05 * rows))
    assert fastest_batch_size([later], FEEDS) == 4


class _SpreadWhenLarge:
    """A session taking two runs at once whose batches of more than one row spread over every core (one such run
    at a time): alone, 1 row takes 40 ms and n rows 25n ms (25 against 40 rows/s: 2, 4 and 8 pay 1.6x); two runs
    at once, the 1-row runs go side by side (20 ms a run: 50 rows/s) while the larger ones wait for each other
    (still 40 rows/s)."""

    concurrent_runs = 2
    solo = False

    def __init__(self) -> None:
        self.lock = threading.Lock()

    def run(self, feeds):
        rows = len(next(iter(feeds.values())))
        with self.lock if rows > 1 else contextlib.nullcontext():
            time.sleep(0.04 if rows == 1 else 0.025 * rows)
        return {}


def test_batch_sizes_are_timed_with_every_run_slot_busy_as_a_full_queue_serves_them():
    # (2 and 4 lose too: 40 rows/s at most against 50 for 1 row)
    assert fastest_batch_size([_SpreadWhenLarge()], FEEDS) == 1  # timed one run at a time, 2 would win

"""Live streams end to end through a real `kakehashi serve` process: a real RTSP source (GStreamer), the bundled COCO
detector, results over Server-Sent Events and WebSocket, events through the outbox to a real webhook receiver and
a real mosquitto broker, the pulled cable, kill -9, and the drain on SIGTERM."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import httpx
import orjson
import pytest
import websockets
import yaml

from brokers import Mosquitto, WebhookReceiver, eventually
from conftest import Server, free_port
from kakehashi.settings import coco_model_path
from rtsp_server import RtspServer
from stream_videos import make_walk_video

COCO = coco_model_path()
WIDTH, HEIGHT = 640, 480
FPS = 10
WALK_SECONDS = 2.5  # one pass, left to right; the RTSP server and looping files start it again at once

# The line runs up the middle of the frame, from the bottom edge to the top: its right (y down) is the right half,
# so the astronaut walking left to right crosses it "in". The zone is the right half.
MIDDLE = {"name": "middle", "start": [WIDTH / 2, HEIGHT], "end": [WIDTH / 2, 0]}
RIGHT = {"name": "right", "points": [[WIDTH / 2, 0], [WIDTH, 0], [WIDTH, HEIGHT], [WIDTH / 2, HEIGHT]]}


def poll(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Call `check` until it returns something truthy (returned); fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout} s: {what}")
        time.sleep(0.05)


def status(server: Server, name: str) -> dict[str, Any]:
    answer = server.client.get(f"/v1/streams/{name}")
    assert answer.status_code == 200, answer.text
    return answer.json()


def recorded(server: Server, name: str | None = None) -> list[dict[str, Any]]:
    """Every event the server's outbox holds (of stream `name`), oldest first."""
    query: dict[str, str | int] = {"limit": 1000, **({"stream": name} if name else {})}
    answer = server.client.get("/v1/events", params=query)
    assert answer.status_code == 200, answer.text
    return answer.json()["events"]


def sse_results(server: Server, name: str, enough: Callable[[list[dict]], bool], timeout: float) -> list[dict]:
    """Follow the stream's Server-Sent Events until `enough(results)`, within `timeout` seconds."""
    results: list[dict] = []
    deadline = time.monotonic() + timeout
    with server.client.stream("GET", f"/v1/streams/{name}/results", timeout=10) as answer:
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/event-stream")
        kind = None
        for line in answer.iter_lines():
            if line.startswith("event: "):
                kind = line[len("event: ") :]
            elif line.startswith("data: "):
                assert kind == "result"
                results.append(orjson.loads(line[len("data: ") :]))
                if enough(results):
                    return results
            if time.monotonic() > deadline:
                break
    pytest.fail(f"not within {timeout} s: enough results on stream {name} (got {len(results)})")


def person(result: dict) -> dict | None:
    """The frame's astronaut: its biggest person detection."""
    people = [d for d in result["detections"] if d["name"] == "person"]
    return max(
        people, key=lambda d: (d["box"]["x2"] - d["box"]["x1"]) * (d["box"]["y2"] - d["box"]["y1"]), default=None
    )


def anchor_x(detection: dict) -> float:
    return (detection["box"]["x1"] + detection["box"]["x2"]) / 2


def passes(results: list[dict]) -> list[list[dict]]:
    """The astronaut's detections split into walks: a new walk starts where he jumps back to the left."""
    walks: list[list[dict]] = []
    for result in results:
        found = person(result)
        if found is None:
            continue
        if not walks or anchor_x(found) < anchor_x(walks[-1][-1]) - 60:  # jitter stays under 30 pixels
            walks.append([])
        walks[-1].append(found)
    return walks


def whole_walks(results: list[dict]) -> list[list[dict]]:
    """The walks seen from their start (the first is not: it comes in a burst, see below) to the right edge."""
    walks = passes(results)
    return [w for w in walks[1:-1] if anchor_x(w[0]) < WIDTH / 4 and anchor_x(w[-1]) > WIDTH * 3 / 4]


@pytest.fixture(scope="module")
def walk_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_walk_video(tmp_path_factory.mktemp("videos") / "walk.mp4", WALK_SECONDS, FPS, (WIDTH, HEIGHT))


@pytest.fixture(scope="module")
def server(serve_module) -> Server:
    """The COCO detector, API streams limited to network sources (no --allow-local-streams)."""
    return serve_module(COCO)


@pytest.fixture
def rtsp(walk_video: Path) -> Iterator[RtspServer]:
    with RtspServer(walk_video) as camera:
        yield camera


@pytest.fixture
def deleted(server: Server) -> Iterator[list[str]]:
    """Names of streams to delete after the test, if it did not."""
    names: list[str] = []
    yield names
    for name in names:
        server.client.delete(f"/v1/streams/{name}")


def test_an_rtsp_walk_is_tracked_counted_and_replayed(server: Server, rtsp: RtspServer, deleted: list[str]) -> None:
    bad = server.client.post("/v1/streams", json={"name": "walk", "url": rtsp.url, "max_in_flight": 99})
    assert bad.status_code == 400 and "max_in_flight" in bad.json()["error"], bad.text
    bad = server.client.post("/v1/streams", json={"name": "walk", "url": rtsp.url, "zoom": 2})
    assert bad.status_code == 400 and "zoom" in bad.json()["error"], bad.text
    local = server.client.post("/v1/streams", json={"name": "walk", "url": str(rtsp.video)})
    assert local.status_code == 400 and "network sources only" in local.json()["error"], local.text
    assert server.client.get("/v1/streams").json()["streams"] == []

    config = {
        "name": "walk",
        "url": rtsp.url,
        "model": "yolox-nano-coco",
        # people only (a line counts every tracked class: the table's box flickers across it); low scores too, as
        # ByteTrack wants them (they keep a track through the frames where the astronaut scores under 0.5)
        "params": {"classes": [0], "conf": 0.1},
        "zones": [RIGHT],
        "lines": [MIDDLE],
        "rules": [
            {"kind": "line", "name": "crossed", "line": "middle", "classes": ["person"]},
            {"kind": "presence", "name": "arrived", "classes": ["person"], "zone": "right", "frames": 3,
             "min_confidence": 0.3, "cooldown_seconds": 3600},  # the astronaut scores 0.3 to 0.8
        ],
    }  # fmt: skip
    created = server.client.post("/v1/streams", json=config)
    deleted.append("walk")
    assert created.status_code == 201, created.text
    assert created.headers["location"] == "/v1/streams/walk"
    poll(lambda: status(server, "walk")["state"] == "running", 20, "the stream running")

    # The first walk comes in a burst (the frames FFmpeg read while probing the stream, all at once: the stream
    # takes the newest, skipping many), so it is not judged; follow until two full walks are seen after it.
    results = sse_results(server, "walk", lambda got: len(whole_walks(got)) >= 2, 40)
    assert {"stream", "frame", "frame_time", "lag_ms", "shape", "detections", "zones", "lines", "events"} <= set(
        results[0]
    )
    assert all(r["stream"] == "walk" and r["shape"] == [HEIGHT, WIDTH] for r in results)
    assert {d["name"] for r in results for d in r["detections"]} == {"person"}, "the params reach the model"
    frames = [r["frame"] for r in results]
    assert frames == sorted(set(frames)), "results in frame order, each once"
    assert all(r["lines"]["middle"]["out"] == 0 for r in results)

    walks = passes(results)[1:]  # the burst's walk aside
    for walk in walks:
        ids = {d["track_id"] for d in walk}
        assert len(ids) == 1, f"one track id through a walk, got {ids}"
        xs = [anchor_x(d) for d in walk]
        assert all(b > a - 30 for a, b in zip(xs, xs[1:])), f"he walks left to right (jitter aside): {xs}"
    assert len({walk[0]["track_id"] for walk in walks}) == len(walks), "each walk its own track"
    full = whole_walks(results)

    frame = server.client.get("/v1/streams/walk/frame.jpg")
    assert frame.status_code == 200 and frame.headers["content-type"] == "image/jpeg"
    assert frame.content[:2] == b"\xff\xd8"

    described = status(server, "walk")
    assert described["inferred"] >= len(results) and described["failed"] == 0
    assert described["url"] == rtsp.url and described["model"] == "yolox-nano-coco"
    assert described["lines"]["middle"]["out"] == 0 and described["lines"]["middle"]["in"] >= 2

    removed = server.client.delete("/v1/streams/walk")
    assert removed.status_code == 200 and removed.json() == {"deleted": "walk"}
    assert server.client.get("/v1/streams/walk").status_code == 404
    assert "walk" not in [s["id"] for s in server.client.get("/v1/streams").json()["streams"]]

    events = recorded(server, "walk")
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(set(seqs))
    assert [e["frame"] for e in events] == sorted(e["frame"] for e in events)
    crossings = [e for e in events if e["rule"] == "crossed"]
    arrivals = [e for e in events if e["rule"] == "arrived"]
    counted = crossings[-1]["data"]["in_count"]
    assert counted >= 2 and [e["data"]["in_count"] for e in crossings] == list(range(1, counted + 1))
    assert all(
        e["kind"] == "line" and e["data"]["direction"] == "in" and e["data"]["out_count"] == 0 for e in crossings
    )
    crossed = [e["track_id"] for e in crossings]
    assert len(set(crossed)) == len(crossed), "one crossing per walk"
    arrived = [e["track_id"] for e in arrivals]
    assert len(set(arrived)) == len(arrived), "the presence rule fires once per track"
    for event in arrivals:
        [detection] = event["detections"]
        assert event["kind"] == "presence" and event["data"] == {"zone": "right"}
        assert anchor_x(detection) > WIDTH / 2
    for walk in full:  # each full walk crossed the middle once and had its 3 frames in the right half
        assert crossed.count(walk[0]["track_id"]) == 1 and arrived.count(walk[0]["track_id"]) == 1
    live = [event["id"] for result in results for event in result["events"]]
    assert live and live == [e["id"] for e in events if e["id"] in live], "the live events are the recorded ones"


def test_a_pulled_cable_reconnects_through_the_server(server: Server, rtsp: RtspServer, deleted: list[str]) -> None:
    config = {"name": "cable", "url": rtsp.url, "reconnect_max_seconds": 1, "params": {"conf": 0.4}}
    assert server.client.post("/v1/streams", json=config).status_code == 201
    deleted.append("cable")
    poll(lambda: (s := status(server, "cable"))["state"] == "running" and s["inferred"] > 0, 20, "frames inferred")

    rtsp.stop()
    lost = poll(lambda: (s := status(server, "cable"))["state"] == "reconnecting" and s, 15, "reconnecting")
    assert lost["reason"], lost
    # the cable stays out until a connection has been refused: the stream keeps trying, it does not give up
    refused = poll(lambda: "refused" in (s := status(server, "cable"))["reason"] and s, 15, "a refused connection")
    assert refused["state"] == "reconnecting" and refused["reason"] == f"connection refused by 127.0.0.1:{rtsp.port}"
    before = refused["inferred"]

    rtsp.start()
    back = poll(
        lambda: (s := status(server, "cable"))["state"] == "running" and s["inferred"] > before + 5 and s,
        20,
        "frames inferred again",
    )
    assert back["source"]["reconnects"] > lost["source"]["reconnects"] and back["reason"] == ""
    assert back["failed"] == 0


def metric(server: Server, name: str, stream: str) -> float | None:
    for line in server.client.get("/metrics").text.splitlines():
        if line.startswith(f'{name}{{stream="{stream}"}} '):
            return float(line.split()[-1])
    return None


def test_a_stream_deleted_and_started_again_at_once_keeps_its_metrics(
    server: Server, rtsp: RtspServer, deleted: list[str]
) -> None:
    config = {"name": "again", "url": rtsp.url, "params": {"conf": 0.4}}
    assert server.client.post("/v1/streams", json=config).status_code == 201
    deleted.append("again")
    poll(lambda: (metric(server, "kakehashi_stream_frames_inferred_total", "again") or 0) > 0, 20, "frames inferred")

    # the operator's restart: DELETE, and a POST of the same name racing it (409 while the old one stops)
    answers: list[int] = []
    with httpx.Client(base_url=server.url, timeout=30) as other:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            removal = pool.submit(other.delete, "/v1/streams/again")
            deadline = time.monotonic() + 20
            while not answers or answers[-1] == 409:
                assert time.monotonic() < deadline, answers
                answers.append(server.client.post("/v1/streams", json=config).status_code)
            assert removal.result().status_code == 200
    assert answers[-1] == 201 and set(answers) <= {409, 201}, answers
    assert status(server, "again")["state"] in ("connecting", "running")
    poll(lambda: (metric(server, "kakehashi_stream_frames_inferred_total", "again") or 0) > 0, 20, "new frames counted")
    assert metric(server, "kakehashi_stream_frames_read_total", "again") is not None, "the source's series"


def test_a_websocket_follower_that_leaves_during_an_outage_is_let_go_at_once(
    server: Server, rtsp: RtspServer, deleted: list[str]
) -> None:
    config = {"name": "gone", "url": rtsp.url, "reconnect_max_seconds": 1, "params": {"conf": 0.4}}
    assert server.client.post("/v1/streams", json=config).status_code == 201
    deleted.append("gone")
    poll(lambda: status(server, "gone")["inferred"] > 0, 20, "frames inferred")
    rtsp.stop()  # no results from now on: nothing to send would reveal that a follower left
    poll(lambda: status(server, "gone")["state"] == "reconnecting", 15, "reconnecting")

    async def visit() -> None:
        async with websockets.connect(f"ws://127.0.0.1:{server.port}/v1/streams/gone/ws") as socket:
            await eventually(
                lambda: asyncio.to_thread(lambda: status(server, "gone")["subscribers"] == 1), 5, "the follower"
            )
            for _ in range(10):  # it stays a follower while connected, with nothing to send
                assert (await asyncio.to_thread(status, server, "gone"))["subscribers"] == 1
                await socket.ping()

    asyncio.run(visit())
    poll(lambda: status(server, "gone")["subscribers"] == 0, 5, "the follower let go")
    assert status(server, "gone")["state"] == "reconnecting", "still no result"


@pytest.mark.slow  # the outage must outlast the 15 s heartbeat
def test_a_follower_keeps_following_through_an_outage_longer_than_the_heartbeat(
    server: Server, rtsp: RtspServer, deleted: list[str]
) -> None:
    config = {"name": "quiet", "url": rtsp.url, "reconnect_max_seconds": 1, "params": {"conf": 0.4}}
    assert server.client.post("/v1/streams", json=config).status_code == 201
    deleted.append("quiet")
    poll(lambda: status(server, "quiet")["inferred"] > 0, 20, "frames inferred")
    with server.client.stream("GET", "/v1/streams/quiet/results", timeout=30) as answer:
        lines = answer.iter_lines()
        first = next(orjson.loads(line[6:]) for line in lines if line.startswith("data: "))
        rtsp.stop()
        quiet = time.monotonic()
        assert next((line for line in lines if line == ": heartbeat"), None) == ": heartbeat"
        assert time.monotonic() - quiet > 10, "a heartbeat only after a quiet spell"
        rtsp.start()
        after = next((orjson.loads(line[6:]) for line in lines if line.startswith("data: ")), None)
    assert after is not None, "the follower was dropped at the heartbeat"
    assert after["stream"] == "quiet" and after["frame"] > first["frame"]
    assert status(server, "quiet")["source"]["reconnects"] >= 1


# -- events through the sinks -----------------------------------------------------------------------------------


def looping_stream(video: Path, name: str) -> dict[str, Any]:
    """A looping file stream whose presence rule fires about twice a second while the astronaut is seen."""
    return {
        "name": name,
        "url": str(video),
        "model": "yolox-nano-coco",
        "loop": True,
        "fps": FPS,
        "rules": [{"kind": "presence", "name": "seen", "classes": ["person"], "cooldown_seconds": 0.4}],
    }


def write_config(path: Path, streams: list[dict], outbox: Path, sinks: dict[str, dict[str, Any]]) -> Path:
    path.write_text(yaml.safe_dump({"streams": streams, "events": {"outbox": str(outbox), "sinks": sinks}}))
    return path


class Subscriber:
    """A real MQTT client subscribed at QoS 1 to `kakehashi/#`, collecting (topic, body)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.received: list[tuple[str, dict[str, Any]]] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Subscriber:
        subscribed = asyncio.Event()
        self._task = asyncio.create_task(self._collect(subscribed))
        await asyncio.wait_for(subscribed.wait(), 10)
        return self

    async def _collect(self, subscribed: asyncio.Event) -> None:
        async with aiomqtt.Client("127.0.0.1", self.port, identifier="streams-test") as client:
            await client.subscribe("kakehashi/#", qos=1)
            subscribed.set()
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                self.received.append((str(message.topic), orjson.loads(message.payload)))

    def unique(self) -> list[dict[str, Any]]:
        first: dict[str, dict[str, Any]] = {}
        for _, body in self.received:
            first.setdefault(body["id"], body)
        return list(first.values())

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def without_seq(events: list[dict]) -> list[dict]:
    return [{k: v for k, v in event.items() if k != "seq"} for event in events]


@pytest.mark.slow  # a server, mosquitto and a webhook receiver (the fast loop has both sinks in test_event_delivery)
def test_every_event_reaches_a_flaky_webhook_and_mosquitto_in_order_once(serve, walk_video: Path, tmp_path: Path):
    async def scenario(broker: Mosquitto) -> None:
        async with WebhookReceiver(fail_first=3) as receiver, Subscriber(broker.port) as subscriber:
            sinks: dict[str, dict[str, Any]] = {
                "hook": {"type": "webhook", "url": receiver.url},
                "broker": {"type": "mqtt", "host": "127.0.0.1", "port": broker.port},
            }
            config = write_config(
                tmp_path / "serve.yaml", [looping_stream(walk_video, "lobby")], tmp_path / "o.db", sinks
            )
            server = await asyncio.to_thread(serve, COCO, "--config", str(config))
            async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:

                async def some_recorded() -> bool:
                    return len((await client.get("/v1/events", params={"limit": 1000})).json()["events"]) >= 10

                await eventually(some_recorded, 40, "10 events recorded")
                assert (await client.delete("/v1/streams/lobby")).status_code == 200
                events = (await client.get("/v1/events", params={"limit": 1000})).json()["events"]
                everything = len(events)
                await eventually(
                    lambda: len(receiver.unique()) >= everything and len(subscriber.unique()) >= everything,
                    30,
                    f"{everything} events at both sinks",
                )
                sinks_status: dict[str, Any] = {}

                async def acknowledged() -> bool:  # the sink's answer reaches the server after the body arrived
                    sinks_status.update((await client.get("/v1/streams")).json()["sinks"])
                    return all(sinks_status[sink]["delivered"] == everything for sink in ("hook", "broker"))

                await eventually(acknowledged, 10, "both sinks' acknowledgements")

        assert [e["seq"] for e in events] == sorted({e["seq"] for e in events})
        assert {e["rule"] for e in events} == {"seen"} and all(e["stream"] == "lobby" for e in events)
        assert receiver.unique() == without_seq(events)
        assert subscriber.unique() == without_seq(events)
        assert [topic for topic, _ in subscriber.received] == ["kakehashi/lobby/seen"] * len(subscriber.received)
        assert receiver.attempts[:4] == [events[0]["id"]] * 4, "the first event retried until accepted"
        assert receiver.attempts[4:] == [e["id"] for e in events[1:]], "then each event once"
        assert sinks_status["hook"]["failures"] == 3 and sinks_status["hook"]["delivered"] == everything
        assert sinks_status["broker"]["delivered"] == everything and sinks_status["broker"]["queued"] == 0

    with Mosquitto(tmp_path) as broker:
        asyncio.run(scenario(broker))


@pytest.mark.slow  # two servers (the fast loop has kill -9 of a recording process in test_outbox)
def test_events_recorded_before_kill_9_are_delivered_by_the_next_server(serve, walk_video: Path, tmp_path: Path):
    outbox = tmp_path / "outbox.db"
    nobody = {"hook": {"type": "webhook", "url": f"http://127.0.0.1:{free_port()}/hook", "timeout_seconds": 1}}
    first_config = write_config(tmp_path / "first.yaml", [looping_stream(walk_video, "dock")], outbox, nobody)
    first = serve(COCO, "--config", str(first_config))
    before = poll(lambda: got if len(got := recorded(first)) >= 6 else None, 40, "6 events recorded")
    undelivered = first.client.get("/v1/streams").json()["sinks"]["hook"]
    assert undelivered["delivered"] == 0 and undelivered["failures"] >= 1, undelivered
    first.process.send_signal(signal.SIGKILL)
    assert first.process.wait(10) == -signal.SIGKILL

    async def scenario() -> tuple[list[dict], list[dict]]:
        async with WebhookReceiver() as receiver:
            hook = {"hook": {"type": "webhook", "url": receiver.url}}
            second_config = write_config(tmp_path / "second.yaml", [], outbox, hook)
            second = await asyncio.to_thread(serve, COCO, "--config", str(second_config))
            async with httpx.AsyncClient(base_url=second.url, timeout=30) as client:
                answer = await client.get("/v1/events", params={"limit": 1000})
                after = answer.json()["events"]
                assert (await client.get("/v1/streams")).json()["streams"] == []
                await eventually(lambda: len(receiver.unique()) >= len(after), 30, f"{len(after)} events delivered")
            return after, receiver.unique()

    after, delivered = asyncio.run(scenario())
    assert after[: len(before)] == before, "every event shown before the kill survived it"
    assert delivered == without_seq(after), "all of them delivered, in order, once"


# -- live followers ------------------------------------------------------------------------------------------


def test_websocket_results_match_sse_and_both_end_promptly_on_sigterm(serve, walk_video: Path) -> None:
    grace = 30
    flag = f"door={walk_video},loop=true,fps={FPS},model=yolox-nano-coco"
    server = serve(COCO, "--stream", flag, "--grace-seconds", str(grace))
    poll(lambda: status(server, "door")["inferred"] > 0, 20, "the stream running")

    async def scenario() -> tuple[list[dict], list[dict], float, float, float]:
        sse: list[dict] = []
        ws: list[dict] = []
        ended: dict[str, float] = {}

        async def follow_sse() -> None:
            async with httpx.AsyncClient(base_url=server.url, timeout=grace) as client:
                async with client.stream("GET", "/v1/streams/door/results") as answer:
                    async for line in answer.aiter_lines():
                        if line.startswith("data: "):
                            sse.append(orjson.loads(line[len("data: ") :]))
            ended["sse"] = time.monotonic()

        async def follow_ws() -> None:
            async with websockets.connect(f"ws://127.0.0.1:{server.port}/v1/streams/door/ws") as socket:
                with contextlib.suppress(websockets.ConnectionClosedOK):
                    async for message in socket:
                        ws.append(orjson.loads(message))
                ended["ws_code"] = socket.close_code or 0
            ended["ws"] = time.monotonic()

        followers = [asyncio.create_task(follow_sse()), asyncio.create_task(follow_ws())]
        await eventually(lambda: len(sse) >= 5 and len(ws) >= 5, 20, "results at both followers")
        server.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        await asyncio.wait_for(asyncio.gather(*followers), 10)
        exited = await asyncio.to_thread(server.process.wait, grace)
        assert exited == 0
        assert ended["ws_code"] == 1001
        return sse, ws, ended["sse"] - signalled, ended["ws"] - signalled, time.monotonic() - signalled

    sse, ws, sse_end, ws_end, exit_after = asyncio.run(scenario())
    assert sse_end < 5 and ws_end < 5, (sse_end, ws_end)
    assert exit_after < grace / 3, f"the drain waited {exit_after:.1f} s (grace {grace} s)"
    by_frame = {result["frame"]: result for result in sse}
    common = [result for result in ws if result["frame"] in by_frame]
    assert len(common) >= 3
    assert all(by_frame[result["frame"]] == result for result in common), "the same result on both"
    assert any(person(result) for result in common)


@pytest.mark.parametrize(
    ("query", "wrong"),
    [
        ({"after": 2**70}, "'after' is from 0 to"),  # past SQLite's integers: was a 500 (found by the fuzzer)
        ({"after": -1}, "'after' is from 0 to"),
        ({"after": "x"}, "whole numbers"),
        ({"limit": 0}, "'limit' is from 1 to 1000"),
        ({"limit": 1001}, "'limit' is from 1 to 1000"),
    ],
)
def test_a_bad_event_query_is_answered_400_saying_what_is_wrong(server: Server, query: dict, wrong: str) -> None:
    answer = server.client.get("/v1/events", params=query)
    assert answer.status_code == 400 and wrong in answer.json()["error"], answer.text
    assert "Traceback" not in server.log()
    assert isinstance(recorded(server), list)  # and the events are still there to replay


def test_a_server_that_runs_no_stream_keeps_no_events_file(serve, tmp_path: Path, monkeypatch) -> None:
    """The outbox opens with the first stream (or at start when an earlier run left one): a server that only answers
    requests leaves nothing in its cache folder but its load decisions."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("KAKEHASHI_CACHE_DIR", str(cache))
    server = serve(COCO)
    answer = server.client.get("/v1/events")
    assert answer.status_code == 200 and answer.json() == {"events": []}
    assert server.client.get("/v1/streams").json()["streams"] == []
    assert not list(cache.glob("events-*.db*")), sorted(path.name for path in cache.iterdir())

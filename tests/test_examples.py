"""The worked examples in `examples/`, run end to end as their READMEs tell a user to: the example's script makes
its video from the repository's images, `kakehashi serve` runs the bundled COCO detector on it with the example's
config (only the test broker's port and the paths of the video, the outbox and the JSONL file changed), and what
reaches the sink is checked against what the video shows."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import importlib.util
import io
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import aiomqtt
import orjson
import pytest
import yaml
from PIL import Image

from brokers import Mosquitto, eventually
from conftest import Server
from kakehashi.streams.zones import anchor_point, inside_polygon

pytestmark = pytest.mark.slow  # each example end to end: a video made, a server, its sinks

EXAMPLES = Path(__file__).parent.parent / "examples"


def example_script(example: str, name: str = "make_video") -> ModuleType:
    """The example's script `name` as a module (`make_video`'s constants say what the video shows)."""
    path = EXAMPLES / example / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"example_{example.replace('-', '_')}_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_video(example: str, path: Path) -> Path:
    """Run the example's script as a user does, writing its video to `path`."""
    subprocess.run([sys.executable, str(EXAMPLES / example / "make_video.py"), str(path)], check=True, timeout=120)
    return path


def example_config(example: str, name: str, video: Path, folder: Path, sinks: dict[str, dict[str, Any]]) -> Path:
    """A copy of the example's config in `folder`, its one stream reading `video`, the outbox in `folder` and the
    named sinks' fields updated (the test's ports and paths); everything else as shipped."""
    config = yaml.safe_load((EXAMPLES / example / name).read_text())
    [stream] = config["streams"]
    assert stream["url"] == video.name  # what make_video.py writes, beside the config
    stream["url"] = str(video)
    config["events"]["outbox"] = str(folder / "events.db")
    for sink, changes in sinks.items():
        config["events"]["sinks"][sink].update(changes)
    path = folder / name
    path.write_text(yaml.safe_dump(config))
    return path


def start_server(serve, config: Path) -> Server:
    return serve(Path("yolox-nano-coco"), "--config", str(config), "--grpc-port", "0")


def wait_for_end(server: Server, stream: str, timeout: float) -> dict[str, Any]:
    """The stream's status once its video has ended and every recorded event went to every sink."""
    deadline = time.monotonic() + timeout
    while True:
        answer = server.client.get("/v1/streams")  # 503 for a moment after ready: the streams start after the model
        if answer.status_code != 200:
            assert answer.status_code == 503 and time.monotonic() < deadline, answer.text
            time.sleep(0.1)
            continue
        listing = answer.json()
        [status] = [s for s in listing["streams"] if s["id"] == stream]
        if status["state"] == "ended" and all(sink["queued"] == 0 for sink in listing["sinks"].values()):
            return status
        assert status["state"] in ("connecting", "running", "ended"), status
        assert time.monotonic() < deadline, f"the stream did not end in {timeout} s: {status}"
        time.sleep(0.1)


def recorded_events(server: Server, stream: str) -> list[dict[str, Any]]:
    return server.client.get("/v1/events", params={"stream": stream, "limit": 1000}).json()["events"]


# -- inspection line: a presence rule, MQTT alerts with snapshots ----------------------------------------------------


def cup_frames(script: ModuleType) -> list[range]:
    """For each cup on the belt (in order), the numbers of the frames (as a stream counts them, from 1) where some
    of it is in view (the detector already finds it when a part has come in)."""
    width = script.SIZE[0]
    cup_width = script.product_image("cup").width
    spans = []
    for number, kind in enumerate(script.SEQUENCE):
        if kind == "cup":  # its left edge is at (t - number * SPACING) * SPEED - cup_width
            first = number * script.SPACING * script.FPS
            last = (number * script.SPACING + (width + cup_width) / script.SPEED) * script.FPS
            spans.append(range(int(first) + 1, int(last) + 2))
    return spans


def test_inspection_line_alerts_once_per_defect_over_mqtt(tmp_path: Path, serve) -> None:
    script = example_script("inspection-line")
    watcher = example_script("inspection-line", "watch_alerts")
    video = make_video("inspection-line", tmp_path / "belt.mp4")
    shipped = yaml.safe_load((EXAMPLES / "inspection-line" / "inspection.yaml").read_text())
    [zone] = shipped["streams"][0]["zones"]
    [rule] = shipped["streams"][0]["rules"]
    topic = shipped["events"]["sinks"]["alerts"]["topic"].format(stream="line1", rule=rule["name"], kind="presence")
    defects = cup_frames(script)
    assert len(defects) == 2  # the video carries two cups (and a box and a cat, which are not defects)

    async def scenario(broker: Mosquitto) -> tuple[list[tuple[str, int, bytes]], Server]:
        received: list[tuple[str, int, bytes]] = []
        subscribed = asyncio.Event()

        async def collect() -> None:
            with contextlib.suppress(aiomqtt.MqttError):
                async with aiomqtt.Client("127.0.0.1", broker.port, identifier="inspection-test") as client:
                    await client.subscribe(topic.rsplit("/", 1)[0] + "/#", qos=1)
                    subscribed.set()
                    async for message in client.messages:
                        assert isinstance(message.payload, bytes)
                        received.append((str(message.topic), message.qos, message.payload))

        collector = asyncio.create_task(collect())
        await asyncio.wait_for(subscribed.wait(), 10)
        sinks = {"alerts": {"port": broker.port}}
        config = example_config("inspection-line", "inspection.yaml", video, tmp_path, sinks)
        server = await asyncio.to_thread(start_server, serve, config)
        await asyncio.to_thread(wait_for_end, server, "line1", 40)
        count = len(recorded_events(server, "line1"))
        await eventually(lambda: len({orjson.loads(p)["id"] for _, _, p in received}) >= count, 10, "the alerts")
        collector.cancel()
        await asyncio.gather(collector, return_exceptions=True)
        return received, server

    with Mosquitto(tmp_path) as broker:
        received, server = asyncio.run(scenario(broker))

    recorded = recorded_events(server, "line1")
    alerts: dict[str, dict[str, Any]] = {}
    for message_topic, qos, body in received:
        assert (message_topic, qos) == (topic, 1)
        alert = orjson.loads(body)
        alerts.setdefault(alert["id"], alert)
    assert [a["id"] for a in alerts.values()] == [e["id"] for e in recorded], "MQTT and /v1/events differ"
    alerts_in_order = sorted(alerts.values(), key=lambda a: a["frame"])
    assert len(alerts_in_order) == len(defects), [(a["frame"], a["track_id"]) for a in alerts_in_order]
    assert len({a["track_id"] for a in alerts_in_order}) == len(defects)
    for alert, frames in zip(alerts_in_order, defects):
        assert (alert["stream"], alert["rule"], alert["kind"]) == ("line1", rule["name"], "presence")
        assert alert["frame"] in frames, f"alert on frame {alert['frame']}, the cup is in view on {frames}"
        [detection] = alert["detections"]
        assert detection["name"] == "cup" and detection["confidence"] >= rule["min_confidence"]
        assert detection["track_id"] == alert["track_id"]
        assert inside_polygon(anchor_point(detection, "bottom_center"), [tuple(p) for p in zone["points"]])
        assert alert["data"] == {"zone": zone["name"]}
        assert f"line1/{rule['name']}: cup" in watcher.describe(alert)  # the example's watch_alerts.py
        snapshot = Image.open(io.BytesIO(base64.b64decode(alert["snapshot_jpeg"])))
        assert snapshot.format == "JPEG" and snapshot.size == script.SIZE


# -- checkout counter: a count rule with prices, the running total to a JSON-lines file ------------------------------


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory, serve_module) -> dict[str, Any]:
    """One run of the checkout counter example: the events /v1/events recorded and the lines of the JSONL sink."""
    folder = tmp_path_factory.mktemp("checkout")
    video = make_video("checkout-counter", folder / "counter.mp4")
    till = folder / "till.jsonl"
    config = example_config("checkout-counter", "checkout.yaml", video, folder, {"till": {"path": str(till)}})
    server = start_server(serve_module, config)
    status = wait_for_end(server, "till1", 40)
    return {
        "recorded": recorded_events(server, "till1"),
        "lines": [orjson.loads(line) for line in till.read_bytes().splitlines()],
        "status": status,
    }


def checkout_totals(checkout: dict[str, Any]) -> tuple[list[float], list[float]]:
    """The totals the events carried, in order, and the totals the cups that came should make (3.5, 7.0, 10.5)."""
    script = example_script("checkout-counter")
    shipped = yaml.safe_load((EXAMPLES / "checkout-counter" / "checkout.yaml").read_text())
    price = shipped["streams"][0]["rules"][0]["prices"]["cup"]
    totals = [round(event["data"]["total"], 2) for event in checkout["recorded"]]
    return totals, [round(price * k, 2) for k in range(1, len(script.ARRIVALS) + 1)]


def test_checkout_counter_rings_up_each_cup_as_it_arrives(checkout: dict[str, Any]) -> None:
    script = example_script("checkout-counter")
    shipped = yaml.safe_load((EXAMPLES / "checkout-counter" / "checkout.yaml").read_text())
    [zone] = shipped["streams"][0]["zones"]
    [rule] = shipped["streams"][0]["rules"]
    recorded = checkout["recorded"]
    assert recorded, checkout["status"]
    lines = list({line["id"]: line for line in checkout["lines"]}.values())  # de-duplicated by id
    assert [line["id"] for line in lines] == [event["id"] for event in recorded], "the JSONL file and /v1/events differ"
    for event in recorded:
        assert (event["stream"], event["rule"], event["kind"]) == ("till1", rule["name"], "count")
        count = event["data"]["count"]
        assert event["data"] == {
            "zone": zone["name"],
            "counts": {"cup": count} if count else {},
            "count": count,
            "total": pytest.approx(count * rule["prices"]["cup"]),
        }
        assert len(event["detections"]) == count
        for detection in event["detections"]:
            assert detection["name"] == "cup"
            assert inside_polygon(anchor_point(detection, "bottom_center"), [tuple(p) for p in zone["points"]])
    totals, expected = checkout_totals(checkout)
    assert totals[-1] == expected[-1], totals
    highs = [total for i, total in enumerate(totals) if total > max(totals[:i], default=0.0)]
    assert highs == expected, totals  # each new high is one more cup
    # each cup rung up once it came, never before (how soon depends on how busy the machine is: frames it cannot
    # infer in time are dropped, and the rule waits for 3 inferred frames)
    for total, arrival in zip(expected, script.ARRIVALS):
        frame = next(event["frame"] for event in recorded if round(event["data"]["total"], 2) == total)
        assert frame > arrival * script.FPS, f"{total} on frame {frame}, before that cup came (second {arrival})"


def test_checkout_counter_totals_have_no_flicker(checkout: dict[str, Any]) -> None:
    """One event per cup: without the rule's `frames: 3`, a cup missed on one frame as it slides in makes the total
    go 3.5, 7.0, 3.5, 7.0, 10.5."""
    totals, expected = checkout_totals(checkout)
    assert totals == expected

"""Delivery from the outbox to real sinks: a webhook receiver that fails at first, mosquitto (also restarted under
load), a restart of delivery with a backlog, the JSONL file, and the config section that builds the sinks."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from pathlib import Path
from typing import Any

import aiomqtt
import orjson
import pytest
from prometheus_client import REGISTRY
from pydantic import ValidationError

from brokers import Mosquitto, WebhookReceiver, eventually
from conftest import free_port
from kakehashi.events import delivery as delivery_module
from kakehashi.events.config import EventsConfig, build_sinks
from kakehashi.events.delivery import Delivery
from kakehashi.events.event import Event
from kakehashi.events.mqtt import MqttSink
from kakehashi.events.outbox import Outbox
from kakehashi.events.sinks import JsonlSink
from kakehashi.events.webhook import WebhookSink
from test_outbox import make_event


def metric(name: str, sink: str) -> float:
    return REGISTRY.get_sample_value(name, {"sink": sink}) or 0.0


def drained(delivery: Delivery, sink: str, delivered: int) -> bool:
    status = delivery.status()[sink]
    return status["delivered"] >= delivered and status["queued"] == 0


def test_webhook_failing_at_first_gets_every_event_in_order_once(tmp_path: Path) -> None:
    sink = "hook-flaky"
    before = {name: metric(name, sink) for name in ("kakehashi_sink_retries_total", "kakehashi_sink_failures_total")}

    async def scenario() -> None:
        async with WebhookReceiver(fail_first=3) as receiver, Outbox(tmp_path / "outbox.db", [sink]) as outbox:
            delivery = Delivery(outbox, [WebhookSink(sink, receiver.url, headers={"Authorization": "Bearer t"})])
            delivery.start()
            events = [make_event(i, snapshot=b"jpeg" if i == 0 else None) for i in range(10)]
            await outbox.record(events[:5])
            delivery.wake()
            await outbox.record(events[5:])
            delivery.wake()
            await eventually(lambda: drained(delivery, sink, 10), 15, "10 deliveries")
            status = delivery.status()[sink]
            await delivery.stop()

        assert [body["id"] for body in receiver.unique()] == [event.id for event in events]
        assert [Event.from_json(body) for body in receiver.unique()] == events
        assert receiver.attempts[:4] == [events[0].id] * 4  # the first event, retried, nothing skipped
        assert status == {"queued": 0, "delivered": 10, "retries": 3, "failures": 3, "last_error": None}
        assert metric("kakehashi_sink_queued", sink) == 0

    asyncio.run(scenario())
    assert metric("kakehashi_sink_retries_total", sink) - before["kakehashi_sink_retries_total"] == 3
    assert metric("kakehashi_sink_failures_total", sink) - before["kakehashi_sink_failures_total"] == 3
    assert metric("kakehashi_sink_delivered_total", sink) >= 10


@pytest.mark.slow
def test_a_webhook_down_for_a_minute_gets_every_event_once_it_is_back(tmp_path: Path) -> None:
    """Nothing listens at the webhook's address for a minute while a stream records an event every 5 s; then the
    receiver comes up there: every event arrives, in order, within the retry backoff's longest wait (30 s)."""
    sink, port = "hook-down", free_port()

    async def scenario() -> None:
        async with Outbox(tmp_path / "outbox.db", [sink]) as outbox:
            delivery = Delivery(outbox, [WebhookSink(sink, f"http://127.0.0.1:{port}/hook", timeout_seconds=5)])
            delivery.start()
            events = [make_event(i) for i in range(12)]
            outage_ends = asyncio.get_running_loop().time() + 60
            for event in events:  # the minute of the outage, an event every 5 s
                await outbox.record([event])
                delivery.wake()
                await asyncio.sleep(max(0.0, min(5.0, outage_ends - asyncio.get_running_loop().time())))
            down = delivery.status()[sink]
            assert down["delivered"] == 0 and down["failures"] >= 5, down
            async with WebhookReceiver(port=port) as receiver:
                await eventually(lambda: drained(delivery, sink, 12), 45, "12 deliveries after the outage")
            await delivery.stop()
        assert [body["id"] for body in receiver.unique()] == [event.id for event in events]

    asyncio.run(scenario())


class Subscriber:
    """A real MQTT client subscribed at QoS 1 to everything under `kakehashi/`, collecting payloads."""

    def __init__(self, port: int, persistent: bool = False) -> None:
        self.port = port
        self.persistent = persistent
        self.received: list[tuple[str, dict[str, Any]]] = []
        self._task: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        subscribed = asyncio.Event()
        self._task = asyncio.create_task(self._collect(subscribed))
        await asyncio.wait_for(subscribed.wait(), 10)

    async def _collect(self, subscribed: asyncio.Event) -> None:
        client = aiomqtt.Client("127.0.0.1", self.port, identifier="test-subscriber", clean_session=not self.persistent)
        with contextlib.suppress(aiomqtt.MqttError):  # the broker stopping ends the collection
            async with client:
                await client.subscribe("kakehashi/#", qos=1)
                subscribed.set()
                async for message in client.messages:
                    assert isinstance(message.payload, bytes)
                    self.received.append((str(message.topic), orjson.loads(message.payload)))

    def ids(self) -> list[str]:
        return list(dict.fromkeys(body["id"] for _, body in self.received))

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def test_mqtt_qos1_reaches_a_real_subscriber(tmp_path: Path) -> None:
    sink = "mqtt-plain"

    async def scenario(broker: Mosquitto) -> None:
        subscriber = Subscriber(broker.port)
        await subscriber.connect()
        async with Outbox(tmp_path / "outbox.db", [sink]) as outbox:
            mqtt = MqttSink(sink, "127.0.0.1", broker.port, topic="kakehashi/{stream}/{rule}/{kind}")
            delivery = Delivery(outbox, [mqtt])
            delivery.start()
            events = [make_event(i, stream=f"cam{i % 2}", snapshot=b"\xff\xd8" if i == 3 else None) for i in range(8)]
            await outbox.record(events)
            delivery.wake()
            await eventually(lambda: len(subscriber.ids()) == 8, 10, "8 events at the subscriber")
            await delivery.stop()
        await subscriber.close()
        assert subscriber.ids() == [event.id for event in events]
        by_id = {body["id"]: (topic, body) for topic, body in subscriber.received}
        for event in events:
            topic, body = by_id[event.id]
            assert topic == f"kakehashi/{event.stream}/door/enter"
            assert Event.from_json(body) == event
        assert by_id[events[3].id][1]["snapshot_jpeg"] == base64.b64encode(b"\xff\xd8").decode()

    with Mosquitto(tmp_path) as broker:
        asyncio.run(scenario(broker))


def test_mqtt_broker_down_for_a_while_then_back_gets_everything(tmp_path: Path) -> None:
    sink = "mqtt-restart"

    async def scenario(broker: Mosquitto) -> None:
        subscriber = Subscriber(broker.port, persistent=True)  # its session queues what arrives while it is away
        await subscriber.connect()
        async with Outbox(tmp_path / "outbox.db", [sink]) as outbox:
            delivery = Delivery(outbox, [MqttSink(sink, "127.0.0.1", broker.port, timeout_seconds=5)])
            delivery.start()
            events = [make_event(i) for i in range(12)]
            await outbox.record(events[:4])
            delivery.wake()
            await eventually(lambda: len(subscriber.ids()) == 4, 10, "the first 4 events")

            await asyncio.to_thread(broker.stop)
            for event in events[4:]:
                await outbox.record([event])
                delivery.wake()
            await eventually(lambda: delivery.status()[sink]["failures"] >= 3, 15, "3 failed attempts")
            assert delivery.status()[sink]["queued"] == 8
            assert "MQTT broker" in (delivery.status()[sink]["last_error"] or "")
            await asyncio.to_thread(broker.start)

            await eventually(lambda: drained(delivery, sink, 12), 20, "the backlog drained to the broker")
            await delivery.stop()
        await subscriber.close()
        await subscriber.connect()
        await eventually(lambda: len(subscriber.ids()) == 12, 10, "all 12 events at the subscriber")
        await subscriber.close()
        assert subscriber.ids() == [event.id for event in events]

    with Mosquitto(tmp_path, persistence=True) as broker:
        asyncio.run(scenario(broker))


def test_a_restarted_delivery_drains_the_backlog_in_order(tmp_path: Path) -> None:
    sink = "hook-restart"
    path = tmp_path / "outbox.db"
    events = [make_event(i) for i in range(14)]

    async def scenario() -> None:
        async with WebhookReceiver() as receiver:
            async with Outbox(path, [sink]) as outbox:
                delivery = Delivery(outbox, [WebhookSink(sink, receiver.url)])
                delivery.start()
                await outbox.record(events[:4])
                delivery.wake()
                await eventually(lambda: drained(delivery, sink, 4), 10, "the first 4 events")
                receiver.fail_next(1_000_000)
                await outbox.record(events[4:10])
                delivery.wake()
                await eventually(lambda: delivery.status()[sink]["failures"] >= 1, 10, "a failed attempt")
                await delivery.stop()
                assert await outbox.queued(sink) == 6

            receiver.fail_next(0)
            async with Outbox(path, [sink]) as outbox:
                delivery = Delivery(outbox, [WebhookSink(sink, receiver.url)])
                delivery.start()
                await outbox.record(events[10:])
                delivery.wake()
                await eventually(lambda: drained(delivery, sink, 10), 10, "the backlog and the new events")
                await delivery.stop()
        assert [body["id"] for body in receiver.unique()] == [event.id for event in events]
        assert len(receiver.bodies) == len(events)

    asyncio.run(scenario())


def test_wake_starts_delivery_at_once_and_the_poll_is_only_a_fallback(tmp_path: Path, monkeypatch) -> None:
    sink = "hook-wake"
    monkeypatch.setattr(delivery_module, "POLL_SECONDS", 3600.0)  # only `wake` can start a delivery here

    async def scenario() -> None:
        async with WebhookReceiver() as receiver, Outbox(tmp_path / "outbox.db", [sink]) as outbox:
            delivery = Delivery(outbox, [WebhookSink(sink, receiver.url)])
            delivery_module.QUEUED.labels(sink).set(-1)  # the task sets it after reading the outbox, then waits
            delivery.start()
            await eventually(lambda: metric("kakehashi_sink_queued", sink) == 0, 5, "the task to find nothing")
            await outbox.record([make_event(0)])
            with pytest.raises(TimeoutError):  # recorded but not woken: the task sleeps on
                await eventually(lambda: bool(receiver.bodies), 0.5, "an unwoken delivery")
            delivery.wake()
            await eventually(lambda: len(receiver.bodies) == 1, 5, "the woken delivery")
            await delivery.stop()

            monkeypatch.setattr(delivery_module, "POLL_SECONDS", 0.2)
            delivery_module.QUEUED.labels(sink).set(-1)
            delivery.start()
            await eventually(lambda: metric("kakehashi_sink_queued", sink) == 0, 5, "the task to find nothing")
            await outbox.record([make_event(1)])  # no wake: the poll finds it
            await eventually(lambda: len(receiver.bodies) == 2, 5, "the polled delivery")
            await delivery.stop()
        assert [body["frame"] for body in receiver.bodies] == [0, 1]

    asyncio.run(scenario())


def test_jsonl_sink_appends_one_line_per_event(tmp_path: Path) -> None:
    sink = "file"
    path = tmp_path / "out" / "events.jsonl"

    async def scenario() -> list[Event]:
        async with Outbox(tmp_path / "outbox.db", [sink]) as outbox:
            events = [make_event(i, snapshot=b"jpeg%d" % i) for i in range(6)]
            for half in (events[:3], events[3:]):
                delivery = Delivery(outbox, [JsonlSink(sink, path)])
                delivery.start()
                await outbox.record(half)
                delivery.wake()
                await eventually(lambda: drained(delivery, sink, 3), 10, "3 lines")  # noqa: B023 - awaited here
                await delivery.stop()
            return events

    events = asyncio.run(scenario())
    lines = path.read_bytes().splitlines()
    assert [orjson.loads(line) for line in lines] == [event.to_json() for event in events]


def test_events_config_builds_its_sinks_and_explains_mistakes(tmp_path: Path) -> None:
    config = EventsConfig.model_validate(
        {
            "outbox": str(tmp_path / "outbox.db"),
            "max_events": 500,
            "sinks": {
                "ops": {"type": "webhook", "url": "https://example.test/hook", "headers": {"X-Token": "t"}},
                "mqtt": {"type": "mqtt", "host": "broker", "port": 8883, "topic": "site/{stream}/{kind}"},
                "file": {"type": "jsonl", "path": str(tmp_path / "events.jsonl")},
            },
        }
    )
    webhook, mqtt, jsonl = build_sinks(config)
    assert isinstance(webhook, WebhookSink) and webhook.name == "ops" and webhook.headers == {"X-Token": "t"}
    assert isinstance(mqtt, MqttSink) and (mqtt.host, mqtt.port, mqtt.topic) == ("broker", 8883, "site/{stream}/{kind}")
    assert isinstance(jsonl, JsonlSink) and jsonl.path == tmp_path / "events.jsonl"
    assert config.max_events == 500 and build_sinks(EventsConfig()) == []

    mistakes = {
        "does not match any of the expected tags: 'webhook', 'mqtt', 'jsonl'": {"sinks": {"a": {"type": "smtp"}}},
        "may use {stream}, {rule} and {kind} only": {"sinks": {"a": {"type": "mqtt", "host": "h", "topic": "{cam}"}}},
        "must start with http:// or https://": {"sinks": {"a": {"type": "webhook", "url": "ftp://x"}}},
        "Extra inputs are not permitted": {"sinks": {"a": {"type": "jsonl", "path": "x", "mode": "w"}}},
        "sink name 'a b'": {"sinks": {"a b": {"type": "jsonl", "path": "x"}}},
    }
    for message, section in mistakes.items():
        with pytest.raises(ValidationError, match=message.replace("{", r"\{").replace("(", r"\(")):
            EventsConfig.model_validate(section)

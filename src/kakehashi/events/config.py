"""The `events` section of a config file: where the outbox lives, how big it may grow, and the sinks by name."""

from __future__ import annotations

import string
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from kakehashi.events.sinks import JsonlSink, Sink

_TOPIC_FIELDS = {"stream", "rule", "kind"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WebhookConfig(_Strict):
    type: Literal["webhook"]
    url: str
    headers: dict[str, str] = {}
    timeout_seconds: float = Field(10, gt=0)

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"the webhook url must start with http:// or https://, not {url!r}")
        return url


class MqttConfig(_Strict):
    type: Literal["mqtt"]
    host: str = Field(min_length=1)
    port: int = Field(1883, ge=1, le=65535)
    topic: str = "kakehashi/{stream}/{rule}"
    username: str | None = None
    password: str | None = None
    client_id: str | None = None

    @field_validator("topic")
    @classmethod
    def _topic_fields(cls, topic: str) -> str:
        try:
            names = {name for _, name, _, _ in string.Formatter().parse(topic) if name is not None}
        except ValueError as exc:
            raise ValueError(f"the topic {topic!r} is not a valid template: {exc}") from None
        unknown = names - _TOPIC_FIELDS
        if unknown:
            raise ValueError(f"the topic may use {{stream}}, {{rule}} and {{kind}} only, not {sorted(unknown)}")
        return topic


class JsonlConfig(_Strict):
    type: Literal["jsonl"]
    path: Path


SinkConfig = Annotated[WebhookConfig | MqttConfig | JsonlConfig, Field(discriminator="type")]


class EventsConfig(_Strict):
    """`outbox`: the SQLite file (None: the server picks its default); `max_events`: the outbox bound;
    `sinks`: by name, each with its `type` (webhook, mqtt or jsonl)."""

    outbox: Path | None = None
    max_events: int = Field(100_000, ge=1)
    sinks: dict[str, SinkConfig] = {}

    @field_validator("sinks")
    @classmethod
    def _sink_names(cls, sinks: dict[str, SinkConfig]) -> dict[str, SinkConfig]:
        for name in sinks:
            if not name or not all(c.isalnum() or c in "_-." for c in name):
                raise ValueError(f"sink name {name!r}: use letters, digits, '_', '-' and '.' only")
        return sinks


def build_sinks(config: EventsConfig) -> list[Sink]:
    """One sink per configured entry, in the config's order."""
    sinks: list[Sink] = []
    for name, sink in config.sinks.items():
        if isinstance(sink, WebhookConfig):
            from kakehashi.events.webhook import WebhookSink  # aiohttp only where a webhook sink is configured

            sinks.append(WebhookSink(name, sink.url, sink.headers, sink.timeout_seconds))
        elif isinstance(sink, MqttConfig):
            from kakehashi.events.mqtt import MqttSink  # aiomqtt only where an MQTT sink is configured

            sinks.append(MqttSink(name, sink.host, sink.port, sink.topic, sink.username, sink.password, sink.client_id))
        else:
            sinks.append(JsonlSink(name, sink.path))
    return sinks

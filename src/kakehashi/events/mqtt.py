"""The MQTT sink (aiomqtt, loaded only by a server with an MQTT sink): QoS 1 publishes on one kept connection."""

from __future__ import annotations

import asyncio
import contextlib

import aiomqtt

from kakehashi.events.event import Event
from kakehashi.events.sinks import SinkError, payload


class MqttSink:
    """QoS 1 publish on `topic` (formatted with the event's `stream`, `rule` and `kind`); `send` returns when the
    broker acknowledged (PUBACK). One connection is kept; a failed publish or a dropped connection closes it and the
    next `send` reconnects."""

    def __init__(
        self,
        name: str,
        host: str,
        port: int = 1883,
        topic: str = "kakehashi/{stream}/{rule}",
        username: str | None = None,
        password: str | None = None,
        client_id: str | None = None,
        timeout_seconds: float = 10,
    ) -> None:
        self.name = name
        self.host = host
        self.port = port
        self.topic = topic
        self.username = username
        self.password = password
        self.client_id = client_id
        self.timeout_seconds = timeout_seconds
        self._connection: contextlib.AsyncExitStack | None = None
        self._client: aiomqtt.Client | None = None
        self._lost: asyncio.Task[None] | None = None

    async def send(self, event: Event) -> None:
        client, lost = await self._connect()
        topic = self.topic.format(stream=event.stream, rule=event.rule, kind=event.kind)
        publish = asyncio.ensure_future(client.publish(topic, payload(event), qos=1, timeout=self.timeout_seconds))
        try:
            await asyncio.wait((publish, lost), return_when=asyncio.FIRST_COMPLETED)
            if not publish.done():
                raise SinkError(f"MQTT broker {self.host}:{self.port}: connection lost before PUBACK")
            publish.result()
        except aiomqtt.MqttError as exc:
            await self.close()
            raise SinkError(f"MQTT broker {self.host}:{self.port}: {exc}") from exc
        except BaseException:
            publish.cancel()
            await self.close()
            raise

    async def _connect(self) -> tuple[aiomqtt.Client, asyncio.Task[None]]:
        if self._client is not None and self._lost is not None and not self._lost.done():
            return self._client, self._lost
        await self.close()
        stack = contextlib.AsyncExitStack()
        client = aiomqtt.Client(
            self.host,
            self.port,
            username=self.username,
            password=self.password,
            identifier=self.client_id,
            timeout=self.timeout_seconds,
        )
        try:
            await stack.enter_async_context(client)
        except aiomqtt.MqttError as exc:
            raise SinkError(f"MQTT broker {self.host}:{self.port}: {exc}") from exc
        self._connection, self._client = stack, client
        self._lost = asyncio.create_task(self._watch(client))
        return client, self._lost

    @staticmethod
    async def _watch(client: aiomqtt.Client) -> None:
        """Ends when the connection drops (the sink subscribes to nothing, so no message ever arrives)."""
        with contextlib.suppress(aiomqtt.MqttError):
            async for _ in client.messages:
                pass

    async def close(self) -> None:
        lost, connection = self._lost, self._connection
        self._lost = self._connection = self._client = None
        if lost is not None:
            lost.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await lost
        if connection is not None:
            with contextlib.suppress(aiomqtt.MqttError):
                await connection.aclose()

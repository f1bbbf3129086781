"""The webhook sink (aiohttp is imported only where a webhook sink is configured)."""

from __future__ import annotations

import aiohttp

from kakehashi.events.event import Event
from kakehashi.events.sinks import SinkError, payload


class WebhookSink:
    """HTTP POST of the event's JSON with `Idempotency-Key: <event id>`; any 2xx answer acknowledges it."""

    def __init__(self, name: str, url: str, headers: dict[str, str] | None = None, timeout_seconds: float = 10) -> None:
        self.name = name
        self.url = url
        self.headers = dict(headers or {})
        self.timeout_seconds = timeout_seconds
        self._session: aiohttp.ClientSession | None = None

    async def send(self, event: Event) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_seconds))
        headers = {**self.headers, "Content-Type": "application/json", "Idempotency-Key": event.id}
        try:
            async with self._session.post(self.url, data=payload(event), headers=headers) as response:
                if not 200 <= response.status < 300:
                    text = (await response.text(errors="replace"))[:200]
                    raise SinkError(f"webhook {self.url} answered {response.status}: {text}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise SinkError(f"webhook {self.url}: {exc!r}") from exc

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

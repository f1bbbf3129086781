"""Where a batch job's images are predicted: in-process on a model handle, or by a running Kakehashi server."""

from __future__ import annotations

import asyncio

import aiohttp
from PIL import Image

from kakehashi.batch.runner import encode_frame
from kakehashi.dataplane import DataPlane
from kakehashi.errors import InvalidInput, KakehashiError
from kakehashi.protocols.vision import image_answer

RETRIES = 8


class LocalPredictor:
    """In-process, through the data plane: the same batcher, pre- and post-processing as the server."""

    def __init__(self, plane: DataPlane, model: str, values: dict[str, list[str]]) -> None:
        self.plane, self.model, self.values = plane, model, values

    async def predict(self, data: bytes | Image.Image) -> dict:
        with self.plane.request("batch", self.model) as call:
            [prediction] = await call.predict([data], self.values)
        return image_answer(prediction)


class RemotePredictor:
    """Through `POST {url}/v1/models/{model}/predict`; 429/503 and dropped connections are retried with
    back-off (honouring Retry-After), other errors are the input's error."""

    def __init__(
        self, session: aiohttp.ClientSession, url: str, model: str, query: dict[str, str], headers: dict[str, str]
    ) -> None:
        self._session, self._query, self._headers = session, query, headers
        self._url = f"{url.rstrip('/')}/v1/models/{model}/predict"

    async def predict(self, data: bytes | Image.Image) -> dict:
        body = await asyncio.to_thread(encode_frame, data) if isinstance(data, Image.Image) else data
        for attempt in range(1, RETRIES + 1):
            last = attempt == RETRIES
            try:
                async with self._session.post(
                    self._url,
                    data=body,
                    params=self._query,
                    headers={**self._headers, "content-type": "application/octet-stream"},
                ) as response:
                    if response.status in (429, 503) and not last:
                        delay = float(response.headers.get("retry-after", 1)) * attempt
                    else:
                        answer = await response.json(content_type=None)
                        if response.status != 200:
                            raise KakehashiError(f"server answered {response.status}: {answer.get('error', answer)}")
                        return answer["images"][0]
            except (TimeoutError, aiohttp.ClientConnectionError) as exc:
                if last:
                    raise KakehashiError(f"server unreachable: {exc}") from None
                delay = 0.5 * attempt
            await asyncio.sleep(delay)
        raise AssertionError("the last attempt returns or raises")


async def remote_model(session: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> str:
    """The name of the only model a server serves (`--model` is needed when it serves several)."""
    async with session.post(f"{url.rstrip('/')}/v2/repository/index", headers=headers) as response:
        if response.status != 200:
            raise InvalidInput(f"cannot list the server's models ({response.status}): {await response.text()}")
        names = sorted({row["name"] for row in await response.json()})
    if len(names) != 1:
        raise InvalidInput(f"the server serves {', '.join(names) or 'no models'}; choose one with --model")
    return names[0]

"""Streams over REST (`/v1/streams`), their live results (Server-Sent Events and WebSocket), the newest annotated
frame, and the events they raised (`/v1/events`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import orjson
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from kakehashi.errors import InvalidInput, KakehashiError, Overloaded, Unavailable
from kakehashi.server.responses import JSONBytes
from kakehashi.server.state import server_state
from kakehashi.streams.config import StreamConfig
from kakehashi.streams.manager import StreamManager

if TYPE_CHECKING:
    from kakehashi.streams.stream import Stream

MAX_SUBSCRIBERS = 32  # live followers of one stream (SSE and WebSocket together)
HEARTBEAT_SECONDS = 15.0  # an SSE comment line while no result comes, so proxies keep the connection
MAX_EVENTS = 1000
MAX_SEQ = 2**63 - 1  # the outbox numbers events as SQLite integers (signed 64 bits)
WS_REASON_BYTES = 123  # the most a close frame's reason may hold


def _manager(state) -> StreamManager:
    if state.streams is None:
        raise Unavailable("streams are not running yet: the server is still starting")
    return state.streams


def _validation_message(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "body"
    return f"invalid stream: {where}: {first['msg']}"


async def create(request: Request) -> Response:
    manager = _manager(server_state(request))
    try:
        config = StreamConfig.model_validate(orjson.loads(await request.body()))
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"the body is not JSON: {exc}") from None
    except ValidationError as exc:
        raise InvalidInput(_validation_message(exc)) from None
    stream = await manager.add(config)
    return JSONBytes(stream.status(), status_code=201, headers={"Location": f"/v1/streams/{stream.name}"})


async def listing(request: Request) -> Response:
    manager = _manager(server_state(request))
    return JSONBytes({"streams": [stream.status() for stream in manager.streams.values()], "sinks": manager.sinks()})


async def describe(request: Request) -> Response:
    return JSONBytes(_manager(server_state(request)).get(request.path_params["stream"]).status())


async def delete(request: Request) -> Response:
    name = request.path_params["stream"]
    await _manager(server_state(request)).remove(name)
    return JSONBytes({"deleted": name})


async def frame(request: Request) -> Response:
    """The stream's newest analysed frame with its detections drawn, as JPEG (404 before the first)."""
    state = server_state(request)
    stream = _manager(state).get(request.path_params["stream"])
    latest = stream.latest
    if latest is None:
        return JSONBytes({"error": f"stream '{stream.name}' has no analysed frame yet"}, status_code=404)
    picture = await asyncio.get_running_loop().run_in_executor(state.plane.compute, latest.annotated_jpeg)
    return Response(picture, media_type="image/jpeg", headers={"Cache-Control": "no-store"})


def _room(stream: Stream) -> Stream:
    """`stream`, if it takes another live follower (429 otherwise); each subscribes where its `finally` unsubscribes
    it, so a client gone before its answer started holds no place."""
    if stream.subscribers >= MAX_SUBSCRIBERS:
        raise Overloaded(f"stream '{stream.name}' has {MAX_SUBSCRIBERS} live followers (the limit)", retry_after=5)
    return stream


async def results(request: Request) -> Response:
    """Each analysed frame's results as a Server-Sent Event (`event: result`), until the client leaves, the stream
    is deleted or the server drains."""
    stream = _room(_manager(server_state(request)).get(request.path_params["stream"]))

    async def events() -> AsyncIterator[bytes]:
        subscription = stream.subscribe()
        iterator = aiter(subscription)
        waiting: asyncio.Future[dict] | None = None
        try:
            yield b": following stream " + stream.name.encode() + b"\n\n"
            while True:
                # one wait for the next result across heartbeats: cancelling it (wait_for's timeout) would end the
                # subscription's generator, and with it the follower, at the first quiet spell
                waiting = waiting or asyncio.ensure_future(anext(iterator))
                done, _ = await asyncio.wait({waiting}, timeout=HEARTBEAT_SECONDS)
                if not done:
                    yield b": heartbeat\n\n"
                    continue
                finished, waiting = waiting, None
                try:
                    result = finished.result()
                except StopAsyncIteration:
                    return
                yield b"event: result\ndata: " + orjson.dumps(result) + b"\n\n"
        finally:
            if waiting is not None:
                waiting.cancel()
            stream.unsubscribe(subscription)

    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return StreamingResponse(events(), media_type="text/event-stream", headers=headers)


async def live(websocket: WebSocket) -> None:
    """Each analysed frame's results as a JSON text message; closed (1001) when the stream stops or the server
    drains. A refusal is accepted, then closed with code 4000 + the HTTP status it would have (4404: no such stream,
    4429: too many followers, 4503: not running yet) and the reason, which a browser can read. What the client
    sends is read and ignored."""
    try:
        stream = _room(_manager(server_state(websocket)).get(websocket.path_params["stream"]))
    except KakehashiError as exc:
        await websocket.accept()
        await websocket.close(4000 + exc.status, exc.message.encode()[:WS_REASON_BYTES].decode(errors="ignore"))
        return
    await websocket.accept()

    async def drain_client() -> None:
        while (await websocket.receive())["type"] != "websocket.disconnect":
            pass

    subscription = stream.subscribe()
    listening = asyncio.ensure_future(drain_client())
    iterator = aiter(subscription)
    waiting: asyncio.Future[dict] | None = None
    try:
        while True:
            # the next result or the client leaving, whichever comes first: a client that leaves while no result
            # comes (a camera down) is let go at once, not at the next result
            waiting = asyncio.ensure_future(anext(iterator))
            await asyncio.wait({waiting, listening}, return_when=asyncio.FIRST_COMPLETED)
            if listening.done():
                return
            finished, waiting = waiting, None
            try:
                result = finished.result()
            except StopAsyncIteration:
                break
            await websocket.send_text(orjson.dumps(result).decode())
        await websocket.close(1001, "the stream stopped, or the server is shutting down")
    except WebSocketDisconnect:
        pass
    finally:
        if waiting is not None:
            waiting.cancel()
        listening.cancel()
        stream.unsubscribe(subscription)


async def events(request: Request) -> Response:
    """Recorded events in order, for replay: `?stream=`, `after=` (a `seq` already seen), `limit=` (≤ 1000)."""
    query = request.query_params
    try:
        limit = int(query.get("limit", 100))
        after = int(query["after"]) if "after" in query else None
    except ValueError:
        raise InvalidInput("'limit' and 'after' are whole numbers") from None
    if not 1 <= limit <= MAX_EVENTS:
        raise InvalidInput(f"'limit' is from 1 to {MAX_EVENTS}")
    if after is not None and not 0 <= after <= MAX_SEQ:
        raise InvalidInput(f"'after' is from 0 to {MAX_SEQ} (a 'seq' of an event)")
    manager = _manager(server_state(request))
    return JSONBytes({"events": await manager.events(limit, query.get("stream"), after)})


routes = [
    Route("/v1/streams", create, methods=["POST"]),
    Route("/v1/streams", listing, methods=["GET"]),
    Route("/v1/streams/{stream}", describe, methods=["GET"]),
    Route("/v1/streams/{stream}", delete, methods=["DELETE"]),
    Route("/v1/streams/{stream}/frame.jpg", frame, methods=["GET"]),
    Route("/v1/streams/{stream}/results", results, methods=["GET"]),
    WebSocketRoute("/v1/streams/{stream}/ws", live),
    Route("/v1/events", events, methods=["GET"]),
]

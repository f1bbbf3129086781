"""The floor of a Python HTTP server on this machine: an ASGI app that reads each request's body and answers a
fixed JSON, with no work at all, served by Granian (as Kakehashi is). What a server doing real work per request can
at most approach under the same load generator.

    python -m granian --interface asgi --loop uvloop --port 8020 empty_app:app
"""

from __future__ import annotations

ANSWER = b'{"images":[]}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(ANSWER)).encode())]


async def app(scope: dict, receive, send) -> None:
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": ANSWER})

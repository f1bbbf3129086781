"""uvicorn's httptools protocol with a cap on the request line and headers (431 over it), and a drain that
answers every request it has started to receive.

httptools hands over the URL and each header only once they are complete, and buffers them until then with
no limit: a client could send gigabytes of one header line. So two checks: the URL and headers are counted
exactly as they arrive (over the limit: the parse is stopped), and the raw bytes received while a request's
headers are still incomplete are counted too (over the limit: the connection is refused, whatever is pending).

At shutdown uvicorn closes every connection without a request being answered, including one whose request
is still arriving: its client gets a reset instead of an answer. Here such a request is read to the end and
answered (503 while draining) before the connection closes; a connection with nothing pending closes after
`DRAIN_LINGER_SECONDS`, so a request already in flight on the network is not cut off either.
"""

from __future__ import annotations

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class _HeadersTooLarge(Exception):
    """Raised in a parser callback to stop parsing; uvicorn then calls `send_400_response`."""


DRAIN_LINGER_SECONDS = 0.5


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    max_header_bytes = 64 * 1024

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._in_headers = False
        self._header_bytes = 0  # exact: URL + header names and values of the current request
        self._raw_bytes = 0  # bytes received while its headers are incomplete
        self._too_large = False
        self._draining = False

    def _count(self, size: int) -> None:
        self._header_bytes += size
        if self._header_bytes > self.max_header_bytes:
            self._too_large = True
            raise _HeadersTooLarge

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_headers, self._header_bytes, self._raw_bytes = True, 0, 0

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)  # ": " and CRLF
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_headers = False
        super().on_headers_complete()
        if self._draining and self.cycle is not None:
            self.cycle.keep_alive = False  # answer this one, then close

    def shutdown(self) -> None:
        self._draining = True
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.keep_alive = False
        elif not self._in_headers:
            self.loop.call_later(DRAIN_LINGER_SECONDS, self._close_if_idle)

    def _close_if_idle(self) -> None:
        if not self._in_headers and (self.cycle is None or self.cycle.response_complete):
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._in_headers and not self.transport.is_closing():
            self._raw_bytes += len(data)
            if self._raw_bytes > self.max_header_bytes:
                self._refuse()

    def send_400_response(self, msg: str) -> None:
        if self._too_large:
            self._refuse()
        else:
            super().send_400_response(msg)

    def _refuse(self) -> None:
        body = orjson.dumps({"error": f"request line and headers are larger than the limit of "
                                      f"{self.max_header_bytes} bytes"})
        self.transport.write(b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
                             b"connection: close\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        self.transport.close()


def limited_protocol(max_header_bytes: int) -> type[LimitedHttpToolsProtocol]:
    """The protocol class for uvicorn's `http=` with this header limit."""
    return type("LimitedHttpToolsProtocol", (LimitedHttpToolsProtocol,), {"max_header_bytes": max_header_bytes})

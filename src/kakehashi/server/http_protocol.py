"""uvicorn's httptools protocol with a cap on the request line and headers.

httptools buffers a header until it ends, with no limit: a client could send gigabytes of one header line.
Here the bytes received while a request's headers are incomplete are counted, and past the limit the client
gets 431 and the connection is closed. (The count may include the tail of a pipelined previous body: it errs
towards refusing early, never towards buffering more.)
"""

from __future__ import annotations

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    max_header_bytes = 64 * 1024

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._in_headers = False
        self._header_bytes = 0

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_headers, self._header_bytes = True, 0

    def on_headers_complete(self) -> None:
        self._in_headers = False
        super().on_headers_complete()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._in_headers and not self.transport.is_closing():
            self._header_bytes += len(data)
            if self._header_bytes > self.max_header_bytes:
                self._refuse()

    def _refuse(self) -> None:
        body = orjson.dumps({"error": f"request line and headers are larger than the limit of "
                                      f"{self.max_header_bytes} bytes"})
        self.transport.write(b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
                             b"connection: close\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        self.transport.close()


def limited_protocol(max_header_bytes: int) -> type[LimitedHttpToolsProtocol]:
    """The protocol class for uvicorn's `http=` with this header limit."""
    return type("LimitedHttpToolsProtocol", (LimitedHttpToolsProtocol,), {"max_header_bytes": max_header_bytes})

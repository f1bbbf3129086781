"""Request bodies sent with `Content-Encoding: gzip` or `deflate` (tritonclient's request compression).

A small body can inflate to gigabytes (a compression bomb), so bodies are inflated in a worker thread, never on
the event loop, and chunk by chunk: inflation stops as soon as the output passes the limit."""

from __future__ import annotations

import asyncio
import zlib
from concurrent.futures import Executor

from kakehashi.errors import InvalidInput, PayloadTooLarge, UnsupportedMedia

_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
CHUNK_BYTES = 1024 * 1024  # inflated at a time: memory stays within the limit plus one chunk


def _wbits(encoding: str) -> int | None:
    """zlib's window bits for `encoding`; None for no encoding (identity)."""
    name = encoding.strip().lower()
    if name in ("", "identity"):
        return None
    if name not in _WBITS:
        raise UnsupportedMedia(f"Content-Encoding {encoding!r} is not supported (gzip, deflate)")
    return _WBITS[name]


def inflate(body: bytes, encoding: str, limit: int) -> bytes:
    """The decoded body, refusing more than `limit` bytes once inflated (compression bombs)."""
    wbits = _wbits(encoding)
    if wbits is None:
        return body
    inflater = zlib.decompressobj(wbits)
    chunks: list[bytes] = []
    size, pending = 0, body
    try:
        while not inflater.eof:
            chunk = inflater.decompress(pending, CHUNK_BYTES)
            if not chunk and not inflater.unconsumed_tail:
                break  # all input read, the stream not ended: truncated
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"the decompressed body is larger than the limit of {limit} bytes")
            chunks.append(chunk)
            pending = inflater.unconsumed_tail
    except zlib.error as exc:
        raise InvalidInput(f"the {encoding} body cannot be decompressed: {exc}") from None
    if not inflater.eof:
        raise InvalidInput(f"the {encoding} body cannot be decompressed: it is truncated")
    return b"".join(chunks)


async def decompress(body: bytes, encoding: str | None, limit: int, pool: Executor) -> bytes:
    """`body` decoded per its `Content-Encoding`, inflated in `pool` (see `inflate`)."""
    if encoding is None or _wbits(encoding) is None:
        return body
    return await asyncio.get_running_loop().run_in_executor(pool, inflate, body, encoding, limit)

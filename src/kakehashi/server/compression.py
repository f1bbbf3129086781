"""Request bodies sent with `Content-Encoding: gzip` or `deflate` (tritonclient's request compression)."""

from __future__ import annotations

import zlib

from kakehashi.errors import InvalidInput, PayloadTooLarge, UnsupportedMedia

_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


def decompress(body: bytes, encoding: str | None, limit: int) -> bytes:
    """The decoded body, refusing more than `limit` bytes once inflated (compression bombs)."""
    if not encoding or encoding.strip().lower() == "identity":
        return body
    wbits = _WBITS.get(encoding.strip().lower())
    if wbits is None:
        raise UnsupportedMedia(f"Content-Encoding {encoding!r} is not supported (gzip, deflate)")
    inflater = zlib.decompressobj(wbits)
    try:
        data = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise InvalidInput(f"the {encoding} body cannot be decompressed: {exc}") from None
    if len(data) > limit or inflater.unconsumed_tail:
        raise PayloadTooLarge(f"the decompressed body is larger than the limit of {limit} bytes")
    return data

"""Hostile input: a corpus of malformed images with the status each must get, and property-based tests
(hypothesis) over the image decoder, the OIP JSON codec and the binary-extension parser: whatever the bytes,
the answer is a clear 4xx error or a correct result — never another exception, a hang or a crash."""

from __future__ import annotations

import asyncio
import functools
import gzip
import io
import json
import statistics
import struct
import threading
import time
import tracemalloc
import zlib
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile

from conftest import IMAGES
from kakehashi.errors import KakehashiError
from kakehashi.protocols.oip_json import parse_infer_request
from kakehashi.repository.repository import ModelRepository
from kakehashi.server import compression
from kakehashi.server.app import create_app
from kakehashi.server.state import ServerState
from kakehashi.settings import Limits, Settings
from kakehashi.tasks.images import decode_image
from onnx_builders import tiny_model

PREDICT = "/v1/models/ssdlite-person/predict"
PROPERTY = settings(max_examples=300, deadline=10_000, suppress_health_check=[HealthCheck.too_slow])


def _encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png(width: int, height: int, idat: bytes) -> bytes:
    """A PNG whose header claims `width` x `height` (the pixel data need not match)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def _animated(fmt: str) -> bytes:
    frames = [Image.new("RGB", (64, 64), colour) for colour in ((250, 0, 0), (0, 250, 0))]
    buffer = io.BytesIO()
    frames[0].save(buffer, fmt, save_all=True, append_images=frames[1:])
    return buffer.getvalue()


JPEG = _encode(Image.new("RGB", (64, 64), (9, 9, 9)), "JPEG")
# (case, bytes, status, part of the error message — or, for 200, the decoded [height, width])
CORPUS = [
    ("empty", b"", 400, "empty (0 bytes)"),
    ("text", b"hello, not an image", 415, "not an image in a supported format"),
    ("html", b"<!doctype html><p>hi</p>", 415, "not an image in a supported format"),
    ("wrong magic: PNG bytes after a JPEG start", b"\xff\xd8\xff" + _png(8, 8, b"")[3:], 400, "starts like a JPEG"),
    ("truncated JPEG", JPEG[:200], 400, "truncated or corrupt"),
    ("truncated PNG", _encode(Image.new("RGB", (64, 64)), "PNG")[:60], 400, "truncated or corrupt"),
    ("zero-width PNG", _png(0, 10, zlib.compress(b"\0")), 400, "starts like a PNG"),
    (
        "decompression bomb: 100000x100000 PNG",
        _png(100_000, 100_000, zlib.compress(b"\0" * 20_000_000, 9)),
        413,
        "the limit is 64000000 pixels",
    ),
    (
        "huge dimensions within PIL's limit",
        _png(12_000, 12_000, zlib.compress(b"\0" * 1000)),
        413,
        "the limit is 64000000 pixels",
    ),
    ("CMYK JPEG", _encode(Image.new("CMYK", (64, 48), (0, 200, 200, 0)), "JPEG"), 200, [48, 64]),
    ("16-bit grey PNG", _encode(Image.fromarray(np.full((40, 50), 40000, np.uint16)), "PNG"), 200, [40, 50]),
    ("palette PNG", _encode(Image.new("P", (30, 20)), "PNG"), 200, [20, 30]),
    ("RGBA PNG", _encode(Image.new("RGBA", (30, 20), (1, 2, 3, 0)), "PNG"), 200, [20, 30]),
    ("animated PNG", _animated("PNG"), 200, [64, 64]),
    ("animated WebP", _animated("WEBP"), 200, [64, 64]),
    ("animated GIF", _animated("GIF"), 200, [64, 64]),
    ("TIFF", _encode(Image.new("RGB", (40, 30), (1, 2, 3)), "TIFF"), 200, [30, 40]),
    ("1x1 pixel", _encode(Image.new("RGB", (1, 1)), "PNG"), 200, [1, 1]),
    ("a JPEG with trailing garbage", JPEG + b"\0garbage" * 100, 200, [64, 64]),
]


@pytest.mark.parametrize("case, data, status, message", CORPUS, ids=[case[0] for case in CORPUS])
def test_malformed_image_corpus(default_server, case, data, status, message):
    response = default_server.client.post(PREDICT, content=data, headers={"content-type": "application/octet-stream"})
    assert response.status_code == status, response.text
    if status == 200:
        assert response.json()["images"][0]["shape"] == message
    else:
        assert message in response.json()["error"]


def test_the_server_is_unharmed_by_the_corpus(default_server):
    response = default_server.client.post(
        PREDICT, content=(IMAGES / "astronaut.png").read_bytes(), headers={"content-type": "image/png"}
    )
    assert response.json()["images"][0]["results"][0]["name"] == "person"
    assert "Traceback" not in default_server.log()


def test_sixteen_bit_images_are_scaled_not_clipped():
    image = decode_image(_encode(Image.fromarray(np.full((4, 4), 40000, np.uint16)), "PNG"))
    assert image.getpixel((0, 0)) == (155, 155, 155)  # 40000 / 257


def test_the_bomb_is_refused_before_decoding(monkeypatch):
    decoded, load = [], ImageFile.ImageFile.load

    def spy(image):  # where the pixel data is inflated
        decoded.append(image)
        return load(image)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    with pytest.raises(KakehashiError) as raised:
        decode_image(_png(100_000, 100_000, zlib.compress(b"\0" * 20_000_000, 9)))
    assert raised.value.status == 413 and "the limit is" in raised.value.message
    assert not decoded  # refused from the header: the pixel data was never inflated
    decode_image(_encode(Image.new("RGB", (8, 8)), "PNG"))
    assert decoded  # (the spy sees an image that is decoded)


# -- compression bombs (Content-Encoding: gzip) ---------------------------------------------------------------


@functools.cache
def _gzip_bomb() -> bytes:
    """~200 KB of gzip that inflates to 200 MB of zeros."""
    return gzip.compress(b"\0" * 200_000_000, 9)


def test_a_gzip_bomb_stops_inflating_at_the_limit():
    bomb = _gzip_bomb()
    tracemalloc.start()
    try:
        with pytest.raises(KakehashiError) as raised:
            compression.inflate(bomb, "gzip", 8_000_000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert raised.value.status == 413 and "larger than the limit of 8000000 bytes" in raised.value.message
    assert peak < 8_000_000 + 4 * compression.CHUNK_BYTES, peak  # not the 200 MB it would inflate to


def test_infer_inflates_gzip_bodies_off_the_event_loop(monkeypatch, tmp_path):
    """Through the real app and route: the body is inflated, and refused, in a worker thread."""
    threads = []

    def spy(*args):
        threads.append(threading.current_thread())
        return inflate(*args)

    inflate = compression.inflate
    monkeypatch.setattr(compression, "inflate", spy)
    tiny_model(tmp_path / "tiny.onnx")
    pool = ThreadPoolExecutor(2)
    repository = ModelRepository(tmp_path, pool, Limits())
    repository.load_all()
    app = create_app(ServerState(Settings(tmp_path, max_body_bytes=8_000_000), repository))

    async def post() -> tuple[threading.Thread, httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://test") as client:
            return threading.current_thread(), await client.post(
                "/v2/models/tiny/infer", content=_gzip_bomb(), headers={"Content-Encoding": "gzip"}
            )

    try:
        loop_thread, response = asyncio.run(post())
    finally:
        asyncio.run(repository.close_all())
        pool.shutdown()
    assert response.status_code == 413 and "larger than the limit of 8000000 bytes" in response.json()["error"]
    assert threads and all(thread is not loop_thread for thread in threads)


def test_concurrent_gzip_bombs_get_413_while_liveness_keeps_answering(default_server):
    """Attack 3: four clients posting bombs; health checks sent meanwhile are answered quickly, not after the
    inflation (which would take the event loop for the whole of each bomb)."""

    async def attack() -> tuple[list[httpx.Response], list[float], list[float]]:
        async with httpx.AsyncClient(base_url=default_server.url, timeout=120) as client:
            bombing = True
            bomb_seconds: list[float] = []
            live_seconds: list[float] = []

            async def bomb() -> list[httpx.Response]:
                answers = []
                for _ in range(3):
                    started = time.perf_counter()
                    answers.append(
                        await client.post(
                            "/v2/models/ssdlite-person/infer",
                            content=_gzip_bomb(),
                            headers={"Content-Encoding": "gzip"},
                        )
                    )
                    bomb_seconds.append(time.perf_counter() - started)
                return answers

            async def live() -> None:
                while bombing:
                    started = time.perf_counter()
                    assert (await client.get("/v2/health/live")).status_code == 200
                    live_seconds.append(time.perf_counter() - started)

            watcher = asyncio.create_task(live())
            answers = [a for batch in await asyncio.gather(*(bomb() for _ in range(4))) for a in batch]
            bombing = False
            await watcher
            return answers, bomb_seconds, live_seconds

    answers, bomb_seconds, live_seconds = asyncio.run(attack())
    assert all(a.status_code == 413 and "decompressed body is larger" in a.json()["error"] for a in answers)
    # inflated on the loop, about one health check gets through per bomb, and most wait for an inflation
    assert len(live_seconds) >= 5 * len(answers), (live_seconds, bomb_seconds)
    slow = statistics.quantiles(live_seconds, n=10)[-1]
    assert slow < statistics.median(bomb_seconds) / 5, (live_seconds, bomb_seconds)


# -- property-based -------------------------------------------------------------------------------------------


def _only_clear_errors(function, *args) -> object:
    try:
        return function(*args)
    except KakehashiError as exc:
        assert 400 <= exc.status < 500 and exc.message
        return exc


VALID_IMAGES = [_encode(Image.new("RGB", (16, 12), (1, 2, 3)), fmt) for fmt in ("PNG", "JPEG", "BMP", "WEBP")]


@PROPERTY
@given(st.binary(max_size=4096))
def test_decoder_on_random_bytes(data):
    _only_clear_errors(decode_image, data, 1_000_000)


@PROPERTY
@given(
    st.sampled_from(VALID_IMAGES),
    st.lists(st.tuples(st.integers(0, 4095), st.integers(0, 255)), max_size=8),
    st.integers(0, 4096),
)
def test_decoder_on_mutated_images(image, flips, cut):
    data = bytearray(image)
    for position, value in flips:
        data[position % len(data)] = value
    result = _only_clear_errors(decode_image, bytes(data[: max(1, len(data) - cut)]), 1_000_000)
    if not isinstance(result, KakehashiError):
        assert result.mode == "RGB" and result.width * result.height <= 1_000_000


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=20,
)
DATATYPES = ["BOOL", "UINT8", "INT8", "INT32", "INT64", "UINT64", "FP16", "FP32", "FP64", "BYTES", "NOPE"]
TENSORS = st.fixed_dictionaries(
    {
        "name": st.text(max_size=4),
        "datatype": st.sampled_from(DATATYPES),
        "shape": st.lists(st.integers(-2, 4), max_size=3) | JSON_VALUES,
        "data": JSON_VALUES,
    }
)


@PROPERTY
@given(st.binary(max_size=2048))
def test_json_codec_on_random_bytes(body):
    _only_clear_errors(parse_infer_request, body)


@PROPERTY
@given(
    st.fixed_dictionaries(
        {"inputs": st.lists(TENSORS, max_size=3) | JSON_VALUES},
        optional={"outputs": JSON_VALUES, "parameters": JSON_VALUES, "id": JSON_VALUES},
    )
)
def test_json_codec_on_random_requests(request):
    result = _only_clear_errors(parse_infer_request, json.dumps(request).encode())  # stdlib: big ints, NaN too
    if not isinstance(result, KakehashiError):
        for raw in request["inputs"]:
            array = result.inputs[raw["name"]]
            assert list(array.shape) == raw["shape"]


@PROPERTY
@given(
    st.lists(
        st.tuples(st.sampled_from(DATATYPES[:-1]), st.lists(st.integers(0, 3), max_size=3), st.integers(-4, 64)),
        min_size=1,
        max_size=3,
    ),
    st.binary(max_size=512),
    st.integers(-3, 3),
)
def test_binary_extension_parser(tensors, blob, header_shift):
    header = orjson.dumps(
        {
            "inputs": [
                {"name": f"t{i}", "datatype": datatype, "shape": shape, "parameters": {"binary_data_size": size}}
                for i, (datatype, shape, size) in enumerate(tensors)
            ]
        }
    )
    length = str(len(header) + header_shift)
    result = _only_clear_errors(parse_infer_request, header + blob, length)
    if not isinstance(result, KakehashiError):
        assert header_shift == 0 and sum(size for _, _, size in tensors) == len(blob)
        for i, (_, shape, _) in enumerate(tensors):
            assert list(result.inputs[f"t{i}"].shape) == shape


@PROPERTY
@given(st.lists(st.binary(max_size=16), max_size=6), st.integers(0, 8))
def test_binary_bytes_elements_round_trip(values, declared):
    """BYTES elements: valid length-prefixed data parses back exactly; a wrong count is a clear error."""
    blob = b"".join(struct.pack("<I", len(v)) + v for v in values)
    header = orjson.dumps(
        {
            "inputs": [
                {"name": "s", "datatype": "BYTES", "shape": [declared], "parameters": {"binary_data_size": len(blob)}}
            ]
        }
    )
    result = _only_clear_errors(parse_infer_request, header + blob, str(len(header)))
    if declared == len(values):
        assert list(result.inputs["s"]) == values
    else:
        assert isinstance(result, KakehashiError)


def test_the_pixel_limit_is_ours_above_pillows_own():
    """200 megapixels: refused by the header check under the limit; over a limit raised to 300 MP it passes that
    check (Pillow's ~179 MP bomb limit does not cap it) and fails only as the empty file it is."""
    header = _png(20_000, 10_000, zlib.compress(b"\0"))
    with pytest.raises(KakehashiError) as refused:
        decode_image(header, max_pixels=100_000_000)
    assert refused.value.status == 413 and "the limit is 100000000 pixels" in refused.value.message
    with pytest.raises(KakehashiError) as empty:
        decode_image(header, max_pixels=300_000_000)
    assert empty.value.status == 400 and "truncated or corrupt" in empty.value.message

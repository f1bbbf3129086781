"""Limits that protect the server, each configurable: header size, images per request, tensor elements, a
server-wide request timeout — every one answered with a clear 4xx/504 while the server keeps serving."""

from __future__ import annotations

import socket

import numpy as np
import pytest

from conftest import IMAGES, YOLO26, image_bytes
from onnx_builders import tiny_model

PNG = image_bytes(32, 32)


@pytest.fixture(scope="module")
def server(serve_module, tmp_path_factory):
    root = tmp_path_factory.mktemp("repo")
    tiny_model(root / "tiny.onnx")
    (root / "person").symlink_to(next(IMAGES.parent.parent.parent.glob("src/kakehashi/assets/models/ssdlite-person")))
    return serve_module(root, "--max-header-bytes", "8192", "--max-images", "2", "--max-tensor-elements", "20000")


def _raw_request(server, request: bytes) -> bytes:
    """Everything the server sends back until it closes the connection (a timeout fails the test)."""
    answer = b""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as connection:
        connection.sendall(request)
        while chunk := connection.recv(65536):
            answer += chunk
    return answer


@pytest.mark.parametrize("size", [8192 - 40, 8192 + 1, 20000, 60000])
def test_headers_over_the_limit_get_431_and_the_connection_closes(server, size):
    head = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Big: "
    head += b"a" * (size - len(head) - 4) + b"\r\n\r\n"
    assert len(head) == size
    answer = _raw_request(server, head)
    if size <= 8192:
        assert answer.startswith(b"HTTP/1.1 200 "), answer
    else:  # by the HTTP parser (no body) or, for what fits its buffer, by HeaderLimit with the limit in the body
        assert answer.startswith(b"HTTP/1.1 431 ") and answer.count(b"HTTP/1.1") == 1, answer


def test_the_header_limit_is_exact_for_heads_that_fit_the_parsers_buffer(serve, tmp_path):
    """With a 20000-byte limit the parser lets a 22000-byte head through (it checks between reads): refused 431
    with the limit in the message; 19000 bytes pass."""
    tiny_model(tmp_path / "tiny.onnx")
    server = serve(tmp_path, "--max-header-bytes", "20000")
    for size, status in ((19000, 200), (22000, 431)):
        response = server.client.get("/v2/health/live", headers={"X-Big": "a" * (size - 60)})
        assert response.status_code == status
    assert "larger than the limit of 20000 bytes" in response.json()["error"]


def test_a_header_that_never_ends_is_cut_off(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as connection:
        connection.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Endless: ")
        with pytest.raises((BrokenPipeError, ConnectionResetError)):
            for _ in range(1000):  # 64 MB if nobody stopped it
                connection.sendall(b"a" * 65536)


def test_headers_under_the_limit_and_large_bodies_are_fine(server):
    response = server.client.get("/v2/health/live", headers={"X-Fine": "a" * 6000})
    assert response.status_code == 200
    big = np.zeros((1, 3, 64, 64), np.float32)  # 12288 elements: under 20000
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3, 64, 64], "data": big.ravel().tolist()}]}
    assert server.client.post("/v2/models/tiny/infer", json=body).status_code == 200


def test_too_many_images_in_one_request(server):
    files = [("file", (f"{i}.png", PNG)) for i in range(3)]
    response = server.client.post("/v1/models/person/predict", files=files)
    assert response.status_code == 413 and "3 images in one request; the limit is 2" in response.json()["error"]
    assert server.client.post("/v1/models/person/predict", files=files[:2]).status_code == 200


def test_too_many_tensor_elements(server):
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 3, 64, 64], "data": [0.0] * 24576}]}
    response = server.client.post("/v2/models/tiny/infer", json=body)
    assert response.status_code == 413 and "24576 elements; the limit is 20000" in response.json()["error"]


def test_server_wide_request_timeout(serve, tmp_path):
    (tmp_path / "yolo" / "1").mkdir(parents=True)
    (tmp_path / "yolo" / "1" / "model.onnx").symlink_to(YOLO26.resolve())
    server = serve(tmp_path, "--request-timeout-ms", "1")
    response = server.client.post(
        "/v1/models/yolo/predict",
        content=(IMAGES / "astronaut.png").read_bytes(),
        headers={"content-type": "image/png"},
    )
    assert response.status_code == 504 and "deadline" in response.json()["error"]
    assert server.client.get("/v2/health/ready").status_code == 200

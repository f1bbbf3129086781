"""Connection-level attacks (issue 14, attack 4): headers sent a byte at a time, connections that send nothing,
bodies that stall, and more connections than the server serves at once. Each is cut or held back by a configurable
limit while the server keeps serving everyone else."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import httpx
import pytest

from conftest import free_ports
from onnx_builders import tiny_model

HEADER_TIMEOUT, BODY_TIMEOUT = 1.5, 1.5


@pytest.fixture(scope="module")
def server(serve_module, tmp_path_factory):
    root = tmp_path_factory.mktemp("repo")
    tiny_model(root / "tiny.onnx")
    return serve_module(
        root, "--header-timeout-seconds", str(HEADER_TIMEOUT), "--body-timeout-seconds", str(BODY_TIMEOUT)
    )


def _connect(server) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=30)


def _closed_by_server(connection: socket.socket, drip: bytes = b"", every: float = 0.2) -> tuple[bytes, float]:
    """Send `drip` every `every` s until the server closes the connection (a 30 s deadline fails the test); what
    it sent back and how long that took."""
    started, answer = time.monotonic(), b""
    connection.settimeout(every)
    while time.monotonic() - started < 30:
        try:
            if drip:
                connection.sendall(drip)
            chunk = connection.recv(65536)
        except TimeoutError:
            continue
        except (BrokenPipeError, ConnectionResetError):
            return answer, time.monotonic() - started
        if not chunk:
            return answer, time.monotonic() - started
        answer += chunk
    pytest.fail(f"the connection was still open after 30 s; received {answer[:200]!r}")


def _live(server) -> bool:
    return server.client.get("/v2/health/live").status_code == 200


def test_headers_dripped_a_byte_at_a_time_are_cut_at_the_header_timeout(server):
    with _connect(server) as connection:
        connection.sendall(b"GET /v2/health/live HTTP/1.1\r\n")
        answer, took = _closed_by_server(connection, drip=b"X")
    assert b"200 OK" not in answer
    assert took < HEADER_TIMEOUT * 4, took  # a drip every 0.2 s would otherwise keep it open for ever
    assert _live(server)


def test_a_connection_that_sends_nothing_or_idles_after_an_answer_is_closed(server):
    with _connect(server) as silent:
        assert _closed_by_server(silent)[0] == b""
    with _connect(server) as idle:
        idle.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        answer, _ = _closed_by_server(idle)
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.count(b"HTTP/1.1") == 1


def test_many_slow_header_connections_are_all_cut_and_the_server_keeps_serving(server):
    connections = [_connect(server) for _ in range(24)]  # all dripping headers at once
    try:
        for connection in connections:
            connection.sendall(b"GET /v2/health/live HTTP/1.1\r\nX-Slow: ")
        for connection in connections:
            answer, _ = _closed_by_server(connection, drip=b"a", every=0.5)
            assert b"200 OK" not in answer
    finally:
        for connection in connections:
            connection.close()
    assert _live(server)


def test_a_stalled_body_gets_408(server):
    with _connect(server) as connection:
        connection.sendall(
            b"POST /v2/models/tiny/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100000\r\n\r\n{"inputs": ['
        )
        answer, _ = _closed_by_server(connection)
    assert answer.startswith(b"HTTP/1.1 408 ") and b"the request body stalled" in answer, answer
    assert _live(server)


def test_a_trickled_body_gets_408_at_the_body_timeout(server):
    """One byte every 0.2 s keeps a per-read timeout happy forever; the whole body has a deadline."""
    with _connect(server) as connection:
        connection.sendall(
            b"POST /v2/models/tiny/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100000\r\n\r\n"
        )
        answer, _ = _closed_by_server(connection, drip=b" ")
    assert answer.startswith(b"HTTP/1.1 408 ") and b"did not arrive within" in answer, answer
    assert _live(server)


def test_connections_over_the_cap_wait_until_others_close(serve, tmp_path):
    tiny_model(tmp_path / "tiny.onnx")
    server = serve(tmp_path, "--max-connections", "4", "--header-timeout-seconds", "60")
    server.client.close()  # its keep-alive connection would take a place
    held = [_connect(server) for _ in range(4)]
    try:
        for connection in held:  # each keeps its place: a request answered, the next one under way
            connection.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\nGET /v2/health/live HTTP/1.1\r\n")
            assert connection.recv(4096).startswith(b"HTTP/1.1 200 ")
        with _connect(server) as extra:  # accepted by the kernel, not served while the cap is reached
            extra.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            extra.settimeout(1)
            with pytest.raises(TimeoutError):
                extra.recv(4096)
            for connection in held:
                connection.close()
            extra.settimeout(30)
            assert extra.recv(4096).startswith(b"HTTP/1.1 200 ")  # served once the others are gone
    finally:
        for connection in held:
            connection.close()
    assert httpx.get(server.url + "/v2/health/live").status_code == 200


@pytest.mark.parametrize(
    "path, content_type, status",
    [("/v1/models/nothing-here/predict", "image/jpeg", 404), ("/v1/models/{model}/predict", "text/plain", 415)],
)
def test_an_answer_before_the_body_is_read_leaves_the_client_a_working_connection(server, path, content_type, status):
    """Refused before its 790 KB body was read, a request's connection closes with the answer, so the client's next
    request (on the same keep-alive client) goes on a fresh connection and is answered."""
    model = next(row["name"] for row in server.client.post("/v2/repository/index").json())
    body = b"\xff" * 790_000
    for _ in range(20):
        refused = server.client.post(path.format(model=model), content=body, headers={"Content-Type": content_type})
        assert refused.status_code == status, refused.text
        assert server.client.get("/v2").status_code == 200


@pytest.mark.parametrize(
    "head, body",
    [
        (b"Content-Length: 100000", b'{"inputs": ['),  # the client leaves part-way
        (b"Transfer-Encoding: chunked", b"zz\r\n"),  # a chunk size that is not hexadecimal
        (b"Transfer-Encoding: chunked", b"ffffffffffffffffff\r\nab"),  # one past any size
    ],
    ids=["disconnect", "bad-chunk-size", "huge-chunk-size"],
)
def test_a_body_cut_short_is_the_clients_fault_and_logs_no_traceback(server, head, body):
    logged = len(server.log())
    with _connect(server) as connection:
        connection.sendall(
            b"POST /v2/models/tiny/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + head + b"\r\n\r\n"
        )
        connection.sendall(body)
        connection.shutdown(socket.SHUT_WR)
        answer, _ = _closed_by_server(connection)
    assert answer == b"" or answer.startswith(b"HTTP/1.1 400 "), answer
    assert _live(server)
    metrics = server.client.get("/metrics").text
    assert 'outcome="error"' not in metrics  # counted as the client's (cancelled or invalid), not as our failure
    log = server.log()[logged:]
    assert "Traceback" not in log and "ERROR" not in log, log


@pytest.mark.parametrize("taken", ["HTTP", "gRPC"])
def test_a_second_server_on_a_taken_port_stops_saying_so_and_the_first_keeps_serving(server, tmp_path, taken):
    """Granian and gRPC bind with SO_REUSEPORT: without a check, a second server would listen beside the first and
    the kernel would share the connections between them."""
    tiny_model(tmp_path / "tiny.onnx")
    http_port, grpc_port = free_ports(2)
    if taken == "HTTP":
        http_port = server.port
    else:
        grpc_port = int(server.grpc_address.rsplit(":", 1)[1])
    command = [sys.executable, "-m", "kakehashi", "serve", str(tmp_path), "--port", str(http_port)]
    try:
        second = subprocess.run([*command, "--grpc-port", str(grpc_port)], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"a second server on the first's {taken} port was still running after 60 s")
    taken_port = http_port if taken == "HTTP" else grpc_port
    message = f"cannot serve {taken} on 127.0.0.1:{taken_port}: another process listens on it"
    assert second.returncode == 1 and message in second.stderr, second.stderr[-2000:]
    assert "Traceback" not in second.stderr
    assert server.client.get("/v2/health/ready").status_code == 200

"""Shared fixtures: test data paths, and real `kakehashi serve` processes on ephemeral ports."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

DATA = Path(__file__).parent / "data"
IMAGES = DATA / "images"
MODELS = DATA / "models"
YOLO11 = MODELS / "yolo11n-coco-random-640-dynamic.onnx"
YOLO26 = MODELS / "yolo26n-coco-random-640-e2e-dynamic.onnx"


def free_ports(count: int) -> list[int]:
    """`count` distinct ports free on 127.0.0.1 now (all held open together, so none repeats)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


def free_port() -> int:
    return free_ports(1)[0]


class Server:
    """A `kakehashi serve` subprocess on 127.0.0.1 (HTTP and gRPC ports) and an httpx client for it."""

    def __init__(self, model: Path | None, log_path: Path, *extra: str) -> None:
        self.port, grpc_port = free_ports(2)
        self.url = f"http://127.0.0.1:{self.port}"
        self.grpc_address = f"127.0.0.1:{grpc_port}"
        args = [
            sys.executable,
            "-m",
            "kakehashi",
            "serve",
            *([str(model)] if model else []),
            "--port",
            str(self.port),
            "--grpc-port",
            str(grpc_port),
            *extra,
        ]
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.process = subprocess.Popen(
            args, stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"}
        )
        self.client = httpx.Client(base_url=self.url, timeout=60)

    def wait_until(self, path: str = "/v2/health/ready", timeout: float = 120) -> None:
        """Poll `path` until it answers 200; fail if the server exits or after `timeout` seconds (a model's load
        times both runtimes and its batch sizes: tens of seconds on a busy 2-core machine)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}: {self.log()}")
            try:
                if self.client.get(path).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"server not answering 200 on {path} after {timeout} s: {self.log()}")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        """Send SIGTERM and go on: the drain (a second of linger for late arrivals, then the HTTP server's stop)
        runs while the next tests do; `reap` waits for the exit."""
        self.client.close()
        if self.process.poll() is None:
            self.process.terminate()
        _STOPPING.append(self)

    def reap(self) -> None:
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log.close()


_STOPPING: list[Server] = []


# The slowest test files (summed test time in the fast loop, heaviest first). xdist's `loadfile` hands out whole
# files in collection order, so starting these first keeps the two workers from ending on one long file.
HEAVY_FILES_FIRST = (
    "test_streams_server.py",
    "test_batch.py",
    "test_graceful_shutdown.py",
    "test_web_page.py",
    "test_stream_source.py",
    "test_precision.py",
    "test_control_plane.py",
    "test_big_frames.py",
    "test_bench_cli.py",
    "test_admission_wait.py",
    "test_backpressure.py",
    "test_runtimes.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the heavy files first (a stable sort: every other file, and every test within a file, keeps its order)."""
    rank = {name: position for position, name in enumerate(HEAVY_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture(scope="session", autouse=True)
def reap_servers() -> Iterator[None]:
    """Wait, at the end of the session, for every stopped server to exit (killed if one takes over 15 s)."""
    yield
    for server in _STOPPING:
        server.reap()


@pytest.fixture(scope="session", autouse=True)
def decision_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One folder of load decisions for the session (servers and in-process loads inherit it): each model and
    configuration is measured once, not at every start, and never from decisions of an earlier run or of the
    user's own cache. Tests about the measuring itself point `KAKEHASHI_CACHE_DIR` elsewhere."""
    base = tmp_path_factory.getbasetemp()
    # with pytest-xdist, each worker's base folder sits in the run's: the workers share the decisions
    folder = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "decisions"
    earlier = os.environ.get("KAKEHASHI_CACHE_DIR")
    os.environ["KAKEHASHI_CACHE_DIR"] = str(folder)
    yield folder
    if earlier is None:
        del os.environ["KAKEHASHI_CACHE_DIR"]
    else:
        os.environ["KAKEHASHI_CACHE_DIR"] = earlier


@pytest.fixture(scope="session")
def artifacts() -> Path:
    path = Path(__file__).parent.parent / "test-artifacts"
    path.mkdir(exist_ok=True)
    return path


def _server_pool(artifacts: Path, label: str) -> Iterator:
    started: list[Server] = []

    def start(model: Path | None, *extra: str, wait: str | None = "/v2/health/ready") -> Server:
        name = label.replace("/", "_")[:80]
        server = Server(model, artifacts / f"server-{name}-{len(started)}.log", *extra)
        started.append(server)
        if wait:
            server.wait_until(wait)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def serve(artifacts: Path, request: pytest.FixtureRequest) -> Iterator:
    """Start servers inside one test: `serve(model_path, *flags)`; each is stopped after the test."""
    yield from _server_pool(artifacts, request.node.name)


@pytest.fixture(scope="module")
def serve_module(artifacts: Path, request: pytest.FixtureRequest) -> Iterator:
    """Like `serve`, for servers shared by a whole test module."""
    yield from _server_pool(artifacts, request.module.__name__)


@pytest.fixture(scope="module")
def default_server(serve_module) -> Server:
    """The bundled default model, served with no model argument."""
    return serve_module(None)


def image_bytes(
    width: int, height: int, fmt: str = "PNG", color: tuple[int, int, int] = (90, 120, 200), **save_args
) -> bytes:
    """A plain image of the given size encoded as `fmt`."""
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, fmt, **save_args)
    return buffer.getvalue()


def same_detections(first: list[dict], second: list[dict]) -> bool:
    """Two processes' answers agree: same classes in the same order, confidences within 0.002 and box corners
    within a pixel (as ONNX Runtime and OpenVINO agree). Not bit-identical: `backend: auto` times both runtimes
    at load, so two processes may serve with different ones, and batch sizes change the float rounding. Two empty
    answers are not "the same" (that would prove nothing): compare answers where something is found, and check
    empty ones as `== []`."""
    if not first or not second:
        return False
    if [(r["class"], r["name"]) for r in first] != [(r["class"], r["name"]) for r in second]:
        return False
    return all(
        a["confidence"] == pytest.approx(b["confidence"], abs=2e-3) and a["box"] == pytest.approx(b["box"], abs=1.0)
        for a, b in zip(first, second)
    )


def virtualenv(name: str, requirements: list[str], log: Path) -> Path:
    """The python of `.cache/<name>` with `requirements` installed (created once from the package registry,
    reused while the requirements stay the same). For tools whose dependencies clash with the test venv's."""
    folder = Path(__file__).parent.parent / ".cache" / name
    python, stamp = folder / "bin" / "python", folder / "kakehashi-requirements.txt"
    if not (python.exists() and stamp.exists() and stamp.read_text() == "\n".join(requirements)):
        with open(log, "wb") as output:
            subprocess.run(
                [sys.executable, "-m", "venv", "--clear", str(folder)], check=True, stdout=output, stderr=output
            )
            arguments = [part for requirement in requirements for part in requirement.split(" ", 1)]
            subprocess.run(
                [str(python), "-m", "pip", "install", *arguments],
                check=True,
                stdout=output,
                stderr=output,
                timeout=1200,
            )
        stamp.write_text("\n".join(requirements))
    return python


# for in-process tests that are about neither the runtime choice nor batching: `backend: auto` times both
# runtimes and batching times every batch size at load (20+ s for a YOLO model here), this loads in under 1 s
QUICK_YAML = "backend: onnxruntime\nbatching: {max_batch_size: 1}\n"


def quick_model(model: Path, root: Path, yaml: str = "") -> Path:
    """A repository at `root` serving `model` (linked) as its only model, named after the file, with
    `QUICK_YAML` and `yaml` as its model.yaml; returns the model's folder (for `inprocess.load`)."""
    folder = root / model.stem
    (folder / "1").mkdir(parents=True)
    (folder / "1" / "model.onnx").symlink_to(model.resolve())
    (folder / "model.yaml").write_text(QUICK_YAML + yaml)
    return folder


def queue_depth(server: Server, model: str) -> float:
    """The model's queue depth (version 1), as its metric says."""
    metrics = server.client.get("/metrics").text
    return float(re.search(rf'kakehashi_queue_depth{{model="{model}",version="1"}} (\S+)', metrics).group(1))


async def busy_instance(client: httpx.AsyncClient, server: Server, model: str, image: bytes) -> asyncio.Future:
    """Send one request of 8 images to `model` (a single instance, batches of one) and return once 5 of them wait in
    its queue: the instance is then busy for a while. The request's answer is the returned future."""
    files = [("file", (f"{i}.png", image, "image/png")) for i in range(8)]
    keeper = asyncio.ensure_future(client.post(f"/v1/models/{model}/predict", files=files))
    deadline = time.monotonic() + 30
    while queue_depth(server, model) < 5:
        assert time.monotonic() < deadline and not keeper.done(), "the 8 images never queued"
        await asyncio.sleep(0.01)
    return keeper

"""Real counterparts for the event sinks in tests: a mosquitto process and an aiohttp webhook receiver."""

from __future__ import annotations

import asyncio
import getpass
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

import debian
from conftest import free_port

MOSQUITTO = "/usr/sbin/mosquitto"


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


async def eventually(predicate: Callable[[], bool | Awaitable[bool]], timeout: float, what: str) -> None:
    """Poll `predicate` (plain or async) until it is true, failing after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result if isinstance(result, bool) else await result:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class Mosquitto:
    """A mosquitto broker on 127.0.0.1 and a free port; `start` after `stop` restarts it on the same port.
    `persistence` keeps sessions (and the QoS 1 messages queued for them) across such a restart."""

    def __init__(self, directory: Path, persistence: bool = False) -> None:
        self.port = free_port()
        self.directory = directory
        self.config = directory / "mosquitto.conf"
        lines = [f"listener {self.port} 127.0.0.1", "allow_anonymous true", f"persistence {str(persistence).lower()}"]
        if persistence:  # `user`: started as root, mosquitto would drop to a user that cannot write here
            lines += [f"persistence_location {directory}/", f"user {getpass.getuser()}"]
        self.config.write_text("\n".join(lines) + "\n")
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        debian.ensure(debian.MOSQUITTO, Path(MOSQUITTO).exists)
        with open(self.directory / "mosquitto.log", "ab") as log:
            process = subprocess.Popen([MOSQUITTO, "-c", str(self.config)], stdout=log, stderr=subprocess.STDOUT)
        self.process = process
        wait_for(lambda: process.poll() is not None or _accepts(self.port), 10, "mosquitto to listen")
        if process.poll() is not None:
            raise RuntimeError(f"mosquitto exited: {(self.directory / 'mosquitto.log').read_text()}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None

    def __enter__(self) -> Mosquitto:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class WebhookReceiver:
    """An aiohttp server on 127.0.0.1 that answers 503 to the first `fail_first` attempts, then 200. It records
    every attempt's `Idempotency-Key` and every accepted body."""

    def __init__(self, fail_first: int = 0, port: int = 0) -> None:
        """`port`: a fixed one (for a sink configured before the receiver is up), else any free one."""
        self.fail_first = fail_first
        self.port = port
        self.attempts: list[str] = []
        self.bodies: list[dict[str, Any]] = []
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def _receive(self, request: web.Request) -> web.Response:
        self.attempts.append(request.headers.get("Idempotency-Key", ""))
        if len(self.attempts) <= self.fail_first:
            return web.Response(status=503, text="not yet")
        self.bodies.append(orjson.loads(await request.read()))
        return web.Response(status=200)

    def fail_next(self, attempts: int) -> None:
        """Answer 503 to the next `attempts` attempts (0: accept from now on)."""
        self.fail_first = len(self.attempts) + attempts

    def unique(self) -> list[dict[str, Any]]:
        """The accepted bodies with duplicates (same id) removed, in arrival order."""
        first: dict[str, dict[str, Any]] = {}
        for body in self.bodies:
            first.setdefault(body["id"], body)
        return list(first.values())

    async def __aenter__(self) -> WebhookReceiver:
        app = web.Application()
        app.router.add_post("/hook", self._receive)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}/hook"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

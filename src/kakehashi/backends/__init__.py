"""Inference runtimes behind one interface (`base.Backend`), found in the registry, and the choice between them
for a model."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import numpy as np

from kakehashi.backends import onnxruntime, openvino  # noqa: F401  (each runtime registers itself when imported)
from kakehashi.backends.base import Backend
from kakehashi.backends.registry import AUTO, RUNTIMES, RuntimeOptions, runtime_named
from kakehashi.errors import ModelLoadError

log = logging.getLogger(__name__)

Feeds = dict[str, np.ndarray]
AUTO_STARTS_ON = "onnxruntime"  # serves every ONNX model; `auto` then times the other runtimes against it
FLOAT_PRECISIONS = ("f32", "bf16", "f16")
TIMING_ROUNDS = 3  # rounds of every candidate in turn when runtimes and precisions are timed (each: 1 untimed, 1 timed)
# how much faster than the reference (f32 on the configured runtime) another choice must time to serve instead: within
# it the timings' noise decides (on a shared machine two runtimes within 10% swap places from one load to the next),
# while a switch costs memory (a second runtime's libraries: ~50 MB) and lower precisions' answers drift
SWITCH_GAIN = 1.1


class Verdict(Protocol):
    """Whether a precision's answers agree with f32's, and what was measured (`tasks.agreement.Agreement`)."""

    @property
    def agrees(self) -> bool: ...

    def summary(self) -> str: ...


@dataclass(frozen=True)
class Choice:
    """What serves a model: a runtime, and the precision it computes in (`int8`: the model's quantized file)."""

    runtime: str
    precision: str = "f32"

    def __str__(self) -> str:
        return f"{self.runtime} {self.precision}"


class MeasuringStopped(Exception):
    """Measuring was asked to stop (the model is being unloaded)."""


def check_stop(stop: threading.Event | None) -> None:
    """Raise `MeasuringStopped` if `stop` is set: measuring checks between steps, each at most a compile or a few
    inferences long."""
    if stop is not None and stop.is_set():
        raise MeasuringStopped


def int8_file(path: Path) -> Path:
    """Where `kakehashi quantize` writes `path`'s INT8 copy (and where a load looks for it): `model.int8.onnx`."""
    return path.with_suffix(".int8.onnx")


def reference_choice(runtime: str) -> Choice:
    """What a model first loads on, and what other precisions are compared with: f32 on the configured runtime
    (ONNX Runtime for `auto`)."""
    return Choice(AUTO_STARTS_ON if runtime == AUTO else runtime)


def choices(path: Path, runtime: str, precision: str) -> list[Choice]:
    """Every runtime and precision the configuration allows (`auto` for either: all) that this machine has: f32,
    what each runtime computes in on this CPU, and int8 where `model.int8.onnx` lies beside the model. Raises
    `ModelLoadError` saying why when a precision asked for is not there."""
    runtimes = [r for r in RUNTIMES.values() if r.available()] if runtime == AUTO else [runtime_named(runtime)]
    found = [
        Choice(r.name, p)
        for r in runtimes
        for p in (*FLOAT_PRECISIONS, "int8")
        if precision in (AUTO, p) and (int8_file(path).is_file() if p == "int8" else p in r.precisions())
    ]
    if found:
        return found
    if precision == "int8":
        raise ModelLoadError(
            f"precision int8 serves {int8_file(path).name} beside the model: write it with `kakehashi quantize`"
        )
    offered = "; ".join(f"{r.name}: {', '.join(r.precisions())}" for r in runtimes)
    raise ModelLoadError(f"precision {precision}: no runtime computes in it on this CPU ({offered})")


def create_instances(path: Path, choice: Choice, options: RuntimeOptions) -> list[Backend]:
    """The model's inference instances for `choice`."""
    model = int8_file(path) if choice.precision == "int8" else path
    computes_in = "f32" if choice.precision == "int8" else choice.precision
    return runtime_named(choice.runtime).create(model, replace(options, precision=computes_in))


def best_seconds(backend: Backend, feeds: Feeds, runs: int = 5) -> float:
    """The fastest of `runs` inferences of `feeds` on `backend`, after one not timed (first runs are slow
    everywhere)."""
    backend.run(feeds)
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        backend.run(feeds)
        best = min(best, time.perf_counter() - started)
    return best


def run_slots(instances: list[Backend]) -> list[Backend]:
    """One entry per inference `instances` take at once: each distinct instance (OpenVINO's one compiled model is
    listed once per instance) as many times as its `concurrent_runs` (a `solo` instance first)."""
    distinct = {id(instance): instance for instance in instances}.values()
    return [instance for instance in distinct for _ in range(instance.concurrent_runs)]


def occupied_seconds(instances: list[Backend], feeds: Feeds, runs: int = 5) -> float:
    """Seconds per inference of `feeds` with every run slot serving a queue busy at once (each in a thread of its
    own; a `solo` instance takes no part), the best of `runs` rounds after one not timed: what a model's full queue
    gets. Two single-thread ONNX Runtime sessions, one session taking two runs at once and one OpenVINO model
    spreading each inference over the cores compare as they serve, not by one inference alone."""
    slots = [slot for slot in run_slots(instances) if not slot.solo]
    if len(slots) == 1:
        return best_seconds(slots[0], feeds, runs)
    with ThreadPoolExecutor(len(slots), thread_name_prefix="measuring") as pool:

        def round_of_all() -> float:
            started = time.perf_counter()
            for _ in pool.map(lambda backend: backend.run(feeds), slots):
                pass
            return (time.perf_counter() - started) / len(slots)

        round_of_all()
        return min(round_of_all() for _ in range(runs))


def _seconds_of(choice: Choice, instances: list[Backend], feeds: Feeds) -> float:
    """How fast `choice` runs `feeds` in one timed round, after one not timed (by choice, so a test can give the
    choices known costs)."""
    return occupied_seconds(instances, feeds, runs=1)


def fastest_agreeing(
    path: Path,
    options: RuntimeOptions,
    reference: tuple[Choice, list[Backend]],
    candidates: list[Choice],
    feeds: Feeds,
    agreement: Callable[[Backend], Verdict],
    stop: threading.Event | None = None,
    beside: Callable[[], AbstractContextManager[None]] = nullcontext,
) -> tuple[Choice, list[Backend], str]:
    """Time every candidate on `feeds` with all its run slots busy (the reference's instances are reused) and
    serve the fastest whose answers agree with the reference's (`agreement`; f32 is the reference's precision and
    needs none); another choice than the reference must be `SWITCH_GAIN` times faster. The losers are released;
    the log says what was measured; the timings run inside `beside()` (the caller's stand-in for a server's other
    work). Returns the choice, its instances and what the check found: how the served
    precision agreed, and which faster ones were refused and why. Raises `ModelLoadError` when no candidate
    agrees; `MeasuringStopped` when `stop` is set between steps."""
    created: dict[Choice, list[Backend]] = {}
    for choice in candidates:
        check_stop(stop)
        if choice == reference[0]:
            created[choice] = reference[1]
            continue
        try:
            created[choice] = create_instances(path, choice, options)
        except ModelLoadError as exc:
            log.info("%s: %s cannot serve this model (%s); left out", path, choice, exc.message)
    if len(created) == 1 and reference[0] in created:
        return reference[0], reference[1], ""
    # rounds taking turns, the best of each: a busy spell on the machine (another model loading, the server's
    # requests while a child measures) slows one round of every candidate rather than all of one candidate's
    seconds = dict.fromkeys(created, math.inf)
    with beside():
        for _ in range(TIMING_ROUNDS):
            for choice, each in created.items():
                check_stop(stop)
                seconds[choice] = min(seconds[choice], _seconds_of(choice, each, feeds))
    timings = ", ".join(f"{choice} {each * 1000:.1f} ms" for choice, each in seconds.items())
    gain = f" (another choice than {reference[0]} serves only if {SWITCH_GAIN:.2f}x faster)"
    log.info("%s: %s per inference%s", path, timings, gain)
    refused: list[str] = []

    def ranked(choice: Choice) -> float:
        return seconds[choice] * (1.0 if choice == reference[0] else SWITCH_GAIN)

    for choice in sorted(created, key=ranked):
        check_stop(stop)
        found = None if choice.precision == "f32" else agreement(created[choice][0])
        if found is None or found.agrees:
            notes = [found.summary()] if found is not None else []
            log.info("%s: serving %s%s", path, choice, f", which {notes[0]}" if notes else "")
            return choice, created[choice], "; ".join(notes + refused)
        log.info("%s: %s is faster but %s; not served", path, choice, found.summary())
        refused.append(f"{choice} refused: {found.summary()}")
    raise ModelLoadError(f"no precision asked for agrees with the model's f32 answers: {'; '.join(refused)}")

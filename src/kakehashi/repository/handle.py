"""The model handle: one loaded model version, the single entry point for every transport."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, replace
from enum import Enum
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from PIL import Image

from kakehashi.backends import (
    Choice,
    MeasuringStopped,
    choices,
    create_instances,
    int8_file,
    reference_choice,
    run_slots,
)
from kakehashi.backends.base import Backend, TensorSpec
from kakehashi.backends.registry import RuntimeOptions
from kakehashi.batching.batcher import EWMA_WEIGHT, HOP_SECONDS, BatchResult, DynamicBatcher
from kakehashi.datatypes import OIP_TO_NUMPY, oip_datatype
from kakehashi.errors import (
    InferenceFailed,
    InvalidInput,
    KakehashiError,
    PayloadTooLarge,
    Unavailable,
    runtime_message,
)
from kakehashi.handlers import Handler, HandlerContext, Runtime, call_hook, find_handler, setup
from kakehashi.memory import give_back_freed_memory
from kakehashi.metrics import VersionSeries
from kakehashi.repository.config import ModelConfig
from kakehashi.repository.decisions import LoadDecisions, cache_folder, decision_key, recall, remember
from kakehashi.repository.image_steps import Feeds, HandlerSteps, ImageSteps, TaskSteps
from kakehashi.repository.measuring import MeasureJob, measure, measure_in_child, one_at_a_time, zeros
from kakehashi.repository.precision_guard import calibration_images
from kakehashi.settings import Limits
from kakehashi.tasks.images import ImageData, is_small_jpeg_file, open_image
from kakehashi.tasks.params import PredictParams
from kakehashi.tasks.resolve import ImageTask, resolve_task
from kakehashi.users import Users

if TYPE_CHECKING:
    from kakehashi.servable import Servable

log = logging.getLogger(__name__)
T = TypeVar("T")
# how far below the server's scheduling priority instances left cold are warmed while the model serves (Linux)
WARM_NICENESS = 10
SMALL_IMAGE_FACTOR = 2  # an image of at most this many times a model's input pixels may be prepared on the loop
REPROBE_EVERY = 64


class ModelState(str, Enum):
    LOADING = "LOADING"
    READY = "READY"
    FAILED = "UNAVAILABLE"
    UNLOADED = "UNLOADED"


@dataclass(frozen=True)
class ImagePrediction:
    """One image's answer: original shape (h, w), results, and where its time went (ms)."""

    shape: tuple[int, int]
    results: list[dict]
    speed: dict[str, float]


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def _batchable(backend: Backend) -> bool:
    """True if every input and output has a dynamic first (batch) dimension."""
    return all(spec.shape and spec.shape[0] == -1 for spec in (*backend.inputs, *backend.outputs))


class ModelHandle:
    """A model version: loads once, then answers raw-tensor `infer` and image `predict` calls.

    Every inference goes through the version's dynamic batcher to its instances (one runtime session each).
    """

    def __init__(
        self,
        name: str,
        version: int,
        path: Path,
        config: ModelConfig,
        compute: Executor,
        limits: Limits,
        folder: Path | None = None,
        lookup: Callable[[str, int | None], Servable] | None = None,
        measure_in_background: bool = False,
    ) -> None:
        """`folder`: the model's folder (where `model.yaml` and a `handler.py` would be), None for a bare file;
        `lookup`: other served models by name, for a handler's `predict` hook; `measure_in_background`: a first
        load serves at once and measures after (`measure_in_background()`)."""
        self.name = name
        self.version = version
        self.path = path
        self.folder = folder
        self.config = config
        self.handler: Handler | None = None
        self._lookup = lookup
        self._hook_pool: ThreadPoolExecutor | None = None  # a handler's `predict` hooks wait on other work here
        self.reason = ""
        self.backend: Backend | None = None
        self.task: ImageTask | None = None
        self.max_batch_size = 1
        self._batchable = False
        self.preferred_batch_size = 1
        self.load_seconds = 0.0
        self.last_inference_ms = 0
        self._instance_list: list[Backend] = []
        self._slots: list[Backend] = []  # the batcher's slots: each instance once per run it takes at once
        self.choice = reference_choice(config.backend)  # the runtime and precision serving
        self.agreement = ""  # how the precision serving agreed with f32's answers, and faster ones refused
        self._measure_in_background = measure_in_background
        # what is left to measure: the decisions' key, the warm-up feeds
        self._background: tuple[str, dict[int, dict[str, np.ndarray]]] | None = None
        # the instances left cold when the model became READY (all but a solo one), warmed just after, and the feeds
        self._cold: tuple[list[Backend], dict[int, dict[str, np.ndarray]]] | None = None
        self._switching = threading.Lock()  # a switch after measuring, against `close`
        self._measuring: threading.Thread | None = None  # warms what was left cold, then measures (a first start)
        self._warm_done = threading.Event()  # clear while instances left cold wait for their warm-up
        self._warm_done.set()
        self._compiled: Path | None = None  # where runtimes keep this version's compiled models
        # moving averages of the CPU time (not stretched by waits for the GIL or a core, as a duration in the pool is)
        # of post-processing (the first answers are post-processed in the pool) and of what a small file cost the
        # loop (`_prepare`)
        self._postprocess_cpu = 1.0
        self._post_on_loop = False  # a classifier: its post-processing may run on the event loop when cheap
        self._small_file_cpu: float | None = None
        self._small_files = 0
        self._stop = threading.Event()  # set by `close`: measuring stops at its next step
        self._threads = 1
        self._users = Users()
        self._admitted = 0
        self._batcher: DynamicBatcher | None = None
        self._compute = compute
        self._limits = limits
        # the model's and server's own limits are fixed: only the client's timeout varies per request
        self._fixed_timeout_ms = min(
            (t for t in (config.batching.timeout_ms, limits.request_timeout_ms) if t), default=None
        )
        self.series = VersionSeries.of(name, str(version))
        # the gauge holds the handle weakly, so an unloaded version can be garbage-collected
        self._set_state(ModelState.LOADING)

    # -- lifecycle -------------------------------------------------------------------------------

    def _set_state(self, state: ModelState) -> None:
        self.state = state
        self.publish_state()

    def publish_state(self) -> None:
        """Show this handle's state and queue depth in the metrics, which it shares with other handles of its
        version (the one a reload replaces, or a failed reload's). The gauge holds the handle weakly, so an
        unloaded version can be garbage-collected."""
        self.series.state(self.state.value, [each.value for each in ModelState])
        this = weakref.ref(self)
        self.series.queue_depth.set_function(lambda: handle.queue_depth if (handle := this()) is not None else 0)

    def load(self) -> None:
        """Load the instances, resolve the task and warm up; on failure the state says why."""
        started = time.perf_counter()
        config = self.config
        threads = self._threads = config.threads or max(1, (os.cpu_count() or 1) // (config.instances or 1))
        try:
            settings = f"{config!r} threads={threads}"
            key = decision_key(self.path, settings, self._related_files()) if config.warmup else ""
            # compiled models kept under the decisions' key: a runtime's own cache may not notice new bytes
            self._compiled = folder / "compiled" / key[:16] if key and (folder := cache_folder()) else None
            decided = recall(key) if key else None
            if decided is not None:
                self.choice, self.agreement = Choice(decided.runtime, decided.precision), decided.agreement
            self._instances = create_instances(self.path, self.choice, self._options())
            backend = self._instances[0]
            self.handler = find_handler(config.handler, self.folder) if self.folder is not None else None
            if self.handler is not None:
                context = HandlerContext(
                    self.name,
                    self.version,
                    self.folder or self.path.parent,
                    backend.inputs,
                    backend.outputs,
                    backend.metadata,
                )
                setup(self.handler, context)
                if callable(getattr(self.handler, "predict", None)):
                    self._hook_pool = ThreadPoolExecutor(
                        max(4, config.batching.max_batch_size * self.runs_at_once), f"{self.name}-handler"
                    )
            else:
                self.task = resolve_task(backend, config, self.path)
                self._post_on_loop = self.task is not None and self.task.kind == "classify"
            self.backend = backend
            self._batchable = _batchable(backend)
            self.max_batch_size = config.batching.max_batch_size if self._batchable else 1
            self.preferred_batch_size = min(
                config.batching.preferred_batch_size or self.max_batch_size, self.max_batch_size
            )
            if config.warmup:
                self._warm_up(key, decided)
            else:
                self._serve_unchecked("warm-up is off")
        except KakehashiError as exc:
            log.error("model %s version %s failed to load: %s", self.name, self.version, exc.message)
            self._fail(exc.message)
            return
        except Exception as exc:  # the runtime or our code failed (e.g. the warm-up inference): ours to report
            log.exception("model %s version %s failed to load", self.name, self.version)
            self._fail(f"loading failed: {runtime_message(exc)}")
            return
        self._batcher = DynamicBatcher(
            self._run_on,
            self.runs_at_once,
            self.preferred_batch_size,
            config.batching.max_queue_delay_ms,
            config.batching.max_queue_size,
            f"{self.name}:{self.version}",
            self._record_batch,
            inline_below=HOP_SECONDS,
            solo=self._slots[0].solo,
        )
        self.load_seconds = time.perf_counter() - started
        self.series.load_seconds.set(self.load_seconds)
        self._set_state(ModelState.READY)
        batching = (
            f"batches of up to {self.preferred_batch_size}"
            if self.max_batch_size > 1
            else ("batching off" if self._batchable else "batching off: the graph's batch dimension is fixed")
        )
        log.info(
            "model %s version %s ready in %.2f s: task %s, runtime %s, precision %s, %d instance(s), %d run(s) at "
            "once, %s",
            self.name,
            self.version,
            self.load_seconds,
            self.kind,
            self.runtime,
            self.precision,
            len(self._instances),
            self.runs_at_once,
            batching,
        )
        if self._background is not None or self._cold is not None:
            self._measuring = threading.Thread(target=self._settle, name=f"{self.name}-measure")
            self._measuring.start()

    def _fail(self, reason: str) -> None:
        self._instances, self.backend, self.reason = [], None, reason
        self._set_state(ModelState.FAILED)

    def serving(self) -> AbstractContextManager[None]:
        """Mark a request as using this handle, so `close` lets it finish (the transport wraps each request)."""
        return self._users.serving()

    @contextmanager
    def _admission(self, count: int, deadline: float | None) -> Iterator[None]:
        """Hold `count` places (rows: images or tensor rows) from arrival until the request's last piece of work
        is gone. Past the queue limit (plus what the instances are running), or when working through the rows
        admitted ahead is expected to take longer than the queue-wait budget or the time left before `deadline`,
        a request is refused with 429 before any decoding, so memory and waiting stay bounded under overload; a
        request larger than the limit is still taken when nothing else is waiting."""
        if self._admitted and self._batcher is not None:
            limit = self.config.batching.max_queue_size + self.max_batch_size * self.runs_at_once
            if self._admitted + count > limit:
                raise self._batcher.overloaded(self._admitted)
            if late := self._batcher.too_late(self._admitted, self._queue_wait_budget, deadline):
                raise late
        self._admitted += count
        try:
            yield
        finally:
            self._admitted -= count

    @cached_property
    def _queue_wait_budget(self) -> float | None:
        """Seconds a request may expect to wait for its turn: the tighter of the model's and the server's
        `max_queue_wait_ms`; None without either."""
        budgets = (self.config.batching.max_queue_wait_ms, self._limits.max_queue_wait_ms)
        return min((ms / 1000 for ms in budgets if ms), default=None)

    def abandon_queued(self, reason: str) -> int:
        """Answer the requests still queued for this version 503 with `reason` (at shutdown, when the grace period
        runs out); those running finish. How many were answered."""
        return self._batcher.abandon(Unavailable(reason)) if self._batcher is not None else 0

    async def close(self, grace_seconds: float = 30.0) -> None:
        """Stop serving: requests already using the handle finish first, then the sessions are released."""
        self._stop.set()  # measuring now would only compete with the version replacing this one
        await self._users.gone(grace_seconds)
        with self._switching:
            self._set_state(ModelState.UNLOADED)
        if self._measuring is not None:  # the runtimes must not be mid-inference when the process exits
            await asyncio.to_thread(self._measuring.join)
        if self._hook_pool is not None:
            self._hook_pool.shutdown(wait=False)
        if self._batcher is not None:
            await self._batcher.close()
        self._instances, self.backend, self._batcher = [], None, None

    def _warm_up(self, key: str, decided: LoadDecisions | None) -> None:
        """Run the smallest and largest batch the batcher may form on every instance, so no user request pays for
        the first runs (a load that serves at once or reuses decisions warms only a solo instance, which a lone
        request runs on, and the others just after it is READY). The first load on a machine also measures: whether
        outputs follow the batch, the fastest runtime and precision whose answers agree with f32's, and the batch
        size with the best throughput; they are kept under `key`, and `decided` holds them for later loads. With
        `measure_in_background`, a first load of `precision: auto` or `f32` serves at once on f32 and batches of
        one, and measures after it is READY, in a child process (`measuring`)."""
        feeds = self._warm_up_feeds()
        if feeds is None:
            self._serve_unchecked("its input shapes are not fixed")
            return
        if decided is not None:
            log.info("model %s: load decisions reused from an earlier load: %s", self.name, decided)
        elif self._measure_in_background and self.config.precision in ("auto", "f32"):
            self._background = (key, feeds)
            log.info(
                "model %s: serving at once on %s; measuring the runtimes and batch sizes after", self.name, self.choice
            )
            # batches of one: whether outputs follow the batch is measured too; the background's switch warms
            # every instance that will serve
            decided = LoadDecisions(self.choice.runtime, self.choice.precision, "", 1, True)
        else:
            decided, self._instances = measure(self._job(), self._instances, self.task, self._stop)
            self.backend = self._instances[0]
            self._apply(decided, self._instances, feeds)
            remember(key, decided)  # once it has worked
            return
        # serving at once: only a solo instance (a lone request's) is warmed before READY, the others by `_settle`
        solo = [i for i in self._instances if i.solo]
        self._apply(decided, self._instances, feeds, solo or None)
        if solo:
            self._cold = ([i for i in self._instances if not i.solo], feeds)
            self._warm_done.clear()

    def wait_warm(self, timeout: float | None = None) -> bool:
        """Whether the warm-up of the instances a load left cold is over, waiting `timeout` seconds at most for it
        (None: as long as it takes; a reload swaps versions then: the old one serves meanwhile)."""
        return self._warm_done.wait(timeout)

    def _warm_up_feeds(self) -> dict[int, dict[str, np.ndarray]] | None:
        """Zeros shaped like each batch the batcher may form, by rows; None when the input shapes are not fixed."""
        rows_of = self._input_rows()
        if rows_of is None:
            log.info("model %s: input shapes are not fixed; no warm-up", self.name)
            return None
        return {rows: zeros(rows_of, rows) for rows in range(1, self.max_batch_size + 1)}

    def _input_rows(self) -> dict[str, tuple[tuple[int, ...], np.dtype]] | None:
        """Each input's row shape (without the batch dimension) and dtype; None when the shapes are not fixed."""
        if self.task is not None:
            spec = self.task.input
            return {spec.name: (spec.tensor_shape(spec.size), np.dtype(spec.dtype))}
        inputs = self._instances[0].inputs
        if any(d < 0 for s in inputs for d in s.shape[1:]) or any(s.datatype == "BYTES" for s in inputs):
            return None
        return {s.name: (s.shape[1:], np.dtype(OIP_TO_NUMPY[s.datatype])) for s in inputs}

    @property
    def settling(self) -> bool:
        """Loading, or warming up or measuring after READY: its runs are under way or to come."""
        measuring = self._background is not None or self._cold is not None
        measuring = measuring or (self._measuring is not None and self._measuring.is_alive())
        return self.state is ModelState.LOADING or measuring

    def release_memory(self) -> None:
        """At rest, when no model is `settling`: the runtimes give back the scratch memory their runs keep for reuse
        (activations, sized by the largest batch run: hundreds of MB for a detector batching 8 images of 640), to
        allocate again at the next run."""
        if self.state is not ModelState.READY:
            return  # nothing to give back
        rows_of = self._input_rows()
        one_row = None if rows_of is None else zeros(rows_of, 1)
        for backend in {id(instance): instance for instance in self._instances}.values():  # OpenVINO's: one, shared
            backend.release_memory(one_row)

    def _apply(
        self,
        decided: LoadDecisions,
        instances: list[Backend],
        feeds: dict[int, dict[str, np.ndarray]],
        warmed: list[Backend] | None = None,
        serving: bool = False,
    ) -> bool:
        """Warm `instances` (or only those `warmed`) up for `decided` (the smallest and the chosen batch; at a lower
        priority while the model is `serving`), then serve with them; False if the handle was closed meanwhile."""
        if self.max_batch_size > 1 and not decided.rows_follow_batch:
            log.warning(
                "model %s: its outputs do not have one row per input row (their first dimension is not the "
                "batch), so requests are never batched together",
                self.name,
            )
            self._batchable, self.max_batch_size, self.preferred_batch_size = False, 1, 1
        preferred = self.preferred_batch_size
        if self.max_batch_size > 1 and self.config.batching.preferred_batch_size is None:
            preferred = min(decided.batch_size, self.max_batch_size)
        self._warm(instances if warmed is None else warmed, feeds, preferred, serving)
        with self._switching:
            if self.state in (ModelState.UNLOADED, ModelState.FAILED) or self._stop.is_set():
                return False  # closing (its warm-up may have stopped short) or closed: nothing to switch
            self.choice = Choice(decided.runtime, decided.precision)
            self.agreement = decided.agreement
            self._instances, self.backend, self.preferred_batch_size = instances, instances[0], preferred
            if self._batcher is not None:
                self._batcher.max_batch_size = preferred
        return True

    def _warm(
        self,
        instances: list[Backend],
        feeds: dict[int, dict[str, np.ndarray]],
        preferred: int,
        serving: bool = False,
    ) -> None:
        """Run a batch of one and of `preferred` rows on each of `instances` (the largest sizes the arenas; sizes in
        between cost no more later), side by side: a load waits for the slowest, not for all in turn. While the
        model is `serving`, each warming thread runs `WARM_NICENESS` below the server's priority so requests come
        first (on Linux; a single-thread session runs on its caller, a runtime's own threads keep their priority),
        and stops between runs once the handle closes."""
        if not instances:
            return

        def warm(instance: Backend) -> None:
            for rows in sorted({1, preferred}):
                if serving and self._stop.is_set():
                    return
                instance.run(feeds[rows])

        lower = _lower_this_threads_priority if serving else None  # once per thread: a thread may warm two
        with ThreadPoolExecutor(len(instances), f"{self.name}-warm-up", initializer=lower) as pool:
            list(pool.map(warm, instances))

    def _settle(self) -> None:
        """Just after READY, in a thread: warm the instances the load left cold (requests meanwhile run on them
        cold, or on the solo one), then measure if a first start asked to."""
        try:
            if self._cold is not None:
                (cold, feeds), self._cold = self._cold, None
                self._warm(cold, feeds, self.preferred_batch_size, serving=True)
        except Exception:  # a runtime's or ours: requests on those instances will say so
            log.exception("model %s version %s: warming up failed", self.name, self.version)
        finally:
            self._warm_done.set()
        self.measure_in_background()

    def measure_in_background(self) -> None:
        """After a first load that served at once: measure, keep the decisions and switch to what was found
        (requests keep flowing through the batcher meanwhile; the instances that lost are released). The next
        model's measuring waits for the switch too: the instances it creates and warms would slow its timings."""
        if self._background is None:
            return
        try:
            with one_at_a_time(self._stop):
                if self._measure_and_switch():
                    log.info(
                        "model %s version %s: measured in the background; now serving %s, precision %s, "
                        "batches of up to %d",
                        self.name,
                        self.version,
                        self.runtime,
                        self.precision,
                        self.preferred_batch_size,
                    )
        except MeasuringStopped:
            log.info("model %s version %s: measuring stopped: the model is unloading", self.name, self.version)
        except KakehashiError as exc:  # e.g. its file is gone (a poll removed it): said, not a fault of ours
            log.error(
                "model %s version %s: measuring in the background failed: %s; it serves on %s",
                self.name,
                self.version,
                exc.message,
                self.choice,
            )
        except Exception:  # ours, or a runtime's: the model keeps serving on what it started with
            log.exception("model %s version %s: measuring in the background failed", self.name, self.version)

    def _measure_and_switch(self) -> bool:
        """Measure in a child, switch to what it found and keep it; False if the handle closed meanwhile."""
        assert self._background is not None
        (key, feeds), self._background = self._background, None
        decided = measure_in_child(self._job(), self._stop)
        choice = Choice(decided.runtime, decided.precision)
        instances = self._instances
        if choice != self.choice:  # only the winner's runtime is loaded here
            instances = create_instances(self.path, choice, self._options())
        if not self._apply(decided, instances, feeds, serving=True):
            return False
        remember(key, decided)  # once it has worked
        del instances, feeds  # the warm-up batches too: what only measuring needed goes back to the system
        give_back_freed_memory()
        return True

    def _options(self) -> RuntimeOptions:
        return replace(self.config.runtime_options(self._threads), cache_folder=self._compiled)

    def _related_files(self) -> list[Path]:
        """Files besides the model whose change calls for measuring again: its INT8 copy, calibration images."""
        return [int8_file(self.path), *calibration_images(self.config)]

    def _serve_unchecked(self, why: str) -> None:
        """Without measuring: a precision other than f32 asked for by name serves unchecked (the log says so)."""
        if self.config.precision in ("auto", "f32"):
            return
        self.choice = choices(self.path, self.config.backend, self.config.precision)[0]
        log.warning("model %s: precision %s serves unchecked against f32 (%s)", self.name, self.choice.precision, why)
        self._instances = create_instances(self.path, self.choice, self._options())
        self.backend = self._instances[0]

    def _job(self) -> MeasureJob:
        rows_of = self._input_rows()
        assert rows_of is not None, "measured only with fixed input shapes"
        return MeasureJob(
            self.path,
            self.config,
            self._options(),
            self._limits.max_pixels,
            self.task is not None,
            rows_of,
            self.max_batch_size,
            self.preferred_batch_size,
            self.choice,
        )

    @property
    def runtime(self) -> str:
        """What runs the model: e.g. `onnxruntime CPUExecutionProvider` or `openvino CPU (latency)`."""
        if self.backend is None:
            return ""
        return f"{self.backend.platform.removesuffix('_onnx')} {self.backend.providers[0]}"

    @property
    def precision(self) -> str:
        """What the model computes in, how that agreed with f32 where it is not f32, and faster precisions refused:
        e.g. `f32`, or `int8 (agrees with f32: 12 answers, least box IoU 0.951, largest confidence change 0.031)`."""
        if self.backend is None:
            return ""
        return f"{self.choice.precision} ({self.agreement})" if self.agreement else self.choice.precision

    @property
    def kind(self) -> str:
        """`detect`, `classify`… (the task), `handler` (the model's own Python) or `tensor`."""
        if self.handler is not None:
            return "handler"
        return self.task.kind if self.task is not None else "tensor"

    @property
    def ready(self) -> bool:
        return self.state is ModelState.READY

    @property
    def queue_depth(self) -> int:
        return self._batcher.depth if self._batcher else 0

    def require_ready(self) -> Backend:
        if self.state is not ModelState.READY or self.backend is None:
            detail = f": {self.reason}" if self.reason else ""
            raise Unavailable(f"model '{self.name}' version {self.version} is not ready ({self.state.value}){detail}")
        return self.backend

    @property
    def _instances(self) -> list[Backend]:
        """The runtime instances serving (OpenVINO's are one object, listed once per instance)."""
        return self._instance_list

    @_instances.setter
    def _instances(self, instances: list[Backend]) -> None:
        self._instance_list = instances
        self._slots = run_slots(instances)

    @property
    def runs_at_once(self) -> int:
        """How many batches may run at once: the `concurrent_runs` of each instance (a solo one's too)."""
        return len(self._slots)

    def _run_on(self, slot: int, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run `feeds` on the batcher's `slot` (after a switch to instances that take fewer runs at once than the
        batcher has slots, slots share them)."""
        return self._slots[slot % len(self._slots)].run(feeds)

    def _record_batch(self, rows: int, seconds: float) -> None:
        self.last_inference_ms = int(time.time() * 1000)
        self.series.batch(rows, seconds)

    def deadline(self, timeout_ms: float | None) -> float | None:
        """The `time.perf_counter()` by which a request must be answered (the tightest of client, model, server)."""
        limits = [t for t in (timeout_ms, self._fixed_timeout_ms) if t]
        return time.perf_counter() + min(limits) / 1000 if limits else None

    async def _submit(self, feeds: dict[str, np.ndarray], rows: int, deadline: float | None) -> BatchResult:
        """Run `feeds` through the batcher; a runtime failure on input that passed every check is ours (500)."""
        self.require_ready()
        assert self._batcher is not None, "a READY version has its batcher"
        try:
            result = await self._batcher.submit(feeds, rows, deadline, alone=self._admitted == rows)
        except KakehashiError:
            raise
        except Exception as exc:
            log.error("model %s version %s failed to run a request", self.name, self.version, exc_info=exc)
            raise InferenceFailed(
                f"model '{self.name}' version {self.version} failed to run this request: {runtime_message(exc)}"
            ) from None
        self.series.queue.observe(result.queue)
        return result

    # -- raw tensors (OIP v2) ----------------------------------------------------------------------

    def _check_feeds(self, feeds: dict[str, np.ndarray]) -> int:
        """Check names, datatypes and shapes of request tensors against the model's inputs; the rows (batch size)
        the request counts for (1 for a model whose graph does not batch)."""
        backend = self.require_ready()
        expected = {spec.name: spec for spec in backend.inputs}
        unknown = sorted(set(feeds) - set(expected))
        if unknown:
            raise InvalidInput(f"unknown input {unknown[0]!r}; model '{self.name}' takes {sorted(expected)}")
        missing = sorted(set(expected) - set(feeds))
        if missing:
            raise InvalidInput(f"missing input {missing[0]!r}; model '{self.name}' takes {sorted(expected)}")
        for name, array in feeds.items():
            if array.size > self._limits.max_tensor_elements:
                raise PayloadTooLarge(
                    f"input '{name}' has {array.size} elements; the limit is {self._limits.max_tensor_elements}"
                )
            _check_tensor(expected[name], oip_datatype(array.dtype), array.shape)
        if not self._batchable:
            return 1
        rows = {array.shape[0] for array in feeds.values()}
        if len(rows) > 1:
            raise InvalidInput(f"inputs of model '{self.name}' must share the batch (first) dimension")
        count = rows.pop()
        if count > self.max_batch_size:
            raise InvalidInput(
                f"the request has {count} rows (batch dimension); model '{self.name}' takes at most "
                f"{self.max_batch_size} per request (its max_batch_size): split it"
            )
        return count

    async def infer(self, feeds: dict[str, np.ndarray], timeout_ms: float | None = None) -> dict[str, np.ndarray]:
        """Check raw tensors against the model's inputs, run them through the batcher; every output by name."""
        rows = self._check_feeds(feeds)
        deadline = self.deadline(timeout_ms)
        with self._admission(rows, deadline):
            return (await self._submit(feeds, rows, deadline)).outputs

    # -- images -------------------------------------------------------------------------------------

    async def predict(
        self, images: Sequence[ImageData], params: PredictParams, timeout_ms: float | None = None
    ) -> list[ImagePrediction]:
        """Decode, pre-process, infer and post-process `images`; pre/post run in the compute pool (but for what costs
        less than the hop there: `_prepare`, a classifier's post-processing)."""
        self.require_ready()
        steps = self._image_steps(params)
        if steps is None:
            raise InvalidInput(f"model '{self.name}' serves raw tensors only; use POST /v2/models/{self.name}/infer")
        if len(images) > self._limits.max_images:
            raise PayloadTooLarge(f"{len(images)} images in one request; the limit is {self._limits.max_images}")
        deadline = self.deadline(timeout_ms)
        numbered = len(images) > 1
        with self._admission(len(images), deadline):
            if len(images) == 1:  # no siblings to cancel: no task group (and no task) to make
                return [await self._predict_one(steps, 0, images[0], deadline, numbered)]
            try:
                # the first failure cancels its siblings, and admission is held until every one of them is gone
                async with asyncio.TaskGroup() as group:
                    answers = [
                        group.create_task(self._predict_one(steps, index, data, deadline, numbered))
                        for index, data in enumerate(images)
                    ]
            except BaseExceptionGroup as failed:
                raise failed.exceptions[0] from None
        return [answer.result() for answer in answers]

    def _image_steps(self, params: PredictParams) -> ImageSteps | None:
        """How one image becomes feeds and outputs become results: the model's handler, or its task."""
        if self.handler is not None:
            return HandlerSteps(self.handler, params, self._limits.max_pixels)
        if self.task is not None:
            return TaskSteps(self.task, params, self._limits.max_pixels)
        return None

    async def _predict_hook(
        self, steps: HandlerSteps, feeds: dict[str, np.ndarray], image: Image.Image, deadline: float | None
    ) -> dict[str, np.ndarray]:
        """The handler's `predict` hook on one image's row, in the handler's pool, with a `Runtime` for this model
        (one row through the batcher) and for other served models."""

        async def run(row: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            batch = {name: np.asarray(value)[None] for name, value in row.items()}
            self._check_handler_feeds(batch)
            result = await self._submit(batch, 1, deadline)
            return {name: _decodable(value[0]) for name, value in result.outputs.items()}

        async def ask(model: str, picture: Image.Image, params: PredictParams | None) -> list[dict]:
            if self._lookup is None:
                raise InferenceFailed("this model's handler has no other models to call")
            other = self._lookup(model, None)
            defaults = other.config.defaults
            chosen = params or PredictParams(defaults.conf, defaults.iou, defaults.max_det, top_k=defaults.top_k)
            left = None if deadline is None else max(1.0, (deadline - time.perf_counter()) * 1000)
            with other.serving():
                [prediction] = await other.predict([picture], chosen, left)
            return prediction.results

        assert self._hook_pool is not None
        runtime = Runtime(asyncio.get_running_loop(), run, ask)
        row = {name: value[0] for name, value in feeds.items()}
        hook = steps.handler.predict  # type: ignore[attr-defined]
        return await asyncio.get_running_loop().run_in_executor(
            self._hook_pool, call_hook, "predict", hook, row, image, steps.params, runtime
        )

    def _check_handler_feeds(self, feeds: dict[str, np.ndarray]) -> None:
        """The feeds a handler's `preprocess` made must fit the model, one row: else the fault is the handler's."""
        try:
            rows = self._check_feeds(feeds)
        except InvalidInput as exc:
            log.error("model %s: the handler's preprocess gave feeds the model cannot take: %s", self.name, exc.message)
            raise InferenceFailed(f"the model's handler made inputs the model cannot take: {exc.message}") from None
        if rows != 1:
            raise InferenceFailed(f"the model's handler made {rows} rows for one image; preprocess makes one row")

    async def _predict_one(
        self, steps: ImageSteps, index: int, data: ImageData, deadline: float | None, numbered: bool
    ) -> ImagePrediction:
        try:
            (feeds, shape, state), pre = await self._prepare(steps, data)
        except KakehashiError as exc:
            if numbered:
                exc.message = f"image {index}: {exc.message}"
            raise
        if steps.checked:
            self._check_handler_feeds(feeds)
        self.series.preprocess.observe(pre)
        if self._hook_pool is not None and isinstance(steps, HandlerSteps):
            started = time.perf_counter()
            outputs = await self._predict_hook(steps, feeds, state, deadline)
            queue, inference = 0.0, time.perf_counter() - started
        else:
            result = await self._submit(feeds, 1, deadline)
            outputs = {name: _decodable(value[0]) for name, value in result.outputs.items()}
            queue, inference = result.queue, result.inference
        # a classifier's post-processing (a top-k over its classes) that usually takes less than a hop runs here
        if self._post_on_loop and self._postprocess_cpu < HOP_SECONDS:
            found, post, cpu = _timed(steps.finish, outputs, state)  # cheaper than the hop to the pool and back
        else:
            found, post, cpu = await self._in_pool(steps.finish, outputs, state)
        self._postprocess_cpu += EWMA_WEIGHT * (cpu - self._postprocess_cpu)
        self.series.postprocess.observe(post)
        speed = {"preprocess": _ms(pre), "queue": _ms(queue), "inference": _ms(inference), "postprocess": _ms(post)}
        return ImagePrediction(shape, found, speed)

    async def _prepare(self, steps: ImageSteps, data: ImageData) -> tuple[tuple[Feeds, tuple[int, int], Any], float]:
        """`steps.prepare(data)` and how long it took: in the compute pool, or, for a task's small JPEG file of one
        scan (`is_small_jpeg_file`: reading it costs a few milliseconds at worst), its header read here on the loop
        and, when it holds a small image (`_small_pixels`), the image prepared here too. Such files are taken here
        while what they cost the loop (in CPU time, failures too) is under a hop to the pool and back (`loop_cost`), and
        one in every `REPROBE_EVERY` while it is not, to measure again."""
        if not (
            isinstance(steps, TaskSteps)
            and isinstance(data, bytes)
            and (small := _small_pixels(steps))
            and self._takes_here(data)
        ):
            prepared, seconds, _ = await self._in_pool(steps.prepare, data)
            return prepared, seconds
        started, cpu, whole = time.perf_counter(), time.thread_time(), False
        try:
            opened = open_image(data)
            if opened.pixels <= small:
                result = steps.prepare(opened)
                whole = True
                return result, time.perf_counter() - started
        finally:
            self._small_file_cpu = loop_cost(self._small_file_cpu, time.thread_time() - cpu, whole)
        opening = time.perf_counter() - started
        prepared, seconds, _ = await self._in_pool(steps.prepare, opened)
        return prepared, opening + seconds

    def _takes_here(self, data: bytes) -> bool:
        """Whether `_prepare` opens `data` on the loop (counting the small JPEG files, for the `REPROBE_EVERY`th)."""
        if not is_small_jpeg_file(data):
            return False
        self._small_files += 1
        cost = self._small_file_cpu
        return cost is None or cost < HOP_SECONDS or self._small_files % REPROBE_EVERY == 0

    async def _in_pool(self, function: Callable[..., T], *args: object) -> tuple[T, float, float]:
        """`function(*args)`, its duration and CPU time (`_timed`), in the compute pool. If the caller is cancelled,
        work not yet started is dropped and work already running is waited for, so what a request holds is gone when
        it ends."""
        future = self._compute.submit(_timed, function, *args)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            if not future.cancel():
                await asyncio.wait({asyncio.wrap_future(future)})
            raise


def _lower_this_threads_priority() -> None:
    """Run the calling thread `WARM_NICENESS` below its current priority (Linux sets niceness per thread; elsewhere
    the call would name a process: left alone)."""
    if not sys.platform.startswith("linux"):
        return
    thread = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, thread, min(19, os.getpriority(os.PRIO_PROCESS, thread) + WARM_NICENESS))
    except OSError as exc:  # e.g. a sandbox refusing it: the warm-up runs at the server's priority
        log.debug("the warm-up's priority stays the server's: %s", exc)


def loop_cost(average: float | None, cost: float, whole: bool) -> float:
    """The moving average of what small files cost the loop, after one that cost `cost` (CPU seconds; `whole`: its
    image was prepared there, not only its header read, or failed): the first sets it, and so does a whole one cheaper
    than the hop while the average is not (it would otherwise come down one measure in `REPROBE_EVERY` at a time,
    from a first file that may have cost 10x more, cold); one dear enough sends the next files to the pool again."""
    if average is None or (whole and cost < HOP_SECONDS <= average):
        return cost
    return average + EWMA_WEIGHT * (cost - average)


def _small_pixels(steps: TaskSteps) -> int:
    """The most pixels of an image small enough to be prepared on the loop for `steps`: `SMALL_IMAGE_FACTOR` times
    the input's (what preparing it costs is then bounded by the model's input); 0 (none) for a request at another
    input size than the model's."""
    if steps.params.imgsz is not None:
        return 0
    height, width = steps.task.input.size
    return SMALL_IMAGE_FACTOR * height * width


def _decodable(output: np.ndarray) -> np.ndarray:
    """An output as the tasks decode it: FP16 (a half-precision model's) widened to FP32, whose range holds box
    areas and whose precision holds IoUs."""
    return output.astype(np.float32) if output.dtype == np.float16 else output


def _timed(function: Callable[..., T], *args: object) -> tuple[T, float, float]:
    """`function(*args)`, its duration and the CPU time it took in this thread."""
    started, cpu = time.perf_counter(), time.thread_time()
    value = function(*args)
    return value, time.perf_counter() - started, time.thread_time() - cpu


def _check_tensor(spec: TensorSpec, datatype: str, shape: tuple[int, ...]) -> None:
    if datatype != spec.datatype:
        raise InvalidInput(f"input '{spec.name}' has datatype {datatype}; the model expects {spec.datatype}")
    if len(shape) != len(spec.shape) or any(e not in (-1, s) for e, s in zip(spec.shape, shape)):
        raise InvalidInput(
            f"input '{spec.name}' has shape {list(shape)}; the model expects {list(spec.shape)} (-1 = any size)"
        )
    if 0 in shape:
        raise InvalidInput(f"input '{spec.name}' has shape {list(shape)}: a dimension of size 0 leaves nothing to run")

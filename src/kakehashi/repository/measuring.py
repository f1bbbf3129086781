"""Measuring what serves a model fastest on this machine: the runtime and precision whose answers agree with f32's,
and the batch size with the best throughput.

A load that measures before it serves does so in its own process, with the instances it loaded as the reference. A
first start that serves at once measures in a child process (`measure_in_child`): the runtimes, precisions and
batch sizes it tries (their libraries, compiled candidates, scratch memory: hundreds of MB that a process does not
give back) stay out of the server, which then loads only what won; and a runtime that crashes on a candidate takes
the child down, not the server. The child exits when its parent does (its standard input closes), even after
`kill -9`. It runs at a lower priority (`CHILD_NICENESS`): requests served meanwhile come first, the first one
especially, which a first start answers while its child is still importing the runtimes.

Runtimes, precisions and batch sizes are timed beside one more thread of work (`beside_other_work`), as a server
busy with requests decodes and resizes images, parses and answers while its inferences run: a runtime spreading each
inference over all the cores waits at every parallel section for a thread the other work preempted, while
single-thread sessions each go on at their own pace. Timed alone, YOLO11n's OpenVINO f32 and ONNX Runtime (two
single-thread sessions) came within 10% of each other on 2 cores and `auto` chose either; beside one thread of other
work OpenVINO f32 took 1.13-1.5x as long, as its server's rate at 16 requests at once (0.78x of the ONNX Runtime
server's) and the in-process loops with their image preparation (0.72x) had found; bf16 kept its lead (1.35x,
against 1.33x in those loops). One full thread is a stand-in: a server's other work grows with its request rate and
its images' size, and weighs less on more cores.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import select
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from itertools import cycle
from pathlib import Path

import numpy as np

from kakehashi.backends import (
    Choice,
    MeasuringStopped,
    check_stop,
    choices,
    create_instances,
    fastest_agreeing,
    occupied_seconds,
)
from kakehashi.backends.base import Backend
from kakehashi.backends.registry import RuntimeOptions
from kakehashi.errors import ModelLoadError, runtime_message
from kakehashi.repository.config import ModelConfig
from kakehashi.repository.decisions import LoadDecisions
from kakehashi.repository.precision_guard import PrecisionGuard, shipped_calibration_folder
from kakehashi.tasks.images import decode_image, image_files
from kakehashi.tasks.resolve import ImageTask, resolve_task

log = logging.getLogger(__name__)
BATCH_GAIN = 1.1  # the rows per second a larger batch size must reach, against the size chosen so far
OTHER_WORK_SIZE = (640, 640)  # what `beside_other_work` resizes each image to: a detector's usual input
CHILD_NICENESS = 10  # the measuring child's scheduling priority below the server's (0 = the same; 19 = the lowest)
Rows = dict[str, tuple[tuple[int, ...], np.dtype]]  # each input's row shape (without the batch dimension), dtype
# one model measures at a time: timings taken side by side would disturb each other (a server starting with several
# models would choose from noise); a server's switch after measuring holds it too (`one_at_a_time`)
_ONE_AT_A_TIME = threading.Lock()


@dataclass(frozen=True)
class MeasureJob:
    """What measuring one model needs, as plain values (a child process receives it pickled)."""

    path: Path
    config: ModelConfig
    options: RuntimeOptions  # the serving instances' (threads, the folder for compiled models)
    max_pixels: int
    image_task: bool  # answers are compared as the model's task decodes them (else: its raw outputs)
    rows_of: Rows
    max_batch_size: int
    preferred_batch_size: int
    reference: Choice  # what serves now: f32, the precision the others must agree with


@contextmanager
def one_at_a_time(stop: threading.Event | None) -> Iterator[None]:
    """Hold the measuring lock (waiting for it stops when `stop` is set).
    A server holds it from measuring through its switch: the instances it creates and warms would slow the next
    model's timings, and a parallel runtime's more than a runtime stealing work between its threads."""
    while not _ONE_AT_A_TIME.acquire(timeout=0.2):
        check_stop(stop)
    try:
        yield
    finally:
        _ONE_AT_A_TIME.release()


@contextmanager
def beside_other_work() -> Iterator[None]:
    """Run the body while a thread decodes the shipped calibration images in turn, resizes each to
    `OTHER_WORK_SIZE` and converts it to floats: the other work a server busy with requests does beside its
    inferences, so that runtimes, precisions and batch sizes are timed as they will serve. Without images to decode
    (or when decoding fails) the timings run alone, and the log says so."""
    folder = shipped_calibration_folder()
    pictures = [path.read_bytes() for path in image_files([folder]) if path.is_file()]
    done = threading.Event()

    def work() -> None:
        try:
            for data in cycle(pictures):
                if done.is_set():
                    return
                np.asarray(decode_image(data).resize(OTHER_WORK_SIZE), np.float32)
        except Exception:
            log.exception("decoding images beside the timings failed: the rest is timed with nothing beside it")

    if not pictures:
        log.warning("no images in %s to decode beside the timings: timed with nothing beside them", folder)
        yield
        return
    thread = threading.Thread(target=work, name="measuring-other-work", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def zeros(rows_of: Rows, rows: int) -> dict[str, np.ndarray]:
    """Zero inputs of `rows` rows."""
    return {name: np.zeros((rows, *shape), dtype) for name, (shape, dtype) in rows_of.items()}


def measure(
    job: MeasureJob, reference: list[Backend], task: ImageTask | None, stop: threading.Event | None = None
) -> tuple[LoadDecisions, list[Backend]]:
    """Whether outputs follow the batch (have one row per input row), the fastest runtime and precision whose
    answers agree with those of `reference` (instances of `job.reference`), then the batch size with the best
    throughput. Returns the decisions and the instances to serve them with (`reference`, when it won). Raises
    `ModelLoadError` when no precision asked for agrees, `MeasuringStopped` when `stop` is set. Other models'
    measuring in this process finishes first."""
    with one_at_a_time(stop):
        return _measure(job, reference, task, stop)


def _measure(
    job: MeasureJob, reference: list[Backend], task: ImageTask | None, stop: threading.Event | None
) -> tuple[LoadDecisions, list[Backend]]:
    choice, instances, agreement = job.reference, reference, ""
    feeds = {rows: zeros(job.rows_of, rows) for rows in range(1, job.max_batch_size + 1)}
    follows = job.max_batch_size == 1 or rows_follow_the_batch(reference[0], feeds)
    candidates = choices(job.path, job.config.backend, job.config.precision)
    if candidates != [choice]:
        guard = PrecisionGuard(reference[0], task, job.config, job.max_pixels)
        choice, instances, agreement = fastest_agreeing(
            job.path, job.options, (choice, reference), candidates, feeds[1], guard.check, stop, beside_other_work
        )
    batch_size = job.preferred_batch_size
    if follows and job.max_batch_size > 1 and job.config.batching.preferred_batch_size is None:
        # timed on scratch instances laid out as the serving ones (their run slots busy as a full queue keeps them),
        # so the serving sessions' memory arenas only grow to the chosen size
        scratch = create_instances(job.path, choice, job.options)
        with beside_other_work():
            batch_size = fastest_batch_size(scratch, feeds, stop=stop)
        del scratch
    return LoadDecisions(choice.runtime, choice.precision, agreement, batch_size, follows), instances


def rows_follow_the_batch(backend: Backend, feeds: dict[int, dict[str, np.ndarray]]) -> bool:
    """True if batches of 1 and 2 rows give outputs of 1 and 2 rows: otherwise rows of requests batched together
    could not be told apart in the outputs (e.g. a count of detections, a reshape)."""
    for rows in (1, 2):
        outputs = backend.run(feeds[rows])
        if any(value.ndim == 0 or value.shape[0] != rows for value in outputs.values()):
            return False
    return True


def fastest_batch_size(
    instances: list[Backend],
    feeds: dict[int, dict[str, np.ndarray]],
    runs: int = 3,
    stop: threading.Event | None = None,
) -> int:
    """The batch size to prefer: the smallest one unless a larger one runs at least 10% more rows per second than
    the size chosen so far (a batch costs memory, its activations grow with it, and its requests' latency; on CPUs
    larger batches often gain a few per cent, within the timing's noise). Each size is timed with every run slot of
    `instances` busy, as a full queue serves it: one batch alone may run faster large (its parallel sections keep
    the cores busy) while two runs at once do better small (YOLO11n and YOLO26n on 2 cores: 1 row gave the most
    rows per second with both runs going, 4 or 8 alone); it takes about as many times longer to time, and as many
    batches' activations at once, as there are run slots. Sizes are timed at the powers of two and the largest,
    smallest first, and timing stops once two sizes in a row gain under 3% on the best so far: throughput changes
    slowly with the size on CPUs, the large batches cost the most to time, and one size timed while the machine
    was busy (streams starting, other models measuring) must not end the search."""
    largest = max(feeds)
    sizes = sorted({1 << power for power in range(largest.bit_length()) if 1 << power < largest} | {largest})
    throughput: dict[int, float] = {}
    misses = 0
    for rows in sizes:
        check_stop(stop)
        best = occupied_seconds(instances, feeds[rows], runs)
        gains = not throughput or rows / best >= 1.03 * max(throughput.values())
        throughput[rows] = rows / best
        misses = 0 if gains else misses + 1
        if misses == 2:
            break
    chosen = sizes[0]
    for rows in sorted(throughput):
        if throughput[rows] >= BATCH_GAIN * throughput[chosen]:
            chosen = rows
    log.info(
        "batch size throughput (rows/s): %s; batching up to %d",
        {rows: round(value, 1) for rows, value in throughput.items()},
        chosen,
    )
    return chosen


def measure_in_child(job: MeasureJob, stop: threading.Event | None = None) -> LoadDecisions:
    """`measure(job)` in a child process, from a fresh instance of `job.reference`; its log lines go where this
    process's go. Raises `ModelLoadError` when no precision agrees, `MeasuringStopped` (the child killed) when
    `stop` is set, `RuntimeError` when the child fails or dies. The caller holds `one_at_a_time` (through its
    switch to what was found)."""
    root = logging.getLogger()
    formats = [h.formatter._fmt for h in root.handlers if h.formatter is not None and h.formatter._fmt]
    payload = pickle.dumps((job, root.getEffectiveLevel(), formats[0] if formats else None))
    package_root = str(Path(__file__).resolve().parents[2])  # the folder holding `kakehashi`, wherever it runs from
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-c", f"import os; os.nice({CHILD_NICENESS}); from {__name__} import _main; _main()"]
    with subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env) as child:
        assert child.stdin is not None and child.stdout is not None
        try:
            child.stdin.write(len(payload).to_bytes(8, "big") + payload)
            child.stdin.flush()  # left open: the child ends when it closes
            while not select.select([child.stdout], [], [], 0.2)[0]:
                check_stop(stop)
            answer = child.stdout.read()
        except MeasuringStopped:
            child.kill()
            raise
        child.wait()
    if not answer:
        raise RuntimeError(f"the measuring process ended without an answer (exit status {child.returncode})")
    found = json.loads(answer)
    if "refused" in found:
        raise ModelLoadError(found["refused"])
    if "failed" in found:
        raise RuntimeError(f"measuring failed: {found['failed']}")
    return LoadDecisions(**found["decisions"])


def _exit_with_parent() -> None:
    """End this process once the parent closes its end of standard input (it stopped measuring, or died)."""
    sys.stdin.buffer.read()
    os._exit(3)


def _main() -> None:
    """The child: read a job, measure, write the decisions as JSON to standard output, exit."""
    answer_to = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # whatever the runtimes print goes to the log, not into the answer
    length = int.from_bytes(sys.stdin.buffer.read(8), "big")
    job, level, form = pickle.loads(sys.stdin.buffer.read(length))
    logging.basicConfig(level=level, **({"format": form} if form else {}))
    threading.Thread(target=_exit_with_parent, daemon=True).start()
    try:
        reference = create_instances(job.path, job.reference, job.options)
        task = resolve_task(reference[0], job.config, job.path) if job.image_task else None
        decided, _ = measure(job, reference, task)
        answer: dict[str, object] = {"decisions": asdict(decided)}
    except ModelLoadError as exc:
        answer = {"refused": exc.message}
    except Exception as exc:
        log.exception("%s: measuring failed", job.path)
        answer = {"failed": runtime_message(exc)}
    answer_to.write(json.dumps(answer).encode())
    answer_to.close()
    os._exit(0)  # no waiting for the runtimes' threads to wind down

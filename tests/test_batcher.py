"""The dynamic batcher on its own: batch closing, FIFO prefixes, shapes, limits, deadlines, cancellation."""

from __future__ import annotations

import asyncio
import functools
import gc
import threading
import time
import weakref

import numpy as np
import pytest

from kakehashi.batching.batcher import DynamicBatcher
from kakehashi.errors import DeadlineExceeded, Overloaded


class Recorder:
    """A run function that records every batch (rows' values) and can hold the instance busy."""

    def __init__(self) -> None:
        self.batches: list[list[float]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()  # set when a batch reaches the model (before it waits at the gate)
        self.fail = False
        self.poison: float | None = None  # a row with this value makes its whole batch fail

    def __call__(self, instance: int, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.entered.set()
        self.gate.wait(10)
        x = feeds["x"]
        self.batches.append(x[:, 0].tolist())
        if self.fail or self.poison in x[:, 0]:
            raise RuntimeError("the runtime broke")
        return {"y": x * 2}


def row(value: float, width: int = 2) -> dict[str, np.ndarray]:
    return {"x": np.full((1, width), value, np.float32)}


def batcher(run, *, max_batch=4, delay_ms=0.0, queue=64, instances=1) -> DynamicBatcher:
    return DynamicBatcher(run, instances, max_batch, delay_ms, queue, "test")


async def until(condition, what: str, timeout: float = 10) -> None:
    """Wait (yielding to the loop) until `condition()` holds; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        await asyncio.sleep(0.001)


async def _busy_then(recorder: Recorder, b: DynamicBatcher, submits: list) -> list:
    """Hold the instance with a first request, queue `submits`, then release; returns all results."""
    recorder.gate.clear()
    recorder.entered.clear()
    first = asyncio.ensure_future(b.submit(row(0), 1))
    await until(recorder.entered.is_set, "the first request holds the instance")
    rest = [asyncio.ensure_future(b.submit(feeds, rows)) for feeds, rows in submits]
    await until(lambda: b.depth + sum(f.done() for f in rest) == len(rest), "every request queued or refused")
    recorder.gate.set()
    return await asyncio.gather(first, *rest, return_exceptions=True)


def test_batches_close_at_max_size_in_fifo_order():
    recorder = Recorder()

    async def scenario():
        b = batcher(recorder, max_batch=4)
        results = await _busy_then(recorder, b, [(row(i), 1) for i in range(1, 7)])
        await b.close()
        return results

    results = asyncio.run(scenario())
    assert recorder.batches == [[0], [1, 2, 3, 4], [5, 6]]
    assert [r.outputs["y"][0, 0] for r in results] == [0, 2, 4, 6, 8, 10, 12]
    assert [r.batch_size for r in results] == [1, 4, 4, 4, 4, 2, 2]


def test_different_shapes_never_share_a_batch_and_nothing_overtakes():
    recorder = Recorder()

    async def scenario():
        b = batcher(recorder, max_batch=8)
        await _busy_then(recorder, b, [(row(1), 1), (row(2), 1), (row(3, width=3), 1), (row(4), 1)])
        await b.close()

    asyncio.run(scenario())
    # 4 has the same shape as 1 and 2 but arrived after 3: it must not jump ahead of 3
    assert recorder.batches == [[0], [1, 2], [3], [4]]


def test_multi_row_requests_fill_batches_by_rows():
    recorder = Recorder()

    async def scenario():
        b = batcher(recorder, max_batch=4)
        two = {"x": np.full((2, 2), 1, np.float32)}
        three = {"x": np.full((3, 2), 2, np.float32)}
        results = await _busy_then(recorder, b, [(two, 2), (three, 3), (row(3), 1)])
        await b.close()
        return results

    results = asyncio.run(scenario())
    assert recorder.batches == [[0], [1, 1], [2, 2, 2, 3]]
    assert results[2].outputs["y"].shape == (3, 2) and results[2].outputs["y"][0, 0] == 4


def test_idle_instance_waits_up_to_the_delay_for_company():
    recorder = Recorder()

    async def scenario():
        b = batcher(recorder, max_batch=8, delay_ms=300)
        first = asyncio.ensure_future(b.submit(row(1), 1))
        await until(lambda: b.depth == 1, "the first request queued")  # and waiting there for company
        second = asyncio.ensure_future(b.submit(row(2), 1))
        results = await asyncio.gather(first, second)
        await b.close()
        return results

    results = asyncio.run(scenario())
    assert recorder.batches == [[1, 2]]
    assert results[0].queue > results[1].queue  # the first waited for the second


def test_full_queue_is_refused_at_once():
    recorder = Recorder()

    async def scenario():
        b = batcher(recorder, max_batch=1, queue=2)
        results = await _busy_then(recorder, b, [(row(i), 1) for i in range(1, 5)])
        await b.close()
        return results

    results = asyncio.run(scenario())
    refused = [r for r in results if isinstance(r, Overloaded)]
    assert len(refused) == 2 and all(r.retry_after >= 1 for r in refused)
    assert recorder.batches == [[0], [1], [2]]


@pytest.mark.parametrize("leaves_by", ["deadline", "cancel"])
def test_requests_that_leave_the_queue_never_reach_the_model(leaves_by):
    recorder = Recorder()

    async def scenario():
        b = batcher(recorder, max_batch=1)
        recorder.gate.clear()
        first = asyncio.ensure_future(b.submit(row(0), 1))
        await until(recorder.entered.is_set, "the first request holds the instance")
        deadline = time.perf_counter() + 0.05 if leaves_by == "deadline" else None
        leaver = asyncio.ensure_future(b.submit(row(1), 1, deadline=deadline))
        kept = asyncio.ensure_future(b.submit(row(2), 1))
        await until(lambda: b.depth == 2 or leaver.done(), "both queued behind it")
        if leaves_by == "deadline":
            with pytest.raises(DeadlineExceeded):
                await leaver  # answered at its deadline, while the instance is still busy
        else:
            leaver.cancel()
        await until(lambda: b.depth == 1, "the leaver gone from the queue")  # only `kept` waits
        recorder.gate.set()
        await asyncio.gather(first, kept)
        await b.close()

    asyncio.run(scenario())
    assert recorder.batches == [[0], [2]]


def test_a_failing_batch_fails_its_requests_and_the_batcher_goes_on():
    recorder = Recorder()

    async def scenario():
        b = batcher(recorder, max_batch=1)
        recorder.fail = True
        with pytest.raises(RuntimeError, match="broke"):
            await b.submit(row(1), 1)
        recorder.fail = False
        result = await b.submit(row(2), 1)
        await b.close()
        return result

    assert asyncio.run(scenario()).outputs["y"][0, 0] == 4


def test_a_request_that_breaks_its_batch_fails_alone_and_the_others_are_answered():
    recorder = Recorder()
    recorder.poison = 13

    async def scenario():
        b = batcher(recorder, max_batch=4)
        results = await _busy_then(recorder, b, [(row(1), 1), (row(13), 1), (row(3), 1)])
        await b.close()
        return results

    first, one, poisoned, three = asyncio.run(scenario())
    assert recorder.batches == [[0], [1, 13, 3], [1], [13], [3]]  # the batch, then each request alone
    assert one.outputs["y"][0, 0] == 2 and three.outputs["y"][0, 0] == 6 and first.outputs["y"][0, 0] == 0
    assert isinstance(poisoned, RuntimeError)


def test_instances_run_in_parallel():
    started = []
    barrier = threading.Barrier(2, timeout=5)

    def run(instance, feeds):
        started.append(instance)
        barrier.wait()  # only returns if both instances are inside run() at once
        return {"y": feeds["x"]}

    async def scenario():
        b = batcher(run, max_batch=1, instances=2)
        await asyncio.gather(b.submit(row(1), 1), b.submit(row(2), 1))
        await b.close()

    asyncio.run(scenario())
    assert sorted(started) == [0, 1]


def test_a_queue_is_shared_between_idle_instances():
    recorder = Recorder()

    async def scenario():
        b = batcher(recorder, max_batch=8, instances=2)
        results = await asyncio.gather(*(b.submit(row(i), 1) for i in range(1, 7)))
        await b.close()
        return results

    results = asyncio.run(scenario())
    # six requests queued at once, two instances idle: three each, not six on one while the other waits
    assert sorted(recorder.batches) == [[1, 2, 3], [4, 5, 6]]
    assert [r.batch_size for r in results] == [3] * 6


def test_idle_instances_wait_for_company_together_then_share():
    recorder = Recorder()

    async def scenario():
        b = batcher(recorder, max_batch=8, delay_ms=300, instances=2)
        submitted = []
        for value in range(1, 5):  # one at a time, each queued before the next comes
            submitted.append(asyncio.ensure_future(b.submit(row(value), 1)))
            await until(lambda: b.depth == len(submitted), f"request {value} queued")
        results = await asyncio.gather(*submitted)
        await b.close()
        return results

    asyncio.run(scenario())
    # the first waited for company (not sent alone at once); once the delay passed, the four queued were shared by
    # the two idle instances: two each, none taking all four
    assert recorder.batches[0] == [1, 2] and max(len(batch) for batch in recorder.batches) == 2
    assert sorted(value for batch in recorder.batches for value in batch) == [1, 2, 3, 4]


def test_a_batch_whose_outputs_do_not_follow_its_rows_is_run_request_by_request():
    """An output with two rows per input row (a reshape; or a count of detections that happens to differ):
    split by input rows, each request would get others' values. The batch is re-run one request at a time and
    batching stops."""
    recorder = Recorder()

    def pairs(instance: int, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        recorder(instance, feeds)
        return {"y": feeds["x"].reshape(-1, 1).repeat(2, axis=0)}  # 2 * width rows per input row

    b = batcher(pairs)

    async def main() -> list:
        return await _busy_then(recorder, b, [(row(1), 1), (row(2), 1), (row(3), 1)])

    results = asyncio.run(main())
    for value, result in zip((0, 1, 2, 3), results, strict=True):
        assert result.outputs["y"].shape == (4, 1) and set(result.outputs["y"].ravel()) == {value}
    assert b.max_batch_size == 1 and [1.0, 2.0, 3.0] in recorder.batches  # the batch ran once, then each alone


class Threads:
    """A run function recording the thread each request ran on; `seconds` of work per run, `fail` to break it."""

    def __init__(self, seconds: float = 0.0) -> None:
        self.seconds = seconds
        self.fail = False
        self.threads: list[int] = []
        self.gate = threading.Event()  # cleared: a run of a 3-wide row waits at it
        self.gate.set()

    def __call__(self, instance: int, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.threads.append(threading.get_ident())
        if feeds["x"].shape[1] == 3:
            self.gate.wait(10)
        if self.seconds:
            time.sleep(self.seconds)
        if self.fail:
            raise RuntimeError("the runtime broke")
        return {"y": feeds["x"] * 2}


def test_cheap_lone_requests_run_on_the_loop_once_measured_and_only_with_nothing_queued():
    run = Threads()

    async def scenario() -> None:
        loop_thread = threading.get_ident()
        b = DynamicBatcher(run, 1, 4, 0.0, 64, "test", inline_below=0.01)
        submit = functools.partial(b.submit, alone=True)
        first = await submit(row(1), 1)  # not measured yet: in the instance's thread
        assert run.threads[-1] != loop_thread and first.outputs["y"][0, 0] == 2
        second = await submit(row(2), 1)
        assert run.threads[-1] == loop_thread and second.outputs["y"][0, 0] == 4 and second.queue == 0.0
        await submit(row(3, width=5), 1)  # other shapes: their cost is not known yet
        assert run.threads[-1] != loop_thread
        assert (await submit(row(4, width=5), 1)).outputs["y"].shape == (1, 5)
        assert run.threads[-1] == loop_thread
        # the instance busy (a request of new shapes holds it): a cheap request queues, and runs in its turn
        run.gate.clear()
        busy = asyncio.ensure_future(submit(row(5, width=3), 1))
        await until(lambda: len(run.threads) == 5, "the new shapes' request holds the instance")
        queued = asyncio.ensure_future(submit(row(6), 1))
        await until(lambda: b.depth == 1, "the cheap request queued")
        run.gate.set()
        assert (await queued).outputs["y"][0, 0] == 12 and (await busy).outputs["y"][0, 0] == 10
        assert run.threads[-1] != loop_thread
        run.fail = True  # a failure on the loop is the caller's, and the instance is not lost
        with pytest.raises(RuntimeError, match="broke"):
            await submit(row(8), 1)
        run.fail = False
        assert (await submit(row(9), 1)).outputs["y"][0, 0] == 18 and run.threads[-1] == loop_thread
        await b.submit(row(10), 1)  # with other requests of its caller in flight: to the instance, as ever
        assert run.threads[-1] != loop_thread
        await b.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("seconds, delay_ms", [(0.02, 0.0), (0.0, 5.0)], ids=["costly", "waits-for-company"])
def test_costly_requests_and_batchers_that_wait_for_company_never_run_on_the_loop(seconds, delay_ms):
    run = Threads(seconds)

    async def scenario() -> None:
        b = DynamicBatcher(run, 1, 4, delay_ms, 64, "test", inline_below=0.01)
        for value in range(4):
            await b.submit(row(value), 1, alone=True)
        await b.close()
        assert threading.get_ident() not in run.threads

    asyncio.run(scenario())


def test_after_runs_on_the_loop_both_instances_still_serve_and_a_late_request_never_runs():
    run = Threads()
    barrier = threading.Barrier(2, timeout=5)

    def parallel(instance: int, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if feeds["x"].shape[1] == 3:  # only returns if both instances are inside run() at once
            barrier.wait()
        return run(instance, feeds)

    async def scenario() -> None:
        loop_thread = threading.get_ident()
        b = DynamicBatcher(parallel, 2, 1, 0.0, 64, "test", inline_below=0.01)
        await b.submit(row(1), 1, alone=True)
        await b.submit(row(2), 1, alone=True)
        run.fail = True
        with pytest.raises(RuntimeError, match="broke"):
            await b.submit(row(3), 1, alone=True)
        run.fail = False
        assert run.threads[1:] == [loop_thread] * 2
        ran = len(run.threads)
        with pytest.raises(DeadlineExceeded):
            await b.submit(row(4), 1, time.perf_counter() - 1, alone=True)
        assert len(run.threads) == ran  # past its deadline: not run
        both = await asyncio.gather(b.submit(row(5, width=3), 1), b.submit(row(6, width=3), 1))
        assert [r.outputs["y"][0, 0] for r in both] == [10, 12]  # no instance was lost to the runs on the loop
        await b.close()

    asyncio.run(scenario())


def test_an_answered_request_leaves_nothing_of_its_own_behind():
    """Once its caller lets go, nothing of a request stays alive: its outputs may hold a runtime's memory (an ONNX
    Runtime output keeps its session's whole memory arena alive, even after the session is released)."""
    made: list[weakref.ref] = []

    def run(instance: int, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        output = feeds["x"] * 2
        made.append(weakref.ref(output))
        return {"y": output}

    async def scenario() -> None:
        b = batcher(run)
        try:
            for value in (1.0, 2.0):
                result = await b.submit(row(value), 1)
                assert result.outputs["y"][0, 0] == 2 * value
            del result
            gc.collect()
            assert len(made) == 2 and [ref() for ref in made] == [None, None]
        finally:
            await b.close()

    asyncio.run(scenario())


class Starts:
    """A run function recording each batch's instance and the instances running as it started; a run of a row of
    value 0 holds its instance until `gate` is set."""

    def __init__(self, seconds: float = 0.02) -> None:
        self.seconds = seconds
        self.started: list[tuple[int, set[int]]] = []
        self.running: set[int] = set()
        self.lock = threading.Lock()
        self.gate = threading.Event()

    def __call__(self, instance: int, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self.lock:
            self.started.append((instance, set(self.running)))
            self.running.add(instance)
        try:
            if feeds["x"][0, 0] == 0:
                self.gate.wait(10)
            time.sleep(self.seconds)
            return {"y": feeds["x"]}
        finally:
            with self.lock:
                self.running.discard(instance)


def test_a_solo_instance_takes_a_request_alone_and_never_a_queue():
    run = Starts()

    async def scenario() -> None:
        b = DynamicBatcher(run, 3, 1, 0.0, 64, "test", solo=True)
        for value in (1, 2, 3):  # one at a time: each alone, on the instance that spreads over every core
            await b.submit(row(value), 1)
        assert [instance for instance, _ in run.started] == [0, 0, 0]
        # a queue's wait is at the queue instances' pace (4 rows, 2 instances: twice a batch's time); until one ran
        # a batch, the solo's runs (20 ms) stand in, and the first queue batch replaces them (100 ms each)
        assert 0.03 < (b.expected_wait(4) or 0) < 0.1
        run.started.clear()
        run.seconds = 0.1
        await asyncio.gather(*(b.submit(row(value), 1) for value in range(1, 9)))  # a queue: side by side
        assert len(run.started) == 8 and {1, 2} <= {instance for instance, _ in run.started}, run.started
        # (the last may run solo, if both queue instances are idle when it is taken; never beside another)
        assert all(not others for instance, others in run.started if instance == 0), run.started
        assert 0.18 < (b.expected_wait(4) or 0) < 0.3
        run.started.clear()
        held = asyncio.ensure_future(b.submit(row(0), 1))  # alone: solo, held there
        await until(lambda: run.running == {0}, "the lone request runs on the solo instance")
        late = await b.submit(row(5), 1)  # meanwhile: at once on a queue instance, not behind the solo one
        assert late.outputs["y"][0, 0] == 5 and run.started[-1] in [(1, {0}), (2, {0})]
        run.gate.set()
        await held
        await b.close()

    asyncio.run(scenario())
    with pytest.raises(ValueError, match="other instances"):
        DynamicBatcher(run, 1, 1, 0.0, 64, "test", solo=True)

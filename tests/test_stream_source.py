"""FrameSource against a real RTSP server (GStreamer, in a child process) and real video files."""

from __future__ import annotations

import asyncio
import functools
import gc
import http.server
import io
import itertools
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import av
import numpy as np
import pytest
from av.video.frame import PictureType

import inprocess
from kakehashi.protocols.vision import parse_params
from kakehashi.settings import default_model_path
from kakehashi.streams.source import Frame, FrameSource, SourceClosed, SourceState
from rtsp_server import RtspServer, free_port
from stream_videos import make_hls, make_walk_video, walk_frames

SIZE = (640, 480)
FAST_RECONNECT = {"reconnect_min_seconds": 0.1, "reconnect_max_seconds": 0.5}


@pytest.fixture(scope="module")
def walk_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_walk_video(tmp_path_factory.mktemp("videos") / "walk.mp4", seconds=4.0)


@pytest.fixture(scope="module")
def short_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_walk_video(tmp_path_factory.mktemp("videos") / "short.mkv", seconds=1.0)


@pytest.fixture(scope="module")
def rtsp(walk_video: Path) -> Iterator[RtspServer]:
    with RtspServer(walk_video) as server:
        yield server


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Files from the server's folder (HLS), and /mjpeg: the walk as an endless multipart JPEG stream."""

    jpegs: list[bytes] = []

    def do_GET(self) -> None:
        if self.path != "/mjpeg":
            return super().do_GET()
        self.send_response(200)
        self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
        self.end_headers()
        try:
            for data in itertools.cycle(self.jpegs):
                self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(data))
                self.wfile.write(data + b"\r\n")
                time.sleep(0.04)  # a 25 fps camera
        except OSError:  # the reader went away
            pass

    def log_message(self, *_args) -> None:
        pass


@pytest.fixture(scope="module")
def http_camera(walk_video: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """http://127.0.0.1:PORT serving /mjpeg and /cam.m3u8 (HLS of the walk, one-second segments)."""
    folder = make_hls(walk_video, tmp_path_factory.mktemp("hls")).parent
    jpegs = []
    for image in walk_frames(100, SIZE):
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=90)
        jpegs.append(buffer.getvalue())
    handler = type("Handler", (_Handler,), {"jpegs": jpegs})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(folder)))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


async def until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `condition` until true; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.02)


async def frame_after(source: FrameSource, number: int, timeout: float) -> Frame:
    """The source's next frame numbered above `number`; fail with its status after `timeout` seconds."""
    try:
        return await asyncio.wait_for(source.next(number), timeout)
    except TimeoutError:
        pytest.fail(f"no frame after {number} within {timeout} s: {source.status()}")


async def started(url: str, **kwargs) -> FrameSource:
    source = FrameSource(url, **kwargs)
    source.start(asyncio.get_running_loop())
    return source


def small(image) -> np.ndarray:
    return np.asarray(image.convert("RGB").resize((64, 48)), dtype=np.float32)


def walk_position(frame: Frame, references: np.ndarray) -> tuple[int, float]:
    """Which frame of the walk (100 frames) this picture is, and how far it is from it (mean absolute error)."""
    errors = np.abs(references - small(frame.rgb())).mean(axis=(1, 2, 3))
    return int(errors.argmin()), float(errors.min())


def test_the_walk_video_shows_a_person_in_most_frames(walk_video):
    handle = inprocess.load(default_model_path())
    found = []
    with av.open(str(walk_video)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index % 10 == 0:
                buffer = io.BytesIO()
                frame.to_image().save(buffer, "PNG")
                results = inprocess.predict(handle, buffer.getvalue())[0].results
                found.append(any(r["name"] == "person" for r in results))
    assert index == 99 and (frame.width, frame.height) == SIZE
    assert len(found) == 10 and sum(found) >= 8


def test_frames_arrive_from_the_rtsp_server(rtsp):
    references = np.stack([small(image) for image in walk_frames(100, SIZE)])

    async def scenario() -> list[Frame]:
        source = await started(rtsp.url)
        try:
            frames, number = [], 0
            while len(frames) < 30:
                frame = await frame_after(source, number, 30 if number == 0 else 15)
                frames.append(frame)
                number = frame.number
            assert source.state is SourceState.RUNNING and source.reason == ""
            status = source.status()
            assert status["state"] == "running" and status["read"] >= 30 and status["width"] == 640
            assert status["input_fps"] > 10 and status["decode_ms"] > 0
            return frames
        finally:
            source.stop()

    frames = asyncio.run(scenario())
    numbers = [frame.number for frame in frames]
    assert numbers == sorted(set(numbers))
    assert all(frame.rgb().size == SIZE and frame.rgb().mode == "RGB" for frame in frames)
    positions = [walk_position(frame, references) for frame in frames]
    assert max(error for _, error in positions) < 12  # each frame is a picture of the walk (H.264 twice over)
    steps = [b[0] - a[0] for a, b in zip(positions, positions[1:])]
    assert sum(step > 0 for step in steps) >= len(steps) - 2  # the astronaut walks right (allowing one loop)


def test_the_rtsp_server_loops_its_video(short_video):
    async def scenario(server: RtspServer) -> None:
        source = await started(server.url)
        try:
            await until(lambda: source.read > 60, 10, "more frames than the 25 of the file")
            assert source.state is SourceState.RUNNING and source.reconnects == 0
        finally:
            source.stop()

    with RtspServer(short_video) as server:
        asyncio.run(scenario(server))


@pytest.mark.parametrize("path", ["/mjpeg", "/cam.m3u8"])
def test_frames_arrive_over_http(http_camera, path):
    references = np.stack([small(image) for image in walk_frames(100, SIZE)])

    async def scenario() -> list[Frame]:
        source = await started(http_camera + path)
        try:
            frames = [await frame_after(source, 0, 10)]
            for _ in range(9):
                frames.append(await frame_after(source, frames[-1].number, 5))
            assert source.state is SourceState.RUNNING
            return frames
        finally:
            source.stop()

    frames = asyncio.run(scenario())
    assert all(frame.rgb().size == SIZE for frame in frames)
    assert max(walk_position(frame, references)[1] for frame in frames) < 12


def test_the_pulled_cable_reconnects_on_the_same_port(walk_video):
    server = RtspServer(walk_video).start()

    async def scenario() -> None:
        source = await started(server.url, read_timeout_seconds=3.0, **FAST_RECONNECT)
        try:
            before = await frame_after(source, 0, 30)
            assert source.state is SourceState.RUNNING and source.reconnects == 0
            server.stop()
            await until(lambda: source.state is SourceState.RECONNECTING, 10, "reconnecting after the cable is pulled")
            assert f"127.0.0.1:{server.port}" in source.reason  # "the stream from ... ended" (or reset)
            lost_at = source.read  # frames numbered above it come from the new connection
            server.start()
            await until(lambda: source.state is SourceState.RUNNING, 20, "running again after the server came back")
            after = await frame_after(source, lost_at, 10)
            assert after.number > before.number and after.rgb().size == SIZE
            assert source.reconnects >= 1
        finally:
            source.stop()

    try:
        asyncio.run(scenario())
    finally:
        server.stop()


def test_a_frozen_server_is_left_after_the_read_timeout(walk_video):
    server = RtspServer(walk_video).start()
    assert server.process is not None
    pid = server.process.pid

    async def scenario() -> None:
        source = await started(server.url, read_timeout_seconds=1.0, **FAST_RECONNECT)
        try:
            before = await frame_after(source, 0, 30)
            os.kill(pid, signal.SIGSTOP)  # the connection stays up, nothing comes
            await until(lambda: source.state is SourceState.RECONNECTING, 8, "reconnecting when frames stop")
            assert source.reason == f"no frame for 1 s from 127.0.0.1:{server.port}"
            lost_at = source.read  # frames numbered above it come from the new connection
            os.kill(pid, signal.SIGCONT)
            after = await frame_after(source, lost_at, 15)
            # reconnected (an attempt made while the server was still stopped may have timed out too: CI's load)
            assert source.state is SourceState.RUNNING and source.reconnects >= 1 and after.number > before.number
        finally:
            source.stop()

    try:
        asyncio.run(scenario())
    finally:
        os.kill(pid, signal.SIGCONT)
        server.stop()


def test_a_slow_consumer_gets_the_latest_frame_and_nothing_queues(rtsp):
    async def scenario() -> None:
        source = await started(rtsp.url)
        try:
            first = await frame_after(source, 0, 30)
            await asyncio.sleep(0.5)  # past the first burst: the source now reads at 25 fps
            numbers, dropped = [first.number], [source.dropped]
            for _ in range(8):
                await asyncio.sleep(0.3)  # the slow consumer's work
                numbers.append((await frame_after(source, numbers[-1], 5)).number)
                dropped.append(source.dropped)
            jumps = [b - a for a, b in zip(numbers, numbers[1:])]
            assert min(jumps[1:]) >= 3, jumps  # 0.3 s at 25 fps: about 7 frames later each time
            assert dropped == sorted(dropped) and dropped[-1] - dropped[1] >= 5 * 7 - 10
            assert source.dropped + len(numbers) - 1 >= numbers[-1] - numbers[0]  # every frame read: taken or dropped
            gc.collect()
            assert sum(isinstance(obj, Frame) for obj in gc.get_objects()) <= 2  # the latest (and none queued)
        finally:
            source.stop()

    asyncio.run(scenario())


def test_a_consumer_behind_leaves_unreferenced_frames_undecoded_and_one_keeping_up_gets_every_frame(tmp_path):
    video = make_walk_video(tmp_path / "b-frames.mp4", seconds=2.0, b_frames=True)
    with av.open(str(video)) as container:
        kinds = {PictureType(frame.pict_type) for frame in container.decode(video=0)}
    assert PictureType.B in kinds, kinds  # what the source may leave undecoded

    async def consume(pause: float, seconds: float) -> dict:
        source = await started(str(video), loop=True)
        try:
            number, taken, deadline = 0, 0, time.monotonic() + seconds
            while time.monotonic() < deadline:
                number = (await frame_after(source, number, 5)).number
                taken += 1
                await asyncio.sleep(pause)  # the consumer's work
            return {**source.status(), "taken": taken, "last": number}
        finally:
            source.stop()

    slow = asyncio.run(consume(0.25, 4.0))  # 4 frames a second out of 25
    assert slow["behind"] and slow["undecoded"] >= 10, slow
    assert slow["dropped"] + slow["taken"] >= slow["last"] - 1  # every frame read: taken or dropped, decoded or not
    assert 20 <= slow["input_fps"] <= 30, slow  # still read at the source's own rate
    keeping_up = asyncio.run(consume(0.0, 2.0))
    assert not keeping_up["behind"] and keeping_up["undecoded"] == 0 and keeping_up["dropped"] <= 2, keeping_up


def test_the_fps_cap_skips_frames_before_they_are_offered(walk_video):
    async def scenario() -> None:
        source = await started(str(walk_video), fps=5, loop=True)
        try:
            number = (await frame_after(source, 0, 10)).number
            offered, deadline = 0, time.monotonic() + 2.0
            while time.monotonic() < deadline:
                number = (await frame_after(source, number, 5)).number
                offered += 1
            assert 6 <= offered <= 14, offered  # 5 a second for 2 s
            assert source.skipped >= 2 * offered and source.dropped <= 1
            assert 20 <= source.measured_fps() <= 30  # the input is still read at its own 25 fps
        finally:
            source.stop()

    asyncio.run(scenario())


def test_a_file_ends_or_loops(short_video):
    async def to_the_end() -> tuple[list[Frame], float, SourceClosed]:
        source = await started(f"file://{short_video}")
        frames, number, began = [], 0, time.monotonic()
        try:
            while True:
                frames.append(frame := await frame_after(source, number, 5))
                number = frame.number
        except SourceClosed as closed:
            return frames, time.monotonic() - began, closed

    frames, seconds, closed = asyncio.run(to_the_end())
    assert closed.state is SourceState.ENDED and str(short_video) in closed.reason
    assert frames[-1].number == 25 and frames[-1].pts == pytest.approx(0.96, abs=0.05)
    assert seconds >= 0.8  # paced at 25 fps like a camera, not read as fast as it decodes

    async def looping() -> None:
        source = await started(str(short_video), loop=True)
        try:
            await until(lambda: source.read > 40, 5, "reading past the end of a 25-frame file")
            frame = await frame_after(source, 25, 5)
            assert source.state is SourceState.RUNNING and frame.pts is not None and frame.pts < 0.96
            assert source.reconnects == 0
        finally:
            source.stop()

    asyncio.run(looping())


async def read_slowly(url: str, count: int | None = None, **kwargs) -> tuple[list[Frame], FrameSource]:
    """The frames a consumer slower than 25 fps takes from a file not read in real time: `count` of them, or all
    until it ends."""
    source = await started(url, realtime=False, **kwargs)
    frames: list[Frame] = []
    try:
        while count is None or len(frames) < count:
            frames.append(await frame_after(source, frames[-1].number if frames else 0, 5))
            await asyncio.sleep(0.06)  # the consumer's pace: slower than the file's 25 fps
    except SourceClosed as closed:
        assert count is None and closed.state is SourceState.ENDED, closed
    finally:
        source.stop()
    return frames, source


def test_a_file_not_read_in_real_time_gives_every_frame_to_a_slow_consumer(short_video):
    frames, source = asyncio.run(read_slowly(str(short_video)))
    assert [frame.number for frame in frames] == list(range(1, 26)), [frame.number for frame in frames]
    assert source.dropped == 0 and source.undecoded == 0 and not source.behind

    capped, source = asyncio.run(read_slowly(str(short_video), fps=5))  # capped on the file's clock: the same frames
    assert [frame.pts for frame in capped] == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8], abs=1e-3)
    assert source.skipped == 20 and source.dropped == 0
    assert [frame.number for frame in asyncio.run(read_slowly(str(short_video), fps=5))[0]] == [
        frame.number for frame in capped
    ]


def test_a_file_not_read_in_real_time_keeps_the_videos_clock(short_video, tmp_path):
    """Frame times follow the video (rules' durations, zones' dwell), not how fast the model took the frames: across
    a loop too, where they go on from the last frame; a file whose frames have no pts is capped by its frame rate."""
    looped, _ = asyncio.run(read_slowly(str(short_video), 30, loop=True))
    assert [frame.number for frame in looped] == list(range(1, 31))  # none dropped, on into the second round
    steps = np.diff([frame.time for frame in looped])
    assert steps[:24] == pytest.approx([0.04] * 24, abs=2e-3), steps  # the video's 25 fps, not the consumer's pace
    assert steps[24] > 0 and steps[25:] == pytest.approx([0.04] * 4, abs=2e-3), steps  # the loop goes on later
    # when each was offered: the second once the first was taken (at once), then at the consumer's pace
    offered = np.diff([frame.offered for frame in looped[:24]])
    assert offered[1:].min() > 0.045, offered

    raw = make_walk_video(tmp_path / "short.h264", seconds=1.0)  # an elementary stream: no pts at all
    capped, _ = asyncio.run(read_slowly(str(raw), 5, fps=5))
    assert [frame.number for frame in capped] == [1, 6, 11, 16, 21]

    segment = make_walk_video(tmp_path / "segment.ts", seconds=1.0)
    joined = tmp_path / "joined.ts"  # two MPEG-TS recordings end to end: the clock jumps back where they meet
    joined.write_bytes(segment.read_bytes() * 2)
    capped, _ = asyncio.run(read_slowly(str(joined), fps=5))
    assert [frame.number for frame in capped] == [1, 6, 11, 16, 21, 26, 31, 36, 41, 46]
    assert all(np.diff([frame.time for frame in capped]) > 0)  # and frame times go on forwards


def test_stop_ends_a_reader_waiting_for_its_frame_to_be_taken(short_video):
    async def scenario() -> None:
        source = await started(str(short_video), realtime=False)
        await frame_after(source, 0, 5)  # taken: the reader offers the second and waits for it to be taken
        await until(lambda: source.read >= 2, 5, "the second frame offered")
        assert source._thread is not None and source._thread.is_alive()
        source.stop(timeout=2)
        assert not source._thread.is_alive()

    asyncio.run(scenario())


def test_only_a_file_can_be_read_other_than_in_real_time():
    with pytest.raises(ValueError, match="only a video file"):
        FrameSource("rtsp://127.0.0.1:8554/belt", realtime=False)


def test_a_missing_file_fails_at_once(tmp_path):
    async def scenario() -> None:
        source = await started(str(tmp_path / "nope.mp4"), max_failures=5)
        with pytest.raises(SourceClosed) as closed:
            await asyncio.wait_for(source.next(0), 5)
        assert closed.value.state is SourceState.FAILED and "no such file" in closed.value.reason

    asyncio.run(scenario())


def test_a_refused_url_fails_after_max_failures():
    port = free_port()

    async def scenario() -> None:
        source = await started(f"rtsp://127.0.0.1:{port}/cam", max_failures=3, **FAST_RECONNECT)
        seen = set()
        await until(lambda: seen.add(source.state) or source.state is SourceState.FAILED, 10, "failed")
        assert SourceState.RECONNECTING in seen
        assert source.reason.startswith(f"connection refused by 127.0.0.1:{port}") and "3 failed" in source.reason
        with pytest.raises(SourceClosed, match=f"refused by 127.0.0.1:{port}"):
            await source.next(0)

    asyncio.run(scenario())


def test_stop_returns_promptly_while_a_connection_hangs():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.settimeout(10)
        port = listener.getsockname()[1]

        async def scenario() -> None:
            source = await started(f"rtsp://127.0.0.1:{port}/cam", open_timeout_seconds=3.0)
            connection, _ = await asyncio.to_thread(listener.accept)  # it connected; nothing will ever answer
            with connection:
                waiting = asyncio.ensure_future(source.next(0))
                await asyncio.sleep(0.2)
                assert source.state is SourceState.CONNECTING and not waiting.done()
                began = time.monotonic()
                source.stop()
                assert time.monotonic() - began < 1.0
                with pytest.raises(SourceClosed, match="stopped"):
                    await asyncio.wait_for(waiting, 1)
                assert source._thread is not None
                thread = source._thread
                await until(lambda: not thread.is_alive(), 6, "the reading thread ends after its open timeout")
                assert source.state is SourceState.STOPPED

        asyncio.run(scenario())


def test_a_frame_scaled_in_one_pass_answers_like_the_whole_frame(walk_video):
    """The model's input is scaled from the decoder's pixels by swscale in one pass (`Frame.scaled`): the bundled
    model finds the same objects, with boxes in the source's pixels, as on the whole frame converted to RGB."""

    async def some_frames() -> list[Frame]:
        source = await started(str(walk_video))
        frames: list[Frame] = []
        try:
            while len(frames) < 4:
                frames.append(await frame_after(source, frames[-1].number + 9 if frames else 0, 15))
            return frames
        finally:
            source.stop()

    handle = inprocess.load(default_model_path())
    params = parse_params({}, handle.config.defaults)
    found = 0
    for frame in asyncio.run(some_frames()):
        whole = frame.rgb()
        assert whole.size == frame.size == SIZE
        scaled, reference = asyncio.run(handle.predict([frame, whole], params))
        assert scaled.shape == reference.shape == (SIZE[1], SIZE[0])
        assert [r["name"] for r in scaled.results] == [r["name"] for r in reference.results]
        for ours, theirs in zip(scaled.results, reference.results):
            assert ours["confidence"] == pytest.approx(theirs["confidence"], abs=0.05)
            box, expected = ours["box"], theirs["box"]
            assert all(abs(box[k] - expected[k]) < 3 for k in ("x1", "y1", "x2", "y2")), (box, expected)
        found += len(scaled.results)
    assert found >= 4  # the walker, in every frame

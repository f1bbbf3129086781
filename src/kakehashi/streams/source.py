"""A live frame source: one stream read and decoded with PyAV in its own thread, offering only its latest frame.

Sources: `rtsp://` (over TCP unless `options` say otherwise), `http(s)://` (MJPEG, HLS: ffmpeg's demuxers), a
video file path or `file://` URL (paced at its own frame rate, by pts, so it behaves like a camera; or, not
`realtime`, read as fast as its frames are taken, none dropped) and a device such as `/dev/video0` (v4l2). A live
source that drops is connected again with exponential backoff and jitter.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import queue
import random
import threading
import time
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter
from PIL import Image

from kakehashi.streams.locations import locate

log = logging.getLogger(__name__)

DECODE_WEIGHT = 0.1  # of the newest frame in the moving average of decode seconds
FPS_WINDOW = 50  # frames over which the input frame rate is measured
# of the last frames offered, how many replaced before they were taken make the source skip decoding the frames no
# other frame refers to (and how few let it decode every frame again)
BEHIND_WINDOW, BEHIND_FROM, CAUGHT_UP_AT = 10, 5, 1


class SourceState(str, Enum):
    CONNECTING = "connecting"
    RUNNING = "running"  # a frame came on the current connection
    RECONNECTING = "reconnecting"  # lost (error, or a live source's end): waiting to connect again
    FAILED = "failed"  # max_failures connections in a row failed, or the file does not exist
    ENDED = "ended"  # a file (not looping) reached its end
    STOPPED = "stopped"


CLOSED = {SourceState.FAILED, SourceState.ENDED, SourceState.STOPPED}


class SourceClosed(Exception):
    """The source gives no more frames: stopped, ended or failed (`reason` says which and why)."""

    def __init__(self, state: SourceState, reason: str) -> None:
        super().__init__(f"{state.value}: {reason}" if reason else state.value)
        self.state = state
        self.reason = reason


@dataclass(eq=False)
class Frame:
    """One decoded frame, still in the decoder's pixel format until used: scaled to a model's input size and
    turned into RGB in one swscale pass (`scaled`, about 1 ms at 768x576 against 4 for converting then resizing),
    or whole (`rgb()`, for snapshots and the live view). Frames dropped are never converted. `number` counts every
    frame read (skipped and dropped ones too), `time` is the wall clock when it was offered (a file not read in real
    time: the wall clock when its reading began plus the frame's own time in the video, so durations between frames
    are the video's), `offered` the wall clock when it was offered, `pts` its presentation time in seconds (None
    when the stream has none)."""

    video: av.VideoFrame = field(repr=False)
    number: int
    time: float
    pts: float | None
    converters: Converters = field(repr=False)
    offered: float | None = None  # None: `time`
    _rgb: Image.Image | None = field(default=None, init=False, repr=False)
    # PyAV sets and restores the frame's colour tags around a conversion: one at a time
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    @property
    def size(self) -> tuple[int, int]:
        return self.video.width, self.video.height

    def scaled(self, width: int, height: int) -> np.ndarray:
        with self._lock:
            return self.converters.convert(self.video, width, height)

    def rgb(self) -> Image.Image:
        """The whole frame in RGB, converted once (two threads at once may both convert; either result serves)."""
        if self._rgb is None:
            self._rgb = Image.fromarray(self.scaled(*self.size))
        return self._rgb


class Converters:
    """swscale contexts kept for reuse, one per output size in use at a time: setting one up costs more than a
    frame's conversion. Safe from several threads (each takes a context of its own)."""

    def __init__(self) -> None:
        self._idle: dict[tuple[int, int], queue.SimpleQueue[VideoReformatter]] = collections.defaultdict(
            queue.SimpleQueue
        )

    def convert(self, video: av.VideoFrame, width: int, height: int) -> np.ndarray:
        """`video` in RGB (height, width, 3 uint8; a view of RGBA pixels) at `width` x `height`, bilinear. swscale
        has a vectorised path to RGBA and none to packed RGB: scaling to RGBA takes under half the time."""
        idle = self._idle[width, height]
        try:
            reformatter = idle.get_nowait()
        except queue.Empty:
            reformatter = VideoReformatter()
        try:
            converted = reformatter.reformat(  # one thread: conversions run side by side in the compute pool
                video, width=width, height=height, format="rgba", interpolation="BILINEAR", threads=1
            )
            return converted.to_ndarray()[..., :3]
        finally:
            idle.put(reformatter)


class _Lost(Exception):
    """A connection gave up: `reason` in a user's words, and whether it gave a frame first."""

    def __init__(self, reason: str, got_frame: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.got_frame = got_frame


class FrameSource:
    """Reads one source in a daemon thread; `next()` hands the newest frame to coroutines on the given loop.

    Only the latest frame is kept: a frame replaced before anyone took it counts in `dropped`; frames beyond the
    `fps` cap are skipped before they are converted to images (`skipped`; a file that is not `realtime` is capped by
    its frames' pts, so the same frames are kept every time). A file that is not `realtime` is not paced and drops
    nothing: each frame waits until the one before it was taken. While the consumer is behind (half of
    the last frames offered were dropped), the frames no other frame refers to (an H.264 stream's B-frames) are not
    decoded at all: they too count as read and dropped, and decoding costs a third less. `reconnects` counts the
    times the source ran again after it was lost or failed to connect.
    """

    def __init__(
        self,
        url: str,
        *,
        fps: float | None = None,
        loop: bool = False,
        realtime: bool = True,
        reconnect_min_seconds: float = 0.5,
        reconnect_max_seconds: float = 30.0,
        max_failures: int | None = None,
        open_timeout_seconds: float = 10.0,
        read_timeout_seconds: float = 5.0,
        options: dict[str, str] | None = None,
    ) -> None:
        self.url = url
        self.fps = fps
        self.loop = loop
        self.realtime = realtime
        self.reconnect_min_seconds = reconnect_min_seconds
        self.reconnect_max_seconds = max(reconnect_max_seconds, reconnect_min_seconds)
        self.max_failures = max_failures
        self.open_timeout_seconds = open_timeout_seconds
        self.read_timeout_seconds = read_timeout_seconds
        self._target = locate(url, options)
        if not realtime and not self._target.is_file:
            raise ValueError(f"only a video file can be read other than in real time, not {url}")
        self.state = SourceState.CONNECTING
        self.reason = ""
        self.read = 0
        self.dropped = 0
        self.skipped = 0
        self.reconnects = 0
        self.decode_seconds = 0.0
        self.last_frame_time: float | None = None
        self.size: tuple[int, int] | None = None
        self._read_times: collections.deque[float] = collections.deque(maxlen=FPS_WINDOW)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._latest: Frame | None = None
        self._taken = True
        self._was_taken = threading.Event()  # the reading thread of a file not read in real time waits on it
        self._was_taken.set()
        self._waiters: list[asyncio.Future[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._next_due = -math.inf  # when the fps cap lets the next frame through (monotonic, or the video's clock)
        self._clock_base = 0.0  # a file not read in real time: the wall clock its video clock starts at
        self._offers: collections.deque[bool] = collections.deque(maxlen=BEHIND_WINDOW)  # True: dropped
        self.behind = False  # decoding only the frames others refer to
        self.undecoded = 0  # frames left undecoded while behind (counted in `read` and `dropped` too)
        self._converters = Converters()

    # -- the consumer's side (event loop) ------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start reading in a daemon thread; waiters of `next()` on `loop` are woken from it."""
        self._loop = loop
        self._thread = threading.Thread(target=self._run, name=f"frame-source {self._target.where}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 0.5) -> None:
        """Stop reading; waiters get SourceClosed. Joins the thread for at most `timeout` seconds, short as it may
        run on the event loop (a read still in progress ends within the open/read timeouts, then the daemon thread
        exits by itself)."""
        self._stopping.set()
        self._was_taken.set()
        self._set_state(SourceState.STOPPED, "stopped")
        if self._thread is not None:
            self._thread.join(timeout)

    async def next(self, after: int = 0) -> Frame:
        """The newest frame numbered above `after`, waiting until one comes; SourceClosed once none will."""
        if self._loop is None:
            raise RuntimeError("FrameSource.next() before start()")
        while True:
            with self._lock:
                latest = self._latest
                if latest is not None and latest.number > after:
                    self._taken = True
                    self._was_taken.set()
                elif self.state in CLOSED:
                    raise SourceClosed(self.state, self.reason)
                else:
                    latest, waiter = None, self._loop.create_future()
                    self._waiters.append(waiter)
            if latest is not None:
                return latest
            try:
                await waiter
            finally:
                with self._lock:
                    if waiter in self._waiters:
                        self._waiters.remove(waiter)

    def measured_fps(self) -> float:
        """Frames read per second over the last ones (0 when fewer than two or none for the read timeout)."""
        times = list(self._read_times)
        if len(times) < 2 or time.monotonic() - times[-1] > self.read_timeout_seconds or times[-1] <= times[0]:
            return 0.0
        return (len(times) - 1) / (times[-1] - times[0])

    def status(self) -> dict:
        """State, reason, counters, the measured input frame rate and the frame size, for the API."""
        return {
            "state": self.state.value,
            "reason": self.reason,
            "read": self.read,
            "dropped": self.dropped,
            "skipped": self.skipped,
            "behind": self.behind,
            "undecoded": self.undecoded,
            "reconnects": self.reconnects,
            "decode_ms": round(self.decode_seconds * 1000, 3),
            "last_frame_time": self.last_frame_time,
            "input_fps": round(self.measured_fps(), 2),
            "fps_cap": self.fps,
            "width": self.size[0] if self.size else None,
            "height": self.size[1] if self.size else None,
        }

    # -- the reading thread -------------------------------------------------------------------------

    def _set_state(self, state: SourceState, reason: str = "") -> None:
        """Move to `state` unless already closed (nothing reopens a closed source); closing wakes the waiters."""
        with self._lock:
            if self.state in CLOSED or (state, reason) == (self.state, self.reason):
                return
            self.state, self.reason = state, reason
            if state in CLOSED:
                self._wake()
        log.info("source %s: %s%s", self._target.where, state.value, f" ({reason})" if reason else "")

    def _wake(self) -> None:
        """Release every waiter on the loop (called with the lock held)."""
        waiters, self._waiters = self._waiters, []
        if waiters and self._loop is not None:
            try:
                self._loop.call_soon_threadsafe(_release, waiters)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                pass

    def _run(self) -> None:
        try:
            self._read_until_closed()
        except Exception as exc:  # a bug must not leave the source looking alive
            log.exception("source %s: the reading thread failed", self._target.where)
            self._set_state(SourceState.FAILED, f"internal error: {exc}")

    def _read_until_closed(self) -> None:
        failures = 0  # connections in a row that gave no frame
        while not self._stopping.is_set():
            target = self._target
            if target.is_file and not Path(target.location).is_file():
                self._set_state(SourceState.FAILED, f"no such file: {target.location}")
                return
            try:
                got_frame = self._connect()
                ended = True
                reason = "" if target.is_file else f"the stream from {target.where} ended"
            except _Lost as lost:
                got_frame, ended, reason = lost.got_frame, False, lost.reason
            if self._stopping.is_set():
                return
            failures = 0 if got_frame else failures + 1
            if target.is_file and ended:
                if not self.loop:
                    self._set_state(SourceState.ENDED, f"the end of {target.location}")
                    return
                if got_frame:
                    continue  # start the file again at once
                reason = f"no frame in {target.location}"
            if self.max_failures is not None and failures >= self.max_failures:
                self._set_state(SourceState.FAILED, f"{reason} ({failures} failed attempts in a row)")
                return
            delay = self._backoff(failures)
            self._set_state(SourceState.RECONNECTING, reason)
            self._stopping.wait(delay)

    def _backoff(self, failures: int) -> float:
        """Seconds to wait before connecting again: doubling per failure, with jitter, within min..max."""
        ceiling = min(self.reconnect_max_seconds, self.reconnect_min_seconds * 2 ** max(failures - 1, 0))
        return random.uniform(max(self.reconnect_min_seconds, ceiling / 2), ceiling)

    def _connect(self) -> bool:
        """One connection: open, read until its end; True if it gave a frame. Raises _Lost(reason, got_frame)."""
        target = self._target
        started = time.monotonic()
        try:
            container = av.open(
                target.location,
                format=target.format,
                options=target.options,
                timeout=(self.open_timeout_seconds, self.read_timeout_seconds),
            )
        except Exception as exc:  # every way a connection can fail becomes a reason
            raise _Lost(self._open_error(exc, time.monotonic() - started), False) from exc
        with container:
            if not container.streams.video:
                raise _Lost(f"no video in {target.where}", False)
            return self._read_frames(container)

    def _read_frames(self, container: av.container.InputContainer) -> bool:
        stream = container.streams.video[0]
        # one decoding thread per source: several sources keep the cores busy, and FFmpeg's worker threads cost
        # ~15 % more CPU per frame than decoding on this thread alone (measured on H.264 768x576)
        stream.thread_count = 1
        got_frame = False
        self._next_due = -math.inf  # a file's clock starts again at each loop
        rate = float(stream.average_rate or stream.guessed_rate or 25)  # for a video clock where frames have no pts
        clock: float | None = None  # a file not read in real time: the video's own time of the frame (seconds)
        decoded = 0
        paced_from: tuple[float, float] | None = None  # (monotonic, pts) of a file's first frame
        last_packet = time.monotonic()
        behind = False  # what the decoder was told (a new connection's decoder decodes every frame)
        try:
            for packet in container.demux(stream):
                last_packet = time.monotonic()
                if self.behind != behind:  # the decoder is told when the consumer falls behind or catches up
                    behind = self.behind
                    stream.codec_context.skip_frame = "NONREF" if behind else "DEFAULT"
                started = time.perf_counter()
                try:
                    frames = packet.decode()
                except av.InvalidDataError:  # a damaged packet (lost data on a live stream): the next key frame heals
                    continue
                if not frames:
                    if behind and packet.size:
                        self._not_decoded()
                    continue
                per_frame = (time.perf_counter() - started) / len(frames)
                for frame in frames:
                    if self._stopping.is_set():
                        return got_frame
                    if not self.realtime:
                        seconds = frame.time if frame.time is not None else decoded / rate
                        if clock is None or seconds < clock:  # its clock starts (again, at a loop) or jumps back
                            self._restart_clock(seconds)
                        clock = seconds
                    decoded += 1
                    if self._target.is_file and self.realtime and frame.time is not None:
                        paced_from = paced_from or (time.monotonic(), frame.time)
                        if self._stopping.wait(paced_from[0] + frame.time - paced_from[1] - time.monotonic()):
                            return got_frame
                    if not got_frame:  # running before the frame is offered: whoever takes it sees RUNNING
                        got_frame = True
                        if self.state is SourceState.RECONNECTING:
                            self.reconnects += 1
                        self._set_state(SourceState.RUNNING)
                    self._take(frame, per_frame, clock)
                last_packet = time.monotonic()  # not the time spent waiting for the consumer
        except av.FFmpegError as exc:
            silent = time.monotonic() - last_packet
            if silent >= self.read_timeout_seconds * 0.9:
                raise _Lost(
                    f"no frame for {self.read_timeout_seconds:g} s from {self._target.where}", got_frame
                ) from exc
            raise _Lost(f"{exc.strerror} ({self._target.where})", got_frame) from exc
        return got_frame

    def _open_error(self, exc: Exception, elapsed: float) -> str:
        where = self._target.where
        if isinstance(exc, ConnectionRefusedError):
            return f"connection refused by {where}"
        if elapsed >= self.open_timeout_seconds * 0.9:
            return f"no answer from {where} within {self.open_timeout_seconds:g} s"
        if isinstance(exc, av.FFmpegError):
            return f"cannot open {where}: {exc.strerror}"
        return f"cannot open {where}: {exc}"

    def _restart_clock(self, seconds: float) -> None:
        """A file not read in real time whose clock starts at `seconds`: frame times count on from now (past the
        last frame's), and the fps cap starts over."""
        self._clock_base = max(time.time(), (self.last_frame_time or 0.0) + 1e-3) - seconds
        self._next_due = -math.inf

    def _take(self, frame: av.VideoFrame, decode_seconds: float, clock: float | None) -> None:
        """Count a decoded frame; offer it as the latest unless the fps cap skips it (`clock`: the video's time of
        a file not read in real time, which is offered once the frame before it was taken, and capped by it)."""
        now = time.monotonic()
        self._read_times.append(now)
        self.read += 1
        if self.fps:
            if clock is not None:
                now = clock  # capped by the file's own clock
            if now < self._next_due - 1e-6:  # a file's pts add up to a hair under the due time
                self.skipped += 1
                self._average_decode(decode_seconds)
                return
            interval = 1.0 / self.fps
            self._next_due = (
                now + interval if self._next_due == -math.inf else max(self._next_due + interval, now + interval / 2)
            )
        self._average_decode(decode_seconds)
        if not self.realtime:
            self._was_taken.wait()  # set by `next()` taking the frame before, or by `stop()`
            if self._stopping.is_set():
                return
        wall = time.time()
        moment = wall if clock is None else self._clock_base + clock
        offered = Frame(frame, self.read, moment, frame.time, self._converters, offered=wall)
        self.size = (frame.width, frame.height)
        self.last_frame_time = offered.time
        with self._lock:
            replaced = not self._taken
            if replaced:
                self.dropped += 1
            self._latest, self._taken = offered, False
            self._was_taken.clear()
            self._wake()
        self._offers.append(replaced)
        dropped = sum(self._offers)
        if len(self._offers) == BEHIND_WINDOW and (dropped <= CAUGHT_UP_AT if self.behind else dropped >= BEHIND_FROM):
            self.behind = not self.behind
            self._offers.clear()  # judged again on the frames offered from now on

    def _not_decoded(self) -> None:
        """Count a frame left undecoded while behind: read, and dropped (nobody will see it)."""
        self._read_times.append(time.monotonic())
        self.read += 1
        self.undecoded += 1
        with self._lock:
            self.dropped += 1

    def _average_decode(self, seconds: float) -> None:
        if self.decode_seconds == 0.0:
            self.decode_seconds = seconds
        else:
            self.decode_seconds += DECODE_WEIGHT * (seconds - self.decode_seconds)


def _release(waiters: list[asyncio.Future[None]]) -> None:
    for waiter in waiters:
        if not waiter.done():
            waiter.set_result(None)

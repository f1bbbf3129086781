"""A real RTSP server for the stream tests: serves a video file, looping, at rtsp://127.0.0.1:PORT/cam.

Run as a script by the system Python, which has GStreamer's RTSP server through gi (the venv cannot import gi):
`/usr/bin/python3 tests/rtsp_server.py VIDEO PORT`. Each session's pipeline decodes the file in real time (a
seek back to the start at its end) and feeds the frames into an H.264 encoder and payloader. `RtspServer` starts
it on a free port for a test, waits until it answers, kills it (the pulled cable) and starts it again there.
Only the standard library is imported at module level: both Pythons load this file.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

SYSTEM_PYTHON = "/usr/bin/python3"
MOUNT = "/cam"
ENCODE = (
    "( appsrc name=src is-live=true format=time do-timestamp=true ! videoconvert"
    " ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=25 ! rtph264pay name=pay0 pt=96 config-interval=1 )"
)


def serve(video: str, port: int) -> None:
    """Serve `video` looping at rtsp://127.0.0.1:`port`/cam until killed."""
    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtspServer

    Gst.init(None)
    loop = GLib.MainLoop()

    def decoder(appsrc: Any) -> Any:
        """A pipeline decoding `video` at its own pace, pushing each frame into `appsrc`, restarting at its end."""
        location = video.replace("\\", "\\\\").replace('"', '\\"')
        pipeline = Gst.parse_launch(
            f'filesrc location="{location}" ! decodebin ! videoconvert ! video/x-raw,format=I420'
            " ! appsink name=sink sync=true max-buffers=2 emit-signals=true"
        )
        sink = pipeline.get_by_name("sink")
        pipeline.set_state(Gst.State.PAUSED)
        pipeline.get_state(10 * Gst.SECOND)
        appsrc.set_property("caps", sink.emit("pull-preroll").get_caps())

        def push(appsink: Any) -> Any:
            buffer = appsink.emit("pull-sample").get_buffer().copy()
            buffer.pts = buffer.dts = Gst.CLOCK_TIME_NONE  # appsrc stamps it with the running time
            appsrc.emit("push-buffer", buffer)
            return Gst.FlowReturn.OK

        def message(_bus: Any, msg: Any) -> bool:
            if msg.type == Gst.MessageType.EOS:
                pipeline.seek_simple(Gst.Format.TIME, Gst.SeekFlags.FLUSH | Gst.SeekFlags.KEY_UNIT, 0)
            elif msg.type == Gst.MessageType.ERROR:
                print(f"decoder error: {msg.parse_error()[0].message}", file=sys.stderr, flush=True)
                loop.quit()
            return True

        sink.connect("new-sample", push)
        pipeline.get_bus().add_watch(GLib.PRIORITY_DEFAULT, message)
        pipeline.set_state(Gst.State.PLAYING)
        return pipeline

    def configure(_factory: Any, media: Any) -> None:
        pipeline = decoder(media.get_element().get_by_name("src"))

        def unprepared(_media: Any) -> None:
            pipeline.get_bus().remove_watch()
            pipeline.set_state(Gst.State.NULL)

        media.connect("unprepared", unprepared)

    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(ENCODE)
    factory.set_shared(False)
    factory.connect("media-configure", configure)
    server.get_mount_points().add_factory(MOUNT, factory)
    if not server.attach(None):
        sys.exit(f"cannot listen on 127.0.0.1:{port}")
    loop.run()


def free_port() -> int:
    """A port free on 127.0.0.1 now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def describe(url: str, port: int, timeout: float) -> str:
    """The server's answer to an RTSP DESCRIBE of `url` (its SDP when the media is ready)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(f"DESCRIBE {url} RTSP/1.0\r\nCSeq: 1\r\nAccept: application/sdp\r\n\r\n".encode())
        answer = b""
        while b"m=video" not in answer and (chunk := sock.recv(4096)):
            answer += chunk
        return answer.decode(errors="replace")


class RtspServer:
    """The RTSP server in a child process on one port, for the lifetime of a test: start, stop, start again."""

    def __init__(self, video: Path, port: int | None = None) -> None:
        self.video = video
        self.port = port or free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}{MOUNT}"

    def start(self, timeout: float = 30.0) -> RtspServer:
        """Start serving and return once a DESCRIBE gets the SDP (raises if not within `timeout` seconds). Once the
        server listens, one DESCRIBE waits as long as it takes: each new connection prepares a new media (decoder
        and encoder), which on a busy machine can take longer than any short wait would allow."""
        import debian  # the venv's side only: the system Python runs the server

        debian.ensure(debian.RTSP_SERVER)
        self.process = subprocess.Popen([SYSTEM_PYTHON, __file__, str(self.video), str(self.port)])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the RTSP server exited with {self.process.returncode}")
            try:
                if "RTSP/1.0 200 OK" in describe(self.url, self.port, timeout=max(1.0, deadline - time.monotonic())):
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"the RTSP server did not answer at {self.url} within {timeout} s")

    def stop(self) -> None:
        """Kill the server at once, as if its cable were pulled; the port is free again when this returns."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None

    def __enter__(self) -> RtspServer:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]))

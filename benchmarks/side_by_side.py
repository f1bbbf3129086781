"""Issue 16's side-by-side benchmark, in ONE run on this machine:

(a) Kakehashi's image endpoint (`POST /v1/models/{m}/predict`, raw JPEG bodies) and its OIP v2 JSON infer, closed
    loop at concurrency 1 and 16 with `kakehashi bench`'s load generator, with the default settings
    (`--backend auto`) and with `--backend onnxruntime`;
(b) the ceilings: plain in-process loops with the same decode, letterbox and post-processing (Kakehashi's own
    functions) around ONNX Runtime, OpenVINO f32 and OpenVINO bf16, and one single-thread ONNX Runtime session per
    core each looping in its own thread, at batch 1, 2, 4 and 8;
(c) a plain FastAPI + uvicorn + onnxruntime server (`baseline_fastapi.py`) doing the same work per request;
(d) for reference, an empty app (`empty_app.py`: Granian, no work) under the same load with the tiny model's JPEGs:
    the most any Python server reaches here;

on YOLO11n, YOLO26n, the tiny model (per-request overhead, image endpoint and JSON infer), a 12 MP JPEG against an
810x1080 one (YOLO11n); then cold start (process start -> first correct answer) and idle RSS of Kakehashi (a
first start with an empty KAKEHASHI_CACHE_DIR, a second one reusing it) and of FastAPI, on YOLO11n.

    .venv/bin/pip install -e '.[bench]' fastapi 'uvicorn[standard]' onnx psutil
    .venv/bin/python benchmarks/side_by_side.py               # ~12 minutes on 2 cores
    .venv/bin/python benchmarks/side_by_side.py --quick       # smoke run: 1 s windows, fewer steps

Every answer is checked against the in-process answer for the same image or tensor (status, shape, the same
results: classes, confidences within 0.01, boxes within about 1 px; raw outputs within 0.1 %). Writes
results/side_by_side.md and results/side_by_side.csv.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

import httpx
import numpy as np
import orjson
from empty_app import ANSWER as EMPTY_ANSWER
from PIL import Image
from throughput import SHARED, Process, free_port, jpegs, raw_limit
from tiny_model import build as build_tiny

from kakehashi.backends.onnxruntime import OnnxRuntimeBackend
from kakehashi.backends.openvino import OpenVinoBackend
from kakehashi.backends.registry import RUNTIMES as REGISTERED
from kakehashi.bench import loadgen, payloads
from kakehashi.errors import KakehashiError
from kakehashi.memory import QUIET_SECONDS
from kakehashi.repository.config import AgreementConfig, ModelConfig, load_model_config
from kakehashi.settings import coco_model_path
from kakehashi.tasks.image_task import prepare_image
from kakehashi.tasks.params import PredictParams
from kakehashi.tasks.resolve import resolve_task

HERE = Path(__file__).parent
MODELS = {
    "yolo11n": SHARED / "models" / "yolo11n-coco-random-640-dynamic.onnx",
    "yolo26n": SHARED / "models" / "yolo26n-coco-random-640-e2e-dynamic.onnx",
    "yolox": coco_model_path() / "1" / "model.onnx",  # real weights: its answers let the guard judge bf16
}
CONFIG_FILES = {"yolox": coco_model_path() / "model.yaml"}  # the others: the defaults
CONFIGS = {name: load_model_config(path) for name, path in CONFIG_FILES.items()}
RUNTIMES: dict[str, Callable] = {
    "ONNX Runtime": OnnxRuntimeBackend,
    "OpenVINO f32": lambda path: OpenVinoBackend(path, "latency", 1, 0, "f32"),
    "OpenVINO bf16": lambda path: OpenVinoBackend(path, "latency", 1, 0, "bf16"),
}
OPENVINO = REGISTERED["openvino"]
MODEL_NAMES = ["yolo11n", "yolo26n", "yolox", "tiny"]  # in the repository the Kakehashi servers serve
LEVELS = (1, 16)
AUTO, ORT, FASTAPI = "Kakehashi (auto)", "Kakehashi (--backend onnxruntime)", "FastAPI"
EMPTY = "an empty app (Granian, no work)"
SMALL, LARGE = "YOLO11n, 810x1080 JPEG", "YOLO11n, 12 MP JPEG"
YOLOX = "YOLOX-Nano"
DETECTORS = {"YOLO11n": "yolo11n", "YOLO26n": "yolo26n", YOLOX: "yolox"}  # workload -> model name
SPEED_KEYS = ("preprocess", "queue", "inference", "postprocess")


# -- answers and their checks ---------------------------------------------------------------------------------------


def same(got: object, want: object) -> bool:
    """The same JSON answer: equal strings and structure, numbers within 0.01 + 0.2 % (a confidence within ~0.01,
    a box corner within ~1 px at 640)."""
    if isinstance(want, dict):
        return isinstance(got, dict) and got.keys() == want.keys() and all(same(got[k], want[k]) for k in want)
    if isinstance(want, list):
        return isinstance(got, list) and len(got) == len(want) and all(same(g, w) for g, w in zip(got, want))
    if isinstance(want, int | float) and not isinstance(want, bool):
        return isinstance(got, int | float) and abs(got - want) <= 0.01 + 0.002 * abs(want)
    return got == want


@dataclass
class Workload:
    """JPEG bodies for one model, and the in-process answers (keyed by the image's height and width: an answer
    must be one of those for its image's shape)."""

    model: Path
    images: list[Path]
    config: ModelConfig = field(default_factory=ModelConfig)
    bf16_too: bool = False  # a served bf16 answer is right too (a model whose bf16 the guard may accept)
    expected: dict[tuple[int, int], list[list]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        backends = [OnnxRuntimeBackend(self.model)]
        if self.bf16_too and "bf16" in OPENVINO.precisions():
            backends.append(RUNTIMES["OpenVINO bf16"](self.model))
        for backend in backends:
            task = resolve_task(backend, self.config, self.model)
            assert task is not None
            params = PredictParams(conf=self.config.defaults.conf, iou=self.config.defaults.iou)
            for path in self.images:
                prepared = prepare_image(path.read_bytes(), task.input, params, 10**9)
                outputs = backend.run({task.input.name: prepared.tensor[None]})
                results = task.postprocess({k: v[0] for k, v in outputs.items()}, prepared, params)
                self.expected.setdefault(prepared.original_shape, []).append(orjson.loads(orjson.dumps(results)))

    def payload(self, path: str, speeds: list[tuple[float, dict]] | None = None) -> payloads.Payload:
        """Raw JPEG bodies to `path`; each answer must be its image's in-process answer (its `speed`, if any, goes
        to `speeds` with the time it came)."""

        def check(status: int, headers: Mapping[str, str], body: bytes) -> str | None:
            if status != 200:
                return f"HTTP {status}"
            try:
                (image,) = orjson.loads(body)["images"]
                wants = self.expected.get(tuple(image["shape"]))
                if wants is None:
                    return f"unexpected shape {image['shape']}"
                if not any(same(image["results"], want) for want in wants):
                    return "wrong results"
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                return "bad answer"
            if speeds is not None and "speed" in image:
                speeds.append((time.perf_counter(), image["speed"]))
            return None

        bodies = [p.read_bytes() for p in self.images]
        some = next(iter(self.expected.items()))
        answer = orjson.dumps({"images": [{"shape": list(some[0]), "results": some[1][0]}]})
        assert check(200, {}, answer) is None and check(500, {}, answer) == "HTTP 500"
        assert check(200, {}, orjson.dumps({"images": [{"shape": [1, 1], "results": []}]})) is not None
        wrong = orjson.dumps({"images": [{"shape": list(some[0]), "results": [*some[1][0], {"class": 0}]}]})
        assert check(200, {}, wrong) == "wrong results", "the check must refuse a wrong answer"
        return payloads.Payload(path, bodies, {"content-type": "image/jpeg"}, check, f"{path}: {len(bodies)} JPEG(s)")


def tiny_infer_payload(model: Path) -> payloads.Payload:
    """The OIP v2 JSON infer of one 1x3x64x64 tensor; the answer's `y` must be the in-process f32 one, within the
    precision guard's tolerance for raw outputs (`agreement.output`, of f32's largest magnitude): what `auto`
    promises when it serves a lower precision (bf16 moves the tiny model's outputs by about 0.5 % of it)."""
    spec = [{"name": "x", "datatype": "FP32", "shape": [-1, 3, 64, 64]}]
    payload = payloads.infer_payload("tiny", spec, {"x": [1, 3, 64, 64]}, [{"name": "y"}])
    (tensor,) = orjson.loads(payload.bodies[0])["inputs"]
    x = np.asarray(tensor["data"], np.float32).reshape(tensor["shape"])
    want = OnnxRuntimeBackend(model).run({"x": x})["y"].ravel()
    tolerance = AgreementConfig().output * np.abs(want).max()

    def check(status: int, headers: Mapping[str, str], body: bytes) -> str | None:
        problem = payload.check(status, headers, body)
        if problem is None:
            got = np.asarray(orjson.loads(body)["outputs"][0]["data"], np.float32)
            if got.shape != want.shape or np.abs(got - want).max() > tolerance:
                return "wrong outputs"
        return problem

    def answer(y: np.ndarray) -> bytes:
        return orjson.dumps({"outputs": [{"name": "y", "datatype": "FP32", "shape": [1, 8], "data": y.tolist()}]})

    assert check(200, {}, answer(want + tolerance / 2)) is None
    assert check(200, {}, answer(want + 2 * tolerance)) == "wrong outputs", "the check must refuse a wrong answer"
    return replace(payload, check=check)


# -- the measurements ---------------------------------------------------------------------------------------------


@dataclass
class Run:
    quick: bool
    warmup: float
    duration: float
    work: Path
    stretch: tuple[float, float] = (20.0, 30.0)  # the most a c=16 step's warm-up and window stretch to (s)
    rows: list[dict] = field(default_factory=list)
    chosen: list[str] = field(default_factory=list)  # what each Kakehashi server chose, per model
    speeds: dict[tuple[str, str, int], list[dict]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    served: dict[str, str] = field(default_factory=dict)  # model -> the precision the auto server serves it in

    def add(self, section: str, workload: str, target: str, level: object, value: float, unit: str, **extra) -> None:
        row = {
            "section": section,
            "workload": workload,
            "target": target,
            "level": level,
            "value": round(value, 3),
            "unit": unit,
            **extra,
        }
        self.rows.append(row)
        print(row, flush=True)

    def value(self, section: str, workload: str, target: str, level: object) -> float | None:
        found = [
            r["value"]
            for r in self.rows
            if (r["section"], r["workload"], r["target"], r["level"]) == (section, workload, target, level)
        ]
        return found[0] if found else None

    def load(self, url: str, workload: str, target: str, payload: payloads.Payload, speeds: list | None) -> None:
        """Closed loop at each of LEVELS; every answer checked (a step with a wrong or failed answer says so).

        Above c=1 the warm-up and the window stretch to one and two rounds of `level` requests at the c=1 rate
        when those are longer, so the queue is full before the window opens and a server that answers its requests
        all together (FastAPI's thread pool runs 16 inferences at once) is measured over whole rounds."""
        round_trip = 0.0
        for level in LEVELS:
            warmup = max(self.warmup, min(self.stretch[0], level * round_trip)) if level > 1 else self.warmup
            window = max(self.duration, min(self.stretch[1], 2 * level * round_trip)) if level > 1 else self.duration
            if speeds is not None:
                speeds.clear()
            began = time.perf_counter()
            step = asyncio.run(loadgen.closed_loop(url, payload, level, warmup, window))
            row = step.row()
            kinds = "; ".join(f"{k} x{n}" for k, n in step.errors.items())
            mean = statistics.fmean(step.latencies_ms) if step.latencies_ms else float("nan")
            self.add(
                "server",
                workload,
                target,
                level,
                step.throughput,
                "req/s",
                p50_ms=row["p50_ms"],
                p99_ms=row["p99_ms"],
                mean_ms=round(mean, 2),
                requests=step.requests,
                errors=row["errors"],
                error_kinds=kinds,
                window_s=round(window, 1),
            )
            if level == 1 and step.throughput:
                round_trip = 1 / step.throughput
            opened = began + warmup
            inside = [speed for at, speed in speeds or [] if opened <= at < opened + window]
            if inside:
                self.speeds[(workload, target, level)] = inside

    def ceilings(self, name: str, workload: Workload, batches: tuple[int, ...]) -> None:
        path, images = workload.model, workload.images
        for runtime, make in RUNTIMES.items():
            try:
                backend = make(path)
            except KakehashiError as exc:
                self.failures.append(f"in-process {runtime} on {name}: {exc.message}")
                print(self.failures[-1], flush=True)
                continue
            for batch in batches:
                rate = raw_limit(path, images, batch, self.duration, backend, min(1.0, self.warmup), workload.config)
                self.add("in-process", name, runtime, batch, rate, "images/s")
            del backend
        sessions = os.cpu_count() or 1  # and one single-thread session per core, each looping in its own thread
        for batch in batches if sessions > 1 else ():
            rate = raw_limit(path, images, batch, self.duration, None, min(1.0, self.warmup), workload.config, sessions)
            self.add("in-process", name, f"ONNX Runtime, {sessions} sessions", batch, rate, "images/s")

    def best_ceiling(self, name: str) -> tuple[float, str]:
        """The fastest in-process loop in f32, or in bf16 where the auto server serves bf16 (its guard judged the
        model's bf16 answers on the calibration images and let them serve)."""
        bf16_served = self.served.get(DETECTORS.get(name, "")) == "bf16"
        found = [
            (r["value"], f"{r['target']}, batch {r['level']}")
            for r in self.rows
            if (r["section"], r["workload"]) == ("in-process", name) and (r["target"] != "OpenVINO bf16" or bf16_served)
        ]
        return max(found) if found else (float("nan"), "none")


def kakehashi_server(run: Run, repo: Path, label: str, extra: list[str]) -> Process:
    port = free_port()
    cache = Path(tempfile.mkdtemp(prefix="cache-", dir=run.work))  # this run measures its own load decisions
    server = Process(
        [
            sys.executable,
            "-m",
            "kakehashi",
            "serve",
            str(repo),
            "--port",
            str(port),
            "--grpc-port",
            str(free_port()),
            *extra,
        ],
        f"http://127.0.0.1:{port}",
        env={"KAKEHASHI_CACHE_DIR": str(cache)},
        log=run.work / f"{label.replace(' ', '_').replace('/', '')}.log",
    )
    try:
        seconds = server.ready(timeout=600)
    except BaseException:
        server.stop()
        raise
    print(f"{label} ready in {seconds:.1f} s", flush=True)
    try:
        wait_measured(server, MODEL_NAMES)
    except BaseException:
        server.stop()
        raise
    print(f"{label} done measuring after {time.perf_counter() - server.started:.1f} s", flush=True)
    return server


def wait_measured(process: Process, models: list[str], timeout: float = 600) -> None:
    """A first load serves at once and measures runtimes, precisions and batch sizes after it is ready (then
    switches and keeps its decisions): wait until the log says each model that does so has finished (or failed)."""
    assert process.log is not None
    deadline = time.perf_counter() + timeout
    while True:
        text = process.log.read_text(errors="replace")
        pending = [
            m
            for m in models
            if f"model {m}: serving at once" in text
            and not re.search(rf"model {re.escape(m)} version \d+: measur(ed|ing) in the background", text)
        ]
        if not pending:
            return
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{process.url}: still measuring {pending} after {timeout:.0f} s")
        process.check_running()
        time.sleep(0.1)


def record_choice(run: Run, server: Process, label: str, models: list[str]) -> None:
    """What the server chose for each model: runtime (and precision), preferred batch size; and its log's lines
    about the choice."""
    for model in models:
        config = httpx.get(f"{server.url}/v2/models/{model}/config", timeout=10).json()
        parameters = {
            k: v.get("string_value")
            for k, v in config.get("parameters", {}).items()
            if k != "metadata" and v.get("string_value")
        }
        batch = config.get("dynamic_batching", {}).get("preferred_batch_size", ["off"])[0]
        if label == AUTO:
            run.served[model] = parameters.get("precision", "")
        run.chosen.append(
            f"{label}, {model}: backend {config.get('backend')}, "
            + ", ".join(f"{k} {v}" for k, v in parameters.items())
            + f", preferred batch size {batch}"
        )
    if server.log is not None:
        words = ("serving with", "precision", "ready in", "decisions", "per inference")
        for line in server.log.read_text(errors="replace").splitlines():
            if any(w in line for w in words):
                run.chosen.append(f"{label} log: `{line.split(': ', 1)[-1].strip()}`")


def first_answer(process: Process, path: str, body: bytes, workload: Workload, timeout: float = 300) -> float:
    """Seconds from process start to the first correct answer (polling)."""
    payload = workload.payload(path)
    while time.perf_counter() - process.started < timeout:
        process.check_running()
        try:
            response = httpx.post(process.url + path, content=body, headers=payload.headers, timeout=60)
        except httpx.TransportError:
            time.sleep(0.02)
            continue
        if response.status_code == 200:
            problem = payload.check(200, response.headers, response.content)
            if problem:
                raise RuntimeError(f"{process.url}: first answer wrong: {problem}")
            return time.perf_counter() - process.started
        time.sleep(0.02)
    raise TimeoutError(process.url)


def cold_starts(run: Run, model: Path, workload: Workload, repeats: int, settle: float) -> None:
    """Kakehashi with an empty cache folder (a first start), again with that folder (a second start), FastAPI."""
    single = run.work / "start" / "yolo11n.onnx"
    single.parent.mkdir(parents=True, exist_ok=True)
    single.write_bytes(model.read_bytes())
    body = workload.images[0].read_bytes()
    measured: dict[str, list[dict[str, float]]] = {}
    for repeat in range(repeats):
        cache = Path(tempfile.mkdtemp(prefix="start-cache-", dir=run.work))
        for label in ("Kakehashi, first start (empty cache)", "Kakehashi, second start (cache reused)", FASTAPI):
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            log = run.work / f"start-{repeat}-{label.split(',')[-1].strip().split()[0]}.log"
            if label == FASTAPI:
                args = [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "baseline_fastapi:app",
                    "--port",
                    str(port),
                    "--log-level",
                    "warning",
                ]
                process = Process(args, url, {"KAKEHASHI_BASELINE_MODEL": str(single)}, HERE, log)
                path = "/predict"
            else:
                args = [
                    sys.executable,
                    "-m",
                    "kakehashi",
                    "serve",
                    str(single),
                    "--port",
                    str(port),
                    "--grpc-port",
                    str(free_port()),
                ]
                process = Process(args, url, {"KAKEHASHI_CACHE_DIR": str(cache)}, log=log)
                path = "/v1/models/yolo11n/predict"
            try:
                values = {"start": first_answer(process, path, body, workload)}
                if label != FASTAPI:
                    wait_measured(process, ["yolo11n"])  # so the cache holds the decisions, and memory is idle
                time.sleep(settle)  # idle: past the quiet time after which Kakehashi gives memory back
                values["idle RSS"] = process.rss_mb()
                if label != FASTAPI:
                    values |= log_times(log, process.wall)
                measured.setdefault(label, []).append(values)
                print(label, values, flush=True)
            finally:
                process.stop()
    units = {"start": "s", "idle RSS": "MB", "first log line": "s", "models ready": "s", "measured": "s"}
    for label, runs in measured.items():
        for key, unit in units.items():
            found = [values[key] for values in runs if key in values]
            if found:
                run.add(
                    "start",
                    "YOLO11n",
                    label,
                    key,
                    statistics.median(found),
                    unit,
                    runs=len(found),
                    each="; ".join(f"{v:.2f}" if unit == "s" else f"{v:.0f}" for v in found),
                )


def log_times(log: Path, wall: float) -> dict[str, float]:
    """Seconds from the process's start to its log's first line (Python and the imports done, the server starting),
    to `server ready` (every model loaded) and to the end of measuring in the background (from the log's times)."""
    found: dict[str, float] = {}
    for line in log.read_text(errors="replace").splitlines():
        try:
            at = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp() - wall
        except ValueError:
            continue
        found.setdefault("first log line", at)
        if "server ready" in line:
            found.setdefault("models ready", at)
        if "in the background" in line:
            found["measured"] = at
    return found


def make_images(work: Path) -> dict[str, list[Path]]:
    """The JPEG sets: the shared images (<= 741x500), 64x64 thumbnails for the tiny model, and one photo upscaled to
    810x1080 and to 4000x3000 (12 MP)."""
    shared = jpegs(SHARED / "images", work / "jpeg")
    (work / "tiny-jpeg").mkdir()
    tiny = []
    for path in shared:
        tiny.append(work / "tiny-jpeg" / path.name)
        Image.open(path).resize((64, 64), Image.Resampling.BILINEAR).save(tiny[-1], quality=90)
    photo = Image.open(SHARED / "images" / "motorcycle_left.png").convert("RGB")
    sizes = {}
    for label, size in ((SMALL, (810, 1080)), (LARGE, (4000, 3000))):
        sizes[label] = [work / f"{size[0]}x{size[1]}.jpg"]
        photo.resize(size, Image.Resampling.BICUBIC).save(sizes[label][0], quality=90)
    return {"shared": shared, "tiny": tiny, **sizes}


def measure(run: Run) -> None:
    images = make_images(run.work)
    tiny_model = build_tiny(run.work / "tiny.onnx")
    workloads = {
        "YOLO11n": Workload(MODELS["yolo11n"], images["shared"]),
        "YOLO26n": Workload(MODELS["yolo26n"], images["shared"]),
        YOLOX: Workload(MODELS["yolox"], images["shared"], CONFIGS["yolox"], bf16_too=True),
        SMALL: Workload(MODELS["yolo11n"], images[SMALL]),
        LARGE: Workload(MODELS["yolo11n"], images[LARGE]),
        "tiny": Workload(tiny_model, images["tiny"]),
    }
    for label, workload in workloads.items():
        sizes = ", ".join(f"{p.name} {p.stat().st_size / 1e6:.2f} MB" for p in workload.images)
        print(f"{label}: {sizes}", flush=True)
    tiny_infer = tiny_infer_payload(tiny_model)
    batches = (1, 4) if run.quick else (1, 2, 4, 8)

    # (b) the ceilings, with no server running
    for name in DETECTORS:
        run.ceilings(name, workloads[name], batches)
    best_runtime, best_batch = "ONNX Runtime", 1
    found = [r for r in run.rows if r["section"] == "in-process" and r["workload"] == "YOLO11n"]
    if found:
        top = max(found, key=lambda r: r["value"])
        best_runtime, best_batch = top["target"], top["level"]
    for name in (SMALL, LARGE):  # the best YOLO11n loop on one image repeated: what decoding a large JPEG costs
        sessions = 1 if best_runtime in RUNTIMES else os.cpu_count() or 1
        backend = RUNTIMES[best_runtime](MODELS["yolo11n"]) if sessions == 1 else None
        repeated = workloads[name].images
        rate = raw_limit(MODELS["yolo11n"], repeated, best_batch, run.duration, backend, 1.0, instances=sessions)
        run.add("in-process", name, best_runtime, best_batch, rate, "images/s")
        del backend

    # (a) Kakehashi, default settings and ONNX Runtime
    repo = run.work / "repo"
    for name, model in (*MODELS.items(), ("tiny", tiny_model)):
        (repo / name / "1").mkdir(parents=True)
        (repo / name / "1" / "model.onnx").symlink_to(model)
        if name in CONFIG_FILES:
            (repo / name / "model.yaml").symlink_to(CONFIG_FILES[name])
    for label, extra in ((AUTO, []), (ORT, ["--backend", "onnxruntime"])):
        try:
            server = kakehashi_server(run, repo, label, extra)
        except (RuntimeError, TimeoutError) as exc:
            run.failures.append(f"{label} did not start: {exc}")
            print(run.failures[-1], flush=True)
            continue
        try:
            record_choice(run, server, label, MODEL_NAMES)
            speeds: list[dict] = []
            plan = list(DETECTORS.items())
            if label == AUTO:
                plan += [(SMALL, "yolo11n"), (LARGE, "yolo11n")]
            if label == AUTO or not run.quick:
                plan += [("tiny", "tiny")]
            for name, model in plan:
                payload = workloads[name].payload(f"/v1/models/{model}/predict", speeds)
                run.load(server.url, name, f"{label}, image", payload, speeds)
            if label == AUTO or not run.quick:
                run.load(server.url, "tiny", f"{label}, OIP v2 JSON", tiny_infer, None)
        finally:
            server.stop()

    # (c) FastAPI, one model per process (as a user writes it)
    for served, model, plan in (
        ("yolo11n", MODELS["yolo11n"], ["YOLO11n", SMALL, LARGE]),
        ("yolo26n", MODELS["yolo26n"], ["YOLO26n"]),
        ("yolox", MODELS["yolox"], [YOLOX]),
        ("tiny", tiny_model, ["tiny"]),
    ):
        port = free_port()
        env = {"KAKEHASHI_BASELINE_MODEL": str(model)}
        if served in CONFIG_FILES:
            env["KAKEHASHI_BASELINE_CONFIG"] = str(CONFIG_FILES[served])
        process = Process(
            [sys.executable, "-m", "uvicorn", "baseline_fastapi:app", "--port", str(port), "--log-level", "warning"],
            f"http://127.0.0.1:{port}",
            env,
            HERE,
            run.work / f"fastapi-{served}.log",
        )
        try:
            process.ready()
            for name in plan:
                run.load(process.url, name, f"{FASTAPI}, image", workloads[name].payload("/predict"), None)
            if model == tiny_model:
                run.load(process.url, "tiny", f"{FASTAPI}, OIP v2 JSON", tiny_infer, None)
        finally:
            process.stop()

    # (d) the floor: an app doing no work at all, under the same load generator with the tiny model's JPEGs
    port = free_port()
    args = [sys.executable, "-m", "granian", "--interface", "asgi", "--loop", "uvloop", "--port", str(port)]
    process = Process([*args, "empty_app:app"], f"http://127.0.0.1:{port}", None, HERE, run.work / "empty-app.log")
    try:
        process.ready("/")
        bodies = [path.read_bytes() for path in images["tiny"]]
        empty = payloads.Payload("/", bodies, {"content-type": "image/jpeg"}, _answered, "JPEGs to an empty app")
        run.load(process.url, "tiny", EMPTY, empty, None)
    finally:
        process.stop()

    cold_starts(run, MODELS["yolo11n"], workloads[SMALL], 1 if run.quick else 3, 2 * QUIET_SECONDS + 3.0)


def _answered(status: int, headers: Mapping[str, str], body: bytes) -> str | None:
    return None if status == 200 and body == EMPTY_ANSWER else f"HTTP {status}"


# -- the report ---------------------------------------------------------------------------------------------------


def ratios(run: Run) -> list[dict]:
    """The ratios issue 16 asks for, with their goals."""
    out = []

    def ratio(name: str, top: float | None, bottom: float | None, goal: str, test: Callable[[float], bool]) -> None:
        value = top / bottom if top is not None and bottom else float("nan")
        out.append({"ratio": name, "value": round(value, 3), "goal": goal, "met": bool(test(value))})

    for name in DETECTORS:
        best, where = run.best_ceiling(name)
        ratio(
            f"{name}: Kakehashi (auto) image endpoint at c=16 / fastest guarded in-process ({where}, {best:.1f}/s)",
            run.value("server", name, f"{AUTO}, image", 16),
            best,
            ">= 0.9",
            lambda v: v >= 0.9,
        )
    for name in DETECTORS:
        for level in LEVELS:
            ratio(
                f"{name}: Kakehashi on ONNX Runtime / FastAPI, image endpoint, c={level}",
                run.value("server", name, f"{ORT}, image", level),
                run.value("server", name, f"{FASTAPI}, image", level),
                ">= 1.0",
                lambda v: v >= 1.0,
            )
    for endpoint in ("image", "OIP v2 JSON"):
        for label in (AUTO, ORT):
            for level in LEVELS:
                mine = run.value("server", "tiny", f"{label}, {endpoint}", level)
                if mine is not None:
                    ratio(
                        f"tiny model, {endpoint}: {label} / FastAPI, c={level}",
                        mine,
                        run.value("server", "tiny", f"{FASTAPI}, {endpoint}", level),
                        ">= 1.5",
                        lambda v: v >= 1.5,
                    )
    for level in LEVELS:
        ratio(
            f"tiny model, image: {EMPTY} / FastAPI, c={level} (for reference: what no work at all reaches)",
            run.value("server", "tiny", EMPTY, level),
            run.value("server", "tiny", f"{FASTAPI}, image", level),
            "-",
            lambda v: True,
        )
    for label in (AUTO, FASTAPI):
        for level in LEVELS:
            ratio(
                f"12 MP / 810x1080 JPEG (YOLO11n), {label}, c={level}",
                run.value("server", LARGE, f"{label}, image", level),
                run.value("server", SMALL, f"{label}, image", level),
                ">= 0.7",
                lambda v: v >= 0.7,
            )
    for row in run.rows:
        if row["section"] == "in-process" and row["workload"] == LARGE:
            small = run.value("in-process", SMALL, row["target"], row["level"])
            ratio(
                f"12 MP / 810x1080 JPEG (YOLO11n), in-process {row['target']} batch {row['level']} (for reference)",
                row["value"],
                small,
                "-",
                lambda v: True,
            )
    for row in run.rows:
        if row["section"] == "start" and row["level"] in ("start", "idle RSS"):
            limit, unit = (1.5, "s") if row["level"] == "start" else (250.0, "MB")
            name = f"{row['target']}: {'process start -> first correct answer' if unit == 's' else 'idle RSS'}"
            out.append(
                {
                    "ratio": f"{name} ({unit}, median of {row['runs']})",
                    "value": row["value"],
                    "goal": f"<= {limit:g}",
                    "met": row["value"] <= limit,
                }
            )
    return out


def git_state() -> str:
    def git(*words: str) -> str:
        return subprocess.run(["git", *words], capture_output=True, text=True, cwd=HERE).stdout.strip()

    dirty = git("status", "--short", "--", "../src")
    return f"commit {git('rev-parse', '--short', 'HEAD')}" + (
        f", with uncommitted changes in src/ ({len(dirty.splitlines())} files)" if dirty else ""
    )


def report(run: Run, args: argparse.Namespace, started: float) -> None:
    table = ratios(run)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    fields = [
        "section",
        "workload",
        "target",
        "level",
        "value",
        "unit",
        "p50_ms",
        "p99_ms",
        "requests",
        "errors",
        "error_kinds",
        "runs",
        "each",
        "mean_ms",
        "window_s",
    ]
    with (out / "side_by_side.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(run.rows)
        for row in table:
            writer.writerow(
                {
                    "section": "goal",
                    "target": row["ratio"],
                    "level": row["goal"],
                    "value": row["value"],
                    "unit": "met" if row["met"] else "missed",
                }
            )
    minutes = (time.perf_counter() - started) / 60
    errors = sum(r.get("errors", 0) for r in run.rows)
    lines = [
        f"# Side by side: Kakehashi, the in-process ceilings and plain FastAPI "
        f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})",
        "",
        f"One run of `{' '.join(['benchmarks/side_by_side.py', *sys.argv[1:]])}` ({minutes:.1f} minutes) on "
        f"{os.cpu_count()} cores, no GPU, {git_state()}; {run.warmup:g} s warm-up and a {run.duration:g} s window "
        f"per step, the load generator (`kakehashi bench`'s, closed loop) on the same cores as the server. **The "
        f"machine was shared with other engineers' test runs while this ran, so the numbers are noisy**: compare "
        f"within this run; the lead re-runs it on a quiet machine. Every answer was checked against the in-process "
        f"answer for its image or tensor: {errors} wrong or failed answers in all.",
        "",
        "Models: `../shared/models/yolo11n-coco-random-640-dynamic.onnx`, `yolo26n-coco-random-640-e2e-dynamic.onnx` "
        "(random weights: real compute, no detections: the guard refuses a precision it cannot judge), the bundled "
        "COCO detector YOLOX-Nano (416, real weights, its model.yaml), the tiny model (`tiny_model.py`, 1x3x64x64 -> "
        "8 values; served as a classifier on the image endpoint, 64x64 JPEGs). Images: `../shared/images` as JPEG "
        "(741x500 at most), and `motorcycle_left.png` upscaled to 810x1080 and to 4000x3000 (12 MP).",
        "",
        "## The goals",
        "",
        "| ratio | value | goal | met |",
        "|---|---|---|---|",
        *[f"| {r['ratio']} | {r['value']:.2f} | {r['goal']} | {'yes' if r['met'] else '**no**'} |" for r in table],
        "",
        "## What Kakehashi chose",
        "",
        *[f"- {line}" for line in run.chosen],
        "",
        "## Servers (requests/s, closed loop; one image or one tensor per request)",
        "",
        "| workload | server, endpoint | c=1 req/s | c=1 p50 ms | c=16 req/s | c=16 p50 / p99 ms | wrong or failed |",
        "|---|---|---|---|---|---|---|",
    ]
    servers = [r for r in run.rows if r["section"] == "server"]
    for workload, target in dict.fromkeys((r["workload"], r["target"]) for r in servers):
        one, many = (
            {r["level"]: r for r in servers if (r["workload"], r["target"]) == (workload, target)}.get(level)
            for level in LEVELS
        )
        bad = sum(r["errors"] for r in (one, many) if r) or 0
        kinds = "; ".join(r["error_kinds"] for r in (one, many) if r and r["error_kinds"])
        lines.append(
            f"| {workload} | {target} | {one['value']:.1f} | {one['p50_ms']:.1f} | {many['value']:.1f} | "
            f"{many['p50_ms']:.1f} / {many['p99_ms']:.1f} | {bad}{f' ({kinds})' if kinds else ''} |"
            if one and many
            else f"| {workload} | {target} | incomplete | | | | |"
        )
    lines += [
        "",
        "## In-process ceilings (images/s; decode + letterbox, inference, post-processing in a plain loop)",
        "",
        "| workload | runtime | " + " | ".join(f"batch {b}" for b in (1, 2, 4, 8)) + " | best |",
        "|---|---|---|---|---|---|---|",
    ]
    inproc = [r for r in run.rows if r["section"] == "in-process"]
    for workload, target in dict.fromkeys((r["workload"], r["target"]) for r in inproc):
        values = {r["level"]: r["value"] for r in inproc if (r["workload"], r["target"]) == (workload, target)}
        cells = " | ".join(f"{values[b]:.1f}" if b in values else "" for b in (1, 2, 4, 8))
        lines.append(f"| {workload} | {target} | {cells} | {max(values.values()):.1f} |")
    lines += [
        *[f"- {text}" for text in run.failures if text.startswith("in-process")],
        "",
        "## Where Kakehashi's time goes (the mean of its answers' `speed` in the window, ms per image; inference is "
        "the whole batch's)",
        "",
        "| workload | server | c | mean latency (client) | preprocess | queue | inference | postprocess | the rest "
        "(HTTP, JSON, event loop, waiting for a pool thread, client) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (workload, target, level), speeds in run.speeds.items():
        means = {k: statistics.fmean(s.get(k, 0.0) for s in speeds) for k in SPEED_KEYS}
        mean = next(
            r["mean_ms"] for r in servers if (r["workload"], r["target"], r["level"]) == (workload, target, level)
        )
        lines.append(
            f"| {workload} | {target.removesuffix(', image')} | {level} | {mean:.1f} | "
            + " | ".join(f"{means[k]:.1f}" for k in SPEED_KEYS)
            + f" | {mean - sum(means.values()):.1f} |"
        )
    lines += [
        "",
        "## Start and memory (YOLO11n, `serve yolo11n.onnx` with the default settings; median)",
        "",
        "| server | process start -> first correct answer (s) | idle RSS after it (MB) | each run (s) | to its first "
        "log line: Python, imports (s) | to `server ready`: models loaded (s) | to the end of measuring in the "
        "background (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    starts = [r for r in run.rows if r["section"] == "start"]
    for target in dict.fromkeys(r["target"] for r in starts):
        start = next(r for r in starts if r["target"] == target and r["level"] == "start")
        rss = next(r for r in starts if r["target"] == target and r["level"] == "idle RSS")
        split = [
            next((f"{r['value']:.2f}" for r in starts if (r["target"], r["level"]) == (target, key)), "")
            for key in ("first log line", "models ready", "measured")
        ]
        lines.append(
            f"| {target} | {start['value']:.2f} | {rss['value']:.0f} | {start['each']} | " + " | ".join(split) + " |"
        )
    lines += [
        "",
        "## Reading it",
        "",
        "- c=16 is a closed loop with 16 requests in flight. Kakehashi queues them and batches (the `queue` column "
        "above); FastAPI's thread pool runs up to 16 inferences at once on the same cores. Above c=1 each step's "
        "warm-up and window stretch to one and two rounds of 16 requests at the c=1 rate (`window_s` in the CSV).",
        "- The in-process ceilings run with no server up and no load generator; the servers share the cores with the "
        "load generator. On a shared machine a server with more runnable threads (FastAPI at c=16) also takes more "
        "of the CPU from the other processes than one running one inference at a time, which flatters it.",
        "- The 810x1080 and 12 MP in-process rows repeat their one image through the fastest YOLO11n loop.",
    ]
    if run.failures:
        lines += ["", "## Failures", "", *[f"- {text}" for text in run.failures]]
    (out / "side_by_side.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--quick", action="store_true", help="Smoke run: 1 s windows, fewer steps (not a result).")
    parser.add_argument("--warmup", type=float, help="Seconds of warm-up per step (default 2, --quick 0.5).")
    parser.add_argument("--duration", type=float, help="Seconds measured per step (default 6, --quick 1).")
    args = parser.parse_args()
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="kakehashi-side-"))
    run = Run(
        args.quick,
        args.warmup if args.warmup is not None else (0.5 if args.quick else 2.0),
        args.duration if args.duration is not None else (1.0 if args.quick else 6.0),
        work,
        (3.0, 5.0) if args.quick else (20.0, 30.0),
    )
    print(f"working in {work}", flush=True)
    measure(run)
    report(run, args, started)


if __name__ == "__main__":
    main()

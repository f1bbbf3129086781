"""Runtimes: OpenVINO beside ONNX Runtime with the same answers, `auto` measuring both at load, ONNX Runtime
execution providers with a logged fallback, and the runtime in use shown in the model configuration."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from conftest import IMAGES, MODELS, YOLO11
from inprocess import load, predict
from kakehashi import backends
from kakehashi.backends import best_seconds, occupied_seconds
from kakehashi.backends.onnxruntime import OnnxRuntimeBackend
from kakehashi.backends.openvino import OpenVinoBackend
from kakehashi.backends.registry import RUNTIMES, Runtime, RuntimeOptions, runtime_choices
from kakehashi.memory import trim
from kakehashi.repository import measuring
from kakehashi.settings import coco_model_path, default_model_path
from kakehashi.tasks.preprocess import ImageInput
from kakehashi.tasks.registry import TASK_KINDS, ModelFacts, TaskKind
from onnx_builders import identity_model, tiny_model

BUNDLED = default_model_path() / "ssdlite-person"
NO_BATCHING = "batching: {max_batch_size: 1}\n"  # no batch sizes timed at load, where batching is not the point


def _copy(tmp_path: Path, yaml: str, source: Path = BUNDLED) -> Path:
    folder = tmp_path / source.name
    shutil.copytree(source, folder)
    (folder / "model.yaml").write_text((source / "model.yaml").read_text() + yaml)
    return folder


# a threshold per photo under which the person detector finds something (the cat and the coffee cup only with
# tiny scores), clear of the nearest score, and how many it finds: comparing two empty answers proves nothing
@pytest.mark.parametrize(
    "image, conf, found", [("astronaut.png", 0.05, 4), ("coffee.png", 0.0044, 1), ("chelsea.png", 0.012, 2)]
)
def test_openvino_answers_like_onnx_runtime(tmp_path, image, conf, found):
    data = (IMAGES / image).read_bytes()
    answers = {}
    for backend in ("onnxruntime", "openvino"):
        # both at f32: where the CPU computes in bf16, `precision: auto` may serve OpenVINO in it
        handle = load(_copy(tmp_path / backend, f"\nbackend: {backend}\nprecision: f32\n{NO_BATCHING}"))
        assert handle.backend.platform == ("openvino" if backend == "openvino" else "onnxruntime_onnx")
        answers[backend] = predict(handle, data, conf=conf)[0].results
    ours, theirs = answers["onnxruntime"], answers["openvino"]
    assert len(ours) == len(theirs) == found
    for a, b in zip(ours, theirs):
        assert a["class"] == b["class"] and abs(a["confidence"] - b["confidence"]) < 1e-3
        assert max(abs(a["box"][k] - b["box"][k]) for k in a["box"]) <= 1.0


def test_auto_measures_both_and_says_which_runs(tmp_path, caplog, monkeypatch):
    monkeypatch.setenv("KAKEHASHI_CACHE_DIR", "")  # measured at this load, not recalled from an earlier one
    folder = tmp_path / "yolo11" / "1"
    folder.mkdir(parents=True)
    shutil.copy(YOLO11, folder / "model.onnx")
    (tmp_path / "yolo11" / "model.yaml").write_text(NO_BATCHING)
    with caplog.at_level(logging.INFO):
        handle = load(tmp_path / "yolo11")
    timed = r"onnxruntime f32 [0-9.]+ ms, openvino f32 [0-9.]+ ms"
    if "bf16" in RUNTIMES["openvino"].precisions():  # and bf16 too, where this CPU computes in it
        timed += r", openvino bf16 [0-9.]+ ms"
    assert any(re.search(timed + " per inference", r.message) for r in caplog.records)
    serving = [r.message for r in caplog.records if ": serving " in r.message]
    assert serving and serving[0].endswith(f"serving {handle.backend.platform.removesuffix('_onnx')} f32")
    assert handle.runtime.split()[0] in ("onnxruntime", "openvino")


@pytest.mark.parametrize(("openvino_ms", "served"), [(19.0, "onnxruntime"), (16.0, "openvino")])
def test_auto_switches_runtime_only_for_a_clear_gain(tmp_path, monkeypatch, openvino_ms, served):
    """ONNX Runtime (the reference) timed at 20 ms: OpenVINO at 19 ms is within the timings' noise and does not
    take its place (a second runtime costs memory); at 16 ms it does."""
    cost = {"onnxruntime f32": 0.020, "openvino f32": openvino_ms / 1000}
    monkeypatch.setattr(backends, "_seconds_of", lambda choice, instances, feeds: cost.get(str(choice), 0.05))
    monkeypatch.setenv("KAKEHASHI_CACHE_DIR", "")  # measured at this load
    tiny_model(tmp_path / "tiny" / "1" / "model.onnx")
    (tmp_path / "tiny" / "model.yaml").write_text("task: tensor\n" + NO_BATCHING)
    handle = load(tmp_path / "tiny")
    assert handle.ready, handle.reason
    assert handle.choice == backends.Choice(served, "f32")


def test_openvino_refuses_what_it_cannot_serve_and_auto_falls_back(tmp_path):
    identity_model(tmp_path / "strict" / "1" / "model.onnx", ["BYTES", "FP32"])
    (tmp_path / "strict" / "model.yaml").write_text("backend: openvino\ntask: tensor\n")
    handle = load(tmp_path / "strict")
    assert not handle.ready and "OpenVINO" in handle.reason
    identity_model(tmp_path / "auto" / "1" / "model.onnx", ["BYTES", "FP32"])
    (tmp_path / "auto" / "model.yaml").write_text("task: tensor\n")
    assert load(tmp_path / "auto").runtime == "onnxruntime CPUExecutionProvider"


def test_asking_for_cuda_falls_back_to_cpu_and_says_so(tmp_path, caplog):
    folder = _copy(tmp_path, "\nbackend: onnxruntime\nproviders: [tensorrt, cuda, cpu]\n" + NO_BATCHING)
    with caplog.at_level(logging.WARNING):
        handle = load(folder)
    assert handle.ready and handle.runtime == "onnxruntime CPUExecutionProvider"
    warning = " ".join(r.message for r in caplog.records)
    assert "TensorrtExecutionProvider, CUDAExecutionProvider are not available" in warning
    assert "falling back to CPUExecutionProvider" in warning
    from kakehashi.protocols.triton_config import model_config

    config = model_config(handle)
    assert config["backend"] == "onnxruntime"
    assert config["parameters"]["runtime"]["string_value"] == "onnxruntime CPUExecutionProvider"


def test_provider_names_are_checked(tmp_path):
    from kakehashi.errors import Unavailable

    with pytest.raises(Unavailable, match="key 'providers': expected an execution provider .* got \\['warp-drive'\\]"):
        load(_copy(tmp_path, "\nproviders: [warp-drive]\n"))


def test_serve_backend_flag(serve):
    server = serve(None, "--backend", "openvino")
    config = server.client.get("/v2/models/ssdlite-person/config").json()
    assert config["backend"] == "openvino" and config["parameters"]["runtime"]["string_value"].startswith(
        "openvino CPU"
    )
    response = server.client.post(
        "/v1/models/ssdlite-person/predict",
        content=(IMAGES / "astronaut.png").read_bytes(),
        headers={"content-type": "image/png"},
    )
    assert response.json()["images"][0]["results"][0]["name"] == "person"


def test_serve_providers_flag_falls_back_and_says_so(serve):
    server = serve(None, "--backend", "onnxruntime", "--providers", "cuda,cpu")
    runtime = server.client.get("/v2/models/ssdlite-person/config").json()["parameters"]["runtime"]["string_value"]
    assert runtime == "onnxruntime CPUExecutionProvider"
    assert (
        "CUDAExecutionProvider are not available" in server.log()
        and "falling back to CPUExecutionProvider" in server.log()
    )


@pytest.mark.parametrize(
    "export", ["yolo11n-coco-random-640-dynamic", "yolo11n-seg-random-640-dynamic", "yolo11n-pose-random-640-dynamic"]
)
def test_openvino_raw_outputs_match_onnx_runtime_on_yolo_exports(tmp_path, export):
    """On the same pre-processed photo (0-1 floats, as served), OpenVINO's raw head outputs match ONNX Runtime's:
    box channels within 1 px, scores and mask/keypoint channels within 1e-3 of their scale. (Decoded detections
    are not compared: the random weights give every anchor the same score, so which of the tied boxes wins is
    arbitrary in both runtimes; the real person detector is compared end to end above.)"""
    import numpy as np

    from kakehashi.tasks.image_task import prepare_image
    from kakehashi.tasks.params import PredictParams

    outputs = {}
    for backend in ("onnxruntime", "openvino"):
        (tmp_path / backend / "m" / "1").mkdir(parents=True)
        shutil.copy(MODELS / f"{export}.onnx", tmp_path / backend / "m" / "1" / "model.onnx")
        (tmp_path / backend / "m" / "model.yaml").write_text(f"backend: {backend}\n{NO_BATCHING}")
        handle = load(tmp_path / backend, "m")
        assert handle.backend.platform.startswith(backend)
        spec = handle.task.input
        tensor = prepare_image((IMAGES / "astronaut.png").read_bytes(), spec, PredictParams(), 10**8).tensor
        outputs[backend] = handle.backend.run({spec.name: tensor[None]})
    for name, ours in outputs["onnxruntime"].items():
        theirs = outputs["openvino"][name]
        assert ours.shape == theirs.shape
        if ours.ndim == 3:  # the head [1, 4 + classes + extra, anchors]: boxes in input pixels first
            assert np.abs(ours[:, :4] - theirs[:, :4]).max() <= 1.0
            rest = np.abs(ours[:, 4:] - theirs[:, 4:]).max()
            assert rest <= 1e-3 * max(1.0, np.abs(ours[:, 4:]).max())
        else:  # mask prototypes
            assert np.abs(ours - theirs).max() <= 1e-3 * max(1.0, np.abs(ours).max())


def test_edge_profile_overrides_the_model_for_a_small_device(serve, tmp_path):
    import tritonclient.grpc as triton_grpc
    from tritonclient.utils import InferenceServerException

    folder = _copy(tmp_path, "\ninstances: 2\nbackend: openvino\nbatching: {max_batch_size: 8}\n")
    server = serve(folder.parent, "--edge")
    config = server.client.get(f"/v2/models/{folder.name}/config").json()
    assert config["max_batch_size"] == 0 and "dynamic_batching" not in config  # no batching, no waiting
    assert config["instance_group"][0]["count"] == 1  # one instance, one inference at a time
    assert config["parameters"]["runtime"]["string_value"] == "onnxruntime CPUExecutionProvider"
    response = server.client.post(
        f"/v1/models/{folder.name}/predict",
        content=(IMAGES / "astronaut.png").read_bytes(),
        headers={"content-type": "image/png"},
    )
    assert response.status_code == 200 and response.json()["images"][0]["results"][0]["name"] == "person"
    with triton_grpc.InferenceServerClient(server.grpc_address) as client:  # no gRPC server on a small device
        with pytest.raises(InferenceServerException) as refused:
            client.is_server_live(client_timeout=10)
    assert refused.value.status() == "StatusCode.UNAVAILABLE", refused.value


class _RenamedBackend(OnnxRuntimeBackend):
    """ONNX Runtime under another platform name: a runtime that only these tests register."""

    platform = "renamed_onnx"


def _register_renamed(monkeypatch) -> list[RuntimeOptions]:
    """Register the `renamed` runtime for one test; returns the options it is asked to create instances with."""
    asked: list[RuntimeOptions] = []

    def create(path: Path, options: RuntimeOptions) -> list:
        asked.append(options)
        return [
            _RenamedBackend(path, options.providers, options.threads_per_instance)
            for _ in range(options.instances or 1)
        ]

    monkeypatch.setitem(RUNTIMES, "renamed", Runtime("renamed", _RenamedBackend.platform, create))
    return asked


def test_a_registered_runtime_is_chosen_by_name_and_timed_by_auto(tmp_path, caplog, monkeypatch):
    """One registration, no switch edited: `model.yaml` accepts the runtime, the load creates it, `auto` times it."""
    asked = _register_renamed(monkeypatch)
    tiny_model(tmp_path / "chosen" / "1" / "model.onnx")
    (tmp_path / "chosen" / "model.yaml").write_text("backend: renamed\ninstances: 2\ntask: tensor\n" + NO_BATCHING)
    handle = load(tmp_path / "chosen")
    assert handle.ready, handle.reason
    assert handle.runtime == "renamed CPUExecutionProvider" and [each.instances for each in asked] == [2]
    monkeypatch.setenv("KAKEHASHI_CACHE_DIR", "")  # measured at this load, not recalled from an earlier one
    tiny_model(tmp_path / "auto" / "1" / "model.onnx")
    (tmp_path / "auto" / "model.yaml").write_text("task: tensor\n" + NO_BATCHING)
    with caplog.at_level(logging.INFO):
        assert load(tmp_path / "auto").ready
    [measured] = [r.message for r in caplog.records if "per inference" in r.message]
    assert re.search(r"onnxruntime f32 [0-9.]+ ms, .*renamed f32 [0-9.]+ ms per inference", measured), measured


def test_unknown_runtimes_are_refused_with_the_registered_ones(tmp_path):
    from kakehashi.errors import Unavailable

    with pytest.raises(Unavailable, match="key 'backend': expected one of auto, onnxruntime, openvino, got 'tpu'"):
        load(_copy(tmp_path, "\nbackend: tpu\n"))


def test_serve_offers_the_registered_runtimes():
    from kakehashi.cli import main

    [option] = [param for param in main.commands["serve"].params if param.name == "backend"]
    assert tuple(option.type.choices) == runtime_choices() == ("auto", "onnxruntime", "openvino")


def test_backends_and_tasks_do_not_import_the_repository_layer():
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, kakehashi.backends, kakehashi.tasks.resolve; print(*sorted(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert "kakehashi.backends.openvino" in loaded and "kakehashi.tasks.segment" in loaded
    assert not [name for name in loaded if name.startswith("kakehashi.repository")]


@dataclass(frozen=True)
class _MeanTask:
    """A task only these tests register: each image's answer is the mean of the model's output."""

    input: ImageInput
    output: str
    names: tuple[str, ...] = ()
    kind: str = "mean"

    def postprocess(self, outputs: dict, prepared, params) -> list[dict]:
        return [{"mean": float(outputs[self.output].mean()), "size": list(prepared.size)}]


def test_a_registered_task_is_chosen_by_name_and_serves_images(tmp_path, monkeypatch):
    """One registration, no switch edited: `model.yaml` accepts the task, the load builds it, images are served."""
    built: list[ModelFacts] = []

    def build(facts: ModelFacts) -> _MeanTask:
        built.append(facts)
        return _MeanTask(facts.image_input, facts.backend.outputs[0].name)

    monkeypatch.setitem(TASK_KINDS, "mean", TaskKind("mean", build, default_resize="stretch"))
    # any precision but f32 timed faster: `auto` checks it, by the raw outputs (the task's answers are its own)
    monkeypatch.setattr(
        backends, "_seconds_of", lambda choice, instances, feeds: 0.02 - 0.01 * (choice.precision != "f32")
    )
    monkeypatch.setenv("KAKEHASHI_CACHE_DIR", "")  # measured at this load
    tiny_model(tmp_path / "averager" / "1" / "model.onnx")  # y = 2x + 1 on [batch, 3, 64, 64]
    (tmp_path / "averager" / "model.yaml").write_text("task: mean\nnames: [grey]\ninput: {scale: 0.0}\n" + NO_BATCHING)
    handle = load(tmp_path / "averager")
    assert handle.ready, handle.reason
    assert handle.choice.precision == "f32" or "agrees with f32" in handle.precision, handle.precision
    assert handle.kind == "mean" and built[0].names == ("grey",) and handle.task.input.resize == "stretch"
    [answer] = predict(handle, (IMAGES / "astronaut.png").read_bytes())
    assert answer.results == [{"mean": 1.0, "size": [64, 64]}]  # scale 0: every input value is 0, so 2 * 0 + 1


def test_an_openvino_compile_error_says_what_is_wrong_not_where_in_openvino(tmp_path):
    """OpenVINO's messages start with its source location ("Exception from src/...cpp:132:"): the reason a user
    sees is the line that names the problem."""
    (tmp_path / "pose" / "1").mkdir(parents=True)
    shutil.copy(MODELS / "yolo26n-pose-random-640-e2e-dynamic.onnx", tmp_path / "pose" / "1" / "model.onnx")
    (tmp_path / "pose" / "model.yaml").write_text("backend: openvino\n")
    handle = load(tmp_path / "pose")
    assert not handle.ready and "OpenVINO cannot compile this model: Shapes" in handle.reason
    assert "Exception from" not in handle.reason


def test_openvino_starts_no_process_and_sends_no_telemetry(tmp_path):
    """`import openvino` forks a process to post usage telemetry; a server must neither fork (its gRPC and runtime
    threads) nor phone home. Loading and running a model through the OpenVINO backend forks nothing."""
    model = tiny_model(tmp_path / "tiny.onnx")
    script = f"""
import sys
forks = []
sys.addaudithook(lambda event, args: forks.append(event) if event in ("os.fork", "os.posix_spawn") else None)
import numpy as np
from pathlib import Path
from kakehashi.backends.openvino import OpenVinoBackend
backend = OpenVinoBackend(Path({str(model)!r}))
backend.run({{spec.name: np.zeros([d if isinstance(d, int) and d > 0 else 1 for d in spec.shape], np.float32)
             for spec in backend.inputs}})
import openvino
print(forks, sys.modules.get("openvino_telemetry"))
"""
    answer = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert answer.returncode == 0, answer.stderr
    assert answer.stdout.split() == ["[]", "None"], answer.stdout


def _resident_mb() -> float:
    trim()  # what the process freed goes back first: only memory still held counts
    return int(Path("/proc/self/status").read_text().split("VmRSS:")[1].split()[0]) / 1024


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_a_runtime_gives_back_the_memory_a_large_batch_took_and_answers_the_same_after(runtime):
    model = coco_model_path() / "1" / "model.onnx"
    [backend] = RUNTIMES[runtime].create(model, RuntimeOptions(instances=1))
    name, row = backend.inputs[0].name, backend.inputs[0].shape[1:]
    image = {name: np.random.default_rng(0).random((1, *row), dtype=np.float32)}
    before = backend.run(image)
    settled = _resident_mb()
    backend.run({name: np.zeros((8, *row), np.float32)})  # activations for eight images stay for the next run
    grown = _resident_mb()
    backend.release_memory({name: np.zeros((1, *row), np.float32)})
    released = _resident_mb()
    assert grown - settled > 30, f"a batch of 8 took only {grown - settled:.0f} MB"
    assert grown - released > (grown - settled) / 2, (
        f"{runtime}: {settled:.0f} MB, {grown:.0f} MB after a batch of 8, {released:.0f} MB after giving back"
    )
    after = backend.run(image)
    assert all(np.array_equal(before[output], after[output]) for output in before)


def test_openvino_compiles_into_its_cache_folder_one_process_at_a_time(tmp_path):
    # OpenVINO writes a compiled model in place and maps it to import it: a process importing while another writes
    # the same file dies of SIGBUS. Here another process holds the folder's lock; the load waits until it lets go.
    started = time.perf_counter()
    OpenVinoBackend(BUNDLED / "1" / "model.onnx", cache_folder=tmp_path / "unlocked")
    compile_seconds = time.perf_counter() - started  # what the load takes when nothing holds the lock
    cache = tmp_path / "cache"
    (cache / "openvino").mkdir(parents=True)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, sys; f = open(sys.argv[1], 'a'); fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True);"
            " sys.stdin.read()",
            str(cache / "openvino" / ".lock"),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdin is not None and holder.stdout is not None
    try:
        assert holder.stdout.readline() == "held\n"
        loaded: list[OpenVinoBackend] = []
        loading = threading.Thread(
            target=lambda: loaded.append(OpenVinoBackend(BUNDLED / "1" / "model.onnx", cache_folder=cache)),
            daemon=True,  # a load stuck for good must not keep pytest from exiting
        )
        loading.start()
        loading.join(max(3.0, 5 * compile_seconds))  # well past an unlocked load's time
        assert loading.is_alive() and not loaded and not list((cache / "openvino").glob("*.blob"))
    finally:
        holder.stdin.close()  # the holder exits and its lock goes with it
        holder.wait(10)
    loading.join(60)
    assert loaded and list((cache / "openvino").glob("*.blob"))  # compiled, and kept for the next load


class _Sleeper:
    """An instance whose inference takes `seconds`, taking `concurrent_runs` at once; with a `lock`, one inference
    at a time on the whole group."""

    def __init__(self, seconds: float, lock: threading.Lock | None = None, concurrent_runs: int = 1) -> None:
        self.seconds, self.lock, self.concurrent_runs, self.solo = seconds, lock, concurrent_runs, False

    def run(self, feeds: dict) -> dict:
        with self.lock or contextlib.nullcontext():
            time.sleep(self.seconds)
        return {}


def test_runtimes_are_timed_with_every_instance_busy():
    # one OpenVINO model spreading each inference over the cores (its infer requests wait for each other) against
    # two single-thread sessions side by side: alone the first is faster, serving a full queue the second
    spread = _Sleeper(0.04, threading.Lock(), concurrent_runs=2)
    side_by_side = [_Sleeper(0.06), _Sleeper(0.06)]
    assert best_seconds(spread, {}) < best_seconds(side_by_side[0], {})
    assert occupied_seconds(side_by_side, {}) < 0.04 <= occupied_seconds([spread, spread], {})
    # and one session taking two runs at once (listed once) is timed with both runs going
    assert occupied_seconds([_Sleeper(0.06, concurrent_runs=2)], {}) < 0.04


def _timings_beside_decoding(monkeypatch) -> tuple[list[bool], list[bool]]:
    """Record, for each runtime timing and each batch size timing at load, whether images were being decoded
    meanwhile (a decode finished during it, and the deciding thread was still running when it ended)."""
    decoded: list[int] = []
    decode = measuring.decode_image
    monkeypatch.setattr(measuring, "decode_image", lambda data: decoded.append(1) or decode(data))

    def decoding_meanwhile() -> bool:
        before, deadline = len(decoded), time.monotonic() + 5
        while len(decoded) == before and time.monotonic() < deadline:
            time.sleep(0.002)
        alive = any(thread.name == "measuring-other-work" for thread in threading.enumerate())
        return len(decoded) > before and alive

    choices_timed: list[bool] = []
    sizes_timed: list[bool] = []
    monkeypatch.setattr(
        backends, "_seconds_of", lambda choice, instances, feeds: choices_timed.append(decoding_meanwhile()) or 0.02
    )
    occupied = measuring.occupied_seconds
    monkeypatch.setattr(
        measuring, "occupied_seconds", lambda *args: sizes_timed.append(decoding_meanwhile()) or occupied(*args)
    )
    monkeypatch.setenv("KAKEHASHI_CACHE_DIR", "")  # measured at this load
    return choices_timed, sizes_timed


def _batching_tiny_model(tmp_path: Path) -> Path:
    tiny_model(tmp_path / "tiny" / "1" / "model.onnx")
    (tmp_path / "tiny" / "model.yaml").write_text("task: tensor\nbatching: {max_batch_size: 4}\n")
    return tmp_path / "tiny"


def test_runtimes_and_batch_sizes_are_timed_beside_other_work(tmp_path, monkeypatch):
    """A server busy with requests decodes images while it infers (and a runtime spreading each inference over the
    cores suffers from it more than single-thread sessions): every timing at load runs while a thread decodes
    images, and that thread ends with the timings."""
    choices_timed, sizes_timed = _timings_beside_decoding(monkeypatch)
    handle = load(_batching_tiny_model(tmp_path))
    assert handle.ready, handle.reason
    assert choices_timed and all(choices_timed)
    assert sizes_timed and all(sizes_timed)
    assert "measuring-other-work" not in [thread.name for thread in threading.enumerate()]


def test_without_images_to_decode_the_timings_run_alone_and_the_log_says_so(tmp_path, monkeypatch, caplog):
    decoded: list[int] = []
    monkeypatch.setattr(measuring, "decode_image", lambda data: decoded.append(1))
    monkeypatch.setattr(measuring, "shipped_calibration_folder", lambda: tmp_path / "none here")
    monkeypatch.setattr(backends, "_seconds_of", lambda choice, instances, feeds: 0.02)
    monkeypatch.setenv("KAKEHASHI_CACHE_DIR", "")  # measured at this load
    with caplog.at_level(logging.WARNING):
        handle = load(_batching_tiny_model(tmp_path))
    assert handle.ready, handle.reason
    assert not decoded
    assert any("no images in" in r.message and "nothing beside" in r.message for r in caplog.records)


def test_onnxruntime_lays_out_a_session_for_a_request_alone_and_single_thread_ones_for_a_queue(tmp_path, monkeypatch):
    path = tiny_model(tmp_path / "model.onnx")

    def layout(cores: int, options: RuntimeOptions) -> list[tuple[bool, int, int]]:
        """(solo, runs at once, threads) of each session made on a machine of `cores` cores."""
        monkeypatch.setattr(os, "cpu_count", lambda: cores)
        made = RUNTIMES["onnxruntime"].create(path, options)
        return [(b.solo, b.concurrent_runs, b._session.get_session_options().intra_op_num_threads) for b in made]

    # left to the runtime: every core's threads for a request alone, two sessions sharing the cores for a queue
    assert layout(2, RuntimeOptions()) == [(True, 1, 2), (False, 1, 1), (False, 1, 1)]
    assert layout(8, RuntimeOptions()) == [(True, 1, 8), (False, 1, 4), (False, 1, 4)]
    assert layout(3, RuntimeOptions()) == [(True, 1, 3), (False, 1, 2), (False, 1, 1)]  # every core serves the queue
    # a configuration that names instances, threads or runs gets exactly that, and nothing solo
    assert layout(2, RuntimeOptions(instances=2, threads_per_instance=1)) == [(False, 2, 1)] * 2
    assert layout(2, RuntimeOptions(threads=2, threads_per_instance=2)) == [(False, 2, 2)]
    assert layout(1, RuntimeOptions()) == [(False, 1, 0)]  # one core: one session
    # sessions on a GPU: one, as asked (the cores are not what they share)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    gpu = RuntimeOptions(providers=("CUDAExecutionProvider", "CPUExecutionProvider"))
    assert [(b.solo, b.concurrent_runs) for b in RUNTIMES["onnxruntime"].create(path, gpu)] == [(False, 2)]
    # only the solo session's threads spin between operators, and no session's after its runs end
    made = RUNTIMES["onnxruntime"].create(path, RuntimeOptions())
    entries = [b._session.get_session_options().get_session_config_entry for b in made]
    assert [entry("session.intra_op.allow_spinning") for entry in entries] == ["1", "0", "0"]
    assert entries[0]("session.force_spinning_stop") == "1"


@pytest.mark.parametrize(
    ("layout", "runs"),
    [("", 3), ("instances: 2\nruns_per_instance: 2\n", 4), ("instances: 1\nruns_per_instance: 1\n", 1)],
)
def test_triton_config_counts_every_run_the_model_takes_at_once(tmp_path, monkeypatch, layout, runs):
    """`instance_group.count`: two cores, ONNX Runtime's own layout (a solo session and two for a queue) or the
    one `model.yaml` names."""
    from kakehashi.protocols.triton_config import model_config

    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    tiny_model(tmp_path / "tiny" / "1" / "model.onnx")
    (tmp_path / "tiny" / "model.yaml").write_text("backend: onnxruntime\ntask: tensor\n" + NO_BATCHING + layout)
    handle = load(tmp_path / "tiny")
    assert handle.ready, handle.reason
    assert model_config(handle)["instance_group"][0]["count"] == runs


def test_a_cache_folder_that_cannot_be_used_leaves_openvino_compiling_every_time(tmp_path, caplog):
    in_the_way = tmp_path / "cache"
    in_the_way.write_text("a file where the folder would go")
    with caplog.at_level(logging.WARNING):
        backend = OpenVinoBackend(BUNDLED / "1" / "model.onnx", cache_folder=in_the_way)
    assert f"OpenVINO keeps no compiled models in {in_the_way / 'openvino'}" in caplog.text
    outputs = backend.run({spec.name: np.zeros((1, 300, 300, 3), np.uint8) for spec in backend.inputs})
    assert outputs and all(value.shape[0] == 1 for value in outputs.values())

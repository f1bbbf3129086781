"""`model.yaml`: every key optional; unknown keys and bad values are load errors naming file and key."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator

from kakehashi.errors import ModelLoadError
from kakehashi.repository.config import ModelConfig, ServerDefaults, VersionPolicy, edge_profile, load_model_config
from kakehashi.repository.yaml_file import load_yaml_file


def write(tmp_path, text: str):
    path = tmp_path / "model.yaml"
    path.write_text(text)
    return path


def test_missing_file_is_all_defaults(tmp_path):
    assert load_model_config(tmp_path / "model.yaml") == ModelConfig()


def test_full_file(tmp_path):
    (tmp_path / "names.txt").write_text("cat\ndog\n")
    config = load_model_config(
        write(
            tmp_path,
            """
task: detect
head: yolox
names: names.txt
input: {size: 416, channels: bgr, scale: 1.0, resize: stretch, layout: nchw, dtype: float16}
defaults: {conf: 0.4, iou: 0.5, max_det: 10}
version_policy: {specific: [1, 3]}
batching: {max_batch_size: 4, preferred_batch_size: 2, max_queue_delay_ms: 1.5, max_queue_size: 10, timeout_ms: 250}
instances: 2
threads: 1
warmup: false
providers: [CPUExecutionProvider]
""",
        )
    )
    assert config.names == ("cat", "dog") and config.head == "yolox"
    assert config.input.size == (416, 416) and config.input.channels == "bgr" and config.input.scale == 1.0
    assert config.defaults.conf == 0.4 and config.defaults.max_det == 10
    assert config.version_policy.select([1, 2, 3, 4]) == [1, 3]
    assert config.warmup is False
    assert (config.batching.max_batch_size, config.batching.preferred_batch_size) == (4, 2)
    assert (config.batching.max_queue_delay_ms, config.batching.max_queue_size, config.batching.timeout_ms) == (
        1.5,
        10,
        250,
    )
    assert (config.instances, config.threads) == (2, 1)


@pytest.mark.parametrize(
    "text, message",
    [
        ("tsk: detect", "unknown key 'tsk' (known keys: task, head, names,"),
        ("input: {colour: rgb}", "unknown key 'input.colour' (known keys: size, channels,"),
        (
            "task: segment-everything",
            "key 'task': expected one of classify, detect, obb, pose, segment, tensor, got 'segment-everything'",
        ),
        ("kpt_shape: [17, 4]", "key 'kpt_shape': expected [keypoints, 2 or 3] (e.g. [17, 3]), got [17, 4]"),
        ("head: rcnn", "key 'head': expected one of ultralytics, end2end"),
        ("input: {size: [1, 2, 3]}", "key 'input.size': expected an integer or a list [height, width]"),
        ("defaults: {conf: 1.5}", "key 'defaults.conf': expected less than or equal to 1, got 1.5"),
        ("defaults: {max_det: ten}", "key 'defaults.max_det': expected a valid integer, got 'ten'"),
        ("warmup: sometimes", "key 'warmup': expected a valid boolean, got 'sometimes'"),
        ("input: 3", "key 'input': expected a mapping of keys"),
        ("names: missing.txt", "key 'names': names file"),
        ("version_policy: {latest: 1, all: true}", "expected one of latest, specific or all"),
        ("task: [detect", "not valid YAML"),
        ("batching: {max_batch_size: 0}", "key 'batching.max_batch_size': expected greater than or equal to 1, got 0"),
        ("batching: {dynamic: true}", "unknown key 'batching.dynamic'"),
        ("instances: 0", "key 'instances'"),
        ("backend: tensorrt", "key 'backend': expected one of auto, onnxruntime, openvino, got 'tensorrt'"),
        ("batching: {max_batch_size: 2000}", "key 'batching.max_batch_size': expected less than or equal to 1024"),
        ("defaults: {max_det: 1.5}", "key 'defaults.max_det': expected a valid integer, got 1.5"),
        ("warmup: 1", "key 'warmup': expected a valid boolean, got 1"),
        ("names: {0: cat, 2: dog}", "key 'names': expected a list of names, a mapping with keys 0..n-1"),
        ("version_policy: {specific: []}", "key 'version_policy.specific': "),
        ("input: {mean: [0, 0, x]}", "key 'input.mean.2': expected a valid number, got 'x'"),
        ("- detect", "the top level: expected a mapping of keys, got ['detect']"),
    ],
)
def test_errors_name_file_key_and_expectation(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ModelLoadError) as caught:
        load_model_config(path)
    assert str(path) in caught.value.message and message in caught.value.message


def test_version_policies():
    assert VersionPolicy().select([3, 1, 2]) == [3]
    assert VersionPolicy(latest=2).select([3, 1, 2]) == [2, 3]
    assert VersionPolicy(latest=None, all=True).select([3, 1, 2]) == [1, 2, 3]
    assert VersionPolicy(latest=None, specific=(2, 9)).select([3, 1, 2]) == [2]


def test_names_as_a_mapping_and_policies_from_yaml(tmp_path):
    config = load_model_config(write(tmp_path, "names: {1: dog, 0: cat}\nversion_policy: {all: true}\n"))
    assert config.names == ("cat", "dog") and config.version_policy.select([2, 1]) == [1, 2]
    assert load_model_config(write(tmp_path, "version_policy: {all: false}\n")).version_policy == VersionPolicy()


def test_server_defaults_fill_what_model_yaml_leaves_open(tmp_path):
    chosen = load_model_config(write(tmp_path, "backend: onnxruntime\nbatching: {max_batch_size: 4}\n"))
    server = ServerDefaults(backend="openvino", providers=("CUDAExecutionProvider",))
    assert server.apply(ModelConfig()).backend == "openvino"
    assert server.apply(chosen).backend == "onnxruntime" and server.apply(chosen).providers == (
        "CUDAExecutionProvider",
    )
    edge = ServerDefaults(edge=True).apply(chosen)
    assert (edge.batching.max_batch_size, edge.batching.preferred_batch_size, edge.instances) == (1, 1, 1)
    assert edge == edge_profile(ServerDefaults().apply(chosen)) and chosen.batching.max_batch_size == 4
    assert repr(edge) == repr(edge_profile(ServerDefaults().apply(chosen)))  # load decisions are keyed on it


class Part(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    size: int = 1


class Assembly(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    label: str = ""
    part: Part = Part()

    @field_validator("label")
    @classmethod
    def _where(cls, value: str, info: ValidationInfo) -> str:
        return f"{value}@{info.context['path'].name}"


def test_any_yaml_file_into_a_pydantic_model(tmp_path):
    path = tmp_path / "assembly.yaml"
    path.write_text("label: gear\npart: {size: 3}\n")
    loaded = load_yaml_file(path, Assembly)
    assert loaded.label == "gear@assembly.yaml" and loaded.part == Part(size=3)
    path.write_text("part: {size: 3, colour: red}\n")
    with pytest.raises(ModelLoadError, match="assembly.yaml: unknown key 'part.colour' \\(known keys: size\\)"):
        load_yaml_file(path, Assembly)
    path.write_text("part: {size: big}\n")
    with pytest.raises(ModelLoadError, match="assembly.yaml: key 'part.size': expected a valid integer"):
        load_yaml_file(path, Assembly)

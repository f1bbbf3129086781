"""`model.yaml`: every key optional; unknown keys and bad values are load errors naming file and key."""

from __future__ import annotations

import pytest

from kakehashi.errors import ModelLoadError
from kakehashi.repository.config import ModelConfig, VersionPolicy, load_model_config


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
        ("tsk: detect", "unknown key 'tsk'"),
        ("input: {colour: rgb}", "unknown key 'input.colour'"),
        ("task: segment-everything", "key 'task': expected one of detect, segment, pose, obb, classify, tensor"),
        ("kpt_shape: [17, 4]", "key 'kpt_shape': expected [keypoints, 2 or 3] (e.g. [17, 3]), got [17, 4]"),
        ("head: rcnn", "key 'head': expected one of ultralytics"),
        ("input: {size: [1, 2, 3]}", "key 'input.size': expected an integer or a list [height, width]"),
        ("defaults: {conf: 1.5}", "key 'defaults.conf': expected a number in [0.0, 1.0], got 1.5"),
        ("defaults: {max_det: ten}", "key 'defaults.max_det': expected an integer"),
        ("warmup: sometimes", "key 'warmup': expected true or false"),
        ("input: 3", "key 'input': expected a mapping of keys"),
        ("names: missing.txt", "names file"),
        ("version_policy: {latest: 1, all: true}", "expected one of latest, specific or all"),
        ("task: [detect", "not valid YAML"),
        ("batching: {max_batch_size: 0}", "key 'batching.max_batch_size': expected an integer in [1, 1024]"),
        ("batching: {dynamic: true}", "unknown key 'batching.dynamic'"),
        ("instances: 0", "key 'instances'"),
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

"""A small image is prepared on the event loop when that costs less than the hop to the compute pool and back;
anything bigger, or a model whose small images cost more, is prepared in the pool."""

from __future__ import annotations

import io
import threading

import pytest
from PIL import Image

import kakehashi.repository.handle as handle_module
import kakehashi.repository.image_steps as image_steps
from inprocess import load, predict
from kakehashi.errors import InvalidInput
from onnx_builders import colour_classifier

RED = (220, 30, 30)


def _jpeg(size: tuple[int, int], colour: tuple[int, int, int] = RED) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, "JPEG", quality=90)
    return out.getvalue()


@pytest.fixture
def where(monkeypatch) -> list[str]:
    """'loop' or 'pool' for each image prepared from now on."""
    seen: list[str] = []
    prepare = image_steps.prepare_image

    def recorded(*args, **kwargs):
        seen.append("loop" if threading.current_thread() is threading.main_thread() else "pool")
        return prepare(*args, **kwargs)

    monkeypatch.setattr(image_steps, "prepare_image", recorded)
    return seen


@pytest.fixture
def classifier(tmp_path):
    return load(colour_classifier(tmp_path / "colour" / "1" / "model.onnx"))


def test_small_images_are_prepared_on_the_loop_when_cheaper_than_the_hop(classifier, where, monkeypatch):
    monkeypatch.setattr(handle_module, "HOP_SECONDS", 10.0)
    for _ in range(3):
        [answer] = predict(classifier, _jpeg((64, 64)))
        assert answer.results[0]["name"] == "red" and answer.shape == (64, 64)
    assert where == ["loop"] * 3
    # more than twice the input's pixels: the pool, however cheap small images are
    [answer] = predict(classifier, _jpeg((640, 480)))
    assert answer.results[0]["name"] == "red" and answer.shape == (480, 640)
    assert where[-1] == "pool"


def test_a_small_file_holding_many_pixels_is_prepared_in_the_pool(classifier, where, monkeypatch):
    monkeypatch.setattr(handle_module, "HOP_SECONDS", 10.0)
    predict(classifier, _jpeg((64, 64)))
    out = io.BytesIO()
    Image.new("RGB", (2000, 2000), RED).save(out, "PNG", optimize=True)
    body = out.getvalue()  # one colour compresses to a file a small image could be: its header tells
    assert len(body) < 3 * handle_module.SMALL_IMAGE_FACTOR * 64 * 64
    [answer] = predict(classifier, body)
    assert answer.shape == (2000, 2000)
    assert where == ["loop", "pool"]


def test_small_images_dearer_than_the_hop_go_to_the_pool_and_are_measured_again_now_and_then(
    classifier, where, monkeypatch
):
    monkeypatch.setattr(handle_module, "HOP_SECONDS", 0.0)  # no preparation is cheaper
    every = handle_module.REPROBE_EVERY
    for _ in range(every + 1):
        [answer] = predict(classifier, _jpeg((64, 64)))
        assert answer.results[0]["name"] == "red"
    # the first measures on the loop; then the pool, but for one file in every REPROBE_EVERY
    assert [i for i, place in enumerate(where) if place == "loop"] == [0, every - 1]


def test_a_broken_small_image_is_the_clients_fault_on_the_loop_too(classifier, where, monkeypatch):
    monkeypatch.setattr(handle_module, "HOP_SECONDS", 10.0)
    with pytest.raises(InvalidInput, match="starts like a JPEG image but cannot be read"):
        predict(classifier, _jpeg((64, 64))[:20])
    with pytest.raises(InvalidInput, match="truncated or corrupt"):
        predict(classifier, _jpeg((64, 64))[:-200])
    [answer] = predict(classifier, _jpeg((64, 64)))  # and the model serves on
    assert answer.results[0]["name"] == "red"

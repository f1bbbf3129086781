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
from kakehashi.tasks.images import SMALL_FILE_BYTES
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
    # another input size than the model's (what it costs is not the one measured): the pool
    [answer] = predict(classifier, _jpeg((64, 64)), imgsz=256)
    assert answer.results[0]["name"] == "red"
    assert where[-1] == "pool"


def test_files_that_could_cost_the_loop_more_are_prepared_in_the_pool(classifier, where, monkeypatch):
    monkeypatch.setattr(handle_module, "HOP_SECONDS", 10.0)
    predict(classifier, _jpeg((64, 64)))
    many_pixels = _jpeg((900, 900))  # one colour compresses to a small file: its header tells
    assert len(many_pixels) <= SMALL_FILE_BYTES
    progressive = io.BytesIO()  # its scans could repeat without end
    Image.new("RGB", (64, 64), RED).save(progressive, "JPEG", progressive=True)
    png = io.BytesIO()  # its chunks could inflate without end
    Image.new("RGB", (64, 64), RED).save(png, "PNG")
    big = io.BytesIO()  # more bytes of markers than the loop reads
    Image.new("RGB", (64, 64), RED).save(big, "JPEG", comment=b"x" * SMALL_FILE_BYTES)
    scans = io.BytesIO()  # what looks like a second scan (each scan is another pass over the blocks)
    Image.new("RGB", (64, 64), RED).save(scans, "JPEG", comment=b"\xff\xda")
    bodies = (many_pixels, progressive.getvalue(), png.getvalue(), big.getvalue(), scans.getvalue())
    for body in bodies:
        [answer] = predict(classifier, body)
        assert answer.results[0]["name"] == "red"
    assert where == ["loop"] + ["pool"] * len(bodies)


def test_small_images_dearer_than_the_hop_go_to_the_pool_and_are_measured_again_now_and_then(
    classifier, where, monkeypatch
):
    monkeypatch.setattr(handle_module, "HOP_SECONDS", 0.0)  # nothing is cheaper
    every = handle_module.REPROBE_EVERY
    for _ in range(every + 1):
        [answer] = predict(classifier, _jpeg((64, 64)))
        assert answer.results[0]["name"] == "red"
    # the first measures on the loop; then the pool, but for one file in every REPROBE_EVERY
    assert [i for i, place in enumerate(where) if place == "loop"] == [0, every - 1]


def test_a_broken_small_image_is_the_clients_fault_and_counts_towards_the_loops_cost(classifier, where, monkeypatch):
    monkeypatch.setattr(handle_module, "HOP_SECONDS", 0.0)
    truncated = _jpeg((64, 64))[:-20]  # its scan cut short
    # the first small file measures on the loop: a broken one is measured too, so the next goes to the pool
    with pytest.raises(InvalidInput, match="truncated or corrupt"):
        predict(classifier, truncated)
    [answer] = predict(classifier, _jpeg((64, 64)))  # the model serves on
    assert answer.results[0]["name"] == "red"
    assert where == ["loop", "pool"]
    with pytest.raises(InvalidInput) as numbered:
        predict(classifier, _jpeg((64, 64)), truncated)
    assert numbered.value.message.startswith("image 1: the JPEG image is truncated or corrupt")
    with pytest.raises(InvalidInput, match="starts like a JPEG image but cannot be read"):
        predict(classifier, _jpeg((64, 64))[:20])


def test_the_loops_cost_comes_back_under_the_hop_with_one_cheap_image_and_leaves_with_one_dear_one(monkeypatch):
    monkeypatch.setattr(handle_module, "HOP_SECONDS", 0.3e-3)
    cost = handle_module.loop_cost
    cold = cost(None, 3e-3, True)  # a first file, cold, 10x the hop
    assert cold == 3e-3
    assert cost(cold, 2e-5, False) > 0.3e-3  # a header read alone (or a failure) says nothing of preparing one
    assert cost(cold, 2e-4, True) == 2e-4  # an image prepared again under the hop: the loop takes files again
    settled = cost(2e-4, 2.5e-4, True)
    assert 2e-4 < settled < 2.5e-4  # while under the hop, a moving average
    assert cost(settled, 3e-3, True) >= 0.3e-3  # one file dear enough sends the next to the pool


def test_a_server_whose_first_small_image_was_dear_takes_them_again_after_one_cheap_one(classifier, where, monkeypatch):
    monkeypatch.setattr(handle_module, "HOP_SECONDS", 10.0)
    classifier._small_file_cpu = 20.0  # as after a first file twice the hop (cold)
    classifier._small_files = handle_module.REPROBE_EVERY - 2
    for _ in range(3):
        predict(classifier, _jpeg((64, 64)))
    # the pool; then the REPROBE_EVERYth file, on the loop, cheaper than the hop; then the loop again
    assert where == ["pool", "loop", "loop"]

"""Handlers: a model's own Python (`handler:` in model.yaml, or handler.py). The example in examples/red-blobs
decodes an output layout no task knows; faults in a handler are answered for the one request that met them."""

from __future__ import annotations

import io
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from inprocess import load, predict

EXAMPLE = Path(__file__).parent.parent / "examples" / "red-blobs"
CELL = 512 / 64  # a 512-px image over the 64x64 redness map: one cell is 8 px


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def _squares() -> bytes:
    """White 512x512 with a strong red rectangle (redness 0.82) and a pale one (redness 0.43)."""
    pixels = np.full((512, 512, 3), 255, np.uint8)
    pixels[64:128, 64:192] = (230, 20, 20)
    pixels[300:400, 350:450] = (200, 90, 90)
    return _png(pixels)


def test_the_example_handler_finds_the_red_blobs_where_they_were_painted(tmp_path):
    folder = shutil.copytree(EXAMPLE, tmp_path / "red-blobs")
    handle = load(folder)
    assert handle.ready and handle.kind == "handler", handle.reason
    found = predict(handle, _squares())[0].results  # model.yaml's default conf 0.3: both
    assert [r["name"] for r in found] == ["red blob", "red blob"]
    strong, pale = found
    assert strong["confidence"] == pytest.approx((230 - 20) / 255, abs=1e-3)
    assert pale["confidence"] == pytest.approx((200 - 90) / 255, abs=1e-3)
    for result, (x1, y1, x2, y2) in ((strong, (64, 64, 192, 128)), (pale, (350, 300, 450, 400))):
        box = result["box"]
        assert [box["x1"], box["y1"], box["x2"], box["y2"]] == pytest.approx([x1, y1, x2, y2], abs=CELL)
    # the request's parameters reach the hooks: above the pale one's redness, only the strong one
    assert [r["confidence"] for r in predict(handle, _squares(), conf=0.6)[0].results] == [strong["confidence"]]


FUSSY = '''
import numpy as np
from kakehashi.errors import InvalidInput


class Fussy:
    """Refuses 13-px-wide images (400), makes a wrong input for 17-px ones, fails decoding 11-px ones."""

    def setup(self, context):
        self.name = context.inputs[0].name

    def preprocess(self, image, params):
        if image.width == 13:
            raise InvalidInput("13 px wide images are refused")
        size = 8 if image.width == 17 else 256
        return {self.name: np.zeros((3, size, size), np.float32)}

    def postprocess(self, outputs, image, params):
        if image.width == 11:
            raise ValueError("eleven is not a width")
        return [{"width": image.width, "heat": outputs["heat"].shape[1:]}]
'''


SECOND_OPINION = '''
import numpy as np
from PIL import Image


class SecondOpinion:
    """Runs this model on the image and on its mirror image, and asks the `blobs` model what it finds."""

    def setup(self, context):
        self.name = context.inputs[0].name

    def preprocess(self, image, params):
        pixels = np.asarray(image.resize((256, 256), Image.Resampling.BILINEAR), np.float32)
        return {self.name: pixels.transpose(2, 0, 1) / 255.0}

    def predict(self, feeds, image, params, runtime):
        straight = runtime.run(feeds)["heat"]
        mirrored = runtime.run({self.name: np.ascontiguousarray(feeds[self.name][:, :, ::-1])})["heat"]
        found = runtime.predict("blobs", image)
        difference = np.abs(straight - mirrored[:, :, ::-1]).max()
        return {"heat": straight, "difference": np.asarray(difference), "blobs": np.asarray(len(found))}

    def postprocess(self, outputs, image, params):
        return [
            {
                "peak": float(outputs["heat"].max()),
                "mirror_difference": float(outputs["difference"]),
                "blobs": int(outputs["blobs"]),
            }
        ]
'''


@pytest.fixture(scope="module")
def server(serve_module, tmp_path_factory):
    root = tmp_path_factory.mktemp("repo")
    shutil.copytree(EXAMPLE, root / "blobs")
    for name, handler_file, yaml in (
        ("fussy", FUSSY, "handler: fussy:Fussy\n"),
        ("opinion", SECOND_OPINION, "handler: opinion:SecondOpinion\n"),
        (
            "no-licence",
            "class Handler:\n    def setup(self, context):\n        raise RuntimeError('no licence')\n"
            "    def preprocess(self, image, params): ...\n    def postprocess(self, outputs, image, params): ...\n",
            "",
        ),
        ("missing", "", "handler: nowhere:Nothing\n"),
    ):
        (root / name / "1").mkdir(parents=True)
        shutil.copy(EXAMPLE / "1" / "model.onnx", root / name / "1" / "model.onnx")
        # one run at a time: requests sent together share a batch
        batching = "threads: 1\nruns_per_instance: 1\n"
        batching += "batching: {max_batch_size: 4, preferred_batch_size: 4, max_queue_delay_ms: 300}\n"
        (root / name / "model.yaml").write_text("backend: onnxruntime\n" + batching + yaml)
        if handler_file:
            file = {"fussy": "fussy.py", "opinion": "opinion.py"}.get(name, "handler.py")
            (root / name / file).write_text(handler_file)
    return serve_module(root, wait="/v2/health/live")


def _send(server, width: int):
    image = _png(np.zeros((20, width, 3), np.uint8))
    return server.client.post("/v1/models/fussy/predict", content=image, headers={"content-type": "image/png"})


def test_a_failing_hook_fails_only_its_request_even_in_a_shared_batch(server):
    server.wait_until("/v2/models/fussy/ready", timeout=60)
    [before] = server.client.get("/v2/models/fussy/stats").json()["model_stats"]
    with ThreadPoolExecutor(2) as pool:  # sent together: within the 300 ms the batch waits for more rows
        failing, fine = pool.map(lambda width: _send(server, width), (11, 64))
    assert failing.status_code == 500
    assert failing.json()["error"] == "the model's handler failed in postprocess: ValueError: eleven is not a width"
    assert fine.status_code == 200 and fine.json()["images"][0]["results"] == [{"width": 64, "heat": [64, 64]}]
    [after] = server.client.get("/v2/models/fussy/stats").json()["model_stats"]
    assert after["inference_count"] - before["inference_count"] == 2
    assert after["execution_count"] - before["execution_count"] == 1  # one batch held both
    log = server.log()
    assert "Traceback" in log and "eleven is not a width" in log


def test_a_handler_may_refuse_an_input_and_its_wrong_inputs_are_its_fault(server):
    server.wait_until("/v2/models/fussy/ready", timeout=60)
    refused = _send(server, 13)
    assert refused.status_code == 400 and refused.json()["error"] == "13 px wide images are refused"
    wrong = _send(server, 17)
    assert wrong.status_code == 500 and "the model's handler made inputs the model cannot take" in wrong.json()["error"]
    assert _send(server, 64).status_code == 200


def test_a_handler_that_cannot_start_leaves_its_model_unavailable_with_the_reason(server):
    server.wait_until("/v2/models/fussy/ready", timeout=60)
    index = {row["name"]: row for row in server.client.post("/v2/repository/index", json={}).json()}
    assert index["no-licence"]["state"] == "UNAVAILABLE"
    assert "the handler's setup failed: RuntimeError: no licence" in index["no-licence"]["reason"]
    assert index["missing"]["state"] == "UNAVAILABLE" and "nowhere:Nothing" in index["missing"]["reason"]


def test_a_predict_hook_runs_the_model_twice_and_asks_another_model(server):
    """The hook runs this model on the image and its mirror (two batched inferences) and asks `blobs` (another
    served model, through its own handler) for its results; six at once on a two-thread compute pool all finish."""
    server.wait_until("/v2/models/opinion/ready", timeout=60)
    server.wait_until("/v2/models/blobs/ready", timeout=60)
    stats = {
        name: server.client.get(f"/v2/models/{name}/stats").json()["model_stats"][0] for name in ("opinion", "blobs")
    }
    image = _squares()

    def ask(_):
        return server.client.post("/v1/models/opinion/predict", content=image, headers={"content-type": "image/png"})

    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(ask, range(6)))
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers if a.status_code != 200]
    for answer in answers:
        [result] = answer.json()["images"][0]["results"]
        assert result["peak"] == pytest.approx((230 - 20) / 255, abs=1e-3)  # the strong square's redness
        assert result["mirror_difference"] < 1e-5  # the mirror's map, mirrored back, is the same map
        assert result["blobs"] == 2  # what the example's handler finds in the two squares
    after = {name: server.client.get(f"/v2/models/{name}/stats").json()["model_stats"][0] for name in stats}
    assert after["opinion"]["inference_count"] - stats["opinion"]["inference_count"] == 12
    assert after["blobs"]["inference_count"] - stats["blobs"]["inference_count"] == 6

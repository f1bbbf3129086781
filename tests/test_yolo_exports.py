"""Real Ultralytics exports (random weights, real shapes and metadata) served with zero configuration."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import IMAGES, MODELS, QUICK_YAML, YOLO11, YOLO26, quick_model
from inprocess import load, predict

CASES = {"yolo11": (YOLO11, "ultralytics", [-1, 84, -1]), "yolo26": (YOLO26, "end2end", [-1, 300, 6])}


@pytest.fixture(scope="module")
def server(serve_module, tmp_path_factory):
    root = tmp_path_factory.mktemp("yolo")
    for name, (path, _, _) in CASES.items():
        (root / f"{name}.onnx").symlink_to(path.resolve())
        quick_model(path, root / "pinned").rename(root / f"{name}-ort")  # one runtime: the same ties every run
    (root / "pinned").rmdir()
    return serve_module(root)


@pytest.mark.parametrize("name", CASES)
def test_metadata_from_the_graph(server, name):
    meta = server.client.get(f"/v2/models/{name}").json()
    assert meta["inputs"] == [{"name": "images", "datatype": "FP32", "shape": [-1, 3, -1, -1]}]
    assert meta["outputs"][0]["shape"] == CASES[name][2]


def _predict(server, name: str, **params) -> dict:
    files = [("file", ("coffee.png", (IMAGES / "coffee.png").read_bytes()))]
    response = server.client.post(
        f"/v1/models/{name}/predict", files=files, params={"conf": 0.0001, "max_det": 50} | params
    )
    assert response.status_code == 200, response.text
    [image] = response.json()["images"]
    return image


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("imgsz", [None, 320])
def test_predict_contract(server, name, imgsz):
    image = _predict(server, name, **({"imgsz": imgsz} if imgsz else {}))
    assert image["shape"] == [400, 600]
    results = image["results"]
    assert 0 < len(results) <= 50
    confidences = [r["confidence"] for r in results]
    assert confidences == sorted(confidences, reverse=True) and min(confidences) >= 0.0001
    assert all(0 <= r["class"] < 80 and isinstance(r["name"], str) for r in results)
    for r in results:
        box = r["box"]
        assert 0 <= box["x1"] <= box["x2"] <= 600 and 0 <= box["y1"] <= box["y2"] <= 400


@pytest.mark.parametrize("name", CASES)
def test_imgsz_320_runs_the_model_at_320(server, name):
    """Random weights give the heads' boxes fixed sizes in input pixels (which of the tied boxes win depends on
    the runtime, so the model is pinned to ONNX Runtime): mapped back to the 600x400 photo they are 600/640 of
    that at the default size and 600/320 at imgsz 320, twice as wide, which they are only if the model ran at 320
    and the boxes were mapped back from 320."""
    widths = {}
    for imgsz in (None, 320):
        image = _predict(server, f"{name}-ort", **({"imgsz": imgsz} if imgsz else {}))
        assert image["shape"] == [400, 600] and image["results"]
        widths[imgsz] = sorted(r["box"]["x2"] - r["box"]["x1"] for r in image["results"])
    assert widths[None][0] > 50 and widths[320][0] == pytest.approx(2 * widths[None][0], abs=1), widths


def test_coco_names_from_metadata(server):
    import ast

    import onnxruntime

    coco = ast.literal_eval(onnxruntime.InferenceSession(str(YOLO11)).get_modelmeta().custom_metadata_map["names"])
    response = server.client.post(
        "/v1/models/yolo11/predict",
        params={"conf": 0.0001, "max_det": 300},
        files=[("file", ("c.png", (IMAGES / "chelsea.png").read_bytes()))],
    )
    results = response.json()["images"][0]["results"]
    assert 0 < len(results) <= 300
    assert all(r["name"] == coco[r["class"]] for r in results)
    assert len(coco) == 80 and coco[0] == "person"


@pytest.mark.parametrize("name, size, shape", [("yolo11", 64, [1, 84, 84]), ("yolo26", 160, [1, 300, 6])])
def test_raw_infer_on_a_small_input(server, name, size, shape):
    x = np.full((1, 3, size, size), 0.5, np.float32)
    body = {"inputs": [{"name": "images", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}]}
    response = server.client.post(f"/v2/models/{name}/infer", json=body)
    assert response.status_code == 200, response.text
    [output] = response.json()["outputs"]
    assert output["name"] == "output0" and output["shape"] == shape and len(output["data"]) == np.prod(shape)


def test_runtime_refusal_is_a_500_and_the_model_keeps_serving(server):
    # YOLO26's head keeps its top 300 anchors: a 64x64 input has only 84, and the runtime fails on it; the
    # shape is one the graph declares, so this is the server's fault to report (500, logged), not the client's
    x = np.zeros((1, 3, 64, 64), np.float32)
    body = {"inputs": [{"name": "images", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}]}
    response = server.client.post("/v2/models/yolo26/infer", json=body)
    assert response.status_code == 500 and "failed to run this request" in response.json()["error"], response.text
    assert server.client.get("/v2/models/yolo26/ready").status_code == 200
    assert _predict(server, "yolo26")["results"]


def _filled_masks(file: str, folder) -> Path:
    """A random-weight YOLO11 segmenter's masks are (correctly) empty: its mask logits are all slightly below 0.
    Its prototypes + 1 make every logit the sum of the box's coefficients, positive here: masks fill the boxes."""
    from onnx_builders import offset_output

    if not file.startswith("yolo11n-seg"):
        return MODELS / file
    return offset_output(MODELS / file, folder / file, "output1", 1.0)


@pytest.mark.parametrize(
    "file, kind, head, extra_key",
    [
        ("yolo11n-seg-random-640-dynamic.onnx", "segment", "ultralytics", "segments"),
        ("yolo26n-seg-random-640-e2e-dynamic.onnx", "segment", "end2end", "segments"),
        ("yolo11n-pose-random-640-dynamic.onnx", "pose", "ultralytics", "keypoints"),
        ("yolo26n-pose-random-640-e2e-dynamic.onnx", "pose", "end2end", "keypoints"),
        ("yolo11n-obb-random-640-dynamic.onnx", "obb", None, None),
    ],
)
def test_every_ultralytics_task_export_serves(file, kind, head, extra_key, tmp_path):
    """The real exports' shapes and metadata: the task, head and names are found, and answers have their fields;
    each outline is non-empty and runs along its box's edges (the masks fill their boxes)."""
    handle = load(quick_model(_filled_masks(file, tmp_path), tmp_path / "repo"))
    task = handle.task
    assert task.kind == kind and len(task.names) > 0
    if head:
        assert task.head.name == head
    results = predict(handle, (IMAGES / "astronaut.png").read_bytes(), conf=0.0001, max_det=5)[0].results
    assert 0 < len(results) <= 5
    for result in results:
        if kind == "obb":
            assert set(result["box"]) == {f"{a}{i}" for i in range(1, 5) for a in "xy"}
        elif kind == "pose":
            assert task.kpt_shape == (17, 3) and len(result["keypoints"]["x"]) == 17
            assert all(0 <= x <= 512 for x in result["keypoints"]["x"])
        else:
            outline, box = result[extra_key], result["box"]
            assert len(outline["x"]) == len(outline["y"]) >= 3, outline  # an empty outline fails here
            assert min(outline["x"]) == pytest.approx(box["x1"], abs=1.5)
            assert max(outline["x"]) == pytest.approx(box["x2"], abs=1.5)
            assert min(outline["y"]) == pytest.approx(box["y1"], abs=1.5)
            assert max(outline["y"]) == pytest.approx(box["y2"], abs=1.5)


def test_classifier_export(tmp_path):
    handle = load(quick_model(MODELS / "yolo11n-cls-random-224-dynamic.onnx", tmp_path))
    assert handle.task.kind == "classify" and len(handle.task.names) == 1000
    results = predict(handle, (IMAGES / "coffee.png").read_bytes(), top_k=3)[0].results
    assert len(results) == 3 and results[0]["confidence"] >= results[1]["confidence"]


@pytest.mark.parametrize(
    "file, yaml, kind",
    [
        ("yolo11n-pose-random-640-dynamic.onnx", "task: pose\nkpt_shape: [17, 3]\n", "pose"),
        ("yolo11n-obb-random-640-dynamic.onnx", "task: obb\n", "obb"),
        ("yolo11n-seg-random-640-dynamic.onnx", "task: segment\n", "segment"),
    ],
)
def test_model_yaml_names_the_task_of_a_model_without_metadata(tmp_path, file, yaml, kind):
    """Exports from elsewhere carry no Ultralytics metadata: model.yaml's `task` (and `kpt_shape`) say it."""
    import onnx

    model = onnx.load(str(_filled_masks(file, tmp_path)))
    del model.metadata_props[:]
    folder = tmp_path / "repo" / "bare"
    (folder / "1").mkdir(parents=True)
    onnx.save(model, str(folder / "1" / "model.onnx"))
    (folder / "model.yaml").write_text(QUICK_YAML + yaml)
    handle = load(tmp_path / "repo", "bare")
    assert handle.task.kind == kind
    [result, *_] = predict(handle, (IMAGES / "astronaut.png").read_bytes(), conf=0.0001, max_det=3)[0].results
    assert result["name"].isdigit()  # no names anywhere: numbered classes
    if kind == "pose":
        assert len(result["keypoints"]["visible"]) == 17
    elif kind == "obb":
        assert "x4" in result["box"]
    else:
        assert len(result["segments"]["x"]) == len(result["segments"]["y"]) >= 3  # the mask fills the box


def test_a_pose_model_without_kpt_shape_is_a_clear_load_error(tmp_path):
    import onnx

    model = onnx.load(str(MODELS / "yolo11n-pose-random-640-dynamic.onnx"))
    del model.metadata_props[:]
    (tmp_path / "bare" / "1").mkdir(parents=True)
    onnx.save(model, str(tmp_path / "bare" / "1" / "model.onnx"))
    (tmp_path / "bare" / "model.yaml").write_text(QUICK_YAML + "task: pose\n")
    handle = load(tmp_path, "bare")
    assert not handle.ready and "needs 'kpt_shape' [keypoints, 2 or 3] in model.yaml" in handle.reason


def test_an_end_to_end_obb_head_is_refused_not_misread(tmp_path):
    import onnx

    model = onnx.load(str(MODELS / "yolo11n-obb-random-640-dynamic.onnx"))
    for prop in model.metadata_props:
        if prop.key == "end2end":
            prop.value = "True"
    (tmp_path / "obb" / "1").mkdir(parents=True)
    onnx.save(model, str(tmp_path / "obb" / "1" / "model.onnx"))
    (tmp_path / "obb" / "model.yaml").write_text(QUICK_YAML)
    handle = load(tmp_path, "obb")
    assert not handle.ready and "end-to-end oriented-box heads are not supported yet" in handle.reason


@pytest.mark.parametrize("keep_io_types", [False, True], ids=["fp16-inputs", "fp32-inputs"])
def test_half_precision_models_serve_like_their_fp32_original(tmp_path, keep_io_types):
    """FP16 graphs (as `kakehashi export --half` or onnxconverter make them) serve through the same path: the
    input is fed in its type, FP16 outputs are decoded in FP32 (box areas overflow FP16), raw outputs agree."""
    import warnings

    from kakehashi.tasks.image_task import prepare_image
    from kakehashi.tasks.params import PredictParams
    from onnx_builders import half_precision

    half_precision(YOLO11, tmp_path / "half" / "1" / "model.onnx", keep_io_types)
    (tmp_path / "half" / "model.yaml").write_text(QUICK_YAML)
    half, full = load(tmp_path / "half"), load(quick_model(YOLO11, tmp_path / "full"))
    assert half.backend.inputs[0].datatype == ("FP32" if keep_io_types else "FP16")
    data = (IMAGES / "astronaut.png").read_bytes()
    raw = {}
    for handle in (half, full):
        tensor = prepare_image(data, handle.task.input, PredictParams(), 10**8).tensor[None]
        assert tensor.dtype == (np.float16 if handle.backend.inputs[0].datatype == "FP16" else np.float32)
        raw[handle] = handle.backend.run({"images": tensor})["output0"].astype(np.float32)
    assert np.abs(raw[half][:, :4] - raw[full][:, :4]).max() <= 1.0  # box channels, input pixels
    assert np.abs(raw[half][:, 4:] - raw[full][:, 4:]).max() <= 1e-3  # class scores
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow anywhere in decoding
        results = predict(half, data, conf=0.0001, max_det=5)[0].results
    assert len(results) == 5 and all(np.isfinite(list(r["box"].values())).all() for r in results)

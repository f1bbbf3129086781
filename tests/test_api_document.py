"""The OpenAPI document cannot drift from the server: every route the app serves is in it (and nothing else), the
predict parameters it states are the ones the endpoint validates, and real answers of every task kind match the
answer it describes."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import jsonschema
import numpy as np
import orjson
import pytest
from starlette.routing import Mount, Route, WebSocketRoute

from conftest import image_bytes, quick_model
from inprocess import load, predict
from kakehashi.errors import InvalidInput
from kakehashi.protocols.vision import encode_predictions, parse_params
from kakehashi.repository.config import Defaults
from kakehashi.repository.repository import ModelRepository
from kakehashi.server.app import create_app
from kakehashi.server.openapi_document import SPEC
from kakehashi.server.state import ServerState
from kakehashi.settings import Limits, Settings, default_model_path
from kakehashi.tasks.params import PredictParams
from onnx_builders import colour_classifier, constant_model

NAMES = "{0: 'a', 1: 'b'}"
IMAGE = image_bytes(640, 480)
PREDICT = SPEC["paths"]["/v1/models/{model}/predict"]["post"]


def _served() -> set[tuple[str, str]]:
    """(path, method) for every route of the app; a Mount of static files as `{prefix}/{path}`."""
    with ThreadPoolExecutor(1) as compute:
        repository = ModelRepository(default_model_path(), compute, Limits())
        routes = create_app(ServerState(Settings(default_model_path()), repository)).routes
    served = set()
    for route in routes:
        if isinstance(route, Mount):
            served.add((route.path + "/{path}", "get"))
        elif isinstance(route, WebSocketRoute):
            assert route.path.removesuffix("/ws") + "/results" in SPEC["paths"]  # named in its SSE twin's summary
        else:
            assert isinstance(route, Route), route
            served |= {(route.path, method.lower()) for method in route.methods or () if method != "HEAD"}
    return served


def test_every_route_the_app_serves_is_in_the_document_and_nothing_else():
    documented = {(path, method) for path, operations in SPEC["paths"].items() for method in operations}
    assert sorted(_served() - documented) == [], "routes missing from the OpenAPI document"
    assert sorted(documented - _served()) == [], "documented paths the app does not serve"


def test_the_document_is_openapi_30_as_the_bundled_swagger_ui_renders_it():
    from openapi_spec_validator import validate
    from swagger_ui_bundle import swagger_ui_path

    assert swagger_ui_path.name.startswith("swagger-ui-4.") and SPEC["openapi"].startswith("3.0.")  # 3.1 needs 5.x
    validate(SPEC)  # no JSON Schema `type: null`: ...
    schemas = SPEC["components"]["schemas"]
    assert schemas["IndexRow"]["properties"]["reason"]["nullable"] is True  # ... a value that may be null is nullable
    assert "nullable" not in schemas["InferRequest"]["properties"]["id"]  # one that may be left out is not
    assert "id" not in schemas["InferRequest"]["required"]


def _references(node: object) -> set[str]:
    """Every `$ref` anywhere below `node`."""
    if isinstance(node, list):
        return {found for item in node for found in _references(item)}
    if not isinstance(node, dict):
        return set()
    own = {node["$ref"]} if "$ref" in node else set()
    return own | {found for value in node.values() for found in _references(value)}


def test_every_reference_resolves_inside_the_document():
    names = {"#/components/schemas/" + name for name in SPEC["components"]["schemas"]}
    used = _references(SPEC)
    assert {"#/components/schemas/Predictions", "#/components/schemas/Status"} <= used
    assert sorted(used - names) == []


def _documented_parameters() -> dict[str, dict]:
    return {parameter["name"]: parameter for parameter in PREDICT["parameters"] if parameter["in"] == "query"}


def test_every_task_parameter_is_a_documented_query_parameter():
    assert set(PredictParams.__dataclass_fields__) <= set(_documented_parameters())
    form = PREDICT["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]
    assert set(form) == {"file", *_documented_parameters()}


def _ask(name: str, text: str) -> PredictParams:
    return parse_params({name: [text]}, Defaults())


@pytest.mark.parametrize("name", ["conf", "iou", "max_det", "decimals", "top_k", "timeout"])
def test_the_documented_range_is_the_validated_range(name):
    schema = _documented_parameters()[name]["schema"]
    low, high = schema["minimum"], schema["maximum"]
    step = 1 if schema["type"] == "integer" else 1e-6
    for value in (low, high):
        _ask(name, str(value))  # accepted at both ends
    for value in (low - step, high + step):
        with pytest.raises(InvalidInput, match=f"parameter '{name}' must be .* between {low} and {high}"):
            _ask(name, str(value))


def test_documented_lists_and_choices_are_the_validated_ones():
    parameters = _documented_parameters()
    assert (parameters["classes"]["style"], parameters["classes"]["explode"]) == ("form", False)  # `0,2`
    assert _ask("classes", "0,2").classes == frozenset({0, 2})
    size = parameters["imgsz"]["schema"]
    assert (size["minItems"], size["maxItems"], size["items"]["minimum"]) == (1, 2, 32)
    assert _ask("imgsz", "480,640").imgsz == (480, 640) and _ask("imgsz", "320").imgsz == (320, 320)
    with pytest.raises(InvalidInput, match="parameter 'imgsz' must be 1 or 2 comma-separated integers"):
        _ask("imgsz", "320,320,320")
    with pytest.raises(InvalidInput, match="parameter 'imgsz'"):
        _ask("imgsz", "16")
    assert parameters["masks"]["schema"]["enum"] == ["polygon", "rle"]
    assert _ask("masks", "rle").masks == "rle"
    with pytest.raises(InvalidInput, match="parameter 'masks' must be one of polygon, rle, got 'bitmap'"):
        _ask("masks", "bitmap")


def test_left_out_parameters_take_the_models_defaults():
    params = parse_params({"conf": ["0.5"]}, Defaults(conf=0.1, iou=0.3, max_det=7, top_k=2))
    assert (params.conf, params.iou, params.max_det, params.top_k, params.decimals) == (0.5, 0.3, 7, 2, 5)


def _answer_schema(component: str) -> jsonschema.Draft202012Validator:
    """A validator of the document's component, its references resolved inside the document."""
    return jsonschema.Draft202012Validator({"$ref": f"#/components/schemas/{component}", **SPEC})


def _models(folder) -> dict[str, object]:
    """One small model of every task kind, with known outputs."""
    segment = np.zeros((1, 8, 1), np.float32)
    segment[0, :, 0] = (320, 320, 200, 100, 0.9, 0.0, 1.0, 0.0)
    protos = np.full((1, 2, 160, 160), 10.0, np.float32)
    pose = np.zeros((1, 12, 1), np.float32)
    pose[0, :, 0] = (320, 320, 100, 100, 0.9, 0.0, 300, 300, 0.8, 340, 330, 0.2)
    obb = np.zeros((1, 7, 1), np.float32)
    obb[0, :, 0] = (320, 320, 100, 40, 0.9, 0.0, np.pi / 4)
    detect = np.zeros((1, 1, 6), np.float32)
    detect[0, 0] = (10, 20, 200, 300, 0.9, 1)
    raw = {"names": NAMES, "stride": "32", "imgsz": "[640, 640]", "end2end": "False"}
    return {
        "Detection": constant_model(
            folder / "detect.onnx", {"output0": detect}, metadata={**raw, "task": "detect", "end2end": "True"}
        ),
        "Segmentation": constant_model(
            folder / "segment.onnx", {"output0": segment, "output1": protos}, metadata={**raw, "task": "segment"}
        ),
        "Pose": constant_model(
            folder / "pose.onnx", {"output0": pose}, metadata={**raw, "task": "pose", "kpt_shape": "[2, 3]"}
        ),
        "OrientedDetection": constant_model(folder / "obb.onnx", {"output0": obb}, metadata={**raw, "task": "obb"}),
        "Classification": colour_classifier(folder / "classify.onnx"),
    }


@pytest.fixture(scope="module")
def answers(tmp_path_factory) -> dict[str, dict]:
    """Each task kind's answer to one image, as the endpoint writes it (and segmentation's with `masks=rle`)."""
    models = _models(tmp_path_factory.mktemp("tasks"))
    root = tmp_path_factory.mktemp("quick")
    handles = {kind: load(quick_model(path, root)) for kind, path in models.items()}
    found = {}
    for kind, handle in handles.items():
        found[kind] = orjson.loads(encode_predictions(handle.name, handle.version, predict(handle, IMAGE, conf=0.5)))
    segmenter = handles["Segmentation"]
    found["SegmentationRunLengths"] = orjson.loads(
        encode_predictions(segmenter.name, segmenter.version, predict(segmenter, IMAGE, masks="rle"))
    )
    return found


@pytest.mark.parametrize(
    "kind, keys",
    [
        ("Detection", {"box"}),
        ("Segmentation", {"box", "segments"}),
        ("SegmentationRunLengths", {"box", "rle"}),
        ("Pose", {"box", "keypoints"}),
        ("OrientedDetection", {"box"}),
        ("Classification", set()),
    ],
)
def test_every_task_kinds_answer_is_the_documented_one(answers, kind, keys):
    answer = answers[kind]
    _answer_schema("Predictions").validate(answer)
    [image] = answer["images"]
    assert image["shape"] == [480, 640] and image["results"]
    for result in image["results"]:
        assert set(result) == {"class", "name", "confidence", *keys}
        _answer_schema(kind).validate(result)  # and the task kind's own result, not just any of them


def test_the_answer_schema_refuses_what_no_task_writes(answers):
    result = answers["OrientedDetection"]["images"][0]["results"][0]
    with pytest.raises(jsonschema.ValidationError):
        _answer_schema("Detection").validate(result)  # eight corners are not an axis-aligned box
    wrong = {**answers["Detection"]["images"][0]["results"][0], "mask": [1, 2]}
    with pytest.raises(jsonschema.ValidationError):
        _answer_schema("Predictions").validate({**answers["Detection"], "images": [{"results": [wrong]}]})

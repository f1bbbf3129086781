"""The baseline most users compare against: a plain FastAPI + uvicorn + onnxruntime server, written the
way a user would write it (pydantic request model, sync endpoints running the session).

    KAKEHASHI_BASELINE_MODEL=model.onnx [KAKEHASHI_BASELINE_CONFIG=model.yaml] uvicorn baseline_fastapi:app --port 8010

`POST /v2/models/{m}/infer` takes OIP v2 JSON tensors. `POST /predict` takes one image's raw bytes (a model with an
image input) and answers `{"images": [{"shape": [h, w], "results": [...]}]}`: decode and letterbox, the session,
post-processing, with Kakehashi's own functions for the pre- and post-processing, so both servers do the same work
for each image and differ only in what serves it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
from fastapi import Body, FastAPI
from pydantic import BaseModel

from kakehashi.backends.base import TensorSpec
from kakehashi.repository.config import ModelConfig, load_model_config
from kakehashi.tasks.image_task import prepare_image
from kakehashi.tasks.params import PredictParams
from kakehashi.tasks.resolve import resolve_task

MODEL = os.environ["KAKEHASHI_BASELINE_MODEL"]
session = ort.InferenceSession(MODEL, providers=["CPUExecutionProvider"])
input_name = session.get_inputs()[0].name
output_names = [o.name for o in session.get_outputs()]
app = FastAPI()


def _spec(node: ort.NodeArg) -> TensorSpec:
    datatype = {"tensor(float)": "FP32", "tensor(float16)": "FP16", "tensor(uint8)": "UINT8"}[node.type]
    return TensorSpec(node.name, datatype, tuple(d if isinstance(d, int) else -1 for d in node.shape))


class SessionModel:
    """The session as Kakehashi's task resolution reads a model (its tensors and metadata)."""

    platform = "onnxruntime_onnx"
    providers = session.get_providers()
    inputs = [_spec(node) for node in session.get_inputs()]
    outputs = [_spec(node) for node in session.get_outputs()]
    metadata = session.get_modelmeta().custom_metadata_map

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(output_names, session.run(output_names, feeds)))


CONFIG_FILE = os.environ.get("KAKEHASHI_BASELINE_CONFIG")  # the model's model.yaml (input layout, thresholds)
config = load_model_config(Path(CONFIG_FILE)) if CONFIG_FILE else ModelConfig()
task = resolve_task(SessionModel(), config, Path(MODEL))  # None: no image input


class Tensor(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    data: list[float]


class InferRequest(BaseModel):
    inputs: list[Tensor]


@app.get("/v2/health/ready")
def ready() -> dict:
    return {"ready": True}


@app.get("/v2/models/{model}")
def metadata(model: str) -> dict:
    def shape(node: ort.NodeArg) -> list[int]:
        return [-1 if isinstance(d, str) else d for d in node.shape]

    return {
        "name": model,
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": i.name, "datatype": "FP32", "shape": shape(i)} for i in session.get_inputs()],
        "outputs": [{"name": o.name, "datatype": "FP32", "shape": shape(o)} for o in session.get_outputs()],
    }


@app.post("/v2/models/{model}/infer")
def infer(model: str, request: InferRequest) -> dict:
    tensor = request.inputs[0]
    x = np.array(tensor.data, dtype=np.float32).reshape(tensor.shape)
    (y,) = session.run(None, {input_name: x})
    return {
        "model_name": model,
        "outputs": [{"name": "y", "datatype": "FP32", "shape": list(y.shape), "data": y.ravel().tolist()}],
    }


@app.post("/predict")
def predict(image: bytes = Body(media_type="image/jpeg")) -> dict:
    params = PredictParams(conf=config.defaults.conf, iou=config.defaults.iou)
    prepared = prepare_image(image, task.input, params, 64_000_000)
    outputs = session.run(output_names, {task.input.name: prepared.tensor[None]})
    results = task.postprocess({name: o[0] for name, o in zip(output_names, outputs)}, prepared, params)
    return {"images": [{"shape": list(prepared.original_shape), "results": results}]}

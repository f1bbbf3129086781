"""The baseline most users compare against: a plain FastAPI + uvicorn + onnxruntime server, written the
way a user would write it (pydantic request model, a sync endpoint running the session).

    KAKEHASHI_BASELINE_MODEL=tiny.onnx uvicorn baseline_fastapi:app --port 8010
"""

from __future__ import annotations

import os

import numpy as np
import onnxruntime as ort
from fastapi import FastAPI
from pydantic import BaseModel

session = ort.InferenceSession(os.environ["KAKEHASHI_BASELINE_MODEL"], providers=["CPUExecutionProvider"])
input_name = session.get_inputs()[0].name
app = FastAPI()


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
    return {"name": model, "platform": "onnxruntime_onnx",
            "inputs": [{"name": i.name, "datatype": "FP32", "shape": [-1 if isinstance(d, str) else d for d in i.shape]}
                       for i in session.get_inputs()],
            "outputs": [{"name": o.name, "datatype": "FP32", "shape": [-1 if isinstance(d, str) else d for d in o.shape]}
                        for o in session.get_outputs()]}


@app.post("/v2/models/{model}/infer")
def infer(model: str, request: InferRequest) -> dict:
    tensor = request.inputs[0]
    x = np.array(tensor.data, dtype=np.float32).reshape(tensor.shape)
    (y,) = session.run(None, {input_name: x})
    return {"model_name": model, "outputs": [
        {"name": "y", "datatype": "FP32", "shape": list(y.shape), "data": y.ravel().tolist()}]}

"""The HTTP API's other bodies, for the OpenAPI document: errors, health, metadata, the repository, the status
page, and the Open Inference Protocol's JSON infer bodies as the KServe v2 REST specification states them
(`docs/predict-api/v2/rest_predict_v2.yaml`; Kakehashi parses those with orjson and numpy, not with these)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from typing_extensions import TypeAliasType

from kakehashi.repository.handle import ModelState


class Error(BaseModel):
    """Every error answer: what was wrong."""

    error: str


class Live(BaseModel):
    live: bool


class Ready(BaseModel):
    ready: bool


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int] = Field(description="-1 is a dynamic dimension.")


class ModelMetadata(BaseModel):
    name: str
    versions: list[str] | None = None
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class ModelReady(BaseModel):
    name: str
    version: str
    ready: bool


Parameter = str | float | bool
TensorData = TypeAliasType("TensorData", "list[TensorData | float | str | bool]")


class RequestInput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Parameter] | None = None
    data: TensorData


class RequestOutput(BaseModel):
    name: str
    parameters: dict[str, Parameter] | None = None


class InferRequest(BaseModel):
    id: str | None = None
    parameters: dict[str, Parameter] | None = None
    inputs: list[RequestInput]
    outputs: list[RequestOutput] | None = None


class ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Parameter] | None = None
    data: TensorData


class InferResponse(BaseModel):
    model_name: str
    model_version: str | None = None
    id: str | None = None
    parameters: dict[str, Parameter] | None = None
    outputs: list[ResponseOutput]


class TritonObject(BaseModel):
    """A Triton extension's object (model configuration, statistics), as Triton itself answers it."""

    model_config = ConfigDict(extra="allow")


class Statistics(BaseModel):
    model_stats: list[TritonObject]


class IndexRequest(BaseModel):
    ready: bool | None = Field(None, description="Only the versions that are READY.")


class LoadRequest(BaseModel):
    parameters: dict[str, object] | None = None


class IndexRow(BaseModel):
    name: str
    version: str | None = Field(None, description="Absent while a model has no version loaded.")
    state: ModelState
    reason: str | None = Field(description="Why the version is not ready (null or empty when it is).")


class Figures(BaseModel):
    """One loaded version's cumulative counters, which the web page turns into rates and percentiles."""

    requests: dict[str, int] = Field(description="Requests by outcome.")
    latency: list[list[float]] = Field(description="The successful requests' histogram: [upper bound s, count].")
    queue_depth: int
    batches: dict[str, int] = Field(description="Batch executions by batch size.")
    runtime: str = Field(description="What runs the version, e.g. `onnxruntime CPUExecutionProvider`.")


class Status(BaseModel):
    """The web page's status panel: every model version and the live figures of the loaded ones."""

    time: float
    ready: bool
    models: list[IndexRow]
    figures: dict[str, Figures] = Field(description="By `name:version`.")

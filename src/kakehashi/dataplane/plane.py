"""The data plane: the one thing every transport calls (HTTP `/v1` and `/v2`, gRPC, `batch`, `predict`; the web page
and Ray Serve through HTTP). It owns what each request needs whatever its wire format: tracking, finding the
servable, holding it while the request runs, deadlines, checking requested outputs before inference, and request
parameters. Admission (rows), batching and cancelling a request's sibling work are the servable's."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import Executor
from contextlib import contextmanager

import numpy as np

from kakehashi.dataplane.tracking import RequestTracker
from kakehashi.errors import InvalidInput
from kakehashi.protocols.model_metadata import model_metadata
from kakehashi.protocols.triton_config import model_config
from kakehashi.protocols.vision import parse_params, parse_timeout_ms
from kakehashi.repository.handle import ImagePrediction, ModelHandle
from kakehashi.repository.repository import ModelRepository
from kakehashi.servable import Servable
from kakehashi.statistics import model_statistics
from kakehashi.tasks.images import ImageData
from kakehashi.tasks.params import PredictParams


def _parameters(servable: Servable, values: dict[str, list[str]]) -> PredictParams:
    """A request's parameters (`values`: each name's values, as a query string gives them) over the servable's
    defaults; a bad one is `InvalidInput` naming it."""
    return parse_params(values, servable.config.defaults)


class Call:
    """One request to one servable, open while the transport decodes, runs and encodes it."""

    def __init__(self, servable: Servable, tracker: RequestTracker) -> None:
        self.servable = servable
        self.tracker = tracker

    @property
    def name(self) -> str:
        return self.servable.name

    @property
    def version(self) -> int:
        return self.servable.version

    async def infer(
        self, inputs: dict[str, np.ndarray], outputs: Sequence[str] | None, *timeouts_ms: float | None
    ) -> dict[str, np.ndarray]:
        """Run tensors; the outputs asked for (all if None, else in the order asked), checked before anything runs.
        The request's deadline is the earliest of `timeouts_ms` (the client's, its transport's) and the server's."""
        known = [spec.name for spec in self.servable.require_ready().outputs]
        unknown = [name for name in outputs or () if name not in known]
        if unknown:
            raise InvalidInput(f"unknown output '{unknown[0]}'; the model's outputs are {sorted(known)}")
        given = [timeout for timeout in timeouts_ms if timeout is not None]
        results = await self.servable.infer(inputs, min(given) if given else None)
        return results if outputs is None else {name: results[name] for name in outputs}

    async def predict(self, images: Sequence[ImageData], values: dict[str, list[str]]) -> list[ImagePrediction]:
        """Run images (encoded, or decoded frames) with the request's `parameters`; `timeout` (ms) among `values` is
        the client's deadline."""
        return await self.servable.predict(images, _parameters(self.servable, values), parse_timeout_ms(values))


class DataPlane:
    """Requests and model views over a model repository, for every transport."""

    def __init__(self, repository: ModelRepository) -> None:
        self.repository = repository
        self.begun = 0  # calls opened so far
        self.open = 0  # calls open now

    @property
    def compute(self) -> Executor:
        """The pool for work too large for the event loop (decoding and encoding bodies)."""
        return self.repository.compute

    @contextmanager
    def request(
        self, protocol: str, model: str, version: str | int | None = None, gone: tuple[type[BaseException], ...] = ()
    ) -> Iterator[Call]:
        """Open a tracked call to `model` (a version, or the newest ready one): counted in flight, then by outcome
        (the status of the error that ends it, `gone` ones as cancelled); the servable is not closed under it."""
        self.begun += 1
        self.open += 1
        try:
            with RequestTracker(protocol, gone) as tracker:
                servable = self.repository.get(model, version)
                tracker.series = servable.series.requests
                with servable.serving():
                    yield Call(servable, tracker)
        finally:
            self.open -= 1

    def servable(self, model: str, version: str | int | None = None) -> Servable:
        return self.repository.get(model, version)

    def check(self, model: str, values: dict[str, list[str]]) -> Servable:
        """The servable `model` if it is ready and `values` are valid parameters for it: for a job to check once
        before its many requests."""
        servable = self.repository.get(model)
        servable.require_ready()
        _parameters(servable, values)
        return servable

    def metadata(self, model: str, version: str | int | None = None) -> dict:
        """OIP model metadata (inputs, outputs, served versions)."""
        servable = self.repository.get(model, version)
        return model_metadata(servable, list(self.repository.entries[servable.name].handles))

    def config(self, model: str, version: str | int | None = None) -> dict:
        """The Triton-style model configuration of a model version (runtime, batching, instances); a pipeline's
        names its platform and steps."""
        servable = self.repository.get(model, version)
        if isinstance(servable, ModelHandle):
            return model_config(servable)
        signature = servable.require_ready()
        return {"name": servable.name, "platform": signature.platform, "parameters": {"steps": servable.runtime}}

    def statistics(self, model: str | None = None, version: str | None = None) -> list[dict]:
        """Triton-style statistics of every version matching `model` and `version` (all if None)."""
        return [model_statistics(servable) for servable in self.repository.versions_of(model, version)]

    def index(self, ready_only: bool = False) -> list[dict]:
        return self.repository.index(ready_only)

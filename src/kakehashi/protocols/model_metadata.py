"""Server and model metadata in the Open Inference Protocol's form, shared by the HTTP and gRPC transports."""

from __future__ import annotations

from kakehashi import __version__
from kakehashi.servable import Servable

EXTENSIONS = ["binary_tensor_data", "model_configuration", "model_repository", "statistics"]


def server_metadata() -> dict:
    return {"name": "kakehashi", "version": __version__, "extensions": EXTENSIONS}


def model_metadata(handle: Servable, versions: list[int]) -> dict:
    """A ready model version's inputs and outputs, with every version of the model that is served."""
    backend = handle.require_ready()
    return {
        "name": handle.name,
        "versions": [str(v) for v in sorted(versions)],
        "platform": backend.platform,
        "inputs": [spec.to_json() for spec in backend.inputs],
        "outputs": [spec.to_json() for spec in backend.outputs],
    }

"""Your own Python around a model: pre-processing and decoding for output layouts Kakehashi does not know.

Name a class in `model.yaml` (`handler: module:Class`, the module looked for beside `model.yaml` first, then on the
Python path), or put a `handler.py` with a class `Handler` beside `model.yaml`. Its hooks:

- `setup(context)` (optional): once at load, with the model's name, folder, inputs and outputs (`HandlerContext`).
- `preprocess(image, params) -> {input name: array}`: one decoded RGB image (PIL) to one row of each input, without
  the batch dimension (rows of concurrent requests are batched together by the model's batcher).
- `postprocess(outputs, image, params) -> [result, ...]`: the model's outputs for that row (batch dimension removed)
  to the image's results (JSON-able dicts; `box: {x1, y1, x2, y2}` in the image's pixels draws on the web page).
- `predict(feeds, image, params, runtime) -> outputs` (optional): around the runtime, in place of one inference.
  `runtime.run(feeds)` runs this model on a row (batched with other requests' rows), `runtime.predict(model, image)`
  asks another served model (BLS); e.g. test-time augmentation, or a second model's opinion. It runs in a pool of
  the model's own, so a hook waiting on other models never starves the compute pool they need.

`params` are the request's parameters (`conf`, `iou`, `max_det`, `classes`, `imgsz`, `top_k`, `decimals`). Hooks run in
the compute pool, never on the event loop. A hook that raises `kakehashi.errors.InvalidInput` answers its request
400 with that message; any other exception answers it 500 with a message, its traceback logged, and no other
request (not even one batched with it) is affected.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import logging
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

from kakehashi.backends.base import TensorSpec
from kakehashi.errors import InferenceFailed, KakehashiError, ModelLoadError
from kakehashi.tasks.params import PredictParams

log = logging.getLogger(__name__)
HANDLER_FILE = "handler.py"


@dataclass(frozen=True)
class HandlerContext:
    """What `setup` learns about its model."""

    name: str
    version: int
    folder: Path  # the model's folder (where `model.yaml` is)
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    metadata: dict[str, str]  # the ONNX file's metadata_props


class Runtime:
    """What a handler's `predict` hook may call, from its own thread: this model's runtime on one row, through its
    batcher (`run`), and another served model's results for an image (`predict`, what Triton calls BLS). Both
    block the hook's thread while the server's event loop does the work."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        run: Callable[[dict[str, np.ndarray]], Coroutine[Any, Any, dict[str, np.ndarray]]],
        predict: Callable[[str, Image.Image, PredictParams | None], Coroutine[Any, Any, list[dict]]],
    ) -> None:
        self._loop, self._run, self._predict = loop, run, predict

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """This model's outputs for one row of each input (no batch dimension in or out)."""
        return asyncio.run_coroutine_threadsafe(self._run(feeds), self._loop).result()

    def predict(self, model: str, image: Image.Image, params: PredictParams | None = None) -> list[dict]:
        """Model `model`'s results for `image`, with `params` (its own defaults if None)."""
        return asyncio.run_coroutine_threadsafe(self._predict(model, image, params), self._loop).result()


class Handler(Protocol):
    def preprocess(self, image: Image.Image, params: PredictParams) -> dict[str, np.ndarray]: ...

    def postprocess(self, outputs: dict[str, np.ndarray], image: Image.Image, params: PredictParams) -> list[dict]: ...


def find_handler(reference: str | None, folder: Path) -> Handler | None:
    """The handler `model.yaml` names (`module:Class`), or the `Handler` in `handler.py` beside it, instantiated;
    None if neither. An import or construction failure is a `ModelLoadError` naming what failed."""
    if reference is None and not (folder / HANDLER_FILE).is_file():
        return None
    module_name, _, class_name = (reference or f"{Path(HANDLER_FILE).stem}:Handler").partition(":")
    if not module_name or not class_name:
        raise ModelLoadError(f"{folder}: handler {reference!r}: expected module:Class")
    try:
        module = _module(module_name, folder)
        handler = getattr(module, class_name)()
    except KakehashiError:
        raise
    except Exception as exc:
        log.exception("model folder %s: the handler %s could not be loaded", folder, reference or HANDLER_FILE)
        raise ModelLoadError(f"{folder}: handler {module_name}:{class_name}: {type(exc).__name__}: {exc}") from None
    missing = [hook for hook in ("preprocess", "postprocess") if not callable(getattr(handler, hook, None))]
    if missing:
        raise ModelLoadError(f"{folder}: handler {module_name}:{class_name} has no {' or '.join(missing)} method")
    return handler


def _module(name: str, folder: Path) -> Any:
    """`name` from a file beside `model.yaml` (loaded under a name of its own per folder, so two models' `handler.py`
    never clash), else from the Python path."""
    local = folder / (name.replace(".", "/") + ".py")
    if not local.is_file():
        return importlib.import_module(name)
    unique = f"kakehashi_handler_{abs(hash(str(local.resolve())))}_{name.replace('.', '_')}"
    spec = importlib.util.spec_from_file_location(unique, local)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[unique] = module
    spec.loader.exec_module(module)
    return module


def setup(handler: Handler, context: HandlerContext) -> None:
    """Run the handler's `setup` if it has one; a failure is a `ModelLoadError` (the model is UNAVAILABLE)."""
    hook = getattr(handler, "setup", None)
    if hook is None:
        return
    try:
        hook(context)
    except Exception as exc:
        log.exception("model %s: the handler's setup failed", context.name)
        raise ModelLoadError(f"model {context.name}: the handler's setup failed: {type(exc).__name__}: {exc}") from None


def call_hook(name: str, hook: Any, *args: object) -> Any:
    """Run one of the handler's hooks for one request: its `KakehashiError`s are the request's answer; anything
    else is logged with its traceback and answered 500 naming the hook."""
    try:
        return hook(*args)
    except KakehashiError:
        raise
    except Exception as exc:
        log.exception("the model's handler failed in %s", name)
        raise InferenceFailed(f"the model's handler failed in {name}: {type(exc).__name__}: {exc}") from None

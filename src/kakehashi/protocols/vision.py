"""The vision predict endpoint's wire format, shaped like Ultralytics Platform's predict API."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import orjson
from pydantic import ValidationError

from kakehashi.errors import InvalidInput
from kakehashi.protocols.predict_query import QUERY_SCHEMAS, PredictQuery
from kakehashi.repository.config import Defaults
from kakehashi.repository.handle import ImagePrediction
from kakehashi.tasks.params import PredictParams


def _items(texts: Sequence[str]) -> list[str]:
    """A list parameter's items, each text written `1,2`, `1 2` or `[1, 2]` (and the name possibly repeated)."""
    return [part for text in texts for part in text.strip().strip("[]()").replace(",", " ").split()]


def _quantity(schema: dict, plural: bool) -> str:
    kind = {"integer": ("an integer", "integers"), "number": ("a number", "numbers")}[schema["type"]][plural]
    return f"{kind} between {schema['minimum']} and {schema['maximum']}"


def _expected(schema: dict) -> str:
    """What a parameter's schema asks for, in words."""
    if "enum" in schema:
        return "one of " + ", ".join(schema["enum"])
    if schema["type"] == "array":
        count = f"{schema['minItems']} or {schema['maxItems']}" if "maxItems" in schema else "one or more"
        return f"{count} comma-separated {_quantity(schema['items'], plural=True)}"
    return _quantity(schema, plural=False)


def _query(values: Mapping[str, Sequence[str]]) -> PredictQuery:
    """Request parameters (query and form fields, each possibly repeated) validated by `PredictQuery`; a bad one
    is an `InvalidInput` naming it, what it must be and what it was."""
    given: dict[str, object] = {}
    for name, texts in values.items():
        schema = QUERY_SCHEMAS.get(name)
        if schema is not None and texts:
            given[name] = _items(texts) if schema["type"] == "array" else texts[-1]
    try:
        return PredictQuery.model_validate(given)
    except ValidationError as exc:
        name = str(exc.errors()[0]["loc"][0])
        schema, texts = QUERY_SCHEMAS[name], values[name]
        got = ",".join(texts) if schema["type"] == "array" else texts[-1]
        raise InvalidInput(f"parameter '{name}' must be {_expected(schema)}, got {got!r}") from None


def parse_params(values: Mapping[str, Sequence[str]], defaults: Defaults) -> PredictParams:
    """Request parameters (query and form fields, each possibly repeated) over the model's defaults."""
    return _query(values).params(defaults)


def parse_timeout_ms(values: Mapping[str, Sequence[str]]) -> float | None:
    """The client's `timeout` parameter (milliseconds), if given."""
    return _query({"timeout": values["timeout"]}).timeout if values.get("timeout") else None


def image_answer(prediction: ImagePrediction) -> dict:
    """One image's object in the predict answer: `{shape, results, speed}`."""
    return {"shape": list(prediction.shape), "results": prediction.results, "speed": prediction.speed}


def encode_predictions(model: str, version: int, predictions: list[ImagePrediction]) -> bytes:
    """`{"images": [{shape, results, speed}], "metadata": {model, version, imageCount}}` as JSON bytes."""
    return orjson.dumps(
        {
            "images": [image_answer(p) for p in predictions],
            "metadata": {"model": model, "version": str(version), "imageCount": len(predictions)},
        }
    )

"""A YAML file read into a pydantic model; a bad file is a load error naming the file, the key and what was
expected."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from kakehashi.errors import ModelLoadError

Model = TypeVar("Model", bound=BaseModel)


def load_yaml_file(path: Path, model: type[Model]) -> Model:
    """Parse the YAML file at `path` into `model` (an empty file gives its defaults). Validators see the file's
    path as the validation context (`info.context["path"]`), e.g. to read files named relative to it."""
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ModelLoadError(f"{path}: not valid YAML: {exc}") from None
    try:
        return model.model_validate(raw, context={"path": path})
    except ValidationError as exc:
        raise ModelLoadError(f"{path}: {describe(exc.errors()[0], model)}") from None


def describe(error: ErrorDetails, model: type[BaseModel]) -> str:
    """One validation error in a YAML writer's words: the dotted key, then what was expected and what was found."""
    key = ".".join(str(part) for part in error["loc"])
    if error["type"] == "extra_forbidden":
        known = _known_keys(model, error["loc"][:-1])
        return f"unknown key '{key}'" + (f" (known keys: {', '.join(known)})" if known else "")
    where = f"key '{key}'" if key else "the top level"
    if error["type"] in ("model_type", "model_attributes_type", "dict_type"):
        return f"{where}: expected a mapping of keys, got {error['input']!r}"
    message = error["msg"]
    if message.startswith("Input should be "):
        message = "expected " + message.removeprefix("Input should be ")
    return f"{where}: {message}, got {error['input']!r}"


def _known_keys(model: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    """The keys allowed in the mapping at `loc`, when it is one of the models nested in `model`."""
    for part in loc:
        field = model.model_fields.get(str(part))
        annotation = field.annotation if field is not None else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)

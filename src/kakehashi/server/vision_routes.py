"""The vision endpoint: images in (multipart `file` or a raw image body), detections out."""

from __future__ import annotations

from starlette.datastructures import UploadFile
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from kakehashi.errors import InvalidInput, UnsupportedMedia
from kakehashi.protocols.vision import encode_predictions
from kakehashi.server.disconnect import unless_disconnected
from kakehashi.server.responses import JSONBytes
from kakehashi.server.state import data_plane

FILE_FIELD = "file"
MAX_FILES = 256
RAW_TYPES = ("image/", "application/octet-stream")


async def _images_and_params(request: Request) -> tuple[list[bytes], dict[str, list[str]]]:
    """Image bytes and parameter values (query string, then form fields) from a predict request."""
    values: dict[str, list[str]] = {}
    for key, value in request.query_params.multi_items():
        values.setdefault(key, []).append(value)
    content_type = request.headers.get("content-type", "").lower()
    if content_type.startswith("multipart/form-data"):
        images = []
        async with request.form(max_files=MAX_FILES, max_fields=1000) as form:
            for key, item in form.multi_items():
                if isinstance(item, UploadFile):
                    if key == FILE_FIELD:
                        images.append(await item.read())
                else:
                    values.setdefault(key, []).append(item)
        if not images:
            raise InvalidInput(f"no image: send one or more files in the multipart form field '{FILE_FIELD}'")
        return images, values
    if content_type.startswith(RAW_TYPES):
        return [await request.body()], values
    raise UnsupportedMedia(
        f"unsupported content type {content_type or '(none)'!r}: send images as multipart/form-data "
        f"field '{FILE_FIELD}', or one image as the raw body with an image/* content type"
    )


async def predict(request: Request) -> Response:
    path = request.path_params
    with data_plane(request).request("http", path["model"], path.get("version"), gone=(ClientDisconnect,)) as call:
        images, values = await _images_and_params(request)
        predictions = await unless_disconnected(request, call.predict(images, values))
        return JSONBytes(encode_predictions(call.name, call.version, predictions))


routes = [
    Route("/v1/models/{model}/predict", predict, methods=["POST"]),
    Route("/v1/models/{model}/versions/{version}/predict", predict, methods=["POST"]),
]

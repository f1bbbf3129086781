"""Bad input on the predict endpoint gets a clear 4xx naming the problem, and the server keeps serving."""

from __future__ import annotations

import pytest
from openapi_spec_validator import validate

from conftest import IMAGES, image_bytes

URL = "/v1/models/ssdlite-person/predict"


@pytest.fixture(scope="module")
def server(serve_module):
    return serve_module(None, "--max-body-bytes", "2000000", "--max-pixels", "4000000")


def post_file(server, content: bytes, name="x.png", **params):
    return server.client.post(URL, files=[("file", (name, content, "application/octet-stream"))], params=params)


@pytest.mark.parametrize(
    "content, status, message",
    [
        (b"just some text, not a picture", 415, "not an image in a supported format"),
        (image_bytes(300, 300, "JPEG")[:500], 400, "truncated or corrupt"),
        (b"", 400, "empty"),
        (b"GIF89a" + b"\x00" * 30, 400, "starts like a GIF image but cannot be read"),
        (image_bytes(2100, 2000, "PNG"), 413, "limit is 4000000 pixels"),
    ],
)
def test_bad_images(server, content, status, message):
    response = post_file(server, content)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]


def test_second_of_several_images_is_named(server):
    files = [("file", ("a.png", (IMAGES / "coffee.png").read_bytes())), ("file", ("b.txt", b"nope"))]
    response = server.client.post(URL, files=files)
    assert response.status_code == 415 and response.json()["error"].startswith("image 1: ")


@pytest.mark.parametrize(
    "params, message",
    [
        ({"conf": "high"}, "parameter 'conf' must be a number between 0.0 and 1.0, got 'high'"),
        ({"iou": "1.5"}, "parameter 'iou'"),
        ({"max_det": "0"}, "parameter 'max_det'"),
        ({"imgsz": "1,2,3"}, "parameter 'imgsz'"),
        ({"classes": "a,b"}, "parameter 'classes'"),
        ({"decimals": "-1"}, "parameter 'decimals'"),
    ],
)
def test_bad_parameters(server, params, message):
    response = post_file(server, image_bytes(64, 64), **params)
    assert response.status_code == 400 and message in response.json()["error"]


def test_parameters_as_form_fields(server):
    files = [("file", ("a.png", (IMAGES / "astronaut.png").read_bytes()))]
    response = server.client.post(URL, files=files, data={"conf": "0.99"})
    assert response.status_code == 200 and response.json()["images"][0]["results"] == []
    response = server.client.post(URL, files=files, data={"conf": "nine"})
    assert response.status_code == 400 and "conf" in response.json()["error"]


def test_no_file_field(server):
    response = server.client.post(URL, files=[("image", ("a.png", image_bytes(8, 8)))])
    assert response.status_code == 400 and "multipart form field 'file'" in response.json()["error"]


def test_unsupported_content_type(server):
    response = server.client.post(URL, content=b'{"image": "..."}', headers={"content-type": "application/json"})
    assert response.status_code == 415 and "multipart/form-data" in response.json()["error"]


def test_body_over_the_limit(server):
    response = server.client.post(URL, content=b"\0" * 2_100_000, headers={"content-type": "image/png"})
    assert response.status_code == 413 and "limit of 2000000 bytes" in response.json()["error"]


def test_chunked_body_over_the_limit(server):
    def chunks():
        for _ in range(30):
            yield b"\0" * 100_000

    response = server.client.post(URL, content=chunks(), headers={"content-type": "image/png"})
    assert response.status_code == 413


def test_imgsz_on_a_dynamic_shape_model(server, tmp_path):
    """The bundled detector (300x300 by default, stretched) run at 320x320: the server's answer is the model's
    at 320 (as run in-process), not its answer at 300, and the box is still in the 512x512 photo's pixels."""
    import shutil

    from conftest import QUICK_YAML, same_detections
    from inprocess import load, predict
    from kakehashi.settings import default_model_path

    data = (IMAGES / "astronaut.png").read_bytes()
    response = post_file(server, data, imgsz="320")
    assert response.status_code == 200, response.text
    [image] = response.json()["images"]
    [person] = image["results"]
    assert image["shape"] == [512, 512] and person["name"] == "person"
    assert person["box"]["x2"] > 350 and person["box"]["y2"] > 500  # original pixels, not the model's 320
    bundled = shutil.copytree(default_model_path() / "ssdlite-person", tmp_path / "ssdlite-person")
    (bundled / "model.yaml").write_text((bundled / "model.yaml").read_text() + "\n" + QUICK_YAML)
    handle = load(bundled)  # one runtime, no batching: nothing timed at load (the server's runtime agrees to 1e-3)
    at_320, at_300 = predict(handle, data, imgsz=320)[0].results, predict(handle, data)[0].results
    assert not same_detections(at_320, at_300)  # the two sizes are told apart (box edges ~3 px apart) ...
    assert same_detections(image["results"], at_320)  # ... and the server ran at 320


@pytest.mark.parametrize(
    "path, message",
    [
        ("/v1/models/nope/predict", "unknown model 'nope'"),  # never the served names (anyone may ask)
        ("/v1/models/ssdlite-person/versions/7/predict", "has no version 7; served versions: 1"),
    ],
)
def test_unknown_model_or_version(server, path, message):
    response = server.client.post(path, files=[("file", ("a.png", image_bytes(8, 8)))])
    assert response.status_code == 404 and message in response.json()["error"]


@pytest.mark.parametrize(
    "path, message",
    [
        ("/v1/models/ssdlite-person/versions/latest/predict", "invalid version 'latest'"),
        ("/v1/models/ssdlite-person/versions/..%2F1/predict", "cannot contain '/'"),
        ("/v1/models/..%2F..%2Fetc/predict", "cannot contain '/'"),
        ("/v1/models/%2Fetc%2Fpasswd/predict", "cannot contain '/'"),
        ("/v1/models/..%5Cx/predict", "cannot contain '/'"),
        ("/v1/models/..%00/predict", "cannot contain '/'"),
        ("/v1/models/%2E%2E/predict", "invalid model name '..'"),
        ("/v1/models/.hidden/predict", "invalid model name '.hidden'"),
        ("/v1/models/a%20b%3B/predict", "invalid model name 'a b;'"),
    ],
)
def test_names_and_versions_that_could_reach_the_file_system(server, path, message):
    response = server.client.post(path, files=[("file", ("a.png", image_bytes(8, 8)))])
    assert response.status_code == 400 and message in response.json()["error"]


def test_unknown_route_and_method(server):
    response = server.client.get("/v3/whatever")
    assert response.status_code == 404 and "error" in response.json()
    assert server.client.get(URL).status_code == 405


def test_still_serving_after_all_that(server):
    response = post_file(server, (IMAGES / "astronaut.png").read_bytes())
    assert response.status_code == 200 and response.json()["images"][0]["results"][0]["name"] == "person"
    assert "Traceback" not in server.log()


def test_docs_page_and_openapi(server):
    page = server.client.get("/docs")
    assert page.status_code == 200 and "swagger-ui" in page.text
    assert server.client.get("/docs/assets/swagger-ui-bundle.js").status_code == 200
    spec = server.client.get("/openapi.json").json()
    validate(spec)  # raises on any violation of the OpenAPI 3 schema
    assert "/v1/models/{model}/predict" in spec["paths"] and "/v2/repository/index" in spec["paths"]

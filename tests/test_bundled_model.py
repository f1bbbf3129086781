"""The bundled default model, served with no arguments, over a real socket."""

from __future__ import annotations

import pytest

from conftest import IMAGES

MODEL = "ssdlite-person"


def predict(server, *names: str, **params) -> dict:
    files = [("file", (name, (IMAGES / name).read_bytes(), "image/png")) for name in names]
    response = server.client.post(f"/v1/models/{MODEL}/predict", files=files, params=params)
    assert response.status_code == 200, response.text
    return response.json()


def test_finds_the_astronaut(default_server):
    answer = predict(default_server, "astronaut.png")
    image = answer["images"][0]
    assert image["shape"] == [512, 512]
    assert [r["name"] for r in image["results"]] == ["person"]
    person = image["results"][0]
    assert person["class"] == 0 and person["confidence"] > 0.8
    box = person["box"]
    # the astronaut fills the left two thirds of the picture, top to bottom
    assert 0 <= box["x1"] < 40 and 330 < box["x2"] < 420 and 0 <= box["y1"] < 80 and box["y2"] > 470
    assert answer["metadata"] == {"model": MODEL, "version": "1", "imageCount": 1}
    assert set(image["speed"]) == {"preprocess", "queue", "inference", "postprocess"}


@pytest.mark.parametrize("name", ["coffee.png", "chelsea.png"])
def test_finds_no_person_where_there_is_none(default_server, name):
    assert predict(default_server, name)["images"][0]["results"] == []


def test_several_images_in_one_request_keep_their_order(default_server):
    answer = predict(default_server, "coffee.png", "astronaut.png", "chelsea.png")
    assert answer["metadata"]["imageCount"] == 3
    assert [len(i["results"]) for i in answer["images"]] == [0, 1, 0]
    assert [i["shape"] for i in answer["images"]] == [[400, 600], [512, 512], [300, 451]]


def test_raw_image_body_and_query_parameters(default_server):
    body = (IMAGES / "astronaut.png").read_bytes()
    response = default_server.client.post(
        f"/v1/models/{MODEL}/predict", content=body, headers={"content-type": "image/png"}, params={"decimals": 1}
    )
    assert response.status_code == 200, response.text
    box = response.json()["images"][0]["results"][0]["box"]
    assert all(round(v, 1) == v for v in box.values())


def test_conf_parameter_filters(default_server):
    assert predict(default_server, "astronaut.png", conf=0.99)["images"][0]["results"] == []
    many = predict(default_server, "astronaut.png", conf=0.01)["images"][0]["results"]
    assert len(many) > 1
    assert [r["confidence"] for r in many] == sorted((r["confidence"] for r in many), reverse=True)


def test_server_and_model_metadata(default_server):
    client = default_server.client
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").status_code == 200
    assert client.get("/v2").json()["name"] == "kakehashi"
    meta = client.get(f"/v2/models/{MODEL}").json()
    assert meta["name"] == MODEL and meta["versions"] == ["1"]
    assert meta["inputs"] == [{"name": "image_tensor:0", "datatype": "UINT8", "shape": [-1, -1, -1, 3]}]
    assert {o["name"] for o in meta["outputs"]} == {
        "num_detections:0",
        "detection_scores:0",
        "detection_boxes:0",
        "detection_classes:0",
    }
    assert client.get(f"/v2/models/{MODEL}/ready").status_code == 200
    assert client.get(f"/v2/models/{MODEL}/versions/1/ready").status_code == 200


def test_the_bundled_coco_detector_is_served_by_name(serve_module):
    """`kakehashi serve yolox-nano-coco`: the bundled COCO detector (real YOLOX-Nano weights) finds what the
    shared models' README lists for these photos — the cup on the coffee table, the cat, the astronaut."""
    server = serve_module("yolox-nano-coco")
    found = {}
    for name in ("coffee.png", "chelsea.png", "astronaut.png"):
        response = server.client.post(
            "/v1/models/yolox-nano-coco/predict",
            content=(IMAGES / name).read_bytes(),
            headers={"content-type": "image/png"},
        )
        assert response.status_code == 200, response.text
        found[name] = {r["name"]: r["confidence"] for r in response.json()["images"][0]["results"]}
    assert found["coffee.png"]["cup"] > 0.85 and "dining table" in found["coffee.png"]
    assert set(found["chelsea.png"]) == {"cat"} and set(found["astronaut.png"]) == {"person"}
    assert found["astronaut.png"]["person"] > 0.9

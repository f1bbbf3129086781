"""The web page in a real browser: Playwright for Python driving Debian's Chromium (installed with apt by the
test setup when missing; never a browser download). Screenshots go to test-artifacts/."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import debian
from conftest import IMAGES
from kakehashi.settings import coco_model_path
from stream_videos import make_walk_video

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
# the status row shows a rate and a p50 from two readings with requests between them
LIVE_FIGURES = (
    "() => { const c = document.querySelectorAll(\"#models tr[data-model='ssdlite-person'] td\");"
    " return c.length > 4 && c[3].textContent !== '' && Number(c[4].textContent) > 0; }"
)


@pytest.fixture(scope="module")
def chromium() -> Path:
    """Debian's Chromium, installed with apt if it is not there yet."""
    debian.ensure(debian.CHROMIUM, CHROMIUM.exists)
    return CHROMIUM


@pytest.fixture(scope="module")
def browser(chromium):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium), args=ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def keyed_server(serve_module):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KAKEHASHI_API_KEYS", "page-key")
        return serve_module(None)


def _page(browser, server, requests: list):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.on("request", lambda request: requests.append(request.url))
    page.goto(server.url + "/")
    return page


def test_upload_shows_boxes_table_and_timing(browser, default_server, artifacts):
    requests: list[str] = []
    page = _page(browser, default_server, requests)
    page.wait_for_selector("#model option[value='ssdlite-person']", state="attached")
    # the status view has its first reading, so the next one (2 s on) brackets the upload's request
    page.wait_for_selector("#models tr[data-model='ssdlite-person'] td.state-READY")
    page.set_input_files("#files", str(IMAGES / "astronaut.png"))
    box = page.wait_for_selector(".box[data-name='person']")
    assert box.inner_text().startswith("person 0.9")
    row = page.locator("table.detections tbody tr").first
    assert row.locator("td").nth(2).inner_text() == "person" and float(row.locator("td").nth(3).inner_text()) > 0.9
    assert "inference" in page.inner_text(".timing") and "queue" in page.inner_text(".timing")
    page.wait_for_function(LIVE_FIGURES, timeout=15000)  # the status view has shown this request
    page.screenshot(path=str(artifacts / "web-page-detections.png"), full_page=True)

    page.fill("#conf", "0.95")  # above the person's confidence: the box goes away
    page.dispatch_event("#conf", "input")
    page.wait_for_selector(".box", state="detached")
    assert "Nothing found" in page.inner_text("table.detections")
    # nothing leaves the server's origin (blob: URLs are the page's own copies of the chosen files)
    assert requests and all(url.removeprefix("blob:").startswith(default_server.url + "/") for url in requests)
    page.close()


def test_a_text_file_shows_the_error_in_plain_words(browser, default_server, tmp_path, artifacts):
    page = _page(browser, default_server, [])
    page.wait_for_selector("#model option[value='ssdlite-person']", state="attached")
    notes = tmp_path / "notes.txt"
    notes.write_text("these are my notes, not a picture")
    page.set_input_files("#files", str(notes))
    error = page.wait_for_selector(".card .error")
    assert "not an image the server can read" in error.inner_text() and "415" in error.inner_text()
    page.screenshot(path=str(artifacts / "web-page-error.png"), full_page=True)
    page.close()


def test_status_view_lists_the_model_with_live_figures(browser, default_server):
    page = _page(browser, default_server, [])
    page.wait_for_selector("#models tr[data-model='ssdlite-person'] td.state-READY")
    assert page.inner_text("#server-state") == "ready"
    for _ in range(3):
        default_server.client.post(
            "/v1/models/ssdlite-person/predict",
            content=(IMAGES / "coffee.png").read_bytes(),
            headers={"content-type": "image/png"},
        )
    page.wait_for_function(LIVE_FIGURES, timeout=15000)
    cells = page.locator("#models tr[data-model='ssdlite-person'] td")
    assert float(cells.nth(3).inner_text()) >= 0 and "1×" in cells.nth(7).inner_text()
    parameters = default_server.client.get("/v2/models/ssdlite-person/config").json()["parameters"]
    assert cells.nth(8).inner_text() == parameters["runtime"]["string_value"]
    precision, agreement = parameters["precision"]["string_value"], parameters["precision_agreement"]["string_value"]
    assert cells.nth(9).inner_text() == (f"{precision} ({agreement})" if agreement else precision)
    page.close()


def test_with_api_keys_the_page_asks_for_one_and_keeps_it_in_the_session(browser, keyed_server, artifacts):
    page = _page(browser, keyed_server, [])
    page.wait_for_selector("#page-error:not([hidden])")
    assert "needs an API key" in page.inner_text("#page-error")
    page.fill("#api-key", "page-key")
    page.dispatch_event("#api-key", "change")
    page.wait_for_selector("#model option[value='ssdlite-person']", state="attached")
    page.set_input_files("#files", str(IMAGES / "astronaut.png"))
    page.wait_for_selector(".box[data-name='person']")
    assert page.evaluate("() => sessionStorage.getItem('kakehashi-api-key')") == "page-key"
    assert page.evaluate("() => localStorage.length") == 0
    page.close()


@pytest.fixture(scope="module")
def task_server(serve_module, tmp_path_factory):
    """Segmentation and pose models with known outputs (see test_segment_pose.py)."""
    from onnx_builders import constant_model
    from test_segment_pose import NAMES, PROTOS, _pose_rows, _raw_segment

    root = tmp_path_factory.mktemp("tasks")
    constant_model(
        root / "seg" / "1" / "model.onnx",
        {"output0": _raw_segment(), "output1": PROTOS},
        metadata={"names": NAMES, "task": "segment", "end2end": "False"},
    )
    constant_model(
        root / "pose" / "1" / "model.onnx",
        {"output0": _pose_rows()},
        metadata={"names": NAMES, "task": "pose", "kpt_shape": "[2, 3]", "end2end": "False"},
    )
    return serve_module(root)


def test_masks_and_keypoints_are_drawn(browser, task_server, tmp_path, artifacts):
    from conftest import image_bytes

    wide = tmp_path / "wide.png"
    wide.write_bytes(image_bytes(1280, 640))
    page = _page(browser, task_server, [])
    page.wait_for_selector("#model option[value='seg']", state="attached")
    page.select_option("#model", "seg")
    page.set_input_files("#files", str(wide))
    mask = page.wait_for_selector("svg polygon.mask[data-name='a']", state="attached")
    xs = [float(point.split(",")[0]) for point in mask.get_attribute("points").split()]
    assert (min(xs), max(xs)) == (440, 639)
    page.screenshot(path=str(artifacts / "web-page-segment.png"), full_page=True)
    page.select_option("#model", "pose")
    # keypoints with visibility > 0.5: one of each detection (0.8 and 0.9)
    page.wait_for_function("() => document.querySelectorAll('svg circle.keypoint').length === 2", timeout=15000)
    page.screenshot(path=str(artifacts / "web-page-pose.png"), full_page=True)
    page.close()


@pytest.fixture(scope="module")
def versions_server(serve_module, tmp_path_factory):
    """Two versions of a raw-head detector whose two boxes overlap with IoU 0.6; bodies over 300 kB refused."""
    from onnx_builders import constant_model

    root = tmp_path_factory.mktemp("versions")
    for version, scores in ((1, (0.9, 0.8)), (2, (0.6, 0.5))):
        rows = np.zeros((1, 6, 2), np.float32)  # [cx, cy, w, h, score class 0, score class 1] x 2 anchors
        rows[0, :, 0] = (100, 100, 100, 100, scores[0], 0)
        rows[0, :, 1] = (125, 100, 100, 100, scores[1], 0)  # 75 px of 100 overlap: IoU 0.6
        constant_model(
            root / "det" / str(version) / "model.onnx",
            {"output0": rows},
            metadata={
                "names": "{0: 'widget', 1: 'gadget'}",
                "task": "detect",
                "end2end": "False",
                "stride": "32",
                "imgsz": "[640, 640]",
            },
        )
    (root / "det" / "model.yaml").write_text("version_policy: {all: true}\n")
    return serve_module(root, "--max-body-bytes", "300000")


def test_versions_several_images_iou_and_a_file_too_large(browser, versions_server, tmp_path, artifacts):
    from conftest import image_bytes

    first, second = tmp_path / "first.png", tmp_path / "second.png"
    first.write_bytes(image_bytes(640, 640))
    second.write_bytes(image_bytes(640, 640, color=(10, 200, 10)))
    page = _page(browser, versions_server, [])
    page.wait_for_selector("#version option[value='1']", state="attached")
    page.set_input_files("#files", [str(first), str(second)])
    page.wait_for_function("() => document.querySelectorAll('.card .box').length === 4")  # two images, two boxes
    assert page.locator(".card h3").all_inner_texts() == ["first.png", "second.png"]
    assert page.locator(".card").first.locator(".box").first.inner_text().startswith("widget 0.6")  # newest: v2

    page.select_option("#version", "1")
    page.wait_for_function(
        "() => [...document.querySelectorAll('.card .box')].some(b => b.textContent.includes('0.90'))"
    )
    page.fill("#iou", "0.5")  # below the boxes' overlap: NMS keeps one of the two
    page.dispatch_event("#iou", "input")
    page.wait_for_function("() => document.querySelectorAll('.card .box').length === 2")
    page.screenshot(path=str(artifacts / "web-page-versions.png"), full_page=True)

    page.set_input_files("#files", str(IMAGES / "astronaut.png"))  # 790 kB: over this server's limit
    error = page.wait_for_selector(".card .error")
    assert "too large" in error.inner_text() or "larger than it accepts" in error.inner_text(), error.inner_text()
    page.close()


@pytest.fixture(scope="module")
def pipeline_server(serve_module, tmp_path_factory):
    """The detect → crop → classify pipeline of test_pipelines (a constant detector, a colour classifier)."""
    from onnx_builders import colour_classifier
    from test_pipelines import BLUE_DEFECT, RED_PART, _detector, _member

    root = tmp_path_factory.mktemp("pipeline")
    _member(root, "parts", lambda path: _detector(path, [RED_PART, BLUE_DEFECT], 640))
    _member(root, "colour", colour_classifier)
    (root / "inspect").mkdir()
    (root / "inspect" / "pipeline.yaml").write_text("detect: {model: parts}\nclassify: {model: colour, top_k: 1}\n")
    return serve_module(root)


# each row of the detections table as [name, classified as]
TABLE_ROWS = (
    "[...document.querySelectorAll('table.detections tbody tr')]"
    ".map((row) => [row.cells[2]?.textContent ?? '', row.cells[8]?.textContent ?? ''])"
)


def test_a_pipeline_is_served_on_the_page_with_each_detections_class(browser, pipeline_server, tmp_path, artifacts):
    from test_pipelines import _painted

    painted = tmp_path / "painted.png"
    painted.write_bytes(_painted())
    page = _page(browser, pipeline_server, [])
    page.wait_for_selector("#model option[value='inspect']", state="attached")
    page.select_option("#model", "inspect")
    page.set_input_files("#files", str(painted))
    page.wait_for_selector(".box[data-name='defect']")
    # the table checked and read in one evaluation: the model's change re-runs the prediction (debounced), which may
    # replace the card between separate reads of it
    complete = page.wait_for_function(
        f"""() => {{
            const rows = {TABLE_ROWS};
            const both = ['part', 'defect'].every((name) => rows.some((row) => row[0] === name));
            return both ? rows.map((row) => [row[0], row[1]]) : null;
        }}"""
    )
    classified = dict(complete.json_value())
    assert classified["part"].startswith("red ") and classified["defect"].startswith("blue ")
    timing = page.inner_text(".timing")
    assert "detect" in timing and "classify" in timing and "undefined" not in timing
    page.screenshot(path=str(artifacts / "web-page-pipeline.png"), full_page=True)
    page.close()


STREAM_CONFIG = """
streams:
  - name: walk
    url: {video}
    loop: true
    zones: [{{name: right, points: [[320, 0], [640, 0], [640, 480], [320, 480]]}}]
    lines: [{{name: middle, start: [320, 0], end: [320, 480]}}]
    rules:
      - {{kind: presence, name: person-right, classes: [person], zone: right, frames: 3, cooldown_seconds: 600}}
events:
  outbox: {outbox}
"""


def test_live_view_shows_a_stream_with_its_frame_figures_zones_and_events(browser, serve, tmp_path, artifacts):
    """A stream of the walking astronaut (a looping file) on a keyed server: the page, given the key, follows the
    stream's results (SSE with the key header) and shows its annotated frame, fps, lag, zone and line counts and the
    events as they come."""
    video = make_walk_video(tmp_path / "walk.mp4", seconds=3.0, fps=15)
    config = tmp_path / "streams.yaml"
    config.write_text(STREAM_CONFIG.format(video=video, outbox=tmp_path / "events.db"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KAKEHASHI_API_KEYS", "page-key")
        server = serve(coco_model_path(), "--config", str(config))
    page = _page(browser, server, [])
    page.fill("#api-key", "page-key")
    page.dispatch_event("#api-key", "change")
    page.wait_for_selector("#stream option[value='walk']", state="attached", timeout=30000)
    page.wait_for_function("() => document.querySelector('#stream-frame').naturalWidth === 640", timeout=30000)
    page.wait_for_function("() => Number(document.querySelector('#stream-fps').textContent) > 0", timeout=30000)
    assert page.inner_text("#stream-state") == "running"
    assert page.inner_text("#stream-lag").endswith(" ms") and int(page.inner_text("#stream-number")) > 0
    page.wait_for_selector("#stream-zones tr[data-name='right']")
    line = page.inner_text("#stream-zones tr[data-name='middle']")
    assert "in " in line and " / out " in line
    event = page.wait_for_selector("#stream-events li", timeout=30000)  # the walker reaches the right half
    assert "person-right (presence) track" in event.inner_text()
    recorded = server.client.get("/v1/events", params={"stream": "walk"}, headers={"X-API-Key": "page-key"})
    assert {e["rule"] for e in recorded.json()["events"]} == {"person-right"}
    page.screenshot(path=str(artifacts / "web-page-live-stream.png"), full_page=True)
    page.close()

"""Deployment files: the Dockerfile passes hadolint, the container's own entrypoint/env/healthcheck work (run
outside Docker, which this machine does not have), and the Kubernetes manifests validate against the schemas."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from conftest import IMAGES, free_port, image_bytes

ROOT = Path(__file__).parent.parent
DOCKERFILE = ROOT / "Dockerfile"
BIN = Path(sys.executable).parent


def _runtime_stage() -> list[str]:
    lines = DOCKERFILE.read_text().replace("\\\n", " ").splitlines()
    start = max(i for i, line in enumerate(lines) if line.startswith("FROM "))
    return [line.strip() for line in lines[start:] if line.strip() and not line.lstrip().startswith("#")]


def _instruction(name: str) -> list[str]:
    return [line[len(name) + 1 :].strip() for line in _runtime_stage() if line.startswith(name + " ")]


def test_dockerfile_passes_hadolint():
    result = subprocess.run([str(BIN / "hadolint"), str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_image_is_slim_non_root_with_healthcheck_and_exec_entrypoint():
    stage = _runtime_stage()
    assert stage[0].startswith("FROM python:3.11-slim")
    assert _instruction("USER") == ["10001"]
    assert "/v2/health/ready" in _instruction("HEALTHCHECK")[0]
    assert json.loads(_instruction("ENTRYPOINT")[0]) == ["kakehashi", "serve"]  # exec form: SIGTERM reaches it
    assert set(_instruction("EXPOSE")[0].split()) == {"8000", "8001"}


def test_the_containers_command_serves_passes_its_healthcheck_and_exits_0_on_sigterm(tmp_path):
    """The Dockerfile's own command, environment and health check; draining with requests in flight is
    test_graceful_shutdown's subject."""
    env = dict(os.environ)
    for assignments in _instruction("ENV"):
        env.update(pair.split("=", 1) for pair in shlex.split(assignments))
    port, grpc_port = free_port(), free_port()
    env.update(
        KAKEHASHI_HOST="127.0.0.1", KAKEHASHI_PORT=str(port), KAKEHASHI_GRPC_PORT=str(grpc_port)
    )  # tests stay local
    assert env["KAKEHASHI_GRACE_SECONDS"] == "25"
    command = [str(BIN / part) if i == 0 else part for i, part in enumerate(json.loads(_instruction("ENTRYPOINT")[0]))]
    server = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    health = json.loads(_instruction("HEALTHCHECK")[0].split("CMD", 1)[1])
    health = [sys.executable if health[0] == "python" else health[0], *health[1:]]
    health[-1] = health[-1].replace("127.0.0.1:8000", f"127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 60
        while subprocess.run(health, capture_output=True).returncode != 0:
            assert time.monotonic() < deadline and server.poll() is None
            time.sleep(0.2)
        answer = httpx.post(
            f"http://127.0.0.1:{port}/v1/models/ssdlite-person/predict",
            content=(IMAGES / "astronaut.png").read_bytes(),
            headers={"content-type": "image/png"},
        )
        assert answer.json()["images"][0]["results"][0]["name"] == "person"
        server.send_signal(signal.SIGTERM)
        assert server.wait(40) == 0
    finally:
        if server.poll() is None:
            server.kill()


def test_kubernetes_manifests_validate_against_the_schemas():
    manifests = sorted((ROOT / "deploy" / "kubernetes").glob("*.yaml"))
    result = subprocess.run(
        [str(BIN / "kubernetes-validate"), "--strict", *map(str, manifests)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    kinds = {doc["kind"] for path in manifests for doc in yaml.safe_load_all(path.read_text())}
    assert kinds == {"ConfigMap", "Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"}
    deployment = next(doc for doc in yaml.safe_load_all(manifests[0].read_text()) if doc["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert {"startupProbe", "readinessProbe", "livenessProbe", "resources"} <= set(container)
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"


@pytest.mark.slow
@pytest.mark.timeout(1500)  # may build the KServe SDK's virtualenv first
def test_kserve_manifests_validate_against_the_kserve_models(artifacts):
    from conftest import virtualenv

    python = virtualenv("kserve-venv", ["kserve==0.21.0"], artifacts / "kserve-venv-install.log")
    manifests = sorted(str(p) for p in (ROOT / "deploy" / "kserve").glob("*.yaml"))
    result = subprocess.run(
        [str(python), str(ROOT / "tests" / "kserve_validate.py"), *manifests],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ServingRuntime kakehashi valid" in result.stdout and "InferenceService yolo26n valid" in result.stdout
    runtime = yaml.safe_load((ROOT / "deploy" / "kserve" / "serving-runtime.yaml").read_text())
    assert "v2" in runtime["spec"]["protocolVersions"]
    assert runtime["spec"]["containers"][0]["args"][:1] == ["/mnt/models"]


@pytest.mark.parametrize("layout", ["file", "folder"])
def test_the_serving_runtimes_args_serve_the_model_under_the_inference_services_name(tmp_path, layout):
    """What KServe runs: the image's entrypoint + the ServingRuntime's args, {{.Name}} filled in from the
    InferenceService, over /mnt/models as the storage initializer leaves it (ports moved to free local ones)."""
    from onnx_builders import size_probe_model

    runtime = yaml.safe_load((ROOT / "deploy" / "kserve" / "serving-runtime.yaml").read_text())
    service = yaml.safe_load((ROOT / "deploy" / "kserve" / "inference-service.yaml").read_text())
    name = service["metadata"]["name"]
    mnt = tmp_path / "mnt" / "models"
    target = mnt / "model.onnx" if layout == "file" else mnt / "1" / "model.onnx"
    target.parent.mkdir(parents=True)
    size_probe_model(target)  # a tiny detector: what matters here is where and under which name it is served
    port = free_port()
    args = [arg.replace("{{.Name}}", name) for arg in runtime["spec"]["containers"][0]["args"]]
    args = [str(mnt) if arg == "/mnt/models" else str(port) if arg == "8080" else arg for arg in args]
    entrypoint = json.loads(_instruction("ENTRYPOINT")[0])
    env = {**os.environ, "KAKEHASHI_HOST": "127.0.0.1"}
    server = subprocess.Popen(
        [str(BIN / entrypoint[0]), *entrypoint[1:], *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline, status = time.monotonic() + 60, None
        while status != 200:
            assert time.monotonic() < deadline and server.poll() is None
            try:
                status = httpx.get(f"http://127.0.0.1:{port}/v2/models/{name}/ready").status_code
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        assert [m["name"] for m in httpx.post(f"http://127.0.0.1:{port}/v2/repository/index").json()] == [name]
        answer = httpx.post(
            f"http://127.0.0.1:{port}/v1/models/{name}/predict",
            content=image_bytes(640, 640),
            headers={"content-type": "image/png"},
            timeout=60,
        )
        assert answer.json()["images"][0]["results"][0]["name"] == "probe"  # the model from /mnt/models answers
    finally:
        server.terminate()
        server.wait(30)


@pytest.mark.slow
@pytest.mark.timeout(1500)  # may build the KServe SDK's virtualenv first
def test_the_kserve_validator_rejects_what_is_wrong(tmp_path, artifacts):
    from conftest import virtualenv

    python = virtualenv("kserve-venv", ["kserve==0.21.0"], artifacts / "kserve-venv-install.log")
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(
        (ROOT / "deploy" / "kserve" / "inference-service.yaml")
        .read_text()
        .replace("minReplicas: 1", "minReplicas: 1\n    replicaz: 3")
    )
    result = subprocess.run(
        [str(python), str(ROOT / "tests" / "kserve_validate.py"), str(wrong)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1 and "unknown field 'replicaz'" in result.stdout

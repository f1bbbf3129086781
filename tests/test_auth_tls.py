"""API keys (HTTP headers and gRPC metadata) and TLS on both ports, with the real clients."""

from __future__ import annotations

import ssl

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
import trustme
from tritonclient.utils import InferenceServerException

from conftest import IMAGES

KEY, OTHER_KEY = "s3cret-key-1", "another-key-2"
ADMIN_KEY, OTHER_ADMIN_KEY = "admin-key-3", "admin-key-4"
PREDICT = "/v1/models/ssdlite-person/predict"
ASTRONAUT = (IMAGES / "astronaut.png").read_bytes()


@pytest.fixture(scope="module")
def keyed(serve_module, tmp_path_factory):
    folder = tmp_path_factory.mktemp("keys")
    (folder / "keys.txt").write_text(f"# rotated monthly\n{OTHER_KEY}\n")
    (folder / "admin.txt").write_text(f"{OTHER_ADMIN_KEY}  # ops\n")
    with pytest.MonkeyPatch.context() as patch:  # the server process inherits the environment
        patch.setenv("KAKEHASHI_API_KEYS", KEY)
        patch.setenv("KAKEHASHI_ADMIN_KEYS", ADMIN_KEY)
        return serve_module(
            None,
            "--api-keys-file",
            str(folder / "keys.txt"),
            "--admin-keys-file",
            str(folder / "admin.txt"),
            "--model-control",
            "explicit",
        )


def _predict(server, **headers) -> httpx.Response:
    return server.client.post(PREDICT, content=ASTRONAUT, headers={"content-type": "image/png", **headers})


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"X-API-Key": "s3cret-key"},
        {"Authorization": f"Basic {KEY}"},
        {"X-API-Key": KEY + "x"},
    ],
)
def test_requests_without_a_valid_key_get_a_bare_401(keyed, headers):
    response = _predict(keyed, **headers)
    assert response.status_code == 401 and response.json() == {"error": "unauthorized"}
    assert response.headers["www-authenticate"] == "Bearer"
    for path in ("/v2", "/v2/models/ssdlite-person", "/metrics"):
        assert keyed.client.get(path, headers=headers).status_code == 401


def test_a_refused_upload_leaves_the_client_a_working_connection(keyed):
    """A 401 is sent without reading the body (the image): the connection closes with it, so the client's next
    request goes on a fresh connection and is answered, instead of failing on one the server dropped."""
    for _ in range(20):
        assert _predict(keyed).status_code == 401
        assert keyed.client.get("/v2", headers={"X-API-Key": KEY}).status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": f"Bearer {KEY}"},
        {"authorization": f"bearer {OTHER_KEY}"},
        {"X-API-Key": KEY},
        {"X-API-Key": OTHER_KEY},
        {"X-API-Key": ADMIN_KEY},
        {"Authorization": f"Bearer {OTHER_ADMIN_KEY}"},
    ],
)
def test_keys_from_the_env_and_the_file_are_accepted(keyed, headers):
    response = _predict(keyed, **headers)
    assert response.status_code == 200 and response.json()["images"][0]["results"][0]["name"] == "person"


def test_health_and_docs_stay_open(keyed):
    for path in (
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/ssdlite-person/ready",
        "/v2/models/ssdlite-person/versions/1/ready",
        "/docs",
        "/openapi.json",
    ):
        assert keyed.client.get(path).status_code == 200, path
    for path in ("/v2/models/ssdlite-person/ready/x", "/v2/models/ssdlite-person/config"):  # only the health API
        assert keyed.client.get(path).status_code == 401, path


def test_load_and_unload_need_an_admin_key(keyed):
    for action in ("unload", "load"):
        path = f"/v2/repository/models/ssdlite-person/{action}"
        assert keyed.client.post(path).status_code == 401
        for key in (KEY, OTHER_KEY):
            response = keyed.client.post(path, headers={"X-API-Key": key})
            assert response.status_code == 403 and "admin key" in response.json()["error"]
        assert keyed.client.get("/v2/models/ssdlite-person/ready").status_code == 200  # refused: nothing changed
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    assert keyed.client.post("/v2/repository/models/ssdlite-person/unload", headers=admin).status_code == 200
    assert keyed.client.get("/v2/models/ssdlite-person/ready").status_code == 503
    assert (
        keyed.client.post(
            "/v2/repository/models/ssdlite-person/load", headers={"X-API-Key": OTHER_ADMIN_KEY}
        ).status_code
        == 200
    )
    assert keyed.client.get("/v2/models/ssdlite-person/ready").status_code == 200


def test_grpc_load_and_unload_need_an_admin_key(keyed):
    with triton_grpc.InferenceServerClient(keyed.grpc_address) as client:
        for call in (client.unload_model, client.load_model):
            with pytest.raises(InferenceServerException) as raised:
                call("ssdlite-person")
            assert raised.value.status() == "StatusCode.UNAUTHENTICATED"
            with pytest.raises(InferenceServerException) as raised:
                call("ssdlite-person", headers={"x-api-key": KEY})
            assert raised.value.status() == "StatusCode.PERMISSION_DENIED" and "admin key" in raised.value.message()
        assert client.is_model_ready("ssdlite-person")
        client.unload_model("ssdlite-person", headers={"authorization": f"Bearer {OTHER_ADMIN_KEY}"})
        assert not client.is_model_ready("ssdlite-person")
        client.load_model("ssdlite-person", headers={"x-api-key": ADMIN_KEY})
        assert client.is_model_ready("ssdlite-person")


def test_an_unknown_model_names_no_served_model_without_a_key(keyed):
    response = keyed.client.get("/v2/models/zzz/ready")  # open, as the health API
    assert response.status_code == 404 and "ssdlite-person" not in response.text
    with triton_grpc.InferenceServerClient(keyed.grpc_address) as client:
        with pytest.raises(InferenceServerException) as raised:
            client.is_model_ready("zzz")
        assert raised.value.status() == "StatusCode.NOT_FOUND" and "ssdlite-person" not in raised.value.message()


def test_grpc_needs_the_key_in_metadata(keyed):
    with triton_grpc.InferenceServerClient(keyed.grpc_address) as client:
        assert client.is_server_live() and client.is_server_ready()  # health stays open
        assert client.is_model_ready("ssdlite-person")
        with pytest.raises(InferenceServerException) as raised:
            client.get_model_metadata("ssdlite-person")
        assert raised.value.status() == "StatusCode.UNAUTHENTICATED" and raised.value.message() == "unauthorized"
        with pytest.raises(InferenceServerException, match="unauthorized"):
            client.get_model_metadata("ssdlite-person", headers={"authorization": "Bearer wrong"})
        meta = client.get_model_metadata("ssdlite-person", headers={"authorization": f"Bearer {KEY}"})
        assert meta.name == "ssdlite-person"
        image = triton_grpc.InferInput("image_tensor:0", [1, 32, 32, 3], "UINT8")
        image.set_data_from_numpy(np.zeros((1, 32, 32, 3), np.uint8))
        result = client.infer("ssdlite-person", [image], headers={"x-api-key": OTHER_KEY})
        assert result.as_numpy("detection_boxes:0").shape == (1, 100, 4)


def test_tritonclient_http_with_a_key(keyed):
    client = triton_http.InferenceServerClient(keyed.url.removeprefix("http://"))
    with pytest.raises(InferenceServerException, match="unauthorized"):
        client.get_model_config("ssdlite-person")
    assert (
        client.get_model_config("ssdlite-person", headers={"Authorization": f"Bearer {KEY}"})["name"]
        == "ssdlite-person"
    )


@pytest.fixture(scope="module")
def tls(serve_module, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tls")
    authority = trustme.CA()
    certificate = authority.issue_cert("127.0.0.1", "localhost")
    certificate.private_key_pem.write_to_path(str(folder / "key.pem"))
    certificate.cert_chain_pems[0].write_to_path(str(folder / "cert.pem"))
    authority.cert_pem.write_to_path(str(folder / "ca.pem"))
    server = serve_module(None, "--tls-cert", str(folder / "cert.pem"), "--tls-key", str(folder / "key.pem"), wait=None)
    server.url = server.url.replace("http://", "https://")
    server.client = httpx.Client(
        base_url=server.url, timeout=60, verify=ssl.create_default_context(cafile=str(folder / "ca.pem"))
    )
    server.wait_until()
    return server, folder / "ca.pem"


def test_https_with_a_trusted_certificate(tls):
    server, authority = tls
    response = _predict(server)
    assert response.status_code == 200 and response.json()["images"][0]["results"][0]["name"] == "person"
    with pytest.raises(httpx.ConnectError):  # a client that does not trust the certificate refuses it
        httpx.get(server.url + "/v2/health/live")
    with pytest.raises(httpx.RemoteProtocolError):  # and plain HTTP is not served on the TLS port
        httpx.get(server.url.replace("https://", "http://") + "/v2/health/live")


def test_grpc_over_tls(tls):
    server, authority = tls
    with triton_grpc.InferenceServerClient(server.grpc_address, ssl=True, root_certificates=str(authority)) as client:
        assert client.is_server_ready() and client.get_model_metadata("ssdlite-person").name == "ssdlite-person"
    with triton_grpc.InferenceServerClient(server.grpc_address) as plain:
        with pytest.raises(InferenceServerException):
            plain.is_server_live()

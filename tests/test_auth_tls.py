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
PREDICT = "/v1/models/ssdlite-person/predict"
ASTRONAUT = (IMAGES / "astronaut.png").read_bytes()


@pytest.fixture(scope="module")
def keyed(serve_module, tmp_path_factory):
    keys = tmp_path_factory.mktemp("keys") / "keys.txt"
    keys.write_text(f"# rotated monthly\n{OTHER_KEY}\n")
    with pytest.MonkeyPatch.context() as patch:  # the server process inherits the environment
        patch.setenv("KAKEHASHI_API_KEYS", KEY)
        return serve_module(None, "--api-keys-file", str(keys))


def _predict(server, **headers) -> httpx.Response:
    return server.client.post(PREDICT, content=ASTRONAUT, headers={"content-type": "image/png", **headers})


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"X-API-Key": "s3cret-key"},
                                     {"Authorization": f"Basic {KEY}"}, {"X-API-Key": KEY + "x"}])
def test_requests_without_a_valid_key_get_a_bare_401(keyed, headers):
    response = _predict(keyed, **headers)
    assert response.status_code == 401 and response.json() == {"error": "unauthorized"}
    assert response.headers["www-authenticate"] == "Bearer"
    for path in ("/v2", "/v2/models/ssdlite-person", "/metrics"):
        assert keyed.client.get(path, headers=headers).status_code == 401


@pytest.mark.parametrize("headers", [{"Authorization": f"Bearer {KEY}"}, {"authorization": f"bearer {OTHER_KEY}"},
                                     {"X-API-Key": KEY}, {"X-API-Key": OTHER_KEY}])
def test_keys_from_the_env_and_the_file_are_accepted(keyed, headers):
    response = _predict(keyed, **headers)
    assert response.status_code == 200 and response.json()["images"][0]["results"][0]["name"] == "person"


def test_health_and_docs_stay_open(keyed):
    for path in ("/v2/health/live", "/v2/health/ready", "/v2/models/ssdlite-person/ready",
                 "/v2/models/ssdlite-person/versions/1/ready", "/docs", "/openapi.json"):
        assert keyed.client.get(path).status_code == 200, path
    for path in ("/v2/models/ssdlite-person/ready/x", "/v2/models/ssdlite-person/config"):  # only the health API
        assert keyed.client.get(path).status_code == 401, path


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
    assert client.get_model_config("ssdlite-person", headers={"Authorization": f"Bearer {KEY}"})["name"] == \
        "ssdlite-person"


@pytest.fixture(scope="module")
def tls(serve_module, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tls")
    authority = trustme.CA()
    certificate = authority.issue_cert("127.0.0.1", "localhost")
    certificate.private_key_pem.write_to_path(str(folder / "key.pem"))
    certificate.cert_chain_pems[0].write_to_path(str(folder / "cert.pem"))
    authority.cert_pem.write_to_path(str(folder / "ca.pem"))
    server = serve_module(None, "--tls-cert", str(folder / "cert.pem"), "--tls-key", str(folder / "key.pem"),
                          wait=None)
    server.url = server.url.replace("http://", "https://")
    server.client = httpx.Client(base_url=server.url, timeout=60,
                                 verify=ssl.create_default_context(cafile=str(folder / "ca.pem")))
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
    with triton_grpc.InferenceServerClient(server.grpc_address, ssl=True,
                                           root_certificates=str(authority)) as client:
        assert client.is_server_ready() and client.get_model_metadata("ssdlite-person").name == "ssdlite-person"
    with triton_grpc.InferenceServerClient(server.grpc_address) as plain:
        with pytest.raises(InferenceServerException):
            plain.is_server_live()

"""Every HTTP route of the app and every gRPC method of the service, checked against a live server with keys:
without a key each answers 401 / UNAUTHENTICATED unless it is open, control calls need an admin key (an ordinary
key gets 403 / PERMISSION_DENIED), and a route or method nobody classified fails here."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
import websockets
from starlette.routing import Mount, Route, WebSocketRoute
from tritonclient.grpc import service_pb2 as pb

from kakehashi.repository.repository import ModelRepository
from kakehashi.server import auth
from kakehashi.server.app import create_app
from kakehashi.server.auth import ADMIN, OPEN, require_classified
from kakehashi.server.state import ServerState
from kakehashi.settings import Limits, Settings, default_model_path

KEY_VALUE, ADMIN_VALUE = "ordinary-key", "admin-key"
MODEL = "ssdlite-person"
AUTH_CODES = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)


def _service() -> dict:
    """Kakehashi's service descriptor (`grpc_service_pb2`), read in a subprocess: its generated module and
    tritonclient's register the same proto names in protobuf's default pool, so one process cannot import both.
    Its methods' messages are built from tritonclient's module (the same messages on the wire)."""
    script = (
        "import json; from kakehashi.protocols.oip_grpc import grpc_service_pb2 as pb; "
        "s = pb.DESCRIPTOR.services_by_name['GRPCInferenceService']; "
        "print(json.dumps({'name': s.full_name, 'methods': {m.name: [m.input_type.name, m.output_type.name, "
        "list(m.input_type.fields_by_name)] for m in s.methods}}))"
    )
    return json.loads(subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True).stdout)


SERVICE = _service()
METHODS = sorted(SERVICE["methods"])


class Descriptor:
    """What `require_classified` reads of a service descriptor."""

    def __init__(self, names) -> None:
        self.methods_by_name = dict.fromkeys(names)


def _app_routes() -> list:
    with ThreadPoolExecutor(1) as compute:
        repository = ModelRepository(default_model_path(), compute, Limits())
        return list(create_app(ServerState(Settings(default_model_path()), repository)).routes)


ROUTES = _app_routes()


def _requests() -> list[tuple[str, str, str]]:
    """(method, route path, concrete path) for every route and method of the app."""
    found = []
    for route in ROUTES:
        if isinstance(route, Mount):
            found.append(("GET", route.path, route.path + "/anything"))
        elif isinstance(route, WebSocketRoute):
            continue  # test_websocket_routes
        else:
            assert isinstance(route, Route), route
            for method in sorted(route.methods or ()):
                found.append((method, route.path, route.path.replace("{model}", MODEL).replace("{version}", "1")))
    return found


REQUESTS = _requests()


@pytest.fixture(scope="module")
def server(serve_module, tmp_path_factory):
    keys = tmp_path_factory.mktemp("keys")
    (keys / "keys.txt").write_text(KEY_VALUE + "\n")
    (keys / "admin.txt").write_text(ADMIN_VALUE + "\n")
    return serve_module(
        None,
        "--api-keys-file",
        str(keys / "keys.txt"),
        "--admin-keys-file",
        str(keys / "admin.txt"),
        "--model-control",
        "explicit",
    )


def test_every_route_and_method_is_classified_and_the_policy_holds():
    unclassified = sorted({path for _, path, _ in REQUESTS} - set(auth.HTTP_ACCESS))
    assert not unclassified, f"classify these routes in kakehashi.server.auth.HTTP_ACCESS: {unclassified}"
    missing = sorted(set(METHODS) - set(auth.GRPC_ACCESS))
    assert not missing, f"classify these gRPC methods in kakehashi.server.auth.GRPC_ACCESS: {missing}"
    # the policy, stated apart from the tables: only reads are open, and model control is admin-only
    for method, path, _ in REQUESTS:
        if auth.route_access(method, path) is OPEN:
            assert method in ("GET", "HEAD"), (method, path)
        controls = path.startswith("/v2/repository/models/") or path.startswith("/v1/streams")
        if controls and method in ("POST", "DELETE"):
            assert auth.route_access(method, path) is ADMIN, (method, path)
    assert auth.GRPC_ACCESS["RepositoryModelLoad"] is auth.GRPC_ACCESS["RepositoryModelUnload"] is ADMIN
    assert {m for m in METHODS if auth.GRPC_ACCESS[m] is OPEN} <= {"ServerLive", "ServerReady", "ModelReady"}


def test_an_unclassified_route_or_method_stops_the_server_from_starting():
    require_classified(ROUTES, Descriptor(METHODS))
    with pytest.raises(RuntimeError, match="/v2/new"):
        require_classified([*ROUTES, Route("/v2/new", lambda request: None)])
    with pytest.raises(RuntimeError, match="NewMethod"):
        require_classified(ROUTES, Descriptor([*METHODS, "NewMethod"]))


def _target(path: str, access: auth.Access) -> str:
    """Control calls name a model that does not exist: they pass authentication (404) without changing anything."""
    return path.replace(MODEL, "nope") if access is ADMIN else path


@pytest.mark.parametrize("method, route, path", REQUESTS, ids=[f"{m} {p}" for m, p, _ in REQUESTS])
def test_http_route(server, method, route, path):
    access = auth.route_access(method, route)
    path = _target(path, access)

    def status(key: str | None) -> int:
        headers = {"X-API-Key": key} if key else {}
        return server.client.request(method, path, headers=headers).status_code

    anonymous, ordinary, admin = status(None), status(KEY_VALUE), status(ADMIN_VALUE)
    if access is OPEN:
        assert anonymous not in (401, 403), anonymous
    else:
        assert anonymous == 401
        assert server.client.request(method, path, headers={"X-API-Key": "wrong"}).status_code == 401
    if access is ADMIN:
        assert ordinary == 403
    else:
        assert ordinary not in (401, 403), ordinary
    assert admin not in (401, 403), admin


WEBSOCKETS = [route.path for route in ROUTES if isinstance(route, WebSocketRoute)]


@pytest.mark.parametrize("route", WEBSOCKETS)
def test_websocket_route(server, route):
    """A WebSocket needs its key as HTTP does: refused at the handshake without one (or with a wrong one); with one
    it gets through to the route, which answers for the stream that does not exist (closed with 4404)."""
    url = server.url.replace("http://", "ws://") + route.replace("{stream}", "nope")

    async def close_code(key: str | None) -> int:
        headers = {"X-API-Key": key} if key else None
        try:
            async with websockets.connect(url, additional_headers=headers, open_timeout=30) as socket:
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    await socket.recv()
        except websockets.InvalidStatus as refused:
            return refused.response.status_code
        assert "no stream named 'nope'" in (closed.value.rcvd.reason if closed.value.rcvd else "")
        return closed.value.rcvd.code if closed.value.rcvd else 0

    assert asyncio.run(close_code(None)) == 403
    assert asyncio.run(close_code("wrong")) == 403
    assert asyncio.run(close_code(KEY_VALUE)) == 4404
    assert auth.route_access("GET", route) is auth.KEY


def test_a_path_no_route_matches_needs_a_key(server):
    assert server.client.get("/v2/nothing/here").status_code == 401
    assert server.client.get("/v2/nothing/here", headers={"X-API-Key": KEY_VALUE}).status_code == 404


def _request(method: str) -> object:
    """A request message for `method`, naming the served model (or, for control, a model that does not exist)."""
    input_type, _, fields = SERVICE["methods"][method]
    message = getattr(pb, input_type)()
    for field in ("name", "model_name"):
        if field in fields:
            setattr(message, field, "nope" if auth.GRPC_ACCESS[method] is ADMIN else MODEL)
    return message


@pytest.mark.parametrize("method", METHODS)
def test_grpc_method(server, method):
    access = auth.GRPC_ACCESS[method]
    output = getattr(pb, SERVICE["methods"][method][1])
    with grpc.insecure_channel(server.grpc_address) as channel:
        call = channel.unary_unary(
            f"/{SERVICE['name']}/{method}",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=output.FromString,
        )

        def code(key: str | None) -> grpc.StatusCode:
            try:
                call(_request(method), metadata=[("x-api-key", key)] if key else None, timeout=60)
            except grpc.RpcError as exc:
                return exc.code()
            return grpc.StatusCode.OK

        anonymous, ordinary, admin = code(None), code(KEY_VALUE), code(ADMIN_VALUE)
    if access is OPEN:
        assert anonymous not in AUTH_CODES, anonymous
    else:
        assert anonymous == grpc.StatusCode.UNAUTHENTICATED
    if access is ADMIN:
        assert ordinary == grpc.StatusCode.PERMISSION_DENIED
    else:
        assert ordinary not in AUTH_CODES, ordinary
    assert admin not in AUTH_CODES, admin


def test_a_method_the_service_lacks_needs_a_key(server):
    with grpc.insecure_channel(server.grpc_address) as channel:
        call = channel.unary_unary(f"/{SERVICE['name']}/ModelStreamInfer")
        for metadata, expected in (
            (None, grpc.StatusCode.UNAUTHENTICATED),
            ([("x-api-key", KEY_VALUE)], grpc.StatusCode.UNIMPLEMENTED),
        ):
            with pytest.raises(grpc.RpcError) as raised:
                call(b"", metadata=metadata, timeout=60)
            assert raised.value.code() == expected

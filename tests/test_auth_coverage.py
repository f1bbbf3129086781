"""Every HTTP route of the app and every gRPC method of the service, checked against a live server with keys:
without a key each answers 401 / UNAUTHENTICATED unless it is open, control calls need an admin key (an ordinary
key gets 403 / PERMISSION_DENIED), and a route or method nobody classified fails here."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from starlette.routing import Mount, Route

from kakehashi.protocols.oip_grpc import grpc_service_pb2 as pb
from kakehashi.repository.repository import ModelRepository
from kakehashi.server import auth
from kakehashi.server.app import create_app
from kakehashi.server.auth import ADMIN, OPEN, require_classified
from kakehashi.server.state import ServerState
from kakehashi.settings import Limits, Settings, default_model_path

KEY_VALUE, ADMIN_VALUE = "ordinary-key", "admin-key"
MODEL = "ssdlite-person"
SERVICE = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
AUTH_CODES = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)


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
        else:
            assert isinstance(route, Route), route
            for method in sorted(route.methods or ()):
                found.append((method, route.path, route.path.replace("{model}", MODEL).replace("{version}", "1")))
    return found


REQUESTS = _requests()
METHODS = list(SERVICE.methods)


@pytest.fixture(scope="module")
def server(serve_module, tmp_path_factory):
    keys = tmp_path_factory.mktemp("keys")
    (keys / "keys.txt").write_text(KEY_VALUE + "\n")
    (keys / "admin.txt").write_text(ADMIN_VALUE + "\n")
    return serve_module(None, "--api-keys-file", str(keys / "keys.txt"), "--admin-keys-file",
                        str(keys / "admin.txt"), "--model-control", "explicit")


def test_every_route_and_method_is_classified_and_the_policy_holds():
    unclassified = sorted({path for _, path, _ in REQUESTS} - set(auth.HTTP_ACCESS))
    assert not unclassified, f"classify these routes in kakehashi.server.auth.HTTP_ACCESS: {unclassified}"
    methods = [method.name for method in SERVICE.methods]
    missing = sorted(set(methods) - set(auth.GRPC_ACCESS))
    assert not missing, f"classify these gRPC methods in kakehashi.server.auth.GRPC_ACCESS: {missing}"
    # the policy, stated apart from the tables: only reads are open, and model control is admin-only
    for method, path, _ in REQUESTS:
        if auth.HTTP_ACCESS[path] is OPEN:
            assert method in ("GET", "HEAD"), (method, path)
        if path.startswith("/v2/repository/models/"):
            assert auth.HTTP_ACCESS[path] is ADMIN, path
    assert auth.GRPC_ACCESS["RepositoryModelLoad"] is auth.GRPC_ACCESS["RepositoryModelUnload"] is ADMIN
    assert {m for m in methods if auth.GRPC_ACCESS[m] is OPEN} <= {"ServerLive", "ServerReady", "ModelReady"}


def test_an_unclassified_route_or_method_stops_the_server_from_starting():
    require_classified(ROUTES, SERVICE)
    with pytest.raises(RuntimeError, match="/v2/new"):
        require_classified([*ROUTES, Route("/v2/new", lambda request: None)])

    class Service:
        methods_by_name = {**SERVICE.methods_by_name, "NewMethod": None}

    with pytest.raises(RuntimeError, match="NewMethod"):
        require_classified(ROUTES, Service)


def _target(path: str, access: auth.Access) -> str:
    """Control calls name a model that does not exist: they pass authentication (404) without changing anything."""
    return path.replace(MODEL, "nope") if access is ADMIN else path


@pytest.mark.parametrize("method, route, path", REQUESTS, ids=[f"{m} {p}" for m, p, _ in REQUESTS])
def test_http_route(server, method, route, path):
    access = auth.HTTP_ACCESS[route]
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


def test_a_path_no_route_matches_needs_a_key(server):
    assert server.client.get("/v2/nothing/here").status_code == 401
    assert server.client.get("/v2/nothing/here", headers={"X-API-Key": KEY_VALUE}).status_code == 404


def _request(method) -> object:
    """A request message for `method`, naming the served model (or, for control, a model that does not exist)."""
    message = getattr(pb, method.input_type.name)()
    for field in ("name", "model_name"):
        if field in method.input_type.fields_by_name:
            setattr(message, field, "nope" if auth.GRPC_ACCESS[method.name] is ADMIN else MODEL)
    return message


@pytest.mark.parametrize("method", METHODS, ids=[m.name for m in METHODS])
def test_grpc_method(server, method):
    access = auth.GRPC_ACCESS[method.name]
    output = getattr(pb, method.output_type.name)
    with grpc.insecure_channel(server.grpc_address) as channel:
        call = channel.unary_unary(f"/{SERVICE.full_name}/{method.name}", request_serializer=lambda m: m.SerializeToString(),
                                   response_deserializer=output.FromString)

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
        call = channel.unary_unary(f"/{SERVICE.full_name}/ModelStreamInfer")
        for metadata, expected in ((None, grpc.StatusCode.UNAUTHENTICATED),
                                   ([("x-api-key", KEY_VALUE)], grpc.StatusCode.UNIMPLEMENTED)):
            with pytest.raises(grpc.RpcError) as raised:
                call(b"", metadata=metadata, timeout=60)
            assert raised.value.code() == expected

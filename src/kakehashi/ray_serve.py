"""Kakehashi on Ray Serve: every replica runs the whole Kakehashi application — its model handles, dynamic
batcher and routes — behind Ray's HTTP proxy, so `/v1/.../predict` and OIP v2 answer exactly as from
`kakehashi serve`, and Ray adds replicas, autoscaling and replacement of failed ones across machines.

Batching stays Kakehashi's (per replica) rather than `@serve.batch`: it already batches by tensor shape with
queue limits, deadlines and the measured best batch size, and decoding runs in its thread pool beside
inference; Ray's batching would only add a second queue in front of it.

    pip install 'kakehashi[ray]'
    serve run kakehashi.ray_serve:build model=/models replicas=2        # or replicas=auto
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ray import serve
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kakehashi.repository.repository import ModelRepository
from kakehashi.server.app import create_app
from kakehashi.server.state import ServerState
from kakehashi.settings import Limits, Settings, default_model_path

MODEL_ENV = "KAKEHASHI_MODEL"


class ReplicaHeader:
    """Adds `X-Kakehashi-Replica: <Ray replica id>` to every answer, so one can see which replica served it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.replica = serve.get_replica_context().replica_id.unique_id.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def tagged(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-kakehashi-replica", self.replica)]
            await send(message)

        await self.app(scope, receive, tagged if scope["type"] == "http" else send)


def replica_app() -> ASGIApp:
    """Built on each replica: the Kakehashi app for the repository in `KAKEHASHI_MODEL` (no gRPC port: Ray's
    proxies are the entry points). The models load here, before Ray routes anything to the replica, so a
    replacement replica never answers 503 while it warms up."""
    model = Path(os.environ.get(MODEL_ENV) or default_model_path())
    settings = Settings(model, grpc_port=0)
    compute = ThreadPoolExecutor(settings.compute_threads, thread_name_prefix="compute")
    repository = ModelRepository(model, compute, Limits())
    repository.load_all()
    return ReplicaHeader(create_app(ServerState(settings, repository, loaded=True)))


def build(args: dict[str, str]):
    """The Ray Serve application (`serve run kakehashi.ray_serve:build model=... replicas=2|auto cpus=2`)."""
    model = str(Path(args.get("model") or default_model_path()).resolve())
    replicas = args.get("replicas", "1")
    options: dict = {
        "ray_actor_options": {"num_cpus": float(args.get("cpus", 1)), "runtime_env": {"env_vars": {MODEL_ENV: model}}},
        "health_check_period_s": 2,
        "health_check_timeout_s": 30,
    }
    if replicas == "auto":
        options["autoscaling_config"] = {
            "min_replicas": 1,
            "max_replicas": int(args.get("max_replicas", 4)),
            "target_ongoing_requests": 8,
        }
    else:
        options["num_replicas"] = int(replicas)
    return serve.deployment(serve.ingress(replica_app)(), name="kakehashi", **options).bind()

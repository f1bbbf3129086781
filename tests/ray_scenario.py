"""Run by the Ray test in its own virtualenv (ray[serve] wants protobuf 7; tritonclient, in the test venv, wants
protobuf 6): a local Ray on 127.0.0.1, two replicas of the bundled model, one replica killed; prints JSON."""

import json
import os
import sys
import time

import httpx
import ray
from ray import serve

from kakehashi.ray_serve import build

port, image = int(sys.argv[1]), open(sys.argv[2], "rb").read()
ray.init(num_cpus=4, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
serve.start(http_options={"host": "127.0.0.1", "port": port})
serve.run(build({"replicas": "2", "cpus": "1"}), name="kakehashi", route_prefix="/")
url = f"http://127.0.0.1:{port}/v1/models/ssdlite-person/predict"
infer_url = f"http://127.0.0.1:{port}/v2/models/ssdlite-person/infer"


INFER = {"inputs": [{"name": "image_tensor:0", "datatype": "UINT8", "shape": [1, 32, 32, 3], "data": [0] * 3072}]}
asked = 0


def ask() -> tuple[int, str, bool]:
    """One request through Ray's proxy, alternately `/v1` predict (is the astronaut found?) and OIP v2 infer
    (are the model's four outputs there?)."""
    global asked
    asked += 1
    try:
        if asked % 2:
            response = httpx.post(url, content=image, headers={"content-type": "image/png"}, timeout=30)
            right = response.status_code == 200 and response.json()["images"][0]["results"][0]["name"] == "person"
        else:
            response = httpx.post(infer_url, json=INFER, timeout=30)
            right = response.status_code == 200 and len(response.json()["outputs"]) == 4
    except httpx.TransportError as exc:
        return 0, type(exc).__name__, False
    return response.status_code, response.headers.get("x-kakehashi-replica", ""), right


seen, before = set(), []
deadline = time.monotonic() + 60
while len(seen) < 2 and time.monotonic() < deadline:
    status, replica, person = ask()
    before.append(status)
    if status == 200 and person:
        seen.add(replica)


def replicas() -> list[str]:
    return sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if "SERVE_REPLICA" in a["name"])


names = replicas()
victim = names[0]
pid = ray.get(ray.get_actor(victim, namespace="serve").__ray_call__.remote(lambda self: __import__("os").getpid()))
ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)  # its process is killed, as in a crash
gone = time.monotonic() + 30
while os.path.exists(f"/proc/{pid}") and time.monotonic() < gone:  # ray.kill returns before the process ends
    time.sleep(0.05)
# at least 20 s of requests, and on until a replacement replica has answered some (Ray starts one, which loads
# and warms the model first: slow on a busy 2-core machine)
after, started, replaced = [], time.monotonic(), False
while time.monotonic() - started < 20 or (not replaced and time.monotonic() - started < 180):
    status, replica, person = ask()
    after.append([status, replica, person])
    replaced = replaced or (status == 200 and replica not in seen)
    time.sleep(0.1)
deadline = time.monotonic() + 60
while (len(replicas()) < 2 or victim in replicas()) and time.monotonic() < deadline:
    time.sleep(0.5)
print(
    json.dumps(
        {
            "replicas_seen_before": sorted(seen),
            "statuses_before": before,
            "killed": victim,
            "killed_pid": pid,
            "after": after,
            "replicas_after": replicas(),
            "replicas_before": names,
        }
    )
)
serve.shutdown()
ray.shutdown()

"""Ray Serve for real (its own virtualenv: ray wants protobuf 7, tritonclient here wants 6): a local Ray bound to
127.0.0.1 runs two replicas of the bundled model behind Ray's HTTP proxy; requests reach both; one replica's
process is killed; requests keep succeeding — every one — while Ray starts a replacement."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from conftest import IMAGES, free_port, virtualenv

ROOT = Path(__file__).parent.parent
# the first test also builds the tool's virtualenv (pip, minutes on a cold cache): a longer hang guard
pytestmark = [pytest.mark.timeout(1500), pytest.mark.slow]
REQUIREMENTS = ["ray[serve]==2.60.0", "httpx>=0.27", f"-e {ROOT}[ray]"]


@pytest.fixture(scope="session")
def ray_python(artifacts: Path) -> Path:
    return virtualenv("ray-venv", REQUIREMENTS, artifacts / "ray-venv-install.log")


def test_two_replicas_one_killed_no_request_fails(ray_python, artifacts):
    run = subprocess.run(
        [str(ray_python), str(ROOT / "tests" / "ray_scenario.py"), str(free_port()), str(IMAGES / "astronaut.png")],
        capture_output=True,
        text=True,
        timeout=900,
    )
    (artifacts / "ray-scenario.log").write_text(run.stderr[-20000:])
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(next(line for line in run.stdout.splitlines() if line.startswith('{"replicas_seen')))
    assert len(report["replicas_seen_before"]) == 2 and set(report["statuses_before"]) == {200}
    after = report["after"]
    assert len(after) > 20 and all(status == 200 and person for status, _, person in after)
    assert report["killed"] not in report["replicas_after"] and len(report["replicas_after"]) == 2
    replacement = set(report["replicas_after"]) - set(report["replicas_before"])
    assert replacement  # Ray started a new replica in place of the killed one
    served_by = {replica for _, replica, _ in after}
    assert any(name.endswith(replica) for replica in served_by for name in replacement)  # and it serves

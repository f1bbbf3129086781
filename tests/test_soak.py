"""The 60-second version of the soak benchmark (`benchmarks/soak.py`): three times the measured capacity (another
test shares the cores, so the capacity measured may be half of what the server does alone), valid, invalid and
cancelled requests; no accepted request may fail or be wrong, and RSS must stay flat."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SOAK = Path(__file__).parent.parent / "benchmarks" / "soak.py"

pytestmark = pytest.mark.slow  # a minute of load and its setup


def test_a_minute_past_capacity(tmp_path, artifacts):
    run = subprocess.run(
        [sys.executable, str(SOAK), "--duration", "60", "--overload", "3", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    report = (tmp_path / "soak.md").read_text()
    (artifacts / "soak-60s.md").write_text(report)
    assert run.returncode == 0, report + run.stderr[-2000:]
    assert "failed: 0; wrong: 0" in report and "verdict: PASS" in report
    counts = {
        line.split("|")[1].strip(): line.split("|")[2].strip()
        for line in report.splitlines()
        if line.startswith("| ") and line.split("|")[2].strip().isdigit()
    }
    assert int(counts["accepted"]) > 0 and int(counts["refused"]) > 0 and int(counts["invalid-answered"]) > 0

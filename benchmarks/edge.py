"""Issue 8's edge profile, in ONE run: cold start (process start → first answer) and idle RSS of
`kakehashi serve` with the bundled model, default profile against `--edge`. Median of 3 starts each.

    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python benchmarks/edge.py --out benchmarks/results
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import httpx
import numpy as np

from throughput import Process, free_port

HERE = Path(__file__).parent
IMAGE = (HERE.parent / "tests" / "data" / "images" / "astronaut.png").read_bytes()


def one_start(extra: list[str]) -> tuple[float, float]:
    port = free_port()
    process = Process([sys.executable, "-m", "kakehashi", "serve", "--port", str(port), "--grpc-port",
                       str(free_port()), *extra], f"http://127.0.0.1:{port}")
    try:
        while True:
            try:
                response = httpx.post(f"{process.url}/v1/models/ssdlite-person/predict", content=IMAGE,
                                      headers={"content-type": "image/png"}, timeout=30)
                if response.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.02)
        first_answer = time.perf_counter() - process.started
        time.sleep(3)
        return first_answer, process.rss_mb()
    finally:
        process.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    lines = [f"# Edge profile ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores, one run)",
             "", "| profile | process start → first answer (s) | idle RSS (MB) |", "|---|---|---|"]
    results = {}
    for label, extra in (("default", []), ("--edge", ["--edge"])):
        runs = [one_start(extra) for _ in range(3)]
        results[label] = (float(np.median([r[0] for r in runs])), float(np.median([r[1] for r in runs])))
        lines.append(f"| {label} | {results[label][0]:.2f} | {results[label][1]:.1f} |")
        print(lines[-1], flush=True)
    start, rss = (results["--edge"][i] / results["default"][i] for i in (0, 1))
    lines += ["", f"`--edge` / default: cold start {start:.2f}×, idle RSS {rss:.2f}×"]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "edge.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

"""Print the inspection line's alerts as they arrive over MQTT, and save each one's snapshot as a JPEG.

    python examples/inspection-line/watch_alerts.py                      # broker 127.0.0.1:1883, line1/alerts/#
    python examples/inspection-line/watch_alerts.py --port 1884 --save /tmp/alerts

Alerts are delivered at least once (QoS 1): a repeat (the same `id`) is reported as such and not saved again.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
from pathlib import Path

import aiomqtt


def describe(alert: dict) -> str:
    """One line: when, which rule, the detection (class, confidence, box) and the track."""
    [detection] = alert["detections"] or [{}]
    box = detection.get("box", {})
    corners = ", ".join(f"{box[k]:.0f}" for k in ("x1", "y1", "x2", "y2")) if box else "-"
    return (
        f"frame {alert['frame']:>4}  {alert['stream']}/{alert['rule']}: {detection.get('name', '?')} "
        f"{detection.get('confidence', 0):.2f} at [{corners}], track {alert['track_id']}"
    )


async def watch(host: str, port: int, topic: str, save: Path) -> None:
    save.mkdir(parents=True, exist_ok=True)
    seen: set[str] = set()
    async with aiomqtt.Client(host, port) as client:
        await client.subscribe(topic, qos=1)
        print(f"waiting for alerts on {topic} at {host}:{port} (Ctrl-C to stop)", flush=True)
        async for message in client.messages:
            assert isinstance(message.payload, bytes)
            alert = json.loads(message.payload)
            if alert["id"] in seen:
                print(f"(again: {alert['id']}, a redelivery)", flush=True)
                continue
            seen.add(alert["id"])
            line = describe(alert)
            if "snapshot_jpeg" in alert:
                picture = save / f"alert-{alert['frame']:05d}-track{alert['track_id']}.jpg"
                picture.write_bytes(base64.b64decode(alert["snapshot_jpeg"]))
                line += f"  -> {picture}"
            print(line, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1883)
    parser.add_argument("--topic", default="line1/alerts/#")
    parser.add_argument("--save", type=Path, default=Path(__file__).resolve().parent / "alerts")
    arguments = parser.parse_args()
    try:
        asyncio.run(watch(arguments.host, arguments.port, arguments.topic, arguments.save))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()

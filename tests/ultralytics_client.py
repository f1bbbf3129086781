"""Run by the Ultralytics test in its own virtualenv (torch, ultralytics): Ultralytics' remote model client
(`YOLO("http://…/<model>", task="detect")`, or `grpc://`) predicting one image; prints the boxes as JSON."""

import json
import sys

from ultralytics import YOLO

url, image, conf = sys.argv[1], sys.argv[2], float(sys.argv[3])
result = YOLO(url, task="detect")(image, conf=conf, verbose=False)[0]
print(
    json.dumps(
        {
            "names": result.names,
            "boxes": result.boxes.xyxy.tolist(),
            "confidence": result.boxes.conf.tolist(),
            "class": result.boxes.cls.int().tolist(),
        }
    )
)

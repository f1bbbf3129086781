"""Task-specific pre- and post-processing: images in, detections or classes out."""

from kakehashi.tasks import classify, detect, obb, pose, segment  # noqa: F401  (each task registers itself when imported)

"""Task-specific pre- and post-processing: images in, detections or classes out."""

"""Pipelines: servables made of other models' steps (detect, tile, crop, classify), declared in `pipeline.yaml`."""

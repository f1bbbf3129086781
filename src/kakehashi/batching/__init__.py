"""The dynamic batcher and the inference instances behind it."""

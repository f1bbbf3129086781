"""Inference runtimes behind one small interface."""

from kakehashi.backends.base import Backend, TensorSpec

__all__ = ["Backend", "TensorSpec"]

"""Kakehashi: the bridge between a trained model file and the systems that need its predictions."""

__version__ = "0.1.0"

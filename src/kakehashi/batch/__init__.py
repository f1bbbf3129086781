"""Offline batch serving: `kakehashi batch` over folders, globs, path lists and videos, on the same model
handles and batcher as the server (or against a running server with `--url`)."""

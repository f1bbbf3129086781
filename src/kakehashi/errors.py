"""Errors that carry the status a client should see and a message saying what was wrong."""


class KakehashiError(Exception):
    """Base error: `status` is the HTTP status a transport answers with."""

    status: int = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(KakehashiError):
    """The request is malformed or does not match the model (HTTP 400)."""

    status = 400


class NotFound(KakehashiError):
    """Unknown model, version or route (HTTP 404)."""

    status = 404


class PayloadTooLarge(KakehashiError):
    """The request body exceeds the configured limit (HTTP 413)."""

    status = 413


class UnsupportedMedia(KakehashiError):
    """The body is not in a format we can decode (HTTP 415)."""

    status = 415


class Unavailable(KakehashiError):
    """The server or model cannot take requests now (HTTP 503); with `retry_after`, when to try again (seconds)."""

    status = 503

    def __init__(self, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ModelLoadError(KakehashiError):
    """A model or its `model.yaml` cannot be loaded; the message names the file and the problem."""

    status = 400


class Overloaded(KakehashiError):
    """The model's queue is full; the client should retry after `retry_after` seconds (HTTP 429)."""

    status = 429

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class DeadlineExceeded(KakehashiError):
    """The request's deadline passed before it could be answered (HTTP 504)."""

    status = 504


class InferenceFailed(KakehashiError):
    """The model's runtime failed on a request that passed every check: our fault, not the client's (HTTP 500);
    the traceback is logged where it happened."""

    status = 500


def runtime_message(exc: BaseException) -> str:
    """The informative part of a runtime's error: its last line that is not a source location (OpenVINO's messages
    start with lines like `Exception from src/...cpp:224:`), at most 300 characters."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith("Exception from ")]
    text = (useful or lines or [type(exc).__name__])[-1]
    return text if len(text) <= 300 else text[:297] + "..."

"""Errors of the serving layer.

`ServeError` is a configuration/start-up problem (bad path, bad policy, port in use).
`RequestError` is a bad request: it carries the HTTP status the handler answers with, and its
message goes to the client as ``{"error": message}``.
"""
from __future__ import annotations

from ..errors import EdgepackError


class ServeError(EdgepackError):
    """The server cannot start or be configured as asked."""

    exit_code = 8


class RequestError(EdgepackError):
    """A request the server refuses; `status` is the HTTP status code to answer with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message

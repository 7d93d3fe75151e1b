"""Errors raised by the tpserve clients: every failed RPC becomes a TpserveError.

The server maps its Status to gRPC codes one to one, so the code says what went wrong:
INVALID_ARGUMENT -> InvalidRequestError (fix the request), RESOURCE_EXHAUSTED -> OverloadedError
(no KV blocks, memory or queue room: retry later), UNAVAILABLE -> UnavailableError (a replica or
the coordinator is unreachable: retryable); any other code (DEADLINE_EXCEEDED, INTERNAL, ...)
-> TpserveError itself.
"""
from __future__ import annotations

from typing import Dict, Type

import grpc


class TpserveError(Exception):
    """An RPC failed. `code` is the gRPC status code name, e.g. "INTERNAL"; `message` the detail."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class InvalidRequestError(TpserveError):
    """INVALID_ARGUMENT: the request is malformed or does not fit the model (not retryable)."""


class OverloadedError(TpserveError):
    """RESOURCE_EXHAUSTED: the cluster has no room for the request now; retry later."""


class UnavailableError(TpserveError):
    """UNAVAILABLE: the server or a replica cannot be reached; retryable."""


_BY_CODE: Dict[grpc.StatusCode, Type[TpserveError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidRequestError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: OverloadedError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
}


def from_rpc_error(error: grpc.RpcError) -> TpserveError:
    """Turns a gRPC error (sync or aio) into the matching TpserveError subclass."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = error.details() if hasattr(error, "details") else str(error)
    if not isinstance(code, grpc.StatusCode):
        code = grpc.StatusCode.UNKNOWN
    return _BY_CODE.get(code, TpserveError)(code.name, details or "")

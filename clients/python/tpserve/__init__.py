"""Python SDK of tpserve, a C++ LLM inference cluster (gRPC API tpserve.v1).

    import tpserve
    with tpserve.Client("localhost:50051", timeout=60) as client:
        result = client.generate("USER: Hi\nASSISTANT:", max_new_tokens=32, temperature=0)
        print(result.text, result.finish_reason)

Client is blocking, AsyncClient its asyncio twin; failed calls raise TpserveError subclasses.
"""
from tpserve.aio import AsyncClient
from tpserve.client import Client
from tpserve.errors import InvalidRequestError, OverloadedError, TpserveError, UnavailableError
from tpserve.types import (ClusterStatus, FinishReason, GenerateResult, ModelInfo,
                           ReplicaStatus, StreamChunk, TokenLogprob, TopLogprob)

__version__ = "0.1.0"
__all__ = [
    "AsyncClient", "Client", "ClusterStatus", "FinishReason", "GenerateResult",
    "InvalidRequestError", "ModelInfo", "OverloadedError", "ReplicaStatus", "StreamChunk",
    "TokenLogprob", "TopLogprob", "TpserveError", "UnavailableError",
]

"""Asynchronous client (grpc.aio): the methods of tpserve.Client as coroutines.

Arguments, units and errors are those of tpserve.client (see its module docstring). Create and
use an AsyncClient inside one running event loop.
"""
from __future__ import annotations

from typing import Any, AsyncIterator, List, Mapping, Optional, Sequence, Tuple, Union

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2_grpc

from tpserve import _convert
from tpserve._proto.tpserve.v1 import inference_pb2 as pb
from tpserve._proto.tpserve.v1 import inference_pb2_grpc as pb_grpc
from tpserve.errors import from_rpc_error
from tpserve.types import ClusterStatus, GenerateResult, ModelInfo, StreamChunk


class AsyncClient:
    """Non-blocking client; use with `async with` or await close()."""

    def __init__(self, address: str, timeout: Optional[float] = None, *,
                 credentials: Optional[grpc.ChannelCredentials] = None,
                 options: Sequence[Tuple[str, Any]] = ()) -> None:
        """Opens a channel to `address` ("host:port"); timeout: default deadline in seconds."""
        if credentials is None:
            self._channel = grpc.aio.insecure_channel(address, options=list(options))
        else:
            self._channel = grpc.aio.secure_channel(address, credentials, options=list(options))
        self._inference = pb_grpc.InferenceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)
        self._timeout = timeout

    def _deadline(self, timeout: Optional[float]) -> Optional[float]:
        return self._timeout if timeout is None else timeout

    async def _unary(self, method: Any, request: Any, timeout: Optional[float]) -> Any:
        try:
            return await method(request, timeout=self._deadline(timeout))
        except grpc.RpcError as error:
            raise from_rpc_error(error) from error

    async def generate(self, prompt: Optional[str] = None, *,
                       prompt_token_ids: Optional[Sequence[int]] = None,
                       messages: Optional[Sequence[Mapping[str, str]]] = None,
                       max_new_tokens: int = 16, temperature: float = 1.0, top_p: float = 1.0,
                       top_k: int = 0, min_p: float = 0.0, repetition_penalty: float = 1.0,
                       seed: Optional[int] = None, stop: Union[str, Sequence[str]] = (),
                       stop_token_ids: Sequence[int] = (), ignore_eos: bool = False,
                       logprobs: int = 0, prompt_logprobs: int = 0, request_id: str = "",
                       timeout: Optional[float] = None) -> GenerateResult:
        """Generates a completion and returns it once finished."""
        request = _convert.generate_request(
            prompt=prompt, prompt_token_ids=prompt_token_ids, messages=messages,
            max_new_tokens=max_new_tokens,
            temperature=temperature, top_p=top_p, top_k=top_k, min_p=min_p,
            repetition_penalty=repetition_penalty, seed=seed, stop=stop,
            stop_token_ids=stop_token_ids, ignore_eos=ignore_eos, logprobs=logprobs,
            prompt_logprobs=prompt_logprobs, request_id=request_id)
        return _convert.generate_result(
            await self._unary(self._inference.Generate, request, timeout))

    async def stream(self, prompt: Optional[str] = None, *,
                     prompt_token_ids: Optional[Sequence[int]] = None,
                       messages: Optional[Sequence[Mapping[str, str]]] = None,
                     max_new_tokens: int = 16, temperature: float = 1.0, top_p: float = 1.0,
                     top_k: int = 0, min_p: float = 0.0, repetition_penalty: float = 1.0,
                     seed: Optional[int] = None, stop: Union[str, Sequence[str]] = (),
                     stop_token_ids: Sequence[int] = (), ignore_eos: bool = False,
                     logprobs: int = 0, prompt_logprobs: int = 0, request_id: str = "",
                     timeout: Optional[float] = None) -> AsyncIterator[StreamChunk]:
        """Streams a completion: `async for chunk in client.stream(...)`.

        Closing the iterator early (`await it.aclose()`, or contextlib.aclosing around it)
        cancels the RPC on the server; a mere `break` cancels it when the iterator is collected.
        """
        request = _convert.generate_request(
            prompt=prompt, prompt_token_ids=prompt_token_ids, messages=messages,
            max_new_tokens=max_new_tokens,
            temperature=temperature, top_p=top_p, top_k=top_k, min_p=min_p,
            repetition_penalty=repetition_penalty, seed=seed, stop=stop,
            stop_token_ids=stop_token_ids, ignore_eos=ignore_eos, logprobs=logprobs,
            prompt_logprobs=prompt_logprobs, request_id=request_id)
        call = self._inference.GenerateStream(request, timeout=self._deadline(timeout))
        try:
            async for response in call:
                yield _convert.stream_chunk(response)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from error
        finally:
            call.cancel()  # no-op when the stream has ended

    async def tokenize(self, text: str, add_bos: bool = False, *,
                       timeout: Optional[float] = None) -> List[int]:
        """The model's token ids for `text`; add_bos prepends the BOS token."""
        request = pb.TokenizeRequest(text=text, add_bos=add_bos)
        return list((await self._unary(self._inference.Tokenize, request, timeout)).token_ids)

    async def model_info(self, *, timeout: Optional[float] = None) -> ModelInfo:
        """Describes the model being served."""
        return _convert.model_info(
            await self._unary(self._inference.GetModelInfo, pb.GetModelInfoRequest(), timeout))

    async def cluster_status(self, *, timeout: Optional[float] = None) -> ClusterStatus:
        """The replicas with their health, KV capacity and load, and the cluster queue."""
        return _convert.cluster_status(await self._unary(
            self._inference.GetClusterStatus, pb.GetClusterStatusRequest(), timeout))

    async def health(self, service: str = "", *, timeout: Optional[float] = None) -> str:
        """grpc.health.v1 status of `service`, as Client.health."""
        try:
            response = await self._health.Check(_convert.health_request(service),
                                                timeout=self._deadline(timeout))
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                return "SERVICE_UNKNOWN"
            raise from_rpc_error(error) from error
        return _convert.serving_status(response)

    async def close(self) -> None:
        """Closes the channel; calls in flight are cancelled."""
        await self._channel.close()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

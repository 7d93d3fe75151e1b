"""Synchronous client of a tpserve coordinator (public API tpserve.v1 plus grpc.health.v1).

Thread safety: one Client may be shared by threads; it holds one gRPC channel.

Generation arguments (shared by generate and stream, and by AsyncClient):
  prompt: text; the server adds BOS as the model's tokenizer config says.
  prompt_token_ids: prompt as token ids, used as is (no BOS); when non-empty `prompt` is ignored.
  messages: a conversation, [{"role": "system"|"user"|"assistant", "content": str}, ...],
    rendered with the model's chat template (ModelInfo.chat_template); not with prompt or
    prompt_token_ids. Roles alternate user, assistant, ... after an optional first system
    message, and the last one is "user".
  max_new_tokens: most tokens to generate (>= 1); prompt + max_new_tokens must fit the context.
  temperature: softmax temperature (>= 0); 0 = greedy.
  top_p: nucleus probability mass in (0, 1]; 1 = off.
  top_k: keep the k most probable tokens; 0 = off.
  min_p: drop tokens below min_p x the top probability, in [0, 1]; 0 = off.
  repetition_penalty: Hugging Face repetition penalty over prompt and output; 1 = off.
  seed: sampler seed; same seed and prompt give the same tokens. None = random (unset on the
    wire); 0 is a seed like any other.
  stop: strings that end generation (not included in the text); a lone str is one string.
  stop_token_ids: token ids that end generation (included in token_ids).
  ignore_eos: keep generating past the model's EOS token.
  logprobs: how many top alternatives to return with each generated token; 0 = no logprobs.
  prompt_logprobs: same for every prompt token after the first; 0 = none.
  request_id: echoed in every response; the server makes one when empty.
  timeout: deadline of this call in seconds (the whole stream for `stream`); None = the
    client's default.

Errors: every failed RPC raises a TpserveError subclass (see tpserve.errors).
"""
from __future__ import annotations

from typing import Any, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import grpc
from grpc_health.v1 import health_pb2_grpc

from tpserve import _convert
from tpserve._proto.tpserve.v1 import inference_pb2 as pb
from tpserve._proto.tpserve.v1 import inference_pb2_grpc as pb_grpc
from tpserve.errors import from_rpc_error
from tpserve.types import ClusterStatus, GenerateResult, ModelInfo, StreamChunk


class Client:
    """Blocking client; use as a context manager or call close()."""

    def __init__(self, address: str, timeout: Optional[float] = None, *,
                 credentials: Optional[grpc.ChannelCredentials] = None,
                 options: Sequence[Tuple[str, Any]] = ()) -> None:
        """Opens a channel to `address` ("host:port"); connection happens on the first call.

        timeout: default deadline of every call in seconds; None = no deadline.
        credentials: TLS credentials; None = plaintext. options: gRPC channel options.
        """
        if credentials is None:
            self._channel = grpc.insecure_channel(address, options=list(options))
        else:
            self._channel = grpc.secure_channel(address, credentials, options=list(options))
        self._inference = pb_grpc.InferenceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)
        self._timeout = timeout

    def _deadline(self, timeout: Optional[float]) -> Optional[float]:
        return self._timeout if timeout is None else timeout

    def _unary(self, method: Any, request: Any, timeout: Optional[float]) -> Any:
        try:
            return method(request, timeout=self._deadline(timeout))
        except grpc.RpcError as error:
            raise from_rpc_error(error) from error

    def generate(self, prompt: Optional[str] = None, *,
                 prompt_token_ids: Optional[Sequence[int]] = None,
                 messages: Optional[Sequence[Mapping[str, str]]] = None, max_new_tokens: int = 16,
                 temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0,
                 min_p: float = 0.0, repetition_penalty: float = 1.0, seed: Optional[int] = None,
                 stop: Union[str, Sequence[str]] = (), stop_token_ids: Sequence[int] = (),
                 ignore_eos: bool = False, logprobs: int = 0, prompt_logprobs: int = 0,
                 request_id: str = "", timeout: Optional[float] = None) -> GenerateResult:
        """Generates a completion and returns it once finished (arguments: module docstring)."""
        request = _convert.generate_request(
            prompt=prompt, prompt_token_ids=prompt_token_ids, messages=messages,
            max_new_tokens=max_new_tokens,
            temperature=temperature, top_p=top_p, top_k=top_k, min_p=min_p,
            repetition_penalty=repetition_penalty, seed=seed, stop=stop,
            stop_token_ids=stop_token_ids, ignore_eos=ignore_eos, logprobs=logprobs,
            prompt_logprobs=prompt_logprobs, request_id=request_id)
        return _convert.generate_result(self._unary(self._inference.Generate, request, timeout))

    def stream(self, prompt: Optional[str] = None, *,
               prompt_token_ids: Optional[Sequence[int]] = None,
               messages: Optional[Sequence[Mapping[str, str]]] = None, max_new_tokens: int = 16,
               temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0,
               min_p: float = 0.0, repetition_penalty: float = 1.0, seed: Optional[int] = None,
               stop: Union[str, Sequence[str]] = (), stop_token_ids: Sequence[int] = (),
               ignore_eos: bool = False, logprobs: int = 0, prompt_logprobs: int = 0,
               request_id: str = "", timeout: Optional[float] = None) -> Iterator[StreamChunk]:
        """Streams a completion: one StreamChunk per server message, the last with finish_reason.

        The RPC starts on the first next(); closing the iterator early (break, close()) cancels
        it on the server. Arguments: module docstring.
        """
        request = _convert.generate_request(
            prompt=prompt, prompt_token_ids=prompt_token_ids, messages=messages,
            max_new_tokens=max_new_tokens,
            temperature=temperature, top_p=top_p, top_k=top_k, min_p=min_p,
            repetition_penalty=repetition_penalty, seed=seed, stop=stop,
            stop_token_ids=stop_token_ids, ignore_eos=ignore_eos, logprobs=logprobs,
            prompt_logprobs=prompt_logprobs, request_id=request_id)
        return self._stream(request, self._deadline(timeout))

    def _stream(self, request: pb.GenerateRequest,
                timeout: Optional[float]) -> Iterator[StreamChunk]:
        call = self._inference.GenerateStream(request, timeout=timeout)
        try:
            for response in call:
                yield _convert.stream_chunk(response)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from error
        finally:
            call.cancel()  # no-op when the stream has ended

    def tokenize(self, text: str, add_bos: bool = False, *,
                 timeout: Optional[float] = None) -> List[int]:
        """The model's token ids for `text`; add_bos prepends the BOS token."""
        request = pb.TokenizeRequest(text=text, add_bos=add_bos)
        return list(self._unary(self._inference.Tokenize, request, timeout).token_ids)

    def model_info(self, *, timeout: Optional[float] = None) -> ModelInfo:
        """Describes the model being served."""
        return _convert.model_info(
            self._unary(self._inference.GetModelInfo, pb.GetModelInfoRequest(), timeout))

    def cluster_status(self, *, timeout: Optional[float] = None) -> ClusterStatus:
        """The replicas with their health, KV capacity and load, and the cluster queue."""
        return _convert.cluster_status(
            self._unary(self._inference.GetClusterStatus, pb.GetClusterStatusRequest(), timeout))

    def health(self, service: str = "", *, timeout: Optional[float] = None) -> str:
        """grpc.health.v1 status of `service` ("" = the whole server).

        Returns "SERVING", "NOT_SERVING", "UNKNOWN", or "SERVICE_UNKNOWN" when the server does
        not know the service. An unreachable server raises UnavailableError.
        """
        try:
            response = self._health.Check(_convert.health_request(service),
                                          timeout=self._deadline(timeout))
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                return "SERVICE_UNKNOWN"
            raise from_rpc_error(error) from error
        return _convert.serving_status(response)

    def close(self) -> None:
        """Closes the channel; calls in flight are cancelled."""
        self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

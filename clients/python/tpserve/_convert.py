"""The only file that knows the generated protobuf types: builds requests, reads responses."""
from __future__ import annotations

from typing import Iterable, List, Mapping, Optional, Sequence, Union

from grpc_health.v1 import health_pb2

from tpserve._proto.tpserve.v1 import inference_pb2 as pb
from tpserve.types import (ClusterStatus, FinishReason, GenerateResult, ModelInfo,
                           ReplicaStatus, StreamChunk, TokenLogprob, TopLogprob)

_FINISH = {
    pb.FINISH_REASON_LENGTH: FinishReason.LENGTH,
    pb.FINISH_REASON_STOP: FinishReason.STOP,
    pb.FINISH_REASON_EOS: FinishReason.EOS,
    pb.FINISH_REASON_CANCELLED: FinishReason.CANCELLED,
}


def generate_request(*, prompt: Optional[str], prompt_token_ids: Optional[Sequence[int]],
                     messages: Optional[Sequence[Mapping[str, str]]],
                     max_new_tokens: int, temperature: float, top_p: float, top_k: int,
                     min_p: float, repetition_penalty: float, seed: Optional[int],
                     stop: Union[str, Sequence[str]], stop_token_ids: Sequence[int],
                     ignore_eos: bool, logprobs: int, prompt_logprobs: int,
                     request_id: str) -> pb.GenerateRequest:
    """Builds a GenerateRequest; seed=None leaves `seed` unset (random), any int sets it."""
    request = pb.GenerateRequest(
        request_id=request_id, prompt=prompt or "", prompt_token_ids=list(prompt_token_ids or ()),
        max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, top_k=top_k,
        min_p=min_p, repetition_penalty=repetition_penalty,
        stop=[stop] if isinstance(stop, str) else list(stop), stop_token_ids=list(stop_token_ids),
        ignore_eos=ignore_eos, logprobs=logprobs, prompt_logprobs=prompt_logprobs,
        messages=[pb.ChatMessage(role=m["role"], content=m["content"]) for m in messages or ()])
    if seed is not None:
        request.seed = seed
    return request


def _logprobs(items: Iterable[pb.TokenLogprob]) -> List[TokenLogprob]:
    return [TokenLogprob(token_id=i.token_id, logprob=i.logprob,
                         top=[TopLogprob(token_id=t.token_id, logprob=t.logprob) for t in i.top])
            for i in items]


def generate_result(r: pb.GenerateResponse) -> GenerateResult:
    return GenerateResult(
        request_id=r.request_id, token_ids=list(r.token_ids), text=r.text,
        logprobs=_logprobs(r.logprobs), prompt_logprobs=_logprobs(r.prompt_logprobs),
        finish_reason=_FINISH.get(r.finish_reason), prompt_tokens=r.prompt_tokens,
        generated_tokens=r.generated_tokens)


def stream_chunk(r: pb.GenerateResponse) -> StreamChunk:
    return StreamChunk(
        request_id=r.request_id, token_ids=list(r.token_ids), text=r.text,
        logprobs=_logprobs(r.logprobs), finish_reason=_FINISH.get(r.finish_reason),
        prompt_logprobs=_logprobs(r.prompt_logprobs), prompt_tokens=r.prompt_tokens,
        generated_tokens=r.generated_tokens)


def model_info(m: pb.ModelInfo) -> ModelInfo:
    return ModelInfo(
        name=m.name, architecture=m.architecture, num_layers=m.num_layers,
        hidden_size=m.hidden_size, num_heads=m.num_heads, num_kv_heads=m.num_kv_heads,
        vocab_size=m.vocab_size, max_context=m.max_context, sliding_window=m.sliding_window,
        bos_token_id=m.bos_token_id, eos_token_ids=list(m.eos_token_ids),
        fingerprint=m.fingerprint, chat_template=m.chat_template,
        default_system_prompt=m.default_system_prompt)


def cluster_status(s: pb.ClusterStatus) -> ClusterStatus:
    replicas = [ReplicaStatus(
        name=r.name, state=_enum_name(pb.ReplicaState, r.state).replace("REPLICA_STATE_", ""),
        tensor_parallel=r.tensor_parallel, pipeline_parallel=r.pipeline_parallel,
        kv_blocks_total=r.kv_blocks_total, kv_blocks_free=r.kv_blocks_free,
        kv_block_size=r.kv_block_size, running_requests=r.running_requests,
        queued_requests=r.queued_requests, backend=r.backend,
        kv_cache_bytes=r.kv_cache_bytes, weight_bytes=r.weight_bytes) for r in s.replicas]
    return ClusterStatus(replicas=replicas, queued_requests=s.queued_requests)


def health_request(service: str) -> health_pb2.HealthCheckRequest:
    return health_pb2.HealthCheckRequest(service=service)


def serving_status(r: health_pb2.HealthCheckResponse) -> str:
    """"SERVING", "NOT_SERVING", "UNKNOWN" or "SERVICE_UNKNOWN" (grpc.health.v1 names)."""
    return _enum_name(health_pb2.HealthCheckResponse.ServingStatus, r.status)


def _enum_name(enum_type: object, value: int) -> str:
    """The value's name, or "UNSPECIFIED" for a value newer than these stubs."""
    try:
        return str(enum_type.Name(value))  # type: ignore[attr-defined]
    except ValueError:
        return "UNSPECIFIED"

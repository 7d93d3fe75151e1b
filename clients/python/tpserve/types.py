"""Plain result types of the tpserve SDK; no gRPC or protobuf types leak out of the client.

Units: token counts are tokens, logprobs are natural logs of probabilities under the model's
raw distribution (before temperature and other sampling filters).
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import List, Optional


class FinishReason(str, enum.Enum):
    """Why a generation ended. A str, so `result.finish_reason == "length"` works."""

    LENGTH = "length"        # reached max_new_tokens or the model's context
    STOP = "stop"            # matched a stop string or stop token
    EOS = "eos"              # the model produced its EOS token
    CANCELLED = "cancelled"  # the client cancelled or its deadline passed

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class TopLogprob:
    """One of the most probable tokens at a position."""

    token_id: int
    logprob: float  # natural log probability


@dataclass(frozen=True)
class TokenLogprob:
    """The logprob of the token at a position, and the best alternatives there (best first)."""

    token_id: int
    logprob: float  # natural log probability of token_id
    top: List[TopLogprob] = field(default_factory=list)


@dataclass(frozen=True)
class GenerateResult:
    """A finished generation (Client.generate)."""

    request_id: str
    token_ids: List[int]                 # every generated token
    text: str                            # text of token_ids (stop strings removed)
    logprobs: List[TokenLogprob]         # one per generated token when logprobs > 0, else empty
    prompt_logprobs: List[TokenLogprob]  # one per prompt token after the first when asked
    finish_reason: Optional[FinishReason]  # None only if the server did not say
    prompt_tokens: int                   # tokens in the prompt after tokenisation
    generated_tokens: int                # tokens generated


@dataclass(frozen=True)
class StreamChunk:
    """One message of a streamed generation (Client.stream): what is new since the last one."""

    request_id: str
    token_ids: List[int]                 # tokens new in this chunk
    text: str                            # their text (only whole UTF-8 characters)
    logprobs: List[TokenLogprob]         # one per token in token_ids when logprobs > 0
    finish_reason: Optional[FinishReason]  # set on the last chunk only, else None
    prompt_logprobs: List[TokenLogprob]  # first chunk only, when prompt_logprobs > 0
    prompt_tokens: int                   # tokens in the prompt
    generated_tokens: int                # tokens generated so far


@dataclass(frozen=True)
class ModelInfo:
    """The model a cluster serves."""

    name: str
    architecture: str       # "MistralForCausalLM" or "LlamaForCausalLM"
    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    vocab_size: int
    max_context: int        # tokens
    sliding_window: int     # tokens; 0 = none
    bos_token_id: int
    eos_token_ids: List[int]
    fingerprint: str        # hash of config and weight index; replicas must match
    chat_template: str = ""          # "chatml", "airomnimix" or "" (messages refused)
    default_system_prompt: str = ""  # put first when a conversation has no system message


@dataclass(frozen=True)
class ReplicaStatus:
    """One model replica (one mpirun job of TP x PP ranks)."""

    name: str
    state: str              # "SERVING", "NOT_SERVING" or "UNSPECIFIED"
    tensor_parallel: int
    pipeline_parallel: int
    kv_blocks_total: int
    kv_blocks_free: int
    kv_block_size: int      # tokens per block
    running_requests: int
    queued_requests: int
    backend: str            # "cpu" or "cuda"
    kv_cache_bytes: int = 0  # KV cache memory of the replica's leader rank
    weight_bytes: int = 0    # weights held by the replica's leader rank


@dataclass(frozen=True)
class ClusterStatus:
    """The replicas of a cluster and its queue."""

    replicas: List[ReplicaStatus]
    queued_requests: int    # requests waiting for any replica

"""Inputs and expectations shared by the sync and async client tests."""
from __future__ import annotations

from tpserve._proto.tpserve.v1 import inference_pb2 as pb

# Every generation argument set to a non-default value that is exact in float32.
ALL_FIELDS = dict(
    prompt="ignored when ids are given", prompt_token_ids=[11, 12, 13], max_new_tokens=5,
    temperature=0.75, top_p=0.5, top_k=40, min_p=0.125, repetition_penalty=1.25,
    seed=2**64 - 1, stop=["\n\n", "END"], stop_token_ids=[2, 99], ignore_eos=True, logprobs=3,
    prompt_logprobs=2, request_id="req-42")

ALL_FIELDS_REQUEST = pb.GenerateRequest(
    prompt="ignored when ids are given", prompt_token_ids=[11, 12, 13], max_new_tokens=5,
    temperature=0.75, top_p=0.5, top_k=40, min_p=0.125, repetition_penalty=1.25,
    seed=2**64 - 1, stop=["\n\n", "END"], stop_token_ids=[2, 99], ignore_eos=True, logprobs=3,
    prompt_logprobs=2, request_id="req-42")

# What generate("hi") sends: the SDK's defaults, seed unset.
DEFAULT_REQUEST = pb.GenerateRequest(
    prompt="hi", max_new_tokens=16, temperature=1.0, top_p=1.0, repetition_penalty=1.0)

# (prompt, max_new_tokens) -> error class and gRPC code name.
ERROR_CASES = [
    (("abc", 0), "InvalidRequestError", "INVALID_ARGUMENT"),
    (("busy", 4), "OverloadedError", "RESOURCE_EXHAUSTED"),
    (("down", 4), "UnavailableError", "UNAVAILABLE"),
    (("boom", 4), "TpserveError", "INTERNAL"),
]

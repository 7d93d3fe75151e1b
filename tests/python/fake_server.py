"""An in-process fake tpserve coordinator with canned, deterministic behaviour for SDK tests.

Inference (tpserve.v1) on 127.0.0.1:<free port>, plus grpc.health.v1 Health:
- the prompt's tokens are `prompt_token_ids`, or else one token per character (its code point);
  the output echoes them reversed, cut at max_new_tokens (finish LENGTH), at the first stop
  token (STOP, included) or when all are echoed (EOS); text is chr() of each token;
- max_new_tokens == 0 -> INVALID_ARGUMENT; prompt "busy" -> RESOURCE_EXHAUSTED; "down" ->
  UNAVAILABLE; "boom" -> INTERNAL; "slow" -> one token per 50 ms until cancelled;
- logprobs: token i has logprob -(i+1)/4 and N alternatives (token_id + k, -(i+1)/4 - k);
  prompt logprobs likewise for prompt tokens 1.., logprob -1/8 each;
- GenerateStream sends one token per message; the last carries finish_reason.
Every request is appended to `requests`; the end of a "slow" stream sets `stream_cancelled`.
"""
from __future__ import annotations

import threading
import time
from concurrent import futures
from typing import List

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from tpserve._proto.tpserve.v1 import inference_pb2 as pb
from tpserve._proto.tpserve.v1 import inference_pb2_grpc as pb_grpc

ERRORS = {"busy": (grpc.StatusCode.RESOURCE_EXHAUSTED, "no free KV blocks"),
          "down": (grpc.StatusCode.UNAVAILABLE, "replica r0 lost"),
          "boom": (grpc.StatusCode.INTERNAL, "broken invariant")}


def _logprob(token_id: int, logprob: float, top_n: int) -> pb.TokenLogprob:
    top = [pb.TopLogprob(token_id=token_id + k, logprob=logprob - k) for k in range(top_n)]
    return pb.TokenLogprob(token_id=token_id, logprob=logprob, top=top)


class FakeInference(pb_grpc.InferenceServicer):
    def __init__(self) -> None:
        self.requests: List[object] = []
        self.stream_cancelled = threading.Event()

    def _check(self, request: pb.GenerateRequest, context: grpc.ServicerContext) -> None:
        self.requests.append(request)
        if request.max_new_tokens == 0:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "max_new_tokens must be >= 1")
        if request.prompt in ERRORS:
            context.abort(*ERRORS[request.prompt])

    def _plan(self, request: pb.GenerateRequest):
        prompt = list(request.prompt_token_ids) or [ord(c) for c in request.prompt]
        tokens, finish = [], pb.FINISH_REASON_EOS
        for token in reversed(prompt):
            if len(tokens) == request.max_new_tokens:
                finish = pb.FINISH_REASON_LENGTH
                break
            tokens.append(token)
            if token in request.stop_token_ids:
                finish = pb.FINISH_REASON_STOP
                break
        logprobs = [_logprob(t, -(i + 1) / 4, request.logprobs) for i, t in enumerate(tokens)]
        prompt_lp = [_logprob(t, -1 / 8, request.prompt_logprobs) for t in prompt[1:]]
        return (prompt, tokens, finish, logprobs if request.logprobs else [],
                prompt_lp if request.prompt_logprobs else [])

    def Generate(self, request, context):
        self._check(request, context)
        prompt, tokens, finish, logprobs, prompt_lp = self._plan(request)
        return pb.GenerateResponse(
            request_id=request.request_id or "fake-1", token_ids=tokens,
            text="".join(map(chr, tokens)), logprobs=logprobs, prompt_logprobs=prompt_lp,
            finish_reason=finish, prompt_tokens=len(prompt), generated_tokens=len(tokens))

    def GenerateStream(self, request, context):
        self._check(request, context)
        if request.prompt == "slow":  # ends only when cancelled (or past its deadline)
            context.add_callback(self.stream_cancelled.set)  # runs when the RPC terminates
            while context.is_active():
                yield pb.GenerateResponse(request_id="slow", token_ids=[7], text="\a")
                time.sleep(0.05)
            return
        prompt, tokens, finish, logprobs, prompt_lp = self._plan(request)
        for i, token in enumerate(tokens):
            yield pb.GenerateResponse(
                request_id=request.request_id or "fake-1", token_ids=[token], text=chr(token),
                logprobs=logprobs[i:i + 1], prompt_logprobs=prompt_lp if i == 0 else [],
                finish_reason=finish if i == len(tokens) - 1 else pb.FINISH_REASON_UNSPECIFIED,
                prompt_tokens=len(prompt), generated_tokens=i + 1)

    def Tokenize(self, request, context):
        self.requests.append(request)
        return pb.TokenizeResponse(token_ids=[1] * request.add_bos + [ord(c) for c in request.text])

    def GetModelInfo(self, request, context):
        return pb.ModelInfo(
            name="fake-mistral", architecture="MistralForCausalLM", num_layers=48,
            hidden_size=4096, num_heads=32, num_kv_heads=8, vocab_size=32000, max_context=4096,
            sliding_window=4096, bos_token_id=1, eos_token_ids=[2, 32000], fingerprint="abc123")

    def GetClusterStatus(self, request, context):
        return pb.ClusterStatus(queued_requests=3, replicas=[
            pb.ReplicaStatus(name="r0", state=pb.REPLICA_STATE_SERVING, tensor_parallel=2,
                             pipeline_parallel=2, kv_blocks_total=1000, kv_blocks_free=250,
                             kv_block_size=16, running_requests=5, queued_requests=1,
                             backend="cuda"),
            pb.ReplicaStatus(name="r1", state=pb.REPLICA_STATE_NOT_SERVING, backend="cpu")])


class FakeServer:
    """Starts the fake on a free port; `address` is "127.0.0.1:<port>"; stop() ends it."""

    def __init__(self) -> None:
        self.inference = FakeInference()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        pb_grpc.add_InferenceServicer_to_server(self.inference, self.server)
        health_servicer = health.HealthServicer()
        health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        health_servicer.set("tpserve.v1.Inference", health_pb2.HealthCheckResponse.SERVING)
        health_servicer.set("draining", health_pb2.HealthCheckResponse.NOT_SERVING)
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.address = f"127.0.0.1:{self.port}"
        self.server.start()

    def reset(self) -> None:
        self.inference.requests.clear()
        self.inference.stream_cancelled.clear()

    def stop(self) -> None:
        self.server.stop(grace=None)

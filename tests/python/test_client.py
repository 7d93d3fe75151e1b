"""tpserve.Client (blocking) against the in-process fake server of fake_server.py."""
from __future__ import annotations

import socket

import pytest

import tpserve
from cases import ALL_FIELDS, ALL_FIELDS_REQUEST, DEFAULT_REQUEST, ERROR_CASES
from tpserve import FinishReason, TokenLogprob, TopLogprob


def test_generate_returns_prompt_ids_reversed_with_counts_and_eos(client, server):
    r = client.generate(prompt_token_ids=[72, 105, 33])
    assert r.token_ids == [33, 105, 72]
    assert r.text == "!iH"
    assert r.finish_reason is FinishReason.EOS and r.finish_reason == "eos"
    assert (r.prompt_tokens, r.generated_tokens, r.request_id) == (3, 3, "fake-1")
    assert r.logprobs == [] and r.prompt_logprobs == []


def test_generate_text_prompt_stops_at_max_new_tokens_with_length(client):
    r = client.generate("abc", max_new_tokens=2, request_id="mine")
    assert (r.token_ids, r.text, r.finish_reason) == ([99, 98], "cb", FinishReason.LENGTH)
    assert r.request_id == "mine"


def test_generate_stop_token_gives_stop(client):
    r = client.generate(prompt_token_ids=[1, 2, 3, 4], stop_token_ids=[3])
    assert (r.token_ids, r.finish_reason) == ([4, 3], "stop")


def test_every_generate_field_reaches_server_exactly(client, server):
    client.generate(**ALL_FIELDS)
    (received,) = server.inference.requests
    assert received == ALL_FIELDS_REQUEST
    assert received.HasField("seed") and received.seed == 2**64 - 1


def test_messages_reach_server_as_chat_messages(client, server):
    turns = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi ✓"}]
    client.generate(messages=turns, max_new_tokens=2)
    (received,) = server.inference.requests
    assert [(m.role, m.content) for m in received.messages] == [
        ("system", "Be brief."), ("user", "hi ✓")]
    assert received.prompt == "" and not received.prompt_token_ids


def test_defaults_send_sdk_defaults_and_leave_seed_unset(client, server):
    client.generate("hi")
    (received,) = server.inference.requests
    assert received == DEFAULT_REQUEST
    assert not received.HasField("seed")


def test_seed_zero_is_sent_as_present(client, server):
    client.generate("hi", seed=0)
    client.stream("hi", seed=0).close()  # never started: sends nothing
    list(client.stream("hi", seed=0))
    assert [r.HasField("seed") for r in server.inference.requests] == [True, True]
    assert [r.seed for r in server.inference.requests] == [0, 0]


def test_lone_stop_string_is_one_stop_string(client, server):
    client.generate("hi", stop="\n")
    assert list(server.inference.requests[0].stop) == ["\n"]


def test_generate_converts_logprobs_and_prompt_logprobs(client):
    r = client.generate(prompt_token_ids=[10, 20], logprobs=2, prompt_logprobs=1)
    assert r.logprobs == [
        TokenLogprob(20, -0.25, [TopLogprob(20, -0.25), TopLogprob(21, -1.25)]),
        TokenLogprob(10, -0.5, [TopLogprob(10, -0.5), TopLogprob(11, -1.5)]),
    ]
    assert r.prompt_logprobs == [TokenLogprob(20, -0.125, [TopLogprob(20, -0.125)])]


def test_stream_yields_one_token_per_chunk_and_finish_on_last(client):
    chunks = list(client.stream("abc", max_new_tokens=8, logprobs=1, prompt_logprobs=1))
    assert [c.token_ids for c in chunks] == [[99], [98], [97]]
    assert "".join(c.text for c in chunks) == "cba"
    assert [c.finish_reason for c in chunks] == [None, None, FinishReason.EOS]
    assert [c.generated_tokens for c in chunks] == [1, 2, 3]
    assert all(c.prompt_tokens == 3 for c in chunks)
    assert [[lp.token_id for lp in c.logprobs] for c in chunks] == [[99], [98], [97]]
    assert [len(c.prompt_logprobs) for c in chunks] == [2, 0, 0]


def test_stream_closed_early_cancels_on_server(client, server):
    stream = client.stream("slow")
    assert next(stream).token_ids == [7]
    stream.close()
    assert server.inference.stream_cancelled.wait(5)


def test_stream_deadline_raises_deadline_exceeded(client):
    with pytest.raises(tpserve.TpserveError) as info:
        list(client.stream("slow", timeout=0.3))
    assert type(info.value) is tpserve.TpserveError
    assert info.value.code == "DEADLINE_EXCEEDED"


@pytest.mark.parametrize("method", ["generate", "stream"])
@pytest.mark.parametrize("args, error, code", ERROR_CASES)
def test_errors_map_to_sdk_exceptions(client, method, args, error, code):
    prompt, max_new_tokens = args
    with pytest.raises(tpserve.TpserveError) as info:
        result = getattr(client, method)(prompt, max_new_tokens=max_new_tokens)
        list(result) if method == "stream" else None
    assert type(info.value) is getattr(tpserve, error)
    assert info.value.code == code and info.value.message
    assert code in str(info.value)


def test_unreachable_server_raises_unavailable():
    with socket.socket() as s:  # a port nobody listens on once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tpserve.Client(f"127.0.0.1:{port}", timeout=5) as client:
        with pytest.raises(tpserve.UnavailableError):
            client.model_info()
        with pytest.raises(tpserve.UnavailableError):
            client.health()


def test_tokenize_with_and_without_bos(client, server):
    assert client.tokenize("Hi") == [72, 105]
    assert client.tokenize("Hi", add_bos=True) == [1, 72, 105]
    assert [r.add_bos for r in server.inference.requests] == [False, True]


def test_model_info(client):
    info = client.model_info()
    assert info == tpserve.ModelInfo(
        name="fake-mistral", architecture="MistralForCausalLM", num_layers=48, hidden_size=4096,
        num_heads=32, num_kv_heads=8, vocab_size=32000, max_context=4096, sliding_window=4096,
        bos_token_id=1, eos_token_ids=[2, 32000], fingerprint="abc123")


def test_cluster_status(client):
    status = client.cluster_status()
    assert status.queued_requests == 3
    r0, r1 = status.replicas
    assert r0 == tpserve.ReplicaStatus(
        name="r0", state="SERVING", tensor_parallel=2, pipeline_parallel=2,
        kv_blocks_total=1000, kv_blocks_free=250, kv_block_size=16, running_requests=5,
        queued_requests=1, backend="cuda")
    assert (r1.name, r1.state, r1.backend) == ("r1", "NOT_SERVING", "cpu")


def test_health_reports_serving_not_serving_and_unknown(client):
    assert client.health() == "SERVING"
    assert client.health("tpserve.v1.Inference") == "SERVING"
    assert client.health("draining") == "NOT_SERVING"
    assert client.health("no.such.Service") == "SERVICE_UNKNOWN"


def test_context_manager_closes_channel(server):
    with tpserve.Client(server.address) as client:
        assert client.health() == "SERVING"
    with pytest.raises(Exception):
        client.health()

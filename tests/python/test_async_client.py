"""tpserve.AsyncClient (grpc.aio) against the in-process fake server of fake_server.py."""
from __future__ import annotations

import asyncio

import pytest

import tpserve
from cases import ALL_FIELDS, ALL_FIELDS_REQUEST, DEFAULT_REQUEST, ERROR_CASES
from tpserve import FinishReason


async def test_generate_returns_prompt_ids_reversed(aclient):
    r = await aclient.generate(prompt_token_ids=[72, 105, 33], logprobs=1)
    assert (r.token_ids, r.text, r.finish_reason) == ([33, 105, 72], "!iH", FinishReason.EOS)
    assert (r.prompt_tokens, r.generated_tokens) == (3, 3)
    assert [lp.logprob for lp in r.logprobs] == [-0.25, -0.5, -0.75]


async def test_every_generate_field_reaches_server_exactly(aclient, server):
    await aclient.generate(**ALL_FIELDS)
    chunks = [c async for c in aclient.stream(**ALL_FIELDS)]
    await aclient.generate("hi")
    full, streamed, default = server.inference.requests
    assert full == ALL_FIELDS_REQUEST and streamed == ALL_FIELDS_REQUEST
    assert default == DEFAULT_REQUEST and not default.HasField("seed")
    assert chunks[-1].finish_reason is FinishReason.EOS


async def test_seed_zero_is_sent_as_present(aclient, server):
    await aclient.generate("hi", seed=0)
    (received,) = server.inference.requests
    assert received.HasField("seed") and received.seed == 0


async def test_stream_yields_one_token_per_chunk_and_finish_on_last(aclient):
    chunks = [c async for c in aclient.stream("abc", max_new_tokens=2, request_id="s")]
    assert [c.token_ids for c in chunks] == [[99], [98]]
    assert [c.finish_reason for c in chunks] == [None, "length"]
    assert {c.request_id for c in chunks} == {"s"}


async def test_stream_closed_early_cancels_on_server(aclient, server):
    stream = aclient.stream("slow")
    assert (await stream.__anext__()).token_ids == [7]
    await stream.aclose()
    assert await asyncio.to_thread(server.inference.stream_cancelled.wait, 5)


async def test_deadline_raises_deadline_exceeded(aclient):
    with pytest.raises(tpserve.TpserveError) as info:
        _ = [c async for c in aclient.stream("slow", timeout=0.3)]
    assert type(info.value) is tpserve.TpserveError and info.value.code == "DEADLINE_EXCEEDED"


@pytest.mark.parametrize("method", ["generate", "stream"])
@pytest.mark.parametrize("args, error, code", ERROR_CASES)
async def test_errors_map_to_sdk_exceptions(aclient, method, args, error, code):
    prompt, max_new_tokens = args
    with pytest.raises(tpserve.TpserveError) as info:
        if method == "stream":
            _ = [c async for c in aclient.stream(prompt, max_new_tokens=max_new_tokens)]
        else:
            await aclient.generate(prompt, max_new_tokens=max_new_tokens)
    assert type(info.value) is getattr(tpserve, error)
    assert info.value.code == code and info.value.message


async def test_tokenize_model_info_cluster_status_health(aclient):
    assert await aclient.tokenize("Hi", add_bos=True) == [1, 72, 105]
    assert (await aclient.model_info()).eos_token_ids == [2, 32000]
    status = await aclient.cluster_status()
    assert [(r.name, r.state) for r in status.replicas] == [("r0", "SERVING"),
                                                             ("r1", "NOT_SERVING")]
    assert await aclient.health() == "SERVING"
    assert await aclient.health("draining") == "NOT_SERVING"
    assert await aclient.health("no.such.Service") == "SERVICE_UNKNOWN"


async def test_context_manager_closes_channel(server):
    async with tpserve.AsyncClient(server.address) as client:
        assert await client.health() == "SERVING"
    with pytest.raises(Exception):
        await client.health()

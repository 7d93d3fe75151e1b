"""End-to-end: clients -> coordinator -> worker jobs on CPU, over the tiny reference models."""
import concurrent.futures as cf
import json
import os
import threading
import time

import pytest
import tpserve

from cluster import DATA, LocalCluster, make_model

GOLDEN = json.load(open(os.path.join(DATA, "tiny-mistral", "golden.json")))


def clear_greedy(seq):
    """The reference's greedy tokens up to the first near tie (margin < 0.01)."""
    out = []
    for token, margin in zip(seq["greedy"], seq["margins"]):
        if margin < 1e-2:
            break
        out.append(token)
    return out


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = LocalCluster(log_dir=str(tmp_path_factory.mktemp("logs")))
    yield c
    c.close()


@pytest.mark.parametrize("tp,pp,layers", [(1, 1, None), (2, 1, None), (1, 2, None), (2, 2, None),
                                          (1, 3, [2, 1, 1]), (4, 1, None)])
def test_every_layout_gives_the_reference_greedy_tokens(tp, pp, layers, tmp_path):
    replica = ("r", tp, pp) + ((layers,) if layers else ())
    c = LocalCluster(replicas=[replica], log_dir=str(tmp_path))
    try:
        for seq in GOLDEN["sequences"][:3]:
            want = clear_greedy(seq)
            r = c.client.generate(prompt_token_ids=seq["prompt"], max_new_tokens=len(want),
                                  temperature=0, ignore_eos=True)
            assert r.token_ids == want
    finally:
        c.close()


def test_streaming_equals_unary(cluster):
    kwargs = dict(prompt="hello world, streaming", max_new_tokens=12, temperature=0.8, seed=5,
                  ignore_eos=True, logprobs=2)
    unary = cluster.client.generate(**kwargs)
    chunks = list(cluster.client.stream(**kwargs))
    assert [t for ch in chunks for t in ch.token_ids] == unary.token_ids
    assert "".join(ch.text for ch in chunks) == unary.text
    assert chunks[-1].finish_reason == unary.finish_reason == "length"
    assert len(unary.logprobs) == 12


def test_concurrent_clients_get_what_they_get_alone(cluster):
    def ask(i):
        return cluster.client.generate(prompt_token_ids=[1, 10 + i, 20 + i % 7], max_new_tokens=6,
                                       temperature=1.0, seed=i, ignore_eos=True).token_ids
    alone = [ask(i) for i in range(64)]
    with cf.ThreadPoolExecutor(64) as pool:
        together = list(pool.map(ask, range(64)))
    assert together == alone


def test_tiny_kv_capacity_forces_preemption_and_everything_finishes(tmp_path):
    c = LocalCluster(kv_blocks=12, block_size=4, log_dir=str(tmp_path))  # 48 tokens of KV
    try:
        seqs = GOLDEN["sequences"][1:4]
        want = [c.client.generate(prompt_token_ids=s["prompt"], max_new_tokens=8, temperature=0,
                                  ignore_eos=True).token_ids for s in seqs]
        with cf.ThreadPoolExecutor(len(seqs)) as pool:
            got = list(pool.map(lambda s: c.client.generate(
                prompt_token_ids=s["prompt"], max_new_tokens=8, temperature=0,
                ignore_eos=True).token_ids, seqs))
        assert got == want
        status = c.client.cluster_status().replicas[0]
        assert status.kv_blocks_free == status.kv_blocks_total
    finally:
        c.close()


@pytest.fixture(scope="module")
def slow_model(tmp_path_factory):
    """Generation on it takes a few ms per token: long enough to cancel or crash mid-way."""
    return make_model(str(tmp_path_factory.mktemp("slow-model")))


def wait_until(condition, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def test_cancel_and_disconnect_return_the_kv_capacity(slow_model, tmp_path):
    c = LocalCluster(model=slow_model, log_dir=str(tmp_path))
    try:
        def kv_full_and_idle():
            r = c.client.cluster_status().replicas[0]
            return r.kv_blocks_free == r.kv_blocks_total and r.running_requests == 0
        # A stream closed by its client after the first chunk.
        stream = c.client.stream(prompt_token_ids=[1, 2, 3], max_new_tokens=3000, temperature=0,
                                 ignore_eos=True)
        next(iter(stream))
        assert not kv_full_and_idle()
        stream.close()
        assert wait_until(kv_full_and_idle)
        # A unary call whose deadline passes mid-generation.
        short = tpserve.Client(c.api, timeout=1.0)
        with pytest.raises(tpserve.TpserveError) as e:
            short.generate(prompt_token_ids=[1, 2, 3], max_new_tokens=3000, temperature=0,
                           ignore_eos=True)
        assert e.value.code == "DEADLINE_EXCEEDED"
        short.close()
        assert wait_until(kv_full_and_idle)
    finally:
        c.close()


@pytest.mark.parametrize("field,kwargs", [
    ("prompt", dict(prompt="")),
    ("max_new_tokens", dict(prompt="hi", max_new_tokens=0)),
    ("max_new_tokens", dict(prompt="hi", max_new_tokens=100000)),
    ("temperature", dict(prompt="hi", temperature=-1)),
    ("top_p", dict(prompt="hi", top_p=1.5)),
    ("prompt_token_ids", dict(prompt_token_ids=[1, 99999])),
    ("min_p", dict(prompt="hi", min_p=2.0)),
    ("messages", dict(prompt="hi", messages=[{"role": "user", "content": "hi"}])),
    ("messages[0].role", dict(messages=[{"role": "robot", "content": "hi"}])),
    ("messages[1].role", dict(messages=[{"role": "user", "content": "a"},
                                        {"role": "assistant", "content": "b"}])),
])
def test_invalid_requests_are_refused_and_the_server_keeps_serving(cluster, field, kwargs):
    kwargs.setdefault("max_new_tokens", 2)
    with pytest.raises(tpserve.InvalidRequestError) as e:
        cluster.client.generate(**kwargs)
    assert field in str(e.value)
    # ignore_eos: a sampled EOS (default temperature 1) would end it after one token.
    still = cluster.client.generate(prompt="still here", max_new_tokens=2, ignore_eos=True)
    assert still.generated_tokens == 2


def test_killing_a_replica_mid_generation_loses_no_request(slow_model, tmp_path):
    c = LocalCluster(model=slow_model, replicas=[("a", 1, 1), ("b", 1, 1)], log_dir=str(tmp_path))
    try:
        prompts = [[1, 30 + i, 40 + i] for i in range(8)]
        want = [c.client.generate(prompt_token_ids=p, max_new_tokens=300, temperature=0,
                                  ignore_eos=True).token_ids for p in prompts]
        results = {}

        def ask(i):
            results[i] = c.client.generate(prompt_token_ids=prompts[i], max_new_tokens=300,
                                           temperature=0, ignore_eos=True).token_ids
        threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(prompts))]
        for t in threads:
            t.start()
        busy = lambda: any(r.name == "a" and r.running_requests > 0
                           for r in c.client.cluster_status().replicas)
        assert wait_until(busy)
        c.kill_replica("a")
        for t in threads:
            t.join(timeout=300)
        # Every request answered once, in full, with the tokens it gets on a healthy cluster.
        assert sorted(results) == list(range(len(prompts)))
        assert [results[i] for i in range(len(prompts))] == want
        # The launcher restarts the job and the coordinator re-admits it.
        c.wait_serving(2)
        assert "replica \"a\" exited" in open(tmp_path / "launch.log").read()
    finally:
        c.close()


def test_chat_messages_render_the_models_prompt_form(cluster):
    """tiny-mistral declares no chat template, so the Mistral family's USER:/ASSISTANT: form."""
    assert cluster.client.model_info().chat_template == "airomnimix"
    chat = cluster.client.generate(
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"},
                  {"role": "assistant", "content": "hello"}, {"role": "user", "content": "more"}],
        max_new_tokens=4, temperature=0, ignore_eos=True)
    text = "SYSTEM: Be brief.\nUSER: hi\nASSISTANT: hello\nUSER: more\nASSISTANT:"
    raw = cluster.client.generate(prompt=text, max_new_tokens=4, temperature=0, ignore_eos=True)
    assert chat.prompt_tokens == len(cluster.client.tokenize(text, add_bos=True))
    assert chat.token_ids == raw.token_ids

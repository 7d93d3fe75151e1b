"""End-to-end: the `tpserve` CLI (C++ SDK) against a coordinator and mpirun worker jobs on CPU.

The Python SDK is the reference: the CLI must answer what it answers. Needs TPSERVE_BUILD (the
coordinator, worker and tpserve-make-model; see tests/e2e/cluster.py) and the CLI at
TPSERVE_CLI or $TPSERVE_BUILD/clients/tpserve. Run through tests/clients/run.sh.
"""
import concurrent.futures as cf
import json
import os
import signal
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))
from cluster import BUILD, LocalCluster, make_model  # noqa: E402

CLI = os.environ.get("TPSERVE_CLI", os.path.join(BUILD, "clients", "tpserve"))


def tpserve(*args, check=True, timeout=120):
    """Runs the CLI; returns the CompletedProcess (text mode)."""
    p = subprocess.run([CLI, *map(str, args)], capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"tpserve {args} exited {p.returncode}: {p.stderr}")
    return p


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = LocalCluster(log_dir=str(tmp_path_factory.mktemp("logs")))
    yield c
    c.close()


def test_generate_prints_what_the_python_sdk_gets_greedy(cluster):
    want = cluster.client.generate("hello world, the cli", max_new_tokens=12, temperature=0)
    args = ["generate", "--server", cluster.api, "--prompt", "hello world, the cli",
            "--max_new_tokens", 12, "--temperature", 0]
    got = json.loads(tpserve(*args, "--json").stdout)
    assert got["token_ids"] == want.token_ids
    assert got["text"] == want.text
    assert got["finish_reason"] == want.finish_reason
    assert got["prompt_tokens"] == want.prompt_tokens
    assert got["generated_tokens"] == want.generated_tokens == len(want.token_ids)
    assert tpserve(*args).stdout == want.text + "\n"


def test_generate_with_seed_stop_and_logprobs_matches_the_sdk(cluster):
    kwargs = dict(prompt_token_ids=[1, 50, 60, 70], max_new_tokens=10, temperature=0.9, top_p=0.95,
                  top_k=40, seed=7, ignore_eos=True, logprobs=2)
    want = cluster.client.generate(**kwargs)
    got = json.loads(tpserve(
        "generate", "--server", cluster.api, "--prompt_token_ids", "1,50,60,70",
        "--max_new_tokens", 10, "--temperature", 0.9, "--top_p", 0.95, "--top_k", 40, "--seed", 7,
        "--ignore_eos", "--logprobs", 2, "--json").stdout)
    assert got["token_ids"] == want.token_ids
    assert [lp["token_id"] for lp in got["logprobs"]] == [lp.token_id for lp in want.logprobs]
    assert [[t["token_id"] for t in lp["top"]] for lp in got["logprobs"]] == \
        [[t.token_id for t in lp.top] for lp in want.logprobs]
    for g, w in zip(got["logprobs"], want.logprobs):
        assert g["logprob"] == pytest.approx(w.logprob, abs=1e-6)


def test_stream_prints_the_same_text_as_generate(cluster):
    want = cluster.client.generate("streaming from the cli", max_new_tokens=12, temperature=0,
                                   ignore_eos=True)
    p = tpserve("stream", "--server", cluster.api, "--prompt", "streaming from the cli",
                "--max_new_tokens", 12, "--temperature", 0, "--ignore_eos")
    assert p.stdout == want.text + "\n"
    chunks = [json.loads(line) for line in tpserve(
        "stream", "--server", cluster.api, "--prompt", "streaming from the cli",
        "--max_new_tokens", 12, "--temperature", 0, "--ignore_eos", "--json").stdout.splitlines()]
    assert [t for c in chunks for t in c["token_ids"]] == want.token_ids
    assert chunks[-1]["finish_reason"] == "length"


def test_tokenize_matches_the_sdk(cluster):
    want = cluster.client.tokenize("tokenize me, please", add_bos=True)
    got = tpserve("tokenize", "--server", cluster.api, "--text", "tokenize me, please", "--add_bos",
                  "--json").stdout
    assert json.loads(got) == want
    plain = tpserve("tokenize", "--server", cluster.api, "--text", "tokenize me, please").stdout
    assert [int(t) for t in plain.split()] == cluster.client.tokenize("tokenize me, please")


def test_health_says_serving(cluster):
    p = tpserve("health", "--server", cluster.api)
    assert p.stdout.strip() == "SERVING"
    assert tpserve("health", "--server", cluster.api, "--service", "tpserve.v1.Inference"
                   ).stdout.strip() == "SERVING"
    unknown = tpserve("health", "--server", cluster.api, "--service", "no.such.Service", check=False)
    assert unknown.stdout.strip() == "SERVICE_UNKNOWN" and unknown.returncode == 1


def test_status_lists_the_replica(cluster):
    lines = tpserve("status", "--server", cluster.api).stdout.splitlines()
    assert lines[0].split()[:3] == ["NAME", "STATE", "BACKEND"]
    row = next(line.split() for line in lines[1:] if line.split()[:1] == ["r0"])
    assert row[1] == "SERVING" and row[3:5] == ["1", "1"]
    got = json.loads(tpserve("status", "--server", cluster.api, "--json").stdout)
    want = cluster.client.cluster_status().replicas[0]
    assert [r["name"] for r in got["replicas"]] == ["r0"]
    assert got["replicas"][0]["kv_blocks_total"] == want.kv_blocks_total


def test_model_describes_the_served_model(cluster):
    got = json.loads(tpserve("model", "--server", cluster.api, "--json").stdout)
    want = cluster.client.model_info()
    assert got["fingerprint"] == want.fingerprint and got["vocab_size"] == want.vocab_size
    assert got["chat_template"] == want.chat_template == "airomnimix"


def test_chat_turns_from_message_and_system_flags_match_the_sdk(cluster):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello"}, {"role": "user", "content": "more"}]
    want = cluster.client.generate(messages=messages, max_new_tokens=6, temperature=0)
    got = json.loads(tpserve("generate", "--server", cluster.api, "--system", "Be brief.",
                             "--message", "hi", "--message", "hello", "--message", "more",
                             "--max_new_tokens", 6, "--temperature", 0, "--json").stdout)
    assert got["token_ids"] == want.token_ids and got["prompt_tokens"] == want.prompt_tokens
    both = tpserve("generate", "--server", cluster.api, "--message", "hi", "--prompt", "x",
                   check=False)
    assert both.returncode == 2 and "--message" in both.stderr


def test_bench_prints_one_row_per_concurrency_level(cluster):
    out = tpserve("bench", "--server", cluster.api, "--concurrency", "1,3", "--requests", 6,
                  "--prompt_len", 5, "--new_tokens", 3).stdout
    rows = [line.split("|")[1:-1] for line in out.splitlines() if line.startswith("| ")]
    assert [int(r[0]) for r in rows[1:]] == [1, 3]
    assert all(int(r[1]) == 6 and float(r[5]) > 0 for r in rows[1:])
    assert tpserve("bench", "--server", cluster.api, "--concurrency", "0",
                   check=False).returncode == 2


def test_errors_keep_the_server_code_and_usage_mistakes_exit_2(cluster):
    p = tpserve("generate", "--server", cluster.api, "--prompt", "hi", "--max_new_tokens", 100000,
                check=False)
    assert p.returncode == 1 and "INVALID_ARGUMENT" in p.stderr and "max_new_tokens" in p.stderr
    assert tpserve("frobnicate", check=False).returncode == 2
    assert tpserve("generate", "--server", cluster.api, "--nope", check=False).returncode == 2


# --- the batch runner, on a model slow enough that a run can be killed mid-way ---------------

PROMPTS = 40
MAX_NEW_TOKENS = 300


def batch_request(i):
    return {"id": f"q{i:02d}", "prompt_token_ids": [1, 30 + i, 40 + i, 7],
            "max_new_tokens": MAX_NEW_TOKENS, "temperature": 0, "seed": 1000 + i}


def read_results(path):
    """The output's complete lines as dicts (a torn last line is left out)."""
    with open(path, "rb") as f:
        data = f.read()
    return [json.loads(line) for line in data.split(b"\n")[:-1] if line.strip()]


@pytest.fixture(scope="module")
def slow_cluster(tmp_path_factory):
    model = make_model(str(tmp_path_factory.mktemp("slow-model")))
    c = LocalCluster(model=model, log_dir=str(tmp_path_factory.mktemp("slow-logs")))
    yield c
    c.close()


def test_batch_killed_and_restarted_has_every_id_once_with_single_generate_results(
        slow_cluster, tmp_path):
    requests = [batch_request(i) for i in range(PROMPTS)]
    inp, out = tmp_path / "prompts.jsonl", tmp_path / "results.jsonl"
    inp.write_text("".join(json.dumps(r) + "\n" for r in requests))
    cmd = [CLI, "batch", "--server", slow_cluster.api, "--input", str(inp), "--output", str(out),
           "--concurrency", "4", "--max_retries", "5"]

    first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "run1.err", "w"))
    deadline = time.time() + 120
    while time.time() < deadline and first.poll() is None:
        if out.exists() and len(read_results(out)) >= 10:
            break
        time.sleep(0.02)
    first.send_signal(signal.SIGKILL)
    first.wait()
    done_at_kill = len(read_results(out))
    assert 10 <= done_at_kill < PROMPTS, f"the kill came at {done_at_kill} results"
    # Leave the tail a crash mid-write leaves: a line cut short, for an id not yet done.
    done_ids = {r["id"] for r in read_results(out)}
    missing = next(r["id"] for r in requests if r["id"] not in done_ids)
    with open(out, "ab") as f:
        f.write(json.dumps({"id": missing, "text": "", "token_ids": [1, 2, 3]}).encode()[:25])

    second = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr
    assert f"skipped {done_at_kill}," in second.stderr
    assert "cut a torn last line" in second.stderr
    assert out.read_bytes().endswith(b"\n")

    results = read_results(out)
    ids = [r["id"] for r in results]
    assert sorted(ids) == sorted(r["id"] for r in requests)  # every id, exactly once
    assert all("error" not in r for r in results)

    def single(r):
        return slow_cluster.client.generate(
            prompt_token_ids=r["prompt_token_ids"], max_new_tokens=r["max_new_tokens"],
            temperature=r["temperature"], seed=r["seed"])
    with cf.ThreadPoolExecutor(4) as pool:
        want = dict(zip((r["id"] for r in requests), pool.map(single, requests)))
    for r in results:
        w = want[r["id"]]
        assert r["token_ids"] == w.token_ids, r["id"]
        assert r["text"] == w.text
        assert r["finish_reason"] == w.finish_reason
        assert r["prompt_tokens"] == w.prompt_tokens == 4
        assert r["generated_tokens"] == w.generated_tokens

    # A third run finds nothing to do and leaves the file as it is.
    before = out.read_bytes()
    third = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert third.returncode == 0 and f"skipped {PROMPTS}," in third.stderr
    assert out.read_bytes() == before


def _coordinator_attr(c):
    """The attribute holding a bare coordinator's Popen (LocalCluster(replicas=[])): `main` in
    the launcher-based cluster.py, `coordinator` before it."""
    return "main" if hasattr(c, "main") else "coordinator"


def test_batch_retries_through_a_coordinator_restart_and_loses_nothing(slow_cluster, tmp_path):
    # A bare coordinator and a hand-started worker job, so that killing the coordinator does
    # not stop the cluster; the job re-registers with the new coordinator.
    c = LocalCluster(model=slow_cluster.model, replicas=[], log_dir=str(tmp_path))
    try:
        c.start_replica("r0", 1, 1)
        c.wait_serving(1)
        requests = [dict(batch_request(i), max_new_tokens=150) for i in range(24)]
        inp, out = tmp_path / "prompts.jsonl", tmp_path / "results.jsonl"
        inp.write_text("".join(json.dumps(r) + "\n" for r in requests))
        run = subprocess.Popen([CLI, "batch", "--server", c.api, "--input", str(inp),
                                "--output", str(out), "--concurrency", "4"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 120
        while time.time() < deadline and not (out.exists() and len(read_results(out)) >= 4):
            time.sleep(0.02)
        coordinator = getattr(c, _coordinator_attr(c))
        coordinator.send_signal(signal.SIGKILL)
        coordinator.wait()
        assert run.poll() is None, "the batch finished before the coordinator went down"
        time.sleep(1.0)
        setattr(c, _coordinator_attr(c), subprocess.Popen(
            [f"{BUILD}/coordinator/tpserve-coordinator", "--model", c.model, "--listen", c.api,
             "--worker_listen", c.link],
            stdout=open(tmp_path / "coordinator-2.log", "w"), stderr=subprocess.STDOUT,
            env=dict(os.environ, OMP_NUM_THREADS="1")))
        c.wait_serving(1)
        _, err = run.communicate(timeout=600)
        assert run.returncode == 0, err
        assert "retries" in err  # requests in flight at the crash were sent again
        results = read_results(out)
        assert sorted(r["id"] for r in results) == sorted(r["id"] for r in requests)
        for r, want in zip(sorted(results, key=lambda r: r["id"]), requests):
            w = c.client.generate(prompt_token_ids=want["prompt_token_ids"], max_new_tokens=150,
                                  temperature=0, seed=want["seed"])
            assert r["token_ids"] == w.token_ids, r["id"]
    finally:
        c.close()


def test_batch_bad_input_names_the_line_and_sends_nothing(slow_cluster, tmp_path):
    inp, out = tmp_path / "prompts.jsonl", tmp_path / "results.jsonl"
    inp.write_text(json.dumps(batch_request(0)) + "\n" + json.dumps(batch_request(1)) + "\n"
                   + json.dumps(batch_request(0)) + "\n")
    p = tpserve("batch", "--server", slow_cluster.api, "--input", inp, "--output", out, check=False)
    assert p.returncode == 1
    assert "prompts.jsonl:3: duplicate id \"q00\" (first on line 1)" in p.stderr
    inp.write_text(json.dumps(batch_request(0)) + "\n{\"id\": \"x\", \"prompt\": }\n")
    p = tpserve("batch", "--server", slow_cluster.api, "--input", inp, "--output", out, check=False)
    assert p.returncode == 1 and "prompts.jsonl:2: not valid JSON" in p.stderr
    assert not out.exists()


def test_batch_writes_permanent_failures_as_error_lines(slow_cluster, tmp_path):
    inp, out = tmp_path / "prompts.jsonl", tmp_path / "results.jsonl"
    good = dict(batch_request(0), max_new_tokens=4)
    bad = {"id": "too-long", "prompt_token_ids": [1, 2], "max_new_tokens": 100000}
    inp.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    p = tpserve("batch", "--server", slow_cluster.api, "--input", inp, "--output", out)
    assert "done 1, failed 1" in p.stderr
    results = {r["id"]: r for r in read_results(out)}
    assert results["too-long"]["error"].startswith("INVALID_ARGUMENT: ")
    assert results[good["id"]]["generated_tokens"] == 4

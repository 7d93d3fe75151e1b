#!/usr/bin/env python3
"""Serving benchmark in the manner of vLLM's: drives a local tpserve cluster through the
Python SDK at several concurrencies and prints time to first token, inter-token latency,
requests/s and output tokens/s, for several replica layouts. Also runs TP1xPP2 with one
micro-batch in flight against the default (PP in flight) to show the pipeline overlap.

    bash bench/run_serving_bench.sh            (builds the venv, then runs this)
"""
import argparse
import os
import statistics
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../tests/e2e"))
from cluster import LocalCluster, make_model  # noqa: E402


def run_load(client, concurrency, requests, prompt_len, new_tokens):
    ttft, itl, out_tokens = [], [], [0]
    lock = threading.Lock()
    next_id = [0]

    def worker():
        while True:
            with lock:
                i = next_id[0]
                next_id[0] += 1
            if i >= requests:
                return
            prompt = [1] + [(7 * i + 13 * k) % 3000 + 3 for k in range(prompt_len - 1)]
            start = last = time.perf_counter()
            first = True
            n = 0
            for chunk in client.stream(prompt_token_ids=prompt, max_new_tokens=new_tokens,
                                       temperature=0, ignore_eos=True):
                now = time.perf_counter()
                if chunk.token_ids:
                    with lock:
                        (ttft if first else itl).append(now - (start if first else last))
                    first = False
                    last = now
                    n += len(chunk.token_ids)
            with lock:
                out_tokens[0] += n

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return {
        "ttft_ms": 1000 * statistics.median(ttft),
        "itl_ms": 1000 * statistics.median(itl) if itl else 0.0,
        "req_s": requests / wall,
        "tok_s": out_tokens[0] / wall,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--concurrency", default="1,4,16,64")
    ap.add_argument("--prompt_len", type=int, default=32)
    ap.add_argument("--new_tokens", type=int, default=32)
    ap.add_argument("--model_dir", default="/tmp/tpserve-serving-bench-model",
                    help="made (random) unless it holds a checkpoint or a .gguf already")
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--vocab", type=int, default=4000)
    ap.add_argument("--only", default="", help="run only setups whose name contains this")
    args = ap.parse_args()
    model = os.path.abspath(args.model_dir)
    has_gguf = os.path.isdir(model) and any(f.endswith(".gguf") for f in os.listdir(model))
    if not has_gguf and not os.path.exists(os.path.join(model, "model.safetensors")):
        make_model(model, layers=args.layers, hidden=args.hidden, vocab=args.vocab)
    levels = [int(c) for c in args.concurrency.split(",")]
    setups = [
        ("1 replica TP1xPP1", [("r", 1, 1)], []),
        ("1 replica TP2xPP1", [("r", 2, 1)], []),
        ("1 replica TP1xPP2", [("r", 1, 2)], []),
        ("1 replica TP1xPP2, 1 micro-batch in flight", [("r", 1, 2)], ["--max_in_flight", "1"]),
        ("2 replicas TP1xPP1", [("a", 1, 1), ("b", 1, 1)], []),
    ]
    print("| setup | concurrency | TTFT median ms | ITL median ms | requests/s | output tokens/s |")
    print("|---|---|---|---|---|---|")
    for name, replicas, extra in setups:
        if args.only not in name:
            continue
        c = LocalCluster(model=model, replicas=replicas, kv_blocks=2048, block_size=16,
                         coordinator_args=extra, log_dir="/tmp")
        try:
            run_load(c.client, 4, 8, args.prompt_len, 4)  # warm-up
            for level in levels:
                r = run_load(c.client, level, max(2 * level, 8), args.prompt_len, args.new_tokens)
                print(f"| {name} | {level} | {r['ttft_ms']:.1f} | {r['itl_ms']:.1f} | "
                      f"{r['req_s']:.2f} | {r['tok_s']:.1f} |", flush=True)
        finally:
            c.close()


if __name__ == "__main__":
    main()

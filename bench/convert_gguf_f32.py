#!/usr/bin/env python3
"""Write an all-F32 copy of a GGUF, so llama.cpp and tpserve can be timed on unquantised weights.

Every tensor is dequantised with gguf.quants.dequantize (the gguf package's reference code for
llama.cpp's block formats) and stored as F32 under the same name and shape, in the same order.
All metadata is copied with its type, except general.file_type, which becomes 0 (ALL_F32).
The values are exactly the dequantised weights: a model run on the copy computes what a run on
the original computes after dequantising each weight to F32 (llama.cpp's quantised dot products
also quantise activations, so outputs differ slightly; --check shows by how much).

Usage (the gguf package in the venv: /tmp/llvenv/bin/pip install gguf):
  /tmp/llvenv/bin/python bench/convert_gguf_f32.py --gguf IN.gguf --out /tmp/OUT-f32.gguf [--check]
--check loads both files with llama-cpp-python and compares the next-token top-5 over a prompt.
"""
import argparse
import os
import sys

import numpy as np

import gguf
from gguf import GGMLQuantizationType, GGUFValueType

SKIP_KEYS = ("GGUF.", "general.architecture", "general.file_type", "general.alignment")
CHECK_TEXT = ("<|im_start|>user\nWhat are the three states of water? Answer in one short "
              "paragraph.<|im_end|>\n<|im_start|>assistant\n")


def field_value(field):
    """The value of a reader field in the form GGUFWriter.add_key_value takes."""
    v = field.contents()
    main = field.types[0]
    if main == GGUFValueType.ARRAY:
        return v, main, field.types[-1]
    return v, main, None


def convert(src, dst):
    reader = gguf.GGUFReader(src)
    arch = reader.fields["general.architecture"].contents()
    writer = gguf.GGUFWriter(dst, arch)
    align = reader.fields.get("general.alignment")
    if align is not None:
        writer.add_custom_alignment(int(align.contents()))
    for key, field in reader.fields.items():
        if key.startswith(SKIP_KEYS):
            continue
        val, vtype, sub = field_value(field)
        writer.add_key_value(key, val, vtype, sub_type=sub)
    writer.add_uint32("general.file_type", 0)  # LLAMA_FTYPE_ALL_F32

    n_before = n_after = 0
    for t in reader.tensors:
        data = gguf.quants.dequantize(t.data, t.tensor_type)
        # The reader's numpy shape is the GGUF shape reversed (outermost first); so is the writer's.
        want = tuple(int(d) for d in reversed(t.shape.tolist()))
        data = np.ascontiguousarray(data, dtype=np.float32).reshape(want)
        writer.add_tensor(t.name, data, raw_dtype=GGMLQuantizationType.F32)
        n_before += int(t.n_bytes)
        n_after += data.nbytes
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    print("%s: %d tensors, %.1f MB of tensor data -> %s: %.1f MB"
          % (src, len(reader.tensors), n_before / 1e6, dst, n_after / 1e6))


def check(src, dst):
    """Top-5 of both files at every position of the original's prompt + 16 greedy tokens."""
    from llama_cpp import Llama

    def load(path):
        return Llama(model_path=path, n_ctx=512, n_threads=2, logits_all=True, verbose=False)

    orig = load(src)
    ids = orig.tokenize(CHECK_TEXT.encode(), add_bos=False, special=True)
    orig.eval(ids)
    for _ in range(16):
        ids.append(int(np.argmax(orig.scores[orig.n_tokens - 1])))
        orig.eval([ids[-1]])
    la = np.array(orig.scores[:orig.n_tokens], dtype=np.float32)
    f32 = load(dst)
    f32.eval(ids)  # the same tokens, so every row is comparable
    lb = np.array(f32.scores[:f32.n_tokens], dtype=np.float32)

    def log_softmax(x):
        x = x.astype(np.float64)
        x = x - x.max(1, keepdims=True)
        return x - np.log(np.exp(x).sum(1, keepdims=True))

    pa, pb = log_softmax(la), log_softmax(lb)
    kl = (np.exp(pa) * (pa - pb)).sum(1)
    top1 = la.argmax(1) == lb.argmax(1)
    overlap = [len(set(np.argsort(-a)[:5]) & set(np.argsort(-b)[:5])) for a, b in zip(la, lb)]
    n_prompt = len(ids) - 16
    print("check on %d positions (%d prompt ids + 16 greedy ids of the original):"
          % (len(ids), n_prompt))
    print("  top-1 agreement %d/%d, mean top-5 overlap %.2f/5, KL(orig||f32) mean %.4f max "
          "%.4f, max |logit diff| %.3f" % (top1.sum(), len(top1), np.mean(overlap), kl.mean(),
                                         kl.max(), np.abs(la - lb).max()))
    gen_b = lb[n_prompt - 1:-1].argmax(1).tolist()
    print("  original greedy : %r" % orig.detokenize(ids[n_prompt:]).decode("utf-8", "replace"))
    print("  f32 argmax there: %r" % orig.detokenize(gen_b).decode("utf-8", "replace"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gguf", required=True, help="input GGUF (any types gguf can dequantise)")
    ap.add_argument("--out", required=True, help="output path (keep it out of the repository)")
    ap.add_argument("--check", action="store_true", help="compare llama.cpp on both files")
    args = ap.parse_args()
    if os.path.abspath(args.out) == os.path.abspath(args.gguf):
        sys.exit("--out must differ from --gguf")
    convert(args.gguf, args.out)
    if args.check:
        check(args.gguf, args.out)


if __name__ == "__main__":
    main()

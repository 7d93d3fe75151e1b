#!/usr/bin/env python3
"""Writes the GGUF golden files for tests/model/gguf_test.cc (and the fuzzer's seed corpus).

Outputs, all committed (the C++ test needs no Python):
  tests/model/gguf_golden/tiny.gguf       a small GGUF v3 file: metadata of every value type,
                                          one tensor of each type tpserve dequantises
  tests/model/gguf_golden/tiny_ref.f32    gguf-py's dequantisation of every tensor, raw
                                          little-endian float32, tensors back to back
  tests/model/gguf_golden/tiny.json       expected metadata and tensor table (name, ggml type,
                                          dims in ggml order, offset of its reference values)
  tests/fuzz/corpus/gguf/tiny.gguf        copy of tiny.gguf as the fuzzer's seed

Run with the reference venv:  /opt/tpserve-ref/bin/python tests/data/make_gguf_golden.py
(needs `pip install gguf numpy`). Deterministic: a fixed seed, so reruns give identical bytes.
"""

import json
import os
import shutil

import numpy as np
import gguf
from gguf import GGMLQuantizationType as Q
from gguf import GGUFValueType as V

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "model", "gguf_golden")
CORPUS = os.path.join(ROOT, "tests", "fuzz", "corpus", "gguf")

rng = np.random.default_rng(1234)


def random_f16(n, lo=-1.0, hi=1.0):
    """n finite float16 values as bytes, used for scales of hand-built K-quant blocks."""
    return rng.uniform(lo, hi, size=n).astype(np.float16).view(np.uint8)


def k_quant_blocks(qtype, rows, blocks_per_row):
    """Random K-quant super-blocks (gguf-py cannot quantise these) with valid f16 scales."""
    _, type_size = gguf.GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, size=(rows, blocks_per_row, type_size), dtype=np.uint8)
    n = rows * blocks_per_row
    if qtype in (Q.Q4_K, Q.Q5_K):
        # {f16 d, f16 dmin, ...}: positive scales as llama.cpp writes them.
        raw[:, :, 0:2] = random_f16(n, 0.001, 0.1).reshape(rows, blocks_per_row, 2)
        raw[:, :, 2:4] = random_f16(n, 0.001, 0.1).reshape(rows, blocks_per_row, 2)
    elif qtype == Q.Q6_K:
        raw[:, :, 208:210] = random_f16(n, -0.1, 0.1).reshape(rows, blocks_per_row, 2)
    else:
        raise ValueError(qtype)
    return raw.reshape(rows, blocks_per_row * type_size)


def main():
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, "tiny.gguf")
    w = gguf.GGUFWriter(path, arch="tinyllama")
    meta = {}  # key -> {"type": ..., "value": ...} as the test expects

    def kv(key, value, vtype, sub_type=None):
        w.add_key_value(key, value, vtype, sub_type)

    w.add_custom_alignment(64)  # not the default 32, so the test proves we honour it
    kv("tiny.u8", 200, V.UINT8)
    kv("tiny.i8", -100, V.INT8)
    kv("tiny.u16", 60000, V.UINT16)
    kv("tiny.i16", -30000, V.INT16)
    kv("tiny.u32", 4000000000, V.UINT32)
    kv("tiny.i32", -2000000000, V.INT32)
    kv("tiny.u64", 2**63 + 5, V.UINT64)
    kv("tiny.i64", -(2**62) - 3, V.INT64)
    kv("tiny.f32", 0.1, V.FLOAT32)
    kv("tiny.f64", 2.718281828459045, V.FLOAT64)
    kv("tiny.true", True, V.BOOL)
    kv("tiny.false", False, V.BOOL)
    kv("tiny.name", "tiny GGUF \u00e9\u4e2d", V.STRING)
    kv("tiny.tokens", ["<s>", "</s>", "hello", "", "w\u00f6rld"], V.ARRAY, V.STRING)
    kv("tiny.ints", [1, -2, 3, 2147483647], V.ARRAY, V.INT32)
    kv("tiny.u64s", [0, 2**64 - 1], V.ARRAY, V.UINT64)
    kv("tiny.floats", [0.5, -1.25, 3.0e-5], V.ARRAY, V.FLOAT32)
    kv("tiny.bools", [True, False, True], V.ARRAY, V.BOOL)
    kv("tiny.nested", [[1, 2], [3], [4, 5, 6]], V.ARRAY, V.ARRAY)

    # Tensors: numpy shape (rows..., cols); ggml dims are the reverse.
    tensors = []

    def add(name, qtype, data_f32=None, raw=None):
        if raw is None:
            if qtype == Q.F32:
                raw = data_f32.astype(np.float32)
            elif qtype == Q.F16:
                raw = data_f32.astype(np.float16)
            else:
                raw = gguf.quants.quantize(data_f32, qtype)
        if qtype in (Q.F32, Q.F16):
            w.add_tensor(name, raw)
        else:
            w.add_tensor(name, raw, raw_dtype=qtype)
        ref = gguf.quants.dequantize(raw, qtype)
        tensors.append((name, qtype, ref.shape, np.ascontiguousarray(ref, dtype=np.float32)))

    x = rng.standard_normal((4, 64)).astype(np.float32)
    add("t.f32", Q.F32, x)
    add("t.f16", Q.F16, rng.standard_normal((3, 32)).astype(np.float32))
    add("t.bf16", Q.BF16, rng.standard_normal((2, 3, 16)).astype(np.float32))
    add("t.q8_0", Q.Q8_0, rng.standard_normal((2, 3, 64)).astype(np.float32))
    add("t.q4_0", Q.Q4_0, rng.standard_normal((5, 64)).astype(np.float32))
    add("t.q4_1", Q.Q4_1, rng.standard_normal((5, 96)).astype(np.float32))
    add("t.q4_k", Q.Q4_K, raw=k_quant_blocks(Q.Q4_K, 4, 2))
    add("t.q5_k", Q.Q5_K, raw=k_quant_blocks(Q.Q5_K, 4, 2))
    add("t.q6_k", Q.Q6_K, raw=k_quant_blocks(Q.Q6_K, 3, 2))
    add("t.vec", Q.F32, rng.standard_normal((64,)).astype(np.float32))

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    # Read the file back with gguf-py for the expected metadata, so the JSON states what is in
    # the file (e.g. float32 values after rounding), not what we asked for.
    reader = gguf.GGUFReader(path)
    names = {0: "uint8", 1: "int8", 2: "uint16", 3: "int16", 4: "uint32", 5: "int32",
             6: "float32", 7: "bool", 8: "string", 9: "array", 10: "uint64", 11: "int64",
             12: "float64"}

    def field_value(field, part_index, vtype):
        part = field.parts[part_index]
        if vtype == V.STRING:
            return bytes(part).decode("utf-8")
        v = part[0].item()
        if vtype == V.BOOL:
            return bool(v)
        return v

    for key, field in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        t = field.types[0]
        entry = {"type": names[int(t)]}
        if t == V.ARRAY:
            sub = field.types[1]
            entry["element_type"] = names[int(sub)]
            if sub == V.ARRAY:
                # GGUFReader flattens nested arrays poorly; the writer's input is the truth.
                entry["value"] = [[1, 2], [3], [4, 5, 6]]
                entry["inner_element_type"] = "int32"
            else:
                entry["value"] = [field_value(field, i, sub) for i in field.data]
        else:
            entry["value"] = field_value(field, field.data[0], t)
        meta[key] = entry

    ref_path = os.path.join(OUT, "tiny_ref.f32")
    table = []
    offset = 0
    with open(ref_path, "wb") as f:
        for name, qtype, shape, ref in tensors:
            f.write(ref.astype("<f4").tobytes())
            table.append({"name": name, "type": int(qtype), "dims": list(reversed(shape)),
                          "ref_offset": offset, "count": int(ref.size)})
            offset += int(ref.size)
    with open(os.path.join(OUT, "tiny.json"), "w") as f:
        json.dump({"version": 3, "alignment": 64, "metadata": meta, "tensors": table}, f,
                  indent=1, sort_keys=True)
        f.write("\n")

    os.makedirs(CORPUS, exist_ok=True)
    shutil.copyfile(path, os.path.join(CORPUS, "tiny.gguf"))
    print(f"wrote {path} ({os.path.getsize(path)} bytes), {ref_path}, tiny.json, corpus seed")


if __name__ == "__main__":
    main()

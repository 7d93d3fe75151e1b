#!/usr/bin/env python3
"""Converts tests/data/tiny-llama and tiny-mistral into GGUF files the way llama.cpp's
convert_hf_to_gguf.py does for LlamaForCausalLM / MistralForCausalLM (architecture "llama";
the sliding window as llama.attention.sliding_window), for the engine's GGUF loader tests.

    /opt/tpserve-ref/bin/python tests/data/make_gguf_model.py tests/data

Writes
  tiny-llama-gguf/model.gguf          every tensor F32 (exactly the bf16 checkpoint's values)
  tiny-llama-gguf-q8/model-q8_0.gguf  2-D weights Q8_0 (gguf.quants.quantize), norms F32
  tiny-mistral-gguf/model.gguf        every tensor F32, sliding window 12, head_dim 24
and copies golden.json and golden_logits.safetensors next to each: the reference is the same
model, so the F32 file must match it as tightly as the safetensors checkpoint does, and the
Q8_0 file within the quantisation error.

As in llama.cpp, attn_q / attn_k rows are permuted per head so that RoPE's rotation pairs
(i, i + head_dim/2) of the Hugging Face layout become adjacent rows (2i, 2i + 1); the loader
undoes this. Tied embeddings: no output.weight, the head reads token_embd.weight.
Needs only numpy and the `gguf` package (no torch): safetensors are parsed by hand.
"""
import json
import os
import shutil
import struct
import sys

import gguf
import numpy as np


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        raw = data[begin:end]
        if info["dtype"] == "BF16":
            bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            arr = bits.view(np.float32)
        elif info["dtype"] == "F32":
            arr = np.frombuffer(raw, dtype="<f4").copy()
        elif info["dtype"] == "F16":
            arr = np.frombuffer(raw, dtype="<f2").astype(np.float32)
        else:
            raise ValueError(f"{path}: {name}: dtype {info['dtype']} not handled")
        out[name] = arr.reshape(info["shape"])
    return out


def permute(w, n_head, n_head_kv):
    """llama.cpp's LlamaModel.permute (convert_hf_to_gguf.py)."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def load_model(src):
    tensors = {}
    for fname in sorted(os.listdir(src)):
        if fname.endswith(".safetensors") and not fname.startswith("golden"):
            tensors.update(read_safetensors(os.path.join(src, fname)))
    return tensors


def gguf_tensors(cfg, hf):
    """(name, fp32 array in numpy [rows, cols] order) in llama.cpp's naming and order."""
    n_head, n_kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    out = [("token_embd.weight", hf["model.embed_tokens.weight"])]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        out += [
            (f"blk.{i}.attn_norm.weight", hf[p + "input_layernorm.weight"]),
            (f"blk.{i}.attn_q.weight", permute(hf[p + "self_attn.q_proj.weight"], n_head, n_head)),
            (f"blk.{i}.attn_k.weight", permute(hf[p + "self_attn.k_proj.weight"], n_head, n_kv)),
            (f"blk.{i}.attn_v.weight", hf[p + "self_attn.v_proj.weight"]),
            (f"blk.{i}.attn_output.weight", hf[p + "self_attn.o_proj.weight"]),
            (f"blk.{i}.ffn_norm.weight", hf[p + "post_attention_layernorm.weight"]),
            (f"blk.{i}.ffn_gate.weight", hf[p + "mlp.gate_proj.weight"]),
            (f"blk.{i}.ffn_up.weight", hf[p + "mlp.up_proj.weight"]),
            (f"blk.{i}.ffn_down.weight", hf[p + "mlp.down_proj.weight"]),
        ]
    out.append(("output_norm.weight", hf["model.norm.weight"]))
    if not cfg.get("tie_word_embeddings", False):
        out.append(("output.weight", hf["lm_head.weight"]))
    return out


def write(path, cfg, tensors, quantise):
    w = gguf.GGUFWriter(path, "llama")
    w.add_name(cfg["_name"])
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(cfg["num_attention_heads"])
    w.add_head_count_kv(cfg["num_key_value_heads"])
    w.add_key_length(cfg["head_dim"])
    w.add_value_length(cfg["head_dim"])
    w.add_rope_freq_base(cfg["rope_theta"])
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_vocab_size(cfg["vocab_size"])
    w.add_rope_dimension_count(cfg["head_dim"])
    w.add_bos_token_id(cfg["bos_token_id"])
    w.add_eos_token_id(cfg["eos_token_id"])
    if cfg.get("sliding_window"):
        w.add_sliding_window(cfg["sliding_window"])
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0 if quantise else gguf.LlamaFileType.ALL_F32)
    for name, arr in tensors:
        arr = np.ascontiguousarray(arr, dtype=np.float32)
        if quantise and arr.ndim == 2:
            q = gguf.quants.quantize(arr, gguf.GGMLQuantizationType.Q8_0)
            w.add_tensor(name, q, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            w.add_tensor(name, arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main(data_dir):
    for model, folder, fname, quantise in [
            ("tiny-llama", "tiny-llama-gguf", "model.gguf", False),
            ("tiny-llama", "tiny-llama-gguf-q8", "model-q8_0.gguf", True),
            ("tiny-mistral", "tiny-mistral-gguf", "model.gguf", False)]:
        src = os.path.join(data_dir, model)
        with open(os.path.join(src, "config.json")) as f:
            cfg = json.load(f)
        cfg.setdefault("head_dim", cfg["hidden_size"] // cfg["num_attention_heads"])
        cfg["_name"] = model
        tensors = gguf_tensors(cfg, load_model(src))
        out = os.path.join(data_dir, folder)
        os.makedirs(out, exist_ok=True)
        write(os.path.join(out, fname), cfg, tensors, quantise)
        for ref in ("golden.json", "golden_logits.safetensors"):
            shutil.copyfile(os.path.join(src, ref), os.path.join(out, ref))
        print("wrote", os.path.join(out, fname))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__)))

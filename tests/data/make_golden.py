#!/usr/bin/env python3
"""Makes the tiny checkpoints and reference logits the engine tests compare against.

Hugging Face transformers (torch, CPU, float64, eager attention) is the reference. Run once
by hand when the set of cases changes; its outputs are committed so CI needs no torch:

    python3 -m venv /tmp/ref && /tmp/ref/bin/pip install torch transformers safetensors
    /tmp/ref/bin/python tests/data/make_golden.py tests/data [MODEL ...]

(naming models remakes only those folders).

Each model folder gets config.json, weights, golden.json (prompts, HF greedy continuations
and their top-1 margins) and golden_logits.safetensors (tensor "seqN": logits [len, vocab]
for prompt + continuation, fp32).
"""
import copy
import json
import os
import sys

import torch
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM

PROMPT_LENGTHS = [40, 23, 7, 31, 1]
NEW_TOKENS = 8


def scaled_init(model, seed):
    """Weights large enough that logits have clear top-1 margins (HF's 0.02 std gives ties)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:  # norm weights
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif "embed_tokens" in name:
                p.copy_(torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / p.shape[1] ** 0.5)


def make_model(out_dir, model, store_dtype, seed, shards):
    os.makedirs(out_dir, exist_ok=True)
    scaled_init(model, seed)
    # Round the parameters to the stored dtype so the reference sees exactly the values the
    # engine loads. Only the parameters: model.to(bf16) would also round RoPE's inv_freq
    # buffer and make the reference itself wrong.
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(store_dtype).to(torch.float32))
    model = model.eval()
    cfg = model.config
    cfg.torch_dtype = store_dtype
    cfg.save_pretrained(out_dir)
    # Write the keys as most published checkpoints spell them (transformers 5 moved
    # torch_dtype to dtype and rope_theta into rope_parameters); the loader reads both.
    path = os.path.join(out_dir, "config.json")
    with open(path) as f:
        raw = json.load(f)
    raw["architectures"] = [type(model).__name__]
    raw["torch_dtype"] = raw.pop("dtype")
    raw["rope_theta"] = raw.pop("rope_parameters")["rope_theta"]
    with open(path, "w") as f:
        json.dump(raw, f, indent=2, sort_keys=True)
    state = {k: v.to(store_dtype).contiguous() for k, v in model.state_dict().items()}
    if cfg.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    names = sorted(state)
    if shards == 1:
        save_file(state, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
    else:
        weight_map = {}
        per = (len(names) + shards - 1) // shards
        for i in range(shards):
            fname = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
            part = {n: state[n] for n in names[i * per:(i + 1) * per]}
            save_file(part, os.path.join(out_dir, fname), metadata={"format": "pt"})
            weight_map.update({n: fname for n in part})
        with open(os.path.join(out_dir, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {}, "weight_map": weight_map}, f, indent=1)

    # The reference runs in float64; the float32 run only guards that the case is well
    # conditioned (no fp32 implementation could meet 1e-3 otherwise).
    model64 = copy.deepcopy(model).double()
    g = torch.Generator().manual_seed(seed + 1)
    golden, tensors = {"sequences": []}, {}
    for i, n in enumerate(PROMPT_LENGTHS):
        prompt = torch.randint(0, cfg.vocab_size, (n,), generator=g)
        ids = prompt.clone()
        margins = []
        with torch.no_grad():
            for _ in range(NEW_TOKENS):
                logits = model64(ids[None]).logits[0, -1]
                top2 = torch.topk(logits, 2).values
                margins.append(float(top2[0] - top2[1]))
                ids = torch.cat([ids, logits.argmax()[None]])
            full = model64(ids[None]).logits[0]
            fp32 = model(ids[None]).logits[0].double()
        cond = float(((fp32 - full).abs().amax(1) / full.abs().amax(1)).max())
        assert cond < 1e-5, f"{out_dir} seq {i}: fp32 vs fp64 reference differ by {cond}"
        tensors[f"seq{i}"] = full.float().contiguous()
        golden["sequences"].append({
            "prompt": prompt.tolist(),
            "greedy": ids[n:].tolist(),
            "margins": margins,
        })
    save_file(tensors, os.path.join(out_dir, "golden_logits.safetensors"))
    with open(os.path.join(out_dir, "golden.json"), "w") as f:
        json.dump(golden, f)


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
    only = set(sys.argv[2:])

    def make(out_dir, *args):
        if not only or os.path.basename(out_dir) in only:
            make_model(out_dir, *args)

    torch.manual_seed(0)
    # Mistral: sliding window shorter than the longest prompt, explicit head_dim that differs
    # from hidden/heads, fp32 weights, one file.
    mistral = MistralConfig(
        vocab_size=301, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, head_dim=24, max_position_embeddings=256,
        rms_norm_eps=1e-5, rope_theta=10000.0, sliding_window=12, tie_word_embeddings=False,
        bos_token_id=1, eos_token_id=2, attn_implementation="eager")
    make(os.path.join(root, "tiny-mistral"), MistralForCausalLM(mistral), torch.float32, 11, 1)
    # Llama: bf16 weights in two shards, tied embeddings, a large rope theta, no window.
    llama = LlamaConfig(
        vocab_size=301, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        rms_norm_eps=1e-6, rope_theta=500000.0, tie_word_embeddings=True,
        bos_token_id=1, eos_token_id=2, attn_implementation="eager")
    make(os.path.join(root, "tiny-llama"), LlamaForCausalLM(llama), torch.bfloat16, 23, 2)
    # Mistral in the shapes the CUDA kernels take (head_dim 64, GQA 4), bf16 weights, window
    # 24 shorter than the longest sequence: the model of the CUDA-vs-reference tests.
    hd64 = MistralConfig(
        vocab_size=512, hidden_size=256, intermediate_size=512, num_hidden_layers=3,
        num_attention_heads=8, num_key_value_heads=2, head_dim=64, max_position_embeddings=256,
        rms_norm_eps=1e-5, rope_theta=10000.0, sliding_window=24, tie_word_embeddings=False,
        bos_token_id=1, eos_token_id=2, attn_implementation="eager")
    make(os.path.join(root, "tiny-mistral-hd64"), MistralForCausalLM(hd64), torch.bfloat16, 31, 1)


if __name__ == "__main__":
    main()

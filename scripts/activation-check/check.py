"""What a decoder block keeps for its backward in Hugging Face's own code,
against amp's prediction for the same config.

    python check.py --amp PATH/TO/amp [--seq 384] [--batch 8] [FAMILY ...]

For each family below (a small config of it): builds the model with
transformers on the CPU at 1 and 2 blocks, runs one forward pass under bf16
autocast over fp32 weights with PyTorch's SDPA (what amp prices as eager
PyTorch without an engine), and sums the bytes of every tensor autograd
saves for the backward (by storage, each once; parameters and their 16-bit
casts left out: amp counts those as weights). The difference between 2 and 1
blocks is one block. amp's figure is the activation memory `amp eval --json`
predicts for the same two configs (one stage, one micro-batch of --batch
samples), likewise differenced. Both per sample.

With --deepspeed the model runs as DeepSpeed's engines run a Hugging Face
model at bf16 (`"bf16": {"enabled": true}`): the module cast to bf16 whole
(`module.bfloat16()`, deepspeed/runtime/engine.py), no autocast, and amp's
figure is `amp eval --engine deepspeed --block-kernels eager
--cross-entropy pytorch --precision bf16`'s (Hugging Face's blocks and loss
under DeepSpeed).

The CPU stands in for a GPU where the two keep the same tensors: autocast
casts each linear layer's input itself on both (its cache holds parameters'
casts only), the norms' fp32 arithmetic is written out in the models' code,
and SDPA keeps its inputs, output and log-sum-exp. Where they differ the
family is left out: GPT-2's `gelu_new` (`pow` runs in fp32 under CUDA's
autocast, not the CPU's) and dropout inside SDPA (the CPU falls back to the
kernel that materialises the scores).
"""

import argparse
import json
import os
import subprocess
import tempfile

import torch
from transformers import AutoConfig, AutoModelForCausalLM

BASE = {
    "hidden_size": 512,
    "intermediate_size": 1408,
    "num_attention_heads": 8,
    "num_key_value_heads": 4,
    "vocab_size": 1000,
    "max_position_embeddings": 2048,
    "tie_word_embeddings": False,
    "bos_token_id": 0,
    "eos_token_id": 0,
    "pad_token_id": 0,
}
FAMILIES = {
    "llama": {"model_type": "llama"},
    "qwen3": {"model_type": "qwen3", "head_dim": 64},
    "gemma3_text": {"model_type": "gemma3_text", "head_dim": 64, "tie_word_embeddings": True},
    "phi3": {"model_type": "phi3", "num_key_value_heads": 8},
}
# Named only: where the CPU's tensors are not a GPU's (see above), so not in
# the default list. GPT-2 without dropout and with a fused GeLU.
OPTIONAL = {
    "gpt_neo": {
        "model_type": "gpt_neo",
        "num_heads": 8,
        "activation_function": "gelu_pytorch_tanh",
    },
    "gpt2": {
        "model_type": "gpt2",
        "activation_function": "gelu_pytorch_tanh",
        "resid_pdrop": 0.0,
        "embd_pdrop": 0.0,
        "attn_pdrop": 0.0,
    },
}


def with_layers(config, layers):
    """The config at `layers` blocks (GPT-Neo names them its own way and
    lists each block's attention kind)."""
    if config["model_type"] == "gpt_neo":
        return {**config, "num_layers": layers, "attention_types": [[["global"], layers]]}
    return {**config, "num_hidden_layers": layers}


def hf_saved_bytes(config, layers, seq, batch, pure_bf16=False):
    cfg = AutoConfig.for_model(**with_layers(config, layers))
    if getattr(cfg, "layer_types", None):
        cfg.layer_types = ["full_attention"] * layers  # no sliding window at this length anyway
    torch.manual_seed(0)
    # GPT-Neo has no SDPA path: its own eager attention, as amp prices it.
    attention = "eager" if config["model_type"] == "gpt_neo" else "sdpa"
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation=attention)
    model.train()
    if pure_bf16:
        model = model.bfloat16()
    shapes = {tuple(p.shape) for p in model.parameters()}
    ptrs = {p.data_ptr() for p in model.parameters()}
    # Buffers (GPT-Neo's causal mask) are the model's, not a sample's.
    buffers = {b.untyped_storage().data_ptr() for b in model.buffers()}
    seen, total = set(), 0

    def pack(t):
        nonlocal total
        shape = tuple(t.shape)
        weight_cast = (
            t.dim() == 2 and seq not in shape and (shape in shapes or shape[::-1] in shapes)
        )
        if t.data_ptr() in ptrs or weight_cast or t.untyped_storage().data_ptr() in buffers:
            return t
        storage = t.untyped_storage()
        if storage.data_ptr() not in seen:
            seen.add(storage.data_ptr())
            total += storage.nbytes()
        return t

    ids = torch.randint(0, cfg.vocab_size, (batch, seq))
    hooks = torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t)
    with hooks, torch.autocast("cpu", dtype=torch.bfloat16, enabled=not pure_bf16):
        model(input_ids=ids, labels=ids)
    return total / batch


def amp_memory(amp, config, layers, seq, batch, micro_batches=1, replicas=1, flags=()):
    """`amp eval --json`'s memory of the first device for `config` at
    `layers` blocks: one stage (the embedding, the blocks, the final norm
    and the projection), a GPU per replica, micro-batches of `batch`."""
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "config.json")
        with open(path, "w") as f:
            json.dump(with_layers(config, layers), f)
        plan = os.path.join(d, "plan.json")
        with open(plan, "w") as f:
            stage = {
                "first_layer": 0,
                "end_layer": layers + 3,
                "replicas": [[{"node": 0, "gpu": r}] for r in range(replicas)],
            }
            plan_json = {"micro_batch": batch, "num_micro_batches": micro_batches}
            json.dump({**plan_json, "stages": [stage]}, f)
        cluster = f"1x{replicas}xH100"
        out = subprocess.run(
            [amp, "eval", plan, "--model", path, "--seq", str(seq), "--cluster", cluster]
            + [*flags, "--json"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return json.loads(out)["memory"][0]


# Hugging Face's blocks and loss under DeepSpeed at bf16 (--deepspeed).
DEEPSPEED_FLAGS = (
    "--engine",
    "deepspeed",
    "--block-kernels",
    "eager",
    "--cross-entropy",
    "pytorch",
    "--precision",
    "bf16",
)


def amp_activation_bytes(amp, config, layers, seq, batch, flags=()):
    memory = amp_memory(amp, config, layers, seq, batch, flags=flags)
    return memory["activations_bytes"] / batch


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--amp", required=True)
    p.add_argument("--seq", type=int, default=384)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--deepspeed", action="store_true", help="bf16 weights, no autocast")
    p.add_argument("families", nargs="*", default=list(FAMILIES))
    a = p.parse_args()
    mode = "the model in bf16 (DeepSpeed)" if a.deepspeed else "bf16 autocast"
    flags = DEEPSPEED_FLAGS if a.deepspeed else ()
    print(
        f"torch {torch.__version__}, transformers {__import__('transformers').__version__}; "
        f"sequence {a.seq}, {a.batch} samples, {mode}; bytes per sample of one block"
    )
    print("| family | Hugging Face saves | amp predicts | amp / HF |")
    print("|---|---|---|---|")
    for name in a.families:
        config = {**BASE, **{**FAMILIES, **OPTIONAL}[name]}
        hf = hf_saved_bytes(config, 2, a.seq, a.batch, a.deepspeed) - hf_saved_bytes(
            config, 1, a.seq, a.batch, a.deepspeed
        )
        amp = amp_activation_bytes(a.amp, config, 2, a.seq, a.batch, flags) - amp_activation_bytes(
            a.amp, config, 1, a.seq, a.batch, flags
        )
        print(f"| {name} | {hf:,.0f} | {amp:,.0f} | {amp / hf:.3f} |", flush=True)


if __name__ == "__main__":
    main()

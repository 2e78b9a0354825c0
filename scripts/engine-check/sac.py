"""torchtitan's selective activation checkpointing, on the CPU: what a block keeps.

    python sac.py --amp PATH/TO/amp

torchtitan's `SelectiveAC` (torchtitan/distributed/activation_checkpoint.py,
what amp's torchtitan export asks for with `--recompute selective`) wraps
each block in a checkpoint whose policy caches the outputs of the ops in
its save list (matrix products, attention kernels, reduce-scatters), but
every second matrix product, and reruns the rest before the block's
backward. This builds torchtitan 0.3.0's own Llama 3 (fused QKV, as every
flavor it ships) at a small size in bf16 (the compute format of torchtitan's
FSDP2 policy), wraps its blocks with torchtitan's own policy, and measures
with PyTorch's profiler the bytes a forward leaves allocated, with 2 and 4
blocks: half the difference is what one block keeps for its backward. The
same with torchtitan's `FullAC`, and without checkpointing. Then all three
again with each block compiled as torchtitan's `compile.enable` does
(`block.compile(backend="inductor", fullgraph=True)`,
torchtitan/distributed/compile.py; Inductor's C++ backend on the CPU, the
same partitioner that decides on a GPU what a compiled block keeps).

Three changes for the CPU, named in the output: the blocks' attention runs
PyTorch's SDPA (torchtitan's language models run FlexAttention, a compiled
kernel), and its CPU flash kernel joins the save list, standing for the
attention kernel the GPU's list names (both return the output and its fp32
log-sum-exp, which the save keeps); and the RMSNorms keep what CUDA's fused
`rms_norm` keeps, their input and fp32 inverse norm (the CPU's composite
keeps fp32 copies besides). Compiled, the RMSNorms are PyTorch's own, which
Inductor decomposes and fuses on either device.

amp's figure is `amp eval --json` of the same model (a Hugging Face config
of the same shape) on one GPU, `--engine torchtitan --recompute POLICY`,
with 2 and 4 blocks: half the difference of its activations (`--compile`
for the compiled rows). No constant is fitted. Exit status 0 when amp is
within 2% of each row.
"""

import argparse
import json
import os
import subprocess
import tempfile

import torch
from torch.profiler import ProfilerActivity, profile
from torchtitan.distributed.activation_checkpoint import FullAC, SelectiveAC
from torchtitan.models.common.attention import ScaledDotProductAttention
from torchtitan.models.common.embedding import Embedding
from torchtitan.models.common.linear import Linear
from torchtitan.models.common.nn_modules import RMSNorm
from torchtitan.models.llama3 import _build_llama3_layers, model_registry
from torchtitan.models.llama3.model import Llama3Model

DIM, HEADS, KV_HEADS, FFN, VOCAB = 256, 8, 4, 768, 2048
BATCH, SEQ = 2, 256


class FusedRMSNorm(torch.autograd.Function):
    """RMSNorm keeping what CUDA's fused `_fused_rms_norm` keeps for its
    backward: the input and the fp32 inverse norm per row. On the CPU PyTorch
    runs `rms_norm` as its composite, which keeps fp32 copies besides."""

    @staticmethod
    def forward(ctx, x, weight, eps):
        xf = x.float()
        rstd = torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
        ctx.save_for_backward(x, weight, rstd)
        return (xf * rstd).to(x.dtype) * weight

    @staticmethod
    def backward(ctx, grad):
        x, weight, rstd = ctx.saved_tensors
        xhat = x.float() * rstd
        g = grad.float()
        gw = (g * xhat).sum(dim=tuple(range(g.dim() - 1))).to(weight.dtype)
        gx = g * weight.float()
        gx = rstd * (gx - xhat * (gx * xhat).mean(-1, keepdim=True))
        return gx.to(x.dtype), gw, None


def fuse_norms(model):
    """Every nn.RMSNorm of `model` as CUDA's fused kernel keeps it."""
    for m in model.modules():
        if isinstance(m, torch.nn.RMSNorm):
            m.forward = lambda x, m=m: FusedRMSNorm.apply(x, m.weight, m.eps or 1e-5)


def build(layers, compiled=False):
    """torchtitan's Llama 3 at DIM with `layers` blocks, fused QKV as its
    flavors; eager with CUDA's fused RMSNorm, or compiled block by block as
    torchtitan compiles them."""
    rope = model_registry("debugmodel").model.layers[0].attention.rope
    rope.dim = DIM // HEADS
    config = Llama3Model.Config(
        dim=DIM,
        vocab_size=VOCAB,
        tok_embeddings=Embedding.Config(num_embeddings=VOCAB, embedding_dim=DIM),
        norm=RMSNorm.Config(normalized_shape=DIM),
        lm_head=Linear.Config(in_features=DIM, out_features=VOCAB),
        layers=_build_llama3_layers(
            n_layers=layers,
            dim=DIM,
            n_heads=HEADS,
            n_kv_heads=KV_HEADS,
            hidden_dim=FFN,
            rope=rope,
            fuse_qkv=True,
            attn_backend="flex",
        ),
    )
    torch.manual_seed(0)
    model = config.build()
    model.init_weights(buffer_device=torch.device("cpu"))
    for block in model.layers.values() if hasattr(model.layers, "values") else model.layers:
        block.attention.inner_attention = ScaledDotProductAttention(
            ScaledDotProductAttention.Config()
        )
        block.attention.inner_attention.sdpa_backends = [
            torch.nn.attention.SDPBackend.FLASH_ATTENTION
        ]
    model = model.to(torch.bfloat16)
    if not compiled:
        fuse_norms(model)
    return model


def compile_blocks(model):
    """torchtitan's `apply_compile`: each block compiled, after checkpointing."""
    blocks = model.layers.values() if hasattr(model.layers, "values") else model.layers
    for block in blocks:
        block.compile(backend="inductor", fullgraph=True)


class CpuSelectiveAC(SelectiveAC):
    """torchtitan's policy, with the CPU's flash attention in its save list."""

    def get_save_ops(self):
        ops = super().get_save_ops()
        ops.add(torch.ops.aten._scaled_dot_product_flash_attention_for_cpu.default)
        return ops


def kept_bytes(layers, policy, compiled=False):
    """Bytes a forward of `layers` blocks leaves allocated under `policy`."""
    model = build(layers, compiled)
    if policy == "selective":
        CpuSelectiveAC(SelectiveAC.Config()).apply(model)
    elif policy == "full":
        FullAC(FullAC.Config()).apply(model)
    tokens = torch.randint(0, VOCAB, (BATCH, SEQ))
    if compiled:
        # Compile outside the measurement: one step first.
        compile_blocks(model)
        model(tokens, attention_masks=None).float().sum().backward()
        model.zero_grad(set_to_none=True)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = model(tokens, attention_masks=None)
    live = 0
    for e in prof.profiler.kineto_results.events():
        if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU:
            live += e.nbytes()
    out.float().sum().backward()  # the saved tensors were usable
    return live


def amp_block_bytes(amp, recompute, compiled=False):
    """Half the difference of amp's activations with 4 and 2 blocks."""
    got = {}
    for layers in (2, 4):
        config = {
            "model_type": "llama",
            "hidden_size": DIM,
            "intermediate_size": FFN,
            "num_attention_heads": HEADS,
            "num_key_value_heads": KV_HEADS,
            "num_hidden_layers": layers,
            "vocab_size": VOCAB,
            "rope_theta": 500000.0,
            "max_position_embeddings": 8192,
            "tie_word_embeddings": False,
        }
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "config.json")
            with open(path, "w") as f:
                json.dump(config, f)
            plan = {
                "micro_batch": BATCH,
                "num_micro_batches": 1,
                "stages": [
                    {
                        "first_layer": 0,
                        "end_layer": layers + 3,
                        "replicas": [[{"node": 0, "gpu": 0}]],
                    }
                ],
            }
            plan_path = os.path.join(d, "plan.json")
            with open(plan_path, "w") as f:
                json.dump(plan, f)
            out = subprocess.run(
                [amp, "eval", plan_path, "--model", path, "--seq", str(SEQ)]
                + ["--cluster", "1x1xH100", "--engine", "torchtitan"]
                + ["--recompute", recompute, "--json"]
                + (["--compile"] if compiled else []),
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            got[layers] = json.loads(out)["memory"][0]["activations_bytes"]
    return (got[4] - got[2]) / 2


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--amp", required=True)
    a = p.parse_args()
    import torchtitan

    print(
        f"torch {torch.__version__}, torchtitan {torchtitan.__version__}; Llama 3 block: "
        f"width {DIM}, {HEADS} heads, {KV_HEADS} key/value heads, FFN {FFN}, fused QKV; "
        f"micro-batch {BATCH} x {SEQ} tokens, bf16; attention: SDPA's CPU flash kernel, "
        "in the save list; eager RMSNorm as CUDA's fused kernel keeps it, compiled PyTorch's own"
    )
    tokens = BATCH * SEQ
    ok = True
    for compiled in (False, True):
        for policy in ("selective", "full", "none"):
            measured = (kept_bytes(4, policy, compiled) - kept_bytes(2, policy, compiled)) / 2
            amp = amp_block_bytes(a.amp, policy, compiled)
            ratio = amp / measured
            flag = " --compile" if compiled else ""
            print(
                f"{policy:>9}{' compiled' if compiled else '':>9}: a block keeps "
                f"{measured / tokens:,.1f} bytes per token; "
                f"amp --recompute {policy}{flag}: {amp / tokens:,.1f} ({ratio:.3f} x)"
            )
            if abs(ratio - 1.0) > 0.02:
                ok = False
    print("amp counts what torchtitan's blocks keep" if ok else "MISMATCH")
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()

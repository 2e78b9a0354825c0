"""What a TransGAN block of the AMP artifact keeps for its backward, and what
its backward holds besides, measured in the artifact's own code, against
amp's figures for the same block.

    python transgan.py --amp PATH/TO/amp --artifact DIR [--samples 1] [--tp 1 4]

DIR is the artifact's Megatron-LM folder: a checkout of
github.com/DachengLi1/AMP, at DeepSpeed/DeepSpeedExamples/Megatron-LM-v1.1.5-3D_parallelism.
Its megatron/model/trans_gan_gen.py (the generator the het_model runs
trained, with its `ParallelTransformerBlock`) and ViT_helper.py are imported
as they are. What they import from the rest of the artifact is stood in for
by a few lines each, written here, not copied: Megatron-LM 1.1.5's `mpu` as
one rank of a tensor-parallel group of degree `--tp` sees it (column- and
row-parallel linear layers of that rank's width, the group's collectives the
identity, as they are in shape on one rank), `get_args`, `MegatronModule`,
and DeepSpeed's pipeline specs, which the block does not use.

Each block is built as the artifact's script builds it
(ds_pretrain_transgan_pipe.sh: `--gf_dim 1024 --bottom_width 9
--g_window_size 18 --g_norm pn`, 4 heads, MLP ratio 4, dropouts 0), made fp16
as DeepSpeed's fp16 engine does (`model.half()`), and run on the CPU in
training mode on the input one pipeline stage receives: one of the first
twelve blocks on 9x9 tokens of width 1024, one of the last twelve on 256
windows of 18x18 tokens of width 16 per sample. Measured:

- kept: the bytes of every tensor autograd saves in the forward, by storage,
  each once, parameters and buffers left out (amp counts those as weights);
- backward: the most bytes live during the backward (given an fp16 gradient
  of the output) above what was live when it started, by PyTorch's profiler,
  less the weights' gradients it makes (amp counts those as gradients, held
  all iteration).

amp's figures come from `amp eval --example het-model --json` on a plan that
gives the block a stage of its own (one micro-batch of --samples samples;
with two micro-batches the stage holds two, so the difference is what one
keeps): its activation memory of that stage is what the block keeps plus what
its backward holds. Per sample, per rank. No constant is fitted here. Not in
CI.
"""

import argparse
import collections.abc
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import types
from contextlib import redirect_stdout

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

ARTIFACT_FILES = ["megatron/model/trans_gan_gen.py", "megatron/model/ViT_helper.py"]

# The het-model example's entries: 3..=14 are the first twelve blocks, 41..=52
# the windowed ones (amp_core::model::builtin::transgan).
BLOCKS = {"first": 3, "windowed": 41}
NUM_ENTRIES = 56


def stand_ins(tp):
    """Modules the generator imports from the rest of the artifact, as one
    rank of a tensor-parallel group of `tp` sees them."""

    def divide(a, b):
        assert a % b == 0, f"{a} is not divisible by {b}"
        return a // b

    class ColumnParallelLinear(nn.Module):
        # This rank's `out / tp` columns; returns (output, bias) with the
        # bias left out of the output under skip_bias_add, as 1.1.5's does.
        def __init__(self, n_in, n_out, bias=True, gather_output=True, init_method=None,
                     skip_bias_add=False, **_):
            super().__init__()
            self.weight = nn.Parameter(torch.empty(divide(n_out, tp), n_in))
            self.bias = nn.Parameter(torch.zeros(divide(n_out, tp))) if bias else None
            self.skip_bias_add = skip_bias_add
            nn.init.normal_(self.weight, std=0.02)

        def forward(self, x):
            bias = None if self.skip_bias_add else self.bias
            out = nn.functional.linear(x, self.weight, bias)
            return out, (self.bias if self.skip_bias_add else None)

    class RowParallelLinear(nn.Module):
        # This rank's `in / tp` rows; the group's all-reduce of the output
        # is the identity on one rank; the bias added after it.
        def __init__(self, n_in, n_out, bias=True, input_is_parallel=False, init_method=None,
                     skip_bias_add=False, **_):
            super().__init__()
            self.weight = nn.Parameter(torch.empty(n_out, divide(n_in, tp)))
            self.bias = nn.Parameter(torch.zeros(n_out)) if bias else None
            self.skip_bias_add = skip_bias_add
            nn.init.normal_(self.weight, std=0.02)

        def forward(self, x):
            out = nn.functional.linear(x, self.weight)
            if self.bias is not None and not self.skip_bias_add:
                out = out + self.bias
            return out, (self.bias if self.skip_bias_add else None)

    mpu = types.ModuleType("megatron.mpu")
    mpu.ColumnParallelLinear = ColumnParallelLinear
    mpu.RowParallelLinear = RowParallelLinear
    mpu.divide = divide
    mpu.get_model_parallel_world_size = lambda: tp
    mpu.get_model_parallel_rank = lambda: 0

    megatron = types.ModuleType("megatron")
    megatron.__path__ = []
    megatron.mpu = mpu
    megatron.get_args = lambda: types.SimpleNamespace()
    module = types.ModuleType("megatron.module")
    module.MegatronModule = type("MegatronModule", (nn.Module,), {})
    fp16 = types.ModuleType("megatron.fp16")
    fp16.FP16_Module = nn.Module
    model = types.ModuleType("megatron.model")
    model.__path__ = []
    utils = types.ModuleType("megatron.model.utils")
    utils.init_method_normal = lambda std: (lambda t: nn.init.normal_(t, std=std))
    utils.scaled_init_method_normal = lambda std, n: (lambda t: nn.init.normal_(t, std=std))
    diff_aug = types.ModuleType("megatron.model.diff_aug")
    diff_aug.DiffAugment = None
    dis = types.ModuleType("megatron.model.trans_gan_dis")
    dis.Discriminator = None
    deepspeed = types.ModuleType("deepspeed")
    deepspeed.__path__ = []
    pipe = types.ModuleType("deepspeed.pipe")
    pipe.PipelineModule = type("PipelineModule", (nn.Module,), {})
    pipe.LayerSpec = pipe.TiedLayerSpec = object
    # ViT_helper.py imports `container_abcs` from torch._six, gone since
    # PyTorch 2.0: it was collections.abc.
    six = types.ModuleType("torch._six")
    six.container_abcs = collections.abc
    return {
        "torch._six": six,
        "megatron": megatron,
        "megatron.mpu": mpu,
        "megatron.module": module,
        "megatron.fp16": fp16,
        "megatron.model": model,
        "megatron.model.utils": utils,
        "megatron.model.diff_aug": diff_aug,
        "megatron.model.trans_gan_dis": dis,
        "deepspeed": deepspeed,
        "deepspeed.pipe": pipe,
    }


def load_generator(artifact, tp, work):
    """The artifact's trans_gan_gen module, imported with `stand_ins(tp)`."""
    for name in list(sys.modules):
        if name.split(".")[0] in ("megatron", "deepspeed") or name == "torch._six":
            del sys.modules[name]
    sys.modules.update(stand_ins(tp))
    import importlib.util

    for rel in ARTIFACT_FILES:
        shutil.copy(os.path.join(artifact, rel), work)
    modules = {}
    for rel in reversed(ARTIFACT_FILES):
        stem = os.path.splitext(os.path.basename(rel))[0]
        name = f"megatron.model.{stem}"
        spec = importlib.util.spec_from_file_location(name, os.path.join(work, f"{stem}.py"))
        m = importlib.util.module_from_spec(spec)
        sys.modules[name] = m
        spec.loader.exec_module(m)
        modules[stem] = m
    return modules["trans_gan_gen"]


def measure(gen, which, samples):
    """(kept, backward) bytes per sample of one block, on one rank."""
    if which == "first":
        dim, tokens, windows = 1024, 9 * 9, 1
    else:
        dim, tokens, windows = 1024 // 64, 18 * 18, (288 // 18) ** 2
    torch.manual_seed(0)
    block = gen.ParallelTransformerBlock(
        dim=dim,
        num_heads=4,
        init_method=lambda t: nn.init.normal_(t, std=0.02),
        output_layer_init_method=lambda t: nn.init.normal_(t, std=0.02),
        mlp_ratio=4.0,
        act_layer="gelu",
        norm_layer="pn",
        window_size=18 if which == "windowed" else 9,
    )
    block.half().train()
    params = {p.untyped_storage().data_ptr() for p in block.parameters()}
    params |= {b.untyped_storage().data_ptr() for b in block.buffers()}
    x = torch.randn(samples * windows, tokens, dim, dtype=torch.float16, requires_grad=True)
    mask = torch.zeros((100, 100), dtype=torch.bool)
    seen, kept = set(), 0

    def pack(t):
        nonlocal kept
        s = t.untyped_storage()
        ptr = s.data_ptr()
        # The block's input is the stage's received activation, counted
        # by amp with the cut, not with the block.
        if ptr not in params and ptr not in seen and ptr != x.untyped_storage().data_ptr():
            seen.add(ptr)
            kept += s.nbytes()
        return t

    with redirect_stdout(io.StringIO()):  # the block prints its input's shape
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out, _ = block((x, mask))
    grad = torch.randn_like(out)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out.backward(grad)
    live = peak = 0
    for e in prof.profiler.kineto_results.events():
        if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU:
            live += e.nbytes()
            peak = max(peak, live)
    # The weights' gradients, made in this backward, are held all
    # iteration: amp counts them as gradients, not as activations.
    grads = sum(p.grad.untyped_storage().nbytes() for p in block.parameters() if p.grad is not None)
    return kept / samples, (peak - grads) / samples


def amp_bytes(amp, which, tp, samples):
    """(kept, kept + backward) bytes per sample of the block's stage, per
    rank, from `amp eval --example het-model --json`."""
    first = BLOCKS[which]
    bounds = [0, first, first + 1, NUM_ENTRIES]

    def activations(micro_batches):
        # Each stage on its own node (4 V100s), a tp group of `tp` of them.
        stages = [
            {
                "first_layer": a,
                "end_layer": b,
                "replicas": [[{"node": i, "gpu": g} for g in range(tp)]],
            }
            for i, (a, b) in enumerate(zip(bounds, bounds[1:]))
        ]
        plan = {"micro_batch": samples, "num_micro_batches": micro_batches, "stages": stages}
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "plan.json")
            with open(path, "w") as f:
                json.dump(plan, f)
            out = subprocess.run(
                [amp, "eval", path, "--example", "het-model", "--json"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        return json.loads(out)["memory"][tp]["activations_bytes"] / samples

    one, two = activations(1), activations(2)
    return two - one, one


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--amp", required=True)
    p.add_argument("--artifact", required=True)
    p.add_argument("--samples", type=int, default=1)
    p.add_argument("--tp", type=int, nargs="*", default=[1, 2, 4])
    a = p.parse_args()
    missing = [f for f in ARTIFACT_FILES if not os.path.isfile(os.path.join(a.artifact, f))]
    if missing:
        sys.exit(f"transgan.py: {a.artifact} has no {', '.join(missing)}: give --artifact the "
                 "artifact's DeepSpeed/DeepSpeedExamples/Megatron-LM-v1.1.5-3D_parallelism folder")
    print(f"torch {torch.__version__}; {a.samples} sample(s); bytes per sample on one rank")
    print("| block | tp | kept, measured | amp | amp / measured | backward above the "
          "forward, measured | amp | amp / measured |")
    print("|---|---|---|---|---|---|---|---|")
    for tp in a.tp:
        with tempfile.TemporaryDirectory() as work:
            gen = load_generator(a.artifact, tp, work)
            for which in BLOCKS:
                kept, back = measure(gen, which, a.samples)
                amp_kept, amp_total = amp_bytes(a.amp, which, tp, a.samples)
                amp_back = amp_total - amp_kept
                print(
                    f"| {which} | {tp} | {kept:,.0f} | {amp_kept:,.0f} | {amp_kept / kept:.3f} "
                    f"| {back:,.0f} | {amp_back:,.0f} | {amp_back / back:.3f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()

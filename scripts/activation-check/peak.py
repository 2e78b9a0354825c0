"""A whole training iteration's peak memory in Hugging Face's own code,
against amp's predicted peak for the same config.

    python peak.py --amp PATH/TO/amp [--seq 256] [--batch 4] [--explain] [FAMILY ...]

For each family (a small config of it, with a vocabulary as large against
its width as Llama 3's or GPT-2's, so the loss weighs as it does in the real
models): builds the model with transformers on the CPU in fp32 and runs
training iterations as a plain PyTorch script does (what amp prices without
an engine): the forward pass and Hugging Face's loss under bf16 autocast
with SDPA, `loss.backward()` outside autocast (as PyTorch's AMP recipe,
Hugging Face's Trainer and torchtitan run it), a `torch.optim.AdamW` step
(foreach, CUDA's default, or fused) and `zero_grad()`, which sets the
gradients to None. The second iteration runs under PyTorch's profiler,
which records every allocation and free; the peak is the most bytes live at
once: the parameters and the optimizer's moments held from before, plus
the largest running sum of what the iteration allocates. Cases: one and two
micro-batches (a script accumulating gradients), shapes where the loss, the
optimizer step or the end of the backward is the peak, every block
checkpointed (Hugging Face's activation checkpointing, amp's `--recompute
full`), and two
DistributedDataParallel replicas (gloo, two processes, rank 0 measured;
DDP rebuilds its gradient buckets in the measured iteration, so they are
counted).

amp's figure is `amp eval --json`'s peak of the same plan (one stage, a GPU
per replica) less its framework reserve, which stands for what a GPU holds
and the CPU does not (CUDA context, workspaces, the caching allocator's
fragmentation). No constant is fitted here.

The CPU stands in for a GPU where the two hold the same tensors (see
check.py): the families of check.py's default list, and GPT-2 (named only)
without dropout and with a fused GeLU. `--explain` prints what is live at
the peak, grouped by the operator that allocated it.
"""

import argparse
import os
from collections import Counter

import check  # this script's neighbour: the families' configs
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel
from torch.profiler import ProfilerActivity, profile
from transformers import AutoConfig, AutoModelForCausalLM

# check.py's configs, with a vocabulary 62.5 x the width, as Llama 3's
# 128,256 is 62.6 x 2,048 (Llama-3.2-1B) and GPT-2's 50,257 is 65 x 768.
BASE = {**check.BASE, "vocab_size": 32000}
FAMILIES = check.FAMILIES
# Named only, as in check.py: GPT-2 without dropout and with a fused GeLU
# (its CPU attention keeps two tensors a GPU's does not, see check.py).
OPTIONAL = {
    "gpt2": {
        "model_type": "gpt2",
        "n_positions": 2048,
        "vocab_size": 50257,
        "tie_word_embeddings": True,
        "activation_function": "gelu_pytorch_tanh",
        "resid_pdrop": 0.0,
        "embd_pdrop": 0.0,
        "attn_pdrop": 0.0,
    },
}
# (blocks, micro-batches per iteration, AdamW kind, sequence and samples per
# micro-batch or None for --seq and --batch, width or None for BASE's,
# data-parallel replicas, full recomputation; then backward() inside
# autocast, below). The wide ones: twice as wide, 32 tokens, so the
# optimizer step (foreach) or the end of the backward (fused) is the peak,
# not the loss. Two replicas: DistributedDataParallel over gloo, two
# processes on this machine, rank 0 measured.
WIDE = {
    "hidden_size": 1024,
    "intermediate_size": 2816,
    "num_attention_heads": 16,
    "num_key_value_heads": 8,
}
CASES = [
    (2, 1, "foreach", None, None, 1, False),
    (4, 1, "foreach", None, None, 1, False),
    (4, 1, "fused", None, None, 1, False),
    (4, 2, "foreach", None, None, 1, False),
    (6, 1, "foreach", (32, 1), WIDE, 1, False),
    (6, 1, "fused", (32, 1), WIDE, 1, False),
    (4, 1, "foreach", None, None, 2, False),
    (6, 1, "fused", (32, 1), WIDE, 2, False),
    (6, 2, "fused", (32, 1), WIDE, 1, False),
    (4, 1, "foreach", None, None, 1, True),
    (4, 2, "foreach", None, None, 1, True),
    (6, 1, "fused", (32, 1), WIDE, 1, True),
    (6, 2, "fused", (32, 1), WIDE, 1, True),
]
# The loop as many scripts write it, against PyTorch's recipe: backward()
# inside the autocast context, whose cache keeps every cast through it.
CASES = [(*c, False) for c in CASES] + [
    (4, 1, "foreach", None, None, 1, False, True),
    (6, 1, "fused", (32, 1), WIDE, 1, False, True),
    (6, 2, "fused", (32, 1), WIDE, 1, False, True),
    (6, 1, "fused", (32, 1), WIDE, 1, True, True),
]


def config_at(family, layers, width=None):
    config = {**BASE, **(width or {}), **{**FAMILIES, **OPTIONAL}[family]}
    if family == "gpt2":
        config.update(
            n_layer=layers, n_embd=config["hidden_size"], n_head=config["num_attention_heads"]
        )
        return config
    if "head_dim" in config:
        config["head_dim"] = config["hidden_size"] // config["num_attention_heads"]
    if family == "phi3":
        config["num_key_value_heads"] = config["num_attention_heads"]
    return {**config, "num_hidden_layers": layers}


def storage_bytes(tensors):
    seen, total = set(), 0
    for t in tensors:
        s = t.untyped_storage()
        if s.data_ptr() not in seen:
            seen.add(s.data_ptr())
            total += s.nbytes()
    return total


def hf_peak(
    config, seq, batch, micro_batches, adamw, explain, replicas=1, recompute=False, inside=False
):
    if replicas > 1:
        ctx = mp.get_context("spawn")
        queue = ctx.Queue()
        args = (replicas, config, seq, batch, micro_batches, adamw, queue)
        procs = [ctx.Process(target=replica, args=(r, *args)) for r in range(replicas)]
        for proc in procs:
            proc.start()
        result = queue.get(timeout=900)
        for proc in procs:
            proc.join()
        return result
    return measure(
        config, seq, batch, micro_batches, adamw, explain, recompute=recompute, inside=inside
    )


def replica(rank, replicas, config, seq, batch, micro_batches, adamw, queue):
    """One data-parallel replica; rank 0 reports its peak."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="29533")
    dist.init_process_group("gloo", rank=rank, world_size=replicas)
    result = measure(config, seq, batch, micro_batches, adamw, False, ddp=True)
    if rank == 0:
        queue.put(result)
    dist.destroy_process_group()


def measure(
    config, seq, batch, micro_batches, adamw, explain, ddp=False, recompute=False, inside=False
):
    cfg = AutoConfig.for_model(**config)
    if getattr(cfg, "layer_types", None):
        cfg.layer_types = ["full_attention"] * len(cfg.layer_types)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa")
    model.train()
    if recompute:
        # Hugging Face's activation checkpointing of every block.
        getattr(model, "activation_checkpointing_enable", model.gradient_checkpointing_enable)()
    # DDP builds its gradient buckets at once and again, in the backward's
    # order, at the second iteration's forward: the measured one, so they
    # are counted there.
    run = DistributedDataParallel(model) if ddp else model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, **{adamw: True})
    ids = torch.randint(0, cfg.vocab_size, (batch, seq))

    def iteration():
        for _ in range(micro_batches):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = run(input_ids=ids, labels=ids).loss
                if inside:
                    loss.backward()
            if not inside:
                loss.backward()
            del loss
        opt.step()
        opt.zero_grad()

    iteration()  # the first creates the moments
    held = storage_bytes(
        list(model.parameters())
        + [v for s in opt.state.values() for v in s.values() if torch.is_tensor(v)]
    )
    with profile(
        activities=[ProfilerActivity.CPU],
        profile_memory=True,
        record_shapes=explain,
        with_stack=explain,
    ) as prof:
        iteration()
    if explain:
        return held, explain_peak(prof)
    live = peak = 0
    for e in prof.profiler.kineto_results.events():
        if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU:
            live += e.nbytes()
            peak = max(peak, live)
    return held, held + peak


def explain_peak(prof):
    """The peak from the profiler's op tree, and what is live there by the
    operator that allocated it."""
    from torch._C._profiler import _EventType

    def ops(e):
        names, p = [], e.parent
        while p is not None:
            if not p.name.startswith("autograd::engine"):
                names.append(p.name)
            p = p.parent
        return names

    live, at, peak, snap, where = {}, 0, 0, {}, []
    for e in prof._memory_profile()._op_tree.dfs():
        if e.typed[0] != _EventType.Allocation:
            continue
        a = e.typed[1]
        if a.device.type != "cpu":
            continue
        if a.alloc_size > 0:
            live[a.ptr] = (a.alloc_size, ops(e))
            at += a.alloc_size
        elif a.ptr in live:
            at -= live.pop(a.ptr)[0]
        else:
            at += a.alloc_size
        if at > peak:
            peak, snap, where = at, dict(live), ops(e)
    print(f"    peak inside {' < '.join(where[:3])}")
    by = Counter()
    for size, names in snap.values():
        by[" < ".join(names[:2])] += size
    for name, size in by.most_common(12):
        print(f"    {size:>14,}  {name}")
    return peak


def amp_peak(amp, config, seq, batch, micro_batches, adamw, replicas, recompute, inside):
    layers = config.get("n_layer", config.get("num_hidden_layers"))
    flags = ["--optimizer-step", adamw, "--recompute", "full" if recompute else "none", "--force"]
    if inside:
        flags.append("--backward-in-autocast")
    m = check.amp_memory(amp, config, layers, seq, batch, micro_batches, replicas, flags)
    return m["peak_bytes"] - m["other_bytes"], m


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--amp", required=True)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--explain", action="store_true")
    p.add_argument("families", nargs="*", default=list(FAMILIES))
    a = p.parse_args()
    print(
        f"torch {torch.__version__}, transformers {__import__('transformers').__version__}; "
        "peak bytes of one iteration"
    )
    print(
        "| family | width | blocks | sequence x samples | micro-batches | replicas | recompute "
        "| AdamW | PyTorch's peak | amp predicts | amp / PyTorch |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name in a.families:
        for layers, mbs, adamw, shape, width, replicas, recompute, inside in CASES:
            if (replicas > 1 or recompute or inside) and (a.explain or name != "llama"):
                continue  # llama's alone: none changes with the block
            config = config_at(name, layers, width)
            seq, batch = shape or (a.seq, a.batch)
            _, hf = hf_peak(config, seq, batch, mbs, adamw, a.explain, replicas, recompute, inside)
            amp, parts = amp_peak(
                a.amp, config, seq, batch, mbs, adamw, replicas, recompute, inside
            )
            loop = " (backward in autocast)" if inside else ""
            print(
                f"| {name} | {config['hidden_size']} | {layers} | {seq} x {batch} | {mbs} "
                f"| {replicas} | {'full' if recompute else 'none'} | {adamw}{loop} "
                f"| {hf:,} | {amp:,.0f} | {amp / hf:.3f} |",
                flush=True,
            )
            if a.explain:
                print("    amp:", {k: int(v) for k, v in parts.items() if k.endswith("_bytes")})


if __name__ == "__main__":
    main()

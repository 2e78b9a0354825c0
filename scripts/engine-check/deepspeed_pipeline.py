"""DeepSpeed's pipeline engine on the CPU, under amp's export of a two-stage plan: what each stage holds.

    python deepspeed_pipeline.py --amp PATH/TO/amp [--seq 512] [--micro-batches 4] [--replicas 1]
                                 [--zero 0|1] [--overlap-comm] [--block-kernels eager|fused]
                                 [--precision bf16|fp32]

For a plan of two pipeline stages of `--replicas` ranks each (fsdp.py's small Llama, Hugging
Face's blocks, bf16), this writes amp's DeepSpeed export of the plan (`amp
export --to deepspeed`: `ds_config.json` and `amp_pipeline.py`), builds the
model as that file asks (its `AmpPipelineModule`, split at amp's `PARTS`, on
its `topology()`; each layer a `LayerSpec`, so a stage builds its own layers
only), adds DeepSpeed's `AdamW`, runs DeepSpeed's pipeline engine (its 1F1B
`TrainSchedule`, the `BF16_Optimizer` without ZeRO) on gloo processes on the
CPU (`DS_ACCELERATOR=cpu`) for two iterations, and measures each rank's peak
with PyTorch's profiler, from the model's creation on, and the bytes of the
data-parallel collectives it runs in the second iteration (as
`deepspeed_zero.py` counts them), and under which of the engine's pipeline
instructions its all-reduces run (`--zero 1 --overlap-comm` adds DeepSpeed's
`overlap_comm`, which amp's export does not set, to show where the reduction
runs with it). amp's figure is `amp eval
--json`'s peak of the same stage, less the framework reserve (what a GPU holds
outside PyTorch's allocator, which a CPU run has not), priced with Hugging
Face's eager blocks (`--block-kernels eager`, the blocks this script runs;
`--block-kernels fused` prices an engine's, amp's default under DeepSpeed).
`--precision fp32` exports and prices the plan in fp32: the config then has
no bf16 section, so DeepSpeed steps with the optimizer as it is (Sailor's
runs' setup) and its pipeline engine reduces the gradients without ZeRO
through `buffered_allreduce_fallback`, which flattens them only to reduce
them.

The sequence is long enough for the activations in flight and the pipe buffers
(the last stage's retained logits among them) to count beside the states. The
innermost ops running at each peak are in the raw lines, beside the most each
pipeline instruction held while it ran (the passes apart from the reduction
and the step, where amp's passes and step peaks are), and the script ends
with what one block saves for its backward (Hugging Face's eager block: its
RMSNorm keeps fp32 copies, its MLP every intermediate), which amp's count of a
fused block does not follow.

Needs torch, deepspeed, transformers and ninja in the running Python. No
constant is fitted.
"""

import argparse
import bisect
import importlib.util
import json
import os
import subprocess
import tempfile

import torch
import torch.distributed as dist
from deepspeed_zero import ZERO, join_gloo, peak_and_ops, spawn_ranks
from fsdp import CONFIG
from torch.profiler import ProfilerActivity, profile, record_function


def llama_config():
    from transformers import AutoConfig

    cfg = AutoConfig.for_model(**CONFIG)
    cfg._attn_implementation = "sdpa"
    return cfg


class Embedding(torch.nn.Module):
    def __init__(self):
        super().__init__()
        cfg = llama_config()
        self.embed = torch.nn.Embedding(cfg.vocab_size, cfg.hidden_size)

    def forward(self, ids):
        return self.embed(ids)


class Block(torch.nn.Module):
    """One Hugging Face Llama block, its rotary table recomputed from the
    hidden states (the stages exchange those alone)."""

    def __init__(self, index):
        super().__init__()
        from transformers.models.llama.modeling_llama import (
            LlamaDecoderLayer,
            LlamaRotaryEmbedding,
        )

        cfg = llama_config()
        self.layer = LlamaDecoderLayer(cfg, index)
        self.rotary = LlamaRotaryEmbedding(cfg)

    def forward(self, h):
        positions = torch.arange(h.shape[1]).unsqueeze(0)
        cos, sin = self.rotary(h, positions)
        out = self.layer(h, attention_mask=None, position_embeddings=(cos, sin))
        return out[0] if isinstance(out, tuple) else out


class FinalNorm(torch.nn.Module):
    def __init__(self):
        super().__init__()
        from transformers.models.llama.modeling_llama import LlamaRMSNorm

        cfg = llama_config()
        self.norm = LlamaRMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps)

    def forward(self, h):
        return self.norm(h)


class Head(torch.nn.Module):
    """The vocabulary projection, its logits cast to fp32 as the last layer
    of Megatron-DeepSpeed's pipe models casts them (`float16_to_fp32`): what
    the pipe buffers then keep."""

    def __init__(self):
        super().__init__()
        cfg = llama_config()
        self.lm_head = torch.nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)

    def forward(self, h):
        return self.lm_head(h).float()


def loss_fn(logits, labels):
    """The loss over the whole sequence in fp32, as amp prices PyTorch's."""
    return torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten())


def block_saved_bytes(seq):
    """What one of these blocks saves for its backward at `seq` tokens, in
    bf16, weights aside: the storages its autograd graph packs, each once."""
    block = Block(0).bfloat16()
    weights = {p.untyped_storage().data_ptr() for p in block.parameters()}
    saved = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in weights:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    h = torch.randn(1, seq, CONFIG["hidden_size"], dtype=torch.bfloat16, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        block(h)
    return sum(saved.values())


def rank_main(rank, world, export_dir, seq, port, overlap_comm, queue):
    deepspeed, traffic = join_gloo(rank, world, port)
    from deepspeed.pipe import LayerSpec

    # Which pipeline instruction each all-reduce runs in.
    from deepspeed.runtime.pipe.engine import PipelineEngine

    instruction, reduced_in = ["none"], {}
    for kind, fn in list(PipelineEngine._INSTRUCTION_MAP.items()):

        def run(self, *args, _fn=fn, **kwargs):
            instruction[0] = _fn.__name__
            try:
                # Named in the profile, for the peak within each instruction.
                with record_function(INSTRUCTION + _fn.__name__):
                    return _fn(self, *args, **kwargs)
            finally:
                instruction[0] = "none"

        PipelineEngine._INSTRUCTION_MAP[kind] = run
    all_reduce = deepspeed.comm.all_reduce

    def located(tensor, *args, **kwargs):
        if traffic["on"]:
            key = instruction[0]
            reduced_in[key] = reduced_in.get(key, 0) + tensor.numel() * tensor.element_size()
        return all_reduce(tensor, *args, **kwargs)

    deepspeed.comm.all_reduce = located
    spec = importlib.util.spec_from_file_location(
        "amp_pipeline", os.path.join(export_dir, "amp_pipeline.py")
    )
    amp_pipeline = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(amp_pipeline)
    with open(os.path.join(export_dir, "ds_config.json")) as f:
        ds_config = json.load(f)
    ds_config["optimizer"] = {"type": "AdamW", "params": {"lr": 1e-4}}
    if overlap_comm:
        ds_config["zero_optimization"]["overlap_comm"] = True
    torch.manual_seed(0)
    blocks = CONFIG["num_hidden_layers"]
    specs = [
        LayerSpec(Embedding),
        *[LayerSpec(Block, i) for i in range(blocks)],
        LayerSpec(FinalNorm),
        LayerSpec(Head),
    ]
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        module = amp_pipeline.AmpPipelineModule(
            layers=specs, topology=amp_pipeline.topology(), loss_fn=loss_fn
        )
        params = sum(p.numel() for p in module.parameters())
        engine, optimizer, _, _ = deepspeed.initialize(
            model=module, model_parameters=module.parameters(), config=ds_config
        )
        ids = torch.randint(0, CONFIG["vocab_size"], (1, seq))
        accumulation = ds_config["gradient_accumulation_steps"]
        for it in range(2):
            traffic["on"] = it == 1
            engine.train_batch(data_iter=iter([(ids, ids)] * accumulation))
    peak, ops, last = peak_and_ops(prof)
    by_instruction = peaks_by_instruction(prof)
    queue.put(
        {
            "rank": rank,
            "params": params,
            "optimizer": type(optimizer).__name__,
            "peak_bytes": peak,
            "ops_at_peak": ops,
            "peak_allocation_bytes": last,
            "collective_bytes_per_param": {
                k: round(v / params, 3) for k, v in sorted(traffic.items()) if k != "on"
            },
            "peak_bytes_by_instruction": by_instruction,
            "all_reduce_bytes_per_param_by_instruction": {
                k: round(v / params, 3) for k, v in sorted(reduced_in.items())
            },
        }
    )
    dist.destroy_process_group()


INSTRUCTION = "amp_instruction:"


def peaks_by_instruction(prof):
    """The most each pipeline instruction's run held (everything alive
    while it ran, from the model's creation on), by the instruction's
    method name (`_exec_forward_pass`, `_exec_reduce_grads`, ...): where a
    rank's passes peak apart from its reduction and step."""
    events = list(prof.profiler.kineto_results.events())
    spans = sorted(
        (e.start_ns(), e.end_ns(), e.name()[len(INSTRUCTION) :])
        for e in events
        if e.name().startswith(INSTRUCTION)
    )
    starts = [s for s, _, _ in spans]
    live, peaks = 0, {}
    for e in sorted((e for e in events if e.name() == "[memory]"), key=lambda e: e.start_ns()):
        if e.device_type() != torch.autograd.DeviceType.CPU:
            continue
        live += e.nbytes()
        i = bisect.bisect_right(starts, e.start_ns()) - 1
        if i >= 0 and spans[i][0] <= e.start_ns() <= spans[i][1]:
            name = spans[i][2]
            peaks[name] = max(peaks.get(name, 0), live)
    return dict(sorted(peaks.items()))


def measure(export_dir, seq, port, world, overlap_comm):
    out = spawn_ranks(rank_main, world, (export_dir, seq, port, overlap_comm), results=world)
    return sorted(out, key=lambda r: r["rank"])


def amp_run(amp, d, seq, micro_batches, replicas, zero, block_kernels, precision):
    """amp's export of the two-stage plan, and its own figures."""
    config = os.path.join(d, "config.json")
    with open(config, "w") as f:
        json.dump(CONFIG, f)
    split = 1 + CONFIG["num_hidden_layers"] // 2
    end = CONFIG["num_hidden_layers"] + 3
    plan = {
        "micro_batch": 1,
        "num_micro_batches": micro_batches,
        # DeepSpeed's ranks: pipe slowest, then data (topology()).
        "stages": [
            {
                "first_layer": a,
                "end_layer": b,
                "replicas": [[{"node": 0, "gpu": j * replicas + r}] for r in range(replicas)],
            }
            for j, (a, b) in enumerate([(0, split), (split, end)])
        ],
    }
    plan_path = os.path.join(d, "plan.json")
    with open(plan_path, "w") as f:
        json.dump(plan, f)
    cluster = f"1x{2 * replicas}xH100"
    common = [plan_path, "--model", config, "--seq", str(seq), "--cluster", cluster]
    out = os.path.join(d, "export")
    subprocess.run(
        [amp, "export", *common, "--to", "deepspeed", "--out", out, "--precision", precision]
        + ["--optimizer-sharding", ZERO[zero], "--force"],
        capture_output=True,
        text=True,
        check=True,
    )
    evaluated = json.loads(
        subprocess.run(
            [amp, "eval", *common, "--engine", "deepspeed", "--cross-entropy", "pytorch"]
            + ["--precision", precision, "--optimizer-sharding", ZERO[zero], "--force", "--json"]
            + ["--block-kernels", block_kernels],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    return out, evaluated


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--amp", required=True)
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--micro-batches", type=int, default=4)
    p.add_argument("--replicas", type=int, default=1)
    p.add_argument("--zero", type=int, choices=[0, 1], default=0)
    p.add_argument("--overlap-comm", action="store_true")
    p.add_argument("--block-kernels", choices=["eager", "fused"], default="eager")
    p.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    a = p.parse_args()
    import deepspeed

    print(f"torch {torch.__version__}, deepspeed {deepspeed.__version__}")
    print(
        f"sequence {a.seq}, {a.micro_batches} micro-batches of 1, two stages of {a.replicas} "
        f"rank(s), ZeRO {a.zero}{', overlap_comm' if a.overlap_comm else ''}, {a.precision}; "
        f"amp with {a.block_kernels} blocks"
    )
    print(
        "| rank (stage) | DeepSpeed's optimizer | parameters | peak, measured (gloo) | amp | amp / measured "
        "| amp's activations (or step temporaries) |"
    )
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as d:
        export_dir, evaluated = amp_run(
            a.amp, d, a.seq, a.micro_batches, a.replicas, a.zero, a.block_kernels, a.precision
        )
        got = measure(export_dir, a.seq, 29601, 2 * a.replicas, a.overlap_comm)
        reserve = evaluated["framework_reserve_bytes"]
        for r in got:
            m = next(m for m in evaluated["memory"] if m["device"]["gpu"] == r["rank"])
            amp_peak = m["peak_bytes"] - reserve
            print(
                f"| {r['rank']} ({m['stage']}) | {r['optimizer']} | {r['params']:,} "
                f"| {r['peak_bytes'] / 1e6:.1f} MB | {amp_peak / 1e6:.1f} MB "
                f"| {amp_peak / r['peak_bytes']:.3f} | {m['activations_bytes'] / 1e6:.1f} MB |"
            )
            phases = ", ".join(
                f"{k.removeprefix('_exec_')} {v / 1e6:.1f}"
                for k, v in r["peak_bytes_by_instruction"].items()
            )
            print(f"    peak within each instruction, MB: {phases}")
            print(f"    raw: {json.dumps(r)}")
    saved = block_saved_bytes(a.seq)
    per = saved / (a.seq * CONFIG["hidden_size"])
    print(
        f"one block saves {saved / 1e6:.1f} MB for its backward, {per:.1f} bytes a token per hidden unit"
    )


if __name__ == "__main__":
    main()

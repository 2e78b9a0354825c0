"""DeepSpeed's own engine on the CPU, under the config amp exports: what a rank holds.

    python deepspeed_zero.py --amp PATH/TO/amp [--seq 32] [--stages 0,1,2,3,fp16]
                             [--block-kernels fused|eager]

For a plan of one stage over two data-parallel ranks (a small Llama, Hugging
Face's code, in bf16), at each ZeRO stage 0-3, this writes amp's DeepSpeed
export of the plan (`amp export --to deepspeed`), runs DeepSpeed's engine with
that `ds_config.json` (its `AdamW` added: amp's export leaves the optimizer to
the training script) on two gloo processes on the CPU (`DS_ACCELERATOR=cpu`),
two iterations of two micro-batches, and measures rank 0 with PyTorch's
profiler: its peak over the run, the model's creation included, per parameter.
amp's figure is `amp eval --json` of the same plan with the same flags, its
peak less the framework reserve (the CUDA context and what else a GPU holds
outside PyTorch's allocator, which a CPU run has not), with an engine's fused
blocks by default, as before `--block-kernels` existed (at 32 tokens the states
decide the peak); `--seq 1024 --block-kernels eager` checks Hugging Face's
blocks, which this script runs, where the activations count.

It also reads which optimizer wrapper DeepSpeed chose and the format its
gradients are accumulated in (`get_data_types`), beside the gradient format
amp's plan records: that is what decides 2 or 4 bytes a gradient; and, in
each row's raw line, the innermost ops running at the peak, the size of the
allocation that reached it, and the bytes of
the collectives rank 0 ran in the second iteration, by kind, per parameter
(the whole tensor each reduces or gathers: what decides the data-parallel
traffic amp prices).

Needs torch, deepspeed, transformers and ninja (DeepSpeed builds its CPU
communication op with it, and a C++ compiler) in the running Python. No
constant is fitted. On gloo a collective may copy its buffer, which NCCL
does not: a CPU peak above amp's by about a gradient's bytes is read so.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from fsdp import CONFIG, SEQ  # fsdp.py's small Llama
from torch.profiler import ProfilerActivity, profile

ZERO = {0: "none", 1: "zero1", 2: "zero2", 3: "zero3"}


def pipeline_module(model):
    """`model` as the one-stage PipelineModule amp's export builds for ZeRO
    stages 0 and 1 (amp_pipeline.py): embedding, blocks, norm and
    projection as layers, the loss as its `loss_fn`."""
    from deepspeed.pipe import PipelineModule

    class Embedding(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = model.model.embed_tokens
            self.rotary = model.model.rotary_emb

        def forward(self, ids):
            h = self.embed(ids)
            cos, sin = self.rotary(h, torch.arange(ids.shape[1]).unsqueeze(0))
            return h, cos, sin

    class Block(torch.nn.Module):
        def __init__(self, layer):
            super().__init__()
            self.layer = layer

        def forward(self, x):
            h, cos, sin = x
            out = self.layer(h, attention_mask=None, position_embeddings=(cos, sin))
            return (out[0] if isinstance(out, tuple) else out), cos, sin

    class Head(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.norm = model.model.norm
            self.lm_head = model.lm_head

        def forward(self, x):
            return self.lm_head(self.norm(x[0]))

    def loss_fn(logits, labels):
        return torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), labels.flatten())

    layers = [Embedding(), *[Block(b) for b in model.model.layers], Head()]
    return PipelineModule(layers=layers, num_stages=1, loss_fn=loss_fn, partition_method="uniform")


def _size(t):
    """Bytes of a tensor, or of a list of them."""
    if isinstance(t, (list, tuple)):
        return sum(_size(x) for x in t)
    return t.numel() * t.element_size() if isinstance(t, torch.Tensor) else 0


# deepspeed.comm's collectives, each with the position of the argument that
# holds the whole tensor it reduces or gathers (a reduce-scatter's input, an
# all-gather's output).
COLLECTIVES = {
    "all_reduce": 0,
    "all_reduce_coalesced": 0,
    "inference_all_reduce": 0,
    "reduce": 0,
    "broadcast": 0,
    "reduce_scatter_tensor": 1,
    "reduce_scatter_fn": 1,
    "reduce_scatter": 1,
    "all_gather_into_tensor": 0,
    "allgather_fn": 0,
    "all_gather": 0,
    "all_gather_coalesced": 0,
}


def count_collectives(comm, traffic):
    """Wraps `comm`'s (deepspeed.comm's) collectives so that each outermost
    call adds its whole tensor's bytes to `traffic[name]` while
    `traffic["on"]` is set (one collective may call another: counted once).
    """
    depth = [0]

    def wrap(name, fn, whole):
        def counted(*args, **kwargs):
            if depth[0] == 0 and traffic["on"]:
                given = list(args) + list(kwargs.values())
                traffic[name] = traffic.get(name, 0) + _size(given[whole])
            depth[0] += 1
            try:
                return fn(*args, **kwargs)
            finally:
                depth[0] -= 1

        return counted

    for name, whole in COLLECTIVES.items():
        if hasattr(comm, name):
            setattr(comm, name, wrap(name, getattr(comm, name), whole))


def peak_and_ops(prof):
    """The CPU peak of `prof`'s run in one walk of its allocations in time
    order, the three innermost ops running when it was reached, and the size
    of the allocation that reached it."""
    events = list(prof.profiler.kineto_results.events())
    live = peak = at = last = 0
    for e in sorted((e for e in events if e.name() == "[memory]"), key=lambda e: e.start_ns()):
        if e.device_type() == torch.autograd.DeviceType.CPU:
            live += e.nbytes()
            if live > peak:
                peak, at, last = live, e.start_ns(), e.nbytes()
    running = sorted(
        (e.end_ns() - e.start_ns(), e.name())
        for e in events
        if e.name() != "[memory]" and e.start_ns() <= at <= e.end_ns()
    )
    return peak, [name for _, name in running[:3]], last


def join_gloo(rank, world, port):
    """Rank `rank` of `world` gloo processes on the CPU under DeepSpeed, its
    collectives counted: the `deepspeed` module and the count
    (`count_collectives`, off until `traffic["on"]` is set)."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
        DS_ACCELERATOR="cpu",
    )
    # DeepSpeed builds its CPU communication op with the ninja beside Python.
    os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]
    import deepspeed

    deepspeed.init_distributed(dist_backend="gloo")
    traffic = {"on": False}
    count_collectives(deepspeed.comm, traffic)
    return deepspeed, traffic


def rank_main(rank, world, ds_config, pipelined, port, seq, queue):
    from transformers import AutoConfig, AutoModelForCausalLM

    # The data-parallel traffic of the last iteration.
    deepspeed, traffic = join_gloo(rank, world, port)
    torch.manual_seed(0)
    cfg = AutoConfig.for_model(**CONFIG)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        model = AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa")
        params = sum(p.numel() for p in model.parameters())
        if pipelined:
            model = pipeline_module(model)
        engine, optimizer, _, _ = deepspeed.initialize(
            model=model, model_parameters=model.parameters(), config=ds_config
        )
        ids = torch.randint(0, cfg.vocab_size, (1, seq))
        accumulation = ds_config["gradient_accumulation_steps"]
        for it in range(2):
            traffic["on"] = it == 1
            if pipelined:
                engine.train_batch(data_iter=iter([(ids, ids)] * accumulation))
                continue
            for _ in range(accumulation):
                logits = engine(input_ids=ids).logits
                loss = torch.nn.functional.cross_entropy(
                    logits.flatten(0, 1).float(), ids.flatten()
                )
                del logits
                engine.backward(loss)
                engine.step()
    model_dtype, accumulation_dtype = engine.get_data_types()
    peak, ops, last = peak_and_ops(prof)
    if rank == 0:
        queue.put(
            {
                "params": params,
                "optimizer": type(optimizer).__name__,
                "model_dtype": str(model_dtype).removeprefix("torch."),
                "grad_accum_dtype": str(accumulation_dtype).removeprefix("torch."),
                "peak_bytes": peak,
                "ops_at_peak": ops,
                # The allocation that reached the peak, per parameter.
                "peak_allocation_bytes_per_param": round(last / params, 3),
                "collective_bytes_per_param": {
                    k: round(v / params, 3) for k, v in sorted(traffic.items()) if k != "on"
                },
            }
        )
    dist.destroy_process_group()


def spawn_ranks(target, world, args, results=1):
    """Runs `target(rank, world, *args, queue)` in `world` spawned processes
    and returns the first `results` items they put on the queue."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=target, args=(r, world, *args, queue)) for r in range(world)]
    for p in procs:
        p.start()
    out = [queue.get(timeout=1800) for _ in range(results)]
    for p in procs:
        p.join()
    return out


def measure(ds_config, pipelined, port, seq, world=2):
    return spawn_ranks(rank_main, world, (ds_config, pipelined, port, seq))[0]


def amp_files(d):
    layers = CONFIG["num_hidden_layers"]
    config = os.path.join(d, "config.json")
    with open(config, "w") as f:
        json.dump(CONFIG, f)
    plan = {
        "micro_batch": 1,
        "num_micro_batches": 2,
        "stages": [
            {
                "first_layer": 0,
                "end_layer": layers + 3,
                "replicas": [[{"node": 0, "gpu": r}] for r in range(2)],
            }
        ],
    }
    plan_path = os.path.join(d, "plan.json")
    with open(plan_path, "w") as f:
        json.dump(plan, f)
    return config, plan_path


def amp_run(amp, d, stage, seq, block_kernels, precision="bf16"):
    """amp's DeepSpeed config for ZeRO `stage`, whether it runs as a
    PipelineModule (amp_pipeline.py) or a plain module (amp_plan.py), and
    amp's own figures at `precision` with `block_kernels` blocks."""
    config, plan = amp_files(d)
    common = [plan, "--model", config, "--seq", str(seq), "--cluster", "1x2xH100"]
    common += ["--block-kernels", block_kernels]
    flags = ["--optimizer-sharding", ZERO[stage], "--precision", precision, "--force"]
    out = os.path.join(d, f"zero{stage}-{precision}")
    subprocess.run(
        [amp, "export", *common, "--to", "deepspeed", "--out", out, *flags],
        capture_output=True,
        text=True,
        check=True,
    )
    with open(os.path.join(out, "ds_config.json")) as f:
        ds_config = json.load(f)
    ds_config["optimizer"] = {"type": "AdamW", "params": {"lr": 1e-4}}
    pipelined = os.path.exists(os.path.join(out, "amp_pipeline.py"))
    # The loss over the whole sequence in fp32, as this loop computes it.
    evaluated = json.loads(
        subprocess.run(
            [amp, "eval", *common, "--engine", "deepspeed", "--cross-entropy", "pytorch"]
            + [*flags, "--json"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    return ds_config, pipelined, evaluated


def row(label, got, evaluated):
    n = got["params"]
    m = evaluated["memory"][0]
    amp_peak = (m["peak_bytes"] - evaluated["framework_reserve_bytes"]) / n
    measured = got["peak_bytes"] / n
    amp_grads = evaluated["plan"]["setup"]["formats"]["gradients"]
    print(
        f"| {label} | {got['optimizer']} | {got['grad_accum_dtype']} / {amp_grads} "
        f"| {measured:.3f} / {amp_peak:.3f} | {amp_peak / measured:.3f} |"
    )


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--amp", required=True)
    p.add_argument("--seq", type=int, default=SEQ)
    p.add_argument("--stages", default="0,1,2,3,fp16", help="ZeRO stages, and fp16's row")
    p.add_argument("--block-kernels", choices=["fused", "eager"], default="fused")
    a = p.parse_args()
    stages = a.stages.split(",")
    import deepspeed

    print(f"torch {torch.__version__}, deepspeed {deepspeed.__version__}")
    print(f"sequence {a.seq}, amp with {a.block_kernels} blocks")
    print(
        "| ZeRO stage, module | DeepSpeed's optimizer | gradients accumulated in: DeepSpeed / amp "
        "| peak per parameter: measured (gloo) / amp | amp / measured |"
    )
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as d:
        for stage in [int(s) for s in stages if s != "fp16"]:
            ds_config, pipelined, evaluated = amp_run(a.amp, d, stage, a.seq, a.block_kernels)
            got = measure(ds_config, pipelined, 29581 + stage, a.seq)
            module = "one-stage PipelineModule" if pipelined else "plain module"
            row(f"{stage}, {module} (amp's export)", got, evaluated)
            print(f"    raw: {json.dumps(got)}; ds_config {json.dumps(ds_config, sort_keys=True)}")
        # DeepSpeed's FP16_Optimizer, which amp's fp16 exports without ZeRO
        # run: on the CPU it runs at bf16, on a plain module (bf16 on its
        # pipeline engine takes the BF16_Optimizer); the same bytes a
        # value, so amp's fp16 figure is beside it.
        if "fp16" not in stages:
            return
        ds_config, _, _ = amp_run(a.amp, d, 0, a.seq, a.block_kernels)
        ds_config.pop("pipeline", None)
        _, _, evaluated = amp_run(a.amp, d, 0, a.seq, a.block_kernels, "fp16")
        got = measure(ds_config, False, 29590, a.seq)
        row("0, plain module at bf16 (amp: fp16)", got, evaluated)
        print(f"    raw: {json.dumps(got)}; ds_config {json.dumps(ds_config, sort_keys=True)}")


if __name__ == "__main__":
    main()

"""FSDP2 as torchtitan applies it, on the CPU: what a rank holds.

    python fsdp.py --amp PATH/TO/amp

torchtitan wraps every model in FSDP2 (`fully_shard`), sharded over the
replicas with ZeRO-3 and at a shard degree of 1 without (HSDP: the
replicas all-reduce), with a mixed-precision policy of bf16 parameters and
fp32 reductions: the embedding, the final norm with the projection, and
each block are units (torchtitan/distributed/fsdp.py
`apply_fsdp_to_decoder`). This builds a small Llama with Hugging Face's
code in fp32, wraps it the same way on two gloo processes, and runs
training iterations (forward, the loss on fp32 logits as torchtitan's
`cross_entropy`, backward, a fused AdamW step, `zero_grad(set_to_none=False)`
as torchtitan 0.3.0 calls it), rank 0 measured by PyTorch's profiler:

- `held`: what the rank keeps between iterations (its parameters' and
  gradients' shards and Adam's moments), bytes per parameter of its shard;
- in a pipeline stage, torchtitan's FSDP2 keeps every unit unsharded
  after its forward (`reshard_after_forward=False` with pipelining) and
  `torch.distributed.pipelining` runs every backward with
  `set_requires_gradient_sync(False)` and `set_reshard_after_backward(False)`
  and reduces after the last (pipelining/stage.py, `perform_reduce_grad`;
  this script turns sync back on for the last backward instead, which
  reduces the same once): `kept after a backward` is what the first of two
  micro-batches' forward and backward leave allocated under those flags, per
  parameter of the stage (the unsharded 16-bit parameters and the
  gradients accumulated unsharded). The stage is the whole model here, one
  process per replica: the flags, not the pipeline's sends, are what is
  measured.

amp's figures come from `amp eval --json` of the same model (a Hugging
Face config) as one stage over two GPUs, `--engine torchtitan`, and of the
same split as two stages for the pipeline's figure. No constant is fitted.
The transients of one unit's reduction (its 16-bit gradients, their fp32
copy for the reduce-scatter, and on gloo the collective's own copy) are
reported as `peak above held` and are not priced by amp.
"""

import argparse
import json
import os
import subprocess
import tempfile

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from titan_wrap import wrap_as_torchtitan
from torch.distributed.device_mesh import init_device_mesh
from torch.profiler import ProfilerActivity, profile
from transformers import AutoConfig, AutoModelForCausalLM

CONFIG = {
    "model_type": "llama",
    "hidden_size": 1024,
    "intermediate_size": 2816,
    "num_attention_heads": 16,
    "num_key_value_heads": 8,
    "num_hidden_layers": 4,
    "vocab_size": 32000,
    "max_position_embeddings": 2048,
    "tie_word_embeddings": False,
    "bos_token_id": 0,
    "eos_token_id": 0,
    "pad_token_id": 0,
}
SEQ = 32  # tokens per micro-batch: the states, not the activations, dominate


def storage_bytes(tensors):
    seen, total = set(), 0
    for t in tensors:
        t = getattr(t, "_local_tensor", t)
        s = t.untyped_storage()
        if s.data_ptr() not in seen:
            seen.add(s.data_ptr())
            total += s.nbytes()
    return total


def net_and_peak(prof):
    live = peak = 0
    for e in prof.profiler.kineto_results.events():
        if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU:
            live += e.nbytes()
            peak = max(peak, live)
    return live, peak


def one_mode(mesh, cfg, state, pipelined):
    """Rank's figures for a fresh wrap as torchtitan's: units resharded
    after their forward in one stage, not in a pipeline's."""
    m = AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa")
    m.load_state_dict(state)
    wrap_as_torchtitan(m, mesh, pipelined)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-4, fused=True)
    ids = torch.randint(0, cfg.vocab_size, (1, SEQ))

    def micro_batch(last):
        if pipelined:
            m.set_requires_gradient_sync(last)
            m.set_reshard_after_backward(last)
        logits = m(input_ids=ids).logits
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), ids.flatten())
        del logits
        loss.backward()

    def iteration():
        for i in range(2):
            micro_batch(i == 1)
        opt.step()
        opt.zero_grad(set_to_none=False)

    iteration()  # the moments and the gradients' shards
    held = storage_bytes(
        list(m.parameters())
        + [p.grad for p in m.parameters() if p.grad is not None]
        + [v for s in opt.state.values() for v in s.values() if torch.is_tensor(v)]
    )
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        iteration()
    _, peak = net_and_peak(prof)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        micro_batch(False)
    kept, _ = net_and_peak(prof)
    micro_batch(True)
    opt.step()
    opt.zero_grad(set_to_none=False)
    return {
        "params_local": sum(getattr(p, "_local_tensor", p).numel() for p in m.parameters()),
        "params_stage": sum(p.numel() for p in m.parameters()),
        "held_bytes": held,
        "peak_above_held_bytes": peak,
        "kept_after_a_backward_bytes": kept,
    }


def rank_main(rank, world, sharded, queue):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="29561")
    dist.init_process_group("gloo", rank=rank, world_size=world)
    if sharded:
        mesh = init_device_mesh("cpu", (world,), mesh_dim_names=("fsdp",))
    else:
        mesh = init_device_mesh("cpu", (world, 1), mesh_dim_names=("dp_replicate", "fsdp"))
    torch.manual_seed(0)
    cfg = AutoConfig.for_model(**CONFIG)
    state = AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa").state_dict()
    results = {
        "pipelined" if pipelined else "one stage": one_mode(mesh, cfg, state, pipelined)
        for pipelined in (False, True)
    }
    if rank == 0:
        queue.put(results)
    dist.destroy_process_group()


def measure(sharded, world=2):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=rank_main, args=(r, world, sharded, queue)) for r in range(world)]
    for p in procs:
        p.start()
    out = queue.get(timeout=900)
    for p in procs:
        p.join()
    return out


def amp_eval(amp, stages, sharded):
    """`amp eval --json` of CONFIG over two GPUs per stage."""
    layers = CONFIG["num_hidden_layers"]
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "config.json")
        with open(path, "w") as f:
            json.dump(CONFIG, f)
        ends = [0, layers + 3] if stages == 1 else [0, 1 + layers // 2, layers + 3]
        plan = {
            "micro_batch": 1,
            "num_micro_batches": 2,
            "stages": [
                {
                    "first_layer": ends[j],
                    "end_layer": ends[j + 1],
                    "replicas": [[{"node": 0, "gpu": 2 * j + r}] for r in range(2)],
                }
                for j in range(stages)
            ],
        }
        plan_path = os.path.join(d, "plan.json")
        with open(plan_path, "w") as f:
            json.dump(plan, f)
        # The loss over the whole sequence, as this loop computes it
        # (torchtitan's recipes chunk it, amp's default for torchtitan).
        flags = ["--engine", "torchtitan", "--optimizer-step", "fused", "--force"]
        flags += ["--cross-entropy", "pytorch"]
        if sharded:
            flags += ["--optimizer-sharding", "zero3"]
        out = subprocess.run(
            [amp, "eval", plan_path, "--model", path, "--seq", str(SEQ)]
            + ["--cluster", f"1x{2 * stages}xH100", *flags, "--json"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return json.loads(out)["memory"]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--amp", required=True)
    a = p.parse_args()
    print(f"torch {torch.__version__}, transformers {__import__('transformers').__version__}")
    print(
        "| FSDP2 over 2 replicas | amp held / param (step) | measured held / param "
        "| amp kept through the passes beyond the step / stage param "
        "| measured kept after a backward / stage param "
        "| amp one stage's peak above held / stage param | measured (gloo) |"
    )
    print("|---|---|---|---|---|---|---|")
    for sharded in (True, False):
        got = measure(sharded)
        one, pipe = got["one stage"], got["pipelined"]
        shard = 2 if sharded else 1
        # amp, one stage: the states it holds through the step (its shards;
        # the passes' report adds the projection's unsharded copy as
        # weights), per parameter of the rank's shard.
        m1 = amp_eval(a.amp, 1, sharded)[0]
        amp_held = (m1["gradients_bytes"] + m1["optimizer_bytes"]) / (one["params_stage"] / shard)
        # amp, two stages: the first stage through its passes beyond the
        # step, per parameter of the stage (its Adam state, 12 bytes per
        # parameter of the shard, says how many).
        m2 = amp_eval(a.amp, 2, sharded)[0]
        p0 = m2["optimizer_bytes"] * shard / 12.0
        step = 16.0 / shard * p0
        amp_kept = (m2["weights_bytes"] + m2["gradients_bytes"] + m2["optimizer_bytes"] - step) / p0
        # amp's peak above what it holds through the step, one stage.
        amp_above = (m1["peak_bytes"] - m1["other_bytes"]) / one["params_stage"] - amp_held / shard
        label = "ZeRO-3 (shard 2)" if sharded else "replicated (shard 1, HSDP)"
        print(
            f"| {label} | {amp_held:.3f} | {one['held_bytes'] / one['params_local']:.3f} "
            f"| {amp_kept:.3f} | {pipe['kept_after_a_backward_bytes'] / pipe['params_stage']:.3f} "
            f"| {amp_above:.3f} | {one['peak_above_held_bytes'] / one['params_stage']:.3f} |"
        )
        print(f"    raw: {json.dumps(got)}")


if __name__ == "__main__":
    main()

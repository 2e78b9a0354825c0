"""FSDP2 as torchtitan applies it, on the CPU: which collectives it runs, when.

    python fsdp_traffic.py

amp prices torchtitan's data-parallel traffic by these rules
(crates/amp-core/src/cost/device/sharded.rs):

- one stage (no pipeline), gradient sync on at every micro-batch as
  torchtitan's `train_step` runs it: every unit is all-gathered before its
  forward and, but for the last one (final norm and projection, kept from
  its forward to its backward), again before its backward; every unit's
  gradients are reduce-scattered in fp32 after its backward (all-reduced
  when replicated), in every micro-batch; the next micro-batch's first
  gather comes after the last reduction, and in a backward each gather
  (prefetched one unit ahead) comes before the reduction of the unit
  computed before it;
- a pipeline stage (`reshard_after_forward=False`; every backward without
  gradient sync or resharding, and the reduction finalized after the last,
  `perform_reduce_grad`, as `torch.distributed.pipelining`'s stage.py runs
  it): each unit gathered once, in the first forward, and reduced once,
  after the last backward, not overlapping it.

This wraps a small Llama (Hugging Face's code) as torchtitan does
(torchtitan/distributed/fsdp.py `apply_fsdp_to_decoder`) on two gloo
processes, runs two micro-batches in each mode, records every collective
FSDP2 issues on rank 0 (by wrapping `torch.distributed`'s functions, which
FSDP2 calls through the module) and checks the counts, formats and order
against those rules. Exits non-zero if any differs.
"""

import os
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from titan_wrap import wrap_as_torchtitan
from torch.distributed.device_mesh import init_device_mesh
from transformers import AutoConfig, AutoModelForCausalLM

CONFIG = {
    "model_type": "llama",
    "hidden_size": 256,
    "intermediate_size": 704,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "num_hidden_layers": 4,
    "vocab_size": 1000,
    "max_position_embeddings": 256,
    "tie_word_embeddings": False,
    "bos_token_id": 0,
    "eos_token_id": 0,
    "pad_token_id": 0,
}
SEQ = 16
UNITS = CONFIG["num_hidden_layers"] + 2  # embedding, blocks, [norm, projection]
LOG = []


def logged(name, fn):
    """`fn`, logging (name, dtype, elements) of what it sends."""
    sent = {
        "all_gather_single": lambda a, k: a[1] if len(a) > 1 else k["input_tensor"],
        "reduce_scatter_single": lambda a, k: a[1] if len(a) > 1 else k["input"],
        "all_reduce": lambda a, k: a[0] if a else k["tensor"],
    }[name]

    def call(*args, **kwargs):
        t = sent(args, kwargs)
        LOG.append((name, t.dtype, t.numel()))
        return fn(*args, **kwargs)

    return call


def run(mesh, cfg, pipelined):
    m = AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa")
    wrap_as_torchtitan(m, mesh, pipelined)
    ids = torch.randint(0, cfg.vocab_size, (1, SEQ))
    passes = []
    for _ in range(2):
        if pipelined:
            # torch/distributed/pipelining/stage.py: manual finalization
            # set before the forward, every backward without gradient sync
            # or resharding (`backward_maybe_with_nosync`).
            m.set_manual_backward_finalization(True)
            m.set_reshard_after_backward(False)
            m.set_requires_gradient_sync(False)
        LOG.clear()
        logits = m(input_ids=ids).logits
        forward = list(LOG)
        LOG.clear()
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), ids.flatten())
        loss.backward()
        passes.append((forward, list(LOG)))
    LOG.clear()
    if pipelined:
        # `perform_reduce_grad` after the last backward.
        m.set_requires_gradient_sync(True)
        m.set_reshard_after_backward(True)
        m.finalize_backward(async_op=True).wait()
        m.set_manual_backward_finalization(False)
    passes.append(([], list(LOG)))
    return passes


def kinds(log, name):
    return [x for x in log if x[0] == name]


def check(label, passes, sharded, pipelined, failures):
    gather = "all_gather_single"
    reduce = "reduce_scatter_single" if sharded else "all_reduce"
    for k, (forward, backward) in enumerate(passes):
        # Two micro-batches, then what follows the last backward.
        after = k == 2
        want_fg = UNITS if sharded and not after and (k == 0 or not pipelined) else 0
        want_bg = UNITS - 1 if sharded and not pipelined and not after else 0
        want_r = UNITS if (pipelined and after) or (not pipelined and not after) else 0
        got = (
            len(kinds(forward, gather)),
            len(kinds(backward, gather)),
            len(kinds(backward, reduce)),
        )
        what = "after the last backward" if after else f"micro-batch {k + 1}"
        print(
            f"{label}, {what}: forward gathers {got[0]}, backward gathers "
            f"{got[1]}, reductions {got[2]} (amp's rules: {want_fg}, {want_bg}, {want_r})"
        )
        if got != (want_fg, want_bg, want_r):
            failures.append(f"{label} {what}: {got}")
        if any(x[1] != torch.bfloat16 for x in kinds(forward + backward, gather)):
            failures.append(f"{label}: a gather not in bf16")
        if any(x[1] != torch.float32 for x in kinds(backward, reduce)):
            failures.append(f"{label}: a reduction not in fp32")
        if forward and any(x[0] != gather for x in forward):
            failures.append(f"{label}: a reduction in the forward")
        if sharded and not pipelined and not after:
            # Each unit's backward gather (prefetched one unit ahead) comes
            # before the reduction of the unit whose backward runs before.
            order = ["g" if x[0] == gather else "r" for x in backward]
            want = ["g"] + ["r", "g"] * (UNITS - 2) + ["r", "r"]
            if order != want:
                failures.append(f"{label} {what}: backward order {order}")


def rank_main(rank, world, queue):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="29563")
    dist.init_process_group("gloo", rank=rank, world_size=world)
    for name in ("all_gather_single", "reduce_scatter_single", "all_reduce"):
        setattr(dist, name, logged(name, getattr(dist, name)))
    torch.manual_seed(0)
    cfg = AutoConfig.for_model(**CONFIG)
    out = {}
    for sharded in (True, False):
        if sharded:
            mesh = init_device_mesh("cpu", (world,), mesh_dim_names=("fsdp",))
        else:
            mesh = init_device_mesh("cpu", (world, 1), mesh_dim_names=("dp_replicate", "fsdp"))
        for pipelined in (False, True):
            out[(sharded, pipelined)] = run(mesh, cfg, pipelined)
    if rank == 0:
        queue.put({k: [(f, b) for f, b in v] for k, v in out.items()})
    dist.destroy_process_group()


def main():
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=rank_main, args=(r, 2, queue)) for r in range(2)]
    for p in procs:
        p.start()
    results = queue.get(timeout=600)
    for p in procs:
        p.join()
    failures = []
    for (sharded, pipelined), passes in results.items():
        label = ("sharded" if sharded else "replicated") + (
            ", pipelined" if pipelined else ", one stage"
        )
        check(label, passes, sharded, pipelined, failures)
    if failures:
        print("differs from amp's rules:", *failures, sep="\n  ")
        sys.exit(1)
    print("FSDP2 runs the collectives amp prices, in every mode")


if __name__ == "__main__":
    main()

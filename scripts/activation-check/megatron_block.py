"""What Megatron-LM's own transformer block keeps for its backward, on the CPU, against amp.

    MEGATRON_LM=DIR python scripts/activation-check/megatron_block.py --amp target/release/amp [--tp 1,2,4]

Builds one `TransformerLayer` of Megatron Core with its local (non-Transformer-Engine) layer
spec (`get_gpt_layer_local_spec`: Megatron's own LayerNorm, parallel linears, bias-dropout-add
and `DotProductAttention`, the explicit attention amp prices with `--attention explicit`) on
each rank of a tensor-parallel group (one process a rank, gloo), runs its forward on a bf16
input of shape [s, b, h] under a saved-tensors hook, and sums on rank 0 the bytes of every
distinct storage saved for the backward except the parameters'. amp's figure is the difference
between `amp eval --engine megatron --attention explicit` of a one-stage plan at that tp of a
two-block and a one-block GPT-2-shaped config of the same width, heads and dropout (the first
GPU's activations per sample, micro-batch 8, read from `--json`). Without sequence parallelism
(Megatron's local spec refuses it: its torch LayerNorm has no sequence-parallel path), so the
rows check what stays whole on every rank: the norms' and the first projections' inputs and the
dropout masks, Korthikanti et al.'s `10 s h` of `s h (10 + 24 / t + 5 a s / (h t))`.

Two things differ on the CPU, and the script accounts for each from the tensors themselves:
- a CPU dropout keeps its mask as a tensor of the input's type (`input * noise`), where CUDA's
  fused dropout keeps a bool mask: saved tensors holding only 0 and 1 / (1 - p) are counted at
  one byte an element, as on a GPU;
- Megatron's softmax has a fused CUDA kernel (`FusedScaleMaskSoftmax`, used on a GPU where its
  extension is installed and the shape allows: key length 16-4096, ...) that keeps its 16-bit
  output, and a PyTorch path (the CPU's, and a GPU's elsewhere) that with
  `attention_softmax_in_fp32` (Megatron's default) keeps an fp32 output and a 16-bit copy. The
  rows with `softmax_in_fp32=False` keep what the fused kernel keeps; those with True what the
  PyTorch path keeps.

Megatron Core calls CUDA in a few places a CPU forward reaches (its global memory buffer, the
default causal mask, the CUDA RNG tracker's fork); the script replaces those three with CPU
equivalents before building the layer, and changes nothing in what the layer computes or saves.
Needs torch (2.x) and a Megatron-LM checkout; no GPU, no Transformer Engine, no Apex.
"""

import argparse
import contextlib
import functools
import json
import os
import socket
import subprocess
import sys
import tempfile

import torch
import torch.multiprocessing as mp


def megatron_layer(hidden, heads, dropout, softmax_in_fp32, tp):
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
    from megatron.core.transformer.transformer_config import TransformerConfig
    from megatron.core.transformer.transformer_layer import TransformerLayer

    config = TransformerConfig(
        num_layers=1,
        hidden_size=hidden,
        num_attention_heads=heads,
        use_cpu_initialization=True,
        bf16=True,
        params_dtype=torch.bfloat16,
        hidden_dropout=dropout,
        attention_dropout=dropout,
        attention_softmax_in_fp32=softmax_in_fp32,
        tensor_model_parallel_size=tp,
    )
    return TransformerLayer(config, get_gpt_layer_local_spec().submodules).to(torch.bfloat16)


def kept_bytes_per_sample(layer, seq, batch, dropout):
    """Bytes of the distinct storages the forward saves for the backward, per sample, with
    dropout masks counted at one byte an element."""
    params = {p.untyped_storage().data_ptr() for p in layer.parameters()}
    seen, total = set(), 0.0
    scale = 1.0 / (1.0 - dropout) if dropout > 0 else None

    def is_mask(t):
        if scale is None or not t.is_floating_point() or t.numel() == 0:
            return False
        values = t.float()
        return bool(torch.all((values == 0) | (torch.abs(values - scale) < 1e-2 * scale)))

    def pack(t):
        nonlocal total
        storage = t.untyped_storage()
        if storage.data_ptr() in params or storage.data_ptr() in seen:
            return t
        seen.add(storage.data_ptr())
        total += storage.nbytes() / t.element_size() if is_mask(t) else storage.nbytes()
        return t

    x = torch.randn(seq, batch, layer.config.hidden_size, dtype=torch.bfloat16, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        layer(x, attention_mask=None)
    # The causal mask Megatron builds once and caches is the model's, not a sample's.
    return (total - seq * seq) / batch


def amp_block_bytes_per_sample(amp, hidden, heads, seq, dropout, tp):
    """amp's activations per sample of one block on the first rank of a tp group: a two-block
    less a one-block model, each one stage on one group."""
    per_sample = []
    with tempfile.TemporaryDirectory() as d:
        for layers in (1, 2):
            config = {
                "model_type": "gpt2", "n_embd": hidden, "n_head": heads, "n_layer": layers,
                "n_positions": max(1024, seq), "vocab_size": 1024, "activation_function": "gelu_new",
                "resid_pdrop": dropout, "embd_pdrop": dropout, "attn_pdrop": dropout,
                "tie_word_embeddings": False,
            }
            path = os.path.join(d, f"config{layers}.json")
            with open(path, "w") as f:
                json.dump(config, f)
            plan = os.path.join(d, "plan.json")
            with open(plan, "w") as f:
                group = [{"node": 0, "gpu": g} for g in range(tp)]
                stage = {"first_layer": 0, "end_layer": layers + 3, "replicas": [group]}
                json.dump({"micro_batch": 8, "num_micro_batches": 1, "stages": [stage]}, f)
            out = subprocess.run(
                [amp, "eval", plan, "--json", "--model", path, "--seq", str(seq), "--cluster",
                 f"1x{tp}xH100", "--engine", "megatron", "--attention", "explicit"],
                capture_output=True, text=True, check=True,
            ).stdout
            per_sample.append(json.loads(out)["memory"][0]["activations_bytes"] / 8)
    return per_sample[1] - per_sample[0]


def cpu_stand_ins():
    """Replaces the three CUDA calls a CPU forward of the layer reaches."""
    import megatron.core.fusions.fused_softmax as fused_softmax
    import megatron.core.tensor_parallel.random as random
    import megatron.core.transformer.utils as transformer_utils
    import megatron.core.utils as utils

    # The scratch buffer of the attention scores' product (beta = 0: never saved).
    utils.GlobalMemoryBuffer.get_tensor = lambda self, shape, dtype, name, **kw: torch.empty(shape, dtype=dtype)

    @functools.lru_cache(maxsize=None)
    def causal_mask(sq):
        return torch.triu(torch.ones(sq, sq), diagonal=1).bool()

    transformer_utils.get_default_causal_mask = causal_mask
    fused_softmax.get_default_causal_mask = causal_mask

    @contextlib.contextmanager
    def fork(self, name=None):
        yield

    random.CudaRNGStatesTracker.fork = fork


def rank_main(rank, a, port, tp, dropout, softmax_in_fp32, results):
    sys.path.insert(0, a.megatron)
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=tp)
    from megatron.core import parallel_state

    parallel_state.initialize_model_parallel(tp, 1)
    cpu_stand_ins()
    torch.manual_seed(0)
    layer = megatron_layer(a.hidden, a.heads, dropout, softmax_in_fp32, tp)
    kept = kept_bytes_per_sample(layer, a.seq, a.batch, dropout)
    if rank == 0:
        results.put(kept)
    torch.distributed.destroy_process_group()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def megatron_kept(a, tp, dropout, softmax_in_fp32):
    """What rank 0 of a tp group keeps, one process a rank."""
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    port = free_port()
    ranks = [ctx.Process(target=rank_main, args=(r, a, port, tp, dropout, softmax_in_fp32, results))
             for r in range(tp)]
    for r in ranks:
        r.start()
    kept = results.get(timeout=600)
    for r in ranks:
        r.join()
    return kept


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--amp", required=True)
    p.add_argument("--megatron", default=os.environ.get("MEGATRON_LM"), help="Megatron-LM checkout")
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--tp", default="1,2,4", help="tensor-parallel degrees, comma-separated")
    a = p.parse_args()
    if not a.megatron:
        sys.exit("megatron_block: give --megatron PATH (or MEGATRON_LM), a Megatron-LM checkout")
    sbh = a.seq * a.hidden
    print(f"torch {torch.__version__}; Megatron Core local spec, hidden {a.hidden}, {a.heads} heads, "
          f"sequence {a.seq}, {a.batch} samples, bf16; bytes per sample of one block on rank 0 "
          f"(s h = {sbh})")
    print("| tp | dropout | softmax (as on a GPU) | Megatron keeps | amp predicts | amp / Megatron |")
    print("|---|---|---|---|---|---|")
    for tp in [int(t) for t in a.tp.split(",")]:
        for dropout in (0.1, 0.0):
            amp = amp_block_bytes_per_sample(a.amp, a.hidden, a.heads, a.seq, dropout, tp)
            for softmax_in_fp32 in (False, True):
                kept = megatron_kept(a, tp, dropout, softmax_in_fp32)
                kind = "PyTorch path, fp32" if softmax_in_fp32 else "fused kernel, 16-bit"
                print(f"| {tp} | {dropout} | {kind} | {kept:,.0f} ({kept / sbh:.2f} s h) "
                      f"| {amp:,.0f} ({amp / sbh:.2f} s h) | {amp / kept:.3f} |", flush=True)


if __name__ == "__main__":
    main()

"""A Hugging Face causal LM wrapped in FSDP2 as torchtitan wraps a decoder.

torchtitan/distributed/fsdp.py `apply_fsdp_to_decoder`: the embedding, the
[final norm, projection] pair and each block are units, with bf16 parameters
in the compute and fp32 reductions; units reshard after their forward in one
stage (torchtitan's default policy) and not in a pipeline, but the [norm,
projection] unit, which never does. Shared by `fsdp.py` and
`fsdp_traffic.py`.
"""

import torch
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard


def wrap_as_torchtitan(m, mesh, pipelined):
    """`m` (a `*ForCausalLM`) wrapped in place over `mesh`; returns it."""
    policy = MixedPrecisionPolicy(
        param_dtype=torch.bfloat16, reduce_dtype=torch.float32, cast_forward_inputs=False
    )
    kw = {"mesh": mesh, "mp_policy": policy}
    fully_shard(m.model.embed_tokens, reshard_after_forward=not pipelined, **kw)
    fully_shard([m.model.norm, m.lm_head], reshard_after_forward=False, **kw)
    for block in m.model.layers:
        fully_shard(block, reshard_after_forward=not pipelined, **kw)
    fully_shard(m, **kw)
    return m

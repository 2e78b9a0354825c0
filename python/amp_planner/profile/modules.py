"""PyTorch modules for amp's layer kinds: one tensor-parallel rank's slice.

Each module is what one rank of a Megatron-style tensor-parallel group runs
for one entry of amp's layer list (as AMP's profiler does: the slice is
measured on one device, without the group's all-reduces, which amp's cost
model adds on the group's real links):

- ``embedding``: the vocabulary-parallel token embedding (``vocab / tp``
  rows), learned positions, OPT-350M's input projection, BERT's token types
  and norm, or a ViT's patch embedding, class token and positions;
- ``transformer_block``: pre-norm attention with ``heads / tp`` query heads
  and ``kv_heads / tp`` key/value heads (column-parallel QKV, row-parallel
  output projection) and the MLP with ``ffn / tp`` columns (gated for
  SwiGLU models, GeLU-gated for Gemma), Qwen3's and Gemma 3's norms on
  each head's query and key, Gemma 3's norms on the branches' outputs;
- ``other``: the final norm and output-side projection (``final_norm*``),
  BERT's pooler and MLM transform, or a ViT's classifier;
- ``vocab_projection``: the logits of ``vocab / tp`` columns and the loss.

At ``tp = 1`` every module holds exactly the parameters amp counts for the
layer (tested).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, Tuple

import torch
from torch import nn
from torch.nn import functional as F


def _div(n: int, tp: int, what: str) -> int:
    if n % tp:
        raise ValueError(f"{what} = {n} is not divisible by tp = {tp}")
    return n // tp


class RMSNorm(nn.Module):
    def __init__(self, h: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(h))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def _norm(arch: Dict[str, Any], h: int) -> nn.Module:
    return nn.LayerNorm(h) if arch["norm"] == "layer_norm" else RMSNorm(h)


class Embedding(nn.Module):
    def __init__(self, arch: Dict[str, Any], seq: int, tp: int) -> None:
        super().__init__()
        h = arch["hidden"]
        e = arch["embed_dim"] or h
        self.kind = arch["family"]["kind"]
        self.seq = seq
        self.p = 0.1 if arch["dropout"] else 0.0
        if self.kind == "vit":
            fam = arch["family"]
            self.patch = nn.Conv2d(fam["channels"], h, fam["patch"], stride=fam["patch"])
            self.cls = nn.Parameter(torch.zeros(1, 1, h))
            self.pos_table = nn.Parameter(torch.zeros(1, seq, h))
            return
        self.vocab_slice = math.ceil(arch["vocab"] / tp)
        self.tok = nn.Embedding(self.vocab_slice, e)
        self.pos = nn.Embedding(arch["positions"], h) if arch["positions"] else None
        self.proj = nn.Linear(e, h, bias=False) if e != h else None
        if self.kind == "bert":
            self.types = nn.Embedding(2, h)
            self.norm = _norm(arch, h)
        # Gemma scales its embeddings by the square root of the hidden size.
        self.scale = math.sqrt(h) if arch.get("model_type", "").startswith("gemma") else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "vit":
            y = self.patch(x).flatten(2).transpose(1, 2)
            y = torch.cat([self.cls.expand(y.shape[0], -1, -1), y], dim=1) + self.pos_table
            return F.dropout(y, self.p, self.training)
        y = self.tok(x)
        if self.scale is not None:
            y = y * self.scale
        if self.proj is not None:
            y = self.proj(y)
        if self.pos is not None:
            y = y + self.pos(torch.arange(x.shape[1], device=x.device))
        if self.kind == "bert":
            y = self.norm(y + self.types(torch.zeros_like(x)))
        return F.dropout(y, self.p, self.training)


class Block(nn.Module):
    def __init__(self, arch: Dict[str, Any], seq: int, tp: int) -> None:
        super().__init__()
        h, d = arch["hidden"], arch["head_dim"]
        self.heads = _div(arch["heads"], tp, "attention heads")
        # Megatron replicates key/value heads when tp exceeds their number.
        self.kv = max(arch["kv_heads"] // tp, 1)
        self.d = d
        self.causal = arch["family"]["kind"] == "decoder"
        self.p = 0.1 if arch["dropout"] else 0.0
        f = _div(arch["ffn"], tp, "FFN size")
        self.norm1 = _norm(arch, h)
        self.qkv = nn.Linear(h, (self.heads + 2 * self.kv) * d, bias=arch["qkv_bias"])
        # Qwen3 normalises each head's query and key.
        self.qk_norm = arch.get("qk_norm", False)
        if self.qk_norm:
            self.q_norm, self.k_norm = RMSNorm(d), RMSNorm(d)
        self.out = nn.Linear(self.heads * d, h, bias=arch["out_bias"])
        self.norm2 = _norm(arch, h)
        self.gated = arch["gated"]
        self.geglu = arch.get("geglu", False)
        # Gemma 3 normalises each branch's output before the residual add.
        self.post_norms = arch.get("post_norms", False)
        if self.post_norms:
            self.post_attn_norm, self.post_mlp_norm = _norm(arch, h), _norm(arch, h)
        self.up = nn.Linear(h, (2 if self.gated else 1) * f, bias=arch["mlp_bias"])
        self.down = nn.Linear(f, h, bias=arch["mlp_bias"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        q, k, v = self.qkv(self.norm1(x)).split(
            [self.heads * self.d, self.kv * self.d, self.kv * self.d], dim=-1
        )
        q = q.view(b, s, self.heads, self.d).transpose(1, 2)
        k = k.view(b, s, self.kv, self.d).transpose(1, 2)
        v = v.view(b, s, self.kv, self.d).transpose(1, 2)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        if self.kv != self.heads:
            k = k.repeat_interleave(self.heads // self.kv, dim=1)
            v = v.repeat_interleave(self.heads // self.kv, dim=1)
        a = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.p if self.training else 0.0, is_causal=self.causal
        )
        a = self.out(a.transpose(1, 2).reshape(b, s, -1))
        if self.post_norms:
            a = self.post_attn_norm(a)
        x = x + F.dropout(a, self.p, self.training)
        u = self.up(self.norm2(x))
        if self.gated:
            g, u = u.chunk(2, dim=-1)
            u = (F.gelu(g, approximate="tanh") if self.geglu else F.silu(g)) * u
        else:
            u = F.gelu(u)
        u = self.down(u)
        if self.post_norms:
            u = self.post_mlp_norm(u)
        return x + F.dropout(u, self.p, self.training)


class Final(nn.Module):
    """The final norm and output-side transforms (amp's ``final_norm*`` layer)."""

    def __init__(self, arch: Dict[str, Any], seq: int, tp: int) -> None:
        super().__init__()
        h = arch["hidden"]
        e = arch["embed_dim"] or h
        self.kind = arch["family"]["kind"]
        self.norm = _norm(arch, h) if arch["final_norm"] else None
        self.proj = nn.Linear(h, e, bias=False) if self.kind == "decoder" and e != h else None
        if self.kind == "bert":
            self.pooler = nn.Linear(h, h)
            self.transform = nn.Linear(h, h)
            self.transform_norm = _norm(arch, h)
            self.decoder_bias = nn.Parameter(torch.zeros(arch["vocab"]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.norm is not None:
            x = self.norm(x)
        if self.proj is not None:
            x = self.proj(x)
        if self.kind == "bert":
            pooled = torch.tanh(self.pooler(x[:, 0]))
            x = self.transform_norm(F.gelu(self.transform(x))) + 0 * pooled.unsqueeze(1)
        return x


class VocabProjection(nn.Module):
    """Logits of one rank's vocabulary slice, and the loss on them."""

    def __init__(self, arch: Dict[str, Any], seq: int, tp: int) -> None:
        super().__init__()
        e = arch["embed_dim"] or arch["hidden"]
        self.vocab_slice = math.ceil(arch["vocab"] / tp)
        self.proj = nn.Linear(e, self.vocab_slice, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.proj(x).float()
        target = torch.zeros(x.shape[:-1], dtype=torch.long, device=x.device)
        return F.cross_entropy(logits.flatten(0, 1), target.flatten())


class Classifier(nn.Module):
    """A ViT's classification head on the class token, and the loss."""

    def __init__(self, arch: Dict[str, Any], seq: int, tp: int) -> None:
        super().__init__()
        self.head = nn.Linear(arch["hidden"], arch["family"]["classes"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.head(x[:, 0]).float()
        target = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        return F.cross_entropy(logits, target)


def build(
    layer: Dict[str, Any], arch: Dict[str, Any], seq: int, tp: int
) -> Tuple[nn.Module, Callable[[int, torch.device, torch.dtype], torch.Tensor]]:
    """The module for one amp layer and a function making its input for a
    micro-batch (token ids, images, or hidden states)."""
    kind, name = layer["kind"], layer["name"]
    h = arch["hidden"]
    e = arch["embed_dim"] or h

    def hidden(width: int) -> Callable[[int, torch.device, torch.dtype], torch.Tensor]:
        def make(mb: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
            return torch.randn(mb, seq, width, device=device, dtype=dtype, requires_grad=True)

        return make

    if kind == "embedding":
        module: nn.Module = Embedding(arch, seq, tp)
        if arch["family"]["kind"] == "vit":
            fam = arch["family"]

            def images(mb: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
                return torch.randn(
                    mb, fam["channels"], fam["image"], fam["image"], device=device, dtype=dtype
                )

            return module, images
        vocab_slice = module.vocab_slice

        def tokens(mb: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
            return torch.randint(0, vocab_slice, (mb, seq), device=device)

        return module, tokens
    if kind == "transformer_block":
        return Block(arch, seq, tp), hidden(h)
    if kind == "vocab_projection":
        return VocabProjection(arch, seq, tp), hidden(e)
    if kind == "other" and name.startswith("final_norm"):
        return Final(arch, seq, tp), hidden(h)
    if kind == "other" and name == "classifier":
        return Classifier(arch, seq, tp), hidden(h)
    raise ValueError(f"no PyTorch module for amp layer `{name}` (kind {kind})")

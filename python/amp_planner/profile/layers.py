"""Measuring amp's layers with PyTorch and writing amp's profile format."""

from __future__ import annotations

import json
import math
import re
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

from .. import AmpError, _amp
from .. import layers as amp_layers
from .modules import build

# amp-core's profile.rs: entries whose source starts with this were measured
# on one tensor-parallel rank's slice on one device (computation only).
SLICE_SOURCE_PREFIX = "slice:"


@dataclass
class LayerMeasurement:
    """One layer at one (tp, micro-batch): seconds and bytes."""

    forward_s: float
    backward_s: float
    optimizer_s: float
    saved_activation_bytes: int


@dataclass
class Entry:
    """One profile entry: every layer at one (tp, micro-batch)."""

    tp: int
    micro_batch: int
    layers: List[LayerMeasurement] = field(default_factory=list)


@dataclass
class LayerProfile:
    gpu: str
    device_name: str
    dtype: str
    model: Dict[str, Any]
    entries: List[Entry]

    @property
    def precision(self) -> str:
        """amp's name of the number format the times hold in."""
        return {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}[self.dtype]


class _Timer:
    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def time(
        self,
        fn: Callable[[], Any],
        warmup: int,
        reps: int,
        before: Optional[Callable[[], Any]] = None,
    ) -> float:
        """Median seconds of ``fn`` over ``reps`` runs after ``warmup``;
        ``before`` runs untimed before each."""
        for _ in range(warmup):
            if before is not None:
                before()
            fn()
        samples = []
        for _ in range(reps):
            if before is not None:
                before()
            self.sync()
            if self.cuda:
                start = torch.cuda.Event(enable_timing=True)
                end = torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                torch.cuda.synchronize()
                samples.append(start.elapsed_time(end) / 1e3)
            else:
                t0 = time.perf_counter()
                fn()
                samples.append(time.perf_counter() - t0)
        return statistics.median(samples)


def _saved_bytes(module: torch.nn.Module, x: torch.Tensor) -> int:
    """Bytes the forward keeps for the backward, parameters excluded."""
    params = {p.data_ptr() for p in module.parameters()}
    seen = set()
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        key = (t.data_ptr(), tuple(t.shape), t.dtype)
        if t.data_ptr() not in params and key not in seen:
            seen.add(key)
            total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        module(x)
    return total


def measure_layer(
    module: torch.nn.Module,
    make_input: Callable[[int, torch.device, torch.dtype], torch.Tensor],
    micro_batch: int,
    device: torch.device,
    dtype: torch.dtype,
    warmup: int,
    reps: int,
) -> LayerMeasurement:
    """Forward and backward seconds (medians, each timed on its own) and the
    bytes saved for the backward of one micro-batch through ``module``."""
    timer = _Timer(device)
    x = make_input(micro_batch, device, dtype)
    with torch.no_grad():
        probe = module(x)
    grad = None if probe.dim() == 0 else torch.randn_like(probe)
    del probe

    def forward() -> None:
        module(x)

    fwd = timer.time(forward, warmup, reps)

    outputs: List[torch.Tensor] = []

    def prepare() -> None:
        outputs.append(module(x))
        timer.sync()

    def backward() -> None:
        y = outputs.pop()
        if grad is None:
            y.backward()
        else:
            y.backward(grad)

    bwd = timer.time(backward, warmup, reps, before=prepare)
    module.zero_grad(set_to_none=True)
    saved = _saved_bytes(module, x)
    return LayerMeasurement(fwd, bwd, 0.0, saved)


def measure_optimizer(
    module: torch.nn.Module, device: torch.device, warmup: int, reps: int, fused: bool = False
) -> float:
    """Seconds of one AdamW step over the module's weights, on fp32 copies
    (mixed-precision training steps fp32 master weights and moments): the
    multi-tensor step, or with ``fused`` the fused one."""
    master = [
        torch.zeros(p.shape, dtype=torch.float32, device=p.device, requires_grad=True)
        for p in module.parameters()
        if p.requires_grad
    ]
    if not master:
        return 0.0
    for p in master:
        p.grad = torch.zeros_like(p)
    opt = torch.optim.AdamW(master, lr=1e-4, fused=True if fused else None)
    timer = _Timer(device)
    return timer.time(opt.step, max(warmup, 1), reps)


def _tp_problem(arch: Dict[str, Any], tp: int) -> Optional[str]:
    if arch["heads"] % tp:
        return f"{arch['heads']} attention heads are not divisible by {tp}"
    if arch["ffn"] % tp:
        return f"the FFN size {arch['ffn']} is not divisible by {tp}"
    return None


def _signature(layer: Dict[str, Any]) -> Tuple[Any, ...]:
    """Layers with equal signatures are the same module (the blocks)."""
    return (
        layer["kind"],
        layer["name"] if layer["kind"] != "transformer_block" else "",
        layer["params"],
        layer["output_elems_per_sample"],
        layer.get("forward_flops_per_sample"),
    )


def _measure_entry(
    m: Dict[str, Any],
    arch: Dict[str, Any],
    s: int,
    tp: int,
    mb: int,
    dev: torch.device,
    dt: torch.dtype,
    warmup: int,
    reps: int,
    opt_cache: Dict[Tuple[Any, ...], float],
    log: Callable[..., None],
    fused_adam: bool = False,
) -> Entry:
    entry = Entry(tp, mb)
    cache: Dict[Tuple[Any, ...], LayerMeasurement] = {}
    for layer in m["layers"]:
        sig = _signature(layer)
        if sig not in cache:
            module, make_input = build(layer, arch, s, tp)
            module = module.to(device=dev, dtype=dt).train()
            r = measure_layer(module, make_input, mb, dev, dt, warmup, reps)
            if sig not in opt_cache:
                opt_cache[sig] = measure_optimizer(module, dev, warmup, reps, fused_adam)
            r.optimizer_s = opt_cache[sig]
            cache[sig] = r
            log(
                f"tp {tp} micro-batch {mb} {layer['name']}: forward "
                f"{r.forward_s * 1e3:.3f} ms, backward {r.backward_s * 1e3:.3f} ms, "
                f"optimizer {r.optimizer_s * 1e3:.3f} ms, saved "
                f"{r.saved_activation_bytes / 2**20:.2f} MiB"
            )
            del module
        entry.layers.append(cache[sig])
    return entry


def profile_layers(
    model: Any,
    seq: Optional[int],
    micro_batches: Sequence[int],
    tps: Sequence[int],
    device: str = "cuda",
    gpu: Optional[str] = None,
    dtype: Optional[str] = None,
    warmup: Optional[int] = None,
    reps: Optional[int] = None,
    log: Callable[..., None] = lambda s, warning=False: None,
    fused_adam: bool = False,
) -> LayerProfile:
    """Measures every layer of amp's layer list for ``model`` on this machine.

    Identical layers (the transformer blocks) are measured once; the
    optimizer step is AdamW's multi-tensor one, or with ``fused_adam`` its
    fused one. Each
    (tp, micro-batch) becomes one profile entry; tp degrees the model's
    heads or FFN cannot be split by are skipped with a warning.
    """
    info = amp_layers(model, seq)
    arch = info["arch"]
    m = info["model"]
    if arch is None:
        raise AmpError(
            f"model `{m['name']}` has no architecture amp can build PyTorch modules from "
            "(a layer-list file or one of AMP's own models); profile a zoo model or a "
            "Hugging Face config"
        )
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise AmpError("--device cuda: no CUDA device is available (use --device cpu)")
    dt_name = dtype or ("bfloat16" if dev.type == "cuda" else "float32")
    dt = getattr(torch, dt_name)
    warmup = 3 if warmup is None else warmup
    reps = (10 if dev.type == "cuda" else 5) if reps is None else reps
    label, device_name = gpu_label(dev, gpu)
    s = m["shape"]["seq_len"]
    entries = []
    for tp in tps:
        why = _tp_problem(arch, tp)
        if why:
            log(f"warning: tp {tp} skipped: {why}", True)
            continue
        opt_cache: Dict[Tuple[Any, ...], float] = {}
        for mb in micro_batches:
            try:
                entries.append(
                    _measure_entry(
                        m, arch, s, tp, mb, dev, dt, warmup, reps, opt_cache, log, fused_adam
                    )
                )
            except torch.cuda.OutOfMemoryError:
                # amp extrapolates the missing micro-batch from the others.
                log(f"warning: tp {tp} micro-batch {mb} skipped: out of device memory", True)
                torch.cuda.empty_cache()
    if not entries:
        raise AmpError(
            f"nothing measured: no tensor-parallel degree of {list(tps)} can split "
            f"`{m['name']}`, or every micro-batch ran out of memory"
        )
    return LayerProfile(label, device_name, dt_name, m, entries)


def _candidates(name: str, memory_bytes: Optional[int]) -> List[str]:
    """Names to look the device up by in the catalog, most specific first:
    the whole name, without the vendor, its leading words, the first word
    with the memory size ("A100-80GB"), the first word."""
    words = [
        w for w in re.split(r"[\s_-]+", name) if w and w.upper() not in {"NVIDIA", "TESLA", "AMD"}
    ]
    out = [name, " ".join(words), "-".join(words)]
    for n in range(len(words) - 1, 1, -1):
        out += [" ".join(words[:n]), "-".join(words[:n])]
    if words and memory_bytes:
        out.append(f"{words[0]}-{round(memory_bytes / 2**30 / 8) * 8}GB")
    return out + words[:1]


def catalog_name(device_name: str, memory_bytes: Optional[int]) -> Optional[str]:
    """The catalog's name of a device as PyTorch names it
    ("NVIDIA A100-SXM4-80GB" -> "A100-80GB"), or None."""
    for c in _candidates(device_name, memory_bytes):
        try:
            return _amp.catalog_gpu(c)
        except AmpError:
            continue
    return None


def gpu_label(device: torch.device, gpu: Optional[str]) -> Tuple[str, str]:
    """The catalog's name for ``gpu`` or the detected device, and the
    device's own name."""
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        device_name, memory = props.name, props.total_memory
    else:
        device_name, memory = "cpu", None
    if gpu is not None:
        return _amp.catalog_gpu(gpu), device_name
    if device.type != "cuda":
        raise AmpError(
            "--device cpu needs --gpu NAME: the catalog GPU name the profile's times stand for"
        )
    label = catalog_name(device_name, memory)
    if label is not None:
        return label, device_name
    raise AmpError(
        f"the device `{device_name}` is not in amp's GPU catalog; pass --gpu NAME "
        f"({', '.join(g[0] for g in _amp.catalog_gpus())})"
    )


def _toml_list(values: Sequence[float]) -> str:
    return "[" + ", ".join(repr(float(v)) for v in values) + "]"


def to_toml(p: LayerProfile, command: str = "") -> str:
    """amp's profile format (crates/amp-core/src/profile.rs)."""
    lines = [
        f"# amp profile of `{p.model['name']}` (sequence {p.model['shape']['seq_len']}), "
        f"measured by amp_planner.profile on {p.device_name} in {p.dtype}.",
        "# Times are one tensor-parallel rank's slice on one device, without the group's",
        '# all-reduces (amp adds them on the cluster\'s links): source "slice: ...".',
    ]
    names = [layer["name"] for layer in p.model["layers"]]
    lines.append(f"# layers: {', '.join(names)}")
    if command:
        lines.append(f"# {command}")
    lines += [f'precision = "{p.precision}"', ""]
    for e in p.entries:
        lines += [
            "[[entries]]",
            f'gpu = "{p.gpu}"',
            f"tp = {e.tp}",
            f"micro_batch = {e.micro_batch}",
            f"forward_s = {_toml_list([x.forward_s for x in e.layers])}",
            f"backward_s = {_toml_list([x.backward_s for x in e.layers])}",
            f"optimizer_s = {_toml_list([x.optimizer_s for x in e.layers])}",
            f'source = "{SLICE_SOURCE_PREFIX} amp_planner.profile on {p.device_name}, {p.dtype}"',
            "# saved activation bytes per layer (one rank, whole micro-batch):",
            "# saved_activation_bytes = ["
            + ", ".join(str(x.saved_activation_bytes) for x in e.layers)
            + "]",
            "",
        ]
    return "\n".join(lines)


def measured_model(p: LayerProfile) -> Dict[str, Any]:
    """amp's layer list with the measured activations kept for the backward
    (``stored_activation_elems_per_sample``, in elements of the profile's
    activation format), from the tp-1 entry of the smallest micro-batch."""
    model = json.loads(json.dumps(p.model))
    ones = [e for e in p.entries if e.tp == 1]
    if not ones:
        return model
    e = min(ones, key=lambda e: e.micro_batch)
    elem = 4 if p.dtype == "float32" else 2
    for layer, x in zip(model["layers"], e.layers):
        layer["stored_activation_elems_per_sample"] = int(
            math.ceil(x.saved_activation_bytes / e.micro_batch / elem)
        )
    return model


def write(p: LayerProfile, out: Path, command: str = "") -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(to_toml(p, command))

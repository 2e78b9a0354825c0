"""Whole training iterations on one device, written as amp's runs file.

A per-layer profile says what each layer costs alone; how amp composes those
costs into an iteration (the optimizer step, the micro-batches of gradient
accumulation, the memory the whole job holds) is what a whole iteration
checks. :func:`measure_runs` trains amp's layer list of a model, built from
the same modules the layer profiler times, for a few iterations at each
micro-batch size on one device (tensor parallelism 1), and
:func:`write_runs` writes a folder that ``amp validate`` and ``amp fit``
read: the per-layer profile, one plan per micro-batch, and ``runs.toml``
with each run's median iteration time and memory reading (or that it ran
out of memory).

The training step is plain PyTorch, as amp prices a plan without an engine:
fp32 weights under ``torch.autocast`` to the profile's 16-bit format,
PyTorch's ``cross_entropy`` on fp32 logits, ``torch.optim.AdamW`` over
every parameter (its multi-tensor implementation on a GPU, or its fused one
with ``fused_adam``, which the runs file's ``[setup]`` then records).
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import statistics
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence, Tuple

import torch

from .. import AmpError, run_cli
from .layers import LayerProfile
from .layers import write as write_profile
from .modules import build


@dataclass
class IterationRun:
    """One measured run: a micro-batch size and what it measured."""

    micro_batch: int
    num_micro_batches: int
    #: Median seconds per iteration; ``None`` when it ran out of memory.
    iteration_s: Optional[float]
    #: The device's used memory after the timed iterations (what
    #: ``nvidia-smi`` reports: the CUDA context and all the caching
    #: allocator holds), MiB; ``None`` on a CPU or out of memory.
    memory_used_mib: Optional[float]
    #: ``torch.cuda.max_memory_allocated()``, MiB, for the record.
    max_allocated_mib: Optional[float]


def _step(
    modules: torch.nn.ModuleList,
    tokens: torch.Tensor,
    accumulate: int,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    dtype: torch.dtype,
) -> Callable[[], None]:
    autocast = dtype in (torch.bfloat16, torch.float16)

    def step() -> None:
        for _ in range(accumulate):
            with torch.autocast(device_type=device.type, dtype=dtype, enabled=autocast):
                x = tokens
                for m in modules:
                    x = m(x)
            x.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def _time(step: Callable[[], None], device: torch.device, warmup: int, reps: int) -> float:
    cuda = device.type == "cuda"
    for _ in range(warmup):
        step()
    samples = []
    for _ in range(reps):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        step()
        if cuda:
            torch.cuda.synchronize()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def _one_run(
    info: dict,
    mb: int,
    accumulate: int,
    dev: torch.device,
    dt: torch.dtype,
    warmup: int,
    reps: int,
    fused: bool,
) -> IterationRun:
    """One micro-batch size, in a frame of its own: the model, its
    optimizer state and the step's closure die with it."""
    arch, m = info["arch"], info["model"]
    built = [build(layer, arch, m["shape"]["seq_len"], 1) for layer in m["layers"]]
    modules = torch.nn.ModuleList([b[0] for b in built]).to(dev).train()
    tokens = built[0][1](mb, dev, dt)
    optimizer = torch.optim.AdamW(modules.parameters(), lr=1e-4, fused=True if fused else None)
    step = _step(modules, tokens, accumulate, optimizer, dev, dt)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    seconds = _time(step, dev, warmup, reps)
    used = allocated = None
    if dev.type == "cuda":
        free, total = torch.cuda.mem_get_info(dev)
        used = (total - free) / 2**20
        allocated = torch.cuda.max_memory_allocated(dev) / 2**20
    return IterationRun(mb, accumulate, seconds, used, allocated)


def _release(dev: torch.device) -> None:
    """Gives what earlier runs cached back to the device, so that the next
    reading holds only its own run."""
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.empty_cache()


def measure_runs(
    info: dict,
    micro_batches: Sequence[int],
    accumulate: int = 1,
    device: str = "cuda",
    dtype: str = "float32",
    warmup: int = 3,
    reps: int = 10,
    log: Callable[..., None] = lambda s, warning=False: None,
    fused_adam: bool = False,
) -> List[IterationRun]:
    """Trains the model of ``info`` (``amp_planner.layers``' result) for
    ``warmup + reps`` iterations of ``accumulate`` micro-batches at each
    micro-batch size; a size that runs out of device memory is recorded so."""
    dev = torch.device(device)
    dt = getattr(torch, dtype)
    runs = []
    for mb in micro_batches:
        _release(dev)
        out_of_memory = False
        try:
            run = _one_run(info, mb, accumulate, dev, dt, warmup, reps, fused_adam)
        except torch.cuda.OutOfMemoryError:
            # Outside the handler the exception, and the frames it holds,
            # are gone before the memory is given back.
            out_of_memory = True
        if out_of_memory:
            run = IterationRun(mb, accumulate, None, None, None)
            log(f"micro-batch {mb} x {accumulate}: out of device memory", True)
        else:
            log(
                f"micro-batch {mb} x {accumulate}: {run.iteration_s * 1e3:.3f} ms per iteration"
                + (f", {run.memory_used_mib:.0f} MiB used" if run.memory_used_mib else "")
            )
        runs.append(run)
    _release(dev)
    return runs


def _plan(num_layers: int, run: IterationRun) -> dict:
    """The one-device plan a run trained: every layer on (node 0, GPU 0)."""
    return {
        "micro_batch": run.micro_batch,
        "num_micro_batches": run.num_micro_batches,
        "stages": [
            {"first_layer": 0, "end_layer": num_layers, "replicas": [[{"node": 0, "gpu": 0}]]}
        ],
    }


def _accepts_fused_gelu(model: Any, seq: Optional[int]) -> bool:
    """Whether amp takes ``--gelu fused`` for the model (a GeLU MLP): the
    modules run ``F.gelu``, one kernel, where amp's default for GPT-2-style
    models is Hugging Face's ``gelu_new`` written out."""
    args = ["plan", "--model", str(model), "--cluster", "1x1xH100", "--global-batch", "1"]
    if seq is not None:
        args += ["--seq", str(seq)]
    code, _, _ = run_cli([*args, "--gelu", "fused", "-q", "--json", "--top", "1"])
    return code == 0


def write_runs(
    out: Path,
    model: Any,
    seq: Optional[int],
    profile: LayerProfile,
    runs: Sequence[IterationRun],
    command: str = "",
    fused_adam: bool = False,
) -> Path:
    """Writes ``out/profile.toml``, one ``out/plan-mbN.json`` per run and
    ``out/runs.toml``; returns the runs file's path. ``model`` must be what
    ``amp plan --model`` takes (a zoo name or a config file's path)."""
    out.mkdir(parents=True, exist_ok=True)
    write_profile(profile, out / "profile.toml", command)
    n = len(profile.model["layers"])
    # The folder stands alone: a model given as a file or a config dict is
    # written beside the runs file; a zoo name stays a name.
    if isinstance(model, Mapping):
        spec = "config.json"
        (out / spec).write_text(json.dumps(dict(model), indent=1) + "\n")
    elif isinstance(model, (str, os.PathLike)) and Path(model).is_file():
        spec = Path(model).name
        if Path(model).resolve() != (out / spec).resolve():
            shutil.copyfile(model, out / spec)
    else:
        spec = str(model)
    lines = [
        "# amp runs file: whole training iterations measured by amp_planner.profile --runs",
        f"# on {profile.device_name} in {profile.dtype}" + (f"; {command}" if command else ""),
        "# Each plan is priced with the per-layer profile measured beside it.",
        f"model = {json.dumps(spec)}",
    ]
    if seq is not None:
        lines.append(f"seq = {seq}")
    lines += [
        f'cluster = "1x1x{profile.gpu}"',
        'profile = ["profile.toml"]',
        # The modules run PyTorch's fused attention and F.gelu.
        'attention = "fused"',
    ]
    if _accepts_fused_gelu(out / spec if (out / spec).is_file() else spec, seq):
        lines.append('gelu = "fused"')
    if fused_adam:
        # The plans record no setup: this one fills theirs.
        lines += ["", "[setup]", 'optimizer_step = "fused"']
    for r in runs:
        name = f"plan-mb{r.micro_batch}.json"
        (out / name).write_text(json.dumps(_plan(n, r), indent=1) + "\n")
        lines += ["", "[[run]]", f'plan = "{name}"']
        if r.iteration_s is None:
            lines.append("out_of_memory = true")
            continue
        lines.append(f"iteration_s = {r.iteration_s!r}")
        if r.memory_used_mib is not None:
            lines.append(f"memory_used_mib = {r.memory_used_mib!r}")
        if r.max_allocated_mib is not None:
            lines.append(f"# torch.cuda.max_memory_allocated: {r.max_allocated_mib:.0f} MiB")
    path = out / "runs.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def profile_runs(
    model: Any,
    seq: Optional[int],
    micro_batches: Sequence[int],
    accumulate: int = 1,
    device: str = "cuda",
    gpu: Optional[str] = None,
    dtype: Optional[str] = None,
    warmup: Optional[int] = None,
    reps: Optional[int] = None,
    log: Callable[..., None] = lambda s, warning=False: None,
    fused_adam: bool = False,
) -> Tuple[LayerProfile, List[IterationRun]]:
    """The per-layer profile at tp 1 and the whole-iteration runs at each
    micro-batch size, on one device: ``(LayerProfile, [IterationRun])``."""
    from .. import layers as amp_layers
    from .layers import profile_layers

    if accumulate < 1:
        raise AmpError("--accumulate must be at least 1")
    prof = profile_layers(
        model, seq, micro_batches, [1], device, gpu, dtype, warmup, reps, log, fused_adam
    )
    dev = torch.device(device)
    runs = measure_runs(
        amp_layers(model, seq),
        micro_batches,
        accumulate,
        device,
        prof.dtype,
        3 if warmup is None else warmup,
        (10 if dev.type == "cuda" else 3) if reps is None else reps,
        log,
        fused_adam,
    )
    return prof, runs

"""Measuring the links at hand with ``torch.distributed`` and writing them
into amp's cluster format.

Run it as ``python -m amp_planner.profile --links --out cluster.toml`` on one
node (it starts one process per GPU, or ``--procs N`` CPU processes), or
under ``torchrun --nnodes N --nproc-per-node G -m amp_planner.profile
--links ...`` across nodes. It measures point-to-point bandwidth and
latency (ping-pong) between two GPUs of node 0 and between the first GPUs of
nodes 0 and 1, and the all-reduce bus bandwidth inside a node and across the
nodes' first GPUs.
"""

from __future__ import annotations

import datetime
import json
import os
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, Optional

import torch
import torch.distributed as dist


@dataclass
class LinkMeasurement:
    gbps: float
    latency_s: float


@dataclass
class LinkReport:
    gpu: str
    device_name: str
    nodes: int
    gpus_per_node: int
    backend: str
    intra_p2p: Optional[LinkMeasurement]
    intra_allreduce_bus_gbps: Optional[float]
    inter_p2p: Optional[LinkMeasurement]
    inter_allreduce_bus_gbps: Optional[float]

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _ping_pong(a: int, b: int, nbytes: int, reps: int, device: torch.device) -> Optional[float]:
    """One-way seconds of an ``nbytes`` message between ranks a and b
    (median of round trips / 2); None on other ranks."""
    rank = dist.get_rank()
    if rank not in (a, b):
        return None
    buf = torch.empty(max(nbytes // 4, 1), dtype=torch.float32, device=device)
    times = []
    for i in range(reps + 1):
        _sync(device)
        t0 = time.perf_counter()
        if rank == a:
            dist.send(buf, b)
            dist.recv(buf, b)
        else:
            dist.recv(buf, a)
            dist.send(buf, a)
        _sync(device)
        if i > 0:  # the first exchange sets up the connection
            times.append((time.perf_counter() - t0) / 2)
    return statistics.median(times)


def _p2p(a: int, b: int, big: int, reps: int, device: torch.device) -> Optional[LinkMeasurement]:
    small = _ping_pong(a, b, 4, reps, device)
    large = _ping_pong(a, b, big, reps, device)
    if small is None or large is None:
        return None
    # The large message's time less the latency; its whole time when the
    # latency is within the noise of it (slow links, small messages).
    transfer = large - small if large > 1.5 * small else large
    return LinkMeasurement(big * 8 / transfer / 1e9, small)


def _allreduce(group: Any, n: int, nbytes: int, reps: int, device: torch.device) -> float:
    """Bus bandwidth (Gbit/s) of a ring all-reduce of ``nbytes`` over ``n`` ranks."""
    buf = torch.ones(nbytes // 4, dtype=torch.float32, device=device)
    dist.all_reduce(buf, group=group)
    times = []
    for _ in range(reps):
        _sync(device)
        t0 = time.perf_counter()
        dist.all_reduce(buf, group=group)
        _sync(device)
        times.append(time.perf_counter() - t0)
    t = statistics.median(times)
    return 2 * (n - 1) / n * nbytes * 8 / t / 1e9


def measure(
    device_type: str, gpu: str, device_name: str, nbytes: int, reps: int, local_world: int
) -> Optional[LinkReport]:
    """Runs on every rank of an initialised process group; rank 0 returns
    the report."""
    rank, world = dist.get_rank(), dist.get_world_size()
    local_rank = rank % local_world
    device = torch.device(device_type, local_rank) if device_type == "cuda" else torch.device("cpu")
    if device_type == "cuda":
        torch.cuda.set_device(device)
    nodes = world // local_world
    node0 = list(range(local_world))
    leaders = [n * local_world for n in range(nodes)]
    # new_group is collective: every rank creates every group.
    g_node0 = dist.new_group(node0) if local_world > 1 else None
    g_leaders = dist.new_group(leaders) if nodes > 1 else None
    intra = _p2p(0, 1, nbytes, reps, device) if local_world > 1 else None
    dist.barrier()
    intra_ar = (
        _allreduce(g_node0, local_world, nbytes, reps, device)
        if g_node0 is not None and rank in node0
        else None
    )
    dist.barrier()
    inter = _p2p(0, local_world, nbytes, reps, device) if nodes > 1 else None
    dist.barrier()
    inter_ar = (
        _allreduce(g_leaders, nodes, nbytes, reps, device)
        if g_leaders is not None and rank in leaders
        else None
    )
    dist.barrier()
    if rank != 0:
        return None
    return LinkReport(
        gpu, device_name, nodes, local_world, dist.get_backend(), intra, intra_ar, inter, inter_ar
    )


def to_toml(r: LinkReport, command: str = "") -> str:
    """amp's cluster format: one node class, measured bandwidths in Gbit/s."""
    intra = r.intra_p2p.gbps if r.intra_p2p else None
    inter = r.inter_p2p.gbps if r.inter_p2p else None
    lines = [
        f"# Links measured by amp_planner.profile --links ({r.backend}) on {r.device_name}, "
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC.",
    ]
    if command:
        lines.append(f"# {command}")
    if r.intra_p2p:
        lines.append(
            f"# inside a node: point-to-point {r.intra_p2p.gbps:.3f} Gbit/s, latency "
            f"{r.intra_p2p.latency_s * 1e6:.1f} us; all-reduce bus bandwidth "
            f"{r.intra_allreduce_bus_gbps:.3f} Gbit/s over {r.gpus_per_node} devices"
        )
    if r.inter_p2p:
        lines.append(
            f"# between nodes: point-to-point {r.inter_p2p.gbps:.3f} Gbit/s, latency "
            f"{r.inter_p2p.latency_s * 1e6:.1f} us; all-reduce bus bandwidth "
            f"{r.inter_allreduce_bus_gbps:.3f} Gbit/s over {r.nodes} nodes"
        )
    else:
        lines.append("# one node: no inter-node link measured; inter_gbps repeats intra_gbps")
    intra_v = intra if intra is not None else (inter if inter is not None else 1.0)
    inter_v = inter if inter is not None else intra_v
    lines += [
        f'name = "measured-{r.nodes}x{r.gpus_per_node}x{r.gpu}"',
        "",
        "[[nodes]]",
        f'gpu = "{r.gpu}"',
        f"gpus = {r.gpus_per_node}",
        f"intra_gbps = {intra_v:.6g}",
        f"inter_gbps = {inter_v:.6g}",
    ]
    if r.nodes > 1:
        lines.append(f"count = {r.nodes}")
    return "\n".join(lines) + "\n"


def _spawned(local_rank: int, world: int, init_file: str, args: Dict[str, Any], out: str) -> None:
    backend = "nccl" if args["device_type"] == "cuda" else "gloo"
    dist.init_process_group(
        backend, init_method=f"file://{init_file}", rank=local_rank, world_size=world
    )
    try:
        report = measure(local_world=world, **args)
        if report is not None:
            Path(out).write_text(json.dumps(report.to_dict()))
    finally:
        dist.destroy_process_group()


def profile_links(
    device_type: str,
    gpu: str,
    device_name: str,
    nbytes: int,
    reps: int,
    procs: Optional[int] = None,
) -> Optional[LinkReport]:
    """Measures the links: under torchrun, on the process group it set up
    (rank 0 gets the report, other ranks None); otherwise by starting one
    process per local GPU (or ``procs`` CPU processes) on this node."""
    args = dict(device_type=device_type, gpu=gpu, device_name=device_name, nbytes=nbytes, reps=reps)
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        backend = "nccl" if device_type == "cuda" else "gloo"
        dist.init_process_group(backend)
        try:
            local_world = int(os.environ.get("LOCAL_WORLD_SIZE", dist.get_world_size()))
            return measure(local_world=local_world, **args)  # type: ignore[arg-type]
        finally:
            dist.destroy_process_group()
    n = procs or (torch.cuda.device_count() if device_type == "cuda" else 2)
    if n < 2:
        raise RuntimeError("measuring links needs at least 2 processes (GPUs or --procs)")
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory(prefix="amp_links_") as d:
        init_file = os.path.join(d, "init")
        out = os.path.join(d, "report.json")
        mp.spawn(_spawned, args=(n, init_file, args, out), nprocs=n, join=True)
        data = json.loads(Path(out).read_text())
    for k in ("intra_p2p", "inter_p2p"):
        if data[k] is not None:
            data[k] = LinkMeasurement(**data[k])
    return LinkReport(**data)

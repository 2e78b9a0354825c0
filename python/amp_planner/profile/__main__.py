"""``python -m amp_planner.profile``: measure layers (default) or links (--links)."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import List, Optional


def _ints(text: str) -> List[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"`{text}` is not a comma-separated list of integers"
        ) from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"`{text}`: give positive integers, e.g. 1,2,4")
    return values


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m amp_planner.profile",
        description=(
            "Measure amp's layers of a model on this machine's GPU (or CPU) with PyTorch and "
            "write an amp profile (amp plan --profile FILE), or, with --links, measure the "
            "links between GPUs with torch.distributed and write an amp cluster file."
        ),
    )
    p.add_argument("--model", help="zoo name, Hugging Face config.json or amp layer list")
    p.add_argument("--seq", type=int, help="sequence length (zoo models, Hugging Face configs)")
    p.add_argument(
        "--micro-batches",
        type=_ints,
        default=[1, 2, 4, 8],
        help="micro-batch sizes to measure (default 1,2,4,8)",
    )
    p.add_argument(
        "--tp",
        type=_ints,
        help="tensor-parallel degrees: one rank's slice of each is measured (default 1,2,4,8; "
        "1 with --runs)",
    )
    p.add_argument(
        "--runs",
        action="store_true",
        help="also train whole iterations at each micro-batch size on this device and write "
        "--out as a folder amp validate and amp fit read: profile.toml, a plan per "
        "micro-batch and runs.toml with the measured times and memory",
    )
    p.add_argument(
        "--optimizer-step",
        choices=["foreach", "fused"],
        default="foreach",
        help="AdamW implementation to time and train with: PyTorch's multi-tensor default "
        "(foreach) or fused=True (default foreach); plan with the same --optimizer-step",
    )
    p.add_argument(
        "--accumulate",
        type=int,
        default=1,
        help="--runs: micro-batches per iteration (gradient accumulation; default 1)",
    )
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    p.add_argument(
        "--gpu",
        help="catalog GPU name to label the results with (default: the detected device)",
    )
    p.add_argument(
        "--dtype",
        choices=["float32", "bfloat16", "float16"],
        help="number format to measure in (default: bfloat16 on cuda, float32 on cpu); "
        "plan with the same --precision (fp32, bf16, fp16)",
    )
    p.add_argument("--warmup", type=int, help="untimed runs before timing (default 3)")
    p.add_argument("--reps", type=int, help="timed runs, median taken (default 10 cuda, 5 cpu)")
    p.add_argument(
        "--model-out",
        type=Path,
        help="also write amp's layer list with the measured activation sizes (JSON)",
    )
    p.add_argument("--links", action="store_true", help="measure links instead of layers")
    p.add_argument(
        "--procs", type=int, help="--links without torchrun: processes to start (default: GPUs)"
    )
    p.add_argument(
        "--message-mib", type=float, default=64.0, help="--links: message size in MiB (default 64)"
    )
    p.add_argument(
        "--out",
        type=Path,
        required=True,
        help="profile (.toml) or cluster file; with --runs, a folder",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = parser().parse_args(argv)
    try:
        import torch  # noqa: F401
    except ImportError:
        print("error: the profiler needs PyTorch: pip install torch", file=sys.stderr)
        return 1
    from .. import AmpError
    from . import layers, links

    command = "python -m amp_planner.profile " + " ".join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)
    )

    def log(line: str, warning: bool = False) -> None:
        if warning or not args.quiet:
            print(line, file=sys.stderr, flush=True)

    try:
        if args.links:
            import torch

            device = torch.device(args.device)
            label, device_name = layers.gpu_label(device, args.gpu)
            report = links.profile_links(
                args.device,
                label,
                device_name,
                int(args.message_mib * 2**20),
                args.reps or 10,
                args.procs,
            )
            if report is None:  # not rank 0 under torchrun
                return 0
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(links.to_toml(report, command))
            print(json.dumps(report.to_dict()))
            print(f"wrote {args.out}", file=sys.stderr)
            return 0
        if not args.model:
            print("error: --model is required (or --links)", file=sys.stderr)
            return 2
        # How every layer and run is measured, for either mode.
        measuring = dict(
            device=args.device,
            gpu=args.gpu,
            dtype=args.dtype,
            warmup=args.warmup,
            reps=args.reps,
            log=log,
            fused_adam=args.optimizer_step == "fused",
        )
        if args.runs:
            from . import iterations

            if args.tp not in (None, [1]):
                print(
                    "error: --runs trains on one device: its profile is at tp 1; drop --tp",
                    file=sys.stderr,
                )
                return 2
            prof, runs = iterations.profile_runs(
                args.model, args.seq, args.micro_batches, args.accumulate, **measuring
            )
            path = iterations.write_runs(
                args.out,
                args.model,
                args.seq,
                prof,
                runs,
                command,
                fused_adam=measuring["fused_adam"],
            )
            print(
                f"wrote {path}: {len(runs)} runs on {prof.gpu} "
                f"(amp validate {args.out}; amp fit {args.out})",
                file=sys.stderr,
            )
            return 0
        prof = layers.profile_layers(
            args.model, args.seq, args.micro_batches, args.tp or [1, 2, 4, 8], **measuring
        )
        layers.write(prof, args.out, command)
        if args.model_out:
            args.model_out.parent.mkdir(parents=True, exist_ok=True)
            args.model_out.write_text(json.dumps(layers.measured_model(prof), indent=1))
        print(f"wrote {args.out}: {len(prof.entries)} entries for {prof.gpu}", file=sys.stderr)
        return 0
    except (AmpError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Looks for plans `amp plan` refuses that `amp eval` says fit.

For every (tp, pp, dp, micro-batch) of amp's search space (tp inside a node)
of which `amp plan --top 100000` prints no plan, prices with `amp eval` every
split of the layers into pp stages (at most --max-splits of them, evenly
picked), its devices laid out node-major in the pp-dp-tp and (on several
nodes) dp-pp-tp rank orders, and reports each that fits: the search should
have found it. Prints one line per miss and a summary.

    scripts/plan-check/refused.py AMP "--model opt-1.3b --cluster 1x8xV100" \\
        --gpus-per-node 8 --nodes 1 --global-batch 64
"""

import argparse
import itertools
import json
import re
import subprocess
import sys
import tempfile


def run(amp, args):
    return subprocess.run([amp, *args], capture_output=True, text=True)


def evaluate(amp, plan, inputs):
    """`amp eval` of `plan` (a dict) with `inputs`, through a file: amp reads
    a plan file more than once, which a pipe does not allow."""
    with tempfile.NamedTemporaryFile("w", suffix=".json") as f:
        json.dump(plan, f)
        f.flush()
        return run(amp, ["eval", f.name, *inputs, "--json"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("amp", help="the amp binary")
    ap.add_argument("inputs", help="amp's model, cluster and setup flags, one string")
    ap.add_argument("--gpus-per-node", type=int, required=True)
    ap.add_argument("--nodes", type=int, default=1)
    ap.add_argument("--global-batch", type=int, required=True)
    ap.add_argument("--max-pp", type=int, default=8)
    ap.add_argument("--max-splits", type=int, default=3000)
    a = ap.parse_args()
    inputs = a.inputs.split()
    gpus = a.gpus_per_node * a.nodes
    gb = a.global_batch

    planned = run(a.amp, ["plan", *inputs, "--global-batch", str(gb), "--json", "--top", "100000"])
    found = set()
    if planned.returncode == 0:
        for p in json.loads(planned.stdout)["plans"]:
            found.add((p["tp"], p["pp"], p["dp"], p["micro_batch"]))

    # The model's layer count, from eval's error on a plan one layer too long.
    probe = {
        "micro_batch": 1,
        "num_micro_batches": gb,
        "stages": [{"first_layer": 0, "end_layer": 10**6, "replicas": [[{"node": 0, "gpu": 0}]]}],
    }
    err = evaluate(a.amp, probe, inputs).stderr
    n = int(re.search(r"model has (\d+) layers", err).group(1))

    def device(g):
        return {"node": g // a.gpus_per_node, "gpu": g % a.gpus_per_node}

    def rank(order, t, d, s, tp, dp, pp):
        return t + tp * d + tp * dp * s if order == "pp-dp-tp" else t + tp * s + tp * pp * d

    missed = evals = 0
    degrees = [d for d in (1, 2, 4, 8, 16) if d <= gpus]
    # amp's search keeps a tensor-parallel group inside a node, as AMP's does.
    tps = [d for d in degrees if a.gpus_per_node % d == 0]
    for tp, pp in itertools.product(tps, degrees):
        if pp > a.max_pp or pp > n or gpus % (tp * pp):
            continue
        dp = gpus // (tp * pp)
        for mb in (1, 2, 4, 8, 16, 32):
            if gb % (dp * mb) or (tp, pp, dp, mb) in found:
                continue
            splits = [[0, *cut, n] for cut in itertools.combinations(range(1, n), pp - 1)]
            if len(splits) > a.max_splits:
                splits = splits[:: len(splits) // a.max_splits]
            hit = None
            # On one node every order puts the same GPUs in each stage.
            for order in ("pp-dp-tp", "dp-pp-tp")[: 1 if a.nodes == 1 else 2]:
                for bounds in splits:
                    stages = [
                        {
                            "first_layer": bounds[s],
                            "end_layer": bounds[s + 1],
                            "replicas": [
                                [device(rank(order, t, d, s, tp, dp, pp)) for t in range(tp)]
                                for d in range(dp)
                            ],
                        }
                        for s in range(pp)
                    ]
                    plan = {
                        "micro_batch": mb,
                        "num_micro_batches": gb // (dp * mb),
                        "stages": stages,
                    }
                    e = evaluate(a.amp, plan, inputs)
                    evals += 1
                    if e.returncode == 0 and json.loads(e.stdout)["fits_in_memory"]:
                        hit = (order, bounds)
                        break
                if hit:
                    break
            if hit:
                missed += 1
                print(f"MISSED tp {tp} pp {pp} dp {dp} micro-batch {mb}: {hit[0]} {hit[1]} fits")
    print(
        f"{a.inputs}: {len(found)} shapes planned, {missed} refused that fit, {evals} evaluations"
    )
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())

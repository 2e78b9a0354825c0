"""A random sweep of `amp plan`'s flags, models and clusters, run as a user runs the binary.

    python3 scripts/cli-sweep/sweep.py --amp target/release/amp [--seed 1] [--runs 300]
    python3 scripts/cli-sweep/sweep.py --amp target/release/amp --network [--runs 100]
    python3 scripts/cli-sweep/sweep.py --amp target/release/amp --mutate ../shared/data/sailor

Each run draws a zoo model, a cluster shorthand (one to three GPU types, instance names too), a
global batch, an engine or none and up to three more options (setup flags, --search-setup,
--per-type-tp, --uneven-dp, --subsets, --objective cost, --sensitivity, --emit, --report, ...),
runs `amp plan --json`, and checks:

- the process ends with a plan or with `error: ...` on standard error, never a panic;
- every plan printed is valid: each stage starts where the last ended, each device is used by
  one pipeline rank (an interleaved plan's chunks share their rank's), the micro-batches add up
  to the global batch, and every device's peak is within its capacity;
- `amp eval` of the first plan, from its JSON, gives the same iteration time and a fit;
- `amp export` of it to the engine it was planned for ends with files or a clear refusal;
- a quarter of the runs again, under another rayon thread count: byte-identical output;
- a run with --subsets that finds no plan finds none without it either (the whole cluster is
  one of its subsets).

`--network` checks instead that a faster network never slows amp down: the same search on the
same nodes with four times the inter-node bandwidth finds a plan at least as fast, and the first
plan, priced on the faster network by `amp eval`, is no slower.

`--sailor DIR` (Sailor's data folder, e.g. ../shared/data/sailor) plans instead on Sailor's
scenarios: a model of its training/ files, nodes of its GPU kinds (cluster_config.json's GPUs per
node), its search options (--uneven-dp, --per-type-tp, --per-stage-tp, --fewer-replicas,
--subsets, --sensitivity); each plan checked as above, priced back by `amp eval --sailor-data`
and exported with `amp export --to sailor`, which must end with a file or a refusal.

`--mutate DIR` (a measured-data folder in the AMP artifact's layout or Sailor's, e.g.
../shared/data/sailor) checks amp's readers on damaged copies of it: each run copies the folder,
changes one file as a hand edit or a bad copy would (a JSON value replaced, a key dropped or
misspelt, a list entry dropped or doubled, a CSV cell emptied or garbled, a plan's layer index
mistyped, the file cut short or bytes overwritten), and runs `amp validate --runs --json` and
`amp fit` on it (and, in a Sailor folder, `amp eval` of a plan file with `--sailor-data`). Each
must end clearly; a validation that succeeds must price every run it reports at a positive,
finite time.

Prints each failure with its command, then a count of runs, plans and failures, and the most
common errors (to read for unclear ones); exits 1 on any failure.
"""

import argparse
import collections
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile

MODELS = [("gpt2", 1024), ("gpt2-medium", 1024), ("gpt3-350m", 2048), ("gpt3-1.3b", 2048), ("gpt3-6.7b", 2048),
          ("opt-350m", 2048), ("gpt-neo-2.7b", 2048), ("bert-large", 512), ("llama-3.2-1b", 4096),
          ("llama-3-8b", 4096), ("qwen3-0.6b", 4096), ("qwen3-8b", 4096), ("phi-3-mini", 4096),
          ("gemma-3-1b", 4096), ("mistral-7b", 4096), ("llama-3-70b", 4096), ("vit-l-16", None)]
GPUS = ["H100", "A100", "A100-80GB", "V100", "T4", "H200", "L4", "A10G", "L40S", "GH200", "RTX-3090", "MI300X",
        "B200"]
INSTANCES = ["p3.8xlarge", "g4dn.12xlarge", "p4d.24xlarge", "p5.48xlarge", "g5.48xlarge"]
ENGINES = ["megatron", "deepspeed", "torchtitan"]


def draw_cluster(rng, needs_network=False):
    if not needs_network and rng.random() < 0.25:
        return "+".join(f"{rng.choice([1, 2, 4])}x{rng.choice(INSTANCES)}" for _ in range(rng.choice([1, 2])))
    terms = []
    for _ in range(rng.choice([1, 1, 2, 3])):
        term = f"{rng.choice([1, 2, 4, 8])}x{rng.choice([1, 2, 4, 8])}x{rng.choice(GPUS)}"
        if needs_network or rng.random() < 0.3:
            term += "@{}Gbps"
        terms.append(term)
    return "+".join(terms)


def draw_options(rng):
    pick = rng.choice
    options = [
        ["--recompute", pick(["none", "selective", "full"])], ["--recompute"],
        ["--optimizer-sharding", pick(["zero1", "zero2", "zero3"])], ["--sequence-parallel"],
        ["--schedule", pick(["gpipe", "interleaved:2", "1f1b"])], ["--precision", pick(["bf16", "fp16", "fp8", "fp32"])],
        ["--search-setup", pick(["all", "recompute", "sp", "sharding", "interleaving"])], ["--per-type-tp"],
        ["--uneven-dp"], ["--per-stage-tp"], ["--fewer-replicas", "--per-type-tp", "--uneven-dp"], ["--subsets"],
        ["--compile"], ["--tp-comm-overlap"], ["--grad-reduce-in-bf16"], ["--overlap-allreduce"], ["--fp32-allreduce"],
        ["--pipeline-send", pick(["full", "scatter-gather"])], ["--stage-exchange", pick(["blocking", "lockstep"])],
        ["--block-kernels", pick(["fused", "eager"])], ["--attention", pick(["fused", "explicit"])],
        ["--optimizer-step", pick(["fused", "foreach"])], ["--cross-entropy", pick(["pytorch", "megatron"])],
        ["--calibration", pick(["neutral", "amp-t4", "sailor-gh200"])], ["--sensitivity"], ["--compare"],
        ["--objective", "cost"], ["--max-usd-per-hour", str(pick([5, 30, 100]))], ["--placement", "artifact"],
        ["--grad-reduce-barrier"], ["--backward-in-autocast"], ["--pipeline-receive", "host-staged"],
        ["--report", "{work}/report.html"], ["--emit", pick(ENGINES), "--out", "{work}/emit"],
    ]
    return without_repeats(rng.sample(options, rng.choice([0, 1, 1, 2, 3])))


def without_repeats(options):
    """The options' words, each flag once (clap refuses a flag given twice)."""
    out = []
    for option in options:
        if option[0] not in out and not (set(option) & {"--per-type-tp", "--uneven-dp"} & set(out)):
            out += option
    return out


class Sweep:
    def __init__(self, amp, work):
        self.amp, self.work = amp, work
        self.failures, self.errors = [], collections.Counter()

    def run(self, args, threads=None):
        env = dict(os.environ, RAYON_NUM_THREADS=threads) if threads else None
        try:
            p = subprocess.run([self.amp] + args, capture_output=True, text=True, timeout=600, env=env, check=False)
        except subprocess.TimeoutExpired:
            return None, "", "timed out after 600 s"
        return p.returncode, p.stdout, p.stderr

    def fail(self, what, args, detail=""):
        self.failures.append(what)
        print(f"FAIL {what}: amp {' '.join(args)}\n    {detail[:800]}", flush=True)

    def ended_clearly(self, args, rc, err):
        """A run that failed failed with an error line, never a panic."""
        if rc is None or "panicked" in err:
            self.fail("panic or hang", args, err)
            return False
        if rc != 0:
            lines = [line for line in err.splitlines() if line.startswith("error")]
            if not lines:
                self.fail("no error line", args, err)
            else:
                self.errors[re.sub(r"\d+(\.\d+)?", "N", lines[0])[:160]] += 1
            return False
        return True

    def check_plan(self, args, plan, global_batch):
        prev, owner = 0, {}
        pp = plan["pp"]
        for k, stage in enumerate(plan["stages"]):
            if stage["first_layer"] != prev:
                self.fail("stages leave a gap or overlap", args, str(plan["stage_boundaries"]))
            prev = stage["end_layer"]
            for replica in stage["replicas"]:
                for d in replica:
                    key = (d["node"], d["gpu"])
                    if owner.setdefault(key, k % pp) != k % pp or (len(plan["stages"]) == pp and k != owner[key]):
                        self.fail("a device used twice", args, str(key))
        counts = plan.get("replica_micro_batches")
        samples = sum(counts) * plan["micro_batch"] if counts else (
            plan["dp"] * plan["micro_batch"] * plan["num_micro_batches"])
        if samples != global_batch:
            self.fail("batch", args, f"{samples} samples for a global batch of {global_batch}")
        for m in plan["memory"]:
            if m["peak_bytes"] > m["capacity_bytes"]:
                self.fail("over memory", args, json.dumps(m))

    def eval_and_export(self, args, plan, inputs, engine):
        """`amp eval` of `plan` on `inputs` (the plan command's input flags) must give its time
        and a fit; `amp export --to engine` must end with files or a clear refusal."""
        path = os.path.join(self.work, "plan.json")
        with open(path, "w") as f:
            json.dump(plan, f)
        e_args = ["eval", path, "--json"] + inputs
        rc, out, err = self.run(e_args)
        if rc != 0:
            self.fail("amp eval of a plan amp printed fails", e_args, err)
            return
        e = json.loads(out)
        if abs(e["iteration_s"] - plan["predicted_iteration_s"]) > 1e-9 * max(1.0, plan["predicted_iteration_s"]):
            self.fail("amp eval prices it otherwise", args, f"{e['iteration_s']} != {plan['predicted_iteration_s']}")
        if not e["fits_in_memory"]:
            self.fail("amp eval finds it over memory", args)
        if engine:
            out_dir = os.path.join(self.work, "export")
            shutil.rmtree(out_dir, ignore_errors=True)
            x_args = ["export", path, "--to", engine, "--out", out_dir] + inputs
            rc, _, err = self.run(x_args)
            self.ended_clearly(x_args, rc, err)

    def flags(self, seed, runs):
        rng = random.Random(seed)
        ok = plans = 0
        for _ in range(runs):
            model, seq = rng.choice(MODELS)
            cluster = draw_cluster(rng).replace("{}", str(rng.choice([10, 50, 100, 400])))
            batch = rng.choice([1, 4, 8, 12, 16, 32, 64, 96, 128, 256])
            args = ["plan", "-q", "--json", "--top", "3", "--model", model, "--cluster", cluster,
                    "--global-batch", str(batch)]
            if seq:
                args += ["--seq", str(rng.choice([seq, seq // 2, 128, 1000]))]
            engine = rng.choice([None, None] + ENGINES)
            if engine:
                args += ["--engine", engine]
            args += [a.replace("{work}", self.work) for a in draw_options(rng)]
            rc, out, err = self.run(args)
            if not self.ended_clearly(args, rc, err):
                if "--subsets" in args and "no valid plan" in err:
                    # The subsets include the whole cluster.
                    whole = [a for a in args if a != "--subsets"]
                    if self.run(whole)[0] == 0:
                        self.fail("--subsets finds no plan where the whole cluster has one", args, err)
                continue
            ok += 1
            if rng.random() < 0.25:
                _, again, _ = self.run(args, threads=rng.choice(["1", "3"]))
                if again != out:
                    self.fail("output differs under another thread count", args)
            found = json.loads(out)
            for plan in found["plans"]:
                plans += 1
                self.check_plan(args, plan, batch)
            if found["plans"]:
                inputs = ["--model", model, "--cluster", cluster]
                if "--calibration" in args:
                    inputs += ["--calibration", args[args.index("--calibration") + 1]]
                self.eval_and_export(args, found["plans"][0], inputs, engine)
        return ok, plans

    def sailor(self, seed, runs, data):
        rng = random.Random(seed)
        with open(os.path.join(data, "cluster_config.json")) as f:
            kinds = {k: v["gpus_per_node"] for k, v in json.load(f).items() if isinstance(v, dict)}
        models = []
        for name in sorted(os.listdir(os.path.join(data, "training"))):
            with open(os.path.join(data, "training", name)) as f:
                models.append(json.load(f)["model"])
        ok = plans = 0
        for _ in range(runs):
            model = rng.choice(models)
            cluster = "+".join(f"{rng.choice([1, 2, 4, 8])}x{kinds[k]}x{k}"
                               for k in rng.sample(sorted(kinds), rng.choice([1, 2, 3])))
            args = ["plan", "-q", "--json", "--top", "3", "--sailor-data", data, "--model", model,
                    "--cluster", cluster]
            batch = None
            if rng.random() < 0.5:
                batch = rng.choice([32, 64, 128, 256, 1024])
                args += ["--global-batch", str(batch)]
            options = [["--uneven-dp"], ["--per-type-tp"], ["--per-stage-tp"], ["--subsets"],
                       ["--fewer-replicas", "--per-type-tp", "--uneven-dp"], ["--sensitivity"]]
            args += without_repeats(rng.sample(options, rng.choice([0, 1, 2])))
            rc, out, err = self.run(args)
            if not self.ended_clearly(args, rc, err):
                continue
            ok += 1
            found = json.loads(out)
            for plan in found["plans"]:
                plans += 1
                self.check_plan(args, plan, batch or found["global_batch"])
            if found["plans"]:
                inputs = ["--sailor-data", data, "--model", model, "--cluster", cluster]
                self.eval_and_export(args, found["plans"][0], inputs, "sailor")
        return ok, plans

    def mutate(self, seed, runs, data):
        rng = random.Random(seed)
        copy = os.path.join(self.work, "data")
        ok = priced = 0
        for _ in range(runs):
            shutil.rmtree(copy, ignore_errors=True)
            shutil.copytree(data, copy)
            files = sorted(os.path.join(d, f) for d, _, fs in os.walk(copy) for f in fs if f != "LICENSE")
            damage_file(rng, rng.choice(files))
            commands = [["validate", "--runs", "--json", copy], ["fit", copy]]
            plans = [f for f in files if os.path.basename(f).startswith("plan_config")]
            if plans:
                commands.append(["eval", rng.choice(plans), "--json", "--sailor-data", copy])
            for args in commands:
                rc, out, err = self.run(args)
                if not self.ended_clearly(args, rc, err):
                    continue
                ok += 1
                if args[0] == "validate":
                    for dataset in json.loads(out)["datasets"]:
                        for run in dataset["details"]:
                            t = run.get("predicted_s")
                            priced += 1
                            if t is None or not 0 < t < float("inf"):
                                self.fail("a run priced at no positive time", args, json.dumps(run))
        return ok, priced

    def network(self, seed, runs):
        rng = random.Random(seed)
        ok = plans = 0
        models = [m for m in MODELS if m[1] and m[0] not in ("llama-3-70b", "gpt3-6.7b")]
        for _ in range(runs):
            model, seq = rng.choice(models)
            shape = draw_cluster(rng, needs_network=True)
            gbps = rng.choice([1, 10, 25, 50, 100, 200])
            args = ["plan", "-q", "--json", "--top", "1", "--model", model, "--seq", str(seq),
                    "--global-batch", str(rng.choice([16, 32, 64, 128, 256]))]
            engine = rng.choice([None] + ENGINES)
            if engine:
                args += ["--engine", engine]
            if rng.random() < 0.3:
                args += ["--search-setup", "all"]
            slow, fast = shape.replace("{}", str(gbps)), shape.replace("{}", str(4 * gbps))
            rc, out, err = self.run(args + ["--cluster", slow])
            if not self.ended_clearly(args + ["--cluster", slow], rc, err):
                continue
            rc2, out2, err2 = self.run(args + ["--cluster", fast])
            if rc2 != 0:
                self.fail("a faster network finds no plan", args + ["--cluster", fast], err2)
                continue
            ok += 1
            t_slow = json.loads(out)["plans"][0]["predicted_iteration_s"]
            t_fast = json.loads(out2)["plans"][0]["predicted_iteration_s"]
            if t_fast > t_slow * (1 + 1e-9):
                self.fail("the best plan is slower on a faster network", args + ["--cluster", slow], f"{t_slow} -> {t_fast}")
            plan = json.loads(out)["plans"][0]
            plans += 1
            path = os.path.join(self.work, "plan.json")
            with open(path, "w") as f:
                json.dump(plan, f)
            e_args = ["eval", path, "--json", "--model", model, "--cluster", fast]
            rc3, out3, err3 = self.run(e_args)
            if rc3 != 0:
                self.fail("amp eval on the faster network fails", e_args, err3)
            elif json.loads(out3)["iteration_s"] > t_slow * (1 + 1e-9):
                self.fail("a plan is slower on a faster network", args + ["--cluster", slow],
                          f"{t_slow} -> {json.loads(out3)['iteration_s']}")
        return ok, plans


def damage_json(rng, doc):
    """One hand edit of a JSON document: a value replaced, a key dropped or misspelt, a list entry
    dropped or doubled, a number scaled or negated."""
    paths, stack = [], [((), doc)]
    while stack:
        path, node = stack.pop()
        children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
        for k, v in children:
            paths.append(path + (k,))
            stack.append((path + (k,), v))
    if not paths:
        return doc
    path = rng.choice(paths)
    parent = doc
    for k in path[:-1]:
        parent = parent[k]
    k, r = path[-1], rng.random()
    value = parent[k]
    if r < 0.4:
        parent[k] = rng.choice([-1, 0, 0.5, 1e308, 3, 2 ** 32 + 1, 10 ** 20, "x", "", None, True, [], {}, [1, 2]])
    elif r < 0.55 and isinstance(parent, dict):
        del parent[k]
    elif r < 0.65 and isinstance(parent, dict) and k:
        i = rng.randrange(len(k))
        parent[k[:i] + "Q" + k[i + 1:]] = parent.pop(k)
    elif r < 0.8 and isinstance(parent, list):
        if rng.random() < 0.5:
            del parent[k]
        else:
            parent.insert(k, json.loads(json.dumps(value)))
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        parent[k] = rng.choice([value * 2, value + 1, -value, value * 1e-6, value + 10])
    else:
        parent[k] = rng.choice([-1, 0, "x", None])
    return doc


def damage_file(rng, path):
    """Damages one data file as a hand edit or a bad copy would."""
    with open(path, "rb") as f:
        raw = f.read()
    r = rng.random()
    if path.endswith(".json") and r < 0.8:
        doc = json.loads(raw)
        pipelines = doc.get("pipeline_list", []) if isinstance(doc, dict) else []
        layers = [stage for pipeline in pipelines for stage in pipeline["layers_per_stage"]]
        if layers and rng.random() < 0.4:
            stage = rng.choice(layers)
            i = rng.randrange(len(stage))
            stage[i] = rng.choice([stage[i] + 10, stage[i] + 1, stage[i] - 1, 0, 99])
        else:
            for _ in range(rng.choice([1, 1, 2])):
                doc = damage_json(rng, doc)
        with open(path, "w") as f:
            json.dump(doc, f)
        return
    if path.endswith(".csv") and r < 0.8:
        lines = raw.decode().splitlines()
        i = rng.randrange(len(lines))
        cells = lines[i].split(",")
        j = rng.randrange(len(cells))
        cells[j] = rng.choice(["", "-1", "nan", "inf", "x", "1e400", "0", cells[j] + "5", "failed"])
        if rng.random() < 0.2:
            del cells[j]
        lines[i] = ",".join(cells)
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        return
    data = bytearray(raw)
    if rng.random() < 0.7 and len(data) > 1:
        data = data[:rng.randrange(len(data))]
    else:
        for _ in range(rng.choice([1, 4, 16])):
            data[rng.randrange(len(data))] = rng.randrange(256)
    with open(path, "wb") as f:
        f.write(bytes(data))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--amp", required=True)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--network", action="store_true")
    ap.add_argument("--sailor", metavar="DIR")
    ap.add_argument("--mutate", metavar="DIR")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as work:
        sweep = Sweep(os.path.abspath(a.amp), work)
        if a.mutate:
            ok, plans = sweep.mutate(a.seed, a.runs, os.path.abspath(a.mutate))
            print(f"{a.runs} damaged copies (seed {a.seed}): {ok} commands succeeded, {plans} runs priced, "
                  f"{len(sweep.failures)} failures")
            for line, n in sweep.errors.most_common(15):
                print(f"  {n} x {line}")
            sys.exit(1 if sweep.failures else 0)
        if a.sailor:
            ok, plans = sweep.sailor(a.seed, a.runs, os.path.abspath(a.sailor))
        else:
            ok, plans = (sweep.network if a.network else sweep.flags)(a.seed, a.runs)
    print(f"{a.runs} runs (seed {a.seed}): {ok} found plans, {plans} plans checked, {len(sweep.failures)} failures")
    for line, n in sweep.errors.most_common(15):
        print(f"  {n} x {line}")
    sys.exit(1 if sweep.failures else 0)


if __name__ == "__main__":
    main()

"""amp's Sailor exports read and priced by Sailor's own code.

    python check.py --amp PATH/TO/amp --sailor PATH/TO/sailor-checkout \
        --data ../shared/data/sailor --work DIR [--top 3] [--results FILE]

Run it with a Python that can import Sailor's simulator (torch and pandas:
Sailor's profile_utils imports torch). `--sailor` is a checkout of
github.com/eth-easl/sailor; only its simulator code and its network and
model files are used (sailor/Planner/simulations, sailor/profiling,
sailor/providers, sailor/Planner/llm_info.json), nothing it measured.

On each of Sailor's planning scenarios (OPT-350M and GPT-Neo-2.7B on A100-40
and V100-16 nodes, Sailor's data, global batch 1024):

1. `amp plan --sailor-data ... --json` gives amp's top plans (the default
   search, `--per-type-tp --uneven-dp` and `--per-stage-tp --uneven-dp`);
2. `amp export --to sailor` writes each as a Sailor plan_config (a plan Sailor's
   format cannot express is refused by amp with its reason, reported here);
3. Sailor's validation entry point (`simulate_sailor` of
   sailor/Planner/simulations/validation/validate.py, as its `__main__` calls
   it) reads the file and returns Sailor's simulated iteration time and
   memory, and Sailor's `Simulator.check_config_fits` its fit verdict;
4. `amp eval FILE --sailor-data ...` reads the file back: its iteration time
   must equal the plan's.

Sailor's own plans for the OPT-350M scenarios (as the issue describes them;
the same files as crates/amp-cli/tests/sailor.rs) are priced the same way.

On Sailor's consumer cluster (one 8-GPU PCIe server each of RTX-3090,
Titan-RTX and RTX-2080, OPT-350M, global batch 256), hand-written plans of
a few shapes and amp's own top plans are priced by both models (`amp eval
--force`, Sailor's `simulate_sailor`); a plan Sailor's simulator cannot
price is reported with its exception. No run of this cluster is here.

Sailor's measured runs in the data folder (measured/<cluster>/<model>/...,
the runs `amp validate` reads) are priced by both models as well: Sailor's
simulator on each run's plan, amp through `amp validate --json` (with its
fitted constants and with neutral ones), beside the measured time and
memory, with each model's Spearman and mean and largest errors.

GPT-Neo-2.7B on GH200 nodes (the hardware and model of a held-out set of
Sailor's runs, none of which is here): each measured OPT-350M run's plan
with GPT-Neo's 34 layers, priced by both models (`amp eval`, fitted and
neutral constants; Sailor's `simulate_sailor`), where the two models part
being the question, not which is right.

Checks (exit 1 on any failure): Sailor reads every exported file and prices
it; amp reads it back at the plan's time (0.05% tolerance, the JSON's
rounding). Sailor's verdicts and times are reported, not asserted: they are
the peer's model, not a measurement.
"""

import argparse
import contextlib
import glob
import io
import json
import os
import subprocess
import sys

ZONE = "us-central1-a"
SCENARIOS = [
    ("OPT-350", "8x4xA100-40+24x4xV100-16", "32 + 96"),
    ("OPT-350", "20x4xA100-40+60x4xV100-16", "80 + 240"),
    ("OPT-350", "32x4xA100-40+96x4xV100-16", "128 + 384"),
    ("GPT-Neo-2.7", "8x4xA100-40+24x4xV100-16", "32 + 96"),
    ("GPT-Neo-2.7", "20x4xA100-40+60x4xV100-16", "80 + 240"),
    ("GPT-Neo-2.7", "32x4xA100-40+96x4xV100-16", "128 + 384"),
]
SEARCHES = [
    ("default", []),
    ("per-type", ["--per-type-tp", "--uneven-dp"]),
    ("per-stage", ["--per-stage-tp", "--uneven-dp"]),
]
# Sailor's consumer cluster (issue 9's held-out set, whose runs are not
# here): 8-GPU PCIe servers of three kinds, one node each, and hand-written
# plans of the shapes its runs took (tp-8 pipelines and one-node plans),
# global batch 256.
CONSUMER_CLUSTER = "1x8xRTX-3090+1x8xTitan-RTX+1x8xRTX-2080"
CONSUMER_LABEL = "8 RTX-3090 + 8 Titan-RTX + 8 RTX-2080"
CONSUMER_GBS = 256
TRAINING = {"OPT-350": "opt-350m.json", "GPT-Neo-2.7": "gpt-neo-2.7b.json"}
# Sailor's folder names for its measured runs' models (measured/<cluster>/<model>/).
MEASURED_MODELS = {"OPT-350": "OPT-350", "GPT-NEO": "GPT-Neo-2.7"}


def layer_lists(sizes):
    """Stages of `sizes` layers in order, as Sailor's `layers_per_stage`."""
    layers, at = [], 0
    for n in sizes:
        layers.append(list(range(at, at + n)))
        at += n
    return layers


def plan_config(sizes, groups, dp, mbs, gbs):
    """A one-pipeline Sailor plan: stages of `sizes` layers in order, each
    with its replicas' groups (`groups[stage]`), dp replicas per stage."""
    layers = layer_lists(sizes)
    return {
        "zone": ZONE,
        "pipeline_list": [
            {
                "num_stages": len(sizes),
                "layers_per_stage": layers,
                "tmp_per_stage": groups,
                "dp": [dp] * len(sizes),
            }
        ],
        "mbs": mbs,
        "gbs": gbs,
    }


def sailor_own_plans():
    """Sailor's planner's OPT-350M plans, as the issue gives them."""
    v = [[["V100-16", 4, ZONE]], 4]
    a = [[["A100-40", 4, ZONE]], 1]

    def plan(sizes, groups, dp, mbs):
        return plan_config(sizes, groups, dp, mbs, 1024)

    def mixed(dp):
        return [[v] * 24 + [a] * (dp - 24), [a] * dp]

    def seven(dp):
        return [[v] * dp] * 3 + [[a] * dp] * 4

    sizes7 = [3, 3, 4, 4, 4, 4, 4]
    return [
        ("32 + 96", "Sailor's plan (dp 27)", plan([13, 13], mixed(27), 27, 2)),
        ("80 + 240", "Sailor's plan", plan(sizes7, seven(20), 20, 1)),
        ("128 + 384", "Sailor's plan", plan(sizes7, seven(32), 32, 1)),
    ]


def consumer_plans():
    """Hand-written OPT-350M plans on CONSUMER_CLUSTER: (name, plan_config)."""

    def plan(gpus, tp, dp, mbs):
        n = len(gpus)
        sizes = [26 // n + (1 if i < 26 % n else 0) for i in range(n)]
        return plan_config(sizes, [[[[[g, 8, ZONE]], tp]] * dp for g in gpus], dp, mbs, CONSUMER_GBS)

    three = ["RTX-3090", "Titan-RTX", "RTX-2080"]
    out = []
    for mbs in (1, 4):
        out += [
            (f"pp 3 tp 8, a node per stage, mbs {mbs}", plan(three, 8, 1, mbs)),
            (f"pp 2 tp 8 (RTX-3090, Titan-RTX), mbs {mbs}", plan(three[:2], 8, 1, mbs)),
            (f"pp 3 tp 4 dp 2, a node per stage, mbs {mbs}", plan(three, 4, 2, mbs)),
            (f"pp 1 tp 8 on the RTX-3090 node, mbs {mbs}", plan(three[:1], 8, 1, mbs)),
            (f"pp 1 tp 4 dp 2 on the RTX-3090 node, mbs {mbs}", plan(three[:1], 4, 2, mbs)),
            (f"pp 1 tp 1 dp 8 on the Titan-RTX node, mbs {mbs}", plan(three[1:2], 1, 8, mbs)),
            (f"pp 1 tp 1 dp 8 on the RTX-3090 node, mbs {mbs}", plan(three[:1], 1, 8, mbs)),
        ]
    return out


def ranks(xs):
    """Ranks from 1, ties sharing their mean rank."""
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    r = [0.0] * len(xs)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
            j += 1
        for k in range(i, j + 1):
            r[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return r


def spearman(xs, ys):
    """Spearman's rank correlation: Pearson's on the ranks."""
    rx, ry = ranks(xs), ranks(ys)
    n = len(xs)
    mx, my = sum(rx) / n, sum(ry) / n
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    vx = sum((a - mx) ** 2 for a in rx)
    vy = sum((b - my) ** 2 for b in ry)
    return cov / (vx * vy) ** 0.5


def errors(pairs):
    """(mean, max) of |predicted / measured - 1| over (predicted, measured) pairs."""
    e = [abs(p / m - 1) for p, m in pairs]
    return sum(e) / len(e), max(e)


class Sailor:
    """Sailor's simulator, imported from a checkout."""

    def __init__(self, checkout, work, data):
        checkout = os.path.abspath(checkout)
        # Sailor reads f"{sailor_path}/sailor/sailor/providers/...": its
        # checkout is expected at sailor_path/sailor.
        root = os.path.join(work, "sailor-path")
        os.makedirs(root, exist_ok=True)
        link = os.path.join(root, "sailor")
        if not os.path.exists(link):
            os.symlink(checkout, link)
        self.sailor_path = root
        os.environ["SAILOR_PATH"] = root
        sys.path.insert(0, checkout)
        from sailor.Planner.simulations.validation import validate
        from sailor.Planner.simulations.runtime_simulator import Simulator

        self.validate = validate
        self.Simulator = Simulator
        with open(os.path.join(checkout, "sailor/Planner/llm_info.json")) as f:
            self.llm_info = json.load(f)
        self.profile_path = os.path.join(data, "profiles.json")
        with open(self.profile_path) as f:
            self.profiles = json.load(f)
        self.data = data

    def training(self, model, gbs):
        with open(os.path.join(self.data, "training", TRAINING[model])) as f:
            t = json.load(f)
        t["global_batch_size"] = gbs
        return t

    def price(self, model, plan_config):
        """(time s, memory bytes, fits) as Sailor's validation computes them."""
        t = self.training(model, plan_config["gbs"])
        args = (
            self.sailor_path,
            t,
            self.llm_info,
            False,
            plan_config["zone"],
            plan_config["pipeline_list"],
            plan_config["mbs"],
            self.profile_path,
        )
        quiet = io.StringIO()
        with contextlib.redirect_stdout(quiet):
            time_s = self.validate.simulate_sailor(*args, simulate_time=True)
            mem = self.validate.simulate_sailor(*args, simulate_mem=True)
            sim = self.Simulator(self.sailor_path, t, self.llm_info, False, self.profiles, plan_config["zone"])
            fits = sim.check_config_fits({"pipeline_list": plan_config["pipeline_list"], "mbs": plan_config["mbs"]})
        return time_s, mem, fits


def run(cmd):
    return subprocess.run(cmd, capture_output=True, text=True)


def short(gpu):
    """A GPU's name without its memory size (A100-40 -> A100); consumer
    GPUs, whose names carry no size, whole."""
    return gpu if gpu.startswith(("RTX", "Titan")) else gpu.split("-")[0]


def describe(p):
    pl = p["pipeline_list"][0]
    tps = []
    for stage in pl["tmp_per_stage"]:
        kinds = sorted({(g[0][0][0], g[1]) for g in stage})
        tps.append("+".join(f"{short(k[0])} {k[1]}" for k in kinds))
    sizes = "/".join(str(len(s)) for s in pl["layers_per_stage"])
    return f"pp {pl['num_stages']} dp {pl['dp'][0]} mbs {p['mbs']}, layers {sizes}, tp {' / '.join(tps)}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--amp", required=True)
    ap.add_argument("--sailor", required=True, help="checkout of github.com/eth-easl/sailor")
    ap.add_argument("--data", required=True, help="Sailor's data folder (../shared/data/sailor)")
    ap.add_argument("--work", required=True)
    ap.add_argument("--top", type=int, default=3)
    ap.add_argument("--results", help="also write the table as Markdown here")
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    sailor = Sailor(args.sailor, args.work, args.data)

    rows, failures = [], []

    def check(model, cluster_label, label, plan_config, path, amp_s):
        t, mem, fits = sailor.price(model, plan_config)
        back = run([args.amp, "eval", path, "--sailor-data", args.data, "--model", model, "--json"])
        if back.returncode != 0:
            failures.append(f"{label}: amp eval of {path} failed: {back.stderr.strip()}")
            back_s = None
        else:
            back_s = json.loads(back.stdout)["iteration_s"]
            if amp_s is not None and abs(back_s - amp_s) > 5e-4 * amp_s:
                failures.append(f"{label}: amp reads {path} back at {back_s:.4f} s, planned {amp_s:.4f} s")
        if not (t > 0 and mem > 0):
            failures.append(f"{label}: Sailor priced {path} at {t} s, {mem} bytes")
        rows.append((model, cluster_label, label, describe(plan_config), amp_s if amp_s is not None else back_s, t, mem / 1e9, fits))

    for model, cluster, label in SCENARIOS:
        for search, flags in SEARCHES:
            out = os.path.join(args.work, f"{model}-{cluster}-{search}")
            os.makedirs(out, exist_ok=True)
            plan_json = os.path.join(out, "plans.json")
            r = run([args.amp, "plan", "--sailor-data", args.data, "--model", model, "--cluster", cluster,
                     "--global-batch", "1024", "--json", "--top", str(args.top), "-q", *flags])
            if r.returncode != 0:
                failures.append(f"{model} {cluster} {search}: amp plan failed: {r.stderr.strip()}")
                continue
            with open(plan_json, "w") as f:
                f.write(r.stdout)
            plans = json.loads(r.stdout)["plans"]
            for rank, p in enumerate(plans, start=1):
                d = os.path.join(out, f"rank{rank}")
                e = run([args.amp, "export", plan_json, "--rank", str(rank), "--sailor-data", args.data,
                         "--model", model, "--cluster", cluster, "--to", "sailor", "--out", d])
                name = f"amp {search} #{rank}"
                if e.returncode != 0:
                    reason = e.stderr.strip().splitlines()[-1]
                    if "cannot export for Sailor" not in reason:
                        failures.append(f"{model} {cluster} {name}: export failed: {reason}")
                    rows.append((model, label, name, "not exported: " + reason.split(": plan: ")[-1][:90] + "...", p["predicted_iteration_s"], None, None, None))
                    continue
                path = e.stdout.strip().splitlines()[-1]
                with open(path) as f:
                    check(model, label, name, json.load(f), path, p["predicted_iteration_s"])

    # The default search's hedge (`amp plan --sensitivity`): the plan whose
    # worst regret over amp's shipped constants is least, where it is not
    # rank 1, priced by Sailor's simulator beside rank 1 (above).
    for model, cluster, label in SCENARIOS:
        out = os.path.join(args.work, f"{model}-{cluster}-hedge")
        os.makedirs(out, exist_ok=True)
        r = run([args.amp, "plan", "--sailor-data", args.data, "--model", model, "--cluster", cluster,
                 "--global-batch", "1024", "--json", "--top", "1", "-q", "--sensitivity"])
        if r.returncode != 0:
            failures.append(f"{model} {cluster} hedge: amp plan --sensitivity failed: {r.stderr.strip()}")
            continue
        hedge = json.loads(r.stdout)["sensitivity_hedge"]
        if hedge["rank"] == 1:
            continue
        plan_path = os.path.join(out, "hedge.json")
        with open(plan_path, "w") as f:
            json.dump(hedge["plan"], f)
        d = os.path.join(out, "sailor")
        e = run([args.amp, "export", plan_path, "--sailor-data", args.data,
                 "--model", model, "--cluster", cluster, "--to", "sailor", "--out", d])
        name = f"amp default hedge (--sensitivity, worst regret {hedge['worst_regret']:.3f})"
        if e.returncode != 0:
            failures.append(f"{model} {cluster} {name}: export failed: {e.stderr.strip()}")
            continue
        path = e.stdout.strip().splitlines()[-1]
        with open(path) as f:
            check(model, label, name, json.load(f), path, hedge["predicted_iteration_s"])

    for label, name, plan_config in sailor_own_plans():
        path = os.path.join(args.work, f"sailor-own-{label.replace(' ', '')}.json")
        with open(path, "w") as f:
            json.dump(plan_config, f, indent=2)
        check("OPT-350", label, name, plan_config, path, None)

    # The consumer cluster: hand-written plans, then amp's own top plans,
    # each priced by both models (amp's memory: the fullest GPU's peak,
    # what must fit; Sailor's: its simulator's estimate of nvidia-smi).
    consumer = []

    def amp_eval(path):
        r = run([args.amp, "eval", path, "--sailor-data", args.data, "--model", "OPT-350", "--json", "--force"])
        if r.returncode != 0:
            failures.append(f"consumer: amp eval of {path} failed: {r.stderr.strip()}")
            return None
        j = json.loads(r.stdout)
        return j["iteration_s"], max(m["peak_bytes"] for m in j["memory"]) / 1e9, j["fits_in_memory"]

    def price_consumer(name, plan_config, path):
        a = amp_eval(path)
        try:
            t, mem, fits = sailor.price("OPT-350", plan_config)
            theirs = (t, mem / 1e9, fits)
        except Exception as e:  # Sailor's simulator fails on some plans
            theirs = f"Sailor's simulator fails: {type(e).__name__} {e}"
        if a is not None:
            consumer.append((name, describe(plan_config), a, theirs))

    for name, plan_config in consumer_plans():
        path = os.path.join(args.work, f"consumer-{len(consumer)}.json")
        with open(path, "w") as f:
            json.dump(plan_config, f, indent=2)
        price_consumer(name, plan_config, path)
    out = os.path.join(args.work, "consumer")
    os.makedirs(out, exist_ok=True)
    # amp's top plans on all 24 GPUs, then its best with --subsets (which
    # may leave servers idle).
    for search, flags, top in [("default", [], args.top), ("--subsets", ["--subsets"], 1)]:
        plan_json = os.path.join(out, f"plans-{search}.json")
        r = run([args.amp, "plan", "--sailor-data", args.data, "--model", "OPT-350", "--cluster", CONSUMER_CLUSTER,
                 "--global-batch", str(CONSUMER_GBS), "--json", "--top", str(top), "-q", *flags])
        if r.returncode != 0:
            failures.append(f"consumer: amp plan {search} failed: {r.stderr.strip()}")
            continue
        with open(plan_json, "w") as f:
            f.write(r.stdout)
        for rank in range(1, len(json.loads(r.stdout)["plans"]) + 1):
            d = os.path.join(out, f"{search}-rank{rank}")
            e = run([args.amp, "export", plan_json, "--rank", str(rank), "--sailor-data", args.data,
                     "--model", "OPT-350", "--cluster", CONSUMER_CLUSTER, "--to", "sailor", "--out", d])
            if e.returncode != 0:
                failures.append(f"consumer: export of {search} #{rank} failed: {e.stderr.strip()}")
                continue
            path = e.stdout.strip().splitlines()[-1]
            with open(path) as f:
                price_consumer(f"amp {search} #{rank}", json.load(f), path)

    # Sailor's measured runs (the given ones, in the data folder): each plan
    # priced by Sailor's simulator and by amp (`amp validate`, with the
    # fitted constants and with neutral ones), beside what was measured.
    amp_runs = {}
    for calibration in ("fitted", "neutral"):
        r = run([args.amp, "validate", args.data, "--json", "--calibration", calibration])
        if r.returncode != 0:
            failures.append(f"measured runs: amp validate --calibration {calibration} failed: {r.stderr.strip()}")
            continue
        for ds in json.loads(r.stdout)["datasets"]:
            for d in ds["details"]:
                amp_runs.setdefault(d["name"], {})[calibration] = d
    measured = []
    root = os.path.join(args.data, "measured")
    for path in sorted(glob.glob(os.path.join(root, "*", "*", "*", "plan_config_*.json"))):
        name = os.path.relpath(path, root)
        model = MEASURED_MODELS.get(name.split(os.sep)[1])
        mine = amp_runs.get(name, {})
        if model is None or set(mine) != {"fitted", "neutral"}:
            failures.append(f"measured runs: {name}: no model for its folder, or amp did not price it")
            continue
        with open(path) as f:
            plan_config = json.load(f)
        t, mem, _ = sailor.price(model, plan_config)
        measured.append((name, plan_config["real"], plan_config["max_mem"], t, mem, mine["fitted"], mine["neutral"]))

    # GPT-Neo-2.7B on GH200, the hardware and model of a held-out set whose
    # runs are not here: each measured OPT-350M run's plan (nodes, tp, dp,
    # stages, micro-batch, batch) with GPT-Neo's 34 layers split as evenly
    # as it goes (the extra layers to the last stages), priced by both
    # models (amp's memory: its predicted device reading, the fullest GPU's
    # peak plus the allocator's cache).
    neo = []
    neo_layers = sailor.training("GPT-Neo-2.7", 1)["num_all_layers"]
    for path in sorted(glob.glob(os.path.join(root, "*", "OPT-350", "*", "plan_config_*.json"))):
        with open(path) as f:
            plan_config = json.load(f)
        pl = plan_config["pipeline_list"][0]
        base, extra = divmod(neo_layers, pl["num_stages"])
        sizes = [base + (1 if i >= pl["num_stages"] - extra else 0) for i in range(pl["num_stages"])]
        pl["layers_per_stage"] = layer_lists(sizes)
        for k in ("real", "red_grads", "max_mem"):
            plan_config.pop(k, None)
        name = os.path.relpath(path, root).replace("OPT-350", "GPT-Neo-2.7")
        out = os.path.join(args.work, "gpt-neo-gh200", name.replace(os.sep, "_"))
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with open(out, "w") as f:
            json.dump(plan_config, f, indent=2)
        mine = {}
        for calibration in ("fitted", "neutral"):
            r = run([args.amp, "eval", out, "--sailor-data", args.data, "--model", "GPT-Neo-2.7", "--json",
                     "--calibration", calibration])
            if r.returncode != 0:
                failures.append(f"GPT-Neo on GH200: amp eval of {out} failed: {r.stderr.strip()}")
                break
            j = json.loads(r.stdout)
            reading = max(m["peak_bytes"] for m in j["memory"]) + j["allocator_cache_bytes"]
            mine[calibration] = (j["iteration_s"], reading / 1e9)
        if len(mine) < 2:
            continue
        t, mem, fits = sailor.price("GPT-Neo-2.7", plan_config)
        neo.append((name, describe(plan_config), t, mem / 1e9, fits, mine["fitted"], mine["neutral"]))

    head = "| model | GPUs (A100 + V100) | plan | amp s | Sailor's simulator s | Sailor's memory GB | Sailor: fits |"
    lines = [head, "|" + "---|" * 7]
    for m, c, name, what, amp_s, t, mem, fits in rows:
        cells = [m, c, f"{name}: {what}", f"{amp_s:.4f}",
                 "-" if t is None else f"{t:.4f}", "-" if mem is None else f"{mem:.2f}",
                 "-" if fits is None else ("yes" if fits else "no")]
        lines.append("| " + " | ".join(cells) + " |")
    # Per OPT-350M scenario: amp's first plan, the best of amp's exported
    # plans and Sailor's plan, each under both models.
    lines += ["", "| GPUs (A100 + V100) | amp's #1 (default search): amp s / Sailor s | best of amp's exported plans under Sailor's simulator: amp s / Sailor s | Sailor's plan: amp s / Sailor s |", "|---|---|---|---|"]
    for _, _, label in SCENARIOS[:3]:
        mine = [r for r in rows if r[0] == "OPT-350" and r[1] == label and r[2].startswith("amp") and r[5] is not None]
        first = next(r for r in mine if r[2] == "amp default #1")
        best = min(mine, key=lambda r: r[5])
        theirs = next(r for r in rows if r[1] == label and r[2].startswith("Sailor"))
        cell = lambda r: f"{r[4]:.4f} / {r[5]:.4f}"
        lines.append(f"| {label} | {cell(first)} | {cell(best)} ({best[2]}) | {cell(theirs)} |")
    lines += ["", f"OPT-350M on {CONSUMER_LABEL} (one node each), global batch {CONSUMER_GBS}:", "",
              "| plan | amp s | Sailor's simulator s | amp / Sailor | amp's peak GB (fits) "
              "| Sailor's memory GB (fits) |",
              "|---|---|---|---|---|---|"]
    def yn(b):
        return "yes" if b else "no"

    for name, what, (amp_s, amp_mem, amp_fits), theirs in consumer:
        if isinstance(theirs, str):
            cells = [f"{name}: {what}", f"{amp_s:.3f}", theirs, "-", f"{amp_mem:.2f} ({yn(amp_fits)})", "-"]
        else:
            t, mem, fits = theirs
            cells = [f"{name}: {what}", f"{amp_s:.3f}", f"{t:.3f}", f"{amp_s / t:.2f}",
                     f"{amp_mem:.2f} ({yn(amp_fits)})", f"{mem:.2f} ({yn(fits)})"]
        lines.append("| " + " | ".join(cells) + " |")
    if measured:
        lines += ["", f"Sailor's {len(measured)} measured runs in the data folder, each plan priced by both models "
                  "(amp: `amp validate`, fitted constants, then neutral ones):", "",
                  "| run | measured s | Sailor's simulator s | amp s (fitted) | amp s (neutral) "
                  "| measured GB | Sailor's GB | amp GB (fitted) | amp GB (neutral) |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for name, real, max_mem, t, mem, fitted, neutral in measured:
            err = lambda p, m: f"{p:.3f} ({p / m - 1:+.1%})"
            gb = lambda p: err(p / 1e9, max_mem / 1e9)
            lines.append("| " + " | ".join([
                name, f"{real:.3f}", err(t, real), err(fitted["predicted_s"], real), err(neutral["predicted_s"], real),
                f"{max_mem / 1e9:.2f}", gb(mem), gb(fitted["predicted_reading_bytes"]),
                gb(neutral["predicted_reading_bytes"])]) + " |")
        real = [m[1] for m in measured]
        summary = [
            ("Sailor's simulator", [m[3] for m in measured], [m[4] for m in measured]),
            ("amp, fitted constants", [m[5]["predicted_s"] for m in measured],
             [m[5]["predicted_reading_bytes"] for m in measured]),
            ("amp, neutral constants", [m[6]["predicted_s"] for m in measured],
             [m[6]["predicted_reading_bytes"] for m in measured]),
        ]
        lines += ["", "| model | Spearman (time) | time error mean / max | memory error mean / max |",
                  "|---|---|---|---|"]
        for who, times, mems in summary:
            te = errors(zip(times, real))
            me = errors(zip(mems, [m[2] for m in measured]))
            lines.append(f"| {who} | {spearman(times, real):.3f} | {te[0]:.1%} / {te[1]:.1%} | {me[0]:.1%} / {me[1]:.1%} |")

    if neo:
        lines += ["", f"GPT-Neo-2.7B on GH200 (a held-out set's hardware and model; none of its runs is here): "
                  f"the {len(neo)} measured OPT-350M runs' plans with GPT-Neo's 34 layers, priced by both models:", "",
                  "| plan | Sailor's simulator s | amp s (fitted) | amp s (neutral) | amp / Sailor (fitted) "
                  "| Sailor's GB (fits) | amp GB (fitted) | amp GB (neutral) |",
                  "|---|---|---|---|---|---|---|---|"]
        for name, what, t, mem, fits, fitted, neutral in neo:
            lines.append("| " + " | ".join([
                f"{name}: {what}", f"{t:.3f}", f"{fitted[0]:.3f}", f"{neutral[0]:.3f}", f"{fitted[0] / t:.3f}",
                f"{mem:.2f} ({'yes' if fits else 'no'})", f"{fitted[1]:.2f}", f"{neutral[1]:.2f}"]) + " |")

    table = "\n".join(lines)
    print(table)
    if args.results:
        with open(args.results, "w") as f:
            f.write(table + "\n")
    if failures:
        print("\nFAILED:", file=sys.stderr)
        for x in failures:
            print("  " + x, file=sys.stderr)
        return 1
    print(f"\n{len(rows)} plans: Sailor read and priced every exported file; amp read each back at its plan's time. "
          f"{len(measured)} measured runs priced by both models.")
    return 0


if __name__ == "__main__":
    sys.exit(main())

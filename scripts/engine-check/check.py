"""amp's exports run through the engines' own code: a fixed set of plans.

    python check.py --amp PATH/TO/amp --work DIR [--engines megatron,deepspeed,torchtitan]

For each plan below: writes the plan JSON, runs `amp export` for each engine,
then runs engines.py (the engine's own argument parser, config class, and
model construction on the meta device) in a fresh interpreter and compares
with the plan:

- params: the engine's model has amp's parameter count (Megatron-LM: plus the
  vocabulary padding rows it adds, reported by its own padding function);
- layers: each pipeline rank builds the plan's transformer blocks;
- ranks: every global rank's (pp, dp, tp) coordinate, in the engine's own rank
  numbering, lands on the device the plan chose for that coordinate (through
  the export's hostfile/launch node and GPU order);
- batch: the engine's micro-batches per iteration and data-parallel size are
  the plan's.

The plans above are written by hand, their devices in node order. SEARCHED
below are plans as amp's search gives them (`amp plan --engine E --json`, the
plan of a given rank): node orders the search permuted, stages of uneven
sizes (Megatron-LM's --pipeline-model-parallel-layout), setups the search
chose. Each engine gets the plan searched for it, exported as the user would
(`amp export PLAN --to E`), and is checked as above, the settings against the
setup the plan records.

Prints a table, writes it as Markdown with --results FILE, exits 1 on any
mismatch or unexpected refusal. Megatron-LM needs MEGATRON_LM (a checkout).
"""

import argparse
import itertools
import json
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))

# (name, model, seq, cluster, nodes' GPU counts, tp, dp, pp, layer boundaries,
#  micro-batch, micro-batches, extra `amp export` flags, engines expected to
#  refuse with a reason fragment)
NOT_SHIPPED = "ships with a training recipe"
# A tied model on a pipeline: torchtitan refuses it before any flavor is
# looked up (amp's plan check, since 2026-12-06).
TIED_PIPELINE = "refuses weight tying with pipeline parallelism"
CASES = [
    ("gpt3-1.7b tp2 pp2", "gpt3-1.7b", 2048, "1x8xA100-80GB", [8], 2, 2, 2, [0, 13, 27], 2, 4, [],
     {"torchtitan": TIED_PIPELINE}),
    ("llama3-8b tp2 dp4 pp2", "llama-3-8b", 8192, "2x8xH100", [8, 8], 2, 4, 2, [0, 17, 35], 1, 8, [], {}),
    ("qwen2.5-7b tp4 pp2", "qwen2.5-7b", 4096, "1x8xH100", [8], 4, 1, 2, [0, 15, 31], 1, 4, [],
     {"torchtitan": NOT_SHIPPED}),
    # Qwen3: a norm on each head's query and key, 64 heads of 128 on a hidden size of 5120.
    ("qwen3-32b tp8 pp2", "qwen3-32b", 4096, "2x8xH100", [8, 8], 8, 1, 2, [0, 33, 67], 1, 4, [], {}),
    # Qwen3-0.6B ties its output to the embedding: torchtitan's own recipe, without a pipeline.
    ("qwen3-0.6b tp1 dp8, tied", "qwen3-0.6b", 4096, "1x8xH100", [8], 1, 8, 1, [0, 31], 1, 1, [], {}),
    # Qwen3-8B: torchtitan ships the flavor but no recipe; the job starts from the 14B's.
    ("qwen3-8b tp2 dp2 pp2", "qwen3-8b", 4096, "1x8xH100", [8], 2, 2, 2, [0, 19, 39], 1, 4, [], {}),
    # Gemma 3: GeLU-gated, four norms per block, tied; Megatron-LM's arguments cannot build it.
    ("gemma-3-1b tp1 dp2 pp2", "gemma-3-1b", 4096, "1x8xH100", [8], 1, 2, 2, [0, 14, 29], 1, 4, [],
     {"megatron": "Gemma's embedding scaled", "torchtitan": TIED_PIPELINE}),
    # Phi-3: Llama's blocks with fused projections (the same weights), 32064 tokens.
    ("phi-3-mini tp2 pp2", "phi-3-mini", 4096, "1x8xH100", [8], 2, 2, 2, [0, 17, 35], 1, 4, [],
     {"torchtitan": NOT_SHIPPED}),
    # Sequence 4096: at 8192 its first stages do not fit torchtitan's eager
    # blocks without recomputation (amp counts what they keep since
    # 2026-12-06; the export then refuses without --force).
    ("llama3-8b uneven 7/9/9/7", "llama-3-8b", 4096, "1x8xH100", [8], 1, 2, 4, [0, 8, 17, 26, 35], 1, 8, [], {}),
    # pp 4 x 2 virtual stages of 3 blocks; virtual stage i runs on pipeline rank i mod 4.
    ("gpt3-1.7b interleaved pp4 x2", "gpt3-1.7b", 2048, "1x8xA100-80GB", [8], 2, 1, 4,
     [0, 4, 7, 10, 13, 16, 19, 22, 27], 1, 8, ["--schedule", "interleaved:2"],
     {"deepspeed": "interleaved", "torchtitan": "interleaved"}),
    # 28 blocks + embedding + loss = 30 over pp 3 x 2 virtual stages of 5: the
    # first and last virtual stages hold 4 blocks (Megatron-LM's
    # --account-for-embedding/loss-in-pipeline-split).
    ("qwen2.5-7b interleaved pp3 x2, embedding and loss counted", "qwen2.5-7b", 2048, "1x6xH100", [6], 2, 1, 3,
     [0, 5, 10, 15, 20, 25, 31], 1, 6, ["--schedule", "interleaved:2"],
     {"deepspeed": "interleaved", "torchtitan": "interleaved"}),
    ("llama3-8b recompute tp4 pp2", "llama-3-8b", 8192, "2x8xH100", [8, 8], 4, 2, 2, [0, 17, 35], 1, 8,
     ["--recompute"], {}),
    ("llama3-8b tp8 no pp", "llama-3-8b", 8192, "1x8xH100", [8], 8, 1, 1, [0, 35], 1, 4, [], {}),
    # Llama 3.1 and 3.2 rescale the rotary frequencies (factor 8 and 32):
    # Megatron-LM's --use-rope-scaling; torchtitan's 8B flavor is Llama 3.1's.
    ("llama3.1-8b tp2 pp2", "llama-3.1-8b", 8192, "1x8xH100", [8], 2, 2, 2, [0, 17, 35], 1, 4, [], {}),
    ("llama3.2-3b tp2 pp2, tied", "llama-3.2-3b", 4096, "1x8xH100", [8], 2, 2, 2, [0, 15, 31], 1, 4, [],
     {"torchtitan": TIED_PIPELINE}),
    # ZeRO-3 on one stage: DeepSpeed's own engine on a plain module (its
    # pipeline engine refuses ZeRO-2/3), torchtitan's FSDP; Megatron-LM's
    # distributed optimizer shards the optimizer state only.
    ("llama3-8b ZeRO-3 dp8 no pp", "llama-3-8b", 4096, "1x8xH100", [8], 1, 8, 1, [0, 35], 1, 4,
     ["--optimizer-sharding", "zero3"], {"megatron": "shards only the optimizer state"}),
    ("llama3-8b ZeRO-2 dp8 no pp", "llama-3-8b", 4096, "1x8xH100", [8], 1, 8, 1, [0, 35], 1, 4,
     ["--optimizer-sharding", "zero2"],
     {"megatron": "shards only the optimizer state", "torchtitan": "shards with FSDP (zero3) or not at all"}),
    ("llama3-8b A100+H100 18/14", "llama-3-8b", 8192, "1x8xA100-80GB+1x8xH100", [8, 8], 2, 4, 2, [0, 19, 35], 1, 8,
     [], {}),
    # Priced with explicit attention: Megatron-LM must run its unfused backend.
    ("llama3-8b explicit attention tp2 pp2", "llama-3-8b", 2048, "1x8xH100", [8], 2, 2, 2, [0, 17, 35], 1, 4,
     ["--attention", "explicit"], {}),
    # A named Adam step: torchtitan must run that implementation.
    ("llama3-8b foreach Adam tp2 pp2", "llama-3-8b", 8192, "1x8xH100", [8], 2, 2, 2, [0, 17, 35], 1, 4,
     ["--optimizer-step", "foreach"], {"megatron": "fused Adam"}),
    # The loss over the whole sequence: torchtitan must drop its recipe's
    # chunking (the default, checked on every other case).
    ("llama3-8b unchunked loss tp2 pp2", "llama-3-8b", 8192, "1x8xH100", [8], 2, 2, 2, [0, 17, 35], 1, 4,
     ["--cross-entropy", "pytorch"], {"megatron": "cross entropy"}),
    # Sequence parallelism: the engine must run it (torchtitan's is on with
    # tensor parallelism by default, so the other cases check it is off).
    ("llama3-8b sequence parallel tp2 pp2", "llama-3-8b", 8192, "1x8xH100", [8], 2, 2, 2, [0, 17, 35], 1, 4,
     ["--sequence-parallel"], {"deepspeed": "sequence parallelism"}),
    # Each block compiled: torchtitan must compile the model, not the loss
    # (priced uncompiled); the other engines have no such option.
    ("llama3-8b compiled tp2 pp2", "llama-3-8b", 8192, "1x8xH100", [8], 2, 2, 2, [0, 17, 35], 1, 4,
     ["--compile"], {"megatron": "torch.compile", "deepspeed": "torch.compile"}),
    # fp16 with DeepSpeed's fp32 all-reduce (the AMP artifact's runs): DeepSpeed
    # must reduce in fp32; asked for it, the others have no such option.
    # FP8 as Megatron-LM runs Transformer Engine (its own recipe's settings);
    # DeepSpeed has no FP8 of its own and torchtitan's is torchao's.
    ("llama3-8b FP8 tp2 pp2", "llama-3-8b", 8192, "1x8xH100", [8], 2, 2, 2, [0, 17, 35], 1, 4,
     ["--precision", "fp8"],
     {"deepspeed": "not for deepspeed, which has no FP8", "torchtitan": "torchao's Float8Linear"}),
    # Megatron-Bridge's performance recipes: tensor-parallel communication
    # overlapped with the products, bf16 gradients, overlapped reduction.
    ("llama3-8b tp comm overlap, bf16 grads tp2 dp2 pp2", "llama-3-8b", 8192, "1x8xH100", [8], 2, 2, 2,
     [0, 17, 35], 1, 4, ["--sequence-parallel", "--tp-comm-overlap", "--grad-reduce-in-bf16", "--overlap-allreduce"],
     {"deepspeed": "is Megatron-LM's flag", "torchtitan": "is Megatron-LM's flag"}),
    ("llama3-8b fp16, fp32 all-reduce tp2 pp2", "llama-3-8b", 8192, "1x8xH100", [8], 2, 2, 2, [0, 17, 35], 1, 4,
     ["--precision", "fp16", "--fp32-allreduce"],
     {"megatron": "communication_data_type", "torchtitan": "communication_data_type"}),
]


# (name, model, seq, cluster, global batch, extra `amp plan` flags, rank of
#  the plan taken, engines expected to refuse with a reason fragment)
SEARCHED = [
    # Two GPU types: stages of uneven sizes, node orders the search permuted.
    ("searched: llama3-8b on 2 H100 + 2 A100 nodes, #1", "llama-3-8b", 4096,
     "2x8xH100@100Gbps+2x8xA100-80GB@100Gbps", 64, [], 1, {}),
    ("searched: the same, #4", "llama-3-8b", 4096, "2x8xH100@100Gbps+2x8xA100-80GB@100Gbps", 64, [], 4, {}),
    # Every setup searched (sharding, sequence parallelism, recomputation).
    ("searched: qwen3-8b on H100 + A100, every setup", "qwen3-8b", 4096, "1x8xH100+1x8xA100-80GB@200Gbps", 32,
     ["--search-setup", "all"], 1, {}),
    ("searched: llama3-8b on 4x4 A100, recomputed, #2", "llama-3-8b", 4096, "4x4xA100-80GB@50Gbps", 32,
     ["--recompute"], 2, {}),
]


# The rotary rescaling factor of each model the cases name that has one.
ROPE_FACTOR = {"llama-3.1-8b": 8.0, "llama-3.2-3b": 32.0}


def flags_of(plan, made_for):
    """The `amp export` flags that say what the plan's recorded setup says,
    as compare() reads them."""
    st, fmt = plan["setup"], plan["setup"]["formats"]
    flags = []
    if fmt["compute"] != "bf16":
        flags += ["--precision", fmt["compute"]]
    if st.get("recompute") == "full":
        flags.append("--recompute")
    if st.get("sequence_parallel"):
        flags.append("--sequence-parallel")
    if st.get("optimizer_sharding", "none") != "none":
        flags += ["--optimizer-sharding", st["optimizer_sharding"]]
    for key, flag in (("overlap_grad_reduce", "--overlap-allreduce"), ("tp_comm_overlap", "--tp-comm-overlap"),
                      ("compile", "--compile")):
        if st.get(key):
            flags.append(flag)
    if st.get("engine") == "megatron" and fmt["compute"] in ("bf16", "fp8") and fmt["gradients"] == "bf16":
        flags.append("--grad-reduce-in-bf16")
    if fmt.get("gradient_reduction") == "fp32":
        flags.append("--fp32-allreduce")
    if st.get("engine") == "deepspeed" and st.get("pipeline_send") == "full":
        flags += ["--pipeline-send", "full"]
    for key in ("cross_entropy", "optimizer_step"):
        if key in st:
            flags += ["--" + key.replace("_", "-"), st[key]]
    if made_for.get("attention") == "explicit":
        flags += ["--attention", "explicit"]
    return flags


def plan_json(nodes, tp, dp, pp, bounds, mb, nmb):
    """Devices in node order, tp fastest, then dp, then pp. With more
    boundaries than pp + 1, the stages are virtual (interleaved): stage i
    runs on the devices of pipeline rank i mod pp."""
    devices = [(n, g) for n, count in enumerate(nodes) for g in range(count)]
    stages = []
    for i in range(len(bounds) - 1):
        j = i % pp
        reps = []
        for r in range(dp):
            base = (j * dp + r) * tp
            reps.append([{"node": devices[base + t][0], "gpu": devices[base + t][1]} for t in range(tp)])
        stages.append({"first_layer": bounds[i], "end_layer": bounds[i + 1], "replicas": reps})
    return {"micro_batch": mb, "num_micro_batches": nmb, "stages": stages}


def plan_blocks(bounds, num_layers):
    """Zoo decoders: entry 0 the embedding, 1..L the blocks, then the final
    norm and the vocabulary projection."""
    blocks = []
    for a, b in zip(bounds, bounds[1:]):
        blocks.append([i - 1 for i in range(a, b) if 1 <= i <= num_layers])
    return blocks


def rank_devices(out):
    """Global rank -> (cluster node, GPU), from the export's hostfile notes."""
    devs = {}
    for m in re.finditer(r"^# node_rank \d+: cluster node (\d+) \(.*?\), ranks (\d+)-(\d+), GPUs ([\d,]+)$",
                         open(os.path.join(out, "hostfile")).read(), re.M):
        node, first = int(m.group(1)), int(m.group(2))
        for i, g in enumerate(m.group(4).split(",")):
            devs[first + i] = (node, int(g))
    return devs


def amp_params(out):
    for f in ("args.sh", "amp_torchtitan.py"):
        p = os.path.join(out, f)
        if os.path.exists(p):
            m = re.search(r"amp priced (\d+) parameters", open(p).read())
            if m:
                return int(m.group(1))
    return None


def run_engine(py, engine, out, world, env):
    e = dict(os.environ, AMP_WORLD_SIZE=str(world), **env)
    t0 = time.time()
    p = subprocess.run([py, os.path.join(HERE, "engines.py"), engine, out], capture_output=True, text=True, env=e,
                       timeout=900)
    with open(os.path.join(out, f"{engine}.log"), "w") as log:
        log.write(p.stderr)
    lines = [l for l in p.stdout.splitlines() if l.startswith("{")]
    if not lines:
        return {"error": f"no result (exit {p.returncode}); see {out}/{engine}.log"}, time.time() - t0
    return json.loads(lines[-1]), time.time() - t0


def compare(case, engine, res, out, plan):
    (name, model, seq, cluster, nodes, tp, dp, pp, bounds, mb, nmb, flags, _) = case
    num_layers = bounds[-1] - 3
    cells, bad = {}, []
    # params
    amp = amp_params(out)
    if res.get("params") is None:
        cells["params"] = "n/a (user's model)"
    else:
        extra = 0
        if engine == "megatron":
            args = open(os.path.join(out, "args.sh")).read()
            vocab = int(re.search(r"--vocab-size (\d+)", args).group(1)) + 1
            hidden = int(re.search(r"--hidden-size (\d+)", args).group(1))
            tied = "--untie-embeddings-and-output-weights" not in args
            extra = (res["facts"]["padded_vocab"] - vocab) * hidden * (1 if tied else 2)
        ok = res["params"] == amp + extra
        cells["params"] = f"{res['params']:,}" + ("" if ok else f" != amp {amp:,}+{extra:,}")
        if not ok:
            bad.append("params")
    # layers per pipeline rank: the blocks of each of its model chunks (the
    # plan's virtual stages r, r + pp, ... when interleaved)
    virtual = plan_blocks(bounds, num_layers)
    want = [[virtual[i] for i in range(r, len(virtual), pp)] for r in range(pp)]
    got = res["stages"]
    if engine == "deepspeed" or engine == "torchtitan":
        # one chunk per rank; these engines list a stage's blocks in order
        got = [[sorted(b for c in chunks for b in c)] for chunks in got]
    ok = got == want
    if any(len(c) > 1 for c in want):
        desc = " / ".join(",".join(f"{c[0]}-{c[-1]}" for c in chunks) for chunks in got)
    else:
        desc = "/".join(str(sum(len(c) for c in chunks)) for chunks in got)
    cells["layers"] = ("ok " if ok else "MISMATCH ") + desc
    if not ok:
        bad.append("layers")
    # ranks
    devs = rank_devices(out)
    wrong = []
    for r, (pj, dr, tt) in res["coords"].items():
        d = plan["stages"][pj]["replicas"][dr][tt]
        if devs.get(int(r)) != (d["node"], d["gpu"]):
            wrong.append(int(r))
    world = tp * dp * pp
    if len(res["coords"]) != world:
        wrong.append(-1)
    cells["ranks"] = f"ok {world}" if not wrong else f"MISMATCH ranks {sorted(wrong)[:4]}"
    if wrong:
        bad.append("ranks")
    # batch
    f = res["facts"]
    ok = f.get("num_microbatches") == nmb and f.get("dp") == dp
    cells["batch"] = f"{f.get('num_microbatches')} x mb, dp {f.get('dp')}" + ("" if ok else " MISMATCH")
    if not ok:
        bad.append("batch")
    # number format and recomputation, as the engine resolved them
    if engine == "megatron":
        fmt = "bf16" if f.get("bf16") else ("fp16" if f.get("fp16") else "fp32")
        rc = f.get("recompute")
    elif engine == "torchtitan":
        fmt = f.get("param_dtype")
        rc = {"FullAC.Config": "full", "SelectiveAC.Config": "selective"}.get(f.get("ac"), f.get("ac"))
    else:
        fmt = "bf16" if f.get("bf16") else ("fp16" if f.get("fp16") else "fp32")
        rc = f.get("recompute")
    cells["settings"] = f"{fmt}, recompute {rc or 'none'}"
    # bf16 unless the case names a precision; FP8 keeps bf16 storage.
    want = flags[flags.index("--precision") + 1] if "--precision" in flags else "bf16"
    if want == "fp8":
        want = "bf16"
    if fmt not in (want, {"bf16": "bfloat16", "fp16": "float16"}[want]):
        cells["settings"] += " MISMATCH"
        bad.append("format")
    if ("--recompute" in flags) != (rc == "full"):
        cells["settings"] += " MISMATCH"
        bad.append("recompute")
    def setting(shown, got, want, what):
        """One more setting as the engine resolved it, against the plan's."""
        cells["settings"] += f", {shown}"
        if got != want:
            cells["settings"] += " MISMATCH"
            bad.append(what)

    if engine == "megatron":
        # The attention amp priced: explicit is the unfused backend, fused
        # Megatron-LM's default (auto).
        got = f.get("attention_backend")
        want = "unfused" if "explicit" in flags else "auto"
        setting(f"attention {got}", got, want, "attention")
        # The model's rotary rescaling: the arguments say it, and the built
        # model divides its lowest frequency by 8 (Llama 3's and the
        # others': 1). Megatron-LM's gpt_builders.py passes
        # --use-rope-scaling, not the factor, to GPTModel, whose default is
        # 8: Llama 3.2's 32 is built as 8, which amp's export warns of.
        factor = ROPE_FACTOR.get(model)
        if f.get("rope_scaling") is not None:
            got = f["rope_scaling"]
            want = [factor is not None, factor, 0.125 if factor else 1.0]
            setting(f"rope scaling {got[1] or 'none'} (built {got[2]})", got, want, "rope scaling")
            note = "rescales by its default, 8"
            warned = note in open(os.path.join(out, "export.err")).read()
            setting(f"factor warning {warned}", warned, factor not in (None, 8.0), "rope warning")
        # FP8 as Megatron-LM's recipe for Hopper sets it, in the
        # TransformerConfig the engine builds (off unless the plan says).
        got = f.get("fp8")
        want = ["hybrid", "delayed", 1024, "max"] if "fp8" in flags else [None, "delayed", 1, "most_recent"]
        setting(f"fp8 {got[0]}", got, want, "fp8")
        # The overlaps the plan was priced with, and its gradients' format:
        # fp32 under bf16 and fp8 unless --grad-reduce-in-bf16, 16-bit under fp16.
        for key, flag, shown in (("tp_comm_overlap", "--tp-comm-overlap", "tp comm overlap"),
                                 ("overlap_grad_reduce", "--overlap-allreduce", "overlap grad reduce")):
            got = f.get(key)
            setting(f"{shown} {got}", got, flag in flags, shown)
        got = f.get("grads_fp32")
        want = fmt != "fp16" and "--grad-reduce-in-bf16" not in flags
        setting(f"fp32 grads {got}", got, want, "gradients' format")
    if engine == "torchtitan":
        # torchtitan's llama3 flavors rescale as Llama 3.1 does, whichever
        # Llama 3 amp priced (the export says so); its qwen3 ones do not.
        got = f.get("rope_scaling")
        want = [["llama", 8.0]] if model.startswith("llama-3") else [["none", None]]
        setting(f"rope scaling {got}", got, want, "rope scaling")
    if engine == "torchtitan" and f.get("tp", 1) > 1:
        # Sequence parallelism as priced (torchtitan's default is on).
        got = f.get("sequence_parallel")
        setting(f"sequence parallel {got}", got, "--sequence-parallel" in flags, "sequence parallelism")
    if engine == "torchtitan":
        # The loss as priced: the recipe's chunked one unless the plan says
        # PyTorch's over the whole sequence.
        got = f.get("loss")
        want = "CrossEntropyLoss.Config" if "pytorch" in flags else "ChunkedLossWrapper.Config"
        setting(f"loss {got.split('.')[0] if got else got}", got, want, "loss")
        # Compiled as priced: the blocks when the plan says so, never the loss.
        got = f.get("compile")
        want = ["model"] if "--compile" in flags else None
        setting(f"compile {got}", got, want, "compile")
        # Eager launches as priced: torchtitan's CUDA graph capture off.
        got = f.get("cuda_graphs")
        setting(f"CUDA graphs {got}", got, False, "CUDA graphs")
        # A named Adam step, else torchtitan's default (fused).
        got = f.get("optimizer_implementation")
        want = flags[flags.index("--optimizer-step") + 1] if "--optimizer-step" in flags else "fused"
        setting(f"Adam {got}", got, want, "optimizer")
    if engine == "deepspeed":
        # DeepSpeed's default, scatter-gather sends, unless the plan says full.
        want = " ".join(flags).find("--pipeline-send full") < 0
        got = (f.get("pipe_partitioned"), f.get("grad_partitioned"))
        setting(f"partitioned sends {got[0]}", got, (want, want), "sends")
        # The gradient all-reduce's dtype as the engine resolves it
        # (`DeepSpeedEngine.communication_data_type`: the config's, else the
        # training format's).
        got = f.get("communication_data_type")
        want = "torch.float32" if "--fp32-allreduce" in flags else None
        setting(f"all-reduce {got or 'as trained'}", got, want, "all-reduce")
        # The tied layers as priced: a module tying them passes the export's
        # check (on DeepSpeed's TiedLayerSpec), one tying nothing does not.
        pairs, verdict = f.get("tied") or (None, None)
        setting(f"tied {pairs} {verdict}", verdict in ("none", "enforced", "plain module"), True, "tied")
        # The ZeRO stage as priced, and the module it needs: the pipeline
        # engine asserts a stage below 2, so one stage under ZeRO-2/3 is a
        # plain module on DeepSpeed's own engine.
        zero = flags[flags.index("--optimizer-sharding") + 1] if "--optimizer-sharding" in flags else "none"
        want = {"none": 0, "zero1": 1, "zero2": 2, "zero3": 3}[zero]
        setting(f"ZeRO {f.get('zero_stage')}", f.get("zero_stage"), want, "ZeRO stage")
        stage = want
        got = f.get("module")
        want = "plain" if pp == 1 and stage >= 2 else "PipelineModule"
        setting(f"{got} module", got, want, "module")
        if stage >= 2:
            # What amp's memory and time assume of ZeRO-2/3 (its buckets at
            # 5e8 and 5e7 elements; ZeRO-3 reduces beside the passes, ZeRO-2
            # only with --overlap-allreduce), as the engine resolves it.
            got = (f.get("overlap_comm"), f.get("reduce_bucket_size"),
                   f.get("prefetch_bucket_size") if stage == 3 else None)
            want = (stage == 3 or "--overlap-allreduce" in flags, 500_000_000, 50_000_000 if stage == 3 else None)
            setting(f"overlap_comm {got[0]}, buckets {got[1]:.0e}", got, want, "ZeRO buckets")
    return cells, bad


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--amp", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--engines", default="megatron,deepspeed,torchtitan")
    ap.add_argument("--results")
    a = ap.parse_args()
    engines = a.engines.split(",")
    if "megatron" in engines and not os.environ.get("MEGATRON_LM"):
        print("MEGATRON_LM is not set: Megatron-LM's training arguments are not in the megatron-core wheel, so "
              "its checks are SKIPPED. Give a checkout: MEGATRON_LM=/path/to/Megatron-LM.", file=sys.stderr)
        engines.remove("megatron")
    rows, failed = [], 0

    def fixed():
        """The hand-written plans: one plan, every engine."""
        for case in CASES:
            (name, model, seq, cluster, nodes, tp, dp, pp, bounds, mb, nmb, flags, refuse) = case
            d = os.path.join(a.work, re.sub(r"[^\w.-]+", "_", name))
            os.makedirs(d, exist_ok=True)
            plan = plan_json(nodes, tp, dp, pp, bounds, mb, nmb)
            pj = os.path.join(d, "plan.json")
            json.dump(plan, open(pj, "w"))
            for engine in engines:
                yield case, engine, plan, pj, ([] if "--precision" in flags else ["--precision", "bf16"]) + flags

    def searched():
        """The search's plans: each engine its own, exported as the plan
        file records it."""
        for (name, model, seq, cluster, batch, plan_flags, rank, refuse) in SEARCHED:
            for engine in engines:
                d = os.path.join(a.work, re.sub(r"[^\w.-]+", "_", name), engine)
                os.makedirs(d, exist_ok=True)
                p = subprocess.run([a.amp, "plan", "-q", "--json", "--top", str(rank), "--model", model, "--seq",
                                    str(seq), "--cluster", cluster, "--global-batch", str(batch), "--engine", engine]
                                   + plan_flags, capture_output=True, text=True)
                if p.returncode != 0:
                    yield (name, None, p.stderr.strip()), engine, None, None, None
                    continue
                found = json.loads(p.stdout)
                plan = found["plans"][rank - 1]
                made_for = found["plans"][rank - 1].get("made_for", {})
                pj = os.path.join(d, "plan.json")
                json.dump(plan, open(pj, "w"))
                bounds = [st["first_layer"] for st in plan["stages"]] + [plan["stages"][-1]["end_layer"]]
                case = (name, model, seq, cluster, None, plan["tp"], plan["dp"], plan["pp"], bounds,
                        plan["micro_batch"], plan["num_micro_batches"], flags_of(plan, made_for), refuse)
                yield case, engine, plan, pj, []

    for case, engine, plan, pj, export_flags in itertools.chain(fixed(), searched()):
        if plan is None:
            row = {"plan": case[0], "engine": engine, "status": "FAIL: amp plan found none", "note": case[2][:200]}
            failed += 1
            rows.append(row)
            print(row, flush=True)
            continue
        (name, model, seq, cluster, nodes, tp, dp, pp, bounds, mb, nmb, flags, refuse) = case
        out = os.path.join(os.path.dirname(pj), engine)
        p = subprocess.run([a.amp, "export", pj, "--model", model, "--seq", str(seq), "--cluster", cluster,
                            "--to", engine, "--out", out] + export_flags,
                           capture_output=True, text=True)
        if p.returncode == 0:
            # What the export warned of, for the checks that read it.
            with open(os.path.join(out, "export.err"), "w") as e:
                e.write(p.stderr)
        row = {"plan": name, "engine": engine}
        if p.returncode != 0:
            msg = p.stderr.strip().splitlines()[-1] if p.stderr.strip() else "?"
            if engine in refuse and refuse[engine] in msg:
                row.update(status="refused as expected", note=msg.split(": ", 2)[-1][:90])
            else:
                row.update(status="FAIL: amp refused", note=msg[:200])
                failed += 1
            rows.append(row)
            print(row, flush=True)
            continue
        if engine in refuse:
            row.update(status="FAIL: expected a refusal")
            failed += 1
        res, secs = run_engine(a.python, engine, out, tp * dp * pp, {})
        if "error" in res:
            row.update(status="FAIL: engine rejected", note=res["error"][:200])
            failed += 1
        else:
            cells, bad = compare(case, engine, res, out, plan)
            row.update(cells)
            if "placement" in plan:
                # A searched plan: where the search put its stages.
                row["note"] = f"node order {plan['placement']['node_order']}"
            row["status"] = "ok" if not bad else "FAIL: " + ",".join(bad)
            failed += bool(bad)
        row["secs"] = round(secs)
        rows.append(row)
        print(row, flush=True)
    cols = ["plan", "engine", "status", "params", "layers", "ranks", "batch", "settings", "note"]
    md = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        md.append("| " + " | ".join(str(r.get(c, "")).replace("|", "/") for c in cols) + " |")
    table = "\n".join(md)
    print(table)
    if a.results:
        with open(a.results, "w") as f:
            f.write(table + "\n")
    print(f"{len(rows) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()

"""amp_planner against the amp binary: same numbers, same messages."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import amp_planner as amp
import pytest
from conftest import SHARED_DATA, TINY_LLAMA


def test_plan_on_zoo_model_equals_cli_json(cli_json):
    expected = cli_json(
        "plan",
        "--model",
        "gpt2-medium",
        "--cluster",
        "2x4xV100",
        "--global-batch",
        "32",
        "--seq",
        "512",
        "--json",
        "-q",
    )
    result = amp.plan(model="gpt2-medium", cluster="2x4xV100", global_batch=32, seq=512)
    assert result.to_dict() == expected
    assert len(result.plans) == len(expected["plans"]) > 0
    best = result.plans[0]
    first = expected["plans"][0]
    # Bit for bit: the same floats, not merely close ones.
    assert best.predicted_iteration_s == first["predicted_iteration_s"]
    assert (best.tp, best.pp, best.dp, best.micro_batch) == (
        first["tp"],
        first["pp"],
        first["dp"],
        first["micro_batch"],
    )
    assert best.stages == first["stages"]
    assert best.memory == first["memory"] and best.memory
    # Each stage's passes, as amp eval gives them; the breakdown's stage among them.
    assert len(best.stage_passes_s) == best.pp
    assert 0 <= best.breakdown_stage < best.pp
    assert best.to_dict() == first
    times = [p.predicted_iteration_s for p in result.plans]
    assert times == sorted(times)


def test_setup_keywords_become_flags(cli_json):
    expected = cli_json(
        "plan",
        "--model",
        "gpt2",
        "--cluster",
        "2x4xA100",
        "--global-batch",
        "64",
        "--schedule",
        "interleaved:2",
        "--recompute",
        "--overlap-allreduce",
        "--top",
        "3",
        "--json",
        "-q",
    )
    result = amp.plan(
        model="gpt2",
        cluster="2x4xA100",
        global_batch=64,
        schedule="interleaved:2",
        recompute=True,
        overlap_allreduce=True,
        top=3,
    )
    assert result.to_dict() == expected
    assert len(result.plans) <= 3


def test_megatron_overlaps_and_bf16_gradients_reach_the_cli(cli_json):
    """Megatron-LM's --tp-comm-overlap and --grad-reduce-in-bf16 as keywords."""
    args = ("--model", "llama3-8b", "--cluster", "1x8xH100", "--global-batch", "16")
    args += ("--engine", "megatron", "--sequence-parallel", "--top", "1", "--json", "-q")
    expected = cli_json("plan", *args, "--tp-comm-overlap", "--grad-reduce-in-bf16")
    result = amp.plan(
        model="llama3-8b",
        cluster="1x8xH100",
        global_batch=16,
        engine="megatron",
        sequence_parallel=True,
        tp_comm_overlap=True,
        grad_reduce_in_bf16=True,
        top=1,
    )
    assert result.to_dict() == expected
    setup = expected["plans"][0]["setup"]
    assert setup["formats"]["gradients"] == "bf16"
    assert setup["tp_comm_overlap"] is True


def test_fp32_allreduce_false_turns_the_amp_runs_default_off(cli_json):
    """On the AMP examples the fp32 all-reduce is on by default; False says off."""
    off = cli_json(
        "plan", "--example", "homogeneous", "--fp32-allreduce=false", "--top", "1", "--json", "-q"
    )
    on = cli_json("plan", "--example", "homogeneous", "--top", "1", "--json", "-q")
    assert amp.plan(example="homogeneous", fp32_allreduce=False, top=1).to_dict() == off
    assert amp.plan(example="homogeneous", fp32_allreduce=True, top=1).to_dict() == on
    assert off["plans"][0]["predicted_iteration_s"] < on["plans"][0]["predicted_iteration_s"]


def test_search_keywords_reach_the_cli(cli_json):
    """The wider search's options work from Python as on the command line."""
    expected = cli_json(
        "plan",
        "--example",
        "het-cluster",
        "--search-setup",
        "recompute,sharding",
        "--subsets",
        "--compare",
        "--calibration",
        "neutral",
        "--top",
        "3",
        "--json",
        "-q",
    )
    result = amp.plan(
        example="het-cluster",
        search_setup="recompute,sharding",
        subsets=True,
        compare=True,
        calibration="neutral",
        top=3,
    )
    assert result.to_dict() == expected
    names = [b["name"] for b in expected["baselines"]]
    assert names == ["AMP's space (given setup)", "Megatron-LM heuristic"]
    assert all(p["gpus"] <= 16 for p in expected["plans"])


def test_a_budget_reaches_the_cli(cli_json):
    """max_usd_per_hour keeps plans whose GPUs cost at most the budget."""
    expected = cli_json(
        "plan", "--example", "het-cluster", "--max-usd-per-hour", "30", "--json", "-q"
    )
    result = amp.plan(example="het-cluster", max_usd_per_hour=30)
    assert result.to_dict() == expected
    assert expected["plans"]
    assert all(p["usd_per_hour"] <= 30 for p in expected["plans"])


def test_uneven_dp_reaches_the_cli(cli_json):
    """uneven_dp lets dp not divide the batch (12 T4 for 32 samples)."""
    args = ["--model", "gpt2", "--cluster", "3xg4dn.12xlarge", "--global-batch", "32"]
    expected = cli_json("plan", *args, "--uneven-dp", "--top", "50", "--json", "-q")
    result = amp.plan(
        model="gpt2", cluster="3xg4dn.12xlarge", global_batch=32, uneven_dp=True, top=50
    )
    assert result.to_dict() == expected
    uneven = [p for p in expected["plans"] if "replica_micro_batches" in p]
    assert uneven
    assert all(p["micro_batch"] * sum(p["replica_micro_batches"]) == 32 for p in uneven)


def test_fewer_replicas_reaches_the_cli(cli_json):
    """fewer_replicas widens the per-type search; alone it is refused."""
    flags = ["--per-type-tp", "--uneven-dp", "--top", "3", "--json", "-q"]
    expected = cli_json("plan", "--example", "het-cluster", *flags, "--fewer-replicas")
    without = cli_json("plan", "--example", "het-cluster", *flags)
    result = amp.plan(
        example="het-cluster", per_type_tp=True, uneven_dp=True, fewer_replicas=True, top=3
    )
    assert result.to_dict() == expected
    assert expected["candidates"] > without["candidates"]
    with pytest.raises(amp.AmpError, match="--fewer-replicas adds candidates"):
        amp.plan(example="het-cluster", fewer_replicas=True)


def test_per_stage_tp_reaches_the_cli(cli_json):
    """per_stage_tp runs the per-type search with a type's stages at two degrees."""
    flags = ["--top", "3", "--json", "-q"]
    expected = cli_json("plan", "--example", "het-cluster", *flags, "--per-stage-tp")
    per_type = cli_json("plan", "--example", "het-cluster", *flags, "--per-type-tp")
    result = amp.plan(example="het-cluster", per_stage_tp=True, top=3)
    assert result.to_dict() == expected
    assert expected["candidates"] > per_type["candidates"]
    first = expected["plans"][0]["predicted_iteration_s"]
    assert first <= per_type["plans"][0]["predicted_iteration_s"]


def test_hf_config_dict_and_object_and_path_agree(tiny_config: Path):
    by_path = amp.plan(model=str(tiny_config), cluster="1x4xA100", global_batch=8, seq=64)
    by_dict = amp.plan(model=dict(TINY_LLAMA), cluster="1x4xA100", global_batch=8, seq=64)

    class Config:  # what a transformers PretrainedConfig offers
        def to_dict(self):
            return dict(TINY_LLAMA)

    by_obj = amp.plan(model=Config(), cluster="1x4xA100", global_batch=8, seq=64)
    assert by_path.plans == by_dict.plans == by_obj.plans
    assert by_path.plans[0].predicted_iteration_s > 0


def test_cluster_dict_equals_cluster_file(tmp_path: Path, cli_json):
    cluster = {
        "name": "mixed",
        "nodes": [
            {"gpu": "V100-16GB", "gpus": 4, "intra_gbps": 170, "inter_gbps": 10},
            {"gpu": "T4", "gpus": 4, "intra_gbps": 50, "inter_gbps": 50},
        ],
    }
    path = tmp_path / "cluster.json"
    path.write_text(json.dumps(cluster))
    expected = cli_json(
        "plan", "--model", "gpt2", "--cluster", str(path), "--global-batch", "16", "--json", "-q"
    )
    assert amp.plan(model="gpt2", cluster=cluster, global_batch=16).to_dict() == expected


def test_a_cluster_dicts_own_gpu_and_compile_reach_the_cli(tmp_path: Path, cli_json):
    cluster = {
        "name": "grand-teton",
        "gpus": [
            {
                "name": "H100-500W",
                "like": "H100-SXM",
                "bf16_tflops": 835,
                "fp16_tflops": 835,
                "memory_bandwidth_gbs": 2400,
            }
        ],
        "nodes": [{"gpu": "H100-500W", "gpus": 8, "intra_gbps": 3600, "inter_gbps": 3200}],
    }
    path = tmp_path / "cluster.json"
    path.write_text(json.dumps(cluster))
    flags = ["--seq", "2048", "--global-batch", "16", "--engine", "torchtitan", "--compile"]
    expected = cli_json(
        "plan", "--model", "llama3-8b", "--cluster", str(path), *flags, "--json", "-q"
    )
    got = amp.plan(
        model="llama3-8b",
        cluster=cluster,
        seq=2048,
        global_batch=16,
        engine="torchtitan",
        compile=True,
    )
    assert got.to_dict() == expected
    # The defined GPU is slower than the catalog's H100 it starts from.
    catalog = amp.plan(
        model="llama3-8b",
        cluster="1x8xH100",
        seq=2048,
        global_batch=16,
        engine="torchtitan",
        compile=True,
    )
    assert got.plans[0].predicted_iteration_s > catalog.plans[0].predicted_iteration_s


def test_example_and_profile_paths(cli_json):
    expected = cli_json("plan", "--example", "het-cluster", "--json", "-q")
    assert amp.plan(example="het-cluster").to_dict() == expected


def test_errors_carry_the_cli_message(cli):
    r = cli("plan", "--model", "gpt9", "--cluster", "1x8xH100", "--global-batch", "8")
    assert r.returncode != 0
    with pytest.raises(amp.AmpError) as e:
        amp.plan(model="gpt9", cluster="1x8xH100", global_batch=8)
    assert str(e.value) == r.stderr.strip().removeprefix("error: ")
    assert "unknown model `gpt9`" in str(e.value)

    with pytest.raises(amp.AmpError, match="unknown GPU"):
        amp.plan(model="gpt2", cluster="1x8xH900", global_batch=8)


def test_unknown_keyword_is_a_type_error():
    with pytest.raises(TypeError, match="'pipeline_magic'"):
        amp.plan(model="gpt2", cluster="1x8xH100", global_batch=8, pipeline_magic=3)
    with pytest.raises(TypeError):
        amp.plan(model="gpt2", global_batch=8)


def test_evaluate_equals_cli_eval(tmp_path: Path, cli_json):
    result = amp.plan(model="gpt2", cluster="2x4xA100", global_batch=64, top=2)
    best = result.plans[0]
    ev = amp.evaluate(best)
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps(best.to_dict()))
    expected = cli_json(
        "eval", str(plan_file), "--model", "gpt2", "--cluster", "2x4xA100", "--json"
    )
    assert ev.to_dict() == expected
    # The default cost model prices a plan the same in search and evaluation.
    assert ev.iteration_s == pytest.approx(best.predicted_iteration_s, rel=1e-9)
    # What of each peak the allocator does not count, and what nvidia-smi adds.
    assert (ev.framework_reserve_bytes, ev.allocator_cache_bytes) == (4.5e9, 0.0)
    # A bare plan dict with explicit inputs, and a whole result (its fastest plan).
    assert amp.evaluate(best.to_dict(), model="gpt2", cluster="2x4xA100").to_dict() == expected
    assert amp.evaluate(result).to_dict() == expected


def test_evaluate_and_export_take_the_setup_from_the_plan(tmp_path: Path, cli_json):
    result = amp.plan(
        model="gpt2", cluster="2x4xA100", global_batch=64, schedule="interleaved:2", top=1
    )
    best = result.plans[0]
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps(best.to_dict()))
    expected = cli_json(
        "eval", str(plan_file), "--model", "gpt2", "--cluster", "2x4xA100", "--json"
    )
    assert amp.evaluate(best).to_dict() == expected
    assert amp.export(best, "megatron", tmp_path / "launch")


def test_evaluate_refuses_a_plan_it_cannot_run():
    best = amp.plan(model="gpt2", cluster="2x4xA100", global_batch=64).plans[0]
    with pytest.raises(amp.AmpError, match="(?s)cannot run model `gpt2-xl`.*not in the cluster"):
        amp.evaluate(best.to_dict(), model="gpt2-xl", cluster="1x1xA100")


def test_export_writes_launch_files(tmp_path: Path):
    best = amp.plan(model="gpt2", cluster="1x8xA100", global_batch=64).plans[0]
    files = amp.export(best, "megatron", tmp_path / "launch")
    assert files, "export lists the files it wrote"
    for f in files:
        assert Path(f).is_file(), f
    with pytest.raises(amp.AmpError):
        amp.export(best, "no-such-engine", tmp_path / "x")


def test_validate_equals_cli(cli_json):
    if not (SHARED_DATA / "amp-paper").is_dir():
        # As the Rust tests: CI must have the data, a developer may not.
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but {SHARED_DATA} is missing")
        pytest.skip("no ../shared/data")
    dirs = [str(SHARED_DATA / "amp-paper"), str(SHARED_DATA / "sailor")]
    expected = cli_json("validate", *dirs, "--json")
    got = amp.validate(dirs)
    assert got.to_dict() == expected
    with pytest.raises(amp.AmpError):
        amp.validate(["/no/such/dir"])


def test_your_own_runs_validate_and_fit_from_python(tmp_path, cli_json):
    # Runs "measured" as amp predicts them under Sailor's GH200 constants,
    # written as a runs.toml beside the plans: validate is exact under
    # those constants, and fit finds them (but the host staging, which no
    # plan here has).
    result = amp.plan(
        model="gpt2-medium", cluster="2x4xA100-40GB", global_batch=64, seq=1024, top=4
    )
    (tmp_path / "plans.json").write_text(json.dumps(result.to_dict()))
    lines = ['model = "gpt2-medium"', "seq = 1024", 'cluster = "2x4xA100-40GB"']
    for rank, p in enumerate(result.plans, start=1):
        e = amp.evaluate(p, calibration="sailor-gh200")
        reading = max(m["peak_bytes"] for m in e.memory) + e.allocator_cache_bytes
        lines += [
            "[[run]]",
            'plan = "plans.json"',
            f"rank = {rank}",
            f"iteration_s = {e.iteration_s!r}",
            f"memory_used_mib = {reading / 2**20!r}",
        ]
    (tmp_path / "runs.toml").write_text("\n".join(lines) + "\n")
    got = amp.validate(tmp_path, calibration="sailor-gh200")
    assert got.to_dict() == cli_json(
        "validate", str(tmp_path), "--calibration", "sailor-gh200", "--json"
    )
    d = got.datasets[0]
    assert d["runs"] == 4 and d["time_error"]["max"] < 1e-9 and d["memory_error"]["max"] < 1e-9
    out = tmp_path / "cal.json"
    f = amp.fit(tmp_path / "runs.toml", out=out)
    assert f.to_dict() == cli_json("fit", str(tmp_path), "--json")
    assert f.calibration["inter_node_efficiency"] == 0.35
    assert f.calibration["allocator_cache_bytes"] == 4.5e9
    assert json.loads(out.read_text()) == f.calibration
    by_run = amp.fit(tmp_path, leave_one_run_out=True).sets[0]["leave_one_run_out"]
    assert by_run["runs"] == 4 and by_run["time_error"]["max"] < 1e-9
    with pytest.raises(amp.AmpError, match="no such file or directory"):
        amp.fit(tmp_path / "missing")


def test_plans_on_sailors_data_export_as_sailor_files(tmp_path):
    if not (SHARED_DATA / "sailor").is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but {SHARED_DATA} is missing")
        pytest.skip("no ../shared/data")
    data = str(SHARED_DATA / "sailor")
    result = amp.plan(
        model="OPT-350", cluster="2x4xA100-40+2x4xV100-16", global_batch=64, sailor_data=data
    )
    best = result.plans[0]
    # The plan remembers Sailor's data: evaluate() and export() use it.
    assert amp.evaluate(best).iteration_s == best.predicted_iteration_s
    files = amp.export(best, "sailor", tmp_path / "sailor")
    assert len(files) == 1 and Path(files[0]).name.startswith("plan_config_N")
    back = amp.evaluate(files[0], sailor_data=data, model="OPT-350")
    assert back.iteration_s == pytest.approx(best.predicted_iteration_s, rel=1e-9)


def test_layers_match_the_model():
    info = amp.layers("gpt2", seq=128)
    kinds = [layer["kind"] for layer in info["model"]["layers"]]
    assert kinds[0] == "embedding" and kinds[-1] == "vocab_projection"
    assert kinds.count("transformer_block") == 12
    assert info["arch"]["hidden"] == 768 and info["model"]["shape"]["seq_len"] == 128
    assert amp.layers("gpt2-amp")["arch"] is None
    with pytest.raises(amp.AmpError, match="unknown model"):
        amp.layers("gpt9")


def test_run_cli_is_the_command(cli):
    code, out, err = amp.run_cli(["plan", "--example", "homogeneous", "-q"])
    r = cli("plan", "--example", "homogeneous", "-q")
    assert (code, out, err) == (r.returncode, r.stdout, r.stderr)


def test_the_attention_kernel_carries_to_evaluate():
    kw = dict(model="gpt2-medium", cluster="1x8xA100-40GB", global_batch=64, seq=1024)
    fused = amp.plan(attention="fused", **kw)
    explicit = amp.plan(attention="explicit", **kw)
    assert fused.plans[0].predicted_iteration_s < explicit.plans[0].predicted_iteration_s
    # evaluate() rebuilds the model with the plan's attention.
    best = fused.plans[0]
    assert amp.evaluate(best).iteration_s == best.predicted_iteration_s


def test_the_gelu_kernel_carries_to_evaluate():
    kw = dict(model="gpt2", cluster="1x1xH200", global_batch=12, seq=1024)
    composite = amp.plan(**kw).plans[0]
    fused = amp.plan(gelu="fused", **kw).plans[0]
    assert fused.predicted_iteration_s < composite.predicted_iteration_s
    # evaluate() rebuilds the model with the plan's GeLU kernel.
    assert amp.evaluate(fused).iteration_s == fused.predicted_iteration_s


def test_the_loss_and_adam_kernels_carry_to_evaluate():
    """cross_entropy= and optimizer_step= become flags, and the plan's JSON
    carries them to evaluate(): the same time and memory again."""
    kw = dict(model="gpt2", cluster="1x1xH200", global_batch=12, seq=1024)
    pytorch = amp.plan(**kw).plans[0]
    megatron = amp.plan(cross_entropy="megatron", optimizer_step="fused", **kw).plans[0]
    peak = lambda p: max(m["peak_bytes"] for m in p.to_dict()["memory"])  # noqa: E731
    # PyTorch's loss holds 8 bytes per logit beyond the stored softmax,
    # Megatron-LM's 2: 6 x 12 x 1024 x 50257 bytes less.
    assert peak(pytorch) - peak(megatron) == pytest.approx(6 * 12 * 1024 * 50257)
    assert megatron.to_dict()["setup"]["cross_entropy"] == "megatron"
    assert megatron.to_dict()["setup"]["optimizer_step"] == "fused"
    again = amp.evaluate(megatron)
    assert again.iteration_s == megatron.predicted_iteration_s


def test_the_block_kernels_carry_to_evaluate():
    """block_kernels= becomes a flag, and the plan's JSON carries it to
    evaluate(): Hugging Face's eager blocks under DeepSpeed hold more than
    an engine's fused ones, and price the same again."""
    kw = dict(model="llama3.2-1b", cluster="1x1xH200", global_batch=8, seq=2048)
    kw.update(engine="deepspeed", top=1)
    fused = amp.plan(**kw).plans[0]
    eager = amp.plan(block_kernels="eager", **kw).plans[0]
    assert eager.to_dict()["setup"]["block_kernels"] == "eager"
    assert "block_kernels" not in fused.to_dict()["setup"]
    again = amp.evaluate(eager)
    assert again.iteration_s == eager.predicted_iteration_s
    peak = lambda p: max(m["activations_bytes"] for m in p.to_dict()["memory"])  # noqa: E731
    assert eager.micro_batch == fused.micro_batch == 8
    assert peak(eager) > peak(fused)
    assert eager.predicted_iteration_s > fused.predicted_iteration_s


def test_the_clis_notes_reach_python_as_warnings():
    """What the CLI says on stderr beside a result is an AmpWarning: under
    DeepSpeed with the blocks unsaid, which blocks were priced and the
    keyword for Hugging Face's; nothing once block_kernels= says it."""
    kw = dict(model="llama3.2-1b", cluster="1x1xH200", global_batch=8, seq=2048)
    kw.update(engine="deepspeed", top=1)
    with pytest.warns(amp.AmpWarning, match="add --block-kernels eager") as said:
        fused = amp.plan(**kw)
    assert str(said[0].message).startswith("blocks: priced as an engine's fused kernels")
    # It points at the caller's line, not at amp_planner's.
    assert said[0].filename == __file__
    with pytest.warns(amp.AmpWarning, match="add --block-kernels eager"):
        amp.evaluate(fused)
    with warnings.catch_warnings():
        warnings.simplefilter("error", amp.AmpWarning)
        eager = amp.plan(block_kernels="eager", **kw)
        amp.evaluate(eager)


def test_sensitivity_reaches_the_cli(cli_json):
    """sensitivity=True re-runs the search under the other shipped constants."""
    expected = cli_json("plan", "--example", "het-cluster", "--sensitivity", "--json", "-q")
    result = amp.plan(example="het-cluster", sensitivity=True)
    assert result.to_dict() == expected
    names = [r["calibration"] for r in expected["sensitivity"]]
    assert names == ["neutral", "amp-t4", "sailor-gh200"]
    assert all(r["regret"] >= 1.0 for r in expected["sensitivity"])
    hedge = expected["sensitivity_hedge"]
    assert hedge["worst_regret"] >= 1.0
    # The hedge is a plan evaluate() prices as the CLI did.
    t = amp.evaluate(result.hedge).iteration_s
    assert t == hedge["predicted_iteration_s"]
    assert amp.plan(example="het-cluster").hedge is None

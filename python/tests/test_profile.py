"""The profiler's CPU mode on a tiny model: amp reads what it writes and says
the times are measured. Skipped where PyTorch is not installed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import amp_planner as amp
import pytest
from conftest import TINY_LLAMA, torch_available

pytestmark = pytest.mark.skipif(not torch_available(), reason="PyTorch is not installed")


def test_modules_hold_the_parameters_amp_counts():
    from amp_planner.profile.modules import build

    tiny_qwen3 = dict(TINY_LLAMA, model_type="qwen3", head_dim=16)
    tiny_gemma3 = dict(TINY_LLAMA, model_type="gemma3_text", head_dim=32)
    tiny = [(dict(TINY_LLAMA), 32), (tiny_qwen3, 32), (tiny_gemma3, 32)]
    models = tiny + [("gpt2", 64), ("opt-350m", 64)]
    for model, seq in models + [("bert-large", 64)]:
        info = amp.layers(model, seq)
        s = info["model"]["shape"]["seq_len"]
        for layer in info["model"]["layers"]:
            module, _ = build(layer, info["arch"], s, 1)
            n = sum(p.numel() for p in module.parameters())
            assert n == layer["params"], (model, layer["name"], n, layer["params"])


def test_tp_slices_shrink_the_block():
    from amp_planner.profile.modules import build

    info = amp.layers(dict(TINY_LLAMA), 32)
    block = info["model"]["layers"][1]
    full = sum(p.numel() for p in build(block, info["arch"], 32, 1)[0].parameters())
    half = sum(p.numel() for p in build(block, info["arch"], 32, 2)[0].parameters())
    assert half < full


def test_cpu_profile_is_read_by_amp_plan_as_measured(tmp_path: Path, tiny_config: Path, cli):
    out = tmp_path / "profile.toml"
    model_out = tmp_path / "measured-model.json"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "amp_planner.profile",
            "--model",
            str(tiny_config),
            "--seq",
            "32",
            "--micro-batches",
            "1,2",
            "--tp",
            "1,2",
            "--device",
            "cpu",
            "--gpu",
            "T4",
            "--reps",
            "2",
            "--warmup",
            "1",
            "--out",
            str(out),
            "--model-out",
            str(model_out),
            "-q",
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    text = out.read_text()
    assert 'gpu = "T4"' in text and 'source = "slice:' in text and 'precision = "fp32"' in text
    assert text.count("[[entries]]") == 4  # 2 tp x 2 micro-batches

    args = [
        "plan",
        "--model",
        str(tiny_config),
        "--seq",
        "32",
        "--cluster",
        "1xg4dn.12xlarge",
        "--global-batch",
        "8",
        "--profile",
        str(out),
        "--precision",
        "fp32",  # the profile's number format: amp refuses to mix formats
    ]
    table = cli(*args, "-q")
    assert table.returncode == 0, table.stderr
    assert "T4: tp 1, 2 measured (slice: amp_planner.profile on cpu, float32)" in table.stdout
    got = cli(*args, "--json", "-q")
    data = json.loads(got.stdout)
    assert any("measured" in s for s in data["compute_sources"])
    # The Python API takes the same profile and gives the same numbers.
    assert (
        amp.plan(
            model=str(tiny_config),
            seq=32,
            cluster="1xg4dn.12xlarge",
            global_batch=8,
            profile=out,
            precision="fp32",
        ).to_dict()
        == data
    )

    # The measured activations make a layer list amp plans with.
    model = json.loads(model_out.read_text())
    assert all(layer["stored_activation_elems_per_sample"] > 0 for layer in model["layers"][1:])
    assert amp.plan(
        model=model, cluster="1xg4dn.12xlarge", global_batch=8, profile=out, precision="fp32"
    ).plans


def test_cpu_needs_a_gpu_label(tiny_config: Path):
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "amp_planner.profile",
            "--model",
            str(tiny_config),
            "--device",
            "cpu",
            "--out",
            "/dev/null",
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 1 and "--gpu NAME" in r.stderr
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "amp_planner.profile",
            "--model",
            str(tiny_config),
            "--device",
            "cpu",
            "--gpu",
            "T5",
            "--out",
            "/dev/null",
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 1 and "unknown GPU `T5`" in r.stderr


def test_links_on_cpu_write_a_cluster_amp_reads(tmp_path: Path, cli):
    out = tmp_path / "cluster.toml"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "amp_planner.profile",
            "--links",
            "--device",
            "cpu",
            "--procs",
            "2",
            "--gpu",
            "T4",
            "--message-mib",
            "1",
            "--reps",
            "3",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["gpus_per_node"] == 2 and report["nodes"] == 1
    assert report["intra_p2p"]["gbps"] > 0 and report["intra_allreduce_bus_gbps"] > 0
    text = out.read_text()
    assert "gpus = 2" in text and "intra_gbps" in text
    plan = cli("plan", "--model", "gpt2", "--cluster", str(out), "--global-batch", "4", "-q")
    assert plan.returncode == 0, plan.stderr


@pytest.mark.parametrize(
    "device, gib, expected",
    [
        ("NVIDIA A100-SXM4-80GB", 79.2, "A100-80GB"),
        ("NVIDIA A100-PCIE-40GB", 39.4, "A100-40GB"),
        ("NVIDIA H100 80GB HBM3", 79.1, "H100-SXM"),
        ("NVIDIA H100 PCIe", 79.1, "H100-PCIe"),
        ("Tesla T4", 14.7, "T4"),
        ("Tesla V100-SXM2-16GB", 15.8, "V100-16GB"),
        ("NVIDIA GeForce RTX 4090", 23.6, "RTX-4090"),
        ("NVIDIA H200", 139.8, "H200"),
        ("Some Accelerator 9000", 10.0, None),
    ],
)
def test_detected_devices_map_to_the_catalog(device, gib, expected):
    from amp_planner.profile.layers import catalog_name

    assert catalog_name(device, int(gib * 2**30)) == expected


def test_cpu_runs_make_a_folder_amp_validates_and_fits(tmp_path: Path, tiny_config: Path, cli):
    """--runs trains whole iterations and writes a runs folder: amp validate
    and amp fit read it, each run priced with the profile measured beside it."""
    out = tmp_path / "runs"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "amp_planner.profile",
            "--model",
            str(tiny_config),
            "--seq",
            "32",
            "--micro-batches",
            "1,2",
            "--device",
            "cpu",
            "--gpu",
            "T4",
            "--reps",
            "2",
            "--warmup",
            "1",
            "--runs",
            "--accumulate",
            "2",
            "--out",
            str(out),
            "-q",
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    names = sorted(p.name for p in out.iterdir())
    assert names == ["config.json", "plan-mb1.json", "plan-mb2.json", "profile.toml", "runs.toml"]
    runs = (out / "runs.toml").read_text()
    assert 'model = "config.json"' in runs and 'cluster = "1x1xT4"' in runs
    assert 'attention = "fused"' in runs and "gelu" not in runs  # a SwiGLU model
    assert runs.count("[[run]]") == 2 and runs.count("iteration_s = ") == 2
    plan = json.loads((out / "plan-mb2.json").read_text())
    assert (plan["micro_batch"], plan["num_micro_batches"]) == (2, 2)

    v = cli("validate", str(out), "--json")
    assert v.returncode == 0, v.stderr
    d = json.loads(v.stdout)["datasets"][0]
    assert d["runs"] == 2 and d["completed"] == 2 and d["unpriced"] == 0
    assert all(r["predicted_s"] > 0 for r in d["details"])
    f = cli("fit", str(out), "--json", "--leave-one-run-out")
    assert f.returncode == 0, f.stderr
    assert json.loads(f.stdout)["sets"][0]["leave_one_run_out"]["runs"] == 2


def test_runs_of_a_gelu_model_say_the_gelu_is_fused(tmp_path: Path, cli):
    """The modules run F.gelu: a GPT-2's runs file asks amp for that kernel
    (its default is Hugging Face's gelu_new written out); a fused AdamW is
    recorded in [setup], and an out-of-memory run is written as one."""
    from amp_planner.profile.iterations import IterationRun, write_runs
    from amp_planner.profile.layers import Entry, LayerMeasurement, LayerProfile

    info = amp.layers("gpt2", 64)
    n = len(info["model"]["layers"])
    prof = LayerProfile(
        "T4",
        "cpu",
        "float32",
        info["model"],
        [Entry(1, mb, [LayerMeasurement(1e-3 * mb, 2e-3 * mb, 1e-4, 0)] * n) for mb in (1, 2)],
    )
    runs = [IterationRun(1, 1, 0.05, 1000.0, 900.0), IterationRun(2, 1, None, None, None)]
    path = write_runs(tmp_path / "gpt2", "gpt2", 64, prof, runs, fused_adam=True)
    text = path.read_text()
    assert 'model = "gpt2"' in text and 'gelu = "fused"' in text
    # The plans record no setup: the file's [setup] says the step was fused.
    assert '[setup]\noptimizer_step = "fused"' in text
    assert "memory_used_mib = 1000.0" in text and "out_of_memory = true" in text
    v = cli("validate", str(path.parent), "--json")
    assert v.returncode == 0, v.stderr
    d = json.loads(v.stdout)["datasets"][0]
    assert (d["runs"], d["completed"], d["failed"]) == (2, 1, 1)

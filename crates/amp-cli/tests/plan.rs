//! The `amp plan` command, run as a user would.

mod common;

use common::{amp, stderr, stdout, tmp};

#[test]
fn parity_run_lists_every_candidate_with_plain_fields() {
    let o = amp(&[
        "plan",
        "--example",
        "het-cluster",
        "--cost-model",
        "amp-paper",
        "--placement",
        "artifact",
        "--json",
        "--top",
        "1000",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["schema_version"], 2);
    let plans = v["plans"].as_array().unwrap();
    assert_eq!(plans.len(), 53);
    let best = &plans[0];
    assert_eq!(
        (
            best["tp"].as_u64(),
            best["dp"].as_u64(),
            best["pp"].as_u64(),
            best["micro_batch"].as_u64()
        ),
        (Some(1), Some(4), Some(4), Some(1))
    );
    let t = best["predicted_iteration_s"].as_f64().unwrap();
    assert!((t - 1.0859).abs() < 0.001, "{t}");
    let stages = best["stages"].as_array().unwrap();
    assert_eq!(stages.len(), 4);
    assert_eq!(stages[0]["replicas"].as_array().unwrap().len(), 4);
    // Sorted fastest first.
    let times: Vec<f64> = plans
        .iter()
        .map(|p| p["predicted_iteration_s"].as_f64().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]));
}

#[test]
fn table_output_is_stable() {
    let a = amp(&[
        "plan",
        "--example",
        "homogeneous",
        "--cost-model",
        "amp-paper",
        "--top",
        "5",
    ]);
    let b = amp(&[
        "plan",
        "--example",
        "homogeneous",
        "--cost-model",
        "amp-paper",
        "--top",
        "5",
    ]);
    assert!(a.status.success(), "{}", stderr(&a));
    assert_eq!(a.stdout, b.stdout, "same inputs, byte-identical output");
    insta::assert_snapshot!(stdout(&a));
}

#[test]
fn user_files_work_like_built_ins() {
    let cluster = tmp(
        "c.toml",
        "[[nodes]]\ngpu = \"T4\"\ngpus = 4\nintra_gbps = 50\ninter_gbps = 50\ncount = 2\n",
    );
    let o = amp(&[
        "plan",
        "--model",
        "gpt2-amp",
        "--cluster",
        cluster.to_str().unwrap(),
        "--global-batch",
        "16",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["num_gpus"], 8);
    for p in v["plans"].as_array().unwrap() {
        let (tp, dp, pp) = (
            p["tp"].as_u64().unwrap(),
            p["dp"].as_u64().unwrap(),
            p["pp"].as_u64().unwrap(),
        );
        assert_eq!(tp * dp * pp, 8);
        assert_eq!(
            p["micro_batch"].as_u64().unwrap() * p["num_micro_batches"].as_u64().unwrap() * dp,
            16
        );
    }
}

fn assert_fails_with(args: &[&str], needles: &[&str]) {
    let o = amp(args);
    assert!(!o.status.success(), "should fail: {args:?}");
    let err = stderr(&o);
    assert!(!err.contains("panicked"), "{err}");
    for n in needles {
        assert!(err.contains(n), "expected `{n}` in: {err}");
    }
}

#[test]
fn unknown_model_is_named() {
    assert_fails_with(
        &[
            "plan",
            "--model",
            "gpt5",
            "--cluster",
            "homogeneous",
            "--global-batch",
            "8",
        ],
        &["unknown model `gpt5`", "gpt2-amp"],
    );
}

#[test]
fn unknown_gpu_type_is_named_with_suggestions() {
    let c = tmp(
        "a1000.toml",
        "[[nodes]]\ngpu = \"A1000\"\ngpus = 4\nintra_gbps = 600\ninter_gbps = 100\n",
    );
    assert_fails_with(
        &[
            "plan",
            "--model",
            "gpt2-amp",
            "--cluster",
            c.to_str().unwrap(),
            "--global-batch",
            "8",
        ],
        &["A1000", "did you mean", "--profile"],
    );
}

#[test]
fn missing_profile_entries_without_the_analytic_model() {
    let c = tmp(
        "a100.toml",
        "[[nodes]]\ngpu = \"A100-80GB\"\ngpus = 4\nintra_gbps = 600\ninter_gbps = 100\n",
    );
    let cluster = c.to_str().unwrap();
    assert_fails_with(
        &[
            "plan",
            "--model",
            "gpt2-amp",
            "--cluster",
            cluster,
            "--global-batch",
            "8",
            "--no-analytic",
        ],
        &["missing profile entries", "`A100-80GB`", "T4", "--profile"],
    );
    // With the analytic model (the default) the same request plans.
    let o = amp(&[
        "plan",
        "--model",
        "gpt2-amp",
        "--cluster",
        cluster,
        "--global-batch",
        "8",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("from the analytic model"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn issue_example_runs_with_no_files() {
    let o = amp(&[
        "plan",
        "--model",
        "llama3-70b",
        "--cluster",
        "2x8xH100+2x8xA100-80GB",
        "--global-batch",
        "512",
        "--seq",
        "4096",
        "--json",
        "--top",
        "3",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["num_gpus"], 32);
    assert!(!v["plans"].as_array().unwrap().is_empty());
}

#[test]
fn default_model_output_is_deterministic() {
    let args = ["plan", "--example", "het-cluster", "--json"];
    let a = amp(&args);
    assert!(a.status.success(), "{}", stderr(&a));
    assert_eq!(a.stdout, amp(&args).stdout);
}

#[test]
fn zero_gpus_is_rejected_with_its_place() {
    let c = tmp(
        "zero.toml",
        "[[nodes]]\ngpu = \"T4\"\ngpus = 0\nintra_gbps = 50\ninter_gbps = 50\n",
    );
    assert_fails_with(
        &[
            "plan",
            "--model",
            "gpt2-amp",
            "--cluster",
            c.to_str().unwrap(),
            "--global-batch",
            "8",
        ],
        &["zero.toml", "node 0", "gpus = 0"],
    );
}

#[test]
fn malformed_file_is_a_parse_error() {
    let c = tmp("bad.toml", "[[nodes]\ngpu = \n");
    assert_fails_with(
        &[
            "plan",
            "--model",
            "gpt2-amp",
            "--cluster",
            c.to_str().unwrap(),
            "--global-batch",
            "8",
        ],
        &["bad.toml", "cannot parse"],
    );
}

#[test]
fn batch_no_plan_can_divide() {
    // 16 GPUs, a 3-layer model, batch 7: dp must divide 7, so pp >= 4 > 3 layers.
    let m = tmp(
        "tiny.toml",
        r#"name = "tiny"
[[layers]]
name = "a"
kind = "other"
params = 10
output_elems_per_sample = 10
[[layers]]
name = "b"
kind = "other"
params = 10
output_elems_per_sample = 10
[[layers]]
name = "c"
kind = "other"
params = 10
output_elems_per_sample = 10
"#,
    );
    let p = tmp(
        "tiny-profile.toml",
        "[[entries]]\ngpu = \"T4\"\ntp = 1\nforward_s = [0.1, 0.1, 0.1]\n",
    );
    assert_fails_with(
        &[
            "plan",
            "--model",
            m.to_str().unwrap(),
            "--cluster",
            "homogeneous",
            "--profile",
            p.to_str().unwrap(),
            "--global-batch",
            "7",
        ],
        &["no valid plan", "global batch 7"],
    );
}

#[test]
fn profile_with_wrong_layer_count_is_rejected() {
    let p = tmp(
        "short.toml",
        "[[entries]]\ngpu = \"T4\"\ntp = 1\nforward_s = [0.1, 0.1]\n",
    );
    assert_fails_with(
        &[
            "plan",
            "--model",
            "gpt2-amp",
            "--cluster",
            "homogeneous",
            "--profile",
            p.to_str().unwrap(),
            "--global-batch",
            "8",
        ],
        &["2 layer times", "30 layers"],
    );
}

#[test]
fn emit_report_and_export_write_their_files() {
    let dir = std::env::temp_dir().join(format!("amp-cli-emit-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = dir.join("ds");
    let report = dir.join("r.html");
    let o = amp(&[
        "plan",
        "--example",
        "het-cluster",
        "--emit",
        "deepspeed",
        "--out",
        out.to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
        "--json",
        "--top",
        "3",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    for f in ["ds_config.json", "hostfile", "launch.sh"] {
        assert!(out.join(f).is_file(), "{f} missing; {}", stderr(&o));
    }
    let html = std::fs::read_to_string(&report).unwrap();
    assert!(
        html.starts_with("<!DOCTYPE html>") && html.contains("<svg"),
        "not a report"
    );
    // The same plan, exported from the JSON by `amp export`.
    let plans = dir.join("plans.json");
    std::fs::write(&plans, &o.stdout).unwrap();
    let meg = dir.join("meg");
    let o = amp(&[
        "export",
        plans.to_str().unwrap(),
        "--example",
        "het-cluster",
        "--rank",
        "1",
        "--to",
        "megatron",
        "--out",
        meg.to_str().unwrap(),
    ]);
    // The plan was priced as DeepSpeed runs it: another engine is refused.
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("priced as deepspeed runs it"),
        "{}",
        stderr(&o)
    );
    let o = amp(&[
        "export",
        plans.to_str().unwrap(),
        "--example",
        "het-cluster",
        "--to",
        "deepspeed",
        "--out",
        meg.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let cfg = std::fs::read_to_string(meg.join("ds_config.json")).unwrap();
    assert!(cfg.contains("\"fp16\""), "{cfg}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn cluster_files_without_memory_take_it_from_the_catalog() {
    let c = tmp(
        "t4-nomem.toml",
        "[[nodes]]\ngpu = \"T4\"\ngpus = 4\nintra_gbps = 50\ninter_gbps = 50\ncount = 4\n",
    );
    let o = amp(&[
        "plan",
        "--model",
        "gpt2-amp",
        "--cluster",
        c.to_str().unwrap(),
        "--global-batch",
        "32",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    // 16 GiB T4s: some candidates (dp 16 with micro-batch 2, say) cannot fit.
    assert!(v["infeasible"].as_u64().unwrap() > 0, "{v}");
    let mem = &v["plans"][0]["memory"][0];
    assert_eq!(
        mem["capacity_bytes"].as_f64().unwrap(),
        (16u64 << 30) as f64
    );
}

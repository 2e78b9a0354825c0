//! The `amp eval` command, run as a user would.

mod common;

use std::path::PathBuf;

use common::{amp, stderr, stdout, tmp};

fn het_plan() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/het-plan.json")
        .display()
        .to_string()
}

fn eval_json(plan: &str, cluster: &str) -> serde_json::Value {
    let o = amp(&[
        "eval",
        plan,
        "--model",
        "gpt2-amp",
        "--cluster",
        cluster,
        "--cost-model",
        "amp",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    serde_json::from_str(&stdout(&o)).unwrap()
}

#[test]
fn heterogeneous_example_plan_is_priced() {
    let v = eval_json(&het_plan(), "het-cluster");
    assert_eq!(v["schema_version"], 2);
    assert_eq!(v["cost_model"], "amp");
    assert_eq!(v["global_batch"], 32);
    let t = v["iteration_s"].as_f64().unwrap();
    assert!(t > 0.0 && t.is_finite());
    let tput = v["throughput_samples_per_s"].as_f64().unwrap();
    assert!((tput - 32.0 / t).abs() < 1e-9);
    let b = &v["breakdown"];
    let sum: f64 = [
        "compute_s",
        "bubble_s",
        "pipeline_send_s",
        "tp_comm_s",
        "dp_allreduce_s",
        "optimizer_s",
    ]
    .iter()
    .map(|k| b[*k].as_f64().unwrap())
    .sum();
    assert!((sum - t).abs() < 1e-9, "{sum} vs {t}");
    // Every device reported, with its own GPU type, and it all fits.
    let mem = v["memory"].as_array().unwrap();
    assert_eq!(mem.len(), 16);
    assert_eq!(mem.iter().filter(|m| m["gpu_type"] == "T4").count(), 4);
    assert_eq!(v["fits_in_memory"], true);
    // Text mode prints the same time and a memory verdict.
    let o = amp(&[
        "eval",
        &het_plan(),
        "--model",
        "gpt2-amp",
        "--cluster",
        "het-cluster",
        "--cost-model",
        "amp",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains(&format!("iteration: {t:.4} s")), "{text}");
    assert!(text.contains("fits in memory"), "{text}");
}

#[test]
fn slower_gpus_make_a_slower_plan() {
    // The same plan and the same links, with T4s in place of the V100s of
    // nodes 0-2: every stage slows down, so the iteration does.
    let t4 = tmp(
        "t4-as-p3.toml",
        r#"
[[nodes]]
gpu = "T4"
gpus = 4
intra_gbps = 170
inter_gbps = 10
gpu_memory_gib = 16
count = 3
[[nodes]]
gpu = "T4"
gpus = 4
intra_gbps = 50
inter_gbps = 50
gpu_memory_gib = 16
"#,
    );
    let het = eval_json(&het_plan(), "het-cluster")["iteration_s"]
        .as_f64()
        .unwrap();
    let slow = eval_json(&het_plan(), t4.to_str().unwrap())["iteration_s"]
        .as_f64()
        .unwrap();
    assert!(
        slow > het,
        "T4 everywhere {slow} should be slower than mostly V100 {het}"
    );
}

#[test]
fn plan_output_round_trips_through_eval() {
    let o = amp(&[
        "plan",
        "--example",
        "homogeneous",
        "--cost-model",
        "amp",
        "--placement",
        "artifact",
        "--json",
        "--top",
        "3",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let planned: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let file = tmp("planned.json", &stdout(&o));
    for rank in 1..=3usize {
        let o = amp(&[
            "eval",
            file.to_str().unwrap(),
            "--example",
            "homogeneous",
            "--cost-model",
            "amp",
            "--json",
            "--rank",
            &rank.to_string(),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
        let want = planned["plans"][rank - 1]["predicted_iteration_s"]
            .as_f64()
            .unwrap();
        assert!((v["iteration_s"].as_f64().unwrap() - want).abs() < 1e-12);
    }
}

#[test]
fn bad_plans_are_clear_errors() {
    let p = tmp(
        "bad.json",
        r#"{"micro_batch": 1, "num_micro_batches": 1, "stages": [{"first_layer": 0, "end_layer": 30, "replicas": [[{"node": 9, "gpu": 0}]]}]}"#,
    );
    let o = amp(&[
        "eval",
        p.to_str().unwrap(),
        "--model",
        "gpt2-amp",
        "--cluster",
        "het-cluster",
        "--cost-model",
        "amp",
    ]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("bad.json") && e.contains("node 9"), "{e}");
    let o = amp(&[
        "eval",
        "/nonexistent/plan.json",
        "--model",
        "gpt2-amp",
        "--cluster",
        "het-cluster",
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("cannot read /nonexistent/plan.json"),
        "{}",
        stderr(&o)
    );
}

//! Sailor interoperability end to end: `amp export --to sailor` writes a
//! Sailor plan file, and `amp eval --sailor-data` prices one (amp's own
//! exports and Sailor's measured plans).

mod common;

use std::path::PathBuf;

use common::{amp, amp_json, shared_data, stderr, stdout, tmp};

fn sailor_data() -> Option<PathBuf> {
    shared_data().map(|d| d.join("sailor"))
}

/// Two stages of OPT-350m (amp's zoo: embedding, 24 blocks, final
/// projection and vocabulary projection = 27 layers) on two GH200 nodes:
/// stage 0 two replicas of tp 2, stage 1 two of tp 2 on the other node.
const PLAN: &str = r#"{"micro_batch": 2, "num_micro_batches": 4, "stages": [
  {"first_layer": 0, "end_layer": 13, "replicas": [[{"node": 0, "gpu": 0}, {"node": 0, "gpu": 1}], [{"node": 0, "gpu": 2}, {"node": 0, "gpu": 3}]]},
  {"first_layer": 13, "end_layer": 27, "replicas": [[{"node": 1, "gpu": 0}, {"node": 1, "gpu": 1}], [{"node": 1, "gpu": 2}, {"node": 1, "gpu": 3}]]}]}"#;

fn out_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("amp-sailor-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn export(plan: &str, cluster: &str, dir: &std::path::Path) -> std::process::Output {
    amp(&[
        "export",
        plan,
        "--model",
        "opt-350m",
        "--cluster",
        cluster,
        "--to",
        "sailor",
        "--out",
        dir.to_str().unwrap(),
    ])
}

/// The written file has Sailor's shape (snapshot), stage layers in
/// Sailor's indices (amp's two head layers are Sailor's one layer 25), and
/// reads back through amp's Sailor reader as the same plan.
#[test]
fn export_writes_a_sailor_plan_that_reads_back() {
    let plan = tmp("sailor-plan.json", PLAN);
    let dir = out_dir("export");
    let o = export(plan.to_str().unwrap(), "2x4xGH200", &dir);
    assert!(o.status.success(), "{}", stderr(&o));
    let file = dir.join("plan_config_N2_D2.json");
    assert_eq!(stdout(&o).trim(), file.display().to_string());
    assert!(stderr(&o).contains("`OPT-350`"), "{}", stderr(&o));
    let text = std::fs::read_to_string(&file).unwrap();
    insta::assert_snapshot!("sailor_plan_config", text);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let p = &v["pipeline_list"][0];
    assert_eq!(p["layers_per_stage"][0].as_array().unwrap().len(), 13);
    assert_eq!(p["layers_per_stage"][1][12], 25);
    let Some(data) = sailor_data() else { return };
    let v = amp_json(&[
        "eval",
        file.to_str().unwrap(),
        "--sailor-data",
        data.to_str().unwrap(),
        "--model",
        "opt-350m",
        "--json",
    ]);
    let back = &v["plan"];
    assert_eq!(
        (
            back["micro_batch"].clone(),
            back["num_micro_batches"].clone()
        ),
        (2.into(), 4.into())
    );
    let stages = back["stages"].as_array().unwrap();
    let shape: Vec<(u64, u64, usize, usize)> = stages
        .iter()
        .map(|s| {
            let reps = s["replicas"].as_array().unwrap();
            (
                s["first_layer"].as_u64().unwrap(),
                s["end_layer"].as_u64().unwrap(),
                reps[0].as_array().unwrap().len(),
                reps.len(),
            )
        })
        .collect();
    // Sailor's OPT-350 has 26 layers: amp's 13..27 is its 13..26.
    assert_eq!(shape, vec![(0, 13, 2, 2), (13, 26, 2, 2)]);
    assert_eq!(v["model"], "OPT-350");
    assert!(v["iteration_s"].as_f64().unwrap() > 0.0);
}

/// What Sailor cannot express, and flags that do not apply, are errors
/// that say what and how to proceed.
#[test]
fn export_refuses_what_sailor_cannot_express() {
    let plan = tmp("sailor-plan-h100.json", PLAN);
    let dir = out_dir("refuse");
    let o = export(plan.to_str().unwrap(), "2x4xH100", &dir);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.contains("GPU type `H100-SXM`") && e.contains("no Sailor name") && e.contains("GH-96"),
        "{e}"
    );
    assert!(!dir.exists());
    let o = amp(&[
        "export",
        plan.to_str().unwrap(),
        "--model",
        "opt-350m",
        "--cluster",
        "2x4xGH200",
        "--to",
        "sailor",
        "--out",
        dir.to_str().unwrap(),
        "--hosts",
        "a,b",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("drop them"), "{}", stderr(&o));
    // --zone places every node in that zone.
    let zoned = out_dir("zone");
    let o = amp(&[
        "export",
        plan.to_str().unwrap(),
        "--model",
        "opt-350m",
        "--cluster",
        "2x4xGH200",
        "--to",
        "sailor",
        "--out",
        zoned.to_str().unwrap(),
        "--zone",
        "us-west1-b",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(zoned.join("plan_config_N2_D2.json")).unwrap();
    assert_eq!(text.matches("us-west1-b").count(), 5, "{text}");
    assert!(!text.contains("us-central1-a"), "{text}");
    // A Sailor plan priced as an amp plan: pointed at --sailor-data.
    let sailor = dir.with_extension("json");
    let o = export(plan.to_str().unwrap(), "2x4xGH200", &dir);
    assert!(o.status.success(), "{}", stderr(&o));
    std::fs::copy(dir.join("plan_config_N2_D2.json"), &sailor).unwrap();
    let o = amp(&[
        "eval",
        sailor.to_str().unwrap(),
        "--model",
        "opt-350m",
        "--cluster",
        "2x4xGH200",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("give --sailor-data DIR"),
        "{}",
        stderr(&o)
    );
}

fn sailor_file(name: &str, stage1: &str, dp: usize) -> PathBuf {
    let g4 = r#"[[["GH-96", 4, "us-central1-a"]], 4]"#;
    let stage0 = vec![g4; dp].join(", ");
    tmp(
        name,
        &format!(
            r#"{{"zone": "us-central1-a", "pipeline_list": [{{"num_stages": 2, "layers_per_stage": [{:?}, {:?}], "tmp_per_stage": [[{stage0}], [{stage1}]], "dp": [{dp}, {dp}]}}], "mbs": 1, "gbs": {}}}"#,
            (0..12).collect::<Vec<_>>(),
            (12..26).collect::<Vec<_>>(),
            8 * dp
        ),
    )
}

/// A Sailor plan whose tp differs between stages, or between the replicas
/// of a stage, is priced as it is; the text names a mixed stage's degrees.
#[test]
fn eval_prices_per_stage_and_per_replica_tp() {
    let Some(data) = sailor_data() else { return };
    let g2 = r#"[[["GH-96", 4, "us-central1-a"]], 2]"#;
    let g4 = r#"[[["GH-96", 4, "us-central1-a"]], 4]"#;
    let per_stage = sailor_file("sailor-per-stage.json", &[g2, g2].join(", "), 2);
    let eval = |f: &PathBuf, json: bool| {
        let f = f.to_str().unwrap();
        let d = data.to_str().unwrap();
        let mut args = vec!["eval", f, "--sailor-data", d, "--model", "OPT-350"];
        if json {
            args.push("--json");
        }
        amp(&args)
    };
    let tps_of = |f: &PathBuf| {
        let o = eval(f, true);
        assert!(o.status.success(), "{}", stderr(&o));
        let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
        let tps: Vec<Vec<usize>> = v["plan"]["stages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                s["replicas"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r.as_array().unwrap().len())
                    .collect()
            })
            .collect();
        let t = v["iteration_s"].as_f64().unwrap();
        assert!(t.is_finite() && t > 0.0, "{t}");
        (tps, v["memory"].as_array().unwrap().len())
    };
    // Stage 0 fills two nodes, stage 1 one.
    assert_eq!(tps_of(&per_stage), (vec![vec![4, 4], vec![2, 2]], 12));
    let mixed = sailor_file("sailor-mixed.json", &[g2, g4].join(", "), 2);
    assert_eq!(tps_of(&mixed), (vec![vec![4, 4], vec![2, 4]], 14));
    let o = eval(&mixed, false);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("tp per stage [4, 2+4]"),
        "{}",
        stdout(&o)
    );
}

/// Sailor's measured plans, priced one by one with `amp eval` (model from
/// their folder, measured/clariden/OPT-350/...), give what `amp validate`
/// predicts for the same runs.
#[test]
fn eval_of_measured_plans_matches_validate() {
    let Some(data) = sailor_data() else { return };
    let v = amp_json(&["validate", data.to_str().unwrap(), "--json"]);
    let details = v["datasets"][0]["details"].as_array().unwrap();
    assert!(details.len() >= 15);
    for d in details {
        let file = data.join("measured").join(d["name"].as_str().unwrap());
        let o = amp(&[
            "eval",
            file.to_str().unwrap(),
            "--sailor-data",
            data.to_str().unwrap(),
            "--json",
        ]);
        assert!(o.status.success(), "{}: {}", file.display(), stderr(&o));
        let e: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
        let (got, want) = (
            e["iteration_s"].as_f64().unwrap(),
            d["predicted_s"].as_f64().unwrap(),
        );
        assert!(
            (got - want).abs() <= 1e-9 * want,
            "{}: eval {got} vs validate {want}",
            file.display()
        );
    }
}

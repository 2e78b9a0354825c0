//! Sailor interoperability end to end: `amp export --to sailor` writes a
//! Sailor plan file, and `amp eval --sailor-data` prices one (amp's own
//! exports and Sailor's measured plans).

mod common;

use std::path::PathBuf;

use common::{
    amp, amp_json, amp_text, has_a_type_at_two_degrees, shared_data, stderr, stdout, tmp,
};

fn sailor_data() -> Option<PathBuf> {
    shared_data().map(|d| d.join("sailor"))
}

/// Two stages of OPT-350m (amp's zoo: embedding, 24 blocks, final
/// projection and vocabulary projection = 27 layers) on two GH200 nodes:
/// stage 0 two replicas of tp 2, stage 1 two of tp 2 on the other node.
const PLAN: &str = r#"{"micro_batch": 2, "num_micro_batches": 4, "stages": [
  {"first_layer": 0, "end_layer": 13, "replicas": [[{"node": 0, "gpu": 0}, {"node": 0, "gpu": 1}], [{"node": 0, "gpu": 2}, {"node": 0, "gpu": 3}]]},
  {"first_layer": 13, "end_layer": 27, "replicas": [[{"node": 1, "gpu": 0}, {"node": 1, "gpu": 1}], [{"node": 1, "gpu": 2}, {"node": 1, "gpu": 3}]]}]}"#;

/// `amp plan --sailor-data DATA --model MODEL --cluster CLUSTER` followed
/// by `extra`: the arguments, for `amp` or `amp_json`.
fn plan_args<'a>(
    data: &'a str,
    model: &'a str,
    cluster: &'a str,
    extra: &[&'a str],
) -> Vec<&'a str> {
    let base = [
        "plan",
        "--sailor-data",
        data,
        "--model",
        model,
        "--cluster",
        cluster,
    ];
    [&base[..], extra].concat()
}

fn out_dir(name: &str) -> PathBuf {
    let d = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("amp-sailor-test-{}-{name}", std::process::id()));
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

/// Plan `rank` of `plans` (an `amp plan --sailor-data` JSON file made on
/// `cluster` with OPT-350's Sailor data `data`) exported to a Sailor file
/// under `dir`, and that file priced by `amp eval`: its iteration time.
fn export_and_read_back(
    plans: &str,
    rank: usize,
    data: &str,
    cluster: &str,
    dir: &std::path::Path,
) -> f64 {
    let rank_arg = rank.to_string();
    let written = amp_text(&[
        "export",
        plans,
        "--rank",
        &rank_arg,
        "--sailor-data",
        data,
        "--model",
        "OPT-350",
        "--cluster",
        cluster,
        "--to",
        "sailor",
        "--out",
        dir.to_str().unwrap(),
    ])
    .trim()
    .to_string();
    assert!(written.contains("plan_config_N"), "{written}");
    amp_json(&[
        "eval",
        &written,
        "--sailor-data",
        data,
        "--model",
        "OPT-350",
        "--json",
    ])["iteration_s"]
        .as_f64()
        .unwrap()
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

/// `amp plan --sailor-data`: Sailor's model on nodes of Sailor's kinds, the
/// batch from its training file (1024 for OPT-350), in the setup of its
/// runs; the text says when the best plan's replicas are uneven. Bad
/// scenarios are refused naming what is wrong.
#[test]
fn plans_on_sailors_node_kinds() {
    let Some(data) = sailor_data() else { return };
    let d = data.to_str().unwrap();
    let base = ["plan", "--sailor-data", d, "--model", "OPT-350"];
    let run = |extra: &[&str]| {
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        amp(&args)
    };
    let o = run(&[
        "--cluster",
        "20x4xA100-40+60x4xV100-16",
        "--uneven-dp",
        "--top",
        "1",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(
        text.contains("global batch 1024") && text.contains("(320 GPUs)"),
        "{text}"
    );
    assert!(
        text.contains("best plan: its replicas run 12-13 micro-batches (1024 in all")
            && text.contains("cannot run it"),
        "{text}"
    );
    for (extra, want) in [
        (vec![], "needs --model"),
        (
            vec!["--cluster", "8x4xH100"],
            "`H100` is not a GPU type of Sailor's data",
        ),
        (vec!["--cluster", "8x4"], "is not NODESxGPUSxTYPE"),
        (
            vec!["--cluster", "0x4xA100-40"],
            "is not a positive whole number",
        ),
        (
            vec!["--cluster", "2x4xA100-40", "--recompute", "full"],
            "do not apply with --sailor-data",
        ),
    ] {
        let o = run(&extra);
        assert_eq!(o.status.code(), Some(1), "{extra:?}");
        let e = stderr(&o);
        assert!(
            e.contains(want) && !e.contains("panicked"),
            "{extra:?}: {e}"
        );
    }
}

/// Sailor's own plans for its OPT-350M scenarios (the issue's: 32 + 96
/// GPUs, two stages, stage 1 on 24 V100 groups at tp 4 beside 3 A100 at
/// tp 1, dp 27 for a batch of 1024 at micro-batch 2; 80 + 240 and 128 +
/// 384, seven stages of 3,3,4,4,4,4,4 layers, V100 stages at tp 4, A100
/// stages at tp 1, dp 20 and 32, micro-batch 1), written as Sailor files
/// and priced by `amp eval`: the README's figures.
#[test]
fn sailors_own_plans_price_as_the_readme_says() {
    let Some(data) = sailor_data() else { return };
    let zone = "us-central1-a";
    let v = format!(r#"[[["V100-16", 4, "{zone}"]], 4]"#);
    let a = format!(r#"[[["A100-40", 4, "{zone}"]], 1]"#);
    let layers = |sizes: &[usize]| {
        let mut at = 0;
        let stages: Vec<String> = sizes
            .iter()
            .map(|&n| {
                at += n;
                format!("{:?}", (at - n..at).collect::<Vec<_>>())
            })
            .collect();
        format!("[{}]", stages.join(", "))
    };
    let groups = |g: &str, n: usize| format!("[{}]", vec![g; n].join(", "));
    let file = |name: &str, sizes: &[usize], stage_groups: Vec<String>, dp: usize, mbs: usize| {
        let text = format!(
            r#"{{"zone": "{zone}", "pipeline_list": [{{"num_stages": {}, "layers_per_stage": {}, "tmp_per_stage": [{}], "dp": {:?}}}], "mbs": {mbs}, "gbs": 1024}}"#,
            sizes.len(),
            layers(sizes),
            stage_groups.join(", "),
            vec![dp; sizes.len()]
        );
        tmp(&format!("sailor-own-{name}"), &text)
    };
    let mixed = |dp: usize| {
        let first = format!(
            "[{}, {}]",
            vec![v.as_str(); 24].join(", "),
            vec![a.as_str(); dp - 24].join(", ")
        );
        vec![first, groups(&a, dp)]
    };
    let seven = |dp: usize| {
        let mut t = vec![groups(&v, dp); 3];
        t.extend(vec![groups(&a, dp); 4]);
        t
    };
    let sizes7 = [3, 3, 4, 4, 4, 4, 4];
    for (f, want) in [
        (file("s32-96.json", &[13, 13], mixed(27), 27, 2), 6.8495),
        (
            file("s32-96-dp28.json", &[13, 13], mixed(28), 28, 2),
            6.1225,
        ),
        (file("s80-240.json", &sizes7, seven(20), 20, 1), 3.2743),
        (file("s128-384.json", &sizes7, seven(32), 32, 1), 2.1428),
    ] {
        let got = amp_json(&[
            "eval",
            f.to_str().unwrap(),
            "--sailor-data",
            data.to_str().unwrap(),
            "--model",
            "OPT-350",
            "--json",
        ])["iteration_s"]
            .as_f64()
            .unwrap();
        assert!(
            (got - want).abs() <= 5e-4 * want,
            "{}: {got} vs {want}",
            f.display()
        );
    }
    // The text says how the 512 micro-batches are dealt over 27 replicas.
    let f = file("s32-96.json", &[13, 13], mixed(27), 27, 2);
    let d = data.to_str().unwrap();
    let o = amp(&[
        "eval",
        f.to_str().unwrap(),
        "--sailor-data",
        d,
        "--model",
        "OPT-350",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains(
            "tp per stage [4+1, 1], micro-batch 2 x 512 micro-batches (18-19 per replica) = global batch 1024"
        ),
        "{}",
        stdout(&o)
    );
    assert!(
        stderr(&o).contains("uneven data parallelism"),
        "{}",
        stderr(&o)
    );
}

/// An amp plan made on Sailor's scenario (`amp plan --sailor-data`) exports
/// to a Sailor file with the same flags (`amp export --sailor-data --model
/// --cluster`), and that file, read back as a Sailor plan, prices at the
/// plan's time. Without --cluster the amp plan is refused, saying what to
/// give.
#[test]
fn amp_plans_on_sailors_scenario_export_and_read_back() {
    let Some(data) = sailor_data() else { return };
    let d = data.to_str().unwrap();
    let cluster = "2x4xA100-40+2x4xV100-16";
    let plans = amp(&plan_args(
        d,
        "OPT-350",
        cluster,
        &["--global-batch", "64", "--json", "--top", "2", "-q"],
    ));
    assert!(plans.status.success(), "{}", stderr(&plans));
    let parsed: serde_json::Value = serde_json::from_str(&stdout(&plans)).unwrap();
    let file = tmp("sailor-scenario-plans.json", &stdout(&plans));
    let file = file.to_str().unwrap();
    for rank in [1usize, 2] {
        let planned = parsed["plans"][rank - 1]["predicted_iteration_s"]
            .as_f64()
            .unwrap();
        let dir = out_dir(&format!("scenario-{rank}"));
        let back = export_and_read_back(file, rank, d, cluster, &dir);
        assert!(
            (back - planned).abs() <= 1e-9 * planned,
            "rank {rank}: {back} read back, {planned} planned"
        );
    }
    let o = amp(&[
        "export",
        file,
        "--sailor-data",
        d,
        "--model",
        "OPT-350",
        "--to",
        "sailor",
        "--out",
        out_dir("scenario-no-cluster").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("is an amp plan, not a Sailor plan_config")
            && stderr(&o).contains("--cluster it was planned on"),
        "{}",
        stderr(&o)
    );
}

/// A `--per-stage-tp` plan (one GPU type's stages at two tp degrees)
/// exports to a Sailor file, which prices at the plan's time when read back.
#[test]
fn per_stage_plans_export_to_sailor_and_read_back() {
    let Some(data) = sailor_data() else { return };
    let d = data.to_str().unwrap();
    let cluster = "2x4xA100-40+2x4xV100-16";
    let flags = [
        "--global-batch",
        "64",
        "--per-stage-tp",
        "--json",
        "--top",
        "500",
        "-q",
    ];
    let plans = amp_text(&plan_args(d, "OPT-350", cluster, &flags));
    let parsed: serde_json::Value = serde_json::from_str(&plans).unwrap();
    // The first plan with a GPU type at two degrees.
    let rank = parsed["plans"]
        .as_array()
        .unwrap()
        .iter()
        .position(has_a_type_at_two_degrees)
        .expect("a plan with a type at two degrees")
        + 1;
    let planned = parsed["plans"][rank - 1]["predicted_iteration_s"]
        .as_f64()
        .unwrap();
    let file = tmp("sailor-per-stage-plans.json", &plans);
    let file = file.to_str().unwrap();
    let back = export_and_read_back(file, rank, d, cluster, &out_dir("per-stage"));
    assert!(
        (back - planned).abs() <= 1e-9 * planned,
        "rank {rank}: {back} read back, {planned} planned"
    );
}

/// Sailor's GPT-Neo-2.7 files are read as they are, with warnings naming
/// what they get wrong or leave out: a training file's vocabulary of
/// 128,256 beside an embedding of 50,304 rows, and no vocabulary projection
/// (as Sailor's GPT-Neo pipeline ran: the note says so, and that a model
/// computing logits adds 4.3% of the forward FLOPs). OPT-350's files, whose
/// 50,272 are padded to 50,304 rows and which carry the projection, get
/// none.
#[test]
fn gpt_neo_files_are_read_with_what_they_leave_out() {
    let Some(data) = sailor_data() else { return };
    let d = data.to_str().unwrap();
    let run = |model: &str| amp(&plan_args(d, model, "2x4xGH-96", &["--top", "1", "-q"]));
    let o = run("GPT-Neo-2.7");
    assert!(o.status.success(), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("gpt-neo-2.7b.json: vocab_size 128256 disagrees with")
            && e.contains("50304 rows of 2560 beside 2048 positions"),
        "{e}"
    );
    assert!(
        e.contains("gpt-neo-2.7b.json: heads 32 disagrees with")
            && e.contains("measured with 20 heads")
            && e.contains("amp sizes the attention probabilities the blocks keep with 20 heads"),
        "{e}"
    );
    assert!(
        e.contains("model `GPT-Neo-2.7` has no vocabulary projection")
            && e.contains("about 4.3% more of the forward FLOPs")
            && e.contains("GPTNeoModelPipe"),
        "{e}"
    );
    let o = run("OPT-350");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("warning"), "{}", stderr(&o));
    // Sailor's runs are fp32; amp counts their activations in 16-bit
    // elements, and the setup line says so rather than `fp16`.
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("training setup: fp32 weights, fp16 activations, 1f1b"),
        "{out}"
    );
}

/// `--fewer-replicas` puts Sailor's own 32 + 96 plan (stage 1 on 24 V100
/// groups at tp 4 beside 3 A100, stage 2 on 27 A100, 13 layers each, dp 27
/// at micro-batch 2, 126 of 128 GPUs) among the per-type search's plans,
/// at the time `amp eval` gives its file above (6.850 s, the README's);
/// without it no dp-27 plan is searched; and it needs the search it
/// widens.
#[test]
fn fewer_replicas_find_sailors_own_plan() {
    let Some(data) = sailor_data() else { return };
    let base = plan_args(
        data.to_str().unwrap(),
        "OPT-350",
        "8x4xA100-40+24x4xV100-16",
        &["--global-batch", "1024"],
    );
    let search = [
        "--per-type-tp",
        "--uneven-dp",
        "--top",
        "2000",
        "--json",
        "-q",
    ];
    let sailors = |extra: &[&str]| -> Vec<f64> {
        let args: Vec<&str> = base.iter().chain(&search).chain(extra).copied().collect();
        amp_json(&args)["plans"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| {
                let stages = p["stages"].as_array().unwrap();
                let replicas = |s: &serde_json::Value| s["replicas"].as_array().unwrap().clone();
                let devices: usize = stages
                    .iter()
                    .flat_map(replicas)
                    .map(|r| r.as_array().unwrap().len())
                    .sum();
                p["dp"] == 27
                    && p["micro_batch"] == 2
                    && p["stage_boundaries"] == serde_json::json!([0, 13, 26])
                    && devices == 126
                    && replicas(&stages[0])
                        .iter()
                        .filter(|r| r.as_array().unwrap().len() == 4)
                        .count()
                        == 24
            })
            .map(|p| p["predicted_iteration_s"].as_f64().unwrap())
            .collect()
    };
    let found = sailors(&["--fewer-replicas"]);
    assert!(found.iter().any(|t| (t - 6.8495).abs() < 1e-4), "{found:?}");
    assert!(sailors(&[]).is_empty());
    let alone: Vec<&str> = base.iter().chain(&["--fewer-replicas"]).copied().collect();
    let out = amp(&alone);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(
            "--fewer-replicas adds candidates to the search of --per-type-tp with --uneven-dp"
        ),
        "{}",
        stderr(&out)
    );
}

/// On Sailor's consumer servers the network file contradicts itself
/// (Titan-RTX and RTX-2080 servers: 2.86 GB/s with 4 GPUs per node, 0.11
/// GB/s with 8): `amp plan` says so, naming the file and the entry it
/// prices with; on the A100 + V100 scenario it says nothing of the network.
#[test]
fn plan_warns_of_network_entries_that_contradict_each_other() {
    let Some(data) = sailor_data() else { return };
    let d = data.to_str().unwrap();
    let run = |cluster: &str| {
        amp(&plan_args(
            d,
            "OPT-350",
            cluster,
            &["--global-batch", "256", "--top", "1", "-q"],
        ))
    };
    let out = run("1x8xRTX-3090+1x8xTitan-RTX+1x8xRTX-2080");
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("inter_node_bandwidths.json: `Titan-RTX` and `RTX-2080` nodes reach 2.86 GB/s with 4 GPUs per node sending but 0.11 GB/s with 8"),
        "{err}"
    );
    let out = run("8x4xA100-40+24x4xV100-16");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        !stderr(&out).contains("inter_node_bandwidths.json"),
        "{}",
        stderr(&out)
    );
}

/// `--sensitivity` on Sailor's six scenarios (README, "Does the pick rest
/// on the fitted constants?"): those fitted on AMP's runs alone pick rank 1
/// again, and so do neutral constants but for GPT-Neo-2.7 on the two
/// smaller clusters, where without a reserve tp 1 fits the V100s and runs
/// 3.4% and 9.5% faster; under those fitted on Sailor's GH200 runs alone
/// (inter-node links at 35% of nominal) rank 1 is 0.5-8.7% slower than the
/// fastest plan found there: another split of its shape, the shape at
/// micro-batch 2, or another shape (found by the searches under the other
/// constants).
#[test]
fn sensitivity_on_sailors_scenarios() {
    let Some(data) = sailor_data() else { return };
    let data = data.to_str().unwrap();
    let (mut got, mut hedges) = (Vec::new(), Vec::new());
    for model in ["OPT-350", "GPT-Neo-2.7"] {
        for cluster in [
            "8x4xA100-40+24x4xV100-16",
            "20x4xA100-40+60x4xV100-16",
            "32x4xA100-40+96x4xV100-16",
        ] {
            let v = amp_json(&plan_args(
                data,
                model,
                cluster,
                &["--sensitivity", "--json", "-q", "--top", "1"],
            ));
            let best = &v["plans"][0];
            let h = &v["sensitivity_hedge"];
            hedges.push(format!(
                "{model} {cluster} tp {} pp {} dp {} mbs {} rank {} worst {:.3}",
                h["tp"],
                h["pp"],
                h["dp"],
                h["micro_batch"],
                h["rank"],
                h["worst_regret"].as_f64().unwrap()
            ));
            for r in v["sensitivity"].as_array().unwrap() {
                let f = &r["fastest"];
                let same_shape = ["tp", "pp", "dp"].iter().all(|k| f[*k] == best[*k]);
                got.push(format!(
                    "{model} {cluster} {} {:.3}{}",
                    r["calibration"].as_str().unwrap(),
                    r["regret"].as_f64().unwrap(),
                    match (f["is_pick"] == true, same_shape) {
                        (true, _) => String::new(),
                        (false, true) => format!(" mbs {}", f["micro_batch"]),
                        (false, false) => " other shape".to_string(),
                    }
                ));
            }
        }
    }
    let want: Vec<String> = [
        (
            "OPT-350",
            "8x4xA100-40+24x4xV100-16",
            "1.000",
            "1.047 mbs 1",
        ),
        (
            "OPT-350",
            "20x4xA100-40+60x4xV100-16",
            "1.000",
            "1.042 other shape",
        ),
        (
            "OPT-350",
            "32x4xA100-40+96x4xV100-16",
            "1.000",
            "1.028 other shape",
        ),
        (
            "GPT-Neo-2.7",
            "8x4xA100-40+24x4xV100-16",
            "1.034 other shape",
            "1.087 mbs 2",
        ),
        (
            "GPT-Neo-2.7",
            "20x4xA100-40+60x4xV100-16",
            "1.095 other shape",
            "1.084 other shape",
        ),
        (
            "GPT-Neo-2.7",
            "32x4xA100-40+96x4xV100-16",
            "1.000",
            "1.005 mbs 1",
        ),
    ]
    .iter()
    .flat_map(|(m, c, neutral, sailor)| {
        [
            format!("{m} {c} neutral {neutral}"),
            format!("{m} {c} amp-t4 1.000"),
            format!("{m} {c} sailor-gh200 {sailor}"),
        ]
    })
    .collect();
    assert_eq!(got, want);
    // The hedge: rank 1 on two; on the others a plan at most 2.1-5.0%
    // slower under any of the four sets where rank 1 is up to 2.8-5.4%
    // slower (`rank null`: not the one plan listed, --top 1). (Rank 1 on
    // three from the reserve's re-fit to 4.5 GB, 2026-12-05, until
    // GPT-Neo-2.7's blocks kept what Sailor's code keeps with its 20
    // heads, 2026-12-07: over 20 + 60 GPUs micro-batch 2 at pp 5 x dp 32,
    // worst 1.037, fits the V100s again. Since DeepSpeed's engine flattens
    // its gradients only to reduce them, 2026-12-07 late, tensor
    // parallelism 1 fits GPT-Neo-2.7 on the V100s without a reserve, and
    // under neutral constants the pick there runs 3.4% and 9.5% slower
    // than such a plan: the hedges' worst regrets rose from 1.050 and
    // 1.037 to 1.086 and 1.095.)
    assert_eq!(
        hedges,
        [
            "OPT-350 8x4xA100-40+24x4xV100-16 tp 1 pp 4 dp 32 mbs 1 rank 1 worst 1.047",
            "OPT-350 20x4xA100-40+60x4xV100-16 tp 2 pp 5 dp 32 mbs 2 rank null worst 1.021",
            "OPT-350 32x4xA100-40+96x4xV100-16 tp 1 pp 4 dp 128 mbs 1 rank null worst 1.021",
            "GPT-Neo-2.7 8x4xA100-40+24x4xV100-16 tp 2 pp 4 dp 16 mbs 1 rank null worst 1.086",
            "GPT-Neo-2.7 20x4xA100-40+60x4xV100-16 tp 2 pp 5 dp 32 mbs 1 rank 1 worst 1.095",
            "GPT-Neo-2.7 32x4xA100-40+96x4xV100-16 tp 2 pp 4 dp 64 mbs 1 rank 1 worst 1.005",
        ]
    );
}

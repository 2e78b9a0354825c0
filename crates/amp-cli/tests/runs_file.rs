//! amp's own runs file (`runs.toml`) end to end: runs whose "measurements"
//! are amp's own predictions under known constants validate at zero error
//! under those constants, and `amp fit` finds those constants back.

mod common;

use std::path::{Path, PathBuf};

use amp_core::cost::Calibration;
use common::{amp, amp_json, stderr, stdout};

const MODEL: &str = "gpt2-medium";
const SEQ: &str = "1024";
/// Two nodes, so that the data-parallel all-reduce of some plans crosses
/// the network and the inter-node efficiency shows in their times.
const CLUSTER: &str = "2x4xA100-40GB";

/// `runs/` in a folder of this process and test of its own, which holds
/// nothing else.
/// `--model`, `--seq` and `--cluster` as every command here takes them.
const INPUTS: [&str; 6] = ["--model", MODEL, "--seq", SEQ, "--cluster", CLUSTER];

/// A runs file's inputs: the same model, sequence and cluster.
fn head() -> String {
    format!("model = \"{MODEL}\"\nseq = {SEQ}\ncluster = \"{CLUSTER}\"\n")
}

/// `amp plan --json` of amp's top `top` plans at global batch 64, with
/// `extra` flags.
fn plans_json(top: usize, extra: &[&str]) -> String {
    let top = top.to_string();
    let o = amp(&[
        &["plan"][..],
        &INPUTS,
        &["--global-batch", "64", "--json", "-q", "--top", &top],
        extra,
    ]
    .concat());
    assert!(o.status.success(), "{}", stderr(&o));
    stdout(&o)
}

/// `amp eval --json` of `args` (a plan file and its flags).
fn eval_json(args: &[&str]) -> serde_json::Value {
    amp_json(&[&["eval"][..], args, &INPUTS, &["--json"]].concat())
}

fn dir(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("amp-runs-{}-{name}", std::process::id()))
        .join("runs");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A folder with amp's top `top` plans and a runs.toml whose times and
/// memory readings are what `amp eval` predicts for each under `truth`;
/// runs in `out_of_memory` (ranks) are recorded as out of memory instead.
fn runs_under(name: &str, truth: &str, top: usize, out_of_memory: &[usize]) -> PathBuf {
    let d = dir(name);
    let plans = d.join("plans.json");
    let plans_out = plans_json(top, &[]);
    std::fs::write(&plans, plans_out).unwrap();
    let mut toml = head();
    for rank in 1..=top {
        let rank_s = rank.to_string();
        let e = eval_json(&[
            plans.to_str().unwrap(),
            "--rank",
            &rank_s,
            "--calibration",
            truth,
        ]);
        toml.push_str(&format!(
            "\n[[run]]\nplan = \"plans.json\"\nrank = {rank}\n"
        ));
        if out_of_memory.contains(&rank) {
            toml.push_str("out_of_memory = true\n");
            continue;
        }
        let peak = e["memory"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["peak_bytes"].as_f64().unwrap())
            .fold(0.0, f64::max);
        let reading_mib = (peak + e["allocator_cache_bytes"].as_f64().unwrap()) / 1048576.0;
        toml.push_str(&format!(
            "iteration_s = {}\nmemory_used_mib = {reading_mib}\n",
            e["iteration_s"].as_f64().unwrap()
        ));
    }
    std::fs::write(d.join("runs.toml"), toml).unwrap();
    d
}

fn report(args: &[&str]) -> serde_json::Value {
    let v = amp_json(&[&["validate", "--json"], args].concat());
    v["datasets"][0].clone()
}

#[test]
fn runs_priced_under_their_own_constants_are_exact_and_the_fit_finds_them() {
    let d = runs_under("gh200", "sailor-gh200", 8, &[]);
    let path = d.to_str().unwrap();
    let exact = report(&[path, "--calibration", "sailor-gh200"]);
    assert_eq!(exact["runs"], 8);
    assert_eq!(exact["completed"], 8);
    assert!(
        exact["time_error"]["max"].as_f64().unwrap() < 1e-9,
        "{exact}"
    );
    assert!(
        exact["memory_error"]["max"].as_f64().unwrap() < 1e-9,
        "{exact}"
    );
    assert_eq!(exact["spearman"], 1.0);
    // Runs of several micro-batch sizes: each is priced with the analytic
    // times of its own (what `amp eval` does), not with another run's.
    let mbs: std::collections::BTreeSet<u64> = exact["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["micro_batch"].as_u64().unwrap())
        .collect();
    assert!(mbs.len() >= 3, "{mbs:?}");
    // Under other constants the same runs are off: the check can fail.
    let other = report(&[path, "--calibration", "neutral"]);
    assert!(
        other["time_error"]["mean"].as_f64().unwrap() > 0.02,
        "{other}"
    );

    // The file itself, not only its folder; and a folder of runs folders.
    let file = report(&[
        d.join("runs.toml").to_str().unwrap(),
        "--calibration",
        "sailor-gh200",
    ]);
    assert_eq!(file["time_error"], exact["time_error"]);
    let parent = report(&[
        d.parent().unwrap().to_str().unwrap(),
        "--calibration",
        "sailor-gh200",
    ]);
    assert_eq!(parent["name"], "runs");
    assert_eq!(parent["time_error"], exact["time_error"]);

    // `amp fit` recovers the constants the runs were made with, but the
    // host staging, which prices Sailor's engine's receives and no plan
    // here has.
    let text = stdout(&amp(&["fit", path]));
    assert!(
        text.contains("with one set there is no other to fit on: --leave-one-run-out"),
        "{text}"
    );
    let fit = amp_json(&["fit", "--json", "--leave-one-run-out", path]);
    let got: Calibration = serde_json::from_value(fit["fit"]["calibration"].clone()).unwrap();
    // Any seven of the runs pin the constants as well: each run is
    // predicted exactly from the others.
    // What these runs cannot say is named: no per-sample profile, no
    // verdict near a GPU's capacity, no host-staged receive.
    assert_eq!(
        fit["uninformed"],
        serde_json::json!([
            "per_sample_fixed_fraction",
            "per_sample_tp_comm_fixed_fraction",
            "framework_reserve_bytes",
            "host_staging_s_per_gb"
        ])
    );
    let by_run = &fit["sets"][0]["leave_one_run_out"];
    assert_eq!(by_run["runs"], 8);
    assert!(
        by_run["time_error"]["max"].as_f64().unwrap() < 1e-9,
        "{by_run}"
    );
    let want = Calibration {
        host_staging_s_per_gb: 0.0,
        ..Calibration::FITTED_ON_SAILOR_GH200
    };
    assert_eq!(got, want);
}

#[test]
fn a_run_out_of_memory_is_a_verdict_to_call() {
    // Rank 1 of amp's plans fits, so a run of it recorded out of memory
    // is a failed run the model calls wrong. No reserve calls it right
    // without calling a completed run wrong (rank 4 needs only 1 GB
    // less), so the fit counts one verdict of four wrong.
    let d = runs_under("oom", "neutral", 4, &[1]);
    let path = d.to_str().unwrap();
    let r = report(&[path, "--calibration", "neutral"]);
    assert_eq!(r["runs"], 4);
    assert_eq!(r["completed"], 3);
    assert_eq!(r["failed"], 1);
    assert_eq!(r["failed_predicted_infeasible"], 0);
    let text = stdout(&amp(&[
        "validate",
        path,
        "--calibration",
        "neutral",
        "--runs",
    ]));
    assert!(
        text.contains("plans.json#1") && text.contains("failed"),
        "{text}"
    );
    let fit = amp_json(&["fit", "--json", path]);
    assert_eq!(fit["fit"]["loss"]["verdicts"], 0.25, "{fit}");
    assert_eq!(fit["fit"]["loss"]["time"], 0.0, "{fit}");
}

#[test]
fn leave_one_run_out_refuses_more_runs_than_it_can_fit() {
    let d = dir("many");
    std::fs::write(
        d.join("plan.json"),
        r#"{"micro_batch": 1, "num_micro_batches": 8, "stages": [{"first_layer": 0, "end_layer": 30, "replicas": [[{"node": 0, "gpu": 0}]]}]}"#,
    )
    .unwrap();
    let runs = amp_core::fit::MAX_LEAVE_ONE_RUN_OUT_RUNS + 1;
    let toml = format!(
        "model = \"gpt2-amp\"\ncluster = \"homogeneous\"\n{}",
        "[[run]]\nplan = \"plan.json\"\niteration_s = 2.0\n".repeat(runs)
    );
    std::fs::write(d.join("runs.toml"), toml).unwrap();
    let o = amp(&["fit", "--leave-one-run-out", d.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.contains(&format!("hold {runs} runs (at most 256 for it)")),
        "{e}"
    );
}

#[test]
fn runs_of_other_setups_in_one_file_are_each_priced_as_amp_eval_prices_them() {
    // Plans in bf16 (the default) and in fp32 whose analytic times differ:
    // each run keeps the fill of its own setup and micro-batch, so every
    // run is priced exactly as `amp eval` prices its plan alone.
    let d = dir("setups");
    let mut toml = head();
    for (file, extra) in [("bf16.json", None), ("fp32.json", Some("fp32"))] {
        let precision = extra.map_or(vec![], |p| vec!["--precision", p]);
        std::fs::write(d.join(file), plans_json(2, &precision)).unwrap();
        for rank in 1..=2 {
            let rank_s = rank.to_string();
            let e = eval_json(&[d.join(file).to_str().unwrap(), "--rank", &rank_s]);
            toml.push_str(&format!(
                "\n[[run]]\nplan = \"{file}\"\nrank = {rank}\niteration_s = {}\n",
                e["iteration_s"].as_f64().unwrap()
            ));
        }
    }
    std::fs::write(d.join("runs.toml"), toml).unwrap();
    let r = report(&[d.to_str().unwrap()]);
    assert_eq!(r["runs"], 4);
    let times: Vec<f64> = r["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["predicted_s"].as_f64().unwrap())
        .collect();
    // fp32 plans are slower: the two setups were priced apart.
    assert!(times[2].min(times[3]) > times[0].max(times[1]), "{times:?}");
    assert!(r["time_error"]["max"].as_f64().unwrap() < 1e-9, "{r}");
}

#[test]
fn the_setup_table_fills_plans_that_record_none() {
    // A hand-written plan records no setup: the file's [setup] fills it,
    // as amp eval's flags would; a plan that records one refuses it.
    let d = dir("setup-table");
    let plan = r#"{"micro_batch": 2, "num_micro_batches": 4, "stages": [{"first_layer": 0, "end_layer": 27, "replicas": [[{"node": 0, "gpu": 0}]]}]}"#;
    std::fs::write(d.join("bare.json"), plan).unwrap();
    let bare = d.join("bare.json");
    let eval = |extra: &[&str]| {
        eval_json(&[&[bare.to_str().unwrap()][..], extra].concat())["iteration_s"]
            .as_f64()
            .unwrap()
    };
    let fused = eval(&["--optimizer-step", "fused", "--recompute", "full"]);
    let plain = eval(&[]);
    assert!(fused != plain);
    let head = head();
    std::fs::write(
        d.join("runs.toml"),
        format!(
            "{head}[setup]\noptimizer_step = \"fused\"\nrecompute = \"full\"\nsequence_parallel = false\n\n[[run]]\nplan = \"bare.json\"\niteration_s = {fused}\n"
        ),
    )
    .unwrap();
    let r = report(&[d.to_str().unwrap()]);
    assert!(r["time_error"]["max"].as_f64().unwrap() < 1e-9, "{r}");

    // amp plan's output records its setup: [setup] would price another job.
    let plans_out = plans_json(1, &[]);
    std::fs::write(d.join("plans.json"), plans_out).unwrap();
    std::fs::write(
        d.join("runs.toml"),
        format!("{head}[setup]\noptimizer_step = \"fused\"\n\n[[run]]\nplan = \"plans.json\"\niteration_s = 1.0\n"),
    )
    .unwrap();
    let o = amp(&["validate", d.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.contains("run 1 (plan `plans.json`)") && e.contains("records its training setup"),
        "{e}"
    );
}

#[test]
fn an_exported_launch_holds_the_plan_a_runs_file_names() {
    // amp export writes plan.json beside the launch files: amp eval prices
    // it as the plan it came from, and a runs file names it once the
    // launch has run.
    let d = dir("export");
    let plans_out = plans_json(2, &[]);
    std::fs::write(d.join("plans.json"), plans_out).unwrap();
    let o = amp(&[
        &[
            "export",
            d.join("plans.json").to_str().unwrap(),
            "--rank",
            "2",
        ][..],
        &INPUTS,
        &[
            "--to",
            "megatron",
            "--out",
            d.join("launch").to_str().unwrap(),
        ],
    ]
    .concat());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("plan.json"), "{}", stdout(&o));
    let eval = |args: &[&str]| eval_json(args)["iteration_s"].as_f64().unwrap();
    let planned = eval(&[d.join("plans.json").to_str().unwrap(), "--rank", "2"]);
    let exported = eval(&[d.join("launch/plan.json").to_str().unwrap()]);
    assert_eq!(planned, exported);
    std::fs::write(
        d.join("runs.toml"),
        format!(
            "{}\n[[run]]\nplan = \"launch/plan.json\"\niteration_s = {}\n",
            head(),
            planned * 1.1
        ),
    )
    .unwrap();
    let r = report(&[d.to_str().unwrap()]);
    let err = r["time_error"]["max"].as_f64().unwrap();
    assert!((err - 0.1 / 1.1).abs() < 1e-9, "{r}");
}

//! The `amp plan` command, run as a user would.

mod common;

use common::{
    amp, amp_json, amp_json_and_stderr, amp_json_with, amp_text, has_a_type_at_two_degrees, stderr,
    stdout, tmp, tp_not_innermost,
};

/// `amp plan` of Llama-3-8B on two nodes of eight H100s at a global batch
/// of 256 and 4096 tokens, the README's engine comparisons' case.
const LLAMA3_8B_ON_2X8_H100: [&str; 9] = [
    "plan",
    "--model",
    "llama3-8b",
    "--cluster",
    "2x8xH100",
    "--global-batch",
    "256",
    "--seq",
    "4096",
];

#[test]
fn parity_run_lists_every_candidate_with_plain_fields() {
    let v = amp_json(&[
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
    // AMP's model simulates no timeline: no stage lines.
    assert!(best.get("breakdown_stage").is_none(), "{best}");
    assert!(best.get("stage_passes_s").is_none(), "{best}");
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
    let v = amp_json(&[
        "plan",
        "--model",
        "gpt2-amp",
        "--cluster",
        cluster.to_str().unwrap(),
        "--global-batch",
        "16",
        "--json",
    ]);
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
        &["missing profile data", "`A100-80GB`", "T4", "--profile"],
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
    let args = [
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
    ];
    let o = amp(&[&args[..], &["--engine", "megatron"]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["num_gpus"], 32);
    assert!(!v["plans"].as_array().unwrap().is_empty());
    // As eager PyTorch (no engine) nothing fits without recomputation or
    // sharding, and the error says so.
    let o = amp(&args);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("do not fit in GPU memory") && stderr(&o).contains("--recompute"),
        "{}",
        stderr(&o)
    );
}

/// Nothing fits a zoo model at a sequence length the user did not give: the
/// error says which length amp planned at, since the header that names it
/// is printed only with a plan; given, or where a plan is found, it does not.
#[test]
fn no_plan_at_a_default_sequence_length_names_it() {
    let args = [
        "plan",
        "--model",
        "qwen3-0.6b",
        "--cluster",
        "1x1xRTX-4090",
        "--global-batch",
        "7",
    ];
    let o = amp(&args);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.starts_with("error: no valid plan: "), "{e}");
    assert!(
        e.contains("do not fit in GPU memory")
            && e.trim_end().ends_with(
                "; amp planned qwen3-0.6b at its default sequence length, 4096 tokens (--seq to give the job's)"
            ),
        "{e}"
    );
    let o = amp(&[&args[..], &["--seq", "8192"]].concat());
    assert_eq!(o.status.code(), Some(1));
    assert!(
        !stderr(&o).contains("default sequence length"),
        "{}",
        stderr(&o)
    );
    // At the job's 2048 tokens it fits.
    let o = amp(&[&args[..], &["--seq", "2048", "-q"]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
}

/// The README's counts of the AMP GPT-2 examples' candidates over memory
/// (1 of 126 and 4 of 504, the README's first command), and the one
/// candidate each found to fit since the partitioner's tables charge a
/// stage its own layers' workspace: pp 16 at micro-batch 32, its last
/// stage holding the vocabulary projection and no block.
#[test]
fn the_amp_examples_count_the_candidates_over_memory_the_readme_says() {
    for (example, candidates, over, deep_s) in [
        ("homogeneous", 126, 1, 9.6367),
        ("het-cluster", 504, 4, 7.4294),
    ] {
        let v = amp_json(&["plan", "--example", example, "--json", "--top", "1000"]);
        assert_eq!(
            (&v["candidates"], &v["infeasible"]),
            (&candidates.into(), &over.into())
        );
        let plans = v["plans"].as_array().unwrap();
        // On the nodes in the cluster's order (the het-cluster example's T4
        // node last).
        let deep = plans
            .iter()
            .find(|p| {
                p["pp"] == 16
                    && p["micro_batch"] == 32
                    && p["placement"]["node_order"] == serde_json::json!([0, 1, 2, 3])
            })
            .unwrap_or_else(|| panic!("{example}: no pp 16 plan at micro-batch 32"));
        let s = deep["predicted_iteration_s"].as_f64().unwrap();
        assert!((s - deep_s).abs() < 5e-5, "{example}: {s}");
        let head = deep["stages"].as_array().unwrap().last().unwrap();
        assert_eq!(head["first_layer"], 28, "{example}: the projection alone");
    }
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

/// A profile names its GPU as a user would (an alias of the cluster's
/// GPU): its entries are that GPU's, not another type's, which the
/// analytic model then priced in their place without a word.
#[test]
fn a_profile_under_a_gpu_alias_is_read_for_that_gpu() {
    let times = vec!["0.01"; 30].join(", ");
    for name in ["H100", "h100-sxm", "H100-SXM5"] {
        let p = tmp(
            &format!("alias-{name}.toml"),
            &format!("[[entries]]\ngpu = \"{name}\"\ntp = 1\nforward_s = [{times}]\n"),
        );
        let o = amp(&[
            "plan",
            "--model",
            "gpt2-amp",
            "--cluster",
            "1x8xH100",
            "--profile",
            p.to_str().unwrap(),
            "--global-batch",
            "8",
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        let text = stdout(&o);
        assert!(
            text.contains("compute times: H100-SXM: tp 1 measured"),
            "{name}: {text}"
        );
    }
}

#[test]
fn emit_report_and_export_write_their_files() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("amp-cli-emit-{}", std::process::id()));
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
    // Priced with DeepSpeed's default sends (partitioned), and the export
    // tells DeepSpeed so.
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["plans"][0]["setup"]["pipeline_send"], "scatter-gather");
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("ds_config.json")).unwrap())
            .unwrap();
    assert_eq!(cfg["pipeline"]["pipe_partitioned"], true);
    assert_eq!(cfg["pipeline"]["grad_partitioned"], true);
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
    // T4s of 15,360 MiB (what the driver reports of their 16 GB with ECC
    // on): some candidates (dp 16 with micro-batch 2, say) cannot fit.
    assert!(v["infeasible"].as_u64().unwrap() > 0, "{v}");
    let mem = &v["plans"][0]["memory"][0];
    assert_eq!(
        mem["capacity_bytes"].as_f64().unwrap(),
        (15360u64 << 20) as f64
    );
}

/// `x` and `width` of every drawn timeline event of `kind` on `stage`.
fn drawn(html: &str, stage: usize, kind: &str) -> Vec<(f64, f64)> {
    let attr = |tag: &str, name: &str| -> f64 {
        let key = format!(" {name}=\"");
        let at = tag.find(&key).unwrap() + key.len();
        tag[at..].split('"').next().unwrap().parse().unwrap()
    };
    html.split("<rect ")
        .skip(1)
        .map(|t| t.split('>').next().unwrap())
        .filter(|t| {
            t.contains(&format!("data-stage=\"{stage}\""))
                && t.contains(&format!("data-kind=\"{kind}\""))
        })
        .map(|t| (attr(t, "x"), attr(t, "width")))
        .collect()
}

/// The report draws the simulation that priced the plan: under GPipe with
/// full recomputation every forward precedes every backward, a backward
/// (recomputed forward + backward) of a stage of transformer blocks is
/// about three forwards long, and the predicted time shown is the plan's.
#[test]
fn report_draws_the_simulation_that_priced_the_plan() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("amp-cli-report-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let report = dir.join("r.html");
    let v = amp_json(&[
        "plan",
        "--example",
        "het-cluster",
        "--schedule",
        "gpipe",
        "--recompute",
        "--report",
        report.to_str().unwrap(),
        "--json",
        "--top",
        "1",
    ]);
    let best = &v["plans"][0];
    assert_eq!(best["setup"]["schedule"], "gpipe");
    assert_eq!(best["setup"]["recompute"], "full");
    let html = std::fs::read_to_string(&report).unwrap();
    let shown = format!(
        "Predicted iteration</dt><dd><b>{:.3} s</b>",
        best["predicted_iteration_s"].as_f64().unwrap()
    );
    assert!(html.contains(&shown), "report does not show {shown}");
    let pp = best["pp"].as_u64().unwrap() as usize;
    assert!(pp > 1, "the example's best plan is pipelined");
    let mut blocks = 0;
    for stage in 0..pp {
        let f = drawn(&html, stage, "forward");
        let b = drawn(&html, stage, "backward");
        assert!(!f.is_empty() && f.len() == b.len(), "stage {stage}");
        let last_f = f.iter().map(|(x, w)| x + w).fold(0.0, f64::max);
        let first_b = b.iter().map(|(x, _)| *x).fold(f64::INFINITY, f64::min);
        assert!(last_f <= first_b + 1e-6, "stage {stage}: GPipe order");
        // Stages holding a transformer block (layers 2..26 of the AMP
        // GPT-2's 30); the embedding's backward is no matrix product.
        let s = &best["stages"][stage];
        let (first, end) = (
            s["first_layer"].as_u64().unwrap(),
            s["end_layer"].as_u64().unwrap(),
        );
        if first < 26 && end > 2 {
            blocks += 1;
            let ratio = b[0].1 / f[0].1;
            assert!((2.5..3.5).contains(&ratio), "stage {stage}: {ratio}");
        }
    }
    assert!(blocks > 0);
    // Beside the breakdown, which stage it describes and every stage's
    // passes: one row a stage, the ending and the busiest marked once.
    let table = &html[html.find("<table id=\"stage-work\">").expect("stage table")..];
    let table = &table[..table.find("</table>").unwrap()];
    assert_eq!(table.matches("<tr><td").count(), pp);
    assert_eq!(table.matches("ends the iteration").count(), 1);
    assert_eq!(table.matches("busiest").count(), 1);
    assert!(html.contains("id=\"breakdown-stage\">The parts above are stage "));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Interleaved plans are Megatron-LM's even split over pp x v virtual
/// stages, export to Megatron-LM as virtual pipeline stages, and are
/// refused by engines that cannot run them; one-stage plans record 1F1B.
#[test]
fn interleaved_plans_are_what_megatron_builds() {
    let o = amp(&[
        "plan",
        "--example",
        "het-cluster",
        "--schedule",
        "interleaved:2",
        "--json",
        "--top",
        "100",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let plans = v["plans"].as_array().unwrap();
    let mut pipelined = 0;
    for p in plans {
        let pp = p["pp"].as_u64().unwrap() as usize;
        let stages = p["stages"].as_array().unwrap();
        if pp == 1 {
            assert_eq!(p["setup"]["schedule"], "1f1b");
            assert_eq!(stages.len(), 1);
            continue;
        }
        pipelined += 1;
        assert_eq!(p["setup"]["schedule"], "interleaved:2");
        // 24 blocks over 2 pp virtual stages: 12 / pp blocks each; virtual
        // stage i runs on the devices of stage i mod pp.
        assert_eq!(stages.len(), 2 * pp);
        for (i, s) in stages.iter().enumerate() {
            assert_eq!(s["replicas"], stages[i % pp]["replicas"], "stage {i}");
        }
    }
    assert!(pipelined > 0);
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("amp-cli-il-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let plans_file = dir.join("plans.json");
    std::fs::write(&plans_file, &o.stdout).unwrap();
    let rank = plans
        .iter()
        .position(|p| p["pp"].as_u64().unwrap() > 1)
        .unwrap()
        + 1;
    let export = |engine: &str| {
        amp(&[
            "export",
            plans_file.to_str().unwrap(),
            "--example",
            "het-cluster",
            "--rank",
            &rank.to_string(),
            "--to",
            engine,
            "--out",
            dir.join(engine).to_str().unwrap(),
        ])
    };
    let o = export("megatron");
    assert!(o.status.success(), "{}", stderr(&o));
    let args = std::fs::read_to_string(dir.join("megatron/args.sh")).unwrap();
    assert!(
        args.contains("--num-layers-per-virtual-pipeline-stage"),
        "{args}"
    );
    let o = export("deepspeed");
    assert!(!o.status.success());
    assert!(stderr(&o).contains("interleaved:2"), "{}", stderr(&o));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Flags that do not apply are errors, not silently ignored.
#[test]
fn flags_that_do_not_apply_are_errors() {
    for (args, words) in [
        (
            vec!["--cost-model", "amp-paper", "--recompute"],
            "do not apply to --cost-model amp-paper",
        ),
        (vec!["--partition", "exact"], "--partition applies only"),
        (vec!["--out", "x"], "--emit"),
        (
            vec!["--engine", "deepspeed", "--schedule", "interleaved:2"],
            "deepspeed cannot run the interleaved:2",
        ),
        (
            vec!["--engine", "torchtitan", "--schedule", "interleaved:2"],
            "torchtitan cannot run the interleaved:2",
        ),
        (
            vec!["--engine", "deepspeed", "--sequence-parallel"],
            "sequence parallelism is exported only to megatron and torchtitan, not deepspeed",
        ),
        (
            vec!["--engine", "megatron", "--emit", "deepspeed", "--out", "x"],
            "disagree",
        ),
        (vec!["--precision", "fp64"], "unknown precision"),
    ] {
        let mut all = vec!["plan", "--example", "het-cluster"];
        all.extend(args.iter().copied());
        let o = amp(&all);
        assert!(!o.status.success(), "{args:?} succeeded");
        assert!(stderr(&o).contains(words), "{args:?}: {}", stderr(&o));
    }
}

/// When the blocks do not divide over pp x v but the blocks plus the
/// embedding and the loss do (Llama 3 405B's 126 + 2 over 16 x 8), the
/// interleaved split is Megatron-LM's with
/// `--account-for-embedding-in-pipeline-split` and
/// `--account-for-loss-in-pipeline-split`, and the export says so.
#[test]
fn interleaving_can_count_the_embedding_and_loss_as_layers() {
    // Qwen2.5-7B: 28 blocks; pp 3 x v 2 = 6 divides 30, not 28.
    let inputs = [
        "--model",
        "qwen2.5-7b",
        "--seq",
        "2048",
        "--cluster",
        "1x6xH100",
    ];
    let mut args = vec!["plan"];
    args.extend(inputs);
    args.extend([
        "--global-batch",
        "12",
        "--schedule",
        "interleaved:2",
        "--engine",
        "megatron",
        "--json",
        "--top",
        "100",
        "-q",
    ]);
    let o = amp(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let plans = v["plans"].as_array().unwrap();
    let rank = plans
        .iter()
        .position(|p| p["pp"] == 3)
        .expect("a pp 3 plan")
        + 1;
    // Layer 0 is the embedding, 1-28 the blocks, 29-30 the norm and head:
    // five "layers" per virtual stage, the embedding and the loss among them.
    assert_eq!(
        plans[rank - 1]["stage_boundaries"],
        serde_json::json!([0, 5, 10, 15, 20, 25, 31])
    );
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("amp-cli-acc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let plans_file = dir.join("plans.json");
    std::fs::write(&plans_file, &o.stdout).unwrap();
    let rank = rank.to_string();
    let out = dir.join("megatron");
    let mut args = vec!["export", plans_file.to_str().unwrap()];
    args.extend(inputs);
    args.extend([
        "--rank",
        &rank,
        "--to",
        "megatron",
        "--out",
        out.to_str().unwrap(),
    ]);
    let o = amp(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let sh = std::fs::read_to_string(out.join("args.sh")).unwrap();
    for flag in [
        "--num-virtual-stages-per-pipeline-rank 2",
        "--account-for-embedding-in-pipeline-split",
        "--account-for-loss-in-pipeline-split",
        "--num-layers 28",
    ] {
        assert!(sh.contains(flag), "missing {flag} in\n{sh}");
    }
    assert!(!sh.contains("--decoder-first-pipeline-num-layers"), "{sh}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--search-setup` searches the product of the named options as the
/// engine can run them: its best plan is at least as fast as the fixed
/// setup's, every plan records its own setup, and an option both fixed and
/// searched is an error.
#[test]
fn setup_search_is_never_worse_and_records_each_setup() {
    let best = |extra: &[&str]| {
        let mut args = vec![
            "plan",
            "--example",
            "het-cluster",
            "--json",
            "--top",
            "200",
            "-q",
        ];
        args.extend(extra);
        amp_json(&args)
    };
    let fixed = best(&[]);
    let searched = best(&["--search-setup", "recompute,interleaving"]);
    let t = |v: &serde_json::Value| v["plans"][0]["predicted_iteration_s"].as_f64().unwrap();
    assert!(t(&searched) <= t(&fixed));
    let plans = searched["plans"].as_array().unwrap();
    let recomputes: std::collections::BTreeSet<String> = plans
        .iter()
        .map(|p| p["setup"]["recompute"].as_str().unwrap().to_string())
        .collect();
    assert!(recomputes.len() > 1, "{recomputes:?}");
    // One-stage plans never claim an interleaved schedule.
    assert!(plans
        .iter()
        .filter(|p| p["pp"] == 1)
        .all(|p| p["setup"]["schedule"] == "1f1b"));
    let o = amp(&[
        "plan",
        "--example",
        "het-cluster",
        "--recompute",
        "full",
        "--search-setup",
        "recompute",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--recompute fixes what --search-setup recompute searches"));
    // DeepSpeed runs neither interleaving nor selective recomputation: the
    // table shows only setups it can run.
    let o = amp(&[
        "plan",
        "--example",
        "het-cluster",
        "--engine",
        "deepspeed",
        "--search-setup",
        "all",
        "--top",
        "50",
        "-q",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("also searched:"), "{text}");
    assert!(
        !text.contains("il:") && !text.contains("rc:selective"),
        "{text}"
    );
}

/// `--subsets` also searches the cluster without some GPU types, never
/// ranking worse than the whole cluster; `--objective cost` ranks by the
/// nodes' prices, and needs one for every node.
/// On a mixed cluster searched whole, a GPU type whose nodes alone run
/// faster is named, with the time the same search finds on those nodes;
/// not when none is faster, nor when subsets are searched anyway.
#[test]
fn one_gpu_type_alone_that_is_faster_is_named() {
    let run_at = |cluster: &str, batch: &str, extra: &[&str]| {
        let mut args = vec![
            "plan",
            "--model",
            "gpt2-medium",
            "--cluster",
            cluster,
            "--global-batch",
            batch,
            "--json",
            "-q",
        ];
        args.extend(extra);
        amp_json(&args)
    };
    let run = |cluster: &str, extra: &[&str]| run_at(cluster, "256", extra);
    let t = |v: &serde_json::Value| v["plans"][0]["predicted_iteration_s"].as_f64().unwrap();
    let mixed = run("2x8xA100@200Gbps+2x8xT4@50Gbps", &[]);
    // The search's setup: fp16, as T4s have no bf16.
    let alone = run("2x8xA100@200Gbps", &["--precision", "fp16"]);
    let hint = &mixed["faster_on_one_type"];
    assert_eq!(hint["gpu_type"], "A100-40GB", "{hint}");
    assert_eq!(hint["gpus"], 16);
    assert_eq!(hint["predicted_iteration_s"].as_f64(), Some(t(&alone)));
    assert!(t(&alone) < t(&mixed));
    let subsets = run("2x8xA100@200Gbps+2x8xT4@50Gbps", &["--subsets"]);
    assert!(subsets.get("faster_on_one_type").is_none());
    assert_eq!(
        t(&subsets),
        t(&alone),
        "--subsets finds the same plan first"
    );
    let het = amp_json(&["plan", "--example", "het-cluster", "--json", "-q"]);
    assert!(
        het.get("faster_on_one_type").is_none(),
        "no type alone beats het-cluster's best"
    );
    let text = stdout(&amp(&[
        "plan",
        "--model",
        "gpt2-medium",
        "--cluster",
        "2x8xA100@200Gbps+2x8xT4@50Gbps",
        "--global-batch",
        "256",
        "-q",
    ]));
    assert!(
        text.contains("fewer GPUs are faster: the 16 A100-40GB GPUs alone take 0.6705 s/iteration, 20.3% less than the best plan on all 32; --subsets searches subsets of the GPUs"),
        "{text}"
    );
    // The README's larger case: AMP's equal replicas on three GPU types.
    let three = run_at(
        "32x8xA100@200Gbps+32x8xV100@100Gbps+32x8xT4@50Gbps",
        "1024",
        &[],
    );
    let hint = &three["faster_on_one_type"];
    assert_eq!(hint["gpu_type"], "A100-40GB", "{hint}");
    assert_eq!(hint["gpus"], 256);
    let s = |x: f64| format!("{x:.4}");
    assert_eq!(s(t(&three)), "0.3233");
    assert_eq!(s(hint["predicted_iteration_s"].as_f64().unwrap()), "0.2373");
}

/// An option the user gives (`--optimizer-sharding`, an interleaved
/// `--schedule`) does not drop the plans of a subset it has no effect on:
/// on one GPU `--subsets` found nothing and said "the first: -" (2026-12-07,
/// found by a random sweep of `amp plan`'s flags).
#[test]
fn subsets_keep_plans_a_given_option_does_not_touch() {
    for option in [
        &["--optimizer-sharding", "zero2"][..],
        &["--schedule", "interleaved:2"][..],
    ] {
        let run = |extra: &[&str]| {
            let mut args = vec![
                "plan",
                "--model",
                "gpt2",
                "--cluster",
                "1x1xH100",
                "--global-batch",
                "16",
                "--json",
                "-q",
            ];
            args.extend(option);
            args.extend(extra);
            amp_json(&args)
        };
        let whole = run(&[]);
        let subsets = run(&["--subsets"]);
        let t = |v: &serde_json::Value| v["plans"][0]["predicted_iteration_s"].as_f64().unwrap();
        assert_eq!(t(&subsets), t(&whole), "{option:?}");
        assert_eq!(
            subsets["plans"].as_array().unwrap().len(),
            whole["plans"].as_array().unwrap().len()
        );
    }
}

/// `--tp-comm-overlap --search-setup sp`: Megatron-LM overlaps only under
/// sequence parallelism, so the search puts the overlap on the setups with
/// it and searches those without beside them (it asked for
/// --sequence-parallel, which the search forbids, until 2026-12-07).
#[test]
fn the_tp_overlap_goes_with_sequence_parallelism_when_that_is_searched() {
    let args = [
        "plan",
        "--model",
        "llama3-8b",
        "--seq",
        "4096",
        "--cluster",
        "2x8xH100@400Gbps",
        "--global-batch",
        "64",
        "--engine",
        "megatron",
        "--tp-comm-overlap",
        "--search-setup",
        "sp",
        "--top",
        "40",
    ];
    let v = amp_json(&[&args[..], &["--json", "-q"]].concat());
    let plans = v["plans"].as_array().unwrap();
    let setup = |p: &serde_json::Value, key: &str| p["setup"][key].as_bool().unwrap_or(false);
    for p in plans {
        assert_eq!(
            setup(p, "tp_comm_overlap"),
            setup(p, "sequence_parallel"),
            "{}",
            p["setup"]
        );
    }
    let tp2 = |sp: bool| {
        plans
            .iter()
            .any(|p| p["tp"] == 2 && setup(p, "sequence_parallel") == sp)
    };
    assert!(tp2(true) && tp2(false));
    // The text's column says which.
    let text = amp_text(&args);
    assert!(text.contains("sp tp-overlap"), "{text}");
}

#[test]
fn subsets_and_cost_objective() {
    let base = [
        "plan",
        "--model",
        "gpt2-xl",
        "--cluster",
        "2xp3.8xlarge+2xg4dn.12xlarge",
        "--global-batch",
        "64",
    ];
    let run = |extra: &[&str]| {
        let mut args = base.to_vec();
        args.extend(["--json", "--top", "500", "-q"]);
        args.extend(extra);
        amp_json(&args)
    };
    let t = |v: &serde_json::Value| v["plans"][0]["predicted_iteration_s"].as_f64().unwrap();
    let whole = run(&[]);
    let subsets = run(&["--subsets"]);
    assert!(t(&subsets) <= t(&whole));
    let plans = subsets["plans"].as_array().unwrap();
    assert!(plans.iter().any(|p| p["gpus"].as_u64().unwrap() < 16));
    let by_cost = run(&["--subsets", "--objective", "cost"]);
    let usd: Vec<f64> = by_cost["plans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["cost_per_iteration_usd"].as_f64().unwrap())
        .collect();
    assert!(usd.windows(2).all(|w| w[0] <= w[1]), "{usd:?}");
    // Ranked by cost, the sub-clusters are searched without --subsets:
    // on the whole cluster cost ranks as time does (until 2026-12-08 it
    // searched only the whole cluster).
    assert_eq!(run(&["--objective", "cost"])["plans"], by_cost["plans"]);
    // Past the six GPU types whose subsets are searched, ranking by cost
    // ranks the whole cluster and says so; --subsets is refused there.
    let seven: String = [
        "V100-16GB",
        "V100-32GB",
        "T4",
        "A10G",
        "A100-40GB",
        "A100-80GB",
        "H100-SXM",
    ]
    .iter()
    .enumerate()
    .map(|(i, gpu)| {
        format!(
            "[[nodes]]\ngpu = \"{gpu}\"\ngpus = 1\nintra_gbps = 100\ninter_gbps = 100\nprice_per_hour = {}\n",
            i + 1
        )
    })
    .collect();
    let seven = tmp("seven-types.toml", &seven);
    let by_cost_on_seven = |extra: &[&str]| {
        let mut args = vec![
            "plan",
            "--model",
            "gpt2",
            "--cluster",
            seven.to_str().unwrap(),
            "--global-batch",
            "8",
            "--objective",
            "cost",
            "-q",
        ];
        args.extend(extra);
        amp(&args)
    };
    let o = by_cost_on_seven(&["--json"]);
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["plans"][0]["cost_per_iteration_usd"].as_f64().is_some());
    let skipped = v["skipped"].to_string();
    assert!(
        skipped.contains(
            "ranked by cost on the whole cluster only: its 7 GPU types make 127 sub-clusters"
        ),
        "{skipped}"
    );
    let o = by_cost_on_seven(&["--subsets"]);
    assert!(!o.status.success());
    let said = String::from_utf8_lossy(&o.stderr);
    assert!(
        said.contains("drop --subsets and --max-usd-per-hour"),
        "{said}"
    );
    // Per million tokens: the iteration's dollars over its 64 x 1024 tokens
    // (gpt2-xl's default sequence), in the JSON and in the text.
    for p in by_cost["plans"].as_array().unwrap() {
        let per_iter = p["cost_per_iteration_usd"].as_f64().unwrap();
        let per_mtok = p["cost_per_million_tokens_usd"].as_f64().unwrap();
        assert!(
            (per_mtok - per_iter * 1e6 / (64.0 * 1024.0)).abs() <= 1e-9 * per_mtok,
            "{per_iter} {per_mtok}"
        );
    }
    assert!(whole["plans"][0]
        .get("cost_per_million_tokens_usd")
        .is_none());
    let text = amp_text(
        &[
            &base[..],
            &["--subsets", "--objective", "cost", "--top", "1"],
        ]
        .concat(),
    );
    let first = &by_cost["plans"][0];
    let line = format!(
        "the best ${:.5} per iteration, ${:.4} per million tokens",
        first["cost_per_iteration_usd"].as_f64().unwrap(),
        first["cost_per_million_tokens_usd"].as_f64().unwrap()
    );
    assert!(text.contains(&line), "{text}\n{line}");
    // A cluster without prices cannot rank by cost.
    let o = amp(&[
        "plan",
        "--model",
        "gpt2-xl",
        "--cluster",
        "2x4xV100-16GB",
        "--global-batch",
        "64",
        "--objective",
        "cost",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("price per hour"), "{}", stderr(&o));
}

/// `--per-type-tp` adds plans whose GPU types run their own tensor-parallel
/// degree; the table shows each stage's; the ranking never gets worse.
#[test]
fn per_type_tp_adds_plans_with_a_tp_per_gpu_type() {
    let run = |extra: &[&str]| {
        let mut args = vec![
            "plan",
            "--example",
            "het-cluster",
            "--json",
            "--top",
            "300",
            "-q",
        ];
        args.extend(extra);
        amp_json(&args)
    };
    let t = |v: &serde_json::Value| v["plans"][0]["predicted_iteration_s"].as_f64().unwrap();
    let uniform = run(&[]);
    let wide = run(&["--per-type-tp"]);
    assert!(t(&wide) <= t(&uniform));
    let mixed = wide["plans"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| {
            let tps: std::collections::BTreeSet<usize> = p["stages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["replicas"][0].as_array().unwrap().len())
                .collect();
            tps.len() > 1
        })
        .count();
    assert!(mixed > 0);
    let o = amp(&[
        "plan",
        "--example",
        "het-cluster",
        "--per-type-tp",
        "--top",
        "300",
        "-q",
    ]);
    assert!(stdout(&o).contains("1/1/1/1/1/1/2"), "{}", stdout(&o));
}

/// `--per-stage-tp` runs the per-type search (it implies `--per-type-tp`)
/// with plans whose GPU type runs two tp degrees on its stages: it counts
/// more candidates, keeps every plan of `--per-type-tp`, and some of its
/// plans give one type's stages two degrees.
#[test]
fn per_stage_tp_adds_plans_with_two_degrees_on_a_gpu_type() {
    let run = |extra: &[&str]| {
        let mut args = vec![
            "plan",
            "--model",
            "gpt2-medium",
            "--cluster",
            "2x4xA100-40GB+2x4xV100-16GB",
            "--global-batch",
            "64",
            "--json",
            "--top",
            "100000",
            "-q",
        ];
        args.extend(extra);
        amp_json(&args)
    };
    let per_type = run(&["--per-type-tp"]);
    let per_stage = run(&["--per-stage-tp"]);
    let n = |v: &serde_json::Value| v["candidates"].as_u64().unwrap();
    assert!(n(&per_stage) > n(&per_type));
    let times = |v: &serde_json::Value| -> Vec<u64> {
        let mut t: Vec<u64> = v["plans"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["predicted_iteration_s"].as_f64().unwrap().to_bits())
            .collect();
        t.sort_unstable();
        t
    };
    let (a, b) = (times(&per_type), times(&per_stage));
    assert!(a.iter().all(|t| b.binary_search(t).is_ok()));
    // A type whose stages run two degrees.
    let two_degrees = per_stage["plans"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| has_a_type_at_two_degrees(p))
        .count();
    assert!(two_degrees > 0);
    // On one GPU type there is nothing to vary: said under the flag given.
    let text = amp_text(&[
        "plan",
        "--example",
        "homogeneous",
        "--per-stage-tp",
        "--top",
        "1",
        "-q",
    ]);
    assert!(
        text.contains("--per-stage-tp: a tp per GPU type needs 2 to 4 GPU types"),
        "{text}"
    );
}

/// With `--search-setup`, plans with a tp per GPU type are searched under
/// every setup: interleaved ones too, on Megatron-LM's even split of the
/// virtual stages. (Without an engine: planned for Megatron-LM, which
/// builds the model at one tp, such plans are not ranked.)
#[test]
fn per_type_tp_searches_every_setup() {
    let v = amp_json(&[
        "plan",
        "--model",
        "gpt2-medium",
        "--cluster",
        "2x4xA100-40GB+2x4xV100-16GB",
        "--global-batch",
        "96",
        "--per-type-tp",
        "--search-setup",
        "interleaving",
        "--json",
        "--top",
        "4000",
        "-q",
    ]);
    let mixed_interleaved: Vec<&serde_json::Value> = v["plans"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| {
            let tps: std::collections::BTreeSet<usize> = p["stages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["replicas"][0].as_array().unwrap().len())
                .collect();
            tps.len() > 1 && p["setup"]["schedule"] != "1f1b"
        })
        .collect();
    assert!(!mixed_interleaved.is_empty());
    for p in mixed_interleaved {
        let pp = p["pp"].as_u64().unwrap() as usize;
        let stages = p["stages"].as_array().unwrap();
        let v: usize = p["setup"]["schedule"].as_str().unwrap()["interleaved:".len()..]
            .parse()
            .unwrap();
        assert_eq!(stages.len(), pp * v);
        for (i, s) in stages.iter().enumerate() {
            assert_eq!(s["replicas"], stages[i % pp]["replicas"]);
        }
    }
}

#[test]
fn deep_layer_lists_are_split_by_groups_and_say_so() {
    // 300 layers, past the exact partitioner's 256: an embedding, 298
    // equal blocks and a vocabulary projection, priced analytically.
    let mut toml = String::from("name = \"deep-300\"\n");
    let layer = |name: &str, kind: &str, params: u64, flops: f64| {
        format!(
            "[[layers]]\nname = \"{name}\"\nkind = \"{kind}\"\nparams = {params}\noutput_elems_per_sample = 1048576\nforward_flops_per_sample = {flops:e}\n"
        )
    };
    toml += &layer(
        "embedding",
        "embedding",
        50_000 * 1024,
        2.0 * 1024.0 * 1024.0,
    );
    for i in 0..298 {
        toml += &layer(
            &format!("block{i}"),
            "other",
            12 * 1024 * 1024,
            24.0 * 1024.0 * 1024.0 * 1024.0,
        );
    }
    toml += &layer(
        "head",
        "other",
        50_000 * 1024,
        2.0 * 50_000.0 * 1024.0 * 1024.0,
    );
    let m = tmp("deep-300.toml", &toml);
    let args = [
        "plan",
        "--model",
        m.to_str().unwrap(),
        "--cluster",
        "1x8xH100",
        "--global-batch",
        "64",
    ];
    let o = amp(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("layer split: 300 layers, more than 256"),
        "{}",
        stdout(&o)
    );
    let o = amp(&[&args[..], &["--json"]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["layer_split"], "grouped");
    // Every plan covers the 300 layers once, in order.
    for p in v["plans"].as_array().unwrap() {
        let stages = p["stages"].as_array().unwrap();
        let mut next = 0;
        for s in stages {
            assert_eq!(s["first_layer"].as_u64().unwrap(), next);
            next = s["end_layer"].as_u64().unwrap();
        }
        assert_eq!(next, 300);
    }
}

#[test]
fn a_budget_per_hour_keeps_cheaper_gpu_sets_and_says_why_when_none_fits() {
    // het-cluster's instances: 3 p3.8xlarge (4 V100) and 1 g4dn.12xlarge
    // (4 T4), with their catalog prices.
    let v = amp_json(&[
        "plan",
        "--example",
        "het-cluster",
        "--max-usd-per-hour",
        "30",
        "--json",
    ]);
    let plans = v["plans"].as_array().unwrap();
    assert!(!plans.is_empty());
    // The README's figures: two V100 nodes and the T4 node (every node
    // count is tried on a cluster this small).
    let best = &plans[0];
    assert_eq!(best["gpus"], 12);
    assert!((best["usd_per_hour"].as_f64().unwrap() - 28.39).abs() < 0.005);
    assert!((best["predicted_iteration_s"].as_f64().unwrap() - 1.4916).abs() < 5e-4);
    for p in plans {
        let usd = p["usd_per_hour"].as_f64().unwrap();
        assert!(usd <= 30.0, "{usd}");
        // Fewer GPUs than the cluster's 16: the whole cluster costs more.
        assert!(p["gpus"].as_u64().unwrap() < 16);
    }
    let o = amp(&[
        "plan",
        "--example",
        "het-cluster",
        "--max-usd-per-hour",
        "30",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("at most $30.00 per hour"),
        "{}",
        stdout(&o)
    );
    let o = amp(&[
        "plan",
        "--example",
        "het-cluster",
        "--max-usd-per-hour",
        "1",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.contains("no plan costs at most $1.00 per hour")
            && e.contains("raise --max-usd-per-hour"),
        "{e}"
    );
    let o = amp(&["plan", "--example", "het-cluster", "--max-usd-per-hour=-3"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("above 0"), "{}", stderr(&o));
}

/// `--uneven-dp` on 12 T4 for a batch of 32: dp 3 (or 6, 12) does not
/// divide it, and its plans deal the micro-batches unevenly. The best one,
/// read back from the JSON by `amp eval`, prices the same.
#[test]
fn uneven_plans_round_trip_through_eval() {
    let args = [
        "plan",
        "--model",
        "gpt2",
        "--cluster",
        "3xg4dn.12xlarge",
        "--global-batch",
        "32",
        // T4s have no bf16.
        "--precision",
        "fp16",
        "-q",
    ];
    let mut uneven = args.to_vec();
    uneven.extend(["--uneven-dp", "--json"]);
    let v = amp_json(&uneven);
    let p = &v["plans"][0];
    let counts: Vec<u64> = p["replica_micro_batches"]
        .as_array()
        .expect("the best plan is uneven")
        .iter()
        .map(|c| c.as_u64().unwrap())
        .collect();
    let mbs = p["micro_batch"].as_u64().unwrap();
    assert_eq!(mbs * counts.iter().sum::<u64>(), 32);
    assert_eq!(
        counts.iter().max(),
        p["num_micro_batches"].as_u64().as_ref()
    );
    let file = tmp("uneven-plan.json", &v.to_string());
    let e = amp_json(&[
        "eval",
        file.to_str().unwrap(),
        "--model",
        "gpt2",
        "--cluster",
        "3xg4dn.12xlarge",
        "--json",
    ]);
    assert_eq!(e["iteration_s"], p["predicted_iteration_s"]);
    assert_eq!(
        e["plan"]["replica_micro_batches"],
        p["replica_micro_batches"]
    );
    // Without the flag, every plan is even.
    let mut even = args.to_vec();
    even.push("--json");
    let v = amp_json(&even);
    assert!(v["plans"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p.get("replica_micro_batches").is_none()));
}

/// The README's GPT-2 vocabulary-padding table: GPT-2 small with its odd
/// 50257-token vocabulary against the same model padded to 50304, one GPU,
/// micro-batch 12, analytic times; and Megatron-LM, which pads 50257 itself.
#[test]
fn an_odd_vocabulary_costs_what_the_readme_says() {
    let best = |vocab: u64, gpu: &str, engine: Option<&str>, gelu: &str| {
        let config = tmp(
            &format!("gpt2-{vocab}.json"),
            &format!(
                r#"{{"model_type":"gpt2","n_embd":768,"n_layer":12,"n_head":12,"n_positions":1024,"vocab_size":{vocab},"activation_function":"gelu_new","tie_word_embeddings":true}}"#
            ),
        );
        let cluster = format!("1x1x{gpu}");
        let mut args = vec![
            "plan",
            "--model",
            config.to_str().unwrap(),
            "--seq",
            "1024",
            "--cluster",
            &cluster,
            "--global-batch",
            "12",
            "--json",
            "--gelu",
            gelu,
        ];
        if let Some(e) = engine {
            args.extend(["--engine", e]);
        }
        let v = amp_json(&args);
        v["plans"][0]["predicted_iteration_s"].as_f64().unwrap()
    };
    // The config's `gelu_new` as Hugging Face runs it, and fused.
    for (gpu, gelu, odd, even) in [
        ("A100-40GB", "composite", 0.1894, 0.1841),
        ("A100-40GB", "fused", 0.1108, 0.1055),
        ("H200", "composite", 0.0649, 0.0605),
        ("H200", "fused", 0.0394, 0.0350),
    ] {
        let (o, e) = (best(50257, gpu, None, gelu), best(50304, gpu, None, gelu));
        assert!((o - odd).abs() < 5e-5, "{gpu} {gelu} 50257: {o}");
        assert!((e - even).abs() < 5e-5, "{gpu} {gelu} 50304: {e}");
    }
    // Megatron-LM pads the vocabulary, fuses GeLU and runs a fused Adam.
    for gelu in ["composite", "fused"] {
        let megatron = best(50257, "H200", Some("megatron"), gelu);
        assert!((megatron - 0.0305).abs() < 5e-5, "{megatron}");
    }
}

/// `--attention` rebuilds a zoo model with the attention kernel asked for:
/// fused attention stores no `s x s` scores and is priced as the fused
/// kernel; a layer list, whose activation sizes fix its attention, is
/// refused.
#[test]
fn attention_flag_changes_the_stored_scores_and_the_kernel() {
    let run = |attention: &str| {
        amp_json(&[
            "plan",
            "--model",
            "gpt2-medium",
            "--seq",
            "1024",
            "--cluster",
            "1x1xA100-80GB",
            "--global-batch",
            "8",
            "--attention",
            attention,
            "--json",
            "--top",
            "100",
        ])
    };
    let (fused, explicit) = (run("fused"), run("explicit"));
    let at_mb = |v: &serde_json::Value, mb: u64| {
        let p = v["plans"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["micro_batch"].as_u64() == Some(mb))
            .unwrap()
            .clone();
        (
            p["predicted_iteration_s"].as_f64().unwrap(),
            p["memory"][0]["activations_bytes"].as_f64().unwrap(),
        )
    };
    let ((tf, af), (te, ae)) = (at_mb(&fused, 2), at_mb(&explicit, 2));
    // Softmax output (2 bytes, and 2 more as eager autocast keeps it in
    // fp32), its dropout mask (1 byte) and the probabilities (2 bytes): 7
    // bytes per score per block and sample, 24 blocks, micro-batch 2. The
    // gradients of probabilities and scores while one block's backward
    // runs (2 x 2 bytes x heads x s^2 per sample, 67 MB) are not held
    // beside the loss's workspace (50,257 x 1,024 x 8 bytes, 412 MB), which
    // is freed first: they add nothing (until 2026-12-05 amp added both).
    let per_sample = 16.0 * 1024.0 * 1024.0;
    let scores = 24.0 * 7.0 * per_sample * 2.0;
    assert!(
        ((ae - af) / scores - 1.0).abs() < 0.01,
        "{ae} {af} {scores}"
    );
    assert!(tf < 0.8 * te, "fused {tf} explicit {te}");
    // The header says which attention was priced.
    let o = amp(&[
        "plan",
        "--model",
        "gpt2-medium",
        "--cluster",
        "1x1xA100-80GB",
        "--global-batch",
        "8",
        "--attention",
        "fused",
    ]);
    assert!(
        stdout(&o).contains("sequence length 1024, fused attention"),
        "{}",
        stdout(&o)
    );
    let o = amp(&[
        "plan",
        "--model",
        "gpt2-amp",
        "--cluster",
        "1x1xA100-80GB",
        "--global-batch",
        "8",
        "--attention",
        "fused",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("`gpt2-amp` (the AMP artifact's) is a layer list"),
        "{}",
        stderr(&o)
    );
    // The README's example: GPT-2 medium on eight A100-40GB, with its
    // `gelu_new` as Hugging Face runs it and fused.
    for (attention, gelu, readme_s) in [
        ("explicit", "composite", 0.4545),
        ("fused", "composite", 0.3283),
        ("explicit", "fused", 0.3147),
        ("fused", "fused", 0.1885),
    ] {
        let v = amp_json(&[
            "plan",
            "--model",
            "gpt2-medium",
            "--seq",
            "1024",
            "--cluster",
            "1x8xA100-40GB",
            "--global-batch",
            "64",
            "--attention",
            attention,
            "--gelu",
            gelu,
            "--json",
        ]);
        let t = v["plans"][0]["predicted_iteration_s"].as_f64().unwrap();
        assert!((t - readme_s).abs() < 5e-5, "{attention} {gelu}: {t}");
    }
}

/// The loss kernel sets the logits' memory and the Adam kernel the step's
/// time: eager PyTorch (the default without an engine) holds 12 bytes per
/// logit around its `cross_entropy`, Megatron-LM's in-place loss 6; a fused
/// AdamW moves 32 bytes per parameter where the default foreach one moves
/// 80. The README's figures, on one H200.
#[test]
fn the_loss_and_adam_kernels_cost_what_the_readme_says() {
    let gpt2 = tmp(
        "gpt2-small-loss.json",
        r#"{"model_type":"gpt2","n_embd":768,"n_layer":12,"n_head":12,"n_positions":1024,"vocab_size":50257,"activation_function":"gelu_new","tie_word_embeddings":true}"#,
    );
    let llama = tmp(
        "llama32-1b-loss.json",
        r#"{"architectures":["LlamaForCausalLM"],"model_type":"llama","hidden_size":2048,"intermediate_size":8192,"num_hidden_layers":16,"num_attention_heads":32,"num_key_value_heads":8,"head_dim":64,"vocab_size":128256,"max_position_embeddings":131072,"rms_norm_eps":1e-05,"rope_theta":500000.0,"tie_word_embeddings":true,"hidden_act":"silu"}"#,
    );
    let best = |model: &std::path::Path, seq: &str, batch: &str, extra: &[&str]| {
        let mut args = vec![
            "plan",
            "--model",
            model.to_str().unwrap(),
            "--seq",
            seq,
            "--cluster",
            "1x1xH200",
            "--global-batch",
            batch,
            "--json",
        ];
        args.extend_from_slice(extra);
        let v = amp_json(&args);
        let p = &v["plans"][0];
        (
            p["predicted_iteration_s"].as_f64().unwrap(),
            p["memory"][0]["peak_bytes"].as_f64().unwrap() / 1e9,
        )
    };
    let megatron_loss = ["--cross-entropy", "megatron"];
    for (model, seq, batch, pytorch_gb, megatron_gb) in [
        (&gpt2, "1024", "12", 24.36, 20.66),
        (&llama, "2048", "8", 81.18, 68.57),
    ] {
        let (_, p) = best(model, seq, batch, &[]);
        let (_, m) = best(model, seq, batch, &megatron_loss);
        assert!((p - pytorch_gb).abs() < 0.005, "{model:?}: {p} GB");
        assert!((m - megatron_gb).abs() < 0.005, "{model:?}: {m} GB");
    }
    let (foreach, _) = best(&llama, "2048", "8", &[]);
    let (fused, _) = best(&llama, "2048", "8", &["--optimizer-step", "fused"]);
    assert!((foreach - 0.3361).abs() < 5e-5, "{foreach}");
    assert!((fused - 0.3206).abs() < 5e-5, "{fused}");
    // Megatron-LM has one loss and one Adam: other choices are refused.
    let out = amp(&[
        "plan",
        "--model",
        "gpt2",
        "--seq",
        "1024",
        "--cluster",
        "1x1xH200",
        "--global-batch",
        "8",
        "--engine",
        "megatron",
        "--optimizer-step",
        "foreach",
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("fused Adam"), "{}", stderr(&out));
}

/// `--backward-in-autocast` describes eager PyTorch's loop: it says so in
/// the header and the plan's setup, and is refused with an engine or on
/// inputs that train without autocast.
#[test]
fn a_backward_inside_autocast_is_eager_pytorchs_alone() {
    let base = [
        "plan",
        "--model",
        "llama3-8b",
        "--seq",
        "4096",
        "--cluster",
        "1x1xH200",
        "--global-batch",
        "1",
        "--recompute",
        "full",
        "--optimizer-step",
        "fused",
    ];
    let text = amp_text(&[&base[..], &["--backward-in-autocast"]].concat());
    assert!(
        text.contains("recompute full, backward in autocast"),
        "{text}"
    );
    let v = amp_json(&[&base[..], &["--backward-in-autocast", "--json"]].concat());
    let p = &v["plans"][0];
    assert_eq!(p["setup"]["backward_in_autocast"], true, "{p}");
    // The README's figures: the end of the backward holds every cast
    // beside the gradients, 147.99 of 150.75 GB (132.98 outside).
    let gb = |p: &serde_json::Value| p["memory"][0]["peak_bytes"].as_f64().unwrap() / 1e9;
    assert!((gb(p) - 147.99).abs() < 0.005, "{}", gb(p));
    let outside = amp_json(&[&base[..], &["--json"]].concat());
    assert!((gb(&outside["plans"][0]) - 132.98).abs() < 0.005);
    assert!(outside["plans"][0]["setup"]
        .get("backward_in_autocast")
        .is_none());
    for refused in [
        &["plan", "--example", "homogeneous", "--backward-in-autocast"][..],
        &[
            &base[..],
            &["--backward-in-autocast", "--engine", "megatron"],
        ]
        .concat(),
        &[
            &base[..],
            &["--backward-in-autocast", "--precision", "fp32"],
        ]
        .concat(),
    ] {
        let o = amp(refused);
        assert_eq!(o.status.code(), Some(1), "{refused:?}");
        assert!(
            stderr(&o).contains("backward-in-autocast"),
            "{}",
            stderr(&o)
        );
    }
}

/// Without an engine a plan trains as eager PyTorch's autocast, with an
/// fp32 residual stream in its recorded setup; an engine, or the AMP
/// artifact's own runs, keep it 16-bit (the field is absent).
#[test]
fn eager_plans_record_an_fp32_residual_stream() {
    let residual = |args: &[&str]| {
        let mut a = vec!["plan", "--json", "--top", "1"];
        a.extend_from_slice(args);
        let v = amp_json(&a);
        v["plans"][0]["setup"]["formats"]["residual_stream"].clone()
    };
    let gpt2 = ["--model", "gpt2", "--seq", "1024", "--cluster", "1x1xH200"];
    let eager = [&gpt2[..], &["--global-batch", "8"]].concat();
    assert_eq!(residual(&eager), "fp32");
    let megatron = [&eager[..], &["--engine", "megatron"]].concat();
    assert!(residual(&megatron).is_null());
    // The table's header says how the plan was priced.
    let header = |args: &[&str]| stdout(&amp(&[&["plan", "--top", "1"][..], args].concat()));
    assert!(
        header(&eager).contains("training setup: bf16 autocast (fp32 residual stream), 1f1b"),
        "{}",
        header(&eager)
    );
    assert!(!header(&megatron).contains("autocast"));
    assert!(residual(&["--example", "homogeneous"]).is_null());
    // An eager plan still exports to an engine, which keeps its own
    // residual stream.
    let o = amp(&[&["plan", "--json", "--top", "1"][..], &eager[..]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let plans = tmp("eager-plans.json", &stdout(&o));
    let out = plans.with_extension("megatron");
    let o = amp(&[
        &["export", plans.to_str().unwrap(), "--to", "megatron"][..],
        &["--out", out.to_str().unwrap()][..],
        &gpt2[..],
    ]
    .concat());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(out.join("args.sh").is_file());
    let _ = std::fs::remove_dir_all(&out);
}

/// At 16,384 GPUs a data-parallel ring over 1,024 nodes pays 2,048 network
/// steps of latency; NCCL's tree pays 20. The README's Llama-3-8B figures.
#[test]
fn data_parallelism_at_scale_is_priced_with_nccls_tree() {
    let v = amp_json(&[
        "plan",
        "--model",
        "llama3-8b",
        "--seq",
        "8192",
        "--cluster",
        "2048x8xH100",
        "--global-batch",
        "2048",
        "-q",
        "--top",
        "4",
        "--json",
    ]);
    let plans = v["plans"].as_array().unwrap();
    let find = |tp: u64, pp: u64, dp: u64| {
        plans
            .iter()
            .find(|p| p["tp"] == tp && p["pp"] == pp && p["dp"] == dp)
            .map(|p| p["predicted_iteration_s"].as_f64().unwrap())
            .unwrap_or_else(|| panic!("no tp {tp} pp {pp} dp {dp} in {plans:?}"))
    };
    assert_eq!(
        (plans[0]["tp"].as_u64(), plans[0]["dp"].as_u64()),
        (Some(4), Some(2048))
    );
    assert!((find(4, 2, 2048) - 0.4829).abs() < 5e-5);
    assert!((find(4, 4, 1024) - 0.5459).abs() < 5e-5);
}

/// The README's Llama 3.1 405B figures on 16,384 H100, each setup searched
/// on its own (the README's `--search-setup all` run finds the 4-chunk one
/// as its best): 8 chunks with full recomputation and sequence
/// parallelism, 2 and 4 chunks without recomputation, 8 chunks with
/// recomputation without sequence parallelism (Meta's setup, whose layout
/// amp's memory model fits only with full recomputation), the best of
/// AMP's space with sequence parallelism, and that space with Megatron-LM's
/// defaults, where nothing fits.
#[test]
fn llama405b_plans_cost_what_the_readme_says() {
    let base = [
        "plan",
        "--model",
        "llama-3.1-405b",
        "--cluster",
        "2048x8xH100@3200Gbps",
        "--global-batch",
        "2048",
        "--seq",
        "8192",
        "--engine",
        "megatron",
        "-q",
    ];
    let best = |setup: &[&str]| {
        let mut args = base.to_vec();
        args.extend(["--top", "1", "--json"]);
        args.extend_from_slice(setup);
        let v = amp_json(&args);
        let p = &v["plans"][0];
        (
            (p["tp"].as_u64(), p["pp"].as_u64(), p["dp"].as_u64()),
            p["predicted_iteration_s"].as_f64().unwrap(),
        )
    };
    let sharded = ["--optimizer-sharding", "zero1"];
    let sp = ["--sequence-parallel"];
    let (layout, s) = best(
        &[
            &["--schedule", "interleaved:8", "--recompute", "full"][..],
            &sharded[..],
            &sp[..],
        ]
        .concat(),
    );
    // Meta's layout, since plans Megatron-LM cannot launch are dropped
    // (2026-12-06): pp 8 x dp 256 at 7.7974 s before, its tp groups across
    // nodes.
    assert_eq!(layout, (Some(8), Some(16), Some(128)));
    // 7.8088 s while the interleaved schedule's sends held their sender
    // (Megatron-LM's `overlap_p2p_comm` overlaps them), before 2026-12-07
    // late; 8.1232 s while Megatron-LM's sends were priced as
    // scatter/gather with a receivers' all-gather, before 2026-12-07
    // evening; 7.9557 s while its distributed optimizer's reduce-scatter
    // and all-gather were priced as one fp32 all-reduce.
    assert!((s - 7.7870).abs() < 5e-4, "{s}");
    // Since Megatron-LM's gradients are held once (its `main_grad`s are
    // views into the buffer its collective reads), 2026-12-06: pp 64 x dp
    // 32 at 7.8424 s before.
    let (layout, s) = best(&[&["--schedule", "interleaved:2"][..], &sharded[..], &sp[..]].concat());
    assert_eq!(layout, (Some(8), Some(32), Some(64)));
    // 7.4299 s while its sends held their sender, before 2026-12-07 late.
    assert!((s - 7.3879).abs() < 5e-4, "{s}");
    // 6.5740 s in a placement Megatron-LM cannot launch, before 2026-12-06;
    // 6.3883 s while its sends held their sender, before 2026-12-07 late.
    let (layout, s) = best(&[&["--schedule", "interleaved:4"][..], &sharded[..], &sp[..]].concat());
    assert_eq!(layout, (Some(8), Some(32), Some(64)));
    assert!((s - 6.3441).abs() < 5e-4, "{s}");
    let meta = [
        &["--schedule", "interleaved:8", "--recompute", "full"][..],
        &sharded[..],
    ]
    .concat();
    // pp 16 x dp 128, Meta's layout, at 7.9309 s before 2026-12-06, then
    // pp 8 x dp 256 at 7.7974 s until plans Megatron-LM cannot launch were
    // dropped.
    // pp 16 x dp 128 at 8.1232 s until Megatron Core's whole sends were
    // priced (2026-12-07 evening): without sequence parallelism each of a
    // group's eight ranks sends the whole activation.
    // 8.6465 s while its sends held their sender, before 2026-12-07 late.
    let (layout, s) = best(&meta);
    assert_eq!(layout, (Some(8), Some(8), Some(256)));
    assert!((s - 8.5817).abs() < 5e-4, "{s}");
    let (layout, s) = best(&sp);
    assert_eq!(layout, (Some(8), Some(128), Some(16)));
    assert!((s - 10.0561).abs() < 5e-4, "{s}");
    // Megatron-LM's defaults: without sequence parallelism every rank
    // keeps the norms' and projections' inputs whole, and nothing fits.
    let out = amp(&base);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("164 do not fit in GPU memory"),
        "{}",
        stderr(&out)
    );
}

/// The AMP artifact's inputs default to its runs' code: Megatron-LM's loss
/// and a fused Adam, as they default to its fp16; a flag overrides.
#[test]
fn the_artifacts_inputs_default_to_its_loss_and_adam() {
    let setup = |extra: &[&str]| {
        let mut args = vec![
            "plan",
            "--example",
            "het-cluster",
            "--json",
            "-q",
            "--top",
            "1",
        ];
        args.extend_from_slice(extra);
        amp_json(&args)["plans"][0]["setup"].clone()
    };
    let s = setup(&[]);
    assert_eq!(s["cross_entropy"], "megatron");
    assert_eq!(s["optimizer_step"], "fused");
    let s = setup(&["--cross-entropy", "pytorch", "--optimizer-step", "foreach"]);
    assert_eq!(s["cross_entropy"], "pytorch");
    assert_eq!(s["optimizer_step"], "foreach");
    // A zoo model with no engine: plain PyTorch's, left to the default.
    let v = amp_json(&[
        "plan",
        "--model",
        "gpt2",
        "--seq",
        "1024",
        "--cluster",
        "1x1xH200",
        "--global-batch",
        "8",
        "--json",
        "-q",
        "--top",
        "1",
    ]);
    assert!(v["plans"][0]["setup"].get("cross_entropy").is_none());
}

/// `amp plan --json --top 1000` of gpt2-medium (sequence 1024, batch 32) on
/// `cluster`.
fn gpt2_medium_plan(cluster: &str) -> Vec<&str> {
    vec![
        "plan",
        "--model",
        "gpt2-medium",
        "--seq",
        "1024",
        "--cluster",
        cluster,
        "--global-batch",
        "32",
        "--json",
        "--top",
        "1000",
    ]
}

/// The plans of [`gpt2_medium_plan`] on `cluster` with `extra` flags.
fn gpt2_medium_plans(cluster: &str, extra: &[&str]) -> Vec<serde_json::Value> {
    amp_json_with(&gpt2_medium_plan(cluster), extra)["plans"]
        .as_array()
        .unwrap()
        .clone()
}

/// [`gpt2_medium_plan`] on `cluster` as it is and with `flags`: each plan
/// both find (the same stages and micro-batch) as (pp, time as it is, time
/// with the flags), and the first plan's setup of each.
fn same_plans_with(
    cluster: &str,
    flags: &[&str],
) -> (Vec<(u64, f64, f64)>, serde_json::Value, serde_json::Value) {
    let (plain, flagged) = (
        gpt2_medium_plans(cluster, &[]),
        gpt2_medium_plans(cluster, flags),
    );
    let key = |p: &serde_json::Value| (p["stages"].to_string(), p["micro_batch"].to_string());
    let time = |p: &serde_json::Value| p["predicted_iteration_s"].as_f64().unwrap();
    let pairs = flagged
        .iter()
        .filter_map(|f| {
            let p = plain.iter().find(|p| key(p) == key(f))?;
            Some((f["pp"].as_u64().unwrap(), time(p), time(f)))
        })
        .collect();
    (
        pairs,
        plain[0]["setup"].clone(),
        flagged[0]["setup"].clone(),
    )
}

/// `--stage-exchange`: lockstep (DeepSpeed's TrainSchedule) never prices a
/// pipelined plan faster than blocking sends and prices some slower; it is
/// the AMP artifact's and DeepSpeed's default, and refused where the engine
/// or schedule runs otherwise.
#[test]
fn lockstep_exchange_prices_pipelines_as_deepspeed_runs_them() {
    let cluster = "4x1xA100-40GB@10Gbps";
    let (pairs, blocking, lockstep) = same_plans_with(cluster, &["--stage-exchange", "lockstep"]);
    assert_eq!(lockstep["stage_exchange"], "lockstep");
    assert!(blocking.get("stage_exchange").is_none());
    let (mut same, mut slower) = (0, 0);
    for &(_, tb, tl) in pairs.iter().filter(|p| p.0 > 1) {
        assert!(tl >= tb * (1.0 - 1e-12), "lockstep {tl} < blocking {tb}");
        same += 1;
        slower += usize::from(tl > tb * 1.001);
    }
    assert!(
        same >= 5 && slower >= 1,
        "{same} plans compared, {slower} slower"
    );
    let run = |extra: &[&str]| gpt2_medium_plans(cluster, extra);
    // DeepSpeed's own and the AMP artifact's setups exchange in lockstep.
    let time = |plans: &[serde_json::Value]| plans[0]["predicted_iteration_s"].as_f64();
    let ds = run(&["--engine", "deepspeed"]);
    assert!(ds[0]["setup"].get("stage_exchange").is_none());
    assert_eq!(
        time(&ds),
        time(&run(&[
            "--engine",
            "deepspeed",
            "--stage-exchange",
            "lockstep"
        ]))
    );
    let amp_example = amp_json(&["plan", "--example", "het-cluster", "--json", "--top", "1"]);
    assert_eq!(
        amp_example["plans"][0]["setup"]["stage_exchange"],
        "lockstep"
    );
    assert_fails_with(
        &[
            "plan",
            "--example",
            "homogeneous",
            "--engine",
            "megatron",
            "--stage-exchange",
            "lockstep",
        ],
        &["megatron exchanges between stages blocking, not lockstep"],
    );
    assert_fails_with(
        &[
            "plan",
            "--example",
            "homogeneous",
            "--schedule",
            "gpipe",
            "--stage-exchange",
            "lockstep",
        ],
        &["DeepSpeed's 1F1B TrainSchedule, not gpipe"],
    );
    assert_fails_with(
        &[
            "plan",
            "--example",
            "homogeneous",
            "--stage-exchange",
            "rendezvous",
        ],
        &["unknown stage exchange `rendezvous`", "lockstep"],
    );
}

/// `--pipeline-receive host-staged` (Sailor's DeepSpeed fork): every
/// pipelined plan pays its receives' fp32 host buffers, one-stage plans
/// nothing; the plan and the header say so, and engines refuse it.
#[test]
fn host_staged_receives_price_pipelines_only() {
    let (pairs, direct, staged) = same_plans_with(
        "4x1xA100-40GB@10Gbps",
        &["--pipeline-receive", "host-staged"],
    );
    assert_eq!(staged["pipeline_receive"], "host-staged");
    assert!(direct.get("pipeline_receive").is_none());
    let (mut pipelines, mut one_stage) = (0, 0);
    for &(pp, td, ts) in &pairs {
        if pp > 1 {
            assert!(ts > td, "a pipeline: staged {ts} <= direct {td}");
            pipelines += 1;
        } else {
            assert_eq!(ts, td);
            one_stage += 1;
        }
    }
    assert!(
        pipelines >= 5 && one_stage >= 1,
        "{pipelines} / {one_stage}"
    );
    let text = stdout(&amp(&[
        "plan",
        "--model",
        "gpt2-medium",
        "--cluster",
        "4x1xA100-40GB@10Gbps",
        "--global-batch",
        "32",
        "--pipeline-receive",
        "host-staged",
    ]));
    assert!(text.contains("host-staged receives"), "{text}");
    assert_fails_with(
        &[
            "plan",
            "--example",
            "homogeneous",
            "--engine",
            "deepspeed",
            "--pipeline-receive",
            "host-staged",
        ],
        &[
            "host-staged receives are Sailor's fork",
            "--pipeline-receive",
        ],
    );
    assert_fails_with(
        &[
            "plan",
            "--example",
            "homogeneous",
            "--pipeline-receive",
            "host",
        ],
        &["unknown pipeline receive `host`", "host-staged"],
    );
}

/// `--grad-reduce-barrier` (Sailor's DeepSpeed fork): no plan is priced
/// faster, some pipelines slower (a stage that finishes early reduces only
/// when the last one has: on mixed GPUs, a fast stage with more layers);
/// one-stage plans are unchanged.
#[test]
fn a_barrier_before_the_grad_reduce_never_speeds_a_plan() {
    let (pairs, plain, barrier) = same_plans_with(
        "2x4xA100-40GB@10Gbps+2x4xV100-16GB@10Gbps",
        &["--grad-reduce-barrier"],
    );
    assert_eq!(barrier["grad_reduce_barrier"], true);
    assert!(plain.get("grad_reduce_barrier").is_none());
    let (mut compared, mut slower) = (0, 0);
    for &(pp, tp, tb) in &pairs {
        assert!(tb >= tp * (1.0 - 1e-12), "barrier {tb} < plain {tp}");
        if pp == 1 {
            assert_eq!(tb, tp);
        }
        compared += 1;
        slower += usize::from(tb > tp * 1.0001);
    }
    assert!(compared >= 100 && slower >= 10, "{compared} / {slower}");
    assert_fails_with(
        &[
            "plan",
            "--example",
            "homogeneous",
            "--grad-reduce-barrier",
            "--overlap-allreduce",
        ],
        &["cannot overlap the last backward"],
    );
}

/// DeepSpeed runs ZeRO 0 and 1 on its pipeline engine (amp's export),
/// which reduces the gradients after the last backward whatever
/// `overlap_comm` says: an overlapped reduction there would be priced and
/// never run, so amp refuses it; ZeRO-2 and 3 overlap on DeepSpeed's own
/// engine.
#[test]
fn deepspeed_overlaps_its_reductions_only_on_its_own_engine() {
    let base = [
        "plan",
        "--model",
        "gpt3-1.3b",
        "--cluster",
        "2x8xA100-40GB",
        "--global-batch",
        "256",
        "--engine",
        "deepspeed",
        "--overlap-allreduce",
        "--top",
        "1",
        "--json",
        "-q",
    ];
    for (sharding, what) in [("none", "training without ZeRO"), ("zero1", "ZeRO-1")] {
        assert_fails_with(
            &[&base[..], &["--optimizer-sharding", sharding]].concat(),
            &[
                what,
                "reduces the gradients after the last backward",
                "drop `overlap_grad_reduce` (`--overlap-allreduce`)",
            ],
        );
    }
    for sharding in ["zero2", "zero3"] {
        let v = amp_json(&[&base[..], &["--optimizer-sharding", sharding]].concat());
        assert_eq!(v["plans"][0]["setup"]["overlap_grad_reduce"], true);
    }
}

/// GPT-2's `gelu_new` as Hugging Face's code runs it without an engine:
/// the same iteration as a fused GeLU plus its kernels, and 14 more bytes
/// per element of the MLP's inner tensor held for the backward (an fp32
/// copy of x for `pow`, the fp32 tanh output and `1 + tanh`, and `0.5 x`);
/// `--gelu` picks the kernel, a config's `activation_function` sets the
/// default, and an MLP without GeLU refuses the flag.
#[test]
fn gelu_new_is_priced_as_hugging_face_runs_it() {
    let config = |act: &str| {
        tmp(
            &format!("gpt2-{act}.json"),
            &format!(
                r#"{{"model_type":"gpt2","n_embd":768,"n_layer":12,"n_head":12,"n_positions":1024,"vocab_size":50257,"activation_function":"{act}"}}"#
            ),
        )
    };
    let best = |model: &str, extra: &[&str]| {
        let base = [
            "plan",
            "--model",
            model,
            "--seq",
            "1024",
            "--cluster",
            "1x1xH200",
            "--global-batch",
            "12",
            "--json",
        ];
        let v = amp_json_with(&base, extra);
        let p = &v["plans"][0];
        (
            p["predicted_iteration_s"].as_f64().unwrap(),
            p["memory"][0]["peak_bytes"].as_f64().unwrap(),
        )
    };
    let (new, tanh) = (config("gelu_new"), config("gelu_pytorch_tanh"));
    let (tc, mc) = best(new.to_str().unwrap(), &[]);
    let (tf, mf) = best(tanh.to_str().unwrap(), &[]);
    // The zoo's GPT-2 is Hugging Face's: gelu_new.
    let (tz, mz) = best("gpt2", &[]);
    assert_eq!((tz, mz), (tc, mc));
    let (tg, mg) = best(new.to_str().unwrap(), &["--gelu", "fused"]);
    assert_eq!((tg, mg), (tf, mf));
    // 12 blocks, 12 samples of 1024 tokens, an inner width of 3072.
    let extra = 12.0 * 12.0 * 1024.0 * 3072.0 * 14.0;
    assert!(((mc - mf) / extra - 1.0).abs() < 1e-9, "{mc} {mf}");
    assert!(tc > 1.5 * tf, "{tc} {tf}");
    // The header says when GeLU is priced kernel by kernel.
    let header = |extra: &[&str]| {
        let base = ["plan", "--model", "gpt2", "--cluster", "1x1xH200"];
        let args = [&base[..], &["--global-batch", "12", "--top", "1"], extra].concat();
        stdout(&amp(&args))
    };
    assert!(header(&[]).contains("fused attention, gelu_new GeLU (unfused)"));
    assert!(!header(&["--gelu", "fused"]).contains("gelu_new"));
    assert!(!header(&["--engine", "megatron"]).contains("gelu_new"));
    // An engine fuses it.
    let engine = |model: &str| best(model, &["--engine", "megatron"]).0;
    assert_eq!(
        engine(new.to_str().unwrap()),
        engine(tanh.to_str().unwrap())
    );
    assert_fails_with(
        &[
            "plan",
            "--model",
            "llama3-8b",
            "--cluster",
            "1x8xH100",
            "--global-batch",
            "8",
            "--gelu",
            "fused",
        ],
        &["gated (SwiGLU), not GeLU", "drop --gelu"],
    );
    assert_fails_with(
        &[
            "plan",
            "--model",
            "gemma-3-1b",
            "--cluster",
            "1x8xH100",
            "--global-batch",
            "8",
            "--gelu",
            "composite",
        ],
        &["gated (GeGLU)", "one fused kernel", "drop --gelu"],
    );
    assert_fails_with(
        &[
            "plan",
            "--model",
            "gpt2-amp",
            "--cluster",
            "1x1xH200",
            "--global-batch",
            "8",
            "--gelu",
            "fused",
        ],
        &["layer list", "drop --gelu"],
    );
}

/// The AMP artifact's runs all-reduced their fp16 gradients in fp32
/// (DeepSpeed's `fp32_allreduce`): plans on its inputs are priced so by
/// default, `--fp32-allreduce=false` reduces them as they are, and an
/// engine without such an option is refused with the flag named.
#[test]
fn fp32_allreduce_is_the_amp_runs_default_and_can_be_turned_off() {
    let base = ["plan", "--example", "homogeneous", "--top", "1"];
    let header = |extra: &[&str]| {
        let o = amp(&[&base[..], extra].concat());
        assert!(o.status.success(), "{}", stderr(&o));
        stdout(&o).lines().nth(1).unwrap().to_string()
    };
    assert!(header(&[]).contains("fp16, 1f1b, fp32 all-reduce,"));
    assert!(!header(&["--fp32-allreduce=false"]).contains("all-reduce"));
    // The best plan (dp 16 without it) pays twice the gradient bytes.
    let s = |extra: &[&str]| {
        amp_json_with(&base, &[&["--json"][..], extra].concat())["plans"][0]
            ["predicted_iteration_s"]
            .as_f64()
            .unwrap()
    };
    let (wide, narrow) = (s(&[]), s(&["--fp32-allreduce=false"]));
    assert!(wide > narrow * 1.05, "{wide} vs {narrow}");
    assert_eq!(s(&["--fp32-allreduce"]), wide);
    let o = amp(&[
        "plan",
        "--model",
        "gpt2-xl",
        "--cluster",
        "2x8xH100",
        "--global-batch",
        "64",
        "--precision",
        "fp16",
        "--engine",
        "megatron",
        "--fp32-allreduce",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.contains("communication_data_type") && e.contains("`--fp32-allreduce`"),
        "{e}"
    );
}

/// When most candidates are over memory and no setup was searched, the
/// text names the setup options not yet on (and only those); with them
/// searched, or with few candidates over memory, it says nothing.
#[test]
fn most_candidates_over_memory_name_the_setups_that_fit_more() {
    let base = [
        "plan",
        "--model",
        "llama3-70b",
        "--cluster",
        "4x8xH100",
        "--global-batch",
        "512",
        "--seq",
        "4096",
        "--top",
        "1",
        "--engine",
        "megatron",
    ];
    let run = |extra: &[&str]| amp_text(&[&base[..], extra].concat());
    let hint = |text: &str| {
        text.lines()
            .find(|l| l.starts_with("memory: "))
            .map(str::to_string)
    };
    let both = hint(&run(&[])).expect("a hint");
    assert!(
        both.contains("did not fit; --search-setup sharding,recompute also tries sharded optimizer state and recomputation"),
        "{both}"
    );
    // Its counts are the summary's.
    let text = run(&[]);
    let best = text.lines().find(|l| l.starts_with("best: ")).unwrap();
    let counts = both
        .trim_start_matches("memory: ")
        .split(" candidates")
        .next()
        .unwrap();
    let (bad, all) = counts.split_once(" of ").unwrap();
    assert!(
        best.contains(&format!("; {all} candidates, {bad} did not fit")),
        "{best}"
    );
    let sharding = hint(&run(&["--recompute", "full"])).expect("a hint");
    assert!(
        sharding.contains("--search-setup sharding also tries sharded optimizer state,"),
        "{sharding}"
    );
    assert_eq!(
        hint(&run(&[
            "--recompute",
            "full",
            "--optimizer-sharding",
            "zero1"
        ])),
        None
    );
    assert_eq!(hint(&run(&["--search-setup", "sharding,recompute"])), None);
    // Few over memory: no hint.
    let o = amp(&["plan", "--example", "het-cluster"]);
    assert_eq!(hint(&stdout(&o)), None);
    // The README's figures: 212 of 217 over memory (367 of 377 until the
    // placements Megatron-LM cannot launch were left out, 2026-12-06),
    // 55.96 s; 55.26 s with every setup option searched (55.66 and 55.35 s
    // until Megatron Core's whole sends were priced, 2026-12-07 evening).
    assert!(both.starts_with("memory: 212 of 217 candidates"), "{both}");
    let json = |extra: &[&str]| {
        amp_json_with(&base, &[extra, &["--json", "-q"]].concat())["plans"][0]
            ["predicted_iteration_s"]
            .as_f64()
            .unwrap()
    };
    assert!((json(&[]) - 55.9575).abs() < 1e-3);
    assert!((json(&["--search-setup", "all"]) - 55.2644).abs() < 1e-3);
}

/// When nothing fits, the hint names what the search did not try: after
/// `--search-setup all`, not the same setups again.
#[test]
fn no_fit_hints_follow_the_setups_searched() {
    let base = [
        "plan",
        "-q",
        "--model",
        "llama3-70b",
        "--cluster",
        "1x4xT4",
        "--seq",
        "4096",
        "--global-batch",
        "8",
    ];
    let err = |extra: &[&str]| {
        let out = amp(&[&base[..], extra].concat());
        assert_eq!(out.status.code(), Some(1));
        stderr(&out)
    };
    let given = err(&[]);
    assert!(
        given.contains("--search-setup sharding,recompute"),
        "{given}"
    );
    let all = err(&["--search-setup", "all"]);
    assert!(all.contains("training setups searched"), "{all}");
    assert_eq!(all.matches("To fit").count(), 1, "{all}");
    assert!(
        !all.contains("--search-setup") && !all.contains("--recompute"),
        "{all}"
    );
    assert!(all.contains("more GPUs"), "{all}");
    let sharded = err(&["--optimizer-sharding", "zero3"]);
    assert!(!sharded.contains("--optimizer-sharding"), "{sharded}");
    assert!(sharded.contains("--recompute selective, full"), "{sharded}");
}

/// Tensor parallelism splits whole attention heads: GPT-2 XL's 25 heads
/// admit no tp on nodes of 8, so every plan is at tp 1, the per-type search
/// says why it has nothing, and the Megatron-LM recipe takes tp 1, not 8.
#[test]
fn tp_degrees_split_whole_heads() {
    let v = amp_json(&[
        "plan",
        "--model",
        "gpt2-xl",
        "--cluster",
        "2x8xA100@200Gbps+2x8xV100@100Gbps",
        "--global-batch",
        "64",
        "--per-type-tp",
        "--compare",
        "--json",
        "--top",
        "50",
        "-q",
    ]);
    let plans = v["plans"].as_array().unwrap();
    assert!(plans.len() > 5);
    assert!(plans.iter().all(|p| p["tp"] == 1), "a plan above tp 1");
    let skipped = v["skipped"].to_string();
    assert!(
        skipped.contains("split the model's 25 attention heads"),
        "{skipped}"
    );
    // The Megatron-LM recipe takes the largest tp the heads allow: 1.
    assert_eq!(v["baselines"][1]["name"], "Megatron-LM heuristic");
    assert_eq!(v["baselines"][1]["tp"], 1, "{}", v["baselines"][1]);
    // Qwen2.5-7B: 28 heads in 4 key/value groups, so tp 1, 2 and 4.
    let v = amp_json(&[
        "plan",
        "--model",
        "qwen2.5-7b",
        "--cluster",
        "1x8xH100",
        "--global-batch",
        "64",
        "--seq",
        "2048",
        "--json",
        "--top",
        "100",
        "-q",
    ]);
    let mut tps: Vec<u64> = v["plans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["tp"].as_u64().unwrap())
        .collect();
    tps.sort();
    tps.dedup();
    assert_eq!(tps, [1, 2, 4]);
}

/// `--sensitivity` re-runs the search under every other set of constants
/// amp ships: rank 1's time under each is what `amp eval --calibration
/// NAME` gives it, the fastest plan under each is what `amp plan
/// --calibration NAME` ranks first, and the regret is their ratio; the
/// hedge's regrets are its `amp eval` times over those firsts. Figures of
/// the README's table pinned.
#[test]
fn sensitivity_reruns_the_search_under_each_shipped_calibration() {
    let (mut regrets, mut bests, mut hedges) = (Vec::new(), Vec::new(), Vec::new());
    for example in ["homogeneous", "het-cluster", "het-model"] {
        let o = amp(&[
            "plan",
            "--example",
            example,
            "--sensitivity",
            "--json",
            "-q",
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
        let file = tmp(&format!("sensitivity-{example}.json"), &stdout(&o));
        let rows = v["sensitivity"].as_array().unwrap();
        let names: Vec<&str> = rows
            .iter()
            .map(|r| r["calibration"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["neutral", "amp-t4", "sailor-gh200"]);
        for r in rows {
            let name = r["calibration"].as_str().unwrap();
            let eval = amp_json(&[
                "eval",
                file.to_str().unwrap(),
                "--example",
                example,
                "--calibration",
                name,
                "--json",
            ]);
            let pick_s = r["pick_iteration_s"].as_f64().unwrap();
            assert_eq!(
                eval["iteration_s"].as_f64(),
                Some(pick_s),
                "{example} {name}"
            );
            let alone = amp_json(&[
                "plan",
                "--example",
                example,
                "--calibration",
                name,
                "--json",
                "-q",
            ]);
            let best_s = alone["plans"][0]["predicted_iteration_s"].as_f64().unwrap();
            let fastest = &r["fastest"];
            let fastest_s = fastest["predicted_iteration_s"].as_f64().unwrap();
            if fastest["is_pick"] == true {
                assert_eq!(fastest_s, pick_s);
                assert!(pick_s <= best_s, "{example} {name}");
            } else {
                assert_eq!(fastest_s, best_s, "{example} {name}");
                for k in ["tp", "dp", "pp", "micro_batch", "stage_boundaries"] {
                    assert_eq!(fastest[k], alone["plans"][0][k], "{example} {name} {k}");
                }
            }
            let regret = r["regret"].as_f64().unwrap();
            assert!((regret - pick_s / fastest_s).abs() < 1e-12);
            assert!(regret >= 1.0);
            regrets.push(format!("{example} {name} {regret:.3}"));
            bests.push(best_s);
        }
        // The hedge: its regret under each set is its time there, by `amp
        // eval` of its plan, over the best plan `amp plan` finds there.
        let h = &v["sensitivity_hedge"];
        let plan_file = tmp(&format!("hedge-{example}.json"), &h["plan"].to_string());
        let names = ["fitted", "neutral", "amp-t4", "sailor-gh200"];
        let mut worst: f64 = 0.0;
        for (k, name) in names.iter().enumerate() {
            assert_eq!(h["regrets"][k]["calibration"], *name);
            let best_s = if k == 0 {
                v["plans"][0]["predicted_iteration_s"].as_f64().unwrap()
            } else {
                bests[bests.len() - 3 + k - 1]
            };
            let t = amp_json(&[
                "eval",
                plan_file.to_str().unwrap(),
                "--example",
                example,
                "--calibration",
                name,
                "--json",
            ])["iteration_s"]
                .as_f64()
                .unwrap();
            let regret = h["regrets"][k]["regret"].as_f64().unwrap();
            assert!((regret - t / best_s).abs() < 1e-12, "{example} {name}");
            worst = worst.max(regret);
        }
        assert_eq!(h["worst_regret"].as_f64(), Some(worst));
        hedges.push(format!(
            "{example} tp {} pp {} dp {} mbs {} rank {} worst {worst:.3}",
            h["tp"], h["pp"], h["dp"], h["micro_batch"], h["rank"]
        ));
    }
    assert_eq!(
        hedges,
        [
            // Rank 5 at 1.052 on the dp-pp-tp placement until its eight
            // stages per node reduced through one NIC together, 2026-12-07
            // late: now the pp-dp-tp one, as on the artifact's placement.
            "homogeneous tp 1 pp 8 dp 2 mbs 1 rank 7 worst 1.072",
            "het-cluster tp 1 pp 16 dp 1 mbs 1 rank 1 worst 1.034",
            "het-model tp 1 pp 16 dp 1 mbs 1 rank 2 worst 1.046",
        ]
    );
    assert_eq!(
        regrets,
        [
            "homogeneous neutral 1.000",
            "homogeneous amp-t4 1.000",
            "homogeneous sailor-gh200 1.406",
            "het-cluster neutral 1.000",
            "het-cluster amp-t4 1.000",
            "het-cluster sailor-gh200 1.034",
            "het-model neutral 1.113",
            "het-model amp-t4 1.000",
            "het-model sailor-gh200 1.106",
        ]
    );
    // The constants asked for are not re-run; the text names the worst.
    let text = amp_text(&[
        "plan",
        "--example",
        "homogeneous",
        "--calibration",
        "neutral",
        "--sensitivity",
        "-q",
    ]);
    assert!(text.contains("│ fitted "), "{text}");
    assert!(!text.contains("│ neutral "), "{text}");
    assert!(
        text.contains("sensitivity: under --calibration sailor-gh200 rank 1 is"),
        "{text}"
    );
    let text = amp_text(&[
        "plan",
        "--example",
        "homogeneous",
        "--placement",
        "artifact",
        "--sensitivity",
        "-q",
    ]);
    assert!(
        text.contains("hedge: tp 1 pp 8 dp 2 mbs 1, split 0 6 9 12 15 18 21 24 30, pp-dp-tp | T4x8 is at most 7.2% slower than the fastest plan under each set of constants (rank 1: up to 40.6%); 1.3933 s/iteration under --calibration fitted (rank 4 above)"),
        "{text}"
    );
    // A small model on one node: no per-sample profile, no network, memory
    // to spare: the constants change no pick.
    let text = amp_text(&[
        "plan",
        "--model",
        "gpt2",
        "--seq",
        "1024",
        "--cluster",
        "1x8xH100",
        "--global-batch",
        "64",
        "--sensitivity",
        "-q",
    ]);
    assert!(!text.contains("hedge:"), "{text}");
    assert!(
        text.contains("sensitivity: rank 1 is also the fastest plan found under every other set of constants; it does not rest on --calibration fitted"),
        "{text}"
    );
    // Ranked by cost, a regret is in dollars.
    let text = amp_text(&[
        "plan",
        "--example",
        "het-cluster",
        "--objective",
        "cost",
        "--sensitivity",
        "-q",
    ]);
    assert!(
        text.contains(
            "under --calibration neutral rank 1 is 5.9% dearer than the cheapest plan found there"
        ),
        "{text}"
    );
    assert!(text.contains("cheapest there"), "{text}");
    // The report carries the same table and notes.
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("amp-sensitivity-report-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let report = dir.join("r.html");
    let text = amp_text(&[
        "plan",
        "--example",
        "homogeneous",
        "--sensitivity",
        "-q",
        "--report",
        report.to_str().unwrap(),
    ]);
    let html = std::fs::read_to_string(&report).unwrap();
    assert!(html.contains("id=\"sensitivity-table\""));
    let hedge = text.lines().find(|l| l.starts_with("hedge:")).unwrap();
    assert!(html.contains(hedge), "{hedge}");
    amp_text(&[
        "plan",
        "--example",
        "homogeneous",
        "-q",
        "--report",
        report.to_str().unwrap(),
    ]);
    let html = std::fs::read_to_string(&report).unwrap();
    assert!(!html.contains("id=\"sensitivity"));
    // The amp-paper model has no constants to vary.
    let o = amp(&[
        "plan",
        "--example",
        "het-cluster",
        "--cost-model",
        "amp-paper",
        "--sensitivity",
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("--sensitivity re-runs the search under the amp cost model's other fitted constants; the amp-paper model has none"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn torchtitan_pipelines_hold_fsdp2s_unsharded_stage() {
    // torchtitan runs every plan under FSDP2: in a pipeline a stage keeps
    // its 16-bit parameters unsharded through the passes and its gradients
    // accumulated unsharded in fp32 (6 bytes per parameter of the stage,
    // measured by scripts/engine-check/fsdp.py), beside 16 bytes per
    // parameter of its shards. Llama-3-70B's best FSDP plan on 32 H100s
    // was pp 8 x tp 2 x dp 2 at 51.2345 s while amp priced 18 bytes per
    // parameter of the shard and no unsharded copy: 108.68 GB on its
    // fullest GPU now, of 85.52. One stage at tp 4 x dp 8 fits, and was
    // the pick at 54.7702 s while amp priced FSDP2's traffic once per
    // iteration; torchtitan gathers and reduces it at every one of the 64
    // micro-batches (sharded.rs), 29.275 s more than the passes hide, so
    // the pick is the pipeline at tp 4, which gathers once.
    let base = [
        "plan",
        "--model",
        "llama3-70b",
        "--cluster",
        "4x8xH100",
        "--global-batch",
        "512",
        "--seq",
        "4096",
        "--engine",
        "torchtitan",
        "--optimizer-sharding",
        "zero3",
        "--json",
        "--top",
        "20",
    ];
    let v = amp_json(&base);
    let plans = v["plans"].as_array().unwrap();
    let best = &plans[0];
    let shape = |p: &serde_json::Value| {
        (
            p["tp"].as_u64().unwrap(),
            p["pp"].as_u64().unwrap(),
            p["dp"].as_u64().unwrap(),
        )
    };
    assert_eq!(shape(best), (4, 8, 1));
    let t = best["predicted_iteration_s"].as_f64().unwrap();
    assert!((t - 60.7746).abs() < 1e-3, "{t}");
    assert!(plans.iter().all(|p| shape(p) != (2, 8, 2)));
    let one_stage = plans
        .iter()
        .find(|p| shape(p) == (4, 1, 8))
        .expect("one stage at tp 4");
    let t = one_stage["predicted_iteration_s"].as_f64().unwrap();
    let exposed = one_stage["breakdown"]["dp_allreduce_s"].as_f64().unwrap();
    assert!((t - 82.2139).abs() < 1e-3, "{t}");
    assert!((exposed - 27.624).abs() < 1e-3, "{exposed}");
    // A pipelined plan's first stage: every parameter's 16-bit copy and the
    // fp32 accumulated gradients beside its shards (dp 1: whole).
    let piped = plans
        .iter()
        .find(|p| p["pp"].as_u64().unwrap() > 1)
        .expect("a pipelined plan");
    let m = &piped["memory"][0];
    let (w, g, o) = (
        m["weights_bytes"].as_f64().unwrap(),
        m["gradients_bytes"].as_f64().unwrap(),
        m["optimizer_bytes"].as_f64().unwrap(),
    );
    let dp = piped["dp"].as_f64().unwrap();
    let params = o * dp / 12.0;
    assert!((w - 2.0 * params).abs() < 1e-6 * w, "{w} {params}");
    assert!(
        (g - (4.0 / dp + 4.0) * params).abs() < 1e-6 * g,
        "{g} {params}"
    );
}

#[test]
fn sharded_traffic_figures_are_the_readmes() {
    // README, "torchtitan's FSDP2 traffic and DeepSpeed's ZeRO-2 and 3,
    // when they run": one-stage plans whose engines gather and reduce at
    // every micro-batch (sharded.rs).
    let best = |args: &[&str]| {
        let v = amp_json(args);
        let p = v["plans"][0].clone();
        (
            p["tp"].as_u64().unwrap(),
            p["dp"].as_u64().unwrap(),
            p["pp"].as_u64().unwrap(),
            p["micro_batch"].as_u64().unwrap(),
            p["setup"]["optimizer_sharding"]
                .as_str()
                .unwrap_or("none")
                .to_string(),
            p["predicted_iteration_s"].as_f64().unwrap(),
            p["breakdown"]["dp_allreduce_s"].as_f64().unwrap(),
        )
    };
    let gpt3 = [
        "plan",
        "--model",
        "gpt3-1.3b",
        "--cluster",
        "2x8xA100-40GB",
        "--global-batch",
        "256",
        "--seq",
        "2048",
        "--engine",
        "deepspeed",
        "--json",
        "--top",
        "3",
    ];
    // ZeRO-2: every micro-batch's all-reduce on the computation's stream,
    // and the weights' all-gather after the step; at micro-batch 8, since
    // DeepSpeed's own engine keeps no pipe buffer of earlier logits.
    let zero2 = best(&[&gpt3[..], &["--optimizer-sharding", "zero2"]].concat());
    assert_eq!((zero2.0, zero2.1, zero2.2, zero2.3), (1, 16, 1, 8));
    assert!((zero2.5 - 1.6618).abs() < 1e-3, "{zero2:?}");
    assert!((zero2.6 - 0.0798).abs() < 1e-3, "{zero2:?}");
    // Its peak, the reduction bucket held through the backward only, the
    // loss's log-probabilities freed before it.
    let v = amp_json(&[&gpt3[..], &["--optimizer-sharding", "zero2"]].concat());
    let peak = v["plans"][0]["memory"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["peak_bytes"].as_f64().unwrap())
        .fold(0.0, f64::max);
    assert_eq!(format!("{:.2}", peak / 1e9), "40.77");
    // Over the shardings: ZeRO-3 hides its traffic behind the passes, at
    // micro-batch 8 (beside the layers its reuse distance keeps gathered
    // into the backward, with no pipe buffer).
    let any = best(&[&gpt3[..], &["--search-setup", "sharding"]].concat());
    assert_eq!(
        (any.0, any.1, any.2, any.3, any.4.as_str()),
        (1, 16, 1, 8, "zero3")
    );
    assert!((any.5 - 1.5879).abs() < 1e-3, "{any:?}");
    assert!((any.6 - 0.0059).abs() < 1e-3, "{any:?}");
    let llama = |rest: &[&str]| {
        let base = [
            "plan",
            "--model",
            "llama3-8b",
            "--global-batch",
            "256",
            "--seq",
            "4096",
            "--json",
            "--top",
            "3",
        ];
        best(&[&base[..], rest].concat())
    };
    let ds3 = llama(&[
        "--cluster",
        "2x8xH100",
        "--engine",
        "deepspeed",
        "--optimizer-sharding",
        "zero3",
    ]);
    assert!((ds3.5 - 5.4691).abs() < 1e-3, "{ds3:?}");
    // torchtitan without sharding on two nodes: the best is a pipeline,
    // whose all-reduce is once per iteration; one stage at tp 2 x dp 8
    // all-reduces at every micro-batch, mostly behind the backward.
    let v = amp_json(
        &[
            &LLAMA3_8B_ON_2X8_H100[..],
            &["--engine", "torchtitan", "--json", "--top", "5"],
        ]
        .concat(),
    );
    let plans = v["plans"].as_array().unwrap();
    let t0 = plans[0]["predicted_iteration_s"].as_f64().unwrap();
    assert!(
        plans[0]["pp"].as_u64().unwrap() > 1 && (t0 - 6.3606).abs() < 1e-3,
        "{t0}"
    );
    let one = plans
        .iter()
        .find(|p| (p["tp"].as_u64(), p["pp"].as_u64()) == (Some(2), Some(1)))
        .expect("tp 2 in one stage");
    let t = one["predicted_iteration_s"].as_f64().unwrap();
    assert!((t - 6.5256).abs() < 1e-3, "{t}");
    // torchtitan on one node: NVLink hides most of FSDP2's traffic.
    let v = amp_json(&[
        "plan",
        "--model",
        "llama3-8b",
        "--cluster",
        "1x8xH100",
        "--global-batch",
        "64",
        "--seq",
        "4096",
        "--engine",
        "torchtitan",
        "--optimizer-sharding",
        "zero3",
        "--json",
        "--top",
        "1",
    ]);
    let p = &v["plans"][0];
    assert_eq!(
        (
            p["tp"].as_u64(),
            p["dp"].as_u64(),
            p["micro_batch"].as_u64()
        ),
        (Some(1), Some(8), Some(2))
    );
    let t = p["predicted_iteration_s"].as_f64().unwrap();
    let exposed = p["breakdown"]["dp_allreduce_s"].as_f64().unwrap();
    assert!(
        (t - 2.9345).abs() < 1e-3 && (exposed - 0.061).abs() < 1e-3,
        "{t} {exposed}"
    );
}

/// amp's pick for torchtitan's published 8B run (benchmarks/
/// llama3_h100_202412_torchtitan.md, Tables 1 and 3: Llama 3.1 8B, FSDP,
/// selective checkpointing, sequence 8192, a local batch of 2) on `cluster`
/// at `batch`, with `extra` flags: (dp, micro-batch, micro-batches), the
/// first GPU's peak in GiB, and the predicted iteration.
fn published_8b_pick(
    cluster: &std::path::Path,
    batch: &str,
    extra: &[&str],
) -> ((u64, u64, u64), f64, f64) {
    let mut args = vec![
        "plan",
        "--model",
        "llama3-8b",
        "--seq",
        "8192",
        "--cluster",
        cluster.to_str().unwrap(),
        "--global-batch",
        batch,
        "--engine",
        "torchtitan",
        "--optimizer-sharding",
        "zero3",
        "--recompute",
        "selective",
        "--json",
    ];
    args.extend_from_slice(extra);
    let p = amp_json(&args)["plans"][0].clone();
    let shape = (
        p["dp"].as_u64().unwrap(),
        p["micro_batch"].as_u64().unwrap(),
        p["num_micro_batches"].as_u64().unwrap(),
    );
    let peak = p["memory"][0]["peak_bytes"].as_f64().unwrap() / (1u64 << 30) as f64;
    (shape, peak, p["predicted_iteration_s"].as_f64().unwrap())
}

#[test]
fn torchtitans_selective_checkpointing_fits_its_published_8b_run() {
    // README, "torchtitan's selective checkpointing": torchtitan's own
    // benchmark (benchmarks/llama3_h100_202412_torchtitan.md, Table 1) runs
    // Llama 3.1 8B on 8 H100s of 96 GB at a local batch of 2, sequence
    // 8192, FSDP, selective checkpointing: 82.4 GiB, 5,762 tokens/s/GPU.
    // Nodes of 8 such GPUs (the catalog H100), `nodes` of them; amp's pick
    // at `batch`.
    let pick = |nodes: usize, batch: &str, loss: &[&str]| {
        let cluster = common::tmp(
            &format!("grand-teton-{nodes}.toml"),
            &format!(
                "name = \"grand-teton\"\n[[nodes]]\ngpu = \"H100\"\ngpus = 8\nintra_gbps = 3600\n\
                 inter_gbps = 3200\nnics = 8\ngpu_memory_gib = 96\ncount = {nodes}\n"
            ),
        );
        published_8b_pick(&cluster, batch, loss)
    };
    // The run's loss: unchunked, before torchtitan 0.3.0.
    let unchunked = ["--cross-entropy", "pytorch"];
    // amp's pick is the run's plan. It fits, at 75.92 GiB (111.86 with
    // Megatron-LM's selective recomputation, which keeps every activation
    // of a fused-attention block), and amp's time is 37% below the run's
    // 2.843 s (41%, 1.6881 s, before torchtitan's eager kernels were
    // priced).
    let (shape, peak, time) = pick(1, "16", &unchunked);
    assert_eq!(shape, (8, 2, 1));
    assert!((peak - 75.92).abs() < 0.01, "{peak}");
    assert!((time - 1.7845).abs() < 1e-3, "{time}");
    // With torchtitan 0.3.0's chunked loss, the default, the same plan at
    // 56.11 GiB.
    let (shape, peak, time) = pick(1, "16", &[]);
    assert_eq!(shape, (8, 2, 1));
    assert!((peak - 56.11).abs() < 0.01, "{peak}");
    assert!((time - 1.7845).abs() < 1e-3, "{time}");
    // Table 3: 16 such nodes at a global batch of 256, 2.923 s measured.
    let (shape, _, time) = pick(16, "256", &unchunked);
    assert_eq!(shape, (128, 2, 1));
    assert!((time - 1.7803).abs() < 1e-3, "{time}");
}

/// A cluster of `nodes` Grand Teton servers as torchtitan's benchmarks
/// describe them: 8 H100s of 96 GB of HBM2e at 2.4 TB/s, a 500 W limit,
/// "the actual peak TFLOPs number is between SXM and NVL", 400 Gb/s per GPU.
/// A cluster-file GPU at either end of that range of peaks: 989.5 (the
/// SXM's, as the catalog H100) and 835 TFLOP/s (the NVL's datasheet).
fn grand_teton(nodes: usize, peak: f64) -> std::path::PathBuf {
    common::tmp(
        &format!("grand-teton-{nodes}-{peak}.toml"),
        &format!(
            "name = \"grand-teton\"\n[[gpus]]\nname = \"H100-96GB-500W\"\nlike = \"H100-SXM\"\n\
             memory_gib = 96\nmemory_bandwidth_gbs = 2400\nbf16_tflops = {peak}\n\
             fp16_tflops = {peak}\n[[nodes]]\ngpu = \"H100-96GB-500W\"\ngpus = 8\n\
             intra_gbps = 3600\ninter_gbps = 3200\nnics = 8\ncount = {nodes}\n"
        ),
    )
}

#[test]
fn torchtitans_published_run_on_the_gpus_its_benchmark_describes() {
    // README, "GPUs a cluster file defines" and "torch.compile under
    // torchtitan": Table 1 (8 GPUs) and 3 (128) of torchtitan's benchmark
    // (benchmarks/llama3_h100_202412_torchtitan.md), Llama 3.1 8B, FSDP,
    // local batch 2 x 8192, selective checkpointing, eager and compiled.
    let pick = |nodes: usize, peak: f64, compile: bool| {
        let batch = (16 * nodes).to_string();
        let flags: &[&str] = if compile {
            &["--cross-entropy", "pytorch", "--compile"]
        } else {
            &["--cross-entropy", "pytorch"]
        };
        let (shape, peak_gib, time) = published_8b_pick(&grand_teton(nodes, peak), &batch, flags);
        assert_eq!(shape, (8 * nodes as u64, 2, 1));
        (peak_gib, time)
    };
    let near = |got: f64, want: f64| assert!((got - want).abs() < 1e-3, "{got} for {want}");
    // Eager, 2.843 s measured on 8 GPUs and 2.923 on 128: amp 33% (SXM
    // peak) to 23% (NVL peak) below on 8, 35% to 26% on 128, where the
    // catalog H100 (3.35 TB/s) put it 37% and 39% below. Memory does not
    // move (82.4 GiB reserved in the run's log).
    let (mem, t) = pick(1, 989.5, false);
    assert!((mem - 75.92).abs() < 0.01, "{mem}");
    near(t, 1.9088);
    near(pick(1, 835.0, false).1, 2.1779);
    near(pick(16, 989.5, false).1, 1.9002);
    near(pick(16, 835.0, false).1, 2.1693);
    // Compiled, 2.4575 s measured on 8 GPUs (77.0 GiB) and 2.5153 on 128:
    // amp 28% to 17% below on 8, 30% to 20% on 128, 4 GiB less memory.
    let (mem, t) = pick(1, 989.5, true);
    assert!((mem - 71.92).abs() < 0.01, "{mem}");
    near(t, 1.7637);
    near(pick(1, 835.0, true).1, 2.0326);
    near(pick(16, 989.5, true).1, 1.7551);
    near(pick(16, 835.0, true).1, 2.0239);
    // With neutral constants: the same time (no time constant applies to
    // these runs), the memory without the 4.5 GB reserve.
    let (_, mem, t) = published_8b_pick(
        &grand_teton(1, 835.0),
        "16",
        &[
            "--cross-entropy",
            "pytorch",
            "--compile",
            "--calibration",
            "neutral",
        ],
    );
    near(t, 2.0326);
    assert!((mem - 67.73).abs() < 0.01, "{mem}");
}

#[test]
fn torchtitans_published_tensor_parallel_runs() {
    // README, "torch.compile under torchtitan": torchtitan's async-TP
    // benchmark (benchmarks/asyncTP_llama3_h100_2025-06_torchtitan.md),
    // vanilla TP rows in bf16, compiled, sequence parallelism on
    // (torchtitan's default with TP), on the same GPUs. Each is one plan,
    // priced by amp eval: one stage, tp 8 in each node, FSDP over the nodes,
    // the local batch one micro-batch.
    let price = |model: &str, nodes: usize, micro_batch: usize, recompute: &str, peak: f64| {
        let layers = if model == "llama3-8b" { 35 } else { 83 };
        let replicas: Vec<serde_json::Value> = (0..nodes)
            .map(|n| {
                serde_json::json!((0..8)
                    .map(|g| serde_json::json!({"node": n, "gpu": g}))
                    .collect::<Vec<_>>())
            })
            .collect();
        let plan = common::tmp(
            &format!("tp-run-{model}-{peak}.json"),
            &serde_json::json!({
                "micro_batch": micro_batch,
                "num_micro_batches": 1,
                "stages": [{"first_layer": 0, "end_layer": layers, "replicas": replicas}],
            })
            .to_string(),
        );
        let cluster = grand_teton(nodes, peak);
        amp_json(&[
            "eval",
            plan.to_str().unwrap(),
            "--model",
            model,
            "--seq",
            "8192",
            "--cluster",
            cluster.to_str().unwrap(),
            "--engine",
            "torchtitan",
            "--optimizer-sharding",
            "zero3",
            "--recompute",
            recompute,
            "--sequence-parallel",
            "--compile",
            "--json",
        ])["iteration_s"]
            .as_f64()
            .unwrap()
    };
    let near = |got: f64, want: f64| assert!((got - want).abs() < 1e-3, "{got} for {want}");
    // Llama 3 8B on 64 GPUs, FSDP 8 x TP 8, per-op selective checkpointing,
    // local batch 12: 4,378 tokens/s/GPU, 2.807 s. amp 13% to 5% below.
    near(price("llama3-8b", 8, 12, "selective", 989.5), 2.4475);
    near(price("llama3-8b", 8, 12, "selective", 835.0), 2.6533);
    // Llama 3 70B on 256 GPUs, FSDP 32 x TP 8, full checkpointing, local
    // batch 16: 597.3 tokens/s/GPU, 27.43 s. amp 11% to 2% below.
    near(price("llama3-70b", 32, 16, "full", 989.5), 24.3705);
    near(price("llama3-70b", 32, 16, "full", 835.0), 26.9874);
}

/// Megatron-Bridge's published Llama 3 70B pre-training run on 64 H100s
/// (docs/performance-summary-archive.md, DGX-H100 rows: FP8 current
/// scaling, TP 4 x PP 8 x VP 5, DP 2, micro-batch 1, sequence 8192; at a
/// global batch of 128, 1,619 and 1,602 tokens/s/GPU in the 25.09 and 25.11
/// containers, 10.12 and 10.23 s; at 256, 1,621-1,664 in 26.02-26.04.01,
/// 19.69-20.21 s). Its recipe (perf_recipes/llama/h100/llama3.py, from
/// 2026-06) overlaps the tensor-parallel collectives (userbuffers), keeps
/// bf16 gradients (`grad_reduce_in_fp32 = False`), shards the optimizer
/// and overlaps the reduction; the measured containers predate its
/// explicit layout (2026-08), so Megatron-LM's even split of 2 blocks a
/// virtual stage. DGX-H100's network is ND H100 v5's: NVSwitch, 8 x 400
/// Gb/s InfiniBand. README, "Megatron-Bridge's published run".
#[test]
fn megatron_bridges_published_llama3_70b_fp8_run() {
    let (pp, v, tp, dp) = (8, 5, 4, 2);
    let mut even = vec![0];
    even.extend((3..80).step_by(2));
    even.push(83);
    // The layout the recipe pins since 2026-08 (no published measurement):
    // `Et*2|(t*2|)*34,t*3|(t*2|)*3,tL`.
    let mut pinned = vec![0, 3];
    pinned.extend((5..72).step_by(2));
    pinned.extend([74, 76, 78, 80, 83]);
    assert_eq!((even.len(), pinned.len()), (pp * v + 1, pp * v + 1));
    let price_split = |bounds: &[usize], micro_batches: usize, recipe: &[&str]| {
        let stages: Vec<serde_json::Value> = (0..pp * v)
            .map(|i| {
                let replicas: Vec<serde_json::Value> = (0..dp)
                    .map(|r| {
                        serde_json::json!((0..tp)
                            .map(|g| serde_json::json!({"node": i % pp, "gpu": r * tp + g}))
                            .collect::<Vec<_>>())
                    })
                    .collect();
                serde_json::json!({"first_layer": bounds[i], "end_layer": bounds[i + 1], "replicas": replicas})
            })
            .collect();
        let plan = common::tmp(
            &format!(
                "mbridge-70b-{micro_batches}-{}-{}.json",
                recipe.len(),
                bounds[2]
            ),
            &serde_json::json!({"micro_batch": 1, "num_micro_batches": micro_batches, "stages": stages})
                .to_string(),
        );
        let mut args = vec![
            "eval",
            plan.to_str().unwrap(),
            "--model",
            "llama3-70b",
            "--seq",
            "8192",
            "--cluster",
            "8xndh100v5",
            "--engine",
            "megatron",
            "--precision",
            "fp8",
            "--schedule",
            "interleaved:5",
            "--sequence-parallel",
            "--optimizer-sharding",
            "zero1",
            "--overlap-allreduce",
            "--force",
            "--json",
        ];
        args.extend(recipe);
        let v = amp_json(&args);
        let peak = v["memory"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["peak_bytes"].as_f64().unwrap())
            .fold(0.0, f64::max);
        let round = |x: f64, d: i32| (x * 10f64.powi(d)).round() / 10f64.powi(d);
        (
            round(v["iteration_s"].as_f64().unwrap(), 4),
            round(peak / (1u64 << 30) as f64, 2),
            v["fits_in_memory"].as_bool().unwrap(),
        )
    };
    let price = |micro_batches: usize, recipe: &[&str]| price_split(&even, micro_batches, recipe);
    let recipe = ["--tp-comm-overlap", "--grad-reduce-in-bf16"];
    // 19.5226 s while the interleaved schedule's sends held their sender
    // (Megatron-LM's `overlap_p2p_comm` overlaps them), before 2026-12-07
    // late.
    assert_eq!(price_split(&pinned, 128, &recipe).0, 18.675);
    // As the recipe runs: 0.5-1.5% faster than measured at 128, 1.0%
    // slower to 1.6% faster at 256, and it fits, as the runs did (2.0-3.1%
    // and 2.2-4.9% slower, 10.4341 and 20.6569 s, while its sends held
    // their sender; 3.5-4.6% and 3.6-6.4% while Megatron's
    // sequence-parallel sends paid a receivers' all-gather, 10.5836 and
    // 20.9524 s). Its peak was 75.86 GiB while every rank was priced as
    // holding ceil((W + 1) / 5) whole micro-batches of its five chunks,
    // before 2026-12-08.
    assert_eq!(price(64, &recipe), (10.0738, 73.14, true));
    assert_eq!(price(128, &recipe), (19.8927, 73.14, true));
    // Without the two (amp before they were priced): 8.6-9.8% and
    // 8.5-11.4% slower (11.4695 and 22.7048 s while the sends held their
    // sender); called out of memory by 0.68 GiB (80.33 GiB) before
    // 2026-12-08, when the chunks held were counted as whole micro-batches.
    assert_eq!(price(64, &[]), (11.1091, 77.61, true));
    assert_eq!(price(128, &[]), (21.9406, 77.61, true));
}

/// `amp plan` of Llama-3-8B at sequence 2048 and a global batch of 16 on
/// `cluster`, with `extra` flags.
fn small_llama_plan<'a>(cluster: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let base = [
        "plan",
        "--model",
        "llama3-8b",
        "--seq",
        "2048",
        "--cluster",
        cluster,
        "--global-batch",
        "16",
    ];
    [&base[..], extra].concat()
}

#[test]
fn compile_is_refused_off_torchtitan_and_on_in_its_export() {
    let base = small_llama_plan("1x8xH100", &["--compile"]);
    for engine in [
        &[][..],
        &["--engine", "megatron"],
        &["--engine", "deepspeed"],
    ] {
        let out = common::amp(&[&base[..], engine].concat());
        assert_eq!(out.status.code(), Some(1));
        let e = common::stderr(&out);
        assert!(
            e.contains("torch.compile is priced as torchtitan runs it")
                && e.contains("target torchtitan"),
            "{e}"
        );
    }
    let dir = std::env::temp_dir().join(format!("amp-compile-export-{}", std::process::id()));
    let out = common::amp(
        &[
            &base[..],
            &["--emit", "torchtitan", "--out", dir.to_str().unwrap()],
        ]
        .concat(),
    );
    assert!(out.status.success(), "{}", common::stderr(&out));
    assert!(common::stdout(&out).contains("compiled"));
    let py = std::fs::read_to_string(dir.join("amp_torchtitan.py")).unwrap();
    assert!(py.contains("    config.compile.enable = True\n"), "{py}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_cluster_files_gpu_is_said_with_what_it_is() {
    let cluster = grand_teton(1, 835.0);
    let text = common::amp_text(&small_llama_plan(
        cluster.to_str().unwrap(),
        &["--engine", "torchtitan", "--top", "1"],
    ));
    let line = format!(
        "gpu H100-96GB-500W: {}: the catalog's H100-SXM with fp16_tflops = 835, bf16_tflops = 835, memory_gib = 96, memory_bandwidth_gbs = 2400\n",
        cluster.display()
    );
    assert!(text.contains(&line), "{text}");
    assert!(
        text.contains("compute times: H100-96GB-500W: tp 1, 2, 4, 8 from the analytic model"),
        "{text}"
    );
    // A catalog GPU gets no such line.
    let text = common::amp_text(&small_llama_plan("1x8xH100", &["--top", "1"]));
    assert!(!text.contains("\ngpu "), "{text}");
}

#[test]
fn a_cluster_file_gpu_that_cannot_stand_is_refused_with_its_fix() {
    let run = |gpus: &str, node_gpu: &str| {
        let cluster = common::tmp(
            &format!("def-{}.toml", gpus.len() + node_gpu.len()),
            &format!(
                "{gpus}[[nodes]]\ngpu = \"{node_gpu}\"\ngpus = 8\nintra_gbps = 3600\ninter_gbps = 400\n"
            ),
        );
        let out = common::amp(&[
            "plan",
            "--model",
            "llama3-8b",
            "--seq",
            "1024",
            "--cluster",
            cluster.to_str().unwrap(),
            "--global-batch",
            "16",
        ]);
        assert_eq!(out.status.code(), Some(1));
        common::stderr(&out)
    };
    let e = run(
        "[[gpus]]\nname = \"H100-500W\"\nlike = \"H100-SXN\"\n",
        "H100-500W",
    );
    assert!(
        e.contains("gpus[0] `H100-500W`: like: unknown GPU `H100-SXN`; did you mean `H100-SXM`"),
        "{e}"
    );
    let e = run("[[gpus]]\nname = \"H100\"\nlike = \"H200\"\n", "H100");
    assert!(
        e.contains("the catalog's `H100-SXM`") && e.contains("a name of its own"),
        "{e}"
    );
    // A node naming a GPU neither the catalog nor the file defines: the
    // nearest names include the file's.
    let e = run(
        "[[gpus]]\nname = \"H100-500W\"\nlike = \"H100-SXM\"\n",
        "H100-50W",
    );
    assert!(
        e.contains("unknown GPU `H100-50W`; did you mean `H100-500W`"),
        "{e}"
    );
}

#[test]
fn torchtitan_plans_of_a_tied_model_have_no_pipeline() {
    // Qwen3-0.6B ties its output to its embedding, which torchtitan builds
    // only without a pipeline: every plan printed runs there, and the
    // output says why the pipelined candidates were skipped.
    let plan_on = |engine: &str| {
        amp_json(&[
            "plan",
            "--model",
            "qwen3-0.6b",
            "--cluster",
            "1x8xH100",
            "--global-batch",
            "8",
            "--engine",
            engine,
            "--json",
            "--top",
            "100",
        ])
    };
    let v = plan_on("torchtitan");
    let plans = v["plans"].as_array().unwrap();
    assert!(!plans.is_empty());
    assert!(plans.iter().all(|p| p["pp"] == 1), "{plans:?}");
    let skipped = v["skipped"].to_string();
    assert!(
        skipped.contains("torchtitan refuses weight tying with pipeline parallelism"),
        "{skipped}"
    );
    // Under Megatron-LM, which all-reduces the tied gradient, pipelines stay.
    let v = plan_on("megatron");
    assert!(v["plans"].as_array().unwrap().iter().any(|p| p["pp"] != 1));
}

#[test]
fn a_best_plan_with_a_tp_per_stage_is_named_unlaunchable() {
    // --per-type-tp may rank first a plan whose stages run at different tp
    // degrees; Megatron-LM, DeepSpeed and torchtitan each build the model at
    // one, and the output says so under the table.
    let args = |engine: &[&'static str]| {
        let mut a = vec![
            "plan",
            "--model",
            "llama3-8b",
            "--cluster",
            "2x8xH100+2x8xA100-80GB",
            "--global-batch",
            "32",
            "--per-type-tp",
            "--top",
        ];
        a.push(if engine.is_empty() { "1" } else { "5" });
        a.extend_from_slice(engine);
        a
    };
    let text = amp_text(&args(&[]));
    let table_tp = text
        .lines()
        .find(|l| l.starts_with("│ 1 "))
        .and_then(|l| l.split_whitespace().nth(2))
        .unwrap()
        .to_string();
    assert!(table_tp.contains('/'), "{text}");
    assert!(
        text.contains(&format!(
            "best plan: its stages run at different tp degrees ({table_tp}); Megatron-LM, DeepSpeed and torchtitan cannot run it"
        )),
        "{text}"
    );
    // Planned for an engine, such plans are not ranked: every plan shown is
    // one Megatron-LM runs, and the fastest dropped is named.
    let v = amp_json(&args(&["--engine", "megatron", "--json"]));
    let plans = v["plans"].as_array().unwrap();
    assert_eq!(plans.len(), 5, "{v}");
    for p in plans {
        let tp = p["tp"].as_u64().unwrap();
        for s in p["stages"].as_array().unwrap() {
            for r in s["replicas"].as_array().unwrap() {
                assert_eq!(r.as_array().unwrap().len() as u64, tp, "{p}");
            }
        }
    }
    let skipped: Vec<&str> = v["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    let dropped = skipped
        .iter()
        .find(|s| {
            s.starts_with("plans megatron cannot run are not ranked; the fastest of them, tp ")
        })
        .unwrap_or_else(|| panic!("{skipped:?}"));
    assert!(
        dropped.contains("its stages run at different tp degrees (2/2/4)"),
        "{dropped}"
    );
    assert!(
        dropped.ends_with("drop --engine (and --emit) to rank them"),
        "{dropped}"
    );
    // Faster than every plan shown, or it would not be worth naming.
    let fastest_dropped: f64 = dropped
        .split(" s: ")
        .next()
        .and_then(|h| h.rsplit(", ").next())
        .unwrap()
        .parse()
        .unwrap();
    assert!(fastest_dropped < plans[0]["predicted_iteration_s"].as_f64().unwrap());
}

#[test]
fn uneven_replicas_are_not_ranked_for_an_engine() {
    // 32 samples over 3 replicas: 10-11 micro-batches each, which no engine
    // runs; planned for Megatron-LM every plan shown gives its replicas
    // the same share.
    let v = amp_json(&[
        "plan",
        "--model",
        "gpt3-1.7b",
        "--seq",
        "1024",
        "--cluster",
        "3x4xA100-80GB",
        "--global-batch",
        "32",
        "--uneven-dp",
        "--engine",
        "megatron",
        "--top",
        "10",
        "--json",
    ]);
    let plans = v["plans"].as_array().unwrap();
    assert_eq!(plans.len(), 10, "{v}");
    for p in plans {
        assert_eq!(32 % p["dp"].as_u64().unwrap(), 0, "{p}");
        assert!(p.get("replica_micro_batches").is_none(), "{p}");
    }
    let skipped = v["skipped"].to_string();
    assert!(
        skipped.contains("plans megatron cannot run are not ranked; the fastest of them, ")
            && skipped.contains("its replicas run 10-11 micro-batches (32 in all"),
        "{skipped}"
    );
}

/// Planned for an engine, every plan ranked is one its export launches:
/// the search tries only the placements the engine's rank order lays out
/// (without an engine it tries them all, and some rank high).
#[test]
fn plans_for_an_engine_are_plans_it_launches() {
    let base = [
        "plan",
        "--model",
        "gpt2-medium",
        "--cluster",
        "4xg4dn.12xlarge",
        "--global-batch",
        "32",
        "--top",
        "20",
        "--json",
        "-q",
    ];
    let count_tp_not_innermost = |v: &serde_json::Value| {
        v["plans"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| tp_not_innermost(p))
            .count()
    };
    // Without an engine, tp groups across nodes rank among the first 20.
    assert!(count_tp_not_innermost(&amp_json(&base)) > 0);
    for engine in ["megatron", "deepspeed"] {
        let v = amp_json(&[&base[..], &["--engine", engine]].concat());
        let plans = v["plans"].as_array().unwrap();
        assert_eq!(plans.len(), 20);
        assert_eq!(count_tp_not_innermost(&v), 0);
        let file = tmp(&format!("launchable-{engine}.json"), &v.to_string());
        for rank in 1..=plans.len() {
            let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
                "amp-launchable-{}-{engine}-{rank}",
                std::process::id()
            ));
            let o = amp(&[
                "export",
                file.to_str().unwrap(),
                "--rank",
                &rank.to_string(),
                "--model",
                "gpt2-medium",
                "--cluster",
                "4xg4dn.12xlarge",
                "--to",
                engine,
                "--out",
                dir.to_str().unwrap(),
            ]);
            assert!(o.status.success(), "{engine} rank {rank}: {}", stderr(&o));
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    // An export refusal the search does not see (torchtitan builds no GPT-2)
    // is named under the table.
    let text = amp_text(&[&base[..7], &["--engine", "torchtitan"]].concat());
    assert!(
        text.contains("best plan: amp export --to torchtitan refuses it: model `gpt2-medium`"),
        "{text}"
    );
    // In JSON too, and only where the export refuses.
    let refusal = |engine: &str| {
        amp_json(&[&base[..], &["--engine", engine]].concat())
            .get("export_refusal")
            .cloned()
    };
    let titan = refusal("torchtitan").expect("torchtitan's refusal");
    assert!(
        titan
            .as_str()
            .unwrap()
            .starts_with("amp export --to torchtitan refuses it: model `gpt2-medium`"),
        "{titan}"
    );
    assert_eq!(refusal("megatron"), None);
}

/// Without `--precision`, a cluster with a GPU that has no bf16 tensor
/// cores (Volta, Turing) plans in fp16, and in fp32 under torchtitan,
/// which trains in bf16 or fp32; a cluster whose GPUs all have bf16 plans
/// in bf16. Before 2026-12-06 such GPUs were planned in bf16 at their fp16
/// rate, which they do not reach in bf16.
#[test]
fn gpus_without_bf16_plan_in_a_precision_they_have() {
    // `amp plan --json` of gpt2-medium on `cluster`: the plans and stderr.
    let plan = |cluster: &str, extra: &[&str]| {
        let mut args = vec![
            "plan",
            "--model",
            "gpt2-medium",
            "--cluster",
            cluster,
            "--global-batch",
            "32",
            "--json",
            "-q",
        ];
        args.extend(extra);
        amp_json_and_stderr(&args)
    };
    let precision = |cluster: &str, extra: &[&str]| {
        plan(cluster, extra).0["setup"]["formats"]["compute"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (v100, said) = plan("4xp3.8xlarge", &[]);
    assert_eq!(v100["setup"]["formats"]["compute"], "fp16");
    assert!(
        said.contains("note: planning in fp16: V100-16GB has no bf16 tensor cores"),
        "{said}"
    );
    // README, "The analytic model prices the attention": fp16 and the
    // memory-efficient kernel on V100s; 0.6633 s in bf16 with explicit
    // attention's compute before 2026-12-06; 0.5009 s at dp 2 x pp 8 with
    // each node's four stages reducing through its NIC as if alone, before
    // 2026-12-07 late.
    let t = v100["plans"][0]["predicted_iteration_s"].as_f64().unwrap();
    assert!((t - 0.5284).abs() < 5e-5, "{t}");
    // The README's note, under --precision.
    let (mixed, said) = plan("1x8xA100@100Gbps+1x4xT4@50Gbps", &[]);
    assert_eq!(mixed["setup"]["formats"]["compute"], "fp16");
    assert!(
        said.contains(
            "note: planning in fp16: T4 has no bf16 tensor cores (--precision to choose)"
        ),
        "{said}"
    );
    assert_eq!(precision("1x8xA100", &[]), "bf16");
    assert_eq!(precision("1x8xV100", &["--engine", "megatron"]), "fp16");
    assert_eq!(
        precision(
            "1x8xV100",
            &["--engine", "torchtitan", "--recompute", "full"]
        ),
        "fp32"
    );
    assert_eq!(
        precision(
            "1x8xA100",
            &["--engine", "torchtitan", "--recompute", "full"]
        ),
        "bf16"
    );
}

/// Megatron-LM and DeepSpeed run unfused attention where FlashAttention
/// cannot run (before Ampere): a zoo model planned for them on V100s is
/// priced with its scores materialised, and says so; `--attention`, an
/// engine-less plan and DeepSpeed running Hugging Face's own blocks
/// (PyTorch's SDPA, fused by its memory-efficient kernel; since 2026-12-08)
/// keep the fused attention.
#[test]
fn megatron_before_ampere_runs_unfused_attention() {
    let plan = |cluster: &str, extra: &[&str]| {
        let mut args = vec![
            "plan",
            "--model",
            "llama3.2-1b",
            "--seq",
            "1024",
            "--cluster",
            cluster,
            "--global-batch",
            "16",
            "--recompute",
            "full",
            "--json",
            "-q",
        ];
        args.extend(extra);
        let (v, said) = amp_json_and_stderr(&args);
        let attention = v["plans"][0]["made_for"]["attention"]
            .as_str()
            .unwrap()
            .to_string();
        (attention, said.contains("runs its unfused attention"))
    };
    for engine in ["megatron", "deepspeed"] {
        let (attention, warned) = plan("1x8xV100", &["--engine", engine]);
        assert_eq!((attention.as_str(), warned), ("explicit", true), "{engine}");
    }
    let fused = ("fused".to_string(), false);
    assert_eq!(plan("1x8xA100", &["--engine", "megatron"]), fused);
    assert_eq!(
        plan(
            "1x8xV100",
            &["--engine", "megatron", "--attention", "fused"]
        ),
        fused
    );
    assert_eq!(plan("1x8xV100", &[]), fused);
    assert_eq!(
        plan(
            "1x8xV100",
            &["--engine", "deepspeed", "--block-kernels", "eager"]
        ),
        fused
    );
}

/// Under `--engine deepspeed --search-setup sharding` a one-stage plan under
/// ZeRO-2 or ZeRO-3 may rank first: DeepSpeed runs it on its own engine, and
/// the export writes it so (a plain module, the config's stage) rather than
/// refusing it as the pipeline engine would. Before 2026-12-06 such a plan
/// ranked first and its export refused it.
#[test]
fn deepspeeds_one_stage_zero_plans_export() {
    let args = [
        "plan",
        "--model",
        "gpt2-medium",
        "--cluster",
        "2x8xH100@400Gbps",
        "--global-batch",
        "64",
        "--seq",
        "1024",
        "--engine",
        "deepspeed",
        "--search-setup",
        "sharding",
        "--top",
        "3",
        "--json",
        "-q",
    ];
    let v = amp_json(&args);
    assert_eq!(v.get("export_refusal"), None, "{}", v["export_refusal"]);
    let best = &v["plans"][0];
    let zero = best["setup"]["optimizer_sharding"].as_str().unwrap();
    assert!(
        best["pp"] == 1 && (zero == "zero2" || zero == "zero3"),
        "{} {zero}",
        best["pp"]
    );
    let file = tmp("deepspeed-zero.json", &v.to_string());
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("amp-ds-zero-{}", std::process::id()));
    let o = amp(&[
        "export",
        file.to_str().unwrap(),
        "--model",
        "gpt2-medium",
        "--cluster",
        "2x8xH100@400Gbps",
        "--to",
        "deepspeed",
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("ds_config.json")).unwrap())
            .unwrap();
    assert_eq!(
        cfg["zero_optimization"]["stage"],
        if zero == "zero2" { 2 } else { 3 }
    );
    assert!(dir.join("amp_plan.py").exists() && !dir.join("amp_pipeline.py").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn fp8_plans_for_megatron_are_faster_and_launch() {
    // FP8 is Megatron-LM's (Transformer Engine): its plans price the blocks'
    // linear layers at the FP8 rate and are written with Megatron-LM's own
    // FP8 recipe.
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("amp-fp8-{}", std::process::id()));
    let plan = |precision: &str, emit: bool| {
        let mut args = vec![
            "plan",
            "--model",
            "llama3-8b",
            "--cluster",
            "1x8xH100",
            "--global-batch",
            "64",
            "--seq",
            "4096",
            "--engine",
            "megatron",
            "--precision",
            precision,
            "--top",
            "1",
            "--json",
            "-q",
        ];
        if emit {
            args.extend(["--emit", "megatron", "--out", dir.to_str().unwrap()]);
        }
        amp_json(&args)
    };
    let (bf16, fp8) = (plan("bf16", false), plan("fp8", true));
    let time = |v: &serde_json::Value| v["plans"][0]["predicted_iteration_s"].as_f64().unwrap();
    // Faster, but not by FP8's whole factor of 2 over bf16: attention, the
    // embedding and the vocabulary projection stay in bf16.
    let speedup = time(&bf16) / time(&fp8);
    assert!((1.2..1.8).contains(&speedup), "{speedup}");
    // The README's figures ("FP8 under Megatron-LM"): the same shape, its
    // first stage with Transformer Engine's FP8 weight copies.
    assert_eq!(
        (format!("{:.4}", time(&bf16)), format!("{:.4}", time(&fp8))),
        ("3.0833".to_string(), "2.1433".to_string())
    );
    let first = |v: &serde_json::Value, what: &str| {
        let b = &v["plans"][0];
        assert_eq!(
            (&b["tp"], &b["dp"], &b["pp"], &b["micro_batch"]),
            (&1.into(), &2.into(), &4.into(), &1.into())
        );
        format!("{:.2}", b["memory"][0][what].as_f64().unwrap() / 1e9)
    };
    assert_eq!(
        (first(&bf16, "weights_bytes"), first(&fp8, "weights_bytes")),
        ("4.54".to_string(), "8.90".to_string())
    );
    assert_eq!(
        (
            first(&bf16, "activations_bytes"),
            first(&fp8, "activations_bytes")
        ),
        ("18.25".to_string(), "17.82".to_string())
    );
    assert_eq!(fp8["plans"][0]["setup"]["formats"]["compute"], "fp8");
    assert_eq!(fp8.get("export_refusal"), None, "{}", fp8["export_refusal"]);
    let args = std::fs::read_to_string(dir.join("args.sh")).unwrap();
    assert!(
        args.contains("--bf16\n") && args.contains("--fp8-format hybrid\n"),
        "{args}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Under FP8 with sequence parallelism the blocks' all-gathers carry FP8
/// (Transformer Engine quantises before gathering): the README's figure
/// ("FP8 under Megatron-LM"), 4.4720 s while they were priced in bf16.
#[test]
fn fp8_sequence_parallel_plans_as_the_readme_says() {
    let v = amp_json(&[
        "plan",
        "--model",
        "qwen3-32b",
        "--cluster",
        "2x8xH100",
        "--global-batch",
        "64",
        "--seq",
        "4096",
        "--engine",
        "megatron",
        "--precision",
        "fp8",
        "--sequence-parallel",
        "--optimizer-sharding",
        "zero1",
        "--top",
        "1",
        "--json",
        "-q",
    ]);
    let b = &v["plans"][0];
    assert_eq!(
        (&b["tp"], &b["dp"], &b["pp"], &b["micro_batch"]),
        (&2.into(), &2.into(), &4.into(), &1.into())
    );
    let t = b["predicted_iteration_s"].as_f64().unwrap();
    // 4.4143 s until Megatron Core's sends were priced (2026-12-07), 4.4106
    // s until its distributed optimizer's collectives took their formats.
    assert_eq!(format!("{t:.4}"), "4.4021");
}

#[test]
fn fp8_plans_are_only_those_transformer_engine_can_tile() {
    // GPT-2 at 1021 tokens: Transformer Engine's FP8 products need a
    // multiple of 8 tokens on a rank, so only micro-batches of 8 run.
    let args = |batch: &'static str| {
        [
            "plan",
            "--model",
            "gpt2",
            "--seq",
            "1021",
            "--cluster",
            "1x8xH100",
            "--global-batch",
            batch,
            "--precision",
            "fp8",
            "--engine",
            "megatron",
            "--json",
            "-q",
        ]
    };
    let v = amp_json(&args("8"));
    let plans = v["plans"].as_array().unwrap();
    assert!(!plans.is_empty());
    assert!(plans.iter().all(|p| p["micro_batch"] == 8), "{v}");
    assert_eq!(v.get("export_refusal"), None, "{}", v["export_refusal"]);
    // In bf16 the same job ranks other micro-batches first.
    let mut bf16 = args("8").to_vec();
    bf16[10] = "bf16";
    let v = amp_json(&bf16);
    assert!(v["plans"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["micro_batch"] != 8));
    // One sample a step: nothing Transformer Engine can tile.
    let o = amp(&args("1"));
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.starts_with("error: ")
            && e.contains("no tp and micro-batch that megatron can run")
            && e.contains("1021 tokens per micro-batch on a rank (micro-batch 1 x sequence 1021) are not a multiple of 8"),
        "{e}"
    );
}

/// DeepSpeed's bf16 plans as its engine runs amp's export: without ZeRO
/// the `BF16_Optimizer` partitions the optimizer state over the replicas,
/// and the gradients stay bf16 with ZeRO-1 or without (README, "DeepSpeed's
/// optimizers, as its engine runs amp's export", and "DeepSpeed's pipeline
/// engine, stage by stage").
#[test]
fn deepspeed_bf16_plans_as_the_readme_says() {
    let rest = ["--engine", "deepspeed", "--top", "1", "--json", "-q"];
    let base = [&LLAMA3_8B_ON_2X8_H100[..], &rest].concat();
    let best = |extra: &[&str]| {
        let v = amp_json(&[&base[..], extra].concat());
        let p = v["plans"][0].clone();
        (
            (p["tp"].clone(), p["dp"].clone(), p["pp"].clone()),
            format!("{:.4}", p["predicted_iteration_s"].as_f64().unwrap()),
            p["setup"]["formats"]["gradients"].clone(),
        )
    };
    assert_eq!(
        best(&[]),
        (
            (1.into(), 16.into(), 1.into()),
            "5.5078".into(),
            "bf16".into()
        )
    );
    assert_eq!(
        best(&["--optimizer-sharding", "zero1"]),
        (
            (1.into(), 16.into(), 1.into()),
            "5.5078".into(),
            "bf16".into()
        )
    );
    // Hugging Face's eager blocks ("Hugging Face's blocks under
    // DeepSpeed"): the one-stage dp-16 plan no longer fits; over the
    // shardings ZeRO-3 at micro-batch 2 either way.
    assert_eq!(
        best(&["--block-kernels", "eager"]),
        (
            (1.into(), 8.into(), 2.into()),
            "6.3332".into(),
            "bf16".into()
        )
    );
    let all = |kernels: &str| {
        let v = amp_json(
            &[
                &base[..],
                &["--search-setup", "all", "--block-kernels", kernels],
            ]
            .concat(),
        );
        let p = &v["plans"][0];
        (
            format!("{:.4}", p["predicted_iteration_s"].as_f64().unwrap()),
            p["micro_batch"].as_u64().unwrap(),
            p["setup"]["optimizer_sharding"].clone(),
        )
    };
    assert_eq!(all("fused"), ("5.4691".into(), 2, "zero3".into()));
    assert_eq!(all("eager"), ("6.0492".into(), 2, "zero3".into()));
    // The fused blocks' dp-16 plan priced with eager ones: its peak and
    // its compute.
    let v = amp_json(&base);
    let mut plan = v["plans"][0].clone();
    let priced = |plan: &serde_json::Value, name: &str| {
        let path = tmp(name, &plan.to_string());
        let e = amp_json(&[
            "eval",
            path.to_str().unwrap(),
            "--model",
            "llama3-8b",
            "--seq",
            "4096",
            "--cluster",
            "2x8xH100",
            "--force",
            "--json",
        ]);
        (
            format!(
                "{:.2}",
                e["memory"][0]["peak_bytes"].as_f64().unwrap() / 1e9
            ),
            format!("{:.2}", e["breakdown"]["compute_s"].as_f64().unwrap()),
        )
    };
    assert_eq!(
        priced(&plan, "ds-fused-dp16.json"),
        ("84.38".into(), "5.39".into())
    );
    plan["setup"]["block_kernels"] = "eager".into();
    assert_eq!(
        priced(&plan, "ds-eager-dp16.json"),
        ("92.50".into(), "5.97".into())
    );
}

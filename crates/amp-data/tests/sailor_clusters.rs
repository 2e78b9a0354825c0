//! Sailor-layout plans on clusters other than the measured GH200 one, made
//! up here (synthetic `plan_config` files, invented values) and loaded with
//! the reference data's real profiles, model sizes and network curves:
//! 8-GPU nodes, GPT-Neo-2.7B, GPU types mixed across stages and replicas,
//! nodes in other zones. Each checks the cluster and plan the loader builds
//! and that the cost model prices them (finite, plausible) or refuses with
//! a clear error. Skipped when the reference data is absent.

use std::collections::BTreeMap;
use std::path::PathBuf;

use amp_core::cluster::{Device, NodeLink};
use amp_core::{Cluster, Model, Profile};
use amp_data::sailor::{self, GpuSpec, Network, SailorRun};

struct Data {
    llm: String,
    profiles: String,
    gpus: BTreeMap<String, GpuSpec>,
    network: Network,
    dir: PathBuf,
}

fn data() -> Option<Data> {
    let dir = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/data/sailor"
    ));
    if !dir.is_dir() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{} is absent but CI is set",
            dir.display()
        );
        println!("skipping: {} is absent", dir.display());
        return None;
    }
    let read = |rel: &str| std::fs::read_to_string(dir.join(rel)).unwrap();
    Some(Data {
        llm: read("llm_info.json"),
        profiles: read("profiles.json"),
        gpus: sailor::parse_cluster_config(&read("cluster_config.json"), "cluster_config.json")
            .unwrap(),
        network: Network::parse(
            &read("network/intra_node_bandwidths.json"),
            "intra",
            &read("network/inter_node_bandwidths.json"),
            "inter",
        )
        .unwrap(),
        dir,
    })
}

impl Data {
    /// Model and profile (with the runs' precision) of `training/<file>`.
    fn model(&self, training_file: &str) -> (Model, Profile) {
        let t = sailor::parse_training(
            &std::fs::read_to_string(self.dir.join("training").join(training_file)).unwrap(),
            training_file,
        )
        .unwrap();
        sailor::model_and_profile(
            &self.llm,
            "llm_info.json",
            &self.profiles,
            "profiles.json",
            &t,
        )
        .unwrap()
    }

    fn load(&self, text: &str, model: &Model) -> SailorRun {
        sailor::parse_plan_config(text, "plan.json", model, &self.gpus, &self.network)
            .unwrap_or_else(|e| panic!("{e}\n{text}"))
    }
}

/// A replica's tensor-parallel group on one node: ([[gpu, gpus per node,
/// zone]], tp).
fn group(gpu: &str, per_node: usize, zone: &str, tp: usize) -> String {
    format!(r#"[[["{gpu}", {per_node}, "{zone}"]], {tp}]"#)
}

/// A one-pipeline plan file: per stage its layers and its replicas' groups.
fn plan_file(stages: &[(std::ops::Range<usize>, Vec<String>)], mbs: usize, gbs: usize) -> String {
    let layers: Vec<String> = stages
        .iter()
        .map(|(r, _)| format!("{:?}", r.clone().collect::<Vec<_>>()))
        .collect();
    let tmp: Vec<String> = stages
        .iter()
        .map(|(_, g)| format!("[{}]", g.join(", ")))
        .collect();
    let dp: Vec<String> = stages.iter().map(|(_, g)| g.len().to_string()).collect();
    format!(
        r#"{{"zone": "us-central1-a", "pipeline_list": [{{"num_stages": {}, "layers_per_stage": [{}], "tmp_per_stage": [{}], "dp": [{}]}}], "mbs": {mbs}, "gbs": {gbs}, "real": 12.5, "max_mem": 9000000000}}"#,
        stages.len(),
        layers.join(", "),
        tmp.join(", "),
        dp.join(", ")
    )
}

fn price(model: &Model, cluster: &Cluster, profile: &Profile, run: &SailorRun) -> f64 {
    let mut plan = run.plan.clone();
    plan.setup = amp_data::sailor::training_setup(profile.precision);
    let est = amp_core::evaluate(model, cluster, profile, &plan).unwrap();
    assert!(
        est.iteration_s.is_finite() && est.iteration_s > 0.0,
        "{est:?}"
    );
    assert_eq!(est.memory.len(), run.plan.devices().count());
    for m in &est.memory {
        assert!(m.peak_bytes.is_finite() && m.peak_bytes > 0.0, "{m:?}");
    }
    println!(
        "{}: {:.3} s {:?}",
        cluster.name, est.iteration_s, est.breakdown
    );
    est.iteration_s
}

#[test]
fn opt350_on_two_nodes_of_eight_rtx3090() {
    let Some(d) = data() else { return };
    let (model, profile) = d.model("opt-350m.json");
    // Two stages of 13 layers, each four replicas of tp 2 on one 8-GPU node.
    let g = group("RTX-3090", 8, "us-central1-a", 2);
    let text = plan_file(
        &[(0..13, vec![g.clone(); 4]), (13..26, vec![g.clone(); 4])],
        2,
        64,
    );
    let run = d.load(&text, &model);
    let c = &run.cluster;
    assert_eq!(c.nodes.len(), 2);
    for n in &c.nodes {
        assert_eq!((n.gpu_type.as_str(), n.gpus), ("RTX-3090", 8));
        assert_eq!(n.gpu_memory_bytes, Some(25769803776));
        // One NIC for the eight GPUs: the curves do not grow with the GPUs
        // per node (about 0.1 GB/s at 64 MB whatever the count).
        assert_eq!(n.nics, 1);
        assert!(
            n.inter_bytes_per_s > 5e7 && n.inter_bytes_per_s < 2e8,
            "{n:?}"
        );
        assert!(n.intra_bytes_per_s > n.inter_bytes_per_s);
    }
    assert!(c.links.is_empty());
    assert_eq!(run.plan.num_micro_batches, 8);
    assert_eq!(
        run.plan.stages[1].replicas[3],
        vec![Device { node: 1, gpu: 6 }, Device { node: 1, gpu: 7 }]
    );
    let t = price(&model, c, &profile, &run);
    // The 1 Gbit/s network dominates: per micro-batch and direction each
    // of the 8 ranks sends its half of 2 x 2048 x 1024 fp32 values (8 of
    // 16 MiB, DeepSpeed's partitioned sends) through the one NIC, about
    // 0.06 GB/s achieved: over 1 s a cut, 8 micro-batches.
    assert!(t > 10.0 && t < 100.0, "{t}");
}

#[test]
fn gpt_neo_mixed_a100_v100_across_zones() {
    let Some(d) = data() else { return };
    let (model, profile) = d.model("gpt-neo-2.7b.json");
    assert_eq!(model.num_layers(), 34);
    let a100 = group("A100-40", 4, "us-central1-a", 4);
    let v100 = group("V100-16", 4, "us-west1-b", 4);
    // Stage 0 on A100 nodes in us-central1-a; stage 1's first replica on
    // A100 as well, its second on V100 nodes in us-west1-b.
    let text = plan_file(
        &[
            (0..16, vec![a100.clone(), a100.clone()]),
            (16..34, vec![a100.clone(), v100.clone()]),
        ],
        1,
        16,
    );
    let run = d.load(&text, &model);
    let c = &run.cluster;
    let kinds: Vec<(&str, usize)> = c
        .nodes
        .iter()
        .map(|n| (n.gpu_type.as_str(), n.nics))
        .collect();
    // The curves for 4 GPUs per node are 3.2x (A100) and 4.0x (V100) those
    // for 1: four NICs.
    assert_eq!(
        kinds,
        vec![
            ("A100-40", 4),
            ("A100-40", 4),
            ("A100-40", 4),
            ("V100-16", 4)
        ]
    );
    assert_eq!(c.nodes[3].gpu_memory_bytes, Some(17179869184));
    // Only the V100 node is in another zone and of another type: one link
    // to each A100 node, from the pair's curve (about 1 GB/s across
    // regions, well under the nodes' own 5-6 GB/s).
    assert_eq!(c.links.len(), 3);
    for (i, l) in c.links.iter().enumerate() {
        assert_eq!(l.nodes, [i, 3]);
        assert!(l.bytes_per_s > 5e8 && l.bytes_per_s < 1.5e9, "{l:?}");
        assert!(l.bytes_per_s < 0.5 * c.nodes[3].inter_bytes_per_s);
    }
    assert_eq!(run.plan.num_micro_batches, 8);
    let d3 = |gpu| Device { node: 3, gpu };
    assert_eq!(
        run.plan.stages[1].replicas[1],
        (0..4).map(d3).collect::<Vec<_>>()
    );
    let t = price(&model, c, &profile, &run);
    assert!(t > 1.0 && t < 1000.0, "{t}");
    // The slow inter-region link costs time: the same plan with the nodes'
    // own figures between them is faster.
    let mut near = c.clone();
    near.links.clear();
    let t_near = price(&model, &near, &profile, &run);
    assert!(t_near < t, "{t_near} vs {t}");
    // And a faster link between the zones helps.
    let mut fast = c.clone();
    fast.links = (0..3)
        .map(|i| NodeLink {
            nodes: [i, 3],
            bytes_per_s: 1e11,
        })
        .collect();
    assert!(price(&model, &fast, &profile, &run) <= t_near);
}

#[test]
fn gh200_in_another_zone_and_missing_profiles() {
    let Some(d) = data() else { return };
    let (model, profile) = d.model("gpt-neo-2.7b.json");
    // GH-96 nodes in a zone whose curves the data lacks fall back to the
    // zone that has them; one NIC per GPU (the 4-GPU curve is 4.0x the
    // 1-GPU one).
    let g = group("GH-96", 4, "us-central1-f", 4);
    let text = plan_file(
        &[(0..17, vec![g.clone()]), (17..34, vec![g.clone()])],
        2,
        32,
    );
    let run = d.load(&text, &model);
    assert_eq!(run.cluster.nodes.len(), 2);
    assert!(run.cluster.nodes.iter().all(|n| n.nics == 4));
    let gh = d.network.inter_curve("us-central1-a", "GH-96", 4).unwrap();
    assert_eq!(
        run.cluster.nodes[0].inter_bytes_per_s,
        gh.bytes_per_s(sailor::REFERENCE_MESSAGE_BYTES)
    );
    let t = price(&model, &run.cluster, &profile, &run);
    assert!(t > 0.1 && t < 100.0, "{t}");
    // GPT-Neo was not profiled on RTX-3090: the plan loads, pricing it is a
    // clear error naming the GPU type.
    let g = group("RTX-3090", 8, "us-central1-a", 4);
    let text = plan_file(
        &[(0..17, vec![g.clone(); 2]), (17..34, vec![g.clone(); 2])],
        1,
        8,
    );
    let mut run = d.load(&text, &model);
    run.plan.setup = amp_data::sailor::training_setup(profile.precision);
    assert_eq!(run.cluster.nodes.len(), 2);
    let e = amp_core::evaluate(&model, &run.cluster, &profile, &run.plan)
        .unwrap_err()
        .to_string();
    assert!(e.contains("RTX-3090"), "{e}");
    // Its 20 heads (llm_info.json's blocks say so, where the training file
    // says 32) split over tp 1, 2 and 4, never 8.
    let g = group("RTX-3090", 8, "us-central1-a", 8);
    let text = plan_file(&[(0..17, vec![g.clone()]), (17..34, vec![g])], 1, 8);
    let e = sailor::parse_plan_config(&text, "plan.json", &model, &d.gpus, &d.network)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("20 attention heads, which tp 8 does not divide"),
        "{e}"
    );
}

/// Every measured Sailor plan, read by amp and written back: the same file
/// byte for byte, less the measured-only lines (`real`, `red_grads`,
/// `max_mem`), so key for key the same plan fields.
#[test]
fn measured_plans_written_back_are_the_original_files() {
    let Some(d) = data() else { return };
    let (model, _) = d.model("opt-350m.json");
    let mut files = Vec::new();
    let mut dirs = vec![d.dir.join("measured/clariden/OPT-350")];
    while let Some(dir) = dirs.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "json") {
                files.push(p);
            }
        }
    }
    files.sort();
    assert!(files.len() >= 15, "{files:?}");
    for f in files {
        let original = std::fs::read_to_string(&f).unwrap();
        let run = d.load(&original, &model);
        assert!(run.warnings.is_empty(), "{:?}", run.warnings);
        let written =
            sailor::write_plan_config(&run.plan, &model, &run.cluster, sailor::DEFAULT_ZONE)
                .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let measured = ["  \"real\":", "  \"red_grads\":", "  \"max_mem\":"];
        let expected: Vec<&str> = original
            .split('\n')
            .filter(|l| !measured.iter().any(|m| l.starts_with(m)))
            .collect();
        assert_eq!(written, expected.join("\n"), "{}", f.display());
        let mut want: serde_json::Value = serde_json::from_str(&original).unwrap();
        for k in ["real", "red_grads", "max_mem"] {
            want.as_object_mut().unwrap().remove(k);
        }
        let got: serde_json::Value = serde_json::from_str(&written).unwrap();
        assert_eq!(got, want, "{}", f.display());
        assert_eq!(
            sailor::plan_config_file_name(&run.plan),
            f.file_name()
                .unwrap()
                .to_string_lossy()
                .split("_M")
                .next()
                .unwrap()
                .trim_end_matches(".json")
                .to_string()
                + ".json",
            "{}",
            f.display()
        );
    }
}

/// Sailor's own plan for OPT-350M on 32 A100-40 + 96 V100-16 (stage 1 on
/// 24 V100 groups at tp 4 beside 3 A100 at tp 1, stage 2 on 27 A100, 13
/// layers each, dp 27 at micro-batch 2, two A100s idle) is among the
/// per-type search's plans with fewer replicas (`--subsets`), at the time
/// `amp eval` gives Sailor's file (`tests/sailor.rs` in amp-cli, the
/// README's 6.850 s), and not without them.
#[test]
fn fewer_replicas_find_sailors_32_96_plan() {
    use amp_core::cost::device::DeviceModel;
    use amp_core::cost::Inputs;
    use amp_core::search::{PlacementSearch, SearchOptions};
    use amp_core::type_tp_search::search_per_type_tp;

    let Some(d) = data() else { return };
    let (model, profile) = d.model("opt-350m.json");
    let kinds = [
        ("A100-40".to_string(), 8, 4),
        ("V100-16".to_string(), 24, 4),
    ];
    let cluster =
        sailor::node_kinds_cluster(&kinds, &d.gpus, &d.network, sailor::DEFAULT_ZONE).unwrap();
    let inputs = Inputs {
        model: &model,
        cluster: &cluster,
        profile: &profile,
    };
    let setup = sailor::training_setup(profile.precision);
    let sailors = |fewer: bool| -> Vec<f64> {
        let opts = SearchOptions {
            uneven_dp: true,
            fewer_replicas: fewer,
            ..SearchOptions::new(1024, PlacementSearch::Full, setup)
        };
        let r = search_per_type_tp(&inputs, &DeviceModel::default(), &opts).unwrap();
        r.plans
            .iter()
            .filter(|p| {
                let s = &p.plan.stages;
                let on = |st: &amp_core::Stage, gpu: &str, tp: usize| {
                    st.replicas
                        .iter()
                        .filter(|r| r.len() == tp && cluster.nodes[r[0].node].gpu_type == gpu)
                        .count()
                };
                p.dp == 27
                    && p.micro_batch == 2
                    && s.len() == 2
                    && s[0].layers() == (0..13)
                    && on(&s[0], "V100-16", 4) == 24
                    && on(&s[0], "A100-40", 1) == 3
                    && on(&s[1], "A100-40", 1) == 27
            })
            .map(|p| p.estimate.iteration_s)
            .collect()
    };
    let found = sailors(true);
    assert!(found.iter().any(|t| (t - 6.8495).abs() < 1e-4), "{found:?}");
    assert!(sailors(false).is_empty());
}

/// Hand-written OPT-350M plans on Sailor's consumer cluster (one 8-GPU
/// server each of RTX-3090, Titan-RTX and RTX-2080, global batch 256, micro-batch
/// 1), as `scripts/sailor-check` writes them, at the times the README
/// sets beside Sailor's simulator's (`amp eval --force` of the same
/// files).
#[test]
fn consumer_cluster_plans_price_as_the_readme_says() {
    let Some(d) = data() else { return };
    let (model, profile) = d.model("opt-350m.json");
    let z = "us-central1-a";
    let three = ["RTX-3090", "Titan-RTX", "RTX-2080"];
    let plan = |gpus: &[&str], tp: usize, dp: usize| {
        let n = gpus.len();
        let mut at = 0;
        let stages: Vec<(std::ops::Range<usize>, Vec<String>)> = gpus
            .iter()
            .enumerate()
            .map(|(i, g)| {
                let k = 26 / n + usize::from(i < 26 % n);
                at += k;
                (at - k..at, vec![group(g, 8, z, tp); dp])
            })
            .collect();
        plan_file(&stages, 1, 256)
    };
    for (text, want) in [
        (plan(&three, 8, 1), 113.2643),
        (plan(&three, 4, 2), 97.1492),
        (plan(&three[..1], 8, 1), 204.1193),
        (plan(&three[1..2], 1, 8), 23.2761),
        (plan(&three[..1], 1, 8), 13.8877),
    ] {
        let run = d.load(&text, &model);
        let t = price(&model, &run.cluster, &profile, &run);
        assert!((t - want).abs() < 5e-4, "{t} for {want}\n{text}");
    }
}

/// Sailor's profiler measured every block of its models at several
/// tensor-parallel degrees (`llm_info.json`'s `act_mem_bytes`). What amp
/// reads off Sailor's block code matches them: GPT-Neo-2.7 to the byte at
/// tp 1 and 2 (less its norms' statistics, 8 bytes a token) with the 20
/// heads its figures imply, where its training file says 32; OPT-350 and
/// OPT-30 (56 heads of 128, no training file here) 4 h bytes a token over
/// them at every degree (one 4-byte tensor the profiler does not count;
/// the measured runs' peaks, all at tp 4, count it: 56 s h, `validate.rs`).
#[test]
fn block_counts_match_sailors_measured_block_memory() {
    let Some(d) = data() else { return };
    let llm: serde_json::Value = serde_json::from_str(&d.llm).unwrap();
    let (neo, _) = d.model("gpt-neo-2.7b.json");
    assert_eq!(neo.shape.as_ref().unwrap().heads, 20);
    let (opt, _) = d.model("opt-350m.json");
    assert_eq!(opt.shape.as_ref().unwrap().heads, 16);
    use sailor::SailorBlockCode::{GptNeo, Opt};
    for (name, code, s, h, heads, over) in [
        ("GPT-Neo-2.7", GptNeo, 2048, 2560, 20, 0.0),
        ("OPT-350", Opt, 2048, 1024, 16, 4.0),
        ("OPT-30", Opt, 2048, 7168, 56, 4.0),
    ] {
        let keep = sailor::sailor_block_keep(code, s, h, heads);
        let entries = llm[name].as_object().unwrap();
        assert!(entries.len() >= 3, "{name}");
        for (tp, entry) in entries {
            let t: f64 = tp.parse().unwrap();
            let measured = entry["1"]["act_mem_bytes"].as_f64().unwrap() / (s * h) as f64;
            let whole = keep.replicated_elems as f64;
            let amp = 2.0 * (whole + (keep.stored_elems as f64 - whole) / t) / (s * h) as f64;
            let tol = if t > 2.0 { 0.7 } else { 0.05 };
            assert!(
                (amp - over - measured).abs() <= tol,
                "{name} tp {tp}: amp {amp} s h bytes, measured {measured}"
            );
        }
    }
}

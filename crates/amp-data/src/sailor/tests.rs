//! Unit tests of the Sailor readers.

use super::plan_config::repair_layer_list;
use super::*;
use amp_core::cluster::{Cluster, Device};
use amp_core::plan::Plan;

const LLM: &str = r#"{"M": {"1": {
    "0": {"params_floats": 100, "act_output_floats": 8, "act_mem_floats": 8, "act_mem_bytes": 32},
    "1": {"params_floats": 50, "act_output_floats": 8, "act_mem_floats": 40, "act_mem_bytes": 160},
    "2": {"params_floats": 50, "act_output_floats": 8, "act_mem_floats": 40, "act_mem_bytes": 160},
    "3": {"params_floats": 90, "act_output_floats": 41, "act_mem_floats": 90, "act_mem_bytes": 360}}}}"#;
const TRAIN: &str = r#"{"model": "M", "hidden_size": 4, "sequence_length": 2, "num_layers": 2, "vocab_size": 20, "heads": 4, "global_batch_size": 8}"#;
const INTRA: &str = r#"{"G": {"2": [[0.0, 0.0, 100.0], 5e10], "4": [[0.0, 1.0, 10.0], 1e12]}}"#;
const INTER: &str = r#"{"z": {"G": {"4": {"z": {"G": {"4": [[0.0, 0.0, 2.0], 1e10]}}}}}}"#;
const CFG: &str = r#"{"G": {"gpus_per_node": 4, "mem_per_gpu": 1000}, "zone": "z"}"#;

fn model() -> Model {
    parse_model(LLM, "llm.json", &parse_training(TRAIN, "t.json").unwrap()).unwrap()
}

#[test]
fn model_names_match_loosely_but_uniquely() {
    let known = ["OPT-350", "GPT-Neo-2.7", "LLAMA-3-8", "OPT-30"];
    let m = |n: &str| match_model_name(n, known);
    assert_eq!(m("OPT-350"), Some("OPT-350"));
    assert_eq!(m("GPT-Neo-2.7B"), Some("GPT-Neo-2.7"));
    assert_eq!(m("gpt-neo-2.7b"), Some("GPT-Neo-2.7"));
    assert_eq!(m("opt-350m"), Some("OPT-350"));
    assert_eq!(m("Llama-3-8B"), Some("LLAMA-3-8"));
    // Without the size: the one name with a size, never a guess.
    assert_eq!(m("GPT-NEO"), Some("GPT-Neo-2.7"));
    assert_eq!(m("OPT-3"), None);
    assert_eq!(m("OPT"), None);
    assert_eq!(match_model_name("x1b", ["X1", "x-1"]), None);
}

#[test]
fn one_entry_off_a_contiguous_range_is_repaired_and_nothing_else() {
    let typo = [16, 17, 18, 29, 20, 21, 22, 23, 24];
    assert_eq!(repair_layer_list(&typo), Some((16..=24).collect()));
    assert_eq!(repair_layer_list(&[3, 4, 5]), None);
    // Two entries off, or a size that disagrees with the endpoints:
    // ambiguous, left for the reader's error.
    assert_eq!(repair_layer_list(&[16, 29, 28, 19]), None);
    assert_eq!(repair_layer_list(&[16, 17, 29, 20]), None);
}

#[test]
fn model_layers_kinds_and_sizes() {
    let m = model();
    let kinds: Vec<LayerKind> = m.layers.iter().map(|l| l.kind).collect();
    assert_eq!(
        kinds,
        vec![
            LayerKind::Embedding,
            LayerKind::TransformerBlock,
            LayerKind::TransformerBlock,
            LayerKind::VocabProjection
        ]
    );
    assert_eq!(m.layers[3].params, 90);
    assert_eq!(m.layers[3].output_elems_per_sample, 41);
    // Sailor's runtime builds its output layer apart from the embedding:
    // nothing is tied, so nothing is all-reduced between the two.
    assert!(m.layers.iter().all(|l| l.tied_to.is_none()));
    assert_eq!(m.layers[0].stored_activation_elems_per_sample, Some(16));
    assert_eq!(m.layers[1].stored_activation_elems_per_sample, None);
    assert_eq!(m.layers[3].stored_activation_elems_per_sample, Some(180));
    assert_eq!(m.shape.as_ref().unwrap().heads, 4);
}

/// Notes name what the files get wrong or leave out: none for a model with
/// its projection and a padded vocabulary; a vocabulary the embedding does
/// not hold; a model without a projection, with the projection's share of
/// the forward FLOPs (2 s h V = 320 against the blocks' 2 x (24 h^2 s + 4
/// s^2 h) = 1,664: 16.1%).
#[test]
fn notes_name_a_missing_projection_and_a_vocabulary_the_embedding_lacks() {
    let train = parse_training(TRAIN, "t.json").unwrap();
    assert!(model_notes(&model(), &train, "llm.json", "t.json").is_empty());

    let big = parse_training(
        &TRAIN.replace("\"vocab_size\": 20", "\"vocab_size\": 2000"),
        "t.json",
    )
    .unwrap();
    let m = parse_model(LLM, "llm.json", &big).unwrap();
    let notes = model_notes(&m, &big, "llm.json", "t.json");
    assert_eq!(notes.len(), 2, "{notes:?}");
    assert!(
        notes[0].starts_with("t.json: vocab_size 2000 disagrees with llm.json's embedding"),
        "{}",
        notes[0]
    );
    assert!(
        notes[0].contains("23 rows of 4 beside 2 positions"),
        "{}",
        notes[0]
    );
    // The projection's note counts the embedding's 23 rows: 46 logits.
    assert!(notes[1].contains("not 46 logits"), "{}", notes[1]);

    let headless = LLM.replace(r#""act_output_floats": 41"#, r#""act_output_floats": 8"#);
    let m = parse_model(&headless, "llm.json", &train).unwrap();
    let notes = model_notes(&m, &train, "llm.json", "t.json");
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(
        notes[0].starts_with("llm.json: model `M` has no vocabulary projection (its last layer holds 90 parameters and outputs 8 elements per sample, not 40 logits)")
            && notes[0].contains("about 16.1% more of the forward FLOPs")
            && notes[0].contains("takes the loss on the final norm's output"),
        "{}",
        notes[0]
    );
}

#[test]
fn profiles_become_entries_per_gpu_mbs_tp() {
    let text = r#"{"M": {"G": {"2": {"1": {"0": [1.0, 2.0, 3.0], "1": [4.0, 5.0, 6.0]}},
                                "1": {"1": {"1": [0.4, 0.5, 0.6], "0": [0.1, 0.2, 0.3]}}}}}"#;
    let p = parse_profiles(text, "p.json", "M").unwrap();
    assert_eq!(p.entries.len(), 2);
    let e = &p.entries[0];
    assert_eq!((e.micro_batch, e.tp), (Some(1), 1));
    assert_eq!(e.forward_s, vec![0.1, 0.4]);
    assert_eq!(e.backward_s, Some(vec![0.2, 0.5]));
    assert_eq!(e.optimizer_s, Some(vec![0.3, 0.6]));
    assert_eq!(e.source.as_deref(), Some("sailor"));
    assert_eq!(p.layer_time("G", 1, 2, 1).unwrap().forward_s, 4.0);
    let e = parse_profiles(text, "p.json", "X").unwrap_err().to_string();
    assert!(e.contains("no model `X`") && e.contains("M"), "{e}");
    let gap = r#"{"M": {"G": {"1": {"1": {"0": [1, 2, 3], "2": [1, 2, 3]}}}}}"#;
    assert!(parse_profiles(gap, "p.json", "M")
        .unwrap_err()
        .to_string()
        .contains("M.G.1.1.2"));
}

/// Sailor's profiler writes one optimizer-step time (of its profiled
/// model: the embedding, two blocks and the output layer) as every layer's;
/// amp spreads it by parameters, so a whole model's step is the step times
/// its parameters over the profiled ones, not the step times its layers.
#[test]
fn one_optimizer_step_is_spread_over_the_layers_by_parameters() {
    // An embedding of 100 parameters, five blocks of 50, an output layer of 90.
    let mut layers = vec![
        r#""0": {"params_floats": 100, "act_output_floats": 8, "act_mem_floats": 8}"#.to_string(),
    ];
    for i in 1..=5 {
        layers.push(format!(
            r#""{i}": {{"params_floats": 50, "act_output_floats": 8, "act_mem_floats": 40}}"#
        ));
    }
    layers.push(
        r#""6": {"params_floats": 90, "act_output_floats": 41, "act_mem_floats": 90}"#.to_string(),
    );
    let llm = format!(r#"{{"M": {{"1": {{{}}}}}}}"#, layers.join(", "));
    let train = TRAIN.replace(r#""num_layers": 2"#, r#""num_layers": 5"#);
    let train = parse_training(&train, "t.json").unwrap();
    let row = |opt: [f64; 7]| {
        let l: Vec<String> = opt
            .iter()
            .enumerate()
            .map(|(i, o)| format!(r#""{i}": [1.0, 2.0, {o}]"#))
            .collect();
        format!("{{{}}}", l.join(", "))
    };
    // tp 1: Sailor's one step (2.9 s) on every layer; tp 2: per-layer
    // times that differ; tp 4: no step measured.
    let profiles = format!(
        r#"{{"M": {{"G": {{"1": {{"1": {}, "2": {}, "4": {}}}}}}}}}"#,
        row([2.9; 7]),
        row([1.0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.7]),
        row([0.0; 7])
    );
    let (m, p) = model_and_profile(&llm, "llm.json", &profiles, "p.json", &train).unwrap();
    assert_eq!(m.layers.len(), 7);
    let steps = |tp: usize| {
        p.entries
            .iter()
            .find(|e| e.tp == tp)
            .unwrap()
            .optimizer_s
            .clone()
            .unwrap()
    };
    // Profiled: 100 + 2 x 50 + 90 = 290 parameters in 2.9 s, 0.01 s each.
    let spread = steps(1);
    let want = [1.0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.9];
    for (got, want) in spread.iter().zip(want) {
        assert!((got - want).abs() < 1e-12, "{spread:?}");
    }
    let whole: f64 = spread.iter().sum();
    assert!((whole - 4.4).abs() < 1e-12, "{whole}");
    assert_eq!(steps(2), vec![1.0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.7]);
    assert_eq!(steps(4), vec![0.0; 7]);
    // Forward and backward times are untouched.
    assert!(p.entries.iter().all(|e| e.forward_s == vec![1.0; 7]));
}

#[test]
fn precision_is_the_bytes_per_element_of_llm_info() {
    let full = r#"{"M": {"1": {"0": {"params_floats": 10, "params_bytes": 40, "act_output_floats": 4, "act_output_bytes": 16}},
                            "2": {"0": {"params_floats": 5, "params_bytes": 20, "act_output_floats": 4, "act_output_bytes": 16}}}}"#;
    assert_eq!(
        training_precision(full, "llm.json", "M").unwrap(),
        Some(Precision::Fp32)
    );
    // LLM above records no byte counts of outputs or parameters.
    assert_eq!(training_precision(LLM, "llm.json", "M").unwrap(), None);
    let half = r#"{"M": {"1": {"0": {"params_floats": 10, "params_bytes": 20, "act_output_floats": 4, "act_output_bytes": 8}}}}"#;
    assert_eq!(
        training_precision(half, "llm.json", "M").unwrap(),
        Some(Precision::Fp16)
    );
    let mixed = r#"{"M": {"1": {"0": {"params_floats": 10, "params_bytes": 20, "act_output_floats": 4, "act_output_bytes": 16}}}}"#;
    let e = training_precision(mixed, "llm.json", "M")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("llm.json: M.1.0") && e.contains("one precision"),
        "{e}"
    );
    let e = training_precision(LLM, "llm.json", "X")
        .unwrap_err()
        .to_string();
    assert!(e.contains("no model `X`"), "{e}");
}

#[test]
fn curves_evaluate_and_cap() {
    let net = Network::parse(INTRA, "intra", INTER, "inter").unwrap();
    let c = net.intra_curve("G", 4).unwrap();
    // x = log2(64) = 6 -> 16 GB/s.
    assert!((c.bytes_per_s(64e6) - 16e9).abs() < 1.0);
    assert_eq!(net.intra_curve("G", 2).unwrap().bytes_per_s(1e6), 5e10);
    assert_eq!(net.intra_curve("G", 3).unwrap().max_bytes_per_s, 5e10);
    assert!(net.inter_curve("z", "G", 4).is_some());
    // Another zone without its own curve falls back to a zone with one.
    assert_eq!(net.inter_curve("y", "G", 4), net.inter_curve("z", "G", 4));
    assert!(net.inter_curve("z", "H", 4).is_none());
}

/// Two zones: `z` with G nodes (NICs scale with GPUs: 1 GPU 2 GB/s,
/// 2 GPUs 3 GB/s, 4 GPUs 6.4 GB/s) and P nodes of 8 GPUs (flat 1 GB/s);
/// `y` with G nodes, linked to `z` at 0.5 and 0.4 GB/s by direction.
const INTER2: &str = r#"{
    "z": {"G": {"1": {"z": {"G": {"1": [[0, 0, 2.0], 1e10]}}},
                "2": {"z": {"G": {"2": [[0, 0, 3.0], 1e10]}}},
                "4": {"z": {"G": {"4": [[0, 0, 6.4], 1e10]}, "P": {"8": [[0, 0, 0.9], 1e10]}},
                      "y": {"G": {"4": [[0, 0, 0.5], 1e10]}}}},
          "P": {"1": {"z": {"P": {"1": [[0, 0, 1.0], 1e10]}}},
                "8": {"z": {"P": {"8": [[0, 0, 1.0], 1e10]}}}}},
    "y": {"G": {"4": {"z": {"G": {"4": [[0, 0, 0.4], 1e10]}, "P": {"8": [[0, 0, 0.3], 1e10]}}}}}}"#;

#[test]
fn nics_follow_the_curve_ratio_and_pairs_use_their_curve() {
    let net = Network::parse(INTRA, "intra", INTER2, "inter").unwrap();
    // 6.4 / 2 = 3.2 -> the divisor of 4 nearest on a log scale is 4;
    // 3 / 2 = 1.5 -> 2; a flat curve -> 1; no 1-GPU curve -> 1.
    assert_eq!(net.nics("z", "G", 4), 4);
    assert_eq!(net.nics("z", "G", 2), 2);
    assert_eq!(net.nics("z", "P", 8), 1);
    assert_eq!(net.nics("z", "Q", 8), 1);
    // Zone y has no G-G curve of its own: zone z's.
    assert_eq!(net.nics("y", "G", 4), 4);
    let at = |c: Option<&BandwidthCurve>| c.map(|c| c.bytes_per_s(REFERENCE_MESSAGE_BYTES));
    // Listed both ways: the slower. Listed one way: that one.
    assert_eq!(at(net.pair_curve(("z", "G", 4), ("y", "G", 4))), Some(4e8));
    assert_eq!(at(net.pair_curve(("y", "G", 4), ("z", "G", 4))), Some(4e8));
    assert_eq!(at(net.pair_curve(("z", "P", 8), ("z", "G", 4))), Some(9e8));
    assert_eq!(at(net.pair_curve(("z", "G", 1), ("y", "G", 1))), None);

    // A plan over both zones and both types: stage 0 on two G nodes of
    // zone z (tp 4), stage 1 with one replica on a G node of zone y and
    // one on half of a P node.
    let m = model();
    let cfg = r#"{"G": {"gpus_per_node": 4, "mem_per_gpu": 1000}, "P": {"gpus_per_node": 8, "mem_per_gpu": 2000}}"#;
    let gpus = parse_cluster_config(cfg, "cfg").unwrap();
    let gz = r#"[[["G", 4, "z"]], 4]"#;
    let gy = r#"[[["G", 4, "y"]], 4]"#;
    let p = r#"[[["P", 8, "z"]], 4]"#;
    let text = plan_json(
        &format!(
            r#"{{"num_stages": 2, "layers_per_stage": [[0, 1], [2, 3]], "tmp_per_stage": [[{gz}, {gz}], [{gy}, {p}]]"#
        ),
        "[2, 2]",
        1,
        8,
    );
    let run = parse_plan_config(&text, "p.json", &m, &gpus, &net).unwrap();
    let c = &run.cluster;
    let nodes: Vec<(&str, usize, usize, Option<u64>)> = c
        .nodes
        .iter()
        .map(|n| (n.gpu_type.as_str(), n.gpus, n.nics, n.gpu_memory_bytes))
        .collect();
    assert_eq!(
        nodes,
        vec![
            ("G", 4, 4, Some(1000)),
            ("G", 4, 4, Some(1000)),
            ("G", 4, 4, Some(1000)),
            ("P", 8, 1, Some(2000))
        ]
    );
    assert!((c.nodes[0].inter_bytes_per_s - 6.4e9).abs() < 1.0);
    // Node 2 is in zone y: links to nodes 0 and 1 at 0.4 GB/s (the
    // slower direction) and to the P node at 0.3; the P node links to
    // the G nodes of its zone at 0.9 GB/s; alike nodes need none.
    let link = |a: usize, b: usize| {
        c.links
            .iter()
            .find(|l| l.nodes == [a, b])
            .map(|l| l.bytes_per_s)
    };
    assert_eq!(link(0, 1), None);
    assert!((link(0, 2).unwrap() - 4e8).abs() < 1.0);
    assert!((link(1, 2).unwrap() - 4e8).abs() < 1.0);
    assert!((link(1, 3).unwrap() - 9e8).abs() < 1.0);
    assert!((link(2, 3).unwrap() - 3e8).abs() < 1.0);
    assert_eq!(c.links.len(), 5);
    let d = |node, gpu| Device { node, gpu };
    assert_eq!(
        run.plan.stages[1].replicas[1],
        vec![d(3, 0), d(3, 1), d(3, 2), d(3, 3)]
    );
    // A P node in zone x: its own curve comes from zone z, but nothing
    // says how it reaches the G nodes of z: a clear error.
    let px = r#"[[["P", 8, "x"]], 4]"#;
    let text = text.replace(p, px);
    let e = parse_plan_config(&text, "p.json", &m, &gpus, &net)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("p.json")
            && e.contains("no inter-node bandwidth curve between")
            && e.contains("zone `x`"),
        "{e}"
    );
}

fn plan_json(stages: &str, dp: &str, mbs: usize, gbs: usize) -> String {
    format!(
        r#"{{"pipeline_list": [{stages}, "dp": {dp}}}], "mbs": {mbs}, "gbs": {gbs}, "real": 1.5, "max_mem": 123}}"#
    )
}

#[test]
fn plan_maps_groups_onto_nodes_in_order() {
    let m = model();
    let gpus = parse_cluster_config(CFG, "cfg").unwrap();
    let net = Network::parse(INTRA, "intra", INTER, "inter").unwrap();
    // Two stages, dp 2, tp 2: four groups of two fill two 4-GPU nodes.
    let g = r#"[[["G", 4, "z"]], 2]"#;
    let text = plan_json(
        &format!(
            r#"{{"num_stages": 2, "layers_per_stage": [[0, 1], [2, 3]], "tmp_per_stage": [[{g}, {g}], [{g}, {g}]]"#
        ),
        "[2, 2]",
        1,
        8,
    );
    let run = parse_plan_config(&text, "p.json", &m, &gpus, &net).unwrap();
    assert_eq!(run.cluster.nodes.len(), 2);
    assert_eq!(run.plan.num_micro_batches, 4);
    assert_eq!(run.plan.boundaries(), vec![0, 2, 4]);
    let d = |node, gpu| Device { node, gpu };
    assert_eq!(
        run.plan.stages[0].replicas,
        vec![vec![d(0, 0), d(0, 1)], vec![d(0, 2), d(0, 3)]]
    );
    assert_eq!(
        run.plan.stages[1].replicas,
        vec![vec![d(1, 0), d(1, 1)], vec![d(1, 2), d(1, 3)]]
    );
    assert_eq!(run.measured_s, Some(1.5));
    assert_eq!(run.max_mem_bytes, Some(123.0));
    assert_eq!(run.cluster.nodes[0].gpu_memory_bytes, Some(1000));
    assert!((run.cluster.nodes[0].inter_bytes_per_s - 2e9).abs() < 1.0);
}

#[test]
fn bad_plans_are_explained() {
    let m = model();
    let gpus = parse_cluster_config(CFG, "cfg").unwrap();
    let net = Network::parse(INTRA, "intra", INTER, "inter").unwrap();
    let g = r#"[[["G", 4, "z"]], 4]"#;
    let gap = plan_json(
        &format!(
            r#"{{"num_stages": 2, "layers_per_stage": [[0, 1], [3]], "tmp_per_stage": [[{g}], [{g}]]"#
        ),
        "[1, 1]",
        1,
        8,
    );
    let e = parse_plan_config(&gap, "p.json", &m, &gpus, &net)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("p.json") && e.contains("previous stage ended"),
        "{e}"
    );
    let batch = plan_json(
        &format!(
            r#"{{"num_stages": 1, "layers_per_stage": [[0, 1, 2, 3]], "tmp_per_stage": [[{g}]]"#
        ),
        "[1]",
        3,
        8,
    );
    let e = parse_plan_config(&batch, "p.json", &m, &gpus, &net)
        .unwrap_err()
        .to_string();
    assert!(e.contains("gbs = 8"), "{e}");
    let dp = plan_json(
        &format!(
            r#"{{"num_stages": 1, "layers_per_stage": [[0, 1, 2, 3]], "tmp_per_stage": [[{g}]]"#
        ),
        "[2]",
        1,
        8,
    );
    let e = parse_plan_config(&dp, "p.json", &m, &gpus, &net)
        .unwrap_err()
        .to_string();
    assert!(e.contains("dp = 2"), "{e}");
}

/// Found by fuzzing: a tensor-parallel degree near 2^62 asked for that
/// many devices before any check (capacity overflow); now an error, as is
/// a node above the GPUs-per-node limit.
#[test]
fn huge_tp_and_nodes_are_errors_not_allocations() {
    let m = model();
    let gpus = parse_cluster_config(CFG, "cfg").unwrap();
    let net = Network::parse(INTRA, "intra", INTER, "inter").unwrap();
    for (g, words) in [
        (
            r#"[[["G", 4, "z"]], 4888888888888888888]"#,
            "tp = 4888888888888888888",
        ),
        (r#"[[["G", 100000, "z"]], 4]"#, "node of 100000"),
    ] {
        let text = plan_json(
            &format!(
                r#"{{"num_stages": 1, "layers_per_stage": [[0, 1, 2, 3]], "tmp_per_stage": [[{g}]]"#
            ),
            "[1]",
            1,
            8,
        );
        let e = parse_plan_config(&text, "p.json", &m, &gpus, &net)
            .unwrap_err()
            .to_string();
        assert!(e.contains(words) && e.contains("limit"), "{e}");
    }
}

/// Sailor's own GPU and zone names, for the writer's tests.
const GH_INTRA: &str = r#"{"GH-96": {"4": [[0.0, 0.0, 100.0], 1e11]}}"#;
const GH_INTER: &str = r#"{"us-central1-a": {"GH-96": {"4": {"us-central1-a": {"GH-96": {"4": [[0.0, 0.0, 20.0], 2.5e10]}}}}}}"#;
const GH_CFG: &str =
    r#"{"GH-96": {"gpus_per_node": 4, "mem_per_gpu": 1000}, "zone": "us-central1-a"}"#;

fn gh_cluster(nodes: usize) -> Cluster {
    Cluster {
        name: "gh".into(),
        nodes: (0..nodes)
            .map(|_| amp_core::cluster::Node {
                gpu_type: "GH200".into(),
                gpus: 4,
                intra_bytes_per_s: 1e11,
                inter_bytes_per_s: 2.5e10,
                nics: 4,
                gpu_memory_bytes: None,
                price_per_hour: None,
            })
            .collect(),
        links: Vec::new(),
    }
}

fn stage(first: usize, end: usize, replicas: Vec<Vec<(usize, usize)>>) -> amp_core::plan::Stage {
    amp_core::plan::Stage {
        first_layer: first,
        end_layer: end,
        replicas: replicas
            .into_iter()
            .map(|r| {
                r.into_iter()
                    .map(|(node, gpu)| Device { node, gpu })
                    .collect()
            })
            .collect(),
    }
}

/// An amp plan with a different tp per stage, written as a Sailor file and
/// read back by amp's own reader: the same stages, layers, tp, dp and
/// micro-batching, GPU types under Sailor's names.
#[test]
fn written_plans_read_back_the_same() {
    let m = model();
    let plan = Plan {
        micro_batch: 2,
        num_micro_batches: 3,
        replica_micro_batches: Vec::new(),
        stages: vec![
            stage(0, 2, vec![vec![(0, 0), (0, 1)], vec![(0, 2), (0, 3)]]),
            stage(
                2,
                4,
                vec![
                    vec![(1, 0), (1, 1), (1, 2), (1, 3)],
                    vec![(2, 0), (2, 1), (2, 2), (2, 3)],
                ],
            ),
        ],
        setup: Default::default(),
    };
    let text = write_plan_config(&plan, &m, &gh_cluster(3), DEFAULT_ZONE).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
    for k in ["zone", "pipeline_list", "mbs", "gbs", "N"] {
        assert!(keys.contains(&k), "{keys:?}");
    }
    assert!(v.get("real").is_none() && v.get("max_mem").is_none());
    assert_eq!(v["N"], 3);
    assert_eq!(v["gbs"], 12);
    assert_eq!(
        v["pipeline_list"][0]["tmp_per_stage"][1][0],
        serde_json::json!([[["GH-96", 4, "us-central1-a"]], 4])
    );
    assert_eq!(plan_config_file_name(&plan), "plan_config_N3_D2.json");
    let gpus = parse_cluster_config(GH_CFG, "cfg").unwrap();
    let net = Network::parse(GH_INTRA, "intra", GH_INTER, "inter").unwrap();
    let run = parse_plan_config(&text, "out.json", &m, &gpus, &net).unwrap();
    assert!(run.warnings.is_empty());
    let back = &run.plan;
    assert_eq!(back.boundaries(), plan.boundaries());
    assert_eq!(
        back.stages
            .iter()
            .map(|s| (s.tp(), s.dp()))
            .collect::<Vec<_>>(),
        vec![(2, 2), (4, 2)]
    );
    assert_eq!(
        (back.micro_batch, back.num_micro_batches),
        (plan.micro_batch, plan.num_micro_batches)
    );
    assert_eq!(back.stages, plan.stages);
    assert!(run.cluster.nodes.iter().all(|n| n.gpu_type == "GH-96"));
    // And writing what was read gives the same file.
    assert_eq!(
        write_plan_config(back, &m, &run.cluster, DEFAULT_ZONE).unwrap(),
        text
    );
}

/// A stage whose replicas differ in tp, with uneven replicas dealt as the
/// format implies, writes and reads back the same; other uneven counts are
/// refused, as the file could not say them.
#[test]
fn mixed_tp_and_uneven_plans_read_back_the_same() {
    let m = model();
    let mut plan = Plan {
        micro_batch: 1,
        num_micro_batches: 3,
        replica_micro_batches: vec![3, 2],
        stages: vec![
            stage(
                0,
                2,
                vec![vec![(0, 0), (0, 1), (0, 2), (0, 3)], vec![(1, 0)]],
            ),
            stage(2, 4, vec![vec![(1, 1)], vec![(1, 2)]]),
        ],
        setup: Default::default(),
    };
    let text = write_plan_config(&plan, &m, &gh_cluster(2), DEFAULT_ZONE).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["gbs"], 5);
    let gpus = parse_cluster_config(GH_CFG, "cfg").unwrap();
    let net = Network::parse(GH_INTRA, "intra", GH_INTER, "inter").unwrap();
    let run = parse_plan_config(&text, "out.json", &m, &gpus, &net).unwrap();
    assert_eq!(run.plan, plan);
    assert_eq!(run.warnings.len(), 1, "{:?}", run.warnings);
    plan.replica_micro_batches = vec![2, 3];
    let e = write_plan_config(&plan, &m, &gh_cluster(2), DEFAULT_ZONE)
        .unwrap_err()
        .to_string();
    assert!(e.contains("read back as [3, 2]"), "{e}");
    assert!(e.contains("order the replicas"), "{e}");
    // Counts no order deals evenly: reordering would not help.
    plan.replica_micro_batches = vec![1, 4];
    plan.num_micro_batches = 4;
    let e = write_plan_config(&plan, &m, &gh_cluster(2), DEFAULT_ZONE)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("read back as [3, 2]")
            && e.contains("no order of the replicas")
            && !e.contains("order the replicas so"),
        "{e}"
    );
}

#[test]
fn names_map_both_ways_through_the_one_table() {
    assert_eq!(sailor_gpu_name("GH200"), Some("GH-96"));
    assert_eq!(sailor_gpu_name("gh-96"), Some("GH-96"));
    assert_eq!(sailor_gpu_name("A100-40GB"), Some("A100-40"));
    assert_eq!(sailor_gpu_name("H100-SXM"), None);
    assert_eq!(sailor_model("opt-350m"), Some(("OPT-350", 26)));
    assert_eq!(sailor_model("llama-3-8b"), Some(("LLAMA-3-8", 35)));
    assert_eq!(sailor_model("GPT-Neo-2.7"), Some(("GPT-Neo-2.7", 34)));
    assert_eq!(sailor_model("gpt2"), None);
}

/// What a Sailor file cannot say is refused with the reason.
#[test]
fn plans_sailor_cannot_express_are_refused() {
    let m = model();
    let one = |replicas| Plan {
        micro_batch: 1,
        num_micro_batches: 2,
        replica_micro_batches: Vec::new(),
        stages: vec![stage(0, 4, replicas)],
        setup: Default::default(),
    };
    let err = |p: &Plan, c: &Cluster| {
        write_plan_config(p, &m, c, DEFAULT_ZONE)
            .unwrap_err()
            .to_string()
    };
    // A group of three GPUs on one node and one on the next.
    let uneven = one(vec![vec![(0, 0), (0, 1), (0, 2), (1, 0)]]);
    let e = err(&uneven, &gh_cluster(2));
    assert!(
        e.contains("stage 0, replica 0") && e.contains("3 on node 0, 1 on node 1"),
        "{e}"
    );
    // An even split over two nodes is fine.
    let even = one(vec![vec![(0, 0), (0, 1), (1, 0), (1, 1)]]);
    let text = write_plan_config(&even, &m, &gh_cluster(2), DEFAULT_ZONE).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        v["pipeline_list"][0]["tmp_per_stage"][0][0],
        serde_json::json!([
            [["GH-96", 4, "us-central1-a"], ["GH-96", 4, "us-central1-a"]],
            4
        ])
    );
    // A GPU type Sailor has no name for.
    let mut h100 = gh_cluster(1);
    h100.nodes[0].gpu_type = "H100-SXM".into();
    let e = err(&one(vec![vec![(0, 0)]]), &h100);
    assert!(
        e.contains("`H100-SXM`") && e.contains("GH-96 (GH200)"),
        "{e}"
    );
    // Setups Sailor's runs do not train with.
    let mut p = one(vec![vec![(0, 0)]]);
    p.setup.recompute = amp_core::setup::Recompute::Full;
    assert!(err(&p, &gh_cluster(1)).contains("recomputes"));
    let mut p = Plan {
        micro_batch: 1,
        num_micro_batches: 2,
        replica_micro_batches: Vec::new(),
        stages: vec![
            stage(0, 1, vec![vec![(0, 0)]]),
            stage(1, 2, vec![vec![(0, 1)]]),
            stage(2, 3, vec![vec![(0, 0)]]),
            stage(3, 4, vec![vec![(0, 1)]]),
        ],
        setup: Default::default(),
    };
    p.setup.schedule = amp_core::schedule::Schedule::Interleaved { virtual_stages: 2 };
    let e = err(&p, &gh_cluster(1));
    assert!(
        e.contains("interleaves 2 model chunks") && e.contains("1f1b"),
        "{e}"
    );
}

/// amp's layers before the first block are Sailor's one embedding layer: a
/// boundary between them is refused, one after them maps to Sailor's 1.
#[test]
fn leading_layers_collapse_into_the_embedding() {
    let mut m = model();
    let noop = amp_core::model::Layer {
        name: "noop".into(),
        kind: LayerKind::Noop,
        params: 0,
        output_elems_per_sample: 8,
        forward_flops_per_sample: None,
        tied_to: None,
        stored_activation_elems_per_sample: None,
        replicated_activation_elems_per_sample: None,
        backward_transient_elems_per_sample: None,
        replicated_backward_transient_elems_per_sample: None,
        forward_send_extra_bytes: 0,
    };
    m.layers.insert(1, noop);
    let plan = |b: usize| Plan {
        micro_batch: 1,
        num_micro_batches: 1,
        replica_micro_batches: Vec::new(),
        stages: vec![
            stage(0, b, vec![vec![(0, 0)]]),
            stage(b, 5, vec![vec![(0, 1)]]),
        ],
        setup: Default::default(),
    };
    let e = write_plan_config(&plan(1), &m, &gh_cluster(1), DEFAULT_ZONE)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("stage 1")
            && e.contains("layers 0..=1")
            && e.contains("move the stage boundary"),
        "{e}"
    );
    let text = write_plan_config(&plan(2), &m, &gh_cluster(1), DEFAULT_ZONE).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        v["pipeline_list"][0]["layers_per_stage"],
        serde_json::json!([[0], [1, 2, 3]])
    );
}

/// Sailor's planner may run a stage's replicas at different tp (3 A100 at
/// tp 1 beside V100 groups at tp 4) and pick a dp that does not divide the
/// batch: both read as they are, the uneven micro-batches with a warning.
#[test]
fn replicas_of_a_stage_at_different_tp_and_uneven_dp_are_read() {
    let m = model();
    let gpus = parse_cluster_config(CFG, "cfg").unwrap();
    let net = Network::parse(INTRA, "intra", INTER, "inter").unwrap();
    let (a, b) = (r#"[[["G", 4, "z"]], 1]"#, r#"[[["G", 4, "z"]], 4]"#);
    let text = plan_json(
        &format!(
            r#"{{"num_stages": 2, "layers_per_stage": [[0, 1], [2, 3]], "tmp_per_stage": [[{b}, {b}, {b}, {b}], [{a}, {a}, {a}, {b}]]"#
        ),
        "[4, 4]",
        1,
        10,
    );
    let run = parse_plan_config(&text, "p.json", &m, &gpus, &net).unwrap();
    let tps: Vec<usize> = run.plan.stages[1].replicas.iter().map(Vec::len).collect();
    assert_eq!(tps, vec![1, 1, 1, 4]);
    assert_eq!(run.plan.stages[1].tp_label(), "1+4");
    // 10 micro-batches over 4 replicas: 3, 3, 2, 2.
    assert_eq!(run.plan.replica_micro_batches, vec![3, 3, 2, 2]);
    assert_eq!(run.plan.num_micro_batches, 3);
    assert_eq!(run.plan.global_batch(), 10);
    assert!(
        run.warnings.iter().any(|w| w.contains("p.json")
            && w.contains("not a multiple of mbs x dp = 1 x 4")
            && w.contains("uneven")),
        "{:?}",
        run.warnings
    );
    // Fewer micro-batches than replicas is refused.
    let text = plan_json(
        &format!(
            r#"{{"num_stages": 2, "layers_per_stage": [[0, 1], [2, 3]], "tmp_per_stage": [[{b}, {b}, {b}, {b}], [{a}, {a}, {a}, {b}]]"#
        ),
        "[4, 4]",
        1,
        3,
    );
    let e = parse_plan_config(&text, "p.json", &m, &gpus, &net)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("at least one micro-batch to each of the 4 replicas"),
        "{e}"
    );
}

/// Servers of 8 GPUs of types T and R: T-T and R-R consistent; T-R at
/// 3 GB/s with 4 GPUs per node (either direction listed) but 0.1 GB/s with
/// 8, and 0.15 GB/s with 2 (within the factor).
const INTER3: &str = r#"{
    "z": {"T": {"2": {"z": {"R": {"2": [[0, 0, 0.15], 1e10]}}},
                "4": {"z": {"R": {"4": [[0, 0, 3.0], 1e10]}}},
                "8": {"z": {"T": {"8": [[0, 0, 2.0], 1e10]}, "R": {"8": [[0, 0, 0.1], 1e10]}}}},
          "R": {"1": {"z": {"R": {"1": [[0, 0, 1.0], 1e10]}}},
                "8": {"z": {"R": {"8": [[0, 0, 2.0], 1e10]}, "T": {"8": [[0, 0, 0.1], 1e10]}}}}}}"#;

#[test]
fn network_notes_name_entries_that_contradict_the_nodes_own() {
    let net = Network::parse(INTRA, "intra", INTER3, "inter.json").unwrap();
    let kinds = |v: &[(&str, usize)]| -> Vec<(String, usize, usize)> {
        v.iter().map(|&(g, n)| (g.to_string(), n, 8)).collect()
    };
    let notes = network_notes(&net, &kinds(&[("T", 1), ("R", 2)]), "z", "inter.json");
    assert_eq!(notes.len(), 1, "{notes:?}");
    let n = &notes[0];
    assert!(n.starts_with("inter.json: `T` and `R` nodes reach 3.00 GB/s with 4 GPUs per node sending but 0.10 GB/s with 8"), "{n}");
    assert!(
        n.contains("amp prices these nodes' links with the entry for their own GPUs"),
        "{n}"
    );
    // Types on their own, or a pair within the factor: nothing to say.
    assert!(network_notes(&net, &kinds(&[("T", 2)]), "z", "i").is_empty());
    assert!(network_notes(&net, &kinds(&[("R", 3)]), "z", "i").is_empty());
    // 0.15 against 0.1 GB/s: within the factor.
    let lenient = INTER3.replace("[[0, 0, 3.0], 1e10]", "[[0, 0, 0.12], 1e10]");
    let net = Network::parse(INTRA, "intra", &lenient, "inter.json").unwrap();
    assert!(network_notes(&net, &kinds(&[("T", 1), ("R", 1)]), "z", "i").is_empty());
}

/// Sailor's OPT blocks at tp 4, the degree of every measured run, keep
/// what Korthikanti's 16-bit formula gives for OPT-350 (so those runs'
/// figures did not move), and less at tp 1 and 2 where the formula counts
/// attention dropout that Sailor's OPT does not run; GPT-Neo keeps its
/// GeLU's two tensors and two dropout masks more.
#[test]
fn sailor_blocks_keep_what_their_code_keeps() {
    let (s, h) = (2048u64, 1024u64);
    let bytes_per_sh = |k: SailorBlockKeep, t: u64, h: u64| {
        let whole = k.replicated_elems as f64;
        2.0 * (whole + (k.stored_elems as f64 - whole) / t as f64) / (s * h) as f64
    };
    let opt = sailor_block_keep(SailorBlockCode::Opt, s, h, 16);
    let korthikanti = |t: f64| 10.0 + 24.0 / t + 5.0 * 16.0 * s as f64 / (h as f64 * t);
    assert_eq!(bytes_per_sh(opt, 4, h), 56.0);
    assert_eq!(bytes_per_sh(opt, 4, h), korthikanti(4.0));
    assert_eq!(bytes_per_sh(opt, 1, h), 176.0);
    assert_eq!(korthikanti(1.0), 194.0);
    let h = 2560;
    let neo = sailor_block_keep(SailorBlockCode::GptNeo, s, h, 20);
    let per = |t| {
        2.0 * (neo.replicated_elems as f64
            + (neo.stored_elems - neo.replicated_elems) as f64 / t as f64)
            / (s * h) as f64
    };
    assert_eq!([per(1), per(2), per(4)], [130.0, 74.0, 46.0]);
    assert_eq!(
        SailorBlockCode::of("GPT-Neo-2.7"),
        Some(SailorBlockCode::GptNeo)
    );
    assert_eq!(SailorBlockCode::of("OPT-30"), Some(SailorBlockCode::Opt));
    assert_eq!(SailorBlockCode::of("LLAMA-3-8"), None);
}

/// The heads a block's figures were measured with come back from how they
/// shrink with the degree; a figure that does not give a whole number of
/// heads that divides the width gives none.
#[test]
fn heads_come_back_from_block_memory_or_not_at_all() {
    let (s, h) = (2048u64, 2560u64);
    let neo = |a: u64, t: u64| {
        let k = sailor_block_keep(SailorBlockCode::GptNeo, s, h, a);
        2.0 * (k.replicated_elems as f64 + (k.stored_elems - k.replicated_elems) as f64 / t as f64)
    };
    let code = SailorBlockCode::GptNeo;
    assert_eq!(
        heads_in_block_memory(code, &[(1, neo(20, 1)), (2, neo(20, 2))], s, h),
        Some(20)
    );
    assert_eq!(
        heads_in_block_memory(code, &[(1, neo(32, 1)), (4, neo(32, 4))], s, h),
        Some(32)
    );
    // One degree says nothing of the split.
    assert_eq!(heads_in_block_memory(code, &[(1, neo(20, 1))], s, h), None);
    // 20.4 heads: 20 divides the width, but the figure is not whole.
    let mix = |t| 0.6 * neo(20, t) + 0.4 * neo(21, t);
    assert_eq!(
        heads_in_block_memory(code, &[(1, mix(1)), (2, mix(2))], s, h),
        None
    );
    // 20.2: near enough.
    let near = |t| 0.8 * neo(20, t) + 0.2 * neo(21, t);
    assert_eq!(
        heads_in_block_memory(code, &[(1, near(1)), (2, near(2))], s, h),
        Some(20)
    );
    // 21 heads do not divide 2560.
    assert_eq!(
        heads_in_block_memory(code, &[(1, neo(21, 1)), (2, neo(21, 2))], s, h),
        None
    );
    // A block that keeps less than the code's own tensors: none.
    assert_eq!(
        heads_in_block_memory(code, &[(1, 1.0), (2, 1.0)], s, h),
        None
    );
}

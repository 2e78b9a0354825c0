//! Writing an amp plan as a Sailor `plan_config` JSON: the inverse of
//! [`parse_plan_config`](super::parse_plan_config), in the exact shape of
//! Sailor's files.
//!
//! Shape (from the measured files, which are Python's `json.dumps(plan,
//! indent=2)`, no trailing newline): `zone`, `pipeline_list` (one pipeline:
//! `num_stages`, `layers_per_stage`, `tmp_per_stage`, `dp`), `mbs`, `gbs`,
//! `N` (nodes the plan uses). The measured-only fields `real`, `red_grads`
//! and `max_mem` are left out: they are measurements of a run, and Sailor's
//! planner does not write them either (its plans carry estimates under
//! other keys, which amp does not produce).

use std::collections::BTreeSet;

use serde::Serialize;

use amp_core::cluster::Cluster;
use amp_core::error::{AmpError, Result};
use amp_core::model::{LayerKind, Model};
use amp_core::plan::Plan;
use amp_core::schedule::Schedule;
use amp_core::setup::{OptimizerSharding, Recompute};

/// The zone written for every node: amp's clusters have no zones, and this
/// is the one of Sailor's `cluster_config.json` and measured runs.
pub const DEFAULT_ZONE: &str = "us-central1-a";

/// The one table between amp's names and Sailor's. GPU types: (amp catalog
/// name, Sailor's name in `cluster_config.json` and `profiles.json`).
pub const GPU_NAMES: &[(&str, &str)] = &[
    ("A100-40GB", "A100-40"),
    ("A100-80GB", "A100-80"),
    ("V100-16GB", "V100-16"),
    ("GH200", "GH-96"),
    ("RTX-2080", "RTX-2080"),
    ("RTX-3090", "RTX-3090"),
    ("Titan-RTX", "Titan-RTX"),
];

/// Models: (amp zoo name, Sailor's name in `llm_info.json`, Sailor's layer
/// count there: the embedding, the transformer blocks and the head layers).
pub const MODEL_NAMES: &[(&str, &str, usize)] = &[
    ("opt-350m", "OPT-350", 26),
    ("opt-30b", "OPT-30", 50),
    ("gpt-neo-2.7b", "GPT-Neo-2.7", 34),
    ("llama3-8b", "LLAMA-3-8", 35),
];

fn norm(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// Sailor's name of a GPU type given by amp's catalog name or by Sailor's
/// own (ignoring case and punctuation). Catalog aliases (`V100`) must be
/// resolved to the catalog name first.
pub fn sailor_gpu_name(gpu_type: &str) -> Option<&'static str> {
    let n = norm(gpu_type);
    GPU_NAMES
        .iter()
        .find(|(amp, sailor)| norm(amp) == n || norm(sailor) == n)
        .map(|(_, s)| *s)
}

/// Sailor's name and layer count of a model given by amp's zoo name or
/// Sailor's own (ignoring case and punctuation).
pub fn sailor_model(name: &str) -> Option<(&'static str, usize)> {
    let n = norm(name);
    MODEL_NAMES
        .iter()
        .find(|(amp, sailor, _)| norm(amp) == n || norm(sailor) == n)
        .map(|(_, s, l)| (*s, *l))
}

/// Sailor's layer index of each amp layer. Sailor lists a model as its
/// embedding (0), the transformer blocks (1..=L) and the head layers of its
/// `llm_info.json`; amp's leading layers before the first block become
/// Sailor's 0, and its layers after the last block become Sailor's head
/// layers one for one, or all the one head layer Sailor lists.
fn layer_map(model: &Model) -> std::result::Result<Vec<usize>, String> {
    let layout = "Sailor lists a model as its embedding, its transformer blocks and its head";
    let is_block = |k: LayerKind| k == LayerKind::TransformerBlock;
    let kinds: Vec<LayerKind> = model.layers.iter().map(|l| l.kind).collect();
    let (Some(first), Some(last)) = (
        kinds.iter().position(|k| is_block(*k)),
        kinds.iter().rposition(|k| is_block(*k)),
    ) else {
        return Err(format!(
            "model `{}` has no transformer blocks; {layout}",
            model.name
        ));
    };
    if let Some(i) = (first..=last).find(|&i| !is_block(kinds[i])) {
        return Err(format!(
            "layer {i} (`{}`) of model `{}` sits between transformer blocks; {layout}",
            model.layers[i].name, model.name
        ));
    }
    if first == 0 {
        return Err(format!(
            "model `{}` starts with a transformer block; {layout}, so its layer 0 is the embedding",
            model.name
        ));
    }
    let blocks = last - first + 1;
    let post = kinds.len() - last - 1;
    if post == 0 {
        return Err(format!(
            "model `{}` ends with a transformer block; {layout}",
            model.name
        ));
    }
    let head = match sailor_model(&model.name) {
        None => post,
        Some((name, layers)) => match layers.checked_sub(1 + blocks) {
            Some(h) if h >= 1 => h,
            _ => {
                return Err(format!(
                    "model `{}` has {blocks} transformer blocks but Sailor's `{name}` has {}",
                    model.name,
                    layers.saturating_sub(2)
                ))
            }
        },
    };
    if head != post && head != 1 {
        return Err(format!(
            "model `{}` has {post} layers after its blocks and Sailor's lists {head}; amp cannot tell which of Sailor's layers each one is",
            model.name
        ));
    }
    Ok((0..kinds.len())
        .map(|i| match i {
            i if i < first => 0,
            i if i <= last => i - first + 1,
            i if head == post => blocks + 1 + (i - last - 1),
            _ => blocks + 1,
        })
        .collect())
}

/// A tensor-parallel group as Sailor writes it.
type TpGroupOut = (Vec<(String, usize, String)>, usize);

#[derive(Serialize)]
struct PipelineOut {
    num_stages: usize,
    layers_per_stage: Vec<Vec<usize>>,
    tmp_per_stage: Vec<Vec<TpGroupOut>>,
    dp: Vec<usize>,
}

#[derive(Serialize)]
struct PlanOut<'a> {
    zone: &'a str,
    pipeline_list: Vec<PipelineOut>,
    mbs: usize,
    gbs: usize,
    #[serde(rename = "N")]
    nodes: usize,
}

/// Refuses what a Sailor plan file cannot say: Sailor's runs are 1F1B
/// without recomputation, optimizer sharding or sequence parallelism
/// ([`super::training_setup`]), one contiguous layer range per stage.
fn check_setup(plan: &Plan) -> std::result::Result<(), String> {
    let s = &plan.setup;
    let fix = "plan again without it (amp plan ... --schedule 1f1b, no --recompute, --optimizer-sharding or --sequence-parallel), as Sailor's runs train";
    if let Schedule::Interleaved { virtual_stages } = s.schedule {
        if virtual_stages > 1 {
            return Err(format!(
                "the plan interleaves {virtual_stages} model chunks per pipeline rank, and a Sailor plan gives each stage one contiguous layer range run 1F1B; {fix}"
            ));
        }
    }
    if s.schedule == Schedule::GPipe {
        return Err(format!(
            "the plan runs the GPipe schedule and Sailor's runs are 1F1B; {fix}"
        ));
    }
    if s.recompute != Recompute::None {
        return Err(format!(
            "the plan recomputes activations ({}) and a Sailor plan cannot say so; {fix}",
            s.recompute.name()
        ));
    }
    if s.optimizer_sharding != OptimizerSharding::None {
        return Err(format!(
            "the plan shards the optimizer ({}) and a Sailor plan cannot say so; {fix}",
            s.optimizer_sharding.name()
        ));
    }
    if s.sequence_parallel {
        return Err(format!(
            "the plan uses sequence parallelism and a Sailor plan cannot say so; {fix}"
        ));
    }
    Ok(())
}

/// The Sailor `plan_config` JSON of `plan` (pure; see the module
/// documentation for the shape). Every node is placed in `zone`.
///
/// GPU types are written with Sailor's names ([`GPU_NAMES`]; give the
/// cluster amp's catalog names or Sailor's). A replica's tensor-parallel
/// group is written as the nodes it spans, in the order of its devices,
/// with the GPUs per node; Sailor's format takes the same number of GPUs
/// from each, so a group split unevenly over nodes is refused. Which GPUs
/// of a node a group takes is not part of the format (Sailor, and amp's
/// reader, fill nodes in order).
///
/// Replicas of a stage may differ in tp (the format's own per-replica
/// groups). Refused with the reason: a plan that fails [`Plan::validate`],
/// uneven replicas other than the even deal (`check_micro_batches`), a
/// setup
/// Sailor's runs do not train with ([`super::training_setup`]), a GPU type
/// without a Sailor name, a model whose layers do not map onto Sailor's
/// (embedding, blocks, head) or a stage boundary inside what Sailor counts
/// as one layer.
pub fn write_plan_config(
    plan: &Plan,
    model: &Model,
    cluster: &Cluster,
    zone: &str,
) -> Result<String> {
    plan.validate(model, cluster)?;
    check_setup(plan).map_err(|e| AmpError::invalid("plan", e))?;
    check_micro_batches(plan)?;
    let map = layer_map(model).map_err(|e| AmpError::invalid("plan", e))?;
    let mut layers_per_stage = Vec::with_capacity(plan.stages.len());
    let mut tmp_per_stage = Vec::with_capacity(plan.stages.len());
    let mut used_nodes = BTreeSet::new();
    for (j, s) in plan.stages.iter().enumerate() {
        let at = format!("plan stage {j}");
        let (lo, hi) = (map[s.first_layer], map[s.end_layer - 1]);
        if j > 0 && map[s.first_layer - 1] == lo {
            let same: Vec<usize> = (0..map.len()).filter(|&i| map[i] == lo).collect();
            return Err(AmpError::invalid(
                at,
                format!(
                    "starts at layer {} (`{}`), but Sailor counts layers {}..={} of model `{}` as its one layer {lo}; move the stage boundary to {} or {}",
                    s.first_layer,
                    model.layers[s.first_layer].name,
                    same[0],
                    same[same.len() - 1],
                    model.name,
                    same[0],
                    same[same.len() - 1] + 1
                ),
            ));
        }
        layers_per_stage.push((lo..=hi).collect());
        let mut groups = Vec::with_capacity(s.dp());
        for (r, rep) in s.replicas.iter().enumerate() {
            // The nodes of the group in device order, with its GPUs on each.
            let mut spans: Vec<(usize, usize)> = Vec::new();
            for d in rep {
                match spans.iter_mut().find(|(n, _)| *n == d.node) {
                    Some((_, k)) => *k += 1,
                    None => spans.push((d.node, 1)),
                }
                used_nodes.insert(d.node);
            }
            if spans.iter().any(|&(_, k)| k != spans[0].1) {
                let counts: Vec<String> = spans
                    .iter()
                    .map(|(n, k)| format!("{k} on node {n}"))
                    .collect();
                return Err(AmpError::invalid(
                    format!("{at}, replica {r}"),
                    format!(
                        "its tensor-parallel group has {} GPUs; a Sailor plan takes the same number of GPUs from every node a group spans; place the group evenly",
                        counts.join(", ")
                    ),
                ));
            }
            let mut nodes = Vec::with_capacity(spans.len());
            for (n, _) in spans {
                let node = &cluster.nodes[n];
                let gpu = sailor_gpu_name(&node.gpu_type).ok_or_else(|| {
                    let known: Vec<String> =
                        GPU_NAMES.iter().map(|(a, s)| format!("{s} ({a})")).collect();
                    AmpError::invalid(
                        format!("{at}, replica {r}"),
                        format!(
                            "GPU type `{}` of node {n} has no Sailor name; Sailor knows {}; plan on those GPU types, or add the type to Sailor's cluster_config.json and profiles and to amp_data::sailor::GPU_NAMES",
                            node.gpu_type,
                            known.join(", ")
                        ),
                    )
                })?;
                nodes.push((gpu.to_string(), node.gpus, zone.to_string()));
            }
            groups.push((nodes, rep.len()));
        }
        tmp_per_stage.push(groups);
    }
    let out = PlanOut {
        zone,
        pipeline_list: vec![PipelineOut {
            num_stages: plan.stages.len(),
            dp: plan.stages.iter().map(|s| s.dp()).collect(),
            layers_per_stage,
            tmp_per_stage,
        }],
        mbs: plan.micro_batch,
        gbs: plan.global_batch(),
        nodes: used_nodes.len(),
    };
    // serde_json's pretty printer writes what Python's indent=2 writes for
    // these integers, strings and lists.
    serde_json::to_string_pretty(&out).map_err(|e| AmpError::invalid("plan", e.to_string()))
}

/// Sailor's format records the global batch and dp, not who runs what:
/// uneven replicas are written only when their counts are the even deal
/// amp's reader takes back (the first replicas one micro-batch more).
fn check_micro_batches(plan: &Plan) -> Result<()> {
    if !plan.is_uneven() {
        return Ok(());
    }
    let (dp, total) = (plan.dp(), plan.total_micro_batches());
    let dealt = amp_core::uneven::even_deal(total, dp);
    if plan.replica_micro_batches == dealt {
        return Ok(());
    }
    let mut sorted = plan.replica_micro_batches.clone();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    // Reordering helps only where the counts are the even deal already.
    let fix = if sorted == dealt {
        "order the replicas so the first ones run more, or export to Sailor a plan with even replicas"
    } else {
        "those differ by more than one micro-batch, which no order of the replicas gives; export to Sailor a plan with even replicas (one amp plan finds without --uneven-dp)"
    };
    Err(AmpError::invalid(
        "plan",
        format!(
            "its replicas run {:?} micro-batches; a Sailor plan_config records only the global batch and dp, which read back as {dealt:?}; {fix}",
            plan.replica_micro_batches
        ),
    ))
}

/// The file name Sailor's measured runs use: `plan_config_N<nodes>_D<dp>.json`.
pub fn plan_config_file_name(plan: &Plan) -> String {
    let nodes: BTreeSet<usize> = plan.devices().map(|d| d.node).collect();
    format!("plan_config_N{}_D{}.json", nodes.len(), plan.dp())
}

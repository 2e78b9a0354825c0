//! A measured run's `plan_config_*.json`: its plan, the nodes it fills, its measured time, memory and gradient-reduction phase; obvious typos repaired with a warning.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use amp_core::cluster::{Cluster, Device};
use amp_core::error::{AmpError, Result};
use amp_core::model::Model;
use amp_core::plan::{Plan, Stage};

use super::*;

/// A node of a Sailor plan.
#[derive(Debug, Clone, PartialEq)]
struct NodeSlot {
    gpu: String,
    gpus: usize,
    zone: String,
    used: usize,
}

/// One measured run of `plan_config_*.json`, mapped onto our types.
#[derive(Debug, Clone, PartialEq)]
pub struct SailorRun {
    pub plan: Plan,
    /// The nodes the plan uses, in the order it fills them.
    pub cluster: Cluster,
    pub global_batch: usize,
    /// Measured iteration time (`real`), seconds.
    pub measured_s: Option<f64>,
    /// Measured peak memory per GPU (`max_mem`), bytes.
    pub max_mem_bytes: Option<f64>,
    /// Measured gradient-reduction time (`red_grads`), seconds.
    pub grad_reduce_s: Option<f64>,
    /// Repairs made while reading (file, place, what was read, what it
    /// became), for the caller to show.
    pub warnings: Vec<String>,
}

/// A stage's layer list with one entry off a contiguous range whose size and
/// endpoints it matches (Sailor's `[16, 17, 18, 29, 20, ...]`), repaired to
/// that range; `None` when the list is contiguous or not so repairable
/// (several entries off, or endpoints that disagree with its size).
pub(super) fn repair_layer_list(layers: &[usize]) -> Option<Vec<usize>> {
    let (&lo, &hi) = (layers.first()?, layers.last()?);
    if hi < lo || hi - lo + 1 != layers.len() {
        return None;
    }
    let off = layers
        .iter()
        .enumerate()
        .filter(|&(k, &l)| l != lo + k)
        .count();
    (off == 1).then(|| (lo..=hi).collect())
}

#[derive(Debug, Deserialize)]
struct PlanFile {
    pipeline_list: Vec<PipelineFile>,
    mbs: usize,
    gbs: usize,
    #[serde(default)]
    real: Option<Value>,
    #[serde(default)]
    max_mem: Option<Value>,
    #[serde(default)]
    red_grads: Option<Value>,
}

/// A tensor-parallel group: the nodes it spans as (GPU type, GPUs per
/// node, zone), and its degree.
type TpGroup = (Vec<(String, usize, String)>, usize);

#[derive(Debug, Deserialize)]
struct PipelineFile {
    num_stages: usize,
    layers_per_stage: Vec<Vec<usize>>,
    /// Per stage, per replica: ([[gpu type, gpus per node, zone], ...], tp).
    tmp_per_stage: Vec<Vec<TpGroup>>,
    dp: Vec<usize>,
}

/// Parses a `plan_config_*.json` for `model` into a plan over the nodes it
/// names.
///
/// Device mapping (deterministic): stages in order, replicas in order; a
/// replica's tensor-parallel group lists the nodes it spans as [gpu type,
/// GPUs per node, zone] and takes `tp / (entries)` GPUs on each, filling
/// the first node of that (type, size, zone) with enough free GPUs, else a
/// new node; GPUs inside a node are taken in index order. Several
/// pipelines with the same stage split add replicas; different splits are
/// rejected (our plans share one split).
///
/// Node bandwidths come from `network` at [`REFERENCE_MESSAGE_BYTES`]: the
/// intra-node curve of the node's GPU count and the inter-node curve
/// between two such nodes of the same zone ([`Network::inter_curve`]), with
/// [`Network::nics`] interfaces. Nodes of different GPU types, sizes or
/// zones get a [`amp_core::cluster::NodeLink`] from their pair's curve
/// ([`Network::pair_curve`]); without one, nodes of one zone use the slower
/// node's own figure and nodes of different zones are an error. Memory from
/// `gpus` (the cluster config); the node's GPU count is the plan's.
pub fn parse_plan_config(
    text: &str,
    origin: &str,
    model: &Model,
    gpus: &BTreeMap<String, GpuSpec>,
    network: &Network,
) -> Result<SailorRun> {
    let mut f: PlanFile = AmpError::json(text, origin)?;
    let mut warnings = Vec::new();
    for (pi, p) in f.pipeline_list.iter_mut().enumerate() {
        for (j, layers) in p.layers_per_stage.iter_mut().enumerate() {
            if let Some(fixed) = repair_layer_list(layers) {
                warnings.push(format!(
                    "{origin}: pipeline_list[{pi}], stage {j}: layers {layers:?} read as {}..={} (one entry off the contiguous range its size and endpoints give)",
                    fixed[0],
                    fixed[fixed.len() - 1]
                ));
                *layers = fixed;
            }
        }
    }
    let first = f
        .pipeline_list
        .first()
        .ok_or_else(|| AmpError::invalid(origin, "pipeline_list is empty"))?;
    let mut nodes: Vec<NodeSlot> = Vec::new();
    let mut stages: Vec<Stage> = Vec::new();
    for (pi, p) in f.pipeline_list.iter().enumerate() {
        let at_p = format!("{origin}: pipeline_list[{pi}]");
        if p.layers_per_stage != first.layers_per_stage {
            return Err(AmpError::invalid(
                at_p,
                "has a different stage split than pipeline 0; plans with one split per pipeline are not supported",
            ));
        }
        if p.num_stages != p.layers_per_stage.len()
            || p.tmp_per_stage.len() != p.num_stages
            || p.dp.len() != p.num_stages
        {
            return Err(AmpError::invalid(
                at_p,
                format!(
                    "num_stages = {} but layers_per_stage, tmp_per_stage and dp have {}, {} and {} entries",
                    p.num_stages,
                    p.layers_per_stage.len(),
                    p.tmp_per_stage.len(),
                    p.dp.len()
                ),
            ));
        }
        for (j, layers) in p.layers_per_stage.iter().enumerate() {
            let at_s = format!("{at_p}, stage {j}");
            let (Some(&lo), Some(&hi)) = (layers.first(), layers.last()) else {
                return Err(AmpError::invalid(at_s, "holds no layer"));
            };
            if layers.iter().enumerate().any(|(k, &l)| l != lo + k) {
                return Err(AmpError::invalid(
                    at_s,
                    "layers must be consecutive indices",
                ));
            }
            if p.tmp_per_stage[j].len() != p.dp[j] {
                return Err(AmpError::invalid(
                    &at_s,
                    format!(
                        "dp = {} but tmp_per_stage lists {} replicas",
                        p.dp[j],
                        p.tmp_per_stage[j].len()
                    ),
                ));
            }
            if pi == 0 {
                stages.push(Stage {
                    first_layer: lo,
                    end_layer: hi + 1,
                    replicas: Vec::new(),
                });
            }
            for (r, (spans, tp)) in p.tmp_per_stage[j].iter().enumerate() {
                let at_r = format!("{at_s}, replica {r}");
                if *tp == 0 || spans.is_empty() || !tp.is_multiple_of(spans.len()) {
                    return Err(AmpError::invalid(
                        at_r,
                        format!(
                            "tp = {tp} must be a positive multiple of the {} node entries",
                            spans.len()
                        ),
                    ));
                }
                if *tp > amp_core::limits::MAX_GPUS {
                    return Err(AmpError::invalid(
                        at_r,
                        format!(
                            "tp = {tp} is above the limit of {} GPUs",
                            amp_core::limits::MAX_GPUS
                        ),
                    ));
                }
                let per = tp / spans.len();
                let mut group = Vec::with_capacity(*tp);
                for (gpu, gpn, zone) in spans {
                    if *gpn > amp_core::limits::MAX_GPUS_PER_NODE {
                        return Err(AmpError::invalid(
                            &at_r,
                            format!(
                                "a node of {gpn} `{gpu}` is above the limit of {} GPUs per node",
                                amp_core::limits::MAX_GPUS_PER_NODE
                            ),
                        ));
                    }
                    if per > *gpn {
                        return Err(AmpError::invalid(
                            &at_r,
                            format!("needs {per} GPUs on a node of {gpn} `{gpu}`"),
                        ));
                    }
                    let slot = match nodes.iter().position(|n| {
                        &n.gpu == gpu && n.gpus == *gpn && &n.zone == zone && n.gpus - n.used >= per
                    }) {
                        Some(i) => i,
                        None => {
                            nodes.push(NodeSlot {
                                gpu: gpu.clone(),
                                gpus: *gpn,
                                zone: zone.clone(),
                                used: 0,
                            });
                            nodes.len() - 1
                        }
                    };
                    for _ in 0..per {
                        group.push(Device {
                            node: slot,
                            gpu: nodes[slot].used,
                        });
                        nodes[slot].used += 1;
                    }
                }
                stages[j].replicas.push(group);
            }
        }
    }
    let slots: Vec<(&str, usize, &str)> = nodes
        .iter()
        .map(|n| (n.gpu.as_str(), n.gpus, n.zone.as_str()))
        .collect();
    let cluster = sailor_nodes_cluster(
        &slots,
        gpus,
        network,
        format!("{} node(s) of {}", nodes.len(), origin),
    )
    .map_err(|e| AmpError::invalid(origin, e))?;
    let dp: usize = stages.first().map_or(0, |s| s.replicas.len());
    if f.mbs == 0 || dp == 0 || !f.gbs.is_multiple_of(f.mbs) || f.gbs / f.mbs < dp {
        return Err(AmpError::invalid(
            origin,
            format!(
                "gbs = {} must be a multiple of mbs = {} giving at least one micro-batch to each of the {dp} replicas",
                f.gbs, f.mbs
            ),
        ));
    }
    // Sailor's planner picks dp freely (27 replicas for a batch of 1024):
    // the micro-batches are then dealt out as evenly as they go, the first
    // replicas taking one more, and the reader says so.
    let total = f.gbs / f.mbs;
    let (each, extra) = (total / dp, total % dp);
    if extra != 0 {
        warnings.push(format!(
            "{origin}: gbs = {} is not a multiple of mbs x dp = {} x {dp}; its {total} micro-batches are read as {} on each of the first {extra} replicas and {each} on the other {} (uneven data parallelism)",
            f.gbs,
            f.mbs,
            each + 1,
            dp - extra
        ));
    }
    let mut plan = Plan {
        micro_batch: f.mbs,
        num_micro_batches: 0,
        replica_micro_batches: Vec::new(),
        stages,
        // Sailor's runs: 1F1B, no recomputation or sharding; the caller sets
        // the number formats from `llm_info.json` (training_precision).
        setup: amp_core::setup::TrainingSetup::default(),
    };
    amp_core::uneven::set_micro_batches(&mut plan, amp_core::uneven::even_deal(total, dp));
    plan.validate(model, &cluster)
        .map_err(|e| AmpError::invalid(origin, e.to_string()))?;
    let num = |v: &Option<Value>| {
        v.as_ref()
            .and_then(|x| x.as_f64())
            .filter(|x| x.is_finite() && *x > 0.0)
    };
    Ok(SailorRun {
        plan,
        cluster,
        global_batch: f.gbs,
        measured_s: num(&f.real),
        max_mem_bytes: num(&f.max_mem),
        grad_reduce_s: num(&f.red_grads),
        warnings,
    })
}

//! AMP's cost model, as its artifact computes it (NeurIPS 2022, repository
//! DachengLi1/AMP, `src/cost_*.py` and `src/pipe.py`). Kept as a reference
//! mode: `--cost-model amp-paper` reproduces the artifact's predictions.
//!
//! The equations, in the artifact's conventions:
//! - a layer's execution cost per micro-batch is `3 x forward time per sample
//!   x micro-batch` (backward taken as twice the forward), from one profile
//!   for the whole cluster: the GPU-count-weighted mean of the GPU types
//!   present (het_cluster's 0.75 V100 + 0.25 T4);
//! - a cut after layer k costs `volume_k / bandwidth`, with the volume in
//!   4-byte elements (a no-op passes on its predecessor's volume, the
//!   vocabulary projection's output is split by tensor parallelism) over the
//!   slowest link between the tensor-parallel ranks of the two stages,
//!   averaged over data-parallel replicas;
//! - pipeline latency `(B - 1) x slowest stage + sum of stages + cuts`;
//! - plus the gradient all-reduce `2 (dp - 1) / (dp x bandwidth) x
//!   parameters` of the heaviest stage, where the artifact takes the
//!   bandwidth of the ring's closing link (last replica to first);
//! - with a single micro-batch (B = 1) the artifact does not partition: it
//!   splits the transformer blocks evenly, the layers before the first block
//!   joining the first stage and those after the last joining the last.

use crate::cluster::{Cluster, Device};
use crate::cost::{prefix_sums, Breakdown, Candidate, CostModel, Estimate, Inputs, StageTables};
use crate::error::{AmpError, Result};
use crate::model::{LayerKind, Model};
use crate::partition::{pipeline_latency, uniform_split};
use crate::plan::Plan;
use crate::profile::Profile;

/// The artifact counts every tensor as 4-byte elements.
const BYTES_PER_ELEMENT: f64 = 4.0;
/// Forward + backward = 3 x forward.
const FORWARD_BACKWARD_FACTOR: f64 = 3.0;

#[derive(Debug, Clone, Copy, Default)]
pub struct AmpPaper;

/// Per-sample forward time of every layer, blended over `devices` by GPU
/// count.
fn blended_forward(profile: &Profile, cluster: &Cluster, devices: &[Device], tp: usize, layers: usize) -> Result<Vec<f64>> {
    let mut blended = vec![0.0; layers];
    let n = devices.len() as f64;
    let mut types: Vec<(&str, usize)> = Vec::new();
    for d in devices {
        let t = cluster.nodes[d.node].gpu_type.as_str();
        match types.iter_mut().find(|(name, _)| *name == t) {
            Some(e) => e.1 += 1,
            None => types.push((t, 1)),
        }
    }
    for (gpu, count) in types {
        let times = profile.per_sample_forward(gpu, tp).ok_or_else(|| {
            AmpError::MissingProfile(format!(
                "no per-sample forward times for GPU `{gpu}` at tensor-parallel degree {tp}; the amp-paper model needs AMP-style profiles (profiled: {:?})",
                profile.tp_degrees(gpu)
            ))
        })?;
        if times.len() != layers {
            return Err(AmpError::MissingProfile(format!(
                "profile for `{gpu}` at tp {tp} has {} layers, the model {layers}",
                times.len()
            )));
        }
        let w = count as f64 / n;
        for (b, t) in blended.iter_mut().zip(times) {
            *b += w * t;
        }
    }
    Ok(blended)
}

/// Elements each layer passes to the next stage, per sample, as the artifact
/// counts them.
fn cut_volumes(model: &Model, tp: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(model.layers.len());
    let mut last = 0.0;
    for layer in &model.layers {
        let v = match layer.kind {
            LayerKind::Noop => last,
            LayerKind::VocabProjection => layer.output_elems_per_sample as f64 / tp as f64,
            _ => layer.output_elems_per_sample as f64,
        };
        out.push(v);
        last = v;
    }
    out
}

/// Mean over replicas of 1 / (slowest link between stage `a` and `b`).
fn mean_inverse_bandwidth(cluster: &Cluster, a: &[Vec<Device>], b: &[Vec<Device>]) -> f64 {
    let mut acc = 0.0;
    for (i, rep) in a.iter().enumerate() {
        let peer = &b[i % b.len()];
        let slowest = rep
            .iter()
            .enumerate()
            .map(|(k, d)| cluster.link_bytes_per_s(*d, peer[k % peer.len()]))
            .fold(f64::INFINITY, f64::min);
        acc += 1.0 / slowest;
    }
    acc / a.len() as f64
}

/// The artifact's data-parallel all-reduce of the heaviest stage.
fn dp_allreduce_s(model: &Model, cluster: &Cluster, stages: &[(std::ops::Range<usize>, &Vec<Vec<Device>>)]) -> f64 {
    let mut worst: f64 = 0.0;
    for (layers, replicas) in stages {
        let dp = replicas.len();
        if dp < 2 {
            continue;
        }
        let tp = replicas[0].len();
        let params = model.stage_params(layers.clone()) as f64 / tp as f64;
        for t in 0..tp {
            let closing = cluster.link_bytes_per_s(replicas[dp - 1][t], replicas[0][t]);
            let s = 2.0 * (dp as f64 - 1.0) / dp as f64 * params * BYTES_PER_ELEMENT / closing;
            worst = worst.max(s);
        }
    }
    worst
}

impl AmpPaper {
    /// Execution cost per micro-batch of every layer.
    fn layer_costs(&self, inputs: &Inputs, devices: &[Device], tp: usize, micro_batch: usize) -> Result<Vec<f64>> {
        let fwd = blended_forward(inputs.profile, inputs.cluster, devices, tp, inputs.model.num_layers())?;
        Ok(fwd
            .into_iter()
            .map(|f| FORWARD_BACKWARD_FACTOR * f * micro_batch as f64)
            .collect())
    }

    /// The artifact's split for a single micro-batch.
    pub fn block_uniform_split(model: &Model, pp: usize) -> Option<Vec<usize>> {
        let blocks: Vec<usize> = model
            .layers
            .iter()
            .enumerate()
            .filter(|(_, l)| l.kind == LayerKind::TransformerBlock)
            .map(|(i, _)| i)
            .collect();
        let l = model.num_layers();
        if pp > l {
            return None;
        }
        if blocks.len() < pp {
            return Some(uniform_split(l, pp));
        }
        let split = uniform_split(blocks.len(), pp);
        let mut b: Vec<usize> = vec![0];
        b.extend(split[1..pp].iter().map(|&k| blocks[k]));
        b.push(l);
        Some(b)
    }
}

impl CostModel for AmpPaper {
    fn name(&self) -> &'static str {
        "amp-paper"
    }

    fn stage_tables(&self, inputs: &Inputs, c: &Candidate) -> Result<StageTables> {
        let grid = c.grid;
        let all: Vec<Device> = grid.devices.iter().flatten().flatten().copied().collect();
        let costs = self.layer_costs(inputs, &all, grid.tp, c.micro_batch)?;
        let prefix = prefix_sums(costs);
        let volumes = cut_volumes(inputs.model, grid.tp);
        let mbs = c.micro_batch as f64;
        let cut = (0..grid.pp.saturating_sub(1))
            .map(|j| {
                let inv = mean_inverse_bandwidth(inputs.cluster, grid.stage(j), grid.stage(j + 1));
                volumes.iter().map(|v| v * mbs * BYTES_PER_ELEMENT * inv).collect()
            })
            .collect();
        Ok(StageTables {
            compute_prefix: vec![prefix; grid.pp],
            cut,
            memory: None,
        })
    }

    fn prescribed_split(&self, inputs: &Inputs, c: &Candidate) -> Option<Vec<usize>> {
        (c.num_micro_batches == 1).then(|| Self::block_uniform_split(inputs.model, c.grid.pp))?
    }

    fn evaluate(&self, inputs: &Inputs, plan: &Plan) -> Result<Estimate> {
        plan.validate(inputs.model, inputs.cluster)?;
        let tp = plan.uniform_tp().ok_or_else(|| {
            AmpError::invalid(
                "plan",
                "the amp-paper cost model prices one tensor-parallel degree for the whole plan; use the default cost model for mixed degrees",
            )
        })?;
        let devices: Vec<Device> = plan.devices().collect();
        let costs = self.layer_costs(inputs, &devices, tp, plan.micro_batch)?;
        let volumes = cut_volumes(inputs.model, tp);
        let mbs = plan.micro_batch as f64;
        let stage_s: Vec<f64> = plan.stages.iter().map(|s| costs[s.layers()].iter().sum()).collect();
        let cut_s: Vec<f64> = plan
            .stages
            .windows(2)
            .map(|w| {
                let inv = mean_inverse_bandwidth(inputs.cluster, &w[0].replicas, &w[1].replicas);
                volumes[w[0].end_layer - 1] * mbs * BYTES_PER_ELEMENT * inv
            })
            .collect();
        let b = plan.num_micro_batches;
        let pipeline = pipeline_latency(b, &stage_s, &cut_s);
        let stages: Vec<_> = plan.stages.iter().map(|s| (s.layers(), &s.replicas)).collect();
        let dp_s = dp_allreduce_s(inputs.model, inputs.cluster, &stages);
        let total_compute: f64 = stage_s.iter().sum();
        let sends: f64 = cut_s.iter().sum();
        Ok(Estimate {
            iteration_s: pipeline + dp_s,
            breakdown: Breakdown {
                compute_s: total_compute,
                bubble_s: pipeline - total_compute - sends,
                pipeline_send_s: sends,
                tp_comm_s: 0.0,
                dp_allreduce_s: dp_s,
                optimizer_s: 0.0,
            },
            memory: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::builtin;

    #[test]
    fn single_micro_batch_split_matches_the_artifact() {
        let m = builtin::amp_gpt2();
        // het_cluster rank 51 of the artifact: pp 16, B = 1.
        assert_eq!(
            AmpPaper::block_uniform_split(&m, 16).unwrap(),
            vec![0, 4, 6, 8, 10, 12, 14, 16, 18, 19, 20, 21, 22, 23, 24, 25, 30]
        );
        assert_eq!(AmpPaper::block_uniform_split(&m, 2).unwrap(), vec![0, 14, 30]);
        assert_eq!(AmpPaper::block_uniform_split(&m, 1).unwrap(), vec![0, 30]);
    }

    #[test]
    fn noops_carry_the_previous_volume() {
        let m = builtin::amp_gpt2();
        let v = cut_volumes(&m, 2);
        assert_eq!(v[1], (1024 * 1024) as f64);
        assert_eq!(v[28], (1024 * 52256 / 2) as f64);
        assert_eq!(v[29], v[28]);
    }
}

//! AMP's cost model, as its artifact computes it (NeurIPS 2022, repository
//! DachengLi1/AMP, `src/cost_*.py` and `src/pipe.py`). Kept as a reference
//! mode: `--cost-model amp-paper` reproduces the artifact's predictions.
//!
//! The equations, in the artifact's conventions:
//! - a layer's execution cost per micro-batch is `3 x forward time per sample
//!   x micro-batch` (backward taken as twice the forward; no-op layers cost
//!   nothing, as the artifact skips TransGAN's "lambda layers"), from one profile
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
//!   bandwidth of the ring's closing link (last replica to first).
//!
//! The split is amp's own exact partition for every candidate. (With a single
//! micro-batch the artifact did not partition but split the blocks evenly;
//! the exact split is never worse under the same equations.)

use crate::cluster::{Cluster, Device};
use crate::cost::{prefix_sums, Breakdown, Candidate, CostModel, Estimate, Inputs, StageTables, TailTables};
use crate::error::{AmpError, Result};
use crate::model::{LayerKind, Model};
use crate::partition::pipeline_latency;
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
        // No-op layers carry no work in the artifact's accounting.
        Ok(fwd
            .into_iter()
            .zip(&inputs.model.layers)
            .map(|(f, l)| match l.kind {
                LayerKind::Noop => 0.0,
                _ => FORWARD_BACKWARD_FACTOR * f * micro_batch as f64,
            })
            .collect())
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
        // The all-reduce of a stage: seconds per parameter on its slowest
        // (closing) ring link.
        let dp = grid.dp as f64;
        let s_per_param = (0..grid.pp)
            .map(|j| {
                if grid.dp < 2 {
                    return 0.0;
                }
                let reps = grid.stage(j);
                (0..grid.tp)
                    .map(|t| {
                        let closing = inputs.cluster.link_bytes_per_s(reps[grid.dp - 1][t], reps[0][t]);
                        2.0 * (dp - 1.0) / dp * BYTES_PER_ELEMENT / grid.tp as f64 / closing
                    })
                    .fold(0.0, f64::max)
            })
            .collect();
        Ok(StageTables {
            compute_prefix: vec![prefix; grid.pp],
            cut,
            memory: None,
            tail: Some(TailTables {
                s_per_param,
                params: inputs.model.param_table(),
            }),
        })
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
    fn cut_volumes_follow_the_artifact() {
        let m = builtin::amp_gpt2();
        let v = cut_volumes(&m, 2);
        assert_eq!(v[1], (1024 * 1024) as f64);
        // The logits are split over the tensor-parallel ranks.
        assert_eq!(v[28], (1024 * 52256 / 2) as f64);
        // No-ops pass on what they received.
        let t = builtin::amp_transgan();
        let v = cut_volumes(&t, 1);
        assert!(v.iter().all(|&x| x == (1024 * 81) as f64));
    }
}

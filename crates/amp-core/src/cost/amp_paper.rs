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
//! Two splits are offered. [`SplitRule::Artifact`] (the default of this mode)
//! reproduces the artifact's own partitioner, `pipe_ast`, including its
//! quirks: it runs over the layers it prices (no-ops dropped), its dynamic
//! program compares candidates with the cut's send time but stores them
//! without it (so it is not exact), and with a single micro-batch it does not
//! partition at all but splits the blocks evenly. [`SplitRule::Exact`] uses
//! amp's exact partitioner on the same equations, which is never worse and
//! strictly better on some candidates.

use crate::cluster::{Cluster, Device};
use crate::cost::{
    prefix_sums, Breakdown, Candidate, CostModel, Estimate, Inputs, StageTables, TailTables,
};
use crate::error::{AmpError, Result};
use crate::model::{LayerKind, Model, ParamTable};
use crate::partition::{pipeline_latency, uniform_split};
use crate::plan::Plan;
use crate::profile::Profile;
use crate::setup::{
    CrossEntropy, Engine, NumberFormat, NumberFormats, OptimizerStep, Precision, StageExchange,
    TrainingSetup,
};

/// The artifact counts every tensor as 4-byte elements.
const BYTES_PER_ELEMENT: f64 = 4.0;
/// Forward + backward = 3 x forward.
const FORWARD_BACKWARD_FACTOR: f64 = 3.0;

/// The AMP paper's cost model as its artifact computes it (4-byte tensors,
/// backward as twice forward), kept to reproduce the paper's rankings.
#[derive(Debug, Clone, Copy, Default)]
pub struct AmpPaper {
    /// How layers are split into stages.
    pub split: SplitRule,
}

/// How the amp-paper mode splits layers into stages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SplitRule {
    /// The artifact's partitioner, reproduced for parity.
    #[default]
    Artifact,
    /// amp's exact partitioner.
    Exact,
}

/// Per-sample forward time of every layer, blended over `devices` by GPU
/// count.
fn blended_forward(
    profile: &Profile,
    cluster: &Cluster,
    devices: &[Device],
    tp: usize,
    layers: usize,
) -> Result<Vec<f64>> {
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
            AmpError::missing_profile(Some(gpu), Some(tp), format!(
                "no per-sample forward times for GPU `{gpu}` at tensor-parallel degree {tp}; the amp-paper model needs AMP-style profiles (profiled: {:?})",
                profile.tp_degrees(gpu)
            ))
        })?;
        if times.len() != layers {
            return Err(AmpError::missing_profile(
                Some(gpu),
                Some(tp),
                format!(
                    "profile for `{gpu}` at tp {tp} has {} layers, the model {layers}",
                    times.len()
                ),
            ));
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

/// Seconds per parameter of a stage's gradient all-reduce, as the artifact
/// prices it: `2 (dp - 1) / dp` elements per parameter over the ring's
/// closing link (last replica to first), the slowest tensor-parallel rank.
fn allreduce_s_per_param(cluster: &Cluster, replicas: &[Vec<Device>]) -> f64 {
    let dp = replicas.len();
    if dp < 2 {
        return 0.0;
    }
    let tp = replicas[0].len();
    (0..tp)
        .map(|t| {
            let closing = cluster.link_bytes_per_s(replicas[dp - 1][t], replicas[0][t]);
            2.0 * (dp as f64 - 1.0) / dp as f64 * BYTES_PER_ELEMENT / tp as f64 / closing
        })
        .fold(0.0, f64::max)
}

/// Parameters as the artifact counts them: only blocks and embeddings, at
/// `12 h^2` per block and `h v` per embedding or vocabulary projection
/// (tied: once per stage) when the model has a transformer shape, at the
/// layer's own count otherwise.
fn artifact_params(model: &Model) -> ParamTable {
    let params = model
        .layers
        .iter()
        .map(|l| match (&model.shape, l.kind) {
            (Some(s), LayerKind::TransformerBlock) => 12.0 * (s.hidden * s.hidden) as f64,
            (Some(s), LayerKind::Embedding | LayerKind::VocabProjection) => {
                (s.hidden * s.vocab) as f64
            }
            (Some(_), _) => 0.0,
            (
                None,
                LayerKind::TransformerBlock | LayerKind::Embedding | LayerKind::VocabProjection,
            ) => l.params as f64,
            (None, _) => 0.0,
        })
        .collect();
    ParamTable::new(model, params)
}

impl AmpPaper {
    /// Execution cost per micro-batch of every layer.
    fn layer_costs(
        &self,
        inputs: &Inputs,
        devices: &[Device],
        tp: usize,
        micro_batch: usize,
    ) -> Result<Vec<f64>> {
        let fwd = blended_forward(
            inputs.profile,
            inputs.cluster,
            devices,
            tp,
            inputs.model.num_layers(),
        )?;
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

/// The artifact's split with a single micro-batch: the transformer blocks
/// evenly over the stages (earlier stages take the remainder), the layers
/// before the first block joining the first stage and those after a block
/// joining that block's stage.
pub(crate) fn block_uniform_split(model: &Model, pp: usize) -> Option<Vec<usize>> {
    let l = model.num_layers();
    if pp == 0 || pp > l {
        return None;
    }
    let blocks: Vec<usize> = (0..l)
        .filter(|&i| model.layers[i].kind == LayerKind::TransformerBlock)
        .collect();
    if blocks.len() < pp {
        return Some(uniform_split(l, pp));
    }
    let split = uniform_split(blocks.len(), pp);
    let mut b = vec![0];
    b.extend(split[1..pp].iter().map(|&k| blocks[k]));
    b.push(l);
    Some(b)
}

/// The artifact's dynamic program (`pipe_ast` in its `src/pipe.py`), over
/// the layers with `work[i] == true`. `cost_e[i]` is layer i's time per
/// micro-batch, `cut(j, i)` the send after layer i between stages j and j+1.
/// Returns stage boundaries in the full layer list: a boundary falls right
/// after the last priced layer of a stage.
pub(crate) fn artifact_split(
    cost_e: &[f64],
    work: &[bool],
    pp: usize,
    micro_batches: usize,
    cut: impl Fn(usize, usize) -> f64,
) -> Option<Vec<usize>> {
    let idx: Vec<usize> = (0..cost_e.len()).filter(|&i| work[i]).collect();
    let e: Vec<f64> = idx.iter().map(|&i| cost_e[i]).collect();
    let l = e.len();
    if pp == 0 || pp > l {
        return None;
    }
    // Every contiguous sum, computed left to right as the artifact does.
    let sum = |a: usize, b: usize| e[a..b].iter().fold(0.0, |acc, x| acc + x);
    let mut possible = vec![0.0];
    for a in 0..l {
        for b in (a + 1)..=l {
            possible.push(sum(a, b));
        }
    }
    possible.sort_by(f64::total_cmp);
    possible.dedup();
    let p = possible.len();
    let pos = |v: f64| possible.binary_search_by(|x| x.total_cmp(&v)).unwrap();
    let mut sum_idx = vec![vec![0usize; l + 1]; l + 1];
    let mut sums = vec![vec![0.0; l + 1]; l + 1];
    for a in 0..l {
        for b in (a + 1)..=l {
            sums[a][b] = sum(a, b);
            sum_idx[a][b] = pos(sums[a][b]);
        }
    }
    let w = micro_batches.saturating_sub(1) as f64;
    // trace(i, j, m): (cost, previous cut) for work layers 0..=i in j+1
    // stages, given that later stages peak at possible[m]. Computed lazily:
    // only states reachable from (L-1, pp-1, 0) matter.
    struct Trace<'a, C: Fn(usize, usize) -> f64> {
        memo: Vec<Option<(f64, usize)>>,
        pp: usize,
        p: usize,
        w: f64,
        sums: &'a [Vec<f64>],
        sum_idx: &'a [Vec<usize>],
        possible: &'a [f64],
        idx: &'a [usize],
        cut: C,
    }
    impl<C: Fn(usize, usize) -> f64> Trace<'_, C> {
        fn get(&mut self, i: usize, j: usize, m: usize) -> (f64, usize) {
            let key = (i * self.pp + j) * self.p + m;
            if let Some(v) = self.memo[key] {
                return v;
            }
            let v = if j > i {
                (f64::INFINITY, usize::MAX)
            } else if j == 0 {
                (
                    self.w * (self.sums[0][i + 1] - self.possible[m]).max(0.0),
                    usize::MAX,
                )
            } else {
                let mut best = (f64::INFINITY, usize::MAX);
                for c in (j - 1)..i {
                    let cur = self.sums[c + 1][i + 1];
                    let mi = if cur > self.possible[m] {
                        self.sum_idx[c + 1][i + 1]
                    } else {
                        m
                    };
                    let prev = self.get(c, j - 1, mi).0;
                    let comm = (self.cut)(j - 1, self.idx[c]);
                    let with_comm = prev + self.w * (cur - self.possible[m]).max(0.0) + comm;
                    // Compared with the send, stored without it (sic).
                    if with_comm < best.0 {
                        best = (with_comm - comm, c);
                    }
                }
                best
            };
            self.memo[key] = Some(v);
            v
        }
    }
    let mut trace = Trace {
        memo: vec![None; l * pp * p],
        pp,
        p,
        w,
        sums: &sums,
        sum_idx: &sum_idx,
        possible: &possible,
        idx: &idx,
        cut,
    };
    // Walk back from (L-1, pp-1, m = 0), following the same m updates.
    let mut ends = vec![l - 1];
    let (mut i, mut m) = (l - 1, 0);
    for j in (1..pp).rev() {
        let c = trace.get(i, j, m).1;
        if c == usize::MAX {
            return None;
        }
        let cur = sums[c + 1][i + 1];
        if cur > possible[m] {
            m = sum_idx[c + 1][i + 1];
        }
        ends.push(c);
        i = c;
    }
    ends.reverse();
    let mut b = vec![0];
    b.extend(ends[..pp - 1].iter().map(|&k| idx[k] + 1));
    b.push(cost_e.len());
    Some(b)
}

/// The setup the AMP artifact trained with and its equations price: fp16
/// mixed precision with fp16 gradients all-reduced in fp32 (its runner's
/// examples/ds_config.json sets `fp32_allreduce`), 1F1B, no recomputation,
/// no sharding, and the sends of
/// DeepSpeed's pipeline engine, which the artifact ran (a tensor-parallel
/// stage sends each rank's partition; [`Engine::default_pipeline_send`]).
pub fn artifact_setup() -> TrainingSetup {
    TrainingSetup {
        formats: NumberFormats {
            // examples/ds_config.json: `"fp32_allreduce": true`.
            gradient_reduction: Some(NumberFormat::Fp32),
            ..Precision::Fp16.formats()
        },
        pipeline_send: Engine::DeepSpeed.default_pipeline_send(),
        // Megatron-LM's GPT-2 code computes the loss, and steps with
        // apex's (or DeepSpeed's) fused Adam.
        cross_entropy: Some(CrossEntropy::Megatron),
        optimizer_step: Some(OptimizerStep::Fused),
        // DeepSpeed's pipeline engine (0.3, the artifact's) runs its
        // TrainSchedule, two-rank broadcasts as its sends.
        stage_exchange: Some(StageExchange::Lockstep),
        ..TrainingSetup::default()
    }
}

/// The amp-paper equations price only the artifact's setup (its loss and
/// optimizer kernels, which they do not price, aside).
fn check_setup(setup: &TrainingSetup) -> Result<()> {
    let artifact = artifact_setup();
    let plain = TrainingSetup {
        engine: None,
        cross_entropy: artifact.cross_entropy,
        optimizer_step: artifact.optimizer_step,
        // The equations price no exchange.
        stage_exchange: artifact.stage_exchange,
        ..*setup
    };
    if plain != artifact {
        return Err(AmpError::invalid(
            "training setup",
            format!(
                "the amp-paper cost model prices only the AMP artifact's setup (fp16 with an fp32 all-reduce, 1f1b, no recomputation, no sharding, DeepSpeed's scatter-gather sends), not {}; use the amp cost model",
                setup.summary()
            ),
        ));
    }
    Ok(())
}

impl CostModel for AmpPaper {
    fn name(&self) -> &'static str {
        "amp-paper"
    }

    fn stage_tables(&self, inputs: &Inputs, c: &Candidate) -> Result<StageTables> {
        check_setup(c.setup)?;
        let grid = c.grid;
        let all: Vec<Device> = grid.devices.iter().flatten().flatten().copied().collect();
        let costs = self.layer_costs(inputs, &all, grid.tp, c.micro_batch)?;
        let prefix = prefix_sums(costs);
        let volumes = cut_volumes(inputs.model, grid.tp);
        let mbs = c.micro_batch as f64;
        let cut = (0..grid.pp.saturating_sub(1))
            .map(|j| {
                let inv = mean_inverse_bandwidth(inputs.cluster, grid.stage(j), grid.stage(j + 1));
                volumes
                    .iter()
                    .map(|v| v * mbs * BYTES_PER_ELEMENT * inv)
                    .collect()
            })
            .collect();
        let s_per_param = (0..grid.pp)
            .map(|j| allreduce_s_per_param(inputs.cluster, grid.stage(j)))
            .collect();
        Ok(StageTables {
            compute_prefix: vec![prefix; grid.pp],
            cut,
            memory: None,
            tail: Some(TailTables {
                s_per_param,
                params: artifact_params(inputs.model),
            }),
            min_layers: 1,
        })
    }

    fn preferred_split(
        &self,
        inputs: &Inputs,
        c: &Candidate,
        tables: &StageTables,
    ) -> Option<Vec<usize>> {
        if self.split == SplitRule::Exact {
            return None;
        }
        if c.num_micro_batches == 1 {
            return block_uniform_split(inputs.model, c.grid.pp);
        }
        let prefix = &tables.compute_prefix[0];
        let cost_e: Vec<f64> = prefix.windows(2).map(|w| w[1] - w[0]).collect();
        let work: Vec<bool> = inputs
            .model
            .layers
            .iter()
            .map(|l| l.kind != LayerKind::Noop)
            .collect();
        artifact_split(&cost_e, &work, c.grid.pp, c.num_micro_batches, |j, k| {
            tables.cut[j][k]
        })
    }

    /// The exact partitioner minimizes these equations' own latency, and the
    /// artifact's rule is kept as the artifact ran it (parity).
    fn split_is_final(&self) -> bool {
        true
    }

    fn evaluate(&self, inputs: &Inputs, plan: &Plan) -> Result<Estimate> {
        plan.validate(inputs.model, inputs.cluster)?;
        check_setup(&plan.setup)?;
        let tp = plan.uniform_tp().ok_or_else(|| {
            AmpError::invalid(
                "plan",
                "the amp-paper cost model prices one tensor-parallel degree for the whole plan; use the default cost model for mixed degrees",
            )
        })?;
        if plan.is_uneven() {
            return Err(AmpError::invalid(
                "plan",
                "the amp-paper cost model gives every replica the same micro-batches; use the default cost model for plans whose replicas run different numbers (replica_micro_batches)",
            ));
        }
        let devices: Vec<Device> = plan.devices().collect();
        let costs = self.layer_costs(inputs, &devices, tp, plan.micro_batch)?;
        let volumes = cut_volumes(inputs.model, tp);
        let mbs = plan.micro_batch as f64;
        let stage_s: Vec<f64> = plan
            .stages
            .iter()
            .map(|s| costs[s.layers()].iter().sum())
            .collect();
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
        let params = artifact_params(inputs.model);
        let dp_s = plan
            .stages
            .iter()
            .map(|s| {
                allreduce_s_per_param(inputs.cluster, &s.replicas)
                    * params.stage_params(s.first_layer, s.end_layer)
            })
            .fold(0.0, f64::max);
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
        // homogeneous rank 51 of the artifact: pp 16, B = 1.
        assert_eq!(
            block_uniform_split(&m, 16).unwrap(),
            vec![0, 4, 6, 8, 10, 12, 14, 16, 18, 19, 20, 21, 22, 23, 24, 25, 30]
        );
        assert_eq!(block_uniform_split(&m, 2).unwrap(), vec![0, 14, 30]);
        assert_eq!(block_uniform_split(&m, 1).unwrap(), vec![0, 30]);
    }

    #[test]
    fn cut_volumes_follow_the_artifact() {
        let m = builtin::amp_gpt2();
        let v = cut_volumes(&m, 2);
        assert_eq!(v[1], (1024 * 1024) as f64);
        // The logits are split over the tensor-parallel ranks.
        assert_eq!(v[28], (1024 * 52256 / 2) as f64);
        // No-ops pass on what they received: TransGAN's position tables and
        // reshapes carry the previous priced layer's volume.
        let t = builtin::amp_transgan();
        let v = cut_volumes(&t, 1);
        assert_eq!(v[2], v[0]);
        assert_eq!(v[40], v[14]);
        assert_eq!(v[41], (288 * 288 * 16) as f64);
    }
}

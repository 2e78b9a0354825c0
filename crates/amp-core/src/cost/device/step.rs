//! What follows the last backward pass: each pipeline rank's gradient
//! all-reduce over its replicas (tied weights included) and its optimizer
//! step.

use crate::cluster::Device;
use crate::cost::collective;
use crate::cost::Inputs;
use crate::plan::{Plan, Stage};
use crate::schedule::CrowdedAllReduce;
use crate::setup::OptimizerSharding;

use super::*;

/// The data-parallel rings over a pipeline rank's `replicas`, one per
/// tensor-parallel rank of the widest: ring `t` takes rank `t mod tp` of
/// each replica (see [`DeviceModel::allreduce_curves`]).
pub(super) fn data_parallel_rings(replicas: &[Vec<Device>]) -> Vec<Vec<Device>> {
    let tp = replicas.iter().map(Vec::len).max().unwrap_or(0);
    (0..tp)
        .map(|t| replicas.iter().map(|rep| rep[t % rep.len()]).collect())
        .collect()
}

impl DeviceModel {
    /// The gradient all-reduce of each pipeline rank's replicas (one ring
    /// per tensor-parallel rank, all at once) as a function of the size of
    /// one ring's share. Replicas at different tp degrees (a stage served
    /// by A100s at tp 1 and V100s at tp 4) reduce in shards of the largest
    /// degree: ring `t` takes rank `t mod tp` of each replica, so a tp-1
    /// GPU joins every ring and its links carry its whole gradient, shared
    /// among the rings, as its reduction would.
    #[cfg(test)]
    pub(super) fn allreduce_curves(
        &self,
        inputs: &Inputs,
        plan: &Plan,
    ) -> Vec<collective::CostCurve> {
        let kinds = crate::placement::NodeKinds::of(inputs.cluster);
        self.allreduce_curves_with(inputs, plan, None, &kinds)
    }

    /// [`Self::allreduce_curves`], each stage looked up in `memo` first
    /// (and priced into it when missing); `kinds` are the cluster's.
    pub(super) fn allreduce_curves_with(
        &self,
        inputs: &Inputs,
        plan: &Plan,
        memo: Option<&NetMemo>,
        kinds: &crate::placement::NodeKinds,
    ) -> Vec<collective::CostCurve> {
        let ranks = plan.rank_stages();
        // Stages alike up to renaming nodes cost the same.
        let keys = crate::placement::alike_keys(inputs.cluster, kinds, ranks.len(), |j| {
            vec![&ranks[j].replicas]
        });
        let first = crate::placement::firsts(&keys);
        let mut curves: Vec<collective::CostCurve> = Vec::with_capacity(ranks.len());
        for (j, s) in ranks.iter().enumerate() {
            let curve = if first[j] < j {
                curves[first[j]].clone()
            } else {
                let price = || {
                    let rings = data_parallel_rings(&s.replicas);
                    collective::concurrent_allreduce_curve(&self.network(inputs.cluster), &rings)
                };
                match (memo, &keys[j]) {
                    (Some(m), Some(key)) => m.allreduce(key, price),
                    _ => price(),
                }
            };
            curves.push(curve);
        }
        curves
    }

    /// Each pipeline rank's data-parallel rings over its replicas
    /// (`stages[j]`), one per tensor-parallel rank, priced with those of
    /// every rank whose rings cross the same NICs
    /// ([`collective::crowded_reductions`]); `None` where no two ranks'
    /// rings meet at a NIC.
    pub(super) fn crowded_curves(
        &self,
        inputs: &Inputs,
        stages: &[&Vec<Vec<Device>>],
    ) -> Option<Arc<super::CrowdedCurves>> {
        let rings: Vec<Vec<Vec<Device>>> = stages
            .iter()
            .map(|replicas| data_parallel_rings(replicas))
            .collect();
        collective::crowded_reductions(&self.network(inputs.cluster), &rings).map(Arc::new)
    }

    /// The once-per-iteration reductions of `plan`'s ranks that cross
    /// shared NICs, for the schedule to run as they overlap: each rank's
    /// time beside every such rank (tied weights included, as in
    /// [`Self::allreduce_times`]) and the ranks it meets. `None` where none
    /// meet, or where the reduction runs at every micro-batch (one stage).
    pub(super) fn crowded_allreduce(
        &self,
        inputs: &Inputs,
        plan: &Plan,
        net: &NetPrices,
    ) -> Option<CrowdedAllReduce> {
        let crowded = net.crowded.as_ref()?;
        if plan.setup.reduces_every_micro_batch(plan.pp()) || plan.dp() < 2 {
            return None;
        }
        Some(CrowdedAllReduce {
            crowded_s: self.allreduce_times(inputs, plan, &crowded.0, &net.tied),
            peers: crowded.1.clone(),
        })
    }

    /// Per-pipeline-rank all-reduce times, tied weights included, from the
    /// ranks' [`Self::allreduce_curves`].
    pub(super) fn allreduce_times(
        &self,
        inputs: &Inputs,
        plan: &Plan,
        curves: &[collective::CostCurve],
        tied: &TiedCurves,
    ) -> Vec<f64> {
        let model = inputs.model;
        let setup = &plan.setup;
        let tied_g = setup.formats.gradients.bytes();
        // Pipeline rank j's devices (its first chunk's).
        let ranks = plan.rank_stages();
        let mut out: Vec<f64> = ranks
            .iter()
            .enumerate()
            .map(|(j, s)| {
                let tp = s.max_tp();
                let params: u64 = plan
                    .rank_layers(j)
                    .into_iter()
                    .map(|c| model.stage_params(c))
                    .sum();
                super::sharded::once_per_iteration_s(&curves[j], setup, params as f64 / tp as f64)
            })
            .collect();
        let pp = plan.pp().max(1);
        let stage_of = |l: usize| {
            plan.stages
                .iter()
                .position(|s| s.layers().contains(&l))
                .map(|i| i % pp)
        };
        for (l, layer) in model.layers.iter().enumerate() {
            let Some(t) = layer.tied_to.filter(|_| self.options.tied_allreduce) else {
                continue;
            };
            let (Some(a), Some(b)) = (stage_of(t), stage_of(l)) else {
                continue;
            };
            if a == b {
                continue;
            }
            let (sa, sb) = (&ranks[a], &ranks[b]);
            // The gradient as it is: DeepSpeed all-reduces `weight.grad`
            // itself (`allreduce_tied_weight_gradients`), and only its
            // data-parallel buckets go through `fp32_allreduce`'s cast.
            let bytes = layer.params as f64 / sa.max_tp().max(sb.max_tp()) as f64 * tied_g;
            // One pair per (replica, tp rank): rank k of each replica of
            // one stage with rank k of the matching replica of the other.
            let t = tied.at((a, b), bytes, || {
                let mut groups = Vec::new();
                for (r, rep) in sa.replicas.iter().enumerate() {
                    let other = &sb.replicas[r % sb.replicas.len()];
                    for (k, &d) in rep.iter().enumerate() {
                        groups.push(vec![d, other[k % other.len()]]);
                    }
                }
                collective::concurrent_allreduce_curve(&self.network(inputs.cluster), &groups)
            });
            out[a] += t;
            out[b] += t;
        }
        out
    }

    /// Each (GPU type, tp) of `stage`'s groups once
    /// ([`Stage::group_kinds`]), sorted, with its measured optimizer-step
    /// times.
    pub(super) fn step_kinds(inputs: &Inputs, stage: &Stage) -> Vec<StepKind> {
        let mut kinds = stage.group_kinds(inputs.cluster);
        kinds.sort();
        kinds
            .into_iter()
            .map(|(gpu, tp)| StepKind {
                tp,
                at_tp: inputs.profile.optimizer_entry(gpu, tp),
                at_1: inputs.profile.optimizer_entry(gpu, 1),
            })
            .collect()
    }

    /// Optimizer step of pipeline rank `rank`, its [`Self::step_kinds`]
    /// `kinds`: measured where the profile has it, on the slowest of the
    /// stage's replicas (GPU types and tp degree).
    pub(super) fn optimizer_time(
        &self,
        inputs: &Inputs,
        plan: &Plan,
        rank: usize,
        kinds: &[StepKind],
    ) -> f64 {
        let stage: &Stage = &plan.stages[rank];
        let chunks = plan.rank_layers(rank);
        let params: u64 = chunks
            .iter()
            .map(|c| inputs.model.stage_params(c.clone()))
            .sum();
        // Sharded optimizer state: each replica steps its share (also
        // under DeepSpeed's `BF16_Optimizer`, which partitions it).
        let shard = if plan.setup.optimizer_sharding >= OptimizerSharding::Zero1
            || crate::memory::deepspeed_bf16_optimizer(&plan.setup)
        {
            stage.dp().max(1) as f64
        } else {
            1.0
        };
        let times =
            |e: Option<usize>| e.and_then(|i| inputs.profile.entries[i].optimizer_s.as_deref());
        kinds
            .iter()
            .map(|k| {
                let tp = k.tp;
                let estimate = OPTIMIZER_S_PER_PARAM * params as f64 / tp as f64 / shard;
                let (at_tp, at_1) = (times(k.at_tp), times(k.at_1));
                let measured: Option<f64> = chunks
                    .iter()
                    .flat_map(|c| c.clone())
                    .map(|l| {
                        at_tp
                            .and_then(|o| o.get(l).copied())
                            .or_else(|| at_1.and_then(|o| o.get(l)).map(|o| o / tp as f64))
                    })
                    .sum();
                measured.map_or(estimate, |m| m / shard)
            })
            .fold(0.0, f64::max)
    }
}

/// A (GPU type, tp) of a stage's groups ([`DeviceModel::step_kinds`]).
pub(super) struct StepKind {
    tp: usize,
    /// Index in the profile's entries of its measured optimizer-step times
    /// at `tp`, and at tp 1.
    at_tp: Option<usize>,
    at_1: Option<usize>,
}

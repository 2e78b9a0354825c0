//! The data-parallel traffic of sharded and FSDP2 training: what each
//! setup gathers and reduces, and when.
//!
//! - **Once per iteration** (every engine's pipelines, Megatron-LM and
//!   DeepSpeed at any depth, eager PyTorch): the gradients are reduced after
//!   the last backward. Megatron-LM's distributed optimizer (ZeRO-1)
//!   reduce-scatters them and all-gathers the updated weights
//!   (`start_grad_sync` and `start_param_sync` in
//!   megatron/core/distributed/param_and_grad_buffer.py), each half an
//!   all-reduce of its own format: the gradients' (fp32 under bf16 unless
//!   `--grad-reduce-in-bf16`) and the weights' 16 bits; DeepSpeed's ZeRO-1 and its `BF16_Optimizer` all-reduce
//!   them whole, then all-gather ([`deepspeed_gathers_after_step`]), one
//!   and a half. ZeRO-3 all-gathers the
//!   weights (in the format the passes read) for the forward and again for
//!   the backward and reduce-scatters the gradients (Rajbhandari et al.
//!   2020, sec. 7). An all-gather or a reduce-scatter moves half what an
//!   all-reduce of the same tensor does, so each is priced as half of one
//!   ([`once_per_iteration_s`]).
//! - **torchtitan's FSDP2 pipelines** keep each unit unsharded from its first
//!   forward to its last backward (`reshard_after_forward` is off with
//!   pipelining, torchtitan/distributed/fsdp.py, and
//!   `torch.distributed.pipelining` runs every backward without gradient
//!   sync or resharding, then reduces, `perform_reduce_grad` in its
//!   stage.py): one all-gather of the 16-bit weights and one reduction of
//!   the fp32 gradients per iteration, the reduction after the last
//!   backward.
//! - **torchtitan without a pipeline** reduces at every micro-batch: its
//!   `train_step` (torchtitan/trainer.py) runs each gradient-accumulation
//!   step's forward and backward with gradient sync on, so FSDP2
//!   reduce-scatters each unit's gradients (all-reduces them without
//!   sharding) after the unit's backward, in every micro-batch; sharded, it
//!   all-gathers each unit before its forward and again before its backward
//!   (resharded after forward, but for the last unit, the final norm and
//!   vocabulary projection, and a tied embedding's unit, which torchtitan
//!   keeps). FSDP2 issues these on their own streams, so they overlap the
//!   computation: [`overlapped_passes_s`] runs the two as a flow shop.
//! - **DeepSpeed's own engine** (what a one-stage ZeRO-2 or ZeRO-3 plan
//!   runs on: its pipeline engine refuses them) reduces at every
//!   micro-step: with partitioned gradients each backward hook adds the
//!   gradient to a bucket that is reduced when full
//!   (deepspeed/runtime/zero/stage_1_and_2.py
//!   `reduce_ready_partitions_and_remove_grads`, stage3.py the same with no
//!   accumulation boundary at all): ZeRO-3 reduce-scatters it, ZeRO-2
//!   all-reduces it whole (`use_multi_rank_bucket_allreduce`, its default).
//!   ZeRO-2 does it on the computation's stream unless `overlap_comm` (off by default for stage 2, on for 3,
//!   deepspeed/runtime/zero/config.py; the setup's `overlap_grad_reduce`
//!   turns it on), and all-gathers the updated weights after the step;
//!   ZeRO-3 gathers every unit before its forward and again before its
//!   backward, overlapped, but for the units its parameter reuse distance
//!   (1e9 elements by default) keeps gathered into the backward, a suffix
//!   of the layers (`crate::memory::deepspeed_kept_gathered`). Its buckets
//!   (reductions grouped up to 5e8 elements) are not modelled: each layer
//!   is a unit.

use crate::cost::Inputs;
use crate::model::LayerKind;
use crate::plan::Plan;
use crate::setup::{Engine, OptimizerSharding, TrainingSetup};

use super::*;

/// Whether the reduction after the last backward overlaps it as buckets
/// (the setup's `overlap_grad_reduce`) on a plan of `pp` pipeline ranks:
/// not where the traffic runs at every micro-batch, whose overlap
/// [`DeviceModel::reduction_times`] has priced already.
pub(super) fn bucketed_overlap(setup: &TrainingSetup, pp: usize) -> bool {
    setup.overlap_grad_reduce && !setup.reduces_every_micro_batch(pp)
}

/// Seconds of the collectives `setup` runs once per iteration over a
/// stage's replicas, `params` parameters per rank, `allreduce` the cost of
/// an all-reduce over them: an all-reduce of the gradients, or under ZeRO-3
/// a reduce-scatter of them and all-gathers of the weights, each half an
/// all-reduce of its bytes.
pub(super) fn once_per_iteration_s(
    allreduce: &collective::CostCurve,
    setup: &TrainingSetup,
    params: f64,
) -> f64 {
    let (w, g) = (setup.formats.weights.bytes(), gradient_bytes(setup));
    let sharded = setup.optimizer_sharding == OptimizerSharding::Zero3;
    // (bytes per parameter, share of an all-reduce of that many bytes).
    let traffic: &[(f64, f64)] = match (setup.engine == Some(Engine::Torchtitan), sharded) {
        // FSDP2 under a pipeline: one gather, one reduce-scatter.
        (true, true) => &[(g, 0.5), (w, 0.5)],
        // ZeRO-3: a gather for the forward and one for the backward.
        (false, true) => &[(g, 0.5), (w, 1.0)],
        // DeepSpeed's partitioned optimizers: a whole all-reduce, then the
        // updated weights' all-gather.
        _ if deepspeed_gathers_after_step(setup) => &[(g, 1.0), (w, 0.5)],
        // Megatron-LM's distributed optimizer: a reduce-scatter of the
        // gradients, an all-gather of the updated weights.
        _ if setup.engine == Some(Engine::Megatron)
            && setup.optimizer_sharding == OptimizerSharding::Zero1 =>
        {
            &[(g, 0.5), (w, 0.5)]
        }
        _ => &[(g, 1.0)],
    };
    traffic
        .iter()
        .map(|&(b, share)| allreduce.at(params * b) * share)
        .sum()
}

/// Whether DeepSpeed all-gathers `setup`'s updated 16-bit weights after
/// the step, having all-reduced the whole gradients before it: its ZeRO-1
/// (`DeepSpeedZeroOptimizer`, whose `average_tensor` all-reduces each
/// bucket with `use_multi_rank_bucket_allreduce`, its default,
/// deepspeed/runtime/zero/stage_1_and_2.py, and whose `step` ends in
/// `all_gather_dp_groups`) and its `BF16_Optimizer`, which partitions the
/// fp32 master weights the same way after the pipeline engine's
/// `_bf16_reduce_grads` all-reduce (deepspeed/runtime/bf16_optimizer.py,
/// pipe/engine.py). ZeRO-2 does both too, at every micro-step
/// ([`DeviceModel::reduction_times`]).
pub(super) fn deepspeed_gathers_after_step(setup: &TrainingSetup) -> bool {
    setup.engine == Some(Engine::DeepSpeed)
        && (setup.optimizer_sharding == OptimizerSharding::Zero1
            || crate::memory::deepspeed_bf16_optimizer(setup))
}

/// One unit (layer) of a stage as FSDP2 runs it in one micro-batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct UnitTimes {
    /// Forward computation, seconds.
    pub forward_s: f64,
    /// Backward computation, seconds.
    pub backward_s: f64,
    /// All-gather of its weights before its forward, seconds (0 when not
    /// sharded).
    pub gather_s: f64,
    /// Whether its backward gathers them again (resharded after its
    /// forward).
    pub regather: bool,
    /// Reduction of its gradients after its backward, seconds.
    pub reduce_s: f64,
}

/// Seconds from the start of the first forward to the end of the last
/// reduction when `micro_batches` forward and backward passes over `units`
/// run back to back, the computation on one stream and the collectives one
/// at a time on the network, in the order FSDP2 issues them (its gathers
/// and reductions share one process group). Each computation waits for its
/// gather; a gather is issued when the computation before the one that
/// needs it starts (FSDP2 prefetches one unit ahead: a unit's all-gather
/// waits for the previous one's copy-out, `wait_for_unshard` in
/// torch/distributed/fsdp/_fully_shard/_fsdp_param_group.py), so ahead of that
/// computation's reduction, issued when it ends; the next micro-batch's
/// first gather comes after the last reduction. Once the passes repeat (each micro-batch adds the same time, as
/// they do after a few), the rest is extrapolated, so a search over huge
/// batches stays fast.
pub(crate) fn overlapped_passes_s(units: &[UnitTimes], micro_batches: usize) -> f64 {
    passes_end_s(units, micro_batches, true)
}

/// [`overlapped_passes_s`], every micro-batch run when not `extrapolate`.
fn passes_end_s(units: &[UnitTimes], micro_batches: usize, extrapolate: bool) -> f64 {
    if units.is_empty() || micro_batches == 0 {
        return 0.0;
    }
    // Computations in order: forwards 0..n, then backwards n-1..0; each as
    // (seconds, gather before it, reduction after it).
    let order: Vec<(f64, f64, f64)> = units
        .iter()
        .map(|u| (u.forward_s, u.gather_s, 0.0))
        .chain(units.iter().rev().map(|u| {
            let gather = if u.regather { u.gather_s } else { 0.0 };
            (u.backward_s, gather, u.reduce_s)
        }))
        .collect();
    let (mut prev_start, mut prev_end, mut link_free) = (0.0f64, 0.0f64, 0.0f64);
    let mut pending_reduce = 0.0f64;
    let mut ends: Vec<f64> = Vec::new();
    let cap = if extrapolate {
        micro_batches.min(MAX_RUN_MICRO_BATCHES)
    } else {
        micro_batches
    };
    for k in 0..cap {
        for (i, &(t, gather, reduce)) in order.iter().enumerate() {
            // The last backward's reduction is issued before the next
            // micro-batch's forward gathers anything.
            if i == 0 && pending_reduce > 0.0 {
                link_free = link_free.max(prev_end) + pending_reduce;
                pending_reduce = 0.0;
            }
            // Ready at the start of the computation before, so ahead of
            // the reduction that computation issues when it ends.
            let gather_end = if gather > 0.0 {
                let end = link_free.max(prev_start) + gather;
                link_free = end;
                end
            } else {
                0.0
            };
            if pending_reduce > 0.0 {
                link_free = link_free.max(prev_end) + pending_reduce;
            }
            let start = prev_end.max(gather_end);
            prev_start = start;
            prev_end = start + t;
            pending_reduce = reduce;
        }
        ends.push(prev_end.max(link_free.max(prev_end) + pending_reduce));
        // Two equal steps in a row: the passes repeat from here on.
        if extrapolate && k >= 2 {
            let (a, b) = (ends[k] - ends[k - 1], ends[k - 1] - ends[k - 2]);
            if (a - b).abs() <= 1e-12 * a.abs().max(1e-9) {
                break;
            }
        }
    }
    let done = ends.len();
    let last = ends[done - 1];
    if done == micro_batches {
        return last;
    }
    let step = if done >= 2 {
        last - ends[done - 2]
    } else {
        last
    };
    last + (micro_batches - done) as f64 * step
}

/// Micro-batches [`overlapped_passes_s`] runs at most before it
/// extrapolates, should the passes not have repeated by then.
const MAX_RUN_MICRO_BATCHES: usize = 64;

impl DeviceModel {
    /// What each pipeline rank of `plan` spends on data-parallel traffic
    /// after its last backward: the once-per-iteration reduction
    /// ([`Self::allreduce_times`]), or, where the engine gathers and
    /// reduces at every micro-batch
    /// ([`TrainingSetup::reduces_every_micro_batch`]), all
    /// that traffic leaves exposed, the overlapped passes'
    /// ([`overlapped_passes_s`]) time beyond their computation.
    pub(super) fn reduction_times(
        &self,
        inputs: &Inputs,
        plan: &Plan,
        compute: &ComputePrices,
        net: &NetPrices,
        passes: &Passes,
    ) -> Vec<f64> {
        if !plan.setup.reduces_every_micro_batch(plan.pp()) || plan.dp() < 2 {
            return self.allreduce_times(inputs, plan, &net.allreduce, &net.tied);
        }
        let curve = &net.allreduce[0];
        let units = self.fsdp_units(inputs, plan, compute, curve);
        let m = (0..plan.dp())
            .map(|r| plan.micro_batches_of(r))
            .max()
            .unwrap_or(1);
        let overlapped = overlapped_passes_s(&units, m);
        // The passes the simulation runs before the reduction: the slowest
        // replica's (with the pass overhead).
        let computed = passes
            .distinct(plan)
            .into_iter()
            .map(|(_, kind, mr)| {
                let (f, b) = passes.chunk_costs[kind][0];
                mr as f64 * (f + b)
            })
            .fold(0.0, f64::max);
        // ZeRO-2 all-gathers the updated weights after the step, once.
        let setup = &plan.setup;
        let after_step = if setup.optimizer_sharding == OptimizerSharding::Zero2 {
            let tp = plan.rank_stages()[0].max_tp() as f64;
            let params: f64 = plan
                .rank_layers(0)
                .into_iter()
                .map(|c| inputs.model.stage_params(c) as f64)
                .sum();
            curve.at(params / tp * setup.formats.weights.bytes()) / 2.0
        } else {
            0.0
        };
        vec![(overlapped - computed).max(0.0) + after_step]
    }

    /// The one stage of `plan` as units of its engine's collectives, one per
    /// layer: the slowest replica's computation, layer by layer (the
    /// collectives hold every replica to it), and the collectives over the
    /// replicas (one ring per tensor-parallel rank, `allreduce` their cost).
    /// Reductions that do not overlap the computation are added to it.
    fn fsdp_units(
        &self,
        inputs: &Inputs,
        plan: &Plan,
        compute: &ComputePrices,
        allreduce: &collective::CostCurve,
    ) -> Vec<UnitTimes> {
        let model = inputs.model;
        let setup = &plan.setup;
        let tp = plan.rank_stages()[0].max_tp() as f64;
        let gathers = setup.optimizer_sharding == OptimizerSharding::Zero3;
        // Replicated FSDP2 all-reduces, and so does DeepSpeed's ZeRO-2
        // (each full bucket, `use_multi_rank_bucket_allreduce` being its
        // default: [`deepspeed_gathers_after_step`]); FSDP2 and ZeRO-3
        // shard the gradients: a reduce-scatter, half an all-reduce.
        let reduce_share = if setup.optimizer_sharding == OptimizerSharding::Zero3 {
            0.5
        } else {
            1.0
        };
        let beside = setup.reductions_beside_passes();
        let titan = setup.engine == Some(Engine::Torchtitan);
        let (w, g) = (setup.formats.weights.bytes(), gradient_bytes(setup));
        let o = self.options.pass_overhead_s;
        let mut kinds: Vec<usize> = compute.group_costs[0].clone();
        kinds.sort_unstable();
        kinds.dedup();
        // Layers another layer's weights are tied to (a tied embedding).
        let owners: Vec<usize> = model.layers.iter().filter_map(|x| x.tied_to).collect();
        // DeepSpeed's ZeRO-3 keeps a suffix gathered into the backward.
        let reused = crate::memory::deepspeed_kept_gathered(model, setup, tp as usize);
        let layers = plan.rank_layers(0);
        layers
            .iter()
            .flat_map(|c| c.clone())
            .enumerate()
            .map(|(i, l)| {
                let layer = &model.layers[l];
                let slowest = |pick: fn(&LayerCost) -> f64| {
                    kinds
                        .iter()
                        .map(|&k| pick(&compute.layer_costs[k][l]))
                        .fold(0.0, f64::max)
                };
                // A tied layer's weight is its owner's: gathered and
                // reduced with the owner's unit.
                let params = if layer.tied_to.is_some() {
                    0.0
                } else {
                    layer.params as f64 / tp
                };
                // torchtitan keeps its last unit (and a tied embedding's)
                // gathered from its forward to its backward.
                let kept = reused[l]
                    || titan && (layer.kind == LayerKind::VocabProjection || owners.contains(&l));
                let (gather, reduce) = if params > 0.0 {
                    let gather = if gathers {
                        allreduce.at(params * w) / 2.0
                    } else {
                        0.0
                    };
                    (gather, allreduce.at(params * g) * reduce_share)
                } else {
                    (0.0, 0.0)
                };
                let first = if i == 0 { o } else { 0.0 };
                let on_stream = if beside { 0.0 } else { reduce };
                UnitTimes {
                    forward_s: slowest(|c| c.forward_s) + first,
                    backward_s: slowest(|c| c.backward_s) + first + on_stream,
                    gather_s: gather,
                    regather: !kept,
                    reduce_s: reduce - on_stream,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(f: f64, b: f64, gather: f64, reduce: f64) -> UnitTimes {
        UnitTimes {
            forward_s: f,
            backward_s: b,
            gather_s: gather,
            regather: true,
            reduce_s: reduce,
        }
    }

    #[test]
    fn no_traffic_costs_the_computation() {
        let units = vec![unit(1.0, 2.0, 0.0, 0.0); 4];
        assert_eq!(overlapped_passes_s(&units, 3), 36.0);
        assert_eq!(overlapped_passes_s(&units, 1000), 12_000.0);
    }

    #[test]
    fn a_replicated_stage_exposes_only_the_last_reduction() {
        // Reductions shorter than the backward before them hide behind it;
        // the first unit's, reduced last, after the final backward.
        let units = vec![unit(1.0, 2.0, 0.0, 0.5); 4];
        assert!((overlapped_passes_s(&units, 1) - 12.5).abs() < 1e-12);
        // Each micro-batch's last reduction overlaps the next forward.
        assert!((overlapped_passes_s(&units, 5) - 60.5).abs() < 1e-12);
    }

    #[test]
    fn the_network_bounds_the_passes_when_it_is_the_slower() {
        // Per micro-batch: 4 units, each gathered twice (1 s each) and
        // reduced once (1 s), 12 s of network against 4 s of computation.
        let units = vec![unit(0.25, 0.75, 1.0, 1.0); 4];
        for m in [1usize, 2, 7, 100, 1 << 20] {
            let t = overlapped_passes_s(&units, m);
            assert!(t >= 12.0 * m as f64, "{m}: {t}");
            // Only the first gather's wait and the last backward's run
            // beyond the network's busy time.
            assert!(t <= 12.0 * m as f64 + 1.0 + 0.75 + 1e-9, "{m}: {t}");
        }
    }

    #[test]
    fn extrapolation_matches_running_every_micro_batch() {
        // Uneven units, the network and the computation close.
        let units = vec![
            unit(0.3, 0.9, 0.4, 0.8),
            unit(0.5, 1.1, 0.2, 0.3),
            UnitTimes {
                regather: false,
                ..unit(0.7, 1.3, 0.9, 1.7)
            },
        ];
        let mut network_bound = units.clone();
        for u in &mut network_bound {
            u.gather_s *= 3.0;
        }
        for units in [units, network_bound] {
            for m in [1usize, 2, 3, 5, 64, 65, 1000, 4321] {
                let (fast, full) = (
                    overlapped_passes_s(&units, m),
                    passes_end_s(&units, m, false),
                );
                assert!((fast - full).abs() <= 1e-9 * full, "{m}: {fast} vs {full}");
            }
        }
    }

    #[test]
    fn a_kept_unit_is_not_gathered_for_its_backward() {
        let gathered = vec![unit(1.0, 1.0, 3.0, 0.0)];
        let kept = vec![UnitTimes {
            regather: false,
            ..unit(1.0, 1.0, 3.0, 0.0)
        }];
        // The forward waits 3 s for its gather; the backward's gather starts
        // with the forward and ends 2 s after it.
        assert_eq!(overlapped_passes_s(&gathered, 1), 7.0);
        assert_eq!(overlapped_passes_s(&kept, 1), 5.0);
    }
}

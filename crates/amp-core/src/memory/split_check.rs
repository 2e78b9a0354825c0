//! What any split of a layout holds: the partitioner's per-layer tables and
//! the lower bound that skips layouts no split fits.

use super::*;

/// Per layer, what one rank of a tensor-parallel group of degree `tp`
/// holds of it per sample whatever the split, as prefix sums over layers,
/// for [`SplitMemoryCheck`]: [`layer_bytes`] of any range is at least
/// these (the largest transient exactly, a recomputed block's cast beside
/// it bounded below by the larger of the two, parameters bounded below,
/// the outputs DeepSpeed's engine keeps on the last stage left out).
#[derive(Debug)]
pub(crate) struct SplitLayerBytes {
    /// Parameters per rank of layers `0..l`; a layer tied to an earlier
    /// one counts none (a stage holding both counts their weights once,
    /// one holding the later alone counts it whole: none is the least).
    params: Vec<f64>,
    /// Parameters with a 16-bit copy per rank of layers `0..l`
    /// ([`LayerBytes::copied_params`], exact).
    copied_params: Vec<f64>,
    /// Activations stored per sample by layers `0..l`.
    stored: Vec<f64>,
    /// Of those, what the loss keeps, layers `0..l`.
    loss_stored: Vec<f64>,
    /// The largest transient per sample of any range of layers
    /// ([`LayerBytes::workspace`]).
    workspace: crate::cost::RangeMax,
    /// Parameters per rank whose 16-bit copy the blocks drop
    /// ([`LayerBytes::dropped_cast_params`]), layers `0..l`, and the
    /// largest of any range, each layer's; the largest forward transient
    /// per sample of any range ([`LayerBytes::forward_workspace`]).
    dropped: Vec<f64>,
    dropped_largest: crate::cost::RangeMax,
    forward_workspace: crate::cost::RangeMax,
}

impl SplitLayerBytes {
    pub(crate) fn new(
        model: &Model,
        tp: usize,
        setup: &TrainingSetup,
        pipelined: bool,
    ) -> SplitLayerBytes {
        use crate::cost::prefix_sums;
        let n = model.num_layers();
        let t = tp.max(1) as f64;
        let params = prefix_sums(model.layers.iter().map(|l| {
            if l.tied_to.is_some() {
                0.0
            } else {
                l.params as f64 / t
            }
        }));
        // Without autocast every parameter has its copy: the same bound.
        let drop = blocks_drop_casts(model, setup);
        let dropped: Vec<f64> = (0..n)
            .map(|l| dropped_cast_params(model, l, tp, drop))
            .collect();
        let copied_params = if autocast(setup) || (fsdp2(setup) && !pipelined) {
            prefix_sums(model.layers.iter().map(|l| {
                // Under torchtitan a tied projection's copy is the
                // embedding's weights: none, a lower bound.
                if holds_cast_through_passes(l.kind, setup, drop, pipelined)
                    && !(fsdp2(setup) && l.tied_to.is_some())
                {
                    l.params as f64 / t
                } else {
                    0.0
                }
            }))
        } else {
            params.clone()
        };
        let loss_stored =
            prefix_sums((0..n).map(|l| loss_stored_bytes_per_sample(model, l, tp, setup)));
        let stored =
            prefix_sums((0..n).map(|l| stored_activation_bytes_per_sample(model, l, tp, setup)));
        SplitLayerBytes {
            params,
            copied_params,
            stored,
            loss_stored,
            workspace: crate::cost::RangeMax::new(
                (0..n)
                    .map(|l| transient_bytes_per_sample(model, l, tp, setup))
                    .collect(),
            ),
            dropped: prefix_sums(dropped.iter().copied()),
            dropped_largest: crate::cost::RangeMax::new(dropped),
            forward_workspace: crate::cost::RangeMax::new(
                (0..n)
                    .map(|l| forward_transient_bytes_per_sample(model, l, tp, setup))
                    .collect(),
            ),
        }
    }
}

/// Relative slack of [`SplitMemoryCheck`] over a capacity: its sums run
/// in another order than [`plan_fits_within`]'s, so it never refuses a
/// plan that check accepts by a rounding.
pub(super) const SPLIT_BOUND_SLACK: f64 = 1e-9;

/// What [`SplitMemoryCheck::some_split_may_fit`] reads of one layout (a
/// plan's devices per stage and setup), found once for all its candidates.
#[derive(Debug)]
pub(crate) struct SplitMemoryCheck {
    /// The layers' bytes of each tp met.
    tables: Vec<(usize, SplitLayerBytes)>,
    /// Each kind of replica (tp and capacity) of each pipeline rank, the
    /// ranks in order: one list, read once per candidate.
    kinds: Vec<SplitKind>,
    /// `kinds[of_rank[j]..of_rank[j + 1]]`: pipeline rank `j`'s.
    of_rank: Vec<usize>,
    num_layers: usize,
}

/// One kind of replica of a pipeline rank: its replicas, their table, the
/// room for their layers on their GPU, their bytes per parameter through
/// the passes and through the optimizer step.
#[derive(Debug)]
pub(super) struct SplitKind {
    replicas: Vec<u32>,
    table: usize,
    room_bytes: f64,
    /// Through the passes, with no backward run yet and with one
    /// ([`phase_state_bytes`]).
    passes: [StateBytes; 2],
    /// Through the step, with its temporaries as `gradients`' share.
    step: StateBytes,
}

impl SplitMemoryCheck {
    /// The check of `layout`'s devices and setup (its split, micro-batch
    /// size and deal are not read), each device holding `reserve_bytes`;
    /// `capacities` as in [`plan_fits_within`]. `None` for an interleaved
    /// setup (a rank holds several ranges).
    pub(crate) fn new(
        model: &Model,
        layout: &Plan,
        reserve_bytes: f64,
        capacities: &[Vec<f64>],
    ) -> Option<SplitMemoryCheck> {
        if layout.setup.virtual_stages() > 1 {
            return None;
        }
        let setup = &layout.setup;
        let pipelined = layout.pp() > 1;
        let mut tables: Vec<(usize, SplitLayerBytes)> = Vec::new();
        let mut kinds = Vec::new();
        let mut of_rank = vec![0];
        for (j, stage) in layout.rank_stages().iter().enumerate() {
            let dp = stage.dp();
            let (first, step) = phase_state_bytes(setup, dp, false, pipelined);
            let (later, _) = phase_state_bytes(setup, dp, true, pipelined);
            let step = StateBytes {
                gradients: step.gradients + optimizer_step_bytes_per_param(setup, dp),
                ..step
            };
            let mut of_stage: Vec<(usize, f64, Vec<u32>)> = Vec::new();
            for (r, rep) in stage.replicas.iter().enumerate() {
                let (tp, cap) = (rep.len(), capacities[j][r]);
                let r = u32::try_from(r).expect("fewer than 2^32 replicas");
                match of_stage.iter_mut().find(|k| k.0 == tp && k.1 == cap) {
                    Some(k) => k.2.push(r),
                    None => of_stage.push((tp, cap, vec![r])),
                }
            }
            for (tp, cap, replicas) in of_stage {
                let table = match tables.iter().position(|(t, _)| *t == tp) {
                    Some(t) => t,
                    None => {
                        tables.push((tp, SplitLayerBytes::new(model, tp, setup, pipelined)));
                        tables.len() - 1
                    }
                };
                let other = fixed_bytes(model, setup, tp, reserve_bytes);
                kinds.push(SplitKind {
                    replicas,
                    table,
                    room_bytes: cap * (1.0 + SPLIT_BOUND_SLACK) - other,
                    passes: [first, later],
                    step,
                });
            }
            of_rank.push(kinds.len());
        }
        Some(SplitMemoryCheck {
            tables,
            kinds,
            of_rank,
            num_layers: model.num_layers(),
        })
    }

    /// Whether some split of `plan`'s layers over its stages may fit in
    /// memory, `plan` a plan of the layout this check was made of (its
    /// split, micro-batch size and deal its own): `false` only when none
    /// does by [`plan_fits_within`], so a search can drop the candidate
    /// without splitting it. `true` where a stage would be empty or
    /// `plan` is not shaped as the layout.
    pub(crate) fn some_split_may_fit(&self, plan: &Plan) -> bool {
        let (pp, n) = (self.of_rank.len() - 1, self.num_layers);
        let replicas = |j: usize| -> usize {
            self.kinds[self.of_rank[j]..self.of_rank[j + 1]]
                .iter()
                .map(|k| k.replicas.len())
                .sum()
        };
        if plan.pp() != pp
            || pp > n
            || plan.setup.virtual_stages() > 1
            || plan
                .rank_stages()
                .iter()
                .enumerate()
                .any(|(j, s)| s.replicas.len() != replicas(j))
        {
            return true;
        }
        let mbs = plan.micro_batch as f64;
        // Per kind, the samples its fullest replica keeps stored (the one
        // with the most micro-batches in flight) and whether a backward runs
        // before they peak on the replica with the most micro-batches.
        let mut in_flight_samples = Vec::with_capacity(self.kinds.len());
        for j in 0..pp {
            for k in &self.kinds[self.of_rank[j]..self.of_rank[j + 1]] {
                let b = if plan.replica_micro_batches.is_empty() {
                    plan.num_micro_batches
                } else {
                    k.replicas
                        .iter()
                        .map(|&r| plan.micro_batches_of(r as usize))
                        .max()
                        .unwrap_or(0)
                };
                let flight = in_flight(plan.setup.schedule, j, pp, b);
                // The loss's share is kept by fewer: this many fewer samples.
                let loss = (flight - loss_in_flight(plan.setup.schedule, flight)) as f64 * mbs;
                let later = gradients_before_peak(
                    &plan.setup,
                    b,
                    backward_before_peak(plan.setup.schedule, j, pp, b),
                );
                in_flight_samples.push((flight as f64 * mbs, loss, usize::from(later)));
            }
        }
        let fits = |j: usize, first: usize, end: usize| {
            let of_rank = self.of_rank[j]..self.of_rank[j + 1];
            self.kinds[of_rank.clone()]
                .iter()
                .zip(&in_flight_samples[of_rank])
                .all(|(k, &(samples, fewer, later))| {
                    let b = &self.tables[k.table].1;
                    let params = b.params[end] - b.params[first];
                    let copied = b.copied_params[end] - b.copied_params[first];
                    let states =
                        |s: &StateBytes| copied * s.weights + params * (s.gradients + s.optimizer);
                    // Where blocks drop their casts, at least the larger of
                    // the forward's end and the largest cast or workspace
                    // of a block's backward ([`device_bytes`]).
                    let w = k.passes[later].weights;
                    let workspace = (mbs * b.workspace.max(first, end))
                        .max(w * b.dropped_largest.max(first, end))
                        .max(
                            mbs * b.forward_workspace.max(first, end)
                                + w * (b.dropped[end] - b.dropped[first]),
                        );
                    states(&k.passes[later])
                        + samples * (b.stored[end] - b.stored[first])
                        + workspace
                        - fewer * (b.loss_stored[end] - b.loss_stored[first])
                        <= k.room_bytes
                        && states(&k.step) <= k.room_bytes
                })
        };
        // The plan's own split first (most candidates that fit, fit
        // there): one read per stage instead of the sweep.
        let own = plan
            .stages
            .iter()
            .enumerate()
            .all(|(j, s)| s.first_layer < s.end_layer && fits(j, s.first_layer, s.end_layer));
        own || crate::cost::any_split_fits(pp, n, 1, fits)
    }
}

/// Memory tables for the partitioner: stage `j` holding layers
/// `first..end` needs [`StageMemoryTables::passes_bytes`] on its fullest
/// device through the passes (its layers' prefix sums, the largest
/// workspace among them, less the weights they share) and, where the
/// optimizer step has a peak of its own, the step's. The tables are exact
/// for [`plan_memory`] but for ties whose later end holds more than the
/// earlier end's share of its weights: from a stage holding both ends they
/// take the smaller (what keeps a range's bytes growing with it, which the
/// partitioner's sweep needs), where `plan_memory` takes the later end's;
/// so they never accept a split that `plan_memory` rejects. (Until
/// 2026-12-05 they counted tied weights twice on such a stage, which
/// refused a one-stage GPT-3 6.7B on one H200 that `amp eval` priced as
/// fitting, 3.5 GiB of tied embedding against 0.7 of room, and charged
/// every stage the largest block's workspace.) One chunk per rank: an
/// interleaved setup's ranks hold their chunks as its schedule leaves them
/// (`held_bytes_per_sample` in `memory/activations.rs`), which these
/// tables do not follow, so the search prices such plans on Megatron-LM's
/// even split without them.
pub fn stage_memory_tables(
    model: &Model,
    cluster: &Cluster,
    grid: &DeviceGrid,
    micro_batch: usize,
    num_micro_batches: usize,
    setup: &TrainingSetup,
    reserve_bytes: f64,
) -> StageMemoryTables {
    let tp = grid.tp;
    let other = fixed_bytes(model, setup, tp, reserve_bytes);
    let t = tp.max(1) as f64;
    let mbs = micro_batch as f64;
    let n = model.num_layers();
    let pipelined = grid.pp > 1;
    // Each stage's states through its passes ([`phase_state_bytes`]: whether
    // a backward runs before its activations peak) and through the step.
    let flights: Vec<usize> = (0..grid.pp)
        .map(|j| in_flight(setup.schedule, j, grid.pp, num_micro_batches))
        .collect();
    let backward_first: Vec<bool> = (0..grid.pp)
        .map(|j| backward_before_peak(setup.schedule, j, grid.pp, num_micro_batches))
        .collect();
    let passes: Vec<StateBytes> = backward_first
        .iter()
        .map(|&first| {
            let later = gradients_before_peak(setup, num_micro_batches, first);
            phase_state_bytes(setup, grid.dp, later, pipelined).0
        })
        .collect();
    let step_states = phase_state_bytes(setup, grid.dp, true, pipelined).1;
    // Casts the blocks drop ([`blocks_drop_casts`]), bytes per layer,
    // through the passes (the same for every stage).
    let drop = blocks_drop_casts(model, setup);
    let casts: Vec<f64> = (0..n)
        .map(|l| dropped_cast_params(model, l, tp, drop) * passes[0].weights)
        .collect();
    // A layer's bytes per parameter of `states`: all of them where it holds
    // a 16-bit copy of its weights through the phase, else all but the
    // weights.
    let per_param = |l: &crate::model::Layer, states: &StateBytes| {
        if holds_cast_through_passes(l.kind, setup, drop, pipelined) {
            states.total()
        } else {
            states.gradients + states.optimizer
        }
    };
    // Each layer's workspace of a micro-batch, the loss's among them: one
    // at a time ([`LayerBytes::workspace`]), a block's beside the cast it
    // makes anew.
    let workspace = crate::cost::RangeMax::new(
        (0..n)
            .map(|l| mbs * transient_bytes_per_sample(model, l, tp, setup) + casts[l])
            .collect(),
    );
    // Each layer's accumulation workspace, for the stages whose passes
    // run with their gradients there.
    let accumulation = {
        let of_layer: Vec<f64> = (0..n)
            .map(|l| accumulation_bytes(model, l, tp, setup, drop))
            .collect();
        let stages: Vec<bool> = backward_first
            .iter()
            .map(|&first| gradient_workspace(setup, first))
            .collect();
        (of_layer.iter().any(|&a| a > 0.0) && stages.iter().any(|&s| s)).then(|| {
            crate::cost::AccumulationTables {
                workspace: crate::cost::RangeMax::new(of_layer),
                loss_freed: crate::cost::prefix_sums((0..n).map(|l| {
                    loss_freed_before_gradients(
                        mbs,
                        loss_stored_bytes_per_sample(model, l, tp, setup),
                        setup,
                    )
                })),
                stages,
            }
        })
    };
    let forward_end = drop.then(|| crate::cost::ForwardEndTables {
        workspace: crate::cost::RangeMax::new(
            (0..n)
                .map(|l| mbs * forward_transient_bytes_per_sample(model, l, tp, setup))
                .collect(),
        ),
        casts: crate::cost::prefix_sums(casts.iter().copied()),
    });
    let step_per_param = optimizer_step_bytes_per_param(setup, grid.dp);
    let flattened = flattened_bucket_bytes_per_param(model, setup, tp);
    let mut prefix_bytes = Vec::with_capacity(grid.pp);
    let mut fixed_bytes = Vec::with_capacity(grid.pp);
    let mut capacity_bytes = Vec::with_capacity(grid.pp);
    // The step's own peak: states and its temporaries, the same for every
    // stage (no activations in flight). Without temporaries it is its own
    // only where it holds states the passes do not (gradients, under
    // autocast).
    // What DeepSpeed's engine keeps of earlier micro-batches, charged to
    // the last layer: the stage holding it pays it.
    let retained = retained_outputs(num_micro_batches)
        * mbs
        * retained_output_bytes_per_sample(model, tp, setup);
    let end_buffer = backward_end_buffer_bytes(model, setup, tp);
    // DeepSpeed's flat copy of a bucket of every layer's gradients (a tied
    // layer's too: a stage holding only the later end reduces it).
    let reduction_per_param = reduction_copy_bytes_per_param(setup, grid.dp);
    let own_step = step_per_param > 0.0
        || flattened > 0.0
        || end_buffer > 0.0
        || reduction_per_param > 0.0
        || passes.iter().any(|p| *p != step_states);
    let step = own_step.then(|| crate::cost::StepTables {
        // The pipe buffers' outputs stay through the step, charged to the
        // last layer as through the passes.
        states: crate::cost::prefix_sums(model.layers.iter().enumerate().map(|(i, l)| {
            let kept = if i + 1 == n { retained } else { 0.0 };
            l.params as f64 / t * per_param(l, &step_states)
                + fp8_weight_copy_bytes(l, tp, setup)
                + kept
        })),
        temporaries: crate::cost::prefix_sums(
            model
                .layers
                .iter()
                .map(|l| l.params as f64 / t * step_per_param),
        ),
        backward_end: (casts_at_backward_end(setup) > 0.0 || flattened > 0.0).then(|| {
            crate::cost::prefix_sums(model.layers.iter().map(|l| {
                let casts = if holds_weight_copy(l.kind, setup) {
                    casts_at_backward_end(setup)
                } else {
                    0.0
                };
                // A tied layer's gradient is its owner's, flattened once.
                let flat = if l.tied_to.is_some() { 0.0 } else { flattened };
                l.params as f64 / t * (casts + flat)
            }))
        }),
        end_buffer,
        reduction_copy: (reduction_per_param > 0.0).then(|| crate::cost::ReductionCopyTables {
            bytes: crate::cost::prefix_sums(
                model
                    .layers
                    .iter()
                    .map(|l| l.params as f64 / t * reduction_per_param),
            ),
            cap_bytes: reduction_copy_bytes(
                setup,
                grid.dp,
                f64::INFINITY,
                largest_layer_params(model, tp),
            ),
        }),
        fixed: other,
    });
    // Each layer's stored bytes per sample and the loss's share of them,
    // the same in every stage.
    let of_layer: Vec<(f64, f64)> = (0..n)
        .map(|l| {
            (
                stored_activation_bytes_per_sample(model, l, tp, setup),
                loss_stored_bytes_per_sample(model, l, tp, setup),
            )
        })
        .collect();
    for j in 0..grid.pp {
        let flight = flights[j] as f64;
        let loss_flight = loss_in_flight(setup.schedule, flights[j]) as f64 - flight;
        let per_layer =
            model
                .layers
                .iter()
                .zip(&of_layer)
                .enumerate()
                .map(|(l, (layer, &(stored, loss)))| {
                    let kept = if l + 1 == n { retained } else { 0.0 };
                    layer.params as f64 / t * per_param(layer, &passes[j])
                        + fp8_weight_copy_bytes(layer, tp, setup)
                        + flight * mbs * stored
                        + kept
                        + loss_flight * mbs * loss
                });
        prefix_bytes.push(crate::cost::prefix_sums(per_layer));
        fixed_bytes.push(other);
        let cap = grid.devices[j]
            .iter()
            .flatten()
            .filter_map(|d| cluster.nodes.get(d.node).and_then(|n| n.gpu_memory_bytes))
            .map(|b| b as f64)
            .fold(f64::INFINITY, f64::min);
        capacity_bytes.push(cap);
    }
    // Tied weights, counted in both layers' prefixes: a stage holding both
    // holds them once. Taking off at most the earlier end's weights, shared
    // among the layers tied to it, keeps a range's bytes growing with it
    // both ways (what the partitioner's sweep needs); with one tie of equal
    // ends, as the zoo's embeddings, it is exact. Through the passes the
    // least any stage holds once.
    let shared = model
        .layers
        .iter()
        .enumerate()
        .filter_map(|(l, layer)| {
            let earlier = layer.tied_to?;
            let ties = model
                .layers
                .iter()
                .filter(|x| x.tied_to == Some(earlier))
                .count();
            let params =
                (layer.params as f64).min(model.layers[earlier].params as f64 / ties as f64) / t;
            let kind = model.layers[earlier].kind;
            let once = passes
                .iter()
                .map(|p| tied_state_bytes(kind, setup, p, pipelined))
                .fold(f64::INFINITY, f64::min);
            Some(crate::cost::SharedWeights {
                layer: l,
                tied_to: earlier,
                bytes: params * once,
                step_bytes: params * tied_state_bytes(kind, setup, &step_states, pipelined),
                step_temporaries_bytes: params * step_per_param,
                step_transient_bytes: (layer.params.min(model.layers[earlier].params)) as f64 / t
                    * tied_gradient_bytes_per_param(kind, setup),
                reduction_copy_bytes: params * reduction_per_param,
            })
        })
        .collect();
    StageMemoryTables {
        prefix_bytes,
        fixed_bytes,
        workspace,
        capacity_bytes,
        step,
        shared,
        forward_end,
        accumulation,
    }
}

//! Per-device memory: what one GPU holds at its peak during an iteration.
//!
//! A device of pipeline stage `i` (0-based, `pp` stages) running a tensor
//! parallel group of degree `t` holds
//!
//! - **model states** of the stage's layers, divided by `t` (tied weights
//!   once per stage, [`Model::stage_params`]): with mixed precision (fp16 or
//!   bf16 weights, fp32 master weights and Adam) 2 bytes of weights, 2 of
//!   gradients (4 in bf16, which engines accumulate in fp32:
//!   [`crate::setup::Precision::formats`]) and 12 of optimizer state (4
//!   master + 4 momentum + 4 variance) per parameter; in fp32, 4 + 4 + 8.
//!   With data parallelism the gradients are held twice
//!   ([`DP_GRADIENT_COPIES`]: the all-reduce buffer), but once on
//!   Megatron-LM (its `main_grad`s are views into that buffer) and on
//!   DeepSpeed's pipeline engine without ZeRO (which flattens them only to
//!   reduce them, `flattens_at_reduction`). With ZeRO-1
//!   the optimizer state is sharded over the data-parallel replicas
//!   (divided by `dp`). Engines hold them all
//!   through the whole iteration; eager PyTorch under autocast holds them
//!   by phase (`phase_state_bytes`): no gradients through the passes
//!   before its first backward (`zero_grad()` set them to None; DDP's
//!   bucket only), its 16-bit weights being autocast's casts, made by the
//!   forward of every layer but an embedding and freed by the backward, so
//!   none through the step; torchtitan is FSDP2 on every plan (`fsdp2`): 16
//!   bytes per parameter of its shard (over `dp` with ZeRO-3, else over one
//!   replica), its unsharded 16-bit copies through the passes where they
//!   stay (the projection's in one stage, every layer's in a pipeline, with
//!   the gradients a pipeline stage accumulates unsharded);
//! - **stored activations** of the micro-batches in flight: under 1F1B stage
//!   `i` keeps `min(pp - i, B)` micro-batches (PipeDream-Flush: `pp - i - 1`
//!   warm-up forwards plus the one whose backward comes next), under GPipe
//!   all `B`. Per sample and layer, from
//!   [`crate::model::Layer::stored_activation_elems_per_sample`] when the model gives it
//!   (a block's count divided by `t` but for the `5 s h` (`4 s h` without
//!   dropout) every rank keeps whole without sequence parallelism, when the
//!   architecture says whether it has dropout),
//!   else from the formula of Korthikanti et al., "Reducing Activation
//!   Recomputation in Large Transformer Models" (MLSys 2023), eq. 2 with
//!   tensor parallelism: a block keeps `s h (10 + 24/t + 5 a s / (h t))` bytes
//!   per sample in 16-bit training without recomputation (`s` sequence, `h`
//!   hidden, `a` heads; the 10 are the layer-norm inputs and dropout masks
//!   every rank keeps whole, the rest is sharded by `t`); with full
//!   recomputation only the block input, `2 s h` bytes; under eager
//!   PyTorch's autocast ([`crate::setup::NumberFormats::residual_stream`]
//!   fp32) the block input and each of the two norms' inputs are fp32,
//!   `2 s h` bytes more per norm than the 16-bit count;
//!   The loss keeps its fp32 log-probabilities or softmax, 4 bytes per
//!   logit whatever the activations' width, for one micro-batch at a time
//!   but under GPipe (`loss_stored_bytes_per_sample`);
//! - **transient buffers** of the one micro-batch being processed: around
//!   the loss, what its kernel holds beside the stored softmax
//!   ([`crate::setup::CrossEntropy`]): Megatron-LM's in-place loss a 16-bit
//!   copy of the logits or of their gradient
//!   ([`LOGITS_TRANSIENT_BYTES_PER_ELEM`] bytes per logit per rank),
//!   PyTorch's `cross_entropy` two fp32 gradients
//!   ([`PYTORCH_LOSS_TRANSIENT_BYTES_PER_LOGIT`]); or, the larger (the
//!   loss's backward frees its own before the first block's begins), in
//!   the backward of an attention block the gradients of the attention
//!   probabilities and scores, `2 x 2 a s^2 / t` bytes (none with fused
//!   attention, whose stored and recomputed activations hold no `s x s`
//!   term either), with full recomputation beside the block's rebuilt
//!   activations and, under eager autocast, its casts
//!   (`blocks_drop_casts`; the other blocks' casts then live only until
//!   the forward's end, a peak of its own);
//! - on the last stage under DeepSpeed's pipeline engine (the lockstep
//!   exchange), the outputs of up to two earlier micro-batches, which its
//!   pipe buffers keep after their backward (`retained_output_bytes_per_sample`,
//!   `retained_outputs`): for a language model its fp32 logits;
//! - or, when the step's states and temporaries hold more than the passes'
//!   states and activations, the **optimizer step's temporaries**, a peak
//!   of its own after every activation is freed: PyTorch's foreach Adam(W)
//!   allocates `sqrt(v)`, 4 bytes per parameter of its shard
//!   (`optimizer_step_bytes_per_param`); fused steps nothing; or, the
//!   larger, what the end of the backward holds: eager PyTorch's second
//!   gradient of a tied embedding (`tied_gradient_bytes_per_param`), the
//!   copy DeepSpeed ZeRO-2 flattens its one bucket into
//!   (`flattened_bucket_bytes_per_param`), DeepSpeed ZeRO-1's second
//!   reduction bucket (`backward_end_buffer_bytes`), or the flat copy (and
//!   fp32 cast) of its pipeline engine's all-reduce without ZeRO, which the
//!   passes never hold (`reduction_copy_bytes`); beside either, the
//!   outputs DeepSpeed's pipe buffers still keep;
//! - what the model keeps on **every GPU outside its layers**
//!   ([`Model::resident_bytes_per_device`], e.g. the AMP artifact's TransGAN
//!   discriminator), whatever the stage;
//! - the **engine's own buffers** (`engine_buffer_bytes`): DeepSpeed's
//!   ZeRO-1 (its first) and ZeRO-3 gradient-reduction buckets and
//!   ZeRO-3's prefetch bucket, at their default sizes, and what ZeRO-3
//!   holds gathered: the layer it computes, or at the backward's start the
//!   layers its reuse distance kept (`deepspeed_kept_gathered`); ZeRO-2's
//!   buckets (with the flattened copy of one where it flushes inside the
//!   backward) live from the backward's first gradient to its end only
//!   (`deepspeed_backward_bucket_bytes`): a workspace of the backward
//!   beside a layer's weight gradient (`accumulation_bytes`), which the
//!   forward's end and the loss's backward do not hold, and at its end;
//! - a **framework reserve** (`reserve_bytes`, the fitted
//!   [`crate::cost::Calibration::framework_reserve_bytes`]): CUDA context,
//!   communication buffers, workspaces and allocator fragmentation: what
//!   the framework cannot give back. The free blocks PyTorch's caching
//!   allocator keeps are not in the peak: it frees them before it reports
//!   out of memory, so they do not decide what fits; a device reading
//!   shows them on top ([`crate::cost::Calibration::allocator_cache_bytes`]).
//!
//! A device's capacity is its node's `gpu_memory_bytes`; unknown capacity
//! means no constraint.
//!
//! Hand-worked example (the unit test `hand_worked_example` checks it): one
//! transformer block layer with `s = 4`, `h = 8`, `a = 2`, 1000 parameters,
//! no vocabulary layer, tensor parallelism 2, fp16 mixed precision, 1F1B with
//! pp = 2, B = 4, micro-batch 3, on stage 0:
//! - states: 1000 / 2 = 500 parameters per rank: weights 1000 bytes,
//!   gradients 1000, optimizer 6000;
//! - activations: in flight min(2 - 0, 4) = 2 micro-batches of 3 samples;
//!   per sample `4 x 8 x (10 + 24/2 + 5 x 2 x 4 / (8 x 2))` = 32 x 24.5 =
//!   784 bytes; 2 x 3 x 784 = 4704 bytes;
//! - transient: attention gradients 4 x 2 x 16 / 2 = 64 bytes per sample,
//!   x 3 = 192 bytes;
//! - peak = 8000 + 4704 + 192 + reserve.

use crate::cluster::{Cluster, Device};
use crate::cost::{DeviceMemory, StageMemoryTables};
use crate::model::{LayerKind, Model};
use crate::placement::DeviceGrid;
use crate::plan::Plan;
use crate::schedule::Schedule;
use crate::setup::{
    CrossEntropy, OptimizerSharding, OptimizerStep, Recompute, StageExchange, TrainingSetup,
};

mod activations;
mod split_check;
mod states;
#[cfg(test)]
mod tests;

use activations::*;
use states::*;

pub use activations::{
    LOGITS_TRANSIENT_BYTES_PER_ELEM, LOSS_STORED_BYTES_PER_LOGIT,
    PYTORCH_LOSS_FORWARD_TRANSIENT_BYTES_PER_LOGIT, PYTORCH_LOSS_TRANSIENT_BYTES_PER_LOGIT,
};
pub use split_check::stage_memory_tables;
pub(crate) use split_check::SplitMemoryCheck;
pub(crate) use states::{deepspeed_bf16_optimizer, deepspeed_kept_gathered};
pub use states::{
    DEEPSPEED_MAX_REUSE_DISTANCE_ELEMS, DEEPSPEED_PREFETCH_BUCKET_ELEMS,
    DEEPSPEED_REDUCE_BUCKET_ELEMS, DP_GRADIENT_COPIES,
};

/// Bytes of one device: weights, gradients, optimizer state, activations,
/// reserve.
type DeviceBytes = (f64, f64, f64, f64, f64);

/// Memory of one device of a stage (the tests' way in: the searches read
/// [`layer_bytes`] once per stage and tp, [`device_bytes`] per kind).
#[cfg(test)]
#[allow(clippy::too_many_arguments)]
fn device_memory(
    model: &Model,
    chunks: &[std::ops::Range<usize>],
    tp: usize,
    dp: usize,
    stage: usize,
    pp: usize,
    plan_mbs: usize,
    b: usize,
    setup: &TrainingSetup,
    reserve_bytes: f64,
) -> DeviceBytes {
    let layers = layer_bytes(model, chunks, tp, setup, pp > 1);
    device_bytes(
        &layers,
        setup,
        (dp, stage, pp),
        (plan_mbs, b),
        fixed_bytes(model, setup, tp, reserve_bytes),
    )
}

/// What a device's memory reads of its stage's layers at tensor-parallel
/// degree `tp`, whatever its micro-batches ([`device_memory`]).
struct LayerBytes {
    /// Parameters per device.
    params: f64,
    /// Of those, the parameters with a 16-bit copy ([`holds_weight_copy`];
    /// a tied projection's count, though its weights are the embedding's)
    /// held through the passes, the blocks' that drop it aside.
    copied_params: f64,
    /// The parameters whose 16-bit copy lives only through the forward
    /// and their block's backward ([`dropped_cast_params`]).
    dropped_cast_params: f64,
    /// Per layer, its transient bytes per sample and its
    /// [`dropped_cast_params`]: what its backward holds beside the rest,
    /// where blocks drop their casts (else empty: [`Self::workspace`]).
    backward_workspaces: Vec<(f64, f64)>,
    /// The largest forward transient bytes per sample of its layers
    /// ([`forward_transient_bytes_per_sample`]), held at the forward's end.
    forward_workspace: f64,
    /// The largest [`accumulation_bytes`] of its layers: a workspace of
    /// the passes where the gradients are there before they run.
    accumulation: f64,
    /// What the end of the backward holds beside the states: tied weights'
    /// second gradient (`tied_gradient_bytes_per_param`) where the stage
    /// holds both layers, and DeepSpeed ZeRO-2's flattened bucket
    /// (`flattened_bucket_bytes_per_param`).
    backward_end: f64,
    /// The engine's buffers at the end of the backward beside those
    /// (`backward_end_buffer_bytes`): DeepSpeed ZeRO-1's second bucket,
    /// ZeRO-2's buckets.
    end_buffer: f64,
    /// Activations stored per sample.
    stored: f64,
    /// Of those, what the loss keeps (`loss_stored_bytes_per_sample`).
    loss_stored: f64,
    /// The same two per model chunk where the stage holds several
    /// (interleaved; else empty): which chunks it holds changes as its
    /// schedule runs ([`held_bytes_per_sample`]).
    chunk_stored: Vec<(f64, f64)>,
    /// The largest transient bytes per sample of any of its layers
    /// ([`transient_bytes_per_sample`]): one layer's backward runs at a
    /// time, the loss's among them, and frees its workspace before the next
    /// layer's starts.
    workspace: f64,
    /// Per earlier micro-batch, the output bytes per sample DeepSpeed's
    /// engine keeps (`retained_output_bytes_per_sample`) when the stage
    /// holds the model's last layer; else 0.
    retained: f64,
    /// Bytes of Transformer Engine's cached FP8 weight copies of its
    /// blocks under FP8 ([`FP8_WEIGHT_COPY_BYTES_PER_PARAM`]), held
    /// through the passes and the step; else 0.
    fp8_weight_copies: f64,
    /// The parameters a rank holds of the model's largest layer, what a
    /// reduction bucket may hold beyond its limit
    /// ([`reduction_copy_bytes`]).
    largest_layer_params: f64,
}

fn layer_bytes(
    model: &Model,
    chunks: &[std::ops::Range<usize>],
    tp: usize,
    setup: &TrainingSetup,
    pipelined: bool,
) -> LayerBytes {
    let params = chunks
        .iter()
        .map(|c| model.stage_params(c.clone()) as f64)
        .sum::<f64>()
        / tp.max(1) as f64;
    let layers = || chunks.iter().flat_map(|c| c.clone());
    let copied_params = if autocast(setup) {
        layers()
            .map(|l| &model.layers[l])
            .filter(|l| holds_weight_copy(l.kind, setup))
            .map(|l| l.params as f64)
            .sum::<f64>()
            / tp.max(1) as f64
    } else if fsdp2(setup) && !pipelined {
        // The projection's unit, its weights counted once when tied.
        layers()
            .map(|l| &model.layers[l])
            .filter(|l| holds_cast_through_passes(l.kind, setup, false, false))
            .map(|l| l.params as f64)
            .sum::<f64>()
            / tp.max(1) as f64
    } else {
        params
    };
    let drop = blocks_drop_casts(model, setup);
    let dropped: f64 = layers()
        .map(|l| dropped_cast_params(model, l, tp, drop))
        .sum();
    let copied_params = copied_params - dropped;
    let backward_workspaces = if drop {
        layers()
            .map(|l| {
                (
                    transient_bytes_per_sample(model, l, tp, setup),
                    dropped_cast_params(model, l, tp, drop),
                )
            })
            .collect()
    } else {
        Vec::new()
    };
    let forward_workspace = layers()
        .map(|l| forward_transient_bytes_per_sample(model, l, tp, setup))
        .fold(0.0f64, f64::max);
    let accumulation = layers()
        .map(|l| accumulation_bytes(model, l, tp, setup, drop))
        .fold(0.0f64, f64::max);
    let held = |l: usize| chunks.iter().any(|c| c.contains(&l));
    // The shared matrix: the later layer's weights, which the earlier's
    // hold (with a position table beside them in an embedding); and a
    // flattened bucket of the stage's gradients.
    let backward_end = layers()
        .filter_map(|l| {
            let later = &model.layers[l];
            let earlier = &model.layers[later.tied_to.filter(|&e| held(e))?];
            Some(
                later.params.min(earlier.params) as f64 / tp.max(1) as f64
                    * tied_gradient_bytes_per_param(earlier.kind, setup),
            )
        })
        .sum::<f64>()
        + params * flattened_bucket_bytes_per_param(model, setup, tp);
    let loss_stored: f64 = layers()
        .map(|l| loss_stored_bytes_per_sample(model, l, tp, setup))
        .sum();
    let stored: f64 = layers()
        .map(|l| stored_activation_bytes_per_sample(model, l, tp, setup))
        .sum();
    let chunk_stored = if chunks.len() > 1 {
        chunks
            .iter()
            .map(|c| {
                c.clone().fold((0.0, 0.0), |(s, f), l| {
                    (
                        s + stored_activation_bytes_per_sample(model, l, tp, setup),
                        f + loss_stored_bytes_per_sample(model, l, tp, setup),
                    )
                })
            })
            .collect()
    } else {
        Vec::new()
    };
    let workspace = layers()
        .map(|l| transient_bytes_per_sample(model, l, tp, setup))
        .fold(0.0f64, f64::max);
    let fp8_weight_copies = layers()
        .map(|l| fp8_weight_copy_bytes(&model.layers[l], tp, setup))
        .sum();
    let retained = if layers().any(|l| l + 1 == model.num_layers()) {
        retained_output_bytes_per_sample(model, tp, setup)
    } else {
        0.0
    };
    LayerBytes {
        params,
        copied_params,
        dropped_cast_params: dropped,
        backward_workspaces,
        forward_workspace,
        accumulation,
        backward_end,
        end_buffer: backward_end_buffer_bytes(model, setup, tp),
        stored,
        loss_stored,
        chunk_stored,
        workspace,
        retained,
        fp8_weight_copies,
        largest_layer_params: largest_layer_params(model, tp),
    }
}

/// [`LayerBytes::largest_layer_params`] of `model` at tensor-parallel
/// degree `tp` (the partitioner's tables take the same).
pub(super) fn largest_layer_params(model: &Model, tp: usize) -> f64 {
    model.layers.iter().map(|l| l.params).max().unwrap_or(0) as f64 / tp.max(1) as f64
}

/// What every device holds besides its stage's own memory: the framework's
/// `reserve_bytes`, what the model keeps on every GPU outside its layers
/// ([`Model::resident_bytes_per_device`]) and the engine's own buffers
/// under `setup` at tensor-parallel degree `tp` ([`engine_buffer_bytes`]);
/// all read as "other" memory.
fn fixed_bytes(model: &Model, setup: &TrainingSetup, tp: usize, reserve_bytes: f64) -> f64 {
    reserve_bytes
        + model.resident_bytes_per_device.unwrap_or(0) as f64
        + engine_buffer_bytes(model, setup, tp)
}

/// [`device_memory`] from its stage's [`layer_bytes`]: pipeline rank
/// `stage` of `pp` at data-parallel degree `dp`, `b` micro-batches of
/// `plan_mbs` samples.
fn device_bytes(
    layers: &LayerBytes,
    setup: &TrainingSetup,
    (dp, stage, pp): (usize, usize, usize),
    (plan_mbs, b): (usize, usize),
    reserve_bytes: f64,
) -> DeviceBytes {
    let (params, copied) = (layers.params, layers.copied_params);
    let backward_first = backward_before_peak(setup.schedule, stage, pp, b);
    let (passes, step) = phase_state_bytes(
        setup,
        dp,
        gradients_before_peak(setup, b, backward_first),
        pp > 1,
    );
    let mbs = plan_mbs as f64;
    // Where blocks drop their casts, the forward's end (every cast cached)
    // or a block's backward (its own recomputed), whichever holds more.
    let dropped_casts = if layers.dropped_cast_params > 0.0 {
        let w = passes.weights;
        let backward = layers
            .backward_workspaces
            .iter()
            .map(|&(x, c)| mbs * x + c * w)
            .fold(0.0f64, f64::max);
        let forward = mbs * layers.forward_workspace + layers.dropped_cast_params * w;
        backward.max(forward) - mbs * layers.workspace
    } else {
        0.0
    };
    // Where the gradients are there through the passes, or FSDP2 reduces a
    // unit's, a layer's gradient workspace, where it holds more. It comes
    // in a layer's backward, after the loss's of the same micro-batch has
    // freed what the loss kept ([`loss_freed_before_gradients`]).
    let accumulating = if gradient_workspace(setup, backward_first) {
        (layers.accumulation
            - loss_freed_before_gradients(mbs, layers.loss_stored, setup)
            - (mbs * layers.workspace + dropped_casts))
            .max(0.0)
    } else {
        0.0
    };
    let held = held_bytes_per_sample(
        setup.schedule,
        (stage, pp, b),
        (layers.stored, layers.loss_stored),
        &layers.chunk_stored,
    );
    let activations = mbs * held
        + mbs * (layers.workspace + retained_outputs(b) * layers.retained)
        + dropped_casts
        + accumulating;
    // The optimizer step's temporaries are a peak of their own, after the
    // activations are freed: the larger of the two is the device's.
    // Or the end of the backward's, the larger: both hold the states, and
    // the outputs DeepSpeed's pipe buffers still keep.
    let temporaries = (params * optimizer_step_bytes_per_param(setup, dp)).max(
        layers.backward_end
            + copied * casts_at_backward_end(setup)
            + layers.end_buffer
            + reduction_copy_bytes(setup, dp, params, layers.largest_layer_params),
    ) + mbs * retained_outputs(b) * layers.retained;
    let states = |s: &StateBytes| {
        (
            copied * s.weights + layers.fp8_weight_copies,
            params * s.gradients,
            params * s.optimizer,
        )
    };
    let (pw, pg, po) = states(&passes);
    let (sw, sg, so) = states(&step);
    let step_is_peak = if passes == step {
        temporaries > activations
    } else {
        sw + sg + so + temporaries > pw + pg + po + activations
    };
    let ((w, g, o), a) = if step_is_peak {
        ((sw, sg, so), temporaries)
    } else {
        ((pw, pg, po), activations)
    };
    (w, g, o, a, reserve_bytes)
}

/// Predicted peak memory of every device of `plan`, stage by stage, each
/// device holding `reserve_bytes` besides the plan's own memory.
pub fn plan_memory(
    model: &Model,
    cluster: &Cluster,
    plan: &Plan,
    reserve_bytes: f64,
) -> Vec<DeviceMemory> {
    let mut out = Vec::new();
    each_device_memory(model, cluster, plan, reserve_bytes, |m| {
        out.push(m);
        true
    });
    out
}

/// Whether every device of `plan` holds it ([`plan_memory`] without the
/// list: what a search needs of most candidates).
pub fn plan_fits(model: &Model, cluster: &Cluster, plan: &Plan, reserve_bytes: f64) -> bool {
    plan_fits_within(
        model,
        plan,
        reserve_bytes,
        &replica_capacities(cluster, plan),
    )
}

/// Per pipeline rank of `plan` and replica, the least memory of its GPUs
/// (infinite where none is known): a replica's GPUs hold the same, so it
/// fits when that GPU holds it ([`plan_fits_within`]).
pub fn replica_capacities(cluster: &Cluster, plan: &Plan) -> Vec<Vec<f64>> {
    plan.rank_stages()
        .iter()
        .map(|s| {
            s.replicas
                .iter()
                .map(|rep| {
                    rep.iter()
                        .filter_map(|d| cluster.nodes.get(d.node).and_then(|n| n.gpu_memory_bytes))
                        .map(|b| b as f64)
                        .fold(f64::INFINITY, f64::min)
                })
                .collect()
        })
        .collect()
}

/// [`plan_fits`] of a plan whose [`replica_capacities`] are `capacities`
/// (those of another plan on the same devices: a search's re-splits).
pub fn plan_fits_within(
    model: &Model,
    plan: &Plan,
    reserve_bytes: f64,
    capacities: &[Vec<f64>],
) -> bool {
    let mut fits = true;
    each_replica_bytes(model, plan, reserve_bytes, |j, r, _, (w, g, o, a, rsv)| {
        let peak = w + g + o + a + rsv;
        // Over a device's capacity exactly when over the least of them.
        let over = peak > capacities[j][r];
        fits = !over;
        fits
    });
    fits
}

/// Calls `f` with the memory of every device of `plan` in
/// [`plan_memory`]'s order, until it returns false.
fn each_device_memory(
    model: &Model,
    cluster: &Cluster,
    plan: &Plan,
    reserve_bytes: f64,
    mut f: impl FnMut(DeviceMemory) -> bool,
) {
    each_replica_bytes(
        model,
        plan,
        reserve_bytes,
        |j, _, rep, (w, g, o, a, rsv)| {
            for &d in rep {
                let m = DeviceMemory {
                    device: d,
                    stage: j,
                    weights_bytes: w,
                    gradients_bytes: g,
                    optimizer_bytes: o,
                    activations_bytes: a,
                    other_bytes: rsv,
                    peak_bytes: w + g + o + a + rsv,
                    capacity_bytes: cluster
                        .nodes
                        .get(d.node)
                        .and_then(|n| n.gpu_memory_bytes)
                        .map(|b| b as f64),
                };
                if !f(m) {
                    return false;
                }
            }
            true
        },
    );
}

/// Calls `f` with each replica of each pipeline rank of `plan` (the rank,
/// the replica's index and devices, what each of them holds), in
/// [`plan_memory`]'s order, until it returns false.
fn each_replica_bytes(
    model: &Model,
    plan: &Plan,
    reserve_bytes: f64,
    mut f: impl FnMut(usize, usize, &[Device], DeviceBytes) -> bool,
) {
    let pp = plan.pp();
    for (j, stage) in plan.rank_stages().iter().enumerate() {
        let chunks = plan.rank_layers(j);
        // Per (tp, micro-batches) of a replica: replicas of a stage may
        // differ in both, and a 16,384-GPU plan has few kinds; the layers
        // are read once per tp.
        let mut layers: Vec<(usize, LayerBytes)> = Vec::new();
        let mut kinds: Vec<((usize, usize), DeviceBytes)> = Vec::new();
        for (r, rep) in stage.replicas.iter().enumerate() {
            let key = (rep.len(), plan.micro_batches_of(r));
            let m = match kinds.iter().find(|(k, _)| *k == key) {
                Some((_, m)) => *m,
                None => {
                    let i = match layers.iter().position(|(t, _)| *t == key.0) {
                        Some(i) => i,
                        None => {
                            layers.push((
                                key.0,
                                layer_bytes(model, &chunks, key.0, &plan.setup, pp > 1),
                            ));
                            layers.len() - 1
                        }
                    };
                    let m = device_bytes(
                        &layers[i].1,
                        &plan.setup,
                        (stage.dp(), j, pp),
                        (plan.micro_batch, key.1),
                        fixed_bytes(model, &plan.setup, key.0, reserve_bytes),
                    );
                    kinds.push((key, m));
                    m
                }
            };
            if !f(j, r, rep, m) {
                return;
            }
        }
    }
}

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
//!   With data parallelism the gradients are held twice ([`DP_GRADIENT_COPIES`]: the all-reduce
//!   buffer). With ZeRO-1 the optimizer state is sharded over the
//!   data-parallel replicas (divided by `dp`). Engines hold them all
//!   through the whole iteration; eager PyTorch under autocast holds them
//!   by phase ([`phase_state_bytes`]): no gradients through the passes
//!   before its first backward (`zero_grad()` set them to None; DDP's
//!   bucket only), its 16-bit weights being autocast's casts, made by the
//!   forward of every layer but an embedding and freed by the backward, so
//!   none through the step;
//! - **stored activations** of the micro-batches in flight: under 1F1B stage
//!   `i` keeps `min(pp - i, B)` micro-batches (PipeDream-Flush: `pp - i - 1`
//!   warm-up forwards plus the one whose backward comes next), under GPipe
//!   all `B`. Per sample and layer, from
//!   [`Layer::stored_activation_elems_per_sample`] when the model gives it
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
//!   but under GPipe ([`loss_stored_bytes_per_sample`]);
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
//!   ([`blocks_drop_casts`]; the other blocks' casts then live only until
//!   the forward's end, a peak of its own);
//! - on the last stage under DeepSpeed's pipeline engine (the lockstep
//!   exchange), the outputs of up to two earlier micro-batches, which its
//!   pipe buffers keep after their backward ([`retained_output_bytes_per_sample`],
//!   [`retained_outputs`]): for a language model its fp32 logits;
//! - or, when the step's states and temporaries hold more than the passes'
//!   states and activations, the **optimizer step's temporaries**, a peak
//!   of its own after every activation is freed: PyTorch's foreach Adam(W)
//!   allocates `sqrt(v)`, 4 bytes per parameter of its shard
//!   ([`optimizer_step_bytes_per_param`]); fused steps nothing; or, the
//!   larger, eager PyTorch's second gradient of a tied embedding at the end
//!   of the backward ([`tied_gradient_bytes_per_param`]);
//! - what the model keeps on **every GPU outside its layers**
//!   ([`Model::resident_bytes_per_device`], e.g. the AMP artifact's TransGAN
//!   discriminator), whatever the stage;
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

/// Bytes per logit element, per sample and rank (the logits are split by
/// tensor parallelism), held only while Megatron-LM's vocabulary-parallel
/// cross entropy runs ([`CrossEntropy::Megatron`]): the 16-bit logits next
/// to their fp32 copy in the forward pass, or the 16-bit gradient next to
/// the fp32 one in the backward pass. The fp32 softmax itself is a stored
/// activation (4 bytes per logit); the loss works in place on it, so
/// nothing else is needed.
pub const LOGITS_TRANSIENT_BYTES_PER_ELEM: f64 = 2.0;

/// Bytes per logit element beyond the stored fp32 log-probabilities while
/// PyTorch's `cross_entropy` runs on an fp32 copy of the logits
/// ([`CrossEntropy::Pytorch`]). Forward: the 16-bit logits (2), their fp32
/// copy (4) and the log-probabilities (4, stored): 6 beyond. Backward, while
/// `log_softmax`'s backward runs: the stored log-probabilities, the dense
/// fp32 gradient `nll_loss` wrote and the fp32 gradient `log_softmax`
/// writes: 8 beyond, the larger. fp32 throughout, whatever the activations'
/// format.
pub const PYTORCH_LOSS_TRANSIENT_BYTES_PER_LOGIT: f64 = 8.0;

/// Of [`PYTORCH_LOSS_TRANSIENT_BYTES_PER_LOGIT`], the forward's: the
/// 16-bit logits and their fp32 copy beside the stored log-probabilities.
pub const PYTORCH_LOSS_FORWARD_TRANSIENT_BYTES_PER_LOGIT: f64 = 6.0;

/// Bytes per logit the loss keeps for its backward, whatever the
/// activations' format: PyTorch's `cross_entropy` its fp32
/// log-probabilities (`log_softmax` on the fp32 copy of the logits),
/// Megatron-LM's vocabulary-parallel loss its fp32 softmax (computed in
/// place on its fp32 copy, `ctx.save_for_backward(exp_logits, ...)` in
/// megatron/core/tensor_parallel/cross_entropy.py).
pub const LOSS_STORED_BYTES_PER_LOGIT: f64 = 4.0;

/// What the loss keeps per sample on one rank of a tensor-parallel group of
/// degree `tp` after the vocabulary projection `l`, whose logits it splits.
fn loss_softmax_bytes_per_sample(l: &crate::model::Layer, tp: f64) -> f64 {
    l.output_elems_per_sample as f64 / tp * LOSS_STORED_BYTES_PER_LOGIT
}

/// Of [`stored_activation_bytes_per_sample`] of layer `layer`, what the
/// loss keeps ([`loss_softmax_bytes_per_sample`], where amp counts it: a
/// model with an architecture or a projection without its own count). The
/// loss runs its backward right after its forward under 1F1B, interleaved
/// or not (the last model chunk's forward and backward of a micro-batch
/// pair up on the last device), so one micro-batch keeps it at a time
/// ([`loss_in_flight`]), however many the stage's other layers hold.
fn loss_stored_bytes_per_sample(model: &Model, layer: usize, tp: usize) -> f64 {
    let l = &model.layers[layer];
    let counted = l.stored_activation_elems_per_sample.is_none() || model.architecture().is_some();
    if l.kind == LayerKind::VocabProjection && counted {
        loss_softmax_bytes_per_sample(l, tp.max(1) as f64)
    } else {
        0.0
    }
}

/// Micro-batches whose loss a stage keeps at once, `flight` its in-flight
/// count ([`in_flight`]): all of them under GPipe, else one.
fn loss_in_flight(schedule: Schedule, flight: usize) -> usize {
    match schedule {
        Schedule::GPipe => flight,
        _ => flight.min(1),
    }
}

/// Gradient copies a replica holds when data parallelism is on: the
/// gradients themselves and the contiguous buffer the all-reduce reads
/// (PyTorch DDP's buckets, which are not views of the gradients by default;
/// DeepSpeed's flattened all-reduce buffer). A count, not a fit.
pub const DP_GRADIENT_COPIES: f64 = 2.0;

/// Bytes per stored activation element in 16-bit training.
const HALF_BYTES: f64 = 2.0;

/// Bytes per parameter held by one replica.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct StateBytes {
    /// Bytes per parameter of weights.
    pub weights: f64,
    /// Bytes per parameter of gradients.
    pub gradients: f64,
    /// Bytes per parameter of optimizer state.
    pub optimizer: f64,
}

impl StateBytes {
    /// Bytes per parameter in all: weights, gradients and optimizer state.
    pub fn total(&self) -> f64 {
        self.weights + self.gradients + self.optimizer
    }
}

/// Bytes per parameter with `dp` data-parallel replicas under `setup`'s
/// number formats and sharding: ZeRO-1 divides the optimizer state (master
/// weights and moments) by `dp`, ZeRO-2 the gradients too, ZeRO-3 the
/// weights too.
pub(crate) fn state_bytes(setup: &TrainingSetup, dp: usize) -> StateBytes {
    let f = &setup.formats;
    let d = dp.max(1) as f64;
    let sharding = setup.optimizer_sharding;
    let optimizer = f.optimizer_bytes_per_param();
    let optimizer = if sharding >= OptimizerSharding::Zero1 {
        optimizer / d
    } else {
        optimizer
    };
    let gradients = if sharding >= OptimizerSharding::Zero2 {
        // Reduce-scattered: each replica keeps its shard (plus the bucket
        // being reduced, which the reserve covers).
        f.gradients.bytes() / d
    } else if dp > 1 {
        // The gradients and the contiguous buffer the all-reduce reads.
        f.gradients.bytes() * DP_GRADIENT_COPIES
    } else {
        f.gradients.bytes()
    };
    let weights = if sharding >= OptimizerSharding::Zero3 {
        f.weights.bytes() / d
    } else {
        f.weights.bytes()
    };
    StateBytes {
        weights,
        gradients,
        optimizer,
    }
}

/// Bytes per parameter the optimizer step allocates while it runs, with `dp`
/// data-parallel replicas: PyTorch's foreach Adam(W) computes `sqrt(v)`
/// into new tensors, one optimizer-state element per parameter of its
/// shard, before `addcdiv_` (torch/optim/adam.py `_multi_tensor_adam`); a
/// fused step allocates nothing. The step runs after every activation is
/// freed, so it is a peak of its own, not added to the passes'.
pub(crate) fn optimizer_step_bytes_per_param(setup: &TrainingSetup, dp: usize) -> f64 {
    match setup.optimizer_step() {
        OptimizerStep::Fused => 0.0,
        OptimizerStep::Foreach => {
            let b = setup.formats.optimizer_state.bytes();
            if setup.optimizer_sharding >= OptimizerSharding::Zero1 {
                b / dp.max(1) as f64
            } else {
                b
            }
        }
    }
}

/// Bytes per parameter one replica holds through the forward and backward
/// passes (at their peak, the activations') and through the optimizer step,
/// with `dp` data-parallel replicas. `gradients_in_passes`: whether a
/// backward of this replica's stage has already run when its activations
/// peak (more micro-batches than it keeps in flight).
///
/// Engines keep their gradient buffers from one iteration to the next
/// (Megatron-LM's `main_grad`, DeepSpeed's flattened buffers) and their
/// 16-bit weights throughout, so both phases hold every state. Plain
/// PyTorch under autocast does not: `optimizer.zero_grad()` sets the
/// gradients to None (its default since PyTorch 2.0), so the backward
/// allocates them anew, and the 16-bit weights are autocast's casts, which
/// the forward makes and the backward frees (the recommended loop runs the
/// backward outside autocast, whose cache then holds nothing). So through
/// the passes of the first micro-batch it holds no gradients (DDP's bucket,
/// one copy, with data parallelism), and through the step no casts.
pub(crate) fn phase_state_bytes(
    setup: &TrainingSetup,
    dp: usize,
    gradients_in_passes: bool,
) -> (StateBytes, StateBytes) {
    let held = state_bytes(setup, dp);
    if !gradients_by_phase(setup) {
        return (held, held);
    }
    let passes = StateBytes {
        gradients: if gradients_in_passes {
            held.gradients
        } else if dp > 1 {
            setup.formats.gradients.bytes()
        } else {
            0.0
        },
        ..held
    };
    let step = StateBytes {
        weights: 0.0,
        ..held
    };
    (passes, step)
}

/// Whether the gradients come and go with the phases of an iteration
/// ([`phase_state_bytes`]): eager PyTorch under autocast, whose
/// `zero_grad()` frees them, unless ZeRO-2 or 3 keeps sharded buffers.
fn gradients_by_phase(setup: &TrainingSetup) -> bool {
    autocast(setup) && setup.optimizer_sharding < OptimizerSharding::Zero2
}

/// Whether a layer of kind `kind` holds a 16-bit copy of its weights:
/// under autocast an embedding does not (the lookup runs on the fp32
/// weights; autocast casts the weights of the ops it runs in 16 bits, the
/// linear layers'); otherwise every layer's weights are in their format.
fn holds_weight_copy(kind: LayerKind, setup: &TrainingSetup) -> bool {
    !(kind == LayerKind::Embedding && autocast(setup))
}

/// Whether `model`'s transformer blocks drop their 16-bit weight copies
/// between the forward and their backward: eager PyTorch under autocast
/// with every block checkpointed. Autocast's cache holds every cast until
/// the forward leaves its autocast context (the loss included), and the
/// checkpointed blocks save none for their backward, each recomputing
/// its forward (autocast's cache anew) as its backward comes. So at the
/// loss's backward, and at any block's, the other blocks hold no copy
/// (`torch.utils.checkpoint` restores the autocast state for the
/// recomputation). Not where the backward runs inside autocast: the cache
/// keeps every cast to its end ([`casts_at_backward_end`]). Engines keep
/// their 16-bit weights; ties that take a block's weights keep them too
/// (the shared copy is counted with the model states).
fn blocks_drop_casts(model: &Model, setup: &TrainingSetup) -> bool {
    autocast(setup)
        && setup.recompute == Recompute::Full
        && !setup.backward_in_autocast
        && !model.layers.iter().any(|l| {
            l.tied_to.is_some_and(|e| {
                l.kind == LayerKind::TransformerBlock
                    || model.layers[e].kind == LayerKind::TransformerBlock
            })
        })
}

/// Whether a layer of kind `kind` holds its 16-bit copy only through the
/// forward and its own backward, `drop` being [`blocks_drop_casts`]'s
/// answer for the model: a block's.
fn drops_cast(kind: LayerKind, drop: bool) -> bool {
    drop && kind == LayerKind::TransformerBlock
}

/// Whether a layer of kind `kind` holds its 16-bit copy through the whole
/// of the passes: it holds one ([`holds_weight_copy`]) and does not drop
/// it ([`drops_cast`]).
fn holds_cast_through_passes(kind: LayerKind, setup: &TrainingSetup, drop: bool) -> bool {
    holds_weight_copy(kind, setup) && !drops_cast(kind, drop)
}

/// Parameters per rank (tp degree `tp`) of layer `l` whose 16-bit copy
/// lives only through the forward and the layer's own backward
/// ([`drops_cast`]).
fn dropped_cast_params(model: &Model, l: usize, tp: usize, drop: bool) -> f64 {
    let layer = &model.layers[l];
    if drops_cast(layer.kind, drop) {
        layer.params as f64 / tp.max(1) as f64
    } else {
        0.0
    }
}

/// Bytes per parameter with a 16-bit copy that the end of the backward
/// holds beside the gradients: where the loop calls `backward()` inside
/// autocast ([`TrainingSetup::backward_in_autocast`]) its cache keeps every
/// cast until the context exits, after the backward (measured: 2 bytes
/// per cast parameter more than a backward outside autocast at the end of
/// the backward, `scripts/activation-check/peak.py`); else none, each
/// layer's backward freeing its cast. The step, outside autocast, holds
/// none.
pub(crate) fn casts_at_backward_end(setup: &TrainingSetup) -> f64 {
    if setup.backward_in_autocast && autocast(setup) {
        setup.formats.weights.bytes()
    } else {
        0.0
    }
}

/// Bytes layer `l` (tp degree `tp`) holds for its weight gradient while
/// its backward adds it to gradients already there, beside what the
/// passes count (eager PyTorch under autocast accumulating over
/// micro-batches; `drop` is [`blocks_drop_casts`]'s answer): the linear
/// layers' backward writes the weight gradient of their 16-bit cast, and
/// its cast back to fp32 (`ToCopyBackward0`) is what `AccumulateGrad` adds
/// in place, with the layer's own cast already freed unless autocast's
/// cache keeps it ([`TrainingSetup::backward_in_autocast`]) or the passes
/// did not count it (a recomputed block's); an embedding writes a dense
/// fp32 gradient (`embedding_dense_backward`'s `zeros`). Measured by
/// `scripts/activation-check/peak.py`, two micro-batches: the
/// projection's 16-bit weight gradient and its fp32 copy live at the peak.
/// Only where the first micro-batch's passes hold no gradients
/// ([`phase_state_bytes`]); engines accumulate into their own buffers
/// (Megatron-LM's `main_grad`, fused into the weight-gradient product).
fn accumulation_bytes(
    model: &Model,
    l: usize,
    tp: usize,
    setup: &TrainingSetup,
    drop: bool,
) -> f64 {
    if !gradients_by_phase(setup) {
        return 0.0;
    }
    let layer = &model.layers[l];
    let f = &setup.formats;
    let cast = if holds_weight_copy(layer.kind, setup)
        && (setup.backward_in_autocast || drops_cast(layer.kind, drop))
    {
        f.weights.bytes()
    } else {
        0.0
    };
    layer.params as f64 / tp.max(1) as f64 * (f.gradients.bytes() + cast)
}

/// Of weights tied to an earlier layer of kind `earlier`, held once on a
/// stage holding both layers, the bytes per parameter held once: every
/// state, but under autocast an embedding's weights are cast only by the
/// later layer (a projection), which holds that copy alone (two projections
/// share one cast, autocast caching it).
fn tied_state_bytes(earlier: LayerKind, setup: &TrainingSetup, states: &StateBytes) -> f64 {
    if holds_weight_copy(earlier, setup) {
        states.total()
    } else {
        states.gradients + states.optimizer
    }
}

/// Bytes per parameter of weights tied to an earlier layer of kind
/// `earlier` that a stage holding both layers holds briefly at the end of
/// the backward beside its states: under autocast the embedding's backward
/// writes a dense fp32 gradient of the shared matrix while the
/// projection's is already the weights' gradient, and autograd adds the
/// two (`embedding_dense_backward`, then `AccumulateGrad`). Engines sum
/// both into one buffer as they go; 0 there.
fn tied_gradient_bytes_per_param(earlier: LayerKind, setup: &TrainingSetup) -> f64 {
    if holds_weight_copy(earlier, setup) || !autocast(setup) {
        0.0
    } else {
        setup.formats.gradients.bytes()
    }
}

/// Bytes of one stored activation element.
pub(crate) fn activation_bytes(setup: &TrainingSetup) -> f64 {
    setup.formats.activations.bytes()
}

fn scale(setup: &TrainingSetup) -> f64 {
    activation_bytes(setup) / HALF_BYTES
}

/// Micro-batches whose activations stage `stage` keeps at its peak.
///
/// Interleaved with `v` chunks: the device runs
/// `W = min(2 (pp - stage - 1) + (v - 1) pp, B v)` warm-up chunk forwards
/// (all `B v` when `B = pp`) and then one more before its first backward,
/// so it holds `W + 1` chunk
/// activations, each `1 / v` of its layers: `ceil((W + 1) / v)` whole
/// micro-batches' worth (Narayanan et al. SC'21: about `pp (1 + 1/v)` on
/// the first device).
pub(crate) fn in_flight(
    schedule: Schedule,
    stage: usize,
    pp: usize,
    num_micro_batches: usize,
) -> usize {
    match schedule {
        Schedule::Interleaved { virtual_stages } if virtual_stages > 1 => {
            let v = virtual_stages;
            let total = num_micro_batches * v;
            let warmup = if num_micro_batches == pp {
                total
            } else {
                (2 * pp.saturating_sub(stage + 1) + (v - 1) * pp).min(total)
            };
            (warmup + 1).min(total).div_ceil(v)
        }
        Schedule::OneFOneB | Schedule::Interleaved { .. } => {
            pp.saturating_sub(stage).max(1).min(num_micro_batches)
        }
        Schedule::GPipe => num_micro_batches,
    }
}

/// Bytes per sample of one micro-batch's output that DeepSpeed's pipeline
/// engine keeps on the last stage after its backward: the last stage's
/// backward returns without clearing its pipe buffer
/// (`_exec_backward_pass` in deepspeed/runtime/pipe/engine.py, in the AMP
/// artifact's DeepSpeed and in Sailor's fork alike), so the buffer holds the
/// output until a later forward takes its slot. The output of a model with
/// a vocabulary projection is its logits cast to fp32 by the pipe's last
/// layer (Megatron's `fp16_to_fp32` in the artifact's `GPT2ModelPipe`,
/// `float16_to_fp32` in Sailor's `OPTModelPipe`), 4 bytes per logit of each
/// rank's vocabulary slice; any other model's, its last layer's output in
/// the activations' format. None outside DeepSpeed's engine (the lockstep
/// exchange is its 1F1B): Megatron-LM and torchtitan free what they send.
pub(crate) fn retained_output_bytes_per_sample(
    model: &Model,
    tp: usize,
    setup: &TrainingSetup,
) -> f64 {
    if setup.stage_exchange() != StageExchange::Lockstep {
        return 0.0;
    }
    let Some(last) = model.layers.last() else {
        return 0.0;
    };
    let out = last.output_elems_per_sample as f64;
    if model
        .layers
        .iter()
        .any(|l| l.kind == LayerKind::VocabProjection)
    {
        out / tp.max(1) as f64 * 4.0
    } else {
        out * activation_bytes(setup)
    }
}

/// Earlier micro-batches' outputs the last stage's pipe buffers still hold
/// while micro-batch `k` runs forward, beside its own: the last stage has
/// two buffers (`TrainSchedule.num_pipe_buffers`: `max(2, min(stages -
/// stage_id + 1, micro_batches))`, 2 for the last) used in turn, and the
/// new output takes its slot only once its forward is done, so from the
/// third micro-batch on both hold an earlier one.
pub(crate) fn retained_outputs(num_micro_batches: usize) -> f64 {
    num_micro_batches.saturating_sub(1).min(2) as f64
}

/// (sequence, hidden, heads) of a transformer model.
fn shape_sha(model: &Model) -> Option<(f64, f64, f64)> {
    let s = model.shape.as_ref()?;
    if s.seq_len == 0 || s.hidden == 0 {
        return None;
    }
    let heads = if s.heads > 0 {
        s.heads
    } else {
        (s.hidden / 64).max(1)
    };
    Some((s.seq_len as f64, s.hidden as f64, heads as f64))
}

/// Whether the model's attention is fused (flash attention): no `s x s`
/// scores, probabilities or their gradients ever exist in memory.
fn fused_attention(model: &Model) -> bool {
    model.flash_attention() == Some(true)
}

/// Whether tensor parallelism splits this kind's stored activations.
fn tp_sharded(kind: LayerKind) -> bool {
    matches!(
        kind,
        LayerKind::TransformerBlock | LayerKind::VocabProjection
    )
}

/// Full (no recomputation) stored bytes per sample of a block, Korthikanti
/// et al. eq. 2, or 34 bytes per output element without a shape. With
/// sequence parallelism the 10 bytes of layer-norm inputs and dropout
/// masks are split over the group too (their eq. 4).
fn block_full_bytes(model: &Model, layer: usize, tp: f64, setup: &TrainingSetup) -> f64 {
    let replicated = if setup.sequence_parallel {
        10.0 / tp
    } else {
        10.0
    };
    // The attention core's 5 a s^2 / t bytes exist only when it is not
    // fused.
    let core = if fused_attention(model) { 0.0 } else { 5.0 };
    match shape_sha(model) {
        Some((s, h, a)) => {
            s * h * (replicated + 24.0 / tp + core * a * s / (h * tp)) * scale(setup)
        }
        None => {
            (replicated + 24.0 / tp)
                * model.layers[layer].output_elems_per_sample as f64
                * scale(setup)
        }
    }
}

/// Bytes per sample of a block's attention core, what selective
/// recomputation drops and rebuilds; none when the attention is fused. A
/// model whose architecture says whether it drops out counts, per score
/// (`a s^2 / t`), the softmax output and the probabilities the value
/// product keeps, and with dropout the one-byte mask (the zoo's and Hugging
/// Face's count, [`Layer::stored_activation_elems_per_sample`]); written as
/// Python under autocast the softmax output is fp32 (autocast runs softmax
/// in fp32), 4 bytes. Without one, Korthikanti's `5 a s^2 / t` bytes
/// (scores, softmax, dropout mask) in 16-bit formats.
fn attention_core_bytes(model: &Model, tp: f64, setup: &TrainingSetup) -> f64 {
    if fused_attention(model) {
        return 0.0;
    }
    let Some((s, _, a)) = shape_sha(model) else {
        return 0.0;
    };
    let scores = a * s * s / tp;
    match model.dropout() {
        Some(dropout) => {
            let e = activation_bytes(setup);
            let mask = if dropout { 1.0 } else { 0.0 };
            scores * (2.0 * e + mask) + eager_softmax_extra_bytes(model, tp, setup)
        }
        None => 5.0 * scores * scale(setup),
    }
}

/// Whether the setup is eager autocast: 16-bit compute over an fp32 residual
/// stream, each op casting its own inputs.
fn autocast(setup: &TrainingSetup) -> bool {
    setup.formats.residual_stream_bytes() > activation_bytes(setup)
}

/// What explicit attention written as Python keeps beyond its 16-bit count
/// under autocast, bytes per sample: the softmax output in fp32 (autocast
/// runs softmax in fp32), 2 more bytes per score, the 16-bit probabilities
/// the value product keeps being counted already. None with an engine (its
/// fused softmax writes 16 bits) or fused attention.
fn eager_softmax_extra_bytes(model: &Model, tp: f64, setup: &TrainingSetup) -> f64 {
    let e = activation_bytes(setup);
    match (model.eager_architecture(setup.engine), shape_sha(model)) {
        (Some(_), Some((s, _, a))) if autocast(setup) && !fused_attention(model) => {
            (4.0 - e) * a * s * s / tp
        }
        _ => 0.0,
    }
}

/// Of a block's given stored elements per sample `elems` (counted in 16
/// bits, as [`Layer::stored_activation_elems_per_sample`]), those every
/// rank of a tensor-parallel group keeps whole without sequence
/// parallelism (Korthikanti et al. 2022, sec. 4.2): the two norms' inputs
/// (`2 s h`; four norms', `4 s h`, with Gemma's post-norms, whose inputs
/// are the branches' all-reduced outputs), the inputs of the QKV and first
/// MLP projections (`s h` each) and, with dropout, its two one-byte masks
/// (`s h`). Zero when sequence
/// parallelism splits them too, or when the model does not say whether it
/// has dropout (a layer list without `architecture.dropout`: its count is
/// then divided by tp whole, as before the field existed).
fn replicated_block_elems(model: &Model, elems: f64, setup: &TrainingSetup) -> f64 {
    if setup.sequence_parallel {
        return 0.0;
    }
    match (model.dropout(), shape_sha(model)) {
        (Some(dropout), Some((s, h, _))) => {
            let post_norms = model.architecture().is_some_and(|a| a.post_norms);
            let per_sh = if dropout { 5.0 } else { 4.0 } + if post_norms { 2.0 } else { 0.0 };
            (per_sh * s * h).min(elems)
        }
        _ => 0.0,
    }
}

/// What a block's norms keep beyond the stored-activation count, bytes per
/// sample. The two on the residual stream (`s h` inputs each, replicated
/// over the tensor-parallel group unless sequence-parallel) keep, per
/// element:
/// - the residual stream's width beyond the activations' when it is wider
///   (eager autocast: the fp32 input, counted there in 16 bits);
/// - without an engine, an RMSNorm written as Python (Hugging Face's
///   `LlamaRMSNorm`, Meta's reference model) also keeps its fp32
///   normalised output for the weight's gradient, 4 bytes (engines fuse
///   the norm).
///
/// Norms whose input is a 16-bit branch value, written as Python, keep the
/// fp32 copy of their input that `pow` and the multiply by the inverse norm
/// save, 4 bytes per element beyond the 16-bit value the stored count
/// holds, and Gemma's (`output * (1 + weight)` before the cast back) also
/// its fp32 output, 2 more bytes net: Qwen3's and Gemma 3's norms on each
/// head's query and key ([`crate::model::Architecture::qk_norm`],
/// `s (heads + kv_heads) head_dim / tp` elements), and Gemma's norms on the two
/// branches' outputs ([`crate::model::Architecture::post_norms`], `s h`
/// each, replicated as the stream's).
/// Bytes per element of its input a norm of the residual stream keeps
/// beyond the 16-bit count ([`norm_extra_bytes`]): the fp32 stream's 2
/// more under autocast, and an eager RMSNorm's fp32 normalised output.
fn norm_extra_bytes_per_elem(model: &Model, setup: &TrainingSetup) -> f64 {
    let wider = (setup.formats.residual_stream_bytes() - activation_bytes(setup)).max(0.0);
    let eager_rms = model
        .eager_architecture(setup.engine)
        .is_some_and(|a| a.norm == crate::model::NormKind::Rmsnorm);
    wider + if eager_rms { 4.0 } else { 0.0 }
}

/// The final norm's share of [`norm_extra_bytes_per_elem`], bytes per
/// sample on one rank, for a model with an architecture (the zoo's and
/// Hugging Face's, whose layer after the last block is the final norm and
/// counts its input in 16 bits) without an engine: the blocks' norms are
/// counted with the blocks, the last one here. Whole on every rank but
/// under sequence parallelism.
fn final_norm_extra_bytes(model: &Model, layer: usize, tp: f64, setup: &TrainingSetup) -> f64 {
    let after_blocks = layer > 0
        && model.layers[layer].kind == LayerKind::Other
        && model.layers[layer - 1].kind == LayerKind::TransformerBlock;
    if !after_blocks || model.eager_architecture(setup.engine).is_none() {
        return 0.0;
    }
    let bytes = model.layers[layer - 1].output_elems_per_sample as f64
        * norm_extra_bytes_per_elem(model, setup);
    if setup.sequence_parallel {
        bytes / tp
    } else {
        bytes
    }
}

fn norm_extra_bytes(
    model: &Model,
    layer: &crate::model::Layer,
    tp: f64,
    setup: &TrainingSetup,
) -> f64 {
    let eager_rms = model
        .eager_architecture(setup.engine)
        .filter(|a| a.norm == crate::model::NormKind::Rmsnorm);
    let per_elem = norm_extra_bytes_per_elem(model, setup);
    let out = layer.output_elems_per_sample as f64;
    let half_input = eager_rms.map_or(0.0, |a| {
        if a.family.starts_with("gemma") {
            6.0
        } else {
            4.0
        }
    });
    let post = if model.architecture().is_some_and(|a| a.post_norms) {
        2.0 * out * half_input
    } else {
        0.0
    };
    let replicated = 2.0 * out * per_elem + post;
    let qk = match (eager_rms.filter(|a| a.qk_norm), model.shape.as_ref()) {
        (Some(a), Some(sh)) => {
            half_input * (sh.seq_len * (sh.heads + a.kv_heads) * a.head_dim) as f64 / tp
        }
        _ => 0.0,
    };
    qk + if setup.sequence_parallel {
        replicated / tp
    } else {
        replicated
    }
}

/// What a block written as Python keeps beyond the stored-activation count
/// (which counts what an engine's fused block keeps), bytes per sample on
/// one rank, without an engine:
/// - under autocast each linear layer casts its fp32 input to 16 bits
///   itself (autocast caches the casts of parameters only), so a norm's
///   output feeding q, k and v projections written apart is kept three
///   times and one feeding gate and up projections twice: 2 and 1 more
///   `s h` in the activations' width, whole on every tensor-parallel rank
///   as the projections' input is (split by sequence parallelism);
/// - a gated MLP (`down(act(gate) * up)`) keeps `act(gate)` for the
///   product's backward beside the product the down projection keeps: one
///   more `s f / tp` (an engine's fused SwiGLU keeps its input and the
///   product only).
///
/// Measured against Hugging Face's own blocks (`scripts/activation-check`).
fn eager_projection_extra_bytes(model: &Model, tp: f64, setup: &TrainingSetup) -> f64 {
    let (Some(a), Some((s, h, _))) = (model.eager_architecture(setup.engine), shape_sha(model))
    else {
        return 0.0;
    };
    let e = activation_bytes(setup);
    let casts = autocast(setup);
    let mut copies = 0.0;
    if casts && !a.fused_qkv() {
        copies += 2.0;
    }
    if casts && a.gated() && !a.fused_gate_up() {
        copies += 1.0;
    }
    let whole = copies * s * h * e;
    let whole = if setup.sequence_parallel {
        whole / tp
    } else {
        whole
    };
    let product = if a.gated() {
        s * a.ffn_hidden as f64 / tp * e
    } else {
        0.0
    };
    whole + product
}

/// What Hugging Face's composite GeLU (`gelu_new`,
/// [`crate::model::Activation::GeluNew`]) keeps for its backward beyond a
/// fused GeLU's input, bytes per sample on one rank, without an engine (an
/// engine fuses it). Per element of the MLP's inner tensor (`s f / tp`):
/// the tanh output, the `1 + tanh` factor and `0.5 x` (a multiply keeps
/// both operands), each in the activations' width; under autocast `pow`
/// runs in fp32, so it also keeps an fp32 copy of x, and the tanh output
/// and the factor are fp32: 12 bytes plus one 16-bit element.
fn gelu_new_extra_bytes(model: &Model, tp: f64, setup: &TrainingSetup) -> f64 {
    let composite = model
        .eager_architecture(setup.engine)
        .filter(|a| a.activation == crate::model::Activation::GeluNew);
    let (Some(a), Some((s, _, _))) = (composite, shape_sha(model)) else {
        return 0.0;
    };
    let e = activation_bytes(setup);
    let per_elem = if setup.formats.compute.is_half() {
        12.0 + e
    } else {
        3.0 * e
    };
    s * a.ffn_hidden as f64 / tp * per_elem
}

/// Bytes of activations layer `layer` keeps per sample on one rank of a
/// tensor-parallel group of degree `tp`, until its backward.
pub(crate) fn stored_activation_bytes_per_sample(
    model: &Model,
    layer: usize,
    tp: usize,
    setup: &TrainingSetup,
) -> f64 {
    let l = &model.layers[layer];
    let t = tp.max(1) as f64;
    let block = l.kind == LayerKind::TransformerBlock;
    if block && setup.recompute == Recompute::Full {
        // Only the block input survives; the rest is recomputed.
        let input = l.output_elems_per_sample as f64 * setup.formats.residual_stream_bytes();
        return if setup.sequence_parallel {
            input / t
        } else {
            input
        };
    }
    let norm_extra = if block {
        norm_extra_bytes(model, l, t, setup)
            + gelu_new_extra_bytes(model, t, setup)
            + eager_projection_extra_bytes(model, t, setup)
            + eager_softmax_extra_bytes(model, t, setup)
    } else {
        final_norm_extra_bytes(model, layer, t, setup)
    };
    if let (Some(e), LayerKind::VocabProjection, Some(_)) = (
        l.stored_activation_elems_per_sample,
        l.kind,
        model.architecture(),
    ) {
        // A model with an architecture (the zoo's, Hugging Face's) counts
        // the projection's own input (every rank keeps it whole but under
        // sequence parallelism); the loss keeps its fp32 output.
        let input = e as f64 * activation_bytes(setup);
        let input = if setup.sequence_parallel {
            input / t
        } else {
            input
        };
        return input + loss_softmax_bytes_per_sample(l, t);
    }
    if let Some(e) = l.stored_activation_elems_per_sample {
        let e = e as f64;
        let whole = match l.replicated_activation_elems_per_sample {
            Some(r) => (r as f64).min(e),
            None if block => replicated_block_elems(model, e, setup),
            None => 0.0,
        };
        let bytes = if tp_sharded(l.kind) {
            whole + (e - whole) / t
        } else {
            e
        } * activation_bytes(setup);
        // Selective recomputation drops the attention core from a count
        // that says what it holds (a model with an architecture); a layer
        // list's own count is kept as given.
        let dropped =
            if block && setup.recompute == Recompute::Selective && model.dropout().is_some() {
                attention_core_bytes(model, t, setup)
            } else {
                0.0
            };
        return bytes + norm_extra - dropped;
    }
    let out = l.output_elems_per_sample as f64;
    match l.kind {
        LayerKind::TransformerBlock => {
            let full = block_full_bytes(model, layer, t, setup) + norm_extra;
            if setup.recompute == Recompute::Selective {
                full - attention_core_bytes(model, t, setup)
            } else {
                full
            }
        }
        // Input (s h, replicated) and the fp32 softmax the loss keeps for
        // its backward (4 bytes per logit, split by tp).
        LayerKind::VocabProjection => {
            let input = shape_sha(model).map_or(0.0, |(s, h, _)| s * h * activation_bytes(setup));
            input + loss_softmax_bytes_per_sample(l, t)
        }
        // The embedding keeps its dropout mask: one byte per output element.
        LayerKind::Embedding => out,
        LayerKind::Noop => 0.0,
        LayerKind::Other => out * activation_bytes(setup),
    }
}

/// Bytes per sample held only while this layer's backward runs (one
/// micro-batch at a time).
pub(crate) fn transient_bytes_per_sample(
    model: &Model,
    layer: usize,
    tp: usize,
    setup: &TrainingSetup,
) -> f64 {
    let l = &model.layers[layer];
    let t = tp.max(1) as f64;
    // The model's own count, where it gives one, replaces the estimates
    // below (the recomputed forward still adds to it).
    let given = l.backward_transient_elems_per_sample.map(|e| {
        let e = e as f64;
        let whole = l
            .replicated_backward_transient_elems_per_sample
            .map_or(0.0, |r| (r as f64).min(e));
        (whole + (e - whole) / t) * activation_bytes(setup)
    });
    match l.kind {
        LayerKind::VocabProjection => given.unwrap_or_else(|| {
            let per_logit = match setup.cross_entropy() {
                CrossEntropy::Megatron => LOGITS_TRANSIENT_BYTES_PER_ELEM * scale(setup),
                CrossEntropy::Pytorch => PYTORCH_LOSS_TRANSIENT_BYTES_PER_LOGIT,
            };
            l.output_elems_per_sample as f64 / t * per_logit
        }),
        LayerKind::TransformerBlock => {
            // The gradients of the attention probabilities and scores; a
            // fused attention's backward recomputes them tile by tile.
            let attn = if let Some(g) = given {
                g
            } else if fused_attention(model) {
                0.0
            } else {
                shape_sha(model).map_or(0.0, |(s, _, a)| {
                    2.0 * HALF_BYTES * a * s * s / t * scale(setup)
                })
            };
            match setup.recompute {
                // Recomputing the block rebuilds its full activations:
                // what it keeps without recomputation (the model's own
                // count where it gives one).
                Recompute::Full => {
                    let none = TrainingSetup {
                        recompute: Recompute::None,
                        ..*setup
                    };
                    attn + stored_activation_bytes_per_sample(model, layer, tp, &none)
                }
                // Recomputing the attention core rebuilds that part.
                Recompute::Selective => attn + attention_core_bytes(model, t, setup),
                Recompute::None => attn,
            }
        }
        _ => given.unwrap_or(0.0),
    }
}

/// Bytes per sample layer `layer` holds only while its forward runs, of
/// those amp counts: the loss's (the 16-bit logits and their fp32 copy
/// under PyTorch's `cross_entropy`; Megatron-LM's loss and a model's own
/// count hold what their backward does). Read only at the forward's end,
/// where every autocast cast is cached ([`blocks_drop_casts`]); the
/// backward's ([`transient_bytes_per_sample`]) is never smaller.
pub(crate) fn forward_transient_bytes_per_sample(
    model: &Model,
    layer: usize,
    tp: usize,
    setup: &TrainingSetup,
) -> f64 {
    let l = &model.layers[layer];
    if l.kind != LayerKind::VocabProjection {
        return 0.0;
    }
    match (l.backward_transient_elems_per_sample, setup.cross_entropy()) {
        (None, CrossEntropy::Pytorch) => {
            l.output_elems_per_sample as f64 / tp.max(1) as f64
                * PYTORCH_LOSS_FORWARD_TRANSIENT_BYTES_PER_LOGIT
        }
        _ => transient_bytes_per_sample(model, layer, tp, setup),
    }
}

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
    let layers = layer_bytes(model, chunks, tp, setup);
    device_bytes(
        &layers,
        setup,
        (dp, stage, pp),
        (plan_mbs, b),
        fixed_bytes(model, reserve_bytes),
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
    /// second gradient ([`tied_gradient_bytes_per_param`]) where the stage
    /// holds both layers.
    tied_gradient: f64,
    /// Activations stored per sample.
    stored: f64,
    /// Of those, what the loss keeps ([`loss_stored_bytes_per_sample`]).
    loss_stored: f64,
    /// The largest transient bytes per sample of any of its layers
    /// ([`transient_bytes_per_sample`]): one layer's backward runs at a
    /// time, the loss's among them, and frees its workspace before the next
    /// layer's starts.
    workspace: f64,
    /// Per earlier micro-batch, the output bytes per sample DeepSpeed's
    /// engine keeps ([`retained_output_bytes_per_sample`]) when the stage
    /// holds the model's last layer; else 0.
    retained: f64,
}

fn layer_bytes(
    model: &Model,
    chunks: &[std::ops::Range<usize>],
    tp: usize,
    setup: &TrainingSetup,
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
    // hold (with a position table beside them in an embedding).
    let tied_gradient = layers()
        .filter_map(|l| {
            let later = &model.layers[l];
            let earlier = &model.layers[later.tied_to.filter(|&e| held(e))?];
            Some(
                later.params.min(earlier.params) as f64 / tp.max(1) as f64
                    * tied_gradient_bytes_per_param(earlier.kind, setup),
            )
        })
        .sum();
    let loss_stored: f64 = layers()
        .map(|l| loss_stored_bytes_per_sample(model, l, tp))
        .sum();
    let stored: f64 = layers()
        .map(|l| stored_activation_bytes_per_sample(model, l, tp, setup))
        .sum();
    let workspace = layers()
        .map(|l| transient_bytes_per_sample(model, l, tp, setup))
        .fold(0.0f64, f64::max);
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
        tied_gradient,
        stored,
        loss_stored,
        workspace,
        retained,
    }
}

/// What every device holds besides its stage's own memory: the framework's
/// `reserve_bytes` and what the model keeps on every GPU outside its layers
/// ([`Model::resident_bytes_per_device`]); both read as "other" memory.
fn fixed_bytes(model: &Model, reserve_bytes: f64) -> f64 {
    reserve_bytes + model.resident_bytes_per_device.unwrap_or(0) as f64
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
    let flight = in_flight(setup.schedule, stage, pp, b);
    let (passes, step) = phase_state_bytes(setup, dp, b > flight);
    let mbs = plan_mbs as f64;
    // The loss's share of the stored bytes is kept by fewer micro-batches.
    let loss_flight = loss_in_flight(setup.schedule, flight) as f64 - flight as f64;
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
    // Where the gradients are there through the passes, a layer's
    // accumulation workspace, where it holds more.
    let accumulating = if b > flight {
        (layers.accumulation - (mbs * layers.workspace + dropped_casts)).max(0.0)
    } else {
        0.0
    };
    let activations = flight as f64 * mbs * layers.stored
        + mbs * (layers.workspace + retained_outputs(b) * layers.retained)
        + dropped_casts
        + accumulating
        + loss_flight * mbs * layers.loss_stored;
    // The optimizer step's temporaries are a peak of their own, after the
    // activations are freed: the larger of the two is the device's.
    // Or the end of the backward's, the larger: both hold the states.
    let temporaries = (params * optimizer_step_bytes_per_param(setup, dp))
        .max(layers.tied_gradient + copied * casts_at_backward_end(setup));
    let states = |s: &StateBytes| {
        (
            copied * s.weights,
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
    let other = fixed_bytes(model, reserve_bytes);
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
                            layers.push((key.0, layer_bytes(model, &chunks, key.0, &plan.setup)));
                            layers.len() - 1
                        }
                    };
                    let m = device_bytes(
                        &layers[i].1,
                        &plan.setup,
                        (stage.dp(), j, pp),
                        (plan.micro_batch, key.1),
                        other,
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
    pub(crate) fn new(model: &Model, tp: usize, setup: &TrainingSetup) -> SplitLayerBytes {
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
        let copied_params = if autocast(setup) {
            prefix_sums(model.layers.iter().map(|l| {
                if holds_cast_through_passes(l.kind, setup, drop) {
                    l.params as f64 / t
                } else {
                    0.0
                }
            }))
        } else {
            params.clone()
        };
        let loss_stored = prefix_sums((0..n).map(|l| loss_stored_bytes_per_sample(model, l, tp)));
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
const SPLIT_BOUND_SLACK: f64 = 1e-9;

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
struct SplitKind {
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
        let other = fixed_bytes(model, reserve_bytes);
        let mut tables: Vec<(usize, SplitLayerBytes)> = Vec::new();
        let mut kinds = Vec::new();
        let mut of_rank = vec![0];
        for (j, stage) in layout.rank_stages().iter().enumerate() {
            let dp = stage.dp();
            let (first, step) = phase_state_bytes(setup, dp, false);
            let (later, _) = phase_state_bytes(setup, dp, true);
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
                        tables.push((tp, SplitLayerBytes::new(model, tp, setup)));
                        tables.len() - 1
                    }
                };
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
                in_flight_samples.push((flight as f64 * mbs, loss, usize::from(b > flight)));
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
/// every stage the largest block's workspace.)
pub fn stage_memory_tables(
    model: &Model,
    cluster: &Cluster,
    grid: &DeviceGrid,
    micro_batch: usize,
    num_micro_batches: usize,
    setup: &TrainingSetup,
    reserve_bytes: f64,
) -> StageMemoryTables {
    let other = fixed_bytes(model, reserve_bytes);
    let tp = grid.tp;
    let t = tp.max(1) as f64;
    let mbs = micro_batch as f64;
    let n = model.num_layers();
    // Each stage's states through its passes ([`phase_state_bytes`]: whether
    // a backward runs before its activations peak) and through the step.
    let flights: Vec<usize> = (0..grid.pp)
        .map(|j| in_flight(setup.schedule, j, grid.pp, num_micro_batches))
        .collect();
    let passes: Vec<StateBytes> = flights
        .iter()
        .map(|&f| phase_state_bytes(setup, grid.dp, num_micro_batches > f).0)
        .collect();
    let step_states = phase_state_bytes(setup, grid.dp, true).1;
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
        if holds_cast_through_passes(l.kind, setup, drop) {
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
        let stages: Vec<bool> = flights.iter().map(|&f| num_micro_batches > f).collect();
        (of_layer.iter().any(|&a| a > 0.0) && stages.iter().any(|&s| s)).then(|| {
            crate::cost::AccumulationTables {
                workspace: crate::cost::RangeMax::new(of_layer),
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
    let mut prefix_bytes = Vec::with_capacity(grid.pp);
    let mut fixed_bytes = Vec::with_capacity(grid.pp);
    let mut capacity_bytes = Vec::with_capacity(grid.pp);
    // The step's own peak: states and its temporaries, the same for every
    // stage (no activations in flight). Without temporaries it is its own
    // only where it holds states the passes do not (gradients, under
    // autocast).
    let own_step = step_per_param > 0.0 || passes.iter().any(|p| *p != step_states);
    let step = own_step.then(|| crate::cost::StepTables {
        states: crate::cost::prefix_sums(
            model
                .layers
                .iter()
                .map(|l| l.params as f64 / t * per_param(l, &step_states)),
        ),
        temporaries: crate::cost::prefix_sums(
            model
                .layers
                .iter()
                .map(|l| l.params as f64 / t * step_per_param),
        ),
        backward_end_casts: (casts_at_backward_end(setup) > 0.0).then(|| {
            crate::cost::prefix_sums(model.layers.iter().map(|l| {
                if holds_weight_copy(l.kind, setup) {
                    l.params as f64 / t * casts_at_backward_end(setup)
                } else {
                    0.0
                }
            }))
        }),
        fixed: other,
    });
    // Each layer's stored bytes per sample and the loss's share of them,
    // the same in every stage.
    let of_layer: Vec<(f64, f64)> = (0..n)
        .map(|l| {
            (
                stored_activation_bytes_per_sample(model, l, tp, setup),
                loss_stored_bytes_per_sample(model, l, tp),
            )
        })
        .collect();
    // What DeepSpeed's engine keeps of earlier micro-batches, charged to
    // the last layer: the stage holding it pays it.
    let retained = retained_outputs(num_micro_batches)
        * mbs
        * retained_output_bytes_per_sample(model, tp, setup);
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
                .map(|p| tied_state_bytes(kind, setup, p))
                .fold(f64::INFINITY, f64::min);
            Some(crate::cost::SharedWeights {
                layer: l,
                tied_to: earlier,
                bytes: params * once,
                step_bytes: params * tied_state_bytes(kind, setup, &step_states),
                step_temporaries_bytes: params * step_per_param,
                step_transient_bytes: (layer.params.min(model.layers[earlier].params)) as f64 / t
                    * tied_gradient_bytes_per_param(kind, setup),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Any reserve: the tests check that it is added as given.
    const RESERVE: f64 = 4.5e9;
    use crate::cluster::{builtin as clusters, Device, Node};
    use crate::model::{builtin as models, Layer, TransformerShape};
    use crate::placement::Placement;
    use crate::plan::Stage;

    fn tiny() -> Model {
        Model {
            name: "tiny".into(),
            shape: Some(TransformerShape {
                hidden: 8,
                num_blocks: 1,
                seq_len: 4,
                vocab: 10,
                heads: 2,
                architecture: None,
            }),
            layers: vec![Layer {
                name: "block".into(),
                kind: LayerKind::TransformerBlock,
                params: 1000,
                output_elems_per_sample: 32,
                forward_flops_per_sample: None,
                tied_to: None,
                stored_activation_elems_per_sample: None,
                replicated_activation_elems_per_sample: None,
                backward_transient_elems_per_sample: None,
                replicated_backward_transient_elems_per_sample: None,
                forward_send_extra_bytes: 0,
            }],
            resident_bytes_per_device: None,
        }
    }

    #[test]
    fn hand_worked_example() {
        let m = tiny();
        let opts = TrainingSetup {
            formats: crate::setup::Precision::Fp16.formats(),
            ..TrainingSetup::default()
        };
        assert_eq!(stored_activation_bytes_per_sample(&m, 0, 2, &opts), 784.0);
        assert_eq!(transient_bytes_per_sample(&m, 0, 2, &opts), 64.0);
        let (w, g, o, a, r) = device_memory(
            &m,
            std::slice::from_ref(&(0..1)),
            2,
            1,
            0,
            2,
            3,
            4,
            &opts,
            RESERVE,
        );
        assert_eq!((w, g, o), (1000.0, 1000.0, 6000.0));
        assert_eq!(a, 4704.0 + 192.0);
        assert_eq!(r, RESERVE);
        // The last stage of the same pipeline keeps one micro-batch.
        let (_, _, _, a1, _) = device_memory(
            &m,
            std::slice::from_ref(&(0..1)),
            2,
            1,
            1,
            2,
            3,
            4,
            &opts,
            RESERVE,
        );
        assert_eq!(a1, 3.0 * 784.0 + 192.0);
        // GPipe keeps all four.
        let gpipe = TrainingSetup {
            schedule: Schedule::GPipe,
            ..opts
        };
        let (_, _, _, a2, _) = device_memory(
            &m,
            std::slice::from_ref(&(0..1)),
            2,
            1,
            1,
            2,
            3,
            4,
            &gpipe,
            RESERVE,
        );
        assert_eq!(a2, 4.0 * 3.0 * 784.0 + 192.0);
    }

    #[test]
    fn eager_autocast_keeps_fp32_norm_inputs() {
        // The hand-worked block (s h = 32 per sample) at tp 2: autocast's
        // two norms keep fp32 inputs, 2 x 32 x (4 - 2) = 128 bytes more per
        // sample on every rank (replicated without sequence parallelism);
        // with full recomputation the kept block input is fp32 (4 x 32).
        let m = tiny();
        let engine = TrainingSetup {
            formats: crate::setup::Precision::Fp16.formats(),
            ..TrainingSetup::default()
        };
        let eager = TrainingSetup {
            formats: engine.formats.with_eager_autocast(),
            ..engine
        };
        assert_eq!(stored_activation_bytes_per_sample(&m, 0, 2, &engine), 784.0);
        assert_eq!(stored_activation_bytes_per_sample(&m, 0, 2, &eager), 912.0);
        let sp = TrainingSetup {
            sequence_parallel: true,
            ..eager
        };
        let sp_engine = TrainingSetup {
            sequence_parallel: true,
            ..engine
        };
        assert_eq!(
            stored_activation_bytes_per_sample(&m, 0, 2, &sp)
                - stored_activation_bytes_per_sample(&m, 0, 2, &sp_engine),
            64.0
        );
        let full = |s: TrainingSetup| TrainingSetup {
            recompute: Recompute::Full,
            ..s
        };
        assert_eq!(
            stored_activation_bytes_per_sample(&m, 0, 2, &full(engine)),
            64.0
        );
        assert_eq!(
            stored_activation_bytes_per_sample(&m, 0, 2, &full(eager)),
            128.0
        );
        // fp32 training has nothing wider to keep.
        let fp32 = crate::setup::Precision::Fp32.formats();
        assert_eq!(fp32.with_eager_autocast(), fp32);
        // Engines keep the stream 16-bit: a setup that says otherwise is refused.
        let bad = TrainingSetup {
            engine: Some(crate::setup::Engine::Megatron),
            ..eager
        };
        assert!(bad
            .check()
            .unwrap_err()
            .to_string()
            .contains("residual_stream"));
    }

    /// Eager PyTorch under bf16 autocast (fp32 residual stream), no engine.
    fn eager_autocast_setup() -> TrainingSetup {
        TrainingSetup {
            formats: TrainingSetup::default().formats.with_eager_autocast(),
            ..TrainingSetup::default()
        }
    }

    /// Eager autocast with a fused AdamW: no step temporaries.
    fn fused_eager_setup() -> TrainingSetup {
        TrainingSetup {
            optimizer_step: Some(OptimizerStep::Fused),
            ..eager_autocast_setup()
        }
    }

    /// The default setup on Megatron-LM.
    fn megatron_setup() -> TrainingSetup {
        TrainingSetup {
            engine: Some(crate::setup::Engine::Megatron),
            ..TrainingSetup::default()
        }
    }

    /// `tiny()` with an architecture: `flash` and `dropout` as given.
    fn tiny_with(flash: Option<bool>, dropout: Option<bool>) -> Model {
        let mut m = tiny();
        m.shape.as_mut().unwrap().architecture = Some(crate::model::Architecture {
            family: "gpt2".into(),
            kv_heads: 2,
            head_dim: 4,
            ffn_hidden: 32,
            activation: crate::model::Activation::Gelu,
            norm: crate::model::NormKind::Layernorm,
            norm_eps: 1e-5,
            position_embedding: crate::model::PositionEmbedding::Learned,
            rope_theta: None,
            max_positions: 4,
            tied_embeddings: true,
            linear_bias: true,
            qkv_bias: true,
            qk_norm: false,
            post_norms: false,
            flash_attention: flash,
            dropout,
        });
        m
    }

    /// A decoder as the zoo builds one, with an architecture (`tiny_with`'s:
    /// s = 4, h = 8, fused attention, no dropout): an embedding of 10 x 8
    /// weights, two blocks of 1000 parameters keeping 100 16-bit elements
    /// each, a final norm and a vocabulary projection of 10 logits per token
    /// counting its input (`s h` = 32), tied to the embedding or not.
    fn tiny_decoder(tied: bool) -> Model {
        let layer = |name: &str, kind, params, out, stored| Layer {
            name: name.into(),
            kind,
            params,
            output_elems_per_sample: out,
            forward_flops_per_sample: None,
            tied_to: None,
            stored_activation_elems_per_sample: Some(stored),
            replicated_activation_elems_per_sample: None,
            backward_transient_elems_per_sample: None,
            replicated_backward_transient_elems_per_sample: None,
            forward_send_extra_bytes: 0,
        };
        let mut m = tiny_with(Some(true), Some(false));
        let mut head = layer("head", LayerKind::VocabProjection, 80, 40, 32);
        head.tied_to = tied.then_some(0);
        m.layers = vec![
            layer("embedding", LayerKind::Embedding, 80, 32, 0),
            layer("block0", LayerKind::TransformerBlock, 1000, 32, 100),
            layer("block1", LayerKind::TransformerBlock, 1000, 32, 100),
            layer("final_norm", LayerKind::Other, 16, 32, 32),
            head,
        ];
        m.shape.as_mut().unwrap().num_blocks = 2;
        m
    }

    #[test]
    fn the_loss_keeps_fp32_logits_whatever_the_activations_width() {
        // The projection's own count is its input, whole on each rank of a
        // tensor-parallel group (32 elements x 2 bytes); the loss keeps its
        // fp32 output, split by tp: 4 tokens x 10 logits / 2 x 4 bytes.
        // Until 2026-12-05 the zoo counted both in the activations' width,
        // split by tp: (32 + 40) / 2 x 2 bytes.
        let m = tiny_decoder(false);
        for setup in [eager_autocast_setup(), megatron_setup()] {
            assert_eq!(
                stored_activation_bytes_per_sample(&m, 4, 2, &setup),
                32.0 * 2.0 + 40.0 / 2.0 * 4.0
            );
            assert_eq!(loss_stored_bytes_per_sample(&m, 4, 2), 80.0);
        }
        // With sequence parallelism the input is split too.
        let sp = TrainingSetup {
            sequence_parallel: true,
            ..megatron_setup()
        };
        assert_eq!(
            stored_activation_bytes_per_sample(&m, 4, 2, &sp),
            32.0 + 80.0
        );
        // A layer list without an architecture keeps its count as given.
        let mut plain = m.clone();
        plain.shape.as_mut().unwrap().architecture = None;
        assert_eq!(
            stored_activation_bytes_per_sample(&plain, 4, 2, &megatron_setup()),
            32.0 / 2.0 * 2.0
        );
        assert_eq!(loss_stored_bytes_per_sample(&plain, 4, 2), 0.0);
    }

    /// The first device's memory of the decoder on one stage of `dp`
    /// replicas (one GPU each, no reserve).
    fn decoder_memory(
        m: &Model,
        setup: &TrainingSetup,
        dp: usize,
        mbs: usize,
        b: usize,
    ) -> DeviceMemory {
        let mut c = clusters::homogeneous();
        c.nodes.truncate(1);
        c.nodes[0].gpus = dp;
        let grid = DeviceGrid::new(&c, 1, dp, 1, &Placement::artifact_default(&c));
        let plan = crate::search::plan_from_grid(&grid, &[0, m.num_layers()], mbs, b, setup);
        plan_memory(m, &c, &plan, 0.0).swap_remove(0)
    }

    #[test]
    fn eager_passes_hold_no_gradients_before_a_backward_and_no_casts_after() {
        let m = tiny_decoder(false);
        let eager = eager_autocast_setup();
        // 2176 parameters: fp32 weights and moments (12 bytes) always; a
        // 16-bit cast of all but the embedding's 80 through the passes; fp32
        // gradients from the first backward on.
        let (params, cast) = (2176.0, 2096.0);
        // Activations per sample: blocks 2 x 100 x 2 bytes, their fp32
        // norm inputs 2 x 2 x 32 x 2, the final norm 32 x 2 and its fp32
        // input 32 x 2 more, the projection 32 x 2 + 40 x 4, the loss's
        // transient 40 x 8.
        let acts = 400.0 + 256.0 + 128.0 + 224.0 + 320.0;
        // One micro-batch of 64 samples: no gradients when they peak.
        let one = decoder_memory(&m, &eager, 1, 64, 1);
        assert_eq!(one.weights_bytes, cast * 2.0);
        assert_eq!(one.gradients_bytes, 0.0);
        assert_eq!(one.optimizer_bytes, params * 12.0);
        assert_eq!(one.activations_bytes, 64.0 * acts);
        // Two: the second's passes run after the first's backward.
        let two = decoder_memory(&m, &eager, 1, 64, 2);
        assert_eq!(two.gradients_bytes, params * 4.0);
        assert_eq!(two.activations_bytes, 64.0 * acts);
        // DDP's bucket is there from the start; the gradients beside it
        // from the first backward.
        assert_eq!(
            decoder_memory(&m, &eager, 2, 64, 1).gradients_bytes,
            params * 4.0
        );
        assert_eq!(
            decoder_memory(&m, &eager, 2, 64, 2).gradients_bytes,
            params * 8.0
        );
        // An engine keeps its gradient buffers: always there.
        let megatron = megatron_setup();
        assert_eq!(
            decoder_memory(&m, &megatron, 1, 64, 1).gradients_bytes,
            params * 4.0
        );
        // One sample: the foreach step (4 bytes per parameter beside the
        // gradients, the casts freed) holds more than the passes.
        let step = decoder_memory(&m, &eager, 1, 1, 1);
        assert!(acts < params * 4.0 + params * 4.0 - cast * 2.0);
        assert_eq!(step.weights_bytes, 0.0);
        assert_eq!(step.gradients_bytes, params * 4.0);
        assert_eq!(step.activations_bytes, params * 4.0);
        // A fused step allocates nothing: the end of the backward, states
        // only, unless the embedding is tied, whose dense fp32 gradient
        // (80 x 4) the backward writes beside the projection's before
        // adding them.
        let fused = fused_eager_setup();
        let untied = decoder_memory(&m, &fused, 1, 1, 1);
        assert_eq!(
            untied.gradients_bytes + untied.activations_bytes,
            params * 4.0
        );
        let tied = decoder_memory(&tiny_decoder(true), &fused, 1, 1, 1);
        assert_eq!(tied.gradients_bytes, (params - 80.0) * 4.0);
        assert_eq!(tied.activations_bytes, 80.0 * 4.0);
    }

    #[test]
    fn recomputed_blocks_hold_their_casts_at_the_forwards_end_and_in_their_own_backward() {
        // Eager autocast, every block recomputed, fused AdamW, one
        // micro-batch. Casts held through the passes: the final norm's 16
        // and the projection's 80 parameters (the embedding makes none);
        // the blocks' 2 x 1000 only while the forward's autocast cache holds
        // them, and one block's again while it recomputes for its backward.
        let m = tiny_decoder(false);
        let setup = TrainingSetup {
            recompute: Recompute::Full,
            ..fused_eager_setup()
        };
        // Stored per sample: each block's fp32 input (32 x 4), the final
        // norm's input and its fp32 copy (32 x 2 x 2), the projection's
        // input (32 x 2) and the loss's fp32 log-probabilities (40 x 4).
        let stored = 2.0 * 128.0 + 128.0 + 64.0 + 160.0;
        // Per sample: a block's backward rebuilds what it keeps without
        // recomputation (100 x 2 and its norms' fp32 inputs 2 x 32 x 2);
        // the loss's backward holds 40 x 8, its forward 40 x 6.
        let (block, loss_backward, loss_forward) = (328.0, 320.0, 240.0);
        for (mbs, workspace) in [
            // Few samples: the forward's end, every cast cached, decides.
            (8.0, 8.0 * loss_forward + 2000.0 * 2.0),
            // Many: a block's backward, its own cast beside it.
            (64.0, 64.0 * block + 1000.0 * 2.0),
        ] {
            assert!(workspace > mbs * loss_backward);
            let d = decoder_memory(&m, &setup, 1, mbs as usize, 1);
            assert_eq!(d.weights_bytes, 96.0 * 2.0, "at {mbs}");
            assert_eq!(d.gradients_bytes, 0.0, "at {mbs}");
            assert_eq!(d.activations_bytes, mbs * stored + workspace, "at {mbs}");
        }
        // Without recomputation the casts are saved for the backward: all
        // of them through the passes, as the engines' 16-bit weights.
        let kept = TrainingSetup {
            recompute: Recompute::None,
            ..setup
        };
        assert_eq!(
            decoder_memory(&m, &kept, 1, 8, 1).weights_bytes,
            2096.0 * 2.0
        );
    }

    #[test]
    fn a_backward_inside_autocast_ends_with_every_cast_beside_the_gradients() {
        // One sample, fused AdamW: the end of the backward is the peak. Its
        // states: fp32 weights, moments and gradients (16 bytes per
        // parameter, 2176 of them); a backward inside autocast keeps the
        // casts of all but the embedding's 80 parameters beside them (2096
        // x 2 bytes), and, tied, the embedding's second gradient too.
        let m = tiny_decoder(false);
        let outside = fused_eager_setup();
        let inside = TrainingSetup {
            backward_in_autocast: true,
            ..outside
        };
        let end = |setup: &TrainingSetup, m: &Model| {
            let d = decoder_memory(m, setup, 1, 1, 1);
            (d.weights_bytes, d.gradients_bytes, d.activations_bytes)
        };
        assert_eq!(end(&outside, &m), (0.0, 2176.0 * 4.0, 0.0));
        assert_eq!(end(&inside, &m), (0.0, 2176.0 * 4.0, 2096.0 * 2.0));
        let tied = tiny_decoder(true);
        assert_eq!(
            end(&inside, &tied),
            (0.0, 2096.0 * 4.0, 80.0 * 4.0 + 2096.0 * 2.0)
        );
        // With every block recomputed the blocks' casts stay cached through
        // the backward: the passes hold them all, as without recomputation.
        let recomputed = TrainingSetup {
            recompute: Recompute::Full,
            ..inside
        };
        let d = decoder_memory(&m, &recomputed, 1, 64, 1);
        assert_eq!(d.weights_bytes, 2096.0 * 2.0);
    }

    #[test]
    fn accumulating_micro_batches_hold_a_layers_new_weight_gradient() {
        // One sample a micro-batch, fused AdamW. Stored per sample: blocks
        // 2 x 100 x 2 and their fp32 norm inputs 2 x 2 x 32 x 2, the final
        // norm 32 x 2 and its fp32 input 32 x 2, the projection 32 x 2 + 40
        // x 4; the loss's workspace 40 x 8.
        let m = tiny_decoder(false);
        let outside = fused_eager_setup();
        let (stored, loss) = (1008.0, 320.0);
        let acts =
            |setup: &TrainingSetup, b: usize| decoder_memory(&m, setup, 1, 1, b).activations_bytes;
        // (The first micro-batch has no gradients to add to: its passes
        // hold the loss's workspace, stored + 320, below the step's peak.)
        assert!(stored + loss < 1000.0 * 4.0);
        // The second's backward writes a block's weight gradient in 16 bits
        // and casts it to fp32 before adding it, its own cast freed: 1000 x
        // (2 + 4 - 2) bytes, more than the loss's.
        assert_eq!(acts(&outside, 2), stored + 1000.0 * 4.0);
        // Autocast's cache keeps the cast: 1000 x (2 + 4).
        let inside = TrainingSetup {
            backward_in_autocast: true,
            ..outside
        };
        assert_eq!(acts(&inside, 2), stored + 1000.0 * 6.0);
        // Engines accumulate into their own buffers.
        assert_eq!(
            decoder_memory(&m, &megatron_setup(), 1, 1, 2).activations_bytes,
            decoder_memory(&m, &megatron_setup(), 1, 1, 1).activations_bytes
        );
    }

    #[test]
    fn the_losss_and_a_blocks_workspaces_are_held_one_at_a_time() {
        // Megatron-LM, every block recomputed. Stored per sample: the
        // blocks' inputs (2 x 32 x 2), the final norm's (32 x 2), the
        // projection's input (32 x 2) and the loss's fp32 softmax (40 x 4).
        // A block's backward rebuilds its 100 elements (200 bytes); the
        // loss's holds 40 16-bit logits (80), freed before the blocks'
        // backward starts: the larger only, not both (280 until
        // 2026-12-05).
        let setup = TrainingSetup {
            recompute: Recompute::Full,
            ..megatron_setup()
        };
        let d = decoder_memory(&tiny_decoder(false), &setup, 1, 64, 1);
        assert_eq!(d.activations_bytes, 64.0 * (416.0 + 200.0));
    }

    #[test]
    fn one_micro_batch_keeps_the_loss_under_interleaving() {
        // Interleaved, pp = 2, v = 2, B = 4: the last device runs virtual
        // stages 1 (block0) and 3 (block1 to the head) and keeps
        // ceil((2 + 1) / 2) = 2 micro-batches of them in flight, but its
        // last chunk runs each micro-batch's backward right after its
        // forward: the loss's fp32 logits (40 x 4 bytes per sample) once.
        // Per sample on Megatron-LM: blocks 200 each, the final norm 64,
        // the projection's input 64 and the loss's 160; the loss's
        // transient 40 x 2.
        let m = tiny_decoder(false);
        let setup = TrainingSetup {
            schedule: Schedule::Interleaved { virtual_stages: 2 },
            ..megatron_setup()
        };
        assert_eq!(in_flight(setup.schedule, 1, 2, 4), 2);
        let layers = layer_bytes(&m, &[1..2, 2..5], 1, &setup);
        assert_eq!(layers.stored, 200.0 + 200.0 + 64.0 + 224.0);
        assert_eq!(layers.loss_stored, 160.0);
        let (.., acts, _) = device_bytes(&layers, &setup, (1, 1, 2), (1, 4), 0.0);
        assert_eq!(acts, 2.0 * 688.0 - 160.0 + 80.0);
        // GPipe keeps every micro-batch's, as every other activation.
        let gpipe = TrainingSetup {
            schedule: Schedule::GPipe,
            ..setup
        };
        let (.., acts, _) = device_bytes(&layers, &gpipe, (1, 1, 2), (1, 4), 0.0);
        assert_eq!(acts, 4.0 * 688.0 + 80.0);
    }

    #[test]
    fn eager_rmsnorm_keeps_its_fp32_output() {
        // Eager RMSNorm (s h = 32): each of two norms also keeps its fp32
        // normalised output, 2 x 32 x 4 = 256 bytes per sample on every
        // rank; an engine's fused norm does not, nor does a LayerNorm.
        let mut rms = tiny_with(Some(true), None);
        let arch = rms.architecture_mut().unwrap();
        arch.norm = crate::model::NormKind::Rmsnorm;
        let layer_norm = tiny_with(Some(true), None);
        let eager = TrainingSetup::default();
        let megatron = TrainingSetup {
            engine: Some(crate::setup::Engine::Megatron),
            ..eager
        };
        let at = |m: &Model, s: &TrainingSetup| stored_activation_bytes_per_sample(m, 0, 2, s);
        assert_eq!(at(&rms, &eager) - at(&layer_norm, &eager), 256.0);
        assert_eq!(at(&rms, &megatron), at(&layer_norm, &megatron));
    }

    #[test]
    fn eager_query_and_key_norms_keep_an_fp32_copy() {
        // Qwen3's query and key norms written as Python (s = 4, 2 heads and
        // 2 key/value heads of 4): each keeps an fp32 copy of its input, 4
        // bytes per element of this rank's s (2 + 2) 4 = 64 elements at tp
        // 1, 32 at tp 2; with an engine (a fused norm) nothing beyond the
        // input the stored count holds.
        let mut plain = tiny_with(Some(true), None);
        let arch = plain.architecture_mut().unwrap();
        (arch.family, arch.norm) = ("qwen3".into(), crate::model::NormKind::Rmsnorm);
        let mut qk = plain.clone();
        let arch = qk.architecture_mut().unwrap();
        arch.qk_norm = true;
        let (eager, megatron) = (TrainingSetup::default(), megatron_setup());
        let at = |m: &Model, tp, s: &TrainingSetup| stored_activation_bytes_per_sample(m, 0, tp, s);
        assert_eq!(at(&qk, 1, &eager) - at(&plain, 1, &eager), 256.0);
        assert_eq!(at(&qk, 2, &eager) - at(&plain, 2, &eager), 128.0);
        assert_eq!(at(&qk, 2, &megatron), at(&plain, 2, &megatron));
        // Recomputing the block keeps only its input.
        let full = TrainingSetup {
            recompute: Recompute::Full,
            ..eager
        };
        assert_eq!(at(&qk, 2, &full), at(&plain, 2, &full));
        // Gemma's norm keeps its fp32 output too, 6 bytes per element net;
        // its two post-norms (on the branches' s h = 32 outputs, whole on
        // every rank) likewise: 6 x 64 / 2 + 2 x 32 x 6 = 576 at tp 2.
        let gemma = |qk_norm, post_norms| {
            let mut m = plain.clone();
            let a = m.architecture_mut().unwrap();
            (a.family, a.qk_norm, a.post_norms) = ("gemma3_text".into(), qk_norm, post_norms);
            m
        };
        assert_eq!(
            at(&gemma(true, true), 2, &eager) - at(&gemma(false, false), 2, &eager),
            576.0
        );
        assert_eq!(
            at(&gemma(true, true), 2, &megatron),
            at(&gemma(false, false), 2, &megatron)
        );
    }

    #[test]
    fn eager_blocks_keep_each_projections_input_cast_and_the_gate() {
        // A Llama-family block (s = 4, h = 8, a gated MLP of f = 32) written
        // as Python under bf16 autocast: q, k and v each cast the norm's
        // fp32 output themselves (2 more 16-bit copies of s h = 32, whole on
        // every rank), gate and up likewise (1 more), and the gate's
        // activation stays beside the product (s f / tp = 64 at tp 2): 3 x
        // 32 x 2 + 64 x 2 = 320 bytes per sample. Phi-3's fused
        // projections keep one copy each; GPT-2's ungated, fused block
        // nothing more; an engine's fused block nothing more.
        let with = |family: &str, activation| {
            let mut m = tiny_with(Some(true), None);
            let a = m.architecture_mut().unwrap();
            (a.family, a.activation) = (family.into(), activation);
            m
        };
        use crate::model::Activation::{Gelu, Swiglu};
        let (eager, megatron) = (eager_autocast_setup(), megatron_setup());
        let extra = |m: &Model, s: &TrainingSetup| eager_projection_extra_bytes(m, 2.0, s);
        assert_eq!(extra(&with("llama", Swiglu), &eager), 320.0);
        assert_eq!(extra(&with("phi3", Swiglu), &eager), 128.0);
        assert_eq!(extra(&with("gpt2", Gelu), &eager), 0.0);
        assert_eq!(extra(&with("llama", Swiglu), &megatron), 0.0);
        // In fp32 nothing is cast; the gate's activation stays.
        let fp32 = TrainingSetup {
            formats: crate::setup::Precision::Fp32.formats(),
            ..eager
        };
        assert_eq!(extra(&with("llama", Swiglu), &fp32), 4.0 * 32.0 / 2.0 * 4.0);
        // ... and the stored bytes carry it: q, k and v written apart keep
        // two copies more than a fused QKV projection, 2 x 32 x 2.
        let (l, g) = (with("llama", Swiglu), with("gpt2", Swiglu));
        let at = |m: &Model| stored_activation_bytes_per_sample(m, 0, 2, &eager);
        assert_eq!(at(&l) - at(&g), 128.0);
    }

    #[test]
    fn explicit_attention_keeps_an_fp32_softmax_in_python_and_selective_drops_it() {
        // Explicit attention (s = 4, 2 heads: 32 scores per sample, 16 at
        // tp 2), no dropout, with the block's own stored count (1000
        // 16-bit elements). Written as Python under bf16 autocast the
        // softmax output is fp32: 2 more bytes per score, 32 at tp 2; an
        // engine's fused softmax writes 16 bits.
        let mut m = tiny_with(Some(false), Some(false));
        m.layers[0].stored_activation_elems_per_sample = Some(1000);
        let (eager, megatron) = (eager_autocast_setup(), megatron_setup());
        assert_eq!(eager_softmax_extra_bytes(&m, 2.0, &eager), 32.0);
        assert_eq!(eager_softmax_extra_bytes(&m, 2.0, &megatron), 0.0);
        // Selective recomputation drops the core from the count: the
        // softmax output and the probabilities (2 x 16 scores x 2 bytes)
        // and, in Python, the fp32 widening (32): 96 bytes at tp 2.
        let selective = |s: &TrainingSetup| TrainingSetup {
            recompute: Recompute::Selective,
            ..*s
        };
        let at = |s: &TrainingSetup| stored_activation_bytes_per_sample(&m, 0, 2, s);
        assert_eq!(at(&eager) - at(&selective(&eager)), 96.0);
        assert_eq!(at(&megatron) - at(&selective(&megatron)), 64.0);
        // Fused attention has no core to drop.
        let mut flash = m.clone();
        flash.architecture_mut().unwrap().flash_attention = Some(true);
        let at_flash = |s: &TrainingSetup| stored_activation_bytes_per_sample(&flash, 0, 2, s);
        assert_eq!(at_flash(&eager), at_flash(&selective(&eager)));
    }

    #[test]
    fn a_models_own_replicated_and_transient_counts_replace_amps() {
        // A block (s h = 32, a = 2, s = 4) whose model counts 1000 16-bit
        // elements stored per sample, 400 of them whole on every rank, and
        // 300 held by its backward, 100 of them whole. fp16, tp 4.
        let fp16 = TrainingSetup {
            formats: crate::setup::Precision::Fp16.formats(),
            ..TrainingSetup::default()
        };
        let mut m = tiny_with(Some(false), Some(true));
        let l = &mut m.layers[0];
        l.stored_activation_elems_per_sample = Some(1000);
        l.replicated_activation_elems_per_sample = Some(400);
        l.backward_transient_elems_per_sample = Some(300);
        l.replicated_backward_transient_elems_per_sample = Some(100);
        assert_eq!(
            stored_activation_bytes_per_sample(&m, 0, 4, &fp16),
            (400.0 + 600.0 / 4.0) * 2.0
        );
        // The shape's own estimate (2 x 2 a s^2 / t = 16 bytes) gives way.
        assert_eq!(
            transient_bytes_per_sample(&m, 0, 4, &fp16),
            (100.0 + 200.0 / 4.0) * 2.0
        );
        // Sequence parallelism does not split what the model says is whole.
        let sp = TrainingSetup {
            sequence_parallel: true,
            ..fp16
        };
        assert_eq!(
            stored_activation_bytes_per_sample(&m, 0, 4, &sp),
            (400.0 + 600.0 / 4.0) * 2.0
        );
        // Without a replicated share the transient divides whole; in bf16
        // the elements are 2 bytes too, in fp32 4.
        m.layers[0].replicated_backward_transient_elems_per_sample = None;
        assert_eq!(
            transient_bytes_per_sample(&m, 0, 4, &fp16),
            300.0 / 4.0 * 2.0
        );
        let fp32 = TrainingSetup {
            formats: crate::setup::Precision::Fp32.formats(),
            ..fp16
        };
        assert_eq!(
            transient_bytes_per_sample(&m, 0, 4, &fp32),
            300.0 / 4.0 * 4.0
        );
        // Any kind of layer may carry one: here a vocabulary projection's
        // replaces the loss's estimate.
        m.layers[0].kind = LayerKind::VocabProjection;
        assert_eq!(
            transient_bytes_per_sample(&m, 0, 4, &fp16),
            300.0 / 4.0 * 2.0
        );
    }

    #[test]
    fn given_counts_keep_norm_and_projection_inputs_whole_without_sp() {
        // A block (s h = 32) whose model counts 1000 16-bit elements per
        // sample, at tp 2 in bf16: without sequence parallelism the norms'
        // inputs (2 s h), the QKV and MLP inputs (s h each) and, with
        // dropout, its masks (s h) stay whole on each rank.
        let setup = TrainingSetup::default();
        let at = |dropout, setup: &TrainingSetup| {
            let mut m = tiny_with(Some(true), dropout);
            m.layers[0].stored_activation_elems_per_sample = Some(1000);
            stored_activation_bytes_per_sample(&m, 0, 2, setup)
        };
        assert_eq!(at(Some(false), &setup), (128.0 + 872.0 / 2.0) * 2.0);
        assert_eq!(at(Some(true), &setup), (160.0 + 840.0 / 2.0) * 2.0);
        // Unknown dropout: the count divides whole, as before.
        assert_eq!(at(None, &setup), 1000.0);
        // Sequence parallelism splits everything.
        let sp = TrainingSetup {
            sequence_parallel: true,
            ..setup
        };
        assert_eq!(at(Some(true), &sp), 1000.0);
    }

    #[test]
    fn fused_attention_holds_no_score_tensors() {
        let with = |flash: Option<bool>| tiny_with(flash, None);
        let fp16 = TrainingSetup {
            formats: crate::setup::Precision::Fp16.formats(),
            ..TrainingSetup::default()
        };
        // s = 4, h = 8, a = 2, tp 2: the score gradients are 2 x 2 a s^2 / t
        // = 64 bytes, the attention core 5 a s^2 / t = 80 bytes.
        for flash in [None, Some(false)] {
            let m = with(flash);
            assert_eq!(transient_bytes_per_sample(&m, 0, 2, &fp16), 64.0);
            assert_eq!(attention_core_bytes(&m, 2.0, &fp16), 80.0);
        }
        let fused = with(Some(true));
        assert_eq!(transient_bytes_per_sample(&fused, 0, 2, &fp16), 0.0);
        assert_eq!(attention_core_bytes(&fused, 2.0, &fp16), 0.0);
        // Korthikanti's s h (10 + 24 / t) without the 5 a s / (h t) term.
        assert_eq!(block_full_bytes(&fused, 0, 2.0, &fp16), 32.0 * 22.0);
        assert_eq!(
            block_full_bytes(&with(Some(false)), 0, 2.0, &fp16),
            32.0 * 24.5
        );
        // Full recomputation rebuilds the block without scores.
        let full = TrainingSetup {
            recompute: Recompute::Full,
            ..fp16
        };
        assert_eq!(transient_bytes_per_sample(&fused, 0, 2, &full), 32.0 * 22.0);
    }

    #[test]
    fn the_loss_kernel_sets_the_logits_memory() {
        // A vocabulary projection of 40 logits per sample (s = 4, vocab 10)
        // at tp 2: 20 logits per rank. Both kernels keep the fp32 softmax
        // (4 bytes per logit) and the 16-bit input (s h = 32 elements).
        let mut m = tiny();
        m.layers[0] = Layer {
            name: "head".into(),
            kind: LayerKind::VocabProjection,
            params: 80,
            output_elems_per_sample: 40,
            forward_flops_per_sample: None,
            tied_to: None,
            stored_activation_elems_per_sample: None,
            replicated_activation_elems_per_sample: None,
            backward_transient_elems_per_sample: None,
            replicated_backward_transient_elems_per_sample: None,
            forward_send_extra_bytes: 0,
        };
        let with = |engine, cross_entropy| TrainingSetup {
            engine,
            cross_entropy,
            ..TrainingSetup::default()
        };
        for ce in [
            None,
            Some(CrossEntropy::Pytorch),
            Some(CrossEntropy::Megatron),
        ] {
            assert_eq!(
                stored_activation_bytes_per_sample(&m, 0, 2, &with(None, ce)),
                32.0 * 2.0 + 20.0 * 4.0
            );
        }
        // PyTorch's cross_entropy (no engine, or torchtitan): 8 bytes per
        // logit beyond the stored softmax, the two fp32 gradients of the
        // backward pass.
        let pytorch = 20.0 * 8.0;
        assert_eq!(
            transient_bytes_per_sample(&m, 0, 2, &with(None, None)),
            pytorch
        );
        let titan = with(Some(crate::setup::Engine::Torchtitan), None);
        assert_eq!(transient_bytes_per_sample(&m, 0, 2, &titan), pytorch);
        // Megatron-LM's in-place loss: the bf16 logits or their gradient,
        // 2 bytes per logit; DeepSpeed (Megatron-DeepSpeed's GPT) the same.
        let megatron = 20.0 * 2.0;
        for e in [
            crate::setup::Engine::Megatron,
            crate::setup::Engine::DeepSpeed,
        ] {
            assert_eq!(
                transient_bytes_per_sample(&m, 0, 2, &with(Some(e), None)),
                megatron
            );
        }
        // The kernel named wins over the engine's.
        let named = with(None, Some(CrossEntropy::Megatron));
        assert_eq!(transient_bytes_per_sample(&m, 0, 2, &named), megatron);
    }

    #[test]
    fn a_foreach_adam_step_is_a_peak_of_its_own() {
        use crate::setup::OptimizerStep;
        // 1M parameters, 500k per rank at tp 2: the foreach step's 2 MB of
        // sqrt(v) dwarf the block's few kilobytes of activations.
        let mut m = tiny();
        m.layers[0].params = 1_000_000;
        let with = |step| TrainingSetup {
            optimizer_step: Some(step),
            ..TrainingSetup::default()
        };
        let (foreach, fused) = (with(OptimizerStep::Foreach), with(OptimizerStep::Fused));
        assert_eq!(optimizer_step_bytes_per_param(&foreach, 4), 4.0);
        assert_eq!(optimizer_step_bytes_per_param(&fused, 4), 0.0);
        let zero1 = TrainingSetup {
            optimizer_sharding: OptimizerSharding::Zero1,
            ..foreach
        };
        assert_eq!(optimizer_step_bytes_per_param(&zero1, 4), 1.0);
        // No engine: PyTorch's default foreach.
        assert_eq!(
            optimizer_step_bytes_per_param(&TrainingSetup::default(), 1),
            4.0
        );
        let acts = |setup: &TrainingSetup| {
            let chunk = 0..1;
            device_memory(
                &m,
                std::slice::from_ref(&chunk),
                2,
                1,
                0,
                1,
                1,
                1,
                setup,
                0.0,
            )
            .3
        };
        assert!(acts(&fused) < 1e5, "{}", acts(&fused));
        assert_eq!(acts(&foreach), 500_000.0 * 4.0);
        // The partitioner's tables hold the step's own constraint: states
        // (18 B) and the temporary (4 B) per parameter, no activations.
        let mut c = crate::cluster::builtin::homogeneous();
        c.nodes.truncate(1);
        c.nodes[0].gpus = 2;
        let grid = DeviceGrid::new(&c, 2, 1, 1, &Placement::artifact_default(&c));
        let t = stage_memory_tables(&m, &c, &grid, 1, 1, &foreach, RESERVE);
        let step = t.step.clone().unwrap();
        assert_eq!(step.fixed, RESERVE);
        assert_eq!(
            step.states[1] + step.temporaries[1],
            500_000.0 * (18.0 + 4.0)
        );
        assert!(stage_memory_tables(&m, &c, &grid, 1, 1, &fused, RESERVE)
            .step
            .is_none());
        // A capacity between the passes' peak and the step's: only the
        // step's constraint refuses.
        let mut tight = t.clone();
        let passes = tight.passes_bytes(0, 0, 1);
        tight.capacity_bytes[0] = passes.max(RESERVE + 500_000.0 * 18.0) + 1.0;
        assert!(tight.passes_bytes(0, 0, 1) <= tight.capacity_bytes[0]);
        assert!(!tight.fits(0, 0, 1));
    }

    #[test]
    fn sharding_and_fp32_change_state_bytes() {
        let with = |sharding| TrainingSetup {
            optimizer_sharding: sharding,
            formats: crate::setup::Precision::Fp16.formats(),
            ..Default::default()
        };
        assert_eq!(
            state_bytes(&with(OptimizerSharding::Zero1), 4).total(),
            2.0 + 4.0 + 3.0
        );
        assert_eq!(
            state_bytes(&with(OptimizerSharding::Zero2), 4).total(),
            2.0 + 0.5 + 3.0
        );
        assert_eq!(
            state_bytes(&with(OptimizerSharding::Zero3), 4).total(),
            0.5 + 0.5 + 3.0
        );
        assert_eq!(state_bytes(&with(OptimizerSharding::None), 1).total(), 16.0);
        // bf16 keeps fp32 gradients: 18 bytes per parameter, 4 of them
        // gradients (reduce-scattered to 1 with ZeRO-2 over 4).
        assert_eq!(state_bytes(&TrainingSetup::default(), 1).total(), 18.0);
        let bf16_zero2 = TrainingSetup {
            optimizer_sharding: OptimizerSharding::Zero2,
            ..Default::default()
        };
        assert_eq!(state_bytes(&bf16_zero2, 4).total(), 2.0 + 1.0 + 3.0);
        let f = TrainingSetup {
            formats: crate::setup::Precision::Fp32.formats(),
            ..Default::default()
        };
        assert_eq!(state_bytes(&f, 4).total(), 4.0 + 8.0 + 8.0);
        assert_eq!(activation_bytes(&f), 4.0);
    }

    #[test]
    fn selective_recompute_and_sequence_parallel_follow_korthikanti() {
        // s = 4, h = 8, a = 2, t = 2: full 32 (10 + 12 + 2.5) = 784 bytes;
        // selective drops 5 a s^2 / t = 80; sequence parallelism splits the
        // 10 s h = 320 replicated bytes in two.
        let m = tiny();
        let sel = TrainingSetup {
            recompute: Recompute::Selective,
            ..Default::default()
        };
        assert_eq!(stored_activation_bytes_per_sample(&m, 0, 2, &sel), 704.0);
        assert_eq!(transient_bytes_per_sample(&m, 0, 2, &sel), 64.0 + 80.0);
        let sp = TrainingSetup {
            sequence_parallel: true,
            ..Default::default()
        };
        assert_eq!(
            stored_activation_bytes_per_sample(&m, 0, 2, &sp),
            784.0 - 160.0
        );
    }

    #[test]
    fn recompute_keeps_only_block_inputs() {
        let m = tiny();
        let r = TrainingSetup {
            recompute: Recompute::Full,
            ..Default::default()
        };
        assert_eq!(stored_activation_bytes_per_sample(&m, 0, 2, &r), 64.0);
        assert_eq!(transient_bytes_per_sample(&m, 0, 2, &r), 64.0 + 784.0);
    }

    #[test]
    fn in_flight_follows_the_schedule() {
        assert_eq!(in_flight(Schedule::OneFOneB, 0, 4, 8), 4);
        assert_eq!(in_flight(Schedule::OneFOneB, 3, 4, 8), 1);
        assert_eq!(in_flight(Schedule::OneFOneB, 0, 4, 2), 2);
        assert_eq!(in_flight(Schedule::GPipe, 3, 4, 8), 8);
        // Interleaved, pp = 4, v = 2, B = 8: device 0 warms up 2 x 3 + 4 =
        // 10 chunk forwards and holds 11 chunks = 5.5 -> 6 micro-batches;
        // the last device warms up 4 and holds 5 -> 3.
        let il = Schedule::Interleaved { virtual_stages: 2 };
        assert_eq!(in_flight(il, 0, 4, 8), 6);
        assert_eq!(in_flight(il, 3, 4, 8), 3);
        // B = pp: every forward first.
        assert_eq!(in_flight(il, 3, 4, 4), 4);
        assert_eq!(
            in_flight(Schedule::Interleaved { virtual_stages: 1 }, 0, 4, 8),
            4
        );
    }

    #[test]
    fn given_stored_elements_win_over_the_formula() {
        let mut m = tiny();
        m.layers[0].stored_activation_elems_per_sample = Some(100);
        let opts = TrainingSetup::default();
        assert_eq!(stored_activation_bytes_per_sample(&m, 0, 2, &opts), 100.0);
        // Recomputing the block rebuilds what it would keep: the given
        // count, not the formula's (transient beside the attention
        // gradients, 64 bytes for this block at tp 2).
        let full = TrainingSetup {
            recompute: Recompute::Full,
            ..opts
        };
        let attn = transient_bytes_per_sample(&m, 0, 2, &opts);
        assert_eq!(transient_bytes_per_sample(&m, 0, 2, &full), attn + 100.0);
    }

    /// A stage holding both ends of a tie holds the shared weights once, in
    /// the partitioner's tables as in `plan_memory`: one-stage GPT-2 (its
    /// embedding and vocabulary projection tied) is priced the same by
    /// both, and fits a GPU with less room than a second copy of the
    /// projection's states would take. Until 2026-12-05 the tables counted
    /// it twice and the search refused such plans that `amp eval` priced
    /// as fitting. A stage holding the projection alone pays it whole.
    #[test]
    fn tables_count_tied_weights_once_on_a_stage_holding_both() {
        let m = models::amp_gpt2();
        let c = clusters::homogeneous();
        let setup = TrainingSetup {
            formats: crate::setup::Precision::Fp16.formats(),
            ..TrainingSetup::default()
        };
        let n = m.num_layers();
        let grid = DeviceGrid::new(&c, 1, 16, 1, &Placement::artifact_default(&c));
        let plan = crate::search::plan_from_grid(&grid, &[0, n], 1, 2, &setup);
        let peak = plan_memory(&m, &c, &plan, RESERVE)
            .iter()
            .map(|d| d.peak_bytes)
            .fold(0.0, f64::max);
        let t = stage_memory_tables(&m, &c, &grid, 1, 2, &setup, RESERVE);
        let head = 52_256.0 * 1024.0 * state_bytes(&setup, 16).total();
        assert_eq!(t.shared.len(), 1);
        assert_eq!((t.shared[0].layer, t.shared[0].tied_to), (28, 0));
        assert_eq!(t.shared[0].bytes, head);
        let table = t.peak_bytes(0, 0, n);
        assert!((table - peak).abs() <= 1e-9 * peak, "{table} != {peak}");
        let twice =
            t.fixed_bytes[0] + t.prefix_bytes[0][n] - t.prefix_bytes[0][0] + t.workspace.max(0, n);
        assert!((twice - head - table).abs() <= 1e-9 * peak);
        let mut tight = t.clone();
        tight.capacity_bytes[0] = peak + head / 2.0;
        assert!(tight.fits(0, 0, n));
        tight.capacity_bytes[0] = peak * (1.0 - 1e-6);
        assert!(!tight.fits(0, 0, n));
        // Without the embedding the projection's weights are the stage's
        // own: nothing comes off.
        let alone =
            t.fixed_bytes[0] + t.prefix_bytes[0][n] - t.prefix_bytes[0][1] + t.workspace.max(1, n);
        assert_eq!(t.passes_bytes(0, 1, n), alone);
        tight.capacity_bytes[0] = alone * (1.0 - 1e-9);
        assert!(!tight.fits(0, 1, n));
        tight.capacity_bytes[0] = alone;
        assert!(tight.fits(0, 1, n));
    }

    /// The partitioner's tables price a stage as `plan_memory` does, the
    /// stage holding the tied head alone and the one holding no block
    /// included (until 2026-12-05 every stage was charged the largest
    /// block's workspace, and a stage holding both ends of the tie its
    /// weights twice).
    #[test]
    fn tables_agree_with_plan_memory() {
        let m = models::amp_gpt2();
        let c = clusters::homogeneous();
        let opts = TrainingSetup::default();
        let grid = DeviceGrid::new(&c, 2, 2, 4, &Placement::artifact_default(&c));
        let t = stage_memory_tables(&m, &c, &grid, 2, 8, &opts, RESERVE);
        for bounds in [[0, 8, 14, 20, 30], [0, 2, 14, 28, 30], [0, 1, 2, 29, 30]] {
            let plan = crate::search::plan_from_grid(&grid, &bounds, 2, 8, &opts);
            let mem = plan_memory(&m, &c, &plan, RESERVE);
            assert_eq!(mem.len(), 16);
            for (j, s) in plan.stages.iter().enumerate() {
                let table = t.peak_bytes(j, s.first_layer, s.end_layer);
                let dev = mem.iter().find(|d| d.stage == j).unwrap();
                assert!(
                    (table - dev.peak_bytes).abs() <= 1e-9 * dev.peak_bytes,
                    "{bounds:?} stage {j}: {table} != {}",
                    dev.peak_bytes
                );
                assert_eq!(t.capacity_bytes[j], 15360.0 * (1u64 << 20) as f64);
            }
        }
    }

    #[test]
    fn tables_agree_with_plan_memory_under_eager_autocast() {
        // Eager autocast's phases (no gradients before the first backward,
        // no casts in the step, a tied embedding's second gradient, the
        // recomputed blocks' casts only at the forward's end and in their
        // own backward) priced the same by the partitioner's tables, the
        // split check and `amp eval`, at sizes where the passes or the step
        // is the peak, the forward's end or a block's backward.
        let eager = eager_autocast_setup();
        let fused = fused_eager_setup();
        let recomputed = TrainingSetup {
            recompute: Recompute::Full,
            ..fused
        };
        let inside = TrainingSetup {
            backward_in_autocast: true,
            ..fused
        };
        let inside_recomputed = TrainingSetup {
            backward_in_autocast: true,
            ..recomputed
        };
        for (tied, setup, dp, pp, mbs, b) in [
            (false, fused, 1, 1, 1, 2),
            (true, eager, 1, 2, 1, 4),
            (false, inside, 2, 2, 1, 4),
            (false, recomputed, 1, 1, 1, 3),
            (true, inside, 1, 1, 1, 1),
            (false, inside, 1, 2, 64, 2),
            (true, inside_recomputed, 1, 1, 64, 2),
            (false, inside_recomputed, 2, 2, 1, 4),
            (true, recomputed, 1, 1, 1, 1),
            (true, recomputed, 1, 1, 64, 2),
            (false, recomputed, 1, 2, 4096, 4),
            (false, recomputed, 2, 2, 1, 4),
            (false, eager, 1, 1, 64, 1),
            (true, eager, 1, 1, 1, 1),
            (true, fused, 1, 1, 1, 1),
            (true, fused, 1, 1, 64, 2),
            (false, fused, 2, 1, 64, 1),
            (true, eager, 1, 2, 64, 1),
            (true, eager, 2, 2, 64, 4),
            (false, fused, 1, 2, 1, 2),
        ] {
            let m = tiny_decoder(tied);
            let mut c = clusters::homogeneous();
            c.nodes.truncate(1);
            c.nodes[0].gpus = dp * pp;
            let grid = DeviceGrid::new(&c, 1, dp, pp, &Placement::artifact_default(&c));
            let t = stage_memory_tables(&m, &c, &grid, mbs, b, &setup, RESERVE);
            let splits: &[&[usize]] = if pp == 1 {
                &[&[0, 5]]
            } else {
                &[&[0, 2, 5], &[0, 1, 5], &[0, 4, 5]]
            };
            for bounds in splits {
                let plan = crate::search::plan_from_grid(&grid, bounds, mbs, b, &setup);
                let mem = plan_memory(&m, &c, &plan, RESERVE);
                let caps = replica_capacities(&c, &plan);
                let check = SplitMemoryCheck::new(&m, &plan, RESERVE, &caps).unwrap();
                for (j, s) in plan.stages.iter().enumerate() {
                    let table = t.peak_bytes(j, s.first_layer, s.end_layer);
                    let dev = mem.iter().find(|d| d.stage == j).unwrap();
                    assert!(
                        (table - dev.peak_bytes).abs() <= 1e-9 * dev.peak_bytes,
                        "{tied} {dp} {pp} {mbs} {b} {bounds:?} stage {j}: {table} != {}",
                        dev.peak_bytes
                    );
                }
                // The split check is a bound: a capacity just above the
                // fullest device's peak must pass it, one below must not
                // pass `amp eval`.
                let peak = mem.iter().map(|d| d.peak_bytes).fold(0.0, f64::max);
                let mut tight = c.clone();
                tight.nodes[0].gpu_memory_bytes = Some(peak.ceil() as u64);
                let caps = replica_capacities(&tight, &plan);
                let check_tight = SplitMemoryCheck::new(&m, &plan, RESERVE, &caps).unwrap();
                assert!(check_tight.some_split_may_fit(&plan));
                assert!(plan_fits(&m, &tight, &plan, RESERVE));
                tight.nodes[0].gpu_memory_bytes = Some(peak.floor() as u64 - 1);
                assert!(!plan_fits(&m, &tight, &plan, RESERVE));
                assert!(check.some_split_may_fit(&plan));
            }
        }
    }

    #[test]
    fn retained_outputs_count_the_earlier_micro_batches_in_the_buffers() {
        assert_eq!(retained_outputs(1), 0.0);
        assert_eq!(retained_outputs(2), 1.0);
        assert_eq!(retained_outputs(3), 2.0);
        assert_eq!(retained_outputs(8), 2.0);
        assert_eq!(retained_outputs(0), 0.0);
    }

    /// DeepSpeed's pipeline engine (the lockstep exchange) keeps the last
    /// stage's output of up to two earlier micro-batches: for AMP's GPT-2,
    /// the fp32 logits, 4 bytes per logit of each rank's half of the
    /// vocabulary at tp 2. Nothing more on the other stages, nor with
    /// blocking sends (Megatron-LM, torchtitan); the partitioner's tables
    /// charge the same to the stage holding the last layer.
    #[test]
    fn deepspeed_keeps_earlier_logits_on_the_last_stage() {
        let m = models::amp_gpt2();
        let c = clusters::homogeneous();
        let grid = DeviceGrid::new(&c, 2, 2, 4, &Placement::artifact_default(&c));
        let blocking = TrainingSetup {
            formats: crate::setup::Precision::Fp16.formats(),
            ..TrainingSetup::default()
        };
        let lockstep = TrainingSetup {
            stage_exchange: Some(StageExchange::Lockstep),
            ..blocking
        };
        let bounds = [0, 8, 14, 20, 30];
        // Per sample: 1024 tokens x 52256 logits, half on each rank.
        let per_sample = 1024.0 * 52256.0 / 2.0 * 4.0;
        let mbs = 2;
        for (b, kept) in [(1, 0.0), (2, 1.0), (3, 2.0), (8, 2.0)] {
            let plain = crate::search::plan_from_grid(&grid, &bounds, mbs, b, &blocking);
            let ds = crate::search::plan_from_grid(&grid, &bounds, mbs, b, &lockstep);
            let (plain_mem, ds_mem) = (
                plan_memory(&m, &c, &plain, RESERVE),
                plan_memory(&m, &c, &ds, RESERVE),
            );
            for (x, y) in plain_mem.iter().zip(&ds_mem) {
                let want = if x.stage == 3 {
                    kept * mbs as f64 * per_sample
                } else {
                    0.0
                };
                assert!(
                    (y.peak_bytes - x.peak_bytes - want).abs() < 1.0,
                    "b {b} stage {}: {} more",
                    x.stage,
                    y.peak_bytes - x.peak_bytes
                );
            }
            let tables = |setup: &TrainingSetup| {
                let t = stage_memory_tables(&m, &c, &grid, mbs, b, setup, RESERVE);
                t.passes_bytes(3, 20, 30)
            };
            let got = tables(&lockstep) - tables(&blocking);
            assert!(
                (got - kept * mbs as f64 * per_sample).abs() < 1.0,
                "b {b}: {got}"
            );
        }
        // The cast to fp32 keeps nothing of its own: the loss keeps that
        // copy as its softmax, which the projection counts.
        assert_eq!(
            stored_activation_bytes_per_sample(&m, 29, 2, &blocking),
            0.0
        );
    }

    /// What a model keeps on every GPU outside its layers (the AMP
    /// TransGAN script's discriminator) is held by every device of every
    /// stage, as "other" memory beside the reserve: the same peaks, tables
    /// and verdicts as a reserve that much larger, and a plan that fits with
    /// less room than it no longer fits.
    #[test]
    fn resident_bytes_are_on_every_device() {
        let plain = models::amp_gpt2();
        let resident = 1_500_000_000u64;
        let with = Model {
            resident_bytes_per_device: Some(resident),
            ..plain.clone()
        };
        let r = resident as f64;
        let c = clusters::homogeneous();
        let setup = TrainingSetup::default();
        let grid = DeviceGrid::new(&c, 2, 2, 4, &Placement::artifact_default(&c));
        let plan = crate::search::plan_from_grid(&grid, &[0, 8, 14, 20, 30], 2, 8, &setup);
        let (a, b) = (
            plan_memory(&with, &c, &plan, RESERVE),
            plan_memory(&plain, &c, &plan, RESERVE),
        );
        assert_eq!(a.len(), 16);
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x.other_bytes, y.other_bytes + r);
            assert_eq!(x.peak_bytes, y.peak_bytes + r);
            assert_eq!(
                x.weights_bytes + x.activations_bytes,
                y.weights_bytes + y.activations_bytes
            );
        }
        assert_eq!(a, plan_memory(&plain, &c, &plan, RESERVE + r));
        let tables = |m: &Model, reserve| stage_memory_tables(m, &c, &grid, 2, 8, &setup, reserve);
        assert_eq!(tables(&with, RESERVE), tables(&plain, RESERVE + r));
        assert_eq!(
            tables(&with, RESERVE).fixed_bytes[0],
            tables(&plain, RESERVE).fixed_bytes[0] + r
        );
        // Room on the fullest device, less than the resident bytes: the
        // plain model fits there and the one with them does not.
        let room = b
            .iter()
            .map(|d| d.capacity_bytes.unwrap() - d.peak_bytes)
            .fold(f64::INFINITY, f64::min);
        let reserve = RESERVE + room - r / 2.0;
        assert!(plan_fits(&plain, &c, &plan, reserve));
        assert!(!plan_fits(&with, &c, &plan, reserve));
        // The check before the split: the same verdict as the larger
        // reserve at every reserve, and some it turns.
        let caps = replica_capacities(&c, &plan);
        let check = |m: &Model, reserve| {
            SplitMemoryCheck::new(m, &plan, reserve, &caps)
                .unwrap()
                .some_split_may_fit(&plan)
        };
        let mut turned = 0;
        for reserve in (0..64).map(|k| 0.25e9 * k as f64) {
            assert_eq!(
                check(&with, reserve),
                check(&plain, reserve + r),
                "{reserve}"
            );
            turned += usize::from(check(&with, reserve) != check(&plain, reserve));
        }
        assert!(turned > 0);
    }

    /// `plan_fits` gives `plan_memory`'s verdict: fits when no device
    /// overflows, at reserves and micro-batches on both sides of the line,
    /// on one GPU type and on V100s beside T4s (of 16,160 and 15,360 MiB),
    /// with tp-8 replicas over a V100 and a T4 node; on each, some plans
    /// fit and some do not.
    #[test]
    fn plan_fits_is_plan_memorys_verdict() {
        let m = models::amp_gpt2();
        let cases = [
            (clusters::homogeneous(), (2, 2, 4), vec![0, 8, 14, 20, 30]),
            (clusters::het_cluster(), (2, 2, 4), vec![0, 8, 14, 20, 30]),
            (clusters::het_cluster(), (8, 1, 2), vec![0, 15, 30]),
        ];
        for (c, (tp, dp, pp), bounds) in cases {
            let grid = DeviceGrid::new(&c, tp, dp, pp, &Placement::artifact_default(&c));
            let (mut fit, mut over) = (0, 0);
            // DeepSpeed's engine too: its last stage keeps earlier logits.
            let lockstep = TrainingSetup {
                stage_exchange: Some(StageExchange::Lockstep),
                ..TrainingSetup::default()
            };
            for (mbs, setup) in [1, 2, 4, 8, 16]
                .into_iter()
                .flat_map(|mbs| [(mbs, TrainingSetup::default()), (mbs, lockstep)])
            {
                let plan = crate::search::plan_from_grid(&grid, &bounds, mbs, 8, &setup);
                // Steps of 0.25 GB, finer than the two capacities' gap.
                for reserve in (0..64).map(|k| 0.25e9 * k as f64) {
                    let all = plan_memory(&m, &c, &plan, reserve);
                    let want = all.iter().all(|d| d.overflow_bytes().is_none());
                    assert_eq!(
                        plan_fits(&m, &c, &plan, reserve),
                        want,
                        "{} tp {tp}: mbs {mbs} reserve {reserve}",
                        c.name
                    );
                    if want {
                        fit += 1;
                    } else {
                        over += 1;
                    }
                }
            }
            assert!(fit > 0 && over > 0, "{}: {fit} fit, {over} over", c.name);
        }
    }

    #[test]
    fn unknown_capacity_is_no_constraint() {
        let m = tiny();
        let c = Cluster {
            name: "x".into(),
            nodes: vec![Node {
                gpu_type: "X".into(),
                gpus: 1,
                intra_bytes_per_s: 1e9,
                inter_bytes_per_s: 1e9,
                nics: 1,
                gpu_memory_bytes: None,
                price_per_hour: None,
            }],
            links: Vec::new(),
        };
        let plan = Plan {
            micro_batch: 1,
            num_micro_batches: 1,
            replica_micro_batches: Vec::new(),
            stages: vec![Stage {
                first_layer: 0,
                end_layer: 1,
                replicas: vec![vec![Device { node: 0, gpu: 0 }]],
            }],
            setup: TrainingSetup::default(),
        };
        let mem = plan_memory(&m, &c, &plan, RESERVE);
        assert_eq!(mem[0].capacity_bytes, None);
        assert_eq!(mem[0].overflow_bytes(), None);
    }
}

//! Model states per parameter: weights, gradients and optimizer state by
//! number format, sharding and phase of the iteration, and eager autocast's
//! casts.

use super::*;

/// Gradient copies a replica holds when data parallelism is on: the
/// gradients themselves and the contiguous buffer the all-reduce reads
/// (PyTorch DDP's buckets, which are not views of the gradients by default;
/// DeepSpeed's flattened all-reduce buffer). A count, not a fit. Megatron-LM
/// keeps one (`state_bytes`), torchtitan's FSDP2 none beside its shards.
pub const DP_GRADIENT_COPIES: f64 = 2.0;

/// Bytes per stored activation element in 16-bit training.
pub(super) const HALF_BYTES: f64 = 2.0;

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
    if fsdp2(setup) {
        // The shards are the parameters in their own format (fp32: the
        // master weights of mixed precision, else the weights), their
        // gradients in the reduction's format and Adam's moments; the
        // 16-bit parameters are FSDP2's unsharded copies, which come and go
        // ([`phase_state_bytes`]). No all-reduce bucket: the reduction
        // reads a buffer of one unit's gradients.
        let d = if sharding >= OptimizerSharding::Zero3 {
            d
        } else {
            1.0
        };
        let own = if f.master_weights.is_some() {
            0.0
        } else {
            f.weights.bytes()
        };
        return StateBytes {
            weights: 0.0,
            gradients: f.gradients.bytes() / d,
            optimizer: (optimizer + own) / d,
        };
    }
    if deepspeed_bf16_optimizer(setup) {
        // DeepSpeed's `BF16_Optimizer` (deepspeed/runtime/bf16_optimizer.py)
        // partitions the fp32 master weights and Adam's moments over the
        // replicas as ZeRO-1 does, whatever the ZeRO stage, and adds the
        // 16-bit `.grad`s into a flat buffer of the whole stage's gradients
        // in `grad_acc_dtype` (the setup's gradients): both are there from
        // the backward's end through the step.
        return StateBytes {
            weights: f.weights.bytes(),
            gradients: f.gradients.bytes() + f.weights.bytes(),
            optimizer: optimizer / d,
        };
    }
    let optimizer = if sharding >= OptimizerSharding::Zero1 {
        optimizer / d
    } else {
        optimizer
    };
    let gradients = if sharding >= OptimizerSharding::Zero2 {
        // Reduce-scattered: each replica keeps its shard (DeepSpeed's
        // bucket being reduced is [`engine_buffer_bytes`]').
        f.gradients.bytes() / d
    } else if dp > 1
        && setup.engine != Some(crate::setup::Engine::Megatron)
        && !deepspeed_reduces_in_buckets(setup)
        && !flattens_at_reduction(setup)
    {
        // The gradients and the contiguous buffer the all-reduce reads.
        // Not Megatron-LM's: its `main_grad`s are views into the bucketed
        // buffer the collective reads (megatron/core/distributed/
        // param_and_grad_buffer.py, `param.main_grad = self._get(...,
        // BufferType.GRAD)`), one copy whatever the replicas. Nor ZeRO-1's
        // under DeepSpeed, whose reduction reads its bucket
        // ([`engine_buffer_bytes`]), nor DeepSpeed's pipeline engine's
        // without ZeRO, which flattens them at the reduction
        // ([`flattens_at_reduction`]).
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

/// Elements of DeepSpeed's gradient-reduction bucket, `reduce_bucket_size`'s
/// default (deepspeed/runtime/zero/config.py). With `contiguous_gradients`
/// (its default) ZeRO-2 allocates a bucket of that many 16-bit elements at
/// each micro-step's first gradient, and a second with `overlap_comm`
/// (stage_1_and_2.py `setup_buckets`), kept until the next micro-step's;
/// ZeRO-3 allocates one per gradient type when the optimizer is built
/// (stage3.py), for good.
pub const DEEPSPEED_REDUCE_BUCKET_ELEMS: f64 = 5e8;

/// Elements of DeepSpeed ZeRO-3's parameter prefetch bucket,
/// `stage3_prefetch_bucket_size`'s default: the weights gathered ahead of
/// the layer that needs them.
pub const DEEPSPEED_PREFETCH_BUCKET_ELEMS: f64 = 5e7;

/// Elements of parameters DeepSpeed ZeRO-3 looks ahead, when a unit's
/// forward ends, for the unit's next use before it releases its gathered
/// weights: `stage3_max_reuse_distance`'s default
/// (deepspeed/runtime/zero/config.py; see `deepspeed_kept_gathered`).
pub const DEEPSPEED_MAX_REUSE_DISTANCE_ELEMS: f64 = 1e9;

/// Which of `model`'s layers DeepSpeed's ZeRO-3 keeps gathered from their
/// forward to their backward on a rank of tensor-parallel degree `tp`
/// under `setup`: at the end of a unit's forward, its parameter coordinator
/// walks the step's recorded trace onwards, adding up the parameters of
/// each unit it passes, and keeps the unit's weights if it meets the unit
/// again before [`DEEPSPEED_MAX_REUSE_DISTANCE_ELEMS`]
/// (`__params_to_release` in deepspeed/runtime/zero/
/// partitioned_param_coordinator.py). The next use of layer `l` is its
/// backward, after the later layers' forwards and backwards: it is kept
/// when twice their parameters fall short of the distance, so a suffix of
/// the layers, every one in a small model. Those are not gathered again for
/// their backward, and are all there at its start. None elsewhere.
pub(crate) fn deepspeed_kept_gathered(
    model: &Model,
    setup: &TrainingSetup,
    tp: usize,
) -> Vec<bool> {
    let n = model.layers.len();
    if setup.engine != Some(crate::setup::Engine::DeepSpeed)
        || setup.optimizer_sharding != OptimizerSharding::Zero3
    {
        return vec![false; n];
    }
    let t = tp.max(1) as f64;
    let mut after = 0.0;
    let mut kept = vec![false; n];
    for l in (0..n).rev() {
        kept[l] = 2.0 * after < DEEPSPEED_MAX_REUSE_DISTANCE_ELEMS;
        after += model.layers[l].params as f64 / t;
    }
    kept
}

/// Bytes of FP8 weight copies Transformer Engine keeps per parameter of
/// the blocks' linear layers: the row-wise copy the forward and the
/// column-wise (transposed) one the data gradient read, 1 byte each, made
/// at each iteration's first micro-batch and cached in the module
/// (`_fp8_workspaces`, transformer_engine/pytorch/module/base.py; Megatron-LM
/// passes `is_first_microbatch`, megatron/core/extensions/
/// transformer_engine.py).
pub(crate) const FP8_WEIGHT_COPY_BYTES_PER_PARAM: f64 = 2.0;

/// Bytes of `layer`'s cached FP8 weight copies on one rank of a
/// tensor-parallel group of degree `tp` under `setup`: its parameters'
/// [`FP8_WEIGHT_COPY_BYTES_PER_PARAM`] for a block under FP8 (Transformer
/// Engine's linear layers are the blocks'), else none. Held through the
/// passes and the step, as the 16-bit weights are.
pub(crate) fn fp8_weight_copy_bytes(
    layer: &crate::model::Layer,
    tp: usize,
    setup: &TrainingSetup,
) -> f64 {
    if setup.formats.compute == crate::setup::Precision::Fp8
        && layer.kind == LayerKind::TransformerBlock
    {
        layer.params as f64 / tp.max(1) as f64 * FP8_WEIGHT_COPY_BYTES_PER_PARAM
    } else {
        0.0
    }
}

/// Bytes every GPU (tensor-parallel degree `tp`) holds for its engine's
/// own buffers under `setup`, whatever its layers and its phase: DeepSpeed's
/// ZeRO-1 and ZeRO-3 buckets (ZeRO-2's live through the backward only,
/// [`deepspeed_backward_bucket_bytes`]; [`DEEPSPEED_REDUCE_BUCKET_ELEMS`],
/// [`DEEPSPEED_PREFETCH_BUCKET_ELEMS`]; ZeRO-1's where
/// [`deepspeed_reduces_in_buckets`]), in the weights' 16-bit format, and
/// under ZeRO-3 the layer it holds gathered while it computes, the largest
/// (ZeRO-3 plans have one stage: every layer is the GPU's); nothing
/// elsewhere (the `BF16_Optimizer`'s fp32 gradient buffer is a state,
/// [`state_bytes`]).
pub(crate) fn engine_buffer_bytes(model: &Model, setup: &TrainingSetup, tp: usize) -> f64 {
    if setup.engine != Some(crate::setup::Engine::DeepSpeed) {
        return 0.0;
    }
    let w = setup.formats.weights.bytes();
    match setup.optimizer_sharding {
        OptimizerSharding::Zero1 if deepspeed_reduces_in_buckets(setup) => {
            // The backward's bucket; the one the pipeline engine's
            // `reduce_gradients(pipeline_parallel=True)` appends after the
            // passes is [`backward_end_buffer_bytes`]'.
            DEEPSPEED_REDUCE_BUCKET_ELEMS * w
        }
        // ZeRO-2's live only through the backward:
        // [`deepspeed_backward_bucket_bytes`].
        OptimizerSharding::Zero3 => {
            // The layer being computed, or at the backward's start the
            // layers kept gathered since their forward, a suffix
            // ([`deepspeed_kept_gathered`]; their weights counted once).
            let largest = model.layers.iter().map(|l| l.params).max().unwrap_or(0);
            let kept: u64 = model
                .layers
                .iter()
                .zip(deepspeed_kept_gathered(model, setup, tp))
                .filter(|(l, k)| *k && l.tied_to.is_none())
                .map(|(l, _)| l.params)
                .sum();
            let gathered = largest.max(kept) as f64 / tp.max(1) as f64;
            (DEEPSPEED_REDUCE_BUCKET_ELEMS + DEEPSPEED_PREFETCH_BUCKET_ELEMS + gathered) * w
        }
        _ => 0.0,
    }
}

/// Bytes every GPU under `setup` holds at the end of the backward beside
/// the states and [`engine_buffer_bytes`]: DeepSpeed ZeRO-1's second
/// reduction bucket, which its pipeline engine's
/// `reduce_gradients(pipeline_parallel=True)` appends after the last
/// backward (deepspeed/runtime/zero/stage_1_and_2.py), when no activation
/// is left but the pipe buffers' retained outputs (measured on the CPU:
/// `scripts/engine-check/deepspeed_pipeline.py --zero 1`, whose stages
/// peak at its allocation); and ZeRO-2's buckets, which live until the
/// backward's epilogue ([`deepspeed_backward_bucket_bytes`]). None
/// elsewhere.
pub(crate) fn backward_end_buffer_bytes(model: &Model, setup: &TrainingSetup, tp: usize) -> f64 {
    if deepspeed_reduces_in_buckets(setup) {
        DEEPSPEED_REDUCE_BUCKET_ELEMS * setup.formats.weights.bytes()
    } else {
        deepspeed_backward_bucket_bytes(model, setup, tp)
    }
}

/// Bytes DeepSpeed ZeRO-2's own engine holds for its gradient reduction
/// through a backward, on a GPU of tensor-parallel degree `tp`: its
/// bucket of [`DEEPSPEED_REDUCE_BUCKET_ELEMS`] 16-bit elements (two with
/// `overlap_comm`), which `setup_buckets` allocates at the backward's
/// first gradient (from `process_gradients`) and `_release_ipg_buffers`
/// frees at its end (deepspeed/runtime/zero/stage_1_and_2.py), so it
/// meets neither the forward nor the loss's backward, which runs before
/// any weight has a gradient, nor the step; and where a rank's gradients
/// outgrow a bucket, the copy a flush inside the backward flattens it
/// into ([`flattened_bucket_bytes_per_param`]). Measured on the CPU:
/// `scripts/engine-check/deepspeed_zero.py --seq 1024`, whose ZeRO-2 peak
/// is the bucket's allocation, past the loss's backward. None elsewhere.
pub(crate) fn deepspeed_backward_bucket_bytes(
    model: &Model,
    setup: &TrainingSetup,
    tp: usize,
) -> f64 {
    if !deepspeed_zero2(setup) {
        return 0.0;
    }
    let buckets = if setup.overlap_grad_reduce { 2.0 } else { 1.0 };
    let flushed_inside = if rank_params(model, tp) > DEEPSPEED_REDUCE_BUCKET_ELEMS {
        1.0
    } else {
        0.0
    };
    (buckets + flushed_inside) * DEEPSPEED_REDUCE_BUCKET_ELEMS * setup.formats.weights.bytes()
}

/// Parameters a rank of tensor-parallel degree `tp` holds of `model` when
/// it holds every layer (one stage, as ZeRO-2 and ZeRO-3 plans on DeepSpeed
/// have).
fn rank_params(model: &Model, tp: usize) -> f64 {
    model.total_params() as f64 / tp.max(1) as f64
}

/// Bytes per parameter the end of the backward holds, beside the states,
/// for DeepSpeed ZeRO-2's flattened bucket: its `average_tensor`, with
/// `use_multi_rank_bucket_allreduce` (its default,
/// deepspeed/runtime/zero/config.py), sends a full bucket's gradients
/// through `allreduce_and_scatter`, whose `allreduce_bucket` flattens them
/// into a new tensor of the weights' format before it all-reduces it
/// (deepspeed/runtime/zero/stage_1_and_2.py). Where a rank's gradients fit
/// one bucket (`tp` its tensor-parallel degree), the one flush is the
/// backward's epilogue, after every activation is freed: a copy of every
/// gradient, a peak of its own. A larger model flushes inside the
/// backward, a bucket at a time: [`engine_buffer_bytes`] holds that one.
/// Measured on the CPU: `scripts/engine-check/deepspeed_zero.py`, whose
/// ZeRO-2 peak is that flatten.
pub(super) fn flattened_bucket_bytes_per_param(
    model: &Model,
    setup: &TrainingSetup,
    tp: usize,
) -> f64 {
    if deepspeed_zero2(setup) && rank_params(model, tp) <= DEEPSPEED_REDUCE_BUCKET_ELEMS {
        setup.formats.weights.bytes()
    } else {
        0.0
    }
}

/// Whether `setup`'s data-parallel reduction reads flat copies of the
/// gradients made only when it runs: DeepSpeed's pipeline engine (the
/// lockstep exchange, which the AMP artifact's and Sailor's setups run
/// without naming the engine) without ZeRO reduces each `param.grad` after
/// the last backward through `buffered_allreduce_fallback`, whose
/// `allreduce_bucket` flattens up to [`DEEPSPEED_REDUCE_BUCKET_ELEMS`]
/// gradients into a new tensor (cast to fp32 under `fp32_allreduce`),
/// all-reduces it and copies it back before the next bucket
/// (deepspeed/runtime/engine.py, in the AMP artifact's copy, in Sailor's fork
/// and today). No bucket lives through the passes, which hold the gradients
/// once ([`state_bytes`]); the copy is a peak of the backward's end
/// ([`reduction_copy_bytes`]). In bf16 its `BF16_Optimizer` keeps a flat
/// buffer of its own ([`state_bytes`]).
pub(crate) fn flattens_at_reduction(setup: &TrainingSetup) -> bool {
    let pipeline_engine = setup.engine == Some(crate::setup::Engine::DeepSpeed)
        || setup.stage_exchange() == crate::setup::StageExchange::Lockstep;
    pipeline_engine
        && setup.optimizer_sharding == OptimizerSharding::None
        && setup.formats.weights != crate::setup::NumberFormat::Bf16
}

/// Whether [`flattens_at_reduction`]'s engine reduces at one replica too:
/// today's DeepSpeed and Sailor's fork (its setup's barrier before the
/// reduction is that fork's) call `allreduce_gradients` whatever the
/// replicas (`_exec_reduce_grads` checks only
/// `pipeline_enable_backward_allreduce`), where the AMP artifact's 0.3
/// engine reduces only `if self.is_data_parallel`.
fn reduces_at_one_replica(setup: &TrainingSetup) -> bool {
    setup.engine == Some(crate::setup::Engine::DeepSpeed) || setup.grad_reduce_barrier
}

/// Bytes of the flat copy of [`flattens_at_reduction`] on a GPU holding
/// `params` parameters of a stage with `dp` replicas, of which the largest
/// layer holds `largest`: a bucket of the gradients in their own format,
/// and its fp32 cast where the reduction is wider. A bucket takes tensors
/// until it holds more than [`DEEPSPEED_REDUCE_BUCKET_ELEMS`]
/// (`allreduce_no_retain` adds a tensor, then flushes when past the
/// limit), so it holds at most that and one tensor, here bounded by the
/// largest layer. None where nothing is reduced.
pub(crate) fn reduction_copy_bytes(
    setup: &TrainingSetup,
    dp: usize,
    params: f64,
    largest: f64,
) -> f64 {
    params.min(DEEPSPEED_REDUCE_BUCKET_ELEMS + largest) * reduction_copy_bytes_per_param(setup, dp)
}

/// [`reduction_copy_bytes`] per parameter, below one bucket.
pub(crate) fn reduction_copy_bytes_per_param(setup: &TrainingSetup, dp: usize) -> f64 {
    if !flattens_at_reduction(setup) || (dp <= 1 && !reduces_at_one_replica(setup)) {
        return 0.0;
    }
    let f = &setup.formats;
    let cast = if f.fp32_gradient_reduction() {
        f.gradient_reduction_bytes()
    } else {
        0.0
    };
    f.gradients.bytes() + cast
}

/// Whether DeepSpeed wraps `setup`'s optimizer in its `FP16_Optimizer`:
/// fp16 without ZeRO (`_do_optimizer_sanity_check` in
/// deepspeed/runtime/engine.py; bf16 without ZeRO takes the
/// `BF16_Optimizer` on the pipeline engine amp's export uses, see
/// [`TrainingSetup::for_pipeline`]).
pub(crate) fn deepspeed_fp16_optimizer(setup: &TrainingSetup) -> bool {
    let f = &setup.formats;
    setup.engine == Some(crate::setup::Engine::DeepSpeed)
        && setup.optimizer_sharding == OptimizerSharding::None
        && f.weights == crate::setup::NumberFormat::Fp16
        && f.gradients == f.weights
}

/// Whether DeepSpeed wraps `setup`'s optimizer in its `BF16_Optimizer`:
/// bf16 without ZeRO on its pipeline engine, which amp's export uses there
/// (`_do_optimizer_sanity_check` in deepspeed/runtime/engine.py); its
/// gradients accumulate in bf16, the model's dtype
/// ([`TrainingSetup::for_pipeline`]).
pub(crate) fn deepspeed_bf16_optimizer(setup: &TrainingSetup) -> bool {
    setup.engine == Some(crate::setup::Engine::DeepSpeed)
        && setup.optimizer_sharding == OptimizerSharding::None
        && setup.formats.weights == crate::setup::NumberFormat::Bf16
}

/// Whether DeepSpeed reduces `setup`'s gradients through its ZeRO
/// optimizer's bucket (`DeepSpeedZeroOptimizer` with `contiguous_gradients`,
/// its default: the backward copies each gradient into a bucket of
/// `reduce_bucket_size` elements, deepspeed/runtime/zero/stage_1_and_2.py,
/// freed at the step by `_release_ipg_buffers`): ZeRO-1 with its gradients
/// in the weights' format. ZeRO-2's is [`engine_buffer_bytes`]' own case.
pub(crate) fn deepspeed_reduces_in_buckets(setup: &TrainingSetup) -> bool {
    setup.engine == Some(crate::setup::Engine::DeepSpeed)
        && setup.optimizer_sharding == OptimizerSharding::Zero1
        && setup.formats.gradients == setup.formats.weights
}

/// Bytes per parameter the optimizer step allocates while it runs, with `dp`
/// data-parallel replicas: PyTorch's foreach Adam(W) computes `sqrt(v)`
/// into new tensors, one optimizer-state element per parameter of its
/// shard, before `addcdiv_` (torch/optim/adam.py `_multi_tensor_adam`); a
/// fused step allocates nothing. The step runs after every activation is
/// freed, so it is a peak of its own, not added to the passes'.
pub(crate) fn optimizer_step_bytes_per_param(setup: &TrainingSetup, dp: usize) -> f64 {
    let master = setup.formats.master_weights;
    // The format the step updates: the master weights, else the weights.
    let stepped = master.unwrap_or(setup.formats.weights);
    if deepspeed_fp16_optimizer(setup) {
        // `FP16_Optimizer.step` (deepspeed/runtime/fp16/fused_optimizer.py)
        // flattens `[p.grad.to(fp32) for p in group]`: a copy of every
        // 16-bit gradient in the master weights' format, then their
        // flattened buffer, which the fused step reads; the 16-bit
        // gradients are freed after it.
        return 2.0 * stepped.bytes();
    }
    // A replica steps on its shard where the optimizer state is sharded:
    // ZeRO-1 and up, and DeepSpeed's `BF16_Optimizer` at any stage.
    let sharded =
        setup.optimizer_sharding >= OptimizerSharding::Zero1 || deepspeed_bf16_optimizer(setup);
    let per_replica = |bytes: f64| {
        if sharded {
            bytes / dp.max(1) as f64
        } else {
            bytes
        }
    };
    // The `BF16_Optimizer`'s step hands its wrapped optimizer the gradient
    // partition cast to the master weights' format where it accumulates in
    // another (`param_partition.grad = grad_partition.to(...)`,
    // bf16_optimizer.py `step`), freed after it.
    let cast = if deepspeed_bf16_optimizer(setup) && stepped != setup.formats.gradients {
        per_replica(stepped.bytes())
    } else {
        0.0
    };
    // Megatron-LM's optimizer hands its fp32 step 16-bit gradients as fp32
    // copies made for the step (`main_param.grad = model_param.main_grad
    // .float()` in megatron/core/optimizer/optimizer.py, the distributed
    // optimizer's `shard_main_param.grad = shard_model_grad.float()` for its
    // shard): fp16 training, or bf16 with `--grad-reduce-in-bf16`. Of fp32
    // gradients `.float()` is the same tensor.
    let megatron_copy = match master {
        Some(m)
            if setup.engine == Some(crate::setup::Engine::Megatron)
                && setup.formats.gradients.bytes() < m.bytes() =>
        {
            per_replica(m.bytes())
        }
        _ => 0.0,
    };
    let foreach = match setup.optimizer_step() {
        OptimizerStep::Fused => 0.0,
        OptimizerStep::Foreach => per_replica(setup.formats.optimizer_state.bytes()),
    };
    cast + megatron_copy + foreach
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
///
/// torchtitan ([`fsdp2`]) holds a layer's 16-bit parameters, FSDP2's
/// unsharded copy, through the passes only where
/// [`holds_cast_through_passes`] says (`weights` here is that copy's
/// bytes per parameter of those layers), and none through the step; in a
/// pipeline (`pipelined`) a stage that has run a backward also holds its
/// unsharded gradients, accumulated in the reduction's format until the
/// reduction after the last micro-batch's backward (`torch.distributed.pipelining`
/// runs every backward with `set_requires_gradient_sync(False)` and
/// `set_reshard_after_backward(False)`, then `perform_reduce_grad`,
/// pipelining/stage.py).
pub(crate) fn phase_state_bytes(
    setup: &TrainingSetup,
    dp: usize,
    gradients_in_passes: bool,
    pipelined: bool,
) -> (StateBytes, StateBytes) {
    let held = state_bytes(setup, dp);
    if fsdp2(setup) {
        let f = &setup.formats;
        let accumulated = if pipelined && gradients_in_passes {
            f.gradients.bytes()
        } else {
            0.0
        };
        let passes = StateBytes {
            weights: f.weights.bytes(),
            gradients: held.gradients + accumulated,
            ..held
        };
        return (passes, held);
    }
    if deepspeed_fp16_optimizer(setup) {
        // The all-reduce's flattened copy is gone by the step, which holds
        // the 16-bit gradients beside its own fp32 copies
        // ([`optimizer_step_bytes_per_param`]).
        let step = StateBytes {
            gradients: setup.formats.gradients.bytes(),
            ..held
        };
        return (held, step);
    }
    if !gradients_by_phase(setup) {
        return (held, held);
    }
    let passes = StateBytes {
        gradients: if gradients_in_passes {
            held.gradients
        } else if dp > 1 && !flattens_at_reduction(setup) {
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
pub(super) fn gradients_by_phase(setup: &TrainingSetup) -> bool {
    autocast(setup) && setup.optimizer_sharding < OptimizerSharding::Zero2
}

/// Whether a stage's passes peak with the gradients of an earlier backward
/// there (`gradients_in_passes` of [`phase_state_bytes`]), with `b`
/// micro-batches, `backward_first` saying whether a backward runs before
/// one of its activation peaks ([`backward_before_peak`]).
/// Under torchtitan's pipeline, whose accumulated unsharded gradients may
/// outweigh a micro-batch's activations, wherever it runs more than one: a
/// bound (the second backward's peak holds one micro-batch fewer, the
/// first's none of those gradients), never below either.
pub(super) fn gradients_before_peak(setup: &TrainingSetup, b: usize, backward_first: bool) -> bool {
    if fsdp2(setup) {
        b > 1
    } else {
        backward_first
    }
}

/// Whether a stage holds a layer's [`accumulation_bytes`] in its passes,
/// `backward_first` as in [`gradients_before_peak`]: where its gradients
/// are there (eager accumulation over micro-batches), and at every
/// backward under torchtitan (FSDP2's reduction of the unit) and DeepSpeed
/// ZeRO-2 (its reduction buckets).
pub(super) fn gradient_workspace(setup: &TrainingSetup, backward_first: bool) -> bool {
    fsdp2(setup) || deepspeed_zero2(setup) || backward_first
}

/// Whether `setup` runs DeepSpeed's ZeRO-2, whose reduction buckets live
/// through each backward ([`deepspeed_backward_bucket_bytes`]).
fn deepspeed_zero2(setup: &TrainingSetup) -> bool {
    setup.engine == Some(crate::setup::Engine::DeepSpeed)
        && setup.optimizer_sharding == OptimizerSharding::Zero2
}

/// Whether `setup` trains as torchtitan does: with FSDP2 (`fully_shard`,
/// torchtitan/distributed/fsdp.py `apply_fsdp_to_decoder`) on every plan,
/// sharded over the replicas with ZeRO-3 and over none without (torchtitan
/// 0.3.0 runs it at a shard degree of 1 for its mixed-precision policy,
/// torchtitan/models/llama3/parallelize.py): 16-bit parameters in the
/// compute, fp32 shards and reductions. Measured on the CPU by
/// `scripts/engine-check/fsdp.py`.
pub(super) fn fsdp2(setup: &TrainingSetup) -> bool {
    setup.engine == Some(crate::setup::Engine::Torchtitan)
}

/// Whether a layer of kind `kind` holds a 16-bit copy of its weights:
/// under autocast an embedding does not (the lookup runs on the fp32
/// weights; autocast casts the weights of the ops it runs in 16 bits, the
/// linear layers'); otherwise every layer's weights are in their format.
pub(super) fn holds_weight_copy(kind: LayerKind, setup: &TrainingSetup) -> bool {
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
pub(super) fn blocks_drop_casts(model: &Model, setup: &TrainingSetup) -> bool {
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
pub(super) fn drops_cast(kind: LayerKind, drop: bool) -> bool {
    drop && kind == LayerKind::TransformerBlock
}

/// Whether a layer of kind `kind` holds its 16-bit copy through the whole
/// of the passes: it holds one ([`holds_weight_copy`]) and does not drop
/// it ([`drops_cast`]). Under torchtitan ([`fsdp2`]) every layer of a
/// pipeline stage (`pipelined`: FSDP2 reshards none after its forward,
/// torchtitan's default with pipelining, nor after a backward but the
/// last), and in one stage only the vocabulary projection, whose unit
/// (with the final norm, and the embedding when tied) torchtitan keeps
/// unsharded from its forward to its backward; the others' copies live
/// through their own forward and backward only.
pub(super) fn holds_cast_through_passes(
    kind: LayerKind,
    setup: &TrainingSetup,
    drop: bool,
    pipelined: bool,
) -> bool {
    if fsdp2(setup) {
        return pipelined || kind == LayerKind::VocabProjection;
    }
    holds_weight_copy(kind, setup) && !drops_cast(kind, drop)
}

/// Parameters per rank (tp degree `tp`) of layer `l` whose 16-bit copy
/// lives only through the forward and the layer's own backward
/// ([`drops_cast`]).
pub(super) fn dropped_cast_params(model: &Model, l: usize, tp: usize, drop: bool) -> f64 {
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
/// Under torchtitan ([`fsdp2`]) the layer's unit's reduction instead, at
/// every backward ([`gradient_workspace`]); under DeepSpeed ZeRO-2 its
/// buckets ([`deepspeed_backward_bucket_bytes`]) and the layer's 16-bit
/// weight gradient, which autograd writes before the engine's hook
/// copies it into the bucket.
pub(super) fn accumulation_bytes(
    model: &Model,
    l: usize,
    tp: usize,
    setup: &TrainingSetup,
    drop: bool,
) -> f64 {
    let layer = &model.layers[l];
    let f = &setup.formats;
    if deepspeed_zero2(setup) {
        return deepspeed_backward_bucket_bytes(model, setup, tp)
            + layer.params as f64 / tp.max(1) as f64 * f.gradients.bytes();
    }
    if fsdp2(setup) {
        // FSDP2 reduces a unit's gradients when its backward ends: its new
        // 16-bit gradients and the fp32 copy the reduce-scatter reads
        // (torch/distributed/fsdp/_fully_shard/_fsdp_collectives.py
        // `foreach_reduce`), a layer's unit at a time.
        return layer.params as f64 / tp.max(1) as f64 * (f.weights.bytes() + f.gradients.bytes());
    }
    if !gradients_by_phase(setup) {
        return 0.0;
    }
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
/// share one cast, autocast caching it); so under torchtitan in one stage
/// (`pipelined` false: [`holds_cast_through_passes`]).
pub(super) fn tied_state_bytes(
    earlier: LayerKind,
    setup: &TrainingSetup,
    states: &StateBytes,
    pipelined: bool,
) -> f64 {
    // No tied layer drops its cast (`blocks_drop_casts` is off where a tie
    // takes a block's weights), so this is `holds_weight_copy` but under
    // torchtitan, where it is the unit's.
    if holds_cast_through_passes(earlier, setup, false, pipelined) {
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
pub(super) fn tied_gradient_bytes_per_param(earlier: LayerKind, setup: &TrainingSetup) -> f64 {
    if holds_weight_copy(earlier, setup) || !autocast(setup) {
        0.0
    } else {
        setup.formats.gradients.bytes()
    }
}

//! Activations per sample: what each layer stores for its backward, its
//! transients, the loss's logits, and how many micro-batches a stage keeps.

use super::*;

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

/// Bytes per logit of the one slice torchtitan's chunked loss
/// ([`CrossEntropy::Chunked`]) computes at a time, at its peak, the slice's
/// backward: PyTorch's `cross_entropy` ([`LOSS_STORED_BYTES_PER_LOGIT`] and
/// [`PYTORCH_LOSS_TRANSIENT_BYTES_PER_LOGIT`]) beside the slice's 16-bit
/// logits, which the loop still holds.
pub const CHUNKED_LOSS_BYTES_PER_LOGIT: f64 =
    LOSS_STORED_BYTES_PER_LOGIT + PYTORCH_LOSS_TRANSIENT_BYTES_PER_LOGIT + HALF_BYTES;

/// What torchtitan's chunked loss keeps per sample from its forward to the
/// decoder's backward: the gradient of the projection's input, `s h` in the
/// activations' format, whole on every tensor-parallel rank (the final
/// norm's output enters the projection replicated). `input_elems` is the
/// projection's input per sample.
fn chunked_loss_kept_bytes(input_elems: f64, setup: &TrainingSetup) -> f64 {
    input_elems * activation_bytes(setup)
}

/// What torchtitan's chunked loss holds beside the stages' stored bytes
/// while it runs, per sample: the fp32 buffer the slices' input gradients
/// gather in (`GradAccumulator`, `s h` fp32; the slices' 16-bit copies of
/// the input stand where the kept gradient will), and one slice's loss
/// ([`CHUNKED_LOSS_BYTES_PER_LOGIT`] per logit of the slice on this rank).
fn chunked_loss_transient_bytes(l: &crate::model::Layer, input_elems: f64, tp: f64) -> f64 {
    let slice_logits = l.output_elems_per_sample as f64 / tp / crate::setup::LOSS_CHUNKS as f64;
    4.0 * input_elems + slice_logits * CHUNKED_LOSS_BYTES_PER_LOGIT
}

/// The projection's input elements per sample, as the loss's memory reads
/// them: the model's count where it gives one (with an architecture), else
/// `s h`.
fn projection_input_elems(model: &Model, l: &crate::model::Layer) -> f64 {
    match (l.stored_activation_elems_per_sample, model.architecture()) {
        (Some(e), Some(_)) => e as f64,
        _ => shape_sha(model).map_or(0.0, |(s, h, _)| s * h),
    }
}

/// What the loss keeps per sample on one rank of a tensor-parallel group of
/// degree `tp` after the vocabulary projection `l`, whose logits it splits.
pub(super) fn loss_softmax_bytes_per_sample(l: &crate::model::Layer, tp: f64) -> f64 {
    l.output_elems_per_sample as f64 / tp * LOSS_STORED_BYTES_PER_LOGIT
}

/// Whether amp counts the loss of vocabulary projection `l` itself: a model
/// with an architecture, or a projection without its own count (a layer
/// list's own count holds whatever it holds).
fn loss_counted(model: &Model, l: &crate::model::Layer) -> bool {
    l.stored_activation_elems_per_sample.is_none() || model.architecture().is_some()
}

/// Of [`stored_activation_bytes_per_sample`] of layer `layer`, what the
/// loss keeps ([`loss_softmax_bytes_per_sample`], where amp counts it: a
/// model with an architecture or a projection without its own count). The
/// loss runs its backward right after its forward under 1F1B, interleaved
/// or not (the last model chunk's forward and backward of a micro-batch
/// pair up on the last device), so one micro-batch keeps it at a time
/// ([`loss_in_flight`]), however many the stage's other layers hold. Under
/// torchtitan's chunked loss, the gradient of the projection's input.
pub(super) fn loss_stored_bytes_per_sample(
    model: &Model,
    layer: usize,
    tp: usize,
    setup: &TrainingSetup,
) -> f64 {
    let l = &model.layers[layer];
    if l.kind != LayerKind::VocabProjection || !loss_counted(model, l) {
        0.0
    } else if setup.cross_entropy() == CrossEntropy::Chunked {
        // The projection keeps nothing but the loss's gradient.
        chunked_loss_kept_bytes(projection_input_elems(model, l), setup)
    } else {
        loss_softmax_bytes_per_sample(l, tp.max(1) as f64)
    }
}

/// Micro-batches whose loss a stage keeps at once, `flight` its in-flight
/// count ([`in_flight`]): all of them under GPipe, else one.
pub(super) fn loss_in_flight(schedule: Schedule, flight: usize) -> usize {
    match schedule {
        Schedule::GPipe => flight,
        _ => flight.min(1),
    }
}

/// Of a stage's stored bytes, what the loss has freed when a layer's
/// backward writes its weight gradient, `loss_stored` being the stage's
/// [`loss_stored_bytes_per_sample`] and `mbs` a micro-batch's samples: the
/// loss's backward runs before any layer's (its saved log-probabilities or
/// softmax go with it), so one micro-batch's share. Measured: DeepSpeed
/// ZeRO-2 allocates its reduction bucket at the projection's weight
/// gradient, when the loss's fp32 log-probabilities are gone
/// (`scripts/engine-check/deepspeed_zero.py --seq 1024`). Not under
/// torchtitan's chunked loss, whose kept input gradient feeds the
/// decoder's backward: none there.
pub(super) fn loss_freed_before_gradients(
    mbs: f64,
    loss_stored: f64,
    setup: &TrainingSetup,
) -> f64 {
    if setup.cross_entropy() == CrossEntropy::Chunked {
        0.0
    } else {
        mbs * loss_stored
    }
}

/// Bytes of one stored activation element.
pub(crate) fn activation_bytes(setup: &TrainingSetup) -> f64 {
    setup.formats.activations.bytes()
}

pub(super) fn scale(setup: &TrainingSetup) -> f64 {
    activation_bytes(setup) / HALF_BYTES
}

/// Micro-batches whose activations stage `stage` keeps at its peak.
///
/// Interleaved with `v` chunks: the device runs
/// `W = min(2 (pp - stage - 1) + (v - 1) pp, B v)` warm-up chunk forwards
/// (Megatron Core's `get_pp_rank_microbatches`) and then one more before
/// its first backward, so it holds `W + 1` chunk activations, each of one
/// micro-batch: `ceil((W + 1) / v)` micro-batches have some there (Narayanan
/// et al. SC'21: about `pp (1 + 1/v)` on the first device). What those
/// chunks hold is [`held_bytes_per_sample`]'s.
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
            (interleaved_warmup(stage, pp, v, total) + 1)
                .min(total)
                .div_ceil(v)
        }
        Schedule::OneFOneB | Schedule::Interleaved { .. } => {
            pp.saturating_sub(stage).max(1).min(num_micro_batches)
        }
        Schedule::GPipe => num_micro_batches,
    }
}

/// Warm-up chunk forwards of pipeline rank `stage` of `pp` interleaved over
/// `v` chunks, `total` chunk forwards in all (Megatron Core's
/// `get_pp_rank_microbatches`).
fn interleaved_warmup(stage: usize, pp: usize, v: usize, total: usize) -> usize {
    (2 * pp.saturating_sub(stage + 1) + (v - 1) * pp).min(total)
}

/// Whether pipeline rank `stage` of `pp`, running `b` micro-batches, runs
/// a backward before one of its activation peaks: under 1F1B where it runs
/// more micro-batches than it keeps; interleaved where a chunk forward
/// follows its first backward (more than `W + 1` chunk forwards); never
/// under GPipe.
pub(crate) fn backward_before_peak(schedule: Schedule, stage: usize, pp: usize, b: usize) -> bool {
    match schedule {
        Schedule::Interleaved { virtual_stages: v } if v > 1 => {
            let total = b * v;
            interleaved_warmup(stage, pp, v, total) + 1 < total
        }
        _ => b > in_flight(schedule, stage, pp, b),
    }
}

/// Stored activation bytes per sample pipeline rank `stage` of `pp` keeps
/// at its peak, running `b` micro-batches: `stored` per sample of its
/// layers, `loss` of those the loss's (kept by one micro-batch at a time,
/// [`loss_in_flight`]), `chunks` the same two per model chunk where it
/// holds several (interleaved; else empty).
///
/// Interleaved, the device holds `W + 1` chunk activations
/// ([`in_flight`]), but which chunks changes as the schedule runs: it
/// walks the passes the schedule simulator runs
/// ([`Schedule::passes`], Megatron Core's order: forwards a group of `pp`
/// micro-batches per chunk in turn, backwards the same chunks in reverse)
/// and takes the most held after any forward, chunk by chunk: `(W + 1) /
/// v` micro-batches where the chunks hold the same.
pub(crate) fn held_bytes_per_sample(
    schedule: Schedule,
    (stage, pp, b): (usize, usize, usize),
    (stored, loss): (f64, f64),
    chunks: &[(f64, f64)],
) -> f64 {
    let v = schedule.virtual_stages();
    if v <= 1 || chunks.len() != v {
        let flight = in_flight(schedule, stage, pp, b);
        return flight as f64 * stored
            + (loss_in_flight(schedule, flight) as f64 - flight as f64) * loss;
    }
    let bytes = |c: usize, n: usize| {
        let (s, l) = chunks[c];
        n as f64 * (s - l) + n.min(1) as f64 * l
    };
    let mut held = vec![0usize; v];
    let (mut now, mut peak) = (0.0, 0.0f64);
    for pass in schedule.passes(stage, pp, b) {
        let c = pass.chunk;
        now -= bytes(c, held[c]);
        held[c] = if pass.forward {
            held[c] + 1
        } else {
            held[c].saturating_sub(1)
        };
        now += bytes(c, held[c]);
        if pass.forward {
            peak = peak.max(now);
        }
    }
    peak
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
/// the activations' format. None outside DeepSpeed's pipeline engine (the
/// lockstep exchange is its 1F1B): Megatron-LM and torchtitan free what
/// they send, and DeepSpeed's own engine, which runs its ZeRO-2 and 3, has
/// no pipe buffers.
pub(crate) fn retained_output_bytes_per_sample(
    model: &Model,
    tp: usize,
    setup: &TrainingSetup,
) -> f64 {
    // DeepSpeed's own engine (ZeRO-2 and 3, one stage) has no pipe buffers.
    if setup.stage_exchange() != StageExchange::Lockstep || setup.reduces_every_micro_batch(1) {
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
pub(super) fn shape_sha(model: &Model) -> Option<(f64, f64, f64)> {
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
pub(super) fn fused_attention(model: &Model) -> bool {
    model.flash_attention() == Some(true)
}

/// Whether tensor parallelism splits this kind's stored activations.
pub(super) fn tp_sharded(kind: LayerKind) -> bool {
    matches!(
        kind,
        LayerKind::TransformerBlock | LayerKind::VocabProjection
    )
}

/// Full (no recomputation) stored bytes per sample of a block, Korthikanti
/// et al. eq. 2, or 34 bytes per output element without a shape. With
/// sequence parallelism the 10 bytes of layer-norm inputs and dropout
/// masks are split over the group too (their eq. 4).
pub(super) fn block_full_bytes(model: &Model, layer: usize, tp: f64, setup: &TrainingSetup) -> f64 {
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
/// (`a s^2 / t`), with dropout the softmax output, the one-byte mask and
/// the dropped-out probabilities the value product keeps; without it the
/// softmax output alone, which the value product keeps too (PyTorch's
/// dropout at p = 0 returns its input): the zoo's and Hugging Face's count,
/// [`Layer::stored_activation_elems_per_sample`]. Written as Python under
/// autocast the softmax output is fp32 (autocast runs softmax in fp32), 4
/// bytes, and a 16-bit copy feeds the value product
/// ([`eager_softmax_extra_bytes`]). Without an architecture, Korthikanti's
/// `5 a s^2 / t` bytes (scores, softmax, dropout mask) in 16-bit formats.
/// Checked against Megatron-LM's own block on the CPU
/// (`scripts/activation-check/megatron_block.py`).
pub(super) fn attention_core_bytes(model: &Model, tp: f64, setup: &TrainingSetup) -> f64 {
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
            let kept = if dropout { 2.0 * e + 1.0 } else { e };
            scores * kept + eager_softmax_extra_bytes(model, tp, setup)
        }
        None => 5.0 * scores * scale(setup),
    }
}

/// What a block keeps per sample on one rank of a tensor-parallel group of
/// degree `tp` under torchtitan's per-op selective checkpointing
/// ([`TrainingSetup::per_op_selective`]), bytes; `None` for a model without
/// an architecture (the Megatron-style count then stands). From
/// torchtitan's `SelectiveAC` policy: the checkpoint keeps the block's
/// input (the residual stream; a sequence shard under sequence
/// parallelism), and the outputs of the ops in its save list are cached
/// for the backward, everything else rerun:
/// - of the matrix products ([`crate::model::Architecture::block_projections`],
///   counted in forward order; torchtitan 0.3.0 builds every flavor it
///   ships a recipe for with one fused QKV projection, `fuse_qkv=True` in
///   torchtitan/models/llama3 and qwen3), the first, third, fifth, ...: the
///   policy recomputes every second one. A column-parallel product's
///   output is this rank's slice; a row-parallel one's is the whole partial
///   sum;
/// - the attention kernel's output and its fp32 log-sum-exp (one per head
///   and token); an explicit attention's probabilities too (PyTorch's math
///   kernel returns them);
/// - with sequence parallelism, the reduce-scatters after the two
///   row-parallel products (communication in the save list); the
///   all-gathers before the others are rerun.
///
/// Compiled ([`TrainingSetup::compile`]), the partitioner keeps of those
/// only what a backward reads: not the row-parallel products' outputs nor
/// the reduce-scatters after them, which only the residual adds read.
///
/// Checked on the CPU with torchtitan's own policy
/// (`scripts/engine-check/sac.py`; compiled at tp 1 only).
pub(super) fn per_op_selective_bytes(model: &Model, tp: f64, setup: &TrainingSetup) -> Option<f64> {
    let arch = model.architecture()?;
    let shape = model.shape.as_ref()?;
    let (s, h, heads) = shape_sha(model)?;
    let e = activation_bytes(setup);
    let sp = setup.sequence_parallel && tp > 1.0;
    let shard = if sp { tp } else { 1.0 };
    let input = s * h * setup.formats.residual_stream_bytes() / shard;
    let projections = arch.block_projections(shape.hidden, heads as u64, true);
    let products: f64 = projections
        .iter()
        .step_by(2)
        .filter(|p| !(setup.compile && p.row_parallel))
        .map(|p| {
            let width = p.out_width as f64;
            s * if p.row_parallel { width } else { width / tp } * e
        })
        .sum();
    let q = heads * arch.head_dim as f64;
    let mut attention = s * q / tp * e + s * heads / tp * 4.0;
    if !fused_attention(model) {
        attention += heads * s * s / tp * e;
    }
    let row_parallel = projections.iter().filter(|p| p.row_parallel).count() as f64;
    let reduce_scatters = if sp && !setup.compile {
        row_parallel * s * h / tp * e
    } else {
        0.0
    };
    Some(input + products + attention + reduce_scatters)
}

/// What a block keeps per sample on one rank of a tensor-parallel group of
/// degree `tp` under torchtitan without recomputation, bytes; `None` for a
/// model without an architecture or with an MLP torchtitan does not build
/// (ungated). torchtitan runs without torch.compile by
/// default, so a block keeps what its Python saves for the backward
/// (torchtitan/models/common: the decoder block, `GQAttention`,
/// `FeedForward`, `rope.py`), an engine's fused block less:
/// - each RMSNorm its input and its fp32 inverse norm per token (PyTorch's
///   fused `rms_norm`; sequence shards under sequence parallelism);
/// - the fused QKV projection's and the first MLP projections' input, whole
///   (the all-gathered input under sequence parallelism);
/// - the attention kernel its query and key after the rotary embedding, its
///   value, its output (which the output projection reads as it is: the
///   kernel writes it in the layout the projection wants) and fp32
///   log-sum-exp. The value is a strided view of the QKV output; the CPU's
///   kernel keeps a copy of it, measured, where a GPU's might keep the view
///   and with it the whole QKV output, `q + kv` elements per token more
///   (not measured);
/// - the MLP the gate's output, SiLU's, the up projection's and their
///   product, four inner-width tensors.
///
/// Checked on the CPU with torchtitan's own block (`scripts/engine-check/sac.py`).
pub(super) fn torchtitan_eager_block_bytes(
    model: &Model,
    tp: f64,
    setup: &TrainingSetup,
) -> Option<f64> {
    // torchtitan's blocks have a gated MLP (`FeedForward`); it builds no other.
    let arch = model.architecture().filter(|a| a.gated())?;
    let (s, h, heads) = shape_sha(model)?;
    let e = activation_bytes(setup);
    let shard = if setup.sequence_parallel && tp > 1.0 {
        tp
    } else {
        1.0
    };
    let q = heads * arch.head_dim as f64;
    let kv = (arch.kv_heads * arch.head_dim) as f64;
    let f = arch.ffn_hidden as f64;
    let norms = 2.0 * (h * e + 4.0) / shard;
    let inputs = 2.0 * h * e;
    let attention = (2.0 * q + 2.0 * kv) / tp * e + heads / tp * 4.0;
    let mlp = 4.0 * f / tp * e;
    Some(s * (norms + inputs + attention + mlp))
}

/// Whether the setup is eager autocast: 16-bit compute over an fp32 residual
/// stream, each op casting its own inputs.
pub(super) fn autocast(setup: &TrainingSetup) -> bool {
    setup.formats.residual_stream_bytes() > activation_bytes(setup)
}

/// What explicit attention written as Python keeps beyond its 16-bit count,
/// bytes per sample: the softmax output in fp32, 2 more bytes per score
/// where dropout's output is counted as the probabilities the value product
/// keeps, 4 where, without dropout, the counted tensor is the softmax
/// output, here a 16-bit copy of it (the cast makes one), under autocast
/// (which runs softmax in fp32) or, in 16-bit
/// weights (DeepSpeed running Hugging Face's blocks), where the code asks
/// for it (`softmax(..., dtype=torch.float32)`, every family but GPT-2's
/// and BERT's); and GPT-Neo's, which upcasts its query and key to fp32
/// before the scores' product (`GPTNeoSelfAttention._attn`), their fp32
/// copies, 2 more bytes per element, where no autocast casts them back.
/// None for fused blocks (an engine's softmax writes 16 bits) or fused
/// attention. Measured on the CPU: `scripts/activation-check/check.py`
/// (`--deepspeed` for 16-bit weights).
pub(super) fn eager_softmax_extra_bytes(model: &Model, tp: f64, setup: &TrainingSetup) -> f64 {
    let e = activation_bytes(setup);
    let (Some(arch), Some((s, _, a))) = (
        model.eager_architecture(setup.eager_blocks()),
        shape_sha(model),
    ) else {
        return 0.0;
    };
    if fused_attention(model) || !setup.formats.compute.is_half() {
        return 0.0;
    }
    let casts = autocast(setup);
    let fp32_softmax = casts || !matches!(arch.family.as_str(), "gpt2" | "bert");
    let per_score = match model.dropout() {
        Some(false) => 4.0,
        _ => 4.0 - e,
    };
    let scores = if fp32_softmax {
        per_score * a * s * s / tp
    } else {
        0.0
    };
    let query_key = if arch.family == "gpt_neo" && !casts {
        (4.0 - e) * 2.0 * s * (a * arch.head_dim as f64) / tp
    } else {
        0.0
    };
    scores + query_key
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
pub(super) fn replicated_block_elems(model: &Model, elems: f64, setup: &TrainingSetup) -> f64 {
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
/// - in eager blocks, an RMSNorm written as Python (Hugging Face's
///   `LlamaRMSNorm`, Meta's reference model) also keeps its fp32
///   normalised output for the weight's gradient, 4 bytes (engines fuse
///   the norm). In 16-bit weights (DeepSpeed running Hugging Face's
///   blocks) Llama's norm keeps its fp32 input (4 bytes, where the fused
///   count holds 2) and casts the normalised value back to 16 bits before
///   the weight's multiply (2): 4 again; Gemma's multiplies in fp32 before
///   it casts (`output * (1 + weight)`, then `type_as`), 2 more.
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
pub(super) fn norm_extra_bytes_per_elem(model: &Model, setup: &TrainingSetup) -> f64 {
    let wider = (setup.formats.residual_stream_bytes() - activation_bytes(setup)).max(0.0);
    let eager_rms = model
        .eager_architecture(setup.eager_blocks())
        .filter(|a| a.norm == crate::model::NormKind::Rmsnorm);
    wider
        + eager_rms.map_or(0.0, |a| {
            if a.family.starts_with("gemma") && !autocast(setup) {
                6.0
            } else {
                4.0
            }
        })
}

/// The final norm's share of [`norm_extra_bytes_per_elem`], bytes per
/// sample on one rank, for a model with an architecture (the zoo's and
/// Hugging Face's, whose layer after the last block is the final norm and
/// counts its input in 16 bits) without an engine: the blocks' norms are
/// counted with the blocks, the last one here. Whole on every rank but
/// under sequence parallelism.
pub(super) fn final_norm_extra_bytes(
    model: &Model,
    layer: usize,
    tp: f64,
    setup: &TrainingSetup,
) -> f64 {
    let after_blocks = layer > 0
        && model.layers[layer].kind == LayerKind::Other
        && model.layers[layer - 1].kind == LayerKind::TransformerBlock;
    if !after_blocks || model.eager_architecture(setup.eager_blocks()).is_none() {
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

pub(super) fn norm_extra_bytes(
    model: &Model,
    layer: &crate::model::Layer,
    tp: f64,
    setup: &TrainingSetup,
) -> f64 {
    let eager_rms = model
        .eager_architecture(setup.eager_blocks())
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
pub(super) fn eager_projection_extra_bytes(model: &Model, tp: f64, setup: &TrainingSetup) -> f64 {
    let (Some(a), Some((s, h, _))) = (
        model.eager_architecture(setup.eager_blocks()),
        shape_sha(model),
    ) else {
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
pub(super) fn gelu_new_extra_bytes(model: &Model, tp: f64, setup: &TrainingSetup) -> f64 {
    let composite = model
        .eager_architecture(setup.eager_blocks())
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

/// What Transformer Engine's FP8 linear layers change in a block's stored
/// bytes per sample (negative: they save), on one rank of a
/// tensor-parallel group of degree `tp`. Each linear layer keeps its input
/// for the weight gradient as the column-wise FP8 copy, 1 byte, not the
/// 16-bit tensor (transformer_engine/pytorch/module/linear.py,
/// layernorm_linear.py):
/// - the QKV and first MLP layers' inputs are their fused norms' FP8
///   outputs, so the 16-bit norm outputs the count holds (`s h` each,
///   replicated unless sequence-parallel) are 1 byte;
/// - the second MLP layer's input (`s ffn / tp`), which nothing else keeps,
///   is 1 byte;
/// - the output projection's input is the attention's output, which a
///   fused attention kernel keeps for its own backward in 16 bits: there
///   the FP8 copy is 1 byte more; where the attention is explicit or
///   recomputed (selective recomputation), 1 byte less.
///
/// Nothing without FP8, without a model shape, or with every block
/// recomputed (only its input stays).
pub(super) fn fp8_linear_inputs_bytes(model: &Model, tp: f64, setup: &TrainingSetup) -> f64 {
    if setup.formats.compute != crate::setup::Precision::Fp8 || setup.recompute == Recompute::Full {
        return 0.0;
    }
    let Some((s, h, a)) = shape_sha(model) else {
        return 0.0;
    };
    let (query, ffn) = match model.architecture() {
        Some(arch) => (a * arch.head_dim as f64, arch.ffn_hidden as f64),
        None => (h, 4.0 * h),
    };
    let replicated = if setup.sequence_parallel { tp } else { 1.0 };
    // Elements, each 1 byte less (kept in FP8, not 16 bits) or 1 byte more
    // (an FP8 copy beside the 16-bit one).
    let norm_outputs = 2.0 * s * h / replicated;
    let second_mlp = s * ffn / tp;
    let projection = s * query / tp;
    let kept_16_bit = fused_attention(model) && setup.recompute != Recompute::Selective;
    if kept_16_bit {
        projection - norm_outputs - second_mlp
    } else {
        -projection - norm_outputs - second_mlp
    }
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
    if block && setup.per_op_selective() {
        if let Some(kept) = per_op_selective_bytes(model, t, setup) {
            return kept;
        }
    }
    if block
        && setup.recompute == Recompute::None
        && setup.engine == Some(crate::setup::Engine::Torchtitan)
        && !setup.compile
    {
        if let Some(kept) = torchtitan_eager_block_bytes(model, t, setup) {
            return kept;
        }
    }
    if l.kind == LayerKind::VocabProjection
        && setup.cross_entropy() == CrossEntropy::Chunked
        && loss_counted(model, l)
    {
        // The projection and the loss ran in the forward: what stays is
        // the loss's own keep.
        return loss_stored_bytes_per_sample(model, layer, tp, setup);
    }
    if block && setup.recompute == Recompute::Full {
        // Only the block input survives; the rest is recomputed.
        let input = l.output_elems_per_sample as f64 * setup.formats.residual_stream_bytes();
        return if setup.sequence_parallel {
            input / t
        } else {
            input
        };
    }
    // FP8's change to a block's count of `bytes` 16-bit bytes: at most
    // half of them, were they all linear layers' inputs (a layer list's
    // own count may hold fewer than the shape says).
    let fp8_change = |block: bool, bytes: f64| {
        if block {
            fp8_linear_inputs_bytes(model, t, setup).max(-0.5 * bytes)
        } else {
            0.0
        }
    };
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
        } else if sequence_split_outside_blocks(model, layer, setup) {
            e / t
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
        return bytes + norm_extra - dropped + fp8_change(block, bytes);
    }
    let out = l.output_elems_per_sample as f64;
    match l.kind {
        LayerKind::TransformerBlock => {
            let own = block_full_bytes(model, layer, t, setup);
            let full = own + norm_extra + fp8_change(true, own);
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

/// Whether sequence parallelism splits what layer `layer`, outside the
/// blocks, keeps over the tensor-parallel group: the embedding's dropout
/// mask (Megatron-LM scatters, or reduce-scatters, the embedding's output
/// over the sequence before its dropout, `LanguageModelEmbedding`) and the
/// final norm's input (the decoder's `final_layernorm` runs on the
/// sequence-split hidden states; torchtitan's plan shards its `norm` as
/// `SequenceParallel`). Read of a model with an architecture (the zoo's,
/// Hugging Face's), whose layer after the last block is the final norm; a
/// layer list's own counts are kept as given.
fn sequence_split_outside_blocks(model: &Model, layer: usize, setup: &TrainingSetup) -> bool {
    if !setup.sequence_parallel || model.architecture().is_none() {
        return false;
    }
    match model.layers[layer].kind {
        LayerKind::Embedding => true,
        LayerKind::Other => {
            layer > 0 && model.layers[layer - 1].kind == LayerKind::TransformerBlock
        }
        _ => false,
    }
}

/// What the backward of an eager gated MLP (`down(act(gate) * up)`,
/// Hugging Face's) holds at its peak beyond what the block keeps, bytes
/// per sample on one rank, in 16-bit weights (DeepSpeed running Hugging
/// Face's blocks): the gradients of the product, of `act(gate)`, of `up`
/// and of `gate`, four inner-width tensors (`4 s f / tp`) in the
/// activations' width. Measured on the CPU with PyTorch's profiler over a
/// block's backward: 4.0 of them for Llama, 3.8-4.3 for Phi-3, Gemma 3 and
/// Qwen3. Under autocast and in fp32 the same measurement peaks elsewhere
/// (1.8 fp32 inner-width elements a token for Llama in fp32), and an
/// engine's fused blocks are not measured here: none for those.
fn eager_gated_mlp_backward_bytes(model: &Model, tp: f64, setup: &TrainingSetup) -> f64 {
    match (
        model.eager_architecture(setup.eager_blocks()),
        shape_sha(model),
    ) {
        (Some(a), Some((s, _, _)))
            if a.gated() && !autocast(setup) && setup.formats.compute.is_half() =>
        {
            4.0 * s * a.ffn_hidden as f64 / tp * activation_bytes(setup)
        }
        _ => 0.0,
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
                // Its forward and backward run in the forward pass, one
                // slice at a time: held while the loss runs.
                CrossEntropy::Chunked => {
                    return chunked_loss_transient_bytes(l, projection_input_elems(model, l), t)
                }
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
            } + eager_gated_mlp_backward_bytes(model, t, setup);
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
                // torchtitan's per-op checkpointing rebuilds what the
                // block does not keep.
                Recompute::Selective
                    if setup.per_op_selective() && model.architecture().is_some() =>
                {
                    let none = TrainingSetup {
                        recompute: Recompute::None,
                        ..*setup
                    };
                    let full = stored_activation_bytes_per_sample(model, layer, tp, &none);
                    let kept = stored_activation_bytes_per_sample(model, layer, tp, setup);
                    attn + (full - kept).max(0.0)
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

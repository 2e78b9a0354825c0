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
        rope_scaling: None,
        max_positions: 4,
        tied_embeddings: true,
        linear_bias: true,
        mlp_bias: None,
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
        assert_eq!(loss_stored_bytes_per_sample(&m, 4, 2, &setup), 80.0);
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
    assert_eq!(
        loss_stored_bytes_per_sample(&plain, 4, 2, &megatron_setup()),
        0.0
    );
}

#[test]
fn sequence_parallelism_splits_the_embeddings_mask_and_the_final_norms_input() {
    // tiny_decoder with dropout: the embedding keeps its mask (16 16-bit
    // elements per sample as counted, 32 bytes) and the final norm its
    // input (32 x 2 bytes). Megatron-LM drops the embedding's output after
    // scattering it over the sequence, and runs the final norm on the
    // sequence-split hidden states: at tp 2, half each on every rank
    // (until 2026-12-08, whole).
    let mut m = tiny_decoder(false);
    m.layers[0].stored_activation_elems_per_sample = Some(16);
    let sp = TrainingSetup {
        sequence_parallel: true,
        ..megatron_setup()
    };
    for (tp, setup, embedding, norm) in [
        (2, megatron_setup(), 32.0, 64.0),
        (2, sp, 16.0, 32.0),
        (1, sp, 32.0, 64.0),
    ] {
        assert_eq!(
            stored_activation_bytes_per_sample(&m, 0, tp, &setup),
            embedding
        );
        assert_eq!(stored_activation_bytes_per_sample(&m, 3, tp, &setup), norm);
    }
    // A layer list without an architecture keeps its counts as given.
    m.shape.as_mut().unwrap().architecture = None;
    assert_eq!(stored_activation_bytes_per_sample(&m, 0, 2, &sp), 32.0);
    assert_eq!(stored_activation_bytes_per_sample(&m, 3, 2, &sp), 64.0);
}

#[test]
fn torchtitans_eager_block_keeps_what_its_python_saves() {
    // tiny_llama at s = 4, bf16, no recomputation, per token: two norms'
    // inputs and fp32 inverse norms, 2 x (16 + 4); the QKV and MLP inputs,
    // 2 x 16; the attention's query, key, value and output, (8 + 4 + 4 + 8)
    // x 2, and its log-sum-exp, 2 x 4; four MLP tensors of 16, 4 x 32.
    let m = tiny_llama();
    let titan = TrainingSetup::default().on_engine(crate::setup::Engine::Torchtitan);
    assert_eq!(
        stored_activation_bytes_per_sample(&m, 0, 1, &titan),
        4.0 * 256.0
    );
    // tp 2: the attention and the MLP split, the norms and inputs whole;
    // with sequence parallelism the norms split too.
    assert_eq!(
        stored_activation_bytes_per_sample(&m, 0, 2, &titan),
        4.0 * 164.0
    );
    let sp = TrainingSetup {
        sequence_parallel: true,
        ..titan
    };
    assert_eq!(
        stored_activation_bytes_per_sample(&m, 0, 2, &sp),
        4.0 * 144.0
    );
    // Llama-3-8B's shape at one token: 168,072 bytes (the README's figure).
    let big = llama3_8b_block_at_one_token();
    assert_eq!(
        stored_activation_bytes_per_sample(&big, 0, 1, &titan),
        168_072.0
    );
    // Full recomputation rebuilds that block in its backward.
    let full = TrainingSetup {
        recompute: Recompute::Full,
        ..titan
    };
    assert_eq!(
        transient_bytes_per_sample(&m, 0, 1, &full),
        transient_bytes_per_sample(&m, 0, 1, &titan) + 4.0 * 256.0
    );
}

#[test]
fn torchtitans_chunked_loss_keeps_only_the_gradient_of_its_input() {
    // tiny_decoder: the projection's input 32 elements per sample (s h),
    // 40 logits (4 tokens x 10), here on tp 2: 20 per rank.
    let m = tiny_decoder(false);
    let chunked = TrainingSetup::default().on_engine(crate::setup::Engine::Torchtitan);
    assert_eq!(chunked.cross_entropy(), CrossEntropy::Chunked);
    // Kept: the 16-bit gradient of the input, whole on every rank, and all
    // of it the loss's (one micro-batch at a time).
    assert_eq!(stored_activation_bytes_per_sample(&m, 4, 2, &chunked), 64.0);
    assert_eq!(loss_stored_bytes_per_sample(&m, 4, 2, &chunked), 64.0);
    // While it runs: the fp32 gradient buffer (4 x 32) and one slice of
    // the 20 logits (20 / 8 x 14 bytes), forward or backward alike.
    let running = 128.0 + 20.0 / 8.0 * 14.0;
    assert_eq!(transient_bytes_per_sample(&m, 4, 2, &chunked), running);
    assert_eq!(
        forward_transient_bytes_per_sample(&m, 4, 2, &chunked),
        running
    );
    // Unchunked (torchtitan before 0.3.0): the input and the fp32
    // log-probabilities kept, 8 bytes per logit beside them in the backward.
    let whole = TrainingSetup {
        cross_entropy: Some(CrossEntropy::Pytorch),
        ..chunked
    };
    assert_eq!(
        stored_activation_bytes_per_sample(&m, 4, 2, &whole),
        64.0 + 80.0
    );
    assert_eq!(transient_bytes_per_sample(&m, 4, 2, &whole), 160.0);
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
    // (2 + 4 - 2) bytes, more than the loss's; by then the loss's backward
    // has freed its log-probabilities (40 x 4).
    let freed = 40.0 * 4.0;
    assert_eq!(acts(&outside, 2), stored - freed + 1000.0 * 4.0);
    // Autocast's cache keeps the cast: 1000 x (2 + 4).
    let inside = TrainingSetup {
        backward_in_autocast: true,
        ..outside
    };
    assert_eq!(acts(&inside, 2), stored - freed + 1000.0 * 6.0);
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
    // stages 1 (block0) and 3 (block1 to the head). Megatron Core's table
    // runs chunk forwards 0, 0, 1, 1, 0, 0, 1, 1; the device warms up
    // (2 - 1 - 1) x 2 + 2 = 2 and runs one more before its first
    // backward: two of chunk 0, one of chunk 1, whose backward follows at
    // once (each micro-batch's loss, its fp32 logits 40 x 4 bytes per
    // sample, is kept once). Later it holds three of chunk 0 (600) or two
    // and one again. Per sample on Megatron-LM: blocks 200 each, the final
    // norm 64, the projection's input 64 and the loss's 160; the loss's
    // transient 40 x 2. (Until 2026-12-08 amp counted ceil(3 / 2) = 2
    // micro-batches of both chunks, 2 x 688 - 160: 1,296 bytes, not 968.)
    let m = tiny_decoder(false);
    let setup = TrainingSetup {
        schedule: Schedule::Interleaved { virtual_stages: 2 },
        ..megatron_setup()
    };
    assert_eq!(in_flight(setup.schedule, 1, 2, 4), 2);
    let layers = layer_bytes(&m, &[1..2, 2..5], 1, &setup, true);
    assert_eq!(layers.stored, 200.0 + 200.0 + 64.0 + 224.0);
    assert_eq!(layers.loss_stored, 160.0);
    assert_eq!(layers.chunk_stored, [(200.0, 0.0), (488.0, 160.0)]);
    let (.., acts, _) = device_bytes(&layers, &setup, (1, 1, 2), (1, 4), 0.0);
    assert_eq!(acts, 2.0 * 200.0 + 488.0 + 80.0);
    // GPipe keeps every micro-batch's, as every other activation.
    let gpipe = TrainingSetup {
        schedule: Schedule::GPipe,
        ..setup
    };
    let (.., acts, _) = device_bytes(&layers, &gpipe, (1, 1, 2), (1, 4), 0.0);
    assert_eq!(acts, 4.0 * 688.0 + 80.0);
}

#[test]
fn interleaved_devices_hold_the_chunks_their_schedule_leaves() {
    let il = Schedule::Interleaved { virtual_stages: 2 };
    let held = |stage, pp, b, chunks: &[(f64, f64)]| {
        let stored = chunks.iter().map(|c| c.0).sum();
        let loss = chunks.iter().map(|c| c.1).sum();
        held_bytes_per_sample(il, (stage, pp, b), (stored, loss), chunks)
    };
    // pp 4, B 8, the first device: 2 x 3 + 4 = 10 warm-up forwards and
    // one more, 11 chunks; equal chunks hold 5.5 micro-batches' worth, not
    // ceil(11 / 2) = 6.
    assert_eq!(held(0, 4, 8, &[(100.0, 0.0), (100.0, 0.0)]), 1100.0);
    assert_eq!(in_flight(il, 0, 4, 8), 6);
    // The last device: 4 + 1 chunks, first four of chunk 0 and one of
    // chunk 1 (580 here), then five of chunk 0 once the next group's
    // chunk-0 forwards follow the first group's last chunk-1 backward
    // (600): the larger, where neither 2.5 x 220 = 550 nor ceil(5 / 2) x
    // 220 = 660 is right.
    assert_eq!(held(3, 4, 8, &[(120.0, 0.0), (100.0, 0.0)]), 600.0);
    assert_eq!(held(3, 4, 8, &[(100.0, 0.0), (120.0, 0.0)]), 520.0);
    // Every forward first (B = pp = 4: 10 warm-up forwards of 8): all.
    assert_eq!(held(0, 4, 4, &[(100.0, 0.0), (10.0, 0.0)]), 440.0);
    // One chunk, or 1F1B: the flight count, the loss kept once.
    assert_eq!(
        held_bytes_per_sample(Schedule::OneFOneB, (0, 4, 8), (300.0, 100.0), &[]),
        4.0 * 300.0 - 3.0 * 100.0
    );
    // A backward comes before a later peak where a chunk forward follows
    // the first backward: the third device of pp 4 at B = 4 warms up
    // 2 + 4 = 6 and runs 8 chunk forwards, one after its first backward,
    // though ceil(7 / 2) = 4 = B micro-batches are in flight (counted
    // none before 2026-12-08); the first device at B = 4 runs every
    // forward first.
    assert_eq!(in_flight(il, 2, 4, 4), 4);
    assert!(backward_before_peak(il, 2, 4, 4));
    assert!(!backward_before_peak(il, 0, 4, 4));
    assert!(backward_before_peak(Schedule::OneFOneB, 0, 4, 5));
    assert!(!backward_before_peak(Schedule::OneFOneB, 0, 4, 4));
    assert!(!backward_before_peak(Schedule::GPipe, 0, 4, 8));
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
fn deepspeed_runs_hugging_faces_eager_blocks_when_asked() {
    // `tiny_llama` (s = 4, h = 8, a gated MLP of f = 16) under DeepSpeed
    // at bf16: 16-bit weights, no autocast. Its fused blocks keep the
    // stored count; Hugging Face's eager ones (`--block-kernels eager`)
    // also each RMSNorm's fp32 input and 16-bit normalised value beyond
    // the fused norm's input, 4 bytes per element of s h = 32 (two norms:
    // 256), and the gate's activation beside the product, s f / tp 16-bit
    // elements (128 at tp 1, 64 at tp 2); no cast copies (no autocast).
    let fused = TrainingSetup {
        engine: Some(crate::setup::Engine::DeepSpeed),
        ..TrainingSetup::default()
    };
    let eager = TrainingSetup {
        block_kernels: Some(crate::setup::BlockKernels::Eager),
        ..fused
    };
    assert!(!fused.eager_blocks() && eager.eager_blocks());
    let m = tiny_llama();
    let at = |m: &Model, tp, s: &TrainingSetup| stored_activation_bytes_per_sample(m, 0, tp, s);
    assert_eq!(at(&m, 1, &eager) - at(&m, 1, &fused), 256.0 + 128.0);
    assert_eq!(at(&m, 2, &eager) - at(&m, 2, &fused), 256.0 + 64.0);
    // Its MLP's backward holds four inner-width gradients, 4 s f / tp
    // 16-bit elements: 512 bytes at tp 1, 256 at tp 2. Fused blocks, and
    // eager ones under autocast or in fp32 (measured to peak elsewhere),
    // hold none here.
    let transient = |s: &TrainingSetup, tp| transient_bytes_per_sample(&m, 0, tp, s);
    assert_eq!(transient(&eager, 1) - transient(&fused, 1), 512.0);
    assert_eq!(transient(&eager, 2) - transient(&fused, 2), 256.0);
    assert_eq!(transient(&eager_autocast_setup(), 1), transient(&fused, 1));
    let fp32 = TrainingSetup {
        formats: crate::setup::Precision::Fp32.formats(),
        ..eager
    };
    let fp32_fused = TrainingSetup {
        block_kernels: None,
        ..fp32
    };
    assert_eq!(transient(&fp32, 1), transient(&fp32_fused, 1));
    // Gemma's norm multiplies its weight in fp32 before it casts back:
    // 2 bytes more per element than Llama's in 16-bit weights (2 x 32 x
    // 2 = 128 for the two norms), the same under autocast.
    let mut gemma = m.clone();
    gemma.architecture_mut().unwrap().family = "gemma3_text".into();
    assert_eq!(at(&gemma, 1, &eager) - at(&m, 1, &eager), 128.0);
    let autocast = eager_autocast_setup();
    assert_eq!(at(&gemma, 1, &autocast), at(&m, 1, &autocast));
    // Explicit attention without dropout (s = 4, 2 heads of 4: 32
    // scores), whose count holds the probabilities the value product
    // keeps: Hugging Face's softmax in fp32 wherever its code asks for one
    // keeps its fp32 output beside them (the 16-bit copy a cast makes), 4
    // more bytes per score, 128; GPT-Neo's fp32 query and key, 2 more
    // bytes for each of s x 8 elements of each, 128; GPT-2's softmax runs
    // in the scores' 16 bits, its output the probabilities themselves.
    let explicit = |family: &str| {
        let mut m = tiny_with(Some(false), Some(false));
        m.architecture_mut().unwrap().family = family.into();
        m
    };
    let softmax = |f: &str, s: &TrainingSetup| eager_softmax_extra_bytes(&explicit(f), 1.0, s);
    assert_eq!(softmax("llama", &eager), 128.0);
    assert_eq!(softmax("gpt_neo", &eager), 128.0 + 128.0);
    assert_eq!(softmax("gpt2", &eager), 0.0);
    assert_eq!(softmax("gpt2", &autocast), 128.0);
    assert_eq!(softmax("gpt_neo", &fused), 0.0);
    // With dropout the count holds the dropout's output as the
    // probabilities (and the mask): the fp32 softmax output is 2 bytes a
    // score more than the 16-bit one counted, 64.
    let mut dropped = explicit("llama");
    dropped.architecture_mut().unwrap().dropout = Some(true);
    assert_eq!(eager_softmax_extra_bytes(&dropped, 1.0, &eager), 64.0);
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
    // softmax output is fp32 and a 16-bit copy feeds the value product:
    // 4 bytes per score beside the counted copy, 64 at tp 2; an engine's
    // fused softmax writes 16 bits, which the value product reads as
    // they are (dropout at p = 0 returns its input).
    let mut m = tiny_with(Some(false), Some(false));
    m.layers[0].stored_activation_elems_per_sample = Some(1000);
    let (eager, megatron) = (eager_autocast_setup(), megatron_setup());
    assert_eq!(eager_softmax_extra_bytes(&m, 2.0, &eager), 64.0);
    assert_eq!(eager_softmax_extra_bytes(&m, 2.0, &megatron), 0.0);
    // Selective recomputation drops the core from the count: the
    // probabilities (16 scores x 2 bytes) and, in Python, the fp32
    // softmax output beside them (64): 96 bytes at tp 2; Megatron-LM's
    // block keeps its 16-bit softmax output alone, 32 (64, two tensors,
    // until Megatron-LM's own block was measured without dropout,
    // 2026-12-07: scripts/activation-check/megatron_block.py).
    let selective = |s: &TrainingSetup| TrainingSetup {
        recompute: Recompute::Selective,
        ..*s
    };
    let at = |s: &TrainingSetup| stored_activation_bytes_per_sample(&m, 0, 2, s);
    assert_eq!(at(&eager) - at(&selective(&eager)), 96.0);
    assert_eq!(at(&megatron) - at(&selective(&megatron)), 32.0);
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
    // PyTorch's cross_entropy (no engine, or torchtitan unchunked): 8 bytes per
    // logit beyond the stored softmax, the two fp32 gradients of the
    // backward pass.
    let pytorch = 20.0 * 8.0;
    assert_eq!(
        transient_bytes_per_sample(&m, 0, 2, &with(None, None)),
        pytorch
    );
    let titan = with(
        Some(crate::setup::Engine::Torchtitan),
        Some(CrossEntropy::Pytorch),
    );
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

/// [`tiny_llama`]'s block at Llama-3-8B's widths, one token long: what
/// the README's bytes-per-token figures are counted on.
fn llama3_8b_block_at_one_token() -> Model {
    let mut big = tiny_llama();
    let sh = big.shape.as_mut().unwrap();
    (sh.hidden, sh.heads, sh.seq_len) = (4096, 32, 1);
    let a = sh.architecture.as_mut().unwrap();
    (a.kv_heads, a.head_dim, a.ffn_hidden) = (8, 128, 14336);
    big
}

/// `tiny()` as a Llama: s = 4, h = 8, 2 heads of 4, one key/value head, a
/// gated MLP of 16, fused attention.
fn tiny_llama() -> Model {
    let mut m = tiny_with(Some(true), Some(false));
    let a = m.architecture_mut().unwrap();
    a.family = "llama".into();
    a.kv_heads = 1;
    a.ffn_hidden = 16;
    a.activation = crate::model::Activation::Swiglu;
    a.norm = crate::model::NormKind::Rmsnorm;
    a.position_embedding = crate::model::PositionEmbedding::Rope;
    m
}

#[test]
fn torchtitans_selective_checkpointing_keeps_its_save_lists_outputs() {
    let m = tiny_llama();
    let sac = TrainingSetup {
        recompute: Recompute::Selective,
        engine: Some(crate::setup::Engine::Torchtitan),
        ..TrainingSetup::default()
    };
    assert!(sac.per_op_selective());
    // Per sample (s = 4), bf16: the input, 4 x 8 x 2 = 64; of the products
    // qkv (16 wide, fused), o, gate, up, down the first, third and fifth:
    // 4 x (16 + 16 + 8) x 2 = 320; the attention's output, 4 x 8 x 2 =
    // 64, and its fp32 log-sum-exp, 4 x 2 x 4 = 32.
    assert_eq!(stored_activation_bytes_per_sample(&m, 0, 1, &sac), 480.0);
    // tp 2 with sequence parallelism: the input's sequence shard (32), this
    // rank's slices of qkv and gate and the whole partial sum of down (4 x
    // (8 + 8 + 8) x 2 = 192), half the attention (32 + 16), and the two
    // reduce-scatters' shards (2 x 32).
    let sp = TrainingSetup {
        sequence_parallel: true,
        ..sac
    };
    assert_eq!(stored_activation_bytes_per_sample(&m, 0, 2, &sp), 336.0);
    // Without sequence parallelism: the whole input, no reduce-scatter.
    assert_eq!(stored_activation_bytes_per_sample(&m, 0, 2, &sac), 304.0);
    // The backward rebuilds what the block does not keep.
    let none = TrainingSetup {
        recompute: Recompute::None,
        ..sac
    };
    let full = stored_activation_bytes_per_sample(&m, 0, 1, &none);
    assert!(full > 480.0);
    assert_eq!(
        transient_bytes_per_sample(&m, 0, 1, &sac),
        transient_bytes_per_sample(&m, 0, 1, &none) + full - 480.0
    );
    // Megatron-LM's selective recomputation drops the attention core,
    // nothing under fused attention.
    let megatron = TrainingSetup {
        engine: Some(crate::setup::Engine::Megatron),
        ..sac
    };
    assert!(!megatron.per_op_selective());
    assert_eq!(
        stored_activation_bytes_per_sample(&m, 0, 1, &megatron),
        stored_activation_bytes_per_sample(
            &m,
            0,
            1,
            &TrainingSetup {
                recompute: Recompute::None,
                ..megatron
            }
        )
    );
}

#[test]
fn compiled_torchtitan_blocks_keep_what_their_backward_reads() {
    // Measured on the CPU with torchtitan's own blocks compiled as its
    // `compile.enable` compiles them (scripts/engine-check/sac.py).
    let m = tiny_llama();
    let titan = TrainingSetup::default().on_engine(crate::setup::Engine::Torchtitan);
    let compiled = TrainingSetup {
        compile: true,
        ..titan
    };
    let megatron = TrainingSetup {
        engine: Some(crate::setup::Engine::Megatron),
        ..TrainingSetup::default()
    };
    // Without recomputation Inductor's partitioner keeps what an engine's
    // fused block keeps: for Llama-3-8B's shape at one token 139,264 bytes,
    // where the eager block keeps 168,072.
    let fused = stored_activation_bytes_per_sample(&m, 0, 1, &megatron);
    assert_eq!(
        stored_activation_bytes_per_sample(&m, 0, 1, &compiled),
        fused
    );
    let big = llama3_8b_block_at_one_token();
    assert_eq!(
        stored_activation_bytes_per_sample(&big, 0, 1, &compiled),
        139_264.0
    );
    assert_eq!(
        stored_activation_bytes_per_sample(&big, 0, 1, &titan),
        168_072.0
    );
    // Selective checkpointing, compiled: the save list's outputs less the
    // down projection's (4 x 8 x 2 = 64), which only the residual add
    // reads: 480 - 64.
    let sac = TrainingSetup {
        recompute: Recompute::Selective,
        ..compiled
    };
    assert_eq!(stored_activation_bytes_per_sample(&m, 0, 1, &sac), 416.0);
    // tp 2 with sequence parallelism: nor the reduce-scatters' shards
    // (336 - 64 - 64 = 208).
    let sp = TrainingSetup {
        sequence_parallel: true,
        ..sac
    };
    assert_eq!(stored_activation_bytes_per_sample(&m, 0, 2, &sp), 208.0);
    // Full recomputation keeps the block input either way.
    let full = |s: TrainingSetup| {
        stored_activation_bytes_per_sample(
            &m,
            0,
            1,
            &TrainingSetup {
                recompute: Recompute::Full,
                ..s
            },
        )
    };
    assert_eq!(full(compiled), full(titan));
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
    // B = pp: Megatron Core warms the last device up as any other B (4
    // chunk forwards, 5 chunks held: 3 micro-batches), the first device
    // runs every forward first (10 >= 8 chunks: all 4).
    assert_eq!(in_flight(il, 3, 4, 4), 3);
    assert_eq!(in_flight(il, 0, 4, 4), 4);
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
        tables_agree_for(tied, setup, (dp, pp, mbs, b));
    }
}

/// The partitioner's tables, the split check and `amp eval` price
/// `tiny_decoder(tied)` the same under `setup` on `dp` x `pp` GPUs, `b`
/// micro-batches of `mbs`: every split's peak equal, and the split check
/// a bound at the fullest device's peak.
fn tables_agree_for(
    tied: bool,
    setup: TrainingSetup,
    (dp, pp, mbs, b): (usize, usize, usize, usize),
) {
    // What the search gives its tables: the setup its plans record.
    let setup = setup.for_pipeline(pp);
    {
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
/// charge the same to the stage holding the last layer. Its passes hold
/// the gradients once, where a plain replica holds its all-reduce buffer
/// beside them ([`flattens_at_reduction`]).
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
        // One fp16 gradient per parameter of the stage's rank fewer.
        let copy = |first: usize, end: usize| m.stage_params(first..end) as f64 / 2.0 * 2.0;
        for (x, y) in plain_mem.iter().zip(&ds_mem) {
            let (first, end) = (bounds[x.stage], bounds[x.stage + 1]);
            assert_eq!(x.gradients_bytes - y.gradients_bytes, copy(first, end));
            let want = if x.stage == 3 {
                kept * mbs as f64 * per_sample
            } else {
                0.0
            } - copy(first, end);
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
            (got - kept * mbs as f64 * per_sample + copy(20, 30)).abs() < 1.0,
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

/// torchtitan on `formats`, sharded with ZeRO-3 or not.
fn torchtitan_setup(sharding: OptimizerSharding) -> TrainingSetup {
    TrainingSetup {
        engine: Some(crate::setup::Engine::Torchtitan),
        optimizer_sharding: sharding,
        // The whole sequence's loss, as scripts/engine-check/fsdp.py's
        // loop computes it (torchtitan's recipes chunk it).
        cross_entropy: Some(CrossEntropy::Pytorch),
        ..TrainingSetup::default()
    }
}

#[test]
fn torchtitan_holds_fsdp2_shards_and_its_unsharded_copies() {
    // FSDP2 as torchtitan applies it (scripts/engine-check/fsdp.py measures
    // 16.000 and 6.000 bytes per parameter on the CPU): the shards are the
    // fp32 parameters (mixed precision's master weights), their fp32
    // gradients and Adam's two moments, 16 bytes per parameter of the shard,
    // over dp with ZeRO-3 and over one replica without (no all-reduce
    // bucket beside the gradients).
    let zero3 = torchtitan_setup(OptimizerSharding::Zero3);
    let replicated = torchtitan_setup(OptimizerSharding::None);
    let held = state_bytes(&zero3, 4);
    assert_eq!(
        (held.weights, held.gradients, held.optimizer),
        (0.0, 1.0, 3.0)
    );
    let held = state_bytes(&replicated, 4);
    assert_eq!(
        (held.weights, held.gradients, held.optimizer),
        (0.0, 4.0, 12.0)
    );
    // Through the passes the 16-bit copies (on the layers that keep them),
    // and in a pipeline stage that has run a backward the gradients
    // accumulated unsharded in fp32; through the step neither.
    let (passes, step) = phase_state_bytes(&zero3, 4, true, true);
    assert_eq!((passes.weights, passes.gradients), (2.0, 1.0 + 4.0));
    assert_eq!(step, state_bytes(&zero3, 4));
    let (passes, _) = phase_state_bytes(&zero3, 4, true, false);
    assert_eq!((passes.weights, passes.gradients), (2.0, 1.0));
    // Which layers keep their copy through the passes: in a pipeline all
    // (no unit reshards after its forward), in one stage the projection's
    // unit alone.
    for kind in [
        LayerKind::Embedding,
        LayerKind::TransformerBlock,
        LayerKind::Other,
    ] {
        assert!(holds_cast_through_passes(kind, &zero3, false, true));
        assert!(!holds_cast_through_passes(kind, &zero3, false, false));
    }
    assert!(holds_cast_through_passes(
        LayerKind::VocabProjection,
        &zero3,
        false,
        false
    ));
    // The accumulated gradients count from a second micro-batch on, even
    // where it is still in flight at the first backward.
    assert!(gradients_before_peak(&zero3, 2, false));
    assert!(!gradients_before_peak(&zero3, 1, false));
    assert!(!gradients_before_peak(&megatron_setup(), 2, false));
    // A device's bytes: tiny_decoder's 2,176 parameters (80 + 1,000 +
    // 1,000 + 16 + 80), tp 1, dp 2, ZeRO-3. One stage: 8 bytes per
    // parameter of shards, the projection's 80 parameters' copy.
    let m = tiny_decoder(false);
    let one = device_memory(
        &m,
        std::slice::from_ref(&(0..5)),
        1,
        2,
        0,
        1,
        1,
        2,
        &zero3,
        0.0,
    );
    assert_eq!((one.0, one.1, one.2), (160.0, 2176.0 * 2.0, 2176.0 * 6.0));
    // The first of two stages (the embedding and a block, 1,080
    // parameters) with two micro-batches: every copy and the fp32
    // accumulated gradients beside the shards.
    let first = device_memory(
        &m,
        std::slice::from_ref(&(0..2)),
        1,
        2,
        0,
        2,
        1,
        2,
        &zero3,
        0.0,
    );
    assert_eq!(
        (first.0, first.1, first.2),
        (1080.0 * 2.0, 1080.0 * (2.0 + 4.0), 1080.0 * 6.0)
    );
    // Beside the activations, the largest unit's reduction: a block's 1,000
    // new 16-bit gradients and their fp32 copy, 6,000 bytes, in place of
    // the loss's workspace (80 bytes on Megatron-LM, whose stored bytes are
    // the same 688), with the loss's fp32 log-probabilities (40 x 4)
    // freed by the loss's backward before it.
    let megatron = device_memory(
        &m,
        std::slice::from_ref(&(0..5)),
        1,
        2,
        0,
        1,
        1,
        2,
        &megatron_setup(),
        0.0,
    );
    assert_eq!(
        (megatron.3, one.3),
        (688.0 + 80.0, 688.0 - 40.0 * 4.0 + 6000.0)
    );
    // One micro-batch: nothing accumulates.
    let once = device_memory(
        &m,
        std::slice::from_ref(&(0..2)),
        1,
        2,
        0,
        2,
        1,
        1,
        &zero3,
        0.0,
    );
    assert_eq!(once.1, 1080.0 * 2.0);
}

#[test]
fn tables_agree_with_plan_memory_under_torchtitan() {
    // FSDP2's phases (the unsharded copies through the passes, the
    // pipeline's accumulated gradients) priced the same by the tables, the
    // split check and `amp eval`, one stage and two, tied and not.
    let zero3 = torchtitan_setup(OptimizerSharding::Zero3);
    let replicated = torchtitan_setup(OptimizerSharding::None);
    for (tied, setup, dp, pp, mbs, b) in [
        (false, zero3, 2, 1, 1, 2),
        (true, zero3, 2, 1, 1, 2),
        (false, replicated, 2, 1, 64, 1),
        (true, replicated, 1, 1, 1, 1),
        (false, zero3, 2, 2, 1, 4),
        (false, zero3, 1, 2, 1, 2),
        (true, zero3, 2, 2, 64, 2),
        (false, replicated, 2, 2, 4096, 1),
        (true, replicated, 1, 2, 1, 4),
    ] {
        tables_agree_for(tied, setup, (dp, pp, mbs, b));
    }
}

#[test]
fn megatron_holds_its_gradients_once_beside_data_parallelism() {
    // Megatron-LM's `main_grad`s are views into the bucketed buffer its
    // all-reduce (or, with the distributed optimizer, reduce-scatter)
    // reads (megatron/core/distributed/param_and_grad_buffer.py): one fp32
    // copy, where PyTorch's DDP keeps its buckets beside the gradients.
    let megatron = megatron_setup();
    assert_eq!(state_bytes(&megatron, 1).gradients, 4.0);
    assert_eq!(state_bytes(&megatron, 8).gradients, 4.0);
    let zero1 = TrainingSetup {
        optimizer_sharding: OptimizerSharding::Zero1,
        ..megatron
    };
    let s = state_bytes(&zero1, 8);
    assert_eq!((s.weights, s.gradients, s.optimizer), (2.0, 4.0, 1.5));
    let ddp = TrainingSetup {
        engine: None,
        ..megatron
    };
    assert_eq!(state_bytes(&ddp, 8).gradients, 4.0 * DP_GRADIENT_COPIES);
}

#[test]
fn deepspeed_zero2_and_zero3_hold_their_buckets() {
    // DeepSpeed's own engine allocates its gradient-reduction bucket at
    // `reduce_bucket_size` (5e8 elements, 16-bit) under ZeRO-1 and ZeRO-2
    // (two with `overlap_comm`) and ZeRO-3, and ZeRO-3 its prefetch bucket
    // (5e7): ZeRO-1's and ZeRO-3's on every GPU whatever its phase, and
    // ZeRO-3 the largest layer gathered while it computes; ZeRO-2's from
    // the backward's first gradient to its end only; nothing without ZeRO
    // or elsewhere. The setups as plans record them (bf16 gradients under
    // ZeRO).
    let ds = |sharding: OptimizerSharding, overlap: bool| {
        TrainingSetup {
            engine: Some(crate::setup::Engine::DeepSpeed),
            optimizer_sharding: sharding,
            overlap_grad_reduce: overlap,
            ..TrainingSetup::default()
        }
        .for_pipeline(1)
    };
    let m = tiny_decoder(false);
    // This model is small: ZeRO-3 keeps every layer gathered into the
    // backward (`deepspeed_zero3_keeps_a_suffix_gathered_into_the_backward`).
    let kept = m.total_params() as f64;
    let buffers = |s: &TrainingSetup, tp: usize| engine_buffer_bytes(&m, s, tp);
    let in_backward = |s: &TrainingSetup, tp: usize| deepspeed_backward_bucket_bytes(&m, s, tp);
    let at_end = |s: &TrainingSetup| backward_end_buffer_bytes(&m, s, 1);
    for overlap in [false, true] {
        assert_eq!(buffers(&ds(OptimizerSharding::Zero2, overlap), 1), 0.0);
    }
    assert_eq!(in_backward(&ds(OptimizerSharding::Zero2, false), 1), 1e9);
    assert_eq!(in_backward(&ds(OptimizerSharding::Zero2, true), 2), 2e9);
    assert_eq!(at_end(&ds(OptimizerSharding::Zero2, false)), 1e9);
    for tp in [1, 2] {
        let want = 1.1e9 + 2.0 * kept / tp as f64;
        assert_eq!(buffers(&ds(OptimizerSharding::Zero3, false), tp), want);
    }
    // ZeRO-1's second bucket comes after the passes.
    assert_eq!(buffers(&ds(OptimizerSharding::Zero1, false), 1), 1e9);
    assert_eq!(at_end(&ds(OptimizerSharding::Zero1, false)), 1e9);
    for z in [OptimizerSharding::None, OptimizerSharding::Zero3] {
        assert_eq!(at_end(&ds(z, false)), 0.0);
    }
    for z in [
        OptimizerSharding::None,
        OptimizerSharding::Zero1,
        OptimizerSharding::Zero3,
    ] {
        assert_eq!(in_backward(&ds(z, false), 1), 0.0);
    }
    assert_eq!(buffers(&ds(OptimizerSharding::None, false), 1), 0.0);
    let titan = torchtitan_setup(OptimizerSharding::Zero3);
    assert_eq!(buffers(&titan, 1), 0.0);
    // `amp eval` reads ZeRO-1's and ZeRO-3's as other memory, ZeRO-2's
    // with the activations (a workspace of the backward), and the tables
    // and the split check price them alike.
    let mut c = clusters::homogeneous();
    c.nodes.truncate(1);
    c.nodes[0].gpus = 2;
    let grid = DeviceGrid::new(&c, 1, 2, 1, &Placement::artifact_default(&c));
    for (sharding, overlap) in [
        (OptimizerSharding::Zero1, false),
        (OptimizerSharding::Zero2, false),
        (OptimizerSharding::Zero2, true),
        (OptimizerSharding::Zero3, false),
    ] {
        let setup = ds(sharding, overlap);
        let plan = crate::search::plan_from_grid(&grid, &[0, 5], 1, 2, &setup);
        for d in plan_memory(&m, &c, &plan, RESERVE) {
            assert_eq!(d.other_bytes, RESERVE + buffers(&setup, 1));
            if sharding == OptimizerSharding::Zero1 {
                // This model's activations are below the second bucket: the
                // end of the backward is the peak, with the pipe buffers'
                // earlier output (40 fp32 logits) beside it.
                assert_eq!(d.activations_bytes, 1e9 + 160.0, "{d:?}");
            }
            if sharding == OptimizerSharding::Zero2 {
                // Its bucket(s) beside the largest layer's 16-bit weight
                // gradient (the block's 1000 parameters), at most.
                let bucket = in_backward(&setup, 1);
                assert!(d.activations_bytes >= bucket, "{d:?}");
                assert!(d.activations_bytes <= bucket + 2000.0 + 1e6, "{d:?}");
            }
        }
        tables_agree_for(false, setup, (2, 1, 1, 2));
    }
}

#[test]
fn deepspeed_zero3_keeps_a_suffix_gathered_into_the_backward() {
    // At the end of a layer's forward DeepSpeed walks the step's trace
    // onwards: the later layers' forwards, then their backwards, then the
    // layer's own. It keeps the layer's weights gathered when twice the
    // later layers' parameters fall short of 1e9 elements.
    let zero3 = TrainingSetup {
        engine: Some(crate::setup::Engine::DeepSpeed),
        optimizer_sharding: OptimizerSharding::Zero3,
        ..TrainingSetup::default()
    }
    .for_pipeline(1);
    let mut m = tiny_decoder(false);
    // embedding 80, blocks of 3e8 and 5e8, norm 16, head 80: twice the
    // parameters after block 0 is 1e9 and 192, past the distance.
    m.layers[1].params = 300_000_000;
    m.layers[2].params = 500_000_000;
    assert_eq!(
        deepspeed_kept_gathered(&m, &zero3, 1),
        [false, false, true, true, true]
    );
    // Twice 499,999,996: kept. At tp 2 everything is.
    m.layers[2].params = 499_999_900;
    assert_eq!(
        deepspeed_kept_gathered(&m, &zero3, 1),
        [false, true, true, true, true]
    );
    assert_eq!(deepspeed_kept_gathered(&m, &zero3, 2), [true; 5]);
    // What ZeRO-3 holds gathered at the backward's start: the kept
    // layers, or the largest layer if it is more.
    let kept = (300_000_000 + 499_999_900 + 16 + 80) as f64;
    assert_eq!(engine_buffer_bytes(&m, &zero3, 1), (5.5e8 + kept) * 2.0);
    m.layers[2].params = 200_000_000;
    m.layers[0].params = 900_000_000;
    let kept = (300_000_000 + 200_000_000 + 16 + 80) as f64;
    assert_eq!(
        deepspeed_kept_gathered(&m, &zero3, 1),
        [false, true, true, true, true]
    );
    assert!(kept < 9e8);
    assert_eq!(engine_buffer_bytes(&m, &zero3, 1), (5.5e8 + 9e8) * 2.0);
    // Nothing elsewhere: ZeRO-2, torchtitan's FSDP2.
    let zero2 = TrainingSetup {
        optimizer_sharding: OptimizerSharding::Zero2,
        ..zero3
    };
    assert_eq!(deepspeed_kept_gathered(&m, &zero2, 1), [false; 5]);
    let titan = torchtitan_setup(OptimizerSharding::Zero3);
    assert_eq!(deepspeed_kept_gathered(&m, &titan, 1), [false; 5]);
}

#[test]
fn deepspeed_zero2_flattens_a_bucket_before_it_all_reduces_it() {
    // ZeRO-2's `allreduce_bucket` flattens a full bucket's gradients into
    // a new 16-bit tensor. A rank whose gradients fit one bucket flushes
    // once, in the backward's epilogue: a copy of every gradient, a peak
    // of its own after the activations are freed. A larger one flushes
    // inside the backward: one bucket's copy beside the passes. Nothing
    // under the other stages, nor under torchtitan.
    let ds = |sharding: OptimizerSharding| {
        TrainingSetup {
            engine: Some(crate::setup::Engine::DeepSpeed),
            optimizer_sharding: sharding,
            ..TrainingSetup::default()
        }
        .for_pipeline(1)
    };
    let small = tiny_decoder(false);
    let zero2 = ds(OptimizerSharding::Zero2);
    assert_eq!(flattened_bucket_bytes_per_param(&small, &zero2, 1), 2.0);
    for other in [
        ds(OptimizerSharding::None),
        ds(OptimizerSharding::Zero1),
        ds(OptimizerSharding::Zero3),
        torchtitan_setup(OptimizerSharding::Zero3),
    ] {
        assert_eq!(flattened_bucket_bytes_per_param(&small, &other, 1), 0.0);
    }
    // 6e8 parameters and a little: over a bucket at tp 1, under at tp 2.
    let mut big = tiny_decoder(false);
    for l in [1, 2] {
        big.layers[l].params = 300_000_000;
    }
    // Both live through the backward only.
    assert_eq!(deepspeed_backward_bucket_bytes(&big, &zero2, 1), 2e9);
    assert_eq!(flattened_bucket_bytes_per_param(&big, &zero2, 1), 0.0);
    assert_eq!(deepspeed_backward_bucket_bytes(&big, &zero2, 2), 1e9);
    assert_eq!(flattened_bucket_bytes_per_param(&big, &zero2, 2), 2.0);
    assert_eq!(engine_buffer_bytes(&big, &zero2, 1), 0.0);
    // `amp eval`: the tiny decoder's few activations are below the copy,
    // so the end of the backward is the peak: states, the copy, the
    // bucket (read with the activations) and the reserve.
    let mut c = clusters::homogeneous();
    c.nodes.truncate(1);
    c.nodes[0].gpus = 2;
    let grid = DeviceGrid::new(&c, 1, 2, 1, &Placement::artifact_default(&c));
    let plan = crate::search::plan_from_grid(&grid, &[0, 5], 1, 2, &zero2);
    let params = small.total_params() as f64;
    for d in plan_memory(&small, &c, &plan, RESERVE) {
        assert_eq!(d.activations_bytes, 2.0 * params + 1e9);
        let states = d.weights_bytes + d.gradients_bytes + d.optimizer_bytes;
        assert_eq!(states, params * (2.0 + 1.0 + 6.0));
        assert_eq!(d.other_bytes, RESERVE);
    }
    tables_agree_for(true, zero2, (2, 1, 1, 2));
}

/// DeepSpeed's pipeline engine without ZeRO reduces its gradients
/// through a flat copy of a bucket it makes after the last backward, cast
/// to fp32 under `fp32_allreduce` (the AMP artifact's setup): its passes
/// hold the gradients once, the backward's end that copy beside them, up
/// to one bucket; the partitioner's tables price the same.
#[test]
fn deepspeed_flattens_its_gradients_only_to_reduce_them() {
    let artifact = crate::cost::amp_paper::artifact_setup();
    assert!(flattens_at_reduction(&artifact));
    assert_eq!(state_bytes(&artifact, 2).gradients, 2.0);
    assert_eq!(reduction_copy_bytes_per_param(&artifact, 2), 2.0 + 4.0);
    assert_eq!(reduction_copy_bytes_per_param(&artifact, 1), 0.0);
    assert_eq!(reduction_copy_bytes(&artifact, 2, 1e6, 1e5), 1e6 * 6.0);
    assert_eq!(
        reduction_copy_bytes(&artifact, 2, 1e9, 1e8),
        (DEEPSPEED_REDUCE_BUCKET_ELEMS + 1e8) * 6.0
    );
    // A plain replica's all-reduce buffer (PyTorch DDP's buckets) lives
    // through the passes; ZeRO-1 reduces through its own bucket.
    let plain = TrainingSetup {
        stage_exchange: Some(StageExchange::Blocking),
        ..artifact
    };
    let zero1 = TrainingSetup {
        optimizer_sharding: OptimizerSharding::Zero1,
        ..artifact
    };
    for other in [plain, zero1] {
        assert!(!flattens_at_reduction(&other));
        assert_eq!(reduction_copy_bytes_per_param(&other, 2), 0.0);
    }
    assert_eq!(state_bytes(&plain, 2).gradients, 4.0);
    for tied in [false, true] {
        for shape in [(2, 1, 1, 1), (2, 2, 1, 1), (2, 2, 2, 4), (1, 2, 1, 2)] {
            tables_agree_for(tied, artifact, shape);
        }
    }
    // A bucket takes tensors until it holds more than its limit, so it
    // holds at most that and the largest layer: three of 400 M here, a
    // copy of 900 M gradients, the peak of this stage.
    let mut m = tiny_decoder(false);
    for l in [1, 2, 3] {
        m.layers[l].params = 400_000_000;
    }
    let mut c = clusters::homogeneous();
    c.nodes.truncate(1);
    c.nodes[0].gpus = 2;
    let grid = DeviceGrid::new(&c, 1, 2, 1, &Placement::artifact_default(&c));
    let plan = crate::search::plan_from_grid(&grid, &[0, 5], 1, 1, &artifact);
    let t = stage_memory_tables(&m, &c, &grid, 1, 1, &artifact, RESERVE);
    for d in plan_memory(&m, &c, &plan, RESERVE) {
        assert_eq!(
            d.activations_bytes,
            (DEEPSPEED_REDUCE_BUCKET_ELEMS + 4e8) * 6.0
        );
        assert_eq!(d.gradients_bytes, m.total_params() as f64 * 2.0);
        assert!((t.peak_bytes(0, 0, 5) - d.peak_bytes).abs() <= 1e-9 * d.peak_bytes);
    }
    // At one replica the artifact's 0.3 engine reduces nothing; today's
    // DeepSpeed and Sailor's fork flatten and "reduce" all the same.
    let sailor = TrainingSetup {
        grad_reduce_barrier: true,
        ..artifact
    };
    let today = TrainingSetup {
        engine: Some(crate::setup::Engine::DeepSpeed),
        stage_exchange: None,
        ..artifact
    };
    assert_eq!(reduction_copy_bytes_per_param(&artifact, 1), 0.0);
    assert_eq!(reduction_copy_bytes_per_param(&sailor, 1), 6.0);
    assert_eq!(reduction_copy_bytes_per_param(&today, 1), 6.0);
    // In bf16 DeepSpeed's `BF16_Optimizer` keeps its own buffer.
    let bf16 = TrainingSetup {
        formats: crate::setup::Precision::Bf16.formats(),
        ..artifact
    };
    assert!(!flattens_at_reduction(&bf16));
}

#[test]
fn deepspeeds_fp16_optimizer_steps_on_fp32_copies_of_its_gradients() {
    // fp16 without ZeRO: DeepSpeed's `FP16_Optimizer` keeps fp16
    // gradients, once through the passes (the all-reduce flattens its
    // copy after them, `flattens_at_reduction`), and its step flattens
    // fp32 copies of every gradient: 2
    // (fp16 weights) + 12 (fp32 master weights and moments) + 2
    // (gradients) + 4 + 4 bytes a parameter (deepspeed/runtime/fp16/
    // fused_optimizer.py `step`; 24, as `scripts/engine-check/deepspeed_zero.py`
    // measures the same class at bf16 on a plain module).
    let setup = TrainingSetup {
        engine: Some(crate::setup::Engine::DeepSpeed),
        formats: crate::setup::Precision::Fp16.formats(),
        ..TrainingSetup::default()
    }
    .for_pipeline(1);
    assert!(deepspeed_fp16_optimizer(&setup));
    assert_eq!(optimizer_step_bytes_per_param(&setup, 2), 8.0);
    let (passes, step) = phase_state_bytes(&setup, 2, true, false);
    assert_eq!((passes.gradients, step.gradients), (2.0, 2.0));
    assert_eq!(step.total() + 8.0, 24.0);
    // Not under ZeRO, nor in bf16 (the pipeline engine's
    // `BF16_Optimizer`, fp32 gradients), nor elsewhere.
    let zero1 = TrainingSetup {
        optimizer_sharding: OptimizerSharding::Zero1,
        ..setup
    };
    assert!(!deepspeed_fp16_optimizer(&zero1));
    let bf16 = TrainingSetup {
        engine: Some(crate::setup::Engine::DeepSpeed),
        ..TrainingSetup::default()
    }
    .for_pipeline(1);
    assert!(!deepspeed_fp16_optimizer(&bf16));
    let fp16 = TrainingSetup {
        formats: crate::setup::Precision::Fp16.formats(),
        ..TrainingSetup::default()
    };
    assert!(!deepspeed_fp16_optimizer(&fp16));
    // The device's peak is the step's where the activations are small,
    // and the tables and the split check price it alike.
    let m = tiny_decoder(false);
    let mut c = clusters::homogeneous();
    c.nodes.truncate(1);
    c.nodes[0].gpus = 2;
    let grid = DeviceGrid::new(&c, 1, 2, 1, &Placement::artifact_default(&c));
    let plan = crate::search::plan_from_grid(&grid, &[0, 5], 1, 2, &setup);
    let params: u64 = m.layers.iter().map(|l| l.params).sum();
    // Beside it, the earlier micro-batch's output the pipe buffers still
    // hold at the step: 40 fp32 logits.
    for d in plan_memory(&m, &c, &plan, RESERVE) {
        let states = d.weights_bytes + d.gradients_bytes + d.optimizer_bytes;
        assert_eq!(states, 16.0 * params as f64, "{d:?}");
        assert_eq!(d.activations_bytes, 8.0 * params as f64 + 160.0, "{d:?}");
    }
    tables_agree_for(false, setup, (2, 1, 1, 2));
    tables_agree_for(true, setup, (2, 2, 1, 4));
}

#[test]
fn deepspeed_bf16_optimizer_partitions_its_states() {
    // bf16 without ZeRO: DeepSpeed's pipeline engine (amp's export, one
    // stage or more) runs the `BF16_Optimizer`, which partitions the fp32
    // master weights and moments over the replicas and keeps a flat buffer
    // of the gradients in `grad_acc_dtype` (bf16, the model's) beside their
    // bf16 `.grad`s, and its step casts its partition of that buffer to
    // fp32: 2 + (2 + 2) + 12 / dp bytes a parameter, and 4 / dp more at the
    // step: the 14 at dp 2 that `scripts/engine-check/deepspeed_zero.py`
    // measures, and the 22 at dp 1 of `deepspeed_pipeline.py`'s first stage.
    for pp in [1, 2] {
        let setup = TrainingSetup {
            engine: Some(crate::setup::Engine::DeepSpeed),
            ..TrainingSetup::default()
        }
        .for_pipeline(pp);
        assert!(deepspeed_bf16_optimizer(&setup));
        for dp in [1, 2, 8] {
            let held = state_bytes(&setup, dp);
            assert_eq!(
                (held.weights, held.gradients, held.optimizer),
                (2.0, 4.0, 12.0 / dp as f64)
            );
            assert_eq!(optimizer_step_bytes_per_param(&setup, dp), 4.0 / dp as f64);
        }
        let (_, step) = phase_state_bytes(&setup, 2, true, pp > 1);
        assert_eq!(
            step.total() + optimizer_step_bytes_per_param(&setup, 2),
            14.0
        );
        tables_agree_for(false, setup, (2, pp, 1, 4));
    }
    // Not under ZeRO (bf16 gradients there), nor in fp16 or elsewhere.
    let zero1 = TrainingSetup {
        engine: Some(crate::setup::Engine::DeepSpeed),
        optimizer_sharding: OptimizerSharding::Zero1,
        ..TrainingSetup::default()
    }
    .for_pipeline(2);
    assert!(!deepspeed_bf16_optimizer(&zero1));
    let fp16 = TrainingSetup {
        engine: Some(crate::setup::Engine::DeepSpeed),
        formats: crate::setup::Precision::Fp16.formats(),
        ..TrainingSetup::default()
    };
    assert!(!deepspeed_bf16_optimizer(&fp16));
    assert!(!deepspeed_bf16_optimizer(&TrainingSetup::default()));
}

#[test]
fn transformer_engines_fp8_keeps_weight_copies_and_fp8_linear_inputs() {
    // Megatron-LM under FP8 (Transformer Engine): each block's parameters
    // get a cached row-wise and column-wise FP8 copy (2 bytes), and each
    // linear layer keeps its input for the weight gradient in FP8.
    let megatron = |precision: crate::setup::Precision, recompute, sp| TrainingSetup {
        formats: precision.formats(),
        recompute,
        sequence_parallel: sp,
        ..megatron_setup()
    };
    use crate::setup::Precision::{Bf16, Fp8};
    // tiny_decoder: s = 4, h = 8, queries 2 x 4 = 8 wide, MLP 32, fused
    // attention. Per sample, 1 byte less for each of the two norm outputs
    // (s h = 32, replicated unless sequence-parallel) and the second MLP
    // layer's input (s ffn / t = 128 / t), 1 byte more for the attention
    // output the fused kernel keeps beside its FP8 copy (s q / t = 32 / t),
    // 1 byte less where selective recomputation drops the kernel's.
    let mut m = tiny_decoder(false);
    // Blocks keeping more than the linear layers' inputs (`tiny_decoder`'s
    // 100 elements are fewer than its shape's 224).
    for l in [1, 2] {
        m.layers[l].stored_activation_elems_per_sample = Some(1000);
    }
    let delta = |recompute, sp, tp| {
        stored_activation_bytes_per_sample(&m, 1, tp, &megatron(Fp8, recompute, sp))
            - stored_activation_bytes_per_sample(&m, 1, tp, &megatron(Bf16, recompute, sp))
    };
    assert_eq!(delta(Recompute::None, false, 1), -64.0 - 128.0 + 32.0);
    assert_eq!(delta(Recompute::None, false, 2), -64.0 - 64.0 + 16.0);
    assert_eq!(delta(Recompute::None, true, 2), -32.0 - 64.0 + 16.0);
    assert_eq!(delta(Recompute::Selective, false, 2), -64.0 - 64.0 - 16.0);
    // Every block recomputed keeps only its input, in 16 bits either way.
    assert_eq!(delta(Recompute::Full, false, 2), 0.0);
    // A count too small for the shape loses at most half its bytes.
    let small = tiny_decoder(false);
    let fp8 = megatron(Fp8, Recompute::None, false);
    assert_eq!(
        stored_activation_bytes_per_sample(&small, 1, 1, &fp8),
        100.0
    );
    // The other layers are as in bf16.
    for l in [0, 3, 4] {
        assert_eq!(
            stored_activation_bytes_per_sample(&m, l, 2, &megatron(Fp8, Recompute::None, false)),
            stored_activation_bytes_per_sample(&m, l, 2, &megatron(Bf16, Recompute::None, false)),
        );
    }
    // The copies are weights, 2 bytes per block parameter on a rank, through
    // the passes and the step; the tables and the split check agree.
    let mut c = clusters::homogeneous();
    c.nodes.truncate(1);
    c.nodes[0].gpus = 2;
    let grid = DeviceGrid::new(&c, 1, 1, 2, &Placement::artifact_default(&c));
    let weights = |precision| {
        let setup = megatron(precision, Recompute::None, false);
        let plan = crate::search::plan_from_grid(&grid, &[0, 2, 5], 1, 4, &setup);
        let mut w: Vec<f64> = plan_memory(&m, &c, &plan, RESERVE)
            .iter()
            .map(|d| d.weights_bytes)
            .collect();
        w.sort_by(f64::total_cmp);
        w
    };
    let (fp8, bf16) = (weights(Fp8), weights(Bf16));
    // Stage 0 holds the embedding and block 0, stage 1 block 1 and the
    // rest: 1000 block parameters each.
    for (a, b) in fp8.iter().zip(&bf16) {
        assert_eq!(a - b, 2.0 * 1000.0);
    }
    for setup in [
        megatron(Fp8, Recompute::None, false),
        megatron(Fp8, Recompute::Selective, true),
        megatron(Fp8, Recompute::Full, false),
    ] {
        tables_agree_for(false, setup, (1, 2, 1, 4));
        tables_agree_for(false, setup, (2, 1, 2, 2));
    }
}

#[test]
fn the_loss_is_freed_before_any_layers_gradient_but_a_chunked_loss_feeds_the_decoder() {
    // A layer's gradient workspace comes in its backward, after the loss's
    // of the same micro-batch: one micro-batch's share of what the loss
    // keeps is gone (2 samples of 160 bytes).
    for ce in [CrossEntropy::Pytorch, CrossEntropy::Megatron] {
        let setup = TrainingSetup {
            cross_entropy: Some(ce),
            ..TrainingSetup::default()
        };
        assert_eq!(loss_freed_before_gradients(2.0, 160.0, &setup), 320.0);
    }
    // torchtitan's chunked loss keeps the gradient of the projection's
    // input for the decoder's backward: nothing freed.
    let chunked = TrainingSetup {
        cross_entropy: Some(CrossEntropy::Chunked),
        ..torchtitan_setup(OptimizerSharding::Zero3)
    };
    assert_eq!(loss_freed_before_gradients(2.0, 160.0, &chunked), 0.0);
}

/// Megatron-LM's `--grad-reduce-in-bf16`: bf16 gradients, 2 bytes a
/// parameter where it keeps fp32 ones otherwise; its optimizer hands the
/// fp32 step fp32 copies of 16-bit gradients (`.float()`), of its shard
/// under the distributed optimizer, and none of fp32 ones (the same tensor).
#[test]
fn megatron_steps_on_fp32_copies_of_sixteen_bit_gradients() {
    use crate::setup::{Engine, NumberFormat, Precision};
    let megatron = |precision: Precision, bf16_grads: bool, sharding| {
        let mut s = TrainingSetup {
            formats: precision.formats(),
            engine: Some(Engine::Megatron),
            optimizer_sharding: sharding,
            ..TrainingSetup::default()
        };
        if bf16_grads {
            s.formats.gradients = NumberFormat::Bf16;
        }
        s
    };
    let fp32_grads = megatron(Precision::Bf16, false, OptimizerSharding::None);
    let bf16_grads = megatron(Precision::Bf16, true, OptimizerSharding::None);
    assert_eq!(state_bytes(&fp32_grads, 4).gradients, 4.0);
    assert_eq!(state_bytes(&bf16_grads, 4).gradients, 2.0);
    assert_eq!(optimizer_step_bytes_per_param(&fp32_grads, 4), 0.0);
    assert_eq!(optimizer_step_bytes_per_param(&bf16_grads, 4), 4.0);
    let sharded = megatron(Precision::Fp8, true, OptimizerSharding::Zero1);
    assert_eq!(optimizer_step_bytes_per_param(&sharded, 4), 1.0);
    // fp16 training's 16-bit gradients are copied the same way.
    let fp16 = megatron(Precision::Fp16, false, OptimizerSharding::None);
    assert_eq!(optimizer_step_bytes_per_param(&fp16, 2), 4.0);
    // Not another engine's: DeepSpeed's and torchtitan's steps are priced
    // by their own rules.
    let other = TrainingSetup {
        engine: Some(Engine::Torchtitan),
        ..bf16_grads
    };
    assert_eq!(optimizer_step_bytes_per_param(&other, 4), 0.0);
}

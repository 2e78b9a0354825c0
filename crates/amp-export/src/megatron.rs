//! Megatron-LM (Megatron-Core `pretrain_gpt.py`) arguments, hostfile and
//! per-node `torchrun` lines.
//!
//! Every flag is defined in NVIDIA/Megatron-LM megatron/training/arguments.py;
//! the function that adds it is named next to each emitted flag.

use amp_core::cluster::Cluster;
use amp_core::model::{
    Activation, Architecture, Model, NormKind, PositionEmbedding, RopeScaling, TransformerShape,
};
use amp_core::plan::Plan;
use amp_core::schedule::Schedule;
use amp_core::setup::{Engine, PipelineSend};

use crate::launch::{self, RankOrder};
use crate::{EngineOptions, EngineResult, ExportFile, Precision, Recompute, Refusal};

const ENGINE: &str = "Megatron-LM";

/// What Megatron-LM builds otherwise than the model says, at the same
/// cost: its `gpt_builders.py` hands GPTModel `--use-rope-scaling` but not
/// `--rope-scaling-factor` (at `d98e8a64`, the engine check's checkout), so
/// GPTModel rescales by its default, 8 (Llama 3.1's), whatever the factor.
///
/// And what it runs otherwise than the plan was priced with: a plan priced
/// with scatter/gather pipeline sends (DeepSpeed's, or Megatron-LM's before
/// Megatron Core) from tensor-parallel stages without sequence parallelism
/// runs Megatron Core's whole sends, `tp` times the bytes a cut carries.
pub(crate) fn export_notes(model: &Model, plan: &Plan) -> Vec<String> {
    let mut notes = Vec::new();
    if let Some(RopeScaling::Llama3 { factor, .. }) =
        model.architecture().and_then(|a| a.rope_scaling.as_ref())
    {
        if *factor != 8.0 {
            notes.push(format!(
                "`{}` rescales its rotary frequencies by {factor}, and args.sh says so (--rope-scaling-factor {factor}), but Megatron-LM's gpt_builders.py passes only --use-rope-scaling to GPTModel, which then rescales by its default, 8: the job costs what amp priced, but to encode positions as the model does, add `rope_scaling_factor=args.rope_scaling_factor` to the GPTModel(...) call there",
                model.name
            ));
        }
    }
    let setup = &plan.setup;
    let tp = plan.stages.iter().map(|s| s.max_tp()).max().unwrap_or(1);
    if setup.pipeline_send == PipelineSend::ScatterGather
        && !setup.sequence_parallel
        && tp > 1
        && plan.pp() > 1
    {
        notes.push(format!(
            "the plan was priced with scatter/gather pipeline sends (each of a stage's {tp} tensor-parallel ranks sending 1/{tp} of the activation), which Megatron Core does not make: every rank sends the whole activation (megatron/core/pipeline_parallel/p2p_communication.py), so the job's sends carry {tp} times the bytes amp priced; `amp eval` the plan with --engine megatron for Megatron-LM's price"
        ));
    }
    notes
}

/// One argument with the place that defines it.
struct Arg {
    flag: &'static str,
    value: Option<String>,
    cite: &'static str,
    why: String,
}

fn arg(
    flag: &'static str,
    value: impl ToString,
    cite: &'static str,
    why: impl Into<String>,
) -> Arg {
    Arg {
        flag,
        value: Some(value.to_string()),
        cite,
        why: why.into(),
    }
}

fn switch(flag: &'static str, cite: &'static str, why: impl Into<String>) -> Arg {
    Arg {
        flag,
        value: None,
        cite,
        why: why.into(),
    }
}

const NET: &str = "arguments.py _add_network_size_args";
const TRAIN: &str = "arguments.py _add_training_args";
const DIST: &str = "arguments.py _add_distributed_args";
const DATA: &str = "arguments.py _add_data_args";
const PREC: &str = "arguments.py _add_mixed_precision_args";
const FP8: &str = "transformer_config.py TransformerConfig fp8 fields";
/// Flags generated from megatron/core/transformer/transformer_config.py
/// `TransformerConfig` fields (arguments.py `_add_network_size_args`,
/// ArgumentGroupFactory).
const TCFG: &str = "transformer_config.py TransformerConfig via _add_network_size_args";

/// How the per-stage block counts are told to Megatron.
#[derive(Debug, PartialEq)]
enum SplitArgs {
    Even,
    FirstLast {
        first: Option<usize>,
        last: Option<usize>,
    },
    Layout(String),
}

/// Megatron splits `--num-layers` evenly over pipeline stages unless told
/// otherwise. `--decoder-first-pipeline-num-layers` and
/// `--decoder-last-pipeline-num-layers` set the first and last stage; the
/// stages between must then hold equal counts (megatron/core/transformer/
/// transformer_block.py `get_num_layers_to_build` divides the rest evenly).
/// Any other split needs `--pipeline-model-parallel-layout` (megatron/core/
/// transformer/pipeline_parallel_layer_layout.py: stages separated by `|`,
/// `E` embedding, `t` a transformer layer, `L` the loss/output).
fn split_args(blocks: &[usize], allow_layout: bool) -> EngineResult<SplitArgs> {
    let pp = blocks.len();
    if blocks.iter().all(|&b| b == blocks[0]) {
        return Ok(SplitArgs::Even);
    }
    let all_positive = blocks.iter().all(|&b| b > 0);
    if pp == 2 && all_positive {
        return Ok(SplitArgs::FirstLast {
            first: Some(blocks[0]),
            last: Some(blocks[1]),
        });
    }
    let middle = &blocks[1..pp - 1];
    if all_positive && middle.iter().all(|&b| b == middle[0]) {
        let m = middle[0];
        return Ok(SplitArgs::FirstLast {
            first: (blocks[0] != m).then_some(blocks[0]),
            last: (blocks[pp - 1] != m).then_some(blocks[pp - 1]),
        });
    }
    if !allow_layout {
        return Err(Refusal::Unsupported(format!(
            "the split puts {} transformer blocks on the stages; without --pipeline-model-parallel-layout Megatron-LM can make only the first and last stage uneven, with equal, non-empty middle stages",
            launch::join(blocks, "/")
        )));
    }
    let stages: Vec<String> = blocks
        .iter()
        .enumerate()
        .map(|(j, &b)| {
            let mut s = String::new();
            if j == 0 {
                s.push('E');
            }
            match b {
                0 => {}
                1 => s.push('t'),
                n => s.push_str(&format!("t*{n}")),
            }
            if j == pp - 1 {
                s.push('L');
            }
            s
        })
        .collect();
    Ok(SplitArgs::Layout(stages.join("|")))
}

pub(crate) fn export(
    plan: &Plan,
    model: &Model,
    cluster: &Cluster,
    opts: &EngineOptions,
) -> EngineResult<Vec<ExportFile>> {
    if let Schedule::Interleaved { virtual_stages } = opts.schedule {
        if virtual_stages > 1 {
            return Err(Refusal::Unsupported(
                "the plan was priced with the interleaved schedule; amp's plan gives each device one contiguous layer range, not the chunks Megatron-LM's --num-layers-per-virtual-pipeline-stage places; price it with the 1F1B schedule to export".into(),
            ));
        }
    } else if opts.schedule != Schedule::OneFOneB {
        return Err(Refusal::Unsupported(
            "the plan was priced with the GPipe schedule; Megatron-LM runs 1F1B (megatron/core/pipeline_parallel/schedules.py has no all-forward-then-all-backward schedule)".into(),
        ));
    }
    let tp = launch::uniform_tp(plan, ENGINE)?;
    let split = launch::block_split(plan, model, ENGINE)?;
    launch::check_heads(&split.shape)?;
    let pp = plan.pp();
    let launch = launch::realise(plan, opts, Engine::Megatron.rank_orders(), ENGINE)?;
    let shape = &split.shape;
    if let Some(why) =
        plan.setup
            .on_engine(Engine::Megatron)
            .tiling_refusal(model, tp, plan.micro_batch)
    {
        return Err(Refusal::Unsupported(why));
    }
    // With the embedding and loss counted as blocks, Megatron-LM derives the
    // uneven first and last stages itself.
    let stage_split = if opts.account_for_embedding_and_loss {
        SplitArgs::Even
    } else {
        split_args(&split.blocks, opts.megatron_layout)?
    };

    let mut args = vec![
        arg(
            "--tensor-model-parallel-size",
            tp,
            DIST,
            "tensor-parallel degree of every stage",
        ),
        arg(
            "--pipeline-model-parallel-size",
            pp,
            DIST,
            "pipeline stages",
        ),
        arg(
            "--micro-batch-size",
            plan.micro_batch,
            TRAIN,
            "samples per micro-batch on each replica",
        ),
        arg(
            "--global-batch-size",
            plan.global_batch(),
            TRAIN,
            format!(
                "micro-batch {} x {} micro-batches x data-parallel {}",
                plan.micro_batch,
                plan.num_micro_batches,
                plan.dp()
            ),
        ),
        arg("--num-layers", shape.num_blocks, NET, "transformer blocks"),
        arg("--hidden-size", shape.hidden, NET, "model width"),
        arg("--num-attention-heads", shape.heads, NET, "attention heads"),
        arg("--seq-length", shape.seq_len, DATA, "tokens per sample"),
    ];
    match &shape.architecture {
        Some(a) => args.extend(architecture_args(a, shape, &model.name)?),
        None => args.push(arg(
            "--max-position-embeddings",
            shape.seq_len,
            NET,
            "the model gives no architecture: a GPT-2-style block with a learned position table as long as the sequence",
        )),
    }
    let divisor = Engine::megatron_vocab_divisor(shape.vocab, tp as u64);
    let padded = Engine::Megatron.padded_vocab(shape.vocab, tp as u64);
    args.push(arg(
        "--make-vocab-size-divisible-by",
        divisor,
        NET,
        if padded == shape.vocab {
            format!(
                "the tokenizer's {} tokens are a multiple of {divisor} x tp {tp}, so Megatron adds no padding rows",
                shape.vocab
            )
        } else {
            format!(
                "Megatron pads the tokenizer's {} tokens to {padded} (a multiple of {divisor} x tp {tp}); amp's analytic times price the {padded} columns, its parameter and memory counts the {} rows",
                shape.vocab, shape.vocab
            )
        },
    ));
    match &stage_split {
        SplitArgs::Even => {}
        SplitArgs::FirstLast { first, last } => {
            if let Some(f) = first {
                args.push(arg(
                    "--decoder-first-pipeline-num-layers",
                    f,
                    DIST,
                    "transformer blocks on the first stage",
                ));
            }
            if let Some(l) = last {
                args.push(arg(
                    "--decoder-last-pipeline-num-layers",
                    l,
                    DIST,
                    "transformer blocks on the last stage",
                ));
            }
        }
        SplitArgs::Layout(s) => args.push(arg(
            "--pipeline-model-parallel-layout",
            format!("'{s}'"),
            DIST,
            "per-stage layers: E embedding, t block, L loss/output, | between stages (recent Megatron-Core)",
        )),
    }
    if let Some(v) = opts.virtual_pipeline_chunks.filter(|&v| v > 1) {
        if pp == 1 {
            return Err(Refusal::Option {
                option: "virtual_pipeline_chunks".into(),
                message: format!(
                    "{v} virtual chunks per pipeline rank need pipeline parallelism; this plan has one pipeline stage, and Megatron-LM's validate_args rejects virtual pipeline stages without it (megatron/training/arguments.py)"
                ),
            });
        }
        if opts.account_for_embedding_and_loss {
            // megatron/training/arguments.py: the embedding and the loss
            // each count as a layer, so (blocks + 2) / (pp x v) per chunk.
            args.push(arg(
                "--num-virtual-stages-per-pipeline-rank",
                v,
                DIST,
                format!("{v} interleaved chunks per pipeline rank"),
            ));
            args.push(switch(
                "--account-for-embedding-in-pipeline-split",
                DIST,
                "the embedding counts as one layer of the first chunk",
            ));
            args.push(switch(
                "--account-for-loss-in-pipeline-split",
                DIST,
                "the loss counts as one layer of the last chunk",
            ));
        } else {
            let b = split.blocks[0];
            if stage_split != SplitArgs::Even || b % v != 0 {
                return Err(Refusal::Option {
                    option: "virtual_pipeline_chunks".into(),
                    message: format!(
                        "{v} virtual chunks per pipeline rank need an even split with blocks per stage divisible by {v}; this plan has {} blocks per stage",
                        launch::join(&split.blocks, "/")
                    ),
                });
            }
            args.push(arg(
                "--num-layers-per-virtual-pipeline-stage",
                b / v,
                DIST,
                format!("{v} interleaved chunks per pipeline rank"),
            ));
        }
    }
    match opts.recompute {
        Recompute::None => {}
        Recompute::Full => {
            args.push(arg(
                "--recompute-granularity",
                "full",
                TRAIN,
                "recompute whole blocks",
            ));
            args.push(arg(
                "--recompute-method",
                "uniform",
                TRAIN,
                "every block of the stage",
            ));
            args.push(arg(
                "--recompute-num-layers",
                1,
                TRAIN,
                "one block per recompute unit",
            ));
        }
        Recompute::Selective => args.push(arg(
            "--recompute-granularity",
            "selective",
            TRAIN,
            "recompute the attention core",
        )),
    }
    if opts.sequence_parallel {
        args.push(switch(
            "--sequence-parallel",
            DIST,
            "layer-norm and dropout activations split over the tensor-parallel group",
        ));
    }
    // At tp 1 there is nothing to overlap, and Megatron-LM, which turns
    // sequence parallelism off there, would then assert that the overlap
    // needs it.
    if opts.tp_comm_overlap && tp > 1 {
        args.push(switch(
            "--tp-comm-overlap",
            TCFG,
            "overlap the blocks' tensor-parallel collectives with their matrix products (Transformer Engine's userbuffers), as priced",
        ));
    }
    if opts.distributed_optimizer {
        args.push(switch(
            "--use-distributed-optimizer",
            DIST,
            "shard optimizer state over data-parallel ranks",
        ));
    }
    if opts.overlap_grad_reduce {
        args.push(switch(
            "--overlap-grad-reduce",
            DIST,
            "reduce the gradients in buckets during the last backward, as priced",
        ));
    }
    if launch.order == RankOrder::TpPpDp {
        args.push(switch(
            "--use-tp-pp-dp-mapping",
            DIST,
            "rank order tp-cp-ep-pp-dp: the placement keeps each replica's pipeline together",
        ));
    }
    match opts.precision.unwrap_or(Precision::Fp16) {
        Precision::Fp16 => args.push(switch("--fp16", PREC, "fp16 mixed precision")),
        Precision::Bf16 => args.push(switch("--bf16", PREC, "bf16 mixed precision")),
        Precision::Fp8 => {
            args.push(switch(
                "--bf16",
                PREC,
                "bf16 storage and the layers outside Transformer Engine's FP8 (attention, embedding, vocabulary projection), as priced",
            ));
            // Megatron-LM's own FP8 recipe for Hopper
            // (examples/llama/train_llama3_8b_h100_fp8.sh) without its
            // --fp8-param-gather: amp prices 16-bit weights beside the
            // cached FP8 copies. Delayed scaling is TransformerConfig's
            // default `fp8_recipe`.
            args.push(arg(
                "--fp8-format",
                "hybrid",
                FP8,
                "FP8 linear layers in the blocks (Transformer Engine): E4M3 forward, E5M2 gradients",
            ));
            args.push(arg(
                "--fp8-amax-history-len",
                1024,
                FP8,
                "delayed scaling from the last 1024 amax values",
            ));
            args.push(arg(
                "--fp8-amax-compute-algo",
                "max",
                FP8,
                "the largest amax of the history",
            ));
        }
        Precision::Fp32 | Precision::Tf32 => {}
    }
    if opts.bf16_gradients {
        args.push(switch(
            "--grad-reduce-in-bf16",
            PREC,
            "accumulate and reduce the gradients in bf16, as priced (fp32 otherwise)",
        ));
    }

    let mut sh = String::new();
    sh.push_str("# Megatron-LM arguments for this plan (source this file).\n");
    sh.push_str(&format!(
        "# Plan: pp {pp}, tp {tp}, dp {}, micro-batch {}, {} micro-batches; transformer blocks per stage {}.\n",
        plan.dp(),
        plan.micro_batch,
        plan.num_micro_batches,
        launch::join(&split.blocks, "/")
    ));
    sh.push_str(&format!(
        "# amp priced {} parameters for `{}` (tied weights once, vocabulary unpadded).\n",
        model.total_params(),
        model.name
    ));
    sh.push_str(
        "# Every flag is defined in NVIDIA/Megatron-LM megatron/training/arguments.py (function named per line).\n",
    );
    sh.push_str(
        "# Data, tokenizer, optimizer and checkpoint arguments are yours to add: MEGATRON_ARGS+=(...).\n",
    );
    sh.push_str(&format!(
        "# The model's vocabulary is {} tokens; Megatron takes it from the tokenizer (e.g. --tokenizer-type\n# NullTokenizer --vocab-size {} for a tokenizer-free test: it adds one end-of-document token).\n",
        shape.vocab,
        shape.vocab.saturating_sub(1)
    ));
    sh.push_str("MEGATRON_ARGS=(\n");
    for a in &args {
        sh.push_str(&format!("  # {}: {}\n", a.cite, a.why));
        match &a.value {
            Some(v) => sh.push_str(&format!("  {} {v}\n", a.flag)),
            None => sh.push_str(&format!("  {}\n", a.flag)),
        }
    }
    sh.push_str(")\n");

    let mut launch_sh = String::from("#!/usr/bin/env bash\n");
    launch_sh.push_str("# Run on every node with its node rank: bash launch.sh NODE_RANK\n");
    launch_sh.push_str(&format!(
        "# Ranks follow Megatron-Core's order {} ({}); CUDA_VISIBLE_DEVICES orders each node's GPUs so that\n",
        match launch.order {
            RankOrder::TpDpPp => "tp-cp-ep-dp-pp",
            RankOrder::TpPpDp => "tp-cp-ep-pp-dp",
        },
        launch.order.describe()
    ));
    launch_sh.push_str(
        "# local rank i (Megatron calls torch.cuda.set_device(local_rank)) runs on the GPU the plan chose.\n",
    );
    launch_sh.push_str("# MEGATRON_LM is your Megatron-LM checkout (NVIDIA/Megatron-LM), whose training script runs.\n");
    launch_sh.push_str("set -euo pipefail\n");
    launch_sh.push_str(
        ": \"${MEGATRON_LM:?set MEGATRON_LM to your Megatron-LM checkout, e.g. MEGATRON_LM=$HOME/Megatron-LM bash launch.sh 0}\"\n",
    );
    launch_sh.push_str("HERE=\"$(cd \"$(dirname \"$0\")\" && pwd)\"\nsource \"$HERE/args.sh\"\n");
    if tp > 1 {
        launch_sh.push_str("# Tensor parallelism before Blackwell: validate_args asserts CUDA_DEVICE_MAX_CONNECTIONS=1 so that\n");
        launch_sh.push_str(
            "# communication kernels are queued in order (megatron/training/arguments.py).\n",
        );
        launch_sh.push_str("export CUDA_DEVICE_MAX_CONNECTIONS=1\n");
    }
    let script = if opts.megatron_script.starts_with('/') {
        opts.megatron_script.clone()
    } else {
        format!("\"$MEGATRON_LM\"/{}", opts.megatron_script)
    };
    launch_sh.push_str(&launch.torchrun_case(opts, &format!("{script} \"${{MEGATRON_ARGS[@]}}\"")));

    Ok(vec![
        ExportFile::new("args.sh", sh),
        ExportFile::new("launch.sh", launch_sh),
        ExportFile::new("hostfile", launch.hostfile(cluster)),
    ])
}

/// The largest power of two up to Megatron's default 128 such that the
/// vocabulary needs no padding rows with `tp` tensor-parallel ranks
/// (Megatron pads to a multiple of `--make-vocab-size-divisible-by` x tp,
/// megatron/training/tokenizer `_vocab_size_with_padding`); 128 when none
/// avoids padding.
/// The flags that make Megatron-LM's GPTModel the network amp priced.
fn architecture_args(
    a: &Architecture,
    shape: &TransformerShape,
    model: &str,
) -> EngineResult<Vec<Arg>> {
    let (seq_len, heads, hidden) = (shape.seq_len, shape.heads, shape.hidden);
    let refuse = |why: String| Err(Refusal::Unsupported(format!("model `{model}`: {why}")));
    match a.family.as_str() {
        "bert" | "vit" => {
            return refuse(format!(
                "a {} is not a decoder; pretrain_gpt.py builds a GPT",
                a.family
            ))
        }
        f if f.starts_with("gemma") => {
            return refuse(
                "Gemma's embedding scaled by the square root of the hidden size, its GeLU-gated MLP and its (1 + weight) norms are not among pretrain_gpt.py's arguments (megatron/training/arguments.py); DeepSpeed runs it".to_string(),
            )
        }
        _ => {}
    }
    let mut v = Vec::new();
    match a.position_embedding {
        PositionEmbedding::Learned => {
            v.push(arg(
                "--position-embedding-type",
                "learned_absolute",
                NET,
                "learned absolute positions",
            ));
            v.push(arg(
                "--max-position-embeddings",
                a.max_positions,
                NET,
                "rows of the learned position table",
            ));
        }
        PositionEmbedding::Rope => {
            v.push(arg(
                "--position-embedding-type",
                "rope",
                NET,
                "rotary position embeddings",
            ));
            let theta = a.rope_theta.unwrap_or(10_000.0);
            if theta.fract() != 0.0 {
                return refuse(format!(
                    "rotary base {theta} is not a whole number; Megatron-LM's --rotary-base takes an integer"
                ));
            }
            v.push(arg(
                "--rotary-base",
                theta as u64,
                NET,
                "rotary base (theta)",
            ));
            match &a.rope_scaling {
                None => {}
                // RotaryEmbedding._apply_scaling
                // (megatron/core/models/common/embeddings/rotary_pos_embedding.py)
                // takes the factor and fixes the rest at Llama 3.1's.
                Some(RopeScaling::Llama3 {
                    factor,
                    low_freq_factor,
                    high_freq_factor,
                    original_max_positions,
                }) => {
                    if (*low_freq_factor, *high_freq_factor, *original_max_positions)
                        != (1.0, 4.0, 8192)
                    {
                        return refuse(format!(
                            "its llama3 rope scaling has low and high frequency factors {low_freq_factor} and {high_freq_factor} over an original context of {original_max_positions}; Megatron-LM's RotaryEmbedding fixes them at 1, 4 and 8192 (only --rope-scaling-factor is an argument)"
                        ));
                    }
                    v.push(switch(
                        "--use-rope-scaling",
                        NET,
                        "Llama 3.1's rescaled rotary frequencies",
                    ));
                    v.push(arg(
                        "--rope-scaling-factor",
                        factor,
                        NET,
                        "what the lowest frequencies are divided by",
                    ));
                }
                Some(RopeScaling::Linear { factor }) => {
                    if factor.fract() != 0.0 {
                        return refuse(format!(
                            "its linear rope scaling factor {factor} is not a whole number; Megatron-LM's --rotary-seq-len-interpolation-factor takes an integer"
                        ));
                    }
                    v.push(arg(
                        "--rotary-seq-len-interpolation-factor",
                        *factor as u64,
                        NET,
                        "positions divided by this (linear rope scaling)",
                    ));
                }
                Some(RopeScaling::Other { name }) => {
                    return refuse(format!(
                        "its rope scaling is of type `{name}`; Megatron-LM's GPT arguments offer Llama 3.1's (--use-rope-scaling) and linear interpolation (--rotary-seq-len-interpolation-factor)"
                    ));
                }
            }
            v.push(arg(
                "--max-position-embeddings",
                a.max_positions.max(seq_len),
                NET,
                "positions the rotary tables cover (at least the sequence)",
            ));
        }
    }
    v.push(arg(
        "--ffn-hidden-size",
        a.ffn_hidden,
        TCFG,
        "MLP inner width (per matrix)",
    ));
    match a.activation {
        // Megatron-LM fuses GeLU either way (its tanh form is
        // --openai-gelu; the erf form it runs by default costs the same).
        Activation::Gelu | Activation::GeluNew => {}
        Activation::Swiglu => v.push(switch(
            "--swiglu",
            NET,
            "gated MLP with SiLU: three weight matrices",
        )),
        Activation::Geglu => {
            return refuse(
                "its MLP is gated by GeLU; Megatron-LM's arguments gate by SiLU (--swiglu) or by a sigmoid approximation of GeLU (--quick-geglu), not GeLU itself".to_string(),
            )
        }
        Activation::Relu => {
            return refuse(
                "its MLP uses ReLU; Megatron-LM's arguments offer GeLU (default), --swiglu, --squared-relu and --quick-geglu (_add_network_size_args), not ReLU".to_string(),
            )
        }
    }
    // Megatron's query groups are the key/value heads (without
    // --group-query-attention, validate_args makes them the heads).
    if a.kv_heads != heads {
        v.push(switch(
            "--group-query-attention",
            NET,
            "key/value heads shared by groups of query heads",
        ));
        v.push(arg(
            "--num-query-groups",
            a.kv_heads,
            TCFG,
            "key/value heads",
        ));
    }
    if a.head_dim * heads != hidden {
        v.push(arg("--kv-channels", a.head_dim, TCFG, "width of one head"));
    }
    v.push(arg(
        "--normalization",
        match a.norm {
            NormKind::Layernorm => "LayerNorm",
            NormKind::Rmsnorm => "RMSNorm",
        },
        TCFG,
        "normalisation layers",
    ));
    v.push(arg(
        "--norm-epsilon",
        format!("{:e}", a.norm_eps),
        TCFG,
        "epsilon of every normalisation",
    ));
    if a.qk_norm {
        v.push(switch(
            "--qk-layernorm",
            TCFG,
            "a normalisation (of --normalization's kind) on each head's query and key",
        ));
    }
    if !a.tied_embeddings {
        v.push(switch(
            "--untie-embeddings-and-output-weights",
            NET,
            "the output projection has its own weights",
        ));
    }
    if a.mlp_has_bias() != a.linear_bias {
        let (with, without) = if a.linear_bias {
            ("the attention output", "the MLP")
        } else {
            ("the MLP", "the attention output")
        };
        return refuse(format!(
            "it has biases on {with} but none on {without}; Megatron-LM's --add-bias-linear (`add_bias_linear`, megatron/core/transformer/transformer_config.py) puts them on both or neither"
        ));
    }
    match (a.linear_bias, a.qkv_bias) {
        (true, true) => {}
        (false, false) => v.push(switch(
            "--disable-bias-linear",
            TCFG,
            "no biases on linear layers",
        )),
        (false, true) => {
            v.push(switch(
                "--disable-bias-linear",
                TCFG,
                "no biases on the attention output and MLP",
            ));
            v.push(switch(
                "--add-qkv-bias",
                TCFG,
                "biases on the query, key and value projections only",
            ));
        }
        (true, false) => {
            return refuse(
                "it has biases on the attention output and MLP but none on query, key and value; Megatron-LM's validate_args turns on the QKV bias whenever linear biases are on (megatron/training/arguments.py)".to_string(),
            )
        }
    }
    // Explicit attention, as amp priced it (scores stored and computed), is
    // Megatron-LM's unfused backend; its default (auto) picks a fused
    // kernel, what a fused-attention model is priced as.
    if a.flash_attention == Some(false) {
        v.push(arg(
            "--attention-backend",
            "unfused",
            NET,
            "attention as priced: scores materialised, not a fused kernel",
        ));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn even_split_needs_no_flags() {
        assert_eq!(split_args(&[6, 6, 6, 6], false).unwrap(), SplitArgs::Even);
    }

    #[test]
    fn first_and_last_uneven() {
        assert_eq!(
            split_args(&[5, 7, 7, 5], false).unwrap(),
            SplitArgs::FirstLast {
                first: Some(5),
                last: Some(5)
            }
        );
        assert_eq!(
            split_args(&[7, 7, 7, 3], false).unwrap(),
            SplitArgs::FirstLast {
                first: None,
                last: Some(3)
            }
        );
        assert_eq!(
            split_args(&[11, 13], false).unwrap(),
            SplitArgs::FirstLast {
                first: Some(11),
                last: Some(13)
            }
        );
    }

    #[test]
    fn uneven_middle_needs_layout() {
        let e = split_args(&[5, 6, 8, 5], false).unwrap_err();
        assert!(
            matches!(e, Refusal::Unsupported(ref m) if m.contains("5/6/8/5")),
            "{e:?}"
        );
        assert_eq!(
            split_args(&[5, 6, 8, 5], true).unwrap(),
            SplitArgs::Layout("Et*5|t*6|t*8|t*5L".into())
        );
        assert_eq!(
            split_args(&[0, 12, 1], true).unwrap(),
            SplitArgs::Layout("E|t*12|tL".into())
        );
    }
}

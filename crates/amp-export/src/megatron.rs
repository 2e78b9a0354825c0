//! Megatron-LM (Megatron-Core `pretrain_gpt.py`) arguments, hostfile and
//! per-node `torchrun` lines.
//!
//! Every flag is defined in NVIDIA/Megatron-LM megatron/training/arguments.py;
//! the function that adds it is named next to each emitted flag.

use amp_core::cluster::Cluster;
use amp_core::model::Model;
use amp_core::plan::Plan;
use amp_core::schedule::Schedule;

use crate::launch::{self, RankOrder};
use crate::{EngineOptions, EngineResult, ExportFile, Precision, Recompute, Refusal};

const ENGINE: &str = "Megatron-LM";

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
    launch::check_tp_shape(&split.shape, tp, ENGINE)?;
    let pp = plan.pp();
    let launch = launch::realise(plan, opts, &[RankOrder::TpDpPp, RankOrder::TpPpDp], ENGINE)?;
    let shape = &split.shape;
    let stage_split = split_args(&split.blocks, opts.megatron_layout)?;

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
        arg(
            "--max-position-embeddings",
            shape.seq_len,
            NET,
            "learned position table as long as the sequence",
        ),
    ];
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
    if opts.distributed_optimizer {
        args.push(switch(
            "--use-distributed-optimizer",
            DIST,
            "shard optimizer state over data-parallel ranks",
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
        Precision::Fp32 | Precision::Tf32 | Precision::Fp8 => {}
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
    sh.push_str(
        "# Every flag is defined in NVIDIA/Megatron-LM megatron/training/arguments.py (function named per line).\n",
    );
    sh.push_str(
        "# Data, tokenizer (vocabulary), optimizer and checkpoint arguments are yours to add: MEGATRON_ARGS+=(...).\n",
    );
    sh.push_str(&format!(
        "# The model's vocabulary is {} tokens; Megatron takes it from the tokenizer and pads it.\n",
        shape.vocab
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
    launch_sh.push_str("set -euo pipefail\ncd \"$(dirname \"$0\")\"\nsource ./args.sh\n");
    launch_sh.push_str(&launch.torchrun_case(
        opts,
        &format!("{} \"${{MEGATRON_ARGS[@]}}\"", opts.megatron_script),
    ));

    Ok(vec![
        ExportFile::new("args.sh", sh),
        ExportFile::new("launch.sh", launch_sh),
        ExportFile::new("hostfile", launch.hostfile(cluster)),
    ])
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

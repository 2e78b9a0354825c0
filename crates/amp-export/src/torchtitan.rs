//! torchtitan: a job TOML and per-node `torchrun` lines.
//!
//! Every key is a field of the dataclasses in pytorch/torchtitan
//! torchtitan/config/job_config.py (section = `JobConfig` field, key = field
//! of `Job`, `Model`, `Training`, `Parallelism`, `ActivationCheckpoint`).

use amp_core::cluster::Cluster;
use amp_core::model::Model;
use amp_core::plan::Plan;
use amp_core::schedule::Schedule;

use crate::launch::{self, RankOrder};
use crate::{EngineOptions, EngineResult, ExportFile, Precision, Recompute, Refusal};

const ENGINE: &str = "torchtitan";

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

pub(crate) fn export(
    plan: &Plan,
    model: &Model,
    cluster: &Cluster,
    opts: &EngineOptions,
) -> EngineResult<Vec<ExportFile>> {
    let tp = launch::uniform_tp(plan, ENGINE)?;
    let split = launch::block_split(plan, model, ENGINE)?;
    launch::check_tp_shape(&split.shape, tp, ENGINE)?;
    // Device mesh ["pp", "dp_replicate", "dp_shard", "cp", "tp"]
    // (torchtitan/distributed/parallel_dims.py): tp fastest, pp slowest.
    let launch = launch::realise(plan, opts, &[RankOrder::TpDpPp], ENGINE)?;
    let param_dtype = match opts.precision.unwrap_or(Precision::Bf16) {
        Precision::Bf16 | Precision::Fp8 => "bfloat16",
        Precision::Fp32 | Precision::Tf32 => "float32",
        Precision::Fp16 => {
            return Err(Refusal::Unsupported(
                "fp16 training: torchtitan's training.mixed_precision_param is \"bfloat16\" or \"float32\" (job_config.py Training)".into(),
            ))
        }
    };
    let pp = plan.pp();
    let dp = plan.dp();
    let shape = &split.shape;
    let multi_dim = tp > 1 || pp > 1;
    // DDP (data_parallel_replicate_degree) only runs on a 1-D mesh: torchtitan's
    // parallelize functions raise "DDP has not supported > 1D parallelism"
    // (torchtitan/models/llama3/infra/parallelize.py), so with tp or pp the
    // data-parallel replicas shard their weights (FSDP).
    let shard = dp > 1 && (multi_dim || opts.distributed_optimizer);
    let (replicate_degree, shard_degree) = if shard { (1, dp) } else { (dp, 1) };
    let schedule = match opts.schedule {
        Schedule::OneFOneB => "1F1B",
        Schedule::GPipe => "GPipe",
        Schedule::Interleaved { virtual_stages } if virtual_stages <= 1 => "1F1B",
        Schedule::Interleaved { .. } => {
            return Err(Refusal::Unsupported(
                "the plan was priced with the interleaved schedule, whose model chunks amp does not place as torchtitan's Interleaved1F1B stages; price it with the 1F1B schedule to export".into(),
            ))
        }
    };

    let mut t = String::new();
    t.push_str("# torchtitan job for an amp plan. Keys: pytorch/torchtitan torchtitan/config/job_config.py\n");
    t.push_str(&format!(
        "# Plan: pp {pp}, tp {tp}, dp {dp}, micro-batch {}, {} micro-batches; transformer blocks per stage {}.\n",
        plan.micro_batch,
        plan.num_micro_batches,
        launch::join(&split.blocks, "/")
    ));
    t.push_str("\n[job]\n");
    t.push_str("# Job.description\n");
    t.push_str(&format!(
        "description = {}\n",
        toml_str(&format!("amp plan for {} on {}", model.name, cluster.name))
    ));
    t.push_str("\n[model]\n");
    t.push_str("# Model.name / Model.flavor: torchtitan registers model shapes in code under a flavor name;\n");
    t.push_str(&format!(
        "# this plan needs hidden {}, {} layers, {} heads, vocabulary {}, sequence {}.\n",
        shape.hidden, shape.num_blocks, shape.heads, shape.vocab, shape.seq_len
    ));
    t.push_str(&format!("name = {}\n", toml_str(&opts.torchtitan_model)));
    let flavor = opts
        .torchtitan_flavor
        .clone()
        .unwrap_or_else(|| format!("amp_h{}_l{}", shape.hidden, shape.num_blocks));
    t.push_str(&format!("flavor = {}\n", toml_str(&flavor)));
    t.push_str("\n[training]\n");
    t.push_str("# Training.local_batch_size: samples per data-parallel rank per iteration (micro-batch x micro-batches)\n");
    t.push_str(&format!(
        "local_batch_size = {}\n",
        plan.micro_batch * plan.num_micro_batches
    ));
    t.push_str("# Training.global_batch_size: local_batch_size x data-parallel degree (no extra accumulation)\n");
    t.push_str(&format!("global_batch_size = {}\n", plan.global_batch()));
    t.push_str("# Training.seq_len\n");
    t.push_str(&format!("seq_len = {}\n", shape.seq_len));
    t.push_str("# Training.mixed_precision_param\n");
    t.push_str(&format!(
        "mixed_precision_param = {}\n",
        toml_str(param_dtype)
    ));
    t.push_str("\n[parallelism]\n");
    t.push_str("# Parallelism.tensor_parallel_degree\n");
    t.push_str(&format!("tensor_parallel_degree = {tp}\n"));
    t.push_str("# Parallelism.pipeline_parallel_degree\n");
    t.push_str(&format!("pipeline_parallel_degree = {pp}\n"));
    t.push_str("# Parallelism.data_parallel_replicate_degree / data_parallel_shard_degree\n");
    if shard && !opts.distributed_optimizer {
        t.push_str("# torchtitan runs DDP only without tp/pp, so the replicas shard weights, gradients and optimizer\n");
        t.push_str("# state (FSDP); the plan was priced with a plain gradient all-reduce.\n");
    }
    t.push_str(&format!(
        "data_parallel_replicate_degree = {replicate_degree}\n"
    ));
    t.push_str(&format!("data_parallel_shard_degree = {shard_degree}\n"));
    if pp > 1 {
        t.push_str("# Parallelism.pipeline_parallel_schedule (a torch.distributed.pipelining schedule name)\n");
        t.push_str(&format!(
            "pipeline_parallel_schedule = {}\n",
            toml_str(schedule)
        ));
        t.push_str("# Parallelism.pipeline_parallel_microbatch_size: local_batch_size / this = micro-batches\n");
        t.push_str(&format!(
            "pipeline_parallel_microbatch_size = {}\n",
            plan.micro_batch
        ));
        t.push_str(
            "# Parallelism.module_fqns_per_model_part: the modules of each stage, in order\n",
        );
        t.push_str("module_fqns_per_model_part = [\n");
        for j in 0..pp {
            let mut fqns: Vec<String> = Vec::new();
            if j == 0 {
                fqns.push("tok_embeddings".into());
            }
            for b in split.first_block[j]..split.first_block[j] + split.blocks[j] {
                fqns.push(format!("layers.{b}"));
            }
            if j == pp - 1 {
                fqns.push("norm".into());
                fqns.push("output".into());
            }
            let quoted: Vec<String> = fqns.iter().map(|f| toml_str(f)).collect();
            t.push_str(&format!("  [{}],\n", quoted.join(", ")));
        }
        t.push_str("]\n");
    }
    t.push_str("\n[activation_checkpoint]\n");
    t.push_str("# ActivationCheckpoint.mode\n");
    t.push_str(&format!(
        "mode = {}\n",
        toml_str(match opts.recompute {
            Recompute::None => "none",
            Recompute::Full => "full",
            Recompute::Selective => "selective",
        })
    ));

    let mut sh = String::from("#!/usr/bin/env bash\n");
    sh.push_str("# torchtitan launch for this plan; run on every node: bash launch.sh NODE_RANK\n");
    sh.push_str("# Ranks follow torchtitan's mesh [pp, dp_replicate, dp_shard, cp, tp] (tp fastest); each node's\n");
    sh.push_str(
        "# CUDA_VISIBLE_DEVICES puts local rank i (device LOCAL_RANK) on the GPU the plan chose.\n",
    );
    sh.push_str("set -euo pipefail\ncd \"$(dirname \"$0\")\"\n");
    sh.push_str(&launch.torchrun_case(opts, "-m torchtitan.train --job.config_file job.toml"));

    Ok(vec![
        ExportFile::new("job.toml", t),
        ExportFile::new("launch.sh", sh),
        ExportFile::new("hostfile", launch.hostfile(cluster)),
    ])
}

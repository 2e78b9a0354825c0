//! torchtitan: a Python job configuration and per-node `torchrun` lines.
//!
//! torchtitan's current release (0.3.0) takes no TOML job file: a run is a
//! Python function returning a `Trainer.Config`, selected with
//! `--module MODULE --config FUNCTION` (torchtitan/config/manager.py
//! `ConfigManager._load_config`). The export writes such a module,
//! `amp_torchtitan.py`, whose function starts from the recipe torchtitan
//! ships for the model (torchtitan/models/{llama3,qwen3}/config_registry.py) and sets
//! what the plan decides. Every attribute it sets is a field of
//! `TrainingConfig` or `ParallelismConfig` (torchtitan/config/configs.py) or
//! of `Trainer.Config` (torchtitan/trainer.py).
//!
//! torchtitan builds a model only from the flavors it registers in code
//! (`llama3_configs` in torchtitan/models/llama3/__init__.py, `qwen3_configs`
//! in torchtitan/models/qwen3/__init__.py), so a model is exported only when
//! its architecture is one of them.

use amp_core::cluster::Cluster;
use amp_core::model::{
    Activation, Model, NormKind, PositionEmbedding, RopeScaling, TransformerShape,
};
use amp_core::plan::Plan;
use amp_core::schedule::Schedule;
use amp_core::setup::{CrossEntropy, Engine};

use crate::launch;
use crate::{EngineOptions, EngineResult, ExportFile, Precision, Recompute, Refusal};

const ENGINE: &str = "torchtitan";

/// The release whose code the export targets.
pub(crate) const RELEASE: &str = "0.3.0";

/// A model flavor torchtitan ships, with the recipe function that trains it.
struct Flavor {
    /// torchtitan's model package (torchtitan/models/MODULE).
    module: &'static str,
    /// `model_registry` name (torchtitan/models/MODULE/__init__.py).
    name: &'static str,
    /// Function of torchtitan/models/MODULE/config_registry.py the job
    /// starts from.
    recipe: &'static str,
    /// Whether `recipe` builds another flavor of the same family (the
    /// flavor has none of its own), so the job replaces its model with
    /// `model_registry(name)`.
    borrowed_recipe: bool,
    hidden: u64,
    layers: u64,
    heads: u64,
    kv_heads: u64,
    head_dim: u64,
    /// `compute_ffn_hidden_dim(dim, multiple_of, ffn_dim_multiplier)`.
    ffn: u64,
    vocab: u64,
    /// `enable_weight_tying`.
    tied: bool,
}

impl Flavor {
    const fn llama3(name: &'static str, recipe: &'static str, shape: [u64; 5]) -> Flavor {
        let [hidden, layers, heads, kv_heads, ffn] = shape;
        Flavor {
            module: "llama3",
            name,
            recipe,
            borrowed_recipe: false,
            hidden,
            layers,
            heads,
            kv_heads,
            head_dim: hidden / heads,
            ffn,
            vocab: 128256,
            tied: false,
        }
    }

    const fn qwen3(
        name: &'static str,
        recipe: &'static str,
        borrowed_recipe: bool,
        shape: [u64; 4],
        tied: bool,
    ) -> Flavor {
        let [hidden, layers, heads, ffn] = shape;
        Flavor {
            module: "qwen3",
            name,
            recipe,
            borrowed_recipe,
            hidden,
            layers,
            heads,
            kv_heads: 8,
            head_dim: 128,
            ffn,
            vocab: 151936,
            tied,
        }
    }
}

/// The flavors of torchtitan 0.3.0 amp exports to.
///
/// llama3: those with a training recipe (`_8b`, `_70b`, `_405b` in
/// torchtitan/models/llama3/__init__.py; RMSNorm, SwiGLU, rotary theta
/// 500000 with Llama 3.1 scaling, no biases, untied output).
///
/// qwen3: the dense flavors (`_0_6b` ... `_32b` in
/// torchtitan/models/qwen3/__init__.py; RMSNorm of epsilon 1e-6 also on
/// each head's query and key, heads of 128, 8 key/value heads, SwiGLU,
/// rotary theta 1e6, no biases, 151936 tokens; 0.6B, 1.7B and 4B tie the
/// output to the embedding). 4B and 8B have no training recipe of their
/// own: their job starts from the 14B's (`qwen3_14b`: the same tokenizer,
/// data set and optimizer) with the model replaced.
const FLAVORS: &[Flavor] = &[
    Flavor::llama3("8B", "llama3_8b", [4096, 32, 32, 8, 14336]),
    Flavor::llama3("70B", "llama3_70b", [8192, 80, 64, 8, 28672]),
    Flavor::llama3("405B", "llama3_405b", [16384, 126, 128, 8, 53248]),
    Flavor::qwen3("0.6B", "qwen3_0_6b", false, [1024, 28, 16, 3072], true),
    Flavor::qwen3("1.7B", "qwen3_1_7b", false, [2048, 28, 16, 6144], true),
    Flavor::qwen3("4B", "qwen3_14b", true, [2560, 36, 32, 9728], true),
    Flavor::qwen3("8B", "qwen3_14b", true, [4096, 36, 32, 12288], false),
    Flavor::qwen3("14B", "qwen3_14b", false, [5120, 40, 40, 17408], false),
    Flavor::qwen3("32B", "qwen3_32b", false, [5120, 64, 64, 25600], false),
];

/// The rotary rescaling of torchtitan 0.3.0's llama3 flavors
/// (`ComplexRoPE.Config(scaling="llama")` at its defaults in
/// torchtitan/models/common/rope.py): Llama 3.1's.
const LLAMA31_ROPE: RopeScaling = RopeScaling::llama3(8.0);

/// What a torchtitan export of `model` builds otherwise than the model
/// says, though at the same cost: a Llama 3 model (no rotary rescaling)
/// gets the llama3 flavors' Llama 3.1 rescaling.
pub(crate) fn export_notes(model: &Model) -> Vec<String> {
    let Some(a) = model.architecture() else {
        return Vec::new();
    };
    if a.family == "llama"
        && a.position_embedding == PositionEmbedding::Rope
        && a.rope_scaling.is_none()
    {
        vec![format!(
            "torchtitan's llama3 flavors rescale the rotary frequencies as Llama 3.1 does (factor 8; torchtitan/models/llama3/__init__.py), and `{}` does not: the job costs what amp priced, but encodes positions as Llama 3.1 does",
            model.name
        )]
    } else {
        Vec::new()
    }
}

/// The torchtitan flavor that builds exactly `shape`, or why none does.
fn flavor_for(model: &Model, shape: &TransformerShape) -> EngineResult<&'static Flavor> {
    let shipped = "amp exports the model flavors torchtitan 0.3.0 ships with a training recipe: llama3 8B, 70B, 405B (torchtitan/models/llama3/__init__.py) and qwen3 0.6B, 1.7B, 4B, 8B, 14B, 32B (torchtitan/models/qwen3/__init__.py)";
    let Some(a) = &shape.architecture else {
        return Err(Refusal::Unsupported(format!(
            "model `{}` gives sizes but not its architecture; {shipped}, so export a zoo model or a Hugging Face config",
            model.name
        )));
    };
    // What both families share; the rest is each family's own.
    let common = a.activation == Activation::Swiglu
        && a.norm == NormKind::Rmsnorm
        && a.position_embedding == PositionEmbedding::Rope
        && !a.linear_bias
        && !a.mlp_has_bias()
        && !a.qkv_bias;
    // torchtitan's llama3 flavors rescale as Llama 3.1 does; a Llama 3
    // model without the rescaling costs the same and is exported to them
    // with a note ([`export_notes`]); its qwen3 flavors rescale nothing.
    let llama31 = a.rope_scaling.is_none() || a.rope_scaling == Some(LLAMA31_ROPE);
    let family = |f: &Flavor| match f.module {
        "llama3" => a.family == "llama" && a.rope_theta == Some(500_000.0) && !a.qk_norm && llama31,
        _ => {
            a.family == "qwen3"
                && a.rope_theta == Some(1_000_000.0)
                && a.qk_norm
                && a.rope_scaling.is_none()
        }
    };
    let found = FLAVORS.iter().find(|f| {
        common
            && family(f)
            && (
                f.hidden, f.layers, f.heads, f.kv_heads, f.head_dim, f.ffn, f.vocab, f.tied,
            ) == (
                shape.hidden,
                shape.num_blocks,
                shape.heads,
                a.kv_heads,
                a.head_dim,
                a.ffn_hidden,
                shape.vocab,
                a.tied_embeddings,
            )
    });
    let rope = match &a.rope_scaling {
        Some(r) if *r != LLAMA31_ROPE => format!(
            ", rotary rescaling {}; the llama3 flavors rescale as Llama 3.1 does, the qwen3 ones not at all",
            rope_label(r)
        ),
        _ => String::new(),
    };
    found.ok_or_else(|| {
        Refusal::Unsupported(format!(
            "model `{}` ({} family: hidden {}, {} blocks, {} heads, {} key/value heads, FFN {}, vocabulary {}{rope}) is none of them; {shipped}",
            model.name, a.family, shape.hidden, shape.num_blocks, shape.heads, a.kv_heads, a.ffn_hidden, shape.vocab
        ))
    })
}

/// A rotary rescaling as Hugging Face's config names it.
fn rope_label(r: &RopeScaling) -> String {
    match r {
        RopeScaling::Llama3 { factor, .. } => format!("llama3 (factor {factor})"),
        RopeScaling::Linear { factor } => format!("linear (factor {factor})"),
        RopeScaling::Other { name } => name.clone(),
    }
}

fn py_str(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

pub(crate) fn export(
    plan: &Plan,
    model: &Model,
    cluster: &Cluster,
    opts: &EngineOptions,
) -> EngineResult<Vec<ExportFile>> {
    let tp = launch::uniform_tp(plan, ENGINE)?;
    let split = launch::block_split(plan, model, ENGINE)?;
    launch::check_heads(&split.shape)?;
    let flavor = flavor_for(model, &split.shape)?;
    if let Some(m) = opts
        .torchtitan_model
        .as_deref()
        .filter(|m| *m != flavor.module)
    {
        return Err(Refusal::Option {
            option: "torchtitan_model".into(),
            message: format!(
                "`{m}`: the plan's model is torchtitan's {} flavor {}",
                flavor.module, flavor.name
            ),
        });
    }
    if flavor.tied && plan.pp() > 1 {
        return Err(Refusal::Unsupported(format!(
            "{} flavor {} ties its output to the embedding, and torchtitan refuses weight tying with pipeline parallelism (torchtitan/models/common/decoder.py); export a plan without a pipeline",
            flavor.module, flavor.name
        )));
    }
    if let Some(f) = opts
        .torchtitan_flavor
        .as_deref()
        .filter(|f| *f != flavor.name)
    {
        return Err(Refusal::Option {
            option: "torchtitan_flavor".into(),
            message: format!(
                "`{f}` is not the model amp priced; its architecture is torchtitan's {} flavor {}",
                flavor.module, flavor.name
            ),
        });
    }
    // Device mesh ["pp", "dp_replicate", "dp_shard", "cp", "tp"]
    // (torchtitan/distributed/parallel_dims.py): tp fastest, pp slowest.
    let launch = launch::realise(plan, opts, Engine::Torchtitan.rank_orders(), ENGINE)?;
    let param_dtype = match opts.precision.unwrap_or(Precision::Bf16) {
        Precision::Fp8 => {
            return Err(Refusal::Unsupported(
                "FP8 training: amp prices FP8 as Megatron-LM runs Transformer Engine; torchtitan's is torchao's Float8Linear (rowwise scaling, `Float8LinearConverter`), whose casts and memory amp does not price".into(),
            ))
        }
        Precision::Bf16 => "bfloat16",
        Precision::Fp32 | Precision::Tf32 => "float32",
        Precision::Fp16 => {
            return Err(Refusal::Unsupported(
                "fp16 training: torchtitan's training.mixed_precision_param is \"bfloat16\" or \"float32\" (torchtitan/config/configs.py TrainingConfig)".into(),
            ))
        }
    };
    let pp = plan.pp();
    let dp = plan.dp();
    let shape = &split.shape;
    // Replicas all-reduce gradients (DDP-style replication) unless the
    // optimizer state is sharded (FSDP). torchtitan 0.3.0 applies the mixed
    // precision policy through fully_shard even with a shard degree of 1
    // (torchtitan/models/llama3/parallelize.py: "Always run
    // apply_fsdp_to_decoder"; qwen3/parallelize.py likewise), so bf16 holds
    // under tp and pp without FSDP.
    let (replicate_degree, shard_degree) = if opts.distributed_optimizer {
        (1, dp)
    } else {
        (dp, 1)
    };
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

    let mut py = String::new();
    py.push_str(&format!(
        "\"\"\"torchtitan {RELEASE} job for an amp plan: {} on {}.\n\n",
        model.name, cluster.name
    ));
    py.push_str(&format!(
        "Plan: pp {pp}, tp {tp}, dp {dp}, micro-batch {}, {} micro-batches; transformer blocks per stage {}.\n",
        plan.micro_batch,
        plan.num_micro_batches,
        launch::join(&split.blocks, "/")
    ));
    py.push_str(&format!(
        "amp priced {} parameters (tied weights once).\n",
        model.total_params()
    ));
    py.push_str(
        "Run with: torchrun ... -m torchtitan.train --module amp_torchtitan --config amp_plan\n",
    );
    py.push_str("(torchtitan/config/manager.py ConfigManager._load_config imports MODULE and calls FUNCTION).\n");
    py.push_str("Data set, tokenizer path, optimizer (but an implementation the plan names) and steps are those of torchtitan's own recipe; change them here.\n\"\"\"\n\n");
    py.push_str("from torchtitan.distributed.activation_checkpoint import FullAC, SelectiveAC\n");
    if flavor.borrowed_recipe {
        py.push_str(&format!(
            "from torchtitan.models.{} import model_registry\n",
            flavor.module
        ));
    }
    py.push_str(&format!(
        "from torchtitan.models.{}.config_registry import {}\n\n\n",
        flavor.module, flavor.recipe
    ));
    py.push_str("def amp_plan():\n");
    let what = format!(
        "{} flavor {} (model_registry(\"{}\"): hidden {}, {} blocks,\n    # {} heads, {} key/value heads, FFN {}, vocabulary {})",
        flavor.module,
        flavor.name,
        flavor.name,
        shape.hidden,
        shape.num_blocks,
        flavor.heads,
        flavor.kv_heads,
        flavor.ffn,
        flavor.vocab
    );
    if flavor.borrowed_recipe {
        py.push_str(&format!(
            "    # {} has no recipe of its own: the recipe {}() (the same tokenizer, data set and\n    # optimizer), with its model replaced by {what}: the model amp priced.\n",
            flavor.name, flavor.recipe
        ));
        py.push_str(&format!("    config = {}()\n", flavor.recipe));
        py.push_str(&format!(
            "    config.model_spec = model_registry({})\n",
            py_str(flavor.name)
        ));
    } else {
        py.push_str(&format!(
            "    # torchtitan's recipe for {what}: the model amp priced.\n"
        ));
        py.push_str(&format!("    config = {}()\n", flavor.recipe));
    }
    py.push_str("    t = config.training  # torchtitan/config/configs.py TrainingConfig\n");
    py.push_str("    p = config.parallelism  # torchtitan/config/configs.py ParallelismConfig\n");
    py.push_str(&format!("    t.seq_len = {}\n", shape.seq_len));
    if pp > 1 {
        py.push_str(&format!(
            "    # one step of a pipeline replica: {} micro-batches of {}, split by pipeline_parallel_microbatch_size\n",
            plan.num_micro_batches, plan.micro_batch
        ));
        py.push_str(&format!(
            "    t.local_batch_size = {}\n",
            plan.micro_batch * plan.num_micro_batches
        ));
        py.push_str(&format!(
            "    p.pipeline_parallel_microbatch_size = {}\n",
            plan.micro_batch
        ));
        py.push_str("    # local_batch_size x data-parallel degree: no gradient accumulation\n");
    } else {
        py.push_str(&format!(
            "    # no pipeline: each micro-batch of {} is one gradient-accumulation step ({} of them),\n",
            plan.micro_batch, plan.num_micro_batches
        ));
        py.push_str("    # global_batch_size / (local_batch_size x data-parallel degree) = steps (torchtitan/trainer.py)\n");
        py.push_str(&format!("    t.local_batch_size = {}\n", plan.micro_batch));
    }
    py.push_str(&format!(
        "    t.global_batch_size = {}\n",
        plan.global_batch()
    ));
    py.push_str(&format!(
        "    t.mixed_precision_param = {}\n",
        py_str(param_dtype)
    ));
    if let Some(step) = opts.optimizer_step {
        py.push_str(&format!(
            "    # the Adam(W) step the plan names (OptimizersContainer.Config.implementation)\n    config.optimizer.implementation = {}\n",
            py_str(step.name())
        ));
    }
    py.push_str(&format!("    p.tensor_parallel_degree = {tp}\n"));
    if tp > 1 {
        // torchtitan turns sequence parallelism on with tensor parallelism
        // by default (ParallelismConfig.enable_sequence_parallel); the plan
        // was priced with what its setup says.
        py.push_str(&format!(
            "    p.enable_sequence_parallel = {}  # as priced\n",
            if opts.sequence_parallel {
                "True"
            } else {
                "False"
            }
        ));
    }
    py.push_str(&format!("    p.pipeline_parallel_degree = {pp}\n"));
    if opts.distributed_optimizer {
        py.push_str(
            "    # shard weights, gradients and optimizer state over the replicas (FSDP)\n",
        );
    } else {
        py.push_str("    # replicas hold whole stages and all-reduce gradients, as priced\n");
    }
    py.push_str(&format!(
        "    p.data_parallel_replicate_degree = {replicate_degree}\n"
    ));
    py.push_str(&format!(
        "    p.data_parallel_shard_degree = {shard_degree}\n"
    ));
    if pp == 1 {
        // torchtitan's default captures each micro-batch's forward and
        // backward in a CUDA graph without a pipeline. amp prices eager
        // launches, and its memory model has no graph pool (the warm-up
        // step's blocks stay cached in the default pool while the capture
        // allocates a second one), so the file runs the plan as priced.
        py.push_str("    # Eager launches, as amp priced them. torchtitan's default without a pipeline captures\n    # forward and backward in a CUDA graph: delete this line to use it. A launch-bound plan\n    # (a small model, high tp) then runs faster than priced, and the graph's private memory\n    # pool, beside the blocks its eager warm-up step leaves cached, is not in amp's memory figure.\n");
    } else {
        py.push_str("    # Trainer.Config._validate_cuda_graphs: CUDA graphs do not support pipeline parallelism\n");
    }
    py.push_str("    t.disable_cuda_graphs = True\n");
    if pp > 1 {
        py.push_str(&format!(
            "    p.pipeline_parallel_schedule = {}  # a torch.distributed.pipelining schedule name\n",
            py_str(schedule)
        ));
        py.push_str("    # the modules of each stage, in order (torchtitan/models/common/decoder.py names)\n");
        py.push_str("    p.module_fqns_per_model_part = [\n");
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
                fqns.push("lm_head".into());
            }
            let quoted: Vec<String> = fqns.iter().map(|f| py_str(f)).collect();
            py.push_str(&format!("        [{}],\n", quoted.join(", ")));
        }
        py.push_str("    ]\n");
    }
    match opts.cross_entropy {
        // The recipe's ChunkedLossWrapper, as priced.
        CrossEntropy::Chunked => {}
        CrossEntropy::Pytorch => py.push_str(
            "    # PyTorch's cross entropy over the whole sequence, as priced: the\n    # recipe's ChunkedLossWrapper without its slicing (torchtitan/components/loss.py)\n    config.loss = config.loss.loss_fn\n",
        ),
        CrossEntropy::Megatron => {
            return Err(Refusal::Unsupported(
                "Megatron-LM's vocabulary-parallel cross entropy: torchtitan computes PyTorch's (chunked by its recipes, `--cross-entropy chunked`, or over the whole sequence, `pytorch`)".into(),
            ))
        }
    }
    if opts.compile {
        // The blocks compiled, as priced; the loss amp prices as eager
        // kernels, so it stays uncompiled (components' default compiles it too).
        py.push_str("    # each block compiled with torch.compile (torchtitan/distributed/compile.py), as\n    # priced; the loss was priced uncompiled, so it is left out of the components\n");
        py.push_str("    config.compile.enable = True\n");
        py.push_str("    config.compile.components = [\"model\"]\n");
    }
    py.push_str("    # Trainer.Config.activation_checkpoint (torchtitan/distributed/activation_checkpoint.py)\n");
    match opts.recompute {
        Recompute::None => py.push_str(&format!(
            "    config.activation_checkpoint = None  # none: {} skips it\n",
            match flavor.module {
                "llama3" => "parallelize_llama",
                _ => "parallelize_qwen3",
            }
        )),
        Recompute::Full => py.push_str("    config.activation_checkpoint = FullAC.Config()\n"),
        Recompute::Selective => {
            py.push_str("    config.activation_checkpoint = SelectiveAC.Config()\n")
        }
    }
    py.push_str("    return config\n");

    let mut sh = String::from("#!/usr/bin/env bash\n");
    sh.push_str("# torchtitan launch for this plan; run on every node: bash launch.sh NODE_RANK\n");
    sh.push_str("# Ranks follow torchtitan's mesh [pp, dp_replicate, dp_shard, cp, tp] (tp fastest); each node's\n");
    sh.push_str(
        "# CUDA_VISIBLE_DEVICES puts local rank i (device LOCAL_RANK) on the GPU the plan chose.\n",
    );
    sh.push_str("# Run from where torchtitan's recipe finds its tokenizer (its repository root); the job module\n");
    sh.push_str("# is found through PYTHONPATH.\n");
    sh.push_str("set -euo pipefail\nHERE=\"$(cd \"$(dirname \"$0\")\" && pwd)\"\n");
    sh.push_str("export PYTHONPATH=\"$HERE${PYTHONPATH:+:$PYTHONPATH}\"\n");
    sh.push_str(&launch.torchrun_case(
        opts,
        "-m torchtitan.train --module amp_torchtitan --config amp_plan",
    ));

    Ok(vec![
        ExportFile::new("amp_torchtitan.py", py),
        ExportFile::new("launch.sh", sh),
        ExportFile::new("hostfile", launch.hostfile(cluster)),
    ])
}

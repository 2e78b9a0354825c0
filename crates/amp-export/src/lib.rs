//! From plan to running job: launch configurations for Megatron-LM,
//! DeepSpeed and torchtitan, and a self-contained HTML report of a plan.
//!
//! Everything here is pure: [`export`] returns the files to write and
//! [`html_report`] returns the page; the CLI does the writing.
//!
//! Each engine module cites, next to every key it emits, the file of that
//! engine's source where the key is defined. An engine that cannot realise a
//! plan (different tensor-parallel degrees per stage, a layer split or a
//! device placement it cannot express) is refused with the reason and the
//! engines that can run the plan.

mod deepspeed;
mod launch;
mod megatron;
pub mod report;
mod torchtitan;

use amp_core::cluster::Cluster;
use amp_core::model::Model;
use amp_core::plan::Plan;
use amp_core::schedule::Schedule;
use serde::Serialize;

pub use report::{html_report, ReportInput, SensitivityRow, SensitivitySection};

pub use amp_core::setup::{Engine, Precision, Recompute};

/// What the plan itself does not say but a launch needs.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportOptions {
    /// Host name of each cluster node, by node index. Empty: `node0`,
    /// `node1`, ...
    pub hosts: Vec<String>,
    /// Rendezvous port on the first node.
    pub master_port: u16,
    /// Megatron-LM only: allow `--pipeline-model-parallel-layout` (recent
    /// Megatron-Core) for splits that first/last-stage layer counts cannot
    /// express. When false such plans are refused.
    pub megatron_layout: bool,
    /// Training script each engine runs.
    pub megatron_script: String,
    pub deepspeed_script: String,
    /// torchtitan's model (`llama3`, `qwen3`) and flavor (`8B`, ...): the
    /// shape of a torchtitan model is registered in code under a flavor
    /// name. `None`: the one whose architecture is the plan's model; a name
    /// given must be that one.
    pub torchtitan_model: Option<String>,
    pub torchtitan_flavor: Option<String>,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions {
            hosts: Vec::new(),
            master_port: 29500,
            megatron_layout: true,
            megatron_script: "pretrain_gpt.py".to_string(),
            deepspeed_script: "train.py".to_string(),
            torchtitan_model: None,
            torchtitan_flavor: None,
        }
    }
}

/// What the engine modules read: the user's [`ExportOptions`] and the
/// plan's training setup in the form the engines configure it.
#[derive(Debug, Clone)]
pub(crate) struct EngineOptions {
    pub(crate) base: ExportOptions,
    pub(crate) precision: Option<Precision>,
    pub(crate) recompute: Recompute,
    /// Shard optimizer state over data-parallel ranks: Megatron's
    /// `--use-distributed-optimizer`, DeepSpeed ZeRO, torchtitan FSDP.
    pub(crate) distributed_optimizer: bool,
    pub(crate) schedule: Schedule,
    /// Virtual pipeline chunks per pipeline rank (interleaved 1F1B).
    pub(crate) virtual_pipeline_chunks: Option<usize>,
    pub(crate) sharding: amp_core::setup::OptimizerSharding,
    pub(crate) sequence_parallel: bool,
    /// The interleaved split counts the embedding and the loss as one block
    /// each (Megatron-LM's `--account-for-embedding-in-pipeline-split` and
    /// `--account-for-loss-in-pipeline-split`).
    pub(crate) account_for_embedding_and_loss: bool,
    /// A tensor-parallel stage sends each rank's partition and the
    /// receivers all-gather (the plan's scatter-gather sends).
    pub(crate) partitioned_sends: bool,
    /// The Adam(W) step the plan names, if any (else the engine's own).
    pub(crate) optimizer_step: Option<amp_core::setup::OptimizerStep>,
    /// The loss kernel the plan was priced with.
    pub(crate) cross_entropy: amp_core::setup::CrossEntropy,
    /// 16-bit gradients all-reduced as fp32 (DeepSpeed's
    /// `communication_data_type`; Megatron-LM and torchtitan reduce them as
    /// they are, fewer bytes than the plan was priced with).
    pub(crate) fp32_allreduce: bool,
    /// torchtitan compiles each block (`compile.enable`), as priced.
    pub(crate) compile: bool,
    /// The data-parallel reduction overlaps the last backward in buckets,
    /// as priced (Megatron-LM's `--overlap-grad-reduce`; DeepSpeed's
    /// `overlap_comm` is written from the setup's ZeRO stage).
    pub(crate) overlap_grad_reduce: bool,
    /// Megatron-LM's tensor-parallel communication overlap, as priced.
    pub(crate) tp_comm_overlap: bool,
    /// bf16 gradients under bf16 or fp8 compute, as priced (Megatron-LM's
    /// `--grad-reduce-in-bf16`; it keeps fp32 ones otherwise).
    pub(crate) bf16_gradients: bool,
    /// The plan names Hugging Face's eager blocks (`block_kernels`), which
    /// DeepSpeed runs as they are; else the engine's fused ones, as a plan
    /// is priced on an engine ([`amp_core::setup::TrainingSetup::on_engine`]).
    pub(crate) eager_blocks: bool,
}

impl std::ops::Deref for EngineOptions {
    type Target = ExportOptions;
    fn deref(&self) -> &ExportOptions {
        &self.base
    }
}

impl EngineOptions {
    /// DeepSpeed's `zero_optimization.stage` for the plan's sharding.
    pub(crate) fn zero_stage(&self) -> u8 {
        use amp_core::setup::OptimizerSharding as S;
        match self.sharding {
            S::None => 0,
            S::Zero1 => 1,
            S::Zero2 => 2,
            S::Zero3 => 3,
        }
    }
}

impl ExportOptions {
    pub(crate) fn host(&self, node: usize) -> String {
        self.hosts
            .get(node)
            .cloned()
            .unwrap_or_else(|| format!("node{node}"))
    }
}

/// One file of an export: a path relative to the output folder and its text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExportFile {
    pub path: String,
    pub contents: String,
}

impl ExportFile {
    pub(crate) fn new(path: &str, contents: String) -> ExportFile {
        ExportFile {
            path: path.to_string(),
            contents,
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ExportError {
    /// The plan does not pass `Plan::validate` for this model and cluster.
    #[error("invalid plan: {0}")]
    InvalidPlan(String),
    /// An option is out of range or contradicts the engine.
    #[error("export option {option}: {message}")]
    Option { option: String, message: String },
    /// The engine cannot run this plan.
    #[error("{engine} cannot run this plan: {reason}; {}", runnable_by_text(.runnable_by))]
    Unsupported {
        engine: Engine,
        reason: String,
        /// Engines that can run the plan with the same options.
        runnable_by: Vec<Engine>,
    },
}

fn runnable_by_text(engines: &[Engine]) -> String {
    if engines.is_empty() {
        "none of megatron, deepspeed, torchtitan can run it as planned".to_string()
    } else {
        let names: Vec<&str> = engines.iter().map(|e| e.name()).collect();
        format!("engines that can run it: {}", names.join(", "))
    }
}

/// Why an engine refuses a plan (before the list of engines that can run it
/// is known).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Refusal {
    Unsupported(String),
    Option { option: String, message: String },
}

pub(crate) type EngineResult<T> = Result<T, Refusal>;

/// The engine-facing view of `plan`: its setup copied into the options, and
/// an interleaved plan (pp x v virtual stages) seen as its pp pipeline ranks
/// with `virtual_pipeline_chunks` set, which is how the engines configure
/// it. Refuses setups no engine module can express.
fn engine_view(
    plan: &Plan,
    model: &Model,
    opts: &ExportOptions,
) -> Result<(Plan, EngineOptions), Refusal> {
    let setup = &plan.setup;
    let precision = Some(match setup.formats.compute {
        // TF32 is fp32 storage; the engines enable TF32 products themselves.
        Precision::Tf32 => Precision::Fp32,
        p => p,
    });
    let mut o = EngineOptions {
        base: opts.clone(),
        precision,
        recompute: setup.recompute,
        distributed_optimizer: setup.optimizer_sharding != amp_core::setup::OptimizerSharding::None,
        schedule: setup.schedule,
        virtual_pipeline_chunks: None,
        sharding: setup.optimizer_sharding,
        sequence_parallel: setup.sequence_parallel,
        account_for_embedding_and_loss: false,
        partitioned_sends: setup.pipeline_send == amp_core::setup::PipelineSend::ScatterGather,
        optimizer_step: setup.optimizer_step,
        cross_entropy: setup.cross_entropy(),
        fp32_allreduce: setup.formats.fp32_gradient_reduction(),
        compile: setup.compile,
        overlap_grad_reduce: setup.overlap_grad_reduce,
        tp_comm_overlap: setup.tp_comm_overlap,
        bf16_gradients: setup.formats.gradients == amp_core::setup::NumberFormat::Bf16,
        eager_blocks: setup.block_kernels == Some(amp_core::setup::BlockKernels::Eager),
    };
    let v = setup.virtual_stages();
    if v <= 1 {
        return Ok((plan.clone(), o));
    }
    let pp = plan.pp();
    let even =
        amp_core::partition::even_block_split(model, pp * v).map_err(Refusal::Unsupported)?;
    if plan.boundaries() != even {
        return Err(Refusal::Unsupported(format!(
            "its interleaved stages ({}) are not the even split of the blocks over pp x v = {} virtual stages, the only one Megatron-LM builds",
            launch::join(&plan.boundaries(), " "),
            pp * v
        )));
    }
    let accounted = amp_core::partition::accounts_for_embedding_and_loss(model, pp * v);
    // The per-rank stand-in stages: each rank's blocks (v chunks), laid out
    // contiguously so that counting, rank mapping and memory see the right
    // amounts; the engine builds the chunks itself from the flags.
    let ranks = if accounted {
        let blocks: Vec<usize> = (0..model.num_layers())
            .filter(|&l| model.layers[l].kind == amp_core::LayerKind::TransformerBlock)
            .collect();
        let per_rank = (blocks.len() + 2) / pp;
        let mut b = vec![0];
        let mut taken = 0;
        for j in 0..pp - 1 {
            taken += per_rank - usize::from(j == 0);
            b.push(blocks[taken]);
        }
        b.push(model.num_layers());
        b
    } else {
        amp_core::partition::even_block_split(model, pp).map_err(Refusal::Unsupported)?
    };
    let mut physical = plan.clone();
    physical.setup.schedule = Schedule::OneFOneB;
    physical.stages = (0..pp)
        .map(|j| amp_core::plan::Stage {
            first_layer: ranks[j],
            end_layer: ranks[j + 1],
            replicas: plan.stages[j].replicas.clone(),
        })
        .collect();
    o.schedule = Schedule::OneFOneB;
    o.virtual_pipeline_chunks = Some(v);
    o.account_for_embedding_and_loss = accounted;
    Ok((physical, o))
}

/// The launch files for `plan` on `engine`. Pure: nothing is written.
///
/// The plan's training setup ([`amp_core::Plan::setup`]) decides number
/// formats, schedule, recomputation and sharding. Refuses plans the engine
/// cannot run, saying why and which engines can.
/// What an export of `plan` of `model` to `engine` builds otherwise than
/// the model says, or runs otherwise than the plan was priced, for the
/// user to read beside the files (the CLI prints each as a warning).
pub fn export_notes(model: &Model, plan: &Plan, engine: Engine) -> Vec<String> {
    let mut notes = Vec::new();
    if plan.setup.engine != Some(engine) {
        let priced = match plan.setup.engine {
            None => "without an engine (as eager PyTorch runs it)".to_string(),
            Some(e) => format!("for {e}"),
        };
        notes.push(format!(
            "the plan was priced {priced}; {engine} runs it with its own kernels, loss, optimizer step and collectives, which amp prices otherwise: `amp eval` the plan with --engine {engine} for {engine}'s price, or plan with --engine {engine}",
            engine = engine.name()
        ));
    }
    notes.extend(match engine {
        Engine::Torchtitan => torchtitan::export_notes(model),
        Engine::Megatron => megatron::export_notes(model, plan),
        Engine::DeepSpeed => Vec::new(),
    });
    notes
}

pub fn export(
    plan: &Plan,
    model: &Model,
    cluster: &Cluster,
    engine: Engine,
    opts: &ExportOptions,
) -> Result<Vec<ExportFile>, ExportError> {
    plan.validate(model, cluster)
        .map_err(|e| ExportError::InvalidPlan(e.to_string()))?;
    if let Some(target) = plan.setup.engine.filter(|&e| e != engine) {
        return Err(ExportError::Option {
            option: "engine".into(),
            message: format!(
                "the plan was priced as {target} runs it ({}); export it to {target}, or plan again for {engine}",
                plan.setup.summary()
            ),
        });
    }
    if opts.master_port == 0 {
        return Err(ExportError::Option {
            option: "master_port".into(),
            message: "must be a port number between 1 and 65535".into(),
        });
    }
    if !opts.hosts.is_empty() && opts.hosts.len() != cluster.nodes.len() {
        return Err(ExportError::Option {
            option: "hosts".into(),
            message: format!(
                "{} host names given but the cluster has {} nodes; give one per node, in node order",
                opts.hosts.len(),
                cluster.nodes.len()
            ),
        });
    }
    if let Some(bad) = opts.hosts.iter().find(|h| {
        h.is_empty()
            || !h
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
    }) {
        return Err(ExportError::Option {
            option: "hosts".into(),
            message: format!("`{bad}` is not a host name (letters, digits, `-`, `.`, `_`)"),
        });
    }
    for (option, value) in [
        ("megatron_script", &opts.megatron_script),
        ("deepspeed_script", &opts.deepspeed_script),
    ] {
        if value.is_empty()
            || !value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-._/".contains(c))
        {
            return Err(ExportError::Option {
                option: option.into(),
                message: format!(
                    "`{value}` is not a plain script path (letters, digits, `-`, `.`, `_`, `/`)"
                ),
            });
        }
    }
    match export_engine(plan, model, cluster, engine, opts) {
        Ok(files) => Ok(files),
        Err(Refusal::Option { option, message }) => Err(ExportError::Option { option, message }),
        Err(Refusal::Unsupported(reason)) => {
            let runnable_by = Engine::ALL
                .into_iter()
                .filter(|&e| e != engine && export_engine(plan, model, cluster, e, opts).is_ok())
                .collect();
            Err(ExportError::Unsupported {
                engine,
                reason,
                runnable_by,
            })
        }
    }
}

/// Engines that can run `plan` with `opts`.
pub fn engines_for(
    plan: &Plan,
    model: &Model,
    cluster: &Cluster,
    opts: &ExportOptions,
) -> Vec<Engine> {
    if plan.validate(model, cluster).is_err() {
        return Vec::new();
    }
    Engine::ALL
        .into_iter()
        .filter(|&e| export_engine(plan, model, cluster, e, opts).is_ok())
        .collect()
}

fn export_engine(
    plan: &Plan,
    model: &Model,
    cluster: &Cluster,
    engine: Engine,
    opts: &ExportOptions,
) -> EngineResult<Vec<ExportFile>> {
    let s = &plan.setup;
    if let Err(e) = s.on_engine(engine).check() {
        let msg = e.to_string();
        let why = msg.strip_prefix("training setup: ").unwrap_or(&msg);
        let why = why.replacen(&format!("{} cannot run ", engine.name()), "it uses ", 1);
        return Err(Refusal::Unsupported(why));
    }
    {
        use amp_core::setup::OptimizerSharding as S;
        let pp = plan.pp();
        match engine {
            // A pipeline is a PipelineModule, and `deepspeed.initialize`
            // runs one under the PipelineEngine, which asserts ZeRO stage < 2;
            // one stage under ZeRO-2 or -3 is exported as a plain module.
            Engine::DeepSpeed if pp > 1 && s.optimizer_sharding > S::Zero1 => {
                return Err(Refusal::Unsupported(format!(
                    "DeepSpeed's pipeline engine runs ZeRO stages 0 and 1 only (deepspeed/runtime/pipe/engine.py asserts it), and a pipeline is a PipelineModule; the plan uses {}",
                    s.optimizer_sharding.name()
                )))
            }
            // torchtitan 0.3.0 replicates beside tp and pp without FSDP: its
            // parallelize_llama always applies fully_shard over the
            // ["dp_replicate", "fsdp"] mesh (an fsdp size of 1 shards
            // nothing) and so installs the bf16 mixed-precision policy
            // (torchtitan/models/llama3/parallelize.py). The older "DDP has
            // not supported > 1D parallelism" refusal is gone.
            _ => {}
        }
    }
    let (plan, opts) = engine_view(plan, model, opts)?;
    let (plan, opts) = (&plan, &opts);
    match engine {
        Engine::Megatron => megatron::export(plan, model, cluster, opts),
        Engine::DeepSpeed => deepspeed::export(plan, model, cluster, opts),
        Engine::Torchtitan => torchtitan::export(plan, model, cluster, opts),
    }
}

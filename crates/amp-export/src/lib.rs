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

use std::fmt;
use std::str::FromStr;

use amp_core::cluster::Cluster;
use amp_core::model::Model;
use amp_core::plan::Plan;
use amp_core::schedule::Schedule;
use serde::{Deserialize, Serialize};

pub use report::{html_report, ReportInput};

/// A training engine the exports target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    Megatron,
    DeepSpeed,
    Torchtitan,
}

impl Engine {
    pub const ALL: [Engine; 3] = [Engine::Megatron, Engine::DeepSpeed, Engine::Torchtitan];

    /// The name used on the command line (`--emit megatron`).
    pub fn name(self) -> &'static str {
        match self {
            Engine::Megatron => "megatron",
            Engine::DeepSpeed => "deepspeed",
            Engine::Torchtitan => "torchtitan",
        }
    }
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Engine {
    type Err = String;
    fn from_str(s: &str) -> Result<Engine, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "megatron" | "megatron-lm" | "megatron-core" => Ok(Engine::Megatron),
            "deepspeed" => Ok(Engine::DeepSpeed),
            "torchtitan" => Ok(Engine::Torchtitan),
            other => Err(format!(
                "unknown engine `{other}`; choose one of megatron, deepspeed, torchtitan"
            )),
        }
    }
}

/// Numeric format of training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    Fp16,
    Bf16,
    Fp32,
}

/// Activation recomputation (checkpointing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Recompute {
    #[default]
    None,
    /// Recompute whole transformer blocks in the backward pass.
    Full,
    /// Recompute only the attention core (Megatron's and torchtitan's
    /// "selective").
    Selective,
}

/// What the plan itself does not say but a launch needs.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportOptions {
    /// Host name of each cluster node, by node index. Empty: `node0`,
    /// `node1`, ...
    pub hosts: Vec<String>,
    /// Rendezvous port on the first node.
    pub master_port: u16,
    /// `None`: fp16 for Megatron-LM and DeepSpeed (the AMP experiments'
    /// format), bf16 for torchtitan (its only reduced-precision choice).
    pub precision: Option<Precision>,
    pub recompute: Recompute,
    /// Shard optimizer state over data-parallel ranks: Megatron's
    /// `--use-distributed-optimizer`, DeepSpeed ZeRO stage 1, torchtitan
    /// FSDP.
    pub distributed_optimizer: bool,
    /// Pipeline schedule the plan was priced with.
    pub schedule: Schedule,
    /// Megatron-LM only: virtual pipeline chunks per pipeline rank
    /// (interleaved 1F1B). `None` or 1: not interleaved.
    pub virtual_pipeline_chunks: Option<usize>,
    /// Megatron-LM only: allow `--pipeline-model-parallel-layout` (recent
    /// Megatron-Core) for splits that first/last-stage layer counts cannot
    /// express. When false such plans are refused.
    pub megatron_layout: bool,
    /// Training script each engine runs.
    pub megatron_script: String,
    pub deepspeed_script: String,
    /// torchtitan `[model] name` and `flavor`: the shape of a torchtitan
    /// model is registered in code under a flavor name.
    pub torchtitan_model: String,
    pub torchtitan_flavor: Option<String>,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions {
            hosts: Vec::new(),
            master_port: 29500,
            precision: None,
            recompute: Recompute::None,
            distributed_optimizer: false,
            schedule: Schedule::OneFOneB,
            virtual_pipeline_chunks: None,
            megatron_layout: true,
            megatron_script: "pretrain_gpt.py".to_string(),
            deepspeed_script: "train.py".to_string(),
            torchtitan_model: "llama3".to_string(),
            torchtitan_flavor: None,
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
        "none of megatron, deepspeed, torchtitan can run it as planned (an engine with per-stage parallel degrees is needed)".to_string()
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

/// The launch files for `plan` on `engine`. Pure: nothing is written.
///
/// Refuses plans the engine cannot run, saying why and which engines can.
pub fn export(
    plan: &Plan,
    model: &Model,
    cluster: &Cluster,
    engine: Engine,
    opts: &ExportOptions,
) -> Result<Vec<ExportFile>, ExportError> {
    plan.validate(model, cluster)
        .map_err(|e| ExportError::InvalidPlan(e.to_string()))?;
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
    match engine {
        Engine::Megatron => megatron::export(plan, model, cluster, opts),
        Engine::DeepSpeed => deepspeed::export(plan, model, cluster, opts),
        Engine::Torchtitan => torchtitan::export(plan, model, cluster, opts),
    }
}

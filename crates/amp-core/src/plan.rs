//! A parallelization plan: pipeline stages, each a layer range run by one or
//! more data-parallel replicas, each replica a tensor-parallel group of
//! devices.
//!
//! The form is general on purpose: stages may use different GPU types and
//! different tensor-parallel degrees, and so may the replicas of one stage
//! (Sailor's plans serve a stage with A100 groups at tp 1 beside V100
//! groups at tp 4). Replicas may run different numbers of micro-batches
//! (`replica_micro_batches`: faster replicas take more, and the number of
//! replicas need not divide the batch). AMP's uniform (tp, dp, pp) plans
//! are the special case its search space holds.
//!
//! A plan carries its [`TrainingSetup`]. Under an interleaved schedule with
//! `v` model chunks per device, `stages` lists the `pp x v` virtual stages
//! in model order, as Megatron-LM lays them out: virtual stage `i` runs on
//! the devices of pipeline rank `i mod pp` (its chunk `i / pp`), so
//! `stages[i]` and `stages[i mod pp]` name the same replicas. Pipeline rank
//! 0 of a pp 4 x v 2 plan of 16 blocks thus holds blocks 0-1 and 8-9.

use serde::{Deserialize, Serialize};

use crate::cluster::{Cluster, Device};
use crate::error::{AmpError, Result};
use crate::limits;
use crate::model::Model;
use crate::rank_order::plan_node_ranks;
use crate::setup::{Engine, TrainingSetup};

/// Version of the plan JSON amp writes (`schema_version`); 1 had no
/// `setup`.
pub const PLAN_SCHEMA_VERSION: u32 = 2;

/// One pipeline stage: a contiguous range of layers and the devices that run
/// it, one tensor-parallel group per data-parallel replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    /// First layer of the stage (inclusive).
    pub first_layer: usize,
    /// One past the last layer of the stage.
    pub end_layer: usize,
    /// One entry per data-parallel replica: the devices of its
    /// tensor-parallel group, in tensor-parallel rank order.
    pub replicas: Vec<Vec<Device>>,
}

impl Stage {
    /// The stage's layers, `first_layer..end_layer`.
    pub fn layers(&self) -> std::ops::Range<usize> {
        self.first_layer..self.end_layer
    }
    /// Tensor-parallel degree of the first replica (0 with no replicas);
    /// see [`Stage::uniform_tp`] for stages whose replicas differ.
    pub fn tp(&self) -> usize {
        self.replicas.first().map_or(0, |r| r.len())
    }
    /// The tensor-parallel degree when every replica uses the same one.
    pub fn uniform_tp(&self) -> Option<usize> {
        let tp = self.tp();
        self.replicas.iter().all(|r| r.len() == tp).then_some(tp)
    }
    /// Each (GPU type, tensor-parallel degree) of the stage's groups once,
    /// in the order met: what prices a stage on its slowest group. A device
    /// on the node and tp of the one before adds nothing (a stage has
    /// dp x tp devices and a type or two).
    pub fn group_kinds<'c>(&self, cluster: &'c Cluster) -> Vec<(&'c str, usize)> {
        let mut kinds: Vec<(&'c str, usize)> = Vec::new();
        let mut last = None;
        for rep in &self.replicas {
            for d in rep {
                if last == Some((d.node, rep.len())) {
                    continue;
                }
                last = Some((d.node, rep.len()));
                let kind = (cluster.nodes[d.node].gpu_type.as_str(), rep.len());
                if !kinds.contains(&kind) {
                    kinds.push(kind);
                }
            }
        }
        kinds
    }
    /// The largest tensor-parallel degree of the stage's replicas.
    pub fn max_tp(&self) -> usize {
        self.replicas.iter().map(Vec::len).max().unwrap_or(0)
    }
    /// The smallest tensor-parallel degree of the stage's replicas.
    pub fn min_tp(&self) -> usize {
        self.replicas.iter().map(Vec::len).min().unwrap_or(0)
    }
    /// The tensor-parallel degree as people write it: `4`, or the degrees
    /// of mixed replicas in first-seen order, `1+4`.
    pub fn tp_label(&self) -> String {
        let mut seen: Vec<usize> = Vec::new();
        for r in &self.replicas {
            if !seen.contains(&r.len()) {
                seen.push(r.len());
            }
        }
        let labels: Vec<String> = seen.iter().map(usize::to_string).collect();
        labels.join("+")
    }
    /// Data-parallel degree: number of replicas.
    pub fn dp(&self) -> usize {
        self.replicas.len()
    }
    /// Every device of the stage, replica by replica.
    pub fn devices(&self) -> impl Iterator<Item = Device> + '_ {
        self.replicas.iter().flatten().copied()
    }
}

/// A parallelization plan: micro-batching, the pipeline stages and their
/// devices, and the training setup. See the module documentation for
/// interleaved schedules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// Samples per micro-batch on each replica.
    pub micro_batch: usize,
    /// Micro-batches each replica runs per iteration (gradient
    /// accumulation); with `replica_micro_batches`, the largest of them.
    pub num_micro_batches: usize,
    /// Uneven data parallelism: micro-batches of each replica, in replica
    /// order (empty: every replica runs `num_micro_batches`). Replica `r`
    /// is entry `r` of every stage's `replicas`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replica_micro_batches: Vec<usize>,
    /// Pipeline stages in model order; with an interleaved schedule the
    /// virtual stages (see the module documentation).
    pub stages: Vec<Stage>,
    /// How the job trains: number formats, schedule, recomputation,
    /// sharding. Plans written before it existed read as the default.
    #[serde(default)]
    pub setup: TrainingSetup,
}

impl Plan {
    /// Pipeline ranks (devices in a pipeline), `stages.len() / v`.
    pub fn pp(&self) -> usize {
        self.stages.len() / self.setup.virtual_stages().max(1)
    }

    /// Model chunks per pipeline rank.
    pub fn virtual_stages(&self) -> usize {
        self.setup.virtual_stages()
    }

    /// The layer ranges pipeline rank `rank` holds, chunk by chunk.
    pub fn rank_layers(&self, rank: usize) -> Vec<std::ops::Range<usize>> {
        let pp = self.pp().max(1);
        self.stages
            .iter()
            .skip(rank)
            .step_by(pp)
            .map(|s| s.layers())
            .collect()
    }

    /// The stages that name each pipeline rank's devices (the first `pp`).
    pub fn rank_stages(&self) -> &[Stage] {
        &self.stages[..self.pp().min(self.stages.len())]
    }

    /// Data-parallel degree (equal on every stage of a valid plan).
    pub fn dp(&self) -> usize {
        self.stages.first().map_or(0, |s| s.dp())
    }

    /// The tensor-parallel degree when every stage and replica uses the
    /// same one.
    pub fn uniform_tp(&self) -> Option<usize> {
        let tp = self.stages.first()?.tp();
        self.stages
            .iter()
            .all(|s| s.uniform_tp() == Some(tp))
            .then_some(tp)
    }

    /// The plan's tensor-parallel degree as tables show it: one label when
    /// every pipeline rank has the same ([`Stage::tp_label`]: `4`, `1+4`),
    /// else each rank's in order, `1/1/2`.
    pub fn tp_label(&self) -> String {
        let tps: Vec<String> = self.rank_stages().iter().map(Stage::tp_label).collect();
        if tps.iter().all(|t| *t == tps[0]) {
            tps.into_iter().next().unwrap_or_default()
        } else {
            tps.join("/")
        }
    }

    /// Micro-batches replica `r` runs per iteration.
    pub fn micro_batches_of(&self, r: usize) -> usize {
        self.replica_micro_batches
            .get(r)
            .copied()
            .unwrap_or(self.num_micro_batches)
    }

    /// Whether replicas run different numbers of micro-batches.
    pub fn is_uneven(&self) -> bool {
        self.replica_micro_batches
            .iter()
            .any(|&b| b != self.num_micro_batches)
    }

    /// Micro-batches per replica as people write it: `4`, or for uneven
    /// replicas the range, `18-19`.
    pub fn micro_batches_label(&self) -> String {
        if !self.is_uneven() {
            return self.num_micro_batches.to_string();
        }
        let min = self
            .replica_micro_batches
            .iter()
            .min()
            .copied()
            .unwrap_or(0);
        format!("{min}-{}", self.num_micro_batches)
    }

    /// Micro-batches of the whole iteration, over all replicas.
    pub fn total_micro_batches(&self) -> usize {
        (0..self.dp()).map(|r| self.micro_batches_of(r)).sum()
    }

    /// What in this plan's shape no engine amp exports to can run, as
    /// phrases ("its stages run at different tp degrees (1/1/4)"); empty
    /// when it has none. Megatron-LM, DeepSpeed and torchtitan each build
    /// the model at one tensor-parallel degree and give every replica the
    /// same share of the batch (Sailor's fork of DeepSpeed runs both).
    pub fn unlaunchable_shape(&self) -> Vec<String> {
        let mut why = Vec::new();
        if self.is_uneven() {
            why.push(format!(
                "its replicas run {} micro-batches ({} in all; replica_micro_batches in --json)",
                self.micro_batches_label(),
                self.total_micro_batches()
            ));
        }
        if self.stages.iter().any(|s| s.uniform_tp().is_none()) {
            why.push("a stage's replicas run at different tp degrees".to_string());
        } else if self.uniform_tp().is_none() {
            why.push(format!(
                "its stages run at different tp degrees ({})",
                self.tp_label()
            ));
        }
        why
    }

    /// Why `engine` cannot launch this plan, in words: its shape
    /// ([`Plan::unlaunchable_shape`]), or a placement no rank order of the
    /// engine's numbers one contiguous block of ranks per node
    /// ([`crate::rank_order`]). `None` when it can: the plans `amp plan
    /// --engine` ranks. (An export refuses more: a model the engine does
    /// not build, a split its flags cannot express.)
    pub fn launch_refusal(&self, engine: Engine) -> Option<String> {
        let shape = self.unlaunchable_shape();
        if !shape.is_empty() {
            return Some(shape.join(", and "));
        }
        let tp = self.uniform_tp()?;
        let mut split = Vec::new();
        for &order in engine.rank_orders() {
            match plan_node_ranks(self, tp, order) {
                Ok(_) => return None,
                Err(s) => split.push(format!(
                    "in {engine}'s rank order ({}) node {} would hold ranks {}-{} and rank {}",
                    s.order.describe(),
                    s.node,
                    s.first_rank,
                    s.last_rank,
                    s.stray_rank
                )),
            }
        }
        Some(format!(
            "its placement cannot be launched, as torchrun gives each node one contiguous block of ranks: {}",
            split.join("; ")
        ))
    }

    /// [`Plan::launch_refusal`], and what `engine` asks of `model` under the
    /// plan's setup beside its shape and placement
    /// ([`TrainingSetup::tiling_refusal`]: Megatron-LM in FP8 runs only
    /// products Transformer Engine can tile).
    pub fn launch_refusal_for(&self, engine: Engine, model: &Model) -> Option<String> {
        self.launch_refusal(engine).or_else(|| {
            self.setup
                .on_engine(engine)
                .tiling_refusal(model, self.uniform_tp()?, self.micro_batch)
        })
    }

    /// Samples per iteration over all replicas: `micro_batch x` the
    /// micro-batches of every replica (`num_micro_batches x dp` when even).
    pub fn global_batch(&self) -> usize {
        self.micro_batch * self.total_micro_batches()
    }

    /// Stage boundaries: `[0, b1, ..., num_layers]`.
    pub fn boundaries(&self) -> Vec<usize> {
        let mut b: Vec<usize> = self.stages.iter().map(|s| s.first_layer).collect();
        if let Some(last) = self.stages.last() {
            b.push(last.end_layer);
        }
        b
    }

    /// Every device of the plan, once.
    pub fn devices(&self) -> impl Iterator<Item = Device> + '_ {
        self.rank_stages().iter().flat_map(|s| s.devices())
    }

    /// Checks that the plan can run: every layer in exactly one stage, in
    /// order; every device exists and is used once; every stage has the
    /// same number of replicas; batch sizes positive, with one micro-batch
    /// count per replica when they are uneven.
    pub fn validate(&self, model: &Model, cluster: &Cluster) -> Result<()> {
        self.validate_with(model, Some(cluster))
    }

    /// [`Plan::validate`] of a plan whose stages hold the devices of a plan
    /// already validated on the cluster: all but the devices, the costly
    /// part on a large plan, checked (a search's candidates of one layout
    /// differ only in split and batch).
    pub(crate) fn validate_on_validated_devices(&self, model: &Model) -> Result<()> {
        self.validate_with(model, None)
    }

    /// [`Plan::validate`], checking the devices against `cluster` when
    /// given.
    fn validate_with(&self, model: &Model, cluster: Option<&Cluster>) -> Result<()> {
        let bad = |at: String, msg: String| Err(AmpError::invalid(at, msg));
        if self.stages.is_empty() {
            return bad("plan".into(), "has no stages".into());
        }
        if self.micro_batch == 0 || self.num_micro_batches == 0 {
            return bad(
                "plan".into(),
                "micro_batch and num_micro_batches must be at least 1".into(),
            );
        }
        self.setup.check()?;
        // Only a pipeline asks (the scan stays off one-stage candidates).
        let ties_weights = self.pp() > 1 && model.layers.iter().any(|l| l.tied_to.is_some());
        self.setup.check_pipeline(self.pp(), ties_weights)?;
        let seq = model.shape.as_ref().map_or(0, |s| s.seq_len);
        // Degrees checked: a plan of thousands of groups has a few.
        let mut allowed: Vec<usize> = Vec::new();
        for (i, s) in self.stages.iter().enumerate() {
            for r in &s.replicas {
                if allowed.contains(&r.len()) {
                    continue;
                }
                if let Some(why) = model.tp_refusal(r.len()) {
                    return bad(format!("plan stage {i}"), why);
                }
                // Sequence parallelism splits the sequence over the group
                // (Megatron-LM's `_split_along_first_dim` asserts it divides).
                if self.setup.sequence_parallel && seq > 0 && !seq.is_multiple_of(r.len() as u64) {
                    return bad(
                        format!("plan stage {i}"),
                        format!(
                            "sequence parallelism splits the {seq} tokens of a sample over tp {}, which does not divide them",
                            r.len()
                        ),
                    );
                }
                allowed.push(r.len());
            }
        }
        let v = self.virtual_stages();
        if v > 1 {
            let n = self.stages.len();
            if !n.is_multiple_of(v) || n / v < 2 {
                return bad(
                    "plan".into(),
                    format!(
                        "has {n} stages but its interleaved schedule puts {v} model chunks on every pipeline rank: it needs pp x {v} virtual stages with pp >= 2 (interleaving without a pipeline is no schedule; use 1f1b)"
                    ),
                );
            }
            let pp = n / v;
            for (i, s) in self.stages.iter().enumerate().skip(pp) {
                if s.replicas != self.stages[i % pp].replicas {
                    return bad(
                        format!("plan stage {i}"),
                        format!(
                            "is model chunk {} of pipeline rank {} and must run on that rank's devices (those of stage {})",
                            i / pp,
                            i % pp,
                            i % pp
                        ),
                    );
                }
            }
        }
        let ranks = self.pp();
        if self.micro_batch > limits::MAX_MICRO_BATCH {
            return bad(
                "plan".into(),
                format!(
                    "micro_batch = {} is above the limit of {}",
                    self.micro_batch,
                    limits::MAX_MICRO_BATCH
                ),
            );
        }
        if self.num_micro_batches > limits::MAX_MICRO_BATCHES {
            return bad(
                "plan".into(),
                format!(
                    "num_micro_batches = {} is above the limit of {}",
                    self.num_micro_batches,
                    limits::MAX_MICRO_BATCHES
                ),
            );
        }
        if !self.replica_micro_batches.is_empty() {
            let per = &self.replica_micro_batches;
            if per.len() != self.stages[0].dp() {
                return bad(
                    "plan".into(),
                    format!(
                        "replica_micro_batches has {} entries but the plan has {} replicas; give one micro-batch count per replica (or leave it out when every replica runs num_micro_batches)",
                        per.len(),
                        self.stages[0].dp()
                    ),
                );
            }
            if let Some(r) = per.iter().position(|&b| b == 0) {
                return bad(
                    "plan".into(),
                    format!("replica_micro_batches gives replica {r} no micro-batch; every replica runs at least one (drop the replica instead)"),
                );
            }
            let max = per.iter().copied().max().unwrap_or(0);
            if max != self.num_micro_batches {
                return bad(
                    "plan".into(),
                    format!(
                        "num_micro_batches = {} but the largest entry of replica_micro_batches is {max}; with uneven replicas num_micro_batches is their largest count",
                        self.num_micro_batches
                    ),
                );
            }
        }
        let batch = (0..self.stages[0].dp()).try_fold(0usize, |acc, r| {
            self.micro_batch
                .checked_mul(self.micro_batches_of(r))
                .and_then(|b| acc.checked_add(b))
        });
        match batch {
            Some(b) if b <= limits::MAX_GLOBAL_BATCH => {}
            _ => {
                return bad(
                    "plan".into(),
                    format!(
                        "micro_batch {} x the micro-batches of {} replicas is above the limit of {} samples per iteration",
                        self.micro_batch,
                        self.stages[0].dp(),
                        limits::MAX_GLOBAL_BATCH
                    ),
                )
            }
        }
        let mut next = 0;
        // Devices seen so far, one flag per GPU of the cluster (node by
        // node): linear in the plan, where a set was the plan's cost in
        // the refinement of 16,384-GPU plans.
        let first_of_node: Vec<usize> = cluster
            .iter()
            .flat_map(|c| &c.nodes)
            .scan(0, |acc, n| {
                let first = *acc;
                *acc += n.gpus;
                Some(first)
            })
            .collect();
        let mut seen = vec![false; cluster.map_or(0, |c| c.num_devices())];
        let dp = self.stages[0].dp();
        for (j, s) in self.stages.iter().enumerate() {
            // Named only on an error: validation runs on every candidate.
            let at = || format!("plan stage {j}");
            if s.first_layer != next {
                return bad(
                    at(),
                    format!(
                        "starts at layer {} but the previous stage ended at {next}; stages must cover the layers in order",
                        s.first_layer
                    ),
                );
            }
            if s.end_layer <= s.first_layer {
                return bad(at(), "holds no layer (end_layer <= first_layer)".into());
            }
            next = s.end_layer;
            if j >= ranks {
                // A later chunk of a rank checked above.
                continue;
            }
            if s.replicas.is_empty() {
                return bad(at(), "has no replicas".into());
            }
            if s.dp() != dp {
                return bad(
                    at(),
                    format!("has {} replicas but stage 0 has {dp}; every stage needs the same data-parallel degree", s.dp()),
                );
            }
            for (r, rep) in s.replicas.iter().enumerate() {
                if rep.is_empty() {
                    return bad(
                        format!("{}, replica {r}", at()),
                        "has no devices; a replica is a tensor-parallel group of at least one GPU"
                            .into(),
                    );
                }
                let Some(cluster) = cluster else { continue };
                for d in rep {
                    if d.node >= cluster.nodes.len() || d.gpu >= cluster.nodes[d.node].gpus {
                        return bad(
                            format!("{}, replica {r}", at()),
                            format!(
                                "device (node {}, gpu {}) is not in the cluster",
                                d.node, d.gpu
                            ),
                        );
                    }
                    let k = first_of_node[d.node] + d.gpu;
                    if std::mem::replace(&mut seen[k], true) {
                        return bad(
                            format!("{}, replica {r}", at()),
                            format!("device (node {}, gpu {}) is used twice", d.node, d.gpu),
                        );
                    }
                }
            }
        }
        if next != model.num_layers() {
            return bad(
                "plan".into(),
                format!(
                    "stages end at layer {next} but the model has {} layers",
                    model.num_layers()
                ),
            );
        }
        Ok(())
    }

    /// Reads a plan from JSON in any form [`Plan::from_json_any`] accepts, taking
    /// the best-ranked plan of a whole `amp plan --json` output.
    pub fn from_json_str(text: &str, origin: &str) -> Result<Plan> {
        Plan::from_json_any(text, origin, None)
    }

    /// Reads a plan from any JSON amp writes or a user would: a bare plan
    /// (`micro_batch`, `num_micro_batches`, `stages`), an object holding one
    /// under `plan` (`amp eval --json`), one entry of `amp plan --json`'s
    /// `plans` (extra fields ignored), or a whole `amp plan --json` output,
    /// of which `rank` (1-based, default 1) is taken.
    ///
    /// A `schema_version` at the top, when present, must be 1 or 2: version
    /// 1 files record no setup and read with the default one.
    pub fn from_json_any(text: &str, origin: &str, rank: Option<usize>) -> Result<Plan> {
        Ok(Plan::from_json_recorded(text, origin, rank)?.0)
    }

    /// [`Plan::from_json_any`], whether the file recorded a setup (a plan
    /// without one reads with the default setup), and the model it records
    /// the plan was made for ([`ModelRecord::from_plan_json`]), from one
    /// parse of the file.
    pub fn from_json_recorded(
        text: &str,
        origin: &str,
        rank: Option<usize>,
    ) -> Result<(Plan, bool, Option<ModelRecord>)> {
        let value: serde_json::Value = AmpError::json(text, origin)?;
        let (entry, at) = plan_entry(&value, origin, rank)?;
        check_misspelt_fields(entry, &at, origin)?;
        let pick = |k: &str| {
            entry.get(k).cloned().ok_or_else(|| {
                AmpError::invalid(
                    origin,
                    format!(
                        "no `{k}` field; a plan needs micro_batch, num_micro_batches and stages"
                    ),
                )
            })
        };
        let mut bare = serde_json::json!({
            "micro_batch": pick("micro_batch")?,
            "num_micro_batches": pick("num_micro_batches")?,
            "stages": pick("stages")?,
        });
        if let Some(per) = entry.get("replica_micro_batches") {
            bare["replica_micro_batches"] = per.clone();
        }
        let recorded = entry.get("setup").is_some();
        if let Some(setup) = entry.get("setup") {
            bare["setup"] = setup.clone();
        }
        let plan = serde_path_to_error::deserialize(bare).map_err(|e| {
            AmpError::parse(
                origin,
                format!("{}: {}", field_path(&at, e.path()), e.inner()),
            )
        })?;
        Ok((
            plan,
            recorded,
            ModelRecord::in_plan_json(&value, entry, origin)?,
        ))
    }
}

/// The model a plan was made for, as `amp plan` and `amp export` record it
/// beside the plan (`made_for`). The same layers at another sequence length
/// or with another attention or GeLU kernel are another job, one the plan
/// was not searched for and whose launch files would train something else,
/// so readers compare the model they load with it
/// ([`ModelRecord::differences`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelRecord {
    /// The model's name ([`Model::name`]).
    pub model: String,
    /// Tokens per sample, for a model with a transformer shape.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq_len: Option<u64>,
    /// The attention kernel, where the model says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attention: Option<AttentionKernel>,
    /// The GeLU kernel of a GeLU MLP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gelu: Option<GeluKernel>,
}

/// Attention kernel of a [`ModelRecord`] (amp plan's `--attention`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttentionKernel {
    /// Fused (flash) attention: no `s x s` scores stored.
    Fused,
    /// Scores materialised.
    Explicit,
}

/// GeLU kernel of a [`ModelRecord`] (amp plan's `--gelu`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GeluKernel {
    /// One fused kernel.
    Fused,
    /// Hugging Face's `gelu_new`, written out kernel by kernel.
    Composite,
}

/// One way a loaded model differs from the [`ModelRecord`] of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelDifference {
    /// Another name (recorded, loaded): maybe the same model read from
    /// another source (a zoo name and its Hugging Face config), maybe
    /// another model.
    Name(String, String),
    /// Another sequence length (recorded, loaded).
    SeqLen(u64, Option<u64>),
    /// Another attention kernel (recorded, loaded).
    Attention(AttentionKernel, Option<AttentionKernel>),
    /// Another GeLU kernel (recorded, loaded).
    Gelu(GeluKernel, Option<GeluKernel>),
}

impl std::fmt::Display for ModelDifference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let or_none = |v: Option<String>, none: &str| v.unwrap_or_else(|| none.to_string());
        match self {
            ModelDifference::Name(recorded, loaded) => {
                write!(
                    f,
                    "the plan was made for model `{recorded}`, the model given is `{loaded}`"
                )
            }
            ModelDifference::SeqLen(recorded, loaded) => write!(
                f,
                "the plan was made for sequence length {recorded}, the model given has {}",
                or_none(loaded.map(|l| l.to_string()), "none")
            ),
            ModelDifference::Attention(recorded, loaded) => write!(
                f,
                "the plan was made for {} attention, the model given has {}",
                recorded.name(),
                or_none(
                    loaded.map(|l| format!("{} attention", l.name())),
                    "no attention kernel"
                )
            ),
            ModelDifference::Gelu(recorded, loaded) => write!(
                f,
                "the plan was made for a {} GeLU, the model given has {}",
                recorded.name(),
                or_none(
                    loaded.map(|l| format!("a {} GeLU", l.name())),
                    "no GeLU MLP"
                )
            ),
        }
    }
}

impl AttentionKernel {
    /// The flag value (`--attention fused`).
    pub fn name(self) -> &'static str {
        match self {
            AttentionKernel::Fused => "fused",
            AttentionKernel::Explicit => "explicit",
        }
    }
}

impl GeluKernel {
    /// The flag value (`--gelu composite`).
    pub fn name(self) -> &'static str {
        match self {
            GeluKernel::Fused => "fused",
            GeluKernel::Composite => "composite",
        }
    }
}

impl ModelRecord {
    /// What `model` is, as a plan records it.
    pub fn of(model: &Model) -> ModelRecord {
        ModelRecord {
            model: model.name.clone(),
            seq_len: model.shape.as_ref().map(|s| s.seq_len),
            attention: model.flash_attention().map(|f| {
                if f {
                    AttentionKernel::Fused
                } else {
                    AttentionKernel::Explicit
                }
            }),
            gelu: model.architecture().and_then(|a| match a.activation {
                crate::model::Activation::Gelu => Some(GeluKernel::Fused),
                crate::model::Activation::GeluNew => Some(GeluKernel::Composite),
                _ => None,
            }),
        }
    }

    /// How `model` differs from what the plan was made for; what the
    /// record leaves out (a plan of a layer list records no sequence
    /// length) is not compared.
    pub fn differences(&self, model: &Model) -> Vec<ModelDifference> {
        let loaded = ModelRecord::of(model);
        let mut out = Vec::new();
        if loaded.model != self.model {
            out.push(ModelDifference::Name(self.model.clone(), loaded.model));
        }
        if let Some(r) = self.seq_len.filter(|&r| loaded.seq_len != Some(r)) {
            out.push(ModelDifference::SeqLen(r, loaded.seq_len));
        }
        if let Some(r) = self.attention.filter(|&r| loaded.attention != Some(r)) {
            out.push(ModelDifference::Attention(r, loaded.attention));
        }
        if let Some(r) = self.gelu.filter(|&r| loaded.gelu != Some(r)) {
            out.push(ModelDifference::Gelu(r, loaded.gelu));
        }
        out
    }

    /// The record a plan JSON carries (`made_for`, in the plan entry
    /// [`Plan::from_json_any`] reads or at the top of the file), if any.
    pub fn from_plan_json(
        text: &str,
        origin: &str,
        rank: Option<usize>,
    ) -> Result<Option<ModelRecord>> {
        let value: serde_json::Value = AmpError::json(text, origin)?;
        let (entry, _) = plan_entry(&value, origin, rank)?;
        ModelRecord::in_plan_json(&value, entry, origin)
    }

    /// The record of the plan `entry` of the plan JSON `value`: in the
    /// entry, else at the top.
    fn in_plan_json(
        value: &serde_json::Value,
        entry: &serde_json::Value,
        origin: &str,
    ) -> Result<Option<ModelRecord>> {
        match entry.get("made_for").or_else(|| value.get("made_for")) {
            None => Ok(None),
            Some(r) => serde_path_to_error::deserialize(r.clone())
                .map(Some)
                .map_err(|e| {
                    let field = match e.path().to_string().as_str() {
                        "." => "`made_for`".to_string(),
                        p => format!("`made_for`, at `{p}`"),
                    };
                    AmpError::invalid(
                        origin,
                        format!(
                            "{field}: {}; it records the model the plan was made for (`model`, `seq_len`, `attention`, `gelu`), as amp plan writes it; fix it or delete it",
                            e.inner()
                        ),
                    )
                }),
        }
    }
}

/// The fields a plan entry holds ([`Plan`]'s and the record beside it).
const PLAN_FIELDS: [&str; 6] = [
    "micro_batch",
    "num_micro_batches",
    "replica_micro_batches",
    "stages",
    "setup",
    "made_for",
];

/// Refuses a field of a plan entry that is a misspelling of a plan's own
/// (`setpu`, `replica_micro_batch`): a plan reads past fields it does not
/// know, so such a field would be dropped and the plan priced without it
/// (the default setup, every replica at `num_micro_batches`).
fn check_misspelt_fields(entry: &serde_json::Value, at: &str, origin: &str) -> Result<()> {
    let Some(fields) = entry.as_object() else {
        return Ok(());
    };
    for key in fields.keys() {
        // Every other field amp writes beside a plan (`rank`, `tp`,
        // `breakdown`, ...) is far from these names.
        if PLAN_FIELDS.contains(&key.as_str()) {
            continue;
        }
        let near = PLAN_FIELDS
            .iter()
            .find(|f| crate::error::edit_distance(&key.to_ascii_lowercase(), f) <= 2);
        if let Some(f) = near {
            let place = if at.is_empty() {
                String::new()
            } else {
                format!(" (in `{at}`)")
            };
            return Err(AmpError::invalid(
                origin,
                format!(
                    "unknown field `{key}`{place}; did you mean `{f}`? A plan holds micro_batch, num_micro_batches, stages and optionally replica_micro_batches, setup and made_for; a field amp does not know is otherwise read past, and this one would be lost"
                ),
            ));
        }
    }
    Ok(())
}

/// `path` (of a field inside the plan entry at `entry`) as the file's
/// JSON path in backquotes, e.g. `` `plans[0].stages[1].replicas[0][2].gpu` ``.
fn field_path(entry: &str, path: &serde_path_to_error::Path) -> String {
    let inner = path.to_string();
    let full = match (entry.is_empty(), inner == ".") {
        (true, true) => return "the plan".to_string(),
        (true, false) => inner,
        (false, true) => entry.to_string(),
        (false, false) if inner.starts_with('[') => format!("{entry}{inner}"),
        (false, false) => format!("{entry}.{inner}"),
    };
    format!("`{full}`")
}

/// The plan entry of a plan JSON in any form [`Plan::from_json_any`] reads:
/// entry `rank` of an `amp plan --json` output's `plans`, the object under
/// `plan`, or the whole value; after checking `schema_version`. With it,
/// where it is in the file as a JSON path (`plans[1]`, `plan`; empty for
/// the whole file), for messages.
fn plan_entry<'v>(
    value: &'v serde_json::Value,
    origin: &str,
    rank: Option<usize>,
) -> Result<(&'v serde_json::Value, String)> {
    match value.get("schema_version") {
        None => {}
        Some(v) => match v.as_u64() {
            Some(1) | Some(2) => {}
            _ => {
                return Err(AmpError::invalid(
                    origin,
                    format!(
                        "schema_version {v} is not one this amp reads (1 or {PLAN_SCHEMA_VERSION}); it was written by a newer amp, upgrade amp to read it"
                    ),
                ))
            }
        },
    }
    let entry = match value.get("plans").and_then(|p| p.as_array()) {
        Some(plans) => {
            let r = rank.unwrap_or(1);
            let entry = plans.get(r.wrapping_sub(1)).ok_or_else(|| {
                AmpError::invalid(
                    origin,
                    format!(
                        "asks for plan rank {r} but the file holds {} plans (ranks 1..={})",
                        plans.len(),
                        plans.len()
                    ),
                )
            })?;
            (entry, format!("plans[{}]", r - 1))
        }
        None => match value.get("plan") {
            Some(p) if p.is_object() => (p, "plan".to_string()),
            _ => (value, String::new()),
        },
    };
    Ok(entry)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::builtin as clusters;
    use crate::model::builtin as models;

    fn d(node: usize, gpu: usize) -> Device {
        Device { node, gpu }
    }

    fn two_stage() -> Plan {
        Plan {
            micro_batch: 2,
            num_micro_batches: 4,
            replica_micro_batches: Vec::new(),
            stages: vec![
                Stage {
                    first_layer: 0,
                    end_layer: 15,
                    replicas: vec![vec![d(0, 0), d(0, 1)], vec![d(0, 2), d(0, 3)]],
                },
                Stage {
                    first_layer: 15,
                    end_layer: 30,
                    replicas: vec![vec![d(1, 0), d(1, 1)], vec![d(1, 2), d(1, 3)]],
                },
            ],
            setup: Default::default(),
        }
    }

    #[test]
    fn valid_plan_passes() {
        let p = two_stage();
        p.validate(&models::amp_gpt2(), &clusters::homogeneous())
            .unwrap();
        assert_eq!(p.global_batch(), 16);
        assert_eq!(p.boundaries(), vec![0, 15, 30]);
        assert_eq!(p.uniform_tp(), Some(2));
    }

    #[test]
    fn torchtitan_runs_a_tied_model_without_a_pipeline_only() {
        let (m, c) = (models::amp_gpt2(), clusters::homogeneous());
        assert!(m.layers.iter().any(|l| l.tied_to.is_some()));
        let mut p = two_stage();
        p.setup =
            crate::setup::TrainingSetup::default().on_engine(crate::setup::Engine::Torchtitan);
        let e = p.validate(&m, &c).unwrap_err().to_string();
        assert!(
            e.contains("torchtitan refuses weight tying with pipeline parallelism"),
            "{e}"
        );
        // The same pipeline of an untied model, and the tied model on one
        // stage or under another engine, run.
        let mut untied = m.clone();
        for l in &mut untied.layers {
            l.tied_to = None;
        }
        p.validate(&untied, &c).unwrap();
        let mut one = p.clone();
        one.stages.truncate(1);
        one.stages[0].end_layer = 30;
        one.validate(&m, &c).unwrap();
        p.setup = crate::setup::TrainingSetup::default().on_engine(crate::setup::Engine::Megatron);
        p.validate(&m, &c).unwrap();
    }

    #[test]
    fn misspelt_plan_fields_are_refused_and_others_read_past() {
        let plan = serde_json::to_value(two_stage()).unwrap();
        let with = |key: &str| {
            let mut v = plan.clone();
            let setup = v["setup"].clone();
            v.as_object_mut().unwrap().remove("setup");
            v[key] = setup;
            v.to_string()
        };
        for (key, want) in [("setpu", "setup"), ("Setup", "setup"), ("stage", "stages")] {
            let e = Plan::from_json_str(&with(key), "p.json")
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(&format!("unknown field `{key}`; did you mean `{want}`?")),
                "{e}"
            );
        }
        let mut v = plan.clone();
        v["replica_micro_batch"] = serde_json::json!([4, 4]);
        let wrapped = serde_json::json!({ "plans": [v] }).to_string();
        let e = Plan::from_json_str(&wrapped, "p.json")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(
                "`replica_micro_batch` (in `plans[0]`); did you mean `replica_micro_batches`?"
            ),
            "{e}"
        );
        // Fields of its own, or far from a plan's, are read past.
        assert_eq!(
            Plan::from_json_str(&with("setup"), "p.json").unwrap(),
            two_stage()
        );
        let mut v = plan.clone();
        v["comment"] = "hand-written".into();
        v["rank"] = 1.into();
        assert_eq!(
            Plan::from_json_str(&v.to_string(), "p.json").unwrap(),
            two_stage()
        );
    }

    #[test]
    fn reused_device_is_rejected() {
        let mut p = two_stage();
        p.stages[1].replicas[0][0] = d(0, 0);
        let e = p
            .validate(&models::amp_gpt2(), &clusters::homogeneous())
            .unwrap_err();
        assert!(e.to_string().contains("used twice"), "{e}");
    }

    #[test]
    fn model_records_name_what_differs_and_read_from_any_form() {
        let gpt2 = models::amp_gpt2();
        let rec = ModelRecord::of(&gpt2);
        assert_eq!(rec.seq_len, Some(1024));
        assert!(rec.differences(&gpt2).is_empty());
        let mut other = gpt2.clone();
        other.shape.as_mut().unwrap().seq_len = 2048;
        other.name = "another".into();
        assert_eq!(
            rec.differences(&other),
            vec![
                ModelDifference::Name(gpt2.name.clone(), "another".into()),
                ModelDifference::SeqLen(1024, Some(2048)),
            ]
        );
        // What the record leaves out is not compared; what it holds is,
        // against a model that lacks it too.
        let bare = ModelRecord {
            model: gpt2.name.clone(),
            seq_len: None,
            attention: Some(AttentionKernel::Fused),
            gelu: Some(GeluKernel::Composite),
        };
        let mut layers_only = gpt2.clone();
        layers_only.shape = None;
        let d = bare.differences(&layers_only);
        assert_eq!(
            d,
            vec![
                ModelDifference::Attention(AttentionKernel::Fused, None),
                ModelDifference::Gelu(GeluKernel::Composite, None),
            ]
        );
        assert_eq!(
            d[0].to_string(),
            "the plan was made for fused attention, the model given has no attention kernel"
        );
        // In a plan entry, at the top of an `amp eval --json`, or absent.
        let mut entry = serde_json::to_value(two_stage()).unwrap();
        entry["made_for"] = serde_json::to_value(&rec).unwrap();
        let listed = serde_json::json!({"plans": [entry.clone()]}).to_string();
        assert_eq!(
            ModelRecord::from_plan_json(&listed, "p", Some(1)).unwrap(),
            Some(rec.clone())
        );
        let evaluated =
            serde_json::json!({"plan": two_stage(), "made_for": rec.clone()}).to_string();
        assert_eq!(
            ModelRecord::from_plan_json(&evaluated, "p", None).unwrap(),
            Some(rec)
        );
        let plain = serde_json::to_string(&two_stage()).unwrap();
        assert_eq!(
            ModelRecord::from_plan_json(&plain, "p", None).unwrap(),
            None
        );
        // A record that is not one is an error naming the field.
        entry["made_for"] = serde_json::json!({"model": "m", "seq_len": "long"});
        let e = ModelRecord::from_plan_json(&entry.to_string(), "p", None).unwrap_err();
        assert!(e.to_string().contains("`made_for`"), "{e}");
    }

    #[test]
    fn plans_read_from_any_form() {
        let p = two_stage();
        let bare = serde_json::to_string(&p).unwrap();
        assert_eq!(Plan::from_json_any(&bare, "p", None).unwrap(), p);
        let mut entry: serde_json::Value = serde_json::from_str(&bare).unwrap();
        entry["tp"] = 2.into();
        entry["predicted_iteration_s"] = 1.5.into();
        let out = serde_json::json!({"schema_version": 1, "plans": [entry.clone(), entry]});
        assert_eq!(
            Plan::from_json_any(&out.to_string(), "p", Some(2)).unwrap(),
            p
        );
        let e = Plan::from_json_any(&out.to_string(), "p", Some(3)).unwrap_err();
        assert!(e.to_string().contains("rank 3"), "{e}");
        let e = Plan::from_json_any("{\"micro_batch\": 1}", "p", None).unwrap_err();
        assert!(e.to_string().contains("num_micro_batches"), "{e}");
    }

    #[test]
    fn replicas_may_differ_in_tp_and_micro_batches() {
        let (mut m, c) = (models::amp_gpt2(), clusters::homogeneous());
        let mut p = two_stage();
        p.stages[1].replicas = vec![vec![d(1, 0)], vec![d(1, 1), d(1, 2), d(1, 3)]];
        // A group of 3 does not split GPT-2's 16 heads...
        let e = p.validate(&m, &c).unwrap_err().to_string();
        assert!(
            e.contains("16 attention heads, which tp 3 does not divide"),
            "{e}"
        );
        // Sequence parallelism needs the sequence to divide too.
        let mut sp = two_stage();
        sp.stages[1].replicas = vec![vec![d(1, 0), d(1, 1)], vec![d(1, 2), d(1, 3)]];
        sp.setup.sequence_parallel = true;
        sp.validate(&m, &c).unwrap();
        m.shape.as_mut().unwrap().seq_len = 1023;
        let e = sp.validate(&m, &c).unwrap_err().to_string();
        assert!(e.contains("1023 tokens of a sample over tp 2"), "{e}");
        // ... but splits a layer list that gives no head count.
        m.shape = None;
        p.validate(&m, &c).unwrap();
        assert_eq!(p.stages[1].tp_label(), "1+3");
        assert_eq!((p.stages[1].min_tp(), p.stages[1].max_tp()), (1, 3));
        assert_eq!(p.uniform_tp(), None);
        p.replica_micro_batches = vec![3, 4];
        p.validate(&m, &c).unwrap();
        assert!(p.is_uneven());
        assert_eq!(p.global_batch(), 2 * 7);
        assert_eq!(p.micro_batches_of(0), 3);
        // The JSON form carries the counts (and leaves them out when even).
        let text = serde_json::to_string(&p).unwrap();
        assert_eq!(Plan::from_json_any(&text, "p", None).unwrap(), p);
        assert!(!serde_json::to_string(&two_stage())
            .unwrap()
            .contains("replica_micro_batches"));
        let err = |p: &Plan| p.validate(&m, &c).unwrap_err().to_string();
        let mut bad = p.clone();
        bad.replica_micro_batches = vec![4];
        assert!(err(&bad).contains("1 entries but the plan has 2 replicas"));
        bad.replica_micro_batches = vec![4, 0];
        assert!(err(&bad).contains("gives replica 1 no micro-batch"));
        bad.replica_micro_batches = vec![2, 3];
        assert!(err(&bad).contains("largest entry of replica_micro_batches is 3"));
        bad.replica_micro_batches = Vec::new();
        bad.stages[0].replicas[1] = Vec::new();
        assert!(err(&bad).contains("replica 1"));
    }

    #[test]
    fn gap_in_layers_is_rejected() {
        let mut p = two_stage();
        p.stages[1].first_layer = 16;
        let e = p
            .validate(&models::amp_gpt2(), &clusters::homogeneous())
            .unwrap_err();
        assert!(e.to_string().contains("previous stage ended"), "{e}");
    }

    /// On a plan whose devices are valid, checking all but the devices
    /// gives `validate`'s verdict, its error word for word; it does not
    /// look at the devices (a duplicate passes).
    #[test]
    fn all_but_the_devices_checks_what_validate_checks() {
        let (m, c) = (models::amp_gpt2(), clusters::homogeneous());
        let breaks: Vec<fn(&mut Plan)> = vec![
            |_| {},
            |p| p.stages[1].first_layer = 16,
            |p| p.stages[1].end_layer = 29,
            |p| p.stages[0].end_layer = 0,
            |p| p.micro_batch = 0,
            |p| p.num_micro_batches = limits::MAX_MICRO_BATCHES + 1,
            |p| p.replica_micro_batches = vec![4, 0],
            |p| p.replica_micro_batches = vec![4, 3, 2],
            |p| p.replica_micro_batches = vec![3, 2],
            |p| p.stages[1].replicas.pop().map(drop).unwrap_or(()),
        ];
        for (k, f) in breaks.iter().enumerate() {
            let mut p = two_stage();
            f(&mut p);
            let full = p.validate(&m, &c).map_err(|e| e.to_string());
            let rest = p
                .validate_on_validated_devices(&m)
                .map_err(|e| e.to_string());
            assert_eq!(full, rest, "break {k}");
            assert_eq!(full.is_ok(), k == 0, "break {k}: {full:?}");
        }
        let mut twice = two_stage();
        twice.stages[1].replicas[0][0] = d(0, 0);
        assert!(twice.validate(&m, &c).is_err());
        assert!(twice.validate_on_validated_devices(&m).is_ok());
    }
}

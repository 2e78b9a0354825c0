//! Reading the model, cluster and profile a command works on.

use std::path::{Path, PathBuf};

use amp_core::cluster::{Cluster, ClusterDescription};
use amp_core::cost::amp_paper::{AmpPaper, SplitRule};
use amp_core::cost::device::{DeviceModel, DeviceOptions};
use amp_core::cost::{Calibration, CostModel};
use amp_core::model::{builtin as models, Model};
use amp_data::amp_artifact::{profile_from_npy, Experiment};

use amp_core::plan::{AttentionKernel, GeluKernel, ModelDifference, ModelRecord, Plan};
use amp_core::profile::Profile;
use amp_core::setup::{Precision, TrainingSetup};
use anyhow::{anyhow, bail, Context, Result};

use crate::calibration_arg::read_calibration;
use crate::setup_args::SetupArgs;
use clap::{Args, ValueEnum};

/// Options shared by every command that needs a model, a cluster and
/// profiles.
#[derive(Args, Debug, Clone)]
pub struct InputArgs {
    /// Run one of the AMP paper's experiments on built-in data: sets the
    /// model, cluster, profiles and global batch.
    #[arg(long, value_enum, conflicts_with_all = ["model", "cluster"])]
    pub example: Option<ExampleName>,
    /// Model: a zoo name (llama3-8b, gpt2-xl, gpt2-amp, ...), a Hugging Face
    /// config.json, or a TOML/JSON file with a layer list.
    #[arg(long, required_unless_present_any = ["example", "sailor_data"])]
    pub model: Option<String>,
    /// Sequence length for zoo models and Hugging Face configs.
    #[arg(long)]
    pub seq: Option<u64>,
    /// Attention kernel the model trains with, for zoo models and Hugging
    /// Face configs: fused (FlashAttention, PyTorch's SDPA, Transformer
    /// Engine: no s x s scores stored, the fused kernel priced) or explicit
    /// (scores materialised in memory and in compute). Default: what the
    /// family's usual code runs (fused, except GPT-Neo and the AMP
    /// artifact's layer lists).
    #[arg(long, value_enum, conflicts_with = "example")]
    pub attention: Option<AttentionArg>,
    /// GeLU kernel of a GeLU MLP, for zoo models and Hugging Face configs,
    /// priced where no engine fuses it: fused (one kernel: PyTorch's
    /// F.gelu, `gelu_pytorch_tanh`) or composite (Hugging Face's `gelu_new`
    /// written out: eight kernels, mostly fp32 under autocast). Default:
    /// the config's `activation_function` (composite for GPT-2 and GPT-Neo,
    /// whose default is `gelu_new`; fused otherwise).
    #[arg(long, value_enum, conflicts_with = "example")]
    pub gelu: Option<GeluArg>,
    /// Cluster: shorthand (4xp3.8xlarge+1xg4dn.12xlarge,
    /// 2x8xH100+4x8xA100-80GB@100Gbps), a built-in name (homogeneous,
    /// het-cluster, het-model) or a TOML/JSON file of nodes.
    #[arg(long, required_unless_present_any = ["example", "sailor_data"])]
    pub cluster: Option<String>,
    /// Do not fill missing profile entries from the analytic compute model.
    #[arg(long)]
    pub no_analytic: bool,
    /// Profile: an AMP .npy file, a directory of them, or a TOML/JSON
    /// profile file. Repeat to combine. Built-in AMP models use the
    /// embedded AMP profiles when none is given.
    #[arg(long)]
    pub profile: Vec<PathBuf>,
    /// Cost model: amp (per-device, the default) or amp-paper (the AMP
    /// artifact's equations, for reference).
    #[arg(long, value_enum, default_value_t = CostModelName::Amp)]
    pub cost_model: CostModelName,
    /// How the amp-paper model splits layers: artifact (its own
    /// partitioner, reproduced) or exact (amp's).
    #[arg(long, value_enum)]
    pub partition: Option<PartitionName>,
    #[arg(long, help = crate::calibration_arg::HELP)]
    pub calibration: Option<String>,
    /// Sailor's data folder (profiles.json, llm_info.json, training/,
    /// cluster_config.json, network/). amp eval and amp export: a Sailor
    /// plan_config is priced on the nodes it names with this folder's
    /// model, profiles and network curves (the model is --model or the
    /// plan's folder name, measured/<cluster>/<model>/...); an amp plan made
    /// by amp plan --sailor-data takes the same --model and --cluster. amp
    /// plan: plans --model (a model of training/) on --cluster written in
    /// Sailor's node kinds (8x4xA100-40+24x4xV100-16), in the setup of
    /// Sailor's runs.
    #[arg(long, conflicts_with_all = ["example", "seq"])]
    pub sailor_data: Option<PathBuf>,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExampleName {
    Homogeneous,
    HetCluster,
    HetModel,
}

impl ExampleName {
    /// As the flag takes it (`het-cluster`).
    pub fn name(self) -> &'static str {
        match self {
            ExampleName::Homogeneous => "homogeneous",
            ExampleName::HetCluster => "het-cluster",
            ExampleName::HetModel => "het-model",
        }
    }

    pub fn experiment(self) -> Experiment {
        match self {
            ExampleName::Homogeneous => Experiment::Homogeneous,
            ExampleName::HetCluster => Experiment::HetCluster,
            ExampleName::HetModel => Experiment::HetModel,
        }
    }
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttentionArg {
    /// A fused kernel: no `s x s` scores in memory.
    Fused,
    /// Scores materialised (two batched GEMMs, softmax, dropout).
    Explicit,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum GeluArg {
    /// One fused kernel.
    Fused,
    /// Hugging Face's `gelu_new`, kernel by kernel.
    Composite,
}

impl AttentionArg {
    fn kernel(self) -> AttentionKernel {
        match self {
            AttentionArg::Fused => AttentionKernel::Fused,
            AttentionArg::Explicit => AttentionKernel::Explicit,
        }
    }
    fn of(k: AttentionKernel) -> AttentionArg {
        match k {
            AttentionKernel::Fused => AttentionArg::Fused,
            AttentionKernel::Explicit => AttentionArg::Explicit,
        }
    }
}

impl GeluArg {
    fn kernel(self) -> GeluKernel {
        match self {
            GeluArg::Fused => GeluKernel::Fused,
            GeluArg::Composite => GeluKernel::Composite,
        }
    }
    fn of(k: GeluKernel) -> GeluArg {
        match k {
            GeluKernel::Fused => GeluArg::Fused,
            GeluKernel::Composite => GeluArg::Composite,
        }
    }
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum CostModelName {
    /// The per-device model (`amp_core::cost::device`).
    Amp,
    /// The AMP artifact's equations (`amp_core::cost::amp_paper`).
    #[value(name = "amp-paper")]
    AmpPaper,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionName {
    Exact,
    Artifact,
}

/// Everything a command reads, loaded and checked.
pub struct Loaded {
    pub model: Model,
    pub cluster: Cluster,
    pub profile: Profile,
    /// The global batch the inputs come with: an example's, or that of
    /// the model's Sailor training file.
    pub example_batch: Option<usize>,
    /// The setup the inputs train with when no setup flag is given: that
    /// of Sailor's runs, with `--sailor-data`.
    pub data_setup: Option<amp_core::setup::TrainingSetup>,
    /// The number format the profile's times hold for when the user names
    /// none: the profile's own, fp16 for the AMP artifact's profiles (its
    /// runs trained in fp16), else bf16.
    pub default_precision: Precision,
    /// A GPU of the cluster without bf16 tensor cores, for which the
    /// default precision is fp16 (under torchtitan, which trains in bf16 or
    /// fp32, fp32); `None` where the default is the profile's or the
    /// artifact's.
    pub no_bf16_gpu: Option<String>,
    /// The inputs are the AMP artifact's (its examples or `.npy`
    /// profiles): its runs computed the loss with Megatron-LM's code and
    /// stepped with a fused Adam, the setup's defaults for them when no
    /// engine is named.
    pub artifact_code: bool,
    /// What the input files leave out that the model's runs computed
    /// (Sailor's data), for the command to print as warnings.
    pub notes: Vec<String>,
    /// The hardware catalog the analytic model prices the cluster's GPUs
    /// from: the built-in one, with the cluster file's own `[[gpus]]`.
    pub catalog: amp_catalog::Catalog,
}

impl Loaded {
    /// One line per GPU type of the cluster that its file defines
    /// (`[[gpus]]`), saying what it is: `NAME: FILE: the catalog's X with
    /// ...`, for the command to print beside where the times come from.
    pub fn defined_gpus(&self) -> Vec<String> {
        let builtin = amp_catalog::Catalog::builtin();
        let types = self.cluster.gpu_types();
        self.catalog
            .gpus
            .iter()
            .filter(|g| builtin.gpu(&g.name).is_err() && types.contains(&g.name))
            .map(|g| format!("{}: {}", g.name, g.source))
            .collect()
    }

    /// The setup `args` ask for on these inputs: the AMP artifact's inputs
    /// default to its runs' loss (Megatron-LM's) and Adam (fused) when no
    /// engine is named, as they default to its fp16; other inputs without
    /// an engine train as eager PyTorch does, 16-bit precision by autocast
    /// with an fp32 residual stream (`NumberFormats::with_eager_autocast`,
    /// as the analytic compute model prices them).
    pub fn resolve_setup(
        &self,
        args: &SetupArgs,
        emit: Option<amp_core::setup::Engine>,
    ) -> Result<amp_core::setup::TrainingSetup> {
        let titan = args.engine.or(emit) == Some(amp_core::setup::Engine::Torchtitan);
        if titan && self.no_bf16_gpu.is_some() && args.precision == Some(Precision::Fp16) {
            bail!(
                "--precision fp16: torchtitan trains in bf16 or fp32 (training.mixed_precision_param), and a GPU of this cluster has no bf16 tensor cores; plan it with --precision fp32"
            );
        }
        let default = if titan && self.no_bf16_gpu.is_some() {
            Precision::Fp32
        } else {
            self.default_precision
        };
        let mut s = args.resolve(default, emit, &self.profile)?;
        self.fill_artifact_kernels(&mut s);
        if !self.artifact_code && self.data_setup.is_none() && s.engine.is_none() {
            s.formats = s.formats.with_eager_autocast();
        }
        if s.backward_in_autocast && s.formats.residual_stream.is_none() {
            bail!(
                "--backward-in-autocast describes eager PyTorch's autocast loop, and these inputs train without autocast ({}): drop the flag, or plan a model of your own in 16-bit precision without an engine",
                if self.artifact_code {
                    "the AMP artifact's fp16 DeepSpeed runs"
                } else if self.data_setup.is_some() {
                    "Sailor's runs, as their data records them"
                } else {
                    "fp32"
                }
            );
        }
        Ok(s)
    }

    /// On the AMP artifact's inputs, a setup without an engine that names no
    /// loss or Adam kernel gets its runs' (a plan file written before the
    /// setup named them reads as it was priced), one that names no
    /// gradient reduction their fp32 all-reduce of 16-bit gradients, and
    /// under 1F1B their DeepSpeed engine's lockstep exchange.
    pub fn fill_artifact_kernels(&self, s: &mut amp_core::setup::TrainingSetup) {
        if self.artifact_code && s.engine.is_none() {
            let runs = amp_core::cost::amp_paper::artifact_setup();
            s.cross_entropy = s.cross_entropy.or(runs.cross_entropy);
            s.optimizer_step = s.optimizer_step.or(runs.optimizer_step);
            if s.formats.gradient_reduction.is_none() {
                let filled = amp_core::setup::NumberFormats {
                    gradient_reduction: runs.formats.gradient_reduction,
                    ..s.formats
                };
                // Only where it widens the gradients (not bf16's fp32 ones).
                if filled.fp32_gradient_reduction() {
                    s.formats = filled;
                }
            }
            if s.schedule == amp_core::schedule::Schedule::OneFOneB {
                s.stage_exchange = s.stage_exchange.or(runs.stage_exchange);
            }
        }
    }
}

/// The amp cost model with the constants `calibration`: what `--cost-model
/// amp` prices with, under `--calibration` or another set.
pub fn device_model(calibration: Calibration) -> DeviceModel {
    DeviceModel::new(DeviceOptions {
        calibration,
        ..Default::default()
    })
}

/// [`device_model`] as the CLI's commands take a cost model.
pub fn amp_model(calibration: Calibration) -> Box<dyn CostModel> {
    Box::new(device_model(calibration))
}

impl InputArgs {
    /// The amp model's calibration (`--calibration`, fitted by default);
    /// `None` for the amp-paper model, which has none.
    pub fn calibration(&self) -> Result<Option<Calibration>> {
        match (self.cost_model, &self.calibration) {
            (CostModelName::AmpPaper, Some(_)) => bail!(
                "--calibration sets constants of the amp cost model; the amp-paper model has none. \
                 Drop --calibration, or use --cost-model amp"
            ),
            (CostModelName::AmpPaper, None) => Ok(None),
            (CostModelName::Amp, None) => Ok(Some(Calibration::FITTED)),
            (CostModelName::Amp, Some(spec)) => Ok(Some(read_calibration(spec)?)),
        }
    }

    pub fn cost_model(&self) -> Result<Box<dyn CostModel>> {
        match self.cost_model {
            CostModelName::Amp => Ok(amp_model(self.calibration()?.unwrap_or_default())),
            CostModelName::AmpPaper => Ok(Box::new(AmpPaper {
                split: match self.partition {
                    Some(PartitionName::Exact) => SplitRule::Exact,
                    _ => SplitRule::Artifact,
                },
            })),
        }
    }

    pub fn load(&self) -> Result<Loaded> {
        // Before anything is read or printed: a bad --calibration is a
        // usage error.
        self.calibration()?;
        if let Some(dir) = &self.sailor_data {
            for (given, flag) in [
                (self.attention.is_some(), "--attention"),
                (self.gelu.is_some(), "--gelu"),
            ] {
                if given {
                    bail!(
                        "{flag} does not apply with --sailor-data: Sailor's llm_info.json and profiles give the sizes and times of its runs; drop {flag}"
                    );
                }
            }
            return self.load_sailor_scenario(dir);
        }
        if let Some(ex) = self.example {
            let e = ex.experiment();
            // The examples are the artifact's layer lists, whose activation
            // sizes fix their sequence length: another one is not theirs.
            let fixed = e.model().shape.as_ref().map(|s| s.seq_len);
            if let Some(s) = self.seq.filter(|&s| Some(s) != fixed) {
                match fixed {
                    Some(f) => bail!(
                        "--example {} is the AMP artifact's layer list at a fixed sequence length ({f}), not {s}: leave --seq out, or plan a zoo model at that length on its cluster (--model M --seq {s} --cluster {})",
                        ex.name(),
                        ex.name()
                    ),
                    None => bail!(
                        "--example {} is the AMP artifact's layer list, which has no sequence length (its activation sizes are fixed): leave --seq out",
                        ex.name()
                    ),
                }
            }
            let mut profile = e.profile();
            for p in &self.profile {
                profile.merge(read_profile(p, &e.model())?);
            }
            return Ok(Loaded {
                no_bf16_gpu: None,
                default_precision: profile.precision.unwrap_or(Precision::Fp16),
                artifact_code: true,
                model: e.model(),
                cluster: e.cluster(),
                profile,
                example_batch: Some(e.global_batch()),
                data_setup: None,
                notes: Vec::new(),
                catalog: amp_catalog::Catalog::builtin(),
            });
        }
        let model = load_model(
            self.model.as_deref().unwrap_or_default(),
            self.seq,
            amp_catalog::Kernels {
                fused_attention: self.attention.map(|a| a == AttentionArg::Fused),
                gelu_new: self.gelu.map(|g| g == GeluArg::Composite),
            },
        )?;
        let (mut cluster, catalog) = load_cluster(self.cluster.as_deref().unwrap_or_default())?;
        // A cluster file may leave GPU memory out: take it from the catalog
        // when the GPU is known there, so that plans that do not fit are
        // refused.
        for node in &mut cluster.nodes {
            if node.gpu_memory_bytes.is_none() {
                if let Ok(gpu) = catalog.gpu(&node.gpu_type) {
                    node.gpu_memory_bytes = Some(gpu.memory_bytes());
                }
            }
        }
        let mut profile = Profile::default();
        let mut amp_npy = false;
        for p in &self.profile {
            amp_npy |= p.is_dir() || extension(p) == "npy";
            profile.merge(read_profile(p, &model)?);
        }
        // Each file was checked on its own; two files may still time the
        // same (GPU, tp, micro-batch).
        profile.validate("the --profile files together").context(
            "two --profile files give times for the same GPU, tp and micro-batch; keep one",
        )?;
        if self.profile.is_empty() {
            if let Some(p) = builtin_profile(&model) {
                amp_npy = true;
                profile = p;
            }
        }
        // bf16 where every GPU has it, else fp16 (Volta and Turing), which
        // a GPU without bf16 tensor cores trains in.
        let no_bf16_gpu = cluster.gpu_types().into_iter().find(|g| {
            catalog
                .gpu(g)
                .is_ok_and(|gpu| gpu.lacks(Precision::Bf16).is_some())
        });
        let no_bf16_gpu = no_bf16_gpu.filter(|_| profile.precision.is_none() && !amp_npy);
        let default_precision = profile
            .precision
            .unwrap_or(if amp_npy || no_bf16_gpu.is_some() {
                Precision::Fp16
            } else {
                Precision::Bf16
            });
        profile
            .check_layers(model.num_layers(), "profile")
            .context("the profile does not fit the model")?;
        Ok(Loaded {
            model,
            cluster,
            profile,
            example_batch: None,
            default_precision,
            no_bf16_gpu,
            artifact_code: amp_npy,
            data_setup: None,
            notes: Vec::new(),
            catalog,
        })
    }

    /// `amp plan --sailor-data DIR --model M --cluster KINDS`: Sailor's model,
    /// profile and runs' setup, on nodes of Sailor's kinds with its network
    /// curves.
    fn load_sailor_scenario(&self, dir: &Path) -> Result<Loaded> {
        let files = read_sailor_folder(dir)?;
        let folder = sailor_folder(&files, dir)?;
        let known = folder
            .training
            .keys()
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        let (Some(name), Some(spec)) = (&self.model, &self.cluster) else {
            bail!("amp plan with --sailor-data needs --model (one of {known}) and --cluster in Sailor's node kinds, e.g. --cluster 8x4xA100-40+24x4xV100-16");
        };
        let m = folder.model(name)?;
        let cluster = folder
            .cluster(spec)
            .with_context(|| format!("--cluster {spec} with --sailor-data"))?;
        let mut notes = m.notes;
        notes.extend(folder.cluster_notes(spec)?);
        let mut profile = m.profile;
        for p in &self.profile {
            profile.merge(read_profile(p, &m.model)?);
        }
        Ok(Loaded {
            default_precision: profile.precision.unwrap_or(Precision::Fp16),
            no_bf16_gpu: None,
            artifact_code: false,
            example_batch: folder
                .training
                .get(&m.name)
                .and_then(|t| t.global_batch_size),
            model: m.model,
            cluster,
            profile,
            data_setup: Some(m.setup),
            notes,
            catalog: amp_catalog::Catalog::builtin(),
        })
    }

    /// [`InputArgs::load`], at the sequence length and kernels the plan at
    /// `path` was made for where the flags leave them out: a plan made with
    /// `--seq 1024` is priced and exported at 1024 without a second
    /// `--seq`, as it keeps its training setup. A flag that says otherwise
    /// is refused by [`InputArgs::check_made_for`].
    fn load_made_for(&self, path: &Path, rank: usize) -> Result<Loaded> {
        let loaded = self.load()?;
        // An example's model is fixed (load refuses another --seq).
        if self.example.is_some() {
            return Ok(loaded);
        }
        let origin = path.display().to_string();
        let Ok(text) = read_text(path) else {
            // load_plan says what is wrong with the file.
            return Ok(loaded);
        };
        let Ok(Some(record)) = ModelRecord::from_plan_json(&text, &origin, Some(rank)) else {
            return Ok(loaded);
        };
        let differences = record.differences(&loaded.model);
        if differences
            .iter()
            .any(|d| matches!(d, ModelDifference::Name(..)))
        {
            // Another model, or the same one by another name: nothing to
            // take from the record; check_made_for says what differs.
            return Ok(loaded);
        }
        let mut again = self.clone();
        for d in differences {
            match d {
                ModelDifference::SeqLen(r, _) if self.seq.is_none() => again.seq = Some(r),
                ModelDifference::Attention(r, _) if self.attention.is_none() => {
                    again.attention = Some(AttentionArg::of(r))
                }
                ModelDifference::Gelu(r, _) if self.gelu.is_none() => {
                    again.gelu = Some(GeluArg::of(r))
                }
                _ => {}
            }
        }
        if (again.seq, again.attention, again.gelu) == (self.seq, self.attention, self.gelu) {
            return Ok(loaded);
        }
        again.load().with_context(|| {
            format!(
                "{origin}: reading the model again as the plan records it was made for (`made_for`: {})",
                record_summary(&record)
            )
        })
    }

    /// Refuses a model other than the one the plan was made for in its
    /// sequence length or kernels (another job: its price and launch
    /// files would be of something else), and notes another name (the same
    /// model may come from a zoo name or its Hugging Face config).
    fn check_made_for(&self, loaded: &mut Loaded, record: &ModelRecord) -> Result<()> {
        let differences = record.differences(&loaded.model);
        let mut renamed = None;
        let (mut what, mut given, mut wanted, mut keys) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for d in &differences {
            // The flag given, the flag the plan wants, and that flag as a
            // runs file spells it.
            let (flag, want, key) = match d {
                ModelDifference::Name(..) => {
                    renamed = Some(d.to_string());
                    continue;
                }
                ModelDifference::SeqLen(r, _) => (
                    self.seq.map(|s| format!("--seq {s}")),
                    format!("--seq {r}"),
                    format!("seq = {r}"),
                ),
                ModelDifference::Attention(r, _) => (
                    self.attention
                        .map(|a| format!("--attention {}", a.kernel().name())),
                    format!("--attention {}", r.name()),
                    format!("attention = \"{}\"", r.name()),
                ),
                ModelDifference::Gelu(r, _) => (
                    self.gelu.map(|g| format!("--gelu {}", g.kernel().name())),
                    format!("--gelu {}", r.name()),
                    format!("gelu = \"{}\"", r.name()),
                ),
            };
            what.push(d.to_string());
            given.extend(flag);
            wanted.push(want);
            keys.push(key);
        }
        if what.is_empty() {
            if let Some(note) = renamed {
                let note = format!(
                    "{note}; pricing it on `{}` as given (same sequence length and kernels)",
                    loaded.model.name
                );
                if !loaded.notes.contains(&note) {
                    loaded.notes.push(note);
                }
            }
            return Ok(());
        }
        let another_model = renamed.is_some();
        let mut message = renamed
            .into_iter()
            .chain(what)
            .collect::<Vec<_>>()
            .join("; ");
        if another_model {
            message += ": give the model the plan was made for, or run amp plan again for this one";
        } else if given.is_empty() {
            message += &format!(
                ": give the model the plan was made for ({}; in a runs file {}), or run amp plan again for this one",
                wanted.join(" "),
                keys.join(", ")
            );
        } else {
            message += &format!(
                ": {} would price and launch another job than the one planned; drop it (or give {}), or run amp plan again with it",
                given.join(" "),
                wanted.join(" ")
            );
        }
        bail!(message)
    }

    /// Under Megatron-LM, or DeepSpeed running Megatron-DeepSpeed's GPT
    /// (not Hugging Face's blocks, `--block-kernels eager`, whose SDPA
    /// fuses it anyway), on a cluster with a GPU FlashAttention does
    /// not run on (before Ampere; [`amp_catalog::Gpu::runs_flash_attention`]),
    /// the engine runs its unfused attention, scores materialised, on every
    /// rank (one model configuration for all). A model whose attention is
    /// fused by default (a zoo model's, a Hugging Face config's; not when
    /// `--attention` names one) is read again with explicit attention, so
    /// that memory, time and export (`--attention-backend unfused`) agree.
    /// Returns the note to print when it is.
    pub fn attention_for_engine(
        &self,
        loaded: &mut Loaded,
        setup: &TrainingSetup,
    ) -> Result<Option<String>> {
        if self.attention.is_some() || self.example.is_some() {
            return Ok(None);
        }
        let Some(unfused) = unfused_attention(loaded, setup) else {
            return Ok(None);
        };
        let record = ModelRecord::of(&loaded.model);
        let mut again = self.clone();
        again.attention = Some(AttentionArg::Explicit);
        again.seq = again.seq.or(record.seq_len);
        again.gelu = again.gelu.or(record.gelu.map(GeluArg::of));
        let notes = std::mem::take(&mut loaded.notes);
        *loaded = again
            .load()
            .context("reading the model again with explicit attention")?;
        loaded.notes = notes;
        Ok(Some(format!(
            "{unfused}; priced so, and exported with --attention-backend unfused (--attention fused prices a fused kernel instead)"
        )))
    }

    /// Reads the plan at `path` (any form `Plan::from_json_any` takes, plan
    /// `rank` of an `amp plan --json` output), checks it against the loaded
    /// model and cluster, and fills the profile for its micro-batch size.
    ///
    /// The plan's recorded training setup is the one it is priced and
    /// exported with; setup flags only fill in a plan that records none
    /// (schema version 1, or written by hand).
    pub fn load_plan(
        &self,
        loaded: &mut Loaded,
        path: &Path,
        rank: usize,
        setup: &SetupArgs,
        emit: Option<amp_core::setup::Engine>,
    ) -> Result<Plan> {
        let origin = path.display().to_string();
        let text = read_text(path)?;
        if is_sailor_plan(&text) {
            let found = find_sailor_data(path)
                .map(|d| format!(" (one is at {})", d.display()))
                .unwrap_or_default();
            bail!(
                "{origin} is a Sailor plan_config (it has `pipeline_list`): amp prices it on the nodes it names, with Sailor's data; give --sailor-data DIR{found} instead of --cluster"
            );
        }
        let (mut plan, recorded, made_for) = Plan::from_json_recorded(&text, &origin, Some(rank))?;
        let attention_recorded = made_for.as_ref().is_some_and(|r| r.attention.is_some());
        if let Some(record) = made_for {
            self.check_made_for(loaded, &record).with_context(|| {
                format!("{origin}: the plan records the model it was made for (`made_for`)")
            })?;
        }
        let given = setup.given();
        if recorded && !given.is_empty() {
            bail!(
                "{origin}: the plan records its training setup ({}), so {} would price a different job; edit its `setup`, or run amp plan again with those flags",
                plan.setup.summary(),
                given.join(", ")
            );
        }
        if recorded {
            loaded.fill_artifact_kernels(&mut plan.setup);
        } else {
            let s = loaded.resolve_setup(setup, emit)?;
            plan.setup = s.for_pipeline(plan.stages.len() / s.virtual_stages().max(1));
        }
        // A plan that records its attention is priced with it, and told
        // when its engine will run another.
        if !attention_recorded {
            if let Some(note) = self.attention_for_engine(loaded, &plan.setup)? {
                loaded.notes.push(note);
            }
        } else if let Some(unfused) = unfused_attention(loaded, &plan.setup) {
            loaded.notes.push(format!(
                "the plan records fused attention, but {unfused}; priced as recorded: run amp plan again on this cluster to price the attention that runs"
            ));
        }
        plan.validate(&loaded.model, &loaded.cluster)
            .with_context(|| {
                format!(
                    "{origin}: the plan cannot run model `{}` on cluster `{}` as it stands",
                    loaded.model.name, loaded.cluster.name
                )
            })?;
        let recorded_in = recorded.then_some(origin.as_str());
        self.complete_profile(loaded, &[plan.micro_batch], &plan.setup, recorded_in)?;
        Ok(plan)
    }

    /// Fills the (GPU type, tp) pairs the profile lacks from the analytic
    /// compute model at the given micro-batch sizes, then checks that every
    /// GPU type of the cluster is covered. A precision a GPU of the cluster
    /// cannot run (profiled or not) is refused first, saying what changes
    /// it: `--precision`, or for a setup `recorded_in` a plan file (which no
    /// flag changes), planning again or editing the file.
    pub fn complete_profile(
        &self,
        loaded: &mut Loaded,
        micro_batches: &[usize],
        setup: &TrainingSetup,
        recorded_in: Option<&str>,
    ) -> Result<()> {
        if let Some((why, instead)) =
            amp_catalog::unsupported_precision(&loaded.cluster, setup, &loaded.catalog)
        {
            let precision = setup.formats.compute;
            match recorded_in {
                Some(origin) => bail!(
                    "{origin}: the plan records precision {precision}: {why}; run amp plan again on this cluster, or edit the plan's `setup`"
                ),
                None => bail!("precision {precision}: {why}; plan it with --precision {instead}"),
            }
        }
        // A profile names its GPUs as a user would (`H100`, `h100-sxm`),
        // the cluster by the catalog's names: the same GPU under an alias
        // is that GPU, not another type the analytic model would price.
        // (Not where the profile also has entries under the catalog's
        // name, which stay the ones read.)
        let types = loaded.cluster.gpu_types();
        let named = loaded.profile.gpu_types();
        for e in &mut loaded.profile.entries {
            if types.contains(&e.gpu) {
                continue;
            }
            if let Ok(gpu) = loaded.catalog.gpu(&e.gpu) {
                if types.contains(&gpu.name) && !named.contains(&gpu.name) {
                    e.gpu = gpu.name.clone();
                }
            }
        }
        if !self.no_analytic {
            amp_catalog::fill_missing(
                &loaded.model,
                &loaded.cluster,
                &mut loaded.profile,
                micro_batches,
                setup,
                &loaded.catalog,
            )
            .context(
                "cannot fill the profile from the analytic compute model (or pass --profile)",
            )?;
        }
        loaded
            .profile
            .check_covers(&loaded.cluster)
            .map_err(|e| anyhow!("{e} (pass --profile with its times, or leave --no-analytic out)"))
    }
}

/// Where Megatron-LM or DeepSpeed (whose pipeline GPT is
/// Megatron-DeepSpeed's) would run their unfused attention on a model
/// whose attention is fused: a GPU of the cluster FlashAttention does not
/// run on at the setup's precision ([`amp_catalog::Gpu::runs_flash_attention`]).
/// Says so, naming the engine and why. Not where DeepSpeed runs Hugging
/// Face's own blocks (`--block-kernels eager`): their attention is PyTorch's
/// SDPA, which runs its memory-efficient kernel where FlashAttention does
/// not (fp32 inputs, GPUs before Ampere), as the analytic model prices a
/// fused attention there.
fn unfused_attention(loaded: &Loaded, setup: &TrainingSetup) -> Option<String> {
    use amp_core::setup::Engine;
    let engine = setup
        .engine
        .filter(|e| matches!(e, Engine::Megatron | Engine::DeepSpeed))
        .filter(|&e| !(e == Engine::DeepSpeed && setup.eager_blocks()))?;
    if loaded.model.flash_attention() != Some(true) {
        return None;
    }
    let precision = setup.formats.compute;
    let gpu = loaded.cluster.gpu_types().into_iter().find(|g| {
        loaded
            .catalog
            .gpu(g)
            .is_ok_and(|gpu| !gpu.runs_flash_attention(precision))
    })?;
    let why = if precision.is_half() {
        format!("FlashAttention needs an Ampere or later GPU, and {gpu} is not one")
    } else {
        format!("FlashAttention needs 16-bit inputs, and the plan is in {precision}")
    };
    Some(format!(
        "{} runs its unfused attention (scores materialised) on every GPU here: {why}",
        engine.name()
    ))
}

/// `gpt3-6.7b, sequence length 1024, fused attention`.
fn record_summary(r: &ModelRecord) -> String {
    let mut parts = vec![format!("`{}`", r.model)];
    if let Some(s) = r.seq_len {
        parts.push(format!("sequence length {s}"));
    }
    if let Some(a) = r.attention {
        parts.push(format!("{} attention", a.name()));
    }
    if let Some(g) = r.gelu {
        parts.push(format!("{} GeLU", g.name()));
    }
    parts.join(", ")
}

/// Whether `text` is a Sailor `plan_config` (a JSON object with
/// `pipeline_list`) rather than an amp plan.
pub fn is_sailor_plan(text: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .is_some_and(|v| v.get("pipeline_list").is_some())
}

/// The nearest folder above `plan` that holds Sailor's data
/// (`profiles.json` and `llm_info.json`), as Sailor's own repository keeps
/// its measured plans.
fn find_sailor_data(plan: &Path) -> Option<PathBuf> {
    let abs = std::fs::canonicalize(plan).ok()?;
    abs.ancestors()
        .skip(1)
        .find(|d| d.join("profiles.json").is_file() && d.join("llm_info.json").is_file())
        .map(Path::to_path_buf)
}

/// The shared files of `--sailor-data dir`, parsed.
fn sailor_folder<'a>(
    files: &'a amp_data::DatasetFiles,
    dir: &Path,
) -> Result<amp_data::SailorFolder<'a>> {
    // A folder with every file Sailor's data needs whose file does not
    // parse is Sailor's, broken: the cause below names the file and the
    // place, and "not a Sailor data folder" would send the user looking
    // for another folder.
    let complete = amp_data::SailorFolder::REQUIRED_FILES
        .iter()
        .all(|rel| files.files.contains_key(*rel));
    amp_data::SailorFolder::read(files).with_context(|| match complete {
        true => format!(
            "--sailor-data {}: one of Sailor's data files in it cannot be read; mend the file named below",
            dir.display()
        ),
        false => format!(
            "--sailor-data {} is not a Sailor data folder",
            dir.display()
        ),
    })
}

/// What a Sailor plan's pricing reads from Sailor's data folder: its shared
/// files, not the measured runs.
fn read_sailor_folder(dir: &Path) -> Result<amp_data::DatasetFiles> {
    let mut files = amp_data::DatasetFiles {
        root: dir.display().to_string(),
        ..Default::default()
    };
    let mut add = |rel: String| -> Result<()> {
        let p = dir.join(&rel);
        if p.is_file() {
            let bytes =
                std::fs::read(&p).with_context(|| format!("cannot read {}", p.display()))?;
            files.files.insert(rel, bytes);
        }
        Ok(())
    };
    for rel in amp_data::SailorFolder::REQUIRED_FILES
        .into_iter()
        .chain(["cluster_config.json"])
    {
        add(rel.to_string())?;
    }
    if let Ok(entries) = std::fs::read_dir(dir.join("training")) {
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().to_string())
            .filter(|n| n.to_ascii_lowercase().ends_with(".json"))
            .collect();
        names.sort();
        for n in names {
            add(format!("training/{n}"))?;
        }
    }
    Ok(files)
}

impl InputArgs {
    /// The inputs and the plan of a command that prices or exports one
    /// plan: an amp plan on `--model`/`--cluster`/`--example`, or with
    /// `--sailor-data` a Sailor plan file on the nodes it names. Also
    /// returns what the reader repaired, for the caller to warn about.
    pub fn load_with_plan(
        &self,
        path: &Path,
        rank: usize,
        setup: &SetupArgs,
        emit: Option<amp_core::setup::Engine>,
    ) -> Result<(Loaded, Plan, Vec<String>)> {
        let Some(dir) = &self.sailor_data else {
            let mut loaded = self.load_made_for(path, rank)?;
            let plan = self.load_plan(&mut loaded, path, rank, setup, emit)?;
            let notes = std::mem::take(&mut loaded.notes);
            return Ok((loaded, plan, notes));
        };
        let origin = path.display().to_string();
        let text = read_text(path)?;
        if !is_sailor_plan(&text) {
            // An amp plan made on Sailor's scenario (`amp plan --sailor-data`):
            // the same model and nodes, then the plan as any amp plan.
            if self.cluster.is_none() {
                bail!("{origin} is an amp plan, not a Sailor plan_config (no `pipeline_list`): with --sailor-data give the --model and --cluster it was planned on (Sailor's node kinds, e.g. --cluster 8x4xA100-40+24x4xV100-16), or drop --sailor-data and give amp's --model and --cluster");
            }
            let mut loaded = self.load()?;
            let plan = self.load_plan(&mut loaded, path, rank, setup, emit)?;
            let notes = std::mem::take(&mut loaded.notes);
            return Ok((loaded, plan, notes));
        }
        if self.cluster.is_some() {
            bail!("--cluster does not apply to a Sailor plan: it is priced on the nodes it names; drop --cluster");
        }
        let given = setup.given();
        if !given.is_empty() {
            bail!(
                "{} do not apply to a Sailor plan: it is priced in the setup of Sailor's runs (from its llm_info.json); drop them",
                given.join(", ")
            );
        }
        let files = read_sailor_folder(dir)?;
        let folder = sailor_folder(&files, dir)?;
        let known = || {
            folder
                .training
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        };
        let name = match &self.model {
            Some(m) => m.clone(),
            None => {
                // The model folder of Sailor's layout,
                // measured/<cluster>/<model>/...: the nearest folder name
                // that names a model.
                let abs = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
                abs.ancestors()
                    .skip(1)
                    .filter_map(|d| d.file_name().map(|n| n.to_string_lossy().to_string()))
                    .find(|n| {
                        amp_data::sailor::match_model_name(n, folder.training.keys().map(|k| k.as_str()))
                            .is_some()
                    })
                    .ok_or_else(|| {
                        anyhow!(
                            "{origin}: no folder above it names a model of {}/training ({}); give --model NAME",
                            dir.display(),
                            known()
                        )
                    })?
            }
        };
        let m = folder.model(&name)?;
        let mut run = folder.run(&text, &origin, &m)?;
        let mut warnings = m.notes.clone();
        warnings.append(&mut run.warnings);
        let mut profile = m.profile;
        for p in &self.profile {
            profile.merge(read_profile(p, &m.model)?);
        }
        let mut loaded = Loaded {
            no_bf16_gpu: None,
            default_precision: profile.precision.unwrap_or(Precision::Fp16),
            artifact_code: false,
            model: m.model,
            cluster: run.cluster,
            profile,
            example_batch: None,
            data_setup: Some(run.plan.setup),
            notes: Vec::new(),
            catalog: amp_catalog::Catalog::builtin(),
        };
        self.complete_profile(&mut loaded, &[run.plan.micro_batch], &run.plan.setup, None)?;
        Ok((loaded, run.plan, warnings))
    }
}

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

fn extension(path: &Path) -> String {
    path.extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase()
}

/// The model `spec` names (a file or a zoo name) at sequence `seq`; with
/// `kernels`, a zoo model or Hugging Face config built with that attention
/// or GeLU (a layer list fixes its own and is refused).
pub fn load_model(spec: &str, seq: Option<u64>, kernels: amp_catalog::Kernels) -> Result<Model> {
    let refuse_layer_list = |what: &str| -> Result<()> {
        if kernels.fused_attention.is_some() {
            bail!(
                "--attention applies to zoo models and Hugging Face configs; {what} is a layer list whose activation sizes fix its attention (set `architecture.flash_attention` and the stored activations in the file instead), so drop --attention"
            );
        }
        if kernels.gelu_new.is_some() {
            bail!(
                "--gelu applies to zoo models and Hugging Face configs; {what} is a layer list whose times and activation sizes fix its kernels, so drop --gelu"
            );
        }
        Ok(())
    };
    let path = Path::new(spec);
    if path.is_file() {
        let text = read_text(path)?;
        let origin = path.display().to_string();
        return Ok(match extension(path).as_str() {
            "toml" => {
                refuse_layer_list(&format!("`{origin}`"))?;
                Model::from_toml_str(&text, &origin)?
            }
            // A layer list has `layers`; anything else is taken for a
            // Hugging Face config.json.
            "json" if text.contains("\"layers\"") => {
                refuse_layer_list(&format!("`{origin}`"))?;
                Model::from_json_str(&text, &origin)?
            }
            "json" => amp_catalog::model_from_hf_config_with(&text, &origin, seq, kernels)?,
            other => bail!(
                "{origin}: unknown model file type `.{other}`; use a .toml or .json layer list"
            ),
        });
    }
    // The rule for names: `gpt2-amp` and `transgan-amp` (or `transgan`,
    // which the zoo lacks) are the AMP artifact's layer lists at their fixed
    // sequence length; every other name, `gpt2` included, is the zoo's
    // architecture at --seq (or its default), whatever --seq says.
    if spec.ends_with("-amp") || spec == "transgan" {
        if let Some(m) = models::by_name(spec) {
            refuse_layer_list(&format!("`{spec}` (the AMP artifact's)"))?;
            if let Some(s) = seq {
                let fixed = m.shape.as_ref().map(|sh| sh.seq_len);
                if fixed != Some(s) {
                    bail!(
                        "`{spec}` is the AMP artifact's layer list with a fixed sequence length{}; leave --seq out, or use a zoo model (e.g. gpt2) for another length",
                        fixed.map_or(String::new(), |f| format!(" ({f})"))
                    );
                }
            }
            return Ok(m);
        }
    }
    if let Some(s) = seq {
        if s > amp_core::limits::MAX_SEQ {
            bail!(
                "--seq {s} is above the limit of {} tokens",
                amp_core::limits::MAX_SEQ
            );
        }
    }
    if kernels != amp_catalog::Kernels::default() {
        if let Some(mut arch) = amp_catalog::zoo_arch(spec) {
            arch.apply(kernels, &format!("model `{spec}`"))?;
            return Ok(arch.build(seq)?);
        }
    }
    // Only an unknown name may have meant a file.
    let model = amp_catalog::zoo_model(spec, seq).map_err(|e| match e {
        amp_catalog::CatalogError::Unknown { .. } => {
            anyhow!("{e} (or give a model file: no file `{spec}` exists)")
        }
        other => anyhow!(other),
    })?;
    // A zoo name without an architecture is one of the AMP artifact's
    // layer lists.
    refuse_layer_list(&format!("`{spec}` (the AMP artifact's)"))?;
    Ok(model)
}

/// The cluster `spec` names (a file, a built-in name or a shorthand) and the
/// catalog its GPUs are priced from: the built-in one, with a file's own
/// `[[gpus]]` added.
pub fn load_cluster(spec: &str) -> Result<(Cluster, amp_catalog::Catalog)> {
    let path = Path::new(spec);
    let builtin = amp_catalog::Catalog::builtin();
    if path.is_file() {
        let text = read_text(path)?;
        let origin = path.display().to_string();
        let d = match extension(path).as_str() {
            "toml" => ClusterDescription::from_toml_str(&text, &origin)?,
            "json" => ClusterDescription::from_json_str(&text, &origin)?,
            other => bail!("{origin}: unknown cluster file type `.{other}`; use .toml or .json"),
        };
        let catalog = builtin.with_definitions(&d.gpus, &origin)?;
        return Ok((d.cluster, catalog));
    }
    if let Some(e) = Experiment::from_name(spec) {
        return Ok((e.cluster(), builtin));
    }
    let cluster = amp_catalog::parse_cluster(spec).map_err(|e| {
        anyhow!("{e} (a cluster is a shorthand like 2x8xH100+1xp3.8xlarge, a built-in name: homogeneous, het-cluster, het-model, or a .toml/.json file)")
    })?;
    Ok((cluster, builtin))
}

/// The embedded AMP profiles of a built-in AMP model.
fn builtin_profile(model: &Model) -> Option<Profile> {
    Experiment::ALL
        .into_iter()
        .find(|e| e.model() == *model)
        .map(|e| e.profile())
}

fn npy_files(dir: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let mut files = Vec::new();
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))?;
    for entry in entries {
        let path = entry?.path();
        if extension(&path) == "npy" {
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            let bytes =
                std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
            files.push((name, bytes));
        }
    }
    files.sort();
    Ok(files)
}

/// Reads a profile. For AMP `.npy` files the model name in the file name
/// must match a file set whose layer count fits the model.
pub fn read_profile(path: &Path, model: &Model) -> Result<Profile> {
    let origin = path.display().to_string();
    let npy = if path.is_dir() {
        npy_files(path)?
    } else if extension(path) == "npy" {
        let bytes = std::fs::read(path).with_context(|| format!("cannot read {origin}"))?;
        vec![(
            path.file_name().unwrap().to_string_lossy().to_string(),
            bytes,
        )]
    } else {
        let text = read_text(path)?;
        return Ok(match extension(path).as_str() {
            "toml" => Profile::from_toml_str(&text, &origin)?,
            "json" => Profile::from_json_str(&text, &origin)?,
            other => bail!("{origin}: unknown profile type `.{other}`; use AMP .npy files, a directory of them, or .toml/.json"),
        });
    };
    if npy.is_empty() {
        bail!("{origin}: no .npy profile files found");
    }
    let refs: Vec<(&str, &[u8])> = npy
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    let mut names: Vec<String> = npy
        .iter()
        .filter_map(|(n, _)| amp_data::npy::parse_file_name(n).map(|x| x.0))
        .collect();
    names.sort();
    names.dedup();
    if names.is_empty() {
        bail!("{origin}: not an AMP profile name; expected MODEL_{{P3|G4}}_{{TP}}.npy, e.g. gpt2_P3_1.npy");
    }
    for name in &names {
        let p = profile_from_npy(&refs, name)?;
        if p.entries
            .iter()
            .all(|e| e.forward_s.len() == model.num_layers())
        {
            return Ok(p);
        }
    }
    bail!(
        "{origin}: none of the profiled models ({}) has {} layers like `{}`",
        names.join(", "),
        model.num_layers(),
        model.name
    )
}

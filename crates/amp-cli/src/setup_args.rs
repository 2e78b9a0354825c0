//! The training-setup flags shared by `plan`, `eval` and `export`, and the
//! one place they become a [`TrainingSetup`].

use amp_core::profile::Profile;
use amp_core::schedule::Schedule;
use amp_core::setup::{
    parse_schedule, BlockKernels, CrossEntropy, Engine, NumberFormat, NumberFormats,
    OptimizerSharding, OptimizerStep, PipelineReceive, PipelineSend, Precision, Recompute,
    StageExchange, TrainingSetup,
};
use anyhow::{bail, Result};
use clap::Args;

#[derive(Args, Debug, Clone, Default)]
pub struct SetupArgs {
    /// Number format: bf16, fp16 (mixed precision, fp32 master weights and
    /// Adam), fp32, tf32 or fp8. Default: the profile's, fp16 for the AMP
    /// artifact's profiles, else bf16; fp16 on GPUs without bf16 (V100,
    /// T4; fp32 under torchtitan).
    #[arg(long, value_parser = parse_precision, help_heading = "Training setup")]
    pub precision: Option<Precision>,
    /// Pipeline schedule: 1f1b (default), gpipe, or interleaved:V
    /// (Megatron-LM's interleaved 1F1B, V model chunks per pipeline rank, on
    /// its even split of the blocks).
    #[arg(long, value_parser = parse_schedule, help_heading = "Training setup")]
    pub schedule: Option<Schedule>,
    /// Activation recomputation: none, selective (the attention core; under
    /// torchtitan its per-op selective checkpointing, which keeps every
    /// other matrix product's output and the attention's) or full;
    /// `--recompute` alone means full.
    #[arg(long, num_args = 0..=1, default_missing_value = "full", value_parser = parse_recompute, help_heading = "Training setup")]
    pub recompute: Option<Recompute>,
    /// Shard optimizer state over data-parallel replicas: none, zero1
    /// (= Megatron-LM's distributed optimizer), zero2, zero3 (= FSDP).
    #[arg(long, value_parser = parse_sharding, help_heading = "Training setup")]
    pub optimizer_sharding: Option<OptimizerSharding>,
    /// Megatron-LM sequence parallelism (with tensor parallelism).
    #[arg(long, help_heading = "Training setup")]
    pub sequence_parallel: bool,
    /// Pipeline sends of a tensor-parallel stage: full (every rank sends the
    /// whole activation) or scatter-gather. Default: the engine's (Megatron-LM
    /// and DeepSpeed scatter-gather, torchtitan full), else full.
    #[arg(long, value_parser = parse_send, help_heading = "Training setup")]
    pub pipeline_send: Option<PipelineSend>,
    /// Where a stage rebuilds what it receives: direct (on the GPU, every
    /// engine amp exports to; the default) or host-staged (Sailor's
    /// DeepSpeed fork, which zero-fills an fp32 host buffer of the whole
    /// tensor and copies it to the GPU on every receive; priced at the
    /// calibration's host_staging_s_per_gb).
    #[arg(long, value_parser = parse_receive, help_heading = "Training setup")]
    pub pipeline_receive: Option<PipelineReceive>,
    /// Overlap each stage's gradient all-reduce with its last backward pass.
    #[arg(long, help_heading = "Training setup")]
    pub overlap_allreduce: bool,
    /// Every rank waits at a barrier over the whole job after its last
    /// backward before it reduces its gradients (Sailor's DeepSpeed fork;
    /// Sailor's data sets it). Not with an engine or --overlap-allreduce.
    #[arg(long, help_heading = "Training setup")]
    pub grad_reduce_barrier: bool,
    /// The training loop calls `backward()` inside the autocast context
    /// (without an engine): autocast's cache then keeps every 16-bit cast
    /// through the backward, 2 bytes per parameter beside the gradients at
    /// its end. PyTorch's recipe, and amp's default, leave it outside.
    #[arg(long, help_heading = "Training setup")]
    pub backward_in_autocast: bool,
    /// torchtitan compiles each block with torch.compile
    /// (`compile.enable`): Inductor fuses the elementwise kernels eager
    /// torchtitan runs one by one, and keeps what a fused block keeps.
    /// torchtitan only; its export turns compile on.
    #[arg(long, help_heading = "Training setup")]
    pub compile: bool,
    /// Megatron-LM's `--tp-comm-overlap`: Transformer Engine's userbuffers
    /// run each block's tensor-parallel all-gathers and reduce-scatters in
    /// chunks beside the matrix products, so only what those cannot cover
    /// is exposed. Megatron-LM only, with --sequence-parallel, or with
    /// --search-setup sp, which then puts the overlap on the setups with
    /// sequence parallelism; its export writes the flag.
    #[arg(long, help_heading = "Training setup")]
    pub tp_comm_overlap: bool,
    /// Megatron-LM's `--grad-reduce-in-bf16`: under bf16 or fp8 the
    /// gradients are accumulated and reduced in bf16, 2 bytes a parameter
    /// and half the data-parallel traffic, where Megatron-LM otherwise
    /// keeps them in fp32 (Megatron-Bridge's performance recipes set it).
    /// Megatron-LM only; its export writes the flag.
    #[arg(long, help_heading = "Training setup")]
    pub grad_reduce_in_bf16: bool,
    /// All-reduce 16-bit gradients in fp32, twice the bytes (DeepSpeed's
    /// `communication_data_type`, `fp32_allreduce` in the version the AMP
    /// artifact ran, whose runs set it: the default on its inputs;
    /// `--fp32-allreduce=false` reduces them as they are). Needs no engine
    /// or DeepSpeed; no effect where gradients are fp32 already (bf16, fp32).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", help_heading = "Training setup")]
    pub fp32_allreduce: Option<bool>,
    /// Engine the plan will run on (megatron, deepspeed, torchtitan): plans
    /// are priced as it runs them and refused where it cannot.
    #[arg(long, value_parser = parse_engine, help_heading = "Training setup")]
    pub engine: Option<Engine>,
    /// Loss kernel, which sets the loss's memory: pytorch (F.cross_entropy
    /// on an fp32 copy of the logits: Hugging Face, plain PyTorch; 8 bytes
    /// per logit beyond the stored softmax), megatron (vocabulary-parallel,
    /// in place; 2) or chunked (torchtitan's ChunkedLossWrapper: one of 8
    /// slices of the sequence at a time). Default: the engine's (megatron
    /// for Megatron-LM and DeepSpeed, chunked for torchtitan), else pytorch.
    #[arg(long, value_parser = parse_cross_entropy, help_heading = "Training setup")]
    pub cross_entropy: Option<CrossEntropy>,
    /// Adam(W) step: foreach (PyTorch's default multi-tensor AdamW, about 80
    /// bytes moved per parameter) or fused (fused=True, Transformer Engine,
    /// apex, DeepSpeed: about 32). Default: fused with an engine, else
    /// foreach.
    #[arg(long, value_parser = parse_optimizer_step, help_heading = "Training setup")]
    pub optimizer_step: Option<OptimizerStep>,
    /// How neighbouring 1F1B stages exchange: blocking (a send holds its
    /// sender; Megatron-LM, torchtitan) or lockstep (DeepSpeed's
    /// TrainSchedule: the two stages meet, then the gradient and the
    /// activation cross one after the other). Default: the engine's,
    /// blocking without one.
    #[arg(long, value_parser = parse_stage_exchange, help_heading = "Training setup")]
    pub stage_exchange: Option<StageExchange>,
    /// Kernels of the transformer blocks, for zoo models and Hugging Face
    /// configs: fused (an engine's: Megatron-LM's, Megatron-DeepSpeed's
    /// fused norms and MLP) or eager (the model's own code as Hugging Face
    /// writes it, kernel by kernel: its RMSNorm keeps fp32 copies, its MLP
    /// every intermediate). Default: eager without an engine, else the
    /// engine's own. Only without an engine or with DeepSpeed, which runs
    /// the module it is given: eager there for Hugging Face's models.
    #[arg(long, value_parser = parse_block_kernels, help_heading = "Training setup")]
    pub block_kernels: Option<BlockKernels>,
}

fn parse_precision(s: &str) -> Result<Precision, String> {
    s.parse()
}
fn parse_recompute(s: &str) -> Result<Recompute, String> {
    s.parse()
}
fn parse_sharding(s: &str) -> Result<OptimizerSharding, String> {
    s.parse()
}
fn parse_send(s: &str) -> Result<PipelineSend, String> {
    s.parse()
}
fn parse_receive(s: &str) -> Result<PipelineReceive, String> {
    s.parse()
}
fn parse_engine(s: &str) -> Result<Engine, String> {
    s.parse()
}
fn parse_cross_entropy(s: &str) -> Result<CrossEntropy, String> {
    s.parse()
}
fn parse_optimizer_step(s: &str) -> Result<OptimizerStep, String> {
    s.parse()
}
fn parse_stage_exchange(s: &str) -> Result<StageExchange, String> {
    s.parse()
}
fn parse_block_kernels(s: &str) -> Result<BlockKernels, String> {
    s.parse()
}

impl SetupArgs {
    /// The flags given, as they were spelled, for error messages.
    pub fn given(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.precision.is_some() {
            v.push("--precision");
        }
        if self.schedule.is_some() {
            v.push("--schedule");
        }
        if self.recompute.is_some() {
            v.push("--recompute");
        }
        if self.optimizer_sharding.is_some() {
            v.push("--optimizer-sharding");
        }
        if self.sequence_parallel {
            v.push("--sequence-parallel");
        }
        if self.pipeline_send.is_some() {
            v.push("--pipeline-send");
        }
        if self.pipeline_receive.is_some() {
            v.push("--pipeline-receive");
        }
        if self.overlap_allreduce {
            v.push("--overlap-allreduce");
        }
        if self.grad_reduce_barrier {
            v.push("--grad-reduce-barrier");
        }
        if self.backward_in_autocast {
            v.push("--backward-in-autocast");
        }
        if self.compile {
            v.push("--compile");
        }
        if self.tp_comm_overlap {
            v.push("--tp-comm-overlap");
        }
        if self.grad_reduce_in_bf16 {
            v.push("--grad-reduce-in-bf16");
        }
        if self.fp32_allreduce.is_some() {
            v.push("--fp32-allreduce");
        }
        if self.engine.is_some() {
            v.push("--engine");
        }
        if self.cross_entropy.is_some() {
            v.push("--cross-entropy");
        }
        if self.optimizer_step.is_some() {
            v.push("--optimizer-step");
        }
        if self.stage_exchange.is_some() {
            v.push("--stage-exchange");
        }
        if self.block_kernels.is_some() {
            v.push("--block-kernels");
        }
        v
    }

    /// The setup these flags ask for. `default_precision` applies when
    /// `--precision` is absent; `emit` is the engine `--emit` targets, which
    /// is the plan's engine unless `--engine` says otherwise.
    pub fn resolve(
        &self,
        default_precision: Precision,
        emit: Option<Engine>,
        profile: &Profile,
    ) -> Result<TrainingSetup> {
        let engine = match (self.engine, emit) {
            (Some(a), Some(b)) if a != b => bail!(
                "--engine {a} and --emit {b} disagree: the plan is priced as one engine runs it; drop --engine or emit for {a}"
            ),
            (a, b) => a.or(b),
        };
        let precision = self.precision.unwrap_or(default_precision);
        let mut formats = precision.formats();
        if self.grad_reduce_in_bf16 {
            if engine != Some(Engine::Megatron) {
                bail!(
                    "--grad-reduce-in-bf16 is Megatron-LM's flag (the others keep bf16 gradients as their own settings say); add --engine megatron or drop it"
                );
            }
            if !matches!(precision, Precision::Bf16 | Precision::Fp8) {
                bail!(
                    "--grad-reduce-in-bf16 needs --precision bf16 or fp8 (under {precision} the gradients are {} already); drop it",
                    formats.gradients.name()
                );
            }
            formats.gradients = NumberFormat::Bf16;
        }
        let setup = TrainingSetup {
            // Every engine stores what the precision implies (bf16 keeps
            // fp32 gradients everywhere: Precision::formats). Asked not to
            // widen, the reduction is the gradients' own format, named, so
            // that the AMP artifact's inputs do not fill in their runs'.
            formats: NumberFormats {
                gradient_reduction: self.fp32_allreduce.map(|wide| {
                    if wide {
                        NumberFormat::Fp32
                    } else {
                        formats.gradients
                    }
                }),
                ..formats
            },
            schedule: self.schedule.unwrap_or_default(),
            recompute: self.recompute.unwrap_or_default(),
            optimizer_sharding: self.optimizer_sharding.unwrap_or_default(),
            sequence_parallel: self.sequence_parallel,
            pipeline_send: self
                .pipeline_send
                .or(engine.map(Engine::default_pipeline_send))
                .unwrap_or_default(),
            pipeline_receive: self.pipeline_receive.unwrap_or_default(),
            overlap_grad_reduce: self.overlap_allreduce,
            grad_reduce_barrier: self.grad_reduce_barrier,
            backward_in_autocast: self.backward_in_autocast,
            compile: self.compile,
            tp_comm_overlap: self.tp_comm_overlap,
            engine,
            cross_entropy: self.cross_entropy,
            optimizer_step: self.optimizer_step,
            stage_exchange: self.stage_exchange,
            block_kernels: self.block_kernels,
        };
        setup.check()?;
        if let Err(e) = setup.check_profile(profile) {
            if self.precision.is_some() {
                bail!("--precision {precision}: {e}");
            }
            return Err(e.into());
        }
        Ok(setup)
    }
}

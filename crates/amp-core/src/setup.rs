//! The training setup: everything about a training job besides its model,
//! cluster and parallel layout that changes what an iteration costs.
//!
//! One [`TrainingSetup`] travels with every [`crate::Plan`] (and is written
//! into the plan JSON): the cost model, the memory model, the schedule
//! simulation, the exports and the report all read it from there, so the
//! job amp prices is the job it describes and exports.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{AmpError, Result};
use crate::rank_order::RankOrder;
use crate::schedule::Schedule;

/// Number format of the matrix products (and, for the 16-bit formats, of
/// weights, gradients and activations; see [`NumberFormats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything in fp32, fp32 (CUDA-core) matrix products.
    Fp32,
    /// fp32 storage, TF32 tensor-core matrix products.
    Tf32,
    /// Mixed precision with fp16 weights, gradients and activations, fp32
    /// master weights and Adam moments.
    #[serde(alias = "mixed16")]
    Fp16,
    /// Mixed precision with bf16, otherwise as [`Precision::Fp16`].
    #[default]
    Bf16,
    /// FP8 matrix products (Transformer Engine), bf16 storage.
    Fp8,
}

impl Precision {
    /// Every precision, in the order of [`Precision`]'s variants.
    pub const ALL: [Precision; 5] = [
        Precision::Fp32,
        Precision::Tf32,
        Precision::Fp16,
        Precision::Bf16,
        Precision::Fp8,
    ];

    /// The name in files and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Tf32 => "tf32",
            Precision::Fp16 => "fp16",
            Precision::Bf16 => "bf16",
            Precision::Fp8 => "fp8",
        }
    }

    /// Whether weights, gradients and activations are kept in 16 bits.
    pub fn is_half(self) -> bool {
        matches!(self, Precision::Fp16 | Precision::Bf16 | Precision::Fp8)
    }

    /// The storage formats this precision implies (engines' defaults:
    /// Megatron-LM, DeepSpeed and PyTorch AMP keep fp32 master weights and
    /// Adam moments in mixed precision). bf16 keeps fp32 gradients: its
    /// 8-bit mantissa loses small contributions when gradients accumulate
    /// over micro-batches, so every engine accumulates (and all-reduces) them
    /// in fp32: Megatron-LM sets `accumulate_allreduce_grads_in_fp32` for
    /// bf16 unless told `--grad-reduce-in-bf16` (megatron/training/
    /// arguments.py; amp's flag of that name), DeepSpeed's bf16 optimizer
    /// accumulates in fp32 (`data_types.grad_accum_dtype`), FSDP2 mixed
    /// precision in torchtitan reduces in fp32 (`reduce_dtype`), and PyTorch
    /// autocast's fp32 weights get fp32 `.grad`s: 18 bytes of model state
    /// per parameter, not 16. fp16 engines (DeepSpeed's and Megatron-LM's
    /// fp16 optimizers) keep fp16 gradients.
    pub fn formats(self) -> NumberFormats {
        if self.is_half() {
            let half = if self == Precision::Fp16 {
                NumberFormat::Fp16
            } else {
                NumberFormat::Bf16
            };
            NumberFormats {
                compute: self,
                weights: half,
                gradients: if self == Precision::Fp16 {
                    NumberFormat::Fp16
                } else {
                    NumberFormat::Fp32
                },
                master_weights: Some(NumberFormat::Fp32),
                optimizer_state: NumberFormat::Fp32,
                activations: half,
                sends: half,
                residual_stream: None,
                gradient_reduction: None,
            }
        } else {
            NumberFormats {
                compute: self,
                weights: NumberFormat::Fp32,
                gradients: NumberFormat::Fp32,
                master_weights: None,
                optimizer_state: NumberFormat::Fp32,
                activations: NumberFormat::Fp32,
                sends: NumberFormat::Fp32,
                residual_stream: None,
                gradient_reduction: None,
            }
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Precision, String> {
        Precision::ALL
            .into_iter()
            .find(|p| p.name() == s.trim().to_ascii_lowercase())
            .ok_or_else(|| {
                format!("unknown precision `{s}`; choose one of fp32, tf32, fp16, bf16, fp8")
            })
    }
}

/// How one kind of tensor is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NumberFormat {
    /// 32-bit IEEE float: 4 bytes per element.
    Fp32,
    /// bfloat16: 2 bytes per element, fp32's exponent range.
    Bf16,
    /// IEEE half precision: 2 bytes per element.
    Fp16,
}

impl NumberFormat {
    /// The name files and printouts use.
    pub fn name(self) -> &'static str {
        match self {
            NumberFormat::Fp32 => "fp32",
            NumberFormat::Bf16 => "bf16",
            NumberFormat::Fp16 => "fp16",
        }
    }

    /// Bytes of one element.
    pub fn bytes(self) -> f64 {
        match self {
            NumberFormat::Fp32 => 4.0,
            NumberFormat::Bf16 | NumberFormat::Fp16 => 2.0,
        }
    }
}

/// Storage format of each kind of tensor training keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NumberFormats {
    /// Format of the matrix products, which sets compute speed.
    pub compute: Precision,
    /// Weights as the forward and backward passes read them (the optimizer's
    /// master copy is `master_weights`).
    pub weights: NumberFormat,
    /// Gradients, as held and as the data-parallel all-reduce sends them.
    pub gradients: NumberFormat,
    /// The optimizer's own copy of the weights, when it keeps one.
    pub master_weights: Option<NumberFormat>,
    /// Each of Adam's two moments.
    pub optimizer_state: NumberFormat,
    /// Activations stored for the backward pass.
    pub activations: NumberFormat,
    /// What pipeline stages send each other and tensor-parallel groups
    /// all-reduce: the residual stream between blocks.
    pub sends: NumberFormat,
    /// The residual stream inside a block, when it is kept wider than the
    /// stored activations: fp32 under eager PyTorch's autocast, where the
    /// fp32 embedding starts it, norms run in fp32 and adding a 16-bit
    /// branch to it gives fp32, so each norm keeps an fp32 input for its
    /// backward. `None`: the activations' format (engines keep it 16-bit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub residual_stream: Option<NumberFormat>,
    /// What the data-parallel reduction sends, when wider than the
    /// gradients: DeepSpeed's `communication_data_type` (`fp32_allreduce`
    /// in 2020, set by the AMP artifact's runs) casts each 16-bit bucket to
    /// it before the all-reduce. `None`: the gradients' format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gradient_reduction: Option<NumberFormat>,
}

impl Default for NumberFormats {
    fn default() -> Self {
        Precision::default().formats()
    }
}

impl NumberFormats {
    /// PyTorch autocast over fp32 weights (no separate master copy): the
    /// matrix products run in `half` and keep their saved inputs in it, while
    /// weights, gradients, Adam moments and the residual stream between
    /// blocks (what stages send) stay fp32. The reading of Sailor's runs
    /// (`amp_data::sailor::training_setup`), whose memory reserve is fitted
    /// with every stored activation 16-bit: it leaves `residual_stream`
    /// unset ([`NumberFormats::with_eager_autocast`] sets it).
    pub fn autocast(half: Precision) -> NumberFormats {
        let mut f = Precision::Fp32.formats();
        f.compute = half;
        f.activations = half.formats().activations;
        f
    }

    /// These formats as eager PyTorch's autocast runs them: in 16-bit
    /// compute, the residual stream inside blocks stays fp32
    /// ([`NumberFormats::residual_stream`]); nothing changes in fp32.
    pub fn with_eager_autocast(mut self) -> NumberFormats {
        if self.compute.is_half() {
            self.residual_stream = Some(NumberFormat::Fp32);
        }
        self
    }

    /// Bytes of one element of the data-parallel reduction (DeepSpeed's
    /// `fp32_allreduce` sends 16-bit gradients as fp32).
    pub fn gradient_reduction_bytes(&self) -> f64 {
        self.gradient_reduction.unwrap_or(self.gradients).bytes()
    }

    /// Whether the data-parallel reduction is wider than the gradients.
    pub fn fp32_gradient_reduction(&self) -> bool {
        self.gradient_reduction_bytes() > self.gradients.bytes()
    }

    /// Bytes of one element of the residual stream inside a block.
    pub fn residual_stream_bytes(&self) -> f64 {
        self.residual_stream.unwrap_or(self.activations).bytes()
    }

    /// Optimizer bytes per parameter: master weights and two Adam moments.
    pub(crate) fn optimizer_bytes_per_param(&self) -> f64 {
        self.master_weights.map_or(0.0, NumberFormat::bytes) + 2.0 * self.optimizer_state.bytes()
    }
}

/// Activation recomputation (checkpointing), ordered by how much is
/// recomputed.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Recompute {
    /// Keep every activation the backward pass needs (no recomputation).
    #[default]
    None,
    /// Recompute only the attention core (softmax, dropout, the two
    /// batched products), as Megatron-LM's `--recompute-activations`
    /// (Korthikanti et al. 2022, sec. 5). Under torchtitan, its per-op
    /// selective checkpointing instead ([`TrainingSetup::per_op_selective`]).
    Selective,
    /// Recompute whole transformer blocks from their input.
    Full,
}

impl Recompute {
    /// The name in files and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Recompute::None => "none",
            Recompute::Selective => "selective",
            Recompute::Full => "full",
        }
    }
}

impl FromStr for Recompute {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Recompute, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "none" => Ok(Recompute::None),
            "selective" => Ok(Recompute::Selective),
            "full" => Ok(Recompute::Full),
            _ => Err(format!(
                "unknown recomputation `{s}`; choose none, selective or full"
            )),
        }
    }
}

/// How model and optimizer state is sharded over the data-parallel
/// replicas (ZeRO, Rajbhandari et al. 2020).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerSharding {
    /// Every replica holds everything.
    #[default]
    None,
    /// Optimizer state (master weights and moments) sharded: DeepSpeed ZeRO
    /// stage 1, Megatron-LM's `--use-distributed-optimizer`.
    Zero1,
    /// Optimizer state and gradients sharded (ZeRO stage 2).
    Zero2,
    /// Everything sharded, weights gathered per layer when used (ZeRO
    /// stage 3, PyTorch FSDP, torchtitan's default).
    Zero3,
}

impl OptimizerSharding {
    /// The name in files and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            OptimizerSharding::None => "none",
            OptimizerSharding::Zero1 => "zero1",
            OptimizerSharding::Zero2 => "zero2",
            OptimizerSharding::Zero3 => "zero3",
        }
    }
}

impl FromStr for OptimizerSharding {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<OptimizerSharding, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "none" => Ok(OptimizerSharding::None),
            "zero1" | "distributed-optimizer" => Ok(OptimizerSharding::Zero1),
            "zero2" => Ok(OptimizerSharding::Zero2),
            "zero3" | "fsdp" => Ok(OptimizerSharding::Zero3),
            _ => Err(format!(
                "unknown optimizer sharding `{s}`; choose none, zero1 (= distributed-optimizer), zero2 or zero3 (= fsdp)"
            )),
        }
    }
}

/// How a tensor-parallel stage sends its output to the next stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PipelineSend {
    /// Every tensor-parallel rank sends the whole activation to its peer
    /// (Megatron Core's p2p communication, DeepSpeed's pipeline engine with
    /// `pipe_partitioned` false); under sequence parallelism the whole
    /// activation of a rank is its `1 / tp` of the sequence, which the next
    /// block gathers itself.
    #[default]
    Full,
    /// Each rank sends `1 / tp` of it and the receiving group all-gathers
    /// (Megatron-LM's scatter/gather optimisation of SC'21 sec. 4.1, before
    /// Megatron Core, and DeepSpeed's partitioned sends, its default; with
    /// sequence parallelism the activation is already split this way).
    ScatterGather,
}

impl PipelineSend {
    /// The name in files and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            PipelineSend::Full => "full",
            PipelineSend::ScatterGather => "scatter-gather",
        }
    }
}

impl FromStr for PipelineSend {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<PipelineSend, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "full" => Ok(PipelineSend::Full),
            "scatter-gather" => Ok(PipelineSend::ScatterGather),
            _ => Err(format!(
                "unknown pipeline send mode `{s}`; choose full or scatter-gather"
            )),
        }
    }
}

/// Where a receiving stage rebuilds the activation (or gradient) it
/// receives from its neighbour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PipelineReceive {
    /// On the GPU: the received pieces go straight into a device buffer
    /// (Megatron-LM, DeepSpeed, torchtitan).
    #[default]
    Direct,
    /// Through the host: Sailor's fork of DeepSpeed's pipeline engine
    /// rebuilds every received tensor with `reconstruct_tensor`
    /// (deepspeed/utils.py), which zero-fills an fp32 buffer of the whole
    /// tensor in host memory (`torch.zeros(num_el, dtype=torch.float32)`),
    /// copies it to the GPU (`.cuda()`, a pageable copy the host waits
    /// for), then fills in the pieces and all-gathers; it runs at the start
    /// of every forward pass but the first stage's and every backward pass
    /// but the last stage's, after a `.to('cpu')` that waits for the GPU,
    /// so the GPU idles meanwhile. Priced per byte of that fp32 buffer at
    /// [`crate::cost::Calibration::host_staging_s_per_gb`].
    HostStaged,
}

impl PipelineReceive {
    /// The name in files and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            PipelineReceive::Direct => "direct",
            PipelineReceive::HostStaged => "host-staged",
        }
    }

    fn is_direct(&self) -> bool {
        *self == PipelineReceive::Direct
    }
}

impl FromStr for PipelineReceive {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<PipelineReceive, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "direct" => Ok(PipelineReceive::Direct),
            "host-staged" => Ok(PipelineReceive::HostStaged),
            _ => Err(format!(
                "unknown pipeline receive `{s}`; choose direct (Megatron-LM, DeepSpeed, torchtitan) or host-staged (Sailor's DeepSpeed fork)"
            )),
        }
    }
}

/// For `skip_serializing_if`: a flag left at its default.
fn is_false(b: &bool) -> bool {
    !*b
}

/// How two neighbouring pipeline stages hand each other activations and
/// gradients under 1F1B.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StageExchange {
    /// A send leaves when its pass ends and holds its sender until it is
    /// done; the receiver's pass waits for it (Megatron-LM's and
    /// torchtitan's point-to-point calls; amp's default without an engine).
    Blocking,
    /// DeepSpeed's `TrainSchedule` (deepspeed/runtime/pipe/schedule.py):
    /// the pipeline advances in steps, each stage alternating forward and
    /// backward steps out of phase with its neighbours. Before its pass a
    /// stage exchanges with one neighbour: a backward step receives its
    /// gradient from the next stage, then sends the activation of the
    /// forward just run; a forward step sends the gradient of the backward
    /// just run to the previous stage, then receives its activation. Each
    /// is a blocking NCCL call (`dist.send`/`recv`, or a two-rank
    /// `broadcast` before torch 1.8) that waits for the neighbour's
    /// matching call, so the two stages meet, and the gradient and
    /// activation cross one after the other, not both ways at once.
    Lockstep,
}

impl StageExchange {
    /// How `engine` exchanges: DeepSpeed's pipeline engine in lockstep,
    /// every other engine (and none) with blocking sends.
    pub fn default_for(engine: Option<Engine>) -> StageExchange {
        match engine {
            Some(Engine::DeepSpeed) => StageExchange::Lockstep,
            _ => StageExchange::Blocking,
        }
    }

    /// The name in files and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            StageExchange::Blocking => "blocking",
            StageExchange::Lockstep => "lockstep",
        }
    }
}

impl FromStr for StageExchange {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<StageExchange, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "blocking" => Ok(StageExchange::Blocking),
            "lockstep" => Ok(StageExchange::Lockstep),
            _ => Err(format!(
                "unknown stage exchange `{s}`; choose blocking (Megatron-LM, torchtitan) or lockstep (DeepSpeed)"
            )),
        }
    }
}

/// Which kernels a transformer block runs, which sets what it keeps for its
/// backward and the kernels it launches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BlockKernels {
    /// An engine's fused kernels (Megatron-LM's, Megatron-DeepSpeed's):
    /// fused norms, SwiGLU and GeLU, one QKV projection.
    Fused,
    /// The model's own Python code as Hugging Face writes it, kernel by
    /// kernel: an RMSNorm that keeps fp32 copies, every MLP intermediate,
    /// separate projections (eager PyTorch).
    Eager,
}

impl BlockKernels {
    /// The blocks `engine` runs when nothing is set: its own fused ones,
    /// or without an engine the model's eager code. (torchtitan's blocks
    /// are its own, counted apart: eager unless compiled.)
    pub fn default_for(engine: Option<Engine>) -> BlockKernels {
        match engine {
            None => BlockKernels::Eager,
            Some(_) => BlockKernels::Fused,
        }
    }

    /// Whether the blocks run eager: `kernels` where set, else `engine`'s
    /// ([`Self::default_for`]).
    pub fn eager(kernels: Option<BlockKernels>, engine: Option<Engine>) -> bool {
        kernels.unwrap_or_else(|| BlockKernels::default_for(engine)) == BlockKernels::Eager
    }

    /// The name in files and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            BlockKernels::Fused => "fused",
            BlockKernels::Eager => "eager",
        }
    }
}

impl FromStr for BlockKernels {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<BlockKernels, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "fused" => Ok(BlockKernels::Fused),
            "eager" => Ok(BlockKernels::Eager),
            _ => Err(format!(
                "unknown block kernels `{s}`; choose fused (an engine's: Megatron-LM's, Megatron-DeepSpeed's) or eager (the model's own code, Hugging Face's, kernel by kernel)"
            )),
        }
    }
}

/// How the loss is computed from the logits: what sets the memory the loss
/// holds beside the fp32 probabilities it keeps for its backward (4 bytes
/// per logit, a stored activation of the vocabulary projection).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CrossEntropy {
    /// PyTorch's `cross_entropy` on an fp32 copy of the logits (Hugging
    /// Face's `ForCausalLMLoss`, torchtitan, plain PyTorch): the forward pass
    /// holds the logits, their fp32 copy and the fp32 log-probabilities;
    /// the backward pass the log-probabilities, the gradient `nll_loss`
    /// writes (dense, fp32) and the one `log_softmax` writes (fp32): 12
    /// bytes per logit at its peak, 8 beyond the stored 4.
    Pytorch,
    /// Megatron-LM's vocabulary-parallel cross entropy: one fp32 copy of the
    /// logits, then subtraction, exponent and the gradient all in place
    /// (megatron/core/tensor_parallel/cross_entropy.py): beyond the stored
    /// fp32 softmax only the 16-bit logits (forward) or their gradient
    /// (backward), one activation element per logit.
    Megatron,
    /// torchtitan's `ChunkedLossWrapper` (torchtitan/components/loss.py, the
    /// loss of every recipe torchtitan 0.3.0 ships): the vocabulary
    /// projection and PyTorch's `cross_entropy` run over
    /// [`LOSS_CHUNKS`] slices of the sequence, each slice's forward and
    /// backward at once, inside the forward pass; the projection's input
    /// gradient gathers in an fp32 buffer and is kept in 16 bits until the
    /// decoder's backward. One slice's logits at a time, and none kept.
    Chunked,
}

/// Slices of the sequence torchtitan's `ChunkedLossWrapper` computes the
/// loss over (`ChunkedLossWrapper.Config.num_chunks`, 8 by default).
pub const LOSS_CHUNKS: usize = 8;

impl CrossEntropy {
    /// The loss `engine`'s model code computes; without one, plain PyTorch's.
    pub fn default_for(engine: Option<Engine>) -> CrossEntropy {
        engine.map_or(CrossEntropy::Pytorch, Engine::default_cross_entropy)
    }

    /// The name in files and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            CrossEntropy::Pytorch => "pytorch",
            CrossEntropy::Megatron => "megatron",
            CrossEntropy::Chunked => "chunked",
        }
    }
}

impl FromStr for CrossEntropy {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<CrossEntropy, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "pytorch" => Ok(CrossEntropy::Pytorch),
            "megatron" | "vocab-parallel" => Ok(CrossEntropy::Megatron),
            "chunked" => Ok(CrossEntropy::Chunked),
            _ => Err(format!(
                "unknown cross entropy `{s}`; choose pytorch (F.cross_entropy on fp32 logits), megatron (vocabulary-parallel, in place) or chunked (torchtitan's ChunkedLossWrapper)"
            )),
        }
    }
}

/// How the Adam(W) step runs, which sets the bytes it moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OptimizerStep {
    /// PyTorch's multi-tensor ("foreach") kernels, `torch.optim.AdamW`'s
    /// default on GPUs: about ten passes over the fp32 state.
    Foreach,
    /// One fused kernel per tensor group (`torch.optim.AdamW(fused=True)`,
    /// Transformer Engine's, apex's and DeepSpeed's FusedAdam): one pass.
    Fused,
}

impl OptimizerStep {
    /// The step `engine` runs: every engine's is fused; plain PyTorch's
    /// default AdamW is foreach.
    pub fn default_for(engine: Option<Engine>) -> OptimizerStep {
        if engine.is_some() {
            OptimizerStep::Fused
        } else {
            OptimizerStep::Foreach
        }
    }

    /// The name in files and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            OptimizerStep::Foreach => "foreach",
            OptimizerStep::Fused => "fused",
        }
    }
}

impl FromStr for OptimizerStep {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<OptimizerStep, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "foreach" => Ok(OptimizerStep::Foreach),
            "fused" => Ok(OptimizerStep::Fused),
            _ => Err(format!(
                "unknown optimizer step `{s}`; choose foreach (PyTorch's default AdamW) or fused"
            )),
        }
    }
}

/// A training engine a plan can be launched on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// NVIDIA Megatron-LM.
    Megatron,
    /// Microsoft DeepSpeed (pipeline engine).
    #[serde(rename = "deepspeed")]
    DeepSpeed,
    /// PyTorch torchtitan.
    Torchtitan,
}

impl Engine {
    /// Every engine, in the order of [`Engine`]'s variants.
    pub const ALL: [Engine; 3] = [Engine::Megatron, Engine::DeepSpeed, Engine::Torchtitan];

    /// The name in files and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Megatron => "megatron",
            Engine::DeepSpeed => "deepspeed",
            Engine::Torchtitan => "torchtitan",
        }
    }

    /// The rank orders the engine can number a launch by
    /// ([`crate::rank_order`]): Megatron-LM its default and
    /// `--use-tp-pp-dp-mapping`'s, DeepSpeed and torchtitan tp, then dp,
    /// then pp.
    pub fn rank_orders(self) -> &'static [RankOrder] {
        match self {
            Engine::Megatron => &[RankOrder::TpDpPp, RankOrder::TpPpDp],
            Engine::DeepSpeed | Engine::Torchtitan => &[RankOrder::TpDpPp],
        }
    }

    /// How the engine sends activations between pipeline stages by default.
    pub fn default_pipeline_send(self) -> PipelineSend {
        match self {
            // DeepSpeed's pipeline engine splits a tensor-parallel stage's
            // output over its ranks: with model parallelism it sends each
            // rank's partition of the activation and of its gradient and
            // the receivers all-gather them (`is_pipe_partitioned` and
            // `is_grad_partitioned` in deepspeed/runtime/pipe/engine.py,
            // `pipe_partitioned` and `grad_partitioned` true by default in
            // deepspeed/runtime/config.py).
            Engine::DeepSpeed => PipelineSend::ScatterGather,
            // Megatron Core sends every rank's whole `[s, b, h]` (`s / tp`
            // under sequence parallelism: `tensor_shape` in
            // megatron/core/pipeline_parallel/schedules.py, sent as it is
            // by p2p_communication.py); the SC'21 scatter/gather
            // (`--scatter-gather-tensors-in-pipeline`) left with the
            // pre-Core p2p code.
            Engine::Megatron | Engine::Torchtitan => PipelineSend::Full,
        }
    }

    /// The loss the engine's model code computes: Megatron-LM's
    /// vocabulary-parallel cross entropy for Megatron-LM and for DeepSpeed
    /// (whose pipeline GPT is Megatron-DeepSpeed's), and for torchtitan its
    /// recipes' `ChunkedLossWrapper` over PyTorch's `cross_entropy` on fp32
    /// logits (its `cross_entropy_loss`; unchunked before torchtitan 0.3.0).
    pub fn default_cross_entropy(self) -> CrossEntropy {
        match self {
            Engine::Megatron | Engine::DeepSpeed => CrossEntropy::Megatron,
            Engine::Torchtitan => CrossEntropy::Chunked,
        }
    }

    /// Megatron-LM's `--make-vocab-size-divisible-by` for a tokenizer of
    /// `vocab` tokens at tensor-parallel degree `tp`, as amp exports it: the
    /// largest of 128, 64, ..., 8 whose multiple of tp divides the
    /// vocabulary (Megatron then adds no rows, and each rank's share is a
    /// whole number of 16-byte bf16 vectors), else its default 128 (an odd
    /// vocabulary such as GPT-2's 50257 would otherwise run unaligned
    /// GEMMs).
    pub fn megatron_vocab_divisor(vocab: u64, tp: u64) -> u64 {
        [128, 64, 32, 16, 8]
            .into_iter()
            .find(|d| vocab.is_multiple_of(d * tp.max(1)))
            .unwrap_or(128)
    }

    /// The vocabulary the engine builds for a tokenizer of `vocab` tokens at
    /// tensor-parallel degree `tp`: Megatron-LM pads it to a multiple of
    /// divisor x tp (`_vocab_size_with_padding` in megatron/training/
    /// tokenizer); DeepSpeed and torchtitan take the model's vocabulary as
    /// the model code gives it.
    pub fn padded_vocab(self, vocab: u64, tp: u64) -> u64 {
        match self {
            Engine::Megatron => {
                let step = Engine::megatron_vocab_divisor(vocab, tp) * tp.max(1);
                vocab.div_ceil(step) * step
            }
            Engine::DeepSpeed | Engine::Torchtitan => vocab,
        }
    }

    /// Schedules the engine runs.
    pub(crate) fn supports_schedule(self, schedule: Schedule) -> bool {
        match (self, schedule) {
            (_, Schedule::OneFOneB) => true,
            (Engine::DeepSpeed, _) => false,
            (Engine::Megatron, Schedule::GPipe) => false,
            (Engine::Megatron, Schedule::Interleaved { .. }) => true,
            // amp exports torchtitan's pipeline as contiguous stages, not
            // its Interleaved1F1B chunk layout.
            (Engine::Torchtitan, Schedule::Interleaved { .. }) => false,
            (Engine::Torchtitan, _) => true,
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
    fn from_str(s: &str) -> std::result::Result<Engine, String> {
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

/// Parses a schedule name: `1f1b`, `gpipe` or `interleaved:V`.
pub fn parse_schedule(s: &str) -> std::result::Result<Schedule, String> {
    match s.trim() {
        "1f1b" => Ok(Schedule::OneFOneB),
        "gpipe" => Ok(Schedule::GPipe),
        t => match t.strip_prefix("interleaved:").map(str::parse::<usize>) {
            Some(Ok(1)) => Ok(Schedule::OneFOneB),
            Some(Ok(v)) if (2..=crate::limits::MAX_VIRTUAL_STAGES).contains(&v) => {
                Ok(Schedule::Interleaved { virtual_stages: v })
            }
            _ => Err(format!(
                "`{s}` is not a schedule; use 1f1b, gpipe or interleaved:V with 2 <= V <= {} model chunks per device",
                crate::limits::MAX_VIRTUAL_STAGES
            )),
        },
    }
}

/// The name [`parse_schedule`] reads.
pub(crate) fn schedule_name(s: Schedule) -> String {
    match s {
        Schedule::OneFOneB => "1f1b".into(),
        Schedule::GPipe => "gpipe".into(),
        Schedule::Interleaved { virtual_stages } if virtual_stages <= 1 => "1f1b".into(),
        Schedule::Interleaved { virtual_stages } => format!("interleaved:{virtual_stages}"),
    }
}

fn ser_schedule<S: Serializer>(s: &Schedule, ser: S) -> std::result::Result<S::Ok, S::Error> {
    ser.serialize_str(&schedule_name(*s))
}

fn de_schedule<'de, D: Deserializer<'de>>(de: D) -> std::result::Result<Schedule, D::Error> {
    let s = String::deserialize(de)?;
    parse_schedule(&s).map_err(serde::de::Error::custom)
}

/// Everything about the training job, besides the layout, that changes its
/// cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingSetup {
    /// Number formats of compute, weights, gradients, optimizer state and sends.
    pub formats: NumberFormats,
    /// Pipeline schedule; `interleaved:V` puts V model chunks on each
    /// pipeline rank in Megatron-LM's order (see [`crate::Plan`]).
    #[serde(serialize_with = "ser_schedule", deserialize_with = "de_schedule")]
    pub schedule: Schedule,
    /// Activation recomputation.
    pub recompute: Recompute,
    /// How optimizer state, gradients and weights are sharded over the
    /// data-parallel replicas (ZeRO stages).
    pub optimizer_sharding: OptimizerSharding,
    /// Megatron-LM's sequence parallelism: the layer-norm and dropout
    /// activations are split over the tensor-parallel group too.
    pub sequence_parallel: bool,
    /// What a pipeline send carries under tensor parallelism: the whole
    /// activation, or a `1 / tp` slice per rank.
    pub pipeline_send: PipelineSend,
    /// Where a stage rebuilds what it receives: on the GPU, or through the
    /// host as Sailor's DeepSpeed fork does. Absent from files: direct.
    #[serde(default, skip_serializing_if = "PipelineReceive::is_direct")]
    pub pipeline_receive: PipelineReceive,
    /// Overlap each stage's gradient all-reduce with its last backward pass
    /// (DeepSpeed's one-stage ZeRO-2: `overlap_comm`, every micro-batch's
    /// reductions beside its backward; torchtitan's and ZeRO-3's one-stage
    /// traffic overlaps the passes whatever this says).
    pub overlap_grad_reduce: bool,
    /// Every rank waits at a barrier over the whole job after its last
    /// backward, before it reduces its gradients (Sailor's fork of
    /// DeepSpeed's pipeline engine ends `_exec_reduce_tied_grads`, which
    /// every rank runs before `_exec_reduce_grads`, with `dist.barrier()`
    /// "for measurements"): a stage that finishes early reduces only when
    /// the last stage to finish has. Absent from files: false.
    #[serde(default, skip_serializing_if = "is_false")]
    pub grad_reduce_barrier: bool,
    /// Eager PyTorch's loop calls `backward()` inside the autocast context
    /// (as many scripts do, against PyTorch's recipe, which leaves it
    /// outside): autocast's cache keeps every 16-bit cast until the context
    /// exits, so the end of the backward holds them beside every gradient,
    /// and blocks recomputed for their backward find their casts cached.
    /// Only without an engine, under autocast. Absent from files: false.
    #[serde(default, skip_serializing_if = "is_false")]
    pub backward_in_autocast: bool,
    /// torchtitan compiles each block with `torch.compile`
    /// (`compile.enable`, torchtitan/distributed/compile.py): Inductor fuses
    /// the elementwise kernels between the matrix products and the
    /// attention, which eager torchtitan runs one by one, and its
    /// partitioner keeps what a fused block keeps. Only with torchtitan.
    /// Absent from files: false.
    #[serde(default, skip_serializing_if = "is_false")]
    pub compile: bool,
    /// Megatron-LM's `--tp-comm-overlap`: Transformer Engine's userbuffers
    /// split each matrix product of a block beside a tensor-parallel
    /// all-gather or reduce-scatter into chunks and exchange one chunk
    /// while computing another, so the block's collectives hide behind its
    /// matrix products. Needs sequence parallelism (Megatron-LM asserts
    /// it). Only with Megatron-LM. Absent from files: false.
    #[serde(default, skip_serializing_if = "is_false")]
    pub tp_comm_overlap: bool,
    /// The engine the plan is meant to run on, when one was chosen.
    pub engine: Option<Engine>,
    /// The loss kernel, when set; else the engine's
    /// ([`TrainingSetup::cross_entropy`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cross_entropy: Option<CrossEntropy>,
    /// The Adam(W) step, when set; else the engine's
    /// ([`TrainingSetup::optimizer_step`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optimizer_step: Option<OptimizerStep>,
    /// How neighbouring stages exchange under 1F1B, when set; else the
    /// engine's ([`TrainingSetup::stage_exchange`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage_exchange: Option<StageExchange>,
    /// The blocks' kernels, when set; else the engine's
    /// ([`TrainingSetup::eager_blocks`]). Only without an engine or with
    /// DeepSpeed, whose engines run whatever module they are given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_kernels: Option<BlockKernels>,
}

impl Default for TrainingSetup {
    fn default() -> Self {
        TrainingSetup {
            formats: NumberFormats::default(),
            schedule: Schedule::OneFOneB,
            recompute: Recompute::None,
            optimizer_sharding: OptimizerSharding::None,
            sequence_parallel: false,
            pipeline_send: PipelineSend::Full,
            pipeline_receive: PipelineReceive::Direct,
            overlap_grad_reduce: false,
            grad_reduce_barrier: false,
            backward_in_autocast: false,
            compile: false,
            tp_comm_overlap: false,
            engine: None,
            cross_entropy: None,
            optimizer_step: None,
            stage_exchange: None,
            block_kernels: None,
        }
    }
}

impl TrainingSetup {
    /// The loss kernel: the one set, else the engine's, else PyTorch's
    /// (no engine: plain PyTorch or Hugging Face code).
    pub fn cross_entropy(&self) -> CrossEntropy {
        self.cross_entropy
            .unwrap_or_else(|| CrossEntropy::default_for(self.engine))
    }

    /// The Adam(W) step: the one set, else fused for every engine (each
    /// runs a fused Adam by default), else PyTorch's default foreach.
    pub fn optimizer_step(&self) -> OptimizerStep {
        self.optimizer_step
            .unwrap_or_else(|| OptimizerStep::default_for(self.engine))
    }

    /// Whether the blocks run as the model's own code writes them, kernel
    /// by kernel ([`BlockKernels::Eager`]): as set, else without an engine.
    pub fn eager_blocks(&self) -> bool {
        BlockKernels::eager(self.block_kernels, self.engine)
    }

    /// How neighbouring stages exchange: the way set, else the engine's
    /// ([`StageExchange::default_for`]). Lockstep is DeepSpeed's 1F1B, so
    /// other schedules exchange with blocking sends.
    pub fn stage_exchange(&self) -> StageExchange {
        if self.schedule != Schedule::OneFOneB {
            return StageExchange::Blocking;
        }
        self.stage_exchange
            .unwrap_or_else(|| StageExchange::default_for(self.engine))
    }

    /// This setup as `engine` runs it: the engine named, the residual
    /// stream in the activations' format, as every engine keeps it (a plan
    /// priced as eager PyTorch's autocast, exported to an engine), the
    /// engine's stage exchange and its receives (on the GPU), and, on engines without DeepSpeed's fp32
    /// all-reduce, the gradients reduced as they are (fewer bytes than
    /// such a plan was priced with).
    pub fn on_engine(&self, engine: Engine) -> TrainingSetup {
        let mut s = *self;
        s.engine = Some(engine);
        s.formats.residual_stream = None;
        s.stage_exchange = None;
        s.pipeline_receive = PipelineReceive::Direct;
        s.grad_reduce_barrier = false;
        s.backward_in_autocast = false;
        if engine != Engine::DeepSpeed {
            s.formats.gradient_reduction = None;
            s.block_kernels = None;
        }
        s
    }

    /// Whether a plan of `pp` pipeline ranks under this setup gathers and
    /// reduces over its replicas at every micro-batch rather than once per
    /// iteration: torchtitan's FSDP2 without a pipeline, and DeepSpeed's own
    /// engine under ZeRO-2 and ZeRO-3 (one stage only). See
    /// `cost/device/sharded.rs`.
    pub fn reduces_every_micro_batch(&self, pp: usize) -> bool {
        pp == 1
            && match self.engine {
                Some(Engine::Torchtitan) => true,
                Some(Engine::DeepSpeed) => self.optimizer_sharding >= OptimizerSharding::Zero2,
                _ => false,
            }
    }

    /// Whether the reductions of [`Self::reduces_every_micro_batch`] run
    /// beside the computation (their own stream) rather than on it:
    /// FSDP2's always, DeepSpeed's with `overlap_comm`, its default under
    /// ZeRO-3 (deepspeed/runtime/zero/config.py) and the setup's
    /// `overlap_grad_reduce` under ZeRO-2. The DeepSpeed export states it.
    pub fn reductions_beside_passes(&self) -> bool {
        self.engine != Some(Engine::DeepSpeed)
            || self.optimizer_sharding == OptimizerSharding::Zero3
            || self.overlap_grad_reduce
    }

    /// Whether selective recomputation is torchtitan's per-op selective
    /// checkpointing (`SelectiveAC`, torchtitan/distributed/
    /// activation_checkpoint.py, what amp's export asks for): each block
    /// keeps its input and the outputs of the ops in its save list (the
    /// attention kernel's, every other matrix product's counted in the
    /// order the forward runs them, and with sequence parallelism the
    /// reduce-scatters') and reruns the rest before its backward, where
    /// Megatron-LM reruns the attention core alone.
    pub fn per_op_selective(&self) -> bool {
        self.recompute == Recompute::Selective && self.engine == Some(Engine::Torchtitan)
    }

    /// Model chunks per pipeline rank (1 unless interleaved).
    pub fn virtual_stages(&self) -> usize {
        self.schedule.virtual_stages()
    }

    /// Whether pipeline sends run beside the passes instead of holding
    /// their sender until they complete: Megatron-LM's interleaved schedule
    /// posts them asynchronously and waits only when the tensor is needed
    /// (`overlap_p2p_comm`, on unless `--no-overlap-p2p-communication`, and
    /// forced off without the interleaved schedule: megatron/training/
    /// arguments.py; its schedule's `async_op` sends, megatron/core/
    /// pipeline_parallel/schedules.py). amp's Megatron export leaves it on.
    pub fn sends_overlap_passes(&self) -> bool {
        self.engine == Some(Engine::Megatron) && self.virtual_stages() > 1
    }

    /// The setup a plan with `pp` pipeline stages records: a schedule has no
    /// meaning without a pipeline, so one-stage plans run 1F1B.
    ///
    /// And DeepSpeed keeps bf16 gradients in bf16: its engine accumulates
    /// in `data_types.grad_accum_dtype`, the model's dtype unless the config
    /// says otherwise (`get_data_types`, deepspeed/runtime/engine.py), its
    /// ZeRO optimizer in that dtype, and without ZeRO the `BF16_Optimizer`
    /// its pipeline engine takes (amp's export uses it there even for one
    /// stage, `_do_optimizer_sanity_check`) too: its flat gradient buffer is
    /// of `grad_acc_dtype` (deepspeed/runtime/bf16_optimizer.py). amp's
    /// DeepSpeed export leaves the dtype at its default, so its price does
    /// too. Measured on the CPU with DeepSpeed's own engines:
    /// `scripts/engine-check/deepspeed_zero.py` and `deepspeed_pipeline.py`.
    pub fn for_pipeline(&self, pp: usize) -> TrainingSetup {
        let mut s = *self;
        if pp <= 1 {
            s.schedule = Schedule::OneFOneB;
        }
        if s.engine == Some(Engine::DeepSpeed) && s.formats.compute == Precision::Bf16 {
            s.formats.gradients = s.formats.weights;
        }
        s
    }

    /// Whether the setup's engine runs it on a pipeline of `pp` stages, for
    /// a model that ties weights across layers (`ties_weights`, a tied
    /// embedding) or not: DeepSpeed's pipeline engine takes ZeRO stages 0
    /// and 1 only (`PipelineEngine.__init__` asserts "ZeRO-2 and ZeRO-3 are
    /// incompatible with pipeline parallelism", deepspeed/runtime/pipe/
    /// engine.py), and torchtitan builds no tied model on a pipeline
    /// (`Decoder.Config` raises "Weight tying is not supported with
    /// Pipeline Parallel.", torchtitan/models/common/decoder.py).
    pub fn check_pipeline(&self, pp: usize, ties_weights: bool) -> Result<()> {
        if pp > 1 && ties_weights && self.engine == Some(Engine::Torchtitan) {
            return Err(AmpError::invalid(
                "training setup",
                "torchtitan refuses weight tying with pipeline parallelism (torchtitan/models/common/decoder.py: \"Weight tying is not supported with Pipeline Parallel.\"), and this model ties weights between its layers (a tied embedding); plan one stage, or target another engine",
            ));
        }
        if pp > 1
            && self.engine == Some(Engine::DeepSpeed)
            && self.optimizer_sharding >= OptimizerSharding::Zero2
        {
            return Err(AmpError::invalid(
                "training setup",
                format!(
                    "DeepSpeed's pipeline engine runs ZeRO stages 0 and 1 only (deepspeed/runtime/pipe/engine.py asserts it), not {} on a pipeline; shard with zero1, plan one stage, or target another engine",
                    self.optimizer_sharding.name()
                ),
            ));
        }
        Ok(())
    }

    /// Why the setup's engine cannot run `model`'s blocks at tensor-parallel
    /// degree `tp` and `micro_batch` samples: Megatron-LM in FP8 runs only
    /// products Transformer Engine can tile
    /// ([`crate::model::TransformerShape::fp8_tiling_refusal`]). `None`
    /// elsewhere.
    pub fn tiling_refusal(
        &self,
        model: &crate::model::Model,
        tp: usize,
        micro_batch: usize,
    ) -> Option<String> {
        if self.engine != Some(Engine::Megatron) || self.formats.compute != Precision::Fp8 {
            return None;
        }
        model
            .shape
            .as_ref()?
            .fp8_tiling_refusal(tp, micro_batch, self.sequence_parallel)
    }

    /// Checks the setup on its own and against its engine, if it has one.
    pub fn check(&self) -> Result<()> {
        let at = "training setup";
        if let Schedule::Interleaved { virtual_stages } = self.schedule {
            if virtual_stages < 2 {
                return Err(AmpError::invalid(
                    at,
                    "an interleaved schedule needs at least 2 model chunks per device",
                ));
            }
        }
        if self.grad_reduce_barrier && self.overlap_grad_reduce {
            return Err(AmpError::invalid(
                at,
                "a gradient reduction after a barrier cannot overlap the last backward; drop `grad_reduce_barrier` (`--grad-reduce-barrier`) or `overlap_grad_reduce` (`--overlap-allreduce`)",
            ));
        }
        if self.overlap_grad_reduce
            && self.engine == Some(Engine::DeepSpeed)
            && self.optimizer_sharding <= OptimizerSharding::Zero1
        {
            // Measured: with `overlap_comm` on or off, every all-reduce of a
            // one-stage ZeRO-1 `PipelineModule` runs inside its ReduceGrads
            // instruction (`_exec_reduce_grads`, after the last backward;
            // DeepSpeed 0.19.8 on the CPU), and the `BF16_Optimizer`'s has
            // no hooks at all.
            return Err(AmpError::invalid(
                at,
                format!(
                    "DeepSpeed runs {} on its pipeline engine (amp's export, one stage or more), which reduces the gradients after the last backward (its ReduceGrads step, `_exec_reduce_grads` in deepspeed/runtime/pipe/engine.py) whatever `overlap_comm` says; drop `overlap_grad_reduce` (`--overlap-allreduce`), or shard with zero2 or zero3, which DeepSpeed's own engine reduces beside the backward",
                    if self.optimizer_sharding == OptimizerSharding::Zero1 {
                        "ZeRO-1"
                    } else {
                        "training without ZeRO"
                    }
                ),
            ));
        }
        if self.tp_comm_overlap && self.engine != Some(Engine::Megatron) {
            return Err(AmpError::invalid(
                at,
                format!(
                    "tensor-parallel communication overlap is Megatron-LM's `--tp-comm-overlap` (Transformer Engine's userbuffers), not {}'s; drop `tp_comm_overlap` (`--tp-comm-overlap`) or target megatron",
                    self.engine.map_or("plain PyTorch".to_string(), |e| e.to_string())
                ),
            ));
        }
        if self.tp_comm_overlap && !self.sequence_parallel {
            return Err(AmpError::invalid(
                at,
                "Megatron-LM overlaps tensor-parallel communication only under sequence parallelism (its arguments.py asserts it); add `sequence_parallel` (`--sequence-parallel`) or drop `tp_comm_overlap` (`--tp-comm-overlap`)",
            ));
        }
        if self.compile && self.engine != Some(Engine::Torchtitan) {
            return Err(AmpError::invalid(
                at,
                format!(
                    "torch.compile is priced as torchtitan runs it (each block compiled, `compile.enable`), not for {}; drop `compile` (`--compile`) or target torchtitan",
                    self.engine.map_or("plain PyTorch".to_string(), |e| e.to_string())
                ),
            ));
        }
        if self.formats.compute == Precision::Fp8 && self.engine != Some(Engine::Megatron) {
            return Err(AmpError::invalid(
                at,
                format!(
                    "FP8 is priced as Megatron-LM trains it (Transformer Engine's FP8 linear layers in the blocks, attention and the vocabulary projection in bf16), not for {}; target megatron (`--engine megatron`, or `--to megatron` in amp export) or plan in bf16 (`--precision bf16`)",
                    match self.engine {
                        Some(Engine::Torchtitan) => "torchtitan, whose FP8 (torchao's Float8Linear, row-wise scaling) amp does not price".to_string(),
                        engine => format!(
                            "{}, which has no FP8 training of its own",
                            engine.map_or("plain PyTorch".to_string(), |e| e.to_string())
                        ),
                    }
                ),
            ));
        }
        if self.cross_entropy == Some(CrossEntropy::Chunked)
            && self.engine != Some(Engine::Torchtitan)
        {
            return Err(AmpError::invalid(
                at,
                format!(
                    "the chunked loss is torchtitan's ChunkedLossWrapper, not {}'s; drop the cross-entropy choice or target torchtitan",
                    self.engine.map_or("plain PyTorch".to_string(), |e| e.to_string())
                ),
            ));
        }
        if self.stage_exchange == Some(StageExchange::Lockstep)
            && self.schedule != Schedule::OneFOneB
        {
            return Err(AmpError::invalid(
                at,
                format!(
                    "the lockstep stage exchange is DeepSpeed's 1F1B TrainSchedule, not {}; drop `stage_exchange` (`--stage-exchange`) or use 1f1b",
                    schedule_name(self.schedule)
                ),
            ));
        }
        if let Some(r) = self.formats.gradient_reduction {
            if r.bytes() < self.formats.gradients.bytes() {
                return Err(AmpError::invalid(
                    at,
                    format!(
                        "`formats.gradient_reduction` {} is narrower than the gradients ({}); an all-reduce sends the gradients' format or wider: drop the field or widen it",
                        r.name(),
                        self.formats.gradients.name()
                    ),
                ));
            }
        }
        if let Some(engine) = self.engine {
            if let Some(x) = self.stage_exchange {
                if x != StageExchange::default_for(Some(engine)) {
                    return Err(AmpError::invalid(
                        at,
                        format!(
                            "{engine} exchanges between stages {}, not {}; drop `stage_exchange` (`--stage-exchange`) or the engine",
                            StageExchange::default_for(Some(engine)).name(),
                            x.name()
                        ),
                    ));
                }
            }
            if self.grad_reduce_barrier {
                return Err(AmpError::invalid(
                    at,
                    format!("a barrier before the gradient reduction is Sailor's fork of DeepSpeed's pipeline engine; {engine} reduces each stage's gradients when its backward ends: drop `grad_reduce_barrier` (`--grad-reduce-barrier`) or the engine"),
                ));
            }
            if let (Some(kernels), Engine::Megatron | Engine::Torchtitan) =
                (self.block_kernels, engine)
            {
                let own = if engine == Engine::Megatron {
                    "its own fused blocks (Transformer Engine's)"
                } else {
                    "its own blocks (eager, or fused with `compile`, `--compile`)"
                };
                return Err(AmpError::invalid(
                    at,
                    format!("{engine} builds the model itself and runs {own}, which `block_kernels` (`--block-kernels {}`) does not choose: it says which blocks DeepSpeed (which runs the module it is given) or plain PyTorch runs; drop it or target DeepSpeed", kernels.name()),
                ));
            }
            if self.backward_in_autocast {
                return Err(AmpError::invalid(
                    at,
                    format!("a backward inside autocast is eager PyTorch's loop; {engine} keeps 16-bit weights of its own and no autocast cache: drop `backward_in_autocast` (`--backward-in-autocast`) or the engine"),
                ));
            }
            if self.pipeline_receive == PipelineReceive::HostStaged {
                return Err(AmpError::invalid(
                    at,
                    format!("host-staged receives are Sailor's fork of DeepSpeed's pipeline engine; {engine} rebuilds what a stage receives on the GPU: drop `pipeline_receive` (`--pipeline-receive`) or the engine"),
                ));
            }
            if self.formats.residual_stream.is_some() {
                return Err(AmpError::invalid(
                    at,
                    format!("`formats.residual_stream` is eager PyTorch's autocast; {engine} keeps the residual stream in its activations' format: drop the field or the engine"),
                ));
            }
            if self.formats.fp32_gradient_reduction() && engine != Engine::DeepSpeed {
                return Err(AmpError::invalid(
                    at,
                    format!("an fp32 all-reduce of 16-bit gradients is DeepSpeed's `communication_data_type` (`fp32_allreduce` in its older versions); {engine} all-reduces gradients in their own format (for fp32 gradient reductions there, plan with bf16, whose gradients are fp32): drop `formats.gradient_reduction` (`--fp32-allreduce`) or the engine"),
                ));
            }
            if !engine.supports_schedule(self.schedule) {
                return Err(AmpError::invalid(
                    at,
                    format!(
                        "{engine} cannot run the {} schedule; use 1f1b{}",
                        schedule_name(self.schedule),
                        if engine == Engine::Megatron {
                            " or interleaved:V"
                        } else if engine == Engine::Torchtitan {
                            " or gpipe (amp exports only Megatron-LM's interleaved layout)"
                        } else {
                            " (DeepSpeed's pipeline engine runs only 1F1B)"
                        }
                    ),
                ));
            }
            if engine == Engine::DeepSpeed && self.sequence_parallel {
                return Err(AmpError::invalid(
                    at,
                    format!("sequence parallelism is exported only to megatron and torchtitan, not {engine}; drop it or target one of them"),
                ));
            }
            if engine == Engine::Torchtitan
                && matches!(
                    self.optimizer_sharding,
                    OptimizerSharding::Zero1 | OptimizerSharding::Zero2
                )
            {
                return Err(AmpError::invalid(
                    at,
                    format!(
                        "torchtitan shards with FSDP (zero3) or not at all, not {}",
                        self.optimizer_sharding.name()
                    ),
                ));
            }
            if engine == Engine::Torchtitan && self.formats.compute == Precision::Fp16 {
                return Err(AmpError::invalid(
                    at,
                    "torchtitan trains in bf16 or fp32 (training.mixed_precision_param, torchtitan/config/configs.py), not fp16; use precision bf16",
                ));
            }
            if engine == Engine::DeepSpeed && self.recompute == Recompute::Selective {
                return Err(AmpError::invalid(
                    at,
                    "DeepSpeed's activation checkpointing recomputes whole layers; use recompute full or none",
                ));
            }
            if let Some(ce) = self.cross_entropy {
                // torchtitan and DeepSpeed train with a loss function the
                // user can swap; Megatron-LM's is built in.
                if engine == Engine::Torchtitan && ce == CrossEntropy::Megatron {
                    return Err(AmpError::invalid(
                        at,
                        "torchtitan computes PyTorch's cross entropy (chunked by its recipes, `chunked`, or over the whole sequence, `pytorch`), not Megatron-LM's vocabulary-parallel cross entropy; drop the cross-entropy choice or pick one of those",
                    ));
                }
                if engine == Engine::Megatron && ce != engine.default_cross_entropy() {
                    return Err(AmpError::invalid(
                        at,
                        format!(
                            "{engine} computes the loss with {} cross entropy, not {}; drop the cross-entropy choice or target another engine",
                            engine.default_cross_entropy().name(),
                            ce.name()
                        ),
                    ));
                }
            }
            if engine == Engine::Megatron && self.optimizer_step == Some(OptimizerStep::Foreach) {
                return Err(AmpError::invalid(
                    at,
                    "Megatron-LM runs a fused Adam (Transformer Engine's or apex's); use optimizer step fused",
                ));
            }
            if engine == Engine::Megatron && self.optimizer_sharding > OptimizerSharding::Zero1 {
                return Err(AmpError::invalid(
                    at,
                    format!(
                        "Megatron-LM shards only the optimizer state (its distributed optimizer, zero1), not {}",
                        self.optimizer_sharding.name()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Checks that `profile`'s times hold under this setup: a profile
    /// measured in one number format does not price another.
    pub fn check_profile(&self, profile: &crate::profile::Profile) -> Result<()> {
        if let Some(p) = profile.precision {
            let measured = p.formats().sends.bytes();
            if measured != self.formats.sends.bytes() {
                let c = self.formats.compute;
                return Err(AmpError::invalid(
                    "training setup",
                    format!(
                        "trains in {c} but the profile was measured in {p}; its times do not hold in another number format: train in {p}, or profile in {c}"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// One line for printouts: `bf16, 1f1b, recompute none, ...`.
    pub fn summary(&self) -> String {
        let compute = self.formats.compute.name();
        let mut parts = vec![
            match self.formats.residual_stream {
                Some(r) => format!("{compute} autocast ({} residual stream)", r.name()),
                // Sailor's fp32 runs as amp reads them
                // ([`NumberFormats::autocast`]): fp32 weights and states,
                // activations counted in 16-bit elements.
                None if self.formats.compute.is_half()
                    && self.formats.weights == NumberFormat::Fp32 =>
                {
                    format!(
                        "{} weights, {} activations",
                        self.formats.weights.name(),
                        self.formats.activations.name()
                    )
                }
                None => compute.to_string(),
            },
            schedule_name(self.schedule),
        ];
        if self.recompute != Recompute::None {
            parts.push(format!("recompute {}", self.recompute.name()));
        }
        if self.optimizer_sharding != OptimizerSharding::None {
            parts.push(self.optimizer_sharding.name().to_string());
        }
        if self.formats.fp32_gradient_reduction() {
            parts.push("fp32 all-reduce".into());
        }
        if self.sequence_parallel {
            parts.push("sequence parallel".into());
        }
        if self.pipeline_send != PipelineSend::Full {
            parts.push(format!("{} sends", self.pipeline_send.name()));
        }
        if self.pipeline_receive != PipelineReceive::Direct {
            parts.push(format!("{} receives", self.pipeline_receive.name()));
        }
        if self.overlap_grad_reduce {
            parts.push("overlapped grad reduce".into());
        }
        if self.grad_reduce_barrier {
            parts.push("barrier before grad reduce".into());
        }
        if self.backward_in_autocast {
            parts.push("backward in autocast".into());
        }
        if self.compile {
            parts.push("compiled".into());
        }
        if self.tp_comm_overlap {
            parts.push("tp comm overlap".into());
        }
        if self.cross_entropy.is_some() {
            parts.push(format!("{} cross entropy", self.cross_entropy().name()));
        }
        if self.optimizer_step.is_some() {
            parts.push(format!("{} Adam", self.optimizer_step().name()));
        }
        if let Some(x) = self.stage_exchange {
            parts.push(format!("{} stage exchange", x.name()));
        }
        if let Some(k) = self.block_kernels {
            parts.push(format!("{} blocks", k.name()));
        }
        if let Some(e) = self.engine {
            parts.push(format!("for {e}"));
        }
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn megatron_pads_the_vocabulary_as_its_log_says() {
        // Megatron-LM logs "padded vocab (size: 50257) with 47 dummy tokens
        // (new size: 50304)" at tp 1 and 175 dummy tokens (50432) at tp 2.
        assert_eq!(Engine::Megatron.padded_vocab(50257, 1), 50304);
        assert_eq!(Engine::Megatron.padded_vocab(50257, 2), 50432);
        assert_eq!(Engine::Megatron.padded_vocab(50257, 8), 51200);
        // A vocabulary that some divisor x tp divides is left alone, as the
        // export's --make-vocab-size-divisible-by asks.
        assert_eq!(Engine::megatron_vocab_divisor(50272, 4), 8);
        assert_eq!(Engine::Megatron.padded_vocab(50272, 4), 50272);
        assert_eq!(Engine::Megatron.padded_vocab(128256, 8), 128256);
        for e in [Engine::DeepSpeed, Engine::Torchtitan] {
            assert_eq!(e.padded_vocab(50257, 4), 50257);
        }
    }

    #[test]
    fn json_round_trip_and_names() {
        let s = TrainingSetup {
            schedule: Schedule::Interleaved { virtual_stages: 3 },
            recompute: Recompute::Selective,
            optimizer_sharding: OptimizerSharding::Zero1,
            engine: Some(Engine::Megatron),
            ..TrainingSetup::default()
        };
        let text = serde_json::to_string(&s).unwrap();
        assert!(text.contains("\"schedule\":\"interleaved:3\""), "{text}");
        let back: TrainingSetup = serde_json::from_str(&text).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn host_staged_receives_are_sailors_and_written_only_when_set() {
        // Absent from files written before it existed, and from direct ones.
        let plain = serde_json::to_string(&TrainingSetup::default()).unwrap();
        assert!(!plain.contains("pipeline_receive"), "{plain}");
        let staged = TrainingSetup {
            pipeline_receive: PipelineReceive::HostStaged,
            ..TrainingSetup::default()
        };
        let text = serde_json::to_string(&staged).unwrap();
        assert!(
            text.contains("\"pipeline_receive\":\"host-staged\""),
            "{text}"
        );
        assert_eq!(
            serde_json::from_str::<TrainingSetup>(&text).unwrap(),
            staged
        );
        assert!(staged.check().is_ok());
        assert!(staged.summary().contains("host-staged receives"));
        assert!(!TrainingSetup::default().summary().contains("receives"));
        assert_eq!("host-staged".parse(), Ok(PipelineReceive::HostStaged));
        assert!("host"
            .parse::<PipelineReceive>()
            .unwrap_err()
            .contains("host-staged"));
        // No engine amp exports to receives through the host.
        for engine in Engine::ALL {
            let e = TrainingSetup {
                engine: Some(engine),
                ..staged
            }
            .check()
            .unwrap_err()
            .to_string();
            assert!(
                e.contains("Sailor's fork") && e.contains("--pipeline-receive"),
                "{e}"
            );
            assert_eq!(
                staged.on_engine(engine).pipeline_receive,
                PipelineReceive::Direct
            );
        }
    }

    #[test]
    fn a_barrier_before_the_reduction_is_sailors_and_written_only_when_set() {
        let plain = serde_json::to_string(&TrainingSetup::default()).unwrap();
        assert!(!plain.contains("grad_reduce_barrier"), "{plain}");
        let barrier = TrainingSetup {
            grad_reduce_barrier: true,
            ..TrainingSetup::default()
        };
        let text = serde_json::to_string(&barrier).unwrap();
        assert!(text.contains("\"grad_reduce_barrier\":true"), "{text}");
        assert_eq!(
            serde_json::from_str::<TrainingSetup>(&text).unwrap(),
            barrier
        );
        assert!(barrier.check().is_ok());
        assert!(barrier.summary().contains("barrier before grad reduce"));
        let overlapped = TrainingSetup {
            overlap_grad_reduce: true,
            ..barrier
        };
        let e = overlapped.check().unwrap_err().to_string();
        assert!(
            e.contains("cannot overlap") && e.contains("--overlap-allreduce"),
            "{e}"
        );
        for engine in Engine::ALL {
            let e = TrainingSetup {
                engine: Some(engine),
                ..barrier
            }
            .check()
            .unwrap_err()
            .to_string();
            assert!(
                e.contains("Sailor's fork") && e.contains("--grad-reduce-barrier"),
                "{e}"
            );
            assert!(!barrier.on_engine(engine).grad_reduce_barrier);
        }
    }

    #[test]
    fn block_kernels_are_deepspeeds_choice_and_written_only_when_set() {
        let plain = serde_json::to_string(&TrainingSetup::default()).unwrap();
        assert!(!plain.contains("block_kernels"), "{plain}");
        // Eager without an engine, an engine's own with one.
        assert!(TrainingSetup::default().eager_blocks());
        for engine in Engine::ALL {
            assert!(!TrainingSetup::default().on_engine(engine).eager_blocks());
        }
        let eager = TrainingSetup {
            block_kernels: Some(BlockKernels::Eager),
            ..TrainingSetup::default().on_engine(Engine::DeepSpeed)
        };
        let text = serde_json::to_string(&eager).unwrap();
        assert!(text.contains("\"block_kernels\":\"eager\""), "{text}");
        assert_eq!(serde_json::from_str::<TrainingSetup>(&text).unwrap(), eager);
        assert!(eager.check().is_ok() && eager.eager_blocks());
        assert!(
            eager.summary().contains("eager blocks"),
            "{}",
            eager.summary()
        );
        // Megatron-LM and torchtitan build their own blocks.
        for engine in [Engine::Megatron, Engine::Torchtitan] {
            for kernels in [BlockKernels::Eager, BlockKernels::Fused] {
                let e = TrainingSetup {
                    block_kernels: Some(kernels),
                    ..eager.on_engine(engine)
                }
                .check()
                .unwrap_err()
                .to_string();
                assert!(
                    e.contains("runs its own")
                        && e.contains(&format!("--block-kernels {}", kernels.name()))
                        && !e.contains("not fused ones"),
                    "{e}"
                );
            }
            assert_eq!(eager.on_engine(engine).block_kernels, None);
        }
        assert_eq!(
            eager.on_engine(Engine::DeepSpeed).block_kernels,
            Some(BlockKernels::Eager)
        );
        // Without an engine, fused blocks are the user's own fused code.
        let fused = TrainingSetup {
            block_kernels: Some(BlockKernels::Fused),
            ..TrainingSetup::default()
        };
        assert!(fused.check().is_ok() && !fused.eager_blocks());
        assert_eq!("EAGER".parse::<BlockKernels>(), Ok(BlockKernels::Eager));
        let e = "hf".parse::<BlockKernels>().unwrap_err();
        assert!(e.contains("choose fused") && e.contains("eager"), "{e}");
    }

    #[test]
    fn a_backward_inside_autocast_is_eager_pytorchs_and_written_only_when_set() {
        let plain = serde_json::to_string(&TrainingSetup::default()).unwrap();
        assert!(!plain.contains("backward_in_autocast"), "{plain}");
        let inside = TrainingSetup {
            formats: TrainingSetup::default().formats.with_eager_autocast(),
            backward_in_autocast: true,
            ..TrainingSetup::default()
        };
        let text = serde_json::to_string(&inside).unwrap();
        assert!(text.contains("\"backward_in_autocast\":true"), "{text}");
        assert_eq!(
            serde_json::from_str::<TrainingSetup>(&text).unwrap(),
            inside
        );
        assert!(inside.check().is_ok());
        assert!(inside.summary().contains("backward in autocast"));
        for engine in Engine::ALL {
            let e = TrainingSetup {
                engine: Some(engine),
                formats: TrainingSetup::default().formats,
                ..inside
            }
            .check()
            .unwrap_err()
            .to_string();
            assert!(
                e.contains("eager PyTorch's loop") && e.contains("--backward-in-autocast"),
                "{e}"
            );
            assert!(!inside.on_engine(engine).backward_in_autocast);
        }
    }

    /// Megatron-LM overlaps the interleaved schedule's sends with the
    /// passes (`overlap_p2p_comm`, on by default there and forced off
    /// elsewhere); no other engine's, nor its own plain 1F1B's.
    #[test]
    fn only_megatrons_interleaved_sends_overlap_the_passes() {
        let with = |engine, schedule| TrainingSetup {
            engine,
            schedule,
            ..TrainingSetup::default()
        };
        let il = Schedule::Interleaved { virtual_stages: 2 };
        assert!(with(Some(Engine::Megatron), il).sends_overlap_passes());
        assert!(!with(Some(Engine::Megatron), Schedule::OneFOneB).sends_overlap_passes());
        for engine in [None, Some(Engine::DeepSpeed), Some(Engine::Torchtitan)] {
            assert!(!with(engine, il).sends_overlap_passes());
        }
    }

    #[test]
    fn stage_exchange_follows_the_engine_and_the_schedule() {
        let with = |engine, schedule, stage_exchange| TrainingSetup {
            engine,
            schedule,
            stage_exchange,
            ..TrainingSetup::default()
        };
        let lock = Some(StageExchange::Lockstep);
        let one = Schedule::OneFOneB;
        let ds = Some(Engine::DeepSpeed);
        assert_eq!(
            with(ds, one, None).stage_exchange(),
            StageExchange::Lockstep
        );
        assert_eq!(
            with(None, one, lock).stage_exchange(),
            StageExchange::Lockstep
        );
        for e in [None, Some(Engine::Megatron), Some(Engine::Torchtitan)] {
            assert_eq!(with(e, one, None).stage_exchange(), StageExchange::Blocking);
        }
        // Only 1F1B runs in lockstep; an engine exchanges its own way.
        let il = Schedule::Interleaved { virtual_stages: 2 };
        assert_eq!(
            with(None, il, None).stage_exchange(),
            StageExchange::Blocking
        );
        assert!(with(None, il, lock).check().is_err());
        assert!(with(Some(Engine::Megatron), one, lock).check().is_err());
        assert!(with(ds, one, Some(StageExchange::Blocking))
            .check()
            .is_err());
        assert!(with(ds, one, lock).check().is_ok());
        // Exported to an engine, the plan exchanges as that engine does.
        let s = with(None, one, lock).on_engine(Engine::Megatron);
        assert_eq!(s.stage_exchange(), StageExchange::Blocking);
        assert!(s.check().is_ok());
    }

    #[test]
    fn loss_and_optimizer_kernels_default_to_the_engines() {
        let plain = TrainingSetup::default();
        assert_eq!(plain.cross_entropy(), CrossEntropy::Pytorch);
        assert_eq!(plain.optimizer_step(), OptimizerStep::Foreach);
        let with = |engine| TrainingSetup {
            engine: Some(engine),
            ..TrainingSetup::default()
        };
        assert_eq!(
            with(Engine::Megatron).cross_entropy(),
            CrossEntropy::Megatron
        );
        assert_eq!(
            with(Engine::DeepSpeed).cross_entropy(),
            CrossEntropy::Megatron
        );
        assert_eq!(
            with(Engine::Torchtitan).cross_entropy(),
            CrossEntropy::Chunked
        );
        for e in Engine::ALL {
            assert_eq!(with(e).optimizer_step(), OptimizerStep::Fused);
        }
        // What an engine cannot run is refused, naming it.
        let foreach = TrainingSetup {
            optimizer_step: Some(OptimizerStep::Foreach),
            ..with(Engine::Megatron)
        };
        let e = foreach.check().unwrap_err().to_string();
        assert!(e.contains("fused Adam"), "{e}");
        let pytorch_loss = TrainingSetup {
            cross_entropy: Some(CrossEntropy::Pytorch),
            ..with(Engine::Megatron)
        };
        let e = pytorch_loss.check().unwrap_err().to_string();
        assert!(
            e.contains("megatron computes the loss with megatron cross entropy"),
            "{e}"
        );
        // DeepSpeed trains the user's model: either loss.
        let ds = TrainingSetup {
            cross_entropy: Some(CrossEntropy::Pytorch),
            optimizer_step: Some(OptimizerStep::Foreach),
            ..with(Engine::DeepSpeed)
        };
        assert!(ds.check().is_ok());
        // Files without the fields (older plans) read as the engine's.
        let text = serde_json::to_string(&with(Engine::Megatron)).unwrap();
        assert!(!text.contains("cross_entropy"), "{text}");
        let named = serde_json::to_string(&ds).unwrap();
        assert!(named.contains("\"cross_entropy\":\"pytorch\""), "{named}");
        assert!(named.contains("\"optimizer_step\":\"foreach\""), "{named}");
        assert_eq!(serde_json::from_str::<TrainingSetup>(&named).unwrap(), ds);
        assert_eq!(
            "vocab-parallel".parse::<CrossEntropy>(),
            Ok(CrossEntropy::Megatron)
        );
        assert!("fast"
            .parse::<OptimizerStep>()
            .unwrap_err()
            .contains("foreach"));
    }

    /// DeepSpeed's fp32 all-reduce of fp16 gradients: wider bytes, named
    /// in the summary, kept out of files that do not set it, refused
    /// narrower than the gradients or with an engine that has no such
    /// option.
    #[test]
    fn an_fp32_reduction_of_fp16_gradients_is_deepspeeds() {
        let fp16 = TrainingSetup {
            formats: Precision::Fp16.formats(),
            ..TrainingSetup::default()
        };
        assert_eq!(fp16.formats.gradient_reduction_bytes(), 2.0);
        assert!(!serde_json::to_string(&fp16)
            .unwrap()
            .contains("gradient_reduction"));
        let wide = TrainingSetup {
            formats: NumberFormats {
                gradient_reduction: Some(NumberFormat::Fp32),
                ..fp16.formats
            },
            ..fp16
        };
        assert_eq!(wide.formats.gradient_reduction_bytes(), 4.0);
        assert!(
            wide.summary().contains("fp32 all-reduce"),
            "{}",
            wide.summary()
        );
        assert!(!fp16.summary().contains("all-reduce"));
        assert!(wide.check().is_ok());
        let text = serde_json::to_string(&wide).unwrap();
        assert_eq!(serde_json::from_str::<TrainingSetup>(&text).unwrap(), wide);
        for engine in [Engine::Megatron, Engine::Torchtitan] {
            let e = TrainingSetup {
                engine: Some(engine),
                ..wide
            }
            .check()
            .unwrap_err()
            .to_string();
            assert!(e.contains("communication_data_type"), "{e}");
        }
        assert!(TrainingSetup {
            engine: Some(Engine::DeepSpeed),
            ..wide
        }
        .check()
        .is_ok());
        // Exported, DeepSpeed keeps it; the others reduce fp16 as it is.
        assert!(wide
            .on_engine(Engine::DeepSpeed)
            .formats
            .fp32_gradient_reduction());
        let megatron = wide.on_engine(Engine::Megatron);
        assert!(!megatron.formats.fp32_gradient_reduction());
        assert!(megatron.check().is_ok());
        // bf16 gradients are fp32 already: nothing wider to name.
        let bf16 = TrainingSetup {
            formats: NumberFormats {
                gradient_reduction: Some(NumberFormat::Fp32),
                ..Precision::Bf16.formats()
            },
            ..TrainingSetup::default()
        };
        assert!(!bf16.formats.fp32_gradient_reduction());
        let narrow = TrainingSetup {
            formats: NumberFormats {
                gradient_reduction: Some(NumberFormat::Bf16),
                ..Precision::Bf16.formats()
            },
            ..TrainingSetup::default()
        };
        let e = narrow.check().unwrap_err().to_string();
        assert!(e.contains("narrower than the gradients (fp32)"), "{e}");
    }

    #[test]
    fn bf16_keeps_gradients_in_fp32() {
        let f = Precision::Bf16.formats();
        assert_eq!(f.gradients, NumberFormat::Fp32);
        assert_eq!(f.weights, NumberFormat::Bf16);
        // 2 weights + 4 gradients + 4 master + 8 moments.
        let per_param = f.weights.bytes() + f.gradients.bytes() + f.optimizer_bytes_per_param();
        assert_eq!(per_param, 18.0);
        // fp16 engines keep fp16 gradients: 16 bytes.
        let f = Precision::Fp16.formats();
        assert_eq!(f.gradients, NumberFormat::Fp16);
        let per_param = f.weights.bytes() + f.gradients.bytes() + f.optimizer_bytes_per_param();
        assert_eq!(per_param, 16.0);
    }

    #[test]
    fn mixed_precision_keeps_fp32_master_and_moments() {
        let f = Precision::Fp16.formats();
        assert_eq!(f.weights.bytes() + f.gradients.bytes(), 4.0);
        assert_eq!(f.optimizer_bytes_per_param(), 12.0);
        let f = Precision::Fp32.formats();
        assert_eq!(f.optimizer_bytes_per_param(), 8.0);
        assert_eq!(f.activations.bytes(), 4.0);
    }

    #[test]
    fn engines_refuse_what_they_cannot_run() {
        let s = TrainingSetup {
            schedule: Schedule::Interleaved { virtual_stages: 2 },
            engine: Some(Engine::DeepSpeed),
            ..TrainingSetup::default()
        };
        let e = s.check().unwrap_err().to_string();
        assert!(e.contains("deepspeed cannot run the interleaved:2"), "{e}");
        let s = TrainingSetup {
            optimizer_sharding: OptimizerSharding::Zero3,
            engine: Some(Engine::Megatron),
            ..TrainingSetup::default()
        };
        assert!(s.check().is_err());
        assert!(parse_schedule("interleaved:0").is_err());
        assert_eq!(parse_schedule("interleaved:1"), Ok(Schedule::OneFOneB));
        // torchtitan's mixed precision is bf16 (or fp32); fp16 stays the
        // other engines'.
        let fp16 = |engine| TrainingSetup {
            formats: Precision::Fp16.formats(),
            ..TrainingSetup::default().on_engine(engine)
        };
        let e = fp16(Engine::Torchtitan).check().unwrap_err().to_string();
        assert!(e.contains("torchtitan trains in bf16 or fp32"), "{e}");
        fp16(Engine::Megatron).check().unwrap();
        fp16(Engine::DeepSpeed).check().unwrap();
        // Nor does it compute Megatron-LM's loss, which DeepSpeed's pipeline
        // GPT (Megatron-DeepSpeed's) does.
        let megatron_loss = |engine| TrainingSetup {
            cross_entropy: Some(CrossEntropy::Megatron),
            ..TrainingSetup::default().on_engine(engine)
        };
        let e = megatron_loss(Engine::Torchtitan)
            .check()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("torchtitan computes PyTorch's cross entropy"),
            "{e}"
        );
        megatron_loss(Engine::DeepSpeed).check().unwrap();
    }

    #[test]
    fn fp8_is_megatrons_alone() {
        let with = |engine| TrainingSetup {
            engine,
            formats: Precision::Fp8.formats(),
            ..TrainingSetup::default()
        };
        assert!(with(Some(Engine::Megatron)).check().is_ok());
        for (engine, name) in [
            (None, "plain PyTorch"),
            (Some(Engine::DeepSpeed), "deepspeed"),
            (Some(Engine::Torchtitan), "torchtitan"),
        ] {
            let e = with(engine).check().unwrap_err().to_string();
            assert!(
                e.contains(&format!("not for {name}")) && e.contains("`--engine megatron`"),
                "{e}"
            );
        }
    }

    #[test]
    fn the_chunked_loss_is_torchtitans_alone() {
        let with = |engine| TrainingSetup {
            engine,
            cross_entropy: Some(CrossEntropy::Chunked),
            ..TrainingSetup::default()
        };
        assert!(with(Some(Engine::Torchtitan)).check().is_ok());
        for engine in [None, Some(Engine::Megatron), Some(Engine::DeepSpeed)] {
            let e = with(engine).check().unwrap_err().to_string();
            assert!(
                e.contains("ChunkedLossWrapper") && e.contains("target torchtitan"),
                "{e}"
            );
        }
        assert_eq!(
            Engine::Torchtitan.default_cross_entropy(),
            CrossEntropy::Chunked
        );
        assert_eq!("chunked".parse::<CrossEntropy>(), Ok(CrossEntropy::Chunked));
    }

    #[test]
    fn compile_is_torchtitans_alone_and_recorded_when_on() {
        let with = |engine| TrainingSetup {
            engine,
            compile: true,
            ..TrainingSetup::default()
        };
        let titan = with(Some(Engine::Torchtitan));
        assert!(titan.check().is_ok());
        assert!(titan.summary().contains("compiled"), "{}", titan.summary());
        for engine in [None, Some(Engine::Megatron), Some(Engine::DeepSpeed)] {
            let e = with(engine).check().unwrap_err().to_string();
            assert!(
                e.contains("torch.compile") && e.contains("target torchtitan"),
                "{e}"
            );
        }
        // A plan file records it only when on; one that does not reads off.
        let text = serde_json::to_string(&titan).unwrap();
        assert!(text.contains("\"compile\":true"), "{text}");
        assert_eq!(serde_json::from_str::<TrainingSetup>(&text).unwrap(), titan);
        let off = TrainingSetup {
            compile: false,
            ..titan
        };
        let text = serde_json::to_string(&off).unwrap();
        assert!(!text.contains("compile"), "{text}");
        assert_eq!(serde_json::from_str::<TrainingSetup>(&text).unwrap(), off);
    }

    #[test]
    fn tp_comm_overlap_is_megatrons_under_sequence_parallelism() {
        let with = |engine, sequence_parallel| TrainingSetup {
            engine,
            sequence_parallel,
            tp_comm_overlap: true,
            ..TrainingSetup::default()
        };
        let on = with(Some(Engine::Megatron), true);
        assert!(on.check().is_ok());
        assert!(on.summary().contains("tp comm overlap"), "{}", on.summary());
        let e = with(Some(Engine::Megatron), false)
            .check()
            .unwrap_err()
            .to_string();
        assert!(e.contains("only under sequence parallelism"), "{e}");
        for engine in [None, Some(Engine::DeepSpeed), Some(Engine::Torchtitan)] {
            let e = with(engine, true).check().unwrap_err().to_string();
            assert!(
                e.contains("`--tp-comm-overlap`") && e.contains("target megatron"),
                "{e}"
            );
        }
        // Recorded only when on; a file without it reads off.
        let text = serde_json::to_string(&on).unwrap();
        assert!(text.contains("\"tp_comm_overlap\":true"), "{text}");
        assert_eq!(serde_json::from_str::<TrainingSetup>(&text).unwrap(), on);
        let off = TrainingSetup {
            tp_comm_overlap: false,
            ..on
        };
        assert!(!serde_json::to_string(&off)
            .unwrap()
            .contains("tp_comm_overlap"));
    }

    #[test]
    fn deepspeed_keeps_bf16_gradients_under_zero() {
        // DeepSpeed accumulates in the model's dtype unless its config says
        // otherwise, under ZeRO and without it (its pipeline engine's
        // `BF16_Optimizer`, amp's export at one stage or more). Megatron-LM
        // and fp16 do not change.
        let with = |engine, sharding| TrainingSetup {
            engine,
            optimizer_sharding: sharding,
            ..TrainingSetup::default()
        };
        let grads = |s: TrainingSetup, pp| s.for_pipeline(pp).formats.gradients;
        let ds = Some(Engine::DeepSpeed);
        for sharding in [
            OptimizerSharding::Zero1,
            OptimizerSharding::Zero2,
            OptimizerSharding::Zero3,
        ] {
            assert_eq!(grads(with(ds, sharding), 1), NumberFormat::Bf16);
        }
        for pp in [1, 4] {
            assert_eq!(
                grads(with(ds, OptimizerSharding::None), pp),
                NumberFormat::Bf16
            );
        }
        assert_eq!(
            grads(with(ds, OptimizerSharding::Zero1), 4),
            NumberFormat::Bf16
        );
        for engine in [None, Some(Engine::Megatron), Some(Engine::Torchtitan)] {
            assert_eq!(
                grads(with(engine, OptimizerSharding::None), 1),
                NumberFormat::Fp32
            );
        }
        let fp16 = TrainingSetup {
            formats: Precision::Fp16.formats(),
            ..with(ds, OptimizerSharding::None)
        };
        assert_eq!(grads(fp16, 4), NumberFormat::Fp16);
    }
}

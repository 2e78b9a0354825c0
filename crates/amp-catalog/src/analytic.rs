//! The analytic compute model: per-layer forward, backward and optimizer
//! times from FLOPs and bytes against a GPU's datasheet peaks, used where no
//! profile covers a (GPU, tensor-parallel degree).
//!
//! Each layer is decomposed into the kernels eager PyTorch / Megatron runs
//! for it:
//! - **GEMMs** (QKV, attention output, MLP, vocabulary projection; with
//!   materialised attention also the two batched score GEMMs): time
//!   `max(flops / (peak x eff), bytes / (bandwidth x memory_efficiency))`,
//!   where `eff = matmul_max_efficiency x sat(M) sat(K) sat(N) x fill`,
//!   `sat(x) = x / (x + matmul_half_dim)` (small or skinny matrices waste
//!   tensor-core tiles) and `fill = min(1, tiles x splitK / SMs)` (too few
//!   output tiles leave SMs idle). Backward runs two GEMMs (data and weight
//!   gradient) per forward GEMM.
//! - **fused attention** (FlashAttention-2) at a fixed fraction of the peak
//!   that warp-level MMA reaches, half the FLOPs when causal, 2.5x the
//!   forward FLOPs in backward;
//! - **memory-bound operations** (norms, activation, dropout, residual adds,
//!   reshapes, softmax over materialised scores, the loss): bytes moved over
//!   `bandwidth x memory_efficiency`; backward moves twice the bytes;
//! - a **host floor**: each kernel costs `cpu_op_overhead_s` of host time
//!   (backward `backward_ops_per_forward_op` times as many), and a layer
//!   takes `max(GPU time, host time)`.
//!
//! - under torchtitan, which runs without torch.compile by default, the
//!   block's own Python kernels where they are not fused: its rotary
//!   embedding on fp32 copies of q and k, and SiLU and the gate's product
//!   apart (its RMSNorm is PyTorch's fused kernel, its QKV one projection);
//! - without an engine (eager PyTorch), 16-bit precision is **autocast**
//!   over fp32 weights: each micro-batch casts every linear layer's weights
//!   to 16 bits forward and casts and accumulates their gradients into fp32
//!   backward, priced as memory-bound kernels. The residual stream stays
//!   fp32 (the embedding, norms and residual adds move 4-byte elements), and
//!   every linear layer fed by a norm casts its input to 16 bits first.
//!
//! Optimizer step (Adam/AdamW): `adam_bytes_per_param` bytes per parameter
//! of the shard over the memory bandwidth (`fused_adam_bytes_per_param` for
//! a fused step: every engine's default, or `--optimizer-step fused`), plus
//! host time of its kernels.
//!
//! Times are compute only: tensor-parallel all-reduces and pipeline sends
//! are the cost model's to add. The constants live in `data/analytic.toml`
//! with their provenance; the same set serves every GPU and model.

use serde::{Deserialize, Serialize};

use amp_core::model::{Activation, LayerKind, Model, NormKind, PositionEmbedding};
use amp_core::profile::{Profile, ProfileEntry};

use crate::hardware::{Catalog, Gpu};
use crate::CatalogError;

const ANALYTIC_TOML: &str = include_str!("../data/analytic.toml");

/// Number format of the matrix products (the training setup's own type).
pub use amp_core::setup::Precision;
use amp_core::setup::{BlockKernels, CrossEntropy, Engine, OptimizerStep};

/// How attention is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttentionImpl {
    /// Fused (FlashAttention-2, PyTorch SDPA): no `s x s` tensor in memory.
    Flash,
    /// Scores materialised: two batched GEMMs and elementwise passes over
    /// the `heads x s x s` score tensor.
    Explicit,
}

/// Choices of the analytic model.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AnalyticOptions {
    pub precision: Precision,
    /// `None`: explicit attention for a model whose stored activations
    /// count the `s x s` scores (its architecture's `flash_attention` is
    /// false), a fused kernel for one whose architecture says fused, as
    /// PyTorch's SDPA dispatches it: FlashAttention in 16-bit precision on
    /// GPUs from Ampere on ([`Gpu::runs_flash_attention`]), its
    /// memory-efficient kernel otherwise; for a model that does not say,
    /// FlashAttention where it runs, else explicit. `Flash` is a fused
    /// kernel, chosen as for a fused architecture.
    pub attention: Option<AttentionImpl>,
    /// Causal (decoder) attention: fused kernels skip the masked half.
    pub causal: bool,
    /// The engine that builds the model, for its vocabulary padding
    /// ([`Engine::padded_vocab`]); `None`: the model's vocabulary as it is
    /// (eager PyTorch).
    #[serde(default)]
    pub engine: Option<Engine>,
    /// The Adam(W) step; `None`: fused with an engine, else PyTorch's
    /// default foreach ([`amp_core::setup::TrainingSetup::optimizer_step`]).
    #[serde(default)]
    pub optimizer_step: Option<OptimizerStep>,
    /// The loss kernel; `None`: the engine's, else PyTorch's
    /// ([`amp_core::setup::TrainingSetup::cross_entropy`]).
    #[serde(default)]
    pub cross_entropy: Option<CrossEntropy>,
    /// The blocks' kernels; `None`: the engine's, eager without one
    /// ([`amp_core::setup::TrainingSetup::eager_blocks`]).
    #[serde(default)]
    pub block_kernels: Option<BlockKernels>,
    /// torchtitan's blocks compiled (`TrainingSetup::compile`): Inductor
    /// fuses the elementwise kernels eager torchtitan runs apart, as an
    /// engine's fused kernels do.
    #[serde(default)]
    pub compiled: bool,
}

impl Default for AnalyticOptions {
    fn default() -> Self {
        AnalyticOptions {
            precision: Precision::Bf16,
            attention: None,
            causal: true,
            engine: None,
            optimizer_step: None,
            cross_entropy: None,
            block_kernels: None,
            compiled: false,
        }
    }
}

/// The constants of `data/analytic.toml` (see there for their sources).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Constants {
    pub matmul_max_efficiency: f64,
    pub matmul_half_dim: f64,
    pub matmul_tile: f64,
    pub splitk_depth: f64,
    pub unaligned_matmul_efficiency: f64,
    pub memory_efficiency: f64,
    pub cpu_op_overhead_s: f64,
    pub kernel_min_s: f64,
    pub backward_ops_per_forward_op: f64,
    pub explicit_attention_passes: f64,
    pub flash_forward_efficiency: f64,
    pub flash_backward_efficiency: f64,
    pub memory_efficient_forward_efficiency: f64,
    pub memory_efficient_backward_efficiency: f64,
    pub adam_bytes_per_param: f64,
    pub fused_adam_bytes_per_param: f64,
    pub autocast_forward_bytes_per_param: f64,
    pub autocast_backward_bytes_per_param: f64,
    pub autocast_casts_per_block: f64,
    pub optimizer_ops_per_layer: f64,
    pub pytorch_cross_entropy_forward_bytes_per_logit: f64,
    pub pytorch_cross_entropy_backward_bytes_per_logit: f64,
    pub megatron_cross_entropy_forward_bytes_per_logit: f64,
    pub megatron_cross_entropy_backward_bytes_per_logit: f64,
    pub pytorch_cross_entropy_ops: [f64; 2],
    pub megatron_cross_entropy_ops: [f64; 2],
    pub eager_rmsnorm_ops: f64,
    pub eager_rmsnorm_passes: f64,
    pub eager_rope_ops_per_tensor: f64,
    pub eager_rope_passes: f64,
    pub torchtitan_complex_rope_ops_per_tensor: f64,
    pub torchtitan_complex_rope_bytes_per_elem: f64,
    pub torchtitan_cossin_rope_ops_per_tensor: f64,
    pub torchtitan_cossin_rope_bytes_per_elem: f64,
    pub eager_gelu_new_ops: f64,
    pub eager_gelu_new_passes: f64,
    pub eager_gelu_new_autocast_ops: f64,
    pub eager_gelu_new_autocast_passes: [f64; 2],
}

impl Constants {
    pub fn builtin() -> Constants {
        toml::from_str(ANALYTIC_TOML)
            .expect("the compiled-in analytic.toml parses (checked by tests)")
    }
}

/// Predicted times of one layer for one micro-batch on one GPU of a
/// tensor-parallel group.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LayerEstimate {
    pub forward_s: f64,
    pub backward_s: f64,
    pub optimizer_s: f64,
}

/// GPU-side time and host-side kernel count of a pass.
#[derive(Debug, Default, Clone, Copy)]
struct Pass {
    gpu_s: f64,
    ops: f64,
}

/// The machine a layer runs on, at a precision.
struct Machine<'a> {
    c: &'a Constants,
    peak: f64,
    mma_peak: f64,
    bw: f64,
    sms: f64,
    e: f64,
    /// Efficiency factor of a GEMM with rows that are not a whole number of
    /// 16-byte vectors (1 where alignment does not matter: fp32 and tf32).
    unaligned: f64,
}

impl Machine<'_> {
    fn sat(&self, x: f64) -> f64 {
        x / (x + self.c.matmul_half_dim)
    }

    /// One (batched) GEMM of `batch` products of (m x k) by (k x n).
    /// `rows` are the lengths, in elements, of the operands' contiguous rows
    /// that are not known to be aligned (the caller names the dimensions
    /// that come from the model's shape, e.g. the vocabulary); if any is not
    /// a whole number of 16-byte vectors the GEMM runs unaligned kernels.
    fn gemm(&self, p: &mut Pass, m: f64, k: f64, n: f64, batch: f64, rows: &[f64]) {
        let flops = 2.0 * m * k * n * batch;
        let tile = self.c.matmul_tile;
        let tiles = (m / tile).ceil() * (n / tile).ceil() * batch;
        let split = (k / self.c.splitk_depth).floor().max(1.0);
        let fill = (tiles * split / self.sms).min(1.0);
        let vector = 16.0 / self.e;
        let aligned = rows.iter().all(|r| (r / vector).fract() == 0.0);
        let align = if aligned { 1.0 } else { self.unaligned };
        let eff =
            self.c.matmul_max_efficiency * self.sat(m) * self.sat(k) * self.sat(n) * fill * align;
        let compute = flops / (self.peak * eff);
        let bytes = (m * k + k * n + m * n) * batch * self.e;
        let memory = bytes / (self.bw * self.c.memory_efficiency);
        p.gpu_s += compute.max(memory).max(self.c.kernel_min_s);
        p.ops += 1.0;
    }

    /// `ops` memory-bound kernels moving `bytes` in all.
    fn stream(&self, p: &mut Pass, bytes: f64, ops: f64) {
        let t = bytes / (self.bw * self.c.memory_efficiency);
        p.gpu_s += t.max(self.c.kernel_min_s * ops);
        p.ops += ops;
    }

    /// A fused attention kernel doing `flops` at `efficiency` of the MMA
    /// peak while moving `bytes`.
    fn fused(&self, p: &mut Pass, flops: f64, efficiency: f64, bytes: f64) {
        let compute = flops / (self.mma_peak * efficiency);
        let memory = bytes / (self.bw * self.c.memory_efficiency);
        p.gpu_s += compute.max(memory).max(self.c.kernel_min_s);
        p.ops += 1.0;
    }

    /// Autocast's per-micro-batch weight traffic for `params` parameters
    /// in `casts` tensors: the 16-bit casts forward, the cast back and the
    /// fp32 accumulation of the weight gradients backward.
    fn autocast(&self, f: &mut Pass, bw: &mut Pass, params: f64, casts: f64) {
        self.stream(f, self.c.autocast_forward_bytes_per_param * params, casts);
        self.stream(
            bw,
            self.c.autocast_backward_bytes_per_param * params,
            2.0 * casts,
        );
    }

    /// Autocast's cast of a linear layer's fp32 input (`elems` elements of
    /// a residual stream of `residual_bytes` per element) to 16 bits: one
    /// kernel reading the stream and writing the 16-bit copy. Nothing when
    /// the stream is already 16-bit.
    fn cast_in(&self, p: &mut Pass, elems: f64, residual_bytes: f64) {
        if residual_bytes > self.e {
            self.stream(p, elems * (residual_bytes + self.e), 1.0);
        }
    }

    fn time(&self, p: Pass) -> f64 {
        p.gpu_s.max(p.ops * self.c.cpu_op_overhead_s)
    }
}

/// Dimensions of a transformer block as the analytic model needs them.
#[derive(Debug, Clone, Copy)]
struct BlockDims {
    s: f64,
    h: f64,
    heads: f64,
    head_dim: f64,
    /// Output width of the fused QKV projection.
    qkv: f64,
    /// MLP width, as an equivalent two-matrix MLP.
    ffn: f64,
    /// `s`, `h` and `heads` come from the model's shape (whole numbers)
    /// rather than from its parameter count.
    shaped: bool,
}

fn block_dims(model: &Model, layer: usize) -> BlockDims {
    let l = &model.layers[layer];
    let params = l.params as f64;
    let (s, h, heads, shaped) = match &model.shape {
        Some(sh) if sh.hidden > 0 && sh.seq_len > 0 => {
            let heads = if sh.heads > 0 {
                sh.heads
            } else {
                (sh.hidden / 64).max(1)
            };
            (sh.seq_len as f64, sh.hidden as f64, heads as f64, true)
        }
        _ => {
            // No shape: a standard block holds about 12 w^2 weights.
            let w = (params / 12.0).sqrt().max(1.0);
            let s = (l.output_elems_per_sample as f64 / w).max(1.0);
            (s, w, (w / 64.0).floor().max(1.0), false)
        }
    };
    let head_dim = h / heads;
    // Matrix weights from the FLOPs when known (2 s P + 4 s^2 h), else the
    // parameter count; attention projections from the architecture's heads
    // (grouped-query attention's keys and values are narrower), else
    // assumed 4 h^2 (3 h QKV + h out), unless that leaves too little for an
    // MLP.
    let matmul = match l.forward_flops_per_sample {
        Some(f) if f > 0.0 => ((f - 4.0 * s * s * h) / (2.0 * s)).max(0.0),
        _ => params,
    };
    let (attn, qkv) = match model.architecture().filter(|_| shaped) {
        Some(a) => {
            let q = heads * a.head_dim as f64;
            let qkv = q + 2.0 * (a.kv_heads * a.head_dim) as f64;
            let attn = (h * qkv + q * h).min(matmul / 2.0);
            (attn, qkv.min(attn / h))
        }
        None => {
            let attn = (4.0 * h * h).min(matmul / 2.0);
            (attn, (attn - h * h).max(attn / 4.0) / h)
        }
    };
    let ffn = ((matmul - attn) / (2.0 * h)).max(1.0);
    BlockDims {
        s,
        h,
        heads,
        head_dim,
        qkv,
        ffn,
        shaped,
    }
}

/// Seconds of one layer of `model` on `gpu` at tensor-parallel degree `tp`
/// for one micro-batch of `micro_batch` samples.
pub fn layer_estimate(
    model: &Model,
    layer: usize,
    gpu: &Gpu,
    tp: usize,
    micro_batch: usize,
    opts: &AnalyticOptions,
    c: &Constants,
) -> LayerEstimate {
    let mma_sync = gpu.mma_sync_fraction.unwrap_or(1.0);
    let machine = |precision: Precision| {
        let peak = gpu.matmul_peak_flops(precision);
        Machine {
            c,
            peak,
            mma_peak: peak * mma_sync,
            bw: gpu.memory_bytes_per_s(),
            sms: gpu.sms.unwrap_or(100) as f64,
            e: precision.formats().activations.bytes(),
            // Unaligned tensor-core GEMMs run element-wise-loading
            // warp-level MMA kernels; fp32 and tf32 GEMMs are priced
            // without the penalty.
            unaligned: if precision.is_half() {
                c.unaligned_matmul_efficiency * mma_sync
            } else {
                1.0
            },
        }
    };
    // The blocks' linear layers run at the precision's rate; under FP8
    // only they do: Megatron-LM runs Transformer Engine's FP8 linear
    // layers inside the blocks, and attention (`fp8_dot_product_attention`
    // off), the embedding and the vocabulary projection (outside the
    // blocks' FP8 context; `fp8_output_proj` is MXFP8's alone) in bf16
    // (megatron/core/transformer/transformer_config.py).
    let fp8 = opts.precision == Precision::Fp8;
    let m = machine(opts.precision);
    let m16 = machine(if fp8 { Precision::Bf16 } else { opts.precision });
    let t = tp.max(1) as f64;
    let b = micro_batch.max(1) as f64;
    let e = m.e;
    // No engine: eager PyTorch, 16-bit precision by autocast over fp32
    // weights.
    let autocast = opts.engine.is_none() && opts.precision.is_half();
    // Bytes of one element of the residual stream: under autocast it stays
    // fp32 (the embedding's fp32 weights start it, norms run in fp32 and a
    // residual add of fp32 and 16-bit gives fp32), and each linear layer
    // fed by a norm casts its input to 16 bits first ([`Machine::cast_in`]).
    let r = if autocast { 4.0 } else { e };
    let l = &model.layers[layer];
    let mut f = Pass::default();
    let mut bw = Pass::default();
    let out = l.output_elems_per_sample as f64 * b;
    match l.kind {
        LayerKind::Noop => {}
        LayerKind::TransformerBlock => {
            let d = block_dims(model, layer);
            let tok = b * d.s;
            let th = tok * d.h;
            // A model whose stored activations hold the s x s scores runs
            // explicit attention: compute and memory price one attention.
            let flash = gpu.runs_flash_attention(opts.precision);
            let fused = match (opts.attention, model.flash_attention()) {
                (Some(a), _) => a == AttentionImpl::Flash,
                (None, Some(fused)) => fused,
                // A layer list that does not say: FlashAttention where it
                // runs, else the explicit attention of the code of its day.
                (None, None) => flash,
            };
            // A fused kernel is FlashAttention where the GPU and the
            // precision allow it, else PyTorch's memory-efficient kernel,
            // which SDPA dispatches to instead: fused in memory too.
            let efficiency = fused.then_some(if flash {
                (c.flash_forward_efficiency, c.flash_backward_efficiency)
            } else {
                (
                    c.memory_efficient_forward_efficiency,
                    c.memory_efficient_backward_efficiency,
                )
            });
            // Without an engine the block runs as Hugging Face's Python
            // code writes it (where the architecture is known): composite
            // RMSNorm and rotary embedding, separate q, k and v projections
            // (all but GPT-2's fused c_attn), gate and up projections.
            let eager =
                model.eager_architecture(BlockKernels::eager(opts.block_kernels, opts.engine));
            // torchtitan without torch.compile (its default) runs its own
            // Python blocks: PyTorch's fused RMSNorm and one QKV projection
            // as an engine, but its rotary embedding on fp32 copies and the
            // gate, up, SiLU and product kernel by kernel. Compiled, Inductor
            // fuses those as an engine does.
            let titan = (opts.engine == Some(Engine::Torchtitan) && !opts.compiled)
                .then(|| model.architecture())
                .flatten();
            let rms = eager.is_some_and(|a| a.norm == NormKind::Rmsnorm);
            // Forward kernels in three groups: GEMMs (gm), memory-bound
            // kernels (st) and fused attention (at).
            let (mut gm, mut st, mut at, mut at_back) = (
                Pass::default(),
                Pass::default(),
                Pass::default(),
                Pass::default(),
            );
            // A norm: one fused kernel, or Hugging Face's composite RMSNorm.
            let norm = |st: &mut Pass| {
                if rms {
                    m.stream(st, c.eager_rmsnorm_passes * th * r, c.eager_rmsnorm_ops);
                } else {
                    m.stream(st, 2.0 * th * r, 1.0);
                }
            };
            // Autocast casts each projection's fp32 input itself (its cache
            // holds parameters' casts only): q, k and v written apart cast
            // the norm's output three times, gate and up twice.
            let casts = |n: usize, st: &mut Pass| {
                for _ in 0..n {
                    m.cast_in(st, th, r);
                }
            };
            // Layer norm, QKV projection, head split.
            norm(&mut st);
            casts(
                if eager.is_some_and(|a| !a.fused_qkv()) {
                    3
                } else {
                    1
                },
                &mut st,
            );
            match eager {
                Some(a) => {
                    let kv = (a.kv_heads * a.head_dim) as f64 / t;
                    if a.fused_qkv() {
                        m.gemm(&mut gm, tok, d.h, d.qkv / t, 1.0, &[]);
                    } else {
                        m.gemm(&mut gm, tok, d.h, (d.qkv / t - 2.0 * kv).max(1.0), 1.0, &[]);
                        m.gemm(&mut gm, tok, d.h, kv, 1.0, &[]);
                        m.gemm(&mut gm, tok, d.h, kv, 1.0, &[]);
                    }
                    // This rank's query and key elements.
                    let qk = tok * (d.qkv / t - kv);
                    if a.qk_norm {
                        // Two composite RMSNorms (q_norm, k_norm of Qwen3
                        // and Gemma 3).
                        m.stream(
                            &mut st,
                            c.eager_rmsnorm_passes * qk * r,
                            2.0 * c.eager_rmsnorm_ops,
                        );
                    }
                    if a.position_embedding == PositionEmbedding::Rope {
                        m.stream(
                            &mut st,
                            c.eager_rope_passes * qk * r,
                            2.0 * c.eager_rope_ops_per_tensor,
                        );
                    }
                }
                None => {
                    m.gemm(&mut gm, tok, d.h, d.qkv / t, 1.0, &[]);
                    if let Some(a) = model.architecture().filter(|a| a.qk_norm) {
                        // An engine's fused norm on the queries, one on the
                        // keys: each reads and writes them.
                        let kv = (a.kv_heads * a.head_dim) as f64 / t;
                        m.stream(&mut st, 2.0 * tok * (d.qkv / t - kv) * e, 2.0);
                    }
                    if let Some(a) =
                        titan.filter(|a| a.position_embedding == PositionEmbedding::Rope)
                    {
                        // torchtitan/models/common/rope.py on q and k:
                        // Qwen3's rotate-half form, Llama 3's complex one.
                        let qk = tok
                            * ((d.heads as u64 * a.head_dim + a.kv_heads * a.head_dim) as f64)
                            / t;
                        let (ops, bytes) = if a.family == "qwen3" {
                            (
                                c.torchtitan_cossin_rope_ops_per_tensor,
                                c.torchtitan_cossin_rope_bytes_per_elem,
                            )
                        } else {
                            (
                                c.torchtitan_complex_rope_ops_per_tensor,
                                c.torchtitan_complex_rope_bytes_per_elem,
                            )
                        };
                        m.stream(&mut st, bytes * qk, 2.0 * ops);
                    }
                }
            }
            m.stream(&mut st, 2.0 * tok * d.qkv / t * e, 2.0);
            let batch = b * d.heads / t;
            if let Some((forward, backward)) = efficiency {
                let causal = if opts.causal { 0.5 } else { 1.0 };
                let flops = 4.0 * b * d.s * d.s * d.h / t * causal;
                let io = 4.0 * th / t * e;
                m16.fused(&mut at, flops, forward, io);
                m16.fused(&mut at_back, 2.5 * flops, backward, 2.0 * io);
            } else {
                // Score rows are s long: an odd sequence misaligns them.
                let rows: &[f64] = if d.shaped { &[d.s, d.head_dim] } else { &[] };
                m16.gemm(&mut gm, d.s, d.head_dim, d.s, batch, rows);
                m.stream(
                    &mut st,
                    c.explicit_attention_passes * batch * d.s * d.s * e,
                    4.0,
                );
                m16.gemm(&mut gm, d.s, d.s, d.head_dim, batch, rows);
            }
            // Gemma's norms on the branches' outputs, before each residual
            // add.
            let post_norms = model.architecture().is_some_and(|a| a.post_norms);
            // Head merge, output projection, dropout, residual add, norm.
            m.stream(&mut st, 2.0 * th / t * e, 1.0);
            m.gemm(&mut gm, tok, d.h / t, d.h, 1.0, &[]);
            if post_norms {
                norm(&mut st);
            }
            // Dropout on the 16-bit branch; the residual add reads the
            // stream and the branch and writes the stream; the norm reads
            // and writes the stream.
            m.stream(&mut st, th * (2.0 * e + 1.0) + th * (2.0 * r + e), 2.0);
            norm(&mut st);
            let separate_gate_up = eager.is_some_and(|a| a.gated() && !a.fused_gate_up());
            casts(if separate_gate_up { 2 } else { 1 }, &mut st);
            // MLP, activation, dropout, residual add.
            match eager.or(titan).filter(|a| a.gated()) {
                // Gate and up projections, SiLU (GeLU's tanh form: one
                // kernel too), their product, down.
                Some(a) => {
                    let f = a.ffn_hidden as f64 / t;
                    if a.fused_gate_up() {
                        m.gemm(&mut gm, tok, d.h, 2.0 * f, 1.0, &[]);
                    } else {
                        m.gemm(&mut gm, tok, d.h, f, 1.0, &[]);
                        m.gemm(&mut gm, tok, d.h, f, 1.0, &[]);
                    }
                    m.stream(&mut st, 5.0 * tok * f * e, 2.0);
                    m.gemm(&mut gm, tok, f, d.h, 1.0, &[]);
                }
                None => {
                    let inner = tok * d.ffn / t;
                    m.gemm(&mut gm, tok, d.h, d.ffn / t, 1.0, &[]);
                    if eager.is_some_and(|a| a.activation == Activation::GeluNew) {
                        // Hugging Face's NewGELUActivation, kernel by
                        // kernel; under autocast mostly in fp32.
                        let (passes, ops) = if autocast {
                            let [half, fp32] = c.eager_gelu_new_autocast_passes;
                            (half * e + fp32 * 4.0, c.eager_gelu_new_autocast_ops)
                        } else {
                            (c.eager_gelu_new_passes * e, c.eager_gelu_new_ops)
                        };
                        m.stream(&mut st, passes * inner, ops);
                    } else {
                        m.stream(&mut st, 2.0 * inner * e, 1.0);
                    }
                    m.gemm(&mut gm, tok, d.ffn / t, d.h, 1.0, &[]);
                }
            }
            if post_norms {
                norm(&mut st);
            }
            m.stream(&mut st, th * (2.0 * e + 1.0) + th * (2.0 * r + e), 2.0);
            f.gpu_s = gm.gpu_s + st.gpu_s + at.gpu_s;
            f.ops = gm.ops + st.ops + at.ops;
            // Backward: two GEMMs (data and weight gradient) per forward
            // GEMM, twice the streamed bytes, the fused attention backward.
            bw.gpu_s = 2.0 * gm.gpu_s + 2.0 * st.gpu_s + at_back.gpu_s;
            bw.ops = f.ops * c.backward_ops_per_forward_op;
            if autocast {
                let params = l.params as f64 / t;
                m.autocast(&mut f, &mut bw, params, c.autocast_casts_per_block);
            }
            if fp8 {
                // Transformer Engine's casts to FP8 (transformer_engine/
                // pytorch/module/linear.py): the linear layers fed by a
                // norm get their FP8 input from the fused norm
                // (LayerNormLinear); the attention output projection and
                // the second MLP layer cast theirs, and backward every
                // linear layer casts its output gradient. Each cast reads
                // the 16-bit tensor and writes the row-wise and the
                // column-wise (transposed) FP8 copies the data- and
                // weight-gradient products read, 1 byte each. Weights are
                // cast once an iteration and cached (not priced here).
                let cast = e + 2.0;
                m.stream(&mut f, cast * (th / t + tok * d.ffn / t), 2.0);
                m.stream(
                    &mut bw,
                    cast * (tok * d.qkv / t + th + tok * d.ffn / t + th),
                    4.0,
                );
            }
        }
        LayerKind::Embedding => {
            let (h, s) = hidden_and_seq(model);
            // Gather, position add, dropout: about 6 passes over the output
            // (the residual stream's first value).
            m.stream(&mut f, 6.0 * out * r, 3.0);
            // Backward: zero the dense gradient of this rank's rows, then
            // scatter-add the output gradient.
            let table = l.params as f64 / t;
            m.stream(
                &mut bw,
                table * r + 4.0 * out * r,
                2.0 * c.backward_ops_per_forward_op,
            );
            if let Some(flops) = l.forward_flops_per_sample.filter(|x| *x > 0.0) {
                if h > 0.0 && s > 0.0 {
                    let k = flops / (2.0 * s * h);
                    m16.gemm(&mut f, b * s, k, h, 1.0, &[]);
                    m16.gemm(&mut bw, b * s, k, h, 1.0, &[]);
                    m16.gemm(&mut bw, b * s, k, h, 1.0, &[]);
                }
            }
        }
        LayerKind::VocabProjection => {
            let s = model
                .shape
                .as_ref()
                .map(|s| s.seq_len as f64)
                .unwrap_or(1.0)
                .max(1.0);
            let vocab = model.shape.as_ref().map_or(0, |s| s.vocab);
            let k = match l.forward_flops_per_sample {
                Some(flops) if vocab > 0 => flops / (2.0 * s * vocab as f64),
                _ => model.shape.as_ref().map(|s| s.hidden as f64).unwrap_or(1.0),
            };
            let tok = b * s;
            // This rank's columns of the logits: the (padded) vocabulary
            // over tp when the model names it, else the layer's output.
            let n = match rank_vocab(vocab, tp, opts.engine) {
                Some(v) => v as f64,
                None => out / t / tok,
            };
            let logits = tok * n;
            // Forward writes rows of n logits; both backward GEMMs read them.
            let rows = [n];
            m.cast_in(&mut f, tok * k, r);
            m16.gemm(&mut f, tok, k, n, 1.0, &rows);
            m16.gemm(&mut bw, tok, n, k, 1.0, &rows);
            m16.gemm(&mut bw, n, tok, k, 1.0, &rows);
            // The input's gradient back into the fp32 stream.
            m.cast_in(&mut bw, tok * k, r);
            if autocast {
                // This rank's n x k weight, tied or not.
                m.autocast(&mut f, &mut bw, n * k, 1.0);
            }
            // The loss in fp32, as its kernel runs it: the cast of 16-bit
            // logits (and back for their gradient), then its own passes.
            let ce = opts
                .cross_entropy
                .unwrap_or_else(|| CrossEntropy::default_for(opts.engine));
            // torchtitan's chunked loss runs the same kernels slice by slice
            // (the same bytes; its backward inside the forward pass, which
            // one micro-batch's total does not see).
            let (fwd, back, ops) = match ce {
                CrossEntropy::Pytorch | CrossEntropy::Chunked => (
                    c.pytorch_cross_entropy_forward_bytes_per_logit,
                    c.pytorch_cross_entropy_backward_bytes_per_logit,
                    c.pytorch_cross_entropy_ops,
                ),
                CrossEntropy::Megatron => (
                    c.megatron_cross_entropy_forward_bytes_per_logit,
                    c.megatron_cross_entropy_backward_bytes_per_logit,
                    c.megatron_cross_entropy_ops,
                ),
            };
            let cast = if e < 4.0 { e + 4.0 } else { 0.0 };
            m.stream(&mut f, logits * (cast + fwd), ops[0]);
            m.stream(&mut bw, logits * (cast + back), ops[1]);
        }
        LayerKind::Other => {
            let (h, s) = hidden_and_seq(model);
            // A norm or other elementwise layer on the residual stream.
            m.stream(&mut f, 2.0 * out * r, 1.0);
            m.stream(&mut bw, 4.0 * out * r, c.backward_ops_per_forward_op);
            if let Some(flops) = l.forward_flops_per_sample {
                // A matrix product hides in the layer when its FLOPs exceed
                // those of a norm (about 5 per element).
                if h > 0.0 && s > 0.0 && flops > 10.0 * s * h {
                    let n = flops / (2.0 * s * h);
                    m16.gemm(&mut f, b * s, h, n, 1.0, &[]);
                    m16.gemm(&mut bw, b * s, h, n, 1.0, &[]);
                    m16.gemm(&mut bw, b * s, h, n, 1.0, &[]);
                    if autocast {
                        m.autocast(&mut f, &mut bw, l.params as f64 / t, 2.0);
                    }
                } else if h == 0.0 && flops > 0.0 {
                    m16.fused(&mut f, flops * b, c.matmul_max_efficiency, 0.0);
                    m16.fused(&mut bw, 2.0 * flops * b, c.matmul_max_efficiency, 0.0);
                }
            }
        }
    }
    let optimizer_s = if l.tied_to.is_some() || l.params == 0 {
        0.0
    } else {
        // Engines run a fused Adam; plain PyTorch its multi-tensor one,
        // unless the setup says otherwise.
        let step = opts
            .optimizer_step
            .unwrap_or_else(|| OptimizerStep::default_for(opts.engine));
        let per_param = match step {
            OptimizerStep::Fused => c.fused_adam_bytes_per_param,
            OptimizerStep::Foreach => c.adam_bytes_per_param,
        };
        let bytes = l.params as f64 / t * per_param;
        (bytes / (m.bw * c.memory_efficiency)).max(c.optimizer_ops_per_layer * c.cpu_op_overhead_s)
    };
    LayerEstimate {
        forward_s: m.time(f),
        backward_s: m.time(bw),
        optimizer_s,
    }
}

/// Profile entries from the analytic model for every (GPU type, tp) of
/// `gpu_types` x `tp_degrees` that `existing` lacks: one entry per
/// micro-batch size in `micro_batches`, with forward, backward and
/// optimizer times and source "analytic". GPU types are looked up in the
/// catalog by name or alias; entries keep the caller's spelling so that
/// they match the cluster's node types. Default options: BF16 mixed
/// precision, attention chosen per GPU, causal.
pub fn analytic_profile(
    model: &Model,
    gpu_types: &[String],
    tp_degrees: &[usize],
    micro_batches: &[usize],
    existing: &Profile,
) -> Result<Profile, CatalogError> {
    analytic_profile_with(
        model,
        gpu_types,
        tp_degrees,
        micro_batches,
        existing,
        &AnalyticOptions::default(),
        &Catalog::builtin(),
    )
}

/// [`analytic_profile`] with explicit options, GPU types looked up in
/// `catalog` (the built-in one, or one with a cluster file's own GPUs,
/// [`Catalog::with_definitions`]).
pub fn analytic_profile_with(
    model: &Model,
    gpu_types: &[String],
    tp_degrees: &[usize],
    micro_batches: &[usize],
    existing: &Profile,
    opts: &AnalyticOptions,
    catalog: &Catalog,
) -> Result<Profile, CatalogError> {
    if micro_batches.is_empty() || micro_batches.contains(&0) {
        return Err(CatalogError::invalid(
            "analytic profile",
            "micro-batch sizes must be a non-empty list of positive numbers",
        ));
    }
    if tp_degrees.contains(&0) {
        return Err(CatalogError::invalid(
            "analytic profile",
            "tensor-parallel degree 0 is not allowed; use 1 for no tensor parallelism",
        ));
    }
    if model.layers.is_empty() {
        return Err(CatalogError::invalid(
            format!("model `{}`", model.name),
            "has no layers",
        ));
    }
    let c = Constants::builtin();
    let mut mbs: Vec<usize> = micro_batches.to_vec();
    mbs.sort_unstable();
    mbs.dedup();
    let mut tps: Vec<usize> = tp_degrees.to_vec();
    tps.sort_unstable();
    tps.dedup();
    let mut entries = Vec::new();
    for name in gpu_types {
        let gpu = catalog.gpu(name)?;
        if let Some(why) = gpu.lacks(opts.precision) {
            return Err(CatalogError::invalid(
                format!("precision {} on `{name}`", opts.precision),
                format!("{why}; plan it in {}", precision_instead(gpu, opts.engine)),
            ));
        }
        for &tp in &tps {
            if existing.has(name, tp) {
                continue;
            }
            for &mb in &mbs {
                let est: Vec<LayerEstimate> = (0..model.layers.len())
                    .map(|l| layer_estimate(model, l, gpu, tp, mb, opts, &c))
                    .collect();
                entries.push(ProfileEntry {
                    gpu: name.clone(),
                    tp,
                    micro_batch: Some(mb),
                    forward_s: est.iter().map(|x| x.forward_s).collect(),
                    backward_s: Some(est.iter().map(|x| x.backward_s).collect()),
                    optimizer_s: Some(est.iter().map(|x| x.optimizer_s).collect()),
                    source: Some(ANALYTIC_SOURCE.to_string()),
                });
            }
        }
    }
    Ok(Profile {
        entries,
        precision: None,
    })
}

/// Every tp degree a search of `cluster` can ask for (the divisors of the
/// largest node's GPU count), and the GPU types of `cluster` whose
/// `profile` lacks one of them: those the analytic model prices.
fn analytic_gpu_types(cluster: &amp_core::Cluster, profile: &Profile) -> (Vec<usize>, Vec<String>) {
    let node_max = cluster.nodes.iter().map(|n| n.gpus).max().unwrap_or(1);
    let tps: Vec<usize> = (1..=node_max)
        .filter(|t| node_max.is_multiple_of(*t))
        .collect();
    let missing = cluster
        .gpu_types()
        .into_iter()
        .filter(|g| tps.iter().any(|&t| !profile.has(g, t)))
        .collect();
    (tps, missing)
}

/// A GPU of `cluster` the catalog knows that cannot train in `setup`'s
/// precision, whether the analytic model or a profile prices it (a
/// profile measured in fp16 says nothing of bf16, which a V100 or T4 does
/// not have): why, and the precision to plan in instead.
pub fn unsupported_precision(
    cluster: &amp_core::Cluster,
    setup: &amp_core::setup::TrainingSetup,
    catalog: &Catalog,
) -> Option<(String, Precision)> {
    let mut types: Vec<&str> = cluster.nodes.iter().map(|n| n.gpu_type.as_str()).collect();
    types.sort_unstable();
    types.dedup();
    types.into_iter().find_map(|g| {
        let gpu = catalog.gpu(g).ok()?;
        let why = gpu.lacks(setup.formats.compute)?;
        Some((why, precision_instead(gpu, setup.engine)))
    })
}

/// The precision to suggest where `gpu` lacks the one asked for:
/// bf16 for FP8 where the GPU has it, else fp16, which every GPU has;
/// fp32 under torchtitan, whose mixed precision is bf16 or fp32.
fn precision_instead(gpu: &Gpu, engine: Option<Engine>) -> Precision {
    if gpu.lacks(Precision::Bf16).is_none() {
        Precision::Bf16
    } else if engine == Some(Engine::Torchtitan) {
        Precision::Fp32
    } else {
        Precision::Fp16
    }
}

/// The `source` of every analytic entry; amp-core's device model adds the
/// tensor-parallel all-reduces to entries with this source.
pub const ANALYTIC_SOURCE: &str = amp_core::profile::ANALYTIC_SOURCE;

/// One line per GPU type and source saying where its times come from, e.g.
/// `T4: tp 1, 2, 4 measured (gpt2_G4_1.npy, ...)` or
/// `H100-SXM: tp 1, 2, 4, 8 analytic model (micro-batches 1, 2, 4)`.
pub fn describe_sources(profile: &Profile) -> Vec<String> {
    use std::collections::BTreeMap;
    // gpu -> (analytic?) -> (tps, sources or micro-batches)
    let mut by: BTreeMap<(String, bool), (Vec<usize>, Vec<String>)> = BTreeMap::new();
    for e in &profile.entries {
        let analytic = e.source.as_deref() == Some(ANALYTIC_SOURCE);
        let slot = by.entry((e.gpu.clone(), analytic)).or_default();
        slot.0.push(e.tp);
        let what = if analytic {
            e.micro_batch.map(|m| m.to_string()).unwrap_or_default()
        } else {
            e.source.clone().unwrap_or_else(|| "profile".to_string())
        };
        slot.1.push(what);
    }
    by.into_iter()
        .map(|((gpu, analytic), (mut tps, mut what))| {
            tps.sort_unstable();
            tps.dedup();
            let tps = tps
                .iter()
                .map(|t| t.to_string())
                .collect::<Vec<_>>()
                .join(", ");
            if analytic {
                let mut m: Vec<usize> = what.iter().filter_map(|w| w.parse().ok()).collect();
                m.sort_unstable();
                m.dedup();
                let m = m
                    .iter()
                    .map(|x| x.to_string())
                    .collect::<Vec<_>>()
                    .join(", ");
                format!("{gpu}: tp {tps} from the analytic model (micro-batches {m})")
            } else {
                what.sort();
                what.dedup();
                let shown: Vec<String> = what.iter().take(3).cloned().collect();
                let more = if what.len() > 3 {
                    format!(", and {} more", what.len() - 3)
                } else {
                    String::new()
                };
                format!("{gpu}: tp {tps} measured ({}{more})", shown.join(", "))
            }
        })
        .collect()
}

/// Columns of the vocabulary projection one rank of a tensor-parallel group
/// of `tp` computes: the vocabulary as `engine` builds it (padded by
/// Megatron-LM) over tp, rounded up. `None` when the model names no
/// vocabulary.
fn rank_vocab(vocab: u64, tp: usize, engine: Option<Engine>) -> Option<u64> {
    if vocab == 0 {
        return None;
    }
    let tp = tp.max(1) as u64;
    Some(
        engine
            .map_or(vocab, |e| e.padded_vocab(vocab, tp))
            .div_ceil(tp),
    )
}

/// Hidden size and sequence length of a model with a transformer shape;
/// zeros otherwise (the layer then has no matrix product to price).
fn hidden_and_seq(model: &Model) -> (f64, f64) {
    model
        .shape
        .as_ref()
        .map_or((0.0, 0.0), |s| (s.hidden as f64, s.seq_len as f64))
}

/// Fills `profile` with analytic entries for the (GPU type, tp) pairs it
/// lacks among those a search of `cluster` can ask for (every tp dividing
/// the largest node's GPU count), at `micro_batches`, in the setup's
/// precision and for its engine: measured entries always win, and a profile
/// that already covers the cluster is left as it is. GPU types are looked
/// up in `catalog`.
pub fn fill_missing(
    model: &Model,
    cluster: &amp_core::Cluster,
    profile: &mut Profile,
    micro_batches: &[usize],
    setup: &amp_core::setup::TrainingSetup,
    catalog: &Catalog,
) -> Result<(), CatalogError> {
    let (tps, missing) = analytic_gpu_types(cluster, profile);
    if !missing.is_empty() {
        let extra = analytic_profile_with(
            model,
            &missing,
            &tps,
            micro_batches,
            profile,
            &AnalyticOptions {
                precision: setup.formats.compute,
                engine: setup.engine,
                optimizer_step: Some(setup.optimizer_step()),
                cross_entropy: Some(setup.cross_entropy()),
                block_kernels: setup.block_kernels,
                compiled: setup.compile,
                ..Default::default()
            },
            catalog,
        )?;
        profile.merge(extra);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zoo::{zoo_model, Arch};

    /// A block as an engine runs it (no autocast casts, whose cost does
    /// not scale with the micro-batch).
    fn est(m: &Model, gpu: &str, tp: usize, mb: usize) -> LayerEstimate {
        let cat = Catalog::builtin();
        layer_estimate(
            m,
            1,
            cat.gpu(gpu).unwrap(),
            tp,
            mb,
            &AnalyticOptions {
                engine: Some(Engine::Megatron),
                ..AnalyticOptions::default()
            },
            &Constants::builtin(),
        )
    }

    /// Under FP8 only the blocks' linear layers run at the FP8 rate, as
    /// Megatron-LM runs Transformer Engine: the embedding, the vocabulary
    /// projection and attention keep bf16's, and the blocks pay Transformer
    /// Engine's casts (two forward, four backward).
    #[test]
    fn fp8_speeds_up_only_the_blocks_linear_layers() {
        let cat = Catalog::builtin();
        let h100 = cat.gpu("H100").unwrap();
        let at = |m: &Model, layer: usize, precision| {
            layer_estimate(
                m,
                layer,
                h100,
                1,
                2,
                &AnalyticOptions {
                    precision,
                    engine: Some(Engine::Megatron),
                    ..AnalyticOptions::default()
                },
                &Constants::builtin(),
            )
        };
        let m = zoo_model("llama3-8b", Some(4096)).unwrap();
        let head = m
            .layers
            .iter()
            .position(|l| l.kind == LayerKind::VocabProjection)
            .unwrap();
        for l in [0, head] {
            assert_eq!(at(&m, l, Precision::Fp8), at(&m, l, Precision::Bf16));
        }
        let (fp8, bf16) = (at(&m, 1, Precision::Fp8), at(&m, 1, Precision::Bf16));
        // The linear layers at twice the rate would make the block 0.5 of
        // bf16's at most; attention and the casts keep it well above.
        let fwd = fp8.forward_s / bf16.forward_s;
        let bwd = fp8.backward_s / bf16.backward_s;
        assert!((0.55..0.8).contains(&fwd), "{fwd}");
        assert!((0.55..0.8).contains(&bwd), "{bwd}");
        // At a long sequence attention dominates and FP8 gains less.
        let long = zoo_model("llama3-8b", Some(32768)).unwrap();
        let (fp8, bf16) = (at(&long, 1, Precision::Fp8), at(&long, 1, Precision::Bf16));
        let long_fwd = fp8.forward_s / bf16.forward_s;
        assert!(long_fwd > fwd + 0.05, "{long_fwd} {fwd}");
        // The README's figures ("FP8 under Megatron-LM").
        assert_eq!(format!("{fwd:.2} {bwd:.2} {long_fwd:.2}"), "0.67 0.68 0.82");
    }

    /// A fused attention runs FlashAttention where the GPU and precision
    /// allow it (Ampere on, 16-bit), else PyTorch's memory-efficient
    /// kernel at its own efficiencies: fused, not the explicit scores.
    #[test]
    fn fused_attention_without_flash_runs_the_memory_efficient_kernel() {
        let llama = zoo_model("llama3-8b", Some(4096)).unwrap();
        let cat = Catalog::builtin();
        let at = |gpu: &str, precision: Precision, attention, c: &Constants| {
            let opts = AnalyticOptions {
                precision,
                attention,
                ..AnalyticOptions::default()
            };
            layer_estimate(&llama, 1, cat.gpu(gpu).unwrap(), 1, 1, &opts, c)
        };
        let builtin = Constants::builtin();
        // The memory-efficient kernel as fast as FlashAttention.
        let as_flash = Constants {
            memory_efficient_forward_efficiency: builtin.flash_forward_efficiency,
            memory_efficient_backward_efficiency: builtin.flash_backward_efficiency,
            ..builtin.clone()
        };
        let flash = |gpu: &str, p| cat.gpu(gpu).unwrap().runs_flash_attention(p);
        assert!(flash("A100-80GB", Precision::Bf16));
        assert!(!flash("A100-80GB", Precision::Fp32));
        assert!(!flash("V100", Precision::Fp16));
        assert!(!flash("T4", Precision::Fp16));
        assert!(flash("RTX-3090", Precision::Fp16));
        assert!(flash("MI250X", Precision::Bf16));
        // FlashAttention on an A100 in bf16: the memory-efficient
        // constants do not apply.
        let a100 = at("A100-80GB", Precision::Bf16, None, &builtin);
        assert_eq!(a100, at("A100-80GB", Precision::Bf16, None, &as_flash));
        // On a V100, and on an A100 in fp32, they do: the kernel is slower
        // than FlashAttention would be, and it is not explicit attention.
        for (gpu, p) in [("V100", Precision::Fp16), ("A100-80GB", Precision::Fp32)] {
            let fused = at(gpu, p, None, &builtin);
            assert!(
                fused.forward_s > at(gpu, p, None, &as_flash).forward_s,
                "{gpu}"
            );
            assert!(
                fused.backward_s > at(gpu, p, None, &as_flash).backward_s,
                "{gpu}"
            );
            assert_eq!(
                fused,
                at(gpu, p, Some(AttentionImpl::Flash), &builtin),
                "{gpu}"
            );
            assert_ne!(
                fused,
                at(gpu, p, Some(AttentionImpl::Explicit), &builtin),
                "{gpu}"
            );
        }
    }

    #[test]
    fn compute_prices_the_attention_the_model_stores() {
        let with = |m: &Model, attention| {
            let cat = Catalog::builtin();
            let opts = AnalyticOptions {
                attention,
                ..AnalyticOptions::default()
            };
            layer_estimate(
                m,
                1,
                cat.gpu("H100").unwrap(),
                1,
                2,
                &opts,
                &Constants::builtin(),
            )
        };
        // A model that counts the s x s scores in memory (GPT-Neo's eager
        // attention) runs explicit attention in compute too, also on Hopper
        // in 16-bit precision.
        let mut arch = Arch::gpt("g", 1024, 2, 16, 50257, 2048, 2048);
        arch.flash_attention = false;
        let gpt = arch.build(None).unwrap();
        let arch = gpt.shape.as_ref().unwrap().architecture.as_ref().unwrap();
        assert_eq!(arch.flash_attention, Some(false));
        let explicit = with(&gpt, Some(AttentionImpl::Explicit));
        assert_eq!(with(&gpt, None), explicit);
        assert_ne!(with(&gpt, Some(AttentionImpl::Flash)), explicit);
        // Llama-style models, and GPT-2 as SDPA runs it, store no scores:
        // flash attention on Hopper.
        let llama = zoo_model("llama3-8b", None).unwrap();
        assert_eq!(with(&llama, None), with(&llama, Some(AttentionImpl::Flash)));
        let gpt2 = zoo_model("gpt2-medium", None).unwrap();
        assert_eq!(with(&gpt2, None), with(&gpt2, Some(AttentionImpl::Flash)));
        let neo = zoo_model("gpt-neo-2.7b", None).unwrap();
        assert_eq!(with(&neo, None), with(&neo, Some(AttentionImpl::Explicit)));
    }

    /// Forward and backward seconds of `model`'s vocabulary projection.
    fn head(model: &Model, gpu: &str, tp: usize, opts: &AnalyticOptions) -> (f64, f64) {
        let i = model
            .layers
            .iter()
            .position(|l| l.kind == LayerKind::VocabProjection)
            .unwrap();
        let cat = Catalog::builtin();
        let e = layer_estimate(
            model,
            i,
            cat.gpu(gpu).unwrap(),
            tp,
            8,
            opts,
            &Constants::builtin(),
        );
        (e.forward_s, e.backward_s)
    }

    #[test]
    fn an_odd_vocabulary_runs_unaligned_gemms_unless_the_engine_pads_it() {
        let gpt = |vocab| {
            Arch::gpt("g", 2048, 2, 16, vocab, 1024, 1024)
                .build(None)
                .unwrap()
        };
        let (odd, even) = (gpt(50257), gpt(50304));
        let eager = AnalyticOptions::default();
        // bf16 rows of 50257 elements are not whole 16-byte vectors: the
        // three GEMMs run at 0.7 of the aligned efficiency, and on Hopper
        // at warp-level MMA's 0.67 of that again (the layer's fp32
        // cross-entropy passes, memory-bound, are not slowed; at hidden
        // 2048 they are a small share of the layer, as the bounds assume).
        let ratio = |gpu| {
            let (f, b) = head(&odd, gpu, 1, &eager);
            let (f0, b0) = head(&even, gpu, 1, &eager);
            (f + b) / (f0 + b0)
        };
        let (a100, h100) = (ratio("A100-80GB"), ratio("H100"));
        assert!((1.2..1.45).contains(&a100), "{a100}");
        assert!((1.35..1.8).contains(&h100) && h100 > a100, "{h100}");
        // In tf32 alignment is not priced: the time follows the FLOPs.
        let tf32 = AnalyticOptions {
            precision: Precision::Tf32,
            ..eager
        };
        let (f, _) = head(&odd, "A100-80GB", 1, &tf32);
        let (f0, _) = head(&even, "A100-80GB", 1, &tf32);
        assert!((f / f0 - 1.0).abs() < 0.01, "{}", f / f0);
        // Megatron-LM pads 50257 to 50304 at tp 1: the padded model's time.
        let megatron = AnalyticOptions {
            engine: Some(Engine::Megatron),
            ..eager
        };
        let padded = head(&odd, "H100", 1, &megatron);
        let reference = head(&even, "H100", 1, &megatron);
        assert!((padded.0 / reference.0 - 1.0).abs() < 1e-9);
        assert!((padded.1 / reference.1 - 1.0).abs() < 1e-9);
        // At tp 2 eager ranks hold 25129 columns (odd), Megatron's 25216.
        assert_eq!(rank_vocab(50257, 2, None), Some(25129));
        assert_eq!(rank_vocab(50257, 2, Some(Engine::Megatron)), Some(25216));
        // With the same loss kernel (Megatron-LM's own makes more passes
        // over the logits), the unaligned GEMMs are what differ.
        let same_loss = AnalyticOptions {
            cross_entropy: Some(CrossEntropy::Pytorch),
            ..megatron
        };
        let (f2, _) = head(&odd, "H100", 2, &eager);
        let (m2, _) = head(&odd, "H100", 2, &same_loss);
        assert!(f2 > 1.2 * m2, "{f2} {m2}");
    }

    #[test]
    fn the_loss_moves_the_bytes_its_kernel_does() {
        // A large vocabulary on one H100 at micro-batch 8: the GEMMs and
        // the loss's passes differ only in the loss's bytes per logit
        // (bf16: 6 of casts each way, then PyTorch 16 forward and 20
        // backward, Megatron-LM 32 and 8).
        let m = Arch::gpt("g", 1024, 2, 16, 131072, 1024, 1024)
            .build(None)
            .unwrap();
        let with = |cross_entropy| AnalyticOptions {
            engine: Some(Engine::Torchtitan),
            cross_entropy: Some(cross_entropy),
            ..AnalyticOptions::default()
        };
        let (pf, pb) = head(&m, "H100", 1, &with(CrossEntropy::Pytorch));
        let (mf, mb) = head(&m, "H100", 1, &with(CrossEntropy::Megatron));
        let gpu = Catalog::builtin().gpu("H100").unwrap().clone();
        let c = Constants::builtin();
        let logits = 8.0 * 1024.0 * 131072.0;
        let per_byte = 1.0 / (gpu.memory_bytes_per_s() * c.memory_efficiency);
        assert!(
            (mf - pf - logits * (32.0 - 16.0) * per_byte).abs() < 1e-9,
            "{mf} {pf}"
        );
        assert!(
            (pb - mb - logits * (20.0 - 8.0) * per_byte).abs() < 1e-9,
            "{pb} {mb}"
        );
    }

    #[test]
    fn grouped_query_blocks_take_their_own_widths() {
        // Llama-3-8B: 32 query heads and 8 key/value heads of 128 on a
        // width of 4,096: QKV is 4,096 + 2 x 1,024 wide, and the MLP's
        // three 14,336-wide matrices are two of 21,504 in equivalent. Until
        // 2026-12-06 the split assumed 4 h^2 attention weights: 12,288 and
        // 18,432 (the same FLOPs under an engine; Hugging Face's separate q
        // projection was priced 10,240 wide).
        let m = zoo_model("llama3-8b", Some(8192)).unwrap();
        let d = block_dims(&m, 1);
        assert_eq!((d.qkv, d.ffn), (6144.0, 21504.0));
        // Without an architecture, GPT-2's: 3 h and 4 h x 2 / 2.
        let g = zoo_model("gpt2-medium", Some(1024)).unwrap();
        let d = block_dims(&g, 1);
        assert_eq!((d.qkv, d.ffn), (3.0 * 1024.0, 4.0 * 1024.0));
    }

    #[test]
    fn torchtitan_blocks_run_their_rotary_embedding_and_swiglu_apart() {
        let cat = Catalog::builtin();
        let gpu = cat.gpu("H100").unwrap();
        let c = Constants::builtin();
        let with = |engine| AnalyticOptions {
            engine: Some(engine),
            ..AnalyticOptions::default()
        };
        // Launch-bound (sequence 16, tp 8, one sample): torchtitan runs 8
        // forward kernels more than Megatron-LM's fused block, its complex
        // rotary embedding's 3 on q and on k, the up projection apart from
        // the gate and SiLU apart from the product; two per forward kernel
        // backward.
        let m = zoo_model("llama3-8b", Some(16)).unwrap();
        let titan = layer_estimate(&m, 1, gpu, 8, 1, &with(Engine::Torchtitan), &c);
        let megatron = layer_estimate(&m, 1, gpu, 8, 1, &with(Engine::Megatron), &c);
        let kernel = c.cpu_op_overhead_s;
        assert!(((titan.forward_s - megatron.forward_s) / (8.0 * kernel) - 1.0).abs() < 1e-9);
        assert!(((titan.backward_s - megatron.backward_s) / (16.0 * kernel) - 1.0).abs() < 1e-9);
        // Bandwidth-bound (sequence 8192, micro-batch 2): the rotary
        // embedding's 20 bytes per element of q and k (16,384 tokens x
        // 5,120) and SwiGLU's 2 more 16-bit elements per inner element
        // (16,384 x 14,336), at the streaming rate; the matrix products'
        // shapes differ too (two gate and up GEMMs for one), within 2%.
        let m = zoo_model("llama3-8b", Some(8192)).unwrap();
        let titan = layer_estimate(&m, 1, gpu, 1, 2, &with(Engine::Torchtitan), &c);
        let megatron = layer_estimate(&m, 1, gpu, 1, 2, &with(Engine::Megatron), &c);
        let tokens = 16384.0;
        let bytes = 20.0 * tokens * 5120.0 + 2.0 * 2.0 * tokens * 14336.0;
        let streamed = bytes / (gpu.memory_bytes_per_s() * c.memory_efficiency);
        let extra = titan.forward_s - megatron.forward_s;
        assert!((extra / streamed - 1.0).abs() < 0.02, "{extra} {streamed}");
        // The README's figures, ms.
        let ms = |x: f64| (x * 1e5).round() / 1e2;
        assert_eq!((ms(titan.forward_s), ms(titan.backward_s)), (14.53, 32.74));
        assert_eq!(
            (ms(megatron.forward_s), ms(megatron.backward_s)),
            (13.54, 30.77)
        );
    }

    #[test]
    fn eager_llama_blocks_run_unfused_kernels() {
        // Llama-3-8B at sequence 16 and tp 8, fp32 (no autocast casts), one
        // sample: the block is launch-bound, so its time is its kernel count times
        // the host's cost per kernel. Without an engine (eager Python code)
        // it runs 24 more forward kernels than the same block without a
        // known architecture: RMSNorm 6 instead of 1 (twice), separate q, k
        // and v projections (2), rotary embedding 5 on q and 5 on k, gate
        // and up projections (1) and their product (1). Backward runs two
        // per forward kernel.
        let m = zoo_model("llama3-8b", Some(16)).unwrap();
        let mut plain = m.clone();
        plain.shape.as_mut().unwrap().architecture = None;
        let cat = Catalog::builtin();
        let gpu = cat.gpu("H200").unwrap();
        let c = Constants::builtin();
        // Both with one fused attention kernel (in fp32 PyTorch's
        // memory-efficient one), which the model without an architecture
        // would not get by default.
        let opts = AnalyticOptions {
            precision: Precision::Fp32,
            attention: Some(AttentionImpl::Flash),
            ..AnalyticOptions::default()
        };
        let eager = layer_estimate(&m, 1, gpu, 8, 1, &opts, &c);
        let generic = layer_estimate(&plain, 1, gpu, 8, 1, &opts, &c);
        let kernel = c.cpu_op_overhead_s;
        assert!(((eager.forward_s - generic.forward_s) / (24.0 * kernel) - 1.0).abs() < 1e-9);
        assert!(((eager.backward_s - generic.backward_s) / (48.0 * kernel) - 1.0).abs() < 1e-9);
        // An engine fuses them: the architecture changes nothing.
        let megatron = AnalyticOptions {
            engine: Some(Engine::Megatron),
            ..opts
        };
        assert_eq!(
            layer_estimate(&m, 1, gpu, 8, 1, &megatron, &c),
            layer_estimate(&plain, 1, gpu, 8, 1, &megatron, &c)
        );
    }

    #[test]
    fn qwen3_and_phi3_blocks_run_their_own_kernels() {
        // Launch-bound as above (sequence 16, tp 8, fp32, one sample), so a
        // block's time is its kernel count times the host's cost per
        // kernel. Against a Llama block of the same sizes:
        // - Qwen3's query and key norms, written as Python: two composite
        //   RMSNorms, `eager_rmsnorm_ops` kernels each, forward; under an
        //   engine two fused norms.
        // - Phi-3's fused projections: one GEMM for q, k and v (two fewer)
        //   and one for gate and up (one fewer); under an engine the same.
        let cat = Catalog::builtin();
        let gpu = cat.gpu("H200").unwrap();
        let c = Constants::builtin();
        let opts = AnalyticOptions {
            precision: Precision::Fp32,
            ..AnalyticOptions::default()
        };
        let megatron = AnalyticOptions {
            engine: Some(Engine::Megatron),
            ..opts
        };
        let kernel = c.cpu_op_overhead_s;
        let variant = |f: &dyn Fn(&mut crate::zoo::Arch)| {
            let mut a = crate::zoo::zoo_arch("qwen3-8b").unwrap();
            f(&mut a);
            a.build(Some(16)).unwrap()
        };
        let qwen3 = variant(&|_| {});
        let llama = variant(&|a| {
            a.qk_norm = false;
            a.model_type = "llama".into();
        });
        let phi3 = variant(&|a| {
            a.qk_norm = false;
            a.model_type = "phi3".into();
        });
        let at = |m: &Model, o: &AnalyticOptions| layer_estimate(m, 1, gpu, 8, 1, o, &c);
        let kernels = |x: f64, y: f64| (x - y) / kernel;
        let (q, l, p) = (at(&qwen3, &opts), at(&llama, &opts), at(&phi3, &opts));
        let norms = 2.0 * c.eager_rmsnorm_ops;
        assert!((kernels(q.forward_s, l.forward_s) - norms).abs() < 1e-6);
        assert!((kernels(q.backward_s, l.backward_s) - 2.0 * norms).abs() < 1e-6);
        assert!((kernels(l.forward_s, p.forward_s) - 3.0).abs() < 1e-6);
        assert!((kernels(l.backward_s, p.backward_s) - 6.0).abs() < 1e-6);
        let (q, l, p) = (
            at(&qwen3, &megatron),
            at(&llama, &megatron),
            at(&phi3, &megatron),
        );
        assert!((kernels(q.forward_s, l.forward_s) - 2.0).abs() < 1e-6);
        assert_eq!(l, p);
        // Gemma 3 against Qwen3 of its sizes: the two post-norms add two
        // RMSNorms of kernels; its GeLU gate is one kernel, as SiLU is.
        let gemma = |post| {
            let mut a = crate::zoo::zoo_arch("gemma-3-1b").unwrap();
            a.post_norms = post;
            a.build(Some(16)).unwrap()
        };
        let (with, without) = (at(&gemma(true), &opts), at(&gemma(false), &opts));
        assert!((kernels(with.forward_s, without.forward_s) - norms).abs() < 1e-6);
        let mut swiglu = crate::zoo::zoo_arch("gemma-3-1b").unwrap();
        (swiglu.post_norms, swiglu.geglu) = (false, false);
        assert_eq!(at(&swiglu.build(Some(16)).unwrap(), &opts), without);
    }

    #[test]
    fn gpt2s_gelu_new_runs_as_written_without_an_engine() {
        // GPT-2 XL, 4 samples of 1024 tokens, one block on an H200: GPU-bound.
        // Without an engine Hugging Face's `gelu_new` runs kernel by kernel:
        // under bf16 autocast 10 kernels moving 6 16-bit and 16 fp32 copies
        // of the inner tensor (s f elements per sample) where a fused GeLU
        // moves 2 16-bit ones; backward moves twice the streamed bytes and
        // runs two kernels per forward kernel. In fp32, 8 kernels and 18
        // copies. An engine fuses it: the same block as with a fused GeLU.
        let composite = zoo_model("gpt2-xl", None).unwrap();
        let mut arch = crate::zoo_arch("gpt2-xl").unwrap();
        arch.apply(
            crate::Kernels {
                fused_attention: None,
                gelu_new: Some(false),
            },
            "test",
        )
        .unwrap();
        let fused = arch.build(None).unwrap();
        let cat = Catalog::builtin();
        let gpu = cat.gpu("H200").unwrap();
        let c = Constants::builtin();
        let shape = composite.shape.as_ref().unwrap();
        let inner = 4.0 * (shape.seq_len * 4 * shape.hidden) as f64;
        let bw = gpu.memory_bytes_per_s() * c.memory_efficiency;
        for (precision, extra_bytes) in [
            (Precision::Bf16, 6.0 * 2.0 + 16.0 * 4.0 - 2.0 * 2.0),
            (Precision::Fp32, 18.0 * 4.0 - 2.0 * 4.0),
        ] {
            let opts = AnalyticOptions {
                precision,
                ..AnalyticOptions::default()
            };
            let a = layer_estimate(&composite, 1, gpu, 1, 4, &opts, &c);
            let b = layer_estimate(&fused, 1, gpu, 1, 4, &opts, &c);
            let fwd = extra_bytes * inner / bw;
            assert!(
                ((a.forward_s - b.forward_s) / fwd - 1.0).abs() < 1e-9,
                "{precision}"
            );
            assert!(((a.backward_s - b.backward_s) / (2.0 * fwd) - 1.0).abs() < 1e-9);
            let megatron = AnalyticOptions {
                engine: Some(Engine::Megatron),
                ..opts
            };
            assert_eq!(
                layer_estimate(&composite, 1, gpu, 1, 4, &megatron, &c),
                layer_estimate(&fused, 1, gpu, 1, 4, &megatron, &c)
            );
        }
    }

    #[test]
    fn autocast_pays_its_casts_and_engines_do_not() {
        let m = zoo_model("gpt3-7.5b", None).unwrap();
        let cat = Catalog::builtin();
        let gpu = cat.gpu("H200").unwrap();
        let block = |engine| {
            let opts = AnalyticOptions {
                engine,
                ..AnalyticOptions::default()
            };
            layer_estimate(&m, 1, gpu, 1, 4, &opts, &Constants::builtin())
        };
        let (plain, megatron) = (block(None), block(Some(Engine::Megatron)));
        // A big block is GPU-bound: the difference is the weight casts'
        // bytes and the fp32 residual stream's, per element of the stream
        // (th of them): two norms reading and writing 4 bytes, not 2 (2 x 4);
        // two residual adds reading and writing it (2 x 4); two casts of a
        // norm's output to 16 bits before the QKV and first MLP projection
        // (2 x 6). Backward moves twice the streamed bytes.
        let c = Constants::builtin();
        let p = m.layers[1].params as f64;
        let shape = m.shape.as_ref().unwrap();
        let th = 4.0 * (shape.seq_len * shape.hidden) as f64;
        let residual = th * (2.0 * 4.0 + 2.0 * 4.0 + 2.0 * 6.0);
        let bw = gpu.memory_bytes_per_s() * c.memory_efficiency;
        let fwd = (c.autocast_forward_bytes_per_param * p + residual) / bw;
        let bwd = (c.autocast_backward_bytes_per_param * p + 2.0 * residual) / bw;
        assert!(((plain.forward_s - megatron.forward_s) / fwd - 1.0).abs() < 1e-9);
        assert!(((plain.backward_s - megatron.backward_s) / bwd - 1.0).abs() < 1e-9);
        // In fp32 there is nothing to cast.
        let fp32 = |engine| {
            let opts = AnalyticOptions {
                engine,
                precision: Precision::Fp32,
                ..AnalyticOptions::default()
            };
            layer_estimate(&m, 1, gpu, 1, 4, &opts, &c).forward_s
        };
        assert_eq!(fp32(None), fp32(Some(Engine::Megatron)));
    }

    #[test]
    fn engines_run_a_fused_adam() {
        let m = zoo_model("llama3-8b", None).unwrap();
        let step = |engine| {
            let opts = AnalyticOptions {
                engine,
                ..AnalyticOptions::default()
            };
            let cat = Catalog::builtin();
            let gpu = cat.gpu("H100").unwrap();
            layer_estimate(&m, 1, gpu, 1, 1, &opts, &Constants::builtin()).optimizer_s
        };
        // 218M parameters of a block: memory-bound, so the bytes decide.
        let (plain, fused) = (step(None), step(Some(Engine::Megatron)));
        assert!(
            (fused / plain - 32.0 / 80.0).abs() < 1e-9,
            "{plain} {fused}"
        );
        assert_eq!(step(Some(Engine::Torchtitan)), fused);
        // The step the setup names wins over the engine's.
        let named = |engine, optimizer_step| {
            let opts = AnalyticOptions {
                engine,
                optimizer_step: Some(optimizer_step),
                ..AnalyticOptions::default()
            };
            let gpu = Catalog::builtin().gpu("H100").unwrap().clone();
            layer_estimate(&m, 1, &gpu, 1, 1, &opts, &Constants::builtin()).optimizer_s
        };
        assert_eq!(named(None, OptimizerStep::Fused), fused);
        assert_eq!(
            named(Some(Engine::Torchtitan), OptimizerStep::Foreach),
            plain
        );
    }

    #[test]
    fn constants_parse() {
        let c = Constants::builtin();
        assert!(c.matmul_max_efficiency > 0.0 && c.matmul_max_efficiency <= 1.0);
    }

    #[test]
    fn small_blocks_hit_the_host_floor_and_large_ones_stay_under_peak() {
        let tiny = Arch::gpt("t", 256, 2, 4, 1000, 128, 128)
            .build(None)
            .unwrap();
        let e = est(&tiny, "H200", 1, 1);
        let total = e.forward_s + e.backward_s;
        assert!((0.7e-3..1.5e-3).contains(&total), "{total}");
        let big = Arch::gpt("b", 8192, 2, 64, 51200, 2048, 2048)
            .build(None)
            .unwrap();
        let e = est(&big, "H100", 1, 4);
        let flops = 3.0 * 4.0 * big.layers[1].forward_flops_per_sample.unwrap();
        let achieved = flops / (e.forward_s + e.backward_s);
        assert!(
            achieved < 0.8 * 989.5e12 && achieved > 0.4 * 989.5e12,
            "{achieved}"
        );
        // Twice the micro-batch costs about twice the time; tp 2 about half.
        let e8 = est(&big, "H100", 1, 8);
        assert!((e8.forward_s / e.forward_s - 2.0).abs() < 0.05);
        let t2 = est(&big, "H100", 2, 4);
        assert!((t2.forward_s / e.forward_s - 0.5).abs() < 0.05);
        // A faster GPU is faster.
        assert!(est(&big, "A100-80GB", 1, 4).forward_s > 2.0 * e.forward_s);
    }

    #[test]
    fn analytic_profile_fills_only_what_is_missing() {
        let m = zoo_model("gpt2", None).unwrap();
        let existing = Profile {
            entries: vec![ProfileEntry {
                gpu: "V100-16GB".into(),
                tp: 1,
                micro_batch: None,
                forward_s: vec![1e-3; m.num_layers()],
                backward_s: None,
                optimizer_s: None,
                source: Some("gpt2_P3_1.npy".into()),
            }],
            precision: None,
        };
        let gpus = vec!["V100-16GB".to_string(), "h100".to_string()];
        // fp16: a V100 has no bf16 (`a_gpu_without_the_precision_is_refused`).
        let fp16 = AnalyticOptions {
            precision: Precision::Fp16,
            ..AnalyticOptions::default()
        };
        let p = analytic_profile_with(
            &m,
            &gpus,
            &[1, 2],
            &[1, 4],
            &existing,
            &fp16,
            &Catalog::builtin(),
        )
        .unwrap();
        // V100 tp 1 is measured: 3 (gpu, tp) pairs x 2 micro-batches remain.
        assert_eq!(p.entries.len(), 6);
        assert!(p
            .entries
            .iter()
            .all(|e| e.source.as_deref() == Some("analytic")));
        assert!(p
            .entries
            .iter()
            .any(|e| e.gpu == "h100" && e.tp == 2 && e.micro_batch == Some(4)));
        p.check_layers(m.num_layers(), "analytic").unwrap();
        let t = p.layer_time("h100", 2, 2, 1).unwrap();
        assert!(t.forward_s > 0.0 && t.backward_s.unwrap() > t.forward_s);
        // Deterministic.
        assert_eq!(
            p,
            analytic_profile_with(
                &m,
                &gpus,
                &[2, 1],
                &[4, 1],
                &existing,
                &fp16,
                &Catalog::builtin()
            )
            .unwrap()
        );

        let mut merged = existing.clone();
        merged.merge(p);
        let lines = describe_sources(&merged);
        assert_eq!(
            lines,
            vec![
                "V100-16GB: tp 1 measured (gpt2_P3_1.npy)".to_string(),
                "V100-16GB: tp 2 from the analytic model (micro-batches 1, 4)".to_string(),
                "h100: tp 1, 2 from the analytic model (micro-batches 1, 4)".to_string(),
            ]
        );
    }

    #[test]
    fn compiled_torchtitan_blocks_run_an_engines_fused_kernels() {
        // Inductor fuses the rotary embedding and the gated MLP's SiLU and
        // product that eager torchtitan runs kernel by kernel: a compiled
        // block costs what the same block costs under Megatron-LM's fused
        // kernels, launch-bound or not.
        let c = Constants::builtin();
        let gpu = Catalog::builtin().gpu("H100").unwrap().clone();
        let with = |engine, compiled| AnalyticOptions {
            engine: Some(engine),
            compiled,
            ..AnalyticOptions::default()
        };
        for (seq, tp, mb) in [(16, 8, 1), (8192, 1, 2)] {
            let m = zoo_model("llama3-8b", Some(seq)).unwrap();
            let est = |o: &AnalyticOptions| layer_estimate(&m, 1, &gpu, tp, mb, o, &c);
            let compiled = est(&with(Engine::Torchtitan, true));
            let megatron = est(&with(Engine::Megatron, false));
            let eager = est(&with(Engine::Torchtitan, false));
            assert_eq!(compiled.forward_s, megatron.forward_s);
            assert_eq!(compiled.backward_s, megatron.backward_s);
            assert!(compiled.forward_s < eager.forward_s);
        }
    }

    #[test]
    fn a_cluster_files_gpu_is_priced_from_its_own_figures() {
        // A GPU at half of every H100 figure (compute peaks and memory
        // bandwidth) runs every kernel in twice the GPU time: a block that
        // keeps the GPU busy takes twice as long; a launch-bound one, whose
        // host time is the same, does not.
        let h100 = Catalog::builtin().gpu("H100").unwrap().clone();
        let half = amp_core::GpuDefinition {
            name: "H100-half".into(),
            like: "H100".into(),
            fp32_tflops: Some(h100.fp32_tflops / 2.0),
            tf32_tflops: h100.tf32_tflops.map(|t| t / 2.0),
            fp16_tflops: Some(h100.fp16_tflops / 2.0),
            bf16_tflops: h100.bf16_tflops.map(|t| t / 2.0),
            fp8_tflops: h100.fp8_tflops.map(|t| t / 2.0),
            memory_gib: None,
            memory_bandwidth_gbs: Some(h100.memory_bandwidth_gbs / 2.0),
        };
        let catalog = Catalog::builtin()
            .with_definitions(&[half], "c.toml")
            .unwrap();
        let gpus = ["H100".to_string(), "H100-half".to_string()];
        let block = |model: &str, seq: u64, mb: usize| {
            let m = zoo_model(model, Some(seq)).unwrap();
            let opts = AnalyticOptions::default();
            let p =
                analytic_profile_with(&m, &gpus, &[1], &[mb], &Profile::default(), &opts, &catalog)
                    .unwrap();
            let t = |g: &str| p.layer_time(g, 1, mb, 1).unwrap();
            (t("H100"), t("H100-half"))
        };
        let (full, half) = block("llama3-8b", 8192, 2);
        assert!((half.forward_s / full.forward_s - 2.0).abs() < 1e-9);
        assert!((half.backward_s.unwrap() / full.backward_s.unwrap() - 2.0).abs() < 1e-9);
        let (full, half) = block("gpt2", 16, 1);
        assert_eq!(half.forward_s, full.forward_s);
        // A name only the cluster file gives is unknown to the built-in catalog.
        let m = zoo_model("llama3-8b", Some(16)).unwrap();
        let e = analytic_profile(&m, &gpus, &[1], &[1], &Profile::default()).unwrap_err();
        assert!(e.to_string().contains("unknown GPU `H100-half`"), "{e}");
    }

    #[test]
    fn analytic_profile_errors() {
        let m = zoo_model("gpt2", None).unwrap();
        let e =
            analytic_profile(&m, &["Z100".into()], &[1], &[1], &Profile::default()).unwrap_err();
        assert!(e.to_string().contains("unknown GPU `Z100`"), "{e}");
        assert!(analytic_profile(&m, &["T4".into()], &[0], &[1], &Profile::default()).is_err());
        assert!(analytic_profile(&m, &["T4".into()], &[1], &[], &Profile::default()).is_err());
    }

    /// bf16 needs bf16 tensor cores and FP8 FP8 ones: a GPU without them is
    /// refused with the precision to plan it in, not priced at the nearest
    /// rate it has.
    #[test]
    fn a_gpu_without_the_precision_is_refused() {
        let cat = Catalog::builtin();
        let lacks = |gpu: &str, p: Precision| cat.gpu(gpu).unwrap().lacks(p).is_some();
        for gpu in ["V100-16GB", "T4", "RTX-2080", "Titan-RTX"] {
            assert!(lacks(gpu, Precision::Bf16), "{gpu}");
            assert!(lacks(gpu, Precision::Fp8), "{gpu}");
            assert!(!lacks(gpu, Precision::Fp16), "{gpu}");
            assert!(!lacks(gpu, Precision::Tf32), "{gpu}");
        }
        for gpu in ["A100-40GB", "A10G", "RTX-3090", "MI250X"] {
            assert!(!lacks(gpu, Precision::Bf16), "{gpu}");
            assert!(lacks(gpu, Precision::Fp8), "{gpu}");
        }
        for gpu in ["L4", "H100-SXM", "H200", "B200", "MI300X"] {
            assert!(!lacks(gpu, Precision::Bf16), "{gpu}");
            assert!(!lacks(gpu, Precision::Fp8), "{gpu}");
        }
        let m = zoo_model("gpt2", None).unwrap();
        let price = |gpu: &str, precision: Precision, engine: Option<Engine>| {
            let opts = AnalyticOptions {
                precision,
                engine,
                ..AnalyticOptions::default()
            };
            analytic_profile_with(
                &m,
                &[gpu.into()],
                &[1],
                &[1],
                &Profile::default(),
                &opts,
                &cat,
            )
        };
        // (GPU, precision, engine, why, the precision suggested)
        for (gpu, p, engine, why, instead) in [
            (
                "V100",
                Precision::Bf16,
                None,
                "V100-16GB (Volta) has no bf16 tensor cores",
                "fp16",
            ),
            // torchtitan trains in bf16 or fp32.
            (
                "T4",
                Precision::Bf16,
                Some(Engine::Torchtitan),
                "T4 (Turing) has no bf16",
                "fp32",
            ),
            (
                "A100-80GB",
                Precision::Fp8,
                None,
                "A100-80GB (Ampere) has no FP8",
                "bf16",
            ),
        ] {
            let e = price(gpu, p, engine).unwrap_err().to_string();
            assert!(e.contains(why), "{e}");
            assert!(e.ends_with(&format!("plan it in {instead}")), "{e}");
        }
        assert!(price("V100", Precision::Fp16, None).is_ok());
        assert!(price("H100", Precision::Fp8, None).is_ok());
    }

    #[test]
    fn every_layer_kind_gets_a_finite_time() {
        for name in [
            "opt-350m",
            "bert-large",
            "vit-l-16",
            "transgan-amp",
            "gpt2-amp",
            "llama-3-8b",
        ] {
            let m = zoo_model(name, None).unwrap();
            let p = analytic_profile(
                &m,
                &["A100-80GB".into()],
                &[1, 4],
                &[2],
                &Profile::default(),
            )
            .unwrap();
            for e in &p.entries {
                for (i, t) in e.forward_s.iter().enumerate() {
                    assert!(t.is_finite() && *t >= 0.0, "{name} layer {i}: {t}");
                    let b = e.backward_s.as_ref().unwrap()[i];
                    assert!(b.is_finite() && b >= 0.0);
                }
            }
        }
    }
}

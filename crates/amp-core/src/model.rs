//! The model to train: an ordered list of layers.
//!
//! Every planner decision works on this list: a pipeline stage is a contiguous
//! range of it. Sizes are per sample (one sequence) so that micro-batch size
//! scales them linearly.

use serde::{Deserialize, Serialize};

use crate::error::{AmpError, Result};
use crate::limits;

/// What a layer is. The cost models use the kind where the physics differs
/// (a vocabulary projection's output is sharded by tensor parallelism; tied
/// embeddings share weights).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "snake_case")]
pub enum LayerKind {
    /// Token (and position) embedding.
    Embedding,
    /// One transformer block (attention + MLP).
    TransformerBlock,
    /// Final projection onto the vocabulary (the logits).
    VocabProjection,
    /// A layer with no work worth pricing (reshapes, views, upsampling, the
    /// addition of a position table); AMP's cost model skips it.
    Noop,
    /// Anything else (convolution, upsampling, a linear input layer).
    Other,
}

/// One entry of the layer list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Layer {
    /// Layer name, shown in reports and exports.
    pub name: String,
    /// What kind of layer this is; cost models price some kinds specially.
    pub kind: LayerKind,
    /// Trainable parameters of this layer (not divided by tensor parallelism).
    pub params: u64,
    /// Elements of this layer's output for one sample: what a pipeline cut
    /// after this layer sends to the next stage.
    pub output_elems_per_sample: u64,
    /// Forward FLOPs for one sample, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_flops_per_sample: Option<f64>,
    /// Index of an earlier layer whose weights this layer shares (GPT-2 ties
    /// the vocabulary projection to the embedding). Shared weights are held
    /// once per stage and all-reduced once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tied_to: Option<usize>,
    /// Elements the backward pass needs kept per sample (activation memory),
    /// when known; memory models fall back to an estimate otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_activation_elems_per_sample: Option<u64>,
    /// Of [`Self::stored_activation_elems_per_sample`], the elements every
    /// rank of a tensor-parallel group keeps whole, when known: the inputs
    /// of the norms and of the first projections, and the attention scores
    /// when tensor parallelism does not split the heads (AMP's TransGAN).
    /// The rest is divided by the degree. Absent: amp's own split (the
    /// model's shape, or none). Taken as given with sequence parallelism.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicated_activation_elems_per_sample: Option<u64>,
    /// Elements this layer's backward holds per sample while it runs, beside
    /// the stored ones (the gradients of materialised attention scores), at
    /// tensor-parallel degree 1, when known; it replaces amp's own estimate
    /// (none without the model's shape).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backward_transient_elems_per_sample: Option<u64>,
    /// Of [`Self::backward_transient_elems_per_sample`], the elements every
    /// rank of a tensor-parallel group holds whole. Absent: all divided by
    /// the degree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicated_backward_transient_elems_per_sample: Option<u64>,
    /// Bytes a forward send after this layer carries besides its output,
    /// once per micro-batch whatever its size: the AMP artifact's GPT-2
    /// passes its attention mask (`[1, 1, s, s]`, cast to fp16 to send)
    /// with every activation from the embedding to the last block. 0 for
    /// most models; the backward sends never carry it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub forward_send_extra_bytes: u64,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(x: &u64) -> bool {
    *x == 0
}

/// Shape of a transformer, when the model is one: used by exports and by
/// analytic estimates. Not needed for planning from a profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransformerShape {
    /// Hidden size (model width).
    pub hidden: u64,
    /// Number of transformer blocks.
    pub num_blocks: u64,
    /// Sequence length, tokens per sample.
    pub seq_len: u64,
    /// Vocabulary size.
    pub vocab: u64,
    /// Attention heads; 0 when not given.
    #[serde(default)]
    pub heads: u64,
    /// The rest of the architecture, when known (zoo models and Hugging
    /// Face configs carry it). Exports use it to make an engine build the
    /// network amp priced. Absent: a GPT-2-style block (LayerNorm, GeLU MLP
    /// of 4 x hidden, learned positions as long as the sequence, biases,
    /// tied embeddings), which is what exports assume then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architecture: Option<Architecture>,
}

impl TransformerShape {
    /// Why Transformer Engine cannot run the blocks' linear layers of this shape
    /// in FP8 at tensor-parallel degree `tp` and `micro_batch` samples: it asks
    /// of each product's input a multiple of 8 rows (tokens on this rank) and a
    /// multiple of 16 columns, and of its weight a multiple of 8 rows
    /// (`assert_dim_for_fp8_exec`, transformer_engine/pytorch/utils.py, called
    /// by its Linear and LayerNormLinear). `None` when every product passes.
    pub fn fp8_tiling_refusal(
        &self,
        tp: usize,
        micro_batch: usize,
        sequence_parallel: bool,
    ) -> Option<String> {
        let h = self.hidden as usize;
        let (query, kv, ffn, gated) = match &self.architecture {
            Some(a) => (
                self.heads as usize * a.head_dim as usize,
                a.kv_heads as usize * a.head_dim as usize,
                a.ffn_hidden as usize,
                a.gated(),
            ),
            None => (h, h, 4 * h, false),
        };
        let tokens = micro_batch * self.seq_len as usize / if sequence_parallel { tp } else { 1 };
        // (layer, input columns, weight rows) on one rank.
        let products = [
            ("QKV projection", h, (query + 2 * kv) / tp),
            ("attention output projection", query / tp, h),
            ("first MLP layer", h, if gated { 2 } else { 1 } * ffn / tp),
            ("second MLP layer", ffn / tp, h),
        ];
        let mut why = Vec::new();
        if !tokens.is_multiple_of(8) {
            why.push(format!(
                "{tokens} tokens per micro-batch on a rank (micro-batch {micro_batch} x sequence {}{}) are not a multiple of 8",
                self.seq_len,
                if sequence_parallel { format!(" / tp {tp}") } else { String::new() }
            ));
        }
        for (layer, columns, rows) in products {
            if !columns.is_multiple_of(16) {
                why.push(format!(
                    "the {layer}'s input is {columns} wide on a rank (tp {tp}), not a multiple of 16"
                ));
            }
            if !rows.is_multiple_of(8) {
                why.push(format!(
                    "the {layer}'s weight has {rows} rows on a rank (tp {tp}), not a multiple of 8"
                ));
            }
        }
        (!why.is_empty()).then(|| {
            format!(
                "Transformer Engine runs FP8 products only on dimensions it can tile (assert_dim_for_fp8_exec, transformer_engine/pytorch/utils.py): {}; plan it in bf16 or at another tp or micro-batch",
                why.join(", and ")
            )
        })
    }
}

/// MLP activation of a transformer block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    /// Two weight matrices, GeLU between (GPT-3, BERT, ViT; a fused kernel).
    Gelu,
    /// Two weight matrices, GeLU's tanh approximation between, written out
    /// in Python where no engine fuses it: Hugging Face's
    /// `NewGELUActivation` (`activation_function = "gelu_new"`, GPT-2's and
    /// GPT-Neo's default), eight elementwise kernels, the first a `pow`
    /// that autocast runs in fp32. With an engine it is one fused kernel,
    /// priced as [`Activation::Gelu`].
    #[serde(rename = "gelu_new")]
    GeluNew,
    /// Two weight matrices, ReLU between (OPT).
    Relu,
    /// Gated: three weight matrices, SiLU on the gate (Llama, Mistral, Qwen2).
    Swiglu,
    /// Gated: three weight matrices, GeLU's tanh approximation on the gate
    /// (Gemma; one fused kernel, as SiLU).
    Geglu,
}

/// Normalisation layer of a transformer block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NormKind {
    /// Weight and bias.
    Layernorm,
    /// Weight only.
    Rmsnorm,
}

/// How token positions enter the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PositionEmbedding {
    /// A learned table of `max_positions` rows added to the embedding.
    Learned,
    /// Rotary embeddings in attention (no parameters).
    Rope,
}

/// How a rotary model rescales its frequencies for a context longer than it
/// was first trained at (Hugging Face's `rope_scaling`). It changes what
/// the model computes, not what it costs, so only the exports read it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "type", deny_unknown_fields)]
pub enum RopeScaling {
    /// Llama 3.1's (`rope_type = "llama3"`): low frequencies divided by
    /// `factor`, high ones kept, a smooth ramp between.
    Llama3 {
        /// What the lowest frequencies are divided by (8 for Llama 3.1,
        /// 32 for Llama 3.2).
        factor: f64,
        /// Wavelengths above `original_max_positions / low_freq_factor`
        /// are divided by `factor`.
        low_freq_factor: f64,
        /// Wavelengths below `original_max_positions / high_freq_factor`
        /// are kept.
        high_freq_factor: f64,
        /// The context the frequencies were first trained at.
        original_max_positions: u64,
    },
    /// Positions divided by `factor` (`rope_type = "linear"`).
    Linear {
        /// What every position is divided by.
        factor: f64,
    },
    /// Another kind (`yarn`, `dynamic`, `longrope`, ...), by its name.
    Other {
        /// Hugging Face's `rope_type` (or `type`).
        name: String,
    },
}

impl RopeScaling {
    /// Llama 3.1's kind with Meta's numbers (low and high frequency
    /// factors 1 and 4 over an original context of 8192) and `factor`: 8
    /// for Llama 3.1, 32 for Llama 3.2.
    pub const fn llama3(factor: f64) -> RopeScaling {
        RopeScaling::Llama3 {
            factor,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_positions: 8192,
        }
    }
}

/// Architecture details beyond [`TransformerShape`]'s sizes: what an engine
/// needs to build exactly the network amp priced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Architecture {
    /// Model family as Hugging Face names its `model_type` (`gpt2`, `opt`,
    /// `gpt_neo`, `llama`, `mistral`, `qwen2`, `bert`, `vit`), or `gpt3`
    /// for Megatron-LM's GPT-3 table. Lets exports map a model onto an
    /// engine's named configurations (torchtitan's flavors).
    pub family: String,
    /// Key/value heads (grouped-query attention; equal to `heads` without
    /// it). Megatron-LM calls them query groups.
    pub kv_heads: u64,
    /// Width of one attention head (usually hidden / heads).
    pub head_dim: u64,
    /// Width of the MLP's inner layer (per matrix; a gated MLP has three).
    pub ffn_hidden: u64,
    /// Nonlinearity of the MLP.
    pub activation: Activation,
    /// Kind of normalisation layer.
    pub norm: NormKind,
    /// Epsilon of every normalisation layer.
    pub norm_eps: f64,
    /// How token positions enter the model.
    pub position_embedding: PositionEmbedding,
    /// Base (theta) of the rotary embedding's frequencies; only with
    /// `position_embedding = "rope"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_theta: Option<f64>,
    /// The rotary frequencies' rescaling (Llama 3.1 and 3.2); absent: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_scaling: Option<RopeScaling>,
    /// Positions the model supports: rows of the learned table, or the
    /// trained context of a rotary model.
    pub max_positions: u64,
    /// Whether the output projection shares the embedding's weights.
    pub tied_embeddings: bool,
    /// Biases on the attention output projection, and on the MLP's
    /// unless `mlp_bias` says otherwise.
    pub linear_bias: bool,
    /// Biases on the MLP's projections where they differ from the
    /// attention output's (a Llama config's `attention_bias` without
    /// `mlp_bias`, or the reverse). Absent: as `linear_bias`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mlp_bias: Option<bool>,
    /// Biases on the query, key and value projections.
    pub qkv_bias: bool,
    /// An RMSNorm over each head's query and key before attention (Qwen3;
    /// Megatron-LM's `qk_layernorm`), a weight of `head_dim` each. Absent:
    /// none.
    #[serde(default, skip_serializing_if = "is_false")]
    pub qk_norm: bool,
    /// A norm also on each branch's output before the residual add (Gemma 2
    /// and 3: four norms per block). Absent: none.
    #[serde(default, skip_serializing_if = "is_false")]
    pub post_norms: bool,
    /// Whether attention is fused (flash attention: no `s x s` scores
    /// stored). The layers' stored activations were counted this way, and
    /// the analytic compute model prices the same attention unless told
    /// otherwise. Absent in older files: unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flash_attention: Option<bool>,
    /// Whether blocks apply dropout (and keep its two masks, one byte per
    /// element, for the backward pass). With `flash_attention`, it tells the
    /// memory model which of a block's stored elements every
    /// tensor-parallel rank keeps whole. Absent in older files: unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropout: Option<bool>,
}

impl Architecture {
    /// Whether the MLP's projections have biases ([`Self::mlp_bias`]).
    pub fn mlp_has_bias(&self) -> bool {
        self.mlp_bias.unwrap_or(self.linear_bias)
    }

    /// Whether the family's own code (eager PyTorch) projects query, key
    /// and value in one GEMM: GPT-2's `c_attn`, Megatron-LM's GPT-3, Phi-3's
    /// `qkv_proj`; the others (Llama, Qwen, Mistral, Gemma, OPT, GPT-Neo,
    /// BERT, ViT) write three projections.
    pub fn fused_qkv(&self) -> bool {
        matches!(self.family.as_str(), "gpt2" | "gpt3" | "phi3")
    }

    /// Whether a gated MLP's own code projects gate and up in one GEMM
    /// (Phi-3's `gate_up_proj`); Llama's and Gemma's write two.
    pub fn fused_gate_up(&self) -> bool {
        self.family == "phi3"
    }

    /// Whether the MLP is gated (three weight matrices).
    pub fn gated(&self) -> bool {
        matches!(self.activation, Activation::Swiglu | Activation::Geglu)
    }

    /// A block's matrix products in the order its forward runs them (query,
    /// key and value, or their fused projection when `fused_qkv` or the
    /// family's code fuses them; the attention output; gate and up, or
    /// their fused projection, or the first MLP matrix; the last), for a
    /// model of width `hidden` with `heads` query heads. torchtitan's and
    /// Hugging Face's code run them in this order (`w2(F.silu(w1(x)) *
    /// w3(x))` computes the gate first).
    pub fn block_projections(&self, hidden: u64, heads: u64, fused_qkv: bool) -> Vec<Projection> {
        let q = heads * self.head_dim;
        let kv = self.kv_heads * self.head_dim;
        let col = |in_width, out_width| Projection {
            in_width,
            out_width,
            row_parallel: false,
        };
        let mut p = if fused_qkv || self.fused_qkv() {
            vec![col(hidden, q + 2 * kv)]
        } else {
            vec![col(hidden, q), col(hidden, kv), col(hidden, kv)]
        };
        p.push(Projection {
            in_width: q,
            out_width: hidden,
            row_parallel: true,
        });
        let f = self.ffn_hidden;
        match (self.gated(), self.fused_gate_up()) {
            (true, true) => p.push(col(hidden, 2 * f)),
            (true, false) => p.extend([col(hidden, f), col(hidden, f)]),
            (false, _) => p.push(col(hidden, f)),
        }
        p.push(Projection {
            in_width: f,
            out_width: hidden,
            row_parallel: true,
        });
        p
    }
}

/// One matrix product of a block ([`Architecture::block_projections`]):
/// its input and output widths per token, and whether tensor parallelism
/// splits its input (row-parallel: each rank writes partial sums of the
/// whole output) rather than its output (column-parallel).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Projection {
    /// Input elements per token.
    pub in_width: u64,
    /// Output elements per token, over the whole group.
    pub out_width: u64,
    /// Row-parallel (the attention output and the MLP's last matrix).
    pub row_parallel: bool,
}

/// A model as the planner sees it: a list of layers in execution order, each
/// with its parameters and output size, and optionally its transformer shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Model {
    /// Model name, shown in reports.
    pub name: String,
    /// The transformer's shape, when the model is one and it is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shape: Option<TransformerShape>,
    /// The layers in execution order; pipeline stages take contiguous runs of them.
    pub layers: Vec<Layer>,
    /// Bytes every GPU holds whatever its stage, besides its layers' states
    /// and activations: what the training script builds on every rank
    /// outside the model it trains (the AMP artifact's TransGAN script
    /// builds its discriminator on every GPU and never trains it:
    /// [`builtin::transgan_discriminator_bytes`]). Absent: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resident_bytes_per_device: Option<u64>,
}

impl Model {
    /// Whether the model's attention is fused (`Some(true)`: no `s x s`
    /// scores stored), explicit (`Some(false)`), or unknown: its
    /// architecture's `flash_attention`.
    pub fn flash_attention(&self) -> Option<bool> {
        self.architecture().and_then(|a| a.flash_attention)
    }

    /// Whether the blocks apply dropout, when the architecture says.
    pub fn dropout(&self) -> Option<bool> {
        self.architecture().and_then(|a| a.dropout)
    }

    /// The architecture's details, when the model's shape carries them.
    pub fn architecture(&self) -> Option<&Architecture> {
        self.shape.as_ref().and_then(|s| s.architecture.as_ref())
    }

    /// [`Self::architecture`], to change (a model rebuilt with another
    /// attention kernel, a test's variant).
    pub fn architecture_mut(&mut self) -> Option<&mut Architecture> {
        self.shape.as_mut().and_then(|s| s.architecture.as_mut())
    }

    /// The architecture when the model runs as its own code writes it,
    /// kernel by kernel (`eager`, [`crate::setup::TrainingSetup::eager_blocks`]:
    /// eager PyTorch, or DeepSpeed running Hugging Face's blocks), with no
    /// engine's kernels to fuse its norms, GeLU and projections. `None` for
    /// fused blocks or without an architecture.
    pub fn eager_architecture(&self, eager: bool) -> Option<&Architecture> {
        eager.then(|| self.architecture()).flatten()
    }

    /// Why a tensor-parallel group of `tp` GPUs cannot split this model's
    /// blocks, or `None` when it can (or the model gives no head count):
    /// tensor-parallel attention gives each rank whole heads, and whole
    /// key/value heads under grouped-query attention, and the MLP equal
    /// column slices (Megatron-LM asserts each divides,
    /// megatron/training/arguments.py and its ColumnParallelLinear;
    /// torchtitan and DeepSpeed's Megatron models shard the same
    /// projections the same way).
    pub fn tp_refusal(&self, tp: usize) -> Option<String> {
        let shape = self.shape.as_ref()?;
        if tp <= 1 || shape.heads == 0 {
            return None;
        }
        if !shape.heads.is_multiple_of(tp as u64) {
            return Some(format!(
                "`{}` has {} attention heads, which tp {tp} does not divide (each tensor-parallel rank takes whole heads)",
                self.name, shape.heads
            ));
        }
        let arch = shape.architecture.as_ref();
        let kv = arch.map_or(0, |a| a.kv_heads);
        if kv > 0 && !kv.is_multiple_of(tp as u64) {
            return Some(format!(
                "`{}` has {kv} key/value heads, which tp {tp} does not divide (each tensor-parallel rank takes whole key/value heads)",
                self.name
            ));
        }
        // The MLP's first projection is split by columns (Megatron-LM's
        // ColumnParallelLinear divides its width by tp, asserting it can).
        let ffn = arch.map_or(0, |a| a.ffn_hidden);
        if ffn > 0 && !ffn.is_multiple_of(tp as u64) {
            return Some(format!(
                "`{}` has an MLP width of {ffn}, which tp {tp} does not divide (each tensor-parallel rank takes an equal slice)",
                self.name
            ));
        }
        None
    }

    /// Number of layers.
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// Checks the invariants every consumer relies on.
    pub fn validate(&self) -> Result<()> {
        if self.layers.is_empty() {
            return Err(AmpError::invalid(
                format!("model `{}`", self.name),
                "the layer list is empty; describe at least one layer under [[layers]]",
            ));
        }
        if self.layers.len() > limits::MAX_LAYERS {
            return Err(AmpError::invalid(
                format!("model `{}`", self.name),
                format!(
                    "has {} layers, above the limit of {}",
                    self.layers.len(),
                    limits::MAX_LAYERS
                ),
            ));
        }
        if let Some(b) = self.resident_bytes_per_device {
            limits::check_count(b, 0, limits::MAX_RESIDENT_BYTES).map_err(|m| {
                AmpError::invalid(
                    format!("model `{}`", self.name),
                    format!("resident_bytes_per_device {m}"),
                )
            })?;
        }
        for (i, layer) in self.layers.iter().enumerate() {
            let at = || format!("model `{}`, layers[{i}] (`{}`)", self.name, layer.name);
            let counts = [
                ("params", Some(layer.params), limits::MAX_LAYER_PARAMS),
                (
                    "output_elems_per_sample",
                    Some(layer.output_elems_per_sample),
                    limits::MAX_LAYER_ELEMS,
                ),
                (
                    "stored_activation_elems_per_sample",
                    layer.stored_activation_elems_per_sample,
                    limits::MAX_LAYER_ELEMS,
                ),
                (
                    "replicated_activation_elems_per_sample",
                    layer.replicated_activation_elems_per_sample,
                    limits::MAX_LAYER_ELEMS,
                ),
                (
                    "backward_transient_elems_per_sample",
                    layer.backward_transient_elems_per_sample,
                    limits::MAX_LAYER_ELEMS,
                ),
                (
                    "replicated_backward_transient_elems_per_sample",
                    layer.replicated_backward_transient_elems_per_sample,
                    limits::MAX_LAYER_ELEMS,
                ),
            ];
            for (field, v, max) in counts {
                if let Some(v) = v {
                    limits::check_count(v, 0, max)
                        .map_err(|m| AmpError::invalid(at(), format!("{field} {m}")))?;
                }
            }
            // A replicated share is a part of its whole: both given, the
            // part no larger.
            for (part, part_v, whole, whole_v) in [
                (
                    "replicated_activation_elems_per_sample",
                    layer.replicated_activation_elems_per_sample,
                    "stored_activation_elems_per_sample",
                    layer.stored_activation_elems_per_sample,
                ),
                (
                    "replicated_backward_transient_elems_per_sample",
                    layer.replicated_backward_transient_elems_per_sample,
                    "backward_transient_elems_per_sample",
                    layer.backward_transient_elems_per_sample,
                ),
            ] {
                match (part_v, whole_v) {
                    (Some(p), None) => {
                        return Err(AmpError::invalid(
                            at(),
                            format!("{part} = {p} is a share of {whole}, which is missing; give {whole} too"),
                        ))
                    }
                    (Some(p), Some(w)) if p > w => {
                        return Err(AmpError::invalid(
                            at(),
                            format!("{part} = {p} is above {whole} = {w}, of which it is a share"),
                        ))
                    }
                    _ => {}
                }
            }
            if let Some(f) = layer.forward_flops_per_sample {
                limits::check_f64(f, false, limits::MAX_LAYER_FLOPS).map_err(|m| {
                    AmpError::invalid(at(), format!("forward_flops_per_sample {m}"))
                })?;
            }
            if let Some(t) = layer.tied_to {
                if t >= i {
                    return Err(AmpError::invalid(
                        format!("model `{}`, layer {i} (`{}`)", self.name, layer.name),
                        format!("tied_to = {t} must name an earlier layer (0..{i})"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Parameters held by the devices of a stage covering `layers`, counting
    /// tied weights once when both ends live in the stage.
    pub fn stage_params(&self, layers: std::ops::Range<usize>) -> u64 {
        self.layers[layers.clone()]
            .iter()
            .filter(|l| match l.tied_to {
                Some(t) => !layers.contains(&t),
                None => true,
            })
            .map(|l| l.params)
            .sum()
    }

    /// O(1)-per-query table of [`Model::stage_params`], for the partitioner.
    pub fn param_table(&self) -> ParamTable {
        ParamTable::new(self, self.layers.iter().map(|l| l.params as f64).collect())
    }

    /// Trainable parameters of the whole model, tied weights counted once.
    pub fn total_params(&self) -> u64 {
        self.stage_params(0..self.layers.len())
    }

    /// Parses a model written in TOML and validates it; `origin` names the file in
    /// errors.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Model> {
        let model: Model = toml::from_str(text).map_err(|e| AmpError::parse(origin, e))?;
        model.validate().map_err(|e| e.in_file(origin))?;
        Ok(model)
    }

    /// Parses a model written in JSON (same fields as TOML, duplicate keys
    /// rejected) and validates it; `origin` names the file in errors.
    pub fn from_json_str(text: &str, origin: &str) -> Result<Model> {
        let model: Model = AmpError::json(text, origin)?;
        model.validate().map_err(|e| e.in_file(origin))?;
        Ok(model)
    }
}

/// Parameters of any layer range, tied weights counted once per range.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamTable {
    prefix: Vec<f64>,
    /// (layer, layer it is tied to, its parameters).
    tied: Vec<(usize, usize, f64)>,
}

impl ParamTable {
    /// A table over `params[i]` for layer i, with the model's ties.
    pub fn new(model: &Model, params: Vec<f64>) -> ParamTable {
        let mut prefix = vec![0.0];
        for p in &params {
            prefix.push(prefix.last().unwrap() + p);
        }
        ParamTable {
            prefix,
            tied: model
                .layers
                .iter()
                .enumerate()
                .filter_map(|(i, l)| l.tied_to.map(|t| (i, t, params[i])))
                .collect(),
        }
    }

    /// Parameters of layers `first..end`, a layer tied to another in the same
    /// range counted once.
    pub fn stage_params(&self, first: usize, end: usize) -> f64 {
        let mut p = self.prefix[end] - self.prefix[first];
        for &(l, t, n) in &self.tied {
            if (first..end).contains(&l) && (first..end).contains(&t) {
                p -= n;
            }
        }
        p
    }
}

/// Built-in models of the AMP paper.
pub mod builtin {
    use super::*;

    fn layer(name: &str, kind: LayerKind, params: u64, out: u64) -> Layer {
        Layer {
            name: name.to_string(),
            kind,
            params,
            output_elems_per_sample: out,
            forward_flops_per_sample: None,
            tied_to: None,
            stored_activation_elems_per_sample: None,
            replicated_activation_elems_per_sample: None,
            backward_transient_elems_per_sample: None,
            replicated_backward_transient_elems_per_sample: None,
            forward_send_extra_bytes: 0,
        }
    }

    /// GPT-2 as AMP lists it: embedding, dropout, `n` blocks, a transpose, the
    /// final norm, the (tied) vocabulary projection and the loss: `n + 6`
    /// entries, the indexing of the artifact's profiles and stage boundaries.
    /// Up to the last block its forward sends carry the attention mask too:
    /// the artifact's `GPT2ModelPipe` passes `(hidden_states,
    /// attention_mask)` between stages (its megatron/model/gpt2_model.py;
    /// the transpose after the blocks drops the mask), and its DeepSpeed
    /// sends the `[1, 1, s, s]` boolean mask cast to fp16
    /// (`_exec_send_activations`, deepspeed/runtime/pipe/engine.py): `2 s^2`
    /// bytes a micro-batch, whatever its size.
    pub fn gpt2(num_blocks: u64, hidden: u64, seq_len: u64, vocab: u64) -> Model {
        let h = hidden;
        let s = seq_len;
        let act = s * h;
        // Weights of a block: QKV (3h^2 + 3h), projection (h^2 + h), MLP
        // (8h^2 + 5h), two layer norms (4h).
        let block_params = 12 * h * h + 13 * h;
        let block_flops = (24 * h * h * s + 4 * s * s * h) as f64;
        let mut layers = vec![layer(
            "embedding",
            LayerKind::Embedding,
            vocab * h + s * h,
            act,
        )];
        // The artifact's "no-op" entries of GPT-2 are profiled and priced
        // (dropout and transposes, the final norm, the loss), so they are
        // `Other` here; `Noop` is for entries with no work at all.
        layers.push(layer("embedding_dropout", LayerKind::Other, 0, act));
        for i in 0..num_blocks {
            let mut b = layer(
                &format!("block{i}"),
                LayerKind::TransformerBlock,
                block_params,
                act,
            );
            b.forward_flops_per_sample = Some(block_flops);
            layers.push(b);
        }
        for l in &mut layers {
            l.forward_send_extra_bytes = 2 * s * s;
        }
        layers.push(layer("transpose", LayerKind::Other, 0, act));
        layers.push(layer("final_norm", LayerKind::Other, 2 * h, act));
        let mut head = layer(
            "vocab_projection",
            LayerKind::VocabProjection,
            vocab * h,
            s * vocab,
        );
        head.tied_to = Some(0);
        head.forward_flops_per_sample = Some((2 * s * h * vocab) as f64);
        layers.push(head);
        // The pipe's last entry casts the logits to fp32 (Megatron's
        // `fp16_to_fp32`); the loss then works in place on that copy and
        // keeps it as its softmax, which the projection counts: the cast
        // keeps nothing of its own.
        let mut cast = layer("loss", LayerKind::Other, 0, s * vocab);
        cast.stored_activation_elems_per_sample = Some(0);
        layers.push(cast);
        Model {
            name: format!("gpt2-{num_blocks}x{hidden}"),
            shape: Some(TransformerShape {
                hidden,
                num_blocks,
                seq_len,
                vocab,
                heads: hidden / 64,
                architecture: None,
            }),
            layers,
            resident_bytes_per_device: None,
        }
    }

    /// The GPT-2 of the AMP paper: 24 blocks, hidden 1024, sequence 1024,
    /// vocabulary 52256 (30 entries).
    pub fn amp_gpt2() -> Model {
        let mut m = gpt2(24, 1024, 1024, 52256);
        m.name = "gpt2-amp".to_string();
        m
    }

    /// Activation memory of one TransGAN block, per sample, in 16-bit
    /// elements (what [`Layer::stored_activation_elems_per_sample`] and its
    /// siblings count).
    #[derive(Debug, Clone, Copy, PartialEq)]
    pub struct BlockMemory {
        /// Kept for the backward, at tp 1.
        pub stored: u64,
        /// Of `stored`, what every rank of a tensor-parallel group keeps.
        pub replicated: u64,
        /// Held only while the backward runs, on every rank whatever the tp.
        pub transient: u64,
    }

    /// A TransGAN block's memory read off the artifact's
    /// `ParallelTransformerBlock` (fp16, dropouts 0, `--g_norm pn`), for
    /// `windows` windows of `s` tokens of width `w` and `a` heads. Per token,
    /// in bytes, on one rank of a tensor-parallel group of degree `t`:
    ///
    /// - every rank whole: the two PixelNorms' inputs (`2w` each, and their
    ///   `[B, N, 1]` scales, 2), the QKV input (`2w`: the fp16 cast of the
    ///   noise-added input; the fp32 noise column it multiplies, 4) and the
    ///   first MLP input (`2w`), and the softmax output over all `a` heads
    ///   (`2 a s`): `8 w + 2 a s + 8`;
    /// - split by `t`: the copies of q, k and v the batched matmuls keep
    ///   (`6w`), the projection's input (`2w`), the GeLU's three kept tensors
    ///   (`24w`: `x / sqrt 2`, `1 + erf(.)` and `0.5 x`) and its output, the
    ///   second MLP input (`8w`): `40 w / t`;
    /// - the backward of the scores holds two more `s x s` tensors per head
    ///   (the gradients of the probabilities and of the scores), `4 a s`,
    ///   unsplit like the scores.
    pub fn transgan_block_memory(s: u64, windows: u64, w: u64, a: u64) -> BlockMemory {
        let tokens = s * windows;
        let replicated_bytes = 8 * w + 2 * a * s + 8;
        let split_bytes = 40 * w;
        BlockMemory {
            stored: tokens * (replicated_bytes + split_bytes) / 2,
            replicated: tokens * replicated_bytes / 2,
            transient: tokens * 4 * a * s / 2,
        }
    }

    /// Bytes of the discriminator the AMP artifact's TransGAN script builds
    /// on every GPU and never trains: its `model_provider`
    /// (`pretrain_transgan.py`) returns the generator pipeline and
    /// `torch.nn.DataParallel(Discriminator(args)).cuda()`, whose module
    /// moves to the rank's own GPU, and the training loop steps the
    /// generator alone (its loss is `DummyGenLoss`, the mean of the output):
    /// the discriminator's weights stay there in fp32 (DeepSpeed converts
    /// only the model it was given), with no gradients and no Adam state
    /// (its optimizer never steps). Read off `trans_gan_dis.py` at the
    /// script's `--df_dim 384 --d_depth 3 --img_size 256 --patch_size 4
    /// --d_window_size 12` (`--d_norm` left at `ln`, 4 heads, MLP ratio 4,
    /// no QKV bias):
    ///
    /// - three patch convolutions to widths `d1 = 288`, 48 and 48 (kernels
    ///   4, 8, 16), a class token (384), and position tables for 64^2
    ///   tokens of 288, 32^2 of 336 and 16^2 of 384;
    /// - blocks of `12 d^2 + 10 d` weights (two LayerNorms, QKV without
    ///   bias, the projection and the MLP with biases) plus a relative
    ///   position table of `(2 w - 1)^2 x 4` for a window of `w`: two at
    ///   (288, 12), one at (288, 64), three at (336, 32), four at (384, 16)
    ///   and the last at (384, no window); the final norm and the head;
    ///
    /// 17,751,113 weights, 71.0 MB in fp32; and each windowed attention
    /// registers its `w^2 x w^2` int64 `relative_position_index` as a
    /// buffer, which `.cuda()` moves too: 161.8 MB, 134.2 MB of it the
    /// window of 64. 232.8 MB in all.
    pub fn transgan_discriminator_bytes() -> u64 {
        const DF: u64 = 384;
        const DEPTH: u64 = 3;
        const IMG: u64 = 256;
        const PATCH: u64 = 4;
        const WINDOW: u64 = 12;
        const HEADS: u64 = 4;
        let (d1, d2, d3) = (DF / 4 * 3, DF / 8 * 7, DF);
        let convs = [(d1, PATCH), (DF / 8, 2 * PATCH), (DF / 8, 4 * PATCH)]
            .iter()
            .map(|&(out, k)| 3 * out * k * k + out)
            .sum::<u64>();
        // Position tables, and the class token.
        let tables = (IMG / PATCH).pow(2) * d1
            + (IMG / 2 / PATCH).pow(2) * d2
            + (IMG / 4 / PATCH).pow(2) * d3
            + DF;
        // (count, width, window) of the blocks, in the code's order.
        let blocks = [
            (DEPTH - 1, d1, WINDOW),
            (1, d1, 64),
            (DEPTH, d2, 32),
            (DEPTH + 1, d3, 16),
            (1, d3, 0),
        ];
        // The final LayerNorm and the one-logit head.
        let (mut weights, mut index_bytes) = (convs + tables + 2 * DF + DF + 1, 0);
        for (n, d, w) in blocks {
            let bias_table = if w > 0 { (2 * w - 1).pow(2) * HEADS } else { 0 };
            weights += n * (12 * d * d + 10 * d + bias_table);
            index_bytes += n * w.pow(4) * 8;
        }
        weights * 4 + index_bytes
    }

    /// AMP's TransGAN generator as the artifact trained it (its
    /// `trans_gan_gen.py` and `ds_pretrain_transgan_pipe.sh`: depth
    /// `[12, 0, 0, 0, 0, 12]`, width 1024, bottom width 9, window 18, 4 heads,
    /// latent 512, fp16): 56 entries in the artifact's indexing.
    ///
    /// Entry 0 is the input projection (latent -> 9x9 tokens of 1024);
    /// 3..=14 are twelve blocks on 81 tokens of width 1024; 15..=40 upsample
    /// (bicubic, then pixel shuffle) to 288x288 tokens of width 16 and cut
    /// them into 256 windows of 18x18; 41..=52 are twelve windowed blocks of
    /// width 16; the rest reshape the output. The upsampling, reshapes and
    /// position embeddings are `Noop`: the artifact does not price them.
    ///
    /// Sizes are the real ones: a cut after an entry carries its output
    /// (82,944 elements per sample up to the first upsampling, 331,776 and
    /// then 1,327,104 after). Forward sends after entries 1..=53 carry the
    /// artifact's 100 x 100 mask too (20,000 bytes in fp16).
    ///
    /// A block's memory is counted from its code (`ParallelTransformerBlock`,
    /// [`transgan_block_memory`]), not from Korthikanti et al.'s Megatron
    /// count, which this block departs from three ways: its dropouts are 0
    /// (no masks, no dropout outputs); its GeLU is written out
    /// (`x * 0.5 * (1 + erf(x / sqrt 2))` keeps three tensors of the MLP's
    /// width besides the next projection's input); and tensor parallelism
    /// narrows the heads instead of splitting them (`reshape(B, N, 3,
    /// num_heads, C / tp / num_heads)`), so every rank of a group holds all
    /// four heads' `s x s` scores. A windowed block keeps about 279 MB per
    /// sample at tp 1 (226 MB of it on every rank at any tp) and its backward
    /// holds 430 MB more of score gradients: the reason most of the
    /// artifact's TransGAN runs ran out of memory.
    pub fn amp_transgan() -> Model {
        const H: u64 = 1024;
        const BOTTOM: u64 = 9;
        const LATENT: u64 = 512;
        const HEADS: u64 = 4;
        const WINDOW: u64 = 18;
        let first = H * BOTTOM * BOTTOM; // 81 tokens x 1024
        let full = (BOTTOM * 32) * (BOTTOM * 32) * (H / 64); // 288^2 tokens x 16
        let mut layers = Vec::with_capacity(56);
        for i in 0..56u64 {
            let (name, kind, params, out) = match i {
                0 => (
                    "input_projection".to_string(),
                    LayerKind::Other,
                    LATENT * first + first,
                    first,
                ),
                3..=14 => (
                    format!("block{i}"),
                    LayerKind::TransformerBlock,
                    12 * H * H + 13 * H,
                    first,
                ),
                41..=52 => {
                    let w = H / 64;
                    (
                        format!("block{i}"),
                        LayerKind::TransformerBlock,
                        12 * w * w + 13 * w,
                        full,
                    )
                }
                // Position embeddings: a learned table per resolution.
                2 => ("pos_embed_9".to_string(), LayerKind::Noop, first, first),
                17 => (
                    "pos_embed_18".to_string(),
                    LayerKind::Noop,
                    4 * first,
                    4 * first,
                ),
                20 | 22 | 30 | 37 => (format!("pos_embed{i}"), LayerKind::Noop, full, full),
                1 | 15 => (format!("op{i}"), LayerKind::Noop, 0, first),
                16 | 18 => (format!("op{i}"), LayerKind::Noop, 0, 4 * first),
                _ => (format!("op{i}"), LayerKind::Noop, 0, full),
            };
            let mut l = layer(&name, kind, params, out);
            // Entry 1 creates a `[100, 100]` boolean "mask" that every entry
            // passes on up to 53 (entry 54's window_reverse returns the
            // image alone), and the artifact's DeepSpeed sends it cast to
            // fp16 beside the activation, as it does GPT-2's
            // (`_exec_send_activations`, for `ParallelTransGANGeneratorPipe`
            // too): 20,000 bytes a forward send, whatever the micro-batch.
            if (1..=53).contains(&i) {
                l.forward_send_extra_bytes = 2 * 100 * 100;
            }
            if kind == LayerKind::TransformerBlock {
                // The first twelve attend over all 81 tokens (window 9).
                let mem = if i <= 14 {
                    transgan_block_memory(BOTTOM * BOTTOM, 1, H, HEADS)
                } else {
                    transgan_block_memory(
                        WINDOW * WINDOW,
                        (BOTTOM * 32 / WINDOW).pow(2),
                        H / 64,
                        HEADS,
                    )
                };
                l.stored_activation_elems_per_sample = Some(mem.stored);
                l.replicated_activation_elems_per_sample = Some(mem.replicated);
                l.backward_transient_elems_per_sample = Some(mem.transient);
                l.replicated_backward_transient_elems_per_sample = Some(mem.transient);
            }
            layers.push(l);
        }
        Model {
            name: "transgan-amp".to_string(),
            shape: None,
            layers,
            resident_bytes_per_device: Some(transgan_discriminator_bytes()),
        }
    }

    /// Looks a built-in model up by name.
    pub fn by_name(name: &str) -> Option<Model> {
        match name {
            "gpt2-amp" | "gpt2" => Some(amp_gpt2()),
            "transgan-amp" | "transgan" => Some(amp_transgan()),
            _ => None,
        }
    }

    /// Names [`by_name`] accepts (besides the aliases `gpt2` and `transgan`).
    pub const NAMES: &[&str] = &["gpt2-amp", "transgan-amp"];
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tensor-parallel degree must split the heads, and under
    /// grouped-query attention the key/value heads too; a model without a
    /// head count takes any.
    /// The TransGAN block's count, by hand on a small block (s = 4 tokens
    /// per window, 2 windows, width 8, 2 heads: 8 tokens): every rank keeps
    /// 8 w + 2 a s + 8 = 88 bytes a token, the split part is 40 w = 320,
    /// the backward holds 4 a s = 32 more; in 16-bit elements, halved.
    #[test]
    fn transgan_block_memory_by_hand() {
        let m = builtin::transgan_block_memory(4, 2, 8, 2);
        assert_eq!(
            m,
            builtin::BlockMemory {
                stored: 8 * (88 + 320) / 2,
                replicated: 8 * 88 / 2,
                transient: 8 * 32 / 2,
            }
        );
        // The artifact's windowed blocks: 288^2 tokens of width 16 in
        // windows of 18 x 18, 4 heads: 279 MB kept per sample at tp 1, 226
        // MB of it on every rank, 430 MB more in the backward.
        let t = builtin::amp_transgan();
        let l = &t.layers[41];
        assert_eq!(l.stored_activation_elems_per_sample, Some(139_677_696));
        assert_eq!(l.replicated_activation_elems_per_sample, Some(113_135_616));
        assert_eq!(l.backward_transient_elems_per_sample, Some(214_990_848));
        assert_eq!(
            l.replicated_backward_transient_elems_per_sample,
            l.backward_transient_elems_per_sample
        );
        t.validate().unwrap();
    }

    /// The AMP TransGAN script's discriminator, counted by hand from
    /// `trans_gan_dis.py` at `--df_dim 384 --d_depth 3 --img_size 256
    /// --patch_size 4 --d_window_size 12`, 4 heads.
    #[test]
    fn transgan_discriminator_by_hand() {
        // Patch convolutions: 3 x 288 x 4 x 4 + 288, 3 x 48 x 8 x 8 + 48,
        // 3 x 48 x 16 x 16 + 48.
        let convs = 14_112 + 9_264 + 36_912;
        // Class token; position tables of 64 x 64 x 288, 32 x 32 x 336,
        // 16 x 16 x 384.
        let tables = 384 + 1_179_648 + 344_064 + 98_304;
        // A block of width d: 12 d^2 + 10 d, and its (2w - 1)^2 x 4 table.
        let blocks = 2 * (995_328 + 2_880 + 2_116) // 288, window 12
            + (995_328 + 2_880 + 64_516) // 288, window 64
            + 3 * (1_354_752 + 3_360 + 15_876) // 336, window 32
            + 4 * (1_769_472 + 3_840 + 3_844) // 384, window 16
            + (1_769_472 + 3_840); // 384, no window
        let weights: u64 = convs + tables + blocks + 768 + 385; // norm, head
        assert_eq!(weights, 17_751_113);
        // int64 indices of w^2 x w^2 per windowed block.
        let index = 2 * 20_736 * 8 + 16_777_216 * 8 + 3 * 1_048_576 * 8 + 4 * 65_536 * 8;
        assert_eq!(index, 161_812_480);
        assert_eq!(builtin::transgan_discriminator_bytes(), weights * 4 + index);
        let m = builtin::amp_transgan();
        assert_eq!(m.resident_bytes_per_device, Some(232_816_932));
        assert_eq!(builtin::amp_gpt2().resident_bytes_per_device, None);
    }

    #[test]
    fn resident_bytes_have_a_limit() {
        let mut m = builtin::amp_gpt2();
        m.resident_bytes_per_device = Some(limits::MAX_RESIDENT_BYTES);
        assert!(m.validate().is_ok());
        m.resident_bytes_per_device = Some(limits::MAX_RESIDENT_BYTES + 1);
        let e = m.validate().unwrap_err().to_string();
        assert!(
            e.contains("model `gpt2-amp`")
                && e.contains("resident_bytes_per_device is 1073741824000001, above the limit"),
            "{e}"
        );
    }

    #[test]
    fn a_replicated_share_needs_its_whole_and_fits_in_it() {
        let mut m = builtin::amp_gpt2();
        m.layers[2].replicated_activation_elems_per_sample = Some(10);
        let e = m.validate().unwrap_err().to_string();
        assert!(
            e.contains("layers[2]")
                && e.contains("replicated_activation_elems_per_sample = 10 is a share of stored_activation_elems_per_sample, which is missing"),
            "{e}"
        );
        m.layers[2].stored_activation_elems_per_sample = Some(9);
        let e = m.validate().unwrap_err().to_string();
        assert!(
            e.contains("replicated_activation_elems_per_sample = 10 is above stored_activation_elems_per_sample = 9"),
            "{e}"
        );
        m.layers[2].stored_activation_elems_per_sample = Some(10);
        m.layers[2].replicated_backward_transient_elems_per_sample = Some(1);
        let e = m.validate().unwrap_err().to_string();
        assert!(
            e.contains("give backward_transient_elems_per_sample too"),
            "{e}"
        );
        m.layers[2].backward_transient_elems_per_sample = Some(1);
        m.validate().unwrap();
    }

    #[test]
    fn tp_must_split_whole_heads() {
        let mut m = builtin::amp_gpt2();
        // 16 heads.
        for tp in [1, 2, 4, 8, 16] {
            assert_eq!(m.tp_refusal(tp), None, "tp {tp}");
        }
        for tp in [3, 32] {
            let why = m.tp_refusal(tp).unwrap();
            assert!(why.contains("16 attention heads"), "{why}");
        }
        let shape = m.shape.as_mut().unwrap();
        shape.architecture = Some(Architecture {
            family: "llama".into(),
            kv_heads: 2,
            head_dim: 64,
            ffn_hidden: 4096,
            activation: Activation::Gelu,
            norm: NormKind::Rmsnorm,
            norm_eps: 1e-5,
            position_embedding: PositionEmbedding::Rope,
            rope_theta: None,
            rope_scaling: None,
            max_positions: 1024,
            tied_embeddings: false,
            linear_bias: false,
            mlp_bias: None,
            qkv_bias: false,
            qk_norm: false,
            post_norms: false,
            flash_attention: None,
            dropout: None,
        });
        assert_eq!(m.tp_refusal(2), None);
        let why = m.tp_refusal(4).unwrap();
        assert!(why.contains("2 key/value heads"), "{why}");
        fn arch(m: &mut Model) -> &mut Architecture {
            m.architecture_mut().unwrap()
        }
        arch(&mut m).ffn_hidden = 4098;
        let why = m.tp_refusal(4).unwrap_or_default();
        assert!(why.contains("2 key/value heads"), "{why}");
        arch(&mut m).kv_heads = 16;
        let why = m.tp_refusal(4).unwrap();
        assert!(why.contains("MLP width of 4098"), "{why}");
        assert_eq!(m.tp_refusal(2), None);
        m.shape = None;
        assert_eq!(m.tp_refusal(3), None);
    }

    #[test]
    fn amp_gpt2_has_the_artifact_layout() {
        let m = builtin::amp_gpt2();
        assert_eq!(m.num_layers(), 30);
        assert_eq!(m.layers[0].kind, LayerKind::Embedding);
        assert_eq!(m.layers[28].kind, LayerKind::VocabProjection);
        assert_eq!(
            m.layers
                .iter()
                .filter(|l| l.kind == LayerKind::TransformerBlock)
                .count(),
            24
        );
        // GPT-2 medium is ~355M parameters with its 50257 vocabulary.
        let p = m.total_params() as f64;
        assert!((p - 356e6).abs() / 356e6 < 0.02, "{p}");
        // The fp16 attention mask rides the forward sends up to the last
        // block (entries 0..=25), not after the transpose that drops it.
        let mask = 2 * 1024 * 1024;
        assert!(m.layers[..26]
            .iter()
            .all(|l| l.forward_send_extra_bytes == mask));
        assert!(m.layers[26..]
            .iter()
            .all(|l| l.forward_send_extra_bytes == 0));
        // A layer list without the field reads as 0, and writes none.
        let json = serde_json::to_string(&m.layers[27]).unwrap();
        assert!(!json.contains("forward_send_extra_bytes"), "{json}");
    }

    #[test]
    fn tied_weights_count_once_per_stage() {
        let m = builtin::amp_gpt2();
        let emb = m.layers[0].params;
        let head = m.layers[28].params;
        assert_eq!(m.stage_params(0..1), emb);
        assert_eq!(m.stage_params(28..30), head);
        assert_eq!(m.stage_params(0..30), m.total_params());
        assert_eq!(
            m.stage_params(0..1) + m.stage_params(1..30),
            m.total_params() + head
        );
        let t = m.param_table();
        for (a, b) in [(0, 1), (0, 30), (1, 30), (3, 29), (28, 30)] {
            assert_eq!(t.stage_params(a, b), m.stage_params(a..b) as f64);
        }
    }

    #[test]
    fn transgan_has_56_entries() {
        let m = builtin::amp_transgan();
        assert_eq!(m.num_layers(), 56);
        assert_eq!(
            m.layers
                .iter()
                .filter(|l| l.kind == LayerKind::TransformerBlock)
                .count(),
            24
        );
        // The fp16 mask rides with every forward send from entry 1 to 53.
        let extra: Vec<u64> = m
            .layers
            .iter()
            .map(|l| l.forward_send_extra_bytes)
            .collect();
        assert_eq!(extra[0], 0);
        assert!(extra[1..=53].iter().all(|&b| b == 20_000));
        assert_eq!(extra[54..], [0, 0]);
    }

    #[test]
    fn bad_tie_is_rejected() {
        let mut m = builtin::amp_gpt2();
        m.layers[0].tied_to = Some(5);
        let e = m.validate().unwrap_err().to_string();
        assert!(e.contains("tied_to"), "{e}");
    }
}

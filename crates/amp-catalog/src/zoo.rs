//! Built-in models and the layer lists they become.
//!
//! Every transformer here is described by an [`Arch`]; [`Arch::build`] turns
//! it into amp's layer list: embedding, the blocks, a final layer (final
//! norm and any output-side projection), and the vocabulary projection (or
//! a classification head), with per-layer parameters, forward FLOPs and
//! activation sizes derived from the architecture.

use amp_core::model::{
    Activation, Architecture, Layer, LayerKind, Model, NormKind, PositionEmbedding, RopeScaling,
    TransformerShape,
};

use crate::{nearest, CatalogError};

/// Normalisation layers: LayerNorm has a weight and a bias, RMSNorm a weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Norm {
    LayerNorm,
    RmsNorm,
}

impl Norm {
    fn params(self, h: u64) -> u64 {
        match self {
            Norm::LayerNorm => 2 * h,
            Norm::RmsNorm => h,
        }
    }
}

/// What kind of network surrounds the blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Decoder-only language model (GPT-2, OPT, GPT-Neo, Llama, ...).
    Decoder,
    /// BERT: token-type embeddings and embedding norm, pooler, MLM head.
    Bert,
    /// Vision transformer: patch embedding, class token, classification head.
    Vit {
        patch: u64,
        image: u64,
        channels: u64,
        classes: u64,
    },
}

/// A transformer architecture.
#[derive(Debug, Clone, PartialEq)]
pub struct Arch {
    pub name: String,
    pub family: Family,
    pub hidden: u64,
    pub layers: u64,
    pub heads: u64,
    pub kv_heads: u64,
    pub head_dim: u64,
    pub ffn: u64,
    /// Gated MLP (SwiGLU): three weight matrices instead of two.
    pub gated: bool,
    pub vocab: u64,
    /// Learned absolute position embeddings (0 with rotary embeddings).
    pub positions: u64,
    pub norm: Norm,
    pub qkv_bias: bool,
    pub out_bias: bool,
    pub mlp_bias: bool,
    pub tied: bool,
    pub final_norm: bool,
    /// OPT-350M's word embeddings are narrower than the hidden size and
    /// projected in and out.
    pub embed_dim: Option<u64>,
    pub dropout: bool,
    /// Whether training usually runs with a fused (flash) attention that
    /// keeps no `s x s` score tensor: what the family's usual code does by
    /// default today. Hugging Face's GPT-2, OPT, BERT and ViT call PyTorch's
    /// `scaled_dot_product_attention` (`attn_implementation="sdpa"`, their
    /// default when supported), Megatron-LM's GPT runs Transformer Engine's
    /// fused attention, Llama-family code FlashAttention or SDPA; Hugging
    /// Face's GPT-Neo has no SDPA path and materialises the scores.
    pub flash_attention: bool,
    pub default_seq: u64,
    /// Family as Hugging Face's `model_type` names it (`gpt2`, `opt`,
    /// `llama`, ...; `gpt3` for Megatron-LM's GPT-3 table).
    pub model_type: String,
    /// ReLU instead of GeLU in an ungated MLP (OPT).
    pub relu: bool,
    /// GeLU written out as Hugging Face's `NewGELUActivation`
    /// (`activation_function = "gelu_new"`: GPT-2, GPT-Neo), not a fused
    /// kernel.
    pub gelu_new: bool,
    /// Epsilon of the normalisation layers.
    pub norm_eps: f64,
    /// Rotary base; `None` when positions are learned (`positions > 0`) or
    /// absent.
    pub rope_theta: Option<f64>,
    /// An RMSNorm over each head's query and key (Qwen3, Gemma 3).
    pub qk_norm: bool,
    /// A gated MLP's gate runs GeLU (tanh approximation), not SiLU (Gemma).
    pub geglu: bool,
    /// Norms on the attention's and the MLP's outputs too (Gemma 2 and 3).
    pub post_norms: bool,
    /// The rotary frequencies' rescaling (Llama 3.1 and 3.2).
    pub rope_scaling: Option<RopeScaling>,
}

impl Arch {
    /// A GPT-2-like decoder (learned positions, LayerNorm, biases, GeLU MLP
    /// of 4h, tied embeddings, fused attention).
    pub fn gpt(
        name: &str,
        hidden: u64,
        layers: u64,
        heads: u64,
        vocab: u64,
        positions: u64,
        seq: u64,
    ) -> Arch {
        Arch {
            name: name.to_string(),
            family: Family::Decoder,
            hidden,
            layers,
            heads,
            kv_heads: heads,
            head_dim: hidden / heads,
            ffn: 4 * hidden,
            gated: false,
            vocab,
            positions,
            norm: Norm::LayerNorm,
            qkv_bias: true,
            out_bias: true,
            mlp_bias: true,
            tied: true,
            final_norm: true,
            embed_dim: None,
            dropout: true,
            flash_attention: true,
            default_seq: seq,
            model_type: "gpt2".into(),
            relu: false,
            gelu_new: false,
            norm_eps: 1e-5,
            rope_theta: None,
            qk_norm: false,
            geglu: false,
            post_norms: false,
            rope_scaling: None,
        }
    }

    /// A Llama-like decoder (rotary, RMSNorm, no biases, SwiGLU, GQA,
    /// untied embeddings, no dropout, flash attention).
    #[allow(clippy::too_many_arguments)]
    pub fn llama(
        name: &str,
        hidden: u64,
        layers: u64,
        heads: u64,
        kv_heads: u64,
        ffn: u64,
        vocab: u64,
        seq: u64,
    ) -> Arch {
        Arch {
            name: name.to_string(),
            family: Family::Decoder,
            hidden,
            layers,
            heads,
            kv_heads,
            head_dim: hidden / heads,
            ffn,
            gated: true,
            vocab,
            positions: 0,
            norm: Norm::RmsNorm,
            qkv_bias: false,
            out_bias: false,
            mlp_bias: false,
            tied: false,
            final_norm: true,
            embed_dim: None,
            dropout: false,
            flash_attention: true,
            default_seq: seq,
            model_type: "llama".into(),
            relu: false,
            gelu_new: false,
            norm_eps: 1e-5,
            rope_theta: Some(10_000.0),
            qk_norm: false,
            geglu: false,
            post_norms: false,
            rope_scaling: None,
        }
    }

    /// The same model trained with other kernels: `kernels`' attention
    /// and GeLU where given. A GeLU kernel for an MLP without GeLU is
    /// refused, naming `at`.
    pub fn apply(&mut self, kernels: crate::Kernels, at: &str) -> Result<(), CatalogError> {
        if let Some(f) = kernels.fused_attention {
            self.flash_attention = f;
        }
        if let Some(g) = kernels.gelu_new {
            if self.gated || self.relu {
                return Err(CatalogError::Invalid {
                    location: at.to_string(),
                    message: if self.geglu {
                        "its MLP is gated (GeGLU), whose gate runs GeLU's tanh form as one fused kernel in its own code, so --gelu (the kernel of an ungated GeLU MLP) does not apply; drop --gelu".to_string()
                    } else {
                        format!(
                            "its MLP is {}, not GeLU, so a GeLU kernel does not apply; drop --gelu",
                            if self.gated { "gated (SwiGLU)" } else { "ReLU" }
                        )
                    },
                });
            }
            self.gelu_new = g;
        }
        Ok(())
    }

    fn check(&self) -> Result<(), CatalogError> {
        let at = format!("model `{}`", self.name);
        for (what, v) in [
            ("hidden size", self.hidden),
            ("number of layers", self.layers),
            ("attention heads", self.heads),
            ("key/value heads", self.kv_heads),
            ("head dimension", self.head_dim),
            ("FFN size", self.ffn),
        ] {
            if v == 0 {
                return Err(CatalogError::invalid(
                    at,
                    format!("{what} is 0; it must be positive"),
                ));
            }
        }
        use amp_core::limits;
        let mut bounded = vec![
            (
                "number of layers",
                self.layers,
                // The blocks plus embedding, final norm and head.
                limits::MAX_LAYERS as u64 - 3,
            ),
            ("hidden size", self.hidden, limits::MAX_HIDDEN),
            ("FFN size", self.ffn, limits::MAX_HIDDEN),
            ("head dimension", self.head_dim, limits::MAX_HIDDEN),
            ("attention heads", self.heads, limits::MAX_HEADS),
            ("key/value heads", self.kv_heads, limits::MAX_HEADS),
            ("vocabulary size", self.vocab, limits::MAX_VOCAB),
            ("learned positions", self.positions, limits::MAX_SEQ),
            ("default sequence length", self.default_seq, limits::MAX_SEQ),
        ];
        if let Some(e) = self.embed_dim {
            bounded.push(("embedding size", e, limits::MAX_HIDDEN));
        }
        if let Family::Vit {
            patch,
            image,
            channels,
            classes,
        } = self.family
        {
            bounded.push(("patch size", patch, limits::MAX_HIDDEN));
            bounded.push(("image size", image, limits::MAX_HIDDEN));
            bounded.push(("channels", channels, limits::MAX_HEADS));
            bounded.push(("classes", classes, limits::MAX_VOCAB));
            if patch == 0 || image < patch || (image / patch).pow(2) + 1 > limits::MAX_SEQ {
                return Err(CatalogError::invalid(
                    at,
                    format!("image size {image} and patch size {patch} give no sequence or one above the limit of {} tokens", limits::MAX_SEQ),
                ));
            }
        }
        for (what, v, max) in bounded {
            if v > max {
                return Err(CatalogError::invalid(
                    at,
                    format!("{what} {v} is above the limit of {max}"),
                ));
            }
        }
        if !self.heads.is_multiple_of(self.kv_heads) {
            return Err(CatalogError::invalid(
                at,
                format!(
                    "{} attention heads are not a multiple of {} key/value heads",
                    self.heads, self.kv_heads
                ),
            ));
        }
        if !matches!(self.family, Family::Vit { .. }) && self.vocab == 0 {
            return Err(CatalogError::invalid(at, "vocabulary size is 0"));
        }
        Ok(())
    }

    /// Weights of one block.
    pub fn block_params(&self) -> u64 {
        let h = self.hidden;
        let q = self.heads * self.head_dim;
        let kv = self.kv_heads * self.head_dim;
        let mut p = h * (q + 2 * kv) + q * h;
        if self.qkv_bias {
            p += q + 2 * kv;
        }
        if self.out_bias {
            p += h;
        }
        let f = self.ffn;
        p += if self.gated { 3 * h * f } else { 2 * h * f };
        if self.mlp_bias {
            p += if self.gated { 2 * f + h } else { f + h };
        }
        if self.qk_norm {
            p += 2 * self.norm.params(self.head_dim);
        }
        if self.post_norms {
            p += 2 * self.norm.params(h);
        }
        p + 2 * self.norm.params(h)
    }

    /// Weights of the block's matrices only (what the GEMMs multiply by).
    fn block_matmul_params(&self) -> u64 {
        let h = self.hidden;
        let q = self.heads * self.head_dim;
        let kv = self.kv_heads * self.head_dim;
        h * (q + 2 * kv) + q * h + if self.gated { 3 } else { 2 } * h * self.ffn
    }

    /// Elements one sample's block keeps for its backward, counted in 16-bit
    /// elements (bytes / 2 in mixed precision), after Korthikanti et al.,
    /// "Reducing Activation Recomputation in Large Transformer Models"
    /// (2023), section 4, generalised to GQA and gated MLPs: norm inputs
    /// (2 s h), QKV input (s h), Q, K, V (s (a + 2 kv) d), projection input
    /// (s h), MLP input (s h), MLP intermediates (2 s f, or 3 s f gated),
    /// dropout masks (one byte per element: s h / 2 each of two), and with
    /// materialised attention softmax output, its dropout mask and output
    /// (2.5 a s^2; none with flash attention). Without dropout the value
    /// product keeps the softmax output itself (PyTorch's dropout at p = 0
    /// returns its input), a s^2: one tensor where Korthikanti's count,
    /// written for dropout, has two.
    fn block_stored_elems(&self, s: u64) -> u64 {
        let h = self.hidden;
        let mut e = 2 * s * h
            + s * h
            + s * (self.heads + 2 * self.kv_heads) * self.head_dim
            + s * h
            + s * h;
        e += if self.gated { 3 } else { 2 } * s * self.ffn;
        if self.qk_norm {
            // The query and key norms' inputs.
            e += s * (self.heads + self.kv_heads) * self.head_dim;
        }
        if self.post_norms {
            // The inputs of the norms on the two branches' outputs.
            e += 2 * s * h;
        }
        if self.dropout {
            e += s * h; // two masks of s h bytes
        }
        if !self.flash_attention {
            let scores = self.heads * s * s;
            e += if self.dropout {
                2 * scores + scores / 2
            } else {
                scores
            };
        }
        e
    }

    /// The model at sequence length `seq` (the architecture's default when
    /// `None`; for a ViT the sequence is fixed by the image and patch size).
    /// The architecture details [`TransformerShape::architecture`] carries.
    /// `seq` is the sequence length the model is built for.
    pub fn architecture(&self, seq: u64) -> Architecture {
        let rope = self.positions == 0 && self.rope_theta.is_some();
        Architecture {
            family: self.model_type.clone(),
            kv_heads: self.kv_heads,
            head_dim: self.head_dim,
            ffn_hidden: self.ffn,
            activation: if self.gated && self.geglu {
                Activation::Geglu
            } else if self.gated {
                Activation::Swiglu
            } else if self.relu {
                Activation::Relu
            } else if self.gelu_new {
                Activation::GeluNew
            } else {
                Activation::Gelu
            },
            norm: match self.norm {
                Norm::LayerNorm => NormKind::Layernorm,
                Norm::RmsNorm => NormKind::Rmsnorm,
            },
            norm_eps: self.norm_eps,
            position_embedding: if rope {
                PositionEmbedding::Rope
            } else {
                PositionEmbedding::Learned
            },
            rope_theta: if rope { self.rope_theta } else { None },
            rope_scaling: if rope {
                self.rope_scaling.clone()
            } else {
                None
            },
            max_positions: if rope {
                self.default_seq.max(seq)
            } else {
                self.positions
            },
            tied_embeddings: self.tied,
            linear_bias: self.out_bias,
            mlp_bias: (self.mlp_bias != self.out_bias).then_some(self.mlp_bias),
            qkv_bias: self.qkv_bias,
            qk_norm: self.qk_norm,
            post_norms: self.post_norms,
            flash_attention: Some(self.flash_attention),
            dropout: Some(self.dropout),
        }
    }

    pub fn build(&self, seq: Option<u64>) -> Result<Model, CatalogError> {
        self.check()?;
        let h = self.hidden;
        let s = match self.family {
            Family::Vit { patch, image, .. } => {
                if let Some(asked) = seq {
                    let tokens = (image / patch).pow(2) + 1;
                    if asked != tokens {
                        return Err(CatalogError::invalid(
                            format!("model `{}`", self.name),
                            format!("a ViT's sequence is fixed by its image: {tokens} tokens; leave the sequence length unset"),
                        ));
                    }
                }
                (image / patch).pow(2) + 1
            }
            _ => seq.unwrap_or(self.default_seq),
        };
        if s == 0 {
            return Err(CatalogError::invalid(
                format!("model `{}`", self.name),
                "sequence length 0; give a positive sequence length",
            ));
        }
        if s > amp_core::limits::MAX_SEQ {
            return Err(CatalogError::invalid(
                format!("model `{}`", self.name),
                format!(
                    "sequence length {s} is above the limit of {}",
                    amp_core::limits::MAX_SEQ
                ),
            ));
        }
        if self.positions > 0 && s > self.positions && !matches!(self.family, Family::Vit { .. }) {
            return Err(CatalogError::invalid(
                format!("model `{}`", self.name),
                format!(
                    "sequence length {s} exceeds its {} learned positions; use at most {}",
                    self.positions, self.positions
                ),
            ));
        }
        let e = self.embed_dim.unwrap_or(h);
        let act = s * h;
        let mut layers = Vec::with_capacity(self.layers as usize + 3);

        // Embedding.
        let (emb_params, emb_flops) = match self.family {
            Family::Vit {
                patch, channels, ..
            } => {
                let k = channels * patch * patch;
                let patches = s - 1;
                (k * h + h + h + s * h, (2 * patches * k * h) as f64)
            }
            Family::Bert => (
                self.vocab * h + self.positions * h + 2 * h + self.norm.params(h),
                0.0,
            ),
            Family::Decoder => {
                let proj = if e != h { e * h } else { 0 };
                (
                    self.vocab * e + self.positions * h + proj,
                    (2 * s * proj) as f64,
                )
            }
        };
        layers.push(Layer {
            name: "embedding".into(),
            kind: LayerKind::Embedding,
            params: emb_params,
            output_elems_per_sample: act,
            forward_flops_per_sample: Some(emb_flops),
            tied_to: None,
            stored_activation_elems_per_sample: Some(if self.dropout { act / 2 } else { 0 }),
            replicated_activation_elems_per_sample: None,
            backward_transient_elems_per_sample: None,
            replicated_backward_transient_elems_per_sample: None,
            forward_send_extra_bytes: 0,
        });

        // Blocks.
        let block_flops = 2.0 * s as f64 * self.block_matmul_params() as f64
            + 4.0 * (s * s) as f64 * (self.heads * self.head_dim) as f64;
        for i in 0..self.layers {
            layers.push(Layer {
                name: format!("block{i}"),
                kind: LayerKind::TransformerBlock,
                params: self.block_params(),
                output_elems_per_sample: act,
                forward_flops_per_sample: Some(block_flops),
                tied_to: None,
                stored_activation_elems_per_sample: Some(self.block_stored_elems(s)),
                replicated_activation_elems_per_sample: None,
                backward_transient_elems_per_sample: None,
                replicated_backward_transient_elems_per_sample: None,
                forward_send_extra_bytes: 0,
            });
        }

        // Final layer: norm plus output-side transforms.
        let norm = if self.final_norm {
            self.norm.params(h)
        } else {
            0
        };
        let (final_params, final_matmul, final_out) = match self.family {
            Family::Bert => {
                // Pooler (h^2 + h), MLM transform (h^2 + h + norm), decoder bias.
                (
                    norm + 2 * (h * h + h) + self.norm.params(h) + self.vocab,
                    h * h,
                    act,
                )
            }
            Family::Vit { .. } => (norm, 0, act),
            Family::Decoder => {
                let proj = if e != h { e * h } else { 0 };
                (norm + proj, proj, s * e)
            }
        };
        layers.push(Layer {
            name: if final_matmul > 0 {
                "final_norm_projection"
            } else {
                "final_norm"
            }
            .into(),
            kind: LayerKind::Other,
            params: final_params,
            output_elems_per_sample: final_out,
            forward_flops_per_sample: Some((2 * s * final_matmul + 5 * s * h) as f64),
            tied_to: None,
            stored_activation_elems_per_sample: Some(act),
            replicated_activation_elems_per_sample: None,
            backward_transient_elems_per_sample: None,
            replicated_backward_transient_elems_per_sample: None,
            forward_send_extra_bytes: 0,
        });

        // Output projection.
        match self.family {
            Family::Vit { classes, .. } => layers.push(Layer {
                name: "classifier".into(),
                kind: LayerKind::Other,
                params: h * classes + classes,
                output_elems_per_sample: classes,
                forward_flops_per_sample: Some((2 * h * classes) as f64),
                tied_to: None,
                stored_activation_elems_per_sample: Some(h),
                replicated_activation_elems_per_sample: None,
                backward_transient_elems_per_sample: None,
                replicated_backward_transient_elems_per_sample: None,
                forward_send_extra_bytes: 0,
            }),
            _ => layers.push(Layer {
                name: "vocab_projection".into(),
                kind: LayerKind::VocabProjection,
                params: self.vocab * e,
                output_elems_per_sample: s * self.vocab,
                forward_flops_per_sample: Some((2 * s * e * self.vocab) as f64),
                tied_to: self.tied.then_some(0),
                // Its input; the memory model adds what the loss keeps of
                // the logits (fp32, whatever the activations' width).
                stored_activation_elems_per_sample: Some(s * e),
                replicated_activation_elems_per_sample: None,
                backward_transient_elems_per_sample: None,
                replicated_backward_transient_elems_per_sample: None,
                forward_send_extra_bytes: 0,
            }),
        }

        let model = Model {
            name: self.name.clone(),
            shape: Some(TransformerShape {
                hidden: h,
                num_blocks: self.layers,
                seq_len: s,
                vocab: match self.family {
                    Family::Vit { classes, .. } => classes,
                    _ => self.vocab,
                },
                heads: self.heads,
                architecture: Some(self.architecture(s)),
            }),
            layers,
            resident_bytes_per_device: None,
        };
        model
            .validate()
            .map_err(|e| CatalogError::invalid(format!("model `{}`", self.name), e.to_string()))?;
        Ok(model)
    }
}

/// Rows of Table 1 of Narayanan et al., "Efficient Large-Scale Language
/// Model Training on GPU Clusters Using Megatron-LM" (SC'21): (name, heads,
/// hidden, layers). Vocabulary 51200, sequence 2048.
pub const MEGATRON_TABLE1: &[(&str, u64, u64, u64)] = &[
    ("gpt3-1.7b", 24, 2304, 24),
    ("gpt3-3.6b", 32, 3072, 30),
    ("gpt3-7.5b", 32, 4096, 36),
    ("gpt3-18.4b", 48, 6144, 40),
    ("gpt3-39.1b", 64, 8192, 48),
    ("gpt3-76.1b", 80, 10240, 60),
    ("gpt3-145.6b", 96, 12288, 80),
    ("gpt3-310.1b", 128, 16384, 96),
    ("gpt3-529.6b", 128, 20480, 105),
    ("gpt3-1008b", 160, 25600, 128),
];

/// The GPT-3 paper's model sizes (Brown et al. 2020, Table 2.1): (name,
/// heads, hidden, layers). Vocabulary 50257 (GPT-2's BPE), context 2048,
/// learned positions, tied embeddings. Two rows as implementations build
/// them: the table gives GPT-3 XL 24 heads of 128 on a hidden size of 2048
/// (24 x 128 is not 2048) and 13B a hidden size of 5140 in 40 heads of
/// 128; Megatron-DeepSpeed's GPT-3 example configs of these sizes use 16
/// heads of 128 and a hidden size of 5120.
pub const GPT3_PAPER: &[(&str, u64, u64, u64)] = &[
    ("gpt3-125m", 12, 768, 12),
    ("gpt3-350m", 16, 1024, 24),
    ("gpt3-760m", 16, 1536, 24),
    ("gpt3-1.3b", 16, 2048, 24),
    ("gpt3-2.7b", 32, 2560, 32),
    ("gpt3-6.7b", 32, 4096, 32),
    ("gpt3-13b", 40, 5120, 40),
    ("gpt3-175b", 96, 12288, 96),
];

/// Names `zoo_model` accepts (plus `transgan-amp`/`gpt2-amp`, AMP's own).
pub const ZOO_NAMES: &[&str] = &[
    "gpt2",
    "gpt2-medium",
    "gpt2-large",
    "gpt2-xl",
    "gpt3-125m",
    "gpt3-350m",
    "gpt3-760m",
    "gpt3-1.3b",
    "gpt3-2.7b",
    "gpt3-6.7b",
    "gpt3-13b",
    "gpt3-175b",
    "gpt3-1.7b",
    "gpt3-3.6b",
    "gpt3-7.5b",
    "gpt3-18.4b",
    "gpt3-39.1b",
    "gpt3-76.1b",
    "gpt3-145.6b",
    "gpt3-310.1b",
    "gpt3-529.6b",
    "gpt3-1008b",
    "opt-350m",
    "opt-1.3b",
    "opt-30b",
    "gpt-neo-2.7b",
    "bert-large",
    "llama-2-7b",
    "llama-2-13b",
    "llama-2-70b",
    "llama-3-8b",
    "llama-3-70b",
    "llama-3.1-8b",
    "llama-3.1-70b",
    "llama-3.1-405b",
    "llama-3.2-1b",
    "llama-3.2-3b",
    "mistral-7b",
    "qwen2.5-7b",
    "qwen2.5-72b",
    "qwen3-0.6b",
    "qwen3-8b",
    "qwen3-32b",
    "phi-3-mini",
    "gemma-3-1b",
    "vit-l-16",
    "vit-h-14",
    "gpt2-amp",
    "transgan-amp",
];

fn opt(name: &str, hidden: u64, layers: u64, heads: u64) -> Arch {
    // OPT: learned positions with an offset of 2 (2050 rows), ReLU MLP of 4h,
    // tied embeddings, pre-norm with a final LayerNorm (sizes >= 1.3B).
    let mut a = Arch::gpt(name, hidden, layers, heads, 50272, 2050, 2048);
    a.default_seq = 2048;
    a.model_type = "opt".into();
    a.relu = true;
    a
}

/// How a zoo name is matched: case, spaces, dashes and underscores aside
/// (`Llama3-8B` is `llama-3-8b`), but not dots, which tell `gpt3-1.3b`
/// from `gpt3-13b`.
fn model_key(name: &str) -> String {
    name.chars()
        .filter(|c| !matches!(c, ' ' | '-' | '_'))
        .flat_map(|c| c.to_lowercase())
        .collect()
}

/// The architecture of a zoo model (not for AMP's own two, which come from
/// amp-core).
pub fn zoo_arch(name: &str) -> Option<Arch> {
    let n = model_key(name);
    let find = |canon: &str| model_key(canon) == n;
    // OpenAI's GPT-2 as Hugging Face's GPT2LMHeadModel runs it: GeLU as
    // `gelu_new` (its config's `activation_function`).
    let gpt2 = |name: &str, hidden: u64, layers: u64, heads: u64| {
        let mut a = Arch::gpt(name, hidden, layers, heads, 50257, 1024, 1024);
        a.gelu_new = true;
        Some(a)
    };
    if find("gpt2") || find("gpt2-small") || find("gpt2-124m") {
        return gpt2("gpt2", 768, 12, 12);
    }
    if find("gpt2-medium") || find("gpt2-355m") {
        return gpt2("gpt2-medium", 1024, 24, 16);
    }
    if find("gpt2-large") || find("gpt2-774m") {
        return gpt2("gpt2-large", 1280, 36, 20);
    }
    if find("gpt2-xl") || find("gpt2-1.5b") {
        return gpt2("gpt2-xl", 1600, 48, 25);
    }
    // GPT-3 shapes: learned positions (2048), Megatron-LM's table at its
    // padded vocabulary 51200, the paper's at GPT-2's 50257.
    for (table, vocab) in [(MEGATRON_TABLE1, 51200), (GPT3_PAPER, 50257)] {
        if let Some(&(row, heads, h, l)) = table.iter().find(|r| find(r.0)) {
            let mut a = Arch::gpt(row, h, l, heads, vocab, 2048, 2048);
            a.model_type = "gpt3".into();
            return Some(a);
        }
    }
    if find("opt-350m") {
        let mut a = opt("opt-350m", 1024, 24, 16);
        // Post-norm with no final LayerNorm; 512-wide word embeddings
        // projected in and out (HF facebook/opt-350m config).
        a.final_norm = false;
        a.embed_dim = Some(512);
        return Some(a);
    }
    if find("opt-1.3b") {
        return Some(opt("opt-1.3b", 2048, 24, 32));
    }
    if find("opt-30b") {
        return Some(opt("opt-30b", 7168, 48, 56));
    }
    if find("gpt-neo-2.7b") {
        // EleutherAI GPT-Neo 2.7B: 20 heads of 128, no QKV biases, tied
        // embeddings, 2048 learned positions, vocabulary 50257.
        let mut a = Arch::gpt("gpt-neo-2.7b", 2560, 32, 20, 50257, 2048, 2048);
        a.qkv_bias = false;
        a.flash_attention = false;
        a.model_type = "gpt_neo".into();
        a.gelu_new = true;
        // EleutherAI/gpt-neo-2.7B trains without dropout (its config's
        // three dropout probabilities are 0).
        a.dropout = false;
        return Some(a);
    }
    if find("bert-large") || find("bert-large-uncased") {
        let mut a = Arch::gpt("bert-large", 1024, 24, 16, 30522, 512, 512);
        a.family = Family::Bert;
        a.final_norm = false;
        a.model_type = "bert".into();
        a.norm_eps = 1e-12;
        return Some(a);
    }
    let llama = |canon: &str, h, l, a, kv, f, v, s| {
        find(canon).then(|| Arch::llama(canon, h, l, a, kv, f, v, s))
    };
    let found = llama("llama-2-7b", 4096, 32, 32, 32, 11008, 32000, 4096)
        .or_else(|| llama("llama-2-13b", 5120, 40, 40, 40, 13824, 32000, 4096))
        .or_else(|| llama("llama-2-70b", 8192, 80, 64, 8, 28672, 32000, 4096))
        .or_else(|| llama("llama-3-8b", 4096, 32, 32, 8, 14336, 128256, 8192))
        .or_else(|| llama("llama-3-70b", 8192, 80, 64, 8, 28672, 128256, 8192))
        .or_else(|| llama("llama-3.1-8b", 4096, 32, 32, 8, 14336, 128256, 8192))
        .or_else(|| llama("llama-3.1-70b", 8192, 80, 64, 8, 28672, 128256, 8192))
        .or_else(|| llama("llama-3.1-405b", 16384, 126, 128, 8, 53248, 128256, 8192))
        .or_else(|| llama("mistral-7b", 4096, 32, 32, 8, 14336, 32000, 4096));
    // Llama 3.2's small models tie the vocabulary projection to the
    // embedding (`tie_word_embeddings: true` in meta-llama/Llama-3.2-1B's
    // and -3B's configs).
    let found = found.or_else(|| {
        llama("llama-3.2-1b", 2048, 16, 32, 8, 8192, 128256, 8192)
            .or_else(|| llama("llama-3.2-3b", 3072, 28, 24, 8, 8192, 128256, 8192))
            .map(|mut a| {
                a.tied = true;
                a
            })
    });
    if let Some(mut a) = found {
        // Rotary bases and families from the models' Hugging Face configs:
        // Llama 3 and 3.1 use theta 500000, Llama 2 and Mistral 7B 10000;
        // all use RMSNorm epsilon 1e-5.
        if a.name.starts_with("llama-3") {
            a.rope_theta = Some(500_000.0);
        }
        // Llama 3.1 and 3.2 rescale the rotary frequencies (`rope_scaling`
        // of rope_type llama3 in meta-llama/Llama-3.1-8B's and
        // Llama-3.2-1B's configs: factor 8 and 32, low and high frequency
        // factors 1 and 4, original context 8192); Llama 3 does not.
        let factor = if a.name.starts_with("llama-3.1") {
            Some(8.0)
        } else if a.name.starts_with("llama-3.2") {
            Some(32.0)
        } else {
            None
        };
        a.rope_scaling = factor.map(RopeScaling::llama3);
        if a.name.starts_with("mistral") {
            a.model_type = "mistral".into();
        }
        return Some(a);
    }
    let qwen = |canon: &str, h, l, heads, kv, f| {
        find(canon).then(|| {
            // Qwen2.5 (Hugging Face Qwen/Qwen2.5-*): biases on Q, K and V
            // only, rope theta 1e6, RMSNorm epsilon 1e-6.
            let mut a = Arch::llama(canon, h, l, heads, kv, f, 152064, 4096);
            a.qkv_bias = true;
            a.model_type = "qwen2".into();
            a.rope_theta = Some(1_000_000.0);
            a.norm_eps = 1e-6;
            a
        })
    };
    if let Some(a) = qwen("qwen2.5-7b", 3584, 28, 28, 4, 18944)
        .or_else(|| qwen("qwen2.5-72b", 8192, 80, 64, 8, 29568))
    {
        return Some(a);
    }
    let qwen3 = |canon: &str, h, l, heads, f| {
        find(canon).then(|| {
            // Qwen3 (Hugging Face Qwen/Qwen3-8B, -32B): 8 key/value heads
            // of 128, a norm on each head's query and key, no biases,
            // untied, rope theta 1e6, RMSNorm epsilon 1e-6.
            let mut a = Arch::llama(canon, h, l, heads, 8, f, 151936, 4096);
            a.head_dim = 128;
            a.qk_norm = true;
            a.model_type = "qwen3".into();
            a.rope_theta = Some(1_000_000.0);
            a.norm_eps = 1e-6;
            a
        })
    };
    if let Some(a) =
        qwen3("qwen3-8b", 4096, 36, 32, 12288).or_else(|| qwen3("qwen3-32b", 5120, 64, 64, 25600))
    {
        return Some(a);
    }
    // Qwen/Qwen3-0.6B ties its output to the embedding.
    if let Some(mut a) = qwen3("qwen3-0.6b", 1024, 28, 16, 3072) {
        a.tied = true;
        return Some(a);
    }
    if find("gemma-3-1b") {
        // google/gemma-3-1b-pt (model_type gemma3_text): 4 query heads and
        // 1 key/value head of 256, norms on each head's query and key and
        // on both branches' outputs, a GeLU-gated MLP, 262144 tokens tied
        // to the output, rope theta 1e6, RMSNorm epsilon 1e-6.
        let mut a = Arch::llama("gemma-3-1b", 1152, 26, 4, 1, 6912, 262144, 4096);
        a.head_dim = 256;
        a.qk_norm = true;
        a.post_norms = true;
        a.geglu = true;
        a.tied = true;
        a.model_type = "gemma3_text".into();
        a.rope_theta = Some(1_000_000.0);
        a.norm_eps = 1e-6;
        return Some(a);
    }
    if find("phi-3-mini") {
        // microsoft/Phi-3-mini-4k-instruct: Llama's shape with fused QKV and
        // gate/up projections, 32064 tokens, RMSNorm epsilon 1e-5.
        let mut a = Arch::llama("phi-3-mini", 3072, 32, 32, 32, 8192, 32064, 4096);
        a.model_type = "phi3".into();
        return Some(a);
    }
    let vit = |canon: &str, h, l, heads, patch| {
        find(canon).then(|| {
            let mut a = Arch::gpt(canon, h, l, heads, 0, 0, 0);
            a.family = Family::Vit {
                patch,
                image: 224,
                channels: 3,
                classes: 1000,
            };
            a.tied = false;
            a.model_type = "vit".into();
            a.norm_eps = 1e-12;
            a
        })
    };
    vit("vit-l-16", 1024, 24, 16, 16).or_else(|| vit("vit-h-14", 1280, 32, 16, 14))
}

/// A built-in model by name, at sequence length `seq_len` (the model's usual
/// training sequence when `None`). Unknown names list the nearest ones.
pub fn zoo_model(name: &str, seq_len: Option<u64>) -> Result<Model, CatalogError> {
    let n = model_key(name);
    if n == model_key("transgan-amp") || n == "transgan" {
        if seq_len.is_some() {
            return Err(CatalogError::invalid(
                "model `transgan-amp`",
                "its sequence is fixed (9x9 tokens at the bottom); leave the sequence length unset",
            ));
        }
        return Ok(amp_core::model::builtin::amp_transgan());
    }
    if n == model_key("gpt2-amp") {
        return Ok(match seq_len {
            None => amp_core::model::builtin::amp_gpt2(),
            Some(s) => {
                let mut m = amp_core::model::builtin::gpt2(24, 1024, s, 52256);
                m.name = "gpt2-amp".into();
                m
            }
        });
    }
    match zoo_arch(name) {
        Some(a) => a.build(seq_len),
        None => Err(CatalogError::Unknown {
            what: "model",
            name: name.to_string(),
            suggestions: nearest(name, ZOO_NAMES.iter().map(|z| (*z, *z))),
            known: ZOO_NAMES.iter().map(|z| z.to_string()).collect(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// No two zoo names match the same input.
    #[test]
    fn zoo_names_are_told_apart() {
        let mut keys: Vec<String> = ZOO_NAMES.iter().map(|n| model_key(n)).collect();
        keys.sort();
        let before = keys.len();
        keys.dedup();
        assert_eq!(keys.len(), before);
        assert_eq!(zoo_arch("gpt3-1.3b").unwrap().hidden, 2048);
        assert_eq!(zoo_arch("GPT3_13B").unwrap().hidden, 5120);
        assert_eq!(zoo_arch("Llama3.1-8B").unwrap().name, "llama-3.1-8b");
    }
}

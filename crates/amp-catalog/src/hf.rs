//! Reading a Hugging Face `config.json` into an [`Arch`] and a layer list.
//!
//! Supported `model_type`s: `gpt2`, `opt`, `gpt_neo`, `llama`, `mistral`,
//! `qwen2`, `qwen3`, `phi3`, `gemma`, `gemma3_text` (and their
//! `architectures` class names). Field names and defaults
//! follow the `transformers` configuration classes of those models.

use serde_json::{Map, Value};

use amp_core::model::{Model, RopeScaling};

use crate::zoo::{Arch, Norm};
use crate::CatalogError;

const SUPPORTED: &str =
    "gpt2, opt, gpt_neo, llama, mistral, qwen2, qwen3, phi3, gemma, gemma3_text";

/// The model a Hugging Face `config.json` describes, at sequence length
/// `seq_len` (default: the config's maximum positions, capped at 8192).
/// `origin` names the file in error messages.
pub fn model_from_hf_config(
    json: &str,
    origin: &str,
    seq_len: Option<u64>,
) -> Result<Model, CatalogError> {
    model_from_hf_config_with(json, origin, seq_len, crate::Kernels::default())
}

/// [`model_from_hf_config`] with the attention kernel chosen:
/// `Some(true)` fused (no `s x s` scores stored), `Some(false)` explicit,
/// `None` the family's usual one.
pub fn model_from_hf_config_with(
    json: &str,
    origin: &str,
    seq_len: Option<u64>,
    kernels: crate::Kernels,
) -> Result<Model, CatalogError> {
    let mut arch = arch_from_hf_config(json, origin)?;
    arch.apply(kernels, origin)?;
    arch.build(seq_len).map_err(|e| match e {
        CatalogError::Invalid { location, message } => CatalogError::Invalid {
            location: format!("{origin}: {location}"),
            message,
        },
        other => other,
    })
}

struct Cfg<'a> {
    map: &'a Map<String, Value>,
    origin: &'a str,
}

impl Cfg<'_> {
    /// An integer field. Bounded here, before any arithmetic, by the
    /// largest value any size of [`amp_core::limits`] allows; the
    /// architecture checks each field's own bound before it is built.
    fn u(&self, key: &str) -> Result<Option<u64>, CatalogError> {
        const MAX: u64 = amp_core::limits::MAX_VOCAB;
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => match v.as_u64() {
                Some(n) if n <= MAX => Ok(Some(n)),
                Some(n) => Err(CatalogError::invalid(
                    format!("{}: `{key}`", self.origin),
                    format!("{n} is above the limit of {MAX}"),
                )),
                None => Err(CatalogError::invalid(
                    format!("{}: `{key}`", self.origin),
                    format!("expected a non-negative integer, found {v}"),
                )),
            },
        }
    }

    fn req(&self, keys: &[&str]) -> Result<u64, CatalogError> {
        for k in keys {
            if let Some(v) = self.u(k)? {
                if v == 0 {
                    return Err(CatalogError::invalid(
                        format!("{}: `{k}`", self.origin),
                        "is 0; it must be positive",
                    ));
                }
                return Ok(v);
            }
        }
        Err(CatalogError::invalid(
            self.origin,
            format!(
                "missing `{}`; a config of model type `{}` must give it",
                keys[0],
                self.model_type()
            ),
        ))
    }

    fn f(&self, key: &str) -> Result<Option<f64>, CatalogError> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v.as_f64().filter(|x| *x >= 0.0).map(Some).ok_or_else(|| {
                CatalogError::invalid(
                    format!("{}: `{key}`", self.origin),
                    format!("expected a non-negative number, found {v}"),
                )
            }),
        }
    }

    fn s(&self, key: &str) -> Option<&str> {
        self.map.get(key).and_then(|v| v.as_str())
    }

    fn b(&self, key: &str, default: bool) -> Result<bool, CatalogError> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => Err(CatalogError::invalid(
                format!("{}: `{key}`", self.origin),
                format!("expected true or false, found {v}"),
            )),
        }
    }

    fn model_type(&self) -> String {
        self.map
            .get("model_type")
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string()
    }
}

/// A rotary model's `rope_scaling` object (transformers'
/// modeling_rope_utils.py names the kind `rope_type`, older configs
/// `type`); `None` when absent, null or `default`. It changes what the model
/// computes, not its cost: the exports read it.
fn rope_scaling(cfg: &Cfg) -> Result<Option<RopeScaling>, CatalogError> {
    let at = format!("{}: `rope_scaling`", cfg.origin);
    let map = match cfg.map.get("rope_scaling") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(m)) => m,
        Some(v) => {
            return Err(CatalogError::invalid(
                at,
                format!("expected an object (or null), found {v}"),
            ))
        }
    };
    let inner = Cfg { map, origin: &at };
    let Some(kind) = inner.s("rope_type").or_else(|| inner.s("type")) else {
        return Err(CatalogError::invalid(
            at,
            "names no `rope_type` (or `type`); give the kind, e.g. \"llama3\" or \"linear\", or remove the key",
        ));
    };
    let factor = || {
        inner.f("factor")?.filter(|f| *f > 0.0).ok_or_else(|| {
            CatalogError::invalid(
                format!("{at}.factor"),
                format!("a {kind} rope scaling needs a positive `factor`"),
            )
        })
    };
    Ok(match kind {
        "default" => None,
        "llama3" => Some(RopeScaling::Llama3 {
            factor: factor()?,
            // transformers' _compute_llama3_parameters reads all three;
            // Meta's configs give 1, 4 and 8192.
            low_freq_factor: inner.f("low_freq_factor")?.unwrap_or(1.0),
            high_freq_factor: inner.f("high_freq_factor")?.unwrap_or(4.0),
            original_max_positions: inner.u("original_max_position_embeddings")?.unwrap_or(8192),
        }),
        "linear" => Some(RopeScaling::Linear { factor: factor()? }),
        other => Some(RopeScaling::Other {
            name: other.to_string(),
        }),
    })
}

/// The architecture of a Hugging Face `config.json`.
pub fn arch_from_hf_config(json: &str, origin: &str) -> Result<Arch, CatalogError> {
    amp_core::strict::check_json(json).map_err(|e| CatalogError::parse(origin, e))?;
    let root: Value = serde_json::from_str(json).map_err(|e| CatalogError::parse(origin, e))?;
    let map = root.as_object().ok_or_else(|| {
        CatalogError::invalid(
            origin,
            "expected a JSON object (a Hugging Face config.json)",
        )
    })?;
    let cfg = Cfg { map, origin };
    let mut model_type = cfg.model_type();
    if model_type.is_empty() {
        let class = map
            .get("architectures")
            .and_then(|a| a.as_array())
            .and_then(|a| a.first())
            .and_then(|c| c.as_str())
            .unwrap_or("");
        model_type = match class {
            "GPT2LMHeadModel" | "GPT2Model" => "gpt2",
            "OPTForCausalLM" | "OPTModel" => "opt",
            "GPTNeoForCausalLM" | "GPTNeoModel" => "gpt_neo",
            "LlamaForCausalLM" | "LlamaModel" => "llama",
            "MistralForCausalLM" | "MistralModel" => "mistral",
            "Qwen2ForCausalLM" | "Qwen2Model" => "qwen2",
            "Qwen3ForCausalLM" | "Qwen3Model" => "qwen3",
            "Phi3ForCausalLM" | "Phi3Model" => "phi3",
            "GemmaForCausalLM" | "GemmaModel" => "gemma",
            "Gemma3ForCausalLM" | "Gemma3TextModel" => "gemma3_text",
            _ => "",
        }
        .to_string();
    }
    let name = map
        .get("_name_or_path")
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty())
        .unwrap_or(origin)
        .to_string();
    let mut arch = match model_type.as_str() {
        "gpt2" => {
            let h = cfg.req(&["n_embd", "hidden_size"])?;
            let heads = cfg.req(&["n_head", "num_attention_heads"])?;
            let positions = cfg.u("n_positions")?.unwrap_or(1024);
            let mut a = Arch::gpt(
                &name,
                h,
                cfg.req(&["n_layer", "num_hidden_layers"])?,
                heads,
                cfg.u("vocab_size")?.unwrap_or(50257),
                positions,
                positions,
            );
            a.ffn = cfg.u("n_inner")?.unwrap_or(4 * h);
            a.gelu_new = gelu_new(&cfg);
            a.dropout = any_dropout(
                &cfg,
                &[("resid_pdrop", 0.1), ("embd_pdrop", 0.1), ("attn_pdrop", 0.1)],
            )?;
            a.tied = cfg.b("tie_word_embeddings", true)?;
            a.norm_eps = cfg.f("layer_norm_epsilon")?.unwrap_or(1e-5);
            check_heads(&cfg, h, heads)?;
            a
        }
        "opt" => {
            let h = cfg.req(&["hidden_size"])?;
            let heads = cfg.req(&["num_attention_heads"])?;
            let positions = cfg.u("max_position_embeddings")?.unwrap_or(2048);
            // OPT's learned positions have an offset of 2 rows.
            let mut a = Arch::gpt(
                &name,
                h,
                cfg.req(&["num_hidden_layers"])?,
                heads,
                cfg.u("vocab_size")?.unwrap_or(50272),
                positions + 2,
                positions,
            );
            a.ffn = cfg.u("ffn_dim")?.unwrap_or(4 * h);
            a.model_type = "opt".into();
            a.relu = cfg.s("activation_function").unwrap_or("relu") == "relu";
            a.dropout = any_dropout(&cfg, &[("dropout", 0.1), ("attention_dropout", 0.0)])?;
            let bias = cfg.b("enable_bias", true)?;
            a.qkv_bias = bias;
            a.out_bias = bias;
            a.mlp_bias = bias;
            a.tied = cfg.b("tie_word_embeddings", true)?;
            let pre_norm = cfg.b("do_layer_norm_before", true)?;
            let removed = cfg.b("_remove_final_layer_norm", false)?;
            a.final_norm = pre_norm && !removed;
            if let Some(e) = cfg.u("word_embed_proj_dim")? {
                if e != h {
                    a.embed_dim = Some(e);
                }
            }
            check_heads(&cfg, h, heads)?;
            a
        }
        "gpt_neo" => {
            let h = cfg.req(&["hidden_size"])?;
            let heads = cfg.req(&["num_heads"])?;
            let positions = cfg.u("max_position_embeddings")?.unwrap_or(2048);
            let mut a = Arch::gpt(
                &name,
                h,
                cfg.req(&["num_layers"])?,
                heads,
                cfg.u("vocab_size")?.unwrap_or(50257),
                positions,
                positions,
            );
            a.ffn = cfg.u("intermediate_size")?.unwrap_or(4 * h);
            a.qkv_bias = false;
            // Hugging Face's GPT-Neo has no SDPA path: eager attention.
            a.flash_attention = false;
            a.model_type = "gpt_neo".into();
            a.gelu_new = gelu_new(&cfg);
            a.dropout = any_dropout(
                &cfg,
                &[
                    ("resid_dropout", 0.0),
                    ("embed_dropout", 0.0),
                    ("attention_dropout", 0.0),
                ],
            )?;
            a.norm_eps = cfg.f("layer_norm_epsilon")?.unwrap_or(1e-5);
            a.tied = cfg.b("tie_word_embeddings", true)?;
            check_heads(&cfg, h, heads)?;
            a
        }
        "llama" | "mistral" | "qwen2" | "qwen3" | "phi3" | "gemma" | "gemma3_text" => {
            let gemma = model_type.starts_with("gemma");
            let h = cfg.req(&["hidden_size"])?;
            let heads = cfg.req(&["num_attention_heads"])?;
            let kv = cfg.u("num_key_value_heads")?.unwrap_or(heads);
            let positions = cfg.u("max_position_embeddings")?.unwrap_or(4096);
            let mut a = Arch::llama(
                &name,
                h,
                cfg.req(&["num_hidden_layers"])?,
                heads,
                kv,
                cfg.req(&["intermediate_size"])?,
                cfg.req(&["vocab_size"])?,
                positions.min(8192),
            );
            // transformers' Qwen3Config defaults `head_dim` to 128,
            // GemmaConfig and Gemma3TextConfig to 256, the others to
            // hidden / heads.
            let head_dim = match cfg.u("head_dim")? {
                None if model_type == "qwen3" => Some(128),
                None if gemma => Some(256),
                d => d,
            };
            if let Some(d) = head_dim {
                a.head_dim = d;
            } else {
                check_heads(&cfg, h, heads)?;
            }
            // Gemma ties its output to the embedding unless told otherwise.
            a.tied = cfg.b("tie_word_embeddings", gemma)?;
            // Qwen2 has biases on Q, K and V; Llama's and Qwen3's
            // `attention_bias` puts them on all four projections, Llama's
            // `mlp_bias` on the MLP; Phi-3 has none.
            match model_type.as_str() {
                "qwen2" => a.qkv_bias = true,
                "phi3" => {}
                _ => {
                    let ab = cfg.b("attention_bias", false)?;
                    a.qkv_bias = ab;
                    a.out_bias = ab;
                    a.mlp_bias = model_type != "qwen3" && cfg.b("mlp_bias", false)?;
                }
            }
            // Qwen3 and Gemma 3 normalise each head's query and key;
            // Gemma 3 also each branch's output. Gemma gates its MLP with
            // GeLU's tanh form (`gelu_pytorch_tanh`, one fused kernel).
            a.qk_norm = model_type == "qwen3" || model_type == "gemma3_text";
            a.post_norms = model_type == "gemma3_text";
            a.geglu = gemma;
            if gemma {
                for key in ["attn_logit_softcapping", "final_logit_softcapping"] {
                    if let Some(cap) = cfg.f(key)? {
                        return Err(CatalogError::invalid(
                            format!("{origin}: `{key}`"),
                            format!("{cap}: soft-capping (Gemma 2's) is not modelled; amp plans Gemma 3 configs, whose caps are null"),
                        ));
                    }
                }
            }
            if model_type == "phi3" {
                // Phi-3's residual dropout (`resid_pdrop`, 0 in the
                // published configs), and its rotary embedding on a part
                // of each head (`partial_rotary_factor`, Phi-4-mini's
                // 0.75), which amp does not model.
                a.dropout = cfg.f("resid_pdrop")?.unwrap_or(0.0) > 0.0;
                if let Some(p) = cfg.f("partial_rotary_factor")?.filter(|p| *p != 1.0) {
                    return Err(CatalogError::invalid(
                        format!("{origin}: `partial_rotary_factor`"),
                        format!("{p}: rotary embeddings on part of each head are not modelled (amp prices and exports them on whole heads); remove the key to plan the model as if they covered whole heads"),
                    ));
                }
            }
            a.norm = Norm::RmsNorm;
            a.model_type = model_type.clone();
            // transformers' LlamaConfig, MistralConfig, Qwen2Config,
            // Qwen3Config and the Gemma configs default to 1e-6 and 10000
            // (Gemma3TextConfig to 1e6); Phi3Config to 1e-5.
            let eps = if model_type == "phi3" { 1e-5 } else { 1e-6 };
            a.norm_eps = cfg.f("rms_norm_eps")?.unwrap_or(eps);
            let theta = if model_type == "gemma3_text" {
                1_000_000.0
            } else {
                10_000.0
            };
            a.rope_theta = Some(cfg.f("rope_theta")?.unwrap_or(theta));
            a.rope_scaling = rope_scaling(&cfg)?;
            a
        }
        "" => {
            return Err(CatalogError::invalid(
                origin,
                format!("no `model_type` or known `architectures` entry; supported model types: {SUPPORTED}"),
            ))
        }
        other => {
            // A Mixture-of-Experts config names its experts: say why, not
            // only that the type is unknown.
            let experts = ["num_local_experts", "num_experts", "n_routed_experts"]
                .into_iter()
                .find_map(|k| cfg.u(k).ok().flatten().map(|n| (k, n)));
            let why = match experts {
                Some((k, n)) => format!(
                    " (a Mixture-of-Experts model, `{k}` = {n}: amp prices dense transformers, whose whole MLP runs for every token)"
                ),
                None if map.contains_key("text_config") => " (its config nests a text decoder's in `text_config` beside another tower: amp prices text decoders; to plan the decoder without the other tower, give that `text_config` as its own config.json, with model_type `gemma3_text` for Gemma 3)".to_string(),
                None if other == "gemma2" => " (Gemma 2's attention logit soft-capping is not modelled)".to_string(),
                None => String::new(),
            };
            return Err(CatalogError::invalid(
                format!("{origin}: `model_type`"),
                format!("`{other}` is not supported{why}; supported model types: {SUPPORTED}"),
            ));
        }
    };
    // A config saved with an attention implementation names the kernel the
    // model ran with (`_attn_implementation`, as transformers stores it, or
    // `attn_implementation`).
    let attn = ["_attn_implementation", "attn_implementation"]
        .into_iter()
        .find_map(|k| cfg.s(k).map(|v| (k, v)));
    if let Some((key, value)) = attn {
        arch.flash_attention = match value {
            "eager" => false,
            "sdpa" | "flash_attention_2" | "flash_attention_3" | "flex_attention" => true,
            other => {
                return Err(CatalogError::invalid(
                    format!("{origin}: `{key}`"),
                    format!(
                        "`{other}` is not an attention implementation amp knows; use eager, sdpa, flash_attention_2, flash_attention_3 or flex_attention, or remove the key and pass --attention"
                    ),
                ))
            }
        };
    }
    Ok(arch)
}

/// Whether a GPT-2 or GPT-Neo config's MLP runs Hugging Face's composite
/// `NewGELUActivation` (`gelu_new`, both models' default); any other name
/// (`gelu`, `gelu_pytorch_tanh`, ...) maps to one fused PyTorch kernel.
fn gelu_new(cfg: &Cfg) -> bool {
    cfg.s("activation_function").unwrap_or("gelu_new") == "gelu_new"
}

/// Whether any of a config's dropout probabilities (`keys`, each with its
/// transformers default) is above 0: at 0 PyTorch's dropout returns its
/// input and keeps no mask.
fn any_dropout(cfg: &Cfg, keys: &[(&str, f64)]) -> Result<bool, CatalogError> {
    for &(key, default) in keys {
        if cfg.f(key)?.unwrap_or(default) > 0.0 {
            return Ok(true);
        }
    }
    Ok(false)
}

fn check_heads(cfg: &Cfg, h: u64, heads: u64) -> Result<(), CatalogError> {
    if heads == 0 || !h.is_multiple_of(heads) {
        return Err(CatalogError::invalid(
            cfg.origin,
            format!("hidden size {h} is not divisible by {heads} attention heads"),
        ));
    }
    Ok(())
}

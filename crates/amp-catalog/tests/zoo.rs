//! Parameter counts of every zoo model against published sizes, and the
//! Hugging Face importer against the zoo.

use amp_catalog::zoo::zoo_arch;
use amp_catalog::{model_from_hf_config, zoo_model, ZOO_NAMES};
use amp_core::model::LayerKind;

/// (zoo name, published parameters, source). Tolerance: 1%, or half a unit
/// of the published figure's last digit when it is rounded coarser than
/// that (e.g. "1.7B" in Megatron-LM's Table 1).
const PUBLISHED: &[(&str, f64, f64, &str)] = &[
    ("gpt2", 124.44e6, 0.0, "HF gpt2: 124,439,808"),
    ("gpt2-medium", 354.82e6, 0.0, "HF gpt2-medium: 354,823,168"),
    ("gpt2-large", 774.03e6, 0.0, "HF gpt2-large: 774,030,080"),
    ("gpt2-xl", 1557.6e6, 0.0, "HF gpt2-xl: 1,557,611,200"),
    // The GPT-3 paper's names are nominal sizes: the models they name
    // (Table 2.1's shapes, GPT-2's vocabulary) count up to 1.8% off them.
    (
        "gpt3-125m",
        125e6,
        0.02 * 125e6,
        "GPT-3 paper Table 2.1 (nominal)",
    ),
    (
        "gpt3-350m",
        350e6,
        0.02 * 350e6,
        "GPT-3 paper Table 2.1 (nominal)",
    ),
    (
        "gpt3-760m",
        760e6,
        0.02 * 760e6,
        "GPT-3 paper Table 2.1 (nominal)",
    ),
    (
        "gpt3-1.3b",
        1.3e9,
        0.02 * 1.3e9,
        "GPT-3 paper Table 2.1 (nominal)",
    ),
    (
        "gpt3-2.7b",
        2.7e9,
        0.02 * 2.7e9,
        "GPT-3 paper Table 2.1 (nominal)",
    ),
    (
        "gpt3-6.7b",
        6.7e9,
        0.02 * 6.7e9,
        "GPT-3 paper Table 2.1 (nominal)",
    ),
    (
        "gpt3-13b",
        13e9,
        0.02 * 13e9,
        "GPT-3 paper Table 2.1 (nominal)",
    ),
    (
        "gpt3-175b",
        175e9,
        0.02 * 175e9,
        "GPT-3 paper Table 2.1 (nominal)",
    ),
    ("gpt3-1.7b", 1.7e9, 0.05e9, "Megatron-LM Table 1"),
    ("gpt3-3.6b", 3.6e9, 0.05e9, "Megatron-LM Table 1"),
    ("gpt3-7.5b", 7.5e9, 0.05e9, "Megatron-LM Table 1"),
    ("gpt3-18.4b", 18.4e9, 0.05e9, "Megatron-LM Table 1"),
    ("gpt3-39.1b", 39.1e9, 0.05e9, "Megatron-LM Table 1"),
    ("gpt3-76.1b", 76.1e9, 0.05e9, "Megatron-LM Table 1"),
    ("gpt3-145.6b", 145.6e9, 0.05e9, "Megatron-LM Table 1"),
    ("gpt3-310.1b", 310.1e9, 0.05e9, "Megatron-LM Table 1"),
    ("gpt3-529.6b", 529.6e9, 0.05e9, "Megatron-LM Table 1"),
    ("gpt3-1008b", 1008.0e9, 0.5e9, "Megatron-LM Table 1"),
    (
        "opt-350m",
        331.2e6,
        0.0,
        "HF facebook/opt-350m: 331,196,416",
    ),
    (
        "opt-1.3b",
        1315.8e6,
        0.0,
        "HF facebook/opt-1.3b: 1,315,758,080",
    ),
    (
        "opt-30b",
        29.97e9,
        0.0,
        "OPT paper Table 1 (30B); HF count 29.97B",
    ),
    (
        "gpt-neo-2.7b",
        2.651e9,
        0.0,
        "HF EleutherAI/gpt-neo-2.7B: 2,651,307,520",
    ),
    (
        "bert-large",
        336e6,
        0.0,
        "HF bert-large-uncased (with MLM head): 336M",
    ),
    ("llama-2-7b", 6.74e9, 0.0, "Llama 2 model card: 6.74B"),
    ("llama-2-13b", 13.02e9, 0.0, "Llama 2 model card: 13.0B"),
    (
        "llama-2-70b",
        68.98e9,
        0.0,
        "HF meta-llama/Llama-2-70b: 68.98B",
    ),
    (
        "llama-3-8b",
        8.03e9,
        0.0,
        "HF meta-llama/Meta-Llama-3-8B: 8.03B",
    ),
    (
        "llama-3-70b",
        70.6e9,
        0.0,
        "HF meta-llama/Meta-Llama-3-70B: 70.6B",
    ),
    (
        "llama-3.1-8b",
        8.03e9,
        0.0,
        "HF meta-llama/Llama-3.1-8B: 8.03B",
    ),
    (
        "llama-3.1-70b",
        70.6e9,
        0.0,
        "HF meta-llama/Llama-3.1-70B: 70.6B",
    ),
    (
        "llama-3.1-405b",
        405.9e9,
        0.0,
        "HF meta-llama/Llama-3.1-405B: 405.9B",
    ),
    (
        "llama-3.2-1b",
        1235.8e6,
        0.0,
        "HF meta-llama/Llama-3.2-1B: 1,235,814,400 (tied)",
    ),
    (
        "llama-3.2-3b",
        3212.7e6,
        0.0,
        "HF meta-llama/Llama-3.2-3B: 3,212,749,824 (tied)",
    ),
    (
        "mistral-7b",
        7.24e9,
        0.0,
        "HF mistralai/Mistral-7B-v0.1: 7.24B",
    ),
    (
        "qwen2.5-7b",
        7.62e9,
        0.0,
        "Qwen2.5 model card: 7.61B (7.62B with embeddings)",
    ),
    ("qwen2.5-72b", 72.7e9, 0.0, "Qwen2.5 model card: 72.7B"),
    (
        "qwen3-0.6b",
        0.6e9,
        0.0,
        "HF Qwen/Qwen3-0.6B model card: 0.6B (0.44B without the embedding), tied",
    ),
    ("qwen3-8b", 8.19e9, 0.0, "HF Qwen/Qwen3-8B model card: 8.2B"),
    (
        "qwen3-32b",
        32.8e9,
        0.0,
        "HF Qwen/Qwen3-32B model card: 32.8B",
    ),
    (
        "gemma-3-1b",
        999_885_952.0,
        0.0,
        "HF google/gemma-3-1b-pt: 999,885,952 (tied)",
    ),
    (
        "phi-3-mini",
        3.82e9,
        0.0,
        "HF microsoft/Phi-3-mini-4k-instruct: 3.8B (3,821,079,552 in its safetensors)",
    ),
    (
        "vit-l-16",
        304.3e6,
        0.0,
        "timm vit_large_patch16_224: 304.3M",
    ),
    ("vit-h-14", 632e6, 0.0, "ViT paper Table 1: 632M"),
];

#[test]
fn every_zoo_model_matches_its_published_size() {
    for &(name, published, rounding, source) in PUBLISHED {
        let m = zoo_model(name, None).unwrap();
        let p = m.total_params() as f64;
        let err = (p - published).abs();
        let tol = (0.01 * published).max(rounding);
        println!(
            "{name:16} {p:>16.0} vs {published:>16.0} ({source}): {:+.2}%",
            (p / published - 1.0) * 100.0
        );
        assert!(
            err <= tol,
            "{name}: {p} vs published {published} ({source})"
        );
    }
    // Every zoo name builds (the AMP ones included) and is covered above.
    for name in ZOO_NAMES {
        let m = zoo_model(name, None).unwrap();
        assert!(m.validate().is_ok());
        if !name.ends_with("-amp") {
            assert!(
                PUBLISHED.iter().any(|p| p.0 == *name),
                "{name} has no published size in the test"
            );
        }
    }
}

#[test]
fn layer_lists_have_the_expected_structure() {
    let m = zoo_model("gpt2", Some(512)).unwrap();
    assert_eq!(m.num_layers(), 12 + 3);
    assert_eq!(m.layers[0].kind, LayerKind::Embedding);
    assert_eq!(m.layers[13].kind, LayerKind::Other);
    assert_eq!(m.layers[14].kind, LayerKind::VocabProjection);
    assert_eq!(m.layers[14].tied_to, Some(0));
    assert_eq!(m.shape.as_ref().unwrap().seq_len, 512);
    assert_eq!(m.layers[14].output_elems_per_sample, 512 * 50257);
    // Forward FLOPs of a GPT-2 block: 24 s h^2 + 4 s^2 h.
    let (s, h) = (512.0, 768.0);
    assert_eq!(
        m.layers[1].forward_flops_per_sample,
        Some(24.0 * s * h * h + 4.0 * s * s * h)
    );

    let l = zoo_model("llama-3-8b", None).unwrap();
    assert_eq!(l.layers.last().unwrap().tied_to, None);
    // GQA + SwiGLU block: 2 h^2 + 2 h (8 x 128) + 3 h f + 2 h.
    assert_eq!(
        l.layers[1].params,
        2 * 4096 * 4096 + 2 * 4096 * 1024 + 3 * 4096 * 14336 + 2 * 4096
    );
    let t = zoo_model("transgan-amp", None).unwrap();
    assert_eq!(t, amp_core::model::builtin::amp_transgan());
}

#[test]
fn unknown_model_suggests_nearest_names() {
    let e = zoo_model("llama-3-7b", None).unwrap_err().to_string();
    assert!(
        e.contains("unknown model `llama-3-7b`") && e.contains("llama-3-8b"),
        "{e}"
    );
    let e = zoo_model("gpt2", Some(4096)).unwrap_err().to_string();
    assert!(e.contains("1024 learned positions"), "{e}");
    assert!(zoo_model("vit-l-16", Some(100)).is_err());
}

const LLAMA3_8B: &str = r#"{
  "architectures": ["LlamaForCausalLM"], "model_type": "llama",
  "hidden_size": 4096, "intermediate_size": 14336, "num_attention_heads": 32,
  "num_hidden_layers": 32, "num_key_value_heads": 8, "vocab_size": 128256,
  "max_position_embeddings": 8192, "tie_word_embeddings": false, "rms_norm_eps": 1e-05,
  "rope_theta": 500000.0
}"#;

const OPT_350M: &str = r#"{
  "_name_or_path": "facebook/opt-350m", "architectures": ["OPTForCausalLM"],
  "do_layer_norm_before": false, "ffn_dim": 4096, "hidden_size": 1024,
  "max_position_embeddings": 2048, "model_type": "opt", "num_attention_heads": 16,
  "num_hidden_layers": 24, "vocab_size": 50272, "word_embed_proj_dim": 512
}"#;

const QWEN25_7B: &str = r#"{
  "architectures": ["Qwen2ForCausalLM"], "hidden_size": 3584, "intermediate_size": 18944,
  "max_position_embeddings": 131072, "model_type": "qwen2", "num_attention_heads": 28,
  "num_hidden_layers": 28, "num_key_value_heads": 4, "tie_word_embeddings": false,
  "vocab_size": 152064, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0
}"#;

/// Qwen/Qwen3-8B's config.json as published.
const QWEN3_8B: &str = r#"{
  "architectures": ["Qwen3ForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
  "bos_token_id": 151643, "eos_token_id": 151645, "head_dim": 128, "hidden_act": "silu",
  "hidden_size": 4096, "initializer_range": 0.02, "intermediate_size": 12288,
  "max_position_embeddings": 40960, "max_window_layers": 36, "model_type": "qwen3",
  "num_attention_heads": 32, "num_hidden_layers": 36, "num_key_value_heads": 8,
  "rms_norm_eps": 1e-06, "rope_scaling": null, "rope_theta": 1000000, "sliding_window": null,
  "tie_word_embeddings": false, "torch_dtype": "bfloat16", "transformers_version": "4.51.0",
  "use_cache": true, "use_sliding_window": false, "vocab_size": 151936
}"#;

/// microsoft/Phi-3-mini-4k-instruct's config.json as published (its
/// `auto_map` aside).
const PHI3_MINI: &str = r#"{
  "_name_or_path": "Phi-3-mini-4k-instruct", "architectures": ["Phi3ForCausalLM"],
  "attention_bias": false, "attention_dropout": 0.0, "bos_token_id": 1, "embd_pdrop": 0.0,
  "eos_token_id": 32000, "hidden_act": "silu", "hidden_size": 3072, "initializer_range": 0.02,
  "intermediate_size": 8192, "max_position_embeddings": 4096, "model_type": "phi3",
  "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 32,
  "original_max_position_embeddings": 4096, "pad_token_id": 32000, "resid_pdrop": 0.0,
  "rms_norm_eps": 1e-05, "rope_scaling": null, "rope_theta": 10000.0, "sliding_window": 2047,
  "tie_word_embeddings": false, "torch_dtype": "bfloat16", "transformers_version": "4.40.2",
  "use_cache": true, "vocab_size": 32064
}"#;

/// google/gemma-3-1b-pt's config.json as published.
const GEMMA3_1B: &str = r#"{
  "architectures": ["Gemma3ForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
  "attn_logit_softcapping": null, "bos_token_id": 2, "cache_implementation": "hybrid",
  "eos_token_id": 1, "final_logit_softcapping": null, "head_dim": 256,
  "hidden_activation": "gelu_pytorch_tanh", "hidden_size": 1152, "initializer_range": 0.02,
  "intermediate_size": 6912, "max_position_embeddings": 32768, "model_type": "gemma3_text",
  "num_attention_heads": 4, "num_hidden_layers": 26, "num_key_value_heads": 1,
  "pad_token_id": 0, "query_pre_attn_scalar": 256, "rms_norm_eps": 1e-06,
  "rope_local_base_freq": 10000, "rope_scaling": null, "rope_theta": 1000000,
  "sliding_window": 512, "sliding_window_pattern": 6, "torch_dtype": "bfloat16",
  "transformers_version": "4.50.0.dev0", "use_cache": true, "vocab_size": 262144
}"#;

const GPT2: &str = r#"{"model_type": "gpt2", "n_embd": 768, "n_head": 12, "n_layer": 12, "n_positions": 1024, "vocab_size": 50257}"#;

const GPT_NEO: &str = r#"{"architectures": ["GPTNeoForCausalLM"], "hidden_size": 2560, "num_heads": 20, "num_layers": 32,
  "max_position_embeddings": 2048, "vocab_size": 50257, "attention_types": [[["global", "local"], 16]]}"#;

const MISTRAL: &str = r#"{"model_type": "mistral", "hidden_size": 4096, "intermediate_size": 14336, "num_attention_heads": 32,
  "num_hidden_layers": 32, "num_key_value_heads": 8, "vocab_size": 32000, "max_position_embeddings": 32768,
  "rms_norm_eps": 1e-05, "rope_theta": 10000.0}"#;

/// meta-llama/Llama-3.2-1B's config.json as published (Llama 3's rotary
/// scaling, an explicit head_dim, tied embeddings).
const LLAMA32_1B: &str = r#"{
  "architectures": ["LlamaForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
  "bos_token_id": 128000, "eos_token_id": 128001, "head_dim": 64, "hidden_act": "silu",
  "hidden_size": 2048, "initializer_range": 0.02, "intermediate_size": 8192,
  "max_position_embeddings": 131072, "mlp_bias": false, "model_type": "llama",
  "num_attention_heads": 32, "num_hidden_layers": 16, "num_key_value_heads": 8,
  "pretraining_tp": 1, "rms_norm_eps": 1e-05,
  "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
    "original_max_position_embeddings": 8192, "rope_type": "llama3"},
  "rope_theta": 500000.0, "tie_word_embeddings": true, "torch_dtype": "bfloat16",
  "transformers_version": "4.45.0.dev0", "use_cache": true, "vocab_size": 128256
}"#;

/// A Llama config's `attention_bias` puts biases on the four attention
/// projections and `mlp_bias` on the MLP's, each on its own: the model
/// says which, so that an engine that ties them refuses it.
#[test]
fn llama_attention_and_mlp_biases_are_told_apart() {
    let with = |attention: bool, mlp: bool| {
        let json = LLAMA32_1B
            .replace(
                r#""attention_bias": false"#,
                &format!(r#""attention_bias": {attention}"#),
            )
            .replace(r#""mlp_bias": false"#, &format!(r#""mlp_bias": {mlp}"#));
        let m = model_from_hf_config(&json, "config.json", Some(1024)).unwrap();
        let a = m.architecture().unwrap().clone();
        (
            m.total_params(),
            a.qkv_bias,
            a.linear_bias,
            a.mlp_has_bias(),
            a.mlp_bias,
        )
    };
    let (none, ..) = with(false, false);
    // Attention only: q, k, v (2048 + 2 x 512) and o (2048) per block.
    let (p, qkv, out, mlp, told) = with(true, false);
    assert_eq!(p - none, 16 * (2048 + 2 * 512 + 2048));
    assert!(qkv && out && !mlp);
    assert_eq!(told, Some(false));
    // MLP only: gate and up (8192 each) and down (2048) per block.
    let (p, qkv, out, mlp, told) = with(false, true);
    assert_eq!(p - none, 16 * (2 * 8192 + 2048));
    assert!(!qkv && !out && mlp);
    assert_eq!(told, Some(true));
    // Both: nothing to tell apart.
    let (.., mlp, told) = with(true, true);
    assert!(mlp && told.is_none());
}

#[test]
fn hf_configs_give_the_zoo_models() {
    for (json, zoo, seq) in [
        (LLAMA3_8B, "llama-3-8b", 8192),
        (OPT_350M, "opt-350m", 2048),
        (QWEN25_7B, "qwen2.5-7b", 4096),
        (GPT2, "gpt2", 1024),
        (GPT_NEO, "gpt-neo-2.7b", 2048),
        (MISTRAL, "mistral-7b", 4096),
        (LLAMA32_1B, "llama-3.2-1b", 8192),
        (QWEN3_8B, "qwen3-8b", 4096),
        // transformers' Qwen3Config defaults `head_dim` to 128.
        (
            &QWEN3_8B.replace("\"head_dim\": 128, ", ""),
            "qwen3-8b",
            4096,
        ),
        (PHI3_MINI, "phi-3-mini", 4096),
        (GEMMA3_1B, "gemma-3-1b", 4096),
    ] {
        let a = model_from_hf_config(json, "config.json", Some(seq)).unwrap();
        let b = zoo_model(zoo, Some(seq)).unwrap();
        assert_eq!(a.total_params(), b.total_params(), "{zoo}");
        assert_eq!(a.layers.len(), b.layers.len(), "{zoo}");
        for (x, y) in a.layers.iter().zip(&b.layers) {
            assert_eq!(
                (x.params, x.forward_flops_per_sample, x.tied_to),
                (y.params, y.forward_flops_per_sample, y.tied_to),
                "{zoo}"
            );
        }
        // The architecture exports build from, the same but for the context
        // length (the zoo's is its usual training sequence).
        let arch = |m: &amp_core::model::Model| {
            let mut a = m.shape.as_ref().unwrap().architecture.clone().unwrap();
            a.max_positions = 0;
            a
        };
        assert_eq!(arch(&a), arch(&b), "{zoo}");
    }
    // The name comes from the config when it has one.
    assert_eq!(
        model_from_hf_config(OPT_350M, "c.json", None).unwrap().name,
        "facebook/opt-350m"
    );
    assert!(zoo_arch("opt-350m").unwrap().embed_dim == Some(512));
}

/// google/gemma-7b's config.json as published: Gemma (v1) has Llama's two
/// norms, a GeLU-gated MLP, heads of 256 (16 x 256 on a hidden size of
/// 3072) and a tied output.
#[test]
fn gemma_configs_give_the_published_sizes() {
    let gemma_7b = r#"{
  "architectures": ["GemmaForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
  "bos_token_id": 2, "eos_token_id": 1, "head_dim": 256, "hidden_act": "gelu",
  "hidden_size": 3072, "initializer_range": 0.02, "intermediate_size": 24576,
  "max_position_embeddings": 8192, "model_type": "gemma", "num_attention_heads": 16,
  "num_hidden_layers": 28, "num_key_value_heads": 16, "pad_token_id": 0, "rms_norm_eps": 1e-06,
  "rope_scaling": null, "rope_theta": 10000.0, "torch_dtype": "bfloat16",
  "transformers_version": "4.38.0.dev0", "use_cache": true, "vocab_size": 256000
}"#;
    let m = model_from_hf_config(gemma_7b, "config.json", Some(4096)).unwrap();
    // HF google/gemma-7b: 8,537,680,896 parameters.
    assert_eq!(m.total_params(), 8_537_680_896);
    let a = m.shape.as_ref().unwrap().architecture.clone().unwrap();
    assert_eq!(
        (a.family.as_str(), a.activation, a.head_dim),
        ("gemma", amp_core::model::Activation::Geglu, 256)
    );
    assert!(a.tied_embeddings && !a.post_norms && !a.qk_norm);
}

/// A config's dropout probabilities decide whether blocks keep dropout
/// masks: at 0 PyTorch's dropout returns its input and keeps none. GPT-2's
/// and OPT's default to 0.1, GPT-Neo's to 0 (and its published configs
/// give 0).
#[test]
fn hf_configs_say_whether_blocks_drop_out() {
    let dropout = |json: &str| {
        let m = model_from_hf_config(json, "c.json", None).unwrap();
        let stored = m.layers[1].stored_activation_elems_per_sample.unwrap();
        (m.dropout().unwrap(), stored)
    };
    let (on, with_masks) = dropout(GPT2);
    assert!(on);
    let no_dropout = GPT2.replace(
        "\"vocab_size\": 50257}",
        "\"vocab_size\": 50257, \"resid_pdrop\": 0.0, \"embd_pdrop\": 0, \"attn_pdrop\": 0.0}",
    );
    let (off, without) = dropout(&no_dropout);
    assert!(!off);
    // Two one-byte masks of s h, counted in 16-bit elements: s h.
    assert_eq!(with_masks - without, 1024 * 768);
    assert!(dropout(&no_dropout.replace("\"attn_pdrop\": 0.0", "\"attn_pdrop\": 0.1")).0);
    assert!(!dropout(GPT_NEO).0);
    assert_eq!(
        zoo_model("gpt-neo-2.7b", None).unwrap().dropout(),
        Some(false)
    );
    assert!(dropout(OPT_350M).0);
}

#[test]
fn architectures_say_what_engines_must_build() {
    use amp_core::model::{Activation, NormKind, PositionEmbedding};
    let arch = |name: &str| {
        zoo_model(name, None)
            .unwrap()
            .shape
            .unwrap()
            .architecture
            .unwrap()
    };
    let l = arch("llama-3-8b");
    assert_eq!(
        (
            l.family.as_str(),
            l.kv_heads,
            l.ffn_hidden,
            l.activation,
            l.norm
        ),
        ("llama", 8, 14336, Activation::Swiglu, NormKind::Rmsnorm)
    );
    assert_eq!(l.position_embedding, PositionEmbedding::Rope);
    assert_eq!(l.rope_theta, Some(500_000.0));
    assert!(!l.tied_embeddings && !l.linear_bias && !l.qkv_bias);
    let q = arch("qwen2.5-7b");
    assert_eq!(
        (q.family.as_str(), q.kv_heads, q.norm_eps),
        ("qwen2", 4, 1e-6)
    );
    assert!(q.qkv_bias && !q.linear_bias);
    let g = arch("gpt3-1.7b");
    assert_eq!(
        (g.family.as_str(), g.ffn_hidden, g.activation, g.norm),
        ("gpt3", 4 * 2304, Activation::Gelu, NormKind::Layernorm)
    );
    assert_eq!(
        (g.position_embedding, g.max_positions),
        (PositionEmbedding::Learned, 2048)
    );
    assert!(g.tied_embeddings && g.linear_bias && g.qkv_bias);
    assert_eq!(arch("opt-1.3b").activation, Activation::Relu);
    let neo = arch("gpt-neo-2.7b");
    assert!(neo.linear_bias && !neo.qkv_bias);
    // Qwen3: a norm on each head's query and key, heads of 128 that need
    // not make up the hidden size (64 x 128 for 5120 in the 32B).
    let q3 = arch("qwen3-32b");
    assert_eq!(
        (q3.family.as_str(), q3.head_dim, q3.kv_heads, q3.rope_theta),
        ("qwen3", 128, 8, Some(1e6))
    );
    assert!(q3.qk_norm && !q3.qkv_bias && !q3.linear_bias && !q3.tied_embeddings);
    assert!(!l.qk_norm && !arch("phi-3-mini").qk_norm);
    assert_eq!(arch("phi-3-mini").family, "phi3");
    // Gemma 3: GeLU-gated, four norms per block (the two on the branches'
    // outputs hold h weights each and keep their s h inputs), query and
    // key norms, tied.
    let g3 = arch("gemma-3-1b");
    assert_eq!(
        (g3.family.as_str(), g3.activation, g3.head_dim, g3.kv_heads),
        ("gemma3_text", Activation::Geglu, 256, 1)
    );
    assert!(g3.post_norms && g3.qk_norm && g3.tied_embeddings);
    assert!(!l.post_norms && l.activation == Activation::Swiglu);
    let with = zoo_model("gemma-3-1b", Some(512)).unwrap();
    let mut plain = zoo_arch("gemma-3-1b").unwrap();
    plain.post_norms = false;
    let without = plain.build(Some(512)).unwrap();
    assert_eq!(with.layers[1].params - without.layers[1].params, 2 * 1152);
    assert_eq!(
        with.layers[1].stored_activation_elems_per_sample.unwrap()
            - without.layers[1]
                .stored_activation_elems_per_sample
                .unwrap(),
        2 * 512 * 1152
    );
    // The query and key norms hold head_dim weights each.
    let with = zoo_model("qwen3-8b", None).unwrap();
    let mut plain = zoo_arch("qwen3-8b").unwrap();
    plain.qk_norm = false;
    let without = plain.build(None).unwrap();
    assert_eq!(with.layers[1].params - without.layers[1].params, 2 * 128);
    // ... and keep their inputs: this rank's queries and keys, s (32 + 8) 128.
    assert_eq!(
        with.layers[1].stored_activation_elems_per_sample.unwrap()
            - without.layers[1]
                .stored_activation_elems_per_sample
                .unwrap(),
        4096 * 40 * 128
    );
}

#[test]
fn hf_config_errors_are_specific() {
    let e = model_from_hf_config("{}", "c.json", None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("c.json") && e.contains("model_type"), "{e}");
    let e = model_from_hf_config(r#"{"model_type": "t5"}"#, "c.json", None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("`t5` is not supported") && e.contains("llama"),
        "{e}"
    );
    let e = model_from_hf_config(
        r#"{"model_type": "llama", "hidden_size": 64}"#,
        "c.json",
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("missing `num_attention_heads`"), "{e}");
    let e = model_from_hf_config(r#"{"model_type": "gpt2", "n_embd": "x"}"#, "c.json", None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("`n_embd`") && e.contains("integer"), "{e}");
    let e = model_from_hf_config("not json", "c.json", None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("c.json: cannot parse"), "{e}");
    // Phi-4-mini's partial rotary embedding is not modelled: refused, named.
    let partial = PHI3_MINI.replace(
        "\"rope_theta\"",
        "\"partial_rotary_factor\": 0.75, \"rope_theta\"",
    );
    let e = model_from_hf_config(&partial, "c.json", None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("c.json: `partial_rotary_factor`") && e.contains("0.75"),
        "{e}"
    );
    // Gemma 2's soft-capping is not modelled: refused, named.
    let capped = GEMMA3_1B.replace(
        "\"attn_logit_softcapping\": null",
        "\"attn_logit_softcapping\": 50.0",
    );
    let e = model_from_hf_config(&capped, "c.json", None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("c.json: `attn_logit_softcapping`") && e.contains("50"),
        "{e}"
    );
    let e = model_from_hf_config(r#"{"model_type": "gemma2"}"#, "c.json", None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("`gemma2` is not supported") && e.contains("soft-capping"),
        "{e}"
    );
    // A vision-language wrapper: the decoder's config is nested.
    let e = model_from_hf_config(
        r#"{"model_type": "gemma3", "text_config": {"model_type": "gemma3_text"}}"#,
        "c.json",
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("`text_config`") && e.contains("gemma3_text"),
        "{e}"
    );
    let bad_heads = LLAMA3_8B.replace("\"num_key_value_heads\": 8", "\"num_key_value_heads\": 5");
    let e = model_from_hf_config(&bad_heads, "c.json", None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("key/value heads"), "{e}");
}

/// A config saved with its attention implementation decides the kernel:
/// `eager` materialises the scores, SDPA and FlashAttention do not; an
/// unknown name is refused, naming the key.
#[test]
fn hf_configs_name_their_attention() {
    let flash = |json: &str| {
        model_from_hf_config(json, "c.json", None)
            .map(|m| m.shape.unwrap().architecture.unwrap().flash_attention)
    };
    assert_eq!(flash(GPT2).unwrap(), Some(true));
    assert_eq!(flash(GPT_NEO).unwrap(), Some(false));
    let with = |json: &str, key: &str, value: &str| {
        json.replacen('{', &format!(r#"{{"{key}": "{value}", "#), 1)
    };
    assert_eq!(
        flash(&with(GPT2, "_attn_implementation", "eager")).unwrap(),
        Some(false)
    );
    assert_eq!(
        flash(&with(GPT_NEO, "_attn_implementation", "flash_attention_2")).unwrap(),
        Some(true)
    );
    assert_eq!(
        flash(&with(GPT2, "attn_implementation", "sdpa")).unwrap(),
        Some(true)
    );
    let e = flash(&with(GPT2, "_attn_implementation", "magic"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("c.json: `_attn_implementation`") && e.contains("`magic`"),
        "{e}"
    );
}

/// A rotary model's `rope_scaling` is read as transformers reads it (the
/// kind from `rope_type`, or `type` in older configs), so that exports build
/// the frequencies the model uses: Llama 3.1's and 3.2's rescaling, linear
/// interpolation, and any other kind by its name; absent, null or
/// `default`, none. Llama 3.1 and 3.2 in the zoo rescale, Llama 3 does not.
#[test]
fn rope_scaling_is_read_as_the_config_says() {
    use amp_core::model::RopeScaling;
    let scaling = |json: &str| {
        model_from_hf_config(json, "c.json", Some(4096))
            .unwrap()
            .architecture()
            .unwrap()
            .rope_scaling
            .clone()
    };
    let llama3 = |factor| Some(RopeScaling::llama3(factor));
    assert_eq!(scaling(LLAMA32_1B), llama3(32.0));
    assert_eq!(scaling(LLAMA3_8B), None);
    let with = |value: &str| {
        LLAMA3_8B.replace(
            "\"rope_theta\": 500000.0",
            &format!("\"rope_theta\": 500000.0, \"rope_scaling\": {value}"),
        )
    };
    assert_eq!(scaling(&with("null")), None);
    assert_eq!(scaling(&with(r#"{"rope_type": "default"}"#)), None);
    assert_eq!(
        scaling(&with(r#"{"type": "linear", "factor": 2.0}"#)),
        Some(RopeScaling::Linear { factor: 2.0 })
    );
    assert_eq!(
        scaling(&with(
            r#"{"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}"#
        )),
        Some(RopeScaling::Other {
            name: "yarn".into()
        })
    );
    for (value, words) in [
        ("3", "expected an object"),
        ("{}", "names no `rope_type`"),
        (r#"{"rope_type": "llama3"}"#, "positive `factor`"),
    ] {
        let e = model_from_hf_config(&with(value), "c.json", None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("c.json: `rope_scaling`") && e.contains(words),
            "{value}: {e}"
        );
    }
    let zoo = |name: &str| {
        zoo_model(name, None)
            .unwrap()
            .architecture()
            .unwrap()
            .rope_scaling
            .clone()
    };
    assert_eq!(zoo("llama-3.1-8b"), llama3(8.0));
    assert_eq!(zoo("llama-3.1-405b"), llama3(8.0));
    assert_eq!(zoo("llama-3.2-3b"), llama3(32.0));
    assert_eq!(zoo("llama-3-8b"), None);
    assert_eq!(zoo("qwen3-8b"), None);
}

//! Loaders of the Sailor artifact's files (SOSP 2025, MIT licence): per-layer
//! profiles, model descriptions, GPU catalog, network curves and measured
//! plans. Pure functions over strings; the caller reads the files.
//!
//! File layout (see the data README): `profiles.json`, `llm_info.json`,
//! `training/*.json`, `cluster_config.json`, `network/intra_node_bandwidths.json`,
//! `network/inter_node_bandwidths.json` and measured runs
//! `measured/<cluster>/<model>/**/plan_config_*.json`.
//!
//! By job: this module reads the model side (profiles, `llm_info.json`,
//! `training/*.json`); `hardware` the GPU catalog and network curves;
//! `plan_config` a measured run's plan file; `export` writes an amp
//! plan as such a file.

use serde::Deserialize;
use serde_json::Value;

use amp_core::error::{AmpError, Result};
use amp_core::model::{Layer, LayerKind, Model, TransformerShape};
use amp_core::profile::{Profile, ProfileEntry};
use amp_core::setup::{
    Engine, NumberFormats, OptimizerStep, PipelineReceive, Precision, StageExchange,
};

mod export;
mod hardware;
mod plan_config;

pub use export::*;
pub use hardware::*;
pub use plan_config::*;

/// Keys of a JSON object that are integers, sorted numerically, with values.
fn numeric_entries<'a>(
    obj: &'a serde_json::Map<String, Value>,
    at: &str,
) -> Result<Vec<(usize, &'a Value)>> {
    let mut out = Vec::with_capacity(obj.len());
    for (k, v) in obj {
        let n: usize = k.trim().parse().map_err(|_| {
            AmpError::invalid(at, format!("key `{k}` is not a non-negative integer"))
        })?;
        out.push((n, v));
    }
    out.sort_by_key(|(n, _)| *n);
    Ok(out)
}

fn as_object<'a>(v: &'a Value, at: &str) -> Result<&'a serde_json::Map<String, Value>> {
    v.as_object()
        .ok_or_else(|| AmpError::invalid(at, "expected a JSON object"))
}

fn as_f64(v: &Value, at: &str) -> Result<f64> {
    v.as_f64()
        .filter(|x| x.is_finite())
        .ok_or_else(|| AmpError::invalid(at, format!("expected a finite number, found `{v}`")))
}

/// Names of the models `profiles.json` covers.
pub fn profile_models(text: &str, origin: &str) -> Result<Vec<String>> {
    let root: Value = AmpError::json(text, origin)?;
    Ok(as_object(&root, origin)?.keys().cloned().collect())
}

/// Parses `profiles.json` (model -> GPU type -> micro-batch size -> tensor
/// parallel degree -> layer -> [forward, backward, update] seconds) for one
/// model: one [`ProfileEntry`] per (GPU, micro-batch, tp), source "sailor".
pub fn parse_profiles(text: &str, origin: &str, model: &str) -> Result<Profile> {
    let root: Value = AmpError::json(text, origin)?;
    let root = as_object(&root, origin)?;
    let m = root.get(model).ok_or_else(|| {
        AmpError::missing_profile(
            None,
            None,
            format!(
                "{origin} has no model `{model}` (it has: {})",
                root.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        )
    })?;
    let mut entries = Vec::new();
    for (gpu, by_mbs) in as_object(m, &format!("{origin}: {model}"))? {
        let at_gpu = format!("{origin}: {model}.{gpu}");
        for (mbs, by_tp) in numeric_entries(as_object(by_mbs, &at_gpu)?, &at_gpu)? {
            let at_mbs = format!("{at_gpu}.{mbs}");
            for (tp, layers) in numeric_entries(as_object(by_tp, &at_mbs)?, &at_mbs)? {
                let at_tp = format!("{at_mbs}.{tp}");
                if mbs == 0 || tp == 0 {
                    return Err(AmpError::invalid(
                        at_tp,
                        "micro-batch size and tensor-parallel degree must be at least 1",
                    ));
                }
                let layers = numeric_entries(as_object(layers, &at_tp)?, &at_tp)?;
                let (mut f, mut b, mut u) = (Vec::new(), Vec::new(), Vec::new());
                for (i, (idx, times)) in layers.iter().enumerate() {
                    let at_l = format!("{at_tp}.{idx}");
                    if *idx != i {
                        return Err(AmpError::invalid(
                            at_l,
                            format!(
                                "layer indices must run 0, 1, 2, ... without gaps; expected {i}"
                            ),
                        ));
                    }
                    let arr = times.as_array().filter(|a| a.len() == 3).ok_or_else(|| {
                        AmpError::invalid(&at_l, "expected [forward_s, backward_s, update_s]")
                    })?;
                    let t: Vec<f64> = arr
                        .iter()
                        .map(|x| as_f64(x, &at_l))
                        .collect::<Result<_>>()?;
                    if t.iter().any(|x| *x < 0.0) {
                        return Err(AmpError::invalid(at_l, "negative time"));
                    }
                    f.push(t[0]);
                    b.push(t[1]);
                    u.push(t[2]);
                }
                entries.push(ProfileEntry {
                    gpu: gpu.clone(),
                    tp,
                    micro_batch: Some(mbs),
                    forward_s: f,
                    backward_s: Some(b),
                    optimizer_s: Some(u),
                    source: Some("sailor".to_string()),
                });
            }
        }
    }
    entries.sort_by(|a, b| {
        (a.gpu.as_str(), a.tp, a.micro_batch).cmp(&(b.gpu.as_str(), b.tp, b.micro_batch))
    });
    Ok(Profile {
        entries,
        precision: None,
    })
}

/// Spreads each optimizer-step time of a Sailor profile over the layers.
///
/// Sailor's profiler (`--sailor-profile` in its Megatron-DeepSpeed,
/// megatron/training.py) times the optimizer step of the small model it
/// profiles: an embedding, two transformer blocks and the layers after the
/// blocks (profile_all.py's runs; the times of its blocks stand for every
/// block) and writes that one mean (`mean_opt_time_sec`) as the third entry
/// of every layer. amp sums a stage's per-layer optimizer times, so read
/// as they are a step would count once per layer (26 times for OPT-350).
/// Where an entry's optimizer times are all equal, each layer gets the
/// step's share of its parameters, `step x params(layer) /
/// params(profiled)`, the profiled model being the layers that are not
/// transformer blocks and the first two blocks: an Adam step streams each
/// parameter's weight, gradient and moments once, so its time follows the
/// parameters it updates. Parameters are the tp-1 counts of `model` (the
/// share is the same at any tp to a fraction of a percent: norms are the
/// only layers tp does not split). Entries whose times differ (per-layer
/// measurements) and an all-zero entry are left as they are.
pub fn spread_optimizer_step(profile: &mut Profile, model: &Model) {
    let mut blocks_seen = 0;
    let profiled: f64 = model
        .layers
        .iter()
        .filter(|l| {
            if l.kind != LayerKind::TransformerBlock {
                return true;
            }
            blocks_seen += 1;
            blocks_seen <= 2
        })
        .map(|l| l.params as f64)
        .sum();
    if profiled <= 0.0 {
        return;
    }
    for e in &mut profile.entries {
        let Some(steps) = e.optimizer_s.as_mut() else {
            continue;
        };
        let step = match steps.first() {
            Some(&s) if s > 0.0 && steps.iter().all(|&x| x == s) => s,
            _ => continue,
        };
        if steps.len() != model.layers.len() {
            // check_layers reports the mismatch.
            continue;
        }
        for (t, l) in steps.iter_mut().zip(&model.layers) {
            *t = step * l.params as f64 / profiled;
        }
    }
}

/// The model of `training` and its profile as amp prices Sailor's runs:
/// the layer list ([`parse_model`]), the profile ([`parse_profiles`]) in
/// the runs' number format ([`training_precision`]), with its layers
/// checked and each optimizer step spread over them
/// ([`spread_optimizer_step`]). The one reader of the pair, for the CLI,
/// the tests and the benchmarks alike.
pub fn model_and_profile(
    llm_info: &str,
    llm_origin: &str,
    profiles: &str,
    profiles_origin: &str,
    training: &TrainingConfig,
) -> Result<(Model, Profile)> {
    let model = parse_model(llm_info, llm_origin, training)?;
    let mut profile = parse_profiles(profiles, profiles_origin, &training.model)?;
    profile.precision = training_precision(llm_info, llm_origin, &training.model)?;
    profile.check_layers(model.num_layers(), profiles_origin)?;
    spread_optimizer_step(&mut profile, &model);
    Ok((model, profile))
}

/// The training setup of Sailor's runs: 1F1B, no recomputation or
/// sharding, the number formats `precision` (from [`training_precision`])
/// implies, DeepSpeed's pipeline sends and fused Adam, and Megatron-LM's
/// loss. `llm_info.json`'s 4 bytes per
/// output and parameter element describe fp32 weights and an fp32 residual
/// stream, which with 16-bit activations is PyTorch autocast
/// ([`NumberFormats::autocast`]); 2 bytes is mixed precision. The runs are
/// Megatron-DeepSpeed's, whose pipeline is DeepSpeed's engine: a
/// tensor-parallel stage sends each rank's partition and the receivers
/// all-gather ([`Engine::default_pipeline_send`]).
pub fn training_setup(precision: Option<Precision>) -> amp_core::setup::TrainingSetup {
    let formats = match precision {
        Some(Precision::Fp32) => NumberFormats::autocast(Precision::Fp16),
        Some(p) => p.formats(),
        None => Precision::Fp16.formats(),
    };
    amp_core::setup::TrainingSetup {
        formats,
        pipeline_send: Engine::DeepSpeed.default_pipeline_send(),
        cross_entropy: Some(Engine::DeepSpeed.default_cross_entropy()),
        // DeepSpeed's FusedAdam.
        optimizer_step: Some(OptimizerStep::Fused),
        // Sailor's fork of DeepSpeed's pipeline engine runs its
        // TrainSchedule with blocking `dist.send`/`recv`.
        stage_exchange: Some(StageExchange::Lockstep),
        // Its `reconstruct_tensor` rebuilds every received tensor through
        // an fp32 host buffer (deepspeed/utils.py).
        pipeline_receive: PipelineReceive::HostStaged,
        // Every rank ends `_exec_reduce_tied_grads` with `dist.barrier()`
        // before it reduces its gradients (deepspeed/pipe_engine.py).
        grad_reduce_barrier: true,
        ..Default::default()
    }
}

/// The number format the Sailor artifact's runs of `model` trained in, from
/// `llm_info.json`: its profiler recorded every layer's output and
/// parameters both as element counts (`act_output_floats`,
/// `params_floats`) and as bytes (`act_output_bytes`, `params_bytes`), so
/// their ratio is the element size of the tensors the runs send between
/// stages and reduce over replicas. 4 bytes is fp32 (Sailor's
/// Megatron-DeepSpeed runs pass neither `--fp16` nor `--bf16` and their
/// DeepSpeed config has no fp16 section), 2 bytes mixed 16-bit precision.
/// Set it as the profile's [`Profile::precision`]. `None` when no layer
/// records both counts.
pub fn training_precision(llm_info: &str, origin: &str, model: &str) -> Result<Option<Precision>> {
    let root: Value = AmpError::json(llm_info, origin)?;
    let root = as_object(&root, origin)?;
    let m = root.get(model).ok_or_else(|| {
        AmpError::invalid(
            origin,
            format!(
                "no model `{model}` (it has: {})",
                root.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        )
    })?;
    let at_m = format!("{origin}: {model}");
    let mut size: Option<f64> = None;
    for (tp, layers) in as_object(m, &at_m)? {
        let at_tp = format!("{at_m}.{tp}");
        for (l, v) in as_object(layers, &at_tp)? {
            let at = format!("{at_tp}.{l}");
            let o = as_object(v, &at)?;
            for (elems, bytes) in [
                ("act_output_floats", "act_output_bytes"),
                ("params_floats", "params_bytes"),
            ] {
                let (Some(e), Some(b)) = (o.get(elems), o.get(bytes)) else {
                    continue;
                };
                let (e, b) = (as_f64(e, &at)?, as_f64(b, &at)?);
                if e <= 0.0 {
                    continue;
                }
                let r = b / e;
                match size {
                    None => size = Some(r),
                    Some(s) if (s - r).abs() > 1e-6 * s => {
                        return Err(AmpError::invalid(
                            at,
                            format!("`{bytes}` / `{elems}` = {r}, but other entries give {s} bytes per element; one training run has one precision"),
                        ))
                    }
                    Some(_) => {}
                }
            }
        }
    }
    match size {
        Some(s) if (s - 4.0).abs() < 1e-6 => Ok(Some(Precision::Fp32)),
        Some(s) if (s - 2.0).abs() < 1e-6 => Ok(Some(Precision::Fp16)),
        Some(s) => Err(AmpError::invalid(
            at_m,
            format!("{s} bytes per element; expected 4 (fp32) or 2 (16-bit)"),
        )),
        None => Ok(None),
    }
}

/// The entry of `known` (model names of `training/*.json`, `llm_info.json`
/// or `profiles.json`) that a directory name such as `measured/<cluster>/
/// <model>` means: the exact name, else the one name equal to it ignoring
/// case and punctuation and a trailing size letter (`B`/`M` of
/// `GPT-Neo-2.7B`, `OPT-350m`: Sailor's files name the models `GPT-Neo-2.7`
/// and `OPT-350`). `None` when none or several match.
pub fn match_model_name<'a>(
    name: &str,
    known: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let norm = |s: &str| {
        let mut k: String = s
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .map(|c| c.to_ascii_lowercase())
            .collect();
        if k.len() > 1
            && (k.ends_with('b') || k.ends_with('m'))
            && k[..k.len() - 1].ends_with(|c: char| c.is_ascii_digit())
        {
            k.pop();
        }
        k
    };
    let known: Vec<&str> = known.into_iter().collect();
    if let Some(k) = known.iter().find(|k| **k == name) {
        return Some(k);
    }
    let want = norm(name);
    let hits: Vec<&str> = known.iter().copied().filter(|k| norm(k) == want).collect();
    if let [one] = hits.as_slice() {
        return Some(one);
    }
    // A name without the size (Sailor keeps GPT-Neo-2.7B's runs under
    // `GPT-NEO`): the one known name that is it plus a size.
    let sized: Vec<&str> = known
        .into_iter()
        .filter(|k| {
            let n = norm(k);
            !want.is_empty()
                && n.len() > want.len()
                && n.starts_with(&want)
                && n[want.len()..].chars().all(|c| c.is_ascii_digit())
        })
        .collect();
    match (hits.is_empty(), sized.as_slice()) {
        (true, [one]) => Some(one),
        _ => None,
    }
}

/// A `training/*.json` file: the model's shape and batch.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TrainingConfig {
    pub model: String,
    pub hidden_size: u64,
    pub sequence_length: u64,
    pub num_layers: u64,
    pub vocab_size: u64,
    #[serde(default)]
    pub heads: u64,
    #[serde(default)]
    pub global_batch_size: Option<usize>,
}

pub fn parse_training(text: &str, origin: &str) -> Result<TrainingConfig> {
    let t: TrainingConfig = AmpError::json(text, origin)?;
    if t.hidden_size == 0 || t.sequence_length == 0 || t.num_layers == 0 {
        return Err(AmpError::invalid(
            origin,
            "hidden_size, sequence_length and num_layers must be positive",
        ));
    }
    use amp_core::limits;
    // The model's sizes multiply (FLOPs, logits, activations): bounded
    // where they enter, so no product of them overflows.
    for (field, v, max) in [
        ("hidden_size", t.hidden_size, limits::MAX_HIDDEN),
        ("sequence_length", t.sequence_length, limits::MAX_SEQ),
        ("num_layers", t.num_layers, limits::MAX_LAYERS as u64 - 3),
        ("vocab_size", t.vocab_size, limits::MAX_VOCAB),
        ("heads", t.heads, limits::MAX_HEADS),
    ] {
        if v > max {
            return Err(AmpError::invalid(
                origin,
                format!("`{field}` {v} is above the limit of {max}"),
            ));
        }
    }
    Ok(t)
}

/// Builds a model from `llm_info.json` (per model and tensor-parallel
/// degree, per layer: `params_floats`, `act_output_floats`, `act_mem_floats`
/// and their byte counts) and the model's training file.
///
/// Sailor's layer list: layer 0 is the embedding, layers 1..=num_layers the
/// transformer blocks, the rest the final norm and/or vocabulary projection.
/// A trailing layer is taken as the vocabulary projection when its output
/// per sample is at least sequence x vocabulary (the logits), else as
/// `Other`. Sizes come from the tensor-parallel degree 1 entry (sizes of
/// the whole layer). Sailor counts the projection's weights apart from the
/// embedding's, so no tie is recorded.
///
/// Stored activations: `act_mem_bytes` are 16-bit training bytes; we store
/// `act_mem_bytes / 2` elements for the embedding and the trailing layers.
/// The transformer blocks of OPT and GPT-Neo keep what Sailor's code keeps
/// ([`sailor_block_keep`]); other models' blocks leave the field empty, so
/// that the memory model applies Korthikanti et al.'s
/// per-tensor-parallel-degree formula. Sailor's own block figures depend on
/// the degree as `12 + 160/t` bytes per token x hidden for OPT-350 (a tp-1
/// figure divided by t is 11 % off the measured peaks), and its sums run
/// 7 % under the measured per-sample slope of the GH200 runs, which both
/// counts match (they are equal at tp 4).
pub fn parse_model(llm_info: &str, llm_origin: &str, training: &TrainingConfig) -> Result<Model> {
    let root: Value = AmpError::json(llm_info, llm_origin)?;
    let root = as_object(&root, llm_origin)?;
    let name = &training.model;
    let m = root.get(name).ok_or_else(|| {
        AmpError::invalid(
            llm_origin,
            format!(
                "no model `{name}` (it has: {}); the training file's `model` must name an llm_info entry",
                root.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        )
    })?;
    let at_m = format!("{llm_origin}: {name}");
    let by_tp = as_object(m, &at_m)?;
    let tp1 = by_tp.get("1").ok_or_else(|| {
        AmpError::invalid(
            &at_m,
            "no tensor-parallel degree 1 entry; it gives the size of whole layers",
        )
    })?;
    let at1 = format!("{at_m}.1");
    let layers = numeric_entries(as_object(tp1, &at1)?, &at1)?;
    let s = training.sequence_length;
    let h = training.hidden_size;
    let v = training.vocab_size;
    let blocks = training.num_layers as usize;
    if layers.len() < blocks + 1 {
        return Err(AmpError::invalid(
            at1,
            format!("{} layers listed but the training file says {blocks} transformer blocks plus an embedding", layers.len()),
        ));
    }
    // Sailor's OPT and GPT-Neo blocks keep what its code keeps, with the
    // heads its profiler measured them with where `llm_info.json` says.
    let code = SailorBlockCode::of(name);
    let heads = code
        .and_then(|c| heads_in_block_memory(c, &first_block_mem_by_tp(by_tp), s, h))
        .unwrap_or(training.heads);
    let block_keep = code
        .filter(|_| heads > 0)
        .map(|c| sailor_block_keep(c, s, h, heads));
    let mut out = Vec::with_capacity(layers.len());
    for (i, (idx, l)) in layers.iter().enumerate() {
        let at = format!("{at1}.{idx}");
        if *idx != i {
            return Err(AmpError::invalid(
                at,
                format!("layer indices must run 0, 1, 2, ...; expected {i}"),
            ));
        }
        let obj = as_object(l, &at)?;
        let get = |k: &str| -> Result<u64> {
            let x = obj
                .get(k)
                .ok_or_else(|| AmpError::invalid(&at, format!("missing `{k}`")))?;
            let f = as_f64(x, &at)?;
            if f < 0.0 {
                return Err(AmpError::invalid(&at, format!("`{k}` is negative")));
            }
            Ok(f.round() as u64)
        };
        let params = get("params_floats")?;
        let output = get("act_output_floats")?;
        let mem_bytes = match obj.get("act_mem_bytes") {
            Some(_) => get("act_mem_bytes")?,
            None => get("act_mem_floats")? * 4,
        };
        let kind = if i == 0 {
            LayerKind::Embedding
        } else if i <= blocks {
            LayerKind::TransformerBlock
        } else if v > 0 && output >= s * v {
            LayerKind::VocabProjection
        } else {
            LayerKind::Other
        };
        let flops = match kind {
            LayerKind::TransformerBlock => Some((24 * h * h * s + 4 * s * s * h) as f64),
            LayerKind::VocabProjection => Some((2 * s * h * v) as f64),
            _ => None,
        };
        out.push(Layer {
            name: match kind {
                LayerKind::Embedding => "embedding".to_string(),
                LayerKind::TransformerBlock => format!("block{}", i - 1),
                LayerKind::VocabProjection => "vocab_projection".to_string(),
                _ => format!("layer{i}"),
            },
            kind,
            params,
            output_elems_per_sample: output,
            forward_flops_per_sample: flops,
            // Untied: Sailor's runtime builds its output layer apart from the
            // embedding (`OPTLMHeadPipe`, `LlamaLMHeadPipe` as plain
            // `LayerSpec`s in its Megatron-DeepSpeed, no `TiedLayerSpec`), so
            // no gradient is all-reduced between the first and last stage
            // and a one-stage plan holds both matrices.
            tied_to: None,
            stored_activation_elems_per_sample: match kind {
                LayerKind::TransformerBlock => block_keep.map(|k| k.stored_elems),
                _ => Some(mem_bytes / 2),
            },
            replicated_activation_elems_per_sample: block_keep
                .filter(|_| kind == LayerKind::TransformerBlock)
                .map(|k| k.replicated_elems),
            backward_transient_elems_per_sample: None,
            replicated_backward_transient_elems_per_sample: None,
            // Megatron-DeepSpeed precomputes the attention mask rather than
            // sending it between stages.
            forward_send_extra_bytes: 0,
        });
    }
    let model = Model {
        name: name.clone(),
        shape: Some(TransformerShape {
            hidden: h,
            num_blocks: training.num_layers,
            seq_len: s,
            vocab: v,
            heads,
            architecture: None,
        }),
        layers: out,
        resident_bytes_per_device: None,
    };
    model.validate()?;
    Ok(model)
}

/// The block code of Sailor's Megatron-DeepSpeed whose memory amp reads
/// ([`sailor_block_keep`]): `pretrain_gpt.py` builds the model its
/// `--model-name` names, and the runs' names start with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SailorBlockCode {
    /// megatron/model/opt_model.py (OPT-350, OPT-30).
    Opt,
    /// megatron/model/gpt_neo_model.py (GPT-Neo-2.7).
    GptNeo,
}

impl SailorBlockCode {
    /// The code Sailor runs `model` with, by its name; `None` for the
    /// others (LLAMA's blocks keep Korthikanti's formula).
    pub fn of(model: &str) -> Option<SailorBlockCode> {
        let m = model.to_ascii_lowercase();
        if m.starts_with("gpt-neo") {
            Some(SailorBlockCode::GptNeo)
        } else if m.starts_with("opt") {
            Some(SailorBlockCode::Opt)
        } else {
            None
        }
    }

    /// Bytes a token a block keeps on every rank of a tensor-parallel
    /// group, in units of the width `h`.
    fn whole_per_h(self) -> u64 {
        match self {
            SailorBlockCode::Opt => 16,
            SailorBlockCode::GptNeo => 18,
        }
    }

    /// Bytes a token a block keeps split by the degree, besides the
    /// attention probabilities, in units of the width `h`.
    fn split_per_h(self) -> u64 {
        match self {
            SailorBlockCode::Opt => 32,
            SailorBlockCode::GptNeo => 48,
        }
    }
}

/// What one transformer block of a Sailor model keeps for its backward,
/// per sample, in the 2-byte elements [`parse_model`]'s layers count
/// (bytes / 2; [`training_setup`] stores activations in 16 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SailorBlockKeep {
    /// Kept at tensor-parallel degree 1.
    pub stored_elems: u64,
    /// Of `stored_elems`, what every rank of a tensor-parallel group keeps
    /// whole; the rest is split by the degree.
    pub replicated_elems: u64,
}

/// The block count read off Sailor's Megatron-DeepSpeed
/// (third_party/Megatron-DeepSpeed/megatron/model/opt_model.py and
/// gpt_neo_model.py at eth-easl/sailor `cf2c8e3`) for `s` tokens, width
/// `h` and `a` heads.
///
/// Sailor's runs train in fp32: its launch script
/// (ae_scripts/clariden_scripts/run_opt.slurm) passes neither `--fp16` nor
/// `--bf16`, its DeepSpeed config has no fp16 section and nothing in the
/// training path enters autocast, so every kept tensor is 4 bytes a value
/// (a dropout mask 1). Per token, on one rank of a tensor-parallel group of
/// degree `t`, with the MLP 4h wide (`--ffn-hidden-size` unset; GPT-Neo's
/// hard-coded):
///
/// - every rank whole: the two norms' inputs and the two first
///   projections' inputs (the norms' outputs), `16 h`; GPT-Neo also keeps
///   its two residual dropouts' masks (`--residual-dropout`, 0.1 unless
///   set, which the script does not), `2 h`;
/// - split by `t`: the fused QKV output, whose views the score and value
///   products keep (`12 h`), the output projection's input (`4 h`), the
///   softmax output, which the value product keeps too (`4 a s`: the
///   softmax runs in PyTorch in fp32, and neither model drops out
///   attention probabilities: OPT's dropouts are commented out, GPT-Neo's
///   `attn_dropout` is never called), and the MLP: OPT's ReLU output, which
///   the second projection keeps as its input (`16 h`); GPT-Neo's GeLU
///   input and output (`32 h`).
///
/// OPT: `16 h + (32 h + 4 a s) / t` bytes a token; at tp 4, the degree of
/// every measured run, the same as Korthikanti's 16-bit
/// `10 h + (24 h + 5 a s) / t` for OPT-350 (56 s h both). GPT-Neo-2.7 with
/// its 20 heads: `18 h + (48 h + 4 a s) / t`, what Sailor's profiler
/// measured for it in `llm_info.json` at tp 1 and 2 to the byte. The
/// backward's transient (the gradients of the scores) keeps amp's
/// estimate; see README, "Sailor's blocks keep what Sailor's code keeps".
pub fn sailor_block_keep(code: SailorBlockCode, s: u64, h: u64, a: u64) -> SailorBlockKeep {
    let whole = code.whole_per_h() * h;
    let split = code.split_per_h() * h + 4 * a * s;
    SailorBlockKeep {
        stored_elems: s * (whole + split) / 2,
        replicated_elems: s * whole / 2,
    }
}

/// The first block's `act_mem_bytes` (else 4 x `act_mem_floats`) at each
/// tensor-parallel degree an `llm_info.json` model entry gives; entries
/// that do not read are left out (the layer loop of [`parse_model`]
/// reports them).
fn first_block_mem_by_tp(by_tp: &serde_json::Map<String, Value>) -> Vec<(u64, f64)> {
    let bytes = |block: &Value| {
        let field = |k: &str| block.get(k).and_then(Value::as_f64);
        field("act_mem_bytes").or_else(|| field("act_mem_floats").map(|f| 4.0 * f))
    };
    by_tp
        .iter()
        .filter_map(|(tp, layers)| Some((tp.trim().parse().ok()?, bytes(layers.get("1")?)?)))
        .collect()
}

/// The heads `llm_info.json`'s block activations were measured with, read
/// through Sailor's block code: its profiler recorded a block's
/// `act_mem_bytes` at several tensor-parallel degrees, whose split part
/// (the slope over `1 / t`, least squares) is `split_per_h h + 4 a s`
/// bytes a token. `None` with fewer than two degrees, or unless the slope
/// gives a whole number of heads that divides `h` to within a quarter of a
/// head (Sailor's figures give GPT-Neo-2.7 19.93, OPT-350 15.98, OPT-30
/// 56.04): a figure that is not unambiguous is not used.
pub fn heads_in_block_memory(
    code: SailorBlockCode,
    mem_bytes_by_tp: &[(u64, f64)],
    s: u64,
    h: u64,
) -> Option<u64> {
    let pts: Vec<(f64, f64)> = mem_bytes_by_tp
        .iter()
        .filter(|(t, b)| *t > 0 && b.is_finite())
        .map(|&(t, b)| (1.0 / t as f64, b / s as f64))
        .collect();
    if pts.len() < 2 || s == 0 {
        return None;
    }
    let n = pts.len() as f64;
    let mx = pts.iter().map(|p| p.0).sum::<f64>() / n;
    let my = pts.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
    if sxx.is_nan() || sxx <= 0.0 {
        return None;
    }
    let slope = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum::<f64>() / sxx;
    let a = (slope - (code.split_per_h() * h) as f64) / (4 * s) as f64;
    let whole = a.round();
    (whole >= 1.0
        && whole <= amp_core::limits::MAX_HEADS as f64
        && (a - whole).abs() <= 0.25
        && h.is_multiple_of(whole as u64))
    .then_some(whole as u64)
}

/// What a model read by [`parse_model`] gets wrong or leaves out, as notes
/// naming the files (notes, not repairs: which number the runs used is not
/// in the data; but for the heads, which the data's own measurements give):
///
/// - a training file's `heads` that disagrees with the heads
///   `llm_info.json`'s block figures were measured with
///   ([`heads_in_block_memory`], which [`parse_model`] uses): Sailor's
///   GPT-Neo-2.7 file says 32, its figures (and Sailor's profiler, and the
///   published model) 20;
/// - a training file's `vocab_size` that disagrees with the rows of
///   `llm_info.json`'s embedding (its parameters over the hidden size, less
///   one learned position per token of the sequence) by more than
///   Megatron-LM's padding (OPT-350's 50,272 are 50,304 rows: not noted):
///   Sailor's GPT-Neo-2.7
///   file says 128,256 (Llama 3's vocabulary), its embedding holds 50,304
///   rows (GPT-2's 50,257 padded to a multiple of 128);
/// - a causal language model whose layers hold no vocabulary projection
///   (Sailor's GPT-Neo-2.7 entries end with a layer of 5,120 parameters that
///   outputs `s x h` elements; its OPT-350 entries carry the projection).
///   Sailor's runs of GPT-Neo-2.7 had none either: its pipeline model
///   (`GPTNeoModelPipe` in Sailor's Megatron-DeepSpeed,
///   megatron/model/gpt_neo_model.py) ends with the final norm and a cast
///   to fp32 and takes the cross entropy of the norm's output, so the files
///   describe what ran. The note says so, and what a model that computes
///   logits would add (its share of the forward FLOPs, the projection's
///   weights and the logits, all on the last stage).
pub fn model_notes(
    model: &Model,
    training: &TrainingConfig,
    llm_origin: &str,
    training_origin: &str,
) -> Vec<String> {
    let mut notes = Vec::new();
    let (s, h) = (training.sequence_length, training.hidden_size);
    let mut vocab = training.vocab_size;
    if let Some(e) = model
        .layers
        .first()
        .filter(|l| l.kind == LayerKind::Embedding)
    {
        let rows = (e.params % h == 0).then(|| (e.params / h).saturating_sub(s));
        // Megatron-LM pads the vocabulary to a multiple of 128 x tp: under
        // 1,024 rows more at tp <= 8 is padding, not a disagreement.
        let padded = |r: u64| r >= vocab && r - vocab < 1024;
        if let Some(rows) = rows.filter(|&r| r > 0 && !padded(r)) {
            notes.push(format!(
                "{training_origin}: vocab_size {vocab} disagrees with {llm_origin}'s embedding of `{}` ({} parameters: {rows} rows of {h} beside {s} positions); amp keeps the file's figure where it uses one, and the embedding's parameters as given",
                training.model, e.params
            ));
            vocab = rows;
        }
    }
    let heads = model.shape.as_ref().map_or(0, |sh| sh.heads);
    if heads != training.heads {
        notes.push(format!(
            "{training_origin}: heads {} disagrees with {llm_origin}'s blocks of `{}`, whose activations were measured with {heads} heads (how they shrink with the tensor-parallel degree is what Sailor's block code keeps with {heads}); amp sizes the attention probabilities the blocks keep with {heads} heads; if the runs had {}, the activations in {llm_origin} are not theirs",
            training.heads, training.model, training.heads
        ));
    }
    if vocab > 0
        && !model
            .layers
            .iter()
            .any(|l| l.kind == LayerKind::VocabProjection)
    {
        let head = 2.0 * (s * h * vocab) as f64;
        let rest: f64 = model
            .layers
            .iter()
            .filter_map(|l| l.forward_flops_per_sample)
            .sum();
        let last = model.layers.last();
        notes.push(format!(
            "{llm_origin}: model `{}` has no vocabulary projection (its last layer holds {} parameters and outputs {} elements per sample, not {} logits); amp prices the model as the files give it, which is what Sailor's runs of GPT-Neo-2.7 computed (its pipeline model, GPTNeoModelPipe, takes the loss on the final norm's output without a projection); runs of a model that computes logits spend about {:.1}% more of the forward FLOPs, all on the last pipeline stage, and hold the projection's weights and the logits there, which these files leave out",
            training.model,
            last.map_or(0, |l| l.params),
            last.map_or(0, |l| l.output_elems_per_sample),
            s * vocab,
            100.0 * head / (head + rest)
        ));
    }
    notes
}

#[cfg(test)]
mod tests;

//! Loaders of the Sailor artifact's files (SOSP 2025, MIT licence): per-layer
//! profiles, model descriptions, GPU catalog, network curves and measured
//! plans. Pure functions over strings; the CLI reads the files.
//!
//! File layout (see the data README): `profiles.json`, `llm_info.json`,
//! `training/*.json`, `cluster_config.json`, `network/intra_node_bandwidths.json`,
//! `network/inter_node_bandwidths.json` and measured runs
//! `measured/<cluster>/<model>/**/plan_config_*.json`.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use crate::cluster::{Cluster, Device, Node, NodeLink};
use crate::error::{AmpError, Result};
use crate::model::{Layer, LayerKind, Model, TransformerShape};
use crate::plan::{Plan, Stage};
use crate::profile::{Profile, ProfileEntry};
use crate::setup::{NumberFormats, Precision};

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
        AmpError::MissingProfile(format!(
            "{origin} has no model `{model}` (it has: {})",
            root.keys().cloned().collect::<Vec<_>>().join(", ")
        ))
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
/// The training setup of Sailor's runs: 1F1B, no recomputation or
/// sharding, and the number formats `precision` (from
/// [`training_precision`]) implies. `llm_info.json`'s 4 bytes per output and
/// parameter element describe fp32 weights and an fp32 residual stream,
/// which with 16-bit activations is PyTorch autocast
/// ([`NumberFormats::autocast`]); 2 bytes is mixed precision.
pub fn training_setup(precision: Option<Precision>) -> crate::setup::TrainingSetup {
    let formats = match precision {
        Some(Precision::Fp32) => NumberFormats::autocast(Precision::Fp16),
        Some(p) => p.formats(),
        None => Precision::Fp16.formats(),
    };
    crate::setup::TrainingSetup {
        formats,
        ..Default::default()
    }
}

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
/// For the transformer blocks the field stays empty so that the memory
/// model applies Korthikanti et al.'s per-tensor-parallel-degree formula:
/// Sailor's block figures depend on the degree as `12 + 160/t` bytes per
/// token x hidden for OPT-350 (a tp-1 figure divided by t is 11 % off the
/// measured peaks), and its sums run 7 % under the measured per-sample
/// slope of the GH200 runs, which the formula matches.
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
            tied_to: None,
            stored_activation_elems_per_sample: (kind != LayerKind::TransformerBlock)
                .then_some(mem_bytes / 2),
        });
    }
    let model = Model {
        name: name.clone(),
        shape: Some(TransformerShape {
            hidden: h,
            num_blocks: training.num_layers,
            seq_len: s,
            vocab: v,
            heads: training.heads,
        }),
        layers: out,
    };
    model.validate()?;
    Ok(model)
}

/// One GPU type of `cluster_config.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuSpec {
    pub gpus_per_node: usize,
    pub memory_bytes: u64,
}

/// `cluster_config.json`: GPU type -> GPUs per node and memory per GPU.
/// Entries that are not objects (the `zone` string) are skipped.
pub fn parse_cluster_config(text: &str, origin: &str) -> Result<BTreeMap<String, GpuSpec>> {
    let root: Value = AmpError::json(text, origin)?;
    let mut out = BTreeMap::new();
    for (gpu, v) in as_object(&root, origin)? {
        let Some(o) = v.as_object() else { continue };
        let at = format!("{origin}: {gpu}");
        let g = o
            .get("gpus_per_node")
            .ok_or_else(|| AmpError::invalid(&at, "missing gpus_per_node"))?;
        let m = o
            .get("mem_per_gpu")
            .ok_or_else(|| AmpError::invalid(&at, "missing mem_per_gpu"))?;
        let g = as_f64(g, &at)?;
        let m = as_f64(m, &at)?;
        if g < 1.0 || m <= 0.0 {
            return Err(AmpError::invalid(
                at,
                "gpus_per_node and mem_per_gpu must be positive",
            ));
        }
        out.insert(
            gpu.clone(),
            GpuSpec {
                gpus_per_node: g as usize,
                memory_bytes: m as u64,
            },
        );
    }
    Ok(out)
}

/// One fitted curve: bandwidth in GB/s = a x^2 + b x + c with x =
/// log2(message bytes / 1e6), capped at `max_bytes_per_s`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BandwidthCurve {
    pub coeffs: [f64; 3],
    pub max_bytes_per_s: f64,
}

/// Message size at which [`Network`] turns a curve into one bandwidth for
/// a [`Cluster`] link: 64 MB, the order of the data-parallel gradient
/// buckets and large pipeline/tensor-parallel messages that dominate
/// communication time in training (small messages are latency-bound and
/// rare). A documented choice, not a fit.
pub const REFERENCE_MESSAGE_BYTES: f64 = 64e6;

impl BandwidthCurve {
    fn parse(v: &Value, at: &str) -> Result<BandwidthCurve> {
        let bad = || AmpError::invalid(at, "expected [[a, b, c], max_bytes_per_s]");
        let arr = v.as_array().filter(|a| a.len() == 2).ok_or_else(bad)?;
        let c = arr[0].as_array().filter(|a| a.len() == 3).ok_or_else(bad)?;
        let coeffs = [as_f64(&c[0], at)?, as_f64(&c[1], at)?, as_f64(&c[2], at)?];
        let max_bytes_per_s = as_f64(&arr[1], at)?;
        if max_bytes_per_s <= 0.0 {
            return Err(AmpError::invalid(at, "the bandwidth cap must be positive"));
        }
        Ok(BandwidthCurve {
            coeffs,
            max_bytes_per_s,
        })
    }

    /// Bandwidth for a message of `bytes`, bytes/s: the curve, capped, and
    /// never below 1 % of the cap (the quadratic can turn down outside the
    /// fitted range).
    pub fn bytes_per_s(&self, bytes: f64) -> f64 {
        let x = (bytes.max(1.0) / 1e6).log2();
        let [a, b, c] = self.coeffs;
        let gbs = a * x * x + b * x + c;
        (gbs * 1e9).clamp(0.01 * self.max_bytes_per_s, self.max_bytes_per_s)
    }
}

/// The network curves: intra-node per GPU type and group size, inter-node
/// per (zone, GPU type, GPUs per node) pair.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Network {
    pub intra: BTreeMap<String, BTreeMap<usize, BandwidthCurve>>,
    pub inter: BTreeMap<(String, String, usize, String, String, usize), BandwidthCurve>,
}

impl Network {
    pub fn parse(
        intra: &str,
        intra_origin: &str,
        inter: &str,
        inter_origin: &str,
    ) -> Result<Network> {
        let mut net = Network::default();
        let root: Value = AmpError::json(intra, intra_origin)?;
        for (gpu, by_n) in as_object(&root, intra_origin)? {
            let at = format!("{intra_origin}: {gpu}");
            let mut m = BTreeMap::new();
            for (n, c) in numeric_entries(as_object(by_n, &at)?, &at)? {
                m.insert(n, BandwidthCurve::parse(c, &format!("{at}.{n}"))?);
            }
            net.intra.insert(gpu.clone(), m);
        }
        let root: Value = AmpError::json(inter, inter_origin)?;
        for (z1, a) in as_object(&root, inter_origin)? {
            let at1 = format!("{inter_origin}: {z1}");
            for (g1, b) in as_object(a, &at1)? {
                let at2 = format!("{at1}.{g1}");
                for (n1, c) in numeric_entries(as_object(b, &at2)?, &at2)? {
                    let at3 = format!("{at2}.{n1}");
                    for (z2, d) in as_object(c, &at3)? {
                        let at4 = format!("{at3}.{z2}");
                        for (g2, e) in as_object(d, &at4)? {
                            let at5 = format!("{at4}.{g2}");
                            for (n2, curve) in numeric_entries(as_object(e, &at5)?, &at5)? {
                                let key = (z1.clone(), g1.clone(), n1, z2.clone(), g2.clone(), n2);
                                net.inter.insert(
                                    key,
                                    BandwidthCurve::parse(curve, &format!("{at5}.{n2}"))?,
                                );
                            }
                        }
                    }
                }
            }
        }
        Ok(net)
    }

    /// Intra-node curve of `gpus` GPUs of `gpu`: the exact group size, else
    /// the largest measured group not above it, else the smallest.
    pub fn intra_curve(&self, gpu: &str, gpus: usize) -> Option<&BandwidthCurve> {
        let m = self.intra.get(gpu)?;
        m.range(..=gpus)
            .next_back()
            .or_else(|| m.iter().next())
            .map(|(_, c)| c)
    }

    /// Inter-node curve between two nodes of the same zone, type and size:
    /// the exact entry, else the largest measured node size not above
    /// `gpus`; when the zone has none, the same from the first zone (in
    /// name order) that has this GPU type (a machine's own network does not
    /// depend on where it stands).
    pub fn inter_curve(&self, zone: &str, gpu: &str, gpus: usize) -> Option<&BandwidthCurve> {
        let in_zone = |zone: &str| {
            self.inter
                .iter()
                .filter(|((z1, g1, n1, z2, g2, n2), _)| {
                    z1 == zone && g1 == gpu && z2 == zone && g2 == gpu && n1 == n2
                })
                .filter(|((_, _, n, _, _, _), _)| *n <= gpus)
                .max_by_key(|((_, _, n, _, _, _), _)| *n)
                .map(|(_, c)| c)
        };
        in_zone(zone).or_else(|| {
            let zones: std::collections::BTreeSet<&String> = self
                .inter
                .keys()
                .filter(|(z1, g1, _, z2, g2, _)| z1 == z2 && g1 == gpu && g2 == gpu)
                .map(|(z, ..)| z)
                .collect();
            zones.into_iter().find_map(|z| in_zone(z))
        })
    }

    /// Number of NICs of a node of `gpus` GPUs of type `gpu` in `zone`, from
    /// how the inter-node curves grow with the GPUs per node: the curves for
    /// k GPUs per node give what k GPUs of each node reach together, so
    /// their ratio to the 1-GPU curve at [`REFERENCE_MESSAGE_BYTES`] counts
    /// the independent interfaces. Rule: the divisor of `gpus` nearest that
    /// ratio on a log scale (the smaller on a tie), 1 when either curve is
    /// missing. Sailor's data: GH-96 (CSCS Clariden, 4 Slingshot NICs per
    /// node) 4.00 -> 4; A100-40 and V100-16 VMs of 4 GPUs 3.1-4.2 -> 4 and of
    /// 2 GPUs 1.5-1.9 -> 2 (the cloud scales a VM's network with its size);
    /// Titan-RTX, RTX-2080 and RTX-3090 servers 1.0 -> 1 (one NIC for 8 GPUs).
    pub fn nics(&self, zone: &str, gpu: &str, gpus: usize) -> usize {
        let (Some(k), Some(one)) = (
            self.inter_curve(zone, gpu, gpus),
            self.inter_curve(zone, gpu, 1),
        ) else {
            return 1;
        };
        let r = k.bytes_per_s(REFERENCE_MESSAGE_BYTES) / one.bytes_per_s(REFERENCE_MESSAGE_BYTES);
        if !(r.is_finite() && r > 0.0) {
            return 1;
        }
        (1..=gpus.max(1))
            .filter(|d| gpus.max(1).is_multiple_of(*d))
            .min_by(|a, b| {
                let da = ((*a as f64).ln() - r.ln()).abs();
                let db = ((*b as f64).ln() - r.ln()).abs();
                da.total_cmp(&db).then(a.cmp(b))
            })
            .unwrap_or(1)
    }

    /// Curve between a node of (`z1`, `g1`, `n1`) and one of (`z2`, `g2`,
    /// `n2`): the entry listed either way (the smaller at
    /// [`REFERENCE_MESSAGE_BYTES`] when both are: traffic flows both
    /// ways), else the entry of the same zones and types with the largest
    /// node sizes not above `n1` and `n2`.
    pub fn pair_curve(
        &self,
        (z1, g1, n1): (&str, &str, usize),
        (z2, g2, n2): (&str, &str, usize),
    ) -> Option<&BandwidthCurve> {
        let find = |za: &str, ga: &str, na: usize, zb: &str, gb: &str, nb: usize| {
            self.inter
                .iter()
                .filter(|((x1, h1, m1, x2, h2, m2), _)| {
                    x1 == za && h1 == ga && x2 == zb && h2 == gb && *m1 <= na && *m2 <= nb
                })
                .max_by_key(|((_, _, m1, _, _, m2), _)| (*m1, *m2))
                .map(|(_, c)| c)
        };
        let ab = find(z1, g1, n1, z2, g2, n2);
        let ba = find(z2, g2, n2, z1, g1, n1);
        match (ab, ba) {
            (Some(x), Some(y)) => Some(
                if y.bytes_per_s(REFERENCE_MESSAGE_BYTES) < x.bytes_per_s(REFERENCE_MESSAGE_BYTES) {
                    y
                } else {
                    x
                },
            ),
            (x, y) => x.or(y),
        }
    }
}

/// A node of a Sailor plan.
#[derive(Debug, Clone, PartialEq)]
struct NodeSlot {
    gpu: String,
    gpus: usize,
    zone: String,
    used: usize,
}

/// One measured run of `plan_config_*.json`, mapped onto our types.
#[derive(Debug, Clone, PartialEq)]
pub struct SailorRun {
    pub plan: Plan,
    /// The nodes the plan uses, in the order it fills them.
    pub cluster: Cluster,
    pub global_batch: usize,
    /// Measured iteration time (`real`), seconds.
    pub measured_s: Option<f64>,
    /// Measured peak memory per GPU (`max_mem`), bytes.
    pub max_mem_bytes: Option<f64>,
    /// Measured gradient-reduction time (`red_grads`), seconds.
    pub grad_reduce_s: Option<f64>,
    /// Repairs made while reading (file, place, what was read, what it
    /// became), for the caller to show.
    pub warnings: Vec<String>,
}

/// A stage's layer list with one entry off a contiguous range whose size and
/// endpoints it matches (Sailor's `[16, 17, 18, 29, 20, ...]`), repaired to
/// that range; `None` when the list is contiguous or not so repairable
/// (several entries off, or endpoints that disagree with its size).
fn repair_layer_list(layers: &[usize]) -> Option<Vec<usize>> {
    let (&lo, &hi) = (layers.first()?, layers.last()?);
    if hi < lo || hi - lo + 1 != layers.len() {
        return None;
    }
    let off = layers
        .iter()
        .enumerate()
        .filter(|&(k, &l)| l != lo + k)
        .count();
    (off == 1).then(|| (lo..=hi).collect())
}

#[derive(Debug, Deserialize)]
struct PlanFile {
    pipeline_list: Vec<PipelineFile>,
    mbs: usize,
    gbs: usize,
    #[serde(default)]
    real: Option<Value>,
    #[serde(default)]
    max_mem: Option<Value>,
    #[serde(default)]
    red_grads: Option<Value>,
}

/// A tensor-parallel group: the nodes it spans as (GPU type, GPUs per
/// node, zone), and its degree.
type TpGroup = (Vec<(String, usize, String)>, usize);

#[derive(Debug, Deserialize)]
struct PipelineFile {
    num_stages: usize,
    layers_per_stage: Vec<Vec<usize>>,
    /// Per stage, per replica: ([[gpu type, gpus per node, zone], ...], tp).
    tmp_per_stage: Vec<Vec<TpGroup>>,
    dp: Vec<usize>,
}

/// Parses a `plan_config_*.json` for `model` into a plan over the nodes it
/// names.
///
/// Device mapping (deterministic): stages in order, replicas in order; a
/// replica's tensor-parallel group lists the nodes it spans as [gpu type,
/// GPUs per node, zone] and takes `tp / (entries)` GPUs on each, filling
/// the first node of that (type, size, zone) with enough free GPUs, else a
/// new node; GPUs inside a node are taken in index order. Several
/// pipelines with the same stage split add replicas; different splits are
/// rejected (our plans share one split).
///
/// Node bandwidths come from `network` at [`REFERENCE_MESSAGE_BYTES`]: the
/// intra-node curve of the node's GPU count and the inter-node curve
/// between two such nodes of the same zone ([`Network::inter_curve`]), with
/// [`Network::nics`] interfaces. Nodes of different GPU types, sizes or
/// zones get a [`NodeLink`] from their pair's curve
/// ([`Network::pair_curve`]); without one, nodes of one zone use the slower
/// node's own figure and nodes of different zones are an error. Memory from
/// `gpus` (the cluster config); the node's GPU count is the plan's.
pub fn parse_plan_config(
    text: &str,
    origin: &str,
    model: &Model,
    gpus: &BTreeMap<String, GpuSpec>,
    network: &Network,
) -> Result<SailorRun> {
    let mut f: PlanFile = AmpError::json(text, origin)?;
    let mut warnings = Vec::new();
    for (pi, p) in f.pipeline_list.iter_mut().enumerate() {
        for (j, layers) in p.layers_per_stage.iter_mut().enumerate() {
            if let Some(fixed) = repair_layer_list(layers) {
                warnings.push(format!(
                    "{origin}: pipeline_list[{pi}], stage {j}: layers {layers:?} read as {}..={} (one entry off the contiguous range its size and endpoints give)",
                    fixed[0],
                    fixed[fixed.len() - 1]
                ));
                *layers = fixed;
            }
        }
    }
    let first = f
        .pipeline_list
        .first()
        .ok_or_else(|| AmpError::invalid(origin, "pipeline_list is empty"))?;
    let mut nodes: Vec<NodeSlot> = Vec::new();
    let mut stages: Vec<Stage> = Vec::new();
    for (pi, p) in f.pipeline_list.iter().enumerate() {
        let at_p = format!("{origin}: pipeline_list[{pi}]");
        if p.layers_per_stage != first.layers_per_stage {
            return Err(AmpError::invalid(
                at_p,
                "has a different stage split than pipeline 0; plans with one split per pipeline are not supported",
            ));
        }
        if p.num_stages != p.layers_per_stage.len()
            || p.tmp_per_stage.len() != p.num_stages
            || p.dp.len() != p.num_stages
        {
            return Err(AmpError::invalid(
                at_p,
                format!(
                    "num_stages = {} but layers_per_stage, tmp_per_stage and dp have {}, {} and {} entries",
                    p.num_stages,
                    p.layers_per_stage.len(),
                    p.tmp_per_stage.len(),
                    p.dp.len()
                ),
            ));
        }
        for (j, layers) in p.layers_per_stage.iter().enumerate() {
            let at_s = format!("{at_p}, stage {j}");
            let (Some(&lo), Some(&hi)) = (layers.first(), layers.last()) else {
                return Err(AmpError::invalid(at_s, "holds no layer"));
            };
            if layers.iter().enumerate().any(|(k, &l)| l != lo + k) {
                return Err(AmpError::invalid(
                    at_s,
                    "layers must be consecutive indices",
                ));
            }
            if p.tmp_per_stage[j].len() != p.dp[j] {
                return Err(AmpError::invalid(
                    &at_s,
                    format!(
                        "dp = {} but tmp_per_stage lists {} replicas",
                        p.dp[j],
                        p.tmp_per_stage[j].len()
                    ),
                ));
            }
            if pi == 0 {
                stages.push(Stage {
                    first_layer: lo,
                    end_layer: hi + 1,
                    replicas: Vec::new(),
                });
            }
            for (r, (spans, tp)) in p.tmp_per_stage[j].iter().enumerate() {
                let at_r = format!("{at_s}, replica {r}");
                if *tp == 0 || spans.is_empty() || !tp.is_multiple_of(spans.len()) {
                    return Err(AmpError::invalid(
                        at_r,
                        format!(
                            "tp = {tp} must be a positive multiple of the {} node entries",
                            spans.len()
                        ),
                    ));
                }
                let per = tp / spans.len();
                let mut group = Vec::with_capacity(*tp);
                for (gpu, gpn, zone) in spans {
                    if per > *gpn {
                        return Err(AmpError::invalid(
                            &at_r,
                            format!("needs {per} GPUs on a node of {gpn} `{gpu}`"),
                        ));
                    }
                    let slot = match nodes.iter().position(|n| {
                        &n.gpu == gpu && n.gpus == *gpn && &n.zone == zone && n.gpus - n.used >= per
                    }) {
                        Some(i) => i,
                        None => {
                            nodes.push(NodeSlot {
                                gpu: gpu.clone(),
                                gpus: *gpn,
                                zone: zone.clone(),
                                used: 0,
                            });
                            nodes.len() - 1
                        }
                    };
                    for _ in 0..per {
                        group.push(Device {
                            node: slot,
                            gpu: nodes[slot].used,
                        });
                        nodes[slot].used += 1;
                    }
                }
                stages[j].replicas.push(group);
            }
        }
    }
    let mut cluster_nodes = Vec::with_capacity(nodes.len());
    for n in &nodes {
        let spec = gpus.get(&n.gpu);
        let inter = network
            .inter_curve(&n.zone, &n.gpu, n.gpus)
            .map(|c| c.bytes_per_s(REFERENCE_MESSAGE_BYTES));
        let intra = network
            .intra_curve(&n.gpu, n.gpus)
            .map(|c| c.bytes_per_s(REFERENCE_MESSAGE_BYTES));
        let inter = match (inter, nodes.len()) {
            (Some(b), _) => b,
            // A single node never uses its network.
            (None, 1) => intra.unwrap_or(1e9),
            (None, _) => {
                return Err(AmpError::invalid(
                    origin,
                    format!(
                        "no inter-node bandwidth curve for `{}` nodes of {} GPUs in zone `{}` (nor in another zone) in the network files",
                        n.gpu, n.gpus, n.zone
                    ),
                ))
            }
        };
        cluster_nodes.push(Node {
            gpu_type: n.gpu.clone(),
            gpus: n.gpus,
            intra_bytes_per_s: intra.unwrap_or(inter),
            inter_bytes_per_s: inter,
            nics: network.nics(&n.zone, &n.gpu, n.gpus),
            gpu_memory_bytes: spec.map(|s| s.memory_bytes),
            price_per_hour: None,
        });
    }
    let mut links = Vec::new();
    for (i, a) in nodes.iter().enumerate() {
        for (j, b) in nodes.iter().enumerate().skip(i + 1) {
            if (&a.gpu, a.gpus, &a.zone) == (&b.gpu, b.gpus, &b.zone) {
                continue;
            }
            match network.pair_curve((&a.zone, &a.gpu, a.gpus), (&b.zone, &b.gpu, b.gpus)) {
                Some(c) => links.push(NodeLink {
                    nodes: [i, j],
                    bytes_per_s: c.bytes_per_s(REFERENCE_MESSAGE_BYTES),
                }),
                None if a.zone == b.zone => {}
                None => {
                    return Err(AmpError::invalid(
                        origin,
                        format!(
                            "no inter-node bandwidth curve between `{}` nodes of {} GPUs in zone `{}` and `{}` nodes of {} GPUs in zone `{}` in the network files",
                            a.gpu, a.gpus, a.zone, b.gpu, b.gpus, b.zone
                        ),
                    ))
                }
            }
        }
    }
    let cluster = Cluster {
        name: format!("{} node(s) of {}", nodes.len(), origin),
        nodes: cluster_nodes,
        links,
    };
    let dp: usize = stages.first().map_or(0, |s| s.replicas.len());
    if f.mbs == 0 || dp == 0 || !f.gbs.is_multiple_of(f.mbs * dp) {
        return Err(AmpError::invalid(
            origin,
            format!(
                "gbs = {} is not a multiple of mbs x dp = {} x {dp}",
                f.gbs, f.mbs
            ),
        ));
    }
    let plan = Plan {
        micro_batch: f.mbs,
        num_micro_batches: f.gbs / (f.mbs * dp),
        stages,
        // Sailor's runs: 1F1B, no recomputation or sharding; the caller sets
        // the number formats from `llm_info.json` (training_precision).
        setup: crate::setup::TrainingSetup::default(),
    };
    plan.validate(model, &cluster)
        .map_err(|e| AmpError::invalid(origin, e.to_string()))?;
    let num = |v: &Option<Value>| {
        v.as_ref()
            .and_then(|x| x.as_f64())
            .filter(|x| x.is_finite() && *x > 0.0)
    };
    Ok(SailorRun {
        plan,
        cluster,
        global_batch: f.gbs,
        measured_s: num(&f.real),
        max_mem_bytes: num(&f.max_mem),
        grad_reduce_s: num(&f.red_grads),
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LLM: &str = r#"{"M": {"1": {
        "0": {"params_floats": 100, "act_output_floats": 8, "act_mem_floats": 8, "act_mem_bytes": 32},
        "1": {"params_floats": 50, "act_output_floats": 8, "act_mem_floats": 40, "act_mem_bytes": 160},
        "2": {"params_floats": 50, "act_output_floats": 8, "act_mem_floats": 40, "act_mem_bytes": 160},
        "3": {"params_floats": 90, "act_output_floats": 41, "act_mem_floats": 90, "act_mem_bytes": 360}}}}"#;
    const TRAIN: &str = r#"{"model": "M", "hidden_size": 4, "sequence_length": 2, "num_layers": 2, "vocab_size": 20, "heads": 2, "global_batch_size": 8}"#;
    const INTRA: &str = r#"{"G": {"2": [[0.0, 0.0, 100.0], 5e10], "4": [[0.0, 1.0, 10.0], 1e12]}}"#;
    const INTER: &str = r#"{"z": {"G": {"4": {"z": {"G": {"4": [[0.0, 0.0, 2.0], 1e10]}}}}}}"#;
    const CFG: &str = r#"{"G": {"gpus_per_node": 4, "mem_per_gpu": 1000}, "zone": "z"}"#;

    fn model() -> Model {
        parse_model(LLM, "llm.json", &parse_training(TRAIN, "t.json").unwrap()).unwrap()
    }

    #[test]
    fn model_names_match_loosely_but_uniquely() {
        let known = ["OPT-350", "GPT-Neo-2.7", "LLAMA-3-8", "OPT-30"];
        let m = |n: &str| match_model_name(n, known);
        assert_eq!(m("OPT-350"), Some("OPT-350"));
        assert_eq!(m("GPT-Neo-2.7B"), Some("GPT-Neo-2.7"));
        assert_eq!(m("gpt-neo-2.7b"), Some("GPT-Neo-2.7"));
        assert_eq!(m("opt-350m"), Some("OPT-350"));
        assert_eq!(m("Llama-3-8B"), Some("LLAMA-3-8"));
        // Without the size: the one name with a size, never a guess.
        assert_eq!(m("GPT-NEO"), Some("GPT-Neo-2.7"));
        assert_eq!(m("OPT-3"), None);
        assert_eq!(m("OPT"), None);
        assert_eq!(match_model_name("x1b", ["X1", "x-1"]), None);
    }

    #[test]
    fn one_entry_off_a_contiguous_range_is_repaired_and_nothing_else() {
        let typo = [16, 17, 18, 29, 20, 21, 22, 23, 24];
        assert_eq!(repair_layer_list(&typo), Some((16..=24).collect()));
        assert_eq!(repair_layer_list(&[3, 4, 5]), None);
        // Two entries off, or a size that disagrees with the endpoints:
        // ambiguous, left for the reader's error.
        assert_eq!(repair_layer_list(&[16, 29, 28, 19]), None);
        assert_eq!(repair_layer_list(&[16, 17, 29, 20]), None);
    }

    #[test]
    fn model_layers_kinds_and_sizes() {
        let m = model();
        let kinds: Vec<LayerKind> = m.layers.iter().map(|l| l.kind).collect();
        assert_eq!(
            kinds,
            vec![
                LayerKind::Embedding,
                LayerKind::TransformerBlock,
                LayerKind::TransformerBlock,
                LayerKind::VocabProjection
            ]
        );
        assert_eq!(m.layers[3].params, 90);
        assert_eq!(m.layers[3].output_elems_per_sample, 41);
        assert_eq!(m.layers[0].stored_activation_elems_per_sample, Some(16));
        assert_eq!(m.layers[1].stored_activation_elems_per_sample, None);
        assert_eq!(m.layers[3].stored_activation_elems_per_sample, Some(180));
        assert_eq!(m.shape.as_ref().unwrap().heads, 2);
    }

    #[test]
    fn profiles_become_entries_per_gpu_mbs_tp() {
        let text = r#"{"M": {"G": {"2": {"1": {"0": [1.0, 2.0, 3.0], "1": [4.0, 5.0, 6.0]}},
                                    "1": {"1": {"1": [0.4, 0.5, 0.6], "0": [0.1, 0.2, 0.3]}}}}}"#;
        let p = parse_profiles(text, "p.json", "M").unwrap();
        assert_eq!(p.entries.len(), 2);
        let e = &p.entries[0];
        assert_eq!((e.micro_batch, e.tp), (Some(1), 1));
        assert_eq!(e.forward_s, vec![0.1, 0.4]);
        assert_eq!(e.backward_s, Some(vec![0.2, 0.5]));
        assert_eq!(e.optimizer_s, Some(vec![0.3, 0.6]));
        assert_eq!(e.source.as_deref(), Some("sailor"));
        assert_eq!(p.layer_time("G", 1, 2, 1).unwrap().forward_s, 4.0);
        let e = parse_profiles(text, "p.json", "X").unwrap_err().to_string();
        assert!(e.contains("no model `X`") && e.contains("M"), "{e}");
        let gap = r#"{"M": {"G": {"1": {"1": {"0": [1, 2, 3], "2": [1, 2, 3]}}}}}"#;
        assert!(parse_profiles(gap, "p.json", "M")
            .unwrap_err()
            .to_string()
            .contains("M.G.1.1.2"));
    }

    #[test]
    fn precision_is_the_bytes_per_element_of_llm_info() {
        let full = r#"{"M": {"1": {"0": {"params_floats": 10, "params_bytes": 40, "act_output_floats": 4, "act_output_bytes": 16}},
                                "2": {"0": {"params_floats": 5, "params_bytes": 20, "act_output_floats": 4, "act_output_bytes": 16}}}}"#;
        assert_eq!(
            training_precision(full, "llm.json", "M").unwrap(),
            Some(Precision::Fp32)
        );
        // LLM above records no byte counts of outputs or parameters.
        assert_eq!(training_precision(LLM, "llm.json", "M").unwrap(), None);
        let half = r#"{"M": {"1": {"0": {"params_floats": 10, "params_bytes": 20, "act_output_floats": 4, "act_output_bytes": 8}}}}"#;
        assert_eq!(
            training_precision(half, "llm.json", "M").unwrap(),
            Some(Precision::Fp16)
        );
        let mixed = r#"{"M": {"1": {"0": {"params_floats": 10, "params_bytes": 20, "act_output_floats": 4, "act_output_bytes": 16}}}}"#;
        let e = training_precision(mixed, "llm.json", "M")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("llm.json: M.1.0") && e.contains("one precision"),
            "{e}"
        );
        let e = training_precision(LLM, "llm.json", "X")
            .unwrap_err()
            .to_string();
        assert!(e.contains("no model `X`"), "{e}");
    }

    #[test]
    fn curves_evaluate_and_cap() {
        let net = Network::parse(INTRA, "intra", INTER, "inter").unwrap();
        let c = net.intra_curve("G", 4).unwrap();
        // x = log2(64) = 6 -> 16 GB/s.
        assert!((c.bytes_per_s(64e6) - 16e9).abs() < 1.0);
        assert_eq!(net.intra_curve("G", 2).unwrap().bytes_per_s(1e6), 5e10);
        assert_eq!(net.intra_curve("G", 3).unwrap().max_bytes_per_s, 5e10);
        assert!(net.inter_curve("z", "G", 4).is_some());
        // Another zone without its own curve falls back to a zone with one.
        assert_eq!(net.inter_curve("y", "G", 4), net.inter_curve("z", "G", 4));
        assert!(net.inter_curve("z", "H", 4).is_none());
    }

    /// Two zones: `z` with G nodes (NICs scale with GPUs: 1 GPU 2 GB/s,
    /// 2 GPUs 3 GB/s, 4 GPUs 6.4 GB/s) and P nodes of 8 GPUs (flat 1 GB/s);
    /// `y` with G nodes, linked to `z` at 0.5 and 0.4 GB/s by direction.
    const INTER2: &str = r#"{
        "z": {"G": {"1": {"z": {"G": {"1": [[0, 0, 2.0], 1e10]}}},
                    "2": {"z": {"G": {"2": [[0, 0, 3.0], 1e10]}}},
                    "4": {"z": {"G": {"4": [[0, 0, 6.4], 1e10]}, "P": {"8": [[0, 0, 0.9], 1e10]}},
                          "y": {"G": {"4": [[0, 0, 0.5], 1e10]}}}},
              "P": {"1": {"z": {"P": {"1": [[0, 0, 1.0], 1e10]}}},
                    "8": {"z": {"P": {"8": [[0, 0, 1.0], 1e10]}}}}},
        "y": {"G": {"4": {"z": {"G": {"4": [[0, 0, 0.4], 1e10]}, "P": {"8": [[0, 0, 0.3], 1e10]}}}}}}"#;

    #[test]
    fn nics_follow_the_curve_ratio_and_pairs_use_their_curve() {
        let net = Network::parse(INTRA, "intra", INTER2, "inter").unwrap();
        // 6.4 / 2 = 3.2 -> the divisor of 4 nearest on a log scale is 4;
        // 3 / 2 = 1.5 -> 2; a flat curve -> 1; no 1-GPU curve -> 1.
        assert_eq!(net.nics("z", "G", 4), 4);
        assert_eq!(net.nics("z", "G", 2), 2);
        assert_eq!(net.nics("z", "P", 8), 1);
        assert_eq!(net.nics("z", "Q", 8), 1);
        // Zone y has no G-G curve of its own: zone z's.
        assert_eq!(net.nics("y", "G", 4), 4);
        let at = |c: Option<&BandwidthCurve>| c.map(|c| c.bytes_per_s(REFERENCE_MESSAGE_BYTES));
        // Listed both ways: the slower. Listed one way: that one.
        assert_eq!(at(net.pair_curve(("z", "G", 4), ("y", "G", 4))), Some(4e8));
        assert_eq!(at(net.pair_curve(("y", "G", 4), ("z", "G", 4))), Some(4e8));
        assert_eq!(at(net.pair_curve(("z", "P", 8), ("z", "G", 4))), Some(9e8));
        assert_eq!(at(net.pair_curve(("z", "G", 1), ("y", "G", 1))), None);

        // A plan over both zones and both types: stage 0 on two G nodes of
        // zone z (tp 4), stage 1 with one replica on a G node of zone y and
        // one on half of a P node.
        let m = model();
        let cfg = r#"{"G": {"gpus_per_node": 4, "mem_per_gpu": 1000}, "P": {"gpus_per_node": 8, "mem_per_gpu": 2000}}"#;
        let gpus = parse_cluster_config(cfg, "cfg").unwrap();
        let gz = r#"[[["G", 4, "z"]], 4]"#;
        let gy = r#"[[["G", 4, "y"]], 4]"#;
        let p = r#"[[["P", 8, "z"]], 4]"#;
        let text = plan_json(
            &format!(
                r#"{{"num_stages": 2, "layers_per_stage": [[0, 1], [2, 3]], "tmp_per_stage": [[{gz}, {gz}], [{gy}, {p}]]"#
            ),
            "[2, 2]",
            1,
            8,
        );
        let run = parse_plan_config(&text, "p.json", &m, &gpus, &net).unwrap();
        let c = &run.cluster;
        let nodes: Vec<(&str, usize, usize, Option<u64>)> = c
            .nodes
            .iter()
            .map(|n| (n.gpu_type.as_str(), n.gpus, n.nics, n.gpu_memory_bytes))
            .collect();
        assert_eq!(
            nodes,
            vec![
                ("G", 4, 4, Some(1000)),
                ("G", 4, 4, Some(1000)),
                ("G", 4, 4, Some(1000)),
                ("P", 8, 1, Some(2000))
            ]
        );
        assert!((c.nodes[0].inter_bytes_per_s - 6.4e9).abs() < 1.0);
        // Node 2 is in zone y: links to nodes 0 and 1 at 0.4 GB/s (the
        // slower direction) and to the P node at 0.3; the P node links to
        // the G nodes of its zone at 0.9 GB/s; alike nodes need none.
        let link = |a: usize, b: usize| {
            c.links
                .iter()
                .find(|l| l.nodes == [a, b])
                .map(|l| l.bytes_per_s)
        };
        assert_eq!(link(0, 1), None);
        assert!((link(0, 2).unwrap() - 4e8).abs() < 1.0);
        assert!((link(1, 2).unwrap() - 4e8).abs() < 1.0);
        assert!((link(1, 3).unwrap() - 9e8).abs() < 1.0);
        assert!((link(2, 3).unwrap() - 3e8).abs() < 1.0);
        assert_eq!(c.links.len(), 5);
        let d = |node, gpu| Device { node, gpu };
        assert_eq!(
            run.plan.stages[1].replicas[1],
            vec![d(3, 0), d(3, 1), d(3, 2), d(3, 3)]
        );
        // A P node in zone x: its own curve comes from zone z, but nothing
        // says how it reaches the G nodes of z: a clear error.
        let px = r#"[[["P", 8, "x"]], 4]"#;
        let text = text.replace(p, px);
        let e = parse_plan_config(&text, "p.json", &m, &gpus, &net)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("p.json")
                && e.contains("no inter-node bandwidth curve between")
                && e.contains("zone `x`"),
            "{e}"
        );
    }

    fn plan_json(stages: &str, dp: &str, mbs: usize, gbs: usize) -> String {
        format!(
            r#"{{"pipeline_list": [{stages}, "dp": {dp}}}], "mbs": {mbs}, "gbs": {gbs}, "real": 1.5, "max_mem": 123}}"#
        )
    }

    #[test]
    fn plan_maps_groups_onto_nodes_in_order() {
        let m = model();
        let gpus = parse_cluster_config(CFG, "cfg").unwrap();
        let net = Network::parse(INTRA, "intra", INTER, "inter").unwrap();
        // Two stages, dp 2, tp 2: four groups of two fill two 4-GPU nodes.
        let g = r#"[[["G", 4, "z"]], 2]"#;
        let text = plan_json(
            &format!(
                r#"{{"num_stages": 2, "layers_per_stage": [[0, 1], [2, 3]], "tmp_per_stage": [[{g}, {g}], [{g}, {g}]]"#
            ),
            "[2, 2]",
            1,
            8,
        );
        let run = parse_plan_config(&text, "p.json", &m, &gpus, &net).unwrap();
        assert_eq!(run.cluster.nodes.len(), 2);
        assert_eq!(run.plan.num_micro_batches, 4);
        assert_eq!(run.plan.boundaries(), vec![0, 2, 4]);
        let d = |node, gpu| Device { node, gpu };
        assert_eq!(
            run.plan.stages[0].replicas,
            vec![vec![d(0, 0), d(0, 1)], vec![d(0, 2), d(0, 3)]]
        );
        assert_eq!(
            run.plan.stages[1].replicas,
            vec![vec![d(1, 0), d(1, 1)], vec![d(1, 2), d(1, 3)]]
        );
        assert_eq!(run.measured_s, Some(1.5));
        assert_eq!(run.max_mem_bytes, Some(123.0));
        assert_eq!(run.cluster.nodes[0].gpu_memory_bytes, Some(1000));
        assert!((run.cluster.nodes[0].inter_bytes_per_s - 2e9).abs() < 1.0);
    }

    #[test]
    fn bad_plans_are_explained() {
        let m = model();
        let gpus = parse_cluster_config(CFG, "cfg").unwrap();
        let net = Network::parse(INTRA, "intra", INTER, "inter").unwrap();
        let g = r#"[[["G", 4, "z"]], 4]"#;
        let gap = plan_json(
            &format!(
                r#"{{"num_stages": 2, "layers_per_stage": [[0, 1], [3]], "tmp_per_stage": [[{g}], [{g}]]"#
            ),
            "[1, 1]",
            1,
            8,
        );
        let e = parse_plan_config(&gap, "p.json", &m, &gpus, &net)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("p.json") && e.contains("previous stage ended"),
            "{e}"
        );
        let batch = plan_json(
            &format!(
                r#"{{"num_stages": 1, "layers_per_stage": [[0, 1, 2, 3]], "tmp_per_stage": [[{g}]]"#
            ),
            "[1]",
            3,
            8,
        );
        let e = parse_plan_config(&batch, "p.json", &m, &gpus, &net)
            .unwrap_err()
            .to_string();
        assert!(e.contains("gbs = 8"), "{e}");
        let dp = plan_json(
            &format!(
                r#"{{"num_stages": 1, "layers_per_stage": [[0, 1, 2, 3]], "tmp_per_stage": [[{g}]]"#
            ),
            "[2]",
            1,
            8,
        );
        let e = parse_plan_config(&dp, "p.json", &m, &gpus, &net)
            .unwrap_err()
            .to_string();
        assert!(e.contains("dp = 2"), "{e}");
    }
}

//! Measured per-layer compute times, keyed by GPU type and tensor-parallel
//! degree (and, where measured, micro-batch size).

use serde::{Deserialize, Serialize};

use crate::error::{AmpError, Result};
use crate::limits;

/// Times of every layer of the model on one GPU type at one tensor-parallel
/// degree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileEntry {
    /// GPU type name, as in the cluster's nodes.
    pub gpu: String,
    /// Tensor-parallel degree the times were measured at.
    pub tp: usize,
    /// The micro-batch size the times were measured at. `None` means the
    /// times are per sample and scale linearly with the micro-batch (AMP's
    /// profiles).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub micro_batch: Option<usize>,
    /// Forward time of each layer, seconds.
    pub forward_s: Vec<f64>,
    /// Backward time of each layer, seconds, when measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backward_s: Option<Vec<f64>>,
    /// Optimizer-step time of each layer's weights, seconds, when measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optimizer_s: Option<Vec<f64>>,
    /// Where the times come from (a file, "analytic", ...), for reporting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// `source` of the entries amp-catalog's analytic compute model writes.
/// Such entries hold computation only: the cost model adds the
/// tensor-parallel all-reduces on the group's real links
/// ([`ProfileEntry::includes_tp_comm`]).
pub const ANALYTIC_SOURCE: &str = "analytic";

/// Prefix of the `source` of entries measured on one tensor-parallel rank's
/// slice of each layer on a single device, as AMP's profiler and
/// `python -m amp_planner.profile` measure them: like analytic entries they
/// hold computation only, so the cost model adds the tensor-parallel
/// all-reduces on the group's real links; unlike them they are reported as
/// measured.
pub const SLICE_SOURCE_PREFIX: &str = "slice:";

impl ProfileEntry {
    /// Whether the times include the layer's tensor-parallel communication.
    /// Measured entries do (they were timed on a real tensor-parallel
    /// group); analytic ones ([`ANALYTIC_SOURCE`]) and single-device slices
    /// ([`SLICE_SOURCE_PREFIX`]) do not.
    pub fn includes_tp_comm(&self) -> bool {
        match self.source.as_deref() {
            Some(s) => s != ANALYTIC_SOURCE && !s.starts_with(SLICE_SOURCE_PREFIX),
            None => true,
        }
    }
}

/// Forward and (when measured) backward time of one layer for one
/// micro-batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LayerTime {
    /// Forward time of the layer, seconds.
    pub forward_s: f64,
    /// Backward time of the layer, seconds, when the profile measured it.
    pub backward_s: Option<f64>,
}

/// Measured per-layer times: one [`ProfileEntry`] per GPU type, tensor-parallel
/// degree and (optionally) micro-batch size, plus the number format they were
/// measured in.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// The measurements; several may share a GPU type and tp at different
    /// micro-batch sizes.
    #[serde(default)]
    pub entries: Vec<ProfileEntry>,
    /// Number format of the training runs the times were measured in, when
    /// known. The times are only valid in that format: a training setup in
    /// another one is refused ([`crate::TrainingSetup::check_profile`]).
    /// File format: `precision = "fp32"`, `"bf16"`, `"fp16"` (or the older
    /// `"mixed16"`) at the top of a profile file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision: Option<crate::setup::Precision>,
}

impl Profile {
    /// The distinct GPU type names profiled, sorted.
    pub fn gpu_types(&self) -> Vec<String> {
        let mut t: Vec<String> = self.entries.iter().map(|e| e.gpu.clone()).collect();
        t.sort();
        t.dedup();
        t
    }

    /// Tensor-parallel degrees profiled for `gpu`.
    pub fn tp_degrees(&self, gpu: &str) -> Vec<usize> {
        let mut t: Vec<usize> = self
            .entries
            .iter()
            .filter(|e| e.gpu == gpu)
            .map(|e| e.tp)
            .collect();
        t.sort();
        t.dedup();
        t
    }

    /// Whether any entry covers `gpu` at tensor-parallel degree `tp`.
    pub fn has(&self, gpu: &str, tp: usize) -> bool {
        self.entries.iter().any(|e| e.gpu == gpu && e.tp == tp)
    }

    /// Whether `gpu` at `tp` is profiled and every entry for it leaves out
    /// the tensor-parallel communication ([`ProfileEntry::includes_tp_comm`]).
    pub(crate) fn compute_only(&self, gpu: &str, tp: usize) -> bool {
        self.has(gpu, tp) && self.candidates(gpu, tp).all(|e| !e.includes_tp_comm())
    }

    fn candidates<'a>(&'a self, gpu: &'a str, tp: usize) -> impl Iterator<Item = &'a ProfileEntry> {
        self.entries
            .iter()
            .filter(move |e| e.gpu == gpu && e.tp == tp)
    }

    /// Per-sample forward times of `gpu` at `tp` (entries measured per
    /// sample only).
    pub fn per_sample_forward<'a>(&'a self, gpu: &str, tp: usize) -> Option<&'a [f64]> {
        self.entries
            .iter()
            .find(|e| e.gpu == gpu && e.tp == tp && e.micro_batch.is_none())
            .map(|e| e.forward_s.as_slice())
    }

    /// Time of `layer` for one micro-batch of `micro_batch` samples on `gpu`
    /// at tensor-parallel degree `tp`. Per-sample entries scale linearly;
    /// entries measured at given micro-batch sizes are interpolated linearly
    /// between the two nearest sizes (and extrapolated per sample from the
    /// nearest one outside the measured range).
    pub fn layer_time(
        &self,
        gpu: &str,
        tp: usize,
        micro_batch: usize,
        layer: usize,
    ) -> Option<LayerTime> {
        self.measured(gpu, tp)?.time(micro_batch, layer)
    }

    /// [`Profile::layer_time`] of every layer `0..num_layers` at once: the
    /// entries are looked up once, not once per layer (deep layer lists).
    pub fn layer_times(
        &self,
        gpu: &str,
        tp: usize,
        micro_batch: usize,
        num_layers: usize,
    ) -> Option<Vec<LayerTime>> {
        self.measured(gpu, tp)?.times(micro_batch, num_layers)
    }

    /// The entries of `gpu` at `tp`: the per-sample one if any (it wins),
    /// else those measured at given micro-batch sizes, smallest first.
    fn measured<'a>(&'a self, gpu: &'a str, tp: usize) -> Option<Measured<'a>> {
        if let Some(e) = self.candidates(gpu, tp).find(|e| e.micro_batch.is_none()) {
            return Some(Measured::PerSample(e));
        }
        let mut measured: Vec<&ProfileEntry> = self.candidates(gpu, tp).collect();
        if measured.is_empty() {
            return None;
        }
        measured.sort_by_key(|e| e.micro_batch);
        Some(Measured::BySize(measured))
    }

    /// The index in `entries` of the measured optimizer-step times of
    /// `gpu` at `tp`, one per layer (the first entry that has them: a
    /// checked profile's entries cover every layer).
    pub(crate) fn optimizer_entry(&self, gpu: &str, tp: usize) -> Option<usize> {
        self.entries
            .iter()
            .position(|e| e.gpu == gpu && e.tp == tp && e.optimizer_s.is_some())
    }

    /// Checks that every entry covers exactly `num_layers` layers.
    pub fn check_layers(&self, num_layers: usize, origin: &str) -> Result<()> {
        for e in &self.entries {
            let lens = [
                Some(e.forward_s.len()),
                e.backward_s.as_ref().map(|b| b.len()),
                e.optimizer_s.as_ref().map(|o| o.len()),
            ];
            for len in lens.into_iter().flatten() {
                if len != num_layers {
                    return Err(AmpError::invalid(
                        format!("{origin}: profile entry gpu = \"{}\", tp = {}", e.gpu, e.tp),
                        format!(
                            "has {len} layer times but the model has {num_layers} layers; profile the same layer list"
                        ),
                    ));
                }
            }
            if e.forward_s.iter().any(|t| !(t.is_finite() && *t >= 0.0)) {
                return Err(AmpError::invalid(
                    format!("{origin}: profile entry gpu = \"{}\", tp = {}", e.gpu, e.tp),
                    "forward_s holds a negative or non-finite time",
                ));
            }
        }
        Ok(())
    }

    /// Parses a profile written in TOML and checks it; `origin` names the file in
    /// errors.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Profile> {
        let p: Profile = toml::from_str(text).map_err(|e| AmpError::parse(origin, e))?;
        p.validate(origin)?;
        Ok(p)
    }

    /// Parses a profile written in JSON (duplicate keys rejected) and checks it;
    /// `origin` names the file in errors.
    pub fn from_json_str(text: &str, origin: &str) -> Result<Profile> {
        let p: Profile = AmpError::json(text, origin)?;
        p.validate(origin)?;
        Ok(p)
    }

    /// Checks every value against [`crate::limits`]: tp and micro-batch at
    /// least 1, times finite and non-negative, layer counts bounded, and no
    /// two entries for the same (GPU, tp, micro-batch), which would leave
    /// it to chance which one is used. `origin` names the file in errors.
    pub fn validate(&self, origin: &str) -> Result<()> {
        if self.entries.len() > limits::MAX_PROFILE_ENTRIES {
            return Err(AmpError::invalid(
                origin,
                format!(
                    "has {} entries, above the limit of {}",
                    self.entries.len(),
                    limits::MAX_PROFILE_ENTRIES
                ),
            ));
        }
        let mut seen = std::collections::HashMap::new();
        for (i, e) in self.entries.iter().enumerate() {
            let at = || {
                format!(
                    "{origin}: entries[{i}] (gpu = \"{}\", tp = {})",
                    e.gpu, e.tp
                )
            };
            if e.gpu.trim().is_empty() {
                return Err(AmpError::invalid(at(), "gpu is empty; name the GPU type"));
            }
            limits::check_count(e.tp as u64, 1, limits::MAX_TP as u64)
                .map_err(|m| AmpError::invalid(at(), format!("tp {m}")))?;
            if let Some(mb) = e.micro_batch {
                limits::check_count(mb as u64, 1, limits::MAX_MICRO_BATCH as u64).map_err(|m| {
                    AmpError::invalid(
                        at(),
                        format!("micro_batch {m} (omit it for per-sample times)"),
                    )
                })?;
            }
            let lists = [
                ("forward_s", Some(&e.forward_s)),
                ("backward_s", e.backward_s.as_ref()),
                ("optimizer_s", e.optimizer_s.as_ref()),
            ];
            for (field, list) in lists {
                let Some(list) = list else { continue };
                if list.len() > limits::MAX_LAYERS {
                    return Err(AmpError::invalid(
                        at(),
                        format!(
                            "{field} has {} times, above the limit of {} layers",
                            list.len(),
                            limits::MAX_LAYERS
                        ),
                    ));
                }
                for (l, t) in list.iter().enumerate() {
                    limits::check_f64(*t, false, limits::MAX_LAYER_TIME_S).map_err(|m| {
                        AmpError::invalid(at(), format!("{field}[{l}] {m} (seconds)"))
                    })?;
                }
            }
            if let Some(first) = seen.insert((e.gpu.as_str(), e.tp, e.micro_batch), i) {
                return Err(AmpError::invalid(
                    at(),
                    format!(
                        "repeats entries[{first}] (same gpu, tp and micro_batch); give each once"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Checks that every GPU type of `cluster` has some entry.
    pub fn check_covers(&self, cluster: &crate::Cluster) -> Result<()> {
        let have = self.gpu_types();
        for gpu in cluster.gpu_types() {
            if !have.contains(&gpu) {
                return Err(AmpError::missing_profile(
                    Some(&gpu),
                    None,
                    format!(
                        "the cluster has GPU type `{gpu}` but the profile covers only [{}]; give a profile with times for `{gpu}`",
                        have.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Adds `other`'s entries; the precision stays this profile's when it
    /// has one.
    pub fn merge(&mut self, other: Profile) {
        self.entries.extend(other.entries);
        self.precision = self.precision.or(other.precision);
    }
}

/// The entries one (GPU type, tp) is priced from, as
/// [`Profile::layer_time`] reads them.
enum Measured<'a> {
    /// Seconds per sample, scaled linearly with the micro-batch.
    PerSample(&'a ProfileEntry),
    /// Entries at given micro-batch sizes, smallest first.
    BySize(Vec<&'a ProfileEntry>),
}

/// How one micro-batch size is priced from a [`Measured`]: the entries and
/// the factor, the same for every layer.
enum Basis<'a> {
    /// A per-sample entry, times the micro-batch size.
    PerSample(&'a ProfileEntry, f64),
    /// The entry measured at this size.
    Exact(&'a ProfileEntry),
    /// Between two measured sizes, at `t` of the way from the first.
    Between(&'a ProfileEntry, &'a ProfileEntry, f64),
    /// Beyond every measured size: the nearest, scaled by size (`mbs`).
    Scaled(&'a ProfileEntry, f64),
}

/// Forward and backward time of `layer` in entry `e`.
fn entry_at(e: &ProfileEntry, layer: usize) -> Option<(f64, Option<f64>)> {
    let f = *e.forward_s.get(layer)?;
    let b = match &e.backward_s {
        Some(b) => Some(*b.get(layer)?),
        None => None,
    };
    Some((f, b))
}

impl<'a> Measured<'a> {
    /// The basis of a micro-batch of `micro_batch` samples.
    fn basis(&self, micro_batch: usize) -> Option<Basis<'a>> {
        let mbs = micro_batch as f64;
        let m = match self {
            Measured::PerSample(e) => return Some(Basis::PerSample(e, mbs)),
            Measured::BySize(m) => m,
        };
        let size = |e: &ProfileEntry| e.micro_batch.map(|m| m as f64);
        if let Some(e) = m.iter().find(|e| size(e) == Some(mbs)) {
            return Some(Basis::Exact(e));
        }
        let lo = m.iter().rev().find(|e| size(e).is_some_and(|s| s < mbs));
        let hi = m.iter().find(|e| size(e).is_some_and(|s| s > mbs));
        match (lo, hi) {
            (Some(a), Some(b)) => {
                let (sa, sb) = (size(a)?, size(b)?);
                Some(Basis::Between(a, b, (mbs - sa) / (sb - sa)))
            }
            (Some(p), None) | (None, Some(p)) => Some(Basis::Scaled(p, mbs)),
            (None, None) => None,
        }
    }

    /// Layers below this have a time in every entry measured by size (a
    /// size's time needs them all: it may be interpolated from any).
    fn covered(&self) -> usize {
        match self {
            Measured::PerSample(_) => usize::MAX,
            Measured::BySize(m) => m
                .iter()
                .map(|e| {
                    let b = e.backward_s.as_ref().map_or(usize::MAX, Vec::len);
                    if e.micro_batch.is_none() {
                        0
                    } else {
                        e.forward_s.len().min(b)
                    }
                })
                .min()
                .unwrap_or(0),
        }
    }

    /// Time of `layer` for a micro-batch of `micro_batch` samples.
    fn time(&self, micro_batch: usize, layer: usize) -> Option<LayerTime> {
        time_at(&self.basis(micro_batch)?, self.covered(), layer)
    }

    /// [`Measured::time`] of every layer `0..num_layers`, the basis found
    /// once, not once per layer.
    fn times(&self, micro_batch: usize, num_layers: usize) -> Option<Vec<LayerTime>> {
        let (basis, covered) = (self.basis(micro_batch)?, self.covered());
        (0..num_layers)
            .map(|l| time_at(&basis, covered, l))
            .collect()
    }
}

/// Time of `layer` on `basis`, when the entries cover it (`covered`,
/// [`Measured::covered`]).
fn time_at(basis: &Basis, covered: usize, layer: usize) -> Option<LayerTime> {
    if layer >= covered {
        return None;
    }
    let lerp = |a: f64, b: f64, t: f64| a + (b - a) * t;
    let (forward_s, backward_s) = match *basis {
        Basis::PerSample(e, mbs) => {
            let (f, b) = entry_at(e, layer)?;
            (f * mbs, b.map(|b| b * mbs))
        }
        Basis::Exact(e) => entry_at(e, layer)?,
        Basis::Between(a, b, t) => {
            let ((fa, ba), (fb, bb)) = (entry_at(a, layer)?, entry_at(b, layer)?);
            (
                lerp(fa, fb, t),
                match (ba, bb) {
                    (Some(x), Some(y)) => Some(lerp(x, y, t)),
                    _ => None,
                },
            )
        }
        Basis::Scaled(p, mbs) => {
            let size = p.micro_batch? as f64;
            let (f, b) = entry_at(p, layer)?;
            (f / size * mbs, b.map(|b| b / size * mbs))
        }
    };
    Some(LayerTime {
        forward_s,
        backward_s,
    })
}

/// A per-sample profile of `num_layers` layers for tests: each `(gpu, tp,
/// seconds)` gives every layer that forward time.
#[cfg(test)]
pub(crate) fn uniform_profile(num_layers: usize, entries: &[(&str, usize, f64)]) -> Profile {
    Profile {
        entries: entries
            .iter()
            .map(|&(gpu, tp, s)| ProfileEntry {
                gpu: gpu.to_string(),
                tp,
                micro_batch: None,
                forward_s: vec![s; num_layers],
                backward_s: None,
                optimizer_s: None,
                source: None,
            })
            .collect(),
        precision: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// All layers at once give what each layer alone gives, bit for bit:
    /// at a measured micro-batch size, between two, below and above all,
    /// with and without backward times, and with an entry short of layers.
    #[test]
    fn layer_times_at_once_equal_each_layers_time() {
        let layers = 7;
        let e = |mbs: usize, scale: f64, backward: bool| ProfileEntry {
            gpu: "A".into(),
            tp: 1,
            micro_batch: Some(mbs),
            forward_s: (0..layers)
                .map(|l| scale * (1.0 + l as f64 / 3.0))
                .collect(),
            backward_s: backward.then(|| {
                (0..layers)
                    .map(|l| scale * (2.1 + l as f64 / 7.0))
                    .collect()
            }),
            optimizer_s: None,
            source: None,
        };
        let profiles = [
            vec![e(2, 0.013, true), e(8, 0.041, true), e(4, 0.023, true)],
            vec![e(2, 0.013, true), e(8, 0.041, false)],
            vec![e(3, 0.017, false)],
        ];
        for entries in profiles {
            let mut p = Profile {
                entries,
                precision: None,
            };
            for short in [false, true] {
                if short {
                    p.entries[0].forward_s.pop();
                }
                for mbs in [1, 2, 3, 4, 5, 7, 8, 9, 16] {
                    let each: Option<Vec<LayerTime>> =
                        (0..layers).map(|l| p.layer_time("A", 1, mbs, l)).collect();
                    let all = p.layer_times("A", 1, mbs, layers);
                    assert_eq!(format!("{all:?}"), format!("{each:?}"), "mbs {mbs}");
                    assert_eq!(all.is_some(), !short);
                }
            }
        }
    }

    fn entry(mbs: Option<usize>, f: f64) -> ProfileEntry {
        ProfileEntry {
            gpu: "A".into(),
            tp: 1,
            micro_batch: mbs,
            forward_s: vec![f],
            backward_s: Some(vec![2.0 * f]),
            optimizer_s: None,
            source: None,
        }
    }

    #[test]
    fn slices_and_analytic_entries_leave_out_tp_comm() {
        let mut e = entry(Some(1), 1.0);
        assert!(e.includes_tp_comm());
        e.source = Some("measured on a DGX".into());
        assert!(e.includes_tp_comm());
        e.source = Some(ANALYTIC_SOURCE.into());
        assert!(!e.includes_tp_comm());
        e.source = Some(format!("{SLICE_SOURCE_PREFIX} amp_planner.profile on H100"));
        assert!(!e.includes_tp_comm());
        let p = Profile {
            entries: vec![e],
            precision: None,
        };
        assert!(p.compute_only("A", 1));
    }

    #[test]
    fn per_sample_times_scale_with_micro_batch() {
        let p = Profile {
            entries: vec![entry(None, 0.5)],
            precision: None,
        };
        let t = p.layer_time("A", 1, 4, 0).unwrap();
        assert_eq!(t.forward_s, 2.0);
        assert_eq!(t.backward_s, Some(4.0));
        assert!(p.layer_time("A", 2, 4, 0).is_none());
        assert!(p.layer_time("B", 1, 4, 0).is_none());
    }

    #[test]
    fn measured_micro_batches_interpolate() {
        let p = Profile {
            entries: vec![entry(Some(2), 1.0), entry(Some(8), 3.0)],
            precision: None,
        };
        assert_eq!(p.layer_time("A", 1, 2, 0).unwrap().forward_s, 1.0);
        assert_eq!(
            p.layer_time("A", 1, 4, 0).unwrap().forward_s,
            1.0 + 2.0 / 6.0 * 2.0
        );
        // Outside the measured range: per-sample from the nearest point.
        assert_eq!(p.layer_time("A", 1, 1, 0).unwrap().forward_s, 0.5);
        assert_eq!(p.layer_time("A", 1, 16, 0).unwrap().forward_s, 6.0);
    }
}

//! The fitted constants of the default cost model, in one place.
//!
//! Everything else in [`crate::cost::device`] and [`crate::memory`] comes
//! from first principles, the profile or the cluster file. These six
//! numbers do not: they stand for effects amp does not model (launch
//! latency, transport efficiency, the framework's own memory), and they are
//! fitted to measured runs by [`crate::fit::fit`] (`amp fit`), never chosen
//! by hand. [`Calibration::NEUTRAL`] switches every one of them off, so the
//! accuracy the fit buys can be measured.

use serde::{Deserialize, Serialize};

/// The fitted constants of the default cost model.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Calibration {
    /// Share of a per-sample profiled computation time (AMP's `.npy`
    /// profiles, measured one sample at a time) paid once per micro-batch
    /// rather than per sample: kernel launches and latency-bound kernels
    /// that a larger micro-batch does not repeat. Neutral: 0 (time scales
    /// with the micro-batch). Only per-sample profiles use it.
    pub per_sample_fixed_fraction: f64,
    /// Share of a per-sample profile's tensor-parallel communication paid
    /// once per micro-batch: all-reduces of one sample's activations are
    /// latency-bound. Neutral: 0.
    pub per_sample_tp_comm_fixed_fraction: f64,
    /// Fraction of a NIC's (or node-pair link's) nominal bandwidth a
    /// collective or send achieves between nodes
    /// ([`crate::cost::collective::Network`]). Neutral: 1 (the nominal rate).
    pub inter_node_efficiency: f64,
    /// Memory every GPU holds whatever the plan that the framework cannot
    /// give back, bytes: CUDA context, NCCL buffers, fragmentation. It
    /// counts in whether a plan fits: PyTorch's caching allocator frees the
    /// blocks it caches and retries before it reports out of memory, so an
    /// out-of-memory verdict sees this and not the cache. Neutral: 0.
    pub framework_reserve_bytes: f64,
    /// Memory PyTorch's caching allocator holds beyond the plan's peak and
    /// the reserve at the end of an iteration, bytes: free blocks it keeps
    /// for reuse. A device reading (`nvidia-smi`'s `memory.used`, Sailor's
    /// `max_mem`) shows it; whether a plan fits does not depend on it (see
    /// [`Self::framework_reserve_bytes`]). Neutral: 0. Absent from a file
    /// written before it existed: 0.
    #[serde(default)]
    pub allocator_cache_bytes: f64,
    /// Seconds per GB of fp32 buffer a host-staged receive costs
    /// ([`crate::setup::PipelineReceive::HostStaged`], Sailor's DeepSpeed
    /// fork): the host zero-fills the buffer and copies it to the GPU from
    /// pageable memory while the GPU waits. How fast that is depends on the
    /// host (its memory, page size and driver), which no given spec states.
    /// Neutral: 0. Absent from a file written before it existed: 0.
    #[serde(default)]
    pub host_staging_s_per_gb: f64,
}

impl Calibration {
    /// Every fitted effect switched off.
    pub const NEUTRAL: Calibration = Calibration {
        per_sample_fixed_fraction: 0.0,
        per_sample_tp_comm_fixed_fraction: 0.0,
        inter_node_efficiency: 1.0,
        framework_reserve_bytes: 0.0,
        allocator_cache_bytes: 0.0,
        host_staging_s_per_gb: 0.0,
    };

    /// What `amp fit ../shared/data/amp-paper ../shared/data/sailor` fits on
    /// all the given measured sets ([`crate::fit::fit`]): the AMP
    /// artifact's homogeneous T4 runs (GPT-2, 52 runs, per-sample profiles)
    /// and Sailor's GH200 runs (OPT-350M, 15 runs, peak memory measured). A
    /// CLI test (`crates/amp-cli/tests/fit.rs`) re-runs the fit and checks
    /// it returns exactly these values. Fitted on both sets, these are
    /// in-sample there; `amp fit` prints the leave-one-set-out figures.
    pub const FITTED: Calibration = Calibration {
        per_sample_fixed_fraction: 0.3,
        per_sample_tp_comm_fixed_fraction: 0.5,
        inter_node_efficiency: 1.0,
        framework_reserve_bytes: 4.5e9,
        allocator_cache_bytes: 0.0,
        host_staging_s_per_gb: 0.08,
    };

    /// What `amp fit ../shared/data/amp-paper` fits on the AMP artifact's
    /// homogeneous T4 runs alone (the constants behind Sailor's
    /// leave-one-set-out figures): the per-sample shares and the reserve
    /// from the T4 runs, the network at its nominal rate, no allocator
    /// cache or host staging (those runs measure neither). Pinned by
    /// `crates/amp-cli/tests/fit.rs`.
    pub const FITTED_ON_AMP_T4: Calibration = Calibration {
        per_sample_fixed_fraction: 0.3,
        per_sample_tp_comm_fixed_fraction: 0.5,
        inter_node_efficiency: 1.0,
        framework_reserve_bytes: 4.5e9,
        allocator_cache_bytes: 0.0,
        host_staging_s_per_gb: 0.0,
    };

    /// What `amp fit ../shared/data/sailor` fits on Sailor's GH200 runs
    /// alone (the constants behind the AMP runs' leave-one-set-out
    /// figures): inter-node links at 35% of their nominal rate, the
    /// readings' offset all in the allocator's cache, no reserve, no
    /// per-sample shares (Sailor's profiles are per micro-batch). Pinned by
    /// `crates/amp-cli/tests/fit.rs`.
    pub const FITTED_ON_SAILOR_GH200: Calibration = Calibration {
        per_sample_fixed_fraction: 0.0,
        per_sample_tp_comm_fixed_fraction: 0.0,
        inter_node_efficiency: 0.35,
        framework_reserve_bytes: 0.0,
        allocator_cache_bytes: 4.5e9,
        host_staging_s_per_gb: 0.04,
    };

    /// Every set of constants amp ships: the name `--calibration` takes,
    /// the measured runs it was fitted on, the constants. The default first.
    pub const SHIPPED: [(&'static str, &'static str, Calibration); 4] = [
        (
            "fitted",
            "AMP's T4 and Sailor's GH200 runs (the default)",
            Calibration::FITTED,
        ),
        (
            "neutral",
            "nothing: every fitted effect off",
            Calibration::NEUTRAL,
        ),
        (
            "amp-t4",
            "AMP's T4 runs alone",
            Calibration::FITTED_ON_AMP_T4,
        ),
        (
            "sailor-gh200",
            "Sailor's GH200 runs alone",
            Calibration::FITTED_ON_SAILOR_GH200,
        ),
    ];

    /// The shipped sets of constants other than `asked` (those equal to
    /// it left out), in [`Self::SHIPPED`]'s order: what `--sensitivity`
    /// compares `asked` with.
    pub fn shipped_besides(
        asked: Calibration,
    ) -> impl Iterator<Item = (&'static str, &'static str, Calibration)> {
        Calibration::SHIPPED
            .into_iter()
            .filter(move |(_, _, c)| *c != asked)
    }

    /// `Err(message)` naming the first field outside its range.
    pub fn check(&self) -> Result<(), String> {
        let fraction = |name: &str, v: f64| {
            if (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err(format!("{name} = {v} must be in 0..=1"))
            }
        };
        fraction("per_sample_fixed_fraction", self.per_sample_fixed_fraction)?;
        fraction(
            "per_sample_tp_comm_fixed_fraction",
            self.per_sample_tp_comm_fixed_fraction,
        )?;
        // A link at under 1% of its nominal rate is a broken link, not a
        // calibration (amp fit searches 0.25..=1): below it every time
        // would be priced in thousands of seconds, or not at all.
        if !(0.01..=1.0).contains(&self.inter_node_efficiency) {
            return Err(format!(
                "inter_node_efficiency = {:e} must be in 0.01..=1 (the share of a link's nominal rate its collectives reach)",
                self.inter_node_efficiency
            ));
        }
        for (name, v) in [
            ("framework_reserve_bytes", self.framework_reserve_bytes),
            ("allocator_cache_bytes", self.allocator_cache_bytes),
        ] {
            if !(0.0..=1e15).contains(&v) {
                return Err(format!("{name} = {v} must be in 0..=1e15"));
            }
        }
        if !(0.0..=10.0).contains(&self.host_staging_s_per_gb) {
            return Err(format!(
                "host_staging_s_per_gb = {} must be in 0..=10",
                self.host_staging_s_per_gb
            ));
        }
        Ok(())
    }
}

impl Default for Calibration {
    fn default() -> Self {
        Calibration::FITTED
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_checked() {
        assert!(Calibration::FITTED.check().is_ok());
        assert!(Calibration::NEUTRAL.check().is_ok());
        let bad = Calibration {
            inter_node_efficiency: 0.0,
            ..Calibration::NEUTRAL
        };
        assert!(bad.check().unwrap_err().contains("inter_node_efficiency"));
        for tiny in [1e-300, 5e-324, 0.009] {
            let bad = Calibration {
                inter_node_efficiency: tiny,
                ..Calibration::NEUTRAL
            };
            assert!(bad.check().unwrap_err().contains("must be in 0.01..=1"));
        }
        let bad = Calibration {
            per_sample_fixed_fraction: f64::NAN,
            ..Calibration::NEUTRAL
        };
        assert!(bad
            .check()
            .unwrap_err()
            .contains("per_sample_fixed_fraction"));
        let bad = Calibration {
            allocator_cache_bytes: -1.0,
            ..Calibration::NEUTRAL
        };
        assert!(bad.check().unwrap_err().contains("allocator_cache_bytes"));
    }

    #[test]
    fn a_file_without_the_allocator_cache_reads_as_zero() {
        let old = r#"{"per_sample_fixed_fraction": 0.35, "per_sample_tp_comm_fixed_fraction": 0.5,
            "inter_node_efficiency": 0.5, "framework_reserve_bytes": 4.5e9}"#;
        let c: Calibration = serde_json::from_str(old).unwrap();
        assert_eq!(c.allocator_cache_bytes, 0.0);
        assert_eq!(c.framework_reserve_bytes, 4.5e9);
    }
}

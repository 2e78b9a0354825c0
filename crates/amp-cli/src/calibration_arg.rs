//! `--calibration`: which fitted constants the amp cost model uses.

use std::path::Path;

use amp_core::cost::Calibration;
use anyhow::{anyhow, bail, Context, Result};

/// Help text of every `--calibration` flag.
pub const HELP: &str = "Constants of the amp cost model: `fitted` (the default, what `amp fit` \
     finds on the given measured sets), `neutral` (every fitted effect off), `amp-t4` or \
     `sailor-gh200` (fitted on one measured set alone), or a JSON file written by `amp fit DIRS \
     --out FILE`";

/// The calibration a `--calibration` value names.
pub fn read_calibration(spec: &str) -> Result<Calibration> {
    if let Some((_, _, cal)) = Calibration::SHIPPED
        .iter()
        .find(|(name, _, _)| *name == spec)
    {
        return Ok(*cal);
    }
    let path = Path::new(spec);
    if !path.is_file() {
        bail!(
            "--calibration {spec}: no such file; give `fitted`, `neutral`, `amp-t4`, \
             `sailor-gh200`, or a JSON file written by `amp fit DIRS --out FILE`"
        );
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read calibration file {spec}"))?;
    let cal: Calibration = serde_json::from_str(&text).map_err(|e| {
        anyhow!(
            "{spec}: not a calibration file ({e}); it needs the keys \
             per_sample_fixed_fraction, per_sample_tp_comm_fixed_fraction, \
             inter_node_efficiency, framework_reserve_bytes and (optional, 0 when absent) \
             allocator_cache_bytes and host_staging_s_per_gb, as `amp fit --out` writes them"
        )
    })?;
    cal.check().map_err(|e| anyhow!("{spec}: {e}"))?;
    Ok(cal)
}

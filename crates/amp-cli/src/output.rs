//! Writing what a command produces besides its printout: engine launch
//! files and the HTML report.

use std::path::Path;

use amp_core::cost::device::DeviceModel;
use amp_core::cost::{Estimate, Inputs};
use amp_core::plan::Plan;
use amp_core::search::RankedPlan;
use amp_export::{export, html_report, Engine, ExportOptions, ReportInput};

use anyhow::{anyhow, Context, Result};
use clap::ValueEnum;

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineArg {
    Megatron,
    Deepspeed,
    Torchtitan,
}

impl EngineArg {
    pub fn engine(self) -> Engine {
        match self {
            EngineArg::Megatron => Engine::Megatron,
            EngineArg::Deepspeed => Engine::DeepSpeed,
            EngineArg::Torchtitan => Engine::Torchtitan,
        }
    }
}

/// Writes the launch files of `plan` for `engine` under `dir`. The launch
/// runs what was priced: the plan's own training setup.
pub fn write_export(
    inputs: &Inputs,
    plan: &Plan,
    engine: EngineArg,
    dir: &Path,
) -> Result<Vec<String>> {
    let opts = ExportOptions::default();
    let files = export(plan, inputs.model, inputs.cluster, engine.engine(), &opts)
        .map_err(|e| anyhow!("cannot export for {}: {e}", engine.engine().name()))?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut written = Vec::new();
    for f in files {
        let path = dir.join(&f.path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, &f.contents)
            .with_context(|| format!("cannot write {}", path.display()))?;
        #[cfg(unix)]
        if f.path.ends_with(".sh") {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
        }
        written.push(path.display().to_string());
    }
    Ok(written)
}

/// Writes the HTML report. The timeline is the simulation that priced the
/// chosen plan (amp's model, under the plan's setup); the amp-paper model
/// simulates nothing, so its reports have none.
pub fn write_report(
    inputs: &Inputs,
    cost_model: &str,
    title: &str,
    ranked: &[RankedPlan],
    chosen: &Plan,
    estimate: Option<&Estimate>,
    path: &Path,
) -> Result<()> {
    let timeline = if cost_model == "amp" {
        Some(DeviceModel::default().timeline(inputs, chosen)?)
    } else {
        None
    };
    let input = ReportInput {
        title,
        model: inputs.model,
        cluster: inputs.cluster,
        ranked,
        chosen,
        estimate,
        timeline: timeline.as_ref(),
        max_rows: 50,
    };
    let html = html_report(&input);
    std::fs::write(path, html).with_context(|| format!("cannot write {}", path.display()))
}

//! Writing what a command produces besides its printout: engine launch
//! files and the HTML report.

use std::path::Path;

use crate::inputs::device_model;
use amp_core::cost::Calibration;
use amp_core::cost::{Estimate, Inputs};
use amp_core::plan::{ModelRecord, Plan};
use amp_core::search::RankedPlan;
use amp_export::{
    export, html_report, Engine, ExportError, ExportFile, ExportOptions, ReportInput,
    SensitivitySection,
};

use anyhow::{anyhow, Context, Result};
use clap::{Args, ValueEnum};

/// Real host names for launch files, by cluster node index.
#[derive(Args, Debug, Clone, Default)]
pub struct HostArgs {
    /// Host name of each cluster node, in node order, comma-separated
    /// (default: placeholders node0, node1, ...).
    #[arg(long, value_delimiter = ',', conflicts_with = "hostfile")]
    pub hosts: Vec<String>,
    /// File with one host name per cluster node, in node order: the first
    /// word of each line (so an MPI/DeepSpeed `host slots=N` hostfile works);
    /// `#` starts a comment.
    #[arg(long)]
    pub hostfile: Option<std::path::PathBuf>,
}

impl HostArgs {
    /// The host names given, empty for the placeholders. A name given
    /// twice is refused: one host would run two nodes' ranks, and the
    /// engines' hostfiles would list it twice.
    pub fn names(&self) -> Result<Vec<String>> {
        let (names, source) = match &self.hostfile {
            None => (
                self.hosts.iter().map(|h| h.trim().to_string()).collect(),
                "--hosts".to_string(),
            ),
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read --hostfile {}", path.display()))?;
                let names: Vec<String> = text
                    .lines()
                    .map(|l| l.split('#').next().unwrap_or(""))
                    .filter_map(|l| l.split_whitespace().next())
                    .map(str::to_string)
                    .collect();
                if names.is_empty() {
                    return Err(anyhow!("--hostfile {} names no hosts", path.display()));
                }
                (names, format!("--hostfile {}", path.display()))
            }
        };
        for (i, n) in names.iter().enumerate() {
            if let Some(j) = names[..i].iter().position(|m| m == n) {
                return Err(anyhow!(
                    "{source} names host `{n}` twice (for nodes {j} and {i}); give one host per cluster node, in node order"
                ));
            }
        }
        Ok(names)
    }
}

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

/// The file beside the launch files that holds the plan they launch.
pub const PLAN_FILE: &str = "plan.json";

/// The launch files of `plan` for `engine` (pure: nothing is written), and
/// the plan itself ([`PLAN_FILE`], with its training setup and the model it
/// was made for): what `amp
/// eval` prices and a runs file's `plan` names once the launch has run.
/// The launch runs what was priced: the plan's own training setup.
pub fn export_files(
    inputs: &Inputs,
    plan: &Plan,
    engine: EngineArg,
    hosts: &[String],
) -> std::result::Result<Vec<ExportFile>, ExportError> {
    let opts = ExportOptions {
        hosts: hosts.to_vec(),
        ..ExportOptions::default()
    };
    let mut files = export(plan, inputs.model, inputs.cluster, engine.engine(), &opts)?;
    // The plan, and the model it launches, so that `amp eval` and a runs
    // file read it back at the sequence length and kernels it was made for.
    #[derive(serde::Serialize)]
    struct PlanFile<'a> {
        #[serde(flatten)]
        plan: &'a Plan,
        made_for: ModelRecord,
    }
    let file = PlanFile {
        plan,
        made_for: ModelRecord::of(inputs.model),
    };
    let json = serde_json::to_string_pretty(&file).expect("a plan serializes") + "\n";
    files.push(ExportFile {
        path: PLAN_FILE.to_string(),
        contents: json,
    });
    Ok(files)
}

/// Writes `files` under `dir`; returns the paths written.
pub fn write_files(dir: &Path, files: Vec<ExportFile>) -> Result<Vec<String>> {
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

/// Writes the launch files of `plan` for `engine` under `dir`.
pub fn write_export(
    inputs: &Inputs,
    plan: &Plan,
    engine: EngineArg,
    dir: &Path,
    hosts: &[String],
) -> Result<Vec<String>> {
    let files = export_files(inputs, plan, engine, hosts)
        .map_err(|e| anyhow!("cannot export for {}: {e}", engine.engine().name()))?;
    write_files(dir, files)
}

/// Writes the HTML report. The timeline is the simulation that priced the
/// chosen plan (amp's model, under the plan's setup); the amp-paper model
/// simulates nothing, so its reports have none. `sensitivity`: `amp plan
/// --sensitivity`'s table and notes, when asked.
#[allow(clippy::too_many_arguments)]
pub fn write_report(
    inputs: &Inputs,
    calibration: Option<Calibration>,
    title: &str,
    ranked: &[RankedPlan],
    chosen: &Plan,
    estimate: Option<&Estimate>,
    sensitivity: Option<SensitivitySection>,
    path: &Path,
) -> Result<()> {
    let timeline = match calibration {
        Some(calibration) => Some(device_model(calibration).timeline(inputs, chosen)?),
        None => None,
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
        sensitivity,
    };
    let html = html_report(&input);
    std::fs::write(path, html).with_context(|| format!("cannot write {}", path.display()))
}

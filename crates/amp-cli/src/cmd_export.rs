//! `amp export PLAN.json --to ENGINE --out DIR`: launch files for a plan,
//! or (`--to sailor`) the plan as a Sailor `plan_config` file.

use std::io::Write;
use std::path::PathBuf;

use amp_core::cost::Inputs;
use anyhow::{bail, Result};
use clap::{Args, ValueEnum};

use crate::inputs::InputArgs;
use crate::output::{write_export, write_report, EngineArg, HostArgs};
use crate::setup_args::SetupArgs;

const GIB: f64 = (1u64 << 30) as f64;

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// The plan: `amp plan --json` output (see --rank), one of its entries,
    /// or a bare plan JSON.
    pub plan: PathBuf,
    #[command(flatten)]
    pub inputs: InputArgs,
    /// Which plan of an `amp plan --json` file (1 = its fastest).
    #[arg(long, default_value_t = 1)]
    pub rank: usize,
    /// Engine to write launch files for, or `sailor` for a Sailor
    /// plan_config file of the plan.
    #[arg(long, value_enum)]
    pub to: Option<ExportTo>,
    /// Directory for the launch files.
    #[arg(long, requires = "to")]
    pub out: Option<PathBuf>,
    /// `--to sailor` only: the zone written for every node (amp's clusters
    /// have none). Default: us-central1-a, the zone of Sailor's data.
    #[arg(long)]
    pub zone: Option<String>,
    #[command(flatten)]
    pub hosts: HostArgs,
    /// Also write a self-contained HTML report of the plan.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Export a plan even when it does not fit in memory.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub setup: SetupArgs,
}

/// What `--to` writes: an engine's launch files, or a Sailor plan file.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportTo {
    Megatron,
    Deepspeed,
    Torchtitan,
    /// Sailor's `plan_config` JSON (SOSP'25), for Sailor's tools.
    Sailor,
}

impl ExportTo {
    fn engine(self) -> Option<EngineArg> {
        match self {
            ExportTo::Megatron => Some(EngineArg::Megatron),
            ExportTo::Deepspeed => Some(EngineArg::Deepspeed),
            ExportTo::Torchtitan => Some(EngineArg::Torchtitan),
            ExportTo::Sailor => None,
        }
    }
}

/// The plan as a Sailor file under `dir` (named as Sailor's measured runs
/// are); GPU types given by a catalog alias are written under the catalog
/// name's Sailor name.
fn write_sailor(
    inputs: &Inputs,
    plan: &amp_core::plan::Plan,
    zone: &str,
    dir: &std::path::Path,
    err: &mut dyn Write,
) -> Result<Vec<String>> {
    let catalog = amp_catalog::catalog();
    let mut cluster = inputs.cluster.clone();
    for node in &mut cluster.nodes {
        if amp_data::sailor::sailor_gpu_name(&node.gpu_type).is_none() {
            if let Ok(g) = catalog.gpu(&node.gpu_type) {
                node.gpu_type = g.name.clone();
            }
        }
    }
    let text = amp_data::sailor::write_plan_config(plan, inputs.model, &cluster, zone)
        .map_err(|e| anyhow::anyhow!("cannot export for Sailor: {e}"))?;
    match amp_data::sailor::sailor_model(&inputs.model.name) {
        Some((name, _)) => writeln!(
            err,
            "note: a Sailor plan file does not name its model; Sailor calls this one `{name}` (amp eval FILE --sailor-data DIR --model {name})"
        )?,
        None => writeln!(
            err,
            "note: a Sailor plan file does not name its model, and Sailor's data has none for `{}`; its layer indices are amp's (embedding, blocks, head)",
            inputs.model.name
        )?,
    }
    let file = amp_export::ExportFile {
        path: amp_data::sailor::plan_config_file_name(plan),
        contents: text,
    };
    crate::output::write_files(dir, vec![file])
}

pub fn run(args: ExportArgs, out: &mut dyn Write, err: &mut dyn Write) -> Result<()> {
    if args.to.is_none() && args.report.is_none() {
        bail!("nothing to do: give --to ENGINE --out DIR, --report FILE, or both");
    }
    let sailor = args.to == Some(ExportTo::Sailor);
    if sailor && (!args.hosts.hosts.is_empty() || args.hosts.hostfile.is_some()) {
        bail!("--hosts and --hostfile name the hosts of launch files; a Sailor plan file has none, drop them");
    }
    if !sailor && args.zone.is_some() {
        bail!("--zone applies only to --to sailor");
    }
    let engine = args.to.and_then(ExportTo::engine);
    let emit = engine.map(EngineArg::engine);
    let (loaded, plan, warnings) =
        args.inputs
            .load_with_plan(&args.plan, args.rank, &args.setup, emit)?;
    for w in warnings {
        writeln!(err, "warning: {w}")?;
    }
    let inputs = Inputs {
        model: &loaded.model,
        cluster: &loaded.cluster,
        profile: &loaded.profile,
    };
    let cost_model = args.inputs.cost_model()?;
    let estimate = cost_model.evaluate(&inputs, &plan)?;
    if let Some((m, over)) = estimate.first_overflow() {
        let why = format!(
            "the plan does not fit in memory: node {} gpu {} (stage {}) needs {:.2} GiB more than its {:.2} GiB",
            m.device.node,
            m.device.gpu,
            m.stage,
            over / GIB,
            m.capacity_bytes.unwrap_or(0.0) / GIB
        );
        if !args.force {
            bail!("{why}; nothing written (--force to export it anyway)");
        }
        writeln!(err, "warning: {why}; exporting it as --force asks")?;
    }
    if let Some(to) = args.to {
        let Some(dir) = &args.out else {
            bail!("--to needs --out DIR for the files");
        };
        let files = match to.engine() {
            Some(engine) => {
                let files = write_export(&inputs, &plan, engine, dir, &args.hosts.names()?)?;
                for note in amp_export::export_notes(inputs.model, &plan, engine.engine()) {
                    writeln!(err, "warning: {note}")?;
                }
                files
            }
            None => {
                let zone = args.zone.as_deref();
                write_sailor(
                    &inputs,
                    &plan,
                    zone.unwrap_or(amp_data::sailor::DEFAULT_ZONE),
                    dir,
                    err,
                )?
            }
        };
        for f in files {
            writeln!(out, "{f}")?;
        }
    }
    if let Some(path) = &args.report {
        let title = format!("{} on {}", loaded.model.name, loaded.cluster.name);
        write_report(
            &inputs,
            args.inputs.calibration()?,
            &title,
            &[],
            &plan,
            Some(&estimate),
            None,
            path,
        )?;
        writeln!(out, "{}", path.display())?;
    }
    Ok(())
}

//! `amp export PLAN.json --to ENGINE --out DIR`: launch files for a plan.

use std::io::Write;
use std::path::PathBuf;

use amp_core::cost::Inputs;
use anyhow::{bail, Result};
use clap::Args;

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
    /// Engine to write launch files for.
    #[arg(long, value_enum)]
    pub to: Option<EngineArg>,
    /// Directory for the launch files.
    #[arg(long, requires = "to")]
    pub out: Option<PathBuf>,
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

pub fn run(args: ExportArgs, out: &mut dyn Write, err: &mut dyn Write) -> Result<()> {
    if args.to.is_none() && args.report.is_none() {
        bail!("nothing to do: give --to ENGINE --out DIR, --report FILE, or both");
    }
    let mut loaded = args.inputs.load()?;
    let emit = args.to.map(EngineArg::engine);
    let plan = args
        .inputs
        .load_plan(&mut loaded, &args.plan, args.rank, &args.setup, emit)?;
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
    if let Some(engine) = args.to {
        let Some(dir) = &args.out else {
            bail!("--to needs --out DIR for the files");
        };
        let files = write_export(&inputs, &plan, engine, dir, &args.hosts.names()?)?;
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
            path,
        )?;
        writeln!(out, "{}", path.display())?;
    }
    Ok(())
}

//! `amp export PLAN.json --to ENGINE --out DIR`: launch files for a plan.

use std::path::PathBuf;

use amp_core::cost::Inputs;
use anyhow::{bail, Result};
use clap::Args;

use crate::inputs::InputArgs;
use crate::output::{write_export, write_report, EngineArg};

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
    /// Also write a self-contained HTML report of the plan.
    #[arg(long)]
    pub report: Option<PathBuf>,
}

pub fn run(args: ExportArgs) -> Result<()> {
    if args.to.is_none() && args.report.is_none() {
        bail!("nothing to do: give --to ENGINE --out DIR, --report FILE, or both");
    }
    let mut loaded = args.inputs.load()?;
    let plan = args.inputs.load_plan(&mut loaded, &args.plan, args.rank)?;
    let inputs = Inputs {
        model: &loaded.model,
        cluster: &loaded.cluster,
        profile: &loaded.profile,
    };
    if let Some(engine) = args.to {
        let Some(dir) = &args.out else {
            bail!("--to needs --out DIR for the files");
        };
        let files = write_export(&inputs, &args.inputs, &plan, engine, dir)?;
        for f in files {
            println!("{f}");
        }
    }
    if let Some(path) = &args.report {
        let estimate = args.inputs.cost_model()?.evaluate(&inputs, &plan).ok();
        let title = format!("{} on {}", loaded.model.name, loaded.cluster.name);
        write_report(&inputs, &title, &[], &plan, estimate.as_ref(), path)?;
        println!("{}", path.display());
    }
    Ok(())
}

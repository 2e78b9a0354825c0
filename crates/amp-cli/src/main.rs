//! `amp`: find fast model-parallel training plans.
//!
//! This crate only parses arguments, reads files and prints; every decision
//! lives in `amp-core`.

mod cmd_eval;
mod cmd_export;
mod cmd_plan;
mod cmd_validate;
mod inputs;
mod output;
mod setup_args;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "amp",
    version,
    about = "Find the fastest way to parallelize training of a model on a cluster",
    long_about = "amp searches tensor-, pipeline- and data-parallel degrees, micro-batch size, device placement and the split of layers into stages, predicts each plan's iteration time and memory, and prints the fastest plans.\n\nStart with: amp plan --example het-cluster"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Search plans for a model on a cluster and print the fastest.
    Plan(cmd_plan::PlanArgs),
    /// Price one given plan: iteration time, breakdown, throughput, memory.
    Eval(cmd_eval::EvalArgs),
    /// Compare predictions with measured runs (AMP or Sailor artifact layout).
    Validate(cmd_validate::ValidateArgs),
    /// Write launch files (Megatron-LM, DeepSpeed, torchtitan) or an HTML
    /// report for a given plan.
    Export(cmd_export::ExportArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Plan(args) => cmd_plan::run(args),
        Command::Validate(args) => cmd_validate::run(args),
        Command::Eval(args) => cmd_eval::run(args),
        Command::Export(args) => cmd_export::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}

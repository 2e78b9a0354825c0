//! `amp`: find fast model-parallel training plans.
//!
//! This crate only parses arguments, reads files and prints; every decision
//! lives in `amp-core`. The binary (`main.rs`) is a thin wrapper around
//! [`run`], which takes the command line and the two output streams, so the
//! CLI can be driven from other programs (tests, language bindings) exactly
//! as from a shell.

mod calibration_arg;
mod cmd_eval;
mod cmd_export;
mod cmd_fit;
mod cmd_plan;
mod cmd_validate;
mod inputs;
mod output;
mod plan_sensitivity;
mod runs_file;
mod setup_args;

use std::ffi::OsString;
use std::io::Write;

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
    /// Fit the amp cost model's constants to measured runs, and report each
    /// set's error with neutral, in-sample and leave-one-set-out constants.
    Fit(cmd_fit::FitArgs),
    /// Write launch files (Megatron-LM, DeepSpeed, torchtitan) or an HTML
    /// report for a given plan.
    Export(cmd_export::ExportArgs),
}

/// Exit status of a run that succeeded.
pub const EXIT_OK: i32 = 0;
/// Exit status of a run that failed (bad input, no plan found, ...).
pub const EXIT_FAILURE: i32 = 1;
/// Exit status when the reader of standard output went away early (`amp
/// plan | head -1`): 128 + SIGPIPE, what a shell reports for coreutils
/// killed by the signal. Nothing is printed in that case.
pub const EXIT_BROKEN_PIPE: i32 = 141;

/// Runs amp on a command line, as the `amp` binary does.
///
/// `args` is the command line including the program name (`argv[0]`).
/// What amp prints goes to `out` (standard output) and `err` (standard
/// error); the return value is the exit status: 0 on success, 1 on an
/// error (a message on `err`), clap's own status for usage errors (2) and
/// for `--help`/`--version` (0, text on `out`), and [`EXIT_BROKEN_PIPE`]
/// when writing to `out` fails because its reader closed it.
pub fn run<I, T>(args: I, out: &mut dyn Write, err: &mut dyn Write) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let text = e.render().to_string();
            let write = |w: &mut dyn Write| w.write_all(text.as_bytes()).and_then(|()| w.flush());
            let written = if e.use_stderr() {
                write(err)
            } else {
                write(out)
            };
            return match written {
                Ok(()) => e.exit_code(),
                Err(io) if io.kind() == std::io::ErrorKind::BrokenPipe => EXIT_BROKEN_PIPE,
                Err(io) => report_error(
                    &anyhow::Error::from(io).context("cannot write the output"),
                    err,
                ),
            };
        }
    };
    let mut watched = Watched {
        inner: out,
        failure: None,
    };
    let out = &mut watched;
    let result = match cli.command {
        Command::Plan(args) => cmd_plan::run(args, out, err),
        Command::Validate(args) => cmd_validate::run(args, out, err),
        Command::Fit(args) => cmd_fit::run(args, out, err),
        Command::Eval(args) => cmd_eval::run(args, out, err),
        Command::Export(args) => cmd_export::run(args, out, err),
    };
    // Output is buffered by the caller's writer: a failure may surface only
    // here.
    let result = result.and_then(|()| out.flush().map_err(anyhow::Error::from));
    match (result, watched.failure) {
        (Ok(()), _) => EXIT_OK,
        (Err(_), Some(std::io::ErrorKind::BrokenPipe)) => EXIT_BROKEN_PIPE,
        (Err(e), Some(_)) => {
            // The output could not be written (a full disk, say): one clear
            // line, not the bare OS error.
            report_error(&e.context("cannot write the output"), err)
        }
        (Err(e), None) => report_error(&e, err),
    }
}

/// A writer that remembers the first error of the writer it wraps, so that
/// an error writing the output is told apart from one reading the input.
struct Watched<'a> {
    inner: &'a mut dyn Write,
    failure: Option<std::io::ErrorKind>,
}

impl Write for Watched<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let r = self.inner.write(buf);
        if let Err(e) = &r {
            self.failure.get_or_insert(e.kind());
        }
        r
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let r = self.inner.flush();
        if let Err(e) = &r {
            self.failure.get_or_insert(e.kind());
        }
        r
    }
}

/// Prints `e` with its causes on `err` and returns the exit status; a
/// closed standard output ends amp quietly.
fn report_error(e: &anyhow::Error, err: &mut dyn Write) -> i32 {
    if is_broken_pipe(e) {
        return EXIT_BROKEN_PIPE;
    }
    // Errors writing the message itself have nowhere to go.
    let _ = writeln!(err, "error: {e}");
    for cause in e.chain().skip(1) {
        let _ = writeln!(err, "  caused by: {cause}");
    }
    let _ = err.flush();
    EXIT_FAILURE
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

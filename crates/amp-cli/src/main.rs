//! The `amp` binary: [`amp_cli::run`] on the process's command line and
//! standard streams.

use std::process::ExitCode;

// The search allocates many small, short-lived vectors (plans, network
// flows, simulation tables) from several threads; mimalloc serves that
// pattern faster than the system allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut err = std::io::stderr();
    let status = amp_cli::run(std::env::args_os(), &mut out, &mut err);
    ExitCode::from(u8::try_from(status).unwrap_or(1))
}

//! `sse-bench`: the benchmark tool of issue 6.
//!
//! - `origin`: a numbered, timestamped, padded SSE source (or nchan publisher).
//! - `load`: many SSE subscribers on one core, latency histogram, gap/dup checks.
//! - `floor`: the cost of a bare `write()` per socket per event on this machine.
//! - `run`: the gateway (and nchan) pinned to one core, load on the other, one table.
//!
//! `bench/run.sh` builds the release binaries and calls `run`. Nothing here is
//! timed in `cargo test`; the tests check the counting, not the clock.

mod floor;
mod load;
mod nchan;
mod origin;
mod procfs;
mod run;
mod wire;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(version, about = "Benchmark tool for sse-gateway")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Serve numbered, timestamped, padded events at a set rate (or POST them to nchan).
    Origin(origin::Args),
    /// Open N subscribers and print a one-line JSON summary of what they received.
    Load(load::Args),
    /// Measure CPU per bare write of one message to each of N loopback sockets.
    Floor(floor::Args),
    /// The floor probe's reading side (started by `floor`).
    #[command(hide = true)]
    FloorReader(floor::ReaderArgs),
    /// Run the scenarios against the gateway (and nchan) and print the table.
    Run(run::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Origin(args) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(origin::run(args))),
        Cmd::Load(args) => load::run(args),
        Cmd::Floor(args) => floor::run(args),
        Cmd::FloorReader(args) => floor::read(args),
        Cmd::Run(args) => run::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

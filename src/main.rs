//! The `rewind` binary: the operator and its tools.
#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};

/// Rewind makes every release of a Deployment reversible.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the Release and RollbackPolicy CRDs as YAML (pipe to `kubectl apply -f -`).
    Crds,
}

fn main() {
    match Cli::parse().command {
        Command::Crds => print!("{}", rewind::api::crds_yaml()),
    }
}

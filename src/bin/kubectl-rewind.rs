//! `kubectl-rewind`: the kubectl plugin (`kubectl rewind …` once it is on PATH). The commands
//! live in the library (`rewind::cli`); see docs/cli.md.
#![forbid(unsafe_code)]

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    rewind::cli::main().await
}

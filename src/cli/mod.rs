//! `kubectl rewind`: the kubectl plugin. Reads Releases and their pods with the user's own
//! kubeconfig, and asks Rewind for things by annotating the Release (the operator acts; the
//! plugin never changes a Deployment). `docs/cli.md` is the reference.

mod commands;
mod conn;
mod model;
mod render;
mod request;
mod suggest;

use std::process::ExitCode;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

use crate::api::duration::Duration;
pub use conn::Failure;

/// Roll a Deployment back to a known-good release, and see what Rewind did and why.
#[derive(Parser, Debug)]
#[command(
    name = "kubectl-rewind",
    bin_name = "kubectl rewind",
    version,
    about,
    long_about = "Roll a Deployment back to a known-good release, and see what Rewind did and why.\n\nReads Releases (rewind.dev) with your kubeconfig, as kubectl does. Requests (rollback, retry, pause) are annotations on the Release that the Rewind operator acts on; the plugin never edits a Deployment or a Release's spec.",
    after_help = "Examples:\n  kubectl rewind list -A\n  kubectl rewind status shop-api -n shop --watch\n  kubectl rewind rollback shop-api --to 1.3.2 --reason 'checkout errors' --wait\n  kubectl rewind history shop-api --revision 4\n\nExit codes: 0 done, 1 failed or refused, 2 usage error, 3 timed out or not acknowledged."
)]
pub struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

/// Flags every command takes, as kubectl spells them.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Global options")]
pub struct Global {
    /// Path to the kubeconfig file (default: $KUBECONFIG, which may list several files, then
    /// ~/.kube/config).
    #[arg(long, global = true, value_name = "PATH")]
    kubeconfig: Option<std::path::PathBuf>,
    /// The kubeconfig context to use (default: the current context).
    #[arg(long, global = true, value_name = "NAME")]
    context: Option<String>,
    /// The namespace (default: the context's namespace, else "default").
    #[arg(short = 'n', long, global = true, value_name = "NS")]
    namespace: Option<String>,
    /// Longest a single request to the API server may take (30s, 1m).
    #[arg(long, global = true, default_value = "30s", value_name = "DUR")]
    request_timeout: Duration,
    /// Colour: on a terminal only (auto), always or never. NO_COLOR set means never.
    #[arg(long, global = true, value_enum, default_value_t = Color::Auto, hide_possible_values = true)]
    color: Color,
}

/// When to colour.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Color {
    /// On a terminal, unless NO_COLOR is set.
    Auto,
    /// Always.
    Always,
    /// Never.
    Never,
}

/// Output format of the read commands.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Output {
    /// A table or text for a person.
    #[default]
    Table,
    /// JSON (stable field names, see docs/cli.md).
    Json,
    /// YAML (the same fields as JSON).
    Yaml,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// List Releases: target, desired and live version, phase, readiness, last rollback.
    #[command(
        after_help = "Examples:\n  kubectl rewind list\n  kubectl rewind list -A\n  kubectl rewind list -n shop -o json"
    )]
    List {
        /// Releases of every namespace.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        #[command(flatten)]
        format: Format,
    },
    /// Show a Release's revisions, newest first: digests, schema, commit, outcome, failure.
    #[command(
        after_help = "Examples:\n  kubectl rewind history shop-api\n  kubectl rewind history shop-api --revision 4\n  kubectl rewind history shop-api -o yaml"
    )]
    History {
        /// The Release.
        release: String,
        /// Show this revision in full.
        #[arg(long, value_name = "N")]
        revision: Option<i64>,
        #[command(flatten)]
        format: Format,
    },
    /// Show what runs and what is wanted, the rollback's timeline, the pods, and what to do next.
    #[command(
        after_help = "Examples:\n  kubectl rewind status shop-api\n  kubectl rewind status shop-api --watch\n  kubectl rewind status shop-api --watch --timeout 10m\n  kubectl rewind status shop-api -o json"
    )]
    Status {
        /// The Release.
        release: String,
        /// Redraw on every change of the Release or its pods, until interrupted or --timeout.
        #[arg(short = 'w', long)]
        watch: bool,
        /// With --watch: stop after this long (exit 3).
        #[arg(long, value_name = "DUR")]
        timeout: Option<Duration>,
        #[command(flatten)]
        format: Format,
    },
    /// Ask Rewind to roll a Release back (annotation rewind.dev/rollback-to on the Release).
    #[command(
        long_about = "Ask Rewind to roll a Release back.\n\nSets rewind.dev/rollback-to (with rewind.dev/requested-by: you, a new rewind.dev/request-id, and rewind.dev/reason) on the Release with field manager kubectl-rewind, then waits up to 15 s for Rewind to accept or refuse it. The operator does the rollback: migration-down Jobs when the schema changes, then the target's pinned digests.",
        after_help = "Examples:\n  kubectl rewind rollback shop-api                      # to the last healthy revision before the live one\n  kubectl rewind rollback shop-api --to 1.3.2 --reason 'checkout errors' --wait\n  kubectl rewind rollback shop-api --to 1.3.2 --dry-run\n  kubectl rewind rollback shop-api --to 1.2.0 --allow-irreversible\n\nExit codes: 0 succeeded (without --wait: accepted), 1 failed or refused, 2 usage error, 3 timed out or not acknowledged."
    )]
    Rollback(RollbackArgs),
    /// Deploy a version blocked after a rollback again, or go on with a halted rollback.
    #[command(after_help = "Examples:\n  kubectl rewind retry shop-api")]
    Retry {
        /// The Release.
        release: String,
    },
    /// Stop Rewind from deploying or rolling back a Release (annotation rewind.dev/paused).
    #[command(
        after_help = "Examples:\n  kubectl rewind pause shop-api --reason 'INC-42: investigating'"
    )]
    Pause {
        /// The Release.
        release: String,
        /// Why (kept in the annotation, shown by status).
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
    },
    /// Let Rewind act on a Release again (removes rewind.dev/paused).
    #[command(after_help = "Examples:\n  kubectl rewind resume shop-api")]
    Resume {
        /// The Release.
        release: String,
    },
    /// Print a shell completion script.
    #[command(
        after_help = "Examples:\n  source <(kubectl-rewind completion bash)   # completes kubectl-rewind, not kubectl rewind\n  kubectl-rewind completion zsh > \"${fpath[1]}/_kubectl-rewind\"\n  kubectl-rewind completion fish > ~/.config/fish/completions/kubectl-rewind.fish"
    )]
    Completion {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// `rollback`'s arguments.
#[derive(Args, Debug, Clone)]
pub struct RollbackArgs {
    /// The Release.
    release: String,
    /// The version to roll back to, or "previous": the last healthy revision before the live one.
    #[arg(long, default_value = "previous", value_name = "VERSION")]
    to: String,
    /// Why (recorded on the rollback and in its Events).
    #[arg(long, value_name = "TEXT")]
    reason: Option<String>,
    /// Allow crossing the irreversible migrations this rollback would cross (named in the
    /// annotation rewind.dev/allow-irreversible).
    #[arg(long)]
    allow_irreversible: bool,
    /// Follow the rollback phase by phase until it ends.
    #[arg(long)]
    wait: bool,
    /// With --wait: give up after this long (exit 3).
    #[arg(long, default_value = "10m", value_name = "DUR")]
    timeout: Duration,
    /// Print what the rollback would do and change nothing.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    format: Format,
}

/// `-o`, on every command that prints data.
#[derive(Args, Debug, Clone, Copy)]
pub struct Format {
    /// Output format: table, json or yaml (docs/cli.md lists the fields).
    #[arg(
        short = 'o',
        long,
        value_enum,
        default_value_t,
        hide_possible_values = true
    )]
    output: Output,
}

/// Parse the arguments, run the command, and return its exit code.
pub async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(f) => {
            eprintln!("error: {}", f.message);
            for hint in &f.hints {
                eprintln!("  {hint}");
            }
            ExitCode::from(f.code)
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode, Failure> {
    let g = cli.global;
    if let Command::Completion { shell } = cli.command {
        let mut cmd = Cli::command();
        clap_complete::generate(shell, &mut cmd, "kubectl-rewind", &mut std::io::stdout());
        return Ok(ExitCode::SUCCESS);
    }
    let conn = conn::Conn::new(&g).await?;
    match cli.command {
        Command::List {
            all_namespaces,
            format,
        } => commands::list(&conn, all_namespaces, format.output).await,
        Command::History {
            release,
            revision,
            format,
        } => commands::history(&conn, &release, revision, format.output).await,
        Command::Status {
            release,
            watch,
            timeout,
            format,
        } => {
            let timeout = timeout.map(|t| t.get());
            commands::status(&conn, &release, watch, timeout, format.output).await
        }
        Command::Rollback(args) => request::rollback(&conn, args).await,
        Command::Retry { release } => request::retry(&conn, &release).await,
        Command::Pause { release, reason } => request::pause(&conn, &release, reason).await,
        Command::Resume { release } => request::resume(&conn, &release).await,
        // Printed above, before connecting.
        Command::Completion { .. } => Ok(ExitCode::SUCCESS),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        super::Cli::command().debug_assert();
    }

    #[test]
    fn completion_scripts_know_every_command() {
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ] {
            let mut out = Vec::new();
            clap_complete::generate(
                shell,
                &mut super::Cli::command(),
                "kubectl-rewind",
                &mut out,
            );
            let script = String::from_utf8(out).unwrap();
            for command in [
                "list", "history", "status", "rollback", "retry", "pause", "resume",
            ] {
                assert!(script.contains(command), "{shell}: no {command}");
            }
            assert!(
                script.contains("allow-irreversible"),
                "{shell}: flags missing"
            );
        }
    }

    #[test]
    fn usage_errors_exit_2_and_rollback_defaults_to_previous() {
        use clap::Parser;
        let e = super::Cli::try_parse_from(["kubectl-rewind", "rollback"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let e =
            super::Cli::try_parse_from(["kubectl-rewind", "status", "a", "-o", "xml"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let cli =
            super::Cli::try_parse_from(["kubectl-rewind", "rollback", "shop", "-n", "x"]).unwrap();
        match cli.command {
            super::Command::Rollback(a) => {
                assert_eq!(a.to, "previous");
                assert!(!a.wait && !a.dry_run);
            }
            other => panic!("parsed as {other:?}"),
        }
        assert_eq!(cli.global.namespace.as_deref(), Some("x"));
    }
}

//! The `rewind` binary: the operator and its tools.
#![forbid(unsafe_code)]

use std::{
    net::SocketAddr,
    process::ExitCode,
    sync::{Arc, atomic::AtomicBool},
};

use clap::{Parser, Subcommand};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{Api, Client, CustomResourceExt};
use rewind::{
    api::{Release, RollbackPolicy},
    controller::{self, Options},
    metrics::Metrics,
};

/// Rewind makes every release of a Deployment reversible: it pins releases to image digests,
/// keeps their history, and rolls back to the last healthy revision when new pods fail.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the operator (uses KUBECONFIG, or the in-cluster service account).
    Run(RunArgs),
    /// Print the Release and RollbackPolicy CRDs as YAML (pipe to `kubectl apply -f -`).
    Crds,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "REWIND_NAMESPACE")]
    namespace: Option<String>,
    /// Address of /metrics, /healthz and /readyz (port 0 picks a free port).
    #[arg(long, env = "REWIND_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// Releases reconciled at once.
    #[arg(long, env = "REWIND_CONCURRENCY", default_value_t = 16)]
    concurrency: u16,
    /// Longest a registry may take to answer a tag lookup (Go duration: 10s, 1m).
    #[arg(long, env = "REWIND_REGISTRY_TIMEOUT", default_value = "10s")]
    registry_timeout: rewind::api::duration::Duration,
    /// Registries (host:port) reached over plain HTTP instead of HTTPS; repeat or separate
    /// with commas.
    #[arg(
        long = "insecure-registry",
        env = "REWIND_INSECURE_REGISTRIES",
        value_delimiter = ','
    )]
    insecure_registries: Vec<String>,
    /// Log format.
    #[arg(long, env = "REWIND_LOG_FORMAT", value_parser = ["text", "json"], default_value = "text")]
    log_format: String,
}

#[tokio::main]
async fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Crds => {
            print!("{}", rewind::api::crds_yaml());
            ExitCode::SUCCESS
        }
        Command::Run(args) => run(args).await,
    }
}

async fn run(args: RunArgs) -> ExitCode {
    rewind::telemetry::init(args.log_format == "json");
    let client = match Client::try_default().await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "no Kubernetes client: set KUBECONFIG or run in a cluster");
            return ExitCode::from(2);
        }
    };
    if let Err(msg) = check_crds(&client).await {
        tracing::error!("{msg}");
        return ExitCode::from(3);
    }
    let metrics = Metrics::default();
    let ready = Arc::new(AtomicBool::new(false));
    let health = rewind::http::Health {
        metrics: metrics.clone(),
        ready: ready.clone(),
    };
    match rewind::http::serve(args.metrics_addr, health).await {
        Ok(addr) => tracing::info!(%addr, "serving /metrics, /healthz, /readyz"),
        Err(e) => {
            tracing::error!(addr = %args.metrics_addr, error = %e, "cannot serve metrics (use --metrics-addr)");
            return ExitCode::from(2);
        }
    }
    tracing::info!(
        namespace = args.namespace.as_deref().unwrap_or("<all>"),
        version = env!("CARGO_PKG_VERSION"),
        "rewind starting"
    );
    #[cfg(feature = "test-faults")]
    let faults = test_faults();
    let registry = rewind::registry::ResolverConfig {
        timeout: args.registry_timeout.get(),
        insecure: args.insecure_registries,
        ..Default::default()
    };
    let options = Options {
        namespace: args.namespace,
        concurrency: args.concurrency,
        #[cfg(feature = "test-faults")]
        faults,
        registry,
    };
    controller::run(client, options, metrics, ready).await;
    ExitCode::SUCCESS
}

/// The test faults armed by the environment, logged so a test can see that its binary has
/// them (only a build with the `test-faults` feature reads the variable at all).
#[cfg(feature = "test-faults")]
fn test_faults() -> controller::Faults {
    let faults = controller::Faults {
        exit_after_phase: std::env::var("REWIND_TEST_EXIT_AFTER_PHASE")
            .ok()
            .filter(|s| !s.is_empty()),
        exit_after_restore: std::env::var("REWIND_TEST_EXIT_AFTER_RESTORE").is_ok_and(|v| v == "1"),
    };
    if let Some(phase) = &faults.exit_after_phase {
        tracing::warn!(
            exit_after_phase = %phase,
            "test fault armed: REWIND_TEST_EXIT_AFTER_PHASE"
        );
    }
    if faults.exit_after_restore {
        tracing::warn!("test fault armed: REWIND_TEST_EXIT_AFTER_RESTORE");
    }
    faults
}

/// The CRDs must be installed before the operator can watch them.
async fn check_crds(client: &Client) -> Result<(), String> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for name in [Release::crd_name(), RollbackPolicy::crd_name()] {
        match crds.get_opt(name).await {
            Ok(Some(_)) => {}
            Ok(None) => {
                return Err(format!(
                    "CRD {name} is not installed: run `rewind crds | kubectl apply -f -` (or `kubectl apply -f crds/`) first"
                ));
            }
            Err(e) => return Err(format!("cannot check CRD {name}: {e}")),
        }
    }
    Ok(())
}

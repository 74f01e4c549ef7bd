//! The `rewind` binary: the operator and its tools.
#![forbid(unsafe_code)]

use std::{net::SocketAddr, process::ExitCode, sync::Arc};

use clap::{Parser, Subcommand};
use kube::{Api, Client, CustomResourceExt, api::ListParams};
use rewind::{
    api::{Release, RollbackPolicy},
    controller::{self, CacheSync, Options},
    leader::Leadership,
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
    Run(Box<RunArgs>),
    /// Print the Release and RollbackPolicy CRDs as YAML (pipe to `kubectl apply -f -`).
    Crds,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Watch only these namespaces: repeat the flag or separate with commas (default: all
    /// namespaces). Rewind then needs access to these namespaces only.
    #[arg(long = "namespace", env = "REWIND_NAMESPACE", value_delimiter = ',')]
    namespaces: Vec<String>,
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
    /// Read the imagePullSecrets of the target's pods (and of their ServiceAccount) to look up
    /// tags in private registries; with false, lookups are anonymous and Rewind needs no
    /// access to Secrets or ServiceAccounts.
    #[arg(long, env = "REWIND_READ_PULL_SECRETS", default_value_t = true, action = clap::ArgAction::Set)]
    read_pull_secrets: bool,
    #[command(flatten)]
    election: ElectionArgs,
}

/// Leader election: run several replicas, one acts.
#[derive(clap::Args)]
#[command(next_help_heading = "Leader election")]
struct ElectionArgs {
    /// Elect one active replica on a coordination.k8s.io Lease; the others keep their caches
    /// warm and write nothing until they take over.
    #[arg(long, env = "REWIND_LEADER_ELECT")]
    leader_elect: bool,
    /// Name of the Lease.
    #[arg(long, env = "REWIND_LEASE_NAME", default_value = "rewind-leader")]
    lease_name: String,
    /// Namespace of the Lease (in a pod: its own, from POD_NAMESPACE; else the watched
    /// namespace when there is exactly one).
    #[arg(long, env = "POD_NAMESPACE")]
    lease_namespace: Option<String>,
    /// This replica's name in the Lease (in a pod: its name, from POD_NAME; else host-pid).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// How long a leader's last renewal holds off the other replicas.
    #[arg(long, default_value = "15s")]
    lease_duration: rewind::api::duration::Duration,
    /// How long after its last successful renewal the leader stops writing (less than the
    /// lease duration, so it has stopped before another replica may start).
    #[arg(long, default_value = "10s")]
    lease_renew_deadline: rewind::api::duration::Duration,
    /// How often the leader renews and the others try to take over.
    #[arg(long, default_value = "2s")]
    lease_retry_period: rewind::api::duration::Duration,
}

#[tokio::main]
async fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Crds => {
            print!("{}", rewind::api::crds_yaml());
            ExitCode::SUCCESS
        }
        Command::Run(args) => run(*args).await,
    }
}

async fn run(mut args: RunArgs) -> ExitCode {
    rewind::telemetry::init(args.log_format == "json");
    let identity = args
        .election
        .identity
        .clone()
        .unwrap_or_else(default_identity);
    // The same namespace twice would run two controllers over it.
    args.namespaces.retain(|n| !n.is_empty());
    args.namespaces.sort();
    args.namespaces.dedup();
    if args
        .election
        .lease_namespace
        .as_deref()
        .is_none_or(str::is_empty)
        && let [only] = args.namespaces.as_slice()
    {
        args.election.lease_namespace = Some(only.clone());
    }
    let leader = match leadership(&args.election, &identity) {
        Ok(l) => l,
        Err(msg) => {
            tracing::error!("{msg}");
            return ExitCode::from(2);
        }
    };
    let mut config = match kube::Config::infer().await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "no Kubernetes client: set KUBECONFIG or run in a cluster");
            return ExitCode::from(2);
        }
    };
    // Named in the API server's audit log: which replica sent what.
    let agent = format!("rewind/{} ({identity})", env!("CARGO_PKG_VERSION"));
    if let Ok(v) = http::HeaderValue::from_str(&agent) {
        config.headers.push((http::header::USER_AGENT, v));
    }
    // Two clients: the Lease is written through the plain one; everything else goes through
    // the fence, which refuses writes while this replica does not lead.
    let built = kube::client::ClientBuilder::try_from(config.clone())
        .and_then(|b| Ok((b, Client::try_from(config)?)));
    let (client, lease_client) = match built {
        Ok((builder, plain)) => (builder.with_layer(&leader.fence()).build(), plain),
        Err(e) => {
            tracing::error!(error = %e, "cannot build a Kubernetes client");
            return ExitCode::from(2);
        }
    };
    if let Err(msg) = check_crds(&client, &args.namespaces).await {
        tracing::error!("{msg}");
        return ExitCode::from(3);
    }
    let metrics = Metrics::default();
    let scopes: Vec<Option<String>> = if args.namespaces.is_empty() {
        vec![None]
    } else {
        args.namespaces.iter().cloned().map(Some).collect()
    };
    let ready: Vec<Arc<CacheSync>> = scopes
        .iter()
        .map(|s| match s {
            Some(ns) => CacheSync::new(format!("namespace {ns}")),
            None => CacheSync::new("all namespaces"),
        })
        .collect();
    let health = rewind::http::Health {
        metrics: metrics.clone(),
        ready: ready.clone(),
        leader: leader.clone(),
    };
    match rewind::http::serve(args.metrics_addr, health).await {
        Ok(addr) => tracing::info!(%addr, "serving /metrics, /healthz, /readyz"),
        Err(e) => {
            tracing::error!(addr = %args.metrics_addr, error = %e, "cannot serve metrics (use --metrics-addr)");
            return ExitCode::from(2);
        }
    }
    tracing::info!(
        namespaces = %if args.namespaces.is_empty() { "<all>".to_owned() } else { args.namespaces.join(",") },
        version = env!("CARGO_PKG_VERSION"),
        identity = %identity,
        leader_election = args.election.leader_elect,
        "rewind starting"
    );
    let (stop_election, stopped) = tokio::sync::watch::channel(false);
    let election = args.election.leader_elect.then(|| {
        let e = &args.election;
        let namespace = e.lease_namespace.clone().unwrap_or_default();
        tracing::info!(lease = %format!("{namespace}/{}", e.lease_name), "leader election: standby until this replica holds the lease");
        tokio::spawn(
            rewind::leader::Elector::new(
                lease_client,
                &namespace,
                &e.lease_name,
                timings(e),
                leader.clone(),
            )
            .run(stopped),
        )
    });
    #[cfg(feature = "test-faults")]
    let faults = test_faults();
    let registry = rewind::registry::ResolverConfig {
        timeout: args.registry_timeout.get(),
        insecure: args.insecure_registries,
        ..Default::default()
    };
    // One controller per watched namespace (or one for all): each has its own caches; they
    // share the metrics, the leadership and the process.
    let controllers = scopes.into_iter().zip(ready).map(|(namespace, ready)| {
        let options = Options {
            namespace,
            concurrency: args.concurrency,
            #[cfg(feature = "test-faults")]
            faults: faults.clone(),
            registry: registry.clone(),
            leader: leader.clone(),
            read_pull_secrets: args.read_pull_secrets,
        };
        controller::run(client.clone(), options, metrics.clone(), ready)
    });
    // They return on SIGTERM or SIGINT once the reconciles in flight have finished their
    // step; only then is the Lease given up, so nothing is half-written by this replica
    // while another starts.
    futures::future::join_all(controllers).await;
    if let Some(election) = election {
        let _ = stop_election.send(true);
        // The loop stops at once and the release is bounded by the retry period.
        let bound = timings(&args.election).retry_period + std::time::Duration::from_secs(1);
        let _ = tokio::time::timeout(bound, election).await;
    }
    tracing::info!("rewind stopped");
    ExitCode::SUCCESS
}

/// The leadership this replica runs with: always leading without election.
fn leadership(e: &ElectionArgs, identity: &str) -> Result<Leadership, String> {
    if !e.leader_elect {
        return Ok(Leadership::always());
    }
    timings(e).check()?;
    let Some(ns) = e.lease_namespace.as_deref().filter(|n| !n.is_empty()) else {
        return Err(
            "--leader-elect needs the Lease's namespace: --lease-namespace, or POD_NAMESPACE from the downward API (or exactly one --namespace)".into(),
        );
    };
    Ok(Leadership::candidate(
        format!("{ns}/{}", e.lease_name),
        identity.to_owned(),
    ))
}

fn timings(e: &ElectionArgs) -> rewind::leader::Timings {
    rewind::leader::Timings {
        lease_duration: e.lease_duration.get(),
        renew_deadline: e.lease_renew_deadline.get(),
        retry_period: e.lease_retry_period.get(),
    }
}

/// host-pid: unique per process on a machine, readable in `kubectl get lease`.
fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "rewind".into());
    format!("{host}-{}", std::process::id())
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
        pause_after_phase: std::env::var("REWIND_TEST_PAUSE_AFTER_PHASE")
            .ok()
            .and_then(|v| {
                let (phase, pause) = v.split_once(':')?;
                let pause: rewind::api::duration::Duration = pause.parse().ok()?;
                Some((phase.to_owned(), pause.get()))
            }),
        pause_after_job: std::env::var("REWIND_TEST_PAUSE_AFTER_JOB")
            .ok()
            .and_then(|v| v.parse::<rewind::api::duration::Duration>().ok())
            .map(|d| d.get()),
    };
    if let Some(pause) = &faults.pause_after_job {
        tracing::warn!(?pause, "test fault armed: REWIND_TEST_PAUSE_AFTER_JOB");
    }
    if let Some((phase, pause)) = &faults.pause_after_phase {
        tracing::warn!(%phase, ?pause, "test fault armed: REWIND_TEST_PAUSE_AFTER_PHASE");
    }
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

/// The CRDs must be installed before the operator can watch them. Asked by listing Releases
/// where Rewind watches (a 404 means the kind is unknown), so no access to CRDs is needed.
async fn check_crds(client: &Client, namespaces: &[String]) -> Result<(), String> {
    let one = ListParams::default().limit(1);
    let scopes: Vec<Option<&str>> = if namespaces.is_empty() {
        vec![None]
    } else {
        namespaces.iter().map(|n| Some(n.as_str())).collect()
    };
    for ns in scopes {
        let (releases, policies): (Api<Release>, Api<RollbackPolicy>) = match ns {
            Some(ns) => (
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client.clone(), ns),
            ),
            None => (Api::all(client.clone()), Api::all(client.clone())),
        };
        let answers = [
            (
                Release::crd_name(),
                releases.list_metadata(&one).await.err(),
            ),
            (
                RollbackPolicy::crd_name(),
                policies.list_metadata(&one).await.err(),
            ),
        ];
        for (name, error) in answers {
            match error {
                None => {}
                Some(kube::Error::Api(s)) if s.code == 404 => {
                    return Err(format!(
                        "CRD {name} is not installed: run `kubectl apply --server-side -f crds/` (or `rewind crds | kubectl apply --server-side -f -`) first"
                    ));
                }
                Some(e) => {
                    let scope =
                        ns.map_or("all namespaces".to_owned(), |n| format!("namespace {n}"));
                    return Err(format!("cannot list {name} in {scope}: {e}"));
                }
            }
        }
    }
    Ok(())
}

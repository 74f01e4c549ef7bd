//! The IO shell around `decide::plan`: watches and caches, one reconcile per Release that
//! gathers observations, asks for a plan and carries it out (status, then Events, then the
//! Deployment), and the error policy.

mod deploy;
mod trim;

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use futures::{StreamExt, future};
use jiff::Timestamp;
use k8s_openapi::api::{
    apps::v1::{Deployment, ReplicaSet},
    core::v1::{Pod, Secret, ServiceAccount},
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{ListParams, Patch, PatchParams},
    runtime::{
        Controller, WatchStreamExt,
        controller::Action,
        events::{Event as KubeEvent, EventType, Recorder, Reporter},
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};
use prometheus_client::metrics::histogram::Histogram;
use serde_json::json;
use tracing::{Instrument, field, info, info_span, warn};

use crate::{
    api::{Release, ReleaseStatus, RollbackPolicy},
    decide::{
        self, EventKind, Input, Plan,
        views::{Observed, PodView, ReplicaSetView, Workload, owned_pods},
    },
    labels,
    metrics::{ErrorLabels, Metrics, RollbackLabels},
    reasons,
    registry::{Credentials, ResolveError, Resolver},
};

/// Errors of one reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Writing the Release status failed.
    #[error("writing status of Release {0}: {1}")]
    Status(String, #[source] kube::Error),
    /// Applying the Deployment failed.
    #[error("applying Deployment {0}: {1}")]
    Apply(String, #[source] kube::Error),
    /// Listing the pods a Deployment ran before adoption failed.
    #[error("listing pods of Deployment {0}: {1}")]
    ListPods(String, #[source] kube::Error),
    /// An object without a namespace (cannot happen for namespaced kinds).
    #[error("{0} has no namespace")]
    NoNamespace(String),
}

impl Error {
    /// Low-cardinality label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Status(..) if self.is_conflict() => "status_conflict",
            Error::Status(..) => "status",
            Error::Apply(..) => "apply",
            Error::ListPods(..) => "list_pods",
            Error::NoNamespace(..) => "no_namespace",
        }
    }

    fn is_conflict(&self) -> bool {
        matches!(self, Error::Status(_, kube::Error::Api(s)) | Error::Apply(_, kube::Error::Api(s)) if s.code == 409)
    }

    fn is_throttled(&self) -> bool {
        matches!(self, Error::Status(_, kube::Error::Api(s)) | Error::Apply(_, kube::Error::Api(s)) if s.code == 429)
    }

    /// How this error is shown on its Release, or None when it is not: a conflict only means
    /// our cache was behind (retried at once, not a person's business), and an object without
    /// a namespace cannot have Events (and cannot happen for a namespaced kind).
    pub fn report(&self) -> Option<ErrorReport> {
        if self.is_conflict() {
            return None;
        }
        let (reason, what, source) = match self {
            Error::Status(release, e) => (
                reasons::STATUS_WRITE_FAILED,
                format!("writing status of Release {release}"),
                e,
            ),
            Error::Apply(target, e) => (
                reasons::DEPLOYMENT_APPLY_FAILED,
                format!("applying Deployment {target}"),
                e,
            ),
            Error::ListPods(target, e) => (
                reasons::POD_LIST_FAILED,
                format!("listing pods of Deployment {target}"),
                e,
            ),
            Error::NoNamespace(_) => return None,
        };
        // The API's own words and code, without the debug dump of the Status in `Display`.
        let message = match source {
            kube::Error::Api(s) => format!("{what}: {} ({} {})", s.message, s.code, s.reason),
            other => format!("{what}: {other}"),
        };
        Some(ErrorReport {
            reason,
            message: truncate(&message, 1000),
        })
    }
}

/// A reconcile error as a Warning Event on the Release: reason per error kind, message naming
/// the error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorReport {
    /// Event reason (`reasons::STATUS_WRITE_FAILED`, ...).
    pub reason: &'static str,
    /// Event note, at most 1000 bytes.
    pub message: String,
}

/// What to publish for a failed reconcile, given the report last published for this Release
/// since its last successful reconcile: the error's report when it is a new one, else nothing.
/// A persisting error is shown once, not on every retry; conflicts are never shown.
fn report_to_publish(error: &Error, last: Option<&ErrorReport>) -> Option<ErrorReport> {
    error.report().filter(|report| last != Some(report))
}

/// A test-only fault: exit the process right after writing a rollback phase, before acting
/// on it, to prove a restart resumes. Set with REWIND_TEST_EXIT_AFTER_PHASE=RestoringImages.
/// Compiled only with the `test-faults` feature (the integration tests build with it; release
/// builds do not), so the production binary has no way to be told to exit.
#[cfg(feature = "test-faults")]
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// Exit after a status write whose rollback is in this phase.
    pub exit_after_phase: Option<String>,
}

/// Shared by every reconcile.
pub(crate) struct Context {
    /// API client.
    pub client: Client,
    /// Deployments, trimmed.
    pub deployments: Store<Deployment>,
    /// Pods labelled `rewind.dev/release`, trimmed.
    pub pods: Store<Pod>,
    /// ReplicaSets labelled `rewind.dev/release` (they tie pods to a Deployment), trimmed.
    pub replica_sets: Store<ReplicaSet>,
    /// RollbackPolicies.
    pub policies: Store<RollbackPolicy>,
    /// Releases (the controller's own cache).
    pub releases: Store<Release>,
    /// One recorder, so Events aggregate.
    pub recorder: Recorder,
    /// Metrics.
    pub metrics: Metrics,
    /// Per-Release consecutive failures, for backoff.
    pub failures: Mutex<HashMap<ObjectRef<Release>, u32>>,
    /// Per-Release resourceVersion of our last status write, until the cache has caught up.
    pub written: Mutex<HashMap<ObjectRef<Release>, u64>>,
    /// Per-Release error last shown as a Warning Event, until a reconcile succeeds.
    pub reported: Mutex<HashMap<ObjectRef<Release>, ErrorReport>>,
    /// Test faults.
    #[cfg(feature = "test-faults")]
    pub faults: Faults,
    /// Tag-to-digest resolution against registries.
    pub resolver: Resolver,
}

/// How the operator runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// Watch only this namespace (all when None).
    pub namespace: Option<String>,
    /// Releases reconciled at once.
    pub concurrency: u16,
    /// Test faults.
    #[cfg(feature = "test-faults")]
    pub faults: Faults,
    /// Registry access.
    pub registry: crate::registry::ResolverConfig,
}

fn api<K>(client: &Client, namespace: &Option<String>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// What of a Release should trigger a reconcile: its spec (generation) and the annotations
/// people use to ask for things. Rewind's own status writes do not.
fn release_predicate(r: &Release) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    r.metadata.generation.hash(&mut h);
    r.metadata.uid.hash(&mut h);
    // Labels decide which RollbackPolicy selects the Release.
    r.metadata.labels.hash(&mut h);
    for key in [labels::ROLLBACK_TO, labels::RETRY, labels::REQUESTED_BY] {
        r.annotations().get(key).hash(&mut h);
    }
    Some(h.finish())
}

/// Run the controller until a signal arrives.
pub async fn run(client: Client, options: Options, metrics: Metrics, ready: Arc<AtomicBool>) {
    let ns = &options.namespace;
    let (releases, release_writer) = reflector::store::<Release>();
    let release_stream = watcher(api::<Release>(&client, ns), watcher::Config::default())
        .default_backoff()
        .modify(|r| r.managed_fields_mut().clear())
        .reflect(release_writer)
        .applied_objects()
        .predicate_filter(release_predicate, Default::default());

    let (deployments, deployment_writer) = reflector::store::<Deployment>();
    let deployment_stream = watcher(api::<Deployment>(&client, ns), watcher::Config::default())
        .default_backoff()
        .modify(trim::deployment)
        .reflect(deployment_writer)
        .touched_objects();

    let (pods, pod_writer) = reflector::store::<Pod>();
    let pod_stream = watcher(
        api::<Pod>(&client, ns),
        watcher::Config::default().labels(labels::RELEASE),
    )
    .default_backoff()
    .modify(trim::pod)
    .reflect(pod_writer)
    .touched_objects();

    let (replica_sets, rs_writer) = reflector::store::<ReplicaSet>();
    let rs_stream = watcher(
        api::<ReplicaSet>(&client, ns),
        watcher::Config::default().labels(labels::RELEASE),
    )
    .default_backoff()
    .modify(trim::replica_set)
    .reflect(rs_writer)
    .touched_objects();

    let (policies, policy_writer) = reflector::store::<RollbackPolicy>();
    let policy_stream = watcher(
        api::<RollbackPolicy>(&client, ns),
        watcher::Config::default(),
    )
    .default_backoff()
    .modify(|p| p.managed_fields_mut().clear())
    .reflect(policy_writer)
    .touched_objects();

    let ctx = Arc::new(Context {
        client: client.clone(),
        deployments: deployments.clone(),
        pods: pods.clone(),
        replica_sets: replica_sets.clone(),
        policies: policies.clone(),
        releases: releases.clone(),
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: labels::MANAGER.into(),
                instance: std::env::var("POD_NAME").ok(),
            },
        ),
        metrics,
        failures: Mutex::new(HashMap::new()),
        written: Mutex::new(HashMap::new()),
        reported: Mutex::new(HashMap::new()),
        #[cfg(feature = "test-faults")]
        faults: options.faults.clone(),
        resolver: Resolver::new(options.registry.clone()),
    });

    let by_target = releases.clone();
    let by_policy = releases.clone();
    let controller = Controller::for_stream(release_stream, releases.clone())
        .with_config(kube::runtime::controller::Config::default().concurrency(options.concurrency))
        .watches_stream(deployment_stream, move |d: Deployment| {
            let (ns, name) = (d.namespace(), d.name_any());
            by_target
                .state_filter(|r| r.namespace() == ns && r.spec.target.name == name)
                .into_iter()
                .map(|r| ObjectRef::from_obj(&*r))
                .collect::<Vec<_>>()
        })
        .watches_stream(pod_stream, |p: Pod| {
            let ns = p.namespace()?;
            let release = p.labels().get(labels::RELEASE)?;
            Some(ObjectRef::<Release>::new(release).within(&ns))
        })
        .watches_stream(rs_stream, |rs: ReplicaSet| {
            let ns = rs.namespace()?;
            let release = rs.labels().get(labels::RELEASE)?;
            Some(ObjectRef::<Release>::new(release).within(&ns))
        })
        .watches_stream(policy_stream, move |p: RollbackPolicy| {
            let ns = p.namespace();
            by_policy
                .state_filter(|r| r.namespace() == ns)
                .into_iter()
                .map(|r| ObjectRef::from_obj(&*r))
                .collect::<Vec<_>>()
        })
        .shutdown_on_signal();

    // Ready once every cache has its first full list.
    tokio::spawn({
        let (r, d, p, q, rs) = (releases.clone(), deployments, pods, policies, replica_sets);
        async move {
            let started = Instant::now();
            if future::try_join5(
                r.wait_until_ready(),
                d.wait_until_ready(),
                p.wait_until_ready(),
                q.wait_until_ready(),
                rs.wait_until_ready(),
            )
            .await
            .is_ok()
            {
                ready.store(true, Ordering::Relaxed);
                info!(
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    releases = r.state().len(),
                    "caches synced"
                );
            }
        }
    });

    controller
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                match e {
                    kube::runtime::controller::Error::ObjectNotFound(_) => {}
                    other => warn!(error = %other, "controller"),
                }
            }
        })
        .await;
    info!("controller stopped");
}

/// Reconcile one Release: count it, time it whether it succeeds or fails, and on success
/// forget its failures (backoff) and the error last shown on it.
async fn reconcile(release: Arc<Release>, ctx: Arc<Context>) -> Result<Action, Error> {
    let name = release.name_any();
    let ns = release
        .namespace()
        .ok_or_else(|| Error::NoNamespace(name.clone()))?;
    let span = info_span!("reconcile", release = %name, namespace = %ns, revision = field::Empty);
    async move {
        if ctx.cache_behind_own_write(&release) {
            // Deciding from a status older than the one we wrote could undo our own step.
            return Ok(Action::requeue(Duration::from_millis(50)));
        }
        ctx.metrics.reconciles.inc();
        let result = timed(
            &ctx.metrics.reconcile_duration,
            observe_plan_act(&release, &name, &ns, &ctx),
        )
        .await;
        if result.is_ok() {
            let key = ObjectRef::from_obj(&*release);
            ctx.failures.lock().expect("failures lock").remove(&key);
            ctx.reported.lock().expect("reported lock").remove(&key);
        }
        result
    }
    .instrument(span)
    .await
}

/// Await `work` and record how long it took in `histogram`, whatever it returns.
async fn timed<T>(histogram: &Histogram, work: impl Future<Output = T>) -> T {
    let started = Instant::now();
    let out = work.await;
    histogram.observe(started.elapsed().as_secs_f64());
    out
}

/// Observe, plan, act.
async fn observe_plan_act(
    release: &Release,
    name: &str,
    ns: &str,
    ctx: &Context,
) -> Result<Action, Error> {
    // Plans read the caches: wait for their first full list (instant afterwards).
    let _ = future::join4(
        ctx.deployments.wait_until_ready(),
        ctx.pods.wait_until_ready(),
        ctx.replica_sets.wait_until_ready(),
        ctx.policies.wait_until_ready(),
    )
    .await;

    let target = &release.spec.target.name;
    let deployment = ctx.deployments.get(&ObjectRef::new(target).within(ns));
    let of_release = |labels: &BTreeMap<String, String>, namespace: Option<&str>| {
        namespace == Some(ns) && labels.get(labels::RELEASE).map(String::as_str) == Some(name)
    };
    let replica_sets: Vec<ReplicaSetView> = ctx
        .replica_sets
        .state_filter(|rs| of_release(rs.labels(), rs.metadata.namespace.as_deref()))
        .iter()
        .map(|rs| ReplicaSetView::from(&**rs))
        .collect();
    let labelled: Vec<PodView> = ctx
        .pods
        .state_filter(|p| of_release(p.labels(), p.metadata.namespace.as_deref()))
        .iter()
        .map(|p| PodView::from(&**p))
        .collect();
    let deployment_uid = deployment.as_ref().and_then(|d| d.metadata.uid.clone());
    // Only the pods of the target Deployment's own ReplicaSets count for a revision.
    let mut pods = owned_pods(
        deployment_uid.as_deref().unwrap_or_default(),
        &replica_sets,
        labelled,
    );
    let adopting = decide::adopting(release, deployment_uid.as_deref());
    if let (true, Some(d)) = (adopting, deployment.as_deref()) {
        // Adoption: the pods the Deployment ran before Rewind carry no label of ours.
        pods.extend(adoption_pods(&ctx.client, ns, d).await?);
    }
    let observed = Observed {
        workload: deployment.as_deref().map(Workload::from),
        pods,
    };
    let policies = ctx.policies.state();
    let (policy, policy_error) = match decide::policy::resolve(release, &policies) {
        Ok(p) => (p, None),
        Err(e) => (decide::Policy::default(), Some(e)),
    };
    let claimed_by = older_release_for_target(&ctx.releases, release);
    let now = Timestamp::now();
    let plan_with = |resolved: &BTreeMap<String, Result<String, ResolveError>>| {
        decide::plan(&Input {
            release,
            policy: &policy,
            policy_error: policy_error.clone(),
            claimed_by: claimed_by.clone(),
            observed: &observed,
            resolved,
            now,
            blind: &[],
        })
    };
    let mut plan = plan_with(&BTreeMap::new());
    // Pin before rolling out: the planner names what it would deploy without a digest;
    // ask the registry about exactly that and decide again with the answers.
    if let (false, Some(d)) = (plan.lookups.is_empty(), deployment.as_deref()) {
        let credentials = pull_credentials(&ctx.client, ns, d).await;
        let answers = future::join_all(
            plan.lookups
                .iter()
                .map(|image| ctx.resolver.resolve(image, &credentials)),
        )
        .await;
        let resolved: BTreeMap<_, _> = plan.lookups.iter().cloned().zip(answers).collect();
        plan = plan_with(&resolved);
    }
    if let Some(r) = plan.status.revision {
        tracing::Span::current().record("revision", r);
    }
    tracing::debug!(
        phase = ?plan.status.phase,
        apply = plan.apply.as_ref().map(|t| t.revision),
        events = plan.events.len(),
        recheck = ?plan.recheck,
        "planned"
    );
    execute(release, ns, &plan, ctx).await?;
    Ok(match plan.recheck {
        Some(at) => {
            let wait = at.duration_since(Timestamp::now());
            // Round up so the deadline has passed when we look again.
            Action::requeue(
                Duration::try_from(wait).unwrap_or_default() + Duration::from_millis(20),
            )
        }
        None => Action::await_change(),
    })
}

impl Context {
    /// True while the cached Release is older than our last status write to it. The API server
    /// (etcd) issues resourceVersions in increasing order; comparing them is what lets us wait
    /// for our own write instead of acting on the state before it.
    fn cache_behind_own_write(&self, release: &Release) -> bool {
        let key = ObjectRef::from_obj(release);
        let mut written = self.written.lock().expect("written lock");
        let Some(&ours) = written.get(&key) else {
            return false;
        };
        let cached: u64 = release
            .resource_version()
            .and_then(|v| v.parse().ok())
            .unwrap_or(u64::MAX);
        if cached >= ours {
            written.remove(&key);
            return false;
        }
        true
    }
}

/// Carry out a plan: status first (the phase is recorded before any side effect), then
/// Events and the log line of a finished rollback, then the Deployment.
async fn execute(release: &Release, ns: &str, plan: &Plan, ctx: &Context) -> Result<(), Error> {
    let name = release.name_any();
    if status_changed(release.status.as_ref(), &plan.status) {
        let patch = json!({
            "apiVersion": "rewind.dev/v1alpha1",
            "kind": "Release",
            // The resourceVersion makes this write conditional: a plan made from a stale cache
            // is refused (409) and retried on fresh data instead of overwriting newer state.
            "metadata": {"name": name, "namespace": ns, "resourceVersion": release.resource_version()},
            "status": plan.status,
        });
        let written = Api::<Release>::namespaced(ctx.client.clone(), ns)
            .patch_status(
                &name,
                &PatchParams::apply(labels::MANAGER).force(),
                &Patch::Apply(patch),
            )
            .await
            .map_err(|e| Error::Status(name.clone(), e))?;
        if let Some(rv) = written.resource_version().and_then(|v| v.parse().ok()) {
            ctx.written
                .lock()
                .expect("written lock")
                .insert(ObjectRef::from_obj(release), rv);
        }
        #[cfg(feature = "test-faults")]
        if let (Some(phase), Some(rb)) =
            (&ctx.faults.exit_after_phase, plan.status.rollback.as_ref())
            && format!("{:?}", rb.phase) == *phase
        {
            warn!(phase = %phase, "test fault: exiting right after writing the rollback phase");
            std::process::exit(75);
        }
    }
    let reference = release.object_ref(&());
    for note in &plan.events {
        info!(
            reason = note.reason,
            warning = note.is_warning(),
            "{}",
            note.message
        );
        let event = KubeEvent {
            type_: match note.kind {
                EventKind::Warning => EventType::Warning,
                EventKind::Normal => EventType::Normal,
            },
            reason: note.reason.into(),
            note: Some(truncate(&note.message, 1000)),
            action: note.reason.into(),
            secondary: None,
        };
        if let Err(e) = ctx.recorder.publish(&event, &reference).await {
            warn!(error = %e, reason = note.reason, "could not publish Event");
        }
    }
    if let Some(rb) = &plan.finished {
        let result = if rb.phase == crate::api::RollbackPhase::Succeeded {
            "Succeeded"
        } else {
            "Failed"
        };
        ctx.metrics
            .rollbacks
            .get_or_create(&RollbackLabels {
                trigger: rb.trigger.as_str(),
                result,
            })
            .inc();
        if let (Some(restored), detected) = (&rb.images_restored_at, &rb.detected_at) {
            let secs = restored.0.duration_since(detected.0).as_secs_f64();
            ctx.metrics.detection_to_restore.observe(secs.max(0.0));
        }
        info!(
            rollback = %rb.id,
            from_version = %rb.from.version,
            from_revision = rb.from.revision,
            to_version = %rb.to.version,
            to_revision = rb.to.revision,
            trigger = rb.trigger.as_str(),
            reason = %rb.reason,
            requested_by = rb.requested_by.as_deref().unwrap_or(""),
            result,
            detected_at = %rb.detected_at.0,
            images_restored_at = %rb.images_restored_at.as_ref().map(|t| t.0.to_string()).unwrap_or_default(),
            completed_at = %rb.completed_at.as_ref().map(|t| t.0.to_string()).unwrap_or_default(),
            duration_seconds = rb.duration_seconds.unwrap_or_default(),
            message = %rb.message,
            "rollback finished"
        );
    }
    // The status already records this step: tell people (above) even if the apply fails
    // below; the next reconcile applies again.
    if let Some(template) = &plan.apply {
        let target = &release.spec.target.name;
        deploy::apply(
            &Api::namespaced(ctx.client.clone(), ns),
            target,
            &name,
            template,
        )
        .await
        .map_err(|e| Error::Apply(target.clone(), e))?;
    }
    Ok(())
}

/// Compare as the API server will store it (timestamps at second precision), so a plan that
/// changes nothing writes nothing.
fn status_changed(current: Option<&ReleaseStatus>, planned: &ReleaseStatus) -> bool {
    let normalize = |s: &ReleaseStatus| serde_json::to_value(s).ok();
    current.map(normalize) != Some(normalize(planned))
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// The name of an older Release (by creation, then name) that targets the same Deployment:
/// the older one keeps it, so two Releases never overwrite each other's images.
fn older_release_for_target(releases: &Store<Release>, release: &Release) -> Option<String> {
    let key = |r: &Release| {
        (
            r.metadata.creation_timestamp.clone().map(|t| t.0),
            r.name_any(),
        )
    };
    let mine = key(release);
    releases
        .state_filter(|r| {
            r.namespace() == release.namespace()
                && r.spec.target.name == release.spec.target.name
                && r.uid() != release.uid()
                && key(r) < mine
        })
        .iter()
        .map(|r| key(r))
        .min()
        .map(|(_, name)| name)
}

/// Registry credentials the kubelet would use for the Deployment's pods: its
/// imagePullSecrets and those of its ServiceAccount. Secrets that cannot be read are skipped
/// (logged): resolution then goes on anonymously and reports what the registry says.
async fn pull_credentials(client: &Client, ns: &str, d: &Deployment) -> Credentials {
    let pod_spec = d.spec.as_ref().and_then(|s| s.template.spec.as_ref());
    let mut names: Vec<String> = pod_spec
        .and_then(|p| p.image_pull_secrets.as_ref())
        .into_iter()
        .flatten()
        .map(|r| r.name.clone())
        .collect();
    let sa_name = pod_spec
        .and_then(|p| p.service_account_name.clone())
        .unwrap_or_else(|| "default".into());
    match Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .get_opt(&sa_name)
        .await
    {
        Ok(Some(sa)) => names.extend(sa.image_pull_secrets.into_iter().flatten().map(|r| r.name)),
        Ok(None) => {}
        Err(e) => {
            warn!(service_account = %sa_name, error = %e, "cannot read ServiceAccount for pull secrets")
        }
    }
    let secrets = Api::<Secret>::namespaced(client.clone(), ns);
    let mut credentials = Credentials::default();
    for name in names {
        match secrets.get_opt(&name).await {
            Ok(Some(secret)) => {
                let data = secret.data.unwrap_or_default();
                if let Some(json) = data
                    .get(".dockerconfigjson")
                    .or_else(|| data.get(".dockercfg"))
                    && let Err(e) = credentials.add_docker_config(&json.0)
                {
                    warn!(secret = %name, error = %e, "pull secret is not a docker config");
                }
            }
            Ok(None) => warn!(secret = %name, "pull secret not found"),
            Err(e) => warn!(secret = %name, error = %e, "cannot read pull secret"),
        }
    }
    credentials
}

/// The pods a Deployment runs, listed once when Rewind first takes it over.
async fn adoption_pods(client: &Client, ns: &str, d: &Deployment) -> Result<Vec<PodView>, Error> {
    let Some(selector) = d.spec.as_ref().map(|s| s.selector.clone()) else {
        return Ok(Vec::new());
    };
    // matchLabels and matchExpressions both; an empty selector would list every pod.
    let selector = match kube::core::Selector::try_from(selector) {
        Ok(s) if !s.selects_all() => s.to_string(),
        _ => return Ok(Vec::new()),
    };
    let list = Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| Error::ListPods(d.name_any(), e))?;
    Ok(list
        .items
        .iter()
        .map(PodView::from)
        .filter(|p| p.revision.is_none())
        .collect())
}

/// Back off per Release: a short retry for conflicts and throttling, else exponential with
/// jitter, capped at five minutes. An error not yet shown on the Release is published there as
/// a Warning Event (in the background).
fn error_policy(release: Arc<Release>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics
        .failures
        .get_or_create(&ErrorLabels {
            error: error.metric_label(),
        })
        .inc();
    let key = ObjectRef::from_obj(&*release);
    let report = {
        let mut reported = ctx.reported.lock().expect("reported lock");
        let report = report_to_publish(error, reported.get(&key));
        if let Some(r) = &report {
            reported.insert(key.clone(), r.clone());
        }
        report
    };
    if let Some(report) = report {
        publish_error(&ctx.recorder, &release, report);
    }
    let n = {
        let mut failures = ctx.failures.lock().expect("failures lock");
        let n = failures.entry(key).or_insert(0);
        *n = n.saturating_add(1);
        *n
    };
    if error.is_conflict() {
        // Our cache was behind: retry soon, backing off if it stays behind (a lagging watch).
        let ms = 100u64.saturating_mul(1 << n.min(6)).min(5_000);
        return Action::requeue(Duration::from_millis(ms));
    }
    let base = if error.is_throttled() { 1_000 } else { 500 };
    let backoff = (base as u64).saturating_mul(1 << n.min(10)).min(300_000);
    // Up to 20% jitter, from the clock's low bits (no RNG needed for spreading retries).
    let jitter = (Timestamp::now().subsec_nanosecond() as u64 % 1000) * backoff / 5000;
    warn!(release = %release.name_any(), error = %error, retry_in_ms = backoff + jitter, "reconcile failed");
    Action::requeue(Duration::from_millis(backoff + jitter))
}

/// Publish `report` as a Warning Event on the Release in the background: the error policy is
/// synchronous and must neither wait for the API server nor fail because of it.
fn publish_error(recorder: &Recorder, release: &Release, report: ErrorReport) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let recorder = recorder.clone();
    let reference = release.object_ref(&());
    runtime.spawn(async move {
        let event = KubeEvent {
            type_: EventType::Warning,
            reason: report.reason.into(),
            note: Some(report.message),
            action: report.reason.into(),
            secondary: None,
        };
        if let Err(e) = recorder.publish(&event, &reference).await {
            warn!(error = %e, reason = report.reason, "could not publish Event");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unchanged_status_at_second_precision_is_not_a_change() {
        let now: Timestamp = "2026-11-26T10:00:00.123456Z".parse().unwrap();
        let mut planned = ReleaseStatus::default();
        crate::decide::conditions::set(
            &mut planned.conditions,
            "Ready",
            true,
            "Healthy",
            "ok",
            1,
            now,
        );
        let stored: ReleaseStatus =
            serde_json::from_value(serde_json::to_value(&planned).unwrap()).unwrap();
        assert!(!status_changed(Some(&stored), &planned));
        assert!(status_changed(None, &planned));
    }

    fn api_error(code: u16, reason: &str, message: &str) -> kube::Error {
        kube::Error::Api(Box::new(kube::core::Status {
            code,
            reason: reason.into(),
            message: message.into(),
            ..Default::default()
        }))
    }

    #[test]
    fn a_persisting_error_is_reported_once_per_distinct_error() {
        let denied = || {
            Error::Apply(
                "shop".into(),
                api_error(403, "Forbidden", "denied by policy"),
            )
        };
        // The first failure is reported, with a reason per kind and the API's words.
        let first = report_to_publish(&denied(), None).expect("a first error is reported");
        assert_eq!(first.reason, reasons::DEPLOYMENT_APPLY_FAILED);
        assert_eq!(
            first.message,
            "applying Deployment shop: denied by policy (403 Forbidden)"
        );
        // The same error again (the retries) is not.
        assert_eq!(report_to_publish(&denied(), Some(&first)), None);
        // Another error is, even of the same kind.
        let invalid = Error::Apply("shop".into(), api_error(422, "Invalid", "bad image"));
        let second = report_to_publish(&invalid, Some(&first)).expect("a new error is reported");
        assert_eq!(second.reason, reasons::DEPLOYMENT_APPLY_FAILED);
        assert_ne!(second, first);
        let status = Error::Status("shop".into(), api_error(422, "Invalid", "bad status"));
        assert_eq!(
            report_to_publish(&status, Some(&second)).map(|r| r.reason),
            Some(reasons::STATUS_WRITE_FAILED)
        );
        let pods = Error::ListPods("shop".into(), api_error(403, "Forbidden", "no"));
        assert_eq!(
            report_to_publish(&pods, None).map(|r| r.reason),
            Some(reasons::POD_LIST_FAILED)
        );
    }

    #[test]
    fn conflicts_are_never_reported() {
        for conflict in [
            Error::Status("shop".into(), api_error(409, "Conflict", "modified")),
            Error::Apply("shop".into(), api_error(409, "Conflict", "modified")),
        ] {
            assert_eq!(report_to_publish(&conflict, None), None);
        }
    }

    #[test]
    fn a_long_error_message_is_truncated() {
        let long = Error::Status("shop".into(), api_error(422, "Invalid", &"x".repeat(5000)));
        let report = report_to_publish(&long, None).unwrap();
        assert!(report.message.len() <= 1000 + '…'.len_utf8());
        assert!(
            report
                .message
                .starts_with("writing status of Release shop: xxx")
        );
    }

    #[tokio::test]
    async fn failed_work_is_timed_too() {
        let metrics = Metrics::default();
        let ok: Result<(), Error> = timed(&metrics.reconcile_duration, async { Ok(()) }).await;
        let failed: Result<(), Error> = timed(&metrics.reconcile_duration, async {
            Err(Error::NoNamespace("shop".into()))
        })
        .await;
        assert!(ok.is_ok() && failed.is_err());
        let text = metrics.render();
        assert!(
            text.contains("rewind_reconcile_duration_seconds_count 2"),
            "both the success and the failure are observed: {text}"
        );
    }

    #[test]
    fn truncates_on_a_char_boundary() {
        assert_eq!(truncate("ééé", 3), "é…");
        assert_eq!(truncate("abc", 3), "abc");
    }

    #[test]
    fn predicate_ignores_status_but_not_annotations() {
        let mut r = Release::new(
            "a",
            serde_json::from_value(
                json!({"version": "1.0.0", "target": {"name": "a"}, "images": []}),
            )
            .unwrap(),
        );
        r.metadata.generation = Some(1);
        let base = release_predicate(&r);
        r.status = Some(ReleaseStatus {
            revision: Some(3),
            ..Default::default()
        });
        assert_eq!(release_predicate(&r), base);
        r.annotations_mut()
            .insert(labels::ROLLBACK_TO.into(), "1.0.0".into());
        assert_ne!(release_predicate(&r), base);
    }
}

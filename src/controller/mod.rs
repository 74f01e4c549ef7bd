//! The IO shell around `decide::plan`: watches and caches, one reconcile per Release that
//! gathers observations, asks for a plan and carries it out (status, then Events, then the
//! Deployment), and the error policy.

mod caches;
mod deploy;
mod policy;
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
    apps::v1::Deployment,
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
use serde_json::json;
use tracing::{Instrument, field, info, info_span, warn};

use crate::{
    api::{Release, ReleaseStatus, RollbackPolicy},
    decide::{
        self, EventKind, Input, Plan,
        views::{Observed, PodView, Workload},
    },
    labels,
    metrics::{ErrorLabels, Metrics, RollbackLabels},
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
}

/// A test-only fault: exit the process right after writing a rollback phase, before acting
/// on it, to prove a restart resumes. Set with REWIND_TEST_EXIT_AFTER_PHASE=RestoringImages.
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
    /// Test faults.
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
        .watches_stream(policy_stream, move |p: RollbackPolicy| {
            let ns = p.namespace();
            by_policy
                .state_filter(|r| r.namespace() == ns)
                .into_iter()
                .map(|r| ObjectRef::from_obj(&*r))
                .collect::<Vec<_>>()
        })
        .shutdown_on_signal();

    // RollbackPolicies report their own validity (Ready/Invalid) from a small controller.
    tokio::spawn(policy::run(client.clone(), options.namespace.clone()));
    // Ready once every cache has its first full list.
    tokio::spawn({
        let (r, d, p, q) = (releases.clone(), deployments, pods, policies);
        async move {
            let started = Instant::now();
            if future::try_join4(
                caches::synced(&r),
                caches::synced(&d),
                caches::synced(&p),
                caches::synced(&q),
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

/// Reconcile one Release: observe, plan, act.
async fn reconcile(release: Arc<Release>, ctx: Arc<Context>) -> Result<Action, Error> {
    let name = release.name_any();
    let ns = release
        .namespace()
        .ok_or_else(|| Error::NoNamespace(name.clone()))?;
    let span = info_span!("reconcile", release = %name, namespace = %ns, revision = field::Empty);
    async move {
        let started = Instant::now();
        if ctx.cache_behind_own_write(&release) {
            // Deciding from a status older than the one we wrote could undo our own step.
            return Ok(Action::requeue(Duration::from_millis(50)));
        }
        ctx.metrics.reconciles.inc();
        // Plans read the caches: wait for their first full list (instant afterwards).
        let _ = future::join3(
            caches::synced(&ctx.deployments),
            caches::synced(&ctx.pods),
            caches::synced(&ctx.policies),
        )
        .await;

        let target = &release.spec.target.name;
        let deployment = ctx.deployments.get(&ObjectRef::new(target).within(&ns));
        let mut pods: Vec<PodView> = ctx
            .pods
            .state_filter(|p| {
                p.metadata.namespace.as_deref() == Some(&ns)
                    && p.labels().get(labels::RELEASE) == Some(&name)
            })
            .iter()
            .map(|p| PodView::from(&**p))
            .collect();
        let adopting =
            !release.spec.paused && release.status.as_ref().is_none_or(|s| s.history.is_empty());
        if let (true, Some(d)) = (adopting, deployment.as_deref()) {
            // Adoption: the pods the Deployment ran before Rewind carry no label of ours.
            pods.extend(adoption_pods(&ctx.client, &ns, d).await?);
        }
        let observed = Observed {
            workload: deployment.as_deref().map(Workload::from),
            pods,
        };
        let policies = ctx.policies.state();
        let (policy, policy_error) = match decide::policy::resolve(&release, &policies) {
            Ok(p) => (p, None),
            Err(e) => (decide::Policy::default(), Some(e)),
        };
        let claimed_by = older_release_for_target(&ctx.releases, &release);
        let now = Timestamp::now();
        let plan_with = |resolved: &BTreeMap<String, Result<String, ResolveError>>| {
            decide::plan(&Input {
                release: &release,
                policy: &policy,
                policy_error: policy_error.clone(),
                claimed_by: claimed_by.clone(),
                observed: &observed,
                resolved,
                now,
            })
        };
        let mut plan = plan_with(&BTreeMap::new());
        // Pin before rolling out: the planner names what it would deploy without a digest;
        // ask the registry about exactly that and decide again with the answers.
        if let (false, Some(d)) = (plan.lookups.is_empty(), deployment.as_deref()) {
            let credentials = pull_credentials(&ctx.client, &ns, d).await;
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
        execute(&release, &ns, &plan, &ctx).await?;
        ctx.failures
            .lock()
            .expect("failures lock")
            .remove(&ObjectRef::from_obj(&*release));
        ctx.metrics
            .reconcile_duration
            .observe(started.elapsed().as_secs_f64());
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
    .instrument(span)
    .await
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
/// jitter, capped at five minutes.
fn error_policy(release: Arc<Release>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics
        .failures
        .get_or_create(&ErrorLabels {
            error: error.metric_label(),
        })
        .inc();
    let key = ObjectRef::from_obj(&*release);
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

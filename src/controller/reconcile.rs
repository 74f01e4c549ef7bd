//! One reconcile of a Release: observe (from the caches), plan, confirm a failure verdict
//! against the API server, act (status, then Events, then the Deployment).

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::future;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{LocalObjectReference, ObjectReference};
use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{
        controller::Action,
        events::{Event as KubeEvent, EventType},
        reflector::ObjectRef,
    },
};
use prometheus_client::metrics::{family::Family, gauge::Gauge, histogram::Histogram};
use serde_json::json;
use tracing::{Instrument, field, info, info_span, warn};

use super::{
    Context, deploy,
    error::{Error, ErrorReport, truncate},
    jobs, observe,
};
use crate::{
    api::{Release, ReleaseStatus},
    decide::{self, EventKind, Input, Plan},
    labels,
    metrics::{MigrationLabels, ReleaseInfoLabels, RollbackLabels, VerdictLabels},
    reasons,
    registry::ResolveError,
};

/// The longest a reconcile waits for the API server to confirm a failure verdict.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

/// How often a replica that does not lead looks at each Release again (doing nothing else).
const STANDBY_RECHECK: Duration = Duration::from_secs(10);

/// Looks at a cache behind Rewind's own status write before reading the Release itself.
const BEHIND_TRIES: u32 = 8;

/// What the controller remembers per Release between reconciles; forgotten when the Release
/// is deleted (and swept on every full list of Releases, for deletions missed meanwhile).
#[derive(Default)]
pub(crate) struct Memory {
    /// Consecutive failures, for backoff.
    pub failures: Mutex<HashMap<ObjectRef<Release>, u32>>,
    /// resourceVersion of our last status write, until the cache has caught up, and how many
    /// times a reconcile found the cache behind it (for backoff).
    written: Mutex<HashMap<ObjectRef<Release>, (u64, u32)>>,
    /// The error last shown as a Warning Event, until a reconcile succeeds.
    pub reported: Mutex<HashMap<ObjectRef<Release>, ErrorReport>>,
    /// The id of the rollback in flight this process has acted on, per Release: one it finds
    /// in status without having acted on it was started by an earlier run or another replica.
    rollbacks: Mutex<HashMap<ObjectRef<Release>, String>>,
    /// The `rewind_release_info` series shown per Release, removed when it changes or the
    /// Release is gone.
    info: Mutex<HashMap<ObjectRef<Release>, ReleaseInfoLabels>>,
    /// The family those series belong to.
    info_family: Family<ReleaseInfoLabels, Gauge>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Memory {
    /// Record our status write at resourceVersion `rv`.
    fn wrote(&self, key: ObjectRef<Release>, rv: u64) {
        lock(&self.written).insert(key, (rv, 0));
    }

    /// While the cached Release is older than our last status write to it, how long to wait
    /// before looking again (backing off from 50 ms to 2 s: a watch that lags, or an outage,
    /// must not turn into a spin). The API server (etcd) issues resourceVersions in increasing
    /// order; comparing them is what lets us wait for our own write instead of acting on the
    /// state before it.
    /// Also says whether it has been behind for long (seconds: a watch that broke and has not
    /// listed again), when the reconcile reads the Release itself instead of waiting on.
    fn behind_own_write(&self, release: &Release) -> Option<(Duration, bool)> {
        let key = ObjectRef::from_obj(release);
        let mut written = lock(&self.written);
        let (ours, tries) = written.get_mut(&key)?;
        let cached: u64 = release
            .resource_version()
            .and_then(|v| v.parse().ok())
            .unwrap_or(u64::MAX);
        if cached >= *ours {
            written.remove(&key);
            return None;
        }
        let wait = Duration::from_millis(50u64.saturating_mul(1 << (*tries).min(6)))
            .min(Duration::from_secs(2));
        *tries = tries.saturating_add(1);
        // 50 ms + 100 ms + … ≈ 5 s behind.
        Some((wait, *tries > BEHIND_TRIES))
    }

    /// A reconcile of `key` succeeded: forget its failures and the error shown on it.
    pub(crate) fn succeeded(&self, key: &ObjectRef<Release>) {
        lock(&self.failures).remove(key);
        lock(&self.reported).remove(key);
    }

    /// Memory whose `rewind_release_info` series are in `family`.
    pub(crate) fn new(family: Family<ReleaseInfoLabels, Gauge>) -> Memory {
        Memory {
            info_family: family,
            ..Memory::default()
        }
    }

    /// The Release is gone: forget everything about it.
    pub(crate) fn forget(&self, key: &ObjectRef<Release>) {
        self.succeeded(key);
        lock(&self.written).remove(key);
        lock(&self.rollbacks).remove(key);
        if let Some(old) = lock(&self.info).remove(key) {
            self.info_family.remove(&old);
        }
    }

    /// This replica stopped leading: its view of the Releases is no longer the one that acts,
    /// so it shows none (the leader shows them).
    pub(crate) fn hide_info(&self) {
        for (_, labels) in lock(&self.info).drain() {
            self.info_family.remove(&labels);
        }
    }

    /// Show where `key` stands in `rewind_release_info` (one series per Release).
    fn show(&self, key: ObjectRef<Release>, labels: ReleaseInfoLabels) {
        let mut info = lock(&self.info);
        if info.get(&key) == Some(&labels) {
            return;
        }
        if let Some(old) = info.insert(key, labels.clone()) {
            self.info_family.remove(&old);
        }
        self.info_family.get_or_create(&labels).set(1);
    }

    /// This process acts on rollback `id` of `key`: true the first time (it is resuming one it
    /// did not start, when the rollback was already in status before it acted).
    fn acting_on_rollback(&self, key: ObjectRef<Release>, id: &str) -> bool {
        let mut known = lock(&self.rollbacks);
        if known.get(&key).is_some_and(|k| k == id) {
            return false;
        }
        known.insert(key, id.to_owned());
        true
    }

    /// Keep only what is about Releases for which `exists` holds.
    pub(crate) fn retain(&self, exists: impl Fn(&ObjectRef<Release>) -> bool) {
        lock(&self.failures).retain(|k, _| exists(k));
        lock(&self.reported).retain(|k, _| exists(k));
        lock(&self.written).retain(|k, _| exists(k));
        lock(&self.rollbacks).retain(|k, _| exists(k));
        lock(&self.info).retain(|k, labels| {
            let keep = exists(k);
            if !keep {
                self.info_family.remove(labels);
            }
            keep
        });
    }

    /// How many Releases something is remembered about (for tests of the clean-up).
    #[cfg(test)]
    fn len(&self) -> usize {
        lock(&self.failures).len()
            + lock(&self.reported).len()
            + lock(&self.written).len()
            + lock(&self.rollbacks).len()
            + lock(&self.info).len()
    }
}

/// Reconcile one Release: count it, time it whether it succeeds or fails, and on success
/// forget its failures (backoff) and the error last shown on it.
pub(super) async fn reconcile(release: Arc<Release>, ctx: Arc<Context>) -> Result<Action, Error> {
    let name = release.name_any();
    let ns = release
        .namespace()
        .ok_or_else(|| Error::NoNamespace(name.clone()))?;
    if !ctx.leader.is_leading() {
        // A standby: another replica acts. When this one starts leading, every Release is
        // reconciled again (`became_leader`); and, should that bulk request come late (it has
        // been seen to wait for a watch to list again after an outage), each Release looks
        // again by itself before long. Costs nothing while standing by: no request is made.
        return Ok(Action::requeue(STANDBY_RECHECK));
    }
    if !ctx.watches.ready() {
        // Plans read every cache; one has not finished its first list yet. Never wait inside a
        // reconcile: look again shortly.
        return Ok(Action::requeue(Duration::from_millis(500)));
    }
    let mut release = release;
    if let Some((wait, long)) = ctx.memory.behind_own_write(&release) {
        // Deciding from a status older than the one we wrote could undo our own step.
        if !long {
            return Ok(Action::requeue(wait));
        }
        // The cache has stayed behind for seconds (its watch broke and has not listed again,
        // after an outage): never wait on it without a bound, read the Release itself.
        let read = tokio::time::timeout(
            CONFIRM_TIMEOUT,
            Api::<Release>::namespaced(ctx.client.clone(), &ns).get(&name),
        )
        .await;
        match read {
            Ok(Ok(fresh)) if ctx.memory.behind_own_write(&fresh).is_none() => {
                info!(release = %name, "the Release's cache is behind Rewind's own write: acting on the Release as read from the API server");
                release = Arc::new(fresh);
            }
            _ => return Ok(Action::requeue(wait)),
        }
    }
    // (The CRD defaults status to {observedGeneration: 0}: that is "none" too.)
    if release
        .status
        .as_ref()
        .is_none_or(|s| s.phase.is_none() && s.conditions.is_empty())
    {
        // First sight: say so at once (Reconciling), before registry lookups that may take a
        // while, so no reader takes an unjudged Release for a healthy one. Then plan as usual.
        let status = decide::initial_status(&release, Timestamp::now());
        let written = write_status(&release, &ns, &status, &ctx).await?;
        if let Some(rv) = written {
            ctx.memory.wrote(ObjectRef::from_obj(&*release), rv);
        }
        return Ok(Action::requeue(Duration::ZERO));
    }
    let span = info_span!("reconcile", release = %name, namespace = %ns, revision = field::Empty);
    async move {
        ctx.metrics.reconciles.inc();
        let result = timed(
            &ctx.metrics.reconcile_duration,
            observe_plan_act(&release, &ns, &ctx),
        )
        .await;
        if result.is_ok() {
            ctx.memory.succeeded(&ObjectRef::from_obj(&*release));
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

/// Observe, plan (asking the registry what the planner needs, and confirming a failure verdict
/// against the API server), act.
async fn observe_plan_act(release: &Release, ns: &str, ctx: &Context) -> Result<Action, Error> {
    let mut seen = observe::from_caches(ctx, release, ns).await?;
    let policies = ctx.policies.state();
    let (policy, policy_error) = match decide::selection::resolve(release, &policies) {
        Ok(p) => (p, None),
        Err(e) => (decide::Policy::default(), Some(e)),
    };
    let claimed_by = observe::older_release_for_target(&ctx.releases, release);
    let blind = ctx.watches.blind();
    let now = Timestamp::now();
    let plan_with =
        |observed: &decide::views::Observed,
         resolved: &BTreeMap<String, Result<String, ResolveError>>| {
            decide::plan(&Input {
                release,
                policy: &policy,
                policy_error: policy_error.clone(),
                claimed_by: claimed_by.clone(),
                observed,
                resolved,
                now,
                blind: &blind,
            })
        };
    let mut resolved = BTreeMap::new();
    let mut plan = plan_with(&seen.observed, &resolved);
    let mut confirmed = false;
    // At most: look up digests, confirm against the API server, look up what that changed.
    for _ in 0..3 {
        if !plan.lookups.is_empty()
            && let Some(d) = seen.deployment.as_ref()
            && plan.lookups.iter().any(|r| !resolved.contains_key(r))
        {
            // Pin before rolling out: the planner names what it would deploy without a
            // digest; ask the registry about exactly that and decide again with the answers.
            let credentials = if ctx.read_pull_secrets {
                observe::pull_credentials(&ctx.client, ns, d).await
            } else {
                Default::default()
            };
            let asked: Vec<String> = plan
                .lookups
                .iter()
                .filter(|r| !resolved.contains_key(*r))
                .cloned()
                .collect();
            let answers = future::join_all(
                asked
                    .iter()
                    .map(|image| ctx.resolver.resolve(image, &credentials)),
            )
            .await;
            resolved.extend(asked.into_iter().zip(answers));
            plan = plan_with(&seen.observed, &resolved);
            continue;
        }
        if plan.confirm && !confirmed {
            // A failure verdict from the caches: decide again from what the API server shows
            // now, and act only on that.
            // Bounded: a reconcile never waits on a hanging API server for long.
            seen = tokio::time::timeout(CONFIRM_TIMEOUT, observe::from_api(ctx, release, ns))
                .await
                .map_err(|elapsed| {
                    Error::Confirm(
                        format!("Release {}'s Deployment and pods", release.name_any()),
                        kube::Error::Service(Box::new(elapsed)),
                    )
                })??;
            ctx.watches.answered(Timestamp::now());
            confirmed = true;
            let fresh = plan_with(&seen.observed, &resolved);
            let result = if fresh.confirm {
                "confirmed"
            } else {
                "overturned"
            };
            if !fresh.confirm {
                info!(
                    "a failure verdict from the caches was not confirmed by the API server; acting on what it shows"
                );
            }
            ctx.metrics
                .verdicts
                .get_or_create(&VerdictLabels { result })
                .inc();
            plan = fresh;
            continue;
        }
        break;
    }
    if let Some(r) = plan.status.revision {
        tracing::Span::current().record("revision", r);
    }
    tracing::debug!(
        phase = ?plan.status.phase,
        apply = plan.apply.as_ref().map(|t| t.revision),
        events = plan.events.len(),
        recheck = ?plan.recheck,
        confirmed,
        "planned"
    );
    // Migration Jobs pull with the Deployment's pull secrets (often the same registry).
    let pull_secrets = seen
        .deployment
        .as_ref()
        .and_then(|d| {
            d.spec
                .as_ref()?
                .template
                .spec
                .as_ref()?
                .image_pull_secrets
                .clone()
        })
        .unwrap_or_default();
    let target = seen.deployment.as_ref().map(|d| d.object_ref(&()));
    execute(release, ns, &plan, &pull_secrets, target.as_ref(), ctx).await?;
    ctx.memory.show(
        ObjectRef::from_obj(release),
        ReleaseInfoLabels {
            namespace: ns.to_owned(),
            release: release.name_any(),
            phase: plan
                .status
                .phase
                .map(|p| format!("{p:?}"))
                .unwrap_or_default(),
            version: plan.status.version.clone().unwrap_or_default(),
        },
    );
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

/// Carry out a plan: status first (the phase is recorded before any side effect), then
/// Events and the log line of a finished rollback, then the Deployment.
async fn execute(
    release: &Release,
    ns: &str,
    plan: &Plan,
    pull_secrets: &[LocalObjectReference],
    target: Option<&ObjectReference>,
    ctx: &Context,
) -> Result<(), Error> {
    let name = release.name_any();
    if status_changed(release.status.as_ref(), &plan.status) {
        let written = write_status(release, ns, &plan.status, ctx).await?;
        if let Some(rv) = written {
            ctx.memory.wrote(ObjectRef::from_obj(release), rv);
        }
        #[cfg(feature = "test-faults")]
        if let (Some(phase), Some(rb)) =
            (&ctx.faults.exit_after_phase, plan.status.rollback.as_ref())
            && format!("{:?}", rb.phase) == *phase
        {
            warn!(phase = %phase, "test fault: exiting right after writing the rollback phase");
            std::process::exit(75);
        }
        #[cfg(feature = "test-faults")]
        if let (Some((phase, pause)), Some(rb)) =
            (&ctx.faults.pause_after_phase, plan.status.rollback.as_ref())
            && format!("{:?}", rb.phase) == *phase
        {
            warn!(phase = %phase, ?pause, "test fault: pausing right after writing the rollback phase");
            tokio::time::sleep(*pause).await;
            warn!(phase = %phase, "test fault: pause over, going on");
        }
    }
    let reference = release.object_ref(&());
    let key = ObjectRef::from_obj(release);
    if let Some(rb) = release.status.as_ref().and_then(|s| s.rollback.as_ref())
        && !rb.phase.is_finished()
        && ctx.memory.acting_on_rollback(key.clone(), &rb.id)
    {
        // In status before this process acted on it: started by an earlier run of Rewind or
        // by the replica that led before, which may not have told people (its Events).
        let message = format!(
            "carrying on rollback {} from {} to {} at phase {:?} (started by an earlier run of Rewind or another replica)",
            rb.id, rb.from.version, rb.to.version, rb.phase
        );
        info!(reason = reasons::ROLLBACK_RESUMED, "{message}");
        let event = KubeEvent {
            type_: EventType::Normal,
            reason: reasons::ROLLBACK_RESUMED.into(),
            note: Some(truncate(&message, 1000)),
            action: reasons::ROLLBACK_RESUMED.into(),
            secondary: None,
        };
        if let Err(e) = ctx.recorder.publish(&event, &reference).await {
            warn!(error = %e, reason = reasons::ROLLBACK_RESUMED, "could not publish Event");
        }
    }
    if let Some(rb) = plan
        .status
        .rollback
        .as_ref()
        .filter(|rb| !rb.phase.is_finished())
    {
        // Started (or carried on) by this process: no resume Event for it later.
        ctx.memory.acting_on_rollback(key, &rb.id);
    }
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
            // The Job it is about: Events about two Jobs are two Events (the recorder folds
            // Events with the same reason and objects into one series, keeping the first note).
            secondary: note.job.as_ref().map(|job| ObjectReference {
                api_version: Some("batch/v1".into()),
                kind: Some("Job".into()),
                name: Some(job.clone()),
                namespace: Some(ns.to_owned()),
                ..Default::default()
            }),
        };
        match ctx.recorder.publish(&event, &reference).await {
            Err(e) if crate::leader::refused(&e) => return Err(Error::Event(e)),
            Err(e) => warn!(error = %e, reason = note.reason, "could not publish Event"),
            Ok(()) => {}
        }
        // Where on-call looks first: the rollback's story on the Deployment too.
        if let Some(target) = target.filter(|_| reasons::ON_TARGET.contains(&note.reason))
            && let Err(e) = ctx.recorder.publish(&event, target).await
        {
            if crate::leader::refused(&e) {
                return Err(Error::Event(e));
            }
            warn!(error = %e, reason = note.reason, "could not publish Event on the Deployment");
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
            request_reason = rb.request_reason.as_deref().unwrap_or(""),
            result,
            detected_at = %rb.detected_at.0,
            images_restored_at = %rb.images_restored_at.as_ref().map(|t| t.0.to_string()).unwrap_or_default(),
            completed_at = %rb.completed_at.as_ref().map(|t| t.0.to_string()).unwrap_or_default(),
            duration_seconds = rb.duration_seconds.unwrap_or_default(),
            message = %rb.message,
            "rollback finished"
        );
    }
    for (kind, result) in &plan.migrations_ended {
        ctx.metrics
            .migration_jobs
            .get_or_create(&MigrationLabels { kind, result })
            .inc();
    }
    // The status already records each Job's name and step: create them now. Creating one that
    // exists (a restart, or a cache that has not seen it yet) finds it, never a second one.
    for request in &plan.jobs {
        let job = jobs::job_for(release, request, pull_secrets);
        let created = jobs::create(&Api::namespaced(ctx.client.clone(), ns), &job)
            .await
            .map_err(|e| Error::Job(request.name.clone(), e))?;
        if created {
            info!(job = %request.name, kind = request.kind.as_str(), revision = request.revision, "created migration Job");
            #[cfg(feature = "test-faults")]
            if let Some(pause) = ctx.faults.pause_after_job {
                warn!(job = %request.name, ?pause, "test fault: pausing right after creating a migration Job");
                tokio::time::sleep(pause).await;
                warn!("test fault: pause over, going on");
            }
        }
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
        #[cfg(feature = "test-faults")]
        if ctx.faults.exit_after_restore
            && plan
                .status
                .rollback
                .as_ref()
                .is_some_and(|rb| !rb.phase.is_finished())
        {
            warn!("test fault: exiting right after the Deployment patch of a rollback");
            std::process::exit(75);
        }
    }
    Ok(())
}

/// Write `status` (server-side apply, field manager rewind), conditional on the
/// resourceVersion the plan was made from: a plan made from a stale cache is refused (409) and
/// retried on fresh data instead of overwriting newer state. Returns the new resourceVersion.
async fn write_status(
    release: &Release,
    ns: &str,
    status: &ReleaseStatus,
    ctx: &Context,
) -> Result<Option<u64>, Error> {
    let name = release.name_any();
    let patch = json!({
        "apiVersion": "rewind.dev/v1alpha1",
        "kind": "Release",
        "metadata": {"name": name, "namespace": ns, "resourceVersion": release.resource_version()},
        "status": status,
    });
    let written = Api::<Release>::namespaced(ctx.client.clone(), ns)
        .patch_status(
            &name,
            &PatchParams::apply(labels::MANAGER).force(),
            &Patch::Apply(patch),
        )
        .await
        .map_err(|e| Error::Status(name.clone(), e))?;
    Ok(written.resource_version().and_then(|v| v.parse().ok()))
}

/// Compare as the API server will store it (timestamps at second precision), so a plan that
/// changes nothing writes nothing.
fn status_changed(current: Option<&ReleaseStatus>, planned: &ReleaseStatus) -> bool {
    let normalize = |s: &ReleaseStatus| serde_json::to_value(s).ok();
    current.map(normalize) != Some(normalize(planned))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;

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

    fn release(rv: &str) -> Release {
        let mut r = Release::new(
            "a",
            serde_json::from_value(
                json!({"version": "1.0.0", "target": {"name": "a"}, "images": []}),
            )
            .unwrap(),
        );
        r.metadata.namespace = Some("ns".into());
        r.metadata.resource_version = Some(rv.into());
        r
    }

    #[test]
    fn a_cache_behind_our_own_write_is_waited_for_with_backoff_not_a_spin() {
        let m = Memory::default();
        let key = ObjectRef::from_obj(&release("10"));
        m.wrote(key.clone(), 12);
        let waits: Vec<Duration> = (0..8)
            .map(|_| m.behind_own_write(&release("10")).expect("behind").0)
            .collect();
        assert_eq!(waits[0], Duration::from_millis(50));
        assert!(waits.windows(2).all(|w| w[1] >= w[0]), "{waits:?}");
        assert_eq!(*waits.last().unwrap(), Duration::from_secs(2));
        assert_eq!(
            m.behind_own_write(&release("10")).map(|b| b.1),
            Some(true),
            "behind for seconds: time to read the Release itself"
        );
        assert_eq!(m.behind_own_write(&release("12")), None, "caught up");
        assert_eq!(
            m.behind_own_write(&release("10")),
            None,
            "forgotten once caught up"
        );
    }

    #[test]
    fn one_info_series_per_release_and_none_once_it_is_gone() {
        let metrics = Metrics::default();
        let m = Memory::new(metrics.release_info.clone());
        let key = ObjectRef::from_obj(&release("1"));
        let info = |phase: &str, version: &str| ReleaseInfoLabels {
            namespace: "ns".into(),
            release: "a".into(),
            phase: phase.into(),
            version: version.into(),
        };
        m.show(key.clone(), info("Progressing", "2.0.0"));
        m.show(key.clone(), info("RolledBack", "1.0.0"));
        let text = metrics.render();
        assert!(
            text.contains(r#"rewind_release_info{namespace="ns",release="a",phase="RolledBack",version="1.0.0"} 1"#),
            "{text}"
        );
        assert!(
            !text.contains("Progressing"),
            "the old series is gone: {text}"
        );
        m.forget(&key);
        assert!(!metrics.render().contains("release=\"a\""));
        // A replica that stops leading shows none.
        m.show(key.clone(), info("Healthy", "1.0.0"));
        m.hide_info();
        assert!(!metrics.render().contains("release=\"a\""));
        m.show(key, info("Healthy", "1.0.0"));
        assert!(
            metrics.render().contains("release=\"a\""),
            "shown again when it leads"
        );
    }

    #[test]
    fn what_is_remembered_about_a_deleted_release_is_forgotten() {
        let m = Memory::default();
        let (a, b) = (
            ObjectRef::from_obj(&release("1")),
            ObjectRef::new("b").within("ns"),
        );
        for key in [&a, &b] {
            lock(&m.failures).insert(key.clone(), 3);
            m.wrote(key.clone(), 5);
        }
        m.forget(&a);
        assert_eq!(m.len(), 2, "only b's entries are left");
        m.retain(|k| k != &b);
        assert_eq!(m.len(), 0);
    }
}

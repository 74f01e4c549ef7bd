//! The IO shell around `decide::plan`: watches and caches (`watches`), one reconcile per
//! Release that gathers observations (`observe`), asks for a plan and carries it out
//! (`reconcile`: status, then Events, then the Deployment), and the error policy (`error`).

mod deploy;
mod error;
mod jobs;
pub(crate) mod observe;
mod policy;
mod reconcile;
mod trim;
mod watches;

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::{
    apps::v1::{Deployment, ReplicaSet},
    batch::v1::Job,
    core::v1::Pod,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    runtime::{
        Controller, WatchStreamExt,
        events::{Recorder, Reporter},
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};
use tracing::{info, warn};

pub use error::Error;
use reconcile::Memory;
pub use watches::CacheSync;
use watches::{WatchBackoff, Watches, tolerant_watch};

use crate::{
    api::{Release, RollbackPolicy},
    labels,
    leader::Leadership,
    metrics::{KindLabels, Metrics},
    registry::Resolver,
};

/// A test-only fault: exit the process right after writing a rollback phase, before acting
/// on it, to prove a restart resumes. Set with REWIND_TEST_EXIT_AFTER_PHASE=RestoringImages.
/// Compiled only with the `test-faults` feature (the integration tests build with it; release
/// builds do not), so the production binary has no way to be told to exit.
#[cfg(feature = "test-faults")]
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// Exit after a status write whose rollback is in this phase.
    pub exit_after_phase: Option<String>,
    /// Exit right after the Deployment patch of a rollback in flight
    /// (REWIND_TEST_EXIT_AFTER_RESTORE=1).
    pub exit_after_restore: bool,
    /// Pause this long inside the reconcile right after a status write whose rollback is in
    /// this phase, then go on (REWIND_TEST_PAUSE_AFTER_PHASE=RestoringImages:3s): a step in
    /// flight for a test to kill, freeze or stop.
    pub pause_after_phase: Option<(String, std::time::Duration)>,
    /// Pause this long right after creating a migration Job, before anything else
    /// (REWIND_TEST_PAUSE_AFTER_JOB=20s): a test kills the process then.
    pub pause_after_job: Option<std::time::Duration>,
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
    /// Migration Jobs labelled `rewind.dev/release`, trimmed.
    pub jobs: Store<Job>,
    /// Releases (the controller's own cache).
    pub releases: Store<Release>,
    /// Readiness of the caches and the spans when Rewind was blind.
    pub watches: Arc<Watches>,
    /// One recorder, so Events aggregate.
    pub recorder: Recorder,
    /// Metrics.
    pub metrics: Metrics,
    /// What is remembered per Release between reconciles.
    pub memory: Arc<Memory>,
    /// Test faults.
    #[cfg(feature = "test-faults")]
    pub faults: Faults,
    /// Tag-to-digest resolution against registries.
    pub resolver: Resolver,
    /// Whether this replica leads (a standby keeps its caches warm and acts on nothing).
    pub leader: Leadership,
    /// Read imagePullSecrets (and ServiceAccounts) for registry credentials.
    pub read_pull_secrets: bool,
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
    /// Whether this replica leads; `Leadership::always()` without leader election.
    pub leader: Leadership,
    /// Read imagePullSecrets (and ServiceAccounts) for registry credentials; off, lookups
    /// are anonymous and Rewind needs no access to Secrets.
    pub read_pull_secrets: bool,
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
    for key in [
        labels::ROLLBACK_TO,
        labels::REQUEST_ID,
        labels::REASON,
        labels::PAUSED,
        labels::RETRY,
        labels::REQUESTED_BY,
        labels::ALLOW_IRREVERSIBLE,
    ] {
        r.annotations().get(key).hash(&mut h);
    }
    Some(h.finish())
}

/// Yields each time this replica starts leading (never, without leader election).
pub(crate) fn became_leader(leader: &Leadership) -> impl futures::Stream<Item = ()> + use<> {
    futures::stream::unfold(leader.changes(), |mut rx| async move {
        loop {
            rx.changed().await.ok()?;
            if *rx.borrow_and_update() {
                return Some(((), rx));
            }
        }
    })
}

/// Run the controller until a signal arrives. `ready` turns true once every cache has its
/// first full list (the /readyz probe).
pub async fn run(client: Client, options: Options, metrics: Metrics, ready: Arc<CacheSync>) {
    let ns = &options.namespace;
    let watches = Watches::new(
        vec![
            "releases",
            "deployments",
            "pods",
            "replicasets",
            "rollbackpolicies",
            "jobs",
        ],
        ready,
    );
    let memory = Arc::new(Memory::new(metrics.release_info.clone()));
    let skipped = |metrics: &Metrics| {
        let family = metrics.objects_skipped.clone();
        move |kind: &'static str| {
            family.get_or_create(&KindLabels { kind }).inc();
        }
    };

    let (releases, release_writer) = reflector::store::<Release>();
    let release_stream = watches
        .follow(
            0,
            tolerant_watch::<Release, _>(
                &client,
                ns,
                watcher::Config::default(),
                skipped(&metrics),
            ),
        )
        .backoff(WatchBackoff::default())
        .modify(|r| r.managed_fields_mut().clear())
        .reflect(release_writer)
        .inspect({
            // Forget what is remembered about a deleted Release; after a full list, about
            // every Release that is gone (deletions missed while a watch was down).
            let (memory, store) = (memory.clone(), releases.clone());
            move |ev| match ev {
                Ok(watcher::Event::Delete(r)) => memory.forget(&ObjectRef::from_obj(r)),
                Ok(watcher::Event::InitDone) => memory.retain(|k| store.get(k).is_some()),
                _ => {}
            }
        })
        .applied_objects()
        .predicate_filter(release_predicate, Default::default());

    let (deployments, deployment_writer) = reflector::store::<Deployment>();
    let deployment_stream = watches
        .follow(
            1,
            watcher(api::<Deployment>(&client, ns), watcher::Config::default()),
        )
        .backoff(WatchBackoff::default())
        .modify(trim::deployment)
        .reflect(deployment_writer)
        .touched_objects();

    let (pods, pod_writer) = reflector::store::<Pod>();
    let pod_stream = watches
        .follow(
            2,
            watcher(
                api::<Pod>(&client, ns),
                watcher::Config::default().labels(labels::RELEASE),
            ),
        )
        .backoff(WatchBackoff::default())
        .modify(trim::pod)
        .reflect(pod_writer)
        .touched_objects();

    let (replica_sets, rs_writer) = reflector::store::<ReplicaSet>();
    let rs_stream = watches
        .follow(
            3,
            watcher(
                api::<ReplicaSet>(&client, ns),
                watcher::Config::default().labels(labels::RELEASE),
            ),
        )
        .backoff(WatchBackoff::default())
        .modify(trim::replica_set)
        .reflect(rs_writer)
        .touched_objects();

    let (policies, policy_writer) = reflector::store::<RollbackPolicy>();
    let policy_stream = watches
        .follow(
            4,
            tolerant_watch::<RollbackPolicy, _>(
                &client,
                ns,
                watcher::Config::default(),
                skipped(&metrics),
            ),
        )
        .backoff(WatchBackoff::default())
        .modify(|p| p.managed_fields_mut().clear())
        .reflect(policy_writer)
        .touched_objects();

    let (jobs, job_writer) = reflector::store::<Job>();
    let job_stream = watches
        .follow(
            5,
            watcher(
                api::<Job>(&client, ns),
                watcher::Config::default().labels(labels::RELEASE),
            ),
        )
        .backoff(WatchBackoff::default())
        .modify(trim::job)
        .reflect(job_writer)
        .touched_objects();

    tokio::spawn(watches.clone().probe(client.clone()));
    let ctx = Arc::new(Context {
        client: client.clone(),
        deployments,
        pods,
        replica_sets,
        policies,
        jobs,
        releases: releases.clone(),
        watches,
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: labels::MANAGER.into(),
                instance: std::env::var("POD_NAME").ok(),
            },
        ),
        metrics,
        memory,
        #[cfg(feature = "test-faults")]
        faults: options.faults.clone(),
        resolver: Resolver::new(options.registry.clone()),
        leader: options.leader.clone(),
        read_pull_secrets: options.read_pull_secrets,
    });

    let by_target = releases.clone();
    let by_policy = releases.clone();
    // The controller's runner is the only waiter on a store's readiness (see watches.rs).
    let controller = Controller::for_stream(release_stream, releases)
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
        .watches_stream(job_stream, |j: Job| {
            let ns = j.namespace()?;
            let release = j.labels().get(labels::RELEASE)?;
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
        // A standby does nothing; when it starts leading, it looks at every Release.
        .reconcile_all_on(became_leader(&options.leader))
        .shutdown_on_signal();

    // A replica that stops leading stops showing rewind_release_info: the leader's is the one
    // that counts (and it shows every Release again when it leads: `became_leader`).
    tokio::spawn({
        let (memory, mut changes) = (ctx.memory.clone(), options.leader.changes());
        async move {
            while changes.changed().await.is_ok() {
                if !*changes.borrow_and_update() {
                    memory.hide_info();
                }
            }
        }
    });
    // RollbackPolicies report their own validity (Ready/Invalid) from a small controller.
    tokio::spawn(policy::run(
        client.clone(),
        options.namespace.clone(),
        options.leader.clone(),
    ));
    controller
        .run(reconcile::reconcile, error::error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                match e {
                    kube::runtime::controller::Error::ObjectNotFound(_) => {}
                    // Leadership lost mid-reconcile: said once by the election loop.
                    other if crate::leader::refused(&other) => {}
                    other => warn!(error = %other, "controller"),
                }
            }
        })
        .await;
    info!("controller stopped");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ReleaseStatus;
    use serde_json::json;

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
        for key in [
            labels::ROLLBACK_TO,
            labels::REQUEST_ID,
            labels::REASON,
            labels::PAUSED,
        ] {
            let mut r = r.clone();
            r.annotations_mut().insert(key.into(), "1.0.0".into());
            assert_ne!(release_predicate(&r), base, "{key}");
        }
    }
}

//! Table-driven and scenario tests of [`plan`](super::plan), beside what they test; the
//! fixtures and the `World` simulator are here. Scenarios run the decision the way the
//! controller does: each plan's status is fed back into the Release, and a simulated
//! Deployment takes the applied template, then rolls it out (or not). Time is fixed: `t(s)`.

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::{
    Input, Plan, Policy, PolicyError, Template, TemplateContainer,
    clock::Blind,
    conditions,
    deploy::{agreed_digest, template_for},
    history::choose_target,
    views::{ContainerSlot, ContainerView, JobState, JobView, Observed, PodView, Workload},
};
use crate::{
    api::{
        ContainerImage, DigestSource, Outcome, Phase, PinnedImage, Release, ReleaseSpec,
        ReleaseStatus, Revision, RevisionRef, Rollback, RollbackPhase, RollbackTarget, TargetKind,
        TargetRef, Trigger,
    },
    image::{ImageRef, is_digest},
    labels, reasons,
    registry::ResolveError,
};

mod contest;
mod deploy;
mod fuzz;
mod history;
mod migrate;
mod plan;
mod registry;
mod requests;
mod resume;
mod rollback;

// ---- fixtures -------------------------------------------------------------------------------

const NAME: &str = "shop-api";
const NAMESPACE: &str = "shop";
const UID: &str = "5e1f0c2a-7b3d-4c1e-9a8f-0d6b2e4c1a90";
const DEPLOYMENT_UID: &str = "0b7d6c1e-2f4a-4e8b-9c3d-5a6e7f8a9b0c";
const REPO: &str = "registry.example/shop/api";

/// A fixed instant, `s` seconds after the tests' epoch.
fn t(s: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + s).unwrap()
}

/// A well-formed digest, distinct per `n`.
fn d(n: u32) -> String {
    format!("sha256:{n:064x}")
}

/// The api image by tag.
fn tag(version: &str) -> String {
    format!("{REPO}:{version}")
}

/// The api image pinned to `d(n)`.
fn pinned(n: u32) -> String {
    format!("{REPO}@{}", d(n))
}

/// What the registry serves for each tag (the digest pods report once they pull it).
fn registry() -> BTreeMap<String, String> {
    [
        ("0.9.0", 90),
        ("1.0.0", 1),
        ("2.0.0", 2),
        ("3.0.0", 3),
        ("4.0.0", 4),
        ("5.0.0", 5),
        ("6.0.0", 6),
    ]
    .into_iter()
    .map(|(v, n)| (tag(v), d(n)))
    .collect()
}

struct ReleaseBuilder {
    name: String,
    uid: String,
    generation: i64,
    version: String,
    images: Vec<(String, String)>,
    annotations: BTreeMap<String, String>,
    paused: bool,
}

/// A Release of `version` for Deployment `shop-api`, container `api` at `tag(version)`.
fn release(version: &str) -> ReleaseBuilder {
    ReleaseBuilder {
        name: NAME.into(),
        uid: UID.into(),
        generation: 1,
        version: version.into(),
        images: vec![("api".into(), tag(version))],
        annotations: BTreeMap::new(),
        paused: false,
    }
}

impl ReleaseBuilder {
    fn name(mut self, name: &str) -> Self {
        self.name = name.into();
        self
    }

    fn uid(mut self, uid: &str) -> Self {
        self.uid = uid.into();
        self
    }

    fn generation(mut self, generation: i64) -> Self {
        self.generation = generation;
        self
    }

    fn images(mut self, images: &[(&str, &str)]) -> Self {
        self.images = images
            .iter()
            .map(|(c, i)| ((*c).into(), (*i).into()))
            .collect();
        self
    }

    fn annotation(mut self, key: &str, value: &str) -> Self {
        self.annotations.insert(key.into(), value.into());
        self
    }

    fn paused(mut self) -> Self {
        self.paused = true;
        self
    }

    fn build(self) -> Release {
        let spec = ReleaseSpec {
            version: self.version,
            target: TargetRef {
                kind: TargetKind::Deployment,
                name: self.name.clone(),
            },
            images: self
                .images
                .into_iter()
                .map(|(container, image)| ContainerImage { container, image })
                .collect(),
            source: None,
            migration: None,
            policy_ref: None,
            paused: self.paused,
        };
        let mut r = Release::new(&self.name, spec);
        r.metadata.namespace = Some(NAMESPACE.into());
        r.metadata.uid = Some(self.uid);
        r.metadata.generation = Some(self.generation);
        if !self.annotations.is_empty() {
            r.metadata.annotations = Some(self.annotations);
        }
        r
    }
}

struct WorkloadBuilder(Workload);

/// Deployment `shop-api`: 3 replicas, container `api` with no image (GitOps leaves it out),
/// so no pod runs yet.
fn deployment() -> WorkloadBuilder {
    WorkloadBuilder(Workload {
        uid: DEPLOYMENT_UID.into(),
        generation: 1,
        observed_generation: 1,
        replicas: 3,
        updated: 0,
        available: 0,
        total: 0,
        template_revision: None,
        images: BTreeMap::from([(
            "api".to_owned(),
            ContainerSlot {
                image: String::new(),
                init: false,
            },
        )]),
        progress_deadline_exceeded: false,
        rollback_to: None,
        requested_by: None,
        image_managers: BTreeMap::new(),
    })
}

impl WorkloadBuilder {
    fn image(mut self, container: &str, image: &str) -> Self {
        self.0.images.insert(
            container.into(),
            ContainerSlot {
                image: image.into(),
                init: false,
            },
        );
        self
    }

    fn init_image(mut self, container: &str, image: &str) -> Self {
        self.0.images.insert(
            container.into(),
            ContainerSlot {
                image: image.into(),
                init: true,
            },
        );
        self
    }

    fn revision(mut self, revision: i64) -> Self {
        self.0.template_revision = Some(revision);
        self
    }

    /// Every replica updated and available.
    fn serving(mut self) -> Self {
        let w = &mut self.0;
        (w.observed_generation, w.updated, w.available, w.total) =
            (w.generation, w.replicas, w.replicas, w.replicas);
        self
    }

    /// A rollout in progress: the controller has not seen the new generation yet.
    fn rolling(mut self) -> Self {
        self.0.generation = self.0.observed_generation + 1;
        self
    }

    fn build(self) -> Workload {
        self.0
    }
}

#[derive(Clone, Copy, Debug)]
enum PodState {
    Ready,
    NotReady,
    CrashLoop(i32),
    ImagePull,
}

/// A pod in `state` whose containers report the given digests (none while it cannot pull).
fn pod(
    name: String,
    revision: Option<i64>,
    state: PodState,
    containers: &[(&str, Option<&str>)],
    created: Timestamp,
) -> PodView {
    PodView {
        name,
        revision,
        owner: None,
        created,
        terminating: false,
        ready: matches!(state, PodState::Ready),
        ready_changed: Some(created),
        containers: containers
            .iter()
            .map(|(c, digest)| ContainerView {
                name: (*c).into(),
                digest: if matches!(state, PodState::ImagePull) {
                    None
                } else {
                    digest.map(String::from)
                },
                restarts: if let PodState::CrashLoop(n) = state {
                    n
                } else {
                    0
                },
                waiting: match state {
                    PodState::CrashLoop(_) => Some("CrashLoopBackOff".into()),
                    PodState::ImagePull => Some("ErrImagePull".into()),
                    PodState::Ready | PodState::NotReady => None,
                },
            })
            .collect(),
    }
}

/// `n` pods of `revision` in `state`, container `api` reporting `digest`, created at t(0).
fn pods(n: usize, revision: Option<i64>, state: PodState, digest: Option<&str>) -> Vec<PodView> {
    let rev = revision.map_or("x".to_owned(), |r| r.to_string());
    (0..n)
        .map(|i| {
            pod(
                format!("{NAME}-r{rev}-{i}"),
                revision,
                state,
                &[("api", digest)],
                t(0),
            )
        })
        .collect()
}

fn ready_pods(n: usize, revision: Option<i64>, digest: &str) -> Vec<PodView> {
    pods(n, revision, PodState::Ready, Some(digest))
}

/// The template Rewind applies for a single `api` container.
fn template(revision: i64, version: &str, image: String) -> Template {
    Template {
        revision,
        version: version.into(),
        containers: vec![TemplateContainer {
            name: "api".into(),
            image,
            init: false,
        }],
    }
}

/// A template container.
fn tc(name: &str, image: impl Into<String>, init: bool) -> TemplateContainer {
    TemplateContainer {
        name: name.into(),
        image: image.into(),
        init,
    }
}

fn reasons(p: &Plan) -> Vec<&'static str> {
    p.events.iter().map(|n| n.reason).collect()
}

fn condition<'a>(s: &'a ReleaseStatus, type_: &str) -> &'a Condition {
    conditions::get(&s.conditions, type_)
        .unwrap_or_else(|| panic!("no {type_} condition in {:#?}", s.conditions))
}

/// A condition's status and reason.
fn cond(s: &ReleaseStatus, type_: &str) -> (String, String) {
    let c = condition(s, type_);
    (c.status.clone(), c.reason.clone())
}

fn is(status: &str, reason: &str) -> (String, String) {
    (status.into(), reason.into())
}

fn entry(s: &ReleaseStatus, revision: i64) -> &Revision {
    s.history
        .iter()
        .find(|r| r.revision == revision)
        .unwrap_or_else(|| panic!("no revision {revision} in {:#?}", s.history))
}

fn revisions(s: &ReleaseStatus) -> Vec<i64> {
    s.history.iter().map(|r| r.revision).collect()
}

fn rollback(s: &ReleaseStatus) -> &Rollback {
    s.rollback.as_ref().expect("a rollback in status")
}

/// A release, its policy, what the cluster shows and the time; see the module comment.
struct World {
    release: Release,
    policy: Policy,
    policy_error: Option<PolicyError>,
    workload: Option<Workload>,
    pods: Vec<PodView>,
    registry: BTreeMap<String, String>,
    /// What the registry answers when the planner asks ([`Plan::lookups`]); a reference
    /// missing here gets no answer (as if no lookup were possible).
    resolved: BTreeMap<String, Result<String, ResolveError>>,
    /// An older Release that manages the same Deployment.
    claimed_by: Option<String>,
    /// Spans when the controller could not see the cluster.
    blind: Vec<Blind>,
    /// The Release's migration Jobs: a Job a plan asks for appears (running) when the plan is
    /// carried out.
    jobs: Vec<JobView>,
    now: Timestamp,
}

impl World {
    fn new(release: Release, workload: Workload) -> Self {
        World {
            release,
            policy: Policy::default(),
            policy_error: None,
            workload: Some(workload),
            pods: Vec::new(),
            registry: registry(),
            resolved: BTreeMap::new(),
            claimed_by: None,
            blind: Vec::new(),
            jobs: Vec::new(),
            now: t(0),
        }
    }

    /// The plan for what the world shows now, made as the controller makes it: a first pass
    /// with no registry answers, then, if the planner asked for lookups, a second pass with the
    /// answers to exactly those. Changes nothing.
    ///
    /// Every scenario also checks that the planner asks for every answer it would use: a plan
    /// given every answer the registry has must equal the plan given only what was asked.
    fn plan(&self) -> Plan {
        let first = self.plan_with(&BTreeMap::new());
        let asked: BTreeMap<String, Result<String, ResolveError>> = first
            .lookups
            .iter()
            .filter_map(|r| Some((r.clone(), self.resolved.get(r)?.clone())))
            .collect();
        let p = if first.lookups.is_empty() {
            first
        } else {
            self.plan_with(&asked)
        };
        let oracle = self.plan_with(&self.resolved);
        assert_eq!(
            Plan {
                lookups: Vec::new(),
                ..oracle
            },
            Plan {
                lookups: Vec::new(),
                ..p.clone()
            },
            "the planner used a registry answer it did not ask for (lookups: {:?})",
            p.lookups
        );
        p
    }

    fn plan_with(&self, resolved: &BTreeMap<String, Result<String, ResolveError>>) -> Plan {
        let observed = Observed {
            workload: self.workload.clone(),
            pods: self.pods.clone(),
            jobs: self.jobs.clone(),
        };
        super::plan(&Input {
            release: &self.release,
            policy: &self.policy,
            policy_error: self.policy_error.clone(),
            observed: &observed,
            claimed_by: self.claimed_by.clone(),
            resolved,
            now: self.now,
            blind: &self.blind,
        })
    }

    /// Plan, write the status, apply the template (the Deployment starts a rollout).
    fn step(&mut self) -> Plan {
        let p = self.plan();
        self.release.status = Some(p.status.clone());
        for job in &p.jobs {
            if !self.jobs.iter().any(|j| j.name == job.name) {
                self.jobs.push(JobView {
                    name: job.name.clone(),
                    uid: format!("uid-{}", job.name),
                    deleting: false,
                    state: JobState::Running,
                    digest: None,
                    termination_message: None,
                });
            }
        }
        if let Some(template) = &p.apply {
            self.take_template(template);
        }
        p
    }

    /// The Job `name` ends in `state`.
    fn job_ends(&mut self, name: &str, state: JobState) -> &mut Self {
        let job = self
            .jobs
            .iter_mut()
            .find(|j| j.name == name)
            .unwrap_or_else(|| panic!("no Job {name}"));
        job.state = state;
        self
    }

    /// Server-side apply of Rewind's fields; a no-op apply does not bump the generation.
    fn take_template(&mut self, template: &Template) {
        let w = self
            .workload
            .as_mut()
            .expect("templates are only applied to a Deployment that exists");
        let before = w.clone();
        w.template_revision = Some(template.revision);
        for c in &template.containers {
            w.images.insert(
                c.name.clone(),
                ContainerSlot {
                    image: c.image.clone(),
                    init: c.init,
                },
            );
        }
        if *w != before {
            w.generation += 1;
            w.updated = 0;
        }
    }

    fn at(&mut self, s: i64) -> &mut Self {
        self.now = t(s);
        self
    }

    fn status(&self) -> &ReleaseStatus {
        self.release.status.as_ref().expect("a status")
    }

    fn digest_of(&self, image: &str) -> Option<String> {
        if image.is_empty() {
            return None;
        }
        ImageRef::parse(image)
            .digest
            .filter(|d| is_digest(d))
            .map(String::from)
            .or_else(|| self.registry.get(image).cloned())
    }

    /// One pod per replica of the current template, created now.
    fn template_pods(&self, state: PodState) -> Vec<PodView> {
        let w = self.workload.as_ref().expect("a Deployment");
        let digests: Vec<(&str, Option<String>)> = w
            .images
            .iter()
            .map(|(c, s)| (c.as_str(), self.digest_of(&s.image)))
            .collect();
        let containers: Vec<(&str, Option<&str>)> =
            digests.iter().map(|(c, d)| (*c, d.as_deref())).collect();
        let rev = w
            .template_revision
            .map_or("x".to_owned(), |r| r.to_string());
        (0..w.replicas)
            .map(|i| {
                pod(
                    format!("{NAME}-r{rev}-{i}"),
                    w.template_revision,
                    state,
                    &containers,
                    self.now,
                )
            })
            .collect()
    }

    /// The current template finished rolling out: every replica a Ready pod of it.
    fn roll_out(&mut self) -> &mut Self {
        self.pods = self.template_pods(PodState::Ready);
        let w = self.workload.as_mut().expect("a Deployment");
        (w.observed_generation, w.updated, w.available, w.total) =
            (w.generation, w.replicas, w.replicas, w.replicas);
        w.progress_deadline_exceeded = false;
        self
    }

    /// The current template's pods come up in `state`, none available.
    fn pods_come_up(&mut self, state: PodState) -> &mut Self {
        self.pods = self.template_pods(state);
        let w = self.workload.as_mut().expect("a Deployment");
        (w.observed_generation, w.updated, w.available, w.total) =
            (w.generation, w.replicas, 0, w.replicas);
        self
    }

    /// A new spec: version `v`, api image `tag(v)`.
    fn set_version(&mut self, v: &str) -> &mut Self {
        self.release.spec.version = v.into();
        self.release.spec.images = vec![ContainerImage {
            container: "api".into(),
            image: tag(v),
        }];
        *self.release.metadata.generation.get_or_insert(0) += 1;
        self
    }

    fn annotate(&mut self, key: &str, value: &str) -> &mut Self {
        self.release
            .metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(key.into(), value.into());
        self
    }

    fn remove_annotation(&mut self, key: &str) -> &mut Self {
        if let Some(a) = self.release.metadata.annotations.as_mut() {
            a.remove(key);
        }
        self
    }

    fn workload_mut(&mut self) -> &mut Workload {
        self.workload.as_mut().expect("a Deployment")
    }

    /// Deploy `v` at `at`; it becomes healthy at `at+20` (and is pinned), settles at `at+40`.
    fn deploy_healthy(&mut self, v: &str, at: i64) -> &mut Self {
        self.set_version(v).at(at).step();
        self.at(at + 20).roll_out().step();
        self.at(at + 40).roll_out().step();
        assert_eq!(
            self.status().phase,
            Some(Phase::Healthy),
            "{v} healthy: {:#?}",
            self.status()
        );
        self
    }

    /// Deploy `v` at `at`; its pods crash-loop from `at+10`. Returns the plan that saw it.
    fn deploy_crashing(&mut self, v: &str, at: i64) -> Plan {
        self.set_version(v).at(at).step();
        self.at(at + 10).pods_come_up(PodState::CrashLoop(3)).step()
    }

    /// The rollback target's template rolls out at `at`: the rollback succeeds.
    fn complete_rollback(&mut self, at: i64) -> Plan {
        let p = self.at(at).roll_out().step();
        assert_eq!(
            rollback(&p.status).phase,
            RollbackPhase::Succeeded,
            "{:#?}",
            p.status
        );
        p
    }
}

/// v1 on an image-less Deployment: deployed at t(0), healthy and pinned at t(20), settled
/// at t(40). History: revision 1 only.
fn healthy_v1() -> World {
    let mut w = World::new(release("1.0.0").build(), deployment().build());
    w.at(0).step();
    w.at(20).roll_out().step();
    w.at(40).roll_out().step();
    assert_eq!(w.status().phase, Some(Phase::Healthy));
    w
}

/// `healthy_v1`, then v2 (deployed at t(100)) never Ready: rolled back by readiness at t(400),
/// v1 restored and rolled out at t(430). v2 is blocked.
fn rolled_back_v2() -> World {
    let mut w = healthy_v1();
    w.set_version("2.0.0").at(100).step();
    w.at(110).pods_come_up(PodState::NotReady).step();
    w.at(400).step();
    w.at(410).step();
    w.complete_rollback(430);
    w
}

/// The same inputs decide the same status, and nothing to do.
fn assert_settled(w: &mut World, at: i64) {
    let before = w.status().clone();
    let p = w.at(at).step();
    assert_eq!(
        p.status, before,
        "status changed on a plan with nothing new"
    );
    assert_eq!(p.apply, None);
    assert_eq!(p.events, []);
    assert_eq!(p.finished, None);
}

fn rev(
    n: i64,
    version: &str,
    outcome: Outcome,
    healthy_at: Option<i64>,
    digest: Option<u32>,
) -> Revision {
    Revision {
        revision: n,
        version: version.into(),
        images: vec![PinnedImage {
            container: "api".into(),
            image: tag(version),
            digest: digest.map(d),
            resolved_from: digest.map(|_| DigestSource::PodStatus),
        }],
        migration: None,
        deployed_over: None,
        source: None,
        deployed_at: Some(Time(t(n * 100))),
        healthy_at: healthy_at.map(|s| Time(t(s))),
        outcome,
        failure: None,
    }
}

/// `healthy_v1`, with the registry answering every lookup from `registry()`.
fn world_with_registry() -> World {
    let mut w = healthy_v1();
    w.resolved = w
        .registry
        .iter()
        .map(|(k, v)| (k.clone(), Ok(v.clone())))
        .collect();
    w
}

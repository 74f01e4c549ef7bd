//! Table-driven and scenario tests of [`plan`]. Scenarios run the decision the way the
//! controller does: each plan's status is fed back into the Release, and a simulated
//! Deployment takes the applied template, then rolls it out (or not). Time is fixed: `t(s)`.

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use super::*;
use crate::api::{ContainerImage, ReleaseSpec, TargetKind, TargetRef};
use observe::{ContainerSlot, ContainerView};

// ---- fixtures -------------------------------------------------------------------------------

const NAME: &str = "shop-api";
const NAMESPACE: &str = "shop";
const UID: &str = "5e1f0c2a-7b3d-4c1e-9a8f-0d6b2e4c1a90";
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
        containers: vec![("api".into(), image, false)],
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
    policy_error: Option<String>,
    workload: Option<Workload>,
    pods: Vec<PodView>,
    registry: BTreeMap<String, String>,
    /// What the registry answered before the plan (the controller asks for
    /// `images_to_resolve`); empty: nothing was asked.
    resolved: BTreeMap<String, Result<String, ResolveError>>,
    /// An older Release that manages the same Deployment.
    claimed_by: Option<String>,
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
            now: t(0),
        }
    }

    /// The plan for what the world shows now; changes nothing.
    fn plan(&self) -> Plan {
        let observed = Observed {
            workload: self.workload.clone(),
            pods: self.pods.clone(),
        };
        super::plan(&Input {
            release: &self.release,
            policy: &self.policy,
            policy_error: self.policy_error.clone(),
            observed: &observed,
            claimed_by: self.claimed_by.clone(),
            resolved: &self.resolved,
            now: self.now,
        })
    }

    /// Plan, write the status, apply the template (the Deployment starts a rollout).
    fn step(&mut self) -> Plan {
        let p = self.plan();
        self.release.status = Some(p.status.clone());
        if let Some(template) = &p.apply {
            self.take_template(template);
        }
        p
    }

    /// Server-side apply of Rewind's fields; a no-op apply does not bump the generation.
    fn take_template(&mut self, template: &Template) {
        let w = self
            .workload
            .as_mut()
            .expect("templates are only applied to a Deployment that exists");
        let before = w.clone();
        w.template_revision = Some(template.revision);
        for (c, image, init) in &template.containers {
            w.images.insert(
                c.clone(),
                ContainerSlot {
                    image: image.clone(),
                    init: *init,
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

// ---- pure helpers -------------------------------------------------------------------------

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
        source: None,
        deployed_at: Some(Time(t(n * 100))),
        healthy_at: healthy_at.map(|s| Time(t(s))),
        outcome,
        failure: None,
    }
}

#[test]
fn choose_target_last_healthy_vs_previous() {
    use Outcome::*;
    let no_images = Revision {
        images: vec![],
        ..rev(1, "1.0.0", Superseded, Some(100), Some(1))
    };
    // (name, history, failed revision, LastHealthy, Previous)
    type Case = (&'static str, Vec<Revision>, i64, Option<i64>, Option<i64>);
    let cases: Vec<Case> = vec![
        (
            "previous is healthy: both pick it",
            vec![
                rev(3, "3.0.0", Pending, None, None),
                rev(2, "2.0.0", Superseded, Some(200), Some(2)),
                rev(1, "1.0.0", Superseded, Some(100), Some(1)),
            ],
            3,
            Some(2),
            Some(2),
        ),
        (
            "previous failed: LastHealthy skips it, Previous gives up",
            vec![
                rev(3, "3.0.0", Pending, None, None),
                rev(2, "2.0.0", Failed, Some(200), Some(2)),
                rev(1, "1.0.0", Superseded, Some(100), Some(1)),
            ],
            3,
            Some(1),
            None,
        ),
        (
            "previous was never healthy",
            vec![
                rev(3, "3.0.0", Pending, None, None),
                rev(2, "2.0.0", Superseded, None, Some(2)),
                rev(1, "1.0.0", Superseded, Some(100), Some(1)),
            ],
            3,
            Some(1),
            None,
        ),
        (
            "previous has no recorded digest",
            vec![
                rev(3, "3.0.0", Pending, None, None),
                rev(2, "2.0.0", Superseded, Some(200), None),
                rev(1, "1.0.0", Superseded, Some(100), Some(1)),
            ],
            3,
            Some(1),
            None,
        ),
        (
            "newer revisions than the failed one are not targets",
            vec![
                rev(4, "4.0.0", Superseded, Some(400), Some(4)),
                rev(3, "3.0.0", Pending, None, None),
                rev(2, "2.0.0", Superseded, Some(200), Some(2)),
            ],
            3,
            Some(2),
            Some(2),
        ),
        (
            "adopted revision 0 is a target",
            vec![
                rev(1, "1.0.0", Pending, None, None),
                rev(0, "adopted", Superseded, Some(0), Some(90)),
            ],
            1,
            Some(0),
            Some(0),
        ),
        (
            "nothing older",
            vec![rev(1, "1.0.0", Pending, None, None)],
            1,
            None,
            None,
        ),
        (
            "a revision without images is not a target",
            vec![rev(2, "2.0.0", Pending, None, None), no_images],
            2,
            None,
            None,
        ),
    ];
    for (name, history, failed, last_healthy, previous) in cases {
        let got = |target| choose_target(&history, failed, target).map(|r| r.revision);
        assert_eq!(
            got(RollbackTarget::LastHealthy),
            last_healthy,
            "{name}: LastHealthy"
        );
        assert_eq!(got(RollbackTarget::Previous), previous, "{name}: Previous");
    }
}

#[test]
fn agreed_digest_needs_every_reporting_pod_to_agree() {
    let with = |digests: &[Option<u32>]| -> Vec<PodView> {
        digests
            .iter()
            .enumerate()
            .map(|(i, n)| {
                pod(
                    format!("p{i}"),
                    Some(1),
                    PodState::Ready,
                    &[("api", n.map(d).as_deref()), ("side", Some(&d(77)))],
                    t(0),
                )
            })
            .collect()
    };
    let cases: [(&str, Vec<PodView>, Option<String>); 5] = [
        ("no pods", vec![], None),
        ("all agree", with(&[Some(1), Some(1)]), Some(d(1))),
        (
            "pods still pulling are not a disagreement",
            with(&[None, Some(1), None]),
            Some(d(1)),
        ),
        ("pods disagree", with(&[Some(1), Some(2)]), None),
        ("nobody reports one", with(&[None, None]), None),
    ];
    for (name, pods, want) in cases {
        let refs: Vec<&PodView> = pods.iter().collect();
        assert_eq!(agreed_digest(&refs, "api"), want, "{name}");
    }
    let pods = with(&[Some(1)]);
    assert_eq!(
        agreed_digest(&pods.iter().collect::<Vec<_>>(), "side"),
        Some(d(77)),
        "each container on its own"
    );
    assert_eq!(
        agreed_digest(&pods.iter().collect::<Vec<_>>(), "other"),
        None
    );
}

#[test]
fn template_pins_known_digests_and_marks_init_containers() {
    let entry = Revision {
        images: vec![
            PinnedImage {
                container: "api".into(),
                image: tag("1.0.0"),
                digest: Some(d(1)),
                resolved_from: Some(DigestSource::PodStatus),
            },
            PinnedImage {
                container: "setup".into(),
                image: "registry.example/shop/setup:1.0.0".into(),
                digest: Some(d(8)),
                resolved_from: Some(DigestSource::Registry),
            },
            PinnedImage {
                container: "worker".into(),
                image: "registry.example/shop/worker:1.0.0".into(),
                digest: None,
                resolved_from: None,
            },
        ],
        ..rev(1, "1.0.0", Outcome::Healthy, Some(0), None)
    };
    let w = deployment()
        .init_image("setup", "")
        .image("worker", "")
        .build();
    let pinned_template = template_for(&entry, &w, true);
    assert_eq!(
        (pinned_template.revision, pinned_template.version.as_str()),
        (1, "1.0.0")
    );
    assert_eq!(
        pinned_template.containers,
        [
            ("api".to_owned(), pinned(1), false),
            (
                "setup".to_owned(),
                format!("registry.example/shop/setup@{}", d(8)),
                true
            ),
            (
                "worker".to_owned(),
                "registry.example/shop/worker:1.0.0".to_owned(),
                false
            ),
        ]
    );
    let as_written = template_for(&entry, &w, false);
    let images: Vec<&str> = as_written
        .containers
        .iter()
        .map(|(_, i, _)| i.as_str())
        .collect();
    assert_eq!(
        images,
        [
            tag("1.0.0").as_str(),
            "registry.example/shop/setup:1.0.0",
            "registry.example/shop/worker:1.0.0"
        ]
    );
}

// ---- adopting and deploying ------------------------------------------------------------------

#[test]
fn first_reconcile_adopts_running_image_as_revision_0_then_deploys_revision_1() {
    let mut w = World::new(
        release("1.0.0").build(),
        deployment().image("api", &tag("0.9.0")).serving().build(),
    );
    w.pods = ready_pods(3, None, &d(90));
    let p = w.plan();

    assert_eq!(reasons(&p), [reason::ADOPTED, reason::DEPLOYING]);
    assert!(p.events.iter().all(|e| !e.warning));
    assert!(
        p.events[0].message.contains(&pinned(90)),
        "{}",
        p.events[0].message
    );
    // The Plan carries both: the status recording revision 0 (written first) and the template.
    assert_eq!(p.apply, Some(template(1, "1.0.0", tag("1.0.0"))));
    let s = &p.status;
    assert_eq!(revisions(s), [1, 0]);
    let r0 = entry(s, 0);
    assert_eq!(r0.version, "adopted");
    assert_eq!(
        r0.images,
        [PinnedImage {
            container: "api".into(),
            image: tag("0.9.0"),
            digest: Some(d(90)),
            resolved_from: Some(DigestSource::PodStatus)
        }]
    );
    assert_eq!(r0.healthy_at, Some(Time(t(0))));
    assert_eq!(r0.outcome, Outcome::Superseded);
    let r1 = entry(s, 1);
    assert_eq!(
        (r1.version.as_str(), r1.outcome, r1.deployed_at.clone()),
        ("1.0.0", Outcome::Pending, Some(Time(t(0))))
    );
    assert_eq!(r1.images[0].digest, None);
    assert_eq!(
        (s.revision, s.version.as_deref(), s.phase),
        (Some(1), Some("1.0.0"), Some(Phase::Progressing))
    );
    assert_eq!(s.observed_generation, Some(1));
    assert_eq!(cond(s, conditions::READY), is("False", reason::PROGRESSING));
    assert_eq!(
        cond(s, conditions::RECONCILING),
        is("True", reason::PROGRESSING)
    );
    assert_eq!(
        cond(s, conditions::STALLED),
        is("False", reason::PROGRESSING)
    );
    assert_eq!(p.recheck, Some(t(300)), "readiness deadline");
}

#[test]
fn adoption_records_what_runs() {
    struct Case {
        name: &'static str,
        workload: Workload,
        pods: Vec<PodView>,
        /// Revision 0's digest and its source, and whether it was healthy; None: no revision 0.
        want: Option<(Option<String>, Option<DigestSource>, bool)>,
    }
    let running = |image: &str| deployment().image("api", image).serving().build();
    let mut disagree = ready_pods(2, None, &d(90));
    disagree.extend(ready_pods(1, None, &d(91)));
    let mut not_ours = ready_pods(3, Some(7), &d(7));
    not_ours.extend(pods(1, None, PodState::Ready, None));
    let cases = vec![
        Case {
            name: "pods agree",
            workload: running(&tag("0.9.0")),
            pods: ready_pods(3, None, &d(90)),
            want: Some((Some(d(90)), Some(DigestSource::PodStatus), true)),
        },
        Case {
            name: "pods disagree",
            workload: running(&tag("0.9.0")),
            pods: disagree,
            want: Some((None, None, true)),
        },
        Case {
            name: "pods report no digest yet",
            workload: running(&tag("0.9.0")),
            pods: pods(3, None, PodState::NotReady, None),
            want: Some((None, None, true)),
        },
        Case {
            name: "the reference carries the digest",
            workload: running(&pinned(90)),
            pods: vec![],
            want: Some((Some(d(90)), Some(DigestSource::Reference), true)),
        },
        Case {
            name: "pods of a Rewind revision are not what runs",
            workload: running(&tag("0.9.0")),
            pods: not_ours,
            want: Some((None, None, true)),
        },
        Case {
            name: "a rollout in progress is not healthy",
            workload: deployment()
                .image("api", &tag("0.9.0"))
                .serving()
                .rolling()
                .build(),
            pods: ready_pods(3, None, &d(90)),
            want: Some((Some(d(90)), Some(DigestSource::PodStatus), false)),
        },
        Case {
            name: "no image in the template: nothing to adopt",
            workload: deployment().build(),
            pods: vec![],
            want: None,
        },
    ];
    for c in cases {
        let mut w = World::new(release("1.0.0").build(), c.workload);
        w.pods = c.pods;
        let p = w.plan();
        let r0 = p.status.history.iter().find(|r| r.revision == 0);
        match (&c.want, r0) {
            (None, None) => assert_eq!(reasons(&p), [reason::DEPLOYING], "{}", c.name),
            (Some((digest, from, healthy)), Some(r0)) => {
                assert_eq!(
                    (&r0.images[0].digest, &r0.images[0].resolved_from),
                    (digest, from),
                    "{}",
                    c.name
                );
                assert_eq!(r0.healthy_at.is_some(), *healthy, "{}", c.name);
                assert_eq!(
                    reasons(&p),
                    [reason::ADOPTED, reason::DEPLOYING],
                    "{}",
                    c.name
                );
            }
            (want, got) => panic!("{}: want {want:?}, got {got:?}", c.name),
        }
        assert_eq!(
            p.apply,
            Some(template(1, "1.0.0", tag("1.0.0"))),
            "{}",
            c.name
        );
    }
}

#[test]
fn deployment_without_image_gets_no_revision_0() {
    let w = World::new(release("1.0.0").build(), deployment().build());
    let p = w.plan();
    assert_eq!(revisions(&p.status), [1]);
    assert_eq!(reasons(&p), [reason::DEPLOYING]);
    assert_eq!(p.apply, Some(template(1, "1.0.0", tag("1.0.0"))));
}

#[test]
fn digest_is_captured_from_pods_of_the_live_revision() {
    let mut w = World::new(release("1.0.0").build(), deployment().build());
    w.at(0).step();
    // Running but not Ready yet: the image was pulled, so imageID already names the digest.
    let p = w.at(10).pods_come_up(PodState::NotReady).step();
    assert_eq!(reasons(&p), [reason::DIGEST_RECORDED]);
    assert!(
        p.events[0].message.contains(&d(1)),
        "{}",
        p.events[0].message
    );
    let api = &entry(&p.status, 1).images[0];
    assert_eq!(
        (api.digest.as_deref(), api.resolved_from),
        (Some(d(1).as_str()), Some(DigestSource::PodStatus))
    );
    assert_eq!(p.apply, None, "not pinned before healthy");
    assert_eq!(p.status.phase, Some(Phase::Progressing));
    assert_eq!(p.recheck, Some(t(300)));
    // Recorded once.
    let p = w.at(15).step();
    assert_eq!(p.events, []);
}

#[test]
fn pods_disagreeing_about_a_digest_record_none_and_nothing_is_pinned() {
    let mut w = World::new(release("1.0.0").build(), deployment().build());
    w.at(0).step();
    w.at(20).roll_out();
    // The tag moved between two pulls: two pods run other bits than the third.
    w.pods[2].containers[0].digest = Some(d(11));
    let p = w.step();
    assert_eq!(reasons(&p), [reason::HEALTHY]);
    assert_eq!(entry(&p.status, 1).images[0].digest, None);
    assert_eq!(p.status.phase, Some(Phase::Healthy));
    assert_eq!(p.apply, None, "nothing to pin to");
}

#[test]
fn healthy_revision_is_pinned_once_all_digests_are_known() {
    let worker = "registry.example/shop/worker:1.0.0";
    let r = release("1.0.0")
        .images(&[("api", &tag("1.0.0")), ("worker", worker)])
        .build();
    let mut w = World::new(r, deployment().image("worker", "").build());
    let p = w.at(0).step();
    assert_eq!(p.apply.as_ref().map(|t| t.containers.len()), Some(2));
    // The worker's registry cannot be read back from pod status yet: no digest for it.
    w.registry.remove(worker);
    let p = w.at(20).roll_out().step();
    assert_eq!(reasons(&p), [reason::DIGEST_RECORDED, reason::HEALTHY]);
    assert_eq!(p.status.phase, Some(Phase::Healthy));
    assert_eq!(
        cond(&p.status, conditions::READY),
        is("True", reason::HEALTHY)
    );
    assert_eq!(cond(&p.status, conditions::RECONCILING).0, "False");
    assert_eq!(cond(&p.status, conditions::STALLED).0, "False");
    let e = entry(&p.status, 1);
    assert_eq!(
        (e.outcome, e.healthy_at.clone()),
        (Outcome::Healthy, Some(Time(t(20))))
    );
    assert_eq!(p.apply, None, "one digest unknown: not pinned");
    assert_eq!(p.recheck, Some(t(20 + 900)), "end of the guard window");

    // The worker's digest shows up: both recorded, the Deployment is pinned.
    w.registry.insert(worker.into(), d(21));
    let p = w.at(30).roll_out().step();
    assert_eq!(reasons(&p), [reason::DIGEST_RECORDED, reason::PINNED]);
    let want = Template {
        revision: 1,
        version: "1.0.0".into(),
        containers: vec![
            ("api".into(), pinned(1), false),
            (
                "worker".into(),
                format!("registry.example/shop/worker@{}", d(21)),
                false,
            ),
        ],
    };
    assert_eq!(p.apply, Some(want));
    // Already pinned: nothing applied.
    let p = w.at(60).roll_out().step();
    assert_eq!(p.apply, None);
    assert_eq!(p.events, []);
}

#[test]
fn settled_healthy_release_replans_to_the_same_status_without_apply_or_events() {
    let mut w = World::new(release("1.0.0").build(), deployment().build());
    w.at(0).step();
    let p = w.at(20).roll_out().step();
    assert_eq!(
        reasons(&p),
        [reason::DIGEST_RECORDED, reason::HEALTHY, reason::PINNED]
    );
    assert_eq!(p.apply, Some(template(1, "1.0.0", pinned(1))));
    let p = w.at(40).roll_out().step();
    assert_eq!(p.apply, None, "already pinned");
    assert_eq!(p.events, []);
    assert_settled(&mut w, 100);
    assert_settled(&mut w, 2000);
    let ready = condition(w.status(), conditions::READY);
    assert_eq!(
        (ready.status.as_str(), ready.last_transition_time.0),
        ("True", t(20)),
        "lastTransitionTime kept"
    );
}

#[test]
fn healthy_revision_repins_a_deployment_someone_changed() {
    let mut w = healthy_v1();
    let g = w.workload_mut();
    g.images.get_mut("api").unwrap().image = tag("1.0.0");
    g.generation += 1;
    let p = w.at(100).step();
    assert_eq!(p.apply, Some(template(1, "1.0.0", pinned(1))));
    assert_eq!(reasons(&p), [reason::PINNED]);
}

#[test]
fn reverting_spec_to_an_earlier_version_reuses_its_recorded_digests() {
    let mut w = healthy_v1();
    w.deploy_healthy("2.0.0", 100);
    // The 1.0.0 tag moved since; the revert must bring back the bits that ran.
    w.registry.insert(tag("1.0.0"), d(100));
    let p = w.set_version("1.0.0").at(200).step();
    assert_eq!(
        p.apply,
        Some(template(3, "1.0.0", pinned(1))),
        "pinned before any pod runs"
    );
    assert_eq!(revisions(&p.status), [3, 2, 1]);
    let r3 = entry(&p.status, 3);
    assert_eq!(
        (r3.images[0].digest.as_deref(), r3.images[0].resolved_from),
        (Some(d(1).as_str()), Some(DigestSource::PodStatus))
    );
    assert_eq!(entry(&p.status, 2).outcome, Outcome::Superseded);
    assert_eq!(reasons(&p), [reason::DEPLOYING]);
    assert!(
        p.events[0]
            .message
            .contains("1 digest(s) known before rollout"),
        "{}",
        p.events[0].message
    );
    let p = w.at(220).roll_out().step();
    assert_eq!(
        reasons(&p),
        [reason::HEALTHY],
        "nothing new to record or pin"
    );
    assert_eq!(p.apply, None);
}

#[test]
fn a_digest_reference_is_pinned_from_the_start() {
    let r = release("1.0.0")
        .images(&[("api", &format!("{}@{}", tag("1.0.0"), d(1)))])
        .build();
    let w = World::new(r, deployment().build());
    let p = w.plan();
    assert_eq!(p.apply, Some(template(1, "1.0.0", pinned(1))));
    assert_eq!(
        entry(&p.status, 1).images[0].resolved_from,
        Some(DigestSource::Reference)
    );
}

// ---- failing and rolling back -----------------------------------------------------------------

#[test]
fn rolls_back_when_new_pods_never_become_ready() {
    let mut w = healthy_v1();
    let p = w.set_version("2.0.0").at(100).step();
    assert_eq!(p.apply, Some(template(2, "2.0.0", tag("2.0.0"))));
    assert_eq!(p.recheck, Some(t(400)));
    assert_eq!(entry(&p.status, 1).outcome, Outcome::Superseded);
    let p = w.at(110).pods_come_up(PodState::NotReady).step();
    assert_eq!(reasons(&p), [reason::DIGEST_RECORDED]);
    assert_eq!(
        p.recheck,
        Some(t(400)),
        "requeue exactly at the readiness deadline"
    );
    let p = w.at(399).step();
    assert_eq!(
        (p.status.phase, p.apply.clone(), p.status.rollback.clone()),
        (Some(Phase::Progressing), None, None)
    );

    // The controller comes back late; the failure is dated at the deadline.
    let p = w.at(430).step();
    let rb = rollback(&p.status);
    assert_eq!(
        (rb.trigger, rb.reason.as_str(), rb.phase),
        (
            Trigger::Readiness,
            "ReadinessTimeout",
            RollbackPhase::RestoringImages
        )
    );
    assert_eq!(
        (rb.detected_at.0, rb.started_at.clone()),
        (t(400), Some(Time(t(430))))
    );
    assert_eq!(
        (&rb.from, &rb.to),
        (
            &RevisionRef {
                revision: 2,
                version: "2.0.0".into()
            },
            &RevisionRef {
                revision: 1,
                version: "1.0.0".into()
            }
        )
    );
    assert_eq!(rb.id, "5e1f0c2a-2-1-1800000400");
    assert_eq!(rb.requested_by, None);
    let failure = entry(&p.status, 2)
        .failure
        .clone()
        .expect("failure recorded");
    assert_eq!(
        (entry(&p.status, 2).outcome, failure.trigger, failure.at.0),
        (Outcome::Failed, Trigger::Readiness, t(400))
    );
    assert_eq!(p.apply, Some(template(1, "1.0.0", pinned(1))));
    assert_eq!(reasons(&p), [reason::ROLLBACK_STARTED]);
    assert!(p.events[0].warning);
    assert_eq!(p.status.phase, Some(Phase::RollingBack));
    assert_eq!(
        cond(&p.status, conditions::READY),
        is("False", reason::ROLLING_BACK)
    );
    assert_eq!(cond(&p.status, conditions::RECONCILING).0, "True");
    assert_eq!(p.finished, None);

    // The Deployment runs v1 again; its rollout is under way.
    let p = w.at(440).step();
    let rb = rollback(&p.status);
    assert_eq!(
        (rb.phase, rb.images_restored_at.clone()),
        (RollbackPhase::Verifying, Some(Time(t(440))))
    );
    assert_eq!(p.apply, None);
    assert_eq!(reasons(&p), [reason::IMAGES_RESTORED]);
    assert_eq!(p.recheck, Some(t(740)));
    assert_eq!(p.status.phase, Some(Phase::RollingBack));

    // Rolled out: done.
    let p = w.at(470).roll_out().step();
    let rb = rollback(&p.status).clone();
    assert_eq!(
        (rb.phase, rb.completed_at.clone(), rb.duration_seconds),
        (RollbackPhase::Succeeded, Some(Time(t(470))), Some(70.0))
    );
    assert_eq!(p.status.rollbacks, std::slice::from_ref(&rb));
    assert_eq!(p.finished, Some(rb));
    assert_eq!(
        (p.status.revision, p.status.version.as_deref()),
        (Some(1), Some("1.0.0"))
    );
    let blocked = p.status.blocked.clone().expect("v2 blocked");
    assert_eq!(
        (blocked.version.as_str(), blocked.since.0),
        ("2.0.0", t(470))
    );
    assert_eq!(p.status.phase, Some(Phase::RolledBack));
    assert_eq!(
        cond(&p.status, conditions::READY),
        is("False", reason::ROLLED_BACK)
    );
    assert_eq!(
        cond(&p.status, conditions::STALLED),
        is("True", reason::ROLLED_BACK)
    );
    assert_eq!(cond(&p.status, conditions::RECONCILING).0, "False");
    assert_eq!(
        cond(&p.status, conditions::ROLLED_BACK),
        is("True", reason::ROLLED_BACK)
    );
    assert_eq!(
        (entry(&p.status, 1).outcome, entry(&p.status, 2).outcome),
        (Outcome::Healthy, Outcome::Failed)
    );
    assert_eq!(reasons(&p), [reason::ROLLBACK_SUCCEEDED]);
    assert_eq!(p.apply, None);

    // spec.version is still 2.0.0: it is not applied again.
    for now in [500, 1000, 5000] {
        let p = w.at(now).step();
        assert_eq!(
            (p.apply.clone(), p.events.clone(), p.finished.clone()),
            (None, vec![], None),
            "at {now}"
        );
        assert_eq!(p.status.phase, Some(Phase::RolledBack));
        assert_eq!(
            p.status.blocked.as_ref().map(|b| b.version.as_str()),
            Some("2.0.0")
        );
        assert!(
            p.status
                .conditions
                .iter()
                .all(|c| c.last_transition_time.0 <= t(470))
        );
    }
}

#[test]
fn failures_roll_back_at_once_or_at_their_deadline() {
    struct Case {
        name: &'static str,
        setup: fn(&mut World),
        now: i64,
        /// Trigger, reason, detectedAt; None: no rollback yet.
        want: Option<(Trigger, &'static str, i64)>,
        recheck: Option<i64>,
    }
    let cases = [
        Case {
            name: "crash loop at the restart limit",
            setup: |w| {
                w.at(110).pods_come_up(PodState::CrashLoop(3));
            },
            now: 120,
            want: Some((Trigger::CrashLoop, "CrashLoopBackOff", 120)),
            recheck: None,
        },
        Case {
            name: "crash loop below the limit waits",
            setup: |w| {
                w.at(110).pods_come_up(PodState::CrashLoop(2));
            },
            now: 120,
            want: None,
            recheck: Some(400),
        },
        Case {
            name: "image pull inside its window waits for its end",
            setup: |w| {
                w.at(110).pods_come_up(PodState::ImagePull);
            },
            now: 200,
            want: None,
            recheck: Some(230),
        },
        Case {
            name: "image pull failing for failFor since pod creation",
            setup: |w| {
                w.at(110).pods_come_up(PodState::ImagePull);
            },
            now: 230,
            want: Some((Trigger::ImagePull, "ImagePullFailed", 230)),
            recheck: None,
        },
        Case {
            name: "image pull seen late is dated at its deadline",
            setup: |w| {
                w.at(110).pods_come_up(PodState::ImagePull);
            },
            now: 290,
            want: Some((Trigger::ImagePull, "ImagePullFailed", 230)),
            recheck: None,
        },
        Case {
            name: "progress deadline exceeded",
            setup: |w| {
                w.at(110).pods_come_up(PodState::NotReady);
                w.workload_mut().progress_deadline_exceeded = true;
            },
            now: 150,
            want: Some((Trigger::ProgressDeadline, "ProgressDeadlineExceeded", 150)),
            recheck: None,
        },
        Case {
            name: "not Ready before the readiness timeout",
            setup: |w| {
                w.at(110).pods_come_up(PodState::NotReady);
            },
            now: 399,
            want: None,
            recheck: Some(400),
        },
        Case {
            name: "not Ready at the readiness timeout",
            setup: |w| {
                w.at(110).pods_come_up(PodState::NotReady);
            },
            now: 400,
            want: Some((Trigger::Readiness, "ReadinessTimeout", 400)),
            recheck: None,
        },
    ];
    for c in cases {
        let mut w = healthy_v1();
        w.set_version("2.0.0").at(100).step();
        (c.setup)(&mut w);
        let p = w.at(c.now).plan();
        match c.want {
            None => {
                assert_eq!(
                    (p.status.rollback.clone(), p.apply.clone()),
                    (None, None),
                    "{}",
                    c.name
                );
                assert_eq!(p.status.phase, Some(Phase::Progressing), "{}", c.name);
                assert_eq!(entry(&p.status, 2).outcome, Outcome::Pending, "{}", c.name);
                assert_eq!(
                    p.recheck.map(|r| r.as_second() - 1_800_000_000),
                    c.recheck,
                    "{}",
                    c.name
                );
            }
            Some((trigger, why, at)) => {
                let rb = rollback(&p.status);
                assert_eq!(
                    (rb.trigger, rb.reason.as_str(), rb.detected_at.0),
                    (trigger, why, t(at)),
                    "{}",
                    c.name
                );
                assert_eq!(
                    (rb.from.revision, rb.to.revision, rb.phase),
                    (2, 1, RollbackPhase::RestoringImages),
                    "{}",
                    c.name
                );
                let failure = entry(&p.status, 2).failure.clone().unwrap();
                assert_eq!(
                    (failure.trigger, failure.reason.as_str()),
                    (trigger, why),
                    "{}",
                    c.name
                );
                assert_eq!(p.apply, Some(template(1, "1.0.0", pinned(1))), "{}", c.name);
                assert!(
                    reasons(&p).contains(&reason::ROLLBACK_STARTED),
                    "{}",
                    c.name
                );
                assert_eq!(p.recheck, Some(t(c.now + 300)), "{}", c.name);
            }
        }
    }
}

#[test]
fn guarded_revision_that_starts_crash_looping_is_rolled_back() {
    let mut w = healthy_v1();
    w.deploy_healthy("2.0.0", 100); // healthy at t(120), guarded until t(1020)
    let p = w.at(300).pods_come_up(PodState::CrashLoop(5)).plan();
    let rb = rollback(&p.status);
    assert_eq!(
        (rb.trigger, rb.from.revision, rb.to.revision),
        (Trigger::CrashLoop, 2, 1)
    );
    assert_eq!(entry(&p.status, 2).outcome, Outcome::Failed);
    assert_eq!(
        entry(&p.status, 2).healthy_at,
        Some(Time(t(120))),
        "it was healthy once"
    );
    assert_eq!(p.apply, Some(template(1, "1.0.0", pinned(1))));

    // After the guard window, the same pods do not roll it back.
    let p = w.at(1020).pods_come_up(PodState::CrashLoop(5)).plan();
    assert_eq!((p.status.rollback, p.apply), (None, None));
}

#[test]
fn first_release_that_fails_rolls_back_to_adopted_revision_0() {
    let mut w = World::new(
        release("1.0.0").build(),
        deployment().image("api", &tag("0.9.0")).serving().build(),
    );
    w.pods = ready_pods(3, None, &d(90));
    w.at(0).step();
    let p = w.at(10).pods_come_up(PodState::CrashLoop(3)).step();
    let rb = rollback(&p.status);
    assert_eq!(
        (&rb.to, rb.trigger),
        (
            &RevisionRef {
                revision: 0,
                version: "adopted".into()
            },
            Trigger::CrashLoop
        )
    );
    assert_eq!(p.apply, Some(template(0, "adopted", pinned(90))));
    let p = w.complete_rollback(30);
    assert_eq!(
        (p.status.revision, p.status.version.as_deref()),
        (Some(0), Some("adopted"))
    );
    assert_eq!(p.status.blocked.map(|b| b.version), Some("1.0.0".into()));
}

#[test]
fn rollback_that_never_becomes_available_fails_and_stalls() {
    let mut w = healthy_v1();
    w.set_version("2.0.0").at(100).step();
    w.at(110).pods_come_up(PodState::NotReady).step();
    w.at(400).step();
    // v1's pods do not come up either.
    let p = w.at(410).pods_come_up(PodState::NotReady).step();
    assert_eq!(
        (rollback(&p.status).phase, p.recheck),
        (RollbackPhase::Verifying, Some(t(710)))
    );
    let p = w.at(709).step();
    assert_eq!(rollback(&p.status).phase, RollbackPhase::Verifying);
    let p = w.at(710).step();
    let rb = rollback(&p.status).clone();
    assert_eq!(
        (rb.phase, rb.completed_at.clone()),
        (RollbackPhase::Failed, Some(Time(t(710))))
    );
    assert_eq!(p.finished, Some(rb.clone()));
    assert_eq!(p.status.rollbacks, [rb]);
    assert_eq!(p.status.phase, Some(Phase::Failed));
    assert_eq!(
        cond(&p.status, conditions::STALLED),
        is("True", reason::ROLLBACK_FAILED)
    );
    assert_eq!(reasons(&p), [reason::ROLLBACK_FAILED]);
    assert!(p.events[0].warning);
    assert_eq!(p.apply, None);
    // It is never retried automatically, and said once.
    assert_settled(&mut w, 800);
}

#[test]
fn rollback_is_verified_by_ready_pods_of_the_target_revision() {
    let mut w = healthy_v1();
    w.deploy_crashing("2.0.0", 100);
    w.at(120).step();
    // The Deployment reports the rollout done, but the pods seen are still v2's.
    let g = w.workload_mut();
    (g.observed_generation, g.updated, g.available, g.total) = (g.generation, 3, 3, 3);
    let p = w.at(130).step();
    assert_eq!(
        (rollback(&p.status).phase, p.status.phase),
        (RollbackPhase::Verifying, Some(Phase::RollingBack))
    );
    let p = w.complete_rollback(140);
    assert_eq!(p.status.phase, Some(Phase::RolledBack));
}

#[test]
fn deployment_changed_during_verification_gets_the_target_again() {
    let mut w = healthy_v1();
    w.set_version("2.0.0").at(100).step();
    w.at(110).pods_come_up(PodState::NotReady).step();
    w.at(400).step();
    w.at(410).step();
    assert_eq!(rollback(w.status()).phase, RollbackPhase::Verifying);
    let g = w.workload_mut();
    g.images.get_mut("api").unwrap().image = tag("2.0.0");
    g.generation += 1;
    let p = w.at(420).step();
    assert_eq!(p.apply, Some(template(1, "1.0.0", pinned(1))));
    assert_eq!(rollback(&p.status).phase, RollbackPhase::Verifying);
}

// ---- when policy says no ------------------------------------------------------------------

#[test]
fn automatic_off_degrades_without_rollback() {
    let mut w = healthy_v1();
    w.policy.automatic = false;
    let p = w.deploy_crashing("2.0.0", 100);
    assert_eq!((p.status.rollback.clone(), p.apply.clone()), (None, None));
    assert_eq!(p.status.phase, Some(Phase::Degraded));
    assert_eq!(
        cond(&p.status, conditions::READY),
        is("False", reason::ROLLBACK_DISABLED)
    );
    assert_eq!(
        cond(&p.status, conditions::STALLED),
        is("True", reason::ROLLBACK_DISABLED)
    );
    assert!(
        p.events
            .iter()
            .any(|e| e.warning && e.reason == reason::ROLLBACK_DISABLED),
        "{:?}",
        p.events
    );
    assert_eq!(entry(&p.status, 2).outcome, Outcome::Failed);
    assert_eq!(
        entry(&p.status, 2).failure.as_ref().map(|f| f.trigger),
        Some(Trigger::CrashLoop)
    );
    // It stays Degraded, says so once, and touches nothing.
    for now in [200, 300] {
        let p = w.at(now).step();
        assert_eq!(
            (p.apply, p.events, p.status.rollback),
            (None, vec![], None),
            "at {now}"
        );
        assert_eq!(p.status.phase, Some(Phase::Degraded));
    }
}

#[test]
fn no_healthy_earlier_revision_degrades_with_no_rollback_target() {
    let mut w = World::new(release("1.0.0").build(), deployment().build());
    w.at(0).step();
    let p = w.at(10).pods_come_up(PodState::CrashLoop(3)).step();
    assert_eq!((p.status.rollback.clone(), p.apply.clone()), (None, None));
    assert_eq!(p.status.phase, Some(Phase::Degraded));
    assert_eq!(
        cond(&p.status, conditions::READY),
        is("False", reason::NO_ROLLBACK_TARGET)
    );
    assert!(
        p.events
            .iter()
            .any(|e| e.warning && e.reason == reason::NO_ROLLBACK_TARGET),
        "{:?}",
        p.events
    );
    assert_eq!(entry(&p.status, 1).outcome, Outcome::Failed);
}

#[test]
fn cooldown_after_automatic_rollback_degrades_until_it_ends() {
    let mut w = healthy_v1();
    w.deploy_crashing("2.0.0", 100);
    let done = w.complete_rollback(120); // completed at t(120): cooldown (10m) until t(720)
    assert_eq!(done.finished.map(|r| r.trigger), Some(Trigger::CrashLoop));

    let p = w.deploy_crashing("3.0.0", 200);
    assert_eq!(
        (p.status.rollback.as_ref().map(|r| r.phase), p.apply.clone()),
        (Some(RollbackPhase::Succeeded), None),
        "no second rollback"
    );
    assert_eq!(p.status.phase, Some(Phase::Degraded));
    assert_eq!(
        cond(&p.status, conditions::READY),
        is("False", reason::COOLDOWN)
    );
    assert_eq!(p.recheck, Some(t(720)), "look again when the cooldown ends");
    assert_eq!(
        p.events
            .iter()
            .filter(|e| e.reason == reason::COOLDOWN)
            .count(),
        1
    );
    let p = w.at(500).step();
    assert_eq!((p.events, p.apply, p.recheck), (vec![], None, Some(t(720))));

    let p = w.at(720).step();
    let rb = rollback(&p.status);
    assert_eq!(
        (rb.trigger, rb.from.revision, rb.to.revision, rb.phase),
        (Trigger::CrashLoop, 3, 1, RollbackPhase::RestoringImages)
    );
    assert_eq!(p.apply, Some(template(1, "1.0.0", pinned(1))));
}

#[test]
fn manual_rollback_does_not_start_the_cooldown() {
    let mut w = healthy_v1();
    w.deploy_healthy("2.0.0", 100);
    w.annotate(labels::ROLLBACK_TO, "1.0.0").at(200).step();
    w.complete_rollback(210);
    let p = w.deploy_crashing("3.0.0", 300);
    let rb = rollback(&p.status);
    assert_eq!(
        (rb.trigger, rb.from.revision, rb.phase),
        (Trigger::CrashLoop, 3, RollbackPhase::RestoringImages)
    );
    assert!(p.apply.is_some());
}

// ---- blocked versions and retries --------------------------------------------------------

#[test]
fn retry_annotation_unblocks_and_redeploys_with_recorded_digests() {
    let mut w = rolled_back_v2();
    assert_eq!(
        entry(w.status(), 2).images[0].digest,
        Some(d(2)),
        "recorded while it ran"
    );
    let p = w.annotate(labels::RETRY, "1").at(600).step();
    assert_eq!(reasons(&p), [reason::RETRY, reason::DEPLOYING]);
    assert_eq!(p.status.blocked, None);
    assert_eq!(
        p.status.handled.as_ref().and_then(|h| h.retry.as_deref()),
        Some("1")
    );
    assert_eq!(
        p.apply,
        Some(template(3, "2.0.0", pinned(2))),
        "a new revision, same bits"
    );
    assert_eq!(
        (p.status.revision, p.status.phase),
        (Some(3), Some(Phase::Progressing))
    );
    assert_eq!(
        cond(&p.status, conditions::ROLLED_BACK),
        is("False", reason::DEPLOYING)
    );
    // The same value again does nothing new.
    let p = w.at(610).step();
    assert_eq!((p.events, p.apply), (vec![], None));
}

#[test]
fn retry_left_in_place_does_not_unblock_a_version_that_failed_again() {
    let mut w = rolled_back_v2();
    w.policy.cooldown = Duration::ZERO;
    w.annotate(labels::RETRY, "1").at(600).step();
    let p = w.at(610).pods_come_up(PodState::CrashLoop(3)).step();
    assert_eq!(rollback(&p.status).from.revision, 3);
    let p = w.complete_rollback(620);
    assert_eq!(p.status.blocked.map(|b| b.version), Some("2.0.0".into()));
    for now in [700, 800] {
        let p = w.at(now).step();
        assert_eq!(
            (p.apply, p.events),
            (None, vec![]),
            "at {now}: the retry was used up"
        );
        assert_eq!(p.status.phase, Some(Phase::RolledBack));
    }
    let p = w.annotate(labels::RETRY, "2").at(900).step();
    assert_eq!(
        p.apply,
        Some(template(4, "2.0.0", pinned(2))),
        "a new value retries again"
    );
}

#[test]
fn changing_spec_version_after_rollback_unblocks_and_deploys() {
    let mut w = rolled_back_v2();
    let p = w.set_version("3.0.0").at(600).step();
    assert_eq!(p.status.blocked, None);
    assert_eq!(p.apply, Some(template(3, "3.0.0", tag("3.0.0"))));
    assert_eq!(
        cond(&p.status, conditions::ROLLED_BACK),
        is("False", reason::DEPLOYING)
    );
    assert_eq!(p.status.phase, Some(Phase::Progressing));
}

// ---- people asking for a rollback ----------------------------------------------------------

#[test]
fn manual_rollback_via_release_annotation_acts_once_per_value() {
    let mut w = healthy_v1();
    w.deploy_healthy("2.0.0", 100);
    let p = w
        .annotate(labels::ROLLBACK_TO, "1.0.0")
        .annotate(labels::REQUESTED_BY, "alice@example.com")
        .at(200)
        .step();
    let rb = rollback(&p.status).clone();
    assert_eq!(
        (rb.trigger, rb.reason.as_str(), rb.requested_by.as_deref()),
        (Trigger::Manual, "ManualRollback", Some("alice@example.com"))
    );
    assert_eq!(
        (rb.from.revision, rb.to.revision, rb.phase, rb.detected_at.0),
        (2, 1, RollbackPhase::RestoringImages, t(200))
    );
    assert!(rb.message.contains("alice@example.com"), "{}", rb.message);
    assert_eq!(p.apply, Some(template(1, "1.0.0", pinned(1))));
    assert_eq!(reasons(&p), [reason::ROLLBACK_STARTED]);
    assert_eq!(
        cond(&p.status, conditions::MANUAL_ROLLBACK),
        is("True", reason::ACCEPTED)
    );
    assert_eq!(
        p.status
            .handled
            .as_ref()
            .and_then(|h| h.rollback_to.as_deref()),
        Some("1.0.0")
    );
    let r2 = entry(&p.status, 2);
    assert_eq!(
        (r2.outcome, r2.failure.as_ref().map(|f| f.trigger)),
        (Outcome::RolledBack, Some(Trigger::Manual))
    );

    let p = w.complete_rollback(210);
    assert_eq!(p.status.blocked.map(|b| b.version), Some("2.0.0".into()));
    assert_eq!(p.status.phase, Some(Phase::RolledBack));

    // Left in place (say, in Git): no second rollback.
    for now in [300, 400] {
        let p = w.at(now).step();
        assert_eq!(
            (p.apply, p.events, p.finished),
            (None, vec![], None),
            "at {now}"
        );
        assert_eq!(
            (rollback(&p.status).id.as_str(), p.status.rollbacks.len()),
            (rb.id.as_str(), 1)
        );
    }
    // Removed: the handled value is cleared, which re-arms it.
    let p = w.remove_annotation(labels::ROLLBACK_TO).at(500).step();
    assert_eq!(
        p.status
            .handled
            .as_ref()
            .and_then(|h| h.rollback_to.clone()),
        None
    );
    assert_eq!(p.apply, None);

    // v2 again (retry), then the same request again acts again.
    w.annotate(labels::RETRY, "1").at(600).step();
    w.at(620).roll_out().step();
    assert_eq!(w.status().phase, Some(Phase::Healthy));
    let p = w.annotate(labels::ROLLBACK_TO, "1.0.0").at(700).step();
    let rb = rollback(&p.status);
    assert_eq!(
        (rb.trigger, rb.from.revision, rb.to.revision, rb.phase),
        (Trigger::Manual, 3, 1, RollbackPhase::RestoringImages)
    );
}

#[test]
fn manual_rollback_via_deployment_annotation() {
    let mut w = healthy_v1();
    w.deploy_healthy("2.0.0", 100);
    w.workload_mut().rollback_to = Some("1.0.0".into());
    let p = w.at(200).step();
    let rb = rollback(&p.status);
    assert_eq!(
        (
            rb.trigger,
            rb.from.revision,
            rb.to.revision,
            rb.requested_by.clone()
        ),
        (Trigger::Manual, 2, 1, None)
    );
    assert!(
        rb.message.contains("on Deployment shop-api"),
        "{}",
        rb.message
    );
    assert_eq!(
        p.status
            .handled
            .as_ref()
            .and_then(|h| h.target_rollback_to.as_deref()),
        Some("1.0.0")
    );
    assert_eq!(p.apply, Some(template(1, "1.0.0", pinned(1))));
    w.complete_rollback(210);
    let p = w.at(300).step();
    assert_eq!(
        (p.apply, p.events, p.status.rollbacks.len()),
        (None, vec![], 1)
    );
    w.workload_mut().rollback_to = None;
    let p = w.at(400).step();
    assert_eq!(p.status.handled, None);
}

/// Live: 4.0.0 (revision 4). 3.0.0 failed, 2.0.0 was healthy without a recorded digest,
/// 1.0.0 was healthy and pinned.
fn world_with_history() -> World {
    use Outcome::*;
    let mut w = World::new(
        release("4.0.0").build(),
        deployment()
            .image("api", &pinned(4))
            .revision(4)
            .serving()
            .build(),
    );
    w.pods = ready_pods(3, Some(4), &d(4));
    w.release.status = Some(ReleaseStatus {
        revision: Some(4),
        version: Some("4.0.0".into()),
        history: vec![
            rev(4, "4.0.0", Healthy, Some(420), Some(4)),
            rev(3, "3.0.0", Failed, None, Some(3)),
            rev(2, "2.0.0", Superseded, Some(220), None),
            rev(1, "1.0.0", Superseded, Some(120), Some(1)),
        ],
        ..Default::default()
    });
    w.at(5000).step();
    assert_eq!(w.status().phase, Some(Phase::Healthy));
    w
}

#[test]
fn manual_rollback_requests_are_checked() {
    // (value, on the Deployment rather than the Release, Ok(target revision) or Err(reason))
    let cases: [(&str, bool, Result<i64, &str>); 9] = [
        ("9.9.9", false, Err(reason::UNKNOWN_VERSION)),
        ("3.0.0", false, Err(reason::TARGET_NOT_HEALTHY)),
        ("2.0.0", false, Err(reason::DIGESTS_UNKNOWN)),
        ("4.0.0", false, Err(reason::ALREADY_RUNNING)),
        ("previous", false, Ok(1)),
        ("1.0.0", false, Ok(1)),
        ("9.9.9", true, Err(reason::UNKNOWN_VERSION)),
        ("3.0.0", true, Err(reason::TARGET_NOT_HEALTHY)),
        ("previous", true, Ok(1)),
    ];
    for (value, on_deployment, want) in cases {
        let mut w = world_with_history();
        let before = w.status().clone();
        if on_deployment {
            w.workload_mut().rollback_to = Some(value.into());
        } else {
            w.annotate(labels::ROLLBACK_TO, value);
        }
        let p = w.at(5100).plan();
        let handled = p.status.handled.clone().unwrap_or_default();
        let slot = if on_deployment {
            handled.target_rollback_to
        } else {
            handled.rollback_to
        };
        assert_eq!(slot.as_deref(), Some(value), "{value}: handled");
        match want {
            Ok(target) => {
                let rb = rollback(&p.status);
                assert_eq!(
                    (rb.trigger, rb.from.revision, rb.to.revision),
                    (Trigger::Manual, 4, target),
                    "{value}"
                );
                assert_eq!(p.apply, Some(template(1, "1.0.0", pinned(1))), "{value}");
                assert_eq!(
                    cond(&p.status, conditions::MANUAL_ROLLBACK),
                    is("True", reason::ACCEPTED),
                    "{value}"
                );
            }
            Err(why) => {
                assert_eq!(
                    cond(&p.status, conditions::MANUAL_ROLLBACK),
                    is("False", why),
                    "{value}"
                );
                let msg = &condition(&p.status, conditions::MANUAL_ROLLBACK).message;
                assert!(msg.contains("nothing was changed"), "{value}: {msg}");
                assert_eq!(p.events.len(), 1, "{value}: {:?}", p.events);
                assert!(
                    p.events[0].warning && p.events[0].reason == why,
                    "{value}: {:?}",
                    p.events
                );
                assert_eq!(p.apply, None, "{value}");
                assert_eq!(
                    (&p.status.history, &p.status.rollback),
                    (&before.history, &before.rollback),
                    "{value}"
                );
                assert_eq!(
                    (p.status.revision, p.status.phase),
                    (before.revision, before.phase),
                    "{value}"
                );
            }
        }
    }
}

#[test]
fn refused_manual_rollback_is_reported_once_per_value() {
    let mut w = world_with_history();
    let p = w.annotate(labels::ROLLBACK_TO, "9.9.9").at(5100).step();
    assert_eq!(reasons(&p), [reason::UNKNOWN_VERSION]);
    assert!(
        p.events[0]
            .message
            .contains("known: 4.0.0, 3.0.0, 2.0.0, 1.0.0"),
        "{}",
        p.events[0].message
    );
    assert_settled(&mut w, 5200);
    let p = w.remove_annotation(labels::ROLLBACK_TO).at(5300).step();
    assert_eq!(p.status.handled, None);
    assert_eq!(p.events, []);
    let p = w.annotate(labels::ROLLBACK_TO, "9.9.9").at(5400).step();
    assert_eq!(reasons(&p), [reason::UNKNOWN_VERSION], "re-armed");
}

#[test]
fn degraded_release_can_be_rolled_back_by_hand() {
    let mut w = healthy_v1();
    w.policy.automatic = false;
    w.deploy_crashing("2.0.0", 100);
    assert_eq!(w.status().phase, Some(Phase::Degraded));
    let p = w
        .annotate(labels::ROLLBACK_TO, labels::PREVIOUS)
        .at(200)
        .step();
    let rb = rollback(&p.status);
    assert_eq!(
        (rb.trigger, rb.from.revision, rb.to.revision),
        (Trigger::Manual, 2, 1)
    );
    assert_eq!(
        entry(&p.status, 2).outcome,
        Outcome::Failed,
        "a failure stays a failure"
    );
    assert_eq!(p.apply, Some(template(1, "1.0.0", pinned(1))));
    let p = w.complete_rollback(210);
    assert_eq!(
        (p.status.revision, p.status.phase),
        (Some(1), Some(Phase::RolledBack))
    );
}

// ---- resuming after a restart ----------------------------------------------------------------

#[test]
fn restart_during_restoring_images_reapplies_the_target_without_changing_status() {
    let mut w = healthy_v1();
    w.set_version("2.0.0").at(100).step();
    w.at(110).pods_come_up(PodState::CrashLoop(3));
    // Status (phase RestoringImages) written, then the operator died before the patch.
    let p = w.plan();
    assert_eq!(rollback(&p.status).phase, RollbackPhase::RestoringImages);
    w.release.status = Some(p.status.clone());
    let template_v1 = template(1, "1.0.0", pinned(1));

    let again = w.at(130).plan();
    assert_eq!(again.apply, Some(template_v1.clone()));
    assert_eq!(again.status, p.status);
    assert_eq!(again.events, []);
    assert!(again.recheck.is_some());

    // The patch had in fact landed: straight to Verifying, no second patch.
    w.take_template(&template_v1);
    let p = w.at(140).step();
    assert_eq!(p.apply, None);
    let rb = rollback(&p.status);
    assert_eq!(
        (rb.phase, rb.images_restored_at.clone()),
        (RollbackPhase::Verifying, Some(Time(t(140))))
    );
    assert_eq!(reasons(&p), [reason::IMAGES_RESTORED]);
    let p = w.complete_rollback(150);
    assert_eq!(p.status.rollbacks.len(), 1);
}

#[test]
fn pending_revision_written_but_never_applied_is_applied() {
    let mut w = healthy_v1();
    let p = w.set_version("2.0.0").at(100).plan();
    w.release.status = Some(p.status.clone()); // crash between status write and apply
    let again = w.at(105).plan();
    assert_eq!(again.apply, Some(template(2, "2.0.0", tag("2.0.0"))));
    assert_eq!(again.events, []);
    assert_eq!(again.status.history, p.status.history);
    assert_eq!(again.status.phase, Some(Phase::Progressing));
}

#[test]
fn first_reconcile_written_but_never_applied_is_applied() {
    let mut w = World::new(
        release("1.0.0").build(),
        deployment().image("api", &tag("0.9.0")).serving().build(),
    );
    w.pods = ready_pods(3, None, &d(90));
    let p = w.plan();
    w.release.status = Some(p.status.clone());
    let again = w.at(5).plan();
    assert_eq!(again.apply, Some(template(1, "1.0.0", tag("1.0.0"))));
    assert_eq!(again.events, [], "adopted and announced once");
    assert_eq!(again.status.history, p.status.history);
}

// ---- what Rewind cannot act on -------------------------------------------------------------

#[test]
fn missing_target_stalls_with_one_event() {
    let mut w = World::new(release("1.0.0").build(), deployment().build());
    w.workload = None;
    let p = w.step();
    assert_eq!(p.status.phase, Some(Phase::Failed));
    assert_eq!(
        cond(&p.status, conditions::STALLED),
        is("True", reason::TARGET_NOT_FOUND)
    );
    assert_eq!(
        cond(&p.status, conditions::READY),
        is("False", reason::TARGET_NOT_FOUND)
    );
    assert!(
        condition(&p.status, conditions::STALLED)
            .message
            .contains("Deployment shop-api not found in namespace shop")
    );
    assert_eq!(reasons(&p), [reason::TARGET_NOT_FOUND]);
    assert!(p.events[0].warning);
    assert_eq!((p.apply, p.status.history.is_empty()), (None, true));
    assert_settled(&mut w, 60);
    // It appears: Rewind gets to work.
    w.workload = Some(deployment().build());
    let p = w.at(120).step();
    assert_eq!(p.apply, Some(template(1, "1.0.0", tag("1.0.0"))));
    assert_eq!(cond(&p.status, conditions::STALLED).0, "False");
}

#[test]
fn unknown_container_names_the_containers_the_deployment_has() {
    let r = release("1.0.0")
        .images(&[
            ("api", &tag("1.0.0")),
            ("worker", "registry.example/shop/worker:1.0.0"),
        ])
        .build();
    let mut w = World::new(
        r,
        deployment()
            .image("sidecar", "envoy:1.30")
            .image("api", &tag("0.9.0"))
            .serving()
            .build(),
    );
    let p = w.step();
    assert_eq!(p.status.phase, Some(Phase::Failed));
    assert_eq!(
        cond(&p.status, conditions::STALLED),
        is("True", reason::CONTAINER_NOT_FOUND)
    );
    let msg = &condition(&p.status, conditions::STALLED).message;
    assert!(
        msg.contains("has no container named worker; it has: api, sidecar"),
        "{msg}"
    );
    assert_eq!(reasons(&p), [reason::CONTAINER_NOT_FOUND]);
    assert_eq!(p.apply, None);
    assert!(
        p.status.history.is_empty(),
        "nothing adopted before the spec makes sense"
    );
    assert_settled(&mut w, 60);
}

#[test]
fn paused_release_applies_nothing() {
    let mut w = healthy_v1();
    w.set_version("2.0.0");
    w.release.spec.paused = true;
    let p = w.at(100).step();
    assert_eq!(p.status.phase, Some(Phase::Paused));
    assert_eq!(
        cond(&p.status, conditions::READY),
        is("Unknown", reason::PAUSED)
    );
    assert_eq!(cond(&p.status, conditions::STALLED).0, "False");
    assert_eq!(reasons(&p), [reason::PAUSED]);
    assert_eq!(p.apply, None);
    assert_eq!(revisions(&p.status), [1]);
    assert_settled(&mut w, 200);
    w.release.spec.paused = false;
    let p = w.at(300).step();
    assert_eq!(p.apply, Some(template(2, "2.0.0", tag("2.0.0"))));
}

#[test]
fn paused_release_does_not_continue_a_rollback() {
    let mut w = healthy_v1();
    w.deploy_crashing("2.0.0", 100);
    // The patch back to v1 did not land before the pause.
    w.workload_mut().template_revision = Some(2);
    w.workload_mut().images.get_mut("api").unwrap().image = tag("2.0.0");
    w.release.spec.paused = true;
    let p = w.at(200).plan();
    assert_eq!((p.apply, p.status.phase), (None, Some(Phase::Paused)));
    assert_eq!(
        rollback(&p.status).phase,
        RollbackPhase::RestoringImages,
        "kept for later"
    );
    w.release.spec.paused = false;
    let p = w.at(300).plan();
    assert_eq!(p.apply, Some(template(1, "1.0.0", pinned(1))));
}

#[test]
fn policy_error_stalls_without_touching_the_deployment() {
    let mut w = World::new(release("1.0.0").build(), deployment().build());
    w.policy_error = Some("RollbackPolicies standard and strict both match this Release".into());
    let p = w.step();
    assert_eq!(
        cond(&p.status, conditions::STALLED),
        is("True", "PolicyError")
    );
    assert_eq!((reasons(&p), p.apply), (vec!["PolicyError"], None));
    assert_settled(&mut w, 60);
}

#[test]
fn release_metadata_is_used_for_the_rollback_id_and_generation() {
    let r = release("1.0.0")
        .name("cart")
        .uid("abc")
        .generation(7)
        .annotation("team", "shop")
        .build();
    let mut w = World::new(r, deployment().build());
    w.at(0).step();
    w.at(20).roll_out().step();
    w.at(40).roll_out().step();
    let p = w.deploy_crashing("2.0.0", 100);
    assert_eq!(rollback(&p.status).id, "abc-2-1-1800000110");
    assert_eq!(p.status.observed_generation, Some(8));
    assert!(
        p.status
            .conditions
            .iter()
            .all(|c| c.observed_generation == Some(8))
    );
    let paused = World::new(release("1.0.0").paused().build(), deployment().build()).plan();
    assert_eq!(paused.status.phase, Some(Phase::Paused));
}

// ---- history --------------------------------------------------------------------------------

#[test]
fn history_is_capped_newest_first_keeping_the_live_revision() {
    let mut w = healthy_v1();
    w.policy.history_limit = 3;
    for (i, v) in ["2.0.0", "3.0.0", "4.0.0", "5.0.0"].into_iter().enumerate() {
        w.deploy_healthy(v, 100 * (i as i64 + 1));
        assert!(w.status().history.len() <= 3);
    }
    assert_eq!(revisions(w.status()), [5, 4, 3]);
    assert_eq!(w.status().revision, Some(5));
    let p = w.deploy_crashing("6.0.0", 1000);
    assert_eq!(revisions(&p.status), [6, 5, 4]);
    let rb = rollback(&p.status);
    assert_eq!((rb.from.revision, rb.to.revision), (6, 5));
    let p = w.complete_rollback(1020);
    assert_eq!(revisions(&p.status), [6, 5, 4]);
}

#[test]
fn history_cap_keeps_the_revision_a_rollback_goes_back_to() {
    let mut w = healthy_v1();
    w.policy.history_limit = 2;
    w.policy.cooldown = Duration::ZERO;
    w.deploy_crashing("2.0.0", 100);
    w.complete_rollback(120);
    // v3: the live revision and the last rollback's target (revision 1) are kept.
    let p = w.deploy_crashing("3.0.0", 200);
    assert!(
        revisions(&p.status).contains(&3) && revisions(&p.status).contains(&1),
        "{:?}",
        revisions(&p.status)
    );
    assert_eq!(rollback(&p.status).to.revision, 1);
}

// ---- bugs found (ignored so the suite stays green; see the report) -----------------------------

#[test]
fn history_cap_keeps_newer_healthy_revisions_over_an_old_finished_rollback() {
    let mut w = healthy_v1();
    w.policy.history_limit = 3;
    w.policy.cooldown = Duration::ZERO;
    w.deploy_crashing("2.0.0", 100);
    w.complete_rollback(120); // the last rollback: 2 -> 1
    w.deploy_healthy("3.0.0", 200);
    w.deploy_healthy("4.0.0", 300);
    w.set_version("5.0.0").at(400).step();
    assert_eq!(
        revisions(w.status()),
        [5, 4, 3],
        "today: [5, 2, 1]: 4.0.0 and 3.0.0 dropped, the failed 2.0.0 kept"
    );
    let p = w.at(410).pods_come_up(PodState::CrashLoop(3)).step();
    assert_eq!(
        rollback(&p.status).to.version,
        "4.0.0",
        "today: back to 1.0.0, three releases old"
    );
}

#[test]
fn history_cap_never_drops_the_last_healthy_revision() {
    let mut w = healthy_v1();
    w.policy.history_limit = 2;
    w.set_version("2.0.0").at(100).step(); // superseded before it was ever healthy
    w.set_version("3.0.0").at(150).step();
    assert!(
        revisions(w.status()).contains(&1),
        "today: {:?}",
        revisions(w.status())
    );
    let p = w.at(160).pods_come_up(PodState::CrashLoop(3)).step();
    assert_eq!(
        p.status.rollback.as_ref().map(|r| r.to.revision),
        Some(1),
        "today: Degraded NoRollbackTarget"
    );
}

#[test]
fn degraded_reason_survives_the_next_plan() {
    let automatic_off = {
        let mut w = healthy_v1();
        w.policy.automatic = false;
        w.deploy_crashing("2.0.0", 100);
        (w, reason::ROLLBACK_DISABLED)
    };
    let no_target = {
        let mut w = World::new(release("1.0.0").build(), deployment().build());
        w.at(0).step();
        w.at(10).pods_come_up(PodState::CrashLoop(3)).step();
        (w, reason::NO_ROLLBACK_TARGET)
    };
    for (mut w, why) in [automatic_off, no_target] {
        assert_eq!(cond(w.status(), conditions::READY), is("False", why));
        let before = w.status().clone();
        let p = w.at(300).step();
        assert_eq!(
            cond(&p.status, conditions::READY),
            is("False", why),
            "today: ReleaseFailed"
        );
        assert_eq!(p.status, before, "same inputs, same status");
    }
}

#[test]
fn manual_rollback_to_the_blocked_version_unblocks_it() {
    let mut w = healthy_v1();
    w.deploy_healthy("2.0.0", 100);
    w.annotate(labels::ROLLBACK_TO, "1.0.0").at(200).step();
    w.complete_rollback(210);
    assert_eq!(
        w.status().blocked.as_ref().map(|b| b.version.as_str()),
        Some("2.0.0")
    );
    // On second thought, 2.0.0 was fine: roll forward to it.
    let p = w.annotate(labels::ROLLBACK_TO, "2.0.0").at(300).step();
    assert_eq!(rollback(&p.status).to.revision, 2);
    w.complete_rollback(310);
    let p = w.at(400).step();
    assert_eq!(
        (p.status.revision, p.status.version.as_deref()),
        (Some(2), Some("2.0.0"))
    );
    assert_eq!(
        p.status.blocked, None,
        "today: 2.0.0 is blocked while it runs"
    );
    assert_eq!(
        p.status.phase,
        Some(Phase::Healthy),
        "today: RolledBack, Stalled"
    );
}

#[test]
fn blocked_release_puts_back_a_deployment_changed_to_the_bad_version() {
    let mut w = rolled_back_v2();
    // A GitOps self-heal re-applies the image from the manifest.
    let g = w.workload_mut();
    g.images.get_mut("api").unwrap().image = tag("2.0.0");
    g.generation += 1;
    let p = w.at(600).step();
    assert_eq!(
        p.apply,
        Some(template(1, "1.0.0", pinned(1))),
        "today: None; 2.0.0 runs while status says 1.0.0"
    );
}

#[test]
fn rolled_back_condition_clears_when_spec_returns_to_the_running_version() {
    let mut w = rolled_back_v2();
    let p = w.set_version("1.0.0").at(600).step();
    assert_eq!((p.apply.clone(), p.status.blocked.clone()), (None, None));
    assert_eq!(p.status.phase, Some(Phase::Healthy));
    assert_eq!(cond(&p.status, conditions::READY).0, "True");
    assert_eq!(
        cond(&p.status, conditions::ROLLED_BACK).0,
        "False",
        "today: True while nothing is blocked"
    );
}

#[test]
fn automatic_rollback_skips_a_version_a_person_rolled_back() {
    let mut w = healthy_v1();
    w.policy.cooldown = Duration::ZERO;
    w.deploy_healthy("2.0.0", 100);
    w.annotate(labels::ROLLBACK_TO, "1.0.0").at(200).step();
    w.complete_rollback(210); // a person took 2.0.0 out: 1.0.0 runs
    let p = w.deploy_crashing("3.0.0", 300);
    assert_eq!(
        rollback(&p.status).to.version,
        "1.0.0",
        "today: 2.0.0, the version a person rolled back"
    );
}

#[test]
fn status_settles_in_one_plan() {
    // Healthy with nothing to pin (digests reused): the next plan should be a fixed point.
    let mut w = healthy_v1();
    w.deploy_healthy("2.0.0", 100);
    w.set_version("1.0.0").at(200).step();
    let p = w.at(220).roll_out().step();
    assert_eq!((p.status.phase, p.apply), (Some(Phase::Healthy), None));
    assert_settled(&mut w, 230);
    // Right after a rollback succeeded.
    let mut w = rolled_back_v2();
    assert_settled(&mut w, 440);
}

// ---- digests from the registry ----------------------------------------------------------------

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

#[test]
fn a_resolved_tag_is_pinned_before_the_rollout() {
    let mut w = world_with_registry();
    let p = w.set_version("2.0.0").at(100).step();
    let t = p.apply.clone().expect("revision 2 applied");
    assert_eq!(
        t.containers[0].1,
        pinned(2),
        "applied by digest, before any pod exists"
    );
    let e = entry(&p.status, 2);
    assert_eq!(e.images[0].digest, Some(d(2)));
    assert_eq!(e.images[0].resolved_from, Some(DigestSource::Registry));
    assert_eq!(
        cond(&p.status, conditions::PINNED),
        is("True", reason::RESOLVED)
    );
    assert!(!reasons(&p).contains(&"RegistryUnreachable"));
}

#[test]
fn an_unreachable_registry_falls_back_to_the_tag_with_a_reason() {
    let mut w = healthy_v1();
    w.resolved.insert(
        tag("2.0.0"),
        Err(ResolveError::Unreachable("connection refused".into())),
    );
    let p = w.set_version("2.0.0").at(100).step();
    assert_eq!(
        p.apply.clone().expect("deployed anyway").containers[0].1,
        tag("2.0.0")
    );
    assert_eq!(entry(&p.status, 2).images[0].digest, None);
    assert_eq!(
        cond(&p.status, conditions::PINNED),
        is("False", "RegistryUnreachable")
    );
    assert!(
        reasons(&p).contains(&"RegistryUnreachable"),
        "{:?}",
        reasons(&p)
    );
    let msg = &condition(&p.status, conditions::PINNED).message;
    assert!(
        msg.contains("connection refused") && msg.contains("pod status"),
        "{msg}"
    );
    // Once the pods report the digest, it is recorded and the condition turns True.
    let p = w.at(120).roll_out().step();
    assert_eq!(
        entry(&p.status, 2).images[0].resolved_from,
        Some(DigestSource::PodStatus)
    );
    assert_eq!(
        cond(&p.status, conditions::PINNED),
        is("True", reason::FROM_POD_STATUS)
    );
}

#[test]
fn a_strict_policy_refuses_to_deploy_unpinned_and_asks_again_later() {
    let mut w = healthy_v1();
    w.policy.strict_digests = true;
    w.resolved.insert(
        tag("2.0.0"),
        Err(ResolveError::Unauthorized("http://r/v2/".into())),
    );
    let p = w.set_version("2.0.0").at(100).step();
    assert_eq!(p.apply, None, "nothing deployed");
    assert_eq!(p.status.revision, Some(1), "1.0.0 keeps running");
    assert_eq!(p.status.phase, Some(Phase::Failed));
    assert_eq!(
        cond(&p.status, conditions::STALLED),
        is("True", reason::UNPINNED)
    );
    assert_eq!(
        cond(&p.status, conditions::PINNED),
        is("False", "RegistryUnauthorized")
    );
    assert_eq!(p.recheck, Some(t(130)));
    assert_eq!(reasons(&p), [reason::UNPINNED]);
    // Still refused a plan later: no new Event, the same status.
    let again = w.at(130).step();
    assert_eq!(again.events, []);
    assert_eq!(again.apply, None);
    // The registry answers: deployed pinned.
    w.resolved.insert(tag("2.0.0"), Ok(d(2)));
    let p = w.at(160).step();
    assert_eq!(p.apply.expect("deployed").containers[0].1, pinned(2));
    assert_eq!(
        cond(&p.status, conditions::STALLED),
        is("False", reason::PROGRESSING)
    );
}

#[test]
fn a_recorded_digest_wins_over_a_moved_tag() {
    let mut w = world_with_registry();
    w.deploy_healthy("2.0.0", 100);
    // The tag 1.0.0 now points elsewhere; going back to 1.0.0 must not follow it.
    w.resolved.insert(tag("1.0.0"), Ok(d(77)));
    let p = w.set_version("1.0.0").at(300).step();
    assert_eq!(p.apply.expect("revision 3").containers[0].1, pinned(1));
}

#[test]
fn only_what_will_deploy_is_looked_up() {
    let w = healthy_v1();
    assert_eq!(
        images_to_resolve(&w.release),
        Vec::<String>::new(),
        "spec runs already"
    );
    let mut w2 = healthy_v1();
    w2.set_version("2.0.0");
    assert_eq!(images_to_resolve(&w2.release), [tag("2.0.0")]);
    // A version recorded in history, a digest reference, a paused or blocked release: no lookup.
    let mut back = healthy_v1();
    back.deploy_healthy("2.0.0", 100).set_version("1.0.0");
    assert_eq!(images_to_resolve(&back.release), Vec::<String>::new());
    let mut by_digest = healthy_v1();
    by_digest.release.spec.images[0].image = pinned(9);
    assert_eq!(images_to_resolve(&by_digest.release), Vec::<String>::new());
    let mut paused = w2.release.clone();
    paused.spec.paused = true;
    assert_eq!(images_to_resolve(&paused), Vec::<String>::new());
    let mut blocked = rolled_back_v2();
    assert_eq!(images_to_resolve(&blocked.release), Vec::<String>::new());
    // A retry asked for in this plan unblocks it: what would deploy is looked up (here the
    // recorded digest of 2.0.0 is reused, so only a tag never recorded would be).
    blocked.release.spec.images[0].image = tag("2.0.1-rebuilt");
    blocked.annotate(labels::RETRY, "1");
    assert_eq!(images_to_resolve(&blocked.release), [tag("2.0.1-rebuilt")]);
}

#[test]
fn a_second_release_for_the_same_deployment_stalls_and_touches_nothing() {
    let mut w = World::new(
        release("1.0.0").build(),
        deployment().image("api", &tag("0.9.0")).serving().build(),
    );
    w.claimed_by = Some("shop-api-old".into());
    let p = w.step();
    assert_eq!(p.apply, None);
    assert!(p.status.history.is_empty());
    assert_eq!(
        cond(&p.status, conditions::STALLED),
        is("True", reason::TARGET_CLAIMED)
    );
    assert!(
        condition(&p.status, conditions::READY)
            .message
            .contains("shop-api-old")
    );
    assert_eq!(reasons(&p), [reason::TARGET_CLAIMED]);
    assert_settled(&mut w, 10);
}

#[test]
fn a_release_with_a_migration_is_told_that_no_job_runs() {
    let mut w = healthy_v1();
    w.set_version("2.0.0");
    w.release.spec.migration = Some(crate::api::Migration {
        image: "registry.example/shop/migrate:2.0.0".into(),
        schema_version: "20261120".into(),
        up: None,
        down: None,
        reversible: true,
        service_account_name: None,
    });
    let p = w.at(100).step();
    assert!(p.apply.is_some(), "deployed anyway");
    assert_eq!(
        entry(&p.status, 2)
            .migration
            .as_ref()
            .map(|m| m.schema_version.as_str()),
        Some("20261120")
    );
    assert!(
        reasons(&p).contains(&reason::MIGRATION_NOT_RUN),
        "{:?}",
        reasons(&p)
    );
}

#[test]
fn a_policy_with_metric_checks_is_told_they_are_not_evaluated() {
    let mut w = healthy_v1();
    w.policy.metrics = vec!["error-rate".into()];
    let p = w.set_version("2.0.0").at(100).step();
    assert!(p.apply.is_some());
    let note = p
        .events
        .iter()
        .find(|n| n.reason == reason::METRICS_NOT_EVALUATED)
        .expect("a warning Event");
    assert!(
        note.warning && note.message.contains("error-rate"),
        "{note:?}"
    );
}

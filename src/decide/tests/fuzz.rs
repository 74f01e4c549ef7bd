//! Property tests: random input through the parsers and the planner, asserting that nothing
//! panics and that the invariants hold whatever a tenant (or a cluster) throws at them.
//!
//! Case counts are modest (the unit suite runs on two cores); a failure prints the smallest
//! input proptest found, and `PROPTEST_CASES=10000 cargo test --lib fuzz` searches longer.

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use proptest::prelude::*;

use super::*;
use crate::{
    api::{PolicySelector, RollbackPolicySpec, SelectorRequirement, duration},
    decide::{policy::MaxUnready, selection::selects, text},
    image::{ImageRef, digest_from_image_id},
};

/// `cases` cases, or `PROPTEST_CASES` to search longer.
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(cases),
        // No regression files in the source tree: a failure prints its input.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---- durations -----------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(512))]

    /// Any text: parsing never panics; what parses keeps its text and formats back to the
    /// same value.
    #[test]
    fn any_text_parses_without_panic(s in "\\PC{0,40}") {
        if let Ok(d) = s.parse::<duration::Duration>() {
            prop_assert_eq!(d.to_string(), s.clone());
            let again: duration::Duration = duration::format(d.get()).parse().unwrap();
            prop_assert_eq!(again.get(), d.get());
        }
        // Read from an object: never an error, whatever the text.
        let read: duration::Duration = serde_json::from_value(serde_json::json!(s)).unwrap();
        prop_assert_eq!(read.as_str(), s.as_str());
    }

    /// Text the schema's pattern accepts is a duration, or one too long for any (never a
    /// syntax error, never a panic): the pattern and the parser agree.
    #[test]
    fn what_the_schema_pattern_accepts_parses(s in "([0-9]{1,22}(\\.[0-9]{1,22})?(ns|us|µs|ms|s|m|h)){1,4}") {
        match s.parse::<duration::Duration>() {
            Ok(_) | Err(duration::DurationError::OutOfRange(_)) => {}
            Err(e) => prop_assert!(false, "{s:?}: {e}"),
        }
    }

    /// Every value up to Go's limit is written and read back exactly.
    #[test]
    fn values_round_trip_through_their_text(nanos in 0u64..=i64::MAX as u64) {
        let d = std::time::Duration::from_nanos(nanos);
        let text = duration::format(d);
        prop_assert_eq!(text.parse::<duration::Duration>().unwrap().get(), d, "{}", text);
    }

    /// Bounds: a policy with any duration text in any field converts to a policy or to an
    /// error, and a policy it converts to is within every bound.
    #[test]
    fn any_policy_durations_convert_or_are_reported(
        texts in prop::collection::vec(prop_oneof![
            "[0-9]{1,25}(ns|us|ms|s|m|h)",
            "[0-9]{1,3}(\\.[0-9]{1,3})?(s|m|h)([0-9]{1,2}(s|m))?",
            "\\PC{0,12}",
        ], 5),
    ) {
        let spec: RollbackPolicySpec = serde_json::from_value(serde_json::json!({
            "readiness": {"timeout": texts[0], "unreadyFor": texts[1]},
            "imagePull": {"failFor": texts[2]},
            "guardWindow": texts[3],
            "cooldown": texts[4],
        })).unwrap();
        if let Ok(p) = Policy::try_from(&spec) {
            for (b, v) in [
                (crate::api::rules::READINESS_TIMEOUT, p.readiness_timeout),
                (crate::api::rules::UNREADY_FOR, p.unready_for),
                (crate::api::rules::IMAGE_PULL_FAIL_FOR, p.image_pull_fail_for),
                (crate::api::rules::GUARD_WINDOW, p.guard_window),
                (crate::api::rules::COOLDOWN, p.cooldown),
            ] {
                let (min, max) = b.range();
                prop_assert!(min <= v && v <= max, "{} = {v:?}", b.field);
            }
        }
    }
}

// ---- image references, percents, texts -------------------------------------------------------

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn any_image_reference_parses_without_panic(s in "\\PC{0,80}", d in "\\PC{0,80}") {
        let r = ImageRef::parse(&s);
        let _ = r.pinned(&d);
        let _ = digest_from_image_id(&s);
        // The parts are pieces of the reference, in order.
        prop_assert!(s.starts_with(r.repository));
    }

    /// A reference built from its parts is taken apart into the same parts.
    #[test]
    fn image_references_split_into_their_parts(
        registry in prop::option::of("[a-z0-9]{1,8}(\\.[a-z]{2,3})?(:[0-9]{1,5})?"),
        path in "[a-z0-9]{1,8}(/[a-z0-9]{1,8}){0,2}",
        tag in prop::option::of("[a-zA-Z0-9_][a-zA-Z0-9_.-]{0,12}"),
        digest in prop::option::of("[a-f0-9]{64}"),
    ) {
        let repository = match &registry {
            Some(r) => format!("{r}/{path}"),
            None => path.clone(),
        };
        let digest = digest.map(|d| format!("sha256:{d}"));
        let mut reference = repository.clone();
        if let Some(t) = &tag {
            reference.push_str(&format!(":{t}"));
        }
        if let Some(d) = &digest {
            reference.push_str(&format!("@{d}"));
        }
        let r = ImageRef::parse(&reference);
        prop_assert_eq!(r.repository, repository.as_str());
        prop_assert_eq!(r.tag, tag.as_deref());
        prop_assert_eq!(r.digest, digest.as_deref());
        if let Some(d) = &digest {
            prop_assert_eq!(r.pinned(d), format!("{repository}@{d}"));
            let id = format!("docker-pullable://{reference}");
            prop_assert_eq!(digest_from_image_id(&id), Some(d.as_str()));
        }
    }

    /// maxUnready: any value parses or is refused; what parses allows between 0 and all of
    /// any number of replicas (a count may allow more than there are).
    #[test]
    fn max_unready_never_overflows(
        v in prop_oneof![
            any::<i32>().prop_map(IntOrString::Int),
            "[0-9]{0,4}%?".prop_map(IntOrString::String),
            "\\PC{0,8}".prop_map(IntOrString::String),
        ],
        replicas in any::<i32>(),
    ) {
        match MaxUnready::parse(&v) {
            Ok(MaxUnready::Percent(p)) => {
                prop_assert!(p <= 100);
                let n = MaxUnready::Percent(p).of(replicas);
                prop_assert!(n >= 0 && n <= replicas.max(0));
                prop_assert_eq!(v, IntOrString::String(format!("{p}%")));
            }
            Ok(MaxUnready::Count(n)) => {
                prop_assert!(n >= 0);
                prop_assert_eq!(MaxUnready::Count(n).of(replicas), n);
            }
            Err(_) => {}
        }
    }

    #[test]
    fn bounded_text_is_bounded_and_a_prefix(s in "\\PC{0,400}", max in 0usize..300) {
        let b = text::bounded(&s, max);
        if s.len() <= max {
            prop_assert_eq!(&b, &s);
        } else {
            prop_assert!(b.len() <= max.max(text::MARKER.len()));
            prop_assert!(b.ends_with(text::MARKER));
            prop_assert!(s.starts_with(b.trim_end_matches(text::MARKER)));
        }
        let k = text::bounded_key(&s, 253);
        prop_assert!(k.len() <= 253 || s.len() <= 253);
    }
}

// ---- label selectors -------------------------------------------------------------------------

fn requirement() -> impl Strategy<Value = SelectorRequirement> {
    (
        "[ab]",
        prop_oneof![
            Just("In".to_owned()),
            Just("NotIn".to_owned()),
            Just("Exists".to_owned()),
            Just("DoesNotExist".to_owned()),
            "[A-Za-z]{0,6}",
        ],
        prop::option::of(prop::collection::vec("[xy]", 0..3)),
    )
        .prop_map(|(key, operator, values)| SelectorRequirement {
            key,
            operator,
            values,
        })
}

proptest! {
    #![proptest_config(config(256))]

    /// Any selector and labels: no panic; a selector Kubernetes can read selects exactly what
    /// kube's own Selector does; one it cannot read is an error only when it could decide.
    #[test]
    fn selectors_select_as_kubernetes_does(
        match_labels in prop::option::of(prop::collection::btree_map("[ab]", "[xy]", 0..3)),
        match_expressions in prop::option::of(prop::collection::vec(requirement(), 0..3)),
        labels in prop::collection::btree_map("[abc]", "[xyz]", 0..3),
    ) {
        let sel = PolicySelector { match_labels, match_expressions };
        let got = selects(&sel, &labels);
        let as_k8s = k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector {
            match_labels: sel.match_labels.clone(),
            match_expressions: sel.match_expressions.as_ref().map(|es| {
                es.iter()
                    .map(|e| k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement {
                        key: e.key.clone(),
                        operator: e.operator.clone(),
                        values: e.values.clone(),
                    })
                    .collect()
            }),
        };
        let empty = sel.match_labels.as_ref().is_none_or(|m| m.is_empty())
            && sel.match_expressions.as_ref().is_none_or(|e| e.is_empty());
        let valid = sel.match_expressions.iter().flatten().all(|e| {
            let n = e.values.as_ref().map_or(0, Vec::len);
            matches!((e.operator.as_str(), n > 0), ("In" | "NotIn", true) | ("Exists" | "DoesNotExist", false))
        });
        if empty {
            prop_assert_eq!(got, Ok(false));
        } else if valid {
            use kube::core::SelectorExt;
            let oracle = kube::core::Selector::try_from(as_k8s).unwrap().matches(&labels);
            prop_assert_eq!(got, Ok(oracle));
        } else if let Ok(true) = got {
            prop_assert!(false, "an unreadable selector selected: {sel:?}");
        }
    }
}

// ---- the planner -----------------------------------------------------------------------------

/// What may happen between two decisions.
#[derive(Clone, Debug)]
enum Event {
    /// Time passes.
    Wait(i64),
    /// A new spec: version `VERSIONS[i]`, optionally with an image that fails.
    Ship(usize, Option<PodState>),
    /// The current template's pods come up in this state.
    PodsComeUp(PodState),
    /// The current template rolls out.
    RollOut,
    /// `rewind.dev/rollback-to` on the Release.
    RollbackTo(String),
    /// `rewind.dev/retry`.
    Retry(String),
    /// `rewind.dev/requested-by`.
    RequestedBy(String),
    /// An annotation is removed.
    Remove(&'static str),
    /// The registry answers for the tags (or fails).
    Registry(bool),
    /// The Deployment's progress deadline passes.
    DeadlineExceeded,
    /// Replicas change (an autoscaler).
    Scale(i32),
    /// `rewind.dev/rollback-to` (and who asked) on the Deployment.
    DeploymentRollbackTo(Option<String>, Option<String>),
    /// The Deployment is deleted (and, with true, back as it was).
    TargetGone(bool),
    /// `spec.paused`.
    Paused(bool),
    /// `rewind.dev/paused` (removed when None).
    PausedBy(Option<String>),
    /// `rewind.dev/request-id`.
    RequestId(String),
    /// `rewind.dev/reason`.
    Reason(String),
    /// The Release names a container the Deployment lacks (or not).
    UnknownContainer(bool),
    /// The policy cannot be resolved (or can again).
    PolicyBroken(bool),
    /// A release of `VERSIONS[i]` that rolls out: shipped, then its pods all Ready.
    Healthy(usize),
    /// A release of `VERSIONS[i]` whose pods come up in a failing state, then time passes and
    /// whatever Rewind applied rolls out.
    Broken(usize, PodState),
    /// The next spec's migration: schema, an up command, a down command, reversible (or none).
    Migration(Option<(u8, bool, bool, bool)>),
    /// Every running migration Job ends: 0 succeeded, 1 failed, 2 past its deadline,
    /// 3 deleted.
    JobsEnd(u8),
    /// `rewind.dev/allow-irreversible` names these versions.
    AllowIrreversible(String),
    /// Another field manager sets the api image to `VERSIONS[i]`'s tag.
    Override(usize),
}

const VERSIONS: [&str; 4] = ["1.0.0", "2.0.0", "3.0.0", "4.0.0"];

fn pod_state() -> impl Strategy<Value = PodState> {
    prop_oneof![
        Just(PodState::Ready),
        Just(PodState::NotReady),
        (0i32..6).prop_map(PodState::CrashLoop),
        Just(PodState::ImagePull),
    ]
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        3 => (0i64..400).prop_map(Event::Wait),
        2 => (0..VERSIONS.len(), prop::option::of(pod_state())).prop_map(|(i, s)| Event::Ship(i, s)),
        2 => pod_state().prop_map(Event::PodsComeUp),
        2 => Just(Event::RollOut),
        1 => prop_oneof![
            Just("previous".to_owned()),
            (0..VERSIONS.len()).prop_map(|i| VERSIONS[i].to_owned()),
            "\\PC{0,300}",
        ].prop_map(Event::RollbackTo),
        1 => "[0-9]{1,2}".prop_map(Event::Retry),
        1 => "\\PC{0,2000}".prop_map(Event::RequestedBy),
        1 => prop_oneof![Just(labels::ROLLBACK_TO), Just(labels::RETRY), Just(labels::REQUEST_ID)].prop_map(Event::Remove),
        1 => any::<bool>().prop_map(Event::Registry),
        1 => Just(Event::DeadlineExceeded),
        1 => (0i32..5).prop_map(Event::Scale),
        1 => (
            prop::option::of(prop_oneof![Just("previous".to_owned()), "[0-9]\\.0\\.0", "\\PC{0,300}"]),
            prop::option::of("\\PC{0,600}"),
        ).prop_map(|(v, who)| Event::DeploymentRollbackTo(v, who)),
        1 => any::<bool>().prop_map(Event::TargetGone),
        1 => any::<bool>().prop_map(Event::Paused),
        1 => prop::option::of(prop_oneof![Just("false".to_owned()), Just(String::new()), "\\PC{0,600}"])
            .prop_map(Event::PausedBy),
        2 => "[a-z0-9]{0,3}|\\PC{0,400}".prop_map(Event::RequestId),
        1 => "\\PC{0,2000}".prop_map(Event::Reason),
        1 => any::<bool>().prop_map(Event::UnknownContainer),
        1 => any::<bool>().prop_map(Event::PolicyBroken),
        3 => (0..VERSIONS.len()).prop_map(Event::Healthy),
        3 => (0..VERSIONS.len(), pod_state()).prop_map(|(i, s)| Event::Broken(i, s)),
        2 => prop::option::of((0u8..3, any::<bool>(), prop::bool::weighted(0.8), prop::bool::weighted(0.8)))
            .prop_map(Event::Migration),
        3 => (0u8..4).prop_map(Event::JobsEnd),
        1 => prop_oneof![
            (0..VERSIONS.len()).prop_map(|i| VERSIONS[i].to_owned()),
            "\\PC{0,300}",
        ].prop_map(Event::AllowIrreversible),
        2 => (0..VERSIONS.len()).prop_map(Event::Override),
    ]
}

fn policy() -> impl Strategy<Value = Policy> {
    (
        prop::bool::weighted(0.85),
        2usize..6,
        any::<bool>(),
        (5u64..600, 1u64..60, 1u64..120, 0u64..600, 0u64..600),
        prop_oneof![
            (0i32..3).prop_map(MaxUnready::Count),
            (0u8..=100).prop_map(MaxUnready::Percent)
        ],
        (1i32..5, any::<bool>(), prop::bool::weighted(0.15)),
    )
        .prop_map(
            |(
                automatic,
                history_limit,
                previous,
                secs,
                max_unready,
                (restarts, deadline, strict),
            )| {
                let (timeout, unready, pull, guard, cooldown) = secs;
                Policy {
                    automatic,
                    history_limit,
                    target: if previous {
                        RollbackTarget::Previous
                    } else {
                        RollbackTarget::LastHealthy
                    },
                    readiness_timeout: Duration::from_secs(timeout),
                    unready_for: Duration::from_secs(unready),
                    max_unready,
                    crash_loop_restarts: restarts,
                    image_pull_fail_for: Duration::from_secs(pull),
                    progress_deadline: deadline,
                    guard_window: Duration::from_secs(guard),
                    cooldown: Duration::from_secs(cooldown),
                    strict_digests: strict,
                    metrics: Vec::new(),
                    ..Policy::default()
                }
            },
        )
}

/// The image of `version`: its tag, or one whose pods fail in `state`.
fn image_of(version: &str, state: Option<PodState>) -> String {
    match state {
        None | Some(PodState::Ready) => tag(version),
        Some(PodState::NotReady) => format!("{REPO}:{version}-unready"),
        Some(PodState::CrashLoop(_)) => format!("{REPO}:{version}-crashloop"),
        Some(PodState::ImagePull) => format!("{REPO}:{version}-badpull"),
    }
}

/// Check what a plan may never do, given the status it was made from.
fn check_invariants(before: &ReleaseStatus, p: &Plan) -> Result<(), TestCaseError> {
    let after = &p.status;
    if let Some(t) = &p.apply {
        if let Some(b) = &after.blocked {
            // Putting back what runs is fine even when its version string is the blocked
            // one (a healthy earlier revision of the same version); deploying it is not.
            let live = after
                .revision
                .and_then(|n| after.history.iter().find(|r| r.revision == n));
            let restores_live =
                live.is_some_and(|l| l.revision == t.revision && l.outcome != Outcome::Failed);
            if !restores_live {
                prop_assert_ne!(&t.version, &b.version, "applied the blocked version");
            }
        }
        prop_assert!(
            after.history.iter().any(|r| r.revision == t.revision),
            "applied revision {} which is not in history {:?}",
            t.revision,
            revisions(after)
        );
    }
    let started = after
        .rollback
        .as_ref()
        .filter(|rb| before.rollback.as_ref().is_none_or(|old| old.id != rb.id));
    if let Some(rb) = started {
        let target = before
            .history
            .iter()
            .chain(after.history.iter())
            .find(|r| r.revision == rb.to.revision);
        prop_assert!(
            target.is_some_and(|r| r.healthy_at.is_some() && r.outcome != Outcome::Failed),
            "rolled back to revision {} which was not healthy: {:?}",
            rb.to.revision,
            target
        );
        prop_assert!(rb.to.revision < rb.from.revision || rb.trigger == Trigger::Manual);
    }
    // Migrations: nothing is applied past a waiting up Job or before the down migrations
    // of a BeforeRollback; every Job asked for is recorded in status under its name, once.
    let gated = after.history.iter().find(|r| {
        r.migration
            .as_ref()
            .and_then(|m| m.up_job.as_ref())
            .is_some_and(|j| j.phase == crate::api::MigrationPhase::Running)
    });
    if let (Some(g), Some(t)) = (gated, &p.apply) {
        prop_assert_ne!(
            g.revision,
            t.revision,
            "applied a revision whose up Job runs"
        );
    }
    if let Some(rb) = after.rollback.as_ref()
        && rb.phase == RollbackPhase::MigratingDown
    {
        prop_assert!(p.apply.is_none(), "applied while migrating down first");
    }
    let recorded: Vec<&str> = after
        .history
        .iter()
        .filter_map(|r| r.migration.as_ref()?.up_job.as_ref())
        .chain(
            after
                .rollback
                .iter()
                .flat_map(|rb| rb.migrations.iter().filter_map(|s| s.job.as_ref())),
        )
        .map(|j| j.name.as_str())
        .collect();
    let mut names: Vec<&str> = p.jobs.iter().map(|j| j.name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    prop_assert_eq!(
        names.len(),
        p.jobs.len(),
        "a Job asked for twice in one plan"
    );
    for j in &p.jobs {
        prop_assert!(
            recorded.contains(&j.name.as_str()),
            "Job {} is asked for but not recorded in status",
            j.name
        );
        prop_assert!(j.name.len() <= 63, "{}", j.name);
    }
    if let Some(c) = before.contested.as_ref().filter(|c| c.stopped)
        && after.contested.as_ref() == Some(c)
    {
        prop_assert!(
            p.apply.is_none(),
            "wrote to a Deployment Rewind stopped writing to"
        );
    }
    let revisions: Vec<i64> = after.history.iter().map(|r| r.revision).collect();
    let mut sorted = revisions.clone();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    sorted.dedup();
    prop_assert_eq!(
        &sorted,
        &revisions,
        "history is newest first, each revision once"
    );
    for c in &after.conditions {
        prop_assert!(c.message.len() <= text::MESSAGE_MAX);
    }
    for e in &p.events {
        prop_assert!(e.message.len() <= text::MESSAGE_MAX);
    }
    let size = serde_json::to_vec(after)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    prop_assert!(size < 256 * 1024, "status grew to {size} bytes");
    Ok(())
}

/// A new spec: version `VERSIONS[i]`, its image failing in `state` if given.
fn ship(w: &mut World, i: usize, state: Option<PodState>) {
    let v = VERSIONS[i];
    w.release.spec.version = v.into();
    w.release.spec.images = vec![ContainerImage {
        container: "api".into(),
        image: image_of(v, state),
    }];
    *w.release.metadata.generation.get_or_insert(0) += 1;
}

/// Decide at `now` as the controller does, and check the plan.
fn step_checked(w: &mut World, now: i64) -> Result<(), TestCaseError> {
    let before = w.release.status.clone().unwrap_or_default();
    let p = w.at(now).step();
    // Paused (by spec or annotation): nothing is done and it says so; not paused, it never
    // says it is.
    if crate::decide::paused(&w.release).is_some() {
        prop_assert!(p.apply.is_none() && p.jobs.is_empty(), "acted while paused");
        prop_assert_eq!(p.status.phase, Some(Phase::Paused));
    } else {
        prop_assert_ne!(
            p.status.phase,
            Some(Phase::Paused),
            "paused without a pause"
        );
    }
    // A request id is recorded only with the ManualRollback condition that answers it.
    let id = |s: &ReleaseStatus| s.handled.as_ref().and_then(|h| h.request_id.clone());
    if id(&p.status).is_some() && id(&p.status) != id(&before) {
        prop_assert!(
            conditions::get(&p.status.conditions, conditions::MANUAL_ROLLBACK).is_some(),
            "request id recorded without an answer"
        );
    }
    if let Some(rb) = &p.status.rollback {
        prop_assert!(
            rb.request_reason
                .as_ref()
                .is_none_or(|r| r.len() <= text::DETAIL_MAX)
        );
    }
    check_invariants(&before, &p)
}

proptest! {
    #![proptest_config(config(96))]

    /// Random Releases, policies, pods and requests, decided step after step as the
    /// controller does: no panic, and the invariants hold after every step.
    #[test]
    fn the_planner_keeps_its_invariants(
        policy in policy(),
        adopt in any::<bool>(),
        answers in prop::bool::weighted(0.8),
        replicas in 0i32..4,
        events in prop::collection::vec(event(), 1..24),
    ) {
        let mut deployment = deployment();
        if adopt {
            deployment = deployment.image("api", &tag("0.9.0")).serving();
        }
        let mut w = World::new(release(VERSIONS[0]).build(), deployment.build());
        w.policy = policy;
        w.workload_mut().replicas = replicas;
        // Mostly a registry that answers, so Strict policies deploy too.
        if answers {
            w.resolved = w.registry.iter().map(|(k, d)| (k.clone(), Ok(d.clone()))).collect();
        }
        let mut now = 0;
        // The Deployment while it is deleted.
        let mut gone: Option<Workload> = None;
        step_checked(&mut w, now)?;
        for e in events {
            match e {
                Event::Wait(s) => now += s,
                Event::Ship(i, state) => ship(&mut w, i, state),
                Event::PodsComeUp(state) if w.workload.is_some() => {
                    w.at(now).pods_come_up(state);
                }
                Event::RollOut if w.workload.is_some() => {
                    w.at(now).roll_out();
                }
                Event::PodsComeUp(_) | Event::RollOut => {}
                Event::RollbackTo(v) => {
                    w.annotate(labels::ROLLBACK_TO, &v);
                }
                Event::Retry(v) => {
                    w.annotate(labels::RETRY, &v);
                }
                Event::RequestedBy(v) => {
                    w.annotate(labels::REQUESTED_BY, &v);
                }
                Event::Remove(k) => {
                    w.remove_annotation(k);
                }
                Event::Registry(ok) => {
                    w.resolved = w
                        .registry
                        .iter()
                        .map(|(k, d)| {
                            let answer = if ok {
                                Ok(d.clone())
                            } else {
                                Err(ResolveError::Other("x".repeat(10_000)))
                            };
                            (k.clone(), answer)
                        })
                        .collect();
                }
                Event::DeadlineExceeded => {
                    if let Some(d) = w.workload.as_mut() {
                        d.progress_deadline_exceeded = true;
                    }
                }
                Event::Scale(n) => {
                    if let Some(d) = w.workload.as_mut() {
                        d.replicas = n;
                    }
                }
                Event::DeploymentRollbackTo(v, who) => {
                    if let Some(d) = w.workload.as_mut() {
                        d.rollback_to = v;
                        d.requested_by = who;
                    }
                }
                Event::TargetGone(back) => {
                    if back {
                        w.workload = w.workload.take().or_else(|| gone.take());
                    } else if let Some(d) = w.workload.take() {
                        gone = Some(d);
                    }
                }
                Event::Paused(p) => w.release.spec.paused = p,
                Event::PausedBy(Some(v)) => {
                    w.annotate(labels::PAUSED, &v);
                }
                Event::PausedBy(None) => {
                    w.remove_annotation(labels::PAUSED);
                }
                Event::RequestId(v) => {
                    w.annotate(labels::REQUEST_ID, &v);
                }
                Event::Reason(v) => {
                    w.annotate(labels::REASON, &v);
                }
                Event::UnknownContainer(on) => {
                    w.release.spec.images.retain(|i| i.container == "api");
                    if on {
                        w.release.spec.images.push(ContainerImage {
                            container: "web".into(),
                            image: tag("1.0.0"),
                        });
                    }
                }
                Event::Migration(m) => {
                    w.release.spec.migration = m.map(|(schema, up, down, reversible)| crate::api::Migration {
                        image: format!("registry.example/shop/migrate:{schema}"),
                        schema_version: schema.to_string(),
                        up: up.then(Default::default),
                        down: down.then(Default::default),
                        reversible,
                        service_account_name: None,
                        env: Vec::new(),
                        env_from: Vec::new(),
                        resources: None,
                        pod_annotations: Default::default(),
                    });
                }
                Event::JobsEnd(how) => {
                    let at = t(now);
                    if how == 3 {
                        w.jobs.retain(|j| j.state != JobState::Running);
                    }
                    for j in w.jobs.iter_mut().filter(|j| j.state == JobState::Running) {
                        j.state = match how {
                            0 => JobState::Succeeded { at },
                            1 => JobState::Failed { at, reason: "BackoffLimitExceeded".into(), message: "x".repeat(5000) },
                            _ => JobState::Failed { at, reason: "DeadlineExceeded".into(), message: String::new() },
                        };
                    }
                }
                Event::AllowIrreversible(v) => {
                    w.annotate(labels::ALLOW_IRREVERSIBLE, &v);
                }
                Event::Override(i) => {
                    if let Some(d) = w.workload.as_mut() {
                        d.images.insert("api".into(), ContainerSlot { image: tag(VERSIONS[i]), init: false });
                        d.image_managers.insert("api".into(), vec!["argocd-controller".into()]);
                        d.generation += 1;
                    }
                }
                Event::PolicyBroken(broken) => {
                    w.policy_error = broken.then(|| PolicyError::Ambiguous(vec!["a".into(), "b".into()]));
                }
                Event::Healthy(i) => {
                    ship(&mut w, i, None);
                    step_checked(&mut w, now)?;
                    now += 10;
                    if w.workload.is_some() {
                        w.at(now).roll_out();
                    }
                    step_checked(&mut w, now)?;
                    now += 10;
                    if w.workload.is_some() {
                        w.at(now).roll_out();
                    }
                }
                Event::Broken(i, state) => {
                    ship(&mut w, i, Some(state));
                    step_checked(&mut w, now)?;
                    now += 10;
                    if w.workload.is_some() {
                        w.at(now).pods_come_up(state);
                    }
                    step_checked(&mut w, now)?;
                    now += 700;
                    step_checked(&mut w, now)?;
                    now += 10;
                    if w.workload.is_some() {
                        w.at(now).roll_out();
                    }
                }
            }
            step_checked(&mut w, now)?;
        }
    }
}

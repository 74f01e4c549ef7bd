//! Adopting a Deployment, deploying a revision pinned to digests, and pinning what runs.

use super::*;

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
            tc("api", pinned(1), false),
            tc(
                "setup",
                format!("registry.example/shop/setup@{}", d(8)),
                true
            ),
            tc("worker", "registry.example/shop/worker:1.0.0", false),
        ]
    );
    let as_written = template_for(&entry, &w, false);
    let images: Vec<&str> = as_written
        .containers
        .iter()
        .map(|c| c.image.as_str())
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

#[test]
fn first_reconcile_adopts_running_image_as_revision_0_then_deploys_revision_1() {
    let mut w = World::new(
        release("1.0.0").build(),
        deployment().image("api", &tag("0.9.0")).serving().build(),
    );
    w.pods = ready_pods(3, None, &d(90));
    let p = w.plan();

    assert_eq!(reasons(&p), [reasons::ADOPTED, reasons::DEPLOYING]);
    assert!(p.events.iter().all(|e| !e.is_warning()));
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
    assert_eq!(
        cond(s, conditions::READY),
        is("False", reasons::PROGRESSING)
    );
    assert_eq!(
        cond(s, conditions::RECONCILING),
        is("True", reasons::PROGRESSING)
    );
    assert_eq!(
        cond(s, conditions::STALLED),
        is("False", reasons::PROGRESSING)
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
            (None, None) => assert_eq!(reasons(&p), [reasons::DEPLOYING], "{}", c.name),
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
                    [reasons::ADOPTED, reasons::DEPLOYING],
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
    assert_eq!(reasons(&p), [reasons::DEPLOYING]);
    assert_eq!(p.apply, Some(template(1, "1.0.0", tag("1.0.0"))));
}

// ---- pinning what runs -------------------------------------------------------------------

#[test]
fn digest_is_captured_from_pods_of_the_live_revision() {
    let mut w = World::new(release("1.0.0").build(), deployment().build());
    w.at(0).step();
    // Running but not Ready yet: the image was pulled, so imageID already names the digest.
    let p = w.at(10).pods_come_up(PodState::NotReady).step();
    assert_eq!(reasons(&p), [reasons::DIGEST_RECORDED]);
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
    assert_eq!(reasons(&p), [reasons::HEALTHY]);
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
    assert_eq!(reasons(&p), [reasons::DIGEST_RECORDED, reasons::HEALTHY]);
    assert_eq!(p.status.phase, Some(Phase::Healthy));
    assert_eq!(
        cond(&p.status, conditions::READY),
        is("True", reasons::HEALTHY)
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
    assert_eq!(reasons(&p), [reasons::DIGEST_RECORDED, reasons::PINNED]);
    let want = Template {
        revision: 1,
        version: "1.0.0".into(),
        containers: vec![
            tc("api", pinned(1), false),
            tc(
                "worker",
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
fn healthy_revision_repins_a_deployment_someone_changed() {
    let mut w = healthy_v1();
    let g = w.workload_mut();
    g.images.get_mut("api").unwrap().image = tag("1.0.0");
    g.generation += 1;
    let p = w.at(100).step();
    assert_eq!(p.apply, Some(template(1, "1.0.0", pinned(1))));
    assert_eq!(reasons(&p), [reasons::PINNED]);
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
    assert_eq!(reasons(&p), [reasons::DEPLOYING]);
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
        [reasons::HEALTHY],
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

// ---- what is recorded but not acted on yet -----------------------------------------------

#[test]
fn a_policy_with_metric_checks_is_told_they_are_not_evaluated() {
    let mut w = healthy_v1();
    w.policy.metrics = vec!["error-rate".into()];
    let p = w.set_version("2.0.0").at(100).step();
    assert!(p.apply.is_some());
    let note = p
        .events
        .iter()
        .find(|n| n.reason == reasons::METRICS_NOT_EVALUATED)
        .expect("a warning Event");
    assert!(
        note.is_warning() && note.message.contains("error-rate"),
        "{note:?}"
    );
}

// ---- what counts as running ---------------------------------------------------------------

#[test]
fn a_revision_at_zero_replicas_is_never_healthy_and_is_judged_once_it_runs() {
    let mut w = healthy_v1();
    w.workload_mut().replicas = 0;
    w.set_version("2.0.0").at(100).step();
    // The Deployment "rolls out" nothing: every count is 0 of 0.
    let p = w.at(110).roll_out().step();
    assert_eq!(p.status.phase, Some(Phase::Progressing), "{:#?}", p.status);
    assert_eq!(entry(&p.status, 2).outcome, Outcome::Pending);
    assert!(
        condition(&p.status, conditions::READY)
            .message
            .contains("0 replicas"),
        "{:#?}",
        p.status.conditions
    );
    // Long past the readiness timeout: still waiting, no failure, no rollback.
    let p = w.at(1000).step();
    assert_eq!(p.status.phase, Some(Phase::Progressing));
    assert_eq!(p.status.rollback, None);
    assert_eq!(p.apply, None);
    // Never a rollback target: a later failure has nothing but 1.0.0 to go back to.
    assert_eq!(
        choose_target(&p.status.history, 3, RollbackTarget::LastHealthy).map(|r| r.revision),
        Some(1)
    );
    // Scaled up at t(2000): the readiness timeout runs from its first pod, not from t(100).
    w.workload_mut().replicas = 3;
    let p = w.at(2000).pods_come_up(PodState::NotReady).step();
    assert_eq!(p.status.phase, Some(Phase::Progressing), "{:#?}", p.status);
    assert_eq!(p.recheck, Some(t(2300)));
    let p = w.at(2300).step();
    assert_eq!(
        rollback(&p.status).trigger,
        Trigger::Readiness,
        "judged once it runs pods"
    );
}

#[test]
fn an_adopted_deployment_at_zero_replicas_is_not_a_rollback_target() {
    let mut w = World::new(
        release("1.0.0").build(),
        deployment().image("api", &pinned(90)).build(),
    );
    w.workload_mut().replicas = 0;
    w.roll_out();
    let p = w.at(0).step();
    assert_eq!(entry(&p.status, 0).healthy_at, None, "never seen running");
    assert_eq!(
        choose_target(&p.status.history, 1, RollbackTarget::LastHealthy),
        None
    );
}

#[test]
fn a_deployment_created_again_under_the_same_name_is_adopted_as_a_new_target() {
    let mut w = world_with_registry();
    w.deploy_healthy("2.0.0", 100);
    assert_eq!(
        w.status().target_uid.as_deref(),
        Some(DEPLOYMENT_UID),
        "the target's uid is recorded"
    );
    // Someone deletes the Deployment and creates another app under the same name.
    w.workload = Some(
        deployment()
            .image("api", "registry.example/other/app:9.9.9")
            .serving()
            .build(),
    );
    w.workload_mut().uid = "another-uid".into();
    w.pods = Vec::new();
    w.set_version("1.0.0"); // a version recorded in the old history: its digest must not be reused
    let p = w.at(300).step();
    assert!(
        reasons(&p).contains(&reasons::TARGET_REPLACED),
        "{:?}",
        reasons(&p)
    );
    assert_eq!(p.status.target_uid.as_deref(), Some("another-uid"));
    let adopted = entry(&p.status, 0);
    assert_eq!(adopted.images[0].image, "registry.example/other/app:9.9.9");
    assert_eq!(
        revisions(&p.status),
        [1, 0],
        "a new history: the old revisions are gone"
    );
    // 1.0.0 is deployed as a new revision, pinned from the registry, not from the old history.
    assert_eq!(
        entry(&p.status, 1).images[0].resolved_from,
        Some(DigestSource::Registry)
    );
    assert_eq!(p.apply.expect("deployed to the new target").revision, 1);
}

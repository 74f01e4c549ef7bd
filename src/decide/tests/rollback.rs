//! Failures, the rollback state machine, the policy's limits on it, and resuming after a
//! restart.

use super::*;

#[test]
fn rolls_back_when_new_pods_never_become_ready() {
    let mut w = healthy_v1();
    let p = w.set_version("2.0.0").at(100).step();
    assert_eq!(p.apply, Some(template(2, "2.0.0", tag("2.0.0"))));
    assert_eq!(p.recheck, Some(t(400)));
    assert_eq!(entry(&p.status, 1).outcome, Outcome::Superseded);
    let p = w.at(110).pods_come_up(PodState::NotReady).step();
    assert_eq!(reasons(&p), [reasons::DIGEST_RECORDED]);
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
    assert_eq!(reasons(&p), [reasons::ROLLBACK_STARTED]);
    assert!(p.events[0].is_warning());
    assert_eq!(p.status.phase, Some(Phase::RollingBack));
    assert_eq!(
        cond(&p.status, conditions::READY),
        is("False", reasons::ROLLING_BACK)
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
    assert_eq!(reasons(&p), [reasons::IMAGES_RESTORED]);
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
        is("False", reasons::ROLLED_BACK)
    );
    assert_eq!(
        cond(&p.status, conditions::STALLED),
        is("True", reasons::ROLLED_BACK)
    );
    assert_eq!(cond(&p.status, conditions::RECONCILING).0, "False");
    assert_eq!(
        cond(&p.status, conditions::ROLLED_BACK),
        is("True", reasons::ROLLED_BACK)
    );
    assert_eq!(
        (entry(&p.status, 1).outcome, entry(&p.status, 2).outcome),
        (Outcome::Healthy, Outcome::Failed)
    );
    assert_eq!(reasons(&p), [reasons::ROLLBACK_SUCCEEDED]);
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
                    reasons(&p).contains(&reasons::ROLLBACK_STARTED),
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
        is("True", reasons::ROLLBACK_FAILED)
    );
    assert_eq!(reasons(&p), [reasons::ROLLBACK_FAILED]);
    assert!(p.events[0].is_warning());
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
        "a blocked release puts its live revision back (status and Deployment agree)"
    );
}

// ---- when policy says no -----------------------------------------------------------------

#[test]
fn automatic_off_degrades_without_rollback() {
    let mut w = healthy_v1();
    w.policy.automatic = false;
    let p = w.deploy_crashing("2.0.0", 100);
    assert_eq!((p.status.rollback.clone(), p.apply.clone()), (None, None));
    assert_eq!(p.status.phase, Some(Phase::Degraded));
    assert_eq!(
        cond(&p.status, conditions::READY),
        is("False", reasons::ROLLBACK_DISABLED)
    );
    assert_eq!(
        cond(&p.status, conditions::STALLED),
        is("True", reasons::ROLLBACK_DISABLED)
    );
    assert!(
        p.events
            .iter()
            .any(|e| e.is_warning() && e.reason == reasons::ROLLBACK_DISABLED),
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
        is("False", reasons::NO_ROLLBACK_TARGET)
    );
    assert!(
        p.events
            .iter()
            .any(|e| e.is_warning() && e.reason == reasons::NO_ROLLBACK_TARGET),
        "{:?}",
        p.events
    );
    assert_eq!(entry(&p.status, 1).outcome, Outcome::Failed);
}

#[test]
fn degraded_reason_survives_the_next_plan() {
    let automatic_off = {
        let mut w = healthy_v1();
        w.policy.automatic = false;
        w.deploy_crashing("2.0.0", 100);
        (w, reasons::ROLLBACK_DISABLED)
    };
    let no_target = {
        let mut w = World::new(release("1.0.0").build(), deployment().build());
        w.at(0).step();
        w.at(10).pods_come_up(PodState::CrashLoop(3)).step();
        (w, reasons::NO_ROLLBACK_TARGET)
    };
    for (mut w, why) in [automatic_off, no_target] {
        assert_eq!(cond(w.status(), conditions::READY), is("False", why));
        let before = w.status().clone();
        let p = w.at(300).step();
        assert_eq!(
            cond(&p.status, conditions::READY),
            is("False", why),
            "the reason of Degraded survives the next plan"
        );
        assert_eq!(p.status, before, "same inputs, same status");
    }
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
        is("False", reasons::COOLDOWN)
    );
    assert_eq!(p.recheck, Some(t(720)), "look again when the cooldown ends");
    assert_eq!(
        p.events
            .iter()
            .filter(|e| e.reason == reasons::COOLDOWN)
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

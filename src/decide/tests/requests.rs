//! What people ask by annotation: retries of a blocked version and manual rollbacks.

use super::*;

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
    assert_eq!(reasons(&p), [reasons::RETRY, reasons::DEPLOYING]);
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
        is("False", reasons::DEPLOYING)
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
        is("False", reasons::DEPLOYING)
    );
    assert_eq!(p.status.phase, Some(Phase::Progressing));
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
        "RolledBack is False once nothing is blocked"
    );
}

// ---- people asking for a rollback --------------------------------------------------------

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
    assert_eq!(reasons(&p), [reasons::ROLLBACK_STARTED]);
    assert_eq!(
        cond(&p.status, conditions::MANUAL_ROLLBACK),
        is("True", reasons::ACCEPTED)
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
        ("9.9.9", false, Err(reasons::UNKNOWN_VERSION)),
        ("3.0.0", false, Err(reasons::TARGET_NOT_HEALTHY)),
        ("2.0.0", false, Err(reasons::DIGESTS_UNKNOWN)),
        ("4.0.0", false, Err(reasons::ALREADY_RUNNING)),
        ("previous", false, Ok(1)),
        ("1.0.0", false, Ok(1)),
        ("9.9.9", true, Err(reasons::UNKNOWN_VERSION)),
        ("3.0.0", true, Err(reasons::TARGET_NOT_HEALTHY)),
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
                    is("True", reasons::ACCEPTED),
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
                    p.events[0].is_warning() && p.events[0].reason == why,
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
    assert_eq!(reasons(&p), [reasons::UNKNOWN_VERSION]);
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
    assert_eq!(reasons(&p), [reasons::UNKNOWN_VERSION], "re-armed");
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
    assert_eq!(
        p.status.blocked, None,
        "named by a person, it is unblocked as the rollback starts, not applied while blocked"
    );
    w.complete_rollback(310);
    let p = w.at(400).step();
    assert_eq!(
        (p.status.revision, p.status.version.as_deref()),
        (Some(2), Some("2.0.0"))
    );
    assert_eq!(
        p.status.blocked, None,
        "a version a person rolls back to is not blocked while it runs"
    );
    assert_eq!(
        p.status.phase,
        Some(Phase::Healthy),
        "the restored version is healthy, not RolledBack and Stalled"
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
        "an automatic rollback never goes to a version a person rolled back"
    );
}

/// Found by the fuzz test: 4.0.0 healthy (revision 1), then 1.0.0 (2), then 4.0.0 again (3)
/// fails and is rolled back to 1.0.0: 4.0.0 is blocked. `previous` must not pick revision 1,
/// the same bits that just failed, while its own status says 4.0.0 is blocked.
#[test]
fn previous_skips_revisions_of_the_blocked_version() {
    let mut w = World::new(release("4.0.0").build(), deployment().build());
    w.at(0).step();
    w.at(20).roll_out().step();
    w.at(40).roll_out().step();
    w.deploy_healthy("1.0.0", 100);
    w.set_version("4.0.0").at(200).step();
    w.at(210).pods_come_up(PodState::NotReady).step();
    w.at(900).step();
    w.complete_rollback(910);
    assert_eq!(
        w.status().blocked.as_ref().map(|b| b.version.as_str()),
        Some("4.0.0")
    );
    let p = w
        .annotate(labels::ROLLBACK_TO, labels::PREVIOUS)
        .at(1000)
        .step();
    assert_eq!(p.apply, None, "{:#?}", p.events);
    assert_eq!(
        cond(&p.status, conditions::MANUAL_ROLLBACK),
        is("False", reasons::UNKNOWN_VERSION)
    );
    // Named, 4.0.0 means its newest revision, the one that failed: refused too.
    let p = w.annotate(labels::ROLLBACK_TO, "4.0.0").at(1100).step();
    assert_eq!(p.apply, None);
    assert_eq!(
        cond(&p.status, conditions::MANUAL_ROLLBACK),
        is("False", reasons::TARGET_NOT_HEALTHY)
    );
}

// ---- annotations are anyone's text -------------------------------------------------------

/// A 256 KiB `requested-by` must not be copied into several status fields (etcd holds 1.5 MiB
/// per object): every text that quotes it is bounded and marked as cut.
#[test]
fn a_huge_requested_by_is_bounded_wherever_it_is_copied() {
    use crate::decide::text::{MARKER, MESSAGE_MAX, NAME_MAX};
    let mut w = healthy_v1();
    w.deploy_healthy("2.0.0", 100);
    let huge = "mallory".repeat(256 * 1024 / 7);
    let p = w
        .annotate(labels::ROLLBACK_TO, "1.0.0")
        .annotate(labels::REQUESTED_BY, &huge)
        .at(200)
        .step();
    let rb = rollback(&p.status);
    let who = rb.requested_by.as_deref().unwrap();
    assert!(who.len() <= NAME_MAX && who.ends_with(MARKER), "{who}");
    assert!(rb.message.len() <= MESSAGE_MAX, "{}", rb.message.len());
    let failure = entry(&p.status, 2).failure.as_ref().unwrap();
    assert!(failure.message.len() <= MESSAGE_MAX);
    for c in &p.status.conditions {
        assert!(
            c.message.len() <= MESSAGE_MAX,
            "{}: {}",
            c.type_,
            c.message.len()
        );
    }
    for n in &p.events {
        assert!(n.message.len() <= MESSAGE_MAX);
    }
    let json = serde_json::to_string(&p.status).unwrap();
    assert!(json.len() < 16 * 1024, "status is {} bytes", json.len());
}

/// Annotation values kept in `status.handled` are bounded too, and still act once per value:
/// two long values that differ only at their end are two requests.
#[test]
fn huge_annotation_values_are_kept_bounded_and_still_act_once() {
    use crate::decide::text::NAME_MAX;
    let mut w = rolled_back_v2();
    let long = |c: char| format!("{}{c}", "r".repeat(100_000));
    let p = w.annotate(labels::RETRY, &long('1')).at(600).step();
    assert_eq!(reasons(&p), [reasons::RETRY, reasons::DEPLOYING]);
    let kept = p
        .status
        .handled
        .as_ref()
        .and_then(|h| h.retry.clone())
        .unwrap();
    assert!(kept.len() <= NAME_MAX, "{}", kept.len());
    // The same value: nothing new.
    let p = w.at(610).step();
    assert_eq!((p.events, p.apply), (vec![], None));
    // Fails again, is rolled back; a value differing only in its last byte retries again.
    w.policy.cooldown = Duration::ZERO;
    w.at(620).pods_come_up(PodState::CrashLoop(3)).step();
    w.complete_rollback(630);
    assert_eq!(w.at(700).step().apply, None, "the first value is used up");
    let p = w.annotate(labels::RETRY, &long('2')).at(800).step();
    assert!(p.apply.is_some(), "a new value retries: {:#?}", p.events);

    // A rollback-to value that long names no version: refused once, quoted bounded.
    let mut w = healthy_v1();
    let p = w.annotate(labels::ROLLBACK_TO, &long('x')).at(100).step();
    let c = condition(&p.status, conditions::MANUAL_ROLLBACK);
    assert_eq!(c.reason, reasons::UNKNOWN_VERSION);
    assert!(c.message.len() <= crate::decide::text::MESSAGE_MAX);
    assert_eq!(
        w.at(200).step().events,
        vec![],
        "refused once, not on every pass"
    );
}

/// Revision numbers come from status, which someone else can write: the next number is
/// computed without overflow, and the largest one there is stalls instead of wrapping.
#[test]
fn revision_numbers_never_overflow() {
    let mut w = World::new(
        release("2.0.0").build(),
        deployment().image("api", &pinned(1)).serving().build(),
    );
    w.release.status = Some(ReleaseStatus {
        revision: Some(i64::MAX),
        version: Some("1.0.0".into()),
        history: vec![Revision {
            revision: i64::MAX,
            deployed_at: Some(Time(t(0))),
            ..rev(1, "1.0.0", Outcome::Healthy, Some(0), Some(1))
        }],
        ..Default::default()
    });
    let p = w.at(100).step();
    assert_eq!(p.apply, None);
    assert_eq!(
        cond(&p.status, conditions::STALLED),
        is("True", reasons::REVISIONS_EXHAUSTED)
    );
}

// ---- request ids ------------------------------------------------------------------------

/// `status.handled.requestId`: what a client that set `rewind.dev/request-id` waits for.
fn handled_id(s: &ReleaseStatus) -> Option<&str> {
    s.handled.as_ref().and_then(|h| h.request_id.as_deref())
}

/// `status.handled.rollbackTo`.
fn handled_value(s: &ReleaseStatus) -> Option<&str> {
    s.handled.as_ref().and_then(|h| h.rollback_to.as_deref())
}

#[test]
fn a_new_request_id_makes_the_same_version_a_new_request() {
    let mut w = healthy_v1();
    w.deploy_healthy("2.0.0", 100);
    let p = w
        .annotate(labels::ROLLBACK_TO, "1.0.0")
        .annotate(labels::REQUEST_ID, "a")
        .at(200)
        .step();
    let first = rollback(&p.status).clone();
    assert_eq!((first.from.revision, first.to.revision), (2, 1));
    // The rollback names the request that started it (a client follows only its own).
    assert_eq!(first.request_id.as_deref(), Some("a"));
    assert_eq!(
        (handled_id(&p.status), handled_value(&p.status)),
        (Some("a"), Some("1.0.0"))
    );
    assert_eq!(
        cond(&p.status, conditions::MANUAL_ROLLBACK),
        is("True", reasons::ACCEPTED)
    );
    w.complete_rollback(210);
    // The same id again: the same request, acted on once.
    for now in [300, 400] {
        let p = w.at(now).step();
        assert_eq!(
            (p.apply, p.events, p.finished),
            (None, vec![], None),
            "at {now}"
        );
    }
    // Rolled forward to 2.0.0 (revision 3), the request left in place: still nothing.
    w.annotate(labels::RETRY, "1").at(500).step();
    w.at(520).roll_out().step();
    w.at(540).roll_out().step();
    assert_eq!(
        (w.status().revision, w.status().phase),
        (Some(3), Some(Phase::Healthy))
    );
    // Asked again for the same version under a new id: a second rollback.
    let p = w.annotate(labels::REQUEST_ID, "b").at(600).step();
    let second = rollback(&p.status).clone();
    assert_eq!(
        (second.from.revision, second.to.revision, second.trigger),
        (3, 1, Trigger::Manual)
    );
    assert_ne!(second.id, first.id);
    assert_eq!(second.request_id.as_deref(), Some("b"));
    assert_eq!(reasons(&p), [reasons::ROLLBACK_STARTED]);
    assert_eq!(handled_id(&p.status), Some("b"));
    let p = w.complete_rollback(610);
    assert_eq!(
        p.status
            .rollbacks
            .iter()
            .map(|r| r.id.as_str())
            .collect::<Vec<_>>(),
        [second.id.as_str(), first.id.as_str()]
    );
    assert_settled(&mut w, 700);
    // Removing the request clears both.
    let p = w.remove_annotation(labels::ROLLBACK_TO).at(800).step();
    assert_eq!(
        (handled_id(&p.status), handled_value(&p.status)),
        (None, None)
    );
    assert_eq!((p.apply, p.events), (None, vec![]));
}

/// Whatever the answer, the request id is recorded in the same status as the ManualRollback
/// condition that answers it (a client reads both once it sees its id).
#[test]
fn every_answer_records_the_request_id_with_the_condition() {
    // (value, Ok(target revision) or Err(reason))
    let cases: [(&str, Result<i64, &str>); 6] = [
        ("9.9.9", Err(reasons::UNKNOWN_VERSION)),
        ("3.0.0", Err(reasons::TARGET_NOT_HEALTHY)),
        ("2.0.0", Err(reasons::DIGESTS_UNKNOWN)),
        ("4.0.0", Err(reasons::ALREADY_RUNNING)),
        ("previous", Ok(1)),
        ("1.0.0", Ok(1)),
    ];
    for (value, want) in cases {
        let mut w = world_with_history();
        let p = w
            .annotate(labels::ROLLBACK_TO, value)
            .annotate(labels::REQUEST_ID, "req-1")
            .at(5100)
            .step();
        assert_eq!(handled_id(&p.status), Some("req-1"), "{value}");
        let (status, reason) = match want {
            Ok(_) => ("True", reasons::ACCEPTED),
            Err(why) => ("False", why),
        };
        assert_eq!(
            cond(&p.status, conditions::MANUAL_ROLLBACK),
            is(status, reason),
            "{value}"
        );
        match want {
            Ok(target) => assert_eq!(rollback(&p.status).to.revision, target, "{value}"),
            Err(why) => {
                assert_eq!(p.apply, None, "{value}");
                assert_eq!(reasons(&p), [why], "{value}");
                // Asked again under the same id: answered already, nothing new.
                assert_settled(&mut w, 5200);
                // Under a new id: a new request, answered again (with an Event).
                let p = w.annotate(labels::REQUEST_ID, "req-2").at(5300).step();
                assert_eq!(handled_id(&p.status), Some("req-2"), "{value}");
                assert_eq!(reasons(&p), [why], "{value}: answered again");
                assert_eq!(
                    cond(&p.status, conditions::MANUAL_ROLLBACK),
                    is("False", why),
                    "{value}"
                );
                assert_settled(&mut w, 5400);
            }
        }
    }
}

/// Without `rewind.dev/request-id`, a request is what it always was: one per value. An id
/// set later on the same value is a new request; removing it again is not.
#[test]
fn a_request_without_an_id_acts_once_per_value() {
    let mut w = world_with_history();
    let p = w.annotate(labels::ROLLBACK_TO, "9.9.9").at(5100).step();
    assert_eq!(
        (handled_id(&p.status), reasons(&p)),
        (None, vec![reasons::UNKNOWN_VERSION])
    );
    assert_settled(&mut w, 5200);
    let p = w.annotate(labels::REQUEST_ID, "x").at(5300).step();
    assert_eq!(
        (handled_id(&p.status), reasons(&p)),
        (Some("x"), vec![reasons::UNKNOWN_VERSION])
    );
    let p = w.remove_annotation(labels::REQUEST_ID).at(5400).step();
    assert_eq!(
        (handled_id(&p.status), p.events),
        (Some("x"), vec![]),
        "the value was answered already; no id is no new request"
    );
    // An empty id is no id.
    let p = w.annotate(labels::REQUEST_ID, "").at(5500).step();
    assert_eq!(p.events, vec![]);
}

/// Ids are anyone's text too: kept bounded, and two long ids that differ only at their end
/// are two requests.
#[test]
fn huge_request_ids_are_kept_bounded_and_still_distinct() {
    use crate::decide::text::NAME_MAX;
    let long = |c: char| format!("{}{c}", "i".repeat(100_000));
    let mut w = world_with_history();
    let p = w
        .annotate(labels::ROLLBACK_TO, "9.9.9")
        .annotate(labels::REQUEST_ID, &long('1'))
        .at(5100)
        .step();
    let kept = handled_id(&p.status).unwrap().to_owned();
    assert!(kept.len() <= NAME_MAX, "{}", kept.len());
    assert_settled(&mut w, 5200);
    let p = w.annotate(labels::REQUEST_ID, &long('2')).at(5300).step();
    assert_eq!(reasons(&p), [reasons::UNKNOWN_VERSION]);
    assert_ne!(handled_id(&p.status).unwrap(), kept);
}

// ---- the reason a person gives ----------------------------------------------------------

#[test]
fn the_reason_given_is_kept_on_the_rollback_and_its_record() {
    let mut w = healthy_v1();
    w.deploy_healthy("2.0.0", 100);
    let p = w
        .annotate(labels::ROLLBACK_TO, "1.0.0")
        .annotate(labels::REQUESTED_BY, "alice")
        .annotate(labels::REQUEST_ID, "a")
        .annotate(labels::REASON, "  INC-42: checkout errors since 2.0.0 \n")
        .at(200)
        .step();
    let want = "alice asked for 1.0.0 (annotation rewind.dev/rollback-to on the Release): INC-42: checkout errors since 2.0.0";
    let rb = rollback(&p.status).clone();
    assert_eq!(
        rb.request_reason.as_deref(),
        Some("INC-42: checkout errors since 2.0.0")
    );
    assert_eq!(rb.message, want);
    assert_eq!(
        condition(&p.status, conditions::MANUAL_ROLLBACK).message,
        want
    );
    assert_eq!(
        entry(&p.status, 2)
            .failure
            .as_ref()
            .map(|f| f.message.as_str()),
        Some(want)
    );
    assert!(
        p.events[0].message.contains("INC-42: checkout errors"),
        "{}",
        p.events[0].message
    );
    let p = w.complete_rollback(210);
    let finished = p.finished.expect("the finished rollback, for the log line");
    assert_eq!(finished.request_reason, rb.request_reason);
    assert_eq!(
        p.status.rollbacks[0].request_reason, rb.request_reason,
        "kept in the record of finished rollbacks"
    );
    assert_eq!(p.status.rollbacks[0].message, want);
}

#[test]
fn reasons_are_bounded_and_only_the_releases_requests_have_one() {
    use crate::decide::text::{DETAIL_MAX, MARKER, MESSAGE_MAX};
    // (reason annotation, request on the Deployment rather than the Release, kept reason)
    let huge = "why ".repeat(64 * 1024);
    let cases: [(&str, bool, Option<&str>); 5] = [
        ("rolled back by hand", false, Some("rolled back by hand")),
        ("", false, None),
        (" \t\n", false, None),
        ("rolled back by hand", true, None),
        (&huge, false, Some("")),
    ];
    for (reason, on_deployment, want) in cases {
        let mut w = healthy_v1();
        w.deploy_healthy("2.0.0", 100);
        w.annotate(labels::REASON, reason);
        if on_deployment {
            w.workload_mut().rollback_to = Some("1.0.0".into());
        } else {
            w.annotate(labels::ROLLBACK_TO, "1.0.0");
        }
        let p = w.at(200).step();
        let rb = rollback(&p.status);
        let shown = reason.chars().take(20).collect::<String>();
        match want {
            Some("") => {
                let kept = rb.request_reason.as_deref().unwrap();
                assert!(kept.len() <= DETAIL_MAX && kept.ends_with(MARKER), "{kept}");
                assert!(rb.message.len() <= MESSAGE_MAX && rb.message.contains(kept));
            }
            _ => assert_eq!(rb.request_reason.as_deref(), want, "{shown:?}"),
        }
        if want.is_none() {
            assert!(
                rb.message.ends_with(')'),
                "{shown:?}: nothing appended: {}",
                rb.message
            );
        }
    }
}

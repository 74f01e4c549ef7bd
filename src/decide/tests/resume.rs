//! Resuming after a restart, and deciding when the cluster could not be seen: blind spans and
//! verdicts that ask to be confirmed.

use super::*;

// ---- resuming after a restart ------------------------------------------------------------

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
    assert_eq!(reasons(&p), [reasons::IMAGES_RESTORED]);
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

#[test]
fn a_rollback_in_flight_ends_when_its_deployment_is_created_again() {
    let mut w = healthy_v1();
    w.set_version("2.0.0").at(100).step();
    w.at(110).pods_come_up(PodState::NotReady).step();
    let p = w.at(400).step();
    assert_eq!(rollback(&p.status).phase, RollbackPhase::RestoringImages);
    w.workload = Some(deployment().image("api", &tag("0.9.0")).serving().build());
    w.workload_mut().uid = "another-uid".into();
    w.pods = Vec::new();
    let p = w.at(410).step();
    let rb = p.finished.clone().expect("the rollback is ended");
    assert_eq!(rb.phase, RollbackPhase::Failed);
    assert!(rb.message.contains("created again"), "{}", rb.message);
    assert_eq!(
        p.status.rollbacks[0].id, rb.id,
        "recorded in the audit list"
    );
    assert!(
        p.apply
            .as_ref()
            .is_none_or(|t| t.containers[0].image != pinned(1)),
        "the old target's digest is never written to the new Deployment: {:?}",
        p.apply
    );
}

// ---- blind spans and confirmation -----------------------------------------------------------

#[test]
fn a_deadline_does_not_count_the_time_nobody_could_see_the_cluster() {
    let mut w = healthy_v1();
    w.set_version("2.0.0").at(100).step();
    w.at(110).pods_come_up(PodState::NotReady).step();
    // The API server goes away at t(150); the readiness deadline (t(400)) passes meanwhile.
    w.blind = vec![Blind {
        from: t(150),
        to: None,
    }];
    let p = w.at(450).step();
    assert_eq!(p.status.rollback, None, "no verdict while blind");
    assert_eq!(p.status.phase, Some(Phase::Progressing));
    // Back at t(350): 200 s were blind, and as long again for the cluster to recover, so the
    // deadline is t(800).
    w.blind[0].to = Some(t(350));
    let p = w.at(500).step();
    assert_eq!(p.status.rollback, None);
    assert_eq!(p.recheck, Some(t(800)));
    let p = w.at(800).step();
    assert_eq!(rollback(&p.status).trigger, Trigger::Readiness);
    assert_eq!(rollback(&p.status).detected_at.0, t(800));
}

#[test]
fn plans_that_declare_a_failure_ask_to_be_confirmed() {
    let mut w = healthy_v1();
    let p = w.set_version("2.0.0").at(100).step();
    assert!(!p.confirm, "deploying needs no confirmation");
    let p = w.at(110).pods_come_up(PodState::NotReady).step();
    assert!(!p.confirm, "waiting needs none");
    let p = w.at(400).step();
    assert!(
        p.confirm,
        "a readiness timeout starts a rollback: confirm it"
    );
    let p = w.at(410).step();
    assert!(!p.confirm, "restoring images is no verdict");
    // The target never becomes available: the rollback fails at its deadline.
    w.at(420).pods_come_up(PodState::NotReady).step();
    let p = w.at(800).step();
    assert_eq!(rollback(&p.status).phase, RollbackPhase::Failed);
    assert!(p.confirm, "a failed rollback is confirmed first");
}

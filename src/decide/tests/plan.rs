//! What the planner does first: settling, and what Rewind cannot act on.

use super::*;

#[test]
fn settled_healthy_release_replans_to_the_same_status_without_apply_or_events() {
    let mut w = World::new(release("1.0.0").build(), deployment().build());
    w.at(0).step();
    let p = w.at(20).roll_out().step();
    assert_eq!(
        reasons(&p),
        [reasons::DIGEST_RECORDED, reasons::HEALTHY, reasons::PINNED]
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

// ---- what Rewind cannot act on -----------------------------------------------------------

#[test]
fn missing_target_stalls_with_one_event() {
    let mut w = World::new(release("1.0.0").build(), deployment().build());
    w.workload = None;
    let p = w.step();
    assert_eq!(p.status.phase, Some(Phase::Failed));
    assert_eq!(
        cond(&p.status, conditions::STALLED),
        is("True", reasons::TARGET_NOT_FOUND)
    );
    assert_eq!(
        cond(&p.status, conditions::READY),
        is("False", reasons::TARGET_NOT_FOUND)
    );
    assert!(
        condition(&p.status, conditions::STALLED)
            .message
            .contains("Deployment shop-api not found in namespace shop")
    );
    assert_eq!(reasons(&p), [reasons::TARGET_NOT_FOUND]);
    assert!(p.events[0].is_warning());
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
        is("True", reasons::CONTAINER_NOT_FOUND)
    );
    let msg = &condition(&p.status, conditions::STALLED).message;
    assert!(
        msg.contains("has no container named worker; it has: api, sidecar"),
        "{msg}"
    );
    assert_eq!(reasons(&p), [reasons::CONTAINER_NOT_FOUND]);
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
        is("Unknown", reasons::PAUSED)
    );
    assert_eq!(cond(&p.status, conditions::STALLED).0, "False");
    assert_eq!(reasons(&p), [reasons::PAUSED]);
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
    let p = w.at(200).step();
    assert_eq!((p.apply, p.status.phase), (None, Some(Phase::Paused)));
    assert_eq!(
        rollback(&p.status).phase,
        RollbackPhase::RestoringImages,
        "kept for later"
    );
    w.release.spec.paused = false;
    let p = w.at(300).plan();
    assert_eq!(p.apply, Some(template(1, "1.0.0", pinned(1))));
    assert_eq!(
        (p.status.phase, cond(&p.status, conditions::READY)),
        (Some(Phase::RollingBack), is("False", reasons::ROLLING_BACK)),
        "no longer said to be paused"
    );
}

#[test]
fn policy_error_stalls_without_touching_the_deployment() {
    let mut w = World::new(release("1.0.0").build(), deployment().build());
    w.policy_error = Some(PolicyError::Ambiguous(vec![
        "standard".into(),
        "strict".into(),
    ]));
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
        is("True", reasons::TARGET_CLAIMED)
    );
    assert!(
        condition(&p.status, conditions::READY)
            .message
            .contains("shop-api-old")
    );
    assert_eq!(reasons(&p), [reasons::TARGET_CLAIMED]);
    assert_settled(&mut w, 10);
}

#[test]
fn a_release_first_seen_reads_as_reconciling_not_current() {
    let r = release("1.0.0").generation(3).build();
    let s = super::super::initial_status(&r, t(0));
    assert_eq!(s.observed_generation, Some(3));
    assert_eq!(s.phase, Some(Phase::Progressing));
    assert_eq!(cond(&s, "Reconciling"), is("True", reasons::PROGRESSING));
    assert_eq!(cond(&s, "Ready"), is("False", reasons::PROGRESSING));
    assert_eq!(cond(&s, "Stalled"), is("False", reasons::PROGRESSING));
    // The first plan made from it carries on as from nothing.
    let mut w = World::new(r, deployment().build());
    w.release.status = Some(s);
    let p = w.at(1).step();
    assert_eq!(p.apply.map(|t| t.revision), Some(1));
}

/// `rewind.dev/paused` pauses as `spec.paused` does (the CLI pauses without editing a spec
/// GitOps owns); its value, who and why, is in the Ready condition and the Event. Empty or
/// `false` does not pause.
#[test]
fn the_paused_annotation_pauses_like_spec_paused() {
    // (value, pauses)
    let cases = [
        ("alice: investigating INC-42", true),
        ("true", true),
        ("false", false),
        ("False", false),
        ("", false),
        (" ", false),
    ];
    for (value, pauses) in cases {
        let mut w = healthy_v1();
        w.set_version("2.0.0").annotate(labels::PAUSED, value);
        let p = w.at(100).step();
        if !pauses {
            assert_eq!(
                p.apply,
                Some(template(2, "2.0.0", tag("2.0.0"))),
                "{value:?} does not pause"
            );
            continue;
        }
        assert_eq!(
            (p.apply.clone(), p.status.phase),
            (None, Some(Phase::Paused)),
            "{value:?}"
        );
        assert_eq!(
            cond(&p.status, conditions::READY),
            is("Unknown", reasons::PAUSED)
        );
        let want = format!(
            "annotation rewind.dev/paused is set ({value}): Rewind neither deploys nor rolls back"
        );
        assert_eq!(condition(&p.status, conditions::READY).message, want);
        assert_eq!(reasons(&p), [reasons::PAUSED]);
        assert_eq!(p.events[0].message, want);
        assert_settled(&mut w, 200);
        // Someone else takes over the pause: said again.
        let p = w.annotate(labels::PAUSED, "bob: INC-43").at(300).step();
        assert_eq!(reasons(&p), [reasons::PAUSED], "{value:?}");
        assert!(p.events[0].message.contains("(bob: INC-43)"));
        // With spec.paused as well, both are named; removing the annotation leaves spec's.
        w.release.spec.paused = true;
        let p = w.at(400).step();
        assert!(
            condition(&p.status, conditions::READY)
                .message
                .starts_with("spec.paused is set and annotation rewind.dev/paused is set"),
            "{value:?}"
        );
        let p = w.remove_annotation(labels::PAUSED).at(500).step();
        assert_eq!((p.apply, p.status.phase), (None, Some(Phase::Paused)));
        w.release.spec.paused = false;
        let p = w.at(600).step();
        assert_eq!(
            p.apply,
            Some(template(2, "2.0.0", tag("2.0.0"))),
            "{value:?}: resumed"
        );
    }
}

#[test]
fn the_paused_annotation_holds_a_rollback_in_flight_until_removed() {
    let mut w = healthy_v1();
    w.deploy_crashing("2.0.0", 100);
    // The patch back to v1 did not land before the pause.
    w.workload_mut().template_revision = Some(2);
    w.workload_mut().images.get_mut("api").unwrap().image = tag("2.0.0");
    w.annotate(labels::PAUSED, "alice: looking at the crash first");
    let p = w.at(200).step();
    assert_eq!((p.apply, p.status.phase), (None, Some(Phase::Paused)));
    assert_eq!(
        rollback(&p.status).phase,
        RollbackPhase::RestoringImages,
        "kept for later"
    );
    assert_settled(&mut w, 250);
    w.remove_annotation(labels::PAUSED);
    let p = w.at(300).step();
    assert_eq!(p.apply, Some(template(1, "1.0.0", pinned(1))), "goes on");
    assert_eq!(p.status.phase, Some(Phase::RollingBack));
}

/// A paused Release takes no request either: a rollback asked for while paused is answered
/// once the pause is lifted.
#[test]
fn a_request_waits_while_the_annotation_pauses() {
    let mut w = healthy_v1();
    w.deploy_healthy("2.0.0", 100);
    w.annotate(labels::PAUSED, "alice");
    w.annotate(labels::ROLLBACK_TO, "1.0.0")
        .annotate(labels::REQUEST_ID, "a");
    let p = w.at(200).step();
    assert_eq!((p.apply, p.status.handled), (None, None));
    w.remove_annotation(labels::PAUSED);
    let p = w.at(300).step();
    assert_eq!(p.apply, Some(template(1, "1.0.0", pinned(1))));
    assert_eq!(
        p.status.handled.and_then(|h| h.request_id),
        Some("a".into())
    );
}

/// A Release paused by annotation before Rewind first saw it is not adopted (no pods listed
/// for adoption), as with `spec.paused`.
#[test]
fn a_release_paused_by_annotation_is_not_adopted() {
    let r = release("1.0.0").annotation(labels::PAUSED, "alice").build();
    assert!(!crate::decide::adopting(&r, None));
    let r = release("1.0.0").annotation(labels::PAUSED, "false").build();
    assert!(crate::decide::adopting(&r, None));
    let p = World::new(
        release("1.0.0").annotation(labels::PAUSED, "alice").build(),
        deployment().build(),
    )
    .plan();
    assert_eq!((p.status.phase, p.apply), (Some(Phase::Paused), None));
}

/// Found by the fuzz test: the first plan after a pause may be one that sets no phase
/// (putting back an image another manager changed); it must not leave the Release Paused.
#[test]
fn a_lifted_pause_is_never_still_said() {
    let mut w = healthy_v1();
    w.annotate(labels::PAUSED, "alice").at(100).step();
    let d = w.workload_mut();
    d.images.get_mut("api").unwrap().image = tag("2.0.0");
    d.image_managers
        .insert("api".into(), vec!["argocd-controller".into()]);
    d.generation += 1;
    let p = w.remove_annotation(labels::PAUSED).at(200).step();
    assert_eq!(reasons(&p), [reasons::IMAGE_OVERRIDDEN]);
    assert_eq!(
        (p.status.phase, cond(&p.status, conditions::READY)),
        (Some(Phase::Progressing), is("False", reasons::PROGRESSING))
    );
    let p = w.at(220).roll_out().step();
    assert_eq!(p.status.phase, Some(Phase::Healthy));
}

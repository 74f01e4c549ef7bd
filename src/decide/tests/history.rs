//! The history cap and choosing a rollback target.

use super::*;

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
        "the cap keeps the newest revisions, not an old rollback's failed revision"
    );
    let p = w.at(410).pods_come_up(PodState::CrashLoop(3)).step();
    assert_eq!(
        rollback(&p.status).to.version,
        "4.0.0",
        "a rollback goes back to the newest healthy revision, not one three releases old"
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
        "the last healthy revision is kept: {:?}",
        revisions(w.status())
    );
    let p = w.at(160).pods_come_up(PodState::CrashLoop(3)).step();
    assert_eq!(
        p.status.rollback.as_ref().map(|r| r.to.revision),
        Some(1),
        "the kept healthy revision is the rollback target (not Degraded NoRollbackTarget)"
    );
}

/// Many large images in many revisions: the history stays within its byte budget, keeping the
/// live revision and the rollback target, whatever historyLimit allows.
#[test]
fn history_is_capped_by_size_too() {
    let mut w = healthy_v1();
    w.policy.history_limit = 50;
    let containers: Vec<String> = (0..32).map(|i| format!("c{i}")).collect();
    for c in &containers {
        w.workload_mut().images.insert(
            c.clone(),
            ContainerSlot {
                image: String::new(),
                init: false,
            },
        );
    }
    for i in 2..40u32 {
        let v = format!("{i}.0.0");
        let long: Vec<(String, String)> = containers
            .iter()
            .map(|c| (c.clone(), format!("{REPO}/{}:{v}", "x".repeat(450))))
            .collect();
        let images: Vec<(&str, &str)> =
            long.iter().map(|(c, i)| (c.as_str(), i.as_str())).collect();
        w.release.spec = release(&v).images(&images).build().spec;
        *w.release.metadata.generation.get_or_insert(0) += 1;
        let at = 100 * i64::from(i);
        w.at(at).step();
        w.at(at + 20).roll_out().step();
    }
    let s = w.status();
    let bytes = serde_json::to_vec(&s.history).unwrap().len();
    assert!(
        bytes <= crate::decide::history::HISTORY_BUDGET,
        "{bytes} bytes"
    );
    assert!(
        (10..38).contains(&s.history.len()),
        "{} revisions",
        s.history.len()
    );
    assert_eq!(s.phase, Some(Phase::Healthy));
    let live = s.revision.unwrap();
    assert!(revisions(s).contains(&live));
}

#[test]
fn history_limit_holds_when_no_schema_changes() {
    // Seven versions, each replaced before it became healthy: without migrations nothing on
    // the way back needs keeping beyond the limit.
    let mut w = healthy_v1();
    w.policy.history_limit = 3;
    for (i, v) in ["2.0.0", "3.0.0", "4.0.0", "5.0.0", "6.0.0"]
        .iter()
        .enumerate()
    {
        w.set_version(v).at(100 + 10 * i as i64).step();
    }
    assert!(w.status().history.len() <= 3, "{:?}", revisions(w.status()));
}

//! Digests from the registry: asked for by the planner (`Plan::lookups`), pinned before the
//! rollout, and what happens when the registry cannot answer.

use super::*;

// ---- digests from the registry, asked for by the planner ---------------------------------

#[test]
fn a_resolved_tag_is_pinned_before_the_rollout() {
    let mut w = world_with_registry();
    let p = w.set_version("2.0.0").at(100).step();
    let t = p.apply.clone().expect("revision 2 applied");
    assert_eq!(
        t.containers[0].image,
        pinned(2),
        "applied by digest, before any pod exists"
    );
    let e = entry(&p.status, 2);
    assert_eq!(e.images[0].digest, Some(d(2)));
    assert_eq!(e.images[0].resolved_from, Some(DigestSource::Registry));
    assert_eq!(
        cond(&p.status, conditions::PINNED),
        is("True", reasons::RESOLVED)
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
        p.apply.clone().expect("deployed anyway").containers[0].image,
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
        is("True", reasons::FROM_POD_STATUS)
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
        is("True", reasons::UNPINNED)
    );
    assert_eq!(
        cond(&p.status, conditions::PINNED),
        is("False", "RegistryUnauthorized")
    );
    assert_eq!(p.recheck, Some(t(130)));
    assert_eq!(reasons(&p), [reasons::UNPINNED]);
    // Still refused a plan later: no new Event, the same status.
    let again = w.at(130).step();
    assert_eq!(again.events, []);
    assert_eq!(again.apply, None);
    // The registry answers: deployed pinned.
    w.resolved.insert(tag("2.0.0"), Ok(d(2)));
    let p = w.at(160).step();
    assert_eq!(p.apply.expect("deployed").containers[0].image, pinned(2));
    assert_eq!(
        cond(&p.status, conditions::STALLED),
        is("False", reasons::PROGRESSING)
    );
}

#[test]
fn a_recorded_digest_wins_over_a_moved_tag() {
    let mut w = world_with_registry();
    w.deploy_healthy("2.0.0", 100);
    // The tag 1.0.0 now points elsewhere; going back to 1.0.0 must not follow it.
    w.resolved.insert(tag("1.0.0"), Ok(d(77)));
    let p = w.set_version("1.0.0").at(300).step();
    assert_eq!(p.apply.expect("revision 3").containers[0].image, pinned(1));
}

/// What the first pass of a plan asks the registry about.
fn lookups(w: &World) -> Vec<String> {
    w.plan_with(&BTreeMap::new()).lookups
}

#[test]
fn only_what_will_deploy_is_looked_up() {
    let w = healthy_v1();
    assert_eq!(lookups(&w), Vec::<String>::new(), "spec runs already");
    let mut w2 = healthy_v1();
    w2.set_version("2.0.0");
    assert_eq!(lookups(&w2), [tag("2.0.0")]);
    // A version recorded in history, a digest reference, a paused or blocked release: no lookup.
    let mut back = healthy_v1();
    back.deploy_healthy("2.0.0", 100).set_version("1.0.0");
    assert_eq!(lookups(&back), Vec::<String>::new());
    let mut by_digest = healthy_v1();
    by_digest.release.spec.images[0].image = pinned(9);
    *by_digest.release.metadata.generation.get_or_insert(0) += 1;
    assert_eq!(lookups(&by_digest), Vec::<String>::new());
    let mut paused = healthy_v1();
    paused.set_version("2.0.0").release.spec.paused = true;
    assert_eq!(lookups(&paused), Vec::<String>::new());
    let mut blocked = rolled_back_v2();
    assert_eq!(lookups(&blocked), Vec::<String>::new());
    // A retry asked for in this plan unblocks it: what would deploy is looked up (here the
    // recorded digest of 2.0.0 is reused, so only a tag never recorded would be).
    blocked.release.spec.images[0].image = tag("2.0.1-rebuilt");
    blocked.annotate(labels::RETRY, "1");
    assert_eq!(lookups(&blocked), [tag("2.0.1-rebuilt")]);
}

/// The drift that a separate "what to look up" function once had: a retry that unblocks a
/// version in the same plan deploys it, so its new tag must be looked up and pinned in that
/// plan, not deployed unpinned.
#[test]
fn a_retry_that_unblocks_a_rebuilt_tag_deploys_it_pinned_from_the_registry() {
    let mut w = rolled_back_v2();
    w.resolved.insert(tag("2.0.1-rebuilt"), Ok(d(21)));
    w.release.spec.images[0].image = tag("2.0.1-rebuilt");
    w.annotate(labels::RETRY, "1");
    let p = w.at(500).step();
    let applied = p.apply.expect("the retried version is deployed");
    assert_eq!(applied.containers[0].image, format!("{REPO}@{}", d(21)));
    let e = entry(&p.status, p.status.revision.expect("a live revision"));
    assert_eq!(e.images[0].resolved_from, Some(DigestSource::Registry));
    assert_eq!(
        cond(&p.status, conditions::PINNED),
        is("True", reasons::RESOLVED)
    );
}

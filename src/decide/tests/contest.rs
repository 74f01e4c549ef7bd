//! Another field manager changing an image Rewind owns: put back once with an Event naming
//! the manager, stop at the limit, and only a new spec or a retry lets Rewind write again.

use super::*;

impl World {
    /// `manager` sets the api container's image to `image` (the Deployment's generation moves
    /// on and managedFields name it as the image's owner).
    fn override_image(&mut self, manager: &str, image: &str) -> &mut Self {
        let w = self.workload_mut();
        w.images.insert(
            "api".into(),
            ContainerSlot {
                image: image.into(),
                init: false,
            },
        );
        w.image_managers
            .insert("api".into(), vec![manager.to_owned()]);
        w.generation += 1;
        self
    }

    /// What Rewind's apply does to managedFields: it owns the image again.
    fn rewind_owns_the_image(&mut self) -> &mut Self {
        self.workload_mut()
            .image_managers
            .insert("api".into(), vec![labels::MANAGER.to_owned()]);
        self
    }
}

fn contest_count(w: &World) -> Option<(u32, bool)> {
    w.status().contested.as_ref().map(|c| (c.count, c.stopped))
}

#[test]
fn an_override_is_put_back_once_naming_the_manager_and_the_next_one_stops_rewind() {
    let mut w = healthy_v1();
    w.override_image("argocd-controller", &tag("2.0.0"));
    let p = w.at(100).step();
    assert_eq!(
        p.apply.as_ref().map(|t| t.containers[0].image.clone()),
        Some(pinned(1))
    );
    let note = p
        .events
        .iter()
        .find(|n| n.reason == reasons::IMAGE_OVERRIDDEN)
        .expect("an ImageOverridden Event");
    assert!(note.is_warning());
    assert!(
        note.message.contains("argocd-controller") && note.message.contains(&tag("2.0.0")),
        "{}",
        note.message
    );
    assert_eq!(contest_count(&w), Some((1, false)));
    w.rewind_owns_the_image();

    // The cache shows the override once more (not caught up): put back, not counted again.
    let p = w.at(101).plan();
    assert_eq!(p.status.contested.as_ref().map(|c| c.count), Some(1));

    // The tool self-heals: the same manager again within the window.
    w.override_image("argocd-controller", &tag("2.0.0"));
    let p = w.at(160).step();
    assert_eq!(p.apply, None, "no more writes");
    assert_eq!(
        cond(&p.status, "Stalled"),
        is("True", reasons::IMAGE_FIELD_CONTESTED)
    );
    assert_eq!(p.status.phase, Some(Phase::Failed));
    assert!(reasons(&p).contains(&reasons::IMAGE_FIELD_CONTESTED));
    assert_eq!(contest_count(&w), Some((2, true)));
    // And stays so, whatever the Deployment does.
    assert_settled(&mut w, 200);
    w.override_image("argocd-controller", &tag("3.0.0"));
    let p = w.at(300).step();
    assert_eq!((p.apply, p.events.len()), (None, 0));

    // A retry lets Rewind write again (and is used up: nothing is unblocked by it).
    w.annotate(labels::RETRY, "1");
    let p = w.at(400).step();
    assert_eq!(
        p.status.contested.as_ref().map(|c| (c.count, c.stopped)),
        Some((1, false)),
        "counted afresh"
    );
    assert!(p.apply.is_some(), "put back");
}

#[test]
fn a_new_spec_ends_the_standoff() {
    let mut w = healthy_v1();
    w.policy.contested_limit = 1;
    w.override_image("kubectl-edit", &tag("9.9.9"));
    let p = w.at(100).step();
    assert_eq!(p.apply, None, "limit 1: the first override stops Rewind");
    assert_eq!(contest_count(&w), Some((1, true)));
    w.set_version("2.0.0");
    let p = w.at(200).step();
    assert!(w.status().contested.is_none());
    assert_eq!(p.apply.map(|t| t.revision), Some(2));
}

#[test]
fn overrides_further_apart_than_the_window_are_counted_afresh() {
    let mut w = healthy_v1();
    w.override_image("argocd-controller", &tag("2.0.0"));
    w.at(100).step();
    w.rewind_owns_the_image();
    w.at(100 + 3601).step();
    assert!(
        w.status().contested.is_none(),
        "forgotten after the window (1h)"
    );
    w.override_image("argocd-controller", &tag("2.0.0"));
    let p = w.at(100 + 3700).step();
    assert!(p.apply.is_some());
    assert_eq!(contest_count(&w), Some((1, false)));
}

#[test]
fn rewinds_own_earlier_write_is_not_an_override() {
    // The Deployment runs the tag Rewind applied before it knew the digest: pinning it is
    // Rewind's business, no Event about anyone.
    let mut w = healthy_v1();
    let tagged = tag("1.0.0");
    w.workload_mut().images.insert(
        "api".into(),
        ContainerSlot {
            image: tagged,
            init: false,
        },
    );
    w.rewind_owns_the_image();
    let p = w.at(100).step();
    assert!(p.apply.is_some());
    assert!(!reasons(&p).contains(&reasons::IMAGE_OVERRIDDEN));
    assert!(p.status.contested.is_none());
}

#[test]
fn a_gitops_tool_rolling_a_blocked_version_out_again_is_stopped_not_fought() {
    let mut w = rolled_back_v2();
    // Argo CD syncs the manifest whose image is still 2.0.0's.
    w.override_image("argocd-controller", &tag("2.0.0"));
    let p = w.at(500).step();
    assert_eq!(
        p.apply.as_ref().map(|t| t.revision),
        Some(1),
        "put back once"
    );
    assert!(reasons(&p).contains(&reasons::IMAGE_OVERRIDDEN));
    w.rewind_owns_the_image();
    w.override_image("argocd-controller", &tag("2.0.0"));
    let p = w.at(520).step();
    assert_eq!(p.apply, None);
    assert_eq!(
        cond(&p.status, "Stalled"),
        is("True", reasons::IMAGE_FIELD_CONTESTED)
    );
    assert_eq!(
        w.status().blocked.as_ref().map(|b| b.version.as_str()),
        Some("2.0.0"),
        "still blocked"
    );
}

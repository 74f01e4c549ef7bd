//! Golden-file tests of what a person sees: each case renders a Release fixture from
//! `tests/golden/cli/*.json` at a fixed time and compares with the `.txt` beside it.
//! `UPDATE_GOLDEN=1 cargo test --lib cli::render` rewrites the files (then read the diff).

use std::path::PathBuf;

use jiff::Timestamp;

use super::*;
use crate::{
    api::Release,
    cli::model,
    decide::views::{ContainerView, PodView},
};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/cli")
}

fn fixture(name: &str) -> Release {
    let path = dir().join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} does not parse: {e}", path.display()))
}

fn now() -> Timestamp {
    "2026-11-26T10:15:00Z".parse().unwrap()
}

fn golden(name: &str, actual: &str) {
    let path = dir().join(format!("{name}.txt"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "reading {}: {e} (UPDATE_GOLDEN=1 writes it; read it before committing)",
            path.display()
        )
    });
    assert!(
        expected == actual,
        "{} differs from the output (UPDATE_GOLDEN=1 rewrites it).\n--- expected\n{expected}\n--- actual\n{actual}",
        path.display()
    );
}

fn pod(name: &str, revision: i64, ready: bool, waiting: Option<&str>) -> PodView {
    PodView {
        name: name.into(),
        revision: Some(revision),
        owner: None,
        created: now(),
        terminating: false,
        ready,
        ready_changed: None,
        containers: vec![ContainerView {
            name: "c".into(),
            digest: None,
            restarts: 0,
            waiting: waiting.map(Into::into),
        }],
    }
}

#[test]
fn list_of_releases_in_several_states() {
    let releases = ["rolled-back", "in-flight", "paused"].map(fixture);
    let list = model::List {
        items: releases.iter().map(model::list_item).collect(),
    };
    golden("list", &list_text(&list, false));
    golden("list-all-namespaces", &list_text(&list, true));
}

fn list_text(list: &model::List, all: bool) -> String {
    super::list(list, all, now(), Paint::NONE)
}

#[test]
fn colour_does_not_shift_the_columns() {
    let releases = ["rolled-back", "in-flight", "paused"].map(fixture);
    let list = model::List {
        items: releases.iter().map(model::list_item).collect(),
    };
    let coloured = super::list(&list, false, now(), Paint { on: true });
    assert!(coloured.contains("\x1b["), "colour was asked for");
    let stripped = strip_ansi(&coloured);
    assert_eq!(stripped, list_text(&list, false));
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for d in chars.by_ref() {
                if d == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn history_with_migrations_and_one_revision_in_full() {
    let h = model::history(&fixture("rolled-back"));
    golden("history", &super::history(&h, Paint::NONE));
    let entry = h
        .revisions
        .iter()
        .find(|e| e.revision.revision == 3)
        .unwrap();
    golden(
        "history-revision-3",
        &super::revision(&h, entry, Paint::NONE),
    );
}

#[test]
fn history_without_migrations_has_no_schema_column() {
    let h = model::history(&fixture("in-flight"));
    let text = super::history(&h, Paint::NONE);
    assert!(!text.contains("SCHEMA"), "{text}");
    golden("history-no-migrations", &text);
}

#[test]
fn status_of_a_manual_rollback_that_crossed_a_migration() {
    let pods = [
        pod("a", 2, true, None),
        pod("b", 2, true, None),
        pod("old", 3, false, None),
    ];
    let v = model::status(&fixture("rolled-back"), &pods);
    assert_eq!(v.pods.as_ref().map(|p| (p.ready, p.total)), Some((2, 2)));
    assert_eq!(
        v.next
            .iter()
            .map(|n| n.command.as_str())
            .collect::<Vec<_>>(),
        ["kubectl rewind retry shop-api -n shop"]
    );
    golden("status-rolled-back", &super::status(&v, now(), Paint::NONE));
}

#[test]
fn status_of_a_rollback_in_flight() {
    let pods = [
        pod("a", 5, false, Some("CrashLoopBackOff")),
        pod("b", 5, false, Some("CrashLoopBackOff")),
        pod("c", 5, true, None),
    ];
    let v = model::status(&fixture("in-flight"), &pods);
    let steps: Vec<&str> = v
        .rollback
        .as_ref()
        .unwrap()
        .timeline
        .iter()
        .map(|s| s.step.as_str())
        .collect();
    assert_eq!(steps, ["detected", "started", "images-restored"]);
    golden("status-in-flight", &super::status(&v, now(), Paint::NONE));
}

#[test]
fn status_of_a_paused_release_says_how_to_resume() {
    let v = model::status(&fixture("paused"), &[]);
    assert_eq!(
        v.paused.as_deref(),
        Some("annotation rewind.dev/paused is set (bob: INC-42 investigating)")
    );
    assert_eq!(v.next[0].command, "kubectl rewind resume search -n web");
    golden("status-paused", &super::status(&v, now(), Paint::NONE));
}

#[test]
fn status_as_json_keeps_its_field_names() {
    let pods = [pod("a", 2, true, None)];
    let v = model::status(&fixture("rolled-back"), &pods);
    let json = serde_json::to_string_pretty(&v).unwrap() + "\n";
    golden("status-rolled-back.json", &json);
}

#[test]
fn ages_read_as_kubectl_prints_them() {
    for (secs, text) in [
        (0, "0s"),
        (119, "119s"),
        (150, "2m30s"),
        (700, "11m"),
        (3 * 3600 + 120, "3h2m"),
        (9 * 3600, "9h"),
        (50 * 3600, "2d2h"),
        (10 * 86_400, "10d"),
        (800 * 86_400, "2y"),
    ] {
        assert_eq!(human(secs), text, "{secs}s");
    }
}

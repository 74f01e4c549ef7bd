//! `kubectl rewind` (the built `kubectl-rewind` binary) against the local cluster with the real
//! operator running, checked against its contract, docs/cli.md: what `list`, `history` and
//! `status` show after a rollback, `rollback` (with `--wait`, `--dry-run`, an unknown version,
//! `--timeout`, no operator to acknowledge), an unknown Release, `pause` and `resume`.
//!
//! Each test has its own namespace and (where it needs one) its own operator, so the tests run
//! beside each other and beside the rest of the suite. The binary is always given
//! `--kubeconfig` (the file `KUBECONFIG` names) and `-n <test namespace>`, and runs with
//! `KUBECONFIG` removed from its environment and `NO_COLOR=1`, so nothing depends on
//! `~/.kube` or on a terminal. Every run of the binary and every wait is bounded.
//!
//! The Release is read as JSON (a DynamicObject), not through the Rust types: the fields the
//! CLI relies on (`status.handled.requestId`, `status.rollback.requestReason`) are checked as
//! the API server holds them.

mod operator;
mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::{Api, ResourceExt, api::PostParams};
use operator::*;
use rewind::api::Release;
use serde_json::{Value, json};
use support::*;

// ------------------------------------------------------------------------ running the CLI

/// What one run of `kubectl-rewind` did.
struct Run {
    /// The arguments after the global flags, for messages.
    args: Vec<String>,
    /// Exit code (None: killed by a signal).
    code: Option<i32>,
    stdout: String,
    stderr: String,
    took: Duration,
}

impl Run {
    /// Everything about the run, for assertion messages.
    fn shown(&self) -> String {
        format!(
            "kubectl rewind {}\nexit code: {:?} after {:.1?}\n--- stdout:\n{}\n--- stderr:\n{}",
            self.args.join(" "),
            self.code,
            self.took,
            self.stdout,
            self.stderr
        )
    }

    /// Panics, showing the run, unless it exited with `code`.
    fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, Some(code), "wrong exit code\n{}", self.shown());
        self
    }

    /// stdout parsed as JSON (panics, showing the run, when it is not).
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e})\n{}", self.shown()))
    }

    /// stdout and stderr together, without ANSI escapes.
    fn text(&self) -> String {
        strip_ansi(&format!("{}\n{}", self.stdout, self.stderr))
    }
}

/// The kubeconfig file the tests use (the one file `KUBECONFIG` names), passed to the binary
/// with `--kubeconfig`. Panics with the `make cluster-up` hint when there is none.
fn kubeconfig() -> String {
    let value = std::env::var_os("KUBECONFIG")
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| {
            panic!("no Kubernetes test cluster: KUBECONFIG is not set. {CLUSTER_HINT}")
        });
    let paths: Vec<_> = std::env::split_paths(&value).collect();
    assert_eq!(
        paths.len(),
        1,
        "tests/cli.rs passes one file to --kubeconfig: set KUBECONFIG to a single file (it is {value:?})"
    );
    paths[0].to_string_lossy().into_owned()
}

/// Run `kubectl-rewind --kubeconfig <KUBECONFIG> -n <ns> <args>`; it is killed (and the test
/// fails) if it has not exited within `limit`.
async fn cli_within(ns: &str, args: &[&str], limit: Duration) -> Run {
    cli_as(&kubeconfig(), ns, args, limit).await
}

/// `cli_within` with another kubeconfig (another user).
async fn cli_as(kubeconfig: &str, ns: &str, args: &[&str], limit: Duration) -> Run {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_kubectl-rewind"));
    cmd.arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["-n", ns])
        .args(args)
        .env_remove("KUBECONFIG")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let started = Instant::now();
    let out = tokio::time::timeout(limit, cmd.output())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "kubectl rewind {} did not exit within {limit:?} (killed)",
                args.join(" ")
            )
        })
        .unwrap_or_else(|e| panic!("running kubectl-rewind: {e}"));
    Run {
        args: args.iter().map(|s| s.to_string()).collect(),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        took: started.elapsed(),
    }
}

/// `cli_within` with 30 s: far more than a command that reads a few objects needs.
async fn cli(ns: &str, args: &[&str]) -> Run {
    cli_within(ns, args, secs(30)).await
}

/// Lower case without spaces, '-' and '_': "Rolled back", "rolled-back" and "RolledBack" are
/// all "rolledback", so a table may spell a phase for people.
fn squash(s: &str) -> String {
    s.chars()
        .filter(|c| !matches!(c, ' ' | '-' | '_'))
        .flat_map(char::to_lowercase)
        .collect()
}

/// Panics unless `run`'s output contains each of `words` (compared `squash`ed).
fn assert_mentions(run: &Run, words: &[&str]) {
    let text = squash(&run.text());
    for w in words {
        assert!(
            text.contains(&squash(w)),
            "the output does not mention {w:?}\n{}",
            run.shown()
        );
    }
}

/// A version in the CLI's JSON: a plain string, or `{revision, version}`.
fn version_of(v: &Value) -> &str {
    v.as_str()
        .or_else(|| v["version"].as_str())
        .unwrap_or_else(|| panic!("not a version: {v}"))
}

/// `status.paused` of the CLI: `true` or why (a non-empty text) when paused; `false`, null or
/// absent when not.
fn is_paused(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::String(s) => !s.is_empty(),
        Value::Null => false,
        other => panic!("status.paused is neither a bool nor a text: {other}"),
    }
}

// ------------------------------------------------------------------ the Release as JSON

/// Annotations and status of a Release (JSON), for messages.
fn shown(v: &Value) -> String {
    serde_json::to_string_pretty(&json!({
        "annotations": v["metadata"]["annotations"],
        "status": v["status"],
    }))
    .unwrap_or_default()
}

fn annotation<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v["metadata"]["annotations"][key].as_str()
}

/// The history entry of `revision` in the Release's status.
fn entry(v: &Value, revision: i64) -> &Value {
    v["status"]["history"]
        .as_array()
        .and_then(|h| h.iter().find(|e| e["revision"] == revision))
        .unwrap_or_else(|| panic!("no revision {revision} in status.history:\n{}", shown(v)))
}

/// The digest of container `app` of `revision`, as the Release's status records it.
fn recorded_digest(v: &Value, revision: i64) -> String {
    entry(v, revision)["images"]
        .as_array()
        .and_then(|is| is.iter().find(|i| i["container"] == "app"))
        .and_then(|i| i["digest"].as_str())
        .unwrap_or_else(|| panic!("no digest for app in revision {revision}:\n{}", shown(v)))
        .to_owned()
}

// ---------------------------------------------------------------------------- fixtures

/// 1.0.0 Healthy, then 1.1.0 Healthy (revision 2): two versions to roll back between.
async fn healthy_v1_then_v1_1(f: &Fixture) -> Value {
    healthy_v1(f, json!({})).await;
    ship_healthy(f, "1.1.0", 2, json!({})).await
}

/// The user the API server authenticates for the test kubeconfig (a SelfSubjectReview, as
/// the CLI asks).
async fn who_am_i(f: &Fixture) -> String {
    let review: SelfSubjectReview = serde_json::from_value(json!({
        "apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"
    }))
    .unwrap();
    let answer = Api::<SelfSubjectReview>::all(f.ns.client())
        .create(&PostParams::default(), &review)
        .await
        .expect("creating a SelfSubjectReview");
    answer
        .status
        .and_then(|s| s.user_info)
        .and_then(|u| u.username)
        .expect("the SelfSubjectReview names a user")
}

/// The resourceVersions of Release shop and Deployment shop once neither changed for 2 s
/// (at most 30 s).
async fn quiet_resource_versions(f: &Fixture) -> (String, String) {
    let read = async || {
        let r = release_json(f).await["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .to_owned();
        let d = f
            .deployments
            .get("shop")
            .await
            .unwrap()
            .resource_version()
            .unwrap_or_default();
        (r, d)
    };
    let deadline = Instant::now() + secs(30);
    let mut last = read().await;
    loop {
        tokio::time::sleep(secs(2)).await;
        let now = read().await;
        if now == last {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "Release shop or Deployment shop kept changing for 30 s with no operator running"
        );
        last = now;
    }
}

/// 1.0.0 (schema 1) Healthy, then 1.1.0 (schema 2) Healthy, both with a down migration;
/// 1.1.0's migration Jobs' pods run 60 s.
///
/// Rolling 1.1.0 back to 1.0.0 crosses the schema change, and with the policy's default order
/// (BeforeRollback) the down Job must complete before the images are restored: the rollback
/// stays in MigratingDown for 60 s (the simulated kubelet's `sim.rewind.dev/job-duration`).
/// The migration images are on loopback (not resolvable): the Jobs run them by tag, which the
/// simulated kubelet does not care about. No up command: nothing runs when the versions are
/// deployed.
async fn v1_0_and_v1_1_with_a_slow_down_migration(f: &Fixture) {
    let down = json!({"command": ["/migrate", "down"]});
    let sa: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "migrator"}})).unwrap();
    f.ns.api::<ServiceAccount>()
        .create(&PostParams::default(), &sa)
        .await
        .expect("creating ServiceAccount migrator");
    let migration = |tag: &str, schema: &str, extra: Value| {
        let mut m = json!({
            "image": format!("127.0.0.1:9/shop/migrate:{tag}"),
            "schemaVersion": schema,
            "down": down,
            "serviceAccountName": "migrator",
        });
        m.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        json!({ "migration": m })
    };
    healthy_v1(f, migration("1", "1", json!({}))).await;
    ship_healthy(
        f,
        "1.1.0",
        2,
        migration(
            "2",
            "2",
            json!({"podAnnotations": {"sim.rewind.dev/job-duration": "60s"}}),
        ),
    )
    .await;
}

// ------------------------------------------------------------------------------- tests

/// 1.0.0 Healthy, then 1.1.0 crash-loops and Rewind rolls it back by itself: `list`,
/// `history` and `status` (JSON, YAML and the tables) say so, with the Release's own facts.
#[tokio::test]
async fn list_history_and_status_show_an_automatic_rollback() {
    let f = Fixture::new("cli_shows_auto_rollback").await;
    let ns = f.ns.name();
    healthy_v1(&f, json!({})).await;
    f.ship_crashlooping("1.1.0").await;
    until(&f, "1.1.0 rolled back, rollback Succeeded", secs(90), |v| {
        v["status"]["phase"] == "RolledBack" && rollback_phase(v) == "Succeeded"
    })
    .await;
    f.deployment_until("1.0.0 rolled out again", secs(60), deployment_is_rolled_out)
        .await;
    // The Release as it is now, to compare with what the CLI reads next.
    let r = release_json(&f).await;
    assert_eq!(rollback_phase(&r), "Succeeded", "{}", shown(&r));
    let rollback_id = r["status"]["rollback"]["id"].as_str().unwrap().to_owned();

    // list -o json
    let run = cli(ns, &["list", "-o", "json"]).await;
    run.expect_code(0);
    let list = run.json();
    let items = list["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items[]\n{}", run.shown()));
    assert_eq!(
        items.len(),
        1,
        "one Release in the namespace\n{}",
        run.shown()
    );
    let item = &items[0];
    for (field, want) in [
        ("namespace", json!(ns)),
        ("name", json!("shop")),
        ("target", json!("shop")),
        ("desired", json!("1.1.0")),
        ("liveVersion", json!("1.0.0")),
        ("liveRevision", json!(1)),
        ("phase", json!("RolledBack")),
        ("ready", json!("False")),
    ] {
        assert_eq!(item[field], want, "list: items[0].{field}\n{}", run.shown());
    }
    assert_eq!(
        item["reason"],
        r["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
            .map(|c| c["reason"].clone())
            .unwrap_or_default(),
        "list: reason is the Ready condition's\n{}",
        run.shown()
    );
    assert_eq!(
        item["createdAt"],
        r["metadata"]["creationTimestamp"],
        "{}",
        run.shown()
    );
    let last = &item["lastRollback"];
    assert_eq!(last["id"], json!(rollback_id), "{}", run.shown());
    assert_eq!(last["trigger"], "CrashLoop", "{}", run.shown());
    assert_eq!(last["phase"], "Succeeded", "{}", run.shown());
    assert_eq!(version_of(&last["from"]), "1.1.0", "{}", run.shown());
    assert_eq!(version_of(&last["to"]), "1.0.0", "{}", run.shown());
    assert!(
        last["detectedAt"].is_string() && last["completedAt"].is_string(),
        "lastRollback has detectedAt and completedAt\n{}",
        run.shown()
    );

    // list -o yaml: the same facts.
    let run = cli(ns, &["list", "-o", "yaml"]).await;
    run.expect_code(0);
    let yaml: Value = serde_saphyr::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("stdout is not YAML ({e})\n{}", run.shown()));
    assert_eq!(yaml["items"][0]["liveVersion"], "1.0.0", "{}", run.shown());
    assert_eq!(yaml["items"][0]["phase"], "RolledBack", "{}", run.shown());

    // history -o json: newest first, the Release's own digests.
    let run = cli(ns, &["history", "shop", "-o", "json"]).await;
    run.expect_code(0);
    let h = run.json();
    assert_eq!(h["release"], "shop", "{}", run.shown());
    assert_eq!(h["namespace"], ns, "{}", run.shown());
    assert_eq!(h["liveRevision"], 1, "{}", run.shown());
    let revisions = h["revisions"]
        .as_array()
        .unwrap_or_else(|| panic!("no revisions[]\n{}", run.shown()));
    let numbers: Vec<i64> = revisions
        .iter()
        .map(|e| e["revision"].as_i64().unwrap_or(-1))
        .collect();
    assert_eq!(
        numbers,
        [2, 1, 0],
        "revisions newest first\n{}",
        run.shown()
    );
    let (v11, v1) = (&revisions[0], &revisions[1]);
    assert_eq!(
        (&v11["version"], &v11["outcome"], &v11["live"]),
        (&json!("1.1.0"), &json!("Failed"), &json!(false)),
        "{}",
        run.shown()
    );
    assert_eq!(v11["failure"]["trigger"], "CrashLoop", "{}", run.shown());
    assert!(
        v11["failure"]["reason"]
            .as_str()
            .is_some_and(|s| !s.is_empty()),
        "revision 2 says why it failed\n{}",
        run.shown()
    );
    assert_eq!(
        (&v1["version"], &v1["outcome"], &v1["live"]),
        (&json!("1.0.0"), &json!("Healthy"), &json!(true)),
        "{}",
        run.shown()
    );
    for e in &revisions[..2] {
        let n = e["revision"].as_i64().unwrap();
        let app = e["images"]
            .as_array()
            .and_then(|is| is.iter().find(|i| i["container"] == "app"))
            .unwrap_or_else(|| panic!("revision {n}: no image of container app\n{}", run.shown()));
        assert_eq!(
            app["digest"].as_str(),
            Some(recorded_digest(&r, n).as_str()),
            "revision {n}: the digest recorded in the Release's status\n{}",
            run.shown()
        );
        assert_eq!(
            app["resolvedFrom"],
            entry(&r, n)["images"][0]["resolvedFrom"],
            "revision {n}: where the digest came from\n{}",
            run.shown()
        );
        assert!(
            e["deployedAt"].is_string(),
            "revision {n}: deployedAt\n{}",
            run.shown()
        );
    }
    assert!(v1["healthyAt"].is_string(), "{}", run.shown());
    for (i, e) in revisions.iter().enumerate() {
        let mut own = e.clone();
        own.as_object_mut().unwrap().remove("live");
        assert_eq!(
            own,
            r["status"]["history"][i],
            "history: revisions[{i}] (without live) is the Release's status.history[{i}]\n{}",
            run.shown()
        );
    }

    // history --revision 1: that one entry.
    let run = cli(ns, &["history", "shop", "--revision", "1", "-o", "json"]).await;
    run.expect_code(0);
    let one = run.json();
    assert_eq!(
        (&one["revision"], &one["version"]),
        (&json!(1), &json!("1.0.0")),
        "{}",
        run.shown()
    );

    // status -o json
    let run = cli(ns, &["status", "shop", "-o", "json"]).await;
    run.expect_code(0);
    let s = run.json();
    for (field, want) in [
        ("namespace", json!(ns)),
        ("release", json!("shop")),
        ("target", json!("shop")),
        ("desiredVersion", json!("1.1.0")),
        ("liveVersion", json!("1.0.0")),
        ("liveRevision", json!(1)),
        ("phase", json!("RolledBack")),
    ] {
        assert_eq!(s[field], want, "status: {field}\n{}", run.shown());
    }
    assert!(
        !is_paused(&s["paused"]),
        "status: not paused\n{}",
        run.shown()
    );
    assert_eq!(s["blocked"]["version"], "1.1.0", "{}", run.shown());
    let conditions = s["conditions"].as_array().cloned().unwrap_or_default();
    assert!(
        conditions
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "False"),
        "conditions include Ready=False\n{}",
        run.shown()
    );
    let rb = &s["rollback"];
    assert_eq!(rb["id"], json!(rollback_id), "{}", run.shown());
    assert_eq!(rb["phase"], "Succeeded", "{}", run.shown());
    assert_eq!(rb["trigger"], "CrashLoop", "{}", run.shown());
    assert_eq!(
        (&rb["from"]["revision"], &rb["from"]["version"]),
        (&json!(2), &json!("1.1.0")),
        "{}",
        run.shown()
    );
    assert_eq!(
        (&rb["to"]["revision"], &rb["to"]["version"]),
        (&json!(1), &json!("1.0.0")),
        "{}",
        run.shown()
    );
    let timeline = rb["timeline"]
        .as_array()
        .unwrap_or_else(|| panic!("no rollback.timeline\n{}", run.shown()));
    assert!(
        timeline.len() >= 3
            && timeline
                .iter()
                .all(|t| t["step"].as_str().is_some_and(|s| !s.is_empty()) && t["at"].is_string()),
        "the timeline has its steps (step, at)\n{}",
        run.shown()
    );
    let steps: Vec<&str> = timeline
        .iter()
        .map(|t| t["step"].as_str().unwrap())
        .collect();
    assert_eq!(
        steps,
        ["detected", "started", "images-restored", "succeeded"],
        "the timeline of a rollback without migrations\n{}",
        run.shown()
    );
    let end = timeline.last().unwrap()["afterSeconds"].as_f64();
    let took = r["status"]["rollback"]["durationSeconds"].as_f64();
    assert!(
        end.zip(took)
            .is_some_and(|(end, took)| (end - took).abs() <= 1.0),
        "the last step comes durationSeconds ({took:?}) after detection, to the second: {end:?}\n{}",
        run.shown()
    );
    // Otherwise the rollback is the Release's own status.rollback.
    let mut own = rb.clone();
    own.as_object_mut().unwrap().remove("timeline");
    assert_eq!(
        own,
        r["status"]["rollback"],
        "status: rollback (without timeline) is the Release's status.rollback\n{}",
        run.shown()
    );
    assert_eq!(
        (
            &s["pods"]["revision"],
            &s["pods"]["ready"],
            &s["pods"]["total"]
        ),
        (&json!(1), &json!(3), &json!(3)),
        "the pods of the live revision, all Ready\n{}",
        run.shown()
    );
    let next = s["next"].as_array().cloned().unwrap_or_default();
    assert!(
        !next.is_empty()
            && next
                .iter()
                .all(|n| n["why"].is_string() && n["command"].is_string()),
        "a blocked Release says what to do next ({{why, command}})\n{}",
        run.shown()
    );
    assert!(
        next.iter().any(|n| n["command"]
            .as_str()
            .is_some_and(|c| c.contains("kubectl rewind retry shop"))),
        "next[] offers `kubectl rewind retry shop`\n{}",
        run.shown()
    );

    // The tables: the key cells.
    let run = cli(ns, &["list"]).await;
    run.expect_code(0);
    assert_mentions(&run, &["shop", "1.0.0", "1.1.0", "RolledBack", "CrashLoop"]);
    let run = cli(ns, &["history", "shop"]).await;
    run.expect_code(0);
    assert_mentions(&run, &["1.1.0", "1.0.0", "Failed", "Healthy", "CrashLoop"]);
    let short = recorded_digest(&r, 1)
        .trim_start_matches("sha256:")
        .chars()
        .take(7)
        .collect::<String>();
    assert!(
        run.stdout.contains(&short),
        "the history table shows 1.0.0's short digest {short}\n{}",
        run.shown()
    );
    let run = cli(ns, &["status", "shop"]).await;
    run.expect_code(0);
    assert_mentions(
        &run,
        &[
            "shop",
            "1.0.0",
            "1.1.0",
            "RolledBack",
            "Succeeded",
            "kubectl rewind retry shop",
        ],
    );
}

/// `rollback --to 1.0.0 --wait` returns 0 only once the Deployment runs 1.0.0's pinned digest
/// again, and the rollback records who asked (as the API server knows them) and why.
#[tokio::test]
async fn rollback_wait_returns_once_the_deployment_runs_the_pinned_target() {
    let f = Fixture::new("cli_rollback_wait").await;
    let ns = f.ns.name();
    let before = healthy_v1_then_v1_1(&f).await;
    let digest = recorded_digest(&before, 1);
    let reason = "checkout errors since 1.1.0";

    let run = cli_within(
        ns,
        &[
            "rollback",
            "shop",
            "--to",
            "1.0.0",
            "--reason",
            reason,
            "--wait",
            "--timeout",
            "90s",
            "-o",
            "json",
        ],
        secs(120),
    )
    .await;
    // Read at once, before anything else can move on.
    let d = f
        .deployments
        .get("shop")
        .await
        .expect("reading Deployment shop");
    let r = release_json(&f).await;
    run.expect_code(0);
    assert_eq!(
        template_of(&d),
        (format!("{LOOPBACK_REPO}@{digest}"), Some("1".to_owned())),
        "when `rollback --wait` returns, the template carries 1.0.0's pinned digest (revision 1)\n{}",
        run.shown()
    );
    assert_eq!(
        rollback_phase(&r),
        "Succeeded",
        "the rollback had ended when the command returned:\n{}",
        shown(&r)
    );
    let rb = &r["status"]["rollback"];
    assert_eq!(rb["trigger"], "Manual", "{}", shown(&r));
    assert_eq!(version_of(&rb["to"]), "1.0.0", "{}", shown(&r));

    // The audit entry: who asked (the API server's name for this kubeconfig's user) and why.
    let user = who_am_i(&f).await;
    let audit = &r["status"]["rollbacks"][0];
    assert_eq!(
        audit["id"],
        rb["id"],
        "rollbacks[0] is this one:\n{}",
        shown(&r)
    );
    assert_eq!(
        audit["requestedBy"].as_str(),
        Some(user.as_str()),
        "requestedBy is the user a SelfSubjectReview names:\n{}",
        shown(&r)
    );
    assert_eq!(
        audit["requestReason"].as_str(),
        Some(reason),
        "requestReason is --reason:\n{}",
        shown(&r)
    );
    // The request as set on the Release, and acknowledged by its id.
    assert_eq!(
        annotation(&r, "rewind.dev/rollback-to"),
        Some("1.0.0"),
        "{}",
        shown(&r)
    );
    assert_eq!(
        annotation(&r, "rewind.dev/reason"),
        Some(reason),
        "{}",
        shown(&r)
    );
    let id = annotation(&r, "rewind.dev/request-id")
        .unwrap_or_else(|| panic!("no rewind.dev/request-id:\n{}", shown(&r)));
    assert!(!id.is_empty());
    assert_eq!(r["status"]["handled"]["requestId"], id, "{}", shown(&r));

    // What the command printed.
    let out = run.json();
    assert_eq!(out["accepted"], true, "{}", run.shown());
    let req = &out["request"];
    for (field, want) in [
        ("release", json!("shop")),
        ("namespace", json!(ns)),
        ("to", json!("1.0.0")),
        ("id", json!(id)),
        ("requestedBy", json!(user)),
        ("reason", json!(reason)),
    ] {
        assert_eq!(req[field], want, "request.{field}\n{}", run.shown());
    }
    assert_eq!(out["rollback"]["phase"], "Succeeded", "{}", run.shown());
}

/// `rollback --dry-run` writes nothing (neither the Release nor the Deployment changes) and
/// says what it would do.
#[tokio::test]
async fn rollback_dry_run_changes_nothing_and_names_from_and_to() {
    let mut f = Fixture::new("cli_rollback_dry_run").await;
    let ns = f.ns.name().to_owned();
    let r = healthy_v1_then_v1_1(&f).await;
    let digest = recorded_digest(&r, 1);
    // No operator from here on, and the two objects left alone until neither changed for 2 s
    // (the controller-manager may still write the Deployment's status after the rollout, and
    // a status write of the killed operator may still land): nothing but the CLI could change
    // them now, so an unchanged resourceVersion means the CLI wrote nothing. A dry run needs
    // no operator.
    f.op.kill();
    let (release_rv, deployment_rv) = quiet_resource_versions(&f).await;

    let table = cli(&ns, &["rollback", "shop", "--to", "1.0.0", "--dry-run"]).await;
    let json_run = cli(
        &ns,
        &[
            "rollback",
            "shop",
            "--to",
            "1.0.0",
            "--dry-run",
            "-o",
            "json",
        ],
    )
    .await;

    let after = release_json(&f).await;
    assert_eq!(
        after["metadata"]["resourceVersion"].as_str().unwrap(),
        release_rv,
        "a dry run changed the Release:\n{}\n{}",
        shown(&after),
        table.shown()
    );
    assert_eq!(
        f.deployments
            .get("shop")
            .await
            .unwrap()
            .resource_version()
            .unwrap_or_default(),
        deployment_rv,
        "a dry run changed the Deployment\n{}",
        table.shown()
    );
    assert_eq!(annotation(&after, "rewind.dev/rollback-to"), None);

    table.expect_code(0);
    assert_mentions(&table, &["1.1.0", "1.0.0"]);
    json_run.expect_code(0);
    let plan = json_run.json();
    assert_eq!(
        (&plan["from"]["revision"], &plan["from"]["version"]),
        (&json!(2), &json!("1.1.0")),
        "{}",
        json_run.shown()
    );
    assert_eq!(
        (&plan["to"]["revision"], &plan["to"]["version"]),
        (&json!(1), &json!("1.0.0")),
        "{}",
        json_run.shown()
    );
    let app = plan["images"]
        .as_array()
        .and_then(|is| is.iter().find(|i| i["container"] == "app"))
        .unwrap_or_else(|| panic!("no image for container app\n{}", json_run.shown()));
    assert!(
        app["digest"].as_str() == Some(digest.as_str())
            || app["image"]
                .as_str()
                .is_some_and(|i| i.ends_with(&format!("@{digest}"))),
        "the dry run restores 1.0.0's digest {digest}\n{}",
        json_run.shown()
    );
    assert_eq!(
        app["image"].as_str().map(|i| i.starts_with(LOOPBACK_REPO)),
        Some(true),
        "{}",
        json_run.shown()
    );
    assert!(
        plan["refused"].is_null(),
        "nothing refuses this rollback\n{}",
        json_run.shown()
    );
    assert!(
        plan["migrations"].as_array().is_none_or(|m| m.is_empty()),
        "no migration Jobs without migrations\n{}",
        json_run.shown()
    );
}

/// `rollback --to` a version the Release never ran: exit 1, the known versions named, and
/// nothing asked of Rewind.
#[tokio::test]
async fn rollback_to_an_unknown_version_exits_1_naming_the_known_versions() {
    let f = Fixture::new("cli_rollback_unknown_version").await;
    let ns = f.ns.name();
    healthy_v1_then_v1_1(&f).await;

    let run = cli(ns, &["rollback", "shop", "--to", "9.9.9"]).await;
    run.expect_code(1);
    for known in ["1.0.0", "1.1.0"] {
        assert!(
            run.stderr.contains(known),
            "stderr names the known version {known}\n{}",
            run.shown()
        );
    }
    assert!(
        run.stderr.contains("9.9.9"),
        "stderr names the version asked for\n{}",
        run.shown()
    );
    let r = release_json(&f).await;
    assert_eq!(
        annotation(&r, "rewind.dev/rollback-to"),
        None,
        "a request refused by the CLI is not written:\n{}",
        shown(&r)
    );
}

/// `rollback --wait --timeout 2s` of a rollback that takes longer exits 3.
#[tokio::test]
async fn rollback_wait_past_its_timeout_exits_3() {
    let f = Fixture::new("cli_rollback_timeout").await;
    let ns = f.ns.name();
    // The rollback cannot end in less than 60 s: 1.1.0's down Job runs 60 s and must complete
    // before the images are restored (see the helper), so `--timeout 2s` must run out.
    v1_0_and_v1_1_with_a_slow_down_migration(&f).await;

    let run = cli_within(
        ns,
        &[
            "rollback",
            "shop",
            "--to",
            "1.0.0",
            "--wait",
            "--timeout",
            "2s",
        ],
        secs(40),
    )
    .await;
    let r = release_json(&f).await;
    run.expect_code(3);
    assert!(
        run.took >= secs(2) && run.took < secs(20),
        "it waited its 2 s (plus the acknowledgement), not more\n{}",
        run.shown()
    );
    // Rewind had taken the request (so the 3 is --timeout, not a missing acknowledgement) and
    // the rollback is still in its down migration.
    let id = annotation(&r, "rewind.dev/request-id")
        .unwrap_or_else(|| panic!("no rewind.dev/request-id:\n{}", shown(&r)));
    assert_eq!(r["status"]["handled"]["requestId"], id, "{}", shown(&r));
    assert_eq!(rollback_phase(&r), "MigratingDown", "{}", shown(&r));
}

/// Someone who may read Releases and pods but not patch Releases: `status` works, and
/// `rollback` is refused by the API server with the verb and resource named and how to check;
/// nothing is written.
#[tokio::test]
async fn rollback_without_the_right_to_patch_names_the_verb_and_the_resource() {
    let f = Fixture::new("cli_rbac_denied").await;
    let ns = f.ns.name();
    healthy_v1_then_v1_1(&f).await;
    let client = f.ns.client();
    let sa: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "viewer"}})).unwrap();
    let sas: Api<ServiceAccount> = f.ns.api();
    sas.create(&PostParams::default(), &sa)
        .await
        .expect("creating ServiceAccount viewer");
    let role: Role = serde_json::from_value(json!({
        "metadata": {"name": "release-viewer"},
        "rules": [
            {"apiGroups": ["rewind.dev"], "resources": ["releases"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
        ],
    }))
    .unwrap();
    f.ns.api::<Role>()
        .create(&PostParams::default(), &role)
        .await
        .expect("creating Role release-viewer");
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "viewer"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "release-viewer"},
        "subjects": [{"kind": "ServiceAccount", "name": "viewer", "namespace": ns}],
    }))
    .unwrap();
    f.ns.api::<RoleBinding>()
        .create(&PostParams::default(), &binding)
        .await
        .expect("creating RoleBinding viewer");
    let token = Api::<ServiceAccount>::namespaced(client, ns)
        .create_token_request(
            "viewer",
            &PostParams::default(),
            &serde_json::from_value(json!({"spec": {"audiences": [], "expirationSeconds": 3600}}))
                .unwrap(),
        )
        .await
        .expect("a token for viewer")
        .status
        .expect("a token")
        .token;
    let kc = kubeconfig_with_token(&format!("{ns}-viewer"), &token).await;
    let kc = kc.to_string_lossy().into_owned();

    let status = cli_as(&kc, ns, &["status", "shop", "-o", "json"], secs(30)).await;
    status.expect_code(0);
    assert_eq!(status.json()["liveVersion"], "1.1.0", "{}", status.shown());

    let before = release_json(&f).await;
    let run = cli_as(&kc, ns, &["rollback", "shop", "--to", "1.0.0"], secs(30)).await;
    run.expect_code(1);
    assert_mentions(
        &run,
        &[
            "forbidden",
            "patch",
            "releases.rewind.dev",
            &format!("kubectl auth can-i patch releases.rewind.dev -n {ns}"),
        ],
    );
    let after = release_json(&f).await;
    assert_eq!(
        after["metadata"]["annotations"], before["metadata"]["annotations"],
        "a refused request left annotations behind"
    );
}

/// A rollback across two schema changes, the newer irreversible: the dry run is refused
/// (IrreversibleMigration, exit 1) until `--allow-irreversible`, which names exactly the crossed
/// irreversible version; then the dry run lists both down steps in order (the irreversible one
/// skipped, the other's Job to run), and the real rollback runs that Job and restores 1.0.0.
#[tokio::test]
async fn rollback_across_migrations_previews_the_down_jobs_and_names_the_irreversible_one() {
    let f = Fixture::new("cli_rollback_migrations").await;
    let ns = f.ns.name();
    let migration = |tag: &str, schema: &str, reversible: bool| {
        json!({"migration": {
            "image": format!("127.0.0.1:9/shop/migrate:{tag}"),
            "schemaVersion": schema,
            "down": {"command": ["/migrate", "down"]},
            "reversible": reversible,
        }})
    };
    healthy_v1(&f, migration("1", "1", true)).await;
    ship_healthy(&f, "1.1.0", 2, migration("2", "2", true)).await;
    ship_healthy(&f, "1.2.0", 3, migration("3", "3", false)).await;
    let before = release_json(&f).await;

    let refused = cli(
        ns,
        &[
            "rollback",
            "shop",
            "--to",
            "1.0.0",
            "--dry-run",
            "-o",
            "json",
        ],
    )
    .await;
    refused.expect_code(1);
    assert_eq!(
        refused.json()["refused"]["reason"],
        "IrreversibleMigration",
        "{}",
        refused.shown()
    );

    let args = ["rollback", "shop", "--to", "1.0.0", "--allow-irreversible"];
    let preview = cli(ns, &[&args[..], &["--dry-run", "-o", "json"]].concat()).await;
    preview.expect_code(0);
    let p = preview.json();
    assert_eq!(p["irreversible"], json!(["1.2.0"]), "{}", preview.shown());
    assert_eq!(
        (&p["from"]["version"], &p["to"]["version"]),
        (&json!("1.2.0"), &json!("1.0.0")),
        "{}",
        preview.shown()
    );
    let steps: Vec<(String, String, String, String)> = p["migrations"]
        .as_array()
        .unwrap_or_else(|| panic!("no migrations: {}", preview.shown()))
        .iter()
        .map(|m| {
            let s = |k: &str| m[k].as_str().unwrap_or_default().to_owned();
            (
                s("version"),
                s("fromSchemaVersion"),
                s("toSchemaVersion"),
                s("phase"),
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            ("1.2.0".into(), "3".into(), "2".into(), "Skipped".into()),
            ("1.1.0".into(), "2".into(), "1".into(), "Pending".into()),
        ],
        "newest first; the irreversible one skipped\n{}",
        preview.shown()
    );
    let table = cli(ns, &[&args[..], &["--dry-run"]].concat()).await;
    table.expect_code(0);
    assert_mentions(&table, &["Down migrations", "1.1.0 → 1.0.0", "skipped"]);
    let unchanged = release_json(&f).await;
    assert_eq!(
        unchanged["metadata"]["resourceVersion"], before["metadata"]["resourceVersion"],
        "a dry run wrote to the Release"
    );

    let run = cli_within(
        ns,
        &[&args[..], &["--wait", "--timeout", "90s"]].concat(),
        secs(100),
    )
    .await;
    run.expect_code(0);
    let r = release_json(&f).await;
    assert_eq!(
        annotation(&r, "rewind.dev/allow-irreversible"),
        Some("1.2.0"),
        "{}",
        shown(&r)
    );
    let done = &r["status"]["rollbacks"][0];
    assert_eq!(done["phase"], "Succeeded", "{}", shown(&r));
    assert_eq!(
        done["migrations"][1]["phase"],
        "Succeeded",
        "the 1.1.0 down Job ran\n{}",
        shown(&r)
    );
    assert_eq!(r["status"]["version"], "1.0.0", "{}", shown(&r));
}

/// `rollback` without `--wait` returns 0 once Rewind accepted the request; while the rollback's
/// down Job runs, `status` shows it in flight (the migration step, the timeline so far) and
/// counts the pods of the live revision: the Deployment's three, not the migration Job's pod.
#[tokio::test]
async fn status_during_a_down_migration_shows_the_step_and_counts_only_the_deployments_pods() {
    let f = Fixture::new("cli_status_migrating_down").await;
    let ns = f.ns.name();
    v1_0_and_v1_1_with_a_slow_down_migration(&f).await;

    let run = cli(ns, &["rollback", "shop", "--to", "1.0.0"]).await;
    run.expect_code(0);
    assert_mentions(&run, &["1.0.0"]);
    until(&f, "the rollback in MigratingDown", secs(20), |v| {
        rollback_phase(v) == "MigratingDown"
    })
    .await;
    let pods: Api<k8s_openapi::api::core::v1::Pod> = f.ns.api();
    wait_for_all(
        &pods,
        "rewind.dev/release=shop,rewind.dev/migration=down",
        "the down Job's pod running",
        secs(30),
        |ps: &[k8s_openapi::api::core::v1::Pod]| ps.len() == 1 && pod_is_ready(&ps[0]),
    )
    .await;

    let run = cli(ns, &["status", "shop", "-o", "json"]).await;
    run.expect_code(0);
    let s = run.json();
    assert_eq!(s["phase"], "RollingBack", "{}", run.shown());
    let rb = &s["rollback"];
    assert_eq!(
        (&rb["phase"], &rb["trigger"]),
        (&json!("MigratingDown"), &json!("Manual")),
        "{}",
        run.shown()
    );
    let step = &rb["migrations"][0];
    assert_eq!(
        (&step["version"], &step["toVersion"], &step["phase"]),
        (&json!("1.1.0"), &json!("1.0.0"), &json!("Running")),
        "the down step of 1.1.0 runs\n{}",
        run.shown()
    );
    let steps: Vec<&str> = rb["timeline"]
        .as_array()
        .map(|t| t.iter().filter_map(|e| e["step"].as_str()).collect())
        .unwrap_or_default();
    assert!(
        steps.contains(&"detected") && steps.contains(&"started") && !steps.contains(&"succeeded"),
        "the timeline so far: {steps:?}\n{}",
        run.shown()
    );
    assert_eq!(
        (
            &s["pods"]["revision"],
            &s["pods"]["ready"],
            &s["pods"]["total"]
        ),
        (&json!(2), &json!(3), &json!(3)),
        "pods of the live revision: the Deployment's 3 replicas (the down Job's pod is not one)\n{}",
        run.shown()
    );
}

/// Without an operator nobody acknowledges the request: after ~15 s the CLI says so and exits
/// 3, and the annotation stays (an operator that starts later acts on it).
#[tokio::test]
async fn rollback_without_an_operator_is_not_acknowledged_and_exits_3() {
    let mut f = Fixture::new("cli_rollback_no_operator").await;
    let ns = f.ns.name().to_owned();
    healthy_v1_then_v1_1(&f).await;
    f.op.kill();

    let run = cli_within(&ns, &["rollback", "shop", "--to", "1.0.0"], secs(40)).await;
    run.expect_code(3);
    assert!(
        squash(&run.text()).contains("notacknowledged"),
        "the output says the request was not acknowledged\n{}",
        run.shown()
    );
    assert!(
        run.took >= secs(14) && run.took < secs(25),
        "it waits about 15 s for the acknowledgement\n{}",
        run.shown()
    );
    let r = release_json(&f).await;
    assert_eq!(
        annotation(&r, "rewind.dev/rollback-to"),
        Some("1.0.0"),
        "the request stays on the Release:\n{}",
        shown(&r)
    );
    assert!(
        annotation(&r, "rewind.dev/request-id").is_some_and(|id| !id.is_empty()),
        "{}",
        shown(&r)
    );
    assert_eq!(
        rollback_phase(&r),
        "-",
        "nothing rolled back:\n{}",
        shown(&r)
    );

    // A second request while that one is pending is refused by the CLI itself, at once, and
    // writes nothing.
    let second = cli(&ns, &["rollback", "shop", "--to", "1.0.0"]).await;
    second.expect_code(1);
    assert!(
        second.took < secs(10),
        "refused without waiting\n{}",
        second.shown()
    );
    assert_mentions(&second, &["1.0.0"]);
    let again = release_json(&f).await;
    assert_eq!(
        annotation(&again, "rewind.dev/request-id"),
        annotation(&r, "rewind.dev/request-id"),
        "the pending request is left as it was:\n{}\n{}",
        shown(&again),
        second.shown()
    );

    // The operator back: it acts on the request left on the Release, once, as that request
    // (its id on the rollback), and the Release runs 1.0.0 again.
    let id = annotation(&r, "rewind.dev/request-id").unwrap().to_owned();
    f.op = Operator::start(&ns);
    let done = until(&f, "the pending request rolled back", secs(90), |v| {
        v["status"]["rollbacks"][0]["requestId"] == id.as_str()
            && v["status"]["rollbacks"][0]["phase"] == "Succeeded"
    })
    .await;
    assert_eq!(
        done["status"]["handled"]["requestId"],
        id.as_str(),
        "{}",
        shown(&done)
    );
    assert_eq!(done["status"]["version"], "1.0.0", "{}", shown(&done));
    let status = cli(&ns, &["status", "shop", "-o", "json"]).await;
    status.expect_code(0);
    assert!(
        status.json()["pending"].is_null(),
        "answered, no longer pending\n{}",
        status.shown()
    );
    assert_eq!(
        done["status"]["rollbacks"].as_array().map(Vec::len),
        Some(1),
        "acted on once:\n{}",
        shown(&done)
    );
    // The request stays on the Release: it is not acted on again.
    expect_never(
        &f.releases,
        "shop",
        "a second rollback from the same request",
        secs(5),
        |r: &Release| r.status.as_ref().is_some_and(|s| s.rollbacks.len() > 1),
    )
    .await;
}

/// An unknown Release: exit 1, and a close name is suggested when there is one.
#[tokio::test]
async fn status_of_an_unknown_release_exits_1_and_suggests_a_close_name() {
    // No operator needed: the CLI only reads.
    let ns = TestNamespace::new("cli_unknown_release").await;
    install_crds(&ns.client()).await;
    let r: Release = serde_json::from_value(json!({
        "apiVersion": "rewind.dev/v1alpha1", "kind": "Release",
        "metadata": {"name": "shop-api"},
        "spec": {"version": "1.0.0", "target": {"kind": "Deployment", "name": "shop-api"},
                 "images": [{"container": "app", "image": loopback_image("1.0.0")}]}
    }))
    .unwrap();
    ns.api::<Release>()
        .create(&PostParams::default(), &r)
        .await
        .expect("creating Release shop-api");

    let run = cli(ns.name(), &["status", "nosuch"]).await;
    run.expect_code(1);
    assert!(
        run.stderr.contains("nosuch"),
        "stderr names the Release asked for\n{}",
        run.shown()
    );

    let run = cli(ns.name(), &["status", "shop-apu"]).await;
    run.expect_code(1);
    assert!(
        run.stderr.contains("shop-apu") && run.stderr.contains("shop-api"),
        "stderr names the Release asked for and suggests shop-api\n{}",
        run.shown()
    );
}

/// `pause` sets the annotation (never the spec) and the Release turns Paused; `resume`
/// removes it and the Release goes on.
#[tokio::test]
async fn pause_and_resume_set_and_clear_the_annotation() {
    let f = Fixture::new("cli_pause_resume").await;
    let ns = f.ns.name();
    let r = healthy_v1(&f, json!({})).await;
    let generation = r["metadata"]["generation"].clone();
    let reason = "freeze for the audit";
    // `status --watch -o json` beside it all: one document per line at each change.
    let watch = {
        let ns = ns.to_owned();
        tokio::spawn(async move {
            let args = [
                "status",
                "shop",
                "--watch",
                "-o",
                "json",
                "--timeout",
                "12s",
            ];
            cli_within(&ns, &args, secs(40)).await
        })
    };
    // Give the watch a moment to start (it is not asked to show the Healthy before).
    tokio::time::sleep(secs(1)).await;

    let run = cli(ns, &["pause", "shop", "--reason", reason]).await;
    run.expect_code(0);
    let r = until(&f, "Paused", secs(30), |v| v["status"]["phase"] == "Paused").await;
    let paused = annotation(&r, "rewind.dev/paused")
        .unwrap_or_else(|| panic!("no rewind.dev/paused:\n{}", shown(&r)));
    assert!(
        paused.contains(reason),
        "the annotation says why: {paused:?}"
    );
    assert_eq!(
        (&r["metadata"]["generation"], &r["spec"]["paused"]),
        (&generation, &Value::Null),
        "the spec is not touched:\n{}",
        serde_json::to_string_pretty(&r).unwrap()
    );
    let run = cli(ns, &["status", "shop", "-o", "json"]).await;
    run.expect_code(0);
    let s = run.json();
    assert_eq!(s["phase"], "Paused", "{}", run.shown());
    assert!(
        is_paused(&s["paused"]),
        "status: paused (true, or why)\n{}",
        run.shown()
    );
    assert!(
        s["next"]
            .as_array()
            .is_some_and(|n| n.iter().any(|n| n["command"]
                .as_str()
                .is_some_and(|c| c.contains("kubectl rewind resume shop")))),
        "a paused Release offers `kubectl rewind resume shop`\n{}",
        run.shown()
    );

    let run = cli(ns, &["resume", "shop"]).await;
    run.expect_code(0);
    let r = until(&f, "no longer Paused", secs(30), |v| {
        v["status"]["phase"] != "Paused" && v["status"]["phase"].is_string()
    })
    .await;
    assert_eq!(annotation(&r, "rewind.dev/paused"), None, "{}", shown(&r));
    assert_eq!(
        r["metadata"]["generation"], generation,
        "the spec is not touched"
    );
    until(&f, "Healthy again", secs(30), |v| {
        v["status"]["phase"] == "Healthy"
    })
    .await;

    // The watch saw Paused, then Healthy again. docs/cli.md does not say how a
    // watch that reaches --timeout exits: 0 or 3 are both taken.
    let watch = watch.await.expect("the watch task");
    assert!(
        matches!(watch.code, Some(0 | 3)),
        "the watch ends at its --timeout\n{}",
        watch.shown()
    );
    let phases: Vec<String> = watch
        .stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let doc: Value = serde_json::from_str(l).unwrap_or_else(|e| {
                panic!(
                    "a line of `status --watch -o json` is not JSON ({e}): {l}\n{}",
                    watch.shown()
                )
            });
            doc["phase"].as_str().unwrap_or("-").to_owned()
        })
        .collect();
    let mut wanted = ["Paused", "Healthy"].into_iter().peekable();
    for p in &phases {
        if wanted.peek() == Some(&p.as_str()) {
            wanted.next();
        }
    }
    assert!(
        wanted.peek().is_none(),
        "the watch printed Paused, then Healthy; phases printed: {phases:?}\n{}",
        watch.shown()
    );
}

//! Hostile input, on the local cluster: odd Releases and RollbackPolicies a tenant can write.
//! Each case is either refused by the schema with the message a person sees (asserted), or
//! accepted and reported on the object itself by a condition and an Event (reason asserted);
//! and after every accepted case, a good Release in the same namespace still deploys and rolls
//! back (the "canary": Release `shop` of the operator test fixture, which ships a version that
//! crash-loops and must see it rolled back). One operator per test namespace.
//!
//! The CRDs are cluster-wide and other branches' tests install theirs (older, looser) on the
//! same cluster: a row the schema unexpectedly accepts puts ours back and tries again.

mod operator;
mod support;

use std::time::Duration;

use kube::{
    Api, Client, CustomResourceExt,
    api::{DeleteParams, DynamicObject, Patch, PatchParams, PostParams},
    core::{ApiResource, GroupVersionKind},
};
use operator::*;
use rewind::api::{Release, RollbackPhase, RollbackPolicy};
use serde_json::{Value, json};
use support::*;

/// On loopback, where nothing listens: registry lookups are refused at once.
const REPO: &str = "127.0.0.1:9/shop/api";

fn image(tag: &str) -> String {
    format!("{REPO}:{tag}")
}

/// Held while a test changes which schema is installed, or relies on ours being installed.
static SCHEMA: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn dynamic_api(ns: &TestNamespace, kind: &str) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk("rewind.dev", "v1alpha1", kind));
    Api::namespaced_with(ns.client(), ns.name(), &ar)
}

async fn create(api: &Api<DynamicObject>, obj: &Value) -> Result<(), String> {
    let obj: DynamicObject = serde_json::from_value(obj.clone()).unwrap();
    api.create(&PostParams::default(), &obj)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Create `obj` and expect the schema to refuse it with a message containing `want` (and
/// none of `not`). Accepted means another test run installed an older CRD in between: delete
/// it, put ours back, try again.
async fn refused(
    client: &Client,
    api: &Api<DynamicObject>,
    obj: &Value,
    want: &str,
    not: &[&str],
) -> Result<(), String> {
    for _ in 0..4 {
        match create(api, obj).await {
            Err(e) if e.contains(want) => {
                return match not.iter().find(|n| e.contains(*n)) {
                    Some(n) => Err(format!("refused with {e:?}, which also says {n:?}")),
                    None => Ok(()),
                };
            }
            Err(e) => return Err(format!("refused with {e:?}, want {want:?}")),
            Ok(()) => {
                let name = obj["metadata"]["name"].as_str().unwrap_or_default();
                let _ = api.delete(name, &DeleteParams::default()).await;
                install_crds(client).await;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    Err(format!("accepted, want refused with {want:?}"))
}

/// Every row of `table` that was not refused as it should be.
async fn refusals(
    ns: &TestNamespace,
    api: &Api<DynamicObject>,
    table: &[(&str, Value, &str)],
) -> Vec<String> {
    let mut failures = Vec::new();
    for (case, obj, want) in table {
        // Text that is not a duration gets the pattern's message only, not a bounds one too.
        let not: &[&str] = if want.ends_with("must be a duration") {
            &["must be from"]
        } else {
            &[]
        };
        if let Err(e) = refused(&ns.client(), api, obj, want, not).await {
            failures.push(format!("{case}: {e}"));
        }
    }
    failures
}

/// `base` with `path` (dot-separated; numbers index arrays) set to `value`.
fn with(base: &Value, path: &str, value: Value) -> Value {
    let mut out = base.clone();
    let mut cur = &mut out;
    let parts: Vec<&str> = path.split('.').collect();
    for (i, p) in parts.iter().enumerate() {
        let last = i == parts.len() - 1;
        let next = match p.parse::<usize>() {
            Ok(idx) => &mut cur[idx],
            Err(_) => &mut cur[*p],
        };
        if last {
            *next = value;
            break;
        }
        cur = next;
    }
    out
}

fn release(name: &str) -> Value {
    json!({
        "apiVersion": "rewind.dev/v1alpha1", "kind": "Release",
        "metadata": {"name": name},
        "spec": {
            "version": "1.0.0",
            "target": {"kind": "Deployment", "name": "shop"},
            "images": [{"container": "app", "image": image("1.0.0")}]
        }
    })
}

fn policy(name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "rewind.dev/v1alpha1", "kind": "RollbackPolicy",
        "metadata": {"name": name}, "spec": spec
    })
}

// ---- refused by the schema -----------------------------------------------------------------

#[tokio::test]
async fn hostile_releases_are_refused_with_a_message_a_person_can_act_on() {
    let _schema = SCHEMA.lock().await;
    let ns = TestNamespace::new("hostile_releases_refused").await;
    install_crds(&ns.client()).await;
    let api = dynamic_api(&ns, "Release");
    let good = release("r");
    let images = |n: usize| -> Value {
        (0..n)
            .map(|i| json!({"container": format!("c{i}"), "image": image("1.0.0")}))
            .collect()
    };
    let table: Vec<(&str, Value, &str)> = vec![
        (
            "name of 64 characters (it becomes a label value)",
            with(&good, "metadata.name", json!("r".repeat(64))),
            "metadata.name must be at most 63 characters: Rewind puts the Release's name in the label rewind.dev/release",
        ),
        (
            "name of 253 characters",
            with(
                &good,
                "metadata.name",
                json!(format!("{}.x", "a".repeat(251))),
            ),
            "metadata.name must be at most 63 characters",
        ),
        (
            "version with a leading v",
            with(&good, "spec.version", json!("v1.0.0")),
            "spec.version must be semver",
        ),
        (
            "version of 129 characters",
            with(
                &good,
                "spec.version",
                json!(format!("1.0.0-{}", "a".repeat(123))),
            ),
            "spec.version: Too long: may not be more than 128 bytes",
        ),
        (
            "33 images",
            with(&good, "spec.images", images(33)),
            "spec.images: Too many: 33: must have at most 32 items",
        ),
        (
            "image of 600 characters",
            with(
                &good,
                "spec.images.0.image",
                json!(format!("{REPO}/{}:1", "a".repeat(580))),
            ),
            "spec.images[0].image: Too long: may not be more than 512 bytes",
        ),
        (
            "image with a scheme",
            with(
                &good,
                "spec.images.0.image",
                json!("https://127.0.0.1:9/shop/api:1"),
            ),
            "image must be an image reference",
        ),
        (
            "container that is not a name",
            with(&good, "spec.images.0.container", json!("App Server")),
            "container must be a container name",
        ),
        (
            "migration argument of 2000 characters",
            with(
                &good,
                "spec.migration",
                json!({"image": image("m"), "schemaVersion": "1", "down": {"args": ["x".repeat(2000)]}}),
            ),
            "Too long: may not be more than 1024 bytes",
        ),
        (
            "no target",
            with(&good, "spec.target", Value::Null),
            "spec.target: Required value",
        ),
        (
            "a StatefulSet target",
            with(&good, "spec.target.kind", json!("StatefulSet")),
            "Unsupported value: \"StatefulSet\"",
        ),
    ];
    let failures = refusals(&ns, &api, &table).await;
    assert!(
        failures.is_empty(),
        "schema table mismatches:\n{}",
        failures.join("\n")
    );
}

#[tokio::test]
async fn hostile_policies_are_refused_with_a_message_a_person_can_act_on() {
    let _schema = SCHEMA.lock().await;
    let ns = TestNamespace::new("hostile_policies_refused").await;
    install_crds(&ns.client()).await;
    let api = dynamic_api(&ns, "RollbackPolicy");
    let p = |spec: Value| policy("p", spec);
    let metric = |interval: &str| json!([{"name": "errors", "prometheus": {"address": "http://prometheus:9090", "query": "up"}, "interval": interval, "failWhen": {"above": 1}}]);
    let table: Vec<(&str, Value, &str)> = vec![
        (
            "cooldown of 99999999999999999999h (issue 9: crashed the operator)",
            p(json!({"cooldown": "99999999999999999999h"})),
            "cooldown must be from 0s to 168h",
        ),
        (
            "readiness timeout of 5124095576030432h",
            p(json!({"readiness": {"timeout": "5124095576030432h"}})),
            "readiness.timeout must be from 5s to 24h",
        ),
        (
            "readiness timeout of 0s (every rollout would fail at once)",
            p(json!({"readiness": {"timeout": "0s"}})),
            "readiness.timeout must be from 5s to 24h: no pod is pulled, started and Ready sooner",
        ),
        (
            "readiness timeout in microseconds",
            p(json!({"readiness": {"timeout": "250us"}})),
            "readiness.timeout must be from 5s to 24h",
        ),
        (
            "readiness timeout of 25h",
            p(json!({"readiness": {"timeout": "24h0m1s"}})),
            "readiness.timeout must be from 5s to 24h",
        ),
        (
            "unreadyFor of 0s",
            p(json!({"readiness": {"unreadyFor": "0s"}})),
            "readiness.unreadyFor must be from 1s to 1h",
        ),
        (
            "image pull window of 2h",
            p(json!({"imagePull": {"failFor": "2h"}})),
            "imagePull.failFor must be from 1s to 1h",
        ),
        (
            "guard window of a year",
            p(json!({"guardWindow": "8760h"})),
            "guardWindow must be from 0s to 168h",
        ),
        (
            "metric interval of 1s",
            p(json!({"metrics": metric("1s")})),
            "metrics[].interval must be from 5s to 1h",
        ),
        (
            "migration timeout of 25h",
            p(json!({"migrations": {"timeout": "25h"}})),
            "migrations.timeout must be from 10s to 24h",
        ),
        (
            "duration in days",
            p(json!({"cooldown": "1d"})),
            "cooldown must be a duration",
        ),
        (
            "duration of 33 characters",
            p(json!({"cooldown": format!("{}5s", "0".repeat(31))})),
            "spec.cooldown: Too long: may not be more than 32 bytes",
        ),
        (
            "maxUnready 1000%",
            p(json!({"readiness": {"maxUnready": "1000%"}})),
            "readiness.maxUnready must be a count of pods (0 or more) or a percent from 0% to 100%",
        ),
        (
            "historyLimit 0",
            p(json!({"historyLimit": 0})),
            "spec.historyLimit: Invalid value: 0: spec.historyLimit in body should be greater than or equal to 2",
        ),
        (
            "historyLimit 1000000",
            p(json!({"historyLimit": 1_000_000})),
            "spec.historyLimit in body should be less than or equal to 50",
        ),
        (
            "crash loop after 100000 restarts",
            p(json!({"crashLoop": {"restarts": 100_000}})),
            "should be less than or equal to 1000",
        ),
        (
            "selector with an unknown operator (used to match nothing, silently)",
            p(
                json!({"selector": {"matchExpressions": [{"key": "tier", "operator": "Matches", "values": ["web"]}]}}),
            ),
            "selector.matchExpressions[].operator must be In, NotIn, Exists or DoesNotExist",
        ),
        (
            "selector In without values",
            p(json!({"selector": {"matchExpressions": [{"key": "tier", "operator": "In"}]}})),
            "selector.matchExpressions: In and NotIn need at least one value; Exists and DoesNotExist take none",
        ),
        (
            "selector Exists with values",
            p(
                json!({"selector": {"matchExpressions": [{"key": "tier", "operator": "Exists", "values": ["x"]}]}}),
            ),
            "In and NotIn need at least one value; Exists and DoesNotExist take none",
        ),
        (
            "selector with 40 labels",
            p(
                json!({"selector": {"matchLabels": (0..40).map(|i| (format!("k{i}"), json!("v"))).collect::<serde_json::Map<_, _>>()}}),
            ),
            "spec.selector.matchLabels: Too many: 40: must have at most 32 items",
        ),
        (
            "selector label value of 64 characters",
            p(json!({"selector": {"matchLabels": {"tier": "w".repeat(64)}}})),
            "Too long: may not be more than 63 bytes",
        ),
    ];
    let failures = refusals(&ns, &api, &table).await;
    assert!(
        failures.is_empty(),
        "schema table mismatches:\n{}",
        failures.join("\n")
    );
}

// ---- accepted, reported, and the others go on ------------------------------------------------

impl Fixture {
    /// The canary: Release `shop` runs 1.0.0, healthy, on Deployment `shop`.
    async fn canary(&self) {
        self.create_deployment(&image("0.9.0")).await;
        self.deployment_until("0.9.0 rolled out", secs(60), deployment_is_rolled_out)
            .await;
        self.apply_release("1.0.0", &image("1.0.0"), json!({}))
            .await;
        self.release_until("canary Healthy on revision 1", secs(60), |r| {
            phase(r) == "Healthy" && r.status.as_ref().and_then(|s| s.revision) == Some(1)
        })
        .await;
    }

    /// The canary still deploys and rolls back: ship `1.<n>.0`, whose pods crash-loop, and
    /// see it applied and rolled back to 1.0.0 (revision 1).
    async fn canary_still_works(&self, n: u32, after: &str) {
        let version = format!("1.{n}.0");
        self.apply_release(&version, &image(&format!("{version}-crashloop")), json!({}))
            .await;
        let what = format!("after {after}: canary {version} deployed and rolled back");
        let r = self
            .release_until(&what, secs(90), |r| {
                r.status.as_ref().is_some_and(|s| {
                    s.revision == Some(1)
                        && s.rollbacks.iter().any(|rb| {
                            rb.from.version == version && rb.phase == RollbackPhase::Succeeded
                        })
                })
            })
            .await;
        assert_eq!(phase(&r), "RolledBack", "{what}");
        self.revision_applied(1, secs(30)).await;
    }

    fn policies(&self) -> Api<RollbackPolicy> {
        self.ns.api()
    }

    /// Create an object from JSON (it must be accepted).
    async fn create_json<K>(&self, obj: Value)
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + serde::Serialize
            + std::fmt::Debug,
        K::DynamicType: Default,
    {
        let typed: K = serde_json::from_value(obj.clone()).unwrap();
        self.ns
            .api::<K>()
            .create(&PostParams::default(), &typed)
            .await
            .unwrap_or_else(|e| panic!("creating {obj}: {e}"));
    }

    /// Wait until Release `name`'s Ready condition has `reason`, and its Event too.
    async fn reported(&self, name: &str, reason: &str) -> Release {
        let r = wait_for(&self.releases, name, reason, secs(30), |r| {
            condition(r, "Ready").is_some_and(|c| c.reason == reason)
        })
        .await;
        wait_for_events(&self.ns.client(), self.ns.name(), name, &[reason], secs(15)).await;
        r
    }

    /// Wait until Deployment `name` has rolled out.
    async fn deployment_until_named(&self, name: &str) {
        wait_for(
            &self.deployments,
            name,
            "rolled out",
            secs(60),
            deployment_is_rolled_out,
        )
        .await;
    }

    /// Deployment `name`, one replica running `image`.
    async fn other_deployment(&self, name: &str, image: &str) {
        self.deployments
            .create(&PostParams::default(), &deployment(name, 1, &[image]))
            .await
            .unwrap_or_else(|e| panic!("creating Deployment {name}: {e}"));
    }
}

/// A Release from JSON parts.
fn release_of(name: &str, target: &str, container: &str, version: &str, extra: Value) -> Value {
    let mut r = release(name);
    r["spec"]["target"]["name"] = json!(target);
    r["spec"]["version"] = json!(version);
    r["spec"]["images"] = json!([{"container": container, "image": image(version)}]);
    if let (Some(spec), Some(e)) = (r["spec"].as_object_mut(), extra.as_object()) {
        spec.extend(e.clone());
    }
    r
}

#[tokio::test]
async fn odd_releases_are_reported_on_themselves_and_the_others_go_on() {
    let f = Fixture::new("hostile_releases_accepted").await;
    f.canary().await;

    // 1. A Release whose Deployment does not exist.
    f.create_json::<Release>(release_of(
        "orphan",
        "nothing-here",
        "app",
        "1.0.0",
        json!({}),
    ))
    .await;
    let r = f.reported("orphan", "TargetNotFound").await;
    assert!(has_condition(&r, "Stalled", "True"));
    f.canary_still_works(1, "a missing target").await;

    // 2. A Release naming a container its Deployment does not have.
    f.other_deployment("other", &image("0.9.0")).await;
    f.create_json::<Release>(release_of("ghost", "other", "ghost", "1.0.0", json!({})))
        .await;
    let r = f.reported("ghost", "ContainerNotFound").await;
    let msg = &condition(&r, "Ready").unwrap().message;
    assert!(msg.contains("no container named ghost"), "{msg}");
    f.canary_still_works(2, "an unknown container").await;

    // 3. A second Release for the canary's own Deployment.
    f.create_json::<Release>(release_of("intruder", "shop", "app", "6.6.6", json!({})))
        .await;
    let r = f.reported("intruder", "TargetClaimed").await;
    assert!(
        condition(&r, "Ready")
            .unwrap()
            .message
            .contains("already managed by Release shop")
    );
    f.canary_still_works(3, "a Release for someone else's Deployment")
        .await;

    // 4. A name of exactly 63 characters: accepted, and it works (the label value fits).
    let long = "l".repeat(63);
    f.other_deployment("long", &image("0.9.0")).await;
    f.create_json::<Release>(release_of(&long, "long", "app", "1.0.0", json!({})))
        .await;
    wait_for(&f.releases, &long, "Healthy", secs(60), |r| {
        phase(r) == "Healthy" && condition(r, "Ready").is_some_and(|c| c.reason == "Healthy")
    })
    .await;
    let d = f.deployments.get("long").await.unwrap();
    let labels = d.spec.unwrap().template.metadata.unwrap().labels.unwrap();
    assert_eq!(labels.get("rewind.dev/release"), Some(&long));
    f.canary_still_works(4, "a 63-character name").await;

    // 5. An image that cannot be pulled, on the first Release of a Deployment: rolled back to
    //    what the Deployment ran before (revision 0).
    f.other_deployment("pull", &image("0.9.0")).await;
    f.deployment_until_named("pull").await;
    let mut bad = release_of(
        "pull",
        "pull",
        "app",
        "1.0.0",
        json!({"policyRef": {"name": "fast"}}),
    );
    bad["spec"]["images"][0]["image"] = json!(image("1.0.0-badpull"));
    f.create_json::<Release>(bad).await;
    let r = wait_for(
        &f.releases,
        "pull",
        "rolled back to revision 0",
        secs(60),
        |r| {
            r.status.as_ref().is_some_and(|s| {
                s.revision == Some(0)
                    && s.rollback
                        .as_ref()
                        .is_some_and(|rb| rb.phase == RollbackPhase::Succeeded)
            })
        },
    )
    .await;
    let s = r.status.as_ref().unwrap();
    let failure = s
        .history
        .iter()
        .find(|h| h.revision == 1)
        .and_then(|h| h.failure.clone());
    assert_eq!(failure.map(|f| f.reason), Some("ImagePullFailed".into()));
    wait_for_events(
        &f.ns.client(),
        f.ns.name(),
        "pull",
        &["RollbackSucceeded"],
        secs(15),
    )
    .await;
    f.canary_still_works(5, "an image that cannot be pulled")
        .await;

    // 6. A rollback-to of 100 KiB that names nothing: refused once, quoted bounded.
    let garbage = "no-such-version-".repeat(100 * 1024 / 16);
    f.annotate(
        &f.releases,
        "shop",
        "rewind.dev/rollback-to",
        Some(&garbage),
    )
    .await;
    let r = f
        .release_until("ManualRollback refused", secs(30), |r| {
            has_condition(r, "ManualRollback", "False")
        })
        .await;
    let c = condition(&r, "ManualRollback").unwrap();
    assert_eq!(c.reason, "UnknownVersion");
    assert!(
        c.message.len() <= 1000 && c.message.contains("…[truncated]"),
        "{}",
        c.message.len()
    );
    let handled = r
        .status
        .as_ref()
        .unwrap()
        .handled
        .clone()
        .unwrap_or_default();
    assert!(handled.rollback_to.is_some_and(|v| v.len() <= 253));
    wait_for_events(
        &f.ns.client(),
        f.ns.name(),
        "shop",
        &["UnknownVersion"],
        secs(15),
    )
    .await;
    f.annotate(&f.releases, "shop", "rewind.dev/rollback-to", None)
        .await;
    f.canary_still_works(6, "a 100 KiB rollback-to").await;

    // 7. A manual rollback asked by a 200 KiB requested-by: done, and who asked is bounded in
    //    every field it is copied into.
    f.apply_release("2.0.0", &image("2.0.0"), json!({})).await;
    f.release_until("2.0.0 Healthy", secs(60), |r| {
        phase(r) == "Healthy"
            && r.status.as_ref().and_then(|s| s.version.as_deref()) == Some("2.0.0")
    })
    .await;
    let who = "mallory".repeat(200 * 1024 / 7);
    f.annotate(&f.releases, "shop", "rewind.dev/requested-by", Some(&who))
        .await;
    f.annotate(&f.releases, "shop", "rewind.dev/rollback-to", Some("1.0.0"))
        .await;
    let r = f
        .release_until("manual rollback Succeeded", secs(60), |r| {
            r.status
                .as_ref()
                .and_then(|s| s.rollback.as_ref())
                .is_some_and(|rb| {
                    rb.phase == RollbackPhase::Succeeded && rb.from.version == "2.0.0"
                })
        })
        .await;
    let s = r.status.as_ref().unwrap();
    let rb = s.rollback.as_ref().unwrap();
    let requested_by = rb.requested_by.as_deref().unwrap_or_default();
    assert!(
        requested_by.len() <= 253 && requested_by.ends_with("…[truncated]"),
        "{requested_by}"
    );
    assert!(rb.message.len() <= 1000);
    assert!(has_condition(&r, "ManualRollback", "True"));
    let size = serde_json::to_vec(&r.status).unwrap().len();
    assert!(size < 64 * 1024, "status is {size} bytes");
    f.annotate(&f.releases, "shop", "rewind.dev/rollback-to", None)
        .await;
    f.annotate(&f.releases, "shop", "rewind.dev/requested-by", None)
        .await;
    f.canary_still_works(7, "a 200 KiB requested-by").await;
}

/// The Ready condition of RollbackPolicy `name` reaches `status` with `reason`, and says so
/// with an Event when it is Invalid.
async fn policy_reported(f: &Fixture, name: &str, status: &str, reason: &str) -> RollbackPolicy {
    let what = format!("Ready={status} ({reason})");
    let p = wait_for(
        &f.policies(),
        name,
        &what,
        secs(30),
        |p: &RollbackPolicy| {
            p.status.as_ref().is_some_and(|s| {
                s.observed_generation == p.metadata.generation
                    && s.conditions
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == status && c.reason == reason)
            })
        },
    )
    .await;
    if reason == "Invalid" {
        wait_for_events(&f.ns.client(), f.ns.name(), name, &[reason], secs(15)).await;
    }
    p
}

fn ready_message(p: &RollbackPolicy) -> String {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn odd_policies_are_reported_on_themselves_and_the_others_go_on() {
    let f = Fixture::new("hostile_policies_accepted").await;
    f.canary().await;
    // The fixture's own policy is valid, and says so.
    policy_reported(&f, "fast", "True", "Valid").await;
    f.other_deployment("other", &image("0.9.0")).await;

    // 1. Two policies select one Release: reported on the Release, not guessed between.
    for name in ["team-a", "team-b"] {
        f.create_json::<RollbackPolicy>(policy(
            name,
            json!({"selector": {"matchExpressions": [{"key": "tier", "operator": "Exists"}]}}),
        ))
        .await;
    }
    let mut r = release_of("ambiguous", "other", "app", "1.0.0", json!({}));
    r["metadata"]["labels"] = json!({"tier": "web"});
    f.create_json::<Release>(r).await;
    let r = f.reported("ambiguous", "PolicyError").await;
    let msg = &condition(&r, "Ready").unwrap().message;
    assert!(
        msg.contains("RollbackPolicies team-a and team-b all select this Release"),
        "{msg}"
    );
    f.canary_still_works(1, "two policies selecting one Release")
        .await;

    // 2. A policyRef to a policy that does not exist.
    f.create_json::<Release>(release_of(
        "dangling",
        "nothing",
        "app",
        "1.0.0",
        json!({"policyRef": {"name": "no-such-policy"}}),
    ))
    .await;
    // TargetNotFound comes first (the Deployment is missing too); give it one.
    f.other_deployment("nothing", &image("0.9.0")).await;
    let r = f.reported("dangling", "PolicyError").await;
    assert!(
        condition(&r, "Ready")
            .unwrap()
            .message
            .contains("spec.policyRef names RollbackPolicy no-such-policy but there is none"),
    );
    f.canary_still_works(2, "a policyRef to nothing").await;

    // 3. Policies at every bound: accepted, Valid, and the operator lives with them.
    for (name, spec) in [
        (
            "at-the-top",
            json!({"historyLimit": 50, "readiness": {"timeout": "24h", "unreadyFor": "1h", "maxUnready": "100%"},
                   "crashLoop": {"restarts": 1000}, "imagePull": {"failFor": "1h"}, "guardWindow": "168h",
                   "cooldown": "168h", "migrations": {"timeout": "24h"},
                   "metrics": [{"name": "e", "prometheus": {"address": "http://p:9090", "query": "up"}, "interval": "1h", "failWhen": {"below": 0}, "failureLimit": 100}],
                   "selector": {"matchLabels": {"bound": "top"}}}),
        ),
        (
            "at-the-bottom",
            json!({"historyLimit": 2, "readiness": {"timeout": "5s", "unreadyFor": "1s", "maxUnready": 0},
                   "crashLoop": {"restarts": 1}, "imagePull": {"failFor": "1s"}, "guardWindow": "0s",
                   "cooldown": "0s", "migrations": {"timeout": "10s"},
                   "metrics": [{"name": "e", "prometheus": {"address": "http://p:9090", "query": "up"}, "interval": "5s", "failWhen": {"above": 0}, "failureLimit": 1}],
                   "selector": {"matchExpressions": [{"key": "bound", "operator": "In", "values": ["bottom"]}]}}),
        ),
    ] {
        f.create_json::<RollbackPolicy>(policy(name, spec)).await;
        let p = policy_reported(&f, name, "True", "Valid").await;
        assert!(ready_message(&p).contains("within its bounds"));
    }
    f.canary_still_works(3, "policies at every bound").await;
}

/// Issue 9, item 1 on the cluster: a policy the schema of the day would refuse, stored under an
/// older, looser one (the bounds rules taken out of ours), is read, reported Invalid on itself
/// and on the Release it selects, survives a restart of the operator, and stops nothing else;
/// fixed, its Release goes on.
#[tokio::test]
async fn a_policy_stored_under_an_older_schema_is_reported_and_stops_nothing_else() {
    let mut f = Fixture::new("hostile_policy_older_schema").await;
    {
        let _schema = SCHEMA.lock().await;
        store_under_looser_schema(
            &f.ns,
            policy(
                "legacy",
                json!({"cooldown": "99999999999999999999h", "selector": {"matchLabels": {"app": "legacy"}}}),
            ),
        )
        .await;
    }
    let p = policy_reported(&f, "legacy", "False", "Invalid").await;
    let msg = ready_message(&p);
    assert!(
        msg.contains("cooldown \"99999999999999999999h\" cannot be used")
            && msg.contains("longer than the longest duration")
            && msg.contains("stall with reason PolicyError"),
        "{msg}"
    );

    f.other_deployment("legacy", &image("0.9.0")).await;
    let mut r = release_of("legacy", "legacy", "app", "1.0.0", json!({}));
    r["metadata"]["labels"] = json!({"app": "legacy"});
    f.create_json::<Release>(r).await;
    let r = f.reported("legacy", "PolicyError").await;
    let msg = &condition(&r, "Ready").unwrap().message;
    assert!(
        msg.contains("RollbackPolicy legacy, which selects this Release, is invalid: cooldown"),
        "{msg}"
    );
    f.canary().await;
    f.canary_still_works(1, "an invalid policy from an older schema")
        .await;

    // It used to crash the operator on every start: restart it.
    f.op.kill();
    f.op = Operator::start(f.ns.name());
    f.canary_still_works(2, "a restart with the invalid policy stored")
        .await;
    assert!(f.op.metrics().contains("rewind_reconciles_total"));
    assert!(
        f.op.log_lines("panicked").is_empty(),
        "the operator panicked: {}",
        f.op.log.display()
    );

    // Fixed (only the changed field is checked again): Valid, and its Release deploys.
    f.policies()
        .patch(
            "legacy",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"cooldown": "5m"}})),
        )
        .await
        .expect("fixing the policy");
    policy_reported(&f, "legacy", "True", "Valid").await;
    wait_for_events(&f.ns.client(), f.ns.name(), "legacy", &["Valid"], secs(15)).await;
    wait_for(
        &f.releases,
        "legacy",
        "Healthy once its policy is fixed",
        secs(60),
        |r| phase(r) == "Healthy",
    )
    .await;
}

/// Create `obj` while the RollbackPolicy CRD lacks its bounds rules (an older schema), then
/// put ours back.
async fn store_under_looser_schema(ns: &TestNamespace, obj: Value) {
    let client = ns.client();
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(client.clone());
    let mut loose = serde_json::to_value(RollbackPolicy::crd()).unwrap();
    strip_bounds(&mut loose);
    let api = dynamic_api(ns, "RollbackPolicy");
    let deadline = tokio::time::Instant::now() + secs(30);
    let result = loop {
        // Again on every try: a test starting meanwhile installs ours (the strict one).
        crds.patch(
            RollbackPolicy::crd_name(),
            &PatchParams::apply("rewind-tests").force(),
            &Patch::Apply(&loose),
        )
        .await
        .expect("installing the looser schema");
        // The API server takes a moment to use the new schema.
        tokio::time::sleep(Duration::from_millis(300)).await;
        match create(&api, &obj).await {
            Ok(()) => break Ok(()),
            Err(_) if tokio::time::Instant::now() < deadline => {}
            Err(e) => break Err(e),
        }
    };
    install_crds(&client).await;
    result.expect("creating the policy under the looser schema");
}

/// Remove every rule whose message gives a bound ("must be from").
fn strip_bounds(v: &mut Value) {
    match v {
        Value::Object(m) => {
            if let Some(Value::Array(rules)) = m.get_mut("x-kubernetes-validations") {
                rules.retain(|r| {
                    !r["message"]
                        .as_str()
                        .is_some_and(|s| s.contains("must be from"))
                });
            }
            m.values_mut().for_each(strip_bounds);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_bounds),
        _ => {}
    }
}

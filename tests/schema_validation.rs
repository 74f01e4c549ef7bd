//! The CRD schemas, proven by the real API server: valid samples are accepted, and each bad
//! input in the tables below is rejected with the message its rule carries. Later issues add
//! rows here.

mod operator;
mod support;

use kube::{
    Api,
    api::{DynamicObject, Patch, PatchParams, PostParams},
    core::{ApiResource, GroupVersionKind},
};
use serde_json::{Value, json};
use support::*;

fn release_api(ns: &TestNamespace) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk("rewind.dev", "v1alpha1", "Release"));
    Api::namespaced_with(ns.client(), ns.name(), &ar)
}

fn policy_api(ns: &TestNamespace) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(
        "rewind.dev",
        "v1alpha1",
        "RollbackPolicy",
    ));
    Api::namespaced_with(ns.client(), ns.name(), &ar)
}

fn good_release() -> Value {
    json!({
        "apiVersion": "rewind.dev/v1alpha1", "kind": "Release",
        "metadata": {"name": "shop"},
        "spec": {
            "version": "1.4.0",
            "target": {"kind": "Deployment", "name": "shop"},
            "images": [{"container": "api", "image": "registry.example:5000/shop/api:1.4.0"}]
        }
    })
}

/// Set `path` (dot-separated, numbers index arrays) in a copy of `base` to `value`
/// (`Value::Null` removes the field).
fn with(base: &Value, path: &str, value: Value) -> Value {
    let mut out = base.clone();
    let mut cur = &mut out;
    let parts: Vec<&str> = path.split('.').collect();
    for (i, p) in parts.iter().enumerate() {
        let last = i == parts.len() - 1;
        if let Ok(idx) = p.parse::<usize>() {
            if last {
                cur[idx] = value.clone();
                break;
            }
            cur = &mut cur[idx];
        } else if last {
            if value.is_null() {
                cur.as_object_mut().unwrap().remove(*p);
            } else {
                cur[*p] = value.clone();
            }
            break;
        } else {
            cur = &mut cur[*p];
        }
    }
    out
}

async fn create(api: &Api<DynamicObject>, obj: &Value) -> Result<(), String> {
    let obj: DynamicObject = serde_json::from_value(obj.clone()).unwrap();
    api.create(&PostParams::default(), &obj)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Create each object of `table`; the rows that were not rejected with their message.
async fn rejections(api: &Api<DynamicObject>, table: &[(&str, Value, &str)]) -> Vec<String> {
    let mut failures = Vec::new();
    for (name, obj, want) in table {
        match create(api, obj).await {
            Ok(()) => failures.push(format!("{name}: accepted, want rejected with {want:?}")),
            Err(e) if !e.contains(want) => {
                failures.push(format!("{name}: rejected with {e:?}, want {want:?}"))
            }
            Err(_) => {}
        }
    }
    failures
}

#[tokio::test]
async fn valid_samples_are_accepted() {
    let ns = TestNamespace::new("schema_samples").await;
    operator::install_crds(&ns.client()).await;
    for (file, api) in [
        ("release.yaml", release_api(&ns)),
        ("rollbackpolicy.yaml", policy_api(&ns)),
    ] {
        let text = std::fs::read_to_string(format!(
            "{}/deploy/samples/{file}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        let mut obj: Value = serde_saphyr::from_str(&text).unwrap();
        obj["metadata"]["namespace"] = json!(ns.name());
        create(&api, &obj)
            .await
            .unwrap_or_else(|e| panic!("{file} rejected: {e}"));
    }
}

#[tokio::test]
async fn bad_releases_are_rejected_with_their_rules_message() {
    let ns = TestNamespace::new("schema_bad_releases").await;
    operator::install_crds(&ns.client()).await;
    let api = release_api(&ns);
    let good = good_release();
    let digest = format!("sha256:{}", "a".repeat(64));
    let table: Vec<(&str, Value, &str)> = vec![
        (
            "version not semver",
            with(&good, "spec.version", json!("1.4")),
            "spec.version must be semver",
        ),
        (
            "version with a leading v",
            with(&good, "spec.version", json!("v1.4.0")),
            "spec.version must be semver",
        ),
        (
            "version with leading zeros",
            with(&good, "spec.version", json!("01.4.0")),
            "spec.version must be semver",
        ),
        (
            "image with a scheme",
            with(
                &good,
                "spec.images.0.image",
                json!("https://registry.example/shop/api:1"),
            ),
            "image must be an image reference",
        ),
        (
            "image with upper-case repository",
            with(
                &good,
                "spec.images.0.image",
                json!("registry.example/Shop/API:1"),
            ),
            "image must be an image reference",
        ),
        (
            "image with a short digest",
            with(
                &good,
                "spec.images.0.image",
                json!("registry.example/shop/api@sha256:abc"),
            ),
            "image must be an image reference",
        ),
        (
            "image with a space",
            with(
                &good,
                "spec.images.0.image",
                json!("registry.example/shop/api:1 "),
            ),
            "image must be an image reference",
        ),
        (
            "container not a name",
            with(&good, "spec.images.0.container", json!("API_1")),
            "container must be a container name",
        ),
        (
            "no images",
            with(&good, "spec.images", json!([])),
            "spec.images",
        ),
        (
            "two entries for one container",
            with(
                &good,
                "spec.images",
                json!([{"container": "api", "image": "a:1"}, {"container": "api", "image": "b:1"}]),
            ),
            "Duplicate value",
        ),
        (
            "target kind not Deployment",
            with(&good, "spec.target.kind", json!("StatefulSet")),
            "Unsupported value: \"StatefulSet\"",
        ),
        (
            "migration image malformed",
            with(
                &good,
                "spec.migration",
                json!({"image": "Bad Image", "schemaVersion": "1"}),
            ),
            "migration.image must be an image reference",
        ),
        (
            "version missing",
            with(&good, "spec.version", Value::Null),
            "spec.version: Required value",
        ),
    ];
    let mut failures = rejections(&api, &table).await;
    // These are well-formed and must pass.
    for (name, obj) in [
        (
            "pre-release and build",
            with(&good, "spec.version", json!("2.0.0-rc.1+build.5")),
        ),
        (
            "image by digest",
            with(
                &good,
                "spec.images.0.image",
                json!(format!("registry.example/shop/api@{digest}")),
            ),
        ),
        (
            "docker hub short name",
            with(&good, "spec.images.0.image", json!("nginx:1.27")),
        ),
    ] {
        let obj = with(
            &obj,
            "metadata.name",
            json!(format!("ok-{}", name.replace(' ', "-"))),
        );
        if let Err(e) = create(&api, &obj).await {
            failures.push(format!("{name}: rejected ({e}), want accepted"));
        }
    }
    assert!(
        failures.is_empty(),
        "schema table mismatches:\n{}",
        failures.join("\n")
    );
}

#[tokio::test]
async fn the_target_of_a_release_cannot_change() {
    let ns = TestNamespace::new("schema_target_immutable").await;
    operator::install_crds(&ns.client()).await;
    let api = release_api(&ns);
    create(&api, &good_release()).await.unwrap();
    let patch = json!({"spec": {"target": {"kind": "Deployment", "name": "other"}}});
    let err = api
        .patch("shop", &PatchParams::default(), &Patch::Merge(patch))
        .await
        .expect_err("target change accepted");
    assert!(
        err.to_string().contains("spec.target is immutable"),
        "{err}"
    );
}

#[tokio::test]
async fn bad_policies_are_rejected_with_their_rules_message() {
    let ns = TestNamespace::new("schema_bad_policies").await;
    operator::install_crds(&ns.client()).await;
    let api = policy_api(&ns);
    let good = json!({"apiVersion": "rewind.dev/v1alpha1", "kind": "RollbackPolicy", "metadata": {"name": "p"}, "spec": {}});
    let metric = |fail_when: Value| json!([{"name": "errors", "prometheus": {"address": "http://prom:9090", "query": "up"}, "failWhen": fail_when}]);
    let table: Vec<(&str, Value, &str)> = vec![
        (
            "timeout not a duration",
            with(&good, "spec.readiness", json!({"timeout": "5 minutes"})),
            "readiness.timeout must be a duration",
        ),
        (
            "negative duration",
            with(&good, "spec.cooldown", json!("-5m")),
            "cooldown must be a duration",
        ),
        (
            "guard window in days",
            with(&good, "spec.guardWindow", json!("1d")),
            "guardWindow must be a duration",
        ),
        (
            "percent over 100",
            with(&good, "spec.readiness", json!({"maxUnready": "150%"})),
            "readiness.maxUnready must be a count of pods",
        ),
        (
            "negative count",
            with(&good, "spec.readiness", json!({"maxUnready": -1})),
            "readiness.maxUnready must be a count of pods",
        ),
        (
            "both above and below",
            with(
                &good,
                "spec.metrics",
                metric(json!({"above": 1, "below": 0})),
            ),
            "failWhen needs exactly one of above or below",
        ),
        (
            "neither above nor below",
            with(&good, "spec.metrics", metric(json!({}))),
            "failWhen needs exactly one of above or below",
        ),
        (
            "crash restarts zero",
            with(&good, "spec.crashLoop", json!({"restarts": 0})),
            "should be greater than or equal to 1",
        ),
        (
            "history limit too small",
            with(&good, "spec.historyLimit", json!(1)),
            "should be greater than or equal to 2",
        ),
        (
            "unknown rollback target",
            with(&good, "spec.target", json!("Oldest")),
            "Unsupported value: \"Oldest\"",
        ),
        (
            "prometheus address without scheme",
            with(
                &good,
                "spec.metrics",
                json!([{"name": "e", "prometheus": {"address": "prom:9090", "query": "up"}, "failWhen": {"above": 1}}]),
            ),
            "prometheus.address must be an http:// or https:// URL",
        ),
    ];
    let mut failures = rejections(&api, &table).await;
    let fine = with(
        &with(
            &good,
            "spec.readiness",
            json!({"timeout": "1h30m", "maxUnready": "25%"}),
        ),
        "spec.metrics",
        metric(json!({"below": 0.5})),
    );
    if let Err(e) = create(&api, &fine).await {
        failures.push(format!("valid policy rejected: {e}"));
    }
    assert!(
        failures.is_empty(),
        "schema table mismatches:\n{}",
        failures.join("\n")
    );
}

//! Least privilege, proven: the operator runs with the token of a ServiceAccount bound to
//! exactly the RBAC the chart renders (not as cluster admin), through a deploy and an automatic
//! rollback, with leader election on; the API server's audit log then shows it was refused
//! nothing (no 403) — and that it really was this ServiceAccount that did the work. The
//! migration Jobs' rights (batch jobs: get, list, watch, create; no patch, update, delete or
//! pods/log) are asked of the API server with SubjectAccessReviews for the same account.
//!
//! Two renders are tried: the namespaced mode (`watchNamespaces`: Roles in the watched
//! namespace) and the default cluster mode, whose ClusterRole is bound here with a RoleBinding
//! in the test's namespace only, so the operator cannot touch other tests' namespaces.

mod operator;
mod support;

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{DynamicObject, PostParams};
use kube::discovery::{ApiResource, Discovery, Scope};
use operator::*;
use rewind::api::RollbackPhase;
use serde_json::{Value, json};
use support::*;

/// The RBAC objects (and the ServiceAccount) of a render.
fn rbac_of(objects: &[Value]) -> Vec<Value> {
    objects
        .iter()
        .filter(|o| {
            matches!(
                o["kind"].as_str(),
                Some(
                    "ServiceAccount"
                        | "Role"
                        | "RoleBinding"
                        | "ClusterRole"
                        | "ClusterRoleBinding"
                )
            )
        })
        .cloned()
        .collect()
}

/// Create `objects` as they are (names and namespaces from the render).
async fn create_all(client: &kube::Client, objects: &[Value]) {
    let discovery = Discovery::new(client.clone())
        .run()
        .await
        .expect("API discovery");
    for o in objects {
        let obj: DynamicObject = serde_json::from_value(o.clone()).unwrap();
        let types = obj
            .types
            .clone()
            .expect("rendered objects have apiVersion and kind");
        let gvk = kube::core::GroupVersionKind::try_from(&types).unwrap();
        let (ar, caps): (ApiResource, _) = discovery
            .resolve_gvk(&gvk)
            .unwrap_or_else(|| panic!("the API server does not serve {gvk:?}"));
        let api: kube::Api<DynamicObject> = match caps.scope {
            Scope::Namespaced => kube::Api::namespaced_with(
                client.clone(),
                obj.metadata
                    .namespace
                    .as_deref()
                    .expect("namespaced object without a namespace"),
                &ar,
            ),
            Scope::Cluster => kube::Api::all_with(client.clone(), &ar),
        };
        api.create(&PostParams::default(), &obj)
            .await
            .unwrap_or_else(|e| panic!("creating {} {:?}: {e}", types.kind, obj.metadata.name));
    }
}

/// The ServiceAccount the render runs the operator as.
fn service_account(objects: &[Value]) -> String {
    objects
        .iter()
        .find(|o| o["kind"] == "ServiceAccount")
        .and_then(|o| o["metadata"]["name"].as_str())
        .expect("the chart renders a ServiceAccount")
        .to_owned()
}

/// Start the operator for `ns` as the chart's ServiceAccount, bound as `rbac` says.
async fn operator_as_chart_account(
    ns: &str,
    release: &str,
    rbac: Vec<Value>,
    extra_args: &[&str],
) -> Operator {
    let client = client().await;
    let sa = service_account(&rbac);
    create_all(&client, &rbac).await;
    let token = kube::Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .create_token_request(
            &sa,
            &PostParams::default(),
            &TokenRequest {
                spec: k8s_openapi::api::authentication::v1::TokenRequestSpec {
                    audiences: vec![],
                    expiration_seconds: Some(3600),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .expect("a token for the chart's ServiceAccount")
        .status
        .expect("a token")
        .token;
    let kc = kubeconfig_with_token(&format!("{ns}-{release}"), &token).await;
    let kc = kc.to_string_lossy().into_owned();
    // The Lease the chart grants (its Role names it), as the chart's Deployment passes it.
    let lease = rbac
        .iter()
        .filter(|o| o["kind"] == "Role")
        .flat_map(|o| o["rules"].as_array().cloned().unwrap_or_default())
        .find(|r| r["resources"] == json!(["leases"]) && r.get("resourceNames").is_some())
        .and_then(|r| {
            r["resourceNames"][0]
                .as_str()
                .map(|n| format!("--lease-name={n}"))
        });
    let mut args = vec!["--leader-elect", "--lease-namespace", ns];
    args.extend(lease.as_deref());
    args.extend(extra_args);
    Operator::start_with_args(ns, &args, &[("KUBECONFIG", kc.as_str())])
}

/// What the API server lets the chart's ServiceAccount (in `f`'s namespace) do with Jobs in
/// `ns`: exactly what the migration Jobs need (get, list, watch, create), and no patch, update,
/// delete or pods/log. Asked with SubjectAccessReviews, so it holds whether or not a code path
/// of this test makes those calls (a deploy and a rollback without migrations create no Job).
async fn assert_job_rights(f: &Fixture, ns: &str, sa: &str) {
    use k8s_openapi::api::authorization::v1::{
        ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
    };
    let user = format!("system:serviceaccount:{}:{sa}", f.ns.name());
    let reviews = kube::Api::<SubjectAccessReview>::all(f.ns.client());
    for (group, resource, subresource, verb, allowed) in [
        ("batch", "jobs", "", "get", true),
        ("batch", "jobs", "", "list", true),
        ("batch", "jobs", "", "watch", true),
        ("batch", "jobs", "", "create", true),
        ("batch", "jobs", "", "patch", false),
        ("batch", "jobs", "", "update", false),
        ("batch", "jobs", "", "delete", false),
        ("batch", "jobs", "", "deletecollection", false),
        ("", "pods", "log", "get", false),
    ] {
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(user.clone()),
                resource_attributes: Some(ResourceAttributes {
                    namespace: Some(ns.to_owned()),
                    group: Some(group.to_owned()),
                    resource: Some(resource.to_owned()),
                    subresource: Some(subresource.to_owned()),
                    verb: Some(verb.to_owned()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let answer = reviews
            .create(&PostParams::default(), &review)
            .await
            .expect("creating a SubjectAccessReview")
            .status
            .expect("a SubjectAccessReview's status");
        assert_eq!(
            answer.allowed,
            allowed,
            "{user} {verb} {group}/{resource}{} in {ns}: {answer:?}",
            if subresource.is_empty() {
                String::new()
            } else {
                format!("/{subresource}")
            }
        );
    }
}

/// A deploy, then an automatic rollback, done by the operator; then the audit log: requests
/// by the chart's ServiceAccount were made (it did the work) and none was refused.
async fn deploy_and_roll_back_without_a_403(f: &Fixture, sa: &str) {
    assert_job_rights(f, f.ns.name(), sa).await;
    readyz_ok(f).await;
    f.shop_healthy_on_1_0_0().await;
    // 2.0.0 changes the schema: its up Job gates the rollout, and the rollback from it runs
    // its down Job, both created by the chart's account.
    f.apply_release(
        "2.0.0",
        &loopback_image("2.0.0-crashloop"),
        serde_json::json!({"migration": {
            "image": loopback_image("migrate-2.0.0"),
            "schemaVersion": "2",
            "up": {"args": ["up"]},
            "down": {"args": ["down"]},
        }}),
    )
    .await;
    f.release_until("rolled back from 2.0.0", secs(90), |r| {
        r.status.as_ref().is_some_and(|s| {
            s.rollbacks.len() == 1 && s.rollbacks[0].phase == RollbackPhase::Succeeded
        })
    })
    .await;
    assert_no_403(f, sa).await;
    let created = audit::events()
        .into_iter()
        .filter(|e| {
            e["user"]["username"] == format!("system:serviceaccount:{}:{sa}", f.ns.name()).as_str()
                && e["verb"] == "create"
                && e["objectRef"]["resource"] == "jobs"
                && e["responseStatus"]["code"] == 201
        })
        .count();
    assert_eq!(
        created, 2,
        "the operator created the up and the down Job itself"
    );
}

/// The audit log shows the chart's ServiceAccount did the work and was refused nothing.
async fn assert_no_403(f: &Fixture, sa: &str) {
    audit::flushed(&f.ns.client(), f.ns.name()).await;
    let user = format!("system:serviceaccount:{}:{sa}", f.ns.name());
    let mine: Vec<Value> = audit::events()
        .into_iter()
        .filter(|e| e["user"]["username"] == user.as_str())
        .collect();
    let writes = mine.iter().filter(|e| audit::is_write(e)).count();
    assert!(
        writes >= 3,
        "the operator did the work as {user} (status, Deployment, Events, Lease): {writes} writes"
    );
    let refused: Vec<String> = mine
        .iter()
        .filter(|e| e["responseStatus"]["code"] == 403)
        .map(audit::describe)
        .collect();
    assert!(
        refused.is_empty(),
        "the chart's RBAC refused the operator {} requests:\n{}",
        refused.len(),
        refused.join("\n")
    );
}

async fn readyz_ok(f: &Fixture) {
    f.until_ready(std::time::Instant::now()).await;
}

#[tokio::test]
async fn namespaced_rbac_is_enough_for_a_deploy_and_a_rollback() {
    let release = "rbac-ns";
    let mut sa = String::new();
    let f = Fixture::with_operator("rbac_namespaced", json!({}), async |ns: String| {
        let watch = format!("watchNamespaces={{{ns}}}");
        let objects = chart::render(release, &ns, &[&watch]);
        let rbac = rbac_of(&objects);
        assert!(
            !rbac
                .iter()
                .any(|o| o["kind"] == "ClusterRole" || o["kind"] == "ClusterRoleBinding"),
            "namespaced mode grants nothing cluster-wide: {rbac:#?}"
        );
        sa = service_account(&rbac);
        operator_as_chart_account(&ns, release, rbac, &[]).await
    })
    .await;
    deploy_and_roll_back_without_a_403(&f, &sa).await;
}

#[tokio::test]
async fn the_cluster_roles_rules_are_enough_for_a_deploy_and_a_rollback() {
    let release = "rbac-cluster";
    let mut sa = String::new();
    let mut cluster_role = String::new();
    let f = Fixture::with_operator("rbac_cluster", json!({}), async |ns: String| {
        let objects = chart::render(release, &ns, &[]);
        let mut rbac = rbac_of(&objects);
        // The ClusterRole under a name of this test's own, bound in this namespace only: the
        // same rules, without reaching into other tests' namespaces.
        cluster_role = format!("rewind-test-{ns}");
        let mut bound = Vec::new();
        for o in &mut rbac {
            match o["kind"].as_str() {
                Some("ClusterRole") => {
                    let original = o["metadata"]["name"].as_str().unwrap().to_owned();
                    o["metadata"]["name"] = json!(cluster_role);
                    bound.push(original);
                }
                Some("ClusterRoleBinding") => {
                    *o = json!({
                        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                        "metadata": {"name": format!("{release}-cluster-rules"), "namespace": ns},
                        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": cluster_role},
                        "subjects": o["subjects"].clone(),
                    });
                }
                _ => {}
            }
        }
        assert_eq!(bound.len(), 1, "cluster mode renders one ClusterRole: {rbac:#?}");
        sa = service_account(&rbac);
        operator_as_chart_account(&ns, release, rbac, &[]).await
    })
    .await;
    deploy_and_roll_back_without_a_403(&f, &sa).await;
    let roles: kube::Api<k8s_openapi::api::rbac::v1::ClusterRole> = kube::Api::all(f.ns.client());
    let _ = roles
        .delete(&cluster_role, &kube::api::DeleteParams::default())
        .await;
}

/// `watchNamespaces` with two namespaces: one operator, a Role in each, and it acts in both.
#[tokio::test]
async fn one_operator_watching_two_namespaces_acts_in_both_with_their_roles() {
    use kube::api::PostParams;
    let release = "rbac-two";
    let other = TestNamespace::new("rbac_two_other").await;
    let other_name = other.name().to_owned();
    let mut sa = String::new();
    let f = Fixture::with_operator("rbac_two", json!({}), async |ns: String| {
        let watch = format!("watchNamespaces={{{ns},{other_name}}}");
        let rbac = rbac_of(&chart::render(release, &ns, &[&watch]));
        assert_eq!(
            rbac.iter().filter(|o| o["kind"] == "Role").count(),
            3,
            "a Role in each watched namespace and the Lease's: {rbac:#?}"
        );
        sa = service_account(&rbac);
        operator_as_chart_account(&ns, release, rbac, &["--namespace", &other_name]).await
    })
    .await;
    assert_job_rights(&f, f.ns.name(), &sa).await;
    assert_job_rights(&f, other.name(), &sa).await;
    readyz_ok(&f).await;
    let web = deployment("web", 1, &[&loopback_image("1.0.0")]);
    other
        .api::<k8s_openapi::api::apps::v1::Deployment>()
        .create(&PostParams::default(), &web)
        .await
        .expect("creating Deployment web");
    let r: rewind::api::Release = serde_json::from_value(json!({
        "apiVersion": "rewind.dev/v1alpha1", "kind": "Release",
        "metadata": {"name": "web"},
        "spec": {"version": "1.0.0", "target": {"kind": "Deployment", "name": "web"},
                 "images": [{"container": "app", "image": loopback_image("1.0.0")}]}
    }))
    .unwrap();
    let releases = other.api::<rewind::api::Release>();
    releases
        .create(&PostParams::default(), &r)
        .await
        .expect("creating Release web");
    wait_for(
        &releases,
        "web",
        "Healthy in the second namespace",
        secs(90),
        |r| phase(r) == "Healthy",
    )
    .await;
    f.shop_healthy_on_1_0_0().await;
    assert_no_403(&f, &sa).await;
}

/// Without the Lease's Role (leader election forgotten in the chart, the flag kept), the replica
/// can never lead: /readyz says so (503, naming the refusal) instead of a Ready standby forever.
#[tokio::test]
async fn a_replica_that_cannot_read_the_lease_is_not_ready_and_says_why() {
    let release = "rbac-nolease";
    let f = Fixture::with_operator("rbac_nolease", json!({}), async |ns: String| {
        let watch = format!("watchNamespaces={{{ns}}}");
        let rbac = rbac_of(&chart::render(
            release,
            &ns,
            &[&watch, "leaderElection.enabled=false", "replicaCount=1"],
        ));
        operator_as_chart_account(&ns, release, rbac, &[]).await
    })
    .await;
    let deadline = std::time::Instant::now() + secs(20);
    loop {
        let body = f.op.readyz_body().unwrap_or_default();
        if f.op.readyz() == Some(503) && body.contains("cannot acquire lease") {
            assert!(body.contains("forbidden"), "{body}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "/readyz should be 503 naming the refused Lease; it says {body:?}; log: {}",
            f.op.log.display()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

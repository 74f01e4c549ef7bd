//! The Helm chart: it lints strictly, its schema refuses unknown values, its render is what an
//! SRE would approve (2 replicas with leader election, a PDB, RollingUpdate, probes, the
//! Restricted security context, the downward API, exactly the RBAC the code calls — cluster
//! wide or per namespace), the API server accepts it under `enforce: restricted` (and refuses
//! a privileged variant, so the check can fail), and deploy/rewind.yaml is its render.
//! Needs helm (tests/tools/build.sh builds it) and, for the Restricted check, the local cluster.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};
use support::chart::{self, of_kind};
use support::*;

/// (apiGroup, resource, verb) of every rule, resourceNames aside.
fn grants(rules: &Value) -> BTreeSet<(String, String, String)> {
    let mut out = BTreeSet::new();
    for rule in rules.as_array().expect("rules") {
        let list = |k: &str| -> Vec<String> {
            rule[k]
                .as_array()
                .map(|a| a.iter().map(|v| v.as_str().unwrap().to_owned()).collect())
                .unwrap_or_default()
        };
        for g in list("apiGroups") {
            for r in list("resources") {
                for v in list("verbs") {
                    out.insert((g.clone(), r.clone(), v));
                }
            }
        }
    }
    out
}

fn set(items: &[(&str, &str, &[&str])]) -> BTreeSet<(String, String, String)> {
    items
        .iter()
        .flat_map(|(g, r, verbs)| {
            verbs
                .iter()
                .map(move |v| (g.to_string(), r.to_string(), v.to_string()))
        })
        .collect()
}

/// What the operator calls in a namespace it watches, exactly (tests/rbac.rs proves it is
/// enough; this proves it is no more).
fn operator_grants(pull_secrets: bool) -> BTreeSet<(String, String, String)> {
    let mut g = set(&[
        ("rewind.dev", "releases", &["get", "list", "watch"]),
        ("rewind.dev", "rollbackpolicies", &["get", "list", "watch"]),
        ("rewind.dev", "releases/status", &["patch"]),
        ("rewind.dev", "rollbackpolicies/status", &["patch"]),
        ("apps", "deployments", &["get", "list", "watch", "patch"]),
        ("apps", "replicasets", &["list", "watch"]),
        ("", "pods", &["list", "watch"]),
        ("events.k8s.io", "events", &["create", "patch"]),
        // Migration Jobs: watched (label rewind.dev/release) and created, never patched or
        // deleted; no pods/log either (the message comes from the pod's status).
        ("batch", "jobs", &["get", "list", "watch", "create"]),
    ]);
    if pull_secrets {
        g.extend(set(&[
            ("", "secrets", &["get"]),
            ("", "serviceaccounts", &["get"]),
        ]));
    }
    g
}

fn deployment(objects: &[Value]) -> &Value {
    let d = of_kind(objects, "Deployment");
    assert_eq!(d.len(), 1, "one Deployment");
    d[0]
}

fn args(objects: &[Value]) -> Vec<String> {
    deployment(objects)["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn lints_strictly_with_default_and_namespaced_values() {
    for extra in [
        vec![],
        vec![
            "--set",
            "watchNamespaces={team-a,team-b}",
            "--set",
            "registry.readPullSecrets=false",
        ],
    ] {
        let mut a = vec![
            "lint",
            "--strict",
            "charts/rewind",
            "--kube-version",
            chart::KUBE_VERSION,
        ];
        a.extend(extra.iter().copied());
        let out = chart::run(&a);
        assert!(
            out.status.success(),
            "helm lint --strict {extra:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn an_unknown_or_misspelt_value_is_an_error() {
    for (bad, says) in [
        ("replicas=3", "replicas"),
        ("image.tga=1.0", "tga"),
        ("leaderElection.leaseDuration=15", "leaseDuration"),
        ("logFormat=yaml", "logFormat"),
    ] {
        let out = chart::try_render("rewind", "rewind-system", &[bad]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "--set {bad} was accepted");
        assert!(err.contains(says), "--set {bad}: the error names it: {err}");
    }
    let single = chart::render(
        "rewind",
        "rewind-system",
        &["leaderElection.enabled=false", "replicaCount=1"],
    );
    assert_eq!(
        deployment(&single)["spec"]["strategy"],
        json!({"type": "Recreate"}),
        "without leader election an upgrade must not overlap two active operators"
    );
    assert!(!args(&single).contains(&"--leader-elect".to_owned()));
    let out = chart::try_render("rewind", "rewind-system", &["leaderElection.enabled=false"]);
    assert!(
        !out.status.success()
            && String::from_utf8_lossy(&out.stderr).contains("needs leaderElection.enabled"),
        "2 replicas without leader election would both act: refused"
    );
}

#[test]
fn the_default_render_is_production_shaped() {
    let objects = chart::render("rewind", "rewind-system", &[]);
    let d = deployment(&objects);
    let spec = &d["spec"];
    assert_eq!(spec["replicas"], 2);
    assert_eq!(spec["strategy"]["type"], "RollingUpdate");
    assert_eq!(spec["strategy"]["rollingUpdate"]["maxUnavailable"], 0);
    let selector = &spec["selector"]["matchLabels"];
    assert_eq!(selector["app.kubernetes.io/name"], "rewind");
    assert_eq!(selector["app.kubernetes.io/instance"], "rewind");
    let pod = &spec["template"]["spec"];
    let labels = &spec["template"]["metadata"]["labels"];
    for l in [
        "app.kubernetes.io/name",
        "app.kubernetes.io/instance",
        "app.kubernetes.io/version",
        "app.kubernetes.io/managed-by",
        "helm.sh/chart",
    ] {
        assert!(labels.get(l).is_some(), "pod label {l}: {labels}");
    }
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["runAsUser"], 65532);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let c = &pod["containers"][0];
    assert_eq!(c["image"], "registry.example/rewind/rewind:0.1.0");
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["ports"][0]["name"], "metrics");
    let env: Vec<(&str, &str)> = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| {
            Some((
                e["name"].as_str()?,
                e["valueFrom"]["fieldRef"]["fieldPath"].as_str()?,
            ))
        })
        .collect();
    assert!(env.contains(&("POD_NAME", "metadata.name")), "{env:?}");
    assert!(
        env.contains(&("POD_NAMESPACE", "metadata.namespace")),
        "{env:?}"
    );
    let a = args(&objects);
    assert!(a.contains(&"--leader-elect".to_owned()), "{a:?}");
    assert!(!a.iter().any(|x| x.starts_with("--namespace")), "{a:?}");

    let pdb = of_kind(&objects, "PodDisruptionBudget");
    assert_eq!(pdb.len(), 1);
    assert_eq!(pdb[0]["spec"]["maxUnavailable"], 1);
    assert_eq!(of_kind(&objects, "Service").len(), 1);
    assert!(
        of_kind(&objects, "ServiceMonitor").is_empty(),
        "optional, off by default"
    );

    let cluster_roles = of_kind(&objects, "ClusterRole");
    assert_eq!(cluster_roles.len(), 1);
    assert_eq!(
        grants(&cluster_roles[0]["rules"]),
        operator_grants(true),
        "the ClusterRole grants exactly what the code calls"
    );
    assert_eq!(of_kind(&objects, "ClusterRoleBinding").len(), 1);
    let roles = of_kind(&objects, "Role");
    assert_eq!(roles.len(), 1, "only the Lease's Role");
    assert_eq!(roles[0]["metadata"]["namespace"], "rewind-system");
    assert_eq!(
        grants(&roles[0]["rules"]),
        set(&[(
            "coordination.k8s.io",
            "leases",
            &["create", "get", "update"]
        )])
    );
    assert!(
        roles[0]["rules"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["resourceNames"] == json!(["rewind-leader"])
                && r["verbs"] == json!(["get", "update"])),
        "get and update only on the chart's Lease: {}",
        roles[0]["rules"]
    );
}

#[test]
fn namespaced_mode_grants_nothing_cluster_wide_and_watches_only_those() {
    let objects = chart::render(
        "rewind",
        "rewind-system",
        &[
            "watchNamespaces={team-a,team-b}",
            "registry.readPullSecrets=false",
        ],
    );
    assert!(of_kind(&objects, "ClusterRole").is_empty());
    assert!(of_kind(&objects, "ClusterRoleBinding").is_empty());
    let roles = of_kind(&objects, "Role");
    let in_ns = |ns: &str| -> Vec<&&Value> {
        roles
            .iter()
            .filter(|r| r["metadata"]["namespace"] == ns)
            .collect()
    };
    for ns in ["team-a", "team-b"] {
        let r = in_ns(ns);
        assert_eq!(r.len(), 1, "one Role in {ns}");
        assert_eq!(
            grants(&r[0]["rules"]),
            operator_grants(false),
            "without pull secrets: no Secrets, no ServiceAccounts"
        );
        let bindings: Vec<&Value> = of_kind(&objects, "RoleBinding")
            .into_iter()
            .filter(|b| b["metadata"]["namespace"] == ns)
            .collect();
        assert_eq!(bindings.len(), 1, "one RoleBinding in {ns}");
        assert_eq!(bindings[0]["subjects"][0]["namespace"], "rewind-system");
    }
    assert_eq!(in_ns("rewind-system").len(), 1, "the Lease's Role");
    let a = args(&objects);
    for want in [
        "--namespace=team-a",
        "--namespace=team-b",
        "--read-pull-secrets=false",
    ] {
        assert!(a.contains(&want.to_owned()), "{want} in {a:?}");
    }
}

/// `kubectl apply --dry-run=server --warnings-as-errors` of `objects` into `ns`.
fn dry_run(objects: &[Value], ns: &str) -> std::process::Output {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bin = Command::new(root.join("tests/cluster/build.sh"))
        .arg("--print-bin-dir")
        .output()
        .expect("tests/cluster/build.sh --print-bin-dir");
    let kubectl = Path::new(String::from_utf8_lossy(&bin.stdout).trim()).join("kubectl");
    let text: String = objects
        .iter()
        .filter(|o| o["metadata"]["namespace"] == ns)
        .map(|o| format!("---\n{}\n", serde_json::to_string(o).unwrap()))
        .collect();
    let mut child = Command::new(&kubectl)
        .args([
            "apply",
            "--dry-run=server",
            "--warnings-as-errors",
            "-f",
            "-",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running {}: {e}. {CLUSTER_HINT}", kubectl.display()));
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[tokio::test]
async fn the_api_server_accepts_the_render_under_the_restricted_standard() {
    let ns = TestNamespace::new("chart_restricted").await;
    Api::<Namespace>::all(ns.client())
        .patch(
            ns.name(),
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {
                "pod-security.kubernetes.io/enforce": "restricted",
                "pod-security.kubernetes.io/warn": "restricted",
            }}})),
        )
        .await
        .expect("labelling the namespace restricted");
    let objects = chart::render("rewind", ns.name(), &[]);
    let out = dry_run(&objects, ns.name());
    assert!(
        out.status.success(),
        "the chart's objects under enforce/warn restricted: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The check can fail: a container allowed to escalate privileges is refused.
    let objects = chart::render(
        "rewind",
        ns.name(),
        &["containerSecurityContext.allowPrivilegeEscalation=true"],
    );
    let out = dry_run(&objects, ns.name());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && said.contains("allowPrivilegeEscalation"),
        "a privileged variant must be refused: {said}"
    );
}

#[test]
fn deploy_manifests_are_the_charts_render() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(root.join("deploy/render.sh"))
        .output()
        .expect("running deploy/render.sh");
    assert!(
        out.status.success(),
        "deploy/render.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let committed = std::fs::read_to_string(root.join("deploy/rewind.yaml")).unwrap();
    assert!(
        committed == String::from_utf8_lossy(&out.stdout),
        "deploy/rewind.yaml differs from the chart's render: run `make deploy` and commit"
    );
    let objects = chart::parse(&committed);
    let ns = of_kind(&objects, "Namespace");
    assert_eq!(
        ns[0]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        "restricted"
    );
}

#[test]
fn the_optional_prometheus_rule_has_rewinds_alerts() {
    assert!(
        chart::of_kind(
            &chart::render("rewind", "rewind-system", &[]),
            "PrometheusRule"
        )
        .is_empty(),
        "off by default"
    );
    let objects = chart::render(
        "rewind",
        "rewind-system",
        &[
            "prometheusRule.enabled=true",
            "prometheusRule.alertLabels.team=platform",
        ],
    );
    let rules = chart::of_kind(&objects, "PrometheusRule");
    assert_eq!(rules.len(), 1);
    let alerts: Vec<Value> = rules[0]["spec"]["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .collect();
    let names: BTreeSet<&str> = alerts.iter().filter_map(|a| a["alert"].as_str()).collect();
    for want in [
        "RewindReleaseRolledBack",
        "RewindReleaseDegraded",
        "RewindReleaseFailed",
        "RewindMigrationFailed",
        "RewindNotReady",
    ] {
        assert!(names.contains(want), "{want} in {names:?}");
    }
    for a in &alerts {
        let expr = a["expr"].as_str().unwrap_or_default();
        assert!(expr.contains("rewind_"), "{a}");
        assert_eq!(a["labels"]["team"], "platform", "{a}");
    }
    let rolled_back = alerts
        .iter()
        .find(|a| a["alert"] == "RewindReleaseRolledBack")
        .unwrap();
    assert!(
        rolled_back["expr"]
            .as_str()
            .unwrap()
            .contains("rewind_release_info{phase=\"RolledBack\"}"),
        "{rolled_back}"
    );
}

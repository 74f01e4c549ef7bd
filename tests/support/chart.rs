//! The Helm chart (charts/rewind) as the tests see it: helm built from its pinned module by
//! tests/tools/build.sh, and renders parsed into JSON values.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// The Kubernetes version renders are made for (the local cluster's).
pub const KUBE_VERSION: &str = "1.34.0";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The helm binary, built (once, cached) by tests/tools/build.sh from tests/tools/helm; asked
/// once per test process.
pub fn helm() -> PathBuf {
    static HELM: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    HELM.get_or_init(build_helm).clone()
}

fn build_helm() -> PathBuf {
    let out = Command::new(root().join("tests/tools/build.sh"))
        .arg("helm")
        .output()
        .expect("running tests/tools/build.sh helm");
    assert!(
        out.status.success(),
        "cannot build helm with tests/tools/build.sh helm (it needs Go and the Go module proxy): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Run helm with `args` (the chart's path is `charts/rewind` under the repository).
pub fn run(args: &[&str]) -> Output {
    Command::new(helm())
        .current_dir(root())
        .args(args)
        .output()
        .expect("running helm")
}

/// `helm template` of the chart as release `release` in `namespace`, with `--set` values;
/// panics with helm's message when it fails.
pub fn render(release: &str, namespace: &str, set: &[&str]) -> Vec<Value> {
    let out = try_render(release, namespace, set);
    assert!(
        out.status.success(),
        "helm template failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    parse(&String::from_utf8(out.stdout).expect("helm prints UTF-8"))
}

/// `helm template`, as it went.
pub fn try_render(release: &str, namespace: &str, set: &[&str]) -> Output {
    let mut args = vec![
        "template",
        release,
        "charts/rewind",
        "--namespace",
        namespace,
        "--kube-version",
        KUBE_VERSION,
    ];
    for s in set {
        args.extend(["--set", s]);
    }
    run(&args)
}

/// The objects of a multi-document YAML text.
pub fn parse(text: &str) -> Vec<Value> {
    text.split("\n---")
        .filter_map(|doc| serde_saphyr::from_str::<Value>(doc).ok())
        .filter(|v| v.is_object() && v.get("kind").is_some())
        .collect()
}

/// The objects of `kind`.
pub fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

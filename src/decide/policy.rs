//! The policy a decision works with: a `RollbackPolicySpec` with every default filled in.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::api::{RollbackPolicySpec, RollbackTarget};

/// Every knob of a policy, defaults applied.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    /// Roll back on failure (false: detect and record only).
    pub automatic: bool,
    /// Revisions kept in history.
    pub history_limit: usize,
    /// Which revision to roll back to.
    pub target: RollbackTarget,
    /// A new revision must be available this soon.
    pub readiness_timeout: Duration,
    /// After healthy, NotReady this long counts.
    pub unready_for: Duration,
    /// Pods allowed NotReady that long.
    pub max_unready: IntOrString,
    /// Restarts that make a crash loop.
    pub crash_loop_restarts: i32,
    /// How long a pod may fail to pull.
    pub image_pull_fail_for: Duration,
    /// Act on ProgressDeadlineExceeded.
    pub progress_deadline: bool,
    /// Guarding after healthy.
    pub guard_window: Duration,
    /// Minimum gap between automatic rollbacks.
    pub cooldown: Duration,
    /// Refuse to deploy what cannot be pinned from the registry first.
    pub strict_digests: bool,
    /// Names of the metric checks the policy declares (not evaluated yet).
    pub metrics: Vec<String>,
}

/// Finished rollbacks kept in `status.rollbacks`.
pub const ROLLBACKS_KEPT: usize = 10;

impl Default for Policy {
    fn default() -> Self {
        Policy {
            automatic: true,
            history_limit: 10,
            target: RollbackTarget::LastHealthy,
            readiness_timeout: Duration::from_secs(5 * 60),
            unready_for: Duration::from_secs(30),
            max_unready: IntOrString::Int(1),
            crash_loop_restarts: 3,
            image_pull_fail_for: Duration::from_secs(2 * 60),
            progress_deadline: true,
            guard_window: Duration::from_secs(15 * 60),
            cooldown: Duration::from_secs(10 * 60),
            strict_digests: false,
            metrics: Vec::new(),
        }
    }
}

impl From<&RollbackPolicySpec> for Policy {
    fn from(spec: &RollbackPolicySpec) -> Self {
        let d = Policy::default();
        let readiness = spec.readiness.clone().unwrap_or_default();
        Policy {
            automatic: spec.automatic.unwrap_or(d.automatic),
            history_limit: spec
                .history_limit
                .map_or(d.history_limit, |n| n.max(2) as usize),
            target: spec.target.unwrap_or(d.target),
            readiness_timeout: readiness.timeout.map_or(d.readiness_timeout, |t| t.get()),
            unready_for: readiness.unready_for.map_or(d.unready_for, |t| t.get()),
            max_unready: readiness.max_unready.unwrap_or(d.max_unready),
            crash_loop_restarts: spec
                .crash_loop
                .as_ref()
                .and_then(|c| c.restarts)
                .unwrap_or(d.crash_loop_restarts),
            image_pull_fail_for: spec
                .image_pull
                .as_ref()
                .and_then(|p| p.fail_for.as_ref())
                .map_or(d.image_pull_fail_for, |t| t.get()),
            progress_deadline: spec.progress_deadline.unwrap_or(d.progress_deadline),
            guard_window: spec
                .guard_window
                .as_ref()
                .map_or(d.guard_window, |t| t.get()),
            cooldown: spec.cooldown.as_ref().map_or(d.cooldown, |t| t.get()),
            strict_digests: spec.digest_resolution == Some(crate::api::DigestResolution::Strict),
            metrics: spec.metrics.iter().map(|m| m.name.clone()).collect(),
        }
    }
}

impl Policy {
    /// How many of `replicas` pods may be NotReady past `unready_for` (percent rounds down,
    /// as a Deployment's maxUnavailable does).
    pub fn max_unready_of(&self, replicas: i32) -> i32 {
        match &self.max_unready {
            IntOrString::Int(n) => (*n).max(0),
            IntOrString::String(s) => {
                let pct: i32 = s.trim_end_matches('%').parse().unwrap_or(0);
                replicas.max(0) * pct / 100
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{CrashLoopPolicy, ReadinessPolicy};

    #[test]
    fn empty_spec_gives_the_documented_defaults() {
        assert_eq!(
            Policy::from(&RollbackPolicySpec::default()),
            Policy::default()
        );
        let d = Policy::default();
        assert_eq!(d.readiness_timeout, Duration::from_secs(300));
        assert_eq!(d.crash_loop_restarts, 3);
    }

    #[test]
    fn spec_values_override_defaults() {
        let spec = RollbackPolicySpec {
            automatic: Some(false),
            readiness: Some(ReadinessPolicy {
                timeout: Some("20s".parse().unwrap()),
                max_unready: Some(IntOrString::String("50%".into())),
                ..Default::default()
            }),
            crash_loop: Some(CrashLoopPolicy { restarts: Some(5) }),
            ..Default::default()
        };
        let p = Policy::from(&spec);
        assert!(!p.automatic);
        assert_eq!(p.readiness_timeout, Duration::from_secs(20));
        assert_eq!(p.unready_for, Duration::from_secs(30));
        assert_eq!(p.crash_loop_restarts, 5);
        assert_eq!(p.max_unready_of(4), 2);
        assert_eq!(p.max_unready_of(3), 1);
    }

    #[test]
    fn max_unready_counts_and_percents() {
        let table = [
            (IntOrString::Int(1), 3, 1),
            (IntOrString::String("0%".into()), 10, 0),
            (IntOrString::String("100%".into()), 3, 3),
            (IntOrString::String("25%".into()), 3, 0),
        ];
        for (max, replicas, want) in table {
            let p = Policy {
                max_unready: max.clone(),
                ..Policy::default()
            };
            assert_eq!(p.max_unready_of(replicas), want, "{max:?} of {replicas}");
        }
    }
}

/// Why a Release's policy cannot be resolved (reported as `PolicyError`, never guessed).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// `spec.policyRef` names a policy that does not exist in the Release's namespace.
    #[error(
        "spec.policyRef names RollbackPolicy {name} but there is none in namespace {namespace}"
    )]
    RefNotFound {
        /// The policy named.
        name: String,
        /// The Release's namespace.
        namespace: String,
    },
    /// More than one policy's selector matches the Release.
    #[error(
        "RollbackPolicies {} all select this Release; set spec.policyRef or make their selectors disjoint",
        .0.join(" and ")
    )]
    Ambiguous(Vec<String>),
}

/// The policy for `release` among the `policies` of its namespace: its `policyRef`, else the
/// one policy whose selector matches its labels, else the defaults. Two matching policies are
/// an error, never a silent pick.
pub fn resolve(
    release: &crate::api::Release,
    policies: &[std::sync::Arc<crate::api::RollbackPolicy>],
) -> Result<Policy, PolicyError> {
    use kube::{ResourceExt, core::SelectorExt};
    let ns = release.namespace();
    let mine = policies.iter().filter(|p| p.namespace() == ns);
    if let Some(r) = &release.spec.policy_ref {
        return mine
            .clone()
            .find(|p| p.name_any() == r.name)
            .map(|p| Policy::from(&p.spec))
            .ok_or_else(|| PolicyError::RefNotFound {
                name: r.name.clone(),
                namespace: ns.unwrap_or_default(),
            });
    }
    let labels = release.labels();
    let matching: Vec<_> = mine
        .filter(|p| {
            p.spec.selector.as_ref().is_some_and(|s| {
                let selects_something = s.match_labels.as_ref().is_some_and(|m| !m.is_empty())
                    || s.match_expressions.as_ref().is_some_and(|e| !e.is_empty());
                selects_something
                    && kube::core::Selector::try_from(s.clone())
                        .is_ok_and(|sel| sel.matches(labels))
            })
        })
        .collect();
    match matching.as_slice() {
        [] => Ok(Policy::default()),
        [one] => Ok(Policy::from(&one.spec)),
        many => Err(PolicyError::Ambiguous(
            many.iter().map(|p| p.name_any()).collect(),
        )),
    }
}

#[cfg(test)]
mod resolve_tests {
    use super::*;
    use crate::api::{PolicyRef, Release, ReleaseSpec, RollbackPolicy, RollbackPolicySpec};
    use std::sync::Arc;

    fn release(labels: &[(&str, &str)], policy_ref: Option<&str>) -> Release {
        let mut r = Release::new(
            "shop",
            ReleaseSpec {
                version: "1.0.0".into(),
                target: crate::api::TargetRef {
                    kind: Default::default(),
                    name: "shop".into(),
                },
                images: vec![],
                source: None,
                migration: None,
                policy_ref: policy_ref.map(|n| PolicyRef { name: n.into() }),
                paused: false,
            },
        );
        r.metadata.namespace = Some("ns".into());
        r.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        r
    }

    fn policy(
        name: &str,
        ns: &str,
        match_labels: &[(&str, &str)],
        restarts: i32,
    ) -> Arc<RollbackPolicy> {
        let mut p = RollbackPolicy::new(
            name,
            RollbackPolicySpec {
                selector: Some(
                    k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector {
                        match_labels: Some(
                            match_labels
                                .iter()
                                .map(|(k, v)| (k.to_string(), v.to_string()))
                                .collect(),
                        ),
                        match_expressions: None,
                    },
                ),
                crash_loop: Some(crate::api::CrashLoopPolicy {
                    restarts: Some(restarts),
                }),
                ..Default::default()
            },
        );
        p.metadata.namespace = Some(ns.into());
        Arc::new(p)
    }

    #[test]
    fn picks_by_ref_then_selector_then_defaults() {
        let web = policy("web", "ns", &[("tier", "web")], 5);
        let other_ns = policy("web2", "elsewhere", &[("tier", "web")], 7);
        let all = vec![web.clone(), other_ns];
        assert_eq!(
            resolve(&release(&[("tier", "web")], None), &all)
                .unwrap()
                .crash_loop_restarts,
            5
        );
        assert_eq!(
            resolve(&release(&[("tier", "db")], None), &all).unwrap(),
            Policy::default()
        );
        assert_eq!(
            resolve(&release(&[], Some("web")), &all)
                .unwrap()
                .crash_loop_restarts,
            5
        );
        let err = resolve(&release(&[], Some("web2")), &all)
            .unwrap_err()
            .to_string();
        assert!(err.contains("none in namespace ns"), "{err}");
    }

    #[test]
    fn two_matching_policies_are_an_error() {
        let all = vec![
            policy("a", "ns", &[("tier", "web")], 5),
            policy("b", "ns", &[], 6),
            policy("c", "ns", &[("app", "shop")], 7),
        ];
        let err = resolve(&release(&[("tier", "web"), ("app", "shop")], None), &all)
            .unwrap_err()
            .to_string();
        assert!(err.contains("a and c"), "{err}");
    }
}

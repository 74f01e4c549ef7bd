//! Which policy a Release has: its `policyRef`, else the one policy whose selector matches its
//! labels, else the defaults; and how a selector is evaluated (only the operators the schema
//! allows; one that cannot be evaluated is an error when it could decide the match).

use std::collections::BTreeMap;

use super::{
    policy::{Policy, PolicyError},
    text::{NAME_MAX, bounded},
};
use crate::api::{PolicySelector, Release, RollbackPolicy, SelectorRequirement};

/// A requirement of a selector as Rewind evaluates it.
enum Requirement<'a> {
    In(&'a str, &'a [String]),
    NotIn(&'a str, &'a [String]),
    Exists(&'a str),
    DoesNotExist(&'a str),
}

impl<'a> Requirement<'a> {
    fn parse(r: &'a SelectorRequirement, i: usize) -> Result<Self, PolicyError> {
        let values = r.values.as_deref().unwrap_or_default();
        let bad = |problem: &str| PolicyError::BadValue {
            field: format!("selector.matchExpressions[{i}]"),
            value: bounded(&format!("{} {}", r.key, r.operator), NAME_MAX),
            problem: problem.into(),
        };
        match (r.operator.as_str(), values.is_empty()) {
            ("In", false) => Ok(Requirement::In(&r.key, values)),
            ("NotIn", false) => Ok(Requirement::NotIn(&r.key, values)),
            ("Exists", true) => Ok(Requirement::Exists(&r.key)),
            ("DoesNotExist", true) => Ok(Requirement::DoesNotExist(&r.key)),
            ("In" | "NotIn", true) => Err(bad("In and NotIn need at least one value")),
            ("Exists" | "DoesNotExist", false) => {
                Err(bad("Exists and DoesNotExist take no values"))
            }
            _ => Err(bad(
                "the operator must be In, NotIn, Exists or DoesNotExist",
            )),
        }
    }

    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            Requirement::In(k, vs) => labels.get(*k).is_some_and(|v| vs.contains(v)),
            Requirement::NotIn(k, vs) => labels.get(*k).is_none_or(|v| !vs.contains(v)),
            Requirement::Exists(k) => labels.contains_key(*k),
            Requirement::DoesNotExist(k) => !labels.contains_key(*k),
        }
    }
}

/// Every requirement of `selector` can be evaluated.
pub(super) fn check_selector(selector: &PolicySelector) -> Result<(), PolicyError> {
    for (i, r) in selector.match_expressions.iter().flatten().enumerate() {
        Requirement::parse(r, i)?;
    }
    Ok(())
}

/// Whether `selector` selects a Release with `labels`. An empty selector selects none. A
/// requirement that cannot be evaluated is an error only when it decides: when every other
/// part of the selector matches.
pub fn selects(
    selector: &PolicySelector,
    labels: &BTreeMap<String, String>,
) -> Result<bool, PolicyError> {
    let match_labels = selector.match_labels.as_ref().filter(|m| !m.is_empty());
    let expressions = selector.match_expressions.as_deref().unwrap_or_default();
    if match_labels.is_none() && expressions.is_empty() {
        return Ok(false);
    }
    if match_labels.is_some_and(|m| m.iter().any(|(k, v)| labels.get(k) != Some(v))) {
        return Ok(false);
    }
    let mut undecided = None;
    for (i, r) in expressions.iter().enumerate() {
        match Requirement::parse(r, i) {
            Ok(req) if !req.matches(labels) => return Ok(false),
            Ok(_) => {}
            Err(e) => {
                undecided.get_or_insert(e);
            }
        }
    }
    match undecided {
        Some(e) => Err(e),
        None => Ok(true),
    }
}

/// The policy for `release` among the `policies` of its namespace: its `policyRef`, else the
/// one policy whose selector matches its labels, else the defaults. Two matching policies are
/// an error, never a silent pick; so is an invalid policy that governs the Release, and one
/// whose selector cannot be evaluated but might select it. Policies are taken by name, so
/// the same cluster state always gives the same answer (and the same message).
pub fn resolve(
    release: &Release,
    policies: &[std::sync::Arc<RollbackPolicy>],
) -> Result<Policy, PolicyError> {
    use kube::ResourceExt;
    let ns = release.namespace();
    let mut mine: Vec<&RollbackPolicy> = policies
        .iter()
        .map(|p| &**p)
        .filter(|p| p.namespace() == ns)
        .collect();
    mine.sort_by_key(|p| p.name_any());
    if let Some(r) = &release.spec.policy_ref {
        let p = mine
            .iter()
            .find(|p| p.name_any() == r.name)
            .ok_or_else(|| PolicyError::RefNotFound {
                name: bounded(&r.name, NAME_MAX),
                namespace: ns.clone().unwrap_or_default(),
            })?;
        return Policy::try_from(&p.spec)
            .map_err(|e| e.in_policy(p.name_any(), "spec.policyRef names"));
    }
    let labels = release.labels();
    let mut matching = Vec::new();
    for p in mine {
        let Some(selector) = &p.spec.selector else {
            continue;
        };
        match selects(selector, labels) {
            Ok(true) => matching.push(p),
            Ok(false) => {}
            Err(e) => return Err(e.in_policy(p.name_any(), "may select")),
        }
    }
    match matching.as_slice() {
        [] => Ok(Policy::default()),
        [one] => Policy::try_from(&one.spec).map_err(|e| e.in_policy(one.name_any(), "selects")),
        many => Err(PolicyError::Ambiguous(
            many.iter().map(|p| p.name_any()).collect(),
        )),
    }
}

#[cfg(test)]
mod tests {
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
                selector: Some(crate::api::PolicySelector {
                    match_labels: Some(
                        match_labels
                            .iter()
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                            .collect(),
                    ),
                    match_expressions: None,
                }),
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

    fn with_spec(p: Arc<RollbackPolicy>, json: serde_json::Value) -> Arc<RollbackPolicy> {
        let mut p = (*p).clone();
        let selector = p.spec.selector.take();
        p.spec = serde_json::from_value(json).unwrap();
        if p.spec.selector.is_none() {
            p.spec.selector = selector;
        }
        Arc::new(p)
    }

    #[test]
    fn an_invalid_policy_that_governs_a_release_is_an_error_naming_it() {
        let bad = with_spec(
            policy("bad", "ns", &[("tier", "web")], 5),
            serde_json::json!({"readiness": {"timeout": "0s"}}),
        );
        let all = vec![bad];
        for r in [release(&[("tier", "web")], None), release(&[], Some("bad"))] {
            let err = resolve(&r, &all).unwrap_err();
            assert!(matches!(err, PolicyError::Invalid { .. }), "{err:?}");
            let msg = err.to_string();
            assert!(
                msg.starts_with("RollbackPolicy bad, which ")
                    && msg.contains("readiness.timeout is 0s; it must be from 5s to 24h"),
                "{msg}"
            );
        }
        // A Release it does not select is not affected.
        assert_eq!(
            resolve(&release(&[("tier", "db")], None), &all),
            Ok(Policy::default())
        );
    }

    /// An unknown operator used to make the whole selector silently match nothing.
    #[test]
    fn a_selector_that_cannot_be_evaluated_is_an_error_when_it_may_select() {
        let odd = with_spec(
            policy("odd", "ns", &[("tier", "web")], 5),
            serde_json::json!({"selector": {"matchLabels": {"tier": "web"}, "matchExpressions": [{"key": "app", "operator": "Like", "values": ["sh*"]}]}}),
        );
        let all = vec![odd];
        let err = resolve(&release(&[("tier", "web"), ("app", "shop")], None), &all)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("RollbackPolicy odd, which may select this Release, is invalid")
                && err.contains("operator must be In, NotIn, Exists or DoesNotExist"),
            "{err}"
        );
        // Its valid part (tier=web) rules this one out whatever the operator means.
        assert_eq!(
            resolve(&release(&[("tier", "db"), ("app", "shop")], None), &all),
            Ok(Policy::default())
        );
    }

    #[test]
    fn selectors_evaluate_every_operator() {
        let sel = |json: serde_json::Value| -> crate::api::PolicySelector {
            serde_json::from_value(json).unwrap()
        };
        let labels: std::collections::BTreeMap<String, String> =
            [("tier".to_string(), "web".to_string())].into();
        for (json, want) in [
            (serde_json::json!({}), false),
            (serde_json::json!({"matchLabels": {}}), false),
            (serde_json::json!({"matchLabels": {"tier": "web"}}), true),
            (
                serde_json::json!({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["db", "web"]}]}),
                true,
            ),
            (
                serde_json::json!({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["web"]}]}),
                false,
            ),
            (
                serde_json::json!({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["web"]}]}),
                true,
            ),
            (
                serde_json::json!({"matchExpressions": [{"key": "tier", "operator": "Exists"}]}),
                true,
            ),
            (
                serde_json::json!({"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]}),
                false,
            ),
            (
                serde_json::json!({"matchExpressions": [{"key": "tier", "operator": "Exists", "values": []}]}),
                true,
            ),
        ] {
            assert_eq!(selects(&sel(json.clone()), &labels), Ok(want), "{json}");
        }
    }

    #[test]
    fn the_answer_does_not_depend_on_the_order_of_the_cache() {
        let a = policy("a", "ns", &[("tier", "web")], 5);
        let c = policy("c", "ns", &[("app", "shop")], 7);
        let r = release(&[("tier", "web"), ("app", "shop")], None);
        assert_eq!(resolve(&r, &[a.clone(), c.clone()]), resolve(&r, &[c, a]));
    }
}

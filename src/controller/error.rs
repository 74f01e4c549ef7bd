//! Reconcile errors: what each means, how it is shown on its Release (a Warning Event, once
//! per distinct error), and the per-Release backoff.

use std::{sync::Arc, time::Duration};

use jiff::Timestamp;
use kube::{
    Resource, ResourceExt,
    runtime::{
        controller::Action,
        events::{Event as KubeEvent, EventType, Recorder},
        reflector::ObjectRef,
    },
};
use tracing::warn;

use super::Context;
use crate::{api::Release, metrics::ErrorLabels, reasons};

/// Errors of one reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Writing the Release status failed.
    #[error("writing status of Release {0}: {1}")]
    Status(String, #[source] kube::Error),
    /// Applying the Deployment failed.
    #[error("applying Deployment {0}: {1}")]
    Apply(String, #[source] kube::Error),
    /// Creating a migration Job failed (the step is recorded; the next reconcile tries again).
    #[error("creating migration Job {0}: {1}")]
    Job(String, #[source] kube::Error),
    /// Listing the pods a Deployment ran before adoption failed.
    #[error("listing pods of Deployment {0}: {1}")]
    ListPods(String, #[source] kube::Error),
    /// Reading the Deployment, its ReplicaSets or pods from the API server to confirm a verdict
    /// failed: nothing was acted on.
    #[error("reading {0} from the API server to confirm a verdict: {1}")]
    Confirm(String, #[source] kube::Error),
    /// Publishing an Event failed in a way that stops the reconcile (this replica no longer
    /// leads); other Event failures are only logged.
    #[error("publishing an Event: {0}")]
    Event(#[source] kube::Error),
    /// An object without a namespace (cannot happen for namespaced kinds).
    #[error("{0} has no namespace")]
    NoNamespace(String),
}

impl Error {
    /// Low-cardinality label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Status(..) if self.is_conflict() => "status_conflict",
            Error::Status(..) => "status",
            Error::Apply(..) => "apply",
            Error::Job(..) => "job",
            Error::ListPods(..) => "list_pods",
            Error::Confirm(..) => "confirm",
            Error::Event(..) => "event",
            Error::NoNamespace(..) => "no_namespace",
        }
    }

    fn is_conflict(&self) -> bool {
        matches!(self, Error::Status(_, kube::Error::Api(s)) | Error::Apply(_, kube::Error::Api(s)) if s.code == 409)
    }

    fn is_throttled(&self) -> bool {
        matches!(self, Error::Status(_, kube::Error::Api(s)) | Error::Apply(_, kube::Error::Api(s)) if s.code == 429)
    }

    /// How this error is shown on its Release, or None when it is not: a conflict only means
    /// our cache was behind (retried at once, not a person's business), and an object without
    /// a namespace cannot have Events (and cannot happen for a namespaced kind).
    pub fn report(&self) -> Option<ErrorReport> {
        if self.is_conflict() {
            return None;
        }
        let (reason, what, source) = match self {
            Error::Status(release, e) => (
                reasons::STATUS_WRITE_FAILED,
                format!("writing status of Release {release}"),
                e,
            ),
            Error::Apply(target, e) => (
                reasons::DEPLOYMENT_APPLY_FAILED,
                format!("applying Deployment {target}"),
                e,
            ),
            Error::Job(name, e) => (
                reasons::JOB_CREATE_FAILED,
                format!("creating migration Job {name}"),
                e,
            ),
            Error::ListPods(target, e) => (
                reasons::POD_LIST_FAILED,
                format!("listing pods of Deployment {target}"),
                e,
            ),
            Error::Confirm(what, e) => (
                reasons::VERDICT_NOT_CONFIRMED,
                format!(
                    "reading {what} from the API server to confirm a verdict (nothing was acted on)"
                ),
                e,
            ),
            Error::NoNamespace(_) | Error::Event(_) => return None,
        };
        // The API's own words and code, without the debug dump of the Status in `Display`.
        let message = match source {
            kube::Error::Api(s) => format!("{what}: {} ({} {})", s.message, s.code, s.reason),
            other => format!("{what}: {other}"),
        };
        Some(ErrorReport {
            reason,
            message: truncate(&message, 1000),
        })
    }
}

/// A reconcile error as a Warning Event on the Release: reason per error kind, message naming
/// the error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorReport {
    /// Event reason (`reasons::STATUS_WRITE_FAILED`, ...).
    pub reason: &'static str,
    /// Event note, at most 1000 bytes.
    pub message: String,
}

/// What to publish for a failed reconcile, given the report last published for this Release
/// since its last successful reconcile: the error's report when it is a new one, else nothing.
/// A persisting error is shown once, not on every retry; conflicts are never shown.
fn report_to_publish(error: &Error, last: Option<&ErrorReport>) -> Option<ErrorReport> {
    error.report().filter(|report| last != Some(report))
}

/// Back off per Release: a short retry for conflicts and throttling, else exponential with
/// jitter, capped at five minutes. An error not yet shown on the Release is published there as
/// a Warning Event (in the background).
pub(super) fn error_policy(release: Arc<Release>, error: &Error, ctx: Arc<Context>) -> Action {
    if crate::leader::refused(error) {
        // Leadership was lost mid-reconcile and the fence stopped the write: not this
        // Release's problem, and nothing to show on it. The new leader reconciles it.
        tracing::info!(release = %release.name_any(), "stopped mid-reconcile: this replica no longer leads");
        return Action::await_change();
    }
    ctx.metrics
        .failures
        .get_or_create(&ErrorLabels {
            error: error.metric_label(),
        })
        .inc();
    let key = ObjectRef::from_obj(&*release);
    let report = {
        let mut reported = ctx
            .memory
            .reported
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let report = report_to_publish(error, reported.get(&key));
        if let Some(r) = &report {
            reported.insert(key.clone(), r.clone());
        }
        report
    };
    if let Some(report) = report {
        publish_error(&ctx.recorder, &release, report);
    }
    let n = {
        let mut failures = ctx
            .memory
            .failures
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let n = failures.entry(key).or_insert(0);
        *n = n.saturating_add(1);
        *n
    };
    if error.is_conflict() {
        // Our cache was behind: retry soon, backing off if it stays behind (a lagging watch).
        let ms = 100u64.saturating_mul(1 << n.min(6)).min(5_000);
        return Action::requeue(Duration::from_millis(ms));
    }
    let base = if error.is_throttled() { 1_000 } else { 500 };
    let backoff = (base as u64).saturating_mul(1 << n.min(10)).min(300_000);
    // Up to 20% jitter, from the clock's low bits (no RNG needed for spreading retries).
    let jitter = (Timestamp::now().subsec_nanosecond() as u64 % 1000) * backoff / 5000;
    warn!(release = %release.name_any(), error = %error, retry_in_ms = backoff + jitter, "reconcile failed");
    Action::requeue(Duration::from_millis(backoff + jitter))
}

/// Publish `report` as a Warning Event on the Release in the background: the error policy is
/// synchronous and must neither wait for the API server nor fail because of it.
fn publish_error(recorder: &Recorder, release: &Release, report: ErrorReport) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let recorder = recorder.clone();
    let reference = release.object_ref(&());
    runtime.spawn(async move {
        let event = KubeEvent {
            type_: EventType::Warning,
            reason: report.reason.into(),
            note: Some(report.message),
            action: report.reason.into(),
            secondary: None,
        };
        if let Err(e) = recorder.publish(&event, &reference).await {
            warn!(error = %e, reason = report.reason, "could not publish Event");
        }
    });
}

/// `s` cut to at most `max` bytes on a char boundary, with a marker when cut.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: u16, reason: &str, message: &str) -> kube::Error {
        kube::Error::Api(Box::new(kube::core::Status {
            code,
            reason: reason.into(),
            message: message.into(),
            ..Default::default()
        }))
    }

    #[test]
    fn a_persisting_error_is_reported_once_per_distinct_error() {
        let denied = || {
            Error::Apply(
                "shop".into(),
                api_error(403, "Forbidden", "denied by policy"),
            )
        };
        // The first failure is reported, with a reason per kind and the API's words.
        let first = report_to_publish(&denied(), None).expect("a first error is reported");
        assert_eq!(first.reason, reasons::DEPLOYMENT_APPLY_FAILED);
        assert_eq!(
            first.message,
            "applying Deployment shop: denied by policy (403 Forbidden)"
        );
        // The same error again (the retries) is not.
        assert_eq!(report_to_publish(&denied(), Some(&first)), None);
        // Another error is, even of the same kind.
        let invalid = Error::Apply("shop".into(), api_error(422, "Invalid", "bad image"));
        let second = report_to_publish(&invalid, Some(&first)).expect("a new error is reported");
        assert_eq!(second.reason, reasons::DEPLOYMENT_APPLY_FAILED);
        assert_ne!(second, first);
        let status = Error::Status("shop".into(), api_error(422, "Invalid", "bad status"));
        assert_eq!(
            report_to_publish(&status, Some(&second)).map(|r| r.reason),
            Some(reasons::STATUS_WRITE_FAILED)
        );
        let pods = Error::ListPods("shop".into(), api_error(403, "Forbidden", "no"));
        assert_eq!(
            report_to_publish(&pods, None).map(|r| r.reason),
            Some(reasons::POD_LIST_FAILED)
        );
    }

    #[test]
    fn conflicts_are_never_reported() {
        for conflict in [
            Error::Status("shop".into(), api_error(409, "Conflict", "modified")),
            Error::Apply("shop".into(), api_error(409, "Conflict", "modified")),
        ] {
            assert_eq!(report_to_publish(&conflict, None), None);
        }
    }

    #[test]
    fn a_long_error_message_is_truncated() {
        let long = Error::Status("shop".into(), api_error(422, "Invalid", &"x".repeat(5000)));
        let report = report_to_publish(&long, None).unwrap();
        assert!(report.message.len() <= 1000 + '…'.len_utf8());
        assert!(
            report
                .message
                .starts_with("writing status of Release shop: xxx")
        );
    }

    #[test]
    fn truncates_on_a_char_boundary() {
        assert_eq!(truncate("ééé", 3), "é…");
        assert_eq!(truncate("abc", 3), "abc");
    }
}

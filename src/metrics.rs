//! Prometheus metrics: the reconciler's own and the product's (rollbacks by trigger,
//! detection-to-restore latency).

use std::sync::Arc;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

/// Labels of a reconcile failure: a low-cardinality error kind.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// Error kind (`Error::metric_label`).
    pub error: &'static str,
}

/// Labels of a finished rollback.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RollbackLabels {
    /// Readiness, CrashLoop, ImagePull, ProgressDeadline, Metric, Manual.
    pub trigger: &'static str,
    /// Succeeded or Failed.
    pub result: &'static str,
}

/// Labels of a migration Job that ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MigrationLabels {
    /// `up` or `down`.
    pub kind: &'static str,
    /// Succeeded, Failed, TimedOut or Deleted.
    pub result: &'static str,
}

/// Labels of the per-Release info series: where each Release stands, for alerts such as
/// "a Release is RolledBack".
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReleaseInfoLabels {
    /// The Release's namespace.
    pub namespace: String,
    /// The Release's name.
    pub release: String,
    /// Its phase (Progressing, Healthy, Degraded, RollingBack, RolledBack, Failed, Paused).
    pub phase: String,
    /// The version running now.
    pub version: String,
}

/// Labels of an object a watch skipped.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// Release or RollbackPolicy.
    pub kind: &'static str,
}

/// Labels of a failure verdict checked against the API server.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerdictLabels {
    /// `confirmed` (the API server showed the same) or `overturned` (the caches were behind).
    pub result: &'static str,
}

/// All of Rewind's metrics and the registry that exposes them.
#[derive(Clone)]
pub struct Metrics {
    /// Registry served on /metrics.
    pub registry: Arc<Registry>,
    /// Reconciles run.
    pub reconciles: Counter,
    /// Reconciles that failed, by error kind.
    pub failures: Family<ErrorLabels, Counter>,
    /// Reconcile duration in seconds.
    pub reconcile_duration: Histogram,
    /// Finished rollbacks by trigger and result.
    pub rollbacks: Family<RollbackLabels, Counter>,
    /// Seconds from the failure becoming definite to the images being restored.
    pub detection_to_restore: Histogram,
    /// Objects of Rewind's kinds that did not decode and were skipped.
    pub objects_skipped: Family<KindLabels, Counter>,
    /// Failure verdicts made from the caches and checked against the API server.
    pub verdicts: Family<VerdictLabels, Counter>,
    /// 1 while this replica leads (always 1 without leader election).
    pub leader: Gauge,
    /// Migration Jobs that ended, by kind and result.
    pub migration_jobs: Family<MigrationLabels, Counter>,
    /// 1 per Release, labelled with its phase and running version.
    pub release_info: Family<ReleaseInfoLabels, Gauge>,
}

/// Labels of the build-info series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    /// The crate's version.
    pub version: &'static str,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("rewind");
        let reconciles = Counter::default();
        let failures = Family::<ErrorLabels, Counter>::default();
        let reconcile_duration =
            Histogram::new([0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0]);
        let rollbacks = Family::<RollbackLabels, Counter>::default();
        let detection_to_restore =
            Histogram::new([0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0]);
        registry.register("reconciles", "Reconciles run", reconciles.clone());
        registry.register(
            "reconcile_failures",
            "Reconciles that failed, by error kind",
            failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time one reconcile took",
            reconcile_duration.clone(),
        );
        registry.register(
            "rollbacks",
            "Finished rollbacks by trigger and result",
            rollbacks.clone(),
        );
        registry.register(
            "detection_to_restore_seconds",
            "From the failure becoming definite to the Deployment running the old digests",
            detection_to_restore.clone(),
        );
        let objects_skipped = Family::<KindLabels, Counter>::default();
        registry.register(
            "objects_skipped",
            "Objects of Rewind's kinds that did not decode and were skipped by the watch",
            objects_skipped.clone(),
        );
        let verdicts = Family::<VerdictLabels, Counter>::default();
        registry.register(
            "verdicts_checked",
            "Failure verdicts made from the caches and re-checked against the API server, by result",
            verdicts.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica leads and may write (always 1 without leader election)",
            leader.clone(),
        );
        let migration_jobs = Family::<MigrationLabels, Counter>::default();
        registry.register(
            "migration_jobs",
            "Migration Jobs that ended, by kind (up, down) and result (Succeeded, Failed, TimedOut, Deleted)",
            migration_jobs.clone(),
        );
        let release_info = Family::<ReleaseInfoLabels, Gauge>::default();
        registry.register(
            "release_info",
            "Always 1, one series per Release: its phase and the version running now (alert on phase=\"RolledBack\" or \"Failed\")",
            release_info.clone(),
        );
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register("build_info", "Rewind's version; always 1", build);
        Metrics {
            release_info,
            migration_jobs,
            leader,
            objects_skipped,
            verdicts,
            registry: Arc::new(registry),
            reconciles,
            failures,
            reconcile_duration,
            rollbacks,
            detection_to_restore,
        }
    }
}

impl Metrics {
    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_rollbacks_by_trigger() {
        let m = Metrics::default();
        m.rollbacks
            .get_or_create(&RollbackLabels {
                trigger: "Readiness",
                result: "Succeeded",
            })
            .inc();
        m.detection_to_restore.observe(0.2);
        let text = m.render();
        assert!(
            text.contains(r#"rewind_rollbacks_total{trigger="Readiness",result="Succeeded"} 1"#),
            "{text}"
        );
        assert!(
            text.contains("rewind_detection_to_restore_seconds_count 1"),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "rewind_build_info{{version=\"{}\"}} 1",
                env!("CARGO_PKG_VERSION")
            )),
            "{text}"
        );
    }
}

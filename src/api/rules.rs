//! CEL expressions and limits shared by the CRD schemas.
//!
//! Each rule is paired with a message a person can act on. The patterns are RE2 (what the API
//! server's CEL `matches` uses); `[0-9]` is spelled out instead of `\d` so the rules need no
//! escaping inside CEL string literals.

/// Semantic Versioning 2.0.0, without a leading `v`.
pub const SEMVER: &str = "^(0|[1-9][0-9]*)\\.(0|[1-9][0-9]*)\\.(0|[1-9][0-9]*)(-((0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*)(\\.(0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*))*))?(\\+([0-9a-zA-Z-]+(\\.[0-9a-zA-Z-]+)*))?$";

/// An OCI image reference: `[registry[:port]/]path[:tag][@sha256:<64 hex>]`, lower-case path
/// components as the distribution reference grammar requires.
pub const IMAGE_REF: &str = "^([a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?(\\.[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?)*(:[0-9]+)?/)?[a-z0-9]+(([._]|__|[-]+)[a-z0-9]+)*(/[a-z0-9]+(([._]|__|[-]+)[a-z0-9]+)*)*(:[a-zA-Z0-9_][a-zA-Z0-9_.-]{0,127})?(@sha256:[a-f0-9]{64})?$";

/// A Go duration such as `30s`, `5m` or `1h30m` (what `metav1.Duration` accepts, without sign).
pub const DURATION: &str = "^([0-9]+(\\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$";

/// What a duration must also match before the schema's CEL rule asks `duration()` for its
/// value: no component so large that `duration()` could fail on it (Go's limit is about 292
/// years). Everything [`DURATION`] matches and this does not is at least 100000h, 1e7m or
/// 1e8s long, far above every field's maximum, so it is rightly refused as out of range.
pub const DURATION_MAGNITUDE: &str = "^(0*[0-9]{1,5}(\\.[0-9]+)?h|0*[0-9]{1,7}(\\.[0-9]+)?m|0*[0-9]{1,8}(\\.[0-9]+)?s|0*[0-9]{1,11}(\\.[0-9]+)?ms|0*[0-9]{1,14}(\\.[0-9]+)?(us|µs)|0*[0-9]{1,17}(\\.[0-9]+)?ns)+$";

/// Longest duration text accepted (a duration needs far fewer characters).
pub const MAX_DURATION_LEN: usize = 32;

/// The bounds of one duration field of a RollbackPolicy. The schema's CEL rule
/// ([`DurationBounds::rule`]) and the check in code (`Policy::try_from`) use the same ones,
/// so a policy stored under an older schema is held to them too. docs/reliability.md says
/// why each bound is what it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DurationBounds {
    /// The field as a person writes it (`readiness.timeout`).
    pub field: &'static str,
    /// Shortest accepted, as a duration text.
    pub min: &'static str,
    /// Longest accepted, as a duration text.
    pub max: &'static str,
    /// Why, in a few words, for the message.
    pub why: &'static str,
}

/// `readiness.timeout`: how long a new revision may take to become available.
pub const READINESS_TIMEOUT: DurationBounds = DurationBounds {
    field: "readiness.timeout",
    min: "5s",
    max: "24h",
    why: "no pod is pulled, started and Ready sooner, and a rollout not available after a day is stuck",
};
/// `readiness.unreadyFor`: how long a pod may be NotReady in the guard window.
pub const UNREADY_FOR: DurationBounds = DurationBounds {
    field: "readiness.unreadyFor",
    min: "1s",
    max: "1h",
    why: "0 would count one failed probe as a failure, and a pod NotReady for over an hour must not go unnoticed",
};
/// `imagePull.failFor`: how long a pod may fail to pull its image.
pub const IMAGE_PULL_FAIL_FOR: DurationBounds = DurationBounds {
    field: "imagePull.failFor",
    min: "1s",
    max: "1h",
    why: "0 would roll back on the first pull error a registry blip causes, and an image not pulled for an hour will not be",
};
/// `guardWindow`: how long a healthy revision is still guarded.
pub const GUARD_WINDOW: DurationBounds = DurationBounds {
    field: "guardWindow",
    min: "0s",
    max: "168h",
    why: "0s turns guarding off; after a week in production a failure is a person's call, not an automatic rollback",
};
/// `cooldown`: the least time between two automatic rollbacks of a Release.
pub const COOLDOWN: DurationBounds = DurationBounds {
    field: "cooldown",
    min: "0s",
    max: "168h",
    why: "0s means no cooldown; a longer one would leave a failing release in place for over a week",
};
/// `metrics[].interval`: how often a metric is asked.
pub const METRIC_INTERVAL: DurationBounds = DurationBounds {
    field: "metrics[].interval",
    min: "5s",
    max: "1h",
    why: "more often overloads Prometheus, which scrapes every 15s to 1m, and less often detects nothing in time",
};
/// `migrations.timeout`: the longest a migration Job may run.
pub const MIGRATION_TIMEOUT: DurationBounds = DurationBounds {
    field: "migrations.timeout",
    min: "10s",
    max: "24h",
    why: "a Job's pod does not even start sooner, and a migration still running after a day needs a person",
};

/// `contested.window`: how long overrides of the image by the same field manager are counted.
pub const CONTESTED_WINDOW: DurationBounds = DurationBounds {
    field: "contested.window",
    min: "1m",
    max: "24h",
    why: "a GitOps tool self-heals within minutes and syncs at least hourly, and an override a day later is a new one",
};
/// Overrides of the image by the same manager within the window before Rewind stops
/// (`contested.limit`).
pub const CONTESTED_LIMIT: (i32, i32) = (1, 10);

/// Every duration field's bounds, for tests and documentation.
pub const DURATION_BOUNDS: [DurationBounds; 8] = [
    READINESS_TIMEOUT,
    UNREADY_FOR,
    IMAGE_PULL_FAIL_FOR,
    GUARD_WINDOW,
    COOLDOWN,
    METRIC_INTERVAL,
    MIGRATION_TIMEOUT,
    CONTESTED_WINDOW,
];

impl DurationBounds {
    /// The CEL rule: true for text that is not a duration at all (the pattern rule gives that
    /// message), else the value must be within the bounds. `duration()` is only called on text
    /// that [`DURATION_MAGNITUDE`] shows it can parse, so the rule never fails to evaluate.
    pub fn rule(&self) -> String {
        format!(
            "!self.matches(r'{DURATION}') || (self.size() <= {MAX_DURATION_LEN} && self.matches(r'{DURATION_MAGNITUDE}') && duration(self) >= duration('{}') && duration(self) <= duration('{}'))",
            self.min, self.max
        )
    }

    /// The message of [`rule`](Self::rule).
    pub fn message(&self) -> String {
        format!(
            "{} must be from {} to {}: {}",
            self.field, self.min, self.max, self.why
        )
    }

    /// The bounds as values.
    pub fn range(&self) -> (std::time::Duration, std::time::Duration) {
        let value = |t: &str| {
            t.parse::<super::duration::Duration>()
                .map(|d| d.get())
                .unwrap_or(std::time::Duration::ZERO)
        };
        (value(self.min), value(self.max))
    }
}

/// A DNS-1123 label: container and object names.
pub const DNS_LABEL: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
/// A DNS-1123 subdomain: ServiceAccount, Secret and ConfigMap names.
pub const DNS_SUBDOMAIN: &str =
    "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// An environment variable name, as a pod accepts it.
pub const ENV_NAME: &str = "^[-._a-zA-Z][-._a-zA-Z0-9]*$";

/// Revisions a policy may keep in history (`historyLimit`): the live one and a rollback
/// target at least; every revision costs status space (up to 32 images each).
pub const HISTORY_LIMIT: (i32, i32) = (2, 50);
/// Restarts that make a crash loop (`crashLoop.restarts`).
pub const CRASH_LOOP_RESTARTS: (i32, i32) = (1, 1000);
/// Consecutive failing answers of a metric (`metrics[].failureLimit`).
pub const FAILURE_LIMIT: (i32, i32) = (1, 100);

/// Longest image reference accepted (bounds CEL cost; real references are far shorter).
pub(crate) const MAX_IMAGE_LEN: u32 = 512;
/// Most containers a Release may own.
pub(crate) const MAX_IMAGES: u32 = 32;

/// The CEL rule that checks `self` against `pattern` (a CEL raw string, so backslashes pass
/// through to RE2 untouched).
pub fn matches(pattern: &str) -> String {
    format!("self.matches(r'{pattern}')")
}

#[cfg(test)]
mod tests {
    #[test]
    fn patterns_have_no_single_quotes_that_would_break_cel() {
        for p in [
            super::SEMVER,
            super::IMAGE_REF,
            super::DURATION,
            super::DURATION_MAGNITUDE,
            super::DNS_LABEL,
            super::DNS_SUBDOMAIN,
            super::ENV_NAME,
        ] {
            assert!(!p.contains('\''), "{p}");
        }
    }

    #[test]
    fn duration_bounds_parse_and_are_ordered() {
        for b in super::DURATION_BOUNDS {
            for t in [b.min, b.max] {
                assert!(t.parse::<crate::api::duration::Duration>().is_ok(), "{t}");
            }
            let (min, max) = b.range();
            assert!(min <= max && max > std::time::Duration::ZERO, "{b:?}");
            assert!(b.message().starts_with(b.field));
            assert!(!b.rule().contains("duration('')"));
        }
    }
}

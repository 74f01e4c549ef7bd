//! The local test cluster's Prometheus (Debian's `prometheus`) and the tests' series
//! (`tests/support/prometheus.rs`; see docs/test-cluster.md, "Prometheus"): a test sets its
//! series, Prometheus scrapes them within about a second, and real PromQL sees them change.
//!
//! Needs the cluster's Prometheus: `make cluster-up` (its address is read from
//! target/cluster/prometheus.env). Without it every test here fails with that hint, except
//! `missing_env_file_fails_with_hint`, which checks exactly that.

mod support;

use std::path::Path;
use std::time::Instant;

use support::{prometheus, secs, unique_name};

#[test]
#[should_panic(expected = "make cluster-up")]
fn missing_env_file_fails_with_hint() {
    prometheus::prometheus_from(Path::new("/nonexistent/rewind/prometheus.env"));
}

/// The loop the metric analysis tests rely on: set a ratio, see it through an instant query,
/// make it jump, see the jump (also through a range function over the series), take it away.
#[tokio::test]
async fn a_series_jump_is_seen_through_promql() {
    let prom = prometheus::prometheus();
    assert!(prom.url.starts_with("http://127.0.0.1:"), "{}", prom.url);
    let ns = unique_name("series-jump");
    let series = prom.series("a_series_jump_is_seen_through_promql");
    let selector = format!(r#"http_errors_ratio{{release="shop",namespace="{ns}"}}"#);
    let start = Instant::now();

    series.set(&[&format!("{selector} 0.01")]).await;
    let sample = prom.wait_for_value(&selector, 0.01, secs(15)).await;
    assert_eq!(sample.labels["__name__"], "http_errors_ratio");
    assert_eq!(sample.labels["release"], "shop");
    assert_eq!(sample.labels["namespace"], ns);
    let first_seen = start.elapsed();

    series.set(&[&format!("{selector} 0.2")]).await;
    prom.wait_for_value(&selector, 0.2, secs(15)).await;
    let jump_seen = start.elapsed() - first_seen;

    // A real PromQL evaluation over the history: the worst ratio of the last minute, compared
    // with a threshold as an analysis would.
    let worst = prom
        .wait_for_value(
            &format!("max_over_time({selector}[1m]) > 0.1"),
            0.2,
            secs(5),
        )
        .await;
    assert_eq!(worst.labels["namespace"], ns);
    let min = prom.query(&format!("min_over_time({selector}[1m])")).await;
    assert_eq!(min.len(), 1, "{min:?}");
    assert_eq!(min[0].value, 0.01);

    // Taken away, the series goes stale: instant queries no longer return it.
    series.clear();
    prom.wait_for_empty(&selector, secs(15)).await;
    eprintln!(
        "first value seen after {first_seen:?}, the jump after {jump_seen:?}, total {:?}",
        start.elapsed()
    );
}

/// Two tests' series of the same metric, in their own files, do not disturb each other.
#[tokio::test]
async fn series_of_different_tests_stay_apart() {
    let prom = prometheus::prometheus();
    let (ns_a, ns_b) = (unique_name("apart-a"), unique_name("apart-b"));
    let a = prom.series("apart_a");
    let b = prom.series("apart_b");
    let sel = |ns: &str| format!(r#"http_errors_ratio{{release="shop",namespace="{ns}"}}"#);

    a.set(&[&format!("{} 0.5", sel(&ns_a))]).await;
    b.set(&[
        &format!("{} 0.25", sel(&ns_b)),
        &format!(r#"http_requests_total{{release="shop",namespace="{ns_b}"}} 42"#),
    ])
    .await;
    prom.wait_for_value(&sel(&ns_a), 0.5, secs(15)).await;
    prom.wait_for_value(&sel(&ns_b), 0.25, secs(15)).await;
    let both = prom
        .query(&format!(
            r#"http_errors_ratio{{namespace=~"{ns_a}|{ns_b}"}}"#
        ))
        .await;
    assert_eq!(both.len(), 2, "{both:?}");

    // Rewriting or dropping one file leaves the other's series as they were.
    a.set(&[&format!("{} 0.75", sel(&ns_a))]).await;
    prom.wait_for_value(&sel(&ns_a), 0.75, secs(15)).await;
    drop(b);
    prom.wait_for_empty(&sel(&ns_b), secs(15)).await;
    prom.wait_for_value(&sel(&ns_a), 0.75, secs(1)).await;
}

#[tokio::test]
#[should_panic(expected = "sample lines only")]
async fn type_lines_are_refused() {
    let prom = prometheus::prometheus();
    let series = prom.series("type_lines_are_refused");
    series.set(&["# TYPE http_errors_ratio gauge"]).await;
}

//! The local test cluster's Prometheus (Debian's `prometheus`, started by `tests/cluster/up.sh`
//! on 127.0.0.1) and the series the tests give it. Prometheus scrapes every second one exporter,
//! Debian's `prometheus-node-exporter` with only its textfile collector: it serves the samples of
//! every `*.prom` file in `target/cluster/prometheus/series/`. Each [`TestSeries`] is one such
//! file, so tests running in parallel (threads or binaries) set their own series without
//! touching anyone else's. Addresses come from `target/cluster/prometheus.env` (or the file named
//! by `REWIND_PROMETHEUS_ENV`). See docs/test-cluster.md, "Prometheus".
//!
//! ```ignore
//! mod support;
//! use support::{prometheus, secs};
//!
//! #[tokio::test]
//! async fn errors_jump() {
//!     let prom = prometheus::prometheus();
//!     let series = prom.series("errors_jump");
//!     series.set(&[r#"http_errors_ratio{release="shop",namespace="ns-1"} 0.01"#]).await;
//!     prom.wait_for_value(r#"http_errors_ratio{namespace="ns-1"}"#, 0.01, secs(15)).await;
//!     series.set(&[r#"http_errors_ratio{release="shop",namespace="ns-1"} 0.2"#]).await;
//!     prom.wait_for_value(r#"http_errors_ratio{namespace="ns-1"}"#, 0.2, secs(15)).await;
//!     // Rewind, pointed at prom.url, now sees the jump through PromQL.
//! }
//! ```
//!
//! Rules for the lines given to [`TestSeries::set`] (text exposition format):
//! - samples only, `name{labels} value`: no `# TYPE` / `# HELP` lines and no timestamps. Every
//!   test's samples of one metric form one family in the exporter; a `TYPE` in one file would
//!   conflict with the others (the exporter then drops samples), so every family stays untyped,
//!   which PromQL does not mind.
//! - a series (name and label set) must be this test's alone: put a label no other test uses in
//!   it, e.g. `namespace="<the TestNamespace's name>"`. The exporter drops a series that two
//!   files both define.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::unique_name;

/// What to do when Prometheus is not there; part of every such panic message.
pub const PROMETHEUS_HINT: &str = "Start the local test cluster (it runs the test Prometheus and \
     its exporter) with `make cluster-up`; it writes target/cluster/prometheus.env. If the state \
     directory is elsewhere, point REWIND_PROMETHEUS_ENV at its prometheus.env.";

/// Part of the panic message when a request to a running Prometheus goes wrong.
const DOWN_HINT: &str = "(Is it up and scraping? `make cluster-status` shows Prometheus and the \
     exporter; their logs are target/cluster/logs/prometheus.log and metrics-exporter.log.)";

/// How often the helpers ask again while waiting.
const POLL: Duration = Duration::from_millis(200);

/// The test cluster's Prometheus and its exporter.
#[derive(Clone, Debug)]
pub struct Prometheus {
    /// Base URL, e.g. `http://127.0.0.1:19090` (what Rewind is pointed at).
    pub url: String,
    /// The exporter's base URL, e.g. `http://127.0.0.1:19100`.
    pub exporter_url: String,
    /// The directory whose `*.prom` files the exporter serves.
    pub series_dir: PathBuf,
}

/// One sample of a query result.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// All labels, `__name__` included when the result has one.
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// The path of the env file: `REWIND_PROMETHEUS_ENV`, else
/// `<crate>/target/cluster/prometheus.env`.
pub fn env_file() -> PathBuf {
    match std::env::var_os("REWIND_PROMETHEUS_ENV") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/cluster/prometheus.env"),
    }
}

/// The test cluster's Prometheus, from the env file. Panics naming `make cluster-up` if the file
/// is missing or incomplete (it does not contact Prometheus; the first query does).
pub fn prometheus() -> Prometheus {
    prometheus_from(&env_file())
}

/// Like [`prometheus`] with the env file's path given.
pub fn prometheus_from(path: &Path) -> Prometheus {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| {
        panic!(
            "no test Prometheus: cannot read {}: {e}. {PROMETHEUS_HINT}",
            path.display()
        )
    });
    let env: BTreeMap<&str, &str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim(), v.trim()))
        .collect();
    let get = |key: &str| match env.get(key) {
        Some(v) if !v.is_empty() => v.to_string(),
        _ => panic!(
            "no test Prometheus: {key} is missing from {}. {PROMETHEUS_HINT}",
            path.display()
        ),
    };
    Prometheus {
        url: get("REWIND_TEST_PROMETHEUS"),
        exporter_url: get("REWIND_TEST_METRICS_EXPORTER"),
        series_dir: PathBuf::from(get("REWIND_TEST_PROMETHEUS_SERIES_DIR")),
    }
}

/// The Prometheus base URL (`http://127.0.0.1:<port>`) from the env file.
pub fn url() -> String {
    prometheus().url
}

impl Prometheus {
    /// A new, empty series file for one test, `<series dir>/<test name>-<random>.prom`; nothing is
    /// written until [`TestSeries::set`]. Dropping it removes the file (its series then go stale).
    pub fn series(&self, test_name: &str) -> TestSeries {
        assert!(
            self.series_dir.is_dir(),
            "no test Prometheus: the series directory {} does not exist. {PROMETHEUS_HINT}",
            self.series_dir.display()
        );
        let name = unique_name(test_name);
        TestSeries {
            path: self.series_dir.join(format!("{name}.prom")),
            tmp: self.series_dir.join(format!(".{name}.tmp")),
            prometheus: self.clone(),
        }
    }

    /// An instant query (`/api/v1/query`, evaluated now). A vector gives one sample per series, a
    /// scalar one sample without labels. Panics if Prometheus cannot be reached or rejects the
    /// query (the error it gives is in the message).
    pub async fn query(&self, promql: &str) -> Vec<Sample> {
        let path = format!("/api/v1/query?query={}", percent_encode(promql));
        let (status, body) = self.get(&self.url, &path).await;
        let json: Value = serde_json::from_str(&body).unwrap_or_else(|e| {
            panic!(
                "Prometheus answered {status} to the query {promql:?} with no JSON ({e}): {body}"
            )
        });
        if status != 200 || json["status"] != "success" {
            panic!(
                "Prometheus rejected the query {promql:?} ({status}): {} {}",
                json["errorType"], json["error"]
            );
        }
        let data = &json["data"];
        let sample = |labels: &Value, value: &Value| Sample {
            labels: labels
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                        .collect()
                })
                .unwrap_or_default(),
            value: value[1]
                .as_str()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no value in {value} (query {promql:?})")),
        };
        match data["resultType"].as_str() {
            Some("vector") => data["result"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| sample(&r["metric"], &r["value"]))
                .collect(),
            Some("scalar") => vec![sample(&Value::Null, &data["result"])],
            other => panic!(
                "the query {promql:?} gave a {other:?} result; the helpers take instant vectors and scalars"
            ),
        }
    }

    /// Queries until `condition` holds for the result and returns that result; polls every
    /// 200 ms. On timeout panics with `description` and the last result.
    pub async fn wait_until(
        &self,
        promql: &str,
        description: &str,
        timeout: Duration,
        condition: impl Fn(&[Sample]) -> bool,
    ) -> Vec<Sample> {
        let start = Instant::now();
        loop {
            let result = self.query(promql).await;
            if condition(&result) {
                return result;
            }
            if start.elapsed() >= timeout {
                panic!(
                    "timed out after {timeout:?} waiting for {description} (query {promql:?} at {}); \
                     last result: {result:?} {DOWN_HINT}",
                    self.url
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until the query gives exactly one sample and its value is `expected`; returns it.
    pub async fn wait_for_value(&self, promql: &str, expected: f64, timeout: Duration) -> Sample {
        let description = format!("one sample of value {expected}");
        self.wait_until(
            promql,
            &description,
            timeout,
            |r| matches!(r, [s] if s.value == expected),
        )
        .await
        .remove(0)
    }

    /// Waits until the query gives no sample (e.g. after [`TestSeries::clear`]: the series has
    /// gone stale).
    pub async fn wait_for_empty(&self, promql: &str, timeout: Duration) {
        self.wait_until(promql, "an empty result", timeout, <[Sample]>::is_empty)
            .await;
    }

    /// GET `path` from `base` (a `http://host:port` URL); the status and the body. HTTP/1.0, so
    /// the answer is neither chunked nor kept alive.
    async fn get(&self, base: &str, path: &str) -> (u16, String) {
        let address = base
            .strip_prefix("http://")
            .unwrap_or_else(|| panic!("not a plain http:// URL: {base}"))
            .trim_end_matches('/')
            .to_string();
        let path = path.to_string();
        tokio::task::spawn_blocking(move || http_get(&address, &path))
            .await
            .unwrap()
    }
}

/// One test's series: a `*.prom` file in the exporter's directory that only this test writes.
/// Removed when dropped.
#[derive(Debug)]
pub struct TestSeries {
    path: PathBuf,
    tmp: PathBuf,
    prometheus: Prometheus,
}

impl TestSeries {
    /// The file this test's samples are in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Replaces this test's samples with `lines` (text exposition format, samples only: see the
    /// module's rules), atomically (written beside, then renamed), and waits (bounded) until the
    /// exporter serves the file. Prometheus picks the new values up at its next scrape, within
    /// about a second: wait for them with [`Prometheus::wait_for_value`] or
    /// [`Prometheus::wait_until`]. Panics on a comment or empty sample line, or when the
    /// exporter cannot parse the file.
    pub async fn set(&self, lines: &[&str]) {
        let mut text = String::new();
        for line in lines {
            let line = line.trim();
            assert!(
                !line.is_empty() && !line.starts_with('#'),
                "TestSeries::set takes sample lines only (`name{{labels}} value`), not {line:?}: \
                 the tests' samples of one metric share one family in the exporter, so no file \
                 may give it a TYPE or HELP"
            );
            text.push_str(line);
            text.push('\n');
        }
        std::fs::write(&self.tmp, text)
            .and_then(|()| std::fs::rename(&self.tmp, &self.path))
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", self.path.display()));
        self.wait_served().await;
    }

    /// Removes this test's samples (the file); Prometheus marks the series stale at its next
    /// scrape, so instant queries stop returning them.
    pub fn clear(&self) {
        match std::fs::remove_file(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("cannot remove {}: {e}", self.path.display()),
        }
    }

    /// Waits until the exporter reports the file as read (`node_textfile_mtime_seconds` names
    /// only files it parsed), for 5 s at most; it reads the directory on every request.
    async fn wait_served(&self) {
        let marker = format!(
            "node_textfile_mtime_seconds{{file=\"{}\"}}",
            self.path.display()
        );
        let start = Instant::now();
        let prom = &self.prometheus;
        loop {
            let (status, body) = prom.get(&prom.exporter_url, "/metrics").await;
            if status == 200 && body.contains(&marker) {
                return;
            }
            if start.elapsed() >= Duration::from_secs(5) {
                panic!(
                    "the exporter at {} does not serve {} (it answered {status}): the file is not \
                     in the text exposition format, or has timestamps; its log \
                     (target/cluster/logs/metrics-exporter.log) names the error. {DOWN_HINT}",
                    prom.exporter_url,
                    self.path.display()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

impl Drop for TestSeries {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.tmp);
        let _ = std::fs::remove_file(&self.path);
    }
}

/// One HTTP/1.0 GET; the status and the body. Panics with the hint when nothing answers.
fn http_get(address: &str, path: &str) -> (u16, String) {
    let socket: SocketAddr = address
        .parse()
        .unwrap_or_else(|e| panic!("not an IP:port address: {address}: {e}"));
    let mut stream = TcpStream::connect_timeout(&socket, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("cannot reach the test Prometheus (or its exporter) at {address}: {e}. {PROMETHEUS_HINT}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {address}\r\nUser-Agent: rewind-tests\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .unwrap_or_else(|e| panic!("reading the answer of GET {path} from {address}: {e}"));
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer from {address}: {head:?}"));
    (status, body.to_string())
}

/// Percent-encodes everything but RFC 3986's unreserved characters (for a query parameter).
fn percent_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

//! The health of the watches: when each cache has its first full list (readiness), and the
//! spans when Rewind could not see the cluster (a watch failing until the API server answers
//! again), which deadlines leave out. Also the backoff of a failing watch, and decoding
//! Rewind's own kinds one object at a time, so one object that does not decode is skipped and
//! reported instead of stopping the watch of every other one.
//!
//! Nothing here waits on a store: kube-runtime's `Store::wait_until_ready` wakes only the
//! last of several concurrent waiters (a oneshot receiver behind a mutex keeps one waker), so
//! the controller's own runner is the only one left waiting on it; readiness here comes from
//! the watch streams' `InitDone` events.

use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use futures::{Stream, StreamExt};
use jiff::Timestamp;
use kube::{
    Api, Client, Resource,
    core::DynamicObject,
    discovery::ApiResource,
    runtime::{utils::Backoff, watcher},
};
use serde::de::DeserializeOwned;
use tracing::{info, warn};

use crate::decide::clock::Blind;

/// Blind spans kept; older ones are far behind every deadline that could still matter.
const SPANS_KEPT: usize = 32;

/// Whether one controller's caches have their first full list, and which do not yet: what
/// /readyz reports.
#[derive(Debug)]
pub struct CacheSync {
    /// What the controller watches ("namespace shop", "all namespaces").
    scope: String,
    ready: AtomicBool,
    pending: Mutex<Vec<&'static str>>,
}

impl CacheSync {
    /// Not synced yet; `scope` names what the controller watches.
    pub fn new(scope: impl Into<String>) -> Arc<CacheSync> {
        Arc::new(CacheSync {
            scope: scope.into(),
            ready: AtomicBool::new(false),
            pending: Mutex::new(Vec::new()),
        })
    }

    /// Every cache has its first full list.
    pub fn is_synced(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// Synced, for tests of what reads it.
    #[cfg(test)]
    pub(crate) fn mark_synced(&self) {
        self.ready.store(true, Ordering::Relaxed);
    }

    /// The caches still waiting for their first list, and where: "pods, replicasets (namespace
    /// shop)".
    pub fn pending(&self) -> String {
        let pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        format!("{} ({})", pending.join(", "), self.scope)
    }
}

/// What the controller knows about its watches.
pub(crate) struct Watches {
    names: Vec<&'static str>,
    state: Mutex<State>,
    ready: Arc<CacheSync>,
}

#[derive(Default)]
struct State {
    /// Per stream: has it finished its first full list.
    listed: Vec<bool>,
    /// Per stream: failing since (not yet recovered).
    failing: Vec<bool>,
    spans: VecDeque<Blind>,
}

impl Watches {
    /// Watches named `names` (index = stream), reporting overall readiness in `ready`.
    pub(crate) fn new(names: Vec<&'static str>, ready: Arc<CacheSync>) -> Arc<Watches> {
        let n = names.len();
        *ready.pending.lock().unwrap_or_else(|e| e.into_inner()) = names.clone();
        Arc::new(Watches {
            names,
            state: Mutex::new(State {
                listed: vec![false; n],
                failing: vec![false; n],
                spans: VecDeque::new(),
            }),
            ready,
        })
    }

    /// Every cache has had its first full list.
    pub(crate) fn ready(&self) -> bool {
        self.ready.is_synced()
    }

    /// The blind spans, oldest first, for a decision.
    pub(crate) fn blind(&self) -> Vec<Blind> {
        self.lock().spans.iter().copied().collect()
    }

    /// A blind span is open now.
    pub(crate) fn is_blind(&self) -> bool {
        self.lock().spans.back().is_some_and(|b| b.to.is_none())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stream `i` yielded an error: Rewind cannot see that part of the cluster from now on.
    pub(crate) fn failed(&self, i: usize, error: &watcher::Error, now: Timestamp) {
        let mut s = self.lock();
        if !s.failing[i] {
            warn!(watch = self.names[i], error = %error, "watch failed; deadlines stop counting until the API server answers again");
        }
        s.failing[i] = true;
        if s.spans.back().is_none_or(|b| b.to.is_some()) {
            s.spans.push_back(Blind {
                from: now,
                to: None,
            });
            while s.spans.len() > SPANS_KEPT {
                s.spans.pop_front();
            }
        }
    }

    /// Stream `i` delivered an event: it works. `listed` when the event ends a full list.
    pub(crate) fn delivered(&self, i: usize, listed: bool, now: Timestamp) {
        let mut s = self.lock();
        s.failing[i] = false;
        if listed && !s.listed[i] {
            s.listed[i] = true;
            let name = self.names[i];
            self.ready
                .pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|p| *p != name);
            if s.listed.iter().all(|l| *l) {
                self.ready.ready.store(true, Ordering::Relaxed);
                info!("caches synced: every watch has its first full list");
            }
        }
        if !s.failing.iter().any(|f| *f) {
            close(&mut s, now);
        }
    }

    /// The API server answered a request: whatever was blind can be seen again (a watch that
    /// has nothing new to deliver would otherwise never say so).
    pub(crate) fn answered(&self, now: Timestamp) {
        let mut s = self.lock();
        s.failing.iter_mut().for_each(|f| *f = false);
        close(&mut s, now);
    }

    /// Follow a watch stream's events for stream `i`, passing them on unchanged.
    pub(crate) fn follow<S, K>(
        self: &Arc<Self>,
        i: usize,
        stream: S,
    ) -> impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + use<S, K>
    where
        S: Stream<Item = Result<watcher::Event<K>, watcher::Error>>,
    {
        let me = self.clone();
        stream.inspect(move |ev| match ev {
            Err(e) => me.failed(i, e, Timestamp::now()),
            Ok(watcher::Event::InitDone) => me.delivered(i, true, Timestamp::now()),
            Ok(_) => me.delivered(i, false, Timestamp::now()),
        })
    }

    /// While a span is open, ask the API server every second whether it answers, and close
    /// the span when it does. Runs until the process ends.
    pub(crate) async fn probe(self: Arc<Self>, client: Client) {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if !self.is_blind() {
                continue;
            }
            let answer =
                tokio::time::timeout(Duration::from_secs(2), client.apiserver_version()).await;
            if let Ok(Ok(_)) = answer {
                info!("the API server answers again; deadlines count again");
                self.answered(Timestamp::now());
            }
        }
    }
}

fn close(s: &mut State, now: Timestamp) {
    if let Some(open) = s.spans.back_mut().filter(|b| b.to.is_none()) {
        open.to = Some(now.max(open.from));
    }
}

/// Retry a failing watch soon: 250 ms doubling to 5 s, with jitter; reset after a success.
/// (kube's default grows to 30 s, so after an outage the caches could lag a minute or two.)
pub(crate) struct WatchBackoff {
    next: Duration,
}

impl Default for WatchBackoff {
    fn default() -> Self {
        WatchBackoff {
            next: Duration::from_millis(250),
        }
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let now = self.next;
        self.next = (self.next * 2).min(Duration::from_secs(5));
        // Up to 25% jitter from the clock's low bits, so many watches do not retry in step.
        let jitter = u64::from(Timestamp::now().subsec_nanosecond().unsigned_abs() % 1000);
        Some(now + now.mul_f64(jitter as f64 / 4000.0))
    }
}

impl Backoff for WatchBackoff {
    fn reset(&mut self) {
        *self = WatchBackoff::default();
    }
}

/// A watch of one of Rewind's own kinds that decodes each object on its own: an object that
/// does not decode (a status written by another version of Rewind, a field the schema let
/// through) is skipped and reported (log line and `rewind_objects_skipped_total`), and every
/// other object keeps being watched. A typed watch would fail its whole list instead.
pub(crate) fn tolerant_watch<K, F>(
    client: &Client,
    namespace: &Option<String>,
    config: watcher::Config,
    skipped: F,
) -> impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + use<K, F>
where
    K: Resource<DynamicType = ()> + DeserializeOwned + Clone + Send + 'static,
    F: Fn(&'static str) + Send + Sync + 'static,
{
    let resource = ApiResource::erase::<K>(&());
    let api: Api<DynamicObject> = match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    };
    let kind: &'static str = match K::kind(&()) {
        std::borrow::Cow::Borrowed(k) => k,
        std::borrow::Cow::Owned(k) => Box::leak(k.into_boxed_str()),
    };
    watcher(api, config).filter_map(move |ev| {
        let out = match ev {
            Err(e) => Some(Err(e)),
            Ok(watcher::Event::Init) => Some(Ok(watcher::Event::Init)),
            Ok(watcher::Event::InitDone) => Some(Ok(watcher::Event::InitDone)),
            Ok(watcher::Event::Apply(o)) => {
                decode(o, kind, &skipped).map(|k| Ok(watcher::Event::Apply(k)))
            }
            Ok(watcher::Event::InitApply(o)) => {
                decode(o, kind, &skipped).map(|k| Ok(watcher::Event::InitApply(k)))
            }
            Ok(watcher::Event::Delete(o)) => {
                decode(o, kind, &skipped).map(|k| Ok(watcher::Event::Delete(k)))
            }
        };
        futures::future::ready(out)
    })
}

fn decode<K: Resource + DeserializeOwned>(
    obj: DynamicObject,
    kind: &'static str,
    skipped: &impl Fn(&'static str),
) -> Option<K> {
    let (ns, name) = (
        obj.metadata.namespace.clone().unwrap_or_default(),
        obj.metadata.name.clone().unwrap_or_default(),
    );
    match obj.try_parse::<K>() {
        Ok(k) => Some(k),
        Err(e) => {
            warn!(kind, namespace = %ns, name = %name, error = %e, "skipping an object that does not decode; every other one is still watched");
            skipped(kind);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    #[test]
    fn ready_once_every_watch_has_listed() {
        let ready = CacheSync::new("namespace shop");
        let w = Watches::new(vec!["a", "b"], ready.clone());
        assert_eq!(ready.pending(), "a, b (namespace shop)");
        w.delivered(0, false, t(0));
        w.delivered(0, true, t(1));
        assert!(!w.ready());
        assert_eq!(ready.pending(), "b (namespace shop)");
        w.delivered(1, true, t(2));
        assert!(w.ready() && ready.is_synced());
    }

    #[test]
    fn a_failing_watch_opens_one_blind_span_until_all_recover_or_the_server_answers() {
        let w = Watches::new(vec!["a", "b"], CacheSync::new("all namespaces"));
        let err = || watcher::Error::NoResourceVersion;
        w.failed(0, &err(), t(10));
        w.failed(1, &err(), t(11));
        w.failed(0, &err(), t(12));
        assert_eq!(
            w.blind(),
            [Blind {
                from: t(10),
                to: None
            }]
        );
        w.delivered(0, false, t(20));
        assert!(w.is_blind(), "b still fails");
        w.delivered(1, true, t(25));
        assert_eq!(
            w.blind(),
            [Blind {
                from: t(10),
                to: Some(t(25))
            }]
        );
        w.failed(1, &err(), t(30));
        w.answered(t(31));
        assert_eq!(w.blind().len(), 2);
        assert!(!w.is_blind());
    }

    #[test]
    fn spans_are_bounded() {
        let w = Watches::new(vec!["a"], CacheSync::new("all namespaces"));
        for i in 0..100 {
            w.failed(0, &watcher::Error::NoResourceVersion, t(i * 10));
            w.answered(t(i * 10 + 1));
        }
        assert_eq!(w.blind().len(), SPANS_KEPT);
    }

    #[test]
    fn the_watch_backoff_is_short_and_resets() {
        let mut b = WatchBackoff::default();
        let first = b.next().unwrap();
        assert!(first >= Duration::from_millis(250) && first < Duration::from_millis(320));
        let later: Vec<Duration> = (0..10).map(|_| b.next().unwrap()).collect();
        assert!(later.iter().all(|d| *d <= Duration::from_millis(6250)));
        b.reset();
        assert!(b.next().unwrap() < Duration::from_millis(320));
    }

    #[test]
    fn an_object_that_does_not_decode_is_skipped_and_counted() {
        let bad: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "rewind.dev/v1alpha1", "kind": "Release",
            "metadata": {"name": "odd", "namespace": "ns"},
            "spec": {"version": "1.0.0", "target": {"name": "a"}, "images": []},
            "status": {"phase": "FromTheFuture"}
        }))
        .unwrap();
        let count = std::sync::atomic::AtomicU32::new(0);
        let got: Option<crate::api::Release> = decode(bad, "Release", &|_| {
            count.fetch_add(1, Ordering::Relaxed);
        });
        assert!(got.is_none());
        assert_eq!(count.load(Ordering::Relaxed), 1);
    }
}

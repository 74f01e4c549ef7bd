//! Leader election on a `coordination.k8s.io/v1` Lease, and the fence that keeps a replica
//! that does not lead from writing.
//!
//! The protocol is client-go's (`tools/leaderelection`), written on kube's own `Api<Lease>`:
//! - a candidate takes the Lease when it has no holder, or when the holder's record has not
//!   changed for `lease_duration` as measured by the candidate's own clock since it last saw it
//!   change (no comparison of clocks across machines);
//! - every write of the Lease is a `replace` conditional on the resourceVersion read, so two
//!   candidates never both win;
//! - the holder renews every `retry_period`. It may write only until `renew_deadline` after the
//!   start of its last successful renewal; `renew_deadline < lease_duration`, so it has stopped
//!   before anyone else may take over, with `lease_duration - renew_deadline` to spare.
//!
//! The fence is a tower layer on the operator's API client: while this replica does not lead,
//! every request other than a read (GET, HEAD, OPTIONS) fails with [`NotLeading`] before it
//! is sent. It is checked at the moment of each request, from the clock, so it closes on time
//! even if the election loop is stuck. Reconciles also check [`Leadership::is_leading`] first
//! so a standby keeps its caches warm and does nothing else.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use http::{Method, Request};
use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
};
use kube::{Api, Client, api::PostParams};
use tokio::sync::watch;
use tracing::{info, warn};

/// A write refused because this replica does not lead.
#[derive(Debug, thiserror::Error)]
#[error("this replica does not hold the lease {lease}: the write was not sent")]
pub struct NotLeading {
    /// namespace/name of the Lease.
    pub lease: String,
}

/// Whether `error`, or an error it wraps, is a write the fence refused.
pub fn refused(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if e.is::<NotLeading>() {
            return true;
        }
        next = e.source();
    }
    false
}

/// Timings of the election (client-go's defaults are 15 s, 10 s, 2 s).
#[derive(Clone, Copy, Debug)]
pub struct Timings {
    /// How long a holder's record stays valid after it last changed.
    pub lease_duration: Duration,
    /// How long after the start of its last successful renewal the holder may still write.
    pub renew_deadline: Duration,
    /// How often to renew, or to try to acquire.
    pub retry_period: Duration,
}

impl Default for Timings {
    fn default() -> Self {
        Timings {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

impl Timings {
    /// The timings must leave the holder time to stop before anyone else may start.
    pub fn check(&self) -> Result<(), String> {
        if self.retry_period.is_zero() {
            return Err("--lease-retry-period must be more than 0".into());
        }
        if self.renew_deadline <= self.retry_period {
            return Err(format!(
                "--lease-renew-deadline ({:?}) must be longer than --lease-retry-period ({:?}), or a single slow renewal loses the lease",
                self.renew_deadline, self.retry_period
            ));
        }
        if self.lease_duration <= self.renew_deadline {
            return Err(format!(
                "--lease-duration ({:?}) must be longer than --lease-renew-deadline ({:?}): the holder must stop writing before another replica may take over",
                self.lease_duration, self.renew_deadline
            ));
        }
        Ok(())
    }
}

/// Whether this replica leads, shared by the election loop, the API client's fence, the
/// reconcilers and `/readyz`.
#[derive(Clone)]
pub struct Leadership(Arc<State>);

impl std::fmt::Debug for Leadership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leadership")
            .field("lease", &self.0.lease)
            .field("identity", &self.0.identity)
            .field("leading", &self.is_leading())
            .finish()
    }
}

struct State {
    /// namespace/name of the Lease ("" when election is off).
    lease: String,
    /// This replica's identity in the Lease.
    identity: String,
    epoch: Instant,
    /// Nanoseconds after `epoch` until which this replica may write; 0 never, u64::MAX always.
    until: AtomicU64,
    /// Last published leading state (false → true wakes every reconcile).
    changes: watch::Sender<bool>,
    /// The holder as last seen, for /readyz and logs.
    holder: Mutex<Option<String>>,
    /// Why the last attempt to acquire or renew failed (None after one that got an answer).
    error: Mutex<Option<String>>,
}

impl Leadership {
    /// Leader election is off: this replica always leads (one replica, or local runs).
    pub fn always() -> Self {
        let (changes, _) = watch::channel(true);
        Leadership(Arc::new(State {
            lease: String::new(),
            identity: String::new(),
            epoch: Instant::now(),
            until: AtomicU64::new(u64::MAX),
            changes,
            holder: Mutex::new(None),
            error: Mutex::new(None),
        }))
    }

    /// A candidate for `lease` (namespace/name) as `identity`; it leads once the loop says so.
    pub fn candidate(lease: String, identity: String) -> Self {
        let (changes, _) = watch::channel(false);
        Leadership(Arc::new(State {
            lease,
            identity,
            epoch: Instant::now(),
            until: AtomicU64::new(0),
            changes,
            holder: Mutex::new(None),
            error: Mutex::new(None),
        }))
    }

    /// Whether this replica may write now.
    pub fn is_leading(&self) -> bool {
        let until = self.0.until.load(Ordering::Acquire);
        until == u64::MAX || self.nanos(Instant::now()) < until
    }

    /// Whether election is on at all.
    pub fn elects(&self) -> bool {
        !self.0.lease.is_empty()
    }

    /// Follows the leading state; changes to true when this replica starts leading.
    pub fn changes(&self) -> watch::Receiver<bool> {
        self.0.changes.subscribe()
    }

    /// Why this replica cannot take part in the election right now (it cannot read or write
    /// the Lease: RBAC, or the API server away); None while it can.
    pub fn trouble(&self) -> Option<String> {
        if self.is_leading() {
            return None;
        }
        lock(&self.0.error).clone()
    }

    /// For /readyz: `leading`, or who holds the lease.
    pub fn describe(&self) -> String {
        if self.is_leading() {
            return "leading".into();
        }
        if let Some(e) = self.trouble() {
            return format!("standby: cannot acquire lease {}: {e}", self.0.lease);
        }
        let holder = lock(&self.0.holder).clone();
        match holder.filter(|h| !h.is_empty()) {
            Some(h) => format!("standby: lease {} is held by {h}", self.0.lease),
            None => format!("standby: lease {} has no holder yet", self.0.lease),
        }
    }

    /// The API-client layer that refuses writes while this replica does not lead.
    pub fn fence<B>(
        &self,
    ) -> tower::filter::FilterLayer<
        impl Fn(Request<B>) -> Result<Request<B>, NotLeading> + Clone + use<B>,
    > {
        let me = self.clone();
        tower::filter::FilterLayer::new(move |req: Request<B>| {
            me.admits(req.method()).map(|()| req)
        })
    }

    /// Whether a request with `method` may be sent now: reads always, writes while leading.
    fn admits(&self, method: &Method) -> Result<(), NotLeading> {
        if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) || self.is_leading() {
            Ok(())
        } else {
            Err(NotLeading {
                lease: self.0.lease.clone(),
            })
        }
    }

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.0.epoch).as_nanos()).unwrap_or(u64::MAX - 1)
    }

    /// May write until `until` (a successful acquire or renewal).
    fn lead_until(&self, until: Instant) {
        let was = self.is_leading();
        self.0
            .until
            .store(self.nanos(until).max(1), Ordering::Release);
        if was {
            self.publish();
        } else {
            // A new term, even if the fence lapsed and reopened between two looks (the
            // published state would go true → true): followers must hear it, since
            // reconciles during the lapse did nothing and wait for it.
            self.0.changes.send_modify(|leading| *leading = true);
        }
    }

    /// Stop writing now.
    fn stop(&self) {
        self.0.until.store(0, Ordering::Release);
        self.publish();
    }

    /// Tell followers when the leading state changed (by renewal or by the clock).
    fn publish(&self) {
        let leading = self.is_leading();
        self.0.changes.send_if_modified(|was| {
            let changed = *was != leading;
            *was = leading;
            changed
        });
    }

    fn failed(&self, error: Option<String>) {
        *lock(&self.0.error) = error;
    }

    fn saw_holder(&self, holder: Option<String>) {
        *lock(&self.0.holder) = holder;
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The Lease record as last seen, and when (by our clock) it last changed.
struct Observed {
    holder: Option<String>,
    renew: Option<MicroTime>,
    transitions: Option<i32>,
    duration: Duration,
    changed_at: Instant,
}

/// Runs the election for `leadership` on Lease `name` in `api`'s namespace.
pub struct Elector {
    api: Api<Lease>,
    name: String,
    timings: Timings,
    leadership: Leadership,
    observed: Option<Observed>,
}

impl Elector {
    /// An elector; `client` must not be fenced (it writes the Lease).
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        timings: Timings,
        leadership: Leadership,
    ) -> Self {
        Elector {
            api: Api::namespaced(client, namespace),
            name: name.into(),
            timings,
            leadership,
            observed: None,
        }
    }

    /// Acquire and renew until `stop` turns true; then stop writing and release the Lease if
    /// held, so another replica takes over at once instead of after `lease_duration`.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let t = self.timings;
        let mut last_error: Option<String> = None;
        loop {
            if *stop.borrow() {
                break;
            }
            let started = Instant::now();
            let was_leading = *self.leadership.0.changes.borrow();
            // Each attempt is bounded: a hanging API server must not hold the loop past the
            // point where it should notice the lease is lost.
            let attempt = tokio::time::timeout(t.renew_deadline / 2, self.try_acquire_or_renew());
            // A stop does not wait for an attempt in flight.
            let outcome = tokio::select! {
                outcome = attempt => outcome,
                _ = stop.changed() => break,
            };
            self.leadership.failed(match &outcome {
                Ok(Ok(_)) => None,
                Ok(Err(e)) => Some(e.to_string()),
                Err(_) => Some("the API server did not answer in time".into()),
            });
            let why = match outcome {
                Ok(Ok(true)) => {
                    self.leadership.lead_until(started + t.renew_deadline);
                    last_error = None;
                    None
                }
                Ok(Ok(false)) => {
                    self.leadership.stop();
                    last_error = None;
                    Some("another replica holds the lease".to_owned())
                }
                Ok(Err(e)) => {
                    let e = e.to_string();
                    if last_error.as_ref() != Some(&e) {
                        warn!(lease = %self.leadership.0.lease, error = %e, "cannot reach the lease; will retry");
                        last_error = Some(e.clone());
                    }
                    Some(format!(
                        "could not renew it within the renew deadline ({e})"
                    ))
                }
                Err(_) => {
                    if last_error.as_deref() != Some("timeout") {
                        warn!(lease = %self.leadership.0.lease, "the API server did not answer about the lease in time; will retry");
                        last_error = Some("timeout".into());
                    }
                    Some("could not renew it within the renew deadline (the API server did not answer)".into())
                }
            };
            // The clock may have closed the fence meanwhile (the fence itself needs no telling).
            self.leadership.publish();
            let leading = *self.leadership.0.changes.borrow();
            if !was_leading && leading {
                info!(lease = %self.leadership.0.lease, identity = %self.leadership.0.identity, "leading: acquired the lease");
            } else if was_leading && !leading {
                warn!(lease = %self.leadership.0.lease, reason = why.as_deref().unwrap_or("the renew deadline passed"), "lost the lease: stopped writing");
            }
            tokio::select! {
                _ = tokio::time::sleep(t.retry_period.saturating_sub(started.elapsed())) => {}
                _ = stop.changed() => {}
            }
        }
        self.leadership.stop();
        // Also when not leading by our clock: an acquire cut short by the stop may have
        // landed. `release` gives the Lease up only if it names this replica.
        match tokio::time::timeout(t.retry_period, self.release()).await {
            Ok(Ok(true)) => info!(lease = %self.leadership.0.lease, "released the lease"),
            Ok(Ok(false)) => {}
            Ok(Err(e)) => {
                warn!(error = %e, "could not release the lease; another replica takes over when it expires")
            }
            Err(_) => warn!(
                "the API server did not answer the lease release in time; another replica takes over when it expires"
            ),
        }
    }

    /// One round: Ok(true) if this replica holds the Lease afterwards.
    async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let me = self.leadership.0.identity.clone();
        let now = MicroTime(jiff::Timestamp::now());
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(me.clone()),
                    lease_duration_seconds: Some(secs(self.timings.lease_duration)),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => {
                    self.leadership.saw_holder(Some(me));
                    Ok(true)
                }
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        self.leadership.saw_holder(holder.clone());
        let duration = spec
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map(Duration::from_secs)
            .unwrap_or(self.timings.lease_duration);
        let changed = match &self.observed {
            Some(o) => {
                o.holder != holder
                    || o.renew != spec.renew_time
                    || o.transitions != spec.lease_transitions
            }
            None => true,
        };
        if changed {
            self.observed = Some(Observed {
                holder: holder.clone(),
                renew: spec.renew_time.clone(),
                transitions: spec.lease_transitions,
                duration,
                changed_at: Instant::now(),
            });
        }
        let ours = holder.as_deref() == Some(me.as_str());
        if let (Some(_), false, Some(o)) = (&holder, ours, &self.observed)
            && o.changed_at.elapsed() < o.duration
        {
            return Ok(false);
        }
        let transitions = spec.lease_transitions.unwrap_or(0);
        lease.spec = Some(LeaseSpec {
            holder_identity: Some(me.clone()),
            lease_duration_seconds: Some(secs(self.timings.lease_duration)),
            acquire_time: if ours {
                spec.acquire_time
            } else {
                Some(now.clone())
            },
            renew_time: Some(now),
            lease_transitions: Some(if ours {
                transitions
            } else {
                transitions.saturating_add(1)
            }),
            ..spec
        });
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => {
                if !ours {
                    info!(lease = %self.leadership.0.lease, previous = holder.as_deref().unwrap_or("<none>"), transitions = transitions.saturating_add(1), "took over the lease");
                }
                self.leadership.saw_holder(Some(me));
                self.observed = None;
                Ok(true)
            }
            // Someone else wrote it first (another candidate, or its holder renewing).
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Give the Lease up if it names this replica: no holder, so the next candidate takes it
    /// on its next try. Ok(true) when it did.
    async fn release(&self) -> Result<bool, kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            return Ok(false);
        };
        let mut spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.leadership.0.identity.as_str()) {
            return Ok(false);
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(jiff::Timestamp::now()));
        lease.spec = Some(spec);
        self.api
            .replace(&self.name, &PostParams::default(), &lease)
            .await?;
        Ok(true)
    }
}

fn secs(d: Duration) -> i32 {
    i32::try_from(d.as_secs().max(1)).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timings_leave_the_holder_time_to_stop() {
        assert!(Timings::default().check().is_ok());
        let t = Timings {
            lease_duration: Duration::from_secs(10),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        };
        assert!(t.check().unwrap_err().contains("--lease-duration"));
        let t = Timings {
            retry_period: Duration::from_secs(12),
            ..Timings::default()
        };
        assert!(t.check().unwrap_err().contains("--lease-renew-deadline"));
    }

    #[test]
    fn a_lapse_then_a_renewal_is_a_new_term_that_followers_hear() {
        let l = Leadership::candidate("ns/lease".into(), "me".into());
        let mut changes = l.changes();
        l.lead_until(Instant::now() + Duration::from_millis(20));
        assert!(*changes.borrow_and_update());
        std::thread::sleep(Duration::from_millis(30));
        // The fence lapsed; nobody looked (no publish) before the next renewal succeeded.
        assert!(!l.is_leading());
        l.lead_until(Instant::now() + Duration::from_secs(5));
        assert!(
            changes.has_changed().unwrap() && *changes.borrow_and_update(),
            "the reopened fence is announced, so every Release is reconciled again"
        );
        // A plain renewal while leading announces nothing.
        l.lead_until(Instant::now() + Duration::from_secs(5));
        assert!(!changes.has_changed().unwrap());
    }

    #[test]
    fn the_fence_closes_by_the_clock() {
        let l = Leadership::candidate("ns/lease".into(), "me".into());
        assert!(!l.is_leading());
        let mut changes = l.changes();
        l.lead_until(Instant::now() + Duration::from_millis(50));
        assert!(l.is_leading());
        assert!(changes.has_changed().unwrap() && *changes.borrow_and_update());
        std::thread::sleep(Duration::from_millis(60));
        assert!(!l.is_leading(), "no renewal: the fence closed by itself");
        l.publish();
        assert!(!*changes.borrow_and_update());
        assert!(l.describe().starts_with("standby"), "{}", l.describe());
        l.failed(Some("leases is forbidden".into()));
        assert_eq!(l.trouble().as_deref(), Some("leases is forbidden"));
        assert!(
            l.describe()
                .contains("cannot acquire lease ns/lease: leases is forbidden")
        );
        assert!(Leadership::always().is_leading());
    }

    #[test]
    fn the_fence_lets_reads_through_and_refuses_writes_while_not_leading() {
        let l = Leadership::candidate("ns/lease".into(), "me".into());
        assert!(l.admits(&Method::GET).is_ok());
        assert!(l.admits(&Method::HEAD).is_ok());
        for m in [Method::PATCH, Method::POST, Method::PUT, Method::DELETE] {
            let refused = l.admits(&m).unwrap_err();
            assert!(refused.to_string().contains("ns/lease"), "{refused}");
        }
        l.lead_until(Instant::now() + Duration::from_secs(5));
        assert!(l.admits(&Method::PATCH).is_ok());
        l.stop();
        let refusal = l.admits(&Method::PATCH).unwrap_err();
        assert!(
            refused(&kube::Error::Service(Box::new(refusal))),
            "found inside kube's error"
        );
        assert!(!refused(&kube::Error::LinesCodecMaxLineLengthExceeded));
    }
}

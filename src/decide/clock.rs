//! Time as a decision sees it: now, and the spans when Rewind could not see the cluster (its
//! watches were disconnected, for example while the API server was down). A deadline does not
//! count blind time: pods that became Ready while nobody could see them must not be failed for
//! it, so each deadline is pushed back by the blind time that fell inside its window. After an
//! outage (a span of [`OUTAGE_MIN`] or more) it is pushed back again for the cluster to
//! recover: its controllers, nodes and kubelets come back after the API server does (node
//! leases lapse after 40–50 s; controllers' work queues have backed off), so by the outage's
//! length, at least [`RECOVERY_MIN`] and at most [`RECOVERY_MAX`]. A routine watch restart (a
//! span of milliseconds) moves deadlines by no more than itself.

use jiff::{SignedDuration, Timestamp};

/// A span when the watches were disconnected; `to` is None while it lasts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Blind {
    /// When the first watch failed.
    pub from: Timestamp,
    /// When every watch had listed again; None: still blind.
    pub to: Option<Timestamp>,
}

/// Now, and the blind spans to leave out of every deadline.
#[derive(Clone, Copy, Debug)]
pub struct Clock<'a> {
    /// The time of the decision.
    pub now: Timestamp,
    /// Blind spans, oldest first (a short, bounded list kept by the controller).
    pub blind: &'a [Blind],
}

/// A blind span at least this long is an outage the cluster must recover from.
pub const OUTAGE_MIN: SignedDuration = SignedDuration::from_secs(5);
/// The least a deadline is moved for the cluster to recover after an outage.
pub const RECOVERY_MIN: SignedDuration = SignedDuration::from_secs(60);
/// The most a deadline is moved for the cluster to recover after one outage.
pub const RECOVERY_MAX: SignedDuration = SignedDuration::from_secs(300);

/// `t + d`, saturating at the end of time (a huge duration never overflows).
pub fn add(t: Timestamp, d: std::time::Duration) -> Timestamp {
    t.saturating_add(SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX))
        .unwrap_or(Timestamp::MAX)
}

impl<'a> Clock<'a> {
    /// A clock that was never blind.
    #[cfg(test)]
    pub fn at(now: Timestamp) -> Clock<'static> {
        Clock { now, blind: &[] }
    }

    /// When a wait of `wait` that began at `start` ends, not counting blind time inside it: each
    /// blind span that starts before the (pushed-back) deadline moves it by the part of the span
    /// after `start`, plus, once an outage has ended, time for the cluster to recover (see the
    /// module doc). A span that ended before `start` does not count.
    /// While a span lasts, it counts up to now, so no deadline passes while blind.
    pub fn due(&self, start: Timestamp, wait: std::time::Duration) -> Timestamp {
        let mut due = add(start, wait);
        for b in self.blind {
            let from = b.from.max(start);
            if from >= due || b.to.is_some_and(|to| to <= start) {
                continue;
            }
            let to = b.to.unwrap_or(self.now).max(from);
            let blind = to.duration_since(from);
            // Recovery depends on how long the whole outage was, not on its part after start.
            let whole = to.duration_since(b.from);
            let recovery = if b.to.is_some() && whole >= OUTAGE_MIN {
                whole.clamp(RECOVERY_MIN, RECOVERY_MAX)
            } else {
                SignedDuration::ZERO
            };
            due = due
                .saturating_add(blind)
                .and_then(|d| d.saturating_add(recovery))
                .unwrap_or(Timestamp::MAX);
        }
        due
    }

    /// True once `due` has passed and nothing is blind now.
    pub fn passed(&self, due: Timestamp) -> bool {
        self.now >= due && self.blind.iter().all(|b| b.to.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    #[test]
    fn blind_time_inside_a_window_pushes_its_deadline_back() {
        let never = Clock::at(t(100));
        assert_eq!(never.due(t(0), Duration::from_secs(60)), t(60));
        let blind = [Blind {
            from: t(30),
            to: Some(t(50)),
        }];
        let c = Clock {
            now: t(100),
            blind: &blind,
        };
        assert_eq!(
            c.due(t(0), Duration::from_secs(60)),
            t(140),
            "20 s blind, and at least 60 s for the cluster to recover"
        );
        assert_eq!(
            c.due(t(40), Duration::from_secs(60)),
            t(170),
            "10 s of it after start, and 60 s to recover from it"
        );
        assert_eq!(
            c.due(t(60), Duration::from_secs(60)),
            t(120),
            "before the window"
        );
        assert_eq!(
            c.due(t(0), Duration::from_secs(10)),
            t(10),
            "the deadline passed before the span began"
        );
    }

    #[test]
    fn no_deadline_passes_while_blind() {
        let blind = [Blind {
            from: t(30),
            to: None,
        }];
        let c = Clock {
            now: t(500),
            blind: &blind,
        };
        let due = c.due(t(0), Duration::from_secs(60));
        assert!(due > c.now, "{due} should be after now");
        assert!(!c.passed(t(10)), "nothing passes while blind");
    }

    #[test]
    fn a_routine_watch_restart_moves_deadlines_by_no_more_than_itself() {
        let blind = [Blind {
            from: t(30),
            to: Some(Timestamp::from_millisecond(t(30).as_millisecond() + 40).unwrap()),
        }];
        let c = Clock {
            now: t(100),
            blind: &blind,
        };
        let due = c.due(t(0), Duration::from_secs(60));
        assert_eq!(due.as_millisecond(), t(60).as_millisecond() + 40);
    }

    #[test]
    fn recovery_after_a_long_span_is_bounded() {
        let blind = [Blind {
            from: t(0),
            to: Some(t(3600)),
        }];
        let c = Clock {
            now: t(4000),
            blind: &blind,
        };
        assert_eq!(c.due(t(0), Duration::from_secs(60)), t(60 + 3600 + 300));
    }

    #[test]
    fn huge_waits_saturate() {
        let c = Clock::at(t(0));
        assert_eq!(c.due(t(0), Duration::MAX), Timestamp::MAX);
    }
}

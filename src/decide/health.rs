//! Judging one revision's health from its Deployment and Pods.

use jiff::Timestamp;

use super::{
    clock::Clock,
    policy::Policy,
    views::{PodView, Workload},
};
use crate::{api::Trigger, reasons};

/// What a revision's pods and Deployment say about it now.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Rolled out, every replica available.
    Healthy,
    /// Not decided yet; look again at `recheck` (if a deadline is pending) or on the next event.
    Waiting {
        /// The next deadline that could change the verdict by itself.
        recheck: Option<Timestamp>,
    },
    /// Failed: roll back (if policy allows).
    Failed(Failing),
}

/// A definite failure.
#[derive(Clone, Debug, PartialEq)]
pub struct Failing {
    /// Which check failed.
    pub trigger: Trigger,
    /// PascalCase reason.
    pub reason: &'static str,
    /// For a person.
    pub message: String,
    /// When it became definite: now for signals, the deadline for timeouts.
    pub at: Timestamp,
}

/// Container waiting reasons that mean the image cannot be pulled.
const PULL_FAILURES: [&str; 4] = [
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
];

/// `count` (of pods) is at least `replicas`, compared without a lossy cast.
fn count_at_least(count: usize, replicas: i32) -> bool {
    i64::try_from(count).unwrap_or(i64::MAX) >= i64::from(replicas)
}

fn earliest(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Signals that fail a revision whether it is rolling out or guarded: crash loops and image
/// pulls. Returns the failure, or the next image-pull deadline to look again at.
fn definite_signals(
    revision: i64,
    pods: &[&PodView],
    policy: &Policy,
    clock: &Clock,
) -> Result<Option<Timestamp>, Failing> {
    let mut recheck = None;
    for pod in pods {
        for c in &pod.containers {
            let waiting = c.waiting.as_deref().unwrap_or("");
            if waiting == "CrashLoopBackOff" && c.restarts >= policy.crash_loop_restarts {
                return Err(Failing {
                    trigger: Trigger::CrashLoop,
                    reason: reasons::CRASH_LOOP,
                    message: format!(
                        "container {} of pod {} (revision {revision}) restarted {} times (limit {}) and is in CrashLoopBackOff",
                        c.name, pod.name, c.restarts, policy.crash_loop_restarts
                    ),
                    at: clock.now,
                });
            }
            if PULL_FAILURES.contains(&waiting) {
                let deadline = clock.due(pod.created, policy.image_pull_fail_for);
                if clock.passed(deadline) {
                    return Err(Failing {
                        trigger: Trigger::ImagePull,
                        reason: reasons::IMAGE_PULL_FAILED,
                        message: format!(
                            "container {} of pod {} (revision {revision}) cannot pull its image ({waiting}) for {}s",
                            c.name,
                            pod.name,
                            policy.image_pull_fail_for.as_secs()
                        ),
                        at: deadline,
                    });
                }
                recheck = earliest(recheck, Some(deadline));
            }
        }
    }
    Ok(recheck)
}

/// Judge a revision that is rolling out (`deployed_at` when Rewind applied it).
pub fn judge_rollout(
    revision: i64,
    deployed_at: Timestamp,
    workload: &Workload,
    pods: &[PodView],
    policy: &Policy,
    clock: &Clock,
) -> Verdict {
    let mine: Vec<&PodView> = pods
        .iter()
        .filter(|p| p.revision == Some(revision) && !p.terminating)
        .collect();
    let recheck = match definite_signals(revision, &mine, policy, clock) {
        Err(failing) => return Verdict::Failed(failing),
        Ok(r) => r,
    };
    let current = workload.template_revision == Some(revision)
        && workload.observed_generation >= workload.generation;
    if current && policy.progress_deadline && workload.progress_deadline_exceeded {
        return Verdict::Failed(Failing {
            trigger: Trigger::ProgressDeadline,
            reason: reasons::PROGRESS_DEADLINE,
            message: format!(
                "the Deployment's progress deadline passed while rolling out revision {revision}"
            ),
            at: clock.now,
        });
    }
    if workload.replicas <= 0 {
        // Nothing runs, so nothing can be judged: never Healthy (a version no pod ever ran
        // must not become a rollback target) and no readiness timeout; it is judged once it
        // runs pods.
        return Verdict::Waiting { recheck };
    }
    let ready = mine.iter().filter(|p| p.ready).count();
    if current && workload.rolled_out() && count_at_least(ready, workload.replicas) {
        return Verdict::Healthy;
    }
    let mut deadline = clock.due(deployed_at, policy.readiness_timeout);
    // A revision that ran no pod until its deadline (it was scaled to 0, or scaled up later)
    // gets the readiness timeout from its first pod, not from when it was applied.
    if let Some(first) = mine.iter().map(|p| p.created).min()
        && first >= deadline
    {
        deadline = clock.due(first, policy.readiness_timeout);
    }
    if mine.is_empty() && workload.total == 0 && clock.passed(deadline) {
        // No pod of any revision exists: a scale-up from 0 that has not created its pods yet,
        // or a Deployment that cannot create them (its progress deadline reports that).
        return Verdict::Waiting { recheck };
    }
    if clock.passed(deadline) {
        return Verdict::Failed(Failing {
            trigger: Trigger::Readiness,
            reason: reasons::READINESS_TIMEOUT,
            message: format!(
                "revision {revision} not rolled out after {}s (readiness timeout): {ready} of {} pods Ready, {} updated, {} available",
                policy.readiness_timeout.as_secs(),
                workload.replicas,
                workload.updated,
                workload.available,
            ),
            at: deadline,
        });
    }
    Verdict::Waiting {
        recheck: earliest(recheck, Some(deadline)),
    }
}

/// Judge a revision that was healthy at `healthy_at` and is still inside the guard window.
pub fn judge_guarded(
    revision: i64,
    healthy_at: Timestamp,
    workload: &Workload,
    pods: &[PodView],
    policy: &Policy,
    clock: &Clock,
) -> Verdict {
    let guard_end = clock.due(healthy_at, policy.guard_window);
    if clock.passed(guard_end) {
        return Verdict::Healthy;
    }
    let mine: Vec<&PodView> = pods
        .iter()
        .filter(|p| p.revision == Some(revision) && !p.terminating)
        .collect();
    let mut recheck = match definite_signals(revision, &mine, policy, clock) {
        Err(failing) => return Verdict::Failed(failing),
        Ok(r) => r,
    };
    // Pods NotReady for longer than unreadyFor, counted against maxUnready.
    let mut long_unready: Vec<(&str, Timestamp)> = Vec::new();
    for pod in mine.iter().filter(|p| !p.ready) {
        let since = pod.ready_changed.unwrap_or(pod.created).max(healthy_at);
        let mut due = clock.due(since, policy.unready_for);
        if pod.created > healthy_at {
            // A pod that came later (a scale-up, an eviction, the pinning rollout) gets the
            // readiness timeout to become Ready first, as in a rollout.
            due = due.max(clock.due(pod.created, policy.readiness_timeout));
        }
        if clock.passed(due) {
            long_unready.push((&pod.name, due));
        } else {
            recheck = earliest(recheck, Some(due));
        }
    }
    let allowed = policy.max_unready_of(workload.replicas);
    // The pod whose due time made the count exceed `allowed` (None while it does not).
    let over = usize::try_from(allowed.max(0)).unwrap_or(usize::MAX);
    if long_unready.len() > over {
        long_unready.sort_by_key(|(_, due)| *due);
        let at = long_unready.get(over).map_or(clock.now, |(_, due)| *due);
        let names: Vec<&str> = long_unready.iter().map(|(n, _)| *n).collect();
        return Verdict::Failed(Failing {
            trigger: Trigger::Readiness,
            reason: reasons::PODS_NOT_READY,
            message: format!(
                "{} pods of revision {revision} NotReady for over {}s (at most {allowed} allowed): {}",
                names.len(),
                policy.unready_for.as_secs(),
                names.join(", ")
            ),
            at,
        });
    }
    Verdict::Waiting {
        recheck: earliest(recheck, Some(guard_end)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::views::ContainerView;
    use std::time::Duration;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    fn policy() -> Policy {
        Policy {
            readiness_timeout: Duration::from_secs(60),
            unready_for: Duration::from_secs(10),
            image_pull_fail_for: Duration::from_secs(30),
            guard_window: Duration::from_secs(300),
            ..Policy::default()
        }
    }

    fn workload(revision: i64, available: i32) -> Workload {
        Workload {
            generation: 2,
            observed_generation: 2,
            replicas: 3,
            updated: 3,
            available,
            total: 3,
            template_revision: Some(revision),
            ..Default::default()
        }
    }

    fn pod(
        name: &str,
        revision: i64,
        ready: bool,
        waiting: Option<&str>,
        restarts: i32,
    ) -> PodView {
        PodView {
            name: name.into(),
            revision: Some(revision),
            owner: None,
            created: t(0),
            terminating: false,
            ready,
            ready_changed: Some(t(1)),
            containers: vec![ContainerView {
                name: "api".into(),
                digest: None,
                restarts,
                waiting: waiting.map(String::from),
            }],
        }
    }

    fn ready_pods(revision: i64) -> Vec<PodView> {
        (0..3)
            .map(|i| pod(&format!("p{i}"), revision, true, None, 0))
            .collect()
    }

    #[test]
    fn rollout_verdicts() {
        let p = policy();
        struct Case {
            name: &'static str,
            workload: Workload,
            pods: Vec<PodView>,
            now: i64,
            want: Result<Option<Trigger>, Option<i64>>, // Ok(None)=Healthy, Ok(Some)=Failed, Err(recheck)=Waiting
        }
        let cases = vec![
            Case {
                name: "all ready",
                workload: workload(2, 3),
                pods: ready_pods(2),
                now: 5,
                want: Ok(None),
            },
            Case {
                name: "not yet available",
                workload: workload(2, 1),
                pods: ready_pods(2),
                now: 5,
                want: Err(Some(60)),
            },
            Case {
                name: "template not ours yet",
                workload: Workload {
                    template_revision: Some(1),
                    ..workload(2, 3)
                },
                pods: ready_pods(2),
                now: 5,
                want: Err(Some(60)),
            },
            Case {
                name: "pods of another revision do not count",
                workload: workload(2, 3),
                pods: ready_pods(1),
                now: 5,
                want: Err(Some(60)),
            },
            Case {
                name: "readiness timeout",
                workload: workload(2, 0),
                pods: vec![pod("a", 2, false, None, 0)],
                now: 60,
                want: Ok(Some(Trigger::Readiness)),
            },
            Case {
                name: "crash loop at the limit",
                workload: workload(2, 0),
                pods: vec![pod("a", 2, false, Some("CrashLoopBackOff"), 3)],
                now: 5,
                want: Ok(Some(Trigger::CrashLoop)),
            },
            Case {
                name: "crash loop below the limit waits",
                workload: workload(2, 0),
                pods: vec![pod("a", 2, false, Some("CrashLoopBackOff"), 2)],
                now: 5,
                want: Err(Some(60)),
            },
            Case {
                name: "image pull inside its window waits for it",
                workload: workload(2, 0),
                pods: vec![pod("a", 2, false, Some("ImagePullBackOff"), 0)],
                now: 5,
                want: Err(Some(30)),
            },
            Case {
                name: "image pull past its window",
                workload: workload(2, 0),
                pods: vec![pod("a", 2, false, Some("ErrImagePull"), 0)],
                now: 30,
                want: Ok(Some(Trigger::ImagePull)),
            },
            Case {
                name: "progress deadline",
                workload: Workload {
                    progress_deadline_exceeded: true,
                    ..workload(2, 0)
                },
                pods: vec![],
                now: 5,
                want: Ok(Some(Trigger::ProgressDeadline)),
            },
            Case {
                name: "progress deadline of an older template is not ours",
                workload: Workload {
                    progress_deadline_exceeded: true,
                    template_revision: Some(1),
                    ..workload(2, 0)
                },
                pods: vec![],
                now: 5,
                want: Err(Some(60)),
            },
        ];
        for c in cases {
            let got = judge_rollout(2, t(0), &c.workload, &c.pods, &p, &Clock::at(t(c.now)));
            let got = match got {
                Verdict::Healthy => Ok(None),
                Verdict::Failed(f) => Ok(Some(f.trigger)),
                Verdict::Waiting { recheck } => Err(recheck.map(|r| r.as_second() - 1_800_000_000)),
            };
            assert_eq!(got, c.want, "{}", c.name);
        }
    }

    #[test]
    fn timeout_failure_is_dated_at_the_deadline() {
        let v = judge_rollout(2, t(0), &workload(2, 0), &[], &policy(), &Clock::at(t(75)));
        let Verdict::Failed(f) = v else {
            panic!("{v:?}")
        };
        assert_eq!(f.at, t(60));
        assert!(
            f.message.contains("revision 2 not rolled out after 60s")
                && f.message.contains("0 of 3 pods Ready"),
            "{}",
            f.message
        );
    }

    #[test]
    fn progress_deadline_can_be_ignored_by_policy() {
        let p = Policy {
            progress_deadline: false,
            ..policy()
        };
        let w = Workload {
            progress_deadline_exceeded: true,
            ..workload(2, 0)
        };
        assert!(matches!(
            judge_rollout(2, t(0), &w, &[], &p, &Clock::at(t(5))),
            Verdict::Waiting { .. }
        ));
    }

    #[test]
    fn guarded_verdicts() {
        let p = policy(); // unreadyFor 10s, maxUnready 1, guard 300s
        let healthy_at = t(100);
        let mut one_down = ready_pods(2);
        one_down[0].ready = false;
        one_down[0].ready_changed = Some(t(150));
        let mut two_down = one_down.clone();
        two_down[1].ready = false;
        two_down[1].ready_changed = Some(t(155));

        let w = workload(2, 3);
        assert_eq!(
            judge_guarded(2, healthy_at, &w, &ready_pods(2), &p, &Clock::at(t(200))),
            Verdict::Waiting {
                recheck: Some(t(400))
            }
        );
        // One pod down long is within maxUnready: 1.
        assert_eq!(
            judge_guarded(2, healthy_at, &w, &one_down, &p, &Clock::at(t(200))),
            Verdict::Waiting {
                recheck: Some(t(400))
            }
        );
        // Two down, the second not long enough yet: look again when it would be.
        assert_eq!(
            judge_guarded(2, healthy_at, &w, &two_down, &p, &Clock::at(t(160))),
            Verdict::Waiting {
                recheck: Some(t(165))
            }
        );
        let v = judge_guarded(2, healthy_at, &w, &two_down, &p, &Clock::at(t(165)));
        let Verdict::Failed(f) = v else {
            panic!("{v:?}")
        };
        assert_eq!((f.trigger, f.at), (Trigger::Readiness, t(165)));
        // After the guard window nothing fails the revision.
        assert_eq!(
            judge_guarded(2, healthy_at, &w, &two_down, &p, &Clock::at(t(400))),
            Verdict::Healthy
        );
        // A pod created after the revision became healthy is not counted until the readiness
        // timeout (60s) has passed since it was created.
        let mut late = ready_pods(2);
        for p in late.iter_mut().take(2) {
            p.ready = false;
            p.created = t(150);
            p.ready_changed = Some(t(150));
        }
        assert_eq!(
            judge_guarded(2, healthy_at, &w, &late, &p, &Clock::at(t(170))),
            Verdict::Waiting {
                recheck: Some(t(210))
            }
        );
        assert!(matches!(
            judge_guarded(2, healthy_at, &w, &late, &p, &Clock::at(t(210))),
            Verdict::Failed(_)
        ));
        // Crash loops fail it while guarded.
        let crashing = vec![pod("a", 2, false, Some("CrashLoopBackOff"), 7)];
        assert!(matches!(
            judge_guarded(2, healthy_at, &w, &crashing, &p, &Clock::at(t(200))),
            Verdict::Failed(Failing {
                trigger: Trigger::CrashLoop,
                ..
            })
        ));
    }
}

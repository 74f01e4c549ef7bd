//! Tables and text for a person. Pure: the time is a parameter and colour is a switch, so the
//! output is tested against golden files (`tests/golden/cli/`).

use std::fmt::Write as _;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::model::{History, HistoryEntry, List, StatusView, short_digest};
use crate::api::{MigrationPhase, Outcome, Phase, Rollback, RollbackPhase};

/// ANSI colour, or none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Paint {
    /// Colour is written.
    pub on: bool,
}

impl Paint {
    /// No colour.
    #[cfg(test)]
    pub const NONE: Paint = Paint { on: false };

    fn wrap(self, code: &str, s: &str) -> String {
        if self.on && !s.is_empty() {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_owned()
        }
    }
    /// Good news.
    pub fn green(self, s: &str) -> String {
        self.wrap("32", s)
    }
    /// Needs a look.
    pub fn yellow(self, s: &str) -> String {
        self.wrap("33", s)
    }
    /// Bad news.
    pub fn red(self, s: &str) -> String {
        self.wrap("31", s)
    }
    /// Under way.
    pub fn cyan(self, s: &str) -> String {
        self.wrap("36", s)
    }
    /// A heading.
    pub fn bold(self, s: &str) -> String {
        self.wrap("1", s)
    }
    /// Less important.
    pub fn dim(self, s: &str) -> String {
        self.wrap("2", s)
    }
}

/// A table cell: its text and how to colour it.
struct Cell {
    text: String,
    colour: fn(Paint, &str) -> String,
}

fn plain(p: Paint, s: &str) -> String {
    let _ = p;
    s.to_owned()
}

impl From<String> for Cell {
    fn from(text: String) -> Cell {
        Cell {
            text,
            colour: plain,
        }
    }
}

impl From<&str> for Cell {
    fn from(text: &str) -> Cell {
        Cell::from(text.to_owned())
    }
}

fn coloured(text: impl Into<String>, colour: fn(Paint, &str) -> String) -> Cell {
    Cell {
        text: text.into(),
        colour,
    }
}

/// Columns padded to the widest cell (measured without colour), three spaces apart, like
/// kubectl's tables.
fn table(paint: Paint, headers: &[&str], rows: Vec<Vec<Cell>>) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (i, c) in row.iter().enumerate() {
            widths[i] = widths[i].max(c.text.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: Vec<(String, usize)>| {
        let last = cells.len().saturating_sub(1);
        for (i, (shown, len)) in cells.into_iter().enumerate() {
            out.push_str(&shown);
            if i < last {
                out.push_str(&" ".repeat(widths[i] - len + 3));
            }
        }
        out.push('\n');
    };
    line(
        &mut out,
        headers
            .iter()
            .map(|h| (paint.bold(h), h.chars().count()))
            .collect(),
    );
    for row in rows {
        line(
            &mut out,
            row.into_iter()
                .map(|c| ((c.colour)(paint, &c.text), c.text.chars().count()))
                .collect(),
        );
    }
    out
}

/// How long ago, as kubectl prints ages: 45s, 3m12s, 2h, 3d4h, 40d.
pub fn age(now: Timestamp, then: Timestamp) -> String {
    let secs = (now.as_second() - then.as_second()).max(0);
    human(secs)
}

/// A length of time as kubectl prints it.
pub fn human(secs: i64) -> String {
    let (m, h, d) = (secs / 60, secs / 3600, secs / 86_400);
    if secs < 120 {
        format!("{secs}s")
    } else if m < 10 {
        format!("{m}m{}s", secs % 60)
    } else if h < 3 {
        format!("{m}m")
    } else if h < 8 {
        format!("{h}h{}m", m % 60)
    } else if h < 48 {
        format!("{h}h")
    } else if d < 8 {
        format!("{d}d{}h", h % 24)
    } else if d < 730 {
        format!("{d}d")
    } else {
        format!("{}y", d / 365)
    }
}

/// Seconds with one decimal below a minute, else as [`human`].
pub fn span(secs: f64) -> String {
    if secs < 60.0 {
        format!("{secs:.1}s")
    } else {
        human(secs as i64)
    }
}

fn phase_cell(phase: Option<Phase>) -> Cell {
    let Some(p) = phase else {
        return coloured("-", Paint::dim);
    };
    let text = format!("{p:?}");
    let colour: fn(Paint, &str) -> String = match p {
        Phase::Healthy => Paint::green,
        Phase::Progressing | Phase::RollingBack => Paint::cyan,
        Phase::RolledBack | Phase::Paused => Paint::yellow,
        Phase::Degraded | Phase::Failed => Paint::red,
    };
    coloured(text, colour)
}

fn ready_cell(ready: &str) -> Cell {
    match ready {
        "True" => coloured("True", Paint::green),
        "False" => coloured("False", Paint::red),
        other => coloured(other, Paint::yellow),
    }
}

fn opt(v: Option<impl ToString>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

/// `list` as a table.
pub fn list(list: &List, all_namespaces: bool, now: Timestamp, paint: Paint) -> String {
    if list.items.is_empty() {
        return String::new();
    }
    let mut headers = vec![
        "NAME",
        "TARGET",
        "DESIRED",
        "LIVE",
        "REV",
        "PHASE",
        "READY",
        "LAST ROLLBACK",
        "AGE",
    ];
    if all_namespaces {
        headers.insert(0, "NAMESPACE");
    }
    let rows = list
        .items
        .iter()
        .map(|i| {
            let mut row: Vec<Cell> = vec![
                i.name.as_str().into(),
                i.target.as_str().into(),
                i.desired.as_str().into(),
                opt(i.live_version.as_ref()).into(),
                opt(i.live_revision).into(),
                phase_cell(i.phase),
                ready_cell(&i.ready),
                match &i.last_rollback {
                    None => coloured("-", Paint::dim),
                    Some(rb) => {
                        let when = rb.completed_at.as_ref().unwrap_or(&rb.detected_at);
                        let text = format!(
                            "{} ago, {:?}{}",
                            age(now, when.0),
                            rb.trigger,
                            if rb.phase.is_finished() {
                                if rb.phase == RollbackPhase::Failed {
                                    " (failed)".to_owned()
                                } else {
                                    String::new()
                                }
                            } else {
                                format!(" ({:?})", rb.phase)
                            }
                        );
                        text.into()
                    }
                },
                i.created_at
                    .as_ref()
                    .map(|t| age(now, t.0))
                    .unwrap_or_else(|| "-".into())
                    .into(),
            ];
            if all_namespaces {
                row.insert(0, i.namespace.as_str().into());
            }
            row
        })
        .collect();
    table(paint, &headers, rows)
}

fn outcome_cell(e: &HistoryEntry) -> Cell {
    let o = e.revision.outcome;
    let text = if e.live {
        format!("{o:?} (live)")
    } else {
        format!("{o:?}")
    };
    let colour: fn(Paint, &str) -> String = match o {
        Outcome::Healthy => Paint::green,
        Outcome::Failed => Paint::red,
        Outcome::RolledBack => Paint::yellow,
        Outcome::Pending => Paint::cyan,
        Outcome::Superseded => plain,
    };
    coloured(text, colour)
}

fn time_short(t: Option<&Time>) -> String {
    t.map(|t| t.0.strftime("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| "-".into())
}

/// `history` as a table, newest first.
pub fn history(h: &History, paint: Paint) -> String {
    let with_migrations = h.revisions.iter().any(|r| r.revision.migration.is_some());
    let mut headers = vec!["REV", "VERSION", "IMAGES"];
    if with_migrations {
        headers.push("SCHEMA");
    }
    headers.extend(["COMMIT", "DEPLOYED", "HEALTHY", "OUTCOME", "FAILURE"]);
    let rows = h
        .revisions
        .iter()
        .map(|e| {
            let r = &e.revision;
            let images = r
                .images
                .iter()
                .map(|i| {
                    format!(
                        "{}={}{}",
                        i.container,
                        i.digest.as_deref().map(short_digest).unwrap_or("unpinned"),
                        i.resolved_from
                            .map(|s| format!(" ({s:?})"))
                            .unwrap_or_default()
                    )
                })
                .collect::<Vec<_>>()
                .join(", ");
            let mut row: Vec<Cell> = vec![
                r.revision.to_string().into(),
                r.version.as_str().into(),
                images.into(),
            ];
            if with_migrations {
                row.push(
                    r.migration
                        .as_ref()
                        .map(|m| {
                            format!(
                                "{} ({})",
                                m.schema_version,
                                m.digest.as_deref().map(short_digest).unwrap_or("unpinned")
                            )
                        })
                        .unwrap_or_else(|| "-".into())
                        .into(),
                );
            }
            row.extend([
                opt(r.source.as_ref().and_then(|s| s.commit.as_ref())).into(),
                time_short(r.deployed_at.as_ref()).into(),
                time_short(r.healthy_at.as_ref()).into(),
                outcome_cell(e),
                match &r.failure {
                    Some(f) => coloured(format!("{:?}: {}", f.trigger, f.reason), Paint::red),
                    None => "-".into(),
                },
            ]);
            row
        })
        .collect();
    table(paint, &headers, rows)
}

/// One revision in full (`history --revision N`).
pub fn revision(h: &History, e: &HistoryEntry, paint: Paint) -> String {
    let r = &e.revision;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} {}/{} revision {}{}",
        paint.bold("Release"),
        h.namespace,
        h.release,
        r.revision,
        if e.live { " (live)" } else { "" }
    );
    let field = |out: &mut String, k: &str, v: String| {
        let _ = writeln!(out, "  {:<15}{v}", format!("{k}:"));
    };
    field(&mut out, "Version", r.version.clone());
    field(
        &mut out,
        "Outcome",
        (outcome_cell(e).colour)(paint, &outcome_cell(e).text),
    );
    field(&mut out, "Deployed", time_short(r.deployed_at.as_ref()));
    field(&mut out, "Healthy", time_short(r.healthy_at.as_ref()));
    field(&mut out, "Deployed over", opt(r.deployed_over));
    if let Some(s) = &r.source {
        field(&mut out, "Commit", opt(s.commit.as_ref()));
        if let Some(u) = &s.url {
            field(&mut out, "Source", u.clone());
        }
        if let Some(b) = &s.built_at {
            field(&mut out, "Built", time_short(Some(b)));
        }
    }
    let _ = writeln!(out, "  Images:");
    for i in &r.images {
        let _ = writeln!(out, "    {}: {}", i.container, i.image);
        let _ = writeln!(
            out,
            "      digest {}{}",
            i.digest.as_deref().unwrap_or("unknown"),
            i.resolved_from
                .map(|s| format!(" (from {s:?})"))
                .unwrap_or_default()
        );
    }
    if let Some(m) = &r.migration {
        let _ = writeln!(out, "  Migration:");
        let _ = writeln!(out, "    image {}", m.image);
        let _ = writeln!(
            out,
            "      digest {}{}",
            m.digest.as_deref().unwrap_or("unknown"),
            m.resolved_from
                .map(|s| format!(" (from {s:?})"))
                .unwrap_or_default()
        );
        let _ = writeln!(
            out,
            "    schema {}{}",
            m.schema_version,
            if m.reversible { "" } else { " (irreversible)" }
        );
        for (name, cmd) in [("up", &m.up), ("down", &m.down)] {
            if let Some(c) = cmd {
                let _ = writeln!(
                    out,
                    "    {name}: {}",
                    c.command
                        .iter()
                        .chain(&c.args)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(" ")
                );
            }
        }
        if let Some(j) = &m.up_job {
            let _ = writeln!(
                out,
                "    up Job {} {:?}{}",
                j.name,
                j.phase,
                message_suffix(&j.message)
            );
        }
    }
    if let Some(f) = &r.failure {
        let _ = writeln!(out, "  Failure:");
        let _ = writeln!(
            out,
            "    {} {:?}: {} at {}",
            paint.red(&f.reason),
            f.trigger,
            f.message,
            time_short(Some(&f.at))
        );
    }
    out
}

fn message_suffix(m: &str) -> String {
    if m.is_empty() {
        String::new()
    } else {
        format!(": {m}")
    }
}

/// Plain words for a condition.
fn condition_words(type_: &str, status: &str) -> &'static str {
    match (type_, status) {
        ("Ready", "True") => "ready",
        ("Ready", "False") => "not ready",
        ("Ready", _) => "unknown (Rewind is not judging it)",
        ("Reconciling", "True") => "working on it",
        ("Reconciling", _) => "settled",
        ("Stalled", "True") => "stalled: needs a person",
        ("Stalled", _) => "not stalled",
        ("RolledBack", "True") => "rolled back: the desired version is blocked",
        ("RolledBack", _) => "not rolled back",
        ("Pinned", "True") => "every image pinned to a digest",
        ("Pinned", _) => "not every image pinned",
        ("ManualRollback", "True") => "last manual request accepted",
        ("ManualRollback", _) => "last manual request refused",
        (_, "True") => "yes",
        (_, "False") => "no",
        _ => "unknown",
    }
}

/// `status` for a person.
pub fn status(v: &StatusView, now: Timestamp, paint: Paint) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} {}/{}   target Deployment {}",
        paint.bold("Release"),
        v.namespace,
        v.release,
        v.target
    );
    let phase = phase_cell(v.phase);
    let _ = writeln!(out, "  Phase:    {}", (phase.colour)(paint, &phase.text));
    let live = match (&v.live_version, v.live_revision) {
        (Some(ver), Some(rev)) => format!("{ver} (revision {rev})"),
        _ => "nothing yet".into(),
    };
    let _ = writeln!(out, "  Live:     {live}");
    let wanted = if v.live_version.as_deref() == Some(v.desired_version.as_str()) {
        format!("{} (live)", v.desired_version)
    } else {
        v.desired_version.clone()
    };
    let _ = writeln!(out, "  Desired:  {wanted}");
    if let Some(p) = &v.pods {
        let text = format!("{}/{} ready (revision {})", p.ready, p.total, p.revision);
        let shown = if p.total > 0 && p.ready == p.total {
            paint.green(&text)
        } else {
            paint.yellow(&text)
        };
        let waiting = if p.waiting.is_empty() {
            String::new()
        } else {
            format!("; waiting: {}", p.waiting.join(", "))
        };
        let _ = writeln!(out, "  Pods:     {shown}{waiting}");
    }
    if let Some(why) = &v.paused {
        let _ = writeln!(out, "  Paused:   {}", paint.yellow(why));
    }
    if let Some(b) = &v.blocked {
        let _ = writeln!(
            out,
            "  Blocked:  {} since {} ago ({})",
            paint.yellow(&b.version),
            age(now, b.since.0),
            b.reason
        );
    }
    if let Some(c) = &v.contested {
        let _ = writeln!(
            out,
            "  Contested: {} set container {} to {} ×{}{}",
            c.manager,
            c.container,
            c.image,
            c.count,
            if c.stopped {
                paint.red(" — Rewind stopped writing")
            } else {
                String::new()
            }
        );
    }
    if let Some(p) = &v.pending {
        let _ = writeln!(
            out,
            "  Pending:  {} asked for a rollback to {}; Rewind has not answered yet",
            p.requested_by.as_deref().unwrap_or("someone"),
            paint.yellow(&p.to)
        );
    }
    if v.stale {
        let _ = writeln!(
            out,
            "  {}",
            paint.dim("Rewind has not looked at the latest spec yet")
        );
    }
    if !v.conditions.is_empty() {
        let _ = writeln!(out, "{}", paint.bold("Conditions"));
        for c in &v.conditions {
            let words = condition_words(&c.type_, &c.status);
            let words = match (c.type_.as_str(), c.status.as_str()) {
                ("Ready", "True") | ("Stalled", "False") | ("Pinned", "True") => paint.green(words),
                ("Stalled", "True") | ("Ready", "False") => paint.red(words),
                _ => words.to_owned(),
            };
            let _ = writeln!(
                out,
                "  {:<15}{words} ({}, {} ago){}",
                c.type_,
                c.reason,
                age(now, c.last_transition_time.0),
                if c.message.is_empty() {
                    String::new()
                } else {
                    format!("\n  {:<15}{}", "", paint.dim(&c.message))
                }
            );
        }
    }
    if let Some(rb) = &v.rollback {
        out.push_str(&rollback(&rb.rollback, &rb.timeline, now, paint));
    }
    if !v.next.is_empty() {
        let _ = writeln!(out, "{}", paint.bold("Next"));
        for n in &v.next {
            let _ = writeln!(out, "  {}:", n.why);
            let _ = writeln!(out, "    {}", paint.cyan(&n.command));
        }
    }
    out
}

fn rollback(
    rb: &Rollback,
    timeline: &[super::model::Step],
    now: Timestamp,
    paint: Paint,
) -> String {
    let mut out = String::new();
    let title = if rb.phase.is_finished() {
        "Last rollback"
    } else {
        "Rollback in flight"
    };
    let phase = format!("{:?}", rb.phase);
    let phase = match rb.phase {
        RollbackPhase::Succeeded => paint.green(&phase),
        RollbackPhase::Failed => paint.red(&phase),
        _ => paint.cyan(&phase),
    };
    let _ = writeln!(
        out,
        "{} {}  {} (revision {}) → {} (revision {})  {phase}",
        paint.bold(title),
        rb.id,
        rb.from.version,
        rb.from.revision,
        rb.to.version,
        rb.to.revision
    );
    let who = rb
        .requested_by
        .as_deref()
        .map(|w| format!(", asked by {w}"))
        .unwrap_or_default();
    let _ = writeln!(out, "  Trigger:  {:?} ({}{who})", rb.trigger, rb.reason);
    if let Some(why) = &rb.request_reason {
        let _ = writeln!(out, "  Reason:   {why}");
    }
    if !rb.message.is_empty() {
        let _ = writeln!(out, "  Message:  {}", rb.message);
    }
    let mut previous = rb.detected_at.0;
    for s in timeline {
        let step = seconds_between_f(previous, s.at.0);
        previous = s.at.0;
        let delta = if s.step == "detected" {
            String::new()
        } else {
            format!("(+{})", span(step))
        };
        let line = format!(
            "  {:<18}{}  +{:<8}{:<10}{}",
            s.step.replace('-', " "),
            s.at.0.strftime("%H:%M:%S"),
            span(s.after_seconds),
            delta,
            s.detail.as_deref().unwrap_or_default()
        );
        let _ = writeln!(out, "{}", line.trim_end());
    }
    if !rb.phase.is_finished() {
        let running = rb
            .migrations
            .iter()
            .find(|m| m.phase == MigrationPhase::Running)
            .and_then(|m| m.job.as_ref())
            .map(|j| format!(" (Job {})", j.name))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  {:<18}{} for {}{running}",
            "now",
            paint.cyan(&format!("{:?}", rb.phase)),
            age(
                now,
                timeline.last().map(|s| s.at.0).unwrap_or(rb.detected_at.0)
            )
        );
    }
    if let Some(d) = rb.duration_seconds {
        let _ = writeln!(out, "  Took {} from detection to the end", span(d));
    }
    out
}

fn seconds_between_f(a: Timestamp, b: Timestamp) -> f64 {
    super::model::seconds_between(a, b)
}

#[cfg(test)]
mod tests;

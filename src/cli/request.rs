//! The commands that ask Rewind for something: `rollback`, `retry`, `pause`, `resume`. Each
//! annotates the Release (field manager `kubectl-rewind`, guarded by its resourceVersion so
//! two people acting at once do not overwrite each other) and waits, bounded, for Rewind to
//! answer in the Release's status.

use std::{
    collections::BTreeMap,
    io::IsTerminal,
    process::ExitCode,
    time::{Duration, Instant},
};

use futures::StreamExt;
use jiff::Timestamp;
use kube::{
    Api, ResourceExt,
    api::{ListParams, Patch, PatchParams},
};
use serde::Serialize;
use serde_json::{Value, json};

use super::{
    Output, RollbackArgs,
    commands::{print_data, say, write_out},
    conn::{Conn, Failure, code},
    model, render,
};
use crate::{
    api::{
        MigrationPhase, MigrationStep, PinnedImage, Release, ReleaseStatus, RevisionRef,
        RollbackPhase, RollbackPolicy,
    },
    controller::observe,
    decide::{self, conditions, selection},
    labels,
};

/// How long Rewind has to answer a request before the plugin says it did not.
const ACK: Duration = Duration::from_secs(15);
/// Field manager of the plugin's writes.
const MANAGER: &str = "kubectl-rewind";

/// A request id: unique enough per Release (time to the microsecond, and the process id).
fn request_id() -> String {
    let now = Timestamp::now();
    format!(
        "{}-{:x}",
        now.strftime("%Y%m%dT%H%M%S%6fZ"),
        std::process::id()
    )
}

/// What `rollback --dry-run` (and the check before a real request) learns from Rewind's own
/// planner.
#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Preview {
    /// The live revision it rolls back from.
    pub from: Option<RevisionRef>,
    /// The revision it rolls back to.
    pub to: Option<RevisionRef>,
    /// The images the Deployment would get back, pinned.
    pub images: Vec<PinnedImage>,
    /// The down migrations that would run, newest first.
    pub migrations: Vec<MigrationStep>,
    /// The rollback's first phase.
    pub phase: Option<RollbackPhase>,
    /// Why Rewind would refuse it (reason and message), when it would.
    pub refused: Option<Refused>,
    /// Irreversible migrations the rollback crosses (what --allow-irreversible names).
    pub irreversible: Vec<String>,
}

/// A refusal.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Refused {
    /// PascalCase reason.
    pub reason: String,
    /// For a person.
    pub message: String,
}

/// The Release as the operator would see it with the request's annotations on it.
fn with_annotations(release: &Release, set: &BTreeMap<&str, Option<String>>) -> Release {
    let mut r = release.clone();
    let a = r.metadata.annotations.get_or_insert_with(BTreeMap::new);
    for (k, v) in set {
        match v {
            Some(v) => a.insert((*k).to_owned(), v.clone()),
            None => a.remove(*k),
        };
    }
    r
}

/// Run Rewind's planner on the Release with `annotations` applied, over what the API server
/// shows now. None when the user may not read what the planner needs (then the operator
/// alone judges the request).
async fn plan_with(
    conn: &Conn,
    release: &Release,
    annotations: &BTreeMap<&str, Option<String>>,
) -> Result<Option<decide::Plan>, Failure> {
    let ns = &conn.namespace;
    let observed = match observe::read(&conn.client, release, ns).await {
        Ok(o) => o,
        Err((_, kube::Error::Api(s))) if s.code == 403 => return Ok(None),
        Err((what, e)) => {
            let mut f = conn.api_failure(e, "read", &what).await;
            f.message = format!("cannot read {what}: {}", f.message);
            return Err(f);
        }
    };
    let policies: Vec<std::sync::Arc<RollbackPolicy>> =
        match Api::<RollbackPolicy>::namespaced(conn.client.clone(), ns)
            .list(&ListParams::default())
            .await
        {
            Ok(l) => l.items.into_iter().map(std::sync::Arc::new).collect(),
            Err(kube::Error::Api(s)) if s.code == 403 => return Ok(None),
            Err(e) => {
                return Err(conn
                    .api_failure(e, "list", "rollbackpolicies.rewind.dev")
                    .await);
            }
        };
    let others = match conn.releases().list(&ListParams::default()).await {
        Ok(l) => l.items,
        Err(e) => return Err(conn.api_failure(e, "list", "releases.rewind.dev").await),
    };
    let asked = with_annotations(release, annotations);
    let (policy, policy_error) = match selection::resolve(&asked, &policies) {
        Ok(p) => (p, None),
        Err(e) => (decide::Policy::default(), Some(e)),
    };
    // The older Release keeps a shared Deployment (as the operator decides it).
    let key = |r: &Release| {
        (
            r.metadata.creation_timestamp.clone().map(|t| t.0),
            r.name_any(),
        )
    };
    let claimed_by = others
        .iter()
        .filter(|r| {
            r.spec.target.name == release.spec.target.name
                && r.uid() != release.uid()
                && key(r) < key(release)
        })
        .map(key)
        .min()
        .map(|(_, n)| n);
    let resolved = BTreeMap::new();
    Ok(Some(decide::plan(&decide::Input {
        release: &asked,
        policy: &policy,
        policy_error,
        observed: &observed,
        claimed_by,
        resolved: &resolved,
        now: Timestamp::now(),
        blind: &[],
    })))
}

/// What a plan says about the rollback request `id` (to `to`).
fn preview_of(release: &Release, plan: &decide::Plan, id: &str) -> Preview {
    let st = &plan.status;
    let mut p = Preview {
        from: None,
        to: None,
        images: Vec::new(),
        migrations: Vec::new(),
        phase: None,
        refused: None,
        irreversible: Vec::new(),
    };
    if !answered(st, id) {
        // The planner did something else first (paused, a rollback in flight, the target
        // missing…): its Ready condition says what.
        let (reason, message) = conditions::get(&st.conditions, conditions::READY)
            .map(|c| (c.reason.clone(), c.message.clone()))
            .unwrap_or_else(|| ("NotActedOn".into(), "Rewind would not act on it now".into()));
        p.refused = Some(Refused {
            reason,
            message: format!("Rewind would not act on the request now: {message}"),
        });
        return p;
    }
    match conditions::get(&st.conditions, conditions::MANUAL_ROLLBACK) {
        Some(c) if c.status == "True" => {}
        Some(c) => {
            p.refused = Some(Refused {
                reason: c.reason.clone(),
                message: c.message.clone(),
            });
            return p;
        }
        None => {}
    }
    if let Some(rb) = &st.rollback {
        p.from = Some(rb.from.clone());
        p.to = Some(rb.to.clone());
        p.phase = Some(rb.phase);
        // Nothing runs in a preview: the step the plan would start is still to run.
        p.migrations = rb.migrations.clone();
        for m in &mut p.migrations {
            if m.phase == MigrationPhase::Running {
                m.phase = MigrationPhase::Pending;
                if let Some(j) = m.job.as_mut() {
                    j.phase = MigrationPhase::Pending;
                    j.started_at = None;
                }
            }
        }
        p.images = st
            .history
            .iter()
            .find(|r| r.revision == rb.to.revision)
            .map(|r| r.images.clone())
            .unwrap_or_default();
        let irreversible = |v: &str| {
            release.status.as_ref().is_some_and(|s| {
                s.history
                    .iter()
                    .any(|r| r.version == v && r.migration.as_ref().is_some_and(|m| !m.reversible))
            })
        };
        p.irreversible = rb
            .migrations
            .iter()
            .filter(|m| m.phase == MigrationPhase::Skipped && irreversible(&m.version))
            .map(|m| m.version.clone())
            .collect();
    }
    p
}

/// Rewind answered the rollback request with this id.
fn answered(st: &ReleaseStatus, id: &str) -> bool {
    st.handled
        .as_ref()
        .and_then(|h| h.request_id.as_deref())
        .is_some_and(|h| h == id)
}

/// A rollback request on the Release that Rewind has not answered yet: (value, who).
fn pending_request(release: &Release) -> Option<(String, String)> {
    model::pending(release).map(|p| (p.to, p.requested_by.unwrap_or_else(|| "someone".into())))
}

/// Merge-patch annotations, only if the Release is still at `rv`: a change in between (another
/// person's request, Rewind's status) is read again and the patch retried, at most 5 times.
async fn annotate(
    conn: &Conn,
    release: &mut Release,
    set: &BTreeMap<&str, Option<String>>,
    check: impl Fn(&Release) -> Result<(), Failure>,
) -> Result<(), Failure> {
    let name = release.name_any();
    for _ in 0..5 {
        check(release)?;
        let annotations: serde_json::Map<String, Value> = set
            .iter()
            .map(|(k, v)| {
                (
                    (*k).to_owned(),
                    v.clone().map_or(Value::Null, Value::String),
                )
            })
            .collect();
        let patch = json!({"metadata": {
            "resourceVersion": release.resource_version(),
            "annotations": annotations,
        }});
        let params = PatchParams {
            field_manager: Some(MANAGER.into()),
            ..Default::default()
        };
        match conn
            .releases()
            .patch(&name, &params, &Patch::Merge(&patch))
            .await
        {
            Ok(r) => {
                *release = r;
                return Ok(());
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {
                *release = conn.release(&name).await?;
            }
            Err(e) => return Err(conn.api_failure(e, "patch", "releases.rewind.dev").await),
        }
    }
    Err(Failure::failed(format!(
        "Release {name} kept changing while the request was written; try again"
    )))
}

/// Wait until `done` says the Release answered, at most `limit`; a watch, not polling.
async fn await_release<T>(
    conn: &Conn,
    name: &str,
    limit: Duration,
    mut done: impl FnMut(&Release) -> Option<T>,
) -> Result<Option<T>, Failure> {
    let mut changes = conn.watch_release(name);
    let waited = tokio::time::timeout(limit, async {
        while let Some(e) = changes.next().await {
            match e {
                Ok(Some(r)) => {
                    if let Some(t) = done(&r) {
                        return Ok(Some(t));
                    }
                }
                Ok(None) => return Err(Failure::failed(format!("Release {name} was deleted"))),
                Err(e) => {
                    // Not allowed to watch does not pass by itself; a cut watch resumes.
                    if let Some(f) = conn.watch_failure(&e, "releases.rewind.dev").await {
                        return Err(f);
                    }
                }
            }
        }
        Ok(None)
    })
    .await;
    match waited {
        Ok(r) => r,
        Err(_) => Ok(None),
    }
}

fn not_acknowledged(conn: &Conn, name: &str, what: &str, undo: Option<&str>) -> Failure {
    let ns = &conn.namespace;
    let f = Failure::failed(format!(
        "Rewind has not acknowledged the {what} within {}s: is the operator running?",
        ACK.as_secs()
    ))
    .code(code::TIMEOUT)
    .hint("the request stays on the Release; Rewind acts on it when it runs")
    .hint("check the operator: kubectl get pods -A -l app.kubernetes.io/name=rewind")
    .hint("and its log: kubectl logs -n rewind-system deploy/rewind");
    match undo {
        Some(undo) => f.hint(format!(
            "to withdraw the request: kubectl annotate release {name} -n {ns} {undo}"
        )),
        None => f,
    }
}

/// The `kubectl annotate` arguments that take a rollback request off a Release.
fn withdraw() -> String {
    [
        labels::ROLLBACK_TO,
        labels::REQUEST_ID,
        labels::REQUESTED_BY,
        labels::REASON,
        labels::ALLOW_IRREVERSIBLE,
    ]
    .map(|k| format!("{k}-"))
    .join(" ")
}

/// `rollback`.
pub async fn rollback(conn: &Conn, args: RollbackArgs) -> Result<ExitCode, Failure> {
    let started = Instant::now();
    let deadline = args
        .timeout
        .value()
        .map_err(|e| Failure::failed(format!("--timeout: {e}")).code(code::USAGE))?;
    let output = args.format.output;
    let name = args.release.clone();
    let ns = conn.namespace.clone();
    let mut release = conn.release(&name).await?;
    let status = release.status.clone().unwrap_or_default();
    let to = args.to.trim().to_owned();
    if to.is_empty() {
        return Err(Failure::failed("--to needs a version, or \"previous\"").code(code::USAGE));
    }
    if to != labels::PREVIOUS && !status.history.iter().any(|r| r.version == to) {
        let mut known: Vec<&str> = Vec::new();
        for r in &status.history {
            if !known.contains(&r.version.as_str()) {
                known.push(&r.version);
            }
        }
        return Err(Failure::failed(format!(
            "Release {name} has no revision of version {to:?} in its history"
        ))
        .hint(if known.is_empty() {
            "it has no revisions yet: nothing was deployed".to_owned()
        } else {
            format!("known versions, newest first: {}", known.join(", "))
        }));
    }
    // What the Release alone shows (the planner's check needs more rights): a request
    // pending, paused, a rollback in flight.
    let local_check = |r: &Release| -> Result<(), Failure> {
        if let Some((value, who)) = pending_request(r) {
            return Err(Failure::failed(format!(
                "{who} asked for a rollback of {name} to {value} and Rewind has not answered it yet; it was not overwritten"
            ))
            .hint(format!("follow it: kubectl rewind status {name} -n {ns} --watch"))
            .hint(format!(
                "or withdraw it first: kubectl annotate release {name} -n {ns} {}",
                withdraw()
            )));
        }
        if let Some(why) = model::paused(r) {
            return Err(Failure::failed(format!(
                "{name} is paused ({why}): Rewind would not act on a rollback; nothing was changed"
            ))
            .hint(format!(
                "resume it first: kubectl rewind resume {name} -n {ns}"
            )));
        }
        if let Some(rb) = r
            .status
            .as_ref()
            .and_then(|s| s.rollback.as_ref())
            .filter(|rb| !rb.phase.is_finished())
        {
            return Err(Failure::failed(format!(
                "rollback {} ({} → {}) is in flight ({:?}); a second one waits for it to end; nothing was changed",
                rb.id, rb.from.version, rb.to.version, rb.phase
            ))
            .hint(format!("follow it: kubectl rewind status {name} -n {ns} --watch")));
        }
        Ok(())
    };
    local_check(&release)?;
    let who = conn.whoami().await;
    let id = request_id();
    let mut set: BTreeMap<&str, Option<String>> = BTreeMap::from([
        (labels::ROLLBACK_TO, Some(to.clone())),
        (labels::REQUEST_ID, Some(id.clone())),
        (labels::REQUESTED_BY, who.clone()),
        (
            labels::REASON,
            args.reason.clone().filter(|r| !r.trim().is_empty()),
        ),
        // Allowed for this request only when asked for with it: one left from an earlier
        // request must not let this one cross an irreversible migration unasked.
        (labels::ALLOW_IRREVERSIBLE, None),
    ]);
    let mut preview = plan_with(conn, &release, &set)
        .await?
        .map(|plan| preview_of(&release, &plan, &id));
    if args.allow_irreversible {
        // Name exactly the irreversible migrations this rollback crosses: the planner says
        // which when it can be asked; else every irreversible revision newer than the target.
        let crossed = match &preview {
            Some(_) => crossed_irreversible(conn, &release, &set, &id).await?,
            None => irreversible_newer_than(&release, &to),
        };
        if !crossed.is_empty() {
            set.insert(labels::ALLOW_IRREVERSIBLE, Some(crossed.join(",")));
            if preview.is_some() {
                preview = plan_with(conn, &release, &set)
                    .await?
                    .map(|plan| preview_of(&release, &plan, &id));
            }
        }
    }
    let request = json!({"release": name, "namespace": ns, "to": to, "id": id, "requestedBy": who, "reason": args.reason});
    if args.dry_run {
        return dry_run(conn, &name, &to, preview, args.allow_irreversible, output);
    }
    if let Some(Preview {
        refused: Some(r), ..
    }) = &preview
    {
        if output != Output::Table {
            print_data(
                &json!({"request": request, "accepted": false, "reason": r.reason, "message": r.message}),
                output,
            )?;
        }
        return Err(refusal(&release, &name, &ns, &to, r));
    }
    annotate(conn, &mut release, &set, local_check).await?;
    let by = who.as_deref().unwrap_or("an unnamed user");
    if output == Output::Table {
        eprintln!(
            "Asked Rewind to roll {ns}/{name} back to {to} (request {id}, as {by}); waiting for it to answer…"
        );
    }
    // --timeout bounds the whole command only with --wait.
    let ack_limit = if args.wait {
        ACK.min(deadline.saturating_sub(started.elapsed()))
    } else {
        ACK
    };
    let answer = await_release(conn, &name, ack_limit, |r| {
        r.status.as_ref().filter(|s| answered(s, &id)).cloned()
    })
    .await?;
    let Some(st) = answer else {
        if ack_limit < ACK {
            return Err(Failure::failed(format!(
                "timed out after {} waiting for Rewind to answer",
                render::span(started.elapsed().as_secs_f64())
            ))
            .code(code::TIMEOUT));
        }
        return Err(not_acknowledged(
            conn,
            &name,
            "rollback request",
            Some(&withdraw()),
        ));
    };
    let condition = conditions::get(&st.conditions, conditions::MANUAL_ROLLBACK);
    // Ours only if the rollback says it was started by this request (a request on the
    // Deployment answered in the same pass could have started its own).
    let Some(rb) = st
        .rollback
        .clone()
        .filter(|rb| rb.request_id.as_deref() == Some(id.as_str()))
        .filter(|_| condition.is_some_and(|c| c.status == "True"))
    else {
        let (reason, message) = match condition {
            Some(c) if c.status != "True" => (c.reason.clone(), c.message.clone()),
            _ => (
                "Superseded".to_owned(),
                "Rewind answered the request, but the rollback it started is another one (a rollback-to on the Deployment at the same moment)".to_owned(),
            ),
        };
        if output != Output::Table {
            print_data(
                &json!({"request": request, "accepted": false, "reason": reason, "message": message}),
                output,
            )?;
        }
        return Err(
            Failure::failed(format!("Rewind refused the rollback ({reason}): {message}")).hint(
                format!("kubectl rewind status {name} -n {ns} shows what runs and what to do next"),
            ),
        );
    };
    if output == Output::Table {
        say(format!(
            "Rewind accepted it: rollback {} from {} (revision {}) to {} (revision {}), phase {:?}.",
            rb.id, rb.from.version, rb.from.revision, rb.to.version, rb.to.revision, rb.phase
        ))?;
    }
    if !args.wait {
        if output != Output::Table {
            print_rollback(&request, &rb, output)?;
        } else {
            say(format!(
                "Follow it: kubectl rewind status {name} -n {ns} --watch"
            ))?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let left = deadline.saturating_sub(started.elapsed());
    let Some(done) = follow_rollback(conn, &name, &rb.id, left, started, output).await? else {
        return Err(Failure::failed(format!(
            "timed out after {}; the rollback goes on",
            render::span(started.elapsed().as_secs_f64())
        ))
        .code(code::TIMEOUT)
        .hint(format!(
            "follow it: kubectl rewind status {name} -n {ns} --watch"
        )));
    };
    if output != Output::Table {
        print_rollback(&request, &done, output)?;
    }
    if done.phase == RollbackPhase::Succeeded {
        if output == Output::Table {
            say(format!(
                "Rolled back: {ns}/{name} runs {} (revision {}) again, {} after the request.",
                done.to.version,
                done.to.revision,
                render::span(started.elapsed().as_secs_f64())
            ))?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let release = conn.release(&name).await?;
    let view = model::status(&release, &[]);
    let mut f = Failure::failed(format!(
        "rollback {} failed ({}): {}",
        done.id, done.reason, done.message
    ));
    for n in view.next {
        f = f.hint(format!("{}: {}", n.why, n.command));
    }
    Err(f)
}

/// Irreversible revisions newer than the newest revision of `to` (all of them for
/// `previous`): what `--allow-irreversible` names when the planner cannot be asked.
fn irreversible_newer_than(release: &Release, to: &str) -> Vec<String> {
    let Some(st) = release.status.as_ref() else {
        return Vec::new();
    };
    let floor = st
        .history
        .iter()
        .filter(|r| r.version == to)
        .map(|r| r.revision)
        .max()
        .unwrap_or(-1);
    let mut versions: Vec<String> = Vec::new();
    for r in &st.history {
        if r.revision > floor
            && r.migration.as_ref().is_some_and(|m| !m.reversible)
            && !versions.contains(&r.version)
        {
            versions.push(r.version.clone());
        }
    }
    versions
}

/// `rollback -o json|yaml`: the request and the rollback it started.
fn print_rollback(
    request: &Value,
    rb: &crate::api::Rollback,
    output: Output,
) -> Result<(), Failure> {
    print_data(
        &json!({
            "request": request,
            "accepted": true,
            "rollback": model::RollbackView { rollback: rb.clone(), timeline: model::timeline(rb) },
        }),
        output,
    )
}

/// A refusal the planner predicts, in the words of its condition (without the preamble that
/// names the annotation), with what to do about it.
fn refusal(release: &Release, name: &str, ns: &str, to: &str, r: &Refused) -> Failure {
    let message = r
        .message
        .split_once(" refused: ")
        .map_or(r.message.as_str(), |(_, why)| why);
    let message = message.trim_end_matches("; nothing was changed");
    let mut f = Failure::failed(format!(
        "Rewind would refuse the rollback of {name} to {to} ({}): {message}",
        r.reason
    ))
    .hint("nothing was changed");
    match r.reason.as_str() {
        crate::reasons::IRREVERSIBLE_MIGRATION => {
            f = f.hint(format!(
                "to roll back anyway: kubectl rewind rollback {name} --to {to} --allow-irreversible -n {ns}"
            ))
        }
        crate::reasons::TARGET_NOT_HEALTHY | crate::reasons::UNKNOWN_VERSION => {
            let choices = model::healthy_versions(release);
            f = f.hint(if choices.is_empty() {
                "no other version's newest revision was healthy".to_owned()
            } else {
                format!("versions it can roll back to: {}", choices.join(", "))
            });
        }
        crate::reasons::MIGRATION_FAILED => {
            f = f.hint(format!(
                "go on from the failed step once it is fixed: kubectl rewind retry {name} -n {ns}"
            ))
        }
        _ => {
            f = f.hint(format!(
                "where it stands: kubectl rewind status {name} -n {ns}"
            ))
        }
    }
    f
}

/// The irreversible versions the rollback crosses when every override is given.
async fn crossed_irreversible(
    conn: &Conn,
    release: &Release,
    set: &BTreeMap<&str, Option<String>>,
    id: &str,
) -> Result<Vec<String>, Failure> {
    // Ask the planner with every irreversible version of history allowed: the steps it skips
    // are the ones this rollback crosses.
    let names: Vec<String> = release
        .status
        .as_ref()
        .map(|s| {
            s.history
                .iter()
                .filter(|r| r.migration.as_ref().is_some_and(|m| !m.reversible))
                .map(|r| r.version.clone())
                .collect()
        })
        .unwrap_or_default();
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let mut all = set.clone();
    all.insert(labels::ALLOW_IRREVERSIBLE, Some(names.join(",")));
    Ok(plan_with(conn, release, &all)
        .await?
        .map(|plan| preview_of(release, &plan, id).irreversible)
        .unwrap_or_default())
}

fn dry_run(
    conn: &Conn,
    name: &str,
    to: &str,
    preview: Option<Preview>,
    allow_irreversible: bool,
    output: Output,
) -> Result<ExitCode, Failure> {
    let ns = &conn.namespace;
    let Some(p) = preview else {
        return Err(Failure::failed(
            "cannot preview: you may not read the Deployment, its pods, Jobs or the RollbackPolicies that Rewind's planner looks at",
        )
        .hint("nothing was changed"));
    };
    if output != Output::Table {
        print_data(&p, output)?;
        return Ok(if p.refused.is_some() {
            ExitCode::from(code::FAILED)
        } else {
            ExitCode::SUCCESS
        });
    }
    let paint = conn.paint;
    let mut out = format!(
        "{} {ns}/{name} to {to} (dry run: nothing was changed)\n",
        paint.bold("Rolling back")
    );
    if let Some(r) = &p.refused {
        out.push_str(&format!(
            "  {} ({}): {}\n",
            paint.red("Refused"),
            r.reason,
            r.message
        ));
        write_out(&out)?;
        return Ok(ExitCode::from(code::FAILED));
    }
    if let (Some(from), Some(to)) = (&p.from, &p.to) {
        out.push_str(&format!(
            "  From:  {} (revision {})\n  To:    {} (revision {})\n",
            from.version, from.revision, to.version, to.revision
        ));
    }
    out.push_str("  Images the Deployment gets back:\n");
    for i in &p.images {
        out.push_str(&format!(
            "    {}: {}\n",
            i.container,
            match i.digest.as_deref() {
                Some(d) => crate::image::ImageRef::parse(&i.image).pinned(d),
                None => format!("{} (no digest recorded)", i.image),
            }
        ));
    }
    if p.migrations.is_empty() {
        out.push_str("  Migrations: none (the schema does not change)\n");
    } else {
        out.push_str("  Down migrations, in order:\n");
        for m in &p.migrations {
            out.push_str(&format!(
                "    {} → {}: schema {} → {}, image {}{}{}\n",
                m.version,
                m.to_version,
                m.from_schema_version,
                if m.to_schema_version.is_empty() {
                    "none"
                } else {
                    &m.to_schema_version
                },
                m.image,
                m.job
                    .as_ref()
                    .map(|j| format!(", Job {}", j.name))
                    .unwrap_or_default(),
                if m.phase == MigrationPhase::Skipped {
                    " — skipped (no down, or irreversible and allowed)"
                } else {
                    ""
                }
            ));
        }
    }
    if let Some(phase) = p.phase {
        out.push_str(&format!("  First step: {phase:?}\n"));
    }
    out.push_str(&format!(
        "Run it: kubectl rewind rollback {name} --to {to}{} -n {ns} --wait\n",
        if allow_irreversible {
            " --allow-irreversible"
        } else {
            ""
        }
    ));
    write_out(&out)?;
    Ok(ExitCode::SUCCESS)
}

/// Follow rollback `id` phase by phase until it ends (Some) or `limit` passes (None).
async fn follow_rollback(
    conn: &Conn,
    name: &str,
    id: &str,
    limit: Duration,
    started: Instant,
    output: Output,
) -> Result<Option<crate::api::Rollback>, Failure> {
    let terminal = output == Output::Table && std::io::stderr().is_terminal();
    let mut last = String::new();
    let mut last_at = Instant::now();
    let mut changes = conn.watch_release(name);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let run = async {
        loop {
            let event = tokio::select! {
                e = changes.next() => e,
                _ = tick.tick(), if terminal => {
                    // Keep the elapsed time of the current step moving.
                    eprint!("\r\x1b[K  {last}  {}", render::span(last_at.elapsed().as_secs_f64()));
                    continue;
                }
            };
            let r = match event {
                None => return Ok(None),
                Some(Ok(Some(r))) => r,
                Some(Ok(None)) => {
                    return Err(Failure::failed(format!("Release {name} was deleted")));
                }
                Some(Err(e)) => match conn.watch_failure(&e, "releases.rewind.dev").await {
                    Some(f) => return Err(f),
                    None => continue,
                },
            };
            let Some(rb) = r.status.as_ref().and_then(|s| {
                s.rollback
                    .iter()
                    .chain(&s.rollbacks)
                    .find(|rb| rb.id == id)
                    .cloned()
            }) else {
                continue;
            };
            let step = describe_step(&rb);
            if step != last {
                if output == Output::Table {
                    let at = render::span(started.elapsed().as_secs_f64());
                    if terminal {
                        eprintln!("\r\x1b[K  +{at:<8}{step}");
                    } else {
                        eprintln!("  +{at:<8}{step}");
                    }
                }
                last = step;
                last_at = Instant::now();
            }
            if rb.phase.is_finished() {
                return Ok(Some(rb));
            }
        }
    };
    match tokio::time::timeout(limit, run).await {
        Ok(r) => {
            if terminal {
                eprint!("\r\x1b[K");
            }
            r
        }
        Err(_) => {
            if terminal {
                eprintln!();
            }
            Ok(None)
        }
    }
}

/// One line for where a rollback stands.
fn describe_step(rb: &crate::api::Rollback) -> String {
    let running = rb
        .migrations
        .iter()
        .find(|m| matches!(m.phase, MigrationPhase::Running | MigrationPhase::Pending));
    match (rb.phase, running) {
        (RollbackPhase::MigratingDown | RollbackPhase::MigratingDownAfter, Some(m)) => format!(
            "{:?}: {} → {} (schema {} → {}){}",
            rb.phase,
            m.version,
            m.to_version,
            m.from_schema_version,
            if m.to_schema_version.is_empty() {
                "none"
            } else {
                &m.to_schema_version
            },
            m.job
                .as_ref()
                .map(|j| format!(", Job {}", j.name))
                .unwrap_or_default()
        ),
        (RollbackPhase::RestoringImages, _) => {
            format!(
                "RestoringImages: the Deployment gets {}'s digests",
                rb.to.version
            )
        }
        (RollbackPhase::Verifying, _) => format!(
            "Verifying: waiting for {}'s pods to be available",
            rb.to.version
        ),
        (RollbackPhase::Succeeded, _) => "Succeeded".into(),
        (RollbackPhase::Failed, _) => format!("Failed ({}): {}", rb.reason, rb.message),
        (phase, _) => format!("{phase:?}"),
    }
}

/// `retry`.
pub async fn retry(conn: &Conn, name: &str) -> Result<ExitCode, Failure> {
    let ns = conn.namespace.clone();
    let mut release = conn.release(name).await?;
    let st = release.status.clone().unwrap_or_default();
    let halted = st
        .rollback
        .as_ref()
        .filter(|rb| rb.phase == RollbackPhase::Failed)
        .filter(|rb| {
            rb.migrations
                .iter()
                .any(|m| m.phase == MigrationPhase::Failed)
        });
    let stalled = conditions::get(&st.conditions, conditions::STALLED)
        .filter(|c| c.status == "True")
        .map(|c| c.reason.clone());
    if let Some(why) = model::paused(&release) {
        return Err(Failure::failed(format!(
            "{name} is paused ({why}): Rewind does not act on a retry while paused; nothing was changed"
        ))
        .hint(format!("resume it first: kubectl rewind resume {name} -n {ns}")));
    }
    // The stalls a retry ends; the others (target or container missing, policy error,
    // claimed target) end when what they name is fixed.
    let retryable = |reason: &str| {
        [
            crate::reasons::IMAGE_FIELD_CONTESTED,
            crate::reasons::MIGRATION_FAILED,
            crate::reasons::MIGRATION_TIMED_OUT,
            crate::reasons::MIGRATION_JOB_DELETED,
        ]
        .contains(&reason)
    };
    let what = if let Some(b) = &st.blocked {
        format!(
            "{} is blocked since the rollback; Rewind will deploy it again",
            b.version
        )
    } else if let Some(rb) = halted {
        format!(
            "rollback {} halted at a failed migration; Rewind goes on from the failed step",
            rb.id
        )
    } else if let Some(reason) = stalled.as_deref().filter(|r| retryable(r)) {
        format!("{name} is stalled ({reason}); Rewind tries again")
    } else {
        let mut f = Failure::failed(match &stalled {
            Some(reason) => format!(
                "a retry does not end this stall ({reason}): it ends when what it names is fixed; nothing was changed"
            ),
            None => format!(
                "nothing to retry: {name} has no blocked version, no halted rollback and is not stalled"
            ),
        });
        for n in model::status(&release, &[]).next {
            f = f.hint(format!("{}: {}", n.why, n.command));
        }
        return Err(f.hint(format!(
            "kubectl rewind status {name} -n {ns} shows where it stands"
        )));
    };
    let value = request_id();
    let mut set = BTreeMap::from([(labels::RETRY, Some(value.clone()))]);
    // Who asked, unless that would rename the asker of a rollback request still pending.
    if model::pending(&release).is_none() {
        set.insert(labels::REQUESTED_BY, conn.whoami().await);
    }
    annotate(conn, &mut release, &set, |_| Ok(())).await?;
    say(format!(
        "Set {}={value} on {ns}/{name}: {what}.",
        labels::RETRY
    ))?;
    let ack = await_release(conn, name, ACK, |r| {
        r.status
            .as_ref()
            .and_then(|s| s.handled.as_ref())
            .and_then(|h| h.retry.as_deref())
            .filter(|h| *h == value)
            .map(|_| ())
    })
    .await?;
    if ack.is_none() {
        return Err(not_acknowledged(
            conn,
            name,
            "retry",
            Some(&format!("{}-", labels::RETRY)),
        ));
    }
    say(format!(
        "Rewind took the retry. Follow it: kubectl rewind status {name} -n {ns} --watch"
    ))?;
    Ok(ExitCode::SUCCESS)
}

/// `pause`.
pub async fn pause(conn: &Conn, name: &str, reason: Option<String>) -> Result<ExitCode, Failure> {
    let ns = conn.namespace.clone();
    let mut release = conn.release(name).await?;
    if let Some(why) = model::paused(&release) {
        say(format!("{ns}/{name} is already paused ({why})."))?;
        return Ok(ExitCode::SUCCESS);
    }
    let who = conn
        .whoami()
        .await
        .unwrap_or_else(|| "kubectl-rewind".into());
    let value = match reason.as_deref().map(str::trim).filter(|r| !r.is_empty()) {
        Some(r) => format!("{who}: {r}"),
        None => who,
    };
    if release
        .status
        .as_ref()
        .and_then(|s| s.rollback.as_ref())
        .is_some_and(|rb| !rb.phase.is_finished())
    {
        eprintln!("Note: a rollback is in flight; pausing stops it where it is until resume.");
    }
    let set = BTreeMap::from([(labels::PAUSED, Some(value.clone()))]);
    annotate(conn, &mut release, &set, |_| Ok(())).await?;
    say(format!("Set {}={value:?} on {ns}/{name}.", labels::PAUSED))?;
    let ack = await_release(conn, name, ACK, |r| {
        (r.status.as_ref().and_then(|s| s.phase) == Some(crate::api::Phase::Paused)).then_some(())
    })
    .await?;
    if ack.is_none() {
        return Err(not_acknowledged(
            conn,
            name,
            "pause",
            Some(&format!("{}-", labels::PAUSED)),
        ));
    }
    say(format!(
        "Paused: Rewind neither deploys nor rolls back {name} until: kubectl rewind resume {name} -n {ns}"
    ))?;
    Ok(ExitCode::SUCCESS)
}

/// `resume`.
pub async fn resume(conn: &Conn, name: &str) -> Result<ExitCode, Failure> {
    let ns = conn.namespace.clone();
    let mut release = conn.release(name).await?;
    let annotated = release.annotations().get(labels::PAUSED).is_some();
    if !annotated && !release.spec.paused {
        say(format!("{ns}/{name} is not paused."))?;
        return Ok(ExitCode::SUCCESS);
    }
    if annotated {
        let set = BTreeMap::from([(labels::PAUSED, None)]);
        annotate(conn, &mut release, &set, |_| Ok(())).await?;
        say(format!("Removed {} from {ns}/{name}.", labels::PAUSED))?;
    }
    if release.spec.paused {
        return Err(Failure::failed(format!(
            "{name} stays paused: its spec.paused is true, and kubectl rewind does not edit a Release's spec (in GitOps it is Git's)"
        ))
        .hint("set spec.paused: false where the Release is written (Git), or:")
        .hint(format!(
            "kubectl patch release {name} -n {ns} --type merge -p '{{\"spec\":{{\"paused\":false}}}}'"
        )));
    }
    let ack = await_release(conn, name, ACK, |r| {
        let phase = r.status.as_ref().and_then(|s| s.phase);
        (phase.is_some() && phase != Some(crate::api::Phase::Paused)).then_some(phase)
    })
    .await?;
    match ack {
        Some(phase) => {
            say(format!(
                "Resumed: Rewind acts on {name} again (phase {}).",
                phase.map(|p| format!("{p:?}")).unwrap_or_default()
            ))?;
            Ok(ExitCode::SUCCESS)
        }
        None => Err(not_acknowledged(conn, name, "resume", None)),
    }
}

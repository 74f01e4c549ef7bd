//! The read commands: `list`, `history`, `status [--watch]`.

use std::{io::Write as _, process::ExitCode, time::Duration};

use futures::{StreamExt, stream};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, ResourceExt,
    api::ListParams,
    runtime::{WatchStreamExt, reflector, watcher},
};
use serde::Serialize;

use super::{
    Output,
    conn::{Conn, Failure, code},
    model, render,
};
use crate::{api::Release, decide::views::PodView, labels};

/// Print `value` as JSON or YAML.
pub fn print_data<T: Serialize>(value: &T, output: Output) -> Result<(), Failure> {
    let text = match output {
        Output::Json => serde_json::to_string_pretty(value)
            .map(|s| s + "\n")
            .map_err(|e| e.to_string()),
        Output::Yaml => serde_saphyr::to_string(value).map_err(|e| e.to_string()),
        Output::Table => return Ok(()),
    }
    .map_err(|e| Failure::failed(format!("cannot encode the output: {e}")))?;
    write_out(&text)
}

/// Write to stdout. A closed pipe (`| head`) ends the command quietly, as it ends kubectl:
/// nobody reads what follows, and a `--watch` must not go on writing into nothing.
pub fn write_out(text: &str) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => Err(Failure::failed(format!("cannot write the output: {e}"))),
    }
}

/// A line on stdout (see [`write_out`]).
pub fn say(line: impl AsRef<str>) -> Result<(), Failure> {
    write_out(&format!("{}\n", line.as_ref()))
}

/// `list`.
pub async fn list(conn: &Conn, all: bool, output: Output) -> Result<ExitCode, Failure> {
    let api: Api<Release> = if all {
        Api::all(conn.client.clone())
    } else {
        conn.releases()
    };
    let mut releases = match api.list(&ListParams::default()).await {
        Ok(l) => l.items,
        Err(e) => {
            let ns = (!all).then_some(conn.namespace.as_str());
            return Err(conn.failure_in(&e, "list", "releases.rewind.dev", ns).await);
        }
    };
    releases.sort_by_key(|r| (r.namespace(), r.name_any()));
    let list = model::List {
        items: releases.iter().map(model::list_item).collect(),
    };
    if output != Output::Table {
        print_data(&list, output)?;
        return Ok(ExitCode::SUCCESS);
    }
    if list.items.is_empty() {
        let where_ = if all {
            "any namespace".to_owned()
        } else {
            format!("namespace {}", conn.namespace)
        };
        eprintln!("No Releases in {where_}.");
        return Ok(ExitCode::SUCCESS);
    }
    write_out(&render::list(&list, all, Timestamp::now(), conn.paint))?;
    Ok(ExitCode::SUCCESS)
}

/// `history`.
pub async fn history(
    conn: &Conn,
    name: &str,
    revision: Option<i64>,
    output: Output,
) -> Result<ExitCode, Failure> {
    let release = conn.release(name).await?;
    let h = model::history(&release);
    match revision {
        None => {
            if output != Output::Table {
                print_data(&h, output)?;
            } else if h.revisions.is_empty() {
                eprintln!(
                    "Release {name} has no revisions yet: Rewind has not deployed it (kubectl rewind status {name} -n {} says why).",
                    conn.namespace
                );
            } else {
                write_out(&render::history(&h, conn.paint))?;
            }
        }
        Some(n) => {
            let Some(entry) = h.revisions.iter().find(|e| e.revision.revision == n) else {
                let known: Vec<String> = h
                    .revisions
                    .iter()
                    .map(|e| format!("{} ({})", e.revision.revision, e.revision.version))
                    .collect();
                return Err(Failure::failed(format!(
                    "Release {name} has no revision {n} in its history"
                ))
                .hint(if known.is_empty() {
                    "it has no revisions yet".to_owned()
                } else {
                    format!("known revisions: {}", known.join(", "))
                }));
            };
            if output != Output::Table {
                print_data(entry, output)?;
            } else {
                write_out(&render::revision(&h, entry, conn.paint))?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The Release's pods (label `rewind.dev/release`), as decisions see them.
async fn pods(conn: &Conn, name: &str) -> Result<Vec<PodView>, Failure> {
    let api: Api<Pod> = Api::namespaced(conn.client.clone(), &conn.namespace);
    let selector = pod_selector(name);
    match api.list(&ListParams::default().labels(&selector)).await {
        Ok(l) => Ok(l.items.iter().map(PodView::from).collect()),
        Err(e) => Err(conn.api_failure(e, "list", "pods").await),
    }
}

/// The Release's workload pods: its label, and not a migration Job's pod (which carries the
/// label too).
fn pod_selector(name: &str) -> String {
    format!("{}={name},!{}", labels::RELEASE, labels::MIGRATION)
}

/// `status`, once or `--watch`ing.
pub async fn status(
    conn: &Conn,
    name: &str,
    watch: bool,
    timeout: Option<Duration>,
    output: Output,
) -> Result<ExitCode, Failure> {
    let release = conn.release(name).await?;
    if !watch {
        let pods = pods(conn, name).await?;
        let view = model::status(&release, &pods);
        if output != Output::Table {
            print_data(&view, output)?;
        } else {
            write_out(&render::status(&view, Timestamp::now(), conn.paint))?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let followed = follow(conn, name, output);
    match timeout {
        Some(t) => match tokio::time::timeout(t, followed).await {
            Ok(r) => r,
            Err(_) => Err(Failure::failed(format!(
                "stopped watching after {}",
                crate::api::duration::format(t)
            ))
            .code(code::TIMEOUT)),
        },
        None => followed.await,
    }
}

/// What `--watch` reacts to.
enum Change {
    Release(Option<Box<Release>>),
    Pods,
    Error(&'static str, Box<watcher::Error>),
}

/// Redraw the status on every change of the Release or its pods (watches, not polling).
async fn follow(conn: &Conn, name: &str, output: Output) -> Result<ExitCode, Failure> {
    let release_changes = conn.watch_release(name).map(|e| match e {
        Ok(r) => Change::Release(r.map(Box::new)),
        Err(e) => Change::Error("releases.rewind.dev", Box::new(e)),
    });
    let (store, writer) = reflector::store::<Pod>();
    let pod_api: Api<Pod> = Api::namespaced(conn.watch_client.clone(), &conn.namespace);
    let pod_changes = reflector(
        writer,
        watcher(
            pod_api,
            watcher::Config::default().labels(&pod_selector(name)),
        ),
    )
    .default_backoff()
    .filter_map(|e| async move {
        match e {
            Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => None,
            Ok(_) => Some(Change::Pods),
            Err(e) => Some(Change::Error("pods", Box::new(e))),
        }
    });
    let mut changes = stream::select(release_changes.boxed(), pod_changes.boxed());
    // A redraw each second keeps the ages honest on a terminal without asking the server.
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let terminal = output == Output::Table && std::io::IsTerminal::is_terminal(&std::io::stdout());
    let mut current: Option<Release> = None;
    let mut shown = String::new();
    let mut problem: Option<String> = None;
    loop {
        tokio::select! {
            change = changes.next() => match change {
                Some(Change::Release(Some(r))) => { current = Some(*r); problem = None; }
                Some(Change::Release(None)) => {
                    return Err(Failure::failed(format!("Release {name} was deleted")));
                }
                Some(Change::Pods) => { problem = None; }
                Some(Change::Error(resource, e)) => {
                    // Not allowed (or gone) does not pass by itself: say so and stop.
                    if let Some(f) = conn.watch_failure(&e, resource).await {
                        return Err(f);
                    }
                    problem = Some(e.to_string());
                }
                None => return Ok(ExitCode::SUCCESS),
            },
            _ = tick.tick(), if terminal => {}
        }
        let Some(release) = current.as_ref() else {
            continue;
        };
        let pods: Vec<PodView> = store.state().iter().map(|p| PodView::from(&**p)).collect();
        let view = model::status(release, &pods);
        let text = match output {
            Output::Table => {
                let mut t = render::status(&view, Timestamp::now(), conn.paint);
                if let Some(p) = &problem {
                    t.push_str(
                        &conn
                            .paint
                            .yellow(&format!("watch interrupted, retrying: {p}\n")),
                    );
                }
                t
            }
            // One document per change: JSON lines, or YAML documents.
            Output::Json => serde_json::to_string(&view)
                .map(|s| s + "\n")
                .unwrap_or_default(),
            Output::Yaml => serde_saphyr::to_string(&view)
                .map(|s| format!("---\n{s}"))
                .unwrap_or_default(),
        };
        if text == shown {
            continue;
        }
        if terminal {
            // Home, draw, clear what is left of the previous drawing.
            write_out(&format!("\x1b[H\x1b[2J{text}"))?;
        } else if output == Output::Table {
            let stamp = Timestamp::now().strftime("%H:%M:%S");
            write_out(&format!("--- {stamp}\n{text}"))?;
        } else {
            write_out(&text)?;
        }
        shown = text;
    }
}

//! Names Rewind puts on or reads from objects: labels, annotations, the field manager.

/// Field manager of every write Rewind makes (server-side apply).
pub const MANAGER: &str = "rewind";
/// Pod-template label naming the Release that owns the Deployment's images.
pub const RELEASE: &str = "rewind.dev/release";
/// Pod-template annotation: the Rewind revision the template belongs to.
pub const REVISION: &str = "rewind.dev/revision";
/// Pod-template annotation: the version of that revision.
pub const VERSION: &str = "rewind.dev/version";
/// On a Release or its Deployment: roll back to this version (or `previous`).
pub const ROLLBACK_TO: &str = "rewind.dev/rollback-to";
/// On a Release: re-arm a version blocked after a rollback (any new value).
pub const RETRY: &str = "rewind.dev/retry";
/// On a Release: who asked for the manual rollback or retry (set by `kubectl rewind`).
pub const REQUESTED_BY: &str = "rewind.dev/requested-by";
/// On a Release: makes a `rollback-to` request distinct (new per request, set by
/// `kubectl rewind`), so asking for the same version twice is two requests.
pub const REQUEST_ID: &str = "rewind.dev/request-id";
/// On a Release: why a person asked for the manual rollback (free text, kept on the rollback).
pub const REASON: &str = "rewind.dev/reason";
/// On a Release: any non-empty value but `false` pauses it as `spec.paused` does; the value
/// says who and why. An annotation, so pausing never edits the spec GitOps owns.
pub const PAUSED: &str = "rewind.dev/paused";
/// On a Release: versions (comma-separated) whose irreversible migration a manual rollback may
/// cross.
pub const ALLOW_IRREVERSIBLE: &str = "rewind.dev/allow-irreversible";
/// On migration Jobs and their pods: `up` or `down`.
pub const MIGRATION: &str = "rewind.dev/migration";
/// On a down migration Job: the rollback it belongs to.
pub const ROLLBACK_ID: &str = "rewind.dev/rollback-id";
/// The `rollback-to` value meaning "the revision before the live one".
pub const PREVIOUS: &str = "previous";

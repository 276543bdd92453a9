//! The library's one error type and the process exit codes it maps to.
//!
//! Every variant carries what a person needs to act: which server, which key, which
//! collection, and a hint at the fix. Messages never hold a password: URIs are redacted
//! before they are stored in an error (see [`crate::redact`]).

use crate::storage::StorageError;

/// Process exit codes, documented in the README. Stable: scripts and monitors rely on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitCode {
    /// The command did what it was asked.
    Success = 0,
    /// An unexpected internal failure (a bug, or a local I/O error).
    Internal = 1,
    /// Bad usage or configuration: a flag, a config file, a snapshot id that does not exist.
    Usage = 2,
    /// MongoDB could not be reached, refused the credentials, or failed during the run.
    Source = 3,
    /// The repository (S3 or folder) could not be reached, refused access, or failed.
    Repository = 4,
    /// Data does not match what the manifest recorded (checksum, count, digest).
    Mismatch = 5,
    /// Another mongokeep operation holds the repository lock.
    LockHeld = 6,
    /// `status`: the newest snapshot or the newest passed verification is too old.
    Stale = 7,
}

impl ExitCode {
    /// All codes, in order; the README's table is tested against this list.
    pub const ALL: [ExitCode; 8] = [
        ExitCode::Success,
        ExitCode::Internal,
        ExitCode::Usage,
        ExitCode::Source,
        ExitCode::Repository,
        ExitCode::Mismatch,
        ExitCode::LockHeld,
        ExitCode::Stale,
    ];

    /// The numeric code.
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// Result alias for the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in mongokeep.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration file, flag or environment variable is wrong.
    #[error("configuration error: {0}")]
    Config(String),

    /// MongoDB did not answer.
    #[error("cannot reach MongoDB at {target}: {detail}\n  fix: check that the server runs and that the host, port and replicaSet in the URI are right")]
    SourceUnreachable { target: String, detail: String },

    /// MongoDB answered but refused (authentication, authorization).
    #[error("MongoDB at {target} refused: {detail}\n  fix: check the user name and password in the URI (and authSource), and that the user may read every database backed up")]
    SourceRefused { target: String, detail: String },

    /// MongoDB failed in the middle of an operation.
    #[error("MongoDB failed while {context}: {detail}")]
    Source { context: String, detail: String },

    /// The repository failed.
    #[error("repository {repo}: {source}")]
    Storage {
        repo: String,
        #[source]
        source: StorageError,
    },

    /// Stored data does not match the manifest.
    #[error("integrity check failed for {key}: expected {expected}, found {actual}")]
    Integrity {
        key: String,
        expected: String,
        actual: String,
    },

    /// The repository lock is held by another run.
    #[error("the repository is locked by another run: {holder}\n  fix: wait for it to finish; a lock not refreshed for {stale_after_minutes} minutes is stale and ignored, or delete {key} if you are sure no run is active")]
    LockHeld {
        holder: String,
        key: String,
        stale_after_minutes: i64,
    },

    /// The snapshot named does not exist.
    #[error("snapshot {id} does not exist in {repo}{}", nearest_hint(.nearest))]
    SnapshotNotFound {
        id: String,
        repo: String,
        nearest: Vec<String>,
    },

    /// A snapshot exists only as garbage from an interrupted run.
    #[error("snapshot {id} is incomplete (no manifest: the run that made it did not finish); it cannot be used and `prune` removes it")]
    SnapshotIncomplete { id: String },

    /// A manifest or archive could not be read.
    #[error("cannot read {what}: {detail}")]
    Format { what: String, detail: String },

    /// A local I/O error outside the repository (config file, output file).
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    /// A prune would leave fewer complete snapshots than the policy's `min_keep`.
    #[error("refusing to prune: the plan removes {removing} snapshots and keeps {kept}, fewer than min_keep = {min_keep}; nothing was deleted\n  fix: check the policy's keep_* rules (and --at); lower min_keep only if keeping so few is intended")]
    RetentionFloor {
        kept: usize,
        removing: usize,
        min_keep: usize,
    },

    /// A verification found differences; the report says which.
    #[error("verification of snapshot {snapshot} FAILED: {problems} difference(s) between the snapshot and what it restores; the report is {report}")]
    VerificationFailed {
        snapshot: String,
        problems: usize,
        report: String,
    },

    /// `status` found the backups or verifications too old.
    #[error("backups need attention: {}", .failed.join("; "))]
    StatusStale { failed: Vec<String> },

    /// The run was stopped by a signal (Ctrl-C, SIGTERM).
    #[error("interrupted")]
    Interrupted,

    /// The source's oplog rolled over since the last stored position: the operations
    /// between `after` and `resumed_at` are lost for point-in-time recovery. What the oplog
    /// still held was stored (`stored`).
    #[error("OPLOG GAP: the oplog no longer holds the operations after {after} (its oldest entry is {resumed_at}); no time in between can be restored\n  stored anyway: {stored}\n  fix: take a new snapshot (`mongokeep backup`) so point-in-time recovery starts again, run `oplog push` more often, or enlarge the oplog (replSetResizeOplog)")]
    OplogGap {
        after: String,
        resumed_at: String,
        stored: String,
    },

    /// The run was cancelled because a sibling task failed; never the root cause.
    #[error("cancelled")]
    Cancelled,

    /// A restore failed after it may have begun to write: `cause` says why; the target may
    /// hold part of the snapshot. The exit code is the cause's.
    #[error("{cause}\n  note: the restore stopped after it began to write: the target may hold part of the snapshot; once the cause is fixed, run the restore again with --drop to replace it")]
    PartlyRestored { cause: Box<Error> },
}

fn nearest_hint(nearest: &[String]) -> String {
    if nearest.is_empty() {
        "; the repository holds no complete snapshot".to_string()
    } else {
        format!("; nearest: {}", nearest.join(", "))
    }
}

impl Error {
    /// The exit code a process should end with for this error.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Error::PartlyRestored { cause } => cause.exit_code(),
            Error::Config(_)
            | Error::SnapshotNotFound { .. }
            | Error::SnapshotIncomplete { .. }
            | Error::RetentionFloor { .. } => ExitCode::Usage,
            Error::SourceUnreachable { .. }
            | Error::SourceRefused { .. }
            | Error::Source { .. }
            | Error::OplogGap { .. } => ExitCode::Source,
            Error::Storage { .. } => ExitCode::Repository,
            Error::Integrity { .. } | Error::Format { .. } | Error::VerificationFailed { .. } => {
                ExitCode::Mismatch
            }
            Error::LockHeld { .. } => ExitCode::LockHeld,
            Error::StatusStale { .. } => ExitCode::Stale,
            Error::Io { .. } | Error::Cancelled | Error::Interrupted => ExitCode::Internal,
        }
    }

    /// `self` from a restore that may have written: wrapped in [`Error::PartlyRestored`],
    /// unless it wrote nothing for sure (a refused plan, an interruption, which says so
    /// itself).
    pub fn after_restore_began(self) -> Self {
        match self {
            Error::Config(_) | Error::Interrupted | Error::PartlyRestored { .. } => self,
            cause => Error::PartlyRestored {
                cause: Box::new(cause),
            },
        }
    }

    /// Build an [`Error::Io`] with context.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// True for the secondary error of a task stopped because another one failed.
    pub fn is_cancelled(&self) -> bool {
        matches!(self, Error::Cancelled)
    }
}

/// Of several errors from tasks that ran together, the one that caused the others.
pub fn root_cause(errors: Vec<Error>) -> Option<Error> {
    let mut fallback = None;
    for e in errors {
        if !e.is_cancelled() {
            return Some(e);
        }
        fallback = Some(e);
    }
    fallback
}

/// Every value when all of `results` succeeded; otherwise the error that explains the
/// others ([`root_cause`]).
///
/// # Errors
/// At least one of `results` failed.
pub fn all_or_root_cause<T>(results: Vec<Result<T>>) -> Result<Vec<T>> {
    let mut out = Vec::with_capacity(results.len());
    let mut errors = Vec::new();
    for r in results {
        match r {
            Ok(x) => out.push(x),
            Err(e) => errors.push(e),
        }
    }
    match root_cause(errors) {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

//! The verification report: what was checked, what differed, how long the restore took.
//! Stored in the repository as JSON (for machines, and for `prune`'s "newest verified"
//! rule) and Markdown (for people).

use std::fmt::Write;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::manifest::{CollectionEntry, Manifest};

/// The result of checking one collection.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CollectionCheck {
    /// Database (of the snapshot).
    pub db: String,
    /// Collection.
    pub name: String,
    /// `collection`, `timeseries` or `view`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `passed` or `failed`.
    pub result: String,
    /// Documents the manifest recorded.
    pub count_expected: u64,
    /// Documents found after the restore.
    pub count_actual: Option<u64>,
    /// Content digest the manifest recorded.
    pub digest_expected: String,
    /// Content digest recomputed after the restore.
    pub digest_actual: Option<String>,
    /// What differs, one line each; empty when it passed.
    pub problems: Vec<String>,
}

impl CollectionCheck {
    /// A check of `e` with nothing found yet.
    pub fn new(e: &CollectionEntry) -> Self {
        Self {
            db: e.db.clone(),
            name: e.name.clone(),
            kind: e.kind.clone(),
            result: "passed".into(),
            count_expected: e.count,
            count_actual: None,
            digest_expected: e.content_digest.clone(),
            digest_actual: None,
            problems: vec![],
        }
    }
}

/// How the live source differs from the snapshot (reported, never a failure).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Drift {
    /// Database.
    pub db: String,
    /// Collection.
    pub name: String,
    /// Documents in the snapshot.
    pub snapshot_count: u64,
    /// Documents in the source now.
    pub source_count: u64,
}

/// One verification.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VerifyReport {
    /// Snapshot id.
    pub snapshot: String,
    /// When the snapshot was taken.
    pub snapshot_started_at: DateTime<Utc>,
    /// `full` or `quick`.
    pub kind: String,
    /// `passed` or `failed`.
    pub result: String,
    /// Start of the verification.
    pub started_at: DateTime<Utc>,
    /// End of the verification.
    pub finished_at: DateTime<Utc>,
    /// Seconds the restore into the scratch databases took (full only): the measured
    /// recovery time.
    pub recovery_seconds: Option<f64>,
    /// The scratch server (redacted) and database prefix.
    pub scratch: Option<String>,
    /// Stored objects whose size or checksum differ, or that could not be read.
    pub object_problems: Vec<String>,
    /// Objects checked (quick).
    pub objects_checked: u64,
    /// Bytes checked (quick).
    pub bytes_checked: u64,
    /// Per collection (full).
    pub collections: Vec<CollectionCheck>,
    /// Drift of the live source (`--compare-source`), not part of the result.
    pub drift: Option<Vec<Drift>>,
    /// For `--to-time`: the last oplog position applied (`seconds:increment`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_to: Option<String>,
}

impl VerifyReport {
    /// An empty report for `manifest`.
    pub fn new(m: &Manifest, kind: &str, started_at: DateTime<Utc>) -> Self {
        Self {
            snapshot: m.snapshot.clone(),
            snapshot_started_at: m.started_at,
            kind: kind.into(),
            result: "passed".into(),
            started_at,
            finished_at: started_at,
            recovery_seconds: None,
            scratch: None,
            object_problems: vec![],
            objects_checked: 0,
            bytes_checked: 0,
            collections: vec![],
            drift: None,
            restored_to: None,
        }
    }

    /// Set every result from the problems found, and the end time.
    pub fn finish(&mut self) {
        for c in &mut self.collections {
            c.result = if c.problems.is_empty() {
                "passed"
            } else {
                "failed"
            }
            .into();
        }
        let failed = !self.object_problems.is_empty()
            || self.collections.iter().any(|c| !c.problems.is_empty());
        self.result = if failed { "failed" } else { "passed" }.into();
        self.finished_at = Utc::now().max(self.started_at);
    }

    /// True when everything matched.
    pub fn passed(&self) -> bool {
        self.result == "passed"
    }

    /// Every problem, one line each, collection problems prefixed with the namespace.
    pub fn problems(&self) -> Vec<String> {
        let mut out = self.object_problems.clone();
        for c in &self.collections {
            out.extend(
                c.problems
                    .iter()
                    .map(|p| format!("{}.{}: {p}", c.db, c.name)),
            );
        }
        out
    }

    /// The summary printed at the end of `verify`.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "verification ({}) of snapshot {}: {}",
            self.kind,
            self.snapshot,
            self.result.to_uppercase()
        );
        if let Some(r) = self.recovery_seconds {
            let _ = write!(s, ", restored in {r:.1} s");
        }
        if let Some(r) = &self.restored_to {
            let _ = write!(s, ", replayed to {r}");
        }
        if self.kind != "quick" {
            let ok = self
                .collections
                .iter()
                .filter(|c| c.problems.is_empty())
                .count();
            let _ = write!(s, ", {ok}/{} collections match", self.collections.len());
        } else {
            let _ = write!(
                s,
                ", {} objects ({} bytes) checked",
                self.objects_checked, self.bytes_checked
            );
        }
        s.push('\n');
        for p in self.problems() {
            let _ = writeln!(s, "  mismatch: {p}");
        }
        for d in self
            .drift
            .iter()
            .flatten()
            .filter(|d| d.snapshot_count != d.source_count)
        {
            let _ = writeln!(
                s,
                "  drift (not a failure): {}.{} has {} documents now, {} in the snapshot",
                d.db, d.name, d.source_count, d.snapshot_count
            );
        }
        s
    }

    /// The Markdown version stored beside the JSON.
    pub fn to_markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "# Verification of snapshot {}\n", self.snapshot);
        let _ = writeln!(
            s,
            "- Result: **{}** ({} verification)",
            self.result.to_uppercase(),
            self.kind
        );
        let _ = writeln!(
            s,
            "- Snapshot taken: {}",
            self.snapshot_started_at.to_rfc3339()
        );
        let _ = writeln!(
            s,
            "- Verified: {} to {}",
            self.started_at.to_rfc3339(),
            self.finished_at.to_rfc3339()
        );
        if let Some(r) = self.recovery_seconds {
            let _ = writeln!(s, "- Measured recovery time (restore): {r:.1} s");
        }
        if let Some(sc) = &self.scratch {
            let _ = writeln!(s, "- Scratch: {sc}");
        }
        if self.kind == "quick" {
            let _ = writeln!(
                s,
                "- Objects checked: {} ({} bytes)",
                self.objects_checked, self.bytes_checked
            );
        }
        for p in &self.object_problems {
            let _ = writeln!(s, "- Stored object problem: {p}");
        }
        if !self.collections.is_empty() {
            let _ = writeln!(s, "\n| collection | type | result | count (manifest / restored) | problems |\n| --- | --- | --- | --- | --- |");
            for c in &self.collections {
                let _ = writeln!(
                    s,
                    "| {}.{} | {} | {} | {} / {} | {} |",
                    c.db,
                    c.name,
                    c.kind,
                    c.result,
                    c.count_expected,
                    c.count_actual.map_or("-".into(), |n| n.to_string()),
                    c.problems.join("; ").replace('|', "\\|")
                );
            }
        }
        if let Some(drift) = &self.drift {
            let _ = writeln!(s, "\n## Drift of the live source (not a failure)\n\n| collection | snapshot | source now |\n| --- | --- | --- |");
            for d in drift {
                let _ = writeln!(
                    s,
                    "| {}.{} | {} | {} |",
                    d.db, d.name, d.snapshot_count, d.source_count
                );
            }
        }
        s
    }
}

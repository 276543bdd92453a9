//! The journal: one small JSON object per operation (backup, prune, restore, verify) under
//! `journal/<yyyy>/<mm>/<time>-<operation>-<nonce>.json` in the repository. It is the log of
//! backup and restore operations a maintenance plan asks for, and what the monthly report
//! reads. Entries are never rewritten; messages are scrubbed of secrets before they are
//! stored.

use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::redact::scrub;
use crate::repository::Repository;
use crate::storage::StorageExt;
use crate::Result;

/// Where the journal lives in a repository.
pub const PREFIX: &str = "journal/";

/// One operation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct JournalEntry {
    /// When the operation started (UTC).
    pub time: DateTime<Utc>,
    /// `backup`, `prune`, `restore` or `verify`.
    pub operation: String,
    /// `success` or `failure` (a verification that found a mismatch is a failure).
    pub outcome: String,
    /// Seconds the operation took.
    pub seconds: f64,
    /// The snapshot concerned, when there is one.
    #[serde(default)]
    pub snapshot: Option<String>,
    /// Figures: documents, bytes, removed snapshots, recovery time...
    #[serde(default)]
    pub figures: serde_json::Value,
    /// The error message, without secrets, when it failed.
    #[serde(default)]
    pub error: Option<String>,
}

impl JournalEntry {
    /// An entry for `operation` started at `time`; `result` gives the outcome.
    pub fn new<T>(operation: &str, time: DateTime<Utc>, result: &Result<T>) -> Self {
        Self {
            time,
            operation: operation.to_string(),
            outcome: if result.is_ok() { "success" } else { "failure" }.to_string(),
            seconds: (Utc::now() - time).num_milliseconds().max(0) as f64 / 1000.0,
            snapshot: None,
            figures: serde_json::Value::Object(Default::default()),
            error: result.as_ref().err().map(|e| scrub(&e.to_string())),
        }
    }

    /// The key the entry is stored under.
    pub fn key(&self, nonce: u16) -> String {
        format!(
            "{PREFIX}{}/{}-{}-{nonce:04x}.json",
            self.time.format("%Y/%m"),
            self.time.format("%Y%m%dT%H%M%S%.3fZ"),
            self.operation
        )
    }
}

/// Append an entry. A journal that cannot be written is reported as a warning and never
/// turns a successful operation into a failed one.
pub async fn append(repo: &Repository, entry: &JournalEntry) {
    let body = serde_json::to_vec_pretty(entry).expect("journal entry serializes");
    if let Err(e) = repo
        .store()
        .put(&entry.key(rand::random()), body.into())
        .await
    {
        tracing::warn!(error = %e, operation = %entry.operation, "could not write the journal entry");
    }
}

/// Every entry at or after `since`, oldest first.
///
/// # Errors
/// The store failed.
pub async fn list(repo: &Repository, since: Option<DateTime<Utc>>) -> Result<Vec<JournalEntry>> {
    Ok(list_with_first_day(repo, since).await?.0)
}

/// As [`list`], with the day of the oldest entry of the whole journal, taken from the same
/// listing's keys (no older entry is read); `None` for an empty journal.
///
/// # Errors
/// The store failed.
pub async fn list_with_first_day(
    repo: &Repository,
    since: Option<DateTime<Utc>>,
) -> Result<(Vec<JournalEntry>, Option<chrono::NaiveDate>)> {
    let store = repo.store();
    let objects = store.list(PREFIX).await.map_err(|e| repo.err(e))?;
    let first_day = objects
        .iter()
        .filter_map(|o| {
            let name = o.key.rsplit('/').next()?;
            chrono::NaiveDate::parse_from_str(name.get(..8)?, "%Y%m%d").ok()
        })
        .min();
    // Keys start with the time, so whole months before `since` need not be read.
    let floor = since.map(|s| format!("{PREFIX}{}", s.format("%Y/%m")));
    let keys: Vec<String> = objects
        .into_iter()
        .map(|o| o.key)
        .filter(|k| k.ends_with(".json") && floor.as_ref().is_none_or(|f| k.as_str() >= f.as_str()))
        .collect();
    let bodies: Vec<Result<Option<bytes::Bytes>>> = futures::stream::iter(keys)
        .map(|k| async move { store.get_opt(&k).await.map_err(|e| repo.err(e)) })
        .buffered(16)
        .collect()
        .await;
    let mut out = Vec::new();
    for b in bodies {
        if let Some(b) = b? {
            match serde_json::from_slice::<JournalEntry>(&b) {
                Ok(e) if since.is_none_or(|s| e.time >= s) => out.push(e),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "skipping an unreadable journal entry"),
            }
        }
    }
    out.sort_by_key(|e| e.time);
    Ok((out, first_day))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use chrono::TimeZone;

    use crate::storage::memory::MemoryStore;

    #[tokio::test]
    async fn entries_round_trip_sorted_and_filtered_by_time() {
        let repo = Repository::new(Arc::new(MemoryStore::new()));
        let t = |d, h| Utc.with_ymd_and_hms(2026, 10, d, h, 0, 0).unwrap();
        for (time, op) in [(t(3, 2), "backup"), (t(1, 2), "backup"), (t(2, 4), "prune")] {
            let mut e = JournalEntry::new::<()>(op, time, &Ok(()));
            e.seconds = 1.5;
            append(&repo, &e).await;
        }
        let failed: Result<()> = Err(crate::Error::Config("bad password=hunter2xyz".into()));
        crate::redact::register_secret("hunter2xyz");
        append(&repo, &JournalEntry::new("verify", t(4, 1), &failed)).await;

        let all = list(&repo, None).await.unwrap();
        let ops: Vec<(&str, u32)> = all
            .iter()
            .map(|e| (e.operation.as_str(), chrono::Datelike::day(&e.time)))
            .collect();
        assert_eq!(
            ops,
            [("backup", 1), ("prune", 2), ("backup", 3), ("verify", 4)]
        );
        assert_eq!(all[3].outcome, "failure");
        let msg = all[3].error.as_deref().unwrap();
        assert!(msg.contains("***") && !msg.contains("hunter2xyz"), "{msg}");
        let recent = list(&repo, Some(t(2, 4))).await.unwrap();
        assert_eq!(recent.len(), 3);
        assert_eq!(recent[0].operation, "prune");
    }

    #[test]
    fn keys_sort_by_time() {
        let e = JournalEntry::new::<()>(
            "backup",
            Utc.with_ymd_and_hms(2026, 11, 2, 2, 0, 0).unwrap(),
            &Ok(()),
        );
        assert_eq!(
            e.key(0xab),
            "journal/2026/11/20261102T020000.000Z-backup-00ab.json"
        );
    }
}

//! `prune` against a repository: read what it holds ([`inventory`]), and carry out a plan
//! ([`execute`]). Planning itself is pure ([`super::plan`]); the command line prints the
//! plan between the two, and stops there on `--dry-run`.
//!
//! A removed snapshot loses its manifest first, then its data: a prune that dies half-way
//! leaves a snapshot without a manifest, which every reader already treats as absent and
//! the next prune removes as garbage. A half-pruned snapshot is never seen as complete.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::plan::{GarbageKind, IncompleteSnapshot, Inventory, Plan, SnapshotInfo};
use crate::repository::{id_time, Repository};
use crate::storage::{ObjectMeta, StorageError, StorageExt};
use crate::Result;

/// Where verification reports live: `reports/verify/<id>/<time>.json`.
pub const VERIFY_REPORTS: &str = "reports/verify/";

/// Whether a verification report says the snapshot passed: a JSON object with
/// `"result": "passed"`. The one place that reads reports; `verify` defines the format.
pub fn report_passed(report: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(report)
        .map(|v| v.get("result").and_then(|r| r.as_str()) == Some("passed"))
        .unwrap_or(false)
}

/// Ids of the snapshots with at least one passed verification report, and of those with
/// a passed full one (a restore).
///
/// # Errors
/// The store failed.
pub async fn verified_snapshots(repo: &Repository) -> Result<(HashSet<String>, HashSet<String>)> {
    let store = repo.store();
    let mut out = HashSet::new();
    let mut full = HashSet::new();
    for o in store.list(VERIFY_REPORTS).await.map_err(|e| repo.err(e))? {
        let Some((id, name)) = o
            .key
            .strip_prefix(VERIFY_REPORTS)
            .and_then(|r| r.split_once('/'))
        else {
            continue;
        };
        if full.contains(id) || !name.ends_with(".json") {
            continue;
        }
        match store.get_opt(&o.key).await.map_err(|e| repo.err(e))? {
            Some(body) if report_passed(&body) => {
                out.insert(id.to_string());
                if report_kind(&body).as_deref() == Some("full") {
                    full.insert(id.to_string());
                }
            }
            _ => {}
        }
    }
    Ok((out, full))
}

/// The `kind` of a verification report (`full` or `quick`).
fn report_kind(report: &[u8]) -> Option<String> {
    serde_json::from_slice::<serde_json::Value>(report)
        .ok()?
        .get("kind")?
        .as_str()
        .map(str::to_string)
}

/// Read what the repository holds: complete snapshots (with tags, size and whether
/// verified), folders without a manifest, and unfinished multipart uploads.
///
/// # Errors
/// The store failed, or a manifest is unreadable (a prune never guesses about a snapshot
/// it cannot read).
pub async fn inventory(repo: &Repository) -> Result<Inventory> {
    let (verified, restore_tested) = verified_snapshots(repo).await?;
    let ids = repo.snapshot_ids().await?;
    let read: Vec<Result<Entry>> = futures::stream::iter(ids)
        .map(|id| read_entry(repo, id))
        .buffered(8)
        .collect()
        .await;
    let mut inv = Inventory::default();
    for entry in read {
        match entry? {
            Entry::Complete(mut s) => {
                s.verified = verified.contains(&s.id);
                s.restore_tested = restore_tested.contains(&s.id);
                inv.snapshots.push(s);
            }
            Entry::Incomplete(s) => inv.incomplete.push(s),
        }
    }
    // Only the prefixes mongokeep uploads into in parts: a repository at the root of a
    // bucket shares it, and another tool's unfinished upload is not ours to abort.
    for prefix in ["snapshots/", "oplog/"] {
        inv.uploads.extend(
            repo.store()
                .list_pending_uploads(prefix)
                .await
                .map_err(|e| repo.err(e))?,
        );
    }
    Ok(inv)
}

enum Entry {
    Complete(SnapshotInfo),
    Incomplete(IncompleteSnapshot),
}

async fn read_entry(repo: &Repository, id: String) -> Result<Entry> {
    match repo.store().get(&Repository::manifest_key(&id)).await {
        Ok(body) => {
            // A damaged manifest stops the prune, with the fix: it never guesses about a
            // snapshot it cannot read.
            let m = crate::repository::parse_manifest(&id, &body)?;
            Ok(Entry::Complete(SnapshotInfo {
                time: m.started_at,
                tags: m.tags,
                size_bytes: m.totals.stored_bytes + body.len() as u64,
                verified: false,
                restore_tested: false,
                id,
            }))
        }
        Err(StorageError::NotFound { .. }) => {
            let objects = list_folder(repo, &id).await?;
            let newest = objects.iter().map(|o| o.last_modified).max();
            let last_activity = [id_time(&id), newest]
                .into_iter()
                .flatten()
                .max()
                .unwrap_or(DateTime::<Utc>::MIN_UTC);
            Ok(Entry::Incomplete(IncompleteSnapshot {
                size_bytes: objects.iter().map(|o| o.size).sum(),
                last_activity,
                id,
            }))
        }
        Err(e) => Err(repo.err(e)),
    }
}

async fn list_folder(repo: &Repository, id: &str) -> Result<Vec<ObjectMeta>> {
    repo.store()
        .list(&format!("snapshots/{id}/"))
        .await
        .map_err(|e| repo.err(e))
}

/// What a prune did.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Outcome {
    /// Everything removed, in order.
    pub removed: Vec<Removal>,
    /// Complete snapshots removed.
    pub snapshots_removed: usize,
    /// Snapshot folders without a manifest removed.
    pub incomplete_removed: usize,
    /// Unfinished multipart uploads aborted.
    pub uploads_aborted: usize,
    /// Oplog slices (and orphaned slice objects) no kept snapshot needs, removed.
    pub slices_removed: usize,
    /// Objects deleted.
    pub objects_deleted: usize,
    /// Bytes of the deleted objects.
    pub bytes_freed: u64,
}

/// One thing removed.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Removal {
    /// `snapshot`, `incomplete snapshot`, `unfinished upload` or `oplog slice`.
    pub kind: &'static str,
    /// Snapshot id or upload key.
    pub name: String,
    /// Objects deleted (0 for an upload).
    pub objects: usize,
    /// Bytes deleted, as listed.
    pub bytes: u64,
}

impl Outcome {
    fn record(&mut self, r: Removal, report: &mut dyn FnMut(&Removal)) {
        self.objects_deleted += r.objects;
        self.bytes_freed += r.bytes;
        report(&r);
        self.removed.push(r);
    }
}

/// Carry out `plan`: every removed snapshot (manifest first, then its data), then the
/// garbage past its grace period; `report` hears of each removal as it is done. Once `stop`
/// is cancelled no further removal starts, and the result is [`Error::Cancelled`]: each
/// removal is done whole or not begun. Call it
/// holding the repository lock, with a plan made under that lock, after
/// [`Plan::check_floor`].
///
/// # Errors
/// The store failed, or `stop` was cancelled; what was deleted until then stays deleted,
/// and what remains is either untouched or garbage for the next prune.
pub async fn execute(
    repo: &Repository,
    plan: &Plan,
    report: &mut (dyn FnMut(&Removal) + Send),
    stop: &CancellationToken,
) -> Result<Outcome> {
    let store = repo.store();
    let mut out = Outcome::default();
    for d in plan.removed() {
        crate::interrupt::stopped(stop)?;
        // Sizes from the listing, so bytes freed is what the store really held.
        let objects = list_folder(repo, &d.id).await?;
        let manifest = Repository::manifest_key(&d.id);
        store.delete(&manifest).await.map_err(|e| repo.err(e))?;
        let mut sizes: BTreeMap<&str, u64> =
            objects.iter().map(|o| (o.key.as_str(), o.size)).collect();
        let mut bytes = sizes.remove(manifest.as_str()).unwrap_or(0);
        let mut count = 1;
        for (key, size) in sizes {
            store.delete(key).await.map_err(|e| repo.err(e))?;
            count += 1;
            bytes += size;
        }
        out.snapshots_removed += 1;
        out.record(
            Removal {
                kind: "snapshot",
                name: d.id.clone(),
                objects: count,
                bytes,
            },
            report,
        );
    }
    for g in plan.garbage_to_remove() {
        crate::interrupt::stopped(stop)?;
        match &g.kind {
            GarbageKind::IncompleteSnapshot(s) => {
                let objects = list_folder(repo, &s.id).await?;
                for o in &objects {
                    store.delete(&o.key).await.map_err(|e| repo.err(e))?;
                }
                out.incomplete_removed += 1;
                let bytes = objects.iter().map(|o| o.size).sum();
                out.record(
                    Removal {
                        kind: g.what(),
                        name: s.id.clone(),
                        objects: objects.len(),
                        bytes,
                    },
                    report,
                );
            }
            GarbageKind::PendingUpload(u) => {
                store
                    .abort_pending_upload(u)
                    .await
                    .map_err(|e| repo.err(e))?;
                out.uploads_aborted += 1;
                out.record(
                    Removal {
                        kind: g.what(),
                        name: u.key.clone(),
                        objects: 0,
                        bytes: 0,
                    },
                    report,
                );
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;

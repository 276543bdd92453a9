//! A repository: the layout of snapshots in a [`Storage`], snapshot ids, listing, manifest
//! reads and writes, and the repository lock ([`lock`]).
//!
//! ```text
//! snapshots/<id>/manifest.json                 written last: the snapshot exists iff it does
//! snapshots/<id>/data/<db>/<coll>.tar.gz
//! locks/<operation>-<id>.json
//! ```

pub mod lock;

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, NaiveDateTime, Utc};
use futures::StreamExt;
use serde::Serialize;

use crate::manifest::Manifest;
use crate::storage::{escape_segment, Storage, StorageError};
use crate::{Error, Result};

/// A snapshot id: UTC start time to the second, then 4 hex digits so that two runs in the
/// same second differ, e.g. `20261122T020000Z-7f3a`. Ids sort by time.
pub fn snapshot_id(started_at: DateTime<Utc>, nonce: u16) -> String {
    format!("{}-{nonce:04x}", started_at.format("%Y%m%dT%H%M%SZ"))
}

/// The start time encoded in a snapshot id.
pub fn id_time(id: &str) -> Option<DateTime<Utc>> {
    let ts = id.get(..16)?;
    NaiveDateTime::parse_from_str(ts, "%Y%m%dT%H%M%SZ")
        .ok()
        .map(|n| n.and_utc())
}

/// One line of `mongokeep snapshots`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SnapshotSummary {
    /// Snapshot id.
    pub id: String,
    /// Start time (from the manifest, or from the id when incomplete).
    pub started_at: DateTime<Utc>,
    /// End time; `null` when incomplete.
    pub finished_at: Option<DateTime<Utc>>,
    /// True when the manifest exists.
    pub complete: bool,
    /// Bytes stored for the snapshot.
    pub size_bytes: u64,
    /// Documents stored (0 when incomplete).
    pub documents: u64,
    /// Collections stored (0 when incomplete).
    pub collections: u64,
    /// Source deployment, as recorded.
    pub source: Option<String>,
    /// Tags.
    pub tags: Vec<String>,
    /// Why the manifest cannot be read, when it exists but is damaged: the snapshot is
    /// listed (not complete) and every other one stays usable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub damaged: Option<String>,
}

/// A repository over a store.
#[derive(Debug, Clone)]
pub struct Repository {
    store: Arc<dyn Storage>,
}

impl Repository {
    /// Wrap a store.
    pub fn new(store: Arc<dyn Storage>) -> Self {
        Self { store }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Storage> {
        &self.store
    }

    /// `s3://bucket/prefix` or `file:///path`, for messages.
    pub fn describe(&self) -> String {
        self.store.describe()
    }

    /// Wrap a storage error with this repository's name.
    pub fn err(&self, e: StorageError) -> Error {
        Error::Storage {
            repo: self.describe(),
            source: e,
        }
    }

    /// Key of a snapshot's manifest.
    pub fn manifest_key(id: &str) -> String {
        format!("snapshots/{id}/manifest.json")
    }

    /// Key of a collection archive.
    pub fn data_key(id: &str, db: &str, coll: &str, extension: &str) -> String {
        format!(
            "snapshots/{id}/data/{}/{}.{extension}",
            escape_segment(db),
            escape_segment(coll)
        )
    }

    /// Check that the repository answers (and, for S3, that the bucket exists and the
    /// credentials work) before any work starts.
    ///
    /// # Errors
    /// The store is unreachable or refuses.
    pub async fn check_access(&self) -> Result<()> {
        self.store
            .list_with_delimiter("locks/")
            .await
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// Store a manifest: the last write of a backup, which makes the snapshot exist.
    ///
    /// # Errors
    /// The store failed.
    pub async fn write_manifest(&self, m: &Manifest) -> Result<()> {
        self.store
            .put(&Self::manifest_key(&m.snapshot), Bytes::from(m.to_json()))
            .await
            .map_err(|e| self.err(e))
    }

    /// Ids of every snapshot folder, complete or not, oldest first.
    ///
    /// # Errors
    /// The store failed.
    pub async fn snapshot_ids(&self) -> Result<Vec<String>> {
        let level = self
            .store
            .list_with_delimiter("snapshots/")
            .await
            .map_err(|e| self.err(e))?;
        let mut ids: Vec<String> = level
            .prefixes
            .iter()
            .filter_map(|p| {
                p.strip_prefix("snapshots/")?
                    .strip_suffix('/')
                    .map(str::to_string)
            })
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// Read a snapshot's manifest.
    ///
    /// # Errors
    /// [`Error::SnapshotNotFound`] (with the nearest ids), [`Error::SnapshotIncomplete`],
    /// a store failure, or an unreadable manifest.
    pub async fn read_manifest(&self, id: &str) -> Result<Manifest> {
        match self.store.get(&Self::manifest_key(id)).await {
            Ok(b) => parse_manifest(id, &b),
            Err(StorageError::NotFound { .. }) => {
                let ids = self.snapshot_ids().await?;
                if ids.iter().any(|x| x == id) {
                    Err(Error::SnapshotIncomplete { id: id.to_string() })
                } else {
                    Err(Error::SnapshotNotFound {
                        id: id.to_string(),
                        repo: self.describe(),
                        nearest: nearest(&self.complete_ids().await?, id),
                    })
                }
            }
            Err(e) => Err(self.err(e)),
        }
    }

    async fn complete_ids(&self) -> Result<Vec<String>> {
        Ok(self
            .list_snapshots()
            .await?
            .into_iter()
            .filter(|s| s.complete)
            .map(|s| s.id)
            .collect())
    }

    /// Resolve `latest` or an id (or a unique prefix of one) to a complete snapshot's manifest.
    ///
    /// # Errors
    /// As [`Repository::read_manifest`]; `latest` in an empty repository is not found.
    pub async fn resolve(&self, id: &str) -> Result<Manifest> {
        if id == "latest" {
            let snaps = self.list_snapshots().await?;
            return match snaps.iter().find(|s| s.complete) {
                Some(s) => self.read_manifest(&s.id).await,
                None => Err(Error::SnapshotNotFound {
                    id: "latest".into(),
                    repo: self.describe(),
                    nearest: vec![],
                }),
            };
        }
        let ids = self.snapshot_ids().await?;
        let matches: Vec<&String> = ids.iter().filter(|x| x.starts_with(id)).collect();
        match matches.as_slice() {
            [one] if id.len() >= 8 => self.read_manifest(one).await,
            _ => self.read_manifest(id).await,
        }
    }

    /// Every snapshot, newest first, complete or not.
    ///
    /// # Errors
    /// The store failed or a manifest is unreadable.
    pub async fn list_snapshots(&self) -> Result<Vec<SnapshotSummary>> {
        Ok(self
            .list_snapshots_with(|_| ())
            .await?
            .into_iter()
            .map(|(s, _)| s)
            .collect())
    }

    /// As [`Repository::list_snapshots`], with `f` of each complete snapshot's manifest,
    /// from the same single read of it (eight at a time).
    ///
    /// # Errors
    /// The store failed or a manifest is unreadable.
    pub async fn list_snapshots_with<T>(
        &self,
        f: impl Fn(&Manifest) -> T,
    ) -> Result<Vec<(SnapshotSummary, Option<T>)>> {
        let ids = self.snapshot_ids().await?;
        let f = &f;
        let mut out: Vec<(SnapshotSummary, Option<T>)> =
            futures::stream::iter(ids.into_iter().rev())
                .map(|id| async move { self.summary(id, f).await })
                .buffered(8)
                .collect::<Vec<_>>()
                .await
                .into_iter()
                .collect::<Result<_>>()?;
        out.sort_by(|a, b| b.0.id.cmp(&a.0.id));
        Ok(out)
    }

    /// A snapshot's manifest and its size in bytes; `None` when the snapshot has none (it is
    /// incomplete).
    ///
    /// # Errors
    /// The store failed or the manifest is unreadable.
    pub async fn manifest_opt(&self, id: &str) -> Result<Option<(Manifest, u64)>> {
        match self.store.get(&Self::manifest_key(id)).await {
            Ok(b) => parse_manifest(id, &b).map(|m| Some((m, b.len() as u64))),
            Err(StorageError::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.err(e)),
        }
    }

    async fn summary<T>(
        &self,
        id: String,
        f: &impl Fn(&Manifest) -> T,
    ) -> Result<(SnapshotSummary, Option<T>)> {
        match self.manifest_opt(&id).await {
            Ok(Some((m, len))) => {
                let extra = f(&m);
                Ok((
                    SnapshotSummary {
                        id,
                        started_at: m.started_at,
                        finished_at: Some(m.finished_at),
                        complete: true,
                        size_bytes: m.totals.stored_bytes + len,
                        documents: m.totals.documents,
                        collections: m.totals.collections,
                        source: Some(m.source.uri),
                        tags: m.tags,
                        damaged: None,
                    },
                    Some(extra),
                ))
            }
            Ok(None) => {
                let objects = self
                    .store
                    .list(&format!("snapshots/{id}/"))
                    .await
                    .map_err(|e| self.err(e))?;
                let size = objects.iter().map(|o| o.size).sum();
                Ok((SnapshotSummary::without_manifest(id, size, None), None))
            }
            Err(e @ Error::Format { .. }) => {
                tracing::warn!(snapshot = %id, error = %e, "skipping a snapshot whose manifest is damaged");
                Ok((
                    SnapshotSummary::without_manifest(id, 0, Some(e.to_string())),
                    None,
                ))
            }
            Err(e) => Err(e),
        }
    }
}

impl SnapshotSummary {
    /// A snapshot whose manifest is missing (`damaged` is `None`) or cannot be read.
    fn without_manifest(id: String, size_bytes: u64, damaged: Option<String>) -> Self {
        Self {
            started_at: id_time(&id).unwrap_or_default(),
            id,
            finished_at: None,
            complete: false,
            size_bytes,
            documents: 0,
            collections: 0,
            source: None,
            tags: vec![],
            damaged,
        }
    }
}

/// A snapshot's manifest from its bytes; a damaged one is a format error that says what
/// to do.
pub fn parse_manifest(id: &str, bytes: &[u8]) -> Result<Manifest> {
    Manifest::from_json(bytes, &format!("manifest of snapshot {id}")).map_err(|e| match e {
        // Written by a newer mongokeep: not damaged, and not to be moved away.
        Error::Format { what, detail } if detail.contains("this build reads") => Error::Format {
            what,
            detail: format!("{detail}\n  fix: use a mongokeep at least as new as the one that wrote it"),
        },
        Error::Format { what, detail } => Error::Format {
            what,
            detail: format!(
                "{detail}\n  fix: the snapshot cannot be restored without it; put back snapshots/{id}/manifest.json from a copy of the repository, or move snapshots/{id}/ out of the repository (the other snapshots are not affected)"
            ),
        },
        other => other,
    })
}

/// Up to three ids closest in time to `id` (by its time prefix, or by name when it has none).
fn nearest(ids: &[String], id: &str) -> Vec<String> {
    let mut scored: Vec<(i64, &String)> = match id_time(id) {
        Some(t) => ids
            .iter()
            .map(|x| {
                let d = id_time(x)
                    .map(|xt| (xt - t).num_seconds().abs())
                    .unwrap_or(i64::MAX);
                (d, x)
            })
            .collect(),
        None => ids
            .iter()
            .map(|x| {
                let common = x
                    .chars()
                    .zip(id.chars())
                    .take_while(|(a, b)| a == b)
                    .count();
                (-(common as i64), x)
            })
            .collect(),
    };
    scored.sort();
    let mut out: Vec<String> = scored.into_iter().take(3).map(|(_, x)| x.clone()).collect();
    out.sort_by(|a, b| b.cmp(a));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn ids_encode_time_and_sort_by_it() {
        let t = Utc.with_ymd_and_hms(2026, 11, 22, 2, 0, 0).unwrap();
        let id = snapshot_id(t, 0x7f3a);
        assert_eq!(id, "20261122T020000Z-7f3a");
        assert_eq!(id_time(&id), Some(t));
        let later = snapshot_id(t + chrono::Duration::seconds(1), 0);
        assert!(later > id);
        assert_eq!(id_time("garbage"), None);
    }

    #[test]
    fn nearest_ids_by_time() {
        let ids: Vec<String> = [
            "20261101T020000Z-0001",
            "20261120T020000Z-0002",
            "20261121T020000Z-0003",
            "20261122T020000Z-0004",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            nearest(&ids, "20261121T030000Z-ffff"),
            [
                "20261122T020000Z-0004",
                "20261121T020000Z-0003",
                "20261120T020000Z-0002"
            ]
        );
        assert_eq!(nearest(&[], "x"), Vec::<String>::new());
    }

    #[test]
    fn a_damaged_manifest_and_a_newer_one_get_different_fixes() {
        let damaged = parse_manifest("s1", b"{\"format\":")
            .unwrap_err()
            .to_string();
        assert!(
            damaged.contains("put back snapshots/s1/manifest.json"),
            "{damaged}"
        );
        let newer = serde_json::json!({
            "format": "mongokeep-manifest", "format_version": 999, "snapshot": "s2",
            "started_at": "2026-11-01T00:00:00Z", "finished_at": "2026-11-01T00:00:00Z",
            "tool": {"name": "mongokeep", "version": "9"},
            "source": {"uri": "mongodb://x/", "topology": "standalone", "server_version": "6.0", "replica_set": null},
            "consistency": {"point_in_time": false, "note": "", "start_operation_time": null, "end_operation_time": null},
            "options": {"compression": "none", "archive_part_bytes": 1, "databases": [], "ns_include": [], "ns_exclude": [], "include_users": false},
            "tags": [], "digest_algorithm": "x", "collections": [],
            "totals": {"collections": 0, "views": 0, "documents": 0, "bson_bytes": 0, "stored_bytes": 0}
        });
        let newer = parse_manifest("s2", &serde_json::to_vec(&newer).unwrap())
            .unwrap_err()
            .to_string();
        // A version this build does not know is not damaged: never "move it away".
        assert!(
            newer.contains("this build reads")
                && newer.contains("at least as new")
                && !newer.contains("move"),
            "{newer}"
        );
    }

    #[tokio::test]
    async fn listing_distinguishes_complete_and_incomplete() {
        let store = Arc::new(crate::storage::memory::MemoryStore::new());
        let repo = Repository::new(store.clone());
        store
            .put(
                "snapshots/20261122T020000Z-0001/data/a/b.tar.gz",
                Bytes::from_static(b"xyz"),
            )
            .await
            .unwrap();
        let s = repo.list_snapshots().await.unwrap();
        assert_eq!(s.len(), 1);
        assert!(!s[0].complete);
        assert_eq!(s[0].size_bytes, 3);
        assert!(matches!(
            repo.read_manifest("20261122T020000Z-0001").await,
            Err(Error::SnapshotIncomplete { .. })
        ));
        assert!(matches!(
            repo.resolve("latest").await,
            Err(Error::SnapshotNotFound { .. })
        ));
        assert!(matches!(
            repo.read_manifest("20261122T020000Z-9999").await,
            Err(Error::SnapshotNotFound { .. })
        ));
    }
}

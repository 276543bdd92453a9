//! Unit tests of [`super`].

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::TimeZone;

use super::*;
use crate::retention::{plan, Policy};
use crate::storage::memory::MemoryStore;
use crate::storage::{
    ByteStream, ListResult, MultipartUpload, PendingUpload, Storage, StorageResult,
};
use crate::Error;

/// A memory store that records the order of deletions.
#[derive(Debug, Default)]
struct Recording {
    inner: MemoryStore,
    deleted: Mutex<Vec<String>>,
}

#[async_trait]
impl Storage for Recording {
    async fn put(&self, key: &str, data: Bytes) -> StorageResult<()> {
        self.inner.put(key, data).await
    }
    async fn get(&self, key: &str) -> StorageResult<Bytes> {
        self.inner.get(key).await
    }
    async fn get_stream(&self, key: &str) -> StorageResult<ByteStream> {
        self.inner.get_stream(key).await
    }
    async fn head(&self, key: &str) -> StorageResult<ObjectMeta> {
        self.inner.head(key).await
    }
    async fn list(&self, prefix: &str) -> StorageResult<Vec<ObjectMeta>> {
        self.inner.list(prefix).await
    }
    async fn list_with_delimiter(&self, prefix: &str) -> StorageResult<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }
    async fn delete(&self, key: &str) -> StorageResult<()> {
        self.deleted.lock().unwrap().push(key.to_string());
        self.inner.delete(key).await
    }
    async fn start_multipart(&self, key: &str) -> StorageResult<Box<dyn MultipartUpload>> {
        self.inner.start_multipart(key).await
    }
    async fn list_pending_uploads(&self, prefix: &str) -> StorageResult<Vec<PendingUpload>> {
        self.inner.list_pending_uploads(prefix).await
    }
    async fn abort_pending_upload(&self, upload: &PendingUpload) -> StorageResult<()> {
        self.inner.abort_pending_upload(upload).await
    }
    fn describe(&self) -> String {
        "recording://".into()
    }
}

fn manifest(id: &str, day: u32, tags: &[&str]) -> Bytes {
    let t = Utc.with_ymd_and_hms(2026, 5, day, 2, 0, 0).unwrap();
    let json = serde_json::json!({
        "format": "mongokeep-manifest", "format_version": 1, "snapshot": id,
        "started_at": t, "finished_at": t,
        "tool": {"name": "mongokeep", "version": "test"},
        "source": {"uri": "mongodb://x/", "topology": "standalone", "server_version": "6.0", "replica_set": null},
        "consistency": {"point_in_time": false, "note": "", "start_operation_time": null, "end_operation_time": null},
        "options": {"compression": "gzip:6", "archive_part_bytes": 1, "databases": [], "ns_include": [], "ns_exclude": [], "include_users": false},
        "tags": tags, "digest_algorithm": "x", "collections": [],
        "totals": {"collections": 0, "views": 0, "documents": 0, "bson_bytes": 0, "stored_bytes": 5}
    });
    Bytes::from(serde_json::to_vec(&json).unwrap())
}

async fn repo_with_three() -> (Arc<Recording>, Repository) {
    let store = Arc::new(Recording::default());
    for (day, id) in [
        (1, "20260501T020000Z-0001"),
        (2, "20260502T020000Z-0002"),
        (3, "20260503T020000Z-0003"),
    ] {
        for part in ["a", "b"] {
            store
                .put(
                    &format!("snapshots/{id}/data/db/{part}.tar.gz"),
                    Bytes::from_static(b"12345"),
                )
                .await
                .unwrap();
        }
        store
            .put(
                &Repository::manifest_key(id),
                manifest(id, day, if day == 1 { &["x"] } else { &[] }),
            )
            .await
            .unwrap();
    }
    let repo = Repository::new(store.clone());
    (store, repo)
}

#[test]
fn only_a_passed_report_verifies() {
    assert!(report_passed(br#"{"result": "passed", "snapshot": "x"}"#));
    assert!(!report_passed(br#"{"result": "failed"}"#));
    assert!(!report_passed(br#"{"result": "PASSED!"}"#));
    assert!(!report_passed(b"# Verification report\nresult: passed"));
}

#[tokio::test]
async fn inventory_reads_tags_sizes_verification_and_incomplete_folders() {
    let (store, repo) = repo_with_three().await;
    store
        .put(
            "reports/verify/20260502T020000Z-0002/20260510T000000Z.json",
            Bytes::from_static(br#"{"result":"passed"}"#),
        )
        .await
        .unwrap();
    store
        .put(
            "reports/verify/20260503T020000Z-0003/20260510T000000Z.json",
            Bytes::from_static(br#"{"result":"failed"}"#),
        )
        .await
        .unwrap();
    store
        .put(
            "reports/verify/20260503T020000Z-0003/20260510T000000Z.md",
            Bytes::from_static(b"result: passed"),
        )
        .await
        .unwrap();
    store
        .put(
            "snapshots/20260504T020000Z-0004/data/db/a.tar.gz",
            Bytes::from_static(b"123"),
        )
        .await
        .unwrap();
    let inv = inventory(&repo).await.unwrap();
    assert_eq!(inv.snapshots.len(), 3);
    let by_id = |id: &str| inv.snapshots.iter().find(|s| s.id == id).unwrap().clone();
    assert!(by_id("20260502T020000Z-0002").verified);
    assert!(!by_id("20260503T020000Z-0003").verified);
    assert_eq!(by_id("20260501T020000Z-0001").tags, vec!["x".to_string()]);
    let manifest_len = store
        .get(&Repository::manifest_key("20260501T020000Z-0001"))
        .await
        .unwrap()
        .len() as u64;
    assert_eq!(by_id("20260501T020000Z-0001").size_bytes, 5 + manifest_len);
    assert_eq!(inv.incomplete.len(), 1);
    assert_eq!(inv.incomplete[0].id, "20260504T020000Z-0004");
    assert_eq!(inv.incomplete[0].size_bytes, 3);
}

#[tokio::test]
async fn only_mongokeep_s_own_unfinished_uploads_are_garbage() {
    // A repository at the root of a bucket: another tool's upload shares it.
    let (store, repo) = repo_with_three().await;
    let mut held = Vec::new(); // started, never completed nor aborted
    for key in [
        "snapshots/20260504T020000Z-0004/data/db/c.tar.gz",
        "oplog/slices/x.bson.gz",
        "other-tool/big.bin",
    ] {
        held.push(store.start_multipart(key).await.unwrap());
    }
    let inv = inventory(&repo).await.unwrap();
    let mut keys: Vec<&str> = inv.uploads.iter().map(|u| u.key.as_str()).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "oplog/slices/x.bson.gz",
            "snapshots/20260504T020000Z-0004/data/db/c.tar.gz"
        ]
    );
}

/// The plan of `keep_last = 1` on June 1st: the two older snapshots go.
async fn keep_last_one(repo: &Repository) -> Plan {
    let inv = inventory(repo).await.unwrap();
    let policy = Policy::parse("keep_last = 1", "test").unwrap();
    plan(
        &inv,
        &policy,
        Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).unwrap(),
    )
}

#[tokio::test]
async fn a_removed_snapshot_loses_its_manifest_before_its_data() {
    let (store, repo) = repo_with_three().await;
    let p = keep_last_one(&repo).await;
    let mut heard = Vec::new();
    let stop = CancellationToken::new();
    let out = execute(
        &repo,
        &p,
        &mut |r: &Removal| heard.push(r.name.clone()),
        &stop,
    )
    .await
    .unwrap();
    assert_eq!(
        heard,
        vec!["20260502T020000Z-0002", "20260501T020000Z-0001"]
    );
    assert_eq!(out.snapshots_removed, 2);
    assert_eq!(out.objects_deleted, 6);
    let deleted = store.deleted.lock().unwrap().clone();
    for id in &heard {
        let mine: Vec<&String> = deleted
            .iter()
            .filter(|k| k.starts_with(&format!("snapshots/{id}/")))
            .collect();
        assert_eq!(mine.len(), 3);
        assert_eq!(
            mine[0],
            &Repository::manifest_key(id),
            "data deleted before the manifest: {deleted:?}"
        );
    }
    assert_eq!(
        store.list("snapshots/").await.unwrap().len(),
        3,
        "the kept snapshot lost objects"
    );
}

#[tokio::test]
async fn a_stopped_prune_ends_the_removal_under_way_and_starts_no_other() {
    let (store, repo) = repo_with_three().await;
    let p = keep_last_one(&repo).await;
    // Stopped while the first removal runs (heard once it is done).
    let stop = CancellationToken::new();
    let mut heard = Vec::new();
    let r = execute(
        &repo,
        &p,
        &mut |r: &Removal| {
            heard.push(r.name.clone());
            stop.cancel();
        },
        &stop,
    )
    .await;
    assert!(matches!(r, Err(Error::Cancelled)), "{r:?}");
    assert_eq!(heard, vec!["20260502T020000Z-0002"]);
    // That snapshot is gone whole; the other one the plan removes is untouched.
    let left: Vec<String> = store
        .list("snapshots/")
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert!(!left.iter().any(|k| k.contains("-0002/")), "{left:?}");
    assert_eq!(
        left.iter().filter(|k| k.contains("-0001/")).count(),
        3,
        "{left:?}"
    );
}

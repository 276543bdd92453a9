//! `mongokeep prune` against a real S3 server (Garage): the deletions are exactly the
//! planned ones, nothing else in the bucket is touched, garbage waits for its grace period,
//! the lock keeps prune and backup apart, and the `min_keep` floor stops a bad plan.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use bytes::Bytes;
use chrono::{DateTime, Duration, SecondsFormat, TimeZone, Utc};
use mongodb::bson::{doc, Document};
use mongokeep::manifest::{
    BackupOptionsRecord, CollectionEntry, Consistency, Manifest, SourceInfo, StoredObject, Tool,
    Totals,
};
use mongokeep::repository::{lock, snapshot_id, Repository};
use mongokeep::storage::Storage;

const USAGE: i32 = 2;
const LOCK_HELD: i32 = 6;

fn default_policy() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("retention-policies/default.toml")
        .display()
        .to_string()
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A small complete snapshot written through the library, as a backup at `time` would
/// leave it: one data object, then the manifest.
async fn fake_snapshot(
    store: &dyn Storage,
    time: DateTime<Utc>,
    nonce: u16,
    data_len: usize,
) -> String {
    let id = snapshot_id(time, nonce);
    let key = Repository::data_key(&id, "app", "orders", "tar.gz");
    store
        .put(&key, Bytes::from(vec![b'x'; data_len]))
        .await
        .unwrap();
    let entry = CollectionEntry {
        db: "app".into(),
        name: "orders".into(),
        kind: "collection".into(),
        options: serde_json::json!({}),
        indexes: vec![],
        uuid: None,
        stored_from: None,
        count: 1,
        bson_bytes: 10,
        content_digest: "0".repeat(64),
        codec: "gzip".into(),
        parts: 1,
        objects: vec![StoredObject {
            key,
            size: data_len as u64,
            sha256: "0".repeat(64),
        }],
    };
    let m = Manifest {
        format: "mongokeep-manifest".into(),
        format_version: mongokeep::manifest::FORMAT_VERSION,
        snapshot: id.clone(),
        started_at: time,
        finished_at: time + Duration::seconds(30),
        tool: Tool {
            name: "mongokeep".into(),
            version: "test".into(),
        },
        source: SourceInfo {
            uri: "mongodb://127.0.0.1:1/".into(),
            topology: "standalone".into(),
            server_version: "6.0.5".into(),
            replica_set: None,
        },
        consistency: Consistency {
            point_in_time: false,
            note: "faked by the test".into(),
            start_operation_time: None,
            end_operation_time: None,
        },
        options: BackupOptionsRecord {
            compression: "gzip:6".into(),
            archive_part_bytes: 1 << 24,
            databases: vec![],
            ns_include: vec![],
            ns_exclude: vec![],
            include_users: false,
        },
        tags: vec![],
        digest_algorithm: "test".into(),
        totals: Totals::of(std::slice::from_ref(&entry)),
        collections: vec![entry],
        oplog: None,
    };
    store
        .put(&Repository::manifest_key(&id), Bytes::from(m.to_json()))
        .await
        .unwrap();
    id
}

/// Every key, but the journal entries prune itself writes (checked on their own).
async fn keys(store: &dyn Storage) -> BTreeSet<String> {
    common::keys(store, "")
        .await
        .into_iter()
        .filter(|k| !(k.starts_with("journal/") && k.contains("-prune-")))
        .collect()
}

fn ids_where(plan: &serde_json::Value, keep: bool) -> BTreeSet<String> {
    plan["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["keep"] == keep)
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

/// 60 snapshots over five months: daily at 02:00 for the last 20 days, every third day
/// before that, and a second snapshot in the same second as one of them.
fn sixty_times() -> Vec<DateTime<Utc>> {
    let last = Utc.with_ymd_and_hms(2026, 6, 30, 2, 0, 0).unwrap();
    let mut times: Vec<DateTime<Utc>> = (0..20).map(|d| last - Duration::days(d)).collect();
    let mut t = last - Duration::days(20);
    while times.len() < 59 {
        t -= Duration::days(3);
        times.push(t);
    }
    times.push(times[30]);
    times
}

#[tokio::test]
async fn sixty_snapshots_are_pruned_to_exactly_the_dry_run_plan_and_nothing_else_is_touched() {
    let s3 = common::services().s3();
    let prefix = common::unique("prune60");
    let store = s3.store(&prefix).await;
    let times = sixty_times();
    assert_eq!(times.len(), 60);
    let mut ids = BTreeSet::new();
    for (i, t) in times.iter().enumerate() {
        ids.insert(fake_snapshot(&*store, *t, i as u16, 1000 + i).await);
    }
    assert_eq!(ids.len(), 60);
    // An old snapshot with a passed verification: the newest verified, so never removed.
    let verified = snapshot_id(times[45], 45);
    store
        .put(
            &format!("reports/verify/{verified}/20260601T000000Z.json"),
            Bytes::from_static(br#"{"result": "passed"}"#),
        )
        .await
        .unwrap();
    // Other things in the repository and in the bucket, which prune must not touch.
    store
        .put(
            "journal/2026/06/20260601T000000Z-backup.json",
            Bytes::from_static(b"{}"),
        )
        .await
        .unwrap();
    store
        .put("notes.txt", Bytes::from_static(b"keep me"))
        .await
        .unwrap();
    let neighbour = s3.store(&format!("{prefix}-neighbour")).await;
    let neighbour_id = fake_snapshot(&*neighbour, times[50], 1, 10).await;
    let before = keys(&*store).await;
    let neighbour_before = keys(&*neighbour).await;

    let cwd = tempfile::tempdir().unwrap();
    let at = "2026-07-01T00:00:00Z";
    let repo = s3.repo_url(&prefix);
    let prune = |extra: &[&str]| {
        common::mongokeep(cwd.path())
            .s3(&s3)
            .args([
                "prune",
                "--repo",
                &repo,
                "--policy",
                &default_policy(),
                "--at",
                at,
            ])
            .args(extra)
            .run()
    };

    // The dry run prints the plan and deletes nothing.
    let dry = prune(&["--dry-run", "--json"]);
    dry.expect_code(0);
    let plan = dry.json();
    assert_eq!(plan["dry_run"], true);
    assert_eq!(
        keys(&*store).await,
        before,
        "a dry run changed the repository"
    );
    let planned_keep = ids_where(&plan, true);
    let planned_remove = ids_where(&plan, false);
    assert_eq!(planned_keep.len() + planned_remove.len(), 60);
    // 7 daily, 4 weekly and 6 monthly overlap; plus the newest verified.
    assert!((12..=18).contains(&planned_keep.len()), "{planned_keep:?}");
    assert!(planned_keep.contains(&verified));
    let reasons_of = |id: &str| {
        plan["snapshots"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == id)
            .unwrap()["reasons"]
            .clone()
    };
    assert!(
        reasons_of(&verified)
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r == "newest verified"),
        "{}",
        reasons_of(&verified)
    );
    let newest = snapshot_id(times[0], 0);
    assert_eq!(
        reasons_of(&newest),
        serde_json::json!(["daily", "weekly", "monthly", "newest"])
    );
    let expected_freed: u64 = plan["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["keep"] == false)
        .map(|s| s["size_bytes"].as_u64().unwrap())
        .sum();
    assert_eq!(plan["bytes_to_free"].as_u64().unwrap(), expected_freed);

    // The table for people: every snapshot with its time, size, action and reasons.
    let table = prune(&["--dry-run"]);
    table.expect_code(0);
    assert!(
        table.stdout.contains("ID") && table.stdout.contains("REASONS"),
        "{}",
        table.stdout
    );
    assert!(
        table
            .stdout
            .contains(&format!("{newest}  2026-06-30 02:00:00 +00:00")),
        "{}",
        table.stdout
    );
    assert_eq!(table.stdout.matches("REMOVE").count(), planned_remove.len());
    assert!(table.stdout.contains("dry run: nothing deleted"));

    // The real run deletes exactly what the dry run planned.
    let real = prune(&["--json"]);
    real.expect_code(0);
    let done = real.json();
    let removed: BTreeSet<String> = done["outcome"]["removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(removed, planned_remove);
    let journal = common::keys(&*store, "journal/").await;
    assert_eq!(
        journal.iter().filter(|k| k.contains("-prune-")).count(),
        1,
        "prune wrote no journal entry: {journal:?}"
    );
    let after = keys(&*store).await;
    let expected: BTreeSet<String> = before
        .iter()
        .filter(|k| {
            !planned_remove
                .iter()
                .any(|id| k.starts_with(&format!("snapshots/{id}/")))
        })
        .cloned()
        .collect();
    assert_eq!(
        after, expected,
        "prune deleted something it had not planned, or left something it had"
    );
    let freed_listed: u64 = done["outcome"]["bytes_freed"].as_u64().unwrap();
    assert_eq!(
        freed_listed, expected_freed,
        "bytes freed differ from the sizes planned"
    );
    assert_eq!(
        keys(&*neighbour).await,
        neighbour_before,
        "the neighbouring prefix was touched"
    );
    assert!(neighbour_before.iter().any(|k| k.contains(&neighbour_id)));
    assert!(
        common::keys(&*store, "locks/").await.is_empty(),
        "the prune lock was left behind"
    );

    // The repository now lists exactly the kept snapshots, and a second prune removes nothing.
    let list = common::mongokeep(cwd.path())
        .s3(&s3)
        .args(["snapshots", "--repo", &repo, "--json"])
        .run();
    list.expect_code(0);
    let listed: BTreeSet<String> = list
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(listed, planned_keep);
    let again = prune(&["--json"]);
    again.expect_code(0);
    assert!(
        ids_where(&again.json(), false).is_empty(),
        "the plan is not stable: {}",
        again.stdout
    );
}

#[tokio::test]
async fn incomplete_snapshots_and_abandoned_uploads_are_removed_after_the_grace_period_and_not_before(
) {
    let s3 = common::services().s3();
    let prefix = common::unique("prunegc");
    let store = s3.store(&prefix).await;
    let now = Utc::now();
    let mut complete = BTreeSet::new();
    for d in 1..=3 {
        complete.insert(fake_snapshot(&*store, now - Duration::days(d), d as u16, 100).await);
    }
    // A run that died after storing data: no manifest.
    let dead = snapshot_id(now - Duration::hours(1), 0xdead);
    store
        .put(
            &Repository::data_key(&dead, "app", "orders", "tar.gz"),
            Bytes::from(vec![1u8; 300]),
        )
        .await
        .unwrap();
    // An upload started and never completed nor aborted.
    let upload_key = Repository::data_key(&snapshot_id(now, 0xbeef), "app", "big", "tar.gz");
    let mut upload = store.start_multipart(&upload_key).await.unwrap();
    upload.put_part(Bytes::from(vec![2u8; 1024])).await.unwrap();
    drop(upload);
    assert_eq!(store.list_pending_uploads("").await.unwrap().len(), 1);
    let created = Utc::now();

    let cwd = tempfile::tempdir().unwrap();
    let repo = s3.repo_url(&prefix);
    let prune_at = |at: DateTime<Utc>| {
        common::mongokeep(cwd.path())
            .s3(&s3)
            .args([
                "prune",
                "--repo",
                &repo,
                "--policy",
                &default_policy(),
                "--at",
                &rfc3339(at),
            ])
            .run()
    };

    // 23 hours later (the default policy's grace is 1d): listed, kept.
    let early = prune_at(created + Duration::hours(23));
    early.expect_code(0);
    assert!(
        early.stdout.contains(&format!("snapshots/{dead}/")),
        "{}",
        early.stdout
    );
    assert!(early.stdout.contains(&upload_key), "{}", early.stdout);
    assert_eq!(
        early.stdout.matches("keep (within grace)").count(),
        2,
        "{}",
        early.stdout
    );
    assert!(
        !common::keys(&*store, &format!("snapshots/{dead}/"))
            .await
            .is_empty(),
        "removed within its grace period"
    );
    assert_eq!(
        store.list_pending_uploads("").await.unwrap().len(),
        1,
        "aborted within its grace period"
    );

    // 25 hours later: both removed, and only they.
    let before = keys(&*store).await;
    let late = prune_at(created + Duration::hours(25));
    late.expect_code(0);
    assert!(
        late.stdout
            .contains(&format!("removed incomplete snapshot {dead}")),
        "{}",
        late.stdout
    );
    assert!(
        late.stdout
            .contains(&format!("removed unfinished upload {upload_key}")),
        "{}",
        late.stdout
    );
    assert!(store.list_pending_uploads("").await.unwrap().is_empty());
    let after = keys(&*store).await;
    let expected: BTreeSet<String> = before
        .into_iter()
        .filter(|k| !k.starts_with(&format!("snapshots/{dead}/")))
        .collect();
    assert_eq!(after, expected);
    for id in &complete {
        assert!(
            after.contains(&Repository::manifest_key(id)),
            "complete snapshot {id} was touched"
        );
    }
}

#[tokio::test]
async fn a_real_backup_is_pruned_with_every_object_it_stored() {
    let s = common::services();
    let s3 = s.s3();
    let db = common::unique("prunereal");
    let client = common::client(&s.standalone_uri).await;
    client
        .database(&db)
        .collection::<Document>("a")
        .insert_many((0..50).map(|i| doc! { "i": i }))
        .await
        .unwrap();
    client
        .database(&db)
        .collection::<Document>("b")
        .insert_one(doc! { "x": 1 })
        .await
        .unwrap();
    let prefix = common::unique("prunereal");
    let repo = s3.repo_url(&prefix);
    let cwd = tempfile::tempdir().unwrap();
    let backup = || {
        let out = common::mongokeep(cwd.path())
            .s3(&s3)
            .env("MONGODB_URI", &s.standalone_uri)
            .args(["backup", "--repo", &repo, "--db", &db, "--json"])
            .run();
        out.expect_code(0);
        out.json()["snapshot"].as_str().unwrap().to_string()
    };
    let older = backup();
    let newer = backup();
    let store = s3.store(&prefix).await;
    assert!(
        common::keys(&*store, &format!("snapshots/{older}/"))
            .await
            .len()
            >= 3
    );
    let policy = cwd.path().join("last1.toml");
    std::fs::write(&policy, "keep_last = 1\n").unwrap();

    let out = common::mongokeep(cwd.path())
        .s3(&s3)
        .args([
            "prune",
            "--repo",
            &repo,
            "--policy",
            policy.to_str().unwrap(),
        ])
        .run();
    out.expect_code(0);
    assert!(
        out.stdout.contains(&format!("removed snapshot {older}")),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("freed"), "{}", out.stdout);
    assert!(common::keys(&*store, &format!("snapshots/{older}/"))
        .await
        .is_empty());
    let show = common::mongokeep(cwd.path())
        .s3(&s3)
        .args(["show", "latest", "--repo", &repo, "--json"])
        .run();
    show.expect_code(0);
    assert_eq!(show.json()["snapshot"], newer.as_str());
    client.database(&db).drop().await.unwrap();
}

#[tokio::test]
async fn prune_and_backup_never_run_at_once() {
    let s = common::services();
    let s3 = s.s3();
    let prefix = common::unique("prunelock");
    let store = s3.store(&prefix).await;
    for d in 1..=4 {
        fake_snapshot(&*store, Utc::now() - Duration::days(d * 40), d as u16, 10).await;
    }
    let repo_url = s3.repo_url(&prefix);
    let repo = Repository::new(store.clone());
    let cwd = tempfile::tempdir().unwrap();
    let policy = cwd.path().join("last1.toml");
    std::fs::write(&policy, "keep_last = 1\n").unwrap();
    let prune = |extra: &[&str]| {
        common::mongokeep(cwd.path())
            .s3(&s3)
            .args([
                "prune",
                "--repo",
                &repo_url,
                "--policy",
                policy.to_str().unwrap(),
            ])
            .args(extra)
            .run()
    };

    // A backup holds the lock: prune fails with the lock-held code and deletes nothing.
    let held = lock::acquire(&repo, "backup", Utc::now(), 7).await.unwrap();
    let before = keys(&*store).await;
    let out = prune(&[]);
    out.expect_code(LOCK_HELD);
    assert!(
        out.stderr.contains("locked by another run") && out.stderr.contains("backup on"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("30 minutes"),
        "the stale time is not documented: {}",
        out.stderr
    );
    assert_eq!(keys(&*store).await, before);
    // A dry run only reads, so it may run meanwhile.
    prune(&["--dry-run"]).expect_code(0);
    held.release().await;

    // A prune holds the lock: a backup fails with the lock-held code.
    let held = lock::acquire(&repo, "prune", Utc::now(), 8).await.unwrap();
    let out = common::mongokeep(cwd.path())
        .s3(&s3)
        .env("MONGODB_URI", &s.standalone_uri)
        .args(["backup", "--repo", &repo_url, "--db", "admin"])
        .run();
    out.expect_code(LOCK_HELD);
    assert!(out.stderr.contains("prune on"), "{}", out.stderr);
    held.release().await;

    // With the lock free, the prune runs.
    prune(&[]).expect_code(0);
    assert_eq!(
        common::keys(&*store, "snapshots/").await.len(),
        2,
        "one snapshot of two objects should remain"
    );
}

#[tokio::test]
async fn a_plan_below_min_keep_aborts_before_deleting_anything() {
    let s3 = common::services().s3();
    let prefix = common::unique("prunefloor");
    let store = s3.store(&prefix).await;
    for d in 1..=5 {
        fake_snapshot(&*store, Utc::now() - Duration::days(d), d as u16, 10).await;
    }
    let before = keys(&*store).await;
    let cwd = tempfile::tempdir().unwrap();
    let policy = cwd.path().join("floor.toml");
    std::fs::write(&policy, "keep_last = 2\nmin_keep = 4\n").unwrap();
    for extra in [&[][..], &["--dry-run"][..]] {
        let out = common::mongokeep(cwd.path())
            .s3(&s3)
            .args([
                "prune",
                "--repo",
                &s3.repo_url(&prefix),
                "--policy",
                policy.to_str().unwrap(),
            ])
            .args(extra)
            .run();
        out.expect_code(USAGE);
        assert!(
            out.stderr.contains("min_keep = 4") && out.stderr.contains("nothing was deleted"),
            "{}",
            out.stderr
        );
        // The plan is still shown, so the user sees why.
        assert_eq!(out.stdout.matches("REMOVE").count(), 3, "{}", out.stdout);
        assert_eq!(keys(&*store).await, before);
    }
}

#[tokio::test]
async fn a_prune_stopped_by_sigterm_ends_the_removal_under_way_releases_the_lock_and_a_rerun_finishes(
) {
    use std::io::BufRead;
    let s = common::services();
    let t = s.s3();
    let prefix = common::unique("prunesig");
    let store = t.store(&prefix).await;
    let base = Utc.with_ymd_and_hms(2026, 1, 1, 2, 0, 0).unwrap();
    // Enough snapshots that removing them takes a while (each: a listing and two deletes).
    let mut ids = vec![];
    for d in 0..200u16 {
        ids.push(fake_snapshot(&*store, base + Duration::days(d.into()), d, 10).await);
    }
    let cwd = tempfile::tempdir().unwrap();
    std::fs::write(cwd.path().join("last.toml"), "keep_last = 1\n").unwrap();
    let prune = || {
        common::mongokeep(cwd.path()).s3(&t).args([
            "prune",
            "--policy",
            "last.toml",
            "--repo",
            &t.repo_url(&prefix),
        ])
    };
    let mut child = prune().spawn();
    // Stopped once the first snapshot is reported removed.
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.starts_with("removed snapshot") {
        line.clear();
        assert!(
            stdout.read_line(&mut line).unwrap() > 0,
            "prune ended before it removed anything"
        );
    }
    common::sigterm(&child);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    let out: common::Done = child.wait_with_output().unwrap().into();
    out.expect_code(1);
    assert!(out.stderr.contains("prune interrupted"), "{}", out.stderr);
    // It stopped: snapshots the plan removes are still there, each whole (its manifest
    // and its data), and every one it reported removed is gone whole.
    let left = keys(&*store).await;
    let whole = |id: &str| {
        left.contains(&Repository::manifest_key(id))
            && left.contains(&Repository::data_key(id, "app", "orders", "tar.gz"))
    };
    let gone = |id: &str| !left.iter().any(|k| k.contains(id));
    let reported: Vec<&str> = std::iter::once(line.as_str())
        .chain(rest.lines())
        .filter(|l| l.starts_with("removed snapshot"))
        .collect();
    let kept = ids.iter().filter(|id| whole(id)).count();
    assert!(kept > 1, "the prune was not stopped: {kept} left");
    for id in &ids {
        assert!(whole(id) || gone(id), "{id} half removed: {left:?}");
        let said = reported.iter().any(|l| l.contains(id.as_str()));
        assert_eq!(said, gone(id), "{id}: reported {said}, gone {}", gone(id));
    }
    assert!(
        !left.iter().any(|k| k.starts_with("locks/")),
        "the lock was kept: {left:?}"
    );
    // A rerun finishes the plan.
    prune().run().expect_code(0);
    let left = keys(&*store).await;
    let whole_now: Vec<&String> = ids
        .iter()
        .filter(|id| left.contains(&Repository::manifest_key(id)))
        .collect();
    assert_eq!(whole_now, vec![ids.last().unwrap()]);
}

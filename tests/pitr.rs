//! Point-in-time snapshots, `oplog push` and `restore --to-time` against real servers: the
//! data restored must be what the source held at the instant named, document for document.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::TryStreamExt;
use mongodb::bson::{doc, Bson, Document, Timestamp};
use mongodb::options::IndexOptions;
use mongodb::{Client, IndexModel};

const USAGE: i32 = 2;
const SOURCE: i32 = 3;

type Docs = BTreeMap<Vec<u8>, Vec<u8>>;

/// Documents by the bytes of their `_id`, each as its BSON bytes.
fn by_id(docs: Vec<Document>) -> Docs {
    let n = docs.len();
    let map: Docs = docs
        .into_iter()
        .map(|d| {
            let id =
                mongodb::bson::to_vec(&doc! { "_id": d.get("_id").cloned().unwrap_or(Bson::Null) })
                    .unwrap();
            (id, mongodb::bson::to_vec(&d).unwrap())
        })
        .collect();
    assert_eq!(map.len(), n, "duplicate _id");
    map
}

async fn docs_now(client: &Client, db: &str, coll: &str) -> Docs {
    let c = client.database(db).collection::<Document>(coll);
    by_id(c.find(doc! {}).await.unwrap().try_collect().await.unwrap())
}

/// What `db.coll` held at cluster time `at` (a snapshot read of the source's history).
async fn docs_at(client: &Client, db: &str, coll: &str, at: Timestamp) -> Docs {
    let cmd = doc! { "find": coll, "readConcern": { "level": "snapshot", "atClusterTime": at }, "batchSize": 5000 };
    let cursor = client.database(db).run_cursor_command(cmd).await.unwrap();
    by_id(cursor.try_collect().await.unwrap())
}

async fn collection_names(client: &Client, db: &str) -> BTreeSet<String> {
    let names = client.database(db).list_collection_names().await.unwrap();
    names
        .into_iter()
        .filter(|n| !n.starts_with("system."))
        .collect()
}

/// Every collection of `db` and its documents, now.
async fn state(client: &Client, db: &str) -> BTreeMap<String, Docs> {
    let mut out = BTreeMap::new();
    for c in collection_names(client, db).await {
        out.insert(c.clone(), docs_now(client, db, &c).await);
    }
    out
}

fn mk(cwd: &Path, repo: &Path) -> common::Run {
    common::mongokeep(cwd).args(["--repo", repo.to_str().unwrap()])
}

/// `mk` with the test replica set as the source and the standalone server as the restore
/// target.
fn mk_rs(cwd: &Path, repo: &Path) -> common::Run {
    let s = common::services();
    mk(cwd, repo)
        .env("MONGODB_URI", &s.rs_uri)
        .env("MONGOKEEP_TARGET_URI", &s.standalone_uri)
}

/// A fresh database on the replica set with 20 documents in `a`, and a temporary folder
/// whose `repo` will hold the repository.
struct Seeded {
    src: Client,
    db: String,
    cwd: tempfile::TempDir,
    repo: std::path::PathBuf,
}

async fn seeded(prefix: &str) -> Seeded {
    let src = common::client(&common::services().rs_uri).await;
    let db = common::unique(prefix);
    seed(&src, &db, &["a"], 20).await;
    let cwd = tempfile::tempdir().unwrap();
    let repo = cwd.path().join("repo");
    Seeded { src, db, cwd, repo }
}

fn manifest(repo: &Path, id: &str) -> serde_json::Value {
    let body = std::fs::read(repo.join(format!("snapshots/{id}/manifest.json"))).unwrap();
    serde_json::from_slice(&body).unwrap()
}

fn optime(v: &serde_json::Value) -> Timestamp {
    Timestamp {
        time: v["t"].as_u64().unwrap() as u32,
        increment: v["i"].as_u64().unwrap() as u32,
    }
}

/// `status --max-oplog-age 1h --json` of `repo` (exit 7: these repositories hold no
/// verification): its `oplog_age` check and `oplog_reaches`.
fn oplog_status(cwd: &Path, repo: &Path) -> (serde_json::Value, Option<chrono::DateTime<Utc>>) {
    let st = mk(cwd, repo)
        .args(["status", "--max-oplog-age", "1h", "--json"])
        .run();
    st.expect_code(7);
    let j = st.json();
    let c = j["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "oplog_age")
        .cloned()
        .unwrap_or_else(|| panic!("no oplog_age check: {j}"));
    let reaches = j["oplog_reaches"].as_str().map(|t| {
        t.parse()
            .unwrap_or_else(|e| panic!("oplog_reaches {t}: {e}"))
    });
    (c, reaches)
}

/// `mongokeep_oplog_recoverable_timestamp_seconds` of a metrics file, in milliseconds.
fn recoverable_metric(prom: &str) -> Option<i64> {
    let v = prom
        .lines()
        .find_map(|l| l.strip_prefix("mongokeep_oplog_recoverable_timestamp_seconds "))?;
    let (s, ms) = v.split_once('.')?;
    Some(s.parse::<i64>().ok()? * 1000 + ms.parse::<i64>().ok()?)
}

fn pad(i: u64) -> String {
    format!("{i:08}-{}", "p".repeat(1000))
}

async fn seed(client: &Client, db: &str, colls: &[&str], n: u64) {
    for c in colls {
        let coll = client.database(db).collection::<Document>(c);
        for chunk in (0..n).collect::<Vec<_>>().chunks(2000) {
            let docs: Vec<Document> = chunk
                .iter()
                .map(|&i| doc! { "_id": i as i64, "v": 0_i64, "n": 0_i32, "pad": pad(i) })
                .collect();
            coll.insert_many(docs).await.unwrap();
        }
        coll.create_index(IndexModel::builder().keys(doc! { "v": 1 }).build())
            .await
            .unwrap();
    }
}

/// A steady writer: updates, inserts and deletes in three collections, a multi-document
/// transaction now and then, and a collection created half-way. Returns the operation time
/// of every write and when `late` was created.
async fn writer(
    client: Client,
    db: String,
    n: u64,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
) -> (Vec<Timestamp>, Option<Timestamp>) {
    let colls = ["a", "b", "c"].map(|c| client.database(&db).collection::<Document>(c));
    let late = client.database(&db).collection::<Document>("late");
    let mut s = client.start_session().await.unwrap();
    let mut times = Vec::new();
    let mut late_at = None;
    let mut i: u64 = 0;
    while !stop.load(Ordering::SeqCst) {
        let c = &colls[(i % 3) as usize];
        let pick = |salt: u64| ((i.wrapping_mul(2_654_435_761).wrapping_add(salt)) % n) as i64;
        c.update_one(
            doc! { "_id": pick(1) },
            doc! { "$set": { "v": i as i64 }, "$inc": { "n": 1 } },
        )
        .session(&mut s)
        .await
        .unwrap();
        times.push(s.operation_time().unwrap());
        c.insert_one(doc! { "_id": format!("w{i}"), "v": i as i64, "pad": pad(i) })
            .session(&mut s)
            .await
            .unwrap();
        times.push(s.operation_time().unwrap());
        c.delete_one(doc! { "_id": pick(7) })
            .session(&mut s)
            .await
            .unwrap();
        times.push(s.operation_time().unwrap());
        if i.is_multiple_of(25) {
            s.start_transaction().await.unwrap();
            colls[0]
                .update_one(
                    doc! { "_id": pick(3) },
                    doc! { "$set": { "txn": i as i64 } },
                )
                .session(&mut s)
                .await
                .unwrap();
            colls[1]
                .insert_one(doc! { "_id": format!("t{i}"), "v": i as i64 })
                .session(&mut s)
                .await
                .unwrap();
            colls[2]
                .delete_one(doc! { "_id": pick(5) })
                .session(&mut s)
                .await
                .unwrap();
            s.commit_transaction().await.unwrap();
            times.push(s.operation_time().unwrap());
        }
        if i == 150 {
            client
                .database(&db)
                .create_collection("late")
                .session(&mut s)
                .await
                .unwrap();
            late.create_index(
                IndexModel::builder()
                    .keys(doc! { "k": 1 })
                    .options(IndexOptions::builder().unique(true).build())
                    .build(),
            )
            .session(&mut s)
            .await
            .unwrap();
            late_at = s.operation_time();
        }
        if i > 150 {
            late.insert_one(doc! { "_id": i as i64, "k": i as i64 })
                .session(&mut s)
                .await
                .unwrap();
        }
        done.store(i, Ordering::SeqCst);
        i += 1;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    (times, late_at)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn snapshot_taken_under_writes_equals_the_source_at_its_consistency_point() {
    let s = common::services();
    let rs = common::PrivateMongod::start(true);
    let src = common::client(&rs.uri).await;
    // Keep an hour of history so the source can be read as of the consistency point.
    src.database("admin")
        .run_command(doc! { "setParameter": 1, "minSnapshotHistoryWindowInSeconds": 3600 })
        .await
        .unwrap();
    let db = "pitr";
    let n = 20_000;
    seed(&src, db, &["a", "b", "c"], n).await; // about 60 MiB: the dump takes seconds
    let cwd = tempfile::tempdir().unwrap();
    let repo = cwd.path().join("repo");

    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let w = tokio::spawn(writer(
        src.clone(),
        db.to_string(),
        n,
        stop.clone(),
        done.clone(),
    ));
    while done.load(Ordering::SeqCst) < 50 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let run = mk(cwd.path(), &repo).env("MONGODB_URI", &rs.uri).args([
        "backup",
        "--db",
        db,
        "--parallel",
        "1",
        "--json",
    ]);
    let out = tokio::task::spawn_blocking(move || run.run())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    let (times, late_at) = w.await.unwrap();
    out.expect_code(0);
    assert_eq!(out.json()["point_in_time"], true, "{}", out.stdout);
    let id = out.json()["snapshot"].as_str().unwrap().to_string();
    let m = manifest(&repo, &id);
    assert_eq!(m["consistency"]["point_in_time"], true);
    let (start, end) = (
        optime(&m["consistency"]["start_operation_time"]),
        optime(&m["consistency"]["end_operation_time"]),
    );
    assert!(
        m["consistency"]["note"]
            .as_str()
            .unwrap()
            .contains("point-in-time: equals the source at"),
        "{}",
        m["consistency"]
    );
    let during = times.iter().filter(|t| **t > start && **t <= end).count();
    let after = times.iter().filter(|t| **t > end).count();
    assert!(during > 300 && after > 0, "the writer must run through the whole dump and past it: {during} writes during, {after} after");
    assert!(
        m["oplog"]["entries"].as_u64().unwrap() as usize >= during,
        "{}",
        m["oplog"]
    );

    // Restore into the other server and compare with what the source held at the end time.
    let target_db = common::unique("pitr_restored");
    mk(cwd.path(), &repo)
        .env("MONGOKEEP_TARGET_URI", &s.standalone_uri)
        .args([
            "restore",
            "--snapshot",
            &id,
            "--ns-from",
            "pitr.*",
            "--ns-to",
            &format!("{target_db}.*"),
        ])
        .run()
        .expect_code(0);
    let dst = common::client(&s.standalone_uri).await;
    let mut expected_colls: BTreeSet<String> = ["a", "b", "c"].map(String::from).into();
    if late_at.is_some_and(|t| t <= end) {
        expected_colls.insert("late".into());
    }
    let compared = assert_state_at(&src, db, &dst, &target_db, &expected_colls, end).await;
    assert!(compared > 59_000, "{compared}");

    // The dump alone is not that state: the replayed oplog is what makes it one.
    let export = cwd.path().join("export");
    mk(cwd.path(), &repo)
        .args([
            "export",
            "--snapshot",
            &id,
            "--out",
            export.to_str().unwrap(),
        ])
        .run()
        .expect_code(0);
    let mut dump_differs = 0;
    for c in ["a", "b", "c"] {
        let bytes = std::fs::read(export.join(format!("{db}/{c}.bson"))).unwrap();
        let mut docs = Vec::new();
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            let len = i32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
            docs.push(mongodb::bson::from_slice::<Document>(&rest[..len]).unwrap());
            rest = &rest[len..];
        }
        let dumped = by_id(docs);
        let want = docs_at(&src, db, c, end).await;
        dump_differs += want
            .iter()
            .filter(|(k, v)| dumped.get(*k) != Some(*v))
            .count();
    }
    assert!(
        dump_differs > 0,
        "the writes during the dump must show in the dump alone"
    );

    // The export carries that oplog as mongodump --oplog does (oplog.bson at the top), so a
    // stock mongorestore --oplogReplay of it reaches the same state.
    let oplog = std::fs::read(export.join("oplog.bson")).unwrap();
    let (mut entries, mut rest) = (0, &oplog[..]);
    while !rest.is_empty() {
        let len = i32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
        mongodb::bson::from_slice::<Document>(&rest[..len]).unwrap();
        entries += 1;
        rest = &rest[len..];
    }
    assert_eq!(entries, m["oplog"]["entries"].as_u64().unwrap());
    // mongorestore renames no namespace with --oplogReplay: into a server of its own.
    let fresh = common::PrivateMongod::start(false);
    let tools = std::env::var("MONGOKEEP_TEST_TOOLS")
        .expect("MONGOKEEP_TEST_TOOLS: run with scripts/test.sh");
    let mr = std::process::Command::new(format!("{tools}/mongorestore"))
        .args(["--uri", &fresh.uri, "--dir", export.to_str().unwrap()])
        .arg("--oplogReplay")
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&mr.stderr);
    assert!(mr.status.success(), "mongorestore failed:\n{log}");
    assert!(log.contains("replaying oplog"), "{log}");
    let restored = common::client(&fresh.uri).await;
    assert_state_at(&src, db, &restored, db, &expected_colls, end).await;
    dst.database(&target_db).drop().await.unwrap();
}

/// Assert that `dst.target_db` holds exactly `colls`, each with the documents
/// `src.db` held at `end`; the documents compared.
async fn assert_state_at(
    src: &Client,
    db: &str,
    dst: &Client,
    target_db: &str,
    colls: &BTreeSet<String>,
    end: Timestamp,
) -> usize {
    assert_eq!(&collection_names(dst, target_db).await, colls);
    let mut compared = 0;
    for c in colls {
        let want = docs_at(src, db, c, end).await;
        let got = docs_now(dst, target_db, c).await;
        let wrong = want.iter().filter(|(k, v)| got.get(*k) != Some(*v)).count();
        let extra = got.keys().filter(|k| !want.contains_key(*k)).count();
        assert_eq!(
            (wrong, extra, got.len()),
            (0, 0, want.len()),
            "{target_db}.{c}: documents differ from the source at {end:?}"
        );
        compared += want.len();
    }
    compared
}

/// One recorded point: the time to give `--to-time` and the database's state then.
struct Point {
    to_time: String,
    state: BTreeMap<String, Docs>,
}

async fn op_time(client: &Client, s: &mut mongodb::ClientSession, db: &str) -> Timestamp {
    // A read in the session carries its cluster time; the last write's time is what we want.
    let _ = client
        .database(db)
        .run_command(doc! { "ping": 1 })
        .session(&mut *s)
        .await;
    s.operation_time().unwrap()
}

#[tokio::test]
async fn restore_to_time_at_three_points_through_pushed_slices() {
    let s = common::services();
    let src = common::client(&s.rs_uri).await;
    let dst = common::client(&s.standalone_uri).await;
    let db = common::unique("pitr_hours");
    seed(&src, &db, &["orders", "users"], 300).await;
    let cwd = tempfile::tempdir().unwrap();
    let repo = cwd.path().join("repo");
    let backup = mk(cwd.path(), &repo)
        .env("MONGODB_URI", &s.rs_uri)
        .args(["backup", "--db", &db, "--json"])
        .run();
    backup.expect_code(0);
    let id = backup.json()["snapshot"].as_str().unwrap().to_string();
    // The consistency point's wall time is what places a wall-clock --to-time within its
    // second; without it the first point below was refused whenever it fell in the same
    // second as the snapshot.
    let oplog = &manifest(&repo, &id)["oplog"];
    assert!(oplog["to_wall"].is_string(), "{oplog}");
    let push = || {
        mk(cwd.path(), &repo)
            .env("MONGODB_URI", &s.rs_uri)
            .args(["oplog", "push", "--db", &db])
            .run()
    };

    let orders = src.database(&db).collection::<Document>("orders");
    let users = src.database(&db).collection::<Document>("users");
    let mut session = src.start_session().await.unwrap();
    let mut points = Vec::new();
    // "Hour" 1: updates, inserts, deletes; the point is the last write's oplog timestamp.
    for i in 0..50_i64 {
        orders
            .update_one(
                doc! { "_id": i },
                doc! { "$set": { "v": 1_i64, "hour": 1 } },
            )
            .session(&mut session)
            .await
            .unwrap();
        users
            .insert_one(doc! { "_id": format!("h1-{i}"), "v": i })
            .session(&mut session)
            .await
            .unwrap();
        orders
            .delete_one(doc! { "_id": 100 + i })
            .session(&mut session)
            .await
            .unwrap();
    }
    let t1 = session.operation_time().unwrap();
    points.push(Point {
        to_time: format!("{}:{}", t1.time, t1.increment),
        state: state(&src, &db).await,
    });
    push().expect_code(0);
    // Hour 2: a new collection with a unique index, a transaction; the point is a wall time.
    src.database(&db)
        .create_collection("invoices")
        .await
        .unwrap();
    let invoices = src.database(&db).collection::<Document>("invoices");
    invoices
        .create_index(
            IndexModel::builder()
                .keys(doc! { "no": 1 })
                .options(IndexOptions::builder().unique(true).build())
                .build(),
        )
        .await
        .unwrap();
    session.start_transaction().await.unwrap();
    for i in 0..20_i64 {
        invoices
            .insert_one(doc! { "_id": i, "no": i })
            .session(&mut session)
            .await
            .unwrap();
        orders
            .update_one(doc! { "_id": 50 + i }, doc! { "$inc": { "n": 5 } })
            .session(&mut session)
            .await
            .unwrap();
    }
    session.commit_transaction().await.unwrap();
    users
        .delete_many(doc! { "_id": { "$regex": "^h1-1" } })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(30)).await;
    let t2 = Utc::now();
    points.push(Point {
        to_time: t2.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        state: state(&src, &db).await,
    });
    tokio::time::sleep(Duration::from_millis(30)).await;
    push().expect_code(0);
    // Hour 3: a rename and a drop, more writes; pushed twice, the point lies in the first.
    orders
        .update_many(
            doc! { "_id": { "$lt": 10_i64 } },
            doc! { "$set": { "hour": 3 } },
        )
        .await
        .unwrap();
    let rename = doc! { "renameCollection": format!("{db}.users"), "to": format!("{db}.people") };
    src.database("admin").run_command(rename).await.unwrap();
    invoices.drop().await.unwrap();
    let t3 = op_time(&src, &mut session, &db).await;
    points.push(Point {
        to_time: format!("{}:{}", t3.time, t3.increment),
        state: state(&src, &db).await,
    });
    orders.insert_one(doc! { "_id": "after-t3" }).await.unwrap();
    push().expect_code(0);
    orders
        .insert_one(doc! { "_id": "after-last-push" })
        .await
        .unwrap();
    push().expect_code(0);
    orders
        .insert_one(doc! { "_id": "not-pushed" })
        .await
        .unwrap();

    let listing = mk(cwd.path(), &repo).args(["snapshots"]).run();
    listing.expect_code(0);
    assert!(
        listing.stdout.contains("recoverable time ranges") && listing.stdout.contains(&id),
        "{}",
        listing.stdout
    );

    for (k, p) in points.iter().enumerate() {
        let target_db = common::unique(&format!("pitr_at{k}"));
        let out = mk(cwd.path(), &repo)
            .env("MONGOKEEP_TARGET_URI", &s.standalone_uri)
            .args([
                "restore",
                "--snapshot",
                &id,
                "--to-time",
                &p.to_time,
                "--json",
            ])
            .args([
                "--ns-from",
                &format!("{db}.*"),
                "--ns-to",
                &format!("{target_db}.*"),
            ])
            .run();
        out.expect_code(0);
        assert!(out.json()["to_time"].is_string(), "{}", out.stdout);
        let got = state(&dst, &target_db).await;
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            p.state.keys().collect::<Vec<_>>(),
            "point {k} ({}): collections",
            p.to_time
        );
        for (c, want) in &p.state {
            assert!(
                got[c] == *want,
                "point {k} ({}): {c} differs: {} documents restored, {} expected",
                p.to_time,
                got[c].len(),
                want.len()
            );
        }
        if p.state.contains_key("invoices") {
            let idx = dst
                .database(&target_db)
                .collection::<Document>("invoices")
                .list_index_names()
                .await
                .unwrap();
            assert!(idx.contains(&"no_1".to_string()), "{idx:?}");
        }
        dst.database(&target_db).drop().await.unwrap();
    }

    // Times not covered are refused, and the message says what is.
    let refuse = |t: &str| {
        mk(cwd.path(), &repo)
            .env("MONGOKEEP_TARGET_URI", &s.standalone_uri)
            .args([
                "restore",
                "--snapshot",
                &id,
                "--to-time",
                t,
                "--ns-from",
                &format!("{db}.*"),
                "--ns-to",
                "never_written.*",
            ])
            .run()
    };
    let before = refuse("2001-01-01T00:00:00Z");
    before.expect_code(USAGE);
    assert!(
        before.stderr.contains("before the consistency point")
            && before.stderr.contains("restores to any time from"),
        "{}",
        before.stderr
    );
    let later = (Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let after = refuse(&later);
    after.expect_code(USAGE);
    assert!(
        after
            .stderr
            .contains("after the last stored oplog position")
            && after.stderr.contains("oplog push"),
        "{}",
        after.stderr
    );
    assert!(collection_names(&dst, "never_written").await.is_empty());
    src.database(&db).drop().await.unwrap();
}

#[tokio::test]
async fn oplog_push_notices_a_gap_and_restore_refuses_inside_it() {
    let cwd = tempfile::tempdir().unwrap();
    let repo = cwd.path().join("repo");
    let first = common::PrivateMongod::start(true);
    let c = common::client(&first.uri).await;
    seed(&c, "gap", &["a"], 50).await;
    mk(cwd.path(), &repo)
        .env("MONGODB_URI", &first.uri)
        .args(["backup", "--db", "gap"])
        .run()
        .expect_code(0);
    c.database("gap")
        .collection::<Document>("a")
        .insert_one(doc! { "_id": "x" })
        .await
        .unwrap();
    mk(cwd.path(), &repo)
        .env("MONGODB_URI", &first.uri)
        .args(["oplog", "push"])
        .run()
        .expect_code(0);
    let end_of_first = Utc::now();
    drop(c);
    drop(first);
    // A deployment whose oplog starts later than the last stored position: as if the
    // oplog had rolled over between two pushes.
    std::thread::sleep(Duration::from_millis(2100));
    let second = common::PrivateMongod::start(true);
    let gap = mk(cwd.path(), &repo)
        .env("MONGODB_URI", &second.uri)
        .args(["--metrics-file", "m.prom", "oplog", "push"])
        .run();
    gap.expect_code(SOURCE);
    assert!(
        gap.stderr.contains("OPLOG GAP") && gap.stderr.contains("stored anyway: slice"),
        "{}",
        gap.stderr
    );
    let listing = mk(cwd.path(), &repo).args(["snapshots"]).run();
    assert!(
        listing.stdout.contains("OPLOG GAP: no recovery between"),
        "{}",
        listing.stdout
    );
    // The slice past the gap reaches the second deployment's present, but no snapshot can
    // be restored past the gap: that is what `status --max-oplog-age` reports.
    let (c, reaches) = oplog_status(cwd.path(), &repo);
    let reaches = reaches.unwrap();
    assert!(reaches <= end_of_first, "{reaches} is past the gap: {c}");
    let prom = std::fs::read_to_string(cwd.path().join("m.prom")).unwrap();
    assert_eq!(
        recoverable_metric(&prom),
        Some(reaches.timestamp_millis()),
        "{prom}"
    );
    // It fails at once, though the point before the gap is seconds old.
    assert_eq!(c["ok"], false, "{c}");
    assert!(
        c["message"].as_str().unwrap().contains("has a gap after"),
        "{c}"
    );
    let inside = (end_of_first + chrono::Duration::milliseconds(1000)).to_rfc3339();
    let s = common::services();
    let refused = mk(cwd.path(), &repo)
        .env("MONGOKEEP_TARGET_URI", &s.standalone_uri)
        .args([
            "restore",
            "--snapshot",
            "latest",
            "--to-time",
            &inside,
            "--dry-run",
        ])
        .run();
    refused.expect_code(USAGE);
    assert!(refused.stderr.contains("gap after"), "{}", refused.stderr);
    // A backup of the second deployment mends it: status passes again, and the metrics
    // file moves past the gap at once.
    mk(cwd.path(), &repo)
        .env("MONGODB_URI", &second.uri)
        .args(["--metrics-file", "m.prom", "backup"])
        .run()
        .expect_code(0);
    let (c, mended) = oplog_status(cwd.path(), &repo);
    assert_eq!(c["ok"], true, "{c}");
    let mended = mended.unwrap();
    assert!(mended > end_of_first, "{mended}: {c}");
    let prom = std::fs::read_to_string(cwd.path().join("m.prom")).unwrap();
    assert_eq!(
        recoverable_metric(&prom),
        Some(mended.timestamp_millis()),
        "{prom}"
    );
}

/// A slice pushed with another `--db` than the snapshot's cannot carry it: restore
/// refuses it, and `snapshots` and `status` say the same (before, `snapshots` listed the
/// snapshot as restorable to the slice's end).
#[tokio::test]
async fn a_slice_of_another_selection_carries_no_snapshot_in_snapshots_status_or_restore() {
    let Seeded { src, db, cwd, repo } = seeded("pitr_sel").await;
    let run = |args: &[&str]| mk_rs(cwd.path(), &repo).args(args).run();
    let out = run(&["backup", "--db", &db, "--json"]);
    out.expect_code(0);
    let id = out.json()["snapshot"].as_str().unwrap().to_string();
    let point = optime(&manifest(&repo, &id)["consistency"]["end_operation_time"]);
    let point = format!("{}:{}", point.time, point.increment);
    src.database(&db)
        .collection::<Document>("a")
        .insert_one(doc! { "_id": "later" })
        .await
        .unwrap();
    run(&["oplog", "push", "--db", "some_other_db"]).expect_code(0);
    let end = last_slice_end(&repo);
    assert_ne!(end, point);

    let listed = run(&["snapshots", "--json"]);
    listed.expect_code(0);
    let rows = listed.json();
    let row = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id.as_str())
        .unwrap_or_else(|| panic!("{id} not listed: {rows}"));
    assert_eq!(row["recoverable"]["to_ts"], point.as_str(), "{row}");
    assert_eq!(row["recoverable"]["slices"], 0, "{row}");

    let (c, reaches) = oplog_status(cwd.path(), &repo);
    assert_eq!(c["ok"], false, "{c}");
    assert!(
        c["message"]
            .as_str()
            .unwrap()
            .contains("pushed with another"),
        "{c}"
    );
    assert!(reaches.is_some(), "{c}");

    let refused = run(&["restore", "--snapshot", &id, "--to-time", &end, "--dry-run"]);
    refused.expect_code(USAGE);
    assert!(
        refused.stderr.contains("pushed with another selection"),
        "{}",
        refused.stderr
    );
}

#[tokio::test]
async fn standalone_snapshots_say_they_are_not_point_in_time_and_refuse_to_time() {
    let s = common::services();
    let c = common::client(&s.standalone_uri).await;
    let db = common::unique("pitr_sa");
    seed(&c, &db, &["a"], 10).await;
    let cwd = tempfile::tempdir().unwrap();
    let repo = cwd.path().join("repo");
    let out = mk(cwd.path(), &repo)
        .env("MONGODB_URI", &s.standalone_uri)
        .args(["backup", "--db", &db, "--json"])
        .run();
    out.expect_code(0);
    assert_eq!(out.json()["point_in_time"], false);
    let id = out.json()["snapshot"].as_str().unwrap().to_string();
    let show = mk(cwd.path(), &repo).args(["show", &id]).run();
    assert!(
        show.stdout
            .contains("not point-in-time: a standalone server has no oplog"),
        "{}",
        show.stdout
    );
    let r = mk(cwd.path(), &repo)
        .env("MONGOKEEP_TARGET_URI", &s.standalone_uri)
        .args([
            "restore",
            "--snapshot",
            &id,
            "--to-time",
            "2030-01-01T00:00:00Z",
            "--dry-run",
        ])
        .run();
    r.expect_code(USAGE);
    assert!(r.stderr.contains("is not point-in-time"), "{}", r.stderr);
    let push = mk(cwd.path(), &repo)
        .env("MONGODB_URI", &s.standalone_uri)
        .args(["--metrics-file", "m.prom", "oplog", "push"])
        .run();
    push.expect_code(USAGE);
    assert!(
        push.stderr.contains("needs a replica set"),
        "{}",
        push.stderr
    );
    let prom = std::fs::read_to_string(cwd.path().join("m.prom")).unwrap();
    assert!(
        prom.contains("mongokeep_last_run_success{operation=\"oplog_push\"} 0"),
        "{prom}"
    );
    assert!(!prom.contains("last_success_timestamp_seconds"), "{prom}");
    c.database(&db).drop().await.unwrap();
}

#[tokio::test]
async fn prune_keeps_the_slices_kept_snapshots_need_and_removes_the_rest() {
    let Seeded { src, db, cwd, repo } = seeded("pitr_prune").await;
    let run = |args: &[&str]| mk_rs(cwd.path(), &repo).args(args).run();
    let a = src.database(&db).collection::<Document>("a");
    run(&["backup", "--db", &db]).expect_code(0);
    // `status --max-oplog-age`: before any push the newest recoverable point is the
    // snapshot's own consistency point; after one, the slice's end.
    let (c, reaches) = oplog_status(cwd.path(), &repo);
    assert_eq!(c["ok"], true, "{c}");
    assert!(
        c["message"]
            .as_str()
            .unwrap()
            .contains("no oplog slice carries it further"),
        "{c}"
    );
    let point = reaches.unwrap();
    assert!((Utc::now() - point).num_seconds() < 60, "{point}");
    a.insert_one(doc! { "_id": "one" }).await.unwrap();
    // before the second snapshot; the metrics file shows the push to a monitor
    run(&["--metrics-file", "m.prom", "oplog", "push", "--db", &db]).expect_code(0);
    let prom = std::fs::read_to_string(cwd.path().join("m.prom")).unwrap();
    for line in [
        "mongokeep_last_run_success{operation=\"oplog_push\"} 1",
        "mongokeep_last_success_timestamp_seconds{operation=\"oplog_push\"} ",
        "mongokeep_last_run_bytes{operation=\"oplog_push\"} ",
    ] {
        assert!(prom.contains(line), "{line} not in:\n{prom}");
    }
    let (c, reaches) = oplog_status(cwd.path(), &repo);
    assert_eq!(c["ok"], true, "{c}");
    assert!(
        !c["message"].as_str().unwrap().contains("no oplog slice"),
        "{c}"
    );
    let reaches = reaches.unwrap();
    assert!(reaches > point, "{reaches} not after {point}");
    // The metrics file carries the same point, for a monitor that reads only it.
    let prom = std::fs::read_to_string(cwd.path().join("m.prom")).unwrap();
    assert_eq!(
        recoverable_metric(&prom),
        Some(reaches.timestamp_millis()),
        "{prom}"
    );
    std::thread::sleep(Duration::from_millis(1100)); // snapshot ids have whole seconds
    run(&["backup", "--db", &db]).expect_code(0);
    a.insert_one(doc! { "_id": "two" }).await.unwrap();
    run(&["oplog", "push", "--db", &db]).expect_code(0); // rolls the second one forward
    let slices = |dir: &Path| -> BTreeSet<String> {
        std::fs::read_dir(dir.join("oplog/slices"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect()
    };
    let before = slices(&repo);
    assert_eq!(before.len(), 4, "{before:?}");
    let policy = cwd.path().join("last1.toml");
    std::fs::write(&policy, "keep_last = 1\n").unwrap();
    let plan = mk(cwd.path(), &repo)
        .args(["prune", "--policy", policy.to_str().unwrap(), "--dry-run"])
        .run();
    plan.expect_code(0);
    assert!(
        plan.stdout
            .contains("ends before the oldest kept point-in-time snapshot"),
        "{}",
        plan.stdout
    );
    assert!(plan.stdout.contains("forward to now"), "{}", plan.stdout);
    assert_eq!(slices(&repo), before, "a dry run deletes nothing");
    let pruned = mk(cwd.path(), &repo)
        .args(["prune", "--policy", policy.to_str().unwrap()])
        .run();
    pruned.expect_code(0);
    let after = slices(&repo);
    assert_eq!(after.len(), 2, "{after:?}");
    // The slice removed (its two objects) is in the summary and the journal.
    assert!(
        pruned.stdout.contains("1 oplog slice;"),
        "{}",
        pruned.stdout
    );
    let journal = mk(cwd.path(), &repo).args(["journal", "--json"]).run();
    let entries = journal.json();
    let prune = entries
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["operation"] == "prune")
        .unwrap_or_else(|| panic!("{}", journal.stdout));
    assert_eq!(
        prune["figures"]["oplog_slices_removed"]
            .as_array()
            .map(Vec::len),
        Some(1),
        "{prune}"
    );
    let newest = before.iter().max().unwrap().clone();
    assert!(
        after.contains(&newest),
        "the slice after the kept snapshot stays: {after:?}"
    );
    // The kept snapshot still rolls forward through it.
    let target_db = common::unique("pitr_pruned");
    let out = mk_rs(cwd.path(), &repo)
        .args([
            "--metrics-file",
            "m.prom",
            "restore",
            "--snapshot",
            "latest",
            "--json",
            "--ns-from",
            &format!("{db}.*"),
            "--ns-to",
            &format!("{target_db}.*"),
        ])
        .args(["--to-time", &last_slice_end(&repo)])
        .run();
    out.expect_code(0);
    // A point-in-time restore is journaled and in the metrics file like any restore.
    let prom = std::fs::read_to_string(cwd.path().join("m.prom")).unwrap();
    assert!(
        prom.contains("mongokeep_last_run_success{operation=\"restore\"} 1"),
        "{prom}"
    );
    let journal = mk(cwd.path(), &repo).args(["journal", "--json"]).run();
    journal.expect_code(0);
    assert!(
        journal
            .json()
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["operation"] == "restore"
                && e["outcome"] == "success"
                && e["figures"]["slices"].as_u64() > Some(0)),
        "{}",
        journal.stdout
    );
    let dst = common::client(&common::services().standalone_uri).await;
    let two = dst
        .database(&target_db)
        .collection::<Document>("a")
        .find_one(doc! { "_id": "two" })
        .await
        .unwrap();
    assert!(
        two.is_some(),
        "the write after the kept snapshot is restored"
    );
    dst.database(&target_db).drop().await.unwrap();
    src.database(&db).drop().await.unwrap();
}

/// The `t:i` end of the newest slice.
fn last_slice_end(repo: &Path) -> String {
    let newest = std::fs::read_dir(repo.join("oplog/slices"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .max()
        .unwrap();
    let meta: serde_json::Value = serde_json::from_slice(&std::fs::read(newest).unwrap()).unwrap();
    let to = optime(&meta["oplog"]["to"]);
    format!("{}:{}", to.time, to.increment)
}

#[tokio::test]
async fn an_oplog_push_stopped_by_sigterm_stores_no_slice_and_a_rerun_continues() {
    let cwd = tempfile::tempdir().unwrap();
    let repo = cwd.path().join("repo");
    let rs = common::PrivateMongod::start(true);
    let c = common::client(&rs.uri).await;
    seed(&c, "sig", &["a"], 10).await;
    mk(cwd.path(), &repo)
        .env("MONGODB_URI", &rs.uri)
        .args(["backup", "--db", "sig"])
        .run()
        .expect_code(0);
    // Enough oplog after the snapshot that the push is still reading it when stopped.
    mongokeep::sample::seed_app(&c, "sig", "orders", 100, 3)
        .await
        .unwrap();
    let push = || {
        mk(cwd.path(), &repo)
            .env("MONGODB_URI", &rs.uri)
            .args(["oplog", "push", "--db", "sig"])
    };
    let mut child = push().spawn();
    // The push holds the repository lock from its start to its end: stop it then.
    let locks = repo.join("locks");
    common::wait_while_running(&mut child, "the lock was taken", || async {
        std::fs::read_dir(&locks).is_ok_and(|mut d| d.next().is_some())
    })
    .await;
    common::sigterm(&child);
    let out: common::Done = child.wait_with_output().unwrap().into();
    out.expect_code(1);
    assert!(
        out.stderr.contains("oplog push interrupted"),
        "{}",
        out.stderr
    );
    // No slice, no partial object, no lock: only the snapshot and the journal.
    let mut left: Vec<String> = vec![];
    let mut dirs = vec![repo.clone()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                dirs.push(e.path());
            } else {
                left.push(e.path().strip_prefix(&repo).unwrap().display().to_string());
            }
        }
    }
    assert!(
        left.iter()
            .all(|k| k.starts_with("snapshots/") || k.starts_with("journal/")),
        "{left:?}"
    );
    // A rerun continues from the snapshot and stores the slice.
    let again = push().run();
    again.expect_code(0);
    assert!(
        again.stdout.contains("oplog slice") && again.stdout.contains("continuing snapshot"),
        "{}",
        again.stdout
    );
}

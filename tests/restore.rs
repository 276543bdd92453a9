//! `mongokeep restore` and `export` against the real services: what comes back must be the
//! source, byte for byte, with the same indexes and options; bad input must be refused
//! clearly, with the documented exit code, before anything is written where possible.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use mongodb::bson::{doc, Bson, Document, RawDocumentBuf};
use mongodb::Client;

const USAGE: i32 = 2;
const TARGET: i32 = 3;
const MISMATCH: i32 = 5;

/// Collections of a database as `listCollections` reports them, by name (internal
/// `system.*` left out, except the time-series buckets, whose documents are the data).
async fn collections(client: &Client, db: &str) -> BTreeMap<String, Document> {
    let specs: Vec<Document> = client
        .database(db)
        .run_cursor_command(doc! { "listCollections": 1 })
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    specs
        .into_iter()
        .map(|d| (d.get_str("name").unwrap().to_string(), d))
        .filter(|(n, _)| !n.starts_with("system.") || n.starts_with("system.buckets."))
        .collect()
}

/// Every document as raw bytes, keyed by the raw bytes of its `_id`.
async fn docs_by_id(client: &Client, db: &str, coll: &str) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let c = client.database(db).collection::<RawDocumentBuf>(coll);
    let docs: Vec<RawDocumentBuf> = c.find(doc! {}).await.unwrap().try_collect().await.unwrap();
    let n = docs.len();
    let map: BTreeMap<Vec<u8>, Vec<u8>> = docs
        .into_iter()
        .map(|d| {
            let id = d.get("_id").unwrap().expect("every document has an _id");
            let id =
                mongodb::bson::to_vec(&doc! { "_id": Bson::try_from(id.to_raw_bson()).unwrap() })
                    .unwrap();
            (id, d.into_bytes())
        })
        .collect();
    assert_eq!(map.len(), n, "{db}.{coll}: duplicate _id");
    map
}

async fn indexes(client: &Client, db: &str, coll: &str) -> Vec<Document> {
    let mut v: Vec<Document> = client
        .database(db)
        .run_cursor_command(doc! { "listIndexes": coll })
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    for i in &mut v {
        i.remove("ns");
    }
    v.sort_by(|a, b| a.get_str("name").unwrap().cmp(b.get_str("name").unwrap()));
    v
}

/// dbHash per collection. `system.views` is left out: its `_id`s name the database, which
/// a restore under another name changes (the views themselves are compared by options).
async fn db_hash(client: &Client, db: &str) -> Document {
    let r = client
        .database(db)
        .run_command(doc! { "dbHash": 1 })
        .await
        .unwrap();
    let mut c = r.get_document("collections").unwrap().clone();
    assert!(
        c.remove("system.views").is_some(),
        "dbHash of {db} has no system.views: {c}"
    );
    c
}

/// The restored database equals the source: same namespaces and types, same options, the
/// same documents byte for byte (matched by `_id`), the same indexes, the same dbHash.
async fn assert_same_database(src: &Client, src_db: &str, dst: &Client, dst_db: &str) {
    let a = collections(src, src_db).await;
    let b = collections(dst, dst_db).await;
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "namespaces differ"
    );
    let mut compared = 0;
    for (name, spec) in &a {
        let other = &b[name];
        let kind = spec.get_str("type").unwrap();
        assert_eq!(kind, other.get_str("type").unwrap(), "type of {name}");
        assert_eq!(
            spec.get_document("options").unwrap(),
            other.get_document("options").unwrap(),
            "options of {name}"
        );
        if kind == "view" {
            continue;
        }
        if kind == "collection" {
            let (x, y) = (
                docs_by_id(src, src_db, name).await,
                docs_by_id(dst, dst_db, name).await,
            );
            assert_eq!(x.len(), y.len(), "document count of {name}");
            for (id, d) in &x {
                assert_eq!(
                    Some(d),
                    y.get(id),
                    "{name}: document {id:?} differs or is missing"
                );
            }
            compared += x.len();
        }
        assert_eq!(
            indexes(src, src_db, name).await,
            indexes(dst, dst_db, name).await,
            "indexes of {name}"
        );
    }
    let expected: u64 = mongokeep::sample::RICH_COLLECTIONS
        .iter()
        .filter(|(n, _)| *n != "metrics")
        .map(|(_, c)| c)
        .sum();
    assert!(
        compared as u64 >= expected,
        "only {compared} documents compared"
    );
    let (ha, hb) = (db_hash(src, src_db).await, db_hash(dst, dst_db).await);
    assert!(!ha.is_empty());
    assert_eq!(ha, hb, "dbHash differs");
}

/// A rich database on the replica set, backed up into S3; returns (db, repo URL, snapshot id).
async fn rich_snapshot(s: &common::Services, cwd: &std::path::Path) -> (String, String, String) {
    let client = common::client(&s.rs_uri).await;
    let db = common::unique("rrich");
    mongokeep::sample::seed_rich(&client, &db).await.unwrap();
    let repo = s.s3().repo_url(&common::unique("restore"));
    let out = common::mongokeep(cwd)
        .s3(&s.s3())
        .env("MONGODB_URI", &s.rs_uri)
        .args(["backup", "--db", &db, "--repo", &repo, "--json"])
        .run();
    out.expect_code(0);
    let id = out.json()["snapshot"].as_str().unwrap().to_string();
    (db, repo, id)
}

#[tokio::test]
async fn rich_database_restored_into_another_server_is_identical() {
    let s = common::services();
    let cwd = tempfile::tempdir().unwrap();
    let (db, repo, id) = rich_snapshot(&s, cwd.path()).await;
    let target_db = common::unique("restored");
    let out = common::mongokeep(cwd.path())
        .s3(&s.s3())
        .env("MONGOKEEP_TARGET_URI", &s.standalone_uri)
        .args(["restore", "--snapshot", &id, "--repo", &repo, "--json"])
        .args([
            "--ns-from",
            &format!("{db}.*"),
            "--ns-to",
            &format!("{target_db}.*"),
        ])
        .run();
    out.expect_code(0);
    let summary = out.json();
    assert_eq!(summary["snapshot"], id.as_str());
    assert_eq!(summary["views"], 1);
    let docs: u64 = mongokeep::sample::RICH_COLLECTIONS
        .iter()
        .map(|(n, c)| if *n == "metrics" { 0 } else { *c })
        .sum();
    assert!(summary["documents"].as_u64().unwrap() > docs, "{summary}");

    let src = common::client(&s.rs_uri).await;
    let dst = common::client(&s.standalone_uri).await;
    assert_same_database(&src, &db, &dst, &target_db).await;
    // The time-series collection answers queries as the source does.
    let count = |c: &Client, d: &str| {
        let c = c.database(d).collection::<Document>("metrics");
        async move { c.count_documents(doc! {}).await.unwrap() }
    };
    assert_eq!(count(&src, &db).await, count(&dst, &target_db).await);
    assert_eq!(count(&dst, &target_db).await, 48);
    dst.database(&target_db).drop().await.unwrap();
    src.database(&db).drop().await.unwrap();
}

#[tokio::test]
async fn export_restored_by_the_official_mongorestore_is_identical() {
    let s = common::services();
    let cwd = tempfile::tempdir().unwrap();
    let (db, repo, id) = rich_snapshot(&s, cwd.path()).await;
    let out_dir = cwd.path().join("dump");
    let out = common::mongokeep(cwd.path())
        .s3(&s.s3())
        .args([
            "export",
            "--snapshot",
            &id,
            "--repo",
            &repo,
            "--out",
            out_dir.to_str().unwrap(),
            "--json",
        ])
        .run();
    out.expect_code(0);
    assert_eq!(out.json()["views"], 1);
    let target_db = common::unique("mongorestored");
    let tools = std::env::var("MONGOKEEP_TEST_TOOLS")
        .expect("MONGOKEEP_TEST_TOOLS: run with scripts/test.sh");
    let mr = std::process::Command::new(format!("{tools}/mongorestore"))
        .args([
            "--uri",
            &s.standalone_uri,
            "--dir",
            out_dir.to_str().unwrap(),
        ])
        .args([
            "--nsFrom",
            &format!("{db}.*"),
            "--nsTo",
            &format!("{target_db}.*"),
        ])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&mr.stderr);
    assert!(mr.status.success(), "mongorestore failed:\n{log}");
    assert!(log.contains("0 document(s) failed to restore"), "{log}");
    let src = common::client(&s.rs_uri).await;
    let dst = common::client(&s.standalone_uri).await;
    assert_same_database(&src, &db, &dst, &target_db).await;
    dst.database(&target_db).drop().await.unwrap();
    src.database(&db).drop().await.unwrap();
}

#[tokio::test]
async fn existing_data_is_refused_and_drop_replaces_only_the_selection() {
    let s = common::services();
    let cwd = tempfile::tempdir().unwrap();
    let (db, repo, id) = rich_snapshot(&s, cwd.path()).await;
    let target_db = common::unique("into");
    let dst = common::client(&s.standalone_uri).await;
    let map = [
        "--ns-from".to_string(),
        format!("{db}.*"),
        "--ns-to".to_string(),
        format!("{target_db}.*"),
    ];
    let restore = |extra: &[&str]| {
        common::mongokeep(cwd.path())
            .s3(&s.s3())
            .env("MONGOKEEP_TARGET_URI", &s.standalone_uri)
            .args(["restore", "--snapshot", "latest", "--repo", &repo])
            .args(&map)
            .args(extra)
            .run()
    };
    // The target already holds documents in one of the snapshot's collections, and in one
    // collection the snapshot does not have.
    let t = dst.database(&target_db);
    t.collection::<Document>("indexed")
        .insert_one(doc! { "_id": "local", "keep": false })
        .await
        .unwrap();
    t.collection::<Document>("unrelated")
        .insert_one(doc! { "_id": 1 })
        .await
        .unwrap();

    // Dry run: prints the plan, refuses, writes nothing.
    let out = restore(&["--dry-run"]);
    out.expect_code(USAGE);
    assert!(
        out.stdout.contains("REFUSED") && out.stdout.contains(&format!("{target_db}.indexed")),
        "{}",
        out.all()
    );
    assert!(
        out.stderr.contains("holds documents, about 1"),
        "{}",
        out.stderr
    );
    assert_eq!(
        collections(&dst, &target_db).await.len(),
        2,
        "the dry run wrote something"
    );

    // Without --drop: refused, naming the collection, nothing written.
    let out = restore(&[]);
    out.expect_code(USAGE);
    assert!(
        out.stderr
            .contains(&format!("{target_db}.indexed (holds documents, about 1)")),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("--drop"), "{}", out.stderr);
    assert_eq!(collections(&dst, &target_db).await.len(), 2);

    // --drop with a selection: replaces exactly the selected collection.
    let out = restore(&["--drop", "--ns-include", &format!("{db}.indexed"), "--json"]);
    out.expect_code(0);
    assert_eq!(out.json()["collections"], 1);
    let names: Vec<String> = collections(&dst, &target_db).await.into_keys().collect();
    assert_eq!(names, ["indexed", "unrelated"]);
    assert_eq!(
        t.collection::<Document>("indexed")
            .count_documents(doc! { "_id": "local" })
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        t.collection::<Document>("indexed")
            .count_documents(doc! {})
            .await
            .unwrap(),
        200
    );
    assert_eq!(
        t.collection::<Document>("unrelated")
            .count_documents(doc! {})
            .await
            .unwrap(),
        1
    );

    // A dry run in JSON lists what would be created.
    let out = restore(&[
        "--dry-run",
        "--json",
        "--ns-exclude",
        &format!("{db}.indexed"),
    ]);
    out.expect_code(0);
    let plan = out.json();
    let items = plan["items"].as_array().unwrap();
    assert!(items.iter().all(|i| i["action"] == "create"), "{plan}");
    assert!(items
        .iter()
        .any(|i| i["target_name"] == "big_doc" && i["documents"] == 1));
    assert_eq!(collections(&dst, &target_db).await.len(), 2);

    // Two sources onto one target: refused before anything is written.
    let out = common::mongokeep(cwd.path())
        .s3(&s.s3())
        .env("MONGOKEEP_TARGET_URI", &s.standalone_uri)
        .args(["restore", "--snapshot", &id, "--repo", &repo])
        .args([
            "--ns-from",
            &format!("{db}.indexed"),
            "--ns-to",
            &format!("{target_db}.same"),
        ])
        .args([
            "--ns-from",
            &format!("{db}.collated"),
            "--ns-to",
            &format!("{target_db}.same"),
        ])
        .run();
    out.expect_code(USAGE);
    assert!(
        out.stderr.contains("would both be restored into"),
        "{}",
        out.stderr
    );
    assert_eq!(collections(&dst, &target_db).await.len(), 2);

    dst.database(&target_db).drop().await.unwrap();
    common::client(&s.rs_uri)
        .await
        .database(&db)
        .drop()
        .await
        .unwrap();
}

/// A small snapshot in a local folder: (db, repo path, snapshot id, manifest).
async fn local_snapshot(
    s: &common::Services,
    cwd: &std::path::Path,
    compression: &str,
) -> (String, String, serde_json::Value) {
    let client = common::client(&s.rs_uri).await;
    let db = common::unique("bad");
    mongokeep::sample::seed_app(&client, &db, "orders", 2, 3)
        .await
        .unwrap();
    let id = backup_to_folder(cwd, &s.rs_uri, &db, &["--compression", compression]);
    let m = common::mongokeep(cwd)
        .args(["show", &id, "--repo", "./repo", "--json"])
        .run()
        .json();
    (db, id, m)
}

/// Back `db` up from `uri` into `cwd/repo`; the snapshot id.
fn backup_to_folder(cwd: &std::path::Path, uri: &str, db: &str, extra: &[&str]) -> String {
    let out = common::mongokeep(cwd)
        .env("MONGODB_URI", uri)
        .args(["backup", "--db", db, "--repo", "./repo", "--json"])
        .args(extra)
        .run();
    out.expect_code(0);
    out.json()["snapshot"].as_str().unwrap().to_string()
}

fn restore_into(cwd: &std::path::Path, uri: &str, id: &str, extra: &[&str]) -> common::Done {
    common::mongokeep(cwd)
        .env("MONGOKEEP_TARGET_URI", uri)
        .args(["restore", "--snapshot", id, "--repo", "./repo"])
        .args(extra)
        .run()
}

#[tokio::test]
async fn unknown_and_incomplete_snapshots_are_refused() {
    let s = common::services();
    let cwd = tempfile::tempdir().unwrap();
    let (db, id, _) = local_snapshot(&s, cwd.path(), "gzip").await;
    let out = restore_into(cwd.path(), &s.standalone_uri, "20200101T000000Z-0000", &[]);
    out.expect_code(USAGE);
    assert!(
        out.stderr.contains("does not exist") && out.stderr.contains(&id),
        "{}",
        out.stderr
    );

    // A snapshot folder without a manifest: what an interrupted backup leaves.
    let broken = "20261101T020000Z-dead";
    let dir = cwd.path().join(format!("repo/snapshots/{broken}/data/x"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("y.tar.gz"), b"partial").unwrap();
    let out = restore_into(cwd.path(), &s.standalone_uri, broken, &[]);
    out.expect_code(USAGE);
    assert!(
        out.stderr.contains("incomplete") && out.stderr.contains("did not finish"),
        "{}",
        out.stderr
    );
    common::client(&s.rs_uri)
        .await
        .database(&db)
        .drop()
        .await
        .unwrap();
}

/// The archive object of the snapshot's one collection, on disk.
fn archive_path(
    cwd: &std::path::Path,
    m: &serde_json::Value,
) -> (std::path::PathBuf, serde_json::Value) {
    let obj = m["collections"][0]["objects"][0].clone();
    (cwd.join("repo").join(obj["key"].as_str().unwrap()), obj)
}

#[tokio::test]
async fn a_flipped_byte_is_a_mismatch_naming_the_object_and_both_checksums() {
    let s = common::services();
    for compression in ["gzip", "none"] {
        let cwd = tempfile::tempdir().unwrap();
        let (db, id, m) = local_snapshot(&s, cwd.path(), compression).await;
        let (path, obj) = archive_path(cwd.path(), &m);
        let mut bytes = std::fs::read(&path).unwrap();
        let at = bytes.len() / 2;
        bytes[at] ^= 0x01;
        std::fs::write(&path, &bytes).unwrap();
        let target_db = common::unique("flipped");
        let map = [&format!("{db}.*")[..], &format!("{target_db}.*")[..]];
        let out = restore_into(
            cwd.path(),
            &s.standalone_uri,
            &id,
            &["--ns-from", map[0], "--ns-to", map[1]],
        );
        out.expect_code(MISMATCH);
        let key = obj["key"].as_str().unwrap();
        assert!(out.stderr.contains(key), "{}", out.stderr);
        assert!(
            out.stderr.contains(&format!(
                "expected sha256 {}",
                obj["sha256"].as_str().unwrap()
            )),
            "{}",
            out.stderr
        );
        assert!(out.stderr.contains("found sha256 "), "{}", out.stderr);

        // export checks the same way, and leaves no .bson that looks whole.
        let out = export(cwd.path(), &id, "dump").run();
        out.expect_code(MISMATCH);
        assert!(out.stderr.contains(key), "{}", out.stderr);
        assert!(!cwd.path().join(format!("dump/{db}/orders.bson")).exists());
        common::client(&s.standalone_uri)
            .await
            .database(&target_db)
            .drop()
            .await
            .unwrap();
        common::client(&s.rs_uri)
            .await
            .database(&db)
            .drop()
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_truncated_archive_is_a_mismatch() {
    let s = common::services();
    let cwd = tempfile::tempdir().unwrap();
    let (db, id, m) = local_snapshot(&s, cwd.path(), "gzip").await;
    let (path, obj) = archive_path(cwd.path(), &m);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let target_db = common::unique("truncated");
    let out = restore_into(
        cwd.path(),
        &s.standalone_uri,
        &id,
        &[
            "--ns-from",
            &format!("{db}.*"),
            "--ns-to",
            &format!("{target_db}.*"),
        ],
    );
    out.expect_code(MISMATCH);
    assert!(
        out.stderr.contains(obj["key"].as_str().unwrap()),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains(&format!("expected {} bytes", obj["size"])),
        "{}",
        out.stderr
    );
    // The load had begun: the message says the target may hold part of it, and the fix.
    assert!(
        out.stderr
            .contains("the target may hold part of the snapshot")
            && out.stderr.contains("again with --drop"),
        "{}",
        out.stderr
    );
    common::client(&s.standalone_uri)
        .await
        .database(&target_db)
        .drop()
        .await
        .unwrap();
    common::client(&s.rs_uri)
        .await
        .database(&db)
        .drop()
        .await
        .unwrap();
}

#[tokio::test]
async fn unreachable_and_read_only_targets_are_target_errors() {
    let s = common::services();
    let cwd = tempfile::tempdir().unwrap();
    let (db, id, _) = local_snapshot(&s, cwd.path(), "gzip").await;
    let dead = format!(
        "mongodb://127.0.0.1:{}/?serverSelectionTimeoutMS=1000",
        common::free_port()
    );
    let out = restore_into(cwd.path(), &dead, &id, &[]);
    out.expect_code(TARGET);
    assert!(
        out.stderr.contains("cannot reach MongoDB"),
        "{}",
        out.stderr
    );

    // A server with authentication on, and a user that may only read.
    let mongod = common::PrivateMongod::start_with(&["--auth"]);
    let host = format!("127.0.0.1:{}", mongod.port);
    let admin_pw = "Adm1n-Pa55word";
    let localhost = common::client(&format!("mongodb://{host}/")).await;
    localhost
        .database("admin")
        .run_command(doc! { "createUser": "root", "pwd": admin_pw, "roles": ["root"] })
        .await
        .unwrap();
    let root = common::client(&format!(
        "mongodb://root:{admin_pw}@{host}/?authSource=admin"
    ))
    .await;
    let reader_pw = "Read3r-Pa55word";
    root.database("admin")
        .run_command(doc! { "createUser": "reader", "pwd": reader_pw, "roles": [{ "role": "readAnyDatabase", "db": "admin" }] })
        .await
        .unwrap();
    let out = restore_into(
        cwd.path(),
        &format!("mongodb://reader:{reader_pw}@{host}/?authSource=admin"),
        &id,
        &[],
    );
    out.expect_code(TARGET);
    assert!(out.stderr.contains("refused"), "{}", out.stderr);
    assert!(
        !out.all().contains(reader_pw),
        "password printed: {}",
        out.all()
    );
    common::client(&s.rs_uri)
        .await
        .database(&db)
        .drop()
        .await
        .unwrap();
}

/// A new database (named from `name`) of `mib` MiB of app documents in `source`, backed up
/// (gzip:1) into `./repo` under `cwd`; the client and the database's name.
async fn seeded_backup(
    cwd: &std::path::Path,
    source: &str,
    name: &str,
    mib: u64,
    seed: u64,
) -> (Client, String) {
    let src = common::client(source).await;
    let db = common::unique(name);
    mongokeep::sample::seed_app(&src, &db, "orders", mib, seed)
        .await
        .unwrap();
    common::mongokeep(cwd)
        .env("MONGODB_URI", source)
        .args(["backup", "--db", &db, "--repo", "./repo"])
        .args(["--compression", "gzip:1"])
        .run()
        .expect_code(0);
    (src, db)
}

#[tokio::test]
async fn a_target_stopped_mid_restore_fails_clearly_and_a_rerun_with_drop_completes() {
    let s = common::services();
    let cwd = tempfile::tempdir().unwrap();
    let (src, db) = seeded_backup(cwd.path(), &s.rs_uri, "midrestore", 100, 4).await;
    let expected = src
        .database(&db)
        .collection::<Document>("orders")
        .estimated_document_count()
        .await
        .unwrap();

    let mongod = common::PrivateMongod::start(false);
    let target = common::client(&mongod.uri).await;
    let mut child = common::mongokeep(cwd.path())
        .env("MONGOKEEP_TARGET_URI", &mongod.uri)
        .args([
            "restore",
            "--snapshot",
            "latest",
            "--repo",
            "./repo",
            "--insert-workers",
            "1",
        ])
        .spawn();
    let coll = target.database(&db).collection::<Document>("orders");
    let start = Instant::now();
    loop {
        let n = coll.estimated_document_count().await.unwrap_or(0);
        if n > 0 {
            assert!(
                n < expected,
                "the restore finished before the server was stopped"
            );
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("restore ended ({status}) before any document arrived");
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no document arrived"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // What is in is made durable first: killed within the journal's 100 ms, the server
    // would come back without the collection, and the plain rerun below would not refuse.
    target
        .database("admin")
        .run_command(doc! {"fsync": 1})
        .await
        .unwrap();
    mongod.kill();
    let out: common::Done = child.wait_with_output().unwrap().into();
    out.expect_code(TARGET);
    assert!(
        out.stderr.contains("MongoDB") && out.stderr.contains(&format!("{db}.orders")),
        "{}",
        out.stderr
    );

    mongod.restart();
    // Half a collection is there now: a plain rerun refuses, a rerun with --drop completes.
    restore_into(cwd.path(), &mongod.uri, "latest", &[]).expect_code(USAGE);
    let out = restore_into(cwd.path(), &mongod.uri, "latest", &["--drop", "--json"]);
    out.expect_code(0);
    assert_eq!(out.json()["documents"].as_u64(), Some(expected));
    let target = common::client(&mongod.uri).await;
    assert_eq!(
        target
            .database(&db)
            .collection::<Document>("orders")
            .count_documents(doc! {})
            .await
            .unwrap(),
        expected
    );
    src.database(&db).drop().await.unwrap();
}

#[tokio::test]
async fn a_restore_stopped_by_sigterm_ends_its_inserts_says_so_and_a_rerun_with_drop_completes() {
    let s = common::services();
    // A replica set's snapshot is restored with its oplog replayed, a standalone's without:
    // two paths.
    stopped_by_sigterm(&s, &s.rs_uri).await;
    stopped_by_sigterm(&s, &s.standalone_uri).await;
}

async fn stopped_by_sigterm(s: &common::Services, source: &str) {
    let cwd = tempfile::tempdir().unwrap();
    let (src, db) = seeded_backup(cwd.path(), source, "sigrestore", 80, 6).await;
    let target_db = common::unique("sigrestored");
    let restore = |extra: &[&str]| {
        common::mongokeep(cwd.path())
            .env("MONGOKEEP_TARGET_URI", &s.standalone_uri)
            .args(["restore", "--snapshot", "latest", "--repo", "./repo"])
            .args([
                "--ns-from",
                &format!("{db}.*"),
                "--ns-to",
                &format!("{target_db}.*"),
            ])
            .args(extra)
    };
    let coll = common::client(&s.standalone_uri)
        .await
        .database(&target_db)
        .collection::<Document>("orders");
    let mut child = restore(&[]).spawn();
    common::wait_while_running(&mut child, "a document arrived", || async {
        coll.estimated_document_count().await.unwrap_or(0) > 0
    })
    .await;
    common::sigterm(&child);
    let out: common::Done = child.wait_with_output().unwrap().into();
    assert_ne!(out.code, 0, "{}", out.all());
    assert!(
        out.stderr.contains("interrupted") && out.stderr.contains("--drop"),
        "{}",
        out.stderr
    );
    // The inserts in flight ended before the process did: nothing more arrives.
    let at_exit = coll.count_documents(doc! {}).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(coll.count_documents(doc! {}).await.unwrap(), at_exit);
    let total = src
        .database(&db)
        .collection::<Document>("orders")
        .estimated_document_count()
        .await
        .unwrap();
    assert!(at_exit < total, "stopped after {at_exit} of {total}");
    // A rerun with --drop completes.
    restore(&["--drop"]).run().expect_code(0);
    assert_eq!(coll.count_documents(doc! {}).await.unwrap(), total);
    coll.client().database(&target_db).drop().await.unwrap();
    src.database(&db).drop().await.unwrap();
}

/// Names in `dir`, sorted (hidden ones too).
fn names_in(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// `mongokeep export` of snapshot `id` of `cwd/repo` into `out`, ready to run or spawn.
fn export(cwd: &std::path::Path, id: &str, out: &str) -> common::Run {
    common::mongokeep(cwd).args(["export", "--snapshot", id, "--repo", "./repo", "--out", out])
}

#[tokio::test]
async fn an_export_is_all_or_nothing_and_never_writes_into_a_folder_with_files() {
    let s = common::services();
    let cwd = tempfile::tempdir().unwrap();
    let client = common::client(&s.rs_uri).await;
    let db = common::unique("exportall");
    for (i, c) in ["alpha", "beta", "gamma"].into_iter().enumerate() {
        mongokeep::sample::seed_app(&client, &db, c, 1, i as u64)
            .await
            .unwrap();
    }
    let id = backup_to_folder(cwd.path(), &s.rs_uri, &db, &[]);
    let m = common::mongokeep(cwd.path())
        .args(["show", &id, "--repo", "./repo", "--json"])
        .run()
        .json();
    let colls = m["collections"].as_array().unwrap();
    assert_eq!(colls.len(), 3);
    let before = names_in(cwd.path());

    // A folder holding a file is refused before anything is fetched, and left as it was.
    let busy = cwd.path().join("busy");
    std::fs::create_dir(&busy).unwrap();
    std::fs::write(busy.join("keep.txt"), b"mine").unwrap();
    let out = export(cwd.path(), &id, "busy").run();
    out.expect_code(USAGE);
    assert!(out.stderr.contains("busy is not empty"), "{}", out.stderr);
    assert_eq!(names_in(&busy), ["keep.txt"]);
    assert_eq!(std::fs::read(busy.join("keep.txt")).unwrap(), b"mine");

    // An existing empty folder is filled: every collection, nothing else.
    let empty = cwd.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let out = export(cwd.path(), &id, "empty").args(["--json"]).run();
    out.expect_code(0);
    assert_eq!(out.json()["collections"], 3);
    // From a replica set: the snapshot's oplog too, where mongodump --oplog puts it.
    assert_eq!(out.json()["oplog_entries"], m["oplog"]["entries"]);
    assert!(empty.join("oplog.bson").is_file());
    assert_eq!(
        names_in(&empty.join(&db)),
        [
            "alpha.bson",
            "alpha.metadata.json",
            "beta.bson",
            "beta.metadata.json",
            "gamma.bson",
            "gamma.metadata.json"
        ]
    );

    // The last collection exported is damaged: the ones before it were written and checked,
    // yet no folder appears (a mongorestore --dir of it would restore a subset silently),
    // and nothing of the export is left beside it.
    let last = colls.last().unwrap();
    let key = last["objects"][0]["key"].as_str().unwrap();
    let path = cwd.path().join("repo").join(key);
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    // Into a new folder (built beside it) and into an existing empty one (built inside).
    let vacant = cwd.path().join("vacant");
    std::fs::create_dir(&vacant).unwrap();
    for out_dir in ["dump", "vacant"] {
        let out = export(cwd.path(), &id, out_dir).run();
        out.expect_code(MISMATCH);
        assert!(out.stderr.contains(key), "{}", out.stderr);
    }
    assert!(names_in(&vacant).is_empty(), "{:?}", names_in(&vacant));
    let mut expected = before.clone();
    expected.extend(["busy", "empty", "vacant"].map(String::from));
    expected.sort();
    assert_eq!(names_in(cwd.path()), expected);
    client.database(&db).drop().await.unwrap();
}

#[tokio::test]
async fn an_export_stopped_by_sigterm_leaves_no_folder() {
    const INTERNAL: i32 = 1;
    let s = common::services();
    let cwd = tempfile::tempdir().unwrap();
    let client = common::client(&s.rs_uri).await;
    let db = common::unique("exportsig");
    mongokeep::sample::seed_app(&client, &db, "orders", 100, 7)
        .await
        .unwrap();
    let id = backup_to_folder(cwd.path(), &s.rs_uri, &db, &[]);
    let before = names_in(cwd.path());

    let mut child = export(cwd.path(), &id, "dump").spawn();
    let bson = cwd
        .path()
        .join(format!(".dump.mongokeep-partial/{db}/orders.bson"));
    common::wait_while_running(&mut child, "the export was writing", || async {
        std::fs::metadata(&bson).is_ok_and(|m| m.len() > 0)
    })
    .await;
    common::sigterm(&child);
    let out: common::Done = child.wait_with_output().unwrap().into();
    out.expect_code(INTERNAL);
    assert!(out.stderr.contains("export interrupted"), "{}", out.stderr);
    assert_eq!(names_in(cwd.path()), before);
    client.database(&db).drop().await.unwrap();
}

/// An export into an existing empty folder is built beside it and replaces it in one
/// step: killed with SIGKILL, it leaves the folder empty (before, it was built inside,
/// where a kill between the final renames could leave part of it). A second export into
/// the same folder while one runs is refused; the next one after the kill removes what
/// the killed one left and finishes.
#[tokio::test]
async fn an_export_killed_or_run_twice_at_once_leaves_an_empty_folder_empty() {
    use std::os::unix::fs::PermissionsExt;
    let s = common::services();
    let cwd = tempfile::tempdir().unwrap();
    let client = common::client(&s.rs_uri).await;
    let db = common::unique("exportkill");
    mongokeep::sample::seed_app(&client, &db, "orders", 100, 7)
        .await
        .unwrap();
    let id = backup_to_folder(cwd.path(), &s.rs_uri, &db, &[]);
    let empty = cwd.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    std::fs::set_permissions(&empty, std::fs::Permissions::from_mode(0o750)).unwrap();

    let mut first = export(cwd.path(), &id, "empty").spawn();
    let staging = cwd.path().join(".empty.mongokeep-partial");
    let bson = staging.join(format!("{db}/orders.bson"));
    common::wait_while_running(&mut first, "the export was writing", || async {
        std::fs::metadata(&bson).is_ok_and(|m| m.len() > 0)
    })
    .await;
    let second = export(cwd.path(), &id, "empty").run();
    second.expect_code(USAGE);
    assert!(
        second.stderr.contains("another mongokeep export into") && second.stderr.contains("fix:"),
        "{}",
        second.stderr
    );
    assert!(
        bson.exists(),
        "the second export must not touch the first one's folder"
    );

    first.kill().unwrap(); // SIGKILL: no cleanup runs
    first.wait().unwrap();
    assert!(names_in(&empty).is_empty(), "{:?}", names_in(&empty));
    assert!(staging.exists(), "a killed export leaves its hidden folder");

    let out = export(cwd.path(), &id, "empty").args(["--json"]).run();
    out.expect_code(0);
    assert_eq!(out.json()["collections"], 1);
    assert_eq!(
        names_in(&empty.join(&db)),
        ["orders.bson", "orders.metadata.json"]
    );
    assert!(
        !staging.exists(),
        "the next export removes what the killed one left"
    );
    let mode = std::fs::metadata(&empty).unwrap().permissions().mode();
    assert_eq!(mode & 0o7777, 0o750, "the folder keeps its mode");

    // A new folder whose parents do not exist yet: they are made.
    export(cwd.path(), &id, "nested/deeper/dump")
        .run()
        .expect_code(0);
    assert!(cwd
        .path()
        .join(format!("nested/deeper/dump/{db}/orders.bson"))
        .is_file());
    // An empty folder holding only what an export killed while building inside it left:
    // that is cleared, and the export completes.
    let left = cwd.path().join("left");
    std::fs::create_dir_all(left.join(".mongokeep-partial/x")).unwrap();
    export(cwd.path(), &id, "left").run().expect_code(0);
    assert_eq!(names_in(&left), [db.as_str(), "oplog.bson"]);
    client.database(&db).drop().await.unwrap();
}

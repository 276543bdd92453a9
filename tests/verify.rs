//! `mongokeep verify`, `status`, `journal` and the metrics file against the real services:
//! a good snapshot passes, every corruption fails with the mismatch code and a report that
//! names what differs, and the scratch databases never outlive the run.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use mongodb::bson::{doc, Document};
use mongokeep::repository::Repository;
use mongokeep::restore::{self, NsMap, RestoreOptions};
use mongokeep::source::Source;
use mongokeep::storage::Storage;

const USAGE: i32 = 2;
const SOURCE: i32 = 3;
const MISMATCH: i32 = 5;
const STALE: i32 = 7;

async fn databases_with_prefix(uri: &str, prefix: &str) -> Vec<String> {
    let names = common::client(uri)
        .await
        .list_database_names()
        .await
        .unwrap();
    names
        .into_iter()
        .filter(|n| n.starts_with(prefix))
        .collect()
}

#[tokio::test]
async fn a_good_snapshot_passes_and_a_flipped_byte_fails_quick_and_full_verification() {
    let s = common::services();
    let t = s.s3();
    let cwd = tempfile::tempdir().unwrap();
    let client = common::client(&s.rs_uri).await;
    let db = common::unique("vrich");
    mongokeep::sample::seed_rich(&client, &db).await.unwrap();
    let prefix = common::unique("verify");
    let repo = t.repo_url(&prefix);
    let run = |args: &[&str]| {
        common::mongokeep(cwd.path())
            .s3(&t)
            .env("MONGOKEEP_SCRATCH_URI", &s.standalone_uri)
            .args(["--repo", &repo, "--metrics-file", "m.prom"])
            .args(args)
            .run()
    };
    // No snapshot yet: status fails with its own code.
    run(&["status"]).expect_code(STALE);
    let out = common::mongokeep(cwd.path())
        .s3(&t)
        .env("MONGODB_URI", &s.rs_uri)
        .args([
            "--repo",
            &repo,
            "--metrics-file",
            "m.prom",
            "backup",
            "--db",
            &db,
            "--json",
        ])
        .run();
    out.expect_code(0);
    let id = out.json()["snapshot"].as_str().unwrap().to_string();

    let quick = run(&["verify", "--snapshot", &id, "--quick", "--json"]);
    quick.expect_code(0);
    assert_eq!(quick.json()["result"], "passed");
    assert!(quick.json()["objects_checked"].as_u64().unwrap() >= 10);

    let scratch_prefix = common::unique("scr");
    let scratch = format!("{}{scratch_prefix}", s.standalone_uri);
    let full = run(&[
        "verify",
        "--snapshot",
        &id,
        "--scratch",
        &scratch,
        "--json",
        "--report-out",
        "report.json",
        "--compare-source",
        &s.rs_uri,
    ]);
    full.expect_code(0);
    let r = full.json();
    assert_eq!(r["snapshot"], id.as_str());
    assert_eq!(r["result"], "passed");
    assert!(r["recovery_seconds"].as_f64().unwrap() > 0.0);
    let checks = r["collections"].as_array().unwrap();
    assert_eq!(
        checks.len(),
        mongokeep::sample::RICH_COLLECTIONS.len() + 1,
        "{r}"
    );
    assert!(checks
        .iter()
        .all(|c| c["result"] == "passed" && c["problems"].as_array().unwrap().is_empty()));
    let indexed = checks.iter().find(|c| c["name"] == "indexed").unwrap();
    assert_eq!(
        (
            indexed["count_actual"].as_u64(),
            indexed["count_expected"].as_u64()
        ),
        (Some(200), Some(200))
    );
    assert_eq!(indexed["digest_actual"], indexed["digest_expected"]);
    assert!(r["drift"]
        .as_array()
        .unwrap()
        .iter()
        .all(|d| d["snapshot_count"] == d["source_count"]));
    assert_eq!(
        std::fs::read_to_string(cwd.path().join("report.json"))
            .map(|x| serde_json::from_str::<serde_json::Value>(&x).unwrap())
            .unwrap(),
        r
    );
    assert!(
        databases_with_prefix(&s.standalone_uri, &scratch_prefix)
            .await
            .is_empty(),
        "scratch databases left behind"
    );
    let store = t.store(&prefix).await;
    let reports = common::keys(&*store, &format!("reports/verify/{id}/")).await;
    assert_eq!(
        reports.iter().filter(|k| k.ends_with(".json")).count(),
        2,
        "{reports:?}"
    );
    assert_eq!(
        reports.iter().filter(|k| k.ends_with(".md")).count(),
        2,
        "{reports:?}"
    );
    run(&["status", "--max-age", "1h", "--max-verify-age", "1h"]).expect_code(0);
    run(&["status", "--max-age", "0s"]).expect_code(STALE);

    // Flip one byte of one archive in the bucket: both verifications fail, naming it.
    let m = run(&["show", &id, "--json"]).json();
    let obj = m["collections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "indexed")
        .unwrap()["objects"][0]
        .clone();
    let key = obj["key"].as_str().unwrap();
    let mut data = store.get(key).await.unwrap().to_vec();
    let at = data.len() / 3;
    data[at] ^= 0x20;
    store.put(key, Bytes::from(data)).await.unwrap();
    for args in [vec!["--quick"], vec![]] {
        let mut a = vec!["verify", "--snapshot", &id[..], "--json"];
        a.extend(args.iter().copied());
        let out = run(&a);
        out.expect_code(MISMATCH);
        let r = out.json();
        assert_eq!(r["result"], "failed");
        let problems = r["object_problems"].as_array().unwrap();
        assert!(
            problems.iter().any(|p| p.as_str().unwrap().contains(key)
                && p.as_str()
                    .unwrap()
                    .contains(obj["sha256"].as_str().unwrap())),
            "{r}"
        );
        assert!(out.stderr.contains("FAILED"), "{}", out.stderr);
    }
    assert!(
        databases_with_prefix(&s.standalone_uri, "mkverify_")
            .await
            .is_empty(),
        "scratch databases left behind"
    );
    // Status now: the newest passed verification is still the earlier one.
    let st = run(&["status", "--json", "--max-verify-age", "1h"]);
    st.expect_code(0);
    assert_eq!(st.json()["last_verification"]["result"], "failed");

    // The journal lists every operation; the metrics file has the verification's result.
    let j = run(&["journal", "--json", "--since", "1d"]).json();
    let ops: Vec<(&str, &str)> = j
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["operation"].as_str().unwrap(),
                e["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        ops,
        [
            ("backup", "success"),
            ("verify", "success"),
            ("verify", "success"),
            ("verify", "failure"),
            ("verify", "failure")
        ]
    );
    let prom = std::fs::read_to_string(cwd.path().join("m.prom")).unwrap();
    assert!(
        prom.contains("mongokeep_last_verification_passed 0\n"),
        "{prom}"
    );
    assert!(
        prom.contains("mongokeep_last_success_timestamp_seconds{operation=\"backup\"}"),
        "{prom}"
    );
    client.database(&db).drop().await.unwrap();
}

/// Back `db` up from `uri` into `cwd`/repo, with `flags` added; that repository and the
/// snapshot's manifest.
async fn backup_into_repo(
    cwd: &std::path::Path,
    uri: &str,
    db: &str,
    flags: &[&str],
) -> (Repository, mongokeep::manifest::Manifest) {
    common::mongokeep(cwd)
        .env("MONGODB_URI", uri)
        .args(["backup", "--db", db, "--repo", "./repo"])
        .args(flags)
        .run()
        .expect_code(0);
    let repo = Repository::new(
        mongokeep::storage::open(cwd.join("repo").to_str().unwrap(), &Default::default())
            .await
            .unwrap(),
    );
    let manifest = repo.resolve("latest").await.unwrap();
    (repo, manifest)
}

#[tokio::test]
async fn a_deleted_document_and_a_missing_index_are_named_per_collection() {
    // The comparison half of verify, run on a restore that was then damaged.
    let s = common::services();
    let cwd = tempfile::tempdir().unwrap();
    let client = common::client(&s.rs_uri).await;
    let db = common::unique("vdamage");
    mongokeep::sample::seed_rich(&client, &db).await.unwrap();
    let (repo, manifest) = backup_into_repo(cwd.path(), &s.rs_uri, &db, &[]).await;
    let scratch = Source::connect(&s.standalone_uri).await.unwrap();
    let prefix = common::unique("dmg");
    let target = mongokeep::verify::scratch_db(&prefix, &db);
    let opts = RestoreOptions {
        map: NsMap::new(&[format!("{db}.*")], &[format!("{target}.*")]).unwrap(),
        ..Default::default()
    };
    let plan = restore::plan(&manifest, &scratch, &opts).await.unwrap();
    restore::execute(&repo, &scratch, &plan, &opts)
        .await
        .unwrap();
    let clean = mongokeep::verify::compare(&manifest, &scratch, &prefix, 2)
        .await
        .unwrap();
    assert!(clean.iter().all(|c| c.problems.is_empty()), "{clean:?}");

    let t = common::client(&s.standalone_uri).await.database(&target);
    t.collection::<Document>("validated")
        .delete_one(doc! {})
        .await
        .unwrap();
    t.collection::<Document>("indexed")
        .drop_index("maybe_1")
        .await
        .unwrap();
    let checks = mongokeep::verify::compare(&manifest, &scratch, &prefix, 2)
        .await
        .unwrap();
    let failed: Vec<_> = checks.iter().filter(|c| !c.problems.is_empty()).collect();
    assert_eq!(failed.len(), 2, "{failed:?}");
    let validated = failed.iter().find(|c| c.name == "validated").unwrap();
    assert_eq!(validated.problems[0], "count: expected 10, found 9");
    assert!(
        validated.problems[1].starts_with("content digest: expected "),
        "{:?}",
        validated.problems
    );
    assert_eq!(validated.problems.len(), 2);
    let indexed = failed.iter().find(|c| c.name == "indexed").unwrap();
    assert_eq!(indexed.problems, ["index maybe_1: missing"]);
    t.drop().await.unwrap();
    client.database(&db).drop().await.unwrap();
}

#[tokio::test]
async fn unreachable_or_occupied_scratch_is_refused_and_an_interrupted_verify_cleans_up() {
    let s = common::services();
    let cwd = tempfile::tempdir().unwrap();
    let client = common::client(&s.rs_uri).await;
    let db = common::unique("vbad");
    mongokeep::sample::seed_app(&client, &db, "orders", 80, 5)
        .await
        .unwrap();
    common::mongokeep(cwd.path())
        .env("MONGODB_URI", &s.rs_uri)
        .args([
            "backup",
            "--db",
            &db,
            "--repo",
            "./repo",
            "--compression",
            "gzip:1",
        ])
        .run()
        .expect_code(0);
    let verify = |scratch: &str, extra: &[&str]| {
        common::mongokeep(cwd.path())
            .args(["verify", "--repo", "./repo", "--scratch", scratch])
            .args(extra)
            .run()
    };
    let dead = format!(
        "mongodb://127.0.0.1:{}/?serverSelectionTimeoutMS=1000",
        common::free_port()
    );
    let out = verify(&dead, &[]);
    out.expect_code(SOURCE);
    assert!(
        out.stderr.contains("cannot reach MongoDB"),
        "{}",
        out.stderr
    );
    // An unreachable --compare-source (here from its file) fails the run before the
    // restore, not after a verification that passed; the driver's topology dump stays out.
    std::fs::write(cwd.path().join("live"), format!("{dead}\n")).unwrap();
    let out = common::mongokeep(cwd.path())
        .args([
            "-v",
            "verify",
            "--repo",
            "./repo",
            "--scratch",
            &s.standalone_uri,
        ])
        .args(["--compare-source-file", "live"])
        .run();
    out.expect_code(SOURCE);
    assert!(
        out.stderr
            .contains("cannot reach MongoDB at mongodb://127.0.0.1:")
            && !out.stderr.contains("scratch database")
            && !out.stderr.contains("Topology"),
        "{}",
        out.stderr
    );

    // A scratch URI naming a database that exists: refused, and that database untouched.
    let existing = common::unique("occupied");
    let dst = common::client(&s.standalone_uri).await;
    dst.database(&existing)
        .collection::<Document>("precious")
        .insert_one(doc! { "_id": 1 })
        .await
        .unwrap();
    let out = verify(&format!("{}{existing}", s.standalone_uri), &[]);
    out.expect_code(USAGE);
    assert!(
        out.stderr.contains(&existing)
            && out.stderr.contains("never writes into existing databases"),
        "{}",
        out.stderr
    );
    assert_eq!(
        dst.database(&existing)
            .collection::<Document>("precious")
            .count_documents(doc! {})
            .await
            .unwrap(),
        1
    );
    dst.database(&existing).drop().await.unwrap();

    // SIGTERM in the middle of the restore: the scratch database is dropped on the way out.
    let prefix = common::unique("intr");
    let mut child = common::mongokeep(cwd.path())
        .args([
            "verify",
            "--repo",
            "./repo",
            "--scratch",
            &format!("{}{prefix}", s.standalone_uri),
        ])
        .spawn();
    common::wait_while_running(&mut child, "a scratch database appeared", || async {
        !databases_with_prefix(&s.standalone_uri, &prefix)
            .await
            .is_empty()
    })
    .await;
    common::sigterm(&child);
    let out: common::Done = child.wait_with_output().unwrap().into();
    assert_ne!(out.code, 0, "{}", out.all());
    assert!(out.stderr.contains("interrupted"), "{}", out.stderr);
    assert!(
        databases_with_prefix(&s.standalone_uri, &prefix)
            .await
            .is_empty(),
        "scratch database left after SIGTERM"
    );
    client.database(&db).drop().await.unwrap();
}

#[tokio::test]
async fn a_stopped_restore_ends_once_its_inserts_have_and_writes_nothing_after() {
    // What an interrupted verify relies on before it drops the scratch databases.
    let s = common::services();
    let cwd = tempfile::tempdir().unwrap();
    let client = common::client(&s.rs_uri).await;
    let db = common::unique("vstop");
    mongokeep::sample::seed_app(&client, &db, "orders", 60, 9)
        .await
        .unwrap();
    mongokeep::sample::app_indexes(&client, &db, "orders")
        .await
        .unwrap();
    let (repo, manifest) = backup_into_repo(cwd.path(), &s.rs_uri, &db, &[]).await;
    let total = manifest.collections[0].count;
    // Every insert is held a second before it runs, so that when the restore is stopped
    // it has inserts in flight that land a second later, unless they are waited for.
    let server = common::PrivateMongod::start_with(&["--test-commands"]);
    let admin = common::client(&server.uri).await.database("admin");
    admin
        .run_command(doc! {
            "configureFailPoint": "failCommand",
            "mode": "alwaysOn",
            "data": { "failCommands": ["insert"], "blockConnection": true, "blockTimeMS": 1000 },
        })
        .await
        .unwrap();
    let scratch = Source::connect(&server.uri).await.unwrap();
    let target = common::unique("vstopped");
    let opts = RestoreOptions {
        map: NsMap::new(&[format!("{db}.*")], &[format!("{target}.*")]).unwrap(),
        scratch: true,
        ..Default::default()
    };
    let plan = restore::plan(&manifest, &scratch, &opts).await.unwrap();
    let orders = common::client(&server.uri)
        .await
        .database(&target)
        .collection::<Document>("orders");
    let stop = opts.stop.clone();
    let stopper = async {
        // Stopped once the first documents are in.
        while orders.estimated_document_count().await.unwrap() == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        stop.cancel();
        std::future::pending::<()>().await
    };
    let r = tokio::select! {
        r = restore::execute(&repo, &scratch, &plan, &opts) => r,
        () = stopper => unreachable!(),
    };
    assert!(matches!(r, Err(mongokeep::Error::Cancelled)), "{r:?}");
    let at_return = orders.count_documents(doc! {}).await.unwrap();
    assert!(at_return < total, "stopped after {at_return} of {total}");
    // Longer than an insert is held: one still in flight at the return would land by then.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        orders.count_documents(doc! {}).await.unwrap(),
        at_return,
        "documents were still being inserted after the stopped restore returned"
    );
    // Nor were the recorded indexes built.
    let names: Vec<String> = orders.list_index_names().await.unwrap();
    assert_eq!(names, ["_id_"]);
    assert!(manifest.collections[0].indexes.len() > 1);
    client.database(&db).drop().await.unwrap();
}

#[tokio::test]
async fn a_large_collection_read_back_in_id_or_record_ranges_has_the_digest_of_one_cursor() {
    // _ids of several types: index bounds (min/max), not $gte/$lt, keep every one of them.
    let s = common::services();
    let client = common::client(&s.standalone_uri).await;
    let db = common::unique("vranges");
    let coll = client.database(&db).collection::<Document>("mixed");
    let pad = "x".repeat(4000);
    let mut docs = Vec::new();
    for i in 0..3000i64 {
        let id = match i % 4 {
            0 => mongodb::bson::Bson::Int64(i),
            1 => mongodb::bson::Bson::String(format!("s{i:05}")),
            2 => mongodb::bson::Bson::ObjectId(mongodb::bson::oid::ObjectId::new()),
            _ => mongodb::bson::Bson::Document(doc! {"k": i}),
        };
        docs.push(doc! {"_id": id, "i": i, "pad": &pad});
    }
    coll.insert_many(docs).await.unwrap();
    let server = Source::connect(&s.standalone_uri).await.unwrap();
    let (n1, d1) = mongokeep::verify::digest_of(&server, &db, "mixed")
        .await
        .unwrap();
    assert_eq!(n1, 3000);
    let bytes = 3000 * 4050;
    let (n2, d2, ranges) =
        mongokeep::verify::digest_in_ranges(&server, &db, "mixed", bytes, 1 << 20)
            .await
            .unwrap();
    assert!(
        ranges > 4,
        "the collection was not split: {ranges} range(s)"
    );
    assert_eq!((n2, d2), (n1, d1), "the ranges lost or repeated documents");
    // Small enough for one cursor: no split.
    let (n3, d3, one) = mongokeep::verify::digest_in_ranges(&server, &db, "mixed", bytes, bytes)
        .await
        .unwrap();
    assert_eq!((n3, d3, one), (n1, d1, 1));
    // Parts of the natural order, from record ids: the same documents, each once.
    let by_records = mongokeep::verify::digest_in_record_ranges(&server, &db, "mixed", 3000, 7)
        .await
        .unwrap();
    assert_eq!(
        by_records,
        Some((n1, d1, 7)),
        "record ranges lost or repeated documents"
    );
    // Record ids that are not 1 to the count: not read that way (the caller reads _id
    // ranges), whether the count is off or an id is missing from the run.
    let off = mongokeep::verify::digest_in_record_ranges(&server, &db, "mixed", 2999, 7)
        .await
        .unwrap();
    assert_eq!(
        off, None,
        "a count that is not the server's was read by record ids"
    );
    coll.delete_one(doc! {"i": 1000i64}).await.unwrap();
    let gap = mongokeep::verify::digest_in_record_ranges(&server, &db, "mixed", 2999, 7)
        .await
        .unwrap();
    assert_eq!(
        gap, None,
        "record ids with a gap were read as if they tiled"
    );
    client.database(&db).drop().await.unwrap();
}

#[tokio::test]
async fn a_large_collection_is_read_back_in_record_ranges_while_it_still_loads() {
    // Ranges of 1 MiB, parts of 1 MiB: a 12 MiB collection loads in twelve parts, two at a
    // time, and is read back in twelve ranges, each once the restore says its records are
    // committed. A range read too early (a part beside it still inserting) skips records: it
    // is short or the ranges no longer tile, and the collection is then read back whole.
    let s = common::services();
    let cwd = tempfile::tempdir().unwrap();
    let client = common::client(&s.rs_uri).await;
    let db = common::unique("vload");
    mongokeep::sample::seed_app(&client, &db, "big", 12, 7)
        .await
        .unwrap();
    let (_, manifest) =
        backup_into_repo(cwd.path(), &s.rs_uri, &db, &["--archive-part-mib", "1"]).await;
    let verify = || {
        common::mongokeep(cwd.path())
            .env("MONGOKEEP_RANGE_MIB", "1")
            .args([
                "-vv",
                "verify",
                "--repo",
                "./repo",
                "--scratch",
                &s.standalone_uri,
            ])
            .run()
    };
    let out = verify();
    out.expect_code(0);
    let line = out
        .stderr
        .lines()
        .find(|l| {
            l.contains("read back in record ranges while loading")
                && l.contains(&format!("ns=\"{db}.big\""))
        })
        .unwrap_or_else(|| panic!("big was not read in ranges while loading:\n{}", out.stderr));
    let field = |name: &str| -> usize {
        let at = line
            .find(&format!(" {name}="))
            .unwrap_or_else(|| panic!("no {name} in {line}"));
        line[at + name.len() + 2..]
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert!(field("ranges") >= 12, "{line}");
    // Most ranges were queued while later records were still loading: only those of the
    // last part or two (and the open-ended last range) wait for the end of the load.
    assert!(field("early") >= field("ranges") / 2, "{line}");
    assert!(!out.stderr.contains("do not tile"), "{}", out.stderr);
    assert!(
        !out.stderr.contains("a record range failed"),
        "{}",
        out.stderr
    );

    // The same path finds a difference: a manifest that records another digest for `big`
    // (one hex digit changed) fails with the mismatch code and names it.
    let path = cwd.path().join(format!(
        "repo/snapshots/{}/manifest.json",
        manifest.snapshot
    ));
    let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let recorded = m["collections"][0]["content_digest"]
        .as_str()
        .unwrap()
        .to_string();
    let other = format!(
        "{}{}",
        &recorded[..recorded.len() - 1],
        if recorded.ends_with('0') { '1' } else { '0' }
    );
    m["collections"][0]["content_digest"] = other.clone().into();
    std::fs::write(&path, serde_json::to_vec(&m).unwrap()).unwrap();
    let out = verify();
    out.expect_code(MISMATCH);
    assert!(
        out.stderr
            .contains("read back in record ranges while loading"),
        "{}",
        out.stderr
    );
    assert!(
        out.all().contains(&format!(
            "{db}.big: content digest: expected {other}, found {recorded}"
        )),
        "{}",
        out.all()
    );
    client.database(&db).drop().await.unwrap();
}

/// Documents of `db.coll` on `uri`'s server.
async fn count(client: &mongodb::Client, db: &str, coll: &str) -> u64 {
    client
        .database(db)
        .collection::<Document>(coll)
        .count_documents(doc! {})
        .await
        .unwrap()
}

/// `expireAfterSeconds` of `db.coll`'s index `name`.
async fn index_expiry(client: &mongodb::Client, db: &str, coll: &str, name: &str) -> i64 {
    let mut specs = client
        .database(db)
        .collection::<Document>(coll)
        .list_indexes()
        .await
        .unwrap();
    while let Some(m) = futures::TryStreamExt::try_next(&mut specs).await.unwrap() {
        if m.options.as_ref().and_then(|o| o.name.as_deref()) == Some(name) {
            return m.options.unwrap().expire_after.unwrap().as_secs() as i64;
        }
    }
    panic!("no index {name} on {db}.{coll}");
}

/// `expireAfterSeconds` of the expiring collection `db.name`.
async fn collection_expiry(client: &mongodb::Client, db: &str, name: &str) -> i64 {
    let listed = client
        .database(db)
        .run_command(doc! { "listCollections": 1, "filter": { "name": name } })
        .await
        .unwrap();
    let options = listed
        .get_document("cursor")
        .and_then(|c| c.get_array("firstBatch"))
        .unwrap()[0]
        .as_document()
        .unwrap()
        .get_document("options")
        .unwrap()
        .clone();
    match options.get("expireAfterSeconds") {
        Some(mongodb::bson::Bson::Int32(v)) => i64::from(*v),
        Some(mongodb::bson::Bson::Int64(v)) => *v,
        other => panic!("expireAfterSeconds of {db}.{name}: {other:?}"),
    }
}

#[tokio::test]
async fn expired_documents_are_compared_before_the_copy_s_expiry_applies() {
    // A monthly verify restores documents that expired long ago by their TTL (sessions,
    // say). The scratch server's TTL monitor deleted them while they were loaded or read
    // back, and verification reported a mismatch that the backup does not have.
    let s = common::services();
    let fast = common::PrivateMongod::start_with(&["--fast-ttl"]);
    let client = common::client(&s.rs_uri).await;
    let scratch_client = common::client(&fast.uri).await;
    let db = common::unique("vttl");
    let now = mongodb::bson::DateTime::now();
    let sessions = client.database(&db).collection::<Document>("sessions");
    sessions
        .insert_many((0..200_i32).map(|i| doc! { "_id": i, "at": now }))
        .await
        .unwrap();
    // They expire 5 s after `at`: there when the backup reads them, expired by the restore.
    sessions
        .create_index(
            mongodb::IndexModel::builder()
                .keys(doc! { "at": 1 })
                .options(
                    mongodb::options::IndexOptions::builder()
                        .name("at_1".to_string())
                        .expire_after(Duration::from_secs(5))
                        .build(),
                )
                .build(),
        )
        .await
        .unwrap();
    client
        .database(&db)
        .run_command(doc! {
            "create": "readings",
            "timeseries": { "timeField": "ts", "metaField": "m" },
            "expireAfterSeconds": 5,
        })
        .await
        .unwrap();
    client
        .database(&db)
        .collection::<Document>("readings")
        .insert_many((0..100_i32).map(|i| doc! { "ts": now, "m": i % 4, "v": i }))
        .await
        .unwrap();
    let cwd = tempfile::tempdir().unwrap();
    let (repo, manifest) = backup_into_repo(cwd.path(), &s.rs_uri, &db, &[]).await;
    let recorded = |name: &str| {
        manifest
            .collections
            .iter()
            .find(|e| e.name == name)
            .unwrap()
            .count
    };
    assert_eq!(recorded("sessions"), 200, "the source expired some already");
    let buckets = recorded("readings");
    assert!(buckets >= 4, "{buckets} buckets");
    let expired_at = std::time::SystemTime::UNIX_EPOCH
        + Duration::from_millis(now.timestamp_millis() as u64 + 6_000);
    if let Ok(left) = expired_at.duration_since(std::time::SystemTime::now()) {
        tokio::time::sleep(left).await;
    }

    // Restored as verification restores: nothing expires while the copy waits to be
    // compared (three passes of the scratch server's TTL monitor), ...
    let scratch = Source::connect(&fast.uri).await.unwrap();
    let prefix = common::unique("ttl");
    let copy = mongokeep::verify::scratch_db(&prefix, &db);
    let opts = RestoreOptions {
        map: NsMap::new(&[format!("{db}.*")], &[format!("{copy}.*")]).unwrap(),
        scratch: true,
        ..Default::default()
    };
    let plan = restore::plan(&manifest, &scratch, &opts).await.unwrap();
    restore::execute(&repo, &scratch, &plan, &opts)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(count(&scratch_client, &copy, "sessions").await, 200);
    assert_eq!(
        count(&scratch_client, &copy, "system.buckets.readings").await,
        buckets
    );
    // (A time-series bucket expires an hour after its first measurement at the soonest, so
    // here the held value itself is what shows.)
    assert!(collection_expiry(&scratch_client, &copy, "readings").await > 1_000_000_000);
    assert_eq!(
        index_expiry(&scratch_client, &copy, "sessions", "at_1").await,
        i64::from(i32::MAX)
    );
    // ... the comparison finds it whole and then applies the recorded expiry, ...
    let checks = mongokeep::verify::compare(&manifest, &scratch, &prefix, 2)
        .await
        .unwrap();
    assert!(checks.iter().all(|c| c.problems.is_empty()), "{checks:?}");
    assert_eq!(checks.len(), 2, "{checks:?}");
    assert_eq!(
        index_expiry(&scratch_client, &copy, "sessions", "at_1").await,
        5
    );
    assert_eq!(
        collection_expiry(&scratch_client, &copy, "readings").await,
        5
    );
    // ... which the server then enforces.
    let deadline = Instant::now() + Duration::from_secs(30);
    while count(&scratch_client, &copy, "sessions").await > 0 {
        assert!(
            Instant::now() < deadline,
            "the recorded expiry was not applied"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A restore to use gets the recorded expiry as soon as its documents are counted.
    let restored = common::unique("ttlr");
    let opts = RestoreOptions {
        map: NsMap::new(&[format!("{db}.*")], &[format!("{restored}.*")]).unwrap(),
        ..Default::default()
    };
    let plan = restore::plan(&manifest, &scratch, &opts).await.unwrap();
    restore::execute(&repo, &scratch, &plan, &opts)
        .await
        .unwrap();
    assert_eq!(
        index_expiry(&scratch_client, &restored, "sessions", "at_1").await,
        5
    );
    assert_eq!(
        collection_expiry(&scratch_client, &restored, "readings").await,
        5
    );

    // And the command end to end: the expired documents pass verification.
    let out = common::mongokeep(cwd.path())
        .args(["verify", "--repo", "./repo", "--scratch", &fast.uri])
        .run();
    out.expect_code(0);
    client.database(&db).drop().await.unwrap();
}

//! Bad input and failures, each against the real services: a message that names the
//! problem and the fix, the documented exit code, no secret in the output, and no
//! half-made snapshot left visible.

mod common;

use std::time::{Duration, Instant};

use mongodb::bson::{doc, Document};
use mongokeep::repository::{lock, Repository};
use mongokeep::storage::Storage;

const SOURCE: i32 = 3;
const REPOSITORY: i32 = 4;
const USAGE: i32 = 2;
const LOCK_HELD: i32 = 6;

async fn small_db(uri: &str) -> String {
    let db = common::unique("err");
    let c = common::client(uri).await;
    c.database(&db)
        .collection::<Document>("c")
        .insert_many((0..3).map(|i| doc! { "i": i }))
        .await
        .unwrap();
    db
}

fn no_snapshot_in(dir: &std::path::Path) {
    let snaps = dir.join("snapshots");
    let n = std::fs::read_dir(&snaps).map(|d| d.count()).unwrap_or(0);
    assert_eq!(n, 0, "a snapshot folder was left in {}", snaps.display());
}

#[test]
fn unreachable_mongodb_is_a_source_error() {
    let cwd = tempfile::tempdir().unwrap();
    let uri = format!(
        "mongodb://127.0.0.1:{}/?serverSelectionTimeoutMS=1000",
        common::free_port()
    );
    let out = common::mongokeep(cwd.path())
        .env("MONGODB_URI", &uri)
        .args(["backup", "--repo", "./repo"])
        .run();
    out.expect_code(SOURCE);
    assert!(
        out.stderr.contains("cannot reach MongoDB"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("fix:"), "{}", out.stderr);
    no_snapshot_in(&cwd.path().join("repo"));
}

#[tokio::test]
async fn wrong_mongodb_credentials_are_refused_and_no_password_is_printed() {
    let s = common::services();
    let client = common::client(&s.standalone_uri).await;
    let user = common::unique("user");
    let right = "Right-Pa55word-xyz";
    client
        .database("admin")
        .run_command(doc! { "createUser": &user, "pwd": right, "roles": [ { "role": "readAnyDatabase", "db": "admin" } ] })
        .await
        .unwrap();
    let db = small_db(&s.standalone_uri).await;
    let host = s
        .standalone_uri
        .trim_start_matches("mongodb://")
        .trim_end_matches('/');
    let wrong = "Wr0ng-Secret-Pa55";
    let cwd = tempfile::tempdir().unwrap();
    let out = common::mongokeep(cwd.path())
        .env(
            "MONGODB_URI",
            &format!("mongodb://{user}:{wrong}@{host}/?authSource=admin"),
        )
        .args(["backup", "--repo", "./repo", "-vv"])
        .run();
    out.expect_code(SOURCE);
    assert!(out.stderr.contains("refused"), "{}", out.stderr);
    assert!(
        !out.all().contains(wrong),
        "the password was printed:\n{}",
        out.all()
    );
    no_snapshot_in(&cwd.path().join("repo"));

    // With the right password the backup works, and the password is nowhere: not in the
    // output, not in the logs, not in the manifest.
    let out = common::mongokeep(cwd.path())
        .env(
            "MONGODB_URI",
            &format!("mongodb://{user}:{right}@{host}/?authSource=admin"),
        )
        .args(["backup", "--repo", "./repo", "--db", &db, "-vv", "--json"])
        .run();
    out.expect_code(0);
    assert!(
        !out.all().contains(right),
        "the password was printed:\n{}",
        out.all()
    );
    let shown = common::mongokeep(cwd.path())
        .args(["show", "latest", "--repo", "./repo", "--json"])
        .run();
    assert!(!shown.stdout.contains(right));
    assert!(shown.json()["source"]["uri"]
        .as_str()
        .unwrap()
        .contains(&format!("{user}:***@")));
    for entry in walk(&cwd.path().join("repo")) {
        let bytes = std::fs::read(&entry).unwrap();
        assert!(
            !String::from_utf8_lossy(&bytes).contains(right),
            "password stored in {}",
            entry.display()
        );
    }
    client
        .database("admin")
        .run_command(doc! { "dropUser": &user })
        .await
        .unwrap();
    client.database(&db).drop().await.unwrap();
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

#[tokio::test]
async fn unreachable_s3_wrong_keys_and_missing_bucket_are_repository_errors() {
    let s = common::services();
    let db = small_db(&s.standalone_uri).await;
    let cwd = tempfile::tempdir().unwrap();
    let run = |t: &common::S3Target| {
        common::mongokeep(cwd.path())
            .s3(t)
            .env("MONGODB_URI", &s.standalone_uri)
            .args([
                "backup",
                "--db",
                &db,
                "--repo",
                &t.repo_url(&common::unique("err")),
            ])
            .run()
    };
    let mut down = s.s3();
    down.endpoint = format!("http://127.0.0.1:{}", common::free_port());
    let out = run(&down);
    out.expect_code(REPOSITORY);
    assert!(
        out.stderr.contains("cannot reach the store"),
        "{}",
        out.stderr
    );

    let mut wrong = s.s3();
    wrong.secret_key = "f".repeat(64);
    let out = run(&wrong);
    out.expect_code(REPOSITORY);
    assert!(out.stderr.contains("access denied"), "{}", out.stderr);
    assert!(!out.all().contains(&wrong.secret_key) && !out.all().contains(&s.s3_secret_key));

    let mut missing = s.s3();
    missing.bucket = "no-such-bucket-mongokeep".into();
    let out = run(&missing);
    out.expect_code(REPOSITORY);
    assert!(
        out.stderr
            .contains("bucket no-such-bucket-mongokeep does not exist"),
        "{}",
        out.stderr
    );
    common::client(&s.standalone_uri)
        .await
        .database(&db)
        .drop()
        .await
        .unwrap();
}

#[test]
fn config_file_with_an_unknown_key_names_it() {
    let cwd = tempfile::tempdir().unwrap();
    std::fs::write(
        cwd.path().join("mongokeep.toml"),
        "[backup]\ncompresion = \"none\"\n",
    )
    .unwrap();
    let out = common::mongokeep(cwd.path()).args(["snapshots"]).run();
    out.expect_code(USAGE);
    assert!(out.stderr.contains("compresion"), "{}", out.stderr);
    assert!(out.stderr.contains("mongokeep.toml"), "{}", out.stderr);
}

#[test]
fn no_source_and_bad_flags_are_usage_errors() {
    let cwd = tempfile::tempdir().unwrap();
    let out = common::mongokeep(cwd.path())
        .args(["backup", "--repo", "./repo"])
        .run();
    out.expect_code(USAGE);
    assert!(out.stderr.contains("MONGODB_URI"), "{}", out.stderr);
    let out = common::mongokeep(cwd.path())
        .env("MONGODB_URI", "mongodb://127.0.0.1:1/")
        .args(["backup", "--compression", "zip"])
        .run();
    out.expect_code(USAGE);
    assert!(out.stderr.contains("zip"), "{}", out.stderr);
    common::mongokeep(cwd.path())
        .args(["backup", "--no-such-flag"])
        .run()
        .expect_code(USAGE);
}

#[tokio::test]
async fn a_snapshot_that_does_not_exist_lists_the_nearest() {
    let s = common::services();
    let db = small_db(&s.standalone_uri).await;
    let cwd = tempfile::tempdir().unwrap();
    let out = common::mongokeep(cwd.path())
        .env("MONGODB_URI", &s.standalone_uri)
        .args(["backup", "--repo", "./r", "--db", &db, "--json"])
        .run();
    out.expect_code(0);
    let id = out.json()["snapshot"].as_str().unwrap().to_string();
    let out = common::mongokeep(cwd.path())
        .args(["show", "20200101T000000Z-0000", "--repo", "./r"])
        .run();
    out.expect_code(USAGE);
    assert!(
        out.stderr.contains("does not exist") && out.stderr.contains(&id),
        "{}",
        out.stderr
    );
    // An empty repository has no latest snapshot; a folder that does not exist is a
    // mistyped --repo, not an empty repository.
    std::fs::create_dir(cwd.path().join("empty")).unwrap();
    let empty = common::mongokeep(cwd.path())
        .args(["show", "latest", "--repo", "./empty"])
        .run();
    empty.expect_code(USAGE);
    for args in [
        &["show", "latest"][..],
        &["snapshots"],
        &["status"],
        &["journal"],
    ] {
        let typo = common::mongokeep(cwd.path())
            .args(args)
            .args(["--repo", "./rr"])
            .run();
        typo.expect_code(REPOSITORY);
        assert!(
            typo.stderr.contains("folder ./rr does not exist") && typo.stderr.contains("fix:"),
            "{args:?}: {}",
            typo.stderr
        );
    }
    assert!(!cwd.path().join("rr").exists());
    common::client(&s.standalone_uri)
        .await
        .database(&db)
        .drop()
        .await
        .unwrap();
}

/// A `--db` or `--ns-include` of backup, or an `--ns-include` or `--ns-from` of restore,
/// that matches nothing is a typo: refused, with nothing stored or written. Before, the
/// backup stored an empty snapshot that `status` passed, and the restore ignored the
/// rename, so `--drop` replaced the live collection of the original name.
#[tokio::test]
async fn a_selection_or_rename_that_matches_nothing_is_refused() {
    let s = common::services();
    let db = small_db(&s.standalone_uri).await;
    let cwd = tempfile::tempdir().unwrap();
    let mk = |args: &[&str]| {
        common::mongokeep(cwd.path())
            .env("MONGODB_URI", &s.standalone_uri)
            .env("MONGOKEEP_TARGET_URI", &s.standalone_uri)
            .args(["--repo", "./r"])
            .args(args)
            .run()
    };
    let typo = format!("{db}x");
    for args in [
        vec!["backup", "--db", &typo],
        vec!["backup", "--ns-include", "nosuchdb_*.c"],
    ] {
        let out = mk(&args);
        out.expect_code(USAGE);
        assert!(
            out.stderr.contains("matches nothing on the source")
                && out.stderr.contains(&db)
                && out.stderr.contains("fix:"),
            "{args:?}: {}",
            out.stderr
        );
    }
    no_snapshot_in(&cwd.path().join("r"));

    mk(&["backup", "--db", &db]).expect_code(0);
    let ns = format!("{db}.c");
    let client = common::client(&s.standalone_uri).await;
    let live = client.database(&db).collection::<Document>("c");
    live.insert_one(doc! { "live": true }).await.unwrap();
    let from = format!("{typo}.*");
    let include = format!("{db}.cc");
    for (args, says) in [
        (
            vec![
                "--ns-from",
                from.as_str(),
                "--ns-to",
                "elsewhere.*",
                "--drop",
            ],
            format!("--ns-from \"{from}\" matches no namespace the restore selects"),
        ),
        (
            vec!["--ns-include", include.as_str(), "--drop"],
            format!("--ns-include \"{include}\" matches no namespace of the snapshot"),
        ),
    ] {
        let out = mk(&[&["restore", "--snapshot", "latest"][..], &args].concat());
        out.expect_code(USAGE);
        assert!(
            out.stderr.contains(&says)
                && out.stderr.contains(&ns)
                && out.stderr.contains("nothing was written"),
            "{args:?}: {}",
            out.stderr
        );
    }
    // The live collection kept its documents, the one written after the backup included.
    assert_eq!(live.count_documents(doc! {}).await.unwrap(), 4);
    client.database(&db).drop().await.unwrap();
}

/// The README: flags win over the environment. A `--source-file` or `--target-file` given
/// on the command line beats MONGODB_URI or MONGOKEEP_TARGET_URI (before, the variable won
/// and the flag was ignored).
#[tokio::test]
async fn uri_flags_win_over_the_environment() {
    let s = common::services();
    let db = small_db(&s.standalone_uri).await;
    let cwd = tempfile::tempdir().unwrap();
    let dead = format!(
        "mongodb://127.0.0.1:{}/?serverSelectionTimeoutMS=1000",
        common::free_port()
    );
    std::fs::write(cwd.path().join("good"), format!("{}\n", s.standalone_uri)).unwrap();
    let run = |args: &[&str]| {
        common::mongokeep(cwd.path())
            .env("MONGODB_URI", &dead)
            .env("MONGOKEEP_TARGET_URI", &dead)
            .args(["--repo", "./r"])
            .args(args)
            .run()
    };
    run(&["backup", "--db", &db, "--source-file", "good"]).expect_code(0);
    let to = format!("{db}_copy.*");
    let from = format!("{db}.*");
    let out = run(&[
        "restore",
        "--snapshot",
        "latest",
        "--target-file",
        "good",
        "--ns-from",
        &from,
        "--ns-to",
        &to,
    ]);
    out.expect_code(0);
    // Without the flags, the variables are used.
    run(&["backup", "--db", &db]).expect_code(SOURCE);
    let client = common::client(&s.standalone_uri).await;
    assert_eq!(
        client
            .database(&format!("{db}_copy"))
            .collection::<Document>("c")
            .count_documents(doc! {})
            .await
            .unwrap(),
        3
    );
    for d in [db.clone(), format!("{db}_copy")] {
        client.database(&d).drop().await.unwrap();
    }
}

#[tokio::test]
async fn a_second_writer_gets_the_lock_held_code_and_a_stale_lock_is_ignored() {
    let s = common::services();
    let db = small_db(&s.standalone_uri).await;
    let t = s.s3();
    let prefix = common::unique("lock");
    let repo = Repository::new(t.store(&prefix).await);
    let cwd = tempfile::tempdir().unwrap();
    let backup = || {
        common::mongokeep(cwd.path())
            .s3(&t)
            .env("MONGODB_URI", &s.standalone_uri)
            .args(["backup", "--db", &db, "--repo", &t.repo_url(&prefix)])
            .run()
    };
    // Another run holds the lock (taken through the library, as a running backup would).
    let guard = lock::acquire(&repo, "backup", chrono::Utc::now(), 42)
        .await
        .unwrap();
    let out = backup();
    out.expect_code(LOCK_HELD);
    assert!(
        out.stderr.contains("locked by another run"),
        "{}",
        out.stderr
    );
    assert!(repo.list_snapshots().await.unwrap().is_empty());
    guard.release().await;
    backup().expect_code(0);

    // A lock left by a run that died long ago does not block.
    let old = chrono::Utc::now() - lock::STALE_AFTER - chrono::Duration::minutes(1);
    let _crashed = lock::acquire(&repo, "backup", old, 7).await.unwrap();
    backup().expect_code(0);
    assert_eq!(repo.list_snapshots().await.unwrap().len(), 2);
    common::client(&s.standalone_uri)
        .await
        .database(&db)
        .drop()
        .await
        .unwrap();
}

/// Wait until `store` shows a multipart upload in progress under `prefix`: the backup is
/// then in the middle of streaming a collection.
async fn wait_for_upload(store: &dyn Storage, prefix: &str, child: &mut std::process::Child) {
    common::wait_while_running(child, "an upload started", || async {
        store
            .list_pending_uploads(prefix)
            .await
            .is_ok_and(|p| !p.is_empty())
    })
    .await;
}

fn finish(child: std::process::Child) -> common::Done {
    let start = Instant::now();
    let out = child.wait_with_output().unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(180),
        "the backup hung after the failure"
    );
    out.into()
}

fn big_config(cwd: &std::path::Path) {
    // Small parts so that an upload is in flight early; no compression so the data is big.
    std::fs::write(cwd.join("mongokeep.toml"), "[s3]\npart_size_mib = 5\nmax_attempts = 2\n[backup]\ncompression = \"none\"\nparallel = 1\n").unwrap();
}

#[tokio::test]
async fn s3_stopped_mid_backup_leaves_no_snapshot() {
    let s = common::services();
    let db = common::unique("s3kill");
    let client = common::client(&s.rs_uri).await;
    mongokeep::sample::seed_app(&client, &db, "orders", 120, 1)
        .await
        .unwrap();
    let garage = common::PrivateGarage::start();
    let t = garage.target.clone();
    let store = t.store("p").await;
    let cwd = tempfile::tempdir().unwrap();
    big_config(cwd.path());
    let mut child = common::mongokeep(cwd.path())
        .s3(&t)
        .env("MONGODB_URI", &s.rs_uri)
        .args(["backup", "--db", &db, "--repo", &t.repo_url("p")])
        .spawn();
    wait_for_upload(&*store, "", &mut child).await;
    garage.kill();
    let out = finish(child);
    out.expect_code(REPOSITORY);
    assert!(out.stderr.contains("repository s3://"), "{}", out.stderr);

    garage.restart();
    let objects = common::keys(&*store, "snapshots/").await;
    assert!(
        !objects.iter().any(|k| k.ends_with("manifest.json")),
        "a manifest appeared: {objects:?}"
    );
    let list = common::mongokeep(cwd.path())
        .s3(&t)
        .args(["snapshots", "--repo", &t.repo_url("p"), "--json"])
        .run();
    list.expect_code(0);
    assert!(list
        .json()
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["complete"] == false));
    client.database(&db).drop().await.unwrap();
}

#[tokio::test]
async fn mongodb_stopped_mid_backup_aborts_the_upload_and_leaves_nothing() {
    let s = common::services();
    let mongod = common::PrivateMongod::start(false);
    let client = common::client(&mongod.uri).await;
    mongokeep::sample::seed_app(&client, "shop", "orders", 120, 2)
        .await
        .unwrap();
    let t = s.s3();
    let prefix = common::unique("mongokill");
    let store = t.store(&prefix).await;
    let cwd = tempfile::tempdir().unwrap();
    big_config(cwd.path());
    let mut child = common::mongokeep(cwd.path())
        .s3(&t)
        .env("MONGODB_URI", &mongod.uri)
        .args(["backup", "--repo", &t.repo_url(&prefix)])
        .spawn();
    wait_for_upload(&*store, "", &mut child).await;
    mongod.kill();
    let out = finish(child);
    out.expect_code(SOURCE);
    assert!(out.stderr.contains("MongoDB"), "{}", out.stderr);
    // The multipart upload was aborted, the run's objects removed, the lock released; all
    // that remains is the journal entry of the failure, naming it without the URI's secrets.
    assert!(
        store.list_pending_uploads("").await.unwrap().is_empty(),
        "upload left pending"
    );
    only_the_failed_backup_entry(&*store, &common::keys(&*store, "").await, "MongoDB").await;
}

/// `keys` (all that a failed backup left in `store`) are its journal entry alone: a
/// failure whose error says `says`.
async fn only_the_failed_backup_entry(store: &dyn Storage, keys: &[String], says: &str) {
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(
        keys[0].starts_with("journal/") && keys[0].contains("-backup-"),
        "{keys:?}"
    );
    let entry: serde_json::Value =
        serde_json::from_slice(&store.get(&keys[0]).await.unwrap()).unwrap();
    assert_eq!(entry["outcome"], "failure");
    assert!(entry["error"].as_str().unwrap().contains(says), "{entry}");
}

#[tokio::test]
async fn a_backup_stopped_by_sigterm_aborts_its_uploads_removes_what_it_stored_and_says_so() {
    const INTERNAL: i32 = 1;
    let s = common::services();
    let db = common::unique("sigbackup");
    let client = common::client(&s.rs_uri).await;
    mongokeep::sample::seed_app(&client, &db, "orders", 120, 1)
        .await
        .unwrap();
    // A small collection too: backed up after the large one (`parallel = 1`, largest
    // first), so a stop that reaches the pipelines keeps it from starting.
    client
        .database(&db)
        .collection::<Document>("notes")
        .insert_many((0..3).map(|i| doc! { "i": i }))
        .await
        .unwrap();
    let cwd = tempfile::tempdir().unwrap();
    big_config(cwd.path());

    // To S3, from the replica set (so the oplog is captured beside the dump): stopped while
    // the large collection's multipart upload is in progress.
    let t = s.s3();
    let prefix = common::unique("sigbackup");
    let store = t.store(&prefix).await;
    let mut child = common::mongokeep(cwd.path())
        .s3(&t)
        .env("MONGODB_URI", &s.rs_uri)
        .args(["-v", "backup", "--db", &db, "--repo", &t.repo_url(&prefix)])
        .spawn();
    wait_for_upload(&*store, "", &mut child).await;
    common::sigterm(&child);
    let out = finish(child);
    out.expect_code(INTERNAL);
    assert!(out.stderr.contains("backup interrupted"), "{}", out.stderr);
    // The run stopped there: no collection was stored after the signal.
    assert!(!out.stderr.contains("collection stored"), "{}", out.stderr);
    assert!(
        store.list_pending_uploads("").await.unwrap().is_empty(),
        "upload left pending"
    );
    // No object of the run is left, the lock is released: only the journal's entry.
    only_the_failed_backup_entry(&*store, &common::keys(&*store, "").await, "interrupted").await;

    // To a folder: stopped while an object is being written; no file of it is left.
    let mut child = common::mongokeep(cwd.path())
        .env("MONGODB_URI", &s.rs_uri)
        .args(["backup", "--db", &db, "--repo", "./repo"])
        .spawn();
    let partial = cwd.path().join("repo/.tmp");
    common::wait_while_running(&mut child, "an object was being written", || async {
        std::fs::read_dir(&partial).is_ok_and(|d| {
            d.flatten()
                .any(|e| e.metadata().is_ok_and(|m| m.is_file() && m.len() > 0))
        })
    })
    .await;
    common::sigterm(&child);
    let out = finish(child);
    out.expect_code(INTERNAL);
    assert!(out.stderr.contains("backup interrupted"), "{}", out.stderr);
    let repo = cwd.path().join("repo");
    let files: Vec<String> = walk(&repo)
        .iter()
        .map(|p| {
            p.strip_prefix(&repo)
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    let local = mongokeep::storage::local::LocalStore::new(&repo);
    only_the_failed_backup_entry(&local, &files, "interrupted").await;
    client.database(&db).drop().await.unwrap();
}

/// `mongokeep snapshots | head -1`: a listing whose reader goes away ends quietly, not
/// with a panic (exit 101, an undocumented code) on the broken pipe.
#[test]
fn a_listing_piped_into_head_ends_quietly() {
    use std::io::{BufRead, BufReader};
    use std::os::unix::process::ExitStatusExt;
    let cwd = tempfile::tempdir().unwrap();
    // Enough snapshot folders (without manifests) to print well past a pipe's buffer.
    for i in 0..2000 {
        let dir = cwd
            .path()
            .join(format!("r/snapshots/20260101T{:06}Z-{:04x}", i % 240000, i));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("x"), b"x").unwrap();
    }
    let mut child = common::mongokeep(cwd.path())
        .args(["snapshots", "--repo", "./r"])
        .spawn();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.starts_with("ID"), "{first}");
    // The reader is gone: the rest of the listing has nowhere to go.
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.code() == Some(0) || out.status.signal() == Some(SIGPIPE),
        "{:?}: {stderr}",
        out.status
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// SIGPIPE's number on Linux.
const SIGPIPE: i32 = 13;

/// A password with characters it should have percent-encoded (`/`, `?`, `@`) makes a URI
/// the driver may refuse or misread; no piece of it is printed either way.
#[test]
fn a_password_with_raw_special_characters_is_never_printed() {
    let cwd = tempfile::tempdir().unwrap();
    let port = common::free_port();
    // Each password's pieces on either side of its raw character are distinctive.
    for (uri, pieces) in [
        (
            format!("mongodb://bk:QzXj/KwVq9@127.0.0.1:{port}/"),
            ["QzXj", "KwVq9"],
        ),
        (
            format!("mongodb://bk:JqZx?Wv/Pk7Y@127.0.0.1:{port}/"),
            ["JqZx", "Pk7Y"],
        ),
        (
            format!("mongodb://bk:XkQj?VzWq3@127.0.0.1:{port}/db"),
            ["XkQj", "VzWq3"],
        ),
        (
            format!("mongodb://bk:ZvKq@Jx/Qw8W@127.0.0.1:{port}/"),
            ["ZvKq", "Qw8W"],
        ),
    ] {
        let out = common::mongokeep(cwd.path())
            .env(
                "MONGODB_URI",
                &format!("{uri}?serverSelectionTimeoutMS=500"),
            )
            .args(["-vv", "backup", "--repo", "./r"])
            .run();
        assert!(out.code != 0, "{uri}: {}", out.stderr);
        for piece in pieces {
            assert!(
                !out.stderr.contains(piece) && !out.stdout.contains(piece),
                "{uri}: {piece} printed:\n{}",
                out.stderr
            );
        }
    }
}

//! `verify --to-time`: a snapshot rolled forward through pushed oplog slices to a known point
//! equals what the source held at that point (read back from the source with a snapshot
//! read at the restored position), and a corrupted slice fails with the mismatch code.

mod common;

use mongodb::bson::{doc, Document};

const MISMATCH: i32 = 5;

#[tokio::test]
async fn verify_to_time_matches_the_source_at_that_time_and_catches_a_corrupt_slice() {
    let s = common::services();
    let src = common::client(&s.rs_uri).await;
    let db = common::unique("vpitr");
    let orders = src.database(&db).collection::<Document>("orders");
    orders
        .insert_many((0..300_i64).map(|i| doc! { "_id": i, "v": 0_i64 }))
        .await
        .unwrap();
    let cwd = tempfile::tempdir().unwrap();
    let mk = || {
        common::mongokeep(cwd.path())
            .env("MONGODB_URI", &s.rs_uri)
            .args(["--repo", "./repo"])
    };
    mk().args(["backup", "--db", &db]).run().expect_code(0);

    // Known writes up to a point T, then more writes after it.
    let mut session = src.start_session().await.unwrap();
    for i in 0..40_i64 {
        orders
            .update_one(doc! { "_id": i }, doc! { "$set": { "v": 1_i64 } })
            .session(&mut session)
            .await
            .unwrap();
        orders
            .insert_one(doc! { "_id": 1000 + i, "v": 2_i64 })
            .session(&mut session)
            .await
            .unwrap();
    }
    src.database(&db)
        .collection::<Document>("late")
        .insert_one(doc! { "_id": "x" })
        .session(&mut session)
        .await
        .unwrap();
    let t = session.operation_time().unwrap();
    let at = format!("{}:{}", t.time, t.increment);
    orders
        .delete_many(doc! { "_id": { "$lt": 100_i64 } })
        .await
        .unwrap();
    orders.insert_one(doc! { "_id": "after" }).await.unwrap();
    mk().args(["oplog", "push", "--db", &db])
        .run()
        .expect_code(0);

    let prefix = common::unique("vt");
    let scratch = format!("{}{prefix}", s.standalone_uri);
    let out = mk()
        .args([
            "verify",
            "--to-time",
            &at,
            "--scratch",
            &scratch,
            "--compare-source",
            &s.rs_uri,
            "--json",
        ])
        .run();
    out.expect_code(0);
    let r = out.json();
    assert_eq!(r["result"], "passed", "{r}");
    assert_eq!(r["kind"], "to-time");
    assert_eq!(r["restored_to"], at.as_str());
    let checks = r["collections"].as_array().unwrap();
    let o = checks
        .iter()
        .find(|c| c["name"] == "orders")
        .expect("orders checked");
    // At T: 300 seeded + 40 inserted, nothing deleted yet; the source side says the same.
    assert_eq!(
        (o["count_actual"].as_u64(), o["count_expected"].as_u64()),
        (Some(340), Some(340))
    );
    assert_eq!(o["digest_actual"], o["digest_expected"]);
    assert!(
        checks
            .iter()
            .any(|c| c["name"] == "late" && c["count_actual"] == 1),
        "a collection the oplog created is checked: {r}"
    );
    let left = common::client(&s.standalone_uri)
        .await
        .list_database_names()
        .await
        .unwrap();
    assert!(
        !left.iter().any(|d| d.starts_with(&prefix)),
        "scratch databases left: {left:?}"
    );

    // One byte flipped in a pushed slice: the restore refuses it, verify fails naming it.
    let slice = walk(&cwd.path().join("repo/oplog"))
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "gz"))
        .expect("a stored slice");
    let mut bytes = std::fs::read(&slice).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    std::fs::write(&slice, &bytes).unwrap();
    let out = mk()
        .args(["verify", "--to-time", &at, "--scratch", &scratch, "--json"])
        .run();
    out.expect_code(MISMATCH);
    let r = out.json();
    assert_eq!(r["result"], "failed");
    let name = slice.file_name().unwrap().to_str().unwrap();
    assert!(
        r["object_problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p.as_str().unwrap().contains(name)),
        "{r}"
    );
    src.database(&db).drop().await.unwrap();
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

//! `mongokeep backup`, `snapshots` and `show` against the real services: what lands in the
//! repository must match the source exactly.

mod common;

use std::collections::BTreeMap;

use futures::TryStreamExt;
use mongodb::bson::{doc, Bson, Document, RawDocumentBuf};
use mongokeep::archive::{documents, read_archive, Codec, Entry};
use mongokeep::digest::ContentDigest;
use mongokeep::storage::Storage;
use sha2::{Digest, Sha256};

fn ext(d: &Document) -> serde_json::Value {
    Bson::Document(d.clone()).into_canonical_extjson()
}

/// Every document of a collection as raw bytes, sorted (for order-free comparison).
async fn source_docs(client: &mongodb::Client, db: &str, coll: &str) -> Vec<Vec<u8>> {
    let c = client.database(db).collection::<RawDocumentBuf>(coll);
    let mut v: Vec<Vec<u8>> = c
        .find(doc! {})
        .await
        .unwrap()
        .map_ok(|d| d.into_bytes())
        .try_collect()
        .await
        .unwrap();
    v.sort();
    v
}

/// The documents of an archive object, sorted, after checking its size and sha256.
async fn archive_docs(store: &dyn Storage, obj: &serde_json::Value, codec: &str) -> Vec<Vec<u8>> {
    let key = obj["key"].as_str().unwrap();
    let data = store.get(key).await.unwrap();
    assert_eq!(
        data.len() as u64,
        obj["size"].as_u64().unwrap(),
        "size of {key}"
    );
    assert_eq!(
        hex::encode(Sha256::digest(&data)),
        obj["sha256"].as_str().unwrap(),
        "sha256 of {key}"
    );
    let codec = if codec == "gzip" {
        Codec::Gzip(6)
    } else {
        Codec::None
    };
    let mut docs = Vec::new();
    let mut saw_metadata = false;
    read_archive(&data[..], codec, |e| {
        match e {
            Entry::Metadata(_) => saw_metadata = true,
            Entry::Part(p) => docs.extend(documents(&p).unwrap().into_iter().map(<[u8]>::to_vec)),
        }
        Ok(())
    })
    .unwrap();
    assert!(saw_metadata, "{key} has no metadata entry");
    docs.sort();
    docs
}

#[tokio::test]
async fn rich_database_to_s3_matches_the_source_exactly() {
    let s = common::services();
    let client = common::client(&s.rs_uri).await;
    let db = common::unique("rich");
    mongokeep::sample::seed_rich(&client, &db).await.unwrap();
    let prefix = common::unique("rich");
    let s3 = s.s3();
    let cwd = tempfile::tempdir().unwrap();

    let out = common::mongokeep(cwd.path())
        .s3(&s3)
        .env("MONGODB_URI", &s.rs_uri)
        .args([
            "backup",
            "--db",
            &db,
            "--repo",
            &s3.repo_url(&prefix),
            "--json",
        ])
        .run();
    out.expect_code(0);
    let id = out.json()["snapshot"].as_str().unwrap().to_string();

    let shown = common::mongokeep(cwd.path())
        .s3(&s3)
        .args(["show", &id, "--repo", &s3.repo_url(&prefix), "--json"])
        .run();
    shown.expect_code(0);
    let m = shown.json();
    assert_eq!(m["snapshot"], id.as_str());
    assert_eq!(m["source"]["topology"], "replica_set");
    assert_eq!(m["digest_algorithm"], "sha256-sum-mod-2^256");
    let entries: BTreeMap<String, &serde_json::Value> = m["collections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap().to_string(), c))
        .collect();

    // Every collection, view and time-series collection of the source, and nothing else.
    let database = client.database(&db);
    let mut specs: Vec<Document> = database
        .run_cursor_command(doc! { "listCollections": 1 })
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    specs.retain(|c| !c.get_str("name").unwrap().starts_with("system."));
    let names: Vec<&str> = specs.iter().map(|c| c.get_str("name").unwrap()).collect();
    assert_eq!(
        entries
            .keys()
            .map(String::as_str)
            .collect::<std::collections::BTreeSet<_>>(),
        names.iter().copied().collect()
    );
    for (name, _) in mongokeep::sample::RICH_COLLECTIONS {
        assert!(
            entries.contains_key(*name),
            "{name} missing from the manifest"
        );
    }

    let store = s3.store(&prefix).await;
    for spec in &specs {
        let name = spec.get_str("name").unwrap();
        let kind = spec.get_str("type").unwrap();
        let e = entries[name];
        assert_eq!(e["db"], db.as_str());
        assert_eq!(e["type"], kind, "{name}");
        assert_eq!(
            e["options"],
            ext(spec.get_document("options").unwrap()),
            "options of {name}"
        );
        if kind == "view" {
            assert_eq!(e["count"], 0);
            assert!(e["objects"].as_array().unwrap().is_empty());
            continue;
        }
        // Time-series collections have no uuid of their own on 6.0 (their buckets do).
        let uuid = match spec.get_document("info").ok().and_then(|i| i.get("uuid")) {
            Some(Bson::Binary(b)) => serde_json::Value::from(hex::encode(&b.bytes)),
            _ => serde_json::Value::Null,
        };
        assert_eq!(e["uuid"], uuid, "uuid of {name}");
        if kind == "collection" {
            assert!(uuid.is_string(), "no uuid for {name}");
        }
        let indexes: Vec<serde_json::Value> = database
            .run_cursor_command(doc! { "listIndexes": name })
            .await
            .unwrap()
            .try_collect::<Vec<Document>>()
            .await
            .unwrap()
            .iter()
            .map(ext)
            .collect();
        assert_eq!(
            e["indexes"].as_array().unwrap(),
            &indexes,
            "indexes of {name}"
        );

        let stored_from = if kind == "timeseries" {
            format!("system.buckets.{name}")
        } else {
            name.to_string()
        };
        let src = source_docs(&client, &db, &stored_from).await;
        let count = database
            .collection::<Document>(&stored_from)
            .count_documents(doc! {})
            .await
            .unwrap();
        assert_eq!(e["count"].as_u64().unwrap(), count, "count of {name}");
        assert_eq!(src.len() as u64, count);
        let bytes: u64 = src.iter().map(|d| d.len() as u64).sum();
        assert_eq!(
            e["bson_bytes"].as_u64().unwrap(),
            bytes,
            "bson_bytes of {name}"
        );
        let mut digest = ContentDigest::new();
        src.iter().for_each(|d| digest.add_document(d));
        assert_eq!(
            e["content_digest"],
            digest.to_hex().as_str(),
            "digest of {name}"
        );

        // The archive holds the very same bytes: raw BSON, not decoded and re-encoded.
        let objects = e["objects"].as_array().unwrap();
        assert_eq!(objects.len(), 1);
        let stored = archive_docs(&*store, &objects[0], e["codec"].as_str().unwrap()).await;
        assert!(
            stored == src,
            "documents of {name} differ between the source and the archive"
        );
    }

    // The acceptance list's specifics.
    let idx = entries["indexed"]["indexes"].as_array().unwrap();
    let has = |pred: &dyn Fn(&serde_json::Value) -> bool| idx.iter().any(pred);
    assert!(has(&|i| i["unique"] == true), "unique");
    assert!(
        has(&|i| i["key"].as_object().unwrap().len() == 2 && i["key"].get("status").is_some()),
        "compound"
    );
    assert!(
        has(&|i| i.get("partialFilterExpression").is_some()),
        "partial"
    );
    assert!(has(&|i| i["sparse"] == true), "sparse");
    assert!(has(&|i| i.get("expireAfterSeconds").is_some()), "ttl");
    assert!(has(&|i| i["key"]["_fts"] == "text"), "text");
    assert!(has(&|i| i["key"]["loc"] == "2dsphere"), "2dsphere");
    assert!(has(&|i| i["key"]["sku"] == "hashed"), "hashed");
    assert!(has(&|i| i["key"].get("attrs.$**").is_some()), "wildcard");
    assert!(has(&|i| i["collation"]["locale"] == "en"), "collation");
    assert_eq!(entries["capped_log"]["options"]["capped"], true);
    assert!(entries["validated"]["options"].get("validator").is_some());
    assert_eq!(entries["collated"]["options"]["collation"]["locale"], "fr");
    assert_eq!(entries["metrics"]["type"], "timeseries");
    assert_eq!(entries["expensive_orders"]["options"]["viewOn"], "indexed");
    assert!(entries["big_doc"]["bson_bytes"].as_u64().unwrap() > 15 * 1024 * 1024);

    // `snapshots --json`: the stable fields scripts rely on.
    let list = common::mongokeep(cwd.path())
        .s3(&s3)
        .args(["snapshots", "--repo", &s3.repo_url(&prefix), "--json"])
        .run();
    list.expect_code(0);
    let list = list.json();
    let snaps = list.as_array().unwrap();
    assert_eq!(snaps.len(), 1);
    let one = &snaps[0];
    assert_eq!(one["id"], id.as_str());
    assert_eq!(one["complete"], true);
    assert_eq!(one["documents"], m["totals"]["documents"]);
    assert!(one["size_bytes"].as_u64().unwrap() > m["totals"]["stored_bytes"].as_u64().unwrap());
    for f in ["started_at", "finished_at"] {
        let t = one[f].as_str().unwrap();
        assert!(
            chrono::DateTime::parse_from_rfc3339(t).is_ok() && t.ends_with('Z'),
            "{f}: {t}"
        );
    }
    client.database(&db).drop().await.unwrap();
}

#[tokio::test]
async fn standalone_to_local_folder_with_selection_and_no_compression() {
    let s = common::services();
    let client = common::client(&s.standalone_uri).await;
    let (a, b) = (common::unique("sel_a"), common::unique("sel_b"));
    for (db, coll) in [
        (&a, "orders"),
        (&a, "skip_me"),
        (&a, "users"),
        (&b, "other"),
    ] {
        client
            .database(db)
            .collection::<Document>(coll)
            .insert_many((0..5).map(|i| doc! { "i": i }))
            .await
            .unwrap();
    }
    let cwd = tempfile::tempdir().unwrap();
    let first = common::mongokeep(cwd.path())
        .env("MONGODB_URI", &s.standalone_uri)
        .args([
            "backup",
            "--repo",
            "./repo",
            "--db",
            &a,
            "--ns-exclude",
            &format!("{a}.skip_*"),
            "--compression",
            "none",
            "--json",
        ])
        .run();
    first.expect_code(0);
    let id1 = first.json()["snapshot"].as_str().unwrap().to_string();
    let m = common::mongokeep(cwd.path())
        .args(["show", "latest", "--repo", "./repo", "--json"])
        .run()
        .json();
    let names: Vec<&str> = m["collections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["orders", "users"]);
    assert_eq!(m["source"]["topology"], "standalone");
    assert_eq!(m["consistency"]["point_in_time"], false);
    assert!(m["consistency"]["note"]
        .as_str()
        .unwrap()
        .contains("standalone"));
    assert_eq!(m["collections"][0]["codec"], "none");
    let key = m["collections"][0]["objects"][0]["key"].as_str().unwrap();
    assert!(key.ends_with(".tar"), "{key}");
    assert!(cwd.path().join("repo").join(key).is_file());

    std::thread::sleep(std::time::Duration::from_millis(1100)); // ids are per second
    let second = common::mongokeep(cwd.path())
        .env("MONGODB_URI", &s.standalone_uri)
        .args([
            "backup",
            "--repo",
            "./repo",
            "--ns-include",
            &format!("{b}.*"),
            "--json",
        ])
        .run();
    second.expect_code(0);
    let id2 = second.json()["snapshot"].as_str().unwrap().to_string();
    let list = common::mongokeep(cwd.path())
        .args(["snapshots", "--repo", "./repo", "--json"])
        .run()
        .json();
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [id2.as_str(), id1.as_str()], "newest first");
    let m2 = common::mongokeep(cwd.path())
        .args(["show", "latest", "--repo", "./repo", "--json"])
        .run()
        .json();
    assert_eq!(m2["collections"].as_array().unwrap().len(), 1);
    assert_eq!(m2["collections"][0]["db"], b.as_str());
    // The text forms name what they show.
    let table = common::mongokeep(cwd.path())
        .args(["snapshots", "--repo", "./repo"])
        .run();
    assert!(
        table.stdout.contains(&id1) && table.stdout.contains("complete"),
        "{}",
        table.stdout
    );
    let text = common::mongokeep(cwd.path())
        .args(["show", &id1, "--repo", "./repo"])
        .run();
    assert!(
        text.stdout.contains(&format!("{a}.orders")),
        "{}",
        text.stdout
    );
    for db in [a, b] {
        client.database(&db).drop().await.unwrap();
    }
}

#[tokio::test]
async fn a_document_near_the_16_mib_limit_and_names_that_need_escaping() {
    let s = common::services();
    let client = common::client(&s.standalone_uri).await;
    let db = common::unique("limits");
    // 16 MiB is the server's limit for one document; leave room for the field names.
    let blob = mongodb::bson::Binary {
        subtype: mongodb::bson::spec::BinarySubtype::Generic,
        bytes: vec![7u8; 16 * 1024 * 1024 - 64],
    };
    let names = ["near limit", "naïve café ☕", "a.b.c", "50% off", "-dash"];
    for n in names {
        client
            .database(&db)
            .collection::<Document>(n)
            .insert_one(doc! { "_id": n })
            .await
            .unwrap();
    }
    client
        .database(&db)
        .collection::<Document>("near limit")
        .insert_one(doc! { "_id": 2, "blob": blob })
        .await
        .unwrap();
    let cwd = tempfile::tempdir().unwrap();
    let out = common::mongokeep(cwd.path())
        .env("MONGODB_URI", &s.standalone_uri)
        .args([
            "backup",
            "--repo",
            "./repo",
            "--db",
            &db,
            "--archive-part-mib",
            "1",
            "--json",
        ])
        .run();
    out.expect_code(0);
    let m = common::mongokeep(cwd.path())
        .args(["show", "latest", "--repo", "./repo", "--json"])
        .run()
        .json();
    let store = mongokeep::storage::local::LocalStore::new(cwd.path().join("repo"));
    for c in m["collections"].as_array().unwrap() {
        let name = c["name"].as_str().unwrap();
        assert!(names.contains(&name), "{name}");
        let src = source_docs(&client, &db, name).await;
        let stored = archive_docs(&store, &c["objects"][0], "gzip").await;
        assert!(stored == src, "{name} differs");
        let key = c["objects"][0]["key"].as_str().unwrap();
        assert!(
            key.is_ascii() && !key.contains(' '),
            "key not escaped: {key}"
        );
    }
    let near = m["collections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "near limit")
        .unwrap();
    assert_eq!(near["count"], 2);
    assert!(near["bson_bytes"].as_u64().unwrap() > 16 * 1024 * 1024 - 100);
    assert_eq!(
        near["parts"], 2,
        "the large document gets a part of its own"
    );
    client.database(&db).drop().await.unwrap();
}

#[tokio::test]
async fn configuration_precedence_flags_then_environment_then_file() {
    let s = common::services();
    let client = common::client(&s.standalone_uri).await;
    let db = common::unique("conf");
    client
        .database(&db)
        .collection::<Document>("c")
        .insert_one(doc! { "x": 1 })
        .await
        .unwrap();
    let cwd = tempfile::tempdir().unwrap();
    std::fs::write(cwd.path().join("uri"), format!("{}\n", s.standalone_uri)).unwrap();
    std::fs::write(
        cwd.path().join("mongokeep.toml"),
        format!("[repository]\nurl = \"./from-file\"\n[source]\nuri_file = \"uri\"\n[backup]\ndatabases = [\"{db}\"]\ncompression = \"none\"\n"),
    )
    .unwrap();
    let count = |dir: &str| {
        let p = cwd.path().join(dir).join("snapshots");
        std::fs::read_dir(p).map(|d| d.count()).unwrap_or(0)
    };
    common::mongokeep(cwd.path())
        .args(["backup"])
        .run()
        .expect_code(0);
    assert_eq!(count("from-file"), 1);
    common::mongokeep(cwd.path())
        .env("MONGOKEEP_REPO", "./from-env")
        .args(["backup"])
        .run()
        .expect_code(0);
    assert_eq!(count("from-env"), 1);
    common::mongokeep(cwd.path())
        .env("MONGOKEEP_REPO", "./from-env")
        .args(["backup", "--repo", "./from-flag", "--compression", "gzip:1"])
        .run()
        .expect_code(0);
    assert_eq!(
        (count("from-file"), count("from-env"), count("from-flag")),
        (1, 1, 1)
    );
    let m = common::mongokeep(cwd.path())
        .args(["show", "latest", "--repo", "./from-flag", "--json"])
        .run()
        .json();
    assert_eq!(
        m["options"]["compression"], "gzip:1",
        "the flag wins over the file"
    );
    let m = common::mongokeep(cwd.path())
        .args(["show", "latest", "--json"])
        .run()
        .json();
    assert_eq!(
        m["options"]["compression"], "none",
        "the file applies when nothing overrides it"
    );
    client.database(&db).drop().await.unwrap();
}

#[tokio::test]
async fn an_uncompressed_collection_with_ids_of_every_type_is_stored_whole() {
    // 12 MB without compression: runs of documents a MiB long go to the store as they came
    // from the server (no copy) between the tar headers, and _ids of several types must
    // all be stored, once each, byte for byte.
    let s = common::services();
    let client = common::client(&s.standalone_uri).await;
    let db = common::unique("mixedids");
    let pad = "y".repeat(4000);
    let docs: Vec<Document> = (0..3000i64)
        .map(|i| {
            let id = match i % 4 {
                0 => Bson::Int64(i),
                1 => Bson::String(format!("s{i:05}")),
                2 => Bson::ObjectId(mongodb::bson::oid::ObjectId::new()),
                _ => Bson::Document(doc! {"k": i}),
            };
            doc! {"_id": id, "i": i, "pad": &pad}
        })
        .collect();
    client
        .database(&db)
        .collection::<Document>("mixed")
        .insert_many(docs)
        .await
        .unwrap();
    let cwd = tempfile::tempdir().unwrap();
    let out = common::mongokeep(cwd.path())
        .env("MONGODB_URI", &s.standalone_uri)
        .args([
            "backup",
            "--repo",
            "./repo",
            "--db",
            &db,
            "--compression",
            "none",
        ])
        .run();
    out.expect_code(0);
    let m = common::mongokeep(cwd.path())
        .args(["show", "latest", "--repo", "./repo", "--json"])
        .run()
        .json();
    let c = &m["collections"][0];
    assert_eq!(c["count"], 3000);
    let store = mongokeep::storage::local::LocalStore::new(cwd.path().join("repo"));
    let stored = archive_docs(&store, &c["objects"][0], c["codec"].as_str().unwrap()).await;
    let source = source_docs(&client, &db, "mixed").await;
    assert_eq!(stored.len(), source.len());
    assert!(
        stored == source,
        "the stored documents differ from the source's"
    );
    client.database(&db).drop().await.unwrap();
}

#[tokio::test]
async fn the_manifest_lists_collections_in_name_order_whichever_ends_first() {
    // Collections start as soon as a slot is free and end in any order (a1eb9d6); the
    // manifest, `show` and the restore plan still list them by name.
    let s = common::services();
    let client = common::client(&s.standalone_uri).await;
    let db = common::unique("order");
    mongokeep::sample::seed_app(&client, &db, "a_large", 8, 1)
        .await
        .unwrap();
    for name in ["b", "c", "d"] {
        client
            .database(&db)
            .collection::<Document>(name)
            .insert_one(doc! {"n": name})
            .await
            .unwrap();
    }
    let cwd = tempfile::tempdir().unwrap();
    common::mongokeep(cwd.path())
        .env("MONGODB_URI", &s.standalone_uri)
        .args(["backup", "--repo", "./repo", "--db", &db, "--parallel", "2"])
        .run()
        .expect_code(0);
    let m = common::mongokeep(cwd.path())
        .args(["show", "latest", "--repo", "./repo", "--json"])
        .run()
        .json();
    let names: Vec<&str> = m["collections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a_large", "b", "c", "d"]);
    client.database(&db).drop().await.unwrap();
}

#[tokio::test]
async fn the_largest_collection_is_backed_up_and_restored_first() {
    // Started last, a large collection would run on alone at the end of the run.
    let s = common::services();
    let client = common::client(&s.standalone_uri).await;
    let db = common::unique("largest");
    for name in ["a", "b"] {
        client
            .database(&db)
            .collection::<Document>(name)
            .insert_one(doc! {"n": name})
            .await
            .unwrap();
    }
    mongokeep::sample::seed_app(&client, &db, "z_large", 3, 1)
        .await
        .unwrap();
    let order = |stderr: &str, event: &str, key: &str| -> Vec<String> {
        stderr
            .lines()
            .filter(|l| l.contains(event))
            .filter_map(|l| l.split(key).nth(1))
            .map(|rest| rest.split_whitespace().next().unwrap().to_string())
            .collect()
    };
    let cwd = tempfile::tempdir().unwrap();
    let out = common::mongokeep(cwd.path())
        .env("MONGODB_URI", &s.standalone_uri)
        .args([
            "-v",
            "backup",
            "--repo",
            "./repo",
            "--db",
            &db,
            "--parallel",
            "1",
        ])
        .run();
    out.expect_code(0);
    assert_eq!(
        order(&out.stderr, "collection stored", " ns="),
        [
            format!("{db}.z_large"),
            format!("{db}.a"),
            format!("{db}.b")
        ],
        "{}",
        out.stderr
    );
    let restored = common::unique("largestr");
    let out = common::mongokeep(cwd.path())
        .args([
            "-v",
            "restore",
            "--snapshot",
            "latest",
            "--repo",
            "./repo",
            "--target",
            &s.standalone_uri,
            "--ns-from",
            &format!("{db}.*"),
            "--ns-to",
            &format!("{restored}.*"),
            "--parallel",
            "1",
        ])
        .run();
    out.expect_code(0);
    assert_eq!(
        order(&out.stderr, "collection restored", " source="),
        [
            format!("{db}.z_large"),
            format!("{db}.a"),
            format!("{db}.b")
        ],
        "{}",
        out.stderr
    );
    client.database(&db).drop().await.unwrap();
    client.database(&restored).drop().await.unwrap();
}

//! Sample data: the rich test database (every BSON type, every index kind, capped,
//! validator, collation, time-series, view, a 15 MiB document, awkward names) and app-like
//! data of a chosen size. Used by the quick start, the tests and the benchmarks.

use chrono::{TimeZone, Utc};
use mongodb::bson::{
    doc, oid::ObjectId, spec::BinarySubtype, Binary, Bson, DateTime, Decimal128, Document,
    JavaScriptCodeWithScope, RawDocumentBuf, Regex, Timestamp,
};
use mongodb::options::IndexOptions;
use mongodb::{Client, Database, IndexModel};

/// Names of the collections [`seed_rich`] creates with data, and their document counts.
pub const RICH_COLLECTIONS: &[(&str, u64)] = &[
    ("all_types", 3),
    ("indexed", 200),
    ("capped_log", 50),
    ("validated", 10),
    ("collated", 5),
    ("metrics", 48),
    ("big_doc", 1),
    ("with space", 2),
    ("ünïcødé 日本", 2),
    ("dots.in.name", 2),
];

/// A document of every BSON type, deprecated ones included.
pub fn every_type_document() -> RawDocumentBuf {
    let d = doc! {
        "_id": 1,
        "double": 1.5f64,
        "double_nan": f64::NAN,
        "double_neg_zero": -0.0f64,
        "string": "héllo\u{0}inside",
        "document": { "nested": { "deep": true } },
        "array": [1, "two", { "three": 3 }, [4]],
        "binary_generic": Binary { subtype: BinarySubtype::Generic, bytes: vec![0, 1, 2, 255] },
        "binary_uuid": Binary { subtype: BinarySubtype::Uuid, bytes: (0u8..16).collect() },
        "binary_md5": Binary { subtype: BinarySubtype::Md5, bytes: vec![7; 16] },
        "binary_user": Binary { subtype: BinarySubtype::UserDefined(0x80), bytes: vec![9, 9] },
        "object_id": ObjectId::parse_str("5f1d7f3c9b1e8a3d4c2b1a09").unwrap(),
        "bool": true,
        "date": DateTime::from_millis(1_700_000_000_123),
        "date_pre_epoch": DateTime::from_millis(-86_400_000),
        "null": Bson::Null,
        "regex": Regex { pattern: "^a.*z$".into(), options: "imsx".into() },
        "code": Bson::JavaScriptCode("function() { return 1; }".into()),
        "code_w_scope": Bson::JavaScriptCodeWithScope(JavaScriptCodeWithScope {
            code: "function() { return x; }".into(),
            scope: doc! { "x": 42 },
        }),
        "int32": i32::MIN,
        "timestamp": Timestamp { time: 1_700_000_000, increment: 7 },
        "int64": i64::MAX,
        "decimal128": Decimal128::from_bytes([1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x40, 0x30]),
        "min_key": Bson::MinKey,
        "max_key": Bson::MaxKey,
        "symbol": Bson::Symbol("sym".into()),
        "undefined": Bson::Undefined,
    };
    let mut raw = RawDocumentBuf::from_document(&d).expect("valid document");
    // DBPointer has no public constructor in the bson crate: append its raw bytes
    // (type 0x0C, name, string namespace, 12-byte ObjectId) by hand.
    let mut bytes = raw.as_bytes()[..raw.as_bytes().len() - 1].to_vec();
    bytes.push(0x0C);
    bytes.extend_from_slice(b"db_pointer\0");
    let ns = b"shop.orders\0";
    bytes.extend_from_slice(&(ns.len() as i32).to_le_bytes());
    bytes.extend_from_slice(ns);
    bytes.extend_from_slice(&[0x5f; 12]);
    bytes.push(0);
    let len = bytes.len() as i32;
    bytes[..4].copy_from_slice(&len.to_le_bytes());
    raw = RawDocumentBuf::from_bytes(bytes).expect("valid DBPointer document");
    raw
}

fn idx(keys: Document, opts: IndexOptions) -> IndexModel {
    IndexModel::builder().keys(keys).options(opts).build()
}

/// Create the rich test database `db` (which should not exist).
///
/// # Errors
/// Any server error.
pub async fn seed_rich(client: &Client, db: &str) -> mongodb::error::Result<()> {
    let d = client.database(db);
    let all = d.collection::<RawDocumentBuf>("all_types");
    all.insert_one(every_type_document()).await?;
    let mut empty = RawDocumentBuf::new();
    empty.append("_id", 2);
    all.insert_one(empty).await?;
    all.insert_one(
        RawDocumentBuf::from_document(
            &doc! { "_id": ObjectId::new(), "only": "id is an ObjectId" },
        )
        .unwrap(),
    )
    .await?;

    seed_indexed(&d).await?;

    d.run_command(doc! { "create": "capped_log", "capped": true, "size": 65536, "max": 1000 })
        .await?;
    let capped = d.collection::<Document>("capped_log");
    capped
        .insert_many((0..50).map(|i| doc! { "seq": i, "msg": format!("line {i}") }))
        .await?;

    d.run_command(doc! {
        "create": "validated",
        "validator": { "$jsonSchema": { "bsonType": "object", "required": ["email"],
            "properties": { "email": { "bsonType": "string", "pattern": "@" } } } },
        "validationLevel": "moderate",
        "validationAction": "error",
    })
    .await?;
    d.collection::<Document>("validated")
        .insert_many((0..10).map(|i| doc! { "email": format!("user{i}@example.com") }))
        .await?;

    d.run_command(doc! { "create": "collated", "collation": { "locale": "fr", "strength": 2 } })
        .await?;
    d.collection::<Document>("collated")
        .insert_many(["côte", "cote", "Côté", "coté", "CÔTE"].map(|w| doc! { "word": w }))
        .await?;

    d.run_command(doc! {
        "create": "metrics",
        "timeseries": { "timeField": "ts", "metaField": "sensor", "granularity": "hours" },
    })
    .await?;
    // Two sensors, 24 hourly measurements each.
    let t0 = Utc
        .with_ymd_and_hms(2026, 11, 1, 0, 0, 0)
        .unwrap()
        .timestamp_millis();
    d.collection::<Document>("metrics")
        .insert_many((0..48).map(|i| {
            doc! { "ts": DateTime::from_millis(t0 + (i % 24) * 3_600_000), "sensor": { "id": i / 24 }, "temp": 20.0 + i as f64 / 10.0 }
        }))
        .await?;

    d.run_command(doc! {
        "create": "expensive_orders", "viewOn": "indexed",
        "pipeline": [ { "$match": { "total": { "$gt": 100 } } }, { "$project": { "email": 1, "total": 1 } } ],
    })
    .await?;

    // A 15 MiB document.
    let blob = Binary {
        subtype: BinarySubtype::Generic,
        bytes: (0..15 * 1024 * 1024u32)
            .map(|i| (i * 7 % 251) as u8)
            .collect(),
    };
    d.collection::<Document>("big_doc")
        .insert_one(doc! { "_id": "big", "blob": blob })
        .await?;

    for name in ["with space", "ünïcødé 日本", "dots.in.name"] {
        d.collection::<Document>(name)
            .insert_many([doc! { "_id": 1, "n": name }, doc! { "_id": 2, "n": name }])
            .await?;
    }
    Ok(())
}

async fn seed_indexed(d: &Database) -> mongodb::error::Result<()> {
    let c = d.collection::<Document>("indexed");
    const STATUS: [&str; 3] = ["new", "paid", "shipped"];
    const COLOUR: [&str; 2] = ["red", "blue"];
    let docs = (0..200).map(|i| {
        let status = STATUS[i % 3];
        let colour = COLOUR[i % 2];
        doc! {
            "email": format!("user{i}@example.com"),
            "name": format!("User {i}"),
            "total": (i * 7 % 300) as f64,
            "status": status,
            "bio": format!("likes item {} and colour {}", i % 10, colour),
            "loc": { "type": "Point", "coordinates": [2.0 + (i as f64) / 100.0, 48.0] },
            "created": DateTime::from_millis(1_700_000_000_000 + i as i64 * 1000),
            "attrs": { "size": (i % 5) as i32, "tag": format!("t{}", i % 4) },
            "maybe": if i % 2 == 0 { Bson::Int32(i as i32) } else { Bson::Null },
            "sku": format!("SKU-{i}"),
        }
    });
    c.insert_many(docs).await?;
    let o = IndexOptions::builder;
    c.create_indexes([
        idx(
            doc! { "email": 1 },
            o().unique(true).name("email_unique".to_string()).build(),
        ),
        idx(doc! { "status": 1, "total": -1 }, o().build()),
        idx(
            doc! { "total": 1 },
            o().partial_filter_expression(doc! { "status": "paid" })
                .build(),
        ),
        idx(doc! { "maybe": 1 }, o().sparse(true).build()),
        idx(
            doc! { "created": 1 },
            o().expire_after(std::time::Duration::from_secs(3600 * 24 * 365 * 10))
                .build(),
        ),
        idx(
            doc! { "bio": "text", "name": "text" },
            o().weights(doc! { "bio": 1, "name": 5 })
                .default_language("english".to_string())
                .build(),
        ),
        idx(doc! { "loc": "2dsphere" }, o().build()),
        idx(doc! { "sku": "hashed" }, o().build()),
        idx(doc! { "attrs.$**": 1 }, o().build()),
        idx(
            doc! { "name": 1 },
            o().collation(
                mongodb::options::Collation::builder()
                    .locale("en")
                    .strength(mongodb::options::CollationStrength::Secondary)
                    .build(),
            )
            .name("name_ci".to_string())
            .build(),
        ),
    ])
    .await?;
    Ok(())
}

/// Insert about `mib` MiB of app-like documents (orders of a food-ordering backend: names,
/// emails, timestamps, enums, small arrays; 200 B to 4 KiB each) into `db.coll`,
/// deterministically from `seed`.
///
/// # Errors
/// Any server error.
pub async fn seed_app(
    client: &Client,
    db: &str,
    coll: &str,
    mib: u64,
    seed: u64,
) -> mongodb::error::Result<u64> {
    let c = client.database(db).collection::<RawDocumentBuf>(coll);
    let target = mib * 1024 * 1024;
    let mut rng = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    const FIRST: [&str; 8] = ["Ana", "Bo", "Chen", "Dana", "Eli", "Fatima", "Gus", "Hana"];
    const DISH: [&str; 6] = ["ramen", "pizza", "falafel", "pho", "tacos", "curry"];
    const STATUS: [&str; 4] = ["placed", "cooking", "delivering", "delivered"];
    let mut written = 0u64;
    let mut n = 0u64;
    while written < target {
        let mut batch = Vec::with_capacity(1000);
        let mut batch_bytes = 0;
        while batch.len() < 1000 && written + batch_bytes < target {
            let r = next();
            let items = 1 + (r % 6) as usize;
            let note_len = (r >> 8) % 3000;
            let status = STATUS[((r >> 4) % 4) as usize];
            let d = doc! {
                "_id": n as i64,
                "customer": { "name": format!("{} {}", FIRST[(r % 8) as usize], n % 9973), "email": format!("c{}@example.org", n % 100_003) },
                "placed_at": DateTime::from_millis(1_700_000_000_000 + (n as i64) * 1500),
                "status": status,
                "items": (0..items).map(|i| Bson::Document(doc! { "dish": DISH[(i + n as usize) % 6], "qty": ((r >> i) % 4 + 1) as i32, "price": ((r >> (i + 3)) % 2000) as f64 / 100.0 })).collect::<Vec<_>>(),
                "total": ((r >> 20) % 10_000) as f64 / 100.0,
                "note": "x".repeat(note_len as usize),
            };
            let raw = RawDocumentBuf::from_document(&d).expect("valid");
            batch_bytes += raw.as_bytes().len() as u64;
            batch.push(raw);
            n += 1;
        }
        written += batch_bytes;
        c.insert_many(batch).ordered(false).await?;
    }
    Ok(n)
}

/// The secondary indexes an app would keep on the orders of [`seed_app`]: by customer email,
/// by time, by status and time. Returns how many.
///
/// # Errors
/// The server refused.
pub async fn app_indexes(client: &Client, db: &str, coll: &str) -> mongodb::error::Result<usize> {
    let models = [
        doc! { "customer.email": 1 },
        doc! { "placed_at": -1 },
        doc! { "status": 1, "placed_at": -1 },
    ]
    .map(|keys| IndexModel::builder().keys(keys).build());
    let n = models.len();
    client
        .database(db)
        .collection::<Document>(coll)
        .create_indexes(models)
        .await?;
    Ok(n)
}

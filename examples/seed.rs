//! Seed a MongoDB with sample data (the quick start and the benchmarks use it).
//!
//! `cargo run --example seed -- URI rich DB` creates the rich test database `DB`;
//! `cargo run --example seed -- URI app DB COLL MIB` inserts about MIB MiB of app-like orders.
//! `cargo run --example seed -- URI indexes DB COLL` gives such a collection the secondary
//! indexes an app would have on it.
//! `cargo run --example seed -- URI scan DB` reads every collection of `DB` through the driver,
//! all at once (raw batches, documents dropped) and prints `documents bytes`: the benchmark's raw scan.

use mongodb::Client;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The same allocator settings as the mongokeep binary, so that the raw scan is not
    // slowed by page faults that mongokeep does not pay.
    mongokeep::tune_allocator();
    tokio::runtime::Runtime::new()?.block_on(run())
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage =
        "usage: seed URI rich DB | seed URI app DB COLL MIB | seed URI indexes DB COLL | seed URI scan DB";
    let uri = args.first().ok_or(usage)?;
    let client = Client::with_uri_str(uri).await?;
    match args.get(1).map(String::as_str) {
        Some("rich") => {
            let db = args.get(2).ok_or(usage)?;
            if client.list_database_names().await?.contains(db) {
                println!("database {db} exists already; left as it is");
                return Ok(());
            }
            mongokeep::sample::seed_rich(&client, db).await?;
            println!("seeded the rich sample database {db}");
        }
        Some("app") => {
            let (db, coll) = (args.get(2).ok_or(usage)?, args.get(3).ok_or(usage)?);
            let mib: u64 = args.get(4).ok_or(usage)?.parse()?;
            let existing = client
                .database(db)
                .collection::<mongodb::bson::Document>(coll)
                .estimated_document_count()
                .await?;
            if existing > 0 {
                println!("{db}.{coll} holds {existing} documents already; left as it is");
                return Ok(());
            }
            let n = mongokeep::sample::seed_app(&client, db, coll, mib, 42).await?;
            println!("inserted {n} documents (about {mib} MiB) into {db}.{coll}");
        }
        Some("indexes") => {
            let (db, coll) = (args.get(2).ok_or(usage)?, args.get(3).ok_or(usage)?);
            let n = mongokeep::sample::app_indexes(&client, db, coll).await?;
            println!("{db}.{coll} has its {n} secondary indexes");
        }
        Some("scan") => {
            let db = args.get(2).ok_or(usage)?;
            let source = mongokeep::source::Source::connect(uri).await?;
            let names: Vec<String> = source
                .list_collections(db)
                .await?
                .into_iter()
                .filter(|s| s.kind == "collection" && !s.name.starts_with("system."))
                .map(|s| s.name)
                .collect();
            // Every collection at once, one cursor each, the server's batches counted
            // where they are and dropped.
            let scans = names.iter().map(|name| {
                let source = source.clone();
                let (db, name) = (db.clone(), name.clone());
                tokio::spawn(async move {
                    let (tx, mut rx) = tokio::sync::mpsc::channel(1);
                    let cancel = Default::default();
                    let range = Default::default();
                    let read = source.range_batches(&db, &name, &range, tx, &cancel);
                    let count = async {
                        let (mut docs, mut bytes) = (0u64, 0u64);
                        while let Some(batch) = rx.recv().await {
                            for d in mongokeep::source::batch_documents(&batch, &db, &name)? {
                                docs += 1;
                                bytes += d?.len() as u64;
                            }
                        }
                        Ok::<_, mongokeep::Error>((docs, bytes))
                    };
                    let (r, c) = tokio::join!(read, count);
                    r.and(c)
                })
            });
            let (mut docs, mut bytes) = (0u64, 0u64);
            for r in futures::future::join_all(scans).await {
                let (d, b) = r??;
                docs += d;
                bytes += b;
            }
            println!("{docs} {bytes}");
            source.client().clone().shutdown().await;
        }
        _ => return Err(usage.into()),
    }
    // Close the pool before the runtime stops (dropping a client during shutdown panics
    // inside the driver).
    client.shutdown().await;
    Ok(())
}

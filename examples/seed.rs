//! Seed a MongoDB with sample data (the quick start and the benchmarks use it).
//!
//! `cargo run --example seed -- URI rich DB` creates the rich test database `DB`;
//! `cargo run --example seed -- URI app DB COLL MIB` inserts about MIB MiB of app-like orders.

use mongodb::Client;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: seed URI rich DB | seed URI app DB COLL MIB";
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
            let existing = client.database(db).collection::<mongodb::bson::Document>(coll).estimated_document_count().await?;
            if existing > 0 {
                println!("{db}.{coll} holds {existing} documents already; left as it is");
                return Ok(());
            }
            let n = mongokeep::sample::seed_app(&client, db, coll, mib, 42).await?;
            println!("inserted {n} documents (about {mib} MiB) into {db}.{coll}");
        }
        _ => return Err(usage.into()),
    }
    Ok(())
}

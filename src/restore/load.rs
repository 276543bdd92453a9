//! Restoring one collection:
//!
//! ```text
//! store ──bytes (bounded, sha256 + size checked)──▶ gunzip + untar ──parts (bounded)──▶ insert
//!        (async: fetch_verified)                    (blocking thread)                  (async, a
//!                                                                                       few batches
//!                                                                                       in flight)
//! ```
//!
//! The collection is created with its recorded options first, the documents go in as raw
//! BSON (never decoded), unordered (ordered for capped collections, whose order is their
//! content) and with document validation bypassed (the data passed it once, or predates the
//! validator); then the count is compared with the manifest and the indexes are built.

use std::sync::atomic::Ordering;
use std::time::Instant;

use futures::stream::FuturesUnordered;
use futures::StreamExt;
use mongodb::bson::{doc, Bson, Document, RawDocument, RawDocumentBuf};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{
    apply_expiry, create_with_options, drop_if_planned, to_bson, Action, PlannedItem, Progress,
    RestoreEvent, RestoreOptions, RestoredItem, HELD_INDEX_EXPIRY,
};
use crate::archive::{self, Codec, Entry};
use crate::error::root_cause;
use crate::fetch::{fetch_verified, ChannelReader};
use crate::repository::Repository;
use crate::source::{classify, Source};
use crate::{Error, Result};

/// Bound on the BSON bytes of one insert command.
const INSERT_BATCH_BYTES: usize = 4 << 20;

/// A document from the manifest's canonical extended JSON.
///
/// # Errors
/// The value is not a document.
pub fn to_document(v: &serde_json::Value, what: &str) -> Result<Document> {
    match to_bson(v, what)? {
        Bson::Document(d) => Ok(d),
        other => Err(Error::Format {
            what: format!("the manifest's record of {what}"),
            detail: format!("expected a document, found {other}"),
        }),
    }
}

/// Restore one collection or time-series collection as planned.
///
/// # Errors
/// The target, the repository, a checksum or the final count.
pub(super) async fn restore_collection(
    repo: &Repository,
    target: &Source,
    item: &PlannedItem,
    opts: &RestoreOptions,
    cancel: &CancellationToken,
    progress: &Progress,
) -> Result<RestoredItem> {
    let started = Instant::now();
    let e = &item.entry;
    let tns = format!("{}.{}", item.target_db, item.target_name);
    drop_if_planned(target, item).await?;
    // What this restore creates has its expiry held until the documents are counted.
    let created = item.action != Action::LoadIntoExisting;
    if created {
        create_with_options(target, item).await?;
    }
    // Time-series documents are their buckets, stored from and loaded into the buckets
    // collection behind the time-series view, as mongodump and mongorestore do.
    let load_into = match &e.stored_from {
        Some(_) => format!("system.buckets.{}", item.target_name),
        None => item.target_name.clone(),
    };
    let coll = target
        .client()
        .database(&item.target_db)
        .collection::<RawDocumentBuf>(&load_into);
    let ordered = e
        .options
        .get("capped")
        .and_then(|v| v.as_bool())
        .unwrap_or(false);
    let codec = Codec::for_reading(&e.codec);
    let mut loaded = (0u64, 0u64);
    // Only a collection created here numbers its records from the first one.
    let mut committed = (created && opts.on_event.is_some()).then(Watermark::default);
    for obj in &e.objects {
        let (byte_tx, byte_rx) = mpsc::channel(8);
        let (part_tx, part_rx) = mpsc::channel::<Vec<u8>>(1);
        let what = obj.key.clone();
        let decoder = tokio::task::spawn_blocking(move || {
            let r =
                archive::read_archive(ChannelReader::new(byte_rx), codec, |entry| match entry {
                    Entry::Metadata(_) => Ok(()),
                    Entry::Part(p) => part_tx.blocking_send(p).map_err(|_| Error::Cancelled),
                });
            r.map_err(|e| match e {
                Error::Format { detail, .. } => Error::Format {
                    what: format!("archive {what}"),
                    detail,
                },
                other => other,
            })
        });
        let fetch = async {
            let r = fetch_verified(repo, obj, byte_tx, cancel).await;
            if r.is_err() {
                cancel.cancel();
            }
            r
        };
        let insert = async {
            // Owned here, so that the decoder's sends fail (and it stops) as soon as the
            // inserter ends, whatever the reason.
            let mut part_rx = part_rx;
            let mut in_flight = FuturesUnordered::new();
            let limit = if ordered {
                1
            } else {
                opts.insert_workers.max(1)
            };
            let mut n = (0u64, 0u64);
            let mut input_done = false;
            // The first failure stops the others (at their next batch), and the inserts in
            // flight are waited for all the same: none is left running on the server.
            let mut failed: Option<Error> = None;
            while !(input_done && in_flight.is_empty()) {
                tokio::select! {
                    r = in_flight.next(), if !in_flight.is_empty() => match r.expect("not empty") as (u64, Result<(u64, u64)>) {
                        (part, Ok((d, b))) => {
                            n.0 += d;
                            n.1 += b;
                            if let (Some(w), Some(tx)) = (committed.as_mut(), &opts.on_event) {
                                if let Some(documents) = w.ended(part, d) {
                                    let _ = tx.send(RestoreEvent::Committed {
                                        db: e.db.clone(),
                                        name: e.name.clone(),
                                        documents,
                                    });
                                }
                            }
                        }
                        (_, Err(e)) => {
                            input_done = true;
                            if !e.is_cancelled() {
                                cancel.cancel();
                            }
                            if failed.as_ref().is_none_or(Error::is_cancelled) {
                                failed = Some(e);
                            }
                        }
                    },
                    // Stopped: the inserts in flight end, and no more start.
                    () = cancel.cancelled(), if !input_done => input_done = true,
                    p = part_rx.recv(), if !input_done && in_flight.len() < limit => {
                        let Some(part) = p else {
                            input_done = true;
                            continue;
                        };
                        let seq = committed.as_mut().map_or(0, Watermark::issue);
                        let insert = insert_part(&coll, part, ordered, item, target, progress, cancel);
                        in_flight.push(async move { (seq, insert.await) });
                    }
                }
            }
            match failed {
                Some(e) => Err(e),
                None => Ok::<_, Error>(n),
            }
        };
        let decode = async {
            decoder.await.unwrap_or_else(|err| {
                Err(Error::Format {
                    what: "archive reader".into(),
                    detail: err.to_string(),
                })
            })
        };
        let (f, i, d) = tokio::join!(fetch, insert, decode);
        match (f, i, d) {
            (Ok(()), Ok(n), Ok(())) => {
                loaded.0 += n.0;
                loaded.1 += n.1;
            }
            // A checksum or storage failure explains a decode failure, and a target failure
            // explains why the other stages stopped.
            (f, i, d) => {
                return Err(
                    root_cause([f.err(), i.err(), d.err()].into_iter().flatten().collect())
                        .expect("one failed"),
                )
            }
        }
    }
    if cancel.is_cancelled() {
        return Err(Error::Cancelled);
    }
    if loaded.0 != e.count {
        return Err(Error::Integrity {
            key: format!("{} (documents read from the archive)", item.source),
            expected: format!("{} documents", e.count),
            actual: format!("{} documents", loaded.0),
        });
    }
    // Counted before the indexes are built: once a TTL index is there, the server may
    // delete expired documents at any moment (as it does after mongorestore).
    let on_server = coll
        .estimated_document_count()
        .await
        .map_err(|err| classify(&target.info.uri, &format!("counting {tns}"), err))?;
    if on_server != e.count {
        return Err(Error::Integrity {
            key: format!("{tns} (documents on the target after loading)"),
            expected: format!("{} documents", e.count),
            actual: format!("{on_server} documents"),
        });
    }
    if let Some(tx) = &opts.on_event {
        // Verification reads the documents back while the indexes build.
        let _ = tx.send(RestoreEvent::Loaded {
            db: e.db.clone(),
            name: e.name.clone(),
        });
    }
    // What this restore created has its expiry held until now; into an existing
    // collection, indexes are built as recorded (an existing equal index is then no
    // conflict).
    // A build in flight when the restore is stopped is left to the server (dropping the
    // database, or the collection, aborts it); it creates nothing once aborted.
    let indexes = tokio::select! {
        r = create_indexes(target, item, created) => r?,
        () = cancel.cancelled() => return Err(Error::Cancelled),
    };
    if created && !opts.scratch {
        apply_expiry(target, &item.target_db, &item.target_name, e).await?;
    }
    tracing::info!(source = %item.source, target = %tns, documents = loaded.0, "collection restored");
    Ok(RestoredItem {
        source: item.source.clone(),
        target: tns,
        kind: e.kind.clone(),
        documents: loaded.0,
        bson_bytes: loaded.1,
        indexes,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Which first records of a collection being loaded are surely committed, from the parts
/// its inserters were given and those that ended ([`RestoreEvent::Committed`]).
///
/// The server numbers a new collection's records in the order it inserts them, and parts
/// load side by side, so a part that ended may hold record ids above those of a part still
/// under way. What is safe: when `n` documents have been acknowledged, the server had
/// numbered at least `n` records, every one of them by a part issued by then; once each
/// of those parts has ended, the records up to `n` are committed.
#[derive(Debug, Default)]
pub(crate) struct Watermark {
    /// Parts issued, numbered from 1.
    issued: u64,
    /// Every part up to this one has ended.
    low: u64,
    /// Parts above `low` that have ended.
    ended: std::collections::BTreeSet<u64>,
    /// Documents of the parts that have ended.
    acknowledged: u64,
    /// (last part issued, documents acknowledged) when a part ended, oldest first.
    pending: std::collections::VecDeque<(u64, u64)>,
    /// The last count announced.
    announced: u64,
}

impl Watermark {
    /// A part is given to an inserter; returns its number.
    pub(crate) fn issue(&mut self) -> u64 {
        self.issued += 1;
        self.issued
    }

    /// Part `part` ended with `documents` inserted; returns a larger count of committed
    /// first records, if there is one now.
    pub(crate) fn ended(&mut self, part: u64, documents: u64) -> Option<u64> {
        self.acknowledged += documents;
        self.ended.insert(part);
        while self.ended.remove(&(self.low + 1)) {
            self.low += 1;
        }
        self.pending.push_back((self.issued, self.acknowledged));
        let mut safe = None;
        while let Some(&(last, n)) = self.pending.front() {
            if last > self.low {
                break;
            }
            safe = Some(n);
            self.pending.pop_front();
        }
        match safe {
            Some(n) if n > self.announced => {
                self.announced = n;
                Some(n)
            }
            _ => None,
        }
    }
}

/// Insert the documents of one archive part; returns (documents, BSON bytes).
async fn insert_part(
    coll: &mongodb::Collection<RawDocumentBuf>,
    part: Vec<u8>,
    ordered: bool,
    item: &PlannedItem,
    target: &Source,
    progress: &Progress,
    cancel: &CancellationToken,
) -> Result<(u64, u64)> {
    let slices = archive::documents(&part)?;
    let (count, bytes) = (slices.len() as u64, part.len() as u64);
    // Insert in batches of a few MiB of documents borrowed from the part (the driver copies
    // each into the command it builds; an owned copy first measured a tenth of the restore's
    // CPU in copies and allocations), so the memory of an insert in flight is the part and
    // one batch's command.
    let coll = coll.clone_with_type::<&RawDocument>();
    let mut start = 0;
    while start < slices.len() {
        if cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let mut end = start;
        let mut size = 0;
        while end < slices.len() && (end == start || size + slices[end].len() <= INSERT_BATCH_BYTES)
        {
            size += slices[end].len();
            end += 1;
        }
        let batch = slices[start..end]
            .iter()
            .map(|d| RawDocument::from_bytes(d))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|err| Error::Format {
                what: format!("a document of {}", item.source),
                detail: err.to_string(),
            })?;
        coll.insert_many(&batch)
            .ordered(ordered)
            .bypass_document_validation(true)
            .await
            .map_err(|err| {
                classify(
                    &target.info.uri,
                    &format!("inserting into {}", coll.namespace()),
                    err,
                )
            })?;
        start = end;
    }
    drop(slices);
    drop(part);
    progress.documents.fetch_add(count, Ordering::Relaxed);
    progress.bytes.fetch_add(bytes, Ordering::Relaxed);
    Ok((count, bytes))
}

/// Build every recorded index but `_id` (which `create` made, with the collection's
/// collation), with every option as recorded, TTL indexes with their expiry held
/// ([`HELD_INDEX_EXPIRY`]) when `hold`.
async fn create_indexes(target: &Source, item: &PlannedItem, hold: bool) -> Result<u64> {
    let mut specs = Vec::new();
    for v in &item.entry.indexes {
        let mut spec = to_document(v, &format!("an index of {}", item.source))?;
        if spec.get_str("name") == Ok("_id_") {
            continue;
        }
        // `ns` (servers before 4.4) names the source namespace; createIndexes rejects a
        // different one.
        spec.remove("ns");
        if hold && spec.contains_key("expireAfterSeconds") {
            spec.insert("expireAfterSeconds", HELD_INDEX_EXPIRY);
        }
        specs.push(spec);
    }
    if specs.is_empty() {
        return Ok(0);
    }
    let n = specs.len() as u64;
    target
        .client()
        .database(&item.target_db)
        .run_command(doc! { "createIndexes": item.target_name.clone(), "indexes": specs })
        .await
        .map_err(|e| {
            classify(
                &target.info.uri,
                &format!(
                    "creating the indexes of {}.{}",
                    item.target_db, item.target_name
                ),
                e,
            )
        })?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::Watermark;

    #[test]
    fn one_part_at_a_time_commits_each_part_as_it_ends() {
        let mut w = Watermark::default();
        let a = w.issue();
        assert_eq!(w.ended(a, 10), Some(10));
        let b = w.issue();
        assert_eq!(w.ended(b, 5), Some(15));
    }

    #[test]
    fn a_part_that_ends_first_waits_for_the_parts_beside_it() {
        let mut w = Watermark::default();
        let (a, b) = (w.issue(), w.issue());
        // Part a is still under way and may hold record ids below b's.
        assert_eq!(w.ended(b, 10), None);
        let c = w.issue();
        // Ten documents were acknowledged when only a and b had been issued: both have
        // ended now. The twenty acknowledged now also wait for c.
        assert_eq!(w.ended(a, 10), Some(10));
        assert_eq!(w.ended(c, 10), Some(30));
    }

    #[test]
    fn nothing_is_announced_twice_or_backwards() {
        let mut w = Watermark::default();
        let (a, b) = (w.issue(), w.issue());
        assert_eq!(w.ended(a, 0), None, "b is still under way");
        assert_eq!(w.ended(b, 4), Some(4));
        let c = w.issue();
        assert_eq!(w.ended(c, 0), None, "no documents: nothing new");
        // Parts that end out of order never announce fewer records than before.
        let (d, e) = (w.issue(), w.issue());
        assert_eq!(w.ended(e, 3), None);
        assert_eq!(w.ended(d, 3), Some(10));
    }
}

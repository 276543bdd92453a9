//! Recompute from a live server what the manifest recorded, and say what differs: per
//! collection the count, the content digest (streamed as raw BSON, never decoded), the
//! indexes (matched by name, every option compared) and the collection options.

use std::collections::BTreeMap;

use futures::{FutureExt, StreamExt, TryStreamExt};
use mongodb::bson::{doc, Document};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::report::{CollectionCheck, Drift};
use super::{ext, scratch_db};
use crate::digest::ContentDigest;
use crate::manifest::{CollectionEntry, Manifest};
use crate::restore::RestoreEvent;
use crate::source::{classify, Source};
use crate::{Error, Result};

fn skipped(e: &CollectionEntry) -> bool {
    e.db == "admin" && (e.name == "system.users" || e.name == "system.roles")
}

/// Compare every collection of `manifest` with its copy in the scratch databases.
///
/// # Errors
/// The scratch server failed (a difference is a failed check, not an error).
pub async fn compare(
    manifest: &Manifest,
    scratch: &Source,
    prefix: &str,
    parallel: usize,
) -> Result<Vec<CollectionCheck>> {
    // Everything is restored already: a channel that is closed from the start.
    let (_, events) = mpsc::unbounded_channel();
    compare_as_restored(manifest, scratch, prefix, parallel, events).await
}

/// One piece of work of [`compare_as_restored`].
#[derive(Debug, Clone, Copy)]
enum Job {
    /// Count and digest the documents (they are all in; indexes may still be building).
    ReadBack(usize),
    /// Check everything else, and the documents too unless they were read back already.
    Check(usize),
}

/// [`compare`] while the restore runs: each collection's documents are read back as soon
/// as the restore says they are all in ([`RestoreEvent::Loaded`], while its indexes
/// build), and the rest is checked when it is restored ([`RestoreEvent::Restored`]);
/// `parallel` jobs at a time. When the channel closes (the restore ended) whatever was not
/// announced (views, for one) is checked. Returns the checks in manifest order.
///
/// # Errors
/// The scratch server failed.
pub async fn compare_as_restored(
    manifest: &Manifest,
    scratch: &Source,
    prefix: &str,
    parallel: usize,
    mut events: mpsc::UnboundedReceiver<RestoreEvent>,
) -> Result<Vec<CollectionCheck>> {
    let entries: Vec<&CollectionEntry> = manifest
        .collections
        .iter()
        .filter(|e| !skipped(e))
        .collect();
    let n = entries.len();
    let mut checks: Vec<Option<CollectionCheck>> = vec![None; n];
    let mut state: Vec<State> = vec![State::default(); n];
    let mut queue: std::collections::VecDeque<Job> = std::collections::VecDeque::new();
    let mut running = futures::stream::FuturesUnordered::new();
    let mut open = true;
    let position = |db: &str, name: &str| entries.iter().position(|e| e.db == db && e.name == name);
    while open || !queue.is_empty() || !running.is_empty() {
        while running.len() < parallel.max(1) {
            let Some(job) = queue.pop_front() else { break };
            match job {
                Job::ReadBack(i) => {
                    let e: &CollectionEntry = entries[i];
                    running.push(
                        async move {
                            let db = scratch_db(prefix, &e.db);
                            (i, read_back(e, scratch, &db).await.map(Outcome::Read))
                        }
                        .boxed(),
                    );
                }
                Job::Check(i) => {
                    let (e, done) = (entries[i], state[i].read);
                    running.push(
                        async move {
                            let r = check_one(e, scratch, prefix, done).await;
                            (i, r.map(Outcome::Checked))
                        }
                        .boxed(),
                    );
                }
            }
        }
        tokio::select! {
            Some((i, r)) = running.next(), if !running.is_empty() => match r? {
                Outcome::Read(x) => {
                    state[i].read = Some(x);
                    state[i].check_when_ready(i, &mut queue);
                }
                Outcome::Checked(c) => checks[i] = Some(c),
            },
            msg = events.recv(), if open => match msg {
                Some(RestoreEvent::Loaded { db, name }) => {
                    if let Some(i) = position(&db, &name) {
                        if !state[i].read_queued && entries[i].kind != "view" {
                            state[i].read_queued = true;
                            queue.push_back(Job::ReadBack(i));
                        }
                    }
                }
                Some(RestoreEvent::Restored { db, name }) => {
                    if let Some(i) = position(&db, &name) {
                        state[i].restored = true;
                        state[i].check_when_ready(i, &mut queue);
                    }
                }
                None => {
                    open = false;
                    for (i, x) in state.iter_mut().enumerate() {
                        x.restored = true;
                        x.check_when_ready(i, &mut queue);
                    }
                }
            },
        }
    }
    Ok(checks.into_iter().flatten().collect())
}

/// Where one collection is in [`compare_as_restored`].
#[derive(Debug, Clone, Default)]
struct State {
    read_queued: bool,
    /// Count and digest, once read back.
    read: Option<(u64, ContentDigest)>,
    restored: bool,
    check_queued: bool,
}

impl State {
    /// Queue the check of a restored collection once its read-back (if any) has ended.
    fn check_when_ready(&mut self, i: usize, queue: &mut std::collections::VecDeque<Job>) {
        if self.restored && !self.check_queued && !(self.read_queued && self.read.is_none()) {
            self.check_queued = true;
            queue.push_back(Job::Check(i));
        }
    }
}

/// What a job of [`compare_as_restored`] produced.
enum Outcome {
    Read((u64, ContentDigest)),
    Checked(CollectionCheck),
}

/// Count and content digest of a restored collection (its documents: the buckets of a
/// time-series collection).
async fn read_back(
    e: &CollectionEntry,
    scratch: &Source,
    db: &str,
) -> Result<(u64, ContentDigest)> {
    let stored = e.stored_from.clone().unwrap_or_else(|| e.name.clone());
    let range_bytes = crate::source::range_bytes();
    // A plain collection just loaded has record ids 1 to its count: it is read in parts of
    // its natural order (a collection scan from a record id), cheaper for the server than
    // `_id` ranges (an index lookup per document, in `_id` order, not the order on disk).
    let plain = e.kind == "collection" && e.options.get("clusteredIndex").is_none();
    if plain && e.bson_bytes > 2 * range_bytes {
        let parts = e.bson_bytes.div_ceil(range_bytes) as usize;
        match digest_in_record_ranges(scratch, db, &stored, e.count, parts).await {
            Ok(Some((count, digest, n))) => {
                tracing::debug!(ns = %format!("{db}.{stored}"), ranges = n, "read back in record ranges");
                return Ok((count, digest));
            }
            Ok(None) => {}
            Err(err) => {
                tracing::debug!(ns = %format!("{db}.{stored}"), error = %err, "record ranges failed; reading _id ranges");
            }
        }
    }
    let (count, digest, _) =
        digest_in_ranges(scratch, db, &stored, e.bson_bytes, range_bytes).await?;
    Ok((count, digest))
}

/// Check one collection, reading its options from the scratch server first; `read` is its
/// documents' count and digest when they were read back already.
async fn check_one(
    e: &CollectionEntry,
    scratch: &Source,
    prefix: &str,
    read: Option<(u64, ContentDigest)>,
) -> Result<CollectionCheck> {
    let db = scratch_db(prefix, &e.db);
    let mut spec = collection_spec(scratch, &db, &e.name).await?;
    let (mut read, mut refused) = (read, None);
    if spec.is_some() && e.kind != "view" {
        if read.is_none() {
            read = Some(read_back(e, scratch, &db).await?);
        }
        // The restore held the copy's expiry off so that nothing was deleted before its
        // documents were read back (they have been now); the recorded values go on before
        // the options and indexes are compared.
        match crate::restore::apply_expiry(scratch, &db, &e.name, e).await {
            Ok(false) => {}
            Ok(true) => spec = collection_spec(scratch, &db, &e.name).await?,
            Err(err) => refused = Some(err),
        }
    }
    let mut c = check_collection(e, scratch, &db, spec.as_ref(), read).await?;
    if let Some(err) = refused {
        c.problems.push(format!(
            "expiry: the recorded expireAfterSeconds was refused: {err}"
        ));
    }
    tracing::info!(collection = %format!("{}.{}", e.db, e.name), problems = c.problems.len(), "collection compared");
    Ok(c)
}

/// The type and options `listCollections` gives `db.name`, if it exists.
async fn collection_spec(
    scratch: &Source,
    db: &str,
    name: &str,
) -> Result<Option<(String, Document)>> {
    Ok(scratch
        .list_collections_where(db, doc! {"name": name})
        .await?
        .into_iter()
        .next()
        .map(|s| (s.kind, s.options)))
}

/// Compare `e` with what the scratch server has: `spec` its type and options (`None`:
/// missing), `read` its documents' count and digest (`None` for a view).
async fn check_collection(
    e: &CollectionEntry,
    scratch: &Source,
    db: &str,
    spec: Option<&(String, Document)>,
    read: Option<(u64, ContentDigest)>,
) -> Result<CollectionCheck> {
    let mut c = CollectionCheck::new(e);
    let Some((kind, options)) = spec else {
        c.problems.push(format!(
            "missing: no {} {}.{} on the scratch server",
            e.kind, db, e.name
        ));
        return Ok(c);
    };
    if *kind != e.kind {
        c.problems
            .push(format!("type: expected {}, found {kind}", e.kind));
    }
    let found = ext(options);
    if found != e.options {
        c.problems
            .push(format!("options: expected {}, found {found}", e.options));
    }
    if e.kind == "view" {
        return Ok(c);
    }
    // `check_one` has read every collection that exists back.
    let Some((count, digest)) = read else {
        return Ok(c);
    };
    c.count_actual = Some(count);
    c.digest_actual = Some(digest.to_hex());
    if count != e.count {
        c.problems
            .push(format!("count: expected {}, found {count}", e.count));
    }
    if digest.to_hex() != e.content_digest {
        c.problems.push(format!(
            "content digest: expected {}, found {}",
            e.content_digest,
            digest.to_hex()
        ));
    }
    let indexes = scratch.list_indexes(db, &e.name).await?;
    c.problems.extend(index_differences(&e.indexes, &indexes));
    Ok(c)
}

/// What differs between the recorded index specs and the server's, by index name.
pub fn index_differences(expected: &[serde_json::Value], actual: &[Document]) -> Vec<String> {
    let name = |v: &serde_json::Value| {
        v.get("name")
            .and_then(|n| n.as_str())
            .unwrap_or("?")
            .to_string()
    };
    let want: BTreeMap<String, &serde_json::Value> =
        expected.iter().map(|v| (name(v), v)).collect();
    let have: BTreeMap<String, serde_json::Value> = actual
        .iter()
        .map(|d| {
            let mut d = d.clone();
            d.remove("ns");
            ext(&d)
        })
        .map(|v| (name(&v), v))
        .collect();
    let mut out = Vec::new();
    for (n, w) in &want {
        let mut w = (*w).clone();
        if let Some(o) = w.as_object_mut() {
            o.remove("ns");
        }
        match have.get(n) {
            None => out.push(format!("index {n}: missing")),
            Some(h) if *h != w => out.push(format!("index {n}: expected {w}, found {h}")),
            Some(_) => {}
        }
    }
    for n in have.keys().filter(|n| !want.contains_key(*n)) {
        out.push(format!("index {n}: not in the snapshot"));
    }
    out
}

pub use crate::source::RANGE_BYTES;

/// [`digest_of`] for a collection of about `bson_bytes`: one larger than twice
/// `range_bytes` is cut into `_id` ranges of about that size (the server's split points)
/// read by several cursors at once, one per core, each summing its own digest; the partial
/// digests add up to the collection's. The server then scans with more than one thread, and
/// the hashing runs on more than one core. Returns the count, the digest and the number of
/// ranges read.
///
/// # Errors
/// The server failed.
pub async fn digest_in_ranges(
    server: &Source,
    db: &str,
    coll: &str,
    bson_bytes: u64,
    range_bytes: u64,
) -> Result<(u64, ContentDigest, usize)> {
    let splits = if bson_bytes > 2 * range_bytes {
        server.split_points(db, coll, range_bytes).await
    } else {
        Vec::new()
    };
    if splits.is_empty() {
        let (n, d) = digest_of(server, db, coll).await?;
        return Ok((n, d, 1));
    }
    let ranges = crate::source::IdRange::between(splits);
    let count = ranges.len();
    let readers = readers();
    let parts = crate::source::for_each_range(ranges, readers, |range| {
        let (server, db, coll) = (server.clone(), db.to_string(), coll.to_string());
        async move { digest_range(&server, &db, &coll, &range).await }
    })
    .await?;
    let (n, d) = sum(parts);
    Ok((n, d, count))
}

/// Readers of a collection's ranges at once: one per core, 2 to 8.
fn readers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(2, 8)
}

/// The count and digest of a collection from those of its ranges.
fn sum(parts: impl IntoIterator<Item = (u64, ContentDigest)>) -> (u64, ContentDigest) {
    let mut total = (0u64, ContentDigest::new());
    for (n, d) in parts {
        total.0 += n;
        total.1.merge(&d);
    }
    total
}

/// [`digest_of`] for a collection whose record ids should run from 1 to `count` (one just
/// loaded into a fresh collection): `parts` ranges of its natural order
/// ([`crate::source::RecordRange`]), one reader per core, each summing its own digest.
/// `Ok(None)` when the record ids are not that run (checked before reading, by two cheap
/// commands, and after, by the ranges tiling the collection: each ended on the record id
/// the next started after), so that no document is missed or read twice; the caller then
/// reads `_id` ranges.
///
/// # Errors
/// The server failed or refused a range.
pub async fn digest_in_record_ranges(
    server: &Source,
    db: &str,
    coll: &str,
    count: u64,
    parts: usize,
) -> Result<Option<(u64, ContentDigest, usize)>> {
    use crate::source::RecordRange;
    if !server.records_dense(db, coll, count).await {
        tracing::debug!(ns = %format!("{db}.{coll}"), "record ids are not 1 to the count; reading _id ranges");
        return Ok(None);
    }
    let ranges = RecordRange::split(count, parts);
    let n = ranges.len();
    let readers = readers();
    let read = crate::source::for_each_range(ranges, readers, |range| {
        let (server, db, coll) = (server.clone(), db.to_string(), coll.to_string());
        async move {
            let (db_, coll_) = (db.clone(), coll.clone());
            let (sum, last) = digest_read(&db, &coll, move |tx, cancel| async move {
                server
                    .record_batches(&db_, &coll_, range, tx, &cancel)
                    .await
            })
            .await?;
            Ok((range, last, sum))
        }
    })
    .await?;
    let ends: Vec<_> = read.iter().map(|(r, last, _)| (*r, *last)).collect();
    if !RecordRange::tile(&ends) {
        tracing::debug!(ns = %format!("{db}.{coll}"), "record ranges do not tile; reading _id ranges");
        return Ok(None);
    }
    let (count, digest) = sum(read.into_iter().map(|(_, _, s)| s));
    Ok(Some((count, digest, n)))
}

/// Count and content digest of a collection, read as raw BSON through one cursor.
///
/// # Errors
/// The server failed.
pub async fn digest_of(server: &Source, db: &str, coll: &str) -> Result<(u64, ContentDigest)> {
    digest_range(server, db, coll, &crate::source::IdRange::default()).await
}

async fn digest_range(
    server: &Source,
    db: &str,
    coll: &str,
    range: &crate::source::IdRange,
) -> Result<(u64, ContentDigest)> {
    let (server, db_, coll_, range) = (
        server.clone(),
        db.to_string(),
        coll.to_string(),
        range.clone(),
    );
    let (sum, ()) = digest_read(db, coll, move |tx, cancel| async move {
        server
            .range_batches(&db_, &coll_, &range, tx, &cancel)
            .await
    })
    .await?;
    Ok(sum)
}

/// Count and digest of the batches that `read` sends (given the sender and a token that
/// tells it to stop), with what `read` returned.
async fn digest_read<R, F, Fut>(db: &str, coll: &str, read: F) -> Result<((u64, ContentDigest), R)>
where
    F: FnOnce(mpsc::Sender<crate::source::RawBatch>, CancellationToken) -> Fut,
    Fut: std::future::Future<Output = Result<R>> + Send + 'static,
    R: Send + 'static,
{
    // The reader is a task of its own, so that it takes the server's next batch off the
    // socket while this one is hashed (in the same task, the server stalls on a full socket
    // buffer until the hashing ends); batches are hashed in place (no copy), two at once.
    let (tx, rx) = mpsc::channel::<crate::source::RawBatch>(2);
    let cancel = CancellationToken::new();
    let reader = tokio::spawn(read(tx, cancel.clone()));
    let mut rx = rx;
    let sums = futures::stream::poll_fn(|cx| rx.poll_recv(cx))
        .map(|batch| {
            let (db, coll) = (db.to_string(), coll.to_string());
            async move {
                tokio::task::spawn_blocking(move || {
                    let docs = crate::source::batch_documents(&batch, &db, &coll)?
                        .collect::<Result<Vec<&[u8]>>>()?;
                    let mut digest = ContentDigest::new();
                    digest.add_documents(docs.iter().copied());
                    Ok::<_, Error>((docs.len() as u64, digest))
                })
                .await
                .unwrap_or_else(|e| Err(task_failed(e)))
            }
        })
        .buffer_unordered(2)
        .try_fold(
            (0u64, ContentDigest::new()),
            |(n, mut digest), (pn, pd)| async move {
                digest.merge(&pd);
                Ok::<_, Error>((n + pn, digest))
            },
        )
        .await;
    // The reader has ended, or stops now (a hashing failure).
    cancel.cancel();
    drop(rx);
    let read = reader.await.unwrap_or_else(|e| Err(task_failed(e)));
    match (sums, read) {
        (Err(e), _) | (Ok(_), Err(e)) => Err(e),
        (Ok(s), Ok(r)) => Ok((s, r)),
    }
}

fn task_failed(e: tokio::task::JoinError) -> Error {
    Error::Format {
        what: "a read-back task".into(),
        detail: e.to_string(),
    }
}

/// How the live source differs from the snapshot now, by count per collection: drift, not
/// failure (the source keeps changing after a backup).
///
/// # Errors
/// The source failed.
pub async fn source_drift(manifest: &Manifest, source: &Source) -> Result<Vec<Drift>> {
    let mut out = Vec::new();
    for e in manifest
        .collections
        .iter()
        .filter(|e| e.kind != "view" && !skipped(e))
    {
        let coll = e.stored_from.clone().unwrap_or_else(|| e.name.clone());
        let now = source
            .client()
            .database(&e.db)
            .collection::<Document>(&coll)
            .count_documents(doc! {})
            .await
            .map_err(|err| classify(&source.info.uri, &format!("counting {}.{coll}", e.db), err))?;
        out.push(Drift {
            db: e.db.clone(),
            name: e.name.clone(),
            snapshot_count: e.count,
            source_count: now,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_differences_name_missing_changed_and_extra_indexes() {
        let spec = |name: &str, unique: bool| doc! { "v": 2, "key": { "a": 1 }, "name": name, "unique": unique };
        let expected: Vec<serde_json::Value> = [spec("a_1", true), spec("b_1", false)]
            .iter()
            .map(ext)
            .collect();
        assert!(index_differences(&expected, &[spec("a_1", true), spec("b_1", false)]).is_empty());
        let d = index_differences(&expected, &[spec("a_1", false), spec("c_1", false)]);
        assert_eq!(d.len(), 3, "{d:?}");
        assert!(d[0].starts_with("index a_1: expected"), "{d:?}");
        assert_eq!(d[1], "index b_1: missing");
        assert_eq!(d[2], "index c_1: not in the snapshot");
    }
}

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
use crate::source::{classify, RecordRange, Source};
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
    /// Count and digest one range of records that are committed (the collection may still
    /// be loading).
    ReadRange(usize, RecordRange),
}

/// [`compare`] while the restore runs: each collection's documents are read back as soon
/// as the restore says they are all in ([`RestoreEvent::Loaded`], while its indexes
/// build), and the rest is checked when it is restored ([`RestoreEvent::Restored`]);
/// `parallel` jobs at a time. A large plain collection is read in ranges of records while
/// it still loads, each as soon as the restore says its records are committed
/// ([`RestoreEvent::Committed`]), so that little is left to read once the last one is in.
/// When the channel closes (the restore ended) whatever was not announced (views, for one)
/// is checked. Returns the checks in manifest order.
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
    let ns = |i: usize| format!("{}.{}", entries[i].db, entries[i].name);
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
                Job::ReadRange(i, range) => {
                    let e: &CollectionEntry = entries[i];
                    running.push(
                        async move {
                            let db = scratch_db(prefix, &e.db);
                            let stored = e.stored_from.as_deref().unwrap_or(&e.name);
                            let r = read_record_range(scratch, &db, stored, range).await;
                            (i, Ok(Outcome::Range(range, r)))
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
                Outcome::Range(range, r) => {
                    if let Some(ranges) = state[i].ranges.as_mut() {
                        ranges.ended(range, r, &ns(i));
                    }
                    state[i].finish_ranges(i, &ns(i), &mut queue);
                }
            },
            msg = events.recv(), if open => match msg {
                Some(RestoreEvent::Committed { db, name, documents }) => {
                    if let Some(i) = position(&db, &name) {
                        state[i].committed(i, entries[i], documents, &mut queue);
                    }
                }
                Some(RestoreEvent::Loaded { db, name }) => {
                    if let Some(i) = position(&db, &name) {
                        state[i].loaded(i, &ns(i), &mut queue);
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
                        x.loaded(i, &ns(i), &mut queue);
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
    /// The record ranges read while the collection loads, if it is read so.
    ranges: Option<Ranges>,
    /// Count and digest, once read back.
    read: Option<(u64, ContentDigest)>,
    restored: bool,
    check_queued: bool,
}

impl State {
    /// The restore says the first `documents` records of `e`'s copy are committed: start
    /// reading it in record ranges (a large plain collection), and queue the ranges that
    /// are now wholly committed.
    fn committed(
        &mut self,
        i: usize,
        e: &CollectionEntry,
        documents: u64,
        queue: &mut std::collections::VecDeque<Job>,
    ) {
        if self.ranges.is_none() && !self.read_queued {
            let Some(parts) = record_parts(e) else { return };
            self.read_queued = true;
            self.ranges = Some(Ranges::new(RecordRange::split(e.count, parts)));
        }
        let Some(ranges) = self.ranges.as_mut() else {
            return;
        };
        let before = ranges.queued;
        ranges.queue_while(queue, i, |r| {
            r.limit
                .is_some_and(|l| u64::try_from(r.after + l).is_ok_and(|end| end <= documents))
        });
        if documents < e.count {
            ranges.early += ranges.queued - before;
        }
    }

    /// Every document of the collection is in: queue the ranges not read yet.
    fn loaded(&mut self, i: usize, ns: &str, queue: &mut std::collections::VecDeque<Job>) {
        if let Some(ranges) = self.ranges.as_mut() {
            ranges.loaded = true;
            ranges.queue_while(queue, i, |_| true);
        }
        self.finish_ranges(i, ns, queue);
    }

    /// Once every range has been read (or one failed), take the count and digest they
    /// sum to if they tile the collection; otherwise read it back whole.
    fn finish_ranges(&mut self, i: usize, ns: &str, queue: &mut std::collections::VecDeque<Job>) {
        let Some(ranges) = self.ranges.as_ref() else {
            return;
        };
        if !ranges.loaded || ranges.reading() > 0 || ranges.unqueued() > 0 && !ranges.failed {
            return;
        }
        let ranges = self.ranges.take().expect("checked");
        match ranges.sum(ns) {
            Some(read) => {
                self.read = Some(read);
                self.check_when_ready(i, queue);
            }
            None => queue.push_back(Job::ReadBack(i)),
        }
    }

    /// Queue the check of a restored collection once its read-back (if any) has ended.
    fn check_when_ready(&mut self, i: usize, queue: &mut std::collections::VecDeque<Job>) {
        if self.restored && !self.check_queued && !(self.read_queued && self.read.is_none()) {
            self.check_queued = true;
            queue.push_back(Job::Check(i));
        }
    }
}

/// The record ranges of one collection, read while it loads ([`State::committed`]).
#[derive(Debug, Clone)]
struct Ranges {
    planned: Vec<RecordRange>,
    /// Planned ranges queued so far (the first ones).
    queued: usize,
    /// Queued ranges that have been read or failed.
    ended: usize,
    /// Each range read.
    read: Vec<RangeRead>,
    /// A range failed (the server refused to start at its record id, say): the collection
    /// is read back whole instead.
    failed: bool,
    /// The collection is wholly loaded.
    loaded: bool,
    /// Ranges queued while some of the collection's records were not committed yet.
    early: usize,
}

impl Ranges {
    fn new(planned: Vec<RecordRange>) -> Self {
        Self {
            planned,
            queued: 0,
            ended: 0,
            read: Vec::new(),
            failed: false,
            loaded: false,
            early: 0,
        }
    }

    /// Queue the next planned ranges of collection `i` while `ready` says so.
    fn queue_while(
        &mut self,
        queue: &mut std::collections::VecDeque<Job>,
        i: usize,
        ready: impl Fn(&RecordRange) -> bool,
    ) {
        while !self.failed && self.queued < self.planned.len() && ready(&self.planned[self.queued])
        {
            queue.push_back(Job::ReadRange(i, self.planned[self.queued]));
            self.queued += 1;
        }
    }

    fn reading(&self) -> usize {
        self.queued - self.ended
    }

    fn unqueued(&self) -> usize {
        self.planned.len() - self.queued
    }

    /// A range has been read (its last record id, count and digest), or failed.
    fn ended(
        &mut self,
        range: RecordRange,
        r: Result<(Option<i64>, (u64, ContentDigest))>,
        ns: &str,
    ) {
        self.ended += 1;
        match r {
            Ok((last, sum)) => self.read.push((range, last, sum)),
            Err(e) => {
                tracing::debug!(ns, error = %e, "a record range failed; reading the collection back whole");
                self.failed = true;
            }
        }
    }

    /// The count and digest of the collection, when every range was read and they tile it.
    fn sum(self, ns: &str) -> Option<(u64, ContentDigest)> {
        if self.failed || self.read.len() != self.planned.len() {
            return None;
        }
        let n = self.read.len();
        match tiled_sum(self.read) {
            Ok(sum) => {
                tracing::debug!(
                    ns,
                    ranges = n,
                    early = self.early,
                    "read back in record ranges while loading"
                );
                Some(sum)
            }
            Err(why) => {
                tracing::debug!(
                    ns,
                    why,
                    "record ranges read while loading: reading the collection back whole"
                );
                None
            }
        }
    }
}

/// One record range as read: the range, the last record id the server read in it, and its
/// count and digest.
type RangeRead = (RecordRange, Option<i64>, (u64, ContentDigest));

/// The count and digest of a collection read in record ranges, when the ranges can be
/// trusted to have read each of its documents once: they tile it, and each bounded range
/// holds as many records as it asked for. A range read across a record that was not
/// visible yet holds fewer, and ends further on unless nothing after it was visible either.
fn tiled_sum(read: Vec<RangeRead>) -> std::result::Result<(u64, ContentDigest), &'static str> {
    if read
        .iter()
        .any(|(r, _, (n, _))| r.limit.is_some_and(|l| u64::try_from(l) != Ok(*n)))
    {
        return Err("a range holds fewer records than it asked for");
    }
    let ends: Vec<_> = read.iter().map(|(r, last, _)| (*r, *last)).collect();
    if !RecordRange::tile(&ends) {
        return Err("the ranges do not tile the collection");
    }
    Ok(sum(read.into_iter().map(|(_, _, s)| s)))
}

/// What a job of [`compare_as_restored`] produced.
enum Outcome {
    Read((u64, ContentDigest)),
    Checked(CollectionCheck),
    /// A record range read (its last record id, count and digest), or why not.
    Range(RecordRange, Result<(Option<i64>, (u64, ContentDigest))>),
}

/// The number of record ranges to read `e`'s restored copy in: a plain collection larger
/// than two ranges (its records are numbered in the order they were inserted).
fn record_parts(e: &CollectionEntry) -> Option<usize> {
    let range_bytes = crate::source::range_bytes();
    let plain = e.kind == "collection"
        && e.stored_from.is_none()
        && e.options.get("clusteredIndex").is_none();
    (plain && e.bson_bytes > 2 * range_bytes).then(|| e.bson_bytes.div_ceil(range_bytes) as usize)
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
    if let Some(parts) = record_parts(e) {
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
            let (last, sum) = read_record_range(&server, &db, &coll, range).await?;
            Ok((range, last, sum))
        }
    })
    .await?;
    match tiled_sum(read) {
        Ok((count, digest)) => Ok(Some((count, digest, n))),
        Err(why) => {
            tracing::debug!(ns = %format!("{db}.{coll}"), why, "record ranges: reading _id ranges");
            Ok(None)
        }
    }
}

/// The last record id the server read in `range` of `db.coll`, and the range's count and
/// digest.
///
/// # Errors
/// The server failed or refused the range.
async fn read_record_range(
    server: &Source,
    db: &str,
    coll: &str,
    range: RecordRange,
) -> Result<(Option<i64>, (u64, ContentDigest))> {
    let (server, db_, coll_) = (server.clone(), db.to_string(), coll.to_string());
    let (sum, last) = digest_read(db, coll, move |tx, cancel| async move {
        server
            .record_batches(&db_, &coll_, range, tx, &cancel)
            .await
    })
    .await?;
    Ok((last, sum))
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

    /// A plain collection of 1,000 documents and ten default ranges' worth of BSON.
    fn large() -> CollectionEntry {
        let bytes = 10 * crate::source::range_bytes();
        serde_json::from_value(serde_json::json!({
            "db": "d", "name": "c", "type": "collection", "options": {}, "indexes": [],
            "uuid": null, "count": 1000, "bson_bytes": bytes, "content_digest": "",
            "codec": "gzip", "parts": 1, "objects": []
        }))
        .unwrap()
    }

    fn digest_of_range(r: RecordRange) -> ContentDigest {
        let mut d = ContentDigest::new();
        d.add_document(&r.after.to_le_bytes());
        d
    }

    /// Read the queued ranges as the server would: each ending `extra` record ids past
    /// where a dense run ends (0: it tiles), the last one on record 1,000.
    fn read_queued(st: &mut State, queue: &mut VecDeque<Job>, extra: i64) -> Vec<RecordRange> {
        let mut read = Vec::new();
        while let Some(Job::ReadRange(i, r)) = queue.front().copied() {
            queue.pop_front();
            let last = r.limit.map_or(1000, |l| r.after + l + extra);
            let n = r.limit.map_or(1000 - r.after, |l| l) as u64;
            st.ranges
                .as_mut()
                .unwrap()
                .ended(r, Ok((Some(last), (n, digest_of_range(r)))), "d.c");
            st.finish_ranges(i, "d.c", queue);
            read.push(r);
        }
        read
    }

    use std::collections::VecDeque;

    /// Nothing was summed, and the collection is queued to be read back whole.
    #[track_caller]
    fn read_back_whole(st: &State, queue: &mut VecDeque<Job>) {
        assert_eq!(st.read, None);
        assert!(
            matches!(queue.pop_front(), Some(Job::ReadBack(0))),
            "{queue:?}"
        );
        assert!(queue.is_empty(), "{queue:?}");
    }

    #[test]
    fn committed_ranges_are_read_as_they_commit_and_summed_once_they_tile() {
        let e = large();
        let (mut st, mut queue) = (State::default(), VecDeque::new());
        st.committed(0, &e, 199, &mut queue);
        assert_eq!(
            queue.len(),
            1,
            "only records 1 to 100 are wholly committed: {queue:?}"
        );
        st.committed(0, &e, 200, &mut queue);
        assert_eq!(queue.len(), 2, "records 101 to 200 are too: {queue:?}");
        st.committed(0, &e, 250, &mut queue);
        // Only the ranges wholly within the first 250 records.
        let first = read_queued(&mut st, &mut queue, 0);
        assert_eq!(
            first.iter().map(|r| (r.after, r.limit)).collect::<Vec<_>>(),
            [(0, Some(100)), (100, Some(100))]
        );
        st.committed(0, &e, 299, &mut queue);
        assert!(queue.is_empty(), "{queue:?}");
        assert_eq!(st.ranges.as_ref().unwrap().early, 2);
        st.restored = true;
        st.loaded(0, "d.c", &mut queue);
        let rest = read_queued(&mut st, &mut queue, 0);
        assert_eq!(rest.len(), 8);
        assert_eq!(rest.last().unwrap().limit, None);
        let mut expected = ContentDigest::new();
        for r in first.iter().chain(&rest) {
            expected.merge(&digest_of_range(*r));
        }
        assert_eq!(st.read, Some((1000, expected)));
        assert!(
            matches!(queue.pop_front(), Some(Job::Check(0))),
            "{queue:?}"
        );
        assert!(queue.is_empty());
    }

    #[test]
    fn ranges_that_do_not_tile_or_fail_leave_the_collection_to_be_read_back_whole() {
        let e = large();
        // A range read past a record not yet visible ends on a later record id.
        let (mut st, mut queue) = (State::default(), VecDeque::new());
        st.committed(0, &e, 250, &mut queue);
        read_queued(&mut st, &mut queue, 1);
        st.loaded(0, "d.c", &mut queue);
        read_queued(&mut st, &mut queue, 0);
        read_back_whole(&st, &mut queue);

        // A range that tiles but holds fewer records than planned (read across a record
        // not yet visible, with nothing visible after it).
        let (mut st, mut queue) = (State::default(), VecDeque::new());
        st.committed(0, &e, 100, &mut queue);
        let Some(Job::ReadRange(_, r)) = queue.pop_front() else {
            panic!("{queue:?}")
        };
        st.ranges
            .as_mut()
            .unwrap()
            .ended(r, Ok((Some(100), (99, digest_of_range(r)))), "d.c");
        st.loaded(0, "d.c", &mut queue);
        read_queued(&mut st, &mut queue, 0);
        read_back_whole(&st, &mut queue);

        // A range the server refused: nothing more is queued, and once the ranges under way
        // have ended and the load has, the collection is read back whole.
        let (mut st, mut queue) = (State::default(), VecDeque::new());
        st.committed(0, &e, 250, &mut queue);
        let Some(Job::ReadRange(_, r)) = queue.pop_front() else {
            panic!("{queue:?}")
        };
        st.ranges
            .as_mut()
            .unwrap()
            .ended(r, Err(Error::Cancelled), "d.c");
        st.finish_ranges(0, "d.c", &mut queue);
        st.loaded(0, "d.c", &mut queue);
        assert_eq!(
            queue.len(),
            1,
            "only the range already under way: {queue:?}"
        );
        read_queued(&mut st, &mut queue, 0);
        read_back_whole(&st, &mut queue);
    }

    #[test]
    fn small_or_not_plain_collections_are_not_read_while_loading() {
        let mut queue = VecDeque::new();
        let mut small = large();
        small.bson_bytes = crate::source::range_bytes();
        let mut series = large();
        series.stored_from = Some("system.buckets.c".into());
        for e in [small, series] {
            let mut st = State::default();
            st.committed(0, &e, 1000, &mut queue);
            assert!(queue.is_empty() && st.ranges.is_none() && !st.read_queued);
        }
    }

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

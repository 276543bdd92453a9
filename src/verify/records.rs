//! Reading a restored collection back in parts of its natural order ([`RecordRange`]),
//! after its load or while it loads.
//!
//! A plain collection loaded into a fresh scratch collection gets record ids 1, 2, 3, ...
//! in the order its documents go in, so its natural order can be cut into parts of record
//! ids, each read by the server's resumable collection scan: cheaper for the server than
//! `_id` ranges (an index lookup per document, in `_id` order, not the order on disk).
//! Whatever was read is trusted only when the record ids run from 1 to the manifest's
//! count (two cheap commands, once the collection is loaded) and the parts tile the
//! collection (each ended on the record id the next starts after). A part reads `limit`
//! documents, so ending on its last record id means it read each of its ids once: no
//! document is missed or read twice. Otherwise the caller reads `_id` ranges.
//!
//! A large collection is read while the restore still loads it: each part as soon as the
//! restore has inserted well past its end. Its pages are then likely still in the server's
//! cache (read after the load they come from the files and are decompressed again), and
//! the read-back is no longer the last seconds of the run. A part read early that did not
//! end on its last record id (an insert still in flight inside it, or not yet made) is
//! read again once the collection is loaded, with the parts not reached by then.

use tokio::sync::watch;

use super::compare::{digest_in_ranges, digest_read, readers, sum};
use crate::digest::ContentDigest;
use crate::manifest::CollectionEntry;
use crate::source::{range_bytes, RecordRange, Source};
use crate::Result;

/// How far the restore of one collection is.
#[derive(Debug, Clone, Copy, Default)]
pub struct Loading {
    /// Documents inserted (acknowledged) so far.
    pub inserted: u64,
    /// Every document is in.
    pub loaded: bool,
}

/// One [`RecordRange`] that was read: the range, the last record id the server reported,
/// and the count and digest of its documents.
pub type ReadRange = (RecordRange, Option<i64>, (u64, ContentDigest));

/// Whether `e` is read back while it loads: a plain collection (integer record ids given
/// in insertion order; not capped, which may delete as it loads) of more than two parts.
pub(super) fn eligible(e: &CollectionEntry) -> bool {
    let flag = |k: &str| {
        e.options
            .get(k)
            .is_some_and(|v| !v.is_null() && *v != false)
    };
    e.kind == "collection"
        && e.stored_from.is_none()
        && !flag("clusteredIndex")
        && !flag("capped")
        && e.bson_bytes > 2 * range_bytes()
}

/// [`super::digest_of`] for a collection whose record ids should run from 1 to `count`
/// (one just loaded into a fresh collection): `parts` ranges of its natural order, one
/// reader per core, each summing its own digest. `Ok(None)` when the record ids are not
/// that run (see the module's documentation); the caller then reads `_id` ranges.
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
    let ranges = RecordRange::split(count, parts);
    let n = ranges.len();
    let sum = digest_rest_of_record_ranges(server, db, coll, count, Vec::new(), ranges).await?;
    Ok(sum.map(|(count, digest)| (count, digest, n)))
}

/// Read the limited ranges of `ranges` (all but the last, which runs to the end) while
/// `progress` says the collection loads, each once half a part of documents past its end
/// is inserted (the inserts still in flight are behind that). Returns the parts that read
/// exactly their record ids, and the ranges left for when the collection is loaded (those
/// not reached before it was, and those that read anything else). Returns when every
/// limited range was tried or the collection is loaded (or the restore ended).
pub async fn read_record_ranges_while_loading(
    server: &Source,
    db: &str,
    coll: &str,
    ranges: Vec<RecordRange>,
    progress: &mut watch::Receiver<Loading>,
) -> (Vec<ReadRange>, Vec<RecordRange>) {
    let (mut read, mut rest) = (Vec::with_capacity(ranges.len()), Vec::new());
    let mut loaded = false;
    for range in ranges {
        let Some(limit) = range.limit.filter(|_| !loaded) else {
            rest.push(range);
            continue;
        };
        let wanted = u64::try_from(range.after + limit + limit / 2).unwrap_or(u64::MAX);
        // A closed channel: the restore ended, loaded or failed (then nothing is compared).
        loaded = progress
            .wait_for(|p| p.loaded || p.inserted >= wanted)
            .await
            .map_or(true, |p| p.loaded);
        if loaded {
            rest.push(range);
            continue;
        }
        match read_record_range(server, db, coll, range).await {
            Ok(r) if exactly_its_ids(&r) => read.push(r),
            Ok(_) => rest.push(range),
            Err(err) => {
                tracing::debug!(ns = %format!("{db}.{coll}"), error = %err, "a part read while loading failed; reading it again when loaded");
                rest.push(range);
            }
        }
    }
    (read, rest)
}

/// Finish reading a loaded collection whose record ids should run from 1 to `count`: the
/// ranges `read` already, and `rest`, read now (one reader per core). `Ok(None)` when the
/// record ids are not that run or the ranges do not tile the collection.
///
/// # Errors
/// The server failed or refused a range.
pub async fn digest_rest_of_record_ranges(
    server: &Source,
    db: &str,
    coll: &str,
    count: u64,
    mut read: Vec<ReadRange>,
    rest: Vec<RecordRange>,
) -> Result<Option<(u64, ContentDigest)>> {
    let ns = || format!("{db}.{coll}");
    if !server.records_dense(db, coll, count).await {
        tracing::debug!(ns = %ns(), "record ids are not 1 to the count; reading _id ranges");
        return Ok(None);
    }
    let early = read.len();
    read.extend(
        crate::source::for_each_range(rest, readers(), |range| {
            read_record_range(server, db, coll, range)
        })
        .await?,
    );
    let ends: Vec<_> = read.iter().map(|(r, last, _)| (*r, *last)).collect();
    if !RecordRange::tile(&ends) {
        tracing::debug!(ns = %ns(), "record ranges do not tile; reading _id ranges");
        return Ok(None);
    }
    tracing::debug!(ns = %ns(), ranges = read.len(), early, "read back in record ranges");
    Ok(Some(sum(read.into_iter().map(|(_, _, s)| s))))
}

/// Count and content digest of the restored collection `e` (one that is [`eligible`]) in
/// database `db` of `scratch`, read in parts as `progress` says the restore inserts them.
/// Returns once the collection is loaded and read.
///
/// # Errors
/// The scratch server failed.
pub(super) async fn read_back_while_loading(
    e: &CollectionEntry,
    scratch: &Source,
    db: &str,
    mut progress: watch::Receiver<Loading>,
) -> Result<(u64, ContentDigest)> {
    let coll = e.name.as_str();
    let ranges = RecordRange::split(e.count, e.bson_bytes.div_ceil(range_bytes()) as usize);
    let (read, rest) =
        read_record_ranges_while_loading(scratch, db, coll, ranges, &mut progress).await;
    let _ = progress.wait_for(|p| p.loaded).await;
    match digest_rest_of_record_ranges(scratch, db, coll, e.count, read, rest).await {
        Ok(Some(sum)) => return Ok(sum),
        Ok(None) => {}
        Err(err) => {
            tracing::debug!(ns = %format!("{db}.{coll}"), error = %err, "record ranges failed; reading _id ranges");
        }
    }
    let (count, digest, _) =
        digest_in_ranges(scratch, db, coll, e.bson_bytes, range_bytes()).await?;
    Ok((count, digest))
}

/// Whether a limited range read exactly its record ids: `limit` documents, the last at
/// record id `after + limit` (the scan returns ids after `after` in increasing order, each
/// once). One read while inserts are in flight may have skipped an id not yet committed.
fn exactly_its_ids((range, last, (n, _)): &ReadRange) -> bool {
    range
        .limit
        .is_some_and(|limit| *last == Some(range.after + limit) && i64::try_from(*n) == Ok(limit))
}

/// Read one record range of `db.coll` (a future of its own, to run as a task).
fn read_record_range(
    server: &Source,
    db: &str,
    coll: &str,
    range: RecordRange,
) -> impl std::future::Future<Output = Result<ReadRange>> + Send + 'static {
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
}

//! Reading `local.oplog.rs` from a position until a stop position, and storing the selected
//! entries as one object: raw BSON entries, gzip, sha256 and size computed while streaming.
//!
//! ```text
//! tailable cursor (raw batches) ──▶ filter (selection) ──▶ gzip ──▶ sha256 ──▶ StreamUpload
//! ```
//!
//! The cursor is tailable and awaits data, so a capture can start before its stop position
//! is known (a snapshot's stop position is read only after the dump) and follows the oplog
//! meanwhile, which also keeps the entries from rolling over during a long dump. A forward
//! read of the oplog never returns an entry before every earlier one is visible, so once
//! the stop position has been read, everything before it has been too.

use std::collections::BTreeSet;
use std::io::Write;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use flate2::write::GzEncoder;
use futures::StreamExt;
use mongodb::bson::{doc, Document, RawBsonRef};
use mongodb::options::CursorType;
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::entry::{self, Kept, NsFilter};
use super::optime::{describe, to_ts};
use crate::manifest::{OpTime, OplogRecord, StoredObject};
use crate::repository::Repository;
use crate::source::{classify, Source};
use crate::storage::upload::{StreamUpload, UploadConfig};
use crate::{Error, Result};

/// Compressed bytes are handed to the upload in pieces of about this size.
const FLUSH_BYTES: usize = 1 << 20;
/// How long a capture waits for the stop position to appear before giving up.
const STOP_TIMEOUT: Duration = Duration::from_secs(120);

/// What to capture.
#[derive(Debug, Clone)]
pub struct CaptureSpec {
    /// The object to write.
    pub key: String,
    /// Start here: entries after `from` are stored; the entry at `from` itself is only read
    /// (it proves the oplog still reaches back that far).
    pub from: OpTime,
    /// Which entries to keep.
    pub filter: NsFilter,
    /// Upload tuning.
    pub upload: UploadConfig,
}

/// A finished capture.
#[derive(Debug, Clone)]
pub struct Captured {
    /// The stored object and what it covers.
    pub record: OplogRecord,
    /// The first position the oplog returned at or after `from`: later than `from` when
    /// the oplog no longer holds it (it rolled over).
    pub first_read: Option<OpTime>,
}

impl Captured {
    /// Whether the oplog still held the start position: no operation was lost.
    pub fn contiguous(&self) -> bool {
        self.first_read == Some(self.record.from)
    }
}

/// gzip + sha256 + upload of a sequence of raw entries.
struct ObjectWriter {
    gz: GzEncoder<Vec<u8>>,
    sha: Sha256,
    upload: StreamUpload,
    size: u64,
}

impl ObjectWriter {
    fn new(repo: &Repository, key: &str, upload: UploadConfig) -> Self {
        Self {
            gz: GzEncoder::new(
                Vec::with_capacity(FLUSH_BYTES * 2),
                flate2::Compression::new(6),
            ),
            sha: Sha256::new(),
            upload: StreamUpload::new(repo.store().clone(), key, upload),
            size: 0,
        }
    }

    async fn write(&mut self, repo: &Repository, entry: &[u8]) -> Result<()> {
        self.gz
            .write_all(entry)
            .map_err(|e| Error::io("compressing the oplog", e))?;
        if self.gz.get_ref().len() >= FLUSH_BYTES {
            let out = std::mem::take(self.gz.get_mut());
            self.push(repo, &out).await?;
        }
        Ok(())
    }

    async fn push(&mut self, repo: &Repository, bytes: &[u8]) -> Result<()> {
        self.sha.update(bytes);
        self.size += bytes.len() as u64;
        self.upload.write(bytes).await.map_err(|e| repo.err(e))
    }

    async fn finish(mut self, repo: &Repository) -> Result<StoredObject> {
        let key = self.upload.key().to_string();
        let gz = std::mem::replace(
            &mut self.gz,
            GzEncoder::new(Vec::new(), flate2::Compression::none()),
        );
        let rest = gz
            .finish()
            .map_err(|e| Error::io("compressing the oplog", e))?;
        if let Err(e) = self.push(repo, &rest).await {
            let _ = self.upload.abort().await;
            return Err(e);
        }
        self.upload.finish().await.map_err(|e| repo.err(e))?;
        Ok(StoredObject {
            key,
            size: self.size,
            sha256: hex::encode(self.sha.finalize()),
        })
    }

    async fn abort(self) {
        if let Err(e) = self.upload.abort().await {
            tracing::warn!(error = %e, "could not abort the oplog upload; prune removes it later");
        }
    }
}

/// The counters of a capture in progress.
#[derive(Default)]
struct Progress {
    first_read: Option<OpTime>,
    /// The wall time of the entry at the start position, once read.
    from_wall: Option<DateTime<Utc>>,
    last_read: Option<OpTime>,
    last_wall: Option<DateTime<Utc>>,
    first: Option<OpTime>,
    last: Option<OpTime>,
    entries: u64,
    bson_bytes: u64,
    touched: BTreeSet<String>,
}

/// What to do with an entry the cursor returned.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// At or before a position already read: nothing to store.
    Skip,
    /// A new entry up to the stop position: filter it and store what is kept.
    Take,
    /// Past the stop position: everything up to it has been read.
    Done,
}

impl Progress {
    /// Account for the entry `h` that the cursor (reading forward from `from`) returned,
    /// with the stop position as it is now.
    fn read(&mut self, h: &entry::Head<'_>, from: OpTime, stop: Option<OpTime>) -> Step {
        if self.first_read.is_none() {
            self.first_read = Some(h.ts);
        }
        if h.ts == from {
            self.from_wall = h.wall;
        }
        if self.last_read.is_some_and(|l| h.ts <= l) || h.ts <= from {
            return Step::Skip;
        }
        if let Some(s) = stop {
            if h.ts > s {
                // A forward read returns entries in order, so nothing lies between the
                // last entry read and this one: the capture holds everything up to `s`.
                self.last_read = Some(self.last_read.unwrap_or(from).max(s));
                return Step::Done;
            }
        }
        self.last_read = Some(h.ts);
        self.last_wall = h.wall;
        Step::Take
    }

    /// The wall time of the capture's end: the last entry taken's, or with none taken (a
    /// dump during which nobody wrote, even when the cursor then returned a later writer's
    /// entry) the start entry's. It places wall-clock `--to-time`s within the end's second
    /// (without it, a time in the same second was refused as "before the consistency
    /// point").
    fn to_wall(&self) -> Option<DateTime<Utc>> {
        self.last_wall.or(self.from_wall)
    }
}

/// Capture the oplog from `spec.from` until the position `stop` announces (it may be
/// `None` at first and set later), storing the selected entries in `spec.key`.
///
/// # Errors
/// The source or the repository failed, the stop position never appeared, or `cancel`
/// fired ([`Error::Cancelled`]); the upload is aborted in every case.
pub async fn capture(
    source: &Source,
    repo: &Repository,
    spec: &CaptureSpec,
    mut stop: watch::Receiver<Option<OpTime>>,
    cancel: CancellationToken,
) -> Result<Captured> {
    let mut writer = ObjectWriter::new(repo, &spec.key, spec.upload);
    let mut p = Progress::default();
    let r = follow(source, repo, spec, &mut stop, &cancel, &mut writer, &mut p).await;
    if let Err(e) = r {
        writer.abort().await;
        return Err(e);
    }
    let object = writer.finish(repo).await?;
    let to = p.last_read.unwrap_or(spec.from);
    tracing::info!(key = %spec.key, entries = p.entries, to = %describe(to), "oplog stored");
    Ok(Captured {
        record: OplogRecord {
            object,
            from: spec.from,
            to,
            to_wall: p.to_wall(),
            first: p.first,
            last: p.last,
            entries: p.entries,
            bson_bytes: p.bson_bytes,
            namespaces: p.touched.into_iter().collect(),
        },
        first_read: p.first_read,
    })
}

/// Whether everything up to the stop position has been read. Not before the cursor has
/// returned its first entry: that entry (the one at the start position) proves the oplog
/// still reached back to the start, and gives the start's wall time. After it, nothing read
/// past the start counts as having read up to the start: a dump during which nobody wrote
/// (stop == start) is complete at once, instead of waiting for the next entry past it (on an
/// idle replica set, the primary's periodic no-op, up to 10 s or more away).
fn stop_reached(stop: &watch::Receiver<Option<OpTime>>, p: &Progress, from: OpTime) -> bool {
    p.first_read.is_some() && matches!(*stop.borrow(), Some(s) if p.last_read.unwrap_or(from) >= s)
}

async fn follow(
    source: &Source,
    repo: &Repository,
    spec: &CaptureSpec,
    stop: &mut watch::Receiver<Option<OpTime>>,
    cancel: &CancellationToken,
    writer: &mut ObjectWriter,
    p: &mut Progress,
) -> Result<()> {
    let oplog = source
        .client()
        .database("local")
        .collection::<Document>("oplog.rs");
    let ctx = |e| classify(&source.info.uri, "reading the oplog", e);
    let mut stop_seen_at: Option<Instant> = None;
    loop {
        // (Re)open after the last position read: a tailable cursor dies when it reaches an
        // end it cannot wait at.
        let after = p.last_read.unwrap_or(spec.from);
        let mut cursor = oplog
            .find(doc! { "ts": { "$gte": to_ts(after) } })
            .cursor_type(CursorType::TailableAwait)
            .max_await_time(Duration::from_millis(500))
            .batch()
            .await
            .map_err(ctx)?;
        loop {
            if cancel.is_cancelled() {
                return Err(Error::Cancelled);
            }
            if stop_reached(stop, p, spec.from) {
                return Ok(());
            }
            if stop.borrow().is_some() {
                let since = *stop_seen_at.get_or_insert_with(Instant::now);
                if since.elapsed() > STOP_TIMEOUT {
                    return Err(Error::Source {
                        context: "reading the oplog".into(),
                        detail: format!(
                            "the oplog did not reach {} within {} s (last read: {})",
                            describe(stop.borrow().expect("set")),
                            STOP_TIMEOUT.as_secs(),
                            p.last_read
                                .map(describe)
                                .unwrap_or_else(|| "nothing".into())
                        ),
                    });
                }
            }
            let batch = tokio::select! {
                b = cursor.next() => b,
                _ = cancel.cancelled() => return Err(Error::Cancelled),
            };
            let Some(batch) = batch else { break };
            let batch = batch.map_err(ctx)?;
            for item in batch.doc_slices().map_err(ctx)? {
                let item = item.map_err(|e| Error::Format {
                    what: "an oplog batch".into(),
                    detail: e.to_string(),
                })?;
                let RawBsonRef::Document(e) = item else {
                    continue;
                };
                let h = entry::head(e)?;
                let now = *stop.borrow();
                match p.read(&h, spec.from, now) {
                    Step::Skip => continue,
                    Step::Done => return Ok(()),
                    Step::Take => {}
                }
                let bytes = match entry::filter(e, &spec.filter, &mut p.touched)? {
                    Kept::Dropped => continue,
                    Kept::Whole => e.as_bytes().to_vec(),
                    Kept::Rewritten(r) => r.into_bytes(),
                };
                p.first.get_or_insert(h.ts);
                p.last = Some(h.ts);
                p.entries += 1;
                p.bson_bytes += bytes.len() as u64;
                writer.write(repo, &bytes).await?;
            }
            // A batch can end exactly at the stop position; let a change of the stop
            // position (a snapshot's dump ending) wake the loop too.
            if stop.has_changed().unwrap_or(false) {
                stop.borrow_and_update();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FROM: OpTime = OpTime { t: 100, i: 5 };

    /// A capture that has read the entry at the start position.
    fn progress(last_read: Option<OpTime>) -> Progress {
        Progress {
            first_read: Some(FROM),
            last_read,
            ..Progress::default()
        }
    }

    fn at(ts: OpTime, wall_ms: i64) -> entry::Head<'static> {
        entry::Head {
            ts,
            wall: chrono::TimeZone::timestamp_millis_opt(&Utc, wall_ms).single(),
            op: "i",
            ns: "app.orders",
        }
    }

    #[test]
    fn a_dump_without_writes_is_complete_without_waiting_for_a_later_entry() {
        // Regression: on an idle replica set (stop == start, nothing read) the capture
        // waited for the primary's next no-op, 10-20 s, before finishing a backup.
        let from = FROM;
        let (_tx, rx) = watch::channel(Some(from));
        assert!(stop_reached(&rx, &progress(None), from));
        let (_tx, later) = watch::channel(Some(OpTime { t: 100, i: 6 }));
        assert!(!stop_reached(&later, &progress(None), from));
        assert!(stop_reached(
            &later,
            &progress(Some(OpTime { t: 100, i: 6 })),
            from
        ));
        let (_tx, unset) = watch::channel(None);
        assert!(!stop_reached(&unset, &progress(None), from));
    }

    #[test]
    fn the_stop_is_not_reached_before_the_start_entry_was_read() {
        // Finishing before the cursor's first entry left `first_read` empty, and the
        // snapshot was then said to have lost its start to an oplog roll-over.
        let (_tx, rx) = watch::channel(Some(FROM));
        assert!(!stop_reached(&rx, &Progress::default(), FROM));
        let mut p = Progress::default();
        assert_eq!(p.read(&at(FROM, 7_000), FROM, Some(FROM)), Step::Skip);
        assert!(stop_reached(&rx, &p, FROM));
    }

    #[test]
    fn a_later_writer_s_entry_after_an_idle_dump_leaves_the_start_s_wall_time() {
        // Regression: the dump ended (stop == start) while the cursor waited, and the
        // batch it then returned held only another client's later write. The capture
        // ended at the start with no wall time, so a wall-clock --to-time in the
        // snapshot's second was refused.
        let mut p = Progress::default();
        assert_eq!(p.read(&at(FROM, 7_000), FROM, None), Step::Skip);
        assert_eq!(
            p.read(&at(OpTime { t: 102, i: 1 }, 9_000), FROM, Some(FROM)),
            Step::Done
        );
        assert_eq!(p.last_read, Some(FROM));
        assert_eq!(p.to_wall(), at(FROM, 7_000).wall);
        assert_eq!(p.first_read, Some(FROM));
    }

    #[test]
    fn entries_up_to_the_stop_are_taken_and_the_first_past_it_ends_the_capture() {
        let mut p = Progress::default();
        let stop = OpTime { t: 101, i: 2 };
        assert_eq!(p.read(&at(FROM, 7_000), FROM, None), Step::Skip);
        assert_eq!(
            p.read(&at(OpTime { t: 101, i: 1 }, 8_000), FROM, None),
            Step::Take
        );
        // Re-read after the cursor was reopened: not stored twice.
        assert_eq!(
            p.read(&at(OpTime { t: 101, i: 1 }, 8_000), FROM, None),
            Step::Skip
        );
        assert_eq!(p.read(&at(stop, 8_500), FROM, Some(stop)), Step::Take);
        assert_eq!(p.last_wall, at(stop, 8_500).wall);
        assert_eq!(
            p.read(&at(OpTime { t: 103, i: 1 }, 9_000), FROM, Some(stop)),
            Step::Done
        );
        assert_eq!(
            (p.last_read, p.last_wall),
            (Some(stop), at(stop, 8_500).wall)
        );
    }
}

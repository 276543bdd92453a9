//! Replaying stored oplog entries onto a restore target, in order, with the `applyOps`
//! command, as mongorestore `--oplogReplay` does: operations go in batches (one `applyOps`
//! of up to [`BATCH_OPS`] writes, applied atomically), commands one at a time, and a
//! transaction's operations together once its last entry is read.
//!
//! `applyOps` applies oplog entries idempotently (checked on MongoDB 6.0): an insert of an
//! `_id` that exists replaces the document, an update of a missing document creates it,
//! a delete of a missing document and a `create` of an existing collection do nothing. That
//! is what makes replaying the entries written during a dump over the dumped data correct.
//!
//! ```text
//! store ──bytes (sha256 checked)──▶ gunzip + split (blocking thread) ──entries (bounded)──▶ applyOps
//! ```

use std::collections::HashMap;
use std::io::Read;

use chrono::{DateTime, Utc};
use flate2::read::GzDecoder;
use mongodb::bson::{RawArrayBuf, RawDocument, RawDocumentBuf};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::entry::{self, NsFilter, Step, TxnKey};
use super::optime::{describe, ToTime};
use crate::error::root_cause;
use crate::fetch::{fetch_verified, ChannelReader};
use crate::manifest::{OpTime, StoredObject};
use crate::repository::Repository;
use crate::restore::NsMap;
use crate::source::{classify, Source};
use crate::{Error, Result};

/// Writes per `applyOps` command.
pub const BATCH_OPS: usize = 1000;
/// BSON bytes per `applyOps` command (the server takes 16 MiB).
const BATCH_BYTES: usize = 8 << 20;
/// Largest entry accepted from a stored oplog (a 16 MiB document plus the entry's fields).
const MAX_ENTRY: usize = 17 << 20;

/// What a replay did.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ReplayStats {
    /// Entries read from the stored objects.
    pub entries_read: u64,
    /// Entries left out: not selected, already applied, or index-build bookkeeping.
    pub entries_skipped: u64,
    /// Writes applied (transactions counted by their operations).
    pub operations: u64,
    /// Commands applied (create, drop, rename, index builds...).
    pub commands: u64,
    /// `applyOps` commands sent.
    pub batches: u64,
    /// The last position applied.
    pub applied_to: Option<OpTime>,
    /// Its wall-clock time.
    pub applied_to_wall: Option<DateTime<Utc>>,
}

/// Whether replay goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Read the next entry.
    Continue,
    /// The target time is reached: stop.
    Done,
}

/// Applies entries in oplog order onto one target.
pub struct Replayer<'a> {
    target: &'a Source,
    filter: NsFilter,
    map: NsMap,
    batch: Vec<RawDocumentBuf>,
    batch_bytes: usize,
    open_txns: HashMap<TxnKey, Vec<Step>>,
    /// What was done so far.
    pub stats: ReplayStats,
}

impl<'a> Replayer<'a> {
    /// A replayer onto `target` of the entries `filter` selects, renamed by `map`;
    /// `applied_to` is the position the target already reflects (entries up to it are
    /// skipped).
    pub fn new(
        target: &'a Source,
        filter: NsFilter,
        map: NsMap,
        applied_to: Option<OpTime>,
    ) -> Self {
        Self {
            target,
            filter,
            map,
            batch: Vec::new(),
            batch_bytes: 0,
            open_txns: HashMap::new(),
            stats: ReplayStats {
                applied_to,
                ..Default::default()
            },
        }
    }

    /// Apply one entry, unless it is already applied or after `limit`.
    ///
    /// # Errors
    /// A malformed entry, an entry that cannot be replayed, or the target failing.
    pub async fn entry(&mut self, raw: &RawDocument, limit: Option<ToTime>) -> Result<Flow> {
        let h = entry::head(raw)?;
        self.stats.entries_read += 1;
        if self.stats.applied_to.is_some_and(|a| h.ts <= a) {
            self.stats.entries_skipped += 1;
            return Ok(Flow::Continue);
        }
        if limit.is_some_and(|l| !l.includes(h.ts, h.wall)) {
            self.stats.entries_read -= 1;
            return Ok(Flow::Done);
        }
        let steps = entry::steps(raw, &self.filter, &self.map)?;
        if steps.is_empty() {
            self.stats.entries_skipped += 1;
        }
        let at = || format!("replaying the oplog entry at {} ({})", describe(h.ts), h.ns);
        for step in steps {
            self.step(step, &at).await?;
        }
        self.stats.applied_to = Some(h.ts);
        self.stats.applied_to_wall = h.wall;
        Ok(Flow::Continue)
    }

    async fn step(&mut self, step: Step, at: &dyn Fn() -> String) -> Result<()> {
        match step {
            Step::Apply(op) => {
                let is_command = op.get_str("op").ok() == Some("c");
                if is_command
                    || self.batch.len() >= BATCH_OPS
                    || self.batch_bytes + op.as_bytes().len() > BATCH_BYTES
                {
                    self.flush(at).await?;
                }
                self.batch_bytes += op.as_bytes().len();
                self.batch.push(op);
                if is_command {
                    self.stats.commands += 1;
                    self.flush(at).await?;
                } else {
                    self.stats.operations += 1;
                }
            }
            Step::Command { db, command } => {
                self.flush(at).await?;
                self.target
                    .client()
                    .database(&db)
                    .run_command(command)
                    .await
                    .map_err(|e| classify(&self.target.info.uri, &at(), e))?;
                self.stats.commands += 1;
            }
            Step::Txn {
                key,
                partial,
                steps,
            } => {
                let mut all = self.open_txns.remove(&key).unwrap_or_default();
                all.extend(steps);
                if partial {
                    self.open_txns.insert(key, all);
                    return Ok(());
                }
                self.flush(at).await?;
                if all
                    .iter()
                    .all(|s| matches!(s, Step::Apply(op) if op.get_str("op").ok() != Some("c")))
                {
                    // The transaction's writes in one atomic applyOps, as they committed.
                    for s in all {
                        if let Step::Apply(op) = s {
                            self.batch_bytes += op.as_bytes().len();
                            self.batch.push(op);
                            self.stats.operations += 1;
                        }
                    }
                    self.flush(at).await?;
                } else {
                    for s in all {
                        Box::pin(self.step(s, at)).await?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Record that the target reflects the oplog up to `point` (a snapshot's consistency
    /// point), so that later entries up to it are skipped.
    pub fn mark_applied(&mut self, point: OpTime) {
        if self.stats.applied_to.is_none_or(|a| a < point) {
            self.stats.applied_to = Some(point);
            self.stats.applied_to_wall = None;
        }
    }

    /// Send the pending writes.
    ///
    /// # Errors
    /// The target refused the batch.
    pub async fn flush(&mut self, at: &dyn Fn() -> String) -> Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let mut ops = RawArrayBuf::new();
        for op in self.batch.drain(..) {
            ops.push(op);
        }
        self.batch_bytes = 0;
        let mut cmd = RawDocumentBuf::new();
        cmd.append("applyOps", ops);
        cmd.append("bypassDocumentValidation", true);
        self.target
            .client()
            .database("admin")
            .run_raw_command(cmd)
            .await
            .map_err(|e| classify(&self.target.info.uri, &at(), e))?;
        self.stats.batches += 1;
        Ok(())
    }

    /// Send what is pending and check that no transaction was left open.
    ///
    /// # Errors
    /// The target failed.
    pub async fn finish(&mut self) -> Result<()> {
        self.flush(&|| "replaying the oplog".to_string()).await?;
        if !self.open_txns.is_empty() {
            tracing::warn!(
                open = self.open_txns.len(),
                "transactions whose last entry lies after the target time were not applied"
            );
        }
        Ok(())
    }
}

/// Read stored oplog object `obj` (checked against its sha256 and size) and replay its
/// entries up to `limit` with `replayer`.
///
/// # Errors
/// The store, a checksum, a malformed entry, or the target.
pub async fn replay_object(
    repo: &Repository,
    obj: &StoredObject,
    replayer: &mut Replayer<'_>,
    limit: Option<ToTime>,
    stop: &CancellationToken,
) -> Result<Flow> {
    let cancel = stop.child_token();
    let (byte_tx, byte_rx) = mpsc::channel(8);
    let (entry_tx, entry_rx) = mpsc::channel::<Vec<Vec<u8>>>(4);
    let what = obj.key.clone();
    let decoder = tokio::task::spawn_blocking(move || {
        split_entries(ChannelReader::new(byte_rx), &what, &entry_tx)
    });
    let fetch = async {
        let r = fetch_verified(repo, obj, byte_tx, &cancel).await;
        if r.is_err() {
            cancel.cancel();
        }
        r
    };
    let apply = async {
        // Owned here, so the decoder stops as soon as replay ends, whatever the reason.
        let mut rx = entry_rx;
        let mut flow = Flow::Continue;
        while let Some(chunk) = rx.recv().await {
            if cancel.is_cancelled() {
                return Err(Error::Cancelled);
            }
            for e in &chunk {
                let raw = RawDocument::from_bytes(e).map_err(|err| Error::Format {
                    what: format!("an entry of {}", obj.key),
                    detail: err.to_string(),
                })?;
                flow = replayer.entry(raw, limit).await?;
                if flow == Flow::Done {
                    return Ok(flow);
                }
            }
        }
        Ok::<_, Error>(flow)
    };
    let apply = async {
        let r = apply.await;
        if r.is_err() {
            cancel.cancel();
        }
        r
    };
    let decode = async {
        decoder.await.unwrap_or_else(|e| {
            Err(Error::Format {
                what: "oplog reader".into(),
                detail: e.to_string(),
            })
        })
    };
    let (f, a, d) = tokio::join!(fetch, apply, decode);
    match (f, a, d) {
        (Ok(()), Ok(flow), Ok(())) => Ok(flow),
        // Stopped early at the target time: the decoder's sends failed, nothing else.
        (Ok(()), Ok(Flow::Done), Err(Error::Cancelled)) => Ok(Flow::Done),
        (f, a, d) => Err(
            root_cause([f.err(), a.err(), d.err()].into_iter().flatten().collect())
                .expect("one failed"),
        ),
    }
}

/// Split a gzip stream of concatenated BSON documents into entries, in chunks.
fn split_entries(reader: impl Read, what: &str, tx: &mpsc::Sender<Vec<Vec<u8>>>) -> Result<()> {
    let mut chunk = Vec::new();
    let mut chunk_bytes = 0;
    for_each_entry(reader, what, |e| {
        chunk_bytes += e.len();
        chunk.push(e);
        if chunk.len() >= 256 || chunk_bytes >= 1 << 20 {
            tx.blocking_send(std::mem::take(&mut chunk))
                .map_err(|_| Error::Cancelled)?;
            chunk_bytes = 0;
        }
        Ok(())
    })?;
    if !chunk.is_empty() {
        tx.blocking_send(chunk).map_err(|_| Error::Cancelled)?;
    }
    Ok(())
}

/// Every entry of a gzip stream of concatenated BSON oplog entries (a stored oplog object,
/// `what` in errors), in order, to `visit`. Blocking.
///
/// # Errors
/// A corrupt or truncated stream, an entry length out of bounds, or `visit`'s error.
pub(crate) fn for_each_entry(
    reader: impl Read,
    what: &str,
    mut visit: impl FnMut(Vec<u8>) -> Result<()>,
) -> Result<()> {
    let mut gz = GzDecoder::new(reader);
    let bad = |detail: String| Error::Format {
        what: format!("oplog object {what}"),
        detail,
    };
    loop {
        let mut len = [0u8; 4];
        match read_full(&mut gz, &mut len).map_err(|e| bad(e.to_string()))? {
            0 => return Ok(()),
            4 => {}
            n => {
                return Err(bad(format!(
                    "ends inside an entry's length ({n} of 4 bytes)"
                )))
            }
        }
        let n = i32::from_le_bytes(len);
        if n < 5 || n as usize > MAX_ENTRY {
            return Err(bad(format!("an entry of {n} bytes")));
        }
        let mut e = vec![0u8; n as usize];
        e[..4].copy_from_slice(&len);
        if read_full(&mut gz, &mut e[4..]).map_err(|err| bad(err.to_string()))? != e.len() - 4 {
            return Err(bad("ends inside an entry".into()));
        }
        visit(e)?;
    }
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..])? {
            0 => break,
            n => got += n,
        }
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::GzEncoder;
    use std::io::Write;

    fn gz(entries: &[Vec<u8>]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        for x in entries {
            e.write_all(x).unwrap();
        }
        e.finish().unwrap()
    }

    fn doc_bytes(i: i32) -> Vec<u8> {
        mongodb::bson::to_vec(&mongodb::bson::doc! { "i": i, "pad": "x".repeat(i as usize * 10) })
            .unwrap()
    }

    #[test]
    fn splits_concatenated_entries_in_order() {
        let entries: Vec<Vec<u8>> = (0..600).map(doc_bytes).collect();
        let (tx, mut rx) = mpsc::channel(1000);
        split_entries(&gz(&entries)[..], "k", &tx).unwrap();
        drop(tx);
        let mut got = Vec::new();
        while let Ok(c) = rx.try_recv() {
            got.extend(c);
        }
        assert_eq!(got, entries);
    }

    #[test]
    fn a_truncated_object_is_a_format_error() {
        let mut raw = Vec::new();
        for i in 0..3 {
            raw.extend(doc_bytes(i));
        }
        raw.truncate(raw.len() - 3);
        let (tx, _rx) = mpsc::channel(10);
        let e = split_entries(&gz(&[raw])[..], "k", &tx).unwrap_err();
        assert!(e.to_string().contains("ends inside an entry"), "{e}");
        let (tx, _rx) = mpsc::channel(10);
        let e = split_entries(&gz(&[vec![1, 0, 0, 0, 0]])[..], "k", &tx).unwrap_err();
        assert!(e.to_string().contains("an entry of 1 bytes"), "{e}");
    }
}

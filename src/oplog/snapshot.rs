//! Point-in-time consistent snapshots, as `mongodump --oplog` makes them: note the oplog
//! position before the dump, capture every entry written until the dump ends, store them
//! with the snapshot, and replay them on restore. A logical dump reads each collection at
//! its own moment; replaying the oplog written meanwhile (idempotently: an insert of a
//! document already dumped replaces it, an update of a missing one creates it, a delete of
//! a missing one does nothing) brings every collection to the one instant the dump ended.
//!
//! Only a replica set has an oplog. On a standalone server the manifest says plainly that
//! the snapshot is not point-in-time.

use std::future::Future;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::capture::{capture, CaptureSpec};
use super::entry::NsFilter;
use super::optime::{describe, wall_or_seconds};
use crate::backup::Selection;
use crate::manifest::{Consistency, OplogRecord};
use crate::repository::Repository;
use crate::source::Source;
use crate::storage::upload::UploadConfig;
use crate::{Error, Result};

/// Key of a snapshot's oplog object.
pub fn oplog_key(snapshot: &str) -> String {
    format!("snapshots/{snapshot}/oplog/oplog.bson.gz")
}

/// Run `dump` (listing and dumping the collections) while capturing the oplog of the
/// namespaces `selection` backs up; return what `dump` returned, the consistency record
/// for the manifest, and the stored oplog when the snapshot is point-in-time.
///
/// # Errors
/// The dump's error, or the capture's (reading `local.oplog.rs` needs the `backup` role or
/// read access to the `local` database); the stored oplog object is then abandoned.
pub async fn dump_consistently<T, F>(
    source: &Source,
    repo: &Repository,
    snapshot: &str,
    selection: &Selection,
    upload: UploadConfig,
    dump: F,
) -> Result<(T, Consistency, Option<OplogRecord>)>
where
    F: Future<Output = Result<T>>,
{
    let start = source.operation_time().await?;
    let (Some(start), "replica_set") = (start, source.info.topology.as_str()) else {
        let out = dump.await?;
        let end = source.operation_time().await?;
        let note = match source.info.topology.as_str() {
            "standalone" => "not point-in-time: a standalone server has no oplog, so each collection is read as of its own moment during the run; use a replica set (even of one member) for point-in-time snapshots",
            _ => "not point-in-time: each collection is read as of its own moment between the start and end operation times; point-in-time snapshots need a replica set",
        };
        return Ok((out, not_pit(note, start, end), None));
    };
    let spec = CaptureSpec {
        key: oplog_key(snapshot),
        from: start,
        filter: NsFilter::new(vec![selection.clone()]),
        upload,
    };
    let (stop_tx, stop_rx) = watch::channel(None);
    let cancel = CancellationToken::new();
    let dumped = async {
        let r = dump.await;
        match &r {
            Ok(_) => match source.operation_time().await {
                Ok(end) if end.is_some() => {
                    let _ = stop_tx.send(end);
                }
                Ok(_) => cancel.cancel(),
                Err(_) => cancel.cancel(),
            },
            Err(_) => cancel.cancel(),
        }
        r
    };
    let captured = capture(source, repo, &spec, stop_rx, cancel.clone());
    tokio::pin!(dumped, captured);
    let (out, captured) = tokio::select! {
        d = &mut dumped => match d {
            Ok(out) => (out, (&mut captured).await),
            Err(e) => {
                // The capture saw the cancellation: let it abort its upload first.
                let _ = (&mut captured).await;
                return Err(e);
            }
        },
        c = &mut captured => match c {
            // The capture cannot finish before the dump sets its stop position, so this
            // is its failure: stop the dump too.
            Err(e) if !e.is_cancelled() => return Err(e),
            other => ((&mut dumped).await?, other),
        },
    };
    let captured = captured?;
    let end = captured.record.to;
    if !captured.contiguous() {
        let lost = captured
            .first_read
            .map(describe)
            .unwrap_or_else(|| "nothing".into());
        tracing::warn!(start = %describe(start), oldest = %lost, "the oplog rolled over during the dump: the snapshot is not point-in-time");
        if let Err(e) = repo.store().delete(&spec.key).await {
            tracing::warn!(key = %spec.key, error = %e, "could not remove the unusable oplog; prune removes it with the snapshot");
        }
        let note = format!(
            "not point-in-time: the oplog rolled over during the dump (it no longer held {}; its oldest entry was {lost}); enlarge the oplog or back up faster",
            describe(start)
        );
        return Ok((out, not_pit(&note, Some(start), Some(end)), None));
    }
    let record = captured.record;
    let at = wall_or_seconds(end, record.to_wall);
    let note = format!(
        "point-in-time: equals the source at {} (oplog {}:{}); the {} oplog entries written during the dump are stored with the snapshot and replayed on restore",
        at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        end.t,
        end.i,
        record.entries
    );
    let consistency = Consistency {
        point_in_time: true,
        note,
        start_operation_time: Some(start),
        end_operation_time: Some(end),
    };
    Ok((out, consistency, Some(record)))
}

fn not_pit(
    note: &str,
    start: Option<crate::manifest::OpTime>,
    end: Option<crate::manifest::OpTime>,
) -> Consistency {
    Consistency {
        point_in_time: false,
        note: note.to_string(),
        start_operation_time: start,
        end_operation_time: end,
    }
}

/// The manifest's record of a point-in-time snapshot's oplog, or why there is none.
///
/// # Errors
/// [`Error::Config`] naming the snapshot when it is not point-in-time.
pub fn snapshot_oplog(m: &crate::manifest::Manifest) -> Result<&OplogRecord> {
    match (&m.oplog, m.consistency.point_in_time) {
        (Some(o), true) => Ok(o),
        _ => Err(Error::Config(format!(
            "snapshot {} is not point-in-time ({}); --to-time needs a snapshot of a replica set taken by a mongokeep that captures the oplog",
            m.snapshot, m.consistency.note
        ))),
    }
}

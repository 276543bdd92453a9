//! `verify --to-time T`: restore a snapshot and replay the stored oplog up to T into scratch
//! databases, then recompute every collection's count and content digest there. With
//! `--compare-source`, the same figures are read from the source *as it was at the restored
//! oplog position* (a snapshot read at that cluster time, which the server can answer while
//! the position is within its snapshot history window, 5 minutes by default) and compared:
//! a difference is a failed report. Without it, the report records the state at T and
//! passes when every object's checksum held and the replay succeeded.

use std::collections::BTreeSet;
use std::time::Instant;

use futures::TryStreamExt;
use mongodb::bson::{doc, RawDocumentBuf, Timestamp};

use super::compare::digest_of;
use super::report::{CollectionCheck, VerifyReport};
use super::{
    check_scratch_free, drop_scratch, scratch_label, scratch_restore_options, VerifyOptions,
};
use crate::digest::ContentDigest;
use crate::manifest::{CollectionEntry, Manifest};
use crate::oplog::optime::ToTime;
use crate::repository::Repository;
use crate::source::{classify, Source};
use crate::{Error, Result};
use tokio_util::sync::CancellationToken;

/// Restore to `to` in scratch databases and check the state there.
///
/// # Errors
/// As [`super::full`] (`shutdown` resolving stops the run and still drops the scratch
/// databases); a time the stored oplog does not cover is refused by the restore.
pub async fn verify_to_time(
    repo: &Repository,
    manifest: &Manifest,
    scratch: &Source,
    opts: &VerifyOptions,
    to: ToTime,
    source: Option<&Source>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<VerifyReport> {
    let started = chrono::Utc::now();
    let dbs = check_scratch_free(manifest, scratch, &opts.scratch_prefix).await?;
    let stop = CancellationToken::new();
    let work = async {
        let mut report = VerifyReport::new(manifest, "to-time", started);
        report.scratch = Some(scratch_label(scratch, &opts.scratch_prefix));
        let mut ropts = scratch_restore_options(&dbs, opts.parallel)?;
        ropts.stop = stop.clone();
        let t = Instant::now();
        let summary =
            match crate::oplog::restore::restore_to_time(repo, manifest, scratch, &ropts, Some(to))
                .await
            {
                Ok(s) => s,
                Err(e @ (Error::Integrity { .. } | Error::Format { .. })) => {
                    report.object_problems.push(e.to_string());
                    report.finish();
                    return Ok(report);
                }
                Err(e) => return Err(e),
            };
        report.recovery_seconds = Some(t.elapsed().as_secs_f64());
        report.restored_to = Some(summary.restored_to.clone());
        let at = parse_op(&summary.restored_to)?;
        for (db, sdb) in &dbs {
            // Collections as they are at T: the snapshot's and those the oplog created.
            let names: BTreeSet<String> = scratch
                .list_collections(sdb)
                .await?
                .into_iter()
                .filter(|c| c.kind == "collection" && !c.name.starts_with("system."))
                .map(|c| c.name)
                .collect();
            for name in names {
                let (count, digest) = digest_of(scratch, sdb, &name).await?;
                let entry = entry_for(manifest, db, &name);
                let mut c = CollectionCheck::new(&entry);
                c.count_actual = Some(count);
                c.digest_actual = Some(digest.to_hex());
                match source {
                    Some(src) => {
                        let (n, d) = digest_at(src, db, &name, at).await?;
                        c.count_expected = n;
                        c.digest_expected = d.to_hex();
                        if n != count {
                            c.problems.push(format!(
                                "count at {}: source held {n}, restored {count}",
                                summary.restored_to
                            ));
                        }
                        if d != digest {
                            c.problems.push(format!(
                                "content digest at {}: source {}, restored {}",
                                summary.restored_to,
                                d.to_hex(),
                                digest.to_hex()
                            ));
                        }
                    }
                    None => {
                        c.count_expected = count;
                        c.digest_expected = digest.to_hex();
                    }
                }
                report.collections.push(c);
            }
        }
        report.finish();
        Ok(report)
    };
    // Interrupted or not, the scratch databases go (unless --keep).
    let result = crate::interrupt::until_shutdown(work, &stop, shutdown).await;
    let abandoned = result.is_err();
    drop_scratch(scratch, &dbs, opts.keep, &opts.scratch_prefix, abandoned).await;
    result
}

fn entry_for(m: &Manifest, db: &str, name: &str) -> CollectionEntry {
    m.collections
        .iter()
        .find(|c| c.db == db && c.name == name)
        .cloned()
        .unwrap_or_else(|| CollectionEntry {
            db: db.to_string(),
            name: name.to_string(),
            kind: "collection".into(),
            options: serde_json::json!({}),
            indexes: vec![],
            uuid: None,
            stored_from: None,
            count: 0,
            bson_bytes: 0,
            content_digest: String::new(),
            codec: "none".into(),
            parts: 0,
            objects: vec![],
        })
}

fn parse_op(s: &str) -> Result<Timestamp> {
    let (t, i) = s.split_once(':').ok_or_else(|| Error::Format {
        what: "restored position".into(),
        detail: s.into(),
    })?;
    let p = |x: &str| {
        x.parse::<u32>().map_err(|e| Error::Format {
            what: "restored position".into(),
            detail: e.to_string(),
        })
    };
    Ok(Timestamp {
        time: p(t)?,
        increment: p(i)?,
    })
}

/// Count and digest of `db.coll` as the source held it at cluster time `at`.
async fn digest_at(
    src: &Source,
    db: &str,
    coll: &str,
    at: Timestamp,
) -> Result<(u64, ContentDigest)> {
    let ctx = |e| {
        classify(&src.info.uri, &format!("reading {db}.{coll} as of the restored position (snapshot read; older than the server's history window?)"), e)
    };
    let cmd = doc! { "find": coll, "readConcern": { "level": "snapshot", "atClusterTime": at }, "batchSize": 10000 };
    let cursor = src
        .client()
        .database(db)
        .run_cursor_command(cmd)
        .await
        .map_err(ctx)?;
    let docs: Vec<RawDocumentBuf> = cursor
        .with_type::<RawDocumentBuf>()
        .try_collect()
        .await
        .map_err(ctx)?;
    let mut d = ContentDigest::new();
    for doc in &docs {
        d.add_document(doc.as_bytes());
    }
    Ok((docs.len() as u64, d))
}

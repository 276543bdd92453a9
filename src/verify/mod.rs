//! `mongokeep verify`: prove that a snapshot restores, and that what it restores is what was
//! backed up.
//!
//! A full verification checks every stored object's sha256 while restoring the snapshot
//! into scratch databases (`<prefix>_<db>`, refused if any such database exists), then
//! recomputes from the scratch server, per collection, the document count, the
//! order-independent content digest, the indexes and the options, and compares each with the
//! manifest. The scratch databases are dropped afterwards, whether it passed, failed, or was
//! interrupted (unless `--keep`). The restore's wall time is the measured recovery time.
//! `--quick` checks the stored objects' checksums only.

mod compare;
pub mod report;
mod to_time;

use std::future::Future;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::StreamExt;
use mongodb::bson::Document;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use compare::{
    compare, digest_in_ranges, digest_in_record_ranges, digest_of, source_drift, RANGE_BYTES,
};
pub use report::{CollectionCheck, Drift, VerifyReport};
pub use to_time::verify_to_time;

use crate::fetch::fetch_verified;
use crate::manifest::Manifest;
use crate::repository::Repository;
use crate::restore::{self, NsMap, RestoreOptions};
use crate::source::{classify, Source};
use crate::{Error, Result};

/// Where verification reports live in a repository.
pub const REPORTS: &str = "reports/verify/";

/// How a full verification runs.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// Prefix of the scratch databases (`<prefix>_<db>`).
    pub scratch_prefix: String,
    /// Leave the scratch databases in place.
    pub keep: bool,
    /// Collections restored and compared at once.
    pub parallel: usize,
}

/// The scratch prefix: the database named in the scratch URI, else `mkverify_<hex>`.
pub fn scratch_prefix(scratch_uri_db: Option<&str>, nonce: u16) -> String {
    match scratch_uri_db {
        Some(d) if !d.is_empty() => d.to_string(),
        _ => format!("mkverify_{nonce:04x}"),
    }
}

/// The scratch database of source database `db`.
pub fn scratch_db(prefix: &str, db: &str) -> String {
    format!("{prefix}_{db}")
}

/// Check every stored object of the snapshot (size and sha256), all of them, and report
/// each one that differs.
///
/// # Errors
/// The repository failed (a checksum mismatch is a failed report, not an error).
pub async fn quick(repo: &Repository, manifest: &Manifest) -> Result<VerifyReport> {
    let started = Utc::now();
    // Every object, the snapshot's oplog included, labelled for the report.
    let mut objects: Vec<(String, &crate::manifest::StoredObject)> = manifest
        .collections
        .iter()
        .flat_map(|c| {
            c.objects
                .iter()
                .map(move |o| (format!("{}.{}", c.db, c.name), o))
        })
        .collect();
    objects.extend(
        manifest
            .oplog
            .as_ref()
            .map(|o| ("oplog".to_string(), &o.object)),
    );
    debug_assert_eq!(objects.len(), manifest.objects().len());
    let results: Vec<(String, Result<()>)> = futures::stream::iter(objects.iter())
        .map(|(ns, obj)| async move {
            let (tx, mut rx) = mpsc::channel(8);
            let drain = async { while rx.recv().await.is_some() {} };
            let cancel = CancellationToken::new();
            let (r, ()) = tokio::join!(fetch_verified(repo, obj, tx, &cancel), drain);
            (ns.clone(), r)
        })
        .buffer_unordered(4)
        .collect()
        .await;
    let mut report = VerifyReport::new(manifest, "quick", started);
    for (ns, r) in results {
        match r {
            Ok(()) => {}
            Err(e @ Error::Integrity { .. }) => report.object_problems.push(format!("{ns}: {e}")),
            Err(e) => return Err(e),
        }
    }
    report.objects_checked = objects.len() as u64;
    report.bytes_checked = objects.iter().map(|(_, o)| o.size).sum();
    report.finish();
    Ok(report)
}

/// Restore the snapshot into scratch databases on `scratch`, compare, and drop them.
/// `shutdown` resolving (Ctrl-C) stops the run; the scratch databases are dropped all the
/// same.
///
/// # Errors
/// Scratch databases that exist already ([`Error::Config`]), the scratch server or the
/// repository failing, or an interruption. A mismatch is a failed report, not an error.
pub async fn full(
    repo: &Repository,
    manifest: &Manifest,
    scratch: &Source,
    opts: &VerifyOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<VerifyReport> {
    let started = Utc::now();
    let dbs = check_scratch_free(manifest, scratch, &opts.scratch_prefix).await?;
    let stop = CancellationToken::new();
    let work = async {
        let mut report = VerifyReport::new(manifest, "full", started);
        report.scratch = Some(scratch_label(scratch, &opts.scratch_prefix));
        let mut ropts = scratch_restore_options(&dbs, opts.parallel)?;
        let plan = restore::plan(manifest, scratch, &ropts).await?;
        // Each collection is read back as soon as its documents are in (while its indexes
        // build) and checked once restored, while the others load.
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        ropts.on_event = Some(done_tx);
        ropts.stop = stop.clone();
        let restoring = async move {
            let t = Instant::now();
            let r = restore::execute(repo, scratch, &plan, &ropts).await;
            drop(ropts);
            r.map(|_| t.elapsed().as_secs_f64())
        };
        let comparing = compare::compare_as_restored(
            manifest,
            scratch,
            &opts.scratch_prefix,
            opts.parallel,
            done_rx,
        );
        // A failed restore ends the comparison too; a failed comparison ends nothing early
        // (the restore stops on its own errors only).
        let (mut restoring, mut comparing) = (std::pin::pin!(restoring), std::pin::pin!(comparing));
        let mut compared = None;
        let restored = loop {
            tokio::select! {
                r = &mut restoring => break r,
                c = &mut comparing, if compared.is_none() => compared = Some(c),
            }
        };
        match restored {
            Ok(seconds) => report.recovery_seconds = Some(seconds),
            // Stored data that does not match its manifest is what verification looks for.
            Err(e @ (Error::Integrity { .. } | Error::Format { .. })) => {
                report.object_problems.push(e.to_string());
                report.finish();
                return Ok(report);
            }
            Err(e) => return Err(e),
        }
        report.collections = match compared {
            Some(c) => c?,
            None => comparing.await?,
        };
        report.finish();
        Ok(report)
    };
    let result = crate::interrupt::until_shutdown(work, &stop, shutdown).await;
    let abandoned = result.is_err();
    drop_scratch(scratch, &dbs, opts.keep, &opts.scratch_prefix, abandoned).await;
    result
}

/// Restore options that put each database of the snapshot into its scratch database.
pub(crate) fn scratch_restore_options(
    dbs: &[(String, String)],
    parallel: usize,
) -> Result<RestoreOptions> {
    let (from, to): (Vec<String>, Vec<String>) = dbs
        .iter()
        .map(|(db, s)| (format!("{db}.*"), format!("{s}.*")))
        .unzip();
    Ok(RestoreOptions {
        map: NsMap::new(&from, &to)?,
        parallel,
        scratch: true,
        ..RestoreOptions::default()
    })
}

/// How a report names the scratch server and databases.
pub(crate) fn scratch_label(scratch: &Source, prefix: &str) -> String {
    format!("{} (databases {prefix}_*)", scratch.info.uri)
}

/// Drop the scratch databases (unless `keep`); a failure to drop is a warning. After work
/// that was `abandoned` (interrupted, or failed), look again for a second, a safeguard: a
/// write still running on the server (the restore did not end within
/// [`crate::interrupt::STOP_GRACE`], or
/// failed while one was in flight) brings a dropped database back.
pub(crate) async fn drop_scratch(
    scratch: &Source,
    dbs: &[(String, String)],
    keep: bool,
    prefix: &str,
    abandoned: bool,
) {
    if keep {
        tracing::warn!(prefix = %prefix, "scratch databases kept (--keep); drop them when done");
        return;
    }
    drop_each(scratch, dbs.iter().map(|(_, db)| db.as_str())).await;
    if !abandoned {
        return;
    }
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let Ok(present) = scratch.client().list_database_names().await else {
            break;
        };
        let back = dbs
            .iter()
            .map(|(_, db)| db.as_str())
            .filter(|db| present.iter().any(|p| p == db));
        drop_each(scratch, back).await;
    }
}

async fn drop_each<'a>(scratch: &Source, dbs: impl Iterator<Item = &'a str>) {
    for db in dbs {
        match scratch.client().database(db).drop().await {
            Ok(()) => tracing::info!(db = %db, "scratch database dropped"),
            Err(e) => {
                tracing::warn!(db = %db, error = %e, "could not drop a scratch database; drop it by hand")
            }
        }
    }
}

/// The (source db, scratch db) pairs, after checking that none of the scratch databases
/// (nor the prefix itself) exists.
pub(crate) async fn check_scratch_free(
    manifest: &Manifest,
    scratch: &Source,
    prefix: &str,
) -> Result<Vec<(String, String)>> {
    let dbs: std::collections::BTreeSet<&str> =
        manifest.collections.iter().map(|c| c.db.as_str()).collect();
    let pairs: Vec<(String, String)> = dbs
        .into_iter()
        .map(|d| (d.to_string(), scratch_db(prefix, d)))
        .collect();
    for (_, s) in &pairs {
        if s.len() > 63 || s.contains(['/', '\\', '.', ' ', '"', '$']) {
            return Err(Error::Config(format!(
                "scratch database name {s:?} is not usable (at most 63 bytes, no / \\ . space \" $); choose a shorter database in the --scratch URI"
            )));
        }
    }
    let existing = scratch.client().list_database_names().await.map_err(|e| {
        classify(
            &scratch.info.uri,
            "listing databases on the scratch server",
            e,
        )
    })?;
    let taken: Vec<&String> = existing
        .iter()
        .filter(|e| e.as_str() == prefix || e.starts_with(&format!("{prefix}_")))
        .collect();
    if !taken.is_empty() {
        return Err(Error::Config(format!(
            "the scratch server already has database(s) {} under the scratch prefix {prefix:?}; verification never writes into existing databases\n  fix: name an unused database in the --scratch URI (its name is the prefix), or leave it out for a random one",
            taken.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
        )));
    }
    Ok(pairs)
}

/// Store the report (JSON and Markdown) in the repository; returns the JSON key.
///
/// # Errors
/// The store failed.
pub async fn store_report(repo: &Repository, report: &VerifyReport) -> Result<String> {
    let base = format!(
        "{REPORTS}{}/{}",
        report.snapshot,
        report.started_at.format("%Y%m%dT%H%M%S%.3fZ")
    );
    let json = format!("{base}.json");
    repo.store()
        .put(
            &format!("{base}.md"),
            report.to_markdown().into_bytes().into(),
        )
        .await
        .map_err(|e| repo.err(e))?;
    repo.store()
        .put(
            &json,
            serde_json::to_vec_pretty(report)
                .expect("report serializes")
                .into(),
        )
        .await
        .map_err(|e| repo.err(e))?;
    Ok(json)
}

/// Every stored verification report, oldest first.
///
/// # Errors
/// The store failed.
pub async fn list_reports(repo: &Repository) -> Result<Vec<VerifyReport>> {
    let store = repo.store();
    let keys: Vec<String> = store
        .list(REPORTS)
        .await
        .map_err(|e| repo.err(e))?
        .into_iter()
        .map(|o| o.key)
        .filter(|k| k.ends_with(".json"))
        .collect();
    let mut out = Vec::new();
    for k in keys {
        let body = store.get(&k).await.map_err(|e| repo.err(e))?;
        match serde_json::from_slice::<VerifyReport>(&body) {
            Ok(r) => out.push(r),
            Err(e) => {
                tracing::warn!(key = %k, error = %e, "skipping an unreadable verification report")
            }
        }
    }
    out.sort_by_key(|r| r.started_at);
    Ok(out)
}

/// A server-side options document as the manifest records it.
pub(crate) fn ext(d: &Document) -> serde_json::Value {
    crate::backup::ext_json(d)
}

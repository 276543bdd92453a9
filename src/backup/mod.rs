//! `mongokeep backup`: choose what to back up, run the collection pipelines a few at a
//! time, and write the manifest last. A run that fails removes what it stored (best
//! effort) and never writes a manifest, so no half-made snapshot is ever visible.

mod collection;
mod select;

pub use collection::{ext_json, metadata_json, PipelineSettings};
pub use select::{some_of, Selection};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::archive::Codec;
use crate::error::all_or_root_cause;
use crate::manifest::{BackupOptionsRecord, Manifest, Tool, Totals, FORMAT_VERSION};
use crate::repository::{lock, snapshot_id, Repository};
use crate::source::{CollectionSpec, Source};
use crate::storage::upload::UploadConfig;
use crate::storage::StorageExt;
use crate::{Error, Result};

/// Everything a backup run needs besides the source and repository.
#[derive(Debug, Clone)]
pub struct BackupOptions {
    /// What to include.
    pub selection: Selection,
    /// Compression.
    pub codec: Codec,
    /// Bound on the BSON bytes of one archive part.
    pub part_limit: usize,
    /// Collections backed up at once.
    pub parallel: usize,
    /// Upload tuning.
    pub upload: UploadConfig,
    /// Tags recorded in the manifest.
    pub tags: Vec<String>,
    /// The run's start time (a parameter so that tests and ids are exact).
    pub now: DateTime<Utc>,
    /// Random part of the snapshot id and lock name.
    pub nonce: u64,
    /// Cancelled to stop the backup (Ctrl-C, SIGTERM): its pipelines stop and abort their
    /// uploads, [`run`] removes what the run stored, releases the lock and returns
    /// [`Error::Cancelled`]. Once the manifest is being written, the run completes instead.
    pub stop: CancellationToken,
}

impl Default for BackupOptions {
    fn default() -> Self {
        Self {
            selection: Selection::default(),
            codec: Codec::default(),
            part_limit: 16 * 1024 * 1024,
            parallel: 2,
            upload: UploadConfig::default(),
            tags: vec![],
            now: Utc::now(),
            nonce: rand::random(),
            stop: CancellationToken::new(),
        }
    }
}

/// The `--json` summary of a backup.
#[derive(Debug, Clone, Serialize)]
pub struct BackupSummary {
    /// Snapshot id.
    pub snapshot: String,
    /// Repository.
    pub repository: String,
    /// Start and end.
    pub started_at: DateTime<Utc>,
    /// End.
    pub finished_at: DateTime<Utc>,
    /// Seconds taken.
    pub seconds: f64,
    /// Collections (not views) stored.
    pub collections: u64,
    /// Views recorded.
    pub views: u64,
    /// Documents stored.
    pub documents: u64,
    /// BSON bytes read.
    pub bson_bytes: u64,
    /// Bytes stored.
    pub stored_bytes: u64,
    /// Whether the snapshot is point-in-time consistent.
    pub point_in_time: bool,
}

impl BackupSummary {
    /// Summarize a manifest.
    pub fn of(m: &Manifest, repository: String) -> Self {
        Self {
            snapshot: m.snapshot.clone(),
            repository,
            started_at: m.started_at,
            finished_at: m.finished_at,
            seconds: (m.finished_at - m.started_at).num_milliseconds() as f64 / 1000.0,
            collections: m.totals.collections,
            views: m.totals.views,
            documents: m.totals.documents,
            bson_bytes: m.totals.bson_bytes,
            stored_bytes: m.totals.stored_bytes,
            point_in_time: m.consistency.point_in_time,
        }
    }
}

/// The collections a run will back up, in order.
///
/// # Errors
/// The source failed while listing.
pub async fn plan(source: &Source, selection: &Selection) -> Result<Vec<CollectionSpec>> {
    let mut out = Vec::new();
    let databases = source.list_databases().await?;
    let mut seen = Vec::new();
    for db in &databases {
        if !selection.wants_db(db) {
            continue;
        }
        for spec in source.list_collections(db).await? {
            seen.push(format!("{}.{}", spec.db, spec.name));
            if selection.wants_collection(&spec) {
                out.push(spec);
            }
        }
    }
    // A typo in the selection must fail the run, not store an empty snapshot that every
    // check would count as a good backup.
    let unmatched = selection.unmatched(&databases, &seen);
    if !unmatched.is_empty() {
        let user: Vec<String> = databases
            .iter()
            .filter(|d| !select::SYSTEM_DBS.contains(&d.as_str()))
            .cloned()
            .collect();
        return Err(Error::Config(format!(
            "{} matches nothing on the source (its databases: {}); nothing was backed up\n  fix: correct the name or glob (flags, or the configuration file's [backup] section)",
            unmatched.join(" and "),
            some_of(&user)
        )));
    }
    Ok(out)
}

/// Run a backup: lock, plan, store every collection, write the manifest, unlock.
///
/// # Errors
/// Lock held, source or repository failure; nothing of the run stays visible as a snapshot.
pub async fn run(source: &Source, repo: &Repository, opts: &BackupOptions) -> Result<Manifest> {
    repo.check_access().await?;
    let guard = lock::acquire(repo, "backup", opts.now, opts.nonce).await?;
    let id = snapshot_id(opts.now, (opts.nonce & 0xffff) as u16);
    let result = run_locked(source, repo, opts, &id).await;
    if result.is_err() {
        // Best effort: the snapshot has no manifest, so what remains is garbage for prune.
        match repo
            .store()
            .delete_prefix(&format!("snapshots/{id}/"))
            .await
        {
            Ok(n) if n > 0 => {
                tracing::info!(snapshot = %id, objects = n, "removed the objects of the failed run")
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(snapshot = %id, error = %e, "could not remove the objects of the failed run; prune removes them")
            }
        }
    }
    guard.release().await;
    result
}

async fn run_locked(
    source: &Source,
    repo: &Repository,
    opts: &BackupOptions,
    id: &str,
) -> Result<Manifest> {
    // On a replica set the oplog written during the dump is captured alongside it and
    // makes the snapshot point-in-time (see `crate::oplog::snapshot`).
    let dump = dump_collections(source, repo, opts, id);
    let (entries, consistency, oplog) = crate::oplog::snapshot::dump_consistently(
        source,
        repo,
        id,
        &opts.selection,
        opts.upload,
        dump,
    )
    .await?;
    let mut totals = Totals::of(&entries);
    totals.stored_bytes += oplog.as_ref().map_or(0, |o| o.object.size);
    // Stopped after the last collection ended: the run is undone all the same.
    crate::interrupt::stopped(&opts.stop)?;
    let manifest = Manifest {
        format: "mongokeep-manifest".into(),
        format_version: FORMAT_VERSION,
        snapshot: id.to_string(),
        started_at: opts.now,
        finished_at: Utc::now().max(opts.now),
        tool: Tool {
            name: "mongokeep".into(),
            version: env!("CARGO_PKG_VERSION").into(),
        },
        source: source.info.clone(),
        consistency,
        options: BackupOptionsRecord {
            compression: opts.codec.spec(),
            archive_part_bytes: opts.part_limit as u64,
            databases: opts.selection.databases.clone(),
            ns_include: opts.selection.ns_include.clone(),
            ns_exclude: opts.selection.ns_exclude.clone(),
            include_users: opts.selection.include_users,
        },
        tags: opts.tags.clone(),
        digest_algorithm: crate::digest::ALGORITHM.into(),
        totals,
        collections: entries,
        oplog,
    };
    repo.write_manifest(&manifest).await?;
    tracing::info!(snapshot = %id, documents = manifest.totals.documents, "backup complete");
    Ok(manifest)
}

/// List and store every selected collection; their manifest entries.
async fn dump_collections(
    source: &Source,
    repo: &Repository,
    opts: &BackupOptions,
    id: &str,
) -> Result<Vec<crate::manifest::CollectionEntry>> {
    let specs = plan(source, &opts.selection).await?;
    tracing::info!(snapshot = %id, collections = specs.len(), repository = %repo.describe(), "backup started");
    let settings = PipelineSettings {
        snapshot: id.to_string(),
        codec: opts.codec,
        part_limit: opts.part_limit,
        upload: opts.upload,
        mtime: opts.now.timestamp().max(0) as u64,
    };
    // A collection that fails stops the others; so does a stop of the whole run.
    let cancel = opts.stop.child_token();
    // Largest first: started last, a large collection would run on alone at the end.
    let sizes: Vec<Option<u64>> = futures::stream::iter(&specs)
        .map(|spec| async move {
            match spec.kind.as_str() {
                "view" => Some(0),
                "timeseries" => {
                    source
                        .data_size(&spec.db, &format!("system.buckets.{}", spec.name))
                        .await
                }
                _ => source.data_size(&spec.db, &spec.name).await,
            }
        })
        .buffered(8)
        .collect()
        .await;
    let order = crate::source::largest_first(&sizes);
    // Unordered: in order, a collection that ended would hold its place (and the next
    // collection would wait) until every collection listed before it ended, so a large
    // collection kept the others from starting. The results are put back in order after.
    let mut results: Vec<(usize, Result<crate::manifest::CollectionEntry>)> =
        futures::stream::iter(order.into_iter().map(|i| (i, &specs[i])))
            .map(|(i, spec)| {
                let cancel = cancel.clone();
                let settings = &settings;
                async move {
                    let r = if cancel.is_cancelled() {
                        Err(Error::Cancelled)
                    } else if spec.kind == "view" {
                        Ok(collection::view_entry(spec))
                    } else {
                        collection::backup_collection(source, repo, spec, settings, cancel.clone())
                            .await
                    };
                    if r.is_err() {
                        cancel.cancel();
                    }
                    (i, r)
                }
            })
            .buffer_unordered(opts.parallel.max(1))
            .collect()
            .await;
    results.sort_by_key(|(i, _)| *i);
    all_or_root_cause(results.into_iter().map(|(_, r)| r).collect())
}

//! Oplog slices: `mongokeep oplog push` stores the oplog written since the last stored
//! position, so that a snapshot can be rolled forward to any time after it.
//!
//! ```text
//! oplog/slices/<from>_<to>.bson.gz    raw entries of the selected namespaces, gzip
//! oplog/slices/<from>_<to>.json       written last: the slice exists iff it does
//! ```
//!
//! `<from>` and `<to>` are oplog positions written `20261125T064323Z.0000000003` (UTC second
//! and increment), so keys sort by time. The last stored position is the newest slice's
//! `to`, or, before the first slice, the newest point-in-time snapshot's consistency point.
//! When the oplog no longer holds that position (it rolled over between two pushes), the
//! slice stores what the oplog still holds, records the gap, and the push ends with
//! [`Error::OplogGap`]: a restore refuses any time inside the gap.

use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::capture::{capture, CaptureSpec};
use super::entry::NsFilter;
use super::optime::{describe, key_segment};
use crate::backup::Selection;
use crate::manifest::{OpTime, OplogRecord};
use crate::repository::{lock, Repository};
use crate::source::Source;
use crate::storage::upload::UploadConfig;
use crate::{Error, Result};

/// Where slices live.
pub const SLICES: &str = "oplog/slices/";

/// The selection a slice was pushed with (as the manifest records a backup's).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SliceSelection {
    /// `--db` filters.
    pub databases: Vec<String>,
    /// `--ns-include` globs.
    pub ns_include: Vec<String>,
    /// `--ns-exclude` globs.
    pub ns_exclude: Vec<String>,
}

impl SliceSelection {
    /// Of a [`Selection`].
    pub fn of(s: &Selection) -> Self {
        Self {
            databases: s.databases.clone(),
            ns_include: s.ns_include.clone(),
            ns_exclude: s.ns_exclude.clone(),
        }
    }

    /// True when nothing narrows it: every non-system namespace.
    pub fn is_everything(&self) -> bool {
        self.databases.is_empty() && self.ns_include.is_empty() && self.ns_exclude.is_empty()
    }
}

/// Operations lost between two pushes.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Gap {
    /// The last position stored before the gap.
    pub after: OpTime,
    /// The oldest position the oplog still held: the slice resumes here.
    pub resumed_at: OpTime,
}

/// The metadata of one slice (`<key>.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SliceMeta {
    /// Always `"mongokeep-oplog-slice"`.
    pub format: String,
    /// 1.
    pub format_version: u32,
    /// When the push ran.
    pub created_at: DateTime<Utc>,
    /// The deployment's replica set name.
    pub replica_set: Option<String>,
    /// The source (password removed).
    pub source: String,
    /// What was selected.
    pub selection: SliceSelection,
    /// The stored entries and the positions read.
    pub oplog: OplogRecord,
    /// Set when the oplog no longer held `oplog.from`.
    #[serde(default)]
    pub gap: Option<Gap>,
}

impl SliceMeta {
    /// The first position the slice covers: every entry after it up to `oplog.to` is in it.
    pub fn start(&self) -> OpTime {
        self.gap.map_or(self.oplog.from, |g| g.resumed_at)
    }

    /// The metadata object's key.
    pub fn meta_key(&self) -> String {
        self.oplog.object.key.replace(".bson.gz", ".json")
    }

    /// `20261125T064323Z.0000000003_20261125T074323Z.0000000011`, the slice's name.
    pub fn name(&self) -> String {
        let k = &self.oplog.object.key;
        k.strip_prefix(SLICES)
            .unwrap_or(k)
            .trim_end_matches(".bson.gz")
            .to_string()
    }
}

/// Key of a slice's data object.
pub fn data_key(from: OpTime, to: OpTime) -> String {
    format!("{SLICES}{}_{}.bson.gz", key_segment(from), key_segment(to))
}

/// What the slices folder holds.
#[derive(Debug, Clone, Default)]
pub struct SliceListing {
    /// Complete slices, oldest first (by their `to`).
    pub slices: Vec<SliceMeta>,
    /// Data objects without metadata (an interrupted push): key, size, modified.
    pub orphans: Vec<(String, u64, DateTime<Utc>)>,
}

/// Read every slice's metadata.
///
/// # Errors
/// The store failed or a metadata object is unreadable.
pub async fn list(repo: &Repository) -> Result<SliceListing> {
    let objects = repo.store().list(SLICES).await.map_err(|e| repo.err(e))?;
    let metas: Vec<&str> = objects
        .iter()
        .map(|o| o.key.as_str())
        .filter(|k| k.ends_with(".json"))
        .collect();
    let read: Vec<Result<SliceMeta>> = futures::stream::iter(metas.iter())
        .map(|k| async move {
            let body = repo.store().get(k).await.map_err(|e| repo.err(e))?;
            serde_json::from_slice::<SliceMeta>(&body).map_err(|e| Error::Format {
                what: format!("oplog slice metadata {k}"),
                detail: e.to_string(),
            })
        })
        .buffered(8)
        .collect()
        .await;
    let mut slices = read.into_iter().collect::<Result<Vec<_>>>()?;
    slices.sort_by_key(|s| (s.oplog.to, s.start()));
    let orphans = objects
        .iter()
        .filter(|o| {
            o.key.ends_with(".bson.gz")
                && !metas.contains(&o.key.replace(".bson.gz", ".json").as_str())
        })
        .map(|o| (o.key.clone(), o.size, o.last_modified))
        .collect();
    Ok(SliceListing { slices, orphans })
}

/// How `oplog push` runs.
#[derive(Debug, Clone)]
pub struct PushOptions {
    /// Which namespaces to keep.
    pub selection: Selection,
    /// Upload tuning.
    pub upload: UploadConfig,
    /// When the push runs (for the lock and the metadata).
    pub now: DateTime<Utc>,
    /// Random part of the lock name.
    pub nonce: u64,
    /// Cancelled to stop the push (Ctrl-C, SIGTERM): the capture stops and aborts its
    /// upload, no slice is stored, the lock is released and [`push`] returns
    /// [`Error::Cancelled`]. Once the oplog is stored, the push completes instead.
    pub stop: CancellationToken,
}

/// What a push did.
#[derive(Debug, Clone, Serialize)]
pub struct PushOutcome {
    /// The slice written; `None` when the oplog held nothing new.
    pub slice: Option<SliceMeta>,
    /// The position the push continued from.
    pub continued_from: OpTime,
    /// Where that position came from: `slice NAME` or `snapshot ID`.
    pub continued_from_what: String,
}

/// `mongokeep oplog push`: under the repository lock, store the oplog since the last
/// stored position as a new slice.
///
/// # Errors
/// Not a replica set, no point-in-time snapshot yet, another deployment than the one the
/// repository follows, lock held, source or store failures; [`Error::OplogGap`] after
/// storing the slice when the oplog rolled over since the last push.
pub async fn push(source: &Source, repo: &Repository, opts: &PushOptions) -> Result<PushOutcome> {
    if source.info.topology != "replica_set" {
        return Err(Error::Config(format!(
            "oplog push needs a replica set; {} is a {} server, which has no oplog",
            source.info.uri, source.info.topology
        )));
    }
    repo.check_access().await?;
    let guard = lock::acquire(repo, "oplog-push", opts.now, opts.nonce).await?;
    let r = push_locked(source, repo, opts).await;
    guard.release().await;
    r
}

async fn push_locked(
    source: &Source,
    repo: &Repository,
    opts: &PushOptions,
) -> Result<PushOutcome> {
    let (from, what, set) = last_position(repo).await?;
    if set.is_some() && set != source.info.replica_set {
        return Err(Error::Config(format!(
            "the repository follows replica set {:?} (its {what}) but {} is replica set {:?}; push the oplog of the deployment that was backed up",
            set.unwrap_or_default(),
            source.info.uri,
            source.info.replica_set.clone().unwrap_or_default()
        )));
    }
    let stop = source
        .operation_time()
        .await?
        .ok_or_else(|| Error::Source {
            context: format!("reading the operation time of {}", source.info.uri),
            detail: "the server reported none".into(),
        })?;
    if stop <= from {
        tracing::info!(position = %describe(from), "nothing new in the oplog");
        return Ok(PushOutcome {
            slice: None,
            continued_from: from,
            continued_from_what: what,
        });
    }
    let spec = CaptureSpec {
        key: data_key(from, stop),
        from,
        filter: NsFilter::new(vec![opts.selection.clone()]),
        upload: opts.upload,
    };
    let (_tx, rx) = watch::channel(Some(stop));
    let captured = capture(source, repo, &spec, rx, opts.stop.child_token()).await?;
    let gap = match captured.first_read {
        Some(first) if first != from => Some(Gap {
            after: from,
            resumed_at: first,
        }),
        _ => None,
    };
    let meta = SliceMeta {
        format: "mongokeep-oplog-slice".into(),
        format_version: 1,
        created_at: opts.now,
        replica_set: source.info.replica_set.clone(),
        source: source.info.uri.clone(),
        selection: SliceSelection::of(&opts.selection),
        oplog: captured.record,
        gap,
    };
    let body = serde_json::to_vec_pretty(&meta).expect("slice metadata serializes");
    repo.store()
        .put(&meta.meta_key(), body.into())
        .await
        .map_err(|e| repo.err(e))?;
    tracing::info!(slice = %meta.name(), entries = meta.oplog.entries, "oplog slice stored");
    if let Some(g) = gap {
        return Err(Error::OplogGap {
            after: describe(g.after),
            resumed_at: describe(g.resumed_at),
            stored: format!("slice {} ({} entries)", meta.name(), meta.oplog.entries),
        });
    }
    Ok(PushOutcome {
        slice: Some(meta),
        continued_from: from,
        continued_from_what: what,
    })
}

/// The last stored oplog position, what it comes from, and the replica set it belongs to.
async fn last_position(repo: &Repository) -> Result<(OpTime, String, Option<String>)> {
    if let Some(s) = list(repo).await?.slices.pop() {
        return Ok((s.oplog.to, format!("slice {}", s.name()), s.replica_set));
    }
    for snap in repo
        .list_snapshots()
        .await?
        .into_iter()
        .filter(|s| s.complete)
    {
        let m = repo.read_manifest(&snap.id).await?;
        if let (Some(o), true) = (&m.oplog, m.consistency.point_in_time) {
            return Ok((
                o.to,
                format!("snapshot {}", m.snapshot),
                m.source.replica_set,
            ));
        }
    }
    Err(Error::Config(format!(
        "{} holds no point-in-time snapshot to continue from; run `mongokeep backup` of the replica set first, then `oplog push`",
        repo.describe()
    )))
}

//! `mongokeep restore`: bring a snapshot back into a MongoDB deployment, whole or in part,
//! exactly. Plan first (what is selected, where it goes, what already exists there), refuse
//! anything that would overwrite data unless `--drop` says so, then act: per collection its
//! options, its documents (raw BSON, checked against the manifest while streaming), its
//! indexes and its count; several collections at once; the views last.

mod load;
pub mod mapping;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use mongodb::bson::{doc, Bson, Document};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

pub use load::to_document;
pub use mapping::NsMap;

use crate::backup::Selection;
use crate::error::all_or_root_cause;
use crate::manifest::{CollectionEntry, Manifest};
use crate::repository::Repository;
use crate::source::{classify, Source};
use crate::{Error, Result};

/// How a restore runs.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// Which source namespaces (`--ns-include` / `--ns-exclude` over `db.collection`).
    pub selection: Selection,
    /// Renaming (`--ns-from` / `--ns-to`).
    pub map: NsMap,
    /// Replace the selected target collections that exist.
    pub drop: bool,
    /// Collections restored at once.
    pub parallel: usize,
    /// Insert batches in flight per collection (capped collections always use one).
    pub insert_workers: usize,
    /// Print progress on stderr.
    pub progress: bool,
    /// Told how each collection's restore goes ([`RestoreEvent`]), so that verification can
    /// check what is in place while the rest loads.
    pub on_event: Option<tokio::sync::mpsc::UnboundedSender<RestoreEvent>>,
    /// A throwaway copy for verification, not a restore to use: the recorded expiry is left
    /// held ([`HELD_INDEX_EXPIRY`], [`held_collection_expiry`]) for verification to apply
    /// once it has compared the documents ([`apply_expiry`]).
    pub scratch: bool,
    /// Cancelled to stop the restore early: no command is started after it, and
    /// [`execute`] returns [`Error::Cancelled`] once the commands in flight have ended (so
    /// that whoever cancelled it knows that nothing more lands on the target).
    pub stop: CancellationToken,
}

/// `expireAfterSeconds` of the TTL indexes a restore creates, until their documents are
/// counted (and, for verification, compared): the most a server takes (68 years), so that
/// it deletes nothing dated after 1958 meanwhile. The recorded values are applied after
/// ([`apply_expiry`]).
pub const HELD_INDEX_EXPIRY: i64 = i32::MAX as i64;

/// [`HELD_INDEX_EXPIRY`] for an expiring collection (time-series, clustered): MongoDB 6.0
/// takes at most the seconds since the epoch there, and at exactly that deletes every
/// bucket at its next TTL pass (seen on 6.0.5), so one day less: nothing dated after
/// 2 January 1970 expires meanwhile.
pub fn held_collection_expiry() -> i64 {
    (chrono::Utc::now().timestamp() - 86_400).max(0)
}

/// Give `db.name`'s expiring collection option and TTL indexes the values `e` recorded
/// (they were created held at [`HELD_INDEX_EXPIRY`]); `collMod` checks each value as `create`
/// would have. Returns whether `e` recorded any expiry (and so anything was changed).
///
/// # Errors
/// The server refused a value, or failed.
pub(crate) async fn apply_expiry(
    target: &Source,
    db: &str,
    name: &str,
    e: &CollectionEntry,
) -> Result<bool> {
    let mut mods = Vec::new();
    if let Some(v) = e.options.get("expireAfterSeconds") {
        mods.push(
            doc! { "collMod": name, "expireAfterSeconds": to_bson(v, "expireAfterSeconds")? },
        );
    }
    for spec in &e.indexes {
        if let (Some(v), Some(index)) = (
            spec.get("expireAfterSeconds"),
            spec.get("name").and_then(|n| n.as_str()),
        ) {
            mods.push(doc! {
                "collMod": name,
                "index": { "name": index, "expireAfterSeconds": to_bson(v, "expireAfterSeconds")? },
            });
        }
    }
    let changed = !mods.is_empty();
    for cmd in mods {
        target
            .client()
            .database(db)
            .run_command(cmd)
            .await
            .map_err(|err| {
                classify(
                    &target.info.uri,
                    &format!("applying the recorded expiry (expireAfterSeconds) of {db}.{name}"),
                    err,
                )
            })?;
    }
    Ok(changed)
}

/// What a restore tells its watcher while it runs; collections are named by their source
/// `(db, name)`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RestoreEvent {
    /// While a collection created by the restore loads: its first `documents` records (in
    /// the order the server stored them) are committed. Every insert that was under way when
    /// that many documents had been acknowledged has ended since, so no record the server
    /// numbered up to there can still appear. Sent only for collections the restore created.
    Committed {
        db: String,
        name: String,
        documents: u64,
    },
    /// Every document of the collection is inserted (and as many as the archive holds); its
    /// indexes are being built. Its documents change no more.
    Loaded { db: String, name: String },
    /// The collection is restored: documents, indexes and count checked.
    Restored { db: String, name: String },
}

impl Default for RestoreOptions {
    fn default() -> Self {
        Self {
            selection: Selection::default(),
            map: NsMap::default(),
            drop: false,
            parallel: 2,
            insert_workers: 2,
            progress: false,
            on_event: None,
            scratch: false,
            stop: CancellationToken::new(),
        }
    }
}

/// What happens to one target namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// The target does not exist: create it.
    Create,
    /// The target exists and `--drop` was given: drop it, then create it.
    DropAndCreate,
    /// The target exists, is empty, and has the same type: load into it.
    LoadIntoExisting,
    /// The target exists and holds data (or is of another type): refused without `--drop`.
    Refused,
}

/// One planned namespace.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedItem {
    /// The snapshot's entry.
    #[serde(skip)]
    pub entry: CollectionEntry,
    /// Source namespace.
    pub source: String,
    /// Target database.
    pub target_db: String,
    /// Target collection.
    pub target_name: String,
    /// `collection`, `timeseries` or `view`.
    pub kind: String,
    /// What will be done.
    pub action: Action,
    /// Why, for refused targets (and existing ones).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Documents to load.
    pub documents: u64,
    /// BSON bytes to load.
    pub bson_bytes: u64,
}

/// The whole plan.
#[derive(Debug, Clone, Serialize)]
pub struct RestorePlan {
    /// Snapshot id.
    pub snapshot: String,
    /// Target (redacted URI).
    pub target: String,
    /// Namespaces, collections first, views last.
    pub items: Vec<PlannedItem>,
    /// Namespaces of the snapshot left out on purpose, with the reason.
    pub skipped: Vec<String>,
}

impl RestorePlan {
    /// The error for refused targets, if any.
    pub fn refusal(&self) -> Option<Error> {
        let refused: Vec<String> = self
            .items
            .iter()
            .filter(|i| i.action == Action::Refused)
            .map(|i| {
                format!(
                    "{}.{} ({})",
                    i.target_db,
                    i.target_name,
                    i.note.as_deref().unwrap_or("exists")
                )
            })
            .collect();
        (!refused.is_empty()).then(|| {
            Error::Config(format!(
                "refusing to restore into existing collections: {}\n  fix: add --drop to replace exactly these collections, or restore beside them with --ns-from/--ns-to; nothing was written",
                refused.join(", ")
            ))
        })
    }
}

/// One restored namespace.
#[derive(Debug, Clone, Serialize)]
pub struct RestoredItem {
    /// Source namespace.
    pub source: String,
    /// Target namespace.
    pub target: String,
    /// `collection`, `timeseries` or `view`.
    pub kind: String,
    /// Documents loaded.
    pub documents: u64,
    /// BSON bytes loaded.
    pub bson_bytes: u64,
    /// Indexes created (the `_id` index not counted).
    pub indexes: u64,
    /// Seconds spent on this namespace.
    pub seconds: f64,
}

/// The `--json` summary of a restore.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreSummary {
    /// Snapshot id.
    pub snapshot: String,
    /// Target (redacted URI).
    pub target: String,
    /// Collections (and time-series collections) restored.
    pub collections: u64,
    /// Views created.
    pub views: u64,
    /// Documents loaded.
    pub documents: u64,
    /// BSON bytes loaded.
    pub bson_bytes: u64,
    /// Wall seconds of the whole restore.
    pub seconds: f64,
    /// Per namespace.
    pub items: Vec<RestoredItem>,
    /// Left out on purpose.
    pub skipped: Vec<String>,
}

/// Counters the progress line reads.
#[derive(Debug, Default)]
pub struct Progress {
    /// Namespaces finished.
    pub done: AtomicU64,
    /// Documents loaded so far.
    pub documents: AtomicU64,
    /// BSON bytes loaded so far.
    pub bytes: AtomicU64,
}

fn is_users_or_roles(e: &CollectionEntry) -> bool {
    e.db == "admin" && (e.name == "system.users" || e.name == "system.roles")
}

/// Refuse an `--ns-include` glob or `--ns-from` pattern that matches nothing: a typo there,
/// ignored, would restore more than meant or, with `--drop`, replace the live collections
/// of the original names. `also` are namespaces only the oplog a point-in-time restore
/// replays holds.
///
/// # Errors
/// Each pattern that matches nothing, named, as a usage error.
pub fn check_patterns(manifest: &Manifest, opts: &RestoreOptions, also: &[String]) -> Result<()> {
    let mut all: Vec<String> = manifest
        .collections
        .iter()
        .map(|e| format!("{}.{}", e.db, e.name))
        .collect();
    all.extend(
        also.iter()
            .filter(|ns| !all.contains(ns))
            .cloned()
            .collect::<Vec<_>>(),
    );
    let selected: Vec<String> = all
        .iter()
        .filter(|ns| opts.selection.wants_ns(ns))
        .cloned()
        .collect();
    let mut unmatched: Vec<String> = opts
        .selection
        .unmatched(&[], &all)
        .into_iter()
        .map(|g| format!("{g} matches no namespace of the snapshot"))
        .collect();
    unmatched.extend(
        opts.map
            .unmatched(&selected)
            .into_iter()
            .map(|p| format!("{p} matches no namespace the restore selects")),
    );
    if unmatched.is_empty() {
        return Ok(());
    }
    Err(Error::Config(format!(
            "{} (snapshot {} holds {}); nothing was written\n  fix: correct the glob or pattern (`mongokeep show {}` lists the snapshot's collections)",
            unmatched.join("; "),
            manifest.snapshot,
            crate::backup::some_of(&all),
            manifest.snapshot
        )))
}

/// Decide what the restore will do, reading what already exists on the target. Writes
/// nothing.
///
/// # Errors
/// Two source namespaces mapped onto one target, or the target failed.
pub async fn plan(
    manifest: &Manifest,
    target: &Source,
    opts: &RestoreOptions,
) -> Result<RestorePlan> {
    let mut items = Vec::new();
    let mut skipped = Vec::new();
    let mut seen: HashMap<(String, String), String> = HashMap::new();
    for e in &manifest.collections {
        let ns = format!("{}.{}", e.db, e.name);
        if !opts.selection.wants_ns(&ns) {
            continue;
        }
        if is_users_or_roles(e) {
            skipped.push(format!(
                "{ns}: users and roles are not restored by mongokeep; use `mongokeep export` and `mongorestore --restoreDbUsersAndRoles`"
            ));
            continue;
        }
        let (tdb, tname) = opts.map.map(&e.db, &e.name);
        if let Some(other) = seen.insert((tdb.clone(), tname.clone()), ns.clone()) {
            return Err(Error::Config(format!(
                "{other} and {ns} would both be restored into {tdb}.{tname}; change --ns-from/--ns-to so each target is used once (nothing was written)"
            )));
        }
        items.push(PlannedItem {
            entry: e.clone(),
            source: ns,
            target_db: tdb,
            target_name: tname,
            kind: e.kind.clone(),
            action: Action::Create,
            note: None,
            documents: e.count,
            bson_bytes: e.bson_bytes,
        });
    }
    // What exists on the target, one listing per database.
    let mut existing: BTreeMap<String, HashMap<String, String>> = BTreeMap::new();
    for item in &items {
        if !existing.contains_key(&item.target_db) {
            let specs = target.list_collections(&item.target_db).await?;
            existing.insert(
                item.target_db.clone(),
                specs.into_iter().map(|s| (s.name, s.kind)).collect(),
            );
        }
    }
    for item in &mut items {
        let Some(kind) = existing[&item.target_db].get(&item.target_name) else {
            continue;
        };
        if opts.drop {
            item.action = Action::DropAndCreate;
            item.note = Some(format!("existing {kind} is dropped first"));
            continue;
        }
        if *kind != item.kind || kind == "view" {
            item.action = Action::Refused;
            item.note = Some(format!("a {kind} of that name exists"));
            continue;
        }
        // The catalog's count can be stale after an unclean shutdown (a restore killed
        // half-way); look for a document instead.
        let coll = target
            .client()
            .database(&item.target_db)
            .collection::<Document>(&item.target_name);
        let ctx = |e| {
            classify(
                &target.info.uri,
                &format!("reading {}.{}", item.target_db, item.target_name),
                e,
            )
        };
        if coll.find_one(doc! {}).await.map_err(ctx)?.is_some() {
            let estimate = coll.estimated_document_count().await.map_err(ctx)?;
            item.action = Action::Refused;
            item.note = Some(format!("holds documents, about {}", estimate.max(1)));
        } else {
            item.action = Action::LoadIntoExisting;
            item.note = Some("exists and is empty".into());
        }
    }
    // Collections first, views last (a view may read any of them).
    items.sort_by_key(|i| i.kind == "view");
    Ok(RestorePlan {
        snapshot: manifest.snapshot.clone(),
        target: target.info.uri.clone(),
        items,
        skipped,
    })
}

/// Carry out a plan.
///
/// # Errors
/// A refused target (nothing written), the repository or target failing, an object whose
/// checksum differs from the manifest, or a count that differs after loading.
pub async fn execute(
    repo: &Repository,
    target: &Source,
    plan: &RestorePlan,
    opts: &RestoreOptions,
) -> Result<RestoreSummary> {
    if let Some(e) = plan.refusal() {
        return Err(e);
    }
    let started = Instant::now();
    let progress = Arc::new(Progress::default());
    let ticker = opts
        .progress
        .then(|| spawn_ticker(progress.clone(), plan.items.len() as u64, started))
        .map(tokio_util::task::AbortOnDropHandle::new);
    // Cancelled by a failure here, or by the caller's `stop`.
    let cancel = opts.stop.child_token();
    let (views, collections): (Vec<&PlannedItem>, Vec<&PlannedItem>) =
        plan.items.iter().partition(|i| i.kind == "view");
    // Largest first: started last, a large collection would run on alone at the end.
    let sizes: Vec<Option<u64>> = collections
        .iter()
        .map(|i| Some(i.entry.bson_bytes))
        .collect();
    let collections = crate::source::largest_first(&sizes)
        .into_iter()
        .map(|i| collections[i]);
    let results: Vec<Result<RestoredItem>> = futures::stream::iter(collections)
        .map(|item| {
            let (cancel, progress) = (cancel.clone(), progress.clone());
            async move {
                if cancel.is_cancelled() {
                    return Err(Error::Cancelled);
                }
                let r =
                    load::restore_collection(repo, target, item, opts, &cancel, &progress).await;
                match (&r, &opts.on_event) {
                    (Err(_), _) => cancel.cancel(),
                    (Ok(_), Some(tx)) => {
                        let _ = tx.send(RestoreEvent::Restored {
                            db: item.entry.db.clone(),
                            name: item.entry.name.clone(),
                        });
                    }
                    (Ok(_), None) => {}
                }
                progress.done.fetch_add(1, Ordering::Relaxed);
                r
            }
        })
        .buffer_unordered(opts.parallel.max(1))
        .collect()
        .await;
    let mut restored = all_or_root_cause(results)?;
    for item in views {
        if cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        restored.push(create_view(target, item).await?);
        progress.done.fetch_add(1, Ordering::Relaxed);
    }
    if let Some(t) = ticker {
        drop(t);
        eprintln!();
    }
    restored.sort_by(|a, b| a.target.cmp(&b.target));
    Ok(RestoreSummary {
        snapshot: plan.snapshot.clone(),
        target: plan.target.clone(),
        collections: restored.iter().filter(|r| r.kind != "view").count() as u64,
        views: restored.iter().filter(|r| r.kind == "view").count() as u64,
        documents: restored.iter().map(|r| r.documents).sum(),
        bson_bytes: restored.iter().map(|r| r.bson_bytes).sum(),
        seconds: started.elapsed().as_secs_f64(),
        items: restored,
        skipped: plan.skipped.clone(),
    })
}

/// Drop `db.name` on the target when the plan says so.
pub(crate) async fn drop_if_planned(target: &Source, item: &PlannedItem) -> Result<()> {
    if item.action == Action::DropAndCreate {
        target
            .client()
            .database(&item.target_db)
            .collection::<Document>(&item.target_name)
            .drop()
            .await
            .map_err(|e| {
                classify(
                    &target.info.uri,
                    &format!("dropping {}.{}", item.target_db, item.target_name),
                    e,
                )
            })?;
    }
    Ok(())
}

/// `create` with the recorded options (everything `listCollections` reported), a
/// collection's own expiry held ([`held_collection_expiry`]).
pub(crate) async fn create_with_options(target: &Source, item: &PlannedItem) -> Result<()> {
    let mut cmd = doc! { "create": item.target_name.clone() };
    for (k, v) in to_document(&item.entry.options, &item.source)? {
        cmd.insert(k, v);
    }
    if cmd.contains_key("expireAfterSeconds") {
        cmd.insert("expireAfterSeconds", held_collection_expiry());
    }
    target
        .client()
        .database(&item.target_db)
        .run_command(cmd)
        .await
        .map(|_| ())
        .map_err(|e| {
            classify(
                &target.info.uri,
                &format!("creating {}.{}", item.target_db, item.target_name),
                e,
            )
        })
}

async fn create_view(target: &Source, item: &PlannedItem) -> Result<RestoredItem> {
    let t = Instant::now();
    drop_if_planned(target, item).await?;
    create_with_options(target, item).await?;
    Ok(RestoredItem {
        source: item.source.clone(),
        target: format!("{}.{}", item.target_db, item.target_name),
        kind: "view".into(),
        documents: 0,
        bson_bytes: 0,
        indexes: 0,
        seconds: t.elapsed().as_secs_f64(),
    })
}

fn spawn_ticker(p: Arc<Progress>, total: u64, started: Instant) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tick.tick().await;
            let bytes = p.bytes.load(Ordering::Relaxed);
            let secs = started.elapsed().as_secs_f64().max(0.001);
            eprint!(
                "\rrestoring: {}/{total} namespaces, {} documents, {:.1} MiB of BSON, {:.1} MiB/s   ",
                p.done.load(Ordering::Relaxed),
                p.documents.load(Ordering::Relaxed),
                bytes as f64 / 1048576.0,
                bytes as f64 / 1048576.0 / secs
            );
        }
    })
}

/// A BSON value back from the manifest's canonical extended JSON.
pub(crate) fn to_bson(v: &serde_json::Value, what: &str) -> Result<Bson> {
    Bson::try_from(v.clone()).map_err(|e| Error::Format {
        what: format!("the manifest's record of {what}"),
        detail: e.to_string(),
    })
}

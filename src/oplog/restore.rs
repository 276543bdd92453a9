//! Restoring a snapshot to a point in time: the snapshot's collections (as
//! [`crate::restore`] does), then its own oplog (which makes it equal the source at its
//! consistency point), then the stored slices up to the time asked for.
//!
//! Plan first: the coverage check (refusing a time before the snapshot, in a gap or after
//! the last slice), the collections' plan, and the namespaces only the oplog creates, which
//! must not already hold data on the target. Then act: every oplog object's checksum is
//! verified before anything is written, the collections are restored, the oplog replayed.
//!
//! [`restore_to_time`] is the library entry point (`verify --to-time` calls it).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use serde::Serialize;

use super::coverage::{self, Anchor, Span};
use super::entry::NsFilter;
use super::optime::{describe, wall_or_seconds, ToTime};
use super::replay::{replay_object, Flow, ReplayStats, Replayer};
use super::slices::{self, SliceMeta, SliceSelection};
use super::snapshot::snapshot_oplog;
use crate::backup::Selection;
use crate::manifest::{Manifest, OpTime, OplogRecord, StoredObject};
use crate::repository::Repository;
use crate::restore::{self, RestoreOptions, RestorePlan, RestoreSummary};
use crate::source::{classify, Source};
use crate::{Error, Result};

/// A namespace that only the oplog creates (it is not in the snapshot's collections).
#[derive(Debug, Clone, Serialize)]
pub struct OplogTarget {
    /// Source namespace.
    pub source: String,
    /// Target namespace.
    pub target: String,
    /// `create` (replay creates it), `drop first` (`--drop`), or `REFUSED` (it exists).
    pub action: String,
}

/// The plan of a point-in-time restore.
#[derive(Debug, Clone, Serialize)]
pub struct PitrPlan {
    /// The collections (flattened in JSON: the same fields as a plain restore's plan).
    #[serde(flatten)]
    pub restore: RestorePlan,
    /// The time asked for (`None`: the snapshot's consistency point).
    pub to_time: Option<String>,
    /// The snapshot's consistency point.
    pub consistency_point: String,
    /// The snapshot's own oplog.
    pub snapshot_oplog: OplogRecord,
    /// Slices replayed after it, in order.
    pub slices: Vec<SliceMeta>,
    /// Namespaces only the oplog creates.
    pub oplog_targets: Vec<OplogTarget>,
    #[serde(skip)]
    to: Option<ToTime>,
    #[serde(skip)]
    selection: Selection,
}

impl PitrPlan {
    /// The error for refused targets, if any.
    pub fn refusal(&self) -> Option<Error> {
        if let Some(e) = self.restore.refusal() {
            return Some(e);
        }
        let refused: Vec<&str> = self
            .oplog_targets
            .iter()
            .filter(|t| t.action == "REFUSED")
            .map(|t| t.target.as_str())
            .collect();
        (!refused.is_empty()).then(|| {
            Error::Config(format!(
                "refusing to restore: the oplog creates {}, which already exist on the target\n  fix: add --drop to replace them, or restore beside them with --ns-from/--ns-to; nothing was written",
                refused.join(", ")
            ))
        })
    }

    /// Every oplog object the replay reads.
    pub fn objects(&self) -> Vec<StoredObject> {
        let mut v = vec![self.snapshot_oplog.object.clone()];
        v.extend(self.slices.iter().map(|s| s.oplog.object.clone()));
        v
    }
}

/// What a point-in-time restore did.
#[derive(Debug, Clone, Serialize)]
pub struct PitrSummary {
    /// The collections' restore.
    #[serde(flatten)]
    pub restore: RestoreSummary,
    /// The time asked for.
    pub to_time: Option<String>,
    /// The last oplog position applied: the restored data equals the source there.
    pub restored_to: String,
    /// Its wall-clock time.
    pub restored_to_time: chrono::DateTime<chrono::Utc>,
    /// The oplog replay.
    pub oplog: ReplayStats,
    /// Slices replayed.
    pub slices: usize,
    /// Seconds of the whole restore, replay included.
    pub total_seconds: f64,
}

/// The selection a snapshot was taken with.
pub fn snapshot_selection(m: &Manifest) -> Result<Selection> {
    let o = &m.options;
    Selection::new(
        o.databases.clone(),
        o.ns_include.clone(),
        o.ns_exclude.clone(),
        o.include_users,
    )
}

/// Every point-in-time snapshot of the repository, as coverage anchors, newest first.
///
/// # Errors
/// The store failed or a manifest is unreadable.
pub async fn anchors(repo: &Repository) -> Result<Vec<Anchor>> {
    Ok(anchors_with_selection(repo)
        .await?
        .into_iter()
        .map(|(a, _)| a)
        .collect())
}

/// As [`anchors`], each with the selection its snapshot was taken with (a slice pushed with
/// another, narrower one cannot carry it: [`plan`] refuses it).
///
/// # Errors
/// The store failed or a manifest is unreadable.
pub async fn anchors_with_selection(repo: &Repository) -> Result<Vec<(Anchor, SliceSelection)>> {
    Ok(repo
        .list_snapshots_with(anchor_of)
        .await?
        .into_iter()
        .filter_map(|(_, a)| a.flatten())
        .collect())
}

/// A complete snapshot's coverage anchor and selection; `None` when it is not
/// point-in-time. For [`Repository::list_snapshots_with`], which reads each manifest once.
pub fn anchor_of(m: &Manifest) -> Option<(Anchor, SliceSelection)> {
    let o = snapshot_oplog(m).ok()?;
    Some((
        Anchor {
            id: m.snapshot.clone(),
            point: o.to,
            point_wall: o.to_wall,
        },
        manifest_selection(m),
    ))
}

/// The selection a snapshot was taken with, as slices record theirs.
fn manifest_selection(m: &Manifest) -> SliceSelection {
    SliceSelection {
        databases: m.options.databases.clone(),
        ns_include: m.options.ns_include.clone(),
        ns_exclude: m.options.ns_exclude.clone(),
    }
}

/// Whether a slice pushed with `slice` can carry a snapshot taken with `snapshot`.
pub fn carries(slice: &SliceSelection, snapshot: &SliceSelection) -> bool {
    slice.is_everything() || slice == snapshot
}

/// How far a snapshot can be restored with `--to-time`.
#[derive(Debug, Clone)]
pub struct Recoverable {
    /// The last position.
    pub to: OpTime,
    /// Its wall-clock time.
    pub to_wall: Option<chrono::DateTime<chrono::Utc>>,
    /// A gap right after `to`: where the stored oplog resumes.
    pub gap: Option<OpTime>,
    /// The slice right after `to` that was pushed with another selection, which [`plan`]
    /// refuses.
    pub refused: Option<String>,
}

/// The spans a snapshot taken with `selection` can replay: those whose slice [`carries`]
/// it (`selections[i]` is the selection `spans[i]` was pushed with), with their indexes into
/// `spans`.
pub fn usable_spans(
    selection: &SliceSelection,
    spans: &[Span],
    selections: &[SliceSelection],
) -> (Vec<usize>, Vec<Span>) {
    spans
        .iter()
        .zip(selections)
        .enumerate()
        .filter(|(_, (_, sel))| carries(sel, selection))
        .map(|(i, (s, _))| (i, s.clone()))
        .unzip()
}

/// How far `anchor`, a snapshot taken with `selection`, can be restored: the chain of the
/// spans it can use ([`usable_spans`]) that [`plan`] would replay from its consistency
/// point ([`coverage::reach`]), up to a gap. Where a slice of another selection would have
/// carried it further, that slice is named instead of a gap (`selections[i]` is the
/// selection `spans[i]` was pushed with).
pub fn recoverable(
    anchor: &Anchor,
    selection: &SliceSelection,
    spans: &[Span],
    selections: &[SliceSelection],
) -> Recoverable {
    let (_, usable) = usable_spans(selection, spans, selections);
    let r = coverage::reach(anchor, &usable);
    let refused = spans
        .iter()
        .zip(selections)
        .filter(|(s, sel)| !carries(sel, selection) && s.start <= r.to && s.to > r.to)
        .max_by_key(|(s, _)| s.to)
        .map(|(s, _)| s.name.clone());
    Recoverable {
        to: r.to,
        to_wall: r.to_wall,
        gap: match refused {
            Some(_) => None,
            None => r.gap.map(|(_, resumed)| resumed),
        },
        refused,
    }
}

/// The slices (indexes into `spans`, in replay order) that bring `anchor`, a snapshot
/// taken with `selection`, to `to`, using only slices that carry it ([`usable_spans`];
/// `selections[i]` is the selection `spans[i]` was pushed with).
///
/// # Errors
/// As [`coverage::slices_for`]; when only a slice of another selection covers `to`, the
/// message names that slice and the fix.
pub fn chain_to(
    anchor: &Anchor,
    selection: &SliceSelection,
    spans: &[Span],
    selections: &[SliceSelection],
    to: ToTime,
    others: &[Anchor],
) -> Result<Vec<usize>, String> {
    let (index, usable) = usable_spans(selection, spans, selections);
    match coverage::slices_for(anchor, &usable, to, others) {
        Ok(chain) => Ok(chain.into_iter().map(|k| index[k]).collect()),
        Err(m) => {
            // Covered only through a slice of another selection: name that slice.
            let refused = coverage::slices_for(anchor, spans, to, &[])
                .ok()
                .and_then(|chain| {
                    chain
                        .into_iter()
                        .find(|&i| !carries(&selections[i], selection))
                });
            Err(match refused {
                Some(i) => format!(
                    "slice {} was pushed with another selection ({:?}) than snapshot {} ({:?}): it may lack operations the snapshot's namespaces need; push with the backup's --db/--ns-include/--ns-exclude, or with none",
                    spans[i].name, selections[i], anchor.id, selection
                ),
                None => m,
            })
        }
    }
}

/// Slices as coverage spans.
pub fn spans(slices: &[SliceMeta]) -> Vec<Span> {
    slices
        .iter()
        .map(|s| Span {
            name: s.name(),
            start: s.start(),
            to: s.oplog.to,
            to_wall: s.oplog.to_wall,
        })
        .collect()
}

/// Plan restoring `manifest` to `to` (or to its consistency point). Writes nothing.
///
/// # Errors
/// The snapshot is not point-in-time, `to` is not covered, a slice was pushed with another
/// selection than the snapshot, or the repository or target failed.
pub async fn plan(
    repo: &Repository,
    manifest: &Manifest,
    target: &Source,
    opts: &RestoreOptions,
    to: Option<ToTime>,
) -> Result<PitrPlan> {
    let oplog = snapshot_oplog(manifest)?.clone();
    let anchor = Anchor {
        id: manifest.snapshot.clone(),
        point: oplog.to,
        point_wall: oplog.to_wall,
    };
    let mut slices = Vec::new();
    if let Some(to) = to {
        let listing = slices::list(repo).await?;
        let selections: Vec<SliceSelection> =
            listing.slices.iter().map(|s| s.selection.clone()).collect();
        let others = anchors(repo).await?;
        let chain = chain_to(
            &anchor,
            &manifest_selection(manifest),
            &spans(&listing.slices),
            &selections,
            to,
            &others,
        )
        .map_err(|m| Error::Config(format!("cannot restore to {to}: {m}")))?;
        slices = chain
            .into_iter()
            .map(|i| listing.slices[i].clone())
            .collect();
    }
    // Namespaces the replay creates count as the snapshot's for the patterns.
    let replayed: Vec<String> = oplog
        .namespaces
        .iter()
        .chain(slices.iter().flat_map(|s| &s.oplog.namespaces))
        .cloned()
        .collect();
    restore::check_patterns(manifest, opts, &replayed)?;
    let restore_plan = restore::plan(manifest, target, opts).await?;
    let selection = snapshot_selection(manifest)?;
    let oplog_targets = oplog_targets(manifest, &oplog, &slices, target, opts, &selection).await?;
    Ok(PitrPlan {
        restore: restore_plan,
        to_time: to.map(|t| t.to_string()),
        consistency_point: describe(oplog.to),
        snapshot_oplog: oplog,
        slices,
        oplog_targets,
        to,
        selection,
    })
}

async fn oplog_targets(
    manifest: &Manifest,
    oplog: &OplogRecord,
    slices: &[SliceMeta],
    target: &Source,
    opts: &RestoreOptions,
    selection: &Selection,
) -> Result<Vec<OplogTarget>> {
    let in_snapshot: BTreeSet<String> = manifest
        .collections
        .iter()
        .map(|c| format!("{}.{}", c.db, c.name))
        .collect();
    let filter = NsFilter::new(vec![selection.clone(), opts.selection.clone()]);
    let mut by_db: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let names = oplog
        .namespaces
        .iter()
        .chain(slices.iter().flat_map(|s| &s.oplog.namespaces));
    for ns in names.collect::<BTreeSet<_>>() {
        let Some((db, coll)) = ns.split_once('.') else {
            continue;
        };
        if in_snapshot.contains(ns) || !filter.wants(db, coll) {
            continue;
        }
        let (tdb, tcoll) = opts.map.map(db, coll);
        by_db.entry(tdb).or_default().push((ns.clone(), tcoll));
    }
    let mut out = Vec::new();
    for (tdb, items) in by_db {
        let existing: BTreeSet<String> = target
            .list_collections(&tdb)
            .await?
            .into_iter()
            .map(|s| s.name)
            .collect();
        for (source, tcoll) in items {
            let action = match (existing.contains(&tcoll), opts.drop) {
                (false, _) => "create",
                (true, true) => "drop first",
                (true, false) => "REFUSED",
            };
            out.push(OplogTarget {
                source,
                target: format!("{tdb}.{tcoll}"),
                action: action.into(),
            });
        }
    }
    Ok(out)
}

/// Carry out a plan: verify the oplog objects, restore the collections, replay.
///
/// # Errors
/// A refused target (nothing written), a checksum, the repository or the target failing,
/// or an oplog entry that cannot be replayed.
pub async fn execute(
    repo: &Repository,
    target: &Source,
    plan: &PitrPlan,
    opts: &RestoreOptions,
) -> Result<PitrSummary> {
    if let Some(e) = plan.refusal() {
        return Err(e);
    }
    let started = Instant::now();
    // Every oplog object is checked before anything is written: a corrupt slice must not
    // leave a half-replayed target.
    crate::fetch::check_objects(repo, &plan.objects(), 4).await?;
    for t in plan
        .oplog_targets
        .iter()
        .filter(|t| t.action == "drop first")
    {
        let (db, coll) = t.target.split_once('.').expect("db.coll");
        target
            .client()
            .database(db)
            .collection::<mongodb::bson::Document>(coll)
            .drop()
            .await
            .map_err(|e| classify(&target.info.uri, &format!("dropping {}", t.target), e))?;
    }
    let summary = restore::execute(repo, target, &plan.restore, opts).await?;
    let filter = NsFilter::new(vec![plan.selection.clone(), opts.selection.clone()]);
    let mut replayer = Replayer::new(target, filter, opts.map.clone(), None);
    replay_object(
        repo,
        &plan.snapshot_oplog.object,
        &mut replayer,
        None,
        &opts.stop,
    )
    .await?;
    replayer.mark_applied(plan.snapshot_oplog.to);
    for s in &plan.slices {
        if replay_object(repo, &s.oplog.object, &mut replayer, plan.to, &opts.stop).await?
            == Flow::Done
        {
            break;
        }
    }
    replayer.finish().await?;
    // The last position the replay included (applied, or left out as not selected): the
    // restored data equals the source there.
    let reached = match replayer.stats.applied_to {
        Some(a) if a > plan.snapshot_oplog.to => (a, replayer.stats.applied_to_wall),
        _ => (plan.snapshot_oplog.to, plan.snapshot_oplog.to_wall),
    };
    tracing::info!(snapshot = %plan.restore.snapshot, restored_to = %describe(reached.0), "point-in-time restore complete");
    Ok(PitrSummary {
        restore: summary,
        to_time: plan.to_time.clone(),
        restored_to: format!("{}:{}", reached.0.t, reached.0.i),
        restored_to_time: wall_or_seconds(reached.0, reached.1),
        oplog: replayer.stats.clone(),
        slices: plan.slices.len(),
        total_seconds: started.elapsed().as_secs_f64(),
    })
}

/// Restore `manifest` into `target` as the source was at `to` (or at the snapshot's
/// consistency point): plan, refuse what would overwrite data, execute.
///
/// # Errors
/// As [`plan`] and [`execute`].
pub async fn restore_to_time(
    repo: &Repository,
    manifest: &Manifest,
    target: &Source,
    opts: &RestoreOptions,
    to: Option<ToTime>,
) -> Result<PitrSummary> {
    let p = plan(repo, manifest, target, opts, to).await?;
    execute(repo, target, &p, opts).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oplog::coverage::fixtures::{op, span};

    fn anchor(point: u32) -> Anchor {
        coverage::fixtures::anchor("snap", point)
    }

    fn only(db: &str) -> SliceSelection {
        SliceSelection {
            databases: vec![db.into()],
            ..Default::default()
        }
    }

    /// `a` and `c` were pushed with no selection, `app` for one database only; `app`
    /// reaches furthest from 200.
    fn pushed() -> (Vec<Span>, Vec<SliceSelection>) {
        (
            vec![
                span("a", 100, 200),
                span("app", 200, 400),
                span("c", 200, 300),
            ],
            vec![
                SliceSelection::default(),
                only("app"),
                SliceSelection::default(),
            ],
        )
    }

    #[test]
    fn a_snapshot_is_carried_by_the_slices_of_its_selection_past_one_of_another() {
        let (spans, sels) = pushed();
        let everything = SliceSelection::default();
        // Before, the chain took `app` (furthest) and restore then refused it: the
        // snapshot reached only 200. `c` covers the same positions and can be used.
        let r = recoverable(&anchor(150), &everything, &spans, &sels);
        assert_eq!(r.to, op(300));
        assert_eq!(
            r.refused.as_deref(),
            Some("app"),
            "it alone would carry further"
        );
        assert_eq!(r.gap, None);
        assert_eq!(
            chain_to(
                &anchor(150),
                &everything,
                &spans,
                &sels,
                ToTime::Op(op(250)),
                &[]
            ),
            Ok(vec![0, 2])
        );
        // Past `c`, only `app` covers: refused, and the message says why and the fix.
        let e = chain_to(
            &anchor(150),
            &everything,
            &spans,
            &sels,
            ToTime::Op(op(350)),
            &[],
        )
        .unwrap_err();
        assert!(
            e.contains("slice app was pushed with another selection")
                && e.contains("push with the backup's --db"),
            "{e}"
        );
        // A time no slice covers is a plain coverage error.
        let e = chain_to(
            &anchor(150),
            &everything,
            &spans,
            &sels,
            ToTime::Op(op(450)),
            &[],
        )
        .unwrap_err();
        assert!(!e.contains("another selection"), "{e}");

        // A snapshot of that one database is carried by all three.
        let r = recoverable(&anchor(150), &only("app"), &spans, &sels);
        assert_eq!((r.to, r.refused), (op(400), None));
        assert_eq!(
            chain_to(
                &anchor(150),
                &only("app"),
                &spans,
                &sels,
                ToTime::Op(op(350)),
                &[]
            ),
            Ok(vec![0, 1])
        );
    }

    #[test]
    fn a_gap_among_the_usable_slices_is_a_gap() {
        let spans = vec![span("a", 100, 200), span("b", 250, 300)];
        let sels = vec![SliceSelection::default(); 2];
        let r = recoverable(&anchor(150), &SliceSelection::default(), &spans, &sels);
        assert_eq!((r.to, r.gap, r.refused), (op(200), Some(op(250)), None));
    }
}

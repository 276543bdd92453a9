//! Retention of oplog slices: a slice is kept while a kept point-in-time snapshot needs it
//! to roll forward, from its consistency point to the next kept snapshot (or to now, for
//! the newest). Since kept snapshots follow one another, that is every slice reaching past
//! the oldest kept snapshot's consistency point; the slices that end before it can no
//! longer serve any restore and are removed. The newest slice is always kept: the next
//! `oplog push` continues from it. Data objects without metadata (an interrupted push) are
//! garbage once older than the policy's grace period.
//!
//! Planning is pure ([`plan_slices`]); [`inventory`] reads the repository and [`execute`]
//! removes (metadata first, so a half-removed slice is never seen as complete).

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::plan::Plan;
use crate::manifest::OpTime;
use crate::oplog::optime::{describe, wall_or_seconds};
use crate::oplog::slices::{self, SliceMeta};
use crate::repository::Repository;
use crate::Result;

/// A slice as retention sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct SliceInfo {
    /// Slice name.
    pub name: String,
    /// First position covered.
    pub start: OpTime,
    /// Last position covered.
    pub to: OpTime,
    /// Wall-clock time of `to`.
    pub to_wall: Option<DateTime<Utc>>,
    /// Bytes stored (data object; the metadata is small).
    pub size_bytes: u64,
    /// Keys to delete, metadata first.
    pub keys: Vec<String>,
}

impl SliceInfo {
    /// Of a slice's metadata.
    pub fn of(m: &SliceMeta) -> Self {
        Self {
            name: m.name(),
            start: m.start(),
            to: m.oplog.to,
            to_wall: m.oplog.to_wall,
            size_bytes: m.oplog.object.size,
            keys: vec![m.meta_key(), m.oplog.object.key.clone()],
        }
    }
}

/// A kept point-in-time snapshot: id and consistency point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptPoint {
    /// Snapshot id.
    pub id: String,
    /// Its consistency point.
    pub point: OpTime,
}

/// The decision on one slice.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SliceDecision {
    /// Slice name.
    pub name: String,
    /// Wall-clock time of its end.
    pub to_time: DateTime<Utc>,
    /// Bytes stored.
    pub size_bytes: u64,
    /// Keep or remove.
    pub keep: bool,
    /// Why, in words.
    pub reason: String,
    /// Keys removed (empty when kept).
    #[serde(skip)]
    pub keys: Vec<String>,
}

/// Decide every slice, given the kept point-in-time snapshots.
pub fn plan_slices(slices: &[SliceInfo], kept: &[KeptPoint]) -> Vec<SliceDecision> {
    let mut kept: Vec<&KeptPoint> = kept.iter().collect();
    kept.sort_by_key(|k| k.point);
    let newest_to = slices.iter().map(|s| s.to).max();
    let mut out: Vec<SliceDecision> = slices
        .iter()
        .map(|s| {
            // The snapshot this slice rolls forward: the newest kept one whose point it
            // reaches past.
            let from = kept.iter().rposition(|k| k.point < s.to);
            let (keep, reason) = match from {
                Some(i) => {
                    let next = kept
                        .get(i + 1)
                        .map_or_else(|| "now".to_string(), |n| format!("snapshot {}", n.id));
                    (
                        true,
                        format!("rolls snapshot {} forward to {next}", kept[i].id),
                    )
                }
                None if Some(s.to) == newest_to => (
                    true,
                    "newest slice: the next oplog push continues from it".to_string(),
                ),
                None => match kept.first() {
                    Some(k) => (
                        false,
                        format!(
                            "ends before the oldest kept point-in-time snapshot {} ({})",
                            k.id,
                            describe(k.point)
                        ),
                    ),
                    None => (false, "no kept snapshot is point-in-time".to_string()),
                },
            };
            SliceDecision {
                name: s.name.clone(),
                to_time: wall_or_seconds(s.to, s.to_wall),
                size_bytes: s.size_bytes,
                keep,
                keys: if keep { vec![] } else { s.keys.clone() },
                reason,
            }
        })
        .collect();
    out.sort_by(|a, b| b.name.cmp(&a.name));
    out
}

/// The oplog part of a prune plan.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct OplogPlan {
    /// One decision per slice, newest first.
    pub slices: Vec<SliceDecision>,
    /// Slice data objects without metadata, past the grace period (key, bytes).
    pub orphans: Vec<(String, u64)>,
}

impl OplogPlan {
    /// Bytes the plan frees.
    pub fn bytes_to_free(&self) -> u64 {
        self.slices
            .iter()
            .filter(|d| !d.keep)
            .map(|d| d.size_bytes)
            .sum::<u64>()
            + self.orphans.iter().map(|o| o.1).sum::<u64>()
    }
}

/// Read the slices and the consistency points of the snapshots `plan` keeps, and plan.
///
/// # Errors
/// The store failed or a manifest or slice metadata is unreadable.
pub async fn inventory(repo: &Repository, plan: &Plan) -> Result<OplogPlan> {
    let listing = slices::list(repo).await?;
    if listing.slices.is_empty() && listing.orphans.is_empty() {
        return Ok(OplogPlan::default());
    }
    let mut kept = Vec::new();
    for d in plan.kept() {
        let m = repo.read_manifest(&d.id).await?;
        if let (Some(o), true) = (&m.oplog, m.consistency.point_in_time) {
            kept.push(KeptPoint {
                id: d.id.clone(),
                point: o.to,
            });
        }
    }
    let infos: Vec<SliceInfo> = listing.slices.iter().map(SliceInfo::of).collect();
    let orphans = listing
        .orphans
        .into_iter()
        .filter(|(_, _, modified)| plan.grace_cutoff.is_some_and(|c| *modified < c))
        .map(|(k, size, _)| (k, size))
        .collect();
    Ok(OplogPlan {
        slices: plan_slices(&infos, &kept),
        orphans,
    })
}

/// Remove what `plan` removes; returns (slices removed, bytes freed). Once `stop` is
/// cancelled no further removal starts ([`crate::Error::Cancelled`]).
///
/// # Errors
/// The store failed, or `stop` was cancelled; what was deleted stays deleted.
pub async fn execute(
    repo: &Repository,
    plan: &OplogPlan,
    report: &mut (dyn FnMut(&str, usize, u64) + Send),
    stop: &tokio_util::sync::CancellationToken,
) -> Result<(usize, u64)> {
    let (mut n, mut bytes) = (0, 0);
    for d in plan.slices.iter().filter(|d| !d.keep) {
        crate::interrupt::stopped(stop)?;
        for k in &d.keys {
            repo.store().delete(k).await.map_err(|e| repo.err(e))?;
        }
        n += 1;
        bytes += d.size_bytes;
        report(&d.name, d.keys.len(), d.size_bytes);
    }
    for (k, size) in &plan.orphans {
        crate::interrupt::stopped(stop)?;
        repo.store().delete(k).await.map_err(|e| repo.err(e))?;
        bytes += size;
        report(k, 1, *size);
    }
    Ok((n, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(t: u32) -> OpTime {
        OpTime { t, i: 1 }
    }

    fn slice(name: &str, start: u32, to: u32) -> SliceInfo {
        SliceInfo {
            name: name.into(),
            start: op(start),
            to: op(to),
            to_wall: None,
            size_bytes: 10,
            keys: vec![format!("{name}.json"), format!("{name}.bson.gz")],
        }
    }

    fn kept(id: &str, point: u32) -> KeptPoint {
        KeptPoint {
            id: id.into(),
            point: op(point),
        }
    }

    fn decisions(slices: &[SliceInfo], k: &[KeptPoint]) -> Vec<(String, bool, String)> {
        let mut v: Vec<_> = plan_slices(slices, k)
            .into_iter()
            .map(|d| (d.name, d.keep, d.reason))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn slices_before_the_oldest_kept_snapshot_go_the_rest_stay_with_the_snapshot_they_serve() {
        // Snapshots at 100 (pruned), 250 and 450 (kept); hourly slices in between.
        let slices = [
            slice("s1", 100, 200),
            slice("s2", 200, 300),
            slice("s3", 300, 400),
            slice("s4", 400, 500),
            slice("s5", 500, 600),
        ];
        let d = decisions(&slices, &[kept("B", 250), kept("C", 450)]);
        assert!(
            !d[0].1
                && d[0]
                    .2
                    .contains("ends before the oldest kept point-in-time snapshot B"),
            "{:?}",
            d[0]
        );
        assert_eq!(
            (d[1].1, d[1].2.as_str()),
            (true, "rolls snapshot B forward to snapshot C"),
            "s2 straddles B's point"
        );
        assert_eq!(
            (d[2].1, d[2].2.as_str()),
            (true, "rolls snapshot B forward to snapshot C")
        );
        assert_eq!(
            (d[3].1, d[3].2.as_str()),
            (true, "rolls snapshot C forward to now")
        );
        assert_eq!(
            (d[4].1, d[4].2.as_str()),
            (true, "rolls snapshot C forward to now")
        );
    }

    #[test]
    fn a_slice_ending_exactly_at_the_oldest_point_is_not_needed() {
        let d = decisions(
            &[slice("s1", 100, 250), slice("s2", 250, 300)],
            &[kept("B", 250)],
        );
        assert!(!d[0].1, "{:?}", d[0]);
        assert!(d[1].1);
    }

    #[test]
    fn the_newest_slice_stays_even_without_a_point_in_time_snapshot() {
        let d = decisions(&[slice("s1", 100, 200), slice("s2", 200, 300)], &[]);
        assert_eq!(
            (d[0].1, d[0].2.as_str()),
            (false, "no kept snapshot is point-in-time")
        );
        assert!(d[1].1 && d[1].2.contains("next oplog push"), "{:?}", d[1]);
    }

    #[test]
    fn removed_slices_list_metadata_first_and_sizes_add_up() {
        let p = OplogPlan {
            slices: plan_slices(
                &[slice("s1", 100, 200), slice("s2", 200, 300)],
                &[kept("B", 250)],
            ),
            orphans: vec![("x.bson.gz".into(), 5)],
        };
        let removed: Vec<_> = p.slices.iter().filter(|d| !d.keep).collect();
        assert_eq!(removed[0].keys, ["s1.json", "s1.bson.gz"]);
        assert_eq!(p.bytes_to_free(), 15);
    }
}

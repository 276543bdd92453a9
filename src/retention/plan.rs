//! The prune plan: a pure function of (what the repository holds, the policy, now).
//!
//! On top of restic's rules ([`super::forget`]) it adds what restic leaves to the user:
//! only complete snapshots (with a manifest) are counted; the newest snapshot and the
//! newest verified snapshot are never removed; a plan that would leave fewer than
//! `min_keep` snapshots is refused ([`Plan::check_floor`]); snapshots without a manifest and
//! unfinished multipart uploads become garbage once older than `incomplete_grace`.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::Serialize;

use super::forget::{evaluate, Candidate, Reason};
use super::policy::Policy;
use crate::storage::PendingUpload;
use crate::{Error, Result};

/// A complete snapshot as the planner sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotInfo {
    /// Snapshot id.
    pub id: String,
    /// When it was taken (the manifest's `started_at`).
    pub time: DateTime<Utc>,
    /// Tags from the manifest.
    pub tags: Vec<String>,
    /// Bytes stored, manifest included.
    pub size_bytes: u64,
    /// Whether a verification passed for it.
    pub verified: bool,
    /// Whether a full verification (a restore) passed for it.
    pub restore_tested: bool,
}

/// A snapshot folder without a manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct IncompleteSnapshot {
    /// Snapshot id (folder name).
    pub id: String,
    /// The later of the time in its id and its newest object's modification time: a run
    /// still writing is never mistaken for an old one.
    pub last_activity: DateTime<Utc>,
    /// Bytes stored.
    pub size_bytes: u64,
}

/// What a repository holds, as far as retention cares.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Inventory {
    /// Complete snapshots.
    pub snapshots: Vec<SnapshotInfo>,
    /// Snapshot folders without a manifest.
    pub incomplete: Vec<IncompleteSnapshot>,
    /// Multipart uploads neither completed nor aborted.
    pub uploads: Vec<PendingUpload>,
}

/// The decision on one complete snapshot.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    /// Snapshot id.
    pub id: String,
    /// When it was taken.
    pub time: DateTime<Utc>,
    /// Bytes stored.
    pub size_bytes: u64,
    /// Whether a verification passed for it.
    pub verified: bool,
    /// Keep or remove.
    pub keep: bool,
    /// Why it is kept (empty when removed).
    pub reasons: Vec<Reason>,
}

/// What a piece of garbage is.
#[derive(Debug, Clone, PartialEq)]
pub enum GarbageKind {
    /// A snapshot folder without a manifest.
    IncompleteSnapshot(IncompleteSnapshot),
    /// An unfinished multipart upload.
    PendingUpload(PendingUpload),
}

/// One piece of garbage and whether its grace period is over.
#[derive(Debug, Clone, PartialEq)]
pub struct Garbage {
    /// What it is.
    pub kind: GarbageKind,
    /// Last activity (incomplete snapshot) or start (upload).
    pub since: DateTime<Utc>,
    /// True once older than the grace period: the plan removes it.
    pub remove: bool,
}

impl Garbage {
    /// `snapshots/<id>/` or the upload's key.
    pub fn name(&self) -> String {
        match &self.kind {
            GarbageKind::IncompleteSnapshot(s) => format!("snapshots/{}/", s.id),
            GarbageKind::PendingUpload(u) => u.key.clone(),
        }
    }

    /// `incomplete snapshot` or `unfinished upload`.
    pub fn what(&self) -> &'static str {
        match &self.kind {
            GarbageKind::IncompleteSnapshot(_) => "incomplete snapshot",
            GarbageKind::PendingUpload(_) => "unfinished upload",
        }
    }

    /// Bytes, where the listing tells (an upload's parts are not listed).
    pub fn size_bytes(&self) -> Option<u64> {
        match &self.kind {
            GarbageKind::IncompleteSnapshot(s) => Some(s.size_bytes),
            GarbageKind::PendingUpload(_) => None,
        }
    }
}

/// A complete plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The time planned for.
    pub now: DateTime<Utc>,
    /// The policy's time zone (for display).
    pub timezone: Tz,
    /// One decision per complete snapshot, newest first.
    pub decisions: Vec<Decision>,
    /// Garbage, removed or still within its grace period.
    pub garbage: Vec<Garbage>,
    /// Garbage older than this is removed (`None`: never).
    pub grace_cutoff: Option<DateTime<Utc>>,
    /// The policy's floor.
    pub min_keep: usize,
}

impl Plan {
    /// Decisions to keep.
    pub fn kept(&self) -> impl Iterator<Item = &Decision> {
        self.decisions.iter().filter(|d| d.keep)
    }

    /// Decisions to remove.
    pub fn removed(&self) -> impl Iterator<Item = &Decision> {
        self.decisions.iter().filter(|d| !d.keep)
    }

    /// Garbage past its grace period.
    pub fn garbage_to_remove(&self) -> impl Iterator<Item = &Garbage> {
        self.garbage.iter().filter(|g| g.remove)
    }

    /// Bytes the plan frees, as far as listings tell.
    pub fn bytes_to_free(&self) -> u64 {
        self.removed().map(|d| d.size_bytes).sum::<u64>()
            + self
                .garbage_to_remove()
                .filter_map(Garbage::size_bytes)
                .sum::<u64>()
    }

    /// Refuse a plan that removes snapshots and leaves fewer than `min_keep`.
    ///
    /// A repository that already holds fewer is not an error as long as nothing is removed:
    /// the floor guards against a prune making things worse, not against a young repository.
    ///
    /// # Errors
    /// [`Error::RetentionFloor`].
    pub fn check_floor(&self) -> Result<()> {
        let kept = self.kept().count();
        let removing = self.removed().count();
        if removing > 0 && kept < self.min_keep {
            return Err(Error::RetentionFloor {
                kept,
                removing,
                min_keep: self.min_keep,
            });
        }
        Ok(())
    }
}

/// Plan a prune of `inventory` under `policy` as of `now`.
pub fn plan(inventory: &Inventory, policy: &Policy, now: DateTime<Utc>) -> Plan {
    let tz = policy.timezone;
    // Newest first; two snapshots of the same instant in id order, newest id first, so the
    // order (and so the plan) never depends on how the store listed them.
    let mut snaps: Vec<&SnapshotInfo> = inventory.snapshots.iter().collect();
    snaps.sort_by(|a, b| b.time.cmp(&a.time).then_with(|| b.id.cmp(&a.id)));
    let candidates: Vec<Candidate> = snaps
        .iter()
        .map(|s| Candidate {
            time: s.time,
            tags: s.tags.clone(),
        })
        .collect();
    let verdicts = evaluate(&candidates, &policy.rules, tz, now);
    let newest_verified = snaps.iter().position(|s| s.verified);
    let newest_restore_tested = snaps.iter().position(|s| s.restore_tested);
    let decisions = verdicts
        .into_iter()
        .map(|v| {
            let s = snaps[v.index];
            let mut reasons = v.reasons;
            if v.index == 0 {
                reasons.push(Reason::Newest);
            }
            if Some(v.index) == newest_verified {
                reasons.push(Reason::NewestVerified);
            }
            if Some(v.index) == newest_restore_tested && newest_restore_tested != newest_verified {
                reasons.push(Reason::NewestRestoreTested);
            }
            Decision {
                id: s.id.clone(),
                time: s.time,
                size_bytes: s.size_bytes,
                verified: s.verified,
                keep: !reasons.is_empty(),
                reasons,
            }
        })
        .collect();

    let grace_cutoff = policy.incomplete_grace.start_before(now, tz);
    let past_grace = |t: DateTime<Utc>| grace_cutoff.is_some_and(|c| t < c);
    let mut garbage: Vec<Garbage> = inventory
        .incomplete
        .iter()
        .map(|s| Garbage {
            kind: GarbageKind::IncompleteSnapshot(s.clone()),
            since: s.last_activity,
            remove: past_grace(s.last_activity),
        })
        .collect();
    garbage.extend(inventory.uploads.iter().map(|u| Garbage {
        kind: GarbageKind::PendingUpload(u.clone()),
        since: u.initiated,
        remove: past_grace(u.initiated),
    }));
    garbage.sort_by(|a, b| a.since.cmp(&b.since).then_with(|| a.name().cmp(&b.name())));
    Plan {
        now,
        timezone: tz,
        decisions,
        garbage,
        grace_cutoff,
        min_keep: policy.min_keep,
    }
}

#[cfg(test)]
mod tests;

//! `mongokeep status` and the Prometheus textfile metrics: the two facts a monitor needs,
//! the age of the newest complete snapshot and of the newest passed full verification (and,
//! when asked, how far behind now the newest point `restore --to-time` can reach is), and per
//! operation the last run, its outcome and its figures.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use crate::journal::JournalEntry;
use crate::oplog::coverage::{Anchor, Span};
use crate::oplog::optime::{describe, wall_or_seconds};
use crate::oplog::restore::{anchor_of, recoverable, Recoverable};
use crate::oplog::slices::SliceSelection;
use crate::repository::Repository;
use crate::verify::{list_reports, VerifyReport};
use crate::{Error, Result};

/// One threshold check.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// `snapshot_age`, `verification_age`, `oplog_age`, or `manifests` (present only when a
    /// snapshot's manifest is damaged).
    pub name: String,
    /// Whether it is within its threshold.
    pub ok: bool,
    /// The age in seconds, when there is anything to measure.
    pub age_seconds: Option<i64>,
    /// The threshold in seconds.
    pub max_age_seconds: i64,
    /// Plain words.
    pub message: String,
}

/// What `status` found.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// Repository.
    pub repository: String,
    /// `passed` when every check is within its threshold, else `failed`.
    pub result: String,
    /// The newest complete snapshot.
    pub snapshot: Option<String>,
    /// When it was taken.
    pub snapshot_time: Option<DateTime<Utc>>,
    /// The newest full verification (passed or not).
    pub last_verification: Option<VerifyReport>,
    /// The newest passed full verification's time.
    pub last_passed_verification_time: Option<DateTime<Utc>>,
    /// The newest point `restore --to-time` can reach (`--max-oplog-age` only): the latest
    /// a complete point-in-time snapshot reaches through the stored oplog, up to a gap.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oplog_reaches: Option<DateTime<Utc>>,
    /// The checks.
    pub checks: Vec<Check>,
}

/// The thresholds `status` judges by.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Of the newest complete snapshot.
    pub snapshot: Duration,
    /// Of the newest passed full verification.
    pub verification: Duration,
    /// Of the newest point `restore --to-time` can reach and of the newest slice: hourly
    /// `oplog push` still running, and nothing stopping the recoverable point (checked only
    /// when set; [`oplog_check`]).
    pub oplog: Option<Duration>,
}

fn check(
    name: &str,
    what: &str,
    time: Option<DateTime<Utc>>,
    max: Duration,
    now: DateTime<Utc>,
) -> Check {
    let age = time.map(|t| (now - t).num_seconds());
    let ok = age.is_some_and(|a| a <= max.num_seconds());
    let message = match age {
        None => format!("no {what} yet"),
        Some(a) => format!(
            "newest {what} is {} old (limit {})",
            human_duration(a),
            human_duration(max.num_seconds())
        ),
    };
    Check {
        name: name.into(),
        ok,
        age_seconds: age,
        max_age_seconds: max.num_seconds(),
        message,
    }
}

/// `2d 3h`, `5h 12m`, `40m`, `12s`.
pub fn human_duration(secs: i64) -> String {
    let s = secs.max(0);
    let (d, h, m) = (s / 86400, s % 86400 / 3600, s % 3600 / 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, m) => format!("{m}m"),
        (0, h, m) => format!("{h}h {m}m"),
        (d, h, _) => format!("{d}d {h}h"),
    }
}

/// Read the repository and judge it against the thresholds.
///
/// # Errors
/// The repository failed.
pub async fn status(repo: &Repository, limits: Limits, now: DateTime<Utc>) -> Result<Status> {
    // One read of each manifest serves the snapshots and, when asked, the point-in-time
    // anchors.
    let want_anchors = limits.oplog.is_some();
    let listed = repo
        .list_snapshots_with(|m| want_anchors.then(|| anchor_of(m)).flatten())
        .await?;
    let (snaps, anchors): (Vec<_>, Vec<_>) = listed.into_iter().unzip();
    let anchors: Vec<Anchored> = anchors.into_iter().flatten().flatten().collect();
    let newest = snaps.iter().find(|s| s.complete);
    let reports = list_reports(repo).await?;
    let full: Vec<&VerifyReport> = reports.iter().filter(|r| r.kind == "full").collect();
    let last_pass = full
        .iter()
        .rev()
        .find(|r| r.passed())
        .map(|r| r.finished_at);
    let mut checks = vec![
        check(
            "snapshot_age",
            "complete snapshot",
            newest.map(|s| s.started_at),
            limits.snapshot,
            now,
        ),
        check(
            "verification_age",
            "passed full verification",
            last_pass,
            limits.verification,
            now,
        ),
    ];
    // Each unreadable manifest with its own reason and fix (a damaged one, or one a newer
    // mongokeep wrote: different fixes).
    let damaged: Vec<String> = snaps
        .iter()
        .filter_map(|s| s.damaged.as_ref())
        .map(|why| why.replace("\n  fix:", ". Fix:"))
        .collect();
    if !damaged.is_empty() {
        checks.push(Check {
            name: "manifests".into(),
            ok: false,
            age_seconds: None,
            max_age_seconds: 0,
            message: damaged.join("; "),
        });
    }
    let mut oplog_reaches = None;
    if let Some(max) = limits.oplog {
        let slices = pushed_slices(repo).await?;
        let (reaches, c) = oplog_check(&anchors, &slices, max, now);
        oplog_reaches = reaches;
        checks.push(c);
    }
    let ok = checks.iter().all(|c| c.ok);
    Ok(Status {
        repository: repo.describe(),
        result: if ok { "passed" } else { "failed" }.into(),
        snapshot: newest.map(|s| s.id.clone()),
        snapshot_time: newest.map(|s| s.started_at),
        last_verification: full.last().map(|r| (*r).clone()),
        last_passed_verification_time: last_pass,
        oplog_reaches,
        checks,
    })
}

/// A point-in-time snapshot and the selection it was taken with.
pub type Anchored = (Anchor, SliceSelection);

/// A stored slice and the selection it was pushed with.
pub type Pushed = (Span, SliceSelection);

/// The newest point any of `anchors` can be restored to, with the snapshot it is for.
fn newest_recoverable_of<'a>(
    anchors: &'a [Anchored],
    slices: &[Pushed],
) -> Option<(Recoverable, &'a str)> {
    let (spans, selections): (Vec<Span>, Vec<SliceSelection>) = slices.iter().cloned().unzip();
    anchors
        .iter()
        .map(|(a, sel)| (recoverable(a, sel, &spans, &selections), a.id.as_str()))
        .max_by_key(|(r, _)| r.to)
}

/// The `oplog_age` check: how long ago the newest point `restore --to-time` can reach is.
/// That is the latest any complete point-in-time snapshot reaches through the stored slices
/// (the chain restore would replay), up to the first gap or the first slice pushed with
/// another selection. It fails when that point is older than `max`; when a gap or such a
/// slice stops it (later slices mend neither: only a new backup does); and when the newest
/// slice is older than `max` (pushes stopped: a fresh snapshot alone must not hide that).
/// Returns the point and the check; the message says what stops it, and the fix.
pub fn oplog_check(
    anchors: &[Anchored],
    slices: &[Pushed],
    max: Duration,
    now: DateTime<Utc>,
) -> (Option<DateTime<Utc>>, Check) {
    let best = newest_recoverable_of(anchors, slices);
    let reaches = best.as_ref().map(|(r, _)| wall_or_seconds(r.to, r.to_wall));
    let mut c = check("oplog_age", "recoverable point", reaches, max, now);
    let Some((r, id)) = best else {
        c.message = if slices.is_empty() {
            "no point-in-time snapshot and no oplog slice yet. Fix: back up the replica set, then run `mongokeep oplog push` hourly".into()
        } else {
            "no point-in-time snapshot yet: the stored oplog slices have nothing to carry forward. Fix: back up the replica set".into()
        };
        return (reaches, c);
    };
    let mut notes = vec![c.message.clone()];
    if let Some(resumed) = r.gap {
        c.ok = false;
        notes.push(format!(
            "The stored oplog has a gap after {} (it resumes at {}: the oplog rolled over before `oplog push` stored it), so no snapshot taken before the gap can be restored past it. Fix: take a backup now (it starts a new recoverable range) and push more often",
            describe(r.to),
            describe(resumed)
        ));
    }
    if let Some(name) = &r.refused {
        c.ok = false;
        notes.push(format!(
            "Slice {name} was pushed with another --db/--ns-include/--ns-exclude than snapshot {id}, so restore stops before it. Fix: run `oplog push` with the backup's selection, or with none"
        ));
    }
    let newest_slice = slices
        .iter()
        .map(|(s, _)| wall_or_seconds(s.to, s.to_wall))
        .max();
    match newest_slice {
        Some(t) if now - t > max => {
            c.ok = false;
            notes.push(format!(
                "The newest oplog slice is {} old: is `oplog push` running? Fix: check its cron job and its log",
                human_duration((now - t).num_seconds())
            ));
        }
        None => notes.push(format!(
            "It is snapshot {id}'s own consistency point: no oplog slice carries it further yet. Fix: run `mongokeep oplog push` hourly"
        )),
        Some(_) if !c.ok && r.gap.is_none() && r.refused.is_none() => notes.push(
            "Fix: check that `mongokeep oplog push` runs (its cron job and its log)".into(),
        ),
        Some(_) => {}
    }
    c.message = notes.join(". ");
    (reaches, c)
}

/// The newest point `restore --to-time` can reach in `repo` (as [`oplog_check`] measures
/// it); `None` without a complete point-in-time snapshot.
///
/// # Errors
/// The repository failed or a manifest is unreadable.
pub async fn newest_recoverable(repo: &Repository) -> Result<Option<DateTime<Utc>>> {
    let anchors = crate::oplog::restore::anchors_with_selection(repo).await?;
    let slices = pushed_slices(repo).await?;
    Ok(newest_recoverable_of(&anchors, &slices).map(|(r, _)| wall_or_seconds(r.to, r.to_wall)))
}

/// The repository's slices, with the selections they were pushed with.
async fn pushed_slices(repo: &Repository) -> Result<Vec<Pushed>> {
    let listing = crate::oplog::slices::list(repo).await?;
    let spans = crate::oplog::restore::spans(&listing.slices);
    Ok(spans
        .into_iter()
        .zip(listing.slices.iter().map(|s| s.selection.clone()))
        .collect())
}

/// A fact the metrics file carries beside an operation's own lines.
#[derive(Debug, Clone, Copy)]
pub enum Fact {
    /// The verification just run passed (or found a mismatch).
    VerificationPassed(bool),
    /// The newest point `restore --to-time` can reach, after an `oplog push` or a
    /// point-in-time backup.
    OplogRecoverable(DateTime<Utc>),
}

/// Parse a threshold like `26h`, `35d`, `90m`, `3600s`.
///
/// # Errors
/// Anything else, as a usage error naming the flag.
pub fn parse_age(s: &str, flag: &str) -> Result<Duration> {
    let bad = || {
        Error::Config(format!(
            "{flag} {s:?}: expected a number and a unit: s, m, h or d (e.g. 26h, 35d)"
        ))
    };
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?);
    let n: i64 = n.parse().map_err(|_| bad())?;
    match unit {
        "s" => Ok(Duration::seconds(n)),
        "m" => Ok(Duration::minutes(n)),
        "h" => Ok(Duration::hours(n)),
        "d" => Ok(Duration::days(n)),
        _ => Err(bad()),
    }
}

/// Update the Prometheus textfile at `path` with the outcome of one operation, keeping the
/// lines of the other operations, and the last success time when this run failed. Written
/// to a temporary file and renamed, as the textfile collector expects.
///
/// # Errors
/// The file cannot be written.
pub fn write_metrics(path: &Path, entry: &JournalEntry, facts: &[Fact]) -> Result<()> {
    // Two runs ending at once (a verify beside an hourly `oplog push`) must not lose each
    // other's lines: the read, update and rename happen under a lock on `<path>.lock`
    // (never removed, so every writer locks the same file; the collector reads only
    // `*.prom`).
    let lock_path = path.with_extension("prom.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| Error::io(format!("opening {}", lock_path.display()), e))?;
    crate::fslock::lock(&lock, true)
        .map_err(|e| Error::io(format!("locking {}", lock_path.display()), e))?;
    let old = std::fs::read_to_string(path).unwrap_or_default();
    // name{labels} -> value, for every sample line.
    let mut samples: BTreeMap<String, String> = old
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            l.rsplit_once(' ')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    let op = &entry.operation;
    let label = |name: &str| format!("mongokeep_{name}{{operation=\"{op}\"}}");
    let end = entry.time.timestamp() as f64 + entry.seconds;
    let success = entry.outcome == "success";
    samples.insert(label("last_run_timestamp_seconds"), format!("{end:.3}"));
    samples.insert(label("last_run_success"), (success as u8).to_string());
    samples.insert(
        label("last_run_duration_seconds"),
        format!("{:.3}", entry.seconds),
    );
    if success {
        samples.insert(label("last_success_timestamp_seconds"), format!("{end:.3}"));
        for (key, name) in [
            ("bytes", "last_run_bytes"),
            ("documents", "last_run_documents"),
        ] {
            if let Some(v) = entry.figures.get(key).and_then(|v| v.as_u64()) {
                samples.insert(label(name), v.to_string());
            }
        }
    }
    for fact in facts {
        let (name, value) = match fact {
            Fact::VerificationPassed(p) => ("last_verification_passed", (*p as u8).to_string()),
            Fact::OplogRecoverable(t) => (
                "oplog_recoverable_timestamp_seconds",
                format!("{:.3}", t.timestamp_millis() as f64 / 1000.0),
            ),
        };
        samples.insert(format!("mongokeep_{name}"), value);
    }
    let help = [
        (
            "last_run_timestamp_seconds",
            "End of the last run of the operation (Unix time).",
        ),
        (
            "last_run_success",
            "1 when the last run of the operation succeeded.",
        ),
        (
            "last_run_duration_seconds",
            "Duration of the last run of the operation.",
        ),
        (
            "last_success_timestamp_seconds",
            "End of the last successful run of the operation (Unix time).",
        ),
        (
            "last_run_bytes",
            "Bytes handled by the last successful run (stored for backup, loaded for restore).",
        ),
        (
            "last_run_documents",
            "Documents handled by the last successful run.",
        ),
        (
            "last_verification_passed",
            "1 when the last verification passed, 0 when it found a mismatch.",
        ),
        (
            "oplog_recoverable_timestamp_seconds",
            "Newest time restore --to-time can reach (Unix time): the newest point-in-time snapshot carried forward by the stored oplog, up to a gap; written by oplog push and point-in-time backups.",
        ),
    ];
    let mut out = String::new();
    for (name, text) in help {
        let full = format!("mongokeep_{name}");
        let lines: Vec<_> = samples
            .iter()
            .filter(|(k, _)| k.split('{').next() == Some(full.as_str()))
            .collect();
        if lines.is_empty() {
            continue;
        }
        out.push_str(&format!("# HELP {full} {text}\n# TYPE {full} gauge\n"));
        for (k, v) in lines {
            out.push_str(&format!("{k} {v}\n"));
        }
    }
    let tmp = path.with_extension("prom.tmp");
    std::fs::write(&tmp, out).map_err(|e| Error::io(format!("writing {}", tmp.display()), e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(format!("writing {}", path.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn ages_parse() {
        assert_eq!(parse_age("26h", "--max-age").unwrap(), Duration::hours(26));
        assert_eq!(parse_age("35d", "--max-age").unwrap(), Duration::days(35));
        for bad in ["", "h", "26", "26w", "-1h"] {
            assert!(parse_age(bad, "--max-age").is_err(), "{bad}");
        }
    }

    fn op(t: u32) -> crate::manifest::OpTime {
        crate::manifest::OpTime { t: BASE + t, i: 1 }
    }

    /// A slice pushed for every database.
    fn span(start: u32, to: u32) -> Pushed {
        pushed_for(start, to, &[])
    }

    /// A slice pushed with `--db` for each of `dbs`.
    fn pushed_for(start: u32, to: u32, dbs: &[&str]) -> Pushed {
        let span = Span {
            name: format!("s{start}"),
            start: op(start),
            to: op(to),
            to_wall: None,
        };
        let selection = SliceSelection {
            databases: dbs.iter().map(|d| d.to_string()).collect(),
            ..Default::default()
        };
        (span, selection)
    }

    /// A snapshot of every database.
    fn anchor(point: u32) -> Anchored {
        let a = Anchor {
            id: format!("a{point}"),
            point: op(point),
            point_wall: None,
        };
        (a, SliceSelection::default())
    }

    /// 2026-11-01 00:00 UTC in seconds since the epoch: the tests count from it.
    const BASE: u32 = 1_793_491_200;

    fn time(s: u32) -> DateTime<Utc> {
        Utc.timestamp_opt(i64::from(BASE + s), 0).unwrap()
    }

    /// A manifest of a complete snapshot; point-in-time with its consistency point at
    /// `point` when given.
    fn manifest(id: &str, point: Option<u32>) -> bytes::Bytes {
        let op = |t: u32| serde_json::json!({"t": BASE + t, "i": 1});
        let mut m = serde_json::json!({
            "format": "mongokeep-manifest", "format_version": 1, "snapshot": id,
            "started_at": time(0), "finished_at": time(0),
            "tool": {"name": "mongokeep", "version": "test"},
            "source": {"uri": "mongodb://x/", "topology": "replica set", "server_version": "6.0", "replica_set": "rs0"},
            "consistency": {"point_in_time": false, "note": "", "start_operation_time": null, "end_operation_time": null},
            "options": {"compression": "none", "archive_part_bytes": 1, "databases": [], "ns_include": [], "ns_exclude": [], "include_users": false},
            "tags": [], "digest_algorithm": "x", "collections": [],
            "totals": {"collections": 0, "views": 0, "documents": 0, "bson_bytes": 0, "stored_bytes": 0}
        });
        if let Some(p) = point {
            m["consistency"]["point_in_time"] = true.into();
            m["oplog"] = serde_json::json!({
                "key": format!("snapshots/{id}/oplog.bson.gz"), "size": 0, "sha256": "",
                "from": op(p - 10), "to": op(p), "first": null, "last": null,
                "entries": 0, "bson_bytes": 0
            });
        }
        bytes::Bytes::from(serde_json::to_vec(&m).unwrap())
    }

    #[tokio::test]
    async fn status_reads_each_manifest_once() {
        use crate::storage::{memory::MemoryStore, Storage};
        let store = std::sync::Arc::new(MemoryStore::new());
        let repo = Repository::new(store.clone());
        let ids = ["20261101T000000Z-0001", "20261101T010000Z-0002"];
        store
            .put(
                &Repository::manifest_key(ids[0]),
                manifest(ids[0], Some(1000)),
            )
            .await
            .unwrap();
        store
            .put(&Repository::manifest_key(ids[1]), manifest(ids[1], None))
            .await
            .unwrap();
        let limits = Limits {
            snapshot: Duration::days(1),
            verification: Duration::days(1),
            oplog: Some(Duration::hours(1)),
        };
        let st = status(&repo, limits, time(1500)).await.unwrap();
        // The listing and the point-in-time anchor came from the same read.
        assert_eq!(st.snapshot.as_deref(), Some(ids[1]));
        assert_eq!(st.oplog_reaches, Some(time(1000)));
        for id in ids {
            assert_eq!(store.reads(&Repository::manifest_key(id)), 1, "{id}");
        }
    }

    #[tokio::test]
    async fn a_damaged_manifest_is_listed_fails_status_and_leaves_the_others_usable() {
        use crate::storage::{memory::MemoryStore, Storage};
        let store = std::sync::Arc::new(MemoryStore::new());
        let repo = Repository::new(store.clone());
        let (good, bad) = ("20261101T000000Z-0001", "20261101T010000Z-0002");
        store
            .put(&Repository::manifest_key(good), manifest(good, None))
            .await
            .unwrap();
        store
            .put(
                &Repository::manifest_key(bad),
                bytes::Bytes::from_static(b"{\"format\":"),
            )
            .await
            .unwrap();
        let snaps = repo.list_snapshots().await.unwrap();
        let damaged = snaps.iter().find(|s| s.id == bad).unwrap();
        assert!(
            !damaged.complete && damaged.damaged.is_some(),
            "{damaged:?}"
        );
        // `latest` is the newest readable one; the damaged one, named, says what to do.
        assert_eq!(repo.resolve("latest").await.unwrap().snapshot, good);
        let e = repo.resolve(bad).await.unwrap_err().to_string();
        assert!(e.contains(bad) && e.contains("fix:"), "{e}");
        let limits = Limits {
            snapshot: Duration::days(1),
            verification: Duration::days(1),
            oplog: None,
        };
        let st = status(&repo, limits, time(60)).await.unwrap();
        assert_eq!(st.snapshot.as_deref(), Some(good));
        let c = st.checks.iter().find(|c| c.name == "manifests").unwrap();
        assert!(!c.ok && c.message.contains(bad), "{c:?}");
    }

    #[test]
    fn runs_ending_at_once_keep_each_other_s_metrics_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.prom");
        let t = time(0);
        std::thread::scope(|s| {
            for w in 0..8 {
                let path = &path;
                s.spawn(move || {
                    for i in 0..25 {
                        let e = JournalEntry::new::<()>(&format!("op{w}x{i}"), t, &Ok(()));
                        write_metrics(path, &e, &[]).unwrap();
                    }
                });
            }
        });
        let text = std::fs::read_to_string(&path).unwrap();
        for w in 0..8 {
            for i in 0..25 {
                let line = format!("mongokeep_last_run_success{{operation=\"op{w}x{i}\"}} 1");
                assert!(text.contains(&line), "{line} lost");
            }
        }
    }

    /// Hourly slices from 1000 to 19_000, then one to 19_900.
    fn hourly() -> Vec<Pushed> {
        (0..18)
            .map(|h| span(1000 + h * 1000, 2000 + h * 1000))
            .chain([span(19_000, 19_900)])
            .collect()
    }

    #[test]
    fn oplog_age_is_how_far_the_newest_snapshot_reaches_not_the_newest_slice() {
        let hour = Duration::hours(1);
        let now = time(20_000);
        let (reaches, c) = oplog_check(&[anchor(1000)], &hourly(), hour, now);
        assert_eq!(reaches, Some(time(19_900)));
        assert!(c.ok, "{c:?}");
        assert_eq!(c.age_seconds, Some(100));
        assert!(!c.message.contains("gap"), "{}", c.message);

        // The oplog rolled over between the slices to 5000 and from 7000: the later slices
        // reach 19_900 still, but no snapshot can be restored past 5000.
        let gapped: Vec<Pushed> = hourly()
            .into_iter()
            .filter(|(s, _)| s.start != op(5000) && s.start != op(6000))
            .collect();
        let (reaches, c) = oplog_check(&[anchor(1000)], &gapped, hour, now);
        assert_eq!(reaches, Some(time(5000)));
        assert!(!c.ok, "{c:?}");
        assert_eq!(c.age_seconds, Some(15_000));
        assert!(
            c.message.contains("gap after")
                && c.message.contains(&describe(op(5000)))
                && c.message.contains(&describe(op(7000)))
                && c.message.contains("take a backup now"),
            "{}",
            c.message
        );
        // A gap fails the check at once, while the point before it is still within the
        // limit: later pushes will not mend it.
        let (reaches, c) = oplog_check(&[anchor(1000)], &gapped, Duration::days(1), now);
        assert_eq!(reaches, Some(time(5000)));
        assert!(!c.ok && c.message.contains("gap after"), "{c:?}");

        // A snapshot taken after the gap reaches on from there.
        let (reaches, c) = oplog_check(&[anchor(1000), anchor(8000)], &gapped, hour, now);
        assert_eq!(reaches, Some(time(19_900)));
        assert!(c.ok && !c.message.contains("gap"), "{c:?}");
    }

    #[test]
    fn a_slice_pushed_with_another_selection_stops_the_recoverable_point() {
        let hour = Duration::hours(1);
        let now = time(20_000);
        // From 10_000 on, the pushes named one database; the snapshot has them all, and
        // restore refuses such a slice for it.
        let mut slices: Vec<Pushed> = hourly()
            .into_iter()
            .map(|(s, sel)| {
                if s.start >= op(10_000) {
                    pushed_for(offset(s.start), offset(s.to), &["app"])
                } else {
                    (s, sel)
                }
            })
            .collect();
        let (reaches, c) = oplog_check(&[anchor(1000)], &slices, hour, now);
        assert_eq!(reaches, Some(time(10_000)));
        assert!(!c.ok, "{c:?}");
        assert!(
            c.message.contains("Slice s10000 was pushed with another")
                && c.message.contains("snapshot a1000")
                && c.message
                    .contains("with the backup's selection, or with none"),
            "{}",
            c.message
        );
        // A snapshot of that one database is carried by them (and by the earlier slices,
        // which cover every database).
        let app = (
            Anchor {
                id: "app".into(),
                point: op(3000),
                point_wall: None,
            },
            SliceSelection {
                databases: vec!["app".into()],
                ..Default::default()
            },
        );
        let (reaches, c) = oplog_check(&[anchor(1000), app.clone()], &slices, hour, now);
        assert_eq!(reaches, Some(time(19_900)));
        assert!(c.ok, "{c:?}");
        // The first slice of the chain refused: the snapshot's own point is all there is.
        slices[0] = pushed_for(1000, 2000, &["other"]);
        let (reaches, _) = oplog_check(&[anchor(1000)], &slices, hour, now);
        assert_eq!(reaches, Some(time(1000)));
    }

    /// The seconds of `o` after [`BASE`].
    fn offset(o: crate::manifest::OpTime) -> u32 {
        o.t - BASE
    }

    #[test]
    fn oplog_age_without_slices_without_a_snapshot_or_with_pushes_stopped() {
        let hour = Duration::hours(1);
        // A fresh snapshot, nothing pushed yet: its own consistency point is recoverable.
        let (reaches, c) = oplog_check(&[anchor(19_000)], &[], hour, time(20_000));
        assert_eq!(reaches, Some(time(19_000)));
        assert!(
            c.ok && c.message.contains("no oplog slice carries it further"),
            "{c:?}"
        );
        // ... until the limit passes with no push.
        let (_, c) = oplog_check(&[anchor(19_000)], &[], hour, time(22_601));
        assert!(
            !c.ok && c.message.contains("run `mongokeep oplog push` hourly"),
            "{c:?}"
        );
        // Pushes that stopped at 5000 are not hidden by a fresh snapshot at 19_000.
        let (reaches, c) = oplog_check(
            &[anchor(1000), anchor(19_000)],
            &hourly()[..4],
            hour,
            time(20_000),
        );
        assert_eq!(reaches, Some(time(19_000)));
        assert!(!c.ok, "{c:?}");
        assert!(
            c.message
                .contains("The newest oplog slice is 4h 10m old: is `oplog push` running?"),
            "{}",
            c.message
        );
        // Slices but no point-in-time snapshot (a standalone's, say): nothing to restore.
        let (reaches, c) = oplog_check(&[], &[span(19_000, 19_900)], hour, time(20_000));
        assert_eq!((reaches, c.ok, c.age_seconds), (None, false, None));
        assert!(
            c.message.starts_with("no point-in-time snapshot yet"),
            "{}",
            c.message
        );
        let (_, c) = oplog_check(&[], &[], hour, time(20_000));
        assert!(!c.ok && c.message.contains("no oplog slice"), "{c:?}");
    }

    #[test]
    fn a_failed_run_keeps_the_last_success_and_other_operations() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mongokeep.prom");
        let t = Utc.with_ymd_and_hms(2026, 11, 1, 2, 0, 0).unwrap();
        let mut ok = JournalEntry::new::<()>("backup", t, &Ok(()));
        ok.seconds = 10.0;
        ok.figures = serde_json::json!({"bytes": 1000, "documents": 7});
        write_metrics(&path, &ok, &[]).unwrap();
        let mut v = JournalEntry::new::<()>("verify", t, &Ok(()));
        v.seconds = 1.0;
        write_metrics(&path, &v, &[Fact::VerificationPassed(true)]).unwrap();
        let failed: Result<()> = Err(Error::Config("x".into()));
        let mut bad = JournalEntry::new("backup", t + Duration::days(1), &failed);
        bad.seconds = 2.0;
        write_metrics(&path, &bad, &[]).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let ts = t.timestamp();
        assert!(
            text.contains(&format!(
                "mongokeep_last_success_timestamp_seconds{{operation=\"backup\"}} {}.000\n",
                ts + 10
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "mongokeep_last_run_timestamp_seconds{{operation=\"backup\"}} {}.000\n",
                ts + 86400 + 2
            )),
            "{text}"
        );
        assert!(
            text.contains("mongokeep_last_run_success{operation=\"backup\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("mongokeep_last_run_documents{operation=\"backup\"} 7\n"),
            "{text}"
        );
        assert!(
            text.contains("mongokeep_last_run_success{operation=\"verify\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("mongokeep_last_verification_passed 1\n"),
            "{text}"
        );
        assert_eq!(
            text.matches("# TYPE mongokeep_last_run_success gauge")
                .count(),
            1
        );
        assert!(!text.contains("oplog_recoverable"), "{text}");
        // A push adds the newest recoverable point and keeps the other lines.
        let push = JournalEntry::new::<()>("oplog_push", t + Duration::days(2), &Ok(()));
        let reach = Utc
            .timestamp_millis_opt(t.timestamp_millis() + 86_400_000 + 1_250)
            .unwrap();
        write_metrics(&path, &push, &[Fact::OplogRecoverable(reach)]).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains(&format!(
                "# TYPE mongokeep_oplog_recoverable_timestamp_seconds gauge\nmongokeep_oplog_recoverable_timestamp_seconds {}.250\n",
                ts + 86400 + 1
            )),
            "{text}"
        );
        assert!(
            text.contains("mongokeep_last_run_documents{operation=\"backup\"} 7\n"),
            "{text}"
        );
    }
}

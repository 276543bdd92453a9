//! Unit tests of [`super`].

use super::*;

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn snap(id: &str, time: &str) -> SnapshotInfo {
    SnapshotInfo {
        id: id.into(),
        time: utc(time),
        tags: vec![],
        size_bytes: 100,
        verified: false,
        restore_tested: false,
    }
}

fn policy(text: &str) -> Policy {
    Policy::parse(text, "test").unwrap()
}

fn reasons(p: &Plan, id: &str) -> Vec<String> {
    let d = p.decisions.iter().find(|d| d.id == id).unwrap();
    d.reasons.iter().map(ToString::to_string).collect()
}

fn daily(n: u32) -> Vec<SnapshotInfo> {
    (1..=n)
        .map(|d| snap(&format!("s{d:02}"), &format!("2026-05-{d:02}T02:00:00Z")))
        .collect()
}

const NOW: &str = "2026-06-01T00:00:00Z";

#[test]
fn the_newest_snapshot_is_never_removed() {
    // Only tagged snapshots match the rules; the newest is untagged and kept anyway.
    let mut snaps = daily(3);
    snaps[0].tags = vec!["keep".into()];
    let inv = Inventory {
        snapshots: snaps,
        ..Default::default()
    };
    let p = plan(&inv, &policy("keep_tags = [\"keep\"]"), utc(NOW));
    assert_eq!(reasons(&p, "s03"), vec!["newest"]);
    assert_eq!(reasons(&p, "s01"), vec!["has tags [keep]"]);
    assert_eq!(
        p.removed().map(|d| d.id.as_str()).collect::<Vec<_>>(),
        vec!["s02"]
    );
    // The order is newest first.
    assert_eq!(p.decisions[0].id, "s03");
}

#[test]
fn the_newest_verified_snapshot_is_never_removed() {
    let mut snaps = daily(10);
    snaps[1].verified = true; // s02
    snaps[3].verified = true; // s04: the newest verified
    let inv = Inventory {
        snapshots: snaps,
        ..Default::default()
    };
    let p = plan(&inv, &policy("keep_last = 2"), utc(NOW));
    assert_eq!(reasons(&p, "s10"), vec!["last", "newest"]);
    assert_eq!(reasons(&p, "s04"), vec!["newest verified"]);
    assert!(reasons(&p, "s02").is_empty());
    assert_eq!(p.kept().count(), 3);
}

#[test]
fn the_newest_restore_tested_snapshot_is_kept_beside_a_newer_quick_verified_one() {
    // Nightly `verify --quick`, a monthly full verification: the snapshot the restore test
    // passed for must not go because a newer one passed only the checksum check.
    let mut snaps = daily(10);
    snaps[2].verified = true; // s03: restored and compared
    snaps[2].restore_tested = true;
    snaps[7].verified = true; // s08: checksums only
    let inv = Inventory {
        snapshots: snaps.clone(),
        ..Default::default()
    };
    let p = plan(&inv, &policy("keep_last = 1"), utc(NOW));
    assert_eq!(reasons(&p, "s08"), vec!["newest verified"]);
    assert_eq!(reasons(&p, "s03"), vec!["newest restore-tested"]);
    assert_eq!(p.kept().count(), 3);
    // When the newest verified one is also the newest restore-tested, one reason says it.
    snaps[7].restore_tested = true;
    let inv = Inventory {
        snapshots: snaps,
        ..Default::default()
    };
    let p = plan(&inv, &policy("keep_last = 1"), utc(NOW));
    assert_eq!(reasons(&p, "s08"), vec!["newest verified"]);
    assert!(reasons(&p, "s03").is_empty());
}

#[test]
fn a_plan_below_min_keep_is_refused_but_a_small_repository_is_not() {
    let inv = Inventory {
        snapshots: daily(5),
        ..Default::default()
    };
    let p = plan(&inv, &policy("keep_last = 2\nmin_keep = 3"), utc(NOW));
    match p.check_floor() {
        Err(Error::RetentionFloor {
            kept: 2,
            removing: 3,
            min_keep: 3,
        }) => {}
        other => panic!("{other:?}"),
    }
    plan(&inv, &policy("keep_last = 3\nmin_keep = 3"), utc(NOW))
        .check_floor()
        .unwrap();
    // Two snapshots, both kept: fewer than min_keep, but the prune removes nothing.
    let young = Inventory {
        snapshots: daily(2),
        ..Default::default()
    };
    plan(&young, &policy("keep_last = 5\nmin_keep = 3"), utc(NOW))
        .check_floor()
        .unwrap();
}

#[test]
fn ties_in_time_are_broken_by_id_whatever_the_listing_order() {
    let a = snap("20260501T020000Z-aaaa", "2026-05-01T02:00:00Z");
    let b = snap("20260501T020000Z-bbbb", "2026-05-01T02:00:00Z");
    let old = snap("20260401T020000Z-0000", "2026-04-01T02:00:00Z");
    for order in [
        vec![a.clone(), b.clone(), old.clone()],
        vec![old.clone(), b.clone(), a.clone()],
    ] {
        let inv = Inventory {
            snapshots: order,
            ..Default::default()
        };
        let p = plan(&inv, &policy("keep_daily = 1"), utc(NOW));
        let kept: Vec<&str> = p.kept().map(|d| d.id.as_str()).collect();
        assert_eq!(kept, vec!["20260501T020000Z-bbbb"]);
    }
}

#[test]
fn garbage_is_removed_only_once_older_than_the_grace_period() {
    let incomplete = |id: &str, t: &str| IncompleteSnapshot {
        id: id.into(),
        last_activity: utc(t),
        size_bytes: 7,
    };
    let upload = |key: &str, t: &str| PendingUpload {
        key: key.into(),
        upload_id: "u".into(),
        initiated: utc(t),
    };
    let inv = Inventory {
        snapshots: daily(1),
        incomplete: vec![
            incomplete("old", "2026-05-29T23:59:59Z"),
            incomplete("edge", "2026-05-30T00:00:00Z"),
            incomplete("new", "2026-05-31T12:00:00Z"),
        ],
        uploads: vec![
            upload("snapshots/x/data/a.tar.gz", "2026-05-29T00:00:00Z"),
            upload("snapshots/y/data/b.tar.gz", "2026-05-31T23:00:00Z"),
        ],
    };
    let p = plan(
        &inv,
        &policy("keep_daily = 7\nincomplete_grace = \"2d\""),
        utc(NOW),
    );
    assert_eq!(p.grace_cutoff, Some(utc("2026-05-30T00:00:00Z")));
    let removed: Vec<String> = p.garbage_to_remove().map(Garbage::name).collect();
    assert_eq!(removed, vec!["snapshots/x/data/a.tar.gz", "snapshots/old/"]);
    assert_eq!(
        p.garbage.len(),
        5,
        "garbage within its grace period is listed too"
    );
    assert_eq!(p.bytes_to_free(), 7);
    // Garbage never counts as a snapshot: the complete one is the newest.
    assert_eq!(reasons(&p, "s01"), vec!["daily", "newest"]);
    // Unlimited grace never removes garbage.
    let p = plan(
        &inv,
        &policy("keep_daily = 7\nincomplete_grace = -1"),
        utc(NOW),
    );
    assert_eq!(p.garbage_to_remove().count(), 0);
}

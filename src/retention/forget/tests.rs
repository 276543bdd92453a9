//! One test per rule and period kind, each on the case that breaks a careless
//! implementation: daylight-saving days, the ISO week across New Year, a month without a
//! snapshot, two snapshots in the same second, the oldest-snapshot rule, future snapshots.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use super::*;
use crate::retention::Policy;

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn snaps(times: &[&str]) -> Vec<Candidate> {
    times
        .iter()
        .map(|t| Candidate {
            time: utc(t),
            tags: vec![],
        })
        .collect()
}

/// Kept times (newest first) with their short reasons, under `policy` (TOML) at `now`.
fn kept(times: &[&str], policy: &str, now: &str) -> Vec<(String, String)> {
    let p = Policy::parse(policy, "test").unwrap();
    let c = snaps(times);
    evaluate(&c, &p.rules, p.timezone, utc(now))
        .into_iter()
        .filter(|v| v.keep)
        .map(|v| {
            let reasons: Vec<String> = v.reasons.iter().map(ToString::to_string).collect();
            (times[v.index].to_string(), reasons.join(", "))
        })
        .collect()
}

fn kept_times(times: &[&str], policy: &str, now: &str) -> Vec<String> {
    kept(times, policy, now)
        .into_iter()
        .map(|(t, _)| t)
        .collect()
}

const NOW: &str = "2030-01-01T00:00:00Z";

#[test]
fn last_counts_every_snapshot_even_in_the_same_second() {
    let t = [
        "2026-05-01T10:00:00Z",
        "2026-05-01T10:00:00Z",
        "2026-05-01T09:00:00Z",
        "2026-04-30T10:00:00Z",
    ];
    let k = kept(&t, "keep_last = 3", NOW);
    assert_eq!(k.len(), 3);
    assert_eq!(k[0], ("2026-05-01T10:00:00Z".into(), "last".into()));
    assert_eq!(k[1], ("2026-05-01T10:00:00Z".into(), "last".into()));
    assert_eq!(k[2].0, "2026-05-01T09:00:00Z");
}

#[test]
fn two_snapshots_in_the_same_second_fill_one_period_and_the_first_listed_wins() {
    let t = [
        "2026-05-02T10:00:00Z",
        "2026-05-01T10:00:00Z",
        "2026-05-01T10:00:00Z",
        "2026-04-30T10:00:00Z",
    ];
    let p = Policy::parse("keep_daily = 10", "test").unwrap();
    let v = evaluate(&snaps(&t), &p.rules, Tz::UTC, utc(NOW));
    let kept: Vec<usize> = v.iter().filter(|v| v.keep).map(|v| v.index).collect();
    // Of the twins (indices 1 and 2), only the first in input order is the day's snapshot.
    assert_eq!(kept, vec![0, 1, 3]);
}

#[test]
fn hourly_keeps_the_newest_of_each_hour_and_both_repeated_hours_of_a_dst_change() {
    let t = [
        "2026-05-01T10:40:00Z",
        "2026-05-01T10:10:00Z",
        "2026-05-01T09:50:00Z",
        "2026-05-01T08:00:00Z",
    ];
    assert_eq!(
        kept(&t, "keep_hourly = 2", NOW),
        vec![
            ("2026-05-01T10:40:00Z".into(), "hourly".into()),
            ("2026-05-01T09:50:00Z".into(), "hourly".into())
        ]
    );
    // Clocks go back in Berlin on 2026-10-25: 02:10 CEST (00:10Z) and 02:10 CET (01:10Z)
    // are two hours that read alike; both are kept.
    let t = ["2026-10-25T01:10:00Z", "2026-10-25T00:10:00Z"];
    let berlin = "keep_hourly = 10\ntimezone = \"Europe/Berlin\"";
    assert_eq!(
        kept_times(&t, berlin, NOW),
        vec!["2026-10-25T01:10:00Z", "2026-10-25T00:10:00Z"]
    );
}

#[test]
fn daily_keys_days_in_the_policy_time_zone_across_daylight_saving() {
    // 00:30 CET and 23:30 CEST on 2026-03-29 (the 23-hour day) are one Berlin day but two
    // UTC days.
    let t = [
        "2026-03-29T21:30:00Z",
        "2026-03-28T23:30:00Z",
        "2026-03-28T12:00:00Z",
        "2026-03-27T12:00:00Z",
    ];
    let berlin = kept_times(&t, "keep_daily = 3\ntimezone = \"Europe/Berlin\"", NOW);
    assert_eq!(
        berlin,
        vec![
            "2026-03-29T21:30:00Z",
            "2026-03-28T12:00:00Z",
            "2026-03-27T12:00:00Z"
        ]
    );
    let in_utc = kept_times(&t, "keep_daily = 3", NOW);
    assert_eq!(
        in_utc,
        vec![
            "2026-03-29T21:30:00Z",
            "2026-03-28T23:30:00Z",
            "2026-03-27T12:00:00Z"
        ]
    );
    // The 25-hour day when clocks go back is one day too.
    let t = [
        "2026-10-25T22:30:00Z",
        "2026-10-24T22:30:00Z",
        "2026-10-24T12:00:00Z",
    ];
    let berlin = kept(&t, "keep_daily = 1\ntimezone = \"Europe/Berlin\"", NOW);
    assert_eq!(
        berlin,
        vec![("2026-10-25T22:30:00Z".into(), "daily".into())]
    );
}

#[test]
fn weekly_uses_iso_weeks_numbered_in_their_iso_year() {
    // Sunday 2024-12-29 ends 2024-W52; Monday 2024-12-30 starts 2025-W01, which runs to
    // Sunday 2025-01-05. Keyed by calendar year, 2024-12-30 would look like a week of its own.
    let t = [
        "2025-01-05T12:00:00Z",
        "2024-12-30T12:00:00Z",
        "2024-12-29T12:00:00Z",
        "2024-12-23T12:00:00Z",
    ];
    let k = kept(&t, "keep_weekly = 2", NOW);
    assert_eq!(
        k,
        vec![
            ("2025-01-05T12:00:00Z".into(), "weekly".into()),
            ("2024-12-29T12:00:00Z".into(), "weekly".into())
        ]
    );
    // Weeks start on Monday: Sunday and the Monday after are two weeks.
    let t = [
        "2026-05-11T01:00:00Z",
        "2026-05-10T23:00:00Z",
        "2026-05-04T01:00:00Z",
    ];
    assert_eq!(
        kept_times(&t, "keep_weekly = 2", NOW),
        vec!["2026-05-11T01:00:00Z", "2026-05-10T23:00:00Z"]
    );
}

#[test]
fn monthly_counts_months_that_hold_a_snapshot_so_a_missing_month_costs_no_history() {
    // No snapshot in February: three monthly slots reach back to January.
    let t = [
        "2026-04-20T02:00:00Z",
        "2026-04-05T02:00:00Z",
        "2026-03-10T02:00:00Z",
        "2026-01-15T02:00:00Z",
        "2025-12-15T02:00:00Z",
    ];
    assert_eq!(
        kept_times(&t, "keep_monthly = 3", NOW),
        vec![
            "2026-04-20T02:00:00Z",
            "2026-03-10T02:00:00Z",
            "2026-01-15T02:00:00Z"
        ]
    );
}

#[test]
fn the_oldest_snapshot_is_kept_while_a_rule_has_budget_left_and_not_after() {
    let t = [
        "2026-04-20T02:00:00Z",
        "2026-03-10T02:00:00Z",
        "2026-01-15T02:00:00Z",
        "2026-01-03T02:00:00Z",
    ];
    let k = kept(&t, "keep_monthly = 6", NOW);
    assert_eq!(k.len(), 4);
    assert_eq!(k[2], ("2026-01-15T02:00:00Z".into(), "monthly".into()));
    assert_eq!(
        k[3],
        ("2026-01-03T02:00:00Z".into(), "oldest monthly".into())
    );
    // Budget used up at January 15: the oldest is not kept.
    assert_eq!(kept_times(&t, "keep_monthly = 3", NOW).len(), 3);
}

#[test]
fn yearly_keys_years_in_the_policy_time_zone() {
    // 23:30Z on New Year's Eve is already the new year in Tokyo.
    let t = [
        "2026-06-01T00:00:00Z",
        "2025-12-31T23:30:00Z",
        "2025-06-01T00:00:00Z",
        "2024-06-01T00:00:00Z",
    ];
    assert_eq!(
        kept_times(&t, "keep_yearly = 2\ntimezone = \"Asia/Tokyo\"", NOW),
        vec!["2026-06-01T00:00:00Z", "2025-06-01T00:00:00Z"]
    );
    assert_eq!(
        kept_times(&t, "keep_yearly = 2", NOW),
        vec!["2026-06-01T00:00:00Z", "2025-12-31T23:30:00Z"]
    );
}

#[test]
fn within_measures_back_from_the_newest_snapshot_before_now_and_excludes_the_start() {
    let t = [
        "2026-05-10T02:00:00Z",
        "2026-05-09T02:00:00Z",
        "2026-05-08T02:00:00Z",
        "2026-05-01T02:00:00Z",
    ];
    // Anchor 05-10 02:00; "2d" starts at 05-08 02:00, exclusive.
    let k = kept(&t, "keep_within = \"2d\"", NOW);
    assert_eq!(
        k,
        vec![
            ("2026-05-10T02:00:00Z".into(), "within 2d".into()),
            ("2026-05-09T02:00:00Z".into(), "within 2d".into())
        ]
    );
    // Planned as of 05-09 12:00, 05-10 is in the future: it is not the anchor, 05-09 is.
    let k = kept_times(&t, "keep_within = \"2d\"", "2026-05-09T12:00:00Z");
    assert_eq!(
        k,
        vec![
            "2026-05-10T02:00:00Z",
            "2026-05-09T02:00:00Z",
            "2026-05-08T02:00:00Z"
        ]
    );
    // A backup outage does not empty the window: it ends at the newest snapshot, not now.
    assert_eq!(
        kept_times(&t, "keep_within = \"2d\"", "2027-01-01T00:00:00Z").len(),
        2
    );
    // Unlimited keeps everything.
    assert_eq!(kept_times(&t, "keep_within = -1", NOW).len(), 4);
}

#[test]
fn window_rules_keep_one_per_period_inside_their_window() {
    let t = [
        "2026-05-10T20:00:00Z",
        "2026-05-10T02:00:00Z",
        "2026-05-09T02:00:00Z",
        "2026-05-03T02:00:00Z",
        "2026-05-02T02:00:00Z",
    ];
    let k = kept(&t, "keep_within_daily = \"7d\"", NOW);
    // 7 days before 05-10 20:00 is 05-03 20:00: 05-03 02:00 is outside.
    assert_eq!(
        k,
        vec![
            ("2026-05-10T20:00:00Z".into(), "daily within 7d".into()),
            ("2026-05-09T02:00:00Z".into(), "daily within 7d".into())
        ]
    );
    let k = kept(&t, "keep_within_weekly = \"1m\"", NOW);
    // 2026-05-10 is a Sunday: W19 holds 05-10 and 05-09; W18 holds 05-03 and 05-02, and
    // 05-02 is the oldest, inside the window.
    assert_eq!(
        k,
        vec![
            ("2026-05-10T20:00:00Z".into(), "weekly within 1m".into()),
            ("2026-05-03T02:00:00Z".into(), "weekly within 1m".into()),
            (
                "2026-05-02T02:00:00Z".into(),
                "oldest weekly within 1m".into()
            ),
        ]
    );
}

#[test]
fn tag_lists_match_all_their_tags_and_lists_are_alternatives() {
    let mut c = snaps(&[
        "2026-05-03T00:00:00Z",
        "2026-05-02T00:00:00Z",
        "2026-05-01T00:00:00Z",
    ]);
    c[0].tags = vec!["a".into()];
    c[1].tags = vec!["a".into(), "b".into()];
    let p = Policy::parse("keep_tags = [\"a,b\", [\"\"]]", "test").unwrap();
    let v = evaluate(&c, &p.rules, Tz::UTC, utc(NOW));
    let reasons: Vec<(usize, Vec<String>)> = v
        .iter()
        .filter(|v| v.keep)
        .map(|v| (v.index, v.reasons.iter().map(ToString::to_string).collect()))
        .collect();
    assert_eq!(
        reasons,
        vec![
            (1, vec!["has tags [a, b]".to_string()]),
            (2, vec!["has tags []".to_string()])
        ]
    );
}

#[test]
fn rules_are_ored_with_independent_budgets_and_reasons_in_restic_order() {
    let t = [
        "2026-05-03T10:00:00Z",
        "2026-05-03T09:00:00Z",
        "2026-05-02T10:00:00Z",
    ];
    let k = kept(
        &t,
        "keep_last = 1\nkeep_daily = 2\nkeep_within = \"1h\"",
        NOW,
    );
    assert_eq!(
        k,
        vec![
            (
                "2026-05-03T10:00:00Z".into(),
                "within 1h, last, daily".into()
            ),
            ("2026-05-02T10:00:00Z".into(), "daily".into()),
        ]
    );
}

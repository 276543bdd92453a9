//! `mongokeep policy check` and `mongokeep policy simulate`: the real binary, no repository.

mod common;

use std::path::Path;

fn shipped(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("retention-policies")
        .join(name)
        .display()
        .to_string()
}

#[test]
fn check_accepts_every_shipped_policy_and_names_an_unknown_key() {
    let cwd = tempfile::tempdir().unwrap();
    for name in [
        "default.toml",
        "hourly-2d.toml",
        "atlas-like.toml",
        "long-term.toml",
    ] {
        let out = common::mongokeep(cwd.path())
            .args(["policy", "check", &shipped(name)])
            .run();
        out.expect_code(0);
        assert!(out.stdout.contains("valid"), "{}", out.stdout);
    }
    let out = common::mongokeep(cwd.path())
        .args(["policy", "check", &shipped("default.toml")])
        .run();
    assert!(
        out.stdout.contains("each of the 7 most recent days"),
        "{}",
        out.stdout
    );
    let bad = cwd.path().join("typo.toml");
    std::fs::write(&bad, "keep_daily = 7\nkeep_montly = 6\n").unwrap();
    let out = common::mongokeep(cwd.path())
        .args(["policy", "check", bad.to_str().unwrap()])
        .run();
    out.expect_code(2);
    assert!(
        out.stderr.contains("keep_montly") && out.stderr.contains("line 2"),
        "{}",
        out.stderr
    );
}

#[test]
fn simulate_a_daily_schedule_for_two_years_with_the_default_policy() {
    let cwd = tempfile::tempdir().unwrap();
    let out = common::mongokeep(cwd.path())
        .args(["policy", "simulate", "--policy", &shipped("default.toml")])
        .args([
            "--every",
            "1d",
            "--at",
            "02:00",
            "--for",
            "2y",
            "--from",
            "2024-11-25",
            "--json",
        ])
        .run();
    out.expect_code(0);
    let v = out.json();
    let kept = v["kept"].as_array().unwrap();
    let removed = v["removed"].as_array().unwrap();
    assert_eq!(
        kept.len() + removed.len(),
        730,
        "daily from 2024-11-25 to 2026-11-24"
    );
    let times: Vec<&str> = kept.iter().map(|k| k["time"].as_str().unwrap()).collect();
    // 7 days, 2 more week-ends (Sunday is the newest of an ISO week), 5 more month-ends.
    assert_eq!(
        times,
        [
            "2026-11-24T02:00:00Z",
            "2026-11-23T02:00:00Z",
            "2026-11-22T02:00:00Z",
            "2026-11-21T02:00:00Z",
            "2026-11-20T02:00:00Z",
            "2026-11-19T02:00:00Z",
            "2026-11-18T02:00:00Z",
            "2026-11-15T02:00:00Z",
            "2026-11-08T02:00:00Z",
            "2026-10-31T02:00:00Z",
            "2026-09-30T02:00:00Z",
            "2026-08-31T02:00:00Z",
            "2026-07-31T02:00:00Z",
            "2026-06-30T02:00:00Z",
        ]
    );
    assert_eq!(
        kept[0]["reasons"],
        serde_json::json!(["daily", "weekly", "monthly", "newest"])
    );
    assert_eq!(kept[7]["reasons"], serde_json::json!(["weekly"]));
    assert_eq!(
        removed[0],
        serde_json::json!({ "time": "2026-11-17T02:00:00Z" })
    );
}

#[test]
fn simulate_over_given_times_reports_them_as_written() {
    let cwd = tempfile::tempdir().unwrap();
    let times = cwd.path().join("times.txt");
    // Two Berlin days; the first two lines are the same Berlin day (2026-03-29, 23 hours).
    std::fs::write(
        &times,
        "# one time per line\n2026-03-29T23:30:00+02:00\n2026-03-29T00:30:00+01:00\n\n2026-03-28T12:00:00Z\n2026-04-10T00:00:00Z\n",
    )
    .unwrap();
    let policy = cwd.path().join("berlin.toml");
    std::fs::write(&policy, "keep_daily = 5\ntimezone = \"Europe/Berlin\"\n").unwrap();
    let out = common::mongokeep(cwd.path())
        .args(["policy", "simulate", "--policy", policy.to_str().unwrap()])
        .args([
            "--times",
            times.to_str().unwrap(),
            "--at",
            "2026-04-01T00:00:00Z",
            "--json",
        ])
        .run();
    out.expect_code(0);
    // As of April 1, the April 10 snapshot is in the future: still planned (and the newest).
    assert_eq!(
        out.json(),
        serde_json::json!({
            "kept": [
                { "time": "2026-04-10T00:00:00Z", "reasons": ["daily", "newest"] },
                { "time": "2026-03-29T23:30:00+02:00", "reasons": ["daily"] },
                { "time": "2026-03-28T12:00:00Z", "reasons": ["daily"] },
            ],
            "removed": [ { "time": "2026-03-29T00:30:00+01:00" } ],
        })
    );
    let bad = cwd.path().join("bad.txt");
    std::fs::write(&bad, "2026-03-29T23:30:00Z\nyesterday\n").unwrap();
    let out = common::mongokeep(cwd.path())
        .args([
            "policy",
            "simulate",
            "--policy",
            policy.to_str().unwrap(),
            "--times",
            bad.to_str().unwrap(),
        ])
        .run();
    out.expect_code(2);
    assert!(out.stderr.contains("line 2"), "{}", out.stderr);
}

#[test]
fn simulate_refuses_a_schedule_without_its_length_and_a_date_as_time_of_day() {
    let cwd = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        common::mongokeep(cwd.path())
            .args(["policy", "simulate", "--policy", &shipped("default.toml")])
            .args(args)
            .run()
    };
    run(&["--every", "1d"]).expect_code(2);
    let out = run(&[
        "--every",
        "1d",
        "--for",
        "1y",
        "--at",
        "2026-01-01T02:00:00Z",
    ]);
    out.expect_code(2);
    assert!(out.stderr.contains("time of day"), "{}", out.stderr);
    run(&["--every", "1x", "--for", "1y"]).expect_code(2);
}

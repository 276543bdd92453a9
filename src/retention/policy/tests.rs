//! Unit tests of [`super`].

use super::*;

fn parse(text: &str) -> Result<Policy> {
    Policy::parse(text, "test.toml")
}

#[test]
fn every_field_parses() {
    let p = parse(
        r#"
        keep_last = 3
        keep_hourly = "unlimited"
        keep_daily = 7
        keep_weekly = 4
        keep_monthly = 6
        keep_yearly = -1
        keep_within = "2d"
        keep_within_hourly = "1d"
        keep_within_daily = "1m14d"
        keep_within_weekly = "2m"
        keep_within_monthly = "1y"
        keep_within_yearly = -1
        keep_tags = ["pre-migration", ["a", "b"]]
        timezone = "Europe/Berlin"
        min_keep = 5
        incomplete_grace = "12h"
        "#,
    )
    .unwrap();
    assert_eq!(p.rules.counts.len(), 6);
    assert_eq!(
        p.rules.counts[1],
        (CountRule::Period(PeriodKind::Hourly), -1)
    );
    assert_eq!(
        p.rules.counts[5],
        (CountRule::Period(PeriodKind::Yearly), -1)
    );
    assert_eq!(p.rules.within, Some(Span::parse("2d").unwrap()));
    assert_eq!(
        p.rules.windows[2],
        (PeriodKind::Weekly, Span::parse("2m").unwrap())
    );
    assert_eq!(p.rules.windows[4], (PeriodKind::Yearly, Span::Unlimited));
    assert_eq!(
        p.rules.tags,
        vec![
            vec!["pre-migration".to_string()],
            vec!["a".into(), "b".into()]
        ]
    );
    assert_eq!(p.timezone, chrono_tz::Europe::Berlin);
    assert_eq!(p.min_keep, 5);
    assert_eq!(p.incomplete_grace, Span::parse("12h").unwrap());
}

#[test]
fn defaults_are_utc_one_snapshot_and_a_day_of_grace() {
    let p = parse("keep_daily = 7").unwrap();
    assert_eq!(p.timezone, Tz::UTC);
    assert_eq!(p.min_keep, 1);
    assert_eq!(p.incomplete_grace, DEFAULT_INCOMPLETE_GRACE);
}

#[test]
fn unknown_keys_are_errors_that_name_the_key() {
    let e = parse("keep_daily = 7\nkeep_dayly = 3\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("keep_dayly") && e.contains("test.toml"), "{e}");
}

#[test]
fn bad_values_name_the_key() {
    for (text, key) in [
        ("keep_daily = -2", "keep_daily"),
        ("keep_daily = \"lots\"", "keep_daily"),
        ("keep_daily = 7\nkeep_within = \"3w\"", "keep_within"),
        ("keep_daily = 7\nkeep_within_daily = 7", "keep_within_daily"),
        ("keep_daily = 7\nkeep_within = \"0d\"", "keep_within"),
        ("keep_daily = 7\ntimezone = \"Mars/Olympus\"", "timezone"),
        ("keep_daily = 7\nmin_keep = 0", "min_keep"),
        (
            "keep_daily = 7\nincomplete_grace = \"-3d\"",
            "incomplete_grace",
        ),
        ("keep_daily = 7\nkeep_tags = [[]]", "keep_tags"),
    ] {
        let e = parse(text).unwrap_err().to_string();
        assert!(e.contains(key), "{text}: {e}");
    }
}

#[test]
fn a_policy_that_keeps_nothing_is_refused() {
    for text in ["", "timezone = \"UTC\"", "keep_daily = 0"] {
        let e = parse(text).unwrap_err().to_string();
        assert!(e.contains("keeps nothing"), "{text}: {e}");
    }
}

#[test]
fn description_names_every_rule() {
    let d = parse(
        "keep_daily = 7\nkeep_within_hourly = \"2d\"\ntimezone = \"Asia/Tokyo\"\nmin_keep = 3",
    )
    .unwrap()
    .describe();
    for want in [
        "7 most recent days",
        "each hour within 2d",
        "Asia/Tokyo",
        "fewer than 3",
        "older than 1d",
    ] {
        assert!(d.contains(want), "{want} missing in:\n{d}");
    }
}

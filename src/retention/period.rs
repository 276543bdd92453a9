//! Calendar periods (hour, day, ISO week, month, year) and the key that says which period a
//! snapshot falls in, read on the wall clock of the policy's time zone.
//!
//! Every kind has its own function and its own test: a table-driven bucket function is
//! where a copy-paste slip hides (rustic once keyed one period by the wrong field).

use std::fmt;

use chrono::{DateTime, Datelike, Offset, Timelike, Utc};
use chrono_tz::Tz;

/// A kind of calendar period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PeriodKind {
    /// A wall-clock hour.
    Hourly,
    /// A calendar day.
    Daily,
    /// An ISO 8601 week: Monday to Sunday, numbered within its ISO week-year.
    Weekly,
    /// A calendar month.
    Monthly,
    /// A calendar year.
    Yearly,
}

impl PeriodKind {
    /// Every kind, shortest first (the order restic evaluates them in).
    pub const ALL: [PeriodKind; 5] = [
        PeriodKind::Hourly,
        PeriodKind::Daily,
        PeriodKind::Weekly,
        PeriodKind::Monthly,
        PeriodKind::Yearly,
    ];

    /// `hourly`, `daily`...
    pub fn name(self) -> &'static str {
        match self {
            PeriodKind::Hourly => "hourly",
            PeriodKind::Daily => "daily",
            PeriodKind::Weekly => "weekly",
            PeriodKind::Monthly => "monthly",
            PeriodKind::Yearly => "yearly",
        }
    }

    /// The key of the period `t` falls in, on `tz`'s wall clock.
    pub fn key(self, t: DateTime<Utc>, tz: Tz) -> PeriodKey {
        match self {
            PeriodKind::Hourly => hour_key(t, tz),
            PeriodKind::Daily => day_key(t, tz),
            PeriodKind::Weekly => week_key(t, tz),
            PeriodKind::Monthly => month_key(t, tz),
            PeriodKind::Yearly => year_key(t, tz),
        }
    }
}

impl fmt::Display for PeriodKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Identifies one period; equal keys mean the same period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PeriodKey {
    /// Date, hour and the UTC offset in force: when clocks go back, 02:00-02:59 happens
    /// twice, and those are two hours, not one.
    Hour {
        year: i32,
        month: u32,
        day: u32,
        hour: u32,
        offset_secs: i32,
    },
    /// Calendar date.
    Day { year: i32, month: u32, day: u32 },
    /// ISO week-year and week number (2016-01-01 is 2015-W53).
    Week { iso_year: i32, week: u32 },
    /// Year and month.
    Month { year: i32, month: u32 },
    /// Year.
    Year { year: i32 },
}

fn hour_key(t: DateTime<Utc>, tz: Tz) -> PeriodKey {
    let local = t.with_timezone(&tz);
    PeriodKey::Hour {
        year: local.year(),
        month: local.month(),
        day: local.day(),
        hour: local.hour(),
        offset_secs: local.offset().fix().local_minus_utc(),
    }
}

fn day_key(t: DateTime<Utc>, tz: Tz) -> PeriodKey {
    let local = t.with_timezone(&tz);
    PeriodKey::Day {
        year: local.year(),
        month: local.month(),
        day: local.day(),
    }
}

fn week_key(t: DateTime<Utc>, tz: Tz) -> PeriodKey {
    let week = t.with_timezone(&tz).iso_week();
    PeriodKey::Week {
        iso_year: week.year(),
        week: week.week(),
    }
}

fn month_key(t: DateTime<Utc>, tz: Tz) -> PeriodKey {
    let local = t.with_timezone(&tz);
    PeriodKey::Month {
        year: local.year(),
        month: local.month(),
    }
}

fn year_key(t: DateTime<Utc>, tz: Tz) -> PeriodKey {
    PeriodKey::Year {
        year: t.with_timezone(&tz).year(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn tz(name: &str) -> Tz {
        name.parse().unwrap()
    }

    fn same(kind: PeriodKind, a: &str, b: &str, zone: &str) -> bool {
        kind.key(utc(a), tz(zone)) == kind.key(utc(b), tz(zone))
    }

    #[test]
    fn hours() {
        let k = PeriodKind::Hourly;
        assert!(same(
            k,
            "2026-05-01T10:00:00Z",
            "2026-05-01T10:59:59Z",
            "UTC"
        ));
        assert!(!same(
            k,
            "2026-05-01T10:59:59Z",
            "2026-05-01T11:00:00Z",
            "UTC"
        ));
        assert!(
            !same(k, "2026-05-01T10:00:00Z", "2026-05-02T10:00:00Z", "UTC"),
            "same hour, another day"
        );
        // Kolkata is UTC+05:30: its hours start at half past in UTC.
        assert!(same(
            k,
            "2026-05-01T04:30:00Z",
            "2026-05-01T05:29:59Z",
            "Asia/Kolkata"
        ));
        assert!(!same(
            k,
            "2026-05-01T04:29:59Z",
            "2026-05-01T04:30:00Z",
            "Asia/Kolkata"
        ));
        // Clocks go back in Berlin on 2026-10-25: 02:30 CEST (00:30Z) and 02:30 CET (01:30Z)
        // read the same on the wall but are two different hours.
        assert!(!same(
            k,
            "2026-10-25T00:30:00Z",
            "2026-10-25T01:30:00Z",
            "Europe/Berlin"
        ));
        assert_eq!(
            k.key(utc("2026-10-25T01:30:00Z"), tz("Europe/Berlin")),
            PeriodKey::Hour {
                year: 2026,
                month: 10,
                day: 25,
                hour: 2,
                offset_secs: 3600
            }
        );
    }

    #[test]
    fn days() {
        let k = PeriodKind::Daily;
        assert!(same(
            k,
            "2026-05-01T00:00:00Z",
            "2026-05-01T23:59:59Z",
            "UTC"
        ));
        assert!(!same(
            k,
            "2026-05-01T23:59:59Z",
            "2026-05-02T00:00:00Z",
            "UTC"
        ));
        assert!(
            !same(k, "2026-05-01T10:00:00Z", "2026-06-01T10:00:00Z", "UTC"),
            "same day number, another month"
        );
        // New York (UTC-4 in May): 02:00Z is still the previous evening there.
        assert!(same(
            k,
            "2026-05-01T12:00:00Z",
            "2026-05-02T02:00:00Z",
            "America/New_York"
        ));
        assert!(!same(
            k,
            "2026-05-01T12:00:00Z",
            "2026-05-02T02:00:00Z",
            "UTC"
        ));
        // Spring forward in Berlin (2026-03-29 has 23 hours): 00:30 CET and 23:30 CEST are
        // the same local day, though they are different UTC days.
        assert!(same(
            k,
            "2026-03-28T23:30:00Z",
            "2026-03-29T21:30:00Z",
            "Europe/Berlin"
        ));
        assert!(!same(
            k,
            "2026-03-29T21:30:00Z",
            "2026-03-29T22:30:00Z",
            "Europe/Berlin"
        ));
        // Fall back (2026-10-25 has 25 hours): 00:30 CEST and 23:30 CET, one local day.
        assert!(same(
            k,
            "2026-10-24T22:30:00Z",
            "2026-10-25T22:30:00Z",
            "Europe/Berlin"
        ));
        assert_eq!(
            k.key(utc("2026-10-25T22:30:00Z"), tz("Europe/Berlin")),
            PeriodKey::Day {
                year: 2026,
                month: 10,
                day: 25
            }
        );
    }

    #[test]
    fn iso_weeks_with_iso_years() {
        let k = PeriodKind::Weekly;
        // Monday to Sunday.
        assert!(same(
            k,
            "2026-05-04T00:00:00Z",
            "2026-05-10T23:59:59Z",
            "UTC"
        ));
        assert!(
            !same(k, "2026-05-10T23:59:59Z", "2026-05-11T00:00:00Z", "UTC"),
            "a week starts on Monday"
        );
        // 2016-01-01..03 belong to 2015-W53; 2016-01-04 starts 2016-W01.
        assert_eq!(
            k.key(utc("2016-01-03T12:00:00Z"), Tz::UTC),
            PeriodKey::Week {
                iso_year: 2015,
                week: 53
            }
        );
        assert!(same(
            k,
            "2015-12-28T00:00:00Z",
            "2016-01-03T23:00:00Z",
            "UTC"
        ));
        assert!(!same(
            k,
            "2016-01-03T23:00:00Z",
            "2016-01-04T00:00:00Z",
            "UTC"
        ));
        // Monday 2024-12-30 is in 2025-W01 (ISO year 2025, calendar year 2024): keyed by
        // the calendar year it would look like a different week from 2025-01-05.
        assert_eq!(
            k.key(utc("2024-12-30T12:00:00Z"), Tz::UTC),
            PeriodKey::Week {
                iso_year: 2025,
                week: 1
            }
        );
        assert!(same(
            k,
            "2024-12-30T12:00:00Z",
            "2025-01-05T12:00:00Z",
            "UTC"
        ));
        assert!(!same(
            k,
            "2024-12-29T12:00:00Z",
            "2024-12-30T12:00:00Z",
            "UTC"
        ));
        // In Sydney (UTC+11 in January) Sunday 20:00Z is already Monday.
        assert!(!same(
            k,
            "2026-01-04T10:00:00Z",
            "2026-01-04T14:00:00Z",
            "Australia/Sydney"
        ));
        assert!(same(
            k,
            "2026-01-04T10:00:00Z",
            "2026-01-04T14:00:00Z",
            "UTC"
        ));
    }

    #[test]
    fn months() {
        let k = PeriodKind::Monthly;
        assert!(same(
            k,
            "2026-02-01T00:00:00Z",
            "2026-02-28T23:59:59Z",
            "UTC"
        ));
        assert!(!same(
            k,
            "2026-02-28T23:59:59Z",
            "2026-03-01T00:00:00Z",
            "UTC"
        ));
        assert!(
            !same(k, "2025-02-10T00:00:00Z", "2026-02-10T00:00:00Z", "UTC"),
            "same month, another year"
        );
        // 23:30Z on Jan 31 is February 1 in Tokyo.
        assert_eq!(
            k.key(utc("2026-01-31T23:30:00Z"), tz("Asia/Tokyo")),
            PeriodKey::Month {
                year: 2026,
                month: 2
            }
        );
        assert_eq!(
            k.key(utc("2026-01-31T23:30:00Z"), Tz::UTC),
            PeriodKey::Month {
                year: 2026,
                month: 1
            }
        );
    }

    #[test]
    fn years() {
        let k = PeriodKind::Yearly;
        assert!(same(
            k,
            "2026-01-01T00:00:00Z",
            "2026-12-31T23:59:59Z",
            "UTC"
        ));
        assert!(!same(
            k,
            "2025-12-31T23:59:59Z",
            "2026-01-01T00:00:00Z",
            "UTC"
        ));
        // Calendar year, not ISO week-year: 2024-12-30 is in 2025-W01 but in year 2024.
        assert_eq!(
            k.key(utc("2024-12-30T12:00:00Z"), Tz::UTC),
            PeriodKey::Year { year: 2024 }
        );
        // New Year comes 5 hours later in New York.
        assert_eq!(
            k.key(utc("2026-01-01T03:00:00Z"), tz("America/New_York")),
            PeriodKey::Year { year: 2025 }
        );
    }
}

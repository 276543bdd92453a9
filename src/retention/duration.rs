//! Retention durations in restic's syntax: `1y2m3d4h` (years, months, days, hours; `m` is
//! months, never minutes), plus `-1` (or `unlimited`) for a window without a start.
//!
//! A duration is not a number of seconds: "one month before March 31" is computed on the
//! calendar, in a time zone, the way restic (Go's `AddDate`) does it. [`Span::start_before`]
//! holds that arithmetic; everything that measures "within D" goes through it.

use std::fmt;

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;

/// A retention duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Span {
    /// `-1`: the window reaches back without end.
    Unlimited,
    /// Calendar years, months and days, then elapsed hours.
    Calendar {
        /// Years.
        years: u32,
        /// Calendar months.
        months: u32,
        /// Calendar days.
        days: u32,
        /// Hours of elapsed time.
        hours: u32,
    },
}

impl Span {
    /// Parse restic's syntax. A repeated unit overrides the earlier one (`1d2d` is `2d`), as
    /// in restic. `-1` and `unlimited` mean [`Span::Unlimited`].
    ///
    /// # Errors
    /// Anything else, with the reason: an unknown unit, a missing number, a negative value.
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        if t == "-1" || t.eq_ignore_ascii_case("unlimited") {
            return Ok(Span::Unlimited);
        }
        if t.is_empty() {
            return Err(
                "empty duration; write e.g. \"7d\", \"1y2m3d4h\" or \"-1\" for unlimited".into(),
            );
        }
        if t.starts_with('-') {
            return Err(format!(
                "{t:?}: a duration cannot be negative (\"-1\" alone means unlimited)"
            ));
        }
        let (mut years, mut months, mut days, mut hours) = (0, 0, 0, 0);
        let mut number = String::new();
        for c in t.chars() {
            if c.is_ascii_digit() {
                number.push(c);
                continue;
            }
            if number.is_empty() {
                return Err(format!("{t:?}: expected a number before {c:?}"));
            }
            let n: u32 = number
                .parse()
                .map_err(|_| format!("{t:?}: {number} is too large"))?;
            match c {
                'y' => years = n,
                'm' => months = n,
                'd' => days = n,
                'h' => hours = n,
                _ => {
                    return Err(format!(
                        "{t:?}: unknown unit {c:?}; the units are y (years), m (months), d (days) and h (hours)"
                    ))
                }
            }
            number.clear();
        }
        if !number.is_empty() {
            return Err(format!(
                "{t:?}: the number {number} has no unit (y, m, d or h)"
            ));
        }
        Ok(Span::Calendar {
            years,
            months,
            days,
            hours,
        })
    }

    /// A zero duration (`0d`): restic treats such a rule as unset.
    pub fn is_zero(&self) -> bool {
        matches!(
            self,
            Span::Calendar {
                years: 0,
                months: 0,
                days: 0,
                hours: 0
            }
        )
    }

    /// The start of the window of this length that ends at `end`: calendar years, months and
    /// days are subtracted on `end`'s wall clock in `tz` (a day past the end of the month
    /// rolls forward, so March 31 minus one month is March 2 or 3), then the hours as
    /// elapsed time. `None` when the window has no start (unlimited, or before any date
    /// that can be represented).
    pub fn start_before(&self, end: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        self.shift(end, tz, -1)
    }

    /// The end of the window of this length that starts at `start`: the same arithmetic
    /// forwards. `None` when unlimited or beyond any representable date.
    pub fn end_after(&self, start: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        self.shift(start, tz, 1)
    }

    /// Add `sign` times this duration to `t`, as Go's `t.AddDate(y, m, d).Add(h)`.
    fn shift(&self, t: DateTime<Utc>, tz: Tz, sign: i64) -> Option<DateTime<Utc>> {
        let Span::Calendar {
            years,
            months,
            days,
            hours,
        } = *self
        else {
            return None;
        };
        let wall = t.with_timezone(&tz).naive_local();
        let date = wall.date();
        let month_index = i64::from(date.year()) * 12
            + i64::from(date.month0())
            + sign * (i64::from(years) * 12 + i64::from(months));
        let year = i32::try_from(month_index.div_euclid(12)).ok()?;
        let month = month_index.rem_euclid(12) as u32 + 1;
        let first = NaiveDate::from_ymd_opt(year, month, 1)?;
        let offset_days = i64::from(date.day0()) + sign * i64::from(days);
        let target = first.checked_add_signed(Duration::try_days(offset_days)?)?;
        let moved = resolve_local(tz, target.and_time(wall.time()))?;
        moved.checked_add_signed(Duration::try_hours(sign * i64::from(hours))?)
    }

    /// The canonical label restic prints: non-zero parts in the order y, m, d, h
    /// (`1y1d1m` is shown as `1y1m1d`).
    pub fn label(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Span::Unlimited => f.write_str("unlimited"),
            Span::Calendar {
                years,
                months,
                days,
                hours,
            } => {
                if self.is_zero() {
                    return f.write_str("0h");
                }
                for (n, unit) in [(years, 'y'), (months, 'm'), (days, 'd'), (hours, 'h')] {
                    if n != 0 {
                        write!(f, "{n}{unit}")?;
                    }
                }
                Ok(())
            }
        }
    }
}

/// The instant of a wall-clock time in `tz`. A time that occurs twice (the hour repeated
/// when clocks go back) is the first occurrence; a time that does not exist (skipped when
/// clocks go forward) is moved forward by the length of the gap, as Go's `time.Date` does.
pub fn resolve_local(tz: Tz, wall: NaiveDateTime) -> Option<DateTime<Utc>> {
    match tz.from_local_datetime(&wall) {
        chrono::LocalResult::Single(t) => Some(t.with_timezone(&Utc)),
        chrono::LocalResult::Ambiguous(first, _) => Some(first.with_timezone(&Utc)),
        chrono::LocalResult::None => {
            // In a gap: read the wall time with the offset in force before the gap.
            let before = wall.checked_sub_signed(Duration::days(1))?;
            let offset = tz.offset_from_utc_datetime(&before).fix().local_minus_utc();
            let utc = wall.checked_sub_signed(Duration::seconds(i64::from(offset)))?;
            Some(utc.and_utc())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn cal(years: u32, months: u32, days: u32, hours: u32) -> Span {
        Span::Calendar {
            years,
            months,
            days,
            hours,
        }
    }

    #[test]
    fn parses_restic_syntax() {
        assert_eq!(Span::parse("1y2m3d4h"), Ok(cal(1, 2, 3, 4)));
        assert_eq!(Span::parse("2d"), Ok(cal(0, 0, 2, 0)));
        assert_eq!(Span::parse("36h"), Ok(cal(0, 0, 0, 36)));
        assert_eq!(Span::parse("1m14d"), Ok(cal(0, 1, 14, 0)));
        // A repeated unit overrides, as in restic.
        assert_eq!(Span::parse("1d2d"), Ok(cal(0, 0, 2, 0)));
        assert_eq!(Span::parse("-1"), Ok(Span::Unlimited));
        assert_eq!(Span::parse("unlimited"), Ok(Span::Unlimited));
        for bad in ["", "5", "d", "1w", "1.5d", "-2d", "1d 2h", "99999999999d"] {
            assert!(Span::parse(bad).is_err(), "{bad:?} parsed");
        }
        assert!(Span::parse("1w").unwrap_err().contains("unknown unit"));
    }

    #[test]
    fn labels_are_canonical() {
        assert_eq!(Span::parse("1y1d1m").unwrap().label(), "1y1m1d");
        assert_eq!(Span::parse("1m14d").unwrap().label(), "1m14d");
        assert_eq!(Span::parse("13d23h").unwrap().label(), "13d23h");
        assert_eq!(Span::Unlimited.label(), "unlimited");
        assert!(Span::parse("0d").unwrap().is_zero());
    }

    #[test]
    fn window_starts_follow_the_calendar() {
        let anchor = utc("2016-01-18T12:02:03Z");
        let start = |s: &str| {
            Span::parse(s)
                .unwrap()
                .start_before(anchor, Tz::UTC)
                .unwrap()
        };
        // The examples restic's data is built on (README of the conformance data).
        assert_eq!(start("1m"), utc("2015-12-18T12:02:03Z"));
        assert_eq!(start("2m2h"), utc("2015-11-18T10:02:03Z"));
        assert_eq!(start("13d23h"), utc("2016-01-04T13:02:03Z"));
        assert_eq!(start("1y2m3d3h"), utc("2014-11-15T09:02:03Z"));
        // Year -7983 is representable; the window starts there.
        assert_eq!(start("9999y").year(), -7983);
        assert_eq!(Span::Unlimited.start_before(anchor, Tz::UTC), None);
    }

    #[test]
    fn months_are_calendar_months_and_overflowing_days_roll_forward() {
        let one_month = Span::parse("1m").unwrap();
        // "February 31" rolls forward: Feb 2026 has 28 days, so it is March 3; Feb 2024
        // has 29, so it is March 2.
        assert_eq!(
            one_month.start_before(utc("2026-03-31T02:00:00Z"), Tz::UTC),
            Some(utc("2026-03-03T02:00:00Z"))
        );
        assert_eq!(
            one_month.start_before(utc("2024-03-31T02:00:00Z"), Tz::UTC),
            Some(utc("2024-03-02T02:00:00Z"))
        );
        // A month before March 1 is February 1, 28 days and not 30.
        assert_eq!(
            one_month.start_before(utc("2026-03-01T00:00:00Z"), Tz::UTC),
            Some(utc("2026-02-01T00:00:00Z"))
        );
        // Days reaching into the previous year.
        let ten_days = Span::parse("10d").unwrap();
        assert_eq!(
            ten_days.start_before(utc("2026-01-05T00:00:00Z"), Tz::UTC),
            Some(utc("2025-12-26T00:00:00Z"))
        );
        // Forwards: January 31 plus one month is "February 31", March 3.
        assert_eq!(
            one_month.end_after(utc("2026-01-31T02:00:00Z"), Tz::UTC),
            Some(utc("2026-03-03T02:00:00Z"))
        );
        let mixed = Span::parse("1y2m3d4h").unwrap();
        assert_eq!(
            mixed.end_after(utc("2026-01-01T00:00:00Z"), Tz::UTC),
            Some(utc("2027-03-04T04:00:00Z"))
        );
        assert_eq!(
            Span::Unlimited.end_after(utc("2026-01-01T00:00:00Z"), Tz::UTC),
            None
        );
    }

    #[test]
    fn days_are_wall_clock_days_across_daylight_saving() {
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        // 2026-03-29 clocks go forward in Berlin: one calendar day back from Sunday 12:00
        // CEST is Saturday 12:00 CET, 23 hours earlier.
        let end = utc("2026-03-29T10:00:00Z"); // 12:00 CEST
        let day = Span::parse("1d").unwrap();
        assert_eq!(
            day.start_before(end, berlin),
            Some(utc("2026-03-28T11:00:00Z"))
        );
        // 24h is elapsed time, not a calendar day.
        let hours = Span::parse("24h").unwrap();
        assert_eq!(
            hours.start_before(end, berlin),
            Some(utc("2026-03-28T10:00:00Z"))
        );
        // Landing in the skipped hour moves forward: 2026-03-30 02:30 CEST minus 1d is
        // 2026-03-29 02:30, which does not exist; it becomes 03:30 CEST.
        let end = utc("2026-03-30T00:30:00Z");
        assert_eq!(
            day.start_before(end, berlin),
            Some(utc("2026-03-29T01:30:00Z"))
        );
        // Landing in the repeated hour (2026-10-25 02:30 happens twice) takes the first.
        let end = utc("2026-10-26T01:30:00Z"); // 02:30 CET on the 26th
        assert_eq!(
            day.start_before(end, berlin),
            Some(utc("2026-10-25T00:30:00Z"))
        );
    }
}

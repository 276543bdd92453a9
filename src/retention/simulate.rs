//! `mongokeep policy simulate`: what a policy keeps of a schedule ("daily at 02:00 for two
//! years") or of a given list of times, without any repository. The same planner as
//! `prune` runs on made-up complete snapshots, so the preview is what a prune would do.

use chrono::{DateTime, NaiveDate, NaiveTime, SecondsFormat, Utc};
use chrono_tz::Tz;
use serde::Serialize;

use super::duration::{resolve_local, Span};
use super::forget::Reason;
use super::plan::{plan, Inventory, Plan, SnapshotInfo};
use super::policy::Policy;
use crate::{Error, Result};

/// Bound on the snapshots a schedule may produce (hourly for 10 years is 87,600).
pub const MAX_SCHEDULED: usize = 200_000;

/// A backup schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    /// Time between two backups (`1d`, `6h`, `1m`).
    pub every: Span,
    /// Wall-clock time of the first backup of the schedule, in the policy's zone.
    pub at: NaiveTime,
    /// How long the schedule has run.
    pub length: Span,
    /// First day, in the policy's zone; `None`: the schedule ends at `now`.
    pub from: Option<NaiveDate>,
}

impl Schedule {
    /// The backup times, oldest first, and the "now" they are planned at: the end of the
    /// schedule. With `from`, the schedule runs from that day's midnight for `length`;
    /// without, it ends at `now` and started `length` before.
    ///
    /// # Errors
    /// [`Error::Config`] for an unlimited or zero interval or length, or a schedule of more
    /// than [`MAX_SCHEDULED`] backups.
    pub fn times(&self, tz: Tz, now: DateTime<Utc>) -> Result<(Vec<DateTime<Utc>>, DateTime<Utc>)> {
        if matches!(self.every, Span::Unlimited) || self.every.is_zero() {
            return Err(Error::Config(format!(
                "--every {}: give a positive interval such as 1d or 6h",
                self.every
            )));
        }
        if matches!(self.length, Span::Unlimited) || self.length.is_zero() {
            return Err(Error::Config(format!(
                "--for {}: give a positive length such as 2y",
                self.length
            )));
        }
        let out_of_range =
            || Error::Config("the schedule reaches beyond the dates this tool represents".into());
        let (start, end) = match self.from {
            Some(day) => {
                let start =
                    resolve_local(tz, day.and_time(NaiveTime::MIN)).ok_or_else(out_of_range)?;
                (
                    start,
                    self.length.end_after(start, tz).ok_or_else(out_of_range)?,
                )
            }
            None => (
                self.length.start_before(now, tz).ok_or_else(out_of_range)?,
                now,
            ),
        };
        let start_day = start.with_timezone(&tz).date_naive();
        let first = resolve_local(tz, start_day.and_time(self.at)).ok_or_else(out_of_range)?;
        let mut times = Vec::new();
        // Each time is computed from the first, not from the previous one, so a wall-clock
        // schedule keeps its hour across daylight-saving changes.
        let mut step = Span::Calendar {
            years: 0,
            months: 0,
            days: 0,
            hours: 0,
        };
        loop {
            let t = step.end_after(first, tz).ok_or_else(out_of_range)?;
            if t >= end {
                break;
            }
            if t >= start {
                times.push(t);
            }
            if times.len() > MAX_SCHEDULED {
                return Err(Error::Config(format!(
                    "the schedule makes more than {MAX_SCHEDULED} backups; simulate a shorter period"
                )));
            }
            step = add(step, self.every);
        }
        Ok((times, end))
    }
}

fn add(a: Span, b: Span) -> Span {
    match (a, b) {
        (
            Span::Calendar {
                years,
                months,
                days,
                hours,
            },
            Span::Calendar {
                years: y,
                months: m,
                days: d,
                hours: h,
            },
        ) => Span::Calendar {
            years: years + y,
            months: months + m,
            days: days + d,
            hours: hours + h,
        },
        _ => Span::Unlimited,
    }
}

/// Parse a `--at` time of day: `HH:MM` or `HH:MM:SS`.
///
/// # Errors
/// [`Error::Config`] naming the value.
pub fn parse_time_of_day(text: &str) -> Result<NaiveTime> {
    NaiveTime::parse_from_str(text, "%H:%M")
        .or_else(|_| NaiveTime::parse_from_str(text, "%H:%M:%S"))
        .map_err(|_| {
            Error::Config(format!(
                "--at {text:?}: expected a time of day such as 02:00"
            ))
        })
}

/// Parse an RFC 3339 instant (`2026-11-25T02:00:00Z`, `2026-11-25T03:00:00+01:00`).
///
/// # Errors
/// [`Error::Config`] naming `what` and the value.
pub fn parse_instant(text: &str, what: &str) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            Error::Config(format!(
                "{what} {text:?}: not an RFC 3339 time ({e}); write e.g. 2026-11-25T02:00:00Z"
            ))
        })
}

/// Parse a times file: one RFC 3339 time per line; blank lines and `#` comments are
/// skipped. Each time is returned with its text as written.
///
/// # Errors
/// [`Error::Config`] naming the line.
pub fn parse_times(text: &str, origin: &str) -> Result<Vec<(String, DateTime<Utc>)>> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let t = parse_instant(line, &format!("{origin} line {}:", n + 1))?;
        out.push((line.to_string(), t));
    }
    Ok(out)
}

/// A simulated plan, with each snapshot's time as given.
#[derive(Debug, Clone)]
pub struct Simulation {
    /// The plan (snapshot ids are positions in `labels`).
    pub plan: Plan,
    /// The time of each input snapshot, as given.
    pub labels: Vec<String>,
}

/// `--json` output: `{"kept": [{"time", "reasons"}], "removed": [{"time"}]}`, newest first.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SimulationJson {
    /// Kept snapshots.
    pub kept: Vec<KeptJson>,
    /// Removed snapshots.
    pub removed: Vec<RemovedJson>,
}

/// A kept snapshot in [`SimulationJson`].
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct KeptJson {
    /// As given.
    pub time: String,
    /// Why.
    pub reasons: Vec<Reason>,
}

/// A removed snapshot in [`SimulationJson`].
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RemovedJson {
    /// As given.
    pub time: String,
}

impl Simulation {
    /// The time as given of a decision's snapshot.
    pub fn label<'a>(&'a self, id: &'a str) -> &'a str {
        id.parse::<usize>()
            .ok()
            .and_then(|i| self.labels.get(i))
            .map_or(id, String::as_str)
    }

    /// The `--json` shape.
    pub fn to_json(&self) -> SimulationJson {
        SimulationJson {
            kept: self
                .plan
                .kept()
                .map(|d| KeptJson {
                    time: self.label(&d.id).to_string(),
                    reasons: d.reasons.clone(),
                })
                .collect(),
            removed: self
                .plan
                .removed()
                .map(|d| RemovedJson {
                    time: self.label(&d.id).to_string(),
                })
                .collect(),
        }
    }
}

/// Plan `policy` over complete, unverified snapshots at `times` as of `now`.
pub fn simulate(
    times: &[(String, DateTime<Utc>)],
    policy: &Policy,
    now: DateTime<Utc>,
) -> Simulation {
    let width = times.len().to_string().len();
    let inventory = Inventory {
        snapshots: times
            .iter()
            .enumerate()
            .map(|(i, (_, t))| SnapshotInfo {
                // Zero-padded positions: the planner breaks ties of equal times by id,
                // newest id first; reversed positions keep equal times in input order,
                // as restic does.
                id: format!("{:0width$}", times.len() - 1 - i),
                time: *t,
                tags: vec![],
                size_bytes: 0,
                verified: false,
                restore_tested: false,
            })
            .collect(),
        ..Default::default()
    };
    let mut sim = Simulation {
        plan: plan(&inventory, policy, now),
        labels: vec![],
    };
    // Map the reversed positions back to the input.
    for d in sim.plan.decisions.iter_mut() {
        let rev: usize = d.id.parse().expect("ids are positions");
        d.id = (times.len() - 1 - rev).to_string();
    }
    sim.labels = times.iter().map(|(s, _)| s.clone()).collect();
    sim
}

/// Format an instant as RFC 3339 in `tz` (`2026-03-29T03:00:00+02:00`; `Z` for UTC).
pub fn rfc3339_in(t: DateTime<Utc>, tz: Tz) -> String {
    t.with_timezone(&tz)
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn schedule(every: &str, at: &str, length: &str, from: Option<&str>) -> Schedule {
        Schedule {
            every: Span::parse(every).unwrap(),
            at: parse_time_of_day(at).unwrap(),
            length: Span::parse(length).unwrap(),
            from: from.map(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").unwrap()),
        }
    }

    #[test]
    fn a_daily_schedule_keeps_its_wall_clock_hour_across_daylight_saving() {
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        let s = schedule("1d", "02:30", "4d", Some("2026-03-28"));
        let (times, now) = s.times(berlin, Utc::now()).unwrap();
        let shown: Vec<String> = times.iter().map(|t| rfc3339_in(*t, berlin)).collect();
        // 02:30 does not exist on March 29 (clocks jump from 02:00 to 03:00).
        assert_eq!(
            shown,
            [
                "2026-03-28T02:30:00+01:00",
                "2026-03-29T03:30:00+02:00",
                "2026-03-30T02:30:00+02:00",
                "2026-03-31T02:30:00+02:00"
            ]
        );
        assert_eq!(rfc3339_in(now, berlin), "2026-04-01T00:00:00+02:00");
    }

    #[test]
    fn without_a_start_the_schedule_ends_now() {
        let now = utc("2026-11-25T10:00:00Z");
        let (times, end) = schedule("6h", "01:00", "1d", None)
            .times(Tz::UTC, now)
            .unwrap();
        assert_eq!(end, now);
        let expect = [
            "2026-11-24T13:00:00Z",
            "2026-11-24T19:00:00Z",
            "2026-11-25T01:00:00Z",
            "2026-11-25T07:00:00Z",
        ];
        assert_eq!(times, expect.map(utc).to_vec());
    }

    #[test]
    fn schedules_that_cannot_end_are_refused() {
        let now = utc("2026-11-25T10:00:00Z");
        assert!(schedule("-1", "00:00", "1y", None)
            .times(Tz::UTC, now)
            .is_err());
        assert!(schedule("0d", "00:00", "1y", None)
            .times(Tz::UTC, now)
            .is_err());
        assert!(schedule("1d", "00:00", "-1", None)
            .times(Tz::UTC, now)
            .is_err());
        assert!(
            schedule("1h", "00:00", "30y", None)
                .times(Tz::UTC, now)
                .is_err(),
            "262,800 backups"
        );
    }

    #[test]
    fn times_files_skip_comments_and_name_a_bad_line() {
        let t = parse_times(
            "# header\n2026-01-01T00:00:00Z\n\n  2026-01-02T01:00:00+01:00  \n",
            "f",
        )
        .unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(
            t[1],
            (
                "2026-01-02T01:00:00+01:00".to_string(),
                utc("2026-01-02T00:00:00Z")
            )
        );
        let e = parse_times("2026-01-01T00:00:00Z\n2026-13-01T00:00:00Z\n", "f")
            .unwrap_err()
            .to_string();
        assert!(e.contains("f line 2"), "{e}");
    }

    #[test]
    fn equal_times_keep_their_input_order_and_labels() {
        let p = Policy::parse("keep_daily = 5", "t").unwrap();
        let times = vec![
            (
                "2026-01-01T00:00:00Z".to_string(),
                utc("2026-01-01T00:00:00Z"),
            ),
            (
                "2026-01-01T00:00:00+00:00".to_string(),
                utc("2026-01-01T00:00:00Z"),
            ),
            (
                "2025-12-31T00:00:00Z".to_string(),
                utc("2025-12-31T00:00:00Z"),
            ),
        ];
        let j = simulate(&times, &p, utc("2026-02-01T00:00:00Z")).to_json();
        assert_eq!(j.kept.len(), 2);
        assert_eq!(
            j.kept[0].time, "2026-01-01T00:00:00Z",
            "the first of equal times represents the day"
        );
        assert_eq!(j.removed[0].time, "2026-01-01T00:00:00+00:00");
    }
}

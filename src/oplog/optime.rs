//! Oplog positions and the times people give: BSON timestamps (`t:i`), wall-clock instants
//! (RFC 3339), how they compare with an oplog entry, and how they are written in keys and
//! messages.
//!
//! An oplog timestamp has whole seconds (`t`) and an increment (`i`) ordering the entries of
//! one second. Every entry also carries `wall`, the primary's clock in milliseconds, which
//! places it within its second. A target time is either:
//!
//! - [`ToTime::Op`] `t:i`: every entry up to and including that timestamp, exactly;
//! - [`ToTime::Wall`] an RFC 3339 instant: every entry written at or before it, judged by
//!   the timestamp's second and, within the second of the instant, by `wall`.

use chrono::{DateTime, TimeZone, Utc};
use mongodb::bson::Timestamp;

use crate::manifest::OpTime;
use crate::{Error, Result};

/// A BSON timestamp as an [`OpTime`].
pub fn from_ts(ts: Timestamp) -> OpTime {
    OpTime {
        t: ts.time,
        i: ts.increment,
    }
}

/// An [`OpTime`] as a BSON timestamp.
pub fn to_ts(op: OpTime) -> Timestamp {
    Timestamp {
        time: op.t,
        increment: op.i,
    }
}

/// The UTC second of an oplog timestamp.
pub fn seconds(op: OpTime) -> DateTime<Utc> {
    Utc.timestamp_opt(op.t as i64, 0)
        .single()
        .unwrap_or_default()
}

/// `1795589003:3 (2026-11-25T06:43:23Z)`, for messages.
pub fn describe(op: OpTime) -> String {
    format!(
        "{}:{} ({})",
        op.t,
        op.i,
        seconds(op).format("%Y-%m-%dT%H:%M:%SZ")
    )
}

/// The best wall-clock time of a position: its `wall` when known, else its second.
pub fn wall_or_seconds(op: OpTime, wall: Option<DateTime<Utc>>) -> DateTime<Utc> {
    wall.unwrap_or_else(|| seconds(op))
}

/// A sortable, readable key segment: `20261125T064323Z.0000000003`.
pub fn key_segment(op: OpTime) -> String {
    format!("{}.{:010}", seconds(op).format("%Y%m%dT%H%M%SZ"), op.i)
}

/// Reverse [`key_segment`].
pub fn parse_key_segment(s: &str) -> Option<OpTime> {
    let (time, inc) = s.split_once('.')?;
    let t = chrono::NaiveDateTime::parse_from_str(time, "%Y%m%dT%H%M%SZ")
        .ok()?
        .and_utc()
        .timestamp();
    Some(OpTime {
        t: u32::try_from(t).ok()?,
        i: inc.parse().ok()?,
    })
}

/// The time a restore reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToTime {
    /// Every entry whose timestamp is at most this one.
    Op(OpTime),
    /// Every entry written at or before this instant.
    Wall(DateTime<Utc>),
}

impl std::fmt::Display for ToTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ToTime::Op(op) => write!(f, "{}", describe(*op)),
            ToTime::Wall(t) => write!(
                f,
                "{}",
                t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
            ),
        }
    }
}

impl ToTime {
    /// Parse `--to-time`: `T:I` (an oplog timestamp, seconds and increment) or an RFC 3339
    /// time such as `2026-11-25T06:43:23Z` or `2026-11-25T08:43:23.250+02:00`.
    ///
    /// # Errors
    /// Neither form, as a configuration error that shows both.
    pub fn parse(s: &str, flag: &str) -> Result<Self> {
        let s = s.trim();
        if let Some((t, i)) = s
            .split_once(':')
            .filter(|(t, _)| t.chars().all(|c| c.is_ascii_digit()))
        {
            if let (Ok(t), Ok(i)) = (t.parse(), i.parse()) {
                return Ok(ToTime::Op(OpTime { t, i }));
            }
        }
        DateTime::parse_from_rfc3339(s)
            .map(|d| ToTime::Wall(d.with_timezone(&Utc)))
            .map_err(|_| {
                Error::Config(format!(
                    "{flag} {s:?}: expected an RFC 3339 time such as 2026-11-25T14:30:00Z, or an oplog timestamp SECONDS:INCREMENT such as 1795589003:3"
                ))
            })
    }

    /// Whether the entry at `ts` (written at `wall`) happened at or before this time.
    pub fn includes(&self, ts: OpTime, wall: Option<DateTime<Utc>>) -> bool {
        match *self {
            ToTime::Op(op) => ts <= op,
            ToTime::Wall(t) => {
                let sec = t.timestamp();
                match (ts.t as i64).cmp(&sec) {
                    std::cmp::Ordering::Less => true,
                    std::cmp::Ordering::Greater => false,
                    std::cmp::Ordering::Equal => wall.is_some_and(|w| w <= t),
                }
            }
        }
    }

    /// Whether a capture that ended at `to` (written at `to_wall`) holds every entry up to
    /// this time: nothing after `to` can still be included.
    pub fn reached_by(&self, to: OpTime, to_wall: Option<DateTime<Utc>>) -> bool {
        match *self {
            ToTime::Op(op) => op <= to,
            ToTime::Wall(t) => (to.t as i64) > t.timestamp() || to_wall.is_some_and(|w| w >= t),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(t: u32, i: u32) -> OpTime {
        OpTime { t, i }
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn parses_both_forms_and_explains_a_bad_one() {
        assert_eq!(
            ToTime::parse("1795589003:3", "--to-time").unwrap(),
            ToTime::Op(op(1795589003, 3))
        );
        assert_eq!(
            ToTime::parse("2026-11-25T08:43:23.250+02:00", "--to-time").unwrap(),
            ToTime::Wall(at("2026-11-25T06:43:23.250Z"))
        );
        let e = ToTime::parse("yesterday", "--to-time")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("RFC 3339") && e.contains("SECONDS:INCREMENT"),
            "{e}"
        );
        assert!(
            ToTime::parse("12:30", "--to-time").is_ok(),
            "12:30 is a timestamp t=12, i=30"
        );
        assert!(ToTime::parse("1:2:3", "--to-time").is_err());
    }

    #[test]
    fn op_target_is_inclusive() {
        let t = ToTime::Op(op(100, 5));
        assert!(t.includes(op(100, 5), None));
        assert!(t.includes(op(99, 900), None));
        assert!(!t.includes(op(100, 6), None));
        assert!(t.reached_by(op(100, 5), None));
        assert!(!t.reached_by(op(100, 4), None));
    }

    #[test]
    fn wall_target_uses_the_second_then_wall_within_it() {
        let t = ToTime::Wall(at("2026-11-25T06:43:23.500Z"));
        let sec = at("2026-11-25T06:43:23Z").timestamp() as u32;
        assert!(t.includes(op(sec - 1, 7), None));
        assert!(!t.includes(op(sec + 1, 1), Some(at("2026-11-25T06:43:24.000Z"))));
        assert!(t.includes(op(sec, 1), Some(at("2026-11-25T06:43:23.499Z"))));
        assert!(t.includes(op(sec, 2), Some(at("2026-11-25T06:43:23.500Z"))));
        assert!(!t.includes(op(sec, 3), Some(at("2026-11-25T06:43:23.501Z"))));
        assert!(
            !t.includes(op(sec, 3), None),
            "without wall, the boundary second is left out"
        );
        assert!(t.reached_by(op(sec + 1, 0), None));
        assert!(t.reached_by(op(sec, 9), Some(at("2026-11-25T06:43:23.600Z"))));
        assert!(!t.reached_by(op(sec, 9), Some(at("2026-11-25T06:43:23.400Z"))));
        assert!(!t.reached_by(op(sec, 9), None));
    }

    #[test]
    fn key_segments_sort_and_round_trip() {
        let a = op(1795589003, 3);
        let b = op(1795589003, 20);
        let c = op(1795589004, 1);
        assert_eq!(key_segment(a), "20261125T064323Z.0000000003");
        assert!(key_segment(a) < key_segment(b) && key_segment(b) < key_segment(c));
        assert_eq!(parse_key_segment(&key_segment(b)), Some(b));
        assert_eq!(parse_key_segment("nonsense"), None);
    }
}

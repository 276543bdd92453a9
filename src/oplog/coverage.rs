//! Which times can be restored: a pure function of the point-in-time snapshots and the
//! stored slices.
//!
//! A snapshot restores to its consistency point; its slices carry it further. A slice
//! covers the positions from its start to its `to`; slices chain when the next one starts
//! at or before where the chain has reached. A snapshot's recoverable range is from its
//! consistency point to the end of that chain; the first slice starting later marks a gap.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::optime::{describe, wall_or_seconds, ToTime};
use crate::manifest::OpTime;

/// A point-in-time snapshot, as coverage sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anchor {
    /// Snapshot id.
    pub id: String,
    /// Its consistency point.
    pub point: OpTime,
    /// The wall-clock time of that point.
    pub point_wall: Option<DateTime<Utc>>,
}

/// A slice, as coverage sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    /// Slice name.
    pub name: String,
    /// First position covered.
    pub start: OpTime,
    /// Last position covered.
    pub to: OpTime,
    /// Wall-clock time of `to`.
    pub to_wall: Option<DateTime<Utc>>,
}

/// How far a snapshot reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reach {
    /// Indexes into the spans, in replay order.
    pub chain: Vec<usize>,
    /// The last position reachable.
    pub to: OpTime,
    /// Its wall-clock time.
    pub to_wall: Option<DateTime<Utc>>,
    /// The first gap after the chain: the last position reached and where later slices
    /// resume.
    pub gap: Option<(OpTime, OpTime)>,
}

/// A recoverable range, for `mongokeep snapshots`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Range {
    /// Snapshot id.
    pub snapshot: String,
    /// From (the consistency point).
    pub from: DateTime<Utc>,
    /// To (the end of the chain of slices).
    pub to: DateTime<Utc>,
    /// The same as oplog timestamps `t:i`.
    pub from_ts: String,
    /// End as `t:i`.
    pub to_ts: String,
    /// Slices the range uses.
    pub slices: usize,
}

/// How far `anchor` reaches through `spans`.
pub fn reach(anchor: &Anchor, spans: &[Span]) -> Reach {
    let mut pos = anchor.point;
    let mut wall = anchor.point_wall;
    let mut chain = Vec::new();
    loop {
        let next = spans
            .iter()
            .enumerate()
            .filter(|(_, s)| s.start <= pos && s.to > pos)
            .max_by_key(|(_, s)| s.to);
        let Some((i, s)) = next else { break };
        chain.push(i);
        pos = s.to;
        wall = s.to_wall;
    }
    let gap = spans
        .iter()
        .filter(|s| s.start > pos)
        .map(|s| s.start)
        .min()
        .map(|resume| (pos, resume));
    Reach {
        chain,
        to: pos,
        to_wall: wall,
        gap,
    }
}

/// The range a snapshot can be restored to.
pub fn range(anchor: &Anchor, spans: &[Span]) -> Range {
    let r = reach(anchor, spans);
    Range {
        snapshot: anchor.id.clone(),
        from: wall_or_seconds(anchor.point, anchor.point_wall),
        to: wall_or_seconds(r.to, r.to_wall),
        from_ts: format!("{}:{}", anchor.point.t, anchor.point.i),
        to_ts: format!("{}:{}", r.to.t, r.to.i),
        slices: r.chain.len(),
    }
}

fn when(op: OpTime, wall: Option<DateTime<Utc>>) -> String {
    match wall {
        Some(w) => format!(
            "{} (oplog {}:{})",
            w.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            op.t,
            op.i
        ),
        // Without a wall time only the second is known: a wall-clock time within it cannot
        // be placed, an oplog position can.
        None => format!(
            "{} (oplog {}:{}; within that second give an oplog position)",
            wall_or_seconds(op, None).to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            op.t,
            op.i
        ),
    }
}

/// The slices (indexes into `spans`, in replay order) that bring `anchor` to `to`.
///
/// # Errors
/// A message saying why `to` is not covered (before the snapshot, in a gap, after the last
/// slice) and what range is; `others` are the other snapshots, named when one covers `to`.
pub fn slices_for(
    anchor: &Anchor,
    spans: &[Span],
    to: ToTime,
    others: &[Anchor],
) -> Result<Vec<usize>, String> {
    let r = reach(anchor, spans);
    let covered = format!(
        "snapshot {} restores to any time from {} to {}",
        anchor.id,
        when(anchor.point, anchor.point_wall),
        when(r.to, r.to_wall)
    );
    let elsewhere = || {
        others
            .iter()
            .filter(|o| o.id != anchor.id)
            .filter(|o| slices_for(o, spans, to, &[]).is_ok())
            .map(|o| o.id.clone())
            .max()
            .map(|id| format!("; snapshot {id} covers {to}: restore --snapshot {id} --to-time ..."))
            .unwrap_or_default()
    };
    if !to.includes(anchor.point, anchor.point_wall) {
        return Err(format!(
            "{to} is before the consistency point of snapshot {}; {covered}{}",
            anchor.id,
            elsewhere()
        ));
    }
    if to.reached_by(anchor.point, anchor.point_wall) {
        return Ok(vec![]);
    }
    for (k, &i) in r.chain.iter().enumerate() {
        if to.reached_by(spans[i].to, spans[i].to_wall) {
            return Ok(r.chain[..=k].to_vec());
        }
    }
    let why = match r.gap {
        Some((after, resume)) => format!(
            "{to} is not covered: the stored oplog has a gap after {} (it resumes at {}: the oplog rolled over before `oplog push` stored it)",
            when(after, r.to_wall),
            describe(resume)
        ),
        None => format!(
            "{to} is after the last stored oplog position, {}; run `mongokeep oplog push` and try again",
            when(r.to, r.to_wall)
        ),
    };
    Err(format!("{why}; {covered}{}", elsewhere()))
}

/// Spans and anchors at whole seconds, for unit tests of coverage and of what uses it.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;

    pub fn op(t: u32) -> OpTime {
        OpTime { t, i: 1 }
    }

    pub fn span(name: &str, start: u32, to: u32) -> Span {
        Span {
            name: name.into(),
            start: op(start),
            to: op(to),
            to_wall: None,
        }
    }

    pub fn anchor(id: &str, point: u32) -> Anchor {
        Anchor {
            id: id.into(),
            point: op(point),
            point_wall: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{anchor, op, span};
    use super::*;

    fn at(t: u32, i: u32) -> ToTime {
        ToTime::Op(OpTime { t, i })
    }

    #[test]
    fn a_chain_reaches_to_the_last_contiguous_slice() {
        let spans = vec![
            span("a", 100, 200),
            span("b", 200, 300),
            span("c", 300, 400),
            span("e", 500, 600),
        ];
        let r = reach(&anchor("s", 150), &spans);
        assert_eq!(r.chain, vec![0, 1, 2]);
        assert_eq!(r.to, op(400));
        assert_eq!(r.gap, Some((op(400), op(500))));
        // A snapshot taken after the gap reaches on from there.
        let r = reach(&anchor("s2", 550), &spans);
        assert_eq!((r.chain, r.to, r.gap), (vec![3], op(600), None));
        // Slices before the snapshot are not used; one straddling its point is.
        assert_eq!(reach(&anchor("s3", 250), &spans).chain, vec![1, 2]);
    }

    #[test]
    fn overlapping_slices_take_the_one_reaching_furthest() {
        let spans = vec![
            span("a", 100, 200),
            span("dup", 100, 250),
            span("b", 200, 300),
        ];
        let r = reach(&anchor("s", 100), &spans);
        assert_eq!(r.chain, vec![1, 2]);
        assert_eq!(r.to, op(300));
    }

    #[test]
    fn slices_for_a_time_stop_at_the_first_that_reaches_it() {
        let spans = vec![
            span("a", 100, 200),
            span("b", 200, 300),
            span("c", 300, 400),
        ];
        let s = anchor("s", 150);
        assert_eq!(
            slices_for(&s, &spans, at(150, 1), &[]),
            Ok(vec![]),
            "the point itself needs no slice"
        );
        assert_eq!(slices_for(&s, &spans, at(180, 0), &[]), Ok(vec![0]));
        assert_eq!(slices_for(&s, &spans, at(200, 1), &[]), Ok(vec![0]));
        assert_eq!(slices_for(&s, &spans, at(200, 2), &[]), Ok(vec![0, 1]));
        assert_eq!(slices_for(&s, &spans, at(400, 1), &[]), Ok(vec![0, 1, 2]));
    }

    #[test]
    fn uncovered_times_are_refused_with_the_covered_range() {
        let spans = vec![span("a", 100, 200), span("late", 300, 400)];
        let s = anchor("s1", 150);
        let before = slices_for(&s, &spans, at(120, 0), &[]).unwrap_err();
        assert!(
            before.contains("before the consistency point of snapshot s1"),
            "{before}"
        );
        assert!(
            before.contains("restores to any time from")
                && before.contains("oplog 150:1")
                && before.contains("oplog 200:1"),
            "{before}"
        );
        let gap = slices_for(&s, &spans, at(250, 0), &[]).unwrap_err();
        assert!(gap.contains("gap after") && gap.contains("300:1"), "{gap}");
        let after = slices_for(&anchor("s2", 310), &spans, at(450, 0), &[]).unwrap_err();
        assert!(
            after.contains("after the last stored oplog position") && after.contains("oplog push"),
            "{after}"
        );
        // Another snapshot that covers the time is named.
        let others = [anchor("s1", 150), anchor("s2", 310)];
        let hint = slices_for(&s, &spans, at(350, 0), &others).unwrap_err();
        assert!(hint.contains("snapshot s2 covers"), "{hint}");
    }

    #[test]
    fn ranges_report_both_ends() {
        let spans = vec![span("a", 100, 200)];
        let r = range(&anchor("s", 150), &spans);
        assert_eq!(
            (r.from_ts.as_str(), r.to_ts.as_str(), r.slices),
            ("150:1", "200:1", 1)
        );
        let alone = range(&anchor("s", 50), &spans);
        assert_eq!((alone.to_ts.as_str(), alone.slices), ("50:1", 0));
    }
}

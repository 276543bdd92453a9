//! restic's `forget` keep-policy, exactly: which snapshots a [`Rules`] set keeps and why.
//!
//! The definition (restic's `ApplyPolicy`, checked against its own test vectors in
//! `tests/conformance/restic-forget/`): sort newest first, stably; take as anchor the newest
//! snapshot strictly before now; then walk the list once. Tag lists and `within` keep what
//! they match; each count rule keeps a snapshot whose period differs from that of the
//! previous snapshot it kept, while its budget lasts; each `within_<period>` rule does the
//! same inside its window, without a budget. A rule that is still live when the walk
//! reaches the oldest snapshot keeps it even if its period is already represented
//! ("oldest daily snapshot"), which stretches the history kept as far as possible.
//!
//! The one deliberate difference: periods are keyed on the wall clock of the policy's time
//! zone, where restic uses each snapshot's own offset. With UTC both agree.

use std::fmt;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::{Serialize, Serializer};

use super::duration::Span;
use super::period::{PeriodKey, PeriodKind};
use super::policy::{CountRule, Rules};

/// What the rules see of a snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// When it was taken.
    pub time: DateTime<Utc>,
    /// Its tags.
    pub tags: Vec<String>,
}

/// Why a snapshot is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// It has every tag of this list.
    Tags(Vec<String>),
    /// It is within this duration of the anchor.
    Within(Span),
    /// A count rule took it; `oldest` when only the oldest-snapshot rule did.
    Count {
        /// The rule.
        rule: CountRule,
        /// Kept as the oldest snapshot although its period was already represented.
        oldest: bool,
    },
    /// A `within_<period>` rule took it.
    Window {
        /// The period.
        kind: PeriodKind,
        /// The window.
        span: Span,
        /// As for [`Reason::Count`].
        oldest: bool,
    },
    /// The newest complete snapshot: never removed.
    Newest,
    /// The newest verified snapshot: never removed.
    NewestVerified,
    /// The newest snapshot a full verification restored and passed: never removed (a
    /// newer one checked only by `verify --quick` does not stand in for it).
    NewestRestoreTested,
}

impl Reason {
    /// restic's wording (`daily snapshot`, `oldest yearly snapshot`, `has tags [a, b]`), as
    /// in its golden files.
    pub fn restic(&self) -> String {
        match self {
            Reason::Count { rule, oldest } => {
                format!(
                    "{}{} snapshot",
                    if *oldest { "oldest " } else { "" },
                    rule.name()
                )
            }
            other => other.to_string(),
        }
    }
}

/// The short wording mongokeep prints: `daily`, `oldest monthly`, `within 2d`,
/// `daily within 7d`, `has tags [a, b]`, `newest`, `newest verified`, `newest restore-tested`.
impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let oldest = |o: bool| if o { "oldest " } else { "" };
        match self {
            Reason::Tags(t) => write!(f, "has tags [{}]", t.join(", ")),
            Reason::Within(s) => write!(f, "within {s}"),
            Reason::Count { rule, oldest: o } => write!(f, "{}{}", oldest(*o), rule.name()),
            Reason::Window {
                kind,
                span,
                oldest: o,
            } => write!(f, "{}{kind} within {span}", oldest(*o)),
            Reason::Newest => f.write_str("newest"),
            Reason::NewestVerified => f.write_str("newest verified"),
            Reason::NewestRestoreTested => f.write_str("newest restore-tested"),
        }
    }
}

impl Serialize for Reason {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The verdict on one snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// Index into the input.
    pub index: usize,
    /// Kept when at least one rule matched.
    pub keep: bool,
    /// Every rule that matched, in restic's order.
    pub reasons: Vec<Reason>,
    /// Remaining budget of each count rule set in the policy, after this snapshot.
    pub counters: Vec<(CountRule, i64)>,
}

/// restic's anchor: the newest snapshot strictly before `now` (snapshots from the future
/// never anchor), else 0001-01-01T00:00:00Z. Every window is measured back from it.
pub fn anchor(candidates: &[Candidate], now: DateTime<Utc>) -> DateTime<Utc> {
    let zero = year_one();
    candidates
        .iter()
        .map(|c| c.time)
        .filter(|t| *t < now && *t > zero)
        .max()
        .unwrap_or(zero)
}

fn year_one() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("0001-01-01T00:00:00Z")
        .expect("valid")
        .with_timezone(&Utc)
}

#[derive(PartialEq, Clone, Copy)]
enum Key {
    Position(usize),
    Period(PeriodKey),
}

/// One "keep one per period" rule while the walk runs.
struct Selector {
    kind: Option<PeriodKind>,
    budget: Option<i64>,
    window_start: Option<Option<DateTime<Utc>>>,
    previous: Option<Key>,
}

impl Selector {
    fn live(&self, t: DateTime<Utc>) -> bool {
        match (self.budget, self.window_start) {
            (Some(b), _) => b > 0 || b == -1,
            (None, Some(start)) => start.is_none_or(|s| t > s),
            (None, None) => false,
        }
    }

    /// `Some(oldest)` when the rule keeps the snapshot at `position`.
    fn consider(
        &mut self,
        t: DateTime<Utc>,
        position: usize,
        is_oldest: bool,
        tz: Tz,
    ) -> Option<bool> {
        if !self.live(t) {
            return None;
        }
        let key = match self.kind {
            None => Key::Position(position),
            Some(k) => Key::Period(k.key(t, tz)),
        };
        let new_period = self.previous != Some(key);
        if !new_period && !is_oldest {
            return None;
        }
        self.previous = Some(key);
        if let Some(b) = self.budget.as_mut() {
            if *b > 0 {
                *b -= 1;
            }
        }
        Some(!new_period)
    }
}

fn has_tags(tags: &[String], wanted: &[String]) -> bool {
    for w in wanted {
        // An empty string stands for "no tags at all" (restic's `--keep-tag ''`).
        if w.is_empty() && tags.is_empty() {
            return true;
        }
        if !tags.contains(w) {
            return false;
        }
    }
    true
}

/// Apply `rules` to `candidates` with periods keyed in `tz`. Returns one verdict per
/// candidate, newest first; equal times keep their input order.
pub fn evaluate(
    candidates: &[Candidate],
    rules: &Rules,
    tz: Tz,
    now: DateTime<Utc>,
) -> Vec<Verdict> {
    let mut order: Vec<usize> = (0..candidates.len()).collect();
    order.sort_by(|a, b| candidates[*b].time.cmp(&candidates[*a].time));
    let anchor = anchor(candidates, now);
    let within_start = rules.within.map(|s| s.start_before(anchor, tz));
    let mut counts: Vec<(CountRule, Selector)> = rules
        .counts
        .iter()
        .map(|(rule, budget)| {
            let kind = match rule {
                CountRule::Last => None,
                CountRule::Period(k) => Some(*k),
            };
            (
                *rule,
                Selector {
                    kind,
                    budget: Some(*budget),
                    window_start: None,
                    previous: None,
                },
            )
        })
        .collect();
    let mut windows: Vec<(PeriodKind, Span, Selector)> = rules
        .windows
        .iter()
        .map(|(kind, span)| {
            let start = Some(span.start_before(anchor, tz));
            (
                *kind,
                *span,
                Selector {
                    kind: Some(*kind),
                    budget: None,
                    window_start: start,
                    previous: None,
                },
            )
        })
        .collect();

    let last = order.len().saturating_sub(1);
    let mut out = Vec::with_capacity(order.len());
    for (position, &index) in order.iter().enumerate() {
        let c = &candidates[index];
        let is_oldest = position == last;
        let mut reasons = Vec::new();
        for wanted in &rules.tags {
            if has_tags(&c.tags, wanted) {
                reasons.push(Reason::Tags(wanted.clone()));
            }
        }
        if let (Some(span), Some(start)) = (rules.within, within_start) {
            if start.is_none_or(|s| c.time > s) {
                reasons.push(Reason::Within(span));
            }
        }
        for (rule, sel) in counts.iter_mut() {
            if let Some(oldest) = sel.consider(c.time, position, is_oldest, tz) {
                reasons.push(Reason::Count {
                    rule: *rule,
                    oldest,
                });
            }
        }
        for (kind, span, sel) in windows.iter_mut() {
            if let Some(oldest) = sel.consider(c.time, position, is_oldest, tz) {
                reasons.push(Reason::Window {
                    kind: *kind,
                    span: *span,
                    oldest,
                });
            }
        }
        out.push(Verdict {
            index,
            keep: !reasons.is_empty(),
            reasons,
            counters: counts
                .iter()
                .map(|(r, s)| (*r, s.budget.unwrap_or(0)))
                .collect(),
        });
    }
    out
}

#[cfg(test)]
mod tests;

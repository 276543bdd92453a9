//! Retention policy files (`retention-policies/*.toml`): parsing, validation, and the rule
//! set the planner applies.
//!
//! Unknown keys are errors that name the key, so `keep_dayly = 7` never silently keeps
//! nothing daily. Counts take `-1` (or `"unlimited"`); durations take restic's syntax.

use std::fmt::Write as _;
use std::path::Path;

use chrono_tz::Tz;
use serde::Deserialize;

use super::duration::Span;
use super::period::PeriodKind;
use crate::{Error, Result};

/// The file as written. Every field is optional; [`Policy::from_file`] validates.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    /// Keep the N newest snapshots.
    pub keep_last: Option<CountValue>,
    /// Keep the newest snapshot of each of the N most recent hours that hold one.
    pub keep_hourly: Option<CountValue>,
    /// ... days.
    pub keep_daily: Option<CountValue>,
    /// ... ISO weeks.
    pub keep_weekly: Option<CountValue>,
    /// ... months.
    pub keep_monthly: Option<CountValue>,
    /// ... years.
    pub keep_yearly: Option<CountValue>,
    /// Keep every snapshot within this duration of the newest one.
    pub keep_within: Option<SpanValue>,
    /// Keep the newest snapshot of each hour within this duration of the newest snapshot.
    pub keep_within_hourly: Option<SpanValue>,
    /// ... each day.
    pub keep_within_daily: Option<SpanValue>,
    /// ... each ISO week.
    pub keep_within_weekly: Option<SpanValue>,
    /// ... each month.
    pub keep_within_monthly: Option<SpanValue>,
    /// ... each year.
    pub keep_within_yearly: Option<SpanValue>,
    /// Keep every snapshot that has all tags of one of these lists (`"a,b"` or `["a", "b"]`).
    #[serde(default)]
    pub keep_tags: Vec<TagsValue>,
    /// IANA time zone in which days, weeks, months and years are counted.
    pub timezone: Option<String>,
    /// Abort rather than leave fewer complete snapshots than this.
    pub min_keep: Option<i64>,
    /// Remove snapshots without a manifest and stale multipart uploads once older than this.
    pub incomplete_grace: Option<SpanValue>,
}

/// A count as written: a number or `"unlimited"`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum CountValue {
    /// A number; `-1` is unlimited.
    Number(i64),
    /// `"unlimited"`.
    Text(String),
}

/// A duration as written: restic's syntax, or `-1`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum SpanValue {
    /// `-1` only.
    Number(i64),
    /// `"7d"`, `"1y2m"`, `"unlimited"`.
    Text(String),
}

/// A tag list as written.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum TagsValue {
    /// `"a,b"`.
    Joined(String),
    /// `["a", "b"]`.
    List(Vec<String>),
}

/// Count rules: restic's `--keep-last` and the five periods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CountRule {
    /// Every snapshot is its own period.
    Last,
    /// One per period of this kind.
    Period(PeriodKind),
}

impl CountRule {
    /// In restic's order of evaluation.
    pub const ALL: [CountRule; 6] = [
        CountRule::Last,
        CountRule::Period(PeriodKind::Hourly),
        CountRule::Period(PeriodKind::Daily),
        CountRule::Period(PeriodKind::Weekly),
        CountRule::Period(PeriodKind::Monthly),
        CountRule::Period(PeriodKind::Yearly),
    ];

    /// `last`, `hourly`...
    pub fn name(self) -> &'static str {
        match self {
            CountRule::Last => "last",
            CountRule::Period(k) => k.name(),
        }
    }
}

/// The keep rules, restic's `ExpirePolicy`: what the conformance data is written against.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rules {
    /// Count rules with their budgets; `-1` is unlimited, `0` (or any other negative) is off.
    pub counts: Vec<(CountRule, i64)>,
    /// `keep_within`.
    pub within: Option<Span>,
    /// `keep_within_<period>`, in [`PeriodKind::ALL`] order.
    pub windows: Vec<(PeriodKind, Span)>,
    /// `keep_tags`: each list is ANDed, the lists are ORed.
    pub tags: Vec<Vec<String>>,
}

impl Rules {
    /// True when no rule is set: such a policy keeps nothing.
    pub fn is_empty(&self) -> bool {
        self.counts.iter().all(|(_, n)| *n == 0)
            && self.within.is_none()
            && self.windows.is_empty()
            && self.tags.is_empty()
    }
}

/// A validated policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// The keep rules.
    pub rules: Rules,
    /// Periods are keyed in this zone.
    pub timezone: Tz,
    /// The fewest complete snapshots a prune may leave.
    pub min_keep: usize,
    /// Age after which incomplete snapshots and pending uploads are garbage.
    pub incomplete_grace: Span,
}

/// Default `incomplete_grace`: a day, far longer than any backup run and its lock.
pub const DEFAULT_INCOMPLETE_GRACE: Span = Span::Calendar {
    years: 0,
    months: 0,
    days: 1,
    hours: 0,
};

impl Policy {
    /// Parse and validate a policy text; `origin` names it in errors.
    ///
    /// # Errors
    /// [`Error::Config`] naming the key: syntax, unknown key, wrong type, bad value.
    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        let file: PolicyFile = toml::from_str(text)
            .map_err(|e| Error::Config(format!("{origin}: {}", e.to_string().trim_end())))?;
        Self::from_file(file).map_err(|e| Error::Config(format!("{origin}: {e}")))
    }

    /// Read and validate a policy file.
    ///
    /// # Errors
    /// The file cannot be read, or as [`Policy::parse`].
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::Config(format!("cannot read policy file {}: {e}", path.display()))
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Validate the parsed file.
    ///
    /// # Errors
    /// A message naming the key and what it accepts.
    pub fn from_file(f: PolicyFile) -> std::result::Result<Self, String> {
        let mut rules = Rules::default();
        let counts = [
            (CountRule::Last, &f.keep_last),
            (CountRule::Period(PeriodKind::Hourly), &f.keep_hourly),
            (CountRule::Period(PeriodKind::Daily), &f.keep_daily),
            (CountRule::Period(PeriodKind::Weekly), &f.keep_weekly),
            (CountRule::Period(PeriodKind::Monthly), &f.keep_monthly),
            (CountRule::Period(PeriodKind::Yearly), &f.keep_yearly),
        ];
        for (rule, value) in counts {
            if let Some(v) = value {
                rules
                    .counts
                    .push((rule, count(&format!("keep_{}", rule.name()), v)?));
            }
        }
        if let Some(v) = &f.keep_within {
            rules.within = Some(window("keep_within", v)?);
        }
        let windows = [
            (PeriodKind::Hourly, &f.keep_within_hourly),
            (PeriodKind::Daily, &f.keep_within_daily),
            (PeriodKind::Weekly, &f.keep_within_weekly),
            (PeriodKind::Monthly, &f.keep_within_monthly),
            (PeriodKind::Yearly, &f.keep_within_yearly),
        ];
        for (kind, value) in windows {
            if let Some(v) = value {
                rules
                    .windows
                    .push((kind, window(&format!("keep_within_{}", kind.name()), v)?));
            }
        }
        for t in &f.keep_tags {
            let list: Vec<String> = match t {
                TagsValue::Joined(s) => s.split(',').map(|x| x.trim().to_string()).collect(),
                TagsValue::List(l) => l.clone(),
            };
            if list.is_empty() {
                return Err("keep_tags: an empty tag list; write [\"tag\"], or [\"\"] for untagged snapshots".into());
            }
            rules.tags.push(list);
        }
        if rules.is_empty() {
            return Err("the policy keeps nothing: set at least one keep_* rule (for example keep_daily = 7)".into());
        }
        let timezone = match &f.timezone {
            None => Tz::UTC,
            Some(name) => name.parse::<Tz>().map_err(|_| {
                format!("timezone = {name:?}: not an IANA time zone name (for example \"UTC\", \"Europe/Berlin\", \"America/New_York\")")
            })?,
        };
        let min_keep = match f.min_keep {
            None => 1,
            Some(n) if n >= 1 => n as usize,
            Some(n) => {
                return Err(format!(
                    "min_keep = {n}: must be at least 1 (the newest snapshot is always kept)"
                ))
            }
        };
        let incomplete_grace = match &f.incomplete_grace {
            None => DEFAULT_INCOMPLETE_GRACE,
            Some(v) => span("incomplete_grace", v)?,
        };
        Ok(Policy {
            rules,
            timezone,
            min_keep,
            incomplete_grace,
        })
    }

    /// The policy in words, one rule a line (`mongokeep policy check`).
    pub fn describe(&self) -> String {
        let mut out = String::new();
        let n = |v: i64| {
            if v == -1 {
                "every".to_string()
            } else {
                v.to_string()
            }
        };
        for (rule, v) in &self.rules.counts {
            let _ = match rule {
                CountRule::Last => writeln!(out, "keep the {} newest snapshots", n(*v)),
                CountRule::Period(k) => writeln!(
                    out,
                    "keep the newest snapshot of each of the {} most recent {} that hold one",
                    n(*v),
                    plural(*k)
                ),
            };
        }
        if let Some(s) = &self.rules.within {
            let _ = writeln!(out, "keep every snapshot within {s} of the newest");
        }
        for (k, s) in &self.rules.windows {
            let _ = writeln!(
                out,
                "keep the newest snapshot of each {} within {s} of the newest",
                singular(*k)
            );
        }
        for t in &self.rules.tags {
            let _ = writeln!(out, "keep every snapshot tagged [{}]", t.join(", "));
        }
        let _ = writeln!(out, "periods counted in time zone {}", self.timezone.name());
        let _ = writeln!(
            out,
            "always keep the newest snapshot and the newest verified snapshot"
        );
        let _ = writeln!(
            out,
            "abort a prune that would leave fewer than {} snapshots",
            self.min_keep
        );
        let _ = writeln!(
            out,
            "remove snapshots without a manifest and unfinished uploads older than {}",
            self.incomplete_grace
        );
        out
    }
}

fn plural(k: PeriodKind) -> &'static str {
    match k {
        PeriodKind::Hourly => "hours",
        PeriodKind::Daily => "days",
        PeriodKind::Weekly => "ISO weeks",
        PeriodKind::Monthly => "months",
        PeriodKind::Yearly => "years",
    }
}

fn singular(k: PeriodKind) -> &'static str {
    match k {
        PeriodKind::Hourly => "hour",
        PeriodKind::Daily => "day",
        PeriodKind::Weekly => "ISO week",
        PeriodKind::Monthly => "month",
        PeriodKind::Yearly => "year",
    }
}

fn count(key: &str, v: &CountValue) -> std::result::Result<i64, String> {
    match v {
        CountValue::Number(n) if *n >= -1 => Ok(*n),
        CountValue::Text(t) if t.eq_ignore_ascii_case("unlimited") => Ok(-1),
        CountValue::Number(n) => Err(format!(
            "{key} = {n}: expected a number of snapshots (0 or more), or -1 / \"unlimited\""
        )),
        CountValue::Text(t) => Err(format!(
            "{key} = {t:?}: expected a number of snapshots, or -1 / \"unlimited\""
        )),
    }
}

fn span(key: &str, v: &SpanValue) -> std::result::Result<Span, String> {
    match v {
        SpanValue::Number(-1) => Ok(Span::Unlimited),
        SpanValue::Number(n) => Err(format!("{key} = {n}: write a duration with units, e.g. \"7d\" or \"1y2m\", or -1 for unlimited")),
        SpanValue::Text(t) => Span::parse(t).map_err(|e| format!("{key}: {e}")),
    }
}

fn window(key: &str, v: &SpanValue) -> std::result::Result<Span, String> {
    let s = span(key, v)?;
    if s.is_zero() {
        return Err(format!(
            "{key} = \"{s}\": a zero window keeps nothing; remove the key instead"
        ));
    }
    Ok(s)
}

#[cfg(test)]
mod tests;

//! `mongokeep report --month YYYY-MM`: the monthly verification report an operator files.
//! Every snapshot of the month (time, size, documents, duration, status), every
//! verification (snapshot, result, recovery time, what mismatched), what retention removed,
//! failed operations, and the days without a successful backup. Markdown, JSON, or HTML with
//! an inline SVG chart (no external assets) that prints well.

use std::fmt::Write;

use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use serde::Serialize;

use crate::journal::{self, JournalEntry};
use crate::repository::Repository;
use crate::verify::list_reports;
use crate::{Error, Result};

/// One snapshot of the month.
#[derive(Debug, Clone, Serialize)]
pub struct SnapshotRow {
    /// Id.
    pub id: String,
    /// Start (UTC).
    pub time: DateTime<Utc>,
    /// Stored bytes.
    pub size_bytes: u64,
    /// Documents.
    pub documents: u64,
    /// Seconds from start to end (complete snapshots).
    pub duration_seconds: Option<f64>,
    /// `complete` or `incomplete`.
    pub status: String,
}

/// One verification of the month.
#[derive(Debug, Clone, Serialize)]
pub struct VerificationRow {
    /// When it ran.
    pub time: DateTime<Utc>,
    /// Snapshot verified.
    pub snapshot: String,
    /// `full` or `quick`.
    pub kind: String,
    /// `passed` or `failed`.
    pub result: String,
    /// Measured recovery time.
    pub recovery_seconds: Option<f64>,
    /// What mismatched.
    pub problems: Vec<String>,
}

/// One prune of the month.
#[derive(Debug, Clone, Serialize)]
pub struct PruneRow {
    /// When it ran.
    pub time: DateTime<Utc>,
    /// Snapshots removed.
    pub removed: Vec<String>,
    /// Bytes freed.
    pub bytes_freed: u64,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct MonthReport {
    /// `YYYY-MM`.
    pub month: String,
    /// Repository.
    pub repository: String,
    /// When the report was made.
    pub generated_at: DateTime<Utc>,
    /// Snapshots started in the month, oldest first.
    pub snapshots: Vec<SnapshotRow>,
    /// Verifications run in the month.
    pub verifications: Vec<VerificationRow>,
    /// Prunes run in the month.
    pub prunes: Vec<PruneRow>,
    /// Operations of the month that failed.
    pub failures: Vec<JournalEntry>,
    /// Days of the month (up to today) without a complete snapshot.
    pub gaps: Vec<NaiveDate>,
}

/// The first day of `YYYY-MM` and of the month after.
///
/// # Errors
/// Not a `YYYY-MM` month.
pub fn month_bounds(month: &str) -> Result<(NaiveDate, NaiveDate)> {
    let first = NaiveDate::parse_from_str(&format!("{month}-01"), "%Y-%m-%d")
        .map_err(|_| Error::Config(format!("--month {month:?}: expected YYYY-MM, e.g. 2026-11")))?;
    let next = if first.month() == 12 {
        NaiveDate::from_ymd_opt(first.year() + 1, 1, 1)
    } else {
        NaiveDate::from_ymd_opt(first.year(), first.month() + 1, 1)
    }
    .expect("a valid month");
    Ok((first, next))
}

/// Gather the report of `month` from the repository.
///
/// # Errors
/// A malformed month, or the repository failed.
pub async fn build(repo: &Repository, month: &str, now: DateTime<Utc>) -> Result<MonthReport> {
    let (first, next) = month_bounds(month)?;
    let (start, end) = (
        first.and_hms_opt(0, 0, 0).unwrap().and_utc(),
        next.and_hms_opt(0, 0, 0).unwrap().and_utc(),
    );
    let within = |t: DateTime<Utc>| t >= start && t < end;
    let listed = repo.list_snapshots().await?;
    let first_snapshot = listed.iter().map(|s| s.started_at).min();
    let mut snapshots: Vec<SnapshotRow> = listed
        .into_iter()
        .filter(|s| within(s.started_at))
        .map(|s| SnapshotRow {
            duration_seconds: s
                .finished_at
                .map(|f| (f - s.started_at).num_milliseconds() as f64 / 1000.0),
            status: if s.complete { "complete" } else { "incomplete" }.into(),
            id: s.id,
            time: s.started_at,
            size_bytes: s.size_bytes,
            documents: s.documents,
        })
        .collect();
    let verifications = list_reports(repo)
        .await?
        .into_iter()
        .filter(|r| within(r.started_at))
        .map(|r| VerificationRow {
            problems: r.problems(),
            time: r.started_at,
            snapshot: r.snapshot,
            kind: r.kind,
            result: r.result,
            recovery_seconds: r.recovery_seconds,
        })
        .collect();
    let (entries, first_entry) = journal::list_with_first_day(repo, Some(start)).await?;
    let entries: Vec<JournalEntry> = entries.into_iter().filter(|e| within(e.time)).collect();
    // What was backed up is what the journal says, not what retention has left: a backup
    // pruned since is listed as such, and its day is not a day without a backup.
    for e in entries
        .iter()
        .filter(|e| e.operation == "backup" && e.outcome == "success")
    {
        let Some(id) = &e.snapshot else { continue };
        if snapshots.iter().any(|s| &s.id == id) {
            continue;
        }
        snapshots.push(SnapshotRow {
            id: id.clone(),
            time: e.time,
            duration_seconds: Some(e.seconds),
            status: "removed since".into(),
            size_bytes: e.figures["bytes"].as_u64().unwrap_or(0),
            documents: e.figures["documents"].as_u64().unwrap_or(0),
        });
    }
    snapshots.sort_by_key(|s| s.time);
    let prunes = entries
        .iter()
        .filter(|e| e.operation == "prune" && e.outcome == "success")
        .map(|e| PruneRow {
            time: e.time,
            removed: e.figures["snapshots_removed"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
            bytes_freed: e.figures["bytes_freed"].as_u64().unwrap_or(0),
        })
        .collect();
    let failures = entries
        .into_iter()
        .filter(|e| e.outcome == "failure")
        .collect();
    let last_day = next.min(now.date_naive() + Duration::days(1));
    // Days before the repository's first snapshot or journal entry are not missed backups.
    let began = [first_snapshot.map(|t| t.date_naive()), first_entry]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(last_day);
    let gaps = first
        .iter_days()
        .take_while(|d| *d < last_day)
        .filter(|d| *d >= began)
        .filter(|d| {
            !snapshots.iter().any(|s| {
                (s.status == "complete" || s.status == "removed since") && s.time.date_naive() == *d
            })
        })
        .collect();
    Ok(MonthReport {
        month: month.to_string(),
        repository: repo.describe(),
        generated_at: now,
        snapshots,
        verifications,
        prunes,
        failures,
        gaps,
    })
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / 1048576.0)
}

fn secs(s: Option<f64>) -> String {
    s.map_or("-".into(), |s| format!("{s:.1} s"))
}

impl MonthReport {
    fn headline(&self) -> String {
        let complete = self
            .snapshots
            .iter()
            .filter(|s| s.status == "complete")
            .count();
        let passed = self
            .verifications
            .iter()
            .filter(|v| v.result == "passed")
            .count();
        format!(
            "{complete} complete snapshots, {} verifications ({passed} passed), {} prunes, {} failed operations, {} days without a backup",
            self.verifications.len(),
            self.prunes.len(),
            self.failures.len(),
            self.gaps.len()
        )
    }

    /// Markdown.
    pub fn to_markdown(&self) -> String {
        let mut s = format!(
            "# Backup verification report, {}\n\nRepository: {}  \nGenerated: {}\n\n{}\n",
            self.month,
            self.repository,
            self.generated_at.to_rfc3339(),
            self.headline()
        );
        let _ = writeln!(s, "\n## Snapshots\n\n| time (UTC) | snapshot | size | documents | duration | status |\n| --- | --- | --- | --- | --- | --- |");
        for r in &self.snapshots {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} |",
                r.time.format("%Y-%m-%d %H:%M"),
                r.id,
                mib(r.size_bytes),
                r.documents,
                secs(r.duration_seconds),
                r.status
            );
        }
        let _ = writeln!(s, "\n## Verifications\n\n| time (UTC) | snapshot | kind | result | recovery time | mismatches |\n| --- | --- | --- | --- | --- | --- |");
        for v in &self.verifications {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} |",
                v.time.format("%Y-%m-%d %H:%M"),
                v.snapshot,
                v.kind,
                v.result,
                secs(v.recovery_seconds),
                v.problems.join("; ").replace('|', "\\|")
            );
        }
        let _ = writeln!(s, "\n## Retention\n");
        for p in &self.prunes {
            let _ = writeln!(
                s,
                "- {}: removed {} snapshot(s) ({}), {} freed",
                p.time.format("%Y-%m-%d %H:%M"),
                p.removed.len(),
                p.removed.join(", "),
                mib(p.bytes_freed)
            );
        }
        let _ = writeln!(s, "\n## Failed operations\n");
        for f in &self.failures {
            let _ = writeln!(
                s,
                "- {} {}: {}",
                f.time.format("%Y-%m-%d %H:%M"),
                f.operation,
                f.error.as_deref().unwrap_or("failed")
            );
        }
        let _ = writeln!(s, "\n## Days without a successful backup\n");
        let _ = writeln!(
            s,
            "{}",
            if self.gaps.is_empty() {
                "none".to_string()
            } else {
                self.gaps
                    .iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        );
        s
    }

    /// A self-contained HTML page: the tables and an inline SVG chart of size and duration.
    pub fn to_html(&self) -> String {
        let esc = |t: &str| {
            t.replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
        };
        let mut s = String::new();
        let _ = write!(
            s,
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>mongokeep report {m}</title>\n<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto;color:#222}}table{{border-collapse:collapse;width:100%;margin:1em 0}}th,td{{border:1px solid #bbb;padding:.25em .5em;font-size:.9em;text-align:left}}.failed{{color:#b00;font-weight:bold}}.passed{{color:#070}}@media print{{body{{margin:0;max-width:none}}h2{{page-break-after:avoid}}table{{page-break-inside:auto}}tr{{page-break-inside:avoid}}}}</style></head><body>\n<h1>Backup verification report, {m}</h1>\n<p>Repository: {r}<br>Generated: {g}</p>\n<p><strong>{h}</strong></p>\n",
            m = esc(&self.month),
            r = esc(&self.repository),
            g = self.generated_at.to_rfc3339(),
            h = esc(&self.headline())
        );
        s.push_str("<h2>Size and duration of the snapshots</h2>\n");
        s.push_str(&self.chart());
        s.push_str("<h2>Snapshots</h2>\n<table><tr><th>time (UTC)</th><th>snapshot</th><th>size</th><th>documents</th><th>duration</th><th>status</th></tr>\n");
        for r in &self.snapshots {
            let _ = writeln!(
                s,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                r.time.format("%Y-%m-%d %H:%M"),
                esc(&r.id),
                mib(r.size_bytes),
                r.documents,
                secs(r.duration_seconds),
                r.status
            );
        }
        s.push_str("</table>\n<h2>Verifications</h2>\n<table><tr><th>time (UTC)</th><th>snapshot</th><th>kind</th><th>result</th><th>recovery time</th><th>mismatches</th></tr>\n");
        for v in &self.verifications {
            let _ = writeln!(s, "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td>{}</td><td>{}</td></tr>", v.time.format("%Y-%m-%d %H:%M"), esc(&v.snapshot), v.kind, v.result, v.result, secs(v.recovery_seconds), esc(&v.problems.join("; ")));
        }
        s.push_str("</table>\n<h2>Retention</h2>\n<ul>\n");
        for p in &self.prunes {
            let _ = writeln!(
                s,
                "<li>{}: removed {} snapshot(s), {} freed</li>",
                p.time.format("%Y-%m-%d %H:%M"),
                p.removed.len(),
                mib(p.bytes_freed)
            );
        }
        s.push_str("</ul>\n<h2>Failed operations</h2>\n<ul>\n");
        for f in &self.failures {
            let _ = writeln!(
                s,
                "<li class=\"failed\">{} {}: {}</li>",
                f.time.format("%Y-%m-%d %H:%M"),
                f.operation,
                esc(f.error.as_deref().unwrap_or("failed"))
            );
        }
        let gaps = if self.gaps.is_empty() {
            "none".to_string()
        } else {
            self.gaps
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = write!(
            s,
            "</ul>\n<h2>Days without a successful backup</h2>\n<p>{gaps}</p>\n</body></html>\n"
        );
        s
    }

    /// Bars: stored size per snapshot; dots joined by a line: duration. One day per column.
    fn chart(&self) -> String {
        let (w, h, left, bottom) = (720.0, 240.0, 50.0, 30.0);
        let Ok((first, next)) = month_bounds(&self.month) else {
            return String::new();
        };
        let days = (next - first).num_days() as f64;
        let max_size = self
            .snapshots
            .iter()
            .map(|s| s.size_bytes)
            .max()
            .unwrap_or(0)
            .max(1) as f64;
        let max_dur = self
            .snapshots
            .iter()
            .filter_map(|s| s.duration_seconds)
            .fold(0.0f64, f64::max)
            .max(0.001);
        let x = |t: DateTime<Utc>| {
            left + ((t.date_naive() - first).num_days() as f64 + 0.5) / days * (w - left - 10.0)
        };
        let y = |frac: f64| (h - bottom) - frac * (h - bottom - 10.0);
        let mut s = format!("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"size and duration of the snapshots of {}\">\n", self.month);
        let _ = writeln!(s, "<line x1=\"{left}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\" stroke=\"#444\"/><line x1=\"{left}\" y1=\"10\" x2=\"{left}\" y2=\"{b}\" stroke=\"#444\"/>", b = h - bottom, r = w - 10.0);
        let _ = writeln!(s, "<text x=\"4\" y=\"16\" font-size=\"10\" fill=\"#36c\">{}</text><text x=\"4\" y=\"30\" font-size=\"10\" fill=\"#c60\">{max_dur:.0} s</text>", mib(max_size as u64));
        let bar = ((w - left - 10.0) / days * 0.6).max(2.0);
        for r in &self.snapshots {
            let top = y(r.size_bytes as f64 / max_size);
            let _ = writeln!(s, "<rect x=\"{:.1}\" y=\"{top:.1}\" width=\"{bar:.1}\" height=\"{:.1}\" fill=\"{}\"><title>{} {}</title></rect>", x(r.time) - bar / 2.0, (h - bottom) - top, match r.status.as_str() { "complete" => "#36c", "removed since" => "#999", _ => "#b00" }, r.id, mib(r.size_bytes));
        }
        let points: Vec<String> = self
            .snapshots
            .iter()
            .filter_map(|r| {
                r.duration_seconds
                    .map(|d| format!("{:.1},{:.1}", x(r.time), y(d / max_dur)))
            })
            .collect();
        if !points.is_empty() {
            let _ = writeln!(
                s,
                "<polyline points=\"{}\" fill=\"none\" stroke=\"#c60\" stroke-width=\"1.5\"/>",
                points.join(" ")
            );
        }
        for day in (1..=days as u32).step_by(5) {
            let t = first
                .with_day(day)
                .unwrap()
                .and_hms_opt(0, 0, 0)
                .unwrap()
                .and_utc();
            let _ = writeln!(
                s,
                "<text x=\"{:.1}\" y=\"{}\" font-size=\"10\" text-anchor=\"middle\">{day}</text>",
                x(t),
                h - bottom + 14.0
            );
        }
        let _ = writeln!(s, "<text x=\"{}\" y=\"{}\" font-size=\"10\"><tspan fill=\"#36c\">■ stored size</tspan>  <tspan fill=\"#c60\">— duration</tspan></text>\n</svg>", left + 10.0, h - 4.0);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn month_bounds_cover_december_and_reject_typos() {
        let (a, b) = month_bounds("2026-12").unwrap();
        assert_eq!(
            (a.to_string(), b.to_string()),
            ("2026-12-01".into(), "2027-01-01".into())
        );
        assert!(month_bounds("2026-13").is_err());
        assert!(month_bounds("nov").is_err());
    }
}

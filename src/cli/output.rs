//! What the commands print: aligned tables for people, JSON for scripts.

use std::fmt::Write;

use serde::Serialize;

use crate::backup::BackupSummary;
use crate::manifest::Manifest;
use crate::repository::SnapshotSummary;
use crate::restore::{Action, RestorePlan, RestoreSummary};

/// Print a value as pretty JSON on stdout.
pub fn print_json<T: Serialize + ?Sized>(v: &T) {
    println!("{}", serde_json::to_string_pretty(v).expect("serializable"));
}

/// `12.3 MiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// An aligned table: two spaces between columns, `right` marks right-aligned ones.
pub fn table(headers: &[&str], rows: &[Vec<String>], right: &[bool]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<&str>, out: &mut String| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            let pad = widths[i] - c.chars().count();
            if i > 0 {
                s.push_str("  ");
            }
            if right[i] {
                s.push_str(&" ".repeat(pad));
                s.push_str(c);
            } else {
                s.push_str(c);
                if i + 1 < cells.len() {
                    s.push_str(&" ".repeat(pad));
                }
            }
        }
        out.push_str(s.trim_end());
        out.push('\n');
    };
    line(headers.to_vec(), &mut out);
    for r in rows {
        line(r.iter().map(String::as_str).collect(), &mut out);
    }
    out
}

/// The one-line result of a backup.
pub fn backup_line(s: &BackupSummary, m: &Manifest) -> String {
    format!(
        "snapshot {} stored in {}: {} collections, {} views, {} documents, {} of BSON in {} stored, {:.1} s{}",
        s.snapshot,
        s.repository,
        s.collections,
        s.views,
        s.documents,
        human_bytes(s.bson_bytes),
        human_bytes(s.stored_bytes),
        s.seconds,
        if m.consistency.point_in_time { "" } else { " (not point-in-time)" }
    )
}

/// `mongokeep snapshots` as a table.
pub fn snapshots_table(snaps: &[SnapshotSummary], repo: &str) -> String {
    if snaps.is_empty() {
        return format!("no snapshots in {repo}\n");
    }
    let rows: Vec<Vec<String>> = snaps
        .iter()
        .map(|s| {
            vec![
                s.id.clone(),
                s.started_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                s.finished_at
                    .map(|f| {
                        format!(
                            "{:.1}s",
                            (f - s.started_at).num_milliseconds() as f64 / 1000.0
                        )
                    })
                    .unwrap_or_else(|| "-".into()),
                s.collections.to_string(),
                s.documents.to_string(),
                human_bytes(s.size_bytes),
                if s.complete {
                    "complete".into()
                } else if s.damaged.is_some() {
                    "DAMAGED".into()
                } else {
                    "INCOMPLETE".into()
                },
                s.tags.join(","),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "STARTED (UTC)",
            "TOOK",
            "COLLS",
            "DOCUMENTS",
            "SIZE",
            "STATUS",
            "TAGS",
        ],
        &rows,
        &[false, false, true, true, true, true, false, false],
    )
}

/// `mongokeep show` as text.
pub fn manifest_text(m: &Manifest) -> String {
    let mut out = String::new();
    let took = (m.finished_at - m.started_at).num_milliseconds() as f64 / 1000.0;
    let _ = writeln!(out, "snapshot     {}", m.snapshot);
    let _ = writeln!(
        out,
        "time         {} to {} UTC ({took:.1} s)",
        m.started_at.format("%Y-%m-%d %H:%M:%S"),
        m.finished_at.format("%H:%M:%S")
    );
    let _ = writeln!(
        out,
        "source       {} ({}{}, MongoDB {})",
        m.source.uri,
        m.source.topology,
        m.source
            .replica_set
            .as_deref()
            .map(|r| format!(" {r}"))
            .unwrap_or_default(),
        m.source.server_version
    );
    let _ = writeln!(out, "consistency  {}", m.consistency.note);
    let _ = writeln!(
        out,
        "options      compression {}, archive parts of at most {}{}",
        m.options.compression,
        human_bytes(m.options.archive_part_bytes),
        if m.options.include_users {
            ", users and roles"
        } else {
            ""
        }
    );
    if !m.tags.is_empty() {
        let _ = writeln!(out, "tags         {}", m.tags.join(", "));
    }
    let _ = writeln!(
        out,
        "totals       {} collections, {} views, {} documents, {} of BSON, {} stored",
        m.totals.collections,
        m.totals.views,
        m.totals.documents,
        human_bytes(m.totals.bson_bytes),
        human_bytes(m.totals.stored_bytes)
    );
    let _ = writeln!(out, "digest       {}\n", m.digest_algorithm);
    let rows: Vec<Vec<String>> = m
        .collections
        .iter()
        .map(|c| {
            vec![
                format!("{}.{}", c.db, c.name),
                c.kind.clone(),
                c.count.to_string(),
                human_bytes(c.bson_bytes),
                human_bytes(c.objects.iter().map(|o| o.size).sum()),
                c.indexes.len().to_string(),
                if c.kind == "view" {
                    "-".into()
                } else {
                    c.content_digest[..16].to_string()
                },
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "NAMESPACE",
            "TYPE",
            "DOCUMENTS",
            "BSON",
            "STORED",
            "INDEXES",
            "CONTENT DIGEST",
        ],
        &rows,
        &[false, false, true, true, true, true, false],
    ));
    out
}

/// The plan of a restore (`--dry-run`).
pub fn restore_plan(p: &RestorePlan) -> String {
    let mut out = format!(
        "restore plan for snapshot {} into {}\n",
        p.snapshot, p.target
    );
    let rows: Vec<Vec<String>> = p
        .items
        .iter()
        .map(|i| {
            vec![
                i.source.clone(),
                format!("{}.{}", i.target_db, i.target_name),
                i.kind.clone(),
                match i.action {
                    Action::Create => "create",
                    Action::DropAndCreate => "drop, create",
                    Action::LoadIntoExisting => "load into existing",
                    Action::Refused => "REFUSED",
                }
                .to_string(),
                i.documents.to_string(),
                human_bytes(i.bson_bytes),
                i.note.clone().unwrap_or_default(),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "source",
            "target",
            "type",
            "action",
            "documents",
            "bson",
            "note",
        ],
        &rows,
        &[false, false, false, false, true, true, false],
    ));
    for s in &p.skipped {
        let _ = writeln!(out, "skipped: {s}");
    }
    out
}

/// The result of a restore.
pub fn restore_summary(s: &RestoreSummary) -> String {
    let mut out = String::new();
    for s in &s.skipped {
        let _ = writeln!(out, "skipped: {s}");
    }
    let _ = writeln!(
        out,
        "snapshot {} restored into {}: {} collections, {} views, {} documents, {} of BSON in {:.1} s",
        s.snapshot,
        s.target,
        s.collections,
        s.views,
        s.documents,
        human_bytes(s.bson_bytes),
        s.seconds
    );
    out
}

/// The journal as a table.
pub fn journal_table(entries: &[crate::journal::JournalEntry]) -> String {
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            vec![
                e.time.format("%Y-%m-%d %H:%M:%S").to_string(),
                e.operation.clone(),
                e.outcome.clone(),
                format!("{:.1}", e.seconds),
                e.snapshot.clone().unwrap_or_default(),
                e.error
                    .clone()
                    .unwrap_or_default()
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_string(),
            ]
        })
        .collect();
    table(
        &[
            "time (UTC)",
            "operation",
            "outcome",
            "seconds",
            "snapshot",
            "error",
        ],
        &rows,
        &[false, false, false, true, false, false],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_human() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 << 30), "5.0 GiB");
    }

    #[test]
    fn table_aligns_columns() {
        let t = table(
            &["A", "NUM"],
            &[
                vec!["long".into(), "1".into()],
                vec!["x".into(), "100".into()],
            ],
            &[false, true],
        );
        assert_eq!(t, "A     NUM\nlong    1\nx     100\n");
    }
}

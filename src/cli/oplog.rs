//! `mongokeep oplog push`, `restore --to-time` (and the replay of a point-in-time
//! snapshot's own oplog on every restore), and the recoverable ranges `mongokeep snapshots`
//! shows: flags, and what they print.

use std::fmt::Write;

use clap::{Args, Subcommand};
use serde::Serialize;

use super::output::{human_bytes, print_json, restore_plan, table};
use super::Context;
use crate::journal::JournalEntry;
use crate::manifest::Manifest;
use crate::oplog::coverage::{self, Anchor, Range};
use crate::oplog::optime::{describe, wall_or_seconds, ToTime};
use crate::oplog::restore::{self as pitr, PitrPlan, PitrSummary};
use crate::oplog::slices::{self, PushOptions, PushOutcome, SliceSelection};
use crate::repository::{Repository, SnapshotSummary};
use crate::restore::RestoreOptions;
use crate::source::Source;
use crate::Result;

/// `mongokeep oplog`
#[derive(Debug, Args)]
pub struct OplogArgs {
    /// The action.
    #[command(subcommand)]
    pub command: OplogCommand,
}

/// `mongokeep oplog ...`
#[derive(Debug, Subcommand)]
pub enum OplogCommand {
    /// Store the oplog written since the last stored position as a slice (run it from cron,
    /// e.g. hourly); exits 3 and says OPLOG GAP when the oplog rolled over since the last push
    Push(PushArgs),
}

/// `mongokeep oplog push`
#[derive(Debug, Args)]
pub struct PushArgs {
    /// The replica set.
    #[command(flatten)]
    pub source: super::SourceArgs,
    /// Which namespaces [default: the [backup] section's, else every one].
    #[command(flatten)]
    pub select: super::SelectionArgs,
    /// Print the result as JSON
    #[arg(long)]
    pub json: bool,
}

/// `mongokeep oplog push`.
///
/// # Errors
/// As [`slices::push`]; [`crate::Error::OplogGap`] (exit 3) after storing a slice past a gap.
pub async fn cmd_oplog(ctx: &Context, a: OplogArgs) -> Result<()> {
    let OplogCommand::Push(a) = a.command;
    let selection = a.select.selection(&ctx.file.backup, false)?;
    let uri = a.source.uri(&ctx.file)?;
    let repo = ctx.repository().await?;
    let source = Source::connect(&uri).await?;
    let opts = PushOptions {
        selection,
        upload: ctx.upload,
        now: chrono::Utc::now(),
        nonce: rand::random(),
        stop: Default::default(),
    };
    // Ctrl-C/SIGTERM stops the push: its upload is aborted and no slice is stored.
    let result = super::ops::stoppable(
        slices::push(&source, &repo, &opts),
        &opts.stop,
        "oplog push interrupted: no slice was stored; run it again, it continues from the last stored position",
    )
    .await;
    push_metrics(ctx, &repo, opts.now, &result).await;
    let out = result?;
    if a.json {
        print_json(&out);
        return Ok(());
    }
    match &out.slice {
        Some(s) => println!(
            "oplog slice {} stored in {}: {} entries ({} of BSON, {} stored), covering {} to {}, continuing {}",
            s.name(),
            repo.describe(),
            s.oplog.entries,
            human_bytes(s.oplog.bson_bytes),
            human_bytes(s.oplog.object.size),
            describe(s.start()),
            describe(s.oplog.to),
            out.continued_from_what
        ),
        None => println!("nothing new in the oplog since {} ({})", describe(out.continued_from), out.continued_from_what),
    }
    Ok(())
}

/// The push's lines in the metrics file, when one is set (operation `oplog_push`: last run,
/// outcome, duration, stored bytes), so that a monitor sees hourly pushes that fail or stop,
/// and, after a push that stored its slice (past a gap too), the newest point `restore
/// --to-time` can reach, so that it sees a gap as well. A push writes no journal entry: one
/// an hour would crowd it.
async fn push_metrics(
    ctx: &Context,
    repo: &crate::repository::Repository,
    started: chrono::DateTime<chrono::Utc>,
    result: &Result<PushOutcome>,
) {
    if ctx.metrics_file.is_none() {
        return;
    }
    let mut entry = JournalEntry::new("oplog_push", started, result);
    if let Ok(Some(s)) = result.as_ref().map(|o| o.slice.as_ref()) {
        entry.figures =
            serde_json::json!({ "bytes": s.oplog.object.size, "entries": s.oplog.entries });
    }
    let facts = if matches!(result, Ok(_) | Err(crate::Error::OplogGap { .. })) {
        recoverable_fact(repo).await
    } else {
        Vec::new()
    };
    super::ops::update_metrics(ctx, &entry, &facts);
}

/// The newest point `restore --to-time` can reach, as a fact for the metrics file (none
/// when there is no point-in-time snapshot, or it cannot be worked out: then the file keeps
/// its last value, and a warning says why).
pub(crate) async fn recoverable_fact(
    repo: &crate::repository::Repository,
) -> Vec<crate::status::Fact> {
    // Bounded: the operation is done, and a slow repository must not hold it (or a signal)
    // up for the sake of one metric.
    let point = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        crate::status::newest_recoverable(repo),
    )
    .await;
    match point {
        Ok(Ok(Some(t))) => vec![crate::status::Fact::OplogRecoverable(t)],
        Ok(Ok(None)) => Vec::new(),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "could not work out the newest recoverable point for the metrics file");
            Vec::new()
        }
        Err(_) => {
            tracing::warn!("working out the newest recoverable point took over 60 s; the metrics file keeps its last value");
            Vec::new()
        }
    }
}

/// `restore` of a point-in-time snapshot, or with `--to-time`: plan (and stop on
/// `--dry-run`), then restore and replay.
///
/// # Errors
/// As [`pitr::plan`] and [`pitr::execute`].
pub async fn cmd_restore(
    ctx: &Context,
    repo: &Repository,
    manifest: &Manifest,
    target: &Source,
    opts: &RestoreOptions,
    a: &super::RestoreArgs,
) -> Result<()> {
    let (to_time, dry_run, json) = (a.to_time.as_deref(), a.dry_run, a.json);
    let to = to_time.map(|t| ToTime::parse(t, "--to-time")).transpose()?;
    let plan = pitr::plan(repo, manifest, target, opts, to).await?;
    if dry_run {
        if json {
            print_json(&plan);
        } else {
            print!("{}", plan_text(&plan));
        }
        return plan.refusal().map_or(Ok(()), Err);
    }
    let started = chrono::Utc::now();
    // Ctrl-C/SIGTERM stops the restore (or the replay) once its writes in flight have ended.
    let result = super::ops::stoppable(
        pitr::execute(repo, target, &plan, opts),
        &opts.stop,
        super::ops::RESTORE_INTERRUPTED,
    )
    .await
    .map_err(crate::Error::after_restore_began);
    // Journaled and in the metrics file like any restore.
    let mut entry = JournalEntry::new("restore", started, &result);
    entry.snapshot = Some(manifest.snapshot.clone());
    if let Ok(s) = &result {
        entry.figures = super::restore_figures(&s.restore);
        entry.figures["restored_to"] = s.restored_to.clone().into();
        entry.figures["slices"] = s.slices.into();
    }
    super::ops::record(ctx, repo, entry).await;
    let summary = result?;
    if json {
        print_json(&summary);
    } else {
        print!("{}", summary_text(&summary));
    }
    Ok(())
}

fn plan_text(p: &PitrPlan) -> String {
    let mut out = restore_plan(&p.restore);
    let _ = writeln!(
        out,
        "then replay the snapshot's oplog ({} entries) to its consistency point {}",
        p.snapshot_oplog.entries, p.consistency_point
    );
    if let Some(t) = &p.to_time {
        let _ = writeln!(
            out,
            "then replay {} oplog slice(s) up to {t}:",
            p.slices.len()
        );
        for s in &p.slices {
            let _ = writeln!(
                out,
                "  {}  {} entries, {}",
                s.name(),
                s.oplog.entries,
                human_bytes(s.oplog.object.size)
            );
        }
    }
    for t in &p.oplog_targets {
        let _ = writeln!(
            out,
            "created by the oplog: {} -> {} ({})",
            t.source, t.target, t.action
        );
    }
    out
}

fn summary_text(s: &PitrSummary) -> String {
    let r = &s.restore;
    let mut out = String::new();
    for x in &r.skipped {
        let _ = writeln!(out, "skipped: {x}");
    }
    let _ = writeln!(
        out,
        "snapshot {} restored into {}: {} collections, {} views, {} documents, {} of BSON; oplog replayed: {} operations and {} commands from the snapshot and {} slice(s)",
        r.snapshot, r.target, r.collections, r.views, r.documents, human_bytes(r.bson_bytes), s.oplog.operations, s.oplog.commands, s.slices
    );
    let _ = writeln!(
        out,
        "the restored data is the source as of {} (oplog {}){}, {:.1} s",
        s.restored_to_time
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        s.restored_to,
        s.to_time
            .as_deref()
            .map(|t| format!(", asked for {t}"))
            .unwrap_or_default(),
        s.total_seconds
    );
    out
}

/// A line of `snapshots --json`: the summary and, for a point-in-time snapshot, the range
/// it can be restored to.
#[derive(Debug, Serialize)]
struct SnapshotWithRange<'a> {
    #[serde(flatten)]
    summary: &'a SnapshotSummary,
    recoverable: Option<&'a Range>,
}

/// The recoverable ranges of every point-in-time snapshot, and the gaps of the stored oplog.
///
/// # Errors
/// The store failed or a manifest is unreadable.
pub async fn ranges(
    repo: &Repository,
    anchors: &[(Anchor, SliceSelection)],
) -> Result<(Vec<Range>, Vec<String>)> {
    let listing = slices::list(repo).await?;
    let spans = pitr::spans(&listing.slices);
    let selections: Vec<_> = listing.slices.iter().map(|s| s.selection.clone()).collect();
    // Each snapshot's range runs through the slices restore would replay for it.
    let ranges = anchors
        .iter()
        .map(|(a, sel)| coverage::range(a, &pitr::usable_spans(sel, &spans, &selections).1))
        .collect();
    let gaps = listing
        .slices
        .iter()
        .filter_map(|s| s.gap.map(|g| (s, g)))
        .map(|(s, g)| {
            format!(
                "no recovery between {} and {} (the oplog rolled over before slice {} was pushed)",
                wall_or_seconds(g.after, None).format("%Y-%m-%d %H:%M:%S"),
                wall_or_seconds(g.resumed_at, None).format("%Y-%m-%d %H:%M:%S"),
                s.name()
            )
        })
        .collect();
    Ok((ranges, gaps))
}

/// `mongokeep snapshots` with the recoverable ranges.
///
/// # Errors
/// The store failed or a manifest is unreadable.
pub async fn cmd_snapshots(ctx: &Context, json: bool) -> Result<()> {
    let repo = ctx.repository().await?;
    // One read of each manifest: the listing and the point-in-time anchors.
    let (snaps, anchors): (Vec<_>, Vec<_>) = repo
        .list_snapshots_with(pitr::anchor_of)
        .await?
        .into_iter()
        .unzip();
    let anchors: Vec<_> = anchors.into_iter().flatten().flatten().collect();
    let (ranges, gaps) = ranges(&repo, &anchors).await?;
    if json {
        let rows: Vec<SnapshotWithRange> = snaps
            .iter()
            .map(|s| SnapshotWithRange {
                summary: s,
                recoverable: ranges.iter().find(|r| r.snapshot == s.id),
            })
            .collect();
        print_json(&rows);
        return Ok(());
    }
    print!(
        "{}",
        super::output::snapshots_table(&snaps, &repo.describe())
    );
    if !ranges.is_empty() {
        let rows: Vec<Vec<String>> = ranges
            .iter()
            .map(|r| {
                vec![
                    r.snapshot.clone(),
                    r.from.format("%Y-%m-%d %H:%M:%S%.3f").to_string(),
                    r.to.format("%Y-%m-%d %H:%M:%S%.3f").to_string(),
                    format!("{} .. {}", r.from_ts, r.to_ts),
                    r.slices.to_string(),
                ]
            })
            .collect();
        println!(
            "\nrecoverable time ranges (restore --snapshot ID --to-time T, T within FROM..TO):"
        );
        print!(
            "{}",
            table(
                &["SNAPSHOT", "FROM (UTC)", "TO (UTC)", "OPLOG", "SLICES"],
                &rows,
                &[false, false, false, false, true]
            )
        );
    }
    for g in gaps {
        println!("OPLOG GAP: {g}");
    }
    Ok(())
}

//! Operating commands: `verify`, `journal`, `status`, and the journal entry and metrics every
//! operation records.

use std::path::PathBuf;

use chrono::Utc;
use clap::Args;

use super::{output, Context};
use crate::journal::{self, JournalEntry};
use crate::repository::Repository;
use crate::source::Source;
use crate::status::{parse_age, status, write_metrics, Fact, Limits};
use crate::verify::{self, VerifyOptions, VerifyReport};
use crate::{Error, Result};

/// `mongokeep verify`
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Snapshot id, a unique prefix of one, or `latest`
    #[arg(long, default_value = "latest")]
    pub snapshot: String,
    /// Only check the stored objects' sizes and checksums; no restore
    #[arg(long)]
    pub quick: bool,
    /// MongoDB URI to restore into. A database named in the URI is the scratch prefix
    /// (`<prefix>_<db>`); without one a random `mkverify_xxxx` is used. Prefer
    /// MONGOKEEP_SCRATCH_URI or --scratch-file. Flags first, then MONGOKEEP_SCRATCH_URI,
    /// then MONGOKEEP_SCRATCH_FILE
    #[arg(long)]
    pub scratch: Option<String>,
    /// File whose first line is the scratch MongoDB URI
    #[arg(long)]
    pub scratch_file: Option<PathBuf>,
    /// Keep the scratch databases afterwards (to look into a failure)
    #[arg(long)]
    pub keep: bool,
    /// Also report how the live source differs from the snapshot now (drift, not failure);
    /// with --to-time, compare with what the source held at the restored position instead
    /// (flags first, then MONGOKEEP_COMPARE_SOURCE_URI, then MONGOKEEP_COMPARE_SOURCE_FILE)
    #[arg(long)]
    pub compare_source: Option<String>,
    /// File whose first line is the URI of --compare-source (keeps its password out of the
    /// process list)
    #[arg(long)]
    pub compare_source_file: Option<PathBuf>,
    /// Restore to this time (RFC 3339 or SECONDS:INCREMENT) by replaying the stored oplog,
    /// and check the state there (see docs/pitr.md)
    #[arg(long, conflicts_with = "quick")]
    pub to_time: Option<String>,
    /// Write a copy of the JSON report here
    #[arg(long)]
    pub report_out: Option<PathBuf>,
    /// Collections restored and compared at once [default: 2]
    #[arg(long)]
    pub parallel: Option<usize>,
    /// Print the report as JSON
    #[arg(long)]
    pub json: bool,
}

/// `mongokeep journal`
#[derive(Debug, Args)]
pub struct JournalArgs {
    /// Only entries this recent: 30d, 12h, ... [default: all]
    #[arg(long)]
    pub since: Option<String>,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

/// `mongokeep status`
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Fail when the newest complete snapshot is older than this
    #[arg(long, default_value = "26h")]
    pub max_age: String,
    /// Fail when the newest passed full verification is older than this
    #[arg(long, default_value = "35d")]
    pub max_verify_age: String,
    /// Also fail when the newest point `restore --to-time` can reach (a point-in-time
    /// snapshot carried forward by the `oplog push` slices) or the newest slice is older
    /// than this, e.g. 2h for hourly pushes, or when a gap stops it [default: not checked]
    #[arg(long)]
    pub max_oplog_age: Option<String>,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

/// `mongokeep report`
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The month, YYYY-MM (UTC)
    #[arg(long)]
    pub month: String,
    /// Output format
    #[arg(long, default_value = "md", value_parser = ["md", "html", "json"])]
    pub format: String,
    /// Write to this file instead of stdout
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub(crate) async fn cmd_report(ctx: &Context, a: ReportArgs) -> Result<()> {
    crate::report::month_bounds(&a.month)?;
    let repo = ctx.repository().await?;
    let r = crate::report::build(&repo, &a.month, Utc::now()).await?;
    let text = match a.format.as_str() {
        "json" => serde_json::to_string_pretty(&r).expect("report serializes") + "\n",
        "html" => r.to_html(),
        _ => r.to_markdown(),
    };
    match &a.out {
        Some(p) => {
            std::fs::write(p, text).map_err(|e| Error::io(format!("writing {}", p.display()), e))
        }
        None => {
            print!("{text}");
            Ok(())
        }
    }
}

/// Append the journal entry of an operation and update the metrics file when one is set.
pub(crate) async fn record(ctx: &Context, repo: &Repository, entry: JournalEntry) {
    record_with(ctx, repo, entry, &[]).await;
}

pub(crate) async fn record_with(
    ctx: &Context,
    repo: &Repository,
    entry: JournalEntry,
    facts: &[Fact],
) {
    journal::append(repo, &entry).await;
    update_metrics(ctx, &entry, facts);
}

/// Update the metrics file with `entry`, when one is set; a failure is only warned about.
pub(crate) fn update_metrics(ctx: &Context, entry: &JournalEntry, facts: &[Fact]) {
    if let Some(path) = &ctx.metrics_file {
        if let Err(e) = write_metrics(path, entry, facts) {
            tracing::warn!(error = %e, "could not write the metrics file");
        }
    }
}

fn scratch_uri(a: &VerifyArgs) -> Result<String> {
    if let Some(u) = super::uri_from(
        &a.scratch,
        &a.scratch_file,
        "MONGOKEEP_SCRATCH_URI",
        "MONGOKEEP_SCRATCH_FILE",
    )? {
        return Ok(u);
    }
    Err(Error::Config(
        "a full verification restores into a scratch server: give --scratch URI (or MONGOKEEP_SCRATCH_URI, --scratch-file), or use --quick".into(),
    ))
}

/// The database named in a MongoDB URI's path, if any.
fn uri_database(uri: &str) -> Option<String> {
    let rest = uri.split_once("://")?.1;
    let path = rest.split_once('/')?.1;
    let db = path.split('?').next()?;
    (!db.is_empty()).then(|| db.to_string())
}

pub(crate) async fn cmd_verify(ctx: &Context, a: VerifyArgs) -> Result<()> {
    let repo = ctx.repository().await?;
    let manifest = repo.resolve(&a.snapshot).await?;
    let started = Utc::now();
    let compare_uri = super::uri_from(
        &a.compare_source,
        &a.compare_source_file,
        "MONGOKEEP_COMPARE_SOURCE_URI",
        "MONGOKEEP_COMPARE_SOURCE_FILE",
    )?;
    let result: Result<VerifyReport> = async {
        // The live source is reached first: unreachable, it must fail the run before the
        // restore, not throw away a verification that passed.
        let compare = match &compare_uri {
            Some(u) => Some(Source::connect(u).await?),
            None => None,
        };
        let mut report = if a.quick {
            verify::quick(&repo, &manifest).await?
        } else {
            let uri = scratch_uri(&a)?;
            let scratch = Source::connect(&uri).await?;
            let opts = VerifyOptions {
                scratch_prefix: verify::scratch_prefix(
                    uri_database(&uri).as_deref(),
                    rand::random(),
                ),
                keep: a.keep,
                parallel: a.parallel.unwrap_or(2).max(1),
            };
            if let Some(t) = &a.to_time {
                let to = crate::oplog::optime::ToTime::parse(t, "--to-time")?;
                return verify::verify_to_time(
                    &repo,
                    &manifest,
                    &scratch,
                    &opts,
                    to,
                    compare.as_ref(),
                    shutdown_signal(),
                )
                .await;
            }
            verify::full(&repo, &manifest, &scratch, &opts, shutdown_signal()).await?
        };
        if let Some(source) = &compare {
            // Drift is information, never the result: a source that fails now leaves the
            // verification as it is, without drift.
            match verify::source_drift(&manifest, source).await {
                Ok(d) => report.drift = Some(d),
                Err(e) => {
                    tracing::warn!(error = %e, "could not compare with the live source (--compare-source); the report has no drift")
                }
            }
        }
        Ok(report)
    }
    .await;
    let mut entry = JournalEntry::new("verify", started, &result);
    entry.snapshot = Some(manifest.snapshot.clone());
    let Ok(report) = result else {
        record(ctx, &repo, entry).await;
        return result.map(|_| ());
    };
    let key = verify::store_report(&repo, &report).await?;
    if let Some(p) = &a.report_out {
        std::fs::write(
            p,
            serde_json::to_vec_pretty(&report).expect("report serializes"),
        )
        .map_err(|e| Error::io(format!("writing {}", p.display()), e))?;
    }
    if !report.passed() {
        entry.outcome = "failure".into();
        entry.error = Some(format!("{} difference(s)", report.problems().len()));
    }
    entry.figures = serde_json::json!({
        "kind": report.kind,
        "result": report.result,
        "recovery_seconds": report.recovery_seconds,
        "problems": report.problems(),
        "report": key,
    });
    record_with(
        ctx,
        &repo,
        entry,
        &[Fact::VerificationPassed(report.passed())],
    )
    .await;
    if a.json {
        output::print_json(&report);
    } else {
        print!("{}", report.summary());
    }
    if report.passed() {
        Ok(())
    } else {
        Err(Error::VerificationFailed {
            snapshot: report.snapshot.clone(),
            problems: report.problems().len(),
            report: format!("{}/{key}", repo.describe()),
        })
    }
}

/// What an interrupted restore (plain or point-in-time) says.
pub(crate) const RESTORE_INTERRUPTED: &str = "restore interrupted: the target holds part of the snapshot; run the restore again with --drop to replace it";

/// `work`, stopped through `stop` on Ctrl-C/SIGTERM ([`crate::interrupt::until_shutdown`]);
/// when it was, `said` (what the interruption left and what to do) is logged as a warning.
pub(crate) async fn stoppable<T>(
    work: impl std::future::Future<Output = Result<T>>,
    stop: &tokio_util::sync::CancellationToken,
    said: &str,
) -> Result<T> {
    let r = crate::interrupt::until_shutdown(work, stop, shutdown_signal()).await;
    if matches!(r, Err(Error::Interrupted)) {
        tracing::warn!("{said}");
    }
    r
}

/// Resolves on Ctrl-C or SIGTERM.
pub(crate) async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

pub(crate) async fn cmd_journal(ctx: &Context, a: JournalArgs) -> Result<()> {
    let since = a
        .since
        .as_deref()
        .map(|s| parse_age(s, "--since"))
        .transpose()?
        .map(|d| Utc::now() - d);
    let repo = ctx.repository().await?;
    let entries = journal::list(&repo, since).await?;
    if a.json {
        output::print_json(&entries);
    } else {
        print!("{}", output::journal_table(&entries));
    }
    Ok(())
}

pub(crate) async fn cmd_status(ctx: &Context, a: StatusArgs) -> Result<()> {
    let limits = Limits {
        snapshot: parse_age(&a.max_age, "--max-age")?,
        verification: parse_age(&a.max_verify_age, "--max-verify-age")?,
        oplog: a
            .max_oplog_age
            .as_deref()
            .map(|v| parse_age(v, "--max-oplog-age"))
            .transpose()?,
    };
    let repo = ctx.repository().await?;
    let s = status(&repo, limits, Utc::now()).await?;
    if a.json {
        output::print_json(&s);
    } else {
        println!("{}: {}", s.repository, s.result.to_uppercase());
        for c in &s.checks {
            println!("  {} {}", if c.ok { "ok  " } else { "FAIL" }, c.message);
        }
    }
    if s.result == "passed" {
        Ok(())
    } else {
        Err(Error::StatusStale {
            failed: s
                .checks
                .iter()
                .filter(|c| !c.ok)
                .map(|c| c.message.clone())
                .collect(),
        })
    }
}

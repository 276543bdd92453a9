//! `mongokeep prune` and `mongokeep policy check|simulate`: flags, and what they print.
//!
//! `prune` plans, prints the plan, stops on `--dry-run`; otherwise it has planned under the
//! repository lock, so the plan printed is the plan carried out.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::output::{human_bytes, print_json, table};
use super::Context;
use crate::repository::{lock, Repository};
use crate::retention::oplog::{self as slice_retention, OplogPlan};
use crate::retention::plan::Plan;
use crate::retention::prune::{self, Outcome, Removal};
use crate::retention::simulate::{
    self, parse_instant, parse_time_of_day, rfc3339_in, Schedule, Simulation,
};
use crate::retention::{plan, Policy, Span};
use crate::{Error, Result};

/// `mongokeep prune`
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Retention policy file (see retention-policies/)
    #[arg(long)]
    pub policy: PathBuf,
    /// Print the plan and delete nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
    /// Plan as if now were this RFC 3339 time [default: now]
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
}

/// `mongokeep policy`
#[derive(Debug, Args)]
pub struct PolicyArgs {
    /// The action.
    #[command(subcommand)]
    pub command: PolicyCommand,
}

/// `mongokeep policy ...`
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Validate a policy file and say what it keeps
    Check(CheckArgs),
    /// Preview what a policy keeps of a backup schedule or of given times, without a repository
    Simulate(SimulateArgs),
}

/// `mongokeep policy check`
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Policy file
    pub file: PathBuf,
}

/// `mongokeep policy simulate`
#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// Retention policy file
    #[arg(long)]
    pub policy: PathBuf,
    /// Backup interval of the schedule, e.g. 1d or 6h
    #[arg(
        long,
        value_name = "DURATION",
        requires = "length",
        conflicts_with = "times"
    )]
    pub every: Option<String>,
    /// How long the schedule runs, e.g. 2y
    #[arg(
        long = "for",
        id = "length",
        value_name = "DURATION",
        requires = "every"
    )]
    pub length: Option<String>,
    /// First day of the schedule (YYYY-MM-DD, policy time zone) [default: the schedule ends now]
    #[arg(long, value_name = "DATE", requires = "every")]
    pub from: Option<String>,
    /// File of snapshot times, one RFC 3339 time per line
    #[arg(long, value_name = "FILE", required_unless_present = "every")]
    pub times: Option<PathBuf>,
    /// With --every: time of day of the backups (HH:MM, policy time zone) [default: 00:00].
    /// With --times: plan as if now were this RFC 3339 time [default: now]
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
    /// Print {"kept": [{"time", "reasons"}], "removed": [{"time"}]}
    #[arg(long)]
    pub json: bool,
}

/// The `prune --json` document.
#[derive(Debug, Serialize)]
struct PruneJson<'a> {
    repository: String,
    policy: String,
    at: DateTime<Utc>,
    timezone: &'a str,
    dry_run: bool,
    snapshots: Vec<SnapshotJson<'a>>,
    garbage: Vec<GarbageJson>,
    bytes_to_free: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    outcome: Option<&'a Outcome>,
    /// Oplog slices: decisions, and slice data without metadata past the grace period.
    oplog: &'a OplogPlan,
}

#[derive(Debug, Serialize)]
struct SnapshotJson<'a> {
    id: &'a str,
    time: DateTime<Utc>,
    local_time: String,
    size_bytes: u64,
    verified: bool,
    keep: bool,
    reasons: &'a [crate::retention::Reason],
}

#[derive(Debug, Serialize)]
struct GarbageJson {
    kind: &'static str,
    name: String,
    since: DateTime<Utc>,
    size_bytes: Option<u64>,
    remove: bool,
}

/// `1 object`, `3 objects`.
fn count(n: usize, noun: &str) -> String {
    format!("{n} {noun}{}", if n == 1 { "" } else { "s" })
}

fn local(t: DateTime<Utc>, plan: &Plan) -> String {
    t.with_timezone(&plan.timezone)
        .format("%Y-%m-%d %H:%M:%S %:z")
        .to_string()
}

fn now_or(at: Option<&str>) -> Result<DateTime<Utc>> {
    at.map_or_else(|| Ok(Utc::now()), |t| parse_instant(t, "--at"))
}

/// `mongokeep prune`.
///
/// # Errors
/// Policy, repository or lock errors; [`Error::RetentionFloor`] after printing the plan.
pub async fn cmd_prune(ctx: &Context, a: PruneArgs) -> Result<()> {
    let policy = Policy::load(&a.policy)?;
    let now = now_or(a.at.as_deref())?;
    let repo = ctx.repository().await?;
    repo.check_access().await?;
    if a.dry_run {
        return prune_locked(&repo, &policy, &a, now, &CancellationToken::new())
            .await
            .map(|_| ());
    }
    // Plan under the lock: no backup can complete between the plan and its execution.
    let started = Utc::now();
    let guard = lock::acquire(&repo, "prune", started, rand::random()).await?;
    // Ctrl-C/SIGTERM: the removal under way ends, no other starts, the lock is released.
    let stop = CancellationToken::new();
    let result = super::ops::stoppable(
        prune_locked(&repo, &policy, &a, now, &stop),
        &stop,
        "prune interrupted: what it printed as removed is removed, the rest is untouched; run it again to finish",
    )
    .await;
    guard.release().await;
    let mut entry = crate::journal::JournalEntry::new("prune", started, &result);
    if let Ok(Some(o)) = &result {
        entry.figures = serde_json::json!({
            "policy": a.policy.display().to_string(),
            "snapshots_removed": o.removed.iter().filter(|r| r.kind == "snapshot").map(|r| &r.name).collect::<Vec<_>>(),
            "incomplete_removed": o.incomplete_removed,
            "uploads_aborted": o.uploads_aborted,
            "oplog_slices_removed": o.removed.iter().filter(|r| r.kind == "oplog slice").map(|r| &r.name).collect::<Vec<_>>(),
            "bytes_freed": o.bytes_freed,
        });
    }
    super::record(ctx, &repo, entry).await;
    result.map(|_| ())
}

async fn prune_locked(
    repo: &Repository,
    policy: &Policy,
    a: &PruneArgs,
    now: DateTime<Utc>,
    stop: &CancellationToken,
) -> Result<Option<Outcome>> {
    let inventory = prune::inventory(repo).await?;
    let plan = plan(&inventory, policy, now);
    let floor = plan.check_floor();
    let oplog = slice_retention::inventory(repo, &plan).await?;
    if !a.json {
        print!(
            "{}",
            plan_text(&plan, &repo.describe(), &a.policy.display().to_string())
        );
        print!("{}", oplog_text(&oplog));
    }
    let outcome = match (&floor, a.dry_run) {
        (Ok(()), false) => {
            let mut report = |r: &Removal| {
                if !a.json {
                    println!(
                        "removed {} {} ({}, {})",
                        r.kind,
                        r.name,
                        count(r.objects, "object"),
                        human_bytes(r.bytes)
                    );
                }
            };
            let mut outcome = prune::execute(repo, &plan, &mut report, stop).await?;
            // The slices no kept snapshot needs go too, and count in what was freed.
            let mut slices = Vec::new();
            let mut said = |name: &str, objects: usize, bytes: u64| {
                if !a.json {
                    println!("removed oplog {name} ({})", human_bytes(bytes));
                }
                slices.push(Removal {
                    kind: "oplog slice",
                    name: name.to_string(),
                    objects,
                    bytes,
                });
            };
            slice_retention::execute(repo, &oplog, &mut said, stop).await?;
            outcome.slices_removed = slices.len();
            outcome.objects_deleted += slices.iter().map(|r| r.objects).sum::<usize>();
            outcome.bytes_freed += slices.iter().map(|r| r.bytes).sum::<u64>();
            outcome.removed.extend(slices);
            Some(outcome)
        }
        _ => None,
    };
    if a.json {
        print_json(&prune_json(&plan, repo, a, outcome.as_ref(), &oplog));
    } else if let Some(o) = &outcome {
        println!(
            "pruned: {}, {}, {}, {}; {}, {} freed",
            count(o.snapshots_removed, "snapshot"),
            count(o.incomplete_removed, "incomplete snapshot"),
            count(o.uploads_aborted, "unfinished upload"),
            count(o.slices_removed, "oplog slice"),
            count(o.objects_deleted, "object"),
            human_bytes(o.bytes_freed)
        );
    } else if floor.is_ok() {
        println!("dry run: nothing deleted");
    }
    floor.map(|()| outcome)
}

fn prune_json<'a>(
    plan: &'a Plan,
    repo: &Repository,
    a: &PruneArgs,
    outcome: Option<&'a Outcome>,
    oplog: &'a OplogPlan,
) -> PruneJson<'a> {
    PruneJson {
        repository: repo.describe(),
        policy: a.policy.display().to_string(),
        at: plan.now,
        timezone: plan.timezone.name(),
        dry_run: a.dry_run,
        snapshots: plan
            .decisions
            .iter()
            .map(|d| SnapshotJson {
                id: &d.id,
                time: d.time,
                local_time: local(d.time, plan),
                size_bytes: d.size_bytes,
                verified: d.verified,
                keep: d.keep,
                reasons: &d.reasons,
            })
            .collect(),
        garbage: plan
            .garbage
            .iter()
            .map(|g| GarbageJson {
                kind: g.what(),
                name: g.name(),
                since: g.since,
                size_bytes: g.size_bytes(),
                remove: g.remove,
            })
            .collect(),
        bytes_to_free: plan.bytes_to_free(),
        outcome,
        oplog,
    }
}

/// The oplog slices' part of the plan; empty when the repository holds none.
fn oplog_text(p: &OplogPlan) -> String {
    if p.slices.is_empty() && p.orphans.is_empty() {
        return String::new();
    }
    let rows: Vec<Vec<String>> = p
        .slices
        .iter()
        .map(|d| {
            vec![
                d.name.clone(),
                d.to_time.format("%Y-%m-%d %H:%M:%S").to_string(),
                human_bytes(d.size_bytes),
                if d.keep {
                    "keep".into()
                } else {
                    "REMOVE".into()
                },
                d.reason.clone(),
            ]
        })
        .collect();
    let mut out =
        String::from("\noplog slices (kept while a kept point-in-time snapshot needs them):\n");
    out.push_str(&table(
        &["SLICE", "ENDS (UTC)", "SIZE", "ACTION", "REASON"],
        &rows,
        &[false, false, true, false, false],
    ));
    for (k, size) in &p.orphans {
        out.push_str(&format!(
            "REMOVE {k} ({}): slice data without metadata (an interrupted oplog push)\n",
            human_bytes(*size)
        ));
    }
    out.push_str(&format!(
        "oplog: remove {} of {} slices, {} to free\n",
        p.slices.iter().filter(|d| !d.keep).count(),
        p.slices.len(),
        human_bytes(p.bytes_to_free())
    ));
    out
}

/// The plan as people read it: snapshots, garbage, summary.
pub fn plan_text(plan: &Plan, repo: &str, policy: &str) -> String {
    let mut out = format!(
        "prune plan for {repo}, policy {policy}, as of {} (times in {})\n",
        local(plan.now, plan),
        plan.timezone.name()
    );
    if plan.decisions.is_empty() {
        out.push_str("no complete snapshots\n");
    } else {
        let rows: Vec<Vec<String>> = plan
            .decisions
            .iter()
            .map(|d| {
                let reasons: Vec<String> = d.reasons.iter().map(ToString::to_string).collect();
                vec![
                    d.id.clone(),
                    local(d.time, plan),
                    human_bytes(d.size_bytes),
                    if d.keep {
                        "keep".into()
                    } else {
                        "REMOVE".into()
                    },
                    reasons.join(", "),
                ]
            })
            .collect();
        out.push_str(&table(
            &["ID", "TIME", "SIZE", "ACTION", "REASONS"],
            &rows,
            &[false, false, true, false, false],
        ));
    }
    if !plan.garbage.is_empty() {
        let rows: Vec<Vec<String>> = plan
            .garbage
            .iter()
            .map(|g| {
                vec![
                    g.what().to_string(),
                    g.name(),
                    local(g.since, plan),
                    g.size_bytes().map_or_else(|| "-".into(), human_bytes),
                    if g.remove {
                        "REMOVE".into()
                    } else {
                        "keep (within grace)".into()
                    },
                ]
            })
            .collect();
        out.push_str("\ngarbage (no manifest, or an unfinished upload):\n");
        out.push_str(&table(
            &["KIND", "NAME", "SINCE", "SIZE", "ACTION"],
            &rows,
            &[false, false, false, true, false],
        ));
    }
    out.push_str(&format!(
        "\nkeep {}, remove {} and {} of garbage: {} to free\n",
        count(plan.kept().count(), "snapshot"),
        count(plan.removed().count(), "snapshot"),
        count(plan.garbage_to_remove().count(), "piece"),
        human_bytes(plan.bytes_to_free())
    ));
    out
}

/// `mongokeep policy check|simulate`.
///
/// # Errors
/// An invalid policy or flag.
pub fn cmd_policy(a: PolicyArgs) -> Result<()> {
    match a.command {
        PolicyCommand::Check(c) => {
            let policy = Policy::load(&c.file)?;
            println!("{}: valid", c.file.display());
            print!("{}", policy.describe());
            Ok(())
        }
        PolicyCommand::Simulate(s) => cmd_simulate(s),
    }
}

fn span_flag(flag: &str, text: &str) -> Result<Span> {
    Span::parse(text).map_err(|e| Error::Config(format!("{flag}: {e}")))
}

fn cmd_simulate(a: SimulateArgs) -> Result<()> {
    let policy = Policy::load(&a.policy)?;
    let tz = policy.timezone;
    let (times, now) = if let Some(file) = &a.times {
        let text = std::fs::read_to_string(file).map_err(|e| {
            Error::Config(format!("cannot read times file {}: {e}", file.display()))
        })?;
        (
            simulate::parse_times(&text, &file.display().to_string())?,
            now_or(a.at.as_deref())?,
        )
    } else {
        let every = span_flag("--every", a.every.as_deref().unwrap_or_default())?;
        let length = span_flag("--for", a.length.as_deref().unwrap_or_default())?;
        let at = match a.at.as_deref() {
            None => chrono::NaiveTime::MIN,
            Some(t) if t.contains('T') => {
                return Err(Error::Config(format!(
                    "--at {t:?}: with --every, --at is the time of day of the backups (e.g. 02:00); use --from DATE to fix when the schedule starts"
                )))
            }
            Some(t) => parse_time_of_day(t)?,
        };
        let from = a
            .from
            .as_deref()
            .map(|d| {
                chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").map_err(|_| {
                    Error::Config(format!("--from {d:?}: expected a date such as 2025-01-01"))
                })
            })
            .transpose()?;
        let (times, now) = Schedule {
            every,
            at,
            length,
            from,
        }
        .times(tz, Utc::now())?;
        (
            times.into_iter().map(|t| (rfc3339_in(t, tz), t)).collect(),
            now,
        )
    };
    let sim = simulate::simulate(&times, &policy, now);
    if a.json {
        print_json(&sim.to_json());
    } else {
        print!("{}", simulation_text(&sim, &a.policy.display().to_string()));
    }
    sim.plan.check_floor()
}

fn simulation_text(sim: &Simulation, policy: &str) -> String {
    let plan = &sim.plan;
    let mut out = format!(
        "policy {policy} over {} snapshots, as of {} (periods in {})\n",
        plan.decisions.len(),
        rfc3339_in(plan.now, plan.timezone),
        plan.timezone.name()
    );
    let rows: Vec<Vec<String>> = plan
        .kept()
        .map(|d| {
            let reasons: Vec<String> = d.reasons.iter().map(ToString::to_string).collect();
            vec![sim.label(&d.id).to_string(), reasons.join(", ")]
        })
        .collect();
    out.push_str(&table(&["KEPT", "REASONS"], &rows, &[false, false]));
    out.push_str(&format!(
        "\nkeeps {} of {} snapshots, removes {}\n",
        rows.len(),
        plan.decisions.len(),
        plan.removed().count()
    ));
    out
}

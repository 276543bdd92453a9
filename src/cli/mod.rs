//! The command line: clap definitions, merging flags, environment and `mongokeep.toml`
//! (flags win, then environment, then the file), and one function per command that calls
//! the library and prints the result.

mod ops;
pub(crate) use ops::record;
mod oplog;
mod output;
mod retention;

pub use oplog::{OplogArgs, OplogCommand, PushArgs};
pub use retention::{CheckArgs, PolicyArgs, PolicyCommand, PruneArgs, SimulateArgs};

use std::path::PathBuf;

use clap::{ArgAction, Args, Parser, Subcommand};

use crate::archive::Codec;
use crate::backup::{self, BackupOptions, BackupSummary, Selection};
use crate::config::{read_uri_file, FileConfig};
use crate::journal::JournalEntry;
use crate::repository::Repository;
use crate::restore::{self, NsMap, RestoreOptions};
use crate::source::Source;
use crate::storage::upload::UploadConfig;
use crate::storage::{self, S3Settings};
use crate::{Error, Result};

/// Streaming, checksummed, verifiable MongoDB backups into S3 or a local folder.
#[derive(Debug, Parser)]
#[command(name = "mongokeep", version, about, long_about = None)]
pub struct Cli {
    /// Options every command takes.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Configuration file [default: ./mongokeep.toml when present]
    #[arg(long, global = true, env = "MONGOKEEP_CONFIG")]
    pub config: Option<PathBuf>,
    /// Repository: s3://bucket/prefix, file:///abs/path or a path [default: ./backups]
    #[arg(long, global = true, env = "MONGOKEEP_REPO")]
    pub repo: Option<String>,
    /// Endpoint of an S3-compatible store, e.g. http://127.0.0.1:3900
    #[arg(long, global = true, env = "MONGOKEEP_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// S3 region [default: from AWS_REGION / the AWS profile, else us-east-1]
    #[arg(long, global = true, env = "MONGOKEEP_S3_REGION")]
    pub s3_region: Option<String>,
    /// Path-style S3 addressing (most self-hosted stores need it); MONGOKEEP_S3_PATH_STYLE=false
    /// turns off a configuration file's `path_style = true`
    #[arg(
        long,
        global = true,
        env = "MONGOKEEP_S3_PATH_STYLE",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new(),
        value_name = "BOOL"
    )]
    pub s3_path_style: Option<bool>,
    /// When to send request checksums: when-supported, or when-required for stores that
    /// reject aws-chunked checksum trailers (R2, older MinIO)
    #[arg(long, global = true, env = "MONGOKEEP_S3_CHECKSUM", value_parser = ["when-supported", "when-required"])]
    pub s3_checksum: Option<String>,
    /// Log format on stderr
    #[arg(long, global = true, env = "MONGOKEEP_LOG_FORMAT", value_parser = ["text", "json"])]
    pub log_format: Option<String>,
    /// More log output (-v info, -vv debug)
    #[arg(short, long, global = true, action = ArgAction::Count)]
    pub verbose: u8,
    /// Only errors on stderr
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Update this Prometheus textfile-collector file with the outcome of the operation
    #[arg(long, global = true, env = "MONGOKEEP_METRICS_FILE")]
    pub metrics_file: Option<PathBuf>,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Back up a MongoDB deployment into the repository
    Backup(BackupArgs),
    /// List the snapshots in the repository, newest first
    Snapshots(ListArgs),
    /// Show what a snapshot holds
    Show(ShowArgs),
    /// Restore a snapshot into a MongoDB deployment, whole or in part
    Restore(RestoreArgs),
    /// Write a snapshot as a mongodump-compatible folder (for a stock mongorestore)
    Export(ExportArgs),
    /// Prove a snapshot restores: checksums, then a restore into scratch databases compared
    /// with the manifest (counts, content digests, indexes, options)
    Verify(ops::VerifyArgs),
    /// List the journal of operations
    Journal(ops::JournalArgs),
    /// Age of the newest snapshot and verification; non-zero exit when too old
    Status(ops::StatusArgs),
    /// The monthly verification report: snapshots, verifications, retention, gaps
    Report(ops::ReportArgs),
    /// Apply a retention policy: remove the snapshots it does not keep, and the garbage of
    /// interrupted runs
    Prune(PruneArgs),
    /// Check a retention policy, or preview what it keeps of a schedule
    Policy(PolicyArgs),
    /// Store the oplog between snapshots, for point-in-time restores (`oplog push`)
    Oplog(OplogArgs),
}

/// Where the MongoDB source comes from (`backup`, `oplog push`).
#[derive(Debug, Args)]
pub struct SourceArgs {
    /// MongoDB URI. Prefer MONGODB_URI or --source-file: a URI with a password on the
    /// command line is visible in the process list. Flags first, then MONGODB_URI, then
    /// MONGOKEEP_SOURCE_FILE, then the configuration file
    #[arg(long)]
    pub source: Option<String>,
    /// File whose first line is the MongoDB URI
    #[arg(long)]
    pub source_file: Option<PathBuf>,
}

impl SourceArgs {
    /// The URI: `--source`, then `--source-file`, then MONGODB_URI, then
    /// MONGOKEEP_SOURCE_FILE, then the file's `[source] uri_file`, then its `[source] uri`.
    ///
    /// # Errors
    /// None of them is set, or the URI file cannot be read.
    pub fn uri(&self, file: &FileConfig) -> Result<String> {
        if let Some(u) = uri_from(
            &self.source,
            &self.source_file,
            "MONGODB_URI",
            "MONGOKEEP_SOURCE_FILE",
        )? {
            return Ok(u);
        }
        if let Some(p) = &file.source.uri_file {
            return read_uri_file(p);
        }
        file.source.uri.clone().ok_or_else(|| {
            Error::Config(
                "no MongoDB source: set MONGODB_URI, or --source-file FILE, or [source] uri_file in mongokeep.toml".into(),
            )
        })
    }
}

/// A MongoDB URI from, in order: its flag, its file flag, the environment variable `env`,
/// the file the variable `env_file` names. Flags win over the environment.
///
/// # Errors
/// A URI file that cannot be read or holds no URI.
pub(crate) fn uri_from(
    flag: &Option<String>,
    flag_file: &Option<PathBuf>,
    env: &str,
    env_file: &str,
) -> Result<Option<String>> {
    if let Some(u) = flag {
        return Ok(Some(u.clone()));
    }
    if let Some(p) = flag_file {
        return read_uri_file(p).map(Some);
    }
    if let Some(u) = std::env::var(env).ok().filter(|u| !u.is_empty()) {
        return Ok(Some(u));
    }
    match std::env::var_os(env_file).filter(|p| !p.is_empty()) {
        Some(p) => read_uri_file(std::path::Path::new(&p)).map(Some),
        None => Ok(None),
    }
}

/// Which namespaces (`backup`, `oplog push`); a list left empty falls back to the config
/// file's `[backup]` section.
#[derive(Debug, Args)]
pub struct SelectionArgs {
    /// Only this database (repeatable)
    #[arg(long = "db")]
    pub databases: Vec<String>,
    /// Only namespaces matching this glob over db.collection (repeatable)
    #[arg(long)]
    pub ns_include: Vec<String>,
    /// Leave out namespaces matching this glob (repeatable)
    #[arg(long)]
    pub ns_exclude: Vec<String>,
}

impl SelectionArgs {
    /// The selection, flags first, then `[backup]`.
    ///
    /// # Errors
    /// A malformed glob.
    pub fn selection(
        &self,
        f: &crate::config::BackupSection,
        include_users: bool,
    ) -> Result<Selection> {
        let pick = |flag: &Vec<String>, file: &Vec<String>| {
            if flag.is_empty() {
                file.clone()
            } else {
                flag.clone()
            }
        };
        Selection::new(
            pick(&self.databases, &f.databases),
            pick(&self.ns_include, &f.ns_include),
            pick(&self.ns_exclude, &f.ns_exclude),
            include_users,
        )
    }
}

/// `mongokeep backup`
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The source.
    #[command(flatten)]
    pub source: SourceArgs,
    /// What to back up.
    #[command(flatten)]
    pub select: SelectionArgs,
    /// Also back up users and roles (admin.system.users, admin.system.roles)
    #[arg(long)]
    pub include_users: bool,
    /// gzip, gzip:0-12 (libdeflate levels) or none [default: gzip:7]
    #[arg(long)]
    pub compression: Option<String>,
    /// Collections backed up at once [default: 2]
    #[arg(long)]
    pub parallel: Option<usize>,
    /// Bound on the BSON bytes of one archive part, MiB [default: 16]
    #[arg(long)]
    pub archive_part_mib: Option<usize>,
    /// Tag the snapshot (repeatable)
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// Print the summary as JSON
    #[arg(long)]
    pub json: bool,
}

/// `mongokeep snapshots`
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

/// `mongokeep show`
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// Snapshot id, a unique prefix of one, or `latest`
    pub snapshot: String,
    /// Print the manifest as JSON
    #[arg(long)]
    pub json: bool,
}

/// `mongokeep restore`
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Snapshot id, a unique prefix of one, or `latest`
    #[arg(long)]
    pub snapshot: String,
    /// MongoDB URI to restore into. Prefer MONGOKEEP_TARGET_URI or --target-file: a URI with
    /// a password on the command line is visible in the process list. Flags first, then
    /// MONGOKEEP_TARGET_URI, then MONGOKEEP_TARGET_FILE
    #[arg(long)]
    pub target: Option<String>,
    /// File whose first line is the target MongoDB URI
    #[arg(long)]
    pub target_file: Option<PathBuf>,
    /// Only namespaces of the snapshot matching this glob over db.collection (repeatable)
    #[arg(long)]
    pub ns_include: Vec<String>,
    /// Leave out namespaces matching this glob (repeatable)
    #[arg(long)]
    pub ns_exclude: Vec<String>,
    /// Rename: source pattern with `*` wildcards, e.g. 'shop.*' (repeatable, paired with --ns-to)
    #[arg(long)]
    pub ns_from: Vec<String>,
    /// Rename: target pattern, e.g. 'shop_restored.*'
    #[arg(long)]
    pub ns_to: Vec<String>,
    /// Drop each selected target collection that exists before restoring it (and nothing else)
    #[arg(long)]
    pub drop: bool,
    /// Restore the source as it was at this time: an RFC 3339 time (2026-11-25T14:30:00Z)
    /// or an oplog timestamp SECONDS:INCREMENT, between the snapshot's consistency point and
    /// the last `oplog push` (see docs/pitr.md)
    #[arg(long, value_name = "TIME")]
    pub to_time: Option<String>,
    /// Print what would be created, dropped and loaded; write nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Collections restored at once [default: 2]
    #[arg(long)]
    pub parallel: Option<usize>,
    /// Insert batches in flight per collection [default: 2]
    #[arg(long)]
    pub insert_workers: Option<usize>,
    /// Print the plan or summary as JSON
    #[arg(long)]
    pub json: bool,
}

/// `mongokeep export`
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Snapshot id, a unique prefix of one, or `latest`
    #[arg(long)]
    pub snapshot: String,
    /// Folder to write `<db>/<collection>.bson` and `.metadata.json` into
    #[arg(long)]
    pub out: PathBuf,
    /// Print the summary as JSON
    #[arg(long)]
    pub json: bool,
}

/// The configuration as the command sees it after merging.
#[derive(Debug)]
pub struct Context {
    /// File configuration.
    pub file: FileConfig,
    /// Repository URL.
    pub repo_url: String,
    /// S3 settings.
    pub s3: S3Settings,
    /// Upload tuning.
    pub upload: UploadConfig,
    /// Prometheus textfile to update after each operation.
    pub metrics_file: Option<PathBuf>,
}

impl Context {
    /// Merge global flags (already merged with the environment by clap) and the file.
    ///
    /// # Errors
    /// The configuration file is unreadable or invalid.
    pub fn new(g: &GlobalArgs) -> Result<Self> {
        let file = FileConfig::load(g.config.as_deref())?;
        let repo_url = g
            .repo
            .clone()
            .or_else(|| file.repository.url.clone())
            .unwrap_or_else(|| "./backups".to_string());
        let checksum = g.s3_checksum.clone().or_else(|| file.s3.checksum.clone());
        let checksum_when_required = match checksum.as_deref() {
            None | Some("when-supported") => false,
            Some("when-required") => true,
            Some(other) => {
                return Err(Error::Config(format!(
                    "[s3] checksum = {other:?}: expected \"when-supported\" or \"when-required\""
                )))
            }
        };
        let s3 = S3Settings {
            endpoint: g.s3_endpoint.clone().or_else(|| file.s3.endpoint.clone()),
            region: g.s3_region.clone().or_else(|| file.s3.region.clone()),
            path_style: g.s3_path_style.or(file.s3.path_style).unwrap_or(false),
            checksum_when_required,
            max_attempts: file.s3.max_attempts.unwrap_or(5),
            connect_timeout_secs: 5,
            static_credentials: None,
        };
        let mut upload = UploadConfig::default();
        if let Some(c) = file.s3.upload_concurrency {
            upload.concurrency = c.max(1);
        }
        if let Some(p) = file.s3.part_size_mib {
            upload.initial_part_size = p.max(5) << 20;
        }
        Ok(Self {
            file,
            repo_url,
            s3,
            upload,
            metrics_file: g.metrics_file.clone(),
        })
    }

    /// Open the repository.
    ///
    /// # Errors
    /// A malformed URL.
    /// The repository, which must exist: a local folder that does not is a mistyped
    /// `--repo`, not an empty repository (S3 answers for a missing bucket itself).
    pub async fn repository(&self) -> Result<Repository> {
        let repo = self.repository_to_write().await?;
        if let Some(root) = storage::local_root(&self.repo_url) {
            if !root.exists() {
                return Err(repo.err(storage::StorageError::NoRepository {
                    path: root.display().to_string(),
                }));
            }
        }
        Ok(repo)
    }

    /// The repository, a local folder made by the first write (for `backup`).
    pub async fn repository_to_write(&self) -> Result<Repository> {
        Ok(Repository::new(
            storage::open(&self.repo_url, &self.s3).await?,
        ))
    }
}

/// Run a parsed command line.
///
/// # Errors
/// Whatever the command failed with; `main` maps it to an exit code.
pub async fn run(cli: Cli) -> Result<()> {
    // Policies need no repository and no configuration file.
    if let Command::Policy(a) = cli.command {
        return retention::cmd_policy(a);
    }
    let ctx = Context::new(&cli.global)?;
    match cli.command {
        Command::Backup(a) => cmd_backup(&ctx, a).await,
        Command::Snapshots(a) => cmd_snapshots(&ctx, a).await,
        Command::Show(a) => cmd_show(&ctx, a).await,
        Command::Restore(a) => cmd_restore(&ctx, a, cli.global.quiet).await,
        Command::Export(a) => cmd_export(&ctx, a).await,
        Command::Verify(a) => ops::cmd_verify(&ctx, a).await,
        Command::Journal(a) => ops::cmd_journal(&ctx, a).await,
        Command::Status(a) => ops::cmd_status(&ctx, a).await,
        Command::Report(a) => ops::cmd_report(&ctx, a).await,
        Command::Prune(a) => retention::cmd_prune(&ctx, a).await,
        Command::Policy(a) => retention::cmd_policy(a),
        Command::Oplog(a) => oplog::cmd_oplog(&ctx, a).await,
    }
}

async fn cmd_backup(ctx: &Context, a: BackupArgs) -> Result<()> {
    let f = &ctx.file.backup;
    let codec = Codec::parse(
        a.compression
            .as_deref()
            .or(f.compression.as_deref())
            .unwrap_or("gzip"),
    )?;
    let selection = a
        .select
        .selection(f, a.include_users || f.include_users.unwrap_or(false))?;
    let parallel = a.parallel.or(f.parallel).unwrap_or(2);
    if parallel == 0 {
        return Err(Error::Config("--parallel must be at least 1".into()));
    }
    let part_mib = a.archive_part_mib.or(f.archive_part_mib).unwrap_or(16);
    if !(1..=1024).contains(&part_mib) {
        return Err(Error::Config(
            "--archive-part-mib must be between 1 and 1024".into(),
        ));
    }
    let mut tags = f.tags.clone();
    tags.extend(a.tags.iter().cloned());
    let uri = a.source.uri(&ctx.file)?;
    let repo = ctx.repository_to_write().await?;
    let source = Source::connect(&uri).await?;
    let opts = BackupOptions {
        selection,
        codec,
        part_limit: part_mib << 20,
        parallel,
        upload: ctx.upload,
        tags,
        now: chrono::Utc::now(),
        nonce: rand::random(),
        stop: Default::default(),
    };
    // Ctrl-C/SIGTERM stops the backup: its uploads are aborted and what it stored removed.
    let result = ops::stoppable(
        backup::run(&source, &repo, &opts),
        &opts.stop,
        "backup interrupted: no snapshot was made; run the backup again",
    )
    .await;
    let mut entry = JournalEntry::new("backup", opts.now, &result);
    if let Ok(m) = &result {
        entry.snapshot = Some(m.snapshot.clone());
        entry.figures = serde_json::json!({
            "documents": m.totals.documents,
            "bytes": m.totals.stored_bytes,
            "bson_bytes": m.totals.bson_bytes,
            "collections": m.totals.collections,
        });
    }
    // A point-in-time snapshot moves the newest recoverable point (and mends a gap): the
    // metrics file says so at once, not at the next `oplog push`.
    let facts = match &result {
        Ok(m) if m.oplog.is_some() && ctx.metrics_file.is_some() => {
            oplog::recoverable_fact(&repo).await
        }
        _ => Vec::new(),
    };
    ops::record_with(ctx, &repo, entry, &facts).await;
    let manifest = result?;
    let summary = BackupSummary::of(&manifest, repo.describe());
    if a.json {
        output::print_json(&summary);
    } else {
        println!("{}", output::backup_line(&summary, &manifest));
    }
    Ok(())
}

async fn cmd_snapshots(ctx: &Context, a: ListArgs) -> Result<()> {
    // The table, and the time ranges point-in-time snapshots can be restored to.
    oplog::cmd_snapshots(ctx, a.json).await
}

async fn cmd_show(ctx: &Context, a: ShowArgs) -> Result<()> {
    let repo = ctx.repository().await?;
    let m = repo.resolve(&a.snapshot).await?;
    if a.json {
        output::print_json(&m);
    } else {
        print!("{}", output::manifest_text(&m));
    }
    Ok(())
}

fn target_uri(a: &RestoreArgs) -> Result<String> {
    if let Some(u) = uri_from(
        &a.target,
        &a.target_file,
        "MONGOKEEP_TARGET_URI",
        "MONGOKEEP_TARGET_FILE",
    )? {
        return Ok(u);
    }
    Err(Error::Config(
        "no restore target: give --target URI, or set MONGOKEEP_TARGET_URI, or --target-file FILE"
            .into(),
    ))
}

async fn cmd_restore(ctx: &Context, a: RestoreArgs, quiet: bool) -> Result<()> {
    use std::io::IsTerminal;
    let opts = RestoreOptions {
        selection: Selection::new(vec![], a.ns_include.clone(), a.ns_exclude.clone(), false)?,
        map: NsMap::new(&a.ns_from, &a.ns_to)?,
        drop: a.drop,
        parallel: a.parallel.unwrap_or(2).max(1),
        insert_workers: a.insert_workers.unwrap_or(2).max(1),
        progress: !quiet && !a.json && !a.dry_run && std::io::stderr().is_terminal(),
        ..RestoreOptions::default()
    };
    let uri = target_uri(&a)?;
    let repo = ctx.repository().await?;
    let manifest = repo.resolve(&a.snapshot).await?;
    let target = Source::connect(&uri).await?;
    if a.to_time.is_some() || manifest.oplog.is_some() {
        // A point-in-time snapshot is restored with its oplog replayed, and rolled forward
        // through the oplog slices with --to-time.
        return oplog::cmd_restore(ctx, &repo, &manifest, &target, &opts, &a).await;
    }
    restore::check_patterns(&manifest, &opts, &[])?;
    let plan = restore::plan(&manifest, &target, &opts).await?;
    if a.dry_run {
        if a.json {
            output::print_json(&plan);
        } else {
            print!("{}", output::restore_plan(&plan));
        }
        return plan.refusal().map_or(Ok(()), Err);
    }
    let started = chrono::Utc::now();
    // Ctrl-C/SIGTERM stops the restore once its inserts in flight have ended.
    let result = ops::stoppable(
        restore::execute(&repo, &target, &plan, &opts),
        &opts.stop,
        ops::RESTORE_INTERRUPTED,
    )
    .await
    .map_err(Error::after_restore_began);
    let mut entry = JournalEntry::new("restore", started, &result);
    entry.snapshot = Some(manifest.snapshot.clone());
    if let Ok(s) = &result {
        entry.figures = restore_figures(s);
    }
    record(ctx, &repo, entry).await;
    let summary = result?;
    if a.json {
        output::print_json(&summary);
    } else {
        print!("{}", output::restore_summary(&summary));
    }
    Ok(())
}

/// A restore's figures for its journal entry.
pub(crate) fn restore_figures(s: &restore::RestoreSummary) -> serde_json::Value {
    serde_json::json!({
        "documents": s.documents,
        "bytes": s.bson_bytes,
        "collections": s.collections,
        "target": s.target,
    })
}

async fn cmd_export(ctx: &Context, a: ExportArgs) -> Result<()> {
    let repo = ctx.repository().await?;
    let manifest = repo.resolve(&a.snapshot).await?;
    let stop = tokio_util::sync::CancellationToken::new();
    let summary = ops::stoppable(
        crate::export::export(&repo, &manifest, &a.out, &stop),
        &stop,
        &format!(
            "export interrupted: nothing was written to {}; run the export again",
            a.out.display()
        ),
    )
    .await?;
    if a.json {
        output::print_json(&summary);
    } else {
        // With the snapshot's own oplog, mongorestore replays it to the consistency point.
        let (oplog, replay) = match summary.oplog_entries {
            Some(n) => (format!(", {n} oplog entries"), " --oplogReplay"),
            None => (String::new(), ""),
        };
        println!(
            "snapshot {} exported to {}: {} collections, {} views, {} documents, {} of BSON{oplog}; restore it with: mongorestore --dir {}{replay}",
            summary.snapshot,
            summary.out,
            summary.collections,
            summary.views,
            summary.documents,
            output::human_bytes(summary.bson_bytes),
            summary.out
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn path_style_can_be_turned_on_and_off_from_the_command_line() {
        let style = |args: &[&str]| {
            Cli::try_parse_from(["mongokeep"].iter().chain(args))
                .unwrap()
                .global
                .s3_path_style
        };
        assert_eq!(style(&["--s3-path-style", "snapshots"]), Some(true));
        assert_eq!(style(&["snapshots", "--s3-path-style"]), Some(true));
        // Off beats a configuration file's `path_style = true` (None would let it through).
        assert_eq!(style(&["--s3-path-style=false", "snapshots"]), Some(false));
        assert_eq!(style(&["--s3-path-style=no", "snapshots"]), Some(false));
    }
}

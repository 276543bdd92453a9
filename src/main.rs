//! The `mongokeep` binary: parse, set up logging, run the library, map the error to an exit
//! code. Nothing else lives here.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use mongokeep::cli::Cli;
use mongokeep::redact::scrub;

/// stderr, with every registered secret scrubbed from each log line.
struct ScrubbedStderr;

impl Write for ScrubbedStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = scrub(&String::from_utf8_lossy(buf));
        std::io::stderr().write_all(text.as_bytes())?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

fn init_logging(cli: &Cli) {
    use tracing_subscriber::EnvFilter;
    let level = if cli.global.quiet {
        "error"
    } else {
        match cli.global.verbose {
            0 => "warn",
            1 => "info",
            _ => "debug",
        }
    };
    let filter = EnvFilter::try_from_env("MONGOKEEP_LOG")
        .unwrap_or_else(|_| EnvFilter::new(format!("warn,mongokeep={level}")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| ScrubbedStderr)
        .with_ansi(false);
    // The flag (or MONGOKEEP_LOG_FORMAT) wins; else `[log] format` from the config file.
    let format = cli.global.log_format.clone().or_else(|| {
        mongokeep::config::FileConfig::load(cli.global.config.as_deref())
            .ok()
            .and_then(|f| f.log.format)
    });
    if format.as_deref() == Some("json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() -> ExitCode {
    mongokeep::tune_allocator();
    let cli = Cli::parse();
    if matches!(cli.command, mongokeep::cli::Command::Backup(_)) {
        mongokeep::one_malloc_arena();
    }
    // Commands that only read and print end quietly when their reader goes away
    // (`mongokeep snapshots | head -1`), as other command-line tools do, instead of
    // panicking on the broken pipe. The ones that write keep the signal ignored: their
    // work must end (or clean up) whatever happens to their output.
    {
        use mongokeep::cli::Command as C;
        if matches!(
            cli.command,
            C::Snapshots(_)
                | C::Show(_)
                | C::Journal(_)
                | C::Status(_)
                | C::Report(_)
                | C::Policy(_)
        ) {
            // SAFETY: called before any thread starts; SIG_DFL is a valid disposition.
            unsafe {
                libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            }
        }
    }
    init_logging(&cli);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(mongokeep::ExitCode::Internal.code());
        }
    };
    mongokeep::source::track_clients();
    let result = runtime.block_on(async {
        let r = mongokeep::cli::run(cli).await;
        mongokeep::source::shutdown_clients().await;
        r
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                let t = s.to_string();
                if !msg.contains(&t) {
                    msg.push_str(&format!(": {t}"));
                }
                src = s.source();
            }
            eprintln!("error: {}", scrub(&msg));
            ExitCode::from(e.exit_code().code())
        }
    }
}

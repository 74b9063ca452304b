//! The `flowlens` executable: loads `libflowlens.so` and speaks the agent's process protocol.
//!
//! Stdout carries line protocol only; logs go to stderr with Telegraf's level prefixes. Exit codes:
//! 0 on a normal end (stdin closed in `telegraf` mode, SIGTERM/SIGINT/SIGHUP, stdout closed by the
//! reader, `once` done), 2 on bad usage or config, 1 on other failures. Every stop is logged as
//! one `I! stopping: <reason>` line, ends the gather in progress, detaches the probes and exits
//! within milliseconds (`stop.rs`).

mod health;
mod load;
mod modes;
mod stop;

use clap::{Parser, Subcommand};
use flowlens_abi::LogLevel;
use std::path::PathBuf;

/// Per-container and per-pod network metrics from eBPF, as InfluxDB line protocol on stdout.
#[derive(Parser, Debug)]
#[command(name = "flowlens", version, about)]
pub struct Cli {
    /// TOML configuration file. Without it the built-in defaults serve (see `print-config`).
    #[arg(long, value_name = "PATH", global = true)]
    pub config: Option<PathBuf>,

    /// Path of libflowlens.so. Default: next to this executable, then /usr/lib/flowlens/.
    #[arg(long, value_name = "PATH", global = true)]
    pub plugin: Option<PathBuf>,

    /// What to do.
    #[command(subcommand)]
    pub mode: Mode,
}

/// The modes: one per way an agent runs flowlens, plus three for people and probes.
#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Telegraf inputs.execd with signal = "STDIN": one gather per newline; exit when stdin closes.
    Telegraf,
    /// Self-timed gathers every interval_secs (Vector exec streaming); stdin is ignored.
    Stream,
    /// One gather to stdout, then exit (cron, Vector scheduled mode, `| influx write`).
    Once,
    /// What this kernel and these privileges allow, probe by probe, and why not.
    Doctor,
    /// Print the full default configuration, commented.
    PrintConfig,
    /// Whether the running instance gathers (its health file, see `health_file`): exit 0 when
    /// healthy, 1 otherwise. Loads no plugin, needs no privileges: for readiness and liveness
    /// probes.
    Health {
        /// The health file to read (the config's `health_file`).
        #[arg(long, value_name = "PATH", default_value = health::DEFAULT_PATH)]
        file: PathBuf,
        /// Unhealthy after this many seconds without a gather. Default: what the instance
        /// wrote (three intervals, at least 30 s).
        #[arg(long, value_name = "SECS")]
        max_age_secs: Option<u64>,
    },
}

/// Writes one log line to stderr with Telegraf's level prefix. Also the plugin's log callback.
pub extern "C" fn log_line(level: LogLevel, message: abi_stable::std_types::RStr<'_>) {
    use std::io::Write as _;
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{}{}", level.telegraf_prefix(), message.as_str());
}

/// Logs an error with its whole cause chain on one line.
pub fn log_error(error: &anyhow::Error) {
    log_line(LogLevel::Error, format!("{error:#}").as_str().into());
}

/// A failure with the exit code it calls for.
#[derive(Debug)]
pub struct Failure {
    /// The process exit code (1 or 2).
    pub code: i32,
    /// What went wrong.
    pub error: anyhow::Error,
}

impl Failure {
    /// A failure that exits with code 1.
    pub fn other(error: anyhow::Error) -> Failure {
        Failure { code: 1, error }
    }
}

fn main() {
    let cli = Cli::parse();
    let code = match modes::run(&cli) {
        Ok(()) => 0,
        Err(failure) => {
            log_error(&failure.error);
            failure.code
        }
    };
    std::process::exit(code);
}

//! The modes: Telegraf execd, Vector-style streaming, one-shot, doctor and print-config.

use crate::{
    health::{self, HealthFile},
    load, log_line,
    stop::{Next, Stops},
    Cli, Failure, Mode,
};
use abi_stable::std_types::{RResult, RVec};
use anyhow::anyhow;
use flowlens_abi::{CollectorBox, ErrorKind, HostCallbacks, LogLevel, PluginError};
use std::{
    io::{self, Write},
    time::{Duration, Instant},
};

fn plugin_failure(error: PluginError) -> Failure {
    Failure {
        code: if error.kind == ErrorKind::Config {
            2
        } else {
            1
        },
        error: anyhow!("{}", error.message),
    }
}

/// Reads the config file named by `--config`, or none.
fn config_text(cli: &Cli) -> Result<(String, String), Failure> {
    match &cli.config {
        None => Ok((String::new(), "built-in defaults".to_string())),
        Some(path) => {
            let meta = std::fs::metadata(path).map_err(|e| Failure {
                code: 2,
                error: anyhow!("cannot read config {}: {e}", path.display()),
            })?;
            if meta.len() > 1 << 20 {
                return Err(Failure {
                    code: 2,
                    error: anyhow!("config {} is larger than 1 MiB", path.display()),
                });
            }
            let text = std::fs::read_to_string(path).map_err(|e| Failure {
                code: 2,
                error: anyhow!("cannot read config {}: {e}", path.display()),
            })?;
            Ok((text, path.display().to_string()))
        }
    }
}

/// Writes one gather's bytes and flushes. `Ok(false)` means the reader went away (exit 0).
fn write_batch(bytes: &[u8]) -> Result<bool, Failure> {
    let mut out = io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(Failure::other(anyhow!("cannot write to stdout: {e}"))),
    }
}

/// One gather written to stdout (and recorded in the health file, when there is one).
/// `Ok(false)`: stdout is closed.
fn gather_once(
    collector: &mut CollectorBox,
    buf: &mut RVec<u8>,
    health: &mut Option<HealthFile>,
) -> Result<bool, Failure> {
    buf.clear();
    match collector.gather(buf) {
        RResult::ROk(_) => {
            // The health file first: once the agent has the batch, the file says so (and is
            // closed again).
            if let Some(h) = health {
                if let Err(e) = h.gathered(buf) {
                    log_line(
                        LogLevel::Warn,
                        format!("health file: {e}; no longer written")
                            .as_str()
                            .into(),
                    );
                    *health = None;
                }
            }
            write_batch(buf)
        }
        RResult::RErr(e) => Err(plugin_failure(e)),
    }
}

/// Why a run stopped (logged), or `None` when `once` simply finished.
type Stopped = Option<&'static str>;

/// Telegraf execd, signal = "STDIN": one gather per newline read; stdin EOF ends it.
fn telegraf(
    collector: &mut CollectorBox,
    stops: &Stops,
    health: &mut Option<HealthFile>,
) -> Result<Stopped, Failure> {
    let mut buf = RVec::new();
    loop {
        match stops.next(None) {
            Ok(Next::Line | Next::Tick) => {
                if !gather_once(collector, &mut buf, health)? {
                    stops.stop("stdout closed");
                }
            }
            Ok(Next::Stop(reason)) => return Ok(Some(reason)),
            Err(e) => return Err(Failure::other(anyhow!("cannot read stdin: {e}"))),
        }
    }
}

/// Self-timed gathers every `interval`, the first at once; stdin is never read (Vector gives
/// /dev/null), so its EOF does not stop it. A late gather delays the next tick, none is skipped.
fn stream(
    collector: &mut CollectorBox,
    stops: &Stops,
    interval: Duration,
    health: &mut Option<HealthFile>,
) -> Result<Stopped, Failure> {
    let mut buf = RVec::new();
    let mut tick = Instant::now();
    loop {
        match stops.next(Some(tick)) {
            Ok(Next::Tick | Next::Line) => {
                if !gather_once(collector, &mut buf, health)? {
                    stops.stop("stdout closed");
                }
                tick += interval;
                let now = Instant::now();
                if tick < now {
                    tick = now + interval;
                }
            }
            Ok(Next::Stop(reason)) => return Ok(Some(reason)),
            Err(e) => return Err(Failure::other(anyhow!("{e}"))),
        }
    }
}

/// One gather, unless a stop came during start-up; a stop during the gather is reported.
fn once(collector: &mut CollectorBox, stops: &Stops) -> Result<Stopped, Failure> {
    if stops.requested().is_none() && !gather_once(collector, &mut RVec::new(), &mut None)? {
        stops.stop("stdout closed");
    }
    Ok(stops.requested())
}

fn doctor(plugin_path: &std::path::Path, collector: &CollectorBox) -> Result<(), Failure> {
    let mut text = format!(
        "ok      plugin: {} (ABI {})\n",
        plugin_path.display(),
        env!("CARGO_PKG_VERSION")
    );
    let checks = collector.doctor();
    let failed = checks.iter().filter(|c| !c.ok).count();
    for check in checks.iter() {
        let status = if check.ok { "ok" } else { "FAILED" };
        text.push_str(&format!("{status:<7} {}: {}\n", check.name, check.detail));
    }
    text.push_str(&format!("{} checks, {} failed\n", checks.len() + 1, failed));
    write_batch(text.as_bytes())?;
    // Exit 1 when something is wrong, so that doctor can serve as a readiness check.
    if failed > 0 {
        return Err(Failure::other(anyhow!(
            "doctor: {failed} of {} checks failed",
            checks.len() + 1
        )));
    }
    Ok(())
}

/// `flowlens health`: reads the health file; healthy: one line on stdout, exit 0; else the
/// reason as an error line on stderr, exit 1.
fn health_check(file: &std::path::Path, max_age_secs: Option<u64>) -> Result<(), Failure> {
    let verdict = health::check(
        file,
        max_age_secs.map(Duration::from_secs),
        std::time::SystemTime::now(),
    );
    if verdict.healthy {
        write_batch(format!("{}\n", verdict.text).as_bytes()).map(|_| ())
    } else {
        Err(Failure::other(anyhow!("{}", verdict.text)))
    }
}

/// Runs the mode the command line asks for.
pub fn run(cli: &Cli) -> Result<(), Failure> {
    if let Mode::Health { file, max_age_secs } = &cli.mode {
        return health_check(file, *max_age_secs);
    }
    // First, before any thread exists: the stop signals must be blocked in all of them.
    let stops = match cli.mode {
        Mode::Telegraf | Mode::Stream | Mode::Once => Some(
            Stops::install()
                .map_err(|e| Failure::other(anyhow!("cannot set up signal handling: {e}")))?,
        ),
        Mode::Doctor | Mode::PrintConfig | Mode::Health { .. } => None,
    };
    let path = load::find_plugin(cli.plugin.as_deref());
    let module = load::load_plugin(&path)?;
    if cli.mode == Mode::PrintConfig {
        let text = (module.default_config())();
        return write_batch(text.as_bytes()).map(|_| ());
    }
    let (text, source) = config_text(cli)?;
    let host = HostCallbacks {
        log: log_line,
        max_level: LogLevel::Debug,
        for_doctor: cli.mode == Mode::Doctor,
    };
    if let Some(stops) = &stops {
        stops
            .watch_stdout()
            .map_err(|e| Failure::other(anyhow!("cannot watch stdout: {e}")))?;
        if cli.mode == Mode::Telegraf {
            stops
                .read_stdin()
                .map_err(|e| Failure::other(anyhow!("cannot read stdin: {e}")))?;
        }
    }
    let mut collector = match (module.create())(text.as_str().into(), source.as_str().into(), host)
    {
        RResult::ROk(c) => c,
        RResult::RErr(e) => return Err(plugin_failure(e)),
    };
    let settings = collector.settings();
    let interval = Duration::from_secs(settings.interval_secs);
    let mut health = match cli.mode {
        Mode::Telegraf | Mode::Stream if !settings.health_file.is_empty() => {
            let file = std::path::Path::new(settings.health_file.as_str());
            // SAFETY: geteuid has no preconditions.
            let root = unsafe { libc::geteuid() } == 0;
            // The default path is root's (/run): another user running with the defaults is
            // told only at debug level.
            let level = if root || file != std::path::Path::new(health::DEFAULT_PATH) {
                LogLevel::Warn
            } else {
                LogLevel::Debug
            };
            HealthFile::create(file, interval, |w| log_line(level, w.into()))
        }
        _ => None,
    };
    if let Some(stops) = &stops {
        stops.started();
    }
    let result = match (&cli.mode, &stops) {
        (Mode::Doctor, _) => doctor(&path, &collector).map(|()| None),
        (Mode::Once, Some(stops)) => once(&mut collector, stops),
        (Mode::Telegraf, Some(stops)) => telegraf(&mut collector, stops, &mut health),
        (Mode::Stream, Some(stops)) => stream(&mut collector, stops, interval, &mut health),
        _ => unreachable!("print-config and health are handled above; the run modes have Stops"),
    };
    if let Some(h) = health {
        match &result {
            Ok(_) => h.remove(),
            Err(failure) => h.failed(&format!("{:#}", failure.error)),
        }
    }
    if let Ok(Some(reason)) = &result {
        log_line(
            LogLevel::Info,
            format!("stopping: {reason}").as_str().into(),
        );
    }
    // Dropping the collector detaches everything it attached, before the process exits (main
    // ends with process::exit, which does not wait for the stdin thread still in read()).
    drop(collector);
    result.map(|_| ())
}

//! The modes: Telegraf execd, Vector-style streaming, one-shot, doctor and print-config.

use crate::{load, log_line, Cli, Failure, Mode};
use abi_stable::std_types::{RResult, RVec};
use anyhow::anyhow;
use flowlens_abi::{CollectorBox, ErrorKind, HostCallbacks, LogLevel, PluginError};
use std::{
    io::{self, Write},
    time::Duration,
};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    signal::unix::{signal, SignalKind},
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

/// One gather written to stdout. `Ok(false)`: stdout is closed.
fn gather_once(collector: &mut CollectorBox, buf: &mut RVec<u8>) -> Result<bool, Failure> {
    buf.clear();
    match collector.gather(buf) {
        RResult::ROk(_) => write_batch(buf),
        RResult::RErr(e) => Err(plugin_failure(e)),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(|e| Failure::other(anyhow!("cannot start the event loop: {e}")))
}

/// Telegraf execd, signal = "STDIN": one gather per line read; stdin EOF ends it.
async fn telegraf(collector: &mut CollectorBox) -> Result<(), Failure> {
    let mut term = signal(SignalKind::terminate()).map_err(|e| Failure::other(e.into()))?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| Failure::other(e.into()))?;
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut buf = RVec::new();
    loop {
        tokio::select! {
            line = lines.next_line() => match line {
                Ok(Some(_)) => {
                    if !gather_once(collector, &mut buf)? {
                        return Ok(());
                    }
                }
                Ok(None) => return Ok(()),
                Err(e) => return Err(Failure::other(anyhow!("cannot read stdin: {e}"))),
            },
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
        }
    }
}

/// Self-timed gathers every `interval`; stdin is never read (Vector gives /dev/null).
async fn stream(collector: &mut CollectorBox, interval: Duration) -> Result<(), Failure> {
    let mut term = signal(SignalKind::terminate()).map_err(|e| Failure::other(e.into()))?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| Failure::other(e.into()))?;
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut buf = RVec::new();
    loop {
        tokio::select! {
            _ = ticks.tick() => {
                if !gather_once(collector, &mut buf)? {
                    return Ok(());
                }
            }
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
        }
    }
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
    write_batch(text.as_bytes()).map(|_| ())
}

/// Runs the mode the command line asks for.
pub fn run(cli: &Cli) -> Result<(), Failure> {
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
    };
    let mut collector = match (module.create())(text.as_str().into(), source.as_str().into(), host)
    {
        RResult::ROk(c) => c,
        RResult::RErr(e) => return Err(plugin_failure(e)),
    };
    let interval = Duration::from_secs(collector.settings().interval_secs);
    let result = match cli.mode {
        Mode::Once => gather_once(&mut collector, &mut RVec::new()).map(|_| ()),
        Mode::Doctor => doctor(&path, &collector),
        Mode::Telegraf => runtime()?.block_on(telegraf(&mut collector)),
        Mode::Stream => runtime()?.block_on(stream(&mut collector, interval)),
        Mode::PrintConfig => unreachable!("handled above"),
    };
    // Dropping the collector detaches everything it attached, before the process exits.
    drop(collector);
    result
}

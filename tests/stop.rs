//! Every way of stopping flowlens, in every mode, as one table: stdin EOF, SIGTERM, SIGINT,
//! SIGHUP and stdout closed by its reader, in `telegraf`, `stream` and `once`, with stdin held
//! open or /dev/null, during start-up, between gathers or during one. Each cell runs the real
//! binary with the eBPF collector and checks: exit 0 within 1 s of the stimulus, one
//! `I! stopping: <reason>` line, stdout made of whole batches of valid line protocol, and none of
//! the BPF programs the process held still loaded. Where a stimulus does not stop a mode (stdin
//! EOF in `stream`, a SIGHUP the parent ignores), the cell checks that it keeps running, then
//! stops it with SIGTERM.

use flowlens_tests::{session::*, *};
use std::{
    collections::HashSet,
    io::{BufRead, BufReader, Read, Write},
    os::unix::process::CommandExt,
    process::{Child, ChildStdin, ChildStdout, Stdio},
    sync::mpsc,
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

/// The bound of the contract: exit within 1 s of the stimulus.
const BOUND: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Telegraf,
    Stream,
    Once,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Input {
    /// A pipe the test keeps open.
    Held,
    /// /dev/null: EOF at once.
    Null,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stimulus {
    /// The test closes its end of the stdin pipe (for `Input::Null`: EOF from the start).
    Eof,
    /// A signal to the process.
    Signal(i32),
    /// A SIGHUP while the parent had set SIGHUP to ignored (`nohup`).
    IgnoredHup,
    /// The test closes its end of the stdout pipe.
    StdoutClosed,
    /// Nothing: `once` ends after its gather (timed from the batch's arrival).
    OwnEnd,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum When {
    /// As soon as the process has blocked the stop signals (the first thing a run does), before
    /// it loads the plugin; with stdin /dev/null, EOF from the spawn.
    Startup,
    /// While it loads its programs (its first program fd seen): during start-up or, if start-up
    /// ends first, just after it.
    Loading,
    /// 100 ms after a gather's batch arrived.
    Between,
    /// `telegraf`: right after writing the newline that asks for a gather; `stream`: at the tick
    /// (1 s after the last batch arrived). It lands during the gather or just after it.
    During,
}

#[derive(Clone, Copy, Debug)]
enum Expect {
    /// Exit 0, logging `I! stopping: <reason>` (no line when `once` just finishes).
    Stops(Option<&'static str>),
    /// Keeps running (a gather comes after the stimulus); then SIGTERM stops it.
    KeepsRunning,
}

#[derive(Clone, Copy, Debug)]
struct Cell {
    mode: Mode,
    input: Input,
    stimulus: Stimulus,
    when: When,
    expect: Expect,
}

impl Cell {
    fn name(&self) -> String {
        let stimulus = match self.stimulus {
            Stimulus::Eof => "stdin EOF".to_string(),
            Stimulus::Signal(s) => signal_name(s).to_string(),
            Stimulus::IgnoredHup => "SIGHUP, ignored by parent".to_string(),
            Stimulus::StdoutClosed => "stdout closed".to_string(),
            Stimulus::OwnEnd => "its gather done".to_string(),
        };
        let input = match self.input {
            Input::Held => "stdin held",
            Input::Null => "stdin /dev/null",
        };
        format!(
            "{:<8} {:<15} {:<25} {:<8}",
            format!("{:?}", self.mode).to_lowercase(),
            input,
            stimulus,
            format!("{:?}", self.when).to_lowercase()
        )
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        libc::SIGHUP => "SIGHUP",
        _ => "signal",
    }
}

/// Every cell of the table.
fn cells() -> Vec<Cell> {
    use Expect::*;
    use Input::*;
    use Mode::*;
    use Stimulus::*;
    use When::*;
    let signals = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP];
    let mut cells = Vec::new();
    let mut add = |mode, input, stimulus, when, expect| {
        cells.push(Cell {
            mode,
            input,
            stimulus,
            when,
            expect,
        })
    };
    // While it loads its programs: it exits at once (or, if start-up ended first, before any
    // gather of telegraf's; stream and once may have begun theirs).
    add(
        Telegraf,
        Held,
        Signal(libc::SIGTERM),
        Loading,
        Stops(Some("SIGTERM")),
    );
    add(
        Stream,
        Null,
        Signal(libc::SIGTERM),
        Loading,
        Stops(Some("SIGTERM")),
    );
    add(
        Once,
        Null,
        Signal(libc::SIGTERM),
        Loading,
        Stops(Some("SIGTERM")),
    );
    // During start-up, in every mode: it exits at once, before any gather.
    for (mode, input) in [
        (Telegraf, Held),
        (Stream, Held),
        (Stream, Null),
        (Once, Held),
        (Once, Null),
    ] {
        for sig in signals {
            add(
                mode,
                input,
                Signal(sig),
                Startup,
                Stops(Some(signal_name(sig))),
            );
        }
        add(
            mode,
            input,
            StdoutClosed,
            Startup,
            Stops(Some("stdout closed")),
        );
    }
    // telegraf with stdin held open: every stimulus, between gathers and during one.
    for when in [Between, During] {
        add(Telegraf, Held, Eof, when, Stops(Some("stdin closed")));
        for sig in signals {
            add(
                Telegraf,
                Held,
                Signal(sig),
                when,
                Stops(Some(signal_name(sig))),
            );
        }
        add(
            Telegraf,
            Held,
            StdoutClosed,
            when,
            Stops(Some("stdout closed")),
        );
    }
    add(Telegraf, Held, IgnoredHup, Between, KeepsRunning);
    // telegraf with stdin /dev/null: EOF from the start, so it exits during start-up (no other
    // stimulus can reach it); timed from the spawn.
    add(Telegraf, Null, Eof, Startup, Stops(Some("stdin closed")));
    // stream ignores stdin: its EOF does not stop it; everything else does, stdin open or not.
    add(Stream, Held, Eof, Between, KeepsRunning);
    for input in [Held, Null] {
        for when in [Between, During] {
            for sig in signals {
                add(
                    Stream,
                    input,
                    Signal(sig),
                    when,
                    Stops(Some(signal_name(sig))),
                );
            }
            add(
                Stream,
                input,
                StdoutClosed,
                when,
                Stops(Some("stdout closed")),
            );
        }
    }
    // once ends by itself after its one gather, stdin open or not (it never reads it).
    for input in [Held, Null] {
        add(Once, input, OwnEnd, During, Stops(None));
    }
    cells
}

/// Reads flowlens's stdout on a thread: every byte, and the arrival of each batch (its
/// `flowlens:internal` line). With `close`, it stops reading after `close.0` batches, waits for
/// the word and closes the pipe (the reader going away).
fn read_stdout(
    stdout: ChildStdout,
    close: Option<(usize, mpsc::Receiver<()>)>,
) -> (mpsc::Receiver<Instant>, JoinHandle<Vec<u8>>) {
    let (tx, rx) = mpsc::channel();
    let handle = thread::spawn(move || {
        let mut all = Vec::new();
        let mut reader = BufReader::new(stdout);
        let mut batches = 0;
        loop {
            if let Some((after, word)) = &close {
                if batches == *after {
                    let _ = word.recv();
                    return all;
                }
            }
            let mut line = Vec::new();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return all,
                Ok(_) => {}
            }
            all.extend_from_slice(&line);
            if line.starts_with(b"flowlens:internal") {
                batches += 1;
                let _ = tx.send(Instant::now());
            }
        }
    });
    (rx, handle)
}

/// Whether `pid` blocks SIGTERM (flowlens does from the start of a run).
fn blocks_sigterm(pid: u32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigBlk:"))
        .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (libc::SIGTERM - 1)) != 0)
}

fn kill(pid: u32, sig: i32) {
    // SAFETY: signalling our own child, which has not been reaped.
    let rc = unsafe { libc::kill(pid as i32, sig) };
    assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
}

/// What one cell measured.
struct Outcome {
    took: Duration,
    batches: usize,
}

/// Kills the child if the cell fails half-way.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn run(cell: &Cell, dir: &TempDir) -> Outcome {
    let interval = match (cell.mode, cell.when, cell.expect) {
        (Mode::Stream, When::During, _) | (Mode::Stream, _, Expect::KeepsRunning) => 1,
        _ => 60,
    };
    let config = dir.join("flowlens.toml");
    std::fs::write(&config, format!("interval_secs = {interval}\n")).unwrap();
    let mode = format!("{:?}", cell.mode).to_lowercase();
    let mut cmd = flowlens(&["--config", config.to_str().unwrap(), &mode]);
    cmd.stdin(match cell.input {
        Input::Held => Stdio::piped(),
        Input::Null => Stdio::null(),
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let ignore_hup = cell.stimulus == Stimulus::IgnoredHup;
    // SAFETY: only signal(2), async-signal-safe, between fork and exec. Whatever the harness
    // ignores, the child starts with the default actions (and SIGHUP ignored where asked).
    unsafe {
        cmd.pre_exec(move || {
            for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
                libc::signal(sig, libc::SIG_DFL);
            }
            if ignore_hup {
                libc::signal(libc::SIGHUP, libc::SIG_IGN);
            }
            Ok(())
        });
    }
    let spawned = Instant::now();
    let mut child = cmd.spawn().unwrap();
    let pid = child.id();
    let mut stdin: Option<ChildStdin> = child.stdin.take();
    let stderr = child.stderr.take().unwrap();
    let stderr = thread::spawn(move || {
        let mut text = String::new();
        let _ = BufReader::new(stderr).read_to_string(&mut text);
        text
    });
    let (close_tx, close_rx) = mpsc::channel();
    let close = (cell.stimulus == Stimulus::StdoutClosed).then(|| {
        (
            usize::from(!matches!(cell.when, When::Startup | When::Loading)),
            close_rx,
        )
    });
    let (arrivals, output) = read_stdout(child.stdout.take().unwrap(), close);
    let mut child = Running(child);
    let ask = |stdin: &mut Option<ChildStdin>| {
        let pipe = stdin.as_mut().expect("stdin held");
        pipe.write_all(b"\n").unwrap();
        pipe.flush().unwrap();
    };
    let batch = |what: &str| {
        arrivals
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("{}: no batch {what}", cell.name()))
    };
    let mut ours: HashSet<u32> = HashSet::new();

    // Bring the process to the moment of the stimulus.
    let mut last_batch = None;
    match cell.when {
        When::Startup => {
            if cell.stimulus != Stimulus::Eof {
                let deadline = Instant::now() + Duration::from_secs(10);
                while !blocks_sigterm(pid) {
                    assert!(Instant::now() < deadline, "{}: never blocked", cell.name());
                    thread::sleep(Duration::from_micros(200));
                }
            }
        }
        When::Loading => {
            let deadline = Instant::now() + Duration::from_secs(10);
            while ours.is_empty() {
                assert!(Instant::now() < deadline, "{}: no program", cell.name());
                thread::sleep(Duration::from_micros(200));
                ours = program_ids_of(pid);
            }
        }
        When::Between | When::During => {
            if cell.mode == Mode::Telegraf {
                ask(&mut stdin);
            }
            if cell.stimulus != Stimulus::OwnEnd {
                last_batch = Some(batch("at start"));
                ours = program_ids_of(pid);
            }
        }
    }
    let stimulus = |stdin: &mut Option<ChildStdin>, stimulus: Stimulus| -> Instant {
        let at = Instant::now();
        match stimulus {
            Stimulus::Eof => drop(stdin.take()),
            Stimulus::Signal(sig) => kill(pid, sig),
            Stimulus::IgnoredHup => kill(pid, libc::SIGHUP),
            Stimulus::StdoutClosed => close_tx.send(()).unwrap(),
            Stimulus::OwnEnd => unreachable!(),
        }
        at
    };
    let mut t0 = match (cell.when, cell.stimulus) {
        (_, Stimulus::OwnEnd) => None,
        (When::Startup, Stimulus::Eof) => Some(spawned),
        (When::Startup | When::Loading, s) => Some(stimulus(&mut stdin, s)),
        (When::Between, s) => {
            thread::sleep(Duration::from_millis(100));
            Some(stimulus(&mut stdin, s))
        }
        (When::During, s) => {
            if cell.mode == Mode::Telegraf {
                ask(&mut stdin);
            } else {
                let tick = last_batch.unwrap() + Duration::from_secs(interval);
                thread::sleep(tick.saturating_duration_since(Instant::now()));
            }
            Some(stimulus(&mut stdin, s))
        }
    };
    if let Expect::KeepsRunning = cell.expect {
        if cell.mode == Mode::Telegraf {
            thread::sleep(Duration::from_millis(100));
            ask(&mut stdin);
        }
        batch("after the stimulus: it must keep running");
        assert!(
            child.0.try_wait().unwrap().is_none(),
            "{}: it stopped",
            cell.name()
        );
        t0 = Some(stimulus(&mut stdin, Stimulus::Signal(libc::SIGTERM)));
    }

    // Wait for the exit. Where the programs were not taken after a batch (start-up, `once`),
    // note those it holds meanwhile, every 5 ms (not more: the machine has 2 cores to share).
    let sample = matches!(cell.when, When::Startup | When::Loading) || t0.is_none();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut sampled = Instant::now() - Duration::from_secs(1);
    let (status, exited) = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break (status, Instant::now());
        }
        assert!(Instant::now() < deadline, "{}: still running", cell.name());
        if sample && sampled.elapsed() >= Duration::from_millis(5) {
            ours.extend(program_ids_of(pid));
            sampled = Instant::now();
        }
        thread::sleep(Duration::from_millis(1));
    };
    let output = output.join().unwrap();
    let stderr = stderr.join().unwrap();
    let t0 = t0.unwrap_or_else(|| batch("from once"));
    let took = exited.saturating_duration_since(t0);
    let name = cell.name();

    assert!(status.success(), "{name}: {status}\n{stderr}");
    assert!(took < BOUND, "{name}: exit took {took:?}\n{stderr}");
    let stopping: Vec<&str> = stderr.lines().filter(|l| l.contains("stopping")).collect();
    let want = match cell.expect {
        Expect::Stops(reason) => reason,
        Expect::KeepsRunning => Some("SIGTERM"),
    };
    let line = |reason: &str, suffix: &str| format!("I! stopping: {reason}{suffix}");
    match want {
        Some(reason) => {
            let allowed = match cell.when {
                When::Startup => vec![line(reason, " (during start-up)")],
                When::Loading => vec![line(reason, " (during start-up)"), line(reason, "")],
                When::Between | When::During => vec![line(reason, "")],
            };
            assert!(
                stopping.len() == 1 && allowed.iter().any(|l| l == stopping[0]),
                "{name}: {stopping:?}, not one of {allowed:?}:\n{stderr}"
            );
        }
        None => assert!(stopping.is_empty(), "{name}:\n{stderr}"),
    }
    assert!(!stderr.contains("E! "), "{name}:\n{stderr}");
    // stdout: whole batches of valid line protocol, nothing cut.
    let text = String::from_utf8(output).unwrap();
    flowlens_core::lineproto::validate(&text).unwrap_or_else(|e| panic!("{name}: {e}:\n{text}"));
    monotonic::checked(&text);
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "{name}: a partial line"
    );
    assert!(
        text.lines()
            .last()
            .is_none_or(|l| l.starts_with("flowlens:internal")),
        "{name}: a partial batch:\n{text}"
    );
    let batches = lines_of(&text, "flowlens:internal");
    for internal in &batches {
        assert!(
            internal.contains("events_received="),
            "{name}: the eBPF collector did not start: {internal}"
        );
        if in_ci() {
            assert!(
                internal.contains("probes_failed=0i"),
                "{name}: CI must load every probe: {internal}"
            );
        }
    }
    // How many batches: none after a stop during start-up; one per newline asked before stdin
    // EOF (the last one answered too); the gather a stop lands in, or not, otherwise.
    let expected = match (cell.mode, cell.when, cell.stimulus, cell.expect) {
        (_, When::Startup, _, _) | (Mode::Telegraf, When::Loading, _, _) => 0..=0,
        (_, When::Loading, _, _) => 0..=1,
        (_, _, _, Expect::KeepsRunning) => 2..=2,
        (_, _, Stimulus::OwnEnd | Stimulus::StdoutClosed, _) => 1..=1,
        (Mode::Telegraf, When::During, Stimulus::Eof, _) => 2..=2,
        (_, When::Between, _, _) => 1..=1,
        (_, When::During, _, _) => 1..=2,
    };
    assert!(
        expected.contains(&batches.len()),
        "{name}: {} batches, not {expected:?}:\n{text}",
        batches.len()
    );
    // Stopped before loading (`Startup`) it held none, stopped while loading some of them.
    let least = match cell.when {
        When::Startup => 0,
        When::Loading => 1,
        When::Between | When::During => 4,
    };
    assert!(
        ours.len() >= least,
        "{name}: the programs it held: {ours:?}\n{stderr}"
    );
    assert!(gone(&ours), "{name}: programs still loaded: {ours:?}");
    Outcome {
        took,
        batches: batches.len(),
    }
}

#[test]
fn every_way_of_stopping_exits_zero_within_a_second_with_probes_detached() {
    let Some(_serial) =
        root_test("every_way_of_stopping_exits_zero_within_a_second_with_probes_detached")
    else {
        return;
    };
    let dir = TempDir::new("stop");
    let started = Instant::now();
    let mut table = String::new();
    for cell in cells() {
        let outcome = run(&cell, &dir);
        let expect = match cell.expect {
            Expect::Stops(_) => "exit 0",
            Expect::KeepsRunning => "runs on; SIGTERM: exit 0",
        };
        let line = format!(
            "{} {:<25} {:>6.1} ms  {} batch(es)",
            cell.name(),
            expect,
            outcome.took.as_secs_f64() * 1e3,
            outcome.batches
        );
        eprintln!("{line}");
        table.push_str(&line);
        table.push('\n');
    }
    eprintln!("every cell in {:?}:\n{table}", started.elapsed());
}

//! Driving the real `flowlens` binary in tests, reading its output, and the kernel objects
//! (network namespaces, cgroup2 directories) that stand in for containers.

use crate::{flowlens, in_ci, monotonic::Checker, TempDir};
use flowlens_core::lineproto::{parse_lines, FieldValue, Point};
use std::{
    io::{BufRead, BufReader, Write},
    os::fd::AsRawFd,
    process::{Child, ChildStdin, ChildStdout, Stdio},
    sync::{mpsc, Arc, Mutex},
    time::{Duration, Instant},
};

/// Splits flowlens's stdout into gathers (each ends with its `flowlens:internal` line), stamped
/// when they arrive, on a thread. What is left at EOF comes as a last, partial batch. Every
/// batch passes through the monotonicity guard ([`crate::monotonic::Checker`]) as it arrives;
/// after a violation no more batches come, and the next receive (or the drop) fails the test
/// with it.
pub fn batches(stdout: ChildStdout) -> Batches {
    let (tx, rx) = mpsc::channel();
    let broken = Arc::new(Mutex::new(None));
    let verdict = Arc::clone(&broken);
    std::thread::spawn(move || {
        let mut checker = Checker::live();
        // Checks a batch; false (and the verdict kept) when the guard finds something.
        let mut check = |batch: &str| {
            let found = checker.violations(batch);
            if !found.is_empty() {
                *verdict.lock().unwrap_or_else(|e| e.into_inner()) = Some(format!(
                    "flowlens's output broke the monotonicity guard (tests/support/monotonic.rs):\n\
                     {}\nin the gather:\n{batch}",
                    found.join("\n")
                ));
            }
            found.is_empty()
        };
        let mut batch = String::new();
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) if !line.ends_with('\n') => {
                    // A line cut by the process's end (SIGKILL during a write): the test sees
                    // it, the guard reads the whole lines before it.
                    if !batch.is_empty() && !check(&batch) {
                        return;
                    }
                    batch.push_str(&line);
                    batch.push('\n');
                    let _ = tx.send((Instant::now(), batch));
                    return;
                }
                Ok(_) => batch.push_str(&line),
            }
            if line.starts_with("flowlens:internal") {
                let done = std::mem::take(&mut batch);
                if !check(&done) {
                    return;
                }
                let _ = tx.send((Instant::now(), done));
            }
        }
        if !batch.is_empty() && check(&batch) {
            let _ = tx.send((Instant::now(), batch));
        }
    });
    Batches { rx, broken }
}

/// The gathers of one flowlens process's stdout, checked ([`batches`]); the receiving methods of
/// [`mpsc::Receiver`].
pub struct Batches {
    rx: mpsc::Receiver<(Instant, String)>,
    broken: Arc<Mutex<Option<String>>>,
}

impl Batches {
    /// The next batch within `timeout`.
    pub fn recv_timeout(
        &self,
        timeout: Duration,
    ) -> Result<(Instant, String), mpsc::RecvTimeoutError> {
        let got = self.rx.recv_timeout(timeout);
        self.assert_clean();
        got
    }

    /// The next batch.
    pub fn recv(&self) -> Result<(Instant, String), mpsc::RecvError> {
        let got = self.rx.recv();
        self.assert_clean();
        got
    }

    /// Fails the test with the guard's verdict, if it found something.
    pub fn assert_clean(&self) {
        if let Some(verdict) = self.broken.lock().unwrap_or_else(|e| e.into_inner()).take() {
            panic!("{verdict}");
        }
    }

    /// Waits (at most `timeout`) for the end of stdout, checking what is left, then fails the
    /// test if the guard found something.
    pub fn drain(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.rx.recv_timeout(left) {
                Ok(_) => {}
                Err(_) => break,
            }
        }
        self.assert_clean();
    }
}

impl Iterator for Batches {
    type Item = (Instant, String);

    fn next(&mut self) -> Option<Self::Item> {
        self.recv().ok()
    }
}

impl Drop for Batches {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.assert_clean();
        }
    }
}

/// Most stderr lines a [`Session`] keeps (the first ones).
const MAX_LOG_LINES: usize = 10_000;

/// The real binary in Telegraf mode: one gather per newline.
pub struct Session {
    /// The flowlens process.
    pub child: Child,
    stdin: Option<ChildStdin>,
    batches: Batches,
    log: Arc<Mutex<Vec<String>>>,
    /// What the kernel holds that `flows_active` may not exceed ([`Session::bound_flows_active`]).
    flows_bound: Option<Box<dyn Fn() -> u64>>,
}

impl Session {
    /// Starts `flowlens --config <config> telegraf` and takes its first gather.
    pub fn start(config: &str) -> Session {
        Session::start_as(config, flowlens)
    }

    /// [`start`](Self::start), with the command `make` builds from flowlens's arguments (the
    /// binary run in another network namespace, say).
    pub fn start_as(config: &str, make: impl FnOnce(&[&str]) -> std::process::Command) -> Session {
        let dir = TempDir::new("collector");
        let path = dir.join("flowlens.toml");
        std::fs::write(&path, config).unwrap();
        let mut child = make(&["--config", path.to_str().unwrap(), "telegraf"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let rx = batches(child.stdout.take().unwrap());
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("flowlens: {line}");
                let mut kept = kept.lock().unwrap_or_else(|e| e.into_inner());
                if kept.len() < MAX_LOG_LINES {
                    kept.push(line);
                }
            }
        });
        let stdin = child.stdin.take();
        let mut session = Session {
            child,
            stdin,
            batches: rx,
            log,
            flows_bound: None,
        };
        let first = session.gather();
        if in_ci() {
            assert!(
                first.contains("probes_failed=0i"),
                "CI must load every probe:\n{first}"
            );
        }
        assert!(
            first.contains("events_received="),
            "the eBPF collector did not start:\n{first}"
        );
        session
    }

    /// One gather: a newline in, one batch out (checked to be valid line protocol). The wait
    /// ([`HANG`]) only detects a hang.
    pub fn gather(&mut self) -> String {
        let before = self.flows_bound.as_ref().map(|f| f());
        self.ask();
        let batch = self
            .next_batch(HANG)
            .unwrap_or_else(|| panic!("no batch within {} s", HANG.as_secs()));
        flowlens_core::lineproto::validate(&batch).unwrap();
        if let (Some(before), Some(bound)) = (before, &self.flows_bound) {
            // The kernel's count before and after the gather: flows_active, taken between the
            // two, is at most the larger.
            let most = before.max(bound());
            let active = crate::monotonic::flows_active(&batch).expect("flows_active");
            assert!(
                u64::try_from(active).is_ok_and(|a| a <= most),
                "flows_active={active} exceeds the {most} sockets the kernel holds \
                 (tests/support/monotonic.rs):\n{batch}"
            );
        }
        batch
    }

    /// From now on, every [`gather`](Self::gather) checks that `flows_active` does not exceed
    /// what `kernel` counts (such as [`crate::monotonic::kernel_sockets`]), read before and
    /// after it: for tests that know what the kernel holds while they gather.
    pub fn bound_flows_active(&mut self, kernel: impl Fn() -> u64 + 'static) {
        self.flows_bound = Some(Box::new(kernel));
    }

    /// Asks for a gather (a newline) without waiting for it.
    pub fn ask(&mut self) {
        let stdin = self.stdin.as_mut().unwrap();
        stdin.write_all(b"\n").unwrap();
        stdin.flush().unwrap();
    }

    /// The next batch of stdout (at EOF, what is left, possibly a partial batch), or `None`
    /// when nothing came within `timeout` or stdout is closed with nothing left.
    pub fn next_batch(&self, timeout: Duration) -> Option<String> {
        self.batches.recv_timeout(timeout).ok().map(|(_, b)| b)
    }

    /// The stderr lines so far (the first 10 000).
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Closes stdin and waits for exit 0.
    pub fn finish(mut self) {
        drop(self.stdin.take());
        let status = self.child.wait().unwrap();
        assert!(status.success(), "{status}");
    }
}

/// How long a test waits for a batch before it calls flowlens hung. Only a hang may fail a test,
/// never a slow machine: the first batch comes after the start-up, and under QEMU's emulation,
/// three guests on two cores with builds beside them, a start-up among 10,000 churned
/// connections took 33 s before its first gather, and one gather after a thousand connections
/// over 20 s.
pub const HANG: Duration = Duration::from_secs(300);

impl Drop for Session {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
        if !std::thread::panicking() {
            // What came after the last batch the test read is checked too.
            self.batches.drain(HANG);
        }
    }
}

/// Whether `point` is a line of `measurement` whose tags include all of `tags`.
pub fn matches(point: &Point, measurement: &str, tags: &[(&str, &str)]) -> bool {
    point.measurement == measurement
        && tags
            .iter()
            .all(|(k, v)| point.tags.iter().any(|(pk, pv)| pk == k && pv == v))
}

/// The field `field` of the first line of `measurement` whose tags include all of `tags`; None
/// when there is no such line (a panic when the line lacks the field).
pub fn field_of(
    text: &str,
    measurement: &str,
    tags: &[(&str, &str)],
    field: &str,
) -> Option<FieldValue> {
    let points = parse_lines(text).unwrap();
    let point = points.iter().find(|p| matches(p, measurement, tags))?;
    match point.fields.iter().find(|(k, _)| k == field) {
        Some((_, v)) => Some(v.clone()),
        None => panic!("{measurement} has no {field}"),
    }
}

/// The integer field of the line of `measurement` whose tags include all of `tags`; 0 when
/// there is no such line.
pub fn value(text: &str, measurement: &str, tags: &[(&str, &str)], field: &str) -> i64 {
    match field_of(text, measurement, tags, field) {
        None => 0,
        Some(FieldValue::Int(v)) => v,
        other => panic!("{measurement} {field}: {other:?}"),
    }
}

/// The integer field summed over every line of `measurement` whose tags include all of `tags`
/// (an address's `host:` series of every network namespace, say); 0 when there is none.
pub fn sum(text: &str, measurement: &str, tags: &[(&str, &str)], field: &str) -> i64 {
    parse_lines(text)
        .unwrap()
        .iter()
        .filter(|p| matches(p, measurement, tags))
        .map(|p| match p.fields.iter().find(|(k, _)| k == field) {
            Some((_, FieldValue::Int(v))) => *v,
            None => 0,
            other => panic!("{measurement} {field}: {other:?}"),
        })
        .sum()
}

/// Runs `f` on a thread that entered the network namespace `ns` (sockets it creates stay there).
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    spawn_in_netns(ns, f).join().unwrap()
}

/// Runs `f` on a thread of its own that entered the network namespace `ns`, without waiting.
pub fn spawn_in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap();
        // SAFETY: a valid namespace fd; setns only affects this thread.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
}

/// A cgroup2 directory under the unified hierarchy, removed on drop.
pub struct Cgroup(pub std::path::PathBuf);

impl Cgroup {
    /// Creates `<cgroup2 mount>/<name>` (parents too).
    pub fn new(name: &str) -> Cgroup {
        let path = crate::cgroup2_root().join(name);
        let _ = std::fs::remove_dir(&path);
        std::fs::create_dir_all(&path).unwrap();
        Cgroup(path)
    }

    /// Its cgroup id (the directory's inode).
    pub fn id(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(&self.0).unwrap().ino()
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // Processes must have left; retry briefly while they exit.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.0).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The ids of the loaded BPF programs named `fl_*`.
pub fn flowlens_program_ids() -> std::collections::HashSet<u32> {
    let list = crate::sh("bpftool", &["prog", "list"]);
    list.lines()
        .filter(|l| l.contains(" name fl_"))
        .filter_map(|l| l.split(':').next()?.trim().parse().ok())
        .collect()
}

/// The kernel frees a program after its last fd closes and an RCU grace period: wait until
/// none of `ours` is loaded.
pub fn gone(ours: &std::collections::HashSet<u32>) -> bool {
    for _ in 0..50 {
        if flowlens_program_ids().is_disjoint(ours) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// The ids of the BPF programs process `pid` holds now (its program and link fds say
/// `prog_id:` in /proc/<pid>/fdinfo); empty once it has exited. Other flowlens processes on the
/// machine do not count.
pub fn program_ids_of(pid: u32) -> std::collections::HashSet<u32> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return Default::default();
    };
    fds.filter_map(Result::ok)
        .filter_map(|fd| std::fs::read_to_string(fd.path()).ok())
        .flat_map(|info| {
            info.lines()
                .filter_map(|l| l.strip_prefix("prog_id:")?.trim().parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

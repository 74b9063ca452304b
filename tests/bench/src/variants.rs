//! What is attached while a workload runs: nothing (baseline), the empty programs (floor),
//! flowlens gathering every second, or the peer (a bpftrace script counting the same events per
//! cgroup). Each variant runs its userspace side, if any, as a child process whose CPU time is
//! counted with the workload's.

use crate::floor::Floor;
use anyhow::{bail, Context, Result};
use std::{
    io::{BufRead, BufReader},
    process::{Child, ChildStdin, Command, Stdio},
    sync::{mpsc, Arc, Mutex},
    time::Duration,
};

/// A variant of the cost-to-host runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// Nothing attached.
    Baseline,
    /// The collector's three hooks with empty programs.
    Floor,
    /// flowlens (the library, in a child process) gathering every second.
    Flowlens,
    /// The same with `rtt_source = "segment"` (RTT also refreshed on every received segment).
    FlowlensSegment,
    /// bpftrace counting the same events per cgroup, printing its maps every second.
    Peer,
}

impl Variant {
    /// Every variant; the baseline first.
    pub const ALL: [Variant; 5] = [
        Variant::Baseline,
        Variant::Floor,
        Variant::Flowlens,
        Variant::FlowlensSegment,
        Variant::Peer,
    ];

    /// Its name in the table.
    pub fn name(self) -> &'static str {
        match self {
            Variant::Baseline => "baseline",
            Variant::Floor => "floor",
            Variant::Flowlens => "flowlens",
            Variant::FlowlensSegment => "flowlens, rtt_source=segment",
            Variant::Peer => "peer (bpftrace)",
        }
    }
}

/// The bpftrace program of the peer: the same three events flowlens hooks, counted (and bytes
/// summed) per cgroup, printed every second like a gather. bpftrace 0.17 (Debian 12) has no
/// `rawtracepoint`, and kprobes/fentry are refused here, so it uses the classic tracepoints.
pub const PEER_SCRIPT: &str = r#"
tracepoint:sock:inet_sock_set_state { @states[cgroup, args->newstate] = count(); }
tracepoint:sock:sock_send_length { @sends[cgroup] = count(); @sent[cgroup] = sum(args->ret); }
tracepoint:sock:sock_recv_length { @recvs[cgroup] = count(); @rcvd[cgroup] = sum(args->ret); }
interval:s:1 { print(@states); print(@sends); print(@sent); print(@recvs); print(@rcvd); printf("tick\n"); }
"#;

/// What the flowlens child reported in its latest gathers.
#[derive(Debug, Default, Clone)]
pub struct AgentStats {
    /// Gathers seen.
    pub gathers: u64,
    /// `gather_duration_ms` of every gather.
    pub gather_ms: Vec<f64>,
    /// `num_flows` of the latest gather.
    pub num_flows: u64,
    /// `events_lost` of the latest gather.
    pub events_lost: u64,
    /// `probes_attached` of the latest gather.
    pub probes_attached: u64,
}

/// Reads an integer or float field `key=` from a line-protocol line.
pub fn field(line: &str, key: &str) -> Option<f64> {
    let fields = line.split(' ').nth(1)?;
    fields.split(',').find_map(|kv| {
        let v = kv.strip_prefix(key)?.strip_prefix('=')?;
        v.trim_end_matches('i').parse().ok()
    })
}

/// A child process with its CPU time readable from /proc.
pub struct ChildProc {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl ChildProc {
    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// utime + stime of the process (all its threads), in seconds.
    pub fn cpu_secs(&self) -> f64 {
        proc_cpu_secs(self.child.id()).unwrap_or(0.0)
    }
}

impl Drop for ChildProc {
    fn drop(&mut self) {
        // Closing stdin ends the flowlens child cleanly; bpftrace needs a signal.
        if self.stdin.take().is_none() {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        }
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// utime + stime of a process, in seconds.
pub fn proc_cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some(ticks / hz)
}

/// The flowlens child: this executable's `agent` mode, with its gathers parsed.
pub struct Agent {
    /// The process.
    pub proc: ChildProc,
    /// What its gathers said.
    pub stats: Arc<Mutex<AgentStats>>,
}

impl Agent {
    /// Starts `flowlens-bench agent` with `max_flows` and waits for its first gather.
    pub fn start(max_flows: u32) -> Result<Agent> {
        Agent::start_with(max_flows, "gather")
    }

    /// [`Agent::start`] with an `rtt_source` ("gather" or "segment").
    pub fn start_with(max_flows: u32, rtt_source: &str) -> Result<Agent> {
        let exe = std::env::current_exe()?;
        let mut child = Command::new(exe)
            .args(["agent", "--max-flows", &max_flows.to_string()])
            .args(["--rtt-source", rtt_source])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot start the flowlens child")?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped");
        let stats = Arc::new(Mutex::new(AgentStats::default()));
        let (tx, rx) = mpsc::channel();
        {
            let stats = stats.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    let mut s = stats.lock().unwrap();
                    if line.starts_with("iface:flows,") {
                        s.num_flows = field(&line, "num_flows").unwrap_or(0.0) as u64;
                    } else if line.starts_with("flowlens:internal,") {
                        s.gathers += 1;
                        if let Some(ms) = field(&line, "gather_duration_ms") {
                            s.gather_ms.push(ms);
                        }
                        s.events_lost = field(&line, "events_lost").unwrap_or(0.0) as u64;
                        s.probes_attached = field(&line, "probes_attached").unwrap_or(0.0) as u64;
                        let _ = tx.send(());
                    }
                }
            });
        }
        let agent = Agent {
            proc: ChildProc { child, stdin },
            stats,
        };
        rx.recv_timeout(Duration::from_secs(30))
            .context("the flowlens child did not gather within 30 s")?;
        let attached = agent.stats.lock().unwrap().probes_attached;
        if attached == 0 {
            bail!("the flowlens child attached no probe (see its log above)");
        }
        Ok(agent)
    }

    /// Waits until a gather reports at least `flows` active flows (at most `timeout`).
    pub fn wait_flows(&self, flows: u64, timeout: Duration) -> Result<u64> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let n = self.stats.lock().unwrap().num_flows;
            if n >= flows {
                return Ok(n);
            }
            if std::time::Instant::now() > deadline {
                bail!("flowlens reports {n} active flows, expected at least {flows}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits for `n` more gathers.
    pub fn wait_gathers(&self, n: u64) {
        let start = self.stats.lock().unwrap().gathers;
        while self.stats.lock().unwrap().gathers < start + n {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Starts the peer, waits until its probes are attached (its first tick).
pub fn start_peer() -> Result<ChildProc> {
    let mut child = Command::new("bpftrace")
        .args(["-e", PEER_SCRIPT])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run bpftrace (apt-get install bpftrace)")?;
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line == "tick" {
                let _ = tx.send(());
            }
        }
    });
    let errors = Arc::new(Mutex::new(String::new()));
    {
        let errors = errors.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut e = errors.lock().unwrap();
                e.push_str(&line);
                e.push('\n');
            }
        });
    }
    let mut proc = ChildProc { child, stdin: None };
    if rx.recv_timeout(Duration::from_secs(30)).is_err() {
        let status = proc.child.try_wait().ok().flatten();
        bail!(
            "bpftrace did not start ({status:?}): {}",
            errors.lock().unwrap().trim()
        );
    }
    Ok(proc)
}

/// An attached variant; detached on drop.
pub enum Active {
    /// Nothing.
    Baseline,
    /// The empty programs, detached when dropped.
    Floor {
        /// Held for its Drop.
        _guard: Floor,
    },
    /// The flowlens child.
    Flowlens(Agent),
    /// bpftrace.
    Peer(ChildProc),
}

impl Active {
    /// Attaches a variant.
    pub fn start(variant: Variant) -> Result<Active> {
        Ok(match variant {
            Variant::Baseline => Active::Baseline,
            Variant::Floor => Active::Floor {
                _guard: Floor::attach()?,
            },
            Variant::Flowlens => Active::Flowlens(Agent::start(65_536)?),
            Variant::FlowlensSegment => Active::Flowlens(Agent::start_with(65_536, "segment")?),
            Variant::Peer => Active::Peer(start_peer()?),
        })
    }

    /// CPU seconds of the variant's own process (0 for in-kernel-only variants).
    pub fn cpu_secs(&self) -> f64 {
        match self {
            Active::Flowlens(a) => a.proc.cpu_secs(),
            Active::Peer(p) => p.cpu_secs(),
            _ => 0.0,
        }
    }
}

/// Why the peer cannot run here, if it cannot (probed once).
pub fn peer_unavailable() -> Option<String> {
    match start_peer() {
        Ok(p) => {
            drop(p);
            None
        }
        Err(e) => Some(format!("{e:#}")),
    }
}

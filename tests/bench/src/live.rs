//! The gather's cost of reading live TCP sockets: the collector's `iter/task_file` program
//! (`fl_refresh`) run once over every open file of every process, with N real loopback TCP
//! sockets tracked in the kernel map, next to the batched read of that map.

use anyhow::{Context, Result};
use flowlens::collector::{CollectorOptions, EbpfCollector, HookKinds};
use flowlens_core::{FlowTable, Limits};
use std::{
    io::{BufRead, BufReader, Read},
    net::{TcpListener, TcpStream},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::Instant,
};

/// Connections one holder process opens (two sockets each): within the open-file limit these
/// machines allow a process (20000), which root cannot raise without CAP_SYS_RESOURCE.
const PER_HOLDER: usize = 9_000;

/// `flowlens-bench profile hold-sockets N`: opens N loopback connections (both ends), prints
/// "ready", and holds them until its stdin closes.
pub fn hold(connections: usize) -> Result<()> {
    let limit = libc::rlimit {
        rlim_cur: (2 * connections + 256) as libc::rlim_t,
        rlim_max: (2 * connections + 256) as libc::rlim_t,
    };
    // SAFETY: a valid rlimit value.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        anyhow::bail!(
            "cannot raise the open-file limit: {}",
            std::io::Error::last_os_error()
        );
    }
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let mut held = Vec::with_capacity(2 * connections);
    for _ in 0..connections {
        held.push(TcpStream::connect(listener.local_addr()?)?);
        held.push(listener.accept()?.0);
    }
    println!("ready");
    let mut rest = Vec::new();
    std::io::stdin().read_to_end(&mut rest)?;
    Ok(())
}

/// Holder processes with `sockets` sockets in all, each ready.
fn holders(sockets: usize) -> Result<Vec<Child>> {
    let exe = std::env::current_exe()?;
    let mut left = sockets / 2;
    let mut children = Vec::new();
    while left > 0 {
        let n = left.min(PER_HOLDER);
        let mut child = Command::new(&exe)
            .args(["profile", "hold-sockets", &n.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().expect("piped")).read_line(&mut line)?;
        anyhow::ensure!(line.trim() == "ready", "a socket holder failed");
        children.push(child);
        left -= n;
    }
    Ok(children)
}

/// `fl_refresh`'s (run time ns, runs) from the kernel's accounting (0 when it is off).
fn refresh_stats() -> (u64, u64) {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| p.name_as_str() == Some("fl_refresh"))
        .map(|p| (p.run_time().as_nanos() as u64, p.run_count()))
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
}

/// Milliseconds per run, min / median / max.
pub struct LiveCost {
    /// Sockets tracked in the kernel map when measured.
    pub tracked: usize,
    /// Open files on the host (every process's), which the iterator visits.
    pub host_files: u64,
    /// `refresh_tcp` (the iterator), ms.
    pub iterator_ms: [f64; 3],
    /// `snapshot` (the batched map read), ms.
    pub snapshot_ms: [f64; 3],
    /// Time inside `fl_refresh` per run of the iterator (BPF_ENABLE_STATS), ms, and its runs
    /// (files visited) per iterator run.
    pub program_ms: f64,
    /// Files the iterator visited per run.
    pub files_visited: f64,
}

fn spread(mut v: Vec<f64>) -> [f64; 3] {
    v.sort_by(f64::total_cmp);
    [v[0], v[v.len() / 2], v[v.len() - 1]]
}

/// Open files on the host: the first field of /proc/sys/fs/file-nr.
fn host_files() -> u64 {
    std::fs::read_to_string("/proc/sys/fs/file-nr")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Loads the collector, then has holder processes open `sockets / 2` loopback connections
/// (both ends each), so that every socket is in its map, then times `reps` runs of each read.
pub fn measure(sockets: usize, reps: usize) -> Result<LiveCost> {
    let max_flows = (sockets + 4096).next_power_of_two() as u32;
    let table = Arc::new(Mutex::new(FlowTable::new(Limits {
        max_flows: max_flows as usize,
        max_hosts: 1024,
        series_ttl_ns: 300_000_000_000,
        udp_idle_timeout_ns: 60_000_000_000,
        hosts_by_netns: true,
        max_peers_per_container: 32,
    })));
    let collector = EbpfCollector::start(
        CollectorOptions {
            max_flows,
            ring_buffer_bytes: 16 << 20,
            segment_rtt: false,
            hook_kinds: HookKinds::ALL,
        },
        table,
    )
    .context("loading the collector")?;
    let children = holders(sockets)?;
    std::thread::sleep(std::time::Duration::from_millis(200));
    let tracked = collector.snapshot(usize::MAX).len();
    // The kernel's accounting of program time, for this measurement only.
    let stats = aya::sys::enable_stats(aya::sys::Stats::RunTime)
        .context("BPF_ENABLE_STATS (needs CAP_SYS_ADMIN)")?;
    let (time0, runs0) = refresh_stats();
    let (mut iterator, mut snapshot) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        let t = Instant::now();
        collector.refresh_tcp()?;
        iterator.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        let n = collector.snapshot(usize::MAX).len();
        snapshot.push(t.elapsed().as_secs_f64() * 1e3);
        std::hint::black_box(n);
    }
    let (time1, runs1) = refresh_stats();
    drop(stats);
    for mut child in children {
        drop(child.stdin.take());
        let _ = child.wait();
    }
    Ok(LiveCost {
        tracked,
        host_files: host_files(),
        iterator_ms: spread(iterator),
        snapshot_ms: spread(snapshot),
        program_ms: (time1 - time0) as f64 / 1e6 / reps as f64,
        files_visited: (runs1 - runs0) as f64 / reps as f64,
    })
}

/// `flowlens-bench profile hold-listeners N`: opens N listening TCP sockets on loopback, prints
/// "ready", and holds them until its stdin closes.
pub fn hold_listeners(listeners: usize) -> Result<()> {
    let held: Vec<TcpListener> = (0..listeners)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<_>>()?;
    println!("ready");
    let mut rest = Vec::new();
    std::io::stdin().read_to_end(&mut rest)?;
    drop(held);
    Ok(())
}

/// What reading listening sockets' drops adds to a gather.
pub struct ListenCost {
    /// Listeners the runs found (the holder's and the host's own).
    pub found: usize,
    /// `refresh_tcp` (the iterator), ms, min / median / max.
    pub iterator_ms: [f64; 3],
    /// Time inside `fl_refresh` per run (BPF_ENABLE_STATS), ms.
    pub program_ms: f64,
    /// `take_listeners` (the batched read and delete of `listen_drops`), ms.
    pub take_ms: [f64; 3],
}

/// Loads the collector, has a holder process open `listeners` listening sockets, then times
/// `reps` runs of the iterator and of the read of the listeners it found.
pub fn measure_listeners(listeners: usize, reps: usize) -> Result<ListenCost> {
    let table = Arc::new(Mutex::new(FlowTable::new(Limits {
        max_flows: 65536,
        max_hosts: 1024,
        series_ttl_ns: 300_000_000_000,
        udp_idle_timeout_ns: 60_000_000_000,
        hosts_by_netns: true,
        max_peers_per_container: 32,
    })));
    let mut collector = EbpfCollector::start(
        CollectorOptions {
            max_flows: 65536,
            ring_buffer_bytes: 16 << 20,
            segment_rtt: false,
            hook_kinds: HookKinds::ALL,
        },
        table,
    )
    .context("loading the collector")?;
    let exe = std::env::current_exe()?;
    let mut child = Command::new(&exe)
        .args(["profile", "hold-listeners", &listeners.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().expect("piped")).read_line(&mut line)?;
    anyhow::ensure!(line.trim() == "ready", "the listener holder failed");
    let stats = aya::sys::enable_stats(aya::sys::Stats::RunTime)
        .context("BPF_ENABLE_STATS (needs CAP_SYS_ADMIN)")?;
    let (time0, _) = refresh_stats();
    let (mut iterator, mut take, mut found) = (Vec::new(), Vec::new(), 0);
    for _ in 0..reps {
        let t = Instant::now();
        collector.refresh_tcp()?;
        iterator.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        let run = collector.take_listeners()?.context("no iterator")?;
        take.push(t.elapsed().as_secs_f64() * 1e3);
        found = run.listeners.len();
    }
    let (time1, _) = refresh_stats();
    drop(stats);
    drop(child.stdin.take());
    let _ = child.wait();
    Ok(ListenCost {
        found,
        iterator_ms: spread(iterator),
        program_ms: (time1 - time0) as f64 / 1e6 / reps as f64,
        take_ms: spread(take),
    })
}

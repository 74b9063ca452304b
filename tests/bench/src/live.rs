//! The gather's cost of reading live TCP sockets: the collector's `iter/task_file` program
//! (`fl_refresh`) run once over every open file of every process, with N real loopback TCP
//! sockets tracked in the kernel map, next to the batched read of that map.

use anyhow::{Context, Result};
use flowlens::{
    collector::{CollectorOptions, EbpfCollector},
    flows::{FlowTable, Limits},
};
use std::{
    net::{TcpListener, TcpStream},
    sync::{Arc, Mutex},
    time::Instant,
};

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

/// Opens `sockets / 2` loopback connections (both ends in this process) with the collector
/// loaded first, so that every socket is in its map, then times `reps` runs of each read.
pub fn measure(sockets: usize, reps: usize) -> Result<LiveCost> {
    let want = (sockets + 4096) as libc::rlim_t;
    let limit = libc::rlimit {
        rlim_cur: want,
        rlim_max: want,
    };
    // SAFETY: a valid rlimit value.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        anyhow::bail!(
            "cannot raise the open-file limit to {want}: {}",
            std::io::Error::last_os_error()
        );
    }
    let max_flows = (sockets + 4096).next_power_of_two() as u32;
    let table = Arc::new(Mutex::new(FlowTable::new(Limits {
        max_flows: max_flows as usize,
        max_hosts: 1024,
        udp_idle_timeout_ns: 60_000_000_000,
    })));
    let collector = EbpfCollector::start(
        CollectorOptions {
            max_flows,
            ring_buffer_bytes: 16 << 20,
            segment_rtt: false,
        },
        table,
    )
    .context("loading the collector")?;
    // 25k connections per listening port keeps within the ephemeral port range.
    let connections = sockets / 2;
    let mut held = Vec::with_capacity(sockets);
    let mut listeners = Vec::new();
    for done in 0..connections {
        if done % 25_000 == 0 {
            listeners.push(TcpListener::bind("127.0.0.1:0")?);
        }
        let listener = listeners.last().expect("one listener");
        let client = TcpStream::connect(listener.local_addr()?)?;
        let (server, _) = listener.accept()?;
        held.push(client);
        held.push(server);
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    let tracked = collector.snapshot(usize::MAX).len();
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
    Ok(LiveCost {
        tracked,
        host_files: host_files(),
        iterator_ms: spread(iterator),
        snapshot_ms: spread(snapshot),
    })
}

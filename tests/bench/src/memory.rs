//! Memory of the flowlens child: resident memory (VmRSS) and the kernel memory charged to its BPF
//! maps (`memlock` in /proc/<pid>/fdinfo of each map fd), with 0, 10k real and 100k (real plus
//! synthetic) active flows, and RSS over a churn run.

use crate::{
    stats::Spread,
    userspace::synthetic_sock,
    variants::Agent,
    workloads::{self, Net},
};
use anyhow::{bail, Context, Result};
use aya::maps::{HashMap as BpfHashMap, Map, MapData, MapInfo};
use flowlens_core::records::{self, FlSock};
use std::{
    sync::{atomic::AtomicBool, Arc},
    time::{Duration, Instant},
};

/// VmRSS of a process, in KiB.
pub fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc/<pid>/status")
}

/// One BPF map a process holds.
#[derive(Debug, Clone)]
pub struct MapMem {
    /// Kernel map id.
    pub id: u32,
    /// Its name.
    pub name: String,
    /// `memlock` bytes.
    pub memlock: u64,
}

/// The BPF maps a process holds (deduplicated by id), from /proc/<pid>/fdinfo.
pub fn bpf_maps(pid: u32) -> Result<Vec<MapMem>> {
    let mut maps: Vec<MapMem> = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fdinfo"))? {
        let Ok(text) = std::fs::read_to_string(entry?.path()) else {
            continue;
        };
        let get = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        let (Some(id), Some(memlock)) = (get("map_id:"), get("memlock:")) else {
            continue;
        };
        let id = id as u32;
        if maps.iter().any(|m| m.id == id) {
            continue;
        }
        let name = MapInfo::from_id(id)
            .ok()
            .and_then(|i| i.name_as_str().map(str::to_string))
            .unwrap_or_default();
        maps.push(MapMem { id, name, memlock });
    }
    maps.sort_by_key(|m| m.id);
    Ok(maps)
}

/// A value of the `socks` map as aya writes it.
#[repr(transparent)]
#[derive(Clone, Copy)]
struct RawSock(FlSock);

// SAFETY: FlSock is `repr(C)` plain old data, checked against ebpf/flowlens.h; every bit
// pattern is a valid value; the wrapper is transparent.
unsafe impl aya::Pod for RawSock {}

/// Inserts `n` synthetic TCP sockets into the flowlens child's `socks` map, as if established
/// before it started: its next gathers adopt them as active flows.
fn add_synthetic(pid: u32, n: u64) -> Result<()> {
    let socks = bpf_maps(pid)?
        .into_iter()
        .find(|m| m.name == "socks")
        .context("the flowlens child holds no `socks` map")?;
    let data = MapData::from_id(socks.id).context("open the socks map by id")?;
    let mut map: BpfHashMap<MapData, u64, RawSock> = BpfHashMap::try_from(Map::HashMap(data))?;
    for i in 0..n {
        let mut sock = synthetic_sock(i);
        sock.role = records::ROLE_UNKNOWN;
        // Cookies far from the kernel's (which count up from 1).
        map.insert((1u64 << 62) + i, RawSock(sock), 0)?;
    }
    Ok(())
}

/// One memory measurement.
pub struct MemPoint {
    /// Active flows flowlens reported.
    pub flows: u64,
    /// How they were made.
    pub how: &'static str,
    /// VmRSS, KiB.
    pub rss_kib: u64,
    /// Sum of the maps' memlock, bytes.
    pub maps_bytes: u64,
    /// The maps, for the notes.
    pub maps: Vec<MapMem>,
    /// gather_duration_ms of the gathers at this size (the whole gather: map read included).
    pub gather_ms: Spread,
}

/// `max_flows` of the flowlens child in the memory runs: room for 100k flows.
pub const MEMORY_MAX_FLOWS: u32 = 131_072;

fn measure(agent: &Agent, flows: u64, how: &'static str) -> Result<MemPoint> {
    let seen = agent.wait_flows(flows, Duration::from_secs(60))?;
    // Let a few gathers run at this size, then read.
    let before = agent.stats.lock().unwrap().gather_ms.len();
    agent.wait_gathers(3);
    let gather_ms = Spread::of(&agent.stats.lock().unwrap().gather_ms[before..]);
    let maps = bpf_maps(agent.proc.pid())?;
    Ok(MemPoint {
        flows: seen,
        how,
        rss_kib: rss_kib(agent.proc.pid())?,
        maps_bytes: maps.iter().map(|m| m.memlock).sum(),
        maps,
        gather_ms,
    })
}

/// Raises RLIMIT_NOFILE to at least `n`: the hard limit too when allowed (CAP_SYS_RESOURCE),
/// else the soft limit up to the hard one.
pub fn raise_nofile(n: u64) -> Result<()> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid rlimit pointers.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        let want = libc::rlimit {
            rlim_cur: n,
            rlim_max: n.max(lim.rlim_max),
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
            return Ok(());
        }
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
    if lim.rlim_cur < n {
        bail!(
            "RLIMIT_NOFILE is {} and cannot be raised to {n} here (no CAP_SYS_RESOURCE)",
            lim.rlim_cur
        );
    }
    Ok(())
}

/// RSS and map memory with 0, 10k (real sockets) and 100k (10k real + 90k synthetic) flows.
pub fn flows_memory(net: &Net) -> Result<Vec<MemPoint>> {
    raise_nofile(10_100)?;
    let agent = Agent::start(MEMORY_MAX_FLOWS)?;
    // The host's own flows (ssh, other tests) come and go: the counts are at least these.
    agent.wait_gathers(2);
    let mut out = vec![measure(&agent, 0, "idle host")?];
    let held = workloads::hold_connections(net.lo(), 5_000)?;
    out.push(measure(&agent, 10_000, "10k real sockets")?);
    add_synthetic(agent.proc.pid(), 90_000)?;
    out.push(measure(
        &agent,
        100_000,
        "10k real + 90k synthetic map entries",
    )?);
    drop(held);
    Ok(out)
}

/// RSS of a churn run.
pub struct Flatness {
    /// Run length.
    pub secs: u64,
    /// Connections made.
    pub conns: u64,
    /// (seconds since start, RSS KiB) samples.
    pub samples: Vec<(f64, u64)>,
    /// Mean RSS over the second quarter (after warm-up), KiB.
    pub early_kib: f64,
    /// Mean RSS over the last quarter, KiB.
    pub late_kib: f64,
    /// Largest RSS, KiB.
    pub max_kib: u64,
    /// Events the flowlens child lost.
    pub events_lost: u64,
}

/// Runs connection churn for `secs` with a fresh flowlens child, sampling its RSS every second.
pub fn flatness(net: &Net, secs: u64) -> Result<Flatness> {
    let agent = Agent::start(65_536)?;
    let stop = Arc::new(AtomicBool::new(false));
    let churn = {
        let (ns, stop) = (net.lo().to_string(), stop.clone());
        std::thread::spawn(move || workloads::churn_until(&ns, stop))
    };
    let start = Instant::now();
    let mut samples = Vec::new();
    while start.elapsed().as_secs() < secs {
        std::thread::sleep(Duration::from_secs(1));
        samples.push((start.elapsed().as_secs_f64(), rss_kib(agent.proc.pid())?));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let conns = churn
        .join()
        .map_err(|_| anyhow::anyhow!("churn thread panicked"))??;
    let events_lost = agent.stats.lock().unwrap().events_lost;
    let mean = |from: f64, to: f64| {
        let v: Vec<f64> = samples
            .iter()
            .filter(|(t, _)| *t >= from * secs as f64 && *t <= to * secs as f64)
            .map(|(_, r)| *r as f64)
            .collect();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    };
    Ok(Flatness {
        secs,
        conns,
        early_kib: mean(0.25, 0.5),
        late_kib: mean(0.75, 1.0),
        max_kib: samples.iter().map(|s| s.1).max().unwrap_or(0),
        samples,
        events_lost,
    })
}

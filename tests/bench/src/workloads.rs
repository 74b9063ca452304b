//! The workloads the host runs while a variant is attached: connection churn, one bulk stream,
//! and many persistent connections with small request/response messages, each over loopback
//! (inside a namespace of its own) or over a veth pair between two network namespaces.

use anyhow::{bail, Context, Result};
use flowlens_tests::NetnsPair;
use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd,
    process::Command,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

/// Which workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// connect, accept, 1-byte request, 1-byte response, close; as many as fit in the time.
    Churn,
    /// One TCP stream, as fast as it goes.
    Bulk,
    /// Persistent connections, small request and response messages.
    Requests,
}

impl Workload {
    /// Every workload, in table order.
    pub const ALL: [Workload; 3] = [Workload::Churn, Workload::Bulk, Workload::Requests];

    /// Its name in the table.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Churn => "connection churn",
            Workload::Bulk => "bulk transfer (1 stream)",
            Workload::Requests => "requests (64 conns, 64 B)",
        }
    }

    /// The unit of its rate.
    pub fn unit(self) -> &'static str {
        match self {
            Workload::Churn => "conn/s",
            Workload::Bulk => "MB/s",
            Workload::Requests => "req/s",
        }
    }

    /// What the time in the programs is shown per: an operation, or a MB for bulk.
    pub fn op_unit(self) -> &'static str {
        match self {
            Workload::Bulk => "ns/MB",
            _ => "ns/op",
        }
    }

    /// Operations (bytes for bulk) per [`Workload::op_unit`].
    pub fn op_scale(self) -> f64 {
        match self {
            Workload::Bulk => 1e6,
            _ => 1.0,
        }
    }

    /// The rate as shown (bulk in MB/s).
    pub fn show_rate(self, per_sec: f64) -> String {
        match self {
            Workload::Bulk => format!("{:.0} {}", per_sec / 1e6, self.unit()),
            _ => format!("{:.0} {}", per_sec, self.unit()),
        }
    }
}

/// Where the traffic goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// Both ends in one namespace, over its `lo`.
    Loopback,
    /// Server in one namespace, client in another, over a veth pair.
    Veth,
}

impl Path {
    /// Both paths, in table order.
    pub const ALL: [Path; 2] = [Path::Loopback, Path::Veth];

    /// Its name in the table.
    pub fn name(self) -> &'static str {
        match self {
            Path::Loopback => "loopback",
            Path::Veth => "veth",
        }
    }
}

/// The namespaces the workloads run in, deleted on drop.
pub struct Net {
    /// The loopback namespace.
    lo: String,
    veth: NetnsPair,
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("cannot run `ip` (iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Sysctls of a bench namespace: the whole port range, and reuse of TIME_WAIT ports so that
/// connection churn does not run out of ports over many rounds (the host's own settings are left
/// alone).
fn tune(ns: &str) -> Result<()> {
    for kv in [
        "net.ipv4.ip_local_port_range=1024 65535",
        "net.ipv4.tcp_tw_reuse=1",
        "net.core.somaxconn=4096",
    ] {
        ip(&["netns", "exec", ns, "sysctl", "-q", "-w", kv])?;
    }
    Ok(())
}

impl Net {
    /// Creates the loopback namespace and the veth pair, named after this process (two runs at
    /// once, a soak and a profile say, each keep their own).
    pub fn new() -> Result<Net> {
        let pid = std::process::id();
        let lo = format!("flbench-lo-{pid}");
        let _ = Command::new("ip").args(["netns", "del", &lo]).output();
        ip(&["netns", "add", &lo])?;
        ip(&["-n", &lo, "link", "set", "lo", "up"])?;
        tune(&lo)?;
        let veth = NetnsPair::new(&format!("flb{pid}"), 213);
        for ns in &veth.ns {
            tune(ns)?;
        }
        Ok(Net { lo, veth })
    }

    /// (server namespace, client namespace, server address) of a path.
    pub fn ends(&self, path: Path) -> (String, String, String) {
        match path {
            Path::Loopback => (self.lo.clone(), self.lo.clone(), "127.0.0.1".into()),
            Path::Veth => (
                self.veth.ns[0].clone(),
                self.veth.ns[1].clone(),
                self.veth.addrs[0].clone(),
            ),
        }
    }

    /// The loopback namespace's name.
    pub fn lo(&self) -> &str {
        &self.lo
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.lo]).output();
    }
}

/// Moves the calling thread into a named network namespace.
pub fn enter_netns(ns: &str) -> Result<()> {
    let path = format!("/run/netns/{ns}");
    let file = std::fs::File::open(&path).with_context(|| format!("open {path}"))?;
    // SAFETY: a valid namespace fd; CLONE_NEWNET affects only this thread.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!("setns({path}): {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// Spawns a thread inside a network namespace.
pub fn spawn_in<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> JoinHandle<Result<T>> {
    let ns = ns.to_string();
    std::thread::spawn(move || {
        enter_netns(&ns)?;
        f()
    })
}

/// Binds a listener on `addr:0` inside `ns` (a short-lived thread does the bind there).
fn listen_in(ns: &str, addr: &str) -> Result<TcpListener> {
    let addr: SocketAddr = format!("{addr}:0").parse()?;
    spawn_in(ns, move || Ok(TcpListener::bind(addr)?))
        .join()
        .map_err(|_| anyhow::anyhow!("listener thread panicked"))?
}

/// What one run did: operations (or bytes) and the time they took.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    /// Completed operations (bulk: bytes received).
    pub ops: u64,
    /// Measured time.
    pub secs: f64,
}

impl Outcome {
    /// Operations per second.
    pub fn rate(&self) -> f64 {
        self.ops as f64 / self.secs
    }
}

fn join<T>(h: JoinHandle<Result<T>>) -> Result<T> {
    h.join()
        .map_err(|_| anyhow::anyhow!("workload thread panicked"))?
}

/// Runs a workload for `secs` over `path`.
pub fn run(net: &Net, workload: Workload, path: Path, secs: f64) -> Result<Outcome> {
    let (server_ns, client_ns, addr) = net.ends(path);
    let dur = Duration::from_secs_f64(secs);
    match workload {
        Workload::Churn => churn(&server_ns, &client_ns, &addr, dur),
        Workload::Bulk => bulk(&server_ns, &client_ns, &addr, dur),
        Workload::Requests => requests(&server_ns, &client_ns, &addr, dur, 2, 32, 64),
    }
}

/// Connection churn: one client thread, one server thread.
fn churn(server_ns: &str, client_ns: &str, addr: &str, dur: Duration) -> Result<Outcome> {
    let listener = listen_in(server_ns, addr)?;
    let target = listener.local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));
    let server = {
        let stop = stop.clone();
        std::thread::spawn(move || -> Result<()> {
            let mut b = [0u8; 1];
            while let Ok((mut s, _)) = listener.accept() {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                if s.read_exact(&mut b).is_err() || s.write_all(&b).is_err() {
                    continue;
                }
                // Wait for the client's close: the client closes first (TIME_WAIT is its own).
                let _ = s.read(&mut b);
            }
            Ok(())
        })
    };
    let client = spawn_in(client_ns, move || -> Result<Outcome> {
        let start = Instant::now();
        let mut n = 0u64;
        let mut b = [7u8; 1];
        while start.elapsed() < dur {
            let mut s = TcpStream::connect(target)?;
            s.set_nodelay(true)?;
            s.write_all(&b)?;
            s.read_exact(&mut b)?;
            drop(s);
            n += 1;
        }
        let secs = start.elapsed().as_secs_f64();
        Ok(Outcome { ops: n, secs })
    });
    let out = join(client);
    stop.store(true, Ordering::Relaxed);
    // Wake the accept loop up so that it sees `stop`.
    let waker = spawn_in(client_ns, move || Ok(TcpStream::connect(target).map(drop)?));
    let _ = join(waker);
    join(server)?;
    out
}

/// One stream: the client writes 64 KiB chunks for `dur`; the rate is what the server read.
fn bulk(server_ns: &str, client_ns: &str, addr: &str, dur: Duration) -> Result<Outcome> {
    let listener = listen_in(server_ns, addr)?;
    let target = listener.local_addr()?;
    let server = std::thread::spawn(move || -> Result<Outcome> {
        let (mut s, _) = listener.accept()?;
        let mut buf = vec![0u8; 256 << 10];
        let mut total = 0u64;
        let mut first: Option<Instant> = None;
        loop {
            let n = s.read(&mut buf)?;
            if n == 0 {
                break;
            }
            first.get_or_insert_with(Instant::now);
            total += n as u64;
        }
        let secs = first.map_or(1.0, |t| t.elapsed().as_secs_f64());
        Ok(Outcome { ops: total, secs })
    });
    let client = spawn_in(client_ns, move || -> Result<()> {
        let mut s = TcpStream::connect(target)?;
        let chunk = vec![0x5au8; 64 << 10];
        let start = Instant::now();
        while start.elapsed() < dur {
            s.write_all(&chunk)?;
        }
        Ok(())
    });
    join(client)?;
    join(server)
}

/// `pairs` client threads, each with `conns` persistent connections served by a server thread of
/// its own: the client writes one `size`-byte request on each connection, then reads each
/// response; the server answers them in the same order.
fn requests(
    server_ns: &str,
    client_ns: &str,
    addr: &str,
    dur: Duration,
    pairs: usize,
    conns: usize,
    size: usize,
) -> Result<Outcome> {
    let mut servers = Vec::new();
    let mut clients = Vec::new();
    for _ in 0..pairs {
        let listener = listen_in(server_ns, addr)?;
        let target = listener.local_addr()?;
        servers.push(std::thread::spawn(move || -> Result<()> {
            let mut socks = Vec::with_capacity(conns);
            for _ in 0..conns {
                let (s, _) = listener.accept()?;
                s.set_nodelay(true)?;
                socks.push(s);
            }
            let mut buf = vec![0u8; size];
            loop {
                for s in &mut socks {
                    if s.read_exact(&mut buf).is_err() {
                        return Ok(());
                    }
                    s.write_all(&buf)?;
                }
            }
        }));
        clients.push(spawn_in(client_ns, move || -> Result<Outcome> {
            let mut socks = Vec::with_capacity(conns);
            for _ in 0..conns {
                let s = TcpStream::connect(target)?;
                s.set_nodelay(true)?;
                socks.push(s);
            }
            let mut buf = vec![1u8; size];
            let start = Instant::now();
            let mut n = 0u64;
            while start.elapsed() < dur {
                for s in &mut socks {
                    s.write_all(&buf)?;
                }
                for s in &mut socks {
                    s.read_exact(&mut buf)?;
                }
                n += conns as u64;
            }
            Ok(Outcome {
                ops: n,
                secs: start.elapsed().as_secs_f64(),
            })
        }));
    }
    let mut total = Outcome { ops: 0, secs: 0.0 };
    for c in clients {
        let o = join(c)?;
        total.ops += o.ops;
        total.secs = total.secs.max(o.secs);
    }
    for s in servers {
        join(s)?;
    }
    Ok(total)
}

/// Opens `n` loopback connections inside `ns` and keeps them open until the returned value is
/// dropped (2n sockets: both ends are flows).
pub fn hold_connections(ns: &str, n: usize) -> Result<Vec<TcpStream>> {
    let ns = ns.to_string();
    spawn_in(&ns, move || {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let target = listener.local_addr()?;
        let mut socks = Vec::with_capacity(2 * n);
        for _ in 0..n {
            let c = TcpStream::connect(target)?;
            let (s, _) = listener.accept()?;
            socks.push(c);
            socks.push(s);
        }
        Ok(socks)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("connection thread panicked"))?
}

/// Churns connections in `ns` until `stop` is set; returns how many cycles ran.
pub fn churn_until(ns: &str, stop: Arc<AtomicBool>) -> Result<u64> {
    let mut total = 0;
    while !stop.load(Ordering::Relaxed) {
        let out = churn(ns, ns, "127.0.0.1", Duration::from_secs(1))?;
        total += out.ops;
    }
    Ok(total)
}

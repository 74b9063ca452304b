//! Faults flowlens survives with nothing lost and nothing leaked, each with the real binary on the
//! real kernel:
//!
//! - SIGKILL during a gather, then a restart, 50 times: every BPF program, map, link and BTF
//!   object the killed process held is freed, nothing is pinned, no `fl_` program is left without
//!   a process, and the next process attaches every probe and counts;
//! - the event ring buffer overflowing under connection churn from several threads while gathers
//!   run: losses counted, counters never go back, flows never more than the connections made and
//!   never fewer than those made minus the losses, none left active;
//! - network namespaces with veth pairs created, used and destroyed while gathers run: every
//!   connection counted once, nothing logged, no descriptor or thread left behind;
//! - a cgroup removed between its socket's close and the gather: the flow still counts on its
//!   host (docs/metrics.md: no container series can name it any more);
//! - runtime metadata roots, and files under them, that are missing, unreadable, symbolic link
//!   loops, FIFOs or huge sparse files: gathers go on, the container still counts (without names),
//!   every skip is logged;
//! - stdout blocked (a Vector whose InfluxDB is down stops reading flowlens's pipe): the collector
//!   keeps counting while its write waits, and its memory stays flat.

use flowlens_core::lineproto::parse_lines;
use flowlens_tests::{session::*, *};
use std::{
    collections::{BTreeMap, BTreeSet},
    io::{BufRead, BufReader, Read, Write},
    net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream},
    os::fd::{AsRawFd, FromRawFd},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

/// An address's value summed over its `host:` series of every network namespace (each round of
/// the namespace test makes the same addresses in new namespaces).
fn host(text: &str, measurement: &str, addr: &str, field: &str) -> i64 {
    sum(text, measurement, &[("host", addr)], field)
}

fn internal(text: &str, field: &str) -> i64 {
    value(text, "flowlens:internal", &[], field)
}

/// The warnings and errors among flowlens's log lines.
fn complaints(log: &[String]) -> Vec<&String> {
    log.iter()
        .filter(|l| l.starts_with("W! ") || l.starts_with("E! "))
        .collect()
}

/// A TCP connection from `local` (any port) to `remote`: bound first, since a loopback
/// destination would otherwise get 127.0.0.1 as its source (and flows are counted per address).
fn connect_from(local: Ipv4Addr, remote: SocketAddrV4) -> TcpStream {
    let sockaddr = |ip: Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(ip.octets()),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: plain socket calls on an fd this function owns, with valid sockaddr_in values.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let stream = TcpStream::from_raw_fd(fd);
        let bind = sockaddr(local, 0);
        let rc = libc::bind(fd, (&bind as *const libc::sockaddr_in).cast(), len);
        assert_eq!(rc, 0, "bind {local}: {}", std::io::Error::last_os_error());
        let to = sockaddr(*remote.ip(), remote.port());
        let rc = libc::connect(fd, (&to as *const libc::sockaddr_in).cast(), len);
        assert_eq!(
            rc,
            0,
            "connect {remote}: {}",
            std::io::Error::last_os_error()
        );
        stream
    }
}

/// One short connection: one byte each way, then the client closes.
fn one_exchange(local: Ipv4Addr, remote: SocketAddrV4) {
    let mut c = connect_from(local, remote);
    c.write_all(b"x").unwrap();
    let mut b = [0u8; 1];
    c.read_exact(&mut b).unwrap();
}

/// The server side of [`one_exchange`]: reads the byte, answers one, waits for the close.
fn answer_one(mut conn: TcpStream) {
    let mut b = [0u8; 1];
    if conn.read_exact(&mut b).is_ok() && conn.write_all(b"y").is_ok() {
        let mut rest = Vec::new();
        let _ = conn.read_to_end(&mut rest);
    }
}

/// Serves exactly `total` connections on `listener` with `threads` threads, each connection
/// as [`answer_one`].
fn serve(listener: TcpListener, total: usize, threads: usize) -> Vec<JoinHandle<()>> {
    let left = Arc::new(AtomicUsize::new(total));
    (0..threads)
        .map(|_| {
            let listener = listener.try_clone().unwrap();
            let left = Arc::clone(&left);
            thread::spawn(move || {
                while left
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok()
                {
                    answer_one(listener.accept().unwrap().0);
                }
            })
        })
        .collect()
}

/// `threads` threads each making `per_thread` [`one_exchange`]s.
fn churn(
    local: Ipv4Addr,
    remote: SocketAddrV4,
    threads: usize,
    per_thread: usize,
) -> Vec<JoinHandle<()>> {
    (0..threads)
        .map(|_| {
            thread::spawn(move || {
                for _ in 0..per_thread {
                    one_exchange(local, remote);
                }
            })
        })
        .collect()
}

fn join_all(handles: Vec<JoinHandle<()>>) {
    for h in handles {
        h.join().unwrap();
    }
}

/// A loopback listener on `ip`, on a port of its own (so that no earlier run's TIME_WAIT
/// connections share its 4-tuples).
fn listen_on(ip: Ipv4Addr) -> (TcpListener, SocketAddrV4) {
    let listener = TcpListener::bind((ip, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    (listener, SocketAddrV4::new(ip, port))
}

/// A field of `/proc/<pid>/status` in its unit (kB for memory).
fn proc_status(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("{key} in /proc/{pid}/status"))
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: signalling a child of this test.
    assert_eq!(unsafe { libc::kill(pid as i32, sig) }, 0);
}

// ---------------------------------------------------------------------------------------------
// BPF objects

/// A kind of BPF object, as /proc/<pid>/fdinfo and the bpf() syscall name them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Prog,
    Map,
    Link,
    Btf,
}

impl Kind {
    const ALL: [Kind; 4] = [Kind::Prog, Kind::Map, Kind::Link, Kind::Btf];

    fn fdinfo_key(self) -> &'static str {
        match self {
            Kind::Prog => "prog_id:",
            Kind::Map => "map_id:",
            Kind::Link => "link_id:",
            Kind::Btf => "btf_id:",
        }
    }

    /// `BPF_*_GET_FD_BY_ID` (linux/bpf.h `enum bpf_cmd`).
    fn get_fd_by_id(self) -> libc::c_long {
        match self {
            Kind::Prog => 13,
            Kind::Map => 14,
            Kind::Btf => 19,
            Kind::Link => 30,
        }
    }
}

/// The BPF objects process `pid` holds through its descriptors (a link's fdinfo names its
/// program too); empty once it has exited.
fn bpf_objects_of(pid: u32) -> BTreeSet<(Kind, u32)> {
    let mut out = BTreeSet::new();
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return out;
    };
    for fd in fds.filter_map(Result::ok) {
        let Ok(info) = std::fs::read_to_string(fd.path()) else {
            continue;
        };
        for line in info.lines() {
            for kind in Kind::ALL {
                if let Some(id) = line.strip_prefix(kind.fdinfo_key()) {
                    if let Ok(id) = id.trim().parse() {
                        out.insert((kind, id));
                    }
                }
            }
        }
    }
    out
}

/// Whether the kernel still has object `id` of `kind` (bpf(BPF_*_GET_FD_BY_ID)).
fn bpf_object_exists(kind: Kind, id: u32) -> bool {
    // The id member of `union bpf_attr`'s GET_FD_BY_ID struct, then next_id, open_flags and
    // the token fd: zero.
    let attr: [u32; 4] = [id, 0, 0, 0];
    // SAFETY: a 16-byte attribute the kernel only reads.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            kind.get_fd_by_id(),
            attr.as_ptr(),
            std::mem::size_of_val(&attr),
        )
    };
    if fd >= 0 {
        // SAFETY: the descriptor the kernel just returned, ours alone.
        unsafe { libc::close(fd as i32) };
        return true;
    }
    let err = std::io::Error::last_os_error();
    assert_eq!(
        err.raw_os_error(),
        Some(libc::ENOENT),
        "bpf get {kind:?} {id}: {err}"
    );
    false
}

/// Waits (10 s at most: the kernel frees some objects after an RCU grace period) until none of
/// `objects` exists; returns those still there.
fn still_loaded(objects: &BTreeSet<(Kind, u32)>) -> Vec<(Kind, u32)> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left: Vec<(Kind, u32)> = objects
            .iter()
            .copied()
            .filter(|(k, id)| bpf_object_exists(*k, *id))
            .collect();
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// The programs every live process holds a descriptor of (its programs and its links').
fn programs_held_by_processes() -> BTreeSet<u32> {
    let mut held = BTreeSet::new();
    for proc_entry in std::fs::read_dir("/proc").unwrap().filter_map(Result::ok) {
        let Some(pid) = proc_entry.file_name().to_str().and_then(|p| p.parse().ok()) else {
            continue;
        };
        held.extend(
            bpf_objects_of(pid)
                .into_iter()
                .filter(|(k, _)| *k == Kind::Prog)
                .map(|(_, id)| id),
        );
    }
    held
}

/// Everything under every bpf filesystem mount (pinned objects and directories).
fn bpffs_entries() -> BTreeSet<PathBuf> {
    fn walk(dir: &Path, out: &mut BTreeSet<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.filter_map(Result::ok) {
            out.insert(e.path());
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&e.path(), out);
            }
        }
    }
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mut out = BTreeSet::new();
    for line in info.lines() {
        if line
            .split(" - ")
            .nth(1)
            .is_some_and(|r| r.starts_with("bpf "))
        {
            if let Some(mount) = line.split(' ').nth(4) {
                walk(Path::new(mount), &mut out);
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// SIGKILL

#[test]
fn sigkill_during_a_gather_50_times_leaks_no_bpf_object_and_the_restart_works() {
    let Some(_serial) = root_test("sigkill_during_a_gather_50_times_leaks_no_bpf_object") else {
        return;
    };
    const KILLS: usize = 50;
    let pinned = bpffs_entries();
    // Where each kill landed: before the gather's batch came out, while it was written, after.
    let mut landed: BTreeMap<&str, usize> = BTreeMap::new();
    let mut freed = 0;
    for i in 0..KILLS {
        // The restart: Session::start checks its first gather (every probe attached, in CI).
        let mut s = Session::start("");
        let pid = s.child.id();
        // One gather timed from the newline to its batch: the window the kill aims into.
        let asked = Instant::now();
        s.gather();
        let window = asked.elapsed();
        let held = bpf_objects_of(pid);
        for kind in [Kind::Prog, Kind::Map, Kind::Link] {
            assert!(
                held.iter().filter(|(k, _)| *k == kind).count() >= 4,
                "kill {i}: the process holds its {kind:?}s: {held:?}"
            );
        }
        // From right after the newline to the batch's arrival, over the iterations; spun, not
        // slept (the window is about a millisecond).
        let delay = window * (i % 10) as u32 / 10;
        s.ask();
        let asked = Instant::now();
        while asked.elapsed() < delay {
            std::hint::spin_loop();
        }
        signal(pid, libc::SIGKILL);
        let status = s.child.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGKILL),
            "kill {i}: {status}"
        );
        let out = s.next_batch(Duration::from_secs(5));
        *landed
            .entry(match &out {
                None => "before its batch",
                Some(b)
                    if b.lines()
                        .last()
                        .is_some_and(|l| l.starts_with("flowlens:internal")) =>
                {
                    "after its batch"
                }
                Some(_) => "while its batch was written",
            })
            .or_default() += 1;
        let left = still_loaded(&held);
        assert!(
            left.is_empty(),
            "kill {i}: still loaded 10 s after SIGKILL: {left:?}"
        );
        freed += held.len();
    }
    eprintln!("{KILLS} kills: {landed:?}; {freed} BPF objects freed");
    assert!(
        landed.get("before its batch").is_some_and(|n| *n > 0),
        "no kill landed before its gather's batch was out: {landed:?}"
    );
    // Nothing pinned, now or by any of them.
    assert_eq!(bpffs_entries(), pinned, "bpffs entries changed");
    // No `fl_` program without a process: other flowlens processes (other tests on this
    // machine) hold theirs; one that just exited may take a moment to be freed.
    let held = programs_held_by_processes();
    let orphans: BTreeSet<(Kind, u32)> = flowlens_program_ids()
        .into_iter()
        .filter(|id| !held.contains(id))
        .map(|id| (Kind::Prog, id))
        .collect();
    let left = still_loaded(&orphans);
    assert!(left.is_empty(), "fl_ programs without a process: {left:?}");

    // The process after the last kill attaches everything and counts a connection.
    let mut s = Session::start("");
    let t0 = s.gather();
    let (listener, server) = listen_on(Ipv4Addr::new(127, 221, 0, 2));
    let servers = serve(listener, 1, 1);
    one_exchange(Ipv4Addr::new(127, 221, 0, 1), server);
    join_all(servers);
    thread::sleep(Duration::from_millis(200));
    let t1 = s.gather();
    let d = |m: &str, a: &str, f: &str| host(&t1, m, a, f) - host(&t0, m, a, f);
    let lost = internal(&t1, "events_lost") - internal(&t0, "events_lost");
    assert!(
        (1 - lost..=1).contains(&d("host:total_flows", "127.221.0.1", "flows_as_client")),
        "{t1}"
    );
    assert!((1 - lost..=1).contains(&d("host:traffic", "127.221.0.1", "bytes_sent")));
    assert_eq!(internal(&t1, "probes_failed"), 0, "{t1}");
    s.finish();
}

// ---------------------------------------------------------------------------------------------
// Ring buffer overflow

#[test]
fn a_ring_buffer_overflow_under_churn_is_counted_and_counts_stay_consistent() {
    let Some(_serial) = root_test("a_ring_buffer_overflow_under_churn_is_counted") else {
        return;
    };
    // The smallest ring: 4096 bytes, 23 records of 176 bytes.
    let mut s = Session::start("ring_buffer_bytes = 4096\n");
    const THREADS: usize = 4;
    const PER_THREAD: usize = 1500;
    const N: i64 = (THREADS * PER_THREAD) as i64;
    let (client, server_ip) = (Ipv4Addr::new(127, 216, 0, 1), Ipv4Addr::new(127, 216, 0, 2));
    let (c, sv) = ("127.216.0.1", "127.216.0.2");
    let (listener, server) = listen_on(server_ip);
    let servers = serve(listener, N as usize, THREADS);
    let mut batches = vec![s.gather()];
    let clients = churn(client, server, THREADS, PER_THREAD);
    // Gathers all along the churn.
    while !clients.iter().all(|h| h.is_finished()) {
        batches.push(s.gather());
        thread::sleep(Duration::from_millis(20));
    }
    join_all(clients);
    join_all(servers);
    thread::sleep(Duration::from_millis(200));
    // A flow a gather saw live whose close record was lost ends when two snapshots miss it.
    for _ in 0..3 {
        batches.push(s.gather());
    }
    let (first, last) = (&batches[0], batches.last().unwrap());
    eprintln!("{} gathers during the churn", batches.len() - 4);

    // Counters never go back.
    let counters: [(&str, &str, &str); 10] = [
        ("flowlens:internal", "", "events_received"),
        ("flowlens:internal", "", "events_lost"),
        ("flowlens:internal", "", "flows_evicted"),
        ("iface:new_flows", "", "new_flows"),
        ("host:total_flows", c, "flows_as_client"),
        ("host:total_flows", sv, "flows_as_server"),
        ("host:traffic", c, "bytes_sent"),
        ("host:traffic", c, "bytes_rcvd"),
        ("host:traffic", sv, "bytes_sent"),
        ("host:traffic", sv, "bytes_rcvd"),
    ];
    let read = |t: &str, (m, a, f): (&str, &str, &str)| {
        if a.is_empty() {
            value(t, m, &[], f)
        } else {
            host(t, m, a, f)
        }
    };
    for pair in batches.windows(2) {
        for counter in counters {
            let (before, after) = (read(&pair[0], counter), read(&pair[1], counter));
            assert!(
                before <= after,
                "{counter:?} went back: {before} -> {after}"
            );
        }
    }
    let d = |counter| read(last, counter) - read(first, counter);
    let lost = d(counters[1]);
    let evicted = d(counters[2]);
    assert!(
        lost > 0,
        "a 4 KiB ring cannot hold {N} connections' records"
    );
    let (clients, servers) = (d(counters[4]), d(counters[5]));
    // Never more than happened; what is missing was counted as lost.
    assert!(clients <= N && servers <= N, "{clients} {servers} of {N}");
    assert!(
        clients + servers + lost + evicted >= 2 * N,
        "{clients} client and {servers} server flows of {N} connections, {lost} events lost"
    );
    // One byte each way per connection: never more bytes than flows counted.
    for (bytes, flows) in [
        (d(counters[6]), clients),
        (d(counters[7]), clients),
        (d(counters[8]), servers),
        (d(counters[9]), servers),
    ] {
        assert!((0..=flows).contains(&bytes), "{bytes} bytes, {flows} flows");
    }
    assert!(read(last, counters[3]) - read(first, counters[3]) >= clients + servers);
    // Nothing stays active.
    assert_eq!(host(last, "host:active_flows", c, "flows_as_client"), 0);
    assert_eq!(host(last, "host:active_flows", sv, "flows_as_server"), 0);
    eprintln!("{N} connections: {clients} client and {servers} server flows, {lost} lost");
    assert!(complaints(&s.log()).is_empty(), "{:?}", s.log());
    s.finish();
}

// ---------------------------------------------------------------------------------------------
// Network namespaces

/// A network namespace kept alive by its file, with or without its name.
struct HeldNetns(std::fs::File);

impl HeldNetns {
    fn open(name: &str) -> HeldNetns {
        HeldNetns(std::fs::File::open(format!("/run/netns/{name}")).unwrap())
    }

    /// Its TCP sockets but those listening or in TIME_WAIT, as /proc/thread-self/net/tcp lists
    /// them on a thread that entered it.
    fn tcp_sockets_open(&self) -> usize {
        use std::os::fd::AsRawFd;
        let file = self.0.try_clone().unwrap();
        thread::spawn(move || {
            // SAFETY: a valid namespace fd; setns only affects this thread.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            std::fs::read_to_string("/proc/thread-self/net/tcp")
                .unwrap()
                .lines()
                .skip(1)
                .filter(|l| !matches!(l.split_whitespace().nth(3), Some("06" | "0A")))
                .count()
        })
        .join()
        .unwrap()
    }
}

#[test]
fn network_namespaces_created_and_destroyed_while_gathers_run() {
    let Some(_serial) = root_test("network_namespaces_created_and_destroyed_while_gathers_run")
    else {
        return;
    };
    const ROUNDS: usize = 16;
    const CONNS: usize = 6;
    const N: i64 = (ROUNDS * CONNS) as i64;
    let mut s = Session::start("");
    let pid = s.child.id();
    s.gather();
    let t0 = s.gather();
    let (fds0, threads0) = (open_fds(pid), proc_status(pid, "Threads"));
    let done = Arc::new(AtomicBool::new(false));
    let churner = {
        let done = Arc::clone(&done);
        thread::spawn(move || {
            for _ in 0..ROUNDS {
                let pair = NetnsPair::new("flfn", 217);
                let listener = in_netns(&pair.ns[1], || TcpListener::bind("10.217.0.2:7000"))
                    .expect("listen in the namespace");
                // The server keeps every connection (one byte each way) until told.
                let (tx, rx) = std::sync::mpsc::channel::<()>();
                let server = thread::spawn(move || {
                    let conns: Vec<TcpStream> = (0..CONNS)
                        .map(|_| {
                            let mut conn = listener.accept().unwrap().0;
                            let mut b = [0u8; 1];
                            conn.read_exact(&mut b).unwrap();
                            conn.write_all(b"y").unwrap();
                            conn
                        })
                        .collect();
                    let _ = rx.recv();
                    drop(conns);
                });
                let mut clients: Vec<TcpStream> = in_netns(&pair.ns[0], || {
                    (0..CONNS)
                        .map(|_| {
                            let mut c = TcpStream::connect("10.217.0.2:7000").unwrap();
                            c.write_all(b"x").unwrap();
                            let mut b = [0u8; 1];
                            c.read_exact(&mut b).unwrap();
                            c
                        })
                        .collect()
                });
                // Half close while their namespaces have names, half after `ip netns del`.
                // Both namespaces are held open (their files) until every connection has
                // ended: else, when the side that closed first has no socket left (its last
                // one a time-wait mini-socket, which holds no namespace), its namespace and
                // the veth go, and the other side's FIN waits in LAST_ACK for an ACK that never
                // comes: the kernel holds that socket for minutes, and flowlens rightly counts
                // it active. Which side that is depends on how the threads run.
                let held = [HeldNetns::open(&pair.ns[0]), HeldNetns::open(&pair.ns[1])];
                clients.truncate(CONNS / 2);
                drop(pair);
                drop(clients);
                tx.send(()).unwrap();
                server.join().unwrap();
                let started = std::time::Instant::now();
                while held.iter().any(|h| h.tcp_sockets_open() > 0) {
                    assert!(started.elapsed() < session::HANG, "connections never end");
                    thread::sleep(Duration::from_millis(20));
                }
                drop(held);
            }
            done.store(true, Ordering::SeqCst);
        })
    };
    let mut gathers = 0;
    while !done.load(Ordering::SeqCst) {
        s.gather();
        gathers += 1;
        thread::sleep(Duration::from_millis(10));
    }
    churner.join().unwrap();
    thread::sleep(Duration::from_millis(300));
    s.gather();
    s.gather();
    let t = s.gather();
    eprintln!("{gathers} gathers while {ROUNDS} pairs of namespaces came and went");
    let d = |m: &str, a: &str, f: &str| host(&t, m, a, f) - host(&t0, m, a, f);
    let lost = internal(&t, "events_lost") - internal(&t0, "events_lost");
    for (addr, role) in [
        ("10.217.0.1", "flows_as_client"),
        ("10.217.0.2", "flows_as_server"),
    ] {
        let flows = d("host:total_flows", addr, role);
        assert!(
            (N - lost..=N).contains(&flows),
            "{addr} {role}: {flows} of {N}, {lost} lost"
        );
        let sent = d("host:traffic", addr, "bytes_sent");
        assert!(
            (N - lost..=N).contains(&sent),
            "{addr}: {sent} bytes of {N}"
        );
        assert_eq!(host(&t, "host:active_flows", addr, role), 0, "{t}");
    }
    assert!(complaints(&s.log()).is_empty(), "{:?}", s.log());
    assert_eq!(open_fds(pid), fds0, "descriptors left behind");
    assert_eq!(proc_status(pid, "Threads"), threads0, "threads left behind");
    s.finish();
}

// ---------------------------------------------------------------------------------------------
// Containers: cgroups and runtime metadata

/// 64-hex container ids of these tests.
fn container_id(seed: u64) -> String {
    format!("{:012x}{}", 0xfa17_0000_0000_u64 + seed, "c3".repeat(26))
}

/// A parent slice for this test run's container cgroups.
fn faults_slice() -> Cgroup {
    Cgroup::new(&format!("flfaults-{}.slice", std::process::id()))
}

/// The cgroup Docker's systemd driver makes for container `id`, under `slice`.
fn docker_cgroup(slice: &Cgroup, id: &str) -> Cgroup {
    let name = format!(
        "{}/docker-{id}.scope",
        slice.0.file_name().unwrap().to_str().unwrap()
    );
    Cgroup::new(&name)
}

/// What the stand-in process runs: one connection, a byte each way, "ok", then it holds the
/// connection until its stdin closes.
const HOLDER: &str = "import socket, sys\n\
s = socket.create_connection((sys.argv[2], int(sys.argv[3])), source_address=(sys.argv[1], 0))\n\
s.sendall(b'x')\n\
s.recv(1)\n\
print('ok', flush=True)\n\
sys.stdin.read()\n\
s.close()\n";

/// A process in `cgroup` holding one connection from `local` to `remote`.
struct Holder {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Holder {
    fn start(cgroup: &Cgroup, local: Ipv4Addr, remote: SocketAddrV4) -> Holder {
        let mut child = spawn_ready(
            Command::new("sh")
                .args([
                    "-c",
                    "echo $$ > \"$0/cgroup.procs\" && exec python3 -c \"$1\" \"$2\" \"$3\" \"$4\"",
                ])
                .arg(&cgroup.0)
                .args([
                    HOLDER,
                    &local.to_string(),
                    &remote.ip().to_string(),
                    &remote.port().to_string(),
                ])
                .stdin(Stdio::piped()),
            "ok",
            &format!("the holder in {}", cgroup.0.display()),
        );
        let stdin = child.stdin.take();
        Holder { child, stdin }
    }

    /// Closes the connection and waits for the process to exit.
    fn end(mut self) {
        drop(self.stdin.take());
        let status = self.child.wait().unwrap();
        assert!(status.success(), "{status}");
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback server answering every connection as [`answer_one`] (one thread each), until
/// dropped.
struct Server {
    addr: SocketAddrV4,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl Server {
    fn start(ip: Ipv4Addr) -> Server {
        let (listener, addr) = listen_on(ip);
        let stop = Arc::new(AtomicBool::new(false));
        let acceptor = {
            let stop = Arc::clone(&stop);
            thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    if let Ok(conn) = conn {
                        thread::spawn(move || answer_one(conn));
                    }
                }
            })
        };
        Server {
            addr,
            stop,
            acceptor: Some(acceptor),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
    }
}

/// Docker's `config.v2.json` of container `id` named `name`.
fn docker_config(id: &str, name: &str) -> String {
    format!(r#"{{"ID":"{id}","Name":"/{name}","Config":{{"Labels":{{}}}}}}"#)
}

/// The tags of the `container:num_flows` line of container `short`, if there is one.
fn container_tags(text: &str, short: &str) -> Option<Vec<(String, String)>> {
    parse_lines(text)
        .unwrap()
        .into_iter()
        .find(|p| {
            p.measurement == "container:num_flows"
                && p.tags.iter().any(|(k, v)| k == "container" && v == short)
        })
        .map(|p| p.tags)
}

fn tag<'a>(tags: &'a [(String, String)], key: &str) -> Option<&'a str> {
    tags.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

#[test]
fn a_cgroup_removed_between_its_sockets_close_and_the_gather() {
    let Some(_serial) = root_test("a_cgroup_removed_between_its_sockets_close_and_the_gather")
    else {
        return;
    };
    let meta = TempDir::new("faults-cgroup");
    let docker = meta.join("docker");
    let empty = meta.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let (warm, kept, removed) = (container_id(1), container_id(2), container_id(3));
    for (id, name) in [(&warm, "warm"), (&kept, "kept"), (&removed, "removed")] {
        std::fs::create_dir_all(docker.join(id)).unwrap();
        std::fs::write(
            docker.join(id).join("config.v2.json"),
            docker_config(id, name),
        )
        .unwrap();
    }
    let config = format!(
        "docker_containers_dir = \"{}\"\ncontainerd_state_dir = \"{e}\"\n\
         crio_storage_dir = \"{e}\"\nkubelet_log_dir = \"{e}\"\n",
        docker.display(),
        e = empty.display()
    );
    let slice = faults_slice();
    let server = Server::start(Ipv4Addr::new(127, 218, 0, 2));
    let mut s = Session::start(&config);
    // A container with a live connection: the gather that first sees it walks the cgroup tree
    // (at most once a second).
    let warm_cgroup = docker_cgroup(&slice, &warm);
    let warm_holder = Holder::start(&warm_cgroup, Ipv4Addr::new(127, 218, 0, 4), server.addr);
    let t0 = s.gather();
    let walked = Instant::now();
    assert!(container_tags(&t0, &warm[..12]).is_some(), "{t0}");

    // A container whose cgroup outlives the gather, with one connection that ended before it.
    let cgroup = docker_cgroup(&slice, &kept);
    Holder::start(&cgroup, Ipv4Addr::new(127, 218, 0, 1), server.addr).end();
    thread::sleep(Duration::from_millis(100));
    let t1 = s.gather();
    let soon = walked.elapsed() < Duration::from_secs(1);
    // Within a second of the last walk its cgroup is not known yet: the next gather after the
    // second names it, with the connection.
    thread::sleep(Duration::from_millis(1100).saturating_sub(walked.elapsed()));
    let t2 = s.gather();
    eprintln!(
        "the ended connection's container in the gather {} ms after the walk: {}",
        walked.elapsed().as_millis(),
        container_tags(&t1, &kept[..12]).is_some()
    );
    if soon {
        assert!(container_tags(&t1, &kept[..12]).is_none(), "{t1}");
    }
    let tags = container_tags(&t2, &kept[..12])
        .unwrap_or_else(|| panic!("container {} has a series:\n{t2}", &kept[..12]));
    assert_eq!(tag(&tags, "container_name"), Some("kept"), "{tags:?}");
    assert_eq!(
        value(
            &t2,
            "container:new_flows",
            &[("container", &kept[..12])],
            "as_client"
        ),
        1,
        "{t2}"
    );
    assert_eq!(
        value(
            &t2,
            "container:traffic",
            &[("container", &kept[..12])],
            "bytes_sent"
        ),
        1,
        "{t2}"
    );
    drop(cgroup);

    // A container that connects, exits and whose cgroup is removed, all before the gather.
    let cgroup = docker_cgroup(&slice, &removed);
    let path = cgroup.0.clone();
    Holder::start(&cgroup, Ipv4Addr::new(127, 218, 0, 3), server.addr).end();
    drop(cgroup);
    assert!(!path.exists(), "{} removed", path.display());
    thread::sleep(Duration::from_millis(100));
    let mut after = vec![s.gather()];
    // Once more after the next walk is due.
    thread::sleep(Duration::from_millis(1100));
    after.push(s.gather());
    for t in &after {
        // Counted on its host and interface ...
        let lost = internal(t, "events_lost") - internal(&t0, "events_lost");
        let d = |m: &str, a: &str, f: &str| host(t, m, a, f) - host(&t0, m, a, f);
        assert!(
            (1 - lost..=1).contains(&d("host:total_flows", "127.218.0.3", "flows_as_client")),
            "{t}"
        );
        assert!((1 - lost..=1).contains(&d("host:traffic", "127.218.0.3", "bytes_sent")));
        assert!((1 - lost..=1).contains(&d("host:traffic", "127.218.0.3", "bytes_rcvd")));
        assert!((2 - lost..=2).contains(&d("host:total_flows", "127.218.0.2", "flows_as_server")));
        // ... in no container series: nothing can name its cgroup any more.
        assert!(
            container_tags(t, &removed[..12]).is_none(),
            "no series for the removed container:\n{t}"
        );
        assert!(container_tags(t, &warm[..12]).is_some(), "{t}");
    }
    assert!(complaints(&s.log()).is_empty(), "{:?}", s.log());
    warm_holder.end();
    s.finish();
}

/// Ways a metadata root, or a file under one, can be broken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Broken {
    Missing,
    /// Mode 000: flowlens keeps no CAP_DAC_* after start-up, so even root cannot read it.
    Unreadable,
    SymlinkLoop,
    Fifo,
    /// A 16 GiB sparse file.
    Huge,
}

impl Broken {
    const ALL: [Broken; 5] = [
        Broken::Missing,
        Broken::Unreadable,
        Broken::SymlinkLoop,
        Broken::Fifo,
        Broken::Huge,
    ];

    /// Makes `path` broken this way. `Unreadable` takes an existing file or directory.
    fn make(self, path: &Path) {
        use std::os::unix::fs::PermissionsExt;
        match self {
            Broken::Missing => {}
            Broken::Unreadable => {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o000)).unwrap()
            }
            Broken::SymlinkLoop => std::os::unix::fs::symlink(path, path).unwrap(),
            Broken::Fifo => {
                let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
                // SAFETY: a valid NUL-terminated path.
                assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
            }
            Broken::Huge => std::fs::File::create(path)
                .unwrap()
                .set_len(16 << 30)
                .unwrap(),
        }
    }
}

/// Sets everything of `root` readable again, so that it can be removed.
fn restore_permissions(root: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = Command::new("chmod")
        .args(["-R", "u+rwx"])
        .arg(root)
        .status();
    let _ = std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700));
}

#[test]
fn broken_metadata_roots_are_skipped_and_logged_while_gathers_go_on() {
    let Some(_serial) = root_test("broken_metadata_roots_are_skipped_and_logged") else {
        return;
    };
    let id = container_id(3);
    let short = &id[..12];
    let slice = faults_slice();
    let cgroup = docker_cgroup(&slice, &id);
    let server = Server::start(Ipv4Addr::new(127, 219, 0, 2));
    let holder = Holder::start(&cgroup, Ipv4Addr::new(127, 219, 0, 1), server.addr);
    for broken in Broken::ALL {
        let tmp = TempDir::new("faults-roots");
        let root = |key: &str| tmp.join(key);
        if broken == Broken::Unreadable {
            // Each root holds what would name the container, were it readable.
            let docker = root("docker").join(&id);
            std::fs::create_dir_all(&docker).unwrap();
            std::fs::write(docker.join("config.v2.json"), docker_config(&id, "secret")).unwrap();
            let bundle = root("containerd").join("moby").join(&id);
            std::fs::create_dir_all(&bundle).unwrap();
            std::fs::write(bundle.join("config.json"), r#"{"annotations":null}"#).unwrap();
            let crio = root("crio").join(&id).join("userdata");
            std::fs::create_dir_all(&crio).unwrap();
            std::fs::write(crio.join("config.json"), r#"{"annotations":{}}"#).unwrap();
            std::fs::create_dir_all(root("kubelet")).unwrap();
            std::os::unix::fs::symlink(
                "/dev/null",
                root("kubelet").join(format!("pod_ns_secret-{id}.log")),
            )
            .unwrap();
            std::fs::create_dir_all(root("cgroup2")).unwrap();
        }
        let keys = [
            ("cgroup2_root", "cgroup2"),
            ("containerd_state_dir", "containerd"),
            ("crio_storage_dir", "crio"),
            ("docker_containers_dir", "docker"),
            ("kubelet_log_dir", "kubelet"),
        ];
        let mut config = String::new();
        for (key, dir) in keys {
            broken.make(&root(dir));
            config.push_str(&format!("{key} = \"{}\"\n", root(dir).display()));
        }
        let mut s = Session::start(&config);
        let pid = s.child.id();
        for _ in 0..3 {
            let t = s.gather();
            // The container is still told apart (from /proc/<pid>/cgroup when the cgroup2
            // root is what is broken), without names.
            let tags = container_tags(&t, short)
                .unwrap_or_else(|| panic!("{broken:?}: container {short} has a series:\n{t}"));
            assert_eq!(tag(&tags, "container_name"), None, "{broken:?}: {tags:?}");
            assert_eq!(
                value(
                    &t,
                    "container:num_flows",
                    &[("container", short)],
                    "as_client"
                ),
                1,
                "{broken:?}:\n{t}"
            );
            assert_eq!(
                host(&t, "host:active_flows", "127.219.0.1", "flows_as_client"),
                1,
                "{broken:?}"
            );
        }
        assert!(
            proc_status(pid, "VmHWM") < 1 << 20,
            "{broken:?}: more than 1 GiB resident"
        );
        let log = s.log();
        let warned = complaints(&log);
        assert!(
            !warned.iter().any(|l| l.starts_with("E! ")),
            "{broken:?}: {warned:?}"
        );
        for (key, dir) in keys {
            let path = root(dir).display().to_string();
            let named = warned.iter().filter(|l| l.contains(&path)).count();
            if broken == Broken::Missing && key != "cgroup2_root" {
                // A runtime that is not installed: nothing to say.
                assert_eq!(named, 0, "{broken:?} {key}: {warned:?}");
            } else {
                assert!(named >= 1, "{broken:?} {key} is logged: {warned:?}");
            }
        }
        eprintln!("{broken:?}: {} warnings", warned.len());
        s.finish();
        restore_permissions(&tmp.0);
    }
    holder.end();
}

#[test]
fn broken_metadata_files_are_skipped_and_logged_once_while_gathers_go_on() {
    let Some(_serial) = root_test("broken_metadata_files_are_skipped_and_logged_once") else {
        return;
    };
    let meta = TempDir::new("faults-files");
    let docker = meta.join("docker");
    let empty = meta.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    // One container per way its config.v2.json is broken, one whose directory is itself a
    // FIFO, and one that is fine.
    #[derive(Debug)]
    enum Case {
        Fine,
        File(Broken),
        DirIsFifo,
    }
    let cases = [
        Case::Fine,
        Case::File(Broken::Unreadable),
        Case::File(Broken::SymlinkLoop),
        Case::File(Broken::Fifo),
        Case::File(Broken::Huge),
        Case::DirIsFifo,
    ];
    let slice = faults_slice();
    let server = Server::start(Ipv4Addr::new(127, 220, 0, 2));
    let mut holders = Vec::new();
    let mut cgroups = Vec::new();
    let mut broken_paths = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let id = container_id(10 + i as u64);
        let dir = docker.join(&id);
        let file = dir.join("config.v2.json");
        match case {
            Case::Fine => {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&file, docker_config(&id, "fine")).unwrap();
            }
            Case::File(broken) => {
                std::fs::create_dir_all(&dir).unwrap();
                if *broken == Broken::Unreadable {
                    std::fs::write(&file, docker_config(&id, "secret")).unwrap();
                }
                broken.make(&file);
                broken_paths.push((case, file));
            }
            Case::DirIsFifo => {
                std::fs::create_dir_all(&docker).unwrap();
                Broken::Fifo.make(&dir);
                broken_paths.push((case, file));
            }
        }
        let cgroup = docker_cgroup(&slice, &id);
        let local = Ipv4Addr::new(127, 220, 1, 1 + i as u8);
        holders.push((id, Holder::start(&cgroup, local, server.addr)));
        cgroups.push(cgroup);
    }
    let config = format!(
        "docker_containers_dir = \"{}\"\ncontainerd_state_dir = \"{e}\"\n\
         crio_storage_dir = \"{e}\"\nkubelet_log_dir = \"{e}\"\n",
        docker.display(),
        e = empty.display()
    );
    let mut s = Session::start(&config);
    let pid = s.child.id();
    for _ in 0..3 {
        let t = s.gather();
        for ((id, _), case) in holders.iter().zip(&cases) {
            let tags = container_tags(&t, &id[..12])
                .unwrap_or_else(|| panic!("{case:?}: container {id} has a series:\n{t}"));
            let name = tag(&tags, "container_name");
            match case {
                Case::Fine => assert_eq!(name, Some("fine"), "{tags:?}"),
                _ => assert_eq!(name, None, "{case:?}: {tags:?}"),
            }
            assert_eq!(
                value(
                    &t,
                    "container:num_flows",
                    &[("container", &id[..12])],
                    "as_client"
                ),
                1,
                "{case:?}:\n{t}"
            );
        }
    }
    assert!(
        proc_status(pid, "VmHWM") < 1 << 20,
        "more than 1 GiB resident"
    );
    let log = s.log();
    let warned = complaints(&log);
    for (case, path) in &broken_paths {
        let path = path.display().to_string();
        let n = warned.iter().filter(|l| l.contains(&path)).count();
        assert_eq!(n, 1, "{case:?}: one warning names {path}: {warned:?}");
    }
    assert_eq!(warned.len(), broken_paths.len(), "{warned:?}");
    s.finish();
    for (_, h) in holders {
        h.end();
    }
    restore_permissions(&meta.0);
}

// ---------------------------------------------------------------------------------------------
// stdout blocked

/// Whether the main thread of `pid` is blocked writing to its stdout (`/proc/<pid>/syscall`:
/// write or writev on fd 1).
fn blocked_writing_stdout(pid: u32) -> bool {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/syscall")) else {
        return false;
    };
    let mut words = text.split_whitespace();
    let (nr, fd) = (words.next(), words.next());
    let write =
        nr.is_some_and(|n| n == libc::SYS_write.to_string() || n == libc::SYS_writev.to_string());
    write && fd == Some("0x1")
}

/// The timestamp of a batch (its `flowlens:internal` line's), in ns since the epoch.
fn batch_time(batch: &str) -> i64 {
    let internal = lines_of(batch, "flowlens:internal");
    internal[0]
        .rsplit(' ')
        .next()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("a timestamp: {internal:?}"))
}

#[test]
fn a_blocked_stdout_keeps_the_collector_counting_in_flat_memory() {
    let Some(_serial) = root_test("a_blocked_stdout_keeps_the_collector_counting") else {
        return;
    };
    // A 2 MiB ring holds 11915 records: if nothing read it while stdout is blocked, the 16000
    // records of the churn below would lose at least 4085.
    const THREADS: usize = 4;
    const STEPS: usize = 4;
    const PER_STEP: usize = 500; // per thread
    const N: i64 = (THREADS * STEPS * PER_STEP) as i64;
    let dir = TempDir::new("faults-pipe");
    let config = dir.join("flowlens.toml");
    std::fs::write(&config, "interval_secs = 1\nring_buffer_bytes = 2097152\n").unwrap();
    let mut child = flowlens(&["--config", config.to_str().unwrap(), "stream"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let stdout = child.stdout.take().unwrap();
    // The smallest pipe: one page.
    // SAFETY: fcntl on a pipe descriptor we own.
    let rc = unsafe { libc::fcntl(stdout.as_raw_fd(), libc::F_SETPIPE_SZ, 4096) };
    assert!(
        rc >= 4096,
        "F_SETPIPE_SZ: {}",
        std::io::Error::last_os_error()
    );
    let log = Arc::new(Mutex::new(Vec::new()));
    {
        let log = Arc::clone(&log);
        let stderr = child.stderr.take().unwrap();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("flowlens: {line}");
                log.lock().unwrap().push(line);
            }
        });
    }
    let mut reader = BufReader::new(stdout);
    let mut checker = monotonic::Checker::live();
    let mut read_batch = || {
        let mut batch = String::new();
        loop {
            let mut line = String::new();
            assert!(reader.read_line(&mut line).unwrap() > 0, "stdout ended");
            batch.push_str(&line);
            if line.starts_with("flowlens:internal") {
                flowlens_core::lineproto::validate(&batch).unwrap();
                checker.check(&batch);
                return batch;
            }
        }
    };
    let t0 = read_batch();
    // Nobody reads any more: the next gather's write fills the pipe and waits.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !blocked_writing_stdout(pid) {
        assert!(
            Instant::now() < deadline,
            "flowlens never blocked on stdout"
        );
        thread::sleep(Duration::from_millis(50));
    }
    let (listener, server) = listen_on(Ipv4Addr::new(127, 215, 0, 2));
    let servers = serve(listener, N as usize, THREADS);
    let mut rss = vec![proc_status(pid, "VmRSS")];
    for _ in 0..STEPS {
        join_all(churn(
            Ipv4Addr::new(127, 215, 0, 1),
            server,
            THREADS,
            PER_STEP,
        ));
        rss.push(proc_status(pid, "VmRSS"));
    }
    join_all(servers);
    thread::sleep(Duration::from_millis(200));
    assert!(
        blocked_writing_stdout(pid),
        "flowlens was blocked on stdout all through the churn"
    );
    eprintln!(
        "VmRSS (kB) while blocked, per {} connections: {rss:?}",
        N / STEPS as i64
    );
    // Reading again: what the pipe holds and the batch that waited (gathered before the
    // churn), then the first gathered after it.
    let churned = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    let mut before = 0;
    let t = loop {
        let batch = read_batch();
        if batch_time(&batch) > churned {
            break batch;
        }
        before += 1;
    };
    eprintln!("{before} batches were waiting in the pipe or on its writer");
    let d = |m: &str, a: &str, f: &str| host(&t, m, a, f) - host(&t0, m, a, f);
    let lost = internal(&t, "events_lost") - internal(&t0, "events_lost");
    assert!(
        lost <= N / 10,
        "{lost} events lost: the ring was not read while stdout was blocked"
    );
    eprintln!("{N} connections while stdout was blocked: {lost} events lost");
    for (addr, role) in [
        ("127.215.0.1", "flows_as_client"),
        ("127.215.0.2", "flows_as_server"),
    ] {
        let flows = d("host:total_flows", addr, role);
        assert!(
            (N - lost..=N).contains(&flows),
            "{addr}: {flows} of {N}, {lost} lost:\n{t0}\n{t}"
        );
        let sent = d("host:traffic", addr, "bytes_sent");
        assert!(
            (N - lost..=N).contains(&sent),
            "{addr}: {sent} bytes of {N}"
        );
    }
    // Memory stays flat: whatever the churn made it hold while blocked is less than half of
    // what keeping its records (two of 176 bytes per connection) would take.
    let grown = rss.iter().max().unwrap() - rss[0];
    let records_kb = (2 * N as u64 * 176) >> 10;
    assert!(
        grown < records_kb / 2,
        "VmRSS grew by {grown} kB while stdout was blocked ({records_kb} kB of records): \
         {rss:?} kB"
    );
    let log = log.lock().unwrap().clone();
    assert!(complaints(&log).is_empty(), "{log:?}");
    signal(pid, libc::SIGTERM);
    // What is left of stdout, then the exit.
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest).unwrap();
    checker.feed(&String::from_utf8_lossy(&rest));
    checker.finish();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
}

//! Ground truth under load: flowlens started and restarted in the middle of connection churn,
//! bulk transfers, UDP read with peeks and pods coming and going, its totals held against the
//! workload's own counts and `ss -tin`.
//!
//! Stand-in pods (containerd bundles, cgroup2 directories, two network namespaces joined by a
//! veth pair): `truth/server-0` (container `srv`: a request/response server on TCP port 80, a
//! one-byte echo on port 81, a UDP echo on port 5353 that peeks before it reads),
//! `truth/client-0` (container `cli`: the measured workload, driven by the test through FIFOs),
//! and `truth/churn-N` pods whose container opens and closes connections to port 81 as fast as
//! it can: flowlens starts and restarts while one of them runs, and each goes away in turn.
//!
//! What must hold: the `cli` container's `container:traffic` counters of the first run plus
//! those of the second equal what the workload moved from just before the first start (its own
//! count, and for its four long-lived connections the increase of `ss -tin`'s `bytes_acked` and
//! `bytes_received`), unless flowlens counted a loss; after a churner stops, its container has no
//! active flow left and the server only the long-lived ones (no ghost flows).

use flowlens_tests::{
    in_ci, require_root,
    session::{sum, value, Session},
    sh,
    standins::StandIns,
    NetnsPair, TempDir,
};
use std::{
    fs::File,
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

/// The server container: request/response on 80 (an 8-byte header: bytes that follow, bytes
/// wanted back), a one-byte echo on 81, a UDP echo on 5353 that peeks at each datagram first.
const SERVER: &str = r#"
import socket, struct, sys, threading
host = sys.argv[1]
def recvn(c, n):
    buf = bytearray()
    while len(buf) < n:
        d = c.recv(min(65536, n - len(buf)))
        if not d:
            return None
        buf += d
    return buf
def requests(c):
    try:
        while True:
            h = recvn(c, 8)
            if h is None:
                break
            n, want = struct.unpack("!II", h)
            if recvn(c, n) is None:
                break
            c.sendall(b"r" * want)
    except OSError:
        pass
    c.close()
def echo1(c):
    try:
        while True:
            d = c.recv(1)
            if not d:
                break
            c.sendall(d)
    except OSError:
        pass
    c.close()
def accept(s, fn):
    while True:
        c, _ = s.accept()
        threading.Thread(target=fn, args=(c,), daemon=True).start()
for port, fn in ((80, requests), (81, echo1)):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port))
    s.listen(1024)
    threading.Thread(target=accept, args=(s, fn), daemon=True).start()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.bind((host, 5353))
print("ready", flush=True)
while True:
    u.recvfrom(65536, socket.MSG_PEEK)
    d, a = u.recvfrom(65536)
    u.sendto(d, a)
"#;

/// The measured client: one command per line of the FIFO `argv[2]`, one JSON answer per
/// command on the FIFO `argv[3]` with what it moved so far (payload bytes, its own count):
///   open K     K long-lived connections to port 80
///   bulk N     on each long-lived connection, N bytes out (plus the header) and N back
///   churn N    N short connections: 100 bytes out (plus the header), 300 back, close
///   udp N      N datagrams of 1000 bytes to port 5353 on a connected socket; each answer
///              peeked at, then read
///   totals     nothing; the answer
const CLIENT: &str = r#"
import json, socket, struct, sys
srv = sys.argv[1]
moved = {"bulk": [0, 0], "churn": [0, 0], "udp": [0, 0]}
bulk = []
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.connect((srv, 5353))
def exchange(c, n, want, into):
    c.sendall(struct.pack("!II", n, want) + b"q" * n)
    got = 0
    while got < want:
        d = c.recv(min(65536, want - got))
        if not d:
            raise EOFError("server closed")
        got += len(d)
    into[0] += 8 + n
    into[1] += got
print("ready", flush=True)
cmds = open(sys.argv[2])
out = open(sys.argv[3], "w")
for line in cmds:
    w = line.split()
    if w[0] == "open":
        for _ in range(int(w[1])):
            bulk.append(socket.create_connection((srv, 80)))
    elif w[0] == "bulk":
        for c in bulk:
            exchange(c, int(w[1]), int(w[1]), moved["bulk"])
    elif w[0] == "churn":
        for _ in range(int(w[1])):
            c = socket.create_connection((srv, 80))
            exchange(c, 100, 300, moved["churn"])
            c.close()
    elif w[0] == "udp":
        for _ in range(int(w[1])):
            u.send(b"u" * 1000)
            moved["udp"][0] += 1000
            u.recv(2000, socket.MSG_PEEK)
            moved["udp"][1] += len(u.recv(2000))
    out.write(json.dumps(moved) + "\n")
    out.flush()
"#;

/// A churner: connect to port 81, one byte each way, close, as fast as it can, while the file
/// `argv[2]` exists.
const CHURNER: &str = r#"
import os, socket, sys
srv, run = sys.argv[1], sys.argv[2]
print("ready", flush=True)
while os.path.exists(run):
    c = socket.create_connection((srv, 81))
    c.sendall(b"c")
    c.recv(1)
    c.close()
"#;

const POD_NS: &str = "truth";

/// The client container's pipes: commands in, answers out.
struct Driver {
    commands: File,
    answers: BufReader<File>,
}

impl Driver {
    /// Opens both FIFOs (the workload opens them in the same order, so neither side blocks).
    fn open(commands: &Path, answers: &Path) -> Driver {
        let commands = File::options().write(true).open(commands).unwrap();
        let answers = BufReader::new(File::open(answers).unwrap());
        Driver { commands, answers }
    }

    /// Runs one command; returns what the workload moved so far, per kind: [sent, received].
    fn run(&mut self, command: &str) -> serde_json::Value {
        writeln!(self.commands, "{command}").unwrap();
        self.commands.flush().unwrap();
        let mut line = String::new();
        self.answers.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{command}: {e}: {line:?}"))
    }
}

fn mkfifo(path: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
    assert_eq!(rc, 0, "mkfifo {}", std::io::Error::last_os_error());
}

/// The workload's total of one direction (0: sent, 1: received) over every kind.
fn moved(totals: &serde_json::Value, direction: usize) -> i64 {
    ["bulk", "churn", "udp"]
        .iter()
        .map(|kind| totals[kind][direction].as_i64().unwrap())
        .sum()
}

/// `bytes_acked` and `bytes_received` summed over the established connections to port 80 of
/// network namespace `ns`, from `ss -tin`.
fn ss_bytes(ns: &str) -> (i64, i64, usize) {
    let out = sh(
        "ip",
        &[
            "netns",
            "exec",
            ns,
            "ss",
            "-tinH",
            "state",
            "established",
            "( dport = :80 )",
        ],
    );
    let field = |text: &str, name: &str| -> i64 {
        text.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .map_or(0, |v| v.parse().unwrap())
    };
    let (mut acked, mut rcvd, mut n) = (0, 0, 0);
    // Each socket: a line with the addresses, then an indented line with its tcp_info.
    for line in out.lines().filter(|l| l.contains("rtt:")) {
        acked += field(line, "bytes_acked:");
        rcvd += field(line, "bytes_received:");
        n += 1;
    }
    (acked, rcvd, n)
}

/// The losses flowlens counted in a batch (ring overflows, skipped runs, sockets without room).
fn losses(batch: &str) -> i64 {
    value(batch, "flowlens:internal", &[], "events_lost")
        + value(batch, "flowlens:internal", &[], "flows_evicted")
}

/// The `cli` container's bytes in a batch: (sent, received).
fn traffic(batch: &str, tag: &str) -> (i64, i64) {
    let tags = [("container", tag)];
    (
        value(batch, "container:traffic", &tags, "bytes_sent"),
        value(batch, "container:traffic", &tags, "bytes_rcvd"),
    )
}

/// Gathers until `done` holds for a batch (each gather reads the kernel anew; the wait only
/// detects a hang), and returns that batch.
fn gather_until(s: &mut Session, what: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let batch = s.gather();
        if done(&batch) {
            eprintln!(
                "ground truth: {what}: after {:?}",
                Instant::now() + Duration::from_secs(120) - deadline
            );
            return batch;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: never held; last batch:\n{batch}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A churner pod: its container runs until its run file is removed.
struct Churner {
    run: PathBuf,
    tag: String,
}

fn start_churner(pods: &mut StandIns, n: u32, netns: &str, server: &str, dir: &TempDir) -> Churner {
    let uid = format!("7e1a0000-0000-4000-8000-00000000c{n:03}");
    let name = format!("churn-{n}");
    let sandbox = pods.pod(POD_NS, &name, &uid, netns);
    let run = dir.join(&format!("churn-{n}.run"));
    std::fs::write(&run, b"").unwrap();
    let id = pods.container(
        (POD_NS, &name, &uid, &sandbox),
        "churner",
        netns,
        CHURNER,
        &[server, run.to_str().unwrap()],
    );
    Churner {
        run,
        tag: id[..12].to_string(),
    }
}

/// Stops a churner and waits until flowlens sees none of its flows active, and none of the
/// server's TCP flows but the four long-lived connections (a ghost flow never ends: the wait
/// fails). (Its UDP flow stays active until `udp_idle_timeout_secs`.)
fn stop_churner(s: &mut Session, churner: &Churner, srv: &str) -> String {
    std::fs::remove_file(&churner.run).unwrap();
    let churner_tags = [("container", churner.tag.as_str())];
    let srv_tcp = [("container", srv), ("proto", "tcp")];
    gather_until(
        s,
        "the churner's flows end, the server keeps the long-lived ones",
        |b| {
            value(b, "container:num_flows", &churner_tags, "as_client") == 0
                && sum(b, "container:peers", &srv_tcp, "active") == 4
        },
    )
}

#[test]
fn totals_equal_the_workloads_own_counts_across_start_and_restart_under_churn() {
    const TEST: &str = "totals_equal_the_workloads_own_counts_across_start_and_restart_under_churn";
    if !require_root(TEST) {
        return;
    }
    let pair = NetnsPair::new("flgt", 171);
    let (client_ns, server_ns) = (pair.ns[0].clone(), pair.ns[1].clone());
    let server = pair.addrs[1].clone();
    let dir = TempDir::new("ground-truth");
    let mut pods = StandIns::new();

    let srv_uid = "7e1a0000-0000-4000-8000-000000000001";
    let srv_pod = pods.pod(POD_NS, "server-0", srv_uid, &server_ns);
    let srv = pods.container(
        (POD_NS, "server-0", srv_uid, &srv_pod),
        "srv",
        &server_ns,
        SERVER,
        &[&server],
    )[..12]
        .to_string();
    let cli_uid = "7e1a0000-0000-4000-8000-000000000002";
    let cli_pod = pods.pod(POD_NS, "client-0", cli_uid, &client_ns);
    let (commands, answers) = (dir.join("commands"), dir.join("answers"));
    mkfifo(&commands);
    mkfifo(&answers);
    let cli = pods.container(
        (POD_NS, "client-0", cli_uid, &cli_pod),
        "cli",
        &client_ns,
        CLIENT,
        &[
            &server,
            commands.to_str().unwrap(),
            answers.to_str().unwrap(),
        ],
    )[..12]
        .to_string();
    let mut client = Driver::open(&commands, &answers);

    // Before flowlens: four long-lived connections that already moved data, and churn.
    client.run("open 4");
    client.run("bulk 100000");
    let churn1 = start_churner(&mut pods, 1, &client_ns, &server, &dir);
    let before = client.run("totals");
    let (acked0, rcvd0, conns) = ss_bytes(&client_ns);
    assert_eq!(conns, 4, "the long-lived connections");

    // First run: started under churn.
    let mut s = Session::start("");
    if in_ci() {
        let first = s.gather();
        assert!(
            first.contains("probes_failed=0i"),
            "CI loads every probe:\n{first}"
        );
    }
    for step in ["churn 300", "bulk 1000000", "udp 50", "churn 200", "udp 50"] {
        client.run(step);
        s.gather();
    }
    // A pod comes, another goes: the first churner's flows must all end.
    let churn2 = start_churner(&mut pods, 2, &client_ns, &server, &dir);
    stop_churner(&mut s, &churn1, &srv);
    let first_run = s.gather();
    let lost1 = losses(&first_run);
    let run1 = traffic(&first_run, &cli);
    s.finish();

    // Second run: started under the second churner's churn, with the long-lived connections
    // idle (their bytes before it are the first run's).
    let mut s = Session::start("");
    for step in ["bulk 500000", "churn 300", "udp 50", "bulk 250000"] {
        client.run(step);
        s.gather();
    }
    stop_churner(&mut s, &churn2, &srv);
    let after = client.run("totals");
    let (acked1, rcvd1, conns) = ss_bytes(&client_ns);
    assert_eq!(conns, 4, "the long-lived connections");
    let second_run = s.gather();
    let lost2 = losses(&second_run);
    let run2 = traffic(&second_run, &cli);
    s.finish();

    // The workload's own count of the bulk part agrees with the kernel's.
    let bulk = |t: &serde_json::Value, d: usize| t["bulk"][d].as_i64().unwrap();
    assert_eq!(
        (acked1 - acked0, rcvd1 - rcvd0),
        (
            bulk(&after, 0) - bulk(&before, 0),
            bulk(&after, 1) - bulk(&before, 1)
        ),
        "ss -tin against the workload's count of its long-lived connections"
    );
    let expected = (
        moved(&after, 0) - moved(&before, 0),
        moved(&after, 1) - moved(&before, 1),
    );
    let counted = (run1.0 + run2.0, run1.1 + run2.1);
    eprintln!(
        "cli: workload {expected:?}, flowlens {counted:?} (first run {run1:?}, second {run2:?}); \
         losses counted: {lost1} + {lost2}"
    );
    if lost1 + lost2 == 0 {
        assert_eq!(
            counted, expected,
            "flowlens's totals against the workload's own count"
        );
    } else {
        // A counted loss explains a shortfall, never an excess.
        assert!(
            counted.0 <= expected.0 && counted.1 <= expected.1,
            "more than the workload moved: {counted:?} > {expected:?}"
        );
    }
}

//! The ground-truth workload (tests/ground_truth.rs, the soak): a server and a client whose own
//! counts of what they moved are the reference for flowlens's totals, and a churner.

use std::{
    fs::File,
    io::{BufRead, BufReader, Write},
    path::Path,
};

/// The server container: request/response on 80 (an 8-byte header: bytes that follow, bytes
/// wanted back), a one-byte echo on 81, a UDP echo on 5353 that peeks at each datagram first.
pub const SERVER: &str = r#"
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
pub const CLIENT: &str = r#"
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
pub const CHURNER: &str = r#"
import os, socket, sys
srv, run = sys.argv[1], sys.argv[2]
print("ready", flush=True)
while os.path.exists(run):
    c = socket.create_connection((srv, 81))
    c.sendall(b"c")
    c.recv(1)
    c.close()
"#;

/// The client container's pipes: commands in, answers out.
pub struct Driver {
    commands: File,
    answers: BufReader<File>,
}

impl Driver {
    /// Opens both FIFOs (the workload opens them in the same order, so neither side blocks).
    pub fn open(commands: &Path, answers: &Path) -> Driver {
        let commands = File::options().write(true).open(commands).unwrap();
        let answers = BufReader::new(File::open(answers).unwrap());
        Driver { commands, answers }
    }

    /// Runs one command; returns what the workload moved so far.
    pub fn run(&mut self, command: &str) -> Moved {
        writeln!(self.commands, "{command}").unwrap();
        self.commands.flush().unwrap();
        let mut line = String::new();
        self.answers.read_line(&mut line).unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("{command}: {e}: {line:?}"));
        let pair = |kind: &str| [0, 1].map(|d| v[kind][d].as_i64().unwrap());
        Moved {
            bulk: pair("bulk"),
            churn: pair("churn"),
            udp: pair("udp"),
        }
    }
}

/// Payload bytes the client moved, by its own count, per kind: [sent, received].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Moved {
    /// On the long-lived connections.
    pub bulk: [i64; 2],
    /// On the short connections.
    pub churn: [i64; 2],
    /// In UDP datagrams.
    pub udp: [i64; 2],
}

impl Moved {
    /// The total of one direction (0: sent, 1: received) over every kind.
    pub fn total(&self, direction: usize) -> i64 {
        self.bulk[direction] + self.churn[direction] + self.udp[direction]
    }

    /// What was moved since `before`: (sent, received).
    pub fn since(&self, before: &Moved) -> (i64, i64) {
        (
            self.total(0) - before.total(0),
            self.total(1) - before.total(1),
        )
    }
}

pub fn mkfifo(path: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
    assert_eq!(rc, 0, "mkfifo {}", std::io::Error::last_os_error());
}

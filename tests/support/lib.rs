//! Shared helpers for the integration tests: the built binaries, a real InfluxDB 1.x server,
//! network namespaces with veth pairs, and the rule for tests that need root.

pub mod dashboards;
pub mod kube_proxy;
pub mod monotonic;
pub mod runtimes;
pub mod standins;
pub mod truth;

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

/// The cargo target directory the test binary runs from (`target/<profile>`).
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test binary>
    exe.parent()
        .and_then(Path::parent)
        .expect("the test binary lives in target/<profile>/deps")
        .to_path_buf()
}

fn built(name: &str) -> PathBuf {
    let path = target_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace first (`cargo build --workspace`, as tests/run does)",
        path.display()
    );
    path
}

/// The `flowlens` executable under test.
pub fn flowlens_bin() -> PathBuf {
    built("flowlens")
}

/// The `libflowlens.so` under test.
pub fn plugin_lib() -> PathBuf {
    built("libflowlens.so")
}

/// A plugin built with another ABI version (the `wrong-abi` fixture crate).
pub fn wrong_abi_plugin() -> PathBuf {
    built("libflowlens_wrong_abi.so")
}

/// A `Command` for the flowlens binary with the given arguments.
pub fn flowlens(args: &[&str]) -> Command {
    let mut cmd = Command::new(flowlens_bin());
    cmd.args(args);
    cmd
}

/// Spawns `cmd` with its stdout piped and waits for its first line, which must be `expect` (the
/// helper processes of the tests say they are ready this way); `what` names it in the failure.
pub fn spawn_ready(cmd: &mut Command, expect: &str, what: &str) -> Child {
    use std::io::BufRead;
    let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), expect, "{what} did not start");
    child
}

/// Runs flowlens to completion with stdin from /dev/null. The stdout of a mode that gathers
/// (`once`, `stream`, `telegraf`: the mode is the last argument) passes the monotonicity guard.
pub fn run_flowlens(args: &[&str]) -> Output {
    let out = flowlens(args)
        .stdin(Stdio::null())
        .output()
        .expect("flowlens runs");
    if matches!(args.last(), Some(&("once" | "stream" | "telegraf"))) {
        monotonic::checked_stdout(&out);
    }
    out
}

/// The cgroup2 mount point, from /proc/self/mountinfo: `/sys/fs/cgroup/unified` on hybrid
/// hosts, `/sys/fs/cgroup` on unified ones (and in the tests/kernels guests).
pub fn cgroup2_root() -> PathBuf {
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("read /proc/self/mountinfo");
    info.lines()
        .find(|l| {
            l.split(" - ")
                .nth(1)
                .is_some_and(|r| r.starts_with("cgroup2 "))
        })
        .and_then(|l| l.split(' ').nth(4))
        .map(PathBuf::from)
        .expect("a cgroup2 mount in /proc/self/mountinfo")
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Whether we run in CI, where nothing may be skipped.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// For tests that need root: true when they can run. Outside CI a non-root run skips with the
/// reason printed; in CI (`CI=true`) it fails.
pub fn require_root(test: &str) -> bool {
    if is_root() {
        return true;
    }
    assert!(!in_ci(), "{test} needs root, and CI must run it");
    eprintln!("SKIP {test}: needs root (network namespaces, eBPF)");
    false
}

/// For the tests that need root and share the kernel's view (every socket, cgroup and network
/// namespace of the host: the eBPF, container and fault tests): `None` when the test must skip
/// (see [`require_root`]); else a guard that runs them one at a time. The first call of a
/// process also waits until no other process holds the machine's lock (an abstract unix
/// socket), and holds it until the process exits: the suites of two checkouts on one machine
/// (a developer's and a helper's, say) never run at the same time, since their fixed names
/// (namespaces, cgroups, addresses) and their counts of the host's sockets would collide.
pub fn root_test(test: &str) -> Option<std::sync::MutexGuard<'static, ()>> {
    use std::sync::{Mutex, OnceLock};
    static SERIAL: Mutex<()> = Mutex::new(());
    static MACHINE: OnceLock<std::os::unix::net::UnixListener> = OnceLock::new();
    if !require_root(test) {
        return None;
    }
    let guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    MACHINE.get_or_init(|| {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(b"flowlens-test-root-suites")
            .unwrap();
        let mut said = false;
        loop {
            match std::os::unix::net::UnixListener::bind_addr(&addr) {
                Ok(l) => return l,
                Err(_) if !said => {
                    eprintln!("{test}: waiting for another process's root tests to end");
                    said = true;
                }
                Err(_) => {}
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    });
    Some(guard)
}

/// A fresh temporary directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// Creates `/tmp/flowlens-test-<tag>-<pid>-<n>`.
    pub fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "flowlens-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    /// A path inside the directory.
    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs a command and panics with its stderr when it fails.
pub fn sh(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A minimal HTTP/1.1 request (`Connection: close`) to `authority` (host:port), with extra
/// headers, reading the whole reply.
pub fn http_request(
    authority: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> std::io::Result<HttpReply> {
    let mut stream = TcpStream::connect(authority)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {authority}\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok(HttpReply { status, body })
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind loopback")
        .port()
}

/// A real InfluxDB 1.x server (Debian's `influxd`) on loopback ports with a temporary data
/// directory; killed and removed on drop.
pub struct Influxd {
    child: Child,
    /// The HTTP port.
    pub port: u16,
    _dir: TempDir,
}

/// The answer of an HTTP request: status code and body.
pub struct HttpReply {
    /// Status code.
    pub status: u16,
    /// Body text.
    pub body: String,
}

impl Influxd {
    /// Starts influxd and waits until `/ping` answers 204 (at most 30 s). The ports are picked
    /// free but released before influxd binds them, so another process may take one first:
    /// when influxd exits early, it is started again on new ports (3 tries in all).
    pub fn start() -> Influxd {
        let mut failures = Vec::new();
        for _ in 0..3 {
            match Influxd::try_start() {
                Ok(server) => return server,
                Err(why) => failures.push(why),
            }
        }
        panic!("influxd did not start in 3 tries:\n{}", failures.join("\n"));
    }

    /// One attempt: `Err` with influxd's exit status and log when it exits before answering.
    fn try_start() -> Result<Influxd, String> {
        let dir = TempDir::new("influxd");
        let port = free_port();
        let rpc = loop {
            let rpc = free_port();
            if rpc != port {
                break rpc;
            }
        };
        let config = format!(
            "reporting-disabled = true\nbind-address = \"127.0.0.1:{rpc}\"\n\
             [meta]\n  dir = \"{d}/meta\"\n\
             [data]\n  dir = \"{d}/data\"\n  wal-dir = \"{d}/wal\"\n  query-log-enabled = false\n\
             [http]\n  bind-address = \"127.0.0.1:{port}\"\n  log-enabled = false\n\
             [monitor]\n  store-enabled = false\n",
            d = dir.0.display()
        );
        std::fs::write(dir.join("influxdb.conf"), config).unwrap();
        let log_path = dir.join("influxd.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let child = Command::new("influxd")
            .arg("-config")
            .arg(dir.join("influxdb.conf"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("influxd runs: install Debian's influxdb package (tests/run does)");
        let mut server = Influxd {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(reply) = server.request("GET", "/ping", b"") {
                if reply.status == 204 {
                    return Ok(server);
                }
            }
            if let Some(status) = server.child.try_wait().expect("wait for influxd") {
                return Err(format!(
                    "influxd (http {port}, rpc {rpc}) exited with {status}:\n{}",
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                ));
            }
            assert!(
                Instant::now() < deadline,
                "influxd did not answer /ping within 30 s:\n{}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A minimal HTTP/1.1 request on loopback.
    pub fn request(&self, method: &str, path: &str, body: &[u8]) -> std::io::Result<HttpReply> {
        http_request(
            &format!("127.0.0.1:{}", self.port),
            method,
            path,
            &[],
            body,
            Duration::from_secs(30),
        )
    }

    /// Runs an InfluxQL statement through the real `influx` shell; returns its stdout.
    pub fn influx(&self, database: &str, query: &str) -> String {
        let port = self.port.to_string();
        sh(
            "influx",
            &[
                "-port",
                &port,
                "-database",
                database,
                "-precision",
                "rfc3339",
                "-execute",
                query,
            ],
        )
    }

    /// Creates a database.
    pub fn create_database(&self, name: &str) {
        self.influx("", &format!("CREATE DATABASE \"{name}\""));
    }

    /// POSTs line protocol to `/write?db=<db>&precision=ns`.
    pub fn write(&self, database: &str, lines: &[u8]) -> HttpReply {
        self.request("POST", &format!("/write?db={database}&precision=ns"), lines)
            .expect("POST /write")
    }
}

impl Drop for Influxd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A named network namespace (`ip netns add`), deleted on drop (a namespace lives on while
/// sockets or processes still hold it).
pub struct Netns {
    /// Its name, under /run/netns.
    pub name: String,
}

impl Netns {
    /// Creates the namespace `name`, replacing a leftover of that name.
    pub fn new(name: &str) -> Netns {
        let _ = Command::new("ip").args(["netns", "del", name]).output();
        sh("ip", &["netns", "add", name]);
        sh("ip", &["-n", name, "link", "set", "lo", "up"]);
        Netns {
            name: name.to_string(),
        }
    }

    /// Its file, /run/netns/<name>.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Joins namespace `a` (interface `if_a`, `cidr_a` such as "10.1.0.1/24") and `b` with a veth
/// pair, both ends up.
pub fn veth(a: &Netns, if_a: &str, cidr_a: &str, b: &Netns, if_b: &str, cidr_b: &str) {
    sh(
        "ip",
        &[
            "link", "add", if_a, "netns", &a.name, "type", "veth", "peer", "name", if_b, "netns",
            &b.name,
        ],
    );
    for (ns, ifname, cidr) in [(a, if_a, cidr_a), (b, if_b, cidr_b)] {
        sh("ip", &["-n", &ns.name, "addr", "add", cidr, "dev", ifname]);
        sh("ip", &["-n", &ns.name, "link", "set", ifname, "up"]);
    }
}

/// Two network namespaces joined by a veth pair, deleted on drop:
/// `<name>-a` holds `<name>a` with 10.<n>.0.1/24, `<name>-b` holds `<name>b` with 10.<n>.0.2/24.
pub struct NetnsPair {
    /// Namespace names (a, b).
    pub ns: [String; 2],
    /// Interface names (a, b).
    pub ifs: [String; 2],
    /// IPv4 addresses (a, b).
    pub addrs: [String; 2],
    _netns: [Netns; 2],
}

impl NetnsPair {
    /// Creates the pair. `n` (1..=250) keeps concurrent tests apart.
    pub fn new(name: &str, n: u8) -> NetnsPair {
        let ns = [format!("{name}-a"), format!("{name}-b")];
        let ifs = [format!("{name}a"), format!("{name}b")];
        let addrs = [format!("10.{n}.0.1"), format!("10.{n}.0.2")];
        let netns = [Netns::new(&ns[0]), Netns::new(&ns[1])];
        veth(
            &netns[0],
            &ifs[0],
            &format!("{}/24", addrs[0]),
            &netns[1],
            &ifs[1],
            &format!("{}/24", addrs[1]),
        );
        NetnsPair {
            ns,
            ifs,
            addrs,
            _netns: netns,
        }
    }
}

pub mod session;

/// Lines of a line-protocol text that start with `measurement,` (or `measurement `).
pub fn lines_of<'a>(text: &'a str, measurement: &str) -> Vec<&'a str> {
    text.lines()
        .filter(|l| {
            l.strip_prefix(measurement)
                .is_some_and(|rest| rest.starts_with(',') || rest.starts_with(' '))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_package_list_is_read_from_tests_packages_sh() {
        let packages = crate::runtimes::packages();
        for needed in [
            "containerd",
            "runc",
            "docker.io",
            "python3-grpcio",
            "influxdb",
        ] {
            assert!(packages.contains(&needed), "{needed} in {packages:?}");
        }
    }
}

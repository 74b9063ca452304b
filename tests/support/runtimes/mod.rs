//! Real container runtimes for integration tests: Debian's containerd 1.6 (with its CRI plugin,
//! so real Kubernetes-style pods) and dockerd, started by the test with their own configuration,
//! state and data directories under [`BASE`], a CNI bridge for the pods, and a busybox-static
//! image built on the spot (tests/runtimes/image.py). Pods are driven through the CRI v1 gRPC API
//! with tests/runtimes/cri.py (crictl is not packaged), Docker with its CLI.
//!
//! Everything the harness creates is written to an undo list (in memory and in `BASE/undo`) the
//! moment before it is created, and [`RealRuntimes`] undoes it on drop, on every exit path:
//! containers, pods, images, CNI network namespaces and bridge, docker0, cgroup directories in
//! every hierarchy, `/var/log/pods` and `/var/log/containers` entries, `/run/containerd/s`,
//! `/etc/docker/key.json`, the ip_forward sysctl, the daemons and the temporary directories. A
//! run killed before its teardown is cleaned up by the next [`RealRuntimes::start`] from
//! `BASE/undo`. Only one instance runs at a time on a machine (an abstract-socket lock).

mod config;
mod undo;

use config::*;
use undo::*;

use std::{
    collections::BTreeSet,
    fs,
    io::Write,
    os::{linux::net::SocketAddrExt, unix::net::UnixListener},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::{Mutex, OnceLock},
    time::{Duration, Instant},
};

/// Where the harness keeps everything of its own (configs, sockets, containerd root and state,
/// Docker data-root and exec-root, CNI IPAM data, the image, generated Python code, logs).
pub const BASE: &str = "/run/flowlens-runtimes";
/// The image every pod sandbox and container runs (containerd's name for it).
pub const IMAGE: &str = "docker.io/library/flowlens-busybox:test";
/// The same image in Docker.
pub const DOCKER_IMAGE: &str = "flowlens-busybox:test";
/// The CNI bridge the pods are attached to.
pub const CNI_BRIDGE: &str = "flcni0";
/// The pods' subnet (host-local IPAM); the bridge holds `.1`, the host routes it.
pub const POD_SUBNET: &str = "10.88.213.0/24";

/// Debian packages the tests need (tests/packages.sh, `TEST_PACKAGES`: one list for .ci/run,
/// tests/run and this harness); installed by [`RealRuntimes::start`] when missing.
pub fn packages() -> Vec<&'static str> {
    let script = include_str!("../../packages.sh");
    let list = script
        .split_once("TEST_PACKAGES=(")
        .and_then(|(_, rest)| rest.split_once(')'))
        .expect("tests/packages.sh defines TEST_PACKAGES=(...)")
        .0;
    list.split_whitespace().collect()
}

const LOCK_NAME: &[u8] = b"flowlens-test-real-runtimes";
const CNI_BIN: &str = "/usr/lib/cni";

/// A pod started through the CRI.
#[derive(Clone, Debug)]
pub struct Pod {
    /// Pod name (CRI metadata).
    pub name: String,
    /// Pod namespace (CRI metadata).
    pub namespace: String,
    /// Pod UID (random UUID, as the kubelet would pass).
    pub uid: String,
    /// QoS level in the cgroup path: `besteffort`, `burstable` or `guaranteed`.
    pub qos: String,
    /// The sandbox ("pause") container's 64-hex id.
    pub sandbox_id: String,
    /// The pod's IPv4 address on the CNI bridge.
    pub ip: String,
    /// (container name, 64-hex container id), in the order given.
    pub containers: Vec<(String, String)>,
}

impl Pod {
    /// The id of the container with this name; panics when there is none.
    pub fn id(&self, container: &str) -> &str {
        self.containers
            .iter()
            .find(|(n, _)| n == container)
            .map(|(_, id)| id.as_str())
            .unwrap_or_else(|| panic!("pod {} has no container {container}", self.name))
    }

    /// The pod's cgroup path (relative to a hierarchy root), as the kubelet's cgroupfs driver
    /// names it: `/kubepods/besteffort/pod<uid>`, `/kubepods/burstable/pod<uid>`,
    /// `/kubepods/pod<uid>`.
    pub fn cgroup_parent(&self) -> String {
        cgroup_parent(&self.qos, &self.uid)
    }

    /// The cgroup path of one of its containers (or of the sandbox), e.g.
    /// `/kubepods/besteffort/pod<uid>/<64-hex id>`.
    pub fn cgroup_path(&self, container_id: &str) -> String {
        format!("{}/{container_id}", self.cgroup_parent())
    }

    /// `/var/log/pods/<namespace>_<name>_<uid>`.
    pub fn log_dir(&self) -> PathBuf {
        pod_log_dir(&self.namespace, &self.name, &self.uid)
    }
}

/// A container started by Docker.
#[derive(Clone, Debug)]
pub struct DockerContainer {
    /// Container name (Docker writes `"/name"` in config.v2.json).
    pub name: String,
    /// 64-hex id.
    pub id: String,
    /// IPv4 address on Docker's default bridge.
    pub ip: String,
    /// Host PID of its first process.
    pub pid: u32,
}

impl DockerContainer {
    /// Its cgroup path with the cgroupfs driver: `/docker/<id>`.
    pub fn cgroup_path(&self) -> String {
        format!("/docker/{}", self.id)
    }
}

/// What [`RealRuntimes::stop`] did.
#[derive(Debug)]
pub struct Teardown {
    /// How long the teardown took.
    pub took: Duration,
    /// Anything still present afterwards (empty when all is clean).
    pub leftovers: Vec<String>,
}

/// containerd (CRI) and dockerd, started for a test binary. Drop tears everything down.
pub struct RealRuntimes {
    base: PathBuf,
    undo: Mutex<Vec<Undo>>,
    containerd: Mutex<Option<Child>>,
    dockerd: Mutex<Option<Child>>,
    docker_ids: Mutex<BTreeSet<String>>,
    torn_down: Mutex<bool>,
    /// How long [`RealRuntimes::start`] took (packages already installed).
    pub bring_up: Duration,
    _lock: UnixListener,
}

impl RealRuntimes {
    /// Installs missing Debian packages ([`packages`]), cleans up after a previous run that was
    /// killed, then starts containerd (CRI plugin, CNI bridge, the local busybox image as sandbox
    /// image) and dockerd on top of it, and imports the image into both. Needs root: call
    /// `require_root` first. Panics (after tearing down what it started) when anything fails.
    pub fn start() -> RealRuntimes {
        assert!(crate::is_root(), "RealRuntimes needs root");
        let lock = take_lock();
        ensure_packages();
        let base = PathBuf::from(BASE);
        if base.exists() {
            eprintln!("runtimes: cleaning up after an earlier run that did not tear down");
            let stale: Vec<Undo> = fs::read_to_string(base.join("undo"))
                .unwrap_or_default()
                .lines()
                .filter_map(Undo::parse)
                .collect();
            undo_all(&base, &stale);
            let _ = fs::remove_dir_all(&base);
        }
        let t0 = Instant::now();
        let mut rt = RealRuntimes {
            base,
            undo: Mutex::new(Vec::new()),
            containerd: Mutex::new(None),
            dockerd: Mutex::new(None),
            docker_ids: Mutex::new(BTreeSet::new()),
            torn_down: Mutex::new(false),
            bring_up: Duration::ZERO,
            _lock: lock,
        };
        // From here on a panic drops `rt`, which tears down whatever was started.
        rt.bring_up_all();
        rt.bring_up = t0.elapsed();
        rt
    }

    /// One instance shared by every test of the binary, started on first use and torn down when
    /// the test binary exits (an `atexit` handler; a killed binary is cleaned up by the next
    /// start).
    pub fn shared() -> &'static RealRuntimes {
        static SHARED: OnceLock<RealRuntimes> = OnceLock::new();
        extern "C" fn at_exit() {
            if let Some(rt) = SHARED.get() {
                let leftovers = rt.teardown();
                if !leftovers.is_empty() {
                    eprintln!("runtimes: left behind after teardown: {leftovers:#?}");
                }
            }
        }
        SHARED.get_or_init(|| {
            let rt = RealRuntimes::start();
            // SAFETY: registers a plain extern "C" function with no arguments.
            unsafe { libc::atexit(at_exit) };
            rt
        })
    }

    /// The containerd socket (CRI and containerd API).
    pub fn containerd_socket(&self) -> PathBuf {
        self.base.join("containerd.sock")
    }

    /// The Docker API socket.
    pub fn docker_socket(&self) -> PathBuf {
        self.base.join("docker.sock")
    }

    /// (containerd's task directory, i.e. the state dir's `io.containerd.runtime.v2.task`, with
    /// `k8s.io/<id>/config.json` for pods and `moby/<id>/config.json` for Docker; Docker's
    /// containers directory with `<id>/config.v2.json`). The defaults on a real node are
    /// `/run/containerd/io.containerd.runtime.v2.task` and `/var/lib/docker/containers`.
    pub fn state_dirs(&self) -> (PathBuf, PathBuf) {
        (
            self.base
                .join("containerd/state/io.containerd.runtime.v2.task"),
            self.base.join("docker/data/containers"),
        )
    }

    /// Runs a pod in the `besteffort` QoS class: a sandbox plus one container per
    /// (name, shell command), each running `/bin/sh -c <command>` in the busybox image.
    pub fn run_pod(&self, name: &str, namespace: &str, containers: &[(&str, &str)]) -> Pod {
        self.run_pod_qos("besteffort", name, namespace, containers)
    }

    /// [`RealRuntimes::run_pod`] with a QoS class: `besteffort`, `burstable` (cgroups
    /// `/kubepods/<qos>/pod<uid>`) or `guaranteed` (`/kubepods/pod<uid>`). Only the cgroup
    /// parent differs: no resources are set.
    pub fn run_pod_qos(
        &self,
        qos: &str,
        name: &str,
        namespace: &str,
        containers: &[(&str, &str)],
    ) -> Pod {
        self.run_pod_mounting(qos, name, namespace, containers, &[])
    }

    /// [`RealRuntimes::run_pod_qos`] with read-only bind mounts (host path, path in the
    /// container) in every container: e.g. the host's `/usr`, `/lib64` and a directory of
    /// scripts, to run the host's python3 in a real pod (the image is busybox only).
    pub fn run_pod_mounting(
        &self,
        qos: &str,
        name: &str,
        namespace: &str,
        containers: &[(&str, &str)],
        mounts: &[(&Path, &str)],
    ) -> Pod {
        assert!(
            matches!(qos, "besteffort" | "burstable" | "guaranteed"),
            "unknown QoS class {qos}"
        );
        let uid = fs::read_to_string("/proc/sys/kernel/random/uuid")
            .expect("random uuid")
            .trim()
            .to_string();
        let parent = cgroup_parent(qos, &uid);
        let mut rel = String::new();
        let levels: Vec<&str> = parent.trim_start_matches('/').split('/').collect();
        for (i, level) in levels.iter().enumerate() {
            rel = if rel.is_empty() {
                level.to_string()
            } else {
                format!("{rel}/{level}")
            };
            if i + 1 == levels.len() {
                self.record(Undo::CgroupTree(rel.clone()));
            } else {
                self.record_cgroup_parent(&rel);
            }
        }
        let log_dir = pod_log_dir(namespace, name, &uid);
        for dir in ["/var/log/pods", "/var/log/containers"] {
            self.record_shared_dir(Path::new(dir));
        }
        self.record(Undo::Path(log_dir.clone()));
        let netns_before = netns_names();

        let mounts_json = mounts
            .iter()
            .map(|(host, inside)| {
                format!(
                    "{{\"host_path\": {}, \"container_path\": {}}}",
                    json_str(&host.to_string_lossy()),
                    json_str(inside)
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        let specs: Vec<String> = containers
            .iter()
            .map(|(n, cmd)| {
                format!(
                    "{{\"name\": {}, \"command\": [\"/bin/sh\", \"-c\", {}], \"mounts\": [{}]}}",
                    json_str(n),
                    json_str(cmd),
                    mounts_json
                )
            })
            .collect();
        let request = format!(
            "{{\"name\": {}, \"namespace\": {}, \"uid\": {}, \"image\": {}, \
             \"cgroup_parent\": {}, \"log_directory\": {}, \"containers\": [{}]}}",
            json_str(name),
            json_str(namespace),
            json_str(&uid),
            json_str(IMAGE),
            json_str(&parent),
            json_str(&log_dir.to_string_lossy()),
            specs.join(", ")
        );
        let out = self.cri("run-pod", &request);
        for ns in netns_names().difference(&netns_before) {
            if ns.starts_with("cni-") {
                self.record(Undo::Netns(ns.clone()));
            }
        }
        let out = ok_stdout("cri.py run-pod", out);
        let mut pod = Pod {
            name: name.to_string(),
            namespace: namespace.to_string(),
            uid,
            qos: qos.to_string(),
            sandbox_id: String::new(),
            ip: String::new(),
            containers: Vec::new(),
        };
        for line in out.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["sandbox", id] => pod.sandbox_id = id.to_string(),
                ["ip", ip] => pod.ip = ip.to_string(),
                ["container", n, id] => pod.containers.push((n.to_string(), id.to_string())),
                _ => {}
            }
        }
        assert!(
            pod.sandbox_id.len() == 64 && !pod.ip.is_empty(),
            "cri.py run-pod answered: {out}"
        );
        // The kubelet's links: /var/log/containers/<pod>_<namespace>_<container>-<id>.log.
        for (cname, id) in &pod.containers {
            let link = PathBuf::from(format!(
                "/var/log/containers/{name}_{namespace}_{cname}-{id}.log"
            ));
            self.record(Undo::Path(link.clone()));
            let _ = fs::create_dir_all("/var/log/containers");
            std::os::unix::fs::symlink(log_dir.join(cname).join("0.log"), &link)
                .unwrap_or_else(|e| panic!("symlink {}: {e}", link.display()));
        }
        pod
    }

    /// Stops and removes one pod (its containers, then its sandbox), as the kubelet does when
    /// a pod is deleted; what it leaves (cgroups, log directory) goes at teardown.
    pub fn remove_pod(&self, pod: &Pod) {
        let request = format!("{{\"ids\": [{}]}}", json_str(&pod.sandbox_id));
        ok_stdout("cri.py remove-pods", self.cri("remove-pods", &request));
    }

    /// Runs a Docker container (`docker run -d --name <name> <image> /bin/sh -c <command>`) on
    /// Docker's default bridge.
    pub fn run_docker(&self, name: &str, command: &str) -> DockerContainer {
        self.record_cgroup_parent("docker");
        let out = self.docker(&[
            "run",
            "-d",
            "--name",
            name,
            "--label",
            "flowlens.test=1",
            DOCKER_IMAGE,
            "/bin/sh",
            "-c",
            command,
        ]);
        let id = ok_stdout("docker run", out).trim().to_string();
        assert_eq!(id.len(), 64, "docker run answered {id:?}");
        self.record(Undo::CgroupTree(format!("docker/{id}")));
        self.docker_ids.lock().unwrap().insert(id.clone());
        let inspect = ok_stdout(
            "docker inspect",
            self.docker(&[
                "inspect",
                "-f",
                "{{.NetworkSettings.IPAddress}} {{.State.Pid}}",
                &id,
            ]),
        );
        let mut words = inspect.split_whitespace();
        let ip = words.next().unwrap_or_default().to_string();
        let pid = words.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        DockerContainer {
            name: name.to_string(),
            id,
            ip,
            pid,
        }
    }

    /// Runs a command inside a running container (a pod's, through the CRI's ExecSync; a
    /// Docker container's, through `docker exec`) and returns its stdout; panics when it fails.
    /// The command must finish: a background process that keeps stdout open makes ExecSync wait
    /// (redirect it: `sh -c 'nc IP 8080 </dev/null >/dev/null 2>&1 &'`).
    pub fn exec(&self, container_id: &str, cmd: &[&str]) -> String {
        let out = self.try_exec(container_id, cmd);
        ok_stdout(&format!("exec {cmd:?} in {container_id}"), out)
    }

    /// Waits until something in the container listens on TCP `port` (busybox `netstat -ltn`),
    /// at most 20 s: a server started as the container's command may not have bound its port
    /// yet when the container is reported running.
    pub fn wait_listening(&self, container_id: &str, port: u16) {
        let suffix = format!(":{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = self.try_exec(container_id, &["netstat", "-ltn"]);
            let table = String::from_utf8_lossy(&out.stdout).into_owned();
            let listening = out.status.success()
                && table.lines().any(|l| {
                    let words: Vec<&str> = l.split_whitespace().collect();
                    words.last() == Some(&"LISTEN")
                        && words.get(3).is_some_and(|a| a.ends_with(&suffix))
                });
            if listening {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "nothing listens on port {port} in {container_id} after 20 s: {}\n{table}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// [`RealRuntimes::exec`] without the panic: the raw output and exit status.
    pub fn try_exec(&self, container_id: &str, cmd: &[&str]) -> Output {
        if self.docker_ids.lock().unwrap().contains(container_id) {
            let mut args = vec!["exec", container_id];
            args.extend_from_slice(cmd);
            self.docker(&args)
        } else {
            let cmd: Vec<String> = cmd.iter().map(|c| json_str(c)).collect();
            let request = format!(
                "{{\"container_id\": {}, \"cmd\": [{}], \"timeout\": 60}}",
                json_str(container_id),
                cmd.join(", ")
            );
            self.cri("exec", &request)
        }
    }

    /// The host PIDs in a container's cgroup (cgroup2 `cgroup.procs`), or empty.
    pub fn pids(&self, container_id: &str) -> Vec<u32> {
        self.cgroup_dir(container_id)
            .and_then(|d| fs::read_to_string(d.join("cgroup.procs")).ok())
            .map(|t| t.lines().filter_map(|l| l.parse().ok()).collect())
            .unwrap_or_default()
    }

    /// A container's cgroup2 directory (under /sys/fs/cgroup/unified in hybrid mode), found
    /// among the cgroups this harness made.
    pub fn cgroup_dir(&self, container_id: &str) -> Option<PathBuf> {
        let unified = crate::cgroup2_root();
        let trees: Vec<String> = self
            .undo
            .lock()
            .unwrap()
            .iter()
            .filter_map(|u| match u {
                Undo::CgroupTree(t) => Some(t.clone()),
                _ => None,
            })
            .collect();
        trees.iter().find_map(|t| {
            let dir = if t.ends_with(container_id) {
                unified.join(t)
            } else {
                unified.join(t).join(container_id)
            };
            dir.is_dir().then_some(dir)
        })
    }

    /// The pods (`pod <id> <ns> <name> <uid> <state>`) and containers
    /// (`container <id> <sandbox id> <name> <state>`) the CRI knows, one per line.
    pub fn cri_list(&self) -> String {
        ok_stdout("cri.py list", self.cri("list", "{}"))
    }

    /// `docker ps -aq --no-trunc`: the ids of every Docker container.
    pub fn docker_ps(&self) -> Vec<String> {
        ok_stdout("docker ps", self.docker(&["ps", "-aq", "--no-trunc"]))
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Tears everything down now and reports what, if anything, is left.
    pub fn stop(self) -> Teardown {
        let t0 = Instant::now();
        let leftovers = self.teardown();
        Teardown {
            took: t0.elapsed(),
            leftovers,
        }
    }

    // ---- bring-up -------------------------------------------------------------------------

    fn bring_up_all(&self) {
        let b = &self.base;
        fs::create_dir_all(b).expect("create base dir");
        fs::write(b.join("undo"), "").expect("write undo list");
        self.record(Undo::Path(b.clone()));
        // Global things the daemons and plugins touch, restored or removed at teardown.
        let forward = "net/ipv4/ip_forward";
        let value = fs::read_to_string(Path::new("/proc/sys").join(forward)).unwrap_or_default();
        self.record(Undo::Sysctl(forward.into(), value.trim().into()));
        // containerd 1.6 puts shim sockets in /run/containerd/s whatever its state dir.
        self.record_shared_dir(Path::new("/run/containerd"));
        self.record_if_missing(Path::new("/run/containerd/s"));
        // dockerd 20.10 writes its trust key to /etc/docker/key.json.
        self.record_shared_dir(Path::new("/etc/docker"));
        self.record_if_missing(Path::new("/etc/docker/key.json"));
        for link in [CNI_BRIDGE, "docker0"] {
            if !Path::new("/sys/class/net").join(link).exists() {
                self.record(Undo::Link(link.into()));
            }
        }
        for d in [
            "containerd/root",
            "containerd/state",
            "cni/net.d",
            "cni/ipam",
            "runc",
            "opt",
            "docker/data",
            "docker/exec",
            "docker/cli",
            "py",
        ] {
            fs::create_dir_all(b.join(d)).expect("create dir");
        }
        fs::write(b.join("containerd/config.toml"), containerd_config(b)).unwrap();
        fs::write(b.join("cni/net.d/10-flowlens.conflist"), cni_config(b)).unwrap();
        fs::write(b.join("docker/daemon.json"), "{}\n").unwrap();

        let image = runtimes_dir().join("image.py");
        let out = Command::new(python())
            .arg("-B")
            .arg(&image)
            .arg(b.join("image"))
            .arg(DOCKER_IMAGE)
            .output()
            .expect("run image.py");
        ok_stdout("image.py", out);

        let containerd = self.spawn_daemon(
            "containerd",
            &[
                "--config",
                &b.join("containerd/config.toml").to_string_lossy(),
            ],
            "containerd.log",
        );
        *self.containerd.lock().unwrap() = Some(containerd);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.containerd_socket().exists() {
            self.check_alive();
            assert!(
                Instant::now() < deadline,
                "containerd did not create its socket within 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        ok_stdout("cri.py wait", self.cri("wait", "{\"timeout\": 30}"));
        let sock = self.containerd_socket();
        ok_stdout(
            "ctr images import",
            Command::new("ctr")
                .arg("-a")
                .arg(&sock)
                .args(["-n", "k8s.io", "images", "import"])
                .arg(b.join("image/image.tar"))
                .output()
                .expect("run ctr"),
        );

        let dockerd = self.spawn_daemon(
            "dockerd",
            &[
                "--config-file",
                &b.join("docker/daemon.json").to_string_lossy(),
                &format!("--containerd={}", sock.display()),
                "--iptables=false",
                "--ip-masq=false",
                "--userland-proxy=false",
                "--data-root",
                &b.join("docker/data").to_string_lossy(),
                "--exec-root",
                &b.join("docker/exec").to_string_lossy(),
                "--pidfile",
                &b.join("docker/docker.pid").to_string_lossy(),
                "-H",
                &format!("unix://{}", self.docker_socket().display()),
            ],
            "dockerd.log",
        );
        *self.dockerd.lock().unwrap() = Some(dockerd);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            self.check_alive();
            if self.docker(&["version"]).status.success() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "dockerd did not answer within 60 s: {}",
                log_tail(&b.join("dockerd.log"))
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let rootfs = b.join("image/rootfs.tar");
        ok_stdout(
            "docker import",
            self.docker(&[
                "import",
                "--change",
                "CMD [\"/bin/sleep\", \"2147483647\"]",
                &rootfs.to_string_lossy(),
                DOCKER_IMAGE,
            ]),
        );
    }

    fn spawn_daemon(&self, program: &str, args: &[&str], log: &str) -> Child {
        let log = fs::File::create(self.base.join(log)).expect("create daemon log");
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
        self.record(Undo::Daemon(child.id()));
        child
    }

    fn check_alive(&self) {
        for (name, slot, log) in [
            ("containerd", &self.containerd, "containerd.log"),
            ("dockerd", &self.dockerd, "dockerd.log"),
        ] {
            if let Some(child) = slot.lock().unwrap().as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "{name} exited ({status}): {}",
                        log_tail(&self.base.join(log))
                    );
                }
            }
        }
    }

    fn record(&self, undo: Undo) {
        let mut list = self.undo.lock().unwrap();
        if list.contains(&undo) {
            return;
        }
        if let Ok(mut f) = fs::OpenOptions::new()
            .append(true)
            .open(self.base.join("undo"))
        {
            let _ = writeln!(f, "{}", undo.line());
        }
        list.push(undo);
    }

    fn record_if_missing(&self, path: &Path) {
        if fs::symlink_metadata(path).is_err() {
            self.record(Undo::Path(path.to_path_buf()));
        }
    }

    /// Records a shared cgroup parent (`kubepods`, `docker`...) in each hierarchy lacking it.
    fn record_cgroup_parent(&self, rel: &str) {
        for (root, _) in cgroup_mounts() {
            let dir = root.join(rel);
            if !dir.exists() {
                self.record(Undo::CgroupDir(dir.to_string_lossy().into_owned()));
            }
        }
    }

    fn record_shared_dir(&self, path: &Path) {
        if fs::symlink_metadata(path).is_err() {
            self.record(Undo::EmptyDir(path.to_path_buf()));
        }
    }

    fn cri(&self, command: &str, request: &str) -> Output {
        let mut child = Command::new("timeout")
            .arg("120")
            .arg(python())
            .arg("-B") // no __pycache__ in the source tree
            .arg(runtimes_dir().join("cri.py"))
            .arg(self.containerd_socket())
            .arg(self.base.join("py"))
            .arg(command)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run cri.py");
        let _ = child.stdin.take().unwrap().write_all(request.as_bytes());
        child.wait_with_output().expect("cri.py output")
    }

    fn docker(&self, args: &[&str]) -> Output {
        Command::new("timeout")
            .arg("120")
            .arg(docker_cli())
            .args(args)
            .env(
                "DOCKER_HOST",
                format!("unix://{}", self.docker_socket().display()),
            )
            .env("DOCKER_CONFIG", self.base.join("docker/cli"))
            .output()
            .expect("run docker")
    }

    // ---- teardown -------------------------------------------------------------------------

    /// Idempotent, never panics; returns what is left.
    fn teardown(&self) -> Vec<String> {
        let mut done = match self.torn_down.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if *done {
            return Vec::new();
        }
        *done = true;
        let undo = match self.undo.lock() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        };
        let containerd_up = self
            .containerd
            .lock()
            .map(|mut c| c.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None))))
            .unwrap_or(false);
        let dockerd_up = self
            .dockerd
            .lock()
            .map(|mut c| c.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None))))
            .unwrap_or(false);
        // Through the runtimes first, as a node would: that stops the shims, releases the IPs,
        // deletes the CNI netns and the containers' cgroups.
        if dockerd_up {
            let ids = self.docker(&["ps", "-aq", "--no-trunc"]);
            let ids: Vec<String> = String::from_utf8_lossy(&ids.stdout)
                .lines()
                .map(str::to_string)
                .collect();
            if !ids.is_empty() {
                let mut args = vec!["rm", "-f"];
                args.extend(ids.iter().map(String::as_str));
                report("docker rm", self.docker(&args));
            }
            report("docker rmi", self.docker(&["rmi", "-f", DOCKER_IMAGE]));
        }
        if containerd_up {
            report("cri.py remove-pods", self.cri("remove-pods", "{}"));
            let out = Command::new("ctr")
                .arg("-a")
                .arg(self.containerd_socket())
                .args(["-n", "k8s.io", "images", "rm", IMAGE])
                .output();
            if let Ok(out) = out {
                report("ctr images rm", out);
            }
        }
        for slot in [&self.dockerd, &self.containerd] {
            if let Ok(mut slot) = slot.lock() {
                if let Some(child) = slot.as_mut() {
                    stop_child(child);
                }
            }
        }
        undo_all(&self.base, &undo);
        leftovers(&self.base, &undo)
    }
}

impl Drop for RealRuntimes {
    fn drop(&mut self) {
        let leftovers = self.teardown();
        if !leftovers.is_empty() {
            eprintln!("runtimes: left behind after teardown: {leftovers:#?}");
        }
    }
}

// ---- helpers ------------------------------------------------------------------------------

fn cgroup_parent(qos: &str, uid: &str) -> String {
    match qos {
        "guaranteed" => format!("/kubepods/pod{uid}"),
        _ => format!("/kubepods/{qos}/pod{uid}"),
    }
}

fn pod_log_dir(namespace: &str, name: &str, uid: &str) -> PathBuf {
    PathBuf::from(format!("/var/log/pods/{namespace}_{name}_{uid}"))
}

/// tests/runtimes in the source tree.
fn runtimes_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("runtimes")
}

/// Debian's python3, which sees python3-grpcio and python3-protobuf (a pyenv shim may not).
fn python() -> &'static str {
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

/// Debian's docker CLI (matches dockerd 20.10; another `docker` may come first in PATH).
fn docker_cli() -> &'static str {
    if Path::new("/usr/bin/docker").exists() {
        "/usr/bin/docker"
    } else {
        "docker"
    }
}

fn take_lock() -> UnixListener {
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(LOCK_NAME).unwrap();
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        match UnixListener::bind_addr(&addr) {
            Ok(l) => return l,
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "another RealRuntimes held the lock for 10 minutes: {e}"
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

fn ensure_packages() {
    let missing: Vec<&str> = packages()
        .into_iter()
        .filter(|p| {
            let out = Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", p])
                .output();
            !out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        return;
    }
    eprintln!("runtimes: installing {missing:?}");
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .output()
            .expect("run apt-get")
    };
    if !install().status.success() {
        let _ = Command::new("apt-get").args(["update", "-q"]).output();
        ok_stdout("apt-get install", install());
    }
}

fn ok_stdout(what: &str, out: Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn report(what: &str, out: Output) {
    if !out.status.success() {
        eprintln!(
            "runtimes teardown: {what} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
}

fn log_tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

fn stop_child(child: &mut Child) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    // SAFETY: kill(2) on our own child's PID.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

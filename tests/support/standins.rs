//! Stand-in Kubernetes pods for tests: containerd task bundles (`config.json` with the CRI
//! plugin's annotations) where a containerd node keeps them, cgroup2 directories as the cgroupfs
//! driver names them, processes inside them running real TCP traffic, in network namespaces.
//! Everything is removed on drop.

use crate::{cgroup2_root, NetnsPair};
use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

/// A pod's containers as containerd's CRI plugin leaves them on a node, with processes inside.
pub struct StandIns {
    /// The first directory of the bundles' path that did not exist (removed at the end).
    created_root: Option<PathBuf>,
    cgroups: Vec<PathBuf>,
    bundles: Vec<PathBuf>,
    children: Vec<Child>,
}

/// containerd's task bundles of the `k8s.io` namespace (flowlens's default `containerd_state_dir`).
pub const BUNDLES: &str = "/run/containerd/io.containerd.runtime.v2.task/k8s.io";

/// A 64-hex id that looks like containerd's.
pub fn hex_id(seed: u64) -> String {
    let mut x = seed ^ 0x9e37_79b9_7f4a_7c15;
    (0..4)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            format!("{x:016x}")
        })
        .collect()
}

/// A fresh container id: unique in this process (several `StandIns` may be alive at once) and
/// across processes.
fn next_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    hex_id(u64::from(std::process::id()) << 24 | NEXT.fetch_add(1, Ordering::Relaxed))
}

impl StandIns {
    /// Nothing created yet.
    pub fn new() -> StandIns {
        let created_root = Path::new(BUNDLES)
            .ancestors()
            .take_while(|p| !p.exists())
            .last()
            .map(Path::to_path_buf);
        StandIns {
            created_root,
            cgroups: Vec::new(),
            bundles: Vec::new(),
            children: Vec::new(),
        }
    }

    /// Creates a pod sandbox (no process), its network namespace is `netns`.
    pub fn pod(&mut self, namespace: &str, name: &str, uid: &str, netns: &str) -> String {
        let id = next_id();
        let cgroup = format!("/kubepods/besteffort/pod{uid}/{id}");
        self.bundle(
            &id,
            serde_json::json!({
                "io.kubernetes.cri.container-type": "sandbox",
                "io.kubernetes.cri.sandbox-id": id,
                "io.kubernetes.cri.sandbox-name": name,
                "io.kubernetes.cri.sandbox-namespace": namespace,
                "io.kubernetes.cri.sandbox-uid": uid,
                "io.kubernetes.cri.sandbox-log-directory": format!("/var/log/pods/{namespace}_{name}_{uid}"),
            }),
            &cgroup,
            netns,
        );
        self.cgroup(&cgroup);
        id
    }

    /// Creates a container of the pod and starts `python3 -c program args` inside it (its
    /// cgroup, the pod's network namespace). Returns the child's stdout's first line.
    #[allow(clippy::too_many_arguments)]
    pub fn container(
        &mut self,
        pod: (&str, &str, &str, &str),
        name: &str,
        netns: &str,
        program: &str,
        args: &[&str],
    ) -> String {
        let (namespace, pod_name, uid, sandbox) = pod;
        let id = next_id();
        let cgroup = format!("/kubepods/besteffort/pod{uid}/{id}");
        self.bundle(
            &id,
            serde_json::json!({
                "io.kubernetes.cri.container-type": "container",
                "io.kubernetes.cri.container-name": name,
                "io.kubernetes.cri.image-name": "docker.io/library/busybox:1.36",
                "io.kubernetes.cri.sandbox-id": sandbox,
                "io.kubernetes.cri.sandbox-name": pod_name,
                "io.kubernetes.cri.sandbox-namespace": namespace,
                "io.kubernetes.cri.sandbox-uid": uid,
            }),
            &cgroup,
            netns,
        );
        let dir = self.cgroup(&cgroup);
        // The shell moves itself into the container's cgroup, then becomes the workload: every
        // socket it opens belongs to the container.
        let child = crate::spawn_ready(
            Command::new("sh")
            .arg("-c")
            .arg(
                r#"echo $$ > "$0/cgroup.procs" && n=$1 && p=$2 && shift 2 && exec ip netns exec "$n" python3 -u -c "$p" "$@""#,
            )
            .arg(&dir)
            .arg(netns)
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit()),
            "ready",
            &format!("container {name}"),
        );
        self.children.push(child);
        id
    }

    fn bundle(&mut self, id: &str, annotations: serde_json::Value, cgroup: &str, netns: &str) {
        let dir = Path::new(BUNDLES).join(id);
        std::fs::create_dir_all(&dir).unwrap();
        let spec = serde_json::json!({
            "ociVersion": "1.1.0",
            "annotations": annotations,
            "linux": {
                "cgroupsPath": cgroup,
                "namespaces": [{"type": "network", "path": format!("/var/run/netns/{netns}")}],
            },
        });
        std::fs::write(dir.join("config.json"), spec.to_string()).unwrap();
        self.bundles.push(dir);
    }

    fn cgroup(&mut self, path: &str) -> PathBuf {
        let dir = cgroup2_root().join(path.trim_start_matches('/'));
        std::fs::create_dir_all(&dir).unwrap();
        self.cgroups.push(dir.clone());
        dir
    }
}

impl Default for StandIns {
    fn default() -> StandIns {
        StandIns::new()
    }
}

impl Drop for StandIns {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for dir in &self.bundles {
            let _ = std::fs::remove_dir_all(dir);
        }
        if let Some(root) = &self.created_root {
            let _ = std::fs::remove_dir_all(root);
        }
        // Leaf cgroups first, then the pod and QoS directories this test made (rmdir fails on
        // a directory that is not empty, so directories of others stay).
        let root = cgroup2_root();
        for dir in &self.cgroups {
            let mut dir = dir.clone();
            while dir != root && std::fs::remove_dir(&dir).is_ok() {
                dir.pop();
            }
        }
    }
}

pub const ECHO_SERVER: &str = r#"
import socket, sys, threading
def echo(c):
    while True:
        d = c.recv(65536)
        if not d:
            break
        c.sendall(d)
    c.close()
def serve(s):
    while True:
        c, _ = s.accept()
        threading.Thread(target=echo, args=(c,), daemon=True).start()
for port in sys.argv[2:]:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((sys.argv[1], int(port)))
    s.listen(128)
    threading.Thread(target=serve, args=(s,), daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
"#;

/// Keeps `n` connections busy with a load that rises and falls, and opens a short connection
/// now and then (new flows).
pub const CLIENT: &str = r#"
import math, socket, sys, time
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
conns = [socket.create_connection((host, port)) for _ in range(n)]
print("ready", flush=True)
t0, i = time.time(), 0
while True:
    k = 1 + int(6 * (1 + math.sin((time.time() - t0) / 5 + n)))
    for c in conns:
        c.sendall(b"x" * 4096 * k)
        got = 0
        while got < 4096 * k:
            got += len(c.recv(65536))
    i += 1
    if i % 4 == 0:
        s = socket.create_connection((host, port))
        s.sendall(b"ping")
        s.recv(16)
        s.close()
    time.sleep(0.1)
"#;

/// The scenario of the dashboard tests: namespace `shop`, pod `backend-0` (container `api`, an
/// echo server on ports 80 and 6379) and pod `frontend-7d9f8b6c5d-x2x4z` (containers `web` and
/// `cache`, clients of `api` with a load that rises and falls, once [`Shop::start_clients`] ran),
/// the two pods' network namespaces joined by a veth pair.
pub struct Shop {
    /// The containers (dropped before the namespaces they run in).
    pub standins: StandIns,
    /// The pods' network namespaces.
    pub pair: NetnsPair,
    frontend: (String, String),
    /// The container ids: `api` at first, `web` and `cache` after [`Shop::start_clients`].
    pub containers: Vec<(&'static str, String)>,
}

const FRONTEND: (&str, &str, &str) = (
    "shop",
    "frontend-7d9f8b6c5d-x2x4z",
    "5f0c3b1e-93a1-4c1f-8d6a-0a1b2c3d4e01",
);
const BACKEND: (&str, &str, &str) = ("shop", "backend-0", "5f0c3b1e-93a1-4c1f-8d6a-0a1b2c3d4e02");

impl Shop {
    /// The pods and the server container; `name` and `n` as for [`NetnsPair::new`].
    pub fn new(name: &str, n: u8) -> Shop {
        let pair = NetnsPair::new(name, n);
        let mut standins = StandIns::new();
        let p1 = standins.pod(FRONTEND.0, FRONTEND.1, FRONTEND.2, &pair.ns[0]);
        let p2 = standins.pod(BACKEND.0, BACKEND.1, BACKEND.2, &pair.ns[1]);
        let server_addr = pair.addrs[1].clone();
        let api = standins.container(
            (BACKEND.0, BACKEND.1, BACKEND.2, &p2),
            "api",
            &pair.ns[1],
            ECHO_SERVER,
            &[&server_addr, "80", "6379"],
        );
        Shop {
            standins,
            frontend: (p1, pair.ns[0].clone()),
            pair,
            containers: vec![("api", api)],
        }
    }

    /// Starts the frontend's containers: `web` (3 connections to port 80) and `cache` (1 to
    /// port 6379).
    pub fn start_clients(&mut self) {
        let server_addr = self.pair.addrs[1].clone();
        let (sandbox, netns) = self.frontend.clone();
        let pod = (FRONTEND.0, FRONTEND.1, FRONTEND.2, sandbox.as_str());
        for (name, port, n) in [("web", "80", "3"), ("cache", "6379", "1")] {
            let id = self
                .standins
                .container(pod, name, &netns, CLIENT, &[&server_addr, port, n]);
            self.containers.push((name, id));
        }
    }

    /// The `container` tag flowlens writes for the container `name`: its id's first 12 hex digits.
    pub fn tag(&self, name: &str) -> String {
        let (_, id) = self
            .containers
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("no container {name}"));
        id[..12].to_string()
    }
}

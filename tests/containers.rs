//! Containers and pods: stand-in containers built from real kernel objects (cgroup2 directories
//! named as containerd names them under a kubepods slice, a network namespace and veth pair per
//! pod, the containerd `config.json` or the kubelet's log links a node has), real processes and
//! real TCP connections, seen through the real `flowlens` binary and a real InfluxDB.

use flowlens_core::lineproto::{parse_lines, FieldValue};
use flowlens_tests::{session::*, *};
use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    time::Duration,
};

/// A process standing in for a container: in its cgroup and network namespace, obeying
/// tests/support/workload.py's commands.
struct StandIn {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl StandIn {
    fn start(cgroup: &Path, netns: &str) -> StandIn {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("support/workload.py");
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "echo $$ > '{}/cgroup.procs' && exec ip netns exec {netns} python3 -u '{}'",
                cgroup.display(),
                script.display()
            ))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        StandIn {
            child,
            stdin,
            stdout,
        }
    }

    /// Sends one command; returns what follows "ok".
    fn cmd(&mut self, line: &str) -> String {
        writeln!(self.stdin, "{line}").unwrap();
        self.stdin.flush().unwrap();
        let mut answer = String::new();
        self.stdout.read_line(&mut answer).unwrap();
        assert!(answer.starts_with("ok"), "{line}: {answer:?}");
        answer[2..].trim().to_string()
    }

    /// (tcpi_rtt, tcpi_rttvar) in µs of each client socket.
    fn rtts(&mut self) -> Vec<(u32, u32)> {
        let text = self.cmd("info");
        // [["10.0.0.1", "10.0.0.2", 3100, 800], ...]
        text.trim_matches(|c| c == '[' || c == ']')
            .split("], [")
            .filter(|row| !row.is_empty())
            .map(|row| {
                let cols: Vec<&str> = row.split(", ").collect();
                (cols[2].parse().unwrap(), cols[3].parse().unwrap())
            })
            .collect()
    }
}

impl StandIn {
    /// A process in network namespace `netns` and the test's own cgroup (not a container).
    fn start_outside(netns: &str) -> StandIn {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("support/workload.py");
        let mut child = Command::new("ip")
            .args(["netns", "exec", netns, "python3", "-u"])
            .arg(&script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        StandIn {
            child,
            stdin,
            stdout,
        }
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// 64-hex ids that look like containerd's.
fn container_id(seed: u64) -> String {
    format!("{:012x}{}", 0x1edb6c16e3d0_u64 + seed, "5a".repeat(26))
}

/// One stand-in container of the fixture.
struct Spec {
    name: &'static str,
    pod: usize,
}

/// Pods P1 (containers a, b) and P2 (container c), each pod with a sandbox, in cgroup2
/// directories named as containerd names them under the kubepods slice of systemd's driver,
/// one network namespace per pod; P1 and P2 joined by a veth pair, P2 reachable from the host by
/// another.
struct Pods {
    ids: BTreeMap<&'static str, String>,
    cgroups: BTreeMap<&'static str, PathBuf>,
    uids: [String; 2],
    names: [&'static str; 2],
    netns: [String; 2],
    sandbox_cgroups: Vec<PathBuf>,
    slice: PathBuf,
    state: TempDir,
}

const SPECS: [Spec; 3] = [
    Spec { name: "a", pod: 0 },
    Spec { name: "b", pod: 0 },
    Spec { name: "c", pod: 1 },
];

impl Pods {
    fn new(tag: &str) -> Pods {
        let slice = cgroup2_root().join(format!(
            "kubepods-{tag}.slice/kubepods-{tag}-besteffort.slice"
        ));
        let uids = [
            "8f0d3c62-1a7b-4c1e-9d2a-5b6e7f809a01".to_string(),
            "2b7e151f-28ae-4d2a-abf7-15884109cf4f".to_string(),
        ];
        let names = ["web-7d4b9c8f6d-x2x9q", "db-0"];
        let netns = [format!("{tag}-p1"), format!("{tag}-p2")];
        let state = TempDir::new(tag);
        let mut pods = Pods {
            ids: BTreeMap::new(),
            cgroups: BTreeMap::new(),
            uids,
            names,
            netns,
            sandbox_cgroups: Vec::new(),
            slice,
            state,
        };
        for ns in &pods.netns {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
            sh("ip", &["netns", "add", ns]);
            sh("ip", &["-n", ns, "link", "set", "lo", "up"]);
        }
        let (p1, p2) = (&pods.netns[0], &pods.netns[1]);
        let (h, v1, v2, v3) = (
            format!("{tag}h"),
            format!("{tag}1"),
            format!("{tag}2"),
            format!("{tag}3"),
        );
        let _ = Command::new("ip").args(["link", "del", &h]).output();
        sh(
            "ip",
            &[
                "link", "add", &v1, "netns", p1, "type", "veth", "peer", "name", &v2, "netns", p2,
            ],
        );
        sh("ip", &["-n", p1, "addr", "add", "10.93.0.1/24", "dev", &v1]);
        sh("ip", &["-n", p2, "addr", "add", "10.93.0.2/24", "dev", &v2]);
        sh(
            "ip",
            &[
                "link", "add", &h, "type", "veth", "peer", "name", &v3, "netns", p2,
            ],
        );
        sh("ip", &["addr", "add", "10.94.0.1/24", "dev", &h]);
        sh("ip", &["-n", p2, "addr", "add", "10.94.0.2/24", "dev", &v3]);
        for (ns, dev) in [(p1, &v1), (p2, &v2), (p2, &v3)] {
            sh("ip", &["-n", ns, "link", "set", dev, "up"]);
        }
        sh("ip", &["link", "set", &h, "up"]);
        for (i, spec) in SPECS.iter().enumerate() {
            let id = container_id(i as u64 + 1);
            let dir = pods
                .pod_slice(spec.pod)
                .join(format!("cri-containerd-{id}.scope"));
            std::fs::create_dir_all(&dir).unwrap();
            pods.ids.insert(spec.name, id);
            pods.cgroups.insert(spec.name, dir);
        }
        for pod in 0..2 {
            let id = pods.sandbox_id(pod);
            let dir = pods
                .pod_slice(pod)
                .join(format!("cri-containerd-{id}.scope"));
            std::fs::create_dir_all(&dir).unwrap();
            pods.sandbox_cgroups.push(dir);
        }
        pods
    }

    fn pod_slice(&self, pod: usize) -> PathBuf {
        let tag = self
            .slice
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .trim_end_matches(".slice");
        self.slice.join(format!(
            "{tag}-pod{}.slice",
            self.uids[pod].replace('-', "_")
        ))
    }

    fn sandbox_id(&self, pod: usize) -> String {
        container_id(100 + pod as u64)
    }

    fn short(&self, name: &str) -> String {
        self.ids[name][..12].to_string()
    }

    /// The containerd task bundles a node has: `<state>/k8s.io/<id>/config.json`.
    fn write_containerd_bundles(&self) -> PathBuf {
        let root = self.state.join("containerd");
        for pod in 0..2 {
            let annotations = format!(
                r#"{{"io.kubernetes.cri.container-type":"sandbox","io.kubernetes.cri.sandbox-id":"{sid}","io.kubernetes.cri.sandbox-name":"{name}","io.kubernetes.cri.sandbox-namespace":"shop","io.kubernetes.cri.sandbox-uid":"{uid}","io.kubernetes.cri.sandbox-log-directory":"/var/log/pods/shop_{name}_{uid}"}}"#,
                sid = self.sandbox_id(pod),
                name = self.names[pod],
                uid = self.uids[pod]
            );
            write_bundle(&root, &self.sandbox_id(pod), &annotations);
        }
        for spec in &SPECS {
            let annotations = format!(
                r#"{{"io.kubernetes.cri.container-type":"container","io.kubernetes.cri.container-name":"{cname}","io.kubernetes.cri.image-name":"docker.io/library/busybox:latest","io.kubernetes.cri.sandbox-id":"{sid}","io.kubernetes.cri.sandbox-name":"{name}","io.kubernetes.cri.sandbox-namespace":"shop","io.kubernetes.cri.sandbox-uid":"{uid}"}}"#,
                cname = spec.name,
                sid = self.sandbox_id(spec.pod),
                name = self.names[spec.pod],
                uid = self.uids[spec.pod]
            );
            write_bundle(&root, &self.ids[spec.name], &annotations);
        }
        root
    }

    /// Only the kubelet's log links: `<pod>_<namespace>_<container>-<id>.log`.
    fn write_log_links(&self) -> PathBuf {
        let dir = self.state.join("containers");
        std::fs::create_dir_all(&dir).unwrap();
        for spec in &SPECS {
            let (pod, uid) = (self.names[spec.pod], &self.uids[spec.pod]);
            let link = dir.join(format!(
                "{pod}_shop_{}-{}.log",
                spec.name, self.ids[spec.name]
            ));
            let target = format!("/var/log/pods/shop_{pod}_{uid}/{}/0.log", spec.name);
            std::os::unix::fs::symlink(target, link).unwrap();
        }
        dir
    }

    /// A flowlens config that reads metadata from here (and nothing from the real node).
    fn config(&self, containerd: Option<&Path>, logs: Option<&Path>, extra: &str) -> String {
        let empty = self.state.join("empty");
        std::fs::create_dir_all(&empty).unwrap();
        let or_empty = |p: Option<&Path>| p.unwrap_or(&empty).display().to_string();
        format!(
            "containerd_state_dir = \"{}\"\nkubelet_log_dir = \"{}\"\ncrio_storage_dir = \"{e}\"\n\
             docker_containers_dir = \"{e}\"\n{extra}",
            or_empty(containerd),
            or_empty(logs),
            e = empty.display()
        )
    }

    fn start(&self, name: &'static str) -> StandIn {
        let spec = SPECS.iter().find(|s| s.name == name).unwrap();
        StandIn::start(&self.cgroups[name], &self.netns[spec.pod])
    }
}

fn write_bundle(root: &Path, id: &str, annotations: &str) {
    let dir = root.join("k8s.io").join(id);
    std::fs::create_dir_all(&dir).unwrap();
    let spec = format!(
        r#"{{"ociVersion":"1.0.2-dev","process":{{"user":{{"uid":0,"gid":0}},"args":["/bin/sh"],"cwd":"/"}},"root":{{"path":"rootfs"}},"hostname":"","annotations":{annotations},"linux":{{"cgroupsPath":"kubepods-besteffort.slice:cri-containerd:{id}"}}}}"#
    );
    std::fs::write(dir.join("config.json"), spec).unwrap();
}

impl Drop for Pods {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns[0]])
            .output();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns[1]])
            .output();
        let tag = self.netns[0].trim_end_matches("-p1").to_string();
        let _ = Command::new("ip")
            .args(["link", "del", &format!("{tag}h")])
            .output();
        let mut dirs: Vec<PathBuf> = self.cgroups.values().cloned().collect();
        dirs.extend(self.sandbox_cgroups.iter().cloned());
        dirs.push(self.pod_slice(0));
        dirs.push(self.pod_slice(1));
        dirs.push(self.slice.clone());
        dirs.push(self.slice.parent().unwrap().to_path_buf());
        for dir in dirs {
            for _ in 0..50 {
                if std::fs::remove_dir(&dir).is_ok() || !dir.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// The integer or float field of the line of `measurement` whose tags include `tags`.
fn field(text: &str, measurement: &str, tags: &[(&str, &str)], name: &str) -> Option<f64> {
    let points = parse_lines(text).unwrap();
    let point = points.iter().find(|p| {
        p.measurement == measurement
            && tags
                .iter()
                .all(|(k, v)| p.tags.iter().any(|(pk, pv)| pk == k && pv == v))
    })?;
    match point.fields.iter().find(|(k, _)| k == name).map(|(_, v)| v) {
        Some(FieldValue::Int(v)) => Some(*v as f64),
        Some(FieldValue::Float(v)) => Some(*v),
        _ => None,
    }
}

fn num(text: &str, measurement: &str, tags: &[(&str, &str)], name: &str) -> i64 {
    field(text, measurement, tags, name)
        .map(|v| v as i64)
        .unwrap_or(-1)
}

/// Runs the seed's traffic: a opens 3 connections to c's server, b opens 1, the host 2.
fn seed_traffic(pods: &Pods) -> (StandIn, StandIn, StandIn, Vec<TcpStream>) {
    let mut c = pods.start("c");
    c.cmd("listen 8080");
    let mut a = pods.start("a");
    a.cmd("connect 10.93.0.2 8080 3");
    let mut b = pods.start("b");
    b.cmd("connect 10.93.0.2 8080 1");
    let host: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect("10.94.0.2:8080").unwrap())
        .collect();
    a.cmd("pingpong");
    b.cmd("pingpong");
    std::thread::sleep(Duration::from_millis(300));
    (a, b, c, host)
}

fn assert_seed_counts(pods: &Pods, t: &str) {
    let (a, b, c) = (pods.short("a"), pods.short("b"), pods.short("c"));
    let cn = |id: &str, f: &str| num(t, "container:num_flows", &[("container", id)], f);
    assert_eq!(cn(&a, "as_client"), 3, "{t}");
    assert_eq!(cn(&a, "as_server"), 0);
    assert_eq!(cn(&b, "as_client"), 1);
    assert_eq!(
        cn(&c, "as_server"),
        6,
        "3 from a, 1 from b, 2 from the host:\n{t}"
    );
    assert_eq!(cn(&c, "as_client"), 0);
    let pn = |pod: &str, f: &str| num(t, "pod:num_flows", &[("pod", pod)], f);
    assert_eq!(pn(pods.names[0], "as_client"), 4, "{t}");
    assert_eq!(pn(pods.names[1], "as_server"), 6);
    let pc = |pod: &str| num(t, "pod:num_containers", &[("pod", pod)], "num_containers");
    assert_eq!(pc(pods.names[0]), 2, "{t}");
    assert_eq!(pc(pods.names[1]), 1);
    // Three containers of our pods, no sandbox; the host process's 2 flows count only on c's
    // server side (6 above), never as a container of their own.
    let series: Vec<_> = parse_lines(t)
        .unwrap()
        .into_iter()
        .filter(|p| p.measurement == "container:num_flows")
        .filter(|p| {
            p.tags
                .iter()
                .any(|(k, v)| k == "pod" && pods.names.contains(&v.as_str()))
        })
        .collect();
    assert_eq!(series.len(), 3, "{t}");
    for pod in 0..2 {
        let sandbox = &pods.sandbox_id(pod)[..12];
        assert!(
            !t.contains(&format!("container={sandbox}")),
            "no sandbox series:\n{t}"
        );
    }
    // Names taken from the runtime's metadata.
    let tags = &series
        .iter()
        .find(|p| p.tags.iter().any(|(_, v)| *v == a))
        .unwrap()
        .tags;
    for (k, v) in [
        ("container_name", "a"),
        ("pod", pods.names[0]),
        ("namespace", "shop"),
    ] {
        assert!(
            tags.iter().any(|(tk, tv)| tk == k && tv == v),
            "{k}={v} in {tags:?}"
        );
    }
}

#[test]
fn seed_counts_per_container_and_pod_from_containerd_bundles() {
    let Some(_serial) = root_test("seed_counts_per_container_and_pod_from_containerd_bundles")
    else {
        return;
    };
    let pods = Pods::new("flk1");
    let bundles = pods.write_containerd_bundles();
    let mut s = Session::start(&pods.config(Some(&bundles), None, ""));
    let (_a, _b, _c, _host) = seed_traffic(&pods);
    let t = s.gather();
    // README's "What it prints" is this batch, abridged: `cargo test -p flowlens-tests --test
    // containers seed_counts_per_container_and_pod_from_containerd_bundles -- --nocapture`.
    eprintln!("{t}");
    assert_seed_counts(&pods, &t);
    s.finish();
}

#[test]
fn seed_counts_from_the_kubelets_log_links_only() {
    let Some(_serial) = root_test("seed_counts_from_the_kubelets_log_links_only") else {
        return;
    };
    let pods = Pods::new("flk2");
    let links = pods.write_log_links();
    let mut s = Session::start(&pods.config(None, Some(&links), ""));
    let (_a, _b, _c, _host) = seed_traffic(&pods);
    let t = s.gather();
    assert_seed_counts(&pods, &t);
    s.finish();
}

#[test]
fn container_and_pod_rtt_are_the_means_of_the_kernels_values() {
    let Some(_serial) = root_test("container_and_pod_rtt_are_the_means_of_the_kernels_values")
    else {
        return;
    };
    let pods = Pods::new("flk3");
    let bundles = pods.write_containerd_bundles();
    let mut s = Session::start(&pods.config(Some(&bundles), None, ""));
    let (mut a, mut b, _c, _host) = seed_traffic(&pods);
    // Enough round trips for the kernel to leave quick-ACK mode: then the ACK rides on the answer
    // that comes 3 ms late, and the RTT samples are about 3 ms.
    a.cmd("pingpong 32");
    b.cmd("pingpong 32");
    // The collector reads each live socket's RTT from the socket at the gather: TCP_INFO after
    // the last round trips gives, per socket, the values it may hold (the last, or the one
    // before if a late ACK lands in between).
    let (mut ra, mut rb) = (Vec::new(), Vec::new());
    for _ in 0..2 {
        a.cmd("pingpong 1");
        b.cmd("pingpong 1");
        ra.push(a.rtts());
        rb.push(b.rtts());
    }
    assert!(
        ra.iter().chain(rb.iter()).flatten().all(|r| r.0 >= 1000),
        "{ra:?} {rb:?}"
    );
    let t = s.gather();
    // The mean over the sockets lies between the mean of their smallest values and the mean of
    // their largest, give or take the collector's tolerance: 10 % or 0.05 ms.
    type Seen = Vec<Vec<(u32, u32)>>;
    let within = |got: f64, seen: &[&Seen], f: fn(&(u32, u32)) -> u32| {
        let mut bounds = Vec::new();
        for rounds in seen {
            for socket in 0..rounds[0].len() {
                let values: Vec<f64> = rounds.iter().map(|r| f(&r[socket]) as f64 / 1e3).collect();
                let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = values.iter().copied().fold(0.0, f64::max);
                bounds.push((lo, hi));
            }
        }
        let n = bounds.len() as f64;
        let lo = bounds.iter().map(|b| b.0).sum::<f64>() / n;
        let hi = bounds.iter().map(|b| b.1).sum::<f64>() / n;
        got >= lo - (lo * 0.1).max(0.05) && got <= hi + (hi * 0.1).max(0.05)
    };
    let rtt = |x: &(u32, u32)| x.0;
    let rttvar = |x: &(u32, u32)| x.1;
    let (a_id, b_id) = (pods.short("a"), pods.short("b"));
    let got = field(&t, "container:rtt", &[("container", &a_id)], "as_client").unwrap();
    assert!(within(got, &[&ra], rtt), "a rtt {got} vs {ra:?}");
    let got = field(
        &t,
        "container:rtt_variance",
        &[("container", &a_id)],
        "as_client",
    )
    .unwrap();
    assert!(within(got, &[&ra], rttvar), "a rttvar {got} vs {ra:?}");
    let got = field(&t, "container:rtt", &[("container", &b_id)], "as_client").unwrap();
    assert!(within(got, &[&rb], rtt), "b rtt {got} vs {rb:?}");
    // The pod's mean is over its flows (3 of a, 1 of b), not over container means.
    let got = field(&t, "pod:rtt", &[("pod", pods.names[0])], "as_client").unwrap();
    assert!(
        within(got, &[&ra, &rb], rtt),
        "pod rtt {got} vs {ra:?} {rb:?}"
    );
    let got = field(
        &t,
        "pod:rtt_variance",
        &[("pod", pods.names[0])],
        "as_client",
    )
    .unwrap();
    assert!(
        within(got, &[&ra, &rb], rttvar),
        "pod rttvar {got} vs {ra:?} {rb:?}"
    );
    // The server side has RTT samples too (3 ms answers make them about 3 ms or more).
    let c_id = pods.short("c");
    assert!(field(&t, "container:rtt", &[("container", &c_id)], "as_server").unwrap() > 0.0);
    s.finish();
}

#[test]
fn ntopng_queries_work_unchanged_against_a_real_influxdb() {
    let Some(_serial) = root_test("ntopng_queries_work_unchanged_against_a_real_influxdb") else {
        return;
    };
    let pods = Pods::new("flk4");
    let bundles = pods.write_containerd_bundles();
    let server = Influxd::start();
    server.create_database("ntopng");
    let mut s = Session::start(&pods.config(Some(&bundles), None, "ntopng_compat = true\n"));
    let (_a, _b, _c, _host) = seed_traffic(&pods);
    // Gathers until four have written container a's 3 client flows, each into InfluxDB: how
    // many gathers a slow machine needs before the first does (a container resolved a gather
    // late) does not matter; what InfluxDB returns is checked against what flowlens wrote.
    let a = pods.short("a");
    let mut written: Vec<String> = Vec::new();
    let a_lines = |written: &[String]| -> Vec<(f64, f64)> {
        written
            .iter()
            .flat_map(|t| parse_lines(t).unwrap())
            .filter(|p| matches(p, "container:num_flows", &[("container", &a)]))
            .map(|p| {
                let f = |k: &str| match p.fields.iter().find(|(n, _)| n == k) {
                    Some((_, FieldValue::Float(v))) => *v,
                    other => panic!("{k}: {other:?}"),
                };
                (f("as_client"), f("as_server"))
            })
            .collect()
    };
    while a_lines(&written).iter().filter(|(c, _)| *c == 3.0).count() < 4 {
        assert!(
            written.len() < 60,
            "60 gathers, and not four with a's flows"
        );
        let t = s.gather();
        let reply = server.write("ntopng", t.as_bytes());
        assert_eq!(reply.status, 204, "{}", reply.body);
        written.push(t);
        std::thread::sleep(Duration::from_millis(50));
    }
    s.finish();
    let shown = server.influx(
        "ntopng",
        "show measurements with measurement =~ /^container*/",
    );
    let names: Vec<&str> = shown
        .lines()
        .skip(3)
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(
        names,
        [
            "container:num_flows",
            "container:rtt",
            "container:rtt_variance"
        ],
        "{shown}"
    );
    let rows = server.influx(
        "ntopng",
        "select * from \"container:num_flows\" order by time desc limit 10",
    );
    let mut lines = rows.lines();
    assert_eq!(lines.next(), Some("name: container:num_flows"), "{rows}");
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["time", "as_client", "as_server", "container", "ifid"],
        "{rows}"
    );
    let num_flows_lines = written
        .iter()
        .map(|t| lines_of(t, "container:num_flows").len())
        .sum::<usize>();
    assert_eq!(
        rows.lines()
            .skip(3)
            .filter(|l| !l.trim().is_empty())
            .count(),
        num_flows_lines.min(10),
        "{rows}"
    );
    // Every point flowlens wrote for container a, and only those, with its values.
    let one = server.influx(
        "ntopng",
        &format!("select * from \"container:num_flows\" where \"container\" = '{a}' order by time"),
    );
    let stored: Vec<(f64, f64)> = one
        .lines()
        .skip(3)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            assert!(l.contains(&a), "{one}");
            let cols: Vec<&str> = l.split_whitespace().collect();
            (cols[1].parse().unwrap(), cols[2].parse().unwrap())
        })
        .collect();
    assert_eq!(stored, a_lines(&written), "{one}");
}

#[test]
fn stopped_containers_are_written_with_zeros_until_the_ttl() {
    let Some(_serial) = root_test("stopped_containers_are_written_with_zeros_until_the_ttl") else {
        return;
    };
    let pods = Pods::new("flk5");
    let bundles = pods.write_containerd_bundles();
    let mut s = Session::start(&pods.config(Some(&bundles), None, "series_ttl_secs = 2\n"));
    let (a, b, _c, _host) = seed_traffic(&pods);
    let b_id = pods.short("b");
    let t = s.gather();
    assert_eq!(
        num(
            &t,
            "container:num_flows",
            &[("container", &b_id)],
            "as_client"
        ),
        1
    );
    let stopped = std::time::Instant::now();
    drop(b); // the container stops: its process and connections end
    std::thread::sleep(Duration::from_millis(300));
    let t = s.gather();
    assert_eq!(
        num(
            &t,
            "container:num_flows",
            &[("container", &b_id)],
            "as_client"
        ),
        0,
        "{t}"
    );
    assert!(
        field(
            &t,
            "container:traffic",
            &[("container", &b_id)],
            "bytes_sent"
        )
        .unwrap()
            >= 1.0,
        "counters keep their value"
    );
    // Written with zeros until its TTL (2 s after its last flow, which ended after `stopped`)
    // ends it: however many gathers a slow machine makes meanwhile, and however late the one
    // that finds it ended.
    let t = gather_until(&mut s, |t| {
        let flows = num(
            t,
            "container:num_flows",
            &[("container", &b_id)],
            "as_client",
        );
        assert!(flows <= 0, "{t}");
        flows == -1
    });
    assert!(
        stopped.elapsed() >= Duration::from_secs(2),
        "ended {:?} after its flows, before series_ttl_secs = 2",
        stopped.elapsed()
    );
    let a_id = pods.short("a");
    assert_eq!(
        num(
            &t,
            "container:num_flows",
            &[("container", &a_id)],
            "as_client"
        ),
        3
    );
    drop(a);
    s.finish();
}

#[test]
fn max_containers_folds_the_rest_into_other() {
    let Some(_serial) = root_test("max_containers_folds_the_rest_into_other") else {
        return;
    };
    let pods = Pods::new("flk6");
    let bundles = pods.write_containerd_bundles();
    let mut s = Session::start(&pods.config(Some(&bundles), None, "max_containers = 2\n"));
    let (_a, _b, _c, _host) = seed_traffic(&pods);
    let t = s.gather();
    let series: Vec<String> = parse_lines(&t)
        .unwrap()
        .into_iter()
        .filter(|p| p.measurement == "container:num_flows")
        .map(|p| {
            p.tags
                .iter()
                .find(|(k, _)| k == "container")
                .unwrap()
                .1
                .clone()
        })
        .collect();
    // Two named series and the fold. Other containers on this machine (none in CI) may be
    // busier than ours; then more of ours fold too.
    assert_eq!(series.iter().filter(|c| *c != "other").count(), 2, "{t}");
    assert_eq!(series.iter().filter(|c| *c == "other").count(), 1, "{t}");
    assert!(
        !series.contains(&pods.short("b")),
        "b (1 flow) is folded:\n{t}"
    );
    let dropped = num(&t, "flowlens:internal", &[], "series_dropped");
    assert!(dropped >= 1, "{t}");
    if dropped == 1 {
        // Only ours: the busiest two keep their names, c (6 flows) and a (3).
        assert!(
            series.contains(&pods.short("c")) && series.contains(&pods.short("a")),
            "{t}"
        );
        assert_eq!(
            num(
                &t,
                "container:num_flows",
                &[("container", "other")],
                "as_client"
            ),
            1
        );
    }
    s.finish();
}

#[test]
fn metadata_caches_shrink_back_after_a_thousand_containers_come_and_go() {
    let Some(_serial) =
        root_test("metadata_caches_shrink_back_after_a_thousand_containers_come_and_go")
    else {
        return;
    };
    let pods = Pods::new("flk7");
    let bundles = pods.write_containerd_bundles();
    let config = pods.config(
        Some(&bundles),
        None,
        "series_ttl_secs = 1\nmax_containers = 2000\n",
    );
    let mut s = Session::start(&config);
    let mut c = pods.start("c");
    c.cmd("listen 8080");
    // 1000 containers of pod P1, each a cgroup directory and a containerd bundle.
    let mut dirs = Vec::new();
    for i in 0..1000u64 {
        let id = container_id(10_000 + i);
        let dir = pods.pod_slice(0).join(format!("cri-containerd-{id}.scope"));
        std::fs::create_dir_all(&dir).unwrap();
        let annotations = format!(
            r#"{{"io.kubernetes.cri.container-type":"container","io.kubernetes.cri.container-name":"job-{i}","io.kubernetes.cri.sandbox-id":"{}","io.kubernetes.cri.sandbox-name":"{}","io.kubernetes.cri.sandbox-namespace":"shop"}}"#,
            pods.sandbox_id(0),
            pods.names[0]
        );
        write_bundle(&bundles, &id, &annotations);
        dirs.push(dir);
    }
    let baseline = s.gather();
    // Other containers on this machine (none in CI) may have series too: compare with these.
    let tracked0 = num(&baseline, "flowlens:internal", &[], "containers_tracked");
    let cache0 = num(
        &baseline,
        "flowlens:internal",
        &[],
        "metadata_cache_entries",
    );
    // One process visits each container in turn (the test moves it: inside `ip netns exec` the
    // process sees another /sys) and makes one short connection from each.
    let mut a = pods.start("a");
    let pid = a.child.id().to_string();
    for dir in &dirs {
        std::fs::write(dir.join("cgroup.procs"), &pid).unwrap();
        a.cmd("churn 1 10.93.0.2 8080");
    }
    std::fs::write(pods.cgroups["a"].join("cgroup.procs"), &pid).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let t = s.gather();
    assert!(
        num(&t, "flowlens:internal", &[], "containers_tracked") >= 1000,
        "every short-lived container was seen:\n{}",
        lines_of(&t, "flowlens:internal").join("\n")
    );
    // Connections shorter than the interval are counted (exactly, unless the kernel skipped a
    // program run, which events_lost counts).
    let lost = num(&t, "flowlens:internal", &[], "events_lost")
        - num(&baseline, "flowlens:internal", &[], "events_lost");
    let new_flows = num(&t, "pod:new_flows", &[("pod", pods.names[0])], "as_client");
    assert!(
        (1000 - lost..=1000).contains(&new_flows),
        "{new_flows} new flows with {lost} events lost"
    );
    assert!(num(&t, "flowlens:internal", &[], "metadata_cache_entries") >= 1000);
    // They all go away.
    for dir in &dirs {
        std::fs::remove_dir(dir).unwrap();
        let id = dir.file_name().unwrap().to_str().unwrap();
        let id = id
            .trim_start_matches("cri-containerd-")
            .trim_end_matches(".scope");
        std::fs::remove_dir_all(bundles.join("k8s.io").join(id)).unwrap();
    }
    // Their series end after the TTL (1 s) and the caches are pruned at the gathers after:
    // awaited, however slow the machine.
    let t = gather_until(&mut s, |t| {
        num(t, "flowlens:internal", &[], "containers_tracked") <= tracked0 + 2
            && num(t, "flowlens:internal", &[], "metadata_cache_entries") <= cache0 + 10
    });
    let internal = lines_of(&t, "flowlens:internal").join("\n");
    let tracked = num(&t, "flowlens:internal", &[], "containers_tracked");
    assert!(
        tracked <= tracked0 + 2,
        "series end after the TTL: {tracked} vs {tracked0}:\n{internal}"
    );
    let cache = num(&t, "flowlens:internal", &[], "metadata_cache_entries");
    assert!(
        cache <= cache0 + 10,
        "caches shrink back: {cache} vs {cache0} before:\n{internal}"
    );
    drop(a);
    s.finish();
}

/// Adds `tc netem` delay to the egress of `dev` in network namespace `netns`; Err(why) when the
/// kernel has no netem (`sch_netem`).
fn netem_delay(netns: &str, dev: &str, delay: &str) -> Result<(), String> {
    let out = Command::new("tc")
        .args([
            "-n", netns, "qdisc", "add", "dev", dev, "root", "netem", "delay", delay,
        ])
        .output()
        .map_err(|e| format!("tc: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// The RTT bucket counters of a line: `<role>_<bound>` -> count, in bucket order, with each
/// bucket's (lower, upper) bound in ms (`inf` as f64::INFINITY).
fn rtt_buckets(
    text: &str,
    measurement: &str,
    tags: &[(&str, &str)],
    role: &str,
) -> Vec<(f64, f64, i64)> {
    let bounds = [
        "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "25", "50", "100", "250", "500",
        "1000", "inf",
    ];
    let mut lower = 0.0;
    bounds
        .iter()
        .map(|b| {
            let upper = if *b == "inf" {
                f64::INFINITY
            } else {
                b.parse().unwrap()
            };
            // A bucket without a sample is left out: 0 (the callers check the totals).
            let n = num(text, measurement, tags, &format!("{role}_{b}")).max(0);
            let bucket = (lower, upper, n);
            lower = upper;
            bucket
        })
        .collect()
}

/// Samples of `buckets` in buckets within [lo, hi] ms.
fn samples_within(buckets: &[(f64, f64, i64)], lo: f64, hi: f64) -> i64 {
    buckets
        .iter()
        .filter(|(l, u, _)| *l >= lo && *u <= hi)
        .map(|b| b.2)
        .sum()
}

#[test]
fn rtt_buckets_and_quantiles_separate_a_near_and_a_far_peer_under_netem() {
    let Some(_serial) =
        root_test("rtt_buckets_and_quantiles_separate_a_near_and_a_far_peer_under_netem")
    else {
        return;
    };
    // Container a (pod P1) talks to c (pod P2) over a link netem delays by 1 ms, and to a host
    // process in a third namespace over one delayed by 20 ms, in both roles.
    let pods = Pods::new("flk9");
    let far = "flk9-p3";
    let _ = Command::new("ip").args(["netns", "del", far]).output();
    sh("ip", &["netns", "add", far]);
    struct DelNetns(&'static str);
    impl Drop for DelNetns {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", self.0]).output();
        }
    }
    let _far_ns = DelNetns(far);
    sh(
        "ip",
        &[
            "link",
            "add",
            "flk94",
            "netns",
            &pods.netns[0],
            "type",
            "veth",
            "peer",
            "name",
            "flk95",
            "netns",
            far,
        ],
    );
    sh(
        "ip",
        &[
            "-n",
            &pods.netns[0],
            "addr",
            "add",
            "10.95.0.1/24",
            "dev",
            "flk94",
        ],
    );
    sh(
        "ip",
        &["-n", far, "addr", "add", "10.95.0.2/24", "dev", "flk95"],
    );
    sh("ip", &["-n", &pods.netns[0], "link", "set", "flk94", "up"]);
    sh("ip", &["-n", far, "link", "set", "flk95", "up"]);
    sh("ip", &["-n", far, "link", "set", "lo", "up"]);
    // The delay is on each peer's egress: every round trip with it crosses it once.
    if let Err(why) = netem_delay(&pods.netns[1], "flk92", "1ms") {
        // tests/kernels/run sets FLOWLENS_REQUIRE_NETEM in guests whose kernel ships it.
        assert!(
            std::env::var_os("FLOWLENS_REQUIRE_NETEM").is_none(),
            "netem is required here: {why}"
        );
        eprintln!(
            "skipping rtt_buckets_and_quantiles_separate_a_near_and_a_far_peer_under_netem: \
             tc netem is not available in this kernel ({why}); the kernel matrix runs it"
        );
        return;
    }
    netem_delay(far, "flk95", "20ms").unwrap();
    let bundles = pods.write_containerd_bundles();
    let mut s = Session::start(&pods.config(Some(&bundles), None, ""));
    let mut a = pods.start("a");
    a.cmd("listen 8081");
    let mut c = pods.start("c");
    c.cmd("listen 8080");
    let mut peer = StandIn::start_outside(far);
    peer.cmd("listen 8080");
    // a: 3 client flows to the near peer, 1 to the far one; 1 server flow from the near peer,
    // 2 from the far one. The RTT samples are the handshakes' (no data is sent).
    a.cmd("connect 10.93.0.2 8080 3");
    a.cmd("connect 10.95.0.2 8080 1");
    c.cmd("connect 10.93.0.1 8081 1");
    peer.cmd("connect 10.95.0.1 8081 2");
    // The far peer's last ACK reaches a 20 ms after its connect returned.
    std::thread::sleep(Duration::from_millis(500));
    let a_id = pods.short("a");
    let tags: &[(&str, &str)] = &[("container", &a_id)];
    let pod_tags: &[(&str, &str)] = &[("pod", pods.names[0])];
    let t1 = s.gather();
    assert_eq!(
        num(&t1, "container:num_flows", tags, "as_client"),
        4,
        "{t1}"
    );
    assert_eq!(
        num(&t1, "container:num_flows", tags, "as_server"),
        3,
        "{t1}"
    );
    let t2 = s.gather();
    eprintln!("{}", lines_of(&t2, "container:rtt_buckets").join("\n"));
    eprintln!("{}", lines_of(&t2, "container:rtt_quantiles").join("\n"));
    for (t, gathers) in [(&t1, 1), (&t2, 2)] {
        for (m, tags) in [
            ("container:rtt_buckets", tags),
            ("pod:rtt_buckets", pod_tags),
        ] {
            // Every flow counts once per gather, none below netem's 1 ms (nothing in a bucket
            // under 0.5 ms), and the far flows' samples are at least 20 ms, in buckets from 10
            // ms up. How far above its delay a sample lands depends on the machine (a handshake
            // under QEMU's emulation took up to 80 ms more): no upper bound is asserted.
            let client = rtt_buckets(t, m, tags, "client");
            let total = |b: &[(f64, f64, i64)]| b.iter().map(|b| b.2).sum::<i64>();
            assert_eq!(total(&client), 4 * gathers, "{m} {client:?}");
            assert_eq!(samples_within(&client, 0.5, f64::INFINITY), 4 * gathers);
            assert!(
                samples_within(&client, 10.0, f64::INFINITY) >= gathers,
                "{m} {client:?}"
            );
            let server = rtt_buckets(t, m, tags, "server");
            assert_eq!(total(&server), 3 * gathers, "{m} {server:?}");
            assert_eq!(samples_within(&server, 0.5, f64::INFINITY), 3 * gathers);
            assert!(
                samples_within(&server, 10.0, f64::INFINITY) >= 2 * gathers,
                "{m} {server:?}"
            );
        }
    }
    // This interval's quantiles: the client's p90 and p99 are the top sample's bucket (a far
    // flow's at least), and so is the server's median (2 of its 3 samples are far ones); the
    // client's median is at least a near flow's.
    for (m, tags) in [
        ("container:rtt_quantiles", tags),
        ("pod:rtt_quantiles", pod_tags),
    ] {
        let q = |f: &str| field(&t2, m, tags, f).unwrap_or_else(|| panic!("{m} {f}:\n{t2}"));
        let p50 = q("client_p50");
        assert!(p50 > 0.5, "{m} client_p50 {p50}");
        for f in [
            "client_p90",
            "client_p99",
            "server_p50",
            "server_p90",
            "server_p99",
        ] {
            assert!(q(f) >= 10.0, "{m} {f} {}", q(f));
        }
    }
    // c: only near flows (1 client, 3 server), each counted once per gather.
    let c_id = pods.short("c");
    let c_tags: &[(&str, &str)] = &[("container", &c_id)];
    let client = rtt_buckets(&t2, "container:rtt_buckets", c_tags, "client");
    assert_eq!(samples_within(&client, 0.5, f64::INFINITY), 2, "{client:?}");
    let server = rtt_buckets(&t2, "container:rtt_buckets", c_tags, "server");
    assert_eq!(samples_within(&server, 0.5, f64::INFINITY), 6, "{server:?}");
    drop((a, c, peer));
    s.finish();
}

/// Runs a shell command inside network namespace `ns`.
fn in_ns(ns: &str, script: &str) {
    sh("ip", &["netns", "exec", ns, "sh", "-c", script]);
}

/// Gathers until `done` holds for a batch (a kernel timer must fire first); the last batch.
fn gather_until(s: &mut Session, done: impl Fn(&str) -> bool) -> String {
    for _ in 0..60 {
        let t = s.gather();
        if done(&t) {
            return t;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!("the awaited value never came");
}

#[test]
fn connection_failures_count_per_container_and_pod_by_reason_and_role() {
    let Some(_serial) =
        root_test("connection_failures_count_per_container_and_pod_by_reason_and_role")
    else {
        return;
    };
    let pods = Pods::new("flkf");
    let bundles = pods.write_containerd_bundles();
    let mut s = Session::start(&pods.config(Some(&bundles), None, ""));
    let (p1, p2) = (&pods.netns[0], &pods.netns[1]);
    // P1's SYNs give up after one retry (about 3 s); P2's established flows after one
    // retransmission. 10.97.0.0/24 is routed through P2, which does not forward: its SYNs
    // vanish unanswered (no ICMP from a host that is no router).
    in_ns(p1, "echo 1 > /proc/sys/net/ipv4/tcp_syn_retries");
    in_ns(p2, "echo 1 > /proc/sys/net/ipv4/tcp_retries2");
    in_ns(p2, "echo 0 > /proc/sys/net/ipv4/ip_forward");
    sh(
        "ip",
        &["-n", p1, "route", "add", "10.97.0.0/24", "via", "10.93.0.2"],
    );
    let mut c = pods.start("c");
    c.cmd("listen 8080");
    let mut a = pods.start("a");
    let mut b = pods.start("b");
    let ctr = |name: &str| [("container", pods.short(name))];
    let tags = |name: &str| ctr(name).map(|(k, v)| (k, v));
    let get = |t: &str, m: &str, name: &str, f: &str| {
        let tags = tags(name);
        let tags: Vec<(&str, &str)> = tags.iter().map(|(k, v)| (*k, v.as_str())).collect();
        num(t, m, &tags, f)
    };

    // a: two connects to a closed port, refused.
    a.cmd("refused 10.93.0.2 9 2");
    // a: a connect left pending is no flow: neither active nor new.
    a.cmd("pending 10.97.0.1 80");
    // (a cgroup met for the first time may be named at the next gather)
    let t = gather_until(&mut s, |t| {
        get(t, "container:tcp_failures", "a", "refused_as_client") > 0
    });
    assert_eq!(get(&t, "container:num_flows", "a", "as_client"), 0, "{t}");
    assert_eq!(get(&t, "container:new_flows", "a", "as_client"), 0, "{t}");
    assert_eq!(
        get(&t, "container:tcp_failures", "a", "refused_as_client"),
        2,
        "{t}"
    );
    // ... until its SYN retries run out.
    assert_eq!(a.cmd("await"), "110"); // ETIMEDOUT
                                       // a: a connect its process gives up on, and one to a neighbour that never answers ARP
                                       // (the kernel's own ICMP host unreachable).
    a.cmd("abort 10.97.0.1 80");
    // (ARP gives up after about 3 s: the SYNs must outlast it)
    in_ns(p1, "echo 6 > /proc/sys/net/ipv4/tcp_syn_retries");
    assert_eq!(a.cmd("failing 10.93.0.77 80"), "113"); // EHOSTUNREACH

    // c resets b's connection: b's failure (as client), not c's own choice.
    b.cmd("connect 10.93.0.2 8080 1");
    b.cmd("pingpong");
    c.cmd("reset_served");
    b.cmd("close");
    // a resets its connection to c: c's failure (as server).
    a.cmd("connect 10.93.0.2 8080 1");
    a.cmd("pingpong");
    a.cmd("reset");
    // b connects again, then P1 goes dark: c's data to b is never acknowledged.
    b.cmd("connect 10.93.0.2 8080 1");
    b.cmd("pingpong");
    sh("ip", &["-n", p1, "link", "set", "flkf1", "down"]);
    c.cmd("poke_served");
    let t = gather_until(&mut s, |t| {
        get(t, "container:tcp_failures", "c", "timed_out_as_server") > 0
    });
    eprintln!("{t}");

    let fields = [
        "refused_as_client",
        "timed_out_as_client",
        "timed_out_as_server",
        "unreachable_as_client",
        "aborted_as_client",
        "reset_as_client",
        "reset_as_server",
    ];
    let expect = |name: &str, want: [i64; 7]| {
        for (f, w) in fields.iter().zip(want) {
            assert_eq!(
                get(&t, "container:tcp_failures", name, f),
                w,
                "{name} {f}: {t}"
            );
        }
    };
    expect("a", [2, 1, 0, 1, 1, 0, 0]);
    expect("b", [0, 0, 0, 0, 0, 1, 0]);
    expect("c", [0, 0, 1, 0, 0, 0, 1]);
    let pod = |name: &str, f: &str| {
        num(
            &t,
            "pod:tcp_failures",
            &[("pod", name), ("namespace", "shop")],
            f,
        )
    };
    let (web, db) = (pods.names[0], pods.names[1]);
    for (f, (w1, w2)) in fields
        .iter()
        .zip([(2, 0), (1, 0), (0, 1), (1, 0), (1, 0), (1, 0), (0, 1)])
    {
        assert_eq!((pod(web, f), pod(db, f)), (w1, w2), "pods {f}: {t}");
    }
    // Failed connects were never flows: a started one, b two, c accepted three.
    assert_eq!(get(&t, "container:new_flows", "a", "as_client"), 1, "{t}");
    assert_eq!(get(&t, "container:new_flows", "b", "as_client"), 2, "{t}");
    assert_eq!(get(&t, "container:new_flows", "c", "as_server"), 3, "{t}");
    // connects_failed is host-wide (other processes may fail connects too).
    assert!(
        num(&t, "flowlens:internal", &[], "connects_failed") >= 5,
        "{t}"
    );
    s.finish();
}

/// The field `f` of container `id`'s `container:peers` line for `peer` (-1: no such line).
fn peer_field(t: &str, id: &str, peer: &str, f: &str) -> i64 {
    num(
        t,
        "container:peers",
        &[("container", id), ("peer", peer)],
        f,
    )
}

/// The `container:peers` lines of container `id`.
fn peer_lines(t: &str, id: &str) -> Vec<flowlens_core::lineproto::Point> {
    parse_lines(t)
        .unwrap()
        .into_iter()
        .filter(|p| p.measurement == "container:peers")
        .filter(|p| p.tags.iter().any(|(k, v)| k == "container" && v == id))
        .collect()
}

/// Sum of field `f` over `lines`.
fn sum_field(lines: &[flowlens_core::lineproto::Point], f: &str) -> i64 {
    lines
        .iter()
        .filter_map(|p| match p.fields.iter().find(|(k, _)| k == f)?.1 {
            FieldValue::Int(v) => Some(v),
            _ => None,
        })
        .sum()
}

#[test]
fn peers_count_connections_bytes_and_failures_per_destination_and_name_local_ones() {
    let Some(_serial) =
        root_test("peers_count_connections_bytes_and_failures_per_destination_and_name_local_ones")
    else {
        return;
    };
    let pods = Pods::new("flkp");
    let bundles = pods.write_containerd_bundles();
    let mut s = Session::start(&pods.config(Some(&bundles), None, ""));
    let (a, b, c) = (pods.short("a"), pods.short("b"), pods.short("c"));
    let mut sc = pods.start("c");
    sc.cmd("listen 8080");
    let mut sa = pods.start("a");
    // a: 3 connections kept open, one round trip each; 5 more that come and go; 2 refused.
    sa.cmd("connect 10.93.0.2 8080 3");
    sa.cmd("pingpong");
    sa.cmd("churn 5 10.93.0.2 8080");
    sa.cmd("refused 10.93.0.2 9 2");
    // b: one connection, two round trips.
    let mut sb = pods.start("b");
    sb.cmd("connect 10.93.0.2 8080 1");
    sb.cmd("pingpong 2");
    // Each round trip and each churned connection moves 1 byte each way.
    let fields = [
        "active",
        "connections",
        "bytes_sent",
        "bytes_rcvd",
        "failures",
    ];
    let want: [(&str, &str, [i64; 5]); 4] = [
        (&a, "10.93.0.2:8080", [3, 8, 8, 8, 0]),
        (&a, "10.93.0.2:9", [0, 0, 0, 0, 2]),
        (&b, "10.93.0.2:8080", [1, 1, 2, 2, 0]),
        (&c, "*:8080", [4, 9, 10, 10, 0]),
    ];
    let settled = |t: &str| {
        want.iter().all(|(id, peer, w)| {
            fields
                .iter()
                .zip(w)
                .all(|(f, w)| peer_field(t, id, peer, f) == *w)
        })
    };
    // The last churned connections' server sides close a moment after their clients: their
    // final counters come with their close.
    let mut t = s.gather();
    for _ in 0..20 {
        if settled(&t) {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
        t = s.gather();
    }
    eprintln!("{t}");
    for (id, peer, w) in want {
        for (f, w) in fields.iter().zip(w) {
            assert_eq!(peer_field(&t, id, peer, f), w, "{id} {peer} {f}:\n{t}");
        }
    }
    // Exactly those series: no `other`.
    assert_eq!(peer_lines(&t, &a).len(), 2, "{t}");
    assert_eq!(peer_lines(&t, &b).len(), 1, "{t}");
    assert_eq!(peer_lines(&t, &c).len(), 1, "{t}");
    // The destination served by c on this node is named, with its pod; the closed port is not.
    let tags = |peer: &str| {
        peer_lines(&t, &a)
            .into_iter()
            .find(|p| p.tags.iter().any(|(k, v)| k == "peer" && v == peer))
            .unwrap()
            .tags
    };
    let to_c = tags("10.93.0.2:8080");
    for (k, v) in [
        ("peer_container", c.as_str()),
        ("peer_pod", pods.names[1]),
        ("role", "client"),
        ("proto", "tcp"),
        ("pod", pods.names[0]),
    ] {
        assert!(
            to_c.iter().any(|(tk, tv)| tk == k && tv == v),
            "{k}={v}: {to_c:?}"
        );
    }
    assert!(!tags("10.93.0.2:9")
        .iter()
        .any(|(k, _)| k == "peer_container"));
    // An RTT for the TCP flows of the interval.
    assert!(field(
        &t,
        "container:peers",
        &[("container", &a), ("peer", "10.93.0.2:8080")],
        "rtt"
    )
    .is_some());
    s.finish();
}

#[test]
fn ten_thousand_destinations_stay_within_the_peer_budget_and_the_rest_is_counted_in_other() {
    let Some(_serial) = root_test(
        "ten_thousand_destinations_stay_within_the_peer_budget_and_the_rest_is_counted_in_other",
    ) else {
        return;
    };
    let pods = Pods::new("flkk");
    let bundles = pods.write_containerd_bundles();
    let mut s = Session::start(&pods.config(Some(&bundles), None, ""));
    let (a, b) = (pods.short("a"), pods.short("b"));
    // b (same pod, same network namespace) serves 100 ports; a connects once to each port of
    // 100 loopback addresses (127.0.0.0/8 is all local): 10,000 destinations.
    let mut sb = pods.start("b");
    sb.cmd("sink 20000 100");
    let mut sa = pods.start("a");
    sa.cmd("sweep 100 20000 100");
    let mut dropped = 0;
    let mut last = String::new();
    for _ in 0..60 {
        let t = s.gather();
        dropped += num(&t, "flowlens:internal", &[], "series_dropped");
        // Everything the test asserts, not only the connections: a gather can see every
        // connection while one is still active, its byte not counted yet.
        let (la, lb) = (peer_lines(&t, &a), peer_lines(&t, &b));
        let done = [(&la, 10_000, 0), (&lb, 0, 10_000)]
            .iter()
            .all(|(lines, sent, rcvd)| {
                lines.len() == 33
                    && sum_field(lines, "connections") == 10_000
                    && sum_field(lines, "bytes_sent") == *sent
                    && sum_field(lines, "bytes_rcvd") == *rcvd
            });
        last = t;
        if done {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let t = last;
    let (la, lb) = (peer_lines(&t, &a), peer_lines(&t, &b));
    // The default budget: 32 peers of their own, plus `other`.
    assert_eq!(la.len(), 33, "{t}");
    assert_eq!(lb.len(), 33, "{t}");
    // Every connection and byte counted once, in a series of its own or in `other`.
    for (lines, sent, rcvd) in [(&la, 10_000, 0), (&lb, 0, 10_000)] {
        assert_eq!(sum_field(lines, "connections"), 10_000, "{t}");
        assert_eq!(sum_field(lines, "bytes_sent"), sent, "{t}");
        assert_eq!(sum_field(lines, "bytes_rcvd"), rcvd, "{t}");
    }
    let other = |id: &str| peer_field(&t, id, "other", "connections");
    assert_eq!(other(&a), 10_000 - 32, "{t}");
    assert_eq!(other(&b), 100 * (100 - 32), "{t}");
    // Each destination folded is counted once, whichever gathers its flows came in: a's 9,968
    // and b's 68 server ports (each with 100 clients).
    assert_eq!(dropped, (10_000 - 32) + (100 - 32), "{t}");
    s.finish();
}

/// The kernel's `TcpExtListenDrops` of network namespace `ns` (/proc/net/netstat there).
fn listen_drops(ns: &str) -> i64 {
    let text = sh("ip", &["netns", "exec", ns, "cat", "/proc/net/netstat"]);
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (names, values) = (lines.next().unwrap(), lines.next().unwrap());
    let at = names
        .split_whitespace()
        .position(|n| n == "ListenDrops")
        .unwrap_or_else(|| panic!("no ListenDrops in {names}"));
    values.split_whitespace().nth(at).unwrap().parse().unwrap()
}

/// Connections waiting in the accept queue of the TCP listener on `port` in namespace `ns`
/// (the `rx_queue` of its /proc/net/tcp line).
fn accept_queue(ns: &str, port: u16) -> u32 {
    let text = sh("ip", &["netns", "exec", ns, "cat", "/proc/net/tcp"]);
    let local = format!(":{port:04X}");
    for line in text.lines().skip(1) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        // sl, local_address, rem_address, st (0A: LISTEN), tx_queue:rx_queue, ...
        if cols[3] == "0A" && cols[1].ends_with(&local) {
            return u32::from_str_radix(cols[4].split(':').nth(1).unwrap(), 16).unwrap();
        }
    }
    panic!("no listener on port {port} in {ns}:\n{text}");
}

/// Fills the accept queue of a listener with backlog 1 (two connections) from `client`, and
/// waits until the listener has both: its next SYN is dropped.
fn fill_accept_queue(client: &mut StandIn, ns: &str, ip: &str, port: u16) {
    client.cmd(&format!("connect {ip} {port} 2"));
    for _ in 0..200 {
        if accept_queue(ns, port) == 2 {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("the accept queue of {ip}:{port} never held 2 connections");
}

#[test]
fn listen_queue_overflows_count_as_dropped_as_server_in_the_listening_container() {
    let Some(_serial) =
        root_test("listen_queue_overflows_count_as_dropped_as_server_in_the_listening_container")
    else {
        return;
    };
    let pods = Pods::new("flkl");
    let bundles = pods.write_containerd_bundles();
    let (p1, p2) = (&pods.netns[0], &pods.netns[1]);
    // A connect sends its SYN and one retransmission, then gives up (ETIMEDOUT): a listener
    // whose accept queue is full drops both.
    in_ns(p1, "echo 1 > /proc/sys/net/ipv4/tcp_syn_retries");
    in_ns(p2, "echo 1 > /proc/sys/net/ipv4/tcp_syn_retries");
    let mut a = pods.start("a");
    let mut b = pods.start("b");
    let mut c = pods.start("c");
    // b (pod P1) listens with backlog 1 and never accepts, and drops c's connects before
    // flowlens starts: those are not counted.
    b.cmd("backlog 8091 1");
    fill_accept_queue(&mut c, p1, "10.93.0.1", 8091);
    let before_start = listen_drops(p1);
    c.cmd("flood 10.93.0.1 8091 2");
    assert_eq!(c.cmd("await_all"), "110 110"); // ETIMEDOUT
    assert!(listen_drops(p1) > before_start);

    let mut s = Session::start(&pods.config(Some(&bundles), None, ""));
    let (p1_start, p2_start) = (listen_drops(p1), listen_drops(p2));
    // c (pod P2) starts listening after flowlens: all its drops count. a fills its queue and
    // floods it; c floods b again.
    c.cmd("backlog 8090 1");
    fill_accept_queue(&mut a, p2, "10.93.0.2", 8090);
    a.cmd("flood 10.93.0.2 8090 3");
    c.cmd("flood 10.93.0.1 8091 2");
    assert_eq!(a.cmd("await_all"), "110 110 110");
    assert_eq!(c.cmd("await_all"), "110 110");
    // Nothing is in flight any more: the SYNs were dropped before their connects gave up.
    let (d1, d2) = (listen_drops(p1) - p1_start, listen_drops(p2) - p2_start);
    assert!(d1 > 0 && d2 > 0, "ListenDrops: P1 +{d1}, P2 +{d2}");
    eprintln!("ListenDrops since flowlens started: P1 +{d1}, P2 +{d2}");

    let get = |t: &str, m: &str, tags: &[(&str, &str)], f: &str| num(t, m, tags, f);
    let ctr = |name: &str| pods.short(name);
    // (a cgroup met for the first time may be named at the next gather)
    let t = gather_until(&mut s, |t| {
        ["a", "b", "c"].iter().all(|n| {
            get(
                t,
                "container:tcp_failures",
                &[("container", &ctr(n))],
                "dropped_as_server",
            ) >= 0
        })
    });
    let dropped = |name: &str| {
        get(
            &t,
            "container:tcp_failures",
            &[("container", &ctr(name))],
            "dropped_as_server",
        )
    };
    // Each listener's drops since flowlens started, in its own container: exactly what its
    // namespace counted (each namespace has that one listener); none in the clients'.
    assert_eq!(dropped("b"), d1, "b: {t}");
    assert_eq!(dropped("c"), d2, "c: {t}");
    assert_eq!(dropped("a"), 0, "a: {t}");
    let pod = |name: &str| {
        get(
            &t,
            "pod:tcp_failures",
            &[("pod", name), ("namespace", "shop")],
            "dropped_as_server",
        )
    };
    assert_eq!((pod(pods.names[0]), pod(pods.names[1])), (d1, d2), "{t}");
    // The clients saw their connects time out.
    let timed_out = |name: &str| {
        get(
            &t,
            "container:tcp_failures",
            &[("container", &ctr(name))],
            "timed_out_as_client",
        )
    };
    assert_eq!((timed_out("a"), timed_out("c")), (3, 2), "{t}");
    s.finish();
}

#[test]
fn a_pods_counters_keep_what_its_expired_sidecar_counted() {
    let Some(_serial) = root_test("a_pods_counters_keep_what_its_expired_sidecar_counted") else {
        return;
    };
    let pods = Pods::new("flkq");
    let bundles = pods.write_containerd_bundles();
    let mut s = Session::start(&pods.config(Some(&bundles), None, "series_ttl_secs = 2\n"));
    let (web, b) = (pods.names[0], pods.short("b"));
    let mut sc = pods.start("c");
    sc.cmd("listen 8080");
    // Pod web: a holds one connection (5 round trips of 1 byte); its sidecar b makes three
    // short connections of 1 byte each way, then stays idle until its series ends.
    let mut sa = pods.start("a");
    sa.cmd("connect 10.93.0.2 8080 1");
    sa.cmd("pingpong 5");
    let mut sb = pods.start("b");
    sb.cmd("churn 3 10.93.0.2 8080");
    let mut check = monotonic::Checker::new();
    let pod = |t: &str, f: &str| num(t, "pod:traffic", &[("pod", web)], f);
    let sidecar = |t: &str| field(t, "container:traffic", &[("container", &b)], "bytes_sent");
    // Both counted, b's series alive.
    let t = gather_until(&mut s, |t| {
        pod(t, "bytes_sent") == 8 && sidecar(t).is_some()
    });
    check.check(&t);
    assert_eq!(pod(&t, "bytes_rcvd"), 8, "{t}");
    // Until b's series has ended (2 s after its last flow), and two gathers more.
    let mut after = 0;
    for _ in 0..240 {
        let t = s.gather();
        check.check(&t);
        if sidecar(&t).is_none() {
            after += 1;
            // The pod lives on (a's connection): it keeps b's bytes and flows.
            assert_eq!(
                (pod(&t, "bytes_sent"), pod(&t, "bytes_rcvd")),
                (8, 8),
                "{t}"
            );
            assert_eq!(
                num(&t, "pod:new_flows", &[("pod", web)], "as_client"),
                4,
                "{t}"
            );
            if after == 2 {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(after, 2, "b's series never ended");
    drop((sa, sb, sc));
    s.finish();
}

#[test]
fn a_container_in_nested_cgroups_has_one_peer_budget_and_counters_that_never_go_back() {
    let Some(_serial) = root_test(
        "a_container_in_nested_cgroups_has_one_peer_budget_and_counters_that_never_go_back",
    ) else {
        return;
    };
    let pods = Pods::new("flkr");
    let bundles = pods.write_containerd_bundles();
    let mut s = Session::start(&pods.config(
        Some(&bundles),
        None,
        "series_ttl_secs = 2\nmax_peers_per_container = 4\n",
    ));
    let a = pods.short("a");
    let mut sc = pods.start("c");
    sc.cmd("listen 8080");
    // b (same pod, same network namespace) serves ports 20000..20003 on every loopback address.
    let mut sb = pods.start("b");
    sb.cmd("sink 20000 4");
    // Container a: a process in sub-cgroup `keep` holds one connection for the whole test;
    // processes in sub-cgroups that come and go connect to many peers (some the same).
    let sub = |name: &str| {
        let dir = pods.cgroups["a"].join(name);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    };
    let mut keep = StandIn::start(&sub("keep"), &pods.netns[0]);
    keep.cmd("connect 10.93.0.2 8080 1");
    let mut check = monotonic::Checker::new();
    let mut connections = 1;
    let peer_counts = |t: &str| peer_lines(t, &a).len();
    // Each sub-cgroup's sweep: (addresses, ports): 6, 8 and 4 peers, overlapping.
    for (i, (addrs, ports)) in [(3, 2), (2, 4), (1, 4)].into_iter().enumerate() {
        let dir = sub(&format!("worker{i}"));
        let mut w = StandIn::start(&dir, &pods.netns[0]);
        w.cmd(&format!("sweep {addrs} 20000 {ports}"));
        connections += addrs * ports;
        drop(w);
        let t = gather_until(&mut s, |t| {
            num(t, "container:new_flows", &[("container", &a)], "as_client") == connections
        });
        check.check(&t);
        assert!(peer_counts(&t) <= 5, "4 peers + other at most:\n{t}");
        remove_cgroup(&dir);
        // A gather or two while the sub-cgroup's peers live, then the next one.
        for _ in 0..2 {
            let t = s.gather();
            check.check(&t);
            assert!(peer_counts(&t) <= 5, "{t}");
        }
    }
    // Until every swept peer's series has ended (2 s after its last flow): a's counters stay,
    // the workloads' own counts (1 byte per swept connection).
    let mut last = None;
    for _ in 0..240 {
        let t = s.gather();
        check.check(&t);
        assert!(peer_counts(&t) <= 5, "{t}");
        let swept = peer_lines(&t, &a)
            .iter()
            .filter(|p| {
                p.tags
                    .iter()
                    .any(|(k, v)| k == "peer" && v.starts_with("127."))
            })
            .count();
        if swept == 0 {
            last = Some(t);
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let t = last.expect("the swept peers' series never ended");
    let new_flows = num(&t, "container:new_flows", &[("container", &a)], "as_client");
    assert_eq!(new_flows, connections, "{t}");
    let traffic = num(&t, "container:traffic", &[("container", &a)], "bytes_sent");
    assert_eq!(traffic, connections - 1, "{t}");
    drop(keep);
    remove_cgroup(&pods.cgroups["a"].join("keep"));
    drop((sb, sc));
    s.finish();
}

/// Removes an empty cgroup directory (its last process may take a moment to leave).
fn remove_cgroup(dir: &Path) {
    for _ in 0..100 {
        if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("cannot remove {}", dir.display());
}

/// A namespace's `Tcp: RetransSegs` (/proc/net/snmp, what `nstat` calls `TcpRetransSegs`).
fn retrans_segs(ns: &str) -> i64 {
    let snmp = in_netns(ns, || {
        std::fs::read_to_string("/proc/thread-self/net/snmp").expect("read /proc/net/snmp")
    });
    let mut tcp = snmp.lines().filter(|l| l.starts_with("Tcp:"));
    let (names, values) = (tcp.next().unwrap(), tcp.next().unwrap());
    let at = names
        .split_whitespace()
        .position(|n| n == "RetransSegs")
        .expect("RetransSegs in /proc/net/snmp");
    values.split_whitespace().nth(at).unwrap().parse().unwrap()
}

/// The TCP sockets of namespace `ns` that are not in TIME-WAIT (/proc/net/tcp and tcp6: the
/// guests of the kernel matrix have no `ss`), as their lines.
fn tcp_sockets_alive(ns: &str) -> Vec<String> {
    in_netns(ns, || {
        ["tcp", "tcp6"]
            .iter()
            .flat_map(|f| {
                let text = std::fs::read_to_string(format!("/proc/thread-self/net/{f}")).unwrap();
                text.lines()
                    .skip(1)
                    // The fourth column is the state: 06 is TIME-WAIT.
                    .filter(|l| l.split_whitespace().nth(3) != Some("06"))
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .collect()
    })
}

/// A client that sends `argv[3]` MiB to `argv[1]:argv[2]`, shuts its side, waits for the
/// server's close, then says "ready" and stays (its container stays).
const BULK_CLIENT: &str = r#"
import socket, sys, threading
host, port, mib = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.create_connection((host, port))
chunk = b"x" * (1 << 20)
for _ in range(mib):
    s.sendall(chunk)
s.shutdown(socket.SHUT_WR)
while s.recv(65536):
    pass
s.close()
print("ready", flush=True)
threading.Event().wait()
"#;

#[test]
fn retransmissions_from_random_drops_equal_the_namespaces_tcp_retrans_segs() {
    let Some(_serial) =
        root_test("retransmissions_from_random_drops_equal_the_namespaces_tcp_retrans_segs")
    else {
        return;
    };
    // The client pod's namespace (a) holds its container's connection and nothing else; the
    // server's namespace (b) drops 4 % of the segments that reach the port, at random (nftables'
    // numgen: this kernel may lack sch_netem), the SYN excepted (its retransmission waits a
    // second and would count the same way): the client retransmits what was dropped.
    let pair = NetnsPair::new("flrt", 131);
    let rules = "table inet lossy {\n chain input {\n  type filter hook input priority 0;\n  \
                 tcp dport 7131 tcp flags & syn == 0 numgen random mod 100 < 4 drop\n }\n}\n";
    let dir = TempDir::new("lossy");
    std::fs::write(dir.join("lossy.nft"), rules).unwrap();
    sh(
        "ip",
        &[
            "netns",
            "exec",
            &pair.ns[1],
            "nft",
            "-f",
            dir.join("lossy.nft").to_str().unwrap(),
        ],
    );
    // The server: reads everything, then closes.
    let server_addr = pair.addrs[1].clone();
    let listener = in_netns(&pair.ns[1], move || {
        std::net::TcpListener::bind((server_addr.as_str(), 7131)).unwrap()
    });
    let received = std::thread::spawn(move || {
        use std::io::Read;
        let (mut conn, _) = listener.accept().unwrap();
        let mut total = 0u64;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            match conn.read(&mut buf).unwrap() {
                0 => return total,
                n => total += n as u64,
            }
        }
    });
    let mut s = Session::start("");
    let before = retrans_segs(&pair.ns[0]);
    assert!(
        tcp_sockets_alive(&pair.ns[0]).is_empty(),
        "namespace a is quiet"
    );
    let mut standins = standins::StandIns::new();
    const POD: (&str, &str, &str) = ("shop", "lossy-0", "5f0c3b1e-93a1-4c1f-8d6a-0a1b2c3d4e31");
    let sandbox = standins.pod(POD.0, POD.1, POD.2, &pair.ns[0]);
    const MIB: u64 = 8;
    let id = standins.container(
        (POD.0, POD.1, POD.2, &sandbox),
        "uploader",
        &pair.ns[0],
        BULK_CLIENT,
        &[&pair.addrs[1], "7131", &MIB.to_string()],
    );
    assert_eq!(
        received.join().unwrap(),
        MIB << 20,
        "the server got every byte"
    );
    // The client's socket is closed (TIME-WAIT keeps no data to resend): the namespace's count
    // is final.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !tcp_sockets_alive(&pair.ns[0]).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            tcp_sockets_alive(&pair.ns[0])
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let kernel = retrans_segs(&pair.ns[0]) - before;
    assert!(
        kernel > 0,
        "4 % drops of {MIB} MiB caused no retransmission"
    );
    // The gather after the close has the socket's final count (its close record).
    let tag = [("container", &id[..12])];
    let t = gather_until(&mut s, |t| {
        value(t, "container:traffic", &tag, "bytes_sent") == (MIB << 20) as i64
    });
    let counted = value(&t, "container:tcp_retransmissions", &tag, "packets");
    eprintln!("{kernel} segments retransmitted (TcpRetransSegs), flowlens: {counted}");
    assert_eq!(counted, kernel, "{t}");
    let pod = value(&t, "pod:tcp_retransmissions", &[("pod", POD.1)], "packets");
    assert_eq!(pod, kernel, "{t}");
    drop(standins);
}

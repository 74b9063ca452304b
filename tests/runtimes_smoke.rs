//! Self-test of the real-runtimes harness (tests/support/runtimes.rs): starts containerd (CRI)
//! and dockerd, runs pod P1 (containers a, b), pod P2 (container c, an echo server) and a Docker
//! container, opens TCP connections from a and from the Docker container to c, checks what the
//! runtimes wrote on disk (containerd bundles with the io.kubernetes.cri.* annotations, Docker's
//! config.v2.json, /var/log/pods) and the containers' cgroup directories, then tears down and
//! checks that nothing is left. Root only (skips with the reason otherwise; fails in CI).

use std::{
    fs,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use flowlens_tests::{cgroup2_root, require_root, runtimes::RealRuntimes};

const NS: &str = "flowlens-smoke";

/// The `"annotations": {...}` object of an OCI config.json, as written.
fn annotations(config: &str) -> &str {
    let start = config
        .find("\"annotations\"")
        .expect("config.json has annotations");
    let end = config[start..]
        .find('}')
        .map_or(config.len(), |e| start + e + 1);
    &config[start..end]
}

fn has_annotation(config: &str, key: &str, value: &str) -> bool {
    let compact: String = annotations(config)
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    compact.contains(&format!("\"{key}\":\"{value}\""))
}

/// Number of established TCP connections to local port 8080 seen inside a container.
fn server_connections(rt: &RealRuntimes, id: &str) -> usize {
    rt.exec(id, &["netstat", "-tn"])
        .lines()
        .filter(|l| {
            l.contains("ESTABLISHED")
                && l.split_whitespace()
                    .nth(3)
                    .is_some_and(|a| a.ends_with(":8080"))
        })
        .count()
}

#[test]
fn real_runtimes_pods_docker_traffic_and_teardown() {
    if !require_root("runtimes_smoke") {
        return;
    }
    let t0 = Instant::now();
    let rt = RealRuntimes::start();
    println!("daemons up in {:?}", rt.bring_up);

    let t_pods = Instant::now();
    let p2 = rt.run_pod("p2", NS, &[("c", "nc -ll -p 8080 -e /bin/cat")]);
    // The clients connect once: the server must listen before they start.
    rt.wait_listening(p2.id("c"), 8080);
    let ip = p2.ip.clone();
    // Clients keep stdin open (sleep | nc), or nc would half-close and the server's cat end.
    let a_cmd = format!(
        "sleep 1000 | nc {ip} 8080 & sleep 1000 | nc {ip} 8080 & sleep 1000 | nc {ip} 8080 & \
         sleep 1000"
    );
    let p1 = rt.run_pod("p1", NS, &[("a", &a_cmd), ("b", "sleep 1000")]);
    let d1 = rt.run_docker("flowlens-smoke-d1", &format!("sleep 1000 | nc {ip} 8080"));
    println!("pods and docker container up in {:?}", t_pods.elapsed());
    println!("bring-up total {:?}", t0.elapsed());
    println!("P1 {p1:#?}\nP2 {p2:#?}\nDocker {d1:#?}");
    assert!(p1.ip.starts_with("10.88.213.") && p2.ip.starts_with("10.88.213."));
    assert_ne!(p1.ip, p2.ip);

    // Traffic: 3 connections from a, 1 from the Docker container (routed by the host).
    let c = p2.id("c");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut n = 0;
    while Instant::now() < deadline {
        n = server_connections(&rt, c);
        if n == 4 {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    println!("c sees:\n{}", rt.exec(c, &["netstat", "-tn"]));
    assert_eq!(
        n, 4,
        "c should serve 3 connections from a and 1 from Docker"
    );
    let a_view = rt.exec(p1.id("a"), &["netstat", "-tn"]);
    assert_eq!(
        a_view
            .lines()
            .filter(|l| l.contains("ESTABLISHED") && l.contains(&format!("{ip}:8080")))
            .count(),
        3,
        "{a_view}"
    );
    // exec works in both runtimes, and containers of a pod share its network namespace.
    assert!(rt.exec(p1.id("b"), &["ip", "addr"]).contains(&p1.ip));
    assert!(rt.exec(&d1.id, &["ip", "addr"]).contains(&d1.ip));

    // What the runtimes wrote.
    let (task_dir, docker_dir) = rt.state_dirs();
    println!("containerd task dir {}", task_dir.display());
    println!("docker containers dir {}", docker_dir.display());
    let mut paths: Vec<PathBuf> = Vec::new();
    for pod in [&p1, &p2] {
        let sandbox = fs::read_to_string(
            task_dir
                .join("k8s.io")
                .join(&pod.sandbox_id)
                .join("config.json"),
        )
        .expect("sandbox bundle config.json");
        for (k, v) in [
            ("io.kubernetes.cri.container-type", "sandbox"),
            ("io.kubernetes.cri.sandbox-id", pod.sandbox_id.as_str()),
            ("io.kubernetes.cri.sandbox-name", pod.name.as_str()),
            ("io.kubernetes.cri.sandbox-namespace", NS),
            ("io.kubernetes.cri.sandbox-uid", pod.uid.as_str()),
            (
                "io.kubernetes.cri.sandbox-log-directory",
                &pod.log_dir().to_string_lossy(),
            ),
        ] {
            assert!(
                has_annotation(&sandbox, k, v),
                "sandbox {k}={v}: {}",
                annotations(&sandbox)
            );
        }
        assert!(
            sandbox.contains("/var/run/netns/cni-"),
            "the sandbox names its CNI netns"
        );
        for (name, id) in &pod.containers {
            assert_eq!(id.len(), 64);
            let bundle = task_dir.join("k8s.io").join(id).join("config.json");
            let config = fs::read_to_string(&bundle).expect("container bundle config.json");
            for (k, v) in [
                ("io.kubernetes.cri.container-type", "container"),
                ("io.kubernetes.cri.container-name", name.as_str()),
                ("io.kubernetes.cri.sandbox-id", pod.sandbox_id.as_str()),
                ("io.kubernetes.cri.sandbox-name", pod.name.as_str()),
                ("io.kubernetes.cri.sandbox-namespace", NS),
                (
                    "io.kubernetes.cri.image-name",
                    flowlens_tests::runtimes::IMAGE,
                ),
            ] {
                assert!(
                    has_annotation(&config, k, v),
                    "{name} {k}={v}: {}",
                    annotations(&config)
                );
            }
            if name == "a" {
                println!("{}:\n  {}", bundle.display(), annotations(&config));
            }
            let log = pod.log_dir().join(name).join("0.log");
            assert!(log.exists(), "{} exists", log.display());
            let link = PathBuf::from(format!(
                "/var/log/containers/{}_{}_{name}-{id}.log",
                pod.name, pod.namespace
            ));
            assert!(
                fs::symlink_metadata(&link).is_ok(),
                "{} exists",
                link.display()
            );
            paths.push(link);
        }
        paths.push(pod.log_dir());
    }
    let moby = fs::read_to_string(task_dir.join("moby").join(&d1.id).join("config.json"))
        .expect("Docker's bundle in containerd's moby namespace");
    println!(
        "Docker bundle annotations: {}",
        if moby.contains("\"annotations\"") {
            annotations(&moby)
        } else {
            "(none)"
        }
    );
    let v2 = docker_dir.join(&d1.id).join("config.v2.json");
    let v2_text = fs::read_to_string(&v2).expect("config.v2.json");
    for needle in [
        format!("\"ID\":\"{}\"", d1.id),
        format!("\"Name\":\"/{}\"", d1.name),
        format!("\"Pid\":{}", d1.pid),
        format!("\"IPAddress\":\"{}\"", d1.ip),
    ] {
        assert!(v2_text.contains(&needle), "{} has {needle}", v2.display());
    }
    println!("{} has ID, Name, State.Pid, IPAddress", v2.display());

    // cgroups: one directory per container under the cgroup2 mount (and every v1 hierarchy).
    let unified = cgroup2_root();
    let mut cgroups: Vec<PathBuf> = Vec::new();
    for pod in [&p1, &p2] {
        let ids = std::iter::once(&pod.sandbox_id).chain(pod.containers.iter().map(|(_, id)| id));
        for id in ids {
            let rel = pod.cgroup_path(id);
            assert!(rel.starts_with(&format!("/kubepods/besteffort/pod{}/", pod.uid)));
            let dir = unified.join(rel.trim_start_matches('/'));
            assert!(dir.is_dir(), "{} exists", dir.display());
            assert_eq!(rt.cgroup_dir(id).as_deref(), Some(dir.as_path()));
            println!("cgroup {}", dir.display());
            cgroups.push(dir);
        }
    }
    let d1_dir = unified.join(d1.cgroup_path().trim_start_matches('/'));
    assert!(d1_dir.is_dir(), "{} exists", d1_dir.display());
    println!("cgroup {}", d1_dir.display());
    cgroups.push(d1_dir);
    cgroups.push(unified.join(p1.cgroup_parent().trim_start_matches('/')));
    cgroups.push(unified.join(p2.cgroup_parent().trim_start_matches('/')));
    // A process of container a: its /proc/PID/cgroup names the same path on the 0:: line.
    let a_pid = rt.pids(p1.id("a"))[0];
    let a_cgroup = fs::read_to_string(format!("/proc/{a_pid}/cgroup")).unwrap();
    assert!(
        a_cgroup
            .lines()
            .any(|l| l == format!("0::{}", p1.cgroup_path(p1.id("a")))),
        "{a_cgroup}"
    );
    assert!(rt.pids(&d1.id).contains(&d1.pid));

    let netns: Vec<String> = fs::read_dir("/var/run/netns")
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("cni-"))
        .collect();
    assert!(netns.len() >= 2, "pods' netns: {netns:?}");

    // Teardown.
    let teardown = rt.stop();
    println!("teardown took {:?}", teardown.took);
    assert!(
        teardown.leftovers.is_empty(),
        "left behind: {:#?}",
        teardown.leftovers
    );
    for dir in &cgroups {
        assert!(!dir.exists(), "{} removed", dir.display());
    }
    for p in &paths {
        assert!(fs::symlink_metadata(p).is_err(), "{} removed", p.display());
    }
    for n in &netns {
        assert!(
            !Path::new("/var/run/netns").join(n).exists(),
            "netns {n} removed"
        );
    }
    assert!(!task_dir.exists() && !docker_dir.exists());
    assert!(!Path::new("/sys/class/net")
        .join(flowlens_tests::runtimes::CNI_BRIDGE)
        .exists());
    assert!(!Path::new(flowlens_tests::runtimes::BASE).exists());
    println!("total {:?}", t0.elapsed());
}

//! The backend behind a Service's virtual IP, read from conntrack: kube-proxy's shape in
//! network namespaces (tests/support/kube_proxy.rs: a node DNATs a virtual IP to two backends
//! with nftables) and `flowlens::conntrack::Conntrack` opened in the node's namespace, checked
//! against what each backend said when it answered.

use flowlens::conntrack::{Conntrack, ConntrackStats};
use flowlens_core::Proto;
use flowlens_tests::kube_proxy::{self, Service};
use flowlens_tests::session::in_netns;
use std::net::SocketAddr;

/// `addr` as an IPv4-mapped IPv6 address, as a dual-stack socket reports an IPv4 peer.
fn mapped(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        std::net::IpAddr::V4(v4) => SocketAddr::new(v4.to_ipv6_mapped().into(), addr.port()),
        _ => addr,
    }
}

#[test]
fn conntrack_gives_the_backend_that_answered_each_connection_to_a_virtual_ip() {
    if !kube_proxy::available(
        "conntrack_gives_the_backend_that_answered_each_connection_to_a_virtual_ip",
    ) {
        return;
    }
    let _serial = flowlens_tests::root_test("conntrack_gives_the_backend_...");
    let svc = Service::new("fldn", 150);
    // Opened in the node's namespace, used from this thread: the socket stays the node's.
    let mut ct = in_netns(&svc.node.name, || {
        Conntrack::open().expect("ctnetlink in the node")
    });

    // 20 TCP connections over IPv4: 8 closed by the client before the lookups, 12 still open.
    let mut v4 = svc.connect_many(20, false);
    let closed: Vec<_> = v4
        .drain(..8)
        .map(|c| (c.local, c.remote, c.backend))
        .collect();
    let open: Vec<_> = v4.iter().map(|c| (c.local, c.remote, c.backend)).collect();
    // 6 over IPv6, and UDP: 4 exchanges over IPv4, 2 over IPv6.
    let v6 = svc.connect_many(6, true);
    let udp: Vec<_> = (0..6)
        .map(|i| svc.exchange(svc.vip[usize::from(i >= 4)]))
        .collect();

    let mut per_backend = [0usize; 2];
    let mut lookups = 0;
    let tcp = closed
        .iter()
        .chain(&open)
        .copied()
        .chain(v6.iter().map(|c| (c.local, c.remote, c.backend)))
        .map(|t| (Proto::Tcp, t));
    let datagrams = udp
        .iter()
        .map(|d| (Proto::Udp, (d.local, d.remote, d.backend)));
    for (proto, (local, remote, backend)) in tcp.chain(datagrams) {
        assert_eq!(local.ip(), svc.pod_ip[usize::from(local.is_ipv6())]);
        let got = ct.backend(proto, local, remote).unwrap();
        assert_eq!(got, Some(backend), "{proto:?} {local} -> {remote}");
        lookups += 1;
        let family = usize::from(remote.is_ipv6());
        per_backend[usize::from(backend == svc.backends[1][family])] += 1;
    }
    // `numgen inc` alternates, per rule (one per family): both backends answered.
    assert_eq!(
        per_backend,
        [16, 16],
        "the shape spreads connections over both backends"
    );
    let found = lookups;

    // The same IPv4 connections given as IPv4-mapped IPv6 addresses.
    for (local, remote, backend) in &open {
        assert_eq!(
            ct.backend(Proto::Tcp, mapped(*local), mapped(*remote))
                .unwrap(),
            Some(*backend)
        );
        lookups += 1;
    }
    let found = found + open.len();

    // Not NATed: straight to a backend's own address (an entry, not rewritten), both families.
    for family in [0, 1] {
        let direct = svc.connect(svc.backends[0][family]);
        assert_eq!(direct.backend, svc.backends[0][family]);
        assert_eq!(
            ct.backend(Proto::Tcp, direct.local, direct.remote).unwrap(),
            None
        );
        lookups += 1;
    }
    // No entry at all: a port nobody used; the wrong protocol; the reply direction.
    let (local, remote, _) = open[0];
    let unused = SocketAddr::new(local.ip(), 1);
    assert_eq!(ct.backend(Proto::Tcp, unused, remote).unwrap(), None);
    assert_eq!(ct.backend(Proto::Udp, local, remote).unwrap(), None);
    let (_, _, backend) = open[0];
    assert_eq!(ct.backend(Proto::Tcp, backend, local).unwrap(), None);
    lookups += 3;
    assert_eq!(
        ct.stats(),
        ConntrackStats {
            lookups: lookups as u64,
            found_dnat: found as u64,
            errors: 0
        }
    );

    // Conntrack is per namespace: the pod's own has no entry of the node's DNAT.
    let mut in_pod = in_netns(&svc.pod.name, || Conntrack::open().unwrap());
    assert_eq!(in_pod.backend(Proto::Tcp, local, remote).unwrap(), None);
    drop(v4);
}

/// A stand-in container: a cgroup2 directory named as containerd's CRI names it, and a
/// process in it (tests/support/workload.py) in the Service's pod namespace. Removed on drop.
struct Client {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    stdout: std::io::BufReader<std::process::ChildStdout>,
    dirs: Vec<std::path::PathBuf>,
}

impl Client {
    fn start(svc: &Service, id: &str) -> Client {
        let slice = flowlens_tests::cgroup2_root().join("kubepods-fldp.slice");
        let besteffort = slice.join("kubepods-fldp-besteffort.slice");
        let pod = besteffort
            .join("kubepods-fldp-besteffort-pod5e0c7a3a_3b1e_4f0a_9c7e_1f2d3c4b5a69.slice");
        let cgroup = pod.join(format!("cri-containerd-{id}.scope"));
        std::fs::create_dir_all(&cgroup).unwrap();
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("support/workload.py");
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "echo $$ > '{}/cgroup.procs' && exec ip netns exec {} python3 -u '{}'",
                cgroup.display(),
                svc.pod.name,
                script.display()
            ))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        Client {
            stdin: child.stdin.take().unwrap(),
            stdout: std::io::BufReader::new(child.stdout.take().unwrap()),
            child,
            dirs: vec![cgroup, pod, besteffort, slice],
        }
    }

    fn cmd(&mut self, line: &str) {
        use std::io::{BufRead, Write};
        writeln!(self.stdin, "{line}").unwrap();
        let mut answer = String::new();
        self.stdout.read_line(&mut answer).unwrap();
        assert!(answer.starts_with("ok"), "{line}: {answer:?}");
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for dir in &self.dirs {
            for _ in 0..50 {
                if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
    }
}

/// flowlens in the node's namespace, as the DaemonSet runs it (hostNetwork): its conntrack
/// lookups see the node's DNAT; its eBPF programs see every namespace. Its metadata roots are an
/// empty directory (kept while the session runs): the stand-in containers have cgroup names
/// only. (The directory first: dropped after the session.)
fn flowlens_in_node(svc: &Service) -> (flowlens_tests::TempDir, flowlens_tests::session::Session) {
    let empty = flowlens_tests::TempDir::new("dnat-empty");
    let e = empty.0.display();
    let config = format!(
        "containerd_state_dir = \"{e}\"\nkubelet_log_dir = \"{e}\"\ncrio_storage_dir = \"{e}\"\n\
         docker_containers_dir = \"{e}\"\n"
    );
    let s = flowlens_tests::session::Session::start_as(&config, |args| {
        let mut cmd = svc.node_command(flowlens_tests::flowlens_bin());
        cmd.args(args);
        cmd
    });
    (empty, s)
}

#[test]
fn a_containers_calls_to_a_virtual_ip_are_counted_per_backend_that_answered() {
    use flowlens_core::lineproto::{parse_lines, FieldValue};
    let test = "a_containers_calls_to_a_virtual_ip_are_counted_per_backend_that_answered";
    if !kube_proxy::available(test) {
        return;
    }
    let _serial = flowlens_tests::root_test(test);
    let svc = Service::new("fldp", 151);
    let id = format!("{:012x}{}", 0xd4a7_0000_0001_u64, "7c".repeat(26));
    let (_empty, mut s) = flowlens_in_node(&svc);
    let mut client = Client::start(&svc, &id);
    let vip = svc.vip[0];
    // 6 connections that come and go (connect, 1 byte each way, close), 2 kept open: `numgen
    // inc` sends them to the backends in turn, 4 each.
    client.cmd(&format!("churn 6 {} {}", vip.ip(), vip.port()));
    client.cmd(&format!("connect {} {} 2", vip.ip(), vip.port()));
    let short = &id[..12];
    let peers = |t: &str| -> Vec<(String, i64, i64)> {
        let mut v: Vec<(String, i64, i64)> = parse_lines(t)
            .unwrap()
            .into_iter()
            .filter(|p| p.measurement == "container:peers")
            .filter(|p| p.tags.iter().any(|(k, v)| k == "container" && v == short))
            .map(|p| {
                let tag = |key: &str| {
                    p.tags
                        .iter()
                        .find(|(k, _)| k == key)
                        .map_or(String::new(), |(_, v)| v.clone())
                };
                let int = |key: &str| match p.fields.iter().find(|(k, _)| k == key) {
                    Some((_, FieldValue::Int(v))) => *v,
                    _ => -1,
                };
                assert_eq!(tag("peer"), vip.to_string(), "{t}");
                (tag("backend"), int("connections"), int("active"))
            })
            .collect();
        v.sort();
        v
    };
    let want = vec![
        (svc.backends[0][0].to_string(), 4, 1),
        (svc.backends[1][0].to_string(), 4, 1),
    ];
    let mut t = s.gather();
    for _ in 0..40 {
        if peers(&t) == want {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
        t = s.gather();
    }
    eprintln!("{t}");
    assert_eq!(peers(&t), want, "{t}");
    drop(client);
    s.finish();
}

#[test]
fn the_event_reader_loses_nothing_while_a_gather_looks_up_thousands_of_backends() {
    // 6,000 connections to the virtual IP are opened (and kept open) before a gather: it looks
    // up each one's backend (synchronous conntrack requests), while another container churns,
    // so records keep coming. The lookups run with the flow table released: the reader applies
    // the churn's records meanwhile, loses none, and every connection is counted with its
    // backend. (Kept open: a churned connection's conntrack entry is gone 10 s after its end,
    // the client's close being a reset with the server's newline unread.)
    let test = "the_event_reader_loses_nothing_while_a_gather_looks_up_thousands_of_backends";
    if !kube_proxy::available(test) {
        return;
    }
    let _serial = flowlens_tests::root_test(test);
    let svc = Service::new("fldl", 152);
    let ids =
        [0xd4a7_0000_0002_u64, 0xd4a7_0000_0003].map(|n| format!("{n:012x}{}", "7d".repeat(26)));
    let (_empty, mut s) = flowlens_in_node(&svc);
    let vip = svc.vip[0];
    let (before, during) = (6_000, 2_000);
    let mut first = Client::start(&svc, &ids[0]);
    first.cmd(&format!("connect {} {} {before}", vip.ip(), vip.port()));
    let mut second = Client::start(&svc, &ids[1]);
    let during_churn = format!("churn {during} {} {}", vip.ip(), vip.port());
    let churner = std::thread::spawn(move || {
        second.cmd(&during_churn);
        second
    });
    let mut batches = vec![s.gather()];
    let second = churner.join().unwrap();
    let connections = |t: &str, id: &str| {
        flowlens_tests::session::sum(
            t,
            "container:peers",
            &[("container", &id[..12])],
            "connections",
        )
    };
    for _ in 0..40 {
        let t = s.gather();
        let done =
            connections(&t, &ids[0]) == before as i64 && connections(&t, &ids[1]) == during as i64;
        batches.push(t);
        if done {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    let last = batches.last().unwrap();
    eprintln!("{} gathers; the last:\n{last}", batches.len());
    for t in &batches {
        let internal = |field| flowlens_tests::session::value(t, "flowlens:internal", &[], field);
        assert_eq!(internal("events_lost"), 0, "{t}");
        assert_eq!(internal("dnat_lookups_skipped"), 0, "{t}");
    }
    // Every connection counted, each under the backend that answered it (none without).
    assert_eq!(connections(last, &ids[0]), before as i64, "{last}");
    assert_eq!(connections(last, &ids[1]), during as i64, "{last}");
    for id in &ids {
        let no_backend = parse_peers_without_backend(last, &id[..12]);
        assert_eq!(no_backend, 0, "{last}");
    }
    drop((first, second));
    s.finish();
}

/// The connections of `container`'s peer series that name no backend.
fn parse_peers_without_backend(text: &str, container: &str) -> i64 {
    use flowlens_core::lineproto::{parse_lines, FieldValue};
    parse_lines(text)
        .unwrap()
        .into_iter()
        .filter(|p| p.measurement == "container:peers")
        .filter(|p| {
            p.tags
                .iter()
                .any(|(k, v)| k == "container" && v == container)
        })
        .filter(|p| !p.tags.iter().any(|(k, _)| k == "backend"))
        .map(
            |p| match p.fields.iter().find(|(k, _)| k == "connections") {
                Some((_, FieldValue::Int(v))) => *v,
                _ => 0,
            },
        )
        .sum()
}

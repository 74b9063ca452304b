//! `iface:*` from the real binary against the kernel's own counters: every interface `ip -o link`
//! lists, and exact bytes and packets over a quiet veth pair this test creates.

use flowlens_tests::*;
use std::{
    net::UdpSocket,
    process::{Child, Command, Stdio},
    time::Duration,
};

/// Runs `flowlens once` without eBPF and returns its stdout.
fn once() -> String {
    let dir = TempDir::new("iface");
    let config = dir.join("c.toml");
    std::fs::write(&config, "ebpf = false\n").unwrap();
    let out = run_flowlens(&["--config", config.to_str().unwrap(), "once"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The integer value of `field` on the `measurement` line tagged `ifname=<ifname>`.
fn field(text: &str, measurement: &str, ifname: &str, field: &str) -> i64 {
    let points = flowlens_core::lineproto::parse_lines(text).unwrap();
    let point = points
        .iter()
        .find(|p| {
            p.measurement == measurement && p.tags.iter().any(|(k, v)| k == "ifname" && v == ifname)
        })
        .unwrap_or_else(|| panic!("no {measurement} line for {ifname}:\n{text}"));
    match point
        .fields
        .iter()
        .find(|(k, _)| k == field)
        .map(|(_, v)| v)
    {
        Some(flowlens_core::lineproto::FieldValue::Int(v)) => *v,
        other => panic!("{measurement} {field}: {other:?}"),
    }
}

fn kernel_counter(ifname: &str, name: &str) -> i64 {
    std::fs::read_to_string(format!("/sys/class/net/{ifname}/statistics/{name}"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// The (ifindex, name) pairs `ip -o link` lists ("2: eth0: <...>" or "5: veth1@if4: <...>").
fn listed_interfaces() -> Vec<(u32, String)> {
    sh("ip", &["-o", "link"])
        .lines()
        .map(|line| {
            let mut fields = line.split(": ");
            let index = fields.next().unwrap().trim().parse().unwrap();
            let name = fields.next().unwrap();
            (index, name.split('@').next().unwrap().to_string())
        })
        .collect()
}

#[test]
fn every_interface_ip_link_lists_has_its_three_lines() {
    // Other tests in this binary add and delete interfaces concurrently: only an interface that
    // exists both before and after the gather, with the same index (not deleted and created
    // again under the same name), was certainly there while it ran.
    let before = listed_interfaces();
    let text = once();
    let after = listed_interfaces();
    let stable: Vec<&String> = before
        .iter()
        .filter(|i| after.contains(i))
        .map(|(_, name)| name)
        .collect();
    assert!(stable.iter().any(|n| *n == "lo"), "{before:?} {after:?}");
    let points = flowlens_core::lineproto::parse_lines(&text).unwrap();
    for name in stable {
        for m in ["iface:traffic", "iface:traffic_rxtx", "iface:packets"] {
            let of_name = points.iter().filter(|p| {
                p.measurement == m && p.tags.iter().any(|(k, v)| k == "ifname" && v == name)
            });
            assert_eq!(of_name.count(), 1, "{m} of {name}:\n{text}");
        }
    }
}

/// A veth pair with one end (`flq0`, 10.77.0.1) here and the other (10.77.0.2) in a namespace,
/// IPv6 and multicast off so that nothing but our datagrams crosses it.
struct QuietVeth {
    sink: Child,
}

impl QuietVeth {
    fn new() -> QuietVeth {
        let _ = Command::new("ip").args(["link", "del", "flq0"]).output();
        let _ = Command::new("ip").args(["netns", "del", "flq-ns"]).output();
        sh("ip", &["netns", "add", "flq-ns"]);
        sh(
            "ip",
            &[
                "link", "add", "flq0", "type", "veth", "peer", "name", "flq1", "netns", "flq-ns",
            ],
        );
        sh("sysctl", &["-qw", "net.ipv6.conf.flq0.disable_ipv6=1"]);
        sh(
            "ip",
            &[
                "netns",
                "exec",
                "flq-ns",
                "sysctl",
                "-qw",
                "net.ipv6.conf.flq1.disable_ipv6=1",
            ],
        );
        // No multicast either: daemons that join groups on every interface (IGMP, mDNS) skip it.
        sh("ip", &["link", "set", "flq0", "multicast", "off"]);
        sh(
            "ip",
            &["-n", "flq-ns", "link", "set", "flq1", "multicast", "off"],
        );
        sh("ip", &["addr", "add", "10.77.0.1/24", "dev", "flq0"]);
        sh(
            "ip",
            &["-n", "flq-ns", "addr", "add", "10.77.0.2/24", "dev", "flq1"],
        );
        sh("ip", &["link", "set", "flq0", "up"]);
        sh("ip", &["-n", "flq-ns", "link", "set", "flq1", "up"]);
        // A bound socket that never reads: datagrams land in its buffer, no ICMP comes back.
        let sink = Command::new("ip")
            .args(["netns", "exec", "flq-ns", "python3", "-c"])
            .arg("import socket,time; s=socket.socket(2,2); s.bind(('10.77.0.2',9999)); print('ready',flush=True); time.sleep(120)")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut guard = QuietVeth { sink };
        let mut ready = String::new();
        use std::io::BufRead;
        std::io::BufReader::new(guard.sink.stdout.take().unwrap())
            .read_line(&mut ready)
            .unwrap();
        assert_eq!(ready.trim(), "ready");
        // Resolve the neighbour now, so that no ARP crosses during the measurement.
        let primer = UdpSocket::bind("10.77.0.1:0").unwrap();
        primer.send_to(b"arp", "10.77.0.2:9999").unwrap();
        std::thread::sleep(Duration::from_millis(300));
        guard
    }
}

impl Drop for QuietVeth {
    fn drop(&mut self) {
        let _ = self.sink.kill();
        let _ = self.sink.wait();
        let _ = Command::new("ip").args(["link", "del", "flq0"]).output();
        let _ = Command::new("ip").args(["netns", "del", "flq-ns"]).output();
    }
}

#[test]
fn counters_equal_the_kernels_on_a_quiet_veth_pair() {
    if !require_root("counters_equal_the_kernels_on_a_quiet_veth_pair") {
        return;
    }
    let _veth = QuietVeth::new();
    // At rest: what flowlens prints is what the kernel says, read just before and just after.
    let before_k = kernel_counter("flq0", "tx_bytes");
    let before = once();
    assert_eq!(
        before_k,
        kernel_counter("flq0", "tx_bytes"),
        "the pair is not quiet"
    );
    let tx0 = field(&before, "iface:traffic_rxtx", "flq0", "bytes_sent");
    let rx0 = field(&before, "iface:traffic_rxtx", "flq0", "bytes_rcvd");
    assert_eq!(tx0, before_k);
    assert_eq!(rx0, kernel_counter("flq0", "rx_bytes"));
    assert_eq!(field(&before, "iface:traffic", "flq0", "bytes"), tx0 + rx0);
    let packets0 = field(&before, "iface:packets", "flq0", "packets");
    // Known traffic: 50 datagrams of 1000 bytes = 50 frames of 1000 + 8 + 20 + 14 bytes.
    let socket = UdpSocket::bind("10.77.0.1:0").unwrap();
    for _ in 0..50 {
        socket.send_to(&[7u8; 1000], "10.77.0.2:9999").unwrap();
    }
    std::thread::sleep(Duration::from_millis(200));
    let after = once();
    let tx1 = field(&after, "iface:traffic_rxtx", "flq0", "bytes_sent");
    assert_eq!(tx1, kernel_counter("flq0", "tx_bytes"));
    assert_eq!(tx1 - tx0, 50 * 1042, "bytes sent over the pair");
    assert_eq!(
        field(&after, "iface:traffic_rxtx", "flq0", "bytes_rcvd"),
        rx0
    );
    assert_eq!(
        field(&after, "iface:packets", "flq0", "packets") - packets0,
        50
    );
}

//! Sizing: the lines, series and bytes one node writes per gather for realistic shapes (pods of
//! 1 to 3 containers, the default peer budget), through the same core code as a gather, and
//! what a fleet of nodes sends at an interval.

use crate::userspace::synthetic_sock;
use flowlens_core::{
    active_by_cgroup,
    lineproto::Precision,
    peer_series, peer_values,
    records::{self, FlSock},
    ActiveByCgroup, ContainerInfo, FastMap, FlowTable, FlowValues, IfaceCounters, Limits, Runtime,
    Scope, Shape, Snapshot, Update, WorkloadTracker,
};
use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, Ipv4Addr},
    sync::Arc,
};

/// A node's workload shape.
#[derive(Debug, Clone, Copy)]
pub struct NodeShape {
    /// Pods on the node; pod `p` runs `1 + p % 3` containers (2 on average).
    pub pods: u32,
    /// Distinct destinations (address and port) each container's client flows go to.
    pub destinations: u32,
    /// `max_peers_per_container` (the default: 32).
    pub max_peers_per_container: u32,
    /// `ntopng_compat`.
    pub ntopng_compat: bool,
}

/// What one gather of a node of that shape writes.
#[derive(Debug, Clone, Default)]
pub struct NodeOutput {
    /// Containers on the node.
    pub containers: u32,
    /// Active flows.
    pub flows: u64,
    /// Lines of one gather (each is one series: a line per series per gather).
    pub lines: u64,
    /// Bytes of one gather.
    pub bytes: u64,
    /// Lines per measurement.
    pub by_measurement: BTreeMap<String, u64>,
}

/// Limits as the defaults (`max_hosts` 1024, `series_ttl_secs` 300) with `max_peers_per_container`; with
/// `ntopng_compat`, hosts keyed by address alone and no peers, as the plugin makes them.
fn limits(max_peers_per_container: u32, ntopng_compat: bool) -> Limits {
    Limits {
        max_flows: 65_536,
        max_hosts: 1_024,
        series_ttl_ns: 300_000_000_000,
        udp_idle_timeout_ns: 60_000_000_000,
        hosts_by_netns: !ntopng_compat,
        max_peers_per_container: if ntopng_compat {
            0
        } else {
            max_peers_per_container
        },
    }
}

/// One TCP flow of container `c` (its cgroup and pod address): as client to destination `d`
/// when `client`, else as server on port 8080 from client `d`.
fn flow(c: u32, pod: u32, d: u32, client: bool, n: u64) -> FlSock {
    let mut s = synthetic_sock(n);
    let local = Ipv4Addr::new(10, 244, (pod >> 8) as u8, pod as u8);
    let remote = Ipv4Addr::new(10, 96, (d >> 8) as u8, d as u8);
    let ephemeral = 32768 + (n % 28000) as u16;
    s.cgroup_id = 200_000 + u64::from(c);
    s.netns = 4_026_532_000 + pod;
    s.pid = 2000 + c;
    s.saddr = records::ip_to_kernel(IpAddr::V4(local));
    s.daddr = records::ip_to_kernel(IpAddr::V4(remote));
    if client {
        s.sport = ephemeral;
        s.dport = [80, 443, 5432, 6379, 53, 9092][(d % 6) as usize];
        s.role = records::ROLE_CLIENT;
    } else {
        s.sport = 8080;
        s.dport = ephemeral;
        s.role = records::ROLE_SERVER;
    }
    s
}

/// Runs two gathers over a node of `shape` (the second is measured: every series has begun)
/// and counts what the second writes.
pub fn node(shape: NodeShape) -> NodeOutput {
    // Containers: pod p runs 1 + p % 3 of them, one cgroup each, sharing the pod's address.
    let mut infos: FastMap<u64, Arc<ContainerInfo>> = FastMap::default();
    let mut containers: Vec<(u32, u32)> = Vec::new(); // (container, pod)
    for pod in 0..shape.pods {
        for k in 0..1 + pod % 3 {
            let c = containers.len() as u32;
            let id = format!("{:064x}", 0x5e_ed00_0000_u64 + u64::from(c));
            infos.insert(
                200_000 + u64::from(c),
                Arc::new(ContainerInfo {
                    short_id: id[..12].to_string(),
                    id,
                    runtime: Runtime::Containerd,
                    name: Some(["app", "sidecar", "proxy"][k as usize].into()),
                    pod: Some(format!("service-{pod}-7d9f8b6c5d-x2x4z")),
                    namespace: Some("production".into()),
                    pod_uid: None,
                    sandbox_id: None,
                    is_sandbox: false,
                    qos: None,
                }),
            );
            containers.push((c, pod));
        }
    }
    // Flows: each container serves port 8080 to 10 clients and has 2 flows to each of its
    // destinations.
    let mut socks: Vec<(u64, FlSock)> = Vec::new();
    for &(c, pod) in &containers {
        for d in 0..10 {
            let n = socks.len() as u64;
            socks.push((n + 1, flow(c, pod, 1000 + d, false, n)));
        }
        for d in 0..shape.destinations {
            for _ in 0..2 {
                let n = socks.len() as u64;
                socks.push((n + 1, flow(c, pod, d, true, n)));
            }
        }
    }
    let mut table = FlowTable::new(limits(shape.max_peers_per_container, shape.ntopng_compat));
    for (cookie, sock) in &socks {
        table.apply(Update::Open, *cookie, sock);
    }
    // Interfaces: one veth per pod, the node's uplink and loopback.
    let mut ifaces: Vec<IfaceCounters> = (0..shape.pods)
        .map(|p| IfaceCounters {
            name: format!("veth{:08x}", 0x3a00_0000 + p),
            rx_bytes: 1 << 30,
            tx_bytes: 1 << 29,
            rx_packets: 1 << 20,
            tx_packets: 1 << 19,
        })
        .collect();
    for name in ["eth0", "lo"] {
        ifaces.push(IfaceCounters {
            name: name.into(),
            rx_bytes: 1 << 40,
            tx_bytes: 1 << 39,
            rx_packets: 1 << 30,
            tx_packets: 1 << 29,
        });
    }
    let metrics_shape = Shape {
        ifid: "0".into(),
        node: "ip-10-0-12-34.eu-west-1.compute.internal".into(),
        precision: Precision::Ns,
        ntopng_compat: shape.ntopng_compat,
    };
    let mut tracker = WorkloadTracker::new(300, 1_000);
    let mut active = ActiveByCgroup::default();
    let mut out = Vec::new();
    let mut lines = 0;
    for gather in 0..2u64 {
        out.clear();
        let now_ns = 1_000_000_000 * (gather + 1);
        table.refresh(socks.iter().map(|(c, s)| (*c, s)), now_ns);
        let values = FlowValues::from_table(&table);
        let touched = table.take_touched_cgroups();
        active_by_cgroup(&table, &mut active);
        let mut workloads = tracker.update(
            &mut table,
            &active,
            &infos,
            &touched,
            &HashMap::new(),
            now_ns,
        );
        if !shape.ntopng_compat {
            let scopes: FastMap<u64, Scope> = infos
                .iter()
                .map(|(cgroup_id, info)| (*cgroup_id, tracker.scope(info)))
                .collect();
            table.assign_peers(|cg| scopes[&cg], |_, _, _| None, now_ns);
            let peers = peer_values(&mut table);
            workloads.peers = peer_series(&table, peers, &infos, &tracker, &workloads.containers);
        }
        let snapshot = Snapshot {
            ifaces: ifaces.clone(),
            flows: Some(values),
            workloads: Some(workloads),
            ..Snapshot::default()
        };
        lines = flowlens_core::encode(
            &snapshot,
            &metrics_shape,
            1_700_000_000_000_000_000,
            &mut out,
        );
    }
    let mut by_measurement: BTreeMap<String, u64> = BTreeMap::new();
    for line in out.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let end = line
            .iter()
            .position(|&b| b == b',' || b == b' ')
            .unwrap_or(line.len());
        *by_measurement
            .entry(String::from_utf8_lossy(&line[..end]).into_owned())
            .or_default() += 1;
    }
    NodeOutput {
        containers: containers.len() as u32,
        flows: table.len() as u64,
        lines,
        bytes: out.len() as u64,
        by_measurement,
    }
}

//! The flow table: one entry per socket, fed by kernel events and map snapshots, and the
//! cumulative counters that closed flows fold into. Pure: no I/O, no aya; tested with plain values.
//!
//! Counters never go backwards: a flow's bytes are counted from the active table while it lives,
//! and folded into its host's cumulative totals when it closes or expires, in the same gather.

use crate::records::{self, FlSock, COMM_LEN};
use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, SocketAddr},
};

/// Who initiated the flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The local socket connected (TCP) or sent first (UDP).
    Client,
    /// The local socket accepted (TCP) or received first on a bound port (UDP).
    Server,
}

/// Transport protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

/// One active flow (one local socket).
#[derive(Debug, Clone, PartialEq)]
pub struct Flow {
    /// Socket cookie (unique per socket for the kernel's lifetime).
    pub cookie: u64,
    /// Transport.
    pub proto: Proto,
    /// Client or server.
    pub role: Role,
    /// Local endpoint.
    pub local: SocketAddr,
    /// Remote endpoint.
    pub remote: SocketAddr,
    /// Network namespace inode.
    pub netns: u32,
    /// cgroup2 id of the socket.
    pub cgroup_id: u64,
    /// Owning process (0: not known yet).
    pub pid: u32,
    /// Owning command, NUL-padded.
    pub comm: [u8; COMM_LEN],
    /// Payload bytes sent since flowlens started.
    pub bytes_sent: u64,
    /// Payload bytes received since flowlens started.
    pub bytes_rcvd: u64,
    /// Smoothed RTT in µs (0: no sample).
    pub srtt_us: u32,
    /// RTT variance in µs.
    pub rttvar_us: u32,
    /// Retransmitted segments.
    pub retrans: u32,
    /// Monotonic ns of the last activity.
    pub last_ns: u64,
    /// Consecutive map snapshots this flow was missing from.
    missing: u8,
}

impl Flow {
    /// The command name as text.
    pub fn comm_str(&self) -> String {
        let end = self.comm.iter().position(|&b| b == 0).unwrap_or(COMM_LEN);
        String::from_utf8_lossy(&self.comm[..end]).into_owned()
    }

    /// The port of the server side of this flow.
    pub fn server_port(&self) -> u16 {
        match self.role {
            Role::Client => self.remote.port(),
            Role::Server => self.local.port(),
        }
    }

    /// Whether the kernel has given this TCP flow an RTT sample.
    pub fn has_rtt(&self) -> bool {
        self.proto == Proto::Tcp && self.srtt_us > 0
    }
}

/// The series key of a local host: its address, or the `other` fold beyond `max_hosts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HostKey {
    /// A local address.
    Addr(IpAddr),
    /// Every host beyond `max_hosts`.
    Other,
}

impl std::fmt::Display for HostKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostKey::Addr(ip) => write!(f, "{ip}"),
            HostKey::Other => f.write_str("other"),
        }
    }
}

/// Cumulative counters of one host, from flows that have ended.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostTotals {
    /// Bytes sent by ended flows.
    pub bytes_sent: u64,
    /// Bytes received by ended flows.
    pub bytes_rcvd: u64,
    /// Flows ever seen as client (active and ended).
    pub total_client: u64,
    /// Flows ever seen as server.
    pub total_server: u64,
    /// Bytes (sent, received) of ended flows per application protocol.
    pub ndpi: HashMap<&'static str, (u64, u64)>,
}

/// Limits of the table.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most flows held at once.
    pub max_flows: usize,
    /// Most distinct hosts with their own series; the rest fold into `other`.
    pub max_hosts: usize,
    /// A UDP flow idle this long (ns) ends.
    pub udp_idle_timeout_ns: u64,
}

/// The flow table and the cumulative counters.
#[derive(Debug)]
pub struct FlowTable {
    limits: Limits,
    flows: HashMap<u64, Flow>,
    hosts: HashMap<HostKey, HostTotals>,
    /// Flows opened since start (the `iface:new_flows` counter).
    pub new_flows: u64,
    /// Flows the table had no room for.
    pub flows_evicted: u64,
    /// Connections that failed (SYN_SENT -> CLOSE).
    pub connect_failed: u64,
    /// Listening ports per network namespace, for flows whose role the kernel did not see.
    listening: HashMap<u32, Vec<u16>>,
    /// Cumulative counters per socket cgroup, for container series.
    cgroups: HashMap<u64, CgroupTotals>,
    /// Cgroups whose counters moved since the last `take_touched_cgroups`.
    touched: HashSet<u64>,
}

/// Cumulative counters of one cgroup: flows started in it, and what its ended flows moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupTotals {
    /// Bytes sent by ended flows.
    pub bytes_sent: u64,
    /// Bytes received by ended flows.
    pub bytes_rcvd: u64,
    /// Retransmitted segments of ended flows.
    pub retrans: u64,
    /// Flows started as client since flowlens did (active and ended).
    pub new_client: u64,
    /// Flows started as server since flowlens did.
    pub new_server: u64,
}

/// What the kernel reported about a socket, with the kind of report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Update {
    /// The flow started (TCP established, first UDP datagram).
    Open,
    /// The TCP flow closed; the record holds its final counters.
    Close,
    /// The connect failed.
    ConnectFailed,
}

fn proto_of(sock: &FlSock) -> Option<Proto> {
    match sock.protocol {
        records::IPPROTO_TCP => Some(Proto::Tcp),
        records::IPPROTO_UDP => Some(Proto::Udp),
        _ => None,
    }
}

impl FlowTable {
    /// An empty table.
    pub fn new(limits: Limits) -> FlowTable {
        FlowTable {
            limits,
            flows: HashMap::new(),
            hosts: HashMap::new(),
            new_flows: 0,
            flows_evicted: 0,
            connect_failed: 0,
            listening: HashMap::new(),
            cgroups: HashMap::new(),
            touched: HashSet::new(),
        }
    }

    /// The active flows.
    pub fn flows(&self) -> impl Iterator<Item = &Flow> {
        self.flows.values()
    }

    /// Number of active flows.
    pub fn len(&self) -> usize {
        self.flows.len()
    }

    /// Whether there is no active flow.
    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    /// The cumulative totals per host.
    pub fn hosts(&self) -> &HashMap<HostKey, HostTotals> {
        &self.hosts
    }

    /// Records the listening ports of a network namespace (from the start-up scan), used to tell
    /// the role of sockets that predate flowlens.
    pub fn set_listening(&mut self, netns: u32, mut ports: Vec<u16>) {
        ports.sort_unstable();
        ports.dedup();
        self.listening.insert(netns, ports);
    }

    /// The series key for a local address, folding into `other` beyond `max_hosts`.
    pub fn host_key(&mut self, ip: IpAddr) -> HostKey {
        let key = HostKey::Addr(ip);
        if self.hosts.contains_key(&key) {
            return key;
        }
        let named = self.hosts.len() - usize::from(self.hosts.contains_key(&HostKey::Other));
        if named >= self.limits.max_hosts {
            self.hosts.entry(HostKey::Other).or_default();
            return HostKey::Other;
        }
        self.hosts.insert(key, HostTotals::default());
        key
    }

    /// The role of a socket the kernel saw only after it was established: a known listening port
    /// of its namespace makes it a server; otherwise an ephemeral local port (>= 32768) makes it a
    /// client, a low one a server.
    fn infer_role(&self, sock: &FlSock) -> Role {
        match sock.role {
            records::ROLE_CLIENT => return Role::Client,
            records::ROLE_SERVER => return Role::Server,
            _ => {}
        }
        if let Some(ports) = self.listening.get(&sock.netns) {
            return if ports.binary_search(&sock.sport).is_ok() {
                Role::Server
            } else {
                Role::Client
            };
        }
        if sock.sport >= 32768 {
            Role::Client
        } else {
            Role::Server
        }
    }

    /// Inserts a flow seen for the first time. `is_new`: it started after flowlens did.
    fn insert(&mut self, cookie: u64, sock: &FlSock, role: Role, is_new: bool) -> bool {
        let Some(proto) = proto_of(sock) else {
            return false;
        };
        if self.flows.len() >= self.limits.max_flows {
            self.flows_evicted += 1;
            return false;
        }
        let flow = Flow {
            cookie,
            proto,
            role,
            local: sock.local(),
            remote: sock.remote(),
            netns: sock.netns,
            cgroup_id: sock.cgroup_id,
            pid: sock.pid,
            comm: sock.comm,
            bytes_sent: sock.bytes_sent,
            bytes_rcvd: sock.bytes_rcvd,
            srtt_us: sock.srtt_us,
            rttvar_us: sock.rttvar_us,
            retrans: sock.retrans,
            last_ns: sock.last_ns,
            missing: 0,
        };
        let key = self.host_key(flow.local.ip());
        let totals = self.hosts.get_mut(&key).expect("host_key inserts");
        match role {
            Role::Client => totals.total_client += 1,
            Role::Server => totals.total_server += 1,
        }
        if is_new {
            self.new_flows += 1;
            self.touched.insert(flow.cgroup_id);
            let cg = self.cgroups.entry(flow.cgroup_id).or_default();
            match role {
                Role::Client => cg.new_client += 1,
                Role::Server => cg.new_server += 1,
            }
        }
        self.flows.insert(cookie, flow);
        true
    }

    /// Adds a flow that was already established when flowlens started (found by the start-up
    /// scan): counted as active and in the totals, not as new.
    pub fn seed(&mut self, cookie: u64, sock: &FlSock, role: Role) {
        if !self.flows.contains_key(&cookie) {
            self.insert(cookie, sock, role, false);
        }
    }

    /// Applies the kernel's latest values to a known flow.
    fn update(flow: &mut Flow, sock: &FlSock) {
        // Counters only move forward, whatever order snapshots arrive in.
        flow.bytes_sent = flow.bytes_sent.max(sock.bytes_sent);
        flow.bytes_rcvd = flow.bytes_rcvd.max(sock.bytes_rcvd);
        flow.retrans = flow.retrans.max(sock.retrans);
        if sock.last_ns >= flow.last_ns {
            flow.last_ns = sock.last_ns;
            if sock.srtt_us > 0 {
                flow.srtt_us = sock.srtt_us;
                flow.rttvar_us = sock.rttvar_us;
            }
        }
        if flow.pid == 0 && sock.pid != 0 {
            flow.pid = sock.pid;
            flow.comm = sock.comm;
        }
        // Addresses of a UDP socket become known when it connects; a TCP socket's are fixed.
        if flow.local.port() == 0 || flow.local.ip().is_unspecified() {
            flow.local = sock.local();
        }
        if flow.remote.port() == 0 {
            flow.remote = sock.remote();
        }
        flow.missing = 0;
    }

    /// Folds an ended flow's counters into its host's totals.
    fn fold(&mut self, flow: &Flow) {
        let key = self.host_key(flow.local.ip());
        let protocol = crate::ndpi::infer(flow);
        let totals = self.hosts.get_mut(&key).expect("host_key inserts");
        totals.bytes_sent += flow.bytes_sent;
        totals.bytes_rcvd += flow.bytes_rcvd;
        let entry = totals.ndpi.entry(protocol).or_default();
        entry.0 += flow.bytes_sent;
        entry.1 += flow.bytes_rcvd;
        self.touched.insert(flow.cgroup_id);
        let cg = self.cgroups.entry(flow.cgroup_id).or_default();
        cg.bytes_sent += flow.bytes_sent;
        cg.bytes_rcvd += flow.bytes_rcvd;
        cg.retrans += u64::from(flow.retrans);
    }

    /// The cumulative counters of a cgroup (zero when it has none).
    pub fn cgroup_totals(&self, cgroup_id: u64) -> CgroupTotals {
        self.cgroups.get(&cgroup_id).copied().unwrap_or_default()
    }

    /// Keeps the cumulative counters of the cgroups `keep` says are still wanted (those of
    /// containers that still have series); the rest are dropped, so the map stays bounded.
    pub fn retain_cgroups(&mut self, keep: impl Fn(u64) -> bool) {
        self.cgroups.retain(|id, _| keep(*id));
    }

    /// The cgroups whose cumulative counters moved since the last call (flows that started or
    /// ended, however short they were).
    pub fn take_touched_cgroups(&mut self) -> HashSet<u64> {
        std::mem::take(&mut self.touched)
    }

    /// Number of cgroups with cumulative counters.
    pub fn cgroups_len(&self) -> usize {
        self.cgroups.len()
    }

    fn end(&mut self, cookie: u64) {
        if let Some(flow) = self.flows.remove(&cookie) {
            self.fold(&flow);
        }
    }

    /// Applies one kernel event.
    pub fn apply(&mut self, update: Update, cookie: u64, sock: &FlSock) {
        match update {
            Update::Open => {
                if let Some(flow) = self.flows.get_mut(&cookie) {
                    Self::update(flow, sock);
                } else {
                    let role = self.infer_role(sock);
                    self.insert(cookie, sock, role, true);
                }
            }
            Update::Close => {
                if let Some(flow) = self.flows.get_mut(&cookie) {
                    Self::update(flow, sock);
                } else {
                    // Opened and closed between two looks (or its open was lost): count it.
                    let role = self.infer_role(sock);
                    let is_new = sock.role != records::ROLE_UNKNOWN;
                    if !self.insert(cookie, sock, role, is_new) {
                        return;
                    }
                }
                self.end(cookie);
            }
            Update::ConnectFailed => self.connect_failed += 1,
        }
    }

    /// Applies a snapshot of the kernel's `socks` map: every live socket with its counters.
    /// Flows missing from two consecutive snapshots ended without a close event reaching us (lost)
    /// and are folded; UDP flows idle longer than the timeout end. Returns the cookies to delete
    /// from the kernel map (expired UDP flows).
    pub fn refresh<'a>(
        &mut self,
        snapshot: impl IntoIterator<Item = (u64, &'a FlSock)>,
        now_ns: u64,
    ) -> Vec<u64> {
        for flow in self.flows.values_mut() {
            flow.missing = flow.missing.saturating_add(1);
        }
        let mut expired = Vec::new();
        for (cookie, sock) in snapshot {
            if let Some(flow) = self.flows.get_mut(&cookie) {
                Self::update(flow, sock);
            } else if sock.role == records::ROLE_UNKNOWN {
                // A TCP socket established before flowlens started.
                let role = self.infer_role(sock);
                self.insert(cookie, sock, role, false);
            } else {
                // Its open event is still on its way: same outcome as the event.
                let role = self.infer_role(sock);
                self.insert(cookie, sock, role, true);
            }
            if sock.protocol == records::IPPROTO_UDP
                && now_ns.saturating_sub(sock.last_ns) > self.limits.udp_idle_timeout_ns
            {
                expired.push(cookie);
            }
        }
        let gone: Vec<u64> = self
            .flows
            .values()
            .filter(|f| f.missing >= 2 || (f.proto == Proto::Udp && f.missing >= 1))
            .map(|f| f.cookie)
            .chain(expired.iter().copied())
            .collect();
        for cookie in gone {
            self.end(cookie);
        }
        expired
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sock(role: u8, proto: u8, local: &str, remote: &str) -> FlSock {
        let local: SocketAddr = local.parse().unwrap();
        let remote: SocketAddr = remote.parse().unwrap();
        let raw = |ip: IpAddr| match ip {
            IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            IpAddr::V6(v6) => v6.octets(),
        };
        FlSock {
            bytes_sent: 0,
            bytes_rcvd: 0,
            first_ns: 1,
            last_ns: 1,
            cgroup_id: 7,
            netns: 4026531840,
            pid: 0,
            srtt_us: 0,
            rttvar_us: 0,
            retrans: 0,
            sport: local.port(),
            dport: remote.port(),
            saddr: raw(local.ip()),
            daddr: raw(remote.ip()),
            family: if local.is_ipv4() { 2 } else { 10 },
            protocol: proto,
            role,
            _pad: 0,
            comm: [0; COMM_LEN],
            _reserved: [0; 12],
        }
    }

    fn limits() -> Limits {
        Limits {
            max_flows: 100,
            max_hosts: 10,
            udp_idle_timeout_ns: 60_000_000_000,
        }
    }

    fn totals(t: &FlowTable, ip: &str) -> HostTotals {
        t.hosts()[&HostKey::Addr(ip.parse().unwrap())].clone()
    }

    #[test]
    fn open_refresh_close_keeps_counters_monotonic() {
        let mut t = FlowTable::new(limits());
        let mut s = sock(records::ROLE_CLIENT, 6, "10.0.0.1:40000", "10.0.0.2:80");
        t.apply(Update::Open, 1, &s);
        assert_eq!((t.len(), t.new_flows), (1, 1));
        s.bytes_sent = 100;
        s.bytes_rcvd = 50;
        s.last_ns = 5;
        t.refresh([(1, &s)], 10);
        assert_eq!(t.flows().next().unwrap().bytes_sent, 100);
        s.bytes_sent = 120;
        t.apply(Update::Close, 1, &s);
        assert!(t.is_empty());
        let h = totals(&t, "10.0.0.1");
        assert_eq!((h.bytes_sent, h.bytes_rcvd, h.total_client), (120, 50, 1));
        assert_eq!(h.ndpi["HTTP"], (120, 50));
        // A late duplicate close does not count twice... as a new flow it is refused by role.
        assert_eq!(t.new_flows, 1);
    }

    #[test]
    fn a_flow_opened_and_closed_between_gathers_is_counted_once() {
        let mut t = FlowTable::new(limits());
        let s = sock(records::ROLE_SERVER, 6, "10.0.0.2:80", "10.0.0.1:40000");
        t.apply(Update::Close, 9, &s);
        assert_eq!((t.len(), t.new_flows), (0, 1));
        assert_eq!(totals(&t, "10.0.0.2").total_server, 1);
    }

    #[test]
    fn flows_missing_from_two_snapshots_end() {
        let mut t = FlowTable::new(limits());
        let s = sock(records::ROLE_CLIENT, 6, "10.0.0.1:40000", "10.0.0.2:80");
        t.apply(Update::Open, 1, &s);
        t.refresh([], 10);
        assert_eq!(t.len(), 1, "one missing snapshot may be a race");
        t.refresh([], 20);
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn pre_existing_sockets_take_their_role_from_listening_ports() {
        let mut t = FlowTable::new(limits());
        let mut server = sock(records::ROLE_UNKNOWN, 6, "10.0.0.2:40001", "10.0.0.1:40000");
        t.set_listening(server.netns, vec![40001]);
        let client = sock(records::ROLE_UNKNOWN, 6, "10.0.0.1:40000", "10.0.0.2:40001");
        server.bytes_rcvd = 3;
        t.refresh([(1, &server), (2, &client)], 10);
        let role = |c| t.flows().find(|f| f.cookie == c).unwrap().role;
        assert_eq!((role(1), role(2)), (Role::Server, Role::Client));
        assert_eq!(t.new_flows, 0, "pre-existing flows are not new");
    }

    #[test]
    fn udp_flows_expire_when_idle_and_are_deleted_from_the_kernel() {
        let mut t = FlowTable::new(limits());
        let mut s = sock(records::ROLE_CLIENT, 17, "10.0.0.1:5000", "10.0.0.2:53");
        s.bytes_sent = 40;
        t.apply(Update::Open, 3, &s);
        assert_eq!(t.refresh([(3, &s)], 1_000), Vec::<u64>::new());
        assert_eq!(t.len(), 1);
        assert_eq!(t.refresh([(3, &s)], 61_000_000_002), vec![3]);
        assert_eq!(t.len(), 0);
        assert_eq!(totals(&t, "10.0.0.1").ndpi["DNS"], (40, 0));
    }

    #[test]
    fn hosts_beyond_the_limit_fold_into_other() {
        let mut t = FlowTable::new(Limits {
            max_hosts: 2,
            ..limits()
        });
        for i in 1..=4u64 {
            let s = sock(
                records::ROLE_CLIENT,
                6,
                &format!("10.0.0.{i}:40000"),
                "1.1.1.1:443",
            );
            t.apply(Update::Open, i, &s);
        }
        let named = t.hosts().keys().filter(|k| **k != HostKey::Other).count();
        assert_eq!(named, 2);
        assert_eq!(t.hosts()[&HostKey::Other].total_client, 2);
    }

    #[test]
    fn the_table_is_bounded() {
        let mut t = FlowTable::new(Limits {
            max_flows: 2,
            ..limits()
        });
        for i in 1..=3u64 {
            let s = sock(
                records::ROLE_CLIENT,
                6,
                &format!("10.0.0.1:{}", 40000 + i),
                "1.1.1.1:443",
            );
            t.apply(Update::Open, i, &s);
        }
        assert_eq!((t.len(), t.flows_evicted), (2, 1));
    }
}

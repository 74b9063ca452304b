//! The flow table: one entry per socket, fed by kernel events and map snapshots, and the
//! cumulative counters that closed flows fold into. Pure: no I/O, no aya; tested with plain values.
//!
//! Counters never go backwards while a series lives: a flow's bytes are counted from the active
//! table while it lives, and folded into its host's cumulative totals when it closes or expires,
//! in the same gather. A host without active flows for `series_ttl_ns` loses its series and its
//! totals (a counter that restarts from 0 if the address comes back: InfluxQL's
//! `non_negative_derivative` skips the drop).
//!
//! Layout (for speed, the table sees millions of events a second): flows live in a dense `Vec`
//! (iteration is a linear sweep) with an id (`flow_id`) -> slot index beside it; each flow carries its
//! host's slot (counted by the slot, so a slot is freed only when no flow carries it, and reused
//! from a free list) and its protocol, so aggregation indexes arrays instead of hashing; a refresh
//! stamps the flows it sees with a generation instead of counting misses in a separate pass.

mod hosts;
mod listen;
mod peers;

pub(crate) use hosts::HostEntry;
pub use hosts::HostKey;
use hosts::HostTable;
pub(crate) use hosts::{HostTotals, Hosts};
pub use listen::ListenDrops;
use peers::PeerTable;
pub use peers::Scope;
pub(crate) use peers::{PeerKey, PeerTotals, PeerValue};

use crate::hash::{FastMap, FastSet};
use crate::ndpi::{self, Protocol};
pub use crate::records::Proto;
use crate::records::{self, FlSock, COMM_LEN};
use crate::rtt::RttBuckets;
use std::{
    collections::hash_map::Entry,
    net::{IpAddr, SocketAddr},
};

/// Puts `entry` in a free slot of `entries` (from `free`) or a new one at the end; its index.
/// The slot tables of hosts and peers, whose flows carry indexes, never move an entry.
fn put_in_slot<T>(entries: &mut Vec<T>, free: &mut Vec<u32>, entry: T) -> u32 {
    match free.pop() {
        Some(slot) => {
            entries[slot as usize] = entry;
            slot
        }
        None => {
            entries.push(entry);
            (entries.len() - 1) as u32
        }
    }
}

/// Appends `ip` as its `Display` writes it (`10.0.0.1`, `fd00::1`): IPv4 digit by digit, the
/// gather writes one or two per series; IPv6 through `Display`.
pub(crate) fn write_ip(out: &mut String, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                write_u64(out, u64::from(octet));
            }
        }
        IpAddr::V6(v6) => {
            use std::fmt::Write as _;
            let _ = write!(out, "{v6}");
        }
    }
}

/// Appends `n` in decimal, as its `Display` writes it.
pub(crate) fn write_u64(out: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.push_str(std::str::from_utf8(&digits[at..]).expect("ASCII digits"));
}

/// Appends `addr` as its `Display` writes it (`10.0.0.1:80`, `[fd00::1]:80`).
pub(crate) fn write_socket_addr(out: &mut String, addr: SocketAddr) {
    match addr {
        SocketAddr::V4(a) => {
            write_ip(out, IpAddr::V4(*a.ip()));
            out.push(':');
            write_u64(out, u64::from(a.port()));
        }
        SocketAddr::V6(_) => {
            use std::fmt::Write as _;
            let _ = write!(out, "{addr}");
        }
    }
}

/// Who initiated the flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// The local socket connected (TCP) or sent first (UDP).
    Client,
    /// The local socket accepted (TCP) or received first on a bound port (UDP).
    Server,
}

/// One active flow (one local socket).
#[derive(Debug, Clone, PartialEq)]
pub struct Flow {
    /// The kernel's key of the socket: its cookie (unique for the kernel's lifetime), or, on
    /// kernels that cannot read cookies from tracing programs (before 5.12), its address when
    /// it had no cookie (reused by later sockets).
    pub cookie: u64,
    /// The table's key: `cookie` told apart by the entry's creation time (see [`flow_id`]).
    pub(crate) id: u64,
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
    /// The refresh generation of the last snapshot or event that named this flow.
    seen: u32,
    /// Its host's slot in the host table (a named host's or `other`'s): the slot lives while
    /// the flow does. Kept in step with `local`.
    host: u32,
    /// Its application protocol; kept in step with the ports and `comm`.
    protocol: Protocol,
    /// Its peer series' slot (see `peers.rs`; `UNASSIGNED` until a gather gives it one).
    peer: u32,
}

impl Flow {
    /// The port of the server side of this flow.
    pub(crate) fn server_port(&self) -> u16 {
        match self.role {
            Role::Client => self.remote.port(),
            Role::Server => self.local.port(),
        }
    }

    /// Its application protocol (`ndpi::classify`'s, computed when the flow's ports or command
    /// change rather than at every look).
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// Its peer series' slot among [`FlowTable::peer_slots`] (beyond them: none assigned).
    pub(crate) fn peer_slot(&self) -> usize {
        self.peer as usize
    }

    /// Its host's slot among [`FlowTable::host_entries`] (`other`'s when it was folded).
    pub(crate) fn host_slot(&self) -> usize {
        self.host as usize
    }

    fn classify(&mut self) {
        self.protocol = ndpi::classify(self.proto, self.server_port(), &self.comm);
    }
}

/// Limits of the table.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most flows held at once.
    pub max_flows: usize,
    /// Most hosts with their own series at once; the rest fold into `other`.
    pub max_hosts: usize,
    /// A host or peer series without active flows for this long (ns, at refreshes) ends
    /// (`series_ttl_secs`).
    pub series_ttl_ns: u64,
    /// A UDP flow idle this long (ns) ends.
    pub udp_idle_timeout_ns: u64,
    /// A host series is an address in one network namespace (see [`HostKey`]); `false`: an
    /// address of every namespace (ntopng_compat, whose tags cannot name the namespace).
    pub hosts_by_netns: bool,
    /// Most peer series per container (all its cgroups together); the rest fold into its
    /// `other`. 0: no peer series.
    pub max_peers_per_container: u32,
}

/// The flow table and the cumulative counters (read by the core's gather, which records them
/// as internal events; another crate adds to them only through [`FlowTable::count_evicted`]).
#[derive(Debug)]
pub struct FlowTable {
    /// Cookie -> slot in `store.flows`.
    index: FastMap<u64, u32>,
    store: Store,
    /// Flows opened since start (the `iface:new_flows` counter).
    pub(crate) new_flows: u64,
    /// Flows the table had no room for, and sockets the plugin could not track
    /// ([`FlowTable::count_evicted`]).
    pub(crate) flows_evicted: u64,
    /// Connections that failed (SYN_SENT -> CLOSE).
    pub(crate) connect_failed: u64,
}

/// The table's key for a socket: its kernel key mixed with the time its kernel entry was made.
/// A socket address names a later socket once the first is freed, possibly between a gather's
/// read of the ring and its read of the map; the creation time tells the two apart (a cookie is
/// never reused, so it changes nothing there).
pub(crate) fn flow_id(cookie: u64, sock: &FlSock) -> u64 {
    cookie ^ sock.first_ns.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// Everything of the table but the cookie index (borrowed apart from it, so one index lookup
/// serves both the "known" and the "insert" case).
#[derive(Debug)]
struct Store {
    limits: Limits,
    /// The active flows, dense.
    flows: Vec<Flow>,
    hosts: HostTable,
    /// Peer series and the flows that ended before a gather gave them one.
    peers: PeerTable,
    /// Cumulative counters per socket cgroup, for container series.
    cgroups: FastMap<u64, CgroupTotals>,
    /// Cgroups whose counters moved since the last `take_touched_cgroups`.
    touched: FastSet<u64>,
    /// Refreshes so far (wrapping): a flow `seen` n generations ago missed n snapshots.
    generation: u32,
}

/// The counters a cgroup, a container or a pod series sums: bytes, flows started, TCP
/// retransmissions and failures (cumulative). One type with one `add`, embedded in
/// [`CgroupTotals`] and in the aggregate's series values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counters {
    /// Bytes sent.
    pub bytes_sent: u64,
    /// Bytes received.
    pub bytes_rcvd: u64,
    /// Flows started as client since flowlens did.
    pub new_client: u64,
    /// Flows started as server since flowlens did.
    pub new_server: u64,
    /// Retransmitted segments.
    pub retrans: u64,
    /// TCP connections that failed, by reason and role.
    pub failures: Failures,
}

impl Counters {
    /// Adds `other`'s counts.
    pub(crate) fn add(&mut self, other: &Counters) {
        self.bytes_sent += other.bytes_sent;
        self.bytes_rcvd += other.bytes_rcvd;
        self.new_client += other.new_client;
        self.new_server += other.new_server;
        self.retrans += other.retrans;
        self.failures.add(&other.failures);
    }
}

/// Cumulative counters of one cgroup: flows started in it (`new_client`, `new_server`), what
/// its ended flows moved (bytes, retransmissions), its failures, and its ended flows' RTTs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct CgroupTotals {
    /// Flows started, ended flows' bytes and retransmissions, failures.
    pub counters: Counters,
    /// The final srtt of its ended TCP flows that had an RTT sample, per role.
    pub(crate) rtt_closed: RttBuckets,
}

impl CgroupTotals {
    /// Adds `other`'s counts.
    pub(crate) fn add(&mut self, other: &CgroupTotals) {
        self.counters.add(&other.counters);
        self.rtt_closed.add(&other.rtt_closed);
    }
}

/// TCP connections that failed, by reason and role (cumulative). The connect failures
/// (`refused`, `timed_out` and `unreachable` as client, `aborted`) sum to the connects that
/// failed (`FlowTable::connect_failed`, host-wide).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Failures {
    /// Connects answered by an RST (`ECONNREFUSED`): nothing listened on the port.
    pub refused_as_client: u64,
    /// Connects whose SYN retries ran out (`ETIMEDOUT`), and established client flows whose
    /// retransmissions or keepalives ran out.
    pub timed_out_as_client: u64,
    /// Established server flows whose retransmissions or keepalives ran out.
    pub timed_out_as_server: u64,
    /// Connects failed by an ICMP error (`EHOSTUNREACH`, `ENETUNREACH`, ...).
    pub unreachable_as_client: u64,
    /// Connects closed by their own process before an answer (its own connect timeout).
    pub aborted_as_client: u64,
    /// Established client flows reset by the peer (an RST received: `ECONNRESET`, `EPIPE`).
    pub reset_as_client: u64,
    /// Established server flows reset by the peer.
    pub reset_as_server: u64,
    /// Segments its listening sockets dropped (their `sk_drops`): connection attempts dropped
    /// with a queue full, before any socket existed for them (see [`ListenDrops`]).
    pub dropped_as_server: u64,
}

impl Failures {
    /// Adds `other`'s counts.
    pub fn add(&mut self, other: &Failures) {
        self.refused_as_client += other.refused_as_client;
        self.timed_out_as_client += other.timed_out_as_client;
        self.timed_out_as_server += other.timed_out_as_server;
        self.unreachable_as_client += other.unreachable_as_client;
        self.aborted_as_client += other.aborted_as_client;
        self.reset_as_client += other.reset_as_client;
        self.reset_as_server += other.reset_as_server;
        self.dropped_as_server += other.dropped_as_server;
    }

    /// Counts the end of a TCP socket: a failed connect (`connect`), or an established flow's
    /// close, with the `sk_err` the kernel set before it reached CLOSE (see [`records::FlEvent`]).
    /// A close without error, or with one that is not a failure of the connection, counts
    /// nothing.
    pub fn count(&mut self, connect: bool, err: u32, role: Role) {
        const EPIPE: u32 = 32;
        const ENETUNREACH: u32 = 101;
        const ECONNRESET: u32 = 104;
        const ETIMEDOUT: u32 = 110;
        const ECONNREFUSED: u32 = 111;
        const EHOSTUNREACH: u32 = 113;
        let field = match (connect, err, role) {
            (true, ECONNREFUSED, _) => &mut self.refused_as_client,
            (true, ETIMEDOUT, _) => &mut self.timed_out_as_client,
            // No error before CLOSE: the process closed (or shut) the socket itself.
            (true, 0, _) => &mut self.aborted_as_client,
            (true, _, _) => &mut self.unreachable_as_client,
            (false, ECONNRESET | EPIPE, Role::Client) => &mut self.reset_as_client,
            (false, ECONNRESET | EPIPE, Role::Server) => &mut self.reset_as_server,
            // Retransmissions ran out: ETIMEDOUT, or the ICMP error met meanwhile.
            (false, ETIMEDOUT | EHOSTUNREACH | ENETUNREACH, Role::Client) => {
                &mut self.timed_out_as_client
            }
            (false, ETIMEDOUT | EHOSTUNREACH | ENETUNREACH, Role::Server) => {
                &mut self.timed_out_as_server
            }
            (false, _, _) => return,
        };
        *field += 1;
    }
}

/// What the kernel reported about a socket, with the kind of report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Update {
    /// A UDP flow's first datagram (TCP flows start in the `socks` map, without a record).
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

impl Store {
    /// The role of a socket. The kernel writes it for every socket it enters (TCP: connect or
    /// accept; UDP: the first datagram's direction), and the start-up scan for the sockets it
    /// finds (from the listening ports of each socket's namespace, see the plugin's seed/role.rs). An entry without
    /// one (`ROLE_UNKNOWN`, written by another program into the map) is guessed from its local
    /// port: ephemeral (>= 32768) makes it a client, a low one a server.
    fn infer_role(&self, sock: &FlSock) -> Role {
        match sock.role {
            records::ROLE_CLIENT => return Role::Client,
            records::ROLE_SERVER => return Role::Server,
            _ => {}
        }
        if sock.sport >= 32768 {
            Role::Client
        } else {
            Role::Server
        }
    }

    /// Appends a flow seen for the first time and returns its slot (the caller indexes it), or
    /// None when refused. `is_new`: it started after flowlens did.
    fn insert(
        &mut self,
        cookie: u64,
        sock: &FlSock,
        role: Role,
        is_new: bool,
        new_flows: &mut u64,
        flows_evicted: &mut u64,
    ) -> Option<u32> {
        let proto = proto_of(sock)?;
        if self.flows.len() >= self.limits.max_flows {
            *flows_evicted += 1;
            return None;
        }
        let local = sock.local();
        let host = self.hosts.assign(local.ip(), sock.netns);
        let entry = &mut self.hosts.entries[host as usize];
        entry.flows += 1;
        let mut flow = Flow {
            cookie,
            id: flow_id(cookie, sock),
            proto,
            role,
            local,
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
            seen: self.generation,
            host,
            protocol: Protocol::Unknown,
            peer: if self.limits.max_peers_per_container == 0 {
                peers::NO_SERIES
            } else {
                peers::UNASSIGNED
            },
        };
        flow.classify();
        match role {
            Role::Client => entry.totals.total_client += 1,
            Role::Server => entry.totals.total_server += 1,
        }
        if is_new {
            *new_flows += 1;
            self.touched.insert(flow.cgroup_id);
            let cg = self.cgroups.entry(flow.cgroup_id).or_default();
            match role {
                Role::Client => cg.counters.new_client += 1,
                Role::Server => cg.counters.new_server += 1,
            }
        }
        let slot = self.flows.len() as u32;
        self.flows.push(flow);
        Some(slot)
    }

    /// Applies the kernel's latest values to a known flow.
    #[inline]
    fn update(&mut self, slot: u32, sock: &FlSock) {
        let flow = &mut self.flows[slot as usize];
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
        flow.seen = self.generation;
        let mut changed = false;
        if flow.pid == 0 && sock.pid != 0 {
            flow.pid = sock.pid;
            flow.comm = sock.comm;
            changed = true;
        }
        // Addresses of a UDP socket become known when it connects; a TCP socket's are fixed.
        if flow.local.port() == 0 || flow.local.ip().is_unspecified() {
            let local = sock.local();
            if local.ip() != flow.local.ip() {
                // The flow moves to its new address's host (made while there is room).
                let host = self.hosts.assign(local.ip(), flow.netns);
                if host != flow.host {
                    self.hosts.release(flow.host);
                    self.hosts.entries[host as usize].flows += 1;
                    flow.host = host;
                }
            }
            changed |= local != flow.local;
            flow.local = local;
        }
        if flow.remote.port() == 0 {
            let remote = sock.remote();
            changed |= remote != flow.remote;
            flow.remote = remote;
        }
        if changed {
            flow.classify();
        }
    }

    /// Takes a flow out of the table (the last one moves into its slot: `index` follows) and
    /// folds its counters into its host's and cgroup's totals (the host's slot stays until it
    /// expires, at a refresh).
    /// `failed`: the flow ended with an error that counts as a failure (see [`Failures`]).
    fn end(&mut self, index: &mut FastMap<u64, u32>, slot: u32, failed: bool) {
        let flow = self.flows.swap_remove(slot as usize);
        self.peers.end(&flow, true, failed);
        if let Some(moved) = self.flows.get(slot as usize) {
            *index.get_mut(&moved.id).expect("indexed") = slot;
        }
        let totals = &mut self.hosts.release(flow.host).totals;
        totals.bytes_sent += flow.bytes_sent;
        totals.bytes_rcvd += flow.bytes_rcvd;
        totals
            .ndpi
            .add(flow.protocol, flow.bytes_sent, flow.bytes_rcvd);
        self.touched.insert(flow.cgroup_id);
        let cg = self.cgroups.entry(flow.cgroup_id).or_default();
        cg.counters.bytes_sent += flow.bytes_sent;
        cg.counters.bytes_rcvd += flow.bytes_rcvd;
        cg.counters.retrans += u64::from(flow.retrans);
        if flow.proto == Proto::Tcp && flow.srtt_us > 0 {
            match flow.role {
                Role::Client => cg.rtt_closed.client.record(flow.srtt_us),
                Role::Server => cg.rtt_closed.server.record(flow.srtt_us),
            }
        }
    }
}

// `prefetch` asks for a flow's second cache line too.
const _: () = assert!(std::mem::size_of::<Flow>() > 64);

/// Asks the CPU to start loading `flow`'s first two cache lines (a hint: no fault, no effect on
/// results).
#[inline]
#[allow(unsafe_code)] // the intrinsic is an `unsafe fn`; there is no safe prefetch in std
fn prefetch(flow: &Flow) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let at = (flow as *const Flow).cast::<i8>();
        // SAFETY: a prefetch never faults; SSE is part of x86_64's baseline. The second line
        // is within the same allocation (`Flow` spans more than 64 bytes).
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(at);
            _mm_prefetch::<_MM_HINT_T0>(at.wrapping_add(64));
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = flow;
}

impl FlowTable {
    /// An empty table.
    pub fn new(limits: Limits) -> FlowTable {
        FlowTable {
            index: FastMap::default(),
            store: Store {
                limits,
                flows: Vec::new(),
                hosts: HostTable::new(
                    limits.max_hosts,
                    limits.series_ttl_ns,
                    limits.hosts_by_netns,
                ),
                // Ended flows wait for a gather: at most as many as the table holds.
                peers: PeerTable::new(
                    limits.max_peers_per_container,
                    limits.max_flows,
                    limits.series_ttl_ns,
                ),
                cgroups: FastMap::default(),
                touched: FastSet::default(),
                generation: 0,
            },
            new_flows: 0,
            flows_evicted: 0,
            connect_failed: 0,
        }
    }

    /// The active flows.
    pub fn flows(&self) -> std::slice::Iter<'_, Flow> {
        self.store.flows.iter()
    }

    /// Number of active flows.
    pub fn len(&self) -> usize {
        self.store.flows.len()
    }

    /// Whether there is no active flow.
    pub fn is_empty(&self) -> bool {
        self.store.flows.is_empty()
    }

    /// The cumulative totals per host.
    pub fn hosts(&self) -> Hosts<'_> {
        Hosts {
            table: &self.store.hosts,
        }
    }

    /// The host slots (`Flow::host_slot`), for aggregation; free slots have no key.
    pub(crate) fn host_entries(&self) -> &[HostEntry] {
        &self.store.hosts.entries
    }

    /// The slot of `HostKey::Other` among `host_entries`, when it exists.
    pub(crate) fn other_host_slot(&self) -> Option<usize> {
        self.store.hosts.other.map(|s| s as usize)
    }

    /// The key of the series a flow counts in when it is not folded into `other`: its local
    /// address, in its network namespace when the table keys hosts by namespace.
    pub(crate) fn host_key(&self, flow: &Flow) -> HostKey {
        self.store.hosts.key(flow.local.ip(), flow.netns)
    }

    /// Counts `n` sockets left untracked for want of room outside the table (the start-up
    /// scan's, beyond `max_flows` or the kernel map's room): `flowlens:internal,flows_evicted`.
    pub fn count_evicted(&mut self, n: u64) {
        self.flows_evicted = self.flows_evicted.saturating_add(n);
    }

    /// Adds a flow that was already established when flowlens started (found by the start-up
    /// scan): counted as active and in the totals, not as new.
    pub fn seed(&mut self, cookie: u64, sock: &FlSock, role: Role) {
        if let Entry::Vacant(v) = self.index.entry(flow_id(cookie, sock)) {
            let (new, evicted) = (&mut self.new_flows, &mut self.flows_evicted);
            if let Some(slot) = self.store.insert(cookie, sock, role, false, new, evicted) {
                v.insert(slot);
            }
        }
    }

    /// The cumulative counters of a cgroup (zero when it has none), for tests (the gathers use
    /// `cgroup_totals_ref`).
    #[cfg(test)]
    pub(crate) fn cgroup_totals(&self, cgroup_id: u64) -> CgroupTotals {
        self.store
            .cgroups
            .get(&cgroup_id)
            .copied()
            .unwrap_or_default()
    }

    /// Every cgroup's cumulative counters, in the map's order (a sequential read).
    pub(crate) fn cgroup_totals_iter(&self) -> impl Iterator<Item = (u64, &CgroupTotals)> {
        self.store.cgroups.iter().map(|(id, t)| (*id, t))
    }

    /// Takes the cumulative counters of `cgroup_id` out of the table (a container keeps them
    /// as its own when it drops an idle cgroup from its list): the cgroup counts from 0 again.
    pub(crate) fn take_cgroup_totals(&mut self, cgroup_id: u64) -> CgroupTotals {
        self.store.cgroups.remove(&cgroup_id).unwrap_or_default()
    }

    /// Keeps the cumulative counters of the cgroups `keep` says are still wanted (those of
    /// containers that still have series); the rest are dropped, so the map stays bounded.
    pub(crate) fn retain_cgroups(&mut self, keep: impl Fn(u64) -> bool) {
        self.store.cgroups.retain(|id, _| keep(*id));
    }

    /// The cgroups whose cumulative counters moved since the last call (flows that started or
    /// ended, however short they were).
    pub fn take_touched_cgroups(&mut self) -> std::collections::HashSet<u64> {
        std::mem::take(&mut self.store.touched)
            .into_iter()
            .collect()
    }

    /// Marks cgroups as touched again, for the next `take_touched_cgroups` (cgroups a gather
    /// could not resolve yet).
    pub(crate) fn touch_cgroups(&mut self, ids: impl IntoIterator<Item = u64>) {
        self.store.touched.extend(ids);
    }

    /// Counts `drops` dropped by the listening sockets of `cgroup_id` (see [`ListenDrops`]).
    pub fn add_listen_drops(&mut self, cgroup_id: u64, drops: u64) {
        let totals = self.store.cgroups.entry(cgroup_id).or_default();
        totals.counters.failures.dropped_as_server += drops;
        self.store.touched.insert(cgroup_id);
    }

    fn end(&mut self, id: u64) {
        if let Some(slot) = self.index.remove(&id) {
            self.store.end(&mut self.index, slot, false);
        }
    }

    /// Gives every flow without a peer series its slot, and folds the flows that ended since
    /// the last gather into theirs (see `peers.rs`); ends the peer series idle for longer than
    /// the TTL. `scope` says which cgroups have series; `backend` names the endpoint that
    /// answered a client flow whose destination DNAT rewrote. `now_ns`: a monotonic clock.
    pub fn assign_peers(
        &mut self,
        scope: impl Fn(u64) -> Scope,
        backend: impl FnMut(Proto, SocketAddr, SocketAddr) -> Option<SocketAddr>,
        now_ns: u64,
    ) {
        let store = &mut self.store;
        store.peers.assign(&mut store.flows, scope, backend, now_ns);
    }

    /// The (protocol, local, remote) addresses of the client flows whose DNAT backend the next
    /// [`assign_peers`](Self::assign_peers) with the same `scope` asks for: the flows without
    /// a peer series and the ended flows queued, of cgroups with series, that may be rewritten.
    pub fn backend_queries(
        &self,
        scope: impl Fn(u64) -> Scope,
    ) -> Vec<(Proto, SocketAddr, SocketAddr)> {
        self.store.peers.backend_queries(&self.store.flows, scope)
    }

    /// Every peer slot's series (None: a free slot) with its ended flows' values, after
    /// [`assign_peers`](Self::assign_peers): the aggregate adds the active flows (each carries
    /// its slot, [`Flow::peer_slot`]), into `out` (cleared first). The interval's RTT samples
    /// start over.
    pub(crate) fn peer_slots(&mut self, out: &mut Vec<Option<PeerValue>>) {
        self.store.peers.ended_values(out);
    }

    /// Peers (and flows, when the queue of ended flows was full) folded into a cgroup's
    /// `other` since the last call.
    pub fn take_peers_folded(&mut self) -> u64 {
        self.store.peers.take_folded()
    }

    /// Whether the gathers look up DNAT backends (`assign_peers`' `backend`): then a client
    /// flow that ends before a gather keeps its own addresses until then; otherwise the flows of
    /// one peer that end between gathers are merged as they end.
    pub fn set_peer_backends(&mut self, backends: bool) {
        self.store.peers.set_backends(backends);
    }

    /// Applies one kernel event.
    pub fn apply(&mut self, update: Update, cookie: u64, sock: &FlSock) {
        self.apply_ended(update, cookie, sock, false);
    }

    /// [`apply`](Self::apply), with whether a TCP end was a failure (its peer series counts it).
    fn apply_ended(&mut self, update: Update, cookie: u64, sock: &FlSock, failed: bool) {
        let (new, evicted) = (&mut self.new_flows, &mut self.flows_evicted);
        match update {
            Update::Open => match self.index.entry(flow_id(cookie, sock)) {
                Entry::Occupied(e) => self.store.update(*e.get(), sock),
                Entry::Vacant(v) => {
                    let role = self.store.infer_role(sock);
                    if let Some(slot) = self.store.insert(cookie, sock, role, true, new, evicted) {
                        v.insert(slot);
                    }
                }
            },
            Update::Close => {
                let slot = match self.index.entry(flow_id(cookie, sock)) {
                    Entry::Occupied(e) => {
                        let slot = e.remove();
                        self.store.update(slot, sock);
                        slot
                    }
                    Entry::Vacant(_) => {
                        // Opened and closed between two looks (or its open was lost): count it.
                        let role = self.store.infer_role(sock);
                        let is_new = sock.role != records::ROLE_UNKNOWN;
                        match self.store.insert(cookie, sock, role, is_new, new, evicted) {
                            Some(slot) => slot,
                            None => return,
                        }
                    }
                };
                self.store.end(&mut self.index, slot, failed);
            }
            Update::ConnectFailed => {
                self.connect_failed += 1;
                if self.store.limits.max_peers_per_container > 0 {
                    let role = self.store.infer_role(sock);
                    if let Some(proto) = proto_of(sock) {
                        self.store.peers.failed_connect(sock, role, proto);
                    }
                }
            }
        }
    }

    /// Applies one ring-buffer record; a record of an unknown kind is ignored. A TCP end counts
    /// in its cgroup's [`Failures`] by its `err`. The close of a connect still pending (caught
    /// by `fl_destroy` when the state change was missed) is a failed connect.
    pub fn apply_event(&mut self, event: &records::FlEvent) {
        let pending = event.sock.flags & records::SOCK_PENDING != 0;
        let update = match event.kind {
            records::EV_OPEN => Update::Open,
            records::EV_CLOSE if !pending => Update::Close,
            records::EV_CLOSE | records::EV_CONNECT_FAILED => Update::ConnectFailed,
            _ => return,
        };
        // The close of an adopted socket the table does not know: start-up took the socket for
        // closed before it was tracked and removed its entry while its close, in flight, had
        // already read it (startup.rs, `adopt_established`); start-up seeds every other adopted
        // socket before any record is applied. Nothing to count.
        if update == Update::Close
            && event.sock.flags & records::SOCK_ADOPTED != 0
            && !self.index.contains_key(&flow_id(event.cookie, &event.sock))
        {
            return;
        }
        // A close without error counts nothing: no lookup on the common path.
        let mut failed = false;
        if update == Update::ConnectFailed || (update == Update::Close && event.err != 0) {
            let role = self.store.infer_role(&event.sock);
            let cgroup_id = event.sock.cgroup_id;
            let totals = self.store.cgroups.entry(cgroup_id).or_default();
            let failures = &mut totals.counters.failures;
            let before = *failures;
            failures.count(update == Update::ConnectFailed, event.err, role);
            if *failures != before {
                self.store.touched.insert(cgroup_id);
                failed = true;
            }
        }
        self.apply_ended(update, event.cookie, &event.sock, failed);
    }

    /// Applies a snapshot of the kernel's `socks` map: every live socket with its counters.
    /// TCP flows missing from two consecutive snapshots, and UDP flows missing from one, ended
    /// without a close event reaching us (lost) and are folded; UDP flows idle longer than the
    /// timeout end. First, hosts without active
    /// flows since `series_ttl_ns` before `now_ns` lose their series. Returns the cookies to delete
    /// from the kernel map (expired UDP flows). `now_ns`: the kernel's clock (CLOCK_MONOTONIC).
    pub fn refresh<'a>(
        &mut self,
        snapshot: impl IntoIterator<Item = (u64, &'a FlSock)>,
        now_ns: u64,
    ) -> Vec<u64> {
        // Hosts inactive for longer than the TTL free their slots for this snapshot's new ones.
        self.store.hosts.expire(now_ns);
        // Every flow not named by this snapshot has now missed one more.
        self.store.generation = self.store.generation.wrapping_add(1);
        let generation = self.store.generation;
        // Distinct flows of the table named by this snapshot: when all are, none is missing.
        let mut seen = 0usize;
        let mut expired = Vec::new();
        // In chunks: first every entry's slot (independent lookups, whose cache misses the CPU
        // overlaps) with a prefetch of its flow, then the updates. The snapshot comes in the
        // kernel's hash order, unrelated to the table's: one entry at a time, each flow was a
        // cache miss waited for in turn.
        const CHUNK: usize = 16;
        const NONE: u32 = u32::MAX;
        let mut chunk: Vec<(u64, &FlSock, u32)> = Vec::with_capacity(CHUNK);
        // A connect not answered yet is no flow: it becomes one when established (the kernel
        // clears its SOCK_PENDING), and only counts as a failed connect if it fails.
        let mut entries = snapshot
            .into_iter()
            .filter(|(_, sock)| sock.flags & records::SOCK_PENDING == 0);
        loop {
            chunk.clear();
            chunk.extend(entries.by_ref().take(CHUNK).map(|(cookie, sock)| {
                let slot = self
                    .index
                    .get(&flow_id(cookie, sock))
                    .copied()
                    .unwrap_or(NONE);
                if let Some(flow) = self.store.flows.get(slot as usize) {
                    prefetch(flow);
                }
                (cookie, sock, slot)
            }));
            if chunk.is_empty() {
                break;
            }
            for &(cookie, sock, slot) in &chunk {
                // A cookie met twice in one chunk was inserted by its first meeting.
                let slot = match slot {
                    NONE => self
                        .index
                        .get(&flow_id(cookie, sock))
                        .copied()
                        .unwrap_or(NONE),
                    slot => slot,
                };
                if slot != NONE {
                    seen += usize::from(self.store.flows[slot as usize].seen != generation);
                    self.store.update(slot, sock);
                } else {
                    let (new, evicted) = (&mut self.new_flows, &mut self.flows_evicted);
                    let role = self.store.infer_role(sock);
                    // ROLE_UNKNOWN: a TCP socket established before flowlens started.
                    // Otherwise it started since the last gather (its close, if any, is still
                    // on its way): same outcome as that record.
                    let is_new = sock.role != records::ROLE_UNKNOWN;
                    if let Some(slot) = self.store.insert(cookie, sock, role, is_new, new, evicted)
                    {
                        self.index.insert(flow_id(cookie, sock), slot);
                        seen += 1;
                    }
                }
                if sock.protocol == records::IPPROTO_UDP
                    && now_ns.saturating_sub(sock.last_ns) > self.store.limits.udp_idle_timeout_ns
                {
                    expired.push((cookie, flow_id(cookie, sock)));
                }
            }
        }
        let mut gone: Vec<u64> = Vec::new();
        if seen < self.store.flows.len() {
            gone.extend(
                self.store
                    .flows
                    .iter()
                    .filter(|f| {
                        let missing = generation.wrapping_sub(f.seen);
                        missing >= 2 || (f.proto == Proto::Udp && missing >= 1)
                    })
                    .map(|f| f.id),
            );
        }
        for id in gone.into_iter().chain(expired.iter().map(|&(_, id)| id)) {
            self.end(id);
        }
        self.store.hosts.mark_active(now_ns);
        expired.into_iter().map(|(cookie, _)| cookie).collect()
    }
}

#[cfg(test)]
impl FlowTable {
    /// Checks the host table against the flows: each slot counts the flows that carry it, a
    /// flow's slot names its own address or `other`, the index, the free list and the counts
    /// agree, and at most `max_hosts` named hosts are alive.
    pub(crate) fn assert_hosts_consistent(&self) {
        let hosts = &self.store.hosts;
        let mut refs = vec![0u32; hosts.entries.len()];
        for flow in self.flows() {
            refs[flow.host_slot()] += 1;
            let key = hosts.entries[flow.host_slot()].key;
            assert!(
                key == Some(self.host_key(flow)) || key == Some(HostKey::Other),
                "{flow:?} carries {key:?}"
            );
        }
        let mut named = 0;
        for (slot, entry) in hosts.entries.iter().enumerate() {
            assert_eq!(entry.flows, refs[slot], "slot {slot}");
            match entry.key {
                Some(key) => {
                    assert_eq!(hosts.index.get(&key), Some(&(slot as u32)));
                    named += usize::from(key != HostKey::Other);
                }
                None => assert!(hosts.free.contains(&(slot as u32)), "slot {slot} leaked"),
            }
        }
        assert_eq!(hosts.index.len() + hosts.free.len(), hosts.entries.len());
        assert_eq!(hosts.named, named);
        assert!(named <= hosts.max_hosts);
        assert_eq!(
            hosts.other,
            hosts.index.get(&HostKey::Other).copied(),
            "other's slot"
        );
    }
}

#[cfg(test)]
pub(crate) mod tests;

//! The flow table: one entry per socket, fed by kernel events and map snapshots, and the
//! cumulative counters that closed flows fold into. Pure: no I/O, no aya; tested with plain values.
//!
//! Counters never go backwards while a series lives: a flow's bytes are counted from the active
//! table while it lives, and folded into its host's cumulative totals when it closes or expires,
//! in the same gather. A host without active flows for `host_ttl_ns` loses its series and its
//! totals (a counter that restarts from 0 if the address comes back: InfluxQL's
//! `non_negative_derivative` skips the drop).
//!
//! Layout (for speed, the table sees millions of events a second): flows live in a dense `Vec`
//! (iteration is a linear sweep) with an id (`flow_id`) -> slot index beside it; each flow carries its
//! host's slot (counted by the slot, so a slot is freed only when no flow carries it, and reused
//! from a free list) and its protocol, so aggregation indexes arrays instead of hashing; a refresh
//! stamps the flows it sees with a generation instead of counting misses in a separate pass.

use crate::ndpi::{self, Protocol, ProtocolTotals};
use crate::records::{self, FlSock, COMM_LEN};
use std::{
    collections::{hash_map::Entry, HashMap, HashSet},
    hash::{BuildHasherDefault, Hasher},
    net::{IpAddr, SocketAddr},
};

/// A small, fast hasher for the table's keys: socket cookies (kernel-chosen), cgroup ids and
/// local addresses. It is NOT resistant to hash flooding, which is acceptable here: cookies come
/// from the kernel, and only root can create the cgroups and local addresses that make the other
/// keys, and every map it backs is bounded (`max_flows`, `max_hosts`, pruned cgroups).
/// Per word: rotate, xor, multiply (FxHash's round); at the end a folded 64x64->128 multiply, so
/// the low bits (bucket index) and the high bits (hashbrown's tag) both depend on every input bit.
#[derive(Debug, Default, Clone, Copy)]
pub struct FastHasher(u64);

impl FastHasher {
    const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;
    const FOLD: u64 = 0x9e_37_79_b9_7f_4a_7c_15;

    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(Self::SEED);
    }
}

impl Hasher for FastHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
    }

    #[inline]
    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    #[inline]
    fn write_u16(&mut self, n: u16) {
        self.add(u64::from(n));
    }

    #[inline]
    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    #[inline]
    fn write_u128(&mut self, n: u128) {
        self.add(n as u64);
        self.add((n >> 64) as u64);
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        let m = u128::from(self.0) * u128::from(Self::FOLD);
        (m as u64) ^ ((m >> 64) as u64)
    }
}

/// `BuildHasher` of [`FastHasher`].
pub type FastState = BuildHasherDefault<FastHasher>;
/// A `HashMap` with [`FastHasher`].
pub type FastMap<K, V> = HashMap<K, V, FastState>;
/// A `HashSet` with [`FastHasher`].
pub type FastSet<K> = HashSet<K, FastState>;

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

    /// Its application protocol (as `ndpi::infer`, computed when the flow's ports or command
    /// change rather than at every look).
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// Its host's slot among [`FlowTable::host_entries`] (`other`'s when it was folded).
    pub(crate) fn host_slot(&self) -> usize {
        self.host as usize
    }

    fn classify(&mut self) {
        self.protocol = ndpi::classify(self.proto, self.server_port(), &self.comm);
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
    pub ndpi: ProtocolTotals,
}

/// One host series: its key, its cumulative totals and what keeps it alive.
#[derive(Debug, Clone, Default)]
pub(crate) struct HostEntry {
    /// The host (meaningless while the slot is free).
    pub(crate) key: Option<HostKey>,
    /// Cumulative counters of its ended flows.
    pub(crate) totals: HostTotals,
    /// Active flows that carry this slot: a slot is freed only when none does.
    flows: u32,
    /// A flow of it ended (or moved away), or the series was made, since the last refresh.
    touched: bool,
    /// The last refresh at which it had active flows or was touched.
    last_active_ns: u64,
}

/// The hosts with series: slots that flows carry, an index by key, and a free list. A host
/// without active flows for `ttl_ns` (at refreshes) is removed, its counters dropped, and its
/// slot reused by the next new host: `max_hosts` bounds the named hosts alive at once.
#[derive(Debug)]
struct HostTable {
    max_hosts: usize,
    ttl_ns: u64,
    index: FastMap<HostKey, u32>,
    entries: Vec<HostEntry>,
    /// Free slots of `entries` (`key: None`), reused last freed first.
    free: Vec<u32>,
    /// Live named hosts (`other` excluded).
    named: usize,
    /// The slot of `HostKey::Other`, while it exists.
    other: Option<u32>,
}

impl HostTable {
    fn new(max_hosts: usize, ttl_ns: u64) -> HostTable {
        HostTable {
            max_hosts,
            ttl_ns,
            index: FastMap::default(),
            entries: Vec::new(),
            free: Vec::new(),
            named: 0,
            other: None,
        }
    }

    /// Whether `max_hosts` named hosts are alive (until some expire).
    fn full(&self) -> bool {
        self.named >= self.max_hosts
    }

    fn lookup(&self, ip: IpAddr) -> Option<u32> {
        self.index.get(&HostKey::Addr(ip)).copied()
    }

    /// A new series in a free slot (or a new one).
    fn push(&mut self, key: HostKey) -> u32 {
        let entry = HostEntry {
            key: Some(key),
            touched: true,
            ..HostEntry::default()
        };
        let slot = match self.free.pop() {
            Some(slot) => {
                self.entries[slot as usize] = entry;
                slot
            }
            None => {
                self.entries.push(entry);
                (self.entries.len() - 1) as u32
            }
        };
        self.index.insert(key, slot);
        match key {
            HostKey::Addr(_) => self.named += 1,
            HostKey::Other => self.other = Some(slot),
        }
        slot
    }

    /// The slot of `other`, created when missing.
    fn other_slot(&mut self) -> u32 {
        match self.other {
            Some(slot) => slot,
            None => self.push(HostKey::Other),
        }
    }

    /// The slot of a local address's series, made while there is room, else `other`'s. The
    /// caller takes a reference on it for its flow (`entries[slot].flows += 1`).
    #[inline]
    fn assign(&mut self, ip: IpAddr) -> u32 {
        if let Some(slot) = self.lookup(ip) {
            return slot;
        }
        if self.full() {
            return self.other_slot();
        }
        self.push(HostKey::Addr(ip))
    }

    /// A flow leaves the slot (it ended or moved to another address).
    #[inline]
    fn release(&mut self, slot: u32) -> &mut HostEntry {
        let entry = &mut self.entries[slot as usize];
        entry.flows -= 1;
        entry.touched = true;
        entry
    }

    /// At the start of a refresh, before its snapshot names new hosts: hosts without active
    /// flows, untouched since the last refresh and inactive for longer than the TTL, are
    /// removed and their slots freed.
    fn expire(&mut self, now_ns: u64) {
        for (slot, entry) in self.entries.iter_mut().enumerate() {
            let Some(key) = entry.key else { continue };
            if entry.flows == 0
                && !entry.touched
                && now_ns.saturating_sub(entry.last_active_ns) > self.ttl_ns
            {
                self.index.remove(&key);
                match key {
                    HostKey::Addr(_) => self.named -= 1,
                    HostKey::Other => self.other = None,
                }
                *entry = HostEntry::default();
                self.free.push(slot as u32);
            }
        }
    }

    /// At the end of a refresh: hosts with active flows, or whose flows started or ended since
    /// the last refresh (this one included), are active now.
    fn mark_active(&mut self, now_ns: u64) {
        for entry in &mut self.entries {
            if entry.flows > 0 || entry.touched {
                entry.touched = false;
                entry.last_active_ns = now_ns;
            }
        }
    }
}

/// The cumulative totals per host, as a read-only map.
#[derive(Debug, Clone, Copy)]
pub struct Hosts<'a> {
    table: &'a HostTable,
}

impl<'a> Hosts<'a> {
    /// The totals of a host.
    pub fn get(&self, key: &HostKey) -> Option<&'a HostTotals> {
        let slot = *self.table.index.get(key)?;
        Some(&self.table.entries[slot as usize].totals)
    }

    /// Whether the host has a series.
    pub fn contains_key(&self, key: &HostKey) -> bool {
        self.table.index.contains_key(key)
    }

    /// Every host with its totals, in slot order (a new host takes a freed slot).
    pub fn iter(&self) -> impl Iterator<Item = (&'a HostKey, &'a HostTotals)> + 'a {
        self.table
            .entries
            .iter()
            .filter_map(|e| Some((e.key.as_ref()?, &e.totals)))
    }

    /// Every host, in slot order.
    pub fn keys(&self) -> impl Iterator<Item = &'a HostKey> + 'a {
        self.iter().map(|(k, _)| k)
    }

    /// Number of hosts (`other` included when it exists).
    pub fn len(&self) -> usize {
        self.table.index.len()
    }

    /// Whether there is no host.
    pub fn is_empty(&self) -> bool {
        self.table.index.is_empty()
    }
}

impl std::ops::Index<&HostKey> for Hosts<'_> {
    type Output = HostTotals;

    /// The totals of a host; panics when it has none, like a map's index.
    fn index(&self, key: &HostKey) -> &HostTotals {
        self.get(key)
            .unwrap_or_else(|| panic!("no host {key} in the table"))
    }
}

/// Limits of the table.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most flows held at once.
    pub max_flows: usize,
    /// Most hosts with their own series at once; the rest fold into `other`.
    pub max_hosts: usize,
    /// A host without active flows for this long (ns, at refreshes) loses its series.
    pub host_ttl_ns: u64,
    /// A UDP flow idle this long (ns) ends.
    pub udp_idle_timeout_ns: u64,
}

/// The flow table and the cumulative counters.
#[derive(Debug)]
pub struct FlowTable {
    /// Cookie -> slot in `store.flows`.
    index: FastMap<u64, u32>,
    store: Store,
    /// Flows opened since start (the `iface:new_flows` counter).
    pub new_flows: u64,
    /// Flows the table had no room for.
    pub flows_evicted: u64,
    /// Connections that failed (SYN_SENT -> CLOSE).
    pub connect_failed: u64,
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
    /// Listening ports per network namespace, for flows whose role the kernel did not see.
    listening: HashMap<u32, Vec<u16>>,
    /// Cumulative counters per socket cgroup, for container series.
    cgroups: FastMap<u64, CgroupTotals>,
    /// Cgroups whose counters moved since the last `take_touched_cgroups`.
    touched: FastSet<u64>,
    /// Refreshes so far (wrapping): a flow `seen` n generations ago missed n snapshots.
    generation: u32,
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
        let host = self.hosts.assign(local.ip());
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
                Role::Client => cg.new_client += 1,
                Role::Server => cg.new_server += 1,
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
                let host = self.hosts.assign(local.ip());
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
    fn end(&mut self, index: &mut FastMap<u64, u32>, slot: u32) {
        let flow = self.flows.swap_remove(slot as usize);
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
        cg.bytes_sent += flow.bytes_sent;
        cg.bytes_rcvd += flow.bytes_rcvd;
        cg.retrans += u64::from(flow.retrans);
    }
}

// `prefetch` asks for a flow's second cache line too.
const _: () = assert!(std::mem::size_of::<Flow>() > 64);

/// Asks the CPU to start loading `flow`'s first two cache lines (a hint: no fault, no effect on
/// results).
#[inline]
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
                hosts: HostTable::new(limits.max_hosts, limits.host_ttl_ns),
                listening: HashMap::new(),
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

    /// Records the listening ports of a network namespace (from the start-up scan), used to tell
    /// the role of sockets that predate flowlens.
    pub fn set_listening(&mut self, netns: u32, mut ports: Vec<u16>) {
        ports.sort_unstable();
        ports.dedup();
        self.store.listening.insert(netns, ports);
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

    /// The cumulative counters of a cgroup (zero when it has none).
    pub fn cgroup_totals(&self, cgroup_id: u64) -> CgroupTotals {
        self.store
            .cgroups
            .get(&cgroup_id)
            .copied()
            .unwrap_or_default()
    }

    /// Keeps the cumulative counters of the cgroups `keep` says are still wanted (those of
    /// containers that still have series); the rest are dropped, so the map stays bounded.
    pub fn retain_cgroups(&mut self, keep: impl Fn(u64) -> bool) {
        self.store.cgroups.retain(|id, _| keep(*id));
    }

    /// The cgroups whose cumulative counters moved since the last call (flows that started or
    /// ended, however short they were).
    pub fn take_touched_cgroups(&mut self) -> HashSet<u64> {
        std::mem::take(&mut self.store.touched)
            .into_iter()
            .collect()
    }

    /// Marks cgroups as touched again, for the next `take_touched_cgroups` (cgroups a gather
    /// could not resolve yet).
    pub fn touch_cgroups(&mut self, ids: impl IntoIterator<Item = u64>) {
        self.store.touched.extend(ids);
    }

    /// Number of cgroups with cumulative counters.
    pub fn cgroups_len(&self) -> usize {
        self.store.cgroups.len()
    }

    fn end(&mut self, id: u64) {
        if let Some(slot) = self.index.remove(&id) {
            self.store.end(&mut self.index, slot);
        }
    }

    /// Applies one kernel event.
    pub fn apply(&mut self, update: Update, cookie: u64, sock: &FlSock) {
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
                self.store.end(&mut self.index, slot);
            }
            Update::ConnectFailed => self.connect_failed += 1,
        }
    }

    /// Applies one ring-buffer record; a record of an unknown kind is ignored.
    pub fn apply_event(&mut self, event: &records::FlEvent) {
        let update = match event.kind {
            records::EV_OPEN => Update::Open,
            records::EV_CLOSE => Update::Close,
            records::EV_CONNECT_FAILED => Update::ConnectFailed,
            _ => return,
        };
        self.apply(update, event.cookie, &event.sock);
    }

    /// Applies a snapshot of the kernel's `socks` map: every live socket with its counters.
    /// Flows missing from two consecutive snapshots ended without a close event reaching us (lost)
    /// and are folded; UDP flows idle longer than the timeout end. First, hosts without active
    /// flows since `host_ttl_ns` before `now_ns` lose their series. Returns the cookies to delete
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
        let mut entries = snapshot.into_iter();
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
                key == Some(HostKey::Addr(flow.local.ip())) || key == Some(HostKey::Other),
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
            base_retrans: 0,
            sk: 0,
            base_acked: 0,
            base_rcvd: 0,
        }
    }

    fn limits() -> Limits {
        Limits {
            max_flows: 100,
            max_hosts: 10,
            host_ttl_ns: 300_000_000_000,
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
    fn a_key_reused_by_a_later_socket_names_a_new_flow() {
        // Before 5.12 a socket's key may be its address, which a later socket reuses: a client
        // closes, a server socket takes its address, and the map shows the server before the
        // client's close record is applied. Each keeps its own role and bytes.
        let mut t = FlowTable::new(limits());
        let mut client = sock(records::ROLE_CLIENT, 6, "10.0.0.1:40000", "10.0.0.2:80");
        client.first_ns = 100;
        t.refresh([(7, &client)], 150);
        let mut server = sock(records::ROLE_SERVER, 6, "10.0.0.2:80", "10.0.0.1:40001");
        server.first_ns = 200;
        server.bytes_rcvd = 10;
        t.refresh([(7, &server)], 250);
        client.bytes_sent = 5;
        t.apply(Update::Close, 7, &client);
        assert_eq!(t.len(), 1);
        assert_eq!(totals(&t, "10.0.0.1").total_client, 1);
        assert_eq!(totals(&t, "10.0.0.1").bytes_sent, 5);
        assert_eq!(totals(&t, "10.0.0.2").total_server, 1);
        let flow = t.flows().next().unwrap();
        assert_eq!(
            (flow.role, flow.bytes_rcvd, flow.cookie),
            (Role::Server, 10, 7)
        );
    }

    #[test]
    fn a_snapshot_naming_a_socket_twice_makes_one_flow() {
        // A batch read of a changing map may return an entry twice, within one chunk of the
        // refresh or across two.
        let mut t = FlowTable::new(limits());
        let socks: Vec<(u64, FlSock)> = (0..40u16)
            .map(|i| {
                let local = format!("10.0.0.1:{}", 40000 + i);
                (
                    u64::from(i) + 1,
                    sock(records::ROLE_CLIENT, 6, &local, "10.0.0.2:80"),
                )
            })
            .collect();
        let twice = [0, 3, 3, 1, 30, 2, 0, 39, 30, 17];
        let snapshot = twice
            .into_iter()
            .chain(0..40)
            .map(|i| (socks[i].0, &socks[i].1));
        t.refresh(snapshot, 10);
        assert_eq!((t.len(), t.new_flows), (40, 40));
        assert_eq!(totals(&t, "10.0.0.1").total_client, 40);
        let again = twice.iter().map(|&i| (socks[i].0, &socks[i].1));
        t.refresh(again, 20);
        assert_eq!(
            (t.len(), t.new_flows),
            (40, 40),
            "the others missed one snapshot only"
        );
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

    const SEC: u64 = 1_000_000_000;

    /// A TCP client flow from `10.x.y.z:40000` for address number `n`.
    fn client_of(n: u32) -> FlSock {
        let ip = std::net::Ipv4Addr::from(0x0a00_0000 | n);
        sock(
            records::ROLE_CLIENT,
            6,
            &format!("{ip}:40000"),
            "192.0.2.1:443",
        )
    }

    fn addr(n: u32) -> HostKey {
        HostKey::Addr(IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 | n)))
    }

    fn ttl_limits(max_hosts: usize, ttl_secs: u64) -> Limits {
        Limits {
            max_hosts,
            host_ttl_ns: ttl_secs * SEC,
            ..limits()
        }
    }

    #[test]
    fn a_host_expires_after_the_ttl_after_its_last_flow_not_before() {
        let mut t = FlowTable::new(ttl_limits(10, 10));
        let mut s = client_of(1);
        t.refresh([(1, &s)], SEC);
        s.bytes_sent = 70;
        t.apply(Update::Close, 1, &s);
        // The gather that sees the close is the host's last active one.
        t.refresh([], 2 * SEC);
        for now in [3 * SEC, 12 * SEC] {
            t.refresh([], now);
            let h = &t.hosts()[&addr(1)];
            assert_eq!((h.bytes_sent, h.total_client), (70, 1), "kept at {now}");
        }
        t.refresh([], 12 * SEC + 1);
        assert!(t.hosts().is_empty(), "gone once the TTL has passed");
        // The address comes back: a new series, counting from zero.
        t.refresh([(2, &client_of(1))], 13 * SEC);
        assert_eq!(t.hosts()[&addr(1)].total_client, 1);
    }

    #[test]
    fn a_host_with_an_active_flow_never_expires() {
        let mut t = FlowTable::new(ttl_limits(10, 1));
        let s = client_of(1);
        let other = client_of(2);
        t.refresh([(1, &s), (2, &other)], SEC);
        t.apply(Update::Close, 2, &other);
        for k in 2..100 {
            t.refresh([(1, &s)], k * 10 * SEC);
            assert!(t.hosts().contains_key(&addr(1)), "at {k}");
        }
        assert!(!t.hosts().contains_key(&addr(2)));
        // An idle UDP flow keeps its host until the flow itself expires.
        let mut t = FlowTable::new(ttl_limits(10, 1));
        let udp = sock(records::ROLE_CLIENT, 17, "10.0.0.9:5000", "10.0.0.2:53");
        t.apply(Update::Open, 3, &udp);
        t.refresh([(3, &udp)], 30 * SEC);
        assert_eq!(t.len(), 1);
        assert!(t
            .hosts()
            .contains_key(&HostKey::Addr("10.0.0.9".parse().unwrap())));
        assert_eq!(t.refresh([(3, &udp)], 61 * SEC + 2), vec![3]);
        t.refresh([], 62 * SEC + 3);
        assert!(t.hosts().is_empty());
    }

    #[test]
    fn freed_host_slots_are_reused_and_flows_keep_theirs() {
        let mut t = FlowTable::new(ttl_limits(3, 1));
        let (a, b, c) = (client_of(1), client_of(2), client_of(3));
        t.refresh([(1, &a), (2, &b), (3, &c)], SEC);
        t.apply(Update::Close, 2, &b);
        t.apply(Update::Close, 3, &c);
        t.refresh([(1, &a)], 2 * SEC);
        t.refresh([(1, &a)], 4 * SEC);
        assert_eq!(t.hosts().len(), 1);
        // Two new addresses take the two freed slots: no new slot.
        let (d, e) = (client_of(4), client_of(5));
        t.refresh([(1, &a), (4, &d), (5, &e)], 5 * SEC);
        assert_eq!((t.host_entries().len(), t.hosts().len()), (3, 3));
        t.assert_hosts_consistent();
        // Each ended flow folds into its own host.
        let mut a_end = a;
        a_end.bytes_sent = 11;
        let mut d_end = d;
        d_end.bytes_sent = 44;
        t.apply(Update::Close, 1, &a_end);
        t.apply(Update::Close, 4, &d_end);
        assert_eq!(t.hosts()[&addr(1)].bytes_sent, 11);
        assert_eq!(t.hosts()[&addr(4)].bytes_sent, 44);
        assert_eq!(t.hosts()[&addr(5)].bytes_sent, 0);
    }

    #[test]
    fn max_hosts_bounds_the_hosts_alive_not_every_address_seen() {
        let mut t = FlowTable::new(ttl_limits(2, 5));
        let (a, b, c) = (client_of(1), client_of(2), client_of(3));
        t.refresh([(1, &a), (2, &b), (3, &c)], SEC);
        assert!(t.hosts().contains_key(&addr(1)) && t.hosts().contains_key(&addr(2)));
        assert_eq!(t.hosts()[&HostKey::Other].total_client, 1, "c folded");
        t.apply(Update::Close, 1, &a);
        // Within the TTL a's series lives on: d folds too.
        let d = client_of(4);
        t.refresh([(2, &b), (3, &c), (4, &d)], 2 * SEC);
        assert_eq!(t.hosts()[&HostKey::Other].total_client, 2);
        t.refresh([(2, &b), (3, &c), (4, &d)], 8 * SEC);
        assert!(!t.hosts().contains_key(&addr(1)));
        // a expired: the next new address has a series of its own.
        let e = client_of(5);
        t.refresh([(2, &b), (3, &c), (4, &d), (5, &e)], 9 * SEC);
        assert!(t.hosts().contains_key(&addr(5)));
        assert_eq!(t.hosts()[&HostKey::Other].total_client, 2);
        t.assert_hosts_consistent();
        // `other` expires like any host once nothing is folded into it.
        t.apply(Update::Close, 3, &c);
        t.apply(Update::Close, 4, &d);
        t.refresh([(2, &b), (5, &e)], 10 * SEC);
        assert!(t.hosts().contains_key(&HostKey::Other));
        t.refresh([(2, &b), (5, &e)], 16 * SEC);
        assert!(!t.hosts().contains_key(&HostKey::Other));
        assert_eq!(t.hosts().len(), 2);
    }

    #[test]
    fn churning_addresses_get_series_again_once_the_old_ones_expire() {
        // Issue 11: pod addresses churn for weeks. 20,000 distinct local addresses, 1,000
        // series at most: a burst fills the table, then addresses keep arriving (20 per gather,
        // one 5-gather flow each). Once the burst's hosts expired, no live address folds.
        const MAX: usize = 1_000;
        const TTL: u64 = 30;
        const PER_GATHER: u32 = 20;
        const LIFETIME: u64 = 5;
        let mut t = FlowTable::new(Limits {
            max_flows: 4_096,
            ..ttl_limits(MAX, TTL)
        });
        let mut live: Vec<(u64, FlSock, u64)> = Vec::new(); // (cookie, sock, closes at gather)
        let mut next: u32 = 1;
        // Gather 0: the burst, MAX addresses, closed before gather 1.
        for _ in 0..MAX {
            live.push((u64::from(next), client_of(next), 0));
            next += 1;
        }
        let mut folded_at_open = 0u32;
        let mut gather = 0u64;
        while next <= 20_000 || !live.is_empty() {
            if gather > 0 && next <= 20_000 {
                for _ in 0..PER_GATHER {
                    live.push((u64::from(next), client_of(next), gather + LIFETIME));
                    next += 1;
                }
            }
            let snapshot: Vec<(u64, &FlSock)> = live.iter().map(|(c, s, _)| (*c, s)).collect();
            t.refresh(snapshot, gather * SEC);
            t.assert_hosts_consistent();
            // The flows new in this gather: folded only while the burst's hosts live.
            let new_ones = live.iter().filter(|(_, _, end)| *end == gather + LIFETIME);
            for (cookie, s, _) in new_ones.filter(|_| gather > 0) {
                let flow = t.flows().find(|f| f.cookie == *cookie).unwrap();
                let named = t.host_entries()[flow.host_slot()].key != Some(HostKey::Other);
                if !named {
                    folded_at_open += 1;
                    assert!(gather <= TTL + 1, "{} folded at gather {gather}", s.local());
                }
            }
            // The burst's hosts were last active at gather 1 (which saw their close) and are
            // gone at the start of gather TTL + 2; the last folded flows ended after gather
            // TTL + 1 + LIFETIME, and `other` itself expires TTL + 1 gathers after that.
            if gather > TTL + 1 + LIFETIME {
                assert!(t
                    .flows()
                    .all(|f| Some(f.host_slot()) != t.other_host_slot()));
            }
            if gather > 2 * (TTL + 1) + LIFETIME {
                assert!(!t.hosts().contains_key(&HostKey::Other), "at {gather}");
            }
            if gather % 10 == 5 {
                // What `series_dropped` counts: folds only, not expiries.
                let folded = crate::metrics::FlowValues::from_table(&t).hosts_folded;
                let want = if gather <= TTL + 1 + LIFETIME {
                    t.flows()
                        .filter(|f| Some(f.host_slot()) == t.other_host_slot())
                        .count()
                } else {
                    0
                };
                assert_eq!(folded, want as u64, "at {gather}");
                assert!(want > 0 || gather > TTL, "at {gather}");
            }
            let named = t.hosts().keys().filter(|k| **k != HostKey::Other).count();
            assert!(named <= MAX && t.host_entries().len() <= MAX + 1, "{named}");
            live.retain(|(cookie, s, end)| {
                let ends = *end == gather;
                if ends {
                    t.apply(Update::Close, *cookie, s);
                }
                !ends
            });
            gather += 1;
        }
        assert_eq!(
            folded_at_open,
            (TTL + 1) as u32 * PER_GATHER,
            "the arrivals while the burst's series lived folded, and only those"
        );
        assert_eq!(t.new_flows, 20_000);
        // Idle long enough, every series ends: the last closes make their hosts active at
        // the next refresh, and the TTL counts from there.
        t.refresh([], gather * SEC);
        t.refresh([], (gather + TTL) * SEC);
        assert!(!t.hosts().is_empty());
        t.refresh([], (gather + TTL) * SEC + 1);
        assert!(t.hosts().is_empty());
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

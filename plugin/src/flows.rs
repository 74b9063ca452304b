//! The flow table: one entry per socket, fed by kernel events and map snapshots, and the
//! cumulative counters that closed flows fold into. Pure: no I/O, no aya; tested with plain values.
//!
//! Counters never go backwards: a flow's bytes are counted from the active table while it lives,
//! and folded into its host's cumulative totals when it closes or expires, in the same gather.
//!
//! Layout (for speed, the table sees millions of events a second): flows live in a dense `Vec`
//! (iteration is a linear sweep) with an id (`flow_id`) -> slot index beside it; each flow carries its
//! host's slot and its protocol, so aggregation indexes arrays instead of hashing; a refresh
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

/// `Flow::host` of a flow whose local address has no series of its own, and never will: it was
/// absent when `max_hosts` named hosts already existed (hosts are never removed).
const HOST_OTHER: u32 = u32::MAX;
/// `Flow::host` of a flow whose local address changed to one without a series while there was
/// still room: looked up when needed (rare: UDP sockets that connect after their first datagram).
const HOST_UNRESOLVED: u32 = u32::MAX - 1;

/// Where a flow's values go among the host series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HostSlot {
    /// The named host at this slot of [`FlowTable::host_entries`].
    Named(usize),
    /// `host=other`.
    Other,
    /// Look the local address up.
    Unresolved,
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
    /// Its host's slot, or `HOST_OTHER` / `HOST_UNRESOLVED`; kept in step with `local`.
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

    /// Where its values go among the host series.
    pub(crate) fn host_slot(&self) -> HostSlot {
        match self.host {
            HOST_OTHER => HostSlot::Other,
            HOST_UNRESOLVED => HostSlot::Unresolved,
            slot => HostSlot::Named(slot as usize),
        }
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

/// The hosts with series: dense slots (never removed, so a flow can keep its host's slot) and an
/// index by key.
#[derive(Debug)]
struct HostTable {
    max_hosts: usize,
    index: FastMap<HostKey, u32>,
    entries: Vec<(HostKey, HostTotals)>,
    /// The slot of `HostKey::Other`, once it exists.
    other: Option<u32>,
}

impl HostTable {
    fn new(max_hosts: usize) -> HostTable {
        HostTable {
            max_hosts,
            index: FastMap::default(),
            entries: Vec::new(),
            other: None,
        }
    }

    /// Whether `max_hosts` named hosts exist (for good: hosts are never removed).
    fn full(&self) -> bool {
        self.entries.len() - usize::from(self.other.is_some()) >= self.max_hosts
    }

    fn lookup(&self, ip: IpAddr) -> Option<u32> {
        self.index.get(&HostKey::Addr(ip)).copied()
    }

    fn push(&mut self, key: HostKey) -> u32 {
        let slot = self.entries.len() as u32;
        self.entries.push((key, HostTotals::default()));
        self.index.insert(key, slot);
        slot
    }

    /// The slot of `other`, created when missing.
    fn other_slot(&mut self) -> u32 {
        match self.other {
            Some(slot) => slot,
            None => {
                let slot = self.push(HostKey::Other);
                self.other = Some(slot);
                slot
            }
        }
    }

    /// The host of a local address, given a series while there is room (`FlowTable::host_key`):
    /// its slot, or `HOST_OTHER` (then `other` exists).
    fn assign(&mut self, ip: IpAddr) -> u32 {
        if let Some(slot) = self.lookup(ip) {
            return slot;
        }
        if self.full() {
            self.other_slot();
            return HOST_OTHER;
        }
        self.push(HostKey::Addr(ip))
    }

    /// `Flow::host` for an address that replaces a flow's, without creating a series.
    fn peek(&self, ip: IpAddr) -> u32 {
        match self.lookup(ip) {
            Some(slot) => slot,
            None if self.full() => HOST_OTHER,
            None => HOST_UNRESOLVED,
        }
    }

    /// The totals an ended flow folds into (creating its series as `host_key` would).
    fn totals_mut(&mut self, flow: &Flow) -> &mut HostTotals {
        let slot = match flow.host {
            HOST_OTHER => self.other_slot(),
            HOST_UNRESOLVED => match self.assign(flow.local.ip()) {
                HOST_OTHER => self.other_slot(),
                slot => slot,
            },
            slot => slot,
        };
        &mut self.entries[slot as usize].1
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
        Some(&self.table.entries[slot as usize].1)
    }

    /// Whether the host has a series.
    pub fn contains_key(&self, key: &HostKey) -> bool {
        self.table.index.contains_key(key)
    }

    /// Every host with its totals, in the order they got their series.
    pub fn iter(&self) -> impl Iterator<Item = (&'a HostKey, &'a HostTotals)> + 'a {
        self.table.entries.iter().map(|(k, t)| (k, t))
    }

    /// Every host, in the order they got their series.
    pub fn keys(&self) -> impl Iterator<Item = &'a HostKey> + 'a {
        self.table.entries.iter().map(|(k, _)| k)
    }

    /// Number of hosts (`other` included when it exists).
    pub fn len(&self) -> usize {
        self.table.entries.len()
    }

    /// Whether there is no host.
    pub fn is_empty(&self) -> bool {
        self.table.entries.is_empty()
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
    /// Most distinct hosts with their own series; the rest fold into `other`.
    pub max_hosts: usize,
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
        let totals = match host {
            HOST_OTHER => self.hosts.totals_mut(&flow),
            slot => &mut self.hosts.entries[slot as usize].1,
        };
        match role {
            Role::Client => totals.total_client += 1,
            Role::Server => totals.total_server += 1,
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
                flow.host = self.hosts.peek(local.ip());
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
    /// folds its counters into its host's and cgroup's totals.
    fn end(&mut self, index: &mut FastMap<u64, u32>, slot: u32) {
        let flow = self.flows.swap_remove(slot as usize);
        if let Some(moved) = self.flows.get(slot as usize) {
            *index.get_mut(&moved.id).expect("indexed") = slot;
        }
        let totals = self.hosts.totals_mut(&flow);
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
                hosts: HostTable::new(limits.max_hosts),
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

    /// The hosts with series by slot (`Flow`'s `HostSlot::Named`), for aggregation.
    pub(crate) fn host_entries(&self) -> &[(HostKey, HostTotals)] {
        &self.store.hosts.entries
    }

    /// The slot of `HostKey::Other` among `host_entries`, when it exists.
    pub(crate) fn other_host_slot(&self) -> Option<usize> {
        self.store.hosts.other.map(|s| s as usize)
    }

    /// The slot of a local address among `host_entries`, when it has a series.
    pub(crate) fn host_slot_of(&self, ip: IpAddr) -> Option<usize> {
        self.store.hosts.lookup(ip).map(|s| s as usize)
    }

    /// Records the listening ports of a network namespace (from the start-up scan), used to tell
    /// the role of sockets that predate flowlens.
    pub fn set_listening(&mut self, netns: u32, mut ports: Vec<u16>) {
        ports.sort_unstable();
        ports.dedup();
        self.store.listening.insert(netns, ports);
    }

    /// The series key for a local address, folding into `other` beyond `max_hosts`.
    pub fn host_key(&mut self, ip: IpAddr) -> HostKey {
        match self.store.hosts.assign(ip) {
            HOST_OTHER => HostKey::Other,
            _ => HostKey::Addr(ip),
        }
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
    /// and are folded; UDP flows idle longer than the timeout end. Returns the cookies to delete
    /// from the kernel map (expired UDP flows).
    pub fn refresh<'a>(
        &mut self,
        snapshot: impl IntoIterator<Item = (u64, &'a FlSock)>,
        now_ns: u64,
    ) -> Vec<u64> {
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
        expired.into_iter().map(|(cookie, _)| cookie).collect()
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

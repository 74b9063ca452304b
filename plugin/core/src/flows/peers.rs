//! Peer series: whom each container's flows talk to (`container:peers`), at most
//! `max_peers_per_container` named peers per container (its owner: every cgroup of a container
//! counts in one budget and one set of series) plus its `other`, each living
//! `series_ttl_secs` after its last flow. Flows carry their peer's slot as they carry their
//! host's (so ending a flow folds it with an array index, no hashing); a flow gets its slot at
//! the first gather that sees it, when the peers new in the interval are ranked by bytes and the
//! busiest take the free places. Flows that end before any gather saw them (and failed
//! connects) wait for it in a bounded queue.
#![forbid(unsafe_code)]

use super::{Flow, Proto, Role};
use crate::hash::{FastMap, FastSet};
use std::net::{IpAddr, SocketAddr};

/// `Flow::peer` of a flow no gather has looked at yet.
pub(crate) const UNASSIGNED: u32 = u32::MAX;
/// `Flow::peer` of a flow whose cgroup has no series (a host process, a pod's sandbox).
pub(crate) const NO_SERIES: u32 = u32::MAX - 1;

/// Whom a flow talks to: the key of a peer series within its container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerKey {
    /// The flow's role.
    pub role: Role,
    /// Its transport.
    pub proto: Proto,
    /// A client's remote address; None for a server (every client of a local port is one peer).
    pub remote: Option<IpAddr>,
    /// The server's port: the remote port of a client, the local port of a server.
    pub port: u16,
    /// A client flow whose destination DNAT rewrote (a Service's virtual IP): the endpoint that
    /// answered.
    pub backend: Option<SocketAddr>,
}

impl PeerKey {
    /// The key of a flow of `role` between `local` and `remote`.
    pub fn of(
        role: Role,
        proto: Proto,
        local: SocketAddr,
        remote: SocketAddr,
        backend: Option<SocketAddr>,
    ) -> PeerKey {
        match role {
            Role::Client => PeerKey {
                role,
                proto,
                remote: Some(remote.ip()),
                port: remote.port(),
                backend,
            },
            Role::Server => PeerKey {
                role,
                proto,
                remote: None,
                port: local.port(),
                backend: None,
            },
        }
    }

    /// The endpoint as written in the `peer` tag: `10.0.0.1:443`, `[fd00::1]:443`, or `*:8080`
    /// for a server port (any client).
    pub fn endpoint(&self) -> String {
        let mut out = String::new();
        self.write_endpoint(&mut out);
        out
    }

    /// Appends [`endpoint`](Self::endpoint) to `out`.
    pub(crate) fn write_endpoint(&self, out: &mut String) {
        match self.remote {
            Some(ip) => super::write_socket_addr(out, SocketAddr::new(ip, self.port)),
            None => {
                out.push_str("*:");
                super::write_u64(out, u64::from(self.port));
            }
        }
    }
}

/// Cumulative counters of one peer series.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerTotals {
    /// Flows counted in the series (established before flowlens started or after).
    pub connections: u64,
    /// Payload bytes sent.
    pub bytes_sent: u64,
    /// Payload bytes received.
    pub bytes_rcvd: u64,
    /// TCP connections that failed (every reason of `Failures`).
    pub failures: u64,
}

impl PeerTotals {
    /// Adds `other`'s counts.
    pub fn add(&mut self, other: &PeerTotals) {
        self.connections += other.connections;
        self.bytes_sent += other.bytes_sent;
        self.bytes_rcvd += other.bytes_rcvd;
        self.failures += other.failures;
    }
}

/// One peer series of one gather.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerValue {
    /// The owner whose flows these are (`Scope::Series`: its container's series).
    pub owner: u64,
    /// The peer; None for the owner's `other`.
    pub key: Option<PeerKey>,
    /// Its active flows now (gauge).
    pub active: u64,
    /// Counters: its ended flows' and its active flows' values.
    pub totals: PeerTotals,
    /// Sum of the RTT samples (srtt, µs) of this interval: its active TCP flows' and those
    /// that ended since the last gather.
    pub(crate) rtt_sum_us: u64,
    /// Number of those samples.
    pub(crate) rtt_samples: u64,
}

/// What a gather knows of a cgroup, for its flows' peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// A cgroup of a container with series, named by its owner (one number per container
    /// series, whichever of its cgroups a flow is in): its flows get peer slots in the owner's
    /// budget.
    Series(u64),
    /// No series (a host process, a sandbox): its flows never get one.
    NoSeries,
    /// Not resolved yet (met between two walks of the cgroup tree): asked again next gather.
    NotYet,
}

/// A peer series: (owner, peer), the peer None for the owner's `other`.
type SeriesId = (u64, Option<PeerKey>);
/// Ended flows of one peer of one cgroup, merged in the queue: (cgroup, peer).
type QueueId = (u64, Option<PeerKey>);

/// A peer slot.
#[derive(Debug, Clone, Default)]
struct PeerEntry {
    /// Its series; None: free.
    id: Option<SeriesId>,
    /// Active flows carrying this slot.
    flows: u32,
    /// Counters of its ended flows.
    totals: PeerTotals,
    /// RTT samples of the flows that ended since the last gather (sum in µs, count).
    ended_rtt: (u64, u64),
    /// The last gather at which it had a flow, or one ended into it.
    last_active_ns: u64,
    /// A flow ended into it since the last gather.
    touched: bool,
}

/// A flow that ended before a gather gave it a slot, or a failed connect.
#[derive(Debug, Clone)]
struct Ended {
    cgroup_id: u64,
    role: Role,
    proto: Proto,
    local: SocketAddr,
    remote: SocketAddr,
    totals: PeerTotals,
    /// Its RTT samples (srtt, µs): sum and count (several when flows of one peer were merged).
    rtt: (u64, u64),
    /// Gathers that found its cgroup `Scope::NotYet`.
    deferred: u8,
}

/// Whether a client flow to `remote` may have a DNAT backend to look up: a connection to a
/// loopback address never left its host's stack through the node's NAT (kube-proxy rewrites
/// Service and node addresses), so neither its lookup nor its own queue entry is needed.
fn may_be_rewritten(role: Role, remote: SocketAddr) -> bool {
    role == Role::Client && !remote.ip().is_loopback()
}

/// Ended flows whose cgroup is still not resolved after this many gathers are left out.
const MAX_DEFERRALS: u8 = 2;

/// Ended flows of one cgroup that found the queue full: bound for its owner's `other`.
#[derive(Debug, Clone, Copy, Default)]
struct Overflow {
    totals: PeerTotals,
    rtt: (u64, u64),
    /// Gathers that found the cgroup `Scope::NotYet`.
    deferred: u8,
}

/// The peer slots and the queue of flows ended before a gather.
#[derive(Debug)]
pub(crate) struct PeerTable {
    entries: Vec<PeerEntry>,
    index: FastMap<SeriesId, u32>,
    free: Vec<u32>,
    /// Named (not `other`) slots per owner.
    named: FastMap<u64, u32>,
    ended: Vec<Ended>,
    /// Where in `ended` the flows of one peer (without backend) were merged, since the last
    /// gather.
    merged: FastMap<QueueId, u32>,
    /// Per cgroup, the ended flows that found the queue full (its owner is known at the gather).
    overflow: FastMap<u64, Overflow>,
    /// Ended client flows are queued one by one, for their DNAT backend's lookup at the gather;
    /// without lookups (and always for servers) a peer's ended flows are merged into one entry.
    backends: bool,
    max_peers_per_container: u32,
    max_ended: usize,
    series_ttl_ns: u64,
    /// Flows and peers folded into an `other` since the last `take_folded`.
    folded: u64,
    /// Per owner, the peers folded into its `other` while that series lives: a peer's flows
    /// come over several gathers, and it is counted as folded once (at most `max_ended` peers
    /// in all are remembered; beyond, a peer counts again at each gather it has new flows).
    folded_peers: FastMap<u64, FastSet<PeerKey>>,
    /// Peers in `folded_peers`.
    folded_known: usize,
}

impl PeerTable {
    pub(crate) fn new(
        max_peers_per_container: u32,
        max_ended: usize,
        series_ttl_ns: u64,
    ) -> PeerTable {
        PeerTable {
            entries: Vec::new(),
            index: FastMap::default(),
            free: Vec::new(),
            named: FastMap::default(),
            ended: Vec::new(),
            merged: FastMap::default(),
            overflow: FastMap::default(),
            backends: false,
            max_peers_per_container,
            max_ended,
            series_ttl_ns,
            folded: 0,
            folded_peers: FastMap::default(),
            folded_known: 0,
        }
    }

    /// The slot of `id`, made when missing.
    fn slot(&mut self, id: SeriesId, now_ns: u64) -> u32 {
        if let Some(&slot) = self.index.get(&id) {
            return slot;
        }
        let entry = PeerEntry {
            id: Some(id),
            last_active_ns: now_ns,
            ..PeerEntry::default()
        };
        let slot = super::put_in_slot(&mut self.entries, &mut self.free, entry);
        if id.1.is_some() {
            *self.named.entry(id.0).or_default() += 1;
        }
        self.index.insert(id, slot);
        slot
    }

    /// Folds an ended flow (or a failed connect: `connection` false) into its slot, or queues
    /// it for the next gather (the queue full: bound for its owner's `other`, counted as
    /// folded).
    pub(crate) fn end(&mut self, flow: &Flow, connection: bool, failed: bool) {
        let totals = PeerTotals {
            // A flow with a slot was counted when it got it.
            connections: u64::from(connection && flow.peer == UNASSIGNED),
            bytes_sent: flow.bytes_sent,
            bytes_rcvd: flow.bytes_rcvd,
            failures: u64::from(failed),
        };
        let rtt = if flow.proto == Proto::Tcp && flow.srtt_us > 0 {
            (u64::from(flow.srtt_us), 1)
        } else {
            (0, 0)
        };
        match flow.peer {
            NO_SERIES => {}
            UNASSIGNED => self.queue(Ended {
                cgroup_id: flow.cgroup_id,
                role: flow.role,
                proto: flow.proto,
                local: flow.local,
                remote: flow.remote,
                totals,
                rtt,
                deferred: 0,
            }),
            slot => {
                let entry = &mut self.entries[slot as usize];
                entry.flows -= 1;
                entry.fold(&totals, rtt, true);
            }
        }
    }

    /// Queues a failed connect (no flow: it never was one) for its peer's failures.
    pub(crate) fn failed_connect(
        &mut self,
        sock: &crate::records::FlSock,
        role: Role,
        proto: Proto,
    ) {
        self.queue(Ended {
            cgroup_id: sock.cgroup_id,
            role,
            proto,
            local: sock.local(),
            remote: sock.remote(),
            totals: PeerTotals {
                failures: 1,
                ..PeerTotals::default()
            },
            rtt: (0, 0),
            deferred: 0,
        });
    }

    /// Whether ended client flows keep their addresses for a DNAT backend lookup.
    pub(crate) fn set_backends(&mut self, backends: bool) {
        self.backends = backends;
    }

    /// Queues an ended flow for the next gather: merged with the ones of its peer when no
    /// backend lookup needs its own addresses (so churn to one peer holds one entry); the queue
    /// full, keeps it for its owner's `other` (counted as folded): the owner is known at the
    /// gather.
    fn queue(&mut self, ended: Ended) {
        let alone = self.backends && may_be_rewritten(ended.role, ended.remote);
        let id = (
            ended.cgroup_id,
            Some(PeerKey::of(
                ended.role,
                ended.proto,
                ended.local,
                ended.remote,
                None,
            )),
        );
        if !alone {
            if let Some(&i) = self.merged.get(&id) {
                let into = &mut self.ended[i as usize];
                into.totals.add(&ended.totals);
                into.rtt.0 += ended.rtt.0;
                into.rtt.1 += ended.rtt.1;
                return;
            }
        }
        if self.ended.len() < self.max_ended {
            if !alone {
                self.merged.insert(id, self.ended.len() as u32);
            }
            self.ended.push(ended);
        } else {
            self.folded += 1;
            let into = self.overflow.entry(ended.cgroup_id).or_default();
            into.totals.add(&ended.totals);
            into.rtt.0 += ended.rtt.0;
            into.rtt.1 += ended.rtt.1;
        }
    }

    /// Gives a slot to every flow without one and to every queued ended flow whose cgroup has
    /// series (`scope`: its owner), after ending the series idle for longer than the TTL that
    /// none of these goes to. New
    /// peers of an owner take its free places busiest first (bytes, then connections, then the
    /// key); the rest fold into its `other`. `backend` names the endpoint behind a client flow's
    /// destination when DNAT rewrote it.
    pub(crate) fn assign(
        &mut self,
        flows: &mut [Flow],
        scope: impl Fn(u64) -> Scope,
        mut backend: impl FnMut(Proto, SocketAddr, SocketAddr) -> Option<SocketAddr>,
        now_ns: u64,
    ) {
        /// Where a candidate's values are: an active flow's slot in the table, or the queue's.
        #[derive(Clone, Copy)]
        enum Source {
            Active(usize),
            Ended(usize),
        }
        // A flow's peer, with the backend behind its destination when it may have one.
        let mut key_of = |role: Role, proto: Proto, local: SocketAddr, remote: SocketAddr| {
            let dnat = if may_be_rewritten(role, remote) {
                backend(proto, local, remote)
            } else {
                None
            };
            PeerKey::of(role, proto, local, remote, dnat)
        };
        let mut keyed: Vec<(SeriesId, Source)> = Vec::new();
        for (i, flow) in flows.iter_mut().enumerate() {
            if flow.peer != UNASSIGNED {
                continue;
            }
            let owner = match scope(flow.cgroup_id) {
                Scope::Series(owner) => owner,
                Scope::NoSeries => {
                    flow.peer = NO_SERIES;
                    continue;
                }
                Scope::NotYet => continue,
            };
            let key = key_of(flow.role, flow.proto, flow.local, flow.remote);
            keyed.push(((owner, Some(key)), Source::Active(i)));
        }
        let mut kept: Vec<Ended> = Vec::new();
        for (i, ended) in self.ended.iter_mut().enumerate() {
            let owner = match scope(ended.cgroup_id) {
                Scope::Series(owner) => owner,
                Scope::NoSeries => continue,
                Scope::NotYet => {
                    ended.deferred += 1;
                    if ended.deferred < MAX_DEFERRALS {
                        kept.push(ended.clone());
                    }
                    continue;
                }
            };
            let key = key_of(ended.role, ended.proto, ended.local, ended.remote);
            keyed.push(((owner, Some(key)), Source::Ended(i)));
        }
        // Series idle for longer than the TTL end now, but not one that this gather's flows
        // (active, or ended and queued) or the queue's overflow go to: ended there and made
        // again in the same gather, it would be written in both gathers with counters that
        // went back (a gather slower than the TTL, as in an emulated guest, met it).
        let mut busy: FastSet<SeriesId> = keyed.iter().map(|(id, _)| *id).collect();
        busy.extend(
            self.overflow
                .keys()
                .filter_map(|cgroup_id| match scope(*cgroup_id) {
                    Scope::Series(owner) => Some((owner, None)),
                    _ => None,
                }),
        );
        self.expire(now_ns, &busy);
        // New peers: their interval's bytes and connections, then ranked per cgroup.
        let mut new: FastMap<SeriesId, (u64, u64)> = FastMap::default();
        for (id, source) in &keyed {
            if self.index.contains_key(id) {
                continue;
            }
            let (bytes, connections) = match *source {
                Source::Active(i) => (flows[i].bytes_sent + flows[i].bytes_rcvd, 1),
                Source::Ended(i) => {
                    let t = &self.ended[i].totals;
                    (t.bytes_sent + t.bytes_rcvd, t.connections)
                }
            };
            let v = new.entry(*id).or_default();
            v.0 += bytes;
            v.1 += connections;
        }
        let mut ranked: Vec<(SeriesId, (u64, u64))> = new.into_iter().collect();
        ranked.sort_unstable_by(|a, b| {
            (a.0 .0)
                .cmp(&b.0 .0)
                .then(b.1 .0.cmp(&a.1 .0))
                .then(b.1 .1.cmp(&a.1 .1))
                .then(a.0 .1.cmp(&b.0 .1))
        });
        // The slot each new peer goes to: its own while its owner has room, else `other`'s.
        let mut decided: FastMap<SeriesId, u32> = FastMap::default();
        for (id, _) in ranked {
            let named = self.named.get(&id.0).copied().unwrap_or(0);
            let slot = if named < self.max_peers_per_container {
                self.forget_fold(id);
                self.slot(id, now_ns)
            } else {
                if self.remember_fold(id) {
                    self.folded += 1;
                }
                self.slot((id.0, None), now_ns)
            };
            decided.insert(id, slot);
        }
        for (id, source) in keyed {
            let slot = match self.index.get(&id) {
                Some(&slot) => slot,
                None => decided[&id],
            };
            let entry = &mut self.entries[slot as usize];
            entry.last_active_ns = now_ns;
            match source {
                Source::Active(i) => {
                    flows[i].peer = slot;
                    entry.flows += 1;
                    entry.totals.connections += 1;
                }
                Source::Ended(i) => {
                    let ended = &self.ended[i];
                    entry.fold(&ended.totals, ended.rtt, false);
                }
            }
        }
        self.ended = kept;
        // The queue's overflow, into its owners' `other`.
        let mut overflow = std::mem::take(&mut self.overflow);
        overflow.retain(|cgroup_id, o| match scope(*cgroup_id) {
            Scope::Series(owner) => {
                let slot = self.slot((owner, None), now_ns);
                let entry = &mut self.entries[slot as usize];
                entry.last_active_ns = now_ns;
                entry.fold(&o.totals, o.rtt, false);
                false
            }
            Scope::NoSeries => false,
            Scope::NotYet => {
                o.deferred += 1;
                o.deferred < MAX_DEFERRALS
            }
        });
        self.overflow = overflow;
        // The entries kept (waiting for their cgroup) merge with their peer's next ones.
        self.merged.clear();
        for (i, e) in self.ended.iter().enumerate() {
            if !(self.backends && may_be_rewritten(e.role, e.remote)) {
                let key = PeerKey::of(e.role, e.proto, e.local, e.remote, None);
                self.merged.insert((e.cgroup_id, Some(key)), i as u32);
            }
        }
    }

    /// The flows [`assign`](Self::assign) would ask `backend` about with this `scope`, in its
    /// order: each flow without a slot, then each queued ended flow, of a cgroup with series,
    /// whose destination may be rewritten.
    pub(crate) fn backend_queries(
        &self,
        flows: &[Flow],
        scope: impl Fn(u64) -> Scope,
    ) -> Vec<(Proto, SocketAddr, SocketAddr)> {
        let has_series = |cgroup_id| matches!(scope(cgroup_id), Scope::Series(_));
        let active = flows
            .iter()
            .filter(|f| f.peer == UNASSIGNED && has_series(f.cgroup_id))
            .map(|f| (f.role, f.proto, f.local, f.remote));
        let ended = self
            .ended
            .iter()
            .filter(|e| has_series(e.cgroup_id))
            .map(|e| (e.role, e.proto, e.local, e.remote));
        active
            .chain(ended)
            .filter(|(role, _, _, remote)| may_be_rewritten(*role, *remote))
            .map(|(_, proto, local, remote)| (proto, local, remote))
            .collect()
    }

    /// Whether the peer `id` folding into its owner's `other` is a new fold (then remembered,
    /// room permitting), not one of a peer already counted while that `other` lives.
    fn remember_fold(&mut self, id: SeriesId) -> bool {
        let (owner, Some(key)) = id else { return true };
        if self
            .folded_peers
            .get(&owner)
            .is_some_and(|peers| peers.contains(&key))
        {
            return false;
        }
        if self.folded_known < self.max_ended {
            self.folded_peers.entry(owner).or_default().insert(key);
            self.folded_known += 1;
        }
        true
    }

    /// The peer `id` takes a place of its own: a later fold of it is a new one.
    fn forget_fold(&mut self, id: SeriesId) {
        let (owner, Some(key)) = id else { return };
        if let Some(peers) = self.folded_peers.get_mut(&owner) {
            if peers.remove(&key) {
                self.folded_known -= 1;
                if peers.is_empty() {
                    self.folded_peers.remove(&owner);
                }
            }
        }
    }

    /// Dates the series that had flows since the last gather, and ends those idle for longer
    /// than the TTL (their places are free for this gather's new peers).
    /// `busy`: the series this gather's flows go to, which stay.
    fn expire(&mut self, now_ns: u64, busy: &FastSet<SeriesId>) {
        let ttl = self.series_ttl_ns;
        for (slot, entry) in self.entries.iter_mut().enumerate() {
            let Some(id) = entry.id else { continue };
            if entry.flows > 0 || std::mem::take(&mut entry.touched) || busy.contains(&id) {
                entry.last_active_ns = now_ns;
            } else if now_ns.saturating_sub(entry.last_active_ns) > ttl {
                self.index.remove(&id);
                if id.1.is_none() {
                    // Its `other` ended: a peer folded from now on is a new fold.
                    if let Some(peers) = self.folded_peers.remove(&id.0) {
                        self.folded_known -= peers.len();
                    }
                } else {
                    if let Some(n) = self.named.get_mut(&id.0) {
                        *n -= 1;
                        if *n == 0 {
                            self.named.remove(&id.0);
                        }
                    }
                }
                *entry = PeerEntry::default();
                self.free.push(slot as u32);
            }
        }
    }

    /// Every peer slot's series (None: a free slot) with its ended flows' values: the
    /// aggregate adds the active flows that carry each slot (`aggregate/peers.rs`), into
    /// `out` (cleared first). The interval's RTT samples start over.
    pub(crate) fn ended_values(&mut self, out: &mut Vec<Option<PeerValue>>) {
        out.clear();
        out.extend(self.entries.iter_mut().map(|entry| {
            let (owner, key) = entry.id?;
            let (rtt_sum_us, rtt_samples) = std::mem::take(&mut entry.ended_rtt);
            Some(PeerValue {
                owner,
                key,
                active: 0,
                totals: entry.totals,
                rtt_sum_us,
                rtt_samples,
            })
        }));
    }

    /// Flows and peers folded into an `other` since the last call.
    pub(crate) fn take_folded(&mut self) -> u64 {
        std::mem::take(&mut self.folded)
    }
}

impl PeerEntry {
    /// Adds an ended flow's values; `touched`: between gathers (the next one dates it).
    fn fold(&mut self, totals: &PeerTotals, rtt: (u64, u64), touched: bool) {
        self.touched |= touched;
        self.totals.add(totals);
        self.ended_rtt.0 += rtt.0;
        self.ended_rtt.1 += rtt.1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flows::tests::sock;
    use crate::flows::{FlowTable, Limits, Update};
    use crate::records::{self, FlEvent, FlSock};

    const TCP: u8 = 6;

    #[test]
    fn endpoints_are_written_as_display_writes_them() {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut addrs: Vec<SocketAddr> = vec![
            "0.0.0.0:0".parse().unwrap(),
            "255.255.255.255:65535".parse().unwrap(),
            "10.0.0.1:80".parse().unwrap(),
            "[::]:0".parse().unwrap(),
            "[::ffff:10.0.0.1]:443".parse().unwrap(),
            "[fd00::1]:8080".parse().unwrap(),
        ];
        for _ in 0..1000 {
            let (a, b) = (next(), next());
            addrs.push(SocketAddr::new(
                IpAddr::from((a as u32).to_be_bytes()),
                b as u16,
            ));
            let v6 = u128::from(a) << 64 | u128::from(b);
            addrs.push(SocketAddr::new(
                IpAddr::from(v6.to_be_bytes()),
                (a >> 40) as u16,
            ));
        }
        for addr in addrs {
            for remote in [Some(addr.ip()), None] {
                let key = PeerKey {
                    role: Role::Client,
                    proto: Proto::Tcp,
                    remote,
                    port: addr.port(),
                    backend: None,
                };
                let want = match remote {
                    Some(_) => addr.to_string(),
                    None => format!("*:{}", addr.port()),
                };
                assert_eq!(key.endpoint(), want);
            }
            let mut ip = String::new();
            crate::flows::write_ip(&mut ip, addr.ip());
            assert_eq!(ip, addr.ip().to_string());
            let mut n = String::new();
            crate::flows::write_u64(&mut n, addr.port().into());
            assert_eq!(n, addr.port().to_string());
        }
    }

    fn table(max_peers_per_container: u32, max_flows: usize) -> FlowTable {
        FlowTable::new(Limits {
            max_flows,
            max_hosts: 10,
            series_ttl_ns: 300,
            udp_idle_timeout_ns: 60_000_000_000,
            hosts_by_netns: true,
            max_peers_per_container,
        })
    }

    /// A client socket of cgroup 7 to `remote`, having moved `bytes` each way.
    fn client(remote: &str, local_port: u16, bytes: u64) -> FlSock {
        let mut s = sock(
            records::ROLE_CLIENT,
            TCP,
            &format!("10.0.0.1:{local_port}"),
            remote,
        );
        s.bytes_sent = bytes;
        s.bytes_rcvd = bytes;
        s.srtt_us = 1000;
        s
    }

    fn gather(t: &mut FlowTable, now: u64) -> Vec<PeerValue> {
        t.assign_peers(Scope::Series, |_, _, _| None, now);
        let mut v = crate::aggregate::peer_values(t);
        v.sort_by_key(|v| (v.key.is_none(), v.key));
        v
    }

    fn endpoint(v: &PeerValue) -> String {
        v.key.map_or("other".into(), |k| k.endpoint())
    }

    #[test]
    fn the_busiest_new_peers_take_the_places_and_the_rest_fold_into_other() {
        let mut t = table(4, 100);
        // Ten peers, peer i moving i KB: the four busiest (6..=9) get series.
        for i in 0..10u64 {
            let s = client(&format!("10.1.0.{i}:80"), 40000 + i as u16, i * 1000);
            t.apply(Update::Close, 100 + i, &s);
        }
        let v = gather(&mut t, 10);
        let names: Vec<String> = v.iter().map(endpoint).collect();
        assert_eq!(
            names,
            [
                "10.1.0.6:80",
                "10.1.0.7:80",
                "10.1.0.8:80",
                "10.1.0.9:80",
                "other"
            ]
        );
        let other = v.last().unwrap();
        assert_eq!(other.totals.connections, 6);
        assert_eq!(other.totals.bytes_sent, 15_000); // 0 + 1 + ... + 5 KB
        assert_eq!(t.take_peers_folded(), 6);
        // Every flow counted once, in one series.
        let all: u64 = v.iter().map(|v| v.totals.connections).sum();
        assert_eq!(all, 10);
        // A folded peer stays in `other` while the named ones keep their places.
        t.apply(Update::Close, 200, &client("10.1.0.0:80", 41000, 50_000));
        let v = gather(&mut t, 20);
        assert_eq!(v.last().unwrap().totals.connections, 7);
        assert_eq!(v.len(), 5);
    }

    /// A server socket of cgroup 7 on local port `port`, its client at `client_port`.
    fn served(port: u16, client_port: u16) -> FlSock {
        let mut s = sock(records::ROLE_SERVER, TCP, "10.0.0.1:80", "10.9.0.1:50000");
        s.sport = port;
        s.dport = client_port;
        s.bytes_rcvd = 1;
        s
    }

    #[test]
    fn a_folded_peer_counts_once_while_its_owners_other_lives() {
        // One place: port 80 takes it, port 81 folds into `other`.
        let mut t = table(1, 100);
        t.apply(Update::Open, 1, &served(80, 50000));
        t.apply(Update::Open, 2, &served(81, 50001));
        gather(&mut t, 10);
        assert_eq!(t.take_peers_folded(), 1);
        // More clients of port 81 at the next gathers, active and ended between gathers: the
        // same destination, already counted.
        t.apply(Update::Open, 3, &served(81, 50002));
        t.apply(Update::Close, 4, &served(81, 50003));
        let v = gather(&mut t, 20);
        assert_eq!(t.take_peers_folded(), 0, "{v:?}");
        t.apply(Update::Close, 2, &served(81, 50001));
        t.apply(Update::Close, 5, &served(81, 50004));
        let v = gather(&mut t, 30);
        assert_eq!(t.take_peers_folded(), 0, "{v:?}");
        let other = v.iter().find(|v| v.key.is_none()).unwrap();
        assert_eq!((other.active, other.totals.connections), (1, 4));
        // Every flow of `other` ended and its series expired: a fold is counted again.
        t.apply(Update::Close, 3, &served(81, 50002));
        gather(&mut t, 40);
        let v = gather(&mut t, 400);
        assert!(v.iter().all(|v| v.key.is_some()), "{v:?}");
        t.apply(Update::Close, 6, &served(81, 50005));
        gather(&mut t, 410);
        assert_eq!(t.take_peers_folded(), 1);
    }

    #[test]
    fn an_active_flow_stays_in_its_series_and_counters_only_grow() {
        let mut t = table(2, 100);
        let mut s = client("10.1.0.1:443", 40000, 100);
        t.refresh([(1, &s)], 1);
        let v = gather(&mut t, 1);
        assert_eq!((v[0].active, v[0].totals.connections), (1, 1));
        assert_eq!((v[0].totals.bytes_sent, v[0].rtt_samples), (100, 1));
        s.bytes_sent = 300;
        t.refresh([(1, &s)], 2);
        let v = gather(&mut t, 2);
        assert_eq!((v[0].active, v[0].totals.connections), (1, 1));
        assert_eq!(v[0].totals.bytes_sent, 300);
        // It ends: folded into its series in the same gather, nothing counted twice.
        s.bytes_sent = 400;
        t.apply(Update::Close, 1, &s);
        let v = gather(&mut t, 3);
        assert_eq!((v[0].active, v[0].totals.connections), (0, 1));
        assert_eq!(v[0].totals.bytes_sent, 400);
        assert_eq!(v[0].rtt_samples, 1);
        // The interval's RTT samples start over at each gather.
        let v = gather(&mut t, 4);
        assert_eq!(v[0].rtt_samples, 0);
    }

    #[test]
    fn an_idle_peer_ends_after_the_ttl_and_frees_its_place() {
        let mut t = table(1, 100);
        t.apply(Update::Close, 1, &client("10.1.0.1:80", 40000, 10));
        assert_eq!(endpoint(&gather(&mut t, 1000)[0]), "10.1.0.1:80");
        t.apply(Update::Close, 2, &client("10.1.0.2:80", 40001, 10));
        let v = gather(&mut t, 1200);
        assert_eq!(
            v.iter().map(endpoint).collect::<Vec<_>>(),
            ["10.1.0.1:80", "other"]
        );
        // 10.1.0.1 idle for more than the TTL (300): gone, and the next new peer takes its place.
        t.apply(Update::Close, 3, &client("10.1.0.3:80", 40002, 10));
        let v = gather(&mut t, 1400);
        assert_eq!(
            v.iter().map(endpoint).collect::<Vec<_>>(),
            ["10.1.0.3:80", "other"]
        );
        assert_eq!(t.store.peers.index.len(), 2);
        let v = gather(&mut t, 2000);
        assert!(v.is_empty(), "{v:?}");
        assert_eq!(t.store.peers.index.len(), 0);
    }

    #[test]
    fn a_peer_whose_flow_ended_in_a_gather_longer_than_the_ttl_keeps_its_series() {
        let mut t = table(4, 100);
        t.apply(Update::Close, 1, &client("10.1.0.1:80", 40000, 10));
        let v = gather(&mut t, 1000);
        assert_eq!(v[0].totals.connections, 1);
        // The next flow to it ends more than the TTL (300) after the last gather, before the
        // next one: the series is written again with its counters kept, not ended and made anew.
        t.apply(Update::Close, 2, &client("10.1.0.1:80", 40001, 10));
        let v = gather(&mut t, 1500);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(endpoint(&v[0]), "10.1.0.1:80");
        assert_eq!(v[0].totals.connections, 2, "{v:?}");
    }

    #[test]
    fn failed_connects_and_resets_count_as_the_peers_failures() {
        let mut t = table(4, 100);
        let refused = client("10.1.0.1:80", 40000, 0);
        t.apply_event(&FlEvent {
            cookie: 1,
            ts_ns: 0,
            kind: records::EV_CONNECT_FAILED,
            err: 111,
            sock: refused,
        });
        let reset = client("10.1.0.2:80", 40001, 10);
        t.refresh([(2, &reset)], 1);
        t.apply_event(&FlEvent {
            cookie: 2,
            ts_ns: 0,
            kind: records::EV_CLOSE,
            err: 104,
            sock: reset,
        });
        let v = gather(&mut t, 1);
        let by: Vec<(String, u64, u64)> = v
            .iter()
            .map(|v| (endpoint(v), v.totals.connections, v.totals.failures))
            .collect();
        assert_eq!(
            by,
            [("10.1.0.1:80".into(), 0, 1), ("10.1.0.2:80".into(), 1, 1)]
        );
    }

    #[test]
    fn cgroups_without_series_get_none_and_unresolved_ones_wait() {
        let mut t = table(4, 100);
        let mut host = client("10.1.0.1:80", 40000, 10);
        host.cgroup_id = 1;
        let mut later = client("10.1.0.2:80", 40001, 10);
        later.cgroup_id = 2;
        t.apply(Update::Close, 1, &host);
        t.apply(Update::Close, 2, &later);
        let scope = |resolved: bool| {
            move |cg: u64| match (cg, resolved) {
                (1, _) => Scope::NoSeries,
                (_, false) => Scope::NotYet,
                (cg, true) => Scope::Series(cg),
            }
        };
        t.assign_peers(scope(false), |_, _, _| None, 1);
        assert!(crate::aggregate::peer_values(&mut t).is_empty());
        t.assign_peers(scope(true), |_, _, _| None, 2);
        let v = crate::aggregate::peer_values(&mut t);
        assert_eq!(v.len(), 1);
        assert_eq!((v[0].owner, endpoint(&v[0])), (2, "10.1.0.2:80".into()));
    }

    #[test]
    fn a_full_queue_folds_ended_flows_into_other_and_counts_them() {
        // Room for 3 ended flows between gathers.
        let mut t = table(8, 3);
        for i in 0..5u64 {
            let s = client(&format!("10.1.0.{i}:80"), 40000 + i as u16, 10);
            t.apply(Update::Close, i, &s);
        }
        let v = gather(&mut t, 1);
        let named = v.iter().filter(|v| v.key.is_some()).count();
        assert_eq!(named, 3);
        assert_eq!(v.last().unwrap().totals.connections, 2);
        assert_eq!(t.take_peers_folded(), 2);
        let all: u64 = v.iter().map(|v| v.totals.connections).sum();
        assert_eq!(all, 5);
    }

    #[test]
    fn flows_of_one_peer_ending_between_gathers_take_one_place_in_the_queue() {
        // Room for 2 ended flows between gathers: 1000 churned flows to one peer and their
        // server sides take two, nothing folds.
        let mut t = table(8, 2);
        for i in 0..1000u64 {
            let s = client("10.1.0.1:80", 40000 + (i % 20000) as u16, 10);
            t.apply(Update::Close, i, &s);
            let mut served = sock(records::ROLE_SERVER, TCP, "10.0.0.1:80", "10.9.0.1:50000");
            served.sport = 80;
            served.dport = 50000 + (i % 10000) as u16;
            served.bytes_rcvd = 10;
            t.apply(Update::Close, 10_000 + i, &served);
        }
        let v = gather(&mut t, 1);
        let by: Vec<(String, u64, u64)> = v
            .iter()
            .map(|v| (endpoint(v), v.totals.connections, v.totals.bytes_rcvd))
            .collect();
        assert_eq!(
            by,
            [
                ("10.1.0.1:80".into(), 1000, 10_000),
                ("*:80".into(), 1000, 10_000)
            ]
        );
        assert_eq!(t.take_peers_folded(), 0);
        // With backend lookups, client flows wait one by one (each may have its own backend).
        t.set_peer_backends(true);
        for i in 0..3u64 {
            t.apply(
                Update::Close,
                20_000 + i,
                &client("10.1.0.2:80", 41000 + i as u16, 1),
            );
        }
        gather(&mut t, 2);
        assert_eq!(t.take_peers_folded(), 1);
    }

    #[test]
    fn a_dnat_backend_is_part_of_the_peer() {
        let mut t = table(4, 100);
        // Three connections to a virtual IP; conntrack (the closure) knows which backend
        // answered each, by its local port.
        let backends = ["10.244.0.7:8080", "10.244.0.8:8080", "10.244.0.7:8080"];
        t.set_peer_backends(true);
        for i in 0..3u16 {
            let s = client("10.96.0.10:80", 40000 + i, 10);
            t.apply(Update::Close, u64::from(i), &s);
        }
        t.assign_peers(
            Scope::Series,
            |_, local, remote| {
                assert_eq!(remote.to_string(), "10.96.0.10:80");
                Some(backends[usize::from(local.port() - 40000)].parse().unwrap())
            },
            1,
        );
        let mut v: Vec<(String, String, u64)> = crate::aggregate::peer_values(&mut t)
            .iter()
            .map(|v| {
                let k = v.key.unwrap();
                (
                    k.endpoint(),
                    k.backend.unwrap().to_string(),
                    v.totals.connections,
                )
            })
            .collect();
        v.sort();
        assert_eq!(
            v,
            [
                ("10.96.0.10:80".into(), "10.244.0.7:8080".into(), 2),
                ("10.96.0.10:80".into(), "10.244.0.8:8080".into(), 1)
            ]
        );
    }

    #[test]
    fn the_cgroups_of_one_owner_share_its_budget_its_series_and_its_other() {
        // Cgroups 7, 8 and 9 are one container (owner 1); 2 places; room for 10 flows (and 10
        // ended flows between gathers).
        let mut t = table(2, 10);
        let owner = |_: u64| Scope::Series(1);
        for (i, cg) in [7u64, 8, 9].into_iter().enumerate() {
            let mut s = client(
                &format!("10.1.0.{i}:80"),
                40000 + i as u16,
                100 * (i as u64 + 1),
            );
            s.cgroup_id = cg;
            t.apply(Update::Open, i as u64, &s);
            // The same peer from every cgroup.
            let mut shared = client("10.9.9.9:80", 41000 + i as u16, 1000);
            shared.cgroup_id = cg;
            t.apply(Update::Open, 100 + i as u64, &shared);
        }
        t.assign_peers(owner, |_, _, _| None, 1);
        let v = crate::aggregate::peer_values(&mut t);
        let by: Vec<(u64, String, u64)> = {
            let mut by: Vec<_> = v
                .iter()
                .map(|v| (v.owner, endpoint(v), v.totals.connections))
                .collect();
            by.sort();
            by
        };
        assert_eq!(
            by,
            [
                (1, "10.1.0.2:80".into(), 1),
                (1, "10.9.9.9:80".into(), 3),
                (1, "other".into(), 2)
            ]
        );
        // Ended flows of the three cgroups, 2 beyond the queue's room: all in the owner's one
        // `other` (no place left).
        for (i, cg) in [7u64, 8, 9].into_iter().cycle().take(12).enumerate() {
            let mut s = client(&format!("10.2.0.{i}:80"), 42000 + i as u16, 1);
            s.cgroup_id = cg;
            t.apply(Update::Close, 200 + i as u64, &s);
        }
        t.assign_peers(owner, |_, _, _| None, 2);
        let v = crate::aggregate::peer_values(&mut t);
        assert_eq!(v.len(), 3, "{v:?}");
        let other = v.iter().find(|v| v.key.is_none()).unwrap();
        assert_eq!(other.totals.connections, 2 + 12);
    }
}

//! Host series (`host:*`, `iface:flows`, `iface:new_flows`): a host is a local address in
//! its network namespace (`flows::HostKey`); its values are its active flows' sums (by the host
//! slot each flow carries) plus the totals its ended flows folded into its slot.
#![forbid(unsafe_code)]

use super::FlowSink;
use crate::flows::{Flow, FlowTable, HostKey, HostTotals, Role};
use crate::hash::FastSet;
use crate::ndpi::ProtocolTotals;
use std::collections::BTreeMap;

/// Per-host values of one gather: gauges from the active flows, counters from everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostValues {
    /// Bytes sent (counter).
    pub bytes_sent: u64,
    /// Bytes received (counter).
    pub bytes_rcvd: u64,
    /// Active flows as client (gauge).
    pub(crate) active_client: u64,
    /// Active flows as server (gauge).
    pub(crate) active_server: u64,
    /// Flows ever seen as client (counter).
    pub total_client: u64,
    /// Flows ever seen as server (counter).
    pub(crate) total_server: u64,
    /// Bytes (sent, received) per application protocol (counters).
    pub ndpi: BTreeMap<&'static str, (u64, u64)>,
}

/// What the flow table contributes to a gather.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FlowValues {
    /// Active flows of the host.
    pub num_flows: u64,
    /// Flows started since flowlens did (counter).
    pub new_flows: u64,
    /// Per local host, sorted.
    pub hosts: BTreeMap<HostKey, HostValues>,
    /// Distinct local addresses folded into `other` in this gather.
    pub(crate) hosts_folded: u64,
}

/// The active flows' values of one host slot.
#[derive(Default, Clone)]
struct Active {
    bytes_sent: u64,
    bytes_rcvd: u64,
    client: u64,
    server: u64,
    ndpi: ProtocolTotals,
}

/// The hosts' sink: the active flows summed per host slot (an array indexed by the slot each
/// flow carries); no hashing but for the distinct addresses folded into `other`.
pub(crate) struct HostSums<'t> {
    table: &'t FlowTable,
    /// `other`'s slot, when it exists.
    other: Option<usize>,
    /// One per host slot; a flow's slot is its host's or `other`'s, alive while it lives.
    active: Vec<Active>,
    /// The distinct keys counted in `other`.
    folded: FastSet<HostKey>,
}

impl FlowSink for HostSums<'_> {
    #[inline]
    fn add(&mut self, flow: &Flow) {
        let slot = flow.host_slot();
        if Some(slot) == self.other {
            self.folded.insert(self.table.host_key(flow));
        }
        let h = &mut self.active[slot];
        h.bytes_sent += flow.bytes_sent;
        h.bytes_rcvd += flow.bytes_rcvd;
        match flow.role {
            Role::Client => h.client += 1,
            Role::Server => h.server += 1,
        }
        h.ndpi
            .add(flow.protocol(), flow.bytes_sent, flow.bytes_rcvd);
    }
}

impl<'t> HostSums<'t> {
    /// A sink for the flows of `table`.
    pub(crate) fn new(table: &'t FlowTable) -> HostSums<'t> {
        HostSums {
            table,
            other: table.other_host_slot(),
            active: vec![Active::default(); table.host_entries().len()],
            folded: FastSet::default(),
        }
    }

    /// Every host's values: its active flows' sums (this sink's) plus its cumulative totals.
    pub(crate) fn finish(self, table: &FlowTable) -> FlowValues {
        let mut hosts: BTreeMap<HostKey, HostValues> = BTreeMap::new();
        let host_values = |totals: &HostTotals, a: &Active| {
            let mut h = HostValues {
                bytes_sent: a.bytes_sent,
                bytes_rcvd: a.bytes_rcvd,
                active_client: a.client,
                active_server: a.server,
                ..HostValues::default()
            };
            h.bytes_sent += totals.bytes_sent;
            h.bytes_rcvd += totals.bytes_rcvd;
            h.total_client += totals.total_client;
            h.total_server += totals.total_server;
            for (protocol, bytes) in totals.ndpi.iter() {
                h.ndpi.insert(protocol.name(), bytes);
            }
            for (protocol, (sent, rcvd)) in a.ndpi.iter() {
                let e = h.ndpi.entry(protocol.name()).or_default();
                e.0 += sent;
                e.1 += rcvd;
            }
            h
        };
        for (entry, active) in table.host_entries().iter().zip(&self.active) {
            if let Some(key) = entry.key {
                hosts.insert(key, host_values(&entry.totals, active));
            }
        }
        FlowValues {
            num_flows: table.len() as u64,
            new_flows: table.new_flows,
            hosts,
            hosts_folded: self.folded.len() as u64,
        }
    }
}

impl FlowValues {
    /// The hosts' values alone (the gather takes them from [`super::first_pass`]): a pure
    /// function of the table's state.
    pub fn from_table(table: &FlowTable) -> FlowValues {
        let mut sums = HostSums::new(table);
        super::sweep(table, &mut sums);
        sums.finish(table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `from_table` as it was written before flows carried their protocol, hashing per flow: the
    /// definition the fast one must match. A flow's host is its address's series, unless it was
    /// folded into `other` when it started (checked: its slot names one of the two).
    fn reference(table: &FlowTable, by_netns: bool) -> FlowValues {
        let mut hosts: BTreeMap<HostKey, HostValues> = BTreeMap::new();
        for (key, totals) in table.hosts().iter() {
            let h = hosts.entry(*key).or_default();
            h.bytes_sent += totals.bytes_sent;
            h.bytes_rcvd += totals.bytes_rcvd;
            h.total_client += totals.total_client;
            h.total_server += totals.total_server;
            for (protocol, (sent, rcvd)) in totals.ndpi.iter() {
                let e = h.ndpi.entry(protocol.name()).or_default();
                e.0 += sent;
                e.1 += rcvd;
            }
        }
        let mut folded = std::collections::HashSet::new();
        for flow in table.flows() {
            let own = HostKey::Addr {
                ip: flow.local.ip(),
                netns: by_netns.then_some(flow.netns),
            };
            let key = table.host_entries()[flow.host_slot()]
                .key
                .expect("a flow's host slot is alive");
            assert!(key == own || key == HostKey::Other, "{flow:?} in {key}");
            if key == HostKey::Other {
                folded.insert(own);
            }
            let h = hosts.entry(key).or_default();
            h.bytes_sent += flow.bytes_sent;
            h.bytes_rcvd += flow.bytes_rcvd;
            match flow.role {
                Role::Client => h.active_client += 1,
                Role::Server => h.active_server += 1,
            }
            let protocol = crate::ndpi::classify(flow.proto, flow.server_port(), &flow.comm);
            let e = h.ndpi.entry(protocol.name()).or_default();
            e.0 += flow.bytes_sent;
            e.1 += flow.bytes_rcvd;
        }
        FlowValues {
            num_flows: table.len() as u64,
            new_flows: table.new_flows,
            hosts,
            hosts_folded: folded.len() as u64,
        }
    }

    #[test]
    fn from_table_matches_the_reference_under_random_churn() {
        for by_netns in [true, false] {
            churn(by_netns);
        }
    }

    /// [`from_table_matches_the_reference_under_random_churn`] with hosts keyed by address and
    /// network namespace, or by address alone.
    fn churn(by_netns: bool) {
        use crate::flows::{tests::sock, Limits, Update};
        use crate::records::{self, FlSock};
        use std::collections::HashMap;
        let mut t = FlowTable::new(Limits {
            max_flows: 40,
            max_hosts: 3,
            series_ttl_ns: 20,
            udp_idle_timeout_ns: 50,
            hosts_by_netns: by_netns,
            max_peers_per_container: 4,
        });
        let (mut saw_other, mut saw_expiry) = (false, false);
        let mut live: HashMap<u64, FlSock> = HashMap::new();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut rand = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let ips = [
            "10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "0.0.0.0",
        ];
        let ports = [0u16, 80, 443, 5432, 40000];
        for step in 0..3000u64 {
            let mut s = sock(
                [
                    records::ROLE_CLIENT,
                    records::ROLE_SERVER,
                    records::ROLE_UNKNOWN,
                ][rand(3) as usize],
                [records::IPPROTO_TCP, records::IPPROTO_UDP][rand(2) as usize],
                &format!(
                    "{}:{}",
                    // The addresses in use drift, so hosts go idle and expire.
                    ips[((rand(3) + step / 400) % 6) as usize],
                    ports[rand(5) as usize]
                ),
                &format!("192.0.2.1:{}", ports[rand(5) as usize]),
            );
            s.bytes_sent = rand(1000);
            s.bytes_rcvd = rand(1000);
            s.last_ns = step;
            s.cgroup_id = rand(4);
            // Two network namespaces, each with the same addresses.
            s.netns += rand(2) as u32;
            if rand(2) == 0 {
                s.pid = 1 + rand(3) as u32;
                let name: &[u8] = [&b"postgres"[..], b"nginx", b"sshd"][rand(3) as usize];
                s.comm[..name.len()].copy_from_slice(name);
            }
            let cookie = rand(60);
            match rand(4) {
                0 | 1 => {
                    // Known cookies keep their first role, protocol and namespace, as the
                    // kernel's would.
                    if let Some(old) = live.get(&cookie) {
                        s.role = old.role;
                        s.protocol = old.protocol;
                        s.netns = old.netns;
                    }
                    t.apply(Update::Open, cookie, &s);
                    live.insert(cookie, s);
                }
                2 => {
                    t.apply(Update::Close, cookie, &s);
                    live.remove(&cookie);
                }
                _ => {
                    let snapshot: Vec<(u64, FlSock)> = live
                        .iter()
                        .filter(|_| rand(4) != 0)
                        .map(|(c, s)| (*c, *s))
                        .collect();
                    let before: Vec<HostKey> = t.hosts().keys().copied().collect();
                    t.refresh(snapshot.iter().map(|(c, s)| (*c, s)), step);
                    // A series ends only by expiring (a new one may take its slot at once).
                    saw_expiry |= before.iter().any(|k| !t.hosts().contains_key(k));
                }
            }
            saw_other |= t.hosts().contains_key(&HostKey::Other);
            t.assert_hosts_consistent();
            for flow in t.flows() {
                assert_eq!(
                    flow.protocol(),
                    crate::ndpi::classify(flow.proto, flow.server_port(), &flow.comm),
                    "{flow:?}"
                );
            }
            assert_eq!(
                FlowValues::from_table(&t),
                reference(&t, by_netns),
                "step {step}"
            );
        }
        assert!(saw_other, "folds were exercised");
        assert!(saw_expiry, "expiries were exercised ({by_netns})");
    }
}

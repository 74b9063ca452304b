//! Peer series (`container:peers`): whom each container's flows talk to. The flow table keeps
//! the peer slots (`flows/peers.rs`: which peers have series, the budget per container, the
//! TTL, the flows ended between gathers); here, each slot's values (its ended flows' totals
//! plus the active flows carrying it, [`peer_values`]) and the series named after their
//! containers, in the containers' order ([`peer_series`]).
#![forbid(unsafe_code)]

use super::workloads::{ContainerSeries, PeerSeries, WorkloadTracker};
use super::FlowSink;
use crate::container::ContainerInfo;
use crate::flows::{Flow, FlowTable, PeerValue, Proto, Role};
use crate::hash::FastMap;
use std::{collections::HashMap, hash::BuildHasher, sync::Arc};

/// The peers' sink: each flow's values added to its peer slot's.
struct PeerSums {
    /// Per peer slot (None: free).
    values: Vec<Option<PeerValue>>,
}

impl FlowSink for PeerSums {
    #[inline]
    fn add(&mut self, flow: &Flow) {
        let Some(Some(v)) = self.values.get_mut(flow.peer_slot()) else {
            return;
        };
        v.active += 1;
        v.totals.bytes_sent += flow.bytes_sent;
        v.totals.bytes_rcvd += flow.bytes_rcvd;
        if flow.proto == Proto::Tcp && flow.srtt_us > 0 {
            v.rtt_sum_us += u64::from(flow.srtt_us);
            v.rtt_samples += 1;
        }
    }
}

/// Every live peer series with this gather's values (after `FlowTable::assign_peers`): its
/// ended flows' and its active flows' values. The interval's RTT samples start over.
pub fn peer_values(table: &mut FlowTable) -> Vec<PeerValue> {
    let mut slots = Vec::new();
    peer_values_into(table, &mut slots);
    slots.into_iter().flatten().collect()
}

/// [`peer_values`] per peer slot (None: a free slot), into `slots` (cleared first; a gather
/// passes the last one's, for its allocation).
pub fn peer_values_into(table: &mut FlowTable, slots: &mut Vec<Option<PeerValue>>) {
    table.peer_slots(slots);
    let mut sums = PeerSums {
        values: std::mem::take(slots),
    };
    super::sweep(table, &mut sums);
    *slots = sums.values;
}

/// The peer series of the containers written under their own name (`containers`), in their
/// order, from the table's peer values (one set per container: `tracker`'s owners), each
/// client peer (and DNAT backend) named by the container serving its endpoint on this node,
/// when exactly one does.
pub fn peer_series<S: BuildHasher>(
    table: &FlowTable,
    values: Vec<PeerValue>,
    resolved: &HashMap<u64, Arc<ContainerInfo>, S>,
    tracker: &WorkloadTracker,
    containers: &[ContainerSeries],
) -> Vec<PeerSeries> {
    let slots: Vec<Option<PeerValue>> = values.into_iter().map(Some).collect();
    let mut out = Vec::new();
    peer_series_into(table, &slots, resolved, tracker, containers, &mut out);
    out
}

/// [`peer_series`] from the peer slots' values ([`peer_values_into`]'s: None for a free slot),
/// into `out` (cleared first; a gather passes the last one's, so that its allocation, as large
/// as the node's peer series, is not made and faulted in again at every gather).
pub fn peer_series_into<S: BuildHasher>(
    table: &FlowTable,
    values: &[Option<PeerValue>],
    resolved: &HashMap<u64, Arc<ContainerInfo>, S>,
    tracker: &WorkloadTracker,
    containers: &[ContainerSeries],
    out: &mut Vec<PeerSeries>,
) {
    out.clear();
    // Containers by a small index (one string hash per cgroup and container here, none per
    // series below): their info, and their rank among the named series (NONE: folded into
    // `other`).
    const NONE: u32 = u32::MAX;
    // An endpoint no server flow was met at yet.
    const UNSERVED: u32 = u32::MAX - 1;
    let rank: FastMap<&str, u32> = containers
        .iter()
        .enumerate()
        .filter_map(|(i, c)| Some((c.info.as_ref()?.id.as_str(), i as u32)))
        .collect();
    let mut ids: FastMap<&str, u32> = FastMap::default();
    let mut infos: Vec<(&Arc<ContainerInfo>, u32)> = Vec::new();
    let mut of_cgroup: FastMap<u64, u32> = FastMap::default();
    let mut of_owner: FastMap<u64, u32> = FastMap::default();
    let all = resolved
        .iter()
        .filter(|(_, info)| !info.is_sandbox)
        .map(|(cgroup_id, info)| (Some(*cgroup_id), None, info))
        .chain(
            tracker
                .owners()
                .map(|(owner, info)| (None, Some(owner), info)),
        );
    for (cgroup_id, owner, info) in all {
        let ix = *ids.entry(info.id.as_str()).or_insert_with(|| {
            let r = rank.get(info.id.as_str()).copied().unwrap_or(NONE);
            infos.push((info, r));
            (infos.len() - 1) as u32
        });
        if let Some(cgroup_id) = cgroup_id {
            of_cgroup.insert(cgroup_id, ix);
        }
        if let Some(owner) = owner {
            of_owner.insert(owner, ix);
        }
    }
    // The endpoints a named container's client peers (or their DNAT backends) are at: which
    // container serves each, from the server flows at them (an endpoint two containers serve,
    // in two namespaces, names neither). Only these are looked up, in a map as small as the
    // peers asking.
    let mut servers: FastMap<std::net::SocketAddr, u32> = FastMap::default();
    for v in values.iter().flatten() {
        let Some(key) = v.key else { continue };
        if of_owner
            .get(&v.owner)
            .is_none_or(|&ix| infos[ix as usize].1 == NONE)
        {
            continue;
        }
        let remote = key.remote.map(|ip| std::net::SocketAddr::new(ip, key.port));
        for endpoint in remote.into_iter().chain(key.backend) {
            servers.insert(endpoint, UNSERVED);
        }
    }
    if !servers.is_empty() {
        for flow in table.flows() {
            if flow.role != Role::Server || flow.local.ip().is_unspecified() {
                continue;
            }
            let Some(known) = servers.get_mut(&flow.local) else {
                continue;
            };
            let Some(&ix) = of_cgroup.get(&flow.cgroup_id) else {
                continue;
            };
            *known = match *known {
                UNSERVED => ix,
                k if k == ix => ix,
                _ => NONE,
            };
        }
    }
    let serving = |endpoint: Option<std::net::SocketAddr>| {
        let ix = *servers.get(&endpoint?)?;
        infos.get(ix as usize).map(|(info, _)| Arc::clone(info))
    };
    // Each value's container (its index in `infos`) and that container's rank (NONE: not
    // written under its name).
    let (ixs, ranks): (Vec<u32>, Vec<u32>) = values
        .iter()
        .map(|v| match v.as_ref().and_then(|v| of_owner.get(&v.owner)) {
            Some(&ix) => (ix, infos[ix as usize].1),
            None => (NONE, NONE),
        })
        .unzip();
    // The series in the containers' order (a counting sort of the values' indexes by rank),
    // then each container's few by peer (`other`, None, sorts first: moved last); each series
    // is built once, in its place. A container's series are one per peer already: all its
    // cgroups' flows count in them.
    let mut start = vec![0u32; containers.len() + 1];
    for &rank in &ranks {
        if rank != NONE {
            start[rank as usize + 1] += 1;
        }
    }
    for i in 1..start.len() {
        start[i] += start[i - 1];
    }
    let mut next = start.clone();
    let mut order = vec![0u32; start[containers.len()] as usize];
    for (i, &rank) in ranks.iter().enumerate() {
        if rank != NONE {
            let at = &mut next[rank as usize];
            order[*at as usize] = i as u32;
            *at += 1;
        }
    }
    let key = |i: u32| values[i as usize].as_ref().and_then(|v| v.key);
    let by_peer = |i: &u32| (key(*i).is_none(), key(*i));
    for run in start.windows(2) {
        order[run[0] as usize..run[1] as usize].sort_unstable_by_key(by_peer);
    }
    out.extend(order.into_iter().filter_map(|i| {
        let v = values[i as usize].as_ref()?;
        Some({
            let (peer, backend) = match v.key {
                Some(key) => (
                    serving(key.remote.map(|ip| std::net::SocketAddr::new(ip, key.port))),
                    serving(key.backend),
                ),
                None => (None, None),
            };
            PeerSeries {
                container: Arc::clone(infos[ixs[i as usize] as usize].0),
                key: v.key,
                peer,
                backend,
                active: v.active,
                totals: v.totals,
                rtt_sum_us: v.rtt_sum_us,
                rtt_samples: v.rtt_samples,
            }
        })
    }));
}

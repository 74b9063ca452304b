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
    let mut sums = PeerSums {
        values: table.peer_slots(),
    };
    super::sweep(table, &mut sums);
    sums.values.into_iter().flatten().collect()
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
    for v in &values {
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
    let series: Vec<(u32, PeerSeries)> = values
        .into_iter()
        .filter_map(|v| {
            let (container, rank) = infos[*of_owner.get(&v.owner)? as usize];
            if rank == NONE {
                return None;
            }
            let (peer, backend) = match v.key {
                Some(key) => (
                    serving(key.remote.map(|ip| std::net::SocketAddr::new(ip, key.port))),
                    serving(key.backend),
                ),
                None => (None, None),
            };
            Some((
                rank,
                PeerSeries {
                    container: Arc::clone(container),
                    key: v.key,
                    peer,
                    backend,
                    active: v.active,
                    totals: v.totals,
                    rtt_sum_us: v.rtt_sum_us,
                    rtt_samples: v.rtt_samples,
                },
            ))
        })
        .collect();
    // In the containers' order (one sort of plain words: the series themselves are large),
    // then each container's few by peer (`other`, None, sorts first: moved last). A
    // container's series are one per peer already: all its cgroups' flows count in them.
    let mut order: Vec<u64> = series
        .iter()
        .enumerate()
        .map(|(i, (rank, _))| u64::from(*rank) << 32 | i as u64)
        .collect();
    order.sort_unstable();
    let by_peer = |i: &u64| {
        let key = series[(*i & 0xffff_ffff) as usize].1.key;
        (key.is_none(), key)
    };
    for run in order.chunk_by_mut(|a, b| a >> 32 == b >> 32) {
        run.sort_unstable_by_key(by_peer);
    }
    let mut slots: Vec<Option<PeerSeries>> = series.into_iter().map(|(_, s)| Some(s)).collect();
    order
        .into_iter()
        .map(|i| {
            slots[(i & 0xffff_ffff) as usize]
                .take()
                .expect("each series once")
        })
        .collect()
}

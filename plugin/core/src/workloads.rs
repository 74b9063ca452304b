//! Per-container and per-pod values from the flow table: the seed's `container:*` / `pod:*`
//! series and their extensions (docs/metrics.md). Pure: the caller resolves cgroup ids to
//! containers and passes the time; this module keeps only which series are alive (the
//! `series_ttl_secs` rule) and the `max_containers` fold.
#![forbid(unsafe_code)]

use crate::container::ContainerInfo;
use crate::flows::{Failures, FlowTable, PeerKey, PeerTotals, PeerValue, Proto, Role};
use crate::hash::FastMap;
use crate::rtt::{RttBuckets, RttSlot};
use std::{
    collections::{HashMap, HashSet},
    hash::BuildHasher,
    sync::Arc,
};

/// Flows of one role, with the sums the RTT means need.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RoleStats {
    /// Active flows in this role.
    pub flows: u64,
    /// TCP flows with an RTT sample.
    pub rtt_samples: u64,
    /// Sum of their srtt, µs.
    pub srtt_sum_us: u64,
    /// Sum of their RTT variance, µs.
    pub rttvar_sum_us: u64,
}

impl RoleStats {
    /// Mean srtt in ms, to the microsecond (the kernel's resolution), or None without a sample.
    pub fn rtt_ms(&self) -> Option<f64> {
        mean_ms(self.srtt_sum_us, self.rtt_samples)
    }

    /// Mean RTT variance in ms, to the microsecond, or None without a sample.
    pub fn rttvar_ms(&self) -> Option<f64> {
        mean_ms(self.rttvar_sum_us, self.rtt_samples)
    }

    fn add(&mut self, other: &RoleStats) {
        self.flows += other.flows;
        self.rtt_samples += other.rtt_samples;
        self.srtt_sum_us += other.srtt_sum_us;
        self.rttvar_sum_us += other.rttvar_sum_us;
    }
}

/// The mean of `n` values summing to `sum_us` µs, in ms rounded to the µs: digits below the
/// kernel's resolution would only be noise (and cost the encoder its fast path).
fn mean_ms(sum_us: u64, n: u64) -> Option<f64> {
    (n > 0).then(|| (sum_us as f64 / n as f64).round() / 1e3)
}

/// What one container (or pod, or the `other` fold) has at a gather.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WorkloadStats {
    /// Active flows as client.
    pub client: RoleStats,
    /// Active flows as server.
    pub server: RoleStats,
    /// Bytes sent (counter).
    pub bytes_sent: u64,
    /// Bytes received (counter).
    pub bytes_rcvd: u64,
    /// Flows started as client (counter).
    pub new_client: u64,
    /// Flows started as server (counter).
    pub new_server: u64,
    /// TCP retransmissions (counter).
    pub retrans: u64,
    /// The srtt distribution of its TCP flows, per role (see [`RttDistribution`]). In
    /// [`CgroupActive`], only `interval`: the active flows' samples of this gather.
    pub rtt: RttSlot,
    /// TCP connections that failed, by reason and role (counters).
    pub failures: Failures,
}

impl WorkloadStats {
    fn add(&mut self, other: &WorkloadStats) {
        self.rtt.add(&other.rtt);
        self.client.add(&other.client);
        self.server.add(&other.server);
        self.bytes_sent += other.bytes_sent;
        self.bytes_rcvd += other.bytes_rcvd;
        self.new_client += other.new_client;
        self.new_server += other.new_server;
        self.retrans += other.retrans;
        self.failures.add(&other.failures);
    }
}

/// One `container:` series.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerSeries {
    /// The container, or None for the `container=other` fold.
    pub info: Option<Arc<ContainerInfo>>,
    /// Its values.
    pub stats: WorkloadStats,
}

/// One `pod:` series.
#[derive(Debug, Clone, PartialEq)]
pub struct PodSeries {
    /// Pod name (`other` for the fold).
    pub name: String,
    /// Pod namespace, when known.
    pub namespace: Option<String>,
    /// Running containers of the pod, sandbox excluded.
    pub num_containers: u64,
    /// Its values: means over all flows of its containers.
    pub stats: WorkloadStats,
}

/// The container and pod series of one gather.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WorkloadValues {
    /// Sorted by short id; `other` last.
    pub containers: Vec<ContainerSeries>,
    /// Sorted by (namespace, name); `other` last.
    pub pods: Vec<PodSeries>,
    /// The named containers' peers, in `containers`' order, then by peer; each container's
    /// `other` last.
    pub peers: Vec<PeerSeries>,
    /// Series folded into `other` in this gather.
    pub series_dropped: u64,
}

/// One `container:peers` series: whom a container's flows talk to.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerSeries {
    /// The container.
    pub container: Arc<ContainerInfo>,
    /// The peer; None for the container's `other`.
    pub key: Option<PeerKey>,
    /// The container serving the peer's endpoint, when it is on this node (client flows).
    pub peer: Option<Arc<ContainerInfo>>,
    /// The container serving the DNAT backend, when it is on this node.
    pub backend: Option<Arc<ContainerInfo>>,
    /// Active flows (gauge).
    pub active: u64,
    /// Connections, bytes and failures (counters).
    pub totals: PeerTotals,
    /// Sum of this interval's RTT samples (srtt, µs).
    pub rtt_sum_us: u64,
    /// Number of this interval's RTT samples.
    pub rtt_samples: u64,
}

impl PeerSeries {
    /// Mean srtt of the interval's samples, in ms to the µs, or None without a sample.
    pub fn rtt_ms(&self) -> Option<f64> {
        mean_ms(self.rtt_sum_us, self.rtt_samples)
    }
}

/// The peer series of the containers written under their own name (`containers`), in their
/// order, from the table's peer values: a container's cgroups summed, and each client peer (and
/// DNAT backend) named by the container serving its endpoint on this node, when exactly one
/// does.
pub fn peer_series<S: BuildHasher>(
    table: &FlowTable,
    values: Vec<PeerValue>,
    resolved: &HashMap<u64, Arc<ContainerInfo>, S>,
    containers: &[ContainerSeries],
) -> Vec<PeerSeries> {
    // Containers by a small index (one string hash per cgroup here, none per series below):
    // their info, and their rank among the named series (NONE: folded into `other`).
    const NONE: u32 = u32::MAX;
    let rank: HashMap<&str, u32> = containers
        .iter()
        .enumerate()
        .filter_map(|(i, c)| Some((c.info.as_ref()?.id.as_str(), i as u32)))
        .collect();
    let mut ids: HashMap<&str, u32> = HashMap::new();
    let mut infos: Vec<(&Arc<ContainerInfo>, u32)> = Vec::new();
    let mut of_cgroup: FastMap<u64, u32> = FastMap::default();
    for (cgroup_id, info) in resolved {
        if info.is_sandbox {
            continue;
        }
        let ix = *ids.entry(info.id.as_str()).or_insert_with(|| {
            let r = rank.get(info.id.as_str()).copied().unwrap_or(NONE);
            infos.push((info, r));
            (infos.len() - 1) as u32
        });
        of_cgroup.insert(*cgroup_id, ix);
    }
    // Local endpoints served by containers: a server flow's local address and port (an
    // endpoint two containers serve, in two namespaces, names neither).
    let mut servers: FastMap<std::net::SocketAddr, u32> = FastMap::default();
    for flow in table.flows() {
        if flow.role != Role::Server || flow.local.ip().is_unspecified() {
            continue;
        }
        let Some(&ix) = of_cgroup.get(&flow.cgroup_id) else {
            continue;
        };
        servers
            .entry(flow.local)
            .and_modify(|known| {
                if *known != ix {
                    *known = NONE;
                }
            })
            .or_insert(ix);
    }
    let serving = |endpoint: Option<std::net::SocketAddr>| {
        let ix = *servers.get(&endpoint?)?;
        infos.get(ix as usize).map(|(info, _)| Arc::clone(info))
    };
    let series: Vec<(u32, PeerSeries)> = values
        .into_iter()
        .filter_map(|v| {
            let (container, rank) = infos[*of_cgroup.get(&v.cgroup_id)? as usize];
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
    // then each container's few by peer (`other`, None, sorts first: moved last); then a
    // container's cgroups' series of one peer summed.
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
    let mut out: Vec<PeerSeries> = Vec::with_capacity(slots.len());
    for i in order {
        let next = slots[(i & 0xffff_ffff) as usize]
            .take()
            .expect("each series once");
        match out.last_mut() {
            Some(kept) if Arc::ptr_eq(&kept.container, &next.container) && kept.key == next.key => {
                kept.active += next.active;
                kept.totals.add(&next.totals);
                kept.rtt_sum_us += next.rtt_sum_us;
                kept.rtt_samples += next.rtt_samples;
            }
            _ => out.push(next),
        }
    }
    out
}

/// A container that has, or recently had, flows.
#[derive(Debug)]
struct Tracked {
    info: Arc<ContainerInfo>,
    cgroups: Vec<u64>,
    last_active_ns: u64,
    /// Its RTT samples since its series started (the `rtt_buckets` counters).
    rtt_cumulative: RttBuckets,
    /// Its cgroups' ended flows' samples (`CgroupTotals::rtt_closed`) at the last gather: the
    /// next gather's interval takes the ones beyond.
    rtt_closed_seen: RttBuckets,
}

/// Which containers have series, across gathers.
#[derive(Debug)]
pub struct WorkloadTracker {
    ttl_ns: u64,
    max_containers: usize,
    tracked: FastMap<String, Tracked>,
}

/// The short id of a series' container (None for `other`).
fn short_id(series: &ContainerSeries) -> Option<&str> {
    series.info.as_ref().map(|i| i.short_id.as_str())
}

impl WorkloadTracker {
    /// A tracker writing a container's series until `ttl_secs` after its last flow, at most
    /// `max_containers` named series per gather.
    ///
    /// A container's series is written while it has active flows, and with zeros for
    /// `ttl_secs` after its last one (so charts drop to zero before the series ends).
    pub fn new(ttl_secs: u64, max_containers: usize) -> WorkloadTracker {
        WorkloadTracker {
            ttl_ns: ttl_secs.saturating_mul(1_000_000_000),
            max_containers,
            tracked: FastMap::default(),
        }
    }

    /// Number of containers with live series (bounded: they expire after the TTL).
    pub fn len(&self) -> usize {
        self.tracked.len()
    }

    /// Whether no container has a series.
    pub fn is_empty(&self) -> bool {
        self.tracked.is_empty()
    }

    /// The cgroups of the containers with series (the caller keeps resolving them).
    pub fn cgroups(&self) -> impl Iterator<Item = u64> + '_ {
        self.tracked
            .values()
            .flat_map(|t| t.cgroups.iter().copied())
    }

    /// Computes this gather's series. `active` is [`active_by_cgroup`] of `table` (which gives
    /// the cumulative counters); `resolved` maps cgroup ids to their container (absent: a host
    /// process). `pod_containers` gives, per `namespace/pod`, how many of its containers run
    /// (sandbox excluded) when the caller knows; otherwise the containers with series count.
    /// `now_ns` is any monotonic clock.
    pub fn update<S: BuildHasher, T: BuildHasher>(
        &mut self,
        table: &FlowTable,
        active: &ActiveByCgroup,
        resolved: &HashMap<u64, Arc<ContainerInfo>, S>,
        touched: &HashSet<u64, T>,
        pod_containers: &HashMap<String, u64>,
        now_ns: u64,
    ) -> WorkloadValues {
        // Containers with active flows, or whose flows started or ended since the last gather
        // (even ones shorter than the interval), are active now.
        for cgroup_id in active.keys().chain(touched.iter()) {
            let Some(info) = resolved.get(cgroup_id).filter(|i| !i.is_sandbox) else {
                continue;
            };
            let tracked = match self.tracked.get_mut(info.id.as_str()) {
                Some(tracked) => tracked,
                None => self
                    .tracked
                    .entry(info.id.clone())
                    .or_insert_with(|| Tracked {
                        info: info.clone(),
                        cgroups: Vec::new(),
                        last_active_ns: now_ns,
                        rtt_cumulative: RttBuckets::default(),
                        rtt_closed_seen: RttBuckets::default(),
                    }),
            };
            tracked.last_active_ns = now_ns;
            if !tracked.cgroups.contains(cgroup_id) {
                tracked.cgroups.push(*cgroup_id);
            }
        }
        // Containers whose last flow is older than the TTL end their series.
        let ttl = self.ttl_ns;
        self.tracked
            .retain(|_, t| now_ns.saturating_sub(t.last_active_ns) <= ttl);
        // Every tracked container: active values plus its cgroups' cumulative counters.
        let mut all: Vec<(Arc<ContainerInfo>, WorkloadStats, u64)> = self
            .tracked
            .values_mut()
            .map(|t| {
                let mut stats = WorkloadStats::default();
                let mut rtt_closed = RttBuckets::default();
                for cg in &t.cgroups {
                    if let Some(a) = active.get(cg) {
                        stats.add(&a.stats);
                    }
                    let totals = table.cgroup_totals(*cg);
                    stats.bytes_sent += totals.bytes_sent;
                    stats.bytes_rcvd += totals.bytes_rcvd;
                    stats.retrans += totals.retrans;
                    stats.new_client += totals.new_client;
                    stats.new_server += totals.new_server;
                    rtt_closed.add(&totals.rtt_closed);
                    stats.failures.add(&totals.failures);
                }
                rtt_interval(t, &mut stats, rtt_closed);
                (t.info.clone(), stats, t.last_active_ns)
            })
            .collect();
        // Beyond `max_containers`, the busiest keep their own series; ties go to the most
        // recently active, then the smaller id, for stable output. Only a partition: the named
        // series are sorted by id below.
        let mut values = WorkloadValues::default();
        let mut other: Option<WorkloadStats> = None;
        let mut pod_other: Option<WorkloadStats> = None;
        if all.len() > self.max_containers {
            let busy = |s: &WorkloadStats| s.client.flows + s.server.flows;
            all.select_nth_unstable_by(self.max_containers, |a, b| {
                busy(&b.1)
                    .cmp(&busy(&a.1))
                    .then(b.2.cmp(&a.2))
                    .then_with(|| a.0.id.cmp(&b.0.id))
            });
            for (info, stats, _) in all.drain(self.max_containers..) {
                values.series_dropped += 1;
                if info.pod.is_some() {
                    pod_other.get_or_insert_with(Default::default).add(&stats);
                }
                other.get_or_insert_with(Default::default).add(&stats);
            }
        }
        let mut named: Vec<ContainerSeries> = all
            .into_iter()
            .map(|(info, stats, _)| ContainerSeries {
                info: Some(info),
                stats,
            })
            .collect();
        // Pods of the named containers: sorted by (namespace, name), then each run of equal
        // keys summed (a sort compares fewer strings than a BTreeMap's inserts; no hash map,
        // as pod names come from the cluster's users).
        let mut by_pod: Vec<(Option<&str>, &str, &WorkloadStats)> = named
            .iter()
            .filter_map(|series| {
                let info = series.info.as_ref()?;
                Some((
                    info.namespace.as_deref(),
                    info.pod.as_deref()?,
                    &series.stats,
                ))
            })
            .collect();
        by_pod.sort_unstable_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        let mut key = String::new();
        for group in by_pod.chunk_by(|a, b| a.0 == b.0 && a.1 == b.1) {
            let (namespace, name) = (group[0].0, group[0].1);
            let mut stats = WorkloadStats::default();
            for (_, _, s) in group {
                stats.add(s);
            }
            let seen = group.len() as u64;
            key.clear();
            key.push_str(namespace.unwrap_or(""));
            key.push('/');
            key.push_str(name);
            values.pods.push(PodSeries {
                // The cgroup tree's count when known (idle containers too), else those with series.
                num_containers: pod_containers.get(&key).copied().unwrap_or(seen),
                name: name.to_string(),
                namespace: namespace.map(str::to_string),
                stats,
            });
        }
        if let Some(stats) = pod_other {
            values.pods.push(PodSeries {
                name: "other".into(),
                namespace: None,
                num_containers: 0,
                stats,
            });
        }
        // By short id; the first 8 bytes compared as one word, as most ids differ there.
        let head = |s: &ContainerSeries| head8(short_id(s).unwrap_or(""));
        named.sort_unstable_by(|a, b| {
            head(a)
                .cmp(&head(b))
                .then_with(|| short_id(a).cmp(&short_id(b)))
        });
        values.containers = named;
        if let Some(stats) = other {
            values
                .containers
                .push(ContainerSeries { info: None, stats });
        }
        values
    }
}

/// Completes a container's RTT distribution: this interval's samples are its active flows' (in
/// `stats` already) and its flows that ended since the last gather (`rtt_closed`, its cgroups'
/// cumulative samples of ended flows, beyond those seen then); they add to its counters.
fn rtt_interval(t: &mut Tracked, stats: &mut WorkloadStats, rtt_closed: RttBuckets) {
    let ended = rtt_closed.since(&t.rtt_closed_seen);
    let none = RttBuckets::default();
    if stats.rtt.as_ref().is_none() && ended == none && t.rtt_cumulative == none {
        // Never a sample: nothing to write, nothing allocated.
        return;
    }
    let rtt = stats.rtt.get_mut();
    rtt.interval.add(&ended);
    t.rtt_closed_seen = rtt_closed;
    t.rtt_cumulative.add(&rtt.interval);
    rtt.cumulative = t.rtt_cumulative;
}

/// The first 8 bytes of `s` as a big-endian word (zero-padded): comparing two of these orders
/// strings as their bytes do, up to the 8th byte; equal words need the full comparison.
fn head8(s: &str) -> u64 {
    let bytes = s.as_bytes();
    let mut word = [0u8; 8];
    let n = bytes.len().min(8);
    word[..n].copy_from_slice(&bytes[..n]);
    u64::from_be_bytes(word)
}

/// The active flows of one cgroup, summed in one pass over the table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CgroupActive {
    /// A process of the cgroup (the first nonzero pid of its flows; 0 if none is known), for
    /// resolving cgroups outside the cgroup2 tree.
    pub pid: u32,
    /// Its active flows' values (the cumulative counters are not included).
    pub stats: WorkloadStats,
}

/// [`CgroupActive`] per cgroup id.
pub type ActiveByCgroup = FastMap<u64, CgroupActive>;

/// Sums the table's active flows per cgroup into `out` (cleared first; it keeps its capacity,
/// so a caller that reuses it allocates nothing in the steady state). One hash lookup per flow:
/// everything after this works per cgroup.
pub fn active_by_cgroup(table: &FlowTable, out: &mut ActiveByCgroup) {
    out.clear();
    for flow in table.flows() {
        let a = out.entry(flow.cgroup_id).or_default();
        if a.pid == 0 {
            a.pid = flow.pid;
        }
        let stats = &mut a.stats;
        let role = match flow.role {
            Role::Client => &mut stats.client,
            Role::Server => &mut stats.server,
        };
        role.flows += 1;
        if flow.proto == Proto::Tcp && flow.srtt_us > 0 {
            role.rtt_samples += 1;
            role.srtt_sum_us += u64::from(flow.srtt_us);
            role.rttvar_sum_us += u64::from(flow.rttvar_us);
            let buckets = &mut stats.rtt.get_mut().interval;
            match flow.role {
                Role::Client => buckets.client.record(flow.srtt_us),
                Role::Server => buckets.server.record(flow.srtt_us),
            }
        }
        stats.bytes_sent += flow.bytes_sent;
        stats.bytes_rcvd += flow.bytes_rcvd;
        stats.retrans += u64::from(flow.retrans);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::Runtime;
    use crate::flows::{tests::sock, Limits, Scope, Update};
    use crate::records::{ROLE_CLIENT, ROLE_SERVER};

    fn info(id_char: char, name: &str, pod: &str) -> Arc<ContainerInfo> {
        let id: String = std::iter::repeat_n(id_char, 64).collect();
        Arc::new(ContainerInfo {
            short_id: id[..12].to_string(),
            id,
            runtime: Runtime::Containerd,
            name: Some(name.into()),
            pod: Some(pod.into()),
            namespace: Some("shop".into()),
            pod_uid: None,
            sandbox_id: None,
            is_sandbox: false,
            qos: None,
        })
    }

    /// Opens a TCP flow with an RTT sample in cgroup `cg`.
    fn open(t: &mut FlowTable, cookie: u64, cg: u64, role: u8, srtt: u32, rttvar: u32) {
        let mut s = sock(
            role,
            6,
            &format!("10.0.0.1:{}", 40000 + cookie),
            "10.0.0.2:80",
        );
        s.cgroup_id = cg;
        s.srtt_us = srtt;
        s.rttvar_us = rttvar;
        s.bytes_sent = 10;
        t.apply(Update::Open, cookie, &s);
    }

    /// One gather's update, with the active sums computed as the plugin does.
    fn gather<T: BuildHasher>(
        w: &mut WorkloadTracker,
        t: &FlowTable,
        resolved: &HashMap<u64, Arc<ContainerInfo>>,
        touched: &HashSet<u64, T>,
        pod_containers: &HashMap<String, u64>,
        now_ns: u64,
    ) -> WorkloadValues {
        let mut active = ActiveByCgroup::default();
        active_by_cgroup(t, &mut active);
        w.update(t, &active, resolved, touched, pod_containers, now_ns)
    }

    fn table() -> FlowTable {
        FlowTable::new(Limits {
            max_flows: 100,
            max_hosts: 10,
            host_ttl_ns: 300_000_000_000,
            udp_idle_timeout_ns: 1,
            hosts_by_netns: true,
            max_peers: 4,
        })
    }

    #[test]
    fn rtt_means_are_rounded_to_the_microsecond() {
        let role = |sum, n| RoleStats {
            flows: n,
            rtt_samples: n,
            srtt_sum_us: sum,
            rttvar_sum_us: sum / 10,
        };
        // (1000 + 1001 + 1001) / 3 = 1000.67 µs
        assert_eq!(role(3002, 3).rtt_ms(), Some(1.001));
        assert_eq!(role(3002, 3).rttvar_ms(), Some(0.1));
        assert_eq!(
            role(7, 2).rtt_ms(),
            Some(0.004),
            "3.5 µs rounds away from zero"
        );
        assert_eq!(role(0, 0).rtt_ms(), None);
    }

    #[test]
    fn pod_means_are_over_flows_not_over_container_means() {
        let mut t = table();
        open(&mut t, 1, 11, ROLE_CLIENT, 1000, 100);
        open(&mut t, 2, 11, ROLE_CLIENT, 2000, 200);
        open(&mut t, 3, 11, ROLE_CLIENT, 3000, 300);
        open(&mut t, 4, 12, ROLE_CLIENT, 7000, 700);
        open(&mut t, 5, 12, ROLE_SERVER, 0, 0);
        let resolved = HashMap::from([(11, info('a', "a", "p1")), (12, info('b', "b", "p1"))]);
        let mut w = WorkloadTracker::new(300, 10);
        let touched = t.take_touched_cgroups();
        let v = gather(&mut w, &t, &resolved, &touched, &HashMap::new(), 1);
        let a = &v.containers[0].stats;
        assert_eq!(a.client.flows, 3);
        assert_eq!(a.client.rtt_ms(), Some(2.0));
        assert_eq!(a.client.rttvar_ms(), Some(0.2));
        let b = &v.containers[1].stats;
        assert_eq!((b.client.flows, b.server.flows), (1, 1));
        assert_eq!(b.server.rtt_ms(), None, "no sample: the field is left out");
        let pod = &v.pods[0];
        assert_eq!((pod.name.as_str(), pod.num_containers), ("p1", 2));
        assert_eq!(
            pod.stats.client.rtt_ms(),
            Some(3.25),
            "(1+2+3+7)/4, not (2+7)/2"
        );
        assert_eq!(pod.stats.bytes_sent, 50);
    }

    #[test]
    fn a_container_without_flows_is_written_with_zeros_until_the_ttl() {
        let mut t = table();
        open(&mut t, 1, 11, ROLE_CLIENT, 1000, 100);
        let resolved = HashMap::from([(11, info('a', "a", "p1"))]);
        let mut w = WorkloadTracker::new(2, 10);
        let sec = 1_000_000_000;
        let touched = t.take_touched_cgroups();
        let v = gather(&mut w, &t, &resolved, &touched, &HashMap::new(), sec);
        assert_eq!(v.containers[0].stats.client.flows, 1);
        let mut closed = sock(ROLE_CLIENT, 6, "10.0.0.1:40001", "10.0.0.2:80");
        closed.cgroup_id = 11;
        closed.bytes_sent = 99;
        t.apply(Update::Close, 1, &closed);
        let touched = t.take_touched_cgroups();
        let v = gather(&mut w, &t, &resolved, &touched, &HashMap::new(), 2 * sec);
        let stats = &v.containers[0].stats;
        assert_eq!(
            (stats.client.flows, stats.bytes_sent, stats.new_client),
            (0, 99, 1)
        );
        let v = gather(
            &mut w,
            &t,
            &resolved,
            &HashSet::new(),
            &HashMap::new(),
            4 * sec,
        );
        assert_eq!(v.containers.len(), 1, "still within the TTL");
        let v = gather(
            &mut w,
            &t,
            &resolved,
            &HashSet::new(),
            &HashMap::new(),
            5 * sec,
        );
        assert!(
            v.containers.is_empty() && w.is_empty(),
            "gone after the TTL"
        );
    }

    #[test]
    fn rtt_buckets_count_each_flow_once_per_interval_and_accumulate_across_gathers() {
        use crate::rtt::{bucket_of, Buckets};
        let of = |samples: &[u32]| {
            let mut b = Buckets::default();
            for &us in samples {
                b.record(us);
            }
            b
        };
        let close = |t: &mut FlowTable, cookie: u64, role: u8, srtt: u32| {
            let mut s = sock(
                role,
                6,
                &format!("10.0.0.1:{}", 40000 + cookie),
                "10.0.0.2:80",
            );
            s.cgroup_id = 11;
            s.srtt_us = srtt;
            t.apply(Update::Close, cookie, &s);
        };
        let mut t = table();
        // A UDP flow has no RTT: never counted.
        let mut udp = sock(ROLE_CLIENT, 17, "10.0.0.1:5353", "10.0.0.2:53");
        udp.cgroup_id = 11;
        t.apply(Update::Open, 99, &udp);
        open(&mut t, 1, 11, ROLE_CLIENT, 1_000, 100);
        open(&mut t, 2, 11, ROLE_CLIENT, 20_000, 100);
        open(&mut t, 3, 11, ROLE_SERVER, 300, 10);
        open(&mut t, 5, 11, ROLE_SERVER, 0, 0); // no sample yet: not counted
        let resolved = HashMap::from([(11, info('a', "a", "p1"))]);
        let mut w = WorkloadTracker::new(2, 10);
        let sec = 1_000_000_000;
        let step = |t: &mut FlowTable, w: &mut WorkloadTracker, now| {
            let touched = t.take_touched_cgroups();
            let v = gather(w, t, &resolved, &touched, &HashMap::new(), now);
            (
                v.containers.first().map(|c| c.stats.rtt.get()),
                v.pods.first().map(|p| p.stats.rtt.get()),
            )
        };
        let (rtt, pod) = step(&mut t, &mut w, sec);
        let rtt = rtt.unwrap();
        assert_eq!(rtt.interval.client, of(&[1_000, 20_000]));
        assert_eq!(rtt.interval.server, of(&[300]));
        assert_eq!(rtt.cumulative, rtt.interval);
        assert_eq!(pod, Some(rtt), "the pod of one container: the same");
        // Between two gathers: flow 2 ends at 30 ms, flow 4 opens and ends at 2 ms.
        close(&mut t, 2, ROLE_CLIENT, 30_000);
        open(&mut t, 4, 11, ROLE_CLIENT, 1_500, 100);
        close(&mut t, 4, ROLE_CLIENT, 2_000);
        let rtt = step(&mut t, &mut w, 2 * sec).0.unwrap();
        assert_eq!(rtt.interval.client, of(&[1_000, 30_000, 2_000]));
        assert_eq!(rtt.interval.server, of(&[300]));
        assert_eq!(
            rtt.cumulative.client,
            of(&[1_000, 20_000, 1_000, 30_000, 2_000])
        );
        assert_eq!(rtt.cumulative.server.total(), 2);
        // Nothing happened: the live flows count once more, the ended ones not again.
        let rtt = step(&mut t, &mut w, 2 * sec).0.unwrap();
        assert_eq!(rtt.interval.client, of(&[1_000]));
        assert_eq!(rtt.cumulative.client.total(), 6);
        assert_eq!(rtt.cumulative.client.0[bucket_of(1_000)], 3);
        // Every flow ends: their final values count once, then the interval is empty.
        close(&mut t, 1, ROLE_CLIENT, 1_000);
        close(&mut t, 3, ROLE_SERVER, 400);
        close(&mut t, 5, ROLE_SERVER, 0);
        t.refresh(std::iter::empty(), 3 * sec); // the UDP flow ends: missing from the map
        assert!(t.is_empty());
        let rtt = step(&mut t, &mut w, 3 * sec).0.unwrap();
        assert_eq!(rtt.interval.client, of(&[1_000]));
        assert_eq!(rtt.interval.server, of(&[400]));
        let rtt = step(&mut t, &mut w, 4 * sec).0.unwrap();
        assert_eq!(rtt.interval, Default::default());
        assert_eq!(rtt.interval.client.quantile_ms(0.5), None);
        assert_eq!(
            (rtt.cumulative.client.total(), rtt.cumulative.server.total()),
            (7, 4),
            "counters stay"
        );
        // After the TTL the series ends; when the container comes back its counters restart.
        assert_eq!(step(&mut t, &mut w, 6 * sec).0, None);
        t.retain_cgroups(|_| false);
        open(&mut t, 6, 11, ROLE_CLIENT, 5_000, 100);
        let rtt = step(&mut t, &mut w, 7 * sec).0.unwrap();
        assert_eq!(rtt.cumulative.client, of(&[5_000]));
        assert_eq!(rtt.cumulative.server.total(), 0);
    }

    #[test]
    fn beyond_max_containers_the_least_busy_fold_into_other() {
        let mut t = table();
        for (cookie, cg) in [(1, 11), (2, 11), (3, 12), (4, 13), (5, 13), (6, 13)] {
            open(&mut t, cookie, cg, ROLE_CLIENT, 1000, 100);
        }
        let resolved = HashMap::from([
            (11, info('a', "a", "p1")),
            (12, info('b', "b", "p1")),
            (13, info('c', "c", "p2")),
        ]);
        let mut w = WorkloadTracker::new(300, 2);
        let touched = t.take_touched_cgroups();
        let v = gather(&mut w, &t, &resolved, &touched, &HashMap::new(), 1);
        let names: Vec<_> = v
            .containers
            .iter()
            .map(|c| c.info.as_ref().map(|i| i.name.clone().unwrap()))
            .collect();
        assert_eq!(names, [Some("a".into()), Some("c".into()), None]);
        assert_eq!(v.containers[2].stats.client.flows, 1);
        assert_eq!(v.series_dropped, 1);
    }

    #[test]
    fn peers_are_named_by_the_one_container_serving_them_and_summed_per_container() {
        let mut t = table();
        // Cgroup 1 (container a, two cgroups: 1 and 4) calls 10.0.0.9:80, served by container
        // b (cgroup 2), and 127.0.0.1:80, served by b and by c (cgroup 3) in their own
        // namespaces: that one names neither.
        let flow =
            |t: &mut FlowTable, cookie: u64, cg: u64, role: u8, local: &str, remote: &str| {
                let mut s = sock(role, 6, local, remote);
                s.cgroup_id = cg;
                s.bytes_sent = 10;
                t.apply(Update::Open, cookie, &s);
            };
        flow(&mut t, 1, 1, ROLE_CLIENT, "10.0.0.1:40001", "10.0.0.9:80");
        flow(&mut t, 2, 4, ROLE_CLIENT, "10.0.0.1:40002", "10.0.0.9:80");
        flow(&mut t, 3, 1, ROLE_CLIENT, "127.0.0.1:40003", "127.0.0.1:80");
        flow(&mut t, 4, 2, ROLE_SERVER, "10.0.0.9:80", "10.0.0.1:40001");
        flow(&mut t, 5, 2, ROLE_SERVER, "127.0.0.1:80", "127.0.0.1:40009");
        flow(&mut t, 6, 3, ROLE_SERVER, "127.0.0.1:80", "127.0.0.1:40003");
        let (a, b, c) = (
            info('a', "a", "web"),
            info('b', "b", "db"),
            info('c', "c", "cache"),
        );
        let resolved: HashMap<u64, Arc<ContainerInfo>> = HashMap::from([
            (1, a.clone()),
            (4, a.clone()),
            (2, b.clone()),
            (3, c.clone()),
        ]);
        let mut w = WorkloadTracker::new(300, 100);
        let values = gather(&mut w, &t, &resolved, &HashSet::new(), &HashMap::new(), 1);
        t.assign_peers(|_| Scope::Series, |_, _, _| None, 1);
        let v = t.peer_values();
        let peers = peer_series(&t, v, &resolved, &values.containers);
        let of_a: Vec<(String, u64, u64, Option<&str>)> = peers
            .iter()
            .filter(|p| p.container.id == a.id)
            .map(|p| {
                let key = p.key.unwrap();
                let peer = p.peer.as_ref().map(|i| i.short_id.as_str());
                (key.endpoint(), p.active, p.totals.bytes_sent, peer)
            })
            .collect();
        assert_eq!(
            of_a,
            [
                ("10.0.0.9:80".to_string(), 2, 20, Some(b.short_id.as_str())),
                ("127.0.0.1:80".to_string(), 1, 10, None),
            ]
        );
        // Only containers written under their own name get peers.
        let named = &values.containers[..1];
        let v = t.peer_values();
        let peers = peer_series(&t, v, &resolved, named);
        assert!(peers
            .iter()
            .all(|p| p.container.id == named[0].info.as_ref().unwrap().id));
    }
}

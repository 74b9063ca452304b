//! Per-container and per-pod values: the seed's `container:*` / `pod:*` series and their
//! extensions (docs/metrics.md), from the active flows' sums per cgroup ([`ActiveByCgroup`],
//! the cgroups' sink of the first pass) and the table's cumulative totals per cgroup. Pure: the
//! caller resolves cgroup ids to containers and passes the time; this module keeps only which
//! series are alive (the `series_ttl_secs` rule), the `max_containers` fold and each
//! container's peer owner (`scope`, for `flows/peers.rs`).
#![forbid(unsafe_code)]

use super::FlowSink;
use crate::container::ContainerInfo;
use crate::flows::{
    CgroupTotals, Counters, Flow, FlowTable, PeerKey, PeerTotals, Proto, Role, Scope,
};
use crate::hash::FastMap;
use crate::rtt::{RttBuckets, RttDistribution, RttSlot};
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
    pub(crate) rtt_samples: u64,
    /// Sum of their srtt, µs.
    pub(crate) srtt_sum_us: u64,
    /// Sum of their RTT variance, µs.
    pub(crate) rttvar_sum_us: u64,
}

impl RoleStats {
    /// Mean srtt in ms, to the microsecond (the kernel's resolution), or None without a sample.
    pub(crate) fn rtt_ms(&self) -> Option<f64> {
        mean_ms(self.srtt_sum_us, self.rtt_samples)
    }

    /// Mean RTT variance in ms, to the microsecond, or None without a sample.
    pub(crate) fn rttvar_ms(&self) -> Option<f64> {
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
    /// Bytes, flows started, retransmissions and failures (counters). In [`CgroupActive`],
    /// the active flows' bytes and retransmissions only.
    pub(crate) counters: Counters,
    /// The srtt distribution of its TCP flows, per role (see [`RttDistribution`]). In
    /// [`CgroupActive`], only `interval`: the active flows' samples of this gather.
    pub rtt: RttSlot,
}

impl WorkloadStats {
    fn add(&mut self, other: &WorkloadStats) {
        self.rtt.add(&other.rtt);
        self.client.add(&other.client);
        self.server.add(&other.server);
        self.counters.add(&other.counters);
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
    pub(crate) rtt_sum_us: u64,
    /// Number of this interval's RTT samples.
    pub(crate) rtt_samples: u64,
}

impl PeerSeries {
    /// Mean srtt of the interval's samples, in ms to the µs, or None without a sample.
    pub(crate) fn rtt_ms(&self) -> Option<f64> {
        mean_ms(self.rtt_sum_us, self.rtt_samples)
    }
}

/// What a pod or `other` series keeps of the containers whose series ended while it lives.
#[derive(Debug, Clone, Default, PartialEq)]
struct Retired {
    counters: Counters,
    rtt: RttBuckets,
}

impl Retired {
    /// Adds the last values of a container whose series ends.
    fn retire(&mut self, t: &Tracked) {
        self.counters.add(&t.last);
        self.rtt.add(&t.rtt_cumulative);
    }

    /// Adds these counters to a series' values (its RTT buckets' counters only).
    fn add_to(&self, stats: &mut WorkloadStats) {
        stats.counters.add(&self.counters);
        if self.rtt != RttBuckets::default() {
            stats.rtt.get_mut().cumulative.add(&self.rtt);
        }
    }
}

/// Where a container's series is written, from its first gather to its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// Not decided yet: its series begins at this gather.
    New,
    /// Its own series.
    Named,
    /// Summed into `container=other` (and `pod=other` when in a pod).
    Other,
}

/// A container that has, or recently had, flows.
#[derive(Debug)]
struct Tracked {
    info: Arc<ContainerInfo>,
    /// Its cgroups with active flows, or the last one it had (the others' counters are in
    /// `retained`).
    cgroups: Vec<u64>,
    last_active_ns: u64,
    /// Its peer series' owner (`Scope::Series`): unique to this series of the container.
    owner: u64,
    place: Place,
    /// The cumulative counters of the cgroups dropped from `cgroups`, taken out of the table.
    retained: CgroupTotals,
    /// Its counters as last written (its RTT buckets' are `rtt_cumulative`).
    last: Counters,
    /// Its RTT samples since its series started (the `rtt_buckets` counters).
    rtt_cumulative: RttBuckets,
    /// Its cgroups' ended flows' samples (`CgroupTotals::rtt_closed`, with `retained`'s) at the
    /// last gather: the next gather's interval takes the ones beyond.
    rtt_closed_seen: RttBuckets,
}

/// Which containers have series, across gathers.
#[derive(Debug)]
pub struct WorkloadTracker {
    series_ttl_ns: u64,
    max_containers: usize,
    tracked: FastMap<String, Tracked>,
    /// The next container series' owner.
    next_owner: u64,
    /// Per pod with a series (`namespace/name`), what its containers whose series ended
    /// counted. A std map: pod names come from the cluster's users.
    pods_retired: HashMap<String, Retired>,
    /// The same for `pod=other` and `container=other`.
    pod_other_retired: Retired,
    other_retired: Retired,
    /// Each tracked cgroup's container, by its index in one `update` (kept for its capacity).
    of_cgroup: FastMap<u64, u32>,
}

/// The short id of a series' container (None for `other`).
fn short_id(series: &ContainerSeries) -> Option<&str> {
    series.info.as_ref().map(|i| i.short_id.as_str())
}

impl WorkloadTracker {
    /// A tracker writing a container's series until `series_ttl_secs` after its last flow, at most
    /// `max_containers` named series at once.
    ///
    /// A container's series is written while it has active flows, and with zeros for
    /// `series_ttl_secs` after its last one (so charts drop to zero before the series ends).
    pub fn new(series_ttl_secs: u64, max_containers: usize) -> WorkloadTracker {
        WorkloadTracker {
            series_ttl_ns: series_ttl_secs.saturating_mul(1_000_000_000),
            max_containers,
            tracked: FastMap::default(),
            next_owner: 1,
            pods_retired: HashMap::new(),
            pod_other_retired: Retired::default(),
            other_retired: Retired::default(),
            of_cgroup: FastMap::default(),
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

    /// The cgroups of the containers with series (the caller keeps resolving them, and keeps
    /// their cumulative counters in the table).
    pub fn cgroups(&self) -> impl Iterator<Item = u64> + '_ {
        self.tracked
            .values()
            .flat_map(|t| t.cgroups.iter().copied())
    }

    /// Each container with series: its peer series' owner and its container.
    pub(crate) fn owners(&self) -> impl Iterator<Item = (u64, &Arc<ContainerInfo>)> {
        self.tracked.values().map(|t| (t.owner, &t.info))
    }

    /// The peer scope of a cgroup of container `info` (after [`update`](Self::update)): its
    /// container's series' owner, so that every cgroup of one container shares its peer series
    /// and budget; a sandbox or a container without series has none.
    pub fn scope(&self, info: &ContainerInfo) -> Scope {
        match self.tracked.get(info.id.as_str()) {
            Some(t) if !info.is_sandbox => Scope::Series(t.owner),
            _ => Scope::NoSeries,
        }
    }

    /// Computes this gather's series. `active` is [`active_by_cgroup`] of `table` (which gives
    /// the cumulative counters; a container's idle cgroups' are taken out of it into the
    /// container's own); `resolved` maps cgroup ids to their container (absent: a host
    /// process). `pod_containers` gives, per `namespace/pod`, how many of its containers run
    /// (sandbox excluded) when the caller knows; otherwise the containers with series count.
    /// `now_ns` is any monotonic clock.
    ///
    /// Counters never go back while a series lives: a container keeps its place (its own
    /// series or `other`) for its series' life, and a pod or `other` keeps what the containers
    /// whose series ended counted until its own series ends (when its last container's does).
    pub fn update<S: BuildHasher, T: BuildHasher>(
        &mut self,
        table: &mut FlowTable,
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
                None => {
                    let owner = self.next_owner;
                    self.next_owner += 1;
                    self.tracked
                        .entry(info.id.clone())
                        .or_insert_with(|| Tracked {
                            info: info.clone(),
                            cgroups: Vec::new(),
                            last_active_ns: now_ns,
                            owner,
                            place: Place::New,
                            retained: CgroupTotals::default(),
                            last: Counters::default(),
                            rtt_cumulative: RttBuckets::default(),
                            rtt_closed_seen: RttBuckets::default(),
                        })
                }
            };
            tracked.last_active_ns = now_ns;
            if !tracked.cgroups.contains(cgroup_id) {
                tracked.cgroups.push(*cgroup_id);
            }
        }
        // Containers whose last flow is older than the TTL end their series; their pod and
        // `other` keep what they counted.
        let ttl = self.series_ttl_ns;
        let (pods_retired, pod_other, other) = (
            &mut self.pods_retired,
            &mut self.pod_other_retired,
            &mut self.other_retired,
        );
        let mut key = String::new();
        self.tracked.retain(|_, t| {
            if now_ns.saturating_sub(t.last_active_ns) <= ttl {
                return true;
            }
            match (t.place, &t.info.pod) {
                (Place::Named, Some(pod)) => {
                    pod_key(&mut key, t.info.namespace.as_deref(), pod);
                    match pods_retired.get_mut(key.as_str()) {
                        Some(r) => r.retire(t),
                        None => pods_retired.entry(key.clone()).or_default().retire(t),
                    }
                }
                (Place::Other, pod) => {
                    other.retire(t);
                    if pod.is_some() {
                        pod_other.retire(t);
                    }
                }
                _ => {}
            }
            false
        });
        // Every tracked container: active values plus its cgroups' cumulative counters. A
        // cgroup without active flows leaves its list (the last one stays), its counters kept
        // as the container's own. The cgroups' values are then read in their own order (the
        // active sums' dense vector, the table's map of totals) and each added to its
        // container's (a cgroup is one container's): sequential reads, where a lookup per
        // cgroup of each container was a cache miss each.
        let of_cgroup = &mut self.of_cgroup;
        of_cgroup.clear();
        let mut totals: Vec<CgroupTotals> = Vec::with_capacity(self.tracked.len());
        let mut all: Vec<(&mut Tracked, WorkloadStats)> = Vec::with_capacity(self.tracked.len());
        for t in self.tracked.values_mut() {
            let Tracked {
                cgroups, retained, ..
            } = &mut *t;
            let last = cgroups.last().copied();
            let idle = cgroups.iter().all(|cg| !active.contains_key(cg));
            cgroups.retain(|cg| {
                let keep = active.contains_key(cg) || (idle && Some(*cg) == last);
                if !keep {
                    retained.add(&table.take_cgroup_totals(*cg));
                }
                keep
            });
            let ix = all.len() as u32;
            for cg in cgroups.iter() {
                of_cgroup.insert(*cg, ix);
            }
            totals.push(*retained);
            all.push((t, WorkloadStats::default()));
        }
        for (cg, a) in active.iter() {
            if let Some(&ix) = of_cgroup.get(cg) {
                all[ix as usize].1.add(&a.stats);
            }
        }
        for (cg, t) in table.cgroup_totals_iter() {
            if let Some(&ix) = of_cgroup.get(&cg) {
                totals[ix as usize].add(t);
            }
        }
        for ((t, stats), totals) in all.iter_mut().zip(&totals) {
            stats.counters.add(&totals.counters);
            rtt_interval(t, stats, totals.rtt_closed);
            t.last = stats.counters;
        }
        // Containers whose series begins take the free named places, the busiest first (then
        // the smaller id, for stable output); the rest are counted in `other` until their
        // series ends. A place is never taken back: a series sums the same flows all its life.
        let named = all.iter().filter(|(t, _)| t.place == Place::Named).count();
        let mut new: Vec<usize> = (0..all.len())
            .filter(|&i| all[i].0.place == Place::New)
            .collect();
        let busy = |s: &WorkloadStats| s.client.flows + s.server.flows;
        new.sort_unstable_by(|&a, &b| {
            busy(&all[b].1)
                .cmp(&busy(&all[a].1))
                .then_with(|| all[a].0.info.id.cmp(&all[b].0.info.id))
        });
        let room = self.max_containers.saturating_sub(named);
        for (n, i) in new.into_iter().enumerate() {
            all[i].0.place = if n < room { Place::Named } else { Place::Other };
        }
        let mut values = WorkloadValues::default();
        let mut other: Option<WorkloadStats> = None;
        let mut pod_other: Option<WorkloadStats> = None;
        let mut named: Vec<ContainerSeries> = Vec::with_capacity(all.len());
        for (t, stats) in all {
            if t.place == Place::Named {
                named.push(ContainerSeries {
                    info: Some(t.info.clone()),
                    stats,
                });
                continue;
            }
            values.series_dropped += 1;
            if t.info.pod.is_some() {
                pod_other.get_or_insert_with(Default::default).add(&stats);
            }
            other.get_or_insert_with(Default::default).add(&stats);
        }
        // `other` lives while it has members; so does `pod=other`.
        match other.as_mut() {
            Some(stats) => self.other_retired.add_to(stats),
            None => self.other_retired = Retired::default(),
        }
        match pod_other.as_mut() {
            Some(stats) => self.pod_other_retired.add_to(stats),
            None => self.pod_other_retired = Retired::default(),
        }
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
        let mut live_retired = 0;
        for group in by_pod.chunk_by(|a, b| a.0 == b.0 && a.1 == b.1) {
            let (namespace, name) = (group[0].0, group[0].1);
            let mut stats = WorkloadStats::default();
            for (_, _, s) in group {
                stats.add(s);
            }
            let seen = group.len() as u64;
            pod_key(&mut key, namespace, name);
            if let Some(retired) = self.pods_retired.get(key.as_str()) {
                retired.add_to(&mut stats);
                live_retired += 1;
            }
            values.pods.push(PodSeries {
                // The cgroup tree's count when known (idle containers too), else those with series.
                num_containers: pod_containers.get(&key).copied().unwrap_or(seen),
                name: name.to_string(),
                namespace: namespace.map(str::to_string),
                stats,
            });
        }
        // A pod whose last container's series ended ends its own: what it kept goes.
        if live_retired < self.pods_retired.len() {
            let live: HashSet<String> = values
                .pods
                .iter()
                .map(|p| {
                    pod_key(&mut key, p.namespace.as_deref(), &p.name);
                    key.clone()
                })
                .collect();
            self.pods_retired.retain(|k, _| live.contains(k));
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

/// A pod's key, `namespace/name`, into `out`.
fn pod_key(out: &mut String, namespace: Option<&str>, name: &str) {
    out.clear();
    out.push_str(namespace.unwrap_or(""));
    out.push('/');
    out.push_str(name);
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

/// [`CgroupActive`] per cgroup id: the cgroups' sink of the first pass. Dense: the entries in a
/// vector, an index beside it, reused from gather to gather.
#[derive(Debug, Default)]
pub struct ActiveByCgroup {
    /// Cgroup id -> its entry in `entries`.
    index: FastMap<u64, u32>,
    entries: Vec<(u64, CgroupActive)>,
}

impl ActiveByCgroup {
    /// The cgroups with active flows.
    pub fn keys(&self) -> impl Iterator<Item = &u64> {
        self.entries.iter().map(|(id, _)| id)
    }

    /// The sums of a cgroup with active flows.
    pub fn get(&self, cgroup_id: &u64) -> Option<&CgroupActive> {
        let i = *self.index.get(cgroup_id)?;
        Some(&self.entries[i as usize].1)
    }

    /// Each cgroup with active flows and its sums, in a dense vector's order.
    pub fn iter(&self) -> impl Iterator<Item = (&u64, &CgroupActive)> {
        self.entries.iter().map(|(id, a)| (id, a))
    }

    /// Whether a cgroup has active flows.
    pub fn contains_key(&self, cgroup_id: &u64) -> bool {
        self.index.contains_key(cgroup_id)
    }

    /// Cgroups with active flows.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no cgroup has active flows.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// A sink summing a sweep's flows into these entries, reset first (in place: no map slot
    /// nor RTT distribution freed and made again at every gather). [`CgroupSums::finish`] after
    /// the sweep.
    pub(crate) fn sums(&mut self) -> CgroupSums<'_> {
        for (_, a) in &mut self.entries {
            a.reset();
        }
        CgroupSums {
            out: self,
            last: (0, NO_ENTRY),
        }
    }
}

/// [`CgroupSums::last`] before the first flow.
const NO_ENTRY: usize = usize::MAX;

/// The cgroups' sink: one lookup per run of flows of one cgroup (the table keeps a cgroup's
/// flows together more often than not).
pub(crate) struct CgroupSums<'a> {
    out: &'a mut ActiveByCgroup,
    /// The last flow's cgroup and its entry.
    last: (u64, usize),
}

impl FlowSink for CgroupSums<'_> {
    #[inline]
    fn add(&mut self, flow: &Flow) {
        if self.last.1 == NO_ENTRY || flow.cgroup_id != self.last.0 {
            let out = &mut *self.out;
            let next = out.entries.len() as u32;
            let i = *out.index.entry(flow.cgroup_id).or_insert(next);
            if i == next {
                out.entries.push((flow.cgroup_id, CgroupActive::default()));
            }
            self.last = (flow.cgroup_id, i as usize);
        }
        self.out.entries[self.last.1].1.add_flow(flow);
    }
}

impl CgroupSums<'_> {
    /// After the sweep: exactly the cgroups with active flows remain; a cgroup without an RTT
    /// sample has no distribution.
    pub(crate) fn finish(self) {
        let out = self.out;
        out.entries
            .retain(|(_, a)| a.stats.client.flows + a.stats.server.flows > 0);
        out.index.clear();
        for (i, (id, a)) in out.entries.iter_mut().enumerate() {
            out.index.insert(*id, i as u32);
            if a.stats.client.rtt_samples + a.stats.server.rtt_samples == 0 {
                a.stats.rtt = RttSlot::default();
            }
        }
    }
}

/// Sums the table's active flows per cgroup into `out`: afterwards it holds exactly the cgroups
/// with active flows (the gather takes them from [`super::first_pass`], with the hosts').
pub fn active_by_cgroup(table: &FlowTable, out: &mut ActiveByCgroup) {
    let mut sums = out.sums();
    super::sweep(table, &mut sums);
    sums.finish();
}

impl CgroupActive {
    /// Zero, keeping the RTT distribution's allocation.
    fn reset(&mut self) {
        let rtt = std::mem::take(&mut self.stats.rtt);
        *self = CgroupActive::default();
        self.stats.rtt = rtt;
        if self.stats.rtt.as_ref().is_some() {
            *self.stats.rtt.get_mut() = RttDistribution::default();
        }
    }

    /// Counts one active flow.
    #[inline]
    fn add_flow(&mut self, flow: &Flow) {
        if self.pid == 0 {
            self.pid = flow.pid;
        }
        let stats = &mut self.stats;
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
        stats.counters.bytes_sent += flow.bytes_sent;
        stats.counters.bytes_rcvd += flow.bytes_rcvd;
        stats.counters.retrans += u64::from(flow.retrans);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::peer_series;
    use crate::container::Runtime;
    use crate::flows::{tests::sock, Failures, Limits, Update};
    use crate::records::{ROLE_CLIENT, ROLE_SERVER};
    use std::collections::BTreeMap;

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
        t: &mut FlowTable,
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
            series_ttl_ns: 300_000_000_000,
            udp_idle_timeout_ns: 1,
            hosts_by_netns: true,
            max_peers_per_container: 4,
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
        let v = gather(&mut w, &mut t, &resolved, &touched, &HashMap::new(), 1);
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
        assert_eq!(pod.stats.counters.bytes_sent, 50);
    }

    #[test]
    fn a_container_without_flows_is_written_with_zeros_until_the_ttl() {
        let mut t = table();
        open(&mut t, 1, 11, ROLE_CLIENT, 1000, 100);
        let resolved = HashMap::from([(11, info('a', "a", "p1"))]);
        let mut w = WorkloadTracker::new(2, 10);
        let sec = 1_000_000_000;
        let touched = t.take_touched_cgroups();
        let v = gather(&mut w, &mut t, &resolved, &touched, &HashMap::new(), sec);
        assert_eq!(v.containers[0].stats.client.flows, 1);
        let mut closed = sock(ROLE_CLIENT, 6, "10.0.0.1:40001", "10.0.0.2:80");
        closed.cgroup_id = 11;
        closed.bytes_sent = 99;
        t.apply(Update::Close, 1, &closed);
        let touched = t.take_touched_cgroups();
        let v = gather(
            &mut w,
            &mut t,
            &resolved,
            &touched,
            &HashMap::new(),
            2 * sec,
        );
        let stats = &v.containers[0].stats;
        assert_eq!(
            (
                stats.client.flows,
                stats.counters.bytes_sent,
                stats.counters.new_client
            ),
            (0, 99, 1)
        );
        let v = gather(
            &mut w,
            &mut t,
            &resolved,
            &HashSet::new(),
            &HashMap::new(),
            4 * sec,
        );
        assert_eq!(v.containers.len(), 1, "still within the TTL");
        let v = gather(
            &mut w,
            &mut t,
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
        let v = gather(&mut w, &mut t, &resolved, &touched, &HashMap::new(), 1);
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
        let values = gather(
            &mut w,
            &mut t,
            &resolved,
            &HashSet::new(),
            &HashMap::new(),
            1,
        );
        t.assign_peers(|cg| w.scope(&resolved[&cg]), |_, _, _| None, 1);
        let v = crate::aggregate::peer_values(&mut t);
        let peers = peer_series(&t, v, &resolved, &w, &values.containers);
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
        let v = crate::aggregate::peer_values(&mut t);
        let peers = peer_series(&t, v, &resolved, &w, named);
        assert!(peers
            .iter()
            .all(|p| p.container.id == named[0].info.as_ref().unwrap().id));
    }

    // Counters that never go back: tables of gathers through the whole sequence the plugin runs
    // (containers, peers, the table's cgroup counters pruned), every counter of every series
    // checked against its value at the gather before while the series lives.

    const SEC: u64 = 1_000_000_000;

    /// A table whose peer series live 2 s after their last flow, `max_peers_per_container` per container.
    fn table_ttl2(max_peers_per_container: u32) -> FlowTable {
        FlowTable::new(Limits {
            max_flows: 1000,
            max_hosts: 100,
            series_ttl_ns: 2 * SEC,
            udp_idle_timeout_ns: 300 * SEC,
            hosts_by_netns: true,
            max_peers_per_container,
        })
    }

    /// A client flow of cgroup `cg` from local port `port` to `remote`, `bytes` each way: opened
    /// (or updated), or closed.
    fn client(t: &mut FlowTable, update: Update, cookie: u64, cg: u64, remote: &str, bytes: u64) {
        let mut s = sock(
            ROLE_CLIENT,
            6,
            &format!("10.0.0.1:{}", 30000 + cookie),
            remote,
        );
        s.cgroup_id = cg;
        s.bytes_sent = bytes;
        s.bytes_rcvd = bytes;
        s.srtt_us = 1000 + cookie as u32;
        s.retrans = (bytes / 100) as u32;
        t.apply(update, cookie, &s);
    }

    /// One gather as the plugin runs it.
    fn full_gather(
        w: &mut WorkloadTracker,
        t: &mut FlowTable,
        resolved: &HashMap<u64, Arc<ContainerInfo>>,
        now_ns: u64,
    ) -> WorkloadValues {
        let touched = t.take_touched_cgroups();
        let mut active = ActiveByCgroup::default();
        active_by_cgroup(t, &mut active);
        let mut v = w.update(t, &active, resolved, &touched, &HashMap::new(), now_ns);
        t.assign_peers(
            |cg| resolved.get(&cg).map_or(Scope::NoSeries, |i| w.scope(i)),
            |_, _, _| None,
            now_ns,
        );
        let peers = crate::aggregate::peer_values(t);
        v.peers = peer_series(t, peers, resolved, w, &v.containers);
        v.series_dropped += t.take_peers_folded();
        let keep: HashSet<u64> = w.cgroups().collect();
        t.retain_cgroups(|id| keep.contains(&id) || active.contains_key(&id));
        v
    }

    fn failures(f: &Failures) -> [u64; 8] {
        [
            f.refused_as_client,
            f.timed_out_as_client,
            f.timed_out_as_server,
            f.unreachable_as_client,
            f.aborted_as_client,
            f.reset_as_client,
            f.reset_as_server,
            f.dropped_as_server,
        ]
    }

    fn workload_counters(s: &WorkloadStats) -> Vec<u64> {
        let mut c = vec![
            s.counters.bytes_sent,
            s.counters.bytes_rcvd,
            s.counters.new_client,
            s.counters.new_server,
            s.counters.retrans,
        ];
        c.extend(failures(&s.counters.failures));
        let rtt = s.rtt.get().cumulative;
        c.extend(rtt.client.0);
        c.extend(rtt.server.0);
        c
    }

    /// Every series of a gather with its counters, by name.
    fn series_counters(v: &WorkloadValues) -> BTreeMap<String, Vec<u64>> {
        let mut out = BTreeMap::new();
        for c in &v.containers {
            let name = c.info.as_ref().map_or("other", |i| i.short_id.as_str());
            out.insert(format!("container:{name}"), workload_counters(&c.stats));
        }
        for p in &v.pods {
            let ns = p.namespace.as_deref().unwrap_or("");
            out.insert(format!("pod:{ns}/{}", p.name), workload_counters(&p.stats));
        }
        for p in &v.peers {
            let peer = p.key.map_or("other".into(), |k| k.endpoint());
            let t = &p.totals;
            let c = vec![t.connections, t.bytes_sent, t.bytes_rcvd, t.failures];
            let name = format!("peers:{}/{peer}", p.container.short_id);
            assert!(out.insert(name.clone(), c).is_none(), "{name} twice");
        }
        out
    }

    /// Checks that no counter of a series goes back while it lives (from one gather to the
    /// next: a series missing from a gather has ended).
    #[derive(Default)]
    struct Monotonic {
        last: BTreeMap<String, Vec<u64>>,
        gathers: usize,
    }

    impl Monotonic {
        fn check(&mut self, v: &WorkloadValues) -> BTreeMap<String, Vec<u64>> {
            self.gathers += 1;
            let now = series_counters(v);
            for (name, values) in &now {
                if let Some(before) = self.last.get(name) {
                    for (i, (b, n)) in before.iter().zip(values).enumerate() {
                        assert!(
                            n >= b,
                            "gather {}: {name} counter {i} went back from {b} to {n}",
                            self.gathers
                        );
                    }
                }
            }
            self.last = now.clone();
            now
        }
    }

    fn pod_bytes(v: &WorkloadValues, pod: &str) -> Option<u64> {
        v.pods
            .iter()
            .find(|p| p.name == pod)
            .map(|p| p.stats.counters.bytes_sent)
    }

    #[test]
    fn a_pod_keeps_what_its_expired_sidecar_counted_while_it_lives() {
        let mut t = table_ttl2(4);
        let (app, sidecar) = (info('a', "app", "web"), info('s', "sidecar", "web"));
        let resolved = HashMap::from([(11, app.clone()), (12, sidecar.clone())]);
        let mut w = WorkloadTracker::new(2, 10);
        let mut m = Monotonic::default();
        // (second, what happens before that gather)
        client(&mut t, Update::Open, 1, 11, "10.0.0.9:80", 10);
        for (cookie, bytes) in [(2, 54), (3, 54), (4, 54)] {
            client(&mut t, Update::Open, cookie, 12, "10.0.0.8:53", bytes);
            client(&mut t, Update::Close, cookie, 12, "10.0.0.8:53", bytes);
        }
        let v = full_gather(&mut w, &mut t, &resolved, SEC);
        m.check(&v);
        assert_eq!(pod_bytes(&v, "web"), Some(10 + 3 * 54));
        for sec in 2..=8 {
            client(&mut t, Update::Open, 1, 11, "10.0.0.9:80", 10 * sec);
            let v = full_gather(&mut w, &mut t, &resolved, sec * SEC);
            m.check(&v);
            let sidecar_alive = v.containers.iter().any(|c| {
                c.info
                    .as_ref()
                    .is_some_and(|i| i.short_id == sidecar.short_id)
            });
            assert_eq!(sidecar_alive, sec <= 3, "second {sec}");
            assert_eq!(
                pod_bytes(&v, "web"),
                Some(10 * sec + 3 * 54),
                "second {sec}"
            );
            let pod = &v.pods[0].stats;
            assert_eq!(
                (pod.counters.new_client, pod.client.flows),
                (4, 1),
                "second {sec}"
            );
        }
        // The app's series ends too: the pod's, and what it kept, go with it.
        client(&mut t, Update::Close, 1, 11, "10.0.0.9:80", 100);
        m.check(&full_gather(&mut w, &mut t, &resolved, 9 * SEC));
        let v = full_gather(&mut w, &mut t, &resolved, 12 * SEC);
        assert!(v.pods.is_empty() && w.pods_retired.is_empty(), "{v:?}");
        client(&mut t, Update::Open, 5, 12, "10.0.0.8:53", 7);
        let v = full_gather(&mut w, &mut t, &resolved, 13 * SEC);
        assert_eq!(pod_bytes(&v, "web"), Some(7), "a new series starts from 0");
    }

    #[test]
    fn a_restarted_container_with_a_new_id_leaves_its_pods_counters_whole() {
        let mut t = table_ttl2(4);
        let (old, new) = (info('o', "app", "web"), info('n', "app", "web"));
        let resolved = HashMap::from([(21, old.clone()), (22, new.clone())]);
        let mut w = WorkloadTracker::new(2, 10);
        let mut m = Monotonic::default();
        let mut expected = 0;
        for sec in 1..=9u64 {
            match sec {
                1 | 2 => client(&mut t, Update::Open, 1, 21, "10.0.0.9:80", 100 * sec),
                3 => {
                    // The old container stops; the new one starts in the next interval.
                    client(&mut t, Update::Close, 1, 21, "10.0.0.9:80", 300);
                    expected = 300;
                }
                _ => client(&mut t, Update::Open, 2, 22, "10.0.0.9:80", 10 * sec),
            }
            let v = full_gather(&mut w, &mut t, &resolved, sec * SEC);
            m.check(&v);
            let pod = pod_bytes(&v, "web").unwrap();
            assert_eq!(
                pod,
                if sec >= 4 {
                    300 + 10 * sec
                } else {
                    100 * sec.min(3)
                }
            );
            assert!(pod >= expected);
        }
        assert_eq!(w.len(), 1, "the old id's series ended");
        assert_eq!(w.pods_retired.len(), 1, "its counters kept by the pod");
    }

    #[test]
    fn a_container_keeps_its_place_named_or_in_other_for_its_series_life() {
        let mut t = table_ttl2(4);
        let (x, y, z) = (
            info('x', "x", "px"),
            info('y', "y", "py"),
            info('z', "z", "pz"),
        );
        let resolved = HashMap::from([(31, x.clone()), (32, y.clone()), (33, z.clone())]);
        let mut w = WorkloadTracker::new(2, 1);
        let mut m = Monotonic::default();
        let names = |v: &WorkloadValues| -> Vec<String> {
            v.containers
                .iter()
                .map(|c| {
                    c.info
                        .as_ref()
                        .map_or("other".into(), |i| i.name.clone().unwrap())
                })
                .collect()
        };
        // y busier at the start: its own series; x in `other`.
        client(&mut t, Update::Open, 1, 31, "10.0.0.9:80", 1000);
        for cookie in 2..=4 {
            client(&mut t, Update::Open, cookie, 32, "10.0.0.9:80", 10);
        }
        let v = full_gather(&mut w, &mut t, &resolved, SEC);
        m.check(&v);
        assert_eq!(names(&v), ["y", "other"]);
        assert_eq!(v.series_dropped, 1);
        // x becomes the busiest: it stays in `other`, y keeps its place.
        for cookie in 5..=10 {
            client(&mut t, Update::Open, cookie, 31, "10.0.0.9:80", 500);
        }
        let v = full_gather(&mut w, &mut t, &resolved, 2 * SEC);
        m.check(&v);
        assert_eq!(names(&v), ["y", "other"]);
        assert_eq!(v.containers[1].stats.client.flows, 7);
        assert_eq!(v.pods.last().unwrap().name, "other");
        // y's flows end and its series too (TTL 2 s); z begins and takes the free place, x
        // stays in `other`, whose counters keep x's.
        for cookie in 2..=4 {
            client(&mut t, Update::Close, cookie, 32, "10.0.0.9:80", 20);
        }
        for sec in 3..=5 {
            let v = full_gather(&mut w, &mut t, &resolved, sec * SEC);
            m.check(&v);
        }
        client(&mut t, Update::Open, 20, 33, "10.0.0.9:80", 5);
        let v = full_gather(&mut w, &mut t, &resolved, 6 * SEC);
        m.check(&v);
        assert_eq!(names(&v), ["z", "other"]);
        // x's flows end: `other` (and `pod=other`) keep x's counters until x's series ends.
        for cookie in [1, 5, 6, 7, 8, 9, 10] {
            client(&mut t, Update::Close, cookie, 31, "10.0.0.9:80", 2000);
        }
        let v = full_gather(&mut w, &mut t, &resolved, 7 * SEC);
        m.check(&v);
        let other = &v.containers[1].stats;
        assert_eq!(
            (other.client.flows, other.counters.bytes_sent),
            (0, 7 * 2000)
        );
        m.check(&full_gather(&mut w, &mut t, &resolved, 8 * SEC));
        let v = full_gather(&mut w, &mut t, &resolved, 10 * SEC);
        m.check(&v);
        assert_eq!(names(&v), ["z"], "x's series ended, and `other`'s with it");
        assert_eq!(v.series_dropped, 0);
        // A new container while z holds the only place: into `other`, from 0.
        client(&mut t, Update::Open, 21, 31, "10.0.0.9:80", 3);
        let v = full_gather(&mut w, &mut t, &resolved, 11 * SEC);
        m.check(&v);
        assert_eq!(names(&v), ["z", "other"]);
        assert_eq!(v.containers[1].stats.counters.bytes_sent, 3);
    }

    #[test]
    fn containers_moving_in_and_out_of_other_never_make_a_counter_go_back() {
        // Six containers in three pods, max_containers 2, flows starting and ending on a fixed
        // pseudo-random schedule over 60 gathers, TTL 2 s: every series checked.
        let mut t = table_ttl2(2);
        let infos: Vec<Arc<ContainerInfo>> = "abcdef"
            .chars()
            .enumerate()
            .map(|(i, c)| info(c, &c.to_string(), ["p0", "p1", "p2"][i % 3]))
            .collect();
        let resolved: HashMap<u64, Arc<ContainerInfo>> = (0..12)
            .map(|cg| (100 + cg, infos[cg as usize % 6].clone()))
            .collect();
        let mut w = WorkloadTracker::new(2, 2);
        let mut m = Monotonic::default();
        let mut open: Vec<(u64, u64, u64)> = Vec::new(); // (cookie, cgroup, bytes)
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        let mut rand = |n: u64| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (x >> 33) % n
        };
        let mut cookie = 0;
        let mut folded = 0;
        for sec in 1..=60u64 {
            for _ in 0..rand(4) {
                cookie += 1;
                let cg = 100 + rand(if sec > 40 { 4 } else { 12 });
                let remote = format!("10.0.{}.1:80", rand(6));
                client(&mut t, Update::Open, cookie, cg, &remote, rand(1000));
                open.push((cookie, cg, 0));
            }
            for f in open.iter_mut() {
                f.2 += rand(100);
            }
            let mut i = 0;
            while i < open.len() {
                let (c, cg, bytes) = open[i];
                let remote = format!("10.0.{}.1:80", c % 6);
                if rand(3) == 0 {
                    client(&mut t, Update::Close, c, cg, &remote, bytes + 1000);
                    open.swap_remove(i);
                } else {
                    i += 1;
                }
            }
            let v = full_gather(&mut w, &mut t, &resolved, sec * SEC);
            m.check(&v);
            folded += v.series_dropped;
            assert!(v.containers.iter().filter(|c| c.info.is_some()).count() <= 2);
            for c in v.containers.iter().filter_map(|c| c.info.as_ref()) {
                let n = v.peers.iter().filter(|p| p.container.id == c.id).count();
                assert!(n <= 3, "at most 2 peers + other per container");
            }
        }
        assert!(folded > 0, "the schedule folds some");
    }

    #[test]
    fn a_container_of_several_cgroups_has_one_peer_budget_and_counters_that_never_go_back() {
        // Container n's processes sit in cgroups 41..=43 (nested sub-cgroups); 2 named peers
        // per container.
        let mut t = table_ttl2(2);
        let n = info('n', "n", "pn");
        let resolved: HashMap<u64, Arc<ContainerInfo>> =
            (41..=43).map(|cg| (cg, n.clone())).collect();
        let mut w = WorkloadTracker::new(2, 10);
        let mut m = Monotonic::default();
        // Each cgroup talks to two peers of its own, and all three to 10.0.9.9:80.
        for (i, cg) in (41..=43u64).enumerate() {
            let i = i as u64;
            client(
                &mut t,
                Update::Open,
                10 * i + 1,
                cg,
                &format!("10.0.{i}.1:80"),
                900,
            );
            client(
                &mut t,
                Update::Open,
                10 * i + 2,
                cg,
                &format!("10.0.{i}.2:80"),
                800,
            );
            client(&mut t, Update::Open, 10 * i + 3, cg, "10.0.9.9:80", 1000);
        }
        let v = full_gather(&mut w, &mut t, &resolved, SEC);
        m.check(&v);
        let peers: Vec<String> = v
            .peers
            .iter()
            .map(|p| p.key.map_or("other".into(), |k| k.endpoint()))
            .collect();
        assert_eq!(peers.len(), 3, "2 + other for the container: {peers:?}");
        assert_eq!(peers[0], "10.0.0.1:80");
        assert_eq!(peers[1], "10.0.9.9:80");
        let connections: u64 = v.peers.iter().map(|p| p.totals.connections).sum();
        assert_eq!(connections, 9);
        assert_eq!(
            v.peers[1].active, 3,
            "one series for the three cgroups' flows"
        );
        // The sub-cgroups' flows end one cgroup at a time; new ones come in a new sub-cgroup.
        let mut cookie = 100;
        for (sec, ending) in [(2u64, 41u64), (3, 42), (5, 43)] {
            for k in 1..=3 {
                let i = ending - 41;
                let remote = match k {
                    3 => "10.0.9.9:80".to_string(),
                    _ => format!("10.0.{i}.{k}:80"),
                };
                client(&mut t, Update::Close, 10 * i + k, ending, &remote, 2000);
            }
            cookie += 1;
            client(
                &mut t,
                Update::Open,
                cookie,
                40 + sec * 10,
                "10.0.9.9:80",
                5,
            );
            let cg = 40 + sec * 10;
            let resolved: HashMap<u64, Arc<ContainerInfo>> = resolved
                .iter()
                .map(|(k, v)| (*k, v.clone()))
                .chain([(cg, n.clone())])
                .collect();
            let v = full_gather(&mut w, &mut t, &resolved, sec * SEC);
            m.check(&v);
            assert!(v.peers.len() <= 3);
            // Only the cgroups with active flows stay listed (the last one when none has).
            let listed = w.cgroups().count();
            let active = t.flows().map(|f| f.cgroup_id).collect::<HashSet<_>>().len();
            assert_eq!(listed, active.max(1), "second {sec}");
        }
        let c = &full_gather(&mut w, &mut t, &resolved, 6 * SEC).containers[0].stats;
        // 9 flows of 2000 each way ended, 3 of 5 live; 9 + 3 connections.
        assert_eq!(
            (c.counters.bytes_sent, c.counters.new_client),
            (9 * 2000 + 3 * 5, 12)
        );
        assert_eq!(c.counters.retrans, 9 * 20);
    }
}

//! One gather as a pipeline: its steps in their order over [`Sources`] (the kernel, the node's
//! cgroups and runtimes, conntrack, sysfs and the clocks, which the plugin implements), from
//! the kernel's records to the encoded lines. Pure but for what `Sources` does, so that the
//! order, the folds, the TTLs and the internal counters of a sequence of gathers are tested
//! here with fake sources, without root.
#![forbid(unsafe_code)]

use crate::aggregate::{
    self,
    workloads::{PeerSeries, WorkloadTracker, WorkloadValues},
    ActiveByCgroup, FlowValues,
};
use crate::container::ContainerInfo;
use crate::flows::{FlowTable, PeerValue, Proto, Scope};
use crate::hash::{FastMap, FastSet};
use crate::iface::IfaceCounters;
use crate::internal::{Event, InternalEvents, LogHook};
use crate::metrics;
use crate::records::FlSock;
use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

/// Most DNAT backend lookups in one gather (one per new client flow; a conntrack lookup takes
/// 4-10 µs): a gather meeting more new client flows gives the rest no backend (counted in
/// `flowlens:internal,dnat_lookups_skipped`).
pub const MAX_DNAT_LOOKUPS: usize = 10_000;

/// Most times a gather releases the flow table for DNAT lookups: the flows that arrived
/// during one round's lookups are looked up in the next; those that arrive during the last
/// go without a backend (counted with the skipped ones).
const DNAT_ROUNDS: usize = 3;

/// A client flow's (protocol, local, remote) addresses: what a DNAT lookup asks about.
type DnatQuery = (Proto, SocketAddr, SocketAddr);

/// Locks the flow table; a panic of another holder left it as consistent as any update leaves
/// it (each is one method call), so its poison is ignored.
fn lock(table: &Mutex<FlowTable>) -> MutexGuard<'_, FlowTable> {
    table.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The kernel's own counters, cumulative since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelCounters {
    /// Records read from the ring buffer.
    pub events_received: u64,
    /// Events lost: ring buffer full, programs' runs the kernel skipped, sockets whose close
    /// and destruction were both missed.
    pub events_lost: u64,
    /// Sockets the kernel maps had no room for.
    pub flows_evicted: u64,
    /// Probes attached and working.
    pub probes_attached: u64,
    /// Probes that failed to load or attach.
    pub probes_failed: u64,
}

/// The container metadata reader's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MetadataCounters {
    /// Entries in its caches now.
    pub cache_entries: u64,
    /// Files and directories skipped since start.
    pub skipped: u64,
    /// Names left out since start.
    pub names_dropped: u64,
}

/// What a gather reads, in the order [`Gather::run`] calls it. The plugin implements it with
/// the real kernel and node; the tests with fakes. The methods given the table run while the
/// gather holds it; `ifaces` and `dnat_backend` run with it released.
pub trait Sources {
    /// A monotonic clock in ns, the kernel's (`bpf_ktime_get_ns`): expiries, TTLs, durations.
    fn monotonic_ns(&mut self) -> u64;
    /// The wall clock in ns since the Unix epoch: the gather's timestamp. None: before 1970.
    fn wall_clock_ns(&mut self) -> Option<i64>;
    /// The interfaces' counters (none when they cannot be read).
    fn ifaces(&mut self) -> Vec<IfaceCounters>;
    /// Whether flows are collected (the eBPF collector runs): without, a gather writes the
    /// interfaces and `flowlens:internal` only, and calls nothing below.
    fn has_kernel(&self) -> bool;
    /// Applies the kernel's pending events to `table`.
    fn apply_events(&mut self, table: &mut FlowTable);
    /// Has the kernel read the live sockets' counters (an iterator run over every open file:
    /// called with the table released).
    fn read_live(&mut self);
    /// Adds the listeners' drops the last [`read_live`](Self::read_live) found since the read
    /// before to their cgroups in `table`.
    fn add_listen_drops(&mut self, table: &mut FlowTable);
    /// The kernel's socket map: (cookie, socket), at most `limit` entries.
    fn snapshot(&mut self, limit: usize) -> Vec<(u64, FlSock)>;
    /// Removes the entries of the flows the table ended from the kernel's map.
    fn forget(&mut self, cookies: &[u64]);
    /// The container of a cgroup (`pid`: a process in it, 0 when none is known); None: a host
    /// process, or not known yet.
    fn resolve(&mut self, cgroup_id: u64, pid: u32) -> Option<Arc<ContainerInfo>>;
    /// How many containers of `info`'s pod run (the sandbox left out), when known.
    fn running_in_pod(&mut self, cgroup_id: u64, info: &ContainerInfo) -> Option<u64>;
    /// The cgroups `resolve` met before it could resolve them: asked for again next gather.
    fn take_deferred(&mut self) -> Vec<u64>;
    /// Whether DNAT backends are looked up.
    fn serves_dnat(&self) -> bool;
    /// The endpoint behind a client connection's destination when DNAT rewrote it. Called with
    /// the flow table released (a synchronous kernel request each).
    fn dnat_backend(
        &mut self,
        proto: Proto,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> Option<SocketAddr>;
    /// Lets the container metadata caches forget every cgroup but `wanted`.
    fn prune(&mut self, wanted: &FastSet<u64>);
    /// The kernel's counters.
    fn kernel_counters(&mut self) -> KernelCounters;
    /// The container metadata reader's counters.
    fn metadata_counters(&mut self) -> MetadataCounters;
}

/// The wall clock was before 1970: no timestamp to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockBefore1970;

/// What one gather wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// Lines appended.
    pub lines: u64,
    /// Their timestamp, ns since the Unix epoch.
    pub timestamp_ns: i64,
}

/// The state kept from gather to gather but the flow table (shared with the plugin's reader
/// thread, so passed in): which containers have series, and the internal events.
#[derive(Debug)]
pub struct Gather {
    shape: metrics::Shape,
    /// The most entries read from the kernel's socket map (twice `max_flows`).
    snapshot_limit: usize,
    tracker: WorkloadTracker,
    /// Active flows per cgroup, reused from gather to gather (its capacity is kept).
    active: ActiveByCgroup,
    events: InternalEvents,
    /// [`MAX_DNAT_LOOKUPS`] (smaller in tests).
    dnat_budget: usize,
    /// The peer slots' values and the peer series of the last gather, kept for their
    /// allocations (as large as the node's peer series: made anew, they were faulted in at
    /// every gather).
    peer_slots: Vec<Option<PeerValue>>,
    peer_series: Vec<PeerSeries>,
}

impl Gather {
    /// A pipeline writing lines of `shape`, reading at most twice `max_flows` kernel entries;
    /// `tracker` says which containers get series; internal events are logged to `log`.
    pub fn new(
        shape: metrics::Shape,
        max_flows: usize,
        tracker: WorkloadTracker,
        log: LogHook,
    ) -> Gather {
        Gather {
            shape,
            snapshot_limit: max_flows.saturating_mul(2),
            tracker,
            active: ActiveByCgroup::default(),
            events: InternalEvents::new(log),
            dnat_budget: MAX_DNAT_LOOKUPS,
            peer_slots: Vec::new(),
            peer_series: Vec::new(),
        }
    }

    /// The internal events so far.
    pub fn events(&self) -> &InternalEvents {
        &self.events
    }

    /// One gather: reads every source, aggregates, and appends every line to `out`, with one
    /// timestamp. `table` (shared with the collector's event reader, which queues what it
    /// reads while the table is held) is held while the gather reads and updates it, but not
    /// while it reads the interfaces nor while it waits for DNAT lookups.
    pub fn run(
        &mut self,
        table: &Mutex<FlowTable>,
        sources: &mut impl Sources,
        out: &mut Vec<u8>,
    ) -> Result<Written, ClockBefore1970> {
        let started_ns = sources.monotonic_ns();
        let timestamp_ns = sources.wall_clock_ns().ok_or(ClockBefore1970)?;
        let ifaces = sources.ifaces();
        let (flows, workloads, mut internal) = if sources.has_kernel() {
            let (flows, workloads, internal) = self.collect_flows(table, sources);
            (Some(flows), Some(workloads), internal)
        } else {
            (None, None, metrics::Internal::default())
        };
        // Reading the sources and aggregating; encoding (pure, fast) comes after.
        let elapsed_ns = sources.monotonic_ns().saturating_sub(started_ns);
        internal.gather_duration_ms = elapsed_ns as f64 / 1e6;
        let snapshot = metrics::Snapshot {
            ifaces,
            flows,
            workloads,
            internal,
        };
        let lines = metrics::encode(&snapshot, &self.shape, timestamp_ns, out);
        if let Some(workloads) = snapshot.workloads {
            self.peer_series = workloads.peers;
            self.peer_series.clear();
        }
        Ok(Written {
            lines,
            timestamp_ns,
        })
    }

    /// Brings the flow table up to date with the kernel (live counters read with the table
    /// released, then pending events, the listeners' drops and the socket map), aggregates it,
    /// and counts this gather's internal events.
    fn collect_flows(
        &mut self,
        shared: &Mutex<FlowTable>,
        sources: &mut impl Sources,
    ) -> (FlowValues, WorkloadValues, metrics::Internal) {
        sources.read_live();
        let mut table = lock(shared);
        sources.apply_events(&mut table);
        sources.add_listen_drops(&mut table);
        let snapshot = sources.snapshot(self.snapshot_limit);
        let now_ns = sources.monotonic_ns();
        let expired = table.refresh(snapshot.iter().map(|(c, s)| (*c, s)), now_ns);
        sources.forget(&expired);
        // The first pass over the flows: hosts' values, and the cgroups' sums for the
        // containers and pods.
        let values = aggregate::first_pass(&table, &mut self.active);
        let (table, workloads) = self.collect_workloads(table, shared, sources);
        let kernel = sources.kernel_counters();
        let metadata = sources.metadata_counters();
        let events = &mut self.events;
        events.observe_total(Event::EventReceived, kernel.events_received, now_ns);
        events.observe_total(Event::EventLost, kernel.events_lost, now_ns);
        events.observe_total(Event::ConnectFailed, table.connect_failed, now_ns);
        events.observe_total(
            Event::FlowEvicted,
            table.flows_evicted.saturating_add(kernel.flows_evicted),
            now_ns,
        );
        events.record(
            Event::SeriesDropped,
            values.hosts_folded + workloads.series_dropped,
            now_ns,
        );
        events.observe_total(Event::MetadataSkipped, metadata.skipped, now_ns);
        events.observe_total(Event::NameDropped, metadata.names_dropped, now_ns);
        let mut internal = metrics::Internal {
            flows_active: table.len() as u64,
            containers_tracked: self.tracker.len() as u64,
            metadata_cache_entries: metadata.cache_entries,
            probes_attached: kernel.probes_attached,
            probes_failed: kernel.probes_failed,
            ..metrics::Internal::default()
        };
        drop(table);
        events.fill(&mut internal);
        events.end_gather();
        (values, workloads, internal)
    }

    /// Container, pod and peer series from the table: resolves the cgroups of active flows, of
    /// flows that started or ended since the last gather, and of containers that still have
    /// series. `table` is `shared` locked; it is released while DNAT backends are looked up
    /// ([`Self::look_up_backends`]), and the guard held again is returned.
    fn collect_workloads<'t>(
        &mut self,
        mut table: MutexGuard<'t, FlowTable>,
        shared: &'t Mutex<FlowTable>,
        sources: &mut impl Sources,
    ) -> (MutexGuard<'t, FlowTable>, WorkloadValues) {
        let touched = table.take_touched_cgroups();
        // The cgroups' sums of the first pass: everything below works per cgroup.
        let active = &self.active;
        let mut wanted: FastSet<u64> = active.keys().copied().collect();
        wanted.extend(touched.iter().copied());
        wanted.extend(self.tracker.cgroups());
        let mut resolved: FastMap<u64, Arc<ContainerInfo>> = FastMap::default();
        for cgroup_id in &wanted {
            let pid = active.get(cgroup_id).map_or(0, |a| a.pid);
            if let Some(info) = sources.resolve(*cgroup_id, pid) {
                resolved.insert(*cgroup_id, info);
            }
        }
        // Per pod, its running containers (the sandbox left out), from the cgroup tree.
        let mut pod_counts: HashMap<String, u64> = HashMap::new();
        for (cgroup_id, info) in &resolved {
            if let (Some(pod), false) = (&info.pod, info.is_sandbox) {
                let key = format!("{}/{pod}", info.namespace.as_deref().unwrap_or(""));
                if let std::collections::hash_map::Entry::Vacant(slot) = pod_counts.entry(key) {
                    if let Some(n) = sources.running_in_pod(*cgroup_id, info) {
                        slot.insert(n);
                    }
                }
            }
        }
        let now_ns = sources.monotonic_ns();
        let mut values =
            self.tracker
                .update(&mut table, active, &resolved, &touched, &pod_counts, now_ns);
        // Each resolved cgroup's peer scope: its container's series (one budget and one set of
        // peer series per container, whichever of its cgroups a flow is in).
        let scopes: FastMap<u64, Scope> = resolved
            .iter()
            .map(|(cgroup_id, info)| (*cgroup_id, self.tracker.scope(info)))
            .collect();
        // Cgroups met between two walks of the cgroup tree: resolved at the next gather, with
        // their counters kept until then.
        let deferred = sources.take_deferred();
        let scope = |cgroup_id| match scopes.get(&cgroup_id) {
            Some(scope) => *scope,
            None if deferred.contains(&cgroup_id) => Scope::NotYet,
            None => Scope::NoSeries,
        };
        let mut backends = FastMap::default();
        let serves_dnat = sources.serves_dnat();
        if serves_dnat {
            table = self.look_up_backends(table, shared, sources, &scope, &mut backends);
        }
        // A client flow without an answer: over the budget, or arrived during the last round.
        let mut skipped = 0;
        table.assign_peers(
            scope,
            |proto, local, remote| match backends.get(&(proto, local, remote)) {
                Some(backend) => *backend,
                None => {
                    skipped += u64::from(serves_dnat);
                    None
                }
            },
            now_ns,
        );
        self.events
            .record(Event::DnatLookupSkipped, skipped, now_ns);
        // The second pass over the flows, now that each has its peer slot.
        aggregate::peer_values_into(&mut table, &mut self.peer_slots);
        values.peers = std::mem::take(&mut self.peer_series);
        aggregate::peer_series_into(
            &table,
            &self.peer_slots,
            &resolved,
            &self.tracker,
            &values.containers,
            &mut values.peers,
        );
        values.series_dropped += table.take_peers_folded();
        let mut keep: FastSet<u64> = self.tracker.cgroups().collect();
        keep.extend(deferred.iter().copied());
        let active = &self.active;
        table.retain_cgroups(|id| keep.contains(&id) || active.contains_key(&id));
        table.touch_cgroups(deferred);
        sources.prune(&wanted);
        (table, values)
    }

    /// The DNAT backends of the client flows the next [`FlowTable::assign_peers`] keys (new
    /// ones, and ended ones queued), into `backends`, looked up with the table released: the
    /// lookups are synchronous kernel requests (up to [`MAX_DNAT_LOOKUPS`] of them), and the
    /// event reader must not wait for them. The flows that arrive meanwhile are looked up in
    /// another round, up to [`DNAT_ROUNDS`]. Returns the table held again.
    fn look_up_backends<'t>(
        &self,
        mut table: MutexGuard<'t, FlowTable>,
        shared: &'t Mutex<FlowTable>,
        sources: &mut impl Sources,
        scope: &impl Fn(u64) -> Scope,
        backends: &mut FastMap<DnatQuery, Option<SocketAddr>>,
    ) -> MutexGuard<'t, FlowTable> {
        let mut lookups = 0;
        for _ in 0..DNAT_ROUNDS {
            let queries: Vec<DnatQuery> = table
                .backend_queries(scope)
                .into_iter()
                .filter(|q| !backends.contains_key(q))
                .take(self.dnat_budget - lookups)
                .collect();
            if queries.is_empty() {
                break;
            }
            drop(table);
            for (proto, local, remote) in queries {
                let backend = sources.dnat_backend(proto, local, remote);
                backends.insert((proto, local, remote), backend);
                lookups += 1;
            }
            table = lock(shared);
        }
        table
    }
}

#[cfg(test)]
mod tests;

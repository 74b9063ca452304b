//! The collector behind the ABI: creation from a config, gathers, doctor; panics stop here.

use crate::{
    collector::{self, lock, CollectorOptions, EbpfCollector, ProbeStatus},
    config::{Config, HookKindName, LogLevelName, Node, RttSource},
    conntrack::Conntrack,
    containers, iface, logging, privileges, seed,
};
use abi_stable::{
    sabi_extern_fn,
    sabi_trait::TD_Opaque,
    std_types::{RResult, RStr, RString, RVec},
};
use flowlens_abi::{
    Collector, CollectorBox, Collector_TO, DoctorCheck, ErrorKind, GatherSummary, HostCallbacks,
    LogLevel, PluginError, ShimSettings,
};
use flowlens_core::{
    flows::{FlowTable, Limits, ListenDrops, Role, Scope},
    hash::{FastMap, FastSet},
    metrics, records,
    workloads::{self, ActiveByCgroup, WorkloadTracker, WorkloadValues},
};
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};
use std::{
    panic::{catch_unwind, AssertUnwindSafe},
    path::PathBuf,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

/// Runs `f`, turning a panic into a [`PluginError`] so that it never unwinds into the shim.
fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T, PluginError>) -> RResult<T, PluginError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result.into(),
        Err(payload) => {
            let detail = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_string());
            RResult::RErr(PluginError {
                kind: ErrorKind::Panic,
                message: format!("flowlens plugin panicked in {what}: {detail}").into(),
            })
        }
    }
}

fn other_error(message: impl std::fmt::Display) -> PluginError {
    PluginError {
        kind: ErrorKind::Other,
        message: message.to_string().into(),
    }
}

/// The collector: configuration, the state of the sources, and the previous gather's duration.
pub struct Flowlens {
    config: Config,
    /// The node's name (the `node` tag) and where it came from.
    node: Node,
    shape: metrics::Shape,
    sys_class_net: PathBuf,
    ebpf: Option<EbpfCollector>,
    /// Why there is no eBPF collector, when there is none.
    ebpf_disabled: Option<String>,
    /// Shared with the collector's reader thread, which applies the kernel's records to it.
    table: Arc<Mutex<FlowTable>>,
    /// cgroup id -> container, from cgroupfs and the runtimes' files.
    resolver: containers::Resolver,
    /// Which containers have series.
    tracker: WorkloadTracker,
    /// Active flows per cgroup, reused from gather to gather (its capacity is kept).
    active: ActiveByCgroup,
    /// Whether the interface counters' failure was logged (until they read again).
    iface_warned: bool,
    /// The effective capabilities when the collector was created (`doctor`).
    caps_at_start: Option<u64>,
    /// ctnetlink in flowlens's network namespace (the node's), for the backends behind virtual
    /// IPs (`dnat_backends`); `None` when off.
    conntrack: Option<Conntrack>,
    /// Why `conntrack` is `None`, and whether that is a fault (`doctor`).
    conntrack_off: Option<(String, bool)>,
    /// New client flows left without a conntrack lookup (`MAX_CONNTRACK_LOOKUPS` a gather).
    conntrack_skipped: u64,
    /// Listening sockets' drop counts between gathers (`dropped_as_server`).
    listen: ListenDrops,
}

/// Takes the listening sockets the live-socket iterator's last run found into `listen`, adding
/// what each dropped since the run before to its cgroup in `table`. (The first run is at
/// start-up, before any gather: the listeners it finds count from their values then.)
fn count_listen_drops(ebpf: &mut EbpfCollector, listen: &mut ListenDrops, table: &mut FlowTable) {
    match ebpf.take_listeners() {
        Ok(Some(run)) => {
            listen.update(run.listeners, run.complete, |cgroup_id, drops| {
                table.add_listen_drops(cgroup_id, drops)
            });
        }
        Ok(None) => {}
        Err(e) => tracing::warn!("cannot read the listening sockets' drops: {e}"),
    }
}

/// Finds the TCP connections established before flowlens started, in every network namespace,
/// and tracks them from now on: in the flow table (active, not new) and in the kernel map (so
/// their bytes, RTT and close are seen).
///
/// The programs are attached before the scan, and the caller holds the flow table throughout
/// (the reader thread queues the records meanwhile: none is applied before the seeding ends).
/// A socket the scan found is put into `socks` (`adopt`, BPF_NOEXIST), and then:
///
/// * The programs made its entry first: it became established after they attached (during the
///   scan); their entry is its flow, the table gets none from the scan (else it would count
///   twice: a flow's id mixes the cookie with the entry's creation time). Before 5.12 their
///   entry may be under the socket's address: found by its addresses, ours is removed.
/// * Inserted: the scan looks at it again (`seed::look_again`). Found open then, the socket's
///   end is still to come: `fl_set_state` sees its CLOSE before it is unhashed and `fl_destroy`
///   sees its destruction after, both later than the insert, so one of them emits its close
///   record and takes the entry out. Seeded.
/// * Inserted, and not found open by the second look (in a namespace read again): it closed
///   (was unhashed) before the look. Its entry is removed here:
///   - the removal succeeds: either both its close and its destruction ran before the insert
///     (a ghost: nothing would ever have removed it), or one is still to come and will find no
///     entry (a socket in TIME_WAIT's hand-over is unhashed before its CLOSE; a destruction
///     may come after the unhashing): no record comes, and the socket is not seeded, so it
///     is neither counted nor left active;
///   - the entry is gone already: the socket's close or destruction ran after the insert,
///     emitted its close record and took the entry out: seeded, and the record ends it;
///   - the removal lands between a program's close record and its own removal (nanoseconds):
///     a record comes for a socket not seeded. The entry carries `SOCK_ADOPTED`, which the
///     record copies, and the table drops an adopted socket's close it does not know.
/// * A namespace that cannot be read again, or a lookup that fails: seeded, as before.
///
/// A close missed by both programs (a skipped run, counted in `events_lost`) leaves its entry
/// as it does for any socket.
fn adopt_established(ebpf: &mut EbpfCollector, table: &mut FlowTable, max_flows: usize) {
    let started = Instant::now();
    let report = seed::seed_established(max_flows);
    for failure in &report.failures {
        tracing::warn!("start-up scan of established connections: {failure}");
    }
    // Sockets beyond `max_flows` are not tracked, like those the kernel map has no room for.
    table.flows_evicted += report.dropped as u64;
    let scanned = started.elapsed();
    let now = monotonic_ns();
    let mut inserted = Vec::new();
    let mut tracked = 0usize;
    for (i, found) in report.sockets.iter().enumerate() {
        let (_, raw_role) = seed_role(found.role);
        let sock = records::FlSock {
            bytes_sent: 0,
            bytes_rcvd: 0,
            first_ns: now,
            last_ns: now,
            cgroup_id: found.cgroup_id.unwrap_or(0),
            netns: found.netns,
            pid: 0,
            srtt_us: found.srtt_us,
            rttvar_us: found.rttvar_us,
            retrans: 0,
            sport: found.local.port(),
            dport: found.remote.port(),
            saddr: records::ip_to_kernel(found.local.ip()),
            daddr: records::ip_to_kernel(found.remote.ip()),
            family: if found.local.is_ipv4() { 2 } else { 10 },
            protocol: records::IPPROTO_TCP,
            role: raw_role,
            flags: records::SOCK_ADOPTED,
            comm: [0; records::COMM_LEN],
            // Counted from now: the socket's counters as the scan saw them are the base.
            base_retrans: found.total_retrans,
            sk: 0,
            base_acked: found.bytes_acked,
            base_rcvd: found.bytes_received,
        };
        match ebpf.adopt(found.cookie, &sock) {
            collector::Adopted::Inserted => inserted.push((i, sock)),
            collector::Adopted::Tracked => tracked += 1,
            collector::Adopted::NoRoom => table.flows_evicted += 1,
        }
    }
    // Before 5.12 (no bpf_get_socket_cookie in tracing programs) the programs key a socket that
    // had no cookie yet by its address, so BPF_NOEXIST cannot tell that they track a socket
    // established during the scan (the dump gave it a cookie after their entry was made, and
    // before the dump showed it established: the state change runs them first). Their entry
    // has its addresses: an adopted entry whose addresses are in one of theirs is removed
    // again (cookies and addresses of live sockets are unique alike).
    let four_tuple =
        |s: &records::FlSock| (s.netns, s.saddr, s.daddr, s.sport, s.dport, s.protocol);
    let theirs: FastSet<_> = if ebpf.cookie_keys() {
        FastSet::default()
    } else {
        ebpf.snapshot(max_flows.saturating_mul(2))
            .iter()
            .filter(|(_, s)| s.flags & records::SOCK_ADOPTED == 0)
            .map(|(_, s)| four_tuple(s))
            .collect()
    };
    inserted.retain(|(i, sock)| {
        if theirs.is_empty() || !theirs.contains(&four_tuple(sock)) {
            return true;
        }
        ebpf.unadopt(report.sockets[*i].cookie);
        tracked += 1;
        false
    });
    let which: Vec<usize> = inserted.iter().map(|(i, _)| *i).collect();
    let (looks, failures) = seed::look_again(&report, &which);
    for failure in &failures {
        tracing::warn!("start-up scan, second look: {failure}");
    }
    let mut ghosts = 0usize;
    for ((i, sock), look) in inserted.iter().zip(looks) {
        let found = &report.sockets[*i];
        if look == seed::Look::Gone && ebpf.unadopt(found.cookie) {
            ghosts += 1;
            continue;
        }
        table.seed(found.cookie, sock, seed_role(found.role).0);
    }
    tracing::info!(
        "found {} established TCP connections in {} network namespaces ({} ms; then {} \
         tracked already, {} closed before they could be, checked in {} ms)",
        report.sockets.len(),
        report.namespaces,
        scanned.as_millis(),
        tracked,
        ghosts,
        (started.elapsed() - scanned).as_millis()
    );
}

/// The table's role and the kernel record's of a socket the start-up scan found.
fn seed_role(role: seed::SeedRole) -> (Role, u8) {
    match role {
        seed::SeedRole::Client => (Role::Client, records::ROLE_CLIENT),
        seed::SeedRole::Server => (Role::Server, records::ROLE_SERVER),
    }
}

/// The capabilities kept after start-up (ARCHITECTURE.md, "Least privilege"): CAP_BPF, since
/// before 6.5 a kernel with unprivileged BPF disabled (Debian's default) refuses every bpf()
/// command without it, map reads and iterator runs included; CAP_PERFMON, for `doctor`'s
/// hook-kind checks, which load programs after start-up. CAP_NET_ADMIN is added only while the
/// DNAT backends are served ([`Flowlens::kept_capabilities`]).
const KEPT_CAPABILITIES: u64 =
    privileges::bit(privileges::CAP_BPF) | privileges::bit(privileges::CAP_PERFMON);

/// Most conntrack lookups in one gather (one per new client flow, 4-10 µs each): a gather
/// meeting more new client flows gives the rest no DNAT backend (counted in
/// `flowlens:internal,dnat_lookups_skipped`).
const MAX_CONNTRACK_LOOKUPS: usize = 10_000;

/// The doctor check of the DNAT backends, named as the collector's features are.
const DNAT_FEATURE: &str = "feature DNAT backends";

/// What `doctor` says of a capability flowlens uses when it is missing at start-up.
const CAPABILITY_USES: [(u32, &str); 5] = [
    (
        privileges::CAP_BPF,
        "no eBPF programs or maps (interface metrics only)",
    ),
    (
        privileges::CAP_PERFMON,
        "no tracing programs (interface metrics only)",
    ),
    (
        privileges::CAP_SYS_ADMIN,
        "the start-up scan reads only flowlens's own network namespace",
    ),
    (
        privileges::CAP_SYS_PTRACE,
        "the start-up scan misses the network namespaces of other users' processes",
    ),
    (
        privileges::CAP_NET_ADMIN,
        "no DNAT backends (conntrack lookups)",
    ),
];

/// Gives up every capability the gathers do not need, once the programs are attached, the maps
/// open and the start-up scan done, and sets no_new_privs: the shim's process from then on
/// (its later threads inherit it) parses files that pod owners control with no more than
/// `keep` ([`Flowlens::kept_capabilities`]). Only the plugin's ABI entry does this: a program
/// that uses the library in-process keeps its privileges.
fn drop_privileges(keep: u64) {
    match privileges::keep_only(keep) {
        Ok(kept) => tracing::info!(
            "capabilities after start-up: {} (no_new_privs set)",
            privileges::names(kept)
        ),
        Err(e) => tracing::warn!("cannot drop capabilities after start-up: {e}"),
    }
}

/// ctnetlink for the DNAT backends, when the config asks for them and there are connections
/// to look up (an eBPF collector); else why not, and whether that is a fault: a kernel without
/// ctnetlink has no conntrack DNAT to resolve, a missing capability is one.
fn open_conntrack(wanted: bool, ebpf: bool) -> (Option<Conntrack>, Option<(String, bool)>) {
    if !wanted {
        let why = "off: disabled by the config (dnat_backends = false)";
        return (None, Some((why.to_string(), false)));
    }
    if !ebpf {
        let why = "off: no eBPF collector, no connections to look up";
        return (None, Some((why.to_string(), false)));
    }
    match Conntrack::open() {
        Ok(c) => (Some(c), None),
        Err(e) => {
            tracing::warn!("DNAT backends off (the backends behind virtual IPs): {e}");
            let fault = e.kind() != std::io::ErrorKind::Unsupported;
            (None, Some((format!("not served: {e}"), fault)))
        }
    }
}

/// Where the container metadata lives, from the config.
fn metadata_roots(config: &Config) -> containers::MetadataRoots {
    let g = &config.general;
    let cgroup2 = if g.cgroup2_root == "auto" {
        containers::MetadataRoots::default().cgroup2
    } else {
        PathBuf::from(&g.cgroup2_root)
    };
    containers::MetadataRoots {
        cgroup2,
        containerd: PathBuf::from(&g.containerd_state_dir),
        crio: PathBuf::from(&g.crio_storage_dir),
        docker: PathBuf::from(&g.docker_containers_dir),
        kubelet_logs: PathBuf::from(&g.kubelet_log_dir),
        proc: PathBuf::from("/proc"),
    }
}

/// CLOCK_MONOTONIC in ns: the clock of `bpf_ktime_get_ns`.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

fn to_check(status: &ProbeStatus) -> DoctorCheck {
    DoctorCheck {
        name: status.name.as_str().into(),
        ok: status.ok,
        detail: status.detail.as_str().into(),
    }
}

impl Flowlens {
    /// Builds a collector from a validated config and the node's name ([`Config::node`]).
    pub fn new(config: Config, node: Node) -> Flowlens {
        let caps_at_start = privileges::current().ok().map(|c| c.effective);
        tracing::info!("node: {node}");
        let shape = metrics::Shape {
            ifid: config.general.ifid.clone(),
            node: node.name.clone(),
            precision: config.general.precision,
            ntopng_compat: config.general.ntopng_compat,
        };
        let g = &config.general;
        let table = Arc::new(Mutex::new(FlowTable::new(Limits {
            max_flows: g.max_flows as usize,
            max_hosts: g.max_hosts as usize,
            host_ttl_ns: g.series_ttl_secs.saturating_mul(1_000_000_000),
            udp_idle_timeout_ns: g.udp_idle_timeout_secs.saturating_mul(1_000_000_000),
            // ntopng's tags have no place for the namespace: one series per address there.
            hosts_by_netns: !g.ntopng_compat,
            max_peers: if g.ntopng_compat {
                0
            } else {
                g.max_peers_per_container as usize
            },
        })));
        let mut listen = ListenDrops::new();
        let (ebpf, ebpf_disabled) = if g.ebpf {
            let options = CollectorOptions {
                max_flows: g.max_flows,
                ring_buffer_bytes: g.ring_buffer_bytes,
                segment_rtt: g.rtt_source == RttSource::Segment,
                hook_kinds: collector::HookKinds {
                    tp_btf: g.hook_kinds.contains(&HookKindName::TpBtf),
                    fexit: g.hook_kinds.contains(&HookKindName::Fexit),
                    kprobe: g.hook_kinds.contains(&HookKindName::Kprobe),
                },
            };
            match EbpfCollector::start(options, Arc::clone(&table)) {
                Ok(c) => {
                    for probe in c.probes() {
                        if probe.ok {
                            tracing::debug!("{}: {}", probe.name, probe.detail);
                        } else {
                            tracing::warn!("{}: {}", probe.name, probe.detail);
                        }
                    }
                    let ok = c.probes().iter().filter(|p| p.ok).count();
                    let mut c = c;
                    adopt_established(&mut c, &mut lock(&table), g.max_flows as usize);
                    match c.refresh_tcp() {
                        Ok(()) => count_listen_drops(&mut c, &mut listen, &mut lock(&table)),
                        Err(e) => tracing::warn!("cannot read the listening sockets: {e}"),
                    }
                    tracing::info!(
                        "eBPF collector started: {ok} of {} probes attached",
                        c.probes().len()
                    );
                    (Some(c), None)
                }
                Err(e) => {
                    tracing::warn!("eBPF collector disabled, writing interface metrics only: {e}");
                    (None, Some(e.to_string()))
                }
            }
        } else {
            (
                None,
                Some("disabled by the config (ebpf = false)".to_string()),
            )
        };
        let (conntrack, conntrack_off) = open_conntrack(g.dnat_backends, ebpf.is_some());
        lock(&table).set_peer_backends(conntrack.is_some());
        let resolver = containers::Resolver::new(metadata_roots(&config), g.max_flows as usize);
        let tracker = WorkloadTracker::new(g.series_ttl_secs, g.max_containers as usize);
        Flowlens {
            config,
            node,
            shape,
            sys_class_net: PathBuf::from(iface::SYS_CLASS_NET),
            ebpf,
            ebpf_disabled,
            table,
            resolver,
            tracker,
            active: ActiveByCgroup::default(),
            iface_warned: false,
            caps_at_start,
            conntrack,
            conntrack_off,
            conntrack_skipped: 0,
            listen,
        }
    }

    /// The capabilities the gathers need: [`KEPT_CAPABILITIES`], and CAP_NET_ADMIN while the
    /// DNAT backends are served (the kernel checks it at every conntrack lookup).
    pub fn kept_capabilities(&self) -> u64 {
        let net_admin = privileges::bit(privileges::CAP_NET_ADMIN);
        KEPT_CAPABILITIES
            | if self.conntrack.is_some() {
                net_admin
            } else {
                0
            }
    }

    /// Whether the DNAT backends are served: ctnetlink answers a lookup now, in this thread,
    /// with the capabilities it holds (after start-up: those the gathers have).
    fn dnat_check(&self) -> DoctorCheck {
        let (ok, detail) = match (&self.conntrack, &self.conntrack_off) {
            (Some(running), _) => match Conntrack::open() {
                Ok(_) => {
                    let s = running.stats();
                    (
                        true,
                        format!(
                            "served by ctnetlink: the backend behind a virtual IP (kube-proxy's \
                             DNAT) from each new client connection's conntrack entry ({} \
                             lookups, {} rewritten, {} failed, {} skipped over the budget of \
                             {MAX_CONNTRACK_LOOKUPS} a gather)",
                            s.lookups, s.found_dnat, s.errors, self.conntrack_skipped
                        ),
                    )
                }
                Err(e) => (false, format!("not served: {e}")),
            },
            (None, Some((why, fault))) => (!fault, why.clone()),
            (None, None) => (false, "not served".to_string()),
        };
        DoctorCheck {
            name: DNAT_FEATURE.into(),
            ok,
            detail: detail.into(),
        }
    }

    /// Container and pod series from the table: resolves the cgroups of active flows, of flows
    /// that started or ended since the last gather, and of containers that still have series.
    fn collect_workloads(&mut self, table: &mut FlowTable) -> WorkloadValues {
        let touched = table.take_touched_cgroups();
        // One pass over the flows; everything below works per cgroup.
        workloads::active_by_cgroup(table, &mut self.active);
        let active = &self.active;
        let mut wanted: FastSet<u64> = active.keys().copied().collect();
        wanted.extend(touched.iter().copied());
        wanted.extend(self.tracker.cgroups());
        let mut resolved: FastMap<u64, Arc<containers::ContainerInfo>> = FastMap::default();
        for cgroup_id in &wanted {
            let pid = active.get(cgroup_id).map_or(0, |a| a.pid);
            if let Some(info) = self.resolver.resolve(*cgroup_id, pid) {
                resolved.insert(*cgroup_id, info);
            }
        }
        // Per pod, its running containers (the sandbox left out), from the cgroup tree.
        let mut pod_counts: HashMap<String, u64> = HashMap::new();
        for (cgroup_id, info) in &resolved {
            if let (Some(pod), false) = (&info.pod, info.is_sandbox) {
                let key = format!("{}/{pod}", info.namespace.as_deref().unwrap_or(""));
                if let std::collections::hash_map::Entry::Vacant(slot) = pod_counts.entry(key) {
                    if let Some(n) = self.resolver.running_in_pod(*cgroup_id, info) {
                        slot.insert(n);
                    }
                }
            }
        }
        let now_ns = monotonic_ns();
        let mut values =
            self.tracker
                .update(table, active, &resolved, &touched, &pod_counts, now_ns);
        // Each resolved cgroup's peer scope: its container's series (one budget and one set of
        // peer series per container, whichever of its cgroups a flow is in).
        let scopes: FastMap<u64, Scope> = resolved
            .iter()
            .map(|(cgroup_id, info)| (*cgroup_id, self.tracker.scope(info)))
            .collect();
        // Cgroups met between two walks of the cgroup tree: resolved at the next gather, with
        // their counters kept until then.
        let deferred = self.resolver.take_deferred();
        let mut lookups = 0;
        table.assign_peers(
            |cgroup_id| match scopes.get(&cgroup_id) {
                Some(scope) => *scope,
                None if deferred.contains(&cgroup_id) => Scope::NotYet,
                None => Scope::NoSeries,
            },
            |proto, local, remote| {
                // Once per new client flow; beyond the budget, the rest go without a backend.
                let conntrack = self.conntrack.as_mut()?;
                if lookups >= MAX_CONNTRACK_LOOKUPS {
                    self.conntrack_skipped += 1;
                    return None;
                }
                lookups += 1;
                conntrack.backend(proto, local, remote).ok().flatten()
            },
            now_ns,
        );
        let peers = table.peer_values();
        values.peers =
            workloads::peer_series(table, peers, &resolved, &self.tracker, &values.containers);
        values.series_dropped += table.take_peers_folded();
        let mut keep: FastSet<u64> = self.tracker.cgroups().collect();
        keep.extend(deferred.iter().copied());
        table.retain_cgroups(|id| keep.contains(&id) || active.contains_key(&id));
        table.touch_cgroups(deferred);
        self.resolver.prune(&wanted);
        values
    }

    /// Brings the flow table up to date with the kernel: pending events, then the socket map.
    fn collect_flows(
        &mut self,
    ) -> Option<(metrics::FlowValues, WorkloadValues, metrics::Internal)> {
        let table = Arc::clone(&self.table);
        // Held for the whole gather: the reader queues what it drains meanwhile.
        let mut table = lock(&table);
        let ebpf = self.ebpf.as_mut()?;
        ebpf.apply_events(&mut table);
        match ebpf.refresh_tcp() {
            Ok(()) => count_listen_drops(ebpf, &mut self.listen, &mut table),
            Err(e) => tracing::warn!("cannot read the live TCP sockets' counters: {e}"),
        }
        let limit = self.config.general.max_flows as usize * 2;
        let snapshot = ebpf.snapshot(limit);
        let expired = table.refresh(snapshot.iter().map(|(c, s)| (*c, s)), monotonic_ns());
        ebpf.forget(&expired);
        let values = metrics::FlowValues::from_table(&table);
        let workloads = self.collect_workloads(&mut table);
        let ebpf = self.ebpf.as_ref()?;
        let internal = metrics::Internal {
            events_received: Some(ebpf.events_received()),
            // A stale entry is a socket whose close and destruction were both missed (the
            // iterator counts it once and ends it).
            events_lost: ebpf.stat(records::STAT_EVENTS_LOST)
                + ebpf.recursion_misses()
                + ebpf.stat(records::STAT_STALE_SOCKS),
            flows_active: table.len() as u64,
            connects_failed: table.connect_failed,
            // A listener the kernel map had no room for counts at each gather that misses it.
            flows_evicted: table.flows_evicted
                + ebpf.stat(records::STAT_SOCKS_FULL)
                + ebpf.stat(records::STAT_LISTEN_FULL),
            series_dropped: values.hosts_folded + workloads.series_dropped,
            containers_tracked: self.tracker.len() as u64,
            metadata_cache_entries: self.resolver.cache_len() as u64,
            metadata_skipped: self.resolver.warnings(),
            names_dropped: self.resolver.names_dropped(),
            dnat_lookups_skipped: self.conntrack_skipped,
            probes_attached: ebpf.probes().iter().filter(|p| p.ok).count() as u64,
            probes_failed: ebpf.probes().iter().filter(|p| !p.ok).count() as u64,
            ..metrics::Internal::default()
        };
        Some((values, workloads, internal))
    }

    /// One gather: read every source, encode every line with one timestamp.
    pub fn gather_into(&mut self, out: &mut Vec<u8>) -> Result<GatherSummary, PluginError> {
        let started = Instant::now();
        let timestamp_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
            .map_err(|_| other_error("the system clock is before 1970"))?;
        let ifaces = match iface::read_all(&self.sys_class_net) {
            Ok(ifaces) => {
                self.iface_warned = false;
                ifaces
            }
            Err(e) => {
                // Once per outage, not once per gather.
                if !std::mem::replace(&mut self.iface_warned, true) {
                    tracing::warn!("no interface metrics: {e}");
                }
                Vec::new()
            }
        };
        let (flows, workloads, internal) = match self.collect_flows() {
            Some((values, workloads, internal)) => (Some(values), Some(workloads), internal),
            None => (None, None, metrics::Internal::default()),
        };
        let snapshot = metrics::Snapshot {
            ifaces,
            flows,
            workloads,
            internal: metrics::Internal {
                // Reading the sources and aggregating; encoding (pure, fast) comes after.
                gather_duration_ms: started.elapsed().as_secs_f64() * 1e3,
                ..internal
            },
        };
        let lines = metrics::encode(&snapshot, &self.shape, timestamp_ns, out);
        Ok(GatherSummary {
            lines,
            timestamp_ns,
        })
    }

    /// A copy of the active flows (for tests and tools built on the library).
    pub fn flows(&self) -> impl Iterator<Item = flowlens_core::flows::Flow> {
        lock(&self.table)
            .flows()
            .cloned()
            .collect::<Vec<_>>()
            .into_iter()
    }

    /// Whether the capabilities held at start-up were enough, by name: CAP_BPF and CAP_PERFMON
    /// are needed; CAP_SYS_ADMIN and CAP_SYS_PTRACE widen the start-up scan.
    fn privileges_check(&self) -> DoctorCheck {
        let Some(held) = self.caps_at_start else {
            return DoctorCheck {
                name: "privileges".into(),
                ok: false,
                detail: "cannot read this process's capabilities".into(),
            };
        };
        let needed = KEPT_CAPABILITIES;
        let missing: Vec<String> = CAPABILITY_USES
            .iter()
            .filter(|(cap, _)| held & privileges::bit(*cap) == 0)
            .map(|(cap, what)| format!("{} ({what})", privileges::name(*cap)))
            .collect();
        let used: u64 = CAPABILITY_USES
            .iter()
            .fold(0, |set, (cap, _)| set | privileges::bit(*cap));
        let after = privileges::current().map_or(0, |c| c.effective);
        DoctorCheck {
            name: "privileges".into(),
            ok: held & needed == needed,
            detail: format!(
                "held at start-up: {}; missing: {}; kept after start-up: {}",
                privileges::names(held & used),
                if missing.is_empty() {
                    "none".to_string()
                } else {
                    missing.join(", ")
                },
                privileges::names(after)
            )
            .into(),
        }
    }

    /// The prerequisites and probes, with their status here.
    pub fn checks(&self) -> Vec<DoctorCheck> {
        let ifaces = iface::read_all(&self.sys_class_net);
        let mut checks = vec![DoctorCheck {
            name: "interface counters (sysfs)".into(),
            ok: ifaces.is_ok(),
            detail: match ifaces {
                Ok(list) => format!(
                    "{} interfaces in {}",
                    list.len(),
                    self.sys_class_net.display()
                ),
                Err(e) => e.to_string(),
            }
            .into(),
        }];
        checks.push(DoctorCheck {
            name: "node".into(),
            ok: true,
            detail: self.node.to_string().into(),
        });
        checks.push(self.privileges_check());
        let btf = collector::kernel_btf();
        checks.push(DoctorCheck {
            name: "kernel BTF (/sys/kernel/btf/vmlinux)".into(),
            ok: btf.is_ok(),
            detail: match &btf {
                Ok(_) => "present: CO-RE programs can be relocated".into(),
                Err(e) => e.to_string().into(),
            },
        });
        let tracefs = [
            "/sys/kernel/tracing/events",
            "/sys/kernel/debug/tracing/events",
        ]
        .iter()
        .find(|p| std::path::Path::new(p).is_dir());
        // Information: none of flowlens's hooks goes through tracefs (tp_btf, fexit and
        // iterators attach by BTF, kprobes through the kprobe PMU).
        checks.push(DoctorCheck {
            name: "tracefs".into(),
            ok: true,
            detail: match tracefs {
                Some(p) => format!("mounted ({p}); not needed by flowlens's hooks").into(),
                None => "not mounted or not readable here; not needed by flowlens's hooks".into(),
            },
        });
        match (&self.ebpf, &self.ebpf_disabled) {
            (Some(ebpf), _) => checks.extend(ebpf.probes().iter().map(to_check)),
            (None, why) => checks.push(DoctorCheck {
                name: "eBPF collector".into(),
                ok: false,
                detail: why.clone().unwrap_or_default().into(),
            }),
        }
        checks.push(self.dnat_check());
        if let Ok(btf) = &btf {
            checks.extend(collector::check_hook_kinds(btf).iter().map(to_check));
        }
        checks
    }
}

impl Collector for Flowlens {
    fn gather(&mut self, out: &mut RVec<u8>) -> RResult<GatherSummary, PluginError> {
        guarded("gather", || {
            let mut buf = std::mem::take(out).into_vec();
            let result = self.gather_into(&mut buf);
            *out = RVec::from(buf);
            result
        })
    }

    fn settings(&self) -> ShimSettings {
        ShimSettings {
            interval_secs: self.config.general.interval_secs,
            health_file: self.config.general.health_file.as_str().into(),
        }
    }

    fn doctor(&self) -> RVec<DoctorCheck> {
        match guarded("doctor", || Ok(self.checks())) {
            RResult::ROk(checks) => checks.into(),
            RResult::RErr(e) => vec![DoctorCheck {
                name: "doctor".into(),
                ok: false,
                detail: e.message,
            }]
            .into(),
        }
    }
}

/// ABI entry point: parses the config and creates the collector.
#[sabi_extern_fn]
pub fn create(
    config_toml: RStr<'_>,
    source: RStr<'_>,
    host: HostCallbacks,
) -> RResult<CollectorBox, PluginError> {
    guarded("create", || {
        let config =
            Config::from_toml(config_toml.as_str(), source.as_str()).map_err(|e| PluginError {
                kind: ErrorKind::Config,
                message: e.to_string().into(),
            })?;
        let node = config.node().map_err(|message| PluginError {
            kind: ErrorKind::Config,
            message: format!("config {}: {message}", source.as_str()).into(),
        })?;
        let max_level = match config.general.log_level {
            LogLevelName::Error => LogLevel::Error,
            LogLevelName::Warn => LogLevel::Warn,
            LogLevelName::Info => LogLevel::Info,
            LogLevelName::Debug => LogLevel::Debug,
        };
        logging::install(HostCallbacks {
            max_level: max_level.min(host.max_level),
            ..host
        });
        let flowlens = Flowlens::new(config, node);
        drop_privileges(flowlens.kept_capabilities());
        Ok(Collector_TO::from_value(flowlens, TD_Opaque))
    })
}

/// ABI entry point: the commented default configuration.
#[sabi_extern_fn]
pub fn default_config() -> RString {
    Config::documented_default().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_an_error() {
        let r: RResult<(), PluginError> = guarded("test", || panic!("boom"));
        let e = r.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Panic);
        assert!(e.message.contains("boom"), "{}", e.message);
    }
}

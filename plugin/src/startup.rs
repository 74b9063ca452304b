//! Start-up: the eBPF collector loaded and attached, the connections that already exist adopted
//! (`seed/`), the listening sockets read once, conntrack opened, the resolver and the gather
//! pipeline made; whether the gathers need CAP_BPF measured; and the capabilities the gathers
//! do not need given up.

use crate::{
    collector::{self, lock, CollectorOptions, EbpfCollector},
    config::{Config, HookKindName, Node, RttSource},
    conntrack::Conntrack,
    containers,
    modules::{self, KernelModules},
    privileges, seed,
    sources::{count_listen_drops, monotonic_ns, NodeSources},
};
use flowlens_core::{
    records, FastSet, FlowTable, Gather, Limits, ListenDrops, Role, Shape, WorkloadTracker,
};
use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Instant,
};

/// What start-up made: the table (shared with the collector's reader thread), the sources, the
/// pipeline, and what `doctor` reports of start-up.
pub(crate) struct Started {
    pub(crate) table: Arc<Mutex<FlowTable>>,
    pub(crate) sources: NodeSources,
    pub(crate) gather: Gather,
    pub(crate) facts: StartFacts,
}

/// What start-up found, for `doctor`.
pub(crate) struct StartFacts {
    /// The node's name (the `node` tag) and where it came from.
    pub(crate) node: Node,
    /// The effective capabilities when the collector was created.
    pub(crate) caps_at_start: Option<u64>,
    /// Why there is no eBPF collector, when there is none.
    pub(crate) ebpf_disabled: Option<String>,
    /// Why there is no conntrack socket, and whether that is a fault, when there is none.
    pub(crate) conntrack_off: Option<(String, bool)>,
    /// Why the connections established before start-up were not looked for, when they were not.
    pub(crate) scan_off: Option<String>,
    /// Whether the gathers' bpf() calls need CAP_BPF on this kernel (measured at start-up).
    pub(crate) gathers_need_bpf: bool,
}

/// Where the core's internal events are logged: at info level, being counts of what the load
/// did (a full ring buffer, a fold into `other`); the warnings that name a cause (a broken
/// file's path, a failed read) are logged where it is found.
fn log_internal(line: &str) {
    tracing::info!("{line}");
}

/// Starts every source from a validated config and the node's name ([`Config::node`]).
pub(crate) fn start(config: &Config, node: Node) -> Started {
    let caps_at_start = privileges::current().ok().map(|c| c.effective);
    tracing::info!("node: {node}");
    let kernel_modules = KernelModules::running();
    let mut scan_off = None;
    let g = &config.general;
    let shape = Shape {
        ifid: g.ifid.clone(),
        node: node.name.clone(),
        precision: g.precision,
        ntopng_compat: g.ntopng_compat,
    };
    let table = Arc::new(Mutex::new(FlowTable::new(Limits {
        max_flows: g.max_flows as usize,
        max_hosts: g.max_hosts as usize,
        series_ttl_ns: g.series_ttl_secs.saturating_mul(1_000_000_000),
        udp_idle_timeout_ns: g.udp_idle_timeout_secs.saturating_mul(1_000_000_000),
        // ntopng's tags have no place for the namespace: one series per address there.
        hosts_by_netns: !g.ntopng_compat,
        max_peers_per_container: if g.ntopng_compat {
            0
        } else {
            g.max_peers_per_container
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
                match kernel_modules.missing(&modules::SOCKET_DIAG) {
                    Ok(()) => adopt_established(&mut c, &mut lock(&table), g.max_flows as usize),
                    Err(missing) => {
                        let why = format!(
                            "not done: sock_diag's modules are not loaded ({}), and flowlens \
                             loads no kernel module; connections established before start-up \
                             are counted from their first event",
                            missing.join(", ")
                        );
                        tracing::info!("start-up scan of established connections {why}");
                        scan_off = Some(why);
                    }
                }
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
    let (conntrack, conntrack_off) =
        open_conntrack(g.dnat_backends, ebpf.is_some(), &kernel_modules);
    lock(&table).set_peer_backends(conntrack.is_some());
    let gathers_need_bpf = gathers_need_bpf(ebpf.as_ref());
    let resolver = containers::Resolver::new(metadata_roots(config), g.max_flows as usize);
    let tracker = WorkloadTracker::new(g.series_ttl_secs, g.max_containers as usize);
    Started {
        table,
        sources: NodeSources::new(ebpf, listen, resolver, conntrack),
        gather: Gather::new(shape, g.max_flows as usize, tracker, log_internal),
        facts: StartFacts {
            node,
            caps_at_start,
            ebpf_disabled,
            conntrack_off,
            scan_off,
            gathers_need_bpf,
        },
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
pub(crate) fn adopt_established(ebpf: &mut EbpfCollector, table: &mut FlowTable, max_flows: usize) {
    let started = Instant::now();
    let report = seed::seed_established(max_flows);
    for failure in &report.failures {
        tracing::warn!("start-up scan of established connections: {failure}");
    }
    // Sockets beyond `max_flows` are not tracked, like those the kernel map has no room for.
    table.count_evicted(report.dropped as u64);
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
            collector::Adopted::NoRoom => table.count_evicted(1),
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

/// What loading and attaching the eBPF programs needs: CAP_BPF and CAP_PERFMON (tracing
/// programs). `doctor`'s hook-kind checks load programs after start-up: it keeps them.
pub(crate) const EBPF_CAPABILITIES: u64 =
    privileges::bit(privileges::CAP_BPF) | privileges::bit(privileges::CAP_PERFMON);

/// What decides the capabilities kept after start-up ([`kept_capabilities`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Needs {
    /// The gathers' bpf() calls (map reads, iterator runs) failed without capabilities
    /// ([`gathers_need_bpf`]): before 6.5, a kernel with unprivileged BPF disabled (Debian's
    /// default) refuses every bpf() command without CAP_BPF.
    pub(crate) gathers_need_bpf: bool,
    /// The DNAT backends are served: the kernel checks CAP_NET_ADMIN at every conntrack lookup.
    pub(crate) conntrack: bool,
    /// The collector serves `doctor`, whose hook-kind checks load programs.
    pub(crate) for_doctor: bool,
}

/// The capabilities kept after start-up (ARCHITECTURE.md, "Least privilege"): CAP_BPF only
/// where the gathers need it, CAP_NET_ADMIN only while the DNAT backends are served,
/// CAP_PERFMON only for `doctor` (with CAP_BPF); none when nothing needs one.
pub(crate) fn kept_capabilities(needs: Needs) -> u64 {
    let mut keep = 0;
    if needs.gathers_need_bpf {
        keep |= privileges::bit(privileges::CAP_BPF);
    }
    if needs.conntrack {
        keep |= privileges::bit(privileges::CAP_NET_ADMIN);
    }
    if needs.for_doctor {
        keep |= EBPF_CAPABILITIES;
    }
    keep
}

/// Whether the gathers' bpf() calls need a capability on this kernel, measured: they are
/// made once with no effective capability in this thread (capabilities are per thread; the
/// permitted ones are effective again after). Needed when one fails (or the measure cannot
/// be made); not when there is no collector.
fn gathers_need_bpf(ebpf: Option<&EbpfCollector>) -> bool {
    let Some(ebpf) = ebpf else { return false };
    match privileges::without_capabilities(|| ebpf.try_gather_calls()) {
        Ok(Ok(())) => {
            tracing::debug!("the gathers' bpf() calls work without capabilities here");
            false
        }
        Ok(Err(e)) => {
            tracing::debug!("the gathers need CAP_BPF here: without, {e}");
            true
        }
        Err(e) => {
            tracing::debug!("cannot tell whether the gathers need CAP_BPF (kept): {e}");
            true
        }
    }
}

/// Gives up every capability the gathers (or `doctor`) do not need, once the programs are
/// attached, the maps open and the start-up scan done, and sets no_new_privs: the shim's
/// process from then on (its later threads inherit it) parses files that pod owners control
/// with no more than `keep` ([`kept_capabilities`]). Only the plugin's ABI entry does this: a program
/// that uses the library in-process keeps its privileges.
pub(crate) fn drop_privileges(keep: u64) {
    match privileges::keep_only(keep) {
        Ok(kept) => tracing::info!(
            "capabilities after start-up: {} (no_new_privs set)",
            privileges::names(kept)
        ),
        Err(e) => tracing::warn!("cannot drop capabilities after start-up: {e}"),
    }
}

/// ctnetlink for the DNAT backends, when the config asks for them, there are connections to
/// look up (an eBPF collector) and conntrack is in use with ctnetlink loaded (or the kernel
/// loads no modules: opening the socket and the first request would load them otherwise);
/// else why not, and whether that is a fault: a kernel without ctnetlink or conntrack has no
/// conntrack DNAT to resolve, a missing capability is one.
fn open_conntrack(
    wanted: bool,
    ebpf: bool,
    kernel_modules: &KernelModules,
) -> (Option<Conntrack>, Option<(String, bool)>) {
    if !wanted {
        let why = "off: disabled by the config (dnat_backends = false)";
        return (None, Some((why.to_string(), false)));
    }
    if !ebpf {
        let why = "off: no eBPF collector, no connections to look up";
        return (None, Some((why.to_string(), false)));
    }
    if let Err(missing) = kernel_modules.missing(&modules::CONNTRACK_LOOKUPS) {
        let why = format!(
            "off: conntrack or its netlink interface is not loaded ({}), and flowlens loads no \
             kernel module (a node without conntrack has no conntrack DNAT to resolve)",
            missing.join(", ")
        );
        tracing::info!("DNAT backends {why}");
        return (None, Some((why, false)));
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

//! The real sources of a gather ([`Sources`], which the core's pipeline reads in order): the
//! eBPF collector, the listening sockets' drops, the container resolver, conntrack, sysfs and
//! the clocks.

use crate::{collector::EbpfCollector, conntrack::Conntrack, containers, iface};
use flowlens_core::{
    records::{self, FlSock},
    ContainerInfo, FastSet, FlowTable, IfaceCounters, KernelCounters, ListenDrops,
    MetadataCounters, Proto, Sources,
};
use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

/// What the node and the kernel give a gather.
pub(crate) struct NodeSources {
    /// Where the interfaces' counters are read (`/sys/class/net`).
    pub(crate) sys_class_net: PathBuf,
    /// Whether the interface counters' failure was logged (until they read again).
    iface_warned: bool,
    /// None when the eBPF collector could not start or is disabled.
    pub(crate) ebpf: Option<EbpfCollector>,
    /// Listening sockets' drop counts between gathers (`dropped_as_server`).
    pub(crate) listen: ListenDrops,
    /// Whether the last live-socket read ran (its listeners' drops are then to be counted).
    live_read: bool,
    /// cgroup id -> container, from cgroupfs and the runtimes' files.
    pub(crate) resolver: containers::Resolver,
    /// ctnetlink in flowlens's network namespace (the node's), for the backends behind virtual
    /// IPs (`dnat_backends`); `None` when off.
    pub(crate) conntrack: Option<Conntrack>,
}

impl NodeSources {
    /// Sources from what start-up opened.
    pub(crate) fn new(
        ebpf: Option<EbpfCollector>,
        listen: ListenDrops,
        resolver: containers::Resolver,
        conntrack: Option<Conntrack>,
    ) -> NodeSources {
        NodeSources {
            sys_class_net: PathBuf::from(iface::SYS_CLASS_NET),
            iface_warned: false,
            ebpf,
            listen,
            live_read: false,
            resolver,
            conntrack,
        }
    }
}

/// Takes the listening sockets the live-socket iterator's last run found into `listen`, adding
/// what each dropped since the run before to its cgroup in `table`. (The first run is at
/// start-up, before any gather: the listeners it finds count from their values then.)
pub(crate) fn count_listen_drops(
    ebpf: &mut EbpfCollector,
    listen: &mut ListenDrops,
    table: &mut FlowTable,
) {
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

/// CLOCK_MONOTONIC in ns: the clock of `bpf_ktime_get_ns`.
pub(crate) fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

impl Sources for NodeSources {
    fn monotonic_ns(&mut self) -> u64 {
        monotonic_ns()
    }

    fn wall_clock_ns(&mut self) -> Option<i64> {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .ok()
            .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
    }

    fn ifaces(&mut self) -> Vec<IfaceCounters> {
        match iface::read_all(&self.sys_class_net) {
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
        }
    }

    fn has_kernel(&self) -> bool {
        self.ebpf.is_some()
    }

    fn apply_events(&mut self, table: &mut FlowTable) {
        if let Some(ebpf) = &self.ebpf {
            ebpf.apply_events(table);
        }
    }

    fn read_live(&mut self) {
        let Some(ebpf) = self.ebpf.as_mut() else {
            return;
        };
        self.live_read = match ebpf.refresh_tcp() {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!("cannot read the live TCP sockets' counters: {e}");
                false
            }
        };
    }

    fn add_listen_drops(&mut self, table: &mut FlowTable) {
        if let (Some(ebpf), true) = (self.ebpf.as_mut(), self.live_read) {
            count_listen_drops(ebpf, &mut self.listen, table);
        }
    }

    fn snapshot(&mut self, limit: usize) -> Vec<(u64, FlSock)> {
        self.ebpf
            .as_ref()
            .map_or_else(Vec::new, |ebpf| ebpf.snapshot(limit))
    }

    fn forget(&mut self, cookies: &[u64]) {
        if let Some(ebpf) = self.ebpf.as_mut() {
            ebpf.forget(cookies);
        }
    }

    fn resolve(&mut self, cgroup_id: u64, pid: u32) -> Option<Arc<ContainerInfo>> {
        self.resolver.resolve(cgroup_id, pid)
    }

    fn running_in_pod(&mut self, cgroup_id: u64, info: &ContainerInfo) -> Option<u64> {
        self.resolver.running_in_pod(cgroup_id, info)
    }

    fn take_deferred(&mut self) -> Vec<u64> {
        self.resolver.take_deferred()
    }

    fn serves_dnat(&self) -> bool {
        self.conntrack.is_some()
    }

    fn dnat_backend(
        &mut self,
        proto: Proto,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> Option<SocketAddr> {
        let conntrack = self.conntrack.as_mut()?;
        conntrack.backend(proto, local, remote).ok().flatten()
    }

    fn prune(&mut self, wanted: &FastSet<u64>) {
        self.resolver.prune(wanted);
    }

    fn kernel_counters(&mut self) -> KernelCounters {
        let Some(ebpf) = &self.ebpf else {
            return KernelCounters::default();
        };
        KernelCounters {
            events_received: ebpf.events_received(),
            // A stale entry is a socket whose close and destruction were both missed (the
            // iterator counts it once and ends it).
            events_lost: ebpf.stat(records::STAT_EVENTS_LOST)
                + ebpf.recursion_misses()
                + ebpf.stat(records::STAT_STALE_SOCKS),
            // A listener the kernel map had no room for counts at each gather that misses it.
            flows_evicted: ebpf.stat(records::STAT_SOCKS_FULL)
                + ebpf.stat(records::STAT_LISTEN_FULL),
            probes_attached: ebpf.probes().iter().filter(|p| p.ok).count() as u64,
            probes_failed: ebpf.probes().iter().filter(|p| !p.ok).count() as u64,
        }
    }

    fn metadata_counters(&mut self) -> MetadataCounters {
        MetadataCounters {
            cache_entries: self.resolver.cache_len() as u64,
            skipped: self.resolver.warnings(),
            names_dropped: self.resolver.names_dropped(),
        }
    }
}

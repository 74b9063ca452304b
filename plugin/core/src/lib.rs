//! flowlens-core: what flowlens computes, apart from how it reads the kernel and the node. No
//! I/O, no aya, no libc: values in, values and line protocol out, so that everything here is
//! tested with plain values and the compiler keeps it that way.
//!
//! Code map: [`dns`] (DNS messages as containers' datagrams carry them), [`records`] (the kernel's records, mirrored from ebpf/flowlens.h, and a record's
//! transport, [`Proto`]), `flows` (the flow table and the per-host and per-cgroup totals),
//! `ndpi` (protocol inference), `hash` (the tables' hasher), `container` and `iface` (what the
//! plugin reads, as values), `aggregate` (every kind of series' values: hosts, containers,
//! pods, peers), `rtt` (RTT buckets and quantiles), `metrics` (values to ntopng-schema lines),
//! [`lineproto`]
//! (the encoder; the strict parser with the `parser` feature), `gather` (one gather's steps in
//! order over the plugin's sources), `internal` (drops, folds, lost events and skipped files:
//! counted and logged in one place).
//!
//! Unsafe code is denied here and forbidden in every module but two, which say why:
//! `records` (reading a record from the kernel's bytes) and `flows` (a prefetch hint).
//!
//! The modules are the crate's own (`pub(crate)`), but for `records`, `lineproto` and [`dns`] (DNS
//! messages, which anyone writes: parsed with bounds, driven by a fuzz target); what the
//! plugin, the tests and the benchmark use is re-exported here, so that the compiler reports
//! what nothing uses.
#![deny(unsafe_code)]

pub(crate) mod aggregate;
pub(crate) mod container;
pub mod dns;
pub(crate) mod flows;
pub(crate) mod gather;
pub(crate) mod hash;
pub(crate) mod iface;
pub(crate) mod internal;
pub mod lineproto;
pub(crate) mod metrics;
pub(crate) mod ndpi;
pub mod records;
pub(crate) mod rtt;

// What the plugin, the tests and the benchmark use; nothing else leaves the crate, so that the
// compiler reports what nothing uses. `records` (the kernel's layout, which the plugin reads and
// writes as a whole) and `lineproto` (a facade over private modules: the encoder, and the parser
// for tests) are public modules.
pub use aggregate::workloads::WorkloadTracker;
pub use aggregate::{
    active_by_cgroup, first_pass, peer_series, peer_series_into, peer_values, peer_values_into,
    ActiveByCgroup, FlowValues,
};
pub use container::{ContainerInfo, QosClass, Runtime};
pub use flows::{Flow, FlowTable, HostKey, Limits, ListenDrops, Role, Scope, Update};
pub use gather::{Gather, KernelCounters, MetadataCounters, Sources, MAX_DNAT_LOOKUPS};
pub use hash::{FastMap, FastSet};
pub use iface::IfaceCounters;
pub use internal::Event;
pub use metrics::{encode, Shape, Snapshot};
pub use records::Proto;

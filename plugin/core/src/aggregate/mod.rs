//! Aggregation: every kind of series' values from the flow table, apart from how they are
//! written (`metrics.rs` turns values into lines and computes none). Pure: no I/O.
//!
//! One kind of code for every kind of series. A [`FlowSink`] says what one active flow adds to
//! the series it counts in, found by what the flow carries (its host slot, its cgroup, its peer
//! slot: an array index or one lookup per run of flows, no hashing of addresses); [`sweep`]
//! runs a sink over the active flows; then each kind adds the cumulative totals its ended
//! flows folded into the table, and decides which series live (TTLs, folds into `other`).
//!
//! Two passes a gather, each as early as its series can be:
//!
//! - [`first_pass`], right after the refresh: hosts ([`hosts`], `host:*`, from the host slots)
//!   and cgroups ([`ActiveByCgroup`], the active flows' sums per cgroup), one sweep each: one
//!   sweep feeding both took 2.7 times as long at 100k flows (18.1 ms against 6.6 in
//!   flowlens-bench, 1k containers): the two sinks' working sets, each indexed at random,
//!   evict each other from the cache. The containers and pods ([`workloads`], `container:*`,
//!   `pod:*`) work per cgroup from there: no other look at the flows.
//! - [`peer_values`], once the gather gave the new flows their peer slot (which needs the
//!   containers resolved and given their series, from the first pass, and the DNAT lookups,
//!   made with the table released, so flows may have ended meanwhile): `container:peers`
//!   ([`peers`]), named after the containers in their final order by [`peer_series`].
//!
//! A new kind (DNS per container, subnets, per-workload series) plugs in the same way: a
//! module here with its values type and a `FlowSink` keyed by what the flow carries (a cgroup
//! for a per-container kind: it can also sum the per-cgroup values of [`ActiveByCgroup`]; a
//! slot the flow table gives each flow for a kind with its own series table, as hosts and peers
//! have), swept in the pass whose keys it needs; its values go into
//! `metrics::Snapshot` and `metrics.rs` gets one encoding function for them.
#![forbid(unsafe_code)]

pub(crate) mod hosts;
pub(crate) mod peers;
pub(crate) mod workloads;

use crate::flows::{Flow, FlowTable};
pub use hosts::FlowValues;
use hosts::HostSums;
pub use peers::{peer_series, peer_series_into, peer_values, peer_values_into};
pub use workloads::{active_by_cgroup, ActiveByCgroup};

/// One kind of series summed from the active flows: what one flow adds to its series.
pub(crate) trait FlowSink {
    /// Counts one active flow.
    fn add(&mut self, flow: &Flow);
}

/// Feeds every active flow of `table` to `sink`, in the table's order (one linear sweep).
pub(crate) fn sweep(table: &FlowTable, sink: &mut impl FlowSink) {
    for flow in table.flows() {
        sink.add(flow);
    }
}

/// The first pass of a gather over the flows: the hosts' values, and the active flows' sums
/// per cgroup into `cgroups` (see [`active_by_cgroup`]): a sweep each.
pub fn first_pass(table: &FlowTable, cgroups: &mut ActiveByCgroup) -> FlowValues {
    let mut hosts = HostSums::new(table);
    sweep(table, &mut hosts);
    let mut sums = cgroups.sums();
    sweep(table, &mut sums);
    sums.finish();
    hosts.finish(table)
}

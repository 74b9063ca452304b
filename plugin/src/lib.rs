//! libflowlens: the flowlens plugin. Exports the ABI-stable root module the `flowlens` shim loads.
//!
//! What is computed (flow table, workloads, metrics, encoder) is the pure `flowlens-core` crate;
//! this crate reads the kernel and the node and drives it. Code map: [`config`] (the TOML
//! contract), [`collector`] (eBPF programs via aya, the ring buffer reader, the live-socket
//! iterator), [`seed`] (the start-up scan of established connections, sock_diag), [`conntrack`]
//! (the backend behind a virtual IP, ctnetlink), `netlink` (the two's framing), `containers`
//! (cgroup paths and the runtimes' files to container names), `iface` (interface counters from
//! sysfs), `modules` (which kernel modules are there: flowlens makes the kernel load none),
//! `privileges` (capabilities dropped after start-up), `logging` (to the shim's log callback),
//! `startup` (the collector started: eBPF, the start-up scan, conntrack, the capabilities given
//! up), `sources` (what a gather reads, for the core's pipeline), `doctor`, [`plugin`] (the ABI
//! boundary). With the `fuzzing` feature, `fuzz` holds
//! the entry points of the fuzz targets (tests/fuzz): never in the product.

pub mod collector;
pub mod config;
pub mod conntrack;
mod containers;
mod doctor;
#[cfg(feature = "fuzzing")]
pub mod fuzz;
mod iface;
mod logging;
mod modules;
mod netlink;
pub mod plugin;
mod privileges;
pub mod seed;
mod sources;
mod startup;

use abi_stable::{export_root_module, prefix_type::PrefixTypeTrait};
use flowlens_abi::{FlowlensMod, FlowlensModRef};

/// The root module: what `FlowlensModRef::load_from_file` finds in `libflowlens.so`.
#[export_root_module]
pub fn get_root_module() -> FlowlensModRef {
    FlowlensMod {
        create: plugin::create,
        default_config: plugin::default_config,
    }
    .leak_into_prefix()
}

/// For the unit tests that need root (network namespaces, netlink requests that need
/// CAP_NET_ADMIN): true when they can run; otherwise skipped with the reason printed, and a
/// failure under `CI=true`.
#[cfg(test)]
pub(crate) fn root_or_skip(test: &str) -> bool {
    // SAFETY: trivial syscall.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test}: needs root, and CI=true forbids skipping"
    );
    eprintln!("{test}: skipped, needs root");
    false
}

//! libflowlens: the flowlens plugin. Exports the ABI-stable root module the `flowlens` shim loads.
//!
//! Code map: [`config`] (the TOML contract), [`lineproto`] (encoder and strict parser),
//! [`iface`] (interface counters), [`collector`] (eBPF programs via aya), [`records`] (the kernel
//! records' Rust mirrors), [`flows`] (the flow table), [`ndpi`] (protocol inference),
//! [`metrics`] (values to ntopng-schema lines), [`plugin`] (the collector behind the ABI).
//! With the `fuzzing` feature, `fuzz` holds the entry points of the fuzz targets (tests/fuzz).

pub mod collector;
pub mod config;
pub mod containers;
pub mod flows;
#[cfg(feature = "fuzzing")]
pub mod fuzz;
pub mod iface;
pub mod lineproto;
mod logging;
pub mod metrics;
pub mod ndpi;
pub mod plugin;
mod privileges;
pub mod records;
pub mod seed;
pub mod workloads;

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

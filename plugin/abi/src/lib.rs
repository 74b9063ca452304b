//! The types that cross the boundary between the `flowlens` executable and `libflowlens.so`.
//!
//! Only `abi_stable` types live here: the versioned root module the plugin exports, the collector
//! trait object it hands out, the error it returns and the log callback it calls. Everything else
//! (config, collector, encoder) stays inside the plugin.

// `#[sabi_trait]` expands to impl blocks inside a const item.
#![allow(non_local_definitions)]

use abi_stable::{
    declare_root_module_statics,
    library::RootModule,
    package_version_strings, sabi_trait,
    sabi_types::VersionStrings,
    std_types::{RBox, RResult, RStr, RString, RVec},
    StableAbi,
};

/// The file name the shim looks for next to itself and in the packaged library directory.
pub const PLUGIN_FILE_NAME: &str = "libflowlens.so";

/// Log levels, in Telegraf's order. The shim prints them with Telegraf's `E! `/`W! `/`I! `/`D! `
/// prefixes.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// Something failed; the user must act.
    Error = 1,
    /// Something is degraded.
    Warn = 2,
    /// Normal progress.
    Info = 3,
    /// Detail for developers.
    Debug = 4,
}

impl LogLevel {
    /// The prefix Telegraf's execd input understands, e.g. `"E! "`.
    pub fn telegraf_prefix(self) -> &'static str {
        match self {
            LogLevel::Error => "E! ",
            LogLevel::Warn => "W! ",
            LogLevel::Info => "I! ",
            LogLevel::Debug => "D! ",
        }
    }
}

/// What the shim lends the plugin: where log lines go, and what the collector is for.
#[repr(C)]
#[derive(StableAbi, Clone, Copy)]
pub struct HostCallbacks {
    /// Writes one log line (without prefix or newline) at `level`.
    pub log: extern "C" fn(level: LogLevel, message: RStr<'_>),
    /// The most verbose level the shim will print; the plugin skips formatting anything above it.
    pub max_level: LogLevel,
    /// The collector serves `flowlens doctor`: it keeps, after start-up, what doctor's checks
    /// need (CAP_PERFMON and CAP_BPF, to load its test programs); a gathering one keeps only
    /// what its gathers need.
    pub for_doctor: bool,
}

/// What went wrong, so the shim can choose its exit code (2 for configuration, 1 otherwise).
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The configuration is invalid (exit code 2).
    Config = 1,
    /// Any other failure (exit code 1).
    Other = 2,
    /// The plugin panicked; the panic was caught at the boundary (exit code 1).
    Panic = 3,
}

/// An error that crosses the boundary: a kind and a readable, single-line message.
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct PluginError {
    /// What kind of failure this is.
    pub kind: ErrorKind,
    /// The message, with its cause chain joined by `: `.
    pub message: RString,
}

/// What one gather produced, besides the bytes.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy, Default)]
pub struct GatherSummary {
    /// Number of lines appended to the output buffer.
    pub lines: u64,
    /// The timestamp (nanoseconds since the epoch) carried by every line of this gather.
    pub timestamp_ns: i64,
}

/// Settings the shim needs from the plugin's configuration.
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct ShimSettings {
    /// Seconds between gathers in `stream` mode.
    pub interval_secs: u64,
    /// Where a running instance publishes its health after each gather (`flowlens health`
    /// reads it); empty: nowhere.
    pub health_file: RString,
}

/// One line of `flowlens doctor`: a prerequisite or a probe, whether it works, and why (not).
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct DoctorCheck {
    /// What was checked, e.g. `btf` or `probe fl_send (tp_btf/sock_send_length)`.
    pub name: RString,
    /// Whether it works here.
    pub ok: bool,
    /// Why, or what to do about it.
    pub detail: RString,
}

/// A running collector: created from a config, gathered from, dropped to shut down (dropping
/// detaches every eBPF program it attached).
#[sabi_trait]
pub trait Collector: Send {
    /// Runs one gather and appends its line protocol to `out`.
    fn gather(&mut self, out: &mut RVec<u8>) -> RResult<GatherSummary, PluginError>;

    /// The settings the shim needs.
    fn settings(&self) -> ShimSettings;

    /// Every prerequisite and probe, with its status on this machine.
    #[sabi(last_prefix_field)]
    fn doctor(&self) -> RVec<DoctorCheck>;
}

/// The collector as a boxed, ABI-stable trait object.
pub type CollectorBox = Collector_TO<'static, RBox<()>>;

/// The root module `libflowlens.so` exports.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = FlowlensModRef)))]
#[sabi(missing_field(panic))]
pub struct FlowlensMod {
    /// Creates a collector from the text of a TOML config (empty text: built-in defaults).
    /// `source` names where the text came from, for error messages.
    pub create: extern "C" fn(
        config_toml: RStr<'_>,
        source: RStr<'_>,
        host: HostCallbacks,
    ) -> RResult<CollectorBox, PluginError>,

    /// The full default configuration as commented TOML, generated from the code.
    #[sabi(last_prefix_field)]
    pub default_config: extern "C" fn() -> RString,
}

impl RootModule for FlowlensModRef {
    declare_root_module_statics! {FlowlensModRef}
    const BASE_NAME: &'static str = "flowlens";
    const NAME: &'static str = "flowlens";
    /// The ABI version is this crate's own version (not the workspace's): its Cargo.toml says
    /// when to bump it.
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}

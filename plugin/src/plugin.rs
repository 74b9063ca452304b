//! The collector behind the ABI: `create` and `default_config`, [`Flowlens`]'s gathers and
//! `doctor`, and panics and errors turned into [`PluginError`]s. Start-up is `startup.rs`, the
//! gather the core's pipeline (`flowlens_core::Gather`) over `sources.rs`, doctor `doctor.rs`.

use crate::{
    collector::lock,
    config::{Config, LogLevelName, Node},
    doctor::Doctor,
    logging,
    sources::NodeSources,
    startup::{self, StartFacts},
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
use flowlens_core::{Event, FlowTable, Gather};
use std::{
    panic::{catch_unwind, AssertUnwindSafe},
    sync::{Arc, Mutex},
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

/// The collector: its config, the flow table, the sources and the gather pipeline.
pub struct Flowlens {
    config: Config,
    /// Shared with the collector's reader thread, which applies the kernel's records to it.
    table: Arc<Mutex<FlowTable>>,
    sources: NodeSources,
    gather: Gather,
    /// What start-up found (`doctor`).
    facts: StartFacts,
}

impl Flowlens {
    /// Builds a collector from a validated config and the node's name ([`Config::node`]).
    pub fn new(config: Config, node: Node) -> Flowlens {
        let started = startup::start(&config, node);
        Flowlens {
            config,
            table: started.table,
            sources: started.sources,
            gather: started.gather,
            facts: started.facts,
        }
    }

    /// The capabilities kept after start-up (`startup::kept_capabilities`): what the gathers
    /// of this kernel need (CAP_BPF where its bpf() calls need it, CAP_NET_ADMIN while the
    /// DNAT backends are served), and for `doctor` (`for_doctor`) CAP_BPF and CAP_PERFMON too.
    pub fn kept_capabilities(&self, for_doctor: bool) -> u64 {
        startup::kept_capabilities(startup::Needs {
            gathers_need_bpf: self.facts.gathers_need_bpf,
            conntrack: self.sources.conntrack.is_some(),
            for_doctor,
        })
    }

    /// One gather: read every source, encode every line with one timestamp.
    pub fn gather_into(&mut self, out: &mut Vec<u8>) -> Result<GatherSummary, PluginError> {
        // Held while the gather reads and updates it (the reader queues what it drains
        // meanwhile), released for the interface read and the DNAT lookups.
        let written = self
            .gather
            .run(&self.table, &mut self.sources, out)
            .map_err(|_| other_error("the system clock is before 1970"))?;
        Ok(GatherSummary {
            lines: written.lines,
            timestamp_ns: written.timestamp_ns,
        })
    }

    /// A copy of the active flows (for tests and tools built on the library).
    pub fn flows(&self) -> impl Iterator<Item = flowlens_core::Flow> {
        lock(&self.table)
            .flows()
            .cloned()
            .collect::<Vec<_>>()
            .into_iter()
    }

    /// The prerequisites and probes, with their status here.
    pub fn checks(&self) -> Vec<DoctorCheck> {
        Doctor {
            facts: &self.facts,
            sources: &self.sources,
            dnat_skipped: self.gather.events().total(Event::DnatLookupSkipped),
        }
        .checks()
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
        startup::drop_privileges(flowlens.kept_capabilities(host.for_doctor));
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

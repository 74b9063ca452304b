//! The floor of the benchmarks: the collector's hooks with empty programs attached, to measure
//! what merely tracing those hooks costs the host, apart from anything flowlens does in them.
//!
//! The embedded object carries `fl_noop_set_state`, `fl_noop_send`, `fl_noop_recv` and
//! `fl_noop_destroy`, each on the same `tp_btf` tracepoint as the real program of the same role
//! (the tracepoints of the default config where they all exist, as on 6.3+). [`Floor::attach`] loads the
//! object, attaches those and nothing else; dropping the [`Floor`] detaches them.

use super::{kernel_btf, reason, CollectorError, BPF_OBJECT};
use aya::{programs::BtfTracePoint, EbpfLoader};

/// The empty programs and the tracepoints they attach to, mirroring the `tp_btf` hooks of
/// [`super::FEATURES`].
pub const FLOOR_PROBES: &[(&str, &str)] = &[
    ("fl_noop_set_state", "inet_sock_set_state"),
    ("fl_noop_destroy", "tcp_destroy_sock"),
    ("fl_noop_send", "sock_send_length"),
    ("fl_noop_recv", "sock_recv_length"),
];

/// Why the floor could not be attached.
#[derive(Debug, thiserror::Error)]
pub enum FloorError {
    /// The object or the kernel's BTF could not be loaded.
    #[error(transparent)]
    Collector(#[from] CollectorError),
    /// One empty program failed to load or attach.
    #[error("cannot attach {program} (tp_btf/{tracepoint}): {reason}")]
    Attach {
        /// The program.
        program: &'static str,
        /// Its tracepoint.
        tracepoint: &'static str,
        /// The kernel's or the verifier's words.
        reason: String,
    },
}

/// The empty programs, attached; they are detached when this is dropped.
pub struct Floor {
    _ebpf: aya::Ebpf,
}

impl Floor {
    /// Loads the embedded object and attaches the empty programs. All of them or an error.
    pub fn attach() -> Result<Floor, FloorError> {
        let btf = kernel_btf()?;
        let mut ebpf = EbpfLoader::new()
            .btf(Some(&btf))
            .load(BPF_OBJECT)
            .map_err(|e| CollectorError::Load(reason(&e)))?;
        for &(program, tracepoint) in FLOOR_PROBES {
            let fail = |reason: String| FloorError::Attach {
                program,
                tracepoint,
                reason,
            };
            let prog: &mut BtfTracePoint = ebpf
                .program_mut(program)
                .ok_or_else(|| fail("missing from the embedded object".into()))?
                .try_into()
                .map_err(|e| fail(reason(&e)))?;
            prog.load(tracepoint, &btf).map_err(|e| fail(reason(&e)))?;
            prog.attach().map_err(|e| fail(reason(&e)))?;
        }
        Ok(Floor { _ebpf: ebpf })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_hooks_what_the_collector_hooks() {
        let floor: Vec<&str> = FLOOR_PROBES.iter().map(|(_, tp)| *tp).collect();
        let real: Vec<&str> = super::super::FEATURES
            .iter()
            .flat_map(|f| f.ways.iter().flat_map(|way| way.iter()))
            .filter(|hook| hook.kind == super::super::HookKind::TpBtf)
            .map(|hook| hook.target)
            .collect();
        assert_eq!(floor, real);
        for (program, _) in FLOOR_PROBES {
            let name = program.as_bytes();
            assert!(
                BPF_OBJECT.windows(name.len()).any(|w| w == name),
                "{program} is not in the embedded object"
            );
        }
    }
}

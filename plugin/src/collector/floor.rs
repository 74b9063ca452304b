//! The floor of the benchmarks: the collector's hooks with empty programs attached, to measure
//! what merely tracing those hooks costs the host, apart from anything flowlens does in them.
//!
//! The embedded object carries `fl_noop_set_state`, `fl_noop_send` and `fl_noop_recv`, each on the
//! same `tp_btf` tracepoint as the real program of the same role. [`Floor::attach`] loads the
//! object, attaches those three and nothing else; dropping the [`Floor`] detaches them.

use super::{kernel_btf, reason, CollectorError, BPF_OBJECT};
use aya::{programs::BtfTracePoint, EbpfLoader};

/// The empty programs and the tracepoints they attach to, mirroring [`super::PROBES`].
pub const FLOOR_PROBES: &[(&str, &str)] = &[
    ("fl_noop_set_state", "inet_sock_set_state"),
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

/// The three empty programs, attached; they are detached when this is dropped.
pub struct Floor {
    _ebpf: aya::Ebpf,
}

impl Floor {
    /// Loads the embedded object and attaches the empty programs. All three or an error.
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

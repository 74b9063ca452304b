//! The floor of the benchmarks: the collector's hooks with empty programs attached, to measure
//! what merely tracing those hooks costs the host, apart from anything flowlens does in them.
//!
//! Its own object, ebpf/floor.bpf.o (not in the product), carries `fl_noop_set_state`,
//! `fl_noop_send`, `fl_noop_recv` and `fl_noop_destroy`, each on the same `tp_btf` tracepoint as
//! the collector's program of the same role (the tracepoints of the default config where they
//! all exist, as on 6.3+). [`Floor::attach`] loads the object and attaches them; dropping the
//! [`Floor`] detaches them.

use anyhow::{anyhow, Context, Result};
use aya::{programs::BtfTracePoint, Btf, EbpfLoader};

/// The floor's programs (ebpf/build.sh builds it from ebpf/floor.bpf.c).
static FLOOR_OBJECT: &[u8] = aya::include_bytes_aligned!("../../../ebpf/floor.bpf.o");

/// The empty programs and the tracepoints they attach to, mirroring the `tp_btf` hooks of
/// `flowlens::collector::FEATURES`.
pub const FLOOR_PROBES: &[(&str, &str)] = &[
    ("fl_noop_set_state", "inet_sock_set_state"),
    ("fl_noop_destroy", "tcp_destroy_sock"),
    ("fl_noop_send", "sock_send_length"),
    ("fl_noop_recv", "sock_recv_length"),
];

/// The empty programs, attached; they are detached when this is dropped.
pub struct Floor {
    _ebpf: aya::Ebpf,
}

impl Floor {
    /// Loads the floor's object and attaches the empty programs. All of them or an error.
    pub fn attach() -> Result<Floor> {
        let btf = Btf::from_sys_fs().context("the kernel's BTF")?;
        let mut ebpf = EbpfLoader::new()
            .btf(Some(&btf))
            .load(FLOOR_OBJECT)
            .context("load ebpf/floor.bpf.o")?;
        for &(program, tracepoint) in FLOOR_PROBES {
            let prog: &mut BtfTracePoint = ebpf
                .program_mut(program)
                .ok_or_else(|| anyhow!("{program} is missing from ebpf/floor.bpf.o"))?
                .try_into()?;
            prog.load(tracepoint, &btf)
                .and_then(|()| prog.attach().map(drop))
                .with_context(|| format!("attach {program} (tp_btf/{tracepoint})"))?;
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
        let real: Vec<&str> = flowlens::collector::FEATURES
            .iter()
            .flat_map(|f| f.ways.iter().flat_map(|way| way.iter()))
            .filter(|hook| hook.kind == flowlens::collector::HookKind::TpBtf)
            .map(|hook| hook.target)
            .collect();
        assert_eq!(floor, real);
        for (program, _) in FLOOR_PROBES {
            let name = program.as_bytes();
            assert!(
                FLOOR_OBJECT.windows(name.len()).any(|w| w == name),
                "{program} is not in ebpf/floor.bpf.o"
            );
        }
    }
}

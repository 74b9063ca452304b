//! `flowlens doctor`'s hook-kind checks: whether this kernel lets a kprobe, fentry and fexit
//! program load and attach, from their own object (ebpf/checks.bpf.o), which the collector
//! never loads. Information, not failures: the features say what serves them.

use super::attach::{program, reason};
use super::ProbeStatus;
use aya::{
    programs::{FEntry, FExit, KProbe},
    Btf, Ebpf, EbpfLoader,
};

/// The hook-kind checks' object (ebpf/checks.bpf.c).
static CHECKS_OBJECT: &[u8] = aya::include_bytes_aligned!("../../../ebpf/checks.bpf.o");

/// Loads and attaches the capability-check programs (kprobe, fentry, fexit) and detaches them
/// again: whether this kernel allows each kind of hook, and why not.
pub fn check_hook_kinds(btf: &Btf) -> Vec<ProbeStatus> {
    let mut ebpf = match EbpfLoader::new().btf(Some(btf)).load(CHECKS_OBJECT) {
        Ok(ebpf) => ebpf,
        Err(e) => {
            return vec![ProbeStatus {
                name: "hook kinds".into(),
                ok: false,
                detail: reason(&e),
            }]
        }
    };
    let kprobe = |ebpf: &mut Ebpf| -> Result<(), String> {
        let p: &mut KProbe = program(ebpf, "fl_check_kprobe")?;
        p.load().map_err(|e| reason(&e))?;
        p.attach("tcp_connect", 0).map_err(|e| reason(&e))?;
        Ok(())
    };
    let fentry = |ebpf: &mut Ebpf| -> Result<(), String> {
        let p: &mut FEntry = program(ebpf, "fl_check_fentry")?;
        p.load("tcp_connect", btf).map_err(|e| reason(&e))?;
        p.attach().map_err(|e| reason(&e))?;
        Ok(())
    };
    let fexit = |ebpf: &mut Ebpf| -> Result<(), String> {
        let p: &mut FExit = program(ebpf, "fl_check_fexit")?;
        p.load("tcp_connect", btf).map_err(|e| reason(&e))?;
        p.attach().map_err(|e| reason(&e))?;
        Ok(())
    };
    vec![
        hook_kind_status("hook kind kprobe (kprobe/tcp_connect)", kprobe(&mut ebpf)),
        hook_kind_status("hook kind fentry (fentry/tcp_connect)", fentry(&mut ebpf)),
        hook_kind_status("hook kind fexit (fexit/tcp_connect)", fexit(&mut ebpf)),
    ]
}

/// A check's status: information either way, saying why a kind is refused (a kernel without
/// kprobes has no kprobe event source).
fn hook_kind_status(name: &str, result: Result<(), String>) -> ProbeStatus {
    ProbeStatus {
        name: name.to_string(),
        ok: true,
        detail: match result {
            Ok(()) => "allowed here".to_string(),
            Err(why) if why.contains("kprobe/type") => {
                format!("information: no kprobe event source here (CONFIG_KPROBES off): {why}")
            }
            Err(why) => format!("information: refused here: {why}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::hook_kind_status;

    #[test]
    fn a_refused_hook_kind_is_information_with_its_reason() {
        let allowed = hook_kind_status("hook kind fexit", Ok(()));
        assert!(allowed.ok);
        assert_eq!(allowed.detail, "allowed here");
        let locked = hook_kind_status("hook kind fexit", Err("Operation not permitted".into()));
        assert!(locked.ok);
        assert_eq!(
            locked.detail,
            "information: refused here: Operation not permitted"
        );
        let why = "error reading /sys/bus/event_source/devices/kprobe/type: No such file";
        let no_kprobes = hook_kind_status("hook kind kprobe", Err(why.into()));
        assert_eq!(
            no_kprobes.detail,
            format!("information: no kprobe event source here (CONFIG_KPROBES off): {why}")
        );
    }
}

//! The attach engine: loads and attaches each program of a way with aya, undoes a way that
//! fails half-way, and turns aya's errors (the verifier's log) into one line.

use super::catalogue::{self, Feature, Hook, HookKind, HookKinds};
use super::{iter, ProbeStatus};
use aya::{
    programs::{BtfTracePoint, FEntry, FExit, Iter, KProbe},
    Btf, Ebpf,
};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

/// The verifier's or the kernel's words for an aya error, on one line. A verifier log says why
/// at its end (its first lines are the program's first instructions, or notes printed for every
/// program of a kind): long logs keep their first line (aya's summary) and their last lines.
pub(crate) fn reason(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty() && !l.starts_with("processed ") && !l.starts_with("verification time")
        })
        .collect();
    if lines.len() > 5 {
        format!(
            "{} | ... | {}",
            lines[0],
            lines[lines.len() - 3..].join(" | ")
        )
    } else {
        lines.join(" | ")
    }
}

/// What attaching a feature gave.
pub(super) struct Attached {
    pub(super) status: ProbeStatus,
    /// The programs that serve it.
    pub(super) programs: Vec<&'static str>,
    /// The iterator link, for a feature served by one.
    pub(super) iter_link: Option<OwnedFd>,
}

/// Attaches the first way of `feature` whose programs all load and attach (the catalogue's
/// choice); a way that fails half-way is unloaded again before the next is tried.
pub(super) fn attach_feature(
    ebpf: &mut Ebpf,
    btf: &Btf,
    feature: &Feature,
    allowed: HookKinds,
) -> Attached {
    let choice = catalogue::choose(feature, allowed, |way| attach_way(ebpf, btf, way));
    let status = choice.status(feature);
    match choice.served {
        Some((way, iter_link)) => Attached {
            status,
            programs: way.iter().map(|h| h.program).collect(),
            iter_link,
        },
        None => Attached {
            status,
            programs: Vec::new(),
            iter_link: None,
        },
    }
}

/// Loads and attaches every program of `way`; on the first failure, unloads the way's
/// programs again and says which hook failed and why. Returns the iterator link of a way
/// served by one.
fn attach_way(ebpf: &mut Ebpf, btf: &Btf, way: &[Hook]) -> Result<Option<OwnedFd>, (Hook, String)> {
    let mut iter_link = None;
    for hook in way {
        match attach_hook(ebpf, btf, hook) {
            Ok(link) => iter_link = iter_link.or(link),
            Err(why) => {
                for hook in way {
                    unload_hook(ebpf, hook);
                }
                return Err((*hook, why));
            }
        }
    }
    Ok(iter_link)
}

/// Loads and attaches one program; returns the link of an iterator (aya cannot attach one to a
/// map), nothing for the others (aya holds their links).
fn attach_hook(ebpf: &mut Ebpf, btf: &Btf, hook: &Hook) -> Result<Option<OwnedFd>, String> {
    match hook.kind {
        HookKind::TpBtf => {
            let p: &mut BtfTracePoint = program(ebpf, hook.program)?;
            p.load(hook.target, btf).map_err(|e| reason(&e))?;
            p.attach().map_err(|e| reason(&e))?;
            Ok(None)
        }
        HookKind::FEntry => {
            let p: &mut FEntry = program(ebpf, hook.program)?;
            p.load(hook.target, btf).map_err(|e| reason(&e))?;
            p.attach().map_err(|e| reason(&e))?;
            Ok(None)
        }
        HookKind::FExit => {
            let p: &mut FExit = program(ebpf, hook.program)?;
            p.load(hook.target, btf).map_err(|e| reason(&e))?;
            p.attach().map_err(|e| reason(&e))?;
            Ok(None)
        }
        HookKind::KProbe | HookKind::KRetProbe => {
            let p: &mut KProbe = program(ebpf, hook.program)?;
            p.load().map_err(|e| reason(&e))?;
            p.attach(hook.target, 0).map_err(|e| reason(&e))?;
            Ok(None)
        }
        HookKind::Iter => {
            let p: &mut Iter = program(ebpf, hook.program)?;
            p.load(hook.target, btf).map_err(|e| reason(&e))?;
            let prog_fd = p.fd().map_err(|e| reason(&e))?.as_fd().as_raw_fd();
            iter::link(prog_fd)
                .map(Some)
                .map_err(|e| format!("cannot link the iterator: {e}"))
        }
    }
}

/// Detaches and unloads a program of a way that could not be attached whole (no-op when it did
/// not load).
fn unload_hook(ebpf: &mut Ebpf, hook: &Hook) {
    let _ = match hook.kind {
        HookKind::TpBtf => program::<BtfTracePoint>(ebpf, hook.program).map(|p| p.unload()),
        HookKind::FEntry => program::<FEntry>(ebpf, hook.program).map(|p| p.unload()),
        HookKind::FExit => program::<FExit>(ebpf, hook.program).map(|p| p.unload()),
        HookKind::KProbe | HookKind::KRetProbe => {
            program::<KProbe>(ebpf, hook.program).map(|p| p.unload())
        }
        HookKind::Iter => program::<Iter>(ebpf, hook.program).map(|p| p.unload()),
    };
}

/// The program `name` of a loaded object as its concrete type, or why not.
pub(super) fn program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T, String>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or_else(|| "missing from the embedded object".to_string())?
        .try_into()
        .map_err(|e| reason(&e))
}

#[cfg(test)]
mod tests {
    use super::reason;

    #[derive(Debug)]
    struct Error(&'static str, Option<Box<Error>>);

    impl std::fmt::Display for Error {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Error {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    #[test]
    fn a_verifier_log_keeps_its_summary_and_its_last_lines() {
        let log = "the BPF_PROG_LOAD syscall failed. Verifier output: arg#0 type is not a struct\n\
                   0: (79) r6 = *(u64 *)(r1 +0)\n\
                   1: (85) call bpf_get_current_pid_tgid#14\n\
                   \n\
                   2: (b7) r1 = 0\n\
                   3: (85) call bpf_get_socket_cookie#46\n\
                   unknown func bpf_get_socket_cookie#46\n\
                   processed 4 insns (limit 1000000)\n\
                   verification time 12 usec\n";
        let error = Error(
            "failed to load program `fl_set_state`",
            Some(Box::new(Error(log, None))),
        );
        assert_eq!(
            reason(&error),
            "failed to load program `fl_set_state`: the BPF_PROG_LOAD syscall failed. Verifier \
             output: arg#0 type is not a struct | ... | 2: (b7) r1 = 0 | 3: (85) call \
             bpf_get_socket_cookie#46 | unknown func bpf_get_socket_cookie#46"
        );
    }

    #[test]
    fn a_short_error_is_its_whole_cause_chain_on_one_line() {
        let error = Error(
            "`bpf_link_create` failed",
            Some(Box::new(Error(
                "Operation not permitted (os error 1)",
                None,
            ))),
        );
        assert_eq!(
            reason(&error),
            "`bpf_link_create` failed: Operation not permitted (os error 1)"
        );
    }
}

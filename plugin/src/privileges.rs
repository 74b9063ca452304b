//! Capabilities: which ones this process holds (for `doctor`), and giving up those the gathers do
//! not need once start-up is done (programs loaded and attached, maps open, the start-up scan
//! of every network namespace finished).
//!
//! Capabilities are per thread: the drop applies to the calling thread (the one that creates the
//! collector, whose later threads inherit it), and the event reader drops all of its own.

use std::fmt::Write as _;

/// Capability numbers (linux/capability.h) used here.
pub(crate) const CAP_SYS_ADMIN: u32 = 21;
/// `CAP_NET_ADMIN`.
pub(crate) const CAP_NET_ADMIN: u32 = 12;
/// `CAP_SYS_PTRACE`.
pub(crate) const CAP_SYS_PTRACE: u32 = 19;
/// `CAP_PERFMON` (5.8+).
pub(crate) const CAP_PERFMON: u32 = 38;
/// `CAP_BPF` (5.8+).
pub(crate) const CAP_BPF: u32 = 39;

/// Names of capabilities 0..=40, as in capabilities(7) without the `CAP_` prefix.
const NAMES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// The name of a capability (`CAP_BPF`), or its number when unknown.
pub(crate) fn name(cap: u32) -> String {
    match NAMES.get(cap as usize) {
        Some(n) => format!("CAP_{n}"),
        None => format!("cap {cap}"),
    }
}

/// The names of the capabilities in `set`, comma-separated ("none" when empty).
pub(crate) fn names(set: u64) -> String {
    let mut out = String::new();
    for cap in 0..64u32 {
        if set & (1 << cap) != 0 {
            if !out.is_empty() {
                out.push_str(", ");
            }
            let _ = write!(out, "{}", name(cap));
        }
    }
    if out.is_empty() {
        out.push_str("none");
    }
    out
}

/// A bit set of one capability.
pub(crate) const fn bit(cap: u32) -> u64 {
    1 << cap
}

/// The effective, permitted and bounding sets of the calling thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Caps {
    /// Effective.
    pub effective: u64,
    /// Permitted.
    pub permitted: u64,
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// The calling thread's capabilities (`capget`).
pub(crate) fn current() -> std::io::Result<Caps> {
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: a version-3 header and the two data structs version 3 asks for.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let join = |lo: u32, hi: u32| u64::from(lo) | (u64::from(hi) << 32);
    Ok(Caps {
        effective: join(data[0].effective, data[1].effective),
        permitted: join(data[0].permitted, data[1].permitted),
    })
}

/// Keeps only the capabilities in `keep` (of those held) in the calling thread: effective and
/// permitted sets, the bounding set (when CAP_SETPCAP allows), no ambient ones; and sets
/// no_new_privs, so that nothing this thread or its children execute can gain any back.
/// Returns the capabilities kept.
pub(crate) fn keep_only(keep: u64) -> std::io::Result<u64> {
    // SAFETY: plain prctl calls with integer arguments.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // Ambient capabilities would survive an exec: none.
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        );
    }
    let now = current()?;
    if now.effective & bit(8) != 0 {
        // CAP_SETPCAP: the bounding set too (what a later exec could grant).
        for cap in 0..64u32 {
            if keep & bit(cap) == 0 {
                // SAFETY: prctl with integer arguments; EINVAL past the last capability.
                unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
            }
        }
    }
    let kept = now.permitted & keep;
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [
        CapData {
            effective: kept as u32,
            permitted: kept as u32,
            inheritable: 0,
        },
        CapData {
            effective: (kept >> 32) as u32,
            permitted: (kept >> 32) as u32,
            inheritable: 0,
        },
    ];
    // SAFETY: a version-3 header and two data structs.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(kept)
}

/// Sets the calling thread's effective set to `effective` (within its permitted set, which
/// stays): capabilities are per thread, so the others keep theirs.
fn set_effective(effective: u64) -> std::io::Result<()> {
    let now = current()?;
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let effective = effective & now.permitted;
    let data = [
        CapData {
            effective: effective as u32,
            permitted: now.permitted as u32,
            inheritable: 0,
        },
        CapData {
            effective: (effective >> 32) as u32,
            permitted: (now.permitted >> 32) as u32,
            inheritable: 0,
        },
    ];
    // SAFETY: a version-3 header and two data structs.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Runs `f` in the calling thread with no effective capability (the permitted ones stay, and
/// are effective again after): what `f` does there needs none. Err when the set cannot be
/// changed or restored.
pub(crate) fn without_capabilities<T>(f: impl FnOnce() -> T) -> std::io::Result<T> {
    let before = current()?.effective;
    set_effective(0)?;
    let result = f();
    set_effective(before)?;
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_capabilities_7() {
        assert_eq!(name(CAP_BPF), "CAP_BPF");
        assert_eq!(name(CAP_PERFMON), "CAP_PERFMON");
        assert_eq!(name(CAP_SYS_ADMIN), "CAP_SYS_ADMIN");
        assert_eq!(name(CAP_SYS_PTRACE), "CAP_SYS_PTRACE");
        assert_eq!(name(CAP_NET_ADMIN), "CAP_NET_ADMIN");
        assert_eq!(name(0), "CAP_CHOWN");
        assert_eq!(name(63), "cap 63");
        assert_eq!(
            names(bit(CAP_BPF) | bit(CAP_PERFMON)),
            "CAP_PERFMON, CAP_BPF"
        );
        assert_eq!(names(0), "none");
    }

    #[test]
    fn capabilities_are_given_up_for_a_call_and_back_after() {
        let before = current().unwrap();
        let inside = without_capabilities(|| current().unwrap()).unwrap();
        assert_eq!(inside.effective, 0);
        assert_eq!(inside.permitted, before.permitted);
        assert_eq!(current().unwrap(), before);
    }

    #[test]
    fn the_calling_thread_s_capabilities_can_be_read() {
        let caps = current().unwrap();
        assert_eq!(caps.effective & !caps.permitted, 0);
    }
}

//! The iterator that reads live TCP sockets at each gather (`iter/task_file`): its link, kept
//! for the collector's life, and its runs.
//!
//! Running it means creating an iterator fd from the link and reading it to its end: the
//! program writes nothing to the reader, it updates the `socks` map's entries in place. (aya
//! 0.14 hands an iterator's link over only once, as a file; a gather needs a new one each time.)

use std::{
    io::{self, Read},
    os::fd::{FromRawFd, OwnedFd, RawFd},
};

const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_ITER_CREATE: libc::c_long = 33;
const BPF_TRACE_ITER: u32 = 28;

/// `union bpf_attr`, its `link_create` member (no `iter_info`: task iterators take none).
#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
}

/// `union bpf_attr`, its `iter_create` member.
#[repr(C)]
#[derive(Default)]
struct IterCreateAttr {
    link_fd: u32,
    flags: u32,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<RawFd> {
    // SAFETY: `attr` is a valid, initialised `bpf_attr` prefix of the size passed; the kernel
    // reads at most that many bytes and zero-extends the rest.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, std::mem::size_of::<T>()) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    RawFd::try_from(rc).map_err(|_| io::Error::other("fd out of range"))
}

/// Links the loaded iterator program `prog_fd`; dropping the returned fd detaches it.
pub(super) fn link(prog_fd: RawFd) -> io::Result<OwnedFd> {
    let mut attr = LinkCreateAttr {
        prog_fd: prog_fd as u32,
        attach_type: BPF_TRACE_ITER,
        ..LinkCreateAttr::default()
    };
    let fd = bpf(BPF_LINK_CREATE, &mut attr)?;
    // SAFETY: the kernel just returned this fd to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Runs the iterator of `link` once, over every open file of every process.
pub(super) fn run(link: &OwnedFd) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let mut attr = IterCreateAttr {
        link_fd: link.as_raw_fd() as u32,
        flags: 0,
    };
    let fd = bpf(BPF_ITER_CREATE, &mut attr)?;
    // SAFETY: the kernel just returned this fd to us; nothing else owns it.
    let mut file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let mut sink = [0u8; 256];
    while file.read(&mut sink)? > 0 {}
    Ok(())
}

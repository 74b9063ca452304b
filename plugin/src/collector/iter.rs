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

/// Most reads of one run that may end in EAGAIN or EINTR before the run gives up. The kernel
/// ends a read that produced no output with EAGAIN after `MAX_ITER_OBJECTS` (1,000,000) objects
/// (kernel/bpf/bpf_iter.c), so that no read holds the CPU too long, and resumes at the next
/// read; our program writes nothing, so a host with more than a million open files needs one
/// more read per million. 1024 is a billion open files: a kernel that kept answering EAGAIN
/// beyond that would keep the gather waiting for ever.
const MAX_RETRIES: u32 = 1024;

/// Runs the iterator of `link` once, over every open file of every process: reads it to its
/// end, again after each EAGAIN or EINTR (the kernel resumes where the last read stopped).
///
/// The kernel stops such a read before it runs the program on the next file, and the next read
/// starts with that file: a resumed run visits each file once. (Were one visited twice, the
/// program's work is idempotent: a `socks` entry set from its socket, a `listen_drops` entry
/// written with BPF_ANY under the listener's key.) `listen_drops` is taken only once the whole
/// run is done, so it holds the listeners of every part of the run, each once; a run given up
/// is not taken, and the next run writes over its entries.
pub(super) fn run(link: &OwnedFd) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let mut attr = IterCreateAttr {
        link_fd: link.as_raw_fd() as u32,
        flags: 0,
    };
    let fd = bpf(BPF_ITER_CREATE, &mut attr)?;
    // SAFETY: the kernel just returned this fd to us; nothing else owns it.
    let file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    read_to_end(file, MAX_RETRIES)
}

/// Reads `source` until it says end of file, retrying a read that failed with EAGAIN or EINTR
/// up to `max_retries` times in all.
fn read_to_end(mut source: impl Read, max_retries: u32) -> io::Result<()> {
    let mut sink = [0u8; 256];
    let mut retries = 0u32;
    loop {
        match source.read(&mut sink) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                retries += 1;
                if retries > max_retries {
                    return Err(io::Error::new(
                        e.kind(),
                        format!(
                            "the socket iterator still answered \"{e}\" after {max_retries} \
                             retries (each after up to a million open files): gave up"
                        ),
                    ));
                }
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Answers with the errors of `script` in turn (`None`: one byte), then end of file.
    struct Script(std::vec::IntoIter<Option<io::ErrorKind>>);

    impl Read for Script {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            match self.0.next() {
                Some(Some(kind)) => Err(io::Error::from(kind)),
                Some(None) => Ok(1),
                None => Ok(0),
            }
        }
    }

    fn script(steps: Vec<Option<io::ErrorKind>>) -> Script {
        Script(steps.into_iter())
    }

    #[test]
    fn eagain_and_eintr_are_read_again_up_to_the_bound() {
        use io::ErrorKind::{Interrupted, WouldBlock};
        let steps = vec![Some(WouldBlock), None, Some(Interrupted), Some(WouldBlock)];
        assert!(read_to_end(script(steps), 3).is_ok());
        let e = read_to_end(script(vec![Some(WouldBlock); 4]), 3).unwrap_err();
        assert_eq!(e.kind(), WouldBlock);
        assert!(e.to_string().contains("after 3 retries"), "{e}");
        let e = read_to_end(script(vec![Some(io::ErrorKind::PermissionDenied)]), 3);
        assert_eq!(e.unwrap_err().kind(), io::ErrorKind::PermissionDenied);
    }
}

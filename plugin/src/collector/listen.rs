//! The `listen_drops` map: the listening TCP sockets the gather's iterator found and the drops
//! each has counted, read and emptied in one pass after each run.

use flowlens_core::records::{FlListen, FlListenKey};
use std::os::fd::RawFd;

/// Entries moved per syscall.
const CHUNK: usize = 1024;

/// Every entry of the hash map `map_fd` (keys [`FlListenKey`], values [`FlListen`]), deleted as
/// read: `bpf(BPF_MAP_LOOKUP_AND_DELETE_BATCH)` (Linux 5.6+), a syscall per `CHUNK` entries.
pub(super) fn take(map_fd: RawFd) -> std::io::Result<Vec<(FlListenKey, FlListen)>> {
    const BPF_MAP_LOOKUP_AND_DELETE_BATCH: libc::c_long = 25;
    /// `union bpf_attr`, its `batch` member.
    #[repr(C)]
    #[derive(Default)]
    struct BatchAttr {
        in_batch: u64,
        out_batch: u64,
        keys: u64,
        values: u64,
        count: u32,
        map_fd: u32,
        elem_flags: u64,
        flags: u64,
    }
    let mut out = Vec::new();
    let mut keys = vec![FlListenKey::default(); CHUNK];
    let mut values = vec![FlListen::default(); CHUNK];
    // The batch token of a hash map is a bucket index (u32); 8 bytes hold it.
    let (mut token_in, mut token_out) = (0u64, 0u64);
    let mut first = true;
    loop {
        let mut attr = BatchAttr {
            in_batch: if first {
                0
            } else {
                &token_in as *const u64 as u64
            },
            out_batch: &mut token_out as *mut u64 as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: CHUNK as u32,
            map_fd: map_fd as u32,
            ..BatchAttr::default()
        };
        // SAFETY: the buffers hold CHUNK keys and values of the map's sizes and outlive the
        // call; the kernel writes at most `count` of each and reports how many in `count`.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_AND_DELETE_BATCH,
                &mut attr as *mut BatchAttr,
                std::mem::size_of::<BatchAttr>(),
            )
        };
        let done = if rc < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::ENOENT) {
                return Err(e);
            }
            true
        } else {
            false
        };
        let n = (attr.count as usize).min(CHUNK);
        out.extend(keys[..n].iter().copied().zip(values[..n].iter().copied()));
        if done {
            return Ok(out);
        }
        token_in = token_out;
        first = false;
    }
}

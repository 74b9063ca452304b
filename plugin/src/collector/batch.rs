//! Reading a whole BPF hash map in batches: `bpf(BPF_MAP_LOOKUP_BATCH)` (a snapshot) or
//! `BPF_MAP_LOOKUP_AND_DELETE_BATCH` (taken out), Linux 5.6+, one syscall per chunk of entries
//! instead of two per entry.

use flowlens_core::records::{FlListen, FlListenKey, FlSock};
use std::os::fd::RawFd;

/// Plain old data the kernel may write whole: every bit pattern is a valid value.
///
/// # Safety
/// Implement only for `#[repr(C)]` types (or integers) made of integers and byte arrays.
pub(super) unsafe trait Plain: Copy {}
// SAFETY: an integer.
unsafe impl Plain for u64 {}
// SAFETY: #[repr(C)], integers and byte arrays only (records.rs mirrors ebpf/flowlens.h).
unsafe impl Plain for FlSock {}
// SAFETY: as above.
unsafe impl Plain for FlListenKey {}
// SAFETY: as above.
unsafe impl Plain for FlListen {}

/// What a batch read does to the entries it reads.
#[derive(Clone, Copy)]
pub(super) enum Batch {
    /// Leaves them (`BPF_MAP_LOOKUP_BATCH`).
    Lookup = 24,
    /// Deletes them (`BPF_MAP_LOOKUP_AND_DELETE_BATCH`).
    LookupAndDelete = 25,
}

/// Every entry of the hash map `map_fd` (keys `K`, values `V`: the map's key and value types),
/// at most `limit`, `chunk` per syscall.
pub(super) fn read<K: Plain, V: Plain>(
    map_fd: RawFd,
    op: Batch,
    chunk: usize,
    limit: usize,
) -> std::io::Result<Vec<(K, V)>> {
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
    let mut keys: Vec<K> = Vec::with_capacity(chunk);
    let mut values: Vec<V> = Vec::with_capacity(chunk);
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
            count: chunk as u32,
            map_fd: map_fd as u32,
            ..BatchAttr::default()
        };
        // SAFETY: the buffers have room for `chunk` keys and values of the map's sizes and
        // outlive the call; the kernel writes at most `count` of each and reports how many.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                op as libc::c_long,
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
        let n = (attr.count as usize).min(chunk);
        // SAFETY: the kernel wrote the first `n` keys and values, whole; any bits are valid
        // values of `Plain` types.
        unsafe {
            keys.set_len(n);
            values.set_len(n);
        }
        out.extend(keys.drain(..).zip(values.drain(..)));
        if done || out.len() >= limit {
            out.truncate(limit);
            return Ok(out);
        }
        token_in = token_out;
        first = false;
    }
}

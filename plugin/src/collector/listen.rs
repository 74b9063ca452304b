//! The `listen_drops` map: the listening TCP sockets the gather's iterator found and the drops
//! each has counted, read and emptied in one pass after each run.

use flowlens_core::records::{FlListen, FlListenKey};
use std::os::fd::RawFd;

/// Entries moved per syscall.
const CHUNK: usize = 1024;

/// Every entry of the hash map `map_fd` (keys [`FlListenKey`], values [`FlListen`]), deleted as
/// read: `bpf(BPF_MAP_LOOKUP_AND_DELETE_BATCH)` (Linux 5.6+), a syscall per `CHUNK` entries.
pub(super) fn take(map_fd: RawFd) -> std::io::Result<Vec<(FlListenKey, FlListen)>> {
    super::batch::read(
        map_fd,
        super::batch::Batch::LookupAndDelete,
        CHUNK,
        usize::MAX,
    )
}

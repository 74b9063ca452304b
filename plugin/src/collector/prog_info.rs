//! What the kernel counts about a loaded program (`bpf(BPF_OBJ_GET_INFO_BY_FD)`), read into a
//! mirror of `struct bpf_prog_info`: aya 0.14 does not expose `recursion_misses`.

use std::os::fd::RawFd;

/// `BPF_OBJ_GET_INFO_BY_FD` of linux/bpf.h's `enum bpf_cmd`.
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;

/// `struct bpf_prog_info` of linux/bpf.h (uapi), up to `recursion_misses` (Linux 5.12+). The
/// kernel writes the prefix it and the caller both know and says how long it was: an older
/// kernel writes less, and fields it did not write stay zero.
#[repr(C, align(8))]
#[derive(Default)]
struct BpfProgInfo {
    prog_type: u32,
    id: u32,
    tag: [u8; 8],
    jited_prog_len: u32,
    xlated_prog_len: u32,
    jited_prog_insns: u64,
    xlated_prog_insns: u64,
    load_time: u64,
    created_by_uid: u32,
    nr_map_ids: u32,
    map_ids: u64,
    name: [u8; 16],
    ifindex: u32,
    /// `gpl_compatible:1` and 31 unused bits.
    gpl_compatible: u32,
    netns_dev: u64,
    netns_ino: u64,
    nr_jited_ksyms: u32,
    nr_jited_func_lens: u32,
    jited_ksyms: u64,
    jited_func_lens: u64,
    btf_id: u32,
    func_info_rec_size: u32,
    func_info: u64,
    nr_func_info: u32,
    nr_line_info: u32,
    line_info: u64,
    jited_line_info: u64,
    nr_jited_line_info: u32,
    line_info_rec_size: u32,
    jited_line_info_rec_size: u32,
    nr_prog_tags: u32,
    prog_tags: u64,
    run_time_ns: u64,
    run_cnt: u64,
    recursion_misses: u64,
}

// The uapi layout (offsets from linux/bpf.h, stable since each field was added).
const _: () = {
    use std::mem::{offset_of, size_of};
    assert!(offset_of!(BpfProgInfo, name) == 64);
    assert!(offset_of!(BpfProgInfo, netns_dev) == 88);
    assert!(offset_of!(BpfProgInfo, btf_id) == 128);
    assert!(offset_of!(BpfProgInfo, prog_tags) == 184);
    assert!(offset_of!(BpfProgInfo, run_time_ns) == 192);
    assert!(offset_of!(BpfProgInfo, recursion_misses) == 208);
    assert!(size_of::<BpfProgInfo>() == 216);
};

/// `union bpf_attr`, its `info` member.
#[repr(C)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// `recursion_misses` of the program `prog_fd`: runs the kernel skipped because the program
/// was already running on that CPU. `None` when the kernel does not say (before 5.12: its
/// `bpf_prog_info` ends before the field) or the call fails.
pub(super) fn recursion_misses(prog_fd: RawFd) -> Option<u64> {
    let mut info = BpfProgInfo::default();
    let mut attr = InfoAttr {
        bpf_fd: prog_fd as u32,
        info_len: std::mem::size_of::<BpfProgInfo>() as u32,
        info: &mut info as *mut BpfProgInfo as u64,
    };
    // SAFETY: `info` is a `BpfProgInfo` and `info_len` its size; the kernel writes at most that
    // many bytes into it, and every bit pattern is a valid value of its integer fields.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            &mut attr as *mut InfoAttr,
            std::mem::size_of::<InfoAttr>(),
        )
    };
    let written = attr.info_len as usize;
    (rc == 0 && written >= std::mem::offset_of!(BpfProgInfo, recursion_misses) + 8)
        .then_some(info.recursion_misses)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_descriptor_that_is_no_program_gives_nothing() {
        // An fd that is not a BPF object: the kernel refuses it (EBADF / EINVAL).
        let file = std::fs::File::open("/dev/null").unwrap();
        use std::os::fd::AsRawFd;
        assert_eq!(super::recursion_misses(file.as_raw_fd()), None);
        assert_eq!(super::recursion_misses(-1), None);
    }
}

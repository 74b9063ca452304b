//! What the programs cannot learn by CO-RE, read from the kernel's BTF: how many arguments a
//! kernel function takes (a kprobe is not refused when it assumes the wrong arity, as an fexit
//! program is). A minimal, bounds-checked walk of the BTF type section (kernel data, validated).

/// The number of parameters of the kernel function `name`, from the raw BTF `data`
/// (/sys/kernel/btf/vmlinux); `None` when the data is not BTF or has no such function.
pub(crate) fn func_params(data: &[u8], name: &str) -> Option<usize> {
    const MAGIC: u16 = 0xeb9f;
    const KIND_FUNC: u32 = 12;
    const KIND_FUNC_PROTO: u32 = 13;
    let u16_at = |off: usize| Some(u16::from_ne_bytes(data.get(off..off + 2)?.try_into().ok()?));
    let u32_at = |off: usize| Some(u32::from_ne_bytes(data.get(off..off + 4)?.try_into().ok()?));
    if u16_at(0)? != MAGIC {
        return None;
    }
    // struct btf_header: magic, version, flags, hdr_len, type_off, type_len, str_off, str_len
    let hdr_len = u32_at(4)? as usize;
    let types = hdr_len.checked_add(u32_at(8)? as usize)?;
    let types_end = types.checked_add(u32_at(12)? as usize)?;
    let strs = hdr_len.checked_add(u32_at(16)? as usize)?;
    let strs_end = strs.checked_add(u32_at(20)? as usize)?;
    let strings = data.get(strs..strs_end)?;
    let name_is = |off: u32| {
        let rest = strings.get(off as usize..).unwrap_or_default();
        rest.strip_prefix(name.as_bytes())
            .is_some_and(|tail| tail.first() == Some(&0))
    };
    // Each type's offset, by id (ids start at 1), and the id of the function's prototype.
    let mut offsets: Vec<usize> = vec![0];
    let mut proto = None;
    let mut off = types;
    while off < types_end {
        let (name_off, info, size_or_type) = (u32_at(off)?, u32_at(off + 4)?, u32_at(off + 8)?);
        let kind = (info >> 24) & 0x1f;
        let vlen = (info & 0xffff) as usize;
        offsets.push(off);
        if kind == KIND_FUNC && proto.is_none() && name_is(name_off) {
            proto = Some(size_or_type as usize);
        }
        // The bytes that follow the common 12-byte header, per kind (linux/btf.h).
        let extra = match kind {
            1 | 14 | 17 => 4,   // INT, VAR, DECL_TAG
            3 => 12,            // ARRAY
            4 | 5 => 12 * vlen, // STRUCT, UNION: members
            6 => 8 * vlen,      // ENUM
            13 => 8 * vlen,     // FUNC_PROTO: params
            15 => 12 * vlen,    // DATASEC
            19 => 12 * vlen,    // ENUM64
            2 | 7..=12 | 16 | 18 => 0,
            _ => return None, // a kind this walk does not know: stop rather than misread
        };
        off += 12 + extra;
    }
    let at = *offsets.get(proto?)?;
    let info = u32_at(at + 4)?;
    ((info >> 24) & 0x1f == KIND_FUNC_PROTO).then_some((info & 0xffff) as usize)
}

#[cfg(test)]
mod tests {
    use super::func_params;

    /// A BTF blob: `types` (each 12-byte header plus extra) and `strings`.
    fn blob(types: &[u8], strings: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&0xeb9fu16.to_ne_bytes());
        out.extend_from_slice(&[1, 0]);
        for v in [
            24u32,
            0,
            types.len() as u32,
            types.len() as u32,
            strings.len() as u32,
        ] {
            out.extend_from_slice(&v.to_ne_bytes());
        }
        out.extend_from_slice(types);
        out.extend_from_slice(strings);
        out
    }

    fn ty(name_off: u32, kind: u32, vlen: u32, size_or_type: u32) -> Vec<u8> {
        let mut out = Vec::new();
        for v in [name_off, (kind << 24) | vlen, size_or_type] {
            out.extend_from_slice(&v.to_ne_bytes());
        }
        out
    }

    #[test]
    fn counts_the_params_of_the_named_function_only() {
        let strings = b"\0int\0udp_recvmsg\0udp_recvmsgx\0";
        let mut types = Vec::new();
        types.extend(ty(1, 1, 0, 4)); // 1: int
        types.extend_from_slice(&[0; 4]);
        types.extend(ty(0, 13, 2, 1)); // 2: proto (int, int) -> int
        types.extend_from_slice(&[0; 16]);
        types.extend(ty(0, 13, 3, 1)); // 3: proto, 3 params
        types.extend_from_slice(&[0; 24]);
        types.extend(ty(17, 12, 0, 3)); // 4: udp_recvmsgx -> 3
        types.extend(ty(5, 12, 0, 2)); // 5: udp_recvmsg -> 2
        let data = blob(&types, strings);
        assert_eq!(func_params(&data, "udp_recvmsg"), Some(2));
        assert_eq!(func_params(&data, "udp_recvmsgx"), Some(3));
        assert_eq!(func_params(&data, "tcp_sendmsg"), None);
        assert_eq!(func_params(&data[..data.len() - 20], "udp_recvmsg"), None);
        assert_eq!(func_params(b"not btf", "udp_recvmsg"), None);
    }

    #[test]
    fn reads_this_kernels_udp_recvmsg() {
        // Every kernel flowlens supports has it: 6 parameters before 5.19 (noblock), 5 until
        // 6.16 (addr_len), 4 since.
        let Ok(data) = std::fs::read("/sys/kernel/btf/vmlinux") else {
            return;
        };
        let n = func_params(&data, "udp_recvmsg").expect("udp_recvmsg in the kernel's BTF");
        assert!((4..=6).contains(&n), "{n}");
        assert_eq!(func_params(&data, "udpv6_recvmsg"), Some(n));
    }
}

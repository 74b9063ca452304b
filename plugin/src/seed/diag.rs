//! The sock_diag protocol: kernel ABI constants, the request, and the pure parser of the
//! replies (validates every length; never panics on malformed input)

use super::*;

// ---------------------------------------------------------------------------------------------
// Kernel ABI constants (linux/sock_diag.h, linux/inet_diag.h, linux/tcp.h; netlink's are in
// crate::netlink).

pub(super) const NETLINK_SOCK_DIAG: libc::c_int = 4;
pub(super) const SOCK_DIAG_BY_FAMILY: u16 = 20;

/// `sizeof(struct inet_diag_req_v2)`.
pub(super) const INET_DIAG_REQ_V2_LEN: usize = 56;
/// `sizeof(struct inet_diag_msg)`; attributes follow at `NLMSG_ALIGN(72) == 72`.
pub(super) const INET_DIAG_MSG_LEN: usize = 72;

pub(super) const INET_DIAG_INFO: u16 = 2;
pub(super) const INET_DIAG_SKV6ONLY: u16 = 11;
pub(super) const INET_DIAG_CGROUP_ID: u16 = 21;

/// Offsets in `struct tcp_info` (checked with `offsetof` against `/usr/include/linux/tcp.h`).
pub(super) const TCPI_RTT_OFF: usize = 68;
pub(super) const TCPI_RTTVAR_OFF: usize = 72;
pub(super) const TCPI_TOTAL_RETRANS_OFF: usize = 100;
pub(super) const TCPI_BYTES_ACKED_OFF: usize = 120;
pub(super) const TCPI_BYTES_RECEIVED_OFF: usize = 128;

pub(super) const TCP_ESTABLISHED: u32 = 1;
pub(super) const TCP_FIN_WAIT1: u32 = 4;
pub(super) const TCP_FIN_WAIT2: u32 = 5;
pub(super) const TCP_CLOSE_WAIT: u32 = 8;
pub(super) const TCP_LISTEN: u32 = 10;

/// `idiag_states` of the established-like sockets. Not SYN_RECV: those are request sockets
/// (no `tcp_info`, no inode, no cgroup id), and one that never completes ends without a state
/// change the programs could see (its timer drops it), so an adopted one would stay for ever;
/// one that completes becomes established after the programs attached (the scan runs after),
/// and they see it.
pub(super) const ESTABLISHED_STATES: u32 =
    1 << TCP_ESTABLISHED | 1 << TCP_FIN_WAIT1 | 1 << TCP_FIN_WAIT2 | 1 << TCP_CLOSE_WAIT;
pub(super) const LISTEN_STATES: u32 = 1 << TCP_LISTEN;

/// Concurrent namespace threads.
pub(super) const MAX_PARALLEL: usize = 4;
/// Receive buffer; the kernel's dump datagrams are at most 32 KiB.
pub(super) const RECV_BUF_LEN: usize = 64 * 1024;
/// Receive timeout so that a stuck dump cannot hang start-up.
pub(super) const RECV_TIMEOUT_SECS: u64 = 5;

// ---------------------------------------------------------------------------------------------
// Netlink message parsing (pure, unit-tested on hand-built buffers).

/// What one datagram said about the dump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Progress {
    /// More datagrams follow.
    More,
    /// `NLMSG_DONE` seen.
    Done,
}

/// The `struct tcp_info` fields we use; `None` when the attribute is too short for them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct TcpInfoLite {
    pub(crate) rtt_us: Option<u32>,
    pub(crate) rttvar_us: Option<u32>,
    pub(crate) bytes_acked: Option<u64>,
    pub(crate) bytes_received: Option<u64>,
    pub(crate) total_retrans: Option<u32>,
}

/// One parsed `inet_diag_msg` with the attributes we use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DiagSocket {
    pub(crate) state: u8,
    pub(crate) local: SocketAddr,
    pub(crate) remote: SocketAddr,
    pub(crate) cookie: u64,
    /// `idiag_if`: the interface the socket is bound to (0: none).
    pub(crate) bound_if: u32,
    pub(crate) inode: u32,
    pub(crate) tcp_info: Option<TcpInfoLite>,
    pub(crate) cgroup_id: Option<u64>,
    pub(crate) v6only: Option<bool>,
}

/// Parses one datagram of a dump reply, calling `sink` for every socket of request `seq`.
///
/// Messages with another sequence number (stale replies of an aborted earlier dump) are skipped.
pub(crate) fn parse_datagram(
    buf: &[u8],
    seq: u32,
    sink: &mut dyn FnMut(DiagSocket),
) -> Result<Progress, NlError> {
    for msg in messages(buf) {
        let msg = msg?;
        if msg.seq != seq {
            continue;
        }
        match msg.ty {
            NLMSG_NOOP => {}
            NLMSG_ERROR => {
                let errno = error_errno(msg.payload)?;
                if errno != 0 {
                    return Err(NlError::Kernel { errno });
                }
                // errno 0 is an acknowledgement; a dump still ends with NLMSG_DONE.
            }
            NLMSG_DONE => {
                // The payload is an int: negative when the dump failed part-way.
                return match rd_i32_ne(msg.payload, 0) {
                    Some(v) if v < 0 => Err(NlError::DumpFailed {
                        errno: v.saturating_neg(),
                    }),
                    _ => Ok(Progress::Done),
                };
            }
            NLMSG_OVERRUN => return Err(NlError::Overrun),
            SOCK_DIAG_BY_FAMILY => sink(parse_diag_msg(msg.payload)?),
            _ => {}
        }
    }
    Ok(Progress::More)
}

/// Converts an IPv4-mapped IPv6 address to IPv4 (and only those: `::1` stays IPv6).
pub(super) fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

pub(super) fn sock_addr(ip: IpAddr, port: u16, ifindex: u32) -> SocketAddr {
    match unmap(ip) {
        IpAddr::V4(v4) => SocketAddr::V4(SocketAddrV4::new(v4, port)),
        IpAddr::V6(v6) => {
            let link_local = v6.segments()[0] & 0xffc0 == 0xfe80;
            let scope = if link_local { ifindex } else { 0 };
            SocketAddr::V6(SocketAddrV6::new(v6, port, 0, scope))
        }
    }
}

/// Parses the payload of a `SOCK_DIAG_BY_FAMILY` message: `inet_diag_msg` plus attributes.
pub(super) fn parse_diag_msg(p: &[u8]) -> Result<DiagSocket, NlError> {
    if p.len() < INET_DIAG_MSG_LEN {
        return Err(NlError::Truncated {
            what: "inet_diag_msg",
            need: INET_DIAG_MSG_LEN,
            have: p.len(),
        });
    }
    // Offsets of struct inet_diag_msg; the length check above makes every read succeed.
    let family = p[0];
    let state = p[1];
    let sport = rd_u16_be(p, 4).unwrap_or(0);
    let dport = rd_u16_be(p, 6).unwrap_or(0);
    let addr = |off: usize| -> Result<IpAddr, NlError> {
        match i32::from(family) {
            libc::AF_INET => {
                let b: [u8; 4] = p[off..off + 4].try_into().unwrap_or([0; 4]);
                Ok(IpAddr::V4(Ipv4Addr::from(b)))
            }
            libc::AF_INET6 => {
                let b: [u8; 16] = p[off..off + 16].try_into().unwrap_or([0; 16]);
                Ok(IpAddr::V6(Ipv6Addr::from(b)))
            }
            _ => Err(NlError::UnknownFamily(family)),
        }
    };
    let src = addr(8)?;
    let dst = addr(24)?;
    let ifindex = rd_u32_ne(p, 40).unwrap_or(0);
    let cookie_lo = rd_u32_ne(p, 44).unwrap_or(0);
    let cookie_hi = rd_u32_ne(p, 48).unwrap_or(0);
    let inode = rd_u32_ne(p, 68).unwrap_or(0);

    let mut sock = DiagSocket {
        state,
        local: sock_addr(src, sport, ifindex),
        remote: sock_addr(dst, dport, ifindex),
        cookie: u64::from(cookie_lo) | u64::from(cookie_hi) << 32,
        bound_if: ifindex,
        inode,
        tcp_info: None,
        cgroup_id: None,
        v6only: None,
    };

    for attr in attributes(&p[align4(INET_DIAG_MSG_LEN).min(p.len())..]) {
        let (ty, data) = attr?;
        match ty {
            INET_DIAG_INFO => sock.tcp_info = Some(parse_tcp_info(data)),
            INET_DIAG_SKV6ONLY => sock.v6only = data.first().map(|&b| b != 0),
            INET_DIAG_CGROUP_ID => sock.cgroup_id = rd_u64_ne(data, 0),
            _ => {}
        }
    }
    Ok(sock)
}

/// Reads the fields we use from a `struct tcp_info` of any kernel version (shorter on old ones).
pub(super) fn parse_tcp_info(data: &[u8]) -> TcpInfoLite {
    TcpInfoLite {
        rtt_us: rd_u32_ne(data, TCPI_RTT_OFF),
        rttvar_us: rd_u32_ne(data, TCPI_RTTVAR_OFF),
        bytes_acked: rd_u64_ne(data, TCPI_BYTES_ACKED_OFF),
        bytes_received: rd_u64_ne(data, TCPI_BYTES_RECEIVED_OFF),
        total_retrans: rd_u32_ne(data, TCPI_TOTAL_RETRANS_OFF),
    }
}

/// Builds a `SOCK_DIAG_BY_FAMILY` dump request for TCP sockets.
pub(super) fn build_request(
    seq: u32,
    family: u8,
    states: u32,
    ext: u8,
) -> [u8; NLMSG_HDRLEN + INET_DIAG_REQ_V2_LEN] {
    // The socket id (ports, addresses, interface, cookie) stays zero: it is ignored by dumps.
    request(seq, NLM_F_REQUEST | NLM_F_DUMP, family, states, ext)
}

/// Builds a `SOCK_DIAG_BY_FAMILY` request for the one TCP socket with these addresses, bound
/// interface and cookie (the kernel answers with that socket, whatever its state, or
/// ENOENT, or ESTALE when another socket has the addresses now). Addresses shown as IPv4 are
/// asked for as such: the kernel finds a dual-stack socket's IPv4-mapped ones so.
pub(super) fn build_lookup(
    seq: u32,
    local: SocketAddr,
    remote: SocketAddr,
    bound_if: u32,
    cookie: u64,
) -> [u8; NLMSG_HDRLEN + INET_DIAG_REQ_V2_LEN] {
    let family = match local {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    } as u8;
    let mut m = request(seq, NLM_F_REQUEST, family, u32::MAX, 0);
    // struct inet_diag_sockid, at offset 8 of the request: ports in network order, addresses
    // (an IPv4 one in the first word), interface, cookie (two host-order halves).
    let id = &mut m[NLMSG_HDRLEN + 8..];
    id[0..2].copy_from_slice(&local.port().to_be_bytes());
    id[2..4].copy_from_slice(&remote.port().to_be_bytes());
    let put = |id: &mut [u8], off: usize, ip: IpAddr| match ip {
        IpAddr::V4(a) => id[off..off + 4].copy_from_slice(&a.octets()),
        IpAddr::V6(a) => id[off..off + 16].copy_from_slice(&a.octets()),
    };
    put(id, 4, local.ip());
    put(id, 20, remote.ip());
    let scope = match local {
        SocketAddr::V6(v6) if v6.scope_id() != 0 => v6.scope_id(),
        _ => bound_if,
    };
    id[36..40].copy_from_slice(&scope.to_ne_bytes());
    id[40..44].copy_from_slice(&(cookie as u32).to_ne_bytes());
    id[44..48].copy_from_slice(&((cookie >> 32) as u32).to_ne_bytes());
    m
}

/// A request header and `inet_diag_req_v2` with a zero socket id.
fn request(
    seq: u32,
    flags: u16,
    family: u8,
    states: u32,
    ext: u8,
) -> [u8; NLMSG_HDRLEN + INET_DIAG_REQ_V2_LEN] {
    let mut m = [0u8; NLMSG_HDRLEN + INET_DIAG_REQ_V2_LEN];
    let total = (NLMSG_HDRLEN + INET_DIAG_REQ_V2_LEN) as u32;
    m[0..4].copy_from_slice(&total.to_ne_bytes());
    m[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    m[6..8].copy_from_slice(&flags.to_ne_bytes());
    m[8..12].copy_from_slice(&seq.to_ne_bytes());
    // nlmsg_pid 0: the kernel assigns the port id.
    let r = &mut m[NLMSG_HDRLEN..];
    r[0] = family;
    r[1] = libc::IPPROTO_TCP as u8;
    r[2] = ext;
    r[4..8].copy_from_slice(&states.to_ne_bytes());
    m
}

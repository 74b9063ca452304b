//! Start-up seeding: already-established TCP sockets of every network namespace, read with inet_diag.
//!
//! The eBPF programs only see sockets whose life events happen after they are attached. This
//! module finds the TCP connections that already existed when flowlens started, in every network
//! namespace of the host, and tells for each one whether it is the server or the client side.
//!
//! How it works:
//!
//! * Namespaces are enumerated by the inode of `/proc/<pid>/ns/net` (every numeric `/proc`
//!   entry), plus the bind-mounted files in `/run/netns/` (`ip netns add`) and
//!   `/var/run/docker/netns/`. They are deduplicated by inode, up to four paths are kept per
//!   inode (tried in order: a process may exit between the listing and the open; a namespace
//!   whose kept paths are all gone by then is taken for gone and skipped without a word), and
//!   the caller's own namespace always comes first.
//! * Each namespace is read in a short-lived dedicated thread: `setns(CLONE_NEWNET)` only changes
//!   the calling thread, so the caller's namespace never changes. The own namespace is read
//!   without `setns`, so it also works without privileges.
//! * In the namespace, a `NETLINK_SOCK_DIAG` socket sends one `SOCK_DIAG_BY_FAMILY` dump request
//!   per family (`inet_diag_req_v2`, TCP, IPv4 then IPv6) for the LISTEN sockets and the
//!   established-like ones (ESTABLISHED, SYN_RECV, FIN_WAIT1, FIN_WAIT2, CLOSE_WAIT), with
//!   `INET_DIAG_INFO` (`struct tcp_info`) requested. Each dump walks the kernel's TCP hash
//!   table, which all namespaces share unless `net.ipv4.tcp_child_ehash_entries` is set, so a
//!   dump costs about the same in an empty namespace as in a busy one (2-4 ms for 256 Ki
//!   buckets on a 2-vCPU VM); listeners and connections are therefore asked for in the same dump.
//! * A socket is a [`SeedRole::Server`] when a listener of the same namespace has its local port
//!   and either its address or a wildcard address (an IPv6 `::` listener also accepts IPv4
//!   connections unless it is `IPV6_V6ONLY`, reported by `INET_DIAG_SKV6ONLY`).
//!
//! The cookie is `idiag_cookie[0] | idiag_cookie[1] << 32`, the value `bpf_get_socket_cookie`
//! and `getsockopt(SO_COOKIE)` return for the same socket (the tests check this). The cgroup id is
//! the `INET_DIAG_CGROUP_ID` attribute, which the kernel (5.7 and later, built with
//! `CONFIG_SOCK_CGROUP_DATA`) adds to every full socket's reply without being asked; it cannot be
//! requested through `idiag_ext`, which has only 8 bits. It is `None` on older kernels and for
//! SYN_RECV request sockets.
//!
//! The netlink parser validates every length (`nlmsg_len`, `rta_len`, the fixed-size
//! `inet_diag_msg`, the `tcp_info` attribute) before reading and never panics on malformed input.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io;
use std::mem;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::thread;

/// Which side of the connection the seeded socket is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SeedRole {
    /// The socket's local port is not a listening port of its namespace: it connected out.
    Client,
    /// The socket's local port is a listening port of its namespace: it was accepted.
    Server,
}

/// One TCP socket that existed when [`seed_established`] ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeededSocket {
    /// Socket cookie (`idiag_cookie`), equal to `bpf_get_socket_cookie` and `SO_COOKIE`.
    pub cookie: u64,
    /// Inode of the network namespace the socket lives in (0 if it could not be determined).
    pub netns: u32,
    /// Local address; IPv4-mapped IPv6 addresses are shown as IPv4.
    pub local: SocketAddr,
    /// Remote address; IPv4-mapped IPv6 addresses are shown as IPv4.
    pub remote: SocketAddr,
    /// Server when the local port is a LISTEN port of the same namespace, else client.
    pub role: SeedRole,
    /// Smoothed RTT in microseconds (`tcp_info.tcpi_rtt`), 0 when not reported.
    pub srtt_us: u32,
    /// RTT variance in microseconds (`tcp_info.tcpi_rttvar`), 0 when not reported.
    pub rttvar_us: u32,
    /// `tcp_info.tcpi_bytes_acked` (kernel 4.1+), 0 when not reported.
    pub bytes_acked: u64,
    /// `tcp_info.tcpi_bytes_received` (kernel 4.1+), 0 when not reported.
    pub bytes_received: u64,
    /// `tcp_info.tcpi_total_retrans`, 0 when not reported.
    pub total_retrans: u32,
    /// cgroup v2 id of the socket (`INET_DIAG_CGROUP_ID`, kernel 5.7+), if reported.
    pub cgroup_id: Option<u64>,
    /// Inode of the socket (`idiag_inode`), 0 for sockets without a file (e.g. SYN_RECV).
    pub inode: u32,
}

/// Result of [`seed_established`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeedReport {
    /// The sockets found, the caller's own namespace first, at most `max_sockets` of them.
    pub sockets: Vec<SeededSocket>,
    /// How many distinct network namespaces were found (and attempted).
    pub namespaces: usize,
    /// One line per namespace (or per dump) that could not be read, with the reason, and one
    /// line counting the sockets dropped because of `max_sockets`.
    pub failures: Vec<String>,
    /// Sockets found beyond `max_sockets`, not recorded.
    pub dropped: usize,
}

/// Finds the established-like TCP sockets of every network namespace of the host.
///
/// Records at most `max_sockets` sockets (the caller's namespace first); how many more there
/// were is reported in [`SeedReport::failures`]. Errors in one namespace are reported there and
/// do not stop the others. Without `CAP_SYS_ADMIN` only the caller's own namespace can be read.
/// The calling thread's namespace is never changed.
pub fn seed_established(max_sockets: usize) -> SeedReport {
    let (targets, mut failures) = enumerate_namespaces();
    let outcomes = read_all(&targets, max_sockets);

    let mut report = SeedReport {
        namespaces: targets.len(),
        ..SeedReport::default()
    };
    let mut dropped = 0usize;
    for outcome in outcomes {
        failures.extend(outcome.errors);
        dropped += outcome.dropped;
        for sock in outcome.sockets {
            if report.sockets.len() < max_sockets {
                report.sockets.push(sock);
            } else {
                dropped += 1;
            }
        }
    }
    if dropped > 0 {
        failures.push(format!(
            "max_sockets={max_sockets} reached: {dropped} further sockets were not recorded"
        ));
    }
    report.failures = failures;
    report.dropped = dropped;
    report
}

// ---------------------------------------------------------------------------------------------
// Kernel ABI constants (linux/netlink.h, linux/sock_diag.h, linux/inet_diag.h, linux/tcp.h).

const NETLINK_SOCK_DIAG: libc::c_int = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;

const NLMSG_HDRLEN: usize = 16;
const NLMSG_NOOP: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_OVERRUN: u16 = 4;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;

/// `sizeof(struct inet_diag_req_v2)`.
const INET_DIAG_REQ_V2_LEN: usize = 56;
/// `sizeof(struct inet_diag_msg)`; attributes follow at `NLMSG_ALIGN(72) == 72`.
const INET_DIAG_MSG_LEN: usize = 72;
const RTA_HDRLEN: usize = 4;
/// `NLA_TYPE_MASK`: strips `NLA_F_NESTED` and `NLA_F_NET_BYTEORDER`.
const NLA_TYPE_MASK: u16 = 0x3fff;

const INET_DIAG_INFO: u16 = 2;
const INET_DIAG_SKV6ONLY: u16 = 11;
const INET_DIAG_CGROUP_ID: u16 = 21;

/// Offsets in `struct tcp_info` (checked with `offsetof` against `/usr/include/linux/tcp.h`).
const TCPI_RTT_OFF: usize = 68;
const TCPI_RTTVAR_OFF: usize = 72;
const TCPI_TOTAL_RETRANS_OFF: usize = 100;
const TCPI_BYTES_ACKED_OFF: usize = 120;
const TCPI_BYTES_RECEIVED_OFF: usize = 128;

const TCP_ESTABLISHED: u32 = 1;
const TCP_SYN_RECV: u32 = 3;
const TCP_FIN_WAIT1: u32 = 4;
const TCP_FIN_WAIT2: u32 = 5;
const TCP_CLOSE_WAIT: u32 = 8;
const TCP_LISTEN: u32 = 10;

/// `idiag_states` of the established-like sockets (SYN_RECV ones are request sockets: no
/// `tcp_info`, no inode, no cgroup id; their cookie carries over to the accepted socket).
const ESTABLISHED_STATES: u32 = 1 << TCP_ESTABLISHED
    | 1 << TCP_SYN_RECV
    | 1 << TCP_FIN_WAIT1
    | 1 << TCP_FIN_WAIT2
    | 1 << TCP_CLOSE_WAIT;
const LISTEN_STATES: u32 = 1 << TCP_LISTEN;

/// Concurrent namespace threads.
const MAX_PARALLEL: usize = 4;
/// Receive buffer; the kernel's dump datagrams are at most 32 KiB.
const RECV_BUF_LEN: usize = 64 * 1024;
/// Receive timeout so that a stuck dump cannot hang start-up.
const RECV_TIMEOUT_SECS: libc::time_t = 5;

// ---------------------------------------------------------------------------------------------
// Netlink message parsing (pure, unit-tested on hand-built buffers).

/// Why a netlink reply could not be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NlError {
    #[error("truncated {what}: need {need} bytes, have {have}")]
    Truncated {
        what: &'static str,
        need: usize,
        have: usize,
    },
    #[error("bad attribute length {len} ({avail} bytes left)")]
    BadAttr { len: usize, avail: usize },
    #[error("kernel returned error: {}", io::Error::from_raw_os_error(*.errno))]
    Kernel { errno: i32 },
    #[error("dump ended with error: {}", io::Error::from_raw_os_error(*.errno))]
    DumpFailed { errno: i32 },
    #[error("netlink overrun")]
    Overrun,
    #[error("unknown address family {0}")]
    UnknownFamily(u8),
    #[error("datagram of {size} bytes does not fit the receive buffer")]
    DatagramTooLarge { size: usize },
    #[error("{0}")]
    Io(#[from] io::Error),
}

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
    pub(crate) inode: u32,
    pub(crate) tcp_info: Option<TcpInfoLite>,
    pub(crate) cgroup_id: Option<u64>,
    pub(crate) v6only: Option<bool>,
}

fn rd_u16_ne(b: &[u8], off: usize) -> Option<u16> {
    b.get(off..off.checked_add(2)?)?
        .try_into()
        .ok()
        .map(u16::from_ne_bytes)
}

fn rd_u16_be(b: &[u8], off: usize) -> Option<u16> {
    b.get(off..off.checked_add(2)?)?
        .try_into()
        .ok()
        .map(u16::from_be_bytes)
}

fn rd_u32_ne(b: &[u8], off: usize) -> Option<u32> {
    b.get(off..off.checked_add(4)?)?
        .try_into()
        .ok()
        .map(u32::from_ne_bytes)
}

fn rd_u64_ne(b: &[u8], off: usize) -> Option<u64> {
    b.get(off..off.checked_add(8)?)?
        .try_into()
        .ok()
        .map(u64::from_ne_bytes)
}

fn rd_i32_ne(b: &[u8], off: usize) -> Option<i32> {
    rd_u32_ne(b, off).map(|v| v as i32)
}

/// `NLMSG_ALIGN` / `RTA_ALIGN`, saturating.
fn align4(len: usize) -> usize {
    len.saturating_add(3) & !3
}

/// Parses one datagram of a dump reply, calling `sink` for every socket of request `seq`.
///
/// Messages with another sequence number (stale replies of an aborted earlier dump) are skipped.
pub(crate) fn parse_datagram(
    buf: &[u8],
    seq: u32,
    sink: &mut dyn FnMut(DiagSocket),
) -> Result<Progress, NlError> {
    let mut rest = buf;
    while !rest.is_empty() {
        let truncated = |need| NlError::Truncated {
            what: "netlink message",
            need,
            have: rest.len(),
        };
        let (Some(len), Some(ty), Some(msg_seq)) =
            (rd_u32_ne(rest, 0), rd_u16_ne(rest, 4), rd_u32_ne(rest, 8))
        else {
            return Err(truncated(NLMSG_HDRLEN));
        };
        let len = len as usize;
        if len < NLMSG_HDRLEN || len > rest.len() {
            return Err(truncated(len.max(NLMSG_HDRLEN)));
        }
        let payload = &rest[NLMSG_HDRLEN..len];
        rest = &rest[align4(len).min(rest.len())..];
        if msg_seq != seq {
            continue;
        }
        match ty {
            NLMSG_NOOP => {}
            NLMSG_ERROR => {
                let errno = rd_i32_ne(payload, 0).ok_or(NlError::Truncated {
                    what: "NLMSG_ERROR",
                    need: 4,
                    have: payload.len(),
                })?;
                if errno != 0 {
                    return Err(NlError::Kernel {
                        errno: errno.saturating_neg(),
                    });
                }
                // errno 0 is an acknowledgement; a dump still ends with NLMSG_DONE.
            }
            NLMSG_DONE => {
                // The payload is an int: negative when the dump failed part-way.
                return match rd_i32_ne(payload, 0) {
                    Some(v) if v < 0 => Err(NlError::DumpFailed {
                        errno: v.saturating_neg(),
                    }),
                    _ => Ok(Progress::Done),
                };
            }
            NLMSG_OVERRUN => return Err(NlError::Overrun),
            SOCK_DIAG_BY_FAMILY => sink(parse_diag_msg(payload)?),
            _ => {}
        }
    }
    Ok(Progress::More)
}

/// Converts an IPv4-mapped IPv6 address to IPv4 (and only those: `::1` stays IPv6).
fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

fn sock_addr(ip: IpAddr, port: u16, ifindex: u32) -> SocketAddr {
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
fn parse_diag_msg(p: &[u8]) -> Result<DiagSocket, NlError> {
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
        inode,
        tcp_info: None,
        cgroup_id: None,
        v6only: None,
    };

    let mut rest = &p[align4(INET_DIAG_MSG_LEN).min(p.len())..];
    // Fewer than RTA_HDRLEN trailing bytes can only be padding.
    while rest.len() >= RTA_HDRLEN {
        let len = usize::from(rd_u16_ne(rest, 0).unwrap_or(0));
        let ty = rd_u16_ne(rest, 2).unwrap_or(0) & NLA_TYPE_MASK;
        if len < RTA_HDRLEN || len > rest.len() {
            return Err(NlError::BadAttr {
                len,
                avail: rest.len(),
            });
        }
        let data = &rest[RTA_HDRLEN..len];
        match ty {
            INET_DIAG_INFO => sock.tcp_info = Some(parse_tcp_info(data)),
            INET_DIAG_SKV6ONLY => sock.v6only = data.first().map(|&b| b != 0),
            INET_DIAG_CGROUP_ID => sock.cgroup_id = rd_u64_ne(data, 0),
            _ => {}
        }
        rest = &rest[align4(len).min(rest.len())..];
    }
    Ok(sock)
}

/// Reads the fields we use from a `struct tcp_info` of any kernel version (shorter on old ones).
fn parse_tcp_info(data: &[u8]) -> TcpInfoLite {
    TcpInfoLite {
        rtt_us: rd_u32_ne(data, TCPI_RTT_OFF),
        rttvar_us: rd_u32_ne(data, TCPI_RTTVAR_OFF),
        bytes_acked: rd_u64_ne(data, TCPI_BYTES_ACKED_OFF),
        bytes_received: rd_u64_ne(data, TCPI_BYTES_RECEIVED_OFF),
        total_retrans: rd_u32_ne(data, TCPI_TOTAL_RETRANS_OFF),
    }
}

/// Builds a `SOCK_DIAG_BY_FAMILY` dump request for TCP sockets.
fn build_request(
    seq: u32,
    family: u8,
    states: u32,
    ext: u8,
) -> [u8; NLMSG_HDRLEN + INET_DIAG_REQ_V2_LEN] {
    let mut m = [0u8; NLMSG_HDRLEN + INET_DIAG_REQ_V2_LEN];
    let total = (NLMSG_HDRLEN + INET_DIAG_REQ_V2_LEN) as u32;
    m[0..4].copy_from_slice(&total.to_ne_bytes());
    m[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    m[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    m[8..12].copy_from_slice(&seq.to_ne_bytes());
    // nlmsg_pid 0: the kernel assigns the port id.
    let r = &mut m[NLMSG_HDRLEN..];
    r[0] = family;
    r[1] = libc::IPPROTO_TCP as u8;
    r[2] = ext;
    r[4..8].copy_from_slice(&states.to_ne_bytes());
    // The socket id (ports, addresses, interface, cookie) stays zero: it is ignored by dumps.
    m
}

// ---------------------------------------------------------------------------------------------
// Role inference.

/// One listening socket: address (unmapped) and whether it is IPv6-only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Listener {
    addr: IpAddr,
    v6only: bool,
}

impl Listener {
    /// Whether a connection to local address `ip` (unmapped) can have come from this listener.
    fn accepts(&self, ip: IpAddr) -> bool {
        if self.addr == ip {
            return true;
        }
        match self.addr {
            IpAddr::V4(a) => a.is_unspecified() && ip.is_ipv4(),
            IpAddr::V6(a) => a.is_unspecified() && (ip.is_ipv6() || !self.v6only),
        }
    }
}

/// Listening sockets of one namespace, by port.
type Listeners = HashMap<u16, Vec<Listener>>;

fn role_of(local: SocketAddr, listeners: &Listeners) -> SeedRole {
    let ip = unmap(local.ip());
    let server = listeners
        .get(&local.port())
        .is_some_and(|ls| ls.iter().any(|l| l.accepts(ip)));
    if server {
        SeedRole::Server
    } else {
        SeedRole::Client
    }
}

// ---------------------------------------------------------------------------------------------
// Namespace enumeration.

/// A namespace to read, and the paths that name it (`/proc/<pid>/ns/net` of its processes, its
/// bind mounts), tried in order: a process may exit between the listing and the open. No path
/// for the caller's own namespace (read without setns).
#[derive(Debug, Clone)]
struct NsTarget {
    inode: u32,
    paths: Vec<PathBuf>,
}

/// At most this many paths are kept per namespace.
const MAX_PATHS_PER_NAMESPACE: usize = 4;

/// Inode of the calling thread's network namespace and the nsfs device.
fn own_netns() -> io::Result<(u32, u64)> {
    let md = std::fs::metadata("/proc/thread-self/ns/net")
        .or_else(|_| std::fs::metadata("/proc/self/ns/net"))?;
    let ino = u32::try_from(md.ino()).map_err(|_| io::Error::other("netns inode over 32 bits"))?;
    Ok((ino, md.dev()))
}

/// All network namespaces, own first, deduplicated by inode; plus enumeration problems.
fn enumerate_namespaces() -> (Vec<NsTarget>, Vec<String>) {
    let mut errors = Vec::new();
    let mut targets = Vec::new();
    // Inode -> its index in `targets` (None: the own namespace, read without a path).
    let mut seen: HashMap<u32, Option<usize>> = HashMap::new();
    let nsfs_dev = match own_netns() {
        Ok((ino, dev)) => {
            seen.insert(ino, None);
            targets.push(NsTarget {
                inode: ino,
                paths: Vec::new(),
            });
            Some(dev)
        }
        Err(e) => {
            errors.push(format!(
                "own netns: cannot stat /proc/thread-self/ns/net: {e}"
            ));
            targets.push(NsTarget {
                inode: 0,
                paths: Vec::new(),
            });
            None
        }
    };

    let mut denied = 0usize;
    let mut add = |path: PathBuf| {
        // Follows the /proc magic link or reads the nsfs bind mount. Files in /run/netns that
        // are not (or no longer) nsfs mounts have another device and are skipped.
        let md = match std::fs::metadata(&path) {
            Ok(md) => md,
            Err(e) => {
                // Another user's /proc/<pid>/ns needs CAP_SYS_PTRACE; a vanished process is normal.
                if e.kind() == std::io::ErrorKind::PermissionDenied {
                    denied += 1;
                }
                return;
            }
        };
        if nsfs_dev.is_some_and(|dev| dev != md.dev()) {
            return;
        }
        let Ok(ino) = u32::try_from(md.ino()) else {
            return;
        };
        match seen.get(&ino) {
            None => {
                seen.insert(ino, Some(targets.len()));
                targets.push(NsTarget {
                    inode: ino,
                    paths: vec![path],
                });
            }
            Some(Some(i)) if targets[*i].paths.len() < MAX_PATHS_PER_NAMESPACE => {
                targets[*i].paths.push(path);
            }
            Some(_) => {}
        }
    };

    match std::fs::read_dir("/proc") {
        Ok(dir) => {
            for entry in dir.flatten() {
                let name = entry.file_name();
                let Some(name) = name.to_str() else { continue };
                if !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit()) {
                    add(Path::new("/proc").join(name).join("ns/net"));
                }
            }
        }
        Err(e) => errors.push(format!("cannot list /proc: {e}")),
    }
    for dir in ["/run/netns", "/var/run/docker/netns"] {
        // Missing directories are normal (no `ip netns`, no docker).
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.flatten() {
                add(entry.path());
            }
        }
    }
    // With CAP_SYS_PTRACE a denial is a process caught mid-exec (not dumpable for a moment).
    if denied > 0 && !has_cap_sys_ptrace() {
        errors.push(format!(
            "{denied} processes' network namespaces could not be opened (permission denied): \
             their connections are not seen until they move data; grant CAP_SYS_PTRACE"
        ));
    }
    (targets, errors)
}

/// Whether this process holds CAP_SYS_PTRACE (bit 19 of `CapEff` in /proc/self/status).
fn has_cap_sys_ptrace() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let hex = status
                .lines()
                .find_map(|l| l.strip_prefix("CapEff:"))?
                .trim();
            u64::from_str_radix(hex, 16).ok()
        })
        .is_some_and(|caps| caps & (1 << 19) != 0)
}

// ---------------------------------------------------------------------------------------------
// Reading namespaces.

/// What one namespace thread found.
#[derive(Debug, Default)]
struct NsOutcome {
    sockets: Vec<SeededSocket>,
    dropped: usize,
    errors: Vec<String>,
}

/// Reads every target, at most [`MAX_PARALLEL`] threads at a time; results in target order.
fn read_all(targets: &[NsTarget], max_sockets: usize) -> Vec<NsOutcome> {
    thread::scope(|scope| {
        let mut results: Vec<Option<NsOutcome>> = targets.iter().map(|_| None).collect();
        let mut pending = VecDeque::new();
        let join = |t: &NsTarget, h: thread::ScopedJoinHandle<'_, NsOutcome>| {
            h.join().unwrap_or_else(|_| NsOutcome {
                errors: vec![format!("{}: reader thread panicked", describe(t))],
                ..NsOutcome::default()
            })
        };
        for (i, target) in targets.iter().enumerate() {
            if pending.len() >= MAX_PARALLEL {
                if let Some((j, h)) = pending.pop_front() {
                    results[j] = Some(join(&targets[j], h));
                }
            }
            let spawned = thread::Builder::new()
                .name("flowlens-seed".into())
                .spawn_scoped(scope, move || read_namespace(target, max_sockets));
            match spawned {
                Ok(h) => pending.push_back((i, h)),
                Err(e) => {
                    results[i] = Some(NsOutcome {
                        errors: vec![format!("{}: cannot spawn thread: {e}", describe(target))],
                        ..NsOutcome::default()
                    })
                }
            }
        }
        while let Some((j, h)) = pending.pop_front() {
            results[j] = Some(join(&targets[j], h));
        }
        results.into_iter().flatten().collect()
    })
}

fn describe(t: &NsTarget) -> String {
    match t.paths.first() {
        Some(p) => format!("netns {} ({})", t.inode, p.display()),
        None => format!("netns {} (own)", t.inode),
    }
}

/// Moves the calling thread into the namespace at `path` and checks that it arrived. A path
/// that no longer names that namespace (its process exited, its bind mount went or was
/// replaced) is `NotFound`.
fn enter_netns(path: &Path, inode: u32) -> io::Result<()> {
    let file = File::open(path)?;
    // SAFETY: plain syscall on a valid fd; it only changes the calling (dedicated) thread.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::other(format!(
            "setns: {}",
            io::Error::last_os_error()
        )));
    }
    let now = own_netns()?.0;
    if now != inode {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("setns landed in netns {now}, the namespace was replaced"),
        ));
    }
    Ok(())
}

/// Body of a namespace thread. Must run on a thread that exits afterwards.
fn read_namespace(target: &NsTarget, max_sockets: usize) -> NsOutcome {
    let mut out = NsOutcome::default();
    let mut entered = target.paths.is_empty();
    let mut failure = None;
    for path in &target.paths {
        match enter_netns(path, target.inode) {
            Ok(()) => {
                entered = true;
                break;
            }
            // Gone since the listing: the next path may still name it.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => failure = failure.or(Some(e)),
        }
    }
    if !entered {
        // Every path gone means the namespace's processes exited, and its sockets with them:
        // nothing to read, nothing to report.
        if let Some(e) = failure {
            out.errors.push(format!("{}: {e}", describe(target)));
        }
        return out;
    }
    let mut diag = match DiagConn::open() {
        Ok(d) => d,
        Err(e) => {
            out.errors.push(format!(
                "{}: cannot open NETLINK_SOCK_DIAG socket: {e}",
                describe(target)
            ));
            return out;
        }
    };

    // One dump per family returns the listeners and the established-like sockets together:
    // each dump walks the whole (host-wide, by default) TCP hash table, so fewer is faster.
    // Roles are assigned once both families' listeners are known (dual-stack listeners).
    let mut listeners = Listeners::new();
    let mut found = Vec::new();
    let ext = 1u8 << (INET_DIAG_INFO - 1);
    for family in [libc::AF_INET as u8, libc::AF_INET6 as u8] {
        let dropped = &mut out.dropped;
        let res = diag.dump(family, ESTABLISHED_STATES | LISTEN_STATES, ext, &mut |s| {
            if u32::from(s.state) == TCP_LISTEN {
                listeners.entry(s.local.port()).or_default().push(Listener {
                    addr: unmap(s.local.ip()),
                    v6only: s.v6only.unwrap_or(false),
                });
            } else if found.len() < max_sockets {
                found.push(s);
            } else {
                *dropped += 1;
            }
        });
        if let Err(e) = res {
            out.errors
                .push(format!("{}: dump (family {family}): {e}", describe(target)));
        }
    }
    out.sockets = found
        .into_iter()
        .map(|s| {
            let info = s.tcp_info.unwrap_or_default();
            SeededSocket {
                cookie: s.cookie,
                netns: target.inode,
                local: s.local,
                remote: s.remote,
                role: role_of(s.local, &listeners),
                srtt_us: info.rtt_us.unwrap_or(0),
                rttvar_us: info.rttvar_us.unwrap_or(0),
                bytes_acked: info.bytes_acked.unwrap_or(0),
                bytes_received: info.bytes_received.unwrap_or(0),
                total_retrans: info.total_retrans.unwrap_or(0),
                cgroup_id: s.cgroup_id,
                inode: s.inode,
            }
        })
        .collect();
    out
}

/// A `NETLINK_SOCK_DIAG` socket of the namespace it was opened in.
struct DiagConn {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
}

impl DiagConn {
    fn open() -> io::Result<Self> {
        // SAFETY: plain syscall; the returned fd is owned below.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                NETLINK_SOCK_DIAG,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh fd nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let tv = libc::timeval {
            tv_sec: RECV_TIMEOUT_SECS,
            tv_usec: 0,
        };
        // SAFETY: valid fd, pointer and length of a timeval.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(DiagConn {
            fd,
            seq: 0,
            buf: vec![0; RECV_BUF_LEN],
        })
    }

    /// Sends one dump request and feeds every socket of the reply to `sink`.
    fn dump(
        &mut self,
        family: u8,
        states: u32,
        ext: u8,
        sink: &mut dyn FnMut(DiagSocket),
    ) -> Result<(), NlError> {
        self.seq = self.seq.wrapping_add(1);
        let req = build_request(self.seq, family, states, ext);
        // SAFETY: zeroed sockaddr_nl is valid; nl_pid 0 addresses the kernel.
        let mut kernel: libc::sockaddr_nl = unsafe { mem::zeroed() };
        kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: valid fd, buffer and address for the given lengths.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                req.as_ptr().cast(),
                req.len(),
                0,
                (&kernel as *const libc::sockaddr_nl).cast(),
                mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error().into());
        }
        if sent as usize != req.len() {
            return Err(io::Error::other("short send of the dump request").into());
        }
        loop {
            // SAFETY: zeroed sockaddr_nl is valid.
            let mut from: libc::sockaddr_nl = unsafe { mem::zeroed() };
            let mut from_len = mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
            // SAFETY: valid fd, buffer and address for the given lengths. MSG_TRUNC makes the
            // return value the real datagram size, so truncation is detected.
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    self.buf.as_mut_ptr().cast(),
                    self.buf.len(),
                    libc::MSG_TRUNC,
                    (&mut from as *mut libc::sockaddr_nl).cast(),
                    &mut from_len,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e.into());
            }
            let n = n as usize;
            if n > self.buf.len() {
                return Err(NlError::DatagramTooLarge { size: n });
            }
            if n == 0 {
                return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
            }
            if from.nl_pid != 0 {
                continue; // not from the kernel
            }
            if parse_datagram(&self.buf[..n], self.seq, sink)? == Progress::Done {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::process::Command;
    use std::sync::atomic::{AtomicUsize, Ordering};

    // ----- hand-built netlink messages -------------------------------------------------------

    fn nlmsg(ty: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let len = (NLMSG_HDRLEN + payload.len()) as u32;
        let mut m = Vec::new();
        m.extend_from_slice(&len.to_ne_bytes());
        m.extend_from_slice(&ty.to_ne_bytes());
        m.extend_from_slice(&0x2u16.to_ne_bytes()); // NLM_F_MULTI
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&1234u32.to_ne_bytes());
        m.extend_from_slice(payload);
        m.resize(align4(m.len()), 0);
        m
    }

    fn rta(ty: u16, data: &[u8]) -> Vec<u8> {
        let mut a = Vec::new();
        a.extend_from_slice(&((RTA_HDRLEN + data.len()) as u16).to_ne_bytes());
        a.extend_from_slice(&ty.to_ne_bytes());
        a.extend_from_slice(data);
        a.resize(align4(a.len()), 0);
        a
    }

    /// An `inet_diag_msg` followed by `attrs`.
    fn diag_msg(
        v6: bool,
        local: (IpAddr, u16),
        remote: (IpAddr, u16),
        cookie: u64,
        attrs: &[u8],
    ) -> Vec<u8> {
        let mut p = vec![0u8; INET_DIAG_MSG_LEN];
        p[0] = if v6 { libc::AF_INET6 } else { libc::AF_INET } as u8;
        p[1] = TCP_ESTABLISHED as u8;
        p[4..6].copy_from_slice(&local.1.to_be_bytes());
        p[6..8].copy_from_slice(&remote.1.to_be_bytes());
        let put = |p: &mut [u8], off: usize, ip: IpAddr| match ip {
            IpAddr::V4(a) => p[off..off + 4].copy_from_slice(&a.octets()),
            IpAddr::V6(a) => p[off..off + 16].copy_from_slice(&a.octets()),
        };
        put(&mut p, 8, local.0);
        put(&mut p, 24, remote.0);
        p[40..44].copy_from_slice(&3u32.to_ne_bytes());
        p[44..48].copy_from_slice(&(cookie as u32).to_ne_bytes());
        p[48..52].copy_from_slice(&((cookie >> 32) as u32).to_ne_bytes());
        p[68..72].copy_from_slice(&777u32.to_ne_bytes());
        p.extend_from_slice(attrs);
        p
    }

    fn tcp_info_bytes(len: usize) -> Vec<u8> {
        let mut t = vec![0u8; len];
        let mut put = |off: usize, b: &[u8]| {
            if off + b.len() <= t.len() {
                t[off..off + b.len()].copy_from_slice(b);
            }
        };
        put(TCPI_RTT_OFF, &1500u32.to_ne_bytes());
        put(TCPI_RTTVAR_OFF, &250u32.to_ne_bytes());
        put(TCPI_BYTES_ACKED_OFF, &4096u64.to_ne_bytes());
        put(TCPI_BYTES_RECEIVED_OFF, &8192u64.to_ne_bytes());
        t
    }

    fn collect(buf: &[u8], seq: u32) -> (Result<Progress, NlError>, Vec<DiagSocket>) {
        let mut got = Vec::new();
        let res = parse_datagram(buf, seq, &mut |s| got.push(s));
        (res, got)
    }

    fn good_datagram() -> Vec<u8> {
        let mut attrs = rta(INET_DIAG_INFO, &tcp_info_bytes(232));
        attrs.extend(rta(INET_DIAG_CGROUP_ID, &42u64.to_ne_bytes()));
        attrs.extend(rta(INET_DIAG_PAD, &[]));
        let local = (IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 443);
        let remote = (IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)), 50000);
        let mut buf = nlmsg(
            SOCK_DIAG_BY_FAMILY,
            7,
            &diag_msg(false, local, remote, 0x1122_3344_5566_7788, &attrs),
        );
        buf.extend(nlmsg(NLMSG_DONE, 7, &0i32.to_ne_bytes()));
        buf
    }
    const INET_DIAG_PAD: u16 = 14;

    #[test]
    fn parses_good_message() {
        let (res, got) = collect(&good_datagram(), 7);
        assert_eq!(res.unwrap(), Progress::Done);
        assert_eq!(got.len(), 1);
        let s = &got[0];
        assert_eq!(s.local, "10.0.0.1:443".parse().unwrap());
        assert_eq!(s.remote, "10.0.0.2:50000".parse().unwrap());
        assert_eq!(s.cookie, 0x1122_3344_5566_7788);
        assert_eq!(s.inode, 777);
        assert_eq!(s.state, TCP_ESTABLISHED as u8);
        assert_eq!(s.cgroup_id, Some(42));
        let info = s.tcp_info.unwrap();
        assert_eq!(info.rtt_us, Some(1500));
        assert_eq!(info.rttvar_us, Some(250));
        assert_eq!(info.bytes_acked, Some(4096));
        assert_eq!(info.bytes_received, Some(8192));
    }

    #[test]
    fn multipart_without_done_asks_for_more() {
        let mut buf = good_datagram();
        buf.truncate(buf.len() - 20); // drop the NLMSG_DONE message
        let (res, got) = collect(&buf, 7);
        assert_eq!(res.unwrap(), Progress::More);
        assert_eq!(got.len(), 1);
    }

    #[test]
    fn maps_v4_mapped_v6_and_keeps_loopback_v6() {
        let mapped: Ipv6Addr = "::ffff:192.0.2.1".parse().unwrap();
        let buf = nlmsg(
            SOCK_DIAG_BY_FAMILY,
            1,
            &diag_msg(
                true,
                (IpAddr::V6(mapped), 80),
                (IpAddr::V6(Ipv6Addr::LOCALHOST), 9),
                1,
                &rta(INET_DIAG_SKV6ONLY, &[1]),
            ),
        );
        let (res, got) = collect(&buf, 1);
        assert_eq!(res.unwrap(), Progress::More);
        assert_eq!(got[0].local, "192.0.2.1:80".parse().unwrap());
        assert_eq!(got[0].remote, "[::1]:9".parse().unwrap());
        assert_eq!(got[0].v6only, Some(true));
        assert_eq!(got[0].tcp_info, None);
    }

    #[test]
    fn short_tcp_info_gives_only_what_fits() {
        // A pre-4.1 kernel's tcp_info ends before tcpi_bytes_acked.
        let attrs = rta(INET_DIAG_INFO, &tcp_info_bytes(104));
        let v4 = (IpAddr::V4(Ipv4Addr::LOCALHOST), 1);
        let buf = nlmsg(SOCK_DIAG_BY_FAMILY, 1, &diag_msg(false, v4, v4, 1, &attrs));
        let (_, got) = collect(&buf, 1);
        let info = got[0].tcp_info.unwrap();
        assert_eq!(info.rtt_us, Some(1500));
        assert_eq!(info.bytes_acked, None);
        assert_eq!(info.bytes_received, None);
        // Even shorter: nothing at all, no panic.
        let attrs = rta(INET_DIAG_INFO, &tcp_info_bytes(70));
        let buf = nlmsg(SOCK_DIAG_BY_FAMILY, 1, &diag_msg(false, v4, v4, 1, &attrs));
        let (_, got) = collect(&buf, 1);
        assert_eq!(got[0].tcp_info, Some(TcpInfoLite::default()));
    }

    #[test]
    fn rejects_truncated_messages() {
        let good = good_datagram();
        // nlmsg_len larger than the datagram.
        let (res, got) = collect(&good[..good.len() - 30], 7);
        assert!(matches!(res, Err(NlError::Truncated { .. })), "{res:?}");
        assert!(got.is_empty());
        // Fewer bytes than a header.
        let (res, _) = collect(&good[..10], 7);
        assert!(matches!(res, Err(NlError::Truncated { .. })));
        // nlmsg_len below the header size.
        let mut bad = good.clone();
        bad[0..4].copy_from_slice(&8u32.to_ne_bytes());
        let (res, _) = collect(&bad, 7);
        assert!(matches!(res, Err(NlError::Truncated { .. })));
        // A well-framed message whose payload is shorter than inet_diag_msg.
        let buf = nlmsg(SOCK_DIAG_BY_FAMILY, 7, &[0u8; 40]);
        let (res, _) = collect(&buf, 7);
        assert!(
            matches!(
                res,
                Err(NlError::Truncated {
                    what: "inet_diag_msg",
                    ..
                })
            ),
            "{res:?}"
        );
    }

    #[test]
    fn rejects_bad_rta_len() {
        let v4 = (IpAddr::V4(Ipv4Addr::LOCALHOST), 1);
        for bad_len in [2000u16, 2, 0] {
            let mut attr = rta(INET_DIAG_CGROUP_ID, &1u64.to_ne_bytes());
            attr[0..2].copy_from_slice(&bad_len.to_ne_bytes());
            let buf = nlmsg(SOCK_DIAG_BY_FAMILY, 1, &diag_msg(false, v4, v4, 1, &attr));
            let (res, got) = collect(&buf, 1);
            assert!(
                matches!(res, Err(NlError::BadAttr { .. })),
                "{bad_len}: {res:?}"
            );
            assert!(got.is_empty());
        }
        // A cgroup attribute too short for a u64 is ignored, not read past its end.
        let attr = rta(INET_DIAG_CGROUP_ID, &[1, 2, 3]);
        let buf = nlmsg(SOCK_DIAG_BY_FAMILY, 1, &diag_msg(false, v4, v4, 1, &attr));
        let (res, got) = collect(&buf, 1);
        assert!(res.is_ok());
        assert_eq!(got[0].cgroup_id, None);
    }

    #[test]
    fn reports_nlmsg_error_and_failed_done() {
        let mut err = (-libc::EPERM).to_ne_bytes().to_vec();
        err.extend_from_slice(&[0u8; NLMSG_HDRLEN]); // the echoed request header
        let (res, _) = collect(&nlmsg(NLMSG_ERROR, 3, &err), 3);
        match res {
            Err(e @ NlError::Kernel { errno }) => {
                assert_eq!(errno, libc::EPERM);
                assert!(e.to_string().contains("not permitted"), "{e}");
            }
            other => panic!("{other:?}"),
        }
        // Truncated NLMSG_ERROR payload.
        let (res, _) = collect(&nlmsg(NLMSG_ERROR, 3, &[1, 2]), 3);
        assert!(matches!(
            res,
            Err(NlError::Truncated {
                what: "NLMSG_ERROR",
                ..
            })
        ));
        // An acknowledgement (errno 0) is not an error.
        let (res, _) = collect(&nlmsg(NLMSG_ERROR, 3, &0i32.to_ne_bytes()), 3);
        assert_eq!(res.unwrap(), Progress::More);
        // NLMSG_DONE carrying an error.
        let (res, _) = collect(&nlmsg(NLMSG_DONE, 3, &(-libc::ENOMEM).to_ne_bytes()), 3);
        assert!(matches!(res, Err(NlError::DumpFailed { errno }) if errno == libc::ENOMEM));
        // NLMSG_DONE without payload is still the end.
        let (res, _) = collect(&nlmsg(NLMSG_DONE, 3, &[]), 3);
        assert_eq!(res.unwrap(), Progress::Done);
    }

    #[test]
    fn skips_other_sequence_numbers() {
        let (res, got) = collect(&good_datagram(), 8);
        assert_eq!(res.unwrap(), Progress::More);
        assert!(got.is_empty());
    }

    #[test]
    fn never_panics_on_mangled_input() {
        let good = good_datagram();
        for cut in 0..=good.len() {
            let _ = collect(&good[..cut], 7);
        }
        for i in 0..good.len() {
            for v in [0u8, 1, 3, 4, 0x7f, 0xff] {
                let mut m = good.clone();
                m[i] = v;
                let _ = collect(&m, 7);
            }
        }
    }

    #[test]
    fn request_layout() {
        let r = build_request(9, libc::AF_INET6 as u8, ESTABLISHED_STATES, 2);
        assert_eq!(rd_u32_ne(&r, 0), Some(72));
        assert_eq!(rd_u16_ne(&r, 4), Some(SOCK_DIAG_BY_FAMILY));
        assert_eq!(rd_u16_ne(&r, 6), Some(NLM_F_REQUEST | NLM_F_DUMP));
        assert_eq!(rd_u32_ne(&r, 8), Some(9));
        assert_eq!(r[16], libc::AF_INET6 as u8);
        assert_eq!(r[17], libc::IPPROTO_TCP as u8);
        assert_eq!(r[18], 2);
        assert_eq!(rd_u32_ne(&r, 20), Some(0b1_0011_1010));
    }

    #[test]
    fn role_inference() {
        let mut ls = Listeners::new();
        let l = |a: &str, v6only| Listener {
            addr: a.parse().unwrap(),
            v6only,
        };
        ls.entry(80).or_default().push(l("0.0.0.0", false));
        ls.entry(443).or_default().push(l("::", false));
        ls.entry(8443).or_default().push(l("::", true));
        ls.entry(22).or_default().push(l("10.0.0.1", false));
        ls.entry(53).or_default().push(l("::1", false));
        let role = |a: &str| role_of(a.parse().unwrap(), &ls);
        assert_eq!(role("10.0.0.1:80"), SeedRole::Server);
        assert_eq!(role("[2001:db8::1]:80"), SeedRole::Client);
        assert_eq!(role("10.0.0.1:443"), SeedRole::Server); // dual-stack
        assert_eq!(role("[::ffff:10.0.0.1]:443"), SeedRole::Server);
        assert_eq!(role("[2001:db8::1]:443"), SeedRole::Server);
        assert_eq!(role("10.0.0.1:8443"), SeedRole::Client); // v6only
        assert_eq!(role("[2001:db8::1]:8443"), SeedRole::Server);
        assert_eq!(role("10.0.0.1:22"), SeedRole::Server);
        assert_eq!(role("10.0.0.2:22"), SeedRole::Client);
        assert_eq!(role("[::1]:53"), SeedRole::Server);
        assert_eq!(role("127.0.0.1:53"), SeedRole::Client);
        assert_eq!(role("10.0.0.1:50000"), SeedRole::Client);
    }

    // ----- live tests --------------------------------------------------------------------------

    const SO_COOKIE: libc::c_int = 57;

    fn so_cookie(fd: &impl AsRawFd) -> u64 {
        let mut v = 0u64;
        let mut len = mem::size_of::<u64>() as libc::socklen_t;
        // SAFETY: valid fd, pointer and length of a u64.
        let rc = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                SO_COOKIE,
                (&mut v as *mut u64).cast(),
                &mut len,
            )
        };
        assert_eq!(rc, 0, "SO_COOKIE: {}", io::Error::last_os_error());
        v
    }

    /// Whether root tests can run; panics when CI=true demands them.
    fn root_or_skip(test: &str) -> bool {
        // SAFETY: trivial syscall.
        if unsafe { libc::geteuid() } == 0 {
            return true;
        }
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{test}: needs root, and CI=true forbids skipping"
        );
        eprintln!("{test}: skipped, needs root (setns, ip netns add)");
        false
    }

    /// A named network namespace, deleted on drop.
    struct NetnsGuard {
        name: String,
    }

    impl NetnsGuard {
        fn new() -> Self {
            static N: AtomicUsize = AtomicUsize::new(0);
            let name = format!(
                "flowlens-seed-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            );
            let ok = Command::new("ip")
                .args(["netns", "add", &name])
                .status()
                .is_ok_and(|s| s.success());
            let guard = NetnsGuard { name };
            assert!(ok, "ip netns add {} failed", guard.name);
            let ok = Command::new("ip")
                .args(["-n", &guard.name, "link", "set", "lo", "up"])
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "ip -n {} link set lo up failed", guard.name);
            guard
        }

        fn path(&self) -> PathBuf {
            Path::new("/run/netns").join(&self.name)
        }
    }

    impl Drop for NetnsGuard {
        fn drop(&mut self) {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.name])
                .status();
        }
    }

    /// A connected loopback pair plus its listener.
    struct Pair {
        _listener: TcpListener,
        client: TcpStream,
        server: TcpStream,
    }

    fn connect_pair(bind: &str, connect_ip: &str) -> io::Result<Pair> {
        let listener = TcpListener::bind(bind)?;
        let port = listener.local_addr()?.port();
        let mut client = TcpStream::connect((connect_ip, port))?;
        let (mut server, _) = listener.accept()?;
        // A few round trips so that both sides have RTT samples and acked bytes.
        let mut b = [0u8; 5];
        for _ in 0..3 {
            client.write_all(b"hello")?;
            server.read_exact(&mut b)?;
            server.write_all(b"world")?;
            client.read_exact(&mut b)?;
        }
        Ok(Pair {
            _listener: listener,
            client,
            server,
        })
    }

    fn find(report: &SeedReport, netns: u32, cookie: u64) -> SeededSocket {
        report
            .sockets
            .iter()
            .find(|s| s.netns == netns && s.cookie == cookie)
            .cloned()
            .unwrap_or_else(|| panic!("cookie {cookie:#x} in netns {netns} not found: {report:#?}"))
    }

    fn check_pair(report: &SeedReport, netns: u32, pair: &Pair) {
        let client = find(report, netns, so_cookie(&pair.client));
        let server = find(report, netns, so_cookie(&pair.server));
        assert_eq!(client.role, SeedRole::Client, "{client:?}");
        assert_eq!(server.role, SeedRole::Server, "{server:?}");
        assert_eq!(client.local, pair.client.local_addr().unwrap());
        assert_eq!(client.remote, pair.client.peer_addr().unwrap());
        assert_eq!(server.local.port(), pair.client.peer_addr().unwrap().port());
        assert_eq!(
            server.remote.port(),
            pair.client.local_addr().unwrap().port()
        );
        for s in [&client, &server] {
            assert!(s.srtt_us > 0, "{s:?}");
            assert!(s.inode != 0, "{s:?}");
            // Everything sent was read by the peer, but the last ACK may still be delayed.
            assert!(s.bytes_received == 15 && s.bytes_acked >= 10, "{s:?}");
        }
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let mut v = kernel
            .split(['.', '-'])
            .filter_map(|x| x.parse::<u32>().ok());
        if (v.next().unwrap_or(0), v.next().unwrap_or(0)) >= (5, 8) {
            assert!(client.cgroup_id.is_some(), "{client:?}");
        }
    }

    #[test]
    fn finds_loopback_connection_in_own_namespace() {
        let before = own_netns().unwrap().0;
        let v4 = connect_pair("127.0.0.1:0", "127.0.0.1").unwrap();
        // Dual-stack listener, IPv4 client: the accepted socket is AF_INET6 with a mapped address.
        let dual = connect_pair("[::]:0", "127.0.0.1").ok();
        let report = seed_established(100_000);
        assert_eq!(own_netns().unwrap().0, before, "caller's namespace changed");
        assert_eq!(report.sockets.first().map(|s| s.netns), Some(before));
        check_pair(&report, before, &v4);
        match &dual {
            Some(pair) => {
                check_pair(&report, before, pair);
                let server = find(&report, before, so_cookie(&pair.server));
                assert!(
                    server.local.is_ipv4(),
                    "mapped address not unmapped: {server:?}"
                );
            }
            None => eprintln!("no IPv6 here: dual-stack case skipped"),
        }
    }

    #[test]
    fn cap_counts_dropped_sockets() {
        let _pair = connect_pair("127.0.0.1:0", "127.0.0.1").unwrap();
        let report = seed_established(0);
        assert!(report.sockets.is_empty());
        assert!(report.dropped >= 1, "{report:?}");
        assert!(
            report
                .failures
                .iter()
                .any(|f| f.starts_with("max_sockets=0 reached")),
            "{:?}",
            report.failures
        );
    }

    #[test]
    fn finds_sockets_in_other_namespace() {
        if !root_or_skip("finds_sockets_in_other_namespace") {
            return;
        }
        let ns = NetnsGuard::new();
        let ns_inode = u32::try_from(std::fs::metadata(ns.path()).unwrap().ino()).unwrap();
        let before = own_netns().unwrap().0;
        assert_ne!(ns_inode, before);
        let path = ns.path();
        // The sockets are created inside the namespace by a thread that setns'd there; they stay
        // in that namespace after the thread exits.
        let pair = thread::spawn(move || {
            let f = File::open(&path).unwrap();
            // SAFETY: valid fd; only this thread moves.
            assert_eq!(unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
            connect_pair("127.0.0.1:0", "127.0.0.1").unwrap()
        })
        .join()
        .unwrap();

        let t = std::time::Instant::now();
        let report = seed_established(100_000);
        eprintln!(
            "seed_established: {:?}, {} namespaces, {} sockets, failures {:?}",
            t.elapsed(),
            report.namespaces,
            report.sockets.len(),
            report.failures
        );
        assert_eq!(own_netns().unwrap().0, before, "caller's namespace changed");
        assert!(report.namespaces >= 2);
        assert!(
            !report
                .failures
                .iter()
                .any(|f| f.contains(&ns_inode.to_string())),
            "{:?}",
            report.failures
        );
        check_pair(&report, ns_inode, &pair);

        // Cross-check with iproute2: ss prints the cookie as "sk:<hex>".
        let out = Command::new("ss")
            .args(["-e", "-i", "-n", "-t", "-N", &ns.name])
            .output();
        if let Some(out) = out.ok().filter(|o| o.status.success()) {
            let text = String::from_utf8_lossy(&out.stdout);
            for s in [&pair.client, &pair.server] {
                let needle = format!("sk:{:x}", so_cookie(s));
                assert!(text.contains(&needle), "{needle} not in ss output:\n{text}");
            }
        }
    }
    #[test]
    fn a_namespace_is_read_through_a_path_that_still_names_it_and_skipped_when_none_does() {
        if !root_or_skip("a_namespace_is_read_through_a_path_that_still_names_it") {
            return;
        }
        let ns = NetnsGuard::new();
        let inode = u32::try_from(std::fs::metadata(ns.path()).unwrap().ino()).unwrap();
        let path = ns.path();
        let pair = thread::spawn(move || {
            let f = File::open(&path).unwrap();
            // SAFETY: valid fd; only this thread moves.
            assert_eq!(unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
            connect_pair("127.0.0.1:0", "127.0.0.1").unwrap()
        })
        .join()
        .unwrap();
        // A process that exited, and a path that names another namespace now (ours).
        let gone = PathBuf::from(format!("/run/netns/{}-gone", ns.name));
        let replaced = PathBuf::from("/proc/self/ns/net");
        let read = |paths: Vec<PathBuf>| {
            let target = NsTarget { inode, paths };
            thread::spawn(move || read_namespace(&target, 100))
                .join()
                .unwrap()
        };
        let out = read(vec![gone.clone(), replaced.clone()]);
        assert!(out.errors.is_empty(), "{:?}", out.errors);
        assert!(out.sockets.is_empty(), "{:?}", out.sockets);
        let out = read(vec![gone, replaced, ns.path()]);
        assert!(out.errors.is_empty(), "{:?}", out.errors);
        let report = SeedReport {
            sockets: out.sockets,
            ..SeedReport::default()
        };
        check_pair(&report, inode, &pair);
    }
}

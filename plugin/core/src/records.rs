//! Rust mirrors of the records in ebpf/flowlens.h (the single source of truth for their layout).

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// A record's transport (`protocol`: `IPPROTO_TCP` or `IPPROTO_UDP`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

/// `FL_COMM_LEN`.
pub const COMM_LEN: usize = 16;

/// `enum fl_event_kind`: a UDP socket moved its first datagram (a TCP flow's start is no record:
/// userspace finds it in the `socks` map, or learns of it from its close).
pub(crate) const EV_OPEN: u32 = 1;
/// `FL_EV_CLOSE`: a TCP socket reached CLOSE; the record carries its final counters.
pub(crate) const EV_CLOSE: u32 = 2;
/// `FL_EV_CONNECT_FAILED`: SYN_SENT -> CLOSE.
pub(crate) const EV_CONNECT_FAILED: u32 = 3;

/// `FL_SOCK_PENDING` in `FlSock::flags`: a connect not answered yet (SYN_SENT), not a flow.
pub(crate) const SOCK_PENDING: u8 = 1;
/// `FL_SOCK_ADOPTED` in `FlSock::flags`: an entry the start-up scan put in (the programs keep
/// the bit as they find it and copy it into the socket's close record).
pub const SOCK_ADOPTED: u8 = 2;

/// `enum fl_role`.
pub const ROLE_UNKNOWN: u8 = 0;
/// `FL_ROLE_CLIENT`.
pub const ROLE_CLIENT: u8 = 1;
/// `FL_ROLE_SERVER`.
pub const ROLE_SERVER: u8 = 2;

/// `enum fl_stat` indexes into the per-CPU `stats` map. `FL_STAT_EVENTS_LOST`: records the ring
/// buffer had no room for (one of the causes `events_lost` counts).
pub const STAT_EVENTS_LOST: u32 = 0;
/// `FL_STAT_SOCKS_FULL`: sockets the kernel could not track because `socks` was full.
pub const STAT_SOCKS_FULL: u32 = 1;
/// `FL_STAT_EVENTS_SENT`: records the kernel submitted to the ring. Nothing reads it: its index
/// is only checked against the header.
#[cfg(test)]
const STAT_EVENTS_SENT: u32 = 2;
/// `FL_STAT_STALE_SOCKS`: entries a gather's iterator found naming another socket (their socket's
/// end was missed): each counted once, and ended by the iterator (a close record).
pub const STAT_STALE_SOCKS: u32 = 3;
/// `FL_STAT_LISTEN_FULL`: listening sockets a gather's iterator found no room for in
/// `listen_drops` (each counts at every run that misses it).
pub const STAT_LISTEN_FULL: u32 = 4;

/// `IPPROTO_TCP`.
pub const IPPROTO_TCP: u8 = 6;
/// `IPPROTO_UDP`.
pub const IPPROTO_UDP: u8 = 17;

/// `struct fl_sock`: the kernel's per-socket state, value of the `socks` map (key: socket cookie).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlSock {
    /// Payload bytes sent: UDP, the datagrams' sum; TCP, the socket's `bytes_acked` less the
    /// SYN, the FIN and `base_acked` (read at close and by the gather's map iterator).
    pub bytes_sent: u64,
    /// Payload bytes received.
    pub bytes_rcvd: u64,
    /// `bpf_ktime_get_ns()` at creation.
    pub first_ns: u64,
    /// `bpf_ktime_get_ns()` of the open, the close or the last UDP datagram (TCP data leaves it).
    pub last_ns: u64,
    /// cgroup2 id of the socket.
    pub cgroup_id: u64,
    /// Network namespace inode of the socket.
    pub netns: u32,
    /// Process id (tgid) that created or accepted it; 0 until seen in process context.
    pub pid: u32,
    /// Smoothed RTT, µs (as `tcpi_rtt`).
    pub srtt_us: u32,
    /// RTT variance, µs (as `tcpi_rttvar`).
    pub rttvar_us: u32,
    /// Retransmitted segments.
    pub retrans: u32,
    /// Local port (host order).
    pub sport: u16,
    /// Remote port (host order).
    pub dport: u16,
    /// Local address (IPv4 as v4-mapped).
    pub saddr: [u8; 16],
    /// Remote address (IPv4 as v4-mapped).
    pub daddr: [u8; 16],
    /// `AF_INET` or `AF_INET6`.
    pub family: u8,
    /// `IPPROTO_TCP` or `IPPROTO_UDP`.
    pub protocol: u8,
    /// `enum fl_role`.
    pub role: u8,
    /// `FL_SOCK_*` bits (`SOCK_PENDING`).
    pub flags: u8,
    /// Command name, NUL-padded.
    pub comm: [u8; COMM_LEN],
    /// TCP: `total_retrans` when tracking began (the start-up scan), else 0.
    pub base_retrans: u32,
    /// TCP: the socket's kernel address, as the gather's iterator last found it; 0 until then.
    pub sk: u64,
    /// TCP: `bytes_acked` when tracking began (1 for a client: its SYN).
    pub base_acked: u64,
    /// TCP: `bytes_received` when tracking began.
    pub base_rcvd: u64,
}

/// `struct fl_event`: a ring buffer record.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlEvent {
    /// Socket cookie.
    pub cookie: u64,
    /// `bpf_ktime_get_ns()` of the event.
    pub(crate) ts_ns: u64,
    /// `enum fl_event_kind`.
    pub kind: u32,
    /// TCP ends: the socket's `sk_err` when it reached CLOSE (`ECONNREFUSED`, `ETIMEDOUT`,
    /// `ECONNRESET`, ...; 0: none); 0 in other records.
    pub err: u32,
    /// Snapshot of the socket's state at the event.
    pub sock: FlSock,
}

/// `struct fl_listen_key`: a listening TCP socket, key of the `listen_drops` map.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FlListenKey {
    /// The socket's kernel address.
    pub sk: u64,
    /// Its socket inode's number (an address and an inode number are each reused by later
    /// sockets, but not both together).
    pub ino: u64,
}

/// `struct fl_listen`: what a gather's iterator read from a listening TCP socket.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FlListen {
    /// cgroup2 id of the socket.
    pub cgroup_id: u64,
    /// Network namespace inode of the socket.
    pub netns: u32,
    /// The socket's `sk_drops`, a 32-bit counter that wraps.
    pub drops: u32,
    /// Local port (host order).
    pub port: u16,
    /// Padding.
    pub(crate) _pad: [u16; 3],
}

const _: () = assert!(std::mem::size_of::<FlListenKey>() == 16);
const _: () = assert!(std::mem::size_of::<FlListen>() == 24);
const _: () = assert!(std::mem::offset_of!(FlListen, drops) == 12);
const _: () = assert!(std::mem::offset_of!(FlListen, port) == 16);
const _: () = assert!(std::mem::size_of::<FlSock>() == 144);
const _: () = assert!(std::mem::size_of::<FlEvent>() == 168);
const _: () = assert!(std::mem::offset_of!(FlSock, netns) == 40);
const _: () = assert!(std::mem::offset_of!(FlSock, sport) == 60);
const _: () = assert!(std::mem::offset_of!(FlSock, saddr) == 64);
const _: () = assert!(std::mem::offset_of!(FlSock, family) == 96);
const _: () = assert!(std::mem::offset_of!(FlSock, comm) == 100);
const _: () = assert!(std::mem::offset_of!(FlSock, base_retrans) == 116);
const _: () = assert!(std::mem::offset_of!(FlSock, sk) == 120);
const _: () = assert!(std::mem::offset_of!(FlSock, base_rcvd) == 136);
const _: () = assert!(std::mem::offset_of!(FlSock, flags) == 99);
const _: () = assert!(std::mem::offset_of!(FlEvent, err) == 20);
const _: () = assert!(std::mem::offset_of!(FlEvent, sock) == 24);

/// An address as stored by the kernel side: IPv4 comes back as `Ipv4Addr`.
pub(crate) fn ip_from_kernel(raw: [u8; 16]) -> IpAddr {
    let v6 = Ipv6Addr::from(raw);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

/// An address in the kernel's storage convention (IPv4 as v4-mapped IPv6).
pub fn ip_to_kernel(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

impl FlSock {
    /// Local endpoint.
    pub fn local(&self) -> SocketAddr {
        SocketAddr::new(ip_from_kernel(self.saddr), self.sport)
    }

    /// Remote endpoint.
    pub fn remote(&self) -> SocketAddr {
        SocketAddr::new(ip_from_kernel(self.daddr), self.dport)
    }

    /// The command name as text (up to the first NUL, lossy UTF-8).
    pub fn comm(&self) -> String {
        let end = self.comm.iter().position(|&b| b == 0).unwrap_or(COMM_LEN);
        String::from_utf8_lossy(&self.comm[..end]).into_owned()
    }

    /// Parses a record from kernel bytes; `None` when it is too short.
    #[allow(unsafe_code)] // one unaligned read of plain old data, instead of 25 field reads
    pub fn from_bytes(bytes: &[u8]) -> Option<FlSock> {
        if bytes.len() < std::mem::size_of::<FlSock>() {
            return None;
        }
        // SAFETY: length checked; FlSock is plain old data; read_unaligned copes with alignment.
        Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<FlSock>()) })
    }
}

impl FlEvent {
    /// Parses a ring buffer record; `None` when it is too short.
    #[allow(unsafe_code)] // one unaligned read of plain old data
    pub fn from_bytes(bytes: &[u8]) -> Option<FlEvent> {
        if bytes.len() < std::mem::size_of::<FlEvent>() {
            return None;
        }
        // SAFETY: length checked; FlEvent is plain old data; read_unaligned copes with alignment.
        Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<FlEvent>()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_mapped_addresses_come_back_as_ipv4() {
        let mut raw = [0u8; 16];
        raw[10] = 0xff;
        raw[11] = 0xff;
        raw[12..].copy_from_slice(&[10, 1, 0, 2]);
        assert_eq!(ip_from_kernel(raw).to_string(), "10.1.0.2");
        assert_eq!(
            ip_from_kernel(Ipv6Addr::LOCALHOST.octets()).to_string(),
            "::1"
        );
    }

    #[test]
    fn constants_match_the_header() {
        let header = include_str!("../../../ebpf/flowlens.h");
        let value = |name: &str| -> u64 {
            let at = header
                .find(&format!("{name} "))
                .unwrap_or_else(|| panic!("{name} is not in flowlens.h"));
            let rest = header[at + name.len()..].trim_start();
            let rest = rest.strip_prefix('=').unwrap_or(rest).trim_start();
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits
                .parse()
                .unwrap_or_else(|_| panic!("{name}: {rest:.20}"))
        };
        assert_eq!(value("FL_COMM_LEN"), COMM_LEN as u64);
        assert_eq!(value("FL_EV_OPEN"), u64::from(EV_OPEN));
        assert_eq!(value("FL_EV_CLOSE"), u64::from(EV_CLOSE));
        assert_eq!(value("FL_EV_CONNECT_FAILED"), u64::from(EV_CONNECT_FAILED));
        assert_eq!(value("FL_SOCK_PENDING"), u64::from(SOCK_PENDING));
        assert_eq!(value("FL_SOCK_ADOPTED"), u64::from(SOCK_ADOPTED));
        // the programs' own bit (a failed connect's kept error): one the flows never read
        let kept = value("FL_SOCK_ERR_KEPT");
        assert!(kept.is_power_of_two() && kept < 256, "{kept}");
        assert_eq!(kept & u64::from(SOCK_PENDING | SOCK_ADOPTED), 0);
        assert_eq!(value("FL_ROLE_UNKNOWN"), u64::from(ROLE_UNKNOWN));
        assert_eq!(value("FL_ROLE_CLIENT"), u64::from(ROLE_CLIENT));
        assert_eq!(value("FL_ROLE_SERVER"), u64::from(ROLE_SERVER));
        assert_eq!(value("FL_STAT_EVENTS_LOST"), u64::from(STAT_EVENTS_LOST));
        assert_eq!(value("FL_STAT_SOCKS_FULL"), u64::from(STAT_SOCKS_FULL));
        assert_eq!(value("FL_STAT_EVENTS_SENT"), u64::from(STAT_EVENTS_SENT));
        assert_eq!(value("FL_STAT_STALE_SOCKS"), u64::from(STAT_STALE_SOCKS));
        assert_eq!(value("FL_STAT_LISTEN_FULL"), u64::from(STAT_LISTEN_FULL));
    }

    #[test]
    fn short_records_are_refused() {
        assert!(FlEvent::from_bytes(&[0u8; 167]).is_none());
        assert!(FlEvent::from_bytes(&[0u8; 168]).is_some());
    }
}

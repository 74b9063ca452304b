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
//!   established-like ones (ESTABLISHED, FIN_WAIT1, FIN_WAIT2, CLOSE_WAIT), with
//!   `INET_DIAG_INFO` (`struct tcp_info`) requested. Each dump walks the kernel's TCP hash
//!   table, which all namespaces share unless `net.ipv4.tcp_child_ehash_entries` is set, so a
//!   dump costs about the same in an empty namespace as in a busy one (2-4 ms for 256 Ki
//!   buckets on a 2-vCPU VM); listeners and connections are therefore asked for in the same dump.
//! * A socket is a [`SeedRole::Server`] when a listener of the same namespace has its local port
//!   and either its address or a wildcard address (an IPv6 `::` listener also accepts IPv4
//!   connections unless it is `IPV6_V6ONLY`, reported by `INET_DIAG_SKV6ONLY`).
//!
//! * [`look_again`] looks a second time at sockets the first look found, after the caller put
//!   them into the kernel map: a socket that closed in between is gone from the second.
//!
//! The cookie is `idiag_cookie[0] | idiag_cookie[1] << 32`, the value `bpf_get_socket_cookie`
//! and `getsockopt(SO_COOKIE)` return for the same socket (the tests check this). The cgroup id is
//! the `INET_DIAG_CGROUP_ID` attribute, which the kernel (5.7 and later, built with
//! `CONFIG_SOCK_CGROUP_DATA`) adds to every full socket's reply without being asked; it cannot be
//! requested through `idiag_ext`, which has only 8 bits. It is `None` on older kernels.
//!
//! The netlink parser validates every length (`nlmsg_len`, `rta_len`, the fixed-size
//! `inet_diag_msg`, the `tcp_info` attribute) before reading and never panics on malformed input.

mod diag;
mod namespaces;
mod read;
mod role;

pub(crate) use diag::*;
use namespaces::*;
pub use read::Look;
use read::*;
use role::*;

use crate::netlink::{self, *};

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;
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
    /// Inode of the socket (`idiag_inode`), 0 for sockets without a file.
    pub inode: u32,
    /// The interface the socket is bound to (`idiag_if`), 0 when none.
    pub bound_if: u32,
}

/// Result of [`seed_established`].
#[derive(Debug, Default)]
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
    /// The namespaces that had sockets, by inode, with their files kept open for
    /// [`look_again`] (`None`: the caller's own namespace).
    handles: Vec<(u32, Option<File>)>,
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
    for (target, outcome) in targets.iter().zip(outcomes) {
        failures.extend(outcome.errors);
        if !outcome.sockets.is_empty() {
            report.handles.push((target.inode, outcome.handle));
        }
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

/// Looks again at the sockets `which` (indices into `report.sockets`) in their namespaces,
/// each namespace on a thread of its own, at most [`MAX_PARALLEL`] at a time: a look per
/// socket, in the order of `which`, and a line per namespace that could not be read again.
pub fn look_again(report: &SeedReport, which: &[usize]) -> (Vec<Look>, Vec<String>) {
    let mut by_ns: HashMap<u32, Vec<usize>> = HashMap::new();
    for (at, &i) in which.iter().enumerate() {
        by_ns.entry(report.sockets[i].netns).or_default().push(at);
    }
    let groups: Vec<(u32, Option<&File>, Vec<usize>)> = report
        .handles
        .iter()
        .filter_map(|(inode, handle)| Some((*inode, handle.as_ref(), by_ns.remove(inode)?)))
        .collect();
    let outcomes = in_threads(
        &groups,
        |(inode, handle, ats)| {
            let sockets: Vec<&SeededSocket> =
                ats.iter().map(|&at| &report.sockets[which[at]]).collect();
            look_again_in(*inode, *handle, &sockets)
        },
        |(inode, _, ats), e| {
            (
                vec![Look::Unknown; ats.len()],
                Some(format!("netns {inode}: {e}")),
            )
        },
    );
    let mut looks = vec![Look::Unknown; which.len()];
    let mut failures = Vec::new();
    for ((_, _, ats), (found, failure)) in groups.iter().zip(outcomes) {
        for (&at, look) in ats.iter().zip(found) {
            looks[at] = look;
        }
        failures.extend(failure);
    }
    (looks, failures)
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
        assert_eq!(rd_u32_ne(&r, 20), Some(0b1_0011_0010));
    }

    #[test]
    fn lookup_request_layout() {
        let local: SocketAddr = "10.0.0.1:443".parse().unwrap();
        let remote: SocketAddr = "10.0.0.2:50000".parse().unwrap();
        let r = build_lookup(5, local, remote, 3, 0x1122_3344_5566_7788);
        assert_eq!(rd_u16_ne(&r, 6), Some(NLM_F_REQUEST)); // one socket, no dump
        assert_eq!(rd_u32_ne(&r, 8), Some(5));
        assert_eq!(r[16], libc::AF_INET as u8);
        assert_eq!(r[17], libc::IPPROTO_TCP as u8);
        let id = &r[NLMSG_HDRLEN + 8..];
        assert_eq!(rd_u16_be(id, 0), Some(443));
        assert_eq!(rd_u16_be(id, 2), Some(50000));
        assert_eq!(&id[4..8], &[10, 0, 0, 1]);
        assert_eq!(&id[20..24], &[10, 0, 0, 2]);
        assert_eq!(rd_u32_ne(id, 36), Some(3));
        assert_eq!(rd_u32_ne(id, 40), Some(0x5566_7788));
        assert_eq!(rd_u32_ne(id, 44), Some(0x1122_3344));
        // A link-local IPv6 address is asked for in its scope.
        let local: SocketAddr = "[fe80::1%7]:22".parse().unwrap();
        let remote: SocketAddr = "[fe80::2%7]:40000".parse().unwrap();
        let r = build_lookup(6, local, remote, 0, 1);
        assert_eq!(r[16], libc::AF_INET6 as u8);
        let id = &r[NLMSG_HDRLEN + 8..];
        assert_eq!(&id[4..20], &"fe80::1".parse::<Ipv6Addr>().unwrap().octets());
        assert_eq!(rd_u32_ne(id, 36), Some(7));
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
        let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
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

    use crate::root_or_skip;

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
    fn a_second_look_finds_open_sockets_and_not_closed_ones() {
        let open = connect_pair("127.0.0.1:0", "127.0.0.1").unwrap();
        let closed = connect_pair("127.0.0.1:0", "127.0.0.1").unwrap();
        let report = seed_established(100_000);
        let own = own_netns().unwrap().0;
        let at = |fd: &TcpStream| {
            let cookie = so_cookie(fd);
            report
                .sockets
                .iter()
                .position(|s| s.netns == own && s.cookie == cookie)
                .unwrap()
        };
        let which = [
            at(&open.client),
            at(&open.server),
            at(&closed.client),
            at(&closed.server),
        ];
        // The lookup by addresses and cookie finds a live socket whatever the dump says.
        let mut diag = DiagConn::open().unwrap();
        let state = diag.lookup(&report.sockets[which[0]]).unwrap();
        assert_eq!(state, Some(TCP_ESTABLISHED));
        // The client closes first: it waits in TIME_WAIT under the same addresses and cookie.
        let Pair { client, server, .. } = closed;
        drop(client);
        std::thread::sleep(std::time::Duration::from_millis(50));
        drop(server);
        let started = std::time::Instant::now();
        loop {
            let (looks, failures) = look_again(&report, &which);
            assert!(failures.is_empty(), "{failures:?}");
            assert_eq!(&looks[..2], &[Look::Open, Look::Open]);
            if looks[2..] == [Look::Gone, Look::Gone] {
                break;
            }
            assert!(started.elapsed().as_secs() < 30, "{looks:?}");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let tw = diag.lookup(&report.sockets[which[2]]).unwrap();
        assert!(matches!(tw, None | Some(6)), "{tw:?}"); // 6: TCP_TIME_WAIT
        drop(open);
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

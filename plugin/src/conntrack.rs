//! The real endpoint behind a virtual IP: a connection's conntrack entry, read through
//! ctnetlink (`NETLINK_NETFILTER`, `IPCTNL_MSG_CT_GET`), in the network namespace the lookups
//! are made from.
//!
//! Under kube-proxy (iptables or nftables), a client's socket keeps the Service's ClusterIP as
//! its peer: the DNAT to a backend happens in the node's netfilter, which records it in the
//! connection's conntrack entry. The entry's original tuple is what the client sent (its
//! address and port to the ClusterIP and port); its reply tuple is what comes back, whose source
//! is the backend that answered. [`Conntrack::backend`] asks the kernel for the entry of one
//! connection, by its original tuple, and returns that source when it is not the address the
//! client connected to.
//!
//! The kernel checks CAP_NET_ADMIN at every request (`netlink_net_capable`: the socket's opener
//! and the sender both need it), in the user namespace of the socket's network namespace.
//! Conntrack tables are per network namespace: the lookups see the DNAT of the namespace the
//! socket was opened in (for kube-proxy, the node's, where flowlens runs).
//!
//! Message building and reply parsing are pure functions; the parser validates every length
//! and never panics on malformed input (unit tests here, the `conntrack` fuzz target).

use crate::netlink::{self, *};
use flowlens_core::Proto;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

// ---------------------------------------------------------------------------------------------
// Kernel ABI constants (linux/netlink.h, linux/netfilter/nfnetlink.h,
// linux/netfilter/nfnetlink_conntrack.h).

const NETLINK_NETFILTER: libc::c_int = 12;
const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_NEW: u16 = 0;
const IPCTNL_MSG_CT_GET: u16 = 1;
/// `sizeof(struct nfgenmsg)`: family, version, resource id.
const NFGENMSG_LEN: usize = 4;
const NFNETLINK_V0: u8 = 0;

const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;

/// The reply to a GET is one message; an entry with every attribute is well under 1 KiB.
const RECV_BUF_LEN: usize = 16 * 1024;
/// The kernel answers before `sendto` returns; the timeout only bounds a broken kernel.
const RECV_TIMEOUT: Duration = Duration::from_secs(1);

/// What the lookups did, since the [`Conntrack`] was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConntrackStats {
    /// Calls to [`Conntrack::backend`].
    pub lookups: u64,
    /// Lookups that found a rewritten destination (a backend).
    pub found_dnat: u64,
    /// Lookups that failed (the kernel refused, a malformed or missing reply).
    pub errors: u64,
}

/// A ctnetlink socket of the network namespace it was opened in.
pub struct Conntrack {
    socket: netlink::Socket,
    seq: u32,
    stats: ConntrackStats,
}

impl Conntrack {
    /// Opens ctnetlink in the calling thread's network namespace and checks, with one lookup
    /// of a connection that cannot exist, that the kernel answers. The error says why not:
    /// `PermissionDenied` without CAP_NET_ADMIN; `Unsupported` when the kernel has no
    /// ctnetlink (no nfnetlink, or nf_conntrack_netlink neither loaded nor loadable).
    pub fn open() -> io::Result<Conntrack> {
        let socket =
            netlink::Socket::open(NETLINK_NETFILTER, RECV_TIMEOUT, RECV_BUF_LEN).map_err(|e| {
                match e.raw_os_error() {
                    Some(libc::EPROTONOSUPPORT) => io::Error::new(
                        io::ErrorKind::Unsupported,
                        format!("the kernel has no nfnetlink (NETLINK_NETFILTER): {e}"),
                    ),
                    _ => e,
                }
            })?;
        let mut ct = Conntrack {
            socket,
            seq: 0,
            stats: ConntrackStats::default(),
        };
        let nowhere = SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0));
        match ct.lookup(libc::IPPROTO_TCP as u8, nowhere, nowhere) {
            Ok(_) => Ok(ct),
            Err(e) => Err(match e.raw_os_error() {
                Some(libc::EPERM) => io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    "the kernel refuses conntrack lookups without CAP_NET_ADMIN",
                ),
                Some(libc::EINVAL | libc::EOPNOTSUPP) => io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!(
                        "the kernel has no ctnetlink (nf_conntrack_netlink is neither loaded \
                         nor loadable): {e}"
                    ),
                ),
                _ => io::Error::new(e.kind(), format!("a conntrack lookup failed: {e}")),
            }),
        }
    }

    /// The endpoint a connection (`local`: the socket's source, `remote`: the destination it
    /// connected to; IPv4-mapped IPv6 addresses are looked up as IPv4) really reached: the
    /// source of its conntrack entry's reply direction when that is not `remote` (a DNAT),
    /// else `None` (no entry, an entry not rewritten, or `local` -> `remote` is the entry's
    /// reply direction). An IPv4 backend is returned as IPv4.
    pub fn backend(
        &mut self,
        proto: Proto,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> io::Result<Option<SocketAddr>> {
        self.stats.lookups += 1;
        let num = match proto {
            Proto::Tcp => libc::IPPROTO_TCP,
            Proto::Udp => libc::IPPROTO_UDP,
        } as u8;
        let (local, remote) = (canonical(local), canonical(remote));
        match self.lookup(num, local, remote) {
            Ok(entry) => {
                let found = entry.and_then(|e| e.backend(local, remote));
                self.stats.found_dnat += u64::from(found.is_some());
                Ok(found)
            }
            Err(e) => {
                self.stats.errors += 1;
                Err(e)
            }
        }
    }

    /// The lookups so far.
    pub fn stats(&self) -> ConntrackStats {
        self.stats
    }

    /// The entry whose tuple in one direction is `src` -> `dst`, if any.
    fn lookup(&mut self, proto: u8, src: SocketAddr, dst: SocketAddr) -> io::Result<Option<Entry>> {
        self.seq = self.seq.wrapping_add(1);
        let req = build_get(self.seq, proto, src, dst).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{src} -> {dst}: addresses of two families"),
            )
        })?;
        self.socket.send(&req)?;
        loop {
            // Replies to earlier requests (a timed-out one) are skipped by sequence number.
            if let Some(answer) = parse_get_reply(self.socket.recv()?, self.seq)? {
                return Ok(answer);
            }
        }
    }
}

/// IPv4-mapped IPv6 as IPv4 (the kernel tracks those connections as IPv4); scope and flow
/// label dropped (conntrack has neither).
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// One direction of a conntrack entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tuple {
    pub(crate) src: SocketAddr,
    pub(crate) dst: SocketAddr,
}

/// What a GET found: the entry's two directions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) orig: Tuple,
    pub(crate) reply: Tuple,
}

impl Entry {
    /// The backend of a connection from `local` to `remote`, if this entry rewrote its
    /// destination: only when `local` -> `remote` is the entry's original direction (the GET
    /// also finds an entry by its reply direction: then the peer started the connection).
    pub(crate) fn backend(&self, local: SocketAddr, remote: SocketAddr) -> Option<SocketAddr> {
        let ours = self.orig.src == local && self.orig.dst == remote;
        (ours && self.reply.src != remote).then_some(self.reply.src)
    }
}

/// A `IPCTNL_MSG_CT_GET` request for the entry whose tuple is `src` -> `dst` (`proto`: an
/// IPPROTO number), or `None` when the addresses are of two families.
pub(crate) fn build_get(seq: u32, proto: u8, src: SocketAddr, dst: SocketAddr) -> Option<Vec<u8>> {
    let family = match (src.ip(), dst.ip()) {
        (IpAddr::V4(_), IpAddr::V4(_)) => libc::AF_INET,
        (IpAddr::V6(_), IpAddr::V6(_)) => libc::AF_INET6,
        _ => return None,
    } as u8;
    let ty = NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_GET;
    let msg = MessageBuilder::new(ty, NLM_F_REQUEST, seq)
        .bytes(&[family, NFNETLINK_V0, 0, 0])
        .nested(CTA_TUPLE_ORIG, |b| tuple_attrs(b, proto, src, dst));
    Some(msg.finish())
}

/// The attributes of a tuple (`CTA_TUPLE_IP`, `CTA_TUPLE_PROTO`), as the kernel writes them.
pub(crate) fn tuple_attrs(
    b: MessageBuilder,
    proto: u8,
    src: SocketAddr,
    dst: SocketAddr,
) -> MessageBuilder {
    b.nested(CTA_TUPLE_IP, |b| match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => b
            .attr(CTA_IP_V4_SRC, &s.octets())
            .attr(CTA_IP_V4_DST, &d.octets()),
        (s, d) => b
            .attr(CTA_IP_V6_SRC, &v6_octets(s))
            .attr(CTA_IP_V6_DST, &v6_octets(d)),
    })
    .nested(CTA_TUPLE_PROTO, |b| {
        b.attr(CTA_PROTO_NUM, &[proto])
            .attr(CTA_PROTO_SRC_PORT, &src.port().to_be_bytes())
            .attr(CTA_PROTO_DST_PORT, &dst.port().to_be_bytes())
    })
}

fn v6_octets(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// Reads one datagram of the reply to GET request `seq`: `Ok(None)` when it holds no message
/// of that request (read the next one), `Ok(Some(None))` when the kernel has no such entry
/// (`ENOENT`), `Ok(Some(Some(entry)))` for the entry; an error for another errno or a
/// malformed entry.
pub(crate) fn parse_get_reply(buf: &[u8], seq: u32) -> Result<Option<Option<Entry>>, NlError> {
    for msg in messages(buf) {
        let msg = msg?;
        if msg.seq != seq {
            continue;
        }
        match msg.ty {
            NLMSG_ERROR => match error_errno(msg.payload)? {
                // An acknowledgement (none is asked for): the entry, if any, came before it.
                0 => {}
                libc::ENOENT => return Ok(Some(None)),
                errno => return Err(NlError::Kernel { errno }),
            },
            NLMSG_OVERRUN => return Err(NlError::Overrun),
            ty if ty == NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_NEW => {
                return parse_entry(msg.payload).map(|e| Some(Some(e)));
            }
            _ => {}
        }
    }
    Ok(None)
}

/// An entry message's payload: `nfgenmsg`, then the attributes, of which the two tuples are
/// read.
fn parse_entry(payload: &[u8]) -> Result<Entry, NlError> {
    let attrs = payload.get(NFGENMSG_LEN..).ok_or(NlError::Truncated {
        what: "nfgenmsg",
        need: NFGENMSG_LEN,
        have: payload.len(),
    })?;
    let tuple = |ty, what| -> Result<Tuple, NlError> {
        parse_tuple(find_attribute(attrs, ty)?.ok_or(NlError::Missing(what))?)
    };
    Ok(Entry {
        orig: tuple(CTA_TUPLE_ORIG, "CTA_TUPLE_ORIG")?,
        reply: tuple(CTA_TUPLE_REPLY, "CTA_TUPLE_REPLY")?,
    })
}

/// A tuple's addresses and ports (TCP and UDP tuples have both).
fn parse_tuple(data: &[u8]) -> Result<Tuple, NlError> {
    let ip = find_attribute(data, CTA_TUPLE_IP)?.ok_or(NlError::Missing("CTA_TUPLE_IP"))?;
    let proto =
        find_attribute(data, CTA_TUPLE_PROTO)?.ok_or(NlError::Missing("CTA_TUPLE_PROTO"))?;
    let (mut src, mut dst) = (None, None);
    for attr in attributes(ip) {
        let (ty, value) = attr?;
        let addr = match ty {
            CTA_IP_V4_SRC | CTA_IP_V4_DST => <[u8; 4]>::try_from(value)
                .map(|b| IpAddr::V4(Ipv4Addr::from(b)))
                .map_err(|_| NlError::Truncated {
                    what: "CTA_IP_V4 address",
                    need: 4,
                    have: value.len(),
                })?,
            CTA_IP_V6_SRC | CTA_IP_V6_DST => <[u8; 16]>::try_from(value)
                .map(|b| IpAddr::V6(Ipv6Addr::from(b)))
                .map_err(|_| NlError::Truncated {
                    what: "CTA_IP_V6 address",
                    need: 16,
                    have: value.len(),
                })?,
            _ => continue,
        };
        match ty {
            CTA_IP_V4_SRC | CTA_IP_V6_SRC => src = Some(addr),
            _ => dst = Some(addr),
        }
    }
    let port = |ty, what| -> Result<u16, NlError> {
        let value = find_attribute(proto, ty)?.ok_or(NlError::Missing(what))?;
        rd_u16_be(value, 0).ok_or(NlError::Truncated {
            what,
            need: 2,
            have: value.len(),
        })
    };
    Ok(Tuple {
        src: SocketAddr::new(
            src.ok_or(NlError::Missing("source address"))
                .map(|ip| ip.to_canonical())?,
            port(CTA_PROTO_SRC_PORT, "CTA_PROTO_SRC_PORT")?,
        ),
        dst: SocketAddr::new(
            dst.ok_or(NlError::Missing("destination address"))
                .map(|ip| ip.to_canonical())?,
            port(CTA_PROTO_DST_PORT, "CTA_PROTO_DST_PORT")?,
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: u8 = libc::IPPROTO_TCP as u8;
    const NEW: u16 = NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_NEW;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// An entry message as the kernel sends it (tuples, then other attributes).
    fn entry_msg(
        seq: u32,
        orig: (SocketAddr, SocketAddr),
        reply: (SocketAddr, SocketAddr),
    ) -> Vec<u8> {
        let family = if orig.0.is_ipv4() { 2 } else { 10 };
        MessageBuilder::new(NEW, 0, seq)
            .bytes(&[family, 0, 0, 0])
            .nested(CTA_TUPLE_ORIG, |b| tuple_attrs(b, TCP, orig.0, orig.1))
            .nested(CTA_TUPLE_REPLY, |b| tuple_attrs(b, TCP, reply.0, reply.1))
            .attr(3, &0x18eu32.to_be_bytes()) // CTA_STATUS
            .attr(7, &120u32.to_be_bytes()) // CTA_TIMEOUT
            .finish()
    }

    fn error_msg(seq: u32, errno: i32) -> Vec<u8> {
        MessageBuilder::new(NLMSG_ERROR, 0, seq)
            .bytes(&(-errno).to_ne_bytes())
            .bytes(&[0; NLMSG_HDRLEN])
            .finish()
    }

    const POD: &str = "10.244.1.5:43210";
    const VIP: &str = "10.96.0.10:80";
    const BACKEND: &str = "10.244.2.7:8080";

    fn dnat_entry(seq: u32) -> Vec<u8> {
        entry_msg(seq, (sa(POD), sa(VIP)), (sa(BACKEND), sa(POD)))
    }

    #[test]
    fn the_request_holds_the_original_tuple() {
        let req = build_get(5, TCP, sa(POD), sa(VIP)).unwrap();
        let msg = messages(&req).next().unwrap().unwrap();
        assert_eq!((msg.ty, msg.seq), (0x101, 5));
        assert_eq!(rd_u16_ne(&req, 6), Some(NLM_F_REQUEST), "no dump, no ack");
        assert_eq!(&msg.payload[..4], &[2, 0, 0, 0], "AF_INET, NFNETLINK_V0");
        let orig = find_attribute(&msg.payload[4..], CTA_TUPLE_ORIG)
            .unwrap()
            .unwrap();
        let ip = find_attribute(orig, CTA_TUPLE_IP).unwrap().unwrap();
        let attrs: Vec<_> = attributes(ip).map(Result::unwrap).collect();
        assert_eq!(
            attrs,
            [(1, &[10, 244, 1, 5][..]), (2, &[10, 96, 0, 10][..])]
        );
        let proto = find_attribute(orig, CTA_TUPLE_PROTO).unwrap().unwrap();
        let attrs: Vec<_> = attributes(proto).map(Result::unwrap).collect();
        assert_eq!(
            attrs,
            [
                (1, &[6][..]),
                (2, &43210u16.to_be_bytes()[..]),
                (3, &[0, 80][..])
            ]
        );
        let v6 = build_get(1, 17, sa("[fd00::5]:1"), sa("[fd00::10]:53")).unwrap();
        let msg = messages(&v6).next().unwrap().unwrap();
        assert_eq!(msg.payload[0], 10);
        let orig = find_attribute(&msg.payload[4..], CTA_TUPLE_ORIG)
            .unwrap()
            .unwrap();
        let ip = find_attribute(orig, CTA_TUPLE_IP).unwrap().unwrap();
        assert_eq!(
            find_attribute(ip, CTA_IP_V6_DST).unwrap().unwrap().len(),
            16
        );
        assert!(build_get(1, TCP, sa(POD), sa("[fd00::10]:53")).is_none());
    }

    #[test]
    fn a_dnat_entry_gives_the_backend() {
        let entry = parse_get_reply(&dnat_entry(3), 3)
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(
            entry.orig,
            Tuple {
                src: sa(POD),
                dst: sa(VIP)
            }
        );
        assert_eq!(
            entry.reply,
            Tuple {
                src: sa(BACKEND),
                dst: sa(POD)
            }
        );
        assert_eq!(entry.backend(sa(POD), sa(VIP)), Some(sa(BACKEND)));
        // Only the port rewritten is a DNAT too.
        let port_only = entry_msg(1, (sa(POD), sa(VIP)), (sa("10.96.0.10:8080"), sa(POD)));
        let entry = parse_get_reply(&port_only, 1).unwrap().unwrap().unwrap();
        assert_eq!(entry.backend(sa(POD), sa(VIP)), Some(sa("10.96.0.10:8080")));
    }

    #[test]
    fn entries_not_rewritten_or_found_by_their_reply_give_none() {
        let plain = entry_msg(1, (sa(POD), sa(BACKEND)), (sa(BACKEND), sa(POD)));
        let entry = parse_get_reply(&plain, 1).unwrap().unwrap().unwrap();
        assert_eq!(entry.backend(sa(POD), sa(BACKEND)), None);
        // SNAT only (masquerade): the reply comes from the destination, to another address.
        let snat = entry_msg(
            1,
            (sa(POD), sa(BACKEND)),
            (sa(BACKEND), sa("192.0.2.1:1024")),
        );
        let entry = parse_get_reply(&snat, 1).unwrap().unwrap().unwrap();
        assert_eq!(entry.backend(sa(POD), sa(BACKEND)), None);
        // The GET matched the entry's reply direction: the backend's connection to the pod.
        let entry = parse_get_reply(&dnat_entry(1), 1)
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(entry.backend(sa(BACKEND), sa(POD)), None);
    }

    #[test]
    fn ipv6_and_mapped_addresses() {
        let (pod, vip, be) = (
            sa("[fd00:1::5]:40000"),
            sa("[fd00:96::10]:80"),
            sa("[fd00:2::7]:8080"),
        );
        let entry = parse_get_reply(&entry_msg(2, (pod, vip), (be, pod)), 2)
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(entry.backend(pod, vip), Some(be));
        // A v4-mapped address inside a v6 attribute reads as IPv4, as the sockets' do.
        let mapped = sa("[::ffff:10.244.2.7]:8080");
        let entry = parse_get_reply(&entry_msg(2, (pod, vip), (mapped, pod)), 2)
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(entry.reply.src, sa(BACKEND));
        assert_eq!(canonical(sa("[::ffff:10.96.0.10]:80")), sa(VIP));
        let scoped: SocketAddr = "[fe80::1%3]:80".parse().unwrap();
        assert_eq!(canonical(scoped), sa("[fe80::1]:80"));
    }

    #[test]
    fn errors_and_other_requests() {
        assert!(matches!(
            parse_get_reply(&error_msg(4, libc::ENOENT), 4),
            Ok(Some(None))
        ));
        let e = parse_get_reply(&error_msg(4, libc::EPERM), 4).unwrap_err();
        assert!(
            matches!(e, NlError::Kernel { errno } if errno == libc::EPERM),
            "{e}"
        );
        assert_eq!(io::Error::from(e).raw_os_error(), Some(libc::EPERM));
        // Another request's reply (a timed-out one), then ours, in one datagram.
        let mut two = dnat_entry(8);
        two.extend(error_msg(9, libc::ENOENT));
        assert!(matches!(parse_get_reply(&two, 9), Ok(Some(None))));
        assert!(matches!(
            parse_get_reply(&two[..dnat_entry(8).len()], 9),
            Ok(None)
        ));
        // An acknowledgement alone: keep reading.
        assert!(matches!(parse_get_reply(&error_msg(9, 0), 9), Ok(None)));
        let noop = MessageBuilder::new(NLMSG_NOOP, 0, 9).finish();
        assert!(matches!(parse_get_reply(&noop, 9), Ok(None)));
        assert!(matches!(parse_get_reply(&[], 9), Ok(None)));
    }

    #[test]
    fn malformed_entries_are_errors() {
        let missing = |e: Result<Option<Option<Entry>>, NlError>| match e {
            Err(NlError::Missing(what)) => what,
            other => panic!("{other:?}"),
        };
        // No reply tuple.
        let m = MessageBuilder::new(NEW, 0, 1)
            .bytes(&[2, 0, 0, 0])
            .nested(CTA_TUPLE_ORIG, |b| tuple_attrs(b, TCP, sa(POD), sa(VIP)))
            .finish();
        assert_eq!(missing(parse_get_reply(&m, 1)), "CTA_TUPLE_REPLY");
        // A reply tuple without ports (an ICMP-like tuple).
        let m = MessageBuilder::new(NEW, 0, 1)
            .bytes(&[2, 0, 0, 0])
            .nested(CTA_TUPLE_ORIG, |b| tuple_attrs(b, TCP, sa(POD), sa(VIP)))
            .nested(CTA_TUPLE_REPLY, |b| {
                b.nested(CTA_TUPLE_IP, |b| {
                    b.attr(CTA_IP_V4_SRC, &[1; 4]).attr(CTA_IP_V4_DST, &[2; 4])
                })
                .nested(CTA_TUPLE_PROTO, |b| b.attr(CTA_PROTO_NUM, &[1]))
            })
            .finish();
        assert_eq!(missing(parse_get_reply(&m, 1)), "CTA_PROTO_SRC_PORT");
        // A short address, a short port.
        let m = MessageBuilder::new(NEW, 0, 1)
            .bytes(&[2, 0, 0, 0])
            .nested(CTA_TUPLE_ORIG, |b| {
                b.nested(CTA_TUPLE_IP, |b| b.attr(CTA_IP_V4_SRC, &[1; 3]))
                    .nested(CTA_TUPLE_PROTO, |b| b.attr(CTA_PROTO_SRC_PORT, &[1]))
            })
            .finish();
        assert!(matches!(
            parse_get_reply(&m, 1),
            Err(NlError::Truncated {
                what: "CTA_IP_V4 address",
                need: 4,
                have: 3
            })
        ));
        // No nfgenmsg.
        let m = MessageBuilder::new(NEW, 0, 1).bytes(&[2, 0]).finish();
        assert!(parse_get_reply(&m[..18], 1).is_err());
        // An attribute longer than its message.
        let mut m = dnat_entry(1);
        m[NLMSG_HDRLEN + NFGENMSG_LEN..][..2].copy_from_slice(&1000u16.to_ne_bytes());
        assert!(matches!(
            parse_get_reply(&m, 1),
            Err(NlError::BadAttr { len: 1000, .. })
        ));
    }

    #[test]
    fn never_panics_on_mangled_replies() {
        let good = dnat_entry(7);
        for cut in 0..=good.len() {
            let r = parse_get_reply(&good[..cut], 7);
            if cut < good.len() {
                assert!(!matches!(r, Ok(Some(Some(_)))), "cut at {cut}: {r:?}");
            }
        }
        for i in 0..good.len() {
            for v in [0u8, 1, 3, 4, 0x7f, 0x80, 0xff] {
                let mut m = good.clone();
                m[i] = v;
                let _ = parse_get_reply(&m, 7);
            }
        }
    }

    /// The real kernel, in the test's own network namespace: the lookup of a connection that
    /// does not exist answers "no entry" (with CAP_NET_ADMIN), and the counters count it.
    #[test]
    fn the_kernel_answers_a_lookup() {
        if !crate::root_or_skip("the_kernel_answers_a_lookup") {
            return;
        }
        let mut ct = Conntrack::open().unwrap();
        let got = ct.backend(Proto::Udp, sa("[::ffff:127.0.0.1]:9"), sa("127.0.0.1:9"));
        assert_eq!(got.unwrap(), None);
        let got = ct.backend(Proto::Tcp, sa("127.0.0.1:9"), sa("[::1]:9"));
        assert_eq!(got.unwrap_err().kind(), io::ErrorKind::InvalidInput);
        assert_eq!(
            ct.stats(),
            ConntrackStats {
                lookups: 2,
                found_dnat: 0,
                errors: 1
            }
        );
    }
}

//! Netlink by hand, shared by the start-up scan (sock_diag, `seed`) and the conntrack lookups
//! (ctnetlink, `conntrack`): the socket, message and attribute framing (pure, bounds-checked:
//! kernel data is validated, never trusted, and never makes a reader panic), a message builder.

use std::io;
use std::mem;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

// ---------------------------------------------------------------------------------------------
// Kernel ABI constants (linux/netlink.h).

pub(crate) const NLMSG_HDRLEN: usize = 16;
pub(crate) const NLMSG_NOOP: u16 = 1;
pub(crate) const NLMSG_ERROR: u16 = 2;
pub(crate) const NLMSG_DONE: u16 = 3;
pub(crate) const NLMSG_OVERRUN: u16 = 4;
pub(crate) const NLM_F_REQUEST: u16 = 0x1;
pub(crate) const NLM_F_DUMP: u16 = 0x300;
pub(crate) const RTA_HDRLEN: usize = 4;
/// `NLA_F_NESTED`: set on attributes that hold attributes.
pub(crate) const NLA_F_NESTED: u16 = 0x8000;
/// `NLA_TYPE_MASK`: strips `NLA_F_NESTED` and `NLA_F_NET_BYTEORDER`.
pub(crate) const NLA_TYPE_MASK: u16 = 0x3fff;

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
    #[error("{0} missing from the reply")]
    Missing(&'static str),
    #[error("datagram of {size} bytes does not fit the receive buffer")]
    DatagramTooLarge { size: usize },
    #[error("{0}")]
    Io(#[from] io::Error),
}

impl From<NlError> for io::Error {
    fn from(e: NlError) -> io::Error {
        match e {
            NlError::Io(e) => e,
            NlError::Kernel { errno } => io::Error::from_raw_os_error(errno),
            other => io::Error::new(io::ErrorKind::InvalidData, other.to_string()),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Bounded reads.

pub(crate) fn rd_u16_ne(b: &[u8], off: usize) -> Option<u16> {
    b.get(off..off.checked_add(2)?)?
        .try_into()
        .ok()
        .map(u16::from_ne_bytes)
}

pub(crate) fn rd_u16_be(b: &[u8], off: usize) -> Option<u16> {
    b.get(off..off.checked_add(2)?)?
        .try_into()
        .ok()
        .map(u16::from_be_bytes)
}

pub(crate) fn rd_u32_ne(b: &[u8], off: usize) -> Option<u32> {
    b.get(off..off.checked_add(4)?)?
        .try_into()
        .ok()
        .map(u32::from_ne_bytes)
}

pub(crate) fn rd_u64_ne(b: &[u8], off: usize) -> Option<u64> {
    b.get(off..off.checked_add(8)?)?
        .try_into()
        .ok()
        .map(u64::from_ne_bytes)
}

pub(crate) fn rd_i32_ne(b: &[u8], off: usize) -> Option<i32> {
    rd_u32_ne(b, off).map(|v| v as i32)
}

/// `NLMSG_ALIGN` / `RTA_ALIGN`, saturating.
pub(crate) fn align4(len: usize) -> usize {
    len.saturating_add(3) & !3
}

// ---------------------------------------------------------------------------------------------
// Framing.

/// One netlink message of a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Message<'a> {
    /// `nlmsg_type`.
    pub(crate) ty: u16,
    /// `nlmsg_seq`.
    pub(crate) seq: u32,
    /// What follows the header, up to `nlmsg_len`.
    pub(crate) payload: &'a [u8],
}

/// The messages of a datagram, each `nlmsg_len` checked against the header size and the bytes
/// left; the first bad one is an error and ends the iteration.
pub(crate) fn messages(buf: &[u8]) -> Messages<'_> {
    Messages { rest: buf }
}

/// Iterator of [`messages`].
pub(crate) struct Messages<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Messages<'a> {
    type Item = Result<Message<'a>, NlError>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.rest;
        if rest.is_empty() {
            return None;
        }
        let truncated = |need| NlError::Truncated {
            what: "netlink message",
            need,
            have: rest.len(),
        };
        let (Some(len), Some(ty), Some(seq)) =
            (rd_u32_ne(rest, 0), rd_u16_ne(rest, 4), rd_u32_ne(rest, 8))
        else {
            self.rest = &[];
            return Some(Err(truncated(NLMSG_HDRLEN)));
        };
        let len = len as usize;
        if len < NLMSG_HDRLEN || len > rest.len() {
            self.rest = &[];
            return Some(Err(truncated(len.max(NLMSG_HDRLEN))));
        }
        self.rest = &rest[align4(len).min(rest.len())..];
        Some(Ok(Message {
            ty,
            seq,
            payload: &rest[NLMSG_HDRLEN..len],
        }))
    }
}

/// The errno of an `NLMSG_ERROR` payload, positive (0: an acknowledgement).
pub(crate) fn error_errno(payload: &[u8]) -> Result<i32, NlError> {
    rd_i32_ne(payload, 0)
        .map(i32::saturating_neg)
        .ok_or(NlError::Truncated {
            what: "NLMSG_ERROR",
            need: 4,
            have: payload.len(),
        })
}

/// The attributes of `buf` as (type without the flag bits, data), each `rta_len` checked; the
/// first bad one is an error and ends the iteration. Fewer than [`RTA_HDRLEN`] trailing bytes
/// can only be padding, and end it too.
pub(crate) fn attributes(buf: &[u8]) -> Attributes<'_> {
    Attributes { rest: buf }
}

/// Iterator of [`attributes`].
pub(crate) struct Attributes<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Attributes<'a> {
    type Item = Result<(u16, &'a [u8]), NlError>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.rest;
        if rest.len() < RTA_HDRLEN {
            return None;
        }
        let len = usize::from(rd_u16_ne(rest, 0).unwrap_or(0));
        let ty = rd_u16_ne(rest, 2).unwrap_or(0) & NLA_TYPE_MASK;
        if len < RTA_HDRLEN || len > rest.len() {
            self.rest = &[];
            return Some(Err(NlError::BadAttr {
                len,
                avail: rest.len(),
            }));
        }
        self.rest = &rest[align4(len).min(rest.len())..];
        Some(Ok((ty, &rest[RTA_HDRLEN..len])))
    }
}

/// The data of the first attribute of type `ty` in `buf`, if any (the attributes before it
/// must be well formed).
pub(crate) fn find_attribute(buf: &[u8], ty: u16) -> Result<Option<&[u8]>, NlError> {
    for attr in attributes(buf) {
        let (t, data) = attr?;
        if t == ty {
            return Ok(Some(data));
        }
    }
    Ok(None)
}

/// Builds one netlink message: the header, a fixed payload, attributes (nested ones too); the
/// lengths are written as it goes.
pub(crate) struct MessageBuilder {
    buf: Vec<u8>,
}

impl MessageBuilder {
    /// A message of type `ty` with `flags` and sequence number `seq` (port id 0: the kernel's).
    pub(crate) fn new(ty: u16, flags: u16, seq: u32) -> MessageBuilder {
        let mut buf = Vec::with_capacity(128);
        buf.extend_from_slice(&(NLMSG_HDRLEN as u32).to_ne_bytes());
        buf.extend_from_slice(&ty.to_ne_bytes());
        buf.extend_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(&seq.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes());
        MessageBuilder { buf }
    }

    /// Appends raw bytes (a fixed header such as `nfgenmsg`), padded to 4 bytes.
    pub(crate) fn bytes(mut self, data: &[u8]) -> MessageBuilder {
        self.buf.extend_from_slice(data);
        self.pad();
        self
    }

    /// Appends an attribute.
    pub(crate) fn attr(mut self, ty: u16, data: &[u8]) -> MessageBuilder {
        let len = u16::try_from(RTA_HDRLEN + data.len()).expect("an attribute under 64 KiB");
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.pad();
        self
    }

    /// Appends a nested attribute (`NLA_F_NESTED` set) holding what `inner` appends.
    pub(crate) fn nested(
        mut self,
        ty: u16,
        inner: impl FnOnce(MessageBuilder) -> MessageBuilder,
    ) -> MessageBuilder {
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0, 0]);
        self.buf
            .extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
        let mut this = inner(self);
        let len = u16::try_from(this.buf.len() - start).expect("an attribute under 64 KiB");
        this.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        this
    }

    fn pad(&mut self) {
        self.buf.resize(align4(self.buf.len()), 0);
    }

    /// The message, its `nlmsg_len` set.
    pub(crate) fn finish(mut self) -> Vec<u8> {
        let len = u32::try_from(self.buf.len()).unwrap_or(u32::MAX);
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf
    }
}

// ---------------------------------------------------------------------------------------------
// The socket.

/// A netlink socket of the network namespace it was opened in, talking to the kernel.
pub(crate) struct Socket {
    fd: OwnedFd,
    buf: Vec<u8>,
}

impl Socket {
    /// Opens a `protocol` socket (`NETLINK_SOCK_DIAG`, `NETLINK_NETFILTER`) whose receives give
    /// up after `recv_timeout`, with a receive buffer of `buf_len` bytes.
    pub(crate) fn open(
        protocol: libc::c_int,
        recv_timeout: Duration,
        buf_len: usize,
    ) -> io::Result<Socket> {
        // SAFETY: plain syscall; the returned fd is owned below.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                protocol,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh fd nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let tv = libc::timeval {
            tv_sec: recv_timeout.as_secs() as libc::time_t,
            tv_usec: recv_timeout.subsec_micros() as libc::suseconds_t,
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
        Ok(Socket {
            fd,
            buf: vec![0; buf_len],
        })
    }

    /// Sends one request to the kernel.
    pub(crate) fn send(&self, req: &[u8]) -> Result<(), NlError> {
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
            return Err(io::Error::other("short send of a netlink request").into());
        }
        Ok(())
    }

    /// The next datagram from the kernel (others are skipped); an error when none comes within
    /// the receive timeout or it does not fit the buffer.
    pub(crate) fn recv(&mut self) -> Result<&[u8], NlError> {
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
            return Ok(&self.buf[..n]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builder_lays_out_header_payload_and_nested_attributes() {
        let m = MessageBuilder::new(0x101, NLM_F_REQUEST, 9)
            .bytes(&[2, 0, 0, 0])
            .nested(1, |b| b.attr(2, &[1, 2, 3]).attr(3, &[]))
            .finish();
        assert_eq!(m.len(), 16 + 4 + 4 + 8 + 4);
        assert_eq!(rd_u32_ne(&m, 0), Some(m.len() as u32));
        assert_eq!(rd_u16_ne(&m, 4), Some(0x101));
        assert_eq!(rd_u16_ne(&m, 6), Some(NLM_F_REQUEST));
        assert_eq!(rd_u32_ne(&m, 8), Some(9));
        let msg = messages(&m).next().unwrap().unwrap();
        assert_eq!((msg.ty, msg.seq), (0x101, 9));
        assert_eq!(rd_u16_ne(msg.payload, 6), Some(1 | NLA_F_NESTED));
        let outer: Vec<_> = attributes(&msg.payload[4..])
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(outer.len(), 1);
        assert_eq!(outer[0].0, 1, "the nested flag is masked");
        let inner: Vec<_> = attributes(outer[0].1).collect::<Result<_, _>>().unwrap();
        assert_eq!(inner, vec![(2, &[1u8, 2, 3][..]), (3, &[][..])]);
    }

    #[test]
    fn framing_errors_end_the_iteration() {
        let m = MessageBuilder::new(3, 0, 1).bytes(&[0; 4]).finish();
        let mut two = m.clone();
        two.extend_from_slice(&m[..10]);
        let got: Vec<_> = messages(&two).collect();
        assert_eq!(got.len(), 2);
        assert!(got[0].is_ok());
        assert!(matches!(got[1], Err(NlError::Truncated { need: 16, .. })));
        let mut long = m.clone();
        long[0..4].copy_from_slice(&100u32.to_ne_bytes());
        let got: Vec<_> = messages(&long).collect();
        assert!(matches!(
            got[..],
            [Err(NlError::Truncated { need: 100, .. })]
        ));
        let attrs = [8u8, 0, 1, 0, 0, 0];
        let got: Vec<_> = attributes(&attrs).collect();
        assert!(matches!(
            got[..],
            [Err(NlError::BadAttr { len: 8, avail: 6 })]
        ));
        assert_eq!(attributes(&[1, 2, 3]).count(), 0, "padding");
        assert_eq!(error_errno(&(-5i32).to_ne_bytes()).unwrap(), 5);
        assert!(error_errno(&[1]).is_err());
    }
}

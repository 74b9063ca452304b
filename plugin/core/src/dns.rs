//! DNS messages as a container's sockets carry them (a UDP datagram's payload, possibly cut
//! short by the capture): the header, the question, and the answers that map a name to an
//! address (A, AAAA) or to another name (CNAME). Anyone writes these bytes (any pod, any
//! resolver, anyone who can send a datagram to a pod): every read is bounds-checked, a
//! compression pointer must point before every label read so far (so no loop, however crafted),
//! a name is at most 255 bytes on the wire, and names come out lowercased in presentation form
//! with every byte but `a-z`, `0-9`, `-`, `_` and `*` written `\DDD` (RFC 1035 section 5.1), so
//! that line protocol carries any name unchanged as a tag value.
#![forbid(unsafe_code)]

use std::net::{Ipv4Addr, Ipv6Addr};

/// The most answers a message gives (the rest are skipped, and the message is not `complete`).
pub const MAX_ANSWERS: usize = 32;

/// The longest name on the wire (RFC 1035 section 2.3.4), its length octets included.
const MAX_WIRE_NAME: usize = 255;

/// Record types (RFC 1035, RFC 3596).
pub mod rtype {
    /// An IPv4 address.
    pub const A: u16 = 1;
    /// The canonical name of an alias.
    pub const CNAME: u16 = 5;
    /// An IPv6 address.
    pub const AAAA: u16 = 28;
}

/// Response codes (RFC 1035 section 4.1.1).
pub mod rcode {
    /// No error.
    pub const NOERROR: u8 = 0;
    /// The server failed.
    pub const SERVFAIL: u8 = 2;
    /// The name does not exist.
    pub const NXDOMAIN: u8 = 3;
}

/// The class of Internet records.
const CLASS_IN: u16 = 1;

/// A DNS message, as far as flowlens reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The query's id, which its answer repeats.
    pub id: u16,
    /// A response (QR set), else a query.
    pub response: bool,
    /// The kind of query (0: a standard query).
    pub opcode: u8,
    /// The server cut the answer short (TC): the client asks again over TCP.
    pub truncated: bool,
    /// The response code (4 bits; [`rcode`]).
    pub rcode: u8,
    /// The first question; `None` when the message has none.
    pub question: Option<Question>,
    /// The answers of class IN that map a name to an address or to another name, in order.
    pub answers: Vec<Answer>,
    /// Every question and answer record the header announces was read (false: the datagram
    /// was cut short, a record was malformed, or there were more than [`MAX_ANSWERS`]).
    pub complete: bool,
}

/// What a message asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    /// The name asked, in presentation form (lowercase, escaped, no final dot; `.` for the
    /// root).
    pub name: String,
    /// The record type asked ([`rtype`]).
    pub qtype: u16,
}

/// One answer record that flowlens keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The name the record is for, in presentation form.
    pub name: String,
    /// How long the answer may be kept, in seconds (values above 2^31 - 1 read as 0, RFC 2181
    /// section 8).
    pub ttl: u32,
    /// What the name maps to.
    pub data: Rdata,
}

/// What an answer maps its name to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rdata {
    /// An IPv4 address (type A).
    A(Ipv4Addr),
    /// An IPv6 address (type AAAA).
    Aaaa(Ipv6Addr),
    /// Another name, the canonical one (type CNAME).
    Cname(String),
}

/// The message in `bytes`; `None` when they do not hold a header and its first question.
pub fn parse(bytes: &[u8]) -> Option<Message> {
    let header = bytes.get(..12)?;
    let be16 = |at: usize| u16::from_be_bytes([header[at], header[at + 1]]);
    let flags = be16(2);
    let (qdcount, ancount) = (be16(4), be16(6));
    let mut message = Message {
        id: be16(0),
        response: flags & 0x8000 != 0,
        opcode: ((flags >> 11) & 0xf) as u8,
        truncated: flags & 0x0200 != 0,
        rcode: (flags & 0xf) as u8,
        question: None,
        answers: Vec::new(),
        complete: false,
    };
    let mut at = 12;
    for i in 0..qdcount {
        let Some((name, next)) = read_name(bytes, at) else {
            return (i > 0).then_some(message);
        };
        let Some(fixed) = bytes.get(next..next + 4) else {
            return (i > 0).then_some(message);
        };
        if i == 0 {
            message.question = Some(Question {
                name,
                qtype: u16::from_be_bytes([fixed[0], fixed[1]]),
            });
        }
        at = next + 4;
    }
    for _ in 0..ancount {
        let Some((record, next)) = read_record(bytes, at) else {
            return Some(message);
        };
        at = next;
        if let Some(answer) = record {
            if message.answers.len() == MAX_ANSWERS {
                return Some(message);
            }
            message.answers.push(answer);
        }
    }
    message.complete = true;
    Some(message)
}

/// The resource record at `at`: the answer it is when flowlens keeps it, and where the next
/// record starts; `None` when it is cut short or malformed.
fn read_record(bytes: &[u8], at: usize) -> Option<(Option<Answer>, usize)> {
    let (name, at) = read_name(bytes, at)?;
    let fixed = bytes.get(at..at + 10)?;
    let be16 = |i: usize| u16::from_be_bytes([fixed[i], fixed[i + 1]]);
    let (rtype, class) = (be16(0), be16(2));
    let ttl = u32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]);
    let ttl = if ttl > i32::MAX as u32 { 0 } else { ttl };
    let rdlength = usize::from(be16(8));
    let start = at + 10;
    let end = start + rdlength;
    let rdata = bytes.get(start..end)?;
    let data = match (class, rtype, rdata.len()) {
        (CLASS_IN, rtype::A, 4) => Some(Rdata::A(Ipv4Addr::new(
            rdata[0], rdata[1], rdata[2], rdata[3],
        ))),
        (CLASS_IN, rtype::AAAA, 16) => {
            let octets: [u8; 16] = rdata.try_into().ok()?;
            Some(Rdata::Aaaa(Ipv6Addr::from(octets)))
        }
        (CLASS_IN, rtype::CNAME, _) => {
            // The name must end inside the record's data (its pointer may lead before it).
            let (target, after) = read_name(bytes, start)?;
            if after != end {
                return None;
            }
            Some(Rdata::Cname(target))
        }
        (CLASS_IN, rtype::A | rtype::AAAA, _) => return None,
        _ => None,
    };
    Some((data.map(|data| Answer { name, ttl, data }), end))
}

/// The name at `at` in presentation form and the offset after it (after its first pointer, when
/// it has one); `None` when it is cut short, longer than 255 bytes on the wire, uses a label
/// type other than a plain label or a pointer, or has a pointer that does not point before
/// every label read so far (which rules out loops).
fn read_name(bytes: &[u8], at: usize) -> Option<(String, usize)> {
    let mut name = String::new();
    let mut pos = at;
    // Every pointer must lead before this: the start of the labels read so far.
    let mut floor = at;
    let mut after = None;
    let mut wire = 0;
    loop {
        let len = *bytes.get(pos)?;
        match len & 0xc0 {
            0x00 if len == 0 => {
                if wire + 1 > MAX_WIRE_NAME {
                    return None;
                }
                if name.is_empty() {
                    name.push('.');
                }
                return Some((name, after.unwrap_or(pos + 1)));
            }
            0x00 => {
                let len = usize::from(len);
                wire += 1 + len;
                if wire + 1 > MAX_WIRE_NAME {
                    return None;
                }
                let label = bytes.get(pos + 1..pos + 1 + len)?;
                if !name.is_empty() {
                    name.push('.');
                }
                push_label(&mut name, label);
                pos += 1 + len;
            }
            0xc0 => {
                let low = *bytes.get(pos + 1)?;
                let target = usize::from(len & 0x3f) << 8 | usize::from(low);
                if target >= floor {
                    return None;
                }
                after.get_or_insert(pos + 2);
                floor = target;
                pos = target;
            }
            // 0x40 (extended label types, RFC 6891) and 0x80 (reserved)
            _ => return None,
        }
    }
}

/// Appends a label's bytes, lowercased, with every byte but `a-z`, `0-9`, `-`, `_` and `*`
/// as `\DDD`.
fn push_label(name: &mut String, label: &[u8]) {
    for &b in label {
        let b = b.to_ascii_lowercase();
        if b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'*') {
            name.push(char::from(b));
        } else {
            name.push('\\');
            name.push(char::from(b'0' + b / 100));
            name.push(char::from(b'0' + b / 10 % 10));
            name.push(char::from(b'0' + b % 10));
        }
    }
}

#[cfg(test)]
mod tests;

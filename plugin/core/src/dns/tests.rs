//! The DNS parser against messages built here byte by byte: queries, answers with CNAME chains,
//! compression, and the hostile shapes (loops, forward pointers, cut records, long names).

use super::*;

/// A message under construction: the header, then sections appended as raw bytes.
struct Msg(Vec<u8>);

impl Msg {
    fn new(id: u16, flags: u16, qd: u16, an: u16) -> Msg {
        let mut b = Vec::new();
        for v in [id, flags, qd, an, 0, 0] {
            b.extend_from_slice(&v.to_be_bytes());
        }
        Msg(b)
    }

    /// Offset of the next byte (a pointer's target).
    fn here(&self) -> u16 {
        self.0.len() as u16
    }

    /// A name as labels, ending with the root.
    fn name(mut self, labels: &[&[u8]]) -> Msg {
        for l in labels {
            self.0.push(l.len() as u8);
            self.0.extend_from_slice(l);
        }
        self.0.push(0);
        self
    }

    /// Labels, then a pointer to `to`.
    fn name_then(mut self, labels: &[&[u8]], to: u16) -> Msg {
        for l in labels {
            self.0.push(l.len() as u8);
            self.0.extend_from_slice(l);
        }
        self.0.extend_from_slice(&(0xc000 | to).to_be_bytes());
        self
    }

    fn u16(mut self, v: u16) -> Msg {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    fn bytes(mut self, v: &[u8]) -> Msg {
        self.0.extend_from_slice(v);
        self
    }

    /// Type, class IN, TTL and the data (after the owner name).
    fn record(self, rtype: u16, ttl: u32, data: &[u8]) -> Msg {
        self.u16(rtype)
            .u16(1)
            .bytes(&ttl.to_be_bytes())
            .u16(data.len() as u16)
            .bytes(data)
    }
}

#[test]
fn a_query_gives_its_id_name_and_type() {
    let m = Msg::new(0x1234, 0x0100, 1, 0)
        .name(&[b"DB", b"Shop", b"svc", b"cluster", b"local"])
        .u16(rtype::A)
        .u16(1);
    let got = parse(&m.0).unwrap();
    assert_eq!(got.id, 0x1234);
    assert!(!got.response && !got.truncated && got.complete);
    assert_eq!(got.opcode, 0);
    assert_eq!(
        got.question,
        Some(Question {
            name: "db.shop.svc.cluster.local".into(),
            qtype: rtype::A
        })
    );
    assert!(got.answers.is_empty());
}

#[test]
fn an_answer_with_a_cname_chain_and_compression_gives_every_record() {
    let q = 12;
    let m = Msg::new(7, 0x8180, 1, 4)
        .name(&[b"api", b"example", b"com"])
        .u16(rtype::A)
        .u16(1);
    // api.example.com CNAME edge.cdn.net (the CNAME's data: labels then the root)
    let mut cname = vec![4];
    cname.extend_from_slice(b"edge");
    cname.push(3);
    cname.extend_from_slice(b"cdn");
    cname.push(3);
    cname.extend_from_slice(b"net");
    cname.push(0);
    let m = m.u16(0xc000 | q).record(rtype::CNAME, 300, &cname);
    let edge = q + 4 + 17 + 2 + 10; // where the CNAME's data starts
    let m = m
        .u16(0xc000 | edge)
        .record(rtype::A, 60, &[52, 84, 20, 117])
        .u16(0xc000 | edge)
        .record(
            rtype::AAAA,
            0x8000_0000,
            &[0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
        )
        // a TXT record: skipped
        .u16(0xc000 | edge)
        .record(16, 60, b"\x05hello");
    let got = parse(&m.0).unwrap();
    assert!(got.response && got.complete);
    assert_eq!(got.rcode, rcode::NOERROR);
    assert_eq!(
        got.answers,
        vec![
            Answer {
                name: "api.example.com".into(),
                ttl: 300,
                data: Rdata::Cname("edge.cdn.net".into())
            },
            Answer {
                name: "edge.cdn.net".into(),
                ttl: 60,
                data: Rdata::A(Ipv4Addr::new(52, 84, 20, 117))
            },
            Answer {
                name: "edge.cdn.net".into(),
                ttl: 0, // above 2^31 - 1: zero
                data: Rdata::Aaaa("2001:db8::1".parse().unwrap())
            },
        ]
    );
}

#[test]
fn response_codes_and_the_truncation_bit_are_read() {
    for (flags, rc, tc) in [
        (0x8183u16, rcode::NXDOMAIN, false),
        (0x8182, rcode::SERVFAIL, false),
        (0x8380, rcode::NOERROR, true),
    ] {
        let m = Msg::new(1, flags, 1, 0).name(&[b"x"]).u16(1).u16(1);
        let got = parse(&m.0).unwrap();
        assert_eq!((got.rcode, got.truncated), (rc, tc), "{flags:#x}");
    }
}

#[test]
fn pointers_that_loop_or_point_forward_are_refused() {
    // a pointer to itself
    let m = Msg::new(1, 0, 1, 0).u16(0xc000 | 12).u16(1).u16(1);
    assert_eq!(parse(&m.0), None);
    // a pointer forward (to a name after it)
    let m = Msg::new(1, 0, 1, 0)
        .u16(0xc000 | 14)
        .name(&[b"a"])
        .u16(1)
        .u16(1);
    assert_eq!(parse(&m.0), None);
    // an answer's owner name whose pointer leads back to its own start
    let m = Msg::new(1, 0, 1, 1).name(&[b"a"]).u16(1).u16(1);
    let second = m.here();
    let m = m
        .name_then(&[b"b"], second)
        .record(rtype::A, 1, &[1, 2, 3, 4]);
    let got = parse(&m.0).unwrap();
    assert!(!got.complete && got.answers.is_empty(), "{got:?}");
    // a pointer back into the middle of the same name's labels
    let m = Msg::new(1, 0, 1, 0)
        .name_then(&[b"a", b"b"], 14)
        .u16(1)
        .u16(1);
    assert_eq!(parse(&m.0), None);
}

#[test]
fn a_cut_answer_keeps_the_answers_before_it() {
    let m = Msg::new(1, 0x8180, 1, 3)
        .name(&[b"a"])
        .u16(1)
        .u16(1)
        .u16(0xc000 | 12)
        .record(rtype::A, 5, &[10, 0, 0, 1]);
    let whole = m.u16(0xc000 | 12).record(rtype::A, 5, &[10, 0, 0, 2]);
    for cut in 1..16 {
        let got = parse(&whole.0[..whole.0.len() - cut]).unwrap();
        assert!(!got.complete);
        assert_eq!(got.answers.len(), 1, "cut {cut}");
    }
    // the header announced three: the third is missing
    let got = parse(&whole.0).unwrap();
    assert!(!got.complete);
    assert_eq!(got.answers.len(), 2);
    // a record of type A whose data is not 4 bytes is malformed: reading stops there
    let m = Msg::new(1, 0x8180, 1, 1)
        .name(&[b"a"])
        .u16(1)
        .u16(1)
        .u16(0xc000 | 12)
        .record(rtype::A, 5, &[10, 0, 0, 1, 9]);
    let got = parse(&m.0).unwrap();
    assert!(!got.complete && got.answers.is_empty());
}

#[test]
fn a_header_or_question_cut_short_is_no_message() {
    let m = Msg::new(1, 0, 1, 0).name(&[b"abc"]).u16(1).u16(1);
    for len in 0..m.0.len() {
        assert_eq!(parse(&m.0[..len]), None, "{len} bytes");
    }
    // no question at all: a message without one
    let got = parse(&Msg::new(1, 0x8181, 0, 0).0).unwrap();
    assert_eq!(got.question, None);
    assert!(got.complete);
}

#[test]
fn names_are_lowercased_and_every_other_byte_is_escaped() {
    let label: &[u8] = b"A.b c,d=e\\f\"g\x00h\xffI-_*";
    let m = Msg::new(1, 0, 1, 0).name(&[label, b"COM"]).u16(1).u16(1);
    let name = parse(&m.0).unwrap().question.unwrap().name;
    assert_eq!(
        name,
        "a\\046b\\032c\\044d\\061e\\092f\\034g\\000h\\255i-_*.com"
    );
    // the root
    let m = Msg::new(1, 0, 1, 0).name(&[]).u16(2).u16(1);
    assert_eq!(parse(&m.0).unwrap().question.unwrap().name, ".");
}

#[test]
fn names_longer_than_255_bytes_and_other_label_types_are_refused() {
    // 4 labels of 63 bytes: 4 * 64 + 1 = 257 bytes
    let l = [b'x'; 63];
    let m = Msg::new(1, 0, 1, 0).name(&[&l, &l, &l, &l]).u16(1).u16(1);
    assert_eq!(parse(&m.0), None);
    // 3 of 63 and one of 61: 255 bytes, the longest
    let m = Msg::new(1, 0, 1, 0)
        .name(&[&l, &l, &l, &l[..61]])
        .u16(1)
        .u16(1);
    assert_eq!(
        parse(&m.0).unwrap().question.unwrap().name.len(),
        63 * 3 + 61 + 3
    );
    // a label before a pointer to a long suffix: 64 + 193 bytes, too long as well
    let m = Msg::new(1, 0, 1, 1).name(&[&l, &l, &l]).u16(1).u16(1);
    let m = m.name_then(&[&l], 12).record(rtype::A, 1, &[1, 2, 3, 4]);
    assert_eq!(parse(&m.0).unwrap().answers.len(), 0);
    // an extended label type (0x40) and the reserved 0x80
    for first in [0x41u8, 0x81] {
        let m = Msg::new(1, 0, 1, 0).bytes(&[first, b'a', 0]).u16(1).u16(1);
        assert_eq!(parse(&m.0), None);
    }
}

#[test]
fn a_cname_must_end_inside_its_record() {
    // the CNAME's data says 3 bytes, but the name in it runs longer
    let m = Msg::new(1, 0x8180, 1, 1)
        .name(&[b"a"])
        .u16(1)
        .u16(1)
        .u16(0xc000 | 12)
        .u16(rtype::CNAME)
        .u16(1)
        .bytes(&[0, 0, 0, 1])
        .u16(3)
        .bytes(&[5, b'h', b'e', b'l', b'l', b'o', 0]);
    let got = parse(&m.0).unwrap();
    assert!(!got.complete && got.answers.is_empty());
}

#[test]
fn more_than_max_answers_are_cut_at_the_bound() {
    let n = MAX_ANSWERS as u16 + 5;
    let mut m = Msg::new(1, 0x8180, 1, n).name(&[b"a"]).u16(1).u16(1);
    for i in 0..n {
        m = m
            .u16(0xc000 | 12)
            .record(rtype::A, 1, &[10, 0, (i >> 8) as u8, i as u8]);
    }
    let got = parse(&m.0).unwrap();
    assert_eq!(got.answers.len(), MAX_ANSWERS);
    assert!(!got.complete);
}

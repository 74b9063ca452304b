//! The line-protocol encoder of the gather path: appends lines to a `Vec<u8>` without allocating.
//!
//! ```
//! use flowlens_core::lineproto::{Encoder, Precision};
//! let mut buf = Vec::new();
//! let mut enc = Encoder::new(&mut buf, Precision::Ns, 1_700_000_000_000_000_000);
//! enc.line("container:num_flows")
//!     .tag("ifid", "0")
//!     .tag("container", "1edb6c16e3d2")
//!     .field_i64("as_client", 3)
//!     .field_f64("rtt", 1.25)
//!     .finish();
//! assert_eq!(enc.lines_written(), 1);
//! drop(enc);
//! assert_eq!(
//!     buf,
//!     b"container:num_flows,container=1edb6c16e3d2,ifid=0 as_client=3i,rtt=1.25 1700000000000000000\n"
//! );
//! ```

use super::escape::*;
use super::number::*;
use super::sort::*;
use super::Precision;
use std::cmp::Ordering;

/// Appends lines of line protocol to a buffer; every line gets the same timestamp.
///
/// Start a line with [`Encoder::line`], add tags and fields, and end it with
/// [`LineBuilder::finish`]. A line that was started but not finished is removed from the buffer
/// when the next line starts or the encoder is dropped.
#[derive(Debug)]
pub struct Encoder<'b> {
    buf: &'b mut Vec<u8>,
    /// What ends every line: `" <timestamp>\n"` or just `"\n"`, formatted once.
    tail: [u8; 22],
    tail_len: u8,
    lines: u64,
    /// The line being built. It lives here, not in [`LineBuilder`], so that the builder is one
    /// pointer and passing it by value costs nothing.
    cur: Line,
}

/// The state of the line being built.
#[derive(Debug, Default, Clone)]
struct Line {
    /// A line was started and not finished yet.
    open: bool,
    /// The measurement cannot be written (empty or starting with `#`): write nothing.
    skip: bool,
    /// Some tag came with a key not greater than the one before: sort (and dedup) the tags.
    unsorted: bool,
    /// The index is incomplete (more than [`MAX_TAGS`] tags, or offsets beyond `u16`).
    far: bool,
    /// Bit i: the key of tag i has a backslash.
    escaped: u16,
    /// Where the line starts in the buffer.
    start: usize,
    /// Where the tags start (right after the measurement). Each tag is written `,key=value`.
    tags_at: usize,
    ntags: usize,
    /// Where the fields start, once the first one is written.
    fields_at: usize,
    nfields: usize,
    /// For each of the first [`MAX_TAGS`] tags: where it starts and where its key ends, as
    /// offsets from `tags_at`.
    index: [(u16, u16); MAX_TAGS],
}

impl<'b> Encoder<'b> {
    /// An encoder appending to `buf`, stamping every line with `timestamp_ns` (nanoseconds since
    /// the Unix epoch) converted to `precision`.
    pub fn new(buf: &'b mut Vec<u8>, precision: Precision, timestamp_ns: i64) -> Self {
        Self::with_timestamp(buf, precision, Some(timestamp_ns))
    }

    /// Like [`Encoder::new`]; `None` writes lines without a timestamp.
    pub(super) fn with_timestamp(
        buf: &'b mut Vec<u8>,
        precision: Precision,
        timestamp_ns: Option<i64>,
    ) -> Self {
        let mut tail = [0u8; 22];
        let mut len = 0;
        if let Some(ts) = timestamp_ns {
            tail[0] = b' ';
            let mut digits = [0u8; 20];
            let d = fmt_i64(&mut digits, precision.from_ns(ts));
            tail[1..1 + d.len()].copy_from_slice(d);
            len = 1 + d.len();
        }
        tail[len] = b'\n';
        Self {
            buf,
            tail,
            tail_len: (len + 1) as u8,
            lines: 0,
            cur: Line::default(),
        }
    }

    /// Starts a line for `measurement`. The line is removed again by [`LineBuilder::finish`] if
    /// it gets no field.
    #[inline]
    pub fn line<'e>(&'e mut self, measurement: impl Name) -> LineBuilder<'b, 'e> {
        self.discard_open();
        let start = self.buf.len();
        let m = measurement.bytes();
        let skip = m.is_empty() || m[0] == b'#';
        if !skip {
            measurement.write(self.buf, MEAS);
        }
        let cur = &mut self.cur;
        cur.open = true;
        cur.skip = skip;
        cur.unsorted = false;
        cur.far = false;
        cur.escaped = 0;
        cur.start = start;
        cur.tags_at = self.buf.len();
        cur.ntags = 0;
        cur.fields_at = 0;
        cur.nfields = 0;
        LineBuilder { enc: self }
    }

    /// Starts a line for `measurement` carrying the tags of `tags`, which were escaped and
    /// sorted when the set was built: the cheap way to write several lines of one series.
    /// More tags may still be added (they are sorted in, by scanning).
    #[inline]
    pub fn line_tagged<'e>(
        &'e mut self,
        measurement: impl Name,
        tags: &TagSet,
    ) -> LineBuilder<'b, 'e> {
        let builder = self.line(measurement);
        let (buf, cur) = (&mut *builder.enc.buf, &mut builder.enc.cur);
        if !cur.skip && tags.tags.ntags > 0 {
            buf.extend_from_slice(&tags.bytes);
            cur.ntags = tags.tags.ntags;
            cur.index = tags.tags.index;
            cur.escaped = tags.tags.escaped;
            cur.far = tags.tags.far;
        }
        builder
    }

    /// How many lines this encoder has written.
    #[inline]
    pub fn lines_written(&self) -> u64 {
        self.lines
    }

    fn discard_open(&mut self) {
        if self.cur.open {
            self.cur.open = false;
            self.buf.truncate(self.cur.start);
        }
    }
}

impl Drop for Encoder<'_> {
    fn drop(&mut self) {
        self.discard_open();
    }
}

/// The tags of one series, escaped, sorted and deduplicated once (as [`LineBuilder::tag`] would
/// write them) for every line that carries them: see [`Encoder::line_tagged`]. Reuse one set
/// across series to keep its buffer.
#[derive(Debug, Default, Clone)]
pub struct TagSet {
    /// `,key=value` for each tag, in order.
    bytes: Vec<u8>,
    /// The tags' index, as a line keeps it (`tags_at` 0): copied into each line, so that a tag
    /// added after them is placed as cheaply as on any line.
    tags: Line,
}

impl TagSet {
    /// Replaces the tags with `tags` (any order, each key once; empty keys or values are left
    /// out). Tags given in key order are written as they come.
    pub fn set(&mut self, tags: &[(&str, &str)]) {
        self.bytes.clear();
        self.tags = Line::default();
        for (key, value) in tags {
            if !key.is_empty() && !value.is_empty() {
                push_tag(&mut self.bytes, &mut self.tags, key, value);
            }
        }
        if self.tags.unsorted {
            let cur = &self.tags;
            let index = (!cur.far).then_some((&cur.index[..cur.ntags], cur.escaped));
            sort_tags(&mut self.bytes, 0, cur.ntags, index);
            // Sorted and deduplicated: count what is left. Unindexed, a tag added after these
            // is placed by scanning (callers on the gather path give their tags in order).
            let (mut at, mut ntags) = (0, 0);
            while at < self.bytes.len() {
                at = Segment::at(&self.bytes, at).end;
                ntags += 1;
            }
            self.tags = Line {
                ntags,
                far: true,
                ..Line::default()
            };
        }
    }
}

/// One line being built; see [`Encoder`]. Methods take and return the builder by value so that
/// calls chain: `enc.line("m").tag("k", "v").field_i64("f", 1).finish()`.
///
/// Everything is written to the buffer as it is given; tags given out of order are put in order
/// (in place, without allocating) when the first field comes.
#[must_use = "a line is only written by finish()"]
#[derive(Debug)]
pub struct LineBuilder<'b, 'e> {
    enc: &'e mut Encoder<'b>,
}

impl LineBuilder<'_, '_> {
    /// Adds a tag. Tags are written sorted by key (byte order of the key as read back) whatever
    /// the order of the calls; a tag with an empty key or value is left out (InfluxDB rejects
    /// them). Give each key once: a repeated key is a programming error (`debug_assert`), and
    /// the last value given wins. Tags come before fields; a tag after a field is a programming
    /// error (`debug_assert`) that is still handled correctly, at the cost of an allocation.
    #[inline]
    pub fn tag(self, key: &str, value: &str) -> Self {
        let (buf, cur) = (&mut *self.enc.buf, &mut self.enc.cur);
        if key.is_empty() || value.is_empty() || cur.skip {
            return self;
        }
        if cur.nfields > 0 {
            debug_assert!(false, "tag {key:?} added after a field");
            late_tag(buf, cur, key, value);
            return self;
        }
        push_tag(buf, cur, key, value);
        self
    }

    /// Adds an integer field, written `42i`.
    #[inline]
    pub fn field_i64(mut self, key: impl Name, value: i64) -> Self {
        if self.begin_field(key) {
            let mut digits = [0u8; 20];
            let d = fmt_i64(&mut digits, value);
            let buf = &mut *self.enc.buf;
            buf.extend_from_slice(d);
            buf.push(b'i');
        }
        self
    }

    /// Adds a float field. A NaN or infinite value is left out (InfluxDB rejects them). The
    /// text parses back to the identical `f64` and is accepted by InfluxDB 1.x, Telegraf and
    /// Vector (no `1.`, `.5`, `+`, `NaN` or `inf` forms).
    #[inline]
    pub fn field_f64(mut self, key: impl Name, value: f64) -> Self {
        if value.is_finite() && self.begin_field(key) {
            write_f64(self.enc.buf, value);
        }
        self
    }

    /// Adds a boolean field, written `true` or `false`. flowlens writes none: for the parser's
    /// round trips (tests, fuzzing).
    #[cfg(any(test, feature = "parser"))]
    #[inline]
    pub fn field_bool(mut self, key: impl Name, value: bool) -> Self {
        if self.begin_field(key) {
            let text: &[u8] = if value { b"true" } else { b"false" };
            self.enc.buf.extend_from_slice(text);
        }
        self
    }

    /// Adds a string field, double-quoted with `"` and `\` escaped (`\n` and `\r` become
    /// spaces). flowlens writes none: for the parser's round trips (tests, fuzzing).
    #[cfg(any(test, feature = "parser"))]
    #[inline]
    pub fn field_str(mut self, key: impl Name, value: &str) -> Self {
        if self.begin_field(key) {
            let buf = &mut *self.enc.buf;
            buf.push(b'"');
            write_string_value(buf, value.as_bytes());
            buf.push(b'"');
        }
        self
    }

    /// Ends the line: writes the timestamp and `\n`, or removes the line if it has no field.
    #[inline]
    pub fn finish(self) {
        let enc = self.enc;
        enc.cur.open = false;
        if enc.cur.nfields == 0 {
            enc.buf.truncate(enc.cur.start);
            return;
        }
        enc.buf
            .extend_from_slice(&enc.tail[..usize::from(enc.tail_len)]);
        enc.lines += 1;
    }

    /// Writes the separator and `key=` of a field (sorting the tags before the first one).
    /// Returns false, writing nothing, when the field cannot be written.
    #[inline]
    fn begin_field(&mut self, key: impl Name) -> bool {
        let (buf, cur) = (&mut *self.enc.buf, &mut self.enc.cur);
        if key.bytes().is_empty() || cur.skip {
            return false;
        }
        if cur.nfields == 0 {
            if cur.unsorted {
                let index = (!cur.far).then_some((&cur.index[..cur.ntags], cur.escaped));
                sort_tags(buf, cur.tags_at, cur.ntags, index);
                cur.unsorted = false;
            }
            cur.fields_at = buf.len();
            buf.push(b' ');
        } else {
            buf.push(b',');
        }
        cur.nfields += 1;
        key.write(buf, KEY);
        buf.push(b'=');
        true
    }
}

/// Writes `,key=value` at the end of `buf` (the line's tags end there) and indexes it.
#[inline]
fn push_tag(buf: &mut Vec<u8>, cur: &mut Line, key: &str, value: &str) {
    buf.push(b',');
    let key_at = buf.len();
    let escaped = write_name(buf, key.as_bytes(), KEY);
    let key_end = buf.len();
    buf.push(b'=');
    write_name(buf, value.as_bytes(), KEY);
    let (seg, end) = (key_at - 1 - cur.tags_at, key_end - cur.tags_at);
    match (u16::try_from(seg), u16::try_from(end)) {
        (Ok(seg), Ok(end)) if cur.ntags < MAX_TAGS && !cur.far => {
            let n = cur.ntags;
            cur.index[n] = (seg, end);
            cur.escaped |= u16::from(escaped) << n;
            if n > 0 && !cur.unsorted {
                let last = Segment::indexed(cur.tags_at, cur.index[n - 1], cur.escaped, n - 1);
                let this = Segment::indexed(cur.tags_at, cur.index[n], cur.escaped, n);
                cur.unsorted = last.cmp_key(&this, buf) != Ordering::Less;
            }
        }
        _ => {
            cur.far = true;
            cur.unsorted = true;
        }
    }
    cur.ntags += 1;
    debug_assert!(
        cur.ntags <= MAX_TAGS,
        "more than {MAX_TAGS} tags on one line"
    );
}

/// A tag after fields: insert it among the tags, keeping the fields.
#[cold]
fn late_tag(buf: &mut Vec<u8>, cur: &mut Line, key: &str, value: &str) {
    let fields = buf[cur.fields_at..].to_vec();
    buf.truncate(cur.fields_at);
    buf.push(b',');
    write_name(buf, key.as_bytes(), KEY);
    buf.push(b'=');
    write_name(buf, value.as_bytes(), KEY);
    cur.ntags += 1;
    cur.far = true;
    sort_tags(buf, cur.tags_at, cur.ntags, None);
    cur.fields_at = buf.len();
    buf.extend_from_slice(&fields);
}

#[cfg(test)]
mod tests {
    use super::*;

    const TS: i64 = 1_700_000_000_123_456_789;

    fn one(f: impl FnOnce(&mut Encoder<'_>)) -> String {
        let mut buf = Vec::new();
        {
            let mut enc = Encoder::new(&mut buf, Precision::Ns, TS);
            f(&mut enc);
        }
        String::from_utf8(buf).unwrap()
    }

    fn f64_text(v: f64) -> String {
        let mut buf = Vec::new();
        write_f64(&mut buf, v);
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn encodes_lines_exactly() {
        type Case = (&'static str, fn(&mut Encoder<'_>), &'static str);
        let cases: &[Case] = &[
            (
                "the example of the design",
                |e| {
                    e.line("container:num_flows")
                        .tag("ifid", "0")
                        .tag("container", "1edb6c16e3d2")
                        .field_i64("as_client", 3)
                        .field_f64("rtt", 1.25)
                        .field_bool("up", true)
                        .field_str("name", "web")
                        .finish()
                },
                "container:num_flows,container=1edb6c16e3d2,ifid=0 as_client=3i,rtt=1.25,up=true,name=\"web\" 1700000000123456789\n",
            ),
            (
                "tags sorted by key bytes whatever the call order",
                |e| {
                    e.line("m")
                        .tag("b", "2")
                        .tag("a", "1")
                        .tag("B", "0")
                        .tag("aa", "3")
                        .tag("_", "4")
                        .field_i64("f", -1)
                        .finish()
                },
                "m,B=0,_=4,a=1,aa=3,b=2 f=-1i 1700000000123456789\n",
            ),
            (
                "measurement escapes comma and space, not = or quotes",
                |e| e.line("a b,c=d\"").field_bool("f", false).finish(),
                "a\\ b\\,c=d\" f=false 1700000000123456789\n",
            ),
            (
                "keys and tag values escape comma, equals and space",
                |e| {
                    e.line("m")
                        .tag("k y,=", "v a,l=ue")
                        .field_i64("f k,=", 1)
                        .finish()
                },
                "m,k\\ y\\,\\==v\\ a\\,l\\=ue f\\ k\\,\\==1i 1700000000123456789\n",
            ),
            (
                "string values escape quote and backslash only",
                |e| e.line("m").field_str("s", r#"a "q" \ , = b"#).finish(),
                "m s=\"a \\\"q\\\" \\\\ , = b\" 1700000000123456789\n",
            ),
            (
                "newlines and carriage returns become spaces",
                |e| {
                    e.line("m\nx")
                        .tag("t\r", "v\n")
                        .field_str("s", "a\r\nb")
                        .finish()
                },
                "m\\ x,t\\ =v\\  s=\"a  b\" 1700000000123456789\n",
            ),
            (
                "other control characters become spaces in names, stay in strings",
                |e| e.line("m\t").tag("t", "\u{0}").field_str("s\u{7f}", "\t").finish(),
                "m\\ ,t=\\  s\\ =\"\t\" 1700000000123456789\n",
            ),
            (
                "empty tag key or value left out",
                |e| {
                    e.line("m")
                        .tag("", "v")
                        .tag("k", "")
                        .tag("ok", "1")
                        .field_i64("f", 0)
                        .finish()
                },
                "m,ok=1 f=0i 1700000000123456789\n",
            ),
            (
                "NaN and infinite fields left out",
                |e| {
                    e.line("m")
                        .field_f64("nan", f64::NAN)
                        .field_f64("ok", 0.5)
                        .field_f64("inf", f64::INFINITY)
                        .field_f64("ninf", f64::NEG_INFINITY)
                        .finish()
                },
                "m ok=0.5 1700000000123456789\n",
            ),
            (
                "a line with no field is not written",
                |e| {
                    e.line("m").tag("k", "v").field_f64("nan", f64::NAN).finish();
                    e.line("m").tag("k", "v").finish();
                    e.line("m").field_i64("", 1).finish();
                    e.line("n").field_i64("f", 1).finish();
                },
                "n f=1i 1700000000123456789\n",
            ),
            (
                "an empty or #-measurement is not written",
                |e| {
                    e.line("").field_i64("f", 1).finish();
                    e.line("#m").field_i64("f", 1).finish();
                    e.line("m#").field_i64("f", 1).finish();
                },
                "m# f=1i 1700000000123456789\n",
            ),
            (
                "an unfinished line is discarded",
                |e| {
                    let _ = e.line("lost").field_i64("f", 1);
                    e.line("kept").field_i64("f", 1).finish();
                    let _ = e.line("lost").field_i64("f", 1);
                },
                "kept f=1i 1700000000123456789\n",
            ),
            (
                "integer extremes",
                |e| {
                    e.line("m")
                        .field_i64("min", i64::MIN)
                        .field_i64("max", i64::MAX)
                        .field_i64("zero", 0)
                        .finish()
                },
                "m min=-9223372036854775808i,max=9223372036854775807i,zero=0i 1700000000123456789\n",
            ),
            (
                "unicode passes through",
                |e| e.line("π").tag("é", "ü ö").field_str("ß", "✓").finish(),
                "π,é=ü\\ ö ß=\"✓\" 1700000000123456789\n",
            ),
        ];
        for (what, build, want) in cases {
            assert_eq!(one(build), *want, "{what}");
        }
    }

    #[test]
    fn backslashes_that_cannot_be_read_back_become_spaces() {
        let got = one(|e| {
            e.line(r"m\x\=\")
                .tag(r"k\", r"a\\b")
                .tag(r"q\=", r#"\""#)
                .tag("z", r"c:\dir\file")
                .field_i64(r"f\,", 1)
                .finish()
        });
        // `m\x` and `\=` are harmless in a measurement; the trailing `\` is not. In keys and tag
        // values `\=`, `\"`, `\\`, `\,` and a trailing `\` are not.
        assert_eq!(
            got,
            "m\\x\\=\\ ,k\\ =a\\ \\b,q\\ \\==\\ \",z=c:\\dir\\file f\\ \\,=1i 1700000000123456789\n"
        );
    }

    #[test]
    fn reads_back_unchanged_is_what_the_encoder_keeps() {
        for (s, want) in [
            ("web-0", true),
            ("a b,c=d\"e", true),
            (r"c:\dir\file", true),
            (r"\x", true),
            ("", true),
            ("a\nb", false),
            ("nul\0", false),
            ("tab\t", false),
            ("del\u{7f}", false),
            (r"end\", false),
            (r"a\\b", false),
            (r"a\,b", false),
            (r"a\ b", false),
            (r"a\=b", false),
            (r#"a\"b"#, false),
        ] {
            assert_eq!(reads_back_unchanged(s), want, "{s:?}");
            // What the encoder writes as a tag value reads back as `s` exactly when it says so.
            if !s.is_empty() {
                let line = one(|e| e.line("m").tag("t", s).field_i64("f", 1).finish());
                let back = &crate::lineproto::parse_lines(&line).unwrap()[0].tags[0].1;
                assert_eq!(back == s, want, "{s:?}: {line:?}");
            }
        }
    }

    #[test]
    fn tags_sort_by_the_key_as_read_back() {
        // `a\` (trailing backslash) is written and read back as "a ", which sorts after "a"
        // and before "a!" (0x21).
        let got = one(|e| {
            e.line("m")
                .tag("a!", "1")
                .tag(r"a\", "2")
                .tag("a", "3")
                .field_i64("f", 1)
                .finish()
        });
        assert_eq!(got, "m,a=3,a\\ =2,a!=1 f=1i 1700000000123456789\n");
    }

    #[test]
    fn each_precision_scales_the_timestamp() {
        for (precision, want) in [
            (Precision::Ns, "1700000000123456789"),
            (Precision::Us, "1700000000123456"),
            (Precision::Ms, "1700000000123"),
            (Precision::S, "1700000000"),
        ] {
            let mut buf = Vec::new();
            Encoder::new(&mut buf, precision, TS)
                .line("m")
                .field_i64("f", 1)
                .finish();
            assert_eq!(String::from_utf8(buf).unwrap(), format!("m f=1i {want}\n"));
        }
        let mut buf = Vec::new();
        Encoder::new(&mut buf, Precision::S, -1_500_000_000)
            .line("m")
            .field_i64("f", 1)
            .finish();
        assert_eq!(buf, b"m f=1i -1\n", "truncates toward zero");
    }

    #[test]
    fn point_without_timestamp() {
        let p = super::super::Point {
            measurement: "m".into(),
            tags: vec![("b".into(), "1".into()), ("a".into(), "2".into())],
            fields: vec![("f".into(), super::super::FieldValue::Float(2.0))],
            timestamp: None,
        };
        let mut buf = b"x\n".to_vec();
        assert!(p.encode(Precision::Ms, &mut buf));
        assert_eq!(buf, b"x\nm,a=2,b=1 f=2\n");
    }

    #[test]
    fn lines_written_counts_finished_lines() {
        let mut buf = Vec::new();
        let mut enc = Encoder::new(&mut buf, Precision::Ns, 0);
        enc.line("a").field_i64("f", 1).finish();
        enc.line("b").finish();
        enc.line("c").field_bool("f", true).finish();
        assert_eq!(enc.lines_written(), 2);
        drop(enc);
        assert_eq!(buf, b"a f=1i 0\nc f=true 0\n");
    }

    #[test]
    fn more_than_max_tags_are_sorted_too() {
        // Through the encoder a debug_assert fires in debug builds; sort directly.
        let mut buf = b"m".to_vec();
        for i in (0..20).rev() {
            buf.extend_from_slice(format!(",k{i:02}=v\\,{i}").as_bytes());
        }
        sort_tags(&mut buf, 1, 20, None);
        let mut want = String::from("m");
        for i in 0..20 {
            want.push_str(&format!(",k{i:02}=v\\,{i}"));
        }
        assert_eq!(String::from_utf8(buf).unwrap(), want);
    }

    #[test]
    fn tags_beyond_the_u16_index_are_sorted_by_scanning() {
        let big = "x".repeat(70_000);
        let got = one(|e| {
            e.line("m")
                .tag("c", &big)
                .tag("b", "2")
                .tag("a", "1")
                .field_i64("f", 1)
                .finish()
        });
        assert_eq!(got, format!("m,a=1,b=2,c={big} f=1i 1700000000123456789\n"));
    }

    #[test]
    fn misuse_panics_in_debug_builds() {
        if !cfg!(debug_assertions) {
            return;
        }
        let late_tag = std::panic::catch_unwind(|| {
            let mut buf = Vec::new();
            let mut enc = Encoder::new(&mut buf, Precision::Ns, 0);
            enc.line("m").field_i64("f", 1).tag("t", "v").finish();
        });
        assert!(late_tag.is_err());
        let twice = std::panic::catch_unwind(|| {
            let mut buf = Vec::new();
            let mut enc = Encoder::new(&mut buf, Precision::Ns, 0);
            enc.line("m")
                .tag("t", "1")
                .tag("t", "2")
                .field_i64("f", 1)
                .finish();
        });
        assert!(twice.is_err());
    }

    #[test]
    fn floats_are_written_in_a_grammar_every_reader_accepts() {
        for (v, want) in [
            (1.0, "1"),
            (-3.0, "-3"),
            (0.0, "0"),
            (-0.0, "-0"),
            (1.25, "1.25"),
            (0.1, "0.1"),
            (0.001, "0.001"),
            (-0.000_123, "-0.000123"),
            (1.1, "1.1"),
            (123_456.789, "123456.789"),
            (9_007_199_254_740_991.0, "9007199254740991"),
            (1e16, "1e16"),
            (1e300, "1e300"),
            (1e-7, "0.0000001"),
            (1e-10, "1e-10"),
            (-2.5e-10, "-2.5e-10"),
            (0.1 + 0.2, "0.30000000000000004"),
            (f64::MAX, "1.7976931348623157e308"),
            (f64::MIN_POSITIVE, "2.2250738585072014e-308"),
            (5e-324, "5e-324"),
        ] {
            let text = f64_text(v);
            assert_eq!(text, want, "{v:e}");
            let back: f64 = text.parse().unwrap();
            assert_eq!(back.to_bits(), v.to_bits(), "{text}");
        }
    }

    #[test]
    fn integers_match_std() {
        for v in [
            0,
            1,
            9,
            10,
            99,
            100,
            12345,
            -1,
            -10,
            -100,
            i64::MIN,
            i64::MAX,
            1 << 40,
        ] {
            let mut out = [0u8; 20];
            assert_eq!(fmt_i64(&mut out, v), v.to_string().as_bytes());
        }
    }
}

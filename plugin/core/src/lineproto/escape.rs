//! What each byte becomes in a measurement, a key, a tag value or a string value: the byte
//! classes, the replacement of what cannot be carried (see the module docs of `lineproto`), the
//! escaping, and the names (`Plain`, `Name`) the encoder writes.

// Byte classes. MEAS / KEY: the byte needs the slow path in a measurement / in a tag key, tag
// value or field key. STR: in a string field value.
pub(super) const MEAS: u8 = 1;
pub(super) const KEY: u8 = 2;
pub(super) const STR: u8 = 4;

pub(super) static CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        if b < 0x20 || b == 0x7f {
            t[b] = MEAS | KEY;
        }
        b += 1;
    }
    t[b'\n' as usize] |= STR;
    t[b'\r' as usize] |= STR;
    t[b',' as usize] = MEAS | KEY;
    t[b' ' as usize] = MEAS | KEY;
    t[b'=' as usize] = KEY;
    t[b'\\' as usize] = MEAS | KEY | STR;
    t[b'"' as usize] = STR;
    t
};

#[inline]
pub(super) fn is_control(b: u8) -> bool {
    b < 0x20 || b == 0x7f
}

/// Whether the backslash at `s[i]` must be replaced (see the module docs).
#[inline]
pub(super) fn backslash_unsafe(s: &[u8], i: usize, ctx: u8) -> bool {
    match s.get(i + 1) {
        None => true,
        Some(&n) => {
            is_control(n)
                || n == b'\\'
                || n == b','
                || n == b' '
                || (ctx == KEY && (n == b'=' || n == b'"'))
        }
    }
}

/// The byte written for `s[i]` before escaping (a space where the text cannot be carried).
#[inline]
pub(super) fn sanitized(s: &[u8], i: usize, ctx: u8) -> u8 {
    let b = s[i];
    if is_control(b) || (b == b'\\' && backslash_unsafe(s, i, ctx)) {
        b' '
    } else {
        b
    }
}

/// Whether every reader reads `s`, written as a tag key, tag value or field key, back unchanged:
/// it has no character the encoder replaces by a space (control characters, and backslashes
/// that end the text or precede `\`, `,`, a space, `=`, `"` or a control character; see the
/// module docs). Escaped commas, spaces and `=` are read back as they were.
pub fn reads_back_unchanged(s: &str) -> bool {
    let b = s.as_bytes();
    (0..b.len()).all(|i| sanitized(b, i, KEY) == b[i])
}

/// A measurement name or field key that needs no escaping anywhere, checked at compile time
/// (`Plain::new` in a `const`): written with one copy instead of a scan. Most names an agent
/// writes are constants; scanning them took a quarter of the encoder's instructions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plain(&'static str);

impl Plain {
    /// `name` as a plain name. Panics (a compile error, in a `const`) unless it is non-empty,
    /// does not start with `#`, and holds only printable ASCII other than `,`, `=`, `\`, `"`.
    pub const fn new(name: &'static str) -> Plain {
        let b = name.as_bytes();
        assert!(
            !b.is_empty() && b[0] != b'#',
            "a plain name is not empty or a comment"
        );
        let mut i = 0;
        while i < b.len() {
            let c = b[i];
            assert!(
                c > b' ' && c < 0x7f && c != b',' && c != b'=' && c != b'\\' && c != b'"',
                "a plain name needs no escaping"
            );
            i += 1;
        }
        Plain(name)
    }

    /// The name.
    pub const fn as_str(self) -> &'static str {
        self.0
    }
}

mod sealed {
    pub trait Sealed {}
    impl<S: AsRef<str> + ?Sized> Sealed for &S {}
    impl Sealed for super::Plain {}
}

/// A measurement name or field key: any `&str` or `&String` (escaped as it is written) or a
/// [`Plain`] one (copied as is).
pub trait Name: sealed::Sealed {
    /// The unescaped bytes.
    fn bytes(&self) -> &[u8];
    /// Appends the name, escaped for `ctx`.
    #[doc(hidden)]
    fn write(&self, buf: &mut Vec<u8>, ctx: u8);
}

impl<S: AsRef<str> + ?Sized> Name for &S {
    #[inline]
    fn bytes(&self) -> &[u8] {
        (**self).as_ref().as_bytes()
    }

    #[inline]
    fn write(&self, buf: &mut Vec<u8>, ctx: u8) {
        write_name(buf, self.bytes(), ctx);
    }
}

impl Name for Plain {
    #[inline]
    fn bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    #[inline]
    fn write(&self, buf: &mut Vec<u8>, _ctx: u8) {
        buf.extend_from_slice(self.0.as_bytes());
    }
}

/// Writes a measurement (`ctx == MEAS`) or a tag key, tag value or field key (`ctx == KEY`).
/// Returns whether anything had to be escaped or replaced.
#[inline]
pub(super) fn write_name(buf: &mut Vec<u8>, s: &[u8], ctx: u8) -> bool {
    match first_special(s, ctx) {
        None => {
            buf.extend_from_slice(s);
            false
        }
        Some(first) => {
            write_name_slow(buf, s, first, ctx);
            true
        }
    }
}

pub(super) const ONES: u64 = 0x0101_0101_0101_0101;
pub(super) const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Whether a byte of `x` equals `b` (exact for "any").
#[inline]
pub(super) fn has_byte(x: u64, b: u8) -> bool {
    let y = x ^ (ONES * u64::from(b));
    y.wrapping_sub(ONES) & !y & HIGHS != 0
}

/// The index of the first byte of `s` that `ctx` escapes or rewrites, eight bytes at a time.
#[inline]
pub(super) fn first_special(s: &[u8], ctx: u8) -> Option<usize> {
    let mut at = 0;
    for chunk in s.chunks_exact(8) {
        let x = u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]));
        // Bytes below 0x21 (controls and space), `,`, `\`, DEL, and `=` in keys.
        let below = x.wrapping_sub(ONES * 0x21) & !x & HIGHS != 0;
        if below
            || has_byte(x, b',')
            || has_byte(x, b'\\')
            || has_byte(x, 0x7f)
            || (ctx == KEY && has_byte(x, b'='))
        {
            break;
        }
        at += 8;
    }
    s[at..]
        .iter()
        .position(|&b| CLASS[b as usize] & ctx != 0)
        .map(|i| at + i)
}

#[cold]
pub(super) fn write_name_slow(buf: &mut Vec<u8>, s: &[u8], first: usize, ctx: u8) {
    buf.extend_from_slice(&s[..first]);
    for i in first..s.len() {
        let b = sanitized(s, i, ctx);
        if b == b',' || b == b' ' || (ctx == KEY && b == b'=') {
            buf.push(b'\\');
        }
        buf.push(b);
    }
}

/// A string field's value, escaped for its double quotes (only `field_str` writes one).
#[cfg(any(test, feature = "parser"))]
#[inline]
pub(super) fn write_string_value(buf: &mut Vec<u8>, s: &[u8]) {
    let mut last = 0;
    for (i, &b) in s.iter().enumerate() {
        if CLASS[b as usize] & STR != 0 {
            buf.extend_from_slice(&s[last..i]);
            match b {
                b'\n' | b'\r' => buf.push(b' '),
                _ => buf.extend_from_slice(&[b'\\', b]),
            }
            last = i + 1;
        }
    }
    buf.extend_from_slice(&s[last..]);
}

//! Integers and floats as line-protocol text, without allocating: decimal digits two at a time,
//! floats that parse back to the identical value.

use std::io::Write as _;

pub(super) const DIGIT_PAIRS: &[u8; 200] = b"\
    0001020304050607080910111213141516171819\
    2021222324252627282930313233343536373839\
    4041424344454647484950515253545556575859\
    6061626364656667686970717273747576777879\
    8081828384858687888990919293949596979899";

/// Formats `n` in decimal at the end of `out`, returning the digits.
#[inline]
pub(super) fn fmt_u64(out: &mut [u8; 20], mut n: u64) -> usize {
    let mut i = out.len();
    while n >= 100 {
        let d = (n % 100) as usize * 2;
        n /= 100;
        i -= 2;
        out[i..i + 2].copy_from_slice(&DIGIT_PAIRS[d..d + 2]);
    }
    if n >= 10 {
        let d = n as usize * 2;
        i -= 2;
        out[i..i + 2].copy_from_slice(&DIGIT_PAIRS[d..d + 2]);
    } else {
        i -= 1;
        out[i] = b'0' + n as u8;
    }
    i
}

/// Formats `v` in decimal (with a leading `-` when negative) into `out`, returning the text.
#[inline]
pub(super) fn fmt_i64(out: &mut [u8; 20], v: i64) -> &[u8] {
    // 19 digits at most for |i64| <= 2^63; the sign takes the 20th byte.
    let i = fmt_u64(out, v.unsigned_abs());
    if v < 0 {
        out[i - 1] = b'-';
        &out[i - 1..]
    } else {
        &out[i..]
    }
}

/// 2^53: every integer of smaller magnitude is exactly representable as an f64.
pub(super) const EXACT: f64 = 9_007_199_254_740_992.0;
pub(super) const POW10: [f64; 10] = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9];

/// Writes a finite float as text that parses back (correctly rounded, as InfluxDB, Telegraf,
/// Vector and Rust parse) to the identical value: `-?\d+(\.\d+)?(e-?\d+)?`.
///
/// Fast paths: integral values and values with at most 9 decimals, written `m / 10^k` where the
/// IEEE quotient of the exact `m` and `10^k` is the value itself (so the decimal `m·10^-k` rounds
/// to it). Otherwise Rust's shortest round-trip formatting (`{:?}`) is used.
pub(super) fn write_f64(buf: &mut Vec<u8>, v: f64) {
    debug_assert!(v.is_finite());
    let mut digits = [0u8; 20];
    if v == 0.0 {
        let text: &[u8] = if v.is_sign_negative() { b"-0" } else { b"0" };
        buf.extend_from_slice(text);
        return;
    }
    let neg = v < 0.0;
    let a = v.abs();
    if a < EXACT {
        let m = a as u64;
        if m as f64 == a {
            if neg {
                buf.push(b'-');
            }
            let i = fmt_u64(&mut digits, m);
            buf.extend_from_slice(&digits[i..]);
            return;
        }
        for (k, &p) in POW10.iter().enumerate().skip(1) {
            let s = a * p;
            if s >= EXACT {
                break;
            }
            // `s + 0.5` then truncation: round to nearest (ties do not matter, the result is
            // checked below).
            let m = (s + 0.5) as u64;
            let mf = m as f64;
            if (s - mf).abs() <= s * 1e-12 && mf / p == a {
                if neg {
                    buf.push(b'-');
                }
                let i = fmt_u64(&mut digits, m);
                let d = &digits[i..];
                if d.len() > k {
                    let (int, frac) = d.split_at(d.len() - k);
                    buf.extend_from_slice(int);
                    buf.push(b'.');
                    buf.extend_from_slice(frac);
                } else {
                    buf.extend_from_slice(b"0.");
                    buf.extend(std::iter::repeat_n(b'0', k - d.len()));
                    buf.extend_from_slice(d);
                }
                return;
            }
        }
    }
    // Rust's Debug for f64 is the shortest round-trip text, `1e-7` / `1.5e16` beyond the plain
    // range, always with digits on both sides of a `.`: a grammar every reader accepts.
    let _ = write!(buf, "{v:?}");
}

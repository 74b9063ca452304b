//! InfluxDB line protocol: the zero-allocation encoder of the gather path and, for tests only
//! (feature `parser`), a strict parser.
//!
//! The rules both halves follow, from InfluxDB's line protocol reference and Telegraf's and
//! Vector's parsers:
//!
//! - [`Encoder`] writes lines that InfluxDB 1.x, Telegraf (`data_format = "influx"`) and Vector
//!   (`influxdb-line-protocol` 2.0.0) all read back to the same values: tags sorted by key, empty
//!   tags and non-finite floats left out, a line left without fields not written, integers as
//!   `42i` (never `u`), LF line ends only.
//! - [`parse_lines`] is stricter than any of those parsers: it accepts what Telegraf accepts and
//!   rejects what one of them would reject or silently change (NaN/Inf, control characters,
//!   duplicate tags, trailing text, CRLF). Tests use it to check output; the product does not
//!   carry it (it is compiled for this crate's own tests and with the `parser` feature).
//!
//! # Text the protocol cannot carry
//!
//! Some names cannot be written so that every parser reads them back the same way. The encoder
//! replaces what it cannot represent by a space (which it then escapes):
//!
//! - `\n`, `\r` anywhere (names, tags, string values), and the other ASCII control characters
//!   (U+0000..U+001F, U+007F) in measurements, tag keys, tag values and field keys;
//! - in measurements, tag keys, tag values and field keys, a backslash that ends the text or is
//!   followed by another backslash, by a character that is escaped in that position (comma and
//!   space; also `=` and `"` in keys and tag values) or by a control character. InfluxDB 1.x and
//!   Telegraf keep such backslashes literally but let them swallow the next character's escape;
//!   `influxdb-line-protocol` turns `\\` into `\` and rejects a trailing backslash. Any other
//!   backslash is written as is and read back as is by all of them.
//!
//! A line whose measurement is empty or starts with `#` (a comment to every parser) is not
//! written, nor are tags with an empty key or value and fields with an empty key.
//! [`reads_back_unchanged`] tells whether a name is carried as it is; the container and pod
//! names read from the node are dropped (and counted) when it is not.

#![forbid(unsafe_code)]

mod encode;
mod escape;
mod number;
#[cfg(any(test, feature = "parser"))]
mod parse;
mod sort;

pub use encode::{Encoder, LineBuilder, TagSet};
pub use escape::{reads_back_unchanged, Name, Plain};
#[cfg(any(test, feature = "parser"))]
pub use parse::{parse_lines, read_by_vector, validate, FieldValue, ParseError, Point};

use serde::{Deserialize, Serialize};

/// The unit of the timestamps written on each line.
///
/// Serialized as `"ns"`, `"us"`, `"ms"` or `"s"` (the names `influx write --precision` and the
/// InfluxDB 1.x `/write?precision=` parameter use, except that 1.x spells microseconds `u`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Nanoseconds (what Telegraf and Vector expect).
    #[default]
    Ns,
    /// Microseconds.
    Us,
    /// Milliseconds.
    Ms,
    /// Seconds.
    S,
}

impl Precision {
    /// Converts a timestamp in nanoseconds to this precision, truncating toward zero.
    #[inline]
    pub const fn from_ns(self, ts_ns: i64) -> i64 {
        match self {
            Precision::Ns => ts_ns,
            Precision::Us => ts_ns / 1_000,
            Precision::Ms => ts_ns / 1_000_000,
            Precision::S => ts_ns / 1_000_000_000,
        }
    }

    /// The config spelling: `"ns"`, `"us"`, `"ms"` or `"s"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Precision::Ns => "ns",
            Precision::Us => "us",
            Precision::Ms => "ms",
            Precision::S => "s",
        }
    }
}

#[cfg(test)]
mod tests;

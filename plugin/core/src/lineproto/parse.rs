//! A strict line-protocol parser (nom 7) following Telegraf's grammar, for tests (feature
//! `parser`), with the owned [`Point`] it reads into.
//!
//! Grammar, one line per `\n` (a last line without `\n` is accepted; `\r` is not a line end and a
//! `\r` before the `\n` is an error):
//!
//! ```text
//! line        = " "* ( "" | "#" any* | point )
//! point       = measurement ( "," tag_key "=" tag_value )* " "+ field ( "," field )*
//!               ( " "+ timestamp )? " "*
//! field       = field_key "=" ( integer | unsigned | float | boolean | string )
//! integer     = "-"? ( "0" | [1-9] [0-9]* ) "i"
//! unsigned    = ( "0" | [1-9] [0-9]* ) "u"                  (read as Int when it fits in i64)
//! float       = "-"? ( ( "0" | [1-9] [0-9]* ) ( "." [0-9]* )? | "." [0-9]+ )
//!               ( [eE] [+-]? [0-9]+ )?                       (finite only)
//! boolean     = t | T | true | True | TRUE | f | F | false | False | FALSE
//! string      = '"' ( [^"\\] | "\" any )* '"'                (\" and \\ unescaped)
//! timestamp   = "-"? [0-9]{1,19}                            (must fit in i64)
//! ```
//!
//! Measurements, tag keys, tag values and field keys are non-empty, contain no control character
//! (U+0000..U+001F, U+007F) and no unescaped separator (comma and space; `=` also in tags and
//! field keys). A backslash takes the next character with it: `\,` and `\ ` (and `\=` outside
//! measurements) are unescaped, any other pair is kept as written; a backslash at the end is an
//! error. Tag keys must be unique.

use super::{Encoder, Precision};
use nom::branch::alt;
use nom::bytes::complete::{tag, take_till, take_while, take_while1};
use nom::character::complete::{char, digit0, digit1, one_of, satisfy};
use nom::combinator::{all_consuming, opt, recognize};
use nom::sequence::{pair, preceded, tuple};
use std::borrow::Cow;
use std::fmt;

/// The value of one field.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    /// A signed 64-bit integer, written `42i`.
    Int(i64),
    /// A float. Non-finite values are never written.
    Float(f64),
    /// A boolean, written `true` / `false`.
    Bool(bool),
    /// A string, written double-quoted.
    Str(String),
}

/// One line of line protocol, owned. The hot path uses [`Encoder`] directly instead.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// The measurement, unescaped.
    pub measurement: String,
    /// Tags, unescaped, in any order (written sorted by key).
    pub tags: Vec<(String, String)>,
    /// Fields, unescaped, in the order they are written.
    pub fields: Vec<(String, FieldValue)>,
    /// When encoding: nanoseconds since the Unix epoch, scaled to the precision on output.
    /// When parsed: the number as written (the text does not say its precision).
    /// `None`: no timestamp (the reader uses its own clock).
    pub timestamp: Option<i64>,
}

impl Point {
    /// Appends this point as one line to `buf`, with the same rules as [`Encoder`]. Returns
    /// whether a line was written (`false` when no field, or the measurement, was writable).
    pub fn encode(&self, precision: Precision, buf: &mut Vec<u8>) -> bool {
        let mut enc = Encoder::with_timestamp(buf, precision, self.timestamp);
        let mut line = enc.line(&self.measurement);
        for (key, value) in &self.tags {
            line = line.tag(key, value);
        }
        for (key, value) in &self.fields {
            line = match value {
                FieldValue::Int(v) => line.field_i64(key, *v),
                FieldValue::Float(v) => line.field_f64(key, *v),
                FieldValue::Bool(v) => line.field_bool(key, *v),
                FieldValue::Str(v) => line.field_str(key, v),
            };
        }
        line.finish();
        enc.lines_written() == 1
    }
}

/// Why a text is not valid line protocol, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// The 1-based line number (every `\n` counts, including empty and comment lines).
    pub line: usize,
    /// What is wrong, e.g. `expected field value after 'as_client='`.
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for ParseError {}

/// Parses every line of `input`; the first invalid line fails the whole text.
pub fn parse_lines(input: &str) -> Result<Vec<Point>, ParseError> {
    let mut points = Vec::new();
    for_each_line(input, |p| points.push(p))?;
    Ok(points)
}

/// Checks `input`, returning how many points (lines that are neither empty nor comments) it has.
pub fn validate(input: &str) -> Result<usize, ParseError> {
    let mut n = 0;
    for_each_line(input, |_| n += 1)?;
    Ok(n)
}

fn for_each_line(input: &str, mut f: impl FnMut(Point)) -> Result<(), ParseError> {
    for (i, text) in input.split('\n').enumerate() {
        match line(text) {
            Ok(Some(p)) => f(p),
            Ok(None) => {}
            Err(message) => {
                return Err(ParseError {
                    line: i + 1,
                    message,
                })
            }
        }
    }
    Ok(())
}

/// A parse error: nom's own (recoverable, no message) or ours (fatal, with a message).
#[derive(Debug)]
struct Error {
    message: Option<String>,
}

impl<I> nom::error::ParseError<I> for Error {
    fn from_error_kind(_: I, _: nom::error::ErrorKind) -> Self {
        Error { message: None }
    }

    fn append(_: I, _: nom::error::ErrorKind, other: Self) -> Self {
        other
    }
}

type PResult<'a, T> = nom::IResult<&'a str, T, Error>;

fn fail<T>(message: String) -> Result<T, nom::Err<Error>> {
    Err(nom::Err::Failure(Error {
        message: Some(message),
    }))
}

/// One line without its `\n`: `None` for an empty or comment line.
fn line(text: &str) -> Result<Option<Point>, String> {
    let (rest, _) = spaces0(text).map_err(message)?;
    if rest.is_empty() || rest.starts_with('#') {
        return Ok(None);
    }
    if rest.ends_with('\r') {
        return Err("line ends with \\r\\n: line protocol lines end with \\n only".into());
    }
    match point(rest) {
        Ok((_, p)) => Ok(Some(p)),
        Err(e) => Err(message(e)),
    }
}

fn message(e: nom::Err<Error>) -> String {
    match e {
        nom::Err::Error(e) | nom::Err::Failure(e) => {
            e.message.unwrap_or_else(|| "invalid line".into())
        }
        nom::Err::Incomplete(_) => "incomplete line".into(),
    }
}

fn spaces0(i: &str) -> PResult<'_, &str> {
    take_while(|c| c == ' ')(i)
}

fn spaces1(i: &str) -> PResult<'_, &str> {
    take_while1(|c| c == ' ')(i)
}

fn point(i: &str) -> PResult<'_, Point> {
    let (mut i, measurement) = name(Part::Measurement)(i)?;
    if measurement.is_empty() {
        return fail("missing measurement".into());
    }
    let mut tags: Vec<(String, String)> = Vec::new();
    while let Ok((rest, _)) = char::<_, Error>(',')(i) {
        let (rest, key) = name(Part::TagKey)(rest)?;
        if key.is_empty() {
            return fail("empty tag key".into());
        }
        let Ok((rest, _)) = char::<_, Error>('=')(rest) else {
            return fail(format!("expected '=' after tag key '{key}'"));
        };
        let (rest, value) = name(Part::TagValue)(rest)?;
        if value.is_empty() {
            return fail(format!("empty tag value for tag key '{key}'"));
        }
        if rest.starts_with('=') {
            return fail(format!("unescaped '=' in the value of tag '{key}'"));
        }
        if tags.iter().any(|(k, _)| *k == key) {
            return fail(format!("duplicate tag key '{key}'"));
        }
        tags.push((key.into_owned(), value.into_owned()));
        i = rest;
    }
    if i.trim_start_matches(' ').is_empty() {
        return fail("missing fields: a line needs at least one field".into());
    }
    let (i, _) = spaces1(i)?;
    let (mut i, first) = field(i)?;
    let mut fields = vec![first];
    while let Ok((rest, _)) = char::<_, Error>(',')(i) {
        let (rest, f) = field(rest)?;
        fields.push(f);
        i = rest;
    }
    let (i, timestamp) = opt(preceded(spaces1, opt(timestamp)))(i)?;
    let (i, _) = spaces0(i)?;
    if !i.is_empty() {
        return fail(format!("unexpected text '{i}' after the fields"));
    }
    Ok((
        i,
        Point {
            measurement: measurement.into_owned(),
            tags,
            fields,
            timestamp: timestamp.flatten(),
        },
    ))
}

#[derive(Clone, Copy, PartialEq)]
enum Part {
    Measurement,
    TagKey,
    TagValue,
    FieldKey,
}

impl Part {
    fn what(self) -> &'static str {
        match self {
            Part::Measurement => "measurement",
            Part::TagKey => "tag key",
            Part::TagValue => "tag value",
            Part::FieldKey => "field key",
        }
    }

    /// Characters that end this part when not escaped.
    fn ends_at(self, c: char) -> bool {
        c == ',' || c == ' ' || (self != Part::Measurement && c == '=')
    }
}

/// A measurement, tag key, tag value or field key, unescaped (possibly empty: callers check).
fn name(part: Part) -> impl Fn(&str) -> PResult<'_, Cow<'_, str>> {
    move |i: &str| {
        let (rest, raw) = take_till(|c| part.ends_at(c) || c == '\\' || c.is_ascii_control())(i)?;
        if rest.is_empty() || part.ends_at(rest.chars().next().unwrap_or(' ')) {
            return Ok((rest, Cow::Borrowed(raw)));
        }
        // Slow path: escapes or control characters.
        let mut out = String::from(raw);
        let mut chars = rest.char_indices();
        while let Some((at, c)) = chars.next() {
            if part.ends_at(c) {
                return Ok((&rest[at..], Cow::Owned(out)));
            }
            if c.is_ascii_control() {
                return fail(format!(
                    "control character U+{:04X} in {} '{}'",
                    u32::from(c),
                    part.what(),
                    out
                ));
            }
            if c != '\\' {
                out.push(c);
                continue;
            }
            match chars.next() {
                None => return fail(format!("{} '{}' ends with a backslash", part.what(), out)),
                Some((_, n)) if n.is_ascii_control() => {
                    return fail(format!(
                        "control character U+{:04X} in {} '{}'",
                        u32::from(n),
                        part.what(),
                        out
                    ))
                }
                Some((_, n)) if part.ends_at(n) => out.push(n),
                Some((_, n)) => {
                    out.push('\\');
                    out.push(n);
                }
            }
        }
        Ok(("", Cow::Owned(out)))
    }
}

fn field(i: &str) -> PResult<'_, (String, FieldValue)> {
    let (i, key) = name(Part::FieldKey)(i)?;
    if key.is_empty() {
        return fail("empty field key".into());
    }
    let Ok((i, _)) = char::<_, Error>('=')(i) else {
        return fail(format!("expected '=' after field key '{key}'"));
    };
    let value = if i.starts_with('"') {
        match string_value(i) {
            Ok((rest, s)) => (rest, FieldValue::Str(s)),
            Err(_) => return fail(format!("unterminated string value of field '{key}'")),
        }
    } else {
        let (rest, token) = take_till(|c| c == ',' || c == ' ')(i)?;
        if token.is_empty() {
            return fail(format!("expected field value after '{key}='"));
        }
        match scalar(token) {
            Ok(v) => (rest, v),
            Err(why) => return fail(format!("invalid value '{token}' of field '{key}': {why}")),
        }
    };
    let (rest, v) = value;
    if !(rest.is_empty() || rest.starts_with(',') || rest.starts_with(' ')) {
        return fail(format!(
            "unexpected text '{rest}' after the value of field '{key}'"
        ));
    }
    Ok((rest, (key.into_owned(), v)))
}

/// A double-quoted string: `\"` and `\\` are unescaped, any other backslash pair kept.
fn string_value(i: &str) -> PResult<'_, String> {
    let (mut i, _) = char('"')(i)?;
    let mut out = String::new();
    loop {
        let (rest, run) = take_till(|c| c == '"' || c == '\\')(i)?;
        out.push_str(run);
        let (rest, c) = satisfy(|_| true)(rest)?;
        if c == '"' {
            return Ok((rest, out));
        }
        let (rest, n) = satisfy(|_| true)(rest)?;
        if n != '"' && n != '\\' {
            out.push('\\');
        }
        out.push(n);
        i = rest;
    }
}

/// An unquoted field value: a number or a boolean.
fn scalar(token: &str) -> Result<FieldValue, &'static str> {
    if let Ok((_, b)) = all_consuming(boolean)(token) {
        return Ok(FieldValue::Bool(b));
    }
    if let Ok((_, digits)) = all_consuming(integer_with('i'))(token) {
        return digits
            .parse()
            .map(FieldValue::Int)
            .map_err(|_| "integer out of the int64 range");
    }
    if let Ok((_, digits)) = all_consuming(unsigned_with('u'))(token) {
        return match digits.parse::<u64>().map(i64::try_from) {
            Ok(Ok(v)) => Ok(FieldValue::Int(v)),
            _ => Err("unsigned integer out of the int64 range"),
        };
    }
    if all_consuming(float)(token).is_ok() {
        return match token.parse::<f64>() {
            Ok(v) if v.is_finite() => Ok(FieldValue::Float(v)),
            _ => Err("float out of range (infinity is not allowed)"),
        };
    }
    let lower = token.trim_start_matches(['-', '+']).to_ascii_lowercase();
    if matches!(lower.as_str(), "nan" | "inf" | "infinity") {
        return Err("NaN and infinity are not allowed");
    }
    Err("not a number, boolean or quoted string")
}

fn boolean(i: &str) -> PResult<'_, bool> {
    let truth = alt((tag("true"), tag("True"), tag("TRUE"), tag("t"), tag("T")));
    let falsity = alt((tag("false"), tag("False"), tag("FALSE"), tag("f"), tag("F")));
    alt((
        nom::combinator::value(true, truth),
        nom::combinator::value(false, falsity),
    ))(i)
}

/// `0` or digits without a leading zero.
fn natural(i: &str) -> PResult<'_, &str> {
    alt((
        recognize(pair(satisfy(|c| ('1'..='9').contains(&c)), digit0)),
        tag("0"),
    ))(i)
}

fn integer_with(suffix: char) -> impl Fn(&str) -> PResult<'_, &str> {
    move |i| {
        let (i, digits) = recognize(pair(opt(char('-')), natural))(i)?;
        let (i, _) = char(suffix)(i)?;
        Ok((i, digits))
    }
}

fn unsigned_with(suffix: char) -> impl Fn(&str) -> PResult<'_, &str> {
    move |i| {
        let (i, digits) = natural(i)?;
        let (i, _) = char(suffix)(i)?;
        Ok((i, digits))
    }
}

fn float(i: &str) -> PResult<'_, &str> {
    let mantissa = alt((
        recognize(pair(natural, opt(pair(char('.'), digit0)))),
        recognize(pair(char('.'), digit1)),
    ));
    let exponent = tuple((one_of("eE"), opt(one_of("+-")), digit1));
    recognize(tuple((opt(char('-')), mantissa, opt(exponent))))(i)
}

fn timestamp(i: &str) -> PResult<'_, i64> {
    let (rest, text) = recognize(pair(opt(char('-')), digit1))(i)?;
    if !(rest.is_empty() || rest.starts_with(' ')) {
        return fail(format!(
            "invalid timestamp '{}'",
            i.split(' ').next().unwrap_or(i)
        ));
    }
    if text.trim_start_matches('-').len() > 19 {
        return fail(format!("timestamp '{text}' has more than 19 digits"));
    }
    match text.parse() {
        Ok(ts) => Ok((rest, ts)),
        Err(_) => fail(format!("timestamp '{text}' out of the int64 range")),
    }
}

/// The point as `influxdb-line-protocol` 2 (the parser Vector uses) reads `text`, one line:
/// the second reader the tests and the fuzz targets check the encoder against.
pub fn read_by_vector(text: &str) -> Result<Point, String> {
    use influxdb_line_protocol::FieldValue as V;
    let mut lines = influxdb_line_protocol::parse_lines(text);
    let line = lines
        .next()
        .ok_or("no line")?
        .map_err(|e| format!("rejected: {e}"))?;
    if lines.next().is_some() {
        return Err("more than one line".into());
    }
    let fields = line
        .field_set
        .iter()
        .map(|(k, v)| {
            let v = match v {
                V::I64(v) => FieldValue::Int(*v),
                V::F64(v) => FieldValue::Float(*v),
                V::Boolean(v) => FieldValue::Bool(*v),
                V::String(v) => FieldValue::Str(v.to_string()),
                V::U64(v) => return Err(format!("unsigned value {v}")),
            };
            Ok((k.to_string(), v))
        })
        .collect::<Result<_, String>>()?;
    Ok(Point {
        measurement: line.series.measurement.to_string(),
        tags: line
            .series
            .tag_set
            .iter()
            .flatten()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        fields,
        timestamp: line.timestamp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(
        m: &str,
        tags: &[(&str, &str)],
        fields: Vec<(&str, FieldValue)>,
        ts: Option<i64>,
    ) -> Point {
        Point {
            measurement: m.into(),
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            fields: fields
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            timestamp: ts,
        }
    }

    use FieldValue::{Bool, Float, Int, Str};

    #[test]
    fn parses_valid_lines() {
        let cases: Vec<(&str, Point)> = vec![
            (
                "container:num_flows,ifid=0,container=1edb6c16e3d2 as_client=3i,rtt=1.25 1700000000000000000",
                p(
                    "container:num_flows",
                    &[("ifid", "0"), ("container", "1edb6c16e3d2")],
                    vec![("as_client", Int(3)), ("rtt", Float(1.25))],
                    Some(1_700_000_000_000_000_000),
                ),
            ),
            ("m f=1", p("m", &[], vec![("f", Float(1.0))], None)),
            ("m f=-0", p("m", &[], vec![("f", Float(-0.0))], None)),
            ("m f=1.", p("m", &[], vec![("f", Float(1.0))], None)),
            ("m f=.5", p("m", &[], vec![("f", Float(0.5))], None)),
            ("m f=1e3", p("m", &[], vec![("f", Float(1000.0))], None)),
            ("m f=-1.5E-3", p("m", &[], vec![("f", Float(-0.0015))], None)),
            ("m f=1.5e+2", p("m", &[], vec![("f", Float(150.0))], None)),
            ("m f=0i,g=-12i", p("m", &[], vec![("f", Int(0)), ("g", Int(-12))], None)),
            (
                "m f=9223372036854775807i,g=-9223372036854775808i",
                p("m", &[], vec![("f", Int(i64::MAX)), ("g", Int(i64::MIN))], None),
            ),
            ("m f=42u", p("m", &[], vec![("f", Int(42))], None)),
            (
                "m a=t,b=T,c=true,d=True,e=TRUE,f=f,g=F,h=false,i=False,j=FALSE",
                p(
                    "m",
                    &[],
                    vec![
                        ("a", Bool(true)),
                        ("b", Bool(true)),
                        ("c", Bool(true)),
                        ("d", Bool(true)),
                        ("e", Bool(true)),
                        ("f", Bool(false)),
                        ("g", Bool(false)),
                        ("h", Bool(false)),
                        ("i", Bool(false)),
                        ("j", Bool(false)),
                    ],
                    None,
                ),
            ),
            (
                r#"m s="a \"q\" \\ \x, =",e="""#,
                p("m", &[], vec![("s", Str(r#"a "q" \ \x, ="#.into())), ("e", Str("".into()))], None),
            ),
            (
                r"my\ m\,x\=,t\ k\,\==v\ a\,l\=,z=a\b f\ \,\==1i -5",
                p(
                    r"my m,x\=",
                    &[("t k,=", "v a,l="), ("z", r"a\b")],
                    vec![("f ,=", Int(1))],
                    Some(-5),
                ),
            ),
            ("  m f=1i   7  ", p("m", &[], vec![("f", Int(1))], Some(7))),
            ("m f=1i  ", p("m", &[], vec![("f", Int(1))], None)),
            ("m=x f=1i", p("m=x", &[], vec![("f", Int(1))], None)),
            (
                "π,é=ü\\ ö ß=\"✓\t\" 9223372036854775807",
                p("π", &[("é", "ü ö")], vec![("ß", Str("✓\t".into()))], Some(i64::MAX)),
            ),
        ];
        for (text, want) in cases {
            let got = parse_lines(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
            assert_eq!(got, vec![want], "{text:?}");
        }
    }

    #[test]
    fn skips_empty_and_comment_lines_and_counts_points() {
        let text = "\n# comment\n  # indented comment\n   \nm f=1i\nm f=2i";
        assert_eq!(validate(text), Ok(2));
        assert_eq!(validate(""), Ok(0));
        assert_eq!(validate("m f=1i\n"), Ok(1));
        assert_eq!(parse_lines("m f=1i\nn g=2i\n").unwrap().len(), 2);
    }

    #[test]
    fn rejects_invalid_lines_with_their_line_number() {
        let cases: &[(&str, usize, &str)] = &[
            ("m", 1, "missing fields: a line needs at least one field"),
            ("m,t=v", 1, "missing fields: a line needs at least one field"),
            ("m ", 1, "missing fields: a line needs at least one field"),
            ("ok f=1i\n\nm f=", 3, "expected field value after 'f='"),
            ("# c\nm as_client=", 2, "expected field value after 'as_client='"),
            ("m f=1i,", 1, "empty field key"),
            ("m f", 1, "expected '=' after field key 'f'"),
            (",t=v f=1i", 1, "missing measurement"),
            ("m,=v f=1i", 1, "empty tag key"),
            ("m,t= f=1i", 1, "empty tag value for tag key 't'"),
            ("m,t f=1i", 1, "expected '=' after tag key 't'"),
            ("m,t=a=b f=1i", 1, "unescaped '=' in the value of tag 't'"),
            ("m,t=1,u=2,t=3 f=1i", 1, "duplicate tag key 't'"),
            ("m\tx f=1i", 1, "control character U+0009 in measurement 'm'"),
            ("m,t=a\u{1}b f=1i", 1, "control character U+0001 in tag value 'a'"),
            ("m f\u{7f}=1i", 1, "control character U+007F in field key 'f'"),
            ("m\\", 1, "measurement 'm' ends with a backslash"),
            ("m f=1i\r", 1, "line ends with \\r\\n: line protocol lines end with \\n only"),
            ("m f=1i\r\nn f=1i", 1, "line ends with \\r\\n: line protocol lines end with \\n only"),
            ("m f=1i\rn f=2i", 1, "invalid value '1i\rn' of field 'f': not a number, boolean or quoted string"),
            ("m f=NaN", 1, "invalid value 'NaN' of field 'f': NaN and infinity are not allowed"),
            ("m f=-inf", 1, "invalid value '-inf' of field 'f': NaN and infinity are not allowed"),
            ("m f=1e999", 1, "invalid value '1e999' of field 'f': float out of range (infinity is not allowed)"),
            ("m f=01i", 1, "invalid value '01i' of field 'f': not a number, boolean or quoted string"),
            ("m f=01", 1, "invalid value '01' of field 'f': not a number, boolean or quoted string"),
            ("m f=-1u", 1, "invalid value '-1u' of field 'f': not a number, boolean or quoted string"),
            ("m f=9223372036854775808u", 1, "invalid value '9223372036854775808u' of field 'f': unsigned integer out of the int64 range"),
            ("m f=9223372036854775808i", 1, "invalid value '9223372036854775808i' of field 'f': integer out of the int64 range"),
            ("m f=yes", 1, "invalid value 'yes' of field 'f': not a number, boolean or quoted string"),
            ("m f=.", 1, "invalid value '.' of field 'f': not a number, boolean or quoted string"),
            ("m f=\"abc", 1, "unterminated string value of field 'f'"),
            ("m f=\"abc\\\"", 1, "unterminated string value of field 'f'"),
            ("m f=\"a\"b", 1, "unexpected text 'b' after the value of field 'f'"),
            ("m f=1i 12345678901234567890", 1, "timestamp '12345678901234567890' has more than 19 digits"),
            ("m f=1i 9223372036854775808", 1, "timestamp '9223372036854775808' out of the int64 range"),
            ("m f=1i 12x", 1, "invalid timestamp '12x'"),
            ("m f=1i 12 13", 1, "unexpected text '13' after the fields"),
            ("m f=1i x", 1, "unexpected text 'x' after the fields"),
            ("m=1", 1, "missing fields: a line needs at least one field"),
        ];
        for (text, line, message) in cases {
            let err = parse_lines(text).expect_err(text);
            assert_eq!(
                (err.line, err.message.as_str()),
                (*line, *message),
                "{text:?}"
            );
            assert_eq!(validate(text), Err(err));
        }
    }

    #[test]
    fn error_display_names_the_line() {
        let err = parse_lines("a f=1i\nb f=2i\nc as_client=").unwrap_err();
        assert_eq!(
            err.to_string(),
            "line 3: expected field value after 'as_client='"
        );
        let boxed: Box<dyn std::error::Error> = Box::new(err);
        assert!(boxed.to_string().starts_with("line 3"));
    }
}

//! Property tests of the line-protocol module: encode then parse gives the same point back, with
//! our strict parser and with `influxdb-line-protocol` (the parser Vector uses).

use super::*;
use proptest::prelude::*;

/// Text with many of the characters line protocol treats specially, and any other non-control
/// character (unicode included).
fn text(min: usize) -> impl Strategy<Value = String> {
    let ch = prop_oneof![
        3 => any::<char>().prop_filter("no control characters", |c| !c.is_control()),
        2 => prop::sample::select(vec![' ', ',', '=', '"', '\\', '#', 'a', 'Z', '0', 'é', '✓']),
    ];
    prop::collection::vec(ch, min..8).prop_map(|v| v.into_iter().collect())
}

fn float() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>(),
        any::<u64>().prop_map(f64::from_bits),
        (any::<i32>(), 0..10u32).prop_map(|(m, k)| f64::from(m) / 10f64.powi(k as i32)),
    ]
    .prop_filter("finite", |v| v.is_finite())
}

fn value() -> impl Strategy<Value = FieldValue> {
    prop_oneof![
        any::<i64>().prop_map(FieldValue::Int),
        float().prop_map(FieldValue::Float),
        any::<bool>().prop_map(FieldValue::Bool),
        text(0).prop_map(FieldValue::Str),
    ]
}

fn point() -> impl Strategy<Value = Point> {
    (
        text(1).prop_filter("not a comment", |m| !m.starts_with('#')),
        prop::collection::vec((text(1), text(1)), 0..6),
        prop::collection::vec((text(1), value()), 1..5),
        prop::option::of(any::<i64>()),
    )
        .prop_map(|(measurement, tags, fields, timestamp)| {
            // Unique keys as they will be read back (two keys may be written the same way).
            let mut seen = Vec::new();
            let tags = tags
                .into_iter()
                .filter(|(k, _)| {
                    let r = readable(k, true);
                    let fresh = !seen.contains(&r);
                    seen.push(r);
                    fresh
                })
                .collect();
            Point {
                measurement,
                tags,
                fields,
                timestamp,
            }
        })
}

/// What a name is read back as (the module docs' rules, written independently of the encoder):
/// a backslash that ends the text or comes before `\`, `,` or a space (and `=` or `"` in keys
/// and tag values) is replaced by a space.
fn readable(s: &str, key: bool) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::new();
    for (i, &c) in chars.iter().enumerate() {
        let replaced = c.is_ascii_control()
            || (c == '\\'
                && match chars.get(i + 1) {
                    None => true,
                    Some(&n) => {
                        n.is_ascii_control()
                            || matches!(n, '\\' | ',' | ' ')
                            || (key && matches!(n, '=' | '"'))
                    }
                });
        out.push(if replaced { ' ' } else { c });
    }
    out
}

/// The point as it must be read back: names made readable, tags sorted by key.
fn expected(p: &Point) -> Point {
    let mut tags: Vec<(String, String)> = p
        .tags
        .iter()
        .map(|(k, v)| (readable(k, true), readable(v, true)))
        .collect();
    tags.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    Point {
        measurement: readable(&p.measurement, false),
        tags,
        fields: p
            .fields
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    FieldValue::Str(s) => FieldValue::Str(s.replace(['\n', '\r'], " ")),
                    other => other.clone(),
                };
                (readable(k, true), v)
            })
            .collect(),
        timestamp: p.timestamp,
    }
}

/// Debug text: equal iff equal with floats compared bit for bit (`{:?}` round-trips exactly).
fn exact(p: &Point) -> String {
    format!("{p:?}")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn encode_then_parse_gives_the_point_back(p in point()) {
        let mut buf = Vec::new();
        prop_assert!(p.encode(Precision::Ns, &mut buf));
        let text = String::from_utf8(buf).unwrap();
        prop_assert!(text.ends_with('\n'));
        prop_assert_eq!(text.matches('\n').count(), 1);
        prop_assert!(!text.contains('\r'));
        let want = exact(&expected(&p));

        let ours = parse_lines(&text).map_err(|e| TestCaseError::fail(format!("{text:?}: {e}")))?;
        prop_assert_eq!(ours.len(), 1);
        prop_assert_eq!(exact(&ours[0]), want.clone(), "ours, text {:?}", text);

        let vector = read_by_vector(&text).map_err(|e| TestCaseError::fail(format!("{text:?}: {e}")))?;
        prop_assert_eq!(exact(&vector), want, "influxdb-line-protocol, text {:?}", text);
    }

    #[test]
    fn encoder_and_point_encode_agree_and_count_lines(ps in prop::collection::vec(point(), 1..5), ts in any::<i64>()) {
        let mut by_point = Vec::new();
        for p in &ps {
            let p = Point { timestamp: Some(ts), ..p.clone() };
            p.encode(Precision::Us, &mut by_point);
        }
        let mut by_encoder = Vec::new();
        let mut enc = Encoder::new(&mut by_encoder, Precision::Us, ts);
        for p in &ps {
            let mut line = enc.line(&p.measurement);
            for (k, v) in &p.tags {
                line = line.tag(k, v);
            }
            for (k, v) in &p.fields {
                line = match v {
                    FieldValue::Int(v) => line.field_i64(k, *v),
                    FieldValue::Float(v) => line.field_f64(k, *v),
                    FieldValue::Bool(v) => line.field_bool(k, *v),
                    FieldValue::Str(v) => line.field_str(k, v),
                };
            }
            line.finish();
        }
        prop_assert_eq!(enc.lines_written(), ps.len() as u64);
        drop(enc);
        prop_assert_eq!(&by_point, &by_encoder);
        let text = String::from_utf8(by_encoder).unwrap();
        prop_assert_eq!(validate(&text), Ok(ps.len()));
        let ts_text = format!(" {}\n", Precision::Us.from_ns(ts));
        prop_assert!(text.split_inclusive('\n').all(|l| l.ends_with(&ts_text)));
    }

    /// A line from a prebuilt tag set, with or without one more tag added after it, is the
    /// line the tags given one by one make (escaping, order, empty tags left out).
    #[test]
    fn tag_sets_write_what_single_tags_write(p in point(), split in 0..7usize) {
        let split = split.min(p.tags.len());
        let (set_tags, more) = p.tags.split_at(split);
        let more = &more[..more.len().min(1)];
        fn fields(line: LineBuilder<'_, '_>) {
            line.field_i64("f", 1).field_str("s", "x").finish();
        }
        let mut by_tags = Vec::new();
        let mut enc = Encoder::new(&mut by_tags, Precision::Ns, 7);
        let mut line = enc.line(&p.measurement);
        for (k, v) in set_tags.iter().chain(more) {
            line = line.tag(k, v);
        }
        fields(line);
        drop(enc);
        let mut set = TagSet::default();
        set.set(&[("stale", "tag")]);
        let pairs: Vec<(&str, &str)> = set_tags.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        set.set(&pairs);
        let mut by_set = Vec::new();
        let mut enc = Encoder::new(&mut by_set, Precision::Ns, 7);
        let mut line = enc.line_tagged(&p.measurement, &set);
        for (k, v) in more {
            line = line.tag(k, v);
        }
        fields(line);
        drop(enc);
        prop_assert_eq!(String::from_utf8(by_set).unwrap(), String::from_utf8(by_tags).unwrap());
    }

    /// Numbers are written `-?\d+i` or `-?\d+(\.\d+)?(e-?\d+)?`: never `u`, `NaN`, `inf`, `+`,
    /// `1.` or `.5`.
    #[test]
    fn numbers_use_the_common_grammar(i in any::<i64>(), bits in any::<u64>(), f in float()) {
        let mut buf = Vec::new();
        let mut enc = Encoder::new(&mut buf, Precision::Ns, 0);
        enc.line("m")
            .field_i64("i", i)
            .field_f64("b", f64::from_bits(bits))
            .field_f64("f", f)
            .finish();
        drop(enc);
        let text = String::from_utf8(buf).unwrap();
        let fields = text.strip_prefix("m ").unwrap().strip_suffix(" 0\n").unwrap();
        for field in fields.split(',') {
            let (key, value) = field.split_once('=').unwrap();
            prop_assert!(!value.contains(['u', 'N', 'n', 'I', '+']), "{}", text);
            let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
            let unsigned = value.strip_prefix('-').unwrap_or(value);
            if key == "i" {
                prop_assert!(digits(unsigned.strip_suffix('i').unwrap()), "{}", text);
            } else {
                let (mantissa, exponent) = unsigned.split_once('e').unwrap_or((unsigned, "0"));
                let ok_mantissa = match mantissa.split_once('.') {
                    Some((a, b)) => digits(a) && digits(b),
                    None => digits(mantissa),
                };
                prop_assert!(ok_mantissa, "{}", text);
                prop_assert!(digits(exponent.strip_prefix('-').unwrap_or(exponent)), "{}", text);
            }
        }
        let nan_or_inf = !f64::from_bits(bits).is_finite();
        prop_assert_eq!(fields.split(',').count(), if nan_or_inf { 2 } else { 3 });
    }
}

#[test]
fn precision_serde_and_names() {
    #[derive(serde::Deserialize, serde::Serialize)]
    struct C {
        p: Precision,
    }
    for (p, name) in [
        (Precision::Ns, "ns"),
        (Precision::Us, "us"),
        (Precision::Ms, "ms"),
        (Precision::S, "s"),
    ] {
        assert_eq!(p.as_str(), name);
        let text = toml::to_string(&C { p }).unwrap();
        assert_eq!(text.trim(), format!("p = \"{name}\""));
        assert_eq!(toml::from_str::<C>(&text).unwrap().p, p);
    }
    assert_eq!(Precision::default(), Precision::Ns);
    assert!(toml::from_str::<C>("p = \"m\"").is_err());
    assert_eq!(Precision::Ms.from_ns(-1_999_999), -1);
    assert_eq!(Precision::S.from_ns(i64::MAX), 9_223_372_036);
}

/// Facts about `influxdb-line-protocol` 2.0.0 (Vector's parser) that shaped the encoder.
#[test]
fn influxdb_line_protocol_quirks() {
    let read = |t: &str| read_by_vector(t);
    // `\\` in names is unescaped to `\` (InfluxDB 1.x and Telegraf keep both backslashes).
    assert_eq!(read(r"a\\b f=1i").unwrap().measurement, r"a\b");
    assert_eq!(read(r"m,t=a\\b f=1i").unwrap().tags[0].1, r"a\b");
    // A name ending in a backslash is rejected.
    assert!(read(r"m,t=a\ f=1i").is_err());
    assert!(read("m\\").is_err());
    // Any other backslash pair is kept as written.
    assert_eq!(read(r"a\x f=1i").unwrap().measurement, r"a\x");
    // Unescaped commas are part of tag keys and field keys, and `=` of tag values.
    assert_eq!(read("m,a,b=c f=1i").unwrap().tags[0].0, "a,b");
    assert_eq!(read("m x,y=1i").unwrap().fields[0].0, "x,y");
    assert_eq!(read("m,t=a=b f=1i").unwrap().tags[0].1, "a=b");
    // A tab ends a name (it is whitespace to this parser), and is no separator either.
    assert!(read("m\tx f=1i").is_err());
    // Floats need digits on both sides of the point; no `+`; `u` is accepted.
    assert!(read("m f=1.").is_err());
    assert!(read("m f=.5").is_err());
    assert!(read("m f=+1").is_err());
    let unsigned = influxdb_line_protocol::parse_lines("m f=1u")
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(
        unsigned.field_set[0].1,
        influxdb_line_protocol::FieldValue::U64(1)
    );
    // A trailing space after the fields is an error unless a timestamp comes first.
    assert!(read("m f=1i ").is_err());
    assert!(read("m f=1i 5 ").is_ok());
    // Leading whitespace and `#` comment lines are skipped; so a measurement starting with `#`
    // cannot be written at all.
    assert!(influxdb_line_protocol::parse_lines("#m f=1i")
        .next()
        .is_none());
    // Duplicate tags are accepted by the parser itself (Vector rejects them later).
    assert!(read("m,t=1,t=2 f=1i").is_ok());
}

proptest! {
    /// A plain name is written exactly as the escaping path writes it (which leaves it as is).
    #[test]
    fn plain_names_write_the_same_bytes_as_checked_ones(
        name in "[a-zA-Z_:][a-zA-Z0-9_:.-]{0,30}",
        tag in text(1),
        value in any::<i64>(),
    ) {
        let leaked: &'static str = Box::leak(name.clone().into_boxed_str());
        let plain = Plain::new(leaked);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        {
            let mut enc = Encoder::new(&mut a, Precision::Ns, 1);
            enc.line(name.as_str()).tag("t", &tag).field_i64(name.as_str(), value).finish();
        }
        {
            let mut enc = Encoder::new(&mut b, Precision::Ns, 1);
            enc.line(plain).tag("t", &tag).field_i64(plain, value).finish();
        }
        prop_assert!(!a.is_empty());
        prop_assert_eq!(a, b);
    }
}

#[test]
#[should_panic(expected = "a plain name needs no escaping")]
fn a_name_that_needs_escaping_is_not_plain() {
    // In a `const` this is a compile error; at run time, a panic.
    let _ = Plain::new("bytes sent");
}

#[test]
#[should_panic(expected = "a plain name is not empty or a comment")]
fn a_comment_is_not_a_plain_name() {
    let _ = Plain::new("#x");
}

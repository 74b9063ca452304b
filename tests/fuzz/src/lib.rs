//! The fuzz targets: each takes any bytes, feeds them to a parser (or the encoder) the way
//! flowlens does, and panics when a property fails; a panic is what the fuzzer reports as a
//! crash. `TARGETS` names them for the AFL++ driver (src/main.rs) and the corpus replay test.
//!
//! The properties are checked against oracles written here, apart from the code under test:
//! the line-protocol rules of the encoder's docs, a netlink message builder, the formats'
//! grammars.

use flowlens::config::Config;
use flowlens::fuzz::{self, DiagSocket, Names, TcpInfo};
use flowlens::fuzz::{is_container_id, is_pod_uid};
use flowlens_core::dns::{self as dnsmsg, rtype, Answer, Question, Rdata};
use flowlens_core::lineproto::{
    parse_lines, read_by_vector, reads_back_unchanged, validate, Encoder, FieldValue, Point,
    Precision, TagSet,
};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// A fuzz target: panics on a broken property.
pub type Target = fn(&[u8]);

/// Every target, by the name its corpus directory and the driver use.
pub const TARGETS: &[(&str, Target)] = &[
    ("lineproto", lineproto),
    ("cgroup", cgroup),
    ("containerd", containerd),
    ("crio", crio),
    ("docker", docker),
    ("log_link", log_link),
    ("sock_diag", sock_diag),
    ("conntrack", conntrack),
    ("config", config),
    ("dns", dns),
];

/// The target named `name`.
pub fn target(name: &str) -> Option<Target> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

/// Bytes as the text a Rust `&str` can hold: invalid UTF-8 becomes U+FFFD, as the lossy
/// conversions of flowlens's readers make it.
fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn le_u64(bytes: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = bytes.len().min(8);
    b[..n].copy_from_slice(&bytes[..n]);
    u64::from_le_bytes(b)
}

// ---------------------------------------------------------------------------------------------
// Line protocol.

/// What a name is read back as, from the encoder's documented rules (lineproto/mod.rs): control
/// characters, and a backslash that ends the text or comes before `\`, `,`, a space or a control
/// character (and `=` or `"` in keys and tag values), become a space.
fn readable(s: &str, key: bool) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
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

/// Debug text: equal iff equal with floats compared bit for bit.
fn exact(p: &Point) -> String {
    format!("{p:?}")
}

/// Checks that `text` is one line that our parser and Vector's both read as `want`.
fn assert_reads_back(text: &str, want: &Point) {
    assert!(text.ends_with('\n'), "{text:?}: no line end");
    assert_eq!(text.matches('\n').count(), 1, "{text:?}: not one line");
    assert!(!text.contains('\r'), "{text:?}: a carriage return");
    let want = exact(want);
    let ours = parse_lines(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
    assert_eq!(ours.len(), 1, "{text:?}");
    assert_eq!(exact(&ours[0]), want, "our parser, text {text:?}");
    assert_eq!(validate(text), Ok(1), "{text:?}");
    let vector = read_by_vector(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
    assert_eq!(
        exact(&vector),
        want,
        "influxdb-line-protocol, text {text:?}"
    );
}

/// Encoder round trip. The input is chunks separated by 0xFF (a byte UTF-8 never has): a header
/// (tag count, how many tags go in a [`TagSet`], timestamp), the measurement, a key and a value
/// per tag, then a key and a value per field (the value chunk's first byte picks the type).
/// Tags whose keys read back the same are given once (the encoder's contract).
///
/// Properties: a line is written unless the measurement is empty or a comment or no field can
/// be written; it is one line that our parser and `influxdb-line-protocol` both read back as the
/// point with its names made readable (the documented replacements), tags sorted, empty tags,
/// empty keys and non-finite floats left out; [`Point::encode`], the builder and the builder
/// from a [`TagSet`] write the same bytes.
pub fn lineproto(data: &[u8]) {
    let mut chunks = data.split(|&b| b == 0xff);
    let head = chunks.next().unwrap_or_default();
    let h = |i: usize| head.get(i).copied().unwrap_or(0);
    let ntags = usize::from(h(0) % 17);
    let split = usize::from(h(1)) % (ntags + 1);
    let timestamp = (h(2) & 1 == 0).then(|| le_u64(head.get(3..).unwrap_or_default()) as i64);
    let mut next = || text(chunks.next().unwrap_or_default());
    let measurement = next();
    let mut tags: Vec<(String, String)> = Vec::new();
    let mut seen: Vec<String> = Vec::new();
    for _ in 0..ntags {
        let (k, v) = (next(), next());
        if !k.is_empty() && !v.is_empty() {
            let r = readable(&k, true);
            if seen.contains(&r) {
                continue;
            }
            seen.push(r);
        }
        tags.push((k, v));
    }
    let mut fields = Vec::new();
    while let (Some(k), Some(v)) = (chunks.next(), chunks.next()) {
        let (ty, rest) = v.split_first().map_or((0, &[][..]), |(t, r)| (*t, r));
        let value = match ty % 5 {
            0 => FieldValue::Int(le_u64(rest) as i64),
            1 => FieldValue::Float(f64::from_bits(le_u64(rest))),
            // A decimal number: what the encoder's fast path writes.
            2 => FieldValue::Float(
                f64::from(le_u64(rest) as i32) / 10f64.powi(i32::from(h(2) >> 1) % 12),
            ),
            3 => FieldValue::Bool(rest.first().is_some_and(|b| b & 1 == 1)),
            _ => FieldValue::Str(text(rest)),
        };
        fields.push((text(k), value));
    }
    let point = Point {
        measurement,
        tags,
        fields,
        timestamp,
    };

    let mut buf = Vec::new();
    let written = point.encode(Precision::Ns, &mut buf);
    let writable_field = |(k, v): &(String, FieldValue)| {
        !k.is_empty() && !matches!(v, FieldValue::Float(f) if !f.is_finite())
    };
    let m = &point.measurement;
    let writable = !m.is_empty() && !m.starts_with('#') && point.fields.iter().any(writable_field);
    assert_eq!(written, writable, "{point:?}");
    if !writable {
        assert!(buf.is_empty(), "{point:?} wrote {buf:?}");
        return;
    }
    let out = String::from_utf8(buf.clone()).expect("the encoder writes UTF-8");

    let mut want_tags: Vec<(String, String)> = point
        .tags
        .iter()
        .filter(|(k, v)| !k.is_empty() && !v.is_empty())
        .map(|(k, v)| (readable(k, true), readable(v, true)))
        .collect();
    want_tags.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let want = Point {
        measurement: readable(m, false),
        tags: want_tags,
        fields: point
            .fields
            .iter()
            .filter(|f| writable_field(f))
            .map(|(k, v)| {
                let v = match v {
                    FieldValue::Str(s) => FieldValue::Str(s.replace(['\n', '\r'], " ")),
                    other => other.clone(),
                };
                (readable(k, true), v)
            })
            .collect(),
        timestamp: point.timestamp,
    };
    assert_reads_back(&out, &want);

    // The same line from the builder, with the first `split` tags from a TagSet.
    let Some(ts) = point.timestamp else {
        return;
    };
    let fields = |mut line: flowlens_core::lineproto::LineBuilder<'_, '_>| {
        for (k, v) in &point.fields {
            line = match v {
                FieldValue::Int(v) => line.field_i64(k, *v),
                FieldValue::Float(v) => line.field_f64(k, *v),
                FieldValue::Bool(v) => line.field_bool(k, *v),
                FieldValue::Str(v) => line.field_str(k, v),
            };
        }
        line.finish();
    };
    let mut by_builder = Vec::new();
    let mut enc = Encoder::new(&mut by_builder, Precision::Ns, ts);
    let mut line = enc.line(m);
    for (k, v) in &point.tags {
        line = line.tag(k, v);
    }
    fields(line);
    assert_eq!(enc.lines_written(), 1);
    drop(enc);
    assert_eq!(by_builder, buf, "builder");

    // Fewer tags than asked for when keys repeated.
    let (set_tags, more) = point.tags.split_at(split.min(point.tags.len()));
    let mut set = TagSet::default();
    set.set(&[("stale", "tag")]);
    let pairs: Vec<(&str, &str)> = set_tags
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    set.set(&pairs);
    let mut by_set = Vec::new();
    let mut enc = Encoder::new(&mut by_set, Precision::Ns, ts);
    let mut line = enc.line_tagged(m, &set);
    for (k, v) in more {
        line = line.tag(k, v);
    }
    fields(line);
    drop(enc);
    assert_eq!(
        String::from_utf8_lossy(&by_set),
        out,
        "TagSet of {split} tags, then {} more",
        more.len()
    );
}

/// A tag value as flowlens writes it must be read back unchanged by every reader: `container`
/// and `pod` names go through here.
fn assert_tag_value_exact(what: &str, value: &str) {
    let mut buf = Vec::new();
    Encoder::new(&mut buf, Precision::Ns, 1)
        .line("m")
        .tag("t", value)
        .field_i64("f", 1)
        .finish();
    let text = String::from_utf8(buf).expect("UTF-8");
    let want = Point {
        measurement: "m".into(),
        tags: vec![("t".into(), value.into())],
        fields: vec![("f".into(), FieldValue::Int(1))],
        timestamp: Some(1),
    };
    let ours = parse_lines(&text).unwrap_or_else(|e| panic!("{what} {value:?}: {text:?}: {e}"));
    assert_eq!(
        ours,
        vec![want.clone()],
        "{what} {value:?} is not read back unchanged: {text:?}"
    );
    let vector = read_by_vector(&text).unwrap_or_else(|e| panic!("{what} {value:?}: {e}"));
    assert_eq!(
        vector, want,
        "{what} {value:?} is not read back unchanged by influxdb-line-protocol: {text:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Container metadata.

/// What every metadata parser promises of the names it returns: names fit to be tags (at most
/// 253 bytes, no control character, read back unchanged), a pod UID and a sandbox id of their
/// formats.
fn assert_names(n: &Names) {
    for (what, v) in [
        ("container name", &n.name),
        ("pod", &n.pod),
        ("namespace", &n.namespace),
    ] {
        let Some(v) = v else { continue };
        assert!(!v.is_empty() && v.len() <= 253, "{what} {v:?}");
        assert!(!v.chars().any(char::is_control), "{what} {v:?}");
        assert_tag_value_exact(what, v);
    }
    if let Some(uid) = &n.pod_uid {
        assert!(is_pod_uid(uid), "pod uid {uid:?}");
    }
    if let Some(id) = &n.sandbox_id {
        assert!(is_container_id(id), "sandbox id {id:?}");
    }
}

/// What a metadata parser must make of a name it is given: kept when fit to be a tag (non-empty,
/// at most 253 bytes, no control character, read back as it is: [`readable`] leaves it alone),
/// else left out, and counted unless empty.
fn expected_name(v: Option<&String>, dropped: &mut u64) -> Option<String> {
    let v = v.filter(|v| !v.is_empty())?;
    let fit = v.len() <= 253 && !v.chars().any(char::is_control) && readable(v, true) == *v;
    if !fit {
        *dropped += 1;
    }
    fit.then(|| v.clone())
}

/// The strings of a structured-mode input (see [`metadata_file`]), by key.
fn structured_values(data: &[u8], keys: &[&str]) -> Option<Vec<Option<String>>> {
    let (1, rest) = data.split_first()? else {
        return None;
    };
    let mut values: Vec<Option<String>> =
        rest.split(|&b| b == 0xff).map(|v| Some(text(v))).collect();
    values.resize(keys.len(), None);
    Some(values)
}

/// Checks the names a structured input's first three keys (container name, pod, namespace)
/// gave, and the count of those left out.
fn assert_structured_names(data: &[u8], keys: &[&str], got: &Names) {
    let Some(values) = structured_values(data, keys) else {
        return;
    };
    let mut dropped = 0;
    let want = [
        expected_name(values[0].as_ref(), &mut dropped),
        expected_name(values[1].as_ref(), &mut dropped),
        expected_name(values[2].as_ref(), &mut dropped),
    ];
    assert_eq!(
        [got.name.clone(), got.pod.clone(), got.namespace.clone()],
        want
    );
    assert_eq!(got.dropped, dropped, "names left out");
}

/// In structured mode (first byte 0x01) the input is up to eight strings, separated by 0xFF,
/// that become the values of `keys` in a JSON object, escaped as JSON (so NUL, newlines,
/// quotes and backslashes reach the parser inside valid JSON); otherwise it is the file.
fn metadata_file(
    data: &[u8],
    keys: &[&str],
    wrap: fn(serde_json::Value) -> serde_json::Value,
) -> Vec<u8> {
    match data.split_first() {
        Some((1, rest)) => {
            let mut map = serde_json::Map::new();
            for (key, value) in keys.iter().zip(rest.split(|&b| b == 0xff)) {
                map.insert((*key).to_string(), serde_json::Value::String(text(value)));
            }
            wrap(serde_json::Value::Object(map))
                .to_string()
                .into_bytes()
        }
        _ => data.to_vec(),
    }
}

fn oci_spec(annotations: serde_json::Value) -> serde_json::Value {
    serde_json::json!({ "ociVersion": "1.0.2", "annotations": annotations })
}

/// A containerd task bundle's `config.json`. Properties: never a panic; a file read gives fit
/// names ([`assert_names`]) and its runtime from the namespace alone (`moby`: Docker).
pub fn containerd(data: &[u8]) {
    let keys = [
        "io.kubernetes.cri.container-name",
        "io.kubernetes.cri.sandbox-name",
        "io.kubernetes.cri.sandbox-namespace",
        "io.kubernetes.cri.sandbox-uid",
        "io.kubernetes.cri.sandbox-id",
        "io.kubernetes.cri.container-type",
    ];
    let file = metadata_file(data, &keys, oci_spec);
    let k8s = fuzz::containerd_bundle(&file, "k8s.io");
    let moby = fuzz::containerd_bundle(&file, "moby");
    match (k8s, moby) {
        (Ok(a), Ok(b)) => {
            assert_names(&a);
            assert_structured_names(data, &keys, &a);
            assert_eq!(a.runtime, Some(fuzz::Runtime::Containerd));
            assert_eq!(b.runtime, Some(fuzz::Runtime::Docker));
            assert_eq!(
                Names { runtime: None, ..a },
                Names { runtime: None, ..b },
                "the namespace changes only the runtime"
            );
        }
        (Err(a), Err(b)) => {
            assert!(!a.is_empty());
            assert_eq!(a, b);
        }
        (a, b) => panic!("the namespace changed the outcome: {a:?} / {b:?}"),
    }
}

/// CRI-O's `userdata/config.json`. Properties: never a panic; fit names; CRI-O or Podman.
pub fn crio(data: &[u8]) {
    let keys = [
        "io.kubernetes.container.name",
        "io.kubernetes.pod.name",
        "io.kubernetes.pod.namespace",
        "io.kubernetes.pod.uid",
        "io.kubernetes.cri-o.SandboxID",
        "io.kubernetes.cri-o.ContainerType",
        "io.container.manager",
    ];
    let file = metadata_file(data, &keys, oci_spec);
    match fuzz::crio_config(&file) {
        Ok(n) => {
            assert_names(&n);
            assert_structured_names(data, &keys, &n);
            assert!(matches!(
                n.runtime,
                Some(fuzz::Runtime::CriO | fuzz::Runtime::Podman)
            ));
        }
        Err(e) => assert!(!e.is_empty()),
    }
}

/// The container id of the Docker fixture: the directory its `config.v2.json` is read from.
pub const DOCKER_ID: &str = "1edb6c16e3d2a8ec7c2f5e4a0f6d3b1c9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b";

fn docker_container(labels: serde_json::Value) -> serde_json::Value {
    let name = labels.get("Name").cloned().unwrap_or_default();
    serde_json::json!({ "ID": DOCKER_ID, "Name": name, "Config": { "Labels": labels } })
}

/// Docker's `config.v2.json` in the directory of [`DOCKER_ID`]. Properties: never a panic;
/// fit names; Docker; a file naming another container is refused.
pub fn docker(data: &[u8]) {
    let keys = [
        "io.kubernetes.container.name",
        "io.kubernetes.pod.name",
        "io.kubernetes.pod.namespace",
        "io.kubernetes.pod.uid",
        "io.kubernetes.sandbox.id",
        "io.kubernetes.docker.type",
        "Name",
    ];
    let file = metadata_file(data, &keys, docker_container);
    match fuzz::docker_config(&file, DOCKER_ID) {
        Ok(n) => {
            assert_names(&n);
            if let Some(v) = structured_values(data, &keys) {
                // The Kubernetes container name, else Docker's name without its `/`s.
                let mut dropped = 0;
                let k8s = expected_name(v[0].as_ref(), &mut dropped);
                let docker_name = v[6].as_ref().map(|n| n.trim_start_matches('/').to_string());
                let name = k8s.or_else(|| expected_name(docker_name.as_ref(), &mut dropped));
                let pod = expected_name(v[1].as_ref(), &mut dropped);
                let namespace = expected_name(v[2].as_ref(), &mut dropped);
                assert_eq!([&n.name, &n.pod, &n.namespace], [&name, &pod, &namespace]);
                assert_eq!(n.dropped, dropped, "names left out");
            }
            assert_eq!(n.runtime, Some(fuzz::Runtime::Docker));
            // The same file in another container's directory: refused, or it names no id.
            let other = "0".repeat(64);
            if let Ok(m) = fuzz::docker_config(&file, &other) {
                assert_eq!(m, n, "an id-less file reads the same anywhere");
            }
        }
        Err(e) => assert!(!e.is_empty()),
    }
}

/// A kubelet log link's file name. Properties: never a panic; a name that parses is exactly
/// `<pod>_<namespace>_<container>-<id>.log` of what it returns, with fit names and a 64-hex id.
pub fn log_link(data: &[u8]) {
    let name = text(data);
    if let Some((id, n)) = fuzz::log_link_name(&name) {
        assert!(is_container_id(&id), "{id:?}");
        assert_names(&n);
        let (Some(pod), Some(ns), Some(c)) = (&n.pod, &n.namespace, &n.name) else {
            panic!("{name:?}: {n:?} lacks a name");
        };
        assert_eq!(n.dropped, 0);
        assert_eq!(format!("{pod}_{ns}_{c}-{id}.log"), name);
    }
}

// ---------------------------------------------------------------------------------------------
// cgroup paths.

const OTHER_ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// A cgroup path (or, first byte 0x01, a `/proc/<pid>/cgroup` file). Properties: never a panic;
/// a container found has a 64-hex id, a pod UID of its format and a QoS class only with a pod;
/// `.` segments, empty segments and a trailing sub-cgroup change nothing; nested below another
/// container, the innermost wins.
pub fn cgroup(data: &[u8]) {
    if let Some((1, rest)) = data.split_first() {
        let content = text(rest);
        let candidates = fuzz::proc_cgroup(&content);
        let paths: Vec<&str> = content
            .lines()
            .filter_map(|l| l.splitn(3, ':').nth(2))
            .collect();
        assert!(candidates.len() <= paths.len());
        for c in candidates {
            assert!(paths.contains(&c), "{c:?} is no line's path");
            if let Some((cref, _)) = fuzz::cgroup_path(c) {
                assert!(is_container_id(&cref.id));
            }
        }
        return;
    }
    let path = text(data);
    let got = fuzz::cgroup_path(&path);
    if let Some((cref, _)) = &got {
        assert!(is_container_id(&cref.id), "{path:?}: id {:?}", cref.id);
        if let Some(uid) = &cref.pod_uid {
            assert!(is_pod_uid(uid), "{path:?}: pod uid {uid:?}");
        }
        assert!(cref.qos.is_none() || cref.pod_uid.is_some(), "{path:?}");
        assert_eq!(
            fuzz::cgroup_path(&format!("{path}/init")),
            got,
            "{path:?}: a sub-cgroup"
        );
    }
    assert_eq!(
        fuzz::cgroup_path(&format!("/.//{path}")),
        got,
        "{path:?}: /./"
    );
    let nested = fuzz::cgroup_path(&format!("/docker/{OTHER_ID}/{path}"));
    match &got {
        Some(_) => assert_eq!(nested, got, "{path:?}: nested, the innermost wins"),
        None => assert_eq!(
            nested.map(|(c, _)| c.id),
            Some(OTHER_ID.to_string()),
            "{path:?}: nested in a container, no container of its own"
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// sock_diag.

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const SEQ: u32 = 7;

fn push_nlmsg(out: &mut Vec<u8>, ty: u16, seq: u32, payload: &[u8]) {
    let len = 16 + payload.len();
    out.extend_from_slice(&(len as u32).to_ne_bytes());
    out.extend_from_slice(&ty.to_ne_bytes());
    out.extend_from_slice(&2u16.to_ne_bytes()); // NLM_F_MULTI
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.extend_from_slice(payload);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

/// A byte reader over the fuzz input that yields zeros once it runs out.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn take(&mut self, n: usize) -> Vec<u8> {
        let n_have = n.min(self.0.len());
        let mut v = self.0[..n_have].to_vec();
        self.0 = &self.0[n_have..];
        v.resize(n, 0);
        v
    }
    fn u8(&mut self) -> u8 {
        self.take(1)[0]
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.take(2).try_into().unwrap_or_default())
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take(4).try_into().unwrap_or_default())
    }
    fn u64(&mut self) -> u64 {
        le_u64(&self.take(8))
    }
}

/// The socket address sock_diag's parser must make of an `inet_diag_msg` address: IPv4-mapped
/// IPv6 as IPv4, the interface as scope of link-local IPv6 only.
fn expected_addr(v6: bool, raw: &[u8], port: u16, ifindex: u32) -> SocketAddr {
    if !v6 {
        let b: [u8; 4] = raw[..4].try_into().unwrap_or_default();
        return SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(b), port));
    }
    let b: [u8; 16] = raw.try_into().unwrap_or_default();
    let ip = Ipv6Addr::from(b);
    if let Some(v4) = ip.to_ipv4_mapped() {
        return SocketAddr::V4(SocketAddrV4::new(v4, port));
    }
    let scope = if ip.segments()[0] & 0xffc0 == 0xfe80 {
        ifindex
    } else {
        0
    };
    SocketAddr::V6(SocketAddrV6::new(ip, port, 0, scope))
}

/// A sock_diag dump reply. Raw mode: any bytes, parsed as one datagram; properties: never a
/// panic, no more sockets than the bytes can hold, link-local scopes only. Structured mode
/// (first byte 0x01): the input describes messages (sockets with attributes of any length and
/// type, messages of other requests, NOOPs, errors, DONE) that a builder written here turns
/// into a datagram; the parser must return exactly the sockets described, up to the message
/// that ends or fails the dump, and say how it ended.
pub fn sock_diag(data: &[u8]) {
    let Some((1, rest)) = data.split_first() else {
        let (_, socks) = fuzz::sock_diag(data, SEQ);
        assert!(socks.len() <= data.len() / (16 + 72), "{socks:?}");
        for s in &socks {
            for a in [s.local, s.remote] {
                if let SocketAddr::V6(v6) = a {
                    let link_local = v6.ip().segments()[0] & 0xffc0 == 0xfe80;
                    assert!(link_local || v6.scope_id() == 0, "{a}");
                    assert!(v6.ip().to_ipv4_mapped().is_none(), "{a}");
                }
            }
        }
        return;
    };
    let mut input = Bytes(rest);
    let mut datagram = Vec::new();
    let mut want = Vec::new();
    let mut outcome: Option<Result<bool, ()>> = None;
    for _ in 0..usize::from(input.u8() % 8) {
        let kind = input.u8() % 8;
        let seq = if input.u8() % 8 == 0 { SEQ + 1 } else { SEQ };
        let ours = seq == SEQ && outcome.is_none();
        match kind {
            // NOOP
            0 => push_nlmsg(&mut datagram, 1, seq, &[]),
            // NLMSG_ERROR: an acknowledgement (0) or an errno.
            1 => {
                let errno = -i32::from(input.u8() % 3);
                push_nlmsg(&mut datagram, NLMSG_ERROR, seq, &errno.to_ne_bytes());
                if ours && errno != 0 {
                    outcome = Some(Err(()));
                }
            }
            // NLMSG_DONE: 0 or a failed dump.
            2 => {
                let v = -i32::from(input.u8() % 2);
                push_nlmsg(&mut datagram, NLMSG_DONE, seq, &v.to_ne_bytes());
                if ours {
                    outcome = Some(if v == 0 { Ok(true) } else { Err(()) });
                }
            }
            // Some other message type.
            3 => push_nlmsg(
                &mut datagram,
                16 + u16::from(input.u8() % 4),
                seq,
                &input.take(8),
            ),
            // A socket.
            _ => {
                let v6 = input.u8() & 1 == 1;
                let mut msg = vec![0u8; 72];
                msg[0] = if v6 { 10 } else { 2 };
                msg[1] = input.u8();
                let (sport, dport) = (input.u16(), input.u16());
                msg[4..6].copy_from_slice(&sport.to_be_bytes());
                msg[6..8].copy_from_slice(&dport.to_be_bytes());
                let (src, dst) = (input.take(16), input.take(16));
                // A v4-mapped address now and then.
                let mapped = |mut a: Vec<u8>, flag: bool| {
                    if v6 && flag {
                        a[..12].copy_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]);
                    }
                    a
                };
                let flags = input.u8();
                let (src, dst) = (mapped(src, flags & 1 == 1), mapped(dst, flags & 2 == 2));
                msg[8..24].copy_from_slice(&src);
                msg[24..40].copy_from_slice(&dst);
                let ifindex = input.u32();
                let cookie = input.u64();
                let inode = input.u32();
                msg[40..44].copy_from_slice(&ifindex.to_ne_bytes());
                msg[44..48].copy_from_slice(&(cookie as u32).to_ne_bytes());
                msg[48..52].copy_from_slice(&((cookie >> 32) as u32).to_ne_bytes());
                msg[68..72].copy_from_slice(&inode.to_ne_bytes());
                let mut sock = DiagSocket {
                    state: msg[1],
                    local: expected_addr(v6, &src, sport, ifindex),
                    remote: expected_addr(v6, &dst, dport, ifindex),
                    cookie,
                    inode,
                    tcp_info: None,
                    cgroup_id: None,
                    v6only: None,
                };
                for _ in 0..usize::from(input.u8() % 5) {
                    let ty = [2u16, 11, 21, 5][usize::from(input.u8() % 4)];
                    let flag_bits = u16::from(input.u8() % 4) << 14;
                    let len = match ty {
                        2 => usize::from(input.u8()),
                        _ => usize::from(input.u8() % 12),
                    };
                    let data = input.take(len);
                    msg.extend_from_slice(&((4 + len) as u16).to_ne_bytes());
                    msg.extend_from_slice(&(ty | flag_bits).to_ne_bytes());
                    msg.extend_from_slice(&data);
                    while !msg.len().is_multiple_of(4) {
                        msg.push(0);
                    }
                    let u32_at = |o: usize| {
                        data.get(o..o + 4)
                            .map(|b| u32::from_ne_bytes(b.try_into().unwrap_or_default()))
                    };
                    let u64_at = |o: usize| {
                        data.get(o..o + 8)
                            .map(|b| u64::from_ne_bytes(b.try_into().unwrap_or_default()))
                    };
                    match ty {
                        2 => {
                            sock.tcp_info = Some(TcpInfo {
                                rtt_us: u32_at(68),
                                rttvar_us: u32_at(72),
                                total_retrans: u32_at(100),
                                bytes_acked: u64_at(120),
                                bytes_received: u64_at(128),
                            })
                        }
                        11 => sock.v6only = data.first().map(|&b| b != 0),
                        21 => sock.cgroup_id = u64_at(0),
                        _ => {}
                    }
                }
                push_nlmsg(&mut datagram, SOCK_DIAG_BY_FAMILY, seq, &msg);
                if ours {
                    want.push(sock);
                }
            }
        }
    }
    let (res, got) = fuzz::sock_diag(&datagram, SEQ);
    assert_eq!(got, want, "datagram {datagram:?}");
    match outcome {
        None => assert_eq!(res, Ok(false), "datagram {datagram:?}"),
        Some(Ok(done)) => assert_eq!(res, Ok(done), "datagram {datagram:?}"),
        Some(Err(())) => assert!(res.is_err(), "datagram {datagram:?}: {res:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// conntrack (ctnetlink GET replies).

const CT_NEW: u16 = 1 << 8; // NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_NEW

fn push_attr(out: &mut Vec<u8>, ty: u16, data: &[u8]) {
    out.extend_from_slice(&((4 + data.len()) as u16).to_ne_bytes());
    out.extend_from_slice(&ty.to_ne_bytes());
    out.extend_from_slice(data);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

/// One tuple described by the input: its attributes (`CTA_TUPLE_IP`, `CTA_TUPLE_PROTO`), and
/// the addresses the parser must read, `None` when the input left something out or cut an
/// address short.
fn ct_tuple(input: &mut Bytes) -> (Vec<u8>, Option<(SocketAddr, SocketAddr)>) {
    let v6 = input.u8() & 1 == 1;
    let flags = input.u8();
    let omit = |bit: u8| flags & (1 << bit) != 0 && flags & 0x80 != 0;
    let mut ok = true;
    let mut ips = Vec::new();
    let mut addrs = [None, None];
    for (i, ty) in [
        (0usize, if v6 { 3u16 } else { 1 }),
        (1, if v6 { 4 } else { 2 }),
    ] {
        let mut raw = input.take(if v6 { 16 } else { 4 });
        if v6 && input.u8().is_multiple_of(4) {
            raw[..12].copy_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]);
        }
        if omit(i as u8) {
            ok = false;
            continue;
        }
        if omit(4 + i as u8) {
            raw.pop(); // a short address
            ok = false;
        }
        push_attr(&mut ips, ty, &raw);
        addrs[i] = match raw.len() {
            4 => Some(IpAddr::V4(Ipv4Addr::from(
                <[u8; 4]>::try_from(&raw[..]).unwrap(),
            ))),
            16 => Some(IpAddr::V6(Ipv6Addr::from(
                <[u8; 16]>::try_from(&raw[..]).unwrap(),
            ))),
            _ => None,
        };
    }
    // Attributes the parser does not read, in the address nest and the protocol nest.
    for _ in 0..usize::from(input.u8() % 3) {
        let ty = 5 + u16::from(input.u8() % 8);
        let len = usize::from(input.u8() % 20);
        push_attr(&mut ips, ty, &input.take(len));
    }
    let (sport, dport) = (input.u16(), input.u16());
    let mut proto = Vec::new();
    push_attr(&mut proto, 1, &[6]);
    if omit(2) {
        ok = false;
    } else {
        push_attr(&mut proto, 2, &sport.to_be_bytes());
    }
    if omit(3) {
        ok = false;
    } else {
        push_attr(&mut proto, 3, &dport.to_be_bytes());
    }
    let mut tuple = Vec::new();
    if omit(6) {
        ok = false;
    } else {
        push_attr(&mut tuple, 1 | 0x8000, &ips);
    }
    push_attr(&mut tuple, 2 | 0x8000, &proto);
    let want = match (ok, addrs) {
        (true, [Some(s), Some(d)]) => Some((
            SocketAddr::new(s.to_canonical(), sport),
            SocketAddr::new(d.to_canonical(), dport),
        )),
        _ => None,
    };
    (tuple, want)
}

/// A ctnetlink GET reply (conntrack lookups). Raw mode: any bytes, parsed as one datagram;
/// properties: never a panic, addresses read back canonical (no IPv4-mapped IPv6). Structured
/// mode (first byte 0x01): the input describes messages (entries whose tuples may lack any
/// attribute or have a short address, with attributes the parser does not read; errors,
/// acknowledgements, NOOPs, other types; messages of another request) that a builder written
/// here turns into a datagram; the parser must say what the first message of the request
/// that decides says: the entry's four addresses, "no entry" for ENOENT, an error for another
/// errno or a malformed entry, nothing for a datagram without one.
pub fn conntrack(data: &[u8]) {
    let Some((1, rest)) = data.split_first() else {
        if let Ok(Some(Some(addrs))) = fuzz::conntrack_reply(data, SEQ) {
            for a in addrs {
                assert_eq!(a.ip(), a.ip().to_canonical(), "{a}");
            }
        }
        return;
    };
    let mut input = Bytes(rest);
    let mut datagram = Vec::new();
    // The outcome the parser must report: None while undecided.
    let mut want: Option<Result<Option<[SocketAddr; 4]>, ()>> = None;
    for _ in 0..usize::from(input.u8() % 6) {
        let kind = input.u8() % 6;
        let seq = if input.u8().is_multiple_of(6) {
            SEQ + 1
        } else {
            SEQ
        };
        let ours = seq == SEQ && want.is_none();
        match kind {
            0 => push_nlmsg(&mut datagram, 1, seq, &[]),
            1 => {
                let errno = [0, libc_enoent(), 1, 22][usize::from(input.u8() % 4)];
                let mut payload = (-errno).to_ne_bytes().to_vec();
                payload.extend_from_slice(&[0; 16]);
                push_nlmsg(&mut datagram, NLMSG_ERROR, seq, &payload);
                if ours && errno != 0 {
                    want = Some(if errno == libc_enoent() {
                        Ok(None)
                    } else {
                        Err(())
                    });
                }
            }
            2 => push_nlmsg(
                &mut datagram,
                [CT_NEW + 2, 0x200, 16][usize::from(input.u8() % 3)],
                seq,
                &input.take(8),
            ),
            _ => {
                let (orig, o) = ct_tuple(&mut input);
                let (reply, r) = ct_tuple(&mut input);
                let mut payload = vec![if input.u8() & 1 == 1 { 10 } else { 2 }, 0, 0, 0];
                let order = input.u8();
                for _ in 0..usize::from(order % 3) {
                    let len = usize::from(input.u8() % 12);
                    push_attr(
                        &mut payload,
                        3 + u16::from(input.u8() % 20),
                        &input.take(len),
                    );
                }
                let omit_reply = order & 0x40 != 0 && order & 0x80 != 0;
                let tuples = if order & 0x10 != 0 {
                    [(2u16, &reply, omit_reply), (1, &orig, false)]
                } else {
                    [(1, &orig, false), (2, &reply, omit_reply)]
                };
                for (ty, t, omitted) in tuples {
                    if !omitted {
                        push_attr(&mut payload, ty | 0x8000, t);
                    }
                }
                push_nlmsg(&mut datagram, CT_NEW, seq, &payload);
                if ours {
                    want = Some(match (o, r, omit_reply) {
                        (Some(o), Some(r), false) => Ok(Some([o.0, o.1, r.0, r.1])),
                        _ => Err(()),
                    });
                }
            }
        }
    }
    let got = fuzz::conntrack_reply(&datagram, SEQ);
    match want {
        None => assert_eq!(got, Ok(None), "datagram {datagram:?}"),
        Some(Ok(entry)) => assert_eq!(got, Ok(Some(entry)), "datagram {datagram:?}"),
        Some(Err(())) => assert!(got.is_err(), "datagram {datagram:?}: {got:?}"),
    }
}

/// ENOENT (Linux, every architecture).
fn libc_enoent() -> i32 {
    2
}

// ---------------------------------------------------------------------------------------------
// Configuration.

/// A config file's text (lossy UTF-8: the shim refuses a file that is not UTF-8). Properties:
/// never a panic; an error is one line naming the file; an accepted config keeps the documented
/// ranges, its `ifid` is read back unchanged from every line, and it serializes to TOML that
/// loads back to the same config.
pub fn config(data: &[u8]) {
    let source = text(data);
    match Config::from_toml(&source, "fuzz.toml") {
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.starts_with("config fuzz.toml: "), "{msg:?}");
            assert!(!msg.contains(['\n', '\r']), "{msg:?} is not one line");
        }
        Ok(c) => {
            let g = &c.general;
            assert!((1..=86_400).contains(&g.interval_secs));
            assert!((1..=1 << 22).contains(&g.max_flows));
            assert!(g.max_hosts > 0 && g.max_containers > 0 && g.udp_idle_timeout_secs > 0);
            assert!(g.ring_buffer_bytes.is_power_of_two() && g.ring_buffer_bytes >= 4096);
            assert!(!g.hook_kinds.is_empty());
            assert_tag_value_exact("ifid", &g.ifid);
            let again = toml::to_string(g).expect("an accepted config serializes");
            let back = Config::from_toml(&again, "again")
                .unwrap_or_else(|e| panic!("{again:?} does not load back: {e}"));
            assert_eq!(back, c);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// DNS messages.

/// A label in presentation form as RFC 1035 section 5.1 writes it, the oracle's own: lowercase,
/// `a-z`, `0-9`, `-`, `_`, `*` as they are, any other byte `\DDD`.
fn dns_label(label: &[u8]) -> String {
    label
        .iter()
        .map(|b| b.to_ascii_lowercase())
        .map(|b| match b {
            b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'*' => (b as char).to_string(),
            _ => format!("\\{b:03}"),
        })
        .collect()
}

/// A name's presentation form from its labels (`.` for the root).
fn dns_name(labels: &[Vec<u8>]) -> String {
    if labels.is_empty() {
        return ".".into();
    }
    labels
        .iter()
        .map(|l| dns_label(l))
        .collect::<Vec<_>>()
        .join(".")
}

/// The labels of a name in presentation form (the inverse of [`dns_name`]); `None` when the
/// text is not one.
fn dns_labels(name: &str) -> Option<Vec<Vec<u8>>> {
    if name == "." {
        return Some(Vec::new());
    }
    let mut labels = vec![Vec::new()];
    let b = name.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'.' => labels.push(Vec::new()),
            b'\\' => {
                let digits = std::str::from_utf8(b.get(i + 1..i + 4)?).ok()?;
                if !digits.bytes().all(|d| d.is_ascii_digit()) {
                    return None;
                }
                labels.last_mut()?.push(digits.parse::<u8>().ok()?);
                i += 3;
            }
            c @ (b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'*') => labels.last_mut()?.push(c),
            _ => return None,
        }
        i += 1;
    }
    Some(labels)
}

/// A name's wire form, uncompressed.
fn dns_wire(labels: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for l in labels {
        out.push(l.len() as u8);
        out.extend_from_slice(l);
    }
    out.push(0);
    out
}

/// A name as the parser must give it: presentation form, fit to be a tag value unchanged, its
/// labels of 1 to 63 bytes, at most 255 bytes on the wire.
fn assert_dns_name(name: &str) {
    let labels = dns_labels(name).unwrap_or_else(|| panic!("{name:?} is no presentation form"));
    assert!(
        labels.iter().all(|l| (1..=63).contains(&l.len())),
        "{name:?}"
    );
    assert!(dns_wire(&labels).len() <= 255, "{name:?}");
    assert_eq!(dns_name(&labels), name, "not the canonical form");
    assert!(
        reads_back_unchanged(name),
        "{name:?} is not carried unchanged"
    );
}

/// A message in wire form from the parser's values, uncompressed: the header's counts are the
/// records written.
fn dns_message(m: &dnsmsg::Message) -> Vec<u8> {
    let flags = u16::from(m.response) << 15
        | u16::from(m.opcode & 0xf) << 11
        | u16::from(m.truncated) << 9
        | u16::from(m.rcode & 0xf);
    let mut out = Vec::new();
    for v in [
        m.id,
        flags,
        u16::from(m.question.is_some()),
        m.answers.len() as u16,
        0,
        0,
    ] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    let labels = |n: &str| dns_labels(n).expect("checked before");
    if let Some(q) = &m.question {
        out.extend(dns_wire(&labels(&q.name)));
        out.extend_from_slice(&q.qtype.to_be_bytes());
        out.extend_from_slice(&1u16.to_be_bytes());
    }
    for a in &m.answers {
        out.extend(dns_wire(&labels(&a.name)));
        let (ty, data) = match &a.data {
            Rdata::A(ip) => (rtype::A, ip.octets().to_vec()),
            Rdata::Aaaa(ip) => (rtype::AAAA, ip.octets().to_vec()),
            Rdata::Cname(n) => (rtype::CNAME, dns_wire(&labels(n))),
        };
        out.extend_from_slice(&ty.to_be_bytes());
        out.extend_from_slice(&1u16.to_be_bytes());
        out.extend_from_slice(&a.ttl.to_be_bytes());
        out.extend_from_slice(&(data.len() as u16).to_be_bytes());
        out.extend(data);
    }
    out
}

/// A name for the structured mode: up to 3 labels of up to 63 bytes (at most 193 on the wire,
/// 202 with a label of up to 8 before it).
fn dns_input_name(input: &mut Bytes) -> Vec<Vec<u8>> {
    let n = usize::from(input.u8() % 4);
    (0..n)
        .map(|_| {
            let len = 1 + usize::from(input.u8() % 63);
            input.take(len)
        })
        .collect()
}

/// DNS messages: raw (any datagram) or, first byte 0x01, described (a question and answers,
/// owners and CNAME targets written whole or compressed against the question's name, records
/// of types flowlens skips among them) and built here.
pub fn dns(data: &[u8]) {
    let Some((1, rest)) = data.split_first() else {
        // Raw: no panic; fit names; bounded; and what was read reads back the same from a
        // message written from it.
        let Some(m) = dnsmsg::parse(data) else {
            return;
        };
        assert!(m.answers.len() <= dnsmsg::MAX_ANSWERS);
        let names = m
            .question
            .iter()
            .map(|q| &q.name)
            .chain(m.answers.iter().flat_map(|a| {
                std::iter::once(&a.name).chain(match &a.data {
                    Rdata::Cname(n) => Some(n),
                    _ => None,
                })
            }));
        for name in names {
            assert_dns_name(name);
        }
        assert!(m.answers.iter().all(|a| a.ttl <= i32::MAX as u32));
        let again = dnsmsg::parse(&dns_message(&m)).expect("a message written from values");
        assert!(again.complete);
        assert_eq!(
            dnsmsg::Message {
                complete: m.complete,
                ..again
            },
            m
        );
        return;
    };
    let mut input = Bytes(rest);
    let id = input.u16();
    let flags = input.u16();
    let qname = dns_input_name(&mut input);
    let qtype = input.u16();
    let count = usize::from(input.u8() % 40);
    let mut wire = Vec::new();
    let mut want = Vec::new();
    let mut records = Vec::new();
    const QNAME_AT: u16 = 12;
    for _ in 0..count {
        let how = input.u8();
        // the owner: the question's name by a pointer, labels then that pointer, or its own
        let mut owner = Vec::new();
        let owner_labels: Vec<Vec<u8>> = match how % 3 {
            0 => {
                owner.extend_from_slice(&(0xc000 | QNAME_AT).to_be_bytes());
                qname.clone()
            }
            1 => {
                let len = 1 + usize::from(input.u8() % 8);
                let mut l = vec![input.take(len)];
                let labels = dns_wire(&l);
                owner.extend_from_slice(&labels[..labels.len() - 1]);
                owner.extend_from_slice(&(0xc000 | QNAME_AT).to_be_bytes());
                l.extend(qname.iter().cloned());
                l
            }
            _ => {
                let l = dns_input_name(&mut input);
                owner.extend(dns_wire(&l));
                l
            }
        };
        let ttl = input.u32();
        let (ty, rdata, data) = match (how / 3) % 4 {
            0 => {
                let b = input.take(4);
                let ip = Ipv4Addr::new(b[0], b[1], b[2], b[3]);
                (rtype::A, b, Some(Rdata::A(ip)))
            }
            1 => {
                let b = input.take(16);
                let octets: [u8; 16] = b.clone().try_into().unwrap();
                (rtype::AAAA, b, Some(Rdata::Aaaa(Ipv6Addr::from(octets))))
            }
            2 => {
                let target = dns_input_name(&mut input);
                let rdata = if how & 0x80 != 0 {
                    (0xc000 | QNAME_AT).to_be_bytes().to_vec()
                } else {
                    dns_wire(&target)
                };
                let target = if how & 0x80 != 0 {
                    qname.clone()
                } else {
                    target
                };
                (rtype::CNAME, rdata, Some(Rdata::Cname(dns_name(&target))))
            }
            _ => {
                // a type flowlens skips (NS, SOA, PTR, MX, TXT, SRV, OPT, HTTPS), any data
                const SKIPPED: [u16; 8] = [2, 6, 12, 15, 16, 33, 41, 65];
                let ty = SKIPPED[usize::from(input.u8() % 8)];
                let len = usize::from(input.u8() % 20);
                (ty, input.take(len), None)
            }
        };
        records.push((owner, ty, ttl, rdata));
        if let Some(data) = data {
            want.push(Answer {
                name: dns_name(&owner_labels),
                ttl: if ttl > i32::MAX as u32 { 0 } else { ttl },
                data,
            });
        }
    }
    for v in [id, flags, 1, records.len() as u16, 0, 0] {
        wire.extend_from_slice(&v.to_be_bytes());
    }
    wire.extend(dns_wire(&qname));
    wire.extend_from_slice(&qtype.to_be_bytes());
    wire.extend_from_slice(&1u16.to_be_bytes());
    for (owner, ty, ttl, rdata) in &records {
        wire.extend_from_slice(owner);
        wire.extend_from_slice(&ty.to_be_bytes());
        wire.extend_from_slice(&1u16.to_be_bytes());
        wire.extend_from_slice(&ttl.to_be_bytes());
        wire.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        wire.extend_from_slice(rdata);
    }
    let got = dnsmsg::parse(&wire).expect("a well-formed message");
    let complete = want.len() <= dnsmsg::MAX_ANSWERS;
    want.truncate(dnsmsg::MAX_ANSWERS);
    assert_eq!(
        got,
        dnsmsg::Message {
            id,
            response: flags & 0x8000 != 0,
            opcode: ((flags >> 11) & 0xf) as u8,
            truncated: flags & 0x0200 != 0,
            rcode: (flags & 0xf) as u8,
            question: Some(Question {
                name: dns_name(&qname),
                qtype,
            }),
            answers: want,
            complete,
        }
    );
}

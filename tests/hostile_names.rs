//! Hostile names into a real InfluxDB 1.x: tag values with spaces, commas, `=`, quotes,
//! backslashes, newlines, NUL, control characters and invalid UTF-8, written by the product's
//! encoder, and pod, namespace and container names so named in containerd bundles, through the
//! real `flowlens` binary. InfluxDB accepts every batch (HTTP 204), and reads back every name
//! flowlens writes as it was; the names it cannot carry are left out and counted in
//! `flowlens:internal,names_dropped` (and files that are not JSON in `metadata_skipped`).

use flowlens_core::lineproto::{parse_lines, reads_back_unchanged, Encoder, Precision};
use flowlens_dashboards::{Influx, Series};
use flowlens_tests::{session::*, standins::hex_id, *};
use std::{
    collections::BTreeMap,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

/// Writes `lines`, asserting InfluxDB took all of them.
fn write_all_accepted(server: &Influxd, database: &str, lines: &[u8]) {
    let reply = server.write(database, lines);
    assert_eq!(
        reply.status,
        204,
        "InfluxDB refused the batch ({}):\n{}",
        reply.body,
        String::from_utf8_lossy(lines)
    );
}

/// The rows of `select`, each column by name (JSON null left out).
fn rows(server: &Influxd, database: &str, select: &str) -> Vec<BTreeMap<String, String>> {
    let influx = Influx {
        address: format!("127.0.0.1:{}", server.port),
        database: database.into(),
    };
    let series: Vec<Series> = influx.query(select).unwrap();
    let mut out = Vec::new();
    for s in series {
        for row in s.values {
            let mut m = BTreeMap::new();
            for (col, v) in s.columns.iter().zip(row) {
                match v {
                    serde_json::Value::Null => {}
                    serde_json::Value::String(s) => {
                        m.insert(col.clone(), s);
                    }
                    other => {
                        m.insert(col.clone(), other.to_string());
                    }
                }
            }
            out.push(m);
        }
    }
    out
}

/// Hostile text: issue 11's list, what the fuzzer found, every ASCII character alone, inside a
/// name and after a backslash, and invalid UTF-8 (as a reader of bytes makes it a `&str`).
fn hostile_values() -> Vec<String> {
    let mut v: Vec<String> = [
        "web 1",
        "a,b",
        "k=v",
        r#"say "hi""#,
        r"c:\dir",
        r"a\\b",
        r"end\",
        "line\nbreak",
        "cr\rx",
        "nul\0x",
        "tab\tx",
        r"\,\=\ ",
        r#"\"Labelh""#,
        "#hash",
        " lead",
        "trail ",
        "=",
        ",",
        "\"",
        "é ✓ \u{2028} \u{a0} \u{85}",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    v.push(String::from_utf8_lossy(b"bad\xc3\x28utf8\xff").into_owned());
    for b in 0u8..128 {
        let c = char::from(b);
        v.push(c.to_string());
        v.push(format!("x{c}y"));
        v.push(format!("x\\{c}y"));
    }
    v
}

#[test]
fn hostile_tag_values_are_accepted_and_read_back_as_written() {
    let server = Influxd::start();
    server.create_database("hostile");
    let values = hostile_values();
    let mut buf = Vec::new();
    let mut enc = Encoder::new(&mut buf, Precision::Ns, 1_700_000_000_000_000_000);
    for (i, v) in values.iter().enumerate() {
        enc.line("hostile")
            .tag("i", &format!("{i:04}"))
            .tag("v", v)
            .field_i64("f", i as i64)
            .finish();
    }
    drop(enc);
    write_all_accepted(&server, "hostile", &buf);
    // What our strict parser reads from the text is what InfluxDB stored, value for value; and
    // it is the value itself exactly when `reads_back_unchanged` says so.
    let text = String::from_utf8(buf).unwrap();
    let ours = parse_lines(&text).unwrap();
    let stored = rows(&server, "hostile", r#"SELECT "f", "i", "v" FROM "hostile""#);
    assert_eq!(stored.len(), values.len());
    let by_index: BTreeMap<&str, &BTreeMap<String, String>> =
        stored.iter().map(|r| (r["i"].as_str(), r)).collect();
    for (i, v) in values.iter().enumerate() {
        let written = ours[i].tags.iter().find(|(k, _)| k == "v").map(|(_, v)| v);
        let row = by_index[format!("{i:04}").as_str()];
        assert_eq!(
            row.get("v"),
            written,
            "{v:?}: InfluxDB and our parser differ"
        );
        assert_eq!(
            written == Some(v),
            reads_back_unchanged(v) && !v.is_empty(),
            "{v:?} read back as {written:?}"
        );
    }
}

/// A process in `cgroup` holding a TCP connection to `port` on loopback until it is killed.
fn hold_connection(cgroup: &Path, port: u16) -> Child {
    spawn_ready(
        Command::new("sh")
            .arg("-c")
            .arg(
                r#"echo $$ > "$0/cgroup.procs" && exec python3 -u -c 'import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
print("ready", flush=True)
sys.stdin.read()' "$1""#,
            )
            .arg(cgroup)
            .arg(port.to_string())
            .stdin(Stdio::piped()),
        "ready",
        "the connection holder",
    )
}

/// One stand-in container: its names as raw JSON string bytes (so NUL and invalid UTF-8 can be
/// written), and what flowlens must write for them (`None`: left out).
struct Case {
    container: &'static [u8],
    pod: &'static [u8],
    namespace: &'static [u8],
    want: [Option<&'static str>; 3],
    dropped: u64,
}

const CASES: &[Case] = &[
    Case {
        container: b"web 1",
        pod: b"pod,with,commas",
        namespace: b"ns=eq",
        want: [Some("web 1"), Some("pod,with,commas"), Some("ns=eq")],
        dropped: 0,
    },
    Case {
        container: br#"say \"hi\""#,
        pod: br"c:\\dir",
        namespace: "é ✓".as_bytes(),
        want: [Some(r#"say "hi""#), Some(r"c:\dir"), Some("é ✓")],
        dropped: 0,
    },
    Case {
        container: br"a\\\\b",
        pod: br"end\\",
        namespace: b"#hash",
        want: [None, None, Some("#hash")],
        dropped: 2,
    },
    Case {
        container: br"line\nbreak",
        pod: br"nul\u0000x",
        namespace: br"tab\tx",
        want: [None, None, None],
        dropped: 3,
    },
    // Not UTF-8, so not JSON: the file is skipped whole (metadata_skipped).
    Case {
        container: b"bad\xc3\x28utf8",
        pod: b"p",
        namespace: b"n",
        want: [None, None, None],
        dropped: 0,
    },
];

/// Tears down what the test made under the cgroup2 root, leaves first.
struct Cgroups(Vec<PathBuf>);

impl Drop for Cgroups {
    fn drop(&mut self) {
        let root = cgroup2_root();
        for dir in self.0.iter().rev() {
            let mut dir = dir.clone();
            while dir != root && std::fs::remove_dir(&dir).is_ok() {
                dir.pop();
            }
        }
    }
}

#[test]
fn hostile_container_names_are_escaped_or_dropped_with_a_count() {
    if !require_root("hostile_container_names_are_escaped_or_dropped_with_a_count") {
        return;
    }
    let server = Influxd::start();
    server.create_database("ntopng");
    let state = TempDir::new("hostile-names");
    let bundles = state.join("containerd");
    let empty = state.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut cgroups = Cgroups(Vec::new());
    let mut ids = Vec::new();
    let top = format!("flk-hostile-{}", std::process::id());
    for (i, case) in CASES.iter().enumerate() {
        let id = hex_id(0x4057_11e0 + i as u64);
        let uid = format!("8f0d3c62-1a7b-4c1e-9d2a-5b6e7f8090{i:02}");
        let dir = cgroup2_root().join(format!("{top}/kubepods/besteffort/pod{uid}/{id}"));
        std::fs::create_dir_all(&dir).unwrap();
        cgroups.0.push(dir);
        let mut annotations = Vec::new();
        for (key, value) in [
            ("io.kubernetes.cri.container-type", &b"container"[..]),
            ("io.kubernetes.cri.container-name", case.container),
            ("io.kubernetes.cri.sandbox-name", case.pod),
            ("io.kubernetes.cri.sandbox-namespace", case.namespace),
            ("io.kubernetes.cri.sandbox-uid", uid.as_bytes()),
        ] {
            annotations.push([&b"\""[..], key.as_bytes(), b"\":\"", value, b"\""].concat());
        }
        let spec = [
            &br#"{"ociVersion":"1.0.2","annotations":{"#[..],
            &annotations.join(&b","[..]),
            b"}}",
        ]
        .concat();
        let bundle = bundles.join("k8s.io").join(&id);
        std::fs::create_dir_all(&bundle).unwrap();
        std::fs::write(bundle.join("config.json"), spec).unwrap();
        ids.push(id);
    }
    let config = format!(
        "containerd_state_dir = \"{}\"\nkubelet_log_dir = \"{e}\"\ncrio_storage_dir = \"{e}\"\n\
         docker_containers_dir = \"{e}\"\n",
        bundles.display(),
        e = empty.display()
    );
    let mut s = Session::start(&config);
    let accepted = std::thread::spawn(move || {
        (0..CASES.len())
            .map(|_| listener.accept().unwrap().0)
            .collect::<Vec<_>>()
    });
    let mut holders: Vec<Child> = cgroups
        .0
        .iter()
        .map(|dir| hold_connection(dir, port))
        .collect();
    let _streams = accepted.join().unwrap();
    let batch = s.gather();
    for h in &mut holders {
        let _ = h.kill();
        let _ = h.wait();
    }
    s.finish();

    // Every name that cannot be carried is counted once (one read of each file in this gather),
    // and the one file that is not JSON once.
    let want_dropped: u64 = CASES.iter().map(|c| c.dropped).sum();
    let internal = |f: &str| value(&batch, "flowlens:internal", &[], f);
    assert_eq!(internal("names_dropped"), want_dropped as i64, "{batch}");
    assert_eq!(internal("metadata_skipped"), 1, "{batch}");
    write_all_accepted(&server, "ntopng", batch.as_bytes());

    let stored = rows(
        &server,
        "ntopng",
        r#"SELECT "as_client", "container", "container_name", "pod", "namespace" FROM "container:num_flows""#,
    );
    let pods = rows(
        &server,
        "ntopng",
        r#"SELECT "as_client", "pod", "namespace" FROM "pod:num_flows""#,
    );
    for (case, id) in CASES.iter().zip(&ids) {
        let row = stored
            .iter()
            .find(|r| r.get("container").map(String::as_str) == Some(&id[..12]))
            .unwrap_or_else(|| panic!("no series of container {}:\n{batch}", &id[..12]));
        let got = ["container_name", "pod", "namespace"].map(|k| row.get(k).map(String::as_str));
        assert_eq!(
            got,
            case.want,
            "{:?}",
            String::from_utf8_lossy(case.container)
        );
        assert_eq!(row.get("as_client").map(String::as_str), Some("1"));
        if let Some(pod) = case.want[1] {
            let pod_row = pods
                .iter()
                .find(|r| r.get("pod").map(String::as_str) == Some(pod))
                .unwrap_or_else(|| panic!("no pod series {pod:?}:\n{batch}"));
            assert_eq!(pod_row.get("namespace").map(String::as_str), case.want[2]);
        }
    }
}

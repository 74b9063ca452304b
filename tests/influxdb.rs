//! End to end into a real InfluxDB 1.x: the output of every mode is POSTed to /write and read
//! back through the real `influx` shell.

use flowlens_tests::{session, *};
use std::{
    io::{Read, Write},
    process::Stdio,
    time::Duration,
};

fn config(dir: &TempDir, text: &str) -> String {
    let path = dir.join("flowlens.toml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// Writes `lines` and asserts the server took every one of them.
fn write_all_accepted(server: &Influxd, database: &str, lines: &[u8]) {
    let reply = server.write(database, lines);
    assert_eq!(
        reply.status,
        204,
        "InfluxDB refused the output ({}):\n{}",
        reply.body,
        String::from_utf8_lossy(lines)
    );
    assert!(!reply.body.contains("partial write"), "{}", reply.body);
}

#[test]
fn every_mode_writes_what_influxdb_accepts_and_returns() {
    let server = Influxd::start();
    server.create_database("ntopng");
    let dir = TempDir::new("e2e");

    // once, defaults (eBPF too when root).
    let out = run_flowlens(&["once"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    write_all_accepted(&server, "ntopng", &out.stdout);

    // once, ntopng_compat: floats everywhere, so a database of its own (InfluxDB refuses a
    // field whose type changes: `field type conflict`).
    server.create_database("ntopng_compat");
    let compat = config(&dir, "ntopng_compat = true\n");
    let out = run_flowlens(&["--config", &compat, "once"]);
    assert!(out.status.success());
    write_all_accepted(&server, "ntopng_compat", &out.stdout);

    // telegraf: two batches.
    let mut child = flowlens(&["telegraf"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"\n").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    stdin.write_all(b"\n").unwrap();
    drop(stdin);
    let mut batches = Vec::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_end(&mut batches)
        .unwrap();
    assert!(child.wait().unwrap().success());
    assert!(!batches.is_empty());
    monotonic::checked(&String::from_utf8_lossy(&batches));
    write_all_accepted(&server, "ntopng", &batches);

    // stream: two self-timed batches (however long the eBPF load before the first takes),
    // then SIGTERM.
    let streaming = config(&dir, "interval_secs = 1\n");
    let mut child = flowlens(&["--config", &streaming, "stream"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let rx = session::batches(child.stdout.take().unwrap());
    let mut streamed = String::new();
    for n in 1..=2 {
        let (_, batch) = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("stream batch {n} within 30 s: {e}"));
        streamed.push_str(&batch);
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "SIGTERM ends stream with exit 0: {status}"
    );
    // What it wrote between the second batch and the signal; the reader ends at EOF.
    for (_, batch) in rx {
        streamed.push_str(&batch);
    }
    write_all_accepted(&server, "ntopng", streamed.as_bytes());

    // Read back through the real influx shell.
    let rows = server.influx("ntopng", "select * from \"iface:traffic\"");
    assert!(rows.contains("name: iface:traffic"), "{rows}");
    let lo_rows = rows.lines().filter(|l| l.contains(" lo")).count();
    assert!(lo_rows >= 4, "rows of lo from several gathers:\n{rows}");
    let measurements = server.influx("ntopng", "show measurements");
    for m in [
        "iface:traffic",
        "iface:traffic_rxtx",
        "iface:packets",
        "flowlens:internal",
    ] {
        assert!(
            measurements.lines().any(|l| l.trim() == m),
            "{m} missing:\n{measurements}"
        );
    }
}

/// `flowlens once` with `node` from the given config text and environment, writing into
/// `database`; its stdout.
fn once_as(
    server: &Influxd,
    database: &str,
    dir: &TempDir,
    config_text: &str,
    env: &[(&str, &str)],
) -> String {
    let path = dir.join(&format!("flowlens-{}.toml", server.port));
    std::fs::write(&path, config_text).unwrap();
    let out = flowlens(&["--config", path.to_str().unwrap(), "once"])
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    if in_ci() {
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("probes_failed=0i"),
            "CI loads every probe:\n{text}"
        );
    }
    write_all_accepted(server, database, &out.stdout);
    monotonic::checked_stdout(&out)
}

/// The values of `tag` of the series an InfluxQL `GROUP BY` returned, with each series' first
/// value (a count).
fn grouped(server: &Influxd, database: &str, query: &str, tag: &str) -> Vec<(String, i64)> {
    let influx = flowlens_dashboards::Influx {
        address: format!("127.0.0.1:{}", server.port),
        database: database.into(),
    };
    let mut out: Vec<(String, i64)> = influx
        .query(query)
        .unwrap_or_else(|e| panic!("{e}"))
        .iter()
        .map(|s| {
            let count = s.values[0][1].as_i64().unwrap();
            (s.tags.get(tag).cloned().unwrap_or_default(), count)
        })
        .collect();
    out.sort();
    out
}

#[test]
fn two_nodes_writing_into_one_database_keep_their_series_apart() {
    // One at a time with the other root suites, also of other checkouts: it reads every
    // interface of the machine, which their veth pairs would come and go in.
    let Some(_serial) = root_test("two_nodes_writing_into_one_database_keep_their_series_apart")
    else {
        return;
    };
    let server = Influxd::start();
    server.create_database("ntopng");
    let dir = TempDir::new("nodes");
    // A loopback connection in this namespace, established before both runs: each one's
    // start-up scan finds it, so each writes a host=127.0.0.1 series of this namespace.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server_side, _) = listener.accept().unwrap();
    let netns = std::fs::read_link("/proc/self/ns/net").unwrap();
    let netns = netns.to_str().unwrap();
    let netns = &netns["net:[".len()..netns.len() - 1];
    // Two flowlens standing for two nodes on one machine: one named by its config, one by
    // NODE_NAME (as the DaemonSet names it), the same interfaces and addresses.
    let a = once_as(&server, "ntopng", &dir, "node = \"node-a\"\n", &[]);
    let b = once_as(&server, "ntopng", &dir, "", &[("NODE_NAME", "node-b")]);
    for (text, node) in [(&a, "node-a"), (&b, "node-b")] {
        let want = format!("host:traffic,host=127.0.0.1,ifid=0,netns={netns},node={node} ");
        assert!(text.contains(&want), "{want}\n{text}");
    }
    // The same host, ifid and netns, the same interface: one series per node, one point each.
    let per_node = vec![("node-a".to_string(), 1), ("node-b".to_string(), 1)];
    let q = format!(
        "SELECT count(\"bytes_sent\") FROM \"host:traffic\" WHERE \"host\" = '127.0.0.1' \
         AND \"netns\" = '{netns}' GROUP BY \"node\""
    );
    assert_eq!(grouped(&server, "ntopng", &q, "node"), per_node);
    let ifaces: Vec<String> = std::fs::read_dir("/sys/class/net")
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(ifaces.iter().any(|i| i == "lo"));
    for ifname in &ifaces {
        let q = format!(
            "SELECT count(\"bytes\") FROM \"iface:traffic\" WHERE \"ifname\" = '{ifname}' \
             GROUP BY \"node\""
        );
        assert_eq!(grouped(&server, "ntopng", &q, "node"), per_node, "{ifname}");
    }
    let q = "SELECT count(\"gather_duration_ms\") FROM \"flowlens:internal\" GROUP BY \"node\"";
    assert_eq!(grouped(&server, "ntopng", q, "node"), per_node);

    // ntopng_compat keeps ntopng's tags: no node, no netns on its measurements (the agent
    // must keep machines apart); flowlens:internal keeps its node.
    server.create_database("compat");
    once_as(
        &server,
        "compat",
        &dir,
        "node = \"node-a\"\nntopng_compat = true\n",
        &[],
    );
    let keys = |m: &str| -> Vec<String> {
        let shown = server.influx("compat", &format!("SHOW TAG KEYS FROM \"{m}\""));
        shown
            .lines()
            .skip(3)
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect()
    };
    assert_eq!(keys("iface:traffic"), ["ifid", "ifname"]);
    assert_eq!(keys("iface:flows"), ["ifid"]);
    assert_eq!(keys("host:traffic"), ["host", "ifid"]);
    assert_eq!(keys("host:ndpi"), ["host", "ifid", "protocol"]);
    assert_eq!(keys("flowlens:internal"), ["ifid", "node"]);
    drop((client, server_side));
}

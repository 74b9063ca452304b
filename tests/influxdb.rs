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

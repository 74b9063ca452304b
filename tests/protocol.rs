//! The shim's process protocols with the real `flowlens` binary and the real `libflowlens.so`:
//! Telegraf execd, Vector streaming, one-shot, closed pipes, plugin-load and config errors, and
//! the shipped agent configs.

use flowlens_tests::{session, *};
use std::{
    io::{Read, Write},
    os::unix::fs::PermissionsExt,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

/// Config without eBPF: these tests are about the protocol, not the kernel.
const NO_EBPF: &str = "ebpf = false\n";

fn config_file(dir: &TempDir, text: &str) -> String {
    let path = dir.join("flowlens.toml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// Every line parses with our strict parser and with the influxdb-line-protocol crate (Vector's).
fn assert_valid_line_protocol(text: &str) -> Vec<i64> {
    flowlens_core::lineproto::validate(text).unwrap_or_else(|e| panic!("{e}:\n{text}"));
    let mut stamps = Vec::new();
    for line in influxdb_line_protocol::parse_lines(text) {
        let line = line.unwrap_or_else(|e| panic!("influxdb-line-protocol: {e}:\n{text}"));
        stamps.push(line.timestamp.expect("every line has a timestamp"));
    }
    stamps
}

#[test]
fn telegraf_mode_gathers_once_per_newline_and_exits_on_eof() {
    let dir = TempDir::new("telegraf");
    let config = config_file(&dir, NO_EBPF);
    let mut child = flowlens(&["--config", &config, "telegraf"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let rx = session::batches(child.stdout.take().unwrap());
    let mut stamps = Vec::new();
    for _ in 0..3 {
        stdin.write_all(b"\n").unwrap();
        stdin.flush().unwrap();
        let batch = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("a batch per newline")
            .1;
        let batch_stamps = assert_valid_line_protocol(&batch);
        assert!(
            batch_stamps.windows(2).all(|w| w[0] == w[1]),
            "one timestamp per gather"
        );
        assert!(batch.contains("iface:traffic,"), "{batch}");
        stamps.push(batch_stamps[0]);
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(
        stamps.windows(2).all(|w| w[0] < w[1]),
        "increasing: {stamps:?}"
    );
    // Exit within 1 s of stdin EOF: timed from the close of our end of the pipe to the moment
    // the exit is seen (polled every 5 ms), long after startup (three batches came back).
    drop(stdin);
    let closed = Instant::now();
    let (status, took) = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break (status, closed.elapsed());
        }
        assert!(
            closed.elapsed() < Duration::from_secs(30),
            "flowlens did not exit on stdin EOF"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    assert!(status.success(), "{status}");
    assert!(took < Duration::from_secs(1), "exit took {took:?}");
    assert!(
        rx.recv_timeout(Duration::from_millis(200)).is_err(),
        "exactly three batches"
    );
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    for line in stderr.lines() {
        assert!(
            ["E! ", "W! ", "I! ", "D! "]
                .iter()
                .any(|p| line.starts_with(p)),
            "stderr line without a Telegraf prefix: {line:?}"
        );
    }
}

#[test]
fn stream_mode_is_self_timed_ignores_stdin_and_ends_on_sigterm() {
    let dir = TempDir::new("stream");
    let config = config_file(&dir, &format!("{NO_EBPF}interval_secs = 1\n"));
    let mut child = flowlens(&["--config", &config, "stream"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let rx = session::batches(child.stdout.take().unwrap());
    let mut stamps = Vec::new();
    for _ in 0..4 {
        let (_, batch) = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("a batch every second");
        let batch_stamps = assert_valid_line_protocol(&batch);
        assert!(
            batch_stamps.windows(2).all(|w| w[0] == w[1]),
            "one timestamp per gather"
        );
        stamps.push(batch_stamps[0]);
    }
    // SAFETY: sending SIGTERM to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(status.success(), "SIGTERM ends it with exit 0: {status}");
    // Timestamps are nanoseconds since the epoch and about a second apart.
    let now_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    for pair in stamps.windows(2) {
        let gap = pair[1] - pair[0];
        assert!((500_000_000..5_000_000_000).contains(&gap), "gap {gap} ns");
    }
    assert!(
        (now_ns - stamps[0]).abs() < 60_000_000_000,
        "ns precision: {}",
        stamps[0]
    );
    // Self-timed: the gathers follow the 1 s ticks. Their timestamps are taken as each gather
    // starts, right after its tick, so they span the 3 intervals whenever the batches reach us.
    let span = stamps[3] - stamps[0];
    assert!(
        span >= 2_500_000_000,
        "3 intervals span {span} ns: {stamps:?}"
    );
}

/// Runs `flowlens once 2>FILE | <reader>` in bash; returns flowlens's exit code and stderr.
fn once_into(reader: &str) -> (String, String) {
    let dir = TempDir::new("pipe");
    let err_path = dir.join("stderr");
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "'{}' once 2>'{}' | {reader}; echo ${{PIPESTATUS[0]}}",
            flowlens_bin().display(),
            err_path.display()
        ))
        .output()
        .unwrap();
    let rc = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (rc, std::fs::read_to_string(&err_path).unwrap())
}

#[test]
fn once_into_a_closed_pipe_exits_zero_quietly() {
    // With `| head -1` the reader goes away after one line.
    let (rc, stderr) = once_into("head -1 >/dev/null");
    assert_eq!(rc, "0", "flowlens exit code");
    assert!(!stderr.contains("E! "), "{stderr}");
    assert!(!stderr.contains("panick"), "{stderr}");
}

#[test]
fn once_into_a_pipe_closed_before_the_write_exits_zero() {
    // The reader is gone before flowlens writes anything: the write fails with EPIPE.
    let (rc, stderr) = once_into("true");
    assert_eq!(rc, "0");
    assert!(
        !stderr.contains("E! ") && !stderr.contains("panick"),
        "{stderr}"
    );
}

/// A one-line error on stderr with exit code `code`, containing every piece of `want`.
fn assert_one_line_error(out: &std::process::Output, code: i32, want: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {stderr}");
    assert!(out.stdout.is_empty(), "nothing on stdout");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    assert!(lines[0].starts_with("E! "), "{stderr}");
    for piece in want {
        assert!(lines[0].contains(piece), "{stderr:?} lacks {piece:?}");
    }
}

#[test]
fn a_missing_plugin_is_a_one_line_error() {
    let out = run_flowlens(&["--plugin", "/nonexistent/libflowlens.so", "once"]);
    assert_one_line_error(
        &out,
        1,
        &["/nonexistent/libflowlens.so", "not found", "--plugin"],
    );
}

#[test]
fn a_library_that_is_not_a_plugin_is_a_one_line_error() {
    let libc_path = [
        "/lib/x86_64-linux-gnu/libc.so.6",
        "/usr/lib/x86_64-linux-gnu/libc.so.6",
    ]
    .into_iter()
    .find(|p| std::path::Path::new(p).exists())
    .expect("libc.so.6");
    let out = run_flowlens(&["--plugin", libc_path, "once"]);
    assert_one_line_error(&out, 1, &[libc_path, "is not a flowlens plugin"]);
    // A file that is no shared library at all.
    let dir = TempDir::new("notelf");
    let path = dir.join("libflowlens.so");
    std::fs::write(&path, b"not an ELF file").unwrap();
    let shown = path.display().to_string();
    let out = run_flowlens(&["--plugin", &shown, "once"]);
    assert_one_line_error(&out, 1, &[&shown, "not a loadable shared library"]);
}

#[test]
fn a_plugin_of_another_abi_version_is_a_one_line_error() {
    let path = wrong_abi_plugin().display().to_string();
    let out = run_flowlens(&["--plugin", &path, "once"]);
    assert_one_line_error(&out, 1, &[&path, "ABI version 99.0.0", "install the"]);
}

#[test]
fn as_root_a_plugin_others_could_write_is_refused() {
    if !require_root("as_root_a_plugin_others_could_write_is_refused") {
        return;
    }
    let dir = TempDir::new("perm");
    let copy = dir.join("libflowlens.so");
    std::fs::copy(plugin_lib(), &copy).unwrap();
    let shown = copy.display().to_string();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o775)).unwrap();
    let out = run_flowlens(&["--plugin", &shown, "once"]);
    assert_one_line_error(&out, 1, &["refusing plugin", &shown, "chmod go-w"]);
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::chown(&copy, Some(65534), None).unwrap();
    let out = run_flowlens(&["--plugin", &shown, "once"]);
    assert_one_line_error(&out, 1, &["refusing plugin", &shown, "owned by root"]);
    std::os::unix::fs::chown(&copy, Some(0), None).unwrap();
    let out = run_flowlens(&["--plugin", &shown, "--config", "/dev/null", "once"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn an_unknown_config_key_is_a_one_line_error_with_exit_2() {
    let dir = TempDir::new("badconfig");
    let config = config_file(&dir, "interval_secs = 5\nintervall_secs = 5\n");
    let out = run_flowlens(&["--config", &config, "once"]);
    assert_one_line_error(
        &out,
        2,
        &[&config, "unknown field `intervall_secs`", "line 2"],
    );
    let out = run_flowlens(&["--config", "/nonexistent.toml", "once"]);
    assert_one_line_error(&out, 2, &["/nonexistent.toml"]);
    let out = run_flowlens(&["bogus-mode"]);
    assert_eq!(out.status.code(), Some(2), "bad usage exits 2");
}

#[test]
fn an_unusable_node_name_is_a_one_line_error_with_exit_2_naming_its_source() {
    let dir = TempDir::new("badnode");
    let config = config_file(&dir, &format!("{NO_EBPF}node = \"rack\\\\1\"\n"));
    let out = run_flowlens(&["--config", &config, "once"]);
    assert_one_line_error(&out, 2, &[&config, "node = ", "must not hold a backslash"]);
    // From the environment (the DaemonSet's way), as every mode reads it.
    let config = config_file(&dir, NO_EBPF);
    let long = "n".repeat(254);
    for mode in ["once", "telegraf", "stream", "doctor"] {
        // stdin stays open: telegraf mode would stop at its EOF before the plugin is created.
        let mut child = flowlens(&["--config", &config, mode])
            .env("NODE_NAME", &long)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let out = child.wait_with_output().unwrap();
        drop(stdin);
        assert_one_line_error(
            &out,
            2,
            &[&config, "NODE_NAME", "must be 1 to 253 characters"],
        );
    }
    // A good one is every line's `node`, escaped.
    let out = flowlens(&["--config", &config, "once"])
        .env("NODE_NAME", "rack 1,b=2")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert_valid_line_protocol(&text);
    monotonic::checked(&text);
    assert!(
        text.lines().all(|l| l.contains(",node=rack\\ 1\\,b\\=2")),
        "{text}"
    );
}

#[test]
fn print_config_is_the_committed_example_and_parses_back() {
    let out = run_flowlens(&["print-config"]);
    assert!(out.status.success());
    let printed = String::from_utf8(out.stdout).unwrap();
    let committed = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/flowlens.toml"),
    )
    .unwrap();
    assert_eq!(
        printed, committed,
        "packaging/flowlens.toml drifted from the code: run `flowlens print-config > packaging/flowlens.toml`"
    );
    let dir = TempDir::new("printed");
    let config = config_file(&dir, &printed);
    let out = run_flowlens(&["--config", &config, "print-config"]);
    assert!(out.status.success());
    let out = Command::new(flowlens_bin())
        .args(["--config", &config, "doctor"])
        .output()
        .unwrap();
    // doctor exits 1 when a check fails, as without root and eBPF.
    assert!(
        out.status.success() || (!is_root() && out.status.code() == Some(1)),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The `command = [...]` argv of an agent config, as strings.
fn argv_of(text: &str) -> Vec<String> {
    let value: toml::Value = toml::from_str(text).unwrap();
    fn find(v: &toml::Value) -> Option<Vec<String>> {
        match v {
            toml::Value::Table(t) => {
                if let Some(toml::Value::Array(a)) = t.get("command") {
                    return Some(a.iter().map(|x| x.as_str().unwrap().to_string()).collect());
                }
                t.values().find_map(find)
            }
            toml::Value::Array(a) => a.iter().find_map(find),
            _ => None,
        }
    }
    find(&value).expect("a command")
}

#[test]
fn the_shipped_agent_configs_name_what_the_binary_accepts() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let telegraf = std::fs::read_to_string(root.join("telegraf.d/flowlens.conf")).unwrap();
    let vector = std::fs::read_to_string(root.join("vector.d/flowlens.toml")).unwrap();
    let metrics = std::fs::read_to_string(root.join("vector.d/flowlens-metrics.toml")).unwrap();
    let tv: toml::Value = toml::from_str(&telegraf).unwrap();
    let execd = &tv["inputs"]["execd"][0];
    assert_eq!(execd["signal"].as_str(), Some("STDIN"));
    assert_eq!(execd["data_format"].as_str(), Some("influx"));
    for text in [&vector, &metrics] {
        let vv: toml::Value = toml::from_str(text).unwrap();
        let source = &vv["sources"]["flowlens"];
        assert_eq!(source["type"].as_str(), Some("exec"));
        assert_eq!(source["mode"].as_str(), Some("streaming"));
        assert_eq!(source["include_stderr"].as_bool(), Some(false));
    }
    // The default passes the lines through: one log event per line, POSTed as they are
    // (tests/vector.rs runs this path into a real InfluxDB).
    let vv: toml::Value = toml::from_str(&vector).unwrap();
    let source = &vv["sources"]["flowlens"];
    assert_eq!(
        source["framing"]["method"].as_str(),
        Some("newline_delimited")
    );
    assert_eq!(source["decoding"]["codec"].as_str(), Some("bytes"));
    let sink = &vv["sinks"]["influxdb"];
    assert_eq!(sink["type"].as_str(), Some("http"));
    assert_eq!(sink["encoding"]["codec"].as_str(), Some("text"));
    assert_eq!(
        sink["framing"]["method"].as_str(),
        Some("newline_delimited")
    );
    let uri = sink["uri"].as_str().unwrap();
    assert!(
        uri.contains("/write?") && uri.contains("precision=ns"),
        "{uri}"
    );
    // The metrics example: Vector metrics, renamed (README says how).
    let mv: toml::Value = toml::from_str(&metrics).unwrap();
    assert_eq!(
        mv["sources"]["flowlens"]["decoding"]["codec"].as_str(),
        Some("influxdb")
    );
    assert_eq!(
        mv["sinks"]["influxdb"]["type"].as_str(),
        Some("influxdb_metrics")
    );
    for (argv, mode) in [
        (argv_of(&telegraf), "telegraf"),
        (argv_of(&vector), "stream"),
        (argv_of(&metrics), "stream"),
    ] {
        assert_eq!(argv[0], "/usr/bin/flowlens");
        assert_eq!(argv.last().unwrap(), mode);
        // The options they name are ones the binary accepts: run them against this build.
        let mut args: Vec<&str> = argv[1..].iter().map(String::as_str).collect();
        let last = args.len() - 1;
        args[last] = "--help";
        let out = run_flowlens(&args);
        assert!(
            out.status.success(),
            "{argv:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn doctor_reports_every_check_on_one_line_each() {
    let out = run_flowlens(&["--config", "/dev/null", "doctor"]);
    // Exit 0 when every check passed (as root here), 1 otherwise: a readiness check.
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let failed = text.lines().filter(|l| l.starts_with("FAILED")).count();
    assert_eq!(
        out.status.code(),
        Some(i32::from(failed > 0)),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("plugin: "), "{text}");
    assert!(text.contains("interface counters (sysfs)"), "{text}");
    assert!(text.lines().last().unwrap().contains("checks,"), "{text}");
}

/// `flowlens health` against the real running binary: healthy while it gathers, unhealthy when
/// its gathers stop, when it is killed, and after it ends; the check loads no plugin and makes
/// no bpf() call (strace), so a probe costs nothing.
#[test]
fn health_says_whether_the_running_instance_gathers_without_loading_anything() {
    let dir = TempDir::new("health");
    // The health file's directory must be writable by its user only (TempDir's mode varies).
    let run_dir = dir.join("run");
    std::fs::create_dir(&run_dir).unwrap();
    std::fs::set_permissions(&run_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let file = run_dir.join("health");
    let file = file.to_str().unwrap();
    let config = config_file(&dir, &format!("{NO_EBPF}health_file = \"{file}\"\n"));
    let health = |extra: &[&str]| {
        let mut args = vec!["health", "--file", file];
        args.extend_from_slice(extra);
        let out = flowlens(&args).output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    };
    let (code, text) = health(&[]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("no running flowlens instance"), "{text}");

    // `flowlens telegraf` with this config, and a gather: its batch.
    let start = || {
        let mut child = flowlens(&["--config", &config, "telegraf"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let rx = session::batches(child.stdout.take().unwrap());
        let stdin = child.stdin.take().unwrap();
        (child, rx, stdin)
    };
    let gather = |stdin: &mut std::process::ChildStdin, rx: &session::Batches| {
        stdin.write_all(b"\n").unwrap();
        stdin.flush().unwrap();
        rx.recv_timeout(session::HANG).expect("a batch").1
    };
    let (mut child, rx, mut stdin) = start();
    let lines = gather(&mut stdin, &rx).lines().count();
    let (code, text) = health(&[]);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.starts_with(&format!("healthy: flowlens (pid {})", child.id()))
            && text.contains(&format!(
                "(1 gathers, {lines} lines; 0 probes attached, 0 failed"
            )),
        "{text}"
    );

    // The probe's cost: no bpf() call, no plugin opened, no process started.
    if std::process::Command::new("strace")
        .arg("-V")
        .output()
        .is_ok()
    {
        let out = Command::new("strace")
            .args([
                "-f",
                "-qq",
                "-e",
                "trace=bpf,openat,execve,clone,clone3,fork,vfork",
            ])
            .arg(flowlens_bin())
            .args(["health", "--file", file])
            .output()
            .unwrap();
        let trace = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{trace}");
        assert!(!trace.contains("bpf("), "{trace}");
        assert!(!trace.contains("libflowlens"), "{trace}");
        let execs = trace.matches("execve(").count();
        assert_eq!(execs, 1, "only the check itself runs: {trace}");
        assert!(!trace.contains("clone"), "{trace}");
    } else {
        assert!(!in_ci(), "CI installs strace (tests/packages.sh)");
        eprintln!("health: strace is missing here, the no-bpf() check is skipped");
    }

    // Gathers stop: with a 1 s bound, 2 s without a newline is unhealthy (the default bound is
    // the instance's three intervals, at least 30 s).
    std::thread::sleep(Duration::from_secs(2));
    let (code, text) = health(&["--max-age-secs", "1"]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("has not gathered for"), "{text}");
    gather(&mut stdin, &rx);
    let (code, text) = health(&["--max-age-secs", "1"]);
    // A slow machine may take over a second between the gather and the check: only the
    // gather count is certain.
    assert!(text.contains("2 gathers") || code == Some(1), "{text}");
    let (code, text) = health(&[]);
    assert_eq!(code, Some(0), "{text}");

    // A normal end removes the file.
    drop(stdin);
    assert!(child.wait().unwrap().success());
    let (code, text) = health(&[]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("no running flowlens instance"), "{text}");
    assert!(!std::path::Path::new(file).exists());

    // Killed: the file stays, and names an instance that is gone.
    let (mut child, rx, mut stdin) = start();
    gather(&mut stdin, &rx);
    assert_eq!(health(&[]).0, Some(0));
    child.kill().unwrap();
    child.wait().unwrap();
    let (code, text) = health(&[]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("is gone"), "{text}");
}

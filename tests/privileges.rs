//! Least privilege: the capabilities flowlens keeps after start-up, exactly, and a non-root
//! user holding only the capabilities README names runs it fully.

use flowlens_tests::{session::*, *};
use std::{
    io::{BufRead, BufReader, Write},
    process::Stdio,
    sync::{Mutex, MutexGuard},
};

/// CAP_PERFMON (38) and CAP_BPF (39): what README says eBPF needs, and what flowlens keeps.
const BPF_AND_PERFMON: u64 = (1 << 38) | (1 << 39);

static EBPF: Mutex<()> = Mutex::new(());

fn ebpf_test(name: &str) -> Option<MutexGuard<'static, ()>> {
    require_root(name).then(|| EBPF.lock().unwrap_or_else(|e| e.into_inner()))
}

/// A `Cap*:` line of a /proc status file, as a bit set.
fn caps(status: &str, field: &str) -> u64 {
    let line = status
        .lines()
        .find(|l| l.starts_with(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in {status}"));
    u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
}

#[test]
fn after_start_up_only_bpf_and_perfmon_are_held_in_every_thread() {
    let Some(_serial) = ebpf_test("after_start_up_only_bpf_and_perfmon_are_held_in_every_thread")
    else {
        return;
    };
    let mut child = flowlens(&["telegraf"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    // A first gather: start-up (programs, maps, the start-up scan) is done.
    stdin.write_all(b"\n").unwrap();
    let mut line = String::new();
    while !line.starts_with("flowlens:internal") {
        line.clear();
        assert!(stdout.read_line(&mut line).unwrap() > 0, "no gather");
    }
    assert!(line.contains("probes_failed=0i"), "{line}");
    let pid = child.id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert_eq!(caps(&status, "CapEff"), BPF_AND_PERFMON, "{status}");
    assert_eq!(caps(&status, "CapPrm"), BPF_AND_PERFMON, "{status}");
    assert_eq!(caps(&status, "CapBnd"), BPF_AND_PERFMON, "{status}");
    assert_eq!(caps(&status, "CapInh"), 0, "{status}");
    assert_eq!(caps(&status, "CapAmb"), 0, "{status}");
    assert!(status.contains("NoNewPrivs:\t1"), "{status}");
    // Every thread: none holds more (the event reader holds none).
    let mut threads = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let path = task.unwrap().path().join("status");
        let Ok(status) = std::fs::read_to_string(&path) else {
            continue; // a thread that just ended
        };
        threads += 1;
        assert_eq!(caps(&status, "CapEff") & !BPF_AND_PERFMON, 0, "{status}");
        assert_eq!(caps(&status, "CapPrm") & !BPF_AND_PERFMON, 0, "{status}");
    }
    assert!(threads >= 2, "the main thread and the event reader");
    // Gathers still work with what is left.
    stdin.write_all(b"\n").unwrap();
    line.clear();
    while !line.starts_with("flowlens:internal") {
        line.clear();
        assert!(stdout.read_line(&mut line).unwrap() > 0, "no second gather");
    }
    drop(stdin);
    assert!(child.wait().unwrap().success());
}

#[test]
fn a_non_root_user_with_only_bpf_and_perfmon_runs_everything() {
    let Some(_serial) = ebpf_test("a_non_root_user_with_only_bpf_and_perfmon_runs_everything")
    else {
        return;
    };
    let as_nobody = |args: &[&str]| {
        std::process::Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--inh-caps=-all,+bpf,+perfmon",
                "--ambient-caps=-all,+bpf,+perfmon",
                "--bounding-set=-all,+bpf,+perfmon",
            ])
            .arg(flowlens_bin())
            .args(["--plugin", plugin_lib().to_str().unwrap()])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("setpriv (util-linux) runs")
    };
    let doctor = as_nobody(&["doctor"]);
    let text = String::from_utf8_lossy(&doctor.stdout).into_owned();
    assert!(
        doctor.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&doctor.stderr)
    );
    assert!(text.ends_with(" 0 failed\n"), "{text}");
    let privileges = text.lines().find(|l| l.contains("privileges:")).unwrap();
    assert!(privileges.starts_with("ok "), "{privileges}");
    assert!(
        privileges.contains("held at start-up: CAP_PERFMON, CAP_BPF;"),
        "{privileges}"
    );
    assert!(
        privileges.contains("missing: CAP_SYS_ADMIN"),
        "{privileges}"
    );
    // And a gather with every probe attached.
    let once = as_nobody(&["once"]);
    let out = String::from_utf8_lossy(&once.stdout).into_owned();
    assert!(once.status.success(), "{out}");
    assert_eq!(
        value(&out, "flowlens:internal", &[], "probes_failed"),
        0,
        "{out}"
    );
    assert!(
        value(&out, "flowlens:internal", &[], "probes_attached") >= 6,
        "{out}"
    );
}

//! Least privilege: the capabilities flowlens keeps after start-up, exactly, per kernel (CAP_BPF
//! only where the gathers' bpf() calls need it, CAP_NET_ADMIN only while the DNAT backends are
//! served, CAP_PERFMON never outside `doctor`, none with eBPF off), and a non-root user holding
//! only the capabilities README names runs it fully; without CAP_NET_ADMIN, everything but the
//! DNAT backends.

use flowlens_tests::{session::*, *};
use std::{
    io::{BufRead, BufReader, Write},
    process::Stdio,
};

/// CAP_BPF (39).
const BPF: u64 = 1 << 39;
/// CAP_NET_ADMIN (12): what the DNAT backends' conntrack lookups need.
const NET_ADMIN: u64 = 1 << 12;

/// A `Cap*:` line of a /proc status file, as a bit set.
fn caps(status: &str, field: &str) -> u64 {
    let line = status
        .lines()
        .find(|l| l.starts_with(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in {status}"));
    u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
}

/// Whether this kernel refuses every bpf() command to a thread without CAP_BPF (the gate before
/// 6.5 with `kernel.unprivileged_bpf_disabled`, or where a distribution keeps it): measured
/// here, apart from flowlens, by a thread that drops its effective capabilities and asks for
/// the info of fd -1: EPERM is the gate, an error about the fd is no gate.
fn gathers_need_bpf() -> bool {
    std::thread::spawn(|| {
        #[repr(C)]
        struct Header {
            version: u32,
            pid: i32,
        }
        #[repr(C)]
        #[derive(Clone, Copy, Default)]
        struct Data {
            effective: u32,
            permitted: u32,
            inheritable: u32,
        }
        const VERSION_3: u32 = 0x2008_0522;
        let mut header = Header {
            version: VERSION_3,
            pid: 0,
        };
        let mut data = [Data::default(); 2];
        // SAFETY: capget/capset with a v3 header and two data structs, for this thread only.
        unsafe {
            assert_eq!(
                libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()),
                0
            );
            for d in &mut data {
                d.effective = 0;
            }
            assert_eq!(
                libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()),
                0
            );
        }
        const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
        let mut attr = [0u8; 16];
        attr[..4].copy_from_slice(&u32::MAX.to_ne_bytes());
        // SAFETY: bpf() with a 16-byte attr it only reads.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_OBJ_GET_INFO_BY_FD,
                attr.as_mut_ptr(),
                attr.len(),
            )
        };
        assert_eq!(rc, -1, "bpf(BPF_OBJ_GET_INFO_BY_FD, -1) succeeded");
        // EPERM: the gate; any other error (EBADF, EBADFD: the fd) is past it.
        std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
    })
    .join()
    .unwrap()
}

#[test]
fn after_start_up_only_what_the_gathers_of_this_kernel_need_is_held_in_every_thread() {
    let test = "after_start_up_only_what_the_gathers_of_this_kernel_need_is_held_in_every_thread";
    let Some(_serial) = root_test(test) else {
        return;
    };
    let bpf = if gathers_need_bpf() { BPF } else { 0 };
    eprintln!("{test}: the gathers need CAP_BPF here: {}", bpf != 0);
    let dir = TempDir::new("privileges");
    let config = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    };
    // The DNAT backends on (the default; this kernel has conntrack, its modules loaded), then
    // off; then eBPF off: nothing at all.
    held_after_start_up(&[], bpf | NET_ADMIN, true);
    let no_dnat = config("no-dnat.toml", "dnat_backends = false\n");
    held_after_start_up(&["--config", &no_dnat], bpf, true);
    let no_ebpf = config("no-ebpf.toml", "ebpf = false\n");
    held_after_start_up(&["--config", &no_ebpf], 0, false);
}

/// Runs `flowlens [args] telegraf` through a first gather (with every probe attached when
/// `ebpf`), checks that every thread holds no more than `kept` and the main thread exactly
/// that, and that gathers still work.
fn held_after_start_up(args: &[&str], kept: u64, ebpf: bool) {
    let mut child = flowlens(&[args, &["telegraf"]].concat())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut checker = monotonic::Checker::live();
    // A first gather: start-up (programs, maps, the start-up scan) is done.
    stdin.write_all(b"\n").unwrap();
    let mut line = String::new();
    while !line.starts_with("flowlens:internal") {
        line.clear();
        assert!(stdout.read_line(&mut line).unwrap() > 0, "no gather");
        checker.feed_line(&line);
    }
    if ebpf {
        assert!(line.contains("probes_failed=0i"), "{line}");
    }
    let pid = child.id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert_eq!(caps(&status, "CapEff"), kept, "{status}");
    assert_eq!(caps(&status, "CapPrm"), kept, "{status}");
    assert_eq!(caps(&status, "CapBnd"), kept, "{status}");
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
        assert_eq!(caps(&status, "CapEff") & !kept, 0, "{status}");
        assert_eq!(caps(&status, "CapPrm") & !kept, 0, "{status}");
    }
    if ebpf {
        assert!(threads >= 2, "the main thread and the event reader");
    }
    // Gathers still work with what is left.
    stdin.write_all(b"\n").unwrap();
    line.clear();
    while !line.starts_with("flowlens:internal") {
        line.clear();
        assert!(stdout.read_line(&mut line).unwrap() > 0, "no second gather");
        checker.feed_line(&line);
    }
    drop(stdin);
    assert!(child.wait().unwrap().success());
}

/// The binary and plugin under test, copied where user nobody can reach them: the checkout (and
/// its target/) may be in a directory only root can traverse (a root user's clone in /root,
/// mode 0700). A directory of its own under the temporary directory, mode 0755, the files
/// root's and not writable by others (what the shim's plugin check wants).
struct Reachable {
    dir: TempDir,
}

impl Reachable {
    fn new() -> Reachable {
        use std::os::unix::fs::PermissionsExt;
        let dir = TempDir::new("nobody");
        std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755)).unwrap();
        // Every directory above it must let others through.
        for ancestor in dir.0.ancestors().skip(1) {
            let mode = std::fs::metadata(ancestor).unwrap().permissions().mode();
            assert!(
                mode & 0o001 != 0,
                "{} (mode {mode:o}) keeps user nobody out: set TMPDIR to a directory others can \
                 traverse",
                ancestor.display()
            );
        }
        for (from, name, mode) in [
            (flowlens_bin(), "flowlens", 0o755),
            (plugin_lib(), "libflowlens.so", 0o644),
        ] {
            let to = dir.join(name);
            std::fs::copy(from, &to).unwrap();
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        Reachable { dir }
    }
}

/// Runs flowlens as user nobody with the capabilities `caps` (setpriv's names: "bpf,perfmon"),
/// from a copy it can reach ([`Reachable`]), with no locked-memory limit where root may lift
/// it: kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK, which a deployment raises (the
/// DaemonSet's comment says so) and flowlens does not.
fn as_nobody(caps: &str, args: &[&str]) -> std::process::Output {
    use std::os::unix::process::CommandExt;
    let copy = Reachable::new();
    let plus: String = caps.split(',').map(|c| format!(",+{c}")).collect();
    let mut setpriv = std::process::Command::new("setpriv");
    // SAFETY: setrlimit is async-signal-safe; run in the child before exec, as root.
    unsafe {
        setpriv.pre_exec(|| {
            let unlimited = libc::rlimit {
                rlim_cur: libc::RLIM_INFINITY,
                rlim_max: libc::RLIM_INFINITY,
            };
            // Where root may not raise it (no CAP_SYS_RESOURCE, as on a CI host whose kernel
            // charges no memlock), it stays as it is.
            libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited);
            Ok(())
        });
    }
    setpriv
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            &format!("--inh-caps=-all{plus}"),
            &format!("--ambient-caps=-all{plus}"),
            &format!("--bounding-set=-all{plus}"),
        ])
        .arg(copy.dir.join("flowlens"))
        .args([
            "--plugin",
            copy.dir.join("libflowlens.so").to_str().unwrap(),
        ])
        .args(args)
        .current_dir("/")
        .stdin(Stdio::null())
        .output()
        .expect("setpriv (util-linux) runs")
}

/// A gather with every probe attached.
fn gathers_with_every_probe(once: &std::process::Output) {
    let out = monotonic::checked_stdout(once);
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

#[test]
fn a_non_root_user_with_only_bpf_perfmon_and_net_admin_runs_everything() {
    let Some(_serial) =
        root_test("a_non_root_user_with_only_bpf_perfmon_and_net_admin_runs_everything")
    else {
        return;
    };
    let doctor = as_nobody("bpf,perfmon,net_admin", &["doctor"]);
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
        privileges.contains("held at start-up: CAP_NET_ADMIN, CAP_PERFMON, CAP_BPF;"),
        "{privileges}"
    );
    assert!(
        privileges.contains("missing: CAP_SYS_ADMIN"),
        "{privileges}"
    );
    assert!(
        privileges.ends_with("kept after start-up: CAP_NET_ADMIN, CAP_PERFMON, CAP_BPF"),
        "{privileges}"
    );
    let dnat = text.lines().find(|l| l.contains("DNAT backends:")).unwrap();
    assert!(
        dnat.starts_with("ok      feature DNAT backends: served by ctnetlink: "),
        "{dnat}"
    );
    gathers_with_every_probe(&as_nobody("bpf,perfmon,net_admin", &["once"]));
}

#[test]
fn without_net_admin_only_the_dnat_backends_are_off() {
    let Some(_serial) = root_test("without_net_admin_only_the_dnat_backends_are_off") else {
        return;
    };
    let doctor = as_nobody("bpf,perfmon", &["doctor"]);
    let text = String::from_utf8_lossy(&doctor.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&doctor.stderr).into_owned();
    assert_eq!(doctor.status.code(), Some(1), "{text}{stderr}");
    assert!(text.ends_with(" 1 failed\n"), "{text}");
    let failed: Vec<&str> = text.lines().filter(|l| l.starts_with("FAILED")).collect();
    assert_eq!(
        failed,
        [
            "FAILED  feature DNAT backends: not served: the kernel refuses conntrack lookups \
          without CAP_NET_ADMIN"
        ],
        "{text}"
    );
    let warnings: Vec<&str> = stderr.lines().filter(|l| l.contains("DNAT")).collect();
    assert_eq!(
        warnings,
        [
            "W! DNAT backends off (the backends behind virtual IPs): the kernel refuses conntrack \
          lookups without CAP_NET_ADMIN"
        ],
        "{stderr}"
    );
    let privileges = text.lines().find(|l| l.contains("privileges:")).unwrap();
    assert!(privileges.starts_with("ok "), "{privileges}");
    assert!(
        privileges.contains("CAP_NET_ADMIN (no DNAT backends (conntrack lookups))"),
        "{privileges}"
    );
    assert!(
        privileges.ends_with("kept after start-up: CAP_PERFMON, CAP_BPF"),
        "{privileges}"
    );
    gathers_with_every_probe(&as_nobody("bpf,perfmon", &["once"]));
}

//! Unit tests of the resolver, on stand-in node trees in temporary directories.

use super::*;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// A temporary directory removed on drop.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new(tag: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "flowlens-containers-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn hex64(n: u64) -> String {
    format!("{:016x}", n).repeat(4)
}

fn uid(n: u64) -> String {
    let h = format!("{:032x}", 0xabc0_0000_0000_0000u64 as u128 * 7 + n as u128);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

fn ino(p: &Path) -> u64 {
    std::fs::metadata(p).unwrap().ino()
}

fn resolver(base: &Path) -> Resolver {
    Resolver::new(MetadataRoots::under(base), 4096).with_rescan_interval(Duration::ZERO)
}

/// containerd bundle as the CRI writes it (see fixtures/containerd-container.config.json).
fn write_bundle(base: &Path, ns: &str, id: &str, annotations: &str) {
    let dir = base.join("containerd").join(ns).join(id);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("config.json"),
        format!(
            r#"{{"ociVersion":"1.0.2-dev","root":{{"path":"rootfs"}},"annotations":{annotations}}}"#
        ),
    )
    .unwrap();
}

fn cri_annotations(
    kind: &str,
    name: &str,
    pod: &str,
    ns: &str,
    uid: &str,
    sandbox: &str,
) -> String {
    format!(
        r#"{{"io.kubernetes.cri.container-type":"{kind}","io.kubernetes.cri.container-name":"{name}","io.kubernetes.cri.sandbox-name":"{pod}","io.kubernetes.cri.sandbox-namespace":"{ns}","io.kubernetes.cri.sandbox-uid":"{uid}","io.kubernetes.cri.sandbox-id":"{sandbox}"}}"#
    )
}

#[test]
fn resolves_a_cri_pod_from_its_bundle() {
    let tmp = TempDir::new("cri");
    let base = tmp.path();
    let (sb, ctr, u) = (hex64(1), hex64(2), uid(1));
    let pod_dir = base
        .join("cgroup/kubepods/besteffort")
        .join(format!("pod{u}"));
    std::fs::create_dir_all(pod_dir.join(&sb)).unwrap();
    std::fs::create_dir_all(pod_dir.join(&ctr)).unwrap();
    write_bundle(
        base,
        "k8s.io",
        &sb,
        &cri_annotations("sandbox", "", "web-1", "shop", &u, &sb)
            .replace(r#""io.kubernetes.cri.container-name":"","#, ""),
    );
    write_bundle(
        base,
        "k8s.io",
        &ctr,
        &cri_annotations("container", "nginx", "web-1", "shop", &u, &sb),
    );
    let mut r = resolver(base);

    let c = r.resolve(ino(&pod_dir.join(&ctr)), 0).unwrap();
    assert_eq!(
        *c,
        ContainerInfo {
            id: ctr.clone(),
            short_id: ctr[..12].to_string(),
            runtime: Runtime::Containerd,
            name: Some("nginx".into()),
            pod: Some("web-1".into()),
            namespace: Some("shop".into()),
            pod_uid: Some(u.clone()),
            sandbox_id: Some(sb.clone()),
            is_sandbox: false,
            qos: Some(QosClass::BestEffort),
        }
    );
    let s = r.resolve(ino(&pod_dir.join(&sb)), 0).unwrap();
    assert!(s.is_sandbox);
    assert_eq!(s.name, None);
    assert_eq!(s.pod.as_deref(), Some("web-1"));
    // The pod directory, the QoS level and the root are not containers.
    assert_eq!(r.resolve(ino(&pod_dir), 0), None);
    assert_eq!(
        r.resolve(ino(&base.join("cgroup/kubepods/besteffort")), 0),
        None
    );
    assert_eq!(r.resolve(ino(&base.join("cgroup")), 0), None);
    assert_eq!(r.warnings(), 0);
}

#[test]
fn docker_and_log_links_fill_in() {
    let tmp = TempDir::new("docker");
    let base = tmp.path();
    // A Docker container: bundle in namespace moby with null annotations, config.v2.json.
    let d = "1edb6c16e3d2a8ec7c2f5e4a0f6d3b1c9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b";
    std::fs::create_dir_all(base.join("cgroup/docker").join(d)).unwrap();
    write_bundle(base, "moby", d, "null");
    std::fs::create_dir_all(base.join("docker").join(d)).unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("src/containers/fixtures/docker.config.v2.json"),
        base.join("docker").join(d).join("config.v2.json"),
    )
    .unwrap();
    // A pod container known only from the kubelet's log link (the link's target is absent).
    let (c, u) = (hex64(9), uid(9));
    let cdir = base
        .join("cgroup/kubepods/burstable")
        .join(format!("pod{u}"))
        .join(&c);
    std::fs::create_dir_all(&cdir).unwrap();
    std::fs::create_dir_all(base.join("containers-logs")).unwrap();
    std::os::unix::fs::symlink(
        "/nonexistent/0.log",
        base.join("containers-logs").join(format!(
            "heapster-v1.5.2-6b5d7b57f9-g2cjz_kube-system_heapster-{c}.log"
        )),
    )
    .unwrap();
    // A dockershim pod container whose bare-id cgroup path leaves the runtime to metadata.
    let shim = "4e5f6a7b8c9d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091";
    let sdir = base
        .join("cgroup/kubepods/pod39a1d7c2-5b8e-4f0a-9c3d-6e2f1a4b8c7d")
        .join(shim);
    std::fs::create_dir_all(&sdir).unwrap();
    std::fs::create_dir_all(base.join("docker").join(shim)).unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/containers/fixtures/dockershim.config.v2.json"),
        base.join("docker").join(shim).join("config.v2.json"),
    )
    .unwrap();

    let mut r = resolver(base);
    let di = r
        .resolve(ino(&base.join("cgroup/docker").join(d)), 0)
        .unwrap();
    assert_eq!(di.runtime, Runtime::Docker);
    assert_eq!(di.short_id, "1edb6c16e3d2");
    assert_eq!(di.name.as_deref(), Some("hopeful_hopper"));
    assert_eq!(di.pod, None);

    let li = r.resolve(ino(&cdir), 0).unwrap();
    assert_eq!(li.runtime, Runtime::Containerd);
    assert_eq!(li.name.as_deref(), Some("heapster"));
    assert_eq!(li.pod.as_deref(), Some("heapster-v1.5.2-6b5d7b57f9-g2cjz"));
    assert_eq!(li.namespace.as_deref(), Some("kube-system"));
    assert_eq!(li.pod_uid.as_deref(), Some(u.as_str()));
    assert_eq!(li.qos, Some(QosClass::Burstable));

    let si = r.resolve(ino(&sdir), 0).unwrap();
    assert_eq!(si.runtime, Runtime::Docker);
    assert_eq!(si.name.as_deref(), Some("coredns"));
    assert_eq!(si.namespace.as_deref(), Some("kube-system"));
    assert_eq!(si.qos, Some(QosClass::Guaranteed));
    assert_eq!(r.warnings(), 0);
}

#[test]
fn crio_userdata() {
    let tmp = TempDir::new("crio");
    let base = tmp.path();
    let c = "3f1e2d4c5b6a79880a1b2c3d4e5f60718293a4b5c6d7e8f9a0b1c2d3e4f5a6b7";
    let u = "0b4d8f2e_6a1c_4e3b_9d7f_5c2a8e6b4d10";
    let dir = base
        .join("cgroup/kubepods.slice/kubepods-besteffort.slice")
        .join(format!("kubepods-besteffort-pod{u}.slice"))
        .join(format!("crio-{c}.scope"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::create_dir_all(dir.with_file_name(format!("crio-conmon-{c}.scope"))).unwrap();
    std::fs::create_dir_all(base.join("crio").join(c).join("userdata")).unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/containers/fixtures/crio-container.config.json"),
        base.join("crio").join(c).join("userdata/config.json"),
    )
    .unwrap();
    let mut r = resolver(base);
    let i = r.resolve(ino(&dir), 0).unwrap();
    assert_eq!(i.runtime, Runtime::CriO);
    assert_eq!(i.name.as_deref(), Some("redis"));
    assert_eq!(i.pod.as_deref(), Some("cache-0"));
    assert_eq!(i.namespace.as_deref(), Some("data"));
    assert_eq!(
        i.pod_uid.as_deref(),
        Some("0b4d8f2e-6a1c-4e3b-9d7f-5c2a8e6b4d10")
    );
    assert_eq!(
        r.resolve(
            ino(&dir.with_file_name(format!("crio-conmon-{c}.scope"))),
            0
        ),
        None
    );
}

#[test]
fn proc_fallback_for_cgroup_v1_hosts() {
    let tmp = TempDir::new("v1");
    let base = tmp.path();
    let c = hex64(5);
    std::fs::create_dir_all(base.join("proc/4242")).unwrap();
    std::fs::write(
        base.join("proc/4242/cgroup"),
        format!("12:pids:/docker/{c}\n11:cpu,cpuacct:/docker/{c}\n1:name=systemd:/docker/{c}\n"),
    )
    .unwrap();
    std::fs::create_dir_all(base.join("proc/1")).unwrap();
    std::fs::write(
        base.join("proc/1/cgroup"),
        "12:pids:/init.scope\n1:name=systemd:/init.scope\n",
    )
    .unwrap();
    // No cgroup2 tree at all (base/cgroup does not exist).
    let mut r = resolver(base);
    let i = r.resolve(1, 4242).unwrap();
    assert_eq!(i.id, c);
    assert_eq!(i.runtime, Runtime::Docker);
    assert_eq!(r.resolve(1, 1), None);
    assert_eq!(r.resolve(1, 0), None);
    assert_eq!(r.resolve(1, 999_999), None); // gone
    assert_eq!(r.warnings(), 0);
    // Pid entries live while used and while their cgroup id is live.
    let live: HashSet<u64> = [1].into();
    r.prune(&live);
    assert!(r.by_pid.len() >= 2);
    r.prune(&live); // not used since the last prune
    assert_eq!(r.by_pid.len(), 0);
    r.prune(&HashSet::new());
    assert_eq!(r.cache_len(), 0);
}

#[test]
fn hybrid_root_cgroup_falls_back_to_proc() {
    let tmp = TempDir::new("hybrid");
    let base = tmp.path();
    std::fs::create_dir_all(base.join("cgroup/system.slice")).unwrap();
    let c = hex64(6);
    std::fs::create_dir_all(base.join("proc/77")).unwrap();
    std::fs::write(
        base.join("proc/77/cgroup"),
        format!("1:name=systemd:/docker/{c}\n0::/\n"),
    )
    .unwrap();
    let mut r = resolver(base);
    assert_eq!(r.resolve(ino(&base.join("cgroup")), 77).unwrap().id, c);
    // A host cgroup does not read /proc.
    assert_eq!(r.resolve(ino(&base.join("cgroup/system.slice")), 77), None);
}

#[test]
fn hostile_metadata_files_are_skipped_with_one_warning_each() {
    let tmp = TempDir::new("hostile-r");
    let base = tmp.path();
    let ids: Vec<String> = (100..107).map(hex64).collect();
    for id in &ids {
        std::fs::create_dir_all(base.join("cgroup/docker").join(id)).unwrap();
        std::fs::create_dir_all(base.join("docker").join(id)).unwrap();
    }
    let f = |i: usize| base.join("docker").join(&ids[i]).join("config.v2.json");
    std::fs::write(f(0), vec![b' '; MAX_FILE_BYTES as usize + 1]).unwrap(); // huge
    std::fs::write(f(1), br#"{"ID": "#).unwrap(); // truncated
    std::fs::write(f(2), b"\x7fELF not json").unwrap(); // not JSON
    std::fs::write(base.join("secret"), br#"{"Name":"/stolen"}"#).unwrap();
    std::os::unix::fs::symlink(base.join("secret"), f(3)).unwrap(); // symlink
    std::os::unix::fs::symlink(f(4).with_extension("b"), f(4)).unwrap(); // loop
    std::os::unix::fs::symlink(f(4), f(4).with_extension("b")).unwrap();
    let fifo =
        std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(f(5).as_os_str())).unwrap();
    // SAFETY: valid path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0); // FIFO: must not block
                                                                  // The container directory itself a symlink to another container's directory.
    std::fs::remove_dir(base.join("docker").join(&ids[6])).unwrap();
    std::os::unix::fs::symlink(
        base.join("docker").join(&ids[3]),
        base.join("docker").join(&ids[6]),
    )
    .unwrap();

    let mut r = resolver(base);
    for id in &ids {
        let i = r
            .resolve(ino(&base.join("cgroup/docker").join(id)), 0)
            .unwrap();
        assert_eq!(&i.id, id);
        assert_eq!(i.name, None, "{id}");
        assert_eq!(i.runtime, Runtime::Docker);
    }
    assert_eq!(r.warnings(), ids.len() as u64);
    assert_eq!(r.warned.len(), ids.len());
    // Read again (new cgroups of the same containers): counted, not logged again.
    for id in &ids {
        let again = base.join("cgroup/docker").join(id).join("init");
        std::fs::create_dir_all(&again).unwrap();
        assert!(r.resolve(ino(&again), 0).is_some());
    }
    assert_eq!(r.warnings(), 2 * ids.len() as u64);
    assert_eq!(r.warned.len(), ids.len());
}

#[test]
fn hostile_names_are_dropped_and_counted() {
    let tmp = TempDir::new("hostile-n");
    let base = tmp.path();
    let ids: Vec<String> = (200..203).map(hex64).collect();
    for id in &ids {
        std::fs::create_dir_all(base.join("cgroup/docker").join(id)).unwrap();
        std::fs::create_dir_all(base.join("docker").join(id)).unwrap();
    }
    let f = |i: usize| base.join("docker").join(&ids[i]).join("config.v2.json");
    // A name line protocol cannot carry (`\\`), a pod name with NUL, a fine namespace.
    std::fs::write(
        f(0),
        br#"{"Name":"/a\\\\b","Config":{"Labels":{"io.kubernetes.pod.name":"p\u0000","io.kubernetes.pod.namespace":"n s"}}}"#,
    )
    .unwrap();
    // Names with separators and quotes are kept: the encoder escapes them.
    std::fs::write(f(1), br#"{"Name":"/web 1,k=\"v\""}"#).unwrap();
    // Invalid UTF-8: not JSON, the file is skipped.
    std::fs::write(f(2), b"{\"Name\":\"/a\xff\"}").unwrap();
    let mut r = resolver(base);
    let info = |r: &mut Resolver, i: usize, sub: &str| {
        let dir = base.join("cgroup/docker").join(&ids[i]).join(sub);
        std::fs::create_dir_all(&dir).unwrap();
        r.resolve(ino(&dir), 0).unwrap()
    };
    let a = info(&mut r, 0, "");
    assert_eq!((a.name.as_deref(), a.pod.as_deref()), (None, None));
    assert_eq!(a.namespace.as_deref(), Some("n s"));
    assert_eq!(info(&mut r, 1, "").name.as_deref(), Some(r#"web 1,k="v""#));
    assert_eq!(info(&mut r, 2, "").name, None);
    assert_eq!((r.names_dropped(), r.warnings()), (2, 1));
    // Read again: counted again, logged once per file.
    info(&mut r, 0, "init");
    info(&mut r, 2, "init");
    assert_eq!((r.names_dropped(), r.warnings()), (4, 2));
    assert_eq!(r.warned.len(), 2);
}

#[test]
fn hostile_proc_file_is_capped() {
    let tmp = TempDir::new("proc-hostile");
    let base = tmp.path();
    std::fs::create_dir_all(base.join("proc/9")).unwrap();
    std::fs::write(base.join("proc/9/cgroup"), vec![b'x'; 70_000]).unwrap();
    let mut r = resolver(base);
    assert_eq!(r.resolve(1, 9), None);
    assert_eq!(r.warnings(), 1);
}

#[test]
fn roots_that_cannot_be_listed_are_warned_about_missing_ones_are_not() {
    let tmp = TempDir::new("roots");
    let base = tmp.path();
    let ids: Vec<String> = (200..202).map(hex64).collect();
    for id in &ids {
        std::fs::create_dir_all(base.join("cgroup/docker").join(id)).unwrap();
    }
    // containerd's root a symbolic link loop, the kubelet's a regular file; CRI-O's and
    // Docker's missing (runtimes this node does not run: nothing to say).
    std::os::unix::fs::symlink(base.join("containerd"), base.join("containerd")).unwrap();
    std::fs::write(base.join("containers-logs"), b"").unwrap();
    let mut r = resolver(base);
    for id in &ids {
        let i = r
            .resolve(ino(&base.join("cgroup/docker").join(id)), 0)
            .unwrap();
        assert_eq!((&i.id, &i.name), (id, &None));
    }
    // Each root is logged once, counted at each container (the kubelet's directory is
    // listed again: this resolver's interval is zero).
    let mut warned: Vec<_> = r.warned.iter().cloned().collect();
    warned.sort();
    assert_eq!(
        warned,
        vec![base.join("containerd"), base.join("containers-logs")]
    );
    assert_eq!(r.warnings(), 2 * ids.len() as u64);
}

#[test]
fn thousand_containers_come_and_go() {
    let tmp = TempDir::new("churn");
    let base = tmp.path();
    let n = 1000;
    let mut ids = Vec::new();
    for k in 0..n {
        let (c, u) = (hex64(10_000 + k), uid(k));
        let dir = base
            .join("cgroup/kubepods/besteffort")
            .join(format!("pod{u}"))
            .join(&c);
        std::fs::create_dir_all(&dir).unwrap();
        write_bundle(
            base,
            "k8s.io",
            &c,
            &cri_annotations("container", "app", &format!("pod-{k}"), "ns", &u, &hex64(1)),
        );
        ids.push((ino(&dir), c, dir));
    }
    let mut r = resolver(base).with_rescan_interval(Duration::from_secs(3600));
    let live: HashSet<u64> = ids.iter().map(|(i, ..)| *i).collect();
    for (i, c, _) in &ids {
        let info = r.resolve(*i, 0).unwrap();
        assert_eq!(&info.id, c);
        assert_eq!(info.name.as_deref(), Some("app"));
    }
    assert_eq!(r.warnings(), 0);
    r.prune(&live);
    assert_eq!(r.by_cgroup.len(), n as usize);
    assert_eq!(r.by_container.len(), n as usize);
    // Half go away.
    for (_, c, dir) in &ids[..500] {
        std::fs::remove_dir(dir).unwrap();
        std::fs::remove_dir_all(base.join("containerd/k8s.io").join(c)).unwrap();
    }
    let half: HashSet<u64> = ids[500..].iter().map(|(i, ..)| *i).collect();
    r.prune(&half);
    assert_eq!(r.by_cgroup.len(), 500);
    assert_eq!(r.by_container.len(), 500);
    // The rest too.
    for (_, c, dir) in &ids[500..] {
        std::fs::remove_dir(dir).unwrap();
        std::fs::remove_dir_all(base.join("containerd/k8s.io").join(c)).unwrap();
    }
    r.prune(&HashSet::new());
    assert_eq!(r.cache_len(), 0);
    assert!(r.by_cgroup.order.is_empty() && r.by_container.order.is_empty());
}

#[test]
fn caches_are_bounded() {
    let tmp = TempDir::new("bounded");
    let base = tmp.path();
    let mut inodes = Vec::new();
    for k in 0..50 {
        let dir = base.join("cgroup/docker").join(hex64(500 + k));
        std::fs::create_dir_all(&dir).unwrap();
        inodes.push(ino(&dir));
    }
    let mut r = Resolver::new(MetadataRoots::under(base), 10).with_rescan_interval(Duration::ZERO);
    for i in &inodes {
        assert!(r.resolve(*i, 0).is_some());
    }
    assert_eq!(r.by_cgroup.len(), 10);
    assert_eq!(r.by_container.len(), 10);
    assert!(r.by_cgroup.order.len() <= 2 * 10 + 64);
    // Evicted entries resolve again.
    assert_eq!(r.resolve(inodes[0], 0).unwrap().id, hex64(500));
}

#[test]
fn unknown_ids_walk_at_most_once_per_interval_and_once_per_id() {
    let tmp = TempDir::new("rate");
    let base = tmp.path();
    std::fs::create_dir_all(base.join("cgroup")).unwrap();
    let mut r = Resolver::new(MetadataRoots::under(base), 100)
        .with_rescan_interval(Duration::from_secs(3600));
    assert_eq!(r.resolve(123_456_789, 0), None);
    let first = r.last_scan.unwrap();
    assert!(r.missing.contains(&123_456_789));
    assert_eq!(r.take_deferred(), Vec::<u64>::new(), "walked for: missing");
    // A new directory appears, but the interval has not passed: no walk, and the id is
    // deferred to the next gather (asked for once more, it is deferred again).
    let c = hex64(77);
    let dir = base.join("cgroup/docker").join(&c);
    std::fs::create_dir_all(&dir).unwrap();
    assert_eq!(r.resolve(ino(&dir), 0), None);
    assert_eq!(r.last_scan.unwrap(), first);
    assert_eq!(r.take_deferred(), vec![ino(&dir)]);
    assert_eq!(r.take_deferred(), Vec::<u64>::new());
    // Once it has, the walk finds it.
    r.rescan_interval = Duration::ZERO;
    assert_eq!(r.resolve(ino(&dir), 0).unwrap().id, c);
    assert_eq!(r.take_deferred(), Vec::<u64>::new());
    // The id the last walk could not find is not walked for again.
    let before = r.last_scan.unwrap();
    assert_eq!(r.resolve(123_456_789, 0), None);
    assert_eq!(r.last_scan.unwrap(), before);
}

#[test]
fn default_roots_are_the_real_paths() {
    let d = MetadataRoots::default();
    assert!(
        d.cgroup2 == Path::new("/sys/fs/cgroup/unified")
            || d.cgroup2 == Path::new("/sys/fs/cgroup")
    );
    assert_eq!(
        d.containerd,
        Path::new("/run/containerd/io.containerd.runtime.v2.task")
    );
    assert_eq!(
        d.crio,
        Path::new("/run/containers/storage/overlay-containers")
    );
    assert_eq!(d.docker, Path::new("/var/lib/docker/containers"));
    assert_eq!(d.kubelet_logs, Path::new("/var/log/containers"));
    assert_eq!(d.proc, Path::new("/proc"));
}

/// Removes the cgroup directories it created, deepest first.
struct CgroupDirs(Vec<PathBuf>);

impl Drop for CgroupDirs {
    fn drop(&mut self) {
        for d in self.0.iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// Needs root and a cgroup2 mount: creates the directory containerd's CRI (cgroupfs driver)
/// would, and resolves its real cgroup id.
#[test]
fn real_cgroup2_directory_resolves() {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        assert!(!ci, "CI=true: this test must run as root");
        eprintln!("skipped real_cgroup2_directory_resolves: needs root to create a cgroup");
        return;
    }
    let root = MetadataRoots::default().cgroup2;
    if !cgroup::is_cgroup2_mount(&root) {
        assert!(!ci, "CI=true: no cgroup2 mount at {}", root.display());
        eprintln!(
            "skipped real_cgroup2_directory_resolves: no cgroup2 mount at {}",
            root.display()
        );
        return;
    }
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        ^ u64::from(std::process::id());
    let (u, c) = (uid(nonce), hex64(nonce));
    let leaf = root
        .join("kubepods/besteffort")
        .join(format!("pod{u}"))
        .join(&c);
    let mut created = CgroupDirs(Vec::new());
    let mut cur = root.clone();
    for part in ["kubepods", "besteffort", &format!("pod{u}"), &c] {
        cur = cur.join(part);
        match std::fs::create_dir(&cur) {
            Ok(()) => created.0.push(cur.clone()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => panic!("mkdir {}: {e}", cur.display()),
        }
    }
    let id = ino(&leaf);
    let tmp = TempDir::new("real");
    let roots = MetadataRoots {
        cgroup2: root,
        ..MetadataRoots::under(tmp.path())
    };
    let mut r = Resolver::new(roots, 1024);
    let info = r.resolve(id, 0).expect("the new cgroup resolves");
    assert_eq!(info.id, c);
    assert_eq!(info.pod_uid.as_deref(), Some(u.as_str()));
    assert_eq!(info.qos, Some(QosClass::BestEffort));
    drop(created);
    assert!(!leaf.exists());
    r.prune(&HashSet::new());
    assert_eq!(r.cache_len(), 0);
}

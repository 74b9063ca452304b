//! Containers and pods with the real runtimes (see tests/support/runtimes.rs): containerd CRI pods and a
//! Docker container started by the test, TCP traffic run inside them with busybox `nc`, and
//! flowlens's `container:`/`pod:` series checked against what the runtimes wrote (names,
//! namespaces, ids). The harness (tests/support/runtimes.rs) removes everything it created.

use flowlens_core::lineproto::{parse_lines, FieldValue};
use flowlens_tests::{require_root, runtimes::RealRuntimes, session::Session, TempDir};
use std::time::{Duration, Instant};

const NS: &str = "flowlens-e2e";

/// The integer field of the `measurement` line whose tags include `tags` (-1: no such line).
fn num(text: &str, measurement: &str, tags: &[(&str, &str)], field: &str) -> i64 {
    let points = parse_lines(text).unwrap();
    points
        .iter()
        .find(|p| {
            p.measurement == measurement
                && tags
                    .iter()
                    .all(|(k, v)| p.tags.iter().any(|(pk, pv)| pk == k && pv == v))
        })
        .and_then(|p| p.fields.iter().find(|(k, _)| k == field))
        .map(|(_, v)| match v {
            FieldValue::Int(i) => *i,
            FieldValue::Float(f) => *f as i64,
            _ => -1,
        })
        .unwrap_or(-1)
}

/// `n` persistent client connections to `ip:8080` (stdin kept open, or nc half-closes).
fn clients(ip: &str, n: usize) -> String {
    let one = format!("sleep 100000 | nc {ip} 8080 & ");
    format!("{}sleep 100000", one.repeat(n))
}

#[test]
fn pods_and_a_docker_container_are_counted_with_the_names_the_runtimes_wrote() {
    if !require_root("pods_and_a_docker_container_are_counted_with_the_names_the_runtimes_wrote") {
        return;
    }
    let rt = RealRuntimes::start();
    let (task_dir, docker_dir) = rt.state_dirs();
    let empty = TempDir::new("no-log-links");
    let config = format!(
        "containerd_state_dir = \"{}\"\ndocker_containers_dir = \"{}\"\nkubelet_log_dir = \"{}\"\n",
        task_dir.display(),
        docker_dir.display(),
        empty.0.display()
    );
    let mut s = Session::start(&config);
    let p2 = rt.run_pod("db", NS, &[("c", "nc -ll -p 8080 -e /bin/cat")]);
    // The clients connect once: the server must listen before they start.
    rt.wait_listening(p2.id("c"), 8080);
    let ip = p2.ip.clone();
    let p1 = rt.run_pod(
        "web",
        NS,
        &[
            ("a", &clients(&ip, 3)),
            ("b", &clients(&ip, 1)),
            ("idle", "sleep 100000"),
        ],
    );
    let d = rt.run_docker("flowlens-e2e-d", &clients(&ip, 2));
    let short = |id: &str| id[..12].to_string();
    let (a, b, c, dk) = (
        short(p1.id("a")),
        short(p1.id("b")),
        short(p2.id("c")),
        short(&d.id),
    );
    // The clients start asynchronously: gather until c serves all six connections.
    let deadline = Instant::now() + Duration::from_secs(30);
    let t = loop {
        std::thread::sleep(Duration::from_millis(500));
        let t = s.gather();
        if num(&t, "container:num_flows", &[("container", &c)], "as_server") >= 6
            || Instant::now() > deadline
        {
            break t;
        }
    };
    let cn = |id: &str, f: &str| num(&t, "container:num_flows", &[("container", id)], f);
    assert_eq!(cn(&a, "as_client"), 3, "{t}");
    assert_eq!(cn(&b, "as_client"), 1, "{t}");
    assert_eq!(cn(&dk, "as_client"), 2, "{t}");
    assert_eq!(cn(&c, "as_server"), 6, "{t}");
    let pn = |pod: &str, f: &str| num(&t, "pod:num_flows", &[("pod", pod)], f);
    assert_eq!(pn("web", "as_client"), 4, "{t}");
    assert_eq!(pn("db", "as_server"), 6, "{t}");
    let pc = |pod: &str| num(&t, "pod:num_containers", &[("pod", pod)], "num_containers");
    // Running containers, the idle one too (it has no flows), the sandbox (pause) not.
    assert_eq!((pc("web"), pc("db")), (3, 1), "{t}");
    // Names and namespaces as the runtimes wrote them: CRI annotations, Docker's config.v2.json.
    let tags = [
        ("container", a.as_str()),
        ("container_name", "a"),
        ("pod", "web"),
        ("namespace", NS),
    ];
    assert_eq!(num(&t, "container:num_flows", &tags, "as_client"), 3, "{t}");
    let docker_tags = [
        ("container", dk.as_str()),
        ("container_name", "flowlens-e2e-d"),
    ];
    assert_eq!(
        num(&t, "container:num_flows", &docker_tags, "as_client"),
        2,
        "{t}"
    );
    // The pods' sandboxes are no containers of their own.
    for pod in [&p1, &p2] {
        let sandbox = short(&pod.sandbox_id);
        assert!(!t.contains(&format!("container={sandbox}")), "{t}");
    }
    s.finish();
    let teardown = rt.stop();
    assert!(
        teardown.leftovers.is_empty(),
        "left behind: {:?}",
        teardown.leftovers
    );
}

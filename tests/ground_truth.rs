//! Ground truth under load: flowlens started and restarted in the middle of connection churn,
//! bulk transfers, UDP read with peeks and pods coming and going, its totals held against the
//! workload's own counts and `ss -tin`.
//!
//! Stand-in pods (containerd bundles, cgroup2 directories, two network namespaces joined by a
//! veth pair): `truth/server-0` (container `srv`: a request/response server on TCP port 80, a
//! one-byte echo on port 81, a UDP echo on port 5353 that peeks before it reads),
//! `truth/client-0` (container `cli`: the measured workload, driven by the test through FIFOs),
//! and `truth/churn-N` pods whose container opens and closes connections to port 81 as fast as
//! it can: flowlens starts and restarts while one of them runs, and each goes away in turn.
//!
//! What must hold: the `cli` container's `container:traffic` counters of the first run plus
//! those of the second equal what the workload moved from just before the first start (its own
//! count, and for its four long-lived connections the increase of `ss -tin`'s `bytes_acked` and
//! `bytes_received`), unless flowlens counted a loss; after a churner stops, its container has no
//! active flow left and the server only the long-lived ones (no ghost flows).

use flowlens_tests::{
    in_ci, root_test,
    session::{sum, value, Session},
    sh,
    standins::StandIns,
    truth::{mkfifo, Driver, CHURNER, CLIENT, SERVER},
    NetnsPair, TempDir,
};
use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

const POD_NS: &str = "truth";

/// `bytes_acked` and `bytes_received` summed over the established connections to port 80 of
/// network namespace `ns`, from `ss -tin`.
fn ss_bytes(ns: &str) -> (i64, i64, usize) {
    let out = sh(
        "ip",
        &[
            "netns",
            "exec",
            ns,
            "ss",
            "-tinH",
            "state",
            "established",
            "( dport = :80 )",
        ],
    );
    let field = |text: &str, name: &str| -> i64 {
        text.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .map_or(0, |v| v.parse().unwrap())
    };
    let (mut acked, mut rcvd, mut n) = (0, 0, 0);
    // Each socket: a line with the addresses, then an indented line with its tcp_info.
    for line in out.lines().filter(|l| l.contains("rtt:")) {
        acked += field(line, "bytes_acked:");
        rcvd += field(line, "bytes_received:");
        n += 1;
    }
    (acked, rcvd, n)
}

/// The losses flowlens counted in a batch (ring overflows, skipped runs, sockets without room).
fn losses(batch: &str) -> i64 {
    value(batch, "flowlens:internal", &[], "events_lost")
        + value(batch, "flowlens:internal", &[], "flows_evicted")
}

/// The `cli` container's bytes in a batch: (sent, received).
fn traffic(batch: &str, tag: &str) -> (i64, i64) {
    let tags = [("container", tag)];
    (
        value(batch, "container:traffic", &tags, "bytes_sent"),
        value(batch, "container:traffic", &tags, "bytes_rcvd"),
    )
}

/// Gathers until `done` holds for a batch (each gather reads the kernel anew; the wait only
/// detects a hang), and returns that batch.
fn gather_until(s: &mut Session, what: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let batch = s.gather();
        if done(&batch) {
            eprintln!(
                "ground truth: {what}: after {:?}",
                Instant::now() + Duration::from_secs(120) - deadline
            );
            return batch;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: never held; last batch:\n{batch}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The first gather in which the client's short connections have all ended: a socket its
/// process closed has no file left for the gather's iterator to read it through, so its
/// counters arrive with its close record, once the server's FIN came.
fn settled(s: &mut Session, cli: &str) -> String {
    let tcp = [("container", cli), ("proto", "tcp")];
    gather_until(s, "the client's short connections end", |b| {
        sum(b, "container:peers", &tcp, "active") == 4
    })
}

/// A churner pod: its container runs until its run file is removed.
struct Churner {
    run: PathBuf,
    tag: String,
}

fn start_churner(pods: &mut StandIns, n: u32, netns: &str, server: &str, dir: &TempDir) -> Churner {
    let uid = format!("7e1a0000-0000-4000-8000-00000000c{n:03}");
    let name = format!("churn-{n}");
    let sandbox = pods.pod(POD_NS, &name, &uid, netns);
    let run = dir.join(&format!("churn-{n}.run"));
    std::fs::write(&run, b"").unwrap();
    let id = pods.container(
        (POD_NS, &name, &uid, &sandbox),
        "churner",
        netns,
        CHURNER,
        &[server, run.to_str().unwrap()],
    );
    Churner {
        run,
        tag: id[..12].to_string(),
    }
}

/// Stops a churner and waits until flowlens sees none of its flows active, and none of the
/// server's TCP flows but the four long-lived connections (a ghost flow never ends: the wait
/// fails). (Its UDP flow stays active until `udp_idle_timeout_secs`.)
fn stop_churner(s: &mut Session, churner: &Churner, srv: &str) -> String {
    std::fs::remove_file(&churner.run).unwrap();
    let churner_tags = [("container", churner.tag.as_str())];
    let srv_tcp = [("container", srv), ("proto", "tcp")];
    gather_until(
        s,
        "the churner's flows end, the server keeps the long-lived ones",
        |b| {
            value(b, "container:num_flows", &churner_tags, "as_client") == 0
                && sum(b, "container:peers", &srv_tcp, "active") == 4
        },
    )
}

#[test]
fn totals_equal_the_workloads_own_counts_across_start_and_restart_under_churn() {
    const TEST: &str = "totals_equal_the_workloads_own_counts_across_start_and_restart_under_churn";
    let Some(_serial) = root_test(TEST) else {
        return;
    };
    let pair = NetnsPair::new("flgt", 171);
    let (client_ns, server_ns) = (pair.ns[0].clone(), pair.ns[1].clone());
    let server = pair.addrs[1].clone();
    let dir = TempDir::new("ground-truth");
    let mut pods = StandIns::new();

    let srv_uid = "7e1a0000-0000-4000-8000-000000000001";
    let srv_pod = pods.pod(POD_NS, "server-0", srv_uid, &server_ns);
    let srv = pods.container(
        (POD_NS, "server-0", srv_uid, &srv_pod),
        "srv",
        &server_ns,
        SERVER,
        &[&server],
    )[..12]
        .to_string();
    let cli_uid = "7e1a0000-0000-4000-8000-000000000002";
    let cli_pod = pods.pod(POD_NS, "client-0", cli_uid, &client_ns);
    let (commands, answers) = (dir.join("commands"), dir.join("answers"));
    mkfifo(&commands);
    mkfifo(&answers);
    let cli = pods.container(
        (POD_NS, "client-0", cli_uid, &cli_pod),
        "cli",
        &client_ns,
        CLIENT,
        &[
            &server,
            commands.to_str().unwrap(),
            answers.to_str().unwrap(),
        ],
    )[..12]
        .to_string();
    let mut client = Driver::open(&commands, &answers);

    // Before flowlens: four long-lived connections that already moved data, and churn.
    client.run("open 4");
    client.run("bulk 100000");
    let churn1 = start_churner(&mut pods, 1, &client_ns, &server, &dir);
    let before = client.run("totals");
    let (acked0, rcvd0, conns) = ss_bytes(&client_ns);
    assert_eq!(conns, 4, "the long-lived connections");

    // First run: started under churn.
    let mut s = Session::start("");
    if in_ci() {
        let first = s.gather();
        assert!(
            first.contains("probes_failed=0i"),
            "CI loads every probe:\n{first}"
        );
    }
    for step in ["churn 300", "bulk 1000000", "udp 50", "churn 200", "udp 50"] {
        client.run(step);
        s.gather();
    }
    // A pod comes, another goes: the first churner's flows must all end.
    let churn2 = start_churner(&mut pods, 2, &client_ns, &server, &dir);
    stop_churner(&mut s, &churn1, &srv);
    let first_run = settled(&mut s, &cli);
    let lost1 = losses(&first_run);
    let run1 = traffic(&first_run, &cli);
    s.finish();

    // Second run: started under the second churner's churn, with the long-lived connections
    // idle (their bytes before it are the first run's).
    let mut s = Session::start("");
    for step in ["bulk 500000", "churn 300", "udp 50", "bulk 250000"] {
        client.run(step);
        s.gather();
    }
    stop_churner(&mut s, &churn2, &srv);
    let after = client.run("totals");
    let (acked1, rcvd1, conns) = ss_bytes(&client_ns);
    assert_eq!(conns, 4, "the long-lived connections");
    let second_run = settled(&mut s, &cli);
    let lost2 = losses(&second_run);
    let run2 = traffic(&second_run, &cli);
    s.finish();

    // The workload's own count of the bulk part agrees with the kernel's.
    assert_eq!(
        (acked1 - acked0, rcvd1 - rcvd0),
        (
            after.bulk[0] - before.bulk[0],
            after.bulk[1] - before.bulk[1]
        ),
        "ss -tin against the workload's count of its long-lived connections"
    );
    let expected = after.since(&before);
    let counted = (run1.0 + run2.0, run1.1 + run2.1);
    eprintln!(
        "cli: workload {expected:?}, flowlens {counted:?} (first run {run1:?}, second {run2:?}); \
         losses counted: {lost1} + {lost2}"
    );
    if lost1 + lost2 == 0 {
        assert_eq!(
            counted, expected,
            "flowlens's totals against the workload's own count"
        );
    } else {
        // A counted loss explains a shortfall, never an excess.
        assert!(
            counted.0 <= expected.0 && counted.1 <= expected.1,
            "more than the workload moved: {counted:?} > {expected:?}"
        );
    }
}

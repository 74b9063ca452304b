//! Section 2c: what one conntrack lookup (`flowlens::conntrack::Conntrack::backend`, a
//! ctnetlink GET) costs against a table of N DNATed entries. kube-proxy's shape
//! (tests/support/kube_proxy.rs) in network namespaces; N UDP flows from the pod to the
//! virtual IP, each from a port of its own, make N entries in the node's table; then, from the
//! node's namespace, lookups of those flows (hits: each must give the backend that answered)
//! and of flows that never were (misses), timed in batches.

use crate::stats::Spread;
use anyhow::{ensure, Context, Result};
use flowlens::conntrack::Conntrack;
use flowlens_core::Proto;
use flowlens_tests::{kube_proxy::Service, session::in_netns};
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

/// What the lookups cost.
pub struct Cost {
    /// Entries made (one UDP flow each, DNATed).
    pub entries: usize,
    /// Lookups per batch.
    pub lookups: usize,
    /// Microseconds per lookup of an existing entry, over the batches.
    pub hit_us: Spread,
    /// Microseconds per lookup of a tuple without an entry.
    pub miss_us: Spread,
}

/// The first source port of the flows (their ports follow it; the misses' ports are above).
const FIRST_PORT: u16 = 10_000;

/// Makes `entries` DNATed UDP flows, then times `rounds` batches of `lookups` hits (spread over
/// the flows) and of `lookups` misses.
pub fn measure(entries: usize, lookups: usize, rounds: usize) -> Result<Cost> {
    ensure!(
        entries >= 1 && entries + lookups <= usize::from(u16::MAX - FIRST_PORT),
        "entries + lookups must fit the ports above {FIRST_PORT}"
    );
    let svc = Service::new("flbct", 151);
    let pod = svc.pod_ip[0];
    let vip = svc.vip[0];
    // One datagram from each port, its reply awaited: the entry is then confirmed and DNATed.
    let flows: Vec<(SocketAddr, usize)> = in_netns(&svc.pod.name, move || {
        (0..entries)
            .map(|i| -> Result<(SocketAddr, usize)> {
                let local = SocketAddr::new(pod, FIRST_PORT + i as u16);
                let s = UdpSocket::bind(local).with_context(|| format!("bind {local}"))?;
                s.set_read_timeout(Some(Duration::from_secs(5)))?;
                s.connect(vip)?;
                s.send(b"?")?;
                let mut name = [0u8; 8];
                let n = s
                    .recv(&mut name)
                    .with_context(|| format!("{local}: no reply"))?;
                let backend = match &name[..n] {
                    b"a" => 0,
                    b"b" => 1,
                    other => anyhow::bail!("a server answered {other:?}"),
                };
                Ok((local, backend))
            })
            .collect::<Result<_>>()
    })?;
    let mut ct = in_netns(&svc.node.name, Conntrack::open).context("ctnetlink in the node")?;
    let truth: Vec<(SocketAddr, SocketAddr)> = flows
        .iter()
        .map(|&(local, backend)| (local, svc.backends[backend][0]))
        .collect();
    let (mut hits, mut misses) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let t = Instant::now();
        for i in 0..lookups {
            let (local, backend) = truth[i * 7919 % truth.len()];
            let got = ct.backend(Proto::Udp, local, vip)?;
            ensure!(got == Some(backend), "{local}: {got:?}, not {backend}");
        }
        hits.push(t.elapsed().as_secs_f64() * 1e6 / lookups as f64);
        let t = Instant::now();
        for i in 0..lookups {
            let local = SocketAddr::new(pod, FIRST_PORT + (entries + i) as u16);
            let got = ct.backend(Proto::Udp, local, vip)?;
            ensure!(got.is_none(), "{local}: {got:?} without a flow");
        }
        misses.push(t.elapsed().as_secs_f64() * 1e6 / lookups as f64);
    }
    let stats = ct.stats();
    ensure!(stats.errors == 0, "{stats:?}");
    Ok(Cost {
        entries,
        lookups,
        hit_us: Spread::of(&hits),
        miss_us: Spread::of(&misses),
    })
}

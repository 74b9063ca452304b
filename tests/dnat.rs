//! The backend behind a Service's virtual IP, read from conntrack: kube-proxy's shape in
//! network namespaces (tests/support/kube_proxy.rs: a node DNATs a virtual IP to two backends
//! with nftables) and `flowlens::conntrack::Conntrack` opened in the node's namespace, checked
//! against what each backend said when it answered.

use flowlens::conntrack::{Conntrack, ConntrackStats};
use flowlens_core::flows::Proto;
use flowlens_tests::kube_proxy::{self, Service};
use flowlens_tests::session::in_netns;
use std::net::SocketAddr;

/// `addr` as an IPv4-mapped IPv6 address, as a dual-stack socket reports an IPv4 peer.
fn mapped(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        std::net::IpAddr::V4(v4) => SocketAddr::new(v4.to_ipv6_mapped().into(), addr.port()),
        _ => addr,
    }
}

#[test]
fn conntrack_gives_the_backend_that_answered_each_connection_to_a_virtual_ip() {
    if !kube_proxy::available(
        "conntrack_gives_the_backend_that_answered_each_connection_to_a_virtual_ip",
    ) {
        return;
    }
    let svc = Service::new("fldn", 150);
    // Opened in the node's namespace, used from this thread: the socket stays the node's.
    let mut ct = in_netns(&svc.node.name, || {
        Conntrack::open().expect("ctnetlink in the node")
    });

    // 20 TCP connections over IPv4: 8 closed by the client before the lookups, 12 still open.
    let mut v4 = svc.connect_many(20, false);
    let closed: Vec<_> = v4
        .drain(..8)
        .map(|c| (c.local, c.remote, c.backend))
        .collect();
    let open: Vec<_> = v4.iter().map(|c| (c.local, c.remote, c.backend)).collect();
    // 6 over IPv6, and UDP: 4 exchanges over IPv4, 2 over IPv6.
    let v6 = svc.connect_many(6, true);
    let udp: Vec<_> = (0..6)
        .map(|i| svc.exchange(svc.vip[usize::from(i >= 4)]))
        .collect();

    let mut per_backend = [0usize; 2];
    let mut lookups = 0;
    let tcp = closed
        .iter()
        .chain(&open)
        .copied()
        .chain(v6.iter().map(|c| (c.local, c.remote, c.backend)))
        .map(|t| (Proto::Tcp, t));
    let datagrams = udp
        .iter()
        .map(|d| (Proto::Udp, (d.local, d.remote, d.backend)));
    for (proto, (local, remote, backend)) in tcp.chain(datagrams) {
        assert_eq!(local.ip(), svc.pod_ip[usize::from(local.is_ipv6())]);
        let got = ct.backend(proto, local, remote).unwrap();
        assert_eq!(got, Some(backend), "{proto:?} {local} -> {remote}");
        lookups += 1;
        let family = usize::from(remote.is_ipv6());
        per_backend[usize::from(backend == svc.backends[1][family])] += 1;
    }
    // `numgen inc` alternates, per rule (one per family): both backends answered.
    assert_eq!(
        per_backend,
        [16, 16],
        "the shape spreads connections over both backends"
    );
    let found = lookups;

    // The same IPv4 connections given as IPv4-mapped IPv6 addresses.
    for (local, remote, backend) in &open {
        assert_eq!(
            ct.backend(Proto::Tcp, mapped(*local), mapped(*remote))
                .unwrap(),
            Some(*backend)
        );
        lookups += 1;
    }
    let found = found + open.len();

    // Not NATed: straight to a backend's own address (an entry, not rewritten), both families.
    for family in [0, 1] {
        let direct = svc.connect(svc.backends[0][family]);
        assert_eq!(direct.backend, svc.backends[0][family]);
        assert_eq!(
            ct.backend(Proto::Tcp, direct.local, direct.remote).unwrap(),
            None
        );
        lookups += 1;
    }
    // No entry at all: a port nobody used; the wrong protocol; the reply direction.
    let (local, remote, _) = open[0];
    let unused = SocketAddr::new(local.ip(), 1);
    assert_eq!(ct.backend(Proto::Tcp, unused, remote).unwrap(), None);
    assert_eq!(ct.backend(Proto::Udp, local, remote).unwrap(), None);
    let (_, _, backend) = open[0];
    assert_eq!(ct.backend(Proto::Tcp, backend, local).unwrap(), None);
    lookups += 3;
    assert_eq!(
        ct.stats(),
        ConntrackStats {
            lookups: lookups as u64,
            found_dnat: found as u64,
            errors: 0
        }
    );

    // Conntrack is per namespace: the pod's own has no entry of the node's DNAT.
    let mut in_pod = in_netns(&svc.pod.name, || Conntrack::open().unwrap());
    assert_eq!(in_pod.backend(Proto::Tcp, local, remote).unwrap(), None);
    drop(v4);
}

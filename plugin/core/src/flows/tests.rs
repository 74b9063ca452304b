//! Unit tests of the flow table, with plain values.

use super::*;
use std::net::IpAddr;

pub(crate) fn sock(role: u8, proto: u8, local: &str, remote: &str) -> FlSock {
    let local: SocketAddr = local.parse().unwrap();
    let remote: SocketAddr = remote.parse().unwrap();
    let raw = |ip: IpAddr| match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    };
    FlSock {
        bytes_sent: 0,
        bytes_rcvd: 0,
        first_ns: 1,
        last_ns: 1,
        cgroup_id: 7,
        netns: NETNS,
        pid: 0,
        srtt_us: 0,
        rttvar_us: 0,
        retrans: 0,
        sport: local.port(),
        dport: remote.port(),
        saddr: raw(local.ip()),
        daddr: raw(remote.ip()),
        family: if local.is_ipv4() { 2 } else { 10 },
        protocol: proto,
        role,
        flags: 0,
        comm: [0; COMM_LEN],
        base_retrans: 0,
        sk: 0,
        base_acked: 0,
        base_rcvd: 0,
    }
}

fn limits() -> Limits {
    Limits {
        max_flows: 100,
        max_hosts: 10,
        series_ttl_ns: 300_000_000_000,
        udp_idle_timeout_ns: 60_000_000_000,
        hosts_by_netns: true,
        max_peers_per_container: 4,
    }
}

/// The network namespace of [`sock`]'s sockets.
pub(crate) const NETNS: u32 = 4026531840;

fn totals(t: &FlowTable, ip: &str) -> HostTotals {
    t.hosts()[&HostKey::addr(ip.parse().unwrap(), NETNS)].clone()
}

#[test]
fn open_refresh_close_keeps_counters_monotonic() {
    let mut t = FlowTable::new(limits());
    let mut s = sock(records::ROLE_CLIENT, 6, "10.0.0.1:40000", "10.0.0.2:80");
    t.apply(Update::Open, 1, &s);
    assert_eq!((t.len(), t.new_flows), (1, 1));
    s.bytes_sent = 100;
    s.bytes_rcvd = 50;
    s.last_ns = 5;
    t.refresh([(1, &s)], 10);
    assert_eq!(t.flows().next().unwrap().bytes_sent, 100);
    s.bytes_sent = 120;
    t.apply(Update::Close, 1, &s);
    assert!(t.is_empty());
    let h = totals(&t, "10.0.0.1");
    assert_eq!((h.bytes_sent, h.bytes_rcvd, h.total_client), (120, 50, 1));
    assert_eq!(h.ndpi["HTTP"], (120, 50));
    // A late duplicate close does not count twice... as a new flow it is refused by role.
    assert_eq!(t.new_flows, 1);
}

#[test]
fn a_flow_opened_and_closed_between_gathers_is_counted_once() {
    let mut t = FlowTable::new(limits());
    let s = sock(records::ROLE_SERVER, 6, "10.0.0.2:80", "10.0.0.1:40000");
    t.apply(Update::Close, 9, &s);
    assert_eq!((t.len(), t.new_flows), (0, 1));
    assert_eq!(totals(&t, "10.0.0.2").total_server, 1);
}

#[test]
fn a_key_reused_by_a_later_socket_names_a_new_flow() {
    // Before 5.12 a socket's key may be its address, which a later socket reuses: a client
    // closes, a server socket takes its address, and the map shows the server before the
    // client's close record is applied. Each keeps its own role and bytes.
    let mut t = FlowTable::new(limits());
    let mut client = sock(records::ROLE_CLIENT, 6, "10.0.0.1:40000", "10.0.0.2:80");
    client.first_ns = 100;
    t.refresh([(7, &client)], 150);
    let mut server = sock(records::ROLE_SERVER, 6, "10.0.0.2:80", "10.0.0.1:40001");
    server.first_ns = 200;
    server.bytes_rcvd = 10;
    t.refresh([(7, &server)], 250);
    client.bytes_sent = 5;
    t.apply(Update::Close, 7, &client);
    assert_eq!(t.len(), 1);
    assert_eq!(totals(&t, "10.0.0.1").total_client, 1);
    assert_eq!(totals(&t, "10.0.0.1").bytes_sent, 5);
    assert_eq!(totals(&t, "10.0.0.2").total_server, 1);
    let flow = t.flows().next().unwrap();
    assert_eq!(
        (flow.role, flow.bytes_rcvd, flow.cookie),
        (Role::Server, 10, 7)
    );
}

#[test]
fn a_snapshot_naming_a_socket_twice_makes_one_flow() {
    // A batch read of a changing map may return an entry twice, within one chunk of the
    // refresh or across two.
    let mut t = FlowTable::new(limits());
    let socks: Vec<(u64, FlSock)> = (0..40u16)
        .map(|i| {
            let local = format!("10.0.0.1:{}", 40000 + i);
            (
                u64::from(i) + 1,
                sock(records::ROLE_CLIENT, 6, &local, "10.0.0.2:80"),
            )
        })
        .collect();
    let twice = [0, 3, 3, 1, 30, 2, 0, 39, 30, 17];
    let snapshot = twice
        .into_iter()
        .chain(0..40)
        .map(|i| (socks[i].0, &socks[i].1));
    t.refresh(snapshot, 10);
    assert_eq!((t.len(), t.new_flows), (40, 40));
    assert_eq!(totals(&t, "10.0.0.1").total_client, 40);
    let again = twice.iter().map(|&i| (socks[i].0, &socks[i].1));
    t.refresh(again, 20);
    assert_eq!(
        (t.len(), t.new_flows),
        (40, 40),
        "the others missed one snapshot only"
    );
}

#[test]
fn flows_missing_from_two_snapshots_end() {
    let mut t = FlowTable::new(limits());
    let s = sock(records::ROLE_CLIENT, 6, "10.0.0.1:40000", "10.0.0.2:80");
    t.apply(Update::Open, 1, &s);
    t.refresh([], 10);
    assert_eq!(t.len(), 1, "one missing snapshot may be a race");
    t.refresh([], 20);
    assert_eq!(t.len(), 0);
}

#[test]
fn entries_without_a_role_take_it_from_their_local_port() {
    let mut t = FlowTable::new(limits());
    let mut server = sock(records::ROLE_UNKNOWN, 6, "10.0.0.2:8080", "10.0.0.1:40000");
    let client = sock(records::ROLE_UNKNOWN, 6, "10.0.0.1:40000", "10.0.0.2:8080");
    server.bytes_rcvd = 3;
    t.refresh([(1, &server), (2, &client)], 10);
    let role = |c| t.flows().find(|f| f.cookie == c).unwrap().role;
    assert_eq!((role(1), role(2)), (Role::Server, Role::Client));
    assert_eq!(t.new_flows, 0, "pre-existing flows are not new");
}

#[test]
fn udp_flows_expire_when_idle_and_are_deleted_from_the_kernel() {
    let mut t = FlowTable::new(limits());
    let mut s = sock(records::ROLE_CLIENT, 17, "10.0.0.1:5000", "10.0.0.2:53");
    s.bytes_sent = 40;
    t.apply(Update::Open, 3, &s);
    assert_eq!(t.refresh([(3, &s)], 1_000), Vec::<u64>::new());
    assert_eq!(t.len(), 1);
    assert_eq!(t.refresh([(3, &s)], 61_000_000_002), vec![3]);
    assert_eq!(t.len(), 0);
    assert_eq!(totals(&t, "10.0.0.1").ndpi["DNS"], (40, 0));
}

#[test]
fn hosts_beyond_the_limit_fold_into_other() {
    let mut t = FlowTable::new(Limits {
        max_hosts: 2,
        ..limits()
    });
    for i in 1..=4u64 {
        let s = sock(
            records::ROLE_CLIENT,
            6,
            &format!("10.0.0.{i}:40000"),
            "1.1.1.1:443",
        );
        t.apply(Update::Open, i, &s);
    }
    let named = t.hosts().keys().filter(|k| **k != HostKey::Other).count();
    assert_eq!(named, 2);
    assert_eq!(t.hosts()[&HostKey::Other].total_client, 2);
}

#[test]
fn an_address_in_two_network_namespaces_is_two_hosts_or_one_on_purpose() {
    // 127.0.0.1, a link-local address and 10.9.0.1 in two namespaces each.
    for by_netns in [true, false] {
        let mut t = FlowTable::new(Limits {
            hosts_by_netns: by_netns,
            ..limits()
        });
        let mut cookie = 0;
        let mut socks = Vec::new();
        for ip in ["127.0.0.1", "169.254.1.1", "10.9.0.1"] {
            for (netns, sent) in [(NETNS, 5), (NETNS + 1, 7)] {
                let local = format!("{ip}:40000");
                let mut s = sock(records::ROLE_CLIENT, 6, &local, "192.0.2.1:80");
                (s.netns, s.bytes_sent) = (netns, sent);
                cookie += 1;
                socks.push((cookie, s));
            }
        }
        t.refresh(socks.iter().map(|(c, s)| (*c, s)), 10);
        t.assert_hosts_consistent();
        for (c, s) in &socks {
            t.apply(Update::Close, *c, s);
        }
        let hosts = t.hosts();
        for ip in ["127.0.0.1", "169.254.1.1", "10.9.0.1"] {
            let ip: IpAddr = ip.parse().unwrap();
            if by_netns {
                for (netns, sent) in [(NETNS, 5), (NETNS + 1, 7)] {
                    let h = &hosts[&HostKey::addr(ip, netns)];
                    assert_eq!((h.total_client, h.bytes_sent), (1, sent), "{ip} {netns}");
                }
            } else {
                let h = &hosts[&HostKey::Addr { ip, netns: None }];
                assert_eq!((h.total_client, h.bytes_sent), (2, 12), "{ip}");
            }
        }
        assert_eq!(hosts.len(), if by_netns { 6 } else { 3 });
    }
}

#[test]
fn a_udp_socket_moves_to_its_address_in_its_own_namespace() {
    let mut t = FlowTable::new(limits());
    let mut s = sock(records::ROLE_CLIENT, 17, "0.0.0.0:5000", "0.0.0.0:0");
    s.netns = NETNS + 3;
    t.apply(Update::Open, 1, &s);
    let connected = sock(records::ROLE_CLIENT, 17, "127.0.0.1:5000", "127.0.0.1:53");
    s.saddr = connected.saddr;
    (s.dport, s.daddr) = (connected.dport, connected.daddr);
    t.refresh([(1, &s)], 10);
    t.assert_hosts_consistent();
    let loopback = HostKey::addr("127.0.0.1".parse().unwrap(), NETNS + 3);
    let flow = t.flows().next().unwrap();
    assert_eq!(t.host_entries()[flow.host_slot()].key, Some(loopback));
}

const SEC: u64 = 1_000_000_000;

/// A TCP client flow from `10.x.y.z:40000` for address number `n`.
fn client_of(n: u32) -> FlSock {
    let ip = std::net::Ipv4Addr::from(0x0a00_0000 | n);
    sock(
        records::ROLE_CLIENT,
        6,
        &format!("{ip}:40000"),
        "192.0.2.1:443",
    )
}

fn addr(n: u32) -> HostKey {
    HostKey::addr(IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 | n)), NETNS)
}

fn ttl_limits(max_hosts: usize, ttl_secs: u64) -> Limits {
    Limits {
        max_hosts,
        series_ttl_ns: ttl_secs * SEC,
        ..limits()
    }
}

#[test]
fn a_host_expires_after_the_ttl_after_its_last_flow_not_before() {
    let mut t = FlowTable::new(ttl_limits(10, 10));
    let mut s = client_of(1);
    t.refresh([(1, &s)], SEC);
    s.bytes_sent = 70;
    t.apply(Update::Close, 1, &s);
    // The gather that sees the close is the host's last active one.
    t.refresh([], 2 * SEC);
    for now in [3 * SEC, 12 * SEC] {
        t.refresh([], now);
        let h = &t.hosts()[&addr(1)];
        assert_eq!((h.bytes_sent, h.total_client), (70, 1), "kept at {now}");
    }
    t.refresh([], 12 * SEC + 1);
    assert!(t.hosts().is_empty(), "gone once the TTL has passed");
    // The address comes back: a new series, counting from zero.
    t.refresh([(2, &client_of(1))], 13 * SEC);
    assert_eq!(t.hosts()[&addr(1)].total_client, 1);
}

#[test]
fn a_host_with_an_active_flow_never_expires() {
    let mut t = FlowTable::new(ttl_limits(10, 1));
    let s = client_of(1);
    let other = client_of(2);
    t.refresh([(1, &s), (2, &other)], SEC);
    t.apply(Update::Close, 2, &other);
    for k in 2..100 {
        t.refresh([(1, &s)], k * 10 * SEC);
        assert!(t.hosts().contains_key(&addr(1)), "at {k}");
    }
    assert!(!t.hosts().contains_key(&addr(2)));
    // An idle UDP flow keeps its host until the flow itself expires.
    let mut t = FlowTable::new(ttl_limits(10, 1));
    let udp = sock(records::ROLE_CLIENT, 17, "10.0.0.9:5000", "10.0.0.2:53");
    t.apply(Update::Open, 3, &udp);
    t.refresh([(3, &udp)], 30 * SEC);
    assert_eq!(t.len(), 1);
    assert!(t
        .hosts()
        .contains_key(&HostKey::addr("10.0.0.9".parse().unwrap(), NETNS)));
    assert_eq!(t.refresh([(3, &udp)], 61 * SEC + 2), vec![3]);
    t.refresh([], 62 * SEC + 3);
    assert!(t.hosts().is_empty());
}

#[test]
fn freed_host_slots_are_reused_and_flows_keep_theirs() {
    let mut t = FlowTable::new(ttl_limits(3, 1));
    let (a, b, c) = (client_of(1), client_of(2), client_of(3));
    t.refresh([(1, &a), (2, &b), (3, &c)], SEC);
    t.apply(Update::Close, 2, &b);
    t.apply(Update::Close, 3, &c);
    t.refresh([(1, &a)], 2 * SEC);
    t.refresh([(1, &a)], 4 * SEC);
    assert_eq!(t.hosts().len(), 1);
    // Two new addresses take the two freed slots: no new slot.
    let (d, e) = (client_of(4), client_of(5));
    t.refresh([(1, &a), (4, &d), (5, &e)], 5 * SEC);
    assert_eq!((t.host_entries().len(), t.hosts().len()), (3, 3));
    t.assert_hosts_consistent();
    // Each ended flow folds into its own host.
    let mut a_end = a;
    a_end.bytes_sent = 11;
    let mut d_end = d;
    d_end.bytes_sent = 44;
    t.apply(Update::Close, 1, &a_end);
    t.apply(Update::Close, 4, &d_end);
    assert_eq!(t.hosts()[&addr(1)].bytes_sent, 11);
    assert_eq!(t.hosts()[&addr(4)].bytes_sent, 44);
    assert_eq!(t.hosts()[&addr(5)].bytes_sent, 0);
}

#[test]
fn max_hosts_bounds_the_hosts_alive_not_every_address_seen() {
    let mut t = FlowTable::new(ttl_limits(2, 5));
    let (a, b, c) = (client_of(1), client_of(2), client_of(3));
    t.refresh([(1, &a), (2, &b), (3, &c)], SEC);
    assert!(t.hosts().contains_key(&addr(1)) && t.hosts().contains_key(&addr(2)));
    assert_eq!(t.hosts()[&HostKey::Other].total_client, 1, "c folded");
    t.apply(Update::Close, 1, &a);
    // Within the TTL a's series lives on: d folds too.
    let d = client_of(4);
    t.refresh([(2, &b), (3, &c), (4, &d)], 2 * SEC);
    assert_eq!(t.hosts()[&HostKey::Other].total_client, 2);
    t.refresh([(2, &b), (3, &c), (4, &d)], 8 * SEC);
    assert!(!t.hosts().contains_key(&addr(1)));
    // a expired: the next new address has a series of its own.
    let e = client_of(5);
    t.refresh([(2, &b), (3, &c), (4, &d), (5, &e)], 9 * SEC);
    assert!(t.hosts().contains_key(&addr(5)));
    assert_eq!(t.hosts()[&HostKey::Other].total_client, 2);
    t.assert_hosts_consistent();
    // `other` expires like any host once nothing is folded into it.
    t.apply(Update::Close, 3, &c);
    t.apply(Update::Close, 4, &d);
    t.refresh([(2, &b), (5, &e)], 10 * SEC);
    assert!(t.hosts().contains_key(&HostKey::Other));
    t.refresh([(2, &b), (5, &e)], 16 * SEC);
    assert!(!t.hosts().contains_key(&HostKey::Other));
    assert_eq!(t.hosts().len(), 2);
}

#[test]
fn churning_addresses_get_series_again_once_the_old_ones_expire() {
    // Issue 11: pod addresses churn for weeks. 20,000 distinct local addresses, 1,000
    // series at most: a burst fills the table, then addresses keep arriving (20 per gather,
    // one 5-gather flow each). Once the burst's hosts expired, no live address folds.
    const MAX: usize = 1_000;
    const TTL: u64 = 30;
    const PER_GATHER: u32 = 20;
    const LIFETIME: u64 = 5;
    let mut t = FlowTable::new(Limits {
        max_flows: 4_096,
        ..ttl_limits(MAX, TTL)
    });
    let mut live: Vec<(u64, FlSock, u64)> = Vec::new(); // (cookie, sock, closes at gather)
    let mut next: u32 = 1;
    // Gather 0: the burst, MAX addresses, closed before gather 1.
    for _ in 0..MAX {
        live.push((u64::from(next), client_of(next), 0));
        next += 1;
    }
    let mut folded_at_open = 0u32;
    let mut gather = 0u64;
    while next <= 20_000 || !live.is_empty() {
        if gather > 0 && next <= 20_000 {
            for _ in 0..PER_GATHER {
                live.push((u64::from(next), client_of(next), gather + LIFETIME));
                next += 1;
            }
        }
        let snapshot: Vec<(u64, &FlSock)> = live.iter().map(|(c, s, _)| (*c, s)).collect();
        t.refresh(snapshot, gather * SEC);
        t.assert_hosts_consistent();
        // The flows new in this gather: folded only while the burst's hosts live.
        let new_ones = live.iter().filter(|(_, _, end)| *end == gather + LIFETIME);
        for (cookie, s, _) in new_ones.filter(|_| gather > 0) {
            let flow = t.flows().find(|f| f.cookie == *cookie).unwrap();
            let named = t.host_entries()[flow.host_slot()].key != Some(HostKey::Other);
            if !named {
                folded_at_open += 1;
                assert!(gather <= TTL + 1, "{} folded at gather {gather}", s.local());
            }
        }
        // The burst's hosts were last active at gather 1 (which saw their close) and are
        // gone at the start of gather TTL + 2; the last folded flows ended after gather
        // TTL + 1 + LIFETIME, and `other` itself expires TTL + 1 gathers after that.
        if gather > TTL + 1 + LIFETIME {
            assert!(t
                .flows()
                .all(|f| Some(f.host_slot()) != t.other_host_slot()));
        }
        if gather > 2 * (TTL + 1) + LIFETIME {
            assert!(!t.hosts().contains_key(&HostKey::Other), "at {gather}");
        }
        if gather % 10 == 5 {
            // What `series_dropped` counts: folds only, not expiries.
            let folded = crate::aggregate::FlowValues::from_table(&t).hosts_folded;
            let want = if gather <= TTL + 1 + LIFETIME {
                t.flows()
                    .filter(|f| Some(f.host_slot()) == t.other_host_slot())
                    .count()
            } else {
                0
            };
            assert_eq!(folded, want as u64, "at {gather}");
            assert!(want > 0 || gather > TTL, "at {gather}");
        }
        let named = t.hosts().keys().filter(|k| **k != HostKey::Other).count();
        assert!(named <= MAX && t.host_entries().len() <= MAX + 1, "{named}");
        live.retain(|(cookie, s, end)| {
            let ends = *end == gather;
            if ends {
                t.apply(Update::Close, *cookie, s);
            }
            !ends
        });
        gather += 1;
    }
    assert_eq!(
        folded_at_open,
        (TTL + 1) as u32 * PER_GATHER,
        "the arrivals while the burst's series lived folded, and only those"
    );
    assert_eq!(t.new_flows, 20_000);
    // Idle long enough, every series ends: the last closes make their hosts active at
    // the next refresh, and the TTL counts from there.
    t.refresh([], gather * SEC);
    t.refresh([], (gather + TTL) * SEC);
    assert!(!t.hosts().is_empty());
    t.refresh([], (gather + TTL) * SEC + 1);
    assert!(t.hosts().is_empty());
}

#[test]
fn the_table_is_bounded() {
    let mut t = FlowTable::new(Limits {
        max_flows: 2,
        ..limits()
    });
    for i in 1..=3u64 {
        let s = sock(
            records::ROLE_CLIENT,
            6,
            &format!("10.0.0.1:{}", 40000 + i),
            "1.1.1.1:443",
        );
        t.apply(Update::Open, i, &s);
    }
    assert_eq!((t.len(), t.flows_evicted), (2, 1));
}

fn event(kind: u32, err: u32, sock: FlSock) -> records::FlEvent {
    records::FlEvent {
        cookie: 9,
        ts_ns: 1,
        kind,
        err,
        sock,
    }
}

#[test]
fn a_pending_connect_is_no_flow_until_established_and_a_failed_one_never_is() {
    let mut t = FlowTable::new(limits());
    let mut s = sock(records::ROLE_CLIENT, 6, "10.0.0.1:40000", "10.0.0.2:80");
    s.flags = records::SOCK_PENDING;
    t.refresh([(9, &s)], 10);
    t.refresh([(9, &s)], 11);
    assert_eq!((t.len(), t.new_flows), (0, 0));
    // Established: a new flow from the next snapshot on.
    s.flags = 0;
    t.refresh([(9, &s)], 12);
    assert_eq!((t.len(), t.new_flows), (1, 1));

    // Another one fails while pending: a failed connect, never a flow.
    let mut t = FlowTable::new(limits());
    let mut s = sock(records::ROLE_CLIENT, 6, "10.0.0.1:40001", "10.0.0.2:80");
    s.flags = records::SOCK_PENDING;
    t.refresh([(9, &s)], 10);
    t.apply_event(&event(records::EV_CONNECT_FAILED, 110, s));
    t.refresh(std::iter::empty(), 11);
    assert_eq!((t.len(), t.new_flows, t.connect_failed), (0, 0, 1));
    assert_eq!(t.cgroup_totals(7).counters.failures.timed_out_as_client, 1);
    assert_eq!(t.cgroup_totals(7).counters.new_client, 0);
    // A pending connect caught at its destruction (its state change missed) is the same.
    t.apply_event(&event(records::EV_CLOSE, 0, s));
    assert_eq!((t.len(), t.new_flows, t.connect_failed), (0, 0, 2));
    assert_eq!(t.cgroup_totals(7).counters.failures.aborted_as_client, 1);
}

#[test]
fn tcp_ends_count_as_failures_by_their_error_and_role() {
    let mut t = FlowTable::new(limits());
    let client = sock(records::ROLE_CLIENT, 6, "10.0.0.1:40000", "10.0.0.2:80");
    let server = sock(records::ROLE_SERVER, 6, "10.0.0.2:80", "10.0.0.1:40000");
    let connect = |err| event(records::EV_CONNECT_FAILED, err, client);
    let close = |err, s| event(records::EV_CLOSE, err, s);
    for e in [
        connect(111),       // ECONNREFUSED
        connect(111),       // ECONNREFUSED
        connect(110),       // ETIMEDOUT
        connect(113),       // EHOSTUNREACH
        connect(0),         // closed by its process
        close(104, client), // ECONNRESET
        close(32, client),  // EPIPE: reset after the peer's FIN
        close(104, server), // ECONNRESET
        close(110, server), // ETIMEDOUT
        close(0, server),   // a plain close
        close(0, client),   // a plain close (ours, even with an RST sent)
        close(22, client),  // EINVAL: no failure of the connection
    ] {
        t.take_touched_cgroups();
        t.apply_event(&e);
        // Every failure makes its cgroup's series move, even without a flow.
        let moved = t.take_touched_cgroups().contains(&7);
        assert!(moved || e.kind == records::EV_CLOSE, "{e:?}");
    }
    assert_eq!(
        t.cgroup_totals(7).counters.failures,
        Failures {
            refused_as_client: 2,
            timed_out_as_client: 1,
            timed_out_as_server: 1,
            unreachable_as_client: 1,
            aborted_as_client: 1,
            reset_as_client: 2,
            reset_as_server: 1,
            dropped_as_server: 0,
        }
    );
    assert_eq!(t.connect_failed, 5);
    // The established ones were flows (new, then ended); the failed connects were not.
    assert_eq!(t.cgroup_totals(7).counters.new_client, 4);
    assert_eq!(t.cgroup_totals(7).counters.new_server, 3);
}

#[test]
fn an_adopted_sockets_close_counts_only_when_the_table_seeded_it() {
    let mut t = FlowTable::new(limits());
    let mut s = sock(records::ROLE_SERVER, 6, "10.0.0.2:80", "10.0.0.1:40000");
    s.flags = records::SOCK_ADOPTED;
    // Seeded at start-up: its close ends it, once.
    t.seed(9, &s, Role::Server);
    assert_eq!((t.len(), t.new_flows), (1, 0));
    t.apply_event(&event(records::EV_CLOSE, 104, s));
    assert_eq!(t.len(), 0);
    assert_eq!(t.cgroup_totals(7).counters.failures.reset_as_server, 1);
    let before = t.cgroup_totals(7);
    // Taken for closed and removed at start-up while its close was in flight: nothing counts.
    t.apply_event(&event(records::EV_CLOSE, 104, s));
    assert_eq!((t.len(), t.new_flows), (0, 0));
    assert_eq!(
        t.cgroup_totals(7).counters.failures,
        before.counters.failures
    );
    // Any other close the table does not know counts as a flow that opened and closed.
    s.flags = 0;
    t.apply_event(&event(records::EV_CLOSE, 0, s));
    assert_eq!(t.new_flows, 1);
}

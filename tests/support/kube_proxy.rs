//! kube-proxy's shape in network namespaces: a Service's virtual IP DNATed by the node to two
//! backends, so that a client's socket keeps the virtual IP as its peer while conntrack (in the
//! node's namespace) knows the backend that answered.
//!
//! ```text
//! pod (client) ---- node (router: forwarding, nftables `nat`) ---- backend a
//!                                                             \--- backend b
//! ```
//!
//! The node's `prerouting` chain (nftables, as kube-proxy's nftables mode builds it: `numgen`
//! over a verdict map that jumps to one chain per endpoint) DNATs TCP and UDP to the virtual
//! IP's port 80, IPv4 and IPv6, to port 8080 of backend a or b in turn. Each backend serves TCP
//! and UDP on 8080 (both families) and tells every client which backend it is, so that a test
//! knows the truth for each connection. Everything lives in the four namespaces (the ruleset
//! and forwarding switches too): the host's own namespace and tables are not touched, and
//! dropping the [`Service`] removes it all.

use crate::{session::in_netns, sh, veth, Netns};
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// The port the virtual IP serves.
pub const SERVICE_PORT: u16 = 80;
/// The port the backends listen on.
pub const BACKEND_PORT: u16 = 8080;
const TIMEOUT: Duration = Duration::from_secs(10);

/// A Service: a virtual IP (both families) and two backends behind it, in namespaces of their
/// own. Needs root, iproute2 and `nft` (Debian's `nftables`).
pub struct Service {
    /// The node: the router and its nftables DNAT; where conntrack knows the backends.
    pub node: Netns,
    /// The client's namespace.
    pub pod: Netns,
    /// The backends' namespaces, a then b.
    pub backend_ns: [Netns; 2],
    /// The virtual IP and port, IPv4 then IPv6 (in no namespace: only the node's rules know it).
    pub vip: [SocketAddr; 2],
    /// The backends' addresses and port, `[backend][family]` (family 0: IPv4, 1: IPv6).
    pub backends: [[SocketAddr; 2]; 2],
    /// The pod's addresses, IPv4 then IPv6.
    pub pod_ip: [IpAddr; 2],
    servers: Vec<Server>,
}

/// A backend's server: a TCP listener and a UDP socket, and the threads that serve them.
struct Server {
    tcp: TcpListener,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

/// One TCP connection from the pod to an address, and the backend that answered it.
pub struct Connection {
    /// The client's socket (in the pod's namespace); the server closes its side when this one
    /// closes.
    pub stream: TcpStream,
    /// The socket's own address.
    pub local: SocketAddr,
    /// The address it connected to.
    pub remote: SocketAddr,
    /// The backend that answered: its address and port, in the family of `remote`.
    pub backend: SocketAddr,
}

/// One UDP exchange from the pod (its socket connected to `remote`).
pub struct Datagrams {
    /// The client's socket (in the pod's namespace).
    pub socket: UdpSocket,
    /// The socket's own address.
    pub local: SocketAddr,
    /// The address it is connected to.
    pub remote: SocketAddr,
    /// The backend that answered.
    pub backend: SocketAddr,
}

/// For the tests that build a [`Service`]: true when they can run (root, and `nft` on PATH);
/// otherwise skipped with the reason printed, and a failure under `CI=true`.
pub fn available(test: &str) -> bool {
    if !crate::require_root(test) {
        return false;
    }
    let why = match Command::new("nft").arg("--version").output() {
        Ok(o) if o.status.success() => return true,
        Ok(o) => format!("{}: {}", o.status, String::from_utf8_lossy(&o.stderr)),
        Err(e) => e.to_string(),
    };
    assert!(
        !crate::in_ci(),
        "{test} needs nft (Debian's nftables, in tests/packages.sh), and CI must run it: {why}"
    );
    eprintln!("SKIP {test}: needs nft (apt-get install nftables)");
    false
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

impl Service {
    /// Builds it: namespaces `<name>-node`, `<name>-pod`, `<name>-a`, `<name>-b` (`name` at most
    /// 8 characters: interface names derive from it), links 10.`n`.{1,2,3}.0/24 and
    /// fd00:`n`:{1,2,3}::/64 (pod, backend a, backend b; the node is .1 / ::1 on each), the
    /// virtual IP 10.96.`n`.10 and fd00:96:`n`::10 port 80, backends .2 / ::2 port 8080.
    pub fn new(name: &str, n: u8) -> Service {
        assert!(name.len() <= 8, "{name}: at most 8 characters");
        let node = Netns::new(&format!("{name}-node"));
        let pod = Netns::new(&format!("{name}-pod"));
        let backend_ns = [
            Netns::new(&format!("{name}-a")),
            Netns::new(&format!("{name}-b")),
        ];
        // Links: 1 to the pod, 2 and 3 to the backends.
        let ends = [
            (&pod, "p", 1u8),
            (&backend_ns[0], "a", 2),
            (&backend_ns[1], "b", 3),
        ];
        for (ns, tag, link) in ends {
            veth(
                &node,
                &format!("{name}n{tag}"),
                &format!("10.{n}.{link}.1/24"),
                ns,
                &format!("{name}{tag}"),
                &format!("10.{n}.{link}.2/24"),
            );
            for (netns, ifname, host) in [
                (&node, format!("{name}n{tag}"), 1),
                (ns, format!("{name}{tag}"), 2),
            ] {
                let cidr = format!("fd00:{n}:{link}::{host}/64");
                sh(
                    "ip",
                    &[
                        "-n",
                        &netns.name,
                        "addr",
                        "add",
                        &cidr,
                        "dev",
                        &ifname,
                        "nodad",
                    ],
                );
            }
            sh(
                "ip",
                &[
                    "-n",
                    &ns.name,
                    "route",
                    "add",
                    "default",
                    "via",
                    &format!("10.{n}.{link}.1"),
                ],
            );
            sh(
                "ip",
                &[
                    "-n",
                    &ns.name,
                    "-6",
                    "route",
                    "add",
                    "default",
                    "via",
                    &format!("fd00:{n}:{link}::1"),
                ],
            );
        }
        // The node routes (its namespace only), and DNATs the virtual IP.
        sh(
            "ip",
            &[
                "netns",
                "exec",
                &node.name,
                "sh",
                "-c",
                "echo 1 > /proc/sys/net/ipv4/ip_forward && \
                 echo 1 > /proc/sys/net/ipv6/conf/all/forwarding",
            ],
        );
        let vip = [
            addr(&format!("10.96.{n}.10:80")),
            addr(&format!("[fd00:96:{n}::10]:80")),
        ];
        let backends = [
            [
                addr(&format!("10.{n}.2.2:8080")),
                addr(&format!("[fd00:{n}:2::2]:8080")),
            ],
            [
                addr(&format!("10.{n}.3.2:8080")),
                addr(&format!("[fd00:{n}:3::2]:8080")),
            ],
        ];
        let ruleset = format!(
            "table inet flowlens_svc {{
                chain ep_a4 {{ meta l4proto tcp dnat ip to {a4}; meta l4proto udp dnat ip to {a4}; }}
                chain ep_b4 {{ meta l4proto tcp dnat ip to {b4}; meta l4proto udp dnat ip to {b4}; }}
                chain ep_a6 {{ meta l4proto tcp dnat ip6 to {a6}; meta l4proto udp dnat ip6 to {a6}; }}
                chain ep_b6 {{ meta l4proto tcp dnat ip6 to {b6}; meta l4proto udp dnat ip6 to {b6}; }}
                chain prerouting {{
                    type nat hook prerouting priority dstnat; policy accept;
                    ip daddr {v4} meta l4proto {{ tcp, udp }} th dport {SERVICE_PORT} \
                        numgen inc mod 2 vmap {{ 0 : goto ep_a4, 1 : goto ep_b4 }}
                    ip6 daddr {v6} meta l4proto {{ tcp, udp }} th dport {SERVICE_PORT} \
                        numgen inc mod 2 vmap {{ 0 : goto ep_a6, 1 : goto ep_b6 }}
                }}
            }}\n",
            a4 = backends[0][0],
            b4 = backends[1][0],
            a6 = backends[0][1],
            b6 = backends[1][1],
            v4 = vip[0].ip(),
            v6 = vip[1].ip(),
        );
        let mut nft = Command::new("ip")
            .args(["netns", "exec", &node.name, "nft", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("ip netns exec nft");
        nft.stdin
            .take()
            .unwrap()
            .write_all(ruleset.as_bytes())
            .unwrap();
        let out = nft.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "nft -f failed: {}\n{ruleset}",
            String::from_utf8_lossy(&out.stderr)
        );
        let servers = backend_ns
            .iter()
            .enumerate()
            .map(|(i, ns)| Server::start(ns, [b'a', b'b'][i]))
            .collect();
        Service {
            node,
            pod,
            backend_ns,
            vip,
            backends,
            pod_ip: [
                format!("10.{n}.1.2").parse().unwrap(),
                format!("fd00:{n}:1::2").parse().unwrap(),
            ],
            servers,
        }
    }

    /// A command that runs `program` in the node's network namespace (nothing else changes:
    /// the mounts, /sys and cgroups are the caller's, unlike `ip netns exec`).
    pub fn node_command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let ns = std::fs::File::open(self.node.path()).expect("open the node's namespace");
        let mut cmd = Command::new(program);
        use std::os::unix::process::CommandExt;
        // SAFETY: setns is a plain syscall, async-signal-safe; the closure owns the file, so the
        // fd is open in the child until exec (where O_CLOEXEC closes it).
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd
    }

    /// Which backend answered ("a" or "b"), as its address in `family` of `to`.
    fn backend_named(&self, name: &str, to: SocketAddr) -> SocketAddr {
        let family = usize::from(to.is_ipv6());
        match name {
            "a" => self.backends[0][family],
            "b" => self.backends[1][family],
            other => panic!("a server answered {other:?}"),
        }
    }

    /// A TCP connection from the pod to `to` (the virtual IP, a backend or anything routed),
    /// after the backend said who it is.
    pub fn connect(&self, to: SocketAddr) -> Connection {
        let stream = in_netns(&self.pod.name, move || {
            TcpStream::connect_timeout(&to, TIMEOUT).unwrap_or_else(|e| panic!("{to}: {e}"))
        });
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut name = String::new();
        BufReader::new(&stream)
            .read_line(&mut name)
            .unwrap_or_else(|e| panic!("{to}: {e}"));
        Connection {
            local: stream.local_addr().unwrap(),
            remote: to,
            backend: self.backend_named(name.trim(), to),
            stream,
        }
    }

    /// `n` connections from the pod to the virtual IP (`v6`: its IPv6 one).
    pub fn connect_many(&self, n: usize, v6: bool) -> Vec<Connection> {
        let vip = self.vip[usize::from(v6)];
        (0..n).map(|_| self.connect(vip)).collect()
    }

    /// A UDP socket of the pod connected to `to`, one datagram each way.
    pub fn exchange(&self, to: SocketAddr) -> Datagrams {
        let socket = in_netns(&self.pod.name, move || {
            let any: SocketAddr = if to.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" }
                .parse()
                .unwrap();
            let s = UdpSocket::bind(any).unwrap();
            s.connect(to).unwrap();
            s
        });
        socket.set_read_timeout(Some(TIMEOUT)).unwrap();
        socket.send(b"?").unwrap();
        let mut buf = [0u8; 16];
        let n = socket
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("{to}: {e}"));
        let name = String::from_utf8_lossy(&buf[..n]).into_owned();
        Datagrams {
            local: socket.local_addr().unwrap(),
            remote: to,
            backend: self.backend_named(&name, to),
            socket,
        }
    }
}

impl Server {
    /// Listens on port 8080 (TCP and UDP, both families) in `ns`; answers every client with
    /// `name`, then (TCP) waits for the client to close.
    fn start(ns: &Netns, name: u8) -> Server {
        let (tcp, udp) = in_netns(&ns.name, || {
            let any = SocketAddr::from(([0u16; 8], BACKEND_PORT));
            (
                TcpListener::bind(any).unwrap(),
                UdpSocket::bind(any).unwrap(),
            )
        });
        let listener = tcp.try_clone().unwrap();
        let accept = std::thread::spawn(move || {
            // Ends when `Drop` shuts the listener down.
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                std::thread::spawn(move || {
                    let _ = conn.write_all(&[name, b'\n']);
                    let _ = std::io::copy(&mut conn, &mut std::io::sink());
                });
            }
        });
        let socket = udp.try_clone().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        // Ends when `Drop` sets `stop` (a shut down UDP socket's receive gives no address).
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let datagrams = std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            while !stopped.load(Ordering::Relaxed) {
                if let Ok((_, from)) = socket.recv_from(&mut buf) {
                    let _ = socket.send_to(&[name], from);
                }
            }
        });
        Server {
            tcp,
            stop,
            threads: vec![accept, datagrams],
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // shutdown() wakes a blocked accept() (EINVAL); the UDP thread sees `stop`.
        // SAFETY: a valid socket fd owned by this struct.
        unsafe { libc::shutdown(self.tcp.as_raw_fd(), libc::SHUT_RDWR) };
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        // The servers first: their sockets hold the backends' namespaces.
        self.servers.clear();
    }
}

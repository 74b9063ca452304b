//! Client or server: a socket whose local port is a listening port of its namespace was
//! accepted

use super::*;

// ---------------------------------------------------------------------------------------------
// Role inference.

/// One listening socket: address (unmapped) and whether it is IPv6-only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Listener {
    pub(super) addr: IpAddr,
    pub(super) v6only: bool,
}

impl Listener {
    /// Whether a connection to local address `ip` (unmapped) can have come from this listener.
    pub(super) fn accepts(&self, ip: IpAddr) -> bool {
        if self.addr == ip {
            return true;
        }
        match self.addr {
            IpAddr::V4(a) => a.is_unspecified() && ip.is_ipv4(),
            IpAddr::V6(a) => a.is_unspecified() && (ip.is_ipv6() || !self.v6only),
        }
    }
}

/// Listening sockets of one namespace, by port.
pub(super) type Listeners = HashMap<u16, Vec<Listener>>;

pub(super) fn role_of(local: SocketAddr, listeners: &Listeners) -> SeedRole {
    let ip = unmap(local.ip());
    let server = listeners
        .get(&local.port())
        .is_some_and(|ls| ls.iter().any(|l| l.accepts(ip)));
    if server {
        SeedRole::Server
    } else {
        SeedRole::Client
    }
}

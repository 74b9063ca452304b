//! The application protocol of a flow, inferred without packets from the server port and the
//! process name, named as nDPI names its protocols (the `protocol` tag of `host:ndpi`).
#![forbid(unsafe_code)]

use crate::records::{Proto, COMM_LEN};

/// An application protocol, by its nDPI name. The table stores one per flow (a byte), so
/// aggregation indexes arrays instead of hashing names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[repr(u8)]
pub enum Protocol {
    /// Not recognised.
    #[default]
    Unknown,
    /// SSH.
    Ssh,
    /// SMTP.
    Smtp,
    /// DNS.
    Dns,
    /// HTTP.
    Http,
    /// NTP.
    Ntp,
    /// TLS.
    Tls,
    /// QUIC.
    Quic,
    /// MDNS.
    Mdns,
    /// MQTT.
    Mqtt,
    /// Etcd.
    Etcd,
    /// MySQL.
    MySql,
    /// PostgreSQL.
    PostgreSql,
    /// AMQP.
    Amqp,
    /// Redis.
    Redis,
    /// Kafka.
    Kafka,
    /// Elasticsearch.
    Elasticsearch,
    /// Memcached.
    Memcached,
    /// MongoDB.
    MongoDb,
}

impl Protocol {
    /// Every protocol, in `index` order.
    pub const ALL: [Protocol; 19] = [
        Protocol::Unknown,
        Protocol::Ssh,
        Protocol::Smtp,
        Protocol::Dns,
        Protocol::Http,
        Protocol::Ntp,
        Protocol::Tls,
        Protocol::Quic,
        Protocol::Mdns,
        Protocol::Mqtt,
        Protocol::Etcd,
        Protocol::MySql,
        Protocol::PostgreSql,
        Protocol::Amqp,
        Protocol::Redis,
        Protocol::Kafka,
        Protocol::Elasticsearch,
        Protocol::Memcached,
        Protocol::MongoDb,
    ];

    /// Number of protocols.
    pub(crate) const COUNT: usize = Protocol::ALL.len();

    /// A dense index, `0..COUNT`.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The nDPI name.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Unknown => "Unknown",
            Protocol::Ssh => "SSH",
            Protocol::Smtp => "SMTP",
            Protocol::Dns => "DNS",
            Protocol::Http => "HTTP",
            Protocol::Ntp => "NTP",
            Protocol::Tls => "TLS",
            Protocol::Quic => "QUIC",
            Protocol::Mdns => "MDNS",
            Protocol::Mqtt => "MQTT",
            Protocol::Etcd => "Etcd",
            Protocol::MySql => "MySQL",
            Protocol::PostgreSql => "PostgreSQL",
            Protocol::Amqp => "AMQP",
            Protocol::Redis => "Redis",
            Protocol::Kafka => "Kafka",
            Protocol::Elasticsearch => "Elasticsearch",
            Protocol::Memcached => "Memcached",
            Protocol::MongoDb => "MongoDB",
        }
    }
}

/// The protocol of a well-known server port.
fn by_port(proto: Proto, port: u16) -> Option<Protocol> {
    use Proto::{Tcp, Udp};
    Some(match (proto, port) {
        (Tcp, 22) => Protocol::Ssh,
        (Tcp, 25) => Protocol::Smtp,
        (Tcp | Udp, 53) => Protocol::Dns,
        (Tcp, 80 | 8080) => Protocol::Http,
        (Udp, 123) => Protocol::Ntp,
        (Tcp, 443 | 6443 | 8443) => Protocol::Tls,
        (Udp, 443) => Protocol::Quic,
        (Udp, 5353) => Protocol::Mdns,
        (Tcp, 1883) => Protocol::Mqtt,
        (Tcp, 2379) => Protocol::Etcd,
        (Tcp, 3306) => Protocol::MySql,
        (Tcp, 5432) => Protocol::PostgreSql,
        (Tcp, 5672) => Protocol::Amqp,
        (Tcp, 6379) => Protocol::Redis,
        (Tcp, 9092) => Protocol::Kafka,
        (Tcp, 9200) => Protocol::Elasticsearch,
        (Tcp, 11211) => Protocol::Memcached,
        (Tcp, 27017) => Protocol::MongoDb,
        _ => return None,
    })
}

/// Process names that identify their protocol whatever the port.
const BY_COMM: &[(&[u8], Protocol)] = &[
    (b"sshd", Protocol::Ssh),
    (b"ssh", Protocol::Ssh),
    (b"postgres", Protocol::PostgreSql),
    (b"redis-server", Protocol::Redis),
    (b"mysqld", Protocol::MySql),
    (b"mongod", Protocol::MongoDb),
    (b"memcached", Protocol::Memcached),
    (b"etcd", Protocol::Etcd),
];

/// The protocol of a flow from its transport, server port and NUL-padded command name: the port
/// first, then the process name (compared as bytes up to the first NUL: no allocation).
pub fn classify(proto: Proto, server_port: u16, comm: &[u8; COMM_LEN]) -> Protocol {
    if let Some(p) = by_port(proto, server_port) {
        return p;
    }
    let end = comm.iter().position(|&b| b == 0).unwrap_or(COMM_LEN);
    let comm = &comm[..end];
    BY_COMM
        .iter()
        .find(|(c, _)| *c == comm)
        .map(|(_, p)| *p)
        .unwrap_or(Protocol::Unknown)
}

/// Bytes (sent, received) per protocol: a fixed array, indexed by `Protocol`. A protocol is
/// present once something was added for it (even zero bytes), as an entry of a map would be.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProtocolTotals {
    bytes: [(u64, u64); Protocol::COUNT],
    present: u32,
}

impl ProtocolTotals {
    /// Adds bytes to a protocol (and makes it present).
    #[inline]
    pub fn add(&mut self, protocol: Protocol, sent: u64, rcvd: u64) {
        let e = &mut self.bytes[protocol.index()];
        e.0 += sent;
        e.1 += rcvd;
        self.present |= 1 << protocol.index();
    }

    /// The bytes of a protocol by name, when present.
    pub fn get(&self, name: &str) -> Option<&(u64, u64)> {
        self.iter_ref().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// Number of protocols present.
    pub fn len(&self) -> usize {
        self.present.count_ones() as usize
    }

    /// Whether no protocol is present.
    pub fn is_empty(&self) -> bool {
        self.present == 0
    }

    /// The present protocols with their bytes, in `Protocol` order.
    pub fn iter(&self) -> impl Iterator<Item = (Protocol, (u64, u64))> + '_ {
        Protocol::ALL
            .iter()
            .filter(|p| self.present & (1 << p.index()) != 0)
            .map(|p| (*p, self.bytes[p.index()]))
    }

    fn iter_ref(&self) -> impl Iterator<Item = (&'static str, &(u64, u64))> + '_ {
        Protocol::ALL
            .iter()
            .filter(|p| self.present & (1 << p.index()) != 0)
            .map(|p| (p.name(), &self.bytes[p.index()]))
    }
}

impl std::ops::Index<&str> for ProtocolTotals {
    type Output = (u64, u64);

    /// The bytes of a present protocol; panics when it is absent, like a map's index.
    fn index(&self, name: &str) -> &(u64, u64) {
        self.get(name)
            .unwrap_or_else(|| panic!("no bytes for protocol {name}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_index_and_lookup_agree() {
        for (i, p) in Protocol::ALL.iter().enumerate() {
            assert_eq!(p.index(), i);
        }
        let mut comm = [0u8; COMM_LEN];
        comm[..8].copy_from_slice(b"postgres");
        assert_eq!(classify(Proto::Tcp, 40000, &comm), Protocol::PostgreSql);
        assert_eq!(classify(Proto::Udp, 443, &comm), Protocol::Quic);
        comm[8] = b'x';
        assert_eq!(classify(Proto::Tcp, 40000, &comm), Protocol::Unknown);
        assert_eq!(
            classify(Proto::Tcp, 40000, &[b'a'; COMM_LEN]),
            Protocol::Unknown
        );
        let mut t = ProtocolTotals::default();
        t.add(Protocol::Dns, 0, 0);
        t.add(Protocol::Http, 3, 4);
        assert_eq!((t.len(), t["HTTP"], t["DNS"]), (2, (3, 4), (0, 0)));
        assert_eq!(t.get("TLS"), None);
    }
}

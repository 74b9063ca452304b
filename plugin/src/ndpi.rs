//! The application protocol of a flow, inferred without packets from the server port and the
//! process name, named as nDPI names its protocols (the `protocol` tag of `host:ndpi`).

use crate::flows::{Flow, Proto};

/// Well-known server ports and their nDPI protocol names.
const BY_PORT: &[(Proto, u16, &str)] = &[
    (Proto::Tcp, 22, "SSH"),
    (Proto::Tcp, 25, "SMTP"),
    (Proto::Tcp, 53, "DNS"),
    (Proto::Udp, 53, "DNS"),
    (Proto::Tcp, 80, "HTTP"),
    (Proto::Udp, 123, "NTP"),
    (Proto::Tcp, 443, "TLS"),
    (Proto::Udp, 443, "QUIC"),
    (Proto::Udp, 5353, "MDNS"),
    (Proto::Tcp, 1883, "MQTT"),
    (Proto::Tcp, 2379, "Etcd"),
    (Proto::Tcp, 3306, "MySQL"),
    (Proto::Tcp, 5432, "PostgreSQL"),
    (Proto::Tcp, 5672, "AMQP"),
    (Proto::Tcp, 6379, "Redis"),
    (Proto::Tcp, 6443, "TLS"),
    (Proto::Tcp, 8080, "HTTP"),
    (Proto::Tcp, 8443, "TLS"),
    (Proto::Tcp, 9092, "Kafka"),
    (Proto::Tcp, 9200, "Elasticsearch"),
    (Proto::Tcp, 11211, "Memcached"),
    (Proto::Tcp, 27017, "MongoDB"),
];

/// Process names that identify their protocol whatever the port.
const BY_COMM: &[(&str, &str)] = &[
    ("sshd", "SSH"),
    ("ssh", "SSH"),
    ("postgres", "PostgreSQL"),
    ("redis-server", "Redis"),
    ("mysqld", "MySQL"),
    ("mongod", "MongoDB"),
    ("memcached", "Memcached"),
    ("etcd", "Etcd"),
];

/// The nDPI protocol name of a flow, or `Unknown`.
pub fn infer(flow: &Flow) -> &'static str {
    let port = flow.server_port();
    if let Some((_, _, name)) = BY_PORT
        .iter()
        .find(|(proto, p, _)| *proto == flow.proto && *p == port)
    {
        return name;
    }
    let comm = flow.comm_str();
    BY_COMM
        .iter()
        .find(|(c, _)| *c == comm)
        .map(|(_, name)| *name)
        .unwrap_or("Unknown")
}

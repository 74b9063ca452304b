//! The counters of one network interface, as the plugin reads them from sysfs.
#![forbid(unsafe_code)]

/// Kernel counters of one interface at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfaceCounters {
    /// Kernel interface name (at most 15 bytes).
    pub name: String,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Bytes transmitted.
    pub tx_bytes: u64,
    /// Packets received.
    pub rx_packets: u64,
    /// Packets transmitted.
    pub tx_packets: u64,
}

//! Host series: one per local address in its network namespace (or per address, in
//! `ntopng_compat`), in counted slots that flows carry, expiring `series_ttl_secs` after their
//! last flow, at most `max_hosts` of them alive (then `other`).
#![forbid(unsafe_code)]

use crate::hash::FastMap;
use crate::ndpi::ProtocolTotals;
use std::net::IpAddr;

/// The series key of a local host: its address in its network namespace, or the `other` fold
/// beyond `max_hosts`.
///
/// An address is not unique on a host: every network namespace has its own 127.0.0.1 and ::1,
/// link-local addresses repeat from namespace to namespace, and two namespaces may hold the
/// same address (pods on separate bridges). So a host is an address *and* the inode of the
/// namespace its sockets live in ([`Limits::hosts_by_netns`]); a table that keeps ntopng's
/// exact tags (`ntopng_compat`, no tag for the namespace) keys by address alone, and counts an
/// address's flows of every namespace in one series, on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HostKey {
    /// A local address.
    Addr {
        /// The address.
        ip: IpAddr,
        /// The network namespace's inode; `None` when the table counts every namespace's
        /// flows of the address in one series.
        netns: Option<u32>,
    },
    /// Every host beyond `max_hosts`.
    Other,
}

impl HostKey {
    /// The key of `ip` in network namespace `netns` (the inode).
    pub fn addr(ip: IpAddr, netns: u32) -> HostKey {
        HostKey::Addr {
            ip,
            netns: Some(netns),
        }
    }

    /// The network namespace of a key, when it has one (the `netns` tag).
    pub fn netns(&self) -> Option<u32> {
        match self {
            HostKey::Addr { netns, .. } => *netns,
            HostKey::Other => None,
        }
    }
}

/// The address, or `other` (the `host` tag).
impl std::fmt::Display for HostKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostKey::Addr { ip, .. } => write!(f, "{ip}"),
            HostKey::Other => f.write_str("other"),
        }
    }
}

/// Cumulative counters of one host, from flows that have ended.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostTotals {
    /// Bytes sent by ended flows.
    pub bytes_sent: u64,
    /// Bytes received by ended flows.
    pub bytes_rcvd: u64,
    /// Flows ever seen as client (active and ended).
    pub total_client: u64,
    /// Flows ever seen as server.
    pub(crate) total_server: u64,
    /// Bytes (sent, received) of ended flows per application protocol.
    pub ndpi: ProtocolTotals,
}

/// One host series: its key, its cumulative totals and what keeps it alive.
#[derive(Debug, Clone, Default)]
pub(crate) struct HostEntry {
    /// The host (meaningless while the slot is free).
    pub(crate) key: Option<HostKey>,
    /// Cumulative counters of its ended flows.
    pub(crate) totals: HostTotals,
    /// Active flows that carry this slot: a slot is freed only when none does.
    pub(crate) flows: u32,
    /// A flow of it ended (or moved away), or the series was made, since the last refresh.
    pub(crate) touched: bool,
    /// The last refresh at which it had active flows or was touched.
    pub(crate) last_active_ns: u64,
}

/// The hosts with series: slots that flows carry, an index by key, and a free list. A host
/// without active flows for `series_ttl_ns` (at refreshes) is removed, its counters dropped, and its
/// slot reused by the next new host: `max_hosts` bounds the named hosts alive at once.
#[derive(Debug)]
pub(super) struct HostTable {
    pub(super) max_hosts: usize,
    pub(super) series_ttl_ns: u64,
    /// Keys carry the flows' network namespace ([`Limits::hosts_by_netns`]).
    pub(super) by_netns: bool,
    pub(super) index: FastMap<HostKey, u32>,
    pub(super) entries: Vec<HostEntry>,
    /// Free slots of `entries` (`key: None`), reused last freed first.
    pub(super) free: Vec<u32>,
    /// Live named hosts (`other` excluded).
    pub(super) named: usize,
    /// The slot of `HostKey::Other`, while it exists.
    pub(super) other: Option<u32>,
}

impl HostTable {
    pub(super) fn new(max_hosts: usize, series_ttl_ns: u64, by_netns: bool) -> HostTable {
        HostTable {
            max_hosts,
            series_ttl_ns,
            by_netns,
            index: FastMap::default(),
            entries: Vec::new(),
            free: Vec::new(),
            named: 0,
            other: None,
        }
    }

    /// Whether `max_hosts` named hosts are alive (until some expire).
    pub(super) fn full(&self) -> bool {
        self.named >= self.max_hosts
    }

    /// The key of a local address's series.
    #[inline]
    pub(super) fn key(&self, ip: IpAddr, netns: u32) -> HostKey {
        HostKey::Addr {
            ip,
            netns: self.by_netns.then_some(netns),
        }
    }

    /// A new series in a free slot (or a new one).
    pub(super) fn push(&mut self, key: HostKey) -> u32 {
        let entry = HostEntry {
            key: Some(key),
            touched: true,
            ..HostEntry::default()
        };
        let slot = super::put_in_slot(&mut self.entries, &mut self.free, entry);
        self.index.insert(key, slot);
        match key {
            HostKey::Addr { .. } => self.named += 1,
            HostKey::Other => self.other = Some(slot),
        }
        slot
    }

    /// The slot of `other`, created when missing.
    pub(super) fn other_slot(&mut self) -> u32 {
        match self.other {
            Some(slot) => slot,
            None => self.push(HostKey::Other),
        }
    }

    /// The slot of a local address's series (in network namespace `netns`), made while there
    /// is room, else `other`'s. The caller takes a reference on it for its flow
    /// (`entries[slot].flows += 1`).
    #[inline]
    pub(super) fn assign(&mut self, ip: IpAddr, netns: u32) -> u32 {
        let key = self.key(ip, netns);
        if let Some(&slot) = self.index.get(&key) {
            return slot;
        }
        if self.full() {
            return self.other_slot();
        }
        self.push(key)
    }

    /// A flow leaves the slot (it ended or moved to another address).
    #[inline]
    pub(super) fn release(&mut self, slot: u32) -> &mut HostEntry {
        let entry = &mut self.entries[slot as usize];
        entry.flows -= 1;
        entry.touched = true;
        entry
    }

    /// At the start of a refresh, before its snapshot names new hosts: hosts without active
    /// flows, untouched since the last refresh and inactive for longer than the TTL, are
    /// removed and their slots freed.
    pub(super) fn expire(&mut self, now_ns: u64) {
        for (slot, entry) in self.entries.iter_mut().enumerate() {
            let Some(key) = entry.key else { continue };
            if entry.flows == 0
                && !entry.touched
                && now_ns.saturating_sub(entry.last_active_ns) > self.series_ttl_ns
            {
                self.index.remove(&key);
                match key {
                    HostKey::Addr { .. } => self.named -= 1,
                    HostKey::Other => self.other = None,
                }
                *entry = HostEntry::default();
                self.free.push(slot as u32);
            }
        }
    }

    /// At the end of a refresh: hosts with active flows, or whose flows started or ended since
    /// the last refresh (this one included), are active now.
    pub(super) fn mark_active(&mut self, now_ns: u64) {
        for entry in &mut self.entries {
            if entry.flows > 0 || entry.touched {
                entry.touched = false;
                entry.last_active_ns = now_ns;
            }
        }
    }
}

/// The cumulative totals per host, as a read-only map.
#[derive(Debug, Clone, Copy)]
pub struct Hosts<'a> {
    pub(super) table: &'a HostTable,
}

impl<'a> Hosts<'a> {
    /// The totals of a host.
    pub fn get(&self, key: &HostKey) -> Option<&'a HostTotals> {
        let slot = *self.table.index.get(key)?;
        Some(&self.table.entries[slot as usize].totals)
    }

    /// Whether the host has a series.
    pub fn contains_key(&self, key: &HostKey) -> bool {
        self.table.index.contains_key(key)
    }

    /// Every host with its totals, in slot order (a new host takes a freed slot).
    pub fn iter(&self) -> impl Iterator<Item = (&'a HostKey, &'a HostTotals)> + 'a {
        self.table
            .entries
            .iter()
            .filter_map(|e| Some((e.key.as_ref()?, &e.totals)))
    }

    /// Every host, in slot order.
    pub fn keys(&self) -> impl Iterator<Item = &'a HostKey> + 'a {
        self.iter().map(|(k, _)| k)
    }

    /// Number of hosts (`other` included when it exists).
    pub fn len(&self) -> usize {
        self.table.index.len()
    }

    /// Whether there is no host.
    pub fn is_empty(&self) -> bool {
        self.table.index.is_empty()
    }
}

impl std::ops::Index<&HostKey> for Hosts<'_> {
    type Output = HostTotals;

    /// The totals of a host; panics when it has none, like a map's index.
    fn index(&self, key: &HostKey) -> &HostTotals {
        self.get(key)
            .unwrap_or_else(|| panic!("no host {key} in the table"))
    }
}

//! flowlens-core: what flowlens computes, apart from how it reads the kernel and the node. No
//! I/O, no aya, no libc: values in, values and line protocol out, so that everything here is
//! tested with plain values and the compiler keeps it that way.
//!
//! Code map: [`records`] (the kernel's records, mirrored from ebpf/flowlens.h), [`flows`] (the
//! flow table and the per-host and per-cgroup totals), [`ndpi`] (protocol inference), [`hash`]
//! (the tables' hasher), [`container`] and [`iface`] (what the plugin reads, as values),
//! [`workloads`] (containers and pods with series), [`rtt`] (RTT buckets and quantiles), [`metrics`] (values to ntopng-schema lines),
//! [`lineproto`] (the encoder; the strict parser with the `parser` feature), [`gather`] (one
//! gather's steps in order over the plugin's sources), [`internal`] (drops, folds, lost events
//! and skipped files: counted and logged in one place).
//!
//! Unsafe code is denied here and forbidden in every module but two, which say why:
//! `records` (reading a record from the kernel's bytes) and `flows` (a prefetch hint).
#![deny(unsafe_code)]

pub mod container;
pub mod flows;
pub mod gather;
pub mod hash;
pub mod iface;
pub mod internal;
pub mod lineproto;
pub mod metrics;
pub mod ndpi;
pub mod records;
pub mod rtt;
pub mod workloads;

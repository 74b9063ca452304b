//! Interface counters from the kernel's own statistics, read from sysfs.
//!
//! `/sys/class/net/<ifname>/statistics/{rx,tx}_{bytes,packets}` are the same counters that
//! `ip -s link` and rtnetlink report (`rtnl_link_stats64`), for every interface of the network
//! namespace sysfs was mounted in: physical, bridge, veth, loopback.

use std::{fs, io, path::Path};

/// The default sysfs directory listing the network interfaces.
pub const SYS_CLASS_NET: &str = "/sys/class/net";

pub use flowlens_core::IfaceCounters;

/// Why the interfaces could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot list network interfaces in {dir}: {source}")]
pub struct IfaceError {
    dir: String,
    source: io::Error,
}

fn read_counter(dir: &Path, name: &str) -> Option<u64> {
    // A counter file holds a decimal number and a newline; anything else is skipped.
    let text = fs::read_to_string(dir.join(name)).ok()?;
    let text = text.trim_end();
    if text.len() > 20 {
        return None;
    }
    text.parse().ok()
}

/// A valid Linux interface name: 1 to 15 bytes, no `/`, whitespace or control characters.
fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_graphic() && b != b'/')
}

/// Reads the counters of every interface under `root` (normally [`SYS_CLASS_NET`]), sorted by
/// name. An interface that vanishes while being read is left out.
pub fn read_all(root: &Path) -> Result<Vec<IfaceCounters>, IfaceError> {
    let entries = fs::read_dir(root).map_err(|source| IfaceError {
        dir: root.display().to_string(),
        source,
    })?;
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if !valid_ifname(&name) {
            continue;
        }
        let stats = entry.path().join("statistics");
        let (Some(rx_bytes), Some(tx_bytes), Some(rx_packets), Some(tx_packets)) = (
            read_counter(&stats, "rx_bytes"),
            read_counter(&stats, "tx_bytes"),
            read_counter(&stats, "rx_packets"),
            read_counter(&stats, "tx_packets"),
        ) else {
            continue;
        };
        out.push(IfaceCounters {
            name,
            rx_bytes,
            tx_bytes,
            rx_packets,
            tx_packets,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_fixture_tree_and_skips_what_is_malformed() {
        let root = std::env::temp_dir().join(format!("flowlens-iface-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let write = |ifname: &str, rx: &str| {
            let d = root.join(ifname).join("statistics");
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join("rx_bytes"), rx).unwrap();
            fs::write(d.join("tx_bytes"), "20\n").unwrap();
            fs::write(d.join("rx_packets"), "3\n").unwrap();
            fs::write(d.join("tx_packets"), "4\n").unwrap();
        };
        write("veth0", "10\n");
        write("lo", "18446744073709551615\n");
        write("bad", "not a number\n");
        write("x".repeat(16).as_str(), "1\n");
        let got = read_all(&root).unwrap();
        let names: Vec<_> = got.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["lo", "veth0"]);
        assert_eq!(got[0].rx_bytes, u64::MAX);
        assert_eq!(got[1].rx_bytes + got[1].tx_bytes, 30);
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn missing_root_is_an_error_naming_it() {
        let err = read_all(Path::new("/nonexistent/net")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/net"));
    }
}

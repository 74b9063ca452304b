//! The health file: what a running instance publishes after each gather, and `flowlens health`,
//! which reads it (no plugin, no eBPF, no privileges: a cheap readiness and liveness check).
//!
//! The file is a few `key=value` lines, replaced whole (a temporary file renamed over it):
//!
//! ```text
//! pid=4242
//! start_ticks=123456          the process's start time (/proc/PID/stat), against PID reuse
//! state=running               starting | running | failed
//! gathers=17
//! last_gather_unix_ms=1796189332749
//! stale_after_secs=30         no gather for this long: unhealthy
//! lines=212
//! probes_attached=7
//! probes_failed=0
//! events_lost=0
//! error=                      why it failed (state=failed)
//! ```

use std::{
    fs,
    io::Write,
    os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

/// Where the instance writes and `flowlens health` reads, unless told otherwise.
pub const DEFAULT_PATH: &str = "/run/flowlens/health";

/// The fewest seconds without a gather that make an instance unhealthy: a gather can take a few
/// seconds on a busy node, and Telegraf's default interval is 10 s.
const MIN_STALE_SECS: u64 = 30;

/// Most bytes of a health file read: it is a dozen short lines.
const MAX_FILE_BYTES: u64 = 4096;

/// The `flowlens:internal` fields copied into the file.
const INTERNAL_FIELDS: [&str; 3] = ["probes_attached", "probes_failed", "events_lost"];

/// The writer side, held by a running instance.
pub struct HealthFile {
    path: PathBuf,
    pid: u32,
    start_ticks: u64,
    interval: Duration,
    gathers: u64,
    last_gather: Option<SystemTime>,
    /// The time between the last two gathers (Telegraf decides it in `telegraf` mode).
    last_gap: Option<Duration>,
}

impl HealthFile {
    /// Prepares `path` (its directory is made, mode 0755, when missing) and writes
    /// `state=starting`. `None`, with a warning through `warn`, when the directory cannot be
    /// trusted or written: another user owns it, others can write to it, or it is a symbolic
    /// link (a privileged process never writes where an unprivileged user could redirect it).
    pub fn create(path: &Path, interval: Duration, warn: impl Fn(&str)) -> Option<HealthFile> {
        let result = (|| -> Result<HealthFile, String> {
            let dir = match path.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => return Err("it names no directory".to_string()),
            };
            if fs::symlink_metadata(dir).is_err() {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(dir)
                    .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            }
            let meta = fs::symlink_metadata(dir)
                .map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
            // SAFETY: geteuid has no preconditions.
            let euid = unsafe { libc::geteuid() };
            if !meta.is_dir() {
                return Err(format!(
                    "{} is not a directory (a symbolic link?)",
                    dir.display()
                ));
            }
            if meta.uid() != euid || meta.permissions().mode() & 0o022 != 0 {
                return Err(format!(
                    "{} is owned by uid {} or writable by others (mode {:o}): use a \
                     directory only this user can write",
                    dir.display(),
                    meta.uid(),
                    meta.permissions().mode() & 0o7777
                ));
            }
            let pid = std::process::id();
            let start_ticks = start_ticks(pid)
                .ok_or_else(|| "cannot read this process's start time".to_string())?;
            let file = HealthFile {
                path: path.to_path_buf(),
                pid,
                start_ticks,
                interval,
                gathers: 0,
                last_gather: None,
                last_gap: None,
            };
            file.write("starting", "", None)?;
            Ok(file)
        })();
        match result {
            Ok(f) => Some(f),
            Err(e) => {
                warn(&format!(
                    "health file {}: {e}; `flowlens health` cannot check this instance",
                    path.display()
                ));
                None
            }
        }
    }

    /// Records a gather that wrote `batch`.
    pub fn gathered(&mut self, batch: &[u8]) -> Result<(), String> {
        let now = SystemTime::now();
        if let Some(last) = self.last_gather {
            self.last_gap = now.duration_since(last).ok();
        }
        self.last_gather = Some(now);
        self.gathers += 1;
        self.write("running", "", Some(batch))
    }

    /// Records why the instance is ending on a failure (the file stays, for the probe to say).
    pub fn failed(&self, error: &str) {
        let _ = self.write("failed", error, None);
    }

    /// Seconds without a gather after which the instance is unhealthy: three intervals (the
    /// configured one, or the last gap between gathers when longer), at least 30.
    fn stale_after_secs(&self) -> u64 {
        let every = self.last_gap.unwrap_or_default().max(self.interval);
        (3 * every.as_secs()).max(MIN_STALE_SECS)
    }

    fn write(&self, state: &str, error: &str, batch: Option<&[u8]>) -> Result<(), String> {
        let mut text = format!(
            "pid={}\nstart_ticks={}\nstate={state}\ngathers={}\n",
            self.pid, self.start_ticks, self.gathers
        );
        if let Some(t) = self.last_gather {
            let ms = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis();
            text.push_str(&format!("last_gather_unix_ms={ms}\n"));
        }
        text.push_str(&format!("stale_after_secs={}\n", self.stale_after_secs()));
        if let Some(batch) = batch {
            text.push_str(&format!(
                "lines={}\n",
                batch.iter().filter(|&&b| b == b'\n').count()
            ));
            if let Some(line) = batch
                .split(|&b| b == b'\n')
                .find(|l| l.starts_with(b"flowlens:internal"))
            {
                let line = String::from_utf8_lossy(line);
                for name in INTERNAL_FIELDS {
                    if let Some(v) = integer_field(&line, name) {
                        text.push_str(&format!("{name}={v}\n"));
                    }
                }
            }
        }
        // One line, no control characters: the file stays `key=value` lines.
        let error: String = error
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        text.push_str(&format!("error={error}\n"));
        let tmp = self.path.with_extension(format!("tmp{}", self.pid));
        let _ = fs::remove_file(&tmp);
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
            .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
        f.write_all(text.as_bytes())
            .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
        drop(f);
        fs::rename(&tmp, &self.path).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            format!("cannot replace {}: {e}", self.path.display())
        })
    }

    /// A normal end: the file goes (a probe then says no instance runs).
    pub fn remove(self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// An integer field's value in a line of line protocol (`name=42i`).
fn integer_field(line: &str, name: &str) -> Option<u64> {
    let fields = line.split(' ').nth(1)?;
    fields.split(',').find_map(|kv| {
        let v = kv.strip_prefix(name)?.strip_prefix('=')?;
        v.strip_suffix('i').unwrap_or(v).parse().ok()
    })
}

/// A process's start time in clock ticks since boot (/proc/PID/stat, field 22).
fn start_ticks(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let after = &stat[stat.rfind(')')? + 2..];
    after.split(' ').nth(19)?.parse().ok()
}

/// What `flowlens health` concluded.
#[derive(Debug, PartialEq, Eq)]
pub struct Verdict {
    pub healthy: bool,
    pub text: String,
}

/// Reads the health file at `path` and judges it at `now`: healthy when the instance that wrote
/// it still runs (same pid, same start time) and gathered within `max_age` (default: the
/// instance's own `stale_after_secs`).
pub fn check(path: &Path, max_age: Option<Duration>, now: SystemTime) -> Verdict {
    let unhealthy = |text: String| Verdict {
        healthy: false,
        text,
    };
    let text = match read_small(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return unhealthy(format!(
                "unhealthy: no running flowlens instance publishes its health at {} (none \
                 runs, it has not started, or its `health_file` is another path)",
                path.display()
            ))
        }
        Err(e) => return unhealthy(format!("unhealthy: cannot read {}: {e}", path.display())),
    };
    let get = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
    };
    let num = |key: &str| get(key).and_then(|v| v.parse::<u64>().ok());
    let (Some(pid), Some(ticks), Some(state)) = (num("pid"), num("start_ticks"), get("state"))
    else {
        return unhealthy(format!(
            "unhealthy: {} is not a flowlens health file",
            path.display()
        ));
    };
    let pid = pid as u32;
    if state == "failed" {
        return unhealthy(format!(
            "unhealthy: flowlens (pid {pid}) failed: {}",
            get("error").unwrap_or("")
        ));
    }
    if start_ticks(pid) != Some(ticks) {
        return unhealthy(format!(
            "unhealthy: the flowlens instance that wrote {} (pid {pid}) is gone",
            path.display()
        ));
    }
    let Some(last_ms) = num("last_gather_unix_ms") else {
        return unhealthy(format!(
            "unhealthy: flowlens (pid {pid}) is starting: no gather yet"
        ));
    };
    let max_age =
        max_age.unwrap_or_else(|| Duration::from_secs(num("stale_after_secs").unwrap_or(30)));
    let age = now
        .duration_since(UNIX_EPOCH + Duration::from_millis(last_ms))
        .unwrap_or_default();
    if age > max_age {
        return unhealthy(format!(
            "unhealthy: flowlens (pid {pid}) has not gathered for {:.1} s (more than {} s)",
            age.as_secs_f64(),
            max_age.as_secs()
        ));
    }
    let failed = num("probes_failed").unwrap_or(0);
    Verdict {
        healthy: true,
        text: format!(
            "{}: flowlens (pid {pid}) gathered {:.1} s ago ({} gathers, {} lines; {} probes \
             attached, {failed} failed; {} events lost)",
            if failed > 0 { "degraded" } else { "healthy" },
            age.as_secs_f64(),
            num("gathers").unwrap_or(0),
            num("lines").unwrap_or(0),
            num("probes_attached").unwrap_or(0),
            num("events_lost").unwrap_or(0)
        ),
    }
}

/// The file's text, when it is a regular file of at most [`MAX_FILE_BYTES`] (not followed
/// through a symbolic link).
fn read_small(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    if !f.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut text = String::new();
    f.take(MAX_FILE_BYTES).read_to_string(&mut text)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("flowlens-health-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).unwrap();
        d
    }

    const BATCH: &[u8] = b"iface:traffic,ifid=0 bytes=1i 1\n\
        flowlens:internal,ifid=0 gather_duration_ms=0.1,events_lost=3i,probes_attached=7i,probes_failed=0i 1\n";

    #[test]
    fn a_running_instance_is_healthy_until_its_gathers_stop() {
        let d = dir("run");
        let path = d.join("health");
        let mut h = HealthFile::create(&path, Duration::from_secs(10), |w| panic!("{w}")).unwrap();
        let now = SystemTime::now();
        let v = check(&path, None, now);
        assert!(!v.healthy && v.text.contains("starting"), "{v:?}");
        h.gathered(BATCH).unwrap();
        let v = check(&path, None, SystemTime::now());
        assert!(v.healthy, "{v:?}");
        assert!(
            v.text
                .contains("7 probes attached, 0 failed; 3 events lost")
                && v.text.contains("2 lines"),
            "{v:?}"
        );
        // 31 s later (30 s is the least of three 10 s intervals) it is stale.
        let later = SystemTime::now() + Duration::from_secs(31);
        let v = check(&path, None, later);
        assert!(!v.healthy && v.text.contains("has not gathered"), "{v:?}");
        assert!(check(&path, Some(Duration::from_secs(60)), later).healthy);
        h.failed("cannot write to stdout:\nbroken");
        let v = check(&path, None, SystemTime::now());
        assert!(
            !v.healthy && v.text.ends_with("failed: cannot write to stdout: broken"),
            "{v:?}"
        );
        h.remove();
        let v = check(&path, None, SystemTime::now());
        assert!(
            !v.healthy && v.text.contains("no running flowlens"),
            "{v:?}"
        );
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn a_file_whose_process_is_gone_or_another_is_unhealthy() {
        let d = dir("gone");
        let path = d.join("health");
        let mut h = HealthFile::create(&path, Duration::from_secs(10), |w| panic!("{w}")).unwrap();
        h.gathered(BATCH).unwrap();
        // The same pid with another start time: a reused pid.
        let text = fs::read_to_string(&path).unwrap();
        let ticks = start_ticks(std::process::id()).unwrap();
        fs::write(
            &path,
            text.replace(
                &format!("start_ticks={ticks}"),
                &format!("start_ticks={}", ticks + 1),
            ),
        )
        .unwrap();
        let v = check(&path, None, SystemTime::now());
        assert!(!v.healthy && v.text.contains("is gone"), "{v:?}");
        fs::write(&path, "hello\n").unwrap();
        let v = check(&path, None, SystemTime::now());
        assert!(
            !v.healthy && v.text.contains("not a flowlens health file"),
            "{v:?}"
        );
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn a_directory_others_can_write_or_a_symlink_is_refused() {
        let d = dir("perm");
        let open = d.join("open");
        fs::create_dir(&open).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
        let warned = std::cell::RefCell::new(String::new());
        let w = |s: &str| *warned.borrow_mut() = s.to_string();
        assert!(HealthFile::create(&open.join("health"), Duration::from_secs(1), w).is_none());
        assert!(warned.borrow().contains("writable by others"), "{warned:?}");
        std::os::unix::fs::symlink(&open, d.join("link")).unwrap();
        assert!(HealthFile::create(&d.join("link/health"), Duration::from_secs(1), w).is_none());
        assert!(warned.borrow().contains("not a directory"), "{warned:?}");
        // The file itself as a symbolic link: never followed, neither written nor read.
        let ok = d.join("ok");
        fs::create_dir(&ok).unwrap();
        fs::set_permissions(&ok, fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", ok.join("health")).unwrap();
        let v = check(&ok.join("health"), None, SystemTime::now());
        assert!(!v.healthy && v.text.contains("cannot read"), "{v:?}");
        let mut h = HealthFile::create(&ok.join("health"), Duration::from_secs(1), |w| {
            panic!("{w}")
        })
        .unwrap();
        h.gathered(BATCH).unwrap();
        assert!(fs::symlink_metadata(ok.join("health")).unwrap().is_file());
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn integer_fields_are_read_from_line_protocol() {
        let line = "flowlens:internal,ifid=0 a=1i,probes_failed=2i,b=0.5 123";
        assert_eq!(integer_field(line, "probes_failed"), Some(2));
        assert_eq!(integer_field(line, "probes"), None);
        assert_eq!(integer_field(line, "b"), None);
    }
}

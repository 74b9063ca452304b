//! The one table the suite prints and writes to BENCHMARKS.md, and the machine it ran on.

use std::fmt::Write as _;

/// One row of the table.
#[derive(Debug, Clone, Default)]
pub struct Row {
    /// Section number and measurement.
    pub what: String,
    /// Variant, path or size.
    pub case: String,
    /// The measured value (median unless said).
    pub result: String,
    /// Ratio to the baseline or reference: min / median / max over the repetitions.
    pub ratio: String,
    /// The target of issue 5 this row answers, if any.
    pub target: String,
    /// met / missed / pending / n/a, with the number.
    pub status: String,
}

/// Where the suite ran.
#[derive(Debug, Clone)]
pub struct Machine {
    /// `uname -r`.
    pub kernel: String,
    /// CPU model.
    pub cpu: String,
    /// Cores the suite may use.
    pub cores: usize,
    /// Memory, MiB.
    pub mem_mib: u64,
    /// UTC date and time.
    pub date: String,
    /// The command that produced the table.
    pub command: String,
}

impl Machine {
    /// This machine, now.
    pub fn here(command: String) -> Machine {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let cpu = read("/proc/cpuinfo")
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        let mem_mib = read("/proc/meminfo")
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0)
            / 1024;
        let date = std::process::Command::new("date")
            .args(["-u", "+%Y-%m-%d %H:%M UTC"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        Machine {
            kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
            cpu,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            mem_mib,
            date,
            command,
        }
    }

    /// The lines above the table.
    pub fn header(&self) -> String {
        format!(
            "- Machine: Linux {} (`uname -r`), {}, {} cores, {} MiB RAM\n- Date: {}\n- Command: `{}`\n",
            self.kernel, self.cpu, self.cores, self.mem_mib, self.date, self.command
        )
    }
}

fn cell(text: &str) -> String {
    text.replace('|', "\\|")
}

/// The table as Markdown (also what is printed: it reads as plain text).
pub fn table(rows: &[Row]) -> String {
    let head = [
        "measurement",
        "case",
        "result (median)",
        "vs baseline/reference: min / median / max",
        "target (issue 5)",
        "status",
    ];
    let body: Vec<[String; 6]> = rows
        .iter()
        .map(|r| {
            [
                cell(&r.what),
                cell(&r.case),
                cell(&r.result),
                cell(&r.ratio),
                cell(&r.target),
                cell(&r.status),
            ]
        })
        .collect();
    let mut width = head.map(str::len);
    for r in &body {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cols: &[String]| {
        out.push('|');
        for (c, w) in cols.iter().zip(width) {
            let pad = w - c.chars().count();
            let _ = write!(out, " {c}{} |", " ".repeat(pad));
        }
        out.push('\n');
    };
    line(&mut out, &head.map(String::from));
    line(&mut out, &width.map(|w| "-".repeat(w)));
    for r in &body {
        line(&mut out, r);
    }
    out
}

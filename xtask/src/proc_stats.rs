//! Reads CPU time and memory of a process tree from `/proc` (Linux only).
//!
//! Used by the benches to charge a server for the CPU and memory it uses, including the
//! worker processes it forks (real Ironic runs a master and a worker).

use std::collections::HashMap;
use std::fs;
use std::process::Command;

use anyhow::Context as _;

/// CPU time and memory of a process and all its live descendants.
#[derive(Debug, Clone, Copy, Default)]
pub struct TreeSample {
    /// utime + stime of every process in the tree, in seconds.
    pub cpu_secs: f64,
    /// Sum of VmRSS over the tree, in KiB (counts shared pages once per process).
    pub rss_kib: u64,
    /// Sum of Pss over the tree, in KiB (shared pages split between sharers).
    pub pss_kib: u64,
    /// Number of processes in the tree.
    pub processes: usize,
}

/// Clock ticks per second for `/proc/<pid>/stat` times.
pub fn clock_ticks() -> f64 {
    let out = Command::new("getconf").arg("CLK_TCK").output();
    match out {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse::<f64>()
            .unwrap_or(100.0),
        _ => 100.0,
    }
}

/// Fields of `/proc/<pid>/stat` after the command name: (ppid, utime + stime ticks).
fn stat_fields(pid: u32) -> Option<(u32, u64)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: split after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); ppid is field 4, utime 14, stime 15.
    let ppid = fields.get(1)?.parse().ok()?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((ppid, utime + stime))
}

/// Value in KiB of a `Key:   123 kB` line in a `/proc` file.
pub fn kib_field(path: &str, key: &str) -> Option<u64> {
    let text = fs::read_to_string(path).ok()?;
    text.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l[key.len()..].split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// `root` and every live process below it.
pub fn tree_pids(root: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(dir) = fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if let Some((ppid, _)) = stat_fields(pid) {
                children.entry(ppid).or_default().push(pid);
            }
        }
    }
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        if let Some(kids) = children.get(&out[i]) {
            out.extend(kids);
        }
        i += 1;
    }
    out
}

/// Samples the CPU time and memory of `root` and its descendants.
pub fn sample_tree(root: u32, ticks_per_sec: f64) -> anyhow::Result<TreeSample> {
    let (_, root_ticks) =
        stat_fields(root).with_context(|| format!("reading /proc/{root}/stat"))?;
    let mut sample = TreeSample::default();
    let mut ticks = root_ticks;
    let pids = tree_pids(root);
    for pid in &pids {
        if *pid != root {
            ticks += stat_fields(*pid).map(|(_, t)| t).unwrap_or(0);
        }
        sample.rss_kib += kib_field(&format!("/proc/{pid}/status"), "VmRSS:").unwrap_or(0);
        sample.pss_kib += kib_field(&format!("/proc/{pid}/smaps_rollup"), "Pss:").unwrap_or(0);
    }
    sample.cpu_secs = ticks as f64 / ticks_per_sec;
    sample.processes = pids.len();
    Ok(sample)
}

/// CPU seconds of one process alone (not its children).
pub fn own_cpu_secs(pid: u32, ticks_per_sec: f64) -> anyhow::Result<f64> {
    let (_, ticks) = stat_fields(pid).with_context(|| format!("reading /proc/{pid}/stat"))?;
    Ok(ticks as f64 / ticks_per_sec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_own_process() {
        let me = std::process::id();
        let s = sample_tree(me, clock_ticks()).expect("own /proc entry is readable");
        assert!(s.rss_kib > 0, "{s:?}");
        assert!(s.pss_kib > 0, "{s:?}");
        assert!(s.processes >= 1);
    }

    #[test]
    fn finds_child_process() {
        let mut child = Command::new("sleep").arg("5").spawn().expect("spawn sleep");
        let pids = tree_pids(std::process::id());
        let found = pids.contains(&child.id());
        child.kill().expect("kill sleep");
        child.wait().expect("reap sleep");
        assert!(found, "{pids:?} lacks {}", child.id());
    }
}

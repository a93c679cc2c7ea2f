//! CPU and memory from `/proc/cpuinfo` and `/proc/meminfo` (pure over text), and on the
//! running machine from `sysinfo` (DESIGN.md names it for CPU and memory; it costs the
//! static agent about 94 KiB). Sockets and flags come only from the parser.

use proto::{Cpu, Memory};

/// Parse `/proc/cpuinfo` text; `arch` comes from the running binary.
pub fn parse_cpuinfo(text: &str, arch: &str) -> Cpu {
    let mut cpu = Cpu {
        architecture: arch.to_string(),
        ..Default::default()
    };
    let mut sockets = std::collections::BTreeSet::new();
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim(), v.trim());
        match k {
            "processor" => cpu.count += 1,
            "model name" if cpu.model_name.is_empty() => cpu.model_name = v.to_string(),
            "cpu MHz" if cpu.frequency.is_none() => cpu.frequency = Some(v.to_string()),
            "flags" if cpu.flags.is_empty() => {
                cpu.flags = v.split_whitespace().map(str::to_string).collect()
            }
            "physical id" => {
                sockets.insert(v.to_string());
            }
            _ => {}
        }
    }
    cpu.socket_count = u32::try_from(sockets.len()).unwrap_or(1).max(1);
    cpu
}

/// Parse `/proc/meminfo` text (MemTotal, in bytes).
pub fn parse_meminfo(text: &str) -> Memory {
    let total = text
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
        * 1024;
    Memory {
        total,
        physical_mb: None,
    }
}

/// Overwrites model, frequency (current MHz), logical CPU count and total memory with what
/// `sysinfo` reads on the running machine; leaves the parsed values when it reads nothing.
pub fn refresh_live(cpu: &mut Cpu, memory: &mut Memory) {
    use sysinfo::{CpuRefreshKind, MemoryRefreshKind, RefreshKind, System};
    let Ok(sys) = System::new_with_specifics(
        RefreshKind::nothing()
            .with_cpu(CpuRefreshKind::nothing().with_frequency())
            .with_memory(MemoryRefreshKind::nothing().with_ram()),
    ) else {
        return;
    };
    if let Some(first) = sys.cpus().first() {
        if !first.brand().is_empty() {
            cpu.model_name = first.brand().to_string();
        }
        if first.frequency() > 0 {
            cpu.frequency = Some(first.frequency().to_string());
        }
        cpu.count = u32::try_from(sys.cpus().len()).unwrap_or(u32::MAX);
    }
    if sys.total_memory() > 0 {
        memory.total = sys.total_memory();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_two_socket_cpuinfo() {
        let text = "processor\t: 0\nmodel name\t: Xeon\ncpu MHz\t\t: 2100.000\nphysical id\t: 0\nflags\t\t: fpu sse2\n\n\
                    processor\t: 1\nmodel name\t: Xeon\nphysical id\t: 1\nflags\t\t: fpu sse2\n";
        let c = parse_cpuinfo(text, "x86_64");
        assert_eq!((c.count, c.socket_count), (2, 2));
        assert_eq!(c.frequency.as_deref(), Some("2100.000"));
        assert_eq!(c.flags, vec!["fpu", "sse2"]);
        assert_eq!(
            parse_meminfo("MemTotal:       2048000 kB\n").total,
            2_097_152_000
        );
    }

    #[test]
    fn live_values_agree_with_proc() {
        let mut cpu = parse_cpuinfo(
            &std::fs::read_to_string("/proc/cpuinfo").expect("cpuinfo"),
            "x86_64",
        );
        let mut mem = parse_meminfo(&std::fs::read_to_string("/proc/meminfo").expect("meminfo"));
        let (count, total) = (cpu.count, mem.total);
        cpu.count = 0;
        mem.total = 0;
        refresh_live(&mut cpu, &mut mem);
        assert_eq!(cpu.count, count);
        assert_eq!(mem.total, total);
    }
}

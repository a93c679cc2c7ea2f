//! NUMA topology from `sys/devices/system/node` under a root, in the shape of IPA's
//! `numa_topology`: memory per node, physical cores per node with their hyper-threads, and
//! the node of each network interface.

use std::collections::BTreeSet;
use std::path::Path;

use proto::{Interface, NumaCpu, NumaNic, NumaRam, NumaTopology};

/// CPU lists longer than this are cut (no machine has more CPUs).
const MAX_CPUS: u32 = 65_536;

/// PURE: a kernel CPU list (`0-3,8,10-11`) as numbers; `None` when malformed.
pub fn parse_cpu_list(text: &str) -> Option<Vec<u32>> {
    let mut out = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (a.parse::<u32>().ok()?, b.parse::<u32>().ok()?),
            None => {
                let n = part.parse::<u32>().ok()?;
                (n, n)
            }
        };
        if lo > hi || hi >= MAX_CPUS || out.len() as u32 + (hi - lo) >= MAX_CPUS {
            return None;
        }
        out.extend(lo..=hi);
    }
    Some(out)
}

/// PURE: `Node 0 MemTotal:  2097152 kB` from a node's `meminfo`.
pub fn mem_total_kb(meminfo: &str) -> Option<u64> {
    meminfo.lines().find_map(|l| {
        let rest = l.split_once("MemTotal:")?.1;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// The topology under `root`; `None` when the kernel shows no NUMA nodes.
pub fn topology(root: &Path, interfaces: &[Interface]) -> Option<NumaTopology> {
    let nodes_dir = root.join("sys/devices/system/node");
    let mut nodes: Vec<u32> = std::fs::read_dir(&nodes_dir)
        .ok()?
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_prefix("node")?.parse().ok()
        })
        .take(1024)
        .collect();
    if nodes.is_empty() {
        return None;
    }
    nodes.sort_unstable();
    let mut topo = NumaTopology::default();
    for node in nodes {
        let dir = nodes_dir.join(format!("node{node}"));
        if let Some(kb) = std::fs::read_to_string(dir.join("meminfo"))
            .ok()
            .as_deref()
            .and_then(mem_total_kb)
        {
            topo.ram.push(NumaRam {
                numa_node: node,
                size_kb: kb,
            });
        }
        let cpus = std::fs::read_to_string(dir.join("cpulist"))
            .ok()
            .as_deref()
            .and_then(parse_cpu_list)
            .unwrap_or_default();
        let mut seen = BTreeSet::new();
        for cpu in cpus {
            if seen.contains(&cpu) {
                continue;
            }
            let siblings = std::fs::read_to_string(root.join(format!(
                "sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list"
            )))
            .ok()
            .as_deref()
            .and_then(parse_cpu_list)
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| vec![cpu]);
            seen.extend(siblings.iter().copied());
            topo.cpus.push(NumaCpu {
                cpu: siblings.iter().copied().min().unwrap_or(cpu),
                numa_node: node,
                thread_siblings: siblings,
            });
        }
    }
    for i in interfaces {
        let node = std::fs::read_to_string(
            root.join("sys/class/net")
                .join(&i.name)
                .join("device/numa_node"),
        )
        .ok()
        .and_then(|t| t.trim().parse::<i64>().ok())
        .and_then(|n| u32::try_from(n).ok());
        if let Some(numa_node) = node {
            topo.nics.push(NumaNic {
                name: i.name.clone(),
                numa_node,
            });
        }
    }
    Some(topo)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        for (text, want) in [
            ("0-3,8,10-11\n", Some(vec![0, 1, 2, 3, 8, 10, 11])),
            ("5", Some(vec![5])),
            ("", Some(vec![])),
            ("3-1", None),
            ("a", None),
            ("0-4294967295", None),
        ] {
            assert_eq!(parse_cpu_list(text), want, "{text:?}");
        }
    }

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }

    #[test]
    fn two_nodes_with_hyperthreads_and_a_nic() {
        let root = tempfile::tempdir().expect("tempdir");
        let r = root.path();
        write(
            &r.join("sys/devices/system/node/node0/meminfo"),
            "Node 0 MemTotal:       2097152 kB\nNode 0 MemFree: 1 kB\n",
        );
        write(&r.join("sys/devices/system/node/node0/cpulist"), "0-1\n");
        write(
            &r.join("sys/devices/system/node/node1/meminfo"),
            "Node 1 MemTotal:       1048576 kB\n",
        );
        write(&r.join("sys/devices/system/node/node1/cpulist"), "2-3\n");
        for (cpu, sib) in [(0, "0-1"), (1, "0-1"), (2, "2"), (3, "3")] {
            write(
                &r.join(format!(
                    "sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list"
                )),
                sib,
            );
        }
        write(&r.join("sys/class/net/eth0/device/numa_node"), "1\n");
        write(&r.join("sys/class/net/eth1/device/numa_node"), "-1\n");
        let nics = ["eth0", "eth1"].map(|n| Interface {
            name: n.to_owned(),
            ..Interface::default()
        });
        let t = topology(r, &nics).expect("topology");
        assert_eq!(
            t.ram,
            vec![
                NumaRam {
                    numa_node: 0,
                    size_kb: 2_097_152
                },
                NumaRam {
                    numa_node: 1,
                    size_kb: 1_048_576
                }
            ]
        );
        assert_eq!(t.cpus.len(), 3, "cpu0 and cpu1 are one core: {:?}", t.cpus);
        assert_eq!(t.cpus[0].thread_siblings, vec![0, 1]);
        assert_eq!((t.cpus[2].cpu, t.cpus[2].numa_node), (3, 1));
        assert_eq!(
            t.nics,
            vec![NumaNic {
                name: "eth0".into(),
                numa_node: 1
            }]
        );
        assert!(topology(&r.join("nowhere"), &nics).is_none());
    }
}

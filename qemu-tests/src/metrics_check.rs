//! Reads `/metrics` after a lab run and checks that every family holds what the run must
//! have produced: two machines discovered, cleaned, deployed and released behind an IPMI
//! and a Redfish BMC, over the rack's DHCP and HTTP. (The lab's VMs boot QEMU's iPXE option
//! ROM, which takes its script over HTTP: TFTP is counted in `controller/tests/it/netboot_netns.rs`.)

use std::collections::BTreeMap;

/// One sample line: `name{label="value",...} number`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// The samples of an OpenMetrics text (comments skipped; a line that does not parse is
/// returned as an error, so a broken exposition fails the check).
pub fn parse(text: &str) -> Result<Vec<Sample>, String> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| parse_line(l).ok_or_else(|| format!("unreadable metrics line: {l}")))
        .collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let (name, rest) = match line.find(['{', ' ']) {
        Some(i) => line.split_at(i),
        None => return None,
    };
    let mut labels = BTreeMap::new();
    let rest = if let Some(body) = rest.strip_prefix('{') {
        // Label values may hold `}` and `,` (routes): read them quote-aware.
        let mut chars = body.char_indices();
        let end = loop {
            let key: String = chars
                .by_ref()
                .map(|(_, c)| c)
                .take_while(|c| *c != '=')
                .collect();
            if !matches!(chars.next(), Some((_, '"'))) {
                return None;
            }
            let mut value = String::new();
            let mut escaped = false;
            for (_, c) in chars.by_ref() {
                match (escaped, c) {
                    (false, '\\') => escaped = true,
                    (false, '"') => break,
                    (_, c) => {
                        value.push(c);
                        escaped = false;
                    }
                }
            }
            labels.insert(key, value);
            match chars.next() {
                Some((_, ',')) => {}
                Some((i, '}')) => break i,
                _ => return None,
            }
        };
        &body[end + 1..]
    } else {
        rest
    };
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// Sum of the samples named `name` whose labels include every pair of `with`.
pub fn sum(samples: &[Sample], name: &str, with: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            with.iter()
                .all(|(k, v)| s.labels.get(*k).is_some_and(|x| x == v))
        })
        .map(|s| s.value)
        .sum()
}

/// Whether any sample is named `name`.
pub fn has(samples: &[Sample], name: &str) -> bool {
    samples.iter().any(|s| s.name == name)
}

/// A family, the labels a sample must have, and the least sum the run must leave.
type AtLeast<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], f64);

/// What a lab run of `machines` machines (one IPMI, one Redfish) must leave in `/metrics`:
/// the list of what is missing (empty: all there).
pub fn lab_shortfalls(samples: &[Sample], machines: f64) -> Vec<String> {
    // (what, family, labels, at least)
    let at_least: &[AtLeast<'_>] = &[
        (
            "nodes deployed",
            "ingot_node_transitions_total",
            &[("to", "active")],
            machines,
        ),
        (
            "verifications timed (manage, after discovery inspected)",
            "ingot_phase_duration_seconds_count",
            &[("phase", "verify")],
            machines,
        ),
        (
            "cleanings timed (before deploy and on release)",
            "ingot_phase_duration_seconds_count",
            &[("phase", "clean")],
            machines,
        ),
        (
            "deploys timed",
            "ingot_phase_duration_seconds_count",
            &[("phase", "deploy")],
            machines,
        ),
        (
            "image bytes the agents wrote",
            "ingot_agent_bytes_written_total",
            &[("phase", "stream")],
            1.0,
        ),
        (
            "IPMI calls",
            "ingot_bmc_call_duration_seconds_count",
            &[("driver", "ipmitool")],
            1.0,
        ),
        (
            "Redfish calls",
            "ingot_bmc_call_duration_seconds_count",
            &[("driver", "redfish")],
            1.0,
        ),
        (
            "DHCP offers",
            "ingot_dhcp_packets_total",
            &[("kind", "offer")],
            machines,
        ),
        (
            "DHCP acks",
            "ingot_dhcp_packets_total",
            &[("kind", "ack")],
            machines,
        ),
        (
            "DHCP pool size",
            "ingot_dhcp_pool_addresses",
            &[("state", "total")],
            machines,
        ),
        (
            "operator API requests",
            "ingot_api_requests_total",
            &[("status", "200")],
            1.0,
        ),
        (
            "database pool cap",
            "ingot_db_pool_connections",
            &[("state", "max")],
            1.0,
        ),
    ];
    let mut missing = Vec::new();
    for (what, name, with, min) in at_least {
        let got = sum(samples, name, with);
        if got < *min {
            missing.push(format!(
                "{what}: {name}{with:?} is {got}, expected at least {min}"
            ));
        }
    }
    // Released machines hold no agent session and no write; nothing waits for a slot.
    for (name, with) in [
        ("ingot_agent_sessions", &[][..]),
        ("ingot_agent_write_rate_bytes_per_second", &[][..]),
        ("ingot_conductor_work", &[("state", "waiting")][..]),
        ("ingot_nodes", &[("state", "available")][..]),
    ] {
        if !has(samples, name) {
            missing.push(format!("family {name} is absent"));
        } else if name == "ingot_nodes" {
            let got = sum(samples, name, with);
            if got < machines {
                missing.push(format!(
                    "{got} nodes available after release, expected {machines}"
                ));
            }
        } else if sum(samples, name, with) != 0.0 {
            missing.push(format!("{name}{with:?} is not 0 after the run"));
        }
    }
    let free = sum(samples, "ingot_dhcp_pool_addresses", &[("state", "free")]);
    let total = sum(samples, "ingot_dhcp_pool_addresses", &[("state", "total")]);
    if free >= total {
        missing.push(format!(
            "DHCP pool: {free} of {total} addresses free, but the machines hold leases"
        ));
    }
    missing
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_labels_with_braces_and_commas() {
        let text = "# HELP x y\n\
            ingot_api_requests_total{method=\"GET\",route=\"/v1/nodes/{ident}\",status=\"200\"} 3\n\
            ingot_tftp_bytes_total 1234\n\
            ingot_x{a=\"q\\\"uote,d\"} 1.5\n# EOF\n";
        let s = parse(text).expect("parse");
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].labels["route"], "/v1/nodes/{ident}");
        assert_eq!(s[0].labels["status"], "200");
        assert_eq!(s[0].value, 3.0);
        assert_eq!(s[1].name, "ingot_tftp_bytes_total");
        assert_eq!(s[2].labels["a"], "q\"uote,d");
        assert_eq!(
            sum(&s, "ingot_api_requests_total", &[("method", "GET")]),
            3.0
        );
        assert!(parse("broken{a=1} 2").is_err());
    }

    #[test]
    fn an_empty_scrape_falls_short_everywhere() {
        let missing = lab_shortfalls(&[], 2.0);
        assert!(missing.len() > 10, "{missing:?}");
    }
}

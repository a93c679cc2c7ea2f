//! The kernel command line (`/proc/cmdline`) parsed into the agent's settings.
//!
//! Pure: [`parse`] takes the text, the IO wrapper [`read`] only reads the file. The agent is
//! configured by the command line alone (the iPXE script writes it):
//!
//! - `ingot.url=http://IP:PORT`: the controller (required; an IP literal is best, DNS is
//!   possible when DHCP gave a server). It may repeat, one per controller replica (at most
//!   [`MAX_URLS`]): the agent talks to the first and moves to the next when one stops
//!   answering;
//! - `ingot.ca=sha256:HEX`: pin the controller's TLS certificate by its SHA-256 fingerprint;
//! - `BOOTIF=01-aa-bb-cc-dd-ee-ff`: the MAC the machine booted from (PXELINUX/iPXE style);
//! - `ingot.on_fatal=reboot|poweroff` and `ingot.fatal_delay=SECS`: what to do after a fatal
//!   error (default: reboot after 30 s);
//! - `ingot.log=FILTER`: the console log filter (`debug`, `agent::init=debug`; default `info`);
//! - `ingot.lldp_timeout=SECS`: how long inspection listens for LLDP on NICs that have heard
//!   nothing yet (default 35 s, above the 30 s most switches send at; 0 turns it off).
//!
//! The file ends in a newline, which must not stick to the last argument (gotcha G1), and
//! values may be double-quoted.

use std::time::Duration;

/// What PID 1 does after a fatal error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFatal {
    Reboot,
    PowerOff,
}

/// The agent's settings from the kernel command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    /// Controller base URLs in the order given, without a trailing slash, no duplicates.
    pub urls: Vec<String>,
    /// SHA-256 fingerprint of the controller's certificate (DER).
    pub ca_sha256: Option<[u8; 32]>,
    /// Boot MAC, lower case with colons.
    pub boot_mac: Option<String>,
    pub on_fatal: OnFatal,
    pub fatal_delay: Duration,
    /// Console log filter (`ingot.log=`, `Targets` syntax: `info,agent::init=debug`), default `info`.
    pub log: Option<String>,
    /// `ingot.lldp_timeout=`: inspection's LLDP listening window.
    pub lldp_timeout: Duration,
}

/// The most `ingot.url=` a command line may give.
pub const MAX_URLS: usize = 8;

/// Inspection's LLDP listening window unless `ingot.lldp_timeout=` says otherwise.
pub const DEFAULT_LLDP_TIMEOUT: Duration = Duration::from_secs(35);
/// The longest LLDP window the command line may ask for.
pub const MAX_LLDP_TIMEOUT: Duration = Duration::from_secs(300);

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            urls: Vec::new(),
            ca_sha256: None,
            boot_mac: None,
            on_fatal: OnFatal::Reboot,
            fatal_delay: Duration::from_secs(30),
            log: None,
            lldp_timeout: DEFAULT_LLDP_TIMEOUT,
        }
    }
}

/// A command line value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CmdlineError {
    #[error("{key}={value}: {why}")]
    Invalid {
        key: String,
        value: String,
        why: &'static str,
    },
}

/// Splits a command line into words: whitespace separates, double quotes group (and are
/// removed), the trailing newline is whitespace like any other.
pub fn split(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_quotes = false;
    let mut have = false;
    for c in text.chars() {
        match c {
            '"' => {
                in_quotes = !in_quotes;
                have = true;
            }
            c if c.is_whitespace() && !in_quotes => {
                if have {
                    out.push(std::mem::take(&mut cur));
                    have = false;
                }
            }
            c => {
                cur.push(c);
                have = true;
            }
        }
    }
    if have {
        out.push(cur);
    }
    out
}

/// `01-aa-bb-cc-dd-ee-ff` (ARP type 1 + MAC) or a bare MAC with `-` or `:` -> `aa:bb:..`.
pub fn parse_bootif(v: &str) -> Option<String> {
    let parts: Vec<&str> = v.split(['-', ':']).collect();
    let mac = match parts.len() {
        7 if parts[0] == "01" => &parts[1..],
        6 => &parts[..],
        _ => return None,
    };
    if mac
        .iter()
        .any(|p| p.len() != 2 || !p.chars().all(|c| c.is_ascii_hexdigit()))
    {
        return None;
    }
    Some(mac.join(":").to_ascii_lowercase())
}

/// Parses the command line text. Unknown arguments are ignored; a malformed `ingot.*` value
/// is an error (a typo must not silently change behaviour).
pub fn parse(text: &str) -> Result<AgentConfig, CmdlineError> {
    let mut cfg = AgentConfig::default();
    let invalid = |key: &str, value: &str, why| CmdlineError::Invalid {
        key: key.to_owned(),
        value: value.to_owned(),
        why,
    };
    for word in split(text) {
        let Some((key, value)) = word.split_once('=') else {
            continue;
        };
        match key {
            "ingot.url" => {
                if !(value.starts_with("http://") || value.starts_with("https://")) {
                    return Err(invalid(key, value, "must start with http:// or https://"));
                }
                let url = value.trim_end_matches('/').to_owned();
                if !cfg.urls.contains(&url) {
                    if cfg.urls.len() == MAX_URLS {
                        return Err(invalid(key, value, "at most 8 controller URLs"));
                    }
                    cfg.urls.push(url);
                }
            }
            "ingot.ca" => {
                let hex = value
                    .strip_prefix("sha256:")
                    .ok_or_else(|| invalid(key, value, "must be sha256:HEX"))?;
                let bytes = hex::decode(hex).map_err(|_| invalid(key, value, "bad hex"))?;
                let arr: [u8; 32] = bytes
                    .try_into()
                    .map_err(|_| invalid(key, value, "a sha256 is 64 hex digits"))?;
                cfg.ca_sha256 = Some(arr);
            }
            "BOOTIF" => {
                cfg.boot_mac =
                    Some(parse_bootif(value).ok_or_else(|| invalid(key, value, "not a MAC"))?);
            }
            "ingot.on_fatal" => {
                cfg.on_fatal = match value {
                    "reboot" => OnFatal::Reboot,
                    "poweroff" | "power_off" => OnFatal::PowerOff,
                    _ => return Err(invalid(key, value, "must be reboot or poweroff")),
                }
            }
            "ingot.fatal_delay" => {
                let s: u64 = value
                    .parse()
                    .map_err(|_| invalid(key, value, "must be seconds"))?;
                cfg.fatal_delay = Duration::from_secs(s);
            }
            "ingot.log" => cfg.log = Some(value.to_owned()),
            "ingot.lldp_timeout" => {
                cfg.lldp_timeout = value
                    .parse()
                    .ok()
                    .map(Duration::from_secs)
                    .filter(|d| *d <= MAX_LLDP_TIMEOUT)
                    .ok_or_else(|| invalid(key, value, "must be seconds, at most 300"))?;
            }
            _ => {}
        }
    }
    Ok(cfg)
}

/// Reads and parses `/proc/cmdline`.
pub fn read() -> anyhow::Result<AgentConfig> {
    use anyhow::Context;
    let text = std::fs::read_to_string("/proc/cmdline").context("reading /proc/cmdline")?;
    Ok(parse(&text)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_argument_loses_the_trailing_newline() {
        // Gotcha G1: procfs kept the newline on the last argument.
        let c = parse("console=ttyS0 ingot.url=http://10.0.2.2:6385\n").expect("parses");
        assert_eq!(c.urls, ["http://10.0.2.2:6385"]);
        let c = parse("ingot.on_fatal=poweroff\n").expect("parses");
        assert_eq!(c.on_fatal, OnFatal::PowerOff);
    }

    #[test]
    fn table() {
        let fp = "ab".repeat(32);
        let cases: Vec<(String, Result<AgentConfig, &str>)> = vec![
            ("".into(), Ok(AgentConfig::default())),
            (
                format!(
                    "BOOT_IMAGE=vmlinuz ingot.url=https://192.0.2.1:6385/ ingot.ca=sha256:{fp} BOOTIF=01-52-54-00-AB-CD-EF ingot.fatal_delay=5 quiet"
                ),
                Ok(AgentConfig {
                    urls: vec!["https://192.0.2.1:6385".into()],
                    ca_sha256: Some([0xab; 32]),
                    boot_mac: Some("52:54:00:ab:cd:ef".into()),
                    on_fatal: OnFatal::Reboot,
                    fatal_delay: Duration::from_secs(5),
                    log: None,
                    lldp_timeout: DEFAULT_LLDP_TIMEOUT,
                }),
            ),
            (
                "x=\"a b\" ingot.url=\"http://10.0.0.1\" ingot.log=agent::init=debug\n".into(),
                Ok(AgentConfig {
                    urls: vec!["http://10.0.0.1".into()],
                    log: Some("agent::init=debug".into()),
                    ..Default::default()
                }),
            ),
            ("ingot.url=ftp://x".into(), Err("ingot.url=ftp://x")),
            (
                // Replicas in the order given; a repeat of the same URL counts once.
                "ingot.url=http://10.0.0.1:6385 ingot.url=https://10.0.0.2:6385/ ingot.url=http://10.0.0.1:6385/".into(),
                Ok(AgentConfig {
                    urls: vec!["http://10.0.0.1:6385".into(), "https://10.0.0.2:6385".into()],
                    ..Default::default()
                }),
            ),
            (
                (1..=9).map(|i| format!("ingot.url=http://10.0.0.{i} ")).collect(),
                Err("at most 8"),
            ),
            ("ingot.ca=abcd".into(), Err("ingot.ca=abcd")),
            ("ingot.ca=sha256:abcd".into(), Err("64 hex digits")),
            ("BOOTIF=01-52-54".into(), Err("not a MAC")),
            ("ingot.on_fatal=halt".into(), Err("reboot or poweroff")),
            (
                "ingot.lldp_timeout=0".into(),
                Ok(AgentConfig {
                    lldp_timeout: Duration::ZERO,
                    ..Default::default()
                }),
            ),
            (
                "ingot.lldp_timeout=300".into(),
                Ok(AgentConfig {
                    lldp_timeout: MAX_LLDP_TIMEOUT,
                    ..Default::default()
                }),
            ),
            ("ingot.lldp_timeout=301".into(), Err("at most 300")),
            ("ingot.lldp_timeout=-1".into(), Err("must be seconds")),
            ("ingot.lldp_timeout=5s".into(), Err("must be seconds")),
        ];
        for (text, want) in cases {
            let got = parse(&text);
            match (got, want) {
                (Ok(g), Ok(w)) => assert_eq!(g, w, "{text}"),
                (Err(e), Err(w)) => assert!(e.to_string().contains(w), "{text}: {e}"),
                (g, w) => panic!("{text}: got {g:?}, want {w:?}"),
            }
        }
    }

    #[test]
    fn split_handles_quotes_and_blank_runs() {
        assert_eq!(
            split("  a  b=\"c d\"\t\"\"\n"),
            vec!["a".to_string(), "b=c d".into(), "".into()]
        );
        assert_eq!(
            parse_bootif("52:54:00:12:34:56").as_deref(),
            Some("52:54:00:12:34:56")
        );
        assert_eq!(parse_bootif("01-52-54-00-12-34-zz"), None);
    }
}

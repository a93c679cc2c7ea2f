//! Controller configuration: defaults, then a TOML file, then `INGOT_*` environment
//! variables, then command-line flags (highest precedence).
//!
//! Keys in the file are the long flag names with `_` instead of `-`
//! (`--api-listen` is `api_listen`). Nested tables map to `INGOT_<TABLE>__<KEY>` variables,
//! e.g. `INGOT_CONDUCTOR__MAX_CONCURRENT_DEPLOYS=4`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::{Deserialize, Serialize};

use crate::discovery::rules::Rule;
use crate::discovery::{Cidr, DiscoveryConfig};
use crate::netboot::service::NetbootSection;

/// Where the config file is looked for when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/ingot/ingot.toml";

/// The configuration as written in the file and environment (every key optional).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub api_listen: Option<String>,
    pub database: Option<String>,
    pub state_dir: Option<PathBuf>,
    pub conductor_name: Option<String>,
    /// Largest request body the API accepts, in bytes.
    pub max_body_bytes: Option<usize>,
    #[serde(default)]
    pub conductor: ConductorSection,
    /// `[netboot]`: DHCP/TFTP/RA and the provisioning-side HTTP listener.
    #[serde(default)]
    pub netboot: NetbootSection,
    /// `[discovery]`: enrolling unknown machines and the inspection rules.
    #[serde(default)]
    pub discovery: DiscoverySection,
    /// `[tls]`: HTTPS for `/agent/v1/*` and `/images/*` on the provisioning side.
    #[serde(default)]
    pub tls: TlsSection,
}

/// `[tls]` table (`ingot certs init` prints it).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// Server certificate and its chain (PEM).
    pub cert_file: Option<PathBuf>,
    /// Its private key (PEM).
    pub key_file: Option<PathBuf>,
}

/// HTTPS of the provisioning side, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// `[netboot] https_listen`, default `<server_ip>:8443`.
    pub listen: SocketAddr,
}

/// `[discovery]` table.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DiscoverySection {
    /// Enroll unknown machines that look up (default false).
    pub enabled: Option<bool>,
    /// Source networks (CIDR) allowed to enroll; empty or absent allows any.
    pub allowed_subnets: Option<Vec<String>>,
    /// New nodes per minute (default 60) and the burst (default 10).
    pub rate_per_minute: Option<u32>,
    pub burst: Option<u32>,
    /// Driver of discovered nodes (default `manual`).
    pub default_driver: Option<String>,
    /// Longest a heartbeat long-poll is held, seconds (default 30).
    pub heartbeat_timeout_secs: Option<u64>,
    /// Inspection rules, run in order after discovery and inspection.
    #[serde(default)]
    pub rules: Vec<Rule>,
}

/// `[conductor]` table.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ConductorSection {
    pub max_concurrent_deploys: Option<usize>,
    pub max_concurrent_cleanings: Option<usize>,
    pub power_sync_interval_secs: Option<u64>,
    pub callback_timeout_secs: Option<u64>,
}

/// Validated configuration used by `ingot serve`.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub api_listen: SocketAddr,
    pub database: String,
    pub state_dir: PathBuf,
    pub conductor_name: String,
    pub max_body_bytes: usize,
    pub max_concurrent_deploys: usize,
    pub max_concurrent_cleanings: usize,
    pub power_sync_interval: Duration,
    pub callback_timeout: Duration,
    /// `[netboot]` as given (DHCP/TFTP validated when `serve` starts them).
    pub netboot: NetbootSection,
    /// Provisioning-side HTTP listener (boot + agent API), if any.
    pub boot_http_listen: Option<SocketAddr>,
    pub agent_kernel: PathBuf,
    pub agent_initramfs: PathBuf,
    pub discovery: DiscoveryConfig,
    pub agent_heartbeat_timeout: Duration,
    /// HTTPS listener for the agent API and images; when set, the plain listener serves
    /// `/boot/*` only.
    pub tls: Option<TlsConfig>,
}

/// The state directory used when none is configured: `/var/lib/ingot` for root, else
/// `$XDG_STATE_HOME/ingot` or `~/.local/state/ingot`.
pub fn default_state_dir() -> PathBuf {
    if nix_is_root() {
        return PathBuf::from("/var/lib/ingot");
    }
    if let Some(dir) = std::env::var_os("XDG_STATE_HOME") {
        return PathBuf::from(dir).join("ingot");
    }
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".local/state/ingot"),
        None => PathBuf::from("ingot-state"),
    }
}

fn nix_is_root() -> bool {
    // /proc/self/status is always there on Linux; avoid a libc dependency for one call.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

fn default_conductor_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "ingot".to_owned())
}

/// The top-level keys of the configuration file (`api_listen`, `conductor`, ...), read off
/// [`FileConfig`] itself so the list cannot drift from the struct.
fn file_keys() -> Vec<String> {
    match serde_json::to_value(FileConfig::default()) {
        Ok(serde_json::Value::Object(map)) => map.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

/// PURE: whether an `INGOT_*` environment variable (prefix stripped, lower case, `__` turned
/// into `.`) is configuration: its first key is one of the file's top-level keys. Other
/// `INGOT_*` variables (`INGOT_URL` of the operator CLI, `INGOT_PYTHON` of the tests,
/// `INGOT_LOG`, `INGOT_CONFIG`) belong to something else and must not break the server,
/// while a misspelt key inside a known table still fails as in the file.
pub fn is_config_env_key(key: &str, known: &[String]) -> bool {
    let first = key.split('.').next().unwrap_or(key);
    known.iter().any(|k| k.eq_ignore_ascii_case(first))
}

/// Builds the sqlite URL for a database file in the state directory.
pub fn default_database_url(state_dir: &Path) -> String {
    format!("sqlite://{}", state_dir.join("ingot.db").display())
}

impl FileConfig {
    /// Loads the file (if any) and the environment. `path` is `--config`; without it the
    /// default path is read only when it exists.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Self> {
        let mut fig = Figment::new();
        match path {
            Some(p) => {
                if !p.exists() {
                    bail!("config file {} does not exist", p.display());
                }
                fig = fig.merge(Toml::file(p));
            }
            None => {
                if Path::new(DEFAULT_CONFIG_PATH).exists() {
                    fig = fig.merge(Toml::file(DEFAULT_CONFIG_PATH));
                }
            }
        }
        let known = file_keys();
        fig = fig.merge(
            Env::prefixed("INGOT_")
                .split("__")
                .filter(move |key| is_config_env_key(key.as_str(), &known)),
        );
        fig.extract().context("reading configuration")
    }

    /// Overlays `flags` (command-line values) on `self` (file + environment).
    pub fn overlay(mut self, flags: FileConfig) -> Self {
        fn pick<T>(slot: &mut Option<T>, v: Option<T>) {
            if v.is_some() {
                *slot = v;
            }
        }
        pick(&mut self.api_listen, flags.api_listen);
        pick(&mut self.database, flags.database);
        pick(&mut self.state_dir, flags.state_dir);
        pick(&mut self.conductor_name, flags.conductor_name);
        pick(&mut self.max_body_bytes, flags.max_body_bytes);
        let (c, f) = (&mut self.conductor, flags.conductor);
        pick(&mut c.max_concurrent_deploys, f.max_concurrent_deploys);
        pick(&mut c.max_concurrent_cleanings, f.max_concurrent_cleanings);
        pick(&mut c.power_sync_interval_secs, f.power_sync_interval_secs);
        pick(&mut c.callback_timeout_secs, f.callback_timeout_secs);
        if flags.netboot != NetbootSection::default() {
            self.netboot = flags.netboot;
        }
        if flags.discovery != DiscoverySection::default() {
            self.discovery = flags.discovery;
        }
        pick(&mut self.tls.cert_file, flags.tls.cert_file);
        pick(&mut self.tls.key_file, flags.tls.key_file);
        self
    }

    /// Fills defaults and validates.
    pub fn validate(self) -> anyhow::Result<Config> {
        let api_listen = self.api_listen.as_deref().unwrap_or("127.0.0.1:6385");
        let api_listen: SocketAddr = api_listen
            .parse()
            .with_context(|| format!("api_listen {api_listen:?} is not an ADDR:PORT"))?;
        let state_dir = self.state_dir.unwrap_or_else(default_state_dir);
        let database = self
            .database
            .unwrap_or_else(|| default_database_url(&state_dir));
        if !(database.starts_with("sqlite:")
            || database.starts_with("postgres://")
            || database.starts_with("postgresql://"))
        {
            bail!(
                "database URL {database:?} must start with sqlite:, postgres:// or postgresql://"
            );
        }
        let c = self.conductor;
        let d = self.discovery;
        let allowed_subnets = d
            .allowed_subnets
            .unwrap_or_default()
            .iter()
            .map(|s| s.parse::<Cidr>())
            .collect::<Result<Vec<_>, _>>()
            .context("discovery.allowed_subnets")?;
        let discovery = DiscoveryConfig {
            enabled: d.enabled.unwrap_or(false),
            allowed_subnets,
            rate_per_minute: d.rate_per_minute.unwrap_or(60),
            burst: d.burst.unwrap_or(10),
            default_driver: d.default_driver.unwrap_or_else(|| "manual".to_owned()),
            rules: d.rules,
        };
        let netboot = self.netboot;
        let dhcp_on = netboot.mode.as_deref().is_some_and(|m| m != "off");
        let boot_http_listen = match (netboot.http_listen, netboot.server_ip) {
            (Some(a), _) => Some(a),
            (None, Some(ip)) if dhcp_on => Some(SocketAddr::new(ip.into(), 8080)),
            _ => None,
        };
        let tls = match (self.tls.cert_file, self.tls.key_file) {
            (None, None) => None,
            (Some(cert_file), Some(key_file)) => {
                let listen = match (netboot.https_listen, netboot.server_ip, boot_http_listen) {
                    (Some(a), _, _) => a,
                    (None, Some(ip), _) => SocketAddr::new(ip.into(), 8443),
                    (None, None, Some(plain)) => SocketAddr::new(plain.ip(), 8443),
                    _ => bail!(
                        "[tls] needs [netboot] https_listen, server_ip or http_listen (where to serve HTTPS)"
                    ),
                };
                Some(TlsConfig {
                    cert_file,
                    key_file,
                    listen,
                })
            }
            _ => bail!("[tls] needs both cert_file and key_file"),
        };
        let agent_kernel = netboot
            .agent_kernel
            .clone()
            .unwrap_or_else(|| PathBuf::from("target/initramfs/qemu/vmlinuz"));
        let agent_initramfs = netboot
            .agent_initramfs
            .clone()
            .unwrap_or_else(|| PathBuf::from("target/initramfs/qemu/initramfs.cpio.zst"));
        let positive = |v: Option<usize>, name: &str, default: usize| -> anyhow::Result<usize> {
            match v {
                Some(0) => bail!("conductor.{name} must be at least 1"),
                Some(n) => Ok(n),
                None => Ok(default),
            }
        };
        Ok(Config {
            api_listen,
            database,
            state_dir,
            conductor_name: self.conductor_name.unwrap_or_else(default_conductor_name),
            max_body_bytes: self.max_body_bytes.unwrap_or(16 * 1024 * 1024),
            max_concurrent_deploys: positive(
                c.max_concurrent_deploys,
                "max_concurrent_deploys",
                16,
            )?,
            max_concurrent_cleanings: positive(
                c.max_concurrent_cleanings,
                "max_concurrent_cleanings",
                16,
            )?,
            power_sync_interval: Duration::from_secs(c.power_sync_interval_secs.unwrap_or(60)),
            callback_timeout: Duration::from_secs(c.callback_timeout_secs.unwrap_or(1800)),
            netboot,
            boot_http_listen,
            agent_kernel,
            agent_initramfs,
            discovery,
            agent_heartbeat_timeout: Duration::from_secs(d.heartbeat_timeout_secs.unwrap_or(30)),
            tls,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every example config under `controller/tests/configs/` loads and validates, and the
    /// README shows the same text, so the documentation cannot rot.
    #[test]
    fn example_configs_load_and_match_the_readme() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let readme = std::fs::read_to_string(root.join("../README.md")).expect("README");
        let dir = root.join("tests/configs");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).expect("configs dir") {
            let path = entry.expect("entry").path();
            let text = std::fs::read_to_string(&path).expect("read");
            let body: String = text.lines().skip(1).map(|l| format!("{l}\n")).collect();
            assert!(
                readme.contains(&body),
                "{} is not the README's example",
                path.display()
            );
            FileConfig::load(Some(&path))
                .and_then(FileConfig::validate)
                .unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
            n += 1;
        }
        assert_eq!(n, 2);
    }

    #[test]
    fn defaults_are_valid() {
        let c = FileConfig::default().validate().expect("valid");
        assert_eq!(c.api_listen.to_string(), "127.0.0.1:6385");
        assert!(c.database.starts_with("sqlite://"));
        assert!(c.database.ends_with("ingot.db"));
        assert_eq!(c.max_concurrent_deploys, 16);
    }

    #[test]
    fn flags_override_file() {
        let file = FileConfig {
            api_listen: Some("0.0.0.0:1".into()),
            database: Some("sqlite:///x.db".into()),
            ..Default::default()
        };
        let flags = FileConfig {
            api_listen: Some("127.0.0.1:9".into()),
            ..Default::default()
        };
        let c = file.overlay(flags).validate().expect("valid");
        assert_eq!(c.api_listen.to_string(), "127.0.0.1:9");
        assert_eq!(c.database, "sqlite:///x.db");
    }

    #[test]
    fn toml_file_and_unknown_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("ingot.toml");
        std::fs::write(
            &p,
            "api_listen = \"127.0.0.1:7000\"\n[conductor]\nmax_concurrent_deploys = 2\n",
        )
        .expect("write");
        let c = FileConfig::load(Some(&p))
            .expect("load")
            .validate()
            .expect("valid");
        assert_eq!(c.api_listen.port(), 7000);
        assert_eq!(c.max_concurrent_deploys, 2);

        std::fs::write(&p, "bogus = 1\n").expect("write");
        let err = FileConfig::load(Some(&p)).expect_err("unknown key");
        assert!(format!("{err:#}").contains("bogus"), "{err:#}");
    }

    #[test]
    fn only_configuration_variables_are_read_from_the_environment() {
        let known = file_keys();
        for k in [
            "api_listen",
            "database",
            "state_dir",
            "conductor_name",
            "max_body_bytes",
            "conductor",
            "netboot",
            "discovery",
        ] {
            assert!(known.iter().any(|x| x == k), "{k} missing from {known:?}");
        }
        let cases = [
            ("api_listen", true),
            ("API_LISTEN", true),
            ("conductor.max_concurrent_deploys", true),
            ("conductor.typo", true),
            ("netboot.mode", true),
            ("url", false),
            ("python", false),
            ("log", false),
            ("config", false),
            ("clients_endpoint", false),
            ("lab_chassis", false),
            ("conductor_typo", false),
        ];
        for (key, want) in cases {
            assert_eq!(is_config_env_key(key, &known), want, "{key}");
        }
    }

    #[test]
    fn bad_values_are_clear_errors() {
        let bad = FileConfig {
            api_listen: Some("nonsense".into()),
            ..Default::default()
        };
        assert!(format!("{:#}", bad.validate().expect_err("bad")).contains("ADDR:PORT"));
        let bad = FileConfig {
            database: Some("mysql://x".into()),
            ..Default::default()
        };
        assert!(bad.validate().is_err());
        let bad = FileConfig {
            conductor: ConductorSection {
                max_concurrent_deploys: Some(0),
                ..Default::default()
            },
            ..Default::default()
        };
        assert!(bad.validate().is_err());
        let missing = FileConfig::load(Some(Path::new("/nonexistent/ingot.toml")));
        assert!(missing.is_err());
    }

    #[test]
    fn netboot_and_discovery_sections() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("ingot.toml");
        std::fs::write(
            &p,
            r#"
[netboot]
http_listen = "127.0.0.1:8080"
agent_kernel = "/k"
[discovery]
enabled = true
allowed_subnets = ["192.0.2.0/24"]
rate_per_minute = 5
[[discovery.rules]]
conditions = [{ field = "cpu.architecture", op = "eq", value = "x86_64" }]
actions = [{ action = "add_trait", value = "CUSTOM_X" }, { action = "manage" }]
"#,
        )
        .expect("write");
        let c = FileConfig::load(Some(&p))
            .expect("load")
            .validate()
            .expect("valid");
        assert_eq!(
            c.boot_http_listen,
            Some("127.0.0.1:8080".parse().expect("addr"))
        );
        assert_eq!(c.agent_kernel, PathBuf::from("/k"));
        assert!(c.discovery.enabled);
        assert_eq!(c.discovery.rate_per_minute, 5);
        assert_eq!(c.discovery.rules.len(), 1);
        let bad = FileConfig {
            discovery: DiscoverySection {
                allowed_subnets: Some(vec!["nope".into()]),
                ..Default::default()
            },
            ..Default::default()
        };
        assert!(bad.validate().is_err());
    }
}

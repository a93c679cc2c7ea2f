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
use crate::drivers::registry::{DEFAULT_HARDWARE_TYPES, KNOWN_HARDWARE_TYPES};
use crate::netboot::service::NetbootSection;

/// How `ingot serve` writes its log lines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

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
    /// `noauth` (default) or `http_basic`, Ironic's names.
    pub auth_strategy: Option<String>,
    /// The htpasswd file (bcrypt entries) of `http_basic`.
    pub http_basic_auth_user_file: Option<PathBuf>,
    /// Allow `noauth` on an API address that is not loopback (default false).
    pub allow_insecure_noauth: Option<bool>,
    /// `text` (default: `key=value` lines) or `json` (one object per line) on stderr.
    pub log_format: Option<LogFormat>,
    /// `[[webhooks]]`: receivers of provision-state changes and failures.
    #[serde(default)]
    pub webhooks: Vec<crate::webhooks::WebhookSection>,
    /// Serve `/metrics` without authentication (default false: behind the API's auth).
    pub metrics_public: Option<bool>,
    /// `[auth.users.NAME]`: roles and projects of http_basic users.
    #[serde(default)]
    pub auth: AuthSection,
    #[serde(default)]
    pub conductor: ConductorSection,
    /// `[netboot]`: DHCP/TFTP/RA and the provisioning-side HTTP listener.
    #[serde(default)]
    pub netboot: NetbootSection,
    /// `[discovery]`: enrolling unknown machines and the inspection rules.
    #[serde(default)]
    pub discovery: DiscoverySection,
    /// Hardware types this conductor offers (Ironic's `enabled_hardware_types`); default
    /// `ipmi`, `redfish`, `manual`, `fake-hardware`. `qemu` also needs `[qemu] allowed_dir`.
    /// A list, or one comma-separated string (`INGOT_ENABLED_HARDWARE_TYPES=ipmi,manual`).
    #[serde(default, deserialize_with = "list_or_comma_separated")]
    pub enabled_hardware_types: Option<Vec<String>>,
    /// `[qemu]`: the directory the `qemu` hardware type's files must lie in.
    #[serde(default)]
    pub qemu: QemuSection,
    /// Largest virtual disk size `ingot image import` accepts, in bytes (default 2 TiB).
    pub max_image_virtual_size: Option<u64>,
    /// `[deploy]`: fast track (Ironic's `[deploy] fast_track`).
    #[serde(default)]
    pub deploy: DeploySection,
    /// `[tls]`: HTTPS for the operator API and, when there is a provisioning listener, for
    /// `/agent/v1/*` and `/images/*` on the provisioning side.
    #[serde(default)]
    pub tls: TlsSection,
    /// `[[flavors]]`: the machine sizes users request servers by (`/v1/ingot/servers`).
    #[serde(default)]
    pub flavors: Vec<crate::flavors::Flavor>,
}

/// `[qemu]` table.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct QemuSection {
    /// Every VM directory (QMP socket, the operator's `qemu.json` argv, `bootdev`) lies
    /// under it; the `qemu` type touches no file elsewhere.
    pub allowed_dir: Option<PathBuf>,
}

/// `[auth]` table.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    /// `[auth.users.NAME]` with `role` (`admin`, `member`, `reader`) and `project`; a user
    /// with no entry is an admin.
    #[serde(default)]
    pub users: crate::api::policy::Policies,
}

/// `[deploy]` table.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DeploySection {
    /// Hand work to an agent that is already running instead of booting it again
    /// (default false, as Ironic).
    pub fast_track: Option<bool>,
    /// How recent the agent's last heartbeat must be for fast track, seconds (default 300).
    pub fast_track_timeout_secs: Option<u64>,
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

/// `[tls]`, validated: one certificate for the operator API (always HTTPS when `[tls]` is
/// set) and the provisioning side's HTTPS listener (when there is a provisioning side).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// `[netboot] https_listen`, default `<server_ip>:8443` (or the plain listener's address
    /// on port 8443); `None` when nothing is configured on the provisioning side, so only the
    /// API is served (over HTTPS).
    pub provisioning_listen: Option<SocketAddr>,
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
    /// Have the agent of a discovered machine create a BMC user in-band (through
    /// `/dev/ipmi0`) and use it: the node gets the `ipmi` hardware type with those
    /// credentials and is managed (default false).
    pub enroll_bmc: Option<bool>,
    /// The BMC user `enroll_bmc` creates or resets (default `ingot`; at most 16 printable
    /// ASCII characters, IPMI's limit).
    pub enroll_bmc_user: Option<String>,
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
    /// Ironic's `conductor_group` of this conductor (default "").
    pub conductor_group: Option<String>,
    /// Heartbeat into the `conductors` table every this many seconds (default 3).
    pub heartbeat_interval_secs: Option<u64>,
    /// A conductor whose heartbeat is older than this is offline (default 10).
    pub heartbeat_timeout_secs: Option<u64>,
}

/// How the operator API authenticates (validated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthConfig {
    NoAuth,
    /// `http_basic` with this htpasswd file.
    HttpBasic(PathBuf),
}

/// Validated configuration used by `ingot serve`.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub api_listen: SocketAddr,
    pub auth: AuthConfig,
    /// Roles and projects of the users that have one.
    pub users: crate::api::policy::Policies,
    pub database: String,
    pub state_dir: PathBuf,
    pub conductor_name: String,
    pub max_body_bytes: usize,
    pub max_concurrent_deploys: usize,
    pub max_concurrent_cleanings: usize,
    pub power_sync_interval: Duration,
    pub callback_timeout: Duration,
    pub conductor_group: String,
    pub heartbeat_interval: Duration,
    pub heartbeat_timeout: Duration,
    /// `[netboot]` as given (DHCP/TFTP validated when `serve` starts them).
    pub netboot: NetbootSection,
    /// Provisioning-side HTTP listener (boot + agent API), if any.
    pub boot_http_listen: Option<SocketAddr>,
    pub agent_kernel: PathBuf,
    pub agent_initramfs: PathBuf,
    /// `[netboot] agent_kernel_args`, each checked by `netboot::ipxe::check_arg`.
    pub agent_kernel_args: Vec<String>,
    pub discovery: DiscoveryConfig,
    pub agent_heartbeat_timeout: Duration,
    /// `enabled_hardware_types`, checked against the known types.
    pub enabled_hardware_types: Vec<String>,
    /// `[qemu] allowed_dir` (required when `qemu` is enabled; resolved by `serve`).
    pub qemu_allowed_dir: Option<PathBuf>,
    /// `max_image_virtual_size`.
    pub max_image_virtual_size: u64,
    /// `[deploy] fast_track`: the agent's fast-track window (its last heartbeat must be this
    /// recent), or `None` when fast track is off.
    pub fast_track: Option<Duration>,
    /// `[tls]`: the API is served over HTTPS, and so are the agent API and images (on their
    /// own listener; the plain one then serves `/boot/*` only).
    pub tls: Option<TlsConfig>,
    /// `[[webhooks]]`, validated.
    pub webhooks: Vec<crate::webhooks::WebhookConfig>,
    /// `metrics_public`.
    pub metrics_public: bool,
    /// `[[flavors]]`, validated (unique names).
    pub flavors: Vec<crate::flavors::Flavor>,
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

/// PURE: the API's authentication from its settings. `noauth` on an address that is not
/// loopback is refused unless `allow_insecure_noauth` says so: anyone who can reach the
/// listener would control every machine.
pub fn auth_config(
    strategy: Option<&str>,
    user_file: Option<PathBuf>,
    allow_insecure_noauth: bool,
    api_listen: SocketAddr,
) -> anyhow::Result<AuthConfig> {
    match strategy.unwrap_or("noauth") {
        "noauth" => {
            if !api_listen.ip().is_loopback() && !allow_insecure_noauth {
                bail!(
                    "auth_strategy = \"noauth\" on {api_listen}, which is not a loopback address: \
                     anyone who reaches it controls every machine. Use auth_strategy = \"http_basic\" \
                     with http_basic_auth_user_file, or set allow_insecure_noauth = true"
                );
            }
            Ok(AuthConfig::NoAuth)
        }
        "http_basic" => match user_file {
            Some(f) => Ok(AuthConfig::HttpBasic(f)),
            None => bail!("auth_strategy = \"http_basic\" needs http_basic_auth_user_file"),
        },
        other => bail!("auth_strategy {other:?} is not one of noauth, http_basic"),
    }
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
        pick(&mut self.auth_strategy, flags.auth_strategy);
        pick(
            &mut self.http_basic_auth_user_file,
            flags.http_basic_auth_user_file,
        );
        pick(&mut self.allow_insecure_noauth, flags.allow_insecure_noauth);
        let (c, f) = (&mut self.conductor, flags.conductor);
        pick(&mut c.max_concurrent_deploys, f.max_concurrent_deploys);
        pick(&mut c.max_concurrent_cleanings, f.max_concurrent_cleanings);
        pick(&mut c.power_sync_interval_secs, f.power_sync_interval_secs);
        pick(&mut c.callback_timeout_secs, f.callback_timeout_secs);
        pick(&mut c.conductor_group, f.conductor_group);
        pick(&mut c.heartbeat_interval_secs, f.heartbeat_interval_secs);
        pick(&mut c.heartbeat_timeout_secs, f.heartbeat_timeout_secs);
        if flags.netboot != NetbootSection::default() {
            self.netboot = flags.netboot;
        }
        if flags.discovery != DiscoverySection::default() {
            self.discovery = flags.discovery;
        }
        if flags.auth != AuthSection::default() {
            self.auth = flags.auth;
        }
        pick(
            &mut self.enabled_hardware_types,
            flags.enabled_hardware_types,
        );
        pick(&mut self.qemu.allowed_dir, flags.qemu.allowed_dir);
        pick(
            &mut self.max_image_virtual_size,
            flags.max_image_virtual_size,
        );
        pick(&mut self.deploy.fast_track, flags.deploy.fast_track);
        pick(
            &mut self.deploy.fast_track_timeout_secs,
            flags.deploy.fast_track_timeout_secs,
        );
        pick(&mut self.log_format, flags.log_format);
        pick(&mut self.metrics_public, flags.metrics_public);
        pick(&mut self.tls.cert_file, flags.tls.cert_file);
        pick(&mut self.tls.key_file, flags.tls.key_file);
        if !flags.flavors.is_empty() {
            self.flavors = flags.flavors;
        }
        self
    }

    /// Fills defaults and validates.
    pub fn validate(self) -> anyhow::Result<Config> {
        let api_listen = self.api_listen.as_deref().unwrap_or("127.0.0.1:6385");
        let api_listen: SocketAddr = api_listen
            .parse()
            .with_context(|| format!("api_listen {api_listen:?} is not an ADDR:PORT"))?;
        let auth = auth_config(
            self.auth_strategy.as_deref(),
            self.http_basic_auth_user_file,
            self.allow_insecure_noauth.unwrap_or(false),
            api_listen,
        )?;
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
        let fast_track_timeout = match self.deploy.fast_track_timeout_secs {
            Some(0) => bail!("deploy.fast_track_timeout_secs must be at least 1"),
            Some(n) => Duration::from_secs(n),
            None => Duration::from_secs(300),
        };
        let fast_track = self
            .deploy
            .fast_track
            .unwrap_or(false)
            .then_some(fast_track_timeout);
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
            enroll_bmc: match (d.enroll_bmc.unwrap_or(false), d.enroll_bmc_user) {
                (false, _) => None,
                (true, user) => {
                    let user = user.unwrap_or_else(|| "ingot".to_owned());
                    proto::protocol::check_bmc_user(&user)
                        .map_err(|e| anyhow::anyhow!("discovery.enroll_bmc_user: {e}"))?;
                    Some(user)
                }
            },
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
                // No provisioning side configured: `[tls]` is the API's alone.
                let provisioning_listen =
                    match (netboot.https_listen, netboot.server_ip, boot_http_listen) {
                        (Some(a), _, _) => Some(a),
                        (None, Some(ip), _) => Some(SocketAddr::new(ip.into(), 8443)),
                        (None, None, Some(plain)) => Some(SocketAddr::new(plain.ip(), 8443)),
                        (None, None, None) => None,
                    };
                Some(TlsConfig {
                    cert_file,
                    key_file,
                    provisioning_listen,
                })
            }
            _ => bail!("[tls] needs both cert_file and key_file"),
        };
        let (default_kernel, default_initramfs) =
            default_agent_files(std::env::current_exe().ok().as_deref(), &|p: &Path| {
                p.is_file()
            });
        let agent_kernel = netboot.agent_kernel.clone().unwrap_or(default_kernel);
        let agent_initramfs = netboot.agent_initramfs.clone().unwrap_or(default_initramfs);
        let agent_kernel_args = netboot.agent_kernel_args.clone().unwrap_or_default();
        for arg in &agent_kernel_args {
            crate::netboot::ipxe::check_arg(arg)
                .map_err(|e| anyhow::anyhow!("[netboot] agent_kernel_args: {e}"))?;
        }
        let heartbeat_interval = Duration::from_secs(c.heartbeat_interval_secs.unwrap_or(3));
        let heartbeat_timeout = Duration::from_secs(c.heartbeat_timeout_secs.unwrap_or(10));
        if heartbeat_interval.is_zero() || heartbeat_timeout <= heartbeat_interval {
            bail!(
                "[conductor] heartbeat_timeout_secs ({}) must be longer than \
                 heartbeat_interval_secs ({}), which must be at least 1",
                heartbeat_timeout.as_secs(),
                heartbeat_interval.as_secs()
            );
        }
        let positive = |v: Option<usize>, name: &str, default: usize| -> anyhow::Result<usize> {
            match v {
                Some(0) => bail!("conductor.{name} must be at least 1"),
                Some(n) => Ok(n),
                None => Ok(default),
            }
        };
        if !self.auth.users.is_empty() && auth == AuthConfig::NoAuth {
            bail!("[auth.users] gives users roles, which needs auth_strategy = \"http_basic\"");
        }
        let (enabled_hardware_types, qemu_allowed_dir) =
            hardware_types(self.enabled_hardware_types, self.qemu)?;
        if discovery.enroll_bmc.is_some() && !enabled_hardware_types.iter().any(|t| t == "ipmi") {
            bail!(
                "discovery.enroll_bmc gives nodes the ipmi hardware type, which is not in enabled_hardware_types"
            );
        }
        if discovery.enabled && !enabled_hardware_types.contains(&discovery.default_driver) {
            bail!(
                "discovery.default_driver {:?} is not in enabled_hardware_types",
                discovery.default_driver
            );
        }
        crate::flavors::validate(&self.flavors)?;
        Ok(Config {
            flavors: self.flavors,
            api_listen,
            auth,
            users: self.auth.users,
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
            conductor_group: c.conductor_group.clone().unwrap_or_default(),
            heartbeat_interval,
            heartbeat_timeout,
            netboot,
            boot_http_listen,
            agent_kernel,
            agent_initramfs,
            agent_kernel_args,
            discovery,
            agent_heartbeat_timeout: Duration::from_secs(d.heartbeat_timeout_secs.unwrap_or(30)),
            enabled_hardware_types,
            qemu_allowed_dir,
            max_image_virtual_size: match self.max_image_virtual_size {
                Some(0) => bail!("max_image_virtual_size must be at least 1 byte"),
                Some(n) => n,
                None => crate::images::inspect::DEFAULT_MAX_VIRTUAL_SIZE,
            },
            fast_track,
            tls,
            metrics_public: self.metrics_public.unwrap_or(false),
            webhooks: self
                .webhooks
                .iter()
                .enumerate()
                .map(|(n, w)| w.validate(n))
                .collect::<anyhow::Result<_>>()?,
        })
    }
}

/// Where the agent kernel and initramfs are when `[netboot] agent_kernel`/`agent_initramfs`
/// are not set: beside an installed `ingot` (`<prefix>/lib/ingot/agent/` for
/// `<prefix>/bin/ingot`: the Debian package's `/usr/lib/ingot/agent/`) when the kernel is
/// there, else the development build's `target/initramfs/qemu/` (relative to the working
/// directory, where `cargo xtask initramfs` puts them).
pub fn default_agent_files(
    exe: Option<&Path>,
    exists: &dyn Fn(&Path) -> bool,
) -> (PathBuf, PathBuf) {
    let installed = exe
        .and_then(Path::parent)
        .filter(|bin| bin.file_name().is_some_and(|n| n == "bin"))
        .and_then(Path::parent)
        .map(|prefix| prefix.join("lib/ingot/agent"))
        .filter(|dir| exists(&dir.join(AGENT_KERNEL_FILE)));
    let dir = installed.unwrap_or_else(|| PathBuf::from("target/initramfs/qemu"));
    (dir.join(AGENT_KERNEL_FILE), dir.join(AGENT_INITRAMFS_FILE))
}

/// File names of the agent kernel and initramfs (`cargo xtask initramfs`, the package).
pub const AGENT_KERNEL_FILE: &str = "vmlinuz";
pub const AGENT_INITRAMFS_FILE: &str = "initramfs.cpio.zst";

/// A list of strings, or one string of comma-separated items (as Ironic's option and an
/// environment variable are usually written).
fn list_or_comma_separated<'de, D>(d: D) -> Result<Option<Vec<String>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ListOrString {
        List(Vec<String>),
        Csv(String),
    }
    Ok(Some(match ListOrString::deserialize(d)? {
        ListOrString::List(v) => v,
        ListOrString::Csv(s) => s
            .split(',')
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
            .collect(),
    }))
}

/// `enabled_hardware_types` (default [`DEFAULT_HARDWARE_TYPES`]) checked against the known
/// types, and `[qemu] allowed_dir`, required (absolute) when `qemu` is enabled.
fn hardware_types(
    enabled: Option<Vec<String>>,
    qemu: QemuSection,
) -> anyhow::Result<(Vec<String>, Option<PathBuf>)> {
    let enabled = enabled
        .unwrap_or_else(|| DEFAULT_HARDWARE_TYPES.map(str::to_owned).to_vec())
        .into_iter()
        .map(|t| t.trim().to_owned())
        .collect::<Vec<_>>();
    if enabled.is_empty() {
        bail!("enabled_hardware_types is empty: enable at least one hardware type");
    }
    for t in &enabled {
        if !KNOWN_HARDWARE_TYPES.contains(&t.as_str()) {
            bail!(
                "enabled_hardware_types: unknown hardware type {t:?} (known: {})",
                KNOWN_HARDWARE_TYPES.join(", ")
            );
        }
    }
    let dir = qemu.allowed_dir;
    if enabled.iter().any(|t| t == "qemu") {
        match &dir {
            None => bail!(
                "enabled_hardware_types has qemu but [qemu] allowed_dir is not set: the qemu \
                 type only works on VM directories under it"
            ),
            Some(d) if !d.is_absolute() => {
                bail!(
                    "[qemu] allowed_dir {} must be an absolute path",
                    d.display()
                )
            }
            Some(_) => {}
        }
    }
    Ok((enabled, dir))
}

#[cfg(test)]
mod tests;

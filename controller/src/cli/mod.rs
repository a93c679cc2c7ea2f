//! The `ingot` command line: `ingot serve` and the operator commands that talk to the API.

pub mod client;
pub mod docs;
pub mod image;
pub mod secrets;
pub mod server;
pub mod table;
pub mod watch;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{ConductorSection, DeploySection, FileConfig, QemuSection};

/// Ingot bare-metal provisioning controller.
#[derive(Debug, Parser)]
#[command(name = "ingot", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the shell completion script for SHELL (bash, zsh, fish, elvish, powershell).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the man pages (`ingot.1` and one per subcommand) into DIR.
    #[command(hide = true)]
    Manpages { dir: PathBuf },
    /// Run the controller: operator API, conductor, agent API and, with `[netboot]`, DHCP,
    /// TFTP and the HTTP boot listener.
    Serve(ServeArgs),
    /// Inspect nodes through the API.
    Node {
        #[command(flatten)]
        api: ApiArgs,
        #[command(subcommand)]
        command: NodeCommand,
    },
    /// Request machines by flavor, image and SSH key, and follow them (`/v1/ingot/servers`).
    Server {
        #[command(flatten)]
        api: ApiArgs,
        #[command(subcommand)]
        command: server::ServerCommand,
    },
    /// Manage the OS images `ingot serve` hands to agents (stored under the state dir).
    Image {
        #[command(flatten)]
        store: image::StoreArgs,
        #[command(subcommand)]
        command: image::ImageCommand,
    },
    /// The key of the BMC secrets at rest (stored under the state dir).
    Secrets {
        #[command(flatten)]
        store: image::StoreArgs,
        #[command(subcommand)]
        command: secrets::SecretsCommand,
    },
    /// TLS certificates for the operator API and the provisioning listener.
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Create a private CA and a server certificate for the API's and the provisioning
    /// listener's addresses; prints the CA fingerprint agents pin and the `[tls]` lines to
    /// paste.
    Init {
        /// Directory for ca.pem, ca.key, server.pem, server.key (keys 0600).
        #[arg(long, default_value = "/var/lib/ingot/tls")]
        dir: PathBuf,
        /// An address clients dial (repeatable): the `[netboot] server_ip` and the
        /// `api_listen` address, e.g. `--ip 172.31.250.1 --ip 127.0.0.1`.
        #[arg(long = "ip")]
        ips: Vec<std::net::IpAddr>,
        /// A DNS name of the listener (repeatable).
        #[arg(long = "dns")]
        dns: Vec<String>,
    },
}

/// `ingot certs init`: what it prints.
pub fn certs_init(
    dir: &std::path::Path,
    ips: &[std::net::IpAddr],
    dns: &[String],
) -> anyhow::Result<String> {
    let issued = crate::certs::init(dir, ips, dns)?;
    Ok(format!(
        "CA certificate: {ca}\nCA fingerprint: {}\n\nAdd to the config file:\n\n{}\n\
         API clients trust the CA with `ingot --cacert {ca}` (or INGOT_CACERT) and\n\
         `baremetal --os-cacert {ca}` (or OS_CACERT).\n",
        issued.ca_fingerprint,
        crate::certs::config_lines(&issued),
        ca = issued.ca_cert.display(),
    ))
}

/// Flags of `ingot serve`; each overrides the config file key of the same name.
#[derive(Debug, Args, Default)]
pub struct ServeArgs {
    /// Config file (TOML). Default: /etc/ingot/ingot.toml when it exists.
    #[arg(long, env = "INGOT_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address of the operator API (Ironic v1 compatible). Default 127.0.0.1:6385.
    #[arg(long)]
    pub api_listen: Option<String>,
    /// Store URL: sqlite:///path/ingot.db (default, under the state dir) or postgres://...
    #[arg(long)]
    pub database: Option<String>,
    /// Directory for the embedded database and other state.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Name of this conductor (shown in reservations and driver hosts). Default: hostname.
    #[arg(long)]
    pub conductor_name: Option<String>,
    /// Cap on deploys running at once; more wait in a queue.
    #[arg(long)]
    pub max_concurrent_deploys: Option<usize>,
    /// Cap on cleanings running at once; more wait in a queue.
    #[arg(long)]
    pub max_concurrent_cleanings: Option<usize>,
    /// API authentication: noauth (default; loopback only) or http_basic.
    #[arg(long)]
    pub auth_strategy: Option<String>,
    /// htpasswd file (bcrypt entries, `htpasswd -B`) for http_basic.
    #[arg(long)]
    pub http_basic_auth_user_file: Option<PathBuf>,
    /// Hardware types to offer, comma-separated (default ipmi,redfish,manual,fake-hardware;
    /// qemu also needs --qemu-allowed-dir).
    #[arg(long, value_delimiter = ',')]
    pub enabled_hardware_types: Option<Vec<String>>,
    /// `[qemu] allowed_dir`: the directory every qemu VM's files lie in.
    #[arg(long)]
    pub qemu_allowed_dir: Option<PathBuf>,
    /// Hand work to an agent already running on the node (`[deploy] fast_track`).
    #[arg(long)]
    pub fast_track: Option<bool>,
    /// How recent the agent's last heartbeat must be for fast track, seconds.
    #[arg(long)]
    pub fast_track_timeout_secs: Option<u64>,
    /// Log lines as `text` (default) or `json` (one object per line).
    #[arg(long, value_enum)]
    pub log_format: Option<crate::config::LogFormat>,
    /// `[tls] cert_file`: serve the API, the agent API and images over HTTPS with this
    /// certificate.
    #[arg(long)]
    pub tls_cert_file: Option<PathBuf>,
    /// `[tls] key_file`: the certificate's private key.
    #[arg(long)]
    pub tls_key_file: Option<PathBuf>,
}

impl ServeArgs {
    /// The flags as a config layer.
    pub fn as_layer(&self) -> FileConfig {
        FileConfig {
            api_listen: self.api_listen.clone(),
            database: self.database.clone(),
            state_dir: self.state_dir.clone(),
            conductor_name: self.conductor_name.clone(),
            max_body_bytes: None,
            auth_strategy: self.auth_strategy.clone(),
            http_basic_auth_user_file: self.http_basic_auth_user_file.clone(),
            conductor: ConductorSection {
                max_concurrent_deploys: self.max_concurrent_deploys,
                max_concurrent_cleanings: self.max_concurrent_cleanings,
                ..Default::default()
            },
            enabled_hardware_types: self.enabled_hardware_types.clone(),
            qemu: QemuSection {
                allowed_dir: self.qemu_allowed_dir.clone(),
            },
            deploy: DeploySection {
                fast_track: self.fast_track,
                fast_track_timeout_secs: self.fast_track_timeout_secs,
            },
            log_format: self.log_format,
            tls: crate::config::TlsSection {
                cert_file: self.tls_cert_file.clone(),
                key_file: self.tls_key_file.clone(),
            },
            ..Default::default()
        }
    }
}

/// The API's address when neither `--url`, `INGOT_URL` nor `OS_ENDPOINT` says.
pub const DEFAULT_API_URL: &str = "http://127.0.0.1:6385";

/// Where the API is.
#[derive(Debug, Args)]
pub struct ApiArgs {
    /// Base URL of the Ingot (or Ironic) API, http:// or https:// (else `OS_ENDPOINT`, else
    /// http://127.0.0.1:6385).
    #[arg(long, global = true, env = "INGOT_URL")]
    pub url: Option<String>,
    /// CA certificate (PEM) to trust for an https:// API instead of the system's (else
    /// `OS_CACERT`); `ingot certs init` writes it as ca.pem.
    #[arg(long, global = true, env = "INGOT_CACERT")]
    pub cacert: Option<PathBuf>,
    /// User for an API with http_basic authentication (else `OS_USERNAME`).
    #[arg(long, global = true, env = "INGOT_USERNAME")]
    pub username: Option<String>,
    /// Password for an API with http_basic authentication (else `OS_PASSWORD`).
    #[arg(long, global = true, env = "INGOT_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
}

impl ApiArgs {
    /// The API's base URL: the flag / `INGOT_URL`, else the `OS_ENDPOINT` the `baremetal`
    /// CLI reads, else [`DEFAULT_API_URL`].
    pub fn url(&self) -> String {
        self.url
            .clone()
            .or_else(|| std::env::var("OS_ENDPOINT").ok().filter(|u| !u.is_empty()))
            .unwrap_or_else(|| DEFAULT_API_URL.to_owned())
    }

    /// The CA file to trust: the flag / `INGOT_CACERT`, else `OS_CACERT`.
    pub fn cacert(&self) -> Option<PathBuf> {
        self.cacert.clone().or_else(|| {
            std::env::var_os("OS_CACERT")
                .filter(|p| !p.is_empty())
                .map(PathBuf::from)
        })
    }

    /// The client these settings describe.
    pub fn client(&self) -> anyhow::Result<client::ApiClient> {
        client::ApiClient::connect(&self.url(), self.credentials(), self.cacert().as_deref())
    }

    /// The credentials to send: the flags / `INGOT_*`, else the `OS_*` variables the
    /// `baremetal` CLI reads.
    pub fn credentials(&self) -> Option<(String, String)> {
        let user = self
            .username
            .clone()
            .or_else(|| std::env::var("OS_USERNAME").ok())?;
        let password = self
            .password
            .clone()
            .or_else(|| std::env::var("OS_PASSWORD").ok())
            .unwrap_or_default();
        Some((user, password))
    }
}

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// List nodes as a table.
    List {
        /// Show more columns (driver, resource class, power target, last error).
        #[arg(long)]
        long: bool,
        /// Only nodes in this provision state.
        #[arg(long)]
        provision_state: Option<String>,
        /// Print the API's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one node (by UUID or name).
    Show {
        node: String,
        /// Print the API's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Follow a node until it rests, with the agent's progress (phase, percent, bytes, MB/s,
    /// ETA). Exits 0 in a good state (active, available, manageable, ...), 1 in a failed
    /// one (printing last_error).
    Watch {
        node: String,
        /// Seconds between polls.
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
    },
}

//! How the rack's clients reach its API, as on a real network: `auth_strategy =
//! "http_basic"` with an htpasswd file holding one bcrypt entry (a fresh random password per
//! rack), and the API over HTTPS with the certificate `ingot certs init` issued for the
//! bridge and the loopback (the same `[tls]` serves the agent API and the images).
//!
//! Every client the rack runs gets the user, the password and the CA: the `baremetal` CLI
//! through `OS_*` variables, `ingot node ...` through `INGOT_*` ones, curl through a config
//! file (`-K`), so the password is never on a command line, in an error or in the output.
//! `openrc` in the rack directory (0600) holds the same settings for an operator's shell.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

/// The operator API inside the lab namespace (of the rack's first controller).
pub const API: &str = "https://127.0.0.1:6385";
/// The user of the rack's API.
pub const USER: &str = "operator";
/// bcrypt cost of the htpasswd entry (`htpasswd -B`'s default).
const BCRYPT_COST: u32 = 5;

/// The rack's API credentials and CA, and the files that hand them to clients.
#[derive(Clone)]
pub struct ApiAccess {
    password: String,
    /// The API the clients use: [`API`] unless a test moved them to another replica.
    api: String,
    /// `ca.pem` of `ingot certs init`.
    pub ca: PathBuf,
    /// `server.pem` and `server.key` for `[tls]`.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The htpasswd file `ingot serve` reads.
    pub htpasswd: PathBuf,
    /// curl's config file: the user and the CA.
    curl_config: PathBuf,
    /// `export OS_...` and `INGOT_...` lines for an operator's shell.
    pub openrc: PathBuf,
}

impl std::fmt::Debug for ApiAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiAccess")
            .field("user", &USER)
            .field("ca", &self.ca)
            .field("openrc", &self.openrc)
            .finish_non_exhaustive()
    }
}

impl ApiAccess {
    /// Issues the certificates (`ingot certs init` with `ingot`) and writes the htpasswd,
    /// curl and openrc files under `dir`.
    pub fn create(ingot: &Path, dir: &Path) -> anyhow::Result<Self> {
        let tls = dir.join("tls");
        crate::tls::certs_init(ingot, &tls)?;
        let password = uuid::Uuid::new_v4().simple().to_string();
        let access = Self {
            ca: tls.join("ca.pem"),
            cert: tls.join("server.pem"),
            key: tls.join("server.key"),
            htpasswd: dir.join("htpasswd"),
            curl_config: dir.join("curl.conf"),
            openrc: dir.join("openrc"),
            api: API.to_owned(),
            password,
        };
        let hash = bcrypt::hash(&access.password, BCRYPT_COST).context("hashing the password")?;
        write_private(&access.htpasswd, &format!("{USER}:{hash}\n"))?;
        write_private(
            &access.curl_config,
            &format!(
                "user = \"{USER}:{}\"\ncacert = \"{}\"\n",
                access.password,
                access.ca.display()
            ),
        )?;
        write_private(
            &access.openrc,
            &format!(
                "export OS_ENDPOINT={API} OS_AUTH_TYPE=http_basic OS_USERNAME={USER} \
                 OS_PASSWORD={pw} OS_CACERT={ca}\n\
                 export INGOT_URL={API} INGOT_USERNAME={USER} INGOT_PASSWORD={pw} \
                 INGOT_CACERT={ca}\n",
                pw = access.password,
                ca = access.ca.display()
            ),
        )?;
        Ok(access)
    }

    /// The config lines: top-level keys (`top`) and the `[tls]` table (`tables`).
    pub fn config(&self) -> (String, String) {
        (
            format!(
                "auth_strategy = \"http_basic\"\nhttp_basic_auth_user_file = \"{}\"\n",
                self.htpasswd.display()
            ),
            format!(
                "[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
                self.cert.display(),
                self.key.display()
            ),
        )
    }

    /// The API's base URL the clients use.
    pub fn api(&self) -> &str {
        &self.api
    }

    /// Points every client at another controller's API (a replica, when the first one is
    /// dead); `openrc` keeps naming [`API`].
    pub fn set_api(&mut self, url: &str) {
        url.clone_into(&mut self.api);
    }

    /// The `baremetal` CLI's environment: endpoint, http_basic, user, password, CA.
    pub fn baremetal_env(&self, cmd: &mut Command) {
        cmd.env("OS_ENDPOINT", &self.api)
            .env("OS_AUTH_TYPE", "http_basic")
            .env("OS_USERNAME", USER)
            .env("OS_PASSWORD", &self.password)
            .env("OS_CACERT", &self.ca)
            .env_remove("OS_CLOUD")
            .env_remove("OS_BAREMETAL_API_VERSION");
    }

    /// `ingot node ...`'s environment.
    pub fn ingot_env(&self, cmd: &mut Command) {
        cmd.env("INGOT_URL", &self.api)
            .env("INGOT_USERNAME", USER)
            .env("INGOT_PASSWORD", &self.password)
            .env("INGOT_CACERT", &self.ca);
    }

    /// The lab console test's environment (`tests/ui/request-server.mjs`): the API's URL,
    /// the user and password, and the server certificate chromium pins.
    pub fn browser_env(&self, cmd: &mut Command) {
        cmd.env("INGOT_URL", &self.api)
            .env("ADMIN_USER", USER)
            .env("ADMIN_PASSWORD", &self.password)
            .env("SERVER_CERT", &self.cert);
    }

    /// curl's arguments for the API: the config file with the user and the CA.
    pub fn curl_args(&self) -> [&std::ffi::OsStr; 2] {
        ["-K".as_ref(), self.curl_config.as_os_str()]
    }

    /// Whether `text` shows the password (for tests that check logs and answers).
    pub fn leaks_password(&self, text: &str) -> bool {
        text.contains(&self.password)
    }
}

/// Creates `path` 0600 (replacing nothing) with `text`.
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

//! `ingot server create|list|show|delete`: request a machine by flavor, image and SSH key
//! through `/v1/ingot/servers` (the API client, `--url`/`--cacert`/credentials as every API
//! command), and follow it to `active` (`--wait`), printing where to log in.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Subcommand;
use serde_json::{Value, json};

use super::client::{ApiClient, cell};
use super::table;

#[derive(Debug, Subcommand)]
pub enum ServerCommand {
    /// Request a machine: a node that meets the flavor gets the image and a config drive
    /// with your SSH keys (and user data).
    Create {
        /// Flavor name (`GET /v1/ingot/flavors`, the operator's `[[flavors]]`).
        #[arg(long)]
        flavor: String,
        /// Stored image name (`ingot image list`), e.g. debian-12.
        #[arg(long)]
        image: String,
        /// OpenSSH public key file (`~/.ssh/id_ed25519.pub`); repeatable; every key line
        /// of each file is installed.
        #[arg(long = "key", required = true)]
        keys: Vec<PathBuf>,
        /// cloud-init user data file (`#cloud-config ...`).
        #[arg(long)]
        user_data: Option<PathBuf>,
        /// Server name (also the host name).
        #[arg(long)]
        name: Option<String>,
        /// Follow the server until it is active (or failed) and print its address.
        #[arg(long)]
        wait: bool,
        /// Longest wait with --wait, seconds.
        #[arg(long, default_value_t = 3600)]
        timeout: u64,
        /// Print the API's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// List your servers.
    List {
        /// Print the API's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one server (UUID or name).
    Show {
        server: String,
        /// Print the API's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Delete a server: its machine is undeployed (wiped) and released.
    Delete { server: String },
}

/// What a command printed and whether it ended well (a `--wait` that ends in `error` does
/// not).
pub struct Outcome {
    pub output: String,
    pub ok: bool,
}

/// Runs one `ingot server` command.
pub async fn run(api: &ApiClient, command: ServerCommand) -> anyhow::Result<Outcome> {
    let ok = |output: String| Ok(Outcome { output, ok: true });
    match command {
        ServerCommand::Create {
            flavor,
            image,
            keys,
            user_data,
            name,
            wait,
            timeout,
            json,
        } => {
            let mut ssh_keys = Vec::new();
            for file in &keys {
                ssh_keys.extend(read_keys(file)?);
            }
            let mut body = json!({"flavor": flavor, "image": image, "ssh_keys": ssh_keys});
            if let Some(file) = user_data {
                body["user_data"] = std::fs::read_to_string(&file)
                    .with_context(|| format!("reading user data {}", file.display()))?
                    .into();
            }
            if let Some(n) = name {
                body["name"] = n.into();
            }
            let created = api.post("/v1/ingot/servers", &body).await?;
            if !wait {
                return ok(render(&created, json)?);
            }
            let uuid = created["uuid"]
                .as_str()
                .context("the API answer has no server uuid")?
                .to_owned();
            eprintln!("server {uuid}: {}", cell(created.get("state")));
            let end = follow(api, &uuid, Duration::from_secs(timeout)).await?;
            let good = end["state"] == "active";
            let mut output = render(&end, json)?;
            if good && !json {
                output.push_str(&login_hint(&end));
            }
            Ok(Outcome { output, ok: good })
        }
        ServerCommand::List { json } => {
            let body = api.get("/v1/ingot/servers").await?;
            if json {
                return ok(serde_json::to_string_pretty(&body)? + "\n");
            }
            let servers = body
                .get("servers")
                .and_then(Value::as_array)
                .context("the API answer has no server list")?;
            ok(render_list(servers))
        }
        ServerCommand::Show { server, json } => {
            let body = api.get(&format!("/v1/ingot/servers/{server}")).await?;
            ok(render(&body, json)?)
        }
        ServerCommand::Delete { server } => {
            api.delete(&format!("/v1/ingot/servers/{server}")).await?;
            ok(format!(
                "server {server}: delete accepted (the machine is undeployed and wiped)\n"
            ))
        }
    }
}

/// The key lines of a public key file (blank lines and `#` comments skipped); the API
/// checks each.
fn read_keys(file: &Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("reading SSH public key {}", file.display()))?;
    let keys: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect();
    if keys.is_empty() {
        bail!("{}: no SSH public key in it", file.display());
    }
    Ok(keys)
}

/// Polls the server until it rests (`active` or `error`), printing each state change on
/// stderr; `error` is returned too (the caller decides), a timeout is an error.
async fn follow(api: &ApiClient, uuid: &str, timeout: Duration) -> anyhow::Result<Value> {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    loop {
        let s = api.get(&format!("/v1/ingot/servers/{uuid}")).await?;
        let shown = format!(
            "{} {}",
            cell(s.get("state")),
            cell(s.get("provision_state"))
        );
        if shown != last {
            eprintln!(
                "server {uuid}: {} (node {}: {})",
                cell(s.get("state")),
                cell(s.get("node_name")).if_empty(cell(s.get("node_uuid"))),
                cell(s.get("provision_state"))
            );
            last = shown;
        }
        if matches!(s["state"].as_str(), Some("active" | "error")) {
            return Ok(s);
        }
        if Instant::now() > deadline {
            bail!(
                "server {uuid} is still {} after {} s",
                cell(s.get("state")),
                timeout.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

trait IfEmpty {
    fn if_empty(self, other: String) -> String;
}

impl IfEmpty for String {
    fn if_empty(self, other: String) -> String {
        if self.is_empty() { other } else { self }
    }
}

/// `ssh <user>@ADDRESS` lines for an active server.
fn login_hint(s: &Value) -> String {
    let addrs: Vec<&str> = s["addresses"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    match addrs.first() {
        Some(a) => format!("log in: ssh USER@{a} (the image's cloud-init user, e.g. debian)\n"),
        None => {
            "no address is leased to the machine yet (see `ingot server show` later)\n".to_owned()
        }
    }
}

fn render(s: &Value, json: bool) -> anyhow::Result<String> {
    if json {
        return Ok(serde_json::to_string_pretty(s)? + "\n");
    }
    const FIELDS: [&str; 13] = [
        "uuid",
        "name",
        "state",
        "flavor",
        "image",
        "addresses",
        "node_uuid",
        "node_name",
        "provision_state",
        "last_error",
        "owner",
        "created_at",
        "updated_at",
    ];
    let rows: Vec<Vec<String>> = FIELDS
        .iter()
        .map(|f| vec![(*f).to_owned(), field(s, f)])
        .collect();
    Ok(table::render(&["field", "value"], &rows))
}

fn field(s: &Value, key: &str) -> String {
    match s.get(key) {
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| cell(Some(v)))
            .collect::<Vec<_>>()
            .join(", "),
        other => cell(other),
    }
}

/// PURE: the `server list` table.
pub fn render_list(servers: &[Value]) -> String {
    let rows: Vec<Vec<String>> = servers
        .iter()
        .map(|s| {
            [
                "uuid",
                "name",
                "state",
                "flavor",
                "image",
                "addresses",
                "node_name",
            ]
            .iter()
            .map(|k| field(s, k))
            .collect()
        })
        .collect();
    table::render(
        &[
            "uuid",
            "name",
            "state",
            "flavor",
            "image",
            "addresses",
            "node",
        ],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_and_key_files() {
        let s = json!({"uuid": "u1", "name": "web-1", "state": "active", "flavor": "small",
            "image": "debian-12", "addresses": ["172.31.250.100"], "node_name": "n1",
            "node_uuid": "n-u", "provision_state": "active", "last_error": null});
        let t = render_list(std::slice::from_ref(&s));
        assert!(
            t.starts_with("UUID  NAME   STATE   FLAVOR  IMAGE      ADDRESSES       NODE\n"),
            "{t}"
        );
        assert!(t.contains("u1    web-1  active  small   debian-12  172.31.250.100  n1"));
        let shown = render(&s, false).expect("render");
        assert!(
            shown.contains("addresses        172.31.250.100\n"),
            "{shown}"
        );
        assert_eq!(
            login_hint(&s),
            "log in: ssh USER@172.31.250.100 (the image's cloud-init user, e.g. debian)\n"
        );
        assert_eq!(
            login_hint(&json!({"addresses": []})),
            "no address is leased to the machine yet (see `ingot server show` later)\n"
        );

        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("keys.pub");
        std::fs::write(&f, "# mine\nssh-ed25519 AAAA a\n\nssh-rsa BBBB b\n").expect("write");
        assert_eq!(
            read_keys(&f).expect("keys"),
            vec!["ssh-ed25519 AAAA a", "ssh-rsa BBBB b"]
        );
        std::fs::write(&f, "\n# nothing\n").expect("write");
        assert!(read_keys(&f).is_err());
    }
}

//! More `ingot serve` processes in one rack, sharing its PostgreSQL database: the first
//! controller runs the boot network, replicas the API and the provisioning side.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use anyhow::Context;

use super::Rack;
use crate::vm::tail;

/// What one controller of the rack is: the first runs the boot network (DHCP, TFTP, the
/// iPXE scripts), replicas only the API and the provisioning side (agents, images).
pub(super) struct Role<'a> {
    pub(super) name: Option<&'a str>,
    pub(super) api_listen: String,
    pub(super) state_dir: &'a Path,
    /// `None`: `mode = "full"` on the bridge; `Some((http, https))`: `mode = "off"` with
    /// the provisioning listeners on these ports of the bridge address.
    pub(super) replica_ports: Option<(u16, u16)>,
}

/// A further `ingot serve` of the rack on the same database (see [`Rack::start_replica`]).
#[derive(Debug)]
pub(super) struct Replica {
    pub(super) name: String,
    pub(super) child: Option<Child>,
    pub(super) config: PathBuf,
    pub(super) log: PathBuf,
}

impl Rack {
    /// Starts another `ingot serve` named `name` on the rack's database (which must be
    /// PostgreSQL, `RackOptions::database`): its API on `127.0.0.1:api_port`, its agent API
    /// and images on the bridge's `http_port` / `https_port` (the same certificate), no boot
    /// network (the first controller's DHCP and iPXE scripts name every live replica's agent
    /// URL). Its state directory is its own, with the first controller's keys (image URL
    /// signing, secrets) and a link to its images. Waits for its API; returns its URL.
    pub fn start_replica(
        &mut self,
        name: &str,
        api_port: u16,
        http_port: u16,
        https_port: u16,
    ) -> anyhow::Result<String> {
        anyhow::ensure!(
            self.opts
                .database
                .as_deref()
                .is_some_and(|d| d.starts_with("postgres")),
            "replicas share a PostgreSQL database; the rack has none"
        );
        let state = self.dir.path.join(format!("replica-{name}"));
        std::fs::create_dir_all(&state)?;
        for key in ["image-url.key", "secrets.key"] {
            std::fs::copy(self.dir.path.join(key), state.join(key))
                .with_context(|| format!("copying {key} for replica {name}"))?;
        }
        std::os::unix::fs::symlink(&self.images, state.join("images"))?;
        let role = Role {
            name: Some(name),
            api_listen: format!("127.0.0.1:{api_port}"),
            state_dir: &state,
            replica_ports: Some((http_port, https_port)),
        };
        let config = state.join("ingot.toml");
        std::fs::write(&config, self.config_toml(&role))?;
        let mut replica = Replica {
            name: name.to_owned(),
            child: None,
            config,
            log: state.join("ingot.log"),
        };
        std::fs::File::create(&replica.log)?;
        replica.child = Some(self.spawn_serve(&replica.config, &replica.log)?);
        self.replicas.push(replica);
        let api = format!("https://127.0.0.1:{api_port}");
        crate::wait::until(
            Duration::from_secs(30),
            Duration::from_millis(100),
            &format!("replica {name}'s API"),
            || Ok(self.answers(&format!("{api}/v1"))?.then_some(())),
        )
        .with_context(|| format!("replica {name} log:\n{}", tail(&self.replica_log(name), 30)))?;
        Ok(api)
    }

    /// A replica's log so far (empty for an unknown name).
    pub fn replica_log(&self, name: &str) -> String {
        self.replicas
            .iter()
            .find(|r| r.name == name)
            .and_then(|r| std::fs::read_to_string(&r.log).ok())
            .unwrap_or_default()
    }
}

//! HTTP boot endpoints on the provisioning-side listener: `/boot/ipxe` renders the iPXE
//! script from the machine's state, `/boot/vmlinuz` and `/boot/initramfs.cpio.zst` serve
//! the agent kernel and initramfs (with `Range` support). [`StoreBootPolicy`] answers the
//! DHCP server's "may this machine network-boot?" from the same state, and
//! [`StoreLeaseStore`] keeps its leases in the database.

mod leases;

pub use leases::{StoreLeaseStore, lease_write};

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use tower_http::services::ServeFile;
use uuid::Uuid;

use crate::discovery::Discovery;
use crate::machine::ProvisionState;
use crate::netboot::dhcp::{BootPolicy, BootTarget};
use crate::netboot::ipxe::{self, AgentBoot, BootPlan};
use crate::netboot::{MacAddr, Platform};
use crate::store::{Store, StoreError};

/// Path of the agent kernel.
pub const PATH_KERNEL: &str = "/boot/vmlinuz";
/// Path of the agent initramfs.
pub const PATH_INITRAMFS: &str = "/boot/initramfs.cpio.zst";

/// What the machine should boot, from its node's state (`None`: unknown machine).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Boot {
    Agent,
    LocalDisk,
    Nothing,
}

/// PURE: the boot decision for a known node's provision state, or an unknown machine.
///
/// The agent boots exactly where its lookup would be answered
/// ([`ProvisionState::allows_agent_lookup`], the one list of such states): an agent booted
/// anywhere else could only be refused, and an agent that can look up must be bootable.
/// `active` boots its disk; an unknown machine boots the agent only when discovery can
/// enroll it; a state that does not parse boots nothing.
pub fn decide(provision_state: Option<&str>, discovery_enabled: bool, fast_track: bool) -> Boot {
    let state = match provision_state {
        None if discovery_enabled => return Boot::Agent,
        None => return Boot::Nothing,
        Some(s) => match s.parse::<ProvisionState>() {
            Ok(state) => state,
            Err(_) => return Boot::Nothing,
        },
    };
    if state == ProvisionState::Active {
        Boot::LocalDisk
    } else if state.allows_agent_lookup(fast_track) {
        Boot::Agent
    } else {
        Boot::Nothing
    }
}

/// Settings of the boot endpoints.
#[derive(Debug, Clone)]
pub struct BootHttpConfig {
    /// Base URL of this listener as machines reach it (an IP literal), e.g.
    /// `http://192.0.2.1:8080`; the agent's `ingot.url`.
    pub base_url: String,
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    /// `console=` value.
    pub console: Option<String>,
    pub extra_args: Vec<String>,
    /// The agent's `ingot.url` when it is not `base_url`: the HTTPS listener when `[tls]`
    /// is on (iPXE fetches kernel and initramfs over plain HTTP, the agent talks HTTPS).
    pub agent_url: Option<String>,
    /// HEX of `ingot.ca=sha256:HEX`: the CA (SHA-256 of its DER) the agent pins.
    pub ca_sha256: Option<String>,
}

/// State of the boot endpoints.
#[derive(Debug, Clone)]
pub struct BootHttpState {
    pub store: Arc<dyn Store>,
    pub discovery: Arc<Discovery>,
    pub config: Arc<BootHttpConfig>,
    /// `[deploy] fast_track`: the idle states boot the agent too (as its lookup is answered).
    pub fast_track: bool,
    /// Which conductor this is, to name the other live replicas' agent URLs in the script.
    pub replicas: Replicas,
}

/// This conductor among the replicas (`conductors` table).
#[derive(Debug, Clone)]
pub struct Replicas {
    /// `conductor_name`.
    pub me: String,
    /// `[conductor] heartbeat_timeout_secs`: older replicas are not handed out.
    pub heartbeat_timeout: std::time::Duration,
}

/// The kind of the `listen` entry of a conductor that holds its agents' URL.
pub const URL_KIND: &str = "url";

/// The most `ingot.url=` an agent accepts (`agent::cmdline`).
const MAX_AGENT_URLS: usize = 8;

/// PURE: the agent URLs of the other live replicas, for `ingot.url=` after this one's own:
/// registered as `url URL` in their `listen`, alive at `now`, none already named in
/// `already`, so that the agent gets at most [`MAX_AGENT_URLS`] in all (it refuses more).
pub fn replica_urls(
    conductors: &[crate::model::ConductorRecord],
    me: &Replicas,
    now: chrono::DateTime<chrono::Utc>,
    already: &[String],
) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for c in conductors {
        if c.hostname == me.me || !c.alive(now, me.heartbeat_timeout) {
            continue;
        }
        for entry in &c.listen {
            let Some(url) = entry
                .strip_prefix(URL_KIND)
                .and_then(|rest| rest.strip_prefix(' '))
                .map(|u| u.trim_end_matches('/').to_owned())
            else {
                continue;
            };
            if already.len() + out.len() >= MAX_AGENT_URLS {
                return out;
            }
            if !already.contains(&url) && !out.contains(&url) && ipxe::check_arg(&url).is_ok() {
                out.push(url);
            }
        }
    }
    out
}

/// The boot routes.
pub fn router(state: BootHttpState) -> Router {
    let kernel = ServeFile::new(&state.config.kernel);
    let initramfs = ServeFile::new(&state.config.initramfs);
    Router::new()
        .route("/boot/ipxe", get(script))
        .route_service(PATH_KERNEL, kernel)
        .route_service(PATH_INITRAMFS, initramfs)
        .with_state(state)
}

#[derive(Debug, Deserialize)]
struct ScriptQuery {
    mac: Option<String>,
    platform: Option<String>,
    #[allow(dead_code)]
    uuid: Option<String>,
}

/// The provision state of the node owning `mac`, if any.
async fn node_state(store: &dyn Store, mac: MacAddr) -> Result<Option<(Uuid, String)>, StoreError> {
    store.node_state_by_mac(&mac.to_string()).await
}

fn plan_for(
    cfg: &BootHttpConfig,
    boot: Boot,
    platform: Option<Platform>,
    replicas: &[String],
) -> Result<BootPlan, String> {
    Ok(match boot {
        Boot::Agent => {
            let base = cfg.base_url.trim_end_matches('/');
            let agent = cfg
                .agent_url
                .as_deref()
                .map_or(base, |u| u.trim_end_matches('/'));
            let mut a = AgentBoot::new(
                &format!("{base}{PATH_KERNEL}"),
                &format!("{base}{PATH_INITRAMFS}"),
                agent,
                cfg.ca_sha256.as_deref(),
            )
            .map_err(|e| e.to_string())?;
            if let Some(c) = &cfg.console {
                a = a.with_console(c).map_err(|e| e.to_string())?;
            }
            a = a
                .with_extra_args(&cfg.extra_args)
                .and_then(|a| a.with_extra_args(replicas.iter().map(|u| format!("ingot.url={u}"))))
                .map_err(|e| e.to_string())?;
            BootPlan::Agent(a)
        }
        Boot::LocalDisk => BootPlan::LocalDisk { platform },
        Boot::Nothing => BootPlan::Exit,
    })
}

async fn script(State(st): State<BootHttpState>, Query(q): Query<ScriptQuery>) -> Response {
    let platform = q.platform.as_deref().and_then(Platform::from_ipxe);
    let state = match q.mac.as_deref().map(str::parse::<MacAddr>) {
        Some(Ok(mac)) => match node_state(st.store.as_ref(), mac).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "boot script: store access failed");
                return (StatusCode::INTERNAL_SERVER_ERROR, "store access failed\n")
                    .into_response();
            }
        },
        Some(Err(e)) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
        None => return (StatusCode::BAD_REQUEST, "mac is required\n").into_response(),
    };
    let boot = decide(
        state.as_ref().map(|(_, s)| s.as_str()),
        st.discovery.config.enabled,
        st.fast_track,
    );
    tracing::info!(mac = ?q.mac, node = ?state.as_ref().map(|s| s.0), ?boot, "boot script");
    // The agent learns every live replica, so it can move on when its controller dies.
    let replicas = match boot {
        Boot::Agent => match st.store.list_conductors().await {
            Ok(all) => replica_urls(
                &all,
                &st.replicas,
                chrono::Utc::now(),
                &named_urls(&st.config),
            ),
            Err(e) => {
                tracing::warn!(error = %e, "boot script: the other replicas are unknown");
                Vec::new()
            }
        },
        _ => Vec::new(),
    };
    match plan_for(&st.config, boot, platform, &replicas) {
        Ok(plan) => (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            ipxe::render(&plan),
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "boot script: bad agent boot configuration");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "bad boot configuration\n",
            )
                .into_response()
        }
    }
}

/// The agent URLs the script names already: this replica's and any `ingot.url=` of
/// `[netboot] agent_kernel_args`.
fn named_urls(cfg: &BootHttpConfig) -> Vec<String> {
    let own = cfg.agent_url.as_deref().unwrap_or(&cfg.base_url);
    std::iter::once(own.trim_end_matches('/').to_owned())
        .chain(
            cfg.extra_args
                .iter()
                .filter_map(|a| a.strip_prefix("ingot.url="))
                .map(|u| u.trim_end_matches('/').to_owned()),
        )
        .collect()
}

/// The DHCP [`BootPolicy`] backed by the store.
#[derive(Debug)]
pub struct StoreBootPolicy {
    pub store: Arc<dyn Store>,
    pub discovery: Arc<Discovery>,
    /// `[deploy] fast_track`, as [`BootHttpState::fast_track`].
    pub fast_track: bool,
}

impl StoreBootPolicy {
    /// The DHCP answer for a machine whose port's node is in `state` (`None`: no port).
    fn target(&self, state: Option<&str>) -> BootTarget {
        match decide(state, self.discovery.config.enabled, self.fast_track) {
            Boot::Agent => BootTarget::Netboot,
            Boot::LocalDisk => BootTarget::AddressOnly,
            Boot::Nothing if state.is_some() => BootTarget::AddressOnly,
            Boot::Nothing => BootTarget::Ignore,
        }
    }
}

#[async_trait]
impl BootPolicy for StoreBootPolicy {
    async fn lookup(&self, mac: MacAddr, _client_uuid: Option<Uuid>) -> BootTarget {
        match node_state(self.store.as_ref(), mac).await {
            Ok(state) => self.target(state.as_ref().map(|(_, s)| s.as_str())),
            Err(e) => {
                tracing::error!(error = %e, "boot policy: store access failed");
                BootTarget::Netboot
            }
        }
    }

    async fn lookup_many(&self, clients: &[(MacAddr, Option<Uuid>)]) -> Vec<BootTarget> {
        let macs: Vec<String> = clients.iter().map(|(m, _)| m.to_string()).collect();
        match self.store.node_states_by_macs(&macs).await {
            Ok(rows) => {
                let states: std::collections::HashMap<String, String> = rows
                    .into_iter()
                    .map(|(mac, _, state)| (mac, state))
                    .collect();
                macs.iter()
                    .map(|m| self.target(states.get(m).map(String::as_str)))
                    .collect()
            }
            Err(e) => {
                tracing::error!(error = %e, "boot policy: store access failed");
                vec![BootTarget::Netboot; clients.len()]
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::AgentLookup;

    #[test]
    fn scripts_name_the_other_live_replicas() {
        let now = chrono::Utc::now();
        let record =
            |name: &str, listen: &[&str], age: i64, online: bool| crate::model::ConductorRecord {
                hostname: name.into(),
                conductor_group: String::new(),
                drivers: vec![],
                listen: listen.iter().map(|s| (*s).to_owned()).collect(),
                version: "0".into(),
                online,
                started_at: now,
                created_at: now,
                updated_at: now - chrono::Duration::seconds(age),
            };
        let me = Replicas {
            me: "a".into(),
            heartbeat_timeout: std::time::Duration::from_secs(10),
        };
        let all = [
            record(
                "a",
                &["api 0.0.0.0:6385", "url https://10.0.0.1:8443"],
                0,
                true,
            ),
            record(
                "b",
                &["api 0.0.0.0:6385", "url https://10.0.0.2:8443/"],
                1,
                true,
            ),
            // Dead, stopped, without a URL, or a URL named already: not handed out.
            record("c", &["url https://10.0.0.3:8443"], 60, true),
            record("d", &["url https://10.0.0.4:8443"], 0, false),
            record("e", &["api 0.0.0.0:6385"], 0, true),
            record("f", &["url https://10.0.0.6:8443"], 0, true),
            record("g", &["url https://bad url"], 0, true),
        ];
        let own = vec!["https://10.0.0.1:8443".to_owned()];
        assert_eq!(
            replica_urls(&all, &me, now, &own),
            ["https://10.0.0.2:8443", "https://10.0.0.6:8443"]
        );
        let configured = vec![own[0].clone(), "https://10.0.0.6:8443".to_owned()];
        assert_eq!(
            replica_urls(&all, &me, now, &configured),
            ["https://10.0.0.2:8443"]
        );
        // Never more than the agent takes (8 in all).
        let many: Vec<String> = (0..7).map(|i| format!("https://10.1.0.{i}:8443")).collect();
        assert_eq!(
            replica_urls(&all, &me, now, &many),
            ["https://10.0.0.2:8443"]
        );
        let full: Vec<String> = (0..8).map(|i| format!("https://10.1.0.{i}:8443")).collect();
        assert!(replica_urls(&all, &me, now, &full).is_empty());
    }

    #[test]
    fn unknown_machines_boot_the_agent_only_with_discovery() {
        for fast_track in [false, true] {
            assert_eq!(decide(None, true, fast_track), Boot::Agent);
            assert_eq!(decide(None, false, fast_track), Boot::Nothing);
        }
        assert_eq!(decide(Some("no such state"), true, true), Boot::Nothing);
    }

    /// Every state, with and without fast track: the agent boots exactly where its lookup
    /// is answered, `active` boots its disk, everything else boots nothing.
    #[test]
    fn the_agent_boots_exactly_where_its_lookup_is_answered() {
        for state in ProvisionState::ALL {
            for fast_track in [false, true] {
                let want = if state == ProvisionState::Active {
                    Boot::LocalDisk
                } else if state.allows_agent_lookup(fast_track) {
                    Boot::Agent
                } else {
                    Boot::Nothing
                };
                for discovery in [false, true] {
                    assert_eq!(
                        decide(Some(state.as_str()), discovery, fast_track),
                        want,
                        "{state} fast_track={fast_track} discovery={discovery}"
                    );
                }
            }
        }
    }

    /// The same rule written out for the states an operator meets, so a change of the
    /// lookup rule shows up here as well.
    #[test]
    fn decisions_by_state() {
        use Boot::{Agent, LocalDisk, Nothing};
        // (state, without fast track, with fast track)
        let table = [
            ("enroll", Nothing, Agent),
            ("verifying", Nothing, Nothing),
            ("manageable", Nothing, Agent),
            ("inspecting", Agent, Agent),
            ("inspect wait", Agent, Agent),
            ("available", Nothing, Agent),
            ("cleaning", Agent, Agent),
            ("clean wait", Agent, Agent),
            ("deploying", Agent, Agent),
            ("wait call-back", Agent, Agent),
            ("rescuing", Agent, Agent),
            ("rescue wait", Agent, Agent),
            ("servicing", Agent, Agent),
            ("service wait", Agent, Agent),
            ("active", LocalDisk, LocalDisk),
            ("deploy failed", Nothing, Nothing),
            ("clean failed", Nothing, Nothing),
            ("inspect failed", Nothing, Nothing),
            ("clean hold", Nothing, Nothing),
            ("deleting", Nothing, Nothing),
            ("rescue", Nothing, Nothing),
            ("error", Nothing, Nothing),
        ];
        for (state, without, with) in table {
            assert_eq!(decide(Some(state), true, false), without, "{state}");
            assert_eq!(
                decide(Some(state), true, true),
                with,
                "{state} (fast track)"
            );
        }
        // `active` is the one state whose lookup is refused but that boots something.
        assert_eq!(ProvisionState::Active.agent_lookup(), AgentLookup::Refused);
    }
}

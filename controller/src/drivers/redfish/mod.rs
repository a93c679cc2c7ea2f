//! The `redfish` hardware type: power and boot device over DMTF Redfish (HTTPS or HTTP,
//! basic or session authentication), as Ironic's `redfish` interfaces.
//!
//! The system is `redfish_system_id`, or the only member of `/redfish/v1/Systems`. Power
//! changes use `ComputerSystem.Reset` and wait until `PowerState` shows the result; boot
//! devices use `Boot.BootSourceOverride{Target,Enabled,Mode}`.

pub mod client;
pub mod info;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::time::Instant;

use self::client::Client;
use self::info::{
    RedfishInfo, boot_device_from_target, boot_mode_from_redfish, boot_mode_redfish, boot_target,
    power_state_from_redfish, reset_fallbacks, reset_type,
};
use super::ipmi::node_boot_mode;
use super::{
    BootDevice, BootMode, DriverError, HardwareType, ManagementInterface, PowerInterface,
    PowerState, PowerTarget,
};
use crate::hub::AgentHub;
use crate::model::Node;

/// Default wait for a power change to show.
pub const DEFAULT_POWER_TIMEOUT: Duration = Duration::from_secs(60);

/// The `redfish` power and management interfaces.
#[derive(Debug, Default)]
pub struct RedfishHardware {
    poll_interval: Option<Duration>,
}

/// A connected client and the system's path.
struct System {
    client: Client,
    path: String,
}

impl RedfishHardware {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// With a custom power poll interval (tests use a short one).
    pub fn with_poll_interval(interval: Duration) -> Arc<Self> {
        Arc::new(Self {
            poll_interval: Some(interval),
        })
    }

    async fn system(node: &Node) -> Result<System, DriverError> {
        let info = RedfishInfo::parse(node)?;
        let client = Client::connect(&info).await?;
        let path = match info.system_path() {
            Some(p) => p,
            None => match discover_system(&client).await {
                Ok(p) => p,
                Err(e) => {
                    client.logout().await;
                    return Err(e);
                }
            },
        };
        Ok(System { client, path })
    }
}

/// The only system of `/redfish/v1/Systems`.
async fn discover_system(client: &Client) -> Result<String, DriverError> {
    let systems = client.get("/redfish/v1/Systems").await?;
    only_system(&systems, client.base())
}

/// PURE: the path of the only member of a `/redfish/v1/Systems` collection.
pub fn only_system(systems: &Value, bmc: &str) -> Result<String, DriverError> {
    let members: Vec<&str> = systems
        .get("Members")
        .and_then(Value::as_array)
        .map(|m| {
            m.iter()
                .filter_map(|v| v.get("@odata.id").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default();
    match members.as_slice() {
        [one] => Ok((*one).trim_end_matches('/').to_owned()),
        [] => Err(DriverError::Failed(format!(
            "Redfish BMC {bmc} lists no system under /redfish/v1/Systems"
        ))),
        many => Err(DriverError::InvalidParameter(format!(
            "Redfish BMC {bmc} has {} systems ({}); set redfish_system_id",
            many.len(),
            many.join(", ")
        ))),
    }
}

/// The `redfish` hardware type: Redfish power and boot device, agent deploy and inspect.
pub fn hardware_type(redfish: Arc<RedfishHardware>, hub: Arc<AgentHub>) -> HardwareType {
    super::agent::bmc_hardware_type("redfish", redfish, hub, info::PROPERTIES)
}

/// PURE: the power state a `ComputerSystem` document shows.
pub fn power_of(system: &Value) -> Option<PowerState> {
    system
        .get("PowerState")
        .and_then(Value::as_str)
        .and_then(power_state_from_redfish)
}

/// PURE: where to POST `ComputerSystem.Reset` for the system at `path` and which ResetType:
/// `reset`, or an alternative the system's `ResetType@Redfish.AllowableValues` allows.
pub fn reset_request<'a>(
    system: &Value,
    path: &str,
    bmc: &str,
    reset: &'a str,
) -> Result<(String, &'a str), DriverError> {
    let action = system
        .pointer("/Actions/#ComputerSystem.Reset")
        .cloned()
        .unwrap_or(Value::Null);
    let target = action
        .get("target")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| format!("{path}/Actions/ComputerSystem.Reset"));
    let allowed: Option<Vec<&str>> = action
        .get("ResetType@Redfish.AllowableValues")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect());
    let chosen = match &allowed {
        None => reset,
        Some(list) if list.contains(&reset) => reset,
        Some(list) => reset_fallbacks(reset)
            .iter()
            .copied()
            .find(|alt| list.contains(alt))
            .ok_or_else(|| {
                DriverError::Unsupported(format!(
                    "Redfish BMC {bmc} does not allow ResetType {reset} (allowed: {})",
                    list.join(", ")
                ))
            })?,
    };
    Ok((target, chosen))
}

/// PURE: the boot override a `ComputerSystem` document shows: device and whether it is
/// persistent.
pub fn boot_override(system: &Value) -> (Option<BootDevice>, bool) {
    let device = system
        .pointer("/Boot/BootSourceOverrideTarget")
        .and_then(Value::as_str)
        .and_then(boot_device_from_target);
    let persistent = system
        .pointer("/Boot/BootSourceOverrideEnabled")
        .and_then(Value::as_str)
        == Some("Continuous");
    (device, persistent)
}

impl System {
    async fn get(&self) -> Result<Value, DriverError> {
        self.client.get(&self.path).await
    }

    /// POSTs `ComputerSystem.Reset`, falling back to allowed alternatives.
    async fn reset(&self, system: &Value, reset: &str) -> Result<(), DriverError> {
        let (target, chosen) = reset_request(system, &self.path, self.client.base(), reset)?;
        tracing::info!(bmc = %self.client.base(), system = %self.path, reset = chosen, "Redfish reset");
        self.client
            .request(Method::POST, &target, Some(&json!({"ResetType": chosen})))
            .await?;
        Ok(())
    }

    async fn wait_power(
        &self,
        want: PowerState,
        deadline: Instant,
        timeout: Duration,
        poll: Duration,
    ) -> Result<(), DriverError> {
        loop {
            let system = self.get().await?;
            if power_of(&system) == Some(want) {
                return Ok(());
            }
            if Instant::now() + poll > deadline {
                return Err(DriverError::Timeout {
                    operation: format!(
                        "Redfish power change of {} (waiting for {})",
                        self.path,
                        want.as_str()
                    ),
                    timeout,
                });
            }
            tokio::time::sleep(poll).await;
        }
    }
}

#[async_trait]
impl PowerInterface for RedfishHardware {
    fn name(&self) -> &'static str {
        "redfish"
    }

    fn validate(&self, node: &Node) -> Result<(), DriverError> {
        RedfishInfo::parse(node).map(|_| ())
    }

    async fn get_power_state(&self, node: &Node) -> Result<Option<PowerState>, DriverError> {
        let sys = Self::system(node).await?;
        let result = sys.get().await;
        sys.client.logout().await;
        Ok(power_of(&result?))
    }

    async fn set_power_state(
        &self,
        node: &Node,
        target: PowerTarget,
        timeout: Option<Duration>,
    ) -> Result<(), DriverError> {
        let timeout = timeout.unwrap_or(DEFAULT_POWER_TIMEOUT);
        let deadline = Instant::now() + timeout;
        let poll = self.poll_interval.unwrap_or(Duration::from_secs(1));
        let sys = Self::system(node).await?;
        let result = async {
            let system = sys.get().await?;
            if let Some(reset) = reset_type(target, power_of(&system)) {
                sys.reset(&system, reset).await?;
            }
            sys.wait_power(target.resulting_state(), deadline, timeout, poll)
                .await
        }
        .await;
        sys.client.logout().await;
        result
    }
}

#[async_trait]
impl ManagementInterface for RedfishHardware {
    fn name(&self) -> &'static str {
        "redfish"
    }

    fn validate(&self, node: &Node) -> Result<(), DriverError> {
        RedfishInfo::parse(node).map(|_| ())
    }

    fn supported_boot_devices(&self, _node: &Node) -> Vec<BootDevice> {
        vec![
            BootDevice::Pxe,
            BootDevice::Disk,
            BootDevice::Cdrom,
            BootDevice::Bios,
        ]
    }

    async fn set_boot_device(
        &self,
        node: &Node,
        device: BootDevice,
        persistent: bool,
    ) -> Result<(), DriverError> {
        let target = boot_target(device).ok_or_else(|| {
            DriverError::InvalidParameter(format!("Invalid boot device {device} specified."))
        })?;
        let sys = Self::system(node).await?;
        let result = async {
            let system = sys.get().await?;
            let mut boot = json!({
                "BootSourceOverrideTarget": target,
                "BootSourceOverrideEnabled": if persistent { "Continuous" } else { "Once" },
            });
            // Only send the mode when it changes: some BMCs refuse to set it at all.
            let want = boot_mode_redfish(node_boot_mode(node));
            let have = system
                .pointer("/Boot/BootSourceOverrideMode")
                .and_then(Value::as_str);
            if have.is_some_and(|h| h != want) {
                boot["BootSourceOverrideMode"] = json!(want);
            }
            sys.client
                .request(Method::PATCH, &sys.path, Some(&json!({"Boot": boot})))
                .await
                .map(|_| ())
        }
        .await;
        sys.client.logout().await;
        result
    }

    async fn get_boot_device(
        &self,
        node: &Node,
    ) -> Result<(Option<BootDevice>, bool), DriverError> {
        let sys = Self::system(node).await?;
        let result = sys.get().await;
        sys.client.logout().await;
        Ok(boot_override(&result?))
    }

    async fn get_boot_mode(&self, node: &Node) -> Result<Option<BootMode>, DriverError> {
        let sys = Self::system(node).await?;
        let result = sys.get().await;
        sys.client.logout().await;
        Ok(result?
            .pointer("/Boot/BootSourceOverrideMode")
            .and_then(Value::as_str)
            .and_then(boot_mode_from_redfish))
    }

    async fn set_boot_mode(&self, node: &Node, mode: BootMode) -> Result<(), DriverError> {
        let sys = Self::system(node).await?;
        let body = json!({"Boot": {"BootSourceOverrideMode": boot_mode_redfish(mode)}});
        let result = sys
            .client
            .request(Method::PATCH, &sys.path, Some(&body))
            .await
            .map(|_| ());
        sys.client.logout().await;
        result
    }
}

//! The `ipmi` hardware type: power and boot device over IPMI 2.0 lanplus (RMCP+), with its
//! own client (cipher suites 3 and 17; [`session`]). Interfaces are named `ipmitool` as in
//! Ironic, although no ipmitool binary is involved.
//!
//! `driver_info` keys (Ironic's): `ipmi_address` (required), `ipmi_port` (623),
//! `ipmi_username`, `ipmi_password`, `ipmi_cipher_suite` (3 or 17; default: the best the
//! BMC accepts), `ipmi_priv_level` (`ADMINISTRATOR`), `ipmi_hex_kg_key`,
//! `ipmi_disable_boot_timeout` (true), plus `ipmi_timeout` (seconds per attempt, 2) and
//! `ipmi_retries` (attempts after the first, 2).

pub mod crypto;
pub mod session;
pub mod wire;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use self::session::{
    IpmiError, NETFN_CHASSIS, PRIV_ADMINISTRATOR, PRIV_CALLBACK, PRIV_OPERATOR, PRIV_USER, Session,
};
use super::{
    BootDevice, BootMode, DriverError, HardwareType, ManagementInterface, PowerInterface,
    PowerState, PowerTarget,
};
use crate::hub::AgentHub;
use crate::model::Node;

pub mod info;
mod power;

pub use info::{IpmiInfo, node_boot_mode};

/// Default wait for a power change to show.
pub const DEFAULT_POWER_TIMEOUT: Duration = Duration::from_secs(60);

impl From<IpmiError> for DriverError {
    fn from(e: IpmiError) -> Self {
        match e {
            IpmiError::Timeout {
                bmc,
                what,
                timeout,
                attempts,
            } => DriverError::Timeout {
                operation: format!("IPMI {what} to BMC {bmc} ({attempts} attempts)"),
                timeout,
            },
            other => DriverError::Failed(other.to_string()),
        }
    }
}

/// The `ipmitool` power and management interfaces.
#[derive(Debug, Default)]
pub struct IpmiHardware {
    /// How often a power change is polled for.
    poll_interval: Option<Duration>,
}

impl IpmiHardware {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// With a custom poll interval (tests use a short one).
    pub fn with_poll_interval(interval: Duration) -> Arc<Self> {
        Arc::new(Self {
            poll_interval: Some(interval),
        })
    }

    fn poll(&self) -> Duration {
        self.poll_interval.unwrap_or(Duration::from_secs(1))
    }

    async fn session(node: &Node) -> Result<Session, DriverError> {
        let info = IpmiInfo::parse(node)?;
        Ok(Session::open(&info.session).await?)
    }
}

/// The `ipmi` hardware type: IPMI power and boot device, agent deploy and inspect.
pub fn hardware_type(ipmi: Arc<IpmiHardware>, hub: Arc<AgentHub>) -> HardwareType {
    super::agent::bmc_hardware_type("ipmi", ipmi, hub, info::PROPERTIES)
}

#[async_trait]
impl PowerInterface for IpmiHardware {
    fn name(&self) -> &'static str {
        "ipmitool"
    }

    fn validate(&self, node: &Node) -> Result<(), DriverError> {
        IpmiInfo::parse(node).map(|_| ())
    }

    async fn get_power_state(&self, node: &Node) -> Result<Option<PowerState>, DriverError> {
        let mut s = Self::session(node).await?;
        let state = power::chassis_power(&mut s).await;
        s.close().await;
        Ok(Some(state?))
    }

    async fn set_power_state(
        &self,
        node: &Node,
        target: PowerTarget,
        timeout: Option<Duration>,
    ) -> Result<(), DriverError> {
        let info = IpmiInfo::parse(node)?;
        let timeout = timeout.unwrap_or(DEFAULT_POWER_TIMEOUT);
        power::set_power(&info.session, target, timeout, self.poll()).await
    }
}

#[async_trait]
impl ManagementInterface for IpmiHardware {
    fn name(&self) -> &'static str {
        "ipmitool"
    }

    fn validate(&self, node: &Node) -> Result<(), DriverError> {
        IpmiInfo::parse(node).map(|_| ())
    }

    fn supported_boot_devices(&self, _node: &Node) -> Vec<BootDevice> {
        vec![
            BootDevice::Pxe,
            BootDevice::Disk,
            BootDevice::Cdrom,
            BootDevice::Bios,
            BootDevice::Safe,
        ]
    }

    async fn set_boot_device(
        &self,
        node: &Node,
        device: BootDevice,
        persistent: bool,
    ) -> Result<(), DriverError> {
        let info = IpmiInfo::parse(node)?;
        let selector = boot_selector(device).ok_or_else(|| {
            DriverError::InvalidParameter(format!("Invalid boot device {device} specified."))
        })?;
        let mut flags = 0x80; // boot flags valid
        if persistent {
            flags |= 0x40;
        }
        if node_boot_mode(node) == BootMode::Uefi {
            flags |= 0x20;
        }
        let mut s = Session::open(&info.session).await?;
        let result =
            power::set_boot_flags(&mut s, flags, selector << 2, info.disable_boot_timeout).await;
        s.close().await;
        result
    }

    async fn get_boot_device(
        &self,
        node: &Node,
    ) -> Result<(Option<BootDevice>, bool), DriverError> {
        let mut s = Self::session(node).await?;
        let result = s
            .command(
                NETFN_CHASSIS,
                0x09,
                &[0x05, 0, 0],
                "Get System Boot Options",
            )
            .await;
        s.close().await;
        let data = result?;
        // parameter version, parameter selector, then the five boot flag bytes.
        let (Some(flags), Some(dev)) = (data.get(2), data.get(3)) else {
            return Err(DriverError::Failed(format!(
                "IPMI Get System Boot Options: short reply {data:02x?}"
            )));
        };
        Ok((
            boot_device_from_selector((dev >> 2) & 0x0F),
            flags & 0x40 != 0,
        ))
    }
}

/// The boot device selector (bits 5:2 of boot flags byte 2).
fn boot_selector(device: BootDevice) -> Option<u8> {
    match device {
        BootDevice::Pxe => Some(0x1),
        BootDevice::Disk => Some(0x2),
        BootDevice::Safe => Some(0x3),
        BootDevice::Cdrom => Some(0x5),
        BootDevice::Bios => Some(0x6),
        BootDevice::Wanboot => None,
    }
}

fn boot_device_from_selector(sel: u8) -> Option<BootDevice> {
    match sel {
        0x1 => Some(BootDevice::Pxe),
        0x2 => Some(BootDevice::Disk),
        0x3 => Some(BootDevice::Safe),
        0x5 => Some(BootDevice::Cdrom),
        0x6 => Some(BootDevice::Bios),
        _ => None,
    }
}

/// Privilege level names as Ironic's `ipmi_priv_level` takes them.
fn parse_privilege(s: &str) -> Option<u8> {
    match s.to_ascii_uppercase().as_str() {
        "ADMINISTRATOR" => Some(PRIV_ADMINISTRATOR),
        "OPERATOR" => Some(PRIV_OPERATOR),
        "USER" => Some(PRIV_USER),
        "CALLBACK" => Some(PRIV_CALLBACK),
        _ => None,
    }
}

//! Chassis commands: power status, chassis control with waiting for the result, and the
//! boot flags parameter of Set System Boot Options.

use std::time::Duration;

use tokio::time::Instant;

use super::session::{IpmiError, NETFN_CHASSIS, Session, SessionConfig};
use crate::drivers::{DriverError, PowerState, PowerTarget};

const CONTROL_DOWN: u8 = 0x00;
const CONTROL_UP: u8 = 0x01;
const CONTROL_SOFT: u8 = 0x05;

/// Get Chassis Status: bit 0 of the first byte is "power is on".
pub async fn chassis_power(s: &mut Session) -> Result<PowerState, DriverError> {
    let data = s
        .command(NETFN_CHASSIS, 0x01, &[], "Get Chassis Status")
        .await?;
    let byte = data
        .first()
        .ok_or_else(|| DriverError::Failed("IPMI Get Chassis Status: empty reply".to_owned()))?;
    Ok(if byte & 1 == 1 {
        PowerState::On
    } else {
        PowerState::Off
    })
}

async fn control(s: &mut Session, action: u8) -> Result<(), DriverError> {
    s.command(NETFN_CHASSIS, 0x02, &[action], "Chassis Control")
        .await?;
    Ok(())
}

/// Polls until the chassis reports `want` or the deadline passes; a failed poll opens a
/// new session (the BMC may have dropped the old one).
async fn wait_for(
    cfg: &SessionConfig,
    s: &mut Option<Session>,
    want: PowerState,
    deadline: Instant,
    timeout: Duration,
    poll: Duration,
    operation: &str,
) -> Result<(), DriverError> {
    loop {
        if s.is_none() {
            *s = Some(Session::open(cfg).await?);
        }
        if let Some(sess) = s.as_mut() {
            match chassis_power(sess).await {
                Ok(state) if state == want => return Ok(()),
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "IPMI power poll failed, reconnecting");
                    if let Some(old) = s.take() {
                        old.close().await;
                    }
                }
            }
        }
        if Instant::now() + poll > deadline {
            return Err(DriverError::Timeout {
                operation: format!("IPMI {operation} (waiting for {})", want.as_str()),
                timeout,
            });
        }
        tokio::time::sleep(poll).await;
    }
}

/// Changes the power state and waits until the BMC reports the result.
pub async fn set_power(
    cfg: &SessionConfig,
    target: PowerTarget,
    timeout: Duration,
    poll: Duration,
) -> Result<(), DriverError> {
    let deadline = Instant::now() + timeout;
    let mut session = Some(Session::open(cfg).await?);
    let result = set_power_in(cfg, &mut session, target, deadline, timeout, poll).await;
    if let Some(s) = session {
        s.close().await;
    }
    result
}

async fn set_power_in(
    cfg: &SessionConfig,
    session: &mut Option<Session>,
    target: PowerTarget,
    deadline: Instant,
    timeout: Duration,
    poll: Duration,
) -> Result<(), DriverError> {
    let op = target.as_str();
    let current = match session.as_mut() {
        Some(s) => chassis_power(s).await?,
        None => return Err(DriverError::Failed("IPMI session lost".to_owned())),
    };
    // Power off (hard or soft) first, when needed.
    let off_action = match target {
        PowerTarget::On => None,
        PowerTarget::Off | PowerTarget::Reboot => Some(CONTROL_DOWN),
        PowerTarget::SoftOff | PowerTarget::SoftReboot => Some(CONTROL_SOFT),
    };
    if let Some(action) = off_action
        && current == PowerState::On
    {
        send_control(cfg, session, action).await?;
        wait_for(cfg, session, PowerState::Off, deadline, timeout, poll, op).await?;
    }
    // Then on, for on and the reboots (a cold start applies a new boot device).
    if target.resulting_state() == PowerState::On
        && !(current == PowerState::On && off_action.is_none())
    {
        send_control(cfg, session, CONTROL_UP).await?;
        wait_for(cfg, session, PowerState::On, deadline, timeout, poll, op).await?;
    }
    Ok(())
}

async fn send_control(
    cfg: &SessionConfig,
    session: &mut Option<Session>,
    action: u8,
) -> Result<(), DriverError> {
    if session.is_none() {
        *session = Some(Session::open(cfg).await?);
    }
    match session.as_mut() {
        Some(s) => control(s, action).await,
        None => Err(DriverError::Failed("IPMI session lost".to_owned())),
    }
}

/// Sets boot flags (parameter 5), as ipmitool's `chassis bootdev` does, wrapped in
/// set-in-progress; optionally disables the 60 s flag timeout first (Ironic's default).
pub async fn set_boot_flags(
    s: &mut Session,
    flags: u8,
    device: u8,
    disable_timeout: bool,
) -> Result<(), DriverError> {
    let best_effort = |r: Result<Vec<u8>, IpmiError>, what: &str| {
        if let Err(e) = r {
            tracing::debug!(error = %e, what, "optional IPMI boot option step failed");
        }
    };
    if disable_timeout {
        let r = s
            .command(
                NETFN_CHASSIS,
                0x08,
                &[0x03, 0x08],
                "Set System Boot Options",
            )
            .await;
        best_effort(r, "disable boot flag timeout");
    }
    let r = s
        .command(
            NETFN_CHASSIS,
            0x08,
            &[0x00, 0x01],
            "Set System Boot Options",
        )
        .await;
    best_effort(r, "set in progress");
    let result = s
        .command(
            NETFN_CHASSIS,
            0x08,
            &[0x05, flags, device, 0, 0, 0],
            "Set System Boot Options (boot flags)",
        )
        .await;
    let r = s
        .command(
            NETFN_CHASSIS,
            0x08,
            &[0x00, 0x00],
            "Set System Boot Options",
        )
        .await;
    best_effort(r, "set complete");
    result?;
    Ok(())
}

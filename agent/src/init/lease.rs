//! A NIC's DHCP lease from the first DISCOVER to the end of the agent: [`obtain`] runs the
//! client ([`dhcp::machine`]) until it is bound, [`keep`] then renews at T1, rebinds at T2
//! and starts over on a NAK or at expiry, applying every address change to the NIC (and the
//! default route when this NIC holds it). The ramdisk runs [`keep`] on the NIC's bring-up
//! thread, which lives as long as the agent.

use std::ops::ControlFlow;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context;

use super::dhcp::Lease;
use super::dhcp::edge::{self, Port, Until};
use super::dhcp::machine::{Action, Client};
use super::uptime;
use crate::host::ifconfig::Ioctl;

/// The NIC that holds the default route (set by the bring-up once it chose a lease).
static ROUTE_NIC: Mutex<Option<String>> = Mutex::new(None);

/// Records that `nic` holds the default route: a new lease on it puts the route back.
pub fn set_route_nic(nic: &str) {
    *ROUTE_NIC.lock().unwrap_or_else(|e| e.into_inner()) = Some(nic.to_owned());
}

fn holds_route(nic: &str) -> bool {
    ROUTE_NIC
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_deref()
        == Some(nic)
}

/// A transaction-id seed that differs between machines and boots.
fn seed(mac: [u8; 6]) -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    nanos ^ u32::from_be_bytes([mac[2], mac[3], mac[4], mac[5]])
}

/// Carries out an address change on the NIC and logs it.
fn apply(io: &Ioctl, port: &Port, a: &Action) -> anyhow::Result<()> {
    match a {
        Action::Send { .. } => {}
        Action::Configure { lease, previous } => {
            io.set_addr(&port.name, lease.addr, lease.prefix)
                .with_context(|| format!("configuring {}", port.name))?;
            if let Some(p) = previous {
                tracing::info!(nic = %port.name, addr = %lease.addr, prefix = lease.prefix, was = %p.addr, router = ?lease.router, lease_secs = ?lease.lease_secs, "dhcp lease changed on renewal");
            }
            if previous.is_some() || holds_route(&port.name) {
                put_route(io, port, lease);
            }
        }
        Action::Extended { lease, rebound } => {
            tracing::info!(nic = %port.name, addr = %lease.addr, lease_secs = ?lease.lease_secs, server = ?lease.server, rebound, "dhcp lease renewed");
        }
        Action::Deconfigure { addr, why } => {
            tracing::warn!(nic = %port.name, %addr, ?why, "dhcp lease lost: address removed, asking for it again");
            io.del_addr(&port.name)
                .with_context(|| format!("removing {addr} from {}", port.name))?;
        }
    }
    Ok(())
}

/// Puts the default route back through `lease.router` when this NIC holds it (removing the
/// address took the route with it).
fn put_route(io: &Ioctl, port: &Port, lease: &Lease) {
    if !holds_route(&port.name) {
        return;
    }
    if let Some(gw) = lease.router
        && let Err(e) = io.default_route(&port.name, gw)
    {
        let exists = e
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::raw_os_error)
            == Some(libc::EEXIST);
        if !exists {
            tracing::warn!(nic = %port.name, error = %format!("{e:#}"), "default route");
        }
    }
}

/// Gets a lease on `port` within `timeout` and sets its address; returns the client (BOUND)
/// to hand to [`keep`], and the lease.
pub fn obtain(port: &Port, mac: [u8; 6], timeout: Duration) -> anyhow::Result<(Client, Lease)> {
    let io = Ioctl::new()?;
    let mut client = Client::new(mac, seed(mac));
    let mut failed = None;
    edge::drive(
        &mut client,
        port,
        &uptime,
        Until::Bound {
            deadline: uptime() + timeout,
        },
        &mut |_, a| match apply(&io, port, a) {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => {
                failed = Some(e);
                ControlFlow::Break(())
            }
        },
    )?;
    if let Some(e) = failed {
        return Err(e);
    }
    let lease = client
        .lease()
        .cloned()
        .context("DHCP ended without a lease")?;
    Ok((client, lease))
}

/// Keeps `client`'s lease on `port` until `observe` breaks (the ramdisk never breaks: this
/// runs for the life of the agent). `observe` sees each action after it was carried out.
pub fn keep(
    port: &Port,
    client: &mut Client,
    observe: &mut dyn FnMut(&Client, &Action) -> ControlFlow<()>,
) -> anyhow::Result<()> {
    let io = Ioctl::new()?;
    edge::drive(client, port, &uptime, Until::Stopped, &mut |c, a| {
        if let Err(e) = apply(&io, port, a) {
            // The machine goes on: a failed change is retried at the next one.
            tracing::warn!(nic = %port.name, error = %format!("{e:#}"), "applying a DHCP change");
        }
        observe(c, a)
    })
}

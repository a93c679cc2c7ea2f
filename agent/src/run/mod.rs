//! The agent protocol loop: lookup, heartbeat long-poll, run commands, report.
//!
//! [`machine`] is the pure state machine; [`drive`] performs its actions against a
//! [`client::Controller`] and an [`exec::Host`]. Used by PID 1 in the ramdisk and by
//! `ingot-agent run` as a normal command.

pub mod client;
pub mod exec;
pub mod machine;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use proto::AgentEvent;
use proto::protocol::{AgentState, EventReport, HeartbeatRequest, Report};
use tokio::sync::mpsc;

use crate::events::EventSink;
use client::Controller;
use exec::Host;
use machine::{Action, Halt, Outcome, State};

/// Sends events to a channel, progress at most once per `interval`; also logs them.
struct ForwardSink {
    tx: mpsc::UnboundedSender<AgentEvent>,
    interval: Duration,
    last_progress: Mutex<Option<Instant>>,
}

impl EventSink for ForwardSink {
    fn emit(&self, event: &AgentEvent) {
        if let AgentEvent::Progress(p) = event {
            let Ok(mut last) = self.last_progress.lock() else {
                return;
            };
            if last.is_some_and(|t| t.elapsed() < self.interval) {
                return;
            }
            *last = Some(Instant::now());
            tracing::info!(phase = ?p.phase, fetched = p.bytes_fetched, written = p.bytes_written, rate_bps = p.rate_bps, "progress");
        } else {
            tracing::info!(event = %serde_json::to_string(event).unwrap_or_default(), "event");
        }
        let _ = self.tx.send(event.clone());
    }
}

/// Reads `VmRSS` (KiB) of a `/proc/PID/status` file.
pub fn vm_rss_kib(status_path: &str) -> Option<u64> {
    std::fs::read_to_string(status_path)
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// How often the agent heartbeats while a command runs, until the controller's answer says
/// otherwise.
pub const BUSY_HEARTBEAT: Duration = Duration::from_secs(5);

/// The next busy-heartbeat interval: the controller's `wait` seconds (1 to 60), else the
/// current one. Pure.
pub fn next_busy_interval(answer: &proto::protocol::Command, current: Duration) -> Duration {
    match answer {
        proto::protocol::Command::Wait { seconds } if (1..=60).contains(seconds) => {
            Duration::from_secs(u64::from(*seconds))
        }
        _ => current,
    }
}

async fn run_command<C: Controller, H: Host>(
    ctl: &C,
    host: &std::sync::Arc<H>,
    session: &machine::Session,
    command_id: uuid::Uuid,
    command: &proto::protocol::Command,
    busy_interval: Duration,
) -> Report {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let sink = ForwardSink {
        tx,
        interval: Duration::from_secs(1),
        last_progress: Mutex::new(None),
    };
    let h = host.clone();
    let cmd = command.clone();
    let job = tokio::task::spawn_blocking(move || h.execute(&cmd, &sink));
    let forward = async {
        while let Some(event) = rx.recv().await {
            let rep = EventReport {
                node_uuid: session.node,
                command_id,
                report: Report::Event { event },
            };
            if let Err(e) = ctl.event(&session.token, &rep).await {
                tracing::warn!(error = ?e, "progress event not delivered");
            }
        }
    };
    // Busy heartbeats while the command runs: the controller tells a live agent that is
    // writing or wiping (progress may be rare: a secure erase has none) from a dead one.
    let (done_tx, mut done_rx) = tokio::sync::watch::channel(false);
    let job = async {
        let r = job.await;
        let _ = done_tx.send(true);
        r
    };
    let keepalive = async {
        let mut interval = busy_interval;
        loop {
            tokio::select! {
                _ = done_rx.changed() => break,
                () = tokio::time::sleep(interval) => {}
            }
            let req = HeartbeatRequest {
                node_uuid: session.node,
                state: AgentState::Busy { command_id },
            };
            match ctl.heartbeat(&session.token, &req, Duration::ZERO).await {
                Ok(hb) => interval = next_busy_interval(&hb.command, interval),
                Err(e) => tracing::warn!(error = ?e, "busy heartbeat failed"),
            }
        }
    };
    let (res, (), ()) = tokio::join!(job, forward, keepalive);
    res.unwrap_or_else(|e| Report::Failed {
        error: proto::ErrorReport {
            phase: None,
            message: format!("command thread failed: {e}"),
            causes: vec![],
        },
    })
}

/// Runs the protocol until the controller asks to reboot or power off; returns which.
pub async fn drive<C: Controller, H: Host>(ctl: &C, host: std::sync::Arc<H>) -> Halt {
    drive_with(ctl, host, BUSY_HEARTBEAT).await
}

/// [`drive`] with the first busy-heartbeat interval given.
pub async fn drive_with<C: Controller, H: Host>(
    ctl: &C,
    host: std::sync::Arc<H>,
    busy_interval: Duration,
) -> Halt {
    let mut state = State::start();
    let started = Instant::now();
    let mut looked_up = false;
    loop {
        let outcome = match machine::action(&state) {
            Action::Lookup { delay, token } => {
                tokio::time::sleep(delay).await;
                let h = host.clone();
                let inv_start = crate::boot::uptime();
                let req = match tokio::task::spawn_blocking(move || h.lookup_request()).await {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::error!(error = %e, "collecting the inventory failed");
                        tokio::time::sleep(Duration::from_secs(5)).await;
                        continue;
                    }
                };
                let call_start = crate::boot::uptime();
                let r = ctl.lookup(&req, token).await;
                match &r {
                    Ok(resp) => {
                        if !looked_up {
                            looked_up = true;
                            if let Some(tl) = crate::boot::boot() {
                                tl.stage(
                                    "inventory",
                                    inv_start,
                                    call_start,
                                    format!(
                                        "{} disks, {} NICs",
                                        req.inventory.disks.len(),
                                        req.inventory.interfaces.len()
                                    ),
                                );
                                tl.stage(
                                    "lookup",
                                    call_start,
                                    crate::boot::uptime(),
                                    format!("node {}", resp.node_uuid),
                                );
                                tracing::info!("{}", tl.summary());
                            }
                            tracing::info!(
                                node = %resp.node_uuid,
                                discovered = resp.discovered,
                                macs = ?req.macs,
                                uptime_ms = crate::boot::uptime().as_millis() as u64,
                                since_start_ms = started.elapsed().as_millis() as u64,
                                pid1_rss_kib = vm_rss_kib("/proc/1/status"),
                                self_rss_kib = vm_rss_kib("/proc/self/status"),
                                "lookup done"
                            );
                        } else {
                            tracing::info!(node = %resp.node_uuid, "lookup done");
                        }
                    }
                    Err(e) => tracing::warn!(error = ?e, "lookup failed"),
                }
                Outcome::Lookup(r)
            }
            Action::Heartbeat { session, delay } => {
                tokio::time::sleep(delay).await;
                let req = HeartbeatRequest {
                    node_uuid: session.node,
                    state: AgentState::Idle,
                };
                let wait = Duration::from_secs(u64::from(session.heartbeat_timeout_secs));
                let r = ctl.heartbeat(&session.token, &req, wait).await;
                match &r {
                    Ok(hb) => {
                        tracing::debug!(command = %crate::redact::command(&hb.command), "heartbeat")
                    }
                    Err(e) => tracing::warn!(error = ?e, "heartbeat failed"),
                }
                Outcome::Heartbeat(r)
            }
            Action::Run {
                session,
                command_id,
                command,
            } => {
                tracing::info!(%command_id, command = %crate::redact::command(command), "running command");
                Outcome::Ran(
                    run_command(ctl, &host, session, command_id, command, busy_interval).await,
                )
            }
            Action::Report {
                session,
                pending,
                delay,
            } => {
                tokio::time::sleep(delay).await;
                let ok = matches!(pending.report, Report::Succeeded { .. });
                tracing::info!(command_id = %pending.command_id, ok, "reporting result");
                if let Report::Failed { error } = &pending.report {
                    tracing::error!(message = %error.message, causes = ?error.causes, "command failed");
                }
                let rep = EventReport {
                    node_uuid: session.node,
                    command_id: pending.command_id,
                    report: pending.report.clone(),
                };
                let r = ctl.event(&session.token, &rep).await;
                if let Err(e) = &r {
                    tracing::warn!(error = ?e, "report not delivered");
                }
                Outcome::Reported(r)
            }
            Action::Halt(h) => return h,
        };
        state = machine::step(state, outcome);
    }
}

/// Options of `ingot-agent run` (and of PID 1, from the kernel command line).
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The controller replicas' base URLs, in the order to try them (at least one).
    pub urls: Vec<String>,
    pub ca_sha256: Option<[u8; 32]>,
    pub boot_mac: Option<String>,
    /// How long inspection listens for LLDP (`ingot.lldp_timeout=`).
    pub lldp_timeout: std::time::Duration,
}

/// Runs the loop on the live machine until a reboot or power-off is asked for.
pub async fn run_agent(opts: &RunOptions) -> anyhow::Result<Halt> {
    let ctl = client::HttpController::with_replicas(&opts.urls, opts.ca_sha256)?;
    Ok(run_with(&ctl, opts, None).await)
}

/// [`run_agent`] with a client built beforehand and maybe an inventory collected ahead
/// (PID 1 prepares both while the network comes up).
pub async fn run_with(
    ctl: &client::HttpController,
    opts: &RunOptions,
    early: Option<proto::Inventory>,
) -> Halt {
    let host = std::sync::Arc::new(exec::LiveHost {
        boot_mac: opts.boot_mac.clone(),
        scratch: std::env::temp_dir().join("ingot-agent"),
        early: std::sync::Arc::new(Mutex::new(early)),
        ca_sha256: opts.ca_sha256,
        lldp_timeout: opts.lldp_timeout,
        controllers: opts.urls.clone(),
    });
    tracing::info!(url = %ctl.current(), replicas = opts.urls.len(), pinned = opts.ca_sha256.is_some(), "contacting the controller");
    drive(ctl, host).await
}

#[cfg(test)]
mod tests;

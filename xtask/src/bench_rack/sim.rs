//! One simulated machine of `cargo xtask bench rack`: the agent protocol spoken with the
//! agent's own client (`agent::run::client::HttpController`) from the machine's own
//! loopback address, and images fetched with the agent's own downloader
//! (`agent::image::fetch`) and discarded. A boot is a lookup without a token; a 401 on a
//! heartbeat means the controller rebooted the machine (into its instance or into a new
//! ramdisk): the machine boots again. Every call's latency and every error is recorded.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agent::run::client::{Controller, HttpController};
use agent::run::machine::CallError;
use proto::protocol::{AgentState, Command, EventReport, HeartbeatRequest, LookupRequest, Report};
use proto::{Disk, DiskId, Interface, Inventory, WipeDiskResult, WipeReport};
use tokio::sync::watch;

/// What all machines recorded.
#[derive(Debug, Default)]
pub struct Stats {
    /// Lookups and result reports (not the heartbeats' long-polls), in microseconds.
    pub calls_us: Vec<u64>,
    /// The same, lookups only and reports only.
    pub lookups_us: Vec<u64>,
    pub reports_us: Vec<u64>,
    /// When each of `calls_us` started, in the same order (to tell the phases apart).
    pub calls_at: Vec<Instant>,
    /// Calls that failed for another reason than the protocol's expected answers.
    pub errors: u64,
    /// A few error texts, for the report.
    pub error_samples: Vec<String>,
    /// Image bytes fetched, and when each fetch started and ended.
    pub image_bytes: u64,
    pub fetches: Vec<(Instant, Instant)>,
}

impl Stats {
    fn error(&mut self, what: String) {
        self.errors += 1;
        if self.error_samples.len() < 5 {
            self.error_samples.push(what);
        }
    }
}

/// The MAC of machine `i`.
pub fn mac(i: usize) -> String {
    format!(
        "52:54:01:{:02x}:{:02x}:{:02x}",
        (i >> 16) & 0xff,
        (i >> 8) & 0xff,
        i & 0xff
    )
}

/// The loopback source address of machine `i`: 127.1.0.1 onwards, one address each.
pub fn source(i: usize) -> std::net::IpAddr {
    let k = i + 1;
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(
        127,
        1 + ((k >> 16) & 0x7f) as u8,
        ((k >> 8) & 0xff) as u8,
        (k & 0xff) as u8,
    ))
}

fn serial(i: usize) -> String {
    format!("SIM{i:06}")
}

fn lookup_request(i: usize) -> LookupRequest {
    let mut inv = Inventory {
        interfaces: vec![Interface {
            name: "eth0".into(),
            mac_address: mac(i),
            has_carrier: true,
            ..Default::default()
        }],
        disks: vec![Disk {
            name: "/dev/vda".into(),
            size: 20 << 30,
            serial: Some(format!("DISK{i:06}")),
            ..Default::default()
        }],
        ..Default::default()
    };
    inv.cpu.count = 4;
    inv.cpu.architecture = "x86_64".into();
    inv.memory.total = 8 << 30;
    inv.system_vendor.serial_number = Some(serial(i));
    agent::run::exec::lookup_request(inv, Some(mac(i)))
}

fn wiped(i: usize) -> serde_json::Value {
    let report = WipeReport {
        ok: true,
        disks: vec![WipeDiskResult {
            device: "/dev/vda".into(),
            mode: proto::WipeMode::Metadata,
            ok: true,
            method: Some("signatures".into()),
            cleared: vec![],
            skipped: None,
            error: None,
            elapsed_ms: 1,
            id: DiskId {
                serial: Some(format!("DISK{i:06}")),
                size: Some(20 << 30),
                ..Default::default()
            },
        }],
    };
    serde_json::to_value(report).unwrap_or_default()
}

async fn timed<T>(stats: &Mutex<Stats>, lookup: bool, f: impl Future<Output = T>) -> T {
    let t = Instant::now();
    let out = f.await;
    let us = u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX);
    let mut s = stats.lock().unwrap_or_else(|e| e.into_inner());
    s.calls_us.push(us);
    s.calls_at.push(t);
    if lookup {
        s.lookups_us.push(us);
    } else {
        s.reports_us.push(us);
    }
    out
}

/// Runs machine `i` until `stop` says so.
pub async fn run(
    i: usize,
    ctl: HttpController,
    stats: Arc<Mutex<Stats>>,
    mut stop: watch::Receiver<bool>,
) {
    let req = lookup_request(i);
    let record = |what: String| stats.lock().unwrap_or_else(|e| e.into_inner()).error(what);
    // Refused lookups in a row: a machine the controller did not boot into the agent (in
    // its OS, or powered off) looks up again after a growing pause (0.3 s to 2 s), as a
    // real one would only at its next boot.
    let mut refused = 0u32;
    'boot: loop {
        if *stop.borrow() {
            return;
        }
        // A fresh boot: no token until a lookup gives one.
        let session = match timed(&stats, true, ctl.lookup(&req, None)).await {
            Ok(r) => match r.token {
                Some(token) => {
                    refused = 0;
                    (r.node_uuid, token, r.heartbeat_timeout_secs)
                }
                None => {
                    record(format!("machine {i}: lookup without a token"));
                    pause(&mut stop, Duration::from_secs(1)).await;
                    continue;
                }
            },
            // No agent expected now (the node is active, or the boot window is not open
            // yet): a real machine would sit in its OS or in iPXE; try again soon.
            Err(CallError::Status(409 | 403 | 404, _)) => {
                refused += 1;
                let ms = (300u64 << refused.min(3)).min(2_000);
                pause(&mut stop, Duration::from_millis(ms)).await;
                continue;
            }
            Err(CallError::TooManyRequests(d)) => {
                record(format!("machine {i}: lookup limited"));
                pause(&mut stop, d.unwrap_or(Duration::from_secs(1))).await;
                continue;
            }
            Err(e) => {
                record(format!("machine {i}: lookup: {e:?}"));
                pause(&mut stop, Duration::from_secs(1)).await;
                continue;
            }
        };
        let (node, token, wait_secs) = session;
        loop {
            if *stop.borrow() {
                return;
            }
            let idle = HeartbeatRequest {
                node_uuid: node,
                state: AgentState::Idle,
            };
            let wait = Duration::from_secs(u64::from(wait_secs.clamp(1, 30)));
            let hb = tokio::select! {
                hb = ctl.heartbeat(&token, &idle, wait) => hb,
                _ = stop.changed() => return,
            };
            let (command_id, command) = match hb {
                Ok(hb) => (hb.command_id, hb.command),
                Err(CallError::Unauthorized) => continue 'boot,
                Err(e) => {
                    record(format!("machine {i}: heartbeat: {e:?}"));
                    pause(&mut stop, Duration::from_secs(1)).await;
                    continue;
                }
            };
            let report = match &command {
                Command::Wait { .. } => continue,
                Command::Wipe { .. } => {
                    // A metadata wipe of a real disk takes a moment (0.2-0.7 s here); an
                    // instant answer would race the conductor's own commit of the wait.
                    let ms = 200 + (i as u64 * 7919) % 500;
                    pause(&mut stop, Duration::from_millis(ms)).await;
                    Report::Succeeded {
                        inventory: None,
                        detail: Some(wiped(i)),
                    }
                }
                Command::Inspect => Report::Succeeded {
                    inventory: Some(Box::new(req.inventory.clone())),
                    detail: None,
                },
                Command::Deploy(d) => fetch(i, &d.image_url, &stats).await,
                Command::Reboot | Command::PowerOff => Report::Succeeded {
                    inventory: None,
                    detail: None,
                },
                Command::EnrollBmc { .. } => Report::Failed {
                    error: proto::ErrorReport {
                        phase: None,
                        message: "a simulated machine has no BMC".into(),
                        causes: vec![],
                    },
                },
                Command::RunStep { .. } => Report::Failed {
                    error: proto::ErrorReport {
                        phase: None,
                        message: "a simulated machine offers no steps".into(),
                        causes: vec![],
                    },
                },
            };
            let rep = EventReport {
                node_uuid: node,
                command_id,
                report,
            };
            let mut tries = 0;
            loop {
                match timed(&stats, false, ctl.event(&token, &rep)).await {
                    Ok(()) => break,
                    Err(CallError::Unauthorized) => continue 'boot,
                    Err(e) if tries < 5 => {
                        tries += 1;
                        record(format!("machine {i}: report (retried): {e:?}"));
                        pause(&mut stop, Duration::from_millis(500)).await;
                    }
                    Err(e) => {
                        record(format!("machine {i}: report: {e:?}"));
                        break;
                    }
                }
            }
            if matches!(command, Command::Reboot | Command::PowerOff) {
                continue 'boot;
            }
        }
    }
}

async fn pause(stop: &mut watch::Receiver<bool>, d: Duration) {
    tokio::select! {
        () = tokio::time::sleep(d) => {}
        _ = stop.changed() => {}
    }
}

/// Fetches the image with the agent's downloader, discarding the bytes.
async fn fetch(i: usize, url: &str, stats: &Mutex<Stats>) -> Report {
    let started = Instant::now();
    let opts = agent::image::fetch::FetchOptions::default();
    match agent::image::fetch::fetch(url, &opts, |_| {}, |_| true).await {
        Ok(summary) => {
            let mut s = stats.lock().unwrap_or_else(|e| e.into_inner());
            s.image_bytes += summary.bytes;
            s.fetches.push((started, Instant::now()));
            Report::Succeeded {
                inventory: None,
                detail: Some(serde_json::json!({"bytes_written": summary.bytes})),
            }
        }
        Err(e) => {
            let text = agent::error_chain(&e);
            stats
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .error(format!("machine {i}: image: {text}"));
            Report::Failed {
                error: proto::ErrorReport {
                    phase: None,
                    message: text,
                    causes: vec![],
                },
            }
        }
    }
}

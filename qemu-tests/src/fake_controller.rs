//! A minimal controller for agent boot tests: speaks the agent protocol (`proto::protocol`)
//! over HTTP/1.1 on 127.0.0.1, records every lookup (with the time it arrived) and event, and
//! answers idle heartbeats from a script (then `power_off`, or `wait` while the test holds
//! the agent to queue more); busy heartbeats (a command running) get `wait` and leave the
//! script alone.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Context;
use proto::protocol::{
    AgentState, Command, EventReport, HeartbeatRequest, HeartbeatResponse, LookupRequest,
    LookupResponse, PATH_EVENTS, PATH_HEARTBEAT, PATH_LOOKUP, Report,
};

/// What the fake saw.
#[derive(Debug, Default)]
pub struct Seen {
    pub lookups: Vec<(Instant, LookupRequest)>,
    pub events: Vec<EventReport>,
    pub heartbeats: u32,
    pub script: Vec<Command>,
    /// While set, an idle heartbeat with the script empty gets `wait` 1 s, not `power_off`.
    pub hold: bool,
}

/// The running fake; its threads stop with the process.
#[derive(Debug, Clone)]
pub struct FakeController {
    pub port: u16,
    pub seen: Arc<Mutex<Seen>>,
}

impl FakeController {
    /// Listens on 127.0.0.1 (a free port); heartbeats get `script` in order, then `power_off`.
    pub fn start(script: Vec<Command>) -> anyhow::Result<Self> {
        let l = TcpListener::bind("127.0.0.1:0").context("binding the fake controller")?;
        let port = l.local_addr()?.port();
        let seen = Arc::new(Mutex::new(Seen {
            script,
            ..Default::default()
        }));
        let s2 = seen.clone();
        std::thread::spawn(move || {
            for c in l.incoming().flatten() {
                let s = s2.clone();
                std::thread::spawn(move || {
                    let _ = serve(c, &s);
                });
            }
        });
        Ok(FakeController { port, seen })
    }

    /// The first lookup, if one arrived.
    pub fn first_lookup(&self) -> Option<(Instant, LookupRequest)> {
        self.seen.lock().ok()?.lookups.first().cloned()
    }

    /// Like [`FakeController::start`], but the agent is held (`wait`) once the script is
    /// done, until [`FakeController::release`]; [`FakeController::queue`] adds commands.
    pub fn start_held(script: Vec<Command>) -> anyhow::Result<Self> {
        let ctl = Self::start(script)?;
        ctl.seen
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .hold = true;
        Ok(ctl)
    }

    /// Appends a command to the script.
    pub fn queue(&self, command: Command) -> anyhow::Result<()> {
        self.seen
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .script
            .push(command);
        Ok(())
    }

    /// Ends the hold: the next idle heartbeat after the script gets `power_off`.
    pub fn release(&self) -> anyhow::Result<()> {
        self.seen
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .hold = false;
        Ok(())
    }

    /// The `n`th (from 1) final result (succeeded or failed) the agent reported, waiting
    /// for it at most `timeout`; fails, with the VM's serial console, when the VM exits or
    /// time runs out.
    pub fn wait_result(
        &self,
        n: usize,
        vm: &mut std::process::Child,
        timeout: std::time::Duration,
        console: &crate::serial::SerialLog,
    ) -> anyhow::Result<Report> {
        let started = Instant::now();
        loop {
            let found = self
                .seen
                .lock()
                .map_err(|_| anyhow::anyhow!("poisoned"))?
                .events
                .iter()
                .filter(|e| !matches!(e.report, Report::Event { .. }))
                .nth(n.saturating_sub(1))
                .map(|e| e.report.clone());
            if let Some(r) = found {
                return Ok(r);
            }
            if started.elapsed() > timeout || vm.try_wait()?.is_some() {
                anyhow::bail!(
                    "no result {n} after {:?}\n--- serial ---\n{}",
                    started.elapsed(),
                    console.text()
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Waits for the first lookup of the agent in `vm` (started at `started`) for at most
    /// `timeout`; fails, with the VM's serial console, when the VM exits or time runs out.
    pub fn wait_lookup(
        &self,
        vm: &mut std::process::Child,
        started: Instant,
        timeout: std::time::Duration,
        console: &crate::serial::SerialLog,
    ) -> anyhow::Result<(Instant, LookupRequest)> {
        loop {
            if let Some(l) = self.first_lookup() {
                return Ok(l);
            }
            if started.elapsed() > timeout || vm.try_wait()?.is_some() {
                anyhow::bail!(
                    "no lookup after {:?}\n--- serial ---\n{}",
                    started.elapsed(),
                    console.text()
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

fn serve(c: TcpStream, seen: &Mutex<Seen>) -> anyhow::Result<()> {
    let mut r = BufReader::new(c.try_clone()?);
    let mut w = c;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
        let mut len = 0usize;
        loop {
            let mut h = String::new();
            r.read_line(&mut h)?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                len = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0u8; len];
        r.read_exact(&mut body)?;
        let now = Instant::now();
        let answer: Option<String> = {
            let mut s = seen.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
            if path == PATH_LOOKUP {
                let req: LookupRequest = serde_json::from_slice(&body)?;
                s.lookups.push((now, req));
                Some(serde_json::to_string(&LookupResponse {
                    node_uuid: uuid::Uuid::from_u128(0x1a),
                    token: Some(format!("t{}", s.lookups.len())),
                    discovered: true,
                    heartbeat_timeout_secs: 5,
                })?)
            } else if path == PATH_HEARTBEAT {
                let req: HeartbeatRequest = serde_json::from_slice(&body)?;
                s.heartbeats += 1;
                let command = if matches!(req.state, AgentState::Busy { .. }) {
                    Command::Wait { seconds: 5 }
                } else if !s.script.is_empty() {
                    s.script.remove(0)
                } else if s.hold {
                    Command::Wait { seconds: 1 }
                } else {
                    Command::PowerOff
                };
                Some(serde_json::to_string(&HeartbeatResponse {
                    command_id: uuid::Uuid::from_u128(u128::from(s.heartbeats)),
                    command,
                })?)
            } else if path == PATH_EVENTS {
                s.events.push(serde_json::from_slice(&body)?);
                None
            } else {
                Some(String::new())
            }
        };
        match answer {
            Some(b) => write!(
                w,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}",
                b.len()
            )?,
            None => write!(w, "HTTP/1.1 204 No Content\r\n\r\n")?,
        }
        w.flush()?;
    }
}

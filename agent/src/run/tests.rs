//! The driver against a fake controller (scripted answers, recorded calls) and a fake host.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use proto::protocol::{Command, HeartbeatResponse, LookupRequest, LookupResponse};
use proto::{Inventory, Phase, ProgressEvent};
use uuid::Uuid;

use super::machine::CallError;
use super::*;

#[derive(Default)]
struct FakeController {
    lookup_failures: Mutex<u32>,
    lookups: Mutex<Vec<LookupRequest>>,
    heartbeats: Mutex<VecDeque<Result<HeartbeatResponse, CallError>>>,
    tokens_seen: Mutex<Vec<String>>,
    events: Mutex<Vec<EventReport>>,
    /// Command ids of busy heartbeats, in order.
    busy: Mutex<Vec<Uuid>>,
}

impl Controller for FakeController {
    async fn lookup(
        &self,
        req: &LookupRequest,
        _token: Option<&str>,
    ) -> Result<LookupResponse, CallError> {
        let mut f = self.lookup_failures.lock().expect("lock");
        if *f > 0 {
            *f -= 1;
            return Err(CallError::TooManyRequests(Some(Duration::from_millis(1))));
        }
        let mut l = self.lookups.lock().expect("lock");
        l.push(req.clone());
        Ok(LookupResponse {
            node_uuid: Uuid::from_u128(1),
            token: Some(format!("tok{}", l.len())),
            discovered: true,
            heartbeat_timeout_secs: 1,
        })
    }

    async fn heartbeat(
        &self,
        token: &str,
        req: &HeartbeatRequest,
        _wait: Duration,
    ) -> Result<HeartbeatResponse, CallError> {
        if let AgentState::Busy { command_id } = req.state {
            self.busy.lock().expect("lock").push(command_id);
            return Ok(HeartbeatResponse {
                command_id: Uuid::nil(),
                command: Command::Wait { seconds: 0 },
            });
        }
        self.tokens_seen.lock().expect("lock").push(token.into());
        self.heartbeats
            .lock()
            .expect("lock")
            .pop_front()
            .unwrap_or(Ok(HeartbeatResponse {
                command_id: Uuid::from_u128(99),
                command: Command::PowerOff,
            }))
    }

    async fn event(&self, _token: &str, rep: &EventReport) -> Result<(), CallError> {
        self.events.lock().expect("lock").push(rep.clone());
        Ok(())
    }
}

#[derive(Default)]
struct FakeHost {
    /// How long each command takes.
    runs_for: Duration,
}

impl Host for FakeHost {
    fn lookup_request(&self) -> LookupRequest {
        exec::lookup_request(Inventory::default(), Some("52:54:00:00:00:01".into()))
    }

    fn execute(&self, command: &Command, sink: &dyn EventSink) -> Report {
        std::thread::sleep(self.runs_for);
        for i in 0..3 {
            // Three progress events in a burst: throttling lets the first through.
            sink.emit(&AgentEvent::Progress(ProgressEvent {
                phase: Phase::Stream,
                bytes_fetched: i,
                bytes_written: i,
                bytes_total: None,
                rate_bps: 0,
                elapsed_ms: 0,
            }));
        }
        Report::Succeeded {
            inventory: None,
            detail: Some(serde_json::json!({ "ran": serde_json::to_value(command).ok() })),
        }
    }
}

fn cmd(id: u128, command: Command) -> Result<HeartbeatResponse, CallError> {
    Ok(HeartbeatResponse {
        command_id: Uuid::from_u128(id),
        command,
    })
}

#[tokio::test]
async fn loop_runs_commands_and_relooks_up_on_401() {
    let ctl = FakeController::default();
    *ctl.lookup_failures.lock().expect("lock") = 2;
    ctl.heartbeats.lock().expect("lock").extend([
        cmd(1, Command::Wait { seconds: 0 }),
        cmd(2, Command::Inspect),
        Err(CallError::Unauthorized),
        cmd(3, Command::Wait { seconds: 0 }),
    ]);
    let halt = drive(&ctl, Arc::new(FakeHost::default())).await;
    assert_eq!(halt, Halt::PowerOff);
    assert_eq!(
        ctl.lookups.lock().expect("lock").len(),
        2,
        "one retry after 401"
    );
    assert_eq!(
        *ctl.tokens_seen.lock().expect("lock"),
        vec!["tok1", "tok1", "tok1", "tok2", "tok2"]
    );
    let ev = ctl.events.lock().expect("lock");
    let kinds: Vec<(u128, &str)> = ev
        .iter()
        .map(|e| {
            (
                e.command_id.as_u128(),
                match &e.report {
                    Report::Event { .. } => "event",
                    Report::Succeeded { .. } => "succeeded",
                    Report::Failed { .. } => "failed",
                },
            )
        })
        .collect();
    assert_eq!(
        kinds,
        vec![(2, "event"), (2, "succeeded"), (99, "succeeded")],
        "progress throttled to one, result, then power_off acknowledged"
    );
}

#[tokio::test]
async fn busy_heartbeats_while_a_command_runs() {
    let ctl = FakeController::default();
    ctl.heartbeats
        .lock()
        .expect("lock")
        .extend([cmd(7, Command::Inspect)]);
    let host = Arc::new(FakeHost {
        runs_for: Duration::from_millis(550),
    });
    let halt = drive_with(&ctl, host, Duration::from_millis(100)).await;
    assert_eq!(halt, Halt::PowerOff);
    let busy = ctl.busy.lock().expect("lock").clone();
    assert!(
        busy.len() >= 3,
        "about five busy heartbeats in 550 ms at 100 ms: {busy:?}"
    );
    assert!(
        busy.iter()
            .all(|id| id.as_u128() == 7 || id.as_u128() == 99)
    );
    assert_eq!(busy[0].as_u128(), 7, "for the running command");
    assert_eq!(
        *ctl.tokens_seen.lock().expect("lock"),
        vec!["tok1", "tok1"],
        "busy heartbeats are not idle ones"
    );
}

/// `run_step` is a long command like the others: busy heartbeats carry its id while it runs,
/// its progress and its result (with the step's detail) are reported; every lookup lists
/// the steps the agent offers.
#[tokio::test]
async fn run_step_runs_like_every_long_command() {
    let ctl = FakeController::default();
    let step = Command::RunStep {
        interface: "deploy".into(),
        step: "scan_disks".into(),
        args: serde_json::json!({"max_bytes": 4096})
            .as_object()
            .cloned()
            .unwrap_or_default(),
    };
    ctl.heartbeats
        .lock()
        .expect("lock")
        .extend([cmd(5, step.clone())]);
    let host = Arc::new(FakeHost {
        runs_for: Duration::from_millis(350),
    });
    assert_eq!(
        drive_with(&ctl, host, Duration::from_millis(100)).await,
        Halt::PowerOff
    );
    assert_eq!(
        ctl.lookups.lock().expect("lock")[0].steps,
        crate::steps::offered()
    );
    let busy = ctl.busy.lock().expect("lock").clone();
    assert!(!busy.is_empty(), "busy heartbeats while the step runs");
    assert_eq!(busy[0].as_u128(), 5);
    let ev = ctl.events.lock().expect("lock");
    let mine: Vec<&Report> = ev
        .iter()
        .filter(|e| e.command_id.as_u128() == 5)
        .map(|e| &e.report)
        .collect();
    assert!(matches!(mine[0], Report::Event { .. }), "{mine:?}");
    assert_eq!(
        mine[1],
        &Report::Succeeded {
            inventory: None,
            detail: Some(serde_json::json!({ "ran": serde_json::to_value(&step).ok() })),
        }
    );
}

#[test]
fn busy_interval_follows_the_controller() {
    let cur = Duration::from_secs(5);
    assert_eq!(
        next_busy_interval(&Command::Wait { seconds: 10 }, cur),
        Duration::from_secs(10)
    );
    assert_eq!(next_busy_interval(&Command::Wait { seconds: 0 }, cur), cur);
    assert_eq!(
        next_busy_interval(&Command::Wait { seconds: 600 }, cur),
        cur
    );
    assert_eq!(next_busy_interval(&Command::Inspect, cur), cur);
}

/// A log writer into a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs `enroll_bmc` on a fake BMC through the real enrolment and result code, logging
/// into `dispatch` on the command's own thread too; the third run meets a BMC that refuses
/// Set User Access.
struct BmcHost {
    bmc: Mutex<crate::bmc::fake::FakeBmc>,
    dispatch: tracing::Dispatch,
    passwords: Mutex<Vec<String>>,
}

impl Host for BmcHost {
    fn lookup_request(&self) -> LookupRequest {
        exec::lookup_request(Inventory::default(), None)
    }

    fn execute(&self, command: &Command, _sink: &dyn EventSink) -> Report {
        tracing::dispatcher::with_default(&self.dispatch, || {
            let Command::EnrollBmc { user } = command else {
                return exec::enroll_report(Err(crate::bmc::EnrollError::NoLanChannel));
            };
            let pw = crate::bmc::Password::generate().expect("getrandom");
            let mut passwords = self.passwords.lock().expect("lock");
            passwords.push(pw.expose().to_owned());
            let mut bmc = self.bmc.lock().expect("lock");
            if passwords.len() == 3 {
                bmc.refuse
                    .push((crate::bmc::wire::CMD_SET_USER_ACCESS, 0xd4));
            }
            exec::enroll_report(crate::bmc::enroll_with(&mut *bmc, user, pw))
        })
    }
}

/// What the agent logs (every level, every target) while it enrols, reports, resets and
/// fails an enrolment holds none of the passwords; the controller gets them in the results.
#[tokio::test]
async fn enrolment_passwords_reach_the_controller_and_never_the_log() {
    let out = Captured::default();
    let writer = out.clone();
    let dispatch = tracing::Dispatch::new(
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish(),
    );
    let _guard = tracing::dispatcher::set_default(&dispatch);
    let ctl = FakeController::default();
    let enroll = || Command::EnrollBmc {
        user: "ingot".into(),
    };
    ctl.heartbeats.lock().expect("lock").extend([
        cmd(1, enroll()),
        cmd(2, enroll()),
        cmd(3, enroll()),
    ]);
    let host = Arc::new(BmcHost {
        bmc: Mutex::new(crate::bmc::fake::FakeBmc::new(8).with_user(2, "admin", "password")),
        dispatch: dispatch.clone(),
        passwords: Mutex::new(Vec::new()),
    });
    assert_eq!(drive(&ctl, host.clone()).await, Halt::PowerOff);

    let passwords = host.passwords.lock().expect("lock").clone();
    assert_eq!(passwords.len(), 3);
    let results: Vec<Report> = ctl
        .events
        .lock()
        .expect("lock")
        .iter()
        .filter(|e| e.command_id.as_u128() <= 3)
        .map(|e| e.report.clone())
        .collect();
    let detail = |r: &Report| match r {
        Report::Succeeded {
            detail: Some(d), ..
        } => serde_json::from_value::<proto::protocol::BmcEnrolled>(d.clone()).ok(),
        _ => None,
    };
    let first = detail(&results[0]).expect("first enrolment");
    let second = detail(&results[1]).expect("second enrolment");
    assert_eq!((first.user_id, second.user_id), (3, 3), "reset in place");
    assert_eq!(first.password, passwords[0]);
    assert_eq!(second.password, passwords[1]);
    let Report::Failed { error } = &results[2] else {
        panic!("the third enrolment fails: {:?}", results[2]);
    };
    assert_eq!(
        error.message,
        "BMC enrolment failed: Set User Access (channel 1, user 3)"
    );
    assert_eq!(
        error.causes,
        vec!["completion code 0xd4 (insufficient privilege level)"]
    );

    let log = String::from_utf8(out.0.lock().expect("lock").clone()).expect("utf-8");
    for needle in [
        "running command",
        "BMC user enrolled",
        "reporting result",
        "command failed",
    ] {
        assert!(log.contains(needle), "{needle} not logged:\n{log}");
    }
    for pw in &passwords {
        assert!(!log.contains(pw.as_str()), "a password in the log:\n{log}");
    }
}

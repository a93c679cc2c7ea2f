//! Table tests of the protocol state machine.

use proto::{ErrorReport, WipeMode};

use super::*;

fn sess() -> Session {
    Session {
        node: Uuid::from_u128(1),
        token: "t1".into(),
        heartbeat_timeout_secs: 30,
    }
}

fn lookup_ok(token: &str) -> Outcome {
    Outcome::Lookup(Ok(LookupResponse {
        node_uuid: Uuid::from_u128(1),
        token: Some(token.into()),
        discovered: true,
        heartbeat_timeout_secs: 30,
    }))
}

fn hb(cmd: Command) -> Outcome {
    Outcome::Heartbeat(Ok(HeartbeatResponse {
        command_id: Uuid::from_u128(9),
        command: cmd,
    }))
}

fn heartbeat(delay: Duration, failures: u32) -> State {
    State::Heartbeat {
        session: sess(),
        delay,
        failures,
    }
}

fn ok_report() -> Report {
    Report::Succeeded {
        inventory: None,
        detail: None,
    }
}

fn pending(after: After) -> Pending {
    Pending {
        command_id: Uuid::from_u128(9),
        report: ok_report(),
        after,
    }
}

fn reporting(after: After, failures: u32) -> State {
    State::Report {
        session: sess(),
        pending: pending(after),
        delay: Duration::ZERO,
        failures,
    }
}

fn lookup(delay_ms: u64, failures: u32, p: Option<Pending>) -> State {
    State::Lookup {
        delay: Duration::from_millis(delay_ms),
        failures,
        pending: p,
        token: None,
    }
}

/// A lookup by an agent that holds token `t1`.
fn relookup(delay_ms: u64, failures: u32, p: Option<Pending>) -> State {
    State::Lookup {
        delay: Duration::from_millis(delay_ms),
        failures,
        pending: p,
        token: Some("t1".into()),
    }
}

fn lookup_without_token() -> Outcome {
    Outcome::Lookup(Ok(LookupResponse {
        node_uuid: Uuid::from_u128(1),
        token: None,
        discovered: false,
        heartbeat_timeout_secs: 30,
    }))
}

#[test]
fn transitions() {
    let wipe = Command::Wipe {
        mode: WipeMode::Metadata,
        devices: vec!["/dev/loop0".into()],
    };
    let run_step = Command::RunStep {
        interface: "deploy".into(),
        step: "scan_disks".into(),
        args: serde_json::Map::new(),
    };
    let transport = || CallError::Transport("connection refused".into());
    let failed = Report::Failed {
        error: ErrorReport {
            phase: None,
            message: "boom".into(),
            causes: vec![],
        },
    };
    let table: Vec<(&str, State, Outcome, State)> = vec![
        (
            "lookup ok -> heartbeat",
            State::start(),
            lookup_ok("t1"),
            heartbeat(Duration::ZERO, 0),
        ),
        (
            "lookup refused -> backoff",
            State::start(),
            Outcome::Lookup(Err(transport())),
            lookup(500, 1, None),
        ),
        (
            "lookup backoff doubles",
            lookup(500, 1, None),
            Outcome::Lookup(Err(transport())),
            lookup(1000, 2, None),
        ),
        (
            "429 honours retry-after",
            lookup(500, 1, None),
            Outcome::Lookup(Err(CallError::TooManyRequests(Some(Duration::from_secs(
                7,
            ))))),
            lookup(7000, 2, None),
        ),
        (
            "429 without retry-after backs off",
            State::start(),
            Outcome::Lookup(Err(CallError::TooManyRequests(None))),
            lookup(500, 1, None),
        ),
        (
            "wait -> heartbeat later",
            heartbeat(Duration::ZERO, 0),
            hb(Command::Wait { seconds: 5 }),
            heartbeat(Duration::from_secs(5), 0),
        ),
        (
            "wipe -> run",
            heartbeat(Duration::ZERO, 0),
            hb(wipe.clone()),
            State::Run {
                session: sess(),
                command_id: Uuid::from_u128(9),
                command: wipe.clone(),
            },
        ),
        (
            "run_step -> run, like every long command",
            heartbeat(Duration::ZERO, 0),
            hb(run_step.clone()),
            State::Run {
                session: sess(),
                command_id: Uuid::from_u128(9),
                command: run_step.clone(),
            },
        ),
        (
            "inspect -> run",
            heartbeat(Duration::ZERO, 2),
            hb(Command::Inspect),
            State::Run {
                session: sess(),
                command_id: Uuid::from_u128(9),
                command: Command::Inspect,
            },
        ),
        (
            "reboot -> report, then halt",
            heartbeat(Duration::ZERO, 0),
            hb(Command::Reboot),
            reporting(After::Halt(Halt::Reboot), 0),
        ),
        (
            "power_off -> report, then halt",
            heartbeat(Duration::ZERO, 0),
            hb(Command::PowerOff),
            reporting(After::Halt(Halt::PowerOff), 0),
        ),
        (
            "heartbeat 401 -> lookup, holding the token",
            heartbeat(Duration::ZERO, 0),
            Outcome::Heartbeat(Err(CallError::Unauthorized)),
            relookup(0, 0, None),
        ),
        (
            "a later lookup brings no token: the agent keeps its own",
            relookup(0, 0, None),
            lookup_without_token(),
            heartbeat(Duration::ZERO, 0),
        ),
        (
            "no token brought and none held: look up again later",
            State::start(),
            lookup_without_token(),
            lookup(500, 1, None),
        ),
        (
            "409 (another session is live) backs off, keeping the token",
            relookup(0, 1, None),
            Outcome::Lookup(Err(CallError::Status(409, "live".into()))),
            relookup(1000, 2, None),
        ),
        (
            "a new token replaces the held one",
            relookup(0, 0, None),
            lookup_ok("t2"),
            State::Heartbeat {
                session: Session {
                    token: "t2".into(),
                    ..sess()
                },
                delay: Duration::ZERO,
                failures: 0,
            },
        ),
        (
            "heartbeat error -> backoff",
            heartbeat(Duration::ZERO, 1),
            Outcome::Heartbeat(Err(CallError::Status(500, "oops".into()))),
            heartbeat(Duration::from_secs(1), 2),
        ),
        (
            "command done -> report",
            State::Run {
                session: sess(),
                command_id: Uuid::from_u128(9),
                command: wipe.clone(),
            },
            Outcome::Ran(failed.clone()),
            State::Report {
                session: sess(),
                pending: Pending {
                    command_id: Uuid::from_u128(9),
                    report: failed.clone(),
                    after: After::Continue,
                },
                delay: Duration::ZERO,
                failures: 0,
            },
        ),
        (
            "report sent -> heartbeat",
            reporting(After::Continue, 3),
            Outcome::Reported(Ok(())),
            heartbeat(Duration::ZERO, 0),
        ),
        (
            "report sent -> halt",
            reporting(After::Halt(Halt::PowerOff), 0),
            Outcome::Reported(Ok(())),
            State::Halt(Halt::PowerOff),
        ),
        (
            "report 503 -> the same report again",
            reporting(After::Continue, 0),
            Outcome::Reported(Err(CallError::Status(503, "store".into()))),
            State::Report {
                session: sess(),
                pending: pending(After::Continue),
                delay: Duration::from_millis(500),
                failures: 1,
            },
        ),
        (
            "report error -> retry",
            reporting(After::Continue, 0),
            Outcome::Reported(Err(transport())),
            State::Report {
                session: sess(),
                pending: pending(After::Continue),
                delay: Duration::from_millis(500),
                failures: 1,
            },
        ),
        (
            "halt goes ahead when the controller is gone",
            reporting(After::Halt(Halt::Reboot), HALT_REPORT_TRIES - 1),
            Outcome::Reported(Err(transport())),
            State::Halt(Halt::Reboot),
        ),
        (
            "report 401 -> lookup keeping the report",
            reporting(After::Continue, 0),
            Outcome::Reported(Err(CallError::Unauthorized)),
            relookup(0, 0, Some(pending(After::Continue))),
        ),
        (
            "lookup with a pending report -> report with the new token",
            lookup(0, 0, Some(pending(After::Continue))),
            lookup_ok("t2"),
            State::Report {
                session: Session {
                    token: "t2".into(),
                    ..sess()
                },
                pending: pending(After::Continue),
                delay: Duration::ZERO,
                failures: 0,
            },
        ),
        (
            "mismatched outcome restarts",
            heartbeat(Duration::ZERO, 0),
            Outcome::Ran(ok_report()),
            State::start(),
        ),
        (
            "halt is final",
            State::Halt(Halt::Reboot),
            lookup_ok("x"),
            State::Halt(Halt::Reboot),
        ),
    ];
    for (name, from, outcome, want) in table {
        assert_eq!(step(from, outcome), want, "{name}");
    }
}

#[test]
fn actions_follow_states() {
    assert_eq!(
        action(&State::start()),
        Action::Lookup {
            delay: Duration::ZERO,
            token: None,
        }
    );
    let s = heartbeat(Duration::from_secs(3), 0);
    assert!(
        matches!(action(&s), Action::Heartbeat { delay, .. } if delay == Duration::from_secs(3))
    );
    assert_eq!(
        action(&State::Halt(Halt::PowerOff)),
        Action::Halt(Halt::PowerOff)
    );
}

#[test]
fn backoff_is_capped() {
    assert_eq!(backoff(1), Duration::from_millis(500));
    assert_eq!(backoff(4), Duration::from_secs(4));
    assert_eq!(backoff(40), Duration::from_secs(30));
}

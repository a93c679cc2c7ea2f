//! The agent's protocol loop as a pure state machine: no IO, no clock.
//!
//! ```text
//!            ok                         command                      done
//!  Lookup --------> Heartbeat ------------------------> Run -----------------> Report
//!   ^  | error/429:    |  ^  | wait N: heartbeat again                          |  |
//!   |  | backoff       |  |  | error: backoff                 ok (continue)     |  |
//!   |  +---------------+  +--+------------------------------------------------<-+  |
//!   |        401                  reboot / power_off: Report, then Halt            |
//!   +-----------------------------------------------------------------------------+
//!                     401 while reporting: lookup again, then send the report
//! ```
//!
//! The controller hands a token out once per boot of the agent: a later lookup answers
//! `token: null`, and the agent goes on with the token it holds (sent with every lookup, so
//! the controller knows the live session's own agent). A lookup that brings no token while
//! the agent holds none is a failure, retried with backoff; so are 409 (another session is
//! live) and 404 (no agent is expected for this machine now).
//!
//! [`action`] says what to do in a state; the driver performs it and feeds the [`Outcome`]
//! to [`step`], which returns the next state.

use std::time::Duration;

use proto::protocol::{Command, HeartbeatResponse, LookupResponse, Report};
use uuid::Uuid;

/// An authenticated session with the controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub node: Uuid,
    pub token: String,
    pub heartbeat_timeout_secs: u32,
}

/// How the machine stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Halt {
    Reboot,
    PowerOff,
}

/// What happens after a report went through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    Continue,
    Halt(Halt),
}

/// A result waiting to be sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    pub command_id: Uuid,
    pub report: Report,
    pub after: After,
}

#[derive(Debug, Clone, PartialEq)]
pub enum State {
    /// Introduce ourselves (after `delay`); a pending report is sent once we have a session.
    Lookup {
        delay: Duration,
        failures: u32,
        pending: Option<Pending>,
        /// The token this agent holds from an earlier lookup of the same boot.
        token: Option<String>,
    },
    /// Ask for work (after `delay`).
    Heartbeat {
        session: Session,
        delay: Duration,
        failures: u32,
    },
    /// Run a command.
    Run {
        session: Session,
        command_id: Uuid,
        command: Command,
    },
    /// Send a command's result (after `delay`).
    Report {
        session: Session,
        pending: Pending,
        delay: Duration,
        failures: u32,
    },
    /// Reboot or power off now.
    Halt(Halt),
}

impl State {
    /// The first state.
    pub fn start() -> State {
        State::Lookup {
            delay: Duration::ZERO,
            failures: 0,
            pending: None,
            token: None,
        }
    }
}

/// Why a call to the controller failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// 401: the token is stale or missing.
    Unauthorized,
    /// 429, with the server's `Retry-After` if any.
    TooManyRequests(Option<Duration>),
    /// Connection refused, reset, timed out, TLS failure.
    Transport(String),
    /// Any other HTTP error status.
    Status(u16, String),
}

/// The result of performing an [`Action`].
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Lookup(Result<LookupResponse, CallError>),
    Heartbeat(Result<HeartbeatResponse, CallError>),
    Ran(Report),
    Reported(Result<(), CallError>),
}

/// What the driver does in a state.
#[derive(Debug, Clone, PartialEq)]
pub enum Action<'a> {
    Lookup {
        delay: Duration,
        /// The token held, sent along so the controller knows this agent.
        token: Option<&'a str>,
    },
    Heartbeat {
        session: &'a Session,
        delay: Duration,
    },
    Run {
        session: &'a Session,
        command_id: Uuid,
        command: &'a Command,
    },
    Report {
        session: &'a Session,
        pending: &'a Pending,
        delay: Duration,
    },
    Halt(Halt),
}

/// Report retries before a reboot or power-off goes ahead without the controller.
pub const HALT_REPORT_TRIES: u32 = 5;

/// Exponential backoff: 0.5 s, 1 s, 2 s, ... capped at 30 s.
pub fn backoff(failures: u32) -> Duration {
    let ms = 500u64.saturating_mul(1u64 << failures.saturating_sub(1).min(16));
    Duration::from_millis(ms.min(30_000))
}

pub fn action(s: &State) -> Action<'_> {
    match s {
        State::Lookup { delay, token, .. } => Action::Lookup {
            delay: *delay,
            token: token.as_deref(),
        },
        State::Heartbeat { session, delay, .. } => Action::Heartbeat {
            session,
            delay: *delay,
        },
        State::Run {
            session,
            command_id,
            command,
        } => Action::Run {
            session,
            command_id: *command_id,
            command,
        },
        State::Report {
            session,
            pending,
            delay,
            ..
        } => Action::Report {
            session,
            pending,
            delay: *delay,
        },
        State::Halt(h) => Action::Halt(*h),
    }
}

fn retry_delay(e: &CallError, failures: u32) -> Duration {
    match e {
        CallError::TooManyRequests(Some(d)) => *d,
        _ => backoff(failures),
    }
}

/// The session a lookup answer gives: its token, else the one held. `None` when neither.
fn session_of(r: LookupResponse, held: Option<String>) -> Option<Session> {
    Some(Session {
        node: r.node_uuid,
        token: r.token.or(held)?,
        heartbeat_timeout_secs: r.heartbeat_timeout_secs,
    })
}

/// The next state. An outcome that does not belong to the state (a driver bug) restarts
/// with a lookup.
pub fn step(s: State, o: Outcome) -> State {
    match (s, o) {
        (
            State::Lookup {
                pending,
                token,
                failures,
                ..
            },
            Outcome::Lookup(Ok(r)),
        ) => {
            let Some(session) = session_of(r, token) else {
                // Not this agent's session: wait for the controller to boot us again.
                return State::Lookup {
                    delay: backoff(failures + 1),
                    failures: failures + 1,
                    pending,
                    token: None,
                };
            };
            match pending {
                Some(pending) => State::Report {
                    session,
                    pending,
                    delay: Duration::ZERO,
                    failures: 0,
                },
                None => State::Heartbeat {
                    session,
                    delay: Duration::ZERO,
                    failures: 0,
                },
            }
        }
        (
            State::Lookup {
                failures,
                pending,
                token,
                ..
            },
            Outcome::Lookup(Err(e)),
        ) => State::Lookup {
            delay: retry_delay(&e, failures + 1),
            failures: failures + 1,
            pending,
            token,
        },
        (State::Heartbeat { session, .. }, Outcome::Heartbeat(Ok(hb))) => match hb.command {
            Command::Wait { seconds } => State::Heartbeat {
                session,
                delay: Duration::from_secs(u64::from(seconds)),
                failures: 0,
            },
            Command::Reboot | Command::PowerOff => {
                let halt = if hb.command == Command::Reboot {
                    Halt::Reboot
                } else {
                    Halt::PowerOff
                };
                State::Report {
                    session,
                    pending: Pending {
                        command_id: hb.command_id,
                        report: Report::Succeeded {
                            inventory: None,
                            detail: None,
                        },
                        after: After::Halt(halt),
                    },
                    delay: Duration::ZERO,
                    failures: 0,
                }
            }
            command => State::Run {
                session,
                command_id: hb.command_id,
                command,
            },
        },
        (State::Heartbeat { session, .. }, Outcome::Heartbeat(Err(CallError::Unauthorized))) => {
            State::Lookup {
                delay: Duration::ZERO,
                failures: 0,
                pending: None,
                token: Some(session.token),
            }
        }
        (
            State::Heartbeat {
                session, failures, ..
            },
            Outcome::Heartbeat(Err(e)),
        ) => State::Heartbeat {
            session,
            delay: retry_delay(&e, failures + 1),
            failures: failures + 1,
        },
        (
            State::Run {
                session,
                command_id,
                ..
            },
            Outcome::Ran(report),
        ) => State::Report {
            session,
            pending: Pending {
                command_id,
                report,
                after: After::Continue,
            },
            delay: Duration::ZERO,
            failures: 0,
        },
        (
            State::Report {
                session, pending, ..
            },
            Outcome::Reported(Ok(())),
        ) => match pending.after {
            After::Continue => State::Heartbeat {
                session,
                delay: Duration::ZERO,
                failures: 0,
            },
            After::Halt(h) => State::Halt(h),
        },
        (
            State::Report {
                session, pending, ..
            },
            Outcome::Reported(Err(CallError::Unauthorized)),
        ) => State::Lookup {
            delay: Duration::ZERO,
            failures: 0,
            pending: Some(pending),
            token: Some(session.token),
        },
        (
            State::Report {
                session,
                pending,
                failures,
                ..
            },
            Outcome::Reported(Err(e)),
        ) => match pending.after {
            After::Halt(h) if failures + 1 >= HALT_REPORT_TRIES => State::Halt(h),
            _ => State::Report {
                session,
                delay: retry_delay(&e, failures + 1),
                pending,
                failures: failures + 1,
            },
        },
        (State::Halt(h), _) => State::Halt(h),
        (_, _) => State::start(),
    }
}

#[cfg(test)]
mod tests;

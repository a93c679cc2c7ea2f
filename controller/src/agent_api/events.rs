//! `POST /agent/v1/heartbeat` and `/events`: the long-poll of a session for its next
//! command, and the progress and results of the commands it was handed.
//!
//! A result is stored (the node's wait completed through [`Conductor::agent_finished`],
//! inventory and detail written) before it is answered 2xx; when the store fails, the
//! answer is 503 and the command stays the session's, so the agent's retry (same command
//! id) applies it once; a report of a result already stored is answered 204 and changes
//! nothing.
//!
//! [`Conductor::agent_finished`]: crate::conductor::Conductor::agent_finished

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderMap, StatusCode};
use proto::AgentEvent;
use proto::protocol::{
    AgentState, Command, EventReport, HeartbeatRequest, HeartbeatResponse, Report,
};
use uuid::Uuid;

use super::{AgentApiState, AgentError, PROGRESS_KEY, authorize, bad_json, write_agent_fields};
use crate::conductor::{ConductorError, ProvisionRequest};
use crate::drivers::agent::INSTANCE_DEVICE_KEY;
use crate::drivers::wipe_proof;
use crate::hub::Claim;
use crate::machine::Verb;
use crate::store::StoreError;

pub(super) async fn heartbeat(
    State(st): State<AgentApiState>,
    headers: HeaderMap,
    body: Result<Json<HeartbeatRequest>, JsonRejection>,
) -> Result<Json<HeartbeatResponse>, AgentError> {
    let Json(req) = body.map_err(bad_json)?;
    let node = req.node_uuid;
    let session = authorize(&st, &headers, node).await?;
    if let AgentState::Busy { command_id } = req.state {
        // A keep-alive while a command runs: nothing new is handed out. Only work this
        // controller handed to this session keeps a wait alive: an agent still busy with a
        // command from before a restart must not hold the node's wait open forever.
        st.hub.touch(node).await?;
        if st.hub.sent(node, &session, command_id).await?.is_some() {
            st.conductor.agent_alive(node);
        }
        return Ok(Json(HeartbeatResponse {
            command_id: Uuid::nil(),
            command: Command::Wait { seconds: 5 },
        }));
    }
    // An idle agent is a sign of life: a wait the node is in counts from now.
    st.conductor.agent_alive(node);
    // An idle agent runs nothing: what this session was handed and never reported went to
    // a dead connection. Hand it out again, to this session only.
    let lost = st.hub.requeue_sent(node, &session).await?;
    if lost > 0 {
        tracing::warn!(node = %node, lost, "agent is idle: handing its lost commands out again");
    }
    let answer = match st.hub.next(node, &session, st.heartbeat_timeout).await? {
        Some((command_id, command)) => {
            tracing::info!(node = %node, command_id = %command_id, "command handed to the agent");
            HeartbeatResponse {
                command_id,
                command,
            }
        }
        None => HeartbeatResponse {
            command_id: Uuid::nil(),
            command: Command::Wait { seconds: 1 },
        },
    };
    Ok(Json(answer))
}

pub(super) async fn events(
    State(st): State<AgentApiState>,
    headers: HeaderMap,
    body: Result<Json<EventReport>, JsonRejection>,
) -> Result<StatusCode, AgentError> {
    let Json(rep) = body.map_err(bad_json)?;
    let node = rep.node_uuid;
    let t0 = std::time::Instant::now();
    let session = authorize(&st, &headers, node).await?;
    st.hub.touch(node).await?;
    let t_auth = t0.elapsed();
    let unknown = || {
        AgentError::new(
            StatusCode::NOT_FOUND,
            format!("command {} is not running on node {node}", rep.command_id),
        )
    };
    let event = match rep.report {
        Report::Event { event } => {
            if st.hub.sent(node, &session, rep.command_id).await?.is_none() {
                return Err(unknown());
            }
            // Progress of work this controller handed out: the wait counts from now.
            st.conductor.agent_alive(node);
            if let AgentEvent::Progress(p) = event {
                st.metrics.agent_progress(
                    rep.command_id,
                    &phase_name(p.phase),
                    p.bytes_written,
                    p.rate_bps,
                );
                let value = crate::hub::AgentProgress {
                    command_id: Some(rep.command_id),
                    phase: phase_name(p.phase),
                    bytes_fetched: p.bytes_fetched,
                    bytes_written: p.bytes_written,
                    bytes_total: p.bytes_total,
                    rate_bps: p.rate_bps,
                    elapsed_ms: p.elapsed_ms,
                }
                .to_value();
                write_agent_fields(st.store.as_ref(), node, |n| {
                    n.driver_internal_info
                        .insert(PROGRESS_KEY.into(), value.clone());
                })
                .await?;
            }
            return Ok(StatusCode::NO_CONTENT);
        }
        result => result,
    };
    let command = match st.hub.claim_result(node, &session, rep.command_id).await? {
        Claim::Apply(command) => command,
        Claim::Duplicate => {
            tracing::info!(node = %node, command_id = %rep.command_id, "result reported again; it is stored already");
            return Ok(StatusCode::NO_CONTENT);
        }
        Claim::InProgress => {
            return Err(AgentError {
                retry_after_secs: 1,
                ..AgentError::unavailable()
            });
        }
        Claim::Unknown => return Err(unknown()),
    };
    // What the job wrote, for `/metrics`: a deploy's result says how much in all.
    let (phase, final_bytes) = match (&command, &event) {
        (Command::Deploy(_), Report::Succeeded { detail, .. }) => (
            "stream",
            detail
                .as_ref()
                .and_then(|d| d.get("bytes_written"))
                .and_then(serde_json::Value::as_u64),
        ),
        (Command::Wipe { .. }, _) => ("wipe", None),
        _ => ("stream", None),
    };
    let t_claim = t0.elapsed();
    let stored = store_result(&st, node, &command, event).await;
    let t_store = t0.elapsed();
    match stored {
        Ok(()) => {
            st.metrics.agent_done(rep.command_id, phase, final_bytes);
            st.hub.result_stored(rep.command_id).await?;
            tracing::debug!(node = %node, auth = ?t_auth, claim = ?t_claim, store = ?t_store, done = ?t0.elapsed(), "result timing");
            if matches!(command, Command::Reboot | Command::PowerOff) {
                st.hub.session_ended(node).await?;
            }
            Ok(StatusCode::NO_CONTENT)
        }
        Err(e) => {
            if let Err(undo) = st.hub.result_not_stored(rep.command_id).await {
                // The claim goes stale and the agent's retry takes it (`REPORT_STALE`).
                tracing::warn!(node = %node, error = %undo, "could not give a result claim back");
            }
            Err(e)
        }
    }
}

/// Stores a command's result: its detail or inventory, then the node's wait completed.
async fn store_result(
    st: &AgentApiState,
    node: Uuid,
    command: &Command,
    report: Report,
) -> Result<(), AgentError> {
    if let Command::EnrollBmc { .. } = command {
        // Its detail holds a password: it goes to the node's sealed driver_info only,
        // never to `agent_last_result`.
        return bmc_enrolled(st, node, report).await;
    }
    // Inspect and wipe also run as service steps, which wait in `service wait`, and a wipe
    // as a deploy step, which waits in `wait call-back`.
    let state = st
        .store
        .get_node_by_uuid(node)
        .await?
        .map(|n| n.provision_state)
        .unwrap_or_default();
    let Some(wait) = wait_state_for(command, &state) else {
        if let Report::Failed { error } = &report {
            tracing::warn!(node = %node, error = %error.message, "agent command failed");
        }
        return Ok(());
    };
    match report {
        Report::Succeeded { inventory, detail } => {
            // What RAID the command built or destroyed (`raid_config`).
            let now = chrono::Utc::now()
                .format("%Y-%m-%d %H:%M:%S%.6f")
                .to_string();
            match crate::drivers::raid::config_after(command, detail.as_ref(), &now) {
                None => {}
                Some(Ok(config)) => {
                    write_agent_fields(st.store.as_ref(), node, |n| {
                        n.raid_config.clone_from(&config);
                    })
                    .await?;
                }
                Some(Err(reason)) => {
                    tracing::warn!(node = %node, error = %reason, "agent RAID result refused");
                    return finish(st, node, wait, Err(reason)).await;
                }
            }
            if let Some(detail) = &detail {
                // The disk a deploy wrote (every member disk of a software RAID): service
                // steps never erase it.
                let device = matches!(command, Command::Deploy(_))
                    .then(|| crate::drivers::raid::written_disks(detail))
                    .flatten();
                write_agent_fields(st.store.as_ref(), node, |n| {
                    n.driver_internal_info
                        .insert("agent_last_result".into(), detail.clone());
                    if let Some(d) = &device {
                        n.driver_internal_info
                            .insert(INSTANCE_DEVICE_KEY.into(), d.clone());
                    }
                })
                .await?;
            }
            match command {
                Command::Inspect => {
                    let Some(inv) = inventory else {
                        return finish(
                            st,
                            node,
                            wait,
                            Err("the agent reported no inventory".into()),
                        )
                        .await;
                    };
                    if let Err(reason) = st.discovery.refresh(st.store.as_ref(), node, &inv).await?
                    {
                        return finish(st, node, wait, Err(reason)).await;
                    }
                }
                Command::Wipe { devices, .. } => {
                    // A whole-machine wipe must prove it covered every inventoried disk.
                    if devices.is_empty()
                        && let Err(reason) = wipe_proof::check(
                            st.store.as_ref(),
                            st.conductor.name(),
                            node,
                            detail.as_ref(),
                        )
                        .await?
                    {
                        tracing::warn!(node = %node, error = %reason, "cleaning refused");
                        return finish(st, node, wait, Err(reason)).await;
                    }
                }
                _ => {}
            }
            finish(st, node, wait, Ok(())).await
        }
        Report::Failed { error } => {
            let mut text = error.message.clone();
            for cause in &error.causes {
                text.push_str(": ");
                text.push_str(cause);
            }
            finish(st, node, wait, Err(text)).await
        }
        Report::Event { .. } => Ok(()),
    }
}

/// PURE: the wait state a command's result completes on a node in `state` (service steps
/// inspect and wipe; a deploy step wipes), `None` for commands no state waits for.
fn wait_state_for(command: &Command, state: &str) -> Option<&'static str> {
    let servicing = matches!(state, "servicing" | "service wait");
    let deploying = matches!(state, "deploying" | "wait call-back");
    Some(match command {
        Command::Inspect | Command::Wipe { .. } | Command::RunStep { .. } if servicing => {
            "service wait"
        }
        Command::Wipe { .. } | Command::RunStep { .. } if deploying => "wait call-back",
        Command::RunStep { .. } => "clean wait",
        Command::Inspect => "inspect wait",
        Command::Wipe { .. } => "clean wait",
        Command::Deploy(_) => "wait call-back",
        Command::Wait { .. } | Command::Reboot | Command::PowerOff | Command::EnrollBmc { .. } => {
            return None;
        }
    })
}

/// The result of `enroll_bmc`: the node gets the BMC and is managed (which reads its power
/// state over the LAN with the new credentials), or records why not.
async fn bmc_enrolled(st: &AgentApiState, node: Uuid, report: Report) -> Result<(), AgentError> {
    use crate::discovery::bmc_enrol::{self, ApplyError};
    let conductor = st.conductor.name();
    let parsed = match report {
        Report::Succeeded { detail, .. } => bmc_enrol::parse(detail.as_ref()),
        Report::Failed { error } => {
            let mut text = error.message;
            for cause in &error.causes {
                text.push_str(": ");
                text.push_str(cause);
            }
            Err(text)
        }
        Report::Event { .. } => return Ok(()),
    };
    let bmc = match parsed {
        Ok(bmc) => bmc,
        Err(reason) => {
            tracing::warn!(node = %node, error = %reason, "in-band BMC enrolment failed");
            if bmc_enrol::failed(st.store.as_ref(), node, &reason, conductor).await?
                && let Err(e) = st
                    .conductor
                    .provision(node, ProvisionRequest::new(Verb::Manage))
                    .await
            {
                tracing::warn!(node = %node, error = %e, "inspection rule could not manage the node");
            }
            return Ok(());
        }
    };
    match bmc_enrol::apply(st.store.as_ref(), node, &bmc, conductor).await {
        Ok(()) => {}
        Err(ApplyError::Refused(why)) => {
            tracing::warn!(node = %node, reason = %why, "in-band BMC credentials not applied");
            return Ok(());
        }
        Err(ApplyError::Store(e)) => return Err(e.into()),
    }
    tracing::info!(node = %node, bmc = %bmc.address, user = %bmc.username, "BMC enrolled in-band; managing");
    if let Err(e) = st
        .conductor
        .provision(node, ProvisionRequest::new(Verb::Manage))
        .await
    {
        tracing::warn!(node = %node, error = %e, "managing the node with its enrolled BMC failed");
    }
    Ok(())
}

/// The state a node is in between the conductor handing a command to the hub and saving
/// `wait_state`: a fast agent can report in that gap, so its result must wait, not be
/// dropped.
fn entering_state(wait_state: &str) -> Option<&'static str> {
    match wait_state {
        "inspect wait" => Some("inspecting"),
        "clean wait" => Some("cleaning"),
        "wait call-back" => Some("deploying"),
        "service wait" => Some("servicing"),
        _ => None,
    }
}

/// Completes the node's wait when it is in `wait_state`; retries while the conductor task
/// that hands out the command has not saved the wait state yet, or still holds the lock.
/// `Ok` once the result is stored, or when it no longer applies (the node left the wait:
/// abort, timeout); 503 when it could not be stored.
async fn finish(
    st: &AgentApiState,
    node: Uuid,
    wait_state: &str,
    result: Result<(), String>,
) -> Result<(), AgentError> {
    for tries in 0..500 {
        let current = match st.store.get_node_by_uuid(node).await? {
            Some(n) if n.provision_state == wait_state => n,
            // The task that sent the command has not saved the wait state yet (a fast agent
            // answers before the conductor's transaction commits): wait for it.
            Some(n)
                if n.reservation.is_some()
                    || entering_state(wait_state) == Some(n.provision_state.as_str()) =>
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
            Some(n) => {
                tracing::info!(node = %node, state = %n.provision_state, "agent result outside a wait state");
                return Ok(());
            }
            None => return Ok(()),
        };
        match st
            .conductor
            .agent_finished_on(current, result.clone())
            .await
        {
            Ok(()) => {
                tracing::debug!(node = %node, tries, "result handed to the conductor");
                return Ok(());
            }
            Err(ConductorError::Locked { .. }) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(ConductorError::Store(e)) => return Err(e.into()),
            Err(ConductorError::ShuttingDown(_)) => return Err(AgentError::unavailable()),
            Err(e) => {
                tracing::warn!(node = %node, error = %e, "agent result not accepted");
                return Ok(());
            }
        }
    }
    tracing::error!(node = %node, "node stayed locked; agent result not stored");
    Err(StoreError::Stale { uuid: node }.into())
}

/// A progress phase's wire name (`stream`, `wipe`, ...), a bounded metric label.
fn phase_name(phase: proto::Phase) -> String {
    serde_json::to_value(phase)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "other".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_wait_for_the_state_before_each_wait() {
        assert_eq!(entering_state("inspect wait"), Some("inspecting"));
        assert_eq!(entering_state("clean wait"), Some("cleaning"));
        assert_eq!(entering_state("wait call-back"), Some("deploying"));
        assert_eq!(entering_state("manageable"), None);
        assert_eq!(entering_state("service wait"), Some("servicing"));
    }

    #[test]
    fn results_complete_the_wait_of_their_phase() {
        let wipe = Command::Wipe {
            mode: proto::WipeMode::Secure,
            devices: vec!["/dev/vdb".into()],
        };
        let cases: Vec<(Command, &str, Option<&str>)> = vec![
            (Command::Inspect, "inspect wait", Some("inspect wait")),
            (Command::Inspect, "service wait", Some("service wait")),
            (wipe.clone(), "clean wait", Some("clean wait")),
            (wipe.clone(), "cleaning", Some("clean wait")),
            (wipe.clone(), "servicing", Some("service wait")),
            (wipe.clone(), "wait call-back", Some("wait call-back")),
            (wipe, "deploying", Some("wait call-back")),
            (Command::Reboot, "clean wait", None),
            (Command::PowerOff, "service wait", None),
            (Command::Wait { seconds: 1 }, "clean wait", None),
            (
                Command::EnrollBmc {
                    user: "ingot".into(),
                },
                "enroll",
                None,
            ),
        ];
        for (command, state, want) in cases {
            assert_eq!(wait_state_for(&command, state), want, "{command:?} {state}");
        }
    }
}

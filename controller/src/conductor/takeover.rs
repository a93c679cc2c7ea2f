//! What a conductor does with interrupted nodes, at its start and when another replica dies.
//!
//! Every node in a transient or wait state carries the name of the conductor that put it
//! there (`driver_internal_info.conductor_affinity`, as Ironic's `conductor_affinity`,
//! stamped by the task's transition commit). At start a conductor recovers its own
//! interrupted nodes (its previous run's tasks and timers are gone) and those of conductors
//! that are not alive; while running, the survivors recover a replica's nodes when its
//! heartbeat stops (`heartbeat_timeout`). A node another live replica works on is left
//! alone.
//!
//! Recovering means: a node in a **wait** state is adopted. Its agent session and commands
//! are in the database (`store::sessions`), so the agent's next heartbeat and result reach
//! any replica: the adopter stamps itself, arms the wait's timer, and the deploy, cleaning
//! or inspection finishes. A node in a **transient** state was in a step the dead
//! conductor executed itself (a BMC call, a write of its own): that step's outcome is
//! unknown, so the node is failed with a reason that names the conductor, never left
//! transient. The rule is pure ([`recovery`]); the node lock keeps two survivors from
//! recovering one node twice, and in a takeover pass each survivor adopts only the waits
//! it owns on the ring.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::machine::{ProvisionState, StateKind};
use crate::model::Node;

/// The `driver_internal_info` key naming the conductor a node's operation runs under.
pub const CONDUCTOR_AFFINITY_KEY: &str = "conductor_affinity";

/// Stamps (or, in a stable state, clears) the conductor a node's operation runs under.
pub fn stamp_affinity(node: &mut Node, me: &str) {
    let busy = node
        .provision_state
        .parse::<ProvisionState>()
        .is_ok_and(|s| matches!(s.kind(), StateKind::Transient | StateKind::Wait));
    if busy {
        node.driver_internal_info
            .insert(CONDUCTOR_AFFINITY_KEY.into(), Value::String(me.to_owned()));
    } else {
        node.driver_internal_info.remove(CONDUCTOR_AFFINITY_KEY);
    }
}

/// The conductor a node's operation runs under, if stamped.
pub fn affinity(node: &Node) -> Option<&str> {
    node.driver_internal_info
        .get(CONDUCTOR_AFFINITY_KEY)
        .and_then(Value::as_str)
}

/// Which pass asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// This conductor's start at `started_at`.
    Start { started_at: DateTime<Utc> },
    /// A replica's heartbeat stopped while this conductor runs.
    Takeover,
}

/// What to do with an interrupted node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovery {
    /// A wait: keep waiting under this conductor (`from` is the conductor it ran under).
    Adopt { from: String },
    /// A transient state: fail it for this reason.
    Fail(String),
}

/// What conductor `me` does with `node` (in a transient or wait state), given the
/// conductors alive now, or `None` when it is not interrupted (someone works on it).
pub fn recovery(node: &Node, me: &str, live: &HashSet<String>, pass: Pass) -> Option<Recovery> {
    let state = node.provision_state.parse::<ProvisionState>().ok()?;
    let wait = match state.kind() {
        StateKind::Wait => true,
        StateKind::Transient => false,
        _ => return None,
    };
    // A lock is a task at work (locks of a dead conductor are released first).
    if node.reservation.is_some() {
        return None;
    }
    let affinity = affinity(node);
    let from = match (pass, affinity) {
        (Pass::Start { started_at }, _)
            if node.provision_updated_at.is_some_and(|at| at >= started_at) =>
        {
            return None;
        }
        // Another replica that lives works on it.
        (_, Some(a)) if a != me && live.contains(a) => return None,
        (_, Some(a)) if a != me => a.to_owned(),
        (Pass::Start { .. }, _) => me.to_owned(),
        // Ours, in this run: live.
        (Pass::Takeover, _) => return None,
    };
    Some(if wait {
        Recovery::Adopt { from }
    } else if from == me {
        Recovery::Fail(format!(
            "The conductor {me} restarted while the node was in state \"{state}\"; the \
             operation was interrupted"
        ))
    } else {
        Recovery::Fail(format!(
            "The conductor {from} went offline while the node was in state \"{state}\"; the \
             operation was interrupted"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn node(state: &str, affinity: Option<&str>, reserved: bool, age_secs: i64) -> Node {
        let mut n = Node::new(Uuid::nil(), "manual", Utc::now());
        n.provision_state = state.to_owned();
        n.provision_updated_at = Some(Utc::now() - chrono::Duration::seconds(age_secs));
        if let Some(a) = affinity {
            n.driver_internal_info
                .insert(CONDUCTOR_AFFINITY_KEY.into(), Value::String(a.into()));
        }
        if reserved {
            n.reservation = Some("somebody".into());
        }
        n
    }

    #[test]
    fn who_fails_which_node() {
        let live: HashSet<String> = ["me", "peer"].into_iter().map(str::to_owned).collect();
        let start = Pass::Start {
            started_at: Utc::now() - chrono::Duration::seconds(5),
        };
        // (state, affinity, reserved, age s, pass, recovered, reason names / adopted from)
        let rows = [
            (
                "wait call-back",
                Some("me"),
                false,
                60,
                start,
                true,
                "me restarted",
            ),
            (
                "wait call-back",
                None,
                false,
                60,
                start,
                true,
                "me restarted",
            ),
            (
                "deploying",
                Some("me"),
                false,
                60,
                start,
                true,
                "me restarted",
            ),
            ("wait call-back", Some("peer"), false, 60, start, false, ""),
            (
                "clean wait",
                Some("gone"),
                false,
                60,
                start,
                true,
                "gone went offline",
            ),
            ("wait call-back", Some("me"), true, 60, start, false, ""),
            // Put there by this run, after its start.
            ("wait call-back", Some("me"), false, 1, start, false, ""),
            ("active", Some("gone"), false, 60, start, false, ""),
            ("available", None, false, 60, start, false, ""),
            // While running: only a dead replica's nodes.
            (
                "wait call-back",
                Some("gone"),
                false,
                60,
                Pass::Takeover,
                true,
                "gone went offline",
            ),
            (
                "deploying",
                Some("gone"),
                false,
                60,
                Pass::Takeover,
                true,
                "gone went offline",
            ),
            (
                "wait call-back",
                Some("me"),
                false,
                60,
                Pass::Takeover,
                false,
                "",
            ),
            ("wait call-back", None, false, 60, Pass::Takeover, false, ""),
            (
                "wait call-back",
                Some("peer"),
                false,
                60,
                Pass::Takeover,
                false,
                "",
            ),
            (
                "deploying",
                Some("gone"),
                true,
                60,
                Pass::Takeover,
                false,
                "",
            ),
        ];
        for (state, affinity, reserved, age, pass, recovered, names) in rows {
            let n = node(state, affinity, reserved, age);
            let got = recovery(&n, "me", &live, pass);
            assert_eq!(
                got.is_some(),
                recovered,
                "{state} {affinity:?} {pass:?}: {got:?}"
            );
            match got {
                // Waits are adopted: their sessions and commands are in the database.
                Some(Recovery::Adopt { from }) => {
                    assert!(state.contains("wait"), "{state} adopted");
                    assert!(names.contains(&from), "{from} vs {names}");
                }
                Some(Recovery::Fail(reason)) => {
                    assert!(!state.contains("wait"), "{state} failed");
                    assert!(reason.contains(names), "{reason}");
                    assert!(reason.contains(&format!("\"{state}\"")), "{reason}");
                }
                None => {}
            }
        }
    }

    #[test]
    fn affinity_is_stamped_in_busy_states_and_cleared_at_rest() {
        let mut n = node("deploying", None, false, 0);
        stamp_affinity(&mut n, "me");
        assert_eq!(n.driver_internal_info[CONDUCTOR_AFFINITY_KEY], "me");
        n.provision_state = "wait call-back".into();
        stamp_affinity(&mut n, "other");
        assert_eq!(n.driver_internal_info[CONDUCTOR_AFFINITY_KEY], "other");
        n.provision_state = "active".into();
        stamp_affinity(&mut n, "me");
        assert!(!n.driver_internal_info.contains_key(CONDUCTOR_AFFINITY_KEY));
    }
}

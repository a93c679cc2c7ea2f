//! Which interrupted nodes a conductor fails, at its start and when another replica dies.
//!
//! Every node in a transient or wait state carries the name of the conductor that put it
//! there (`driver_internal_info.conductor_affinity`, as Ironic's `conductor_affinity`,
//! stamped by the task's transition commit). At start a conductor fails its own
//! interrupted nodes (its previous run's tasks, timers and agent commands are gone) and
//! those of conductors that are not alive; it leaves alone a node another live replica is
//! working on. While running, when a replica's heartbeat stops (`heartbeat_timeout`), the
//! survivors release its node locks and fail the nodes it was working on with a reason that
//! names it: never left transient. (Continuing such a deploy under a survivor needs the
//! agent commands in the database: not yet, see ARCHITECTURE.md.) The rule is pure
//! ([`interrupted`]); the node lock keeps two survivors from failing one node twice.

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

/// Which pass asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// This conductor's start at `started_at`.
    Start { started_at: DateTime<Utc> },
    /// A replica's heartbeat stopped while this conductor runs.
    Takeover,
}

/// Why `node` (in a transient or wait state) must be failed by conductor `me`, given the
/// conductors alive now, or `None` when it is not interrupted (someone works on it).
pub fn interrupted(node: &Node, me: &str, live: &HashSet<String>, pass: Pass) -> Option<String> {
    let state = node.provision_state.parse::<ProvisionState>().ok()?;
    if !matches!(state.kind(), StateKind::Transient | StateKind::Wait) {
        return None;
    }
    // A lock is a task at work (locks of a dead conductor are released first).
    if node.reservation.is_some() {
        return None;
    }
    let affinity = node
        .driver_internal_info
        .get(CONDUCTOR_AFFINITY_KEY)
        .and_then(Value::as_str);
    match (pass, affinity) {
        (Pass::Start { started_at }, _)
            if node.provision_updated_at.is_some_and(|at| at >= started_at) =>
        {
            None
        }
        // Another replica that lives works on it.
        (_, Some(a)) if a != me && live.contains(a) => None,
        (_, Some(a)) if a != me => Some(format!(
            "The conductor {a} went offline while the node was in state \"{state}\"; the \
             operation was interrupted"
        )),
        (Pass::Start { .. }, _) => Some(format!(
            "The conductor {me} restarted while the node was in state \"{state}\"; the \
             operation was interrupted"
        )),
        // Ours, in this run: live.
        (Pass::Takeover, _) => None,
    }
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
        // (state, affinity, reserved, age s, pass, failed, reason names)
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
        for (state, affinity, reserved, age, pass, failed, names) in rows {
            let n = node(state, affinity, reserved, age);
            let got = interrupted(&n, "me", &live, pass);
            assert_eq!(
                got.is_some(),
                failed,
                "{state} {affinity:?} {pass:?}: {got:?}"
            );
            if let Some(reason) = got {
                assert!(reason.contains(names), "{reason}");
                assert!(reason.contains(&format!("\"{state}\"")), "{reason}");
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

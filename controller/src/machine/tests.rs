//! Table tests of every state x verb, and property tests over random event sequences.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone, Utc};
use proptest::prelude::*;
use uuid::Uuid;

use super::*;

const NODE: Uuid = Uuid::from_u128(0x1234_5678_9abc_def0_1234_5678_9abc_def0);

fn at(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_700_000_000 + secs, 0)
        .single()
        .expect("valid timestamp")
}

fn view(state: ProvisionState, target: Option<ProvisionState>) -> NodeView {
    NodeView {
        uuid: NODE,
        provision_state: state,
        target,
        maintenance: false,
        protected: false,
    }
}

/// The conventional target a node carries in each state (null in stable states).
fn usual_target(state: ProvisionState) -> Option<ProvisionState> {
    if state.is_stable() {
        None
    } else if state == ProvisionState::Verifying {
        Some(ProvisionState::Manageable)
    } else {
        state.phase().map(phase_target)
    }
}

/// Every accepted (state, verb) pair with the resulting state and target, written out from
/// Ironic's machine (contract 7.1 and 7.3). Every pair not listed must be refused.
const ACCEPTED: &[(&str, &str, &str, &str)] = &[
    ("enroll", "manage", "verifying", "manageable"),
    ("available", "manage", "manageable", ""),
    ("clean failed", "manage", "manageable", ""),
    ("inspect failed", "manage", "manageable", ""),
    ("adopt failed", "manage", "manageable", ""),
    ("manageable", "provide", "cleaning", "available"),
    ("manageable", "clean", "cleaning", "manageable"),
    ("manageable", "inspect", "inspecting", "manageable"),
    ("inspect failed", "inspect", "inspecting", "manageable"),
    ("manageable", "adopt", "adopting", "active"),
    ("adopt failed", "adopt", "adopting", "active"),
    ("available", "active", "deploying", "active"),
    ("deploy failed", "active", "deploying", "active"),
    ("active", "rebuild", "deploying", "active"),
    ("deploy failed", "rebuild", "deploying", "active"),
    ("error", "rebuild", "deploying", "active"),
    ("active", "deleted", "deleting", "available"),
    ("wait call-back", "deleted", "deleting", "available"),
    ("deploy failed", "deleted", "deleting", "available"),
    ("error", "deleted", "deleting", "available"),
    ("rescue", "deleted", "deleting", "available"),
    ("rescue wait", "deleted", "deleting", "available"),
    ("rescue failed", "deleted", "deleting", "available"),
    ("unrescue failed", "deleted", "deleting", "available"),
    ("wait call-back", "abort", "deploy failed", "active"),
    ("deploy hold", "abort", "deploy failed", "active"),
    ("clean wait", "abort", "clean failed", "available"),
    ("clean hold", "abort", "clean failed", "available"),
    ("inspect wait", "abort", "inspect failed", "manageable"),
    ("rescue wait", "abort", "rescue failed", "rescue"),
    ("service wait", "abort", "service failed", "active"),
    ("service hold", "abort", "service failed", "active"),
    ("active", "rescue", "rescuing", "rescue"),
    ("rescue", "rescue", "rescuing", "rescue"),
    ("rescue failed", "rescue", "rescuing", "rescue"),
    ("unrescue failed", "rescue", "rescuing", "rescue"),
    ("rescue", "unrescue", "unrescuing", "active"),
    ("rescue failed", "unrescue", "unrescuing", "active"),
    ("unrescue failed", "unrescue", "unrescuing", "active"),
    ("deploy hold", "unhold", "wait call-back", "active"),
    ("clean hold", "unhold", "clean wait", "available"),
    ("service hold", "unhold", "service wait", "active"),
    ("active", "service", "servicing", "active"),
    ("service failed", "service", "servicing", "active"),
];

#[test]
fn every_state_and_verb_matches_the_table() {
    let table: BTreeMap<(ProvisionState, Verb), (ProvisionState, Option<ProvisionState>)> =
        ACCEPTED
            .iter()
            .map(|(from, verb, to, target)| {
                let target = (!target.is_empty()).then(|| target.parse().expect("target state"));
                (
                    (
                        from.parse().expect("from state"),
                        verb.parse().expect("verb"),
                    ),
                    (to.parse().expect("to state"), target),
                )
            })
            .collect();
    assert_eq!(table.len(), ACCEPTED.len(), "duplicate rows");
    let mut checked = 0;
    for state in ProvisionState::ALL {
        for verb in Verb::ALL {
            checked += 1;
            let node = view(state, usual_target(state));
            let result = step(&node, &Event::Verb(verb), at(0));
            match table.get(&(state, verb)) {
                Some(&(to, target)) => {
                    let t = result.unwrap_or_else(|e| panic!("{state} x {verb} refused: {e}"));
                    assert_eq!(t.from, state);
                    assert_eq!(t.provision_state, to, "{state} x {verb}");
                    assert_eq!(t.target_provision_state, target, "{state} x {verb}");
                    assert_eq!(t.at, at(0));
                    assert!(
                        matches!(t.actions.first(), Some(Action::RecordHistory { .. })),
                        "{state} x {verb} records history"
                    );
                }
                None => {
                    let err = result.expect_err("must be refused");
                    assert_eq!(
                        err.to_string(),
                        format!(
                            "The requested action \"{verb}\" can not be performed on node \
                             \"{NODE}\" while it is in state \"{state}\"."
                        )
                    );
                }
            }
        }
    }
    assert_eq!(checked, 30 * 13);
}

#[test]
fn rejection_carries_ironic_faultstring() {
    let err = step(
        &view(ProvisionState::Enroll, None),
        &Event::Verb(Verb::Deploy),
        at(0),
    )
    .expect_err("active from enroll");
    assert_eq!(
        err.to_string(),
        "The requested action \"active\" can not be performed on node \
         \"12345678-9abc-def0-1234-56789abcdef0\" while it is in state \"enroll\"."
    );
}

#[test]
fn states_and_verbs_parse_ironic_strings() {
    for state in ProvisionState::ALL {
        assert_eq!(state.as_str().parse::<ProvisionState>(), Ok(state));
    }
    assert_eq!("wait call-back".parse(), Ok(ProvisionState::DeployWait));
    assert_eq!(
        "bogus".parse::<ProvisionState>().map_err(|e| e.to_string()),
        Err("Provision state \"bogus\" is not valid".to_owned())
    );
    assert_eq!("deploy".parse(), Ok(Verb::Deploy));
    assert_eq!("active".parse(), Ok(Verb::Deploy));
    assert_eq!("undeploy".parse(), Ok(Verb::Undeploy));
    assert_eq!("deleted".parse(), Ok(Verb::Undeploy));
    assert!("available".parse::<Verb>().is_err());
    for verb in Verb::ALL {
        assert_eq!(verb.as_str().parse::<Verb>(), Ok(verb));
    }
}

#[test]
fn maintenance_blocks_provisioning_but_not_undeploy() {
    let mut node = view(ProvisionState::Available, None);
    node.maintenance = true;
    let err = step(&node, &Event::Verb(Verb::Deploy), at(0)).expect_err("maintenance");
    assert_eq!(
        err.to_string(),
        format!(
            "The provisioning operation can't be performed on node {NODE} because it's in \
             maintenance mode."
        )
    );
    node.provision_state = ProvisionState::Manageable;
    assert!(matches!(
        step(&node, &Event::Verb(Verb::Clean), at(0)),
        Err(Rejected::Maintenance { op: "cleaning", .. })
    ));
    assert!(step(&node, &Event::Verb(Verb::Provide), at(0)).is_ok());
    node.provision_state = ProvisionState::Active;
    assert!(step(&node, &Event::Verb(Verb::Undeploy), at(0)).is_ok());
    node.protected = true;
    assert!(matches!(
        step(&node, &Event::Verb(Verb::Undeploy), at(0)),
        Err(Rejected::Protected { .. })
    ));
}

/// Runs events from a node view, applying accepted transitions; returns the final view and
/// every transition.
fn run(mut node: NodeView, events: &[Event]) -> (NodeView, Vec<Transition>) {
    let mut out = Vec::new();
    for (i, event) in events.iter().enumerate() {
        if let Ok(t) = step(&node, event, at(i as i64)) {
            node.provision_state = t.provision_state;
            node.target = t.target_provision_state;
            out.push(t);
        }
    }
    (node, out)
}

#[test]
fn fake_lifecycle_walks_the_observed_path() {
    use ProvisionState as S;
    let events = [
        Event::Verb(Verb::Manage),
        Event::StepDone,
        Event::Verb(Verb::Provide),
        Event::StepDone,
        Event::Verb(Verb::Deploy),
        Event::StepDone,
        Event::Verb(Verb::Undeploy),
        Event::StepDone,
        Event::StepDone,
    ];
    let (node, transitions) = run(view(S::Enroll, None), &events);
    let path: Vec<_> = transitions
        .iter()
        .map(|t| (t.provision_state, t.target_provision_state))
        .collect();
    assert_eq!(
        path,
        vec![
            (S::Verifying, Some(S::Manageable)),
            (S::Manageable, None),
            (S::Cleaning, Some(S::Available)),
            (S::Available, None),
            (S::Deploying, Some(S::Active)),
            (S::Active, None),
            (S::Deleting, Some(S::Available)),
            (S::Cleaning, Some(S::Available)),
            (S::Available, None),
        ]
    );
    assert_eq!(node.provision_state, S::Available);
    let undeploy_done = &transitions[7];
    assert!(undeploy_done.actions.contains(&Action::ClearInstance));
    assert!(
        undeploy_done
            .actions
            .contains(&Action::Clean { manual: false })
    );
}

#[test]
fn manual_clean_failure_then_manage() {
    use ProvisionState as S;
    let events = [
        Event::Verb(Verb::Clean),
        Event::Failed("Clean step bogus failed".to_owned()),
        Event::Verb(Verb::Provide),
        Event::Verb(Verb::Manage),
    ];
    let node = view(S::Manageable, None);
    let t1 = step(&node, &events[0], at(0)).expect("clean");
    let node = NodeView {
        provision_state: t1.provision_state,
        target: t1.target_provision_state,
        ..node
    };
    let t2 = step(&node, &events[1], at(1)).expect("fail");
    assert_eq!(t2.provision_state, S::CleanFailed);
    assert_eq!(t2.target_provision_state, Some(S::Manageable));
    assert_eq!(
        t2.last_error,
        LastError::Set("Clean step bogus failed".to_owned())
    );
    let node = NodeView {
        provision_state: t2.provision_state,
        target: t2.target_provision_state,
        ..node
    };
    assert!(matches!(
        step(&node, &events[2], at(2)),
        Err(Rejected::InvalidState {
            action: "provide",
            ..
        })
    ));
    let t4 = step(&node, &events[3], at(3)).expect("manage");
    assert_eq!(
        (t4.provision_state, t4.target_provision_state),
        (S::Manageable, None)
    );
    assert_eq!(
        t4.last_error,
        LastError::Keep,
        "last_error kept until the next action"
    );
}

#[test]
fn wait_states_time_out_into_failure() {
    use ProvisionState as S;
    let (node, ts) = run(
        view(S::Available, None),
        &[
            Event::Verb(Verb::Deploy),
            Event::StepWaiting,
            Event::Timeout,
        ],
    );
    assert_eq!(ts[1].provision_state, S::DeployWait);
    assert!(
        ts[1]
            .actions
            .contains(&Action::StartWaitTimer(Phase::Deploy))
    );
    assert_eq!(
        (node.provision_state, node.target),
        (S::DeployFailed, Some(S::Active))
    );
    assert_eq!(
        ts[2].last_error,
        LastError::Set(format!(
            "Timeout reached while waiting for callback for node {NODE}"
        ))
    );
    // Timeouts do nothing outside wait states.
    assert!(step(&view(S::Deploying, Some(S::Active)), &Event::Timeout, at(0)).is_err());
}

#[test]
fn verify_failure_returns_to_enroll_and_teardown_failure_to_error() {
    use ProvisionState as S;
    let t = step(
        &view(S::Verifying, Some(S::Manageable)),
        &Event::Failed("no bmc".into()),
        at(0),
    )
    .expect("fail");
    assert_eq!(
        (t.provision_state, t.target_provision_state),
        (S::Enroll, None)
    );
    let t = step(
        &view(S::Deleting, Some(S::Available)),
        &Event::Failed("x".into()),
        at(0),
    )
    .expect("fail");
    assert_eq!(
        (t.provision_state, t.target_provision_state),
        (S::Error, None)
    );
}

fn any_event() -> impl Strategy<Value = Event> {
    prop_oneof![
        proptest::sample::select(Verb::ALL.to_vec()).prop_map(Event::Verb),
        Just(Event::StepDone),
        Just(Event::StepWaiting),
        Just(Event::AgentCallback),
        Just(Event::Failed("boom".to_owned())),
        Just(Event::Timeout),
    ]
}

fn any_state() -> impl Strategy<Value = ProvisionState> {
    proptest::sample::select(ProvisionState::ALL.to_vec())
}

proptest! {
    #[test]
    fn stable_states_never_carry_a_target(
        start in any_state(),
        events in proptest::collection::vec(any_event(), 0..60),
    ) {
        let (_, transitions) = run(view(start, usual_target(start)), &events);
        for t in transitions {
            if t.provision_state.is_stable() {
                prop_assert_eq!(t.target_provision_state, None, "{:?}", t);
            } else {
                prop_assert!(t.target_provision_state.is_some(), "{:?}", t);
                prop_assert!(t.target_provision_state.is_some_and(ProvisionState::is_stable));
            }
        }
    }

    #[test]
    fn clean_failed_needs_manage_before_available(
        events in proptest::collection::vec(any_event(), 0..80),
    ) {
        let start = view(ProvisionState::CleanFailed, Some(ProvisionState::Available));
        let mut node = start;
        let mut managed = false;
        for (i, event) in events.iter().enumerate() {
            if let Ok(t) = step(&node, event, at(i as i64)) {
                if *event == Event::Verb(Verb::Manage) {
                    managed = true;
                }
                if t.provision_state == ProvisionState::Available {
                    prop_assert!(managed, "clean failed reached available without manage");
                }
                if t.provision_state == ProvisionState::CleanFailed {
                    managed = false;
                }
                node.provision_state = t.provision_state;
                node.target = t.target_provision_state;
            }
        }
    }

    #[test]
    fn wait_states_are_left_only_by_callback_abort_failure_timeout_or_undeploy(
        start in proptest::sample::select(
            ProvisionState::ALL.into_iter().filter(|s| s.kind() == StateKind::Wait).collect::<Vec<_>>()
        ),
        event in any_event(),
    ) {
        if let Ok(t) = step(&view(start, usual_target(start)), &event, at(0)) {
            prop_assert!(matches!(
                event,
                Event::AgentCallback
                    | Event::Failed(_)
                    | Event::Timeout
                    | Event::Verb(Verb::Abort | Verb::Undeploy)
            ), "{} left by {:?} to {}", start, event, t.provision_state);
        }
    }

    #[test]
    fn refused_events_change_nothing_and_accepted_ones_record_history(
        start in any_state(),
        event in any_event(),
    ) {
        let node = view(start, usual_target(start));
        match step(&node, &event, at(5)) {
            Ok(t) => {
                prop_assert_eq!(t.from, start);
                prop_assert_eq!(t.at, at(5));
                let history_first = matches!(t.actions.first(), Some(Action::RecordHistory { .. }));
                prop_assert!(history_first);
            }
            Err(Rejected::InvalidState { state, .. }) => prop_assert_eq!(state, start),
            Err(_) => {}
        }
    }

    #[test]
    fn failures_end_in_a_failed_state_enroll_or_error(
        start in any_state(),
        reason in "[a-z ]{1,20}",
    ) {
        if let Ok(t) = step(&view(start, usual_target(start)), &Event::Failed(reason.clone()), at(0)) {
            let end = t.provision_state;
            prop_assert!(
                end.kind() == StateKind::Failed
                    || end == ProvisionState::Enroll
                    || end == ProvisionState::Error
            );
            prop_assert_eq!(t.last_error, LastError::Set(reason));
        }
    }
}

/// Every state with whether a lookup is answered with fast track off and on (Ironic's
/// `LOOKUP_ALLOWED_STATES`; `enroll`, `manageable`, `available` only on the fast track).
#[test]
fn agent_lookup_is_answered_only_where_an_agent_is_expected() {
    use ProvisionState as S;
    let table: [(S, bool, bool); 30] = [
        (S::Enroll, false, true),
        (S::Verifying, false, false),
        (S::Manageable, false, true),
        (S::Available, false, true),
        (S::Active, false, false),
        (S::Deploying, true, true),
        (S::DeployWait, true, true),
        (S::DeployFailed, false, false),
        (S::DeployHold, false, false),
        (S::Deleting, false, false),
        (S::Cleaning, true, true),
        (S::CleanWait, true, true),
        (S::CleanFailed, false, false),
        (S::CleanHold, false, false),
        (S::Error, false, false),
        (S::Inspecting, true, true),
        (S::InspectWait, true, true),
        (S::InspectFailed, false, false),
        (S::Adopting, false, false),
        (S::AdoptFailed, false, false),
        (S::Rescue, false, false),
        (S::Rescuing, true, true),
        (S::RescueWait, true, true),
        (S::RescueFailed, false, false),
        (S::Unrescuing, false, false),
        (S::UnrescueFailed, false, false),
        (S::Servicing, true, true),
        (S::ServiceWait, true, true),
        (S::ServiceFailed, false, false),
        (S::ServiceHold, false, false),
    ];
    let listed: Vec<S> = table.iter().map(|row| row.0).collect();
    assert_eq!(listed, S::ALL.to_vec(), "one row per state, in order");
    for (state, off, on) in table {
        assert_eq!(
            state.allows_agent_lookup(false),
            off,
            "{state} without fast track"
        );
        assert_eq!(
            state.allows_agent_lookup(true),
            on,
            "{state} with fast track"
        );
    }
}

/// Every state with whether a node in it may be deleted, have its allocation removed
/// without maintenance mode (Ironic's `DELETE_ALLOWED_STATES` and `UPDATE_ALLOWED_STATES`),
/// and be made protected (`active`, `rescue`).
#[test]
fn delete_and_deallocate_states() {
    use ProvisionState as S;
    let table: [(S, bool, bool, bool); 30] = [
        (S::Enroll, true, true, false),
        (S::Verifying, false, true, false),
        (S::Manageable, true, true, false),
        (S::Available, true, true, false),
        (S::Active, false, true, true),
        (S::Deploying, false, false, false),
        (S::DeployWait, false, false, false),
        (S::DeployFailed, false, true, false),
        (S::DeployHold, false, false, false),
        (S::Deleting, false, false, false),
        (S::Cleaning, false, false, false),
        (S::CleanWait, false, true, false),
        (S::CleanFailed, false, true, false),
        (S::CleanHold, false, false, false),
        (S::Error, false, true, false),
        (S::Inspecting, false, true, false),
        (S::InspectWait, false, true, false),
        (S::InspectFailed, false, true, false),
        (S::Adopting, false, false, false),
        (S::AdoptFailed, true, true, false),
        (S::Rescue, false, true, true),
        (S::Rescuing, false, false, false),
        (S::RescueWait, false, false, false),
        (S::RescueFailed, false, true, false),
        (S::Unrescuing, false, false, false),
        (S::UnrescueFailed, false, true, false),
        (S::Servicing, false, false, false),
        (S::ServiceWait, false, false, false),
        (S::ServiceFailed, false, true, false),
        (S::ServiceHold, false, false, false),
    ];
    let listed: Vec<S> = table.iter().map(|row| row.0).collect();
    assert_eq!(listed, S::ALL.to_vec(), "one row per state, in order");
    for (state, delete, deallocate, protect) in table {
        assert_eq!(state.allows_delete(), delete, "{state}: delete");
        assert_eq!(state.allows_deallocate(), deallocate, "{state}: deallocate");
        assert_eq!(state.allows_protect(), protect, "{state}: protect");
    }
}

/// A list filter takes every state's name and Ironic's three machine-only names, nothing else.
#[test]
fn list_filter_names() {
    for s in ProvisionState::ALL {
        assert!(ProvisionState::is_filter_name(s.as_str()), "{s}");
    }
    for name in ["deleted", "rebuild", "unholding"] {
        assert!(ProvisionState::is_filter_name(name), "{name}");
    }
    for name in ["", "Active", "activ", "deploy", "wait callback"] {
        assert!(!ProvisionState::is_filter_name(name), "{name:?}");
    }
}

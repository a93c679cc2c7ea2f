//! Steps the agent offers (`LookupRequest::steps`, cached at each new agent session in
//! `driver_internal_info.agent_cached_steps`): the `agent` deploy interface offers them for
//! cleaning, deploying and servicing next to its built-in steps and runs them with
//! `Command::RunStep`, so a new agent step needs no controller change. Pure: merging the
//! lists, finding a step, checking its required arguments.

use proto::protocol::AgentStep;

use super::{CleanStep, DriverError};
use crate::model::Node;

/// Where the agent's steps are cached.
pub const AGENT_STEPS_KEY: &str = "agent_cached_steps";

/// Which list a step is offered in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Clean,
    Deploy,
    Service,
}

impl Phase {
    /// The word in messages.
    pub fn label(self) -> &'static str {
        match self {
            Self::Clean => "clean",
            Self::Deploy => "deploy",
            Self::Service => "service",
        }
    }
}

/// The steps the node's agent offered at its last session (none before the first). The
/// agent's `raid` steps belong to the `agent` RAID interface: on a node with another RAID
/// interface they are not offered, on a node with it they are offered even before the
/// first session.
pub fn cached(node: &Node) -> Vec<AgentStep> {
    let mut steps = node
        .driver_internal_info
        .get(AGENT_STEPS_KEY)
        .and_then(|v| serde_json::from_value::<Vec<AgentStep>>(v.clone()).ok())
        .filter(|steps| proto::protocol::check_agent_steps(steps).is_ok())
        .unwrap_or_default();
    if !super::raid::uses_agent_raid(node) {
        steps.retain(|s| s.interface != "raid");
        return steps;
    }
    // The `agent` RAID interface's own steps are known before any agent boots (a manual
    // clean of a node no agent has run on yet), as Ironic's `AgentRAID` declares them; the
    // controller fills `raid` from the node's target.
    for name in [super::raid::CREATE_STEP, super::raid::DELETE_STEP] {
        if !steps
            .iter()
            .any(|s| s.interface == "raid" && s.step == name)
        {
            steps.push(AgentStep {
                interface: "raid".to_owned(),
                step: name.to_owned(),
                clean_priority: Some(0),
                deploy_priority: None,
                service: false,
                abortable: false,
                argsinfo: std::collections::BTreeMap::new(),
            });
        }
    }
    steps
}

/// The agent step's priority in `phase`, `None` when it is not offered there.
fn priority(step: &AgentStep, phase: Phase) -> Option<u32> {
    match phase {
        Phase::Clean => step.clean_priority,
        Phase::Deploy => step.deploy_priority,
        Phase::Service => step.service.then_some(0),
    }
}

/// PURE: `built_in` followed by the agent's steps offered in `phase` that the built-ins do
/// not already name (a built-in keeps the controller's handling of its result).
pub fn merge(built_in: Vec<CleanStep>, agent: &[AgentStep], phase: Phase) -> Vec<CleanStep> {
    let mut steps = built_in;
    for a in agent {
        let Some(p) = priority(a, phase) else {
            continue;
        };
        if steps
            .iter()
            .any(|s| s.interface == a.interface && s.step == a.step)
        {
            continue;
        }
        let mut step = CleanStep::new(&a.interface, &a.step, p);
        step.abortable = a.abortable;
        steps.push(step);
    }
    steps
}

/// PURE: the agent step `step` names in `phase`, with its required arguments present;
/// `Ok(None)` when the agent does not offer it there.
pub fn find<'a>(
    agent: &'a [AgentStep],
    step: &CleanStep,
    phase: Phase,
) -> Result<Option<&'a AgentStep>, DriverError> {
    let Some(found) = agent
        .iter()
        .find(|a| a.interface == step.interface && a.step == step.step)
        .filter(|a| priority(a, phase).is_some())
    else {
        return Ok(None);
    };
    let missing: Vec<&str> = found
        .argsinfo
        .iter()
        .filter(|(name, arg)| arg.required && !step.args.contains_key(name.as_str()))
        .map(|(name, _)| name.as_str())
        .collect();
    if !missing.is_empty() {
        return Err(DriverError::InvalidParameter(format!(
            "step {}.{} requires the argument(s) {}",
            step.interface,
            step.step,
            missing.join(", ")
        )));
    }
    Ok(Some(found))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::protocol::StepArg;
    use serde_json::json;

    fn step(name: &str, clean: Option<u32>, deploy: Option<u32>, service: bool) -> AgentStep {
        AgentStep {
            interface: "deploy".into(),
            step: name.into(),
            clean_priority: clean,
            deploy_priority: deploy,
            service,
            abortable: true,
            argsinfo: Default::default(),
        }
    }

    fn names(steps: &[CleanStep]) -> Vec<String> {
        steps
            .iter()
            .map(|s| format!("{}@{}", s.step, s.priority))
            .collect()
    }

    #[test]
    fn the_agent_raid_steps_are_offered_before_any_agent_ran() {
        let mut node = Node::new(uuid::Uuid::new_v4(), "ipmi", chrono::Utc::now());
        assert!(cached(&node).is_empty());
        node.interfaces
            .insert("raid_interface".into(), super::super::raid::AGENT.into());
        let got: Vec<(String, Option<u32>)> = cached(&node)
            .into_iter()
            .map(|s| (format!("{}.{}", s.interface, s.step), s.clean_priority))
            .collect();
        assert_eq!(
            got,
            [
                ("raid.create_configuration".to_owned(), Some(0)),
                ("raid.delete_configuration".to_owned(), Some(0))
            ]
        );
    }

    #[test]
    fn agent_steps_join_the_built_ins_of_their_phase() {
        let agent = [
            step("erase_devices_metadata", Some(10), Some(0), false),
            step("scan_disks", Some(0), None, true),
            step("burnin", None, Some(0), false),
        ];
        let built_in = || vec![CleanStep::new("deploy", "erase_devices_metadata", 99)];
        assert_eq!(
            names(&merge(built_in(), &agent, Phase::Clean)),
            ["erase_devices_metadata@99", "scan_disks@0"],
            "a built-in keeps its own priority"
        );
        assert_eq!(
            names(&merge(built_in(), &agent, Phase::Deploy)),
            ["erase_devices_metadata@99", "burnin@0"]
        );
        assert_eq!(
            names(&merge(Vec::new(), &agent, Phase::Service)),
            ["scan_disks@0"]
        );
        assert!(merge(Vec::new(), &agent, Phase::Service)[0].abortable);
    }

    #[test]
    fn a_step_is_found_in_its_phase_with_its_required_arguments() {
        let mut scan = step("scan_disks", Some(0), None, true);
        scan.argsinfo.insert(
            "devices".into(),
            StepArg {
                description: "disks".into(),
                required: true,
            },
        );
        let agent = [scan];
        let mut asked = CleanStep::new("deploy", "scan_disks", 0);
        let e = find(&agent, &asked, Phase::Clean).expect_err("missing devices");
        assert!(
            e.to_string().contains("requires the argument(s) devices"),
            "{e}"
        );
        asked.args.insert("devices".into(), json!(["/dev/sda"]));
        assert!(find(&agent, &asked, Phase::Clean).expect("ok").is_some());
        assert!(find(&agent, &asked, Phase::Deploy).expect("ok").is_none());
        let other = CleanStep::new("raid", "scan_disks", 0);
        assert!(find(&agent, &other, Phase::Clean).expect("ok").is_none());
    }

    #[test]
    fn a_cache_that_breaks_the_bounds_is_ignored() {
        let mut node = Node::new(uuid::Uuid::new_v4(), "ipmi", chrono::Utc::now());
        node.driver_internal_info.insert(
            AGENT_STEPS_KEY.into(),
            json!([{"interface": "deploy", "step": "scan_disks", "clean_priority": 0}]),
        );
        assert_eq!(cached(&node).len(), 1);
        node.driver_internal_info.insert(
            AGENT_STEPS_KEY.into(),
            json!([{"interface": "deploy", "step": "Bad Name", "clean_priority": 0}]),
        );
        assert!(cached(&node).is_empty());
        node.driver_internal_info
            .insert(AGENT_STEPS_KEY.into(), json!("junk"));
        assert!(cached(&node).is_empty());
    }
}

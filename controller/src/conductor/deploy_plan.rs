//! The steps a deploy runs (pure): the one place that merges the deploy interface's
//! deploy steps, those of the deploy templates the instance's traits name, and the
//! operator's `deploy_steps`.

use std::collections::BTreeMap;

use crate::deploy_templates::{DeployTemplate, TemplateStep};
use crate::drivers::CleanStep;

/// A template's step as the step list holds it.
fn clean_step(t: &TemplateStep) -> CleanStep {
    let mut step = CleanStep::new(&t.interface, &t.step, t.priority);
    step.args = t.args.clone();
    step
}

/// PURE: the deploy steps a deploy runs, in order. The driver's steps (`offered`, those
/// with a priority above 0 enabled) are overridden by the matching templates' steps (in
/// the order given; a step named by two templates is refused), which are overridden by the
/// operator's `deploy_steps` (already resolved against `offered`). Every template step must
/// be a step the driver offers. Steps with priority 0 are dropped; the rest run highest
/// priority first, and two enabled steps may not share a priority.
pub fn deploy_plan(
    offered: &[CleanStep],
    templates: &[DeployTemplate],
    user: &[CleanStep],
) -> Result<Vec<CleanStep>, String> {
    let key = |s: &CleanStep| (s.interface.clone(), s.step.clone());
    let mut plan: BTreeMap<(String, String), CleanStep> =
        offered.iter().map(|s| (key(s), s.clone())).collect();
    let mut from_template: BTreeMap<(String, String), &str> = BTreeMap::new();
    for template in templates {
        for ts in &template.steps {
            let step = clean_step(ts);
            let k = key(&step);
            let Some(driver_step) = offered.iter().find(|s| key(s) == k) else {
                return Err(format!(
                    "Deploy step {{'interface': '{}', 'step': '{}'}} of deploy template {} is \
                     not supported by the driver",
                    step.interface, step.step, template.name
                ));
            };
            if let Some(other) = from_template.insert(k.clone(), &template.name) {
                return Err(format!(
                    "Deploy templates {other} and {} both name deploy step {}.{}",
                    template.name, step.interface, step.step
                ));
            }
            let mut merged = driver_step.clone();
            merged.args = step.args;
            merged.priority = step.priority;
            plan.insert(k, merged);
        }
    }
    for step in user {
        plan.insert(key(step), step.clone());
    }
    let mut steps: Vec<CleanStep> = plan.into_values().filter(|s| s.priority > 0).collect();
    steps.sort_by_key(|s| std::cmp::Reverse(s.priority));
    if let Some(pair) = steps.windows(2).find(|w| w[0].priority == w[1].priority) {
        return Err(format!(
            "Deploy steps {}.{} and {}.{} have the same priority {}; give them different ones",
            pair[0].interface, pair[0].step, pair[1].interface, pair[1].step, pair[0].priority
        ));
    }
    Ok(steps)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deploy_templates::parse_steps;
    use crate::model::JsonMap;
    use chrono::Utc;
    use serde_json::{Value, json};
    use uuid::Uuid;

    fn t(name: &str, steps: Value) -> DeployTemplate {
        DeployTemplate {
            uuid: Uuid::new_v4(),
            name: name.to_owned(),
            steps: parse_steps(&steps).expect("steps"),
            extra: JsonMap::new(),
            created_at: Utc::now(),
            updated_at: None,
        }
    }

    fn offered() -> Vec<CleanStep> {
        vec![
            CleanStep::new("deploy", "deploy", 100),
            CleanStep::new("deploy", "erase_devices_metadata", 0),
        ]
    }

    fn names(steps: &[CleanStep]) -> Vec<String> {
        steps
            .iter()
            .map(|s| format!("{}.{}@{}", s.interface, s.step, s.priority))
            .collect()
    }

    #[test]
    fn plan_merges_driver_templates_and_user_steps() {
        let erase_first = t(
            "CUSTOM_CLEAN_DISKS",
            json!([{"interface": "deploy", "step": "erase_devices_metadata", "priority": 150}]),
        );
        let user_off = {
            let mut s = CleanStep::new("deploy", "erase_devices_metadata", 0);
            s.args.insert("k".into(), json!(1));
            s
        };
        type Case = (
            Vec<DeployTemplate>,
            Vec<CleanStep>,
            Result<Vec<&'static str>, &'static str>,
        );
        let cases: Vec<Case> = vec![
            (vec![], vec![], Ok(vec!["deploy.deploy@100"])),
            (
                vec![erase_first.clone()],
                vec![],
                Ok(vec![
                    "deploy.erase_devices_metadata@150",
                    "deploy.deploy@100",
                ]),
            ),
            // The operator's steps win over the templates' (priority 0 disables).
            (
                vec![erase_first.clone()],
                vec![user_off],
                Ok(vec!["deploy.deploy@100"]),
            ),
            (
                vec![t(
                    "CUSTOM_X",
                    json!([{"interface": "raid", "step": "apply_configuration", "priority": 90}]),
                )],
                vec![],
                Err("not supported by the driver"),
            ),
            (
                vec![t(
                    "CUSTOM_SAME",
                    json!([{"interface": "deploy", "step": "erase_devices_metadata", "priority": 100}]),
                )],
                vec![],
                Err("same priority 100"),
            ),
            (
                vec![erase_first.clone(), {
                    let mut other = erase_first.clone();
                    other.name = "CUSTOM_OTHER".into();
                    other
                }],
                vec![],
                Err("both name deploy step"),
            ),
        ];
        for (templates, user, want) in cases {
            let got = deploy_plan(&offered(), &templates, &user);
            match want {
                Ok(w) => assert_eq!(names(&got.expect("plan")), w),
                Err(w) => {
                    let e = got.expect_err("refused");
                    assert!(e.contains(w), "{e}");
                }
            }
        }
        // A template's arguments reach the step.
        let with_args = t(
            "CUSTOM_ARGS",
            json!([{"interface": "deploy", "step": "erase_devices_metadata", "priority": 120,
                    "args": {"a": true}}]),
        );
        let plan = deploy_plan(&offered(), &[with_args], &[]).expect("plan");
        assert_eq!(plan[0].args["a"], true);
    }
}

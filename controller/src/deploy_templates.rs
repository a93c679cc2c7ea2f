//! Deploy templates (Ironic's `/v1/deploy_templates`, API 1.55): named lists of deploy
//! steps. A template whose name is one of the instance's traits (`instance_info.traits`,
//! each of which must also be a node trait) adds its steps to the deploy. Here: the record
//! and the pure checks of a template's name, its steps and the instance's traits; the
//! conductor's `deploy_plan` merges the templates' steps into a deploy.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::model::JsonMap;

/// Interfaces a deploy step may name (Ironic's deploying interfaces).
pub const STEP_INTERFACES: [&str; 5] = ["bios", "deploy", "management", "power", "raid"];
/// The longest template name (a trait name, as Ironic's `traits` column).
pub const NAME_MAX: usize = 255;
/// At most this many steps in one template.
pub const STEPS_MAX: usize = 50;
/// A step's `args` may take at most this many bytes of JSON.
pub const ARGS_MAX_BYTES: usize = 64 * 1024;

/// A stored deploy template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeployTemplate {
    pub uuid: Uuid,
    pub name: String,
    pub steps: Vec<TemplateStep>,
    #[serde(default)]
    pub extra: JsonMap,
    pub created_at: DateTime<Utc>,
    pub updated_at: Option<DateTime<Utc>>,
}

/// One step of a template, in Ironic's shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateStep {
    pub interface: String,
    pub step: String,
    #[serde(default)]
    pub args: JsonMap,
    pub priority: u32,
}

/// PURE: whether `name` is a trait name a template may take: `CUSTOM_` followed by upper
/// case letters, digits and underscores (as os-traits' custom traits), or a standard trait
/// name of the same alphabet (`HW_CPU_X86_AVX2`, `STORAGE_DISK_SSD`...).
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= NAME_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
        && name.as_bytes()[0].is_ascii_uppercase()
        && name != "CUSTOM_";
    if ok {
        Ok(())
    } else {
        Err(format!(
            "Deploy template name must be a valid trait: {name:?} is not (upper case letters, \
             digits and underscores, at most {NAME_MAX} characters, such as CUSTOM_RAID1)"
        ))
    }
}

/// PURE: a template's `steps` from the API: a non-empty list of objects with `interface`
/// (one of [`STEP_INTERFACES`]), `step`, `args` (an object) and `priority` (an integer
/// from 0; 0 disables the step), no step twice.
pub fn parse_steps(value: &Value) -> Result<Vec<TemplateStep>, String> {
    let list = value
        .as_array()
        .ok_or_else(|| "Deploy template steps must be a list".to_owned())?;
    if list.is_empty() || list.len() > STEPS_MAX {
        return Err(format!(
            "A deploy template has 1 to {STEPS_MAX} steps, got {}",
            list.len()
        ));
    }
    let mut steps: Vec<TemplateStep> = Vec::with_capacity(list.len());
    for raw in list {
        let obj = raw
            .as_object()
            .ok_or_else(|| format!("Deploy template step {raw} is not an object"))?;
        if let Some(k) = obj
            .keys()
            .find(|k| !matches!(k.as_str(), "interface" | "step" | "args" | "priority"))
        {
            return Err(format!("Deploy template step has an unknown field {k:?}"));
        }
        let interface = obj
            .get("interface")
            .and_then(Value::as_str)
            .filter(|i| STEP_INTERFACES.contains(i))
            .ok_or_else(|| {
                format!(
                    "Deploy template step {raw}: interface must be one of {}",
                    STEP_INTERFACES.join(", ")
                )
            })?;
        let step = obj
            .get("step")
            .and_then(Value::as_str)
            .filter(|s| {
                !s.is_empty()
                    && s.len() <= 255
                    && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            })
            .ok_or_else(|| {
                format!("Deploy template step {raw}: step must be a step name (letters, digits, _)")
            })?;
        let args = match obj.get("args") {
            None => JsonMap::new(),
            Some(Value::Object(a)) => a.clone(),
            Some(_) => {
                return Err(format!(
                    "Deploy template step {raw}: args must be an object"
                ));
            }
        };
        if serde_json::to_vec(&args).map_or(usize::MAX, |b| b.len()) > ARGS_MAX_BYTES {
            return Err(format!(
                "Deploy template step {interface}.{step}: args are larger than {ARGS_MAX_BYTES} bytes"
            ));
        }
        let priority = obj
            .get("priority")
            .and_then(Value::as_u64)
            .and_then(|p| u32::try_from(p).ok())
            .ok_or_else(|| {
                format!(
                    "Deploy template step {interface}.{step}: priority must be an integer from 0"
                )
            })?;
        if steps
            .iter()
            .any(|s| s.interface == interface && s.step == step)
        {
            return Err(format!(
                "Duplicate deploy steps for {interface}.{step}: a template names a step once"
            ));
        }
        steps.push(TemplateStep {
            interface: interface.to_owned(),
            step: step.to_owned(),
            args,
            priority,
        });
    }
    Ok(steps)
}

/// PURE: the instance's traits (`instance_info.traits`, a list of strings), each of which
/// must be one of the node's traits.
pub fn instance_traits(
    instance_info: &JsonMap,
    node_traits: &[String],
) -> Result<Vec<String>, String> {
    let traits: Vec<String> = match instance_info.get("traits") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(list)) => list
            .iter()
            .map(|t| t.as_str().map(str::to_owned))
            .collect::<Option<_>>()
            .ok_or_else(|| "instance_info.traits must be a list of strings".to_owned())?,
        Some(_) => return Err("instance_info.traits must be a list of strings".to_owned()),
    };
    let missing: Vec<&str> = traits
        .iter()
        .filter(|t| !node_traits.contains(t))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "Cannot specify instance traits that are not also node traits: {}",
            missing.join(", ")
        ));
    }
    Ok(traits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_are_traits() {
        for good in ["CUSTOM_RAID1", "HW_CPU_X86_AVX2", "CUSTOM_A_1"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        let long = format!("CUSTOM_{}", "A".repeat(250));
        for bad in [
            "",
            "custom_raid",
            "CUSTOM-RAID",
            "1CUSTOM",
            "CUSTOM_",
            long.as_str(),
        ] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn steps_are_checked() {
        let ok = parse_steps(&json!([
            {"interface": "deploy", "step": "erase_devices_metadata", "priority": 150},
            {"interface": "raid", "step": "apply_configuration", "args": {"x": 1}, "priority": 0},
        ]))
        .expect("parses");
        assert_eq!(ok.len(), 2);
        assert_eq!(ok[1].args["x"], 1);
        let cases = [
            (json!([]), "1 to"),
            (json!({}), "list"),
            (json!([1]), "not an object"),
            (
                json!([{"interface": "boot", "step": "x", "priority": 1}]),
                "interface",
            ),
            (
                json!([{"interface": "deploy", "step": "", "priority": 1}]),
                "step name",
            ),
            (
                json!([{"interface": "deploy", "step": "a b", "priority": 1}]),
                "step name",
            ),
            (
                json!([{"interface": "deploy", "step": "x", "priority": -1}]),
                "priority",
            ),
            (json!([{"interface": "deploy", "step": "x"}]), "priority"),
            (
                json!([{"interface": "deploy", "step": "x", "priority": 1, "args": []}]),
                "args",
            ),
            (
                json!([{"interface": "deploy", "step": "x", "priority": 1, "foo": 1}]),
                "unknown",
            ),
            (
                json!([{"interface": "deploy", "step": "x", "priority": 1},
                       {"interface": "deploy", "step": "x", "priority": 2}]),
                "Duplicate",
            ),
        ];
        for (steps, want) in cases {
            let e = parse_steps(&steps).expect_err("refused");
            assert!(e.contains(want), "{steps}: {e}");
        }
        let big = json!([{"interface": "deploy", "step": "x", "priority": 1,
                          "args": {"blob": "a".repeat(ARGS_MAX_BYTES)}}]);
        assert!(parse_steps(&big).expect_err("big").contains("larger"));
    }

    #[test]
    fn instance_traits_must_be_node_traits() {
        let node = vec!["CUSTOM_A".to_owned(), "CUSTOM_B".to_owned()];
        let ii = |v: Value| v.as_object().cloned().expect("object");
        assert_eq!(
            instance_traits(&ii(json!({})), &node).expect("none"),
            Vec::<String>::new()
        );
        assert_eq!(
            instance_traits(&ii(json!({"traits": ["CUSTOM_B"]})), &node).expect("ok"),
            ["CUSTOM_B"]
        );
        let e = instance_traits(&ii(json!({"traits": ["CUSTOM_B", "CUSTOM_C"]})), &node)
            .expect_err("not a node trait");
        assert!(e.contains("CUSTOM_C") && !e.contains("CUSTOM_B"), "{e}");
        assert!(instance_traits(&ii(json!({"traits": "CUSTOM_A"})), &node).is_err());
        assert!(instance_traits(&ii(json!({"traits": [1]})), &node).is_err());
    }
}

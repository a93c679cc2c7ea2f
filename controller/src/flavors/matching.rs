//! PURE: which nodes an allocation may take. The one home of the rule, for Ironic's plain
//! allocations and for Ingot's servers (a flavor's minimum properties) alike; the conductor
//! lists the `available` nodes, calls [`candidates`], and claims one atomically.

use serde_json::Value;

use crate::model::{Allocation, JsonMap, Node, PropertyMinimums};

/// The nodes of `nodes` that `allocation` may take, in the given order, or why there is
/// none (Ironic's wording for its own criteria, which clients show).
///
/// A candidate is `available`, not in maintenance, powered (its power state is known), not
/// taken by an instance or another allocation, of the allocation's resource class (any, when
/// it names none), owned or leased by the allocation's owner (when it has one), one of the
/// requested candidate nodes (when some are named), has every requested trait, and meets
/// every minimum property ([`meets`]).
pub fn candidates(allocation: &Allocation, nodes: Vec<Node>) -> Result<Vec<Node>, String> {
    let rc = allocation.resource_class.as_deref().unwrap_or_default();
    let mut nodes: Vec<Node> = nodes
        .into_iter()
        .filter(|n| {
            n.provision_state == "available"
                && !n.maintenance
                && n.power_state.is_some()
                && n.instance_uuid.is_none()
                && n.allocation_uuid.is_none()
                && allocation
                    .resource_class
                    .as_ref()
                    .is_none_or(|rc| n.resource_class.as_ref() == Some(rc))
        })
        .collect();
    if let Some(owner) = &allocation.owner {
        nodes.retain(|n| n.owner.as_ref() == Some(owner) || n.lessee.as_ref() == Some(owner));
    }
    if !allocation.candidate_nodes.is_empty() {
        nodes.retain(|n| {
            allocation
                .candidate_nodes
                .iter()
                .any(|c| *c == n.uuid.to_string() || n.name.as_deref() == Some(c.as_str()))
        });
        if nodes.is_empty() {
            return Err(format!(
                "none of the requested nodes are available and match the resource class {rc}"
            ));
        }
    }
    if nodes.is_empty() {
        return Err(if allocation.resource_class.is_some() {
            format!("no available nodes match the resource class {rc}")
        } else {
            "no nodes are available".to_owned()
        });
    }
    nodes.retain(|n| allocation.traits.iter().all(|t| n.traits.contains(t)));
    if nodes.is_empty() {
        return Err(format!(
            "no suitable nodes have the requested traits {}",
            allocation.traits.join(", ")
        ));
    }
    let min = &allocation.min_properties;
    let total = nodes.len();
    let mut shortfalls = Vec::new();
    nodes.retain(|n| match meets(min, &n.properties) {
        Ok(()) => true,
        Err(why) => {
            shortfalls.push(format!("{}: {why}", n.name.as_deref().unwrap_or("node")));
            false
        }
    });
    if nodes.is_empty() {
        shortfalls.truncate(3);
        return Err(format!(
            "none of the {total} suitable nodes meets the minimum properties {} ({}{})",
            describe(min),
            shortfalls.join("; "),
            if total > 3 { "; ..." } else { "" }
        ));
    }
    Ok(nodes)
}

/// Whether a node's `properties` meet `min`: `cpus`, `memory_mb` and `local_gb` at least
/// the minimum (numbers or numeric strings, as Ironic stores them), `cpu_arch` equal. A
/// property the node lacks meets no minimum. The error names the first property short.
pub fn meets(min: &PropertyMinimums, properties: &JsonMap) -> Result<(), String> {
    for (key, want) in [
        ("cpus", min.cpus),
        ("memory_mb", min.memory_mb),
        ("local_gb", min.local_gb),
    ] {
        let Some(want) = want else { continue };
        match properties.get(key).and_then(as_count) {
            Some(have) if have >= want => {}
            Some(have) => return Err(format!("{key} {have} < {want}")),
            None => return Err(format!("{key} unknown (not inspected?)")),
        }
    }
    if let Some(want) = &min.cpu_arch {
        match properties.get("cpu_arch").and_then(Value::as_str) {
            Some(have) if have == want => {}
            Some(have) => return Err(format!("cpu_arch {have} is not {want}")),
            None => return Err("cpu_arch unknown (not inspected?)".to_owned()),
        }
    }
    Ok(())
}

/// A property value as a whole count: a non-negative integer, a float (rounded down) or a
/// numeric string.
fn as_count(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n
            .as_u64()
            .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// `cpus >= 8, memory_mb >= 16384, cpu_arch = x86_64`.
pub fn describe(min: &PropertyMinimums) -> String {
    let mut parts = Vec::new();
    for (key, v) in [
        ("cpus", min.cpus),
        ("memory_mb", min.memory_mb),
        ("local_gb", min.local_gb),
    ] {
        if let Some(v) = v {
            parts.push(format!("{key} >= {v}"));
        }
    }
    if let Some(a) = &min.cpu_arch {
        parts.push(format!("cpu_arch = {a}"));
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use serde_json::json;
    use uuid::Uuid;

    use super::*;

    fn props(v: Value) -> JsonMap {
        v.as_object().cloned().unwrap_or_default()
    }

    fn min(cpus: Option<u64>, memory_mb: Option<u64>, local_gb: Option<u64>) -> PropertyMinimums {
        PropertyMinimums {
            cpus,
            memory_mb,
            local_gb,
            cpu_arch: None,
        }
    }

    #[test]
    fn minimum_properties_table() {
        let x86 = |m: PropertyMinimums| PropertyMinimums {
            cpu_arch: Some("x86_64".into()),
            ..m
        };
        let node =
            props(json!({"cpus": 8, "memory_mb": 16384, "local_gb": "100", "cpu_arch": "x86_64"}));
        let rows: [(PropertyMinimums, &JsonMap, Result<(), &str>); 12] = [
            (PropertyMinimums::default(), &node, Ok(())),
            (min(Some(8), None, None), &node, Ok(())),
            (min(Some(4), Some(8192), Some(50)), &node, Ok(())),
            (min(Some(8), Some(16384), Some(100)), &node, Ok(())),
            (min(Some(9), None, None), &node, Err("cpus 8 < 9")),
            (
                min(None, Some(16385), None),
                &node,
                Err("memory_mb 16384 < 16385"),
            ),
            (min(None, None, Some(101)), &node, Err("local_gb 100 < 101")),
            (x86(min(Some(8), None, None)), &node, Ok(())),
            (
                PropertyMinimums {
                    cpu_arch: Some("aarch64".into()),
                    ..Default::default()
                },
                &node,
                Err("cpu_arch x86_64 is not aarch64"),
            ),
            (
                min(Some(1), None, None),
                &JsonMap::new(),
                Err("cpus unknown (not inspected?)"),
            ),
            (
                x86(PropertyMinimums::default()),
                &JsonMap::new(),
                Err("cpu_arch unknown (not inspected?)"),
            ),
            (
                min(Some(2), None, None),
                &props(json!({"cpus": "two"})),
                Err("cpus unknown (not inspected?)"),
            ),
        ];
        for (m, p, want) in rows {
            assert_eq!(meets(&m, p), want.map_err(str::to_owned), "{m:?} {p:?}");
        }
        assert_eq!(
            meets(
                &min(Some(2), Some(1000), None),
                &props(json!({"cpus": 2.0, "memory_mb": 1000.9}))
            ),
            Ok(())
        );
    }

    fn node(name: &str, p: Value) -> Node {
        let mut n = Node::new(Uuid::new_v4(), "fake-hardware", Utc::now());
        n.name = Some(name.into());
        n.provision_state = "available".into();
        n.power_state = Some("power off".into());
        n.resource_class = Some("baremetal".into());
        n.properties = props(p);
        n
    }

    fn allocation(rc: Option<&str>, traits: &[&str], m: PropertyMinimums) -> Allocation {
        Allocation {
            uuid: Uuid::new_v4(),
            name: None,
            resource_class: rc.map(Into::into),
            traits: traits.iter().map(|t| (*t).to_owned()).collect(),
            candidate_nodes: vec![],
            extra: Default::default(),
            owner: None,
            state: "allocating".into(),
            node_uuid: None,
            last_error: None,
            created_at: Utc::now(),
            updated_at: None,
            min_properties: m,
            server: None,
        }
    }

    fn names(r: Result<Vec<Node>, String>) -> Result<Vec<String>, String> {
        r.map(|ns| ns.into_iter().filter_map(|n| n.name).collect())
    }

    #[test]
    fn candidate_table() {
        let small = node(
            "small",
            json!({"cpus": 2, "memory_mb": 2048, "local_gb": 19}),
        );
        let big = node(
            "big",
            json!({"cpus": 16, "memory_mb": 65536, "local_gb": 900, "cpu_arch": "x86_64"}),
        );
        let mut gpu = node("gpu", json!({"cpus": 16, "memory_mb": 65536}));
        gpu.traits = vec!["CUSTOM_GPU".into()];
        let mut busy = big.clone();
        busy.name = Some("busy".into());
        busy.instance_uuid = Some(Uuid::new_v4());
        let mut maint = big.clone();
        maint.name = Some("maint".into());
        maint.maintenance = true;
        let mut other_rc = big.clone();
        other_rc.name = Some("other-rc".into());
        other_rc.resource_class = Some("gpu".into());
        let mut unpowered = big.clone();
        unpowered.name = Some("unpowered".into());
        unpowered.power_state = None;
        let mut active = big.clone();
        active.name = Some("active".into());
        active.provision_state = "active".into();
        let all = vec![
            small.clone(),
            big.clone(),
            gpu.clone(),
            busy,
            maint,
            other_rc,
            unpowered,
            active,
        ];
        let m = |c, mem| min(Some(c), Some(mem), None);
        type Row<'a> = (Allocation, Vec<Node>, Result<Vec<&'a str>, &'a str>);
        let rows: Vec<Row<'_>> = vec![
            // Ironic's plain allocation: every available node of the class.
            (
                allocation(Some("baremetal"), &[], Default::default()),
                all.clone(),
                Ok(vec!["small", "big", "gpu"]),
            ),
            // No class asked: any class.
            (
                allocation(None, &[], Default::default()),
                all.clone(),
                Ok(vec!["small", "big", "gpu", "other-rc"]),
            ),
            (
                allocation(Some("baremetal"), &["CUSTOM_GPU"], Default::default()),
                all.clone(),
                Ok(vec!["gpu"]),
            ),
            (
                allocation(Some("baremetal"), &[], m(8, 32768)),
                all.clone(),
                Ok(vec!["big", "gpu"]),
            ),
            (
                allocation(
                    Some("baremetal"),
                    &[],
                    PropertyMinimums {
                        cpu_arch: Some("x86_64".into()),
                        ..m(8, 32768)
                    },
                ),
                all.clone(),
                Ok(vec!["big"]),
            ),
            // The only available node is below the flavor: never picked.
            (
                allocation(Some("baremetal"), &[], m(4, 4096)),
                vec![small.clone()],
                Err(
                    "none of the 1 suitable nodes meets the minimum properties cpus >= 4, \
                     memory_mb >= 4096 (small: cpus 2 < 4)",
                ),
            ),
            // One that meets it is picked.
            (
                allocation(Some("baremetal"), &[], m(2, 2048)),
                vec![small.clone()],
                Ok(vec!["small"]),
            ),
            (
                allocation(Some("gpu-class"), &[], Default::default()),
                all.clone(),
                Err("no available nodes match the resource class gpu-class"),
            ),
            (
                allocation(None, &[], Default::default()),
                vec![],
                Err("no nodes are available"),
            ),
            (
                allocation(Some("baremetal"), &["CUSTOM_FPGA"], Default::default()),
                all.clone(),
                Err("no suitable nodes have the requested traits CUSTOM_FPGA"),
            ),
        ];
        for (a, nodes, want) in rows {
            let got = names(candidates(&a, nodes));
            let want = want
                .map(|v| v.into_iter().map(str::to_owned).collect::<Vec<_>>())
                .map_err(str::to_owned);
            assert_eq!(got, want, "{:?} {:?}", a.resource_class, a.min_properties);
        }
    }

    #[test]
    fn owner_and_candidate_nodes_narrow_the_choice() {
        let mut mine = node("mine", json!({}));
        mine.owner = Some("p1".into());
        let mut leased = node("leased", json!({}));
        leased.lessee = Some("p1".into());
        let theirs = node("theirs", json!({}));
        let all = vec![mine.clone(), leased, theirs.clone()];
        let mut a = allocation(Some("baremetal"), &[], Default::default());
        a.owner = Some("p1".into());
        assert_eq!(
            names(candidates(&a, all.clone())),
            Ok(vec!["mine".to_owned(), "leased".to_owned()])
        );
        let mut b = allocation(Some("baremetal"), &[], Default::default());
        b.candidate_nodes = vec![theirs.uuid.to_string(), "mine".into()];
        assert_eq!(
            names(candidates(&b, all.clone())),
            Ok(vec!["mine".to_owned(), "theirs".to_owned()])
        );
        b.candidate_nodes = vec!["nobody".into()];
        assert_eq!(
            names(candidates(&b, all)),
            Err(
                "none of the requested nodes are available and match the resource class baremetal"
                    .to_owned()
            )
        );
    }

    #[test]
    fn describe_lists_what_is_asked() {
        assert_eq!(describe(&PropertyMinimums::default()), "");
        assert_eq!(
            describe(&PropertyMinimums {
                cpus: Some(2),
                local_gb: Some(10),
                cpu_arch: Some("x86_64".into()),
                ..Default::default()
            }),
            "cpus >= 2, local_gb >= 10, cpu_arch = x86_64"
        );
    }
}

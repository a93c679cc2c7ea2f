//! The operator's lifecycle steps on one node, each through the real `baremetal` CLI and
//! then a wait for the state the step ends in: shared by the lifecycle tests and
//! `ingot-lab`, so every proof drives the controller the same way.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, ensure};
use serde_json::Value;

use super::Rack;

/// Longest wait for a step that boots the agent or writes a disk (TCG, loaded CI machine).
pub const AGENT_STEP_TIMEOUT: Duration = Duration::from_secs(600);
/// Longest wait for a step that only talks to a BMC.
pub const BMC_STEP_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs `scenario` for every item on a thread of its own (the machines of a rack go through
/// their steps side by side) and returns the results in the items' order; a panicking
/// scenario becomes an error.
pub fn side_by_side<I: Sync, T: Send>(
    items: &[I],
    scenario: impl Fn(&I) -> anyhow::Result<T> + Sync,
) -> Vec<anyhow::Result<T>> {
    let scenario = &scenario;
    std::thread::scope(|s| {
        let handles: Vec<_> = items
            .iter()
            .map(|item| s.spawn(move || scenario(item)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("the scenario panicked")))
            })
            .collect()
    })
}

/// `key=value` strings for `--driver-info` from a `driver_info` object (strings unquoted,
/// other values as JSON).
pub fn driver_info_args(info: &Value) -> Vec<String> {
    info.as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| match v.as_str() {
                    Some(s) => format!("{k}={s}"),
                    None => format!("{k}={v}"),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A node's `uuid` from what the CLI printed.
pub fn uuid_of(v: &Value) -> anyhow::Result<String> {
    v["uuid"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("no uuid in {v}"))
}

/// What the agent reported for its last image write (`agent_last_result` of an `active`
/// node): the figures for the deploy throughput.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WriteFigures {
    pub bytes_written: u64,
    pub bytes_fetched: u64,
    /// The agent's whole write job (fetch, decode, write, verify, config drive).
    pub elapsed: Duration,
}

impl WriteFigures {
    /// From a node's `driver_internal_info.agent_last_result`.
    pub fn from_node(node: &Value) -> anyhow::Result<WriteFigures> {
        let r = &node["driver_internal_info"]["agent_last_result"];
        Ok(WriteFigures {
            bytes_written: r["bytes_written"]
                .as_u64()
                .with_context(|| format!("no bytes_written in {r}"))?,
            bytes_fetched: r["bytes_fetched"].as_u64().unwrap_or(0),
            elapsed: Duration::from_millis(r["elapsed_ms"].as_u64().unwrap_or(0)),
        })
    }

    /// Image bytes per second of the agent's write job, in MiB/s.
    pub fn mib_per_s(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.bytes_written as f64 / 1048576.0 / secs
        } else {
            0.0
        }
    }

    /// One line for the test's output.
    pub fn summary(&self, label: &str) -> String {
        format!(
            "[{label}] agent wrote {:.1} MiB ({:.1} MiB fetched) in {:.1} s: {:.1} MiB/s",
            self.bytes_written as f64 / 1048576.0,
            self.bytes_fetched as f64 / 1048576.0,
            self.elapsed.as_secs_f64(),
            self.mib_per_s()
        )
    }
}

impl Rack {
    /// `baremetal node create --driver D --driver-info k=v... [--property p]...` and
    /// `baremetal port create MAC --node UUID`; returns the node's uuid.
    pub fn enroll(
        &self,
        name: &str,
        driver: &str,
        driver_info: &[String],
        properties: &[String],
        mac: &str,
    ) -> anyhow::Result<String> {
        let mut args = vec!["node", "create", "--driver", driver, "--name", name];
        for i in driver_info {
            args.extend(["--driver-info", i]);
        }
        for p in properties {
            args.extend(["--property", p]);
        }
        let node = uuid_of(&self.baremetal_json(&args)?)?;
        self.baremetal(&["port", "create", mac, "--node", &node])?;
        Ok(node)
    }

    /// [`Rack::enroll`] of a rack machine with the `qemu` type (its power through QMP),
    /// named after it, with its MAC as the port; returns the node's uuid.
    pub fn enroll_machine(&self, m: &super::Machine) -> anyhow::Result<String> {
        self.enroll(
            &m.spec.name,
            "qemu",
            &m.qemu_driver_info(),
            &[],
            &m.spec.mac,
        )
    }

    /// `baremetal node set NODE --driver D --driver-info k=v...` (a discovered node gets
    /// its BMC).
    pub fn set_driver(
        &self,
        node: &str,
        driver: &str,
        driver_info: &[String],
    ) -> anyhow::Result<()> {
        let mut args = vec!["node", "set", node, "--driver", driver];
        for i in driver_info {
            args.extend(["--driver-info", i]);
        }
        self.baremetal(&args).map(|_| ())
    }

    /// `baremetal node manage` (the driver reads the power state) -> `manageable`.
    pub fn manage(&self, node: &str) -> anyhow::Result<Value> {
        self.baremetal(&["node", "manage", node])?;
        self.wait_provision_state(node, "manageable", BMC_STEP_TIMEOUT)
    }

    /// `baremetal node inspect` (the agent boots and reports) -> `manageable`; checks that
    /// properties came back.
    pub fn inspect(&self, node: &str) -> anyhow::Result<Value> {
        self.baremetal(&["node", "inspect", node])?;
        let n = self.wait_provision_state(node, "manageable", AGENT_STEP_TIMEOUT)?;
        let props = &n["properties"];
        ensure!(
            props["cpus"].as_u64().is_some_and(|c| c >= 1)
                && props["memory_mb"].as_u64().is_some_and(|m| m >= 256)
                && props["local_gb"].as_u64().is_some_and(|g| g >= 1),
            "inspection left no properties: {props}"
        );
        self.ensure_lldp_link(node)?;
        Ok(n)
    }

    /// After an inspection: the lab's switch (`lldpd` on the bridge) was heard over LLDP, so
    /// the inventory names it and the node's PXE port has its `local_link_connection`, seen
    /// through the real `baremetal` CLI.
    pub fn ensure_lldp_link(&self, node: &str) -> anyhow::Result<()> {
        use crate::netns::{BRIDGE_MAC, SWITCH_NAME};
        let inv = self
            .api_get(&format!("/v1/nodes/{node}/inventory"))?
            .context("no inventory after inspection")?;
        let heard: Vec<&Value> = inv["inventory"]["interfaces"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| i.get("lldp"))
            .collect();
        ensure!(
            heard.iter().any(|l| l["chassis_id"] == BRIDGE_MAC
                && l["port_id"] == "br0"
                && l["system_name"] == SWITCH_NAME),
            "no NIC heard the lab switch over LLDP: {}",
            inv["inventory"]["interfaces"]
        );
        let ports = self.baremetal_json(&["port", "list", "--node", node, "--long"])?;
        let want = serde_json::json!({
            "switch_id": BRIDGE_MAC,
            "port_id": "br0",
            "switch_info": SWITCH_NAME,
        });
        ensure!(
            ports
                .as_array()
                .is_some_and(|ps| ps.iter().any(|p| p["local_link_connection"] == want)),
            "no port has the lab switch as its local link connection: {ports}"
        );
        Ok(())
    }

    /// `baremetal node clean --clean-steps STEPS` (manual cleaning of a `manageable` node)
    /// -> `manageable`; returns the node's history events written by the cleaning.
    pub fn clean(&self, node: &str, steps: &Value) -> anyhow::Result<Vec<String>> {
        let before = self.history(node)?.len();
        self.baremetal(&["node", "clean", node, "--clean-steps", &steps.to_string()])?;
        self.wait_provision_state(node, "manageable", AGENT_STEP_TIMEOUT)?;
        Ok(self.history(node)?.split_off(before))
    }

    /// The node's history events, oldest first, as their text.
    pub fn history(&self, node: &str) -> anyhow::Result<Vec<String>> {
        let h = self
            .api_get(&format!("/v1/nodes/{node}/history?detail=true"))?
            .context("GET history")?;
        Ok(h["history"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["event"].as_str().map(str::to_owned))
            .collect())
    }

    /// `baremetal node provide` (cleaning) -> `available`.
    pub fn provide(&self, node: &str) -> anyhow::Result<Value> {
        self.baremetal(&["node", "provide", node])?;
        self.wait_provision_state(node, "available", AGENT_STEP_TIMEOUT)
    }

    /// `baremetal node set --instance-info k=v...` then `baremetal node deploy
    /// --config-drive JSON` -> `active`.
    pub fn deploy(
        &self,
        node: &str,
        instance_info: &[String],
        configdrive: &Value,
    ) -> anyhow::Result<Value> {
        let mut args = vec!["node", "set", node];
        for i in instance_info {
            args.extend(["--instance-info", i]);
        }
        self.baremetal(&args)?;
        let cd = configdrive.to_string();
        self.baremetal(&["node", "deploy", node, "--config-drive", &cd])?;
        self.wait_provision_state(node, "active", AGENT_STEP_TIMEOUT)
    }

    /// Runs `step` while sampling the node's `driver_internal_info.agent_progress` every
    /// half second; returns the step's result and every distinct report seen (the progress
    /// an operator watches in `GET /v1/nodes/{id}` and `ingot node watch`).
    pub fn watching_progress<T>(
        &self,
        node: &str,
        step: impl FnOnce() -> anyhow::Result<T>,
    ) -> (anyhow::Result<T>, Vec<Value>) {
        let done = AtomicBool::new(false);
        std::thread::scope(|s| {
            let watcher = s.spawn(|| {
                let mut seen: Vec<Value> = Vec::new();
                while !done.load(Ordering::SeqCst) {
                    if let Ok(n) = self.node(node) {
                        let p = &n["driver_internal_info"]["agent_progress"];
                        if p.is_object() && seen.last() != Some(p) {
                            seen.push(p.clone());
                        }
                    }
                    std::thread::sleep(Duration::from_millis(500));
                }
                seen
            });
            let r = step();
            done.store(true, Ordering::SeqCst);
            (r, watcher.join().unwrap_or_default())
        })
    }

    /// `baremetal node undeploy` (cleaning) -> `available`.
    pub fn undeploy(&self, node: &str) -> anyhow::Result<Value> {
        self.baremetal(&["node", "undeploy", node])?;
        self.wait_provision_state(node, "available", AGENT_STEP_TIMEOUT)
    }

    /// `baremetal node power off` -> `power off`.
    pub fn power_off(&self, node: &str) -> anyhow::Result<()> {
        self.baremetal(&["node", "power", "off", node])?;
        self.wait_power_state(node, "power off", BMC_STEP_TIMEOUT)
    }

    /// Fails unless the node has no `last_error`.
    pub fn ensure_no_error(&self, node: &str) -> anyhow::Result<()> {
        let n = self.node(node)?;
        ensure!(n["last_error"].is_null(), "last_error: {}", n["last_error"]);
        Ok(())
    }
}

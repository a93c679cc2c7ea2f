//! The hardware types this conductor offers, their interfaces, and per-node resolution.
//!
//! `GET /v1/drivers` lists [`DriverRegistry::list`] with `default_<kind>_interface` and
//! `enabled_<kind>_interfaces` from [`HardwareType::interfaces`];
//! `GET /v1/nodes/{ident}/validate` is [`DriverRegistry::validate`].

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use super::agent::{AgentDeploy, AgentInspect};
use super::fake::FakeHardware;
use super::manual::ManualHardware;
use super::measured::{CallObserver, Measured};
use super::qemu::QemuSettings;
use super::{DeployInterface, DriverError, InspectInterface, ManagementInterface, PowerInterface};
use crate::hub::AgentHub;
use crate::model::Node;

/// Every hardware type Ingot implements.
pub const KNOWN_HARDWARE_TYPES: [&str; 5] = ["fake-hardware", "ipmi", "manual", "qemu", "redfish"];

/// `enabled_hardware_types` when the configuration does not say. Never `qemu`: it starts
/// processes as the controller's user and must be turned on with its `[qemu] allowed_dir`.
pub const DEFAULT_HARDWARE_TYPES: [&str; 4] = ["ipmi", "redfish", "manual", "fake-hardware"];

/// Every interface kind Ironic knows, in the order the API lists them.
pub const INTERFACE_KINDS: [&str; 13] = [
    "bios",
    "boot",
    "console",
    "deploy",
    "firmware",
    "inspect",
    "management",
    "network",
    "power",
    "raid",
    "rescue",
    "storage",
    "vendor",
];

/// The default and the enabled implementations of one interface kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InterfaceChoice {
    pub default: String,
    pub enabled: Vec<String>,
}

/// One interface's `validate` result, as `GET /v1/nodes/{ident}/validate` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InterfaceValidation {
    pub result: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl InterfaceValidation {
    fn from_result(r: Result<(), DriverError>) -> Self {
        match r {
            Ok(()) => Self {
                result: true,
                reason: None,
            },
            Err(e) => Self {
                result: false,
                reason: Some(e.to_string()),
            },
        }
    }
}

/// A hardware type (`fake-hardware`, `manual`, later `ipmi`, `redfish`).
#[derive(Debug, Clone)]
pub struct HardwareType {
    pub name: String,
    /// Keyed by every kind of [`INTERFACE_KINDS`].
    pub interfaces: BTreeMap<&'static str, InterfaceChoice>,
    /// `driver_info` keys the type reads, with a description (`/v1/drivers/<name>/properties`).
    pub properties: BTreeMap<String, String>,
    power: Vec<Arc<dyn PowerInterface>>,
    management: Vec<Arc<dyn ManagementInterface>>,
    deploy: Vec<Arc<dyn DeployInterface>>,
    inspect: Vec<Arc<dyn InspectInterface>>,
}

/// The interfaces one node uses.
#[derive(Debug, Clone)]
pub struct NodeDrivers {
    pub power: Arc<dyn PowerInterface>,
    pub management: Arc<dyn ManagementInterface>,
    pub deploy: Arc<dyn DeployInterface>,
    pub inspect: Arc<dyn InspectInterface>,
}

impl HardwareType {
    /// A type with one implementation of each driven interface (the defaults) and names for
    /// the passive kinds (`boot`, `network`, ...). Names starting with `no-` mean "not
    /// supported".
    pub fn new(
        name: &str,
        power: Arc<dyn PowerInterface>,
        management: Arc<dyn ManagementInterface>,
        deploy: Arc<dyn DeployInterface>,
        inspect: Arc<dyn InspectInterface>,
        passive: &[(&'static str, &str)],
    ) -> Self {
        let mut interfaces = BTreeMap::new();
        let mut add = |kind: &'static str, name: &str| {
            interfaces
                .entry(kind)
                .or_insert_with(|| InterfaceChoice {
                    default: name.to_owned(),
                    enabled: vec![],
                })
                .enabled
                .push(name.to_owned());
        };
        add("power", power.name());
        add("management", management.name());
        add("deploy", deploy.name());
        add("inspect", inspect.name());
        for (kind, iface) in passive {
            add(kind, iface);
        }
        // Kinds given nothing get their `no-*` fallback (a kind listed with its own `no-*`
        // among others, such as `raid`, keeps it: Ironic enables `no-raid` beside `agent`).
        for kind in INTERFACE_KINDS {
            interfaces.entry(kind).or_insert_with(|| InterfaceChoice {
                default: format!("no-{kind}"),
                enabled: vec![format!("no-{kind}")],
            });
        }
        Self {
            name: name.to_owned(),
            interfaces,
            properties: BTreeMap::new(),
            power: vec![power],
            management: vec![management],
            deploy: vec![deploy],
            inspect: vec![inspect],
        }
    }

    /// The `fake-hardware` type over one shared fake.
    pub fn fake(hw: Arc<FakeHardware>) -> Self {
        Self::new(
            "fake-hardware",
            hw.clone(),
            hw.clone(),
            hw.clone(),
            hw,
            &[
                ("bios", "fake"),
                ("boot", "fake"),
                ("console", "fake"),
                ("firmware", "fake"),
                ("network", "noop"),
                ("raid", "fake"),
                ("raid", "no-raid"),
                ("raid", super::raid::AGENT),
                ("rescue", "fake"),
                ("storage", "noop"),
                ("vendor", "fake"),
            ],
        )
    }

    /// The `manual` type: operator power, agent-driven deploy, clean and inspect.
    pub fn manual(hw: Arc<ManualHardware>, hub: Arc<AgentHub>) -> Self {
        Self::new(
            "manual",
            hw.clone(),
            hw.clone(),
            Arc::new(AgentDeploy::new(hub.clone()).with_operator_log(hw.clone())),
            Arc::new(AgentInspect::new(hub, hw.clone(), hw)),
            &[
                ("boot", "ipxe"),
                ("network", "noop"),
                ("raid", "no-raid"),
                ("raid", super::raid::AGENT),
                ("storage", "noop"),
            ],
        )
    }

    fn pick<'a, T: ?Sized>(
        &self,
        kind: &str,
        node: &Node,
        impls: &'a [Arc<T>],
        name_of: impl Fn(&T) -> &'static str,
    ) -> Result<&'a Arc<T>, DriverError> {
        let wanted = node.interfaces.get(&format!("{kind}_interface"));
        match wanted {
            None => impls.first(),
            Some(w) => impls.iter().find(|i| name_of(i) == w.as_str()),
        }
        .ok_or_else(|| {
            DriverError::InvalidParameter(format!(
                "Could not find the following interface in the 'ironic.hardware.interfaces.{kind}' \
                 entrypoint: {}. Valid interfaces are {:?}.",
                wanted.map_or("", String::as_str),
                impls.iter().map(|i| name_of(i)).collect::<Vec<_>>()
            ))
        })
    }

    /// The interfaces a node uses (its `*_interface` overrides, else the defaults).
    pub fn resolve(&self, node: &Node) -> Result<NodeDrivers, DriverError> {
        Ok(NodeDrivers {
            power: self.pick("power", node, &self.power, |i| i.name())?.clone(),
            management: self
                .pick("management", node, &self.management, |i| i.name())?
                .clone(),
            deploy: self
                .pick("deploy", node, &self.deploy, |i| i.name())?
                .clone(),
            inspect: self
                .pick("inspect", node, &self.inspect, |i| i.name())?
                .clone(),
        })
    }

    /// The interface name a node uses for a kind.
    pub fn interface_for(&self, node: &Node, kind: &str) -> Option<String> {
        node.interfaces
            .get(&format!("{kind}_interface"))
            .cloned()
            .or_else(|| self.interfaces.get(kind).map(|c| c.default.clone()))
    }
}

/// All hardware types of this conductor.
#[derive(Debug, Clone, Default)]
pub struct DriverRegistry {
    types: BTreeMap<String, HardwareType>,
    fake: Option<Arc<FakeHardware>>,
    manual: Option<Arc<ManualHardware>>,
    hub: Option<Arc<AgentHub>>,
    /// Told about every power and management call of the interfaces handed out.
    observer: Option<Arc<dyn CallObserver>>,
}

impl DriverRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    /// The default hardware types ([`DEFAULT_HARDWARE_TYPES`]: `fake-hardware`, `manual`
    /// and the BMC types `ipmi` and `redfish`, whose deploy and inspect go through the
    /// agent), with a fresh agent hub.
    pub fn builtin() -> Self {
        Self::builtin_with_hub(AgentHub::new())
    }

    /// The default hardware types; the agent interfaces queue commands in `hub` (the one
    /// the agent API serves).
    pub fn builtin_with_hub(hub: Arc<AgentHub>) -> Self {
        let mut registry = Self::new();
        for name in DEFAULT_HARDWARE_TYPES {
            // Never fails: only `qemu` needs settings.
            let _ = registry.enable(name, &hub, None);
        }
        registry.hub = Some(hub);
        registry
    }

    /// Exactly the hardware types in `enabled` (`enabled_hardware_types`); `qemu` needs its
    /// settings. A type not enabled is not listed and nodes of it are refused.
    pub fn with_types(
        hub: Arc<AgentHub>,
        enabled: &[String],
        qemu: Option<QemuSettings>,
    ) -> Result<Self, String> {
        let mut registry = Self::new();
        for name in enabled {
            registry.enable(name, &hub, qemu.clone())?;
        }
        registry.hub = Some(hub);
        Ok(registry)
    }

    fn enable(
        &mut self,
        name: &str,
        hub: &Arc<AgentHub>,
        qemu: Option<QemuSettings>,
    ) -> Result<(), String> {
        match name {
            "fake-hardware" => {
                let fake = FakeHardware::new();
                self.register(HardwareType::fake(fake.clone()));
                self.fake = Some(fake);
            }
            "manual" => {
                let manual = ManualHardware::new();
                self.register(HardwareType::manual(manual.clone(), hub.clone()));
                self.manual = Some(manual);
            }
            "ipmi" => self.register(super::ipmi::hardware_type(
                super::ipmi::IpmiHardware::new(),
                hub.clone(),
            )),
            "redfish" => self.register(super::redfish::hardware_type(
                super::redfish::RedfishHardware::new(),
                hub.clone(),
            )),
            "qemu" => {
                let settings = qemu.ok_or_else(|| {
                    "the qemu hardware type needs [qemu] allowed_dir (the directory its VMs' \
                     files lie in)"
                        .to_owned()
                })?;
                self.register(super::qemu::hardware_type(
                    super::qemu::QemuHardware::new(settings),
                    hub.clone(),
                ));
            }
            other => {
                return Err(format!(
                    "unknown hardware type {other:?} in enabled_hardware_types (known: {})",
                    KNOWN_HARDWARE_TYPES.join(", ")
                ));
            }
        }
        Ok(())
    }

    /// The agent command hub the built-in agent interfaces use.
    pub fn agent_hub(&self) -> Option<&Arc<AgentHub>> {
        self.hub.as_ref()
    }

    pub fn register(&mut self, hw: HardwareType) {
        self.types.insert(hw.name.clone(), hw);
    }

    pub fn get(&self, name: &str) -> Option<&HardwareType> {
        self.types.get(name)
    }

    /// Hardware types by name.
    pub fn list(&self) -> impl Iterator<Item = &HardwareType> {
        self.types.values()
    }

    /// The shared state of the built-in `fake-hardware` type (tests inspect its calls).
    pub fn fake_hardware(&self) -> Option<&Arc<FakeHardware>> {
        self.fake.as_ref()
    }

    /// The shared state of the built-in `manual` type (its recorded instructions).
    pub fn manual_hardware(&self) -> Option<&Arc<ManualHardware>> {
        self.manual.as_ref()
    }

    fn hardware_type(&self, node: &Node) -> Result<&HardwareType, DriverError> {
        self.types.get(&node.driver).ok_or_else(|| {
            DriverError::InvalidParameter(format!(
                "No valid host was found. Reason: No conductor service registered which \
                 supports driver {} for conductor group \"{}\".",
                node.driver, node.conductor_group
            ))
        })
    }

    /// The name of the node's RAID interface (its `raid_interface`, else its type's default).
    pub fn raid_interface(&self, node: &Node) -> Result<String, DriverError> {
        let hw = self.hardware_type(node)?;
        Ok(hw
            .interface_for(node, "raid")
            .unwrap_or_else(|| "no-raid".to_owned()))
    }

    /// The interfaces a node uses (power and management timed by the observer, if any).
    pub fn resolve(&self, node: &Node) -> Result<NodeDrivers, DriverError> {
        let mut drivers = self.hardware_type(node)?.resolve(node)?;
        if let Some(o) = &self.observer {
            drivers.power = Arc::new(Measured::new(drivers.power, o.clone()));
            drivers.management = Arc::new(Measured::new(drivers.management, o.clone()));
        }
        Ok(drivers)
    }

    /// Reports every power and management call of the nodes' interfaces to `observer`.
    pub fn observe(&mut self, observer: Arc<dyn CallObserver>) {
        self.observer = Some(observer);
    }

    /// Validates every interface but `vendor`, as `GET /v1/nodes/{ident}/validate`.
    pub fn validate(
        &self,
        node: &Node,
    ) -> Result<BTreeMap<String, InterfaceValidation>, DriverError> {
        let hw = self.hardware_type(node)?;
        let drivers = hw.resolve(node);
        let mut out = BTreeMap::new();
        for kind in INTERFACE_KINDS.into_iter().filter(|k| *k != "vendor") {
            let result = match (&drivers, kind) {
                (Err(e), "power" | "management" | "deploy" | "inspect") => Err(e.clone()),
                (Ok(d), "power") => d.power.validate(node),
                (Ok(d), "management") => d.management.validate(node),
                (Ok(d), "deploy") => d.deploy.validate(node),
                (Ok(d), "inspect") => d.inspect.validate(node),
                // Ironic's RAID `validate`: the target, when there is one, must suit the
                // node's RAID interface.
                (_, "raid") if !node.target_raid_config.is_empty() => {
                    let iface = hw.interface_for(node, kind).unwrap_or_default();
                    super::raid::validate_for(&iface, &hw.name, &node.target_raid_config).map_err(
                        |r| match r {
                            super::raid::Refusal::Unsupported(m) => DriverError::Unsupported(m),
                            super::raid::Refusal::Invalid(m) => DriverError::InvalidParameter(m),
                        },
                    )
                }
                _ => match hw.interface_for(node, kind) {
                    Some(name) if !name.starts_with("no-") => Ok(()),
                    _ => Err(DriverError::Unsupported(format!(
                        "{} driver does not support {kind} (disabled or not implemented).",
                        hw.name
                    ))),
                },
            };
            out.insert(kind.to_owned(), InterfaceValidation::from_result(result));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use uuid::Uuid;

    use super::*;

    #[test]
    fn builtin_types_list_default_and_enabled_interfaces() {
        let registry = DriverRegistry::builtin();
        let names: Vec<_> = registry.list().map(|h| h.name.as_str()).collect();
        assert_eq!(names, vec!["fake-hardware", "ipmi", "manual", "redfish"]);
        let ipmi = registry.get("ipmi").expect("ipmi");
        assert_eq!(ipmi.interfaces["power"].default, "ipmitool");
        assert!(ipmi.properties.contains_key("ipmi_cipher_suite"));
        assert_eq!(
            registry.get("redfish").expect("redfish").interfaces["management"].default,
            "redfish"
        );
        let fake = registry.get("fake-hardware").expect("fake");
        assert_eq!(fake.interfaces.len(), INTERFACE_KINDS.len());
        assert_eq!(fake.interfaces["power"].default, "fake");
        assert_eq!(fake.interfaces["network"].enabled, vec!["noop".to_owned()]);
        let manual = registry.get("manual").expect("manual");
        assert_eq!(manual.interfaces["deploy"].default, "direct");
        assert_eq!(manual.interfaces["inspect"].default, "agent");
        assert_eq!(manual.interfaces["console"].default, "no-console");
    }

    #[test]
    fn raid_interfaces_are_ironics_and_none_defaults_to_agent() {
        let registry = DriverRegistry::builtin();
        for hw in registry.list() {
            // `raid::uses_agent_raid` reads only the node's own field: it relies on this.
            assert_ne!(
                hw.interfaces["raid"].default,
                super::super::raid::AGENT,
                "{}",
                hw.name
            );
        }
        let ipmi = &registry.get("ipmi").expect("ipmi").interfaces["raid"];
        assert_eq!(ipmi.default, "no-raid");
        assert_eq!(ipmi.enabled, ["no-raid", "agent"]);
        let fake = &registry.get("fake-hardware").expect("fake").interfaces["raid"];
        assert_eq!(fake.default, "fake");
        assert_eq!(fake.enabled, ["fake", "no-raid", "agent"]);
        let manual = &registry.get("manual").expect("manual").interfaces["raid"];
        assert_eq!(manual.enabled, ["no-raid", "agent"]);
    }

    #[test]
    fn only_enabled_types_are_registered_and_qemu_needs_its_directory() {
        let hub = AgentHub::new();
        let names = |r: &DriverRegistry| r.list().map(|h| h.name.clone()).collect::<Vec<_>>();
        let r = DriverRegistry::with_types(hub.clone(), &["ipmi".to_owned()], None)
            .expect("ipmi alone");
        assert_eq!(names(&r), vec!["ipmi"]);
        let node = Node::new(Uuid::new_v4(), "fake-hardware", Utc::now());
        assert!(r.resolve(&node).is_err());
        let err = DriverRegistry::with_types(hub.clone(), &["qemu".to_owned()], None)
            .expect_err("qemu without a directory");
        assert!(err.contains("[qemu] allowed_dir"), "{err}");
        let err = DriverRegistry::with_types(hub.clone(), &["ilo".to_owned()], None)
            .expect_err("unknown");
        assert!(err.contains("unknown hardware type \"ilo\""), "{err}");
        let dir = tempfile::tempdir().expect("tempdir");
        let qemu = QemuSettings::new(dir.path()).expect("settings");
        let r = DriverRegistry::with_types(hub, &["qemu".to_owned()], Some(qemu))
            .expect("qemu with its directory");
        assert_eq!(names(&r), vec!["qemu"]);
    }

    #[test]
    fn validate_reports_per_interface_results() {
        let registry = DriverRegistry::builtin();
        let node = Node::new(Uuid::new_v4(), "fake-hardware", Utc::now());
        let v = registry.validate(&node).expect("validate");
        assert_eq!(v.len(), 12);
        assert!(v.values().all(|r| r.result), "{v:?}");

        let node = Node::new(Uuid::new_v4(), "manual", Utc::now());
        let v = registry.validate(&node).expect("validate");
        assert!(v["power"].result);
        assert!(!v["deploy"].result);
        assert!(
            v["deploy"]
                .reason
                .as_deref()
                .is_some_and(|r| r.contains("image_source"))
        );
        assert_eq!(
            v["console"].reason.as_deref(),
            Some("manual driver does not support console (disabled or not implemented).")
        );
        let json = serde_json::to_value(&v["power"]).expect("json");
        assert_eq!(json, serde_json::json!({"result": true}));

        let node = Node::new(Uuid::new_v4(), "nope", Utc::now());
        assert!(registry.validate(&node).is_err());
    }

    #[test]
    fn node_interface_overrides_are_honoured() {
        let registry = DriverRegistry::builtin();
        let mut node = Node::new(Uuid::new_v4(), "fake-hardware", Utc::now());
        node.interfaces
            .insert("power_interface".into(), "fake".into());
        assert_eq!(
            registry.resolve(&node).expect("resolve").power.name(),
            "fake"
        );
        node.interfaces
            .insert("power_interface".into(), "ipmitool".into());
        assert!(registry.resolve(&node).is_err());
    }
}

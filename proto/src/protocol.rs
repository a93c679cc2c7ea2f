//! The agent protocol: the agent pulls, the controller never calls the agent.
//!
//! 1. `POST /agent/v1/lookup` with a [`LookupRequest`] (MACs, SMBIOS identity, inventory).
//!    The controller finds the node by MAC or system UUID, or enrolls an unknown machine
//!    when discovery is on, and answers a [`LookupResponse`] with the node UUID and, at the
//!    first lookup after the controller booted the agent, the agent token (none later: the
//!    agent keeps the one it has and sends it in [`TOKEN_HEADER`] on its lookups too).
//! 2. `POST /agent/v1/heartbeat` ([`HeartbeatRequest`]) long-polls for the next command;
//!    the answer is a [`HeartbeatResponse`] carrying one [`Command`] (`wait` when there is
//!    nothing to do).
//! 3. `POST /agent/v1/events` ([`EventReport`]) sends progress while a command runs and its
//!    final result.
//!
//! Every call after lookup carries the token in the [`TOKEN_HEADER`] header; a missing or
//! stale token (the controller rebooted or powered the machine off) is refused with 401.
//! A lookup while another agent holds the node's session is refused with 409. A result
//! report answered 503 is sent again with the same command id; the controller applies it
//! once.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::events::{AgentEvent, ErrorReport, WipeMode};
use crate::hints::RootDeviceHints;
use crate::inventory::Inventory;

/// Path of the lookup call.
pub const PATH_LOOKUP: &str = "/agent/v1/lookup";
/// Path of the heartbeat long-poll.
pub const PATH_HEARTBEAT: &str = "/agent/v1/heartbeat";
/// Path of progress and result reports.
pub const PATH_EVENTS: &str = "/agent/v1/events";
/// HTTP header carrying the agent token.
pub const TOKEN_HEADER: &str = "X-Ingot-Agent-Token";

/// The agent introduces itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LookupRequest {
    /// [`crate::PROTOCOL_VERSION`] of the agent.
    pub protocol_version: u32,
    /// The agent's own version string.
    pub agent_version: String,
    /// MAC addresses of every physical NIC, lower case, colon separated.
    pub macs: Vec<String>,
    /// The MAC the machine booted from (`BOOTIF=` on the kernel command line), if known.
    #[serde(default)]
    pub boot_mac: Option<String>,
    /// SMBIOS system UUID.
    #[serde(default)]
    pub system_uuid: Option<String>,
    /// SMBIOS system serial number.
    #[serde(default)]
    pub system_serial: Option<String>,
    /// The full hardware inventory.
    pub inventory: Inventory,
    /// The steps this agent offers ([`AgentStep`]): the controller offers them for
    /// cleaning, deploying and servicing without knowing them, and runs them with
    /// [`Command::RunStep`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<AgentStep>,
}

/// At most this many steps in a lookup.
pub const AGENT_STEPS_MAX: usize = 64;
/// At most this many arguments described per step.
pub const STEP_ARGS_MAX: usize = 16;
/// Longest interface, step or argument name.
pub const STEP_NAME_MAX: usize = 64;
/// Longest argument description.
pub const STEP_TEXT_MAX: usize = 512;

/// A step an agent offers (Ironic's `get_clean_steps` / `get_deploy_steps` of a hardware
/// manager): where it may run, at which priority, and the arguments it takes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentStep {
    /// `deploy`, `raid`, `bios`, `management`, `power` (the interface it belongs to).
    pub interface: String,
    pub step: String,
    /// As a clean step: its priority in automated cleaning (0: only when asked for);
    /// `None`: not a clean step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clean_priority: Option<u32>,
    /// As a deploy step: its priority in a deploy (0: only when a template or the
    /// operator names it); `None`: not a deploy step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy_priority: Option<u32>,
    /// Whether `service` may run it on an active node.
    #[serde(default)]
    pub service: bool,
    /// Whether it may be aborted while it runs.
    #[serde(default)]
    pub abortable: bool,
    /// The arguments it takes, by name (Ironic's `argsinfo`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub argsinfo: std::collections::BTreeMap<String, StepArg>,
}

/// One argument of an [`AgentStep`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepArg {
    pub description: String,
    #[serde(default)]
    pub required: bool,
}

/// Checks an agent's steps before the controller offers them: at most
/// [`AGENT_STEPS_MAX`], names of lower-case letters, digits and `_` up to
/// [`STEP_NAME_MAX`], no step twice, bounded argument descriptions.
pub fn check_agent_steps(steps: &[AgentStep]) -> Result<(), String> {
    let name_ok = |s: &str| {
        !s.is_empty()
            && s.len() <= STEP_NAME_MAX
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    };
    if steps.len() > AGENT_STEPS_MAX {
        return Err(format!(
            "an agent offers at most {AGENT_STEPS_MAX} steps, not {}",
            steps.len()
        ));
    }
    for (i, s) in steps.iter().enumerate() {
        if !name_ok(&s.interface) || !name_ok(&s.step) {
            return Err(format!(
                "agent step {:?}.{:?}: names are lower-case letters, digits and _",
                s.interface.chars().take(STEP_NAME_MAX).collect::<String>(),
                s.step.chars().take(STEP_NAME_MAX).collect::<String>()
            ));
        }
        if steps[..i]
            .iter()
            .any(|o| o.interface == s.interface && o.step == s.step)
        {
            return Err(format!(
                "agent step {}.{} offered twice",
                s.interface, s.step
            ));
        }
        if s.argsinfo.len() > STEP_ARGS_MAX
            || s.argsinfo
                .iter()
                .any(|(k, a)| !name_ok(k) || a.description.len() > STEP_TEXT_MAX)
        {
            return Err(format!(
                "agent step {}.{}: at most {STEP_ARGS_MAX} arguments, named as steps, \
                 described in at most {STEP_TEXT_MAX} bytes",
                s.interface, s.step
            ));
        }
    }
    Ok(())
}

/// The controller's answer to a lookup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LookupResponse {
    /// The node this machine is.
    pub node_uuid: Uuid,
    /// Token for every further call, handed out once per agent boot: at the first lookup
    /// after the controller booted the machine into the agent (or enrolled it). `None` on
    /// any later lookup of the same boot: the agent keeps the token it has (Ironic answers
    /// `******` there).
    pub token: Option<String>,
    /// True when this lookup enrolled the machine (zero-touch discovery).
    pub discovered: bool,
    /// How long the controller may hold a heartbeat before answering `wait`.
    pub heartbeat_timeout_secs: u32,
}

/// What the agent is doing when it heartbeats.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum AgentState {
    /// Ready for a command.
    Idle,
    /// Running the command with this id.
    Busy { command_id: Uuid },
}

/// A heartbeat: "here I am, give me work".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeartbeatRequest {
    pub node_uuid: Uuid,
    pub state: AgentState,
}

/// The answer to a heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeartbeatResponse {
    /// Identifies the command in event reports.
    pub command_id: Uuid,
    pub command: Command,
}

/// Work for the agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Command {
    /// Nothing to do: heartbeat again after this many seconds.
    Wait { seconds: u32 },
    /// Collect the inventory again and report it as the result.
    Inspect,
    /// Wipe disks. `devices` empty means every eligible disk (read-only, virtual media and
    /// the boot medium are skipped); any failure fails the command.
    Wipe {
        mode: WipeMode,
        #[serde(default)]
        devices: Vec<String>,
    },
    /// Write an image and a config drive.
    Deploy(Box<DeployCommand>),
    /// Reboot now (after the result is reported).
    Reboot,
    /// Power off now (after the result is reported).
    PowerOff,
    /// Create, or reset, the BMC user named `user` through the machine's own IPMI device
    /// (`/dev/ipmi0`): a new random password, administrator on the BMC's LAN channel. The
    /// result's `detail` is a [`BmcEnrolled`]. `user` is 1 to 16 printable ASCII characters
    /// without spaces; the agent refuses anything else.
    EnrollBmc { user: String },
    /// Run a step the agent offered at lookup ([`AgentStep`]) with `args`; the result's
    /// `detail` is what the step reports.
    RunStep {
        interface: String,
        step: String,
        #[serde(default)]
        args: serde_json::Map<String, Value>,
    },
}

/// Longest BMC user name: IPMI's Set User Name carries 16 bytes.
pub const BMC_USER_MAX: usize = 16;

/// Checks the user name of [`Command::EnrollBmc`]: 1 to [`BMC_USER_MAX`] printable ASCII
/// characters, no space (what every BMC accepts).
pub fn check_bmc_user(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > BMC_USER_MAX {
        return Err(format!(
            "a BMC user name has 1 to {BMC_USER_MAX} characters, not {}",
            name.len()
        ));
    }
    if !name.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("a BMC user name is printable ASCII without spaces".to_owned());
    }
    Ok(())
}

/// What a deploy writes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeployCommand {
    /// HTTP(S) URL of the image (raw, zstd, gzip or xz).
    pub image_url: String,
    /// `ALGO:HEX` over the bytes as served (`sha256`, `sha512`, `md5`).
    pub checksum: String,
    /// How to choose the target disk; empty hints pick the smallest disk that fits.
    #[serde(default)]
    pub root_device_hints: RootDeviceHints,
    /// The config drive to append, if any.
    #[serde(default)]
    pub configdrive: Option<ConfigDrive>,
    /// The smallest disk the instance accepts, in bytes (`instance_info.root_gb`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_disk_bytes: Option<u64>,
    /// Build these arrays and put the image's root file system on the first one;
    /// `root_device_hints` are then ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub software_raid: Option<crate::SoftwareRaid>,
}

/// A config drive, either built by the agent from its parts or given as an image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ConfigDrive {
    /// The OpenStack layout's documents; the agent builds the `config-2` ISO.
    Parts {
        meta_data: Value,
        #[serde(default)]
        user_data: Option<String>,
        #[serde(default)]
        network_data: Option<Value>,
        #[serde(default)]
        vendor_data: Option<Value>,
    },
    /// A ready image, gzip-compressed and base64-encoded (what the Ironic CLI sends).
    GzipBase64 { data: String },
}

/// The result document of [`Command::EnrollBmc`] (`Report::Succeeded::detail`): the BMC
/// user the agent created or reset, and where the BMC answers on the LAN. Holds a secret:
/// `Debug` shows the password as `******`; whoever stores it must seal it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BmcEnrolled {
    /// The BMC's IPv4 address on its LAN channel, if it has one.
    pub bmc_address: Option<String>,
    /// The LAN channel's MAC address (lower case, colon separated), if the BMC says.
    pub bmc_mac: Option<String>,
    /// The LAN channel the user may log in on.
    pub channel: u8,
    /// The user's slot in the BMC's user table (2 to 63; the same slot on a reset).
    pub user_id: u8,
    pub username: String,
    /// The new password (16 characters of `[A-Za-z0-9]`).
    pub password: String,
}

impl std::fmt::Debug for BmcEnrolled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BmcEnrolled")
            .field("bmc_address", &self.bmc_address)
            .field("bmc_mac", &self.bmc_mac)
            .field("channel", &self.channel)
            .field("user_id", &self.user_id)
            .field("username", &self.username)
            .field("password", &"******")
            .finish()
    }
}

/// A report about a running or finished command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventReport {
    pub node_uuid: Uuid,
    pub command_id: Uuid,
    pub report: Report,
}

/// Progress, success or failure of a command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "report", rename_all = "snake_case")]
pub enum Report {
    /// An intermediate event (progress, a phase done).
    Event { event: AgentEvent },
    /// The command succeeded; `inventory` is set for `inspect`, `detail` carries the
    /// command's result document (write or wipe report).
    Succeeded {
        #[serde(default)]
        inventory: Option<Box<Inventory>>,
        #[serde(default)]
        detail: Option<Value>,
    },
    /// The command failed.
    Failed { error: ErrorReport },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bmc_user_names() {
        for (name, ok) in [
            ("ingot", true),
            ("a", true),
            ("sixteen-chars-ok", true),
            ("seventeen-chars-x", false),
            ("", false),
            ("two words", false),
            ("tab\t", false),
            ("caf\u{e9}", false),
        ] {
            assert_eq!(check_bmc_user(name).is_ok(), ok, "{name:?}");
        }
        let c = Command::EnrollBmc {
            user: "ingot".into(),
        };
        let j = serde_json::to_value(&c).expect("json");
        assert_eq!(
            j,
            serde_json::json!({"command": "enroll_bmc", "user": "ingot"})
        );
    }

    #[test]
    fn commands_are_tagged() {
        let c = Command::Wipe {
            mode: WipeMode::Metadata,
            devices: vec![],
        };
        let j = serde_json::to_value(&c).expect("json");
        assert_eq!(j["command"], "wipe");
        let back: Command = serde_json::from_value(j).expect("back");
        assert_eq!(back, c);
        let w: Command = serde_json::from_str(r#"{"command":"wait","seconds":5}"#).expect("wait");
        assert_eq!(w, Command::Wait { seconds: 5 });
    }

    #[test]
    fn enroll_bmc_round_trips() {
        let c = Command::EnrollBmc {
            user: "ingot".into(),
        };
        let j = serde_json::to_value(&c).expect("json");
        assert_eq!(
            j,
            serde_json::json!({"command": "enroll_bmc", "user": "ingot"})
        );
        let back: Command = serde_json::from_value(j).expect("back");
        assert_eq!(back, c);
        assert!(serde_json::from_str::<Command>(r#"{"command":"enroll_bmc"}"#).is_err());
    }

    #[test]
    fn bmc_enrolled_round_trips_and_hides_the_password_from_debug() {
        let e = BmcEnrolled {
            bmc_address: Some("10.11.12.13".into()),
            bmc_mac: None,
            channel: 1,
            user_id: 3,
            username: "ingot".into(),
            password: "Abcdefgh12345678".into(),
        };
        let j = serde_json::to_value(&e).expect("json");
        assert_eq!(j["password"], "Abcdefgh12345678");
        assert_eq!(j["bmc_mac"], Value::Null);
        let back: BmcEnrolled = serde_json::from_value(j).expect("back");
        assert_eq!(back, e);
        let shown = format!("{e:?}");
        assert!(!shown.contains("Abcdefgh"), "{shown}");
        assert!(shown.contains("******"), "{shown}");
    }

    #[test]
    fn deploy_defaults() {
        let d: Command = serde_json::from_str(
            r#"{"command":"deploy","image_url":"http://192.0.2.1/i.zst","checksum":"sha256:00"}"#,
        )
        .expect("deploy");
        let Command::Deploy(d) = d else {
            panic!("not a deploy")
        };
        assert!(d.configdrive.is_none());
        assert_eq!(d.root_device_hints, RootDeviceHints::default());
    }
}

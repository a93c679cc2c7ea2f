//! In-band BMC enrolment (`[discovery] enroll_bmc`, as MAAS's `bmc_config`): a discovered
//! machine's agent creates (or resets) a BMC user through `/dev/ipmi0` and reports the
//! BMC's address and the credentials over the TLS agent channel (`Command::EnrollBmc`).
//! Here: the pure reading of that result ([`parse`]) and its application to the node
//! ([`apply`]): the `ipmi` hardware type with `ipmi_address`, `ipmi_username` and
//! `ipmi_password` (sealed by the store like every secret of `driver_info`), and a history
//! line that names the BMC and the user, never the password. The agent API then manages
//! the node, which reads its power state over the LAN with those credentials.

use std::net::IpAddr;

use chrono::Utc;
use serde_json::{Value, json};
use uuid::Uuid;

use proto::protocol::BmcEnrolled;

use crate::model::{HistoryEvent, Secret};
use crate::store::{Store, StoreError};

/// Set in `driver_internal_info` while an enrolment runs on a node the discovery rules
/// asked to manage: a failed enrolment then manages it with the driver it has.
pub const MANAGE_AFTER_KEY: &str = "manage_after_bmc_enrolment";

/// The hardware type an enrolled node gets.
pub const HARDWARE_TYPE: &str = "ipmi";
/// IPMI 2.0's longest password (Set User Password with the 20-byte flag).
const PASSWORD_MAX: usize = 20;

/// What the agent reported: the BMC's LAN address and the user it set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrolledBmc {
    pub address: IpAddr,
    pub mac: Option<String>,
    pub channel: u8,
    pub user_id: u8,
    pub username: String,
    pub password: Secret,
}

/// PURE: the enrolment result the agent reported (a [`BmcEnrolled`] document) checked for
/// what the controller will use; `Err` names what is wrong (never the password's value).
pub fn parse(detail: Option<&Value>) -> Result<EnrolledBmc, String> {
    let d = detail.ok_or("the agent reported no BMC credentials")?;
    // serde's messages quote values: keep them out, the password is one.
    let r: BmcEnrolled = serde_json::from_value(d.clone()).map_err(|e| {
        format!(
            "the BMC enrolment result is malformed (line {}, column {})",
            e.line(),
            e.column()
        )
    })?;
    let address: IpAddr = r
        .bmc_address
        .as_deref()
        .ok_or("the BMC reported no LAN address")?
        .parse()
        .map_err(|_| "the BMC enrolment result's bmc_address is not an IP address".to_owned())?;
    if address.is_unspecified() || address.is_loopback() || address.is_multicast() {
        return Err(format!(
            "the BMC reported {address}, which cannot be its LAN address"
        ));
    }
    proto::protocol::check_bmc_user(&r.username)?;
    if r.password.is_empty()
        || r.password.len() > PASSWORD_MAX
        || !r.password.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(format!(
            "the BMC enrolment result's password is not 1 to {PASSWORD_MAX} printable characters"
        ));
    }
    let mac = match r.bmc_mac {
        None => None,
        Some(m) if is_mac(&m) => Some(m.to_ascii_lowercase()),
        Some(_) => return Err("the BMC enrolment result's bmc_mac is not a MAC".to_owned()),
    };
    if !(1..=15).contains(&r.channel) {
        return Err("the BMC enrolment result's channel is out of range".to_owned());
    }
    // User 1 is the anonymous user; IPMI numbers users up to 63.
    if !(2..=63).contains(&r.user_id) {
        return Err("the BMC enrolment result's user_id is out of range".to_owned());
    }
    Ok(EnrolledBmc {
        address,
        mac,
        channel: r.channel,
        user_id: r.user_id,
        username: r.username,
        password: Secret(r.password),
    })
}

fn is_mac(s: &str) -> bool {
    s.len() == 17
        && s.split(':')
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Why an enrolment result was not applied to a node.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The node is no longer a freshly discovered one without a BMC.
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Gives the node the enrolled BMC: only a node still in `enroll` with no BMC address in
/// its `driver_info` (an operator's settings always win), and only a BMC no other node uses
/// (two nodes on one BMC would power each other's machine; a machine that reports the BMC
/// of a registered node is either that node under a new identity or lying); writes the
/// history line.
pub async fn apply(
    store: &dyn Store,
    node: Uuid,
    bmc: &EnrolledBmc,
    conductor: &str,
) -> Result<(), ApplyError> {
    if let Some(other) = node_using(store, node, bmc.address).await? {
        return Err(ApplyError::Refused(format!(
            "the BMC at {} is already node {other}'s: the in-band BMC credentials are not \
             applied (two nodes on one BMC would power each other's machine)",
            bmc.address
        )));
    }
    crate::store::update_node_with(store, node, None, |n| {
        if n.provision_state != "enroll" {
            return Err(ApplyError::Refused(format!(
                "the node is in {:?}, not enroll: the in-band BMC credentials are not applied",
                n.provision_state
            )));
        }
        if let Some(key) = n.driver_info.keys().find(|k| k.ends_with("_address")) {
            return Err(ApplyError::Refused(format!(
                "the node's driver_info already has {key}: the in-band BMC credentials are not applied"
            )));
        }
        n.driver = HARDWARE_TYPE.to_owned();
        n.driver_info
            .insert("ipmi_address".into(), json!(bmc.address.to_string()));
        n.driver_info
            .insert("ipmi_username".into(), json!(bmc.username));
        n.driver_info
            .insert("ipmi_password".into(), json!(bmc.password.0));
        n.driver_internal_info.remove(MANAGE_AFTER_KEY);
        n.last_error = None;
        Ok(())
    })
    .await?;
    let event = format!(
        "BMC enrolled in-band: {HARDWARE_TYPE} at {} ({}user {:?}, id {}, LAN channel {})",
        bmc.address,
        bmc.mac
            .as_deref()
            .map(|m| format!("MAC {m}, "))
            .unwrap_or_default(),
        bmc.username,
        bmc.user_id,
        bmc.channel
    );
    store
        .add_history(&history(node, conductor, "INFO", event))
        .await?;
    Ok(())
}

/// Another node whose `driver_info` points at the IPMI endpoint `address`:623 (or a Redfish
/// BMC on that host), through the indexed BMC host; named by its name, else its UUID.
/// Not in the node's write transaction: two machines enrolling the same address at the same
/// instant could both pass; an enrolment is once per discovered machine.
async fn node_using(
    store: &dyn Store,
    node: Uuid,
    address: IpAddr,
) -> Result<Option<String>, StoreError> {
    use crate::bmc_host::{IPMI_DEFAULT_PORT, uses_ipmi_endpoint};
    let host = address.to_string();
    let query = crate::store::NodeQuery {
        bmc_host: Some(host.clone()),
        ..Default::default()
    };
    Ok(store
        .list_nodes(&query)
        .await?
        .into_iter()
        .find(|n| n.uuid != node && uses_ipmi_endpoint(&n.driver_info, &host, IPMI_DEFAULT_PORT))
        .map(|n| n.name.unwrap_or_else(|| n.uuid.to_string())))
}

/// Records why an enrolment failed, in the node's `last_error` and history (an operator can
/// still set a BMC by hand). Returns whether the discovery rules asked to manage the node
/// (then it is managed with the driver it has, as without `enroll_bmc`).
pub async fn failed(
    store: &dyn Store,
    node: Uuid,
    reason: &str,
    conductor: &str,
) -> Result<bool, StoreError> {
    let text = format!("in-band BMC enrolment failed: {reason}");
    let mut manage = false;
    crate::store::update_node_with(store, node, None, |n| {
        n.last_error = Some(text.clone());
        manage = n.driver_internal_info.remove(MANAGE_AFTER_KEY).is_some()
            && n.provision_state == "enroll";
        Ok::<_, StoreError>(())
    })
    .await?;
    store
        .add_history(&history(node, conductor, "ERROR", text))
        .await?;
    Ok(manage)
}

fn history(node: Uuid, conductor: &str, severity: &str, event: String) -> HistoryEvent {
    HistoryEvent {
        uuid: Uuid::new_v4(),
        node_uuid: node,
        created_at: Utc::now(),
        severity: severity.to_owned(),
        event_type: "discovery".to_owned(),
        event,
        conductor: Some(conductor.to_owned()),
        user: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> Value {
        json!({
            "bmc_address": "10.11.12.13",
            "bmc_mac": "52:54:00:AB:CD:EF",
            "channel": 1,
            "user_id": 3,
            "username": "ingot",
            "password": "Ab3dEfGh1jKlMn0p",
        })
    }

    #[test]
    fn parses_a_good_result() {
        let b = parse(Some(&good())).expect("parse");
        assert_eq!(b.address.to_string(), "10.11.12.13");
        assert_eq!(b.mac.as_deref(), Some("52:54:00:ab:cd:ef"));
        assert_eq!((b.channel, b.user_id), (1, 3));
        assert_eq!(b.username, "ingot");
        assert_eq!(b.password.0, "Ab3dEfGh1jKlMn0p");
        // The password never shows in Debug.
        assert!(!format!("{b:?}").contains("Ab3dEfGh1jKlMn0p"));
        let mut v6 = good();
        v6["bmc_address"] = json!("fd00::5");
        v6["bmc_mac"] = Value::Null;
        assert!(parse(Some(&v6)).is_ok());
    }

    #[test]
    fn refuses_bad_results_without_showing_the_password() {
        let cases: Vec<(&str, Value, &str)> = vec![
            ("no address", json!(null), "no LAN address"),
            ("not an ip", json!("bmc.example"), "not an IP"),
            ("unspecified", json!("0.0.0.0"), "cannot be"),
            ("loopback", json!("127.0.0.1"), "cannot be"),
        ];
        for (what, addr, want) in cases {
            let mut d = good();
            d["bmc_address"] = addr;
            let e = parse(Some(&d)).expect_err(what);
            assert!(e.contains(want), "{what}: {e}");
        }
        let edits: Vec<(&str, &str, Value, &str)> = vec![
            ("long user", "username", json!("x".repeat(17)), "1 to 16"),
            ("spaced user", "username", json!("a b"), "printable"),
            ("empty password", "password", json!(""), "password"),
            (
                "long password",
                "password",
                json!("p".repeat(21)),
                "password",
            ),
            (
                "control in password",
                "password",
                json!("abc\ndef"),
                "password",
            ),
            ("anonymous slot", "user_id", json!(1), "user_id"),
            ("slot past 63", "user_id", json!(64), "user_id"),
            ("channel 0", "channel", json!(0), "channel"),
            ("channel text", "channel", json!("1"), "malformed"),
            ("password number", "password", json!(1234), "malformed"),
            ("bad mac", "bmc_mac", json!("nope"), "MAC"),
        ];
        for (what, key, value, want) in edits {
            let mut d = good();
            d[key] = value;
            let e = parse(Some(&d)).expect_err(what);
            assert!(e.contains(want), "{what}: {e}");
            assert!(!e.contains("Ab3dEfGh1jKlMn0p"), "{what}: {e}");
        }
        assert!(parse(None).is_err());
    }

    #[tokio::test]
    async fn apply_refuses_a_bmc_another_node_uses() {
        let bmc = parse(Some(&good())).expect("parse");
        let fresh = crate::model::Node::new(Uuid::new_v4(), "manual", Utc::now());
        let store = store_with(&fresh).await;
        // The same address on another IPMI port is another (simulated) BMC: no conflict.
        let mut sim = crate::model::Node::new(Uuid::new_v4(), "ipmi", Utc::now());
        sim.driver_info
            .insert("ipmi_address".into(), json!("10.11.12.13"));
        sim.driver_info.insert("ipmi_port".into(), json!(9001));
        store.create_node(&sim).await.expect("create");
        let mut taken = crate::model::Node::new(Uuid::new_v4(), "redfish", Utc::now());
        taken.name = Some("rack1-07".into());
        taken
            .driver_info
            .insert("redfish_address".into(), json!("https://10.11.12.13:443/"));
        store.create_node(&taken).await.expect("create");
        let e = apply(&store, fresh.uuid, &bmc, "c1").await;
        assert!(
            matches!(e, Err(ApplyError::Refused(ref w)) if w.contains("rack1-07") && w.contains("10.11.12.13")),
            "{e:?}"
        );
        let n = store
            .get_node_by_uuid(fresh.uuid)
            .await
            .expect("get")
            .expect("node");
        assert!(n.driver_info.is_empty(), "{:?}", n.driver_info);
        // Once the other node moves to another BMC, the enrolment applies.
        let mut taken = store
            .get_node_by_uuid(taken.uuid)
            .await
            .expect("get")
            .expect("node");
        taken
            .driver_info
            .insert("redfish_address".into(), json!("https://10.0.0.99"));
        store.update_node(&taken).await.expect("update");
        apply(&store, fresh.uuid, &bmc, "c1")
            .await
            .expect("applies");
    }

    async fn store_with(node: &crate::model::Node) -> crate::store::SqlStore {
        let store = crate::store::SqlStore::connect("sqlite::memory:")
            .await
            .expect("sqlite");
        store.create_node(node).await.expect("create");
        store
    }

    #[tokio::test]
    async fn apply_gives_a_discovered_node_the_bmc_and_logs_no_password() {
        let node = crate::model::Node::new(Uuid::new_v4(), "manual", Utc::now());
        let store = store_with(&node).await;
        let bmc = parse(Some(&good())).expect("parse");
        apply(&store, node.uuid, &bmc, "c1").await.expect("apply");
        let n = store
            .get_node_by_uuid(node.uuid)
            .await
            .expect("get")
            .expect("node");
        assert_eq!(n.driver, "ipmi");
        assert_eq!(n.driver_info["ipmi_address"], "10.11.12.13");
        assert_eq!(n.driver_info["ipmi_username"], "ingot");
        assert_eq!(n.driver_info["ipmi_password"], "Ab3dEfGh1jKlMn0p");
        let history = store.list_history(node.uuid).await.expect("history");
        let line = &history.last().expect("a history line").event;
        assert!(
            line.contains("10.11.12.13") && line.contains("\"ingot\""),
            "{line}"
        );
        assert!(!line.contains("Ab3dEfGh1jKlMn0p"), "{line}");

        // A second report (an agent's retry after a lost answer) finds the BMC set: refused.
        let again = apply(&store, node.uuid, &bmc, "c1").await;
        assert!(matches!(again, Err(ApplyError::Refused(ref w)) if w.contains("ipmi_address")));
    }

    #[tokio::test]
    async fn apply_leaves_operator_settings_and_moved_nodes_alone() {
        let bmc = parse(Some(&good())).expect("parse");
        let mut set = crate::model::Node::new(Uuid::new_v4(), "redfish", Utc::now());
        set.driver_info
            .insert("redfish_address".into(), json!("https://10.0.0.9"));
        let store = store_with(&set).await;
        let e = apply(&store, set.uuid, &bmc, "c1").await;
        assert!(matches!(e, Err(ApplyError::Refused(ref w)) if w.contains("redfish_address")));
        let n = store
            .get_node_by_uuid(set.uuid)
            .await
            .expect("get")
            .expect("node");
        assert_eq!(n.driver, "redfish");

        let mut moved = crate::model::Node::new(Uuid::new_v4(), "manual", Utc::now());
        moved.provision_state = "manageable".into();
        store.create_node(&moved).await.expect("create");
        let e = apply(&store, moved.uuid, &bmc, "c1").await;
        assert!(matches!(e, Err(ApplyError::Refused(ref w)) if w.contains("manageable")));
    }

    #[tokio::test]
    async fn a_failure_is_the_nodes_last_error() {
        let node = crate::model::Node::new(Uuid::new_v4(), "manual", Utc::now());
        let store = store_with(&node).await;
        let manage = failed(&store, node.uuid, "no IPMI device (/dev/ipmi0)", "c1")
            .await
            .expect("failed");
        assert!(!manage, "no rule asked to manage it");
        let n = store
            .get_node_by_uuid(node.uuid)
            .await
            .expect("get")
            .expect("node");
        assert_eq!(
            n.last_error.as_deref(),
            Some("in-band BMC enrolment failed: no IPMI device (/dev/ipmi0)")
        );
        assert_eq!(n.provision_state, "enroll");
    }
}

//! In-band BMC enrolment (`[discovery] enroll_bmc`) over the wire: a discovered machine's
//! agent is asked to set up a BMC user first (and only then would the node be managed); a
//! failure, or a result the controller must not trust, leaves the node in `enroll` with
//! the reason in `last_error`, and the reported password is in no answer. The success
//! path, where the controller then reads the power state over the LAN with the new user,
//! needs a BMC on a real network: `qemu-tests` `inband_bmc` and the lab.

use proto::ErrorReport;
use proto::protocol::{Command, Report};
use reqwest::Method;
use serde_json::json;

use super::flows::manage_rules;
use super::*;

const PASSWORD: &str = "Zq8vTn3LpWx5Ry2K";

fn enrolling() -> DiscoverySection {
    DiscoverySection {
        enroll_bmc: Some(true),
        ..manage_rules()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_discovered_machine_is_asked_to_enroll_its_bmc_before_it_is_managed() {
    let env = start(enrolling()).await;
    let lr = env
        .lookup(&lookup_req(&["52:54:00:be:00:01"], "B1", "ub1"))
        .await;
    let (id, token) = (lr.node_uuid, lr.token.expect("token"));
    let (cmd_id, cmd) = env.next_command(id, &token).await;
    assert_eq!(
        cmd,
        Command::EnrollBmc {
            user: "ingot".into()
        }
    );
    // The rules' `manage` waits for the BMC: the node is still in enroll.
    let (_, n) = env.api(Method::GET, &format!("/v1/nodes/{id}"), None).await;
    assert_eq!(n["provision_state"], "enroll", "{n}");

    // The agent finds no IPMI device: the node stays in enroll, saying why.
    let failed = Report::Failed {
        error: ErrorReport {
            phase: None,
            message: "no IPMI device".into(),
            causes: vec!["/dev/ipmi0: No such file or directory".into()],
        },
    };
    assert_eq!(env.report(id, &token, cmd_id, failed).await, 204);
    // The rules asked to manage it: it is managed with the driver it has (a machine
    // without IPMI, say a Redfish one), and the history says why there is no BMC.
    let n = env.wait_state(id, "manageable").await;
    assert_eq!(n["driver"], "manual");
    assert!(
        n["driver_internal_info"]["manage_after_bmc_enrolment"].is_null(),
        "{n}"
    );
    let (_, h) = env
        .api(Method::GET, &format!("/v1/nodes/{id}/history"), None)
        .await;
    assert!(
        h.to_string().contains(
            "in-band BMC enrolment failed: no IPMI device: /dev/ipmi0: No such file or directory"
        ),
        "{h}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_manage_rule_a_failed_enrolment_stays_in_enroll_saying_why() {
    let env = start(DiscoverySection {
        enabled: Some(true),
        enroll_bmc: Some(true),
        ..DiscoverySection::default()
    })
    .await;
    let lr = env
        .lookup(&lookup_req(&["52:54:00:be:00:04"], "B4", "ub4"))
        .await;
    let (id, token) = (lr.node_uuid, lr.token.expect("token"));
    let (cmd_id, cmd) = env.next_command(id, &token).await;
    assert!(matches!(cmd, Command::EnrollBmc { .. }), "{cmd:?}");
    let failed = Report::Failed {
        error: ErrorReport {
            phase: None,
            message: "no IPMI device".into(),
            causes: vec![],
        },
    };
    assert_eq!(env.report(id, &token, cmd_id, failed).await, 204);
    let n = wait_error(&env, id).await;
    assert_eq!(
        n["last_error"],
        "in-band BMC enrolment failed: no IPMI device"
    );
    assert_eq!(n["provision_state"], "enroll");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_untrustworthy_result_is_refused_and_the_password_shows_nowhere() {
    let env = start(enrolling()).await;
    let lr = env
        .lookup(&lookup_req(&["52:54:00:be:00:02"], "B2", "ub2"))
        .await;
    let (id, token) = (lr.node_uuid, lr.token.expect("token"));
    let (cmd_id, cmd) = env.next_command(id, &token).await;
    assert!(matches!(cmd, Command::EnrollBmc { .. }), "{cmd:?}");
    // The controller's own loopback is no BMC (it would talk IPMI to itself).
    let report = Report::Succeeded {
        inventory: None,
        detail: Some(json!({
            "bmc_address": "127.0.0.1",
            "bmc_mac": null,
            "channel": 1,
            "user_id": 3,
            "username": "ingot",
            "password": PASSWORD,
        })),
    };
    assert_eq!(env.report(id, &token, cmd_id, report).await, 204);
    // Refused: no BMC; the rules' manage goes on with the driver it has.
    let n = env.wait_state(id, "manageable").await;
    assert_eq!(n["driver"], "manual");
    let (_, h) = env
        .api(Method::GET, &format!("/v1/nodes/{id}/history"), None)
        .await;
    let history = h.to_string();
    assert!(
        history.contains("127.0.0.1") && history.contains("cannot be"),
        "{history}"
    );
    // Not in the node (agent_last_result keeps no detail of this command), nor its history.
    let text = n.to_string();
    assert!(!text.contains(PASSWORD), "{text}");
    assert!(!history.contains(PASSWORD), "{history}");
    for file in ["ingot.db", "ingot.db-wal"] {
        let bytes = std::fs::read(env.dir.path().join(file)).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&bytes).contains(PASSWORD),
            "the password is in {file}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn without_enroll_bmc_discovery_manages_at_once() {
    let env = start(manage_rules()).await;
    let lr = env
        .lookup(&lookup_req(&["52:54:00:be:00:03"], "B3", "ub3"))
        .await;
    env.wait_state(lr.node_uuid, "manageable").await;
}

async fn wait_error(env: &Env, id: Uuid) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, n) = env.api(Method::GET, &format!("/v1/nodes/{id}"), None).await;
        if !n["last_error"].is_null() {
            return n;
        }
        assert!(Instant::now() < deadline, "no last_error: {n}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

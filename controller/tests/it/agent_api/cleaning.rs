//! Cleaning that cannot be skipped or faked: a whole-machine wipe must cover every disk of
//! the node's inventory (matched by serial, not name), and each disk's result is kept in
//! the node's history.

use proto::protocol::{Command, Report};
use proto::{DiskId, WipeDiskResult, WipeMode, WipeReport};
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

use super::flows::{manage_rules, wiped};
use super::*;

fn wipe_result(device: &str, serial: &str, ok: bool, skipped: Option<&str>) -> WipeDiskResult {
    WipeDiskResult {
        device: device.into(),
        mode: WipeMode::Full,
        ok,
        method: ok.then(|| "write_zeroes".into()),
        cleared: vec![],
        skipped: skipped.map(Into::into),
        error: None,
        elapsed_ms: 7,
        id: DiskId {
            serial: Some(serial.into()),
            size: Some(1 << 30),
            ..Default::default()
        },
    }
}

fn report(disks: Vec<WipeDiskResult>) -> Report {
    Report::Succeeded {
        inventory: None,
        detail: serde_json::to_value(WipeReport { ok: true, disks }).ok(),
    }
}

/// A discovered, managed node in manual cleaning: returns its id, token and the wipe
/// command's id.
async fn cleaning(env: &Env, mac: &str, serial: &str) -> (Uuid, String, Uuid) {
    let lr = env.lookup(&lookup_req(&[mac], serial, serial)).await;
    let (id, token) = (lr.node_uuid, lr.token.expect("token"));
    env.wait_state(id, "manageable").await;
    let (s, b) = env
        .api(
            Method::PUT,
            &format!("/v1/nodes/{id}/states/provision"),
            Some(json!({"target": "clean", "clean_steps": [{"interface": "deploy", "step": "erase_devices"}]})),
        )
        .await;
    assert_eq!(s, 202, "{b}");
    let (cmd_id, cmd) = env.next_command(id, &token).await;
    assert_eq!(
        cmd,
        Command::Wipe {
            mode: WipeMode::Secure,
            devices: vec![]
        }
    );
    env.wait_state(id, "clean wait").await;
    (id, token, cmd_id)
}

async fn history(env: &Env, id: Uuid) -> Vec<String> {
    let (s, h) = env
        .api(
            Method::GET,
            &format!("/v1/nodes/{id}/history?detail=true"),
            None,
        )
        .await;
    assert_eq!(s, 200, "{h}");
    h["history"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e["event"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wipe_that_passes_over_an_inspected_disk_fails_cleaning() {
    let env = start(manage_rules()).await;

    // The agent says it wiped a disk, but not the one inspection found, and passes over the
    // inventoried disk as its "boot medium": the node is clean failed, naming the disk.
    let (id, token, cmd_id) = cleaning(&env, "52:54:00:ee:00:01", "W1").await;
    let r = report(vec![
        wipe_result("/dev/vdb", "OTHER-DISK", true, None),
        wipe_result("/dev/vda", DISK_SERIAL, false, Some("boot medium")),
    ]);
    assert_eq!(env.report(id, &token, cmd_id, r).await, 204);
    let n = env.wait_state(id, "clean failed").await;
    let err = n["last_error"].as_str().unwrap_or_default();
    assert!(
        err.contains(&format!(
            "/dev/vda (serial {DISK_SERIAL}): skipped as boot medium"
        )),
        "{err}"
    );
    let h = history(&env, id).await;
    assert!(
        h.iter().any(
            |e| e.contains("wipe /dev/vdb: wiped and verified; serial OTHER-DISK")
                && e.contains("write_zeroes")
                && e.contains("1073741824 bytes")
        ),
        "{h:?}"
    );
    assert!(
        h.iter()
            .any(|e| e.contains("wipe /dev/vda: skipped (boot medium)")),
        "{h:?}"
    );

    // A success without any per-disk report proves nothing.
    let (id, token, cmd_id) = cleaning(&env, "52:54:00:ee:00:02", "W2").await;
    let bare = Report::Succeeded {
        inventory: None,
        detail: None,
    };
    assert_eq!(env.report(id, &token, cmd_id, bare).await, 204);
    let n = env.wait_state(id, "clean failed").await;
    assert!(
        n["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("no per-disk report")),
        "{}",
        n["last_error"]
    );

    // The same disk under another name (renamed between boots) counts: cleaning succeeds.
    let (id, token, cmd_id) = cleaning(&env, "52:54:00:ee:00:03", "W3").await;
    let r = report(vec![wipe_result("/dev/sdz", DISK_SERIAL, true, None)]);
    assert_eq!(env.report(id, &token, cmd_id, r).await, 204);
    let n: Value = env.wait_state(id, "manageable").await;
    assert!(n["last_error"].is_null(), "{}", n["last_error"]);
    // And the helper the other flows use reports the inventoried disk.
    let _ = wiped();
}

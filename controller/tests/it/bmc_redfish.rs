//! The `redfish` driver against a stateful Redfish fake served by axum on 127.0.0.1
//! (sessions, basic auth, several systems, restricted reset types).
//! The tests against the real sushy-tools emulator are in `qemu-tests/tests/bmc_sushy.rs`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use chrono::Utc;
use controller::drivers::redfish::RedfishHardware;
use controller::drivers::{
    BootDevice, BootMode, DriverError, ManagementInterface, PowerInterface, PowerState, PowerTarget,
};
use controller::model::Node;
use serde_json::{Value, json};
use uuid::Uuid;

const PASSWORD: &str = "R3dfish-pa55!";

#[derive(Debug, Clone)]
struct Sys {
    power: String,
    target: String,
    enabled: String,
    mode: String,
}

#[derive(Debug, Default)]
struct Bmc {
    systems: HashMap<String, Sys>,
    resets: Vec<(String, String)>,
    patches: Vec<Value>,
    sessions: HashMap<String, String>,
    sessions_created: usize,
    sessions_deleted: usize,
    basic_requests: usize,
    token_requests: usize,
    /// Reset types the BMC advertises (None: the annotation is absent).
    allowed: Option<Vec<String>>,
    offer_sessions: bool,
}

type Shared = Arc<Mutex<Bmc>>;

fn b64(input: &[u8]) -> String {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in input.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn authorize(bmc: &mut Bmc, headers: &HeaderMap) -> bool {
    if let Some(t) = headers.get("x-auth-token").and_then(|v| v.to_str().ok())
        && bmc.sessions.contains_key(t)
    {
        bmc.token_requests += 1;
        return true;
    }
    let basic = format!("Basic {}", b64(format!("admin:{PASSWORD}").as_bytes()));
    if headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(basic.as_str()) {
        bmc.basic_requests += 1;
        return true;
    }
    false
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        Json(json!({"error": {"code": "Base.1.0.GeneralError", "message": "Unauthorized"}})),
    )
        .into_response()
}

async fn systems(State(s): State<Shared>, headers: HeaderMap) -> Response {
    let mut bmc = s.lock().expect("lock");
    if !authorize(&mut bmc, &headers) {
        return unauthorized();
    }
    let mut ids: Vec<_> = bmc.systems.keys().cloned().collect();
    ids.sort();
    let members: Vec<_> = ids
        .iter()
        .map(|id| json!({"@odata.id": format!("/redfish/v1/Systems/{id}")}))
        .collect();
    Json(json!({"Members": members, "Members@odata.count": members.len()})).into_response()
}

async fn system_get(
    State(s): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let mut bmc = s.lock().expect("lock");
    if !authorize(&mut bmc, &headers) {
        return unauthorized();
    }
    let allowed = bmc.allowed.clone();
    let Some(sys) = bmc.systems.get(&id) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let mut action =
        json!({"target": format!("/redfish/v1/Systems/{id}/Actions/ComputerSystem.Reset")});
    if let Some(a) = allowed {
        action["ResetType@Redfish.AllowableValues"] = json!(a);
    }
    Json(json!({
        "@odata.id": format!("/redfish/v1/Systems/{id}"),
        "Id": id,
        "PowerState": sys.power,
        "Boot": {
            "BootSourceOverrideTarget": sys.target,
            "BootSourceOverrideEnabled": sys.enabled,
            "BootSourceOverrideMode": sys.mode,
        },
        "Actions": {"#ComputerSystem.Reset": action},
    }))
    .into_response()
}

async fn system_patch(
    State(s): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let mut bmc = s.lock().expect("lock");
    if !authorize(&mut bmc, &headers) {
        return unauthorized();
    }
    bmc.patches.push(body.clone());
    let Some(sys) = bmc.systems.get_mut(&id) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let boot = &body["Boot"];
    if let Some(t) = boot["BootSourceOverrideTarget"].as_str() {
        sys.target = t.to_owned();
    }
    if let Some(e) = boot["BootSourceOverrideEnabled"].as_str() {
        sys.enabled = e.to_owned();
    }
    if let Some(m) = boot["BootSourceOverrideMode"].as_str() {
        sys.mode = m.to_owned();
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn reset(
    State(s): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let mut bmc = s.lock().expect("lock");
    if !authorize(&mut bmc, &headers) {
        return unauthorized();
    }
    let kind = body["ResetType"].as_str().unwrap_or_default().to_owned();
    if let Some(allowed) = &bmc.allowed
        && !allowed.contains(&kind)
    {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": {"message": format!("{kind} not allowed")}})),
        )
            .into_response();
    }
    bmc.resets.push((id.clone(), kind.clone()));
    let Some(sys) = bmc.systems.get_mut(&id) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    sys.power = match kind.as_str() {
        "On" | "ForceOn" | "ForceRestart" | "GracefulRestart" | "PowerCycle" => "On",
        "ForceOff" | "GracefulShutdown" => "Off",
        _ => return StatusCode::BAD_REQUEST.into_response(),
    }
    .to_owned();
    StatusCode::NO_CONTENT.into_response()
}

async fn login(State(s): State<Shared>, Json(body): Json<Value>) -> Response {
    let mut bmc = s.lock().expect("lock");
    if !bmc.offer_sessions {
        return StatusCode::NOT_FOUND.into_response();
    }
    if body["UserName"] != "admin" || body["Password"] != PASSWORD {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    bmc.sessions_created += 1;
    let id = bmc.sessions_created.to_string();
    let token = format!("token-{}", Uuid::new_v4());
    bmc.sessions.insert(token.clone(), id.clone());
    (
        StatusCode::CREATED,
        [
            ("x-auth-token", token),
            (
                "location",
                format!("/redfish/v1/SessionService/Sessions/{id}"),
            ),
        ],
        Json(json!({"Id": id})),
    )
        .into_response()
}

async fn logout(State(s): State<Shared>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let mut bmc = s.lock().expect("lock");
    if !authorize(&mut bmc, &headers) {
        return unauthorized();
    }
    bmc.sessions.retain(|_, v| *v != id);
    bmc.sessions_deleted += 1;
    StatusCode::NO_CONTENT.into_response()
}

struct Fake {
    state: Shared,
    base: String,
    _server: tokio::task::JoinHandle<()>,
}

async fn fake(ids: &[&str], offer_sessions: bool) -> Fake {
    let mut bmc = Bmc {
        offer_sessions,
        ..Bmc::default()
    };
    for id in ids {
        bmc.systems.insert(
            (*id).to_owned(),
            Sys {
                power: "Off".into(),
                target: "None".into(),
                enabled: "Disabled".into(),
                mode: "UEFI".into(),
            },
        );
    }
    let state = Arc::new(Mutex::new(bmc));
    let app = Router::new()
        .route("/redfish/v1/Systems", get(systems))
        .route(
            "/redfish/v1/Systems/{id}",
            get(system_get).patch(system_patch),
        )
        .route(
            "/redfish/v1/Systems/{id}/Actions/ComputerSystem.Reset",
            post(reset),
        )
        .route("/redfish/v1/SessionService/Sessions", post(login))
        .route("/redfish/v1/SessionService/Sessions/{id}", delete(logout))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move {
        axum::serve(listener, app).await.expect("serve");
    });
    Fake {
        state,
        base: format!("http://{addr}"),
        _server: server,
    }
}

impl Fake {
    fn node(&self, extra: Value) -> Node {
        let mut n = Node::new(Uuid::new_v4(), "redfish", Utc::now());
        let mut info = json!({
            "redfish_address": self.base, "redfish_username": "admin",
            "redfish_password": PASSWORD,
        });
        if let (Some(i), Some(e)) = (info.as_object_mut(), extra.as_object()) {
            i.extend(e.clone());
        }
        n.driver_info = info.as_object().cloned().unwrap_or_default();
        n
    }

    fn bmc<T>(&self, f: impl FnOnce(&mut Bmc) -> T) -> T {
        f(&mut self.state.lock().expect("lock"))
    }
}

fn hw() -> Arc<RedfishHardware> {
    RedfishHardware::with_poll_interval(Duration::from_millis(50))
}

#[tokio::test]
async fn power_and_boot_with_basic_auth_and_discovery() {
    let f = fake(&["sys1"], false).await;
    let hw = hw();
    let node = f.node(json!({"redfish_auth_type": "basic"}));
    PowerInterface::validate(hw.as_ref(), &node).expect("validate");

    assert_eq!(hw.get_power_state(&node).await, Ok(Some(PowerState::Off)));
    hw.set_power_state(&node, PowerTarget::On, None)
        .await
        .expect("on");
    hw.set_power_state(&node, PowerTarget::On, None)
        .await
        .expect("on again is a no-op");
    hw.set_power_state(&node, PowerTarget::Reboot, None)
        .await
        .expect("reboot");
    hw.set_power_state(&node, PowerTarget::SoftReboot, None)
        .await
        .expect("soft reboot");
    hw.set_power_state(&node, PowerTarget::SoftOff, None)
        .await
        .expect("soft off");
    hw.set_power_state(&node, PowerTarget::Reboot, None)
        .await
        .expect("reboot from off");
    hw.set_power_state(&node, PowerTarget::Off, None)
        .await
        .expect("off");
    let resets: Vec<String> = f.bmc(|b| b.resets.iter().map(|r| r.1.clone()).collect());
    assert_eq!(
        resets,
        [
            "On",
            "ForceRestart",
            "GracefulRestart",
            "GracefulShutdown",
            "On",
            "ForceOff"
        ]
    );
    assert_eq!(hw.get_power_state(&node).await, Ok(Some(PowerState::Off)));

    hw.set_boot_device(&node, BootDevice::Pxe, false)
        .await
        .expect("pxe");
    assert_eq!(
        hw.get_boot_device(&node).await,
        Ok((Some(BootDevice::Pxe), false))
    );
    hw.set_boot_device(&node, BootDevice::Disk, true)
        .await
        .expect("disk");
    assert_eq!(
        hw.get_boot_device(&node).await,
        Ok((Some(BootDevice::Disk), true))
    );
    // The node boots UEFI (the default) and the BMC already says UEFI: no mode is sent.
    assert!(f.bmc(|b| {
        b.patches
            .iter()
            .all(|p| p["Boot"].get("BootSourceOverrideMode").is_none())
    }));

    // A BIOS node sends Legacy along with the device.
    let mut bios = node.clone();
    bios.instance_info
        .insert("deploy_boot_mode".into(), json!("bios"));
    hw.set_boot_device(&bios, BootDevice::Pxe, false)
        .await
        .expect("pxe bios");
    assert_eq!(
        f.bmc(|b| b.patches.last().cloned()),
        Some(json!({"Boot": {"BootSourceOverrideTarget": "Pxe",
            "BootSourceOverrideEnabled": "Once", "BootSourceOverrideMode": "Legacy"}}))
    );
    assert_eq!(hw.get_boot_mode(&node).await, Ok(Some(BootMode::Bios)));
    hw.set_boot_mode(&node, BootMode::Uefi).await.expect("uefi");
    assert_eq!(hw.get_boot_mode(&node).await, Ok(Some(BootMode::Uefi)));

    let err = hw
        .set_boot_device(&node, BootDevice::Safe, false)
        .await
        .expect_err("safe");
    assert!(matches!(err, DriverError::InvalidParameter(_)));
    assert_eq!(
        f.bmc(|b| (b.basic_requests > 0, b.sessions_created)),
        (true, 0)
    );
}

#[tokio::test]
async fn sessions_are_used_and_closed() {
    let f = fake(&["1"], true).await;
    let hw = hw();
    for auth in ["session", "auto"] {
        let node = f.node(json!({"redfish_auth_type": auth}));
        hw.set_power_state(&node, PowerTarget::On, None)
            .await
            .expect("on");
        assert_eq!(hw.get_power_state(&node).await, Ok(Some(PowerState::On)));
    }
    let (created, deleted, basic, token, open) = f.bmc(|b| {
        (
            b.sessions_created,
            b.sessions_deleted,
            b.basic_requests,
            b.token_requests,
            b.sessions.len(),
        )
    });
    assert_eq!((created, deleted, basic, open), (4, 4, 0, 0));
    assert!(token >= 8, "{token}");

    // A BMC without a session service: auto falls back to basic, session fails.
    let f = fake(&["1"], false).await;
    assert_eq!(
        hw.get_power_state(&f.node(json!({}))).await,
        Ok(Some(PowerState::Off))
    );
    let err = hw
        .get_power_state(&f.node(json!({"redfish_auth_type": "session"})))
        .await
        .expect_err("no sessions");
    assert!(err.to_string().contains("HTTP 404"), "{err}");
}

#[tokio::test]
async fn several_systems_need_a_system_id() {
    let f = fake(&["a", "b"], false).await;
    let hw = hw();
    let err = hw
        .get_power_state(&f.node(json!({})))
        .await
        .expect_err("ambiguous");
    assert!(err.to_string().contains("set redfish_system_id"), "{err}");
    for id in ["b", "/redfish/v1/Systems/b"] {
        let node = f.node(json!({"redfish_system_id": id}));
        hw.set_boot_device(&node, BootDevice::Pxe, true)
            .await
            .expect("pxe");
    }
    assert_eq!(f.bmc(|b| b.systems["b"].target.clone()), "Pxe");
    assert_eq!(f.bmc(|b| b.systems["a"].target.clone()), "None");
    let err = hw
        .get_power_state(&f.node(json!({"redfish_system_id": "zzz"})))
        .await
        .expect_err("missing");
    assert!(err.to_string().contains("HTTP 404"), "{err}");
}

#[tokio::test]
async fn restricted_reset_types_use_the_allowed_alternative() {
    let f = fake(&["1"], false).await;
    f.bmc(|b| b.allowed = Some(vec!["ForceOn".into(), "ForceOff".into()]));
    let hw = hw();
    let node = f.node(json!({}));
    hw.set_power_state(&node, PowerTarget::On, None)
        .await
        .expect("on");
    let err = hw
        .set_power_state(&node, PowerTarget::SoftOff, None)
        .await
        .expect_err("no graceful shutdown");
    assert!(matches!(err, DriverError::Unsupported(_)), "{err:?}");
    assert_eq!(
        f.bmc(|b| b.resets.clone()),
        [("1".to_owned(), "ForceOn".to_owned())]
    );
}

#[tokio::test]
async fn wrong_password_and_unreachable_bmc_fail_clearly() {
    let f = fake(&["1"], true).await;
    let hw = hw();
    let wrong = "not-the-Pa55word";
    for auth in ["basic", "session", "auto"] {
        let node = f.node(json!({"redfish_password": wrong, "redfish_auth_type": auth}));
        let err = hw.get_power_state(&node).await.expect_err("wrong password");
        let text = err.to_string();
        assert!(
            text.contains("wrong username or password"),
            "{auth}: {text}"
        );
        assert!(text.contains(&f.base), "{text}");
        assert!(!text.contains(wrong) && !format!("{err:?}").contains(wrong));
    }
    assert!(f.bmc(|b| b.resets.is_empty()));

    // A closed port.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let mut node = f.node(json!({"redfish_address": format!("http://127.0.0.1:{port}")}));
    let err = hw.get_power_state(&node).await.expect_err("refused");
    let text = err.to_string();
    assert!(text.contains("cannot reach Redfish BMC"), "{text}");
    assert!(!text.contains(PASSWORD));

    // A port that accepts but never answers: the request timeout.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = silent.local_addr().expect("addr");
    node.driver_info
        .insert("redfish_address".into(), json!(format!("http://{addr}")));
    node.driver_info.insert("redfish_timeout".into(), json!(1));
    let t0 = std::time::Instant::now();
    let err = hw.get_power_state(&node).await.expect_err("timeout");
    assert!(matches!(err, DriverError::Timeout { .. }), "{err:?}");
    assert!(t0.elapsed() < Duration::from_secs(5));
    drop(silent);
}

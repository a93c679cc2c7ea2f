//! `ingot-agent run` in process against a fake controller speaking the agent protocol over
//! real HTTP on 127.0.0.1: lookup, a heartbeat that hands out a wipe of a loop device, the
//! result reported, a stale token answered by a new lookup, then power_off ends the loop.

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use proto::WipeMode;
use proto::protocol::{
    Command, EventReport, HeartbeatRequest, HeartbeatResponse, LookupRequest, LookupResponse,
    Report, TOKEN_HEADER,
};
use uuid::Uuid;

use crate::support::{LoopDev, MIB, lock};

#[derive(Default)]
struct Fake {
    lookups: Vec<LookupRequest>,
    token: String,
    script: Vec<Command>,
    heartbeats: u32,
    events: Vec<EventReport>,
    unauthorized: u32,
}

type S = Arc<Mutex<Fake>>;

fn authorized(s: &Fake, h: &HeaderMap) -> bool {
    h.get(TOKEN_HEADER).and_then(|v| v.to_str().ok()) == Some(s.token.as_str())
}

async fn lookup(State(s): State<S>, Json(req): Json<LookupRequest>) -> Json<LookupResponse> {
    let mut f = s.lock().expect("lock");
    f.lookups.push(req);
    f.token = format!("token-{}", f.lookups.len());
    Json(LookupResponse {
        node_uuid: Uuid::from_u128(0x42),
        token: Some(f.token.clone()),
        discovered: true,
        heartbeat_timeout_secs: 2,
    })
}

async fn heartbeat(
    State(s): State<S>,
    h: HeaderMap,
    Json(_req): Json<HeartbeatRequest>,
) -> Result<Json<HeartbeatResponse>, StatusCode> {
    let mut f = s.lock().expect("lock");
    if !authorized(&f, &h) {
        f.unauthorized += 1;
        return Err(StatusCode::UNAUTHORIZED);
    }
    f.heartbeats += 1;
    if f.heartbeats == 3 {
        // Another lookup elsewhere replaced the token: the agent must look up again.
        f.token = "stolen".into();
    }
    let command = if f.script.is_empty() {
        Command::PowerOff
    } else {
        f.script.remove(0)
    };
    Ok(Json(HeartbeatResponse {
        command_id: Uuid::from_u128(u128::from(f.heartbeats)),
        command,
    }))
}

async fn events(State(s): State<S>, h: HeaderMap, Json(rep): Json<EventReport>) -> StatusCode {
    let mut f = s.lock().expect("lock");
    if !authorized(&f, &h) {
        f.unauthorized += 1;
        return StatusCode::UNAUTHORIZED;
    }
    f.events.push(rep);
    StatusCode::NO_CONTENT
}

#[test]
fn run_wipes_a_loop_device_for_a_fake_controller() {
    test_needs::need!(test_needs::Need::Root, test_needs::Need::Program("losetup"));
    let _g = lock();
    let disk = LoopDev::new(64 * MIB, 512, false);
    disk.fill(0xa5);
    let dev = disk.dev.display().to_string();
    let state: S = Arc::new(Mutex::new(Fake {
        script: vec![
            Command::Wait { seconds: 0 },
            Command::Wipe {
                mode: WipeMode::Metadata,
                devices: vec![dev.clone()],
            },
        ],
        ..Default::default()
    }));
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let halt = rt.block_on(async {
        let app = Router::new()
            .route(proto::protocol::PATH_LOOKUP, post(lookup))
            .route(proto::protocol::PATH_HEARTBEAT, post(heartbeat))
            .route(proto::protocol::PATH_EVENTS, post(events))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        let opts = agent::run::RunOptions {
            urls: vec![format!("http://{addr}")],
            ca_sha256: None,
            boot_mac: Some("52:54:00:12:34:56".into()),
            lldp_timeout: std::time::Duration::ZERO,
        };
        tokio::time::timeout(
            std::time::Duration::from_secs(60),
            agent::run::run_agent(&opts),
        )
        .await
        .expect("the loop ends within a minute")
        .expect("runs")
    });
    assert_eq!(halt, agent::run::machine::Halt::PowerOff);

    let f = state.lock().expect("lock");
    assert_eq!(f.lookups.len(), 2, "looked up again after the 401");
    assert!(f.unauthorized >= 1);
    let l = &f.lookups[0];
    assert_eq!(l.protocol_version, proto::PROTOCOL_VERSION);
    assert_eq!(l.boot_mac.as_deref(), Some("52:54:00:12:34:56"));
    assert!(l.inventory.memory.total > 0);
    assert!(l.inventory.cpu.count > 0);
    assert_eq!(
        l.steps,
        agent::steps::offered(),
        "every lookup lists the steps"
    );
    proto::protocol::check_agent_steps(&l.steps).expect("steps the controller accepts");
    // The wipe's result, for command 2, with the loop device's report.
    let done: Vec<&EventReport> = f
        .events
        .iter()
        .filter(|e| !matches!(e.report, Report::Event { .. }))
        .collect();
    assert_eq!(
        done.len(),
        2,
        "wipe result and power_off acknowledgement: {done:?}"
    );
    assert_eq!(done[0].command_id, Uuid::from_u128(2));
    assert_eq!(done[1].command_id, Uuid::from_u128(3));
    let Report::Succeeded {
        detail: Some(d), ..
    } = &done[0].report
    else {
        panic!("wipe did not succeed: {:?}", done[0].report)
    };
    assert_eq!(d["ok"], true);
    assert_eq!(d["disks"][0]["device"], dev.as_str());
    assert!(
        f.events.iter().any(|e| matches!(
            &e.report,
            Report::Event {
                event: proto::AgentEvent::WipeDone(_)
            }
        )),
        "the wipe's event went out too"
    );
    let data = disk.read_all();
    assert!(data[..MIB].iter().all(|&b| b == 0), "first MiB zeroed");
    assert!(
        data[data.len() - MIB..].iter().all(|&b| b == 0),
        "last MiB zeroed"
    );
    assert_eq!(
        data[32 * MIB],
        0xa5,
        "the middle is untouched by a metadata wipe"
    );
}

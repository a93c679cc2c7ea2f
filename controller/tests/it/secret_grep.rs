//! No secret in any output: a scripted session against the real `ingot serve` binary (with
//! `http_basic`, discovery, an inspection rule, fast track and debug logging) sets unique
//! secret strings everywhere an operator or an agent can put one (the API password, BMC
//! passwords and keys, a secret inside an array, a secret set by an inspection rule from the
//! config file, a config drive's user data, the agent token), drives a machine through
//! discovery, cleaning, deploy, failed PATCHes and the CLI, then greps every answer, every
//! header, every CLI output and the whole controller log for each of them. The controller
//! logs in JSON (`log_format = "json"`) here, and the log is also checked to be one JSON
//! object per line with the node's UUID on every line about the node.
//!
//! Only two answers may carry a secret, because they exist to hand it over: the lookup that
//! gives the agent its token, and the heartbeat that gives the agent its deploy command with
//! the config drive. The test checks that those two do carry it, so the grep is known to see
//! what it looks for.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{ChildGuard as Server, free_port};
use base64::Engine as _;
use proto::protocol::{
    Command as AgentCommand, EventReport, HeartbeatRequest, HeartbeatResponse, LookupRequest,
    LookupResponse, PATH_EVENTS, PATH_HEARTBEAT, PATH_LOOKUP, Report, TOKEN_HEADER,
};
use proto::{Disk, Interface, Inventory, PROTOCOL_VERSION};
use serde_json::{Value, json};

const INGOT: &str = env!("CARGO_BIN_EXE_ingot");

const API_PASSWORD: &str = "ApiPw-7c1d-secret-grep";
const WRONG_PASSWORD: &str = "WrongPw-90ab-secret-grep";
const BMC_PASSWORD: &str = "BmcPw-4e2f-secret-grep";
const KG_KEY: &str = "5ec4e7a1b2c3d4e5f60718293a4b5c6d7e8f9012";
const REDFISH_PASSWORD: &str = "RedfishPw-11aa-secret-grep";
const NESTED_KEY: &str = "NestedKey-77bb-secret-grep";
const RULE_SECRET: &str = "RuleSecret-33cc-secret-grep";
const USER_DATA_SECRET: &str = "UserDataPw-55dd-secret-grep";
const MAC: &str = "52:54:00:5e:c0:01";
const DISK_SERIAL: &str = "GREP-DISK-1";

/// Everything the session saw: answers (status line, headers, body), CLI outputs.
#[derive(Default)]
struct Transcript {
    outputs: Vec<(String, String)>,
}

impl Transcript {
    fn add(&mut self, what: impl Into<String>, text: impl Into<String>) {
        self.outputs.push((what.into(), text.into()));
    }
}

struct Session {
    api: String,
    boot: String,
    http: reqwest::Client,
    seen: Transcript,
}

impl Session {
    async fn call(
        &mut self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        password: Option<&str>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.api))
            .header("X-OpenStack-Ironic-API-Version", "1.115");
        if let Some(p) = password {
            req = req.basic_auth("op", Some(p));
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("api request");
        let status = resp.status().as_u16();
        let headers = format!("{:?}", resp.headers());
        let text = resp.text().await.expect("body");
        self.seen.add(
            format!("{method} {path}"),
            format!("{status}\n{headers}\n{text}"),
        );
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, v)
    }

    async fn admin(&mut self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let (s, v) = self
            .call(method.clone(), path, body, Some(API_PASSWORD))
            .await;
        assert!((200..300).contains(&s), "{method} {path}: {s} {v}");
        v
    }

    async fn wait_state(&mut self, node: &str, want: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let n = self
                .admin(reqwest::Method::GET, &format!("/v1/nodes/{node}"), None)
                .await;
            if n["provision_state"] == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node stuck in {} (want {want}): {}",
                n["provision_state"],
                n["last_error"]
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The agent's side; `exempt` answers are kept apart (they hand a secret over).
    async fn agent_post<T: serde::Serialize>(
        &mut self,
        path: &str,
        token: Option<&str>,
        body: &T,
    ) -> (u16, String) {
        let mut req = self.http.post(format!("{}{path}", self.boot)).json(body);
        if let Some(t) = token {
            req = req.header(TOKEN_HEADER, t);
        }
        let resp = req.send().await.expect("agent request");
        let status = resp.status().as_u16();
        let headers = format!("{:?}", resp.headers());
        let text = resp.text().await.expect("body");
        (status, format!("{headers}\n{text}"))
    }

    /// Heartbeats until a command other than `wait`; returns it with the raw answer.
    async fn next_command(
        &mut self,
        node: uuid::Uuid,
        token: &str,
    ) -> (uuid::Uuid, AgentCommand, String) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (s, raw) = self
                .agent_post(
                    PATH_HEARTBEAT,
                    Some(token),
                    &HeartbeatRequest {
                        node_uuid: node,
                        state: proto::protocol::AgentState::Idle,
                    },
                )
                .await;
            assert_eq!(s, 200, "{raw}");
            let body = raw.split_once('\n').map_or(raw.as_str(), |(_, b)| b);
            let hb: HeartbeatResponse = serde_json::from_str(body).expect("heartbeat json");
            if !matches!(hb.command, AgentCommand::Wait { .. }) {
                return (hb.command_id, hb.command, raw);
            }
            self.seen.add("heartbeat (wait)", raw);
            assert!(Instant::now() < deadline, "no command came");
        }
    }

    async fn report(&mut self, node: uuid::Uuid, token: &str, id: uuid::Uuid, report: Report) {
        let (s, raw) = self
            .agent_post(
                PATH_EVENTS,
                Some(token),
                &EventReport {
                    node_uuid: node,
                    command_id: id,
                    report,
                },
            )
            .await;
        assert!((200..300).contains(&s), "{s} {raw}");
        self.seen.add("events", raw);
    }

    fn cli(&mut self, args: &[&str], password: &str) -> std::process::Output {
        let out = Command::new(INGOT)
            .args(args)
            .args([
                "--url",
                &self.api,
                "--username",
                "op",
                "--password",
                password,
            ])
            .env_remove("OS_PASSWORD")
            .env_remove("INGOT_PASSWORD")
            .output()
            .expect("ingot cli");
        self.seen.add(
            format!("ingot {}", args.join(" ")),
            format!(
                "{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        );
        out
    }
}

fn inventory() -> Inventory {
    let mut inv = Inventory {
        interfaces: vec![Interface {
            name: "eth0".into(),
            mac_address: MAC.into(),
            has_carrier: true,
            ..Default::default()
        }],
        ..Default::default()
    };
    inv.cpu.count = 2;
    inv.cpu.architecture = "x86_64".into();
    inv.memory.total = 2 * 1024 * 1024 * 1024;
    inv.disks = vec![Disk {
        name: "/dev/vda".into(),
        size: 8 * 1024 * 1024 * 1024,
        serial: Some(DISK_SERIAL.into()),
        ..Default::default()
    }];
    inv
}

fn wiped() -> Report {
    let report = proto::WipeReport {
        ok: true,
        disks: vec![proto::WipeDiskResult {
            device: "/dev/vda".into(),
            mode: proto::WipeMode::Metadata,
            ok: true,
            method: Some("signatures".into()),
            cleared: vec![],
            skipped: None,
            error: None,
            elapsed_ms: 3,
            id: proto::DiskId {
                serial: Some(DISK_SERIAL.into()),
                ..Default::default()
            },
        }],
    };
    Report::Succeeded {
        inventory: None,
        detail: serde_json::to_value(report).ok(),
    }
}

fn write_config(dir: &Path, api_port: u16, boot_port: u16) -> std::path::PathBuf {
    let htpasswd = dir.join("htpasswd");
    let hash = bcrypt::hash(API_PASSWORD, 4).expect("hash");
    std::fs::write(&htpasswd, format!("op:{hash}\n")).expect("htpasswd");
    let kernel = dir.join("vmlinuz");
    let initramfs = dir.join("initramfs.cpio.zst");
    std::fs::write(&kernel, vec![1u8; 4096]).expect("kernel");
    std::fs::write(&initramfs, vec![2u8; 4096]).expect("initramfs");
    let config = dir.join("ingot.toml");
    std::fs::write(
        &config,
        format!(
            r#"api_listen = "127.0.0.1:{api_port}"
auth_strategy = "http_basic"
http_basic_auth_user_file = "{htpasswd}"
state_dir = "{state}"
log_format = "json"

[netboot]
mode = "off"
http_listen = "127.0.0.1:{boot_port}"
agent_kernel = "{kernel}"
agent_initramfs = "{initramfs}"

[deploy]
fast_track = true

[discovery]
enabled = true

[[discovery.rules]]
description = "grep: manage and set a secret"
conditions = [{{ field = "cpu.architecture", op = "eq", value = "x86_64" }}]
actions = [
  {{ action = "set_driver_info", name = "bmc_secret", value = "{RULE_SECRET}" }},
  {{ action = "manage" }},
]
"#,
            htpasswd = htpasswd.display(),
            state = dir.display(),
            kernel = kernel.display(),
            initramfs = initramfs.display(),
        ),
    )
    .expect("config");
    config
}

#[tokio::test(flavor = "multi_thread")]
async fn no_secret_reaches_any_answer_cli_output_or_log_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (api_port, boot_port) = (free_port(), free_port());
    let config = write_config(dir.path(), api_port, boot_port);
    let log_path = dir.path().join("serve.log");
    let log = std::fs::File::create(&log_path).expect("log");
    let child = Command::new(INGOT)
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .env("INGOT_LOG", "debug")
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("spawn ingot serve");
    let server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    for port in [api_port, boot_port] {
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "ingot serve did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut s = Session {
        api: format!("http://127.0.0.1:{api_port}"),
        boot: format!("http://127.0.0.1:{boot_port}"),
        http: reqwest::Client::new(),
        seen: Transcript::default(),
    };
    use reqwest::Method as M;

    // Unauthenticated and wrongly authenticated calls.
    let (st, _) = s.call(M::GET, "/v1/nodes", None, None).await;
    assert_eq!(st, 401);
    let (st, _) = s
        .call(M::GET, "/v1/nodes", None, Some(WRONG_PASSWORD))
        .await;
    assert_eq!(st, 401);

    // Discovery: the agent's lookup enrolls the machine and gets the token (exempt answer).
    let lookup = LookupRequest {
        protocol_version: PROTOCOL_VERSION,
        agent_version: "grep".into(),
        macs: vec![MAC.into()],
        boot_mac: Some(MAC.into()),
        system_uuid: Some("0b7e5a4e-0000-4000-8000-5ec000000001".into()),
        system_serial: Some("GREP-SERIAL".into()),
        inventory: inventory(),
        steps: Vec::new(),
    };
    let (st, raw) = s.agent_post(PATH_LOOKUP, None, &lookup).await;
    assert_eq!(st, 200, "{raw}");
    let lr: LookupResponse =
        serde_json::from_str(raw.split_once('\n').map_or("", |(_, b)| b)).expect("lookup json");
    let token = lr.token.expect("discovery hands the agent its token");
    assert!(
        raw.contains(&token),
        "the grep sees the token where it is due"
    );
    let node = lr.node_uuid;
    let id = node.to_string();
    s.wait_state(&id, "manageable").await;
    // A second lookup (the agent's own retry) carries no token.
    let (st, raw) = s.agent_post(PATH_LOOKUP, Some(&token), &lookup).await;
    assert_eq!(st, 200, "{raw}");
    s.seen.add("second lookup", raw);

    // BMC secrets, also inside an array; every read.
    s.admin(
        M::PATCH,
        &format!("/v1/nodes/{id}"),
        Some(json!([
            {"op": "add", "path": "/driver_info/ipmi_password", "value": BMC_PASSWORD},
            {"op": "add", "path": "/driver_info/ipmi_hex_kg_key", "value": KG_KEY},
            {"op": "add", "path": "/driver_info/redfish_password", "value": REDFISH_PASSWORD},
            {"op": "add", "path": "/driver_info/snmp", "value": [{"auth_key": NESTED_KEY, "user": "u"}]},
            {"op": "add", "path": "/extra/note", "value": "plain"}
        ])),
    )
    .await;
    for path in [
        format!("/v1/nodes/{id}"),
        "/v1/nodes/detail".to_owned(),
        "/v1/nodes?fields=uuid,driver_info,instance_info".to_owned(),
        format!("/v1/nodes/{id}/validate"),
        format!("/v1/nodes/{id}/states"),
        "/v1/ports/detail".to_owned(),
    ] {
        s.admin(M::GET, &path, None).await;
    }
    // PATCHes that fail: errors name paths, never values.
    for (patch, why) in [
        (
            json!([{"op": "add", "path": "/driver_info/ipmi_password/x", "value": 1}]),
            "index into a secret",
        ),
        (
            json!([{"op": "add", "path": "/driver_info/nope/x", "value": 1}]),
            "missing parent under driver_info",
        ),
        (
            json!([{"op": "test", "path": "/driver_info/ipmi_password", "value": "guess"}]),
            "test op against a secret",
        ),
        (
            json!([{"op": "frobnicate", "path": "/driver_info/ipmi_password", "value": BMC_PASSWORD}]),
            "bad op carrying the secret",
        ),
        (
            json!([{"op": "replace", "path": "/uuid", "value": REDFISH_PASSWORD}]),
            "read-only field given a secret",
        ),
    ] {
        let (st, body) = s
            .call(
                M::PATCH,
                &format!("/v1/nodes/{id}"),
                Some(patch),
                Some(API_PASSWORD),
            )
            .await;
        assert_eq!(st, 400, "{why}: {body}");
    }
    // A POST whose body is invalid and carries a secret.
    let (st, _) = s
        .call(
            M::POST,
            "/v1/nodes",
            Some(
                json!({"driver": "no-such-driver", "driver_info": {"ipmi_password": BMC_PASSWORD}}),
            ),
            Some(API_PASSWORD),
        )
        .await;
    assert_eq!(st, 400);

    // Cleaning through the agent.
    s.admin(
        M::PUT,
        &format!("/v1/nodes/{id}/states/provision"),
        Some(json!({"target": "provide"})),
    )
    .await;
    let (cmd_id, cmd, raw) = s.next_command(node, &token).await;
    assert!(matches!(cmd, AgentCommand::Wipe { .. }), "{cmd:?}");
    s.seen.add("heartbeat (wipe)", raw);
    s.report(node, &token, cmd_id, wiped()).await;
    s.wait_state(&id, "available").await;

    // Deploy with a config drive whose user data holds a password.
    s.admin(
        M::PATCH,
        &format!("/v1/nodes/{id}"),
        Some(json!([
            {"op": "add", "path": "/instance_info/image_source", "value": "http://127.0.0.1:9/os.raw.zst"},
            {"op": "add", "path": "/instance_info/image_checksum", "value": "ab".repeat(32)}
        ])),
    )
    .await;
    let user_data =
        format!("#cloud-config\npassword: {USER_DATA_SECRET}\nchpasswd: {{expire: false}}\n");
    s.admin(
        M::PUT,
        &format!("/v1/nodes/{id}/states/provision"),
        Some(json!({"target": "active", "configdrive": {"meta_data": {"hostname": "grep"}, "user_data": user_data}})),
    )
    .await;
    let (cmd_id, cmd, raw) = s.next_command(node, &token).await;
    assert!(matches!(cmd, AgentCommand::Deploy(_)), "{cmd:?}");
    assert!(
        raw.contains(USER_DATA_SECRET),
        "the grep sees the user data where it is due"
    );
    s.wait_state(&id, "wait call-back").await;
    s.admin(M::GET, &format!("/v1/nodes/{id}"), None).await;
    s.report(
        node,
        &token,
        cmd_id,
        Report::Succeeded {
            inventory: None,
            detail: None,
        },
    )
    .await;
    s.wait_state(&id, "active").await;
    let (st, body) = s
        .call(
            M::PATCH,
            &format!("/v1/nodes/{id}"),
            Some(json!([{"op": "add", "path": "/instance_info/configdrive/nope/x", "value": 1}])),
            Some(API_PASSWORD),
        )
        .await;
    assert_eq!(st, 400, "{body}");

    // History, every event in detail.
    let h = s
        .admin(M::GET, &format!("/v1/nodes/{id}/history?detail=true"), None)
        .await;
    let events = h["history"].as_array().cloned().unwrap_or_default();
    assert!(!events.is_empty(), "{h}");
    for e in events {
        if let Some(ev) = e["uuid"].as_str() {
            s.admin(M::GET, &format!("/v1/nodes/{id}/history/{ev}"), None)
                .await;
        }
    }
    for path in [format!("/v1/nodes/{id}"), "/v1/nodes/detail".to_owned()] {
        s.admin(M::GET, &path, None).await;
    }

    // The operator CLI, right and wrong password.
    let out = s.cli(&["node", "show", &id], API_PASSWORD);
    assert!(out.status.success(), "{:?}", out);
    let out = s.cli(&["node", "list"], API_PASSWORD);
    assert!(out.status.success(), "{:?}", out);
    let out = s.cli(&["node", "show", &id], WRONG_PASSWORD);
    assert!(!out.status.success());

    // Stop the controller so its log is complete.
    let _ = Command::new("kill")
        .args(["-TERM", &server.0.id().to_string()])
        .status();
    let stop = Instant::now() + Duration::from_secs(10);
    let mut server = server;
    while server.0.try_wait().expect("wait").is_none() && Instant::now() < stop {
        std::thread::sleep(Duration::from_millis(50));
    }
    let log_text = std::fs::read_to_string(&log_path).expect("log");
    assert!(
        log_text.contains("\"api request\""),
        "the log was captured: {log_text}"
    );
    json_log_lines_name_their_node(&log_text, &id);
    s.seen.add("controller log", log_text);

    let basic = |p: &str| base64::engine::general_purpose::STANDARD.encode(format!("op:{p}"));
    let secrets = [
        ("API password", API_PASSWORD.to_owned()),
        ("API password (Basic)", basic(API_PASSWORD)),
        ("wrong password", WRONG_PASSWORD.to_owned()),
        ("wrong password (Basic)", basic(WRONG_PASSWORD)),
        ("BMC password", BMC_PASSWORD.to_owned()),
        ("IPMI Kg key", KG_KEY.to_owned()),
        ("Redfish password", REDFISH_PASSWORD.to_owned()),
        ("key inside an array", NESTED_KEY.to_owned()),
        ("secret set by a rule", RULE_SECRET.to_owned()),
        ("config drive user data", USER_DATA_SECRET.to_owned()),
        ("agent token", token.clone()),
    ];
    let mut leaks = Vec::new();
    for (what, text) in &s.seen.outputs {
        for (name, secret) in &secrets {
            if text.contains(secret.as_str()) {
                let line = text
                    .lines()
                    .find(|l| l.contains(secret.as_str()))
                    .unwrap_or_default();
                leaks.push(format!("{name} in {what}: {line}"));
            }
        }
    }
    assert!(
        leaks.is_empty(),
        "{} leaks:\n{}",
        leaks.len(),
        leaks.join("\n")
    );
    assert!(s.seen.outputs.len() > 30, "the session covered little");
}

/// `log_format = "json"`: every line is one JSON object, and every line the conductor, the
/// agent API, the drivers or discovery write while this one machine goes through its
/// lifecycle names the node (in its fields or in a span's), so one filter on the UUID
/// finds a machine's whole story.
fn json_log_lines_name_their_node(log: &str, node: &str) {
    let mut about_nodes = 0;
    let mut unnamed = Vec::new();
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        let target = v["target"].as_str().unwrap_or_default();
        let per_node = [
            "controller::conductor",
            "controller::agent_api",
            "controller::drivers",
            "controller::discovery",
        ]
        .iter()
        .any(|t| target.starts_with(t));
        // The conductor's own registration and heartbeat are about no node.
        if !per_node || target == "controller::conductor::presence" {
            continue;
        }
        about_nodes += 1;
        if !line.contains(node) {
            unnamed.push(line.to_owned());
        }
    }
    assert!(
        about_nodes > 5,
        "only {about_nodes} lines about the node:\n{log}"
    );
    assert!(
        unnamed.is_empty(),
        "{} lines about the node without its UUID:\n{}",
        unnamed.len(),
        unnamed.join("\n")
    );
}

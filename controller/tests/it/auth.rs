//! `ingot serve` with `auth_strategy = http_basic` (an htpasswd file with bcrypt entries, as
//! Ironic's standalone mode): `/` and `/v1` stay public, everything else needs the right
//! user and password, the operator CLI sends them, the access log names the user but never
//! the password, and `noauth` on an address that is not loopback refuses to start.

use crate::support::{ChildGuard as Server, free_port};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const INGOT: &str = env!("CARGO_BIN_EXE_ingot");
const PASSWORD: &str = "Pa55-w0rd-unique-7781";

fn start(dir: &Path, port: u16, log: &Path) -> Server {
    let htpasswd = dir.join("htpasswd");
    let hash = bcrypt::hash(PASSWORD, 5).expect("hash");
    std::fs::write(&htpasswd, format!("# operators\nop:{hash}\n")).expect("htpasswd");
    let child = Command::new(INGOT)
        .args(["serve", "--api-listen", &format!("127.0.0.1:{port}")])
        .arg("--state-dir")
        .arg(dir)
        .args([
            "--auth-strategy",
            "http_basic",
            "--http-basic-auth-user-file",
        ])
        .arg(&htpasswd)
        .env("INGOT_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("log"))
        .spawn()
        .expect("spawn ingot serve");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "ingot serve did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    Server(child)
}

async fn status(req: reqwest::RequestBuilder) -> (u16, reqwest::header::HeaderMap, String) {
    let resp = req
        .header("X-OpenStack-Ironic-API-Version", "1.115")
        .send()
        .await
        .expect("request");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.text().await.expect("body"))
}

#[tokio::test(flavor = "multi_thread")]
async fn http_basic_guards_everything_but_the_version_documents() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let log = dir.path().join("serve.log");
    let server = start(dir.path(), port, &log);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let c = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}");

    for public in ["/", "/v1"] {
        let (s, _, body) = status(c.get(format!("{url}{public}"))).await;
        assert_eq!(s, 200, "{public}: {body}");
    }
    let (s, headers, body) = status(c.get(format!("{url}/v1/nodes"))).await;
    assert_eq!(s, 401, "{body}");
    assert!(
        headers
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("Basic")),
        "{headers:?}"
    );
    assert!(
        body.contains("error_message") && body.contains("Authentication required"),
        "{body}"
    );
    for (user, password) in [("op", "wrong"), ("nobody", PASSWORD)] {
        let (s, _, body) = status(
            c.get(format!("{url}/v1/nodes"))
                .basic_auth(user, Some(password)),
        )
        .await;
        assert_eq!(s, 401, "{user}: {body}");
        assert!(body.contains("Incorrect username or password"), "{body}");
    }
    // A write without credentials changes nothing.
    let (s, _, _) = status(
        c.post(format!("{url}/v1/nodes"))
            .json(&serde_json::json!({"driver": "fake-hardware", "name": "x"})),
    )
    .await;
    assert_eq!(s, 401);
    let (s, _, body) = status(
        c.post(format!("{url}/v1/nodes"))
            .basic_auth("op", Some(PASSWORD))
            .json(&serde_json::json!({"driver": "fake-hardware", "name": "n1"})),
    )
    .await;
    assert_eq!(s, 201, "{body}");

    // Ingot's CLI takes the same credentials, from its flags or the baremetal CLI's OS_*.
    let out = Command::new(INGOT)
        .args(["node", "list", "--url", &url])
        .env_remove("OS_USERNAME")
        .env_remove("OS_PASSWORD")
        .output()
        .expect("cli");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("HTTP 401"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for env in [
        [("INGOT_USERNAME", "op"), ("INGOT_PASSWORD", PASSWORD)],
        [("OS_USERNAME", "op"), ("OS_PASSWORD", PASSWORD)],
    ] {
        let out = Command::new(INGOT)
            .args(["node", "list", "--url", &url])
            .envs(env)
            .output()
            .expect("cli");
        assert!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).contains("n1"),
            "{env:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    drop(server);

    // One access line per request, with the user; the password appears nowhere.
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(
        text.lines().any(|l| l.contains("api request")
            && l.contains("user=\"op\"")
            && l.contains("status=201")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("api request") && l.contains("status=401")),
        "{text}"
    );
    assert!(!text.contains(PASSWORD), "the password leaked into the log");
}

#[test]
fn noauth_on_an_open_address_refuses_to_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(INGOT)
        .args(["serve", "--api-listen", &format!("0.0.0.0:{}", free_port())])
        .arg("--state-dir")
        .arg(dir.path())
        .output()
        .expect("ingot serve");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a loopback address"), "{err}");
    assert!(!dir.path().join("ingot.db").exists(), "nothing was created");
}

/// `[auth.users]`: a reader only reads, a member neither creates nor deletes nodes nor
/// changes `driver_info`, and a project user sees and acts only on its nodes (owner or
/// lessee) and their ports; others are 404.
#[tokio::test(flavor = "multi_thread")]
async fn roles_and_projects() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let hash = bcrypt::hash(PASSWORD, 4).expect("hash");
    let htpasswd = dir.path().join("htpasswd");
    std::fs::write(&htpasswd, format!("op:{hash}\nro:{hash}\nmem:{hash}\n")).expect("htpasswd");
    let config = dir.path().join("ingot.toml");
    std::fs::write(
        &config,
        format!(
            "api_listen = \"127.0.0.1:{port}\"\nauth_strategy = \"http_basic\"\n\
             http_basic_auth_user_file = \"{}\"\nstate_dir = \"{}\"\n\
             [auth.users.ro]\nrole = \"reader\"\n\
             [auth.users.mem]\nrole = \"member\"\nproject = \"p1\"\n",
            htpasswd.display(),
            dir.path().display()
        ),
    )
    .expect("config");
    let child = Command::new(INGOT)
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .env("INGOT_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn");
    let _server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "ingot serve did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let c = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}");
    let as_user = |user: &str, req: reqwest::RequestBuilder| req.basic_auth(user, Some(PASSWORD));
    let json = |t: &str| serde_json::from_str::<serde_json::Value>(t).expect("json");

    // The admin makes a node of p1, a node leased to p1 and one of p2, each with a port.
    let mut uuids = Vec::new();
    for (name, field, project, mac) in [
        ("mine", "owner", "p1", "52:54:00:aa:00:01"),
        ("leased", "lessee", "p1", "52:54:00:aa:00:02"),
        ("theirs", "owner", "p2", "52:54:00:aa:00:03"),
    ] {
        let (s, _, body) = status(as_user(
            "op",
            c.post(format!("{url}/v1/nodes")).json(&serde_json::json!({
                "driver": "fake-hardware", "name": name, field: project,
                "driver_info": {"ipmi_password": "x"}})),
        ))
        .await;
        assert_eq!(s, 201, "{body}");
        let uuid = json(&body)["uuid"].as_str().expect("uuid").to_owned();
        let (s, _, body) = status(as_user(
            "op",
            c.post(format!("{url}/v1/ports"))
                .json(&serde_json::json!({"address": mac, "node_uuid": uuid})),
        ))
        .await;
        assert_eq!(s, 201, "{body}");
        uuids.push((uuid, json(&body)["uuid"].as_str().expect("port").to_owned()));
    }

    // The reader reads everything and changes nothing.
    let (s, _, body) = status(as_user("ro", c.get(format!("{url}/v1/nodes")))).await;
    assert_eq!(s, 200);
    assert_eq!(json(&body)["nodes"].as_array().map(Vec::len), Some(3));
    for req in [
        c.patch(format!("{url}/v1/nodes/mine"))
            .json(&serde_json::json!([{"op": "add", "path": "/extra/a", "value": 1}])),
        c.post(format!("{url}/v1/nodes"))
            .json(&serde_json::json!({"driver": "fake-hardware"})),
        c.put(format!("{url}/v1/nodes/mine/states/power"))
            .json(&serde_json::json!({"target": "power on"})),
        c.delete(format!("{url}/v1/nodes/theirs")),
    ] {
        let (s, _, body) = status(as_user("ro", req)).await;
        assert_eq!(s, 403, "{body}");
        assert!(body.contains("reader role"), "{body}");
    }

    // The member of p1 sees its two nodes and their ports, not p2's.
    let (s, _, body) = status(as_user("mem", c.get(format!("{url}/v1/nodes")))).await;
    assert_eq!(s, 200);
    let mut names: Vec<String> = json(&body)["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter_map(|n| n["name"].as_str().map(str::to_owned))
        .collect();
    names.sort();
    assert_eq!(names, ["leased", "mine"]);
    let (s, _, _) = status(as_user("mem", c.get(format!("{url}/v1/nodes/theirs")))).await;
    assert_eq!(s, 404);
    let (s, _, _) = status(as_user(
        "mem",
        c.get(format!("{url}/v1/nodes/{}", uuids[2].0)),
    ))
    .await;
    assert_eq!(s, 404);
    let (s, _, _) = status(as_user(
        "mem",
        c.get(format!("{url}/v1/ports/{}", uuids[2].1)),
    ))
    .await;
    assert_eq!(s, 404);
    let (s, _, body) = status(as_user("mem", c.get(format!("{url}/v1/ports")))).await;
    assert_eq!(s, 200);
    assert_eq!(
        json(&body)["ports"].as_array().map(Vec::len),
        Some(2),
        "{body}"
    );
    let (s, _, body) = status(as_user(
        "mem",
        c.patch(format!("{url}/v1/nodes/mine"))
            .json(&serde_json::json!([{"op": "add", "path": "/extra/a", "value": 1}])),
    ))
    .await;
    assert_eq!(s, 200, "{body}");
    for (req, what) in [
        (
            c.patch(format!("{url}/v1/nodes/mine")).json(
                &serde_json::json!([{"op": "add", "path": "/driver_info/ipmi_password", "value": "y"}]),
            ),
            "BMC settings",
        ),
        (
            c.post(format!("{url}/v1/nodes")).json(&serde_json::json!({"driver": "fake-hardware"})),
            "cannot create or delete",
        ),
        (c.delete(format!("{url}/v1/nodes/mine")), "cannot create or delete"),
        (
            c.patch(format!("{url}/v1/nodes/leased"))
                .json(&serde_json::json!([{"op": "add", "path": "/owner", "value": "p9"}])),
            "give a node away",
        ),
    ] {
        let (s, _, body) = status(as_user("mem", req)).await;
        assert_eq!(s, 403, "{what}: {body}");
        assert!(body.contains(what), "{body}");
    }
    let (s, _, _) = status(as_user(
        "mem",
        c.patch(format!("{url}/v1/nodes/theirs"))
            .json(&serde_json::json!([{"op": "add", "path": "/extra/a", "value": 1}])),
    ))
    .await;
    assert_eq!(
        s, 404,
        "another project's node does not exist for the member"
    );

    // Allocations: a project user allocates only for its project, and only among the nodes
    // it owns or leases; it sees only its project's allocations.
    for node in ["mine", "leased", "theirs"] {
        let (s, _, body) = status(as_user(
            "op",
            c.patch(format!("{url}/v1/nodes/{node}")).json(
                &serde_json::json!([{"op": "add", "path": "/resource_class", "value": "rc1"}]),
            ),
        ))
        .await;
        assert_eq!(s, 200, "{body}");
        let (s, _, body) = status(as_user(
            "op",
            c.put(format!("{url}/v1/nodes/{node}/states/power"))
                .json(&serde_json::json!({"target": "power off"})),
        ))
        .await;
        assert_eq!(s, 202, "{body}");
        for target in ["manage", "provide"] {
            let (s, _, body) = status(as_user(
                "op",
                c.put(format!("{url}/v1/nodes/{node}/states/provision"))
                    .json(&serde_json::json!({ "target": target })),
            ))
            .await;
            assert_eq!(s, 202, "{node} {target}: {body}");
            let want = if target == "manage" {
                "manageable"
            } else {
                "available"
            };
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let (_, _, body) =
                    status(as_user("op", c.get(format!("{url}/v1/nodes/{node}")))).await;
                if json(&body)["provision_state"] == want {
                    break;
                }
                assert!(Instant::now() < deadline, "{node} never {want}: {body}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    let (s, _, body) = status(as_user(
        "mem",
        c.post(format!("{url}/v1/allocations"))
            .json(&serde_json::json!({"resource_class": "rc1", "owner": "p2"})),
    ))
    .await;
    assert_eq!(s, 403, "{body}");
    assert!(body.contains("own project"), "{body}");
    let (s, _, body) = status(as_user(
        "op",
        c.post(format!("{url}/v1/allocations"))
            .json(&serde_json::json!({"resource_class": "rc1", "owner": "p2", "name": "for-p2"})),
    ))
    .await;
    assert_eq!(s, 201, "{body}");
    // Two allocations of p1: they can only get p1's two nodes, never p2's.
    let mut got = Vec::new();
    for name in ["p1-a", "p1-b", "p1-c"] {
        let (s, _, body) = status(as_user(
            "mem",
            c.post(format!("{url}/v1/allocations"))
                .json(&serde_json::json!({"resource_class": "rc1", "name": name})),
        ))
        .await;
        assert_eq!(s, 201, "{body}");
        assert_eq!(json(&body)["owner"], "p1", "{body}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (s, _, body) = status(as_user(
                "mem",
                c.get(format!("{url}/v1/allocations/{name}")),
            ))
            .await;
            assert_eq!(s, 200, "{body}");
            let a = json(&body);
            if a["state"] != "allocating" {
                got.push((a["state"].clone(), a["node_uuid"].clone()));
                break;
            }
            assert!(Instant::now() < deadline, "{name} still allocating");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let mut claimed: Vec<String> = got
        .iter()
        .filter(|(st, _)| st == "active")
        .filter_map(|(_, n)| n.as_str().map(str::to_owned))
        .collect();
    claimed.sort();
    let mut p1_nodes = vec![uuids[0].0.clone(), uuids[1].0.clone()];
    p1_nodes.sort();
    assert_eq!(
        claimed, p1_nodes,
        "p1 got exactly its own two nodes: {got:?}"
    );
    assert_eq!(
        got[2].0, "error",
        "no third node for p1 (p2's is not a candidate)"
    );
    let (s, _, body) = status(as_user("mem", c.get(format!("{url}/v1/allocations")))).await;
    assert_eq!(s, 200);
    assert_eq!(
        json(&body)["allocations"].as_array().map(Vec::len),
        Some(3),
        "{body}"
    );
    let (s, _, _) = status(as_user(
        "mem",
        c.get(format!("{url}/v1/allocations?owner=p2")),
    ))
    .await;
    assert_eq!(s, 403);
    for req in [
        c.get(format!("{url}/v1/allocations/for-p2")),
        c.delete(format!("{url}/v1/allocations/for-p2")),
    ] {
        let (s, _, body) = status(as_user("mem", req)).await;
        assert_eq!(s, 404, "{body}");
    }
    let (s, _, body) = status(as_user("op", c.get(format!("{url}/v1/allocations/for-p2")))).await;
    assert_eq!(s, 200, "{body}");

    // Conductors: a reader of every project sees this one, alive; a project user does not.
    let conductors = || {
        c.get(format!("{url}/v1/conductors"))
            .header("X-OpenStack-Ironic-API-Version", "1.49")
    };
    let (s, _, body) = status(as_user("ro", conductors())).await;
    assert_eq!(s, 200, "{body}");
    let list = json(&body);
    assert_eq!(list["conductors"][0]["alive"], true, "{body}");
    let (s, _, body) = status(as_user("mem", conductors())).await;
    assert_eq!(s, 403, "{body}");
}

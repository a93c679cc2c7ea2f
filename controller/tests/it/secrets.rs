//! BMC secrets at rest: `ingot serve` creates its key file 0600, the database never holds a
//! BMC password in clear (nor in its WAL), and `ingot secrets rotate` re-encrypts every node
//! under a new key that alone remains in the key file.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use controller::model::Node;
use controller::secrets::{KEY_FILE, SecretBox};
use controller::store::Store as _;
use controller::store::sql::SqlStore;
use serde_json::json;

const INGOT: &str = env!("CARGO_BIN_EXE_ingot");
const PASSWORD: &str = "BmcPa55-unique-4410";

/// Every byte under `dir` (database, WAL, shared memory) as text, lossy.
fn all_bytes(dir: &Path) -> String {
    let mut text = String::new();
    for entry in std::fs::read_dir(dir).expect("dir") {
        let path = entry.expect("entry").path();
        if path.is_file() {
            text.push_str(&String::from_utf8_lossy(
                &std::fs::read(&path).expect("read"),
            ));
        }
    }
    text
}

#[tokio::test(flavor = "multi_thread")]
async fn bmc_secrets_are_encrypted_at_rest_and_rotate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path();
    let db = format!("sqlite://{}", state.join("ingot.db").display());

    // `ingot serve` makes the key file on first start.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let mut child = Command::new(INGOT)
        .args(["serve", "--api-listen", &format!("127.0.0.1:{port}")])
        .arg("--state-dir")
        .arg(state)
        .env("INGOT_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "ingot serve did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let resp = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/v1/nodes"))
        .json(&json!({"driver": "fake-hardware", "name": "n1",
                      "driver_info": {"ipmi_password": PASSWORD, "ipmi_address": "10.9.9.9"}}))
        .send()
        .await
        .expect("create");
    assert_eq!(resp.status().as_u16(), 201);
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();

    use std::os::unix::fs::PermissionsExt as _;
    let key_path = state.join(KEY_FILE);
    let mode = std::fs::metadata(&key_path)
        .expect("key file")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let stored = all_bytes(state);
    assert!(stored.contains("10.9.9.9"), "the node is in the database");
    assert!(
        !stored.contains(PASSWORD),
        "the BMC password is stored in clear"
    );
    let first_id = SecretBox::open(&key_path).expect("key").key_ids()[0].clone();
    assert!(stored.contains(&format!("enc:v1:{first_id}:")));

    // The store with the key reads the password back.
    let read = |b: SecretBox| {
        let db = db.clone();
        async move {
            let store = SqlStore::connect(&db)
                .await
                .expect("store")
                .with_secrets(Arc::new(b));
            let n: Node = store.get_node("n1").await.expect("get").expect("node");
            n.driver_info["ipmi_password"].clone()
        }
    };
    assert_eq!(
        read(SecretBox::open(&key_path).expect("key")).await,
        PASSWORD
    );

    // Rotation: a new key encrypts everything, the old one is gone from the file.
    let out = Command::new(INGOT)
        .args(["secrets", "rotate", "--state-dir"])
        .arg(state)
        .output()
        .expect("rotate");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("1 node(s)") && said.contains(&first_id),
        "{said}"
    );
    let rotated = SecretBox::open(&key_path).expect("key");
    assert_eq!(rotated.key_ids().len(), 1);
    let new_id = rotated.key_ids()[0].clone();
    assert_ne!(new_id, first_id);
    assert_eq!(read(rotated).await, PASSWORD);
    let stored = all_bytes(state);
    assert!(!stored.contains(PASSWORD));
    // Every live copy is under the new key (a WAL may still hold superseded pages).
    let store = SqlStore::connect(&db).await.expect("store");
    let raw: Node = store.get_node("n1").await.expect("get").expect("node");
    let value = raw.driver_info["ipmi_password"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(value.starts_with(&format!("enc:v1:{new_id}:")), "{value}");
}

//! The provisioning listener over HTTPS with `ingot certs init`'s certificates, and the
//! agent's client pinning the CA by `ingot.ca=sha256:HEX` (SHA-256 of the CA's DER): the
//! real agent API answers through our CA; a server whose certificate comes from another CA
//! is refused, and so is our server when the agent pins another CA.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use crate::support::free_port;
use agent::run::client::{Controller, HttpController};
use agent::run::machine::CallError;
use controller::certs;
use controller::config::FileConfig;
use proto::protocol::{AgentState, HeartbeatRequest};
use uuid::Uuid;

fn pin(fp: &str) -> [u8; 32] {
    let hex = fp.strip_prefix("sha256:").expect("sha256:");
    let bytes: Vec<u8> = (0..64)
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect();
    bytes.try_into().expect("32 bytes")
}

/// `ingot serve`'s provisioning router behind a TLS listener on 127.0.0.1 with `dir`'s
/// server certificate; returns its https base URL.
async fn https_listener(state: &Path, tls: &certs::Issued) -> String {
    let config = FileConfig {
        database: Some(format!("sqlite://{}", state.join("ingot.db").display())),
        state_dir: Some(state.to_path_buf()),
        ..Default::default()
    }
    .validate()
    .expect("config");
    let services = controller::serve::build(&config).await.expect("build");
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let server =
        controller::tls::server_config(&tls.server_cert, &tls.server_key).expect("server config");
    let listener = controller::tls::listener(tcp, server).expect("tls listener");
    let base = format!(
        "https://{}",
        axum::serve::Listener::local_addr(&listener).expect("addr")
    );
    let app = services
        .boot
        .clone()
        .into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, app).await });
    base
}

async fn heartbeat(base: &str, ca: &str) -> Result<(), CallError> {
    let client = HttpController::new(base, Some(pin(ca))).expect("client");
    let req = HeartbeatRequest {
        node_uuid: Uuid::new_v4(),
        state: AgentState::Idle,
    };
    client
        .heartbeat("not-a-token", &req, Duration::from_millis(100))
        .await
        .map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_pins_the_ca_of_the_https_listener() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().expect("tempdir");
    let lo = [IpAddr::V4(Ipv4Addr::LOCALHOST)];
    let ours = certs::init(&dir.path().join("ours"), &lo, &[]).expect("our certs");
    let rogue = certs::init(&dir.path().join("rogue"), &lo, &[]).expect("rogue certs");
    std::fs::create_dir_all(dir.path().join("s1")).expect("dir");
    std::fs::create_dir_all(dir.path().join("s2")).expect("dir");
    let good = https_listener(&dir.path().join("s1"), &ours).await;
    let evil = https_listener(&dir.path().join("s2"), &rogue).await;

    // Through our CA the TLS session holds and the real agent API answers (401: no token).
    match heartbeat(&good, &ours.ca_fingerprint).await {
        Err(CallError::Unauthorized) => {}
        other => panic!("expected the agent API's 401 over TLS, got {other:?}"),
    }
    // A server with another CA's certificate, and our server under another pin: refused in
    // the handshake.
    for (base, ca, what) in [
        (&evil, &ours.ca_fingerprint, "server of another CA"),
        (&good, &rogue.ca_fingerprint, "agent pinning another CA"),
    ] {
        match heartbeat(base, ca).await {
            Err(CallError::Transport(e)) => {
                assert!(e.contains("pinned"), "{what}: {e}");
            }
            other => panic!("{what}: expected a TLS failure, got {other:?}"),
        }
    }
    // The agent's image writer pins the same CA: a signed image URL on the HTTPS side is
    // fetched and written; under another pin it is refused.
    let state = dir.path().join("s1");
    let raw: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 251) as u8).collect();
    let mut raw = raw;
    raw[510] = 0x55;
    raw[511] = 0xaa;
    std::fs::write(state.join("disk.raw"), &raw).expect("raw");
    controller::images::ImageStore::new(&state)
        .import(&state.join("disk.raw"), Some("os"), &Default::default())
        .expect("import");
    let signer = controller::images::signing::UrlSigner::load_or_create(&state).expect("key");
    let services_store = controller::serve::build(
        &FileConfig {
            database: Some(format!("sqlite://{}", state.join("ingot.db").display())),
            state_dir: Some(state.clone()),
            ..Default::default()
        }
        .validate()
        .expect("config"),
    )
    .await
    .expect("store");
    let mut node = controller::model::Node::new(Uuid::new_v4(), "manual", chrono::Utc::now());
    node.provision_state = "wait call-back".into();
    node.provision_updated_at = Some(chrono::Utc::now());
    node.instance_info
        .insert("image_source".into(), serde_json::json!("ingot://os"));
    services_store.store.create_node(&node).await.expect("node");
    let record = controller::images::ImageStore::new(&state)
        .get("os")
        .expect("record");
    let url = format!(
        "{good}/images/os.raw.zst?{}",
        signer.query(node.uuid, "os", chrono::Utc::now().timestamp() + 600)
    );
    for (ca, ok) in [(&ours.ca_fingerprint, true), (&rogue.ca_fingerprint, false)] {
        let disk = dir.path().join("disk");
        std::fs::File::create(&disk)
            .and_then(|f| f.set_len(raw.len() as u64))
            .expect("disk");
        let opts = agent::image::WriteImageOptions {
            url: url.clone(),
            checksum: format!("sha256:{}", record.sha256)
                .parse()
                .expect("checksum"),
            device: disk.clone(),
            configdrive: None,
            fetch: agent::image::fetch::FetchOptions {
                pin_sha256: Some(pin(ca)),
                max_retries: 0,
                ..Default::default()
            },
            direct: false,
            progress_interval: Duration::from_secs(1),
        };
        let got = std::thread::spawn(move || {
            agent::image::write_image(&opts, &agent::events::CollectSink::default())
        })
        .join()
        .expect("writer thread");
        assert_eq!(
            got.is_ok(),
            ok,
            "pin {ca}: {:?}",
            got.err().map(|e| format!("{:#}", e.1))
        );
        if ok {
            assert_eq!(std::fs::read(&disk).expect("disk"), raw);
        }
    }

    // Plain HTTP to the TLS port never reaches the agent API: the listener answers 400.
    let plain = good.replace("https://", "http://");
    match heartbeat(&plain, &ours.ca_fingerprint).await {
        Err(CallError::Status(400, body)) => assert!(body.contains("use https://"), "{body}"),
        other => panic!("plain HTTP on the TLS port: {other:?}"),
    }
}

/// Kills the `ingot serve` this test started (by its PID) when the test ends.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `ingot serve` with `[tls]` from `ingot certs init`: the plain listener serves the iPXE
/// script (with an `https://` `ingot.url` and the CA's `ingot.ca=`) and refuses the agent
/// API and images; the HTTPS listener serves the agent API to a client pinning that CA; the
/// operator API is HTTPS with the same certificate and answers plain HTTP with a 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_with_tls_keeps_the_agent_api_and_images_off_plain_http() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().expect("tempdir");
    let lo = [IpAddr::V4(Ipv4Addr::LOCALHOST)];
    let tls = certs::init(&dir.path().join("tls"), &lo, &[]).expect("certs");
    let (api, plain, secure) = (free_port(), free_port(), free_port());
    let config = dir.path().join("ingot.toml");
    std::fs::write(
        &config,
        format!(
            "api_listen = \"127.0.0.1:{api}\"\nstate_dir = \"{state}\"\n\n\
             [netboot]\nhttp_listen = \"127.0.0.1:{plain}\"\nhttps_listen = \"127.0.0.1:{secure}\"\n\n\
             [discovery]\nenabled = true\nallowed_subnets = [\"127.0.0.0/8\"]\n\n{tls_lines}",
            state = dir.path().join("state").display(),
            tls_lines = certs::config_lines(&tls),
        ),
    )
    .expect("config");
    let _serve = Child(
        std::process::Command::new(env!("CARGO_BIN_EXE_ingot"))
            .args(["serve", "--config"])
            .arg(&config)
            .env_remove("INGOT_CONFIG")
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("start ingot serve"),
    );
    let http = reqwest::Client::new();
    let plain_base = format!("http://127.0.0.1:{plain}");
    let mut script = None;
    for _ in 0..100 {
        if let Ok(r) = http
            .get(format!("{plain_base}/boot/ipxe?mac=52:54:00:aa:bb:cc"))
            .send()
            .await
        {
            script = Some(r.text().await.expect("script"));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let script = script.expect("ingot serve answered on the plain listener");
    assert!(
        script.contains(&format!("ingot.url=https://127.0.0.1:{secure} ")),
        "{script}"
    );
    assert!(
        script.contains(&format!("ingot.ca={} ", tls.ca_fingerprint)),
        "{script}"
    );
    assert!(
        script.contains(&format!("kernel {plain_base}/boot/")),
        "{script}"
    );

    for path in [
        "/agent/v1/lookup",
        "/agent/v1/heartbeat",
        "/images/os.raw.zst",
        "/images/os.sha256",
    ] {
        let r = http
            .post(format!("{plain_base}{path}"))
            .body("{}")
            .send()
            .await
            .expect("POST");
        assert_eq!(r.status(), 403, "{path} on plain HTTP");
        let r = http
            .get(format!("{plain_base}{path}"))
            .send()
            .await
            .expect("GET");
        assert_eq!(r.status(), 403, "{path} on plain HTTP");
        assert!(r.text().await.expect("body").contains("https://"), "{path}");
    }
    match heartbeat(&format!("https://127.0.0.1:{secure}"), &tls.ca_fingerprint).await {
        Err(CallError::Unauthorized) => {}
        other => panic!("expected the agent API's 401 over TLS, got {other:?}"),
    }

    // The same [tls] puts the operator API on HTTPS, with the same certificate.
    let ca = std::fs::read(&tls.ca_cert).expect("ca.pem");
    let trusting = reqwest::Client::builder()
        .tls_certs_only(reqwest::Certificate::from_pem_bundle(&ca).expect("ca"))
        .build()
        .expect("client");
    let r = trusting
        .get(format!("https://127.0.0.1:{api}/v1"))
        .send()
        .await
        .expect("GET /v1 over HTTPS");
    assert_eq!(r.status(), 200);
    let r = http
        .get(format!("http://127.0.0.1:{api}/v1"))
        .send()
        .await
        .expect("plain GET /v1 is answered");
    assert_eq!(r.status(), 400, "plain HTTP on the HTTPS API");
    assert!(r.text().await.expect("body").contains("use https://"));

    // A client offering h2 (curl does) is given HTTP/1.1, the only protocol served.
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(
            controller::certs::pem_first_der(&String::from_utf8_lossy(&ca)).expect("ca der"),
        ))
        .expect("root");
    let mut client = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", api))
        .await
        .expect("connect");
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(client))
        .connect(
            rustls::pki_types::ServerName::IpAddress(Ipv4Addr::LOCALHOST.into()),
            tcp,
        )
        .await
        .expect("handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
}

//! Stored images end to end: `ingot image import|list|show|delete` as a process on a qcow2
//! that `qemu-img` makes here, then the provisioning listener serving the stored image over
//! real HTTP on 127.0.0.1 (full, `Range`, `HEAD`, checksum file), the agent deploy interface
//! resolving `ingot://NAME` to that URL and checksum, and the agent's own image writer
//! fetching, verifying and writing it to a disk file.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use agent::events::CollectSink;
use agent::image::fetch::FetchOptions;
use agent::image::{WriteImageOptions, write_image};
use chrono::Utc;
use controller::config::FileConfig;
use controller::drivers::agent::deploy_command;
use controller::images::signing::{self, UrlSigner};
use controller::images::{ImageStore, ImportOptions};
use controller::model::Node;
use controller::netboot::service::NetbootSection;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

const INGOT: &str = env!("CARGO_BIN_EXE_ingot");

/// A raw disk with an MBR boot signature, patterned data, a hole and a marked tail.
fn raw_disk(path: &Path, len: usize) -> Vec<u8> {
    let mut d = vec![0u8; len];
    d[510] = 0x55;
    d[511] = 0xaa;
    for (i, b) in d.iter_mut().enumerate().skip(1 << 20).take(2 << 20) {
        *b = (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1];
    }
    d[len - 4..].copy_from_slice(b"END!");
    std::fs::write(path, &d).expect("write raw disk");
    d
}

fn qcow2_from(raw: &Path, out: &Path) {
    let st = Command::new("qemu-img")
        .args(["convert", "-q", "-f", "raw", "-O", "qcow2"])
        .arg(raw)
        .arg(out)
        .status()
        .expect("run qemu-img (qemu-utils)");
    assert!(st.success(), "qemu-img convert to qcow2");
}

fn ingot(state: &Path, args: &[&str]) -> Output {
    Command::new(INGOT)
        .arg("image")
        .args(args)
        .arg("--state-dir")
        .arg(state)
        .env_remove("INGOT_CONFIG")
        .env_remove("INGOT_STATE_DIR")
        .output()
        .expect("run ingot")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn hex_sha256(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

#[test]
fn cli_imports_lists_shows_and_deletes() {
    test_needs::need!(test_needs::Need::Program("qemu-img"));
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let raw_path = dir.path().join("disk.raw");
    raw_disk(&raw_path, 8 << 20);
    let q = dir.path().join("debian.qcow2");
    qcow2_from(&raw_path, &q);
    let qs = q.to_str().expect("utf-8 path");

    let out = ingot(&state, &["import", qs]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("imported debian (qcow2)"), "{stdout}");
    assert!(stdout.contains("image_source=ingot://debian"), "{stdout}");

    let out = ingot(&state, &["list", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let list: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(list[0]["name"], "debian");
    assert_eq!(list[0]["size"], 8 << 20);
    let stored = std::fs::read(state.join("images/debian/image.raw.zst")).expect("stored file");
    assert_eq!(list[0]["sha256"], hex_sha256(&stored));
    assert_eq!(list[0]["stored_size"], stored.len());

    let out = ingot(&state, &["list"]);
    let table = text(&out.stdout);
    assert!(table.starts_with("NAME"), "{table}");
    assert!(table.contains("debian  qcow2   8.0 MiB"), "{table}");

    // The state dir also comes from the environment, as for `ingot serve`.
    let out = Command::new(INGOT)
        .args(["image", "show", "debian"])
        .env("INGOT_STATE_DIR", &state)
        .env_remove("INGOT_CONFIG")
        .output()
        .expect("run ingot");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(&hex_sha256(&stored)));

    let fail = |args: &[&str], want: &str| {
        let out = ingot(&state, args);
        assert!(!out.status.success(), "{args:?} should fail");
        let err = text(&out.stderr);
        assert!(err.contains(want), "{args:?}: {err}");
    };
    fail(&["import", qs], "an image named \"debian\" already exists");
    let missing = dir.path().join("missing.qcow2");
    fail(
        &["import", missing.to_str().expect("utf-8")],
        "missing.qcow2: no such file",
    );
    let notes = dir.path().join("notes.txt");
    std::fs::write(&notes, "not a disk\n".repeat(200)).expect("write");
    fail(
        &["import", notes.to_str().expect("utf-8")],
        "unknown format",
    );
    fail(&["show", "nope"], "no image named \"nope\"");

    let out = ingot(&state, &["delete", "debian"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = ingot(&state, &["list", "--json"]);
    assert_eq!(text(&out.stdout).trim(), "[]");
    let leftovers: Vec<_> = std::fs::read_dir(state.join("images"))
        .expect("images dir")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_image_is_served_with_range_and_written_by_the_agent() {
    test_needs::need!(test_needs::Need::Program("qemu-img"));
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().expect("tempdir");
    let raw_path = dir.path().join("disk.raw");
    let raw = raw_disk(&raw_path, 6 << 20);
    let q = dir.path().join("os.qcow2");
    qcow2_from(&raw_path, &q);
    let record = ImageStore::new(dir.path())
        .import(&q, Some("os"), &ImportOptions::default())
        .expect("import");

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let config = FileConfig {
        database: Some(format!(
            "sqlite://{}",
            dir.path().join("ingot.db").display()
        )),
        state_dir: Some(dir.path().to_path_buf()),
        netboot: NetbootSection {
            http_base: Some(base.clone()),
            ..Default::default()
        },
        ..Default::default()
    }
    .validate()
    .expect("config");
    let services = controller::serve::build(&config).await.expect("build");
    let app = services
        .boot
        .clone()
        .into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, app).await });

    // The deploy interface turns `ingot://os` (or the bare name) into URL + checksum.
    let mut node = Node::new(Uuid::new_v4(), "manual", Utc::now());
    node.instance_info
        .insert("image_source".into(), json!("ingot://os"));
    // Only a node being deployed with the image gets it.
    node.provision_state = "wait call-back".into();
    // Entered after the conductor started, so restart recovery leaves it alone.
    node.provision_updated_at = Some(Utc::now());
    services.store.create_node(&node).await.expect("node");
    let resolver = services.hub.image_resolver().map(|r| r.as_ref());
    let cmd = deploy_command(&node, resolver).expect("deploy command");
    let (path, query) = cmd.image_url.split_once('?').expect("signed URL");
    assert_eq!(path, format!("{base}/images/os.raw.zst"));
    assert!(
        query.starts_with(&format!("node={}&expires=", node.uuid)),
        "{query}"
    );
    assert_eq!(cmd.checksum, format!("sha256:{}", record.sha256));
    node.instance_info
        .insert("image_source".into(), json!("os"));
    let bare = deploy_command(&node, resolver).expect("bare name");
    assert_eq!(bare.image_url.split_once('?').map(|p| p.0), Some(path));
    assert_eq!(bare.checksum, cmd.checksum);
    node.instance_info
        .insert("image_source".into(), json!("ingot://gone"));
    let err = deploy_command(&node, resolver).expect_err("unknown image");
    assert!(err.to_string().contains("no image named \"gone\""), "{err}");

    let http = reqwest::Client::new();
    let full = http.get(&cmd.image_url).send().await.expect("GET");
    assert_eq!(full.status(), 200);
    let body = full.bytes().await.expect("body");
    assert_eq!(format!("sha256:{}", hex_sha256(&body)), cmd.checksum);
    assert_eq!(zstd::decode_all(&body[..]).expect("zstd"), raw);

    let part = http
        .get(&cmd.image_url)
        .header("Range", "bytes=100-1099")
        .send()
        .await
        .expect("GET range");
    assert_eq!(part.status(), 206);
    assert_eq!(
        part.headers()["content-range"],
        format!("bytes 100-1099/{}", body.len()).as_str()
    );
    assert_eq!(part.bytes().await.expect("body"), body[100..1100]);
    let tail = http
        .get(&cmd.image_url)
        .header("Range", format!("bytes={}-", body.len() - 7))
        .send()
        .await
        .expect("GET open range");
    assert_eq!(tail.status(), 206);
    assert_eq!(tail.bytes().await.expect("body"), body[body.len() - 7..]);
    let head = http.head(&cmd.image_url).send().await.expect("HEAD");
    assert_eq!(head.status(), 200);
    assert_eq!(
        head.headers()["content-length"],
        body.len().to_string().as_str()
    );

    let sum = http
        .get(format!("{base}/images/os.sha256?{query}"))
        .send()
        .await
        .expect("GET sha256");
    assert_eq!(
        sum.text().await.expect("text"),
        format!("{}  os.raw.zst\n", record.sha256)
    );
    for path in [
        "/images/gone.raw.zst",
        "/images/..%2Fos%2Fimage.raw.zst",
        "/images/os.raw",
        "/images/.hidden.raw.zst",
    ] {
        let r = http
            .get(format!("{base}{path}?{query}"))
            .send()
            .await
            .expect("GET");
        assert!([403, 404].contains(&r.status().as_u16()), "{path}");
    }

    // The agent's writer fetches the URL, verifies the checksum and writes the raw disk.
    let disk = dir.path().join("target-disk");
    std::fs::File::create(&disk)
        .and_then(|f| f.set_len(raw.len() as u64))
        .expect("target disk");
    let opts = WriteImageOptions {
        url: cmd.image_url.clone(),
        checksum: cmd.checksum.parse().expect("checksum"),
        device: disk.clone(),
        configdrive: None,
        fetch: FetchOptions::default(),
        direct: false,
        progress_interval: std::time::Duration::from_secs(1),
    };
    let result = std::thread::spawn(move || write_image(&opts, &CollectSink::default()))
        .join()
        .expect("writer thread")
        .map_err(|(phase, e)| format!("{phase:?}: {e:#}"))
        .expect("agent wrote the image");
    assert_eq!(result.format, "zstd");
    assert_eq!(result.bytes_written, raw.len() as u64);
    assert_eq!(std::fs::read(&disk).expect("read disk"), raw);
}

/// Issue 11: `/images/*` serves a stored image only with a URL signed for that image, that
/// node and a time not yet passed; the signed URL keeps working with `Range` (resumes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_urls_without_a_valid_signature_are_refused() {
    test_needs::need!(test_needs::Need::Program("qemu-img"));
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().expect("tempdir");
    let raw_path = dir.path().join("disk.raw");
    raw_disk(&raw_path, 4 << 20);
    let store = ImageStore::new(dir.path());
    for name in ["os", "other"] {
        store
            .import(&raw_path, Some(name), &ImportOptions::default())
            .expect("import");
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let config = FileConfig {
        database: Some(format!(
            "sqlite://{}",
            dir.path().join("ingot.db").display()
        )),
        state_dir: Some(dir.path().to_path_buf()),
        netboot: NetbootSection {
            http_base: Some(base.clone()),
            ..Default::default()
        },
        ..Default::default()
    }
    .validate()
    .expect("config");
    let services = controller::serve::build(&config).await.expect("build");
    let app = services
        .boot
        .clone()
        .into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, app).await });

    // The key is created 0600 in the state dir on first start.
    let key = signing::key_path(dir.path());
    let mode = std::fs::metadata(&key)
        .expect("key file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // The victim is being deployed with `os`; a bystander is available, an attacker's UUID
    // is unknown.
    let mut victim_node = Node::new(Uuid::new_v4(), "manual", Utc::now());
    victim_node.provision_state = "wait call-back".into();
    // Entered after the conductor started, so restart recovery leaves it alone.
    victim_node.provision_updated_at = Some(Utc::now());
    victim_node
        .instance_info
        .insert("image_source".into(), json!("ingot://os"));
    services
        .store
        .create_node(&victim_node)
        .await
        .expect("node");
    let victim = victim_node.uuid;
    let mut bystander = Node::new(Uuid::new_v4(), "manual", Utc::now());
    bystander.provision_state = "available".into();
    bystander
        .instance_info
        .insert("image_source".into(), json!("ingot://os"));
    services.store.create_node(&bystander).await.expect("node");

    let resolver = services.hub.image_resolver().expect("resolver");
    let url = resolver.resolve("os", victim).expect("os").url;
    let other_image = resolver.resolve("other", victim).expect("other").url;
    let other_node = resolver.resolve("os", bystander.uuid).expect("os").url;
    let unknown_node = resolver.resolve("os", Uuid::new_v4()).expect("os").url;
    let (_, unknown_node_q) = unknown_node.split_once('?').expect("signed");
    let (_, query) = url.split_once('?').expect("signed");
    let (_, other_image_q) = other_image.split_once('?').expect("signed");
    let (_, other_node_q) = other_node.split_once('?').expect("signed");
    // The same key (read back from the file) signing an expiry in the past.
    let signer = UrlSigner::load_or_create(dir.path()).expect("key");
    let expired_q = signer.query(victim, "os", Utc::now().timestamp() - 10);
    let forged_q = query.replace(&victim.to_string(), &Uuid::new_v4().to_string());

    let http = reqwest::Client::new();
    let os = format!("{base}/images/os.raw.zst");
    let sum = format!("{base}/images/os.sha256");
    for (what, u) in [
        ("no signature", os.clone()),
        ("no signature (sha256)", sum.clone()),
        ("signed for another image", format!("{os}?{other_image_q}")),
        (
            "signed for a node not deploying",
            format!("{os}?{other_node_q}"),
        ),
        (
            "signed for an unknown node",
            format!("{os}?{unknown_node_q}"),
        ),
        ("node swapped", format!("{os}?{forged_q}")),
        ("expired", format!("{os}?{expired_q}")),
        ("expired (sha256)", format!("{sum}?{expired_q}")),
        (
            "bad sig",
            format!("{os}?node={victim}&expires=9999999999&sig=00"),
        ),
    ] {
        let r = http.get(&u).send().await.expect("GET");
        assert_eq!(r.status(), 403, "{what}");
        let r = http
            .get(&u)
            .header("Range", "bytes=0-99")
            .send()
            .await
            .expect("GET range");
        assert_eq!(r.status(), 403, "{what} with Range");
    }

    let full = http.get(&url).send().await.expect("GET");
    assert_eq!(full.status(), 200, "{:?}", full.text().await);
    let body = full.bytes().await.expect("body");
    let part = http
        .get(&url)
        .header("Range", "bytes=10-19")
        .send()
        .await
        .expect("GET range");
    assert_eq!(part.status(), 206);
    assert_eq!(part.bytes().await.expect("body"), body[10..20]);
    let r = http
        .get(format!("{sum}?{query}"))
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), 200);

    // Once the node is active, its URL is refused although it has not expired.
    let mut current = services
        .store
        .get_node_by_uuid(victim)
        .await
        .expect("get")
        .expect("node");
    current.provision_state = "active".into();
    services.store.update_node(&current).await.expect("update");
    let r = http.get(&url).send().await.expect("GET");
    assert_eq!(r.status(), 403, "node no longer deploying");
}

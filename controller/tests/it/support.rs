//! Shared by integration tests that run the real `ingot serve` binary: a free loopback
//! port, an htpasswd file, and a server process started from a config file, waited for and
//! killed on drop. (Older tests keep their own copies; new ones use this.)

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const INGOT: &str = env!("CARGO_BIN_EXE_ingot");

/// A loopback port nobody listens on (yet).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// Writes an htpasswd file of bcrypt entries for `users` (name, password).
pub fn htpasswd(path: &Path, users: &[(&str, &str)]) {
    let mut text = String::new();
    for (user, password) in users {
        let hash = bcrypt::hash(password, 5).expect("bcrypt");
        text.push_str(&format!("{user}:{hash}\n"));
    }
    std::fs::write(path, text).expect("htpasswd");
}

/// Dummy agent kernel and initramfs files (a config with a provisioning side names them).
pub fn dummy_agent_files(dir: &Path) -> (PathBuf, PathBuf) {
    let kernel = dir.join("vmlinuz");
    let initramfs = dir.join("initramfs.cpio.zst");
    std::fs::write(&kernel, vec![1u8; 4096]).expect("kernel");
    std::fs::write(&initramfs, vec![7u8; 1000]).expect("initramfs");
    (kernel, initramfs)
}

/// `ingot serve --config FILE`, killed on drop.
pub struct Serve {
    pub child: Child,
    /// `http://127.0.0.1:PORT` of the API.
    pub url: String,
}

impl Serve {
    /// Starts `ingot serve` with `config` (TOML, written to `dir/ingot.toml`) and waits
    /// until `api_port` accepts connections. The server's log goes to `dir/serve.log`.
    pub fn start(dir: &Path, config: &str, api_port: u16) -> Serve {
        Self::start_logging(dir, config, api_port, "warn")
    }

    /// [`Serve::start`] with `INGOT_LOG` set to `filter` (`info` to check what is logged).
    pub fn start_logging(dir: &Path, config: &str, api_port: u16, filter: &str) -> Serve {
        // The state dir holds BMC credentials: ingot serve wants it private.
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        let file = dir.join("ingot.toml");
        std::fs::write(&file, config).expect("config");
        let log = std::fs::File::create(dir.join("serve.log")).expect("log");
        let child = Command::new(INGOT)
            .arg("serve")
            .arg("--config")
            .arg(&file)
            .env("INGOT_LOG", filter)
            .env_remove("INGOT_URL")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn ingot serve");
        let mut serve = Serve {
            child,
            url: format!("http://127.0.0.1:{api_port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", api_port)).is_err() {
            if let Some(status) = serve.child.try_wait().expect("wait") {
                let log = std::fs::read_to_string(dir.join("serve.log")).unwrap_or_default();
                panic!("ingot serve exited with {status}:\n{log}");
            }
            assert!(
                Instant::now() < deadline,
                "ingot serve did not listen on {api_port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        serve
    }
}

impl Serve {
    /// SIGTERM, then waits (at most `limit`) for a clean exit.
    pub fn stop(mut self, limit: Duration) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).expect("pid"));
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                assert!(
                    status.success(),
                    "ingot serve exited with {status} after SIGTERM"
                );
                return;
            }
            assert!(
                Instant::now() < deadline,
                "ingot serve did not exit within {limit:?} of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the `ingot` CLI against `url` as `user` (none: no credentials), with no other
/// API settings from the environment.
pub fn cli(url: &str, user: Option<(&str, &str)>, args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(INGOT);
    cmd.args(args)
        .env("INGOT_URL", url)
        .env_remove("OS_ENDPOINT")
        .env_remove("OS_USERNAME")
        .env_remove("OS_PASSWORD")
        .env_remove("INGOT_CACERT")
        .env_remove("OS_CACERT");
    match user {
        Some((u, p)) => cmd.env("INGOT_USERNAME", u).env("INGOT_PASSWORD", p),
        None => cmd
            .env_remove("INGOT_USERNAME")
            .env_remove("INGOT_PASSWORD"),
    };
    cmd.output().expect("run ingot")
}

/// One request to the Ironic API at microversion 1.115: the status and the JSON body
/// (`Null` for an empty or non-JSON body).
pub async fn call(
    c: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let mut r = c
        .request(method, url)
        .header("X-OpenStack-Ironic-API-Version", "1.115");
    if let Some(b) = body {
        r = r.json(&b);
    }
    let resp = r.send().await.expect("request");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    )
}

/// Polls `GET /v1/nodes/{node}` at `url` until its provision state is `want` (20 s at most).
pub async fn wait_state(
    c: &reqwest::Client,
    url: &str,
    node: &str,
    want: &str,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (s, n) = call(
            c,
            reqwest::Method::GET,
            format!("{url}/v1/nodes/{node}"),
            None,
        )
        .await;
        assert_eq!(s, 200, "{n}");
        if n["provision_state"] == want {
            return n;
        }
        assert!(
            Instant::now() < deadline,
            "node {node} stuck in {} (want {want}): {}",
            n["provision_state"],
            n["last_error"]
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A child process (an `ingot serve` a test started its own way) killed and reaped on drop,
/// even when the test fails.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

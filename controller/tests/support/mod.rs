//! Shared harness for tests that run `ingot serve` as a process: a free loopback port, the
//! server started from a config file and waited for, stopped (SIGTERM, else killed) on drop,
//! an htpasswd of bcrypt entries, and the `ingot` CLI pointed at it. Include it with
//! `mod support;` (new tests should use it rather than another copy).

// Each test binary that includes this module uses a different part of it.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const INGOT: &str = env!("CARGO_BIN_EXE_ingot");

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// Writes an htpasswd file with one bcrypt entry per `(user, password)` (cost 4: tests).
pub fn htpasswd(file: &Path, users: &[(&str, &str)]) {
    let lines: String = users
        .iter()
        .map(|(u, p)| format!("{u}:{}\n", bcrypt::hash(p, 4).expect("bcrypt")))
        .collect();
    std::fs::write(file, lines).expect("write htpasswd");
}

/// A running `ingot serve`; stopped on drop.
pub struct Serve {
    child: Option<Child>,
    pub url: String,
    pub log: PathBuf,
    config: PathBuf,
    port: u16,
}

impl Serve {
    /// Starts `ingot serve --config CONFIG` (the config must set `api_listen` to
    /// `127.0.0.1:PORT`) with its stderr in `log`, and waits until it listens.
    pub fn start(config: &Path, port: u16, log: &Path) -> Serve {
        let mut s = Serve {
            child: None,
            url: format!("http://127.0.0.1:{port}"),
            log: log.to_owned(),
            config: config.to_owned(),
            port,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let child = Command::new(INGOT)
            .arg("serve")
            .arg("--config")
            .arg(&self.config)
            .env("INGOT_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn ingot serve");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("ingot serve exited ({status}):\n{}", self.log_text());
            }
            assert!(Instant::now() < deadline, "ingot serve did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM and a clean exit (killed after 20 s).
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.wait();
    }

    /// Stops and starts again on the same config and database.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The `ingot` CLI with `--url` this server and the given user (none: no credentials).
    pub fn cli(&self, user: Option<(&str, &str)>, args: &[&str]) -> Output {
        let mut cmd = Command::new(INGOT);
        cmd.args(args)
            .env("INGOT_URL", &self.url)
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
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

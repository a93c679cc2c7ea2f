//! `ingot node show` and `ingot node watch` (the real binary) following a deploy whose
//! progress the agent reports over the agent API, then a cleaning that fails.

use std::io::{BufRead as _, BufReader};
use std::process::{Command as Process, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use proto::protocol::Report;
use proto::{AgentEvent, Phase, ProgressEvent};
use reqwest::Method;
use serde_json::json;

use super::flows::{failed, manage_rules, ok, wiped};
use super::*;

const INGOT: &str = env!("CARGO_BIN_EXE_ingot");

/// `ingot node watch` running in the background, its stdout lines on a channel.
struct Watch {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Watch {
    fn start(api: &str, node: Uuid) -> Watch {
        let mut child = Process::new(INGOT)
            .args([
                "node",
                "watch",
                &node.to_string(),
                "--interval",
                "0.05",
                "--url",
                api,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ingot node watch");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Watch {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a line containing `want`.
    fn expect_line(&mut self, want: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(100)) {
                self.seen.push(line.clone());
                if line.contains(want) {
                    return line;
                }
            }
        }
        panic!("no line with {want:?}; lines so far: {:#?}", self.seen);
    }

    /// Waits for the exit; (exit code, stderr).
    fn finish(mut self) -> (Option<i32>, String) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                let mut err = String::new();
                if let Some(mut e) = self.child.stderr.take() {
                    std::io::Read::read_to_string(&mut e, &mut err).expect("stderr");
                }
                return (status.code(), err);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("ingot node watch did not exit; lines: {:#?}", self.seen);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn progress(fetched: u64, total: u64) -> Report {
    Report::Event {
        event: AgentEvent::Progress(ProgressEvent {
            phase: Phase::Stream,
            bytes_fetched: fetched,
            bytes_written: fetched * 3,
            bytes_total: Some(total),
            rate_bps: 250_000_000,
            elapsed_ms: 2000,
        }),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn node_show_and_watch_follow_agent_progress() {
    let env = start(manage_rules()).await;
    let lr = env
        .lookup(&lookup_req(&["52:54:00:dd:00:01"], "W1", "uw1"))
        .await;
    let (id, token) = (lr.node_uuid, lr.token.expect("token"));
    env.wait_state(id, "manageable").await;
    let provision = |target: &'static str| {
        let env = &env;
        async move {
            let (s, b) = env
                .api(
                    Method::PUT,
                    &format!("/v1/nodes/{id}/states/provision"),
                    Some(json!({ "target": target })),
                )
                .await;
            assert_eq!(s, 202, "{b}");
        }
    };
    provide_and_clean(&env, id, &token, provision("provide")).await;
    let (s, b) = env
        .api(
            Method::PATCH,
            &format!("/v1/nodes/{id}"),
            Some(json!([
                {"op": "add", "path": "/instance_info/image_source", "value": "http://127.0.0.1:9/os.raw.zst"},
                {"op": "add", "path": "/instance_info/image_checksum", "value": "ab".repeat(32)}
            ])),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    provision("active").await;
    let (cmd_id, _) = env.next_command(id, &token).await;
    env.wait_state(id, "wait call-back").await;

    let mut watch = Watch::start(&env.api, id);
    watch.expect_line("wait call-back -> active");
    const MIB: u64 = 1 << 20;
    assert_eq!(
        env.report(id, &token, cmd_id, progress(256 * MIB, 1024 * MIB))
            .await,
        204
    );
    let line = watch.expect_line("stream 25%");
    assert_eq!(
        line,
        "wait call-back -> active: stream 25% 256.0 MiB/1.0 GiB 250.0 MB/s ETA 0:06"
    );
    assert_eq!(
        env.report(id, &token, cmd_id, progress(768 * MIB, 1024 * MIB))
            .await,
        204
    );
    watch.expect_line("stream 75% 768.0 MiB/1.0 GiB");

    // `node show` has the same progress as a row of its own.
    let out = Process::new(INGOT)
        .args(["node", "show", &id.to_string(), "--url", &env.api])
        .output()
        .expect("ingot node show");
    assert!(out.status.success());
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains("\nprogress ") && shown.contains("stream 75% 768.0 MiB/1.0 GiB 250.0 MB/s"),
        "{shown}"
    );

    assert_eq!(env.report(id, &token, cmd_id, ok()).await, 204);
    watch.expect_line("active");
    let (code, err) = watch.finish();
    assert_eq!(code, Some(0), "{err}");

    // Undeploy with a failing wipe: watch ends non-zero and says why.
    provision("deleted").await;
    env.wait_state(id, "clean wait").await;
    // Cleaning booted the agent again: its new session has a new token.
    let (_, token) = env
        .session(&lookup_req(&["52:54:00:dd:00:01"], "W1", "uw1"))
        .await;
    let (cmd_id, _) = env.next_command(id, &token).await;
    let mut watch = Watch::start(&env.api, id);
    watch.expect_line("clean wait -> available");
    assert_eq!(
        env.report(id, &token, cmd_id, failed("wipe failed on /dev/vda", "EIO"))
            .await,
        204
    );
    watch.expect_line("clean failed");
    let (code, err) = watch.finish();
    assert_eq!(code, Some(1));
    assert!(
        err.contains("is clean failed") && err.contains("wipe failed on /dev/vda: EIO"),
        "{err}"
    );
}

/// `provide` through the agent's metadata wipe to `available`.
async fn provide_and_clean(
    env: &Env,
    id: Uuid,
    token: &str,
    provide: impl std::future::Future<Output = ()>,
) {
    provide.await;
    let (cmd_id, _) = env.next_command(id, token).await;
    env.wait_state(id, "clean wait").await;
    assert_eq!(env.report(id, token, cmd_id, wiped()).await, 204);
    env.wait_state(id, "available").await;
}

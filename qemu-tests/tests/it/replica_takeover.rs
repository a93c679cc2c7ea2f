//! Two controllers on one PostgreSQL and a real VM (issue 13): `ctl-a` runs the boot
//! network and owns the node, `ctl-b` is a replica (API and provisioning side only). The
//! agent learns both agent URLs from the iPXE script. While the agent writes the image,
//! `ctl-a` is SIGKILLed: `ctl-b` sees its heartbeat stop, adopts the wait (a `takeover`
//! event in the node's history), takes the agent's reports and result on its own URL, ends
//! the deploy `active` and powers the VM on its disk, which boots the image. `ctl-a` then
//! comes back, takes its share of the ring again, and undeploy cleans the node to
//! `available`. PostgreSQL runs on the host; the lab's controllers reach it through its
//! Unix socket (a namespace of its own has another loopback).

use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use qemu_tests::marker_disk::{self, BIOS_MARKER};
use qemu_tests::pg::PgServer;
use qemu_tests::rack::{Rack, RackOptions, Timeline};
use qemu_tests::vm::{Firmware, VmSpec};
use serde_json::Value;

const A: &str = "ctl-a";
const B: &str = "ctl-b";
/// `[conductor] heartbeat_timeout_secs`: how long a dead replica keeps its nodes.
const HEARTBEAT_TIMEOUT_SECS: u64 = 5;
/// The paced image server: the compressed image takes about 20 s, long enough to kill
/// the owner while the agent writes.
const SLOW_PORT: u16 = 8082;
const SLOW_RATE: u64 = 2 << 20;
const IMAGE_MIB: u64 = 64;
const LONG: Duration = Duration::from_secs(300);

/// Enrolls the machine until the ring gives the node to `ctl-a` (node UUIDs are random;
/// with two live conductors about half land on each), manages it; returns its UUID.
fn enroll_owned_by_a(rack: &Rack, m: &qemu_tests::rack::Machine) -> anyhow::Result<String> {
    for _ in 0..16 {
        let node = rack.enroll_machine(m)?;
        let owner = rack.node(&node)?["conductor"].clone();
        if owner == A {
            rack.manage(&node)?;
            return Ok(node);
        }
        ensure!(owner == B, "node {node} owned by {owner}, not {A} or {B}");
        rack.baremetal(&["node", "delete", &node])?;
    }
    bail!("16 nodes in a row hashed to {B}")
}

/// Waits until `/v1/conductors` shows `name` with `alive` == `alive`.
fn wait_conductor(rack: &Rack, name: &str, alive: bool) -> anyhow::Result<()> {
    qemu_tests::wait::until(
        Duration::from_secs(30),
        Duration::from_millis(250),
        &format!("conductor {name} alive={alive}"),
        || {
            let c = rack.api_get(&format!("/v1/conductors/{name}"))?;
            Ok(c.filter(|c| c["alive"] == alive).map(|_| ()))
        },
    )
}

/// The node's history events as (conductor, event_type, event).
fn history(rack: &Rack, node: &str) -> anyhow::Result<Vec<(String, String, String)>> {
    let h = rack
        .api_get(&format!("/v1/nodes/{node}/history"))?
        .context("GET history")?;
    Ok(h["history"]
        .as_array()
        .context("history list")?
        .iter()
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
            (s("conductor"), s("event_type"), s("event"))
        })
        .collect())
}

#[test]
fn a_deploy_finishes_under_the_surviving_replica_and_boots() -> anyhow::Result<()> {
    test_needs::need!(test_needs::LAB);
    let Some(pg) = PgServer::shared() else {
        return Ok(());
    };
    let mut rack = Rack::start(RackOptions {
        database: Some(pg.create_socket_database()),
        conductor_name: Some(A.to_owned()),
        conductor_extra: format!(
            "heartbeat_interval_secs = 1\nheartbeat_timeout_secs = {HEARTBEAT_TIMEOUT_SECS}"
        ),
        callback_timeout: Duration::from_secs(120),
        ..RackOptions::default()
    })?;
    let mut t = Timeline::new("replicas");
    let b_api = t.phase("start replica ctl-b", || {
        rack.start_replica(B, 6386, 8090, 8453)
    })?;
    wait_conductor(&rack, B, true)?;
    let disk = marker_disk::build(&rack.dir().join("image"), IMAGE_MIB)?;
    rack.publish(&disk.zst, "marker-disk.img.zst")?;
    let slow = format!(
        "{}/marker-disk.img.zst",
        rack.start_slow_image_server(SLOW_PORT, SLOW_RATE)?
    );
    let m = rack.add_machine(VmSpec::numbered(1, Firmware::Bios))?;
    let result = (|| -> anyhow::Result<()> {
        let node = t.phase("enroll (owned by ctl-a) + manage", || {
            enroll_owned_by_a(&rack, &m)
        })?;
        t.phase("provide (clean)", || rack.provide(&node))?;
        // The agent booted from ctl-a's iPXE script, which named both replicas.
        ensure!(
            m.serial().contains("replicas=2"),
            "the agent does not know both replicas:\n{}",
            qemu_tests::vm::tail(&m.serial(), 20)
        );
        rack.baremetal(&[
            "node",
            "set",
            &node,
            "--instance-info",
            &format!("image_source={slow}"),
            "--instance-info",
            &format!("image_checksum=sha256:{}", disk.zst_sha256),
        ])?;
        let progress = t.phase("deploy -> writing", || {
            rack.baremetal(&["node", "deploy", &node])?;
            wait_writing(&rack, &node)
        })?;
        ensure!(
            rack.node(&node)?["conductor"] == A,
            "the node moved off ctl-a before the kill"
        );
        let mark = m.serial_mark();
        let pid = rack.kill_controller()?;
        let killed = Instant::now();
        println!("[replicas] SIGKILL to ctl-a ({pid}) at progress {progress}");
        rack.use_api(&b_api);
        t.phase("takeover", || wait_conductor(&rack, A, false))?;
        let active = t.phase("deploy finishes under ctl-b", || {
            rack.wait_provision_state(&node, "active", LONG)
        })?;
        println!(
            "[replicas] active {:.1} s after the kill",
            killed.elapsed().as_secs_f64()
        );
        ensure!(active["conductor"] == B, "owner after the kill: {active}");
        ensure!(active["last_error"].is_null(), "{}", active["last_error"]);
        // The agent itself lost ctl-a and went on with ctl-b's agent URL.
        let moved = m
            .serial()
            .lines()
            .find(|l| l.contains("moving to the next one"))
            .map(str::to_owned)
            .context("the agent never moved to another controller")?;
        ensure!(moved.contains(":8453"), "moved elsewhere: {moved}");
        t.phase("boot from disk", || {
            m.wait_serial_after(mark, BIOS_MARKER, LONG)
        })?;
        let events = history(&rack, &node)?;
        let takeovers: Vec<_> = events.iter().filter(|e| e.1 == "takeover").collect();
        ensure!(
            takeovers.len() == 1 && takeovers[0].0 == B,
            "one takeover by ctl-b expected: {events:?}"
        );
        // From the takeover on, only ctl-b worked on the node.
        let after = events
            .iter()
            .skip_while(|e| e.1 != "takeover")
            .collect::<Vec<_>>();
        ensure!(
            after.iter().all(|e| e.0 == B),
            "events by another conductor after the takeover: {after:?}"
        );
        // ctl-a comes back (its DHCP serves the agent's next boot) and undeploy cleans.
        t.phase("restart ctl-a", || rack.restart_controller())?;
        wait_conductor(&rack, A, true)?;
        t.phase("undeploy (clean)", || {
            rack.baremetal(&["node", "undeploy", &node])?;
            rack.wait_provision_state(&node, "available", LONG)
        })?;
        rack.ensure_no_error(&node)?;
        for (name, log) in [(A, rack.ingot_log()), (B, rack.replica_log(B))] {
            ensure!(
                !rack.access().leaks_password(&log),
                "the API password is in {name}'s log"
            );
        }
        Ok(())
    })();
    let failures = match result {
        Ok(()) => Vec::new(),
        Err(e) => vec![format!(
            "{e:#}\n--- ctl-b log ---\n{}\n--- vm serial ---\n{}",
            qemu_tests::vm::tail(&rack.replica_log(B), 40),
            qemu_tests::vm::tail(&m.serial(), 30)
        )],
    };
    rack.conclude(&[t], &failures)
}

/// Waits until the agent reports written bytes for the node's deploy; returns the progress.
fn wait_writing(rack: &Rack, node: &str) -> anyhow::Result<Value> {
    qemu_tests::wait::until(
        LONG,
        Duration::from_millis(200),
        &format!("node {node}'s agent to write"),
        || {
            let n = rack.node(node)?;
            let p = &n["driver_internal_info"]["agent_progress"];
            let state = n["provision_state"].as_str().unwrap_or_default();
            ensure!(
                state == "deploying" || state == "wait call-back",
                "node {node} is {state:?} before its agent wrote: {}",
                n["last_error"]
            );
            Ok((p["bytes_written"].as_u64().unwrap_or(0) > 0).then(|| p.clone()))
        },
    )
}

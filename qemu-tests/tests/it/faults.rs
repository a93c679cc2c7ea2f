//! The fault scenarios of issue 6 on lab machines (`qemu` type, power over QMP) in one rack,
//! through the real `baremetal` CLI:
//!
//! 1. a deploy with a wrong sha256 fails (`deploy failed`, the mismatch in `last_error`) and
//!    leaves the disk, which held a bootable image before, with no boot sector and nothing
//!    blkid recognises; undeploy cleans the node back to `available`;
//! 2. a machine killed while its agent writes the image: `deploy failed` one callback
//!    timeout after its last heartbeat, then undeploy (the controller starts the machine
//!    again) cleans it back to `available`;
//! 3. `ingot serve` killed with SIGKILL while an agent writes and started again on the same
//!    database: the new run adopts the wait (the agent's session and command are in the
//!    database), the agent's result reaches it and the deploy finishes (`active`), no node
//!    is left in a transient or wait state, and undeploy cleans it back to `available`;
//! 4. a read-only disk: `provide` ends in `clean failed` (never `available`) with the cause
//!    in `last_error`;
//! 5. a deploy whose image write lasts longer than the callback timeout reaches `active`
//!    (the timeout counts from the agent's last heartbeat) and the machine boots its disk.
//!
//! 1 then 5, 2 and 4 run at once on three machines; 3 runs after them on the second
//! machine, alone (a restart would interrupt the others' steps).

use std::io::{Seek, SeekFrom, Write};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use qemu_tests::disk_check::{check_wiped, ensure_no_boot_sector, probe};
use qemu_tests::marker_disk::{self, BIOS_MARKER, MarkerDisk};
use qemu_tests::rack::{Machine, Rack, RackOptions, Timeline};
use qemu_tests::vm::{Firmware, VmSpec};
use serde_json::Value;

/// Size of the deploy image (raw); about 41 MiB compressed.
const IMAGE_MIB: u64 = 64;
/// `[conductor] callback_timeout_secs` of the rack: it also covers power-on to the agent's
/// first lookup, so it must be longer than an agent boot under TCG on a loaded machine
/// (three machines booting at once at load 5: up to 48 s for OVMF).
const CALLBACK_TIMEOUT: Duration = Duration::from_secs(75);
/// The paced image server: the compressed image takes about 20 s to download, so the
/// tests can act while the agent writes.
const SLOW_PORT: u16 = 8082;
const SLOW_RATE: u64 = 2 << 20;
/// Slower still: the download takes about 95 s, longer than the callback timeout.
const SLOWER_PORT: u16 = 8083;
const SLOWER_RATE: u64 = 448 << 10;
const LONG: Duration = Duration::from_secs(600);
/// States a node rests in (no task runs on it).
const AT_REST: &[&str] = &[
    "enroll",
    "manageable",
    "available",
    "active",
    "deploy failed",
    "clean failed",
    "inspect failed",
    "rescue failed",
    "error",
];

/// The image the machines deploy, at normal speed and paced.
struct Images {
    disk: MarkerDisk,
    fast: String,
    slow: String,
    slower: String,
}

/// Waits until the node rests, unlocked, in one of `want`; fails when it rests in another
/// state (a failed deploy keeps its target, so `wait_provision_state` does not fit).
fn wait_rest(rack: &Rack, node: &str, want: &[&str], timeout: Duration) -> anyhow::Result<Value> {
    let mut last_seen = String::new();
    let started = Instant::now();
    qemu_tests::wait::until(
        timeout,
        Duration::from_millis(250),
        &format!("node {node} to rest in {want:?}"),
        || {
            let n = rack.node(node)?;
            let state = n["provision_state"].as_str().unwrap_or_default().to_owned();
            if state != last_seen {
                println!(
                    "  [{:6.1} s] {node}: {state} (+{:.1} s)",
                    rack.elapsed().as_secs_f64(),
                    started.elapsed().as_secs_f64()
                );
                last_seen.clone_from(&state);
            }
            if !n["reservation"].is_null() {
                return Ok(None);
            }
            if want.contains(&state.as_str()) {
                return Ok(Some(n));
            }
            if AT_REST.contains(&state.as_str()) {
                bail!(
                    "node {node} rests in {state:?}, not in {want:?}: {}",
                    n["last_error"]
                );
            }
            Ok(None)
        },
    )
    .with_context(|| {
        format!(
            "ingot log:\n{}",
            qemu_tests::vm::tail(&rack.ingot_log(), 25)
        )
    })
}

/// Enroll, manage, provide (cleaning through the agent) -> `available`.
fn prepare(rack: &Rack, m: &Machine, t: &mut Timeline) -> anyhow::Result<String> {
    let node = t.phase("enroll + manage", || enroll_and_manage(rack, m))?;
    t.phase("provide (clean)", || rack.provide(&node))?;
    Ok(node)
}

/// Enroll (`qemu` type, node and port through the CLI) and manage.
fn enroll_and_manage(rack: &Rack, m: &Machine) -> anyhow::Result<String> {
    let node = rack.enroll_machine(m)?;
    rack.manage(&node)?;
    Ok(node)
}

fn set_image(rack: &Rack, node: &str, url: &str, sha256: &str) -> anyhow::Result<()> {
    rack.baremetal(&[
        "node",
        "set",
        node,
        "--instance-info",
        &format!("image_source={url}"),
        "--instance-info",
        &format!("image_checksum=sha256:{sha256}"),
    ])?;
    Ok(())
}

/// Waits until the agent reports written bytes for the node's current deploy; returns
/// the progress it showed.
fn wait_writing(rack: &Rack, node: &str) -> anyhow::Result<Value> {
    qemu_tests::wait::until(
        Duration::from_secs(300),
        Duration::from_millis(200),
        &format!("node {node}'s agent to write"),
        || {
            let n = rack.node(node)?;
            let p = &n["driver_internal_info"]["agent_progress"];
            let state = n["provision_state"].as_str().unwrap_or_default();
            if AT_REST.contains(&state) {
                bail!(
                    "node {node} rests in {state:?} before its agent wrote: {}",
                    n["last_error"]
                );
            }
            Ok((p["bytes_written"].as_u64().unwrap_or(0) > 0).then(|| p.clone()))
        },
    )
}

/// Undeploy from a failed or finished deploy: teardown, cleaning, `available`, and the
/// disk checked from the host.
fn undeploy(rack: &Rack, m: &Machine, node: &str, t: &mut Timeline) -> anyhow::Result<()> {
    t.phase("undeploy (clean) -> available", || {
        rack.baremetal(&["node", "undeploy", node])?;
        wait_rest(rack, node, &["available"], LONG)
    })?;
    let n = rack.node(node)?;
    ensure!(n["last_error"].is_null(), "last_error: {}", n["last_error"]);
    check_wiped(&m.disk, &[1 << 20])
}

/// 1: a wrong sha256. The disk holds a bootable image when the deploy starts.
fn checksum_mismatch(
    rack: &Rack,
    m: &Machine,
    images: &Images,
) -> anyhow::Result<(Timeline, String)> {
    let mut t = Timeline::new("1 checksum");
    let node = prepare(rack, m, &mut t)?;
    // An old OS on the disk (written from the host while the agent idles; it reads the
    // disk uncached).
    let old = std::fs::read(&images.disk.raw)?;
    let mut f = std::fs::OpenOptions::new().write(true).open(&m.disk)?;
    f.seek(SeekFrom::Start(0))?;
    f.write_all(&old)?;
    f.sync_all()?;
    drop(f);
    ensure!(
        probe(&m.disk, 0)?.is_some_and(|p| p.contains("PTTYPE=dos")),
        "the old image is not on the disk"
    );
    let mut wrong = images.disk.zst_sha256.clone();
    let flipped = if wrong.starts_with('0') { "1" } else { "0" };
    wrong.replace_range(0..1, flipped);
    set_image(rack, &node, &images.fast, &wrong)?;
    let failed = t.phase("deploy -> deploy failed", || {
        rack.baremetal(&["node", "deploy", &node])?;
        wait_rest(rack, &node, &["deploy failed"], LONG)
    })?;
    let err = failed["last_error"].as_str().unwrap_or_default();
    println!("[1 checksum] last_error: {err}");
    ensure!(
        err.contains("checksum mismatch") && err.contains(&wrong),
        "last_error does not name the mismatch: {err}"
    );
    ensure_no_boot_sector(&m.disk).context("after the failed deploy")?;
    ensure!(
        probe(&m.disk, 0)?.is_none(),
        "blkid still finds something at the start of the disk"
    );
    undeploy(rack, m, &node, &mut t)?;
    Ok((t, node))
}

/// 2: the machine dies while its agent writes.
fn machine_killed(rack: &Rack, m: &Machine, images: &Images) -> anyhow::Result<(Timeline, String)> {
    let mut t = Timeline::new("2 VM killed");
    let node = prepare(rack, m, &mut t)?;
    set_image(rack, &node, &images.slow, &images.disk.zst_sha256)?;
    let progress = t.phase("deploy -> writing", || {
        rack.baremetal(&["node", "deploy", &node])?;
        wait_writing(rack, &node)
    })?;
    let pid = m.qemu_pid().context("the machine does not run")?;
    m.kill();
    let killed = Instant::now();
    ensure!(m.qemu_pid().is_none(), "QEMU {pid} survived SIGKILL");
    println!("[2 VM killed] killed QEMU {pid} at progress {progress}");
    let failed = t.phase("kill -> deploy failed", || {
        wait_rest(rack, &node, &["deploy failed"], CALLBACK_TIMEOUT * 3)
    })?;
    let after = killed.elapsed();
    let err = failed["last_error"].as_str().unwrap_or_default();
    println!(
        "[2 VM killed] deploy failed {:.1} s after the kill: {err}",
        after.as_secs_f64()
    );
    ensure!(
        err.contains("Timeout reached while waiting for callback"),
        "last_error: {err}"
    );
    // The timeout counts from the last heartbeat (busy heartbeats every 5 s, progress
    // events more often), which came shortly before the kill.
    ensure!(
        after + Duration::from_secs(6) >= CALLBACK_TIMEOUT,
        "failed {after:?} after the kill: before the timeout ran out"
    );
    undeploy(rack, m, &node, &mut t)?;
    Ok((t, node))
}

/// 5: a write longer than the callback timeout: busy heartbeats keep the wait alive.
fn long_write(rack: &Rack, m: &Machine, node: &str, images: &Images) -> anyhow::Result<Timeline> {
    let mut t = Timeline::new("5 long write");
    set_image(rack, node, &images.slower, &images.disk.zst_sha256)?;
    let mark = m.serial_mark();
    let started = Instant::now();
    let active = t.phase("deploy (slow image) -> active", || {
        rack.baremetal(&["node", "deploy", node])?;
        wait_rest(rack, node, &["active"], LONG)
    })?;
    let took = started.elapsed();
    let result = &active["driver_internal_info"]["agent_last_result"];
    let write_ms = result["elapsed_ms"].as_u64().unwrap_or(0);
    println!(
        "[5 long write] active after {:.1} s, the agent wrote for {:.1} s (timeout {} s)",
        took.as_secs_f64(),
        write_ms as f64 / 1000.0,
        CALLBACK_TIMEOUT.as_secs()
    );
    ensure!(
        Duration::from_millis(write_ms) > CALLBACK_TIMEOUT,
        "the write took {write_ms} ms, not longer than the timeout: {result}"
    );
    t.phase("boot from disk", || {
        m.wait_serial_after(mark, BIOS_MARKER, Duration::from_secs(300))
    })?;
    Ok(t)
}

/// 4: cleaning on a write-protected disk.
fn readonly_disk(rack: &Rack, m: &Machine) -> anyhow::Result<Timeline> {
    let mut t = Timeline::new("4 read-only");
    let node = t.phase("enroll + manage", || enroll_and_manage(rack, m))?;
    let failed = t.phase("provide -> clean failed", || {
        rack.baremetal(&["node", "provide", &node])?;
        wait_rest(rack, &node, &["clean failed"], LONG)
    })?;
    let err = failed["last_error"].as_str().unwrap_or_default();
    println!("[4 read-only] last_error: {err}");
    let lower = err.to_lowercase();
    ensure!(
        lower.contains("read-only") || lower.contains("write-protected"),
        "last_error does not name the cause: {err}"
    );
    ensure!(
        lower.contains("/dev/"),
        "last_error does not name the disk: {err}"
    );
    // provide again is refused: only manage leads out of clean failed.
    ensure!(
        rack.baremetal(&["node", "provide", &node]).is_err(),
        "provide accepted from clean failed"
    );
    Ok(t)
}

/// 3: the controller is killed while the agent writes, and started again.
fn controller_killed(
    rack: &mut Rack,
    m: &Machine,
    node: &str,
    images: &Images,
) -> anyhow::Result<Timeline> {
    let mut t = Timeline::new("3 ctl killed");
    set_image(rack, node, &images.slow, &images.disk.zst_sha256)?;
    let progress = t.phase("deploy -> writing", || {
        rack.baremetal(&["node", "deploy", node])?;
        wait_writing(rack, node)
    })?;
    let pid = rack.kill_controller()?;
    println!("[3 ctl killed] SIGKILL to ingot serve {pid} at progress {progress}");
    ensure!(
        m.qemu_pid().is_some(),
        "the machine died with the controller"
    );
    t.phase("restart", || rack.restart_controller())?;
    let rack = &*rack;
    let settled = t.phase("settle", || {
        wait_rest(rack, node, &["active", "deploy failed"], LONG)
    })?;
    let state = settled["provision_state"].as_str().unwrap_or_default();
    let err = settled["last_error"].as_str().unwrap_or_default();
    println!("[3 ctl killed] after the restart: {state} ({err})");
    // The deploy survives the restart: the agent's result reaches the new run.
    ensure!(
        state == "active",
        "deploy did not finish after the restart: {state} ({err})"
    );
    let nodes = rack
        .api_get("/v1/nodes?fields=uuid,provision_state,reservation")?
        .context("listing nodes")?;
    for n in nodes["nodes"].as_array().context("node list")? {
        let s = n["provision_state"].as_str().unwrap_or_default();
        ensure!(
            AT_REST.contains(&s) && n["reservation"].is_null(),
            "node left in a transient state after the restart: {n}"
        );
    }
    undeploy(rack, m, node, &mut t)?;
    Ok(t)
}

fn report(
    r: std::thread::Result<anyhow::Result<Timeline>>,
    m: &Machine,
    timelines: &mut Vec<Timeline>,
    failures: &mut Vec<String>,
) {
    match r {
        Ok(Ok(t)) => timelines.push(t),
        Ok(Err(e)) => failures.push(format!(
            "{e:#}\n--- {} serial ---\n{}",
            m.spec.name,
            qemu_tests::vm::tail(&m.serial(), 30)
        )),
        Err(_) => failures.push(format!("{}: the scenario panicked", m.spec.name)),
    }
}

#[test]
fn deploy_and_clean_faults_on_lab_machines() -> anyhow::Result<()> {
    test_needs::need!(test_needs::LAB);
    let mut rack = Rack::start(RackOptions {
        callback_timeout: CALLBACK_TIMEOUT,
        ..RackOptions::default()
    })?;
    let disk = marker_disk::build(&rack.dir().join("image"), IMAGE_MIB)?;
    let fast = rack.publish(&disk.zst, "marker-disk.img.zst")?;
    let slow = format!(
        "{}/marker-disk.img.zst",
        rack.start_slow_image_server(SLOW_PORT, SLOW_RATE)?
    );
    let slower = format!(
        "{}/marker-disk.img.zst",
        rack.start_slow_image_server(SLOWER_PORT, SLOWER_RATE)?
    );
    let images = Images {
        disk,
        fast,
        slow,
        slower,
    };
    let m1 = rack.add_machine(VmSpec::numbered(1, Firmware::Bios))?;
    let m2 = rack.add_machine(VmSpec::numbered(2, Firmware::Uefi))?;
    let m3 = rack.add_machine(VmSpec {
        disk_readonly: true,
        ..VmSpec::numbered(3, Firmware::Bios)
    })?;

    let mut timelines = Vec::new();
    let mut failures = Vec::new();
    let mut node2 = None;
    {
        let (rack, images) = (&rack, &images);
        let (r1, r5, r2, r4) = std::thread::scope(|s| {
            let h1 = s.spawn(|| {
                let (t1, node) = checksum_mismatch(rack, &m1, images)?;
                Ok((t1, long_write(rack, &m1, &node, images)))
            });
            let h2 = s.spawn(|| machine_killed(rack, &m2, images));
            let h4 = s.spawn(|| readonly_disk(rack, &m3));
            let (r1, r5) = match h1.join() {
                Ok(Ok((t1, r5))) => (Ok(Ok(t1)), Some(r5)),
                Ok(Err(e)) => (Ok(Err(e)), None),
                Err(p) => (Err(p), None),
            };
            (r1, r5, h2.join(), h4.join())
        });
        let r2 = r2.map(|r| {
            r.map(|(t, node)| {
                node2 = Some(node);
                t
            })
        });
        report(r1, &m1, &mut timelines, &mut failures);
        if let Some(r5) = r5 {
            report(Ok(r5), &m1, &mut timelines, &mut failures);
        }
        report(r2, &m2, &mut timelines, &mut failures);
        report(r4, &m3, &mut timelines, &mut failures);
    }
    println!("load after scenarios 1, 5, 2, 4: {}", uptime());
    if let Some(node) = node2
        && failures.is_empty()
    {
        let r = controller_killed(&mut rack, &m2, &node, &images);
        report(Ok(r), &m2, &mut timelines, &mut failures);
        println!("load after scenario 3: {}", uptime());
    }
    rack.conclude(&timelines, &failures)
}

fn uptime() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_owned()
}

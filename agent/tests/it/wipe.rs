//! `wipe` on real loop devices carrying real signatures made by the real tools.

use std::path::Path;
use std::process::Command;

use agent::wipe::{wipe_all, wipe_all_with_progress, wipe_one};
use proto::WipeMode;

use crate::support::*;

fn wipefs_finds(dev: &Path) -> String {
    let out = Command::new("wipefs")
        .arg("-n")
        .arg(dev)
        .output()
        .expect("wipefs");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn blkid_finds(dev: &Path) -> Option<String> {
    let out = Command::new("blkid")
        .arg("-p")
        .arg(dev)
        .output()
        .expect("blkid");
    // blkid exits 2 when it finds nothing.
    (out.status.code() != Some(2)).then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Run a signature maker; Ok(false) when the tool or kernel support is missing here.
fn make(dev: &Path, what: &str) -> bool {
    let d = dev.to_str().expect("utf-8 path");
    let key = "/tmp/ingot-wipe-test.key";
    std::fs::write(key, "secret").expect("key");
    let cmd: Vec<&str> = match what {
        "ext4" => vec!["mkfs.ext4", "-q", "-F", d],
        "xfs" => vec!["mkfs.xfs", "-q", "-f", d],
        "swap" => vec!["mkswap", d],
        "lvm" => vec!["pvcreate", "-ff", "-y", d],
        "luks" => vec![
            "cryptsetup",
            "luksFormat",
            "--batch-mode",
            "--pbkdf",
            "pbkdf2",
            "--pbkdf-force-iterations",
            "1000",
            d,
            key,
        ],
        "md090" | "md12" => {
            let meta = if what == "md090" {
                "--metadata=0.90"
            } else {
                "--metadata=1.2"
            };
            let ok = Command::new("mdadm")
                .args([
                    "--create",
                    "/dev/md/ingotwipe",
                    "--run",
                    "--force",
                    "--level=1",
                    "--raid-devices=1",
                    meta,
                    d,
                ])
                .output()
                .is_ok_and(|o| o.status.success());
            let _ = Command::new("mdadm")
                .args(["--stop", "/dev/md/ingotwipe"])
                .output();
            if !ok {
                eprintln!(
                    "skipping {what}: mdadm could not create an array (no md driver in this kernel?)"
                );
            }
            return ok;
        }
        "gpt+ext4" => {
            sh_stdin(
                Command::new("sfdisk").arg("-q").arg(dev),
                "label: gpt\nstart=2048, size=65536, type=L\nstart=67584, size=65536, type=S\n",
            );
            vec!["mkfs.ext4", "-q", "-F", "-E", "offset=1048576", d, "32M"]
        }
        "dos" => {
            sh_stdin(
                Command::new("sfdisk").arg("-q").arg(dev),
                "label: dos\nstart=2048, size=65536, type=83\n",
            );
            return true;
        }
        other => panic!("unknown signature {other}"),
    };
    match Command::new(cmd[0]).args(&cmd[1..]).output() {
        Ok(o) if o.status.success() => true,
        Ok(o) => {
            eprintln!("skipping {what}: {}", String::from_utf8_lossy(&o.stderr));
            false
        }
        Err(e) => {
            eprintln!("skipping {what}: {e}");
            false
        }
    }
}

#[test]
fn metadata_wipe_clears_every_signature_wipefs_and_blkid_know() {
    test_needs::need!(test_needs::Need::Root, test_needs::Need::Program("losetup"));
    let _l = lock();
    let lo = LoopDev::new(320 * MIB, 512, false);
    let mut made = 0;
    for what in [
        "ext4", "xfs", "swap", "lvm", "luks", "md090", "md12", "gpt+ext4", "dos",
    ] {
        if !make(&lo.dev, what) {
            continue;
        }
        made += 1;
        assert!(
            !wipefs_finds(&lo.dev).is_empty() || blkid_finds(&lo.dev).is_some(),
            "{what}: nothing was created"
        );
        let r = wipe_one(&lo.dev, WipeMode::Metadata);
        assert!(r.ok, "{what}: {r:?}");
        assert!(!r.cleared.is_empty(), "{what}: nothing reported as cleared");
        assert_eq!(
            wipefs_finds(&lo.dev),
            "",
            "{what}: wipefs still finds signatures"
        );
        assert_eq!(
            blkid_finds(&lo.dev),
            None,
            "{what}: blkid still finds something"
        );
        // Partition contents are gone too, not only the table.
        let data = lo.read_all();
        assert!(
            data[1080 + MIB..1082 + MIB] != [0x53, 0xef],
            "{what}: partition ext4 magic survived"
        );
    }
    assert!(made >= 6, "only {made} signature kinds could be made here");
}

#[test]
fn full_wipe_zeroes_and_verifies_and_secure_falls_back_on_loop_devices() {
    test_needs::need!(test_needs::Need::Root, test_needs::Need::Program("losetup"));
    let _l = lock();
    let a = LoopDev::new(64 * MIB, 512, false);
    let b = LoopDev::new(48 * MIB, 4096, false);
    a.fill(0xee);
    b.fill(0x11);
    let sink = agent::events::CollectSink::default();
    let report = wipe_all_with_progress(
        &[a.dev.clone(), b.dev.clone()],
        WipeMode::Full,
        &sink,
        std::time::Duration::from_millis(1),
    );
    assert!(report.ok, "{report:?}");
    // Byte progress like write-image's: it only grows, and ends at both disks' size.
    let progress: Vec<proto::ProgressEvent> = sink
        .events
        .lock()
        .expect("events")
        .iter()
        .filter_map(|e| match e {
            proto::AgentEvent::Progress(p) => Some(p.clone()),
            _ => None,
        })
        .collect();
    let last = progress.last().expect("a progress event");
    assert_eq!(last.bytes_written, 112 * MIB as u64);
    assert_eq!(last.bytes_total, Some(112 * MIB as u64));
    assert!(
        progress
            .windows(2)
            .all(|w| w[0].bytes_written <= w[1].bytes_written)
    );
    for d in [&a, &b] {
        assert!(
            d.read_all().iter().all(|&x| x == 0),
            "{} not zeroed",
            d.dev.display()
        );
    }
    assert!(
        report
            .disks
            .iter()
            .all(|d| d.method.as_deref() == Some("write_zeroes")),
        "{report:?}"
    );

    // A loop device has no firmware erase: `secure` writes its markers, falls back to
    // zeroing, and proves every marker gone.
    a.fill(0xee);
    let r = wipe_one(&a.dev, WipeMode::Secure);
    assert!(r.ok, "{r:?}");
    assert_eq!(r.method.as_deref(), Some("write_zeroes"), "{r:?}");
    assert_eq!(
        r.cleared,
        [
            "marker@0",
            "marker@22368256",
            "marker@44736512",
            "marker@67104768"
        ]
    );
    assert!(a.read_all().iter().all(|&x| x == 0));
}

#[test]
fn read_only_device_fails_closed_with_a_per_disk_report() {
    test_needs::need!(test_needs::Need::Root, test_needs::Need::Program("losetup"));
    let _l = lock();
    let good = LoopDev::new(16 * MIB, 512, false);
    let ro = LoopDev::new(16 * MIB, 512, true);
    let report = wipe_all(&[good.dev.clone(), ro.dev.clone()], WipeMode::Metadata);
    assert!(!report.ok);
    assert!(report.disks[0].ok, "{report:?}");
    assert!(!report.disks[1].ok);
    assert!(
        report.disks[1]
            .error
            .as_deref()
            .is_some_and(|e| e.contains("read-only")),
        "{report:?}"
    );

    // The CLI exits non-zero and prints the report.
    let out = Command::new(env!("CARGO_BIN_EXE_ingot-agent"))
        .args(["wipe", "--mode", "metadata", "--device"])
        .arg(&good.dev)
        .arg("--device")
        .arg(&ro.dev)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let rep: proto::WipeReport = serde_json::from_slice(&out.stdout).expect("report json");
    assert_eq!(rep.disks.len(), 2);
    assert!(!rep.ok);
}

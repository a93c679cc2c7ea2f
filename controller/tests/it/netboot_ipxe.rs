//! Golden-file tests for the iPXE scripts (`tests/output/netboot/*.ipxe`).
//!
//! Update the files with `EXPECTORATE=overwrite cargo test -p controller --test it netboot_ipxe::`
//! and review the diff.

use std::path::PathBuf;

use controller::netboot::Platform;
use controller::netboot::ipxe::{AgentBoot, BootPlan, render};

fn check(name: &str, plan: &BootPlan) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/output/netboot")
        .join(format!("{name}.ipxe"));
    let actual = render(plan);
    if std::env::var("EXPECTORATE").as_deref() == Ok("overwrite") {
        std::fs::write(&path, &actual).expect("write golden file");
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with EXPECTORATE=overwrite)", path.display()));
    assert_eq!(
        actual,
        expected,
        "{name}: rendered script differs from {}",
        path.display()
    );
}

fn agent() -> AgentBoot {
    AgentBoot::new(
        "http://172.31.250.1:8080/boot/vmlinuz",
        "http://172.31.250.1:8080/boot/initramfs.cpio.zst",
        "http://172.31.250.1:8080",
        None,
    )
    .expect("valid agent boot")
}

#[test]
fn agent_for_unknown_machine() {
    check("agent", &BootPlan::Agent(agent()));
}

#[test]
fn agent_with_tls_fingerprint_and_extra_args() {
    // Kernel and initramfs stay on plain HTTP: Debian's iPXE trusts no CA of ours. Their
    // integrity comes from the agent checking the controller by the pinned fingerprint.
    let a = AgentBoot::new(
        "http://172.31.250.1:8080/boot/vmlinuz",
        "http://172.31.250.1:8080/boot/initramfs.cpio.zst",
        "https://172.31.250.1:8443",
        Some("9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08"),
    )
    .and_then(|a| a.with_extra_args(["panic=30"]))
    .expect("valid agent boot");
    check("agent-tls", &BootPlan::Agent(a));
}

#[test]
fn active_machine_boots_local_disk() {
    check(
        "local-disk-bios",
        &BootPlan::LocalDisk {
            platform: Some(Platform::Bios),
        },
    );
    check(
        "local-disk-efi",
        &BootPlan::LocalDisk {
            platform: Some(Platform::Efi),
        },
    );
    check(
        "local-disk-unknown-platform",
        &BootPlan::LocalDisk { platform: None },
    );
}

#[test]
fn anything_else_exits() {
    check("exit", &BootPlan::Exit);
}

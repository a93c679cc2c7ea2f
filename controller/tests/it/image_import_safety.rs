//! `ingot image import` (the binary) refuses images that make `qemu-img convert` read
//! another file (Ironic's LP#2071740 class): a qcow2 with a backing file, a qcow2 with an
//! external data file, a text VMDK descriptor with a FLAT extent, all pointing at a host
//! file that looks like a disk and carries a marker. Nothing is stored; a plain qcow2 still
//! imports. Oversized virtual disks and converted disks without a partition table are
//! refused too.

use std::path::Path;
use std::process::{Command, Output};

const INGOT: &str = env!("CARGO_BIN_EXE_ingot");
const MARKER: &[u8] = b"HOST-SECRET-MARKER";

fn ingot(state: &Path, args: &[&str]) -> Output {
    Command::new(INGOT)
        .arg("image")
        .args(args)
        .arg("--state-dir")
        .arg(state)
        .env_remove("INGOT_CONFIG")
        .env_remove("INGOT_STATE_DIR")
        .env_remove("INGOT_MAX_IMAGE_VIRTUAL_SIZE")
        .output()
        .expect("run ingot")
}

fn qemu_img(args: &[&str]) {
    let out = Command::new("qemu-img")
        .args(args)
        .output()
        .expect("run qemu-img (qemu-utils)");
    assert!(
        out.status.success(),
        "qemu-img {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A 1 MiB "disk" with an MBR boot signature and the marker: what an attacker wants served.
fn host_file(path: &Path) {
    let mut d = vec![0u8; 1 << 20];
    d[510] = 0x55;
    d[511] = 0xaa;
    d[4096..4096 + MARKER.len()].copy_from_slice(MARKER);
    std::fs::write(path, d).expect("write host file");
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Nothing in the store: no image, no work directory, and the list is empty.
fn assert_nothing_stored(state: &Path) {
    let images = state.join("images");
    let left: Vec<String> = std::fs::read_dir(&images)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "left in {}: {left:?}", images.display());
    let out = ingot(state, &["list", "--json"]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");
}

fn refused(state: &Path, image: &Path, extra: &[&str], want: &str) {
    let mut args = vec!["import", s(image)];
    args.extend_from_slice(extra);
    let out = ingot(state, &args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{} was imported", image.display());
    assert!(err.contains(want), "{}: {err}", image.display());
    assert_nothing_stored(state);
}

#[test]
fn images_that_reference_host_files_are_refused_and_nothing_is_stored() {
    test_needs::need!(test_needs::Need::Program("qemu-img"));
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let state = d.join("state");
    let host = d.join("host-secret.raw");
    host_file(&host);

    let backed = d.join("backed.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        s(&host),
        "-F",
        "raw",
        s(&backed),
    ]);
    refused(&state, &backed, &[], "has a backing file");

    // The data file is created by qemu-img, then made the host's copy.
    let data = d.join("external.data");
    let with_data = d.join("data-file.qcow2");
    let opt = format!("data_file={},data_file_raw=on", s(&data));
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        &opt,
        s(&with_data),
        "1M",
    ]);
    host_file(&data);
    refused(&state, &with_data, &[], "external data file");

    let vmdk = d.join("flat.vmdk");
    std::fs::write(
        &vmdk,
        format!(
            "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n\
             createType=\"monolithicFlat\"\n\nRW 2048 FLAT \"{}\" 0\n\n\
             ddb.adapterType = \"ide\"\n",
            s(&host)
        ),
    )
    .expect("write vmdk");
    refused(&state, &vmdk, &[], "text VMDK descriptor");

    // A virtual size beyond the limit (default 2 TiB; a tiny file).
    let huge = d.join("huge.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", s(&huge), "3T"]);
    refused(&state, &huge, &[], "over max_image_virtual_size");

    // A converted disk must start with a partition table.
    let blank = d.join("blank.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", s(&blank), "1M"]);
    refused(&state, &blank, &[], "no partition table");

    // A plain qcow2 of a disk is still imported, unless the flag's limit is lower.
    let plain = d.join("plain.qcow2");
    qemu_img(&[
        "convert",
        "-q",
        "-f",
        "raw",
        "-O",
        "qcow2",
        s(&host),
        s(&plain),
    ]);
    refused(
        &state,
        &plain,
        &["--max-image-virtual-size", "65536"],
        "over max_image_virtual_size",
    );
    let out = ingot(&state, &["import", s(&plain)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("imported plain (qcow2)"));
    assert!(state.join("images/plain/image.raw.zst").is_file());
    // So is a self-contained VMDK (its one extent is the file itself).
    let vmdk = d.join("sparse.vmdk");
    qemu_img(&[
        "convert",
        "-q",
        "-f",
        "raw",
        "-O",
        "vmdk",
        s(&host),
        s(&vmdk),
    ]);
    let out = ingot(&state, &["import", s(&vmdk)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("imported sparse (vmdk)"));
    // The state dir an import creates is as private as the one `ingot serve` creates.
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&state)
        .expect("state")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);
}

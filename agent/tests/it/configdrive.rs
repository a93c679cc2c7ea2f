//! Config drive: ISO9660 `config-2` read back by cloud-init's own parser, and
//! appended as a partition by `write-image --configdrive`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use agent::events::CollectSink;
use agent::image::fetch::FetchOptions;
use agent::image::{WriteImageOptions, write_image};

use crate::server::{Route, Server};
use crate::support::*;

const UUID: &str = "83679162-1378-4288-a2d4-70e13ec132aa";

fn build_iso(dir: &Path) -> std::path::PathBuf {
    let ud = dir.join("user_data");
    std::fs::write(&ud, "#cloud-config\nhostname: node-7\n").expect("user data");
    let out = dir.join("cd.iso");
    let meta = format!(
        r#"{{"uuid": "{UUID}", "hostname": "node-7", "name": "node-7", "public_keys": {{"default": "ssh-ed25519 AAAAC3Nza test@ingot"}}}}"#
    );
    let net = r#"{"links": [{"id": "eth0", "type": "phy", "ethernet_mac_address": "52:54:00:12:34:56"}], "networks": [{"id": "n0", "link": "eth0", "type": "ipv4_dhcp"}], "services": []}"#;
    sh(Command::new(env!("CARGO_BIN_EXE_ingot-agent"))
        .args([
            "configdrive",
            "--meta-data",
            &meta,
            "--network-data",
            net,
            "--vendor-data",
            r##"{"cloud-init": "#cloud-config\nruncmd: [touch /vendor-marker]\n", "ingot": {"rack": "r7"}}"##,
            "--user-data",
        ])
        .arg(&ud)
        .arg("--out")
        .arg(&out));
    out
}

/// Files of the ISO: mounted when the kernel has iso9660, else extracted with
/// xorriso (an independent ISO9660/Rock Ridge reader).
fn iso_tree(iso: &Path, into: &Path) -> Option<tempfile::TempDir> {
    let fs = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if fs.contains("iso9660") {
        let m = tempfile::tempdir().expect("mountpoint");
        sh(Command::new("mount")
            .args(["-t", "iso9660", "-o", "loop,ro"])
            .arg(iso)
            .arg(m.path()));
        return Some(m);
    }
    eprintln!("kernel has no iso9660 here; reading the image with xorriso");
    sh(Command::new("xorriso")
        .args(["-osirrox", "on", "-indev"])
        .arg(iso)
        .arg("-extract")
        .arg("/")
        .arg(into));
    None
}

#[test]
fn config_drive_is_read_by_cloud_init() {
    test_needs::need!(test_needs::Need::Root, test_needs::Need::Program("losetup"));
    let dir = tempfile::tempdir().expect("tempdir");
    let iso = build_iso(dir.path());
    let probe = sh(Command::new("blkid").args(["-p", "-o", "export"]).arg(&iso));
    assert!(
        probe.contains("TYPE=iso9660") && probe.contains("LABEL=config-2"),
        "{probe}"
    );

    let extracted = dir.path().join("tree");
    let mounted = iso_tree(&iso, &extracted);
    let root = mounted
        .as_ref()
        .map_or(extracted.clone(), |m| m.path().to_path_buf());
    for v in ["latest", agent::configdrive::VERSION_DIR] {
        assert!(
            root.join("openstack")
                .join(v)
                .join("meta_data.json")
                .exists(),
            "{v}"
        );
    }
    let script = "import json, sys\n\
from cloudinit.sources.DataSourceConfigDrive import read_config_drive\n\
r = read_config_drive(sys.argv[1])\n\
print(json.dumps({'md': r['metadata'], 'ud': r['userdata'].decode(), 'nd': r['networkdata'], 'vd': r.get('vendordata')}))\n";
    let out = Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(script)
        .arg(&root)
        .output()
        .expect("python3");
    if let Some(m) = &mounted {
        let _ = Command::new("umount").arg(m.path()).status();
    }
    assert!(
        out.status.success(),
        "cloud-init parser (Debian package cloud-init): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["md"]["instance-id"], UUID);
    assert_eq!(v["md"]["local-hostname"], "node-7");
    assert_eq!(
        v["md"]["public_keys"]["default"],
        "ssh-ed25519 AAAAC3Nza test@ingot"
    );
    assert_eq!(v["ud"], "#cloud-config\nhostname: node-7\n");
    assert_eq!(v["nd"]["networks"][0]["type"], "ipv4_dhcp");
    assert_eq!(v["vd"]["ingot"]["rack"], "r7", "vendor data: {}", v["vd"]);
    assert_eq!(
        v["vd"]["cloud-init"],
        "#cloud-config\nruncmd: [touch /vendor-marker]\n"
    );
}

#[test]
fn write_image_appends_the_config_drive_as_a_partition() {
    test_needs::need!(test_needs::Need::Root, test_needs::Need::Program("losetup"));
    let _l = lock();
    let dir = tempfile::tempdir().expect("tempdir");
    let iso = build_iso(dir.path());
    let iso_bytes = std::fs::read(&iso).expect("iso");
    let server = Server::start();
    let (img, files) = gpt_ext4_image(24 * MIB, 512);
    let z = compress("zstd", &img);
    let url = server.add(
        "/cd.zst",
        Route {
            data: z.clone().into(),
            range: true,
            ..Default::default()
        },
    );
    let lo = LoopDev::new(64 * MIB, 512, false);
    let opts = WriteImageOptions {
        url,
        checksum: sha256(&z).parse().expect("checksum"),
        device: lo.dev.clone(),
        configdrive: Some(iso),
        fetch: FetchOptions {
            stall_timeout: Duration::from_secs(5),
            ..FetchOptions::default()
        },
        direct: true,
        progress_interval: Duration::from_secs(1),
    };
    let r = write_image(&opts, &CollectSink::default())
        .unwrap_or_else(|(p, e)| panic!("{p:?}: {}", agent::error_chain(&e)));
    let off = r.configdrive_offset.expect("config drive offset");
    let json = sh(Command::new("sfdisk").arg("-J").arg(&lo.dev));
    let v: serde_json::Value = serde_json::from_str(&json).expect("sfdisk json");
    let parts = v["partitiontable"]["partitions"]
        .as_array()
        .expect("partitions");
    assert_eq!(parts.len(), 2, "{json}");
    assert_eq!(parts[1]["start"].as_u64(), Some(off / 512));
    assert_eq!(parts[1]["name"], "config-2");
    let disk = lo.read_all();
    let off = usize::try_from(off).expect("offset");
    assert_eq!(&disk[off..off + iso_bytes.len()], &iso_bytes[..]);
    let probe = sh(Command::new("blkid")
        .args(["-p", "-o", "export", "-O", &off.to_string()])
        .arg(&lo.dev));
    assert!(probe.contains("LABEL=config-2"), "{probe}");
    assert!(sh(Command::new("sfdisk").arg("--verify").arg(&lo.dev)).contains("No errors detected"));
    assert_eq!(read_from_partition(&lo.dev, &files[0].0), files[0].1);
}

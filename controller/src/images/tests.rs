//! Image store tests on real files, with real `qemu-img` for the qcow2 cases.

use std::path::Path;
use std::process::Command;

use sha2::{Digest, Sha256};

use super::compress::hex_lower;
use super::*;

/// A small raw "disk": an MBR boot signature, some data, a hole and a tail.
fn raw_disk(path: &Path, len: usize) -> Vec<u8> {
    let mut d = vec![0u8; len];
    d[510] = 0x55;
    d[511] = 0xaa;
    for (i, b) in d.iter_mut().enumerate().skip(4096).take(300_000) {
        *b = (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[2];
    }
    let n = d.len();
    d[n - 5..].copy_from_slice(b"TAIL!");
    std::fs::write(path, &d).expect("write raw disk");
    d
}

fn qcow2_from(raw: &Path, out: &Path) {
    let st = Command::new("qemu-img")
        .args(["convert", "-q", "-f", "raw", "-O", "qcow2"])
        .arg(raw)
        .arg(out)
        .status()
        .expect("run qemu-img (install qemu-utils)");
    assert!(st.success());
}

fn leftovers(store: &ImageStore) -> Vec<String> {
    std::fs::read_dir(store.dir())
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default()
}

fn check_stored(store: &ImageStore, rec: &ImageRecord, raw: &[u8]) {
    let stored = std::fs::read(store.data_path(&rec.name).expect("path")).expect("read data");
    assert_eq!(rec.stored_size, stored.len() as u64);
    assert_eq!(rec.sha256, hex_lower(&Sha256::digest(&stored)));
    assert_eq!(rec.size, raw.len() as u64);
    assert_eq!(rec.raw_sha256, hex_lower(&Sha256::digest(raw)));
    assert_eq!(zstd::decode_all(stored.as_slice()).expect("zstd"), raw);
}

#[test]
fn raw_and_qcow2_imports_list_and_delete() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = ImageStore::new(&dir.path().join("state"));
    assert_eq!(store.list().expect("empty list"), vec![]);
    let raw_path = dir.path().join("disk.raw");
    let raw = raw_disk(&raw_path, 3 << 20);
    let opts = ImportOptions::default();

    let rec = store.import(&raw_path, None, &opts).expect("raw import");
    assert_eq!(
        (rec.name.as_str(), rec.source_format.as_str()),
        ("disk", "raw")
    );
    check_stored(&store, &rec, &raw);

    let q = dir.path().join("My Disk.qcow2");
    qcow2_from(&raw_path, &q);
    let rec2 = store.import(&q, None, &opts).expect("qcow2 import");
    assert_eq!(rec2.name, "My-Disk");
    assert_eq!(rec2.source_format, "qcow2");
    check_stored(&store, &rec2, &raw);
    assert_eq!(rec2.raw_sha256, rec.raw_sha256);

    let names: Vec<String> = store
        .list()
        .expect("list")
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, ["My-Disk", "disk"]);
    assert_eq!(store.get("disk").expect("get"), rec);

    let err = store.import(&q, Some("disk"), &opts).expect_err("taken");
    assert!(
        matches!(err, ImageError::NameTaken(ref n) if n == "disk"),
        "{err}"
    );

    store.delete("disk").expect("delete");
    assert!(matches!(store.get("disk"), Err(ImageError::NotFound(_))));
    assert!(matches!(store.delete("disk"), Err(ImageError::NotFound(_))));
    let names: Vec<String> = store
        .list()
        .expect("list")
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, ["My-Disk"]);
    // The name is free again.
    store
        .import(&raw_path, Some("disk"), &opts)
        .expect("re-import");
    assert!(leftovers(&store).is_empty(), "{:?}", leftovers(&store));
}

#[test]
fn clear_errors_and_nothing_left_behind() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = ImageStore::new(dir.path());
    let opts = ImportOptions::default();

    let missing = dir.path().join("nope.qcow2");
    let err = store.import(&missing, None, &opts).expect_err("missing");
    assert!(matches!(err, ImageError::SourceMissing { .. }));
    assert!(
        err.to_string().contains("nope.qcow2: no such file"),
        "{err}"
    );

    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "hello, this is not a disk\n".repeat(100)).expect("write");
    let err = store.import(&text, None, &opts).expect_err("unknown");
    assert!(err.to_string().contains("unknown format"), "{err}");

    let zst = dir.path().join("disk.raw.zst");
    std::fs::write(&zst, zstd::encode_all(&[0u8; 4096][..], 3).expect("zstd")).expect("write");
    let err = store.import(&zst, None, &opts).expect_err("compressed");
    assert!(err.to_string().contains("decompress it first"), "{err}");

    let raw_path = dir.path().join("disk.raw");
    raw_disk(&raw_path, 1 << 20);
    let err = store
        .import(&raw_path, Some("../escape"), &opts)
        .expect_err("bad name");
    assert!(matches!(err, ImageError::InvalidName { .. }));

    let q = dir.path().join("disk.qcow2");
    qcow2_from(&raw_path, &q);
    let no_qemu = ImportOptions {
        qemu_img: dir.path().join("no-such-qemu-img"),
        ..ImportOptions::default()
    };
    let err = store.import(&q, None, &no_qemu).expect_err("no qemu-img");
    assert!(matches!(
        err,
        ImageError::QemuImgMissing { format: "qcow2" }
    ));
    assert!(err.to_string().contains("qemu-utils"), "{err}");

    // A qcow2 with an impossible cluster size: qemu-img (info, before any conversion)
    // fails, the import leaves nothing.
    let mut bad = std::fs::read(&q).expect("read");
    bad[20..24].copy_from_slice(&99u32.to_be_bytes());
    let broken = dir.path().join("broken.qcow2");
    std::fs::write(&broken, &bad).expect("write");
    let err = store
        .import(&broken, None, &opts)
        .expect_err("convert fails");
    assert!(matches!(err, ImageError::Inspect { .. }), "{err}");
    assert_eq!(store.list().expect("list"), vec![]);
    assert!(leftovers(&store).is_empty(), "{:?}", leftovers(&store));
    assert!(!store.dir().join("broken").exists());
}

#[test]
fn stale_import_dirs_are_swept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = ImageStore::new(dir.path());
    std::fs::create_dir_all(store.dir().join(".import-999999999-abc")).expect("mkdir");
    std::fs::create_dir_all(store.dir().join(".delete-x-abc")).expect("mkdir");
    let live = format!(".import-{}-live", std::process::id());
    std::fs::create_dir_all(store.dir().join(&live)).expect("mkdir");
    let raw_path = dir.path().join("d.img");
    raw_disk(&raw_path, 1 << 20);
    store
        .import(&raw_path, None, &ImportOptions::default())
        .expect("import");
    assert_eq!(leftovers(&store), vec![live]);
}

#[test]
fn default_names() {
    assert_eq!(default_name(Path::new("/x/debian-12.qcow2")), "debian-12");
    assert_eq!(default_name(Path::new("debian-12.raw")), "debian-12");
    assert_eq!(default_name(Path::new("a b.img.raw")), "a-b");
    assert_eq!(default_name(Path::new(".hidden.raw")), "hidden");
    assert_eq!(default_name(Path::new("disk.iso")), "disk.iso");
    assert!(validate_name("debian-12_v1.0").is_ok());
    assert!(validate_name("").is_err());
    assert!(validate_name(".x").is_err());
    assert!(validate_name("a/b").is_err());
    assert!(validate_name(&"a".repeat(65)).is_err());
}

//! Test support: loop devices and temp files that clean up on drop, and
//! images built with the real tools (sfdisk, mkfs.ext4).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

pub const MIB: usize = 1 << 20;

/// Serializes tests that use loop devices.
pub static LOOP: Mutex<()> = Mutex::new(());

pub fn lock() -> std::sync::MutexGuard<'static, ()> {
    LOOP.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn sh(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn sh_stdin(cmd: &mut Command, input: &str) -> String {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("stdin write");
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A loop device over a sparse backing file; detached and removed on drop.
pub struct LoopDev {
    pub dev: PathBuf,
    _file: tempfile::NamedTempFile,
}

impl LoopDev {
    pub fn new(size: usize, sector: u32, read_only: bool) -> LoopDev {
        let file = tempfile::NamedTempFile::new_in("/var/tmp").expect("backing file");
        file.as_file().set_len(size as u64).expect("size");
        let mut c = Command::new("losetup");
        c.args(["-f", "--show", "-b", &sector.to_string()]);
        if read_only {
            c.arg("-r");
        }
        let dev = PathBuf::from(sh(c.arg(file.path())).trim());
        LoopDev { dev, _file: file }
    }

    pub fn read_all(&self) -> Vec<u8> {
        std::fs::read(&self.dev).expect("read loop device")
    }

    pub fn fill(&self, byte: u8) {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&self.dev)
            .expect("open");
        let len = std::fs::metadata(self._file.path()).expect("meta").len() as usize;
        let buf = vec![byte; MIB];
        use std::os::unix::fs::FileExt;
        for off in (0..len).step_by(MIB) {
            f.write_all_at(&buf, off as u64).expect("fill");
        }
        f.sync_all().expect("sync");
    }
}

impl Drop for LoopDev {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
    }
}

struct Detach(PathBuf);
impl Drop for Detach {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
    }
}

/// A GPT disk image of `size` bytes with one ext4 partition holding files.
/// Returns the image and the files (name, contents) inside the filesystem.
pub fn gpt_ext4_image(size: usize, sector: usize) -> (Vec<u8>, Vec<(String, Vec<u8>)>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("root");
    std::fs::create_dir_all(src.join("etc")).expect("mkdir");
    let mut files = vec![("etc/hostname".to_string(), b"ingot-test\n".to_vec())];
    let mut x = 0x1234_5678u32;
    let mut noise = Vec::with_capacity(3 * MIB);
    for _ in 0..(3 * MIB / 4) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        noise.extend_from_slice(&(x % 7).to_le_bytes());
    }
    files.push(("payload.bin".to_string(), noise));
    for (name, data) in &files {
        std::fs::write(src.join(name), data).expect("write file");
    }
    let fs_len = size - 2 * MIB;
    let fs = dir.path().join("fs.img");
    sh(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "root", "-d"])
        .arg(&src)
        .arg(&fs)
        .arg(format!("{}k", fs_len / 1024)));
    let disk = dir.path().join("disk.img");
    std::fs::File::create(&disk)
        .expect("disk")
        .set_len(size as u64)
        .expect("len");
    // sfdisk takes the sector size from the device, so partition through a
    // loop device with the wanted logical sector size.
    let lo = Detach(PathBuf::from(
        sh(Command::new("losetup")
            .args(["-f", "--show", "-b", &sector.to_string()])
            .arg(&disk))
        .trim(),
    ));
    sh_stdin(
        Command::new("sfdisk").arg("-q").arg(&lo.0),
        &format!(
            "label: gpt\nstart={}, size={}, type=L, name=root\n",
            MIB / sector,
            fs_len / sector
        ),
    );
    drop(lo);
    let mut img = std::fs::read(&disk).expect("read disk");
    let fsdata = std::fs::read(&fs).expect("read fs");
    img[MIB..MIB + fsdata.len()].copy_from_slice(&fsdata);
    (img, files)
}

pub fn compress(format: &str, data: &[u8]) -> Vec<u8> {
    match format {
        "raw" => data.to_vec(),
        "zstd" => zstd::encode_all(data, 3).expect("zstd"),
        "gzip" => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(data).expect("gzip");
            e.finish().expect("gzip")
        }
        "xz" => {
            let mut e = liblzma::write::XzEncoder::new(Vec::new(), 1);
            e.write_all(data).expect("xz");
            e.finish().expect("xz")
        }
        other => panic!("unknown format {other}"),
    }
}

pub fn sha256(data: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

/// No partition table that blkid or sfdisk recognises.
pub fn assert_no_partition_table(dev: &Path) {
    let out = Command::new("blkid")
        .arg("-p")
        .arg(dev)
        .output()
        .expect("blkid");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.contains("PTTYPE"),
        "blkid still finds a table on {}: {text}",
        dev.display()
    );
    let out = Command::new("sfdisk")
        .arg("-d")
        .arg(dev)
        .output()
        .expect("sfdisk");
    assert!(
        !out.status.success(),
        "sfdisk still reads a table: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let data = std::fs::read(dev).expect("read");
    assert!(data[..MIB].iter().all(|&b| b == 0), "first MiB is not zero");
}

/// Mount partition 1 (via an offset loop) read-only and read a file.
pub fn read_from_partition(dev: &Path, file: &str) -> Vec<u8> {
    let json = sh(Command::new("sfdisk").arg("-J").arg(dev));
    let v: serde_json::Value = serde_json::from_str(&json).expect("sfdisk json");
    let p = &v["partitiontable"]["partitions"][0];
    let sector = v["partitiontable"]["sectorsize"].as_u64().unwrap_or(512);
    let (start, size) = (
        p["start"].as_u64().expect("start") * sector,
        p["size"].as_u64().expect("size") * sector,
    );
    let mnt = tempfile::tempdir().expect("mountpoint");
    sh(Command::new("mount")
        .args(["-o", &format!("ro,loop,offset={start},sizelimit={size}")])
        .arg(dev)
        .arg(mnt.path()));
    let data = std::fs::read(mnt.path().join(file));
    let _ = Command::new("umount").arg(mnt.path()).status();
    data.expect("file readable on the mounted partition")
}

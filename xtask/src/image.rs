//! `cargo xtask image debian [--force] [--mirror URL]`: builds a small Debian 12 disk image
//! with cloud-init (ConfigDrive first) and openssh-server that boots under SeaBIOS and OVMF.
//!
//! Output in `target/images/`: `debian-12.raw` (sparse, 1.5 GiB virtual), `debian-12.qcow2`,
//! and `debian-12.recipe` (the recipe hash). A second run with the same recipe and mirror
//! does nothing; downloaded packages are kept in `target/images/cache/` between builds.
//!
//! Steps (root: loop devices, mounts, chroot): GPT with a BIOS boot partition, an ESP and
//! the root file system ([`recipe::SFDISK_SCRIPT`]); `debootstrap --variant=minbase` from
//! the host's Debian mirror into the mounted root; the recipe's files and packages in a
//! chroot; grub for i386-pc with `grub-install` on the loop device and for x86_64-efi as the
//! removable `EFI/BOOT/BOOTX64.EFI` (made with `grub-mkimage` and copied with mtools, so the
//! host needs no vfat driver); host keys, machine-id and package lists removed; free blocks
//! trimmed so the sparse file and its compressed forms stay small.

pub mod recipe;
mod sys;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};

use sys::{Cleanup, cmd, output, run};

/// Options of the task.
#[derive(Debug, Default)]
struct Options {
    force: bool,
    mirror: Option<String>,
}

fn parse(args: &[String]) -> anyhow::Result<Options> {
    let mut o = Options::default();
    let mut it = args.iter();
    match it.next().map(String::as_str) {
        Some("debian") => {}
        other => bail!("usage: cargo xtask image debian [--force] [--mirror URL] (got {other:?})"),
    }
    while let Some(a) = it.next() {
        match a.as_str() {
            "--force" => o.force = true,
            "--mirror" => o.mirror = Some(it.next().context("--mirror needs a URL")?.clone()),
            other => bail!("unknown argument {other} (use --force, --mirror URL)"),
        }
    }
    Ok(o)
}

/// Where the image and its cache live.
pub fn images_dir() -> PathBuf {
    crate::paths::target_dir().join("images")
}

/// The mirror the host's apt uses, else Debian's default.
fn host_mirror() -> String {
    let mut texts = Vec::new();
    if let Ok(t) = std::fs::read_to_string("/etc/apt/sources.list") {
        texts.push(t);
    }
    if let Ok(rd) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut paths: Vec<PathBuf> = rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "sources" || e == "list"))
            .collect();
        paths.sort();
        texts.extend(paths.iter().filter_map(|p| std::fs::read_to_string(p).ok()));
    }
    recipe::mirror_from_sources(&texts).unwrap_or_else(|| recipe::DEFAULT_MIRROR.to_owned())
}

pub fn run_task(args: &[String]) -> anyhow::Result<()> {
    let opts = parse(args)?;
    let mirror = opts.mirror.clone().unwrap_or_else(host_mirror);
    let dir = images_dir();
    let raw = dir.join(format!("{}.raw", recipe::NAME));
    let qcow2 = dir.join(format!("{}.qcow2", recipe::NAME));
    let stamp = dir.join(format!("{}.recipe", recipe::NAME));
    let hash = recipe::recipe_hash(&mirror);
    let cached = || {
        std::fs::read_to_string(&stamp).is_ok_and(|s| s.trim() == hash)
            && raw.is_file()
            && qcow2.is_file()
    };
    if cached() && !opts.force {
        println!(
            "image: {} is up to date (recipe {})",
            raw.display(),
            &hash[..12]
        );
        return Ok(());
    }
    sys::require_root()?;
    if let Some(result) = sys::reexec_in_private_mount_ns(args) {
        return result;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    // One build at a time (they share the work files); a build that finished while we
    // waited is used as it is.
    let lock_path = dir.join(format!(".{}.lock", recipe::NAME));
    let _lock = std::fs::File::create(&lock_path)
        .and_then(|f| f.lock().map(|()| f))
        .with_context(|| format!("locking {}", lock_path.display()))?;
    if cached() && !opts.force {
        println!("image: {} was built meanwhile", raw.display());
        return Ok(());
    }
    sys::require_tools(&[
        ("debootstrap", "debootstrap"),
        ("sfdisk", "fdisk"),
        ("losetup", "mount"),
        ("mkfs.ext4", "e2fsprogs"),
        ("mkfs.vfat", "dosfstools"),
        ("mcopy", "mtools"),
        ("fstrim", "util-linux"),
        ("qemu-img", "qemu-utils"),
        ("chroot", "coreutils"),
    ])?;
    let started = Instant::now();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let _ = std::fs::remove_file(&stamp);
    let tmp_raw = dir.join(format!(".{}.raw.tmp", recipe::NAME));
    let mnt = dir.join(format!(".{}.mnt", recipe::NAME));
    let _ = std::fs::remove_file(&tmp_raw);
    println!(
        "image: building {} from {mirror} ({})",
        raw.display(),
        recipe::SUITE
    );
    build(&tmp_raw, &mnt, &dir.join("cache"), &mirror)
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp_raw);
        })
        .context("building the Debian image")?;
    std::fs::rename(&tmp_raw, &raw).context("moving the image into place")?;
    let tmp_q = dir.join(format!(".{}.qcow2.tmp", recipe::NAME));
    let _ = std::fs::remove_file(&tmp_q);
    run(
        cmd("qemu-img", &["convert", "-q", "-f", "raw", "-O", "qcow2"])
            .arg(&raw)
            .arg(&tmp_q),
    )?;
    std::fs::rename(&tmp_q, &qcow2).context("moving the qcow2 into place")?;
    std::fs::write(&stamp, format!("{hash}\n")).context("writing the recipe stamp")?;
    let secs = started.elapsed().as_secs_f64();
    let allocated = allocated_bytes(&raw)?;
    let qsize = std::fs::metadata(&qcow2)?.len();
    println!(
        "image: built in {secs:.0} s: {} ({} MiB virtual, {} MiB allocated), {} ({} MiB)",
        raw.display(),
        recipe::DISK_BYTES >> 20,
        allocated >> 20,
        qcow2.display(),
        qsize >> 20
    );
    Ok(())
}

/// Bytes a sparse file really uses.
fn allocated_bytes(path: &Path) -> anyhow::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    Ok(std::fs::metadata(path)?.blocks() * 512)
}

fn build(raw: &Path, mnt: &Path, cache: &Path, mirror: &str) -> anyhow::Result<()> {
    let step = |name: &str, t: Instant| {
        println!("image: {name} done at {:.0} s", t.elapsed().as_secs_f64())
    };
    let t = Instant::now();
    let f = std::fs::File::create(raw).context("creating the raw image")?;
    f.set_len(recipe::DISK_BYTES)?;
    drop(f);
    let mut sf = cmd("sfdisk", &["--quiet", "--no-reread", "--no-tell-kernel"]);
    sf.arg(raw).stdin(std::process::Stdio::piped());
    let mut child = sf.spawn().context("running sfdisk")?;
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().context("sfdisk stdin")?;
        stdin.write_all(recipe::SFDISK_SCRIPT.as_bytes())?;
    }
    if !child.wait()?.success() {
        bail!("sfdisk failed to write the partition table");
    }

    let mut disk = Cleanup::default();
    let dev = disk.attach(raw)?;
    let part = |n: u32| format!("{dev}p{n}");
    sys::wait_for_partition(&dev, &part(recipe::PART_ROOT))?;
    run(cmd(
        "mkfs.ext4",
        &[
            "-q",
            "-F",
            "-L",
            recipe::ROOT_LABEL,
            "-m",
            "1",
            "-E",
            "lazy_itable_init=0,lazy_journal_init=0",
            &part(recipe::PART_ROOT),
        ],
    ))?;
    run(cmd(
        "mkfs.vfat",
        &["-n", recipe::ESP_LABEL, &part(recipe::PART_ESP)],
    ))
    .map(drop)?;
    let mut c = Cleanup::default();
    c.mount(&[], &part(recipe::PART_ROOT), mnt)?;
    step("partitions and file systems", t);

    let debs = cache.join("debootstrap");
    let apt_cache = cache.join("apt");
    std::fs::create_dir_all(&debs)?;
    std::fs::create_dir_all(apt_cache.join("partial"))?;
    let debs = std::fs::canonicalize(&debs)?;
    run(cmd(
        "debootstrap",
        &[
            "--variant=minbase",
            "--components=main",
            &format!("--cache-dir={}", debs.display()),
            recipe::SUITE,
        ],
    )
    .arg(mnt)
    .arg(mirror))?;
    step("debootstrap", t);

    // The chroot's mounts go before the image is sealed (the apt cache bind hides what
    // debootstrap left under it).
    let mut chroot_mounts = Cleanup::default();
    for (src, dst, args) in [
        ("proc", "proc", &["-t", "proc"][..]),
        ("sysfs", "sys", &["-t", "sysfs"][..]),
        ("/dev", "dev", &["--bind"][..]),
        ("devpts", "dev/pts", &["-t", "devpts"][..]),
    ] {
        chroot_mounts.mount(args, src, &mnt.join(dst))?;
    }
    chroot_mounts.mount(
        &["--bind"],
        &apt_cache.display().to_string(),
        &mnt.join("var/cache/apt/archives"),
    )?;
    write(mnt, "/usr/sbin/policy-rc.d", 0o755, "#!/bin/sh\nexit 101\n")?;
    let resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let _ = std::fs::remove_file(mnt.join("etc/resolv.conf"));
    write(mnt, "/etc/resolv.conf", 0o644, &resolv)?;
    let security = format!("{}-security", mirror.trim_end_matches('/'));
    let suite = recipe::SUITE;
    write(
        mnt,
        "/etc/apt/sources.list",
        0o644,
        &format!(
            "deb {mirror} {suite} main\ndeb {mirror} {suite}-updates main\n\
             deb {security} {suite}-security main\n"
        ),
    )?;
    for (path, mode, content) in recipe::files() {
        write(mnt, path, mode, &content)?;
    }
    chroot(mnt, &["apt-get", "-q", "update"])?;
    let mut install = vec![
        "apt-get",
        "-q",
        "-y",
        "--no-install-recommends",
        "-o",
        "Dpkg::Options::=--force-confold",
        "install",
    ];
    install.extend_from_slice(recipe::PACKAGES);
    chroot(mnt, &install)?;
    step("packages", t);

    install_grub(mnt, &dev, &part(recipe::PART_ESP))?;
    step("grub (i386-pc and x86_64-efi)", t);

    chroot_mounts.release()?;
    seal(mnt)?;
    // Freed blocks are trimmed only once their deletion is committed: sync first.
    run(cmd("sync", &[mnt]))?;
    run(cmd("fstrim", &[mnt]))?;
    let used = output(cmd("df", &["--output=used", "-B1M"]).arg(mnt))?;
    println!(
        "image: root file system uses {} MiB",
        used.lines().nth(1).unwrap_or("?").trim()
    );
    c.release()?;
    // Check the file system (and settle its journal) before the loop device goes.
    let fsck = cmd("e2fsck", &["-f", "-y", &part(recipe::PART_ROOT)])
        .stdin(std::process::Stdio::null())
        .status()
        .context("running e2fsck")?;
    if !matches!(fsck.code(), Some(0 | 1)) {
        bail!("e2fsck found errors it could not fix in the root file system ({fsck})");
    }
    run(cmd("blockdev", &["--flushbufs", &dev]))?;
    disk.release()?;
    step("sealed", t);
    Ok(())
}

/// grub for both firmwares, reading the same `/boot/grub/grub.cfg`.
fn install_grub(mnt: &Path, dev: &str, esp: &str) -> anyhow::Result<()> {
    write(mnt, "/boot/grub/grub.cfg", 0o644, &recipe::grub_cfg())?;
    chroot(
        mnt,
        &[
            "grub-install",
            "--target=i386-pc",
            "--boot-directory=/boot",
            "--modules=part_gpt ext2",
            dev,
        ],
    )?;
    write(
        mnt,
        "/tmp/grub-early.cfg",
        0o644,
        &recipe::grub_efi_early_cfg(),
    )?;
    let mut mkimage = vec![
        "grub-mkimage",
        "-O",
        "x86_64-efi",
        "-o",
        "/tmp/BOOTX64.EFI",
        "-p",
        "/boot/grub",
        "-c",
        "/tmp/grub-early.cfg",
    ];
    mkimage.extend_from_slice(recipe::GRUB_EFI_MODULES);
    chroot(mnt, &mkimage)?;
    // Modules the EFI loader may `insmod` later come from the root file system.
    chroot(
        mnt,
        &["cp", "-r", "/usr/lib/grub/x86_64-efi", "/boot/grub/"],
    )?;
    run(cmd("mmd", &["-i", esp, "::/EFI", "::/EFI/BOOT"]))?;
    run(cmd("mcopy", &["-i", esp])
        .arg(mnt.join("tmp/BOOTX64.EFI"))
        .arg("::/EFI/BOOT/BOOTX64.EFI"))?;
    Ok(())
}

/// Removes what must differ per machine or is not needed at run time.
fn seal(mnt: &Path) -> anyhow::Result<()> {
    for pattern in recipe::REMOVE {
        remove_glob(mnt, pattern)?;
    }
    // Empty machine-id: systemd makes a fresh one at first boot.
    write(mnt, "/etc/machine-id", 0o444, "")?;
    write(mnt, "/etc/resolv.conf", 0o644, "")?;
    std::fs::remove_file(mnt.join("usr/sbin/policy-rc.d")).context("removing policy-rc.d")?;
    for needed in ["vmlinuz", "initrd.img", "boot/grub/i386-pc/core.img"] {
        if !mnt.join(needed).exists() {
            bail!("/{needed} is missing from the image");
        }
    }
    Ok(())
}

/// Removes `root` + `pattern`, where the last component may hold one `*`.
fn remove_glob(root: &Path, pattern: &str) -> anyhow::Result<()> {
    let rel = pattern.trim_start_matches('/');
    let (parent, leaf) = rel.rsplit_once('/').unwrap_or(("", rel));
    let dir = root.join(parent);
    let (pre, post) = leaf.split_once('*').unwrap_or((leaf, ""));
    let exact = !leaf.contains('*');
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(());
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let hit = if exact {
            name == leaf
        } else {
            name.len() >= pre.len() + post.len() && name.starts_with(pre) && name.ends_with(post)
        };
        if !hit {
            continue;
        }
        let p = e.path();
        let r = if e.file_type()?.is_dir() {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        };
        r.with_context(|| format!("removing {}", p.display()))?;
    }
    Ok(())
}

/// Writes a file inside the image (creating its directory).
fn write(mnt: &Path, path: &str, mode: u32, content: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let p = mnt.join(path.trim_start_matches('/'));
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d)?;
    }
    std::fs::write(&p, content).with_context(|| format!("writing {}", p.display()))?;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// Runs a command in the image with a clean environment.
fn chroot(mnt: &Path, argv: &[&str]) -> anyhow::Result<()> {
    let mut c = cmd("chroot", &[mnt]);
    c.args([
        "/usr/bin/env",
        "-i",
        "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME=/root",
        "LANG=C.UTF-8",
        "DEBIAN_FRONTEND=noninteractive",
    ]);
    c.args(argv);
    run(&mut c)
}

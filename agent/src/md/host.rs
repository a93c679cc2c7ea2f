//! The kernel's md driver, as thin as it goes: load `md_mod`, `raid0` and `raid1`, create
//! an array device (`/sys/module/md_mod/parameters/new_array`), assemble it from the
//! members' superblocks with the md ioctls (`SET_ARRAY_INFO` with `raid_disks` 0: "load
//! the superblocks", `ADD_NEW_DISK` per member, `RUN_ARRAY`), read what the kernel made of
//! it from sysfs and the block device, and stop it (`STOP_ARRAY`). The kernel validates
//! every superblock (magic, checksum, offsets, sizes) when it loads and runs them.
//!
//! Struct layouts and ioctl numbers are those of `include/uapi/linux/raid/md_u.h`
//! (`MD_MAJOR` 9); the test checks the request codes against the values mdadm issues.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// md ioctls and their argument structs (`md_u.h`).
mod ioctl {
    use libc::c_int;

    /// `mdu_array_info_t`: 18 ints.
    #[repr(C)]
    #[derive(Debug, Default, Clone, Copy)]
    pub struct ArrayInfo {
        pub major_version: c_int,
        pub minor_version: c_int,
        pub patch_version: c_int,
        pub ctime: libc::c_uint,
        pub level: c_int,
        pub size: c_int,
        pub nr_disks: c_int,
        pub raid_disks: c_int,
        pub md_minor: c_int,
        pub not_persistent: c_int,
        pub utime: libc::c_uint,
        pub state: c_int,
        pub active_disks: c_int,
        pub working_disks: c_int,
        pub failed_disks: c_int,
        pub spare_disks: c_int,
        pub layout: c_int,
        pub chunk_size: c_int,
    }

    /// `mdu_disk_info_t`.
    #[repr(C)]
    #[derive(Debug, Default, Clone, Copy)]
    pub struct DiskInfo {
        pub number: c_int,
        pub major: c_int,
        pub minor: c_int,
        pub raid_disk: c_int,
        pub state: c_int,
    }

    /// `mdu_param_t` (`RUN_ARRAY` ignores it for persistent superblocks).
    #[repr(C)]
    #[derive(Debug, Default, Clone, Copy)]
    pub struct Param {
        pub personality: c_int,
        pub chunk_size: c_int,
        pub max_fault: c_int,
    }

    pub const MD_MAJOR: u8 = 9;
    nix::ioctl_read!(get_array_info, MD_MAJOR, 0x11, ArrayInfo);
    nix::ioctl_write_ptr!(add_new_disk, MD_MAJOR, 0x21, DiskInfo);
    nix::ioctl_write_ptr!(set_array_info, MD_MAJOR, 0x23, ArrayInfo);
    nix::ioctl_write_ptr!(run_array, MD_MAJOR, 0x30, Param);
    nix::ioctl_none!(stop_array, MD_MAJOR, 0x32);
    nix::ioctl_read!(blkgetsize64, 0x12, 114, u64);
}

/// Why the kernel would not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum MdError {
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no free md device name (md127 down to md100 are all taken)")]
    NoFreeName,
    #[error("the kernel has no {0} (not built in, and its module is not in the ramdisk)")]
    NoModule(&'static str),
}

fn io(what: impl Into<String>, source: std::io::Error) -> MdError {
    MdError::Io {
        what: what.into(),
        source,
    }
}

fn errno(what: impl Into<String>, e: nix::errno::Errno) -> MdError {
    io(what, std::io::Error::from_raw_os_error(e as i32))
}

/// The modules md arrays need, in load order.
pub const MODULES: [&str; 3] = ["md_mod", "raid0", "raid1"];

/// Fails unless the kernel has `md_mod`, `raid0` and `raid1` (`/sys/module/<name>`, loaded
/// or built in). PID 1 loads them at boot (`init`), beside coldplug: a step or a deploy never
/// loads a module.
pub fn load_modules() -> Result<(), MdError> {
    match MODULES
        .iter()
        .copied()
        .find(|m| !Path::new("/sys/module").join(m).exists())
    {
        Some(m) => Err(MdError::NoModule(m)),
        None => Ok(()),
    }
}

/// What the kernel reports of a running array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assembled {
    /// `md/level`: `raid0`, `raid1`.
    pub level: String,
    /// `md/raid_disks`.
    pub raid_disks: u32,
    /// `md/array_state`: `clean`, `active`, `read-auto`, ...
    pub array_state: String,
    /// The array block device's size.
    pub size_bytes: u64,
}

/// An md array device this process created and holds open.
#[derive(Debug)]
pub struct Array {
    name: String,
    file: File,
}

impl Array {
    /// Creates the first free `mdN` from md127 down (`new_array`) and opens its node.
    pub fn create() -> Result<Array, MdError> {
        for n in (100..=127).rev() {
            let name = format!("md{n}");
            if Path::new("/sys/block").join(&name).exists() {
                continue;
            }
            match std::fs::write("/sys/module/md_mod/parameters/new_array", &name) {
                Ok(()) => {}
                // Taken meanwhile.
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => continue,
                Err(e) => return Err(io("writing md_mod.new_array", e)),
            }
            let path = Path::new("/dev").join(&name);
            let file = open_when_there(&path, Duration::from_secs(5))?;
            return Ok(Array { name, file });
        }
        Err(MdError::NoFreeName)
    }

    /// The device name (`md127`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `SET_ARRAY_INFO` with only the version: the kernel reads each member's superblock
    /// as it is added.
    pub fn set_version(&self, minor: i32) -> Result<(), MdError> {
        let info = ioctl::ArrayInfo {
            major_version: 1,
            minor_version: minor,
            ..Default::default()
        };
        // SAFETY: the fd is an open md device; the kernel copies `info`, which we own,
        // of the size the request code names.
        unsafe { ioctl::set_array_info(self.file.as_raw_fd(), &info) }
            .map_err(|e| errno(format!("SET_ARRAY_INFO 1.{minor} on {}", self.name), e))?;
        Ok(())
    }

    /// `ADD_NEW_DISK` of the block device at `member`.
    pub fn add(&self, member: &Path) -> Result<(), MdError> {
        let meta = std::fs::metadata(member).map_err(|e| io(member.display().to_string(), e))?;
        let rdev = meta.rdev();
        let info = ioctl::DiskInfo {
            major: i32::try_from(libc::major(rdev)).unwrap_or(-1),
            minor: i32::try_from(libc::minor(rdev)).unwrap_or(-1),
            ..Default::default()
        };
        // SAFETY: the fd is an open md device; the kernel copies `info`, which we own.
        unsafe { ioctl::add_new_disk(self.file.as_raw_fd(), &info) }.map_err(|e| {
            errno(
                format!("ADD_NEW_DISK {} to {}", member.display(), self.name),
                e,
            )
        })?;
        Ok(())
    }

    /// `RUN_ARRAY`: the kernel checks the superblocks against each other and starts it.
    pub fn run(&self) -> Result<(), MdError> {
        let p = ioctl::Param::default();
        // SAFETY: the fd is an open md device; the kernel copies `p`, which we own.
        unsafe { ioctl::run_array(self.file.as_raw_fd(), &p) }
            .map_err(|e| errno(format!("RUN_ARRAY on {}", self.name), e))?;
        Ok(())
    }

    /// What the kernel says of the running array.
    pub fn state(&self) -> Result<Assembled, MdError> {
        let md = Path::new("/sys/block").join(&self.name).join("md");
        let read = |f: &str| {
            std::fs::read_to_string(md.join(f))
                .map(|s| s.trim().to_owned())
                .map_err(|e| io(format!("reading {}/{f}", md.display()), e))
        };
        let mut info = ioctl::ArrayInfo::default();
        // SAFETY: the fd is an open md device; `info` is an out-parameter of the type
        // the request code names.
        unsafe { ioctl::get_array_info(self.file.as_raw_fd(), &mut info) }
            .map_err(|e| errno(format!("GET_ARRAY_INFO on {}", self.name), e))?;
        let mut size = 0u64;
        // SAFETY: the fd is an open block device; `size` is a u64 out-parameter.
        unsafe { ioctl::blkgetsize64(self.file.as_raw_fd(), &mut size) }
            .map_err(|e| errno(format!("BLKGETSIZE64 on {}", self.name), e))?;
        Ok(Assembled {
            level: read("level")?,
            raid_disks: read("raid_disks")?
                .parse()
                .unwrap_or(u32::try_from(info.raid_disks).unwrap_or(0)),
            array_state: read("array_state")?,
            size_bytes: size,
        })
    }

    /// `STOP_ARRAY`: stops it (running or half assembled) and lets its members go.
    pub fn stop(self) -> Result<(), MdError> {
        stop_fd(&self.file, &self.name)
    }
}

fn stop_fd(file: &File, name: &str) -> Result<(), MdError> {
    let mut tries = 0;
    loop {
        // SAFETY: the fd is an open md device; STOP_ARRAY takes no argument.
        match unsafe { ioctl::stop_array(file.as_raw_fd()) } {
            Ok(_) => return Ok(()),
            // Briefly busy while the kernel's own threads (resync) let go.
            Err(nix::errno::Errno::EBUSY) if tries < 20 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(errno(format!("STOP_ARRAY on {name}"), e)),
        }
    }
}

/// Stops the running array `/dev/<name>` that this process did not create.
pub fn stop_by_name(name: &str) -> Result<(), MdError> {
    let path = Path::new("/dev").join(name);
    let file = File::open(&path).map_err(|e| io(path.display().to_string(), e))?;
    stop_fd(&file, name)
}

fn open_when_there(path: &Path, wait: Duration) -> Result<File, MdError> {
    let start = Instant::now();
    loop {
        match File::options().read(true).write(true).open(path) {
            Ok(f) => return Ok(f),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && start.elapsed() < wait => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(io(format!("opening {}", path.display()), e)),
        }
    }
}

/// Waits until every path exists (devtmpfs creates partition nodes after a rescan).
pub fn wait_for_nodes(paths: &[PathBuf], wait: Duration) -> Result<(), MdError> {
    let start = Instant::now();
    for p in paths {
        while !p.exists() {
            if start.elapsed() >= wait {
                return Err(io(
                    format!("waiting {wait:?} for {}", p.display()),
                    std::io::ErrorKind::NotFound.into(),
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Ok(())
}

/// PURE over a sysfs tree at `sys`: the md arrays (`mdN` names) with a member on one of
/// `disks` (kernel names, `vda`, `nvme0n1`): a member is the disk itself or one of its
/// partitions (`sys/block/<disk>/<member>` exists).
pub fn arrays_over(sys: &Path, disks: &[String]) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(sys.join("block")) else {
        return vec![];
    };
    let mut found = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("md") {
            continue;
        }
        let Ok(slaves) = std::fs::read_dir(e.path().join("slaves")) else {
            continue;
        };
        let hit = slaves.flatten().any(|s| {
            let member = s.file_name().to_string_lossy().into_owned();
            disks
                .iter()
                .any(|d| *d == member || sys.join("block").join(d).join(&member).exists())
        });
        if hit {
            found.push(name);
        }
    }
    found.sort();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structs_and_request_codes_match_md_u_h() {
        assert_eq!(std::mem::size_of::<ioctl::ArrayInfo>(), 72);
        assert_eq!(std::mem::size_of::<ioctl::DiskInfo>(), 20);
        assert_eq!(std::mem::size_of::<ioctl::Param>(), 12);
        // The numbers mdadm's ioctls carry on x86_64 (`_IOW(9, 0x23, mdu_array_info_t)`...).
        let w = |nr, size| nix::request_code_write!(9, nr, size);
        assert_eq!(w(0x23, 72), 0x4048_0923, "SET_ARRAY_INFO");
        assert_eq!(w(0x21, 20), 0x4014_0921, "ADD_NEW_DISK");
        assert_eq!(w(0x30, 12), 0x400c_0930, "RUN_ARRAY");
        assert_eq!(nix::request_code_read!(9, 0x11, 72), 0x8048_0911);
        assert_eq!(nix::request_code_none!(9, 0x32), 0x932, "STOP_ARRAY");
    }

    #[test]
    fn finds_the_arrays_over_disks_and_their_partitions() {
        let t = tempfile::tempdir().expect("tempdir");
        let sys = t.path();
        let mk = |p: &str| std::fs::create_dir_all(sys.join(p)).expect("mkdir");
        mk("block/vda/vda1");
        mk("block/vda/vda2");
        mk("block/vdb/vdb1");
        mk("block/vdc");
        mk("block/md127/slaves/vda1");
        mk("block/md127/slaves/vdb1");
        mk("block/md126/slaves/vdc");
        mk("block/md125/slaves/sdz1");
        mk("block/md124");
        mk("block/loop0/slaves/vda2");
        let disks = |d: &[&str]| d.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(arrays_over(sys, &disks(&["vda"])), vec!["md127"]);
        assert_eq!(
            arrays_over(sys, &disks(&["vdb", "vdc"])),
            vec!["md126", "md127"]
        );
        assert!(arrays_over(sys, &disks(&["sdy"])).is_empty());
        assert!(arrays_over(&sys.join("nothing"), &disks(&["vda"])).is_empty());
    }
}

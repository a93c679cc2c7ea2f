//! Linux software RAID (md) without mdadm: the agent writes md v1.x superblocks itself
//! ([`superblock`], pure) and has the kernel assemble, check and stop the arrays
//! ([`host`], the md ioctls). A 6 MiB ramdisk has no room for mdadm and its libraries, and
//! nothing is lost by it: the kernel validates every superblock (magic, checksum, offsets,
//! sizes, agreement between members) when `RUN_ARRAY` loads them, which is the same check
//! the instance's own mdadm and kernel make when they assemble the arrays at boot.

pub mod host;
pub mod superblock;

//! Safe import: what `qemu-img info --output=json` says about an image from outside, checked
//! before `qemu-img convert` may open it (the class of Ironic's LP#2071740, where a qcow2
//! backing file, a qcow2 `data_file` or a VMDK extent made the conversion read a host file
//! into the stored image).
//!
//! [`check`] is PURE: a parser of an outside file's description, with table tests on outputs
//! captured from qemu-img 7.2. [`qemu_img_info`] runs qemu-img under `prlimit` (address
//! space 1 GiB, CPU 30 s, as Ironic's format inspection), so a crafted header cannot make
//! the inspection itself eat the machine.

use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

/// Formats an import may convert (plus raw, which is never handed to qemu-img).
pub const ALLOWED_FORMATS: [&str; 5] = ["raw", "qcow2", "vmdk", "vdi", "vhdx"];
/// VMDK subformats that keep the data in the file itself (Ironic allows the same two).
const VMDK_SELF_CONTAINED: [&str; 2] = ["monolithicSparse", "streamOptimized"];
/// Default `max_image_virtual_size`: 2 TiB (see README, "OS images").
pub const DEFAULT_MAX_VIRTUAL_SIZE: u64 = 2 << 40;
/// `prlimit` limits of the inspection: address space and CPU seconds.
pub const INFO_ADDRESS_SPACE: u64 = 1 << 30;
pub const INFO_CPU_SECONDS: u64 = 30;

/// Why an image is refused before conversion.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InspectError {
    #[error("qemu-img info printed no usable JSON: {0}")]
    Unparsable(String),
    #[error(
        "format {found} is not allowed (allowed: raw, qcow2, vmdk, vdi, vhdx); the header said {expected}"
    )]
    FormatNotAllowed { expected: String, found: String },
    #[error(
        "the image has a backing file ({0}): it would read another file; flatten it first (qemu-img convert)"
    )]
    BackingFile(String),
    #[error(
        "the qcow2 image keeps its data in an external data file ({0}); convert it to a self-contained image first"
    )]
    DataFile(String),
    #[error(
        "VMDK create type {0:?} is not allowed: only self-contained monolithicSparse or streamOptimized VMDKs are imported"
    )]
    VmdkType(String),
    #[error(
        "the VMDK has an extent in another file ({0}): only the image's own file may hold its data"
    )]
    VmdkExtent(String),
    #[error("the image is corrupt according to qemu-img")]
    Corrupt,
    #[error("no virtual size in qemu-img info")]
    NoSize,
    #[error("virtual size {size} bytes is over max_image_virtual_size ({max} bytes)")]
    TooLarge { size: u64, max: u64 },
}

/// What an accepted image is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspected {
    pub format: String,
    pub virtual_size: u64,
}

/// PURE: checks `qemu-img info --output=json -f EXPECTED IMAGE` output. `image` is the path
/// qemu-img was given (a VMDK's own extent carries that name).
pub fn check(
    json: &str,
    expected: &str,
    image: &str,
    max_virtual_size: u64,
) -> Result<Inspected, InspectError> {
    let info: Value =
        serde_json::from_str(json).map_err(|e| InspectError::Unparsable(e.to_string()))?;
    if !info.is_object() {
        return Err(InspectError::Unparsable("not a JSON object".to_owned()));
    }
    let format = info["format"].as_str().unwrap_or_default().to_owned();
    if format != expected || !ALLOWED_FORMATS.contains(&format.as_str()) {
        return Err(InspectError::FormatNotAllowed {
            expected: expected.to_owned(),
            found: format,
        });
    }
    for key in [
        "backing-filename",
        "full-backing-filename",
        "backing-filename-format",
    ] {
        if let Some(v) = info.get(key) {
            return Err(InspectError::BackingFile(
                v.as_str().map_or_else(|| v.to_string(), str::to_owned),
            ));
        }
    }
    let specific = &info["format-specific"]["data"];
    if let Some(v) = specific.get("data-file") {
        return Err(InspectError::DataFile(
            v.as_str().map_or_else(|| v.to_string(), str::to_owned),
        ));
    }
    if specific["corrupt"] == Value::Bool(true) {
        return Err(InspectError::Corrupt);
    }
    if format == "vmdk" {
        let kind = specific["create-type"].as_str().unwrap_or_default();
        if !VMDK_SELF_CONTAINED.contains(&kind) {
            return Err(InspectError::VmdkType(kind.to_owned()));
        }
        let extents = specific["extents"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        for extent in extents {
            let name = extent["filename"].as_str().unwrap_or_default();
            if name != image {
                return Err(InspectError::VmdkExtent(name.to_owned()));
            }
        }
    }
    let size = info["virtual-size"].as_u64().ok_or(InspectError::NoSize)?;
    if size == 0 {
        return Err(InspectError::NoSize);
    }
    if size > max_virtual_size {
        return Err(InspectError::TooLarge {
            size,
            max: max_virtual_size,
        });
    }
    Ok(Inspected {
        format,
        virtual_size: size,
    })
}

/// `prlimit --as=1GiB --cpu=30 -- QEMU_IMG info --output=json -f FORMAT IMAGE`: the JSON, or
/// qemu-img's complaint.
pub fn qemu_img_info(
    prlimit: &Path,
    qemu_img: &Path,
    format: &str,
    image: &Path,
) -> std::io::Result<Result<String, String>> {
    let out = Command::new(prlimit)
        .arg(format!("--as={INFO_ADDRESS_SPACE}"))
        .arg(format!("--cpu={INFO_CPU_SECONDS}"))
        .arg("--")
        .arg(qemu_img)
        .args(["info", "--output=json", "-f", format])
        .arg(image)
        .stdin(Stdio::null())
        .output()?;
    if out.status.success() {
        Ok(Ok(String::from_utf8_lossy(&out.stdout).into_owned()))
    } else {
        Ok(Err(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Captured from qemu-img 7.2 (Debian 12): `qemu-img create -f qcow2 -b base.raw -F raw`,
    // `-o data_file=...`, a hand-written monolithicFlat descriptor, and plain images.
    const BACKED_QCOW2: &str = r#"{"backing-filename-format": "raw", "virtual-size": 1048576,
        "filename": "backed.qcow2", "cluster-size": 65536, "format": "qcow2",
        "actual-size": 200704, "format-specific": {"type": "qcow2", "data": {"compat": "1.1",
        "compression-type": "zlib", "lazy-refcounts": false, "refcount-bits": 16,
        "corrupt": false, "extended-l2": false}}, "full-backing-filename": "base.raw",
        "backing-filename": "base.raw", "dirty-flag": false}"#;
    const DATA_FILE_QCOW2: &str = r#"{"virtual-size": 1048576, "filename": "df.qcow2",
        "cluster-size": 65536, "format": "qcow2", "actual-size": 200704, "format-specific":
        {"type": "qcow2", "data": {"compat": "1.1", "compression-type": "zlib",
        "lazy-refcounts": false, "refcount-bits": 16, "data-file": "/tmp/hx/data.raw",
        "data-file-raw": false, "corrupt": false, "extended-l2": false}}, "dirty-flag": false}"#;
    const FLAT_VMDK: &str = r#"{"virtual-size": 1048576, "filename": "flat.vmdk",
        "format": "vmdk", "actual-size": 8192, "format-specific": {"type": "vmdk", "data":
        {"cid": 4294967294, "parent-cid": 4294967295, "create-type": "monolithicFlat",
        "extents": [{"virtual-size": 1048576, "filename": "/tmp/hx/host.txt",
        "format": "FLAT"}]}}, "dirty-flag": false}"#;
    const SPARSE_VMDK: &str = r#"{"virtual-size": 1048576, "filename": "plain.vmdk",
        "cluster-size": 65536, "format": "vmdk", "actual-size": 12288, "format-specific":
        {"type": "vmdk", "data": {"cid": 1863819668, "parent-cid": 4294967295,
        "create-type": "monolithicSparse", "extents": [{"virtual-size": 1048576,
        "filename": "plain.vmdk", "cluster-size": 65536, "format": ""}]}}, "dirty-flag": false}"#;
    const PLAIN_QCOW2: &str = r#"{"virtual-size": 8388608, "filename": "d.qcow2",
        "cluster-size": 65536, "format": "qcow2", "actual-size": 200704, "format-specific":
        {"type": "qcow2", "data": {"compat": "1.1", "compression-type": "zlib",
        "lazy-refcounts": false, "refcount-bits": 16, "corrupt": false, "extended-l2": false}},
        "dirty-flag": false}"#;
    const VDI: &str = r#"{"virtual-size": 1048576, "filename": "x.vdi", "cluster-size": 1048576,
        "format": "vdi", "actual-size": 4096, "dirty-flag": false}"#;
    const VHDX: &str = r#"{"virtual-size": 1048576, "filename": "x.vhdx",
        "cluster-size": 8388608, "format": "vhdx", "actual-size": 1265664, "dirty-flag": false}"#;

    #[test]
    fn captured_outputs() {
        const MAX: u64 = DEFAULT_MAX_VIRTUAL_SIZE;
        let ok = |size: u64, format: &str| {
            Ok(Inspected {
                format: format.to_owned(),
                virtual_size: size,
            })
        };
        type Case = (
            &'static str,
            &'static str,
            &'static str,
            u64,
            Result<Inspected, InspectError>,
        );
        let cases: Vec<Case> = vec![
            (PLAIN_QCOW2, "qcow2", "d.qcow2", MAX, ok(8 << 20, "qcow2")),
            (SPARSE_VMDK, "vmdk", "plain.vmdk", MAX, ok(1 << 20, "vmdk")),
            (VDI, "vdi", "x.vdi", MAX, ok(1 << 20, "vdi")),
            (VHDX, "vhdx", "x.vhdx", MAX, ok(1 << 20, "vhdx")),
            (
                BACKED_QCOW2,
                "qcow2",
                "backed.qcow2",
                MAX,
                Err(InspectError::BackingFile("base.raw".to_owned())),
            ),
            (
                DATA_FILE_QCOW2,
                "qcow2",
                "df.qcow2",
                MAX,
                Err(InspectError::DataFile("/tmp/hx/data.raw".to_owned())),
            ),
            (
                FLAT_VMDK,
                "vmdk",
                "flat.vmdk",
                MAX,
                Err(InspectError::VmdkType("monolithicFlat".to_owned())),
            ),
            (
                // The image's own extent, but under another name: someone else's file.
                SPARSE_VMDK,
                "vmdk",
                "/images/plain.vmdk",
                MAX,
                Err(InspectError::VmdkExtent("plain.vmdk".to_owned())),
            ),
            (
                PLAIN_QCOW2,
                "qcow2",
                "d.qcow2",
                1 << 20,
                Err(InspectError::TooLarge {
                    size: 8 << 20,
                    max: 1 << 20,
                }),
            ),
            (
                // qemu-img saw another format than the header sniffing did.
                PLAIN_QCOW2,
                "vmdk",
                "d.qcow2",
                MAX,
                Err(InspectError::FormatNotAllowed {
                    expected: "vmdk".to_owned(),
                    found: "qcow2".to_owned(),
                }),
            ),
            (
                r#"{"virtual-size": 1048576, "format": "qed"}"#,
                "qed",
                "x.qed",
                MAX,
                Err(InspectError::FormatNotAllowed {
                    expected: "qed".to_owned(),
                    found: "qed".to_owned(),
                }),
            ),
            (
                r#"{"format": "qcow2", "format-specific": {"data": {"corrupt": true}},
                    "virtual-size": 1}"#,
                "qcow2",
                "c.qcow2",
                MAX,
                Err(InspectError::Corrupt),
            ),
            (
                r#"{"format": "vdi"}"#,
                "vdi",
                "x.vdi",
                MAX,
                Err(InspectError::NoSize),
            ),
            (
                r#"{"format": "vdi", "virtual-size": -1}"#,
                "vdi",
                "x.vdi",
                MAX,
                Err(InspectError::NoSize),
            ),
        ];
        for (json, expected, image, max, want) in cases {
            assert_eq!(check(json, expected, image, max), want, "{json}");
        }
        for junk in ["", "[]", "null", "{\"format\": ", "\"qcow2\""] {
            assert!(
                matches!(
                    check(junk, "qcow2", "x", MAX),
                    Err(InspectError::Unparsable(_))
                ),
                "{junk}"
            );
        }
    }

    #[test]
    fn the_backing_file_is_named_in_the_error() {
        let json = r#"{"format": "qcow2", "virtual-size": 1, "backing-filename": "/etc/shadow"}"#;
        let err = check(json, "qcow2", "x", DEFAULT_MAX_VIRTUAL_SIZE).expect_err("refused");
        assert!(err.to_string().contains("/etc/shadow"), "{err}");
    }
}

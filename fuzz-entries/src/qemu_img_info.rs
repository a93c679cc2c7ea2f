//! `qemu_img_info`: the output of `qemu-img info --output=json` on an uploaded image into the
//! import's safety check (`images::inspect::check`), for the format the output names and for
//! qcow2 and vmdk.
//!
//! Invariants of an accepted image: its format is the expected one; no backing file key, no
//! qcow2 data file; a VMDK's extents are all the image's own file; the virtual size is in
//! `1..=max`.

use controller::images::inspect::check;
use serde_json::Value;

const IMAGE: &str = "/var/lib/ingot/images/.import-fuzz/source";
const MAX: u64 = 64 << 30;

/// Entry point.
pub fn run(data: &[u8]) {
    let Ok(json) = std::str::from_utf8(data) else {
        return;
    };
    let doc: Option<Value> = serde_json::from_str(json).ok();
    let named = doc
        .as_ref()
        .and_then(|d| d.get("format"))
        .and_then(Value::as_str)
        .unwrap_or("raw")
        .to_owned();
    for expected in [named.as_str(), "qcow2", "vmdk"] {
        let Ok(ok) = check(json, expected, IMAGE, MAX) else {
            continue;
        };
        let doc = doc.as_ref().expect("accepted output is JSON");
        assert_eq!(ok.format, expected);
        assert!(
            (1..=MAX).contains(&ok.virtual_size),
            "size {}",
            ok.virtual_size
        );
        for key in [
            "backing-filename",
            "full-backing-filename",
            "backing-filename-format",
        ] {
            assert!(doc.get(key).is_none(), "{key} accepted");
        }
        let specific = &doc["format-specific"]["data"];
        assert!(specific.get("data-file").is_none(), "data-file accepted");
        if expected == "vmdk" {
            for extent in specific["extents"].as_array().into_iter().flatten() {
                assert_eq!(extent["filename"].as_str().unwrap_or_default(), IMAGE);
            }
        }
    }
}

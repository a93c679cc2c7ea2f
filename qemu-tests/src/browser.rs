//! The headless browser for console tests: Debian's `chromium` driven by Playwright
//! (`playwright-core`, pinned in `controller/tests/ui/package-lock.json`). [`playwright`]
//! installs it once per lock file with `npm ci` under a file lock into
//! `<target>/ui-tests`, and copies the test scripts next to its `node_modules` so that
//! `node SCRIPT` finds it. Both the controller's console test and the lab's console test
//! use this one install.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use crate::build::{target_dir, workspace_root};

/// Debian's chromium (`.ci/packages.txt`).
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// Chromium's path, or why it is missing.
pub fn chromium() -> anyhow::Result<&'static str> {
    if !Path::new(CHROMIUM).exists() {
        bail!("{CHROMIUM} is missing: apt-get install chromium (listed in .ci/packages.txt)");
    }
    Ok(CHROMIUM)
}

/// `npm ci` of the pinned Playwright into `<target>/ui-tests` (once per lock file, under a
/// file lock; without the registry an earlier install is used), then fresh copies of every
/// `.mjs` file of `script_dirs`; returns the directory to run `node` in.
pub fn playwright(script_dirs: &[&Path]) -> anyhow::Result<PathBuf> {
    let src = workspace_root().join("controller/tests/ui");
    let dir = target_dir().join("ui-tests");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let lock = std::fs::File::create(dir.join(".lock")).context("ui-tests lock file")?;
    lock.lock().context("locking ui-tests")?;
    let wanted = std::fs::read(src.join("package-lock.json")).context("package-lock.json")?;
    let stamp = dir.join(".installed-lock.json");
    let installed = dir
        .join("node_modules/playwright-core/package.json")
        .exists();
    if !installed || std::fs::read(&stamp).ok().as_deref() != Some(wanted.as_slice()) {
        for f in ["package.json", "package-lock.json"] {
            std::fs::copy(src.join(f), dir.join(f)).with_context(|| format!("copying {f}"))?;
        }
        let out = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--ignore-scripts"])
            .current_dir(&dir)
            .output()
            .context("running npm (Debian package npm)")?;
        if out.status.success() {
            std::fs::write(&stamp, &wanted).context("writing the install stamp")?;
        } else if installed {
            eprintln!("npm ci failed, using the earlier install");
        } else {
            bail!(
                "npm ci failed and nothing is installed yet: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    for scripts in script_dirs {
        for entry in
            std::fs::read_dir(scripts).with_context(|| format!("reading {}", scripts.display()))?
        {
            let path = entry?.path();
            if let (Some("mjs"), Some(name)) =
                (path.extension().and_then(|e| e.to_str()), path.file_name())
            {
                std::fs::copy(&path, dir.join(name))
                    .with_context(|| format!("copying {}", path.display()))?;
            }
        }
    }
    Ok(dir)
}

/// PURE: the width and height of a PNG file's bytes, when they are a PNG.
pub fn png_size(bytes: &[u8]) -> Option<(u32, u32)> {
    const SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";
    if bytes.len() < 24 || !bytes.starts_with(SIGNATURE) || &bytes[12..16] != b"IHDR" {
        return None;
    }
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    Some((be(&bytes[16..20]), be(&bytes[20..24])))
}

/// The width and height of the PNG file at `path` (a screenshot a test saved).
pub fn png_file_size(path: &Path) -> anyhow::Result<(u32, u32)> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    png_size(&bytes).with_context(|| format!("{} is not a PNG", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn png_sizes_are_read_from_the_header() {
        let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
        png.extend_from_slice(&1280u32.to_be_bytes());
        png.extend_from_slice(&800u32.to_be_bytes());
        assert_eq!(png_size(&png), Some((1280, 800)));
        assert_eq!(png_size(b"GIF89a not a png at all.."), None);
        assert_eq!(png_size(&png[..20]), None);
    }
}

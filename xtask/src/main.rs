//! Project automation (see <https://github.com/matklad/cargo-xtask>).

mod initramfs;

use std::path::PathBuf;

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let root = manifest.parent().map(PathBuf::from).unwrap_or(manifest);
    let result = match args.first().map(String::as_str) {
        Some("initramfs") => initramfs::run(&root, &args[1..]),
        _ => Err(anyhow::anyhow!(
            "usage: cargo xtask initramfs --profile qemu|generic"
        )),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

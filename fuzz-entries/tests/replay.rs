//! Replays every committed input of every fuzz target through its entry function on the
//! stable toolchain: `fuzz/regressions/<target>/*` (crashes found once, each a test
//! forever) and `fuzz/corpus/<target>/*` (the seeds). A failure names the file.

use std::path::{Path, PathBuf};

fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.file_name().is_some_and(|n| n != ".gitkeep"))
        .collect();
    files.sort();
    files
}

fn replay(kind: &str, min_per_target: usize) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz")
        .join(kind);
    let mut total = 0;
    let mut failed = Vec::new();
    for (name, entry) in fuzz_entries::TARGETS {
        let files = inputs(&root.join(name));
        assert!(
            files.len() >= min_per_target,
            "{kind}/{name} has {} inputs",
            files.len()
        );
        for file in files {
            let data = std::fs::read(&file).expect("reading a committed input");
            if std::panic::catch_unwind(|| entry(&data)).is_err() {
                failed.push(file.display().to_string());
            }
            total += 1;
        }
    }
    eprintln!("replayed {total} inputs of {kind}");
    assert!(failed.is_empty(), "failing inputs:\n{}", failed.join("\n"));
}

#[test]
fn every_regression_case_passes() {
    replay("regressions", 0);
}

#[test]
fn every_seed_passes() {
    replay("corpus", 1);
}

#[test]
fn every_target_has_a_fuzz_target_file() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/fuzz_targets");
    for (name, _) in fuzz_entries::TARGETS {
        assert!(
            dir.join(format!("{name}.rs")).is_file(),
            "fuzz_targets/{name}.rs"
        );
    }
}

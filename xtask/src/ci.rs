//! `cargo xtask ci`: formatting, clippy and every test, reporting all failures at the end.
//! Clippy runs with `--keep-going` so one broken crate does not hide lints in the others.
//!
//! Each step runs even if an earlier one failed. Output is streamed as it comes (so the test
//! runner's own summary line stays visible) and lines that name a failure are kept for the
//! final report. The exit status is non-zero if any step failed.

use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context as _, bail};

use crate::paths::cargo;

/// One finished step.
#[derive(Debug)]
struct StepResult {
    name: &'static str,
    ok: bool,
    secs: f64,
    failures: Vec<String>,
}

/// Runs the CI steps. No arguments are accepted.
pub fn run(args: &[String]) -> anyhow::Result<()> {
    if let Some(arg) = args.first() {
        bail!("cargo xtask ci takes no arguments (got {arg})");
    }
    let mut results = Vec::new();

    let mut fmt = cargo();
    fmt.args(["fmt", "--all", "--check"]);
    results.push(step("fmt", fmt)?);

    let mut clippy = cargo();
    clippy.args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--keep-going",
        "--",
        "-D",
        "warnings",
    ]);
    results.push(step("clippy", clippy)?);

    let mut tests = cargo();
    if has_nextest() {
        tests.args(["nextest", "run", "--workspace", "--no-fail-fast"]);
        results.push(step("nextest", tests)?);
    } else {
        println!("xtask ci: cargo-nextest not found, using cargo test");
        tests.args(["test", "--workspace", "--no-fail-fast"]);
        results.push(step("cargo test", tests)?);
    }

    println!();
    println!("xtask ci summary:");
    for r in &results {
        println!(
            "  {:<10} {:<4} {:>7.1} s",
            r.name,
            if r.ok { "ok" } else { "FAIL" },
            r.secs
        );
    }
    let failed: Vec<&StepResult> = results.iter().filter(|r| !r.ok).collect();
    if failed.is_empty() {
        println!("xtask ci: all steps passed");
        return Ok(());
    }
    for r in &failed {
        println!();
        println!("failures in {}:", r.name);
        if r.failures.is_empty() {
            println!("  (see its output above)");
        }
        for line in &r.failures {
            println!("  {line}");
        }
    }
    bail!(
        "xtask ci: {} of {} steps failed: {}",
        failed.len(),
        results.len(),
        failed.iter().map(|r| r.name).collect::<Vec<_>>().join(", ")
    )
}

fn has_nextest() -> bool {
    cargo()
        .args(["nextest", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Whether an output line reports a failure worth repeating in the summary.
fn is_failure_line(line: &str) -> bool {
    let t = line.trim_start();
    // nextest: "FAIL [   0.1s] pkg::bin test", "TIMEOUT [...] ...", "SIGSEGV [...]".
    // cargo test: "test foo ... FAILED". clippy/rustc: "error: ..." / "error[E0..]: ...".
    // rustfmt --check: "Diff in /path/file.rs:12:".
    t.starts_with("FAIL [")
        || t.starts_with("TIMEOUT [")
        || t.starts_with("SIGSEGV [")
        || t.starts_with("SIGABRT [")
        || t.starts_with("LEAK [")
        || (t.starts_with("test ") && t.ends_with("FAILED"))
        || t.starts_with("error:")
        || t.starts_with("error[")
        || t.starts_with("Diff in ")
}

/// Runs `cmd`, streaming its output and collecting failure lines.
fn step(name: &'static str, mut cmd: Command) -> anyhow::Result<StepResult> {
    println!();
    println!("=== xtask ci: {name}: {cmd:?}");
    let started = Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {name}"))?;
    let failures = Arc::new(Mutex::new(Vec::new()));
    let stdout = child.stdout.take().context("child stdout")?;
    let stderr = child.stderr.take().context("child stderr")?;
    let out_thread = forward(stdout, false, Arc::clone(&failures));
    let err_thread = forward(stderr, true, Arc::clone(&failures));
    let status = child
        .wait()
        .with_context(|| format!("waiting for {name}"))?;
    let _ = out_thread.join();
    let _ = err_thread.join();
    let mut failures = failures.lock().map(|f| f.clone()).unwrap_or_default();
    failures.dedup();
    Ok(StepResult {
        name,
        ok: status.success(),
        secs: started.elapsed().as_secs_f64(),
        failures,
    })
}

fn forward(
    pipe: impl std::io::Read + Send + 'static,
    to_stderr: bool,
    failures: Arc<Mutex<Vec<String>>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let reader = BufReader::new(pipe);
        for line in reader.split(b'\n').map_while(Result::ok) {
            let line = String::from_utf8_lossy(&line).into_owned();
            if to_stderr {
                let _ = writeln!(std::io::stderr(), "{line}");
            } else {
                let _ = writeln!(std::io::stdout(), "{line}");
            }
            if is_failure_line(&line)
                && let Ok(mut f) = failures.lock()
            {
                f.push(line.trim().to_owned());
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::is_failure_line;

    #[test]
    fn recognises_failure_lines() {
        assert!(is_failure_line(
            "        FAIL [   0.012s] controller::it api::rejects_bad_json"
        ));
        assert!(is_failure_line("test store::tests::opens ... FAILED"));
        assert!(is_failure_line("error: could not compile `controller`"));
        assert!(is_failure_line(
            "error[E0425]: cannot find value `x` in this scope"
        ));
        assert!(is_failure_line("Diff in /work/controller/src/lib.rs:3:"));
        assert!(!is_failure_line(
            "        PASS [   0.012s] controller::it api::lists_nodes"
        ));
        assert!(!is_failure_line("test store::tests::opens ... ok"));
        assert!(!is_failure_line("warning: unused variable"));
    }
}

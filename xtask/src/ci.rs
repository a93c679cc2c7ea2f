//! `cargo xtask ci`: formatting, clippy, `cargo deny`, `cargo xtask tidy`, every test and a short run of every
//! fuzz target, reporting all failures at the end.
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
    /// Test runner summary lines ("Summary [..] N tests run: ..." / "test result: ...").
    summaries: Vec<String>,
}

/// Test counts read off the runner's summary lines.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Counts {
    passed: u64,
    failed: u64,
    skipped: u64,
}

/// Reads "<n> passed", "<n> failed", "<n> skipped|ignored", "<n> timed out" from one line.
fn parse_counts(line: &str) -> Counts {
    let words: Vec<&str> = line
        .split(|c: char| c.is_whitespace() || c == ',' || c == ';' || c == '.' || c == ':')
        .filter(|w| !w.is_empty())
        .collect();
    let mut counts = Counts::default();
    for pair in words.windows(2) {
        let Ok(n) = pair[0].parse::<u64>() else {
            continue;
        };
        match pair[1] {
            "passed" => counts.passed += n,
            "failed" | "timed" => counts.failed += n,
            "skipped" | "ignored" => counts.skipped += n,
            _ => {}
        }
    }
    counts
}

/// Totals over a run: nextest's last "tests run:" line, or the sum of cargo test's lines.
fn total_counts(summaries: &[String]) -> Option<Counts> {
    if let Some(line) = summaries.iter().rev().find(|l| l.contains("tests run:")) {
        return Some(parse_counts(line));
    }
    let lines: Vec<&String> = summaries
        .iter()
        .filter(|l| l.contains("test result:"))
        .collect();
    if lines.is_empty() {
        return None;
    }
    Some(lines.iter().fold(Counts::default(), |acc, l| {
        let c = parse_counts(l);
        Counts {
            passed: acc.passed + c.passed,
            failed: acc.failed + c.failed,
            skipped: acc.skipped + c.skipped,
        }
    }))
}

/// Runs the CI steps: fmt, clippy, cargo deny, the tests, the Debian package check. No arguments are accepted. Exits the process with status 1 on failure
/// so that the last line printed stays the plain `tests: N passed, M failed` count.
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

    results.push(deny_step()?);

    let mut tidy = cargo();
    tidy.args(["xtask", "tidy"]);
    results.push(step("tidy", tidy)?);

    let mut tests = cargo();
    if has_nextest() {
        tests.args(["nextest", "run", "--workspace", "--no-fail-fast"]);
        results.push(step("nextest", tests)?);
    } else {
        println!("xtask ci: cargo-nextest not found, using cargo test");
        tests.args(["test", "--workspace", "--no-fail-fast"]);
        results.push(step("cargo test", tests)?);
    }

    // The Debian package, built from the dev profile (a release build would add minutes;
    // `cargo xtask package` alone builds release) and installed into a private root.
    let mut package = cargo();
    package.args(["xtask", "package", "--profile", "dev", "--check"]);
    results.push(step("package", package)?);

    results.push(fuzz_step()?);

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
    println!();
    if failed.is_empty() {
        println!("xtask ci: all steps passed");
    } else {
        println!(
            "xtask ci: {} of {} steps failed: {}",
            failed.len(),
            results.len(),
            failed.iter().map(|r| r.name).collect::<Vec<_>>().join(", ")
        );
    }
    let summaries: Vec<String> = results.iter().flat_map(|r| r.summaries.clone()).collect();
    match total_counts(&summaries) {
        Some(c) => println!(
            "tests: {} passed, {} failed, {} skipped",
            c.passed, c.failed, c.skipped
        ),
        None => println!("xtask ci: the test runner printed no summary (the test build failed?)"),
    }
    if !failed.is_empty() {
        std::process::exit(1);
    }
    Ok(())
}

/// `cargo deny check bans licenses sources` (deny.toml). Advisories are left out: CI cannot
/// fetch the RustSec database (see deny.toml for running them with one). A missing cargo-deny
/// fails the step with what to run instead.
fn deny_step() -> anyhow::Result<StepResult> {
    let installed = cargo()
        .args(["deny", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !installed {
        let msg = "cargo-deny is not installed: run .ci/setup (it installs the pinned version)";
        println!();
        println!("=== xtask ci: cargo deny: {msg}");
        return Ok(StepResult {
            name: "cargo deny",
            ok: false,
            secs: 0.0,
            failures: vec![msg.to_owned()],
            summaries: Vec::new(),
        });
    }
    let mut deny = cargo();
    deny.args(["deny", "check", "bans", "licenses", "sources"]);
    step("cargo deny", deny)
}

/// Seconds each fuzz target runs in CI, from its committed corpus: a smoke test that every
/// target builds, replays its seeds and runs a little, not a fuzzing campaign.
const CI_FUZZ_SECONDS: &str = "4";

/// `cargo xtask fuzz --ci --seconds 4`: every cargo-fuzz target briefly (see `fuzz.rs`; it
/// reports "skipped: no nightly toolchain" and succeeds without nightly).
fn fuzz_step() -> anyhow::Result<StepResult> {
    let exe = std::env::current_exe().context("locating the xtask binary")?;
    let mut fuzz = Command::new(exe);
    fuzz.args(["fuzz", "--ci", "--seconds", CI_FUZZ_SECONDS])
        .current_dir(crate::paths::workspace_root());
    step("fuzz", fuzz)
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
    let summaries = Arc::new(Mutex::new(Vec::new()));
    let stdout = child.stdout.take().context("child stdout")?;
    let stderr = child.stderr.take().context("child stderr")?;
    let out_thread = forward(stdout, false, Arc::clone(&failures), Arc::clone(&summaries));
    let err_thread = forward(stderr, true, Arc::clone(&failures), Arc::clone(&summaries));
    let status = child
        .wait()
        .with_context(|| format!("waiting for {name}"))?;
    let _ = out_thread.join();
    let _ = err_thread.join();
    let mut failures = failures.lock().map(|f| f.clone()).unwrap_or_default();
    failures.dedup();
    let summaries = summaries.lock().map(|s| s.clone()).unwrap_or_default();
    Ok(StepResult {
        name,
        ok: status.success(),
        secs: started.elapsed().as_secs_f64(),
        failures,
        summaries,
    })
}

fn forward(
    pipe: impl std::io::Read + Send + 'static,
    to_stderr: bool,
    failures: Arc<Mutex<Vec<String>>>,
    summaries: Arc<Mutex<Vec<String>>>,
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
            if (line.contains("tests run:") || line.trim_start().starts_with("test result:"))
                && let Ok(mut s) = summaries.lock()
            {
                s.push(line.trim().to_owned());
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_nextest_summary() {
        let line =
            "     Summary [  45.678s] 130 tests run: 127 passed (2 slow), 3 failed, 4 skipped";
        let c = total_counts(&[line.to_owned()]).expect("counts");
        assert_eq!(
            c,
            Counts {
                passed: 127,
                failed: 3,
                skipped: 4
            }
        );
        let line = "     Summary [   1.0s] 5 tests run: 4 passed, 1 timed out, 0 skipped";
        assert_eq!(
            parse_counts(line),
            Counts {
                passed: 4,
                failed: 1,
                skipped: 0
            }
        );
    }

    #[test]
    fn sums_cargo_test_results() {
        let lines = [
            "test result: ok. 7 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s",
            "test result: FAILED. 2 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out",
        ]
        .map(String::from);
        let c = total_counts(&lines).expect("counts");
        assert_eq!(
            c,
            Counts {
                passed: 9,
                failed: 1,
                skipped: 1
            }
        );
        assert_eq!(total_counts(&[]), None);
    }

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

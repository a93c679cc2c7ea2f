//! `cargo xtask fuzz [--seconds N] [--ci] [TARGET...]`: builds the cargo-fuzz targets of
//! `fuzz/` (nightly, libFuzzer) and runs each for N seconds, one after another, printing per
//! target the executions, libFuzzer's coverage (`cov:` edges, `ft:` features) and whether it
//! crashed (the input is then under `fuzz/artifacts/<target>/`; copy it to
//! `fuzz/regressions/<target>/` so that the workspace's tests replay it forever).
//!
//! Each target starts from its committed seeds (`fuzz/corpus/<target>/`, only read) and a
//! working corpus of its own under `fuzz/target/corpus/<target>/` (git-ignored), where
//! libFuzzer keeps what it finds; later runs resume from it.
//!
//! With `--ci` the build is `cargo fuzz build --dev -a --sanitizer none`: unoptimized (a
//! smoke test of a few seconds per target gains nothing from optimization, and the build
//! takes about a quarter of the optimized one's time: 4.4 min against 17 min on the 2-core
//! CI machine). Otherwise it is `cargo fuzz build -O -a --sanitizer none`: optimized with debug assertions
//! (integer overflow on network input panics), without AddressSanitizer: the code under test
//! is safe Rust, whose memory errors ASan would not add to, and the C it links (SQLite, zstd,
//! liblzma) is not instrumented by cargo fuzz anyway; ASan costs about 2x in build time and
//! 2-3x in executions.
//!
//! `--ci` is the `cargo xtask ci` step: without a nightly toolchain it says "skipped: no
//! nightly toolchain" and succeeds; without cargo-fuzz it fails and names `.ci/setup`.
//! Nothing it runs sends traffic anywhere but loopback (the TFTP target's server is on
//! 127.0.0.1).

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context as _, bail};

use crate::paths::workspace_root;

/// What libFuzzer said about one run.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Stats {
    execs: Option<u64>,
    cov: Option<u64>,
    ft: Option<u64>,
    corpus: Option<u64>,
    crashed: bool,
    artifact: Option<String>,
}

/// The number after `key` in `line` (`cov: 1234`, `stat::number_of_executed_units: 99`).
fn number_after(line: &str, key: &str) -> Option<u64> {
    let rest = &line[line.find(key)? + key.len()..];
    let digits: String = rest
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

impl Stats {
    /// Takes in one line of libFuzzer's output.
    fn read(&mut self, line: &str) {
        if line.starts_with('#') {
            if let Some(n) = number_after(line, "cov:") {
                self.cov = Some(n);
            }
            if let Some(n) = number_after(line, "ft:") {
                self.ft = Some(n);
            }
            if let Some(n) = number_after(line, "corp:") {
                self.corpus = Some(n);
            }
        }
        if let Some(n) = number_after(line, "stat::number_of_executed_units:") {
            self.execs = Some(n);
        }
        if line.contains("==ERROR: libFuzzer")
            || line.contains("panicked at")
            || line.starts_with("SUMMARY: libFuzzer")
        {
            self.crashed = true;
        }
        if let Some(at) = line.find("Test unit written to ") {
            self.artifact = Some(line[at + "Test unit written to ".len()..].trim().to_owned());
        }
    }
}

/// The targets: `fuzz/fuzz_targets/*.rs`, by name.
fn all_targets(fuzz_dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(fuzz_dir.join("fuzz_targets"))
        .context("reading fuzz/fuzz_targets")?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_suffix(".rs").map(str::to_owned)
        })
        .collect();
    names.sort();
    Ok(names)
}

/// `rustup run nightly cargo ...` in `fuzz/`, without the variables of the stable cargo
/// that started us (a child would otherwise use the pinned stable toolchain).
fn nightly_cargo(fuzz_dir: &Path) -> Command {
    let mut cmd = Command::new("rustup");
    cmd.args(["run", "nightly", "cargo"]).current_dir(fuzz_dir);
    for (key, _) in std::env::vars_os() {
        if let Some(key) = key.to_str()
            && (key.starts_with("CARGO") || key.starts_with("RUSTUP_") || key == "RUSTC")
            && key != "CARGO_HOME"
            && key != "RUSTUP_HOME"
        {
            cmd.env_remove(key);
        }
    }
    cmd
}

fn quiet_ok(mut cmd: Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Arguments after the subcommand.
struct Args {
    seconds: u64,
    ci: bool,
    targets: Vec<String>,
}

fn parse_args(args: &[String]) -> anyhow::Result<Args> {
    let mut out = Args {
        seconds: 60,
        ci: false,
        targets: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--seconds" => {
                let v = it.next().context("--seconds needs a value")?;
                out.seconds = v.parse().with_context(|| format!("--seconds {v}"))?;
            }
            "--ci" => out.ci = true,
            s if s.starts_with('-') => bail!("cargo xtask fuzz: unknown option {s}"),
            s => out.targets.push(s.to_owned()),
        }
    }
    if out.seconds == 0 {
        bail!("--seconds must be at least 1");
    }
    Ok(out)
}

/// Runs one target for `seconds`, streaming its output to ours.
fn run_target(
    fuzz_dir: &Path,
    target: &str,
    seconds: u64,
    profile: &str,
) -> anyhow::Result<(Stats, f64)> {
    let work = fuzz_dir.join("target/corpus").join(target);
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let seeds: PathBuf = fuzz_dir.join("corpus").join(target);
    let mut cmd = nightly_cargo(fuzz_dir);
    cmd.args(["fuzz", "run", profile, "-a", "--sanitizer", "none", target])
        .arg(&work)
        .arg(&seeds)
        .args([
            "--".to_owned(),
            format!("-max_total_time={seconds}"),
            "-print_final_stats=1".to_owned(),
            "-timeout=20".to_owned(),
            "-rss_limit_mb=3072".to_owned(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null());
    let started = Instant::now();
    let mut child = cmd.spawn().context("starting cargo fuzz run")?;
    let stdout = child.stdout.take().context("child stdout")?;
    let stderr = child.stderr.take().context("child stderr")?;
    // libFuzzer writes to stderr; stdout is copied through as it comes.
    let out_thread = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            println!("{line}");
        }
    });
    let mut stats = Stats::default();
    let mut last_status = Instant::now();
    for line in BufReader::new(stderr).lines().map_while(Result::ok) {
        stats.read(&line);
        // The status lines come many a second; show one every 10 s, and everything else.
        let status_line = line.starts_with('#') && !line.contains("DONE");
        if !status_line || last_status.elapsed().as_secs() >= 10 {
            eprintln!("{line}");
            last_status = Instant::now();
        }
    }
    let _ = out_thread.join();
    let status = child.wait().context("waiting for cargo fuzz run")?;
    if !status.success() {
        stats.crashed = true;
    }
    Ok((stats, started.elapsed().as_secs_f64()))
}

fn show(n: Option<u64>) -> String {
    n.map_or_else(|| "?".to_owned(), |n| n.to_string())
}

/// Entry point.
pub fn run(args: &[String]) -> anyhow::Result<()> {
    let args = parse_args(args)?;
    let fuzz_dir = workspace_root().join("fuzz");
    let mut check = Command::new("rustup");
    check.args(["run", "nightly", "rustc", "--version"]);
    if !quiet_ok(check) {
        if args.ci {
            println!(
                "xtask fuzz: skipped: no nightly toolchain (rustup toolchain install nightly)"
            );
            return Ok(());
        }
        bail!("no nightly toolchain: cargo fuzz needs one (rustup toolchain install nightly)");
    }
    let mut version = nightly_cargo(&fuzz_dir);
    version.args(["fuzz", "--version"]);
    if !quiet_ok(version) {
        bail!("cargo-fuzz is not installed: run .ci/setup (it installs the pinned version)");
    }
    let known = all_targets(&fuzz_dir)?;
    let targets = if args.targets.is_empty() {
        known.clone()
    } else {
        for t in &args.targets {
            if !known.contains(t) {
                bail!("no fuzz target {t} (targets: {})", known.join(", "));
            }
        }
        args.targets.clone()
    };

    let started = Instant::now();
    let profile = if args.ci { "--dev" } else { "-O" };
    let mut build = nightly_cargo(&fuzz_dir);
    build.args(["fuzz", "build", profile, "-a", "--sanitizer", "none"]);
    for t in &targets {
        // One build for all of them; `cargo fuzz build` takes one target or none (= all).
        if targets.len() == 1 {
            build.arg(t);
        }
    }
    println!(
        "xtask fuzz: building {} target(s): {build:?}",
        targets.len()
    );
    let status = build.status().context("running cargo fuzz build")?;
    if !status.success() {
        bail!("cargo fuzz build failed");
    }
    let build_secs = started.elapsed().as_secs_f64();

    let mut rows = Vec::new();
    for t in &targets {
        println!();
        println!("=== xtask fuzz: {t} for {} s", args.seconds);
        let (stats, secs) = run_target(&fuzz_dir, t, args.seconds, profile)?;
        rows.push((t.clone(), stats, secs));
    }

    println!();
    println!(
        "xtask fuzz summary (build {build_sec:.0} s, {} s per target, {}, sanitizer none, debug assertions on):",
        args.seconds,
        if args.ci { "unoptimized" } else { "optimized" },
        build_sec = build_secs
    );
    println!(
        "  {:<15} {:>12} {:>7} {:>8} {:>7}  result",
        "target", "execs", "cov", "ft", "corpus"
    );
    let mut crashed = Vec::new();
    for (t, s, _) in &rows {
        println!(
            "  {:<15} {:>12} {:>7} {:>8} {:>7}  {}",
            t,
            show(s.execs),
            show(s.cov),
            show(s.ft),
            show(s.corpus),
            if s.crashed { "CRASH" } else { "0 crashes" }
        );
        if s.crashed {
            crashed.push(t.clone());
        }
    }
    println!("xtask fuzz: total {:.0} s", started.elapsed().as_secs_f64());
    if !crashed.is_empty() {
        for (t, s, _) in &rows {
            if let Some(a) = s.artifact.as_ref().filter(|_| s.crashed) {
                println!("  {t}: crash input {a}; keep it as fuzz/regressions/{t}/<name>");
            }
        }
        bail!(
            "{} target(s) crashed: {}",
            crashed.len(),
            crashed.join(", ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_libfuzzer_final_lines() {
        let mut s = Stats::default();
        for line in [
            "#2\tINITED cov: 812 ft: 1020 corp: 9/2713b exec/s: 0 rss: 48Mb",
            "#65536\tpulse  cov: 1404 ft: 3310 corp: 120/9Kb lim: 652 exec/s: 21845 rss: 60Mb",
            "#98304\tDONE   cov: 1410 ft: 3342 corp: 124/10Kb lim: 800 exec/s: 32768 rss: 61Mb",
            "Done 98304 runs in 3 second(s)",
            "stat::number_of_executed_units: 98304",
        ] {
            s.read(line);
        }
        assert_eq!(
            (s.execs, s.cov, s.ft, s.corpus, s.crashed),
            (Some(98304), Some(1410), Some(3342), Some(124), false)
        );
        s.read("thread '<unnamed>' panicked at fuzz-entries/src/tftp.rs:70:9:");
        s.read("artifact_prefix='/w/fuzz/artifacts/tftp/'; Test unit written to /w/fuzz/artifacts/tftp/crash-ab12");
        assert!(s.crashed);
        assert_eq!(
            s.artifact.as_deref(),
            Some("/w/fuzz/artifacts/tftp/crash-ab12")
        );
    }

    #[test]
    fn parses_arguments() {
        let a = parse_args(&["--seconds".into(), "5".into(), "tftp".into()]).expect("args");
        assert_eq!(
            (a.seconds, a.ci, a.targets),
            (5, false, vec!["tftp".to_owned()])
        );
        assert!(parse_args(&["--seconds".into(), "0".into()]).is_err());
        assert!(parse_args(&["--bogus".into()]).is_err());
    }
}

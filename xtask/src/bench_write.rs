//! `cargo xtask bench write`: time `ingot-agent write-image` against the shell
//! pipeline `curl | tee >(sha256sum) | zstd -d | dd oflag=direct`, in one run,
//! on the same loop device and the same zstd image served on 127.0.0.1.
//! Prints MB/s for both, the ratio, and the agent's peak RSS (for a small and
//! the full image, to show it does not grow with image size).
//!
//! Options: `--size-mib N` (default 1024), `--runs N` (default 2, best of),
//! `--agent PATH` (default: build `--release -p agent` and use it),
//! `--dir PATH` (scratch directory, default /var/tmp).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use sha2::Digest;

const MIB: u64 = 1 << 20;

struct Opts {
    size_mib: u64,
    runs: u32,
    agent: Option<PathBuf>,
    dir: PathBuf,
}

fn parse(args: &[String]) -> anyhow::Result<Opts> {
    let mut o = Opts {
        size_mib: 1024,
        runs: 2,
        agent: None,
        dir: PathBuf::from("/var/tmp"),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--size-mib" => o.size_mib = val()?.parse()?,
            "--runs" => o.runs = val()?.parse()?,
            "--agent" => o.agent = Some(PathBuf::from(val()?)),
            "--dir" => o.dir = PathBuf::from(val()?),
            other => bail!("unknown option {other}; see xtask/src/bench_write.rs"),
        }
    }
    ensure!(o.size_mib >= 64, "--size-mib must be at least 64");
    Ok(o)
}

/// Files and loop devices removed on drop.
struct Scratch {
    files: Vec<PathBuf>,
    loops: Vec<String>,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for l in &self.loops {
            let _ = Command::new("losetup").args(["-d", l]).status();
        }
        for f in &self.files {
            let _ = std::fs::remove_file(f);
        }
    }
}

fn sh(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    ensure!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// An "OS-like" image: a mix of zero runs, text-like repetitive data and
/// incompressible data, so zstd -3 compresses it about 2.5-3x.
fn make_image(path: &Path, size: u64) -> anyhow::Result<()> {
    let mut f = std::io::BufWriter::with_capacity(4 << 20, std::fs::File::create(path)?);
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let words: Vec<&[u8]> = vec![
        b"usr/lib/x86_64-linux-gnu/",
        b"libc.so.6 ",
        b"#include <stdio.h>\n",
        b"ELF\x02\x01\x01",
        b"systemd ",
        b"0000000000000000",
    ];
    let mut block = vec![0u8; 64 * 1024];
    for _ in 0..size / block.len() as u64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        match x % 20 {
            // Zero runs (free space, padding).
            0..=5 => block.fill(0),
            // Text and code-like data with some entropy (compresses ~3-5x).
            6..=11 => {
                let mut i = 0;
                let mut y = x;
                while i < block.len() {
                    y = y
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let w = words[(y >> 60) as usize % words.len()];
                    let n = w.len().min(block.len() - i);
                    block[i..i + n].copy_from_slice(&w[..n]);
                    i += n;
                    if i + 4 < block.len() {
                        block[i..i + 4]
                            .copy_from_slice(&((y >> 20) as u32 % 100_000).to_le_bytes());
                        i += 4;
                    }
                }
            }
            // Already-compressed data (packages, firmware, images).
            _ => {
                // Seed independently of the block sequence (a shifted xorshift
                // stream would be a long match for zstd).
                let mut y = x.wrapping_mul(0xbf58_476d_1ce4_e5b9) ^ 0x94d0_49bb_1331_11eb;
                for c in block.chunks_mut(8) {
                    y ^= y << 13;
                    y ^= y >> 7;
                    y ^= y << 17;
                    c.copy_from_slice(&y.to_le_bytes()[..c.len()]);
                }
            }
        }
        f.write_all(&block)?;
    }
    f.flush()?;
    drop(f);
    write_mbr(path, size)
}

/// Puts an MBR with one Linux partition (1 MiB to the end) on the image: the agent only
/// writes whole-disk images, which start with a partition table.
fn write_mbr(path: &Path, size: u64) -> anyhow::Result<()> {
    use std::io::{Seek as _, SeekFrom};
    let mut mbr = [0u8; 512];
    let start: u32 = 2048;
    let sectors = u32::try_from(size / 512)
        .unwrap_or(u32::MAX)
        .saturating_sub(start);
    let entry = &mut mbr[446..462];
    entry[4] = 0x83;
    entry[8..12].copy_from_slice(&start.to_le_bytes());
    entry[12..16].copy_from_slice(&sectors.to_le_bytes());
    mbr[510] = 0x55;
    mbr[511] = 0xaa;
    let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
    f.seek(SeekFrom::Start(0))?;
    f.write_all(&mbr)?;
    Ok(())
}

/// Serve one file over HTTP/1.1 on 127.0.0.1 (GET, optional `Range: bytes=N-`).
fn serve(path: PathBuf) -> anyhow::Result<String> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    let url = format!("http://{}/image.zst", l.local_addr()?);
    std::thread::spawn(move || {
        for conn in l.incoming().flatten() {
            let path = path.clone();
            std::thread::spawn(move || {
                let _ = handle(conn, &path);
            });
        }
    });
    Ok(url)
}

fn handle(conn: TcpStream, path: &Path) -> std::io::Result<()> {
    let mut rd = BufReader::new(conn.try_clone()?);
    let mut from = 0u64;
    loop {
        let mut line = String::new();
        if rd.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("range: bytes=") {
            from = v.trim().trim_end_matches('-').parse().unwrap_or(0);
        }
    }
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    let mut w = conn;
    if from > 0 {
        write!(
            w,
            "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {from}-{}/{len}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            len - 1,
            len - from
        )?;
        std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(from))?;
    } else {
        write!(
            w,
            "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
        )?;
    }
    std::io::copy(&mut f, &mut w)?;
    Ok(())
}

/// Run a command, polling its peak RSS (VmHWM) until it exits.
fn timed(cmd: &mut Command) -> anyhow::Result<(Duration, u64)> {
    let t = Instant::now();
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawning {cmd:?}"))?;
    let status_path = format!("/proc/{}/status", child.id());
    let mut hwm_kib = 0u64;
    let mut stderr = child.stderr.take().context("stderr")?;
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let status = loop {
        let status = std::fs::read_to_string(&status_path).unwrap_or_default();
        if let Some(v) = status.lines().find_map(|l| l.strip_prefix("VmHWM:")) {
            hwm_kib = hwm_kib.max(v.trim().trim_end_matches("kB").trim().parse().unwrap_or(0));
        }
        if let Some(st) = child.try_wait()? {
            break st;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let elapsed = t.elapsed();
    let err = err_reader.join().unwrap_or_default();
    ensure!(status.success(), "{cmd:?} failed: {err}");
    Ok((elapsed, hwm_kib * 1024))
}

fn agent_binary(o: &Opts) -> anyhow::Result<PathBuf> {
    if let Some(a) = &o.agent {
        return Ok(a.clone());
    }
    sh(crate::paths::cargo().args(["build", "--release", "-p", "agent", "--bin", "ingot-agent"]))?;
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    Ok(target.join("release/ingot-agent"))
}

fn prepare(
    o: &Opts,
    scratch: &mut Scratch,
    tag: &str,
    size: u64,
) -> anyhow::Result<(String, String, String)> {
    let raw = o.dir.join(format!("ingot-bench-{tag}.img"));
    let zst = o.dir.join(format!("ingot-bench-{tag}.img.zst"));
    let backing = o.dir.join(format!("ingot-bench-{tag}.disk"));
    scratch
        .files
        .extend([raw.clone(), zst.clone(), backing.clone()]);
    make_image(&raw, size)?;
    sh(Command::new("zstd")
        .args(["-q", "-f", "-3", "-T0"])
        .arg(&raw)
        .arg("-o")
        .arg(&zst))?;
    std::fs::remove_file(&raw)?;
    let data = std::fs::read(&zst)?;
    let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&data)));
    drop(data);
    std::fs::File::create(&backing)?.set_len(size + 64 * MIB)?;
    let mut lo = Command::new("losetup");
    lo.args(["-f", "--show", "--direct-io=on"]).arg(&backing);
    let dev = match sh(&mut lo) {
        Ok(d) => d,
        Err(_) => sh(Command::new("losetup").args(["-f", "--show"]).arg(&backing))?,
    };
    let dev = dev.trim().to_string();
    scratch.loops.push(dev.clone());
    let url = serve(zst)?;
    Ok((url, digest, dev))
}

fn mbps(size: u64, d: Duration) -> f64 {
    size as f64 / d.as_secs_f64() / 1e6
}

/// Entry point: `cargo xtask bench write [options]`.
pub fn run(args: &[String]) -> anyhow::Result<()> {
    let o = parse(args)?;
    let agent = agent_binary(&o)?;
    let size = o.size_mib * MIB;
    let mut scratch = Scratch {
        files: vec![],
        loops: vec![],
    };
    eprintln!(
        "bench write: preparing a {} MiB OS-like image (zstd -3)",
        o.size_mib
    );
    let (url, digest, dev) = prepare(&o, &mut scratch, "main", size)?;
    let zsize = std::fs::metadata(o.dir.join("ingot-bench-main.img.zst"))?.len();

    let agent_cmd = |url: &str, digest: &str, dev: &str| {
        let mut c = Command::new(&agent);
        c.args([
            "write-image",
            "--url",
            url,
            "--checksum",
            digest,
            "--device",
            dev,
        ]);
        c
    };
    let pipeline = format!(
        "set -o pipefail; curl -sf {url} | tee >(sha256sum > {sum}) | zstd -d -q | dd of={dev} bs=4M oflag=direct iflag=fullblock status=none && sync",
        sum = o.dir.join("ingot-bench.sha256").display()
    );
    scratch.files.push(o.dir.join("ingot-bench.sha256"));

    let mut best_agent = Duration::MAX;
    let mut best_pipe = Duration::MAX;
    let mut rss_main = 0;
    for run in 1..=o.runs {
        let (t, rss) = timed(&mut agent_cmd(&url, &digest, &dev))?;
        rss_main = rss_main.max(rss);
        best_agent = best_agent.min(t);
        let (p, _) = timed(Command::new("bash").arg("-c").arg(&pipeline))?;
        best_pipe = best_pipe.min(p);
        eprintln!(
            "run {run}: agent {:.0} MB/s, pipeline {:.0} MB/s",
            mbps(size, t),
            mbps(size, p)
        );
    }
    let piped_sum = std::fs::read_to_string(o.dir.join("ingot-bench.sha256"))?;
    ensure!(
        digest.ends_with(piped_sum.split_whitespace().next().unwrap_or("?")),
        "pipeline checksum differs"
    );

    // Peak RSS with a 4x smaller image: it must not grow with the image.
    let small = (size / 4).max(64 * MIB);
    let (surl, sdigest, sdev) = prepare(&o, &mut scratch, "small", small)?;
    let (_, rss_small) = timed(&mut agent_cmd(&surl, &sdigest, &sdev))?;

    let a = mbps(size, best_agent);
    let p = mbps(size, best_pipe);
    println!(
        "image: {} MiB raw, {:.1} MiB zstd -3, device {dev}",
        o.size_mib,
        zsize as f64 / MIB as f64
    );
    println!(
        "ingot-agent write-image (verified sha256, O_DIRECT): {a:.0} MB/s ({:.2} s)",
        best_agent.as_secs_f64()
    );
    println!(
        "curl | tee >(sha256sum) | zstd -d | dd oflag=direct:     {p:.0} MB/s ({:.2} s)",
        best_pipe.as_secs_f64()
    );
    println!("ratio agent/pipeline: {:.2}", a / p);
    println!(
        "agent peak RSS: {:.1} MiB for {} MiB image, {:.1} MiB for {} MiB image",
        rss_main as f64 / MIB as f64,
        o.size_mib,
        rss_small as f64 / MIB as f64,
        small / MIB
    );
    Ok(())
}

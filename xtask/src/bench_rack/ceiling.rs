//! Loopback's ceiling for `cargo xtask bench rack`'s image fan-out: the same bytes over
//! plain TCP from memory, what the kernel moves on this machine.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;

/// Loopback's ceiling: `count` TCP connections at once (at most 64 threads each side),
/// each carrying `image` from memory to a reader that discards it, 1 MiB per system call;
/// bytes per second over the whole. No HTTP, no TLS: what the kernel moves.
///
/// The best of three runs: the figure swings by a quarter between runs on a shared machine,
/// and a ceiling too low would flatter the fan-out.
pub async fn loopback(image: &[u8], count: usize) -> anyhow::Result<f64> {
    let image = Arc::new(image.to_vec());
    tokio::task::spawn_blocking(move || -> anyhow::Result<f64> {
        let mut best: f64 = 0.0;
        for _ in 0..3 {
            best = best.max(raw_ceiling(&image, count)?);
        }
        Ok(best)
    })
    .await
    .context("joining the ceiling run")?
}

fn raw_ceiling(image: &Arc<Vec<u8>>, count: usize) -> anyhow::Result<f64> {
    use std::io::{Read as _, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let lanes = count.clamp(1, 64);
    let per_lane = count.div_ceil(lanes);
    let started = Instant::now();
    let total = std::thread::scope(|s| -> anyhow::Result<u64> {
        let server = s.spawn(|| {
            let mut writers = Vec::new();
            for _ in 0..lanes {
                let Ok((mut conn, _)) = listener.accept() else {
                    break;
                };
                let image = image.clone();
                writers.push(std::thread::spawn(move || {
                    for _ in 0..per_lane {
                        for chunk in image.chunks(1 << 20) {
                            if conn.write_all(chunk).is_err() {
                                return;
                            }
                        }
                    }
                }));
            }
            for w in writers {
                let _ = w.join();
            }
        });
        let readers: Vec<_> = (0..lanes)
            .map(|_| {
                s.spawn(move || -> anyhow::Result<u64> {
                    let mut conn = std::net::TcpStream::connect(addr)?;
                    let mut buf = vec![0u8; 1 << 20];
                    let mut got = 0u64;
                    loop {
                        match conn.read(&mut buf)? {
                            0 => return Ok(got),
                            n => got += n as u64,
                        }
                    }
                })
            })
            .collect();
        let mut total = 0;
        for r in readers {
            total += r.join().map_err(|_| anyhow::anyhow!("reader panicked"))??;
        }
        let _ = server.join();
        Ok(total)
    })?;
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

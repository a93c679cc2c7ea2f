//! Project automation (see matklad/cargo-xtask). Minimal dispatcher; the lead
//! merges this with the full xtask main.

mod bench_write;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.get(..2) {
        Some([a, b]) if a == "bench" && b == "write" => bench_write::run(&args[2..]),
        _ => anyhow::bail!(
            "usage: cargo xtask bench write [--size-mib N] [--runs N] [--agent PATH] [--dir PATH]"
        ),
    }
}

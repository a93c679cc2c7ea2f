//! `cargo xtask`: project automation for Ingot.
//!
//! Subcommands, one file each: `ci` (fmt, clippy, all tests, the package check, a short fuzz
//! run), `fuzz` (the cargo-fuzz targets of `fuzz/`), `bench api [--peer ironic]`, `bench dhcp`, `bench rack`, `bench write`,
//! `bench tls`, `image`, `initramfs`, `lab`, `package` (the Debian package), `tidy` (structure
//! checks), and `ironic serve|clients` (the real Ironic peer used by the API bench and to validate the client
//! session scripts). Keep dependencies minimal.

mod bench_api;
mod bench_dhcp;
mod bench_rack;
mod bench_tls;
mod bench_write;
mod ci;
mod fuzz;
mod image;
mod initramfs;
mod ironic;
mod lab;
mod package;
mod paths;
mod proc_stats;
mod pyvenv;
mod server;
mod tidy;

const USAGE: &str = "usage: cargo xtask <command>
  ci                      cargo fmt --check, clippy -D warnings, cargo deny, all tests; reports every failure
  fuzz [--seconds N] [TARGET...]
                          build the cargo fuzz targets (nightly) and run each N s (default 60);
                          prints executions, cov/ft and crashes per target
  bench api [--secure] [--peer ironic] [--skip-ingot] [--nodes N] [--lifecycle N] ...
                          operator API bench (release build); --secure adds ingot with http_basic
                          over HTTPS, --peer real Ironic 39.0.0
  bench write [...]       image write bench
  bench rack [--agents N] [--image-mib M] [--replicas R] [--pin]
                          N simulated machines discovered, cleaned, deployed, released (release build)
  bench dhcp [--clients N] [--release]
                          PXE storm (root): N machines DISCOVER at once against ingot serve and
                          dnsmasq in network namespaces; answered, drops, offers/s, CPU
  bench tls [--requests N] [--release]
                          agent heartbeats over HTTPS vs plain HTTP on 127.0.0.1 (handshake cost)
  image debian [--force] [--mirror URL]
                          build target/images/debian-12.{raw,qcow2} (cloud-init, ssh; BIOS+UEFI; root)
  initramfs --profile qemu|generic [--kver K] [--agent PATH] [--level N]
                          build target/initramfs/<profile>/{initramfs.cpio.zst,vmlinuz}
  lab [--keep]            the virtual rack (root): BMC machines discovered, deployed, released
  package [--profile release|dev] [--check]
                          target/package/ingot_<version>_amd64.deb; --check installs it in a private root
  ironic serve [--port N] run real Ironic 39.0.0 standalone on 127.0.0.1 (fake-hardware, sqlite)
  ironic clients          run controller/tests/clients/*.py against a fresh real Ironic
  tidy                    structure checks: no module cycle in controller/src, agent init -> run one-way";

fn main() {
    // An anyhow error returned from main would print a backtrace when RUST_BACKTRACE is set;
    // the message chain is what the reader needs.
    if let Err(err) = run() {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    // reqwest is built without a default crypto provider; pin ring once for the process.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rest = |n: usize| args.get(n..).unwrap_or(&[]);
    match (
        args.first().map(String::as_str),
        args.get(1).map(String::as_str),
    ) {
        (Some("ci"), _) => ci::run(rest(1)),
        (Some("fuzz"), _) => fuzz::run(rest(1)),
        (Some("bench"), Some("api")) => bench_api::run(rest(2)),
        (Some("bench"), Some("dhcp")) => bench_dhcp::run(rest(2)),
        (Some("bench"), Some("dhcp-load")) => bench_dhcp::load::run(rest(2)),
        (Some("bench"), Some("rack")) => bench_rack::run(rest(2)),
        (Some("bench"), Some("write")) => bench_write::run(rest(2)),
        (Some("bench"), Some("tls")) => bench_tls::run(rest(2)),
        (Some("image"), _) => image::run_task(rest(1)),
        (Some("initramfs"), _) => initramfs::run(&paths::workspace_root(), rest(1)),
        (Some("ironic"), _) => ironic::run(rest(1)),
        (Some("lab"), _) => lab::run(rest(1)),
        (Some("package"), _) => package::run(rest(1)),
        (Some("tidy"), _) => tidy::run(rest(1)),
        (Some("-h" | "--help" | "help"), _) => {
            println!("{USAGE}");
            Ok(())
        }
        _ => anyhow::bail!("{USAGE}"),
    }
}

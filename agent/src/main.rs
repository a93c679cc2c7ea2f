//! `ingot-agent`: PID 1 of the deploy ramdisk (when it is PID 1 or runs as `/init`), else a
//! command-line tool.

fn main() -> std::process::ExitCode {
    let argv0 = std::env::args().next().unwrap_or_default();
    if std::process::id() == 1 || argv0 == "/init" {
        agent::init::pid1_main()
    }
    agent::cli::main()
}

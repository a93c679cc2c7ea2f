//! `lab-chassis SOCKET REQUEST...`: sends one request to a lab machine's power socket
//! (`qemu_tests::power`) and prints the answer. ipmi_sim runs it as its chassis control
//! program (`PROG get power boot`, `PROG set power "1"`, ...); people can run it too
//! (`lab-chassis vm1/power.sock status`). Exit status 1 and the error on stderr when the
//! request fails.

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((socket, request)) = args.split_first() else {
        eprintln!("usage: lab-chassis SOCKET on|off|soft|reset|status|bootdev pxe|disk [once]");
        return std::process::ExitCode::from(2);
    };
    match qemu_tests::power::client_request(std::path::Path::new(socket), &request.join(" ")) {
        Ok(out) => {
            print!("{out}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("lab-chassis: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

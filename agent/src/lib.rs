//! Ingot deploy agent: hardware inventory, verified streaming image writer,
//! disk wipe and config drive. The binary (`ingot-agent`) is a thin CLI over
//! these modules, and runs as PID 1 of the deploy ramdisk ([`init`]) where it speaks the
//! agent protocol ([`run`]).

pub mod bmc;
pub mod boot;
pub mod cli;
pub mod cmdline;
pub mod configdrive;
pub mod events;
pub mod hints;
pub mod host;
pub mod image;
pub mod init;
pub mod inventory;
pub mod md;
pub mod raid;
pub mod redact;
pub mod run;
pub mod steps;
pub mod wipe;

/// Render an error and its sources as `a: b: c`, for logs and reports.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// The sources of an error, outermost first, without the error itself.
pub fn error_causes(e: &dyn std::error::Error) -> Vec<String> {
    let mut v = Vec::new();
    let mut cur = e.source();
    while let Some(c) = cur {
        v.push(c.to_string());
        cur = c.source();
    }
    v
}

/// A command's failure report for an error: its chain as the message, its sources as the
/// causes.
pub(crate) fn failed(e: &anyhow::Error, phase: Option<proto::Phase>) -> proto::protocol::Report {
    proto::protocol::Report::Failed {
        error: proto::ErrorReport {
            phase,
            message: format!("{e:#}"),
            causes: e.chain().skip(1).map(|c| c.to_string()).collect(),
        },
    }
}

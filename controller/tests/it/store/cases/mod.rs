//! The cases of the suite; each takes a fresh database.

mod conductors;
mod deploy_templates;
mod dhcp_batch;
mod inspection_rules;
mod leases;
mod locks;
mod misc;
mod nodes;
mod related;

pub use conductors::*;
pub use deploy_templates::*;
pub use dhcp_batch::*;
pub use inspection_rules::*;
pub use leases::*;
pub use locks::*;
pub use misc::*;
pub use nodes::*;
pub use related::*;

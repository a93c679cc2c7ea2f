//! The cases of the suite; each takes a fresh database.

mod conductors;
mod leases;
mod locks;
mod misc;
mod nodes;
mod related;

pub use conductors::*;
pub use leases::*;
pub use locks::*;
pub use misc::*;
pub use nodes::*;
pub use related::*;

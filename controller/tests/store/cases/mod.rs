//! The cases of the suite; each takes a fresh database.

mod misc;
mod nodes;
mod related;

pub use misc::*;
pub use nodes::*;
pub use related::*;

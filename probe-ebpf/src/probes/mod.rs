//! Program entry points, one hook family per file.

pub mod drops;
pub mod flush;
pub mod noop;
pub mod payload;
pub mod socket;
pub mod tcp;

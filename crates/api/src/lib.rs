//! Types that cross process boundaries: node-probe window summaries (JSON over HTTP) and,
//! behind the `crd` feature, the netdx.io custom resources.
#![warn(missing_docs)]

pub mod targets;
pub mod windows;

#[cfg(feature = "crd")]
pub mod crd;

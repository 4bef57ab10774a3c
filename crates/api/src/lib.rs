//! Types that cross process boundaries: node-probe window summaries (postcard or JSON over
//! HTTP, see [`wire`]) and,
//! behind the `crd` feature, the netdx.io custom resources.
#![warn(missing_docs)]

pub mod targets;
pub mod windows;
pub mod wire;

#[cfg(feature = "crd")]
pub mod crd;

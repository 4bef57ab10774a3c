//! Types that cross process boundaries: node-probe window summaries (postcard or JSON over
//! HTTP, see [`wire`]) and,
//! behind the `crd` feature, the netdx.io custom resources.
#![warn(missing_docs)]

/// The string type of names and addresses in [`targets::PodRef`] and [`windows::EdgeKey`].
pub use compact_str::CompactString;

pub mod targets;
pub mod windows;
pub mod wire;

#[cfg(feature = "crd")]
pub mod crd;

/// Consecutive windows a finding must show in before it is reported as an incident, unless a
/// NetworkObservation's `reportPolicy.confirmWindows` says otherwise.
pub const DEFAULT_CONFIRM_WINDOWS: u32 = 2;

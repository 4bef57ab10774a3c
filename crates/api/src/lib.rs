//! Types that cross process boundaries: node-probe window summaries (JSON over HTTP).
pub mod targets;
pub mod windows;

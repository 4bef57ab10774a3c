//! netdx diagnosis: from per-node window summaries to root causes and the instance to blame.
//!
//! Pipeline per window: [`join`] merges the node-probes' reports into edges seen from both
//! ends, [`features`] turns each edge into a fixed, versioned feature vector (with ratios to
//! the edge's own healthy baseline), a classifier ([`rules`] or the trained [`model`]) names a
//! [`classes::RootCause`] per edge, and [`localize`] votes across edges to name the pod, node,
//! node pair or service responsible. [`dataset`] holds the labelled-row format, grouped splits
//! and evaluation metrics used to train and score the model; [`confirm`] holds findings back
//! until they repeat.

#![warn(missing_docs)]

pub mod classes;
pub mod confirm;
pub mod dataset;
pub mod eval;
pub mod features;
pub mod join;
pub mod localize;
pub mod model;
#[cfg(feature = "crd")]
pub mod report;
pub mod rules;

mod error;

pub use error::{Error, Result};

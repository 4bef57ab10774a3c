//! netdx operator: resolves NetworkObservations to per-node probe target sets, keeps their
//! status and conditions, and drives on-demand DiagnosisReports.
//!
//! Binaries are thin: `main.rs` runs the controllers and the HTTP server, `bin/crdgen.rs`
//! prints the CRDs.

#![warn(missing_docs)]

pub mod auth;
pub mod classifier;
pub mod conditions;
pub mod context;
pub mod controller;
pub mod crdgen;
pub mod engine;
pub mod error;
pub mod http;
pub mod incidents;
pub mod ingest;
pub mod leader;
pub mod metrics;
pub mod probe_health;
pub mod reconcile;
pub mod report;
pub mod services;
pub mod targets;

pub use context::{Context, State};
pub use error::{Error, Result};

/// Field manager name for server-side apply; owns the status fields the operator writes.
pub const FIELD_MANAGER: &str = "netdx-operator";

#[cfg(test)]
mod fixtures;

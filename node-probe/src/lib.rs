//! netdx node-probe: loads the eBPF programs, turns their records into per-window
//! summaries of edges and pods, and serves them.
pub mod batches;
pub mod btf;
pub mod histogram;
pub mod http;
pub mod ingest;
pub mod loader;
pub mod metrics;
pub mod operator_client;
pub mod pods;
pub mod podstats;
pub mod protocols;
pub mod push;
pub mod records;
pub mod targets_client;
pub mod windows;

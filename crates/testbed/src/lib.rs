//! netdx testbed: a small simulated cluster on one Linux box.
//!
//! "Nodes" are network namespaces with a bridge, joined through a fabric namespace by one
//! uplink each, so that a node-to-node link is a real place to inject faults. "Pods" are
//! network namespaces attached to their node's bridge, and their processes run in
//! kubelet-style cgroups (cgroup v2 for identity, v1 cpu for CPU limits). Every object
//! carries the testbed's prefix; [`cleanup::cleanup_all`] removes leftovers after a crash.
pub mod cgroups;
pub mod cleanup;
pub mod dns;
pub mod echo;
pub mod exec;
pub mod faults;
pub mod netns;
pub mod servers;
pub mod topology;
pub mod workloads;

pub use topology::{PodHandle, Testbed, TestbedSpec};

/// Prefix of every object the testbed creates (namespaces, cgroups, nft tables).
pub const PREFIX: &str = "ndx";

/// Errors of the testbed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A command (ip, nft, tc, a server) failed.
    #[error("{cmd}: {detail}")]
    Command {
        /// The command line.
        cmd: String,
        /// Exit status and stderr.
        detail: String,
    },
    /// Filesystem or syscall failure.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A server did not become ready.
    #[error("{0} not ready after {1:?}")]
    NotReady(String, std::time::Duration),
    /// Output of a tool could not be parsed.
    #[error("parsing output of {tool}: {detail}")]
    Parse {
        /// Tool.
        tool: String,
        /// What was wrong.
        detail: String,
    },
    /// Invalid request (unknown pod, bad spec).
    #[error("{0}")]
    Invalid(String),
}

/// Result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Wraps an io::Error with context.
pub(crate) fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

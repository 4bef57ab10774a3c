//! netdx benchmarks (`make bench`): the application impact of the node-probe next to bpftrace,
//! the kernel cost of each hook, how fast records are collected, and how memory and the
//! operator's ingest grow with connections and pods. Every number lands in one CSV row with
//! the command that produced it; `report` turns them into summary.json, plots and a table.
pub mod bpftrace;
pub mod conditions;
pub mod cputime;
pub mod hold;
pub mod hooks;
pub mod impact;
pub mod ingest;
pub mod kernel_path;
pub mod machine;
pub mod paced;
pub mod pingpong;
pub mod pipeline;
pub mod plan;
pub mod plots;
pub mod probe;
pub mod procfs;
pub mod progress;
pub mod report;
pub mod scale;
pub mod stats;
pub mod world;

/// Errors of the benchmark harness.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The testbed failed (namespaces, servers, workloads).
    #[error(transparent)]
    Testbed(#[from] netdx_testbed::Error),
    /// Filesystem, socket or process failure.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Output of a tool or a /proc file could not be parsed.
    #[error("parsing {what}: {detail}")]
    Parse {
        /// What was parsed.
        what: String,
        /// What was wrong.
        detail: String,
    },
    /// A process the harness started (node-probe, bpftrace, a client) failed.
    #[error("{0}")]
    Process(String),
    /// eBPF objects could not be inspected.
    #[error("eBPF: {0}")]
    Bpf(String),
    /// A plot could not be drawn.
    #[error("plot {file}: {detail}")]
    Plot {
        /// Output file.
        file: String,
        /// Cause.
        detail: String,
    },
    /// JSON encoding or decoding failed.
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// Window reports did not encode or decode.
    #[error("window reports: {0}")]
    Wire(#[from] netdx_api::wire::WireError),
    /// The user asked to stop (Ctrl-C).
    #[error("interrupted")]
    Interrupted,
}

/// Set when the user asks to stop; sections check it between steps.
static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Asks every section to stop at its next step.
pub fn request_stop() {
    STOP.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// `Err(Interrupted)` once a stop was requested.
pub fn check_stop() -> Result<()> {
    if STOP.load(std::sync::atomic::Ordering::SeqCst) {
        Err(Error::Interrupted)
    } else {
        Ok(())
    }
}

/// Result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Wraps an io::Error with context.
pub(crate) fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

/// Raises this process's soft open-file limit to `n`, or to the hard limit when that is lower
/// (raising the hard limit needs CAP_SYS_RESOURCE, which containers often lack); returns the
/// limit in force.
pub fn raise_nofile(n: u64) -> Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls with a valid pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io_err("reading RLIMIT_NOFILE")(
            std::io::Error::last_os_error(),
        ));
    }
    lim.rlim_cur = n.min(lim.rlim_max);
    // SAFETY: as above.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        return Err(
            io_err(format!("raising RLIMIT_NOFILE to {}", lim.rlim_cur))(
                std::io::Error::last_os_error(),
            ),
        );
    }
    Ok(lim.rlim_cur)
}

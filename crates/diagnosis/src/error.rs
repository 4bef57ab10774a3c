//! The crate's one error type.

use std::path::PathBuf;

/// Errors of the diagnosis crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done ("reading model", ...).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A model file is not valid JSON of the expected shape.
    #[error("model file is corrupt: {0}")]
    ModelParse(#[source] serde_json::Error),
    /// A model or dataset was built for another feature schema.
    #[error("feature schema mismatch: file has version {found}, this build expects {expected}")]
    SchemaMismatch {
        /// Version found in the file.
        found: u32,
        /// Version this build computes.
        expected: u32,
    },
    /// A model parsed but is internally inconsistent (bad index, wrong feature list, ...).
    #[error("invalid model: {0}")]
    InvalidModel(String),
    /// Training failed or was given unusable data.
    #[error("training failed: {0}")]
    Train(String),
    /// A dataset line could not be parsed.
    #[error("dataset line {line}: {message}")]
    Dataset {
        /// 1-based line number.
        line: usize,
        /// What was wrong.
        message: String,
    },
    /// Serialising to JSON failed.
    #[error("serialising {what}: {source}")]
    Serialize {
        /// What was being written.
        what: &'static str,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },
}

/// Result with the crate's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

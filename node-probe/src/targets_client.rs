//! Cluster mode: the probe fetches its target set from the operator (`GET
//! /v1/targets/{node}`) and writes it atomically to the file the agent watches, so the agent
//! reads its targets the same way with or without an operator. A failed fetch (operator down,
//! token refused, bad answer) leaves the file alone: the probe keeps watching the last good set.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Uri};
use netdx_api::targets::TargetSet;
use tracing::{debug, info, warn};

use crate::ingest::Shared;
use crate::operator_client::{ChannelError, OperatorClient};

/// Where the fetched set is cached when `--targets` is not given.
pub const DEFAULT_CACHE: &str = "/var/run/netdx/targets.json";
/// How often the operator is asked (the agent re-reads the file every second).
pub const POLL: Duration = Duration::from_secs(5);
/// Failures in a row between two warnings (one a minute at [`POLL`]); the others are debug.
const WARN_EVERY: u64 = 12;

/// Why a fetch did not update the cached set.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The URL, the token or the connection failed.
    #[error(transparent)]
    Channel(#[from] ChannelError),
    /// The operator answered with an error status.
    #[error("operator answered {0}")]
    Status(StatusCode),
    /// The answer is not a target set.
    #[error("operator's answer is not a target set: {0}")]
    Decode(#[source] serde_json::Error),
    /// The cache file could not be written.
    #[error("writing {path}: {source}")]
    Write {
        /// The cache file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl FetchError {
    /// Short stable label for the failure metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            FetchError::Channel(ChannelError::Url(..)) => "url",
            FetchError::Channel(ChannelError::Token { .. }) => "token",
            FetchError::Channel(ChannelError::Transport(_)) => "transport",
            FetchError::Status(_) => "status",
            FetchError::Decode(_) => "decode",
            FetchError::Write { .. } => "write",
        }
    }
}

/// Keeps the targets file in step with what the operator hands this node.
pub struct TargetsClient {
    operator: OperatorClient,
    endpoint: Uri,
    cache: PathBuf,
    /// What the file holds now (as written by us), so unchanged sets are not rewritten.
    written: Option<Vec<u8>>,
}

impl TargetsClient {
    /// A client for `node`'s set at the operator `base`, cached in `cache`.
    pub fn new(
        base: &str,
        node: &str,
        token_file: PathBuf,
        cache: PathBuf,
    ) -> Result<Self, FetchError> {
        let operator = OperatorClient::new(base, token_file)?;
        if let Some(dir) = cache.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| FetchError::Write {
                path: cache.clone(),
                source,
            })?;
        }
        Ok(TargetsClient {
            endpoint: operator.endpoint(&format!("/v1/targets/{node}"))?,
            operator,
            // A set cached by an earlier run (the emptyDir outlives container restarts) need not
            // be written again when the operator still hands out the same one.
            written: std::fs::read(&cache).ok(),
            cache,
        })
    }

    /// The cache file the agent watches.
    pub fn cache(&self) -> &Path {
        &self.cache
    }

    /// Fetches the set once and writes it when it changed; returns whether the file changed.
    pub async fn sync_once(&mut self) -> Result<bool, FetchError> {
        let (status, body) = self
            .operator
            .send(Request::get(self.endpoint.clone()), Bytes::new())
            .await?;
        if !status.is_success() {
            return Err(FetchError::Status(status));
        }
        let set: TargetSet = serde_json::from_slice(&body).map_err(FetchError::Decode)?;
        // Written re-serialised: the file then holds exactly what the agent will parse.
        let bytes = serde_json::to_vec(&set).map_err(FetchError::Decode)?;
        if self.written.as_deref() == Some(&bytes[..]) {
            return Ok(false);
        }
        write_atomically(&self.cache, &bytes).map_err(|source| FetchError::Write {
            path: self.cache.clone(),
            source,
        })?;
        debug!(pods = set.pods.len(), file = %self.cache.display(), "target set updated");
        self.written = Some(bytes);
        Ok(true)
    }

    /// Makes sure the agent finds a file: without a cached set, an empty one (nothing
    /// watched yet) rather than a missing file it would complain about every second.
    pub fn ensure_cache(&mut self) -> Result<(), FetchError> {
        if self.written.is_some() || self.cache.exists() {
            return Ok(());
        }
        let bytes = serde_json::to_vec(&TargetSet::default()).map_err(FetchError::Decode)?;
        write_atomically(&self.cache, &bytes).map_err(|source| FetchError::Write {
            path: self.cache.clone(),
            source,
        })?;
        self.written = Some(bytes);
        Ok(())
    }

    /// Polls the operator every [`POLL`], forever, counting fetches and failures.
    pub async fn run(mut self, shared: Arc<Shared>) {
        let mut failures = 0u64;
        loop {
            tokio::time::sleep(POLL).await;
            let result = self.sync_once().await;
            if let Ok(mut m) = shared.metrics.lock() {
                match &result {
                    Ok(_) => m.targets_fetched(),
                    Err(e) => m.targets_fetch_failed(e.metric_label()),
                }
            }
            match result {
                Ok(_) if failures > 0 => {
                    info!(after = failures, "target set fetched again");
                    failures = 0;
                }
                Ok(_) => {}
                Err(e) => {
                    failures += 1;
                    if failures % WARN_EVERY == 1 {
                        warn!(error = %e, failures, "fetching targets failed; keeping the last good set");
                    } else {
                        debug!(error = %e, failures, "fetching targets failed");
                    }
                }
            }
        }
    }
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename, so
/// a reader sees the old content or the new, never a torn file.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp.{}", std::process::id()));
    let tmp = path.with_file_name(name);
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use axum::{
        Router,
        extract::{Path as UrlPath, State},
        http::{HeaderMap, StatusCode as AxStatus},
        routing::get,
    };
    use netdx_api::targets::{PodRef, PodTarget};

    use super::*;

    /// What the fake operator answers with a valid token.
    #[derive(Clone)]
    enum Answer {
        Set(TargetSet),
        Garbage,
    }

    fn set(pods: &[&str]) -> TargetSet {
        TargetSet {
            pods: pods
                .iter()
                .map(|name| PodTarget {
                    pod: PodRef {
                        namespace: "shop".into(),
                        name: (*name).into(),
                    },
                    uid: Some(format!("uid-{name}")),
                    node: "node-1".into(),
                    ip: "10.0.1.5".into(),
                    cgroup_path: String::new(),
                    netns_path: String::new(),
                    cpu_cgroup_path: None,
                    watched: true,
                    payload: Default::default(),
                })
                .collect(),
        }
    }

    /// The operator's /v1/targets/{node}: 401 without `Bearer tok`, 404 for other nodes.
    async fn targets(
        State(answer): State<Arc<Mutex<Answer>>>,
        UrlPath(node): UrlPath<String>,
        headers: HeaderMap,
    ) -> (AxStatus, String) {
        let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
        if auth != Some("Bearer tok") {
            return (
                AxStatus::UNAUTHORIZED,
                r#"{"reason":"unauthenticated"}"#.into(),
            );
        }
        if node != "node-1" {
            return (AxStatus::NOT_FOUND, String::new());
        }
        match answer.lock().expect("lock").clone() {
            Answer::Set(s) => (AxStatus::OK, serde_json::to_string(&s).expect("json")),
            Answer::Garbage => (AxStatus::OK, r#"{"pods": "not a list"}"#.into()),
        }
    }

    fn read(path: &Path) -> TargetSet {
        serde_json::from_slice(&std::fs::read(path).expect("cache file")).expect("a target set")
    }

    #[tokio::test]
    async fn fetched_sets_are_cached_and_failures_keep_the_last_good_one() {
        let answer = Arc::new(Mutex::new(Answer::Set(set(&["web-1"]))));
        let app = Router::new()
            .route("/v1/targets/{node}", get(targets))
            .with_state(answer.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
        });
        let dir = std::env::temp_dir().join(format!("netdx-targets-client-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        let token = dir.join("token");
        let cache = dir.join("targets.json");
        std::fs::write(&token, "tok\n").expect("token");
        let base = format!("http://{addr}");

        let mut c =
            TargetsClient::new(&base, "node-1", token.clone(), cache.clone()).expect("client");
        c.ensure_cache().expect("empty set written");
        assert_eq!(read(&cache), TargetSet::default(), "nothing known yet");
        assert!(c.sync_once().await.expect("fetched"), "file written");
        assert_eq!(read(&cache), set(&["web-1"]));
        assert!(
            !c.sync_once().await.expect("fetched"),
            "same set: not rewritten"
        );
        *answer.lock().expect("lock") = Answer::Set(set(&["web-1", "web-2"]));
        assert!(c.sync_once().await.expect("fetched"));
        assert_eq!(read(&cache), set(&["web-1", "web-2"]));

        // The token is re-read for every request: a rotated-out token is refused.
        std::fs::write(&token, "expired").expect("token");
        let e = c.sync_once().await.expect_err("401");
        assert!(
            matches!(e, FetchError::Status(StatusCode::UNAUTHORIZED)),
            "{e}"
        );
        assert_eq!(read(&cache), set(&["web-1", "web-2"]), "previous set kept");
        std::fs::write(&token, "tok").expect("token");

        *answer.lock().expect("lock") = Answer::Garbage;
        let e = c.sync_once().await.expect_err("bad JSON");
        assert!(matches!(e, FetchError::Decode(_)), "{e}");
        assert_eq!(e.metric_label(), "decode");
        assert_eq!(
            read(&cache),
            set(&["web-1", "web-2"]),
            "bad set not written"
        );

        let mut other = TargetsClient::new(&base, "node-9", token.clone(), dir.join("other.json"))
            .expect("client");
        assert!(matches!(
            other.sync_once().await,
            Err(FetchError::Status(StatusCode::NOT_FOUND))
        ));
        assert!(!dir.join("other.json").exists());

        // Operator down.
        stop.send(()).expect("server running");
        server.await.expect("server task").expect("server");
        let e = c.sync_once().await.expect_err("operator down");
        assert!(
            matches!(e, FetchError::Channel(ChannelError::Transport(_))),
            "{e}"
        );
        assert_eq!(e.metric_label(), "transport");
        assert!(
            e.to_string().contains("Connection refused"),
            "the cause is spelled out: {e}"
        );
        assert_eq!(read(&cache), set(&["web-1", "web-2"]), "previous set kept");

        // A restarted probe finds the cached set and does not rewrite it for nothing.
        let restarted =
            TargetsClient::new(&base, "node-1", token.clone(), cache.clone()).expect("client");
        assert_eq!(
            restarted.written.as_deref(),
            Some(&std::fs::read(&cache).expect("cache")[..])
        );
        let leftovers: Vec<_> = std::fs::read_dir(&dir)
            .expect("dir")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tmp."))
            .collect();
        assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn atomic_writes_replace_the_file_and_clean_up_on_failure() {
        let dir = std::env::temp_dir().join(format!("netdx-atomic-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        let f = dir.join("t.json");
        write_atomically(&f, b"one").expect("written");
        write_atomically(&f, b"two").expect("replaced");
        assert_eq!(std::fs::read(&f).expect("read"), b"two");
        assert!(write_atomically(&dir.join("missing/t.json"), b"x").is_err());
        assert_eq!(std::fs::read_dir(&dir).expect("dir").count(), 1);
        std::fs::remove_dir_all(&dir).ok();
    }
}

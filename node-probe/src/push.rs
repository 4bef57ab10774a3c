//! Cluster mode: every closed window is POSTed to the operator's `/v1/windows` with the
//! probe's ServiceAccount token. Windows that cannot be delivered wait in a bounded outbox and
//! go out together once the operator answers again; when the outbox is full the oldest window
//! is dropped (the newest say most about now) and counted. Windows travel in the binary
//! encoding of [`netdx_api::wire`]; an operator that refuses it (one from before it existed)
//! gets JSON from then on.

use std::{collections::VecDeque, path::PathBuf, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{Request, StatusCode, Uri, header};
use netdx_api::windows::WindowReport;
use netdx_api::wire::{Encoding, WireError};
use tracing::{debug, info, warn};

use crate::ingest::Shared;
use crate::operator_client::{ChannelError, OperatorClient};

/// Default number of windows kept while the operator is unreachable (10 min of 10 s windows).
pub const DEFAULT_OUTBOX: usize = 60;
/// How often new windows are looked for (windows close every few seconds at most).
const POLL: Duration = Duration::from_secs(1);
/// Longest wait between retries.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Why a push did not go through.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// The URL, the token or the connection failed.
    #[error(transparent)]
    Channel(#[from] ChannelError),
    /// The windows could not be serialised.
    #[error("serialising windows: {0}")]
    Encode(#[source] WireError),
    /// The operator answered with an error worth retrying (5xx, 401, 403, 429).
    #[error("operator answered {0}")]
    Retry(StatusCode),
    /// The operator refused the windows themselves (400, 413): sending them again cannot help.
    #[error("operator refused the windows: {0}")]
    Refused(StatusCode),
}

/// Windows waiting to be sent, oldest first, at most `cap`.
#[derive(Debug)]
pub struct Outbox {
    queue: VecDeque<WindowReport>,
    cap: usize,
}

impl Outbox {
    /// An empty outbox holding at most `cap` windows (at least one).
    pub fn new(cap: usize) -> Self {
        Outbox {
            queue: VecDeque::new(),
            cap: cap.max(1),
        }
    }

    /// Queues a window; returns how many old windows were dropped to make room.
    pub fn push(&mut self, w: WindowReport) -> u64 {
        let mut dropped = 0;
        while self.queue.len() >= self.cap {
            self.queue.pop_front();
            dropped += 1;
        }
        self.queue.push_back(w);
        dropped
    }

    /// The queued windows, oldest first.
    pub fn pending(&self) -> impl ExactSizeIterator<Item = &WindowReport> {
        self.queue.iter()
    }

    /// Forgets the `n` oldest windows (delivered or refused).
    pub fn remove_oldest(&mut self, n: usize) {
        self.queue.drain(..n.min(self.queue.len()));
    }

    /// Number of queued windows.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

/// Delivers windows to the operator.
pub struct Pusher {
    operator: OperatorClient,
    endpoint: Uri,
    /// Windows not delivered yet.
    pub outbox: Outbox,
    /// How windows are encoded.
    encoding: Encoding,
}

impl Pusher {
    /// A pusher to the operator at `base` (e.g. `http://netdx-operator.netdx-system:8080`).
    pub fn new(base: &str, token_file: PathBuf, outbox: usize) -> Result<Self, PushError> {
        let operator = OperatorClient::new(base, token_file)?;
        Ok(Pusher {
            endpoint: operator.endpoint("/v1/windows")?,
            operator,
            outbox: Outbox::new(outbox),
            encoding: Encoding::Binary,
        })
    }

    /// Sends windows in `encoding` (JSON is easier to read on the wire when debugging).
    pub fn with_encoding(mut self, encoding: Encoding) -> Self {
        self.encoding = encoding;
        self
    }

    /// The encoding windows go out in.
    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// POSTs `batch` in `encoding`; returns the operator's status.
    async fn post(
        &self,
        batch: &[&WindowReport],
        encoding: Encoding,
    ) -> Result<StatusCode, PushError> {
        let body = encoding.encode(batch).map_err(PushError::Encode)?;
        let req = Request::post(self.endpoint.clone())
            .header(header::CONTENT_TYPE, encoding.content_type());
        let (status, _) = self.operator.send(req, Bytes::from(body)).await?;
        Ok(status)
    }

    /// Sends every queued window in one POST; on success or refusal they leave the outbox.
    /// Returns how many were delivered.
    pub async fn flush(&mut self) -> Result<usize, PushError> {
        let n = self.outbox.len();
        if n == 0 {
            return Ok(0);
        }
        let batch: Vec<&WindowReport> = self.outbox.pending().collect();
        let mut status = self.post(&batch, self.encoding).await?;
        let unreadable =
            status == StatusCode::UNSUPPORTED_MEDIA_TYPE || status == StatusCode::BAD_REQUEST;
        if self.encoding != Encoding::Json && unreadable {
            // An operator older than the binary encoding cannot read it: the same windows in
            // JSON tell whether that was the reason.
            status = self.post(&batch, Encoding::Json).await?;
            if status.is_success() {
                info!("the operator does not read binary windows; sending JSON from now on");
                self.encoding = Encoding::Json;
            }
        }
        if status.is_success() {
            self.outbox.remove_oldest(n);
            Ok(n)
        } else if status == StatusCode::BAD_REQUEST || status == StatusCode::PAYLOAD_TOO_LARGE {
            self.outbox.remove_oldest(n);
            Err(PushError::Refused(status))
        } else {
            Err(PushError::Retry(status))
        }
    }

    /// Queues the windows the agent closed since the last call and delivers them, retrying
    /// with a doubling backoff, forever.
    pub async fn run(mut self, shared: Arc<Shared>) {
        let mut next_seq = 0u64;
        let mut backoff = POLL;
        loop {
            tokio::time::sleep(POLL).await;
            let fresh: Vec<WindowReport> = shared
                .windows
                .lock()
                .map(|ws| ws.iter().filter(|w| w.seq >= next_seq).cloned().collect())
                .unwrap_or_default();
            for w in fresh {
                next_seq = w.seq + 1;
                let dropped = self.outbox.push(w);
                if dropped > 0 {
                    warn!(dropped, "push outbox full; dropped the oldest windows");
                    if let Ok(mut m) = shared.metrics.lock() {
                        m.push_dropped(dropped);
                    }
                }
            }
            match self.flush().await {
                Ok(0) => continue,
                Ok(n) => {
                    debug!(windows = n, "windows pushed");
                    if let Ok(mut m) = shared.metrics.lock() {
                        m.pushed(n as u64);
                    }
                    backoff = POLL;
                }
                Err(e) => {
                    let refused = matches!(e, PushError::Refused(_));
                    warn!(error = %e, queued = self.outbox.len(), "pushing windows");
                    if let Ok(mut m) = shared.metrics.lock() {
                        m.push_failed(refused);
                    }
                    if !refused {
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use axum::{Router, extract::State, http::HeaderMap, routing::post};

    use super::*;

    fn window(seq: u64) -> WindowReport {
        WindowReport {
            node: "node-1".into(),
            seq,
            start_unix_ms: seq * 10_000,
            end_unix_ms: (seq + 1) * 10_000,
            edges: vec![],
            pods: vec![],
            node_drops: BTreeMap::new(),
            health: Default::default(),
        }
    }

    #[test]
    fn outbox_is_bounded_and_drops_the_oldest() {
        let mut o = Outbox::new(3);
        assert_eq!((0..3).map(|s| o.push(window(s))).sum::<u64>(), 0);
        assert_eq!(o.push(window(3)), 1, "full: one dropped");
        assert_eq!(
            o.pending().map(|w| w.seq).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        o.remove_oldest(2);
        assert_eq!(o.pending().map(|w| w.seq).collect::<Vec<_>>(), vec![3]);
        o.remove_oldest(10);
        assert!(o.is_empty());
        assert_eq!(
            Outbox::new(0).push(window(0)),
            0,
            "capacity is at least one"
        );
    }

    /// What the fake operator saw: (authorization header, encoding, windows in the body).
    type Seen = Arc<Mutex<Vec<(String, Encoding, usize)>>>;

    /// A fake operator that decodes pushes by their content type and answers with `answers`,
    /// last first; it refuses binary bodies with 415 when `binary` is false, as an operator
    /// that does not know the encoding would.
    async fn fake_operator(
        answers: Vec<StatusCode>,
        binary: bool,
    ) -> (Seen, std::net::SocketAddr, tokio::task::JoinHandle<()>) {
        let seen: Seen = Arc::default();
        let answers = Arc::new(Mutex::new(answers));
        let app = Router::new()
            .route(
                "/v1/windows",
                post(
                    move |State((seen, answers)): State<(Seen, Arc<Mutex<Vec<StatusCode>>>)>,
                          headers: HeaderMap,
                          body: Bytes| async move {
                        let header = |name| {
                            headers
                                .get(name)
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_string)
                        };
                        let ct = header("content-type");
                        let enc = Encoding::from_content_type(ct.as_deref()).expect("known");
                        if enc == Encoding::Binary && !binary {
                            return StatusCode::UNSUPPORTED_MEDIA_TYPE;
                        }
                        let batch = enc.decode(&body).expect("a batch of windows");
                        let auth = header("authorization").unwrap_or_default();
                        seen.lock().expect("lock").push((auth, enc, batch.len()));
                        answers.lock().expect("lock").pop().expect("an answer")
                    },
                ),
            )
            .with_state((seen.clone(), answers));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("serves");
        });
        (seen, addr, server)
    }

    fn token_file(name: &str) -> PathBuf {
        let token = std::env::temp_dir().join(format!("netdx-{name}-token-{}", std::process::id()));
        std::fs::write(&token, "tok\n").expect("token");
        token
    }

    #[tokio::test]
    async fn failed_pushes_are_kept_and_retried_as_one_batch() {
        let answers = vec![StatusCode::OK, StatusCode::SERVICE_UNAVAILABLE];
        let (seen, addr, server) = fake_operator(answers, true).await;
        let token = token_file("push");
        let mut p = Pusher::new(&format!("http://{addr}"), token.clone(), 60).expect("pusher");
        assert_eq!(p.flush().await.expect("nothing to send"), 0);
        p.outbox.push(window(1));
        assert!(matches!(
            p.flush().await,
            Err(PushError::Retry(StatusCode::SERVICE_UNAVAILABLE))
        ));
        assert_eq!(p.outbox.len(), 1, "kept for the retry");
        p.outbox.push(window(2));
        assert_eq!(p.flush().await.expect("delivered"), 2);
        assert!(p.outbox.is_empty());
        let auth = "Bearer tok".to_string();
        assert_eq!(
            *seen.lock().expect("lock"),
            vec![
                (auth.clone(), Encoding::Binary, 1),
                (auth, Encoding::Binary, 2)
            ]
        );
        server.abort();
        std::fs::remove_file(&token).ok();
    }

    #[tokio::test]
    async fn an_operator_without_the_binary_encoding_gets_json() {
        let (seen, addr, server) = fake_operator(vec![StatusCode::OK; 2], false).await;
        let token = token_file("push-json");
        let mut p = Pusher::new(&format!("http://{addr}"), token.clone(), 60).expect("pusher");
        p.outbox.push(window(1));
        assert_eq!(p.flush().await.expect("delivered in JSON"), 1);
        assert_eq!(p.encoding(), Encoding::Json, "and JSON from then on");
        p.outbox.push(window(2));
        assert_eq!(p.flush().await.expect("delivered"), 1);
        let encodings: Vec<Encoding> = seen.lock().expect("lock").iter().map(|s| s.1).collect();
        assert_eq!(encodings, vec![Encoding::Json, Encoding::Json]);
        server.abort();
        std::fs::remove_file(&token).ok();
    }
}

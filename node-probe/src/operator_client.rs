//! The channel to the operator that window pushes and target fetches share: plain-HTTP URL
//! checks, the probe's ServiceAccount token as bearer (re-read for every request) and one
//! timeout per request.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::TokioExecutor;

/// One request may not take longer than this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest answer body read (a target set of a few thousand pods is well under 1 MiB).
const MAX_ANSWER_BYTES: usize = 16 << 20;

/// Why a request to the operator could not be made or answered.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// The operator URL is not a plain-HTTP URL.
    #[error("operator URL {0:?}: {1}")]
    Url(String, &'static str),
    /// The token file could not be read.
    #[error("reading token {path}: {source}")]
    Token {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Connecting, sending or reading the answer failed, or took too long.
    #[error("operator unreachable: {0}")]
    Transport(String),
}

/// A client for one operator base URL (e.g. `http://netdx-operator.netdx-system.svc:8080`).
#[derive(Clone)]
pub struct OperatorClient {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
    token_file: PathBuf,
}

impl OperatorClient {
    /// Checks `base` and remembers where the token is read from.
    pub fn new(base: &str, token_file: PathBuf) -> Result<Self, ChannelError> {
        if !base.starts_with("http://") {
            // The in-cluster Service speaks plain HTTP; TLS would need a CA bundle to trust.
            return Err(ChannelError::Url(
                base.to_string(),
                "only http:// is supported",
            ));
        }
        let c = OperatorClient {
            client: Client::builder(TokioExecutor::new()).build_http(),
            base: base.trim_end_matches('/').to_string(),
            token_file,
        };
        // A typo in the base must fail at startup, not at the first request.
        c.endpoint("/")?;
        Ok(c)
    }

    /// The URL of `path` (starting with `/`) on the operator.
    pub fn endpoint(&self, path: &str) -> Result<Uri, ChannelError> {
        format!("{}{path}", self.base)
            .parse()
            .map_err(|_| ChannelError::Url(format!("{}{path}", self.base), "not a valid URL"))
    }

    /// `Bearer <token>`, read now: projected ServiceAccount tokens are rotated by the kubelet.
    fn authorization(&self) -> Result<HeaderValue, ChannelError> {
        let token_error = |source| ChannelError::Token {
            path: self.token_file.clone(),
            source,
        };
        let token = std::fs::read_to_string(&self.token_file).map_err(token_error)?;
        HeaderValue::from_str(&format!("Bearer {}", token.trim())).map_err(|_| {
            token_error(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "token is not a valid header value",
            ))
        })
    }

    /// Sends `req` with the bearer token and returns the status and the answer body.
    pub async fn send(
        &self,
        req: http::request::Builder,
        body: Bytes,
    ) -> Result<(StatusCode, Bytes), ChannelError> {
        let transport = |e: &dyn std::error::Error| ChannelError::Transport(with_causes(e));
        let req: Request<Full<Bytes>> = req
            .header(header::AUTHORIZATION, self.authorization()?)
            .body(Full::new(body))
            .map_err(|e| transport(&e))?;
        let exchange = async {
            let answer = self.client.request(req).await.map_err(|e| transport(&e))?;
            let status = answer.status();
            let body = Limited::new(answer.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|e| transport(&*e))?
                .to_bytes();
            Ok((status, body))
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| ChannelError::Transport("timed out".into()))?
    }
}

/// The error and its causes on one line: hyper's own message ("client error (Connect)") says
/// little without them.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_http_urls() {
        assert!(OperatorClient::new("https://op:8080", "/t".into()).is_err());
        assert!(OperatorClient::new("http://op:8080/", "/t".into()).is_ok());
        assert!(OperatorClient::new("http://op:8080 x", "/t".into()).is_err());
        let c = OperatorClient::new("http://op:8080/", "/t".into()).expect("valid");
        assert_eq!(
            c.endpoint("/v1/targets/n1").expect("valid").to_string(),
            "http://op:8080/v1/targets/n1"
        );
    }

    #[tokio::test]
    async fn a_missing_token_fails_before_sending() {
        let c =
            OperatorClient::new("http://127.0.0.1:9", "/nonexistent/token".into()).expect("valid");
        let req = Request::get(c.endpoint("/").expect("valid"));
        assert!(matches!(
            c.send(req, Bytes::new()).await,
            Err(ChannelError::Token { .. })
        ));
    }
}

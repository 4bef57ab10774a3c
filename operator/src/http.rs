//! HTTP endpoints: health, metrics, the per-node target sets node-probes fetch and the
//! windows they post.

use axum::Json;
use axum::Router;
use axum::extract::{Path, State as AxState};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use netdx_api::targets::TargetSet;
use netdx_api::windows::WindowReport;
use netdx_api::wire::Encoding;
use serde_json::json;
use tracing::{debug, warn};

use crate::auth::AuthError;
use crate::ingest::MAX_BODY_BYTES;

use crate::State;

/// All routes.
pub fn router(state: State) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/", get(diagnostics))
        .route("/v1/targets/{node}", get(targets))
        .route("/v1/windows", post(windows))
        .with_state(state)
}

async fn healthz() -> &'static str {
    "ok"
}

/// Ready only while leading: a standby has no target sets to hand out.
async fn readyz(AxState(state): AxState<State>) -> impl IntoResponse {
    if state.leading.load(std::sync::atomic::Ordering::Relaxed) {
        (StatusCode::OK, "leading")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "standby")
    }
}

async fn diagnostics(AxState(state): AxState<State>) -> impl IntoResponse {
    Json(state.diagnostics.read().await.clone())
}

async fn metrics(AxState(state): AxState<State>) -> impl IntoResponse {
    match state.metrics.encode() {
        Ok(text) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// A refused request: status code, a stable reason (also the reject metric's label) and a
/// message, served as `{"reason": ..., "error": ...}`.
#[derive(Debug)]
pub struct ApiError {
    code: StatusCode,
    reason: &'static str,
    message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> axum::response::Response {
        let body = json!({"reason": self.reason, "error": self.message});
        (self.code, Json(body)).into_response()
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        let (code, reason) = match e {
            AuthError::Missing => (StatusCode::UNAUTHORIZED, "unauthenticated"),
            AuthError::Rejected(_) => (StatusCode::FORBIDDEN, "forbidden"),
            AuthError::Review(_) => (StatusCode::SERVICE_UNAVAILABLE, "auth_unavailable"),
        };
        ApiError {
            code,
            reason,
            message: e.to_string(),
        }
    }
}

/// The target set for one node, for callers that prove to be a node-probe.
async fn targets(
    AxState(state): AxState<State>,
    Path(node): Path<String>,
    headers: HeaderMap,
) -> Result<Json<TargetSet>, ApiError> {
    if let Err(e) = state.probe_auth.check(&headers).await {
        warn!(%node, error = %e, "refused a targets request");
        return Err(e.into());
    }
    Ok(Json(state.targets.read().await.for_node(&node)))
}

/// Accepts window reports from a node-probe: binary (what probes send) or JSON.
async fn windows(
    AxState(state): AxState<State>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Json<serde_json::Value>, ApiError> {
    let refused = |e: ApiError| {
        warn!(reason = e.reason, error = %e.message, "refused a windows upload");
        state.metrics.ingest_rejected(e.reason);
        e
    };
    // Authenticate before reading the body: strangers must not make us buffer megabytes.
    state
        .probe_auth
        .check(&headers)
        .await
        .map_err(|e| refused(e.into()))?;
    let bytes = read_limited(&headers, body).await.map_err(refused)?;
    let reports = parse_reports(&headers, &bytes).map_err(refused)?;
    let posted = reports.len();
    let expected = state.targets.read().await.nodes();
    let errors = state.ingest.receive(reports, &expected, &state.metrics);
    for e in &errors {
        debug!(error = %e, "window report not taken");
    }
    Ok(Json(json!({
        "accepted": posted - errors.len(),
        "rejected": errors.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
    })))
}

fn oversized() -> ApiError {
    ApiError {
        code: StatusCode::PAYLOAD_TOO_LARGE,
        reason: "oversized",
        message: format!("body exceeds {MAX_BODY_BYTES} bytes"),
    }
}

/// The body, refused early by its declared length and cut off at [`MAX_BODY_BYTES`] otherwise.
async fn read_limited(
    headers: &HeaderMap,
    body: axum::body::Body,
) -> Result<axum::body::Bytes, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES) {
        return Err(oversized());
    }
    axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|e| {
            let too_long = e
                .into_inner()
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some();
            if too_long {
                oversized()
            } else {
                ApiError {
                    code: StatusCode::BAD_REQUEST,
                    reason: "malformed",
                    message: "reading the body failed".into(),
                }
            }
        })
}

/// The reports of a body in the encoding its content type names: one report or an array of
/// them in JSON, a sequence of them in the binary form probes send.
fn parse_reports(
    headers: &HeaderMap,
    bytes: &axum::body::Bytes,
) -> Result<Vec<WindowReport>, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or("(not text)"));
    let encoding = Encoding::from_content_type(content_type).map_err(|e| ApiError {
        code: StatusCode::UNSUPPORTED_MEDIA_TYPE,
        reason: "unsupported_type",
        message: e.to_string(),
    })?;
    // The reports keep slices of the body (their sketches) rather than copies.
    encoding.decode_body(bytes).map_err(|e| ApiError {
        code: StatusCode::BAD_REQUEST,
        reason: "malformed",
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::auth::{NODE_PROBE_USER, ProbeAuth};
    use crate::fixtures::{ApiServerVerifier, Scenario, timeout_after_1s};
    use netdx_api::wire::{BINARY, JSON};

    /// Serves the router on a loopback port and returns (status, body) for one request.
    async fn request(
        state: State,
        method: &str,
        path: &str,
        token: Option<&str>,
        headers: &str,
        body: &[u8],
    ) -> (u16, String) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move { axum::serve(listener, router(state)).await });
        let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: test\r\n{auth}{headers}Connection: close\r\n\r\n"
        );
        conn.write_all(&[head.as_bytes(), body].concat())
            .await
            .expect("write");
        let mut raw = String::new();
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            conn.read_to_string(&mut raw),
        )
        .await
        .expect("response in time")
        .expect("read");
        server.abort();
        let status = raw
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("status line");
        let body = raw
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (status, body)
    }

    async fn get(state: State, path: &str, token: Option<&str>) -> (u16, String) {
        request(state, "GET", path, token, "", b"").await
    }

    /// POSTs JSON to /v1/windows.
    async fn post_windows(state: State, token: Option<&str>, json: &str) -> (u16, String) {
        post_typed(state, token, JSON, json.as_bytes()).await
    }

    /// POSTs a body of content type `ct` to /v1/windows.
    async fn post_typed(state: State, token: Option<&str>, ct: &str, body: &[u8]) -> (u16, String) {
        let headers = format!("Content-Type: {ct}\r\nContent-Length: {}\r\n", body.len());
        request(state, "POST", "/v1/windows", token, &headers, body).await
    }

    /// A state that authenticates probes against the verifier and targets web-1/web-2 on
    /// node-1/node-2.
    async fn probe_state(client: kube::Client) -> State {
        let state = State {
            probe_auth: Arc::new(ProbeAuth::token_review(client, NODE_PROBE_USER)),
            ..State::default()
        };
        crate::fixtures::watch_web_pods(&state.targets).await;
        state
    }

    #[tokio::test]
    async fn health_and_readiness() {
        let state = State::default();
        assert_eq!(get(state.clone(), "/healthz", None).await.0, 200);
        assert_eq!(
            get(state.clone(), "/readyz", None).await.0,
            503,
            "standby until leading"
        );
        state
            .leading
            .store(true, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(get(state.clone(), "/readyz", None).await.0, 200);
        drop(state.metrics.start("networkobservation"));
        let (code, body) = get(state, "/metrics", None).await;
        assert_eq!(code, 200);
        assert!(body.contains("netdx_operator_reconciliations"), "{body}");
    }

    #[tokio::test]
    async fn targets_need_a_node_probe_token() {
        let (client, server) = ApiServerVerifier::client();
        let state = probe_state(client).await;
        let mock = server.run(Scenario::TokenReviews);
        assert_eq!(get(state.clone(), "/v1/targets/node-1", None).await.0, 401);
        assert_eq!(
            get(state.clone(), "/v1/targets/node-1", Some("someone-else"))
                .await
                .0,
            403
        );
        let (code, body) = get(state.clone(), "/v1/targets/node-1", Some("probe-token")).await;
        assert_eq!(code, 200);
        let set: TargetSet = serde_json::from_str(&body).expect("a TargetSet");
        assert_eq!(set.pods.iter().filter(|t| t.watched).count(), 1);
        // Cached: no second TokenReview (the scenario would fail on an unexpected call).
        assert_eq!(
            get(state, "/v1/targets/node-1", Some("probe-token"))
                .await
                .0,
            200
        );
        timeout_after_1s(mock).await;
    }

    #[tokio::test]
    async fn windows_are_authenticated_validated_and_diagnosed() {
        let (client, server) = ApiServerVerifier::client();
        let state = probe_state(client).await;
        let mock = server.run(Scenario::TokenReviews);
        // The current window, so only the second node's report completes it (not the grace).
        let start = crate::ingest::unix_ms() / 10_000 * 10_000;
        let node1 = serde_json::to_string(&crate::ingest::tests::report("node-1", start, 40))
            .expect("json");
        // node-2 pushes as probes do: the binary encoding.
        let node2 = Encoding::Binary
            .encode(&[crate::ingest::tests::report("node-2", start, 0)])
            .expect("binary");

        let (code, body) = post_windows(state.clone(), None, &node1).await;
        assert_eq!(code, 401, "{body}");
        assert!(body.contains(r#""reason":"unauthenticated""#), "{body}");
        let (code, _) = post_windows(state.clone(), Some("someone-else"), &node1).await;
        assert_eq!(code, 403);
        let (code, body) =
            post_windows(state.clone(), Some("probe-token"), r#"{"node": "node-1"}"#).await;
        assert_eq!(code, 400, "{body}");
        assert!(body.contains("missing field"), "{body}");
        let huge = format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            MAX_BODY_BYTES + 1
        );
        let (code, body) = request(
            state.clone(),
            "POST",
            "/v1/windows",
            Some("probe-token"),
            &huge,
            b"",
        )
        .await;
        assert_eq!(code, 413, "{body}");

        let (code, body) = post_windows(state.clone(), Some("probe-token"), &node1).await;
        assert_eq!(code, 200, "{body}");
        assert!(body.contains(r#""accepted":1"#), "{body}");
        assert_eq!(state.metrics.windows_diagnosed.get(), 0, "node-2 missing");
        // A cut binary body and an unknown encoding are refused with a reason.
        let (code, body) = post_typed(
            state.clone(),
            Some("probe-token"),
            BINARY,
            &node2[..node2.len() / 2],
        )
        .await;
        assert_eq!(code, 400, "{body}");
        assert!(
            body.contains("not a binary batch of WindowReports"),
            "{body}"
        );
        let (code, body) = post_typed(state.clone(), Some("probe-token"), "text/csv", b"a,b").await;
        assert_eq!(code, 415, "{body}");
        assert!(body.contains(r#""reason":"unsupported_type""#), "{body}");
        assert_eq!(state.metrics.windows_diagnosed.get(), 0, "nothing taken");
        let (code, body) = post_typed(state.clone(), Some("probe-token"), BINARY, &node2).await;
        assert_eq!(code, 200, "{body}");
        assert_eq!(state.metrics.windows_diagnosed.get(), 1, "both nodes in");
        let diagnosed = state.ingest.diagnosed_between(start, start + 10_000);
        assert_eq!(diagnosed.len(), 1);
        assert_eq!(
            diagnosed[0].findings[0].finding.root_cause.as_str(),
            "connection_refused"
        );

        let (_, metrics) = get(state, "/metrics", None).await;
        for (reason, n) in [
            ("unauthenticated", 1),
            ("forbidden", 1),
            ("malformed", 2),
            ("oversized", 1),
            ("unsupported_type", 1),
        ] {
            assert!(
                metrics.contains(&format!(
                    "netdx_operator_ingest_rejects_total{{reason=\"{reason}\"}} {n}"
                )),
                "{reason}: {metrics}"
            );
        }
        timeout_after_1s(mock).await;
    }
}

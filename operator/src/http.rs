//! HTTP endpoints: health, metrics, and the per-node target sets node-probes fetch.

use axum::Json;
use axum::Router;
use axum::extract::{Path, State as AxState};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use netdx_api::targets::TargetSet;
use tracing::warn;

use crate::auth::AuthError;

use crate::State;

/// All routes.
pub fn router(state: State) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/", get(diagnostics))
        .route("/v1/targets/{node}", get(targets))
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

/// The target set for one node, for callers that prove to be a node-probe.
async fn targets(
    AxState(state): AxState<State>,
    Path(node): Path<String>,
    headers: HeaderMap,
) -> Result<Json<TargetSet>, (StatusCode, String)> {
    if let Err(e) = state.probe_auth.check(&headers).await {
        warn!(%node, error = %e, "refused a targets request");
        let code = match e {
            AuthError::Missing => StatusCode::UNAUTHORIZED,
            AuthError::Rejected(_) => StatusCode::FORBIDDEN,
            AuthError::Review(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        return Err((code, e.to_string()));
    }
    Ok(Json(state.targets.read().await.for_node(&node)))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use netdx_api::targets::PodRef;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::auth::{NODE_PROBE_USER, ProbeAuth};
    use crate::fixtures::{ApiServerVerifier, Scenario, timeout_after_1s};
    use crate::targets::{CgroupLayout, resolve};

    /// Serves the router on a loopback port and returns (status, body) for one GET.
    async fn get(state: State, path: &str, token: Option<&str>) -> (u16, String) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move { axum::serve(listener, router(state)).await });
        let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let req = format!("GET {path} HTTP/1.1\r\nHost: test\r\n{auth}Connection: close\r\n\r\n");
        conn.write_all(req.as_bytes()).await.expect("write");
        let mut raw = String::new();
        conn.read_to_string(&mut raw).await.expect("read");
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
        let state = State {
            probe_auth: Arc::new(ProbeAuth::token_review(client, NODE_PROBE_USER)),
            ..State::default()
        };
        let pods = serde_json::from_value::<Vec<k8s_openapi::api::core::v1::Pod>>(
            crate::fixtures::web_pods()["items"].clone(),
        )
        .expect("pods");
        state.targets.write().await.set(
            PodRef {
                namespace: "default".into(),
                name: "web".into(),
            },
            resolve(&pods, &CgroupLayout::default()).per_node,
        );
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
}

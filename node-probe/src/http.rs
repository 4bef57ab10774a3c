//! The probe's HTTP API: /healthz, /metrics (Prometheus text), /v1/windows (JSON).

use std::sync::{Arc, atomic::Ordering};

use axum::{
    Json, Router,
    extract::{Query, State},
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use netdx_api::windows::WindowReport;
use serde::Deserialize;

use crate::{ingest::Shared, windows::unix_ms};

/// Query of /v1/windows.
#[derive(Debug, Deserialize)]
pub struct WindowsQuery {
    /// Only windows with a sequence number >= this.
    pub since: Option<u64>,
}

/// Builds the router over the agent's shared state.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/v1/windows", get(windows))
        .with_state(shared)
}

/// A loop that has not turned for this long is stuck (it turns every ~10 ms).
const STALL_MS: u64 = 5_000;

async fn healthz(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    let beat = s.heartbeat_ms.load(Ordering::Acquire);
    if !s.ready.load(Ordering::Acquire) {
        (StatusCode::SERVICE_UNAVAILABLE, "starting")
    } else if unix_ms().saturating_sub(beat) > STALL_MS {
        (StatusCode::SERVICE_UNAVAILABLE, "ingest loop stalled")
    } else {
        (StatusCode::OK, "ok")
    }
}

async fn metrics(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    let body = s.metrics.lock().map(|m| m.encode()).unwrap_or_default();
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
}

async fn windows(
    State(s): State<Arc<Shared>>,
    Query(q): Query<WindowsQuery>,
) -> Json<Vec<WindowReport>> {
    let since = q.since.unwrap_or(0);
    let list = s
        .windows
        .lock()
        .map(|w| w.iter().filter(|w| w.seq >= since).cloned().collect())
        .unwrap_or_default();
    Json(list)
}

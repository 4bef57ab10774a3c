//! HTTP endpoints: health, metrics, and the per-node target sets node-probes fetch.

use axum::Json;
use axum::Router;
use axum::extract::{Path, State as AxState};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use netdx_api::targets::TargetSet;

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

/// The target set for one node. Unauthenticated for now: the TokenReview check that ties a
/// request to the node-probe ServiceAccount is still to come (see the RBAC for tokenreviews).
async fn targets(AxState(state): AxState<State>, Path(node): Path<String>) -> Json<TargetSet> {
    Json(state.targets.read().await.for_node(&node))
}

//! Who may fetch target sets: node-probes prove their ServiceAccount with its token, which the
//! operator checks with a TokenReview (cached briefly so a fleet of probes polling every few
//! seconds does not become a stream of API calls).

use std::collections::HashMap;
use std::time::Duration;

use axum::http::HeaderMap;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::Client;
use kube::api::{Api, PostParams};
use tokio::sync::Mutex;
use tokio::time::Instant;

/// The node-probe ServiceAccount as the API server names it in a TokenReview.
pub const NODE_PROBE_USER: &str = "system:serviceaccount:netdx-system:netdx-node-probe";
/// How long an accepted token is trusted without asking again.
const CACHE_TTL: Duration = Duration::from_secs(60);
/// Bound on cached tokens (one per probe pod in practice).
const CACHE_MAX: usize = 4096;

/// Why a request was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization: Bearer` header.
    #[error("missing bearer token")]
    Missing,
    /// The API server did not authenticate the token, or it belongs to someone else.
    #[error("token rejected: {0}")]
    Rejected(String),
    /// The TokenReview call itself failed.
    #[error("token review failed: {0}")]
    Review(#[source] kube::Error),
}

/// The check applied to probe requests.
pub struct ProbeAuth {
    review: Option<(Client, String)>,
    accepted: Mutex<HashMap<String, Instant>>,
}

impl ProbeAuth {
    /// Lets every request through (local mode and tests of other endpoints).
    pub fn disabled() -> Self {
        ProbeAuth {
            review: None,
            accepted: Mutex::default(),
        }
    }

    /// Accepts tokens that a TokenReview maps to `user`.
    pub fn token_review(client: Client, user: impl Into<String>) -> Self {
        ProbeAuth {
            review: Some((client, user.into())),
            accepted: Mutex::default(),
        }
    }

    /// Checks the request's bearer token.
    pub async fn check(&self, headers: &HeaderMap) -> Result<(), AuthError> {
        let Some((client, user)) = &self.review else {
            return Ok(());
        };
        let token = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::Missing)?;
        let now = Instant::now();
        if self
            .accepted
            .lock()
            .await
            .get(token)
            .is_some_and(|until| *until > now)
        {
            return Ok(());
        }
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_string(),
                audiences: None,
            },
            ..Default::default()
        };
        let answer = Api::<TokenReview>::all(client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(AuthError::Review)?;
        let status = answer.status.unwrap_or_default();
        if status.authenticated != Some(true) {
            return Err(AuthError::Rejected(
                status.error.unwrap_or_else(|| "not authenticated".into()),
            ));
        }
        let who = status.user.and_then(|u| u.username).unwrap_or_default();
        if who != *user {
            return Err(AuthError::Rejected(format!("{who} is not {user}")));
        }
        let mut cache = self.accepted.lock().await;
        if cache.len() >= CACHE_MAX {
            cache.retain(|_, until| *until > now);
            if cache.len() >= CACHE_MAX {
                cache.clear();
            }
        }
        cache.insert(token.to_string(), now + CACHE_TTL);
        Ok(())
    }
}

//! Leader election on a coordination.k8s.io Lease, so only one replica reconciles at a time
//! (kube-runtime has none built in).
//!
//! Writes use the Lease's resourceVersion: two candidates racing for an expired lease both
//! send a replace, the API server accepts one and answers 409 Conflict to the other.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};
use tracing::{info, warn};

use crate::Result;

/// Name of the Lease the operator replicas compete for.
pub const LEASE_NAME: &str = "netdx-operator";

/// One candidate's view of the Lease.
pub struct LeaseLock {
    api: Api<Lease>,
    identity: String,
    /// How long a lease stays valid without renewal.
    pub duration: Duration,
    /// How often the holder renews (well inside `duration`).
    pub renew_every: Duration,
}

/// Whether a write lost a race (the API server's optimistic concurrency said no).
fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

impl LeaseLock {
    /// A candidate named `identity` (the pod name) for the Lease in `namespace`.
    pub fn new(client: Client, namespace: &str, identity: impl Into<String>) -> Self {
        LeaseLock {
            api: Api::namespaced(client, namespace),
            identity: identity.into(),
            duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
        }
    }

    fn spec(&self, now: Timestamp, acquired: Timestamp, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(
                i32::try_from(self.duration.as_secs()).unwrap_or(i32::MAX),
            ),
            acquire_time: Some(MicroTime(acquired)),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    /// Takes the lease if it is free or expired, renews it if we hold it; true when we hold it after the call.
    pub async fn try_acquire_or_renew(&self, now: Timestamp) -> Result<bool> {
        let Some(mut lease) = self.api.get_opt(LEASE_NAME).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(LEASE_NAME.to_string()),
                    ..Default::default()
                },
                spec: Some(self.spec(now, now, 0)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(e) if is_conflict(&e) => Ok(false),
                Err(e) => Err(e.into()),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.as_deref().filter(|h| !h.is_empty());
        let transitions = spec.lease_transitions.unwrap_or(0);
        let new_spec = if holder == Some(self.identity.as_str()) {
            let acquired = spec.acquire_time.map(|t| t.0).unwrap_or(now);
            self.spec(now, acquired, transitions)
        } else {
            let valid_for =
                SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(15)));
            let expired = match spec.renew_time {
                Some(MicroTime(t)) => t.checked_add(valid_for).map_or(true, |until| until < now),
                None => true,
            };
            if holder.is_some() && !expired {
                return Ok(false);
            }
            self.spec(now, now, transitions + 1)
        };
        lease.spec = Some(new_spec);
        match self
            .api
            .replace(LEASE_NAME, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if is_conflict(&e) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Gives the lease up so a successor does not wait for it to expire (best effort, on shutdown).
    pub async fn release(&self) -> Result<()> {
        if let Some(mut lease) = self.api.get_opt(LEASE_NAME).await?
            && lease
                .spec
                .as_ref()
                .and_then(|s| s.holder_identity.as_deref())
                == Some(self.identity.as_str())
        {
            if let Some(spec) = lease.spec.as_mut() {
                spec.holder_identity = None;
                spec.renew_time = None;
            }
            self.api
                .replace(LEASE_NAME, &PostParams::default(), &lease)
                .await?;
        }
        Ok(())
    }

    /// Waits until this candidate holds the lease, retrying every `renew_every`.
    pub async fn acquire(&self) -> Result<()> {
        loop {
            match self.try_acquire_or_renew(Timestamp::now()).await {
                Ok(true) => {
                    info!(identity = %self.identity, "acquired leadership");
                    return Ok(());
                }
                Ok(false) => {}
                Err(e) => warn!(error = %e, "leader election"),
            }
            tokio::time::sleep(self.renew_every).await;
        }
    }

    /// Renews until the lease is lost or cannot be renewed within its duration; returns then,
    /// and the caller must stop reconciling (another replica may already have taken over).
    pub async fn hold(&self) {
        let mut last_ok = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.renew_every).await;
            match self.try_acquire_or_renew(Timestamp::now()).await {
                Ok(true) => last_ok = tokio::time::Instant::now(),
                Ok(false) => {
                    warn!("leadership lost to another replica");
                    return;
                }
                Err(e) => {
                    warn!(error = %e, "renewing the lease failed");
                    if last_ok.elapsed() >= self.duration {
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{ApiServerVerifier, Scenario, now_secs, timeout_after_1s};

    fn now() -> Timestamp {
        Timestamp::from_second(now_secs()).expect("valid")
    }

    fn lock(client: Client) -> LeaseLock {
        LeaseLock::new(client, "netdx-system", "operator-a")
    }

    #[tokio::test]
    async fn creates_a_missing_lease() {
        let (client, server) = ApiServerVerifier::client();
        let mock = server.run(Scenario::LeaseMissing);
        assert!(
            lock(client)
                .try_acquire_or_renew(now())
                .await
                .expect("no error")
        );
        timeout_after_1s(mock).await;
    }

    #[tokio::test]
    async fn renews_its_own_lease() {
        let (client, server) = ApiServerVerifier::client();
        let mock = server.run(Scenario::LeaseHeld {
            holder: "operator-a".into(),
            renewed: now_secs() - 5,
            expect_transitions: 3,
        });
        assert!(
            lock(client)
                .try_acquire_or_renew(now())
                .await
                .expect("no error")
        );
        timeout_after_1s(mock).await;
    }

    #[tokio::test]
    async fn leaves_a_fresh_lease_alone() {
        let (client, server) = ApiServerVerifier::client();
        let mock = server.run(Scenario::LeaseFresh {
            holder: "operator-b".into(),
            renewed: now_secs() - 5,
        });
        assert!(
            !lock(client)
                .try_acquire_or_renew(now())
                .await
                .expect("no error")
        );
        timeout_after_1s(mock).await;
    }

    #[tokio::test]
    async fn takes_over_an_expired_lease() {
        let (client, server) = ApiServerVerifier::client();
        let mock = server.run(Scenario::LeaseHeld {
            holder: "operator-b".into(),
            renewed: now_secs() - 60,
            expect_transitions: 4,
        });
        assert!(
            lock(client)
                .try_acquire_or_renew(now())
                .await
                .expect("no error")
        );
        timeout_after_1s(mock).await;
    }

    #[tokio::test]
    async fn a_lost_race_is_not_an_error() {
        let (client, server) = ApiServerVerifier::client();
        let mock = server.run(Scenario::LeaseConflict {
            holder: "operator-b".into(),
            renewed: now_secs() - 60,
        });
        assert!(
            !lock(client)
                .try_acquire_or_renew(now())
                .await
                .expect("conflict is not an error")
        );
        timeout_after_1s(mock).await;
    }
}

//! Wires the reconcilers into kube-runtime controllers.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::core::{Selector, SelectorExt};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use netdx_api::crd::{DiagnosisReport, NetworkObservation};
use tracing::{info, warn};

use crate::{Error, State, reconcile, report};

/// Whether a pod event may change what an observation resolves to (a cheap pre-filter;
/// namespace selectors are checked in the reconcile, and the resync catches the rest).
pub fn observation_wants(obs: &NetworkObservation, pod: &Pod) -> bool {
    let same_ns = obs.namespace() == pod.namespace();
    if !same_ns && obs.spec.namespace_selector.is_none() {
        return false;
    }
    match Selector::try_from(obs.spec.pod_selector.clone()) {
        Ok(sel) => sel.matches(pod.metadata.labels.as_ref().unwrap_or(&Default::default())),
        // A bad selector gives Ready=False already; pod events cannot change that.
        Err(_) => false,
    }
}

/// Runs both controllers until a shutdown signal.
pub async fn run(state: State, client: Client) -> Result<(), Error> {
    let ctx = state.to_context(client.clone());
    let observations: Api<NetworkObservation> = Api::all(client.clone());
    let reports: Api<DiagnosisReport> = Api::all(client.clone());
    // Fail fast with a clear message when the CRDs are not installed.
    observations.list(&ListParams::default().limit(1)).await?;
    reports.list(&ListParams::default().limit(1)).await?;

    let obs_controller = Controller::new(observations, watcher::Config::default().any_semantic());
    let store = obs_controller.store();
    let obs_run = obs_controller
        .watches(
            Api::<Pod>::all(client.clone()),
            watcher::Config::default(),
            move |pod: Pod| {
                store
                    .state()
                    .into_iter()
                    .filter(|obs| observation_wants(obs, &pod))
                    .map(|obs| ObjectRef::from_obj(&*obs))
                    .collect::<Vec<_>>()
            },
        )
        .shutdown_on_signal()
        .run(reconcile::reconcile, reconcile::error_policy, ctx.clone())
        .for_each(|res| async move {
            if let Err(e) = res {
                warn!(error = %e, "networkobservation controller");
            }
        });
    let report_run = Controller::new(reports, watcher::Config::default().any_semantic())
        .shutdown_on_signal()
        .run(report::reconcile, report::error_policy, ctx.clone())
        .for_each(|res| async move {
            if let Err(e) = res {
                warn!(error = %e, "diagnosisreport controller");
            }
        });
    info!("controllers started");
    tokio::join!(obs_run, report_run);
    Ok(())
}

/// Retry delay after `failures` consecutive failures of one object: 5 s doubling to 5 min.
pub fn backoff(failures: u32) -> Action {
    let secs = 5u64.saturating_mul(1u64 << failures.min(6)).min(300);
    Action::requeue(std::time::Duration::from_secs(secs))
}

/// Shared handle type for the per-object failure counts behind [`backoff`].
pub type Failures = Arc<std::sync::Mutex<std::collections::HashMap<String, u32>>>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(0), Action::requeue(Duration::from_secs(5)));
        assert_eq!(backoff(1), Action::requeue(Duration::from_secs(10)));
        assert_eq!(backoff(20), Action::requeue(Duration::from_secs(300)));
    }
}

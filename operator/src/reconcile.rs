//! NetworkObservation reconcile: validate the spec, resolve selectors to pods and nodes,
//! hand out per-node target sets, and report it all in status conditions.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::core::{Selector, SelectorExt};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::{Resource, ResourceExt};
use netdx_api::crd::{NetworkObservation, NetworkObservationSpec, NetworkObservationStatus};
use netdx_api::targets::PodRef;
use serde_json::json;
use tracing::{debug, info, instrument, warn};

use crate::conditions::{self, DEGRADED, PROBES_SCHEDULED, READY, reason};
use crate::probe_health::{ProbeProblem, STALE_WINDOWS};
use crate::targets::{self, Resolution};
use crate::{Context, Error, FIELD_MANAGER, Result};

/// Finalizer that makes the operator withdraw the observation's targets before it disappears.
pub const OBSERVATION_FINALIZER: &str = "netdx.io/observation-cleanup";
/// Controller name in metrics.
pub const CONTROLLER: &str = "networkobservation";
/// Re-check pods this often even without watch events (catches missed events).
const RESYNC: Duration = Duration::from_secs(300);
/// Never re-check probe health more often than this (each reconcile lists pods).
const MIN_HEALTH_RECHECK: Duration = Duration::from_secs(30);

/// How soon an observation with scheduled probes is reconciled again: Degraded follows probe
/// health, which changes without any watch event, so it is looked at about once per
/// [`STALE_WINDOWS`] + 1 windows.
fn health_recheck(window: Duration) -> Duration {
    let windows = u32::try_from(STALE_WINDOWS + 1).unwrap_or(u32::MAX);
    window
        .saturating_mul(windows)
        .clamp(MIN_HEALTH_RECHECK, RESYNC)
}

/// Entry point for the controller: wraps the real work in the finalizer protocol.
#[instrument(skip(obs, ctx), fields(namespace = obs.namespace(), name = obs.name_any()))]
pub async fn reconcile(obs: Arc<NetworkObservation>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.start(CONTROLLER);
    ctx.diagnostics.write().await.last_event = (ctx.now)();
    let ns = obs.namespace().ok_or_else(|| Error::MissingNamespace {
        kind: "NetworkObservation",
        name: obs.name_any(),
    })?;
    let api: Api<NetworkObservation> = Api::namespaced(ctx.client.clone(), &ns);
    let key = crate::context::failure_key(&*obs);
    let action = finalizer(&api, OBSERVATION_FINALIZER, obs, |event| async {
        match event {
            Finalizer::Apply(obs) => apply(&obs, ctx.clone()).await,
            Finalizer::Cleanup(obs) => cleanup(&obs, ctx.clone()).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))?;
    ctx.note_success(&key);
    Ok(action)
}

/// Counts the failure and retries with a backoff that doubles per consecutive failure.
pub fn error_policy(obs: Arc<NetworkObservation>, error: &Error, ctx: Arc<Context>) -> Action {
    warn!(name = %obs.name_any(), %error, "reconcile failed");
    ctx.metrics.failed(CONTROLLER, error);
    crate::controller::backoff(ctx.note_failure(crate::context::failure_key(&*obs)))
}

/// A spec the operator can act on.
#[derive(Debug)]
struct Plan {
    window: Duration,
    pods: Selector,
    namespaces: Option<Selector>,
}

/// Why a spec cannot be acted on: a condition reason plus a message for people.
#[derive(Debug, Clone, PartialEq)]
pub struct SpecProblem {
    /// Condition reason.
    pub reason: &'static str,
    /// What to fix.
    pub message: String,
}

fn selector(
    sel: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
    field: &str,
) -> Result<Selector, SpecProblem> {
    let parsed = Selector::try_from(sel.clone()).map_err(|e| SpecProblem {
        reason: reason::INVALID_SELECTOR,
        message: format!("{field}: {e}"),
    })?;
    Ok(parsed)
}

fn plan(spec: &NetworkObservationSpec) -> Result<Plan, SpecProblem> {
    let window = spec.window_duration().map_err(|e| SpecProblem {
        reason: reason::INVALID_WINDOW,
        message: e.to_string(),
    })?;
    let pods = selector(&spec.pod_selector, "podSelector")?;
    if pods.selects_all() {
        // The CRD's CEL rule forbids this; an older CRD might not, and watching every pod
        // in the namespace is never what someone meant.
        return Err(SpecProblem {
            reason: reason::INVALID_SELECTOR,
            message: "podSelector is empty; it would select every pod".to_string(),
        });
    }
    let namespaces = spec
        .namespace_selector
        .as_ref()
        .map(|s| selector(s, "namespaceSelector"))
        .transpose()?;
    Ok(Plan {
        window,
        pods,
        namespaces,
    })
}

/// Identity used in the target registry.
fn key(obs: &NetworkObservation) -> PodRef {
    PodRef {
        namespace: obs.namespace().unwrap_or_default().into(),
        name: obs.name_any().into(),
    }
}

/// Brings status and probe targets in line with the spec and the pods that exist now.
pub async fn apply(obs: &NetworkObservation, ctx: Arc<Context>) -> Result<Action> {
    let ns = obs.namespace().unwrap_or_default();
    let generation = obs.metadata.generation;
    let now = (ctx.now)();
    let plan = match plan(&obs.spec) {
        Ok(p) => p,
        Err(problem) => {
            ctx.targets.write().await.remove(&key(obs));
            let new = vec![
                conditions::new(
                    READY,
                    false,
                    problem.reason,
                    problem.message.clone(),
                    generation,
                    now,
                ),
                conditions::new(
                    PROBES_SCHEDULED,
                    false,
                    reason::INVALID_SPEC,
                    "nothing scheduled until the spec is fixed",
                    generation,
                    now,
                ),
                conditions::new(DEGRADED, false, reason::INVALID_SPEC, "", generation, now),
            ];
            let status = next_status(obs, new, 0, 0);
            // Pod events re-trigger this reconcile; warn people once per problem, not per event.
            if obs.status.as_ref() != Some(&status) {
                warn!(reason = problem.reason, message = %problem.message, "invalid spec");
                ctx.recorder
                    .publish(
                        &Event {
                            type_: EventType::Warning,
                            reason: problem.reason.to_string(),
                            note: Some(problem.message.clone()),
                            action: "Validate".into(),
                            secondary: None,
                        },
                        &obs.object_ref(&()),
                    )
                    .await?;
                apply_status(obs, &ctx, status).await?;
            }
            // Nothing will change until someone edits the spec.
            return Ok(Action::await_change());
        }
    };
    debug!(window_s = plan.window.as_secs_f64(), selector = %plan.pods, "resolving pods");

    let pods = matching_pods(&ctx, &ns, &plan).await?;
    let resolution = targets::resolve(&pods, &ctx.cgroups, obs.spec.payload_capture);
    ctx.targets
        .write()
        .await
        .set(key(obs), resolution.per_node.clone());

    let nodes: BTreeSet<String> = resolution.per_node.keys().cloned().collect();
    let now_ms = u64::try_from(now.as_millisecond()).unwrap_or(0);
    let probes = ctx.ingest.probe_problems(&nodes, now_ms, plan.window);
    if !probes.is_empty() {
        debug!(problems = ?probes, "probe health");
    }
    let status = next_status(
        obs,
        observed_conditions(&resolution, &probes, generation, now),
        resolution.watched.len(),
        resolution.per_node.len(),
    );
    info!(
        pods = resolution.watched.len(),
        nodes = resolution.per_node.len(),
        "observation resolved"
    );
    apply_status(obs, &ctx, status).await?;
    if nodes.is_empty() {
        Ok(Action::requeue(RESYNC))
    } else {
        Ok(Action::requeue(health_recheck(plan.window)))
    }
}

/// Withdraws the observation's targets so probes stop watching its pods.
pub async fn cleanup(obs: &NetworkObservation, ctx: Arc<Context>) -> Result<Action> {
    ctx.targets.write().await.remove(&key(obs));
    ctx.recorder
        .publish(
            &Event {
                type_: EventType::Normal,
                reason: "ObservationStopped".into(),
                note: Some(format!("stopped watching pods for {}", obs.name_any())),
                action: "Cleanup".into(),
                secondary: None,
            },
            &obs.object_ref(&()),
        )
        .await?;
    Ok(Action::await_change())
}

/// Pods matching the selectors in the selected namespaces (or the observation's own).
async fn matching_pods(ctx: &Context, ns: &str, plan: &Plan) -> Result<Vec<Pod>> {
    let lp = ListParams::default().labels(&plan.pods.to_string());
    let namespaces = match &plan.namespaces {
        None => vec![ns.to_string()],
        Some(sel) => {
            let api: Api<Namespace> = Api::all(ctx.client.clone());
            let all = api.list(&ListParams::default()).await?;
            // Matched locally: an empty namespaceSelector means every namespace, which
            // the API's labelSelector parameter cannot express.
            all.items
                .iter()
                .filter(|n| sel.matches(n.metadata.labels.as_ref().unwrap_or(&Default::default())))
                .map(|n| n.name_any())
                .collect()
        }
    };
    let mut pods = Vec::new();
    for n in namespaces {
        let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &n);
        pods.extend(api.list(&lp).await?.items);
    }
    Ok(pods)
}

/// The status to write: new conditions merged over the old ones, fields owned by the
/// ingest path (last window, findings) carried over.
fn next_status(
    obs: &NetworkObservation,
    new: Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
    pods: usize,
    nodes: usize,
) -> NetworkObservationStatus {
    let old = obs.status.clone().unwrap_or_default();
    NetworkObservationStatus {
        observed_generation: obs.metadata.generation,
        conditions: conditions::merge(&old.conditions, new),
        watched_pods: u32::try_from(pods).unwrap_or(u32::MAX),
        watched_nodes: u32::try_from(nodes).unwrap_or(u32::MAX),
        last_window: old.last_window,
        active_findings: old.active_findings,
    }
}

/// Writes status with server-side apply, skipping the call when nothing changed.
async fn apply_status(
    obs: &NetworkObservation,
    ctx: &Context,
    status: NetworkObservationStatus,
) -> Result<()> {
    if obs.status.as_ref() == Some(&status) {
        debug!("status unchanged; not patching");
        return Ok(());
    }
    let api: Api<NetworkObservation> =
        Api::namespaced(ctx.client.clone(), &obs.namespace().unwrap_or_default());
    let patch = json!({
        "apiVersion": NetworkObservation::api_version(&()),
        "kind": NetworkObservation::kind(&()),
        "status": status,
    });
    api.patch_status(
        &obs.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(patch),
    )
    .await?;
    Ok(())
}

/// Conditions for a valid spec, from what the pods resolved to and how their nodes' probes
/// are doing.
fn observed_conditions(
    r: &Resolution,
    probes: &[ProbeProblem],
    generation: Option<i64>,
    now: k8s_openapi::jiff::Timestamp,
) -> Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    let pods = r.watched.len();
    let nodes = r.per_node.len();
    let (ready, scheduled) = if pods == 0 {
        (
            conditions::new(
                READY,
                false,
                reason::NO_MATCHING_PODS,
                "no running pod matches the selectors",
                generation,
                now,
            ),
            conditions::new(
                PROBES_SCHEDULED,
                false,
                reason::NO_MATCHING_PODS,
                "no node runs a matching pod",
                generation,
                now,
            ),
        )
    } else {
        (
            conditions::new(
                READY,
                true,
                reason::OBSERVING,
                format!("watching {pods} pods on {nodes} nodes"),
                generation,
                now,
            ),
            conditions::new(
                PROBES_SCHEDULED,
                true,
                reason::TARGETS_ASSIGNED,
                format!("target sets assigned to {nodes} nodes"),
                generation,
                now,
            ),
        )
    };
    let degraded = match degradation(r, probes) {
        None => conditions::new(DEGRADED, false, reason::AS_EXPECTED, "", generation, now),
        Some((why, message)) => conditions::new(DEGRADED, true, why, message, generation, now),
    };
    vec![ready, scheduled, degraded]
}

/// At most this many problems are spelled out in the Degraded message.
const MAX_LISTED: usize = 5;

/// Why the observation is Degraded, if it is: the reason of the worst problem (a silent probe
/// loses whole windows, a lossy one parts of them, an unscheduled pod only itself) and every
/// problem in the message.
fn degradation(r: &Resolution, probes: &[ProbeProblem]) -> Option<(&'static str, String)> {
    let mut lines: Vec<String> = probes.iter().map(ProbeProblem::describe).collect();
    if !r.unscheduled.is_empty() {
        let names: Vec<String> = r
            .unscheduled
            .iter()
            .take(MAX_LISTED)
            .map(ToString::to_string)
            .collect();
        lines.push(format!(
            "{} matching pods have no node yet: {}",
            r.unscheduled.len(),
            names.join(", ")
        ));
    }
    let why = if probes
        .iter()
        .any(|p| matches!(p, ProbeProblem::Silent { .. }))
    {
        reason::PROBES_NOT_REPORTING
    } else if !probes.is_empty() {
        reason::PROBE_DATA_LOSS
    } else if !r.unscheduled.is_empty() {
        reason::PODS_UNSCHEDULED
    } else {
        return None;
    };
    let more = lines.len().saturating_sub(MAX_LISTED);
    lines.truncate(MAX_LISTED);
    if more > 0 {
        lines.push(format!("and {more} more"));
    }
    Some((why, lines.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{ApiServerVerifier, Scenario, TestObservation, timeout_after_1s};
    use netdx_api::crd::NetworkObservation;
    use netdx_api::targets::PayloadCapture;

    #[test]
    fn plan_rejects_bad_specs_with_reasons() {
        let bad_window = NetworkObservation::test().with_window("2h").spec;
        assert_eq!(
            plan(&bad_window).map(|_| ()).unwrap_err().reason,
            reason::INVALID_WINDOW
        );
        let empty = NetworkObservation::test().with_selector(&[]).spec;
        assert_eq!(
            plan(&empty).map(|_| ()).unwrap_err().reason,
            reason::INVALID_SELECTOR
        );
        let ok = NetworkObservation::test().spec;
        assert_eq!(
            plan(&ok).expect("valid spec").window,
            Duration::from_secs(10)
        );
    }

    #[tokio::test]
    async fn new_observation_gets_a_finalizer() {
        let (ctx, server) = crate::fixtures::context();
        let obs = NetworkObservation::test();
        let mock = server.run(Scenario::FinalizerCreation(obs.clone()));
        reconcile(Arc::new(obs), ctx).await.expect("reconciler");
        timeout_after_1s(mock).await;
    }

    #[tokio::test]
    async fn matching_pods_give_ready_conditions_and_targets() {
        let (ctx, server) = crate::fixtures::context();
        let mut obs = NetworkObservation::test().finalized();
        obs.spec.payload_capture = PayloadCapture::Egress;
        let mock = server.run(Scenario::ObservingPods(obs.clone()));
        let action = reconcile(Arc::new(obs), ctx.clone())
            .await
            .expect("reconciler");
        timeout_after_1s(mock).await;
        assert_eq!(
            action,
            Action::requeue(Duration::from_secs(40)),
            "probe health re-checked every 4 windows of 10 s"
        );
        let n1 = ctx.targets.read().await.for_node("node-1");
        assert_eq!(n1.pods.len(), 2);
        assert_eq!(n1.pods.iter().filter(|t| t.watched).count(), 1);
        assert!(
            n1.pods.iter().all(|t| t.payload == PayloadCapture::Egress),
            "the spec's payload capture reaches the probes"
        );
    }

    #[tokio::test]
    async fn a_silent_probe_makes_the_observation_degraded() {
        let (ctx, server) = crate::fixtures::context();
        let now_ms = crate::fixtures::now_secs() as u64 * 1000;
        // node-1's probe pushed a second ago; node-2's last 10 s window came 5 windows ago.
        let start = now_ms - 60_000;
        ctx.ingest.note_push(
            &crate::ingest::tests::report("node-1", start, 0),
            now_ms - 1_000,
        );
        ctx.ingest.note_push(
            &crate::ingest::tests::report("node-2", start, 0),
            now_ms - 50_000,
        );
        let obs = NetworkObservation::test()
            .finalized()
            .with_status(ApiServerVerifier::observing_status());
        let mock = server.run(Scenario::ProbeSilent(obs.clone()));
        reconcile(Arc::new(obs), ctx).await.expect("reconciler");
        timeout_after_1s(mock).await;
    }

    #[test]
    fn degraded_names_the_worst_problem_and_lists_them_all() {
        let mut r = Resolution::default();
        assert_eq!(degradation(&r, &[]), None);
        r.unscheduled = vec![PodRef {
            namespace: "default".into(),
            name: "web-3".into(),
        }];
        let lossy = ProbeProblem::Lossy {
            node: "node-1".into(),
            losses: [("ringbuf_full".to_string(), 4)].into(),
        };
        let silent = ProbeProblem::Silent {
            node: "node-2".into(),
            window_ms: 10_000,
            last_push_ms: None,
        };
        assert_eq!(
            degradation(&r, &[]).map(|d| d.0),
            Some(reason::PODS_UNSCHEDULED)
        );
        assert_eq!(
            degradation(&r, std::slice::from_ref(&lossy)).map(|d| d.0),
            Some(reason::PROBE_DATA_LOSS)
        );
        let (why, message) = degradation(&r, &[lossy, silent]).expect("degraded");
        assert_eq!(why, reason::PROBES_NOT_REPORTING);
        assert_eq!(
            message,
            "probe on node-1 lost data in its latest window (ringbuf_full=4); \
             probe on node-2 sent no window for more than 3 windows (30s; none since the operator started); \
             1 matching pods have no node yet: default/web-3"
        );
        let many: Vec<ProbeProblem> = (0..7)
            .map(|i| ProbeProblem::Lossy {
                node: format!("node-{i}"),
                losses: [("ringbuf_full".to_string(), 1)].into(),
            })
            .collect();
        let (_, message) = degradation(&Resolution::default(), &many).expect("degraded");
        assert!(message.ends_with("; and 2 more"), "{message}");
    }

    #[tokio::test]
    async fn unchanged_status_is_not_patched() {
        let (ctx, server) = crate::fixtures::context();
        let obs = NetworkObservation::test()
            .finalized()
            .with_status(ApiServerVerifier::observing_status());
        let mock = server.run(Scenario::ObservingPodsUnchanged);
        reconcile(Arc::new(obs), ctx).await.expect("reconciler");
        timeout_after_1s(mock).await;
    }

    #[tokio::test]
    async fn bad_window_sets_ready_false_and_emits_event() {
        let (ctx, server) = crate::fixtures::context();
        let obs = NetworkObservation::test().finalized().with_window("1h");
        let mock = server.run(Scenario::InvalidSpec(obs.clone()));
        let action = reconcile(Arc::new(obs), ctx)
            .await
            .expect("bad spec is not a reconcile error");
        timeout_after_1s(mock).await;
        assert_eq!(action, Action::await_change());
    }

    #[tokio::test]
    async fn bad_spec_already_reported_stays_quiet() {
        // Pod events re-trigger reconciles; once Ready=False is written, no more events or patches.
        let (ctx, server) = crate::fixtures::context();
        let obs = NetworkObservation::test()
            .finalized()
            .with_window("1h")
            .with_status(ApiServerVerifier::invalid_window_status());
        let mock = server.run(Scenario::NoCalls);
        let action = reconcile(Arc::new(obs), ctx).await.expect("reconciler");
        timeout_after_1s(mock).await;
        assert_eq!(action, Action::await_change());
    }

    #[tokio::test]
    async fn deletion_withdraws_targets_and_removes_finalizer() {
        let (ctx, server) = crate::fixtures::context();
        let obs = NetworkObservation::test().finalized();
        ctx.targets.write().await.set(key(&obs), Default::default());
        let mock = server.run(Scenario::Cleanup(obs.clone().needs_delete()));
        reconcile(Arc::new(obs.needs_delete()), ctx.clone())
            .await
            .expect("reconciler");
        timeout_after_1s(mock).await;
        assert!(ctx.targets.read().await.is_empty());
    }

    #[tokio::test]
    async fn namespace_selector_limits_the_namespaces_searched() {
        let (ctx, server) = crate::fixtures::context();
        let mut obs = NetworkObservation::test().finalized().with_status(
            // No pods anywhere: the status below is what such a reconcile writes, so no patch.
            ApiServerVerifier::no_pods_status(),
        );
        obs.spec.namespace_selector = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector {
                match_labels: Some([("team".to_string(), "shop".to_string())].into()),
                match_expressions: None,
            },
        );
        let mock = server.run(Scenario::NamespaceSelector);
        reconcile(Arc::new(obs), ctx).await.expect("reconciler");
        timeout_after_1s(mock).await;
    }

    #[tokio::test]
    async fn api_errors_surface_as_errors() {
        let (ctx, server) = crate::fixtures::context();
        let obs = NetworkObservation::test().finalized();
        let mock = server.run(Scenario::PodListForbidden);
        let err = reconcile(Arc::new(obs), ctx)
            .await
            .expect_err("forbidden must fail");
        timeout_after_1s(mock).await;
        assert_eq!(err.metric_label(), "kube");
    }
}

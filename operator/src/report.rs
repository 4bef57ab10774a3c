//! DiagnosisReport reconcile for on-demand reports: Pending -> Running (collect for the
//! requested duration) -> Completed (findings from the diagnosis engine) or Failed.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};
use netdx_api::crd::{
    DiagnosisPhase, DiagnosisReport, DiagnosisReportStatus, Finding, NetworkObservation, Suspect,
};
use tracing::{debug, instrument, warn};

use crate::{Context, Error, Result};

/// Controller name in metrics.
pub const CONTROLLER: &str = "diagnosisreport";
/// Label on reports the operator writes itself; this controller leaves those alone.
pub const ORIGIN_LABEL: &str = "netdx.io/origin";
/// How long an on-demand report collects when its spec gives no duration.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(60);
/// Longest on-demand collection (matches the CRD's CEL rule).
pub const MAX_DURATION: Duration = Duration::from_secs(3600);
/// How often to ask the engine again when it could not conclude.
const ENGINE_RETRY: Duration = Duration::from_secs(30);
/// How long after the collection ends a report waits for windows before it fails.
const WINDOWS_DEADLINE: Duration = Duration::from_secs(300);

/// What the engine concluded about a span.
#[derive(Clone, Debug, PartialEq)]
pub struct Conclusion {
    /// Findings, most likely first.
    pub findings: Vec<Finding>,
    /// Instances worth a look that no finding names, likeliest first.
    pub suspects: Vec<Suspect>,
    /// Version of the model that produced them.
    pub model_version: String,
}

/// Turns the windows collected for a report into findings ([`crate::engine::WindowEngine`];
/// a trait so tests can plug in canned conclusions).
pub trait DiagnosisEngine: Send + Sync {
    /// Findings for `report` over `[start, end)`, or `None` while no window of the span has
    /// been diagnosed.
    fn diagnose<'a>(
        &'a self,
        report: &'a DiagnosisReport,
        start: Timestamp,
        end: Timestamp,
    ) -> BoxFuture<'a, Option<Conclusion>>;
}

/// Message a report shows while no window of its span has been diagnosed.
pub const AWAITING_WINDOWS: &str =
    "collection finished; waiting for the node-probes' windows of this span";

/// Entry point for the controller.
#[instrument(skip(report, ctx), fields(namespace = report.namespace(), name = report.name_any()))]
pub async fn reconcile(report: Arc<DiagnosisReport>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.start(CONTROLLER);
    ctx.diagnostics.write().await.last_event = (ctx.now)();
    if report.namespace().is_none() {
        return Err(Error::MissingNamespace {
            kind: "DiagnosisReport",
            name: report.name_any(),
        });
    }
    if report
        .labels()
        .get(ORIGIN_LABEL)
        .is_some_and(|o| o == "operator")
    {
        return Ok(Action::await_change());
    }
    let action = step(&report, &ctx).await?;
    ctx.note_success(&crate::context::failure_key(&*report));
    Ok(action)
}

/// Counts the failure and retries with a backoff that doubles per consecutive failure.
pub fn error_policy(report: Arc<DiagnosisReport>, error: &Error, ctx: Arc<Context>) -> Action {
    warn!(name = %report.name_any(), %error, "reconcile failed");
    ctx.metrics.failed(CONTROLLER, error);
    crate::controller::backoff(ctx.note_failure(crate::context::failure_key(&*report)))
}

/// The collection length a spec asks for, or why it is unusable.
fn requested_duration(report: &DiagnosisReport) -> std::result::Result<Duration, String> {
    let Some(d) = report.spec.duration.as_deref() else {
        return Ok(DEFAULT_DURATION);
    };
    // Same Go-style grammar as an observation window (and CEL's duration()), wider range.
    let parsed: kube::core::Duration = d.parse().map_err(|e| format!("duration {d:?}: {e}"))?;
    let d_std: Duration = parsed.into();
    if parsed.is_negative() || d_std < Duration::from_secs(1) || d_std > MAX_DURATION {
        return Err(format!("duration {d:?} must be between 1s and 1h"));
    }
    Ok(d_std)
}

fn phase(report: &DiagnosisReport) -> Option<DiagnosisPhase> {
    report.status.as_ref().and_then(|s| s.phase)
}

/// Moves the report one step along its lifecycle.
pub async fn step(report: &DiagnosisReport, ctx: &Context) -> Result<Action> {
    let now = (ctx.now)();
    match phase(report) {
        None | Some(DiagnosisPhase::Pending) => start(report, ctx, now).await,
        Some(DiagnosisPhase::Running) => progress(report, ctx, now).await,
        Some(DiagnosisPhase::Completed) | Some(DiagnosisPhase::Failed) => {
            Ok(Action::await_change())
        }
    }
}

/// Validates the request and starts collecting.
async fn start(report: &DiagnosisReport, ctx: &Context, now: Timestamp) -> Result<Action> {
    let duration = match requested_duration(report) {
        Ok(d) => d,
        Err(message) => return fail(report, ctx, "InvalidDuration", message).await,
    };
    if let Some(obs) = &report.spec.target.observation {
        let api: Api<NetworkObservation> =
            Api::namespaced(ctx.client.clone(), &report.namespace().unwrap_or_default());
        if api.get_opt(obs).await?.is_none() {
            return fail(
                report,
                ctx,
                "ObservationNotFound",
                format!("NetworkObservation {obs:?} not found"),
            )
            .await;
        }
    } else if report.spec.target.pod_selector.is_none() {
        return fail(
            report,
            ctx,
            "InvalidTarget",
            "set target.observation or target.podSelector".to_string(),
        )
        .await;
    }
    let status = DiagnosisReportStatus {
        phase: Some(DiagnosisPhase::Running),
        message: Some(format!("collecting windows for {}s", duration.as_secs())),
        observed_generation: report.metadata.generation,
        window_start: Some(Time(now)),
        ..Default::default()
    };
    apply_status(report, ctx, status).await?;
    Ok(Action::requeue(duration))
}

/// Waits out the collection, then asks the engine for findings.
async fn progress(report: &DiagnosisReport, ctx: &Context, now: Timestamp) -> Result<Action> {
    let duration = requested_duration(report).unwrap_or(DEFAULT_DURATION);
    let old = report.status.clone().unwrap_or_default();
    let start = old.window_start.as_ref().map(|t| t.0).unwrap_or(now);
    let end = start.checked_add(duration).unwrap_or(now);
    let left = end.duration_since(now);
    if left.is_positive() {
        debug!(left_s = left.as_secs_f64(), "still collecting");
        return Ok(Action::requeue(left.unsigned_abs()));
    }
    let status = match ctx.engine.diagnose(report, start, end).await {
        Some(c) => DiagnosisReportStatus {
            phase: Some(DiagnosisPhase::Completed),
            message: Some(format!("{} findings", c.findings.len())),
            findings: c.findings,
            suspects: c.suspects,
            model_version: Some(c.model_version),
            window_end: Some(Time(end)),
            ..old.clone()
        },
        None if now.duration_since(end).unsigned_abs() > WINDOWS_DEADLINE => {
            let message = format!(
                "no node-probe reported a window of this span within {}s",
                WINDOWS_DEADLINE.as_secs()
            );
            return fail(report, ctx, "NoWindows", message).await;
        }
        None => DiagnosisReportStatus {
            message: Some(AWAITING_WINDOWS.to_string()),
            ..old.clone()
        },
    };
    let done = status.phase == Some(DiagnosisPhase::Completed);
    if status != old {
        apply_status(report, ctx, status).await?;
    }
    Ok(if done {
        Action::await_change()
    } else {
        Action::requeue(ENGINE_RETRY)
    })
}

/// Marks the report Failed with a Warning event; a person has to fix the spec.
async fn fail(
    report: &DiagnosisReport,
    ctx: &Context,
    reason: &str,
    message: String,
) -> Result<Action> {
    warn!(reason, %message, "diagnosis report failed");
    ctx.recorder
        .publish(
            &Event {
                type_: EventType::Warning,
                reason: reason.to_string(),
                note: Some(message.clone()),
                action: "Validate".into(),
                secondary: None,
            },
            &report.object_ref(&()),
        )
        .await?;
    let status = DiagnosisReportStatus {
        phase: Some(DiagnosisPhase::Failed),
        message: Some(message),
        observed_generation: report.metadata.generation,
        ..Default::default()
    };
    apply_status(report, ctx, status).await?;
    Ok(Action::await_change())
}

/// Writes status with server-side apply (the same write the incident writer makes).
async fn apply_status(
    report: &DiagnosisReport,
    ctx: &Context,
    status: DiagnosisReportStatus,
) -> Result<()> {
    let api: Api<DiagnosisReport> =
        Api::namespaced(ctx.client.clone(), &report.namespace().unwrap_or_default());
    crate::incidents::apply_status(&api, report, status).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{Scenario, TestReport, timeout_after_1s};

    #[tokio::test]
    async fn on_demand_report_starts_running() {
        let (ctx, server) = crate::fixtures::context();
        let report = DiagnosisReport::test();
        let mock = server.run(Scenario::ReportStarts(report.clone()));
        let action = reconcile(Arc::new(report), ctx).await.expect("reconciler");
        timeout_after_1s(mock).await;
        assert_eq!(action, Action::requeue(Duration::from_secs(30)));
    }

    #[tokio::test]
    async fn report_for_missing_observation_fails() {
        let (ctx, server) = crate::fixtures::context();
        let report = DiagnosisReport::test();
        let mock = server.run(Scenario::ReportObservationMissing(report.clone()));
        let action = reconcile(Arc::new(report), ctx).await.expect("reconciler");
        timeout_after_1s(mock).await;
        assert_eq!(action, Action::await_change());
    }

    #[tokio::test]
    async fn running_report_waits_for_windows() {
        let (ctx, server) = crate::fixtures::context();
        let report = DiagnosisReport::test().running_since(crate::fixtures::now_secs() - 60);
        let mock = server.run(Scenario::ReportWaitsForEngine(report.clone()));
        let action = reconcile(Arc::new(report), ctx).await.expect("reconciler");
        timeout_after_1s(mock).await;
        assert_eq!(action, Action::requeue(ENGINE_RETRY));
    }

    #[tokio::test]
    async fn running_report_completes_with_the_windows_findings() {
        let (ctx, server) = crate::fixtures::context();
        crate::fixtures::watch_web_pods(&ctx.targets).await;
        // Both nodes' reports of the first window of the report's span; web-2 refuses web-1.
        let start_ms = (crate::fixtures::now_secs() as u64 - 60) * 1000;
        let expected = ctx.targets.read().await.nodes();
        let rejected = ctx.ingest.receive(
            vec![
                crate::ingest::tests::report("node-1", start_ms, 40),
                crate::ingest::tests::report("node-2", start_ms, 0),
            ],
            &expected,
            &ctx.metrics,
        );
        assert!(rejected.is_empty());
        let report = DiagnosisReport::test().running_since(crate::fixtures::now_secs() - 60);
        let mock = server.run(Scenario::ReportCompletes(report.clone()));
        let action = reconcile(Arc::new(report), ctx).await.expect("reconciler");
        timeout_after_1s(mock).await;
        assert_eq!(action, Action::await_change());
    }

    #[tokio::test]
    async fn running_report_still_collecting_makes_no_calls() {
        let (ctx, server) = crate::fixtures::context();
        let report = DiagnosisReport::test().running_since(crate::fixtures::now_secs() - 10);
        let mock = server.run(Scenario::NoCalls);
        let action = reconcile(Arc::new(report), ctx).await.expect("reconciler");
        timeout_after_1s(mock).await;
        assert_eq!(action, Action::requeue(Duration::from_secs(20)));
    }

    #[test]
    fn durations_are_bounded() {
        let mut r = DiagnosisReport::test();
        assert_eq!(requested_duration(&r), Ok(Duration::from_secs(30)));
        r.spec.duration = Some("2h".into());
        assert!(requested_duration(&r).is_err());
        r.spec.duration = None;
        assert_eq!(requested_duration(&r), Ok(DEFAULT_DURATION));
    }
}

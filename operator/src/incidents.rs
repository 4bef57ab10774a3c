//! Incident reports: for each NetworkObservation, a problem (root cause + instance) seen in
//! `reportPolicy.confirmWindows` consecutive diagnosed windows opens a DiagnosisReport (its
//! window starts with the first of them); while later windows keep showing it the same report
//! is updated (lastSeen, windows); the first window without it resolves the report; a later
//! recurrence opens a new one once confirmed again. Reports are owned by the observation and
//! pruned to its `reportPolicy.retention`, oldest resolved first. The observation's status gets
//! the window and the number of active (reported) findings.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};
use netdx_api::crd::{
    DiagnosisPhase, DiagnosisReport, DiagnosisReportSpec, DiagnosisReportStatus, DiagnosisTarget,
    Evidence, Finding, Instance, InstanceKind, LastWindow, NetworkObservation, ReportMode,
    Severity, Slo,
};
use netdx_api::targets::PodRef;
use netdx_diagnosis::confirm::{Confirmation, Streak};
use serde_json::json;
use tokio::sync::mpsc;
use tracing::{debug, info, instrument, warn};

use crate::engine::{merge, merge_suspects};
use crate::ingest::DiagnosedWindow;
use crate::report::ORIGIN_LABEL;
use crate::{Context, FIELD_MANAGER, Result};

/// Label naming the observation an incident report belongs to.
pub const OBSERVATION_LABEL: &str = "netdx.io/observation";
/// Label holding the hashed dedupe key (label values cannot hold the readable key).
pub const INCIDENT_LABEL: &str = "netdx.io/incident";
/// Annotation holding the readable dedupe key: rootCause/kind/instance.
pub const INCIDENT_ANNOTATION: &str = "netdx.io/incident-key";
/// Field manager of the observation status fields written per window (lastWindow,
/// activeFindings); separate from the reconcile's so neither apply drops the other's fields.
pub const WINDOW_FIELD_MANAGER: &str = "netdx-operator-windows";
/// Root cause of a broken latency SLO without a model finding.
pub const SLO_LATENCY: &str = "SloLatencyP99Exceeded";
/// Root cause of a broken error-ratio SLO without a model finding.
pub const SLO_ERRORS: &str = "SloErrorRatioExceeded";
/// Dedupe key of the report covering quiet windows under `reportPolicy.mode: Always`.
pub const HEALTHY_KEY: &str = "Healthy";

/// Per observation, the streaks of problems not yet reported (keyed by dedupe key). Kept in
/// memory: after a restart a problem needs its windows again, which delays it by at most
/// `confirmWindows - 1` windows.
pub type Pending = Arc<Mutex<HashMap<PodRef, Confirmation<String>>>>;

/// The dedupe key of a finding: root cause and instance.
pub fn incident_key(f: &Finding) -> String {
    format!("{}/{:?}/{}", f.root_cause, f.instance.kind, f.instance.name)
}

/// A label-safe, restart-stable hash of a key (FNV-1a, 64 bits, hex).
pub(crate) fn label_value(key: &str) -> String {
    let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{hash:016x}")
}

fn time(unix_ms: u64) -> Time {
    let ms = i64::try_from(unix_ms).unwrap_or(i64::MAX);
    Time(Timestamp::from_millisecond(ms).unwrap_or(Timestamp::UNIX_EPOCH))
}

/// The pending streaks; a poisoned lock only means a writer panicked, the map is still usable.
fn lock(p: &Pending) -> std::sync::MutexGuard<'_, HashMap<PodRef, Confirmation<String>>> {
    p.lock().unwrap_or_else(|e| e.into_inner())
}

fn phase(r: &DiagnosisReport) -> Option<DiagnosisPhase> {
    r.status.as_ref().and_then(|s| s.phase)
}

/// Turns diagnosed windows into incident reports until the ingest side goes away.
pub async fn run(ctx: Arc<Context>, mut windows: mpsc::Receiver<Arc<DiagnosedWindow>>) {
    while let Some(w) = windows.recv().await {
        let observations = ctx.targets.read().await.observations();
        for (obs, pods) in observations {
            if let Err(e) = record(&ctx, &obs, &pods, &w).await {
                warn!(observation = %obs, error = %e, "writing incident reports");
            }
        }
    }
}

/// Brings one observation's incident reports in line with a diagnosed window.
#[instrument(skip(ctx, pods, window), fields(observation = %obs, start_ms = window.start_ms))]
pub async fn record(
    ctx: &Context,
    obs: &PodRef,
    pods: &BTreeSet<PodRef>,
    window: &DiagnosedWindow,
) -> Result<()> {
    let observations: Api<NetworkObservation> = Api::namespaced(ctx.client.clone(), &obs.namespace);
    let Some(observation) = observations.get_opt(&obs.name).await? else {
        // Deleted since the window was filed: its reports go with it (owner references).
        lock(&ctx.pending).remove(obs);
        return Ok(());
    };
    let reports: Api<DiagnosisReport> = Api::namespaced(ctx.client.clone(), &obs.namespace);
    let selector = format!("{ORIGIN_LABEL}=operator,{OBSERVATION_LABEL}={}", obs.name);
    let existing = reports
        .list(&ListParams::default().labels(&selector))
        .await?
        .items;
    let mut open: BTreeMap<String, &DiagnosisReport> = existing
        .iter()
        .filter(|r| phase(r) == Some(DiagnosisPhase::Running))
        .filter_map(|r| Some((r.labels().get(INCIDENT_LABEL)?.clone(), r)))
        .collect();
    let end = time(window.end_ms);
    let findings = merge(window.findings.iter().filter(|f| f.involves(pods)));
    // Every report of the window lists what else looked suspicious around the observation.
    let suspects = merge_suspects(
        window.suspects.iter().filter(|s| !s.pods.is_disjoint(pods)),
        &findings,
    );
    let mut created = 0usize;
    let mut incidents: Vec<(String, Vec<Finding>)> = findings
        .into_iter()
        .map(|f| (incident_key(&f), vec![f]))
        .collect();
    if incidents.is_empty()
        && let Some(slo) = &observation.spec.slo
    {
        // SLO breaches are reported even when the model sees nothing wrong.
        incidents.extend(
            slo_findings(slo, window, pods)
                .into_iter()
                .map(|f| (incident_key(&f), vec![f])),
        );
    }
    let streaks: HashMap<String, (Streak, bool)> = {
        let need = observation.spec.report_policy.confirm_windows;
        let mut pending = lock(&ctx.pending);
        let c = pending
            .entry(obs.clone())
            .or_insert_with(|| Confirmation::new(need));
        c.set_need(need);
        c.observe(incidents.iter().map(|(k, _)| k.clone()), window.start_ms)
            .into_iter()
            .map(|(k, s, ok)| (k, (s, ok)))
            .collect()
    };
    // A problem already reported stays reported; a new one waits for its streak.
    incidents.retain(|(key, _)| {
        let reported =
            open.contains_key(&label_value(key)) || streaks.get(key).is_some_and(|s| s.1);
        if !reported {
            debug!(%key, "problem seen, waiting for it to repeat before reporting");
        }
        reported
    });
    if incidents.is_empty() && observation.spec.report_policy.mode == ReportMode::Always {
        // Always: quiet windows are reported too, as one continuing report without findings.
        incidents.push((HEALTHY_KEY.to_string(), Vec::new()));
    }
    let active = incidents.iter().map(|(_, f)| f.len()).sum::<usize>();
    let active = u32::try_from(active).unwrap_or(u32::MAX);
    for (key, findings) in incidents {
        let status = |report: &DiagnosisReport, windows: u32, start: Time| DiagnosisReportStatus {
            phase: Some(DiagnosisPhase::Running),
            message: Some(format!("{key}: seen in {windows} windows")),
            observed_generation: report.metadata.generation,
            findings: findings.clone(),
            suspects: suspects.clone(),
            model_version: Some(window.model_version.clone()),
            window_start: Some(start),
            window_end: Some(end.clone()),
            last_seen: Some(end.clone()),
            windows: Some(windows),
        };
        match open.remove(&label_value(&key)) {
            Some(report) => {
                let old = report.status.clone().unwrap_or_default();
                let start = old.window_start.unwrap_or_else(|| time(window.start_ms));
                let status = status(report, old.windows.unwrap_or(1) + 1, start);
                apply_status(&reports, report, status).await?;
            }
            None => {
                let report = reports
                    .create(
                        &PostParams::default(),
                        &new_report(&observation, &key, window.start_ms),
                    )
                    .await?;
                info!(report = %report.name_any(), %key, "incident opened");
                // Opened after its streak: the report covers every window of it.
                let (windows, since) = streaks
                    .get(&key)
                    .map_or((1, window.start_ms), |(s, _)| (s.windows, s.since));
                let status = status(&report, windows, time(since));
                apply_status(&reports, &report, status).await?;
                created += 1;
            }
        }
    }
    // Still open but not in this window: the problem is gone.
    let mut resolved: Vec<&DiagnosisReport> = existing
        .iter()
        .filter(|r| phase(r) == Some(DiagnosisPhase::Completed))
        .collect();
    for report in open.into_values() {
        let old = report.status.clone().unwrap_or_default();
        let status = DiagnosisReportStatus {
            phase: Some(DiagnosisPhase::Completed),
            message: Some(format!(
                "resolved after {} windows",
                old.windows.unwrap_or(1)
            )),
            window_end: old.last_seen.clone(),
            ..old
        };
        apply_status(&reports, report, status).await?;
        resolved.push(report);
    }
    let retention = observation.spec.report_policy.retention as usize;
    let excess = (existing.len() + created).saturating_sub(retention);
    resolved.sort_by_key(|r| {
        r.status
            .as_ref()
            .and_then(|s| s.window_start.as_ref().map(|t| t.0))
    });
    for old in resolved.into_iter().take(excess) {
        info!(report = %old.name_any(), "retention: deleting the oldest resolved report");
        reports
            .delete(&old.name_any(), &DeleteParams::default())
            .await?;
    }
    let patch = json!({
        "apiVersion": NetworkObservation::api_version(&()),
        "kind": NetworkObservation::kind(&()),
        "status": {
            "lastWindow": LastWindow { start: time(window.start_ms), end },
            "activeFindings": active,
        },
    });
    observations
        .patch_status(
            &obs.name,
            &PatchParams::apply(WINDOW_FIELD_MANAGER).force(),
            &Patch::Apply(patch),
        )
        .await?;
    Ok(())
}

/// Per server pod of the observation, the SLOs its callers saw broken in the window.
fn slo_findings(slo: &Slo, window: &DiagnosedWindow, pods: &BTreeSet<PodRef>) -> Vec<Finding> {
    // (worst p99, exchanges, errors) per server pod.
    let mut per_server: BTreeMap<&PodRef, (f64, u64, u64)> = BTreeMap::new();
    for e in &window.edges {
        let Some(server) = e.server.as_ref().filter(|p| pods.contains(*p)) else {
            continue;
        };
        let s = per_server.entry(server).or_default();
        s.0 = s.0.max(e.p99_ms);
        s.1 += e.exchanges;
        s.2 += e.errors;
    }
    let finding = |cause: &str, server: &PodRef, feature: &str, value: f64, rule: String| Finding {
        root_cause: cause.to_string(),
        instance: Instance {
            kind: InstanceKind::Pod,
            name: server.to_string(),
        },
        confidence: 1.0,
        severity: Severity::Warning,
        evidence: vec![Evidence {
            feature: feature.to_string(),
            value,
            baseline: None,
        }],
        decision_path: vec![rule],
    };
    let mut out = Vec::new();
    for (server, (p99, exchanges, errors)) in per_server {
        if let Some(limit) = slo.latency_p99_ms
            && p99 > f64::from(limit)
        {
            let rule = format!("clientP99Ms {p99:.1} > SLO {limit}");
            out.push(finding(SLO_LATENCY, server, "clientP99Ms", p99, rule));
        }
        let ratio = if exchanges > 0 {
            errors as f64 / exchanges as f64
        } else {
            0.0
        };
        if let Some(limit) = slo.error_ratio
            && ratio > limit
        {
            let rule = format!("errorRatio {ratio:.4} > SLO {limit}");
            out.push(finding(SLO_ERRORS, server, "errorRatio", ratio, rule));
        }
    }
    out
}

/// A new incident report owned by the observation.
fn new_report(obs: &NetworkObservation, key: &str, start_ms: u64) -> DiagnosisReport {
    let hash = label_value(key);
    // Report names are DNS subdomains (253); leave room for the suffix.
    let base: String = obs.name_any().chars().take(200).collect();
    DiagnosisReport {
        metadata: ObjectMeta {
            name: Some(format!("{base}-{}-{}", &hash[..8], start_ms / 1000)),
            namespace: obs.namespace(),
            labels: Some(BTreeMap::from([
                (ORIGIN_LABEL.to_string(), "operator".to_string()),
                (OBSERVATION_LABEL.to_string(), obs.name_any()),
                (INCIDENT_LABEL.to_string(), hash),
            ])),
            annotations: Some(BTreeMap::from([(
                INCIDENT_ANNOTATION.to_string(),
                key.to_string(),
            )])),
            owner_references: obs.controller_owner_ref(&()).map(|o| vec![o]),
            ..Default::default()
        },
        spec: DiagnosisReportSpec {
            target: DiagnosisTarget::observation(obs.name_any()),
            duration: None,
        },
        status: None,
    }
}

/// Writes a report's status with server-side apply.
pub(crate) async fn apply_status(
    api: &Api<DiagnosisReport>,
    report: &DiagnosisReport,
    status: DiagnosisReportStatus,
) -> Result<()> {
    let patch = json!({
        "apiVersion": DiagnosisReport::api_version(&()),
        "kind": DiagnosisReport::kind(&()),
        "status": status,
    });
    api.patch_status(
        &report.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(patch),
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{
        INCIDENT_KEY, INCIDENT_START_MS, Scenario, TestObservation, incident_window,
        timeout_after_1s,
    };

    fn web_pods() -> BTreeSet<PodRef> {
        ["web-1", "web-2"]
            .into_iter()
            .map(|n| PodRef {
                namespace: "default".into(),
                name: n.into(),
            })
            .collect()
    }

    fn web() -> PodRef {
        PodRef {
            namespace: "default".into(),
            name: "web".into(),
        }
    }

    #[tokio::test]
    async fn a_new_problem_is_not_reported_until_it_repeats() {
        let (ctx, server) = crate::fixtures::context();
        let mock = server.run(Scenario::IncidentPending);
        record(&ctx, &web(), &web_pods(), &incident_window())
            .await
            .expect("recorded");
        timeout_after_1s(mock).await;
        let pending = lock(&ctx.pending);
        let streak = pending[&web()]
            .clone()
            .observe([INCIDENT_KEY.to_string()], 0);
        assert_eq!(streak[0].1.windows, 2, "the first window was counted");
    }

    #[tokio::test]
    async fn a_repeated_problem_opens_a_report_covering_its_windows() {
        let (ctx, server) = crate::fixtures::context();
        // The window before showed the same problem.
        let mut streak = Confirmation::new(2);
        streak.observe([INCIDENT_KEY.to_string()], INCIDENT_START_MS - 10_000);
        lock(&ctx.pending).insert(web(), streak);
        let mock = server.run(Scenario::IncidentOpened);
        record(&ctx, &web(), &web_pods(), &incident_window())
            .await
            .expect("recorded");
        timeout_after_1s(mock).await;
    }

    #[tokio::test]
    async fn a_continuing_problem_updates_its_report() {
        let (ctx, server) = crate::fixtures::context();
        let mock = server.run(Scenario::IncidentContinues);
        record(&ctx, &web(), &web_pods(), &incident_window())
            .await
            .expect("recorded");
        timeout_after_1s(mock).await;
    }

    #[tokio::test]
    async fn gone_problems_resolve_and_retention_deletes_the_oldest_resolved() {
        let (ctx, server) = crate::fixtures::context();
        let mut obs = NetworkObservation::test().with_retention(2);
        // Reported at once: this test is about resolving and retention.
        obs.spec.report_policy.confirm_windows = 1;
        let mock = server.run(Scenario::IncidentRetention(obs));
        record(&ctx, &web(), &web_pods(), &incident_window())
            .await
            .expect("recorded");
        timeout_after_1s(mock).await;
    }

    #[tokio::test]
    async fn always_mode_reports_quiet_windows() {
        let (ctx, server) = crate::fixtures::context();
        let mut obs = NetworkObservation::test();
        obs.spec.report_policy.mode = ReportMode::Always;
        let mock = server.run(Scenario::QuietWindowReported(obs));
        let mut quiet = incident_window();
        quiet.findings.clear();
        record(&ctx, &web(), &web_pods(), &quiet)
            .await
            .expect("recorded");
        timeout_after_1s(mock).await;
    }

    #[test]
    fn broken_slos_become_findings_on_the_server() {
        let mut w = incident_window();
        let pod = |n: &str| PodRef {
            namespace: "default".into(),
            name: n.into(),
        };
        w.edges = vec![
            crate::ingest::EdgeSummary {
                client: Some(pod("web-1")),
                server: Some(pod("web-2")),
                p99_ms: 250.0,
                exchanges: 100,
                errors: 1,
            },
            crate::ingest::EdgeSummary {
                client: Some(pod("web-2")),
                server: Some(pod("db")),
                p99_ms: 900.0,
                exchanges: 10,
                errors: 10,
            },
        ];
        let slo = Slo {
            latency_p99_ms: Some(200),
            error_ratio: Some(0.05),
        };
        let found = slo_findings(&slo, &w, &web_pods());
        assert_eq!(found.len(), 1, "db is not the observation's: {found:?}");
        assert_eq!(found[0].root_cause, SLO_LATENCY);
        assert_eq!(found[0].instance.name, "default/web-2");
        assert_eq!(found[0].evidence[0].value, 250.0);
        let strict = Slo {
            latency_p99_ms: None,
            error_ratio: Some(0.001),
        };
        let found = slo_findings(&strict, &w, &web_pods());
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].root_cause, SLO_ERRORS);
    }

    #[test]
    fn keys_hash_to_label_values() {
        let v = label_value("ConnectionRefused/Pod/default/web-2");
        assert_eq!(v.len(), 16);
        assert!(v.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(v, label_value("ConnectionRefused/Pod/default/web-2"));
        assert_ne!(v, label_value("ConnectionRefused/Pod/default/web-1"));
    }
}

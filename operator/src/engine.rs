//! The diagnosis engine behind DiagnosisReports: netdx-diagnosis findings of the ingested
//! windows, mapped to the CRD's finding fields and scoped to a report's target.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use futures::future::BoxFuture;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use netdx_api::crd::{self, DiagnosisReport};
use netdx_api::targets::PodRef;
use netdx_diagnosis::localize::MAX_SUSPECTS;
use netdx_diagnosis::report::{crd_finding as to_crd, crd_suspect};

use crate::ingest::{DiagnosedWindow, Ingest, WindowFinding, WindowSuspect};
use crate::report::{Conclusion, DiagnosisEngine};
use crate::targets::SharedRegistry;

/// One finding per (root cause, instance) over several windows: the most confident
/// occurrence, at the worst severity seen; most confident first.
pub fn merge<'a>(findings: impl IntoIterator<Item = &'a WindowFinding>) -> Vec<crd::Finding> {
    let mut best: BTreeMap<(String, String), crd::Finding> = BTreeMap::new();
    for f in findings.into_iter().filter_map(|f| to_crd(&f.finding)) {
        let key = (f.root_cause.clone(), f.instance.name.clone());
        match best.get_mut(&key) {
            Some(b) => {
                let severity = b.severity.max(f.severity);
                if f.confidence > b.confidence {
                    *b = f;
                }
                b.severity = severity;
            }
            None => {
                best.insert(key, f);
            }
        }
    }
    let mut out: Vec<crd::Finding> = best.into_values().collect();
    out.sort_by(|a, b| b.confidence.total_cmp(&a.confidence));
    out
}

/// One suspect per (root cause, instance) over several windows, at its strongest (edges
/// leaning times their share, as the localizer ranks them); instances that `findings` name are
/// left out; likeliest first, at most [`MAX_SUSPECTS`].
pub fn merge_suspects<'a>(
    suspects: impl IntoIterator<Item = &'a WindowSuspect>,
    findings: &[crd::Finding],
) -> Vec<crd::Suspect> {
    let weight = |s: &crd::Suspect| s.share * f64::from(s.edges);
    let mut best: BTreeMap<(String, String), crd::Suspect> = BTreeMap::new();
    for s in suspects.into_iter().filter_map(|s| crd_suspect(&s.suspect)) {
        if findings.iter().any(|f| f.instance == s.instance) {
            continue;
        }
        let key = (s.root_cause.clone(), s.instance.name.clone());
        match best.get_mut(&key) {
            Some(b) if weight(b) >= weight(&s) => {}
            Some(b) => *b = s,
            None => {
                best.insert(key, s);
            }
        }
    }
    let mut out: Vec<crd::Suspect> = best.into_values().collect();
    out.sort_by(|a, b| weight(b).total_cmp(&weight(a)));
    out.truncate(MAX_SUSPECTS);
    out
}

fn unix_ms(t: Timestamp) -> u64 {
    u64::try_from(t.as_millisecond()).unwrap_or(0)
}

/// Answers on-demand reports from the windows the ingest diagnosed.
pub struct WindowEngine {
    /// Where diagnosed windows are kept.
    pub ingest: Arc<Ingest>,
    /// Which pods each observation selects.
    pub targets: SharedRegistry,
}

impl WindowEngine {
    /// Whether a finding or suspect, by the pods behind it, concerns the report's target: the
    /// observation's pods, or (for a pod selector, whose labels windows do not carry) any pod
    /// of the report's namespace.
    async fn scope(&self, report: &DiagnosisReport) -> impl Fn(&BTreeSet<PodRef>) -> bool + use<> {
        let namespace = report.namespace().unwrap_or_default();
        let pods: Option<BTreeSet<PodRef>> = match &report.spec.target.observation {
            Some(obs) => {
                let key = PodRef {
                    namespace: namespace.as_str().into(),
                    name: obs.as_str().into(),
                };
                let observations = self.targets.read().await.observations();
                Some(
                    observations
                        .into_iter()
                        .find(|(o, _)| *o == key)
                        .map(|(_, pods)| pods)
                        .unwrap_or_default(),
                )
            }
            None => None,
        };
        move |behind: &BTreeSet<PodRef>| match &pods {
            Some(pods) => !behind.is_disjoint(pods),
            None => behind.iter().any(|p| p.namespace == namespace),
        }
    }
}

impl DiagnosisEngine for WindowEngine {
    fn diagnose<'a>(
        &'a self,
        report: &'a DiagnosisReport,
        start: Timestamp,
        end: Timestamp,
    ) -> BoxFuture<'a, Option<Conclusion>> {
        Box::pin(async move {
            let windows: Vec<Arc<DiagnosedWindow>> =
                self.ingest.diagnosed_between(unix_ms(start), unix_ms(end));
            let model_version = windows.last()?.model_version.clone();
            let in_scope = self.scope(report).await;
            let findings = merge(
                windows
                    .iter()
                    .flat_map(|w| w.findings.iter())
                    .filter(|f| in_scope(&f.pods)),
            );
            let suspects = merge_suspects(
                windows
                    .iter()
                    .flat_map(|w| w.suspects.iter())
                    .filter(|s| in_scope(&s.pods)),
                &findings,
            );
            Some(Conclusion {
                findings,
                suspects,
                model_version,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netdx_diagnosis::classes::{InstanceKind, RootCause};
    use netdx_diagnosis::localize::{Evidence, Finding, Instance, Severity};

    fn finding(kind: InstanceKind, name: &str, confidence: f64, severity: Severity) -> Finding {
        Finding {
            root_cause: RootCause::PathLoss,
            instance: Instance {
                kind,
                name: name.into(),
            },
            confidence,
            severity,
            evidence: vec![Evidence {
                feature: "retrans_ratio".into(),
                value: 0.2,
                baseline: Some(0.01),
            }],
            decision_path: vec!["retrans_ratio >= 0.05".into()],
            edges: vec![],
        }
    }

    #[test]
    fn findings_map_to_the_crd_shape() {
        let f = to_crd(&finding(
            InstanceKind::NodePair,
            "a<->b",
            1.2,
            Severity::Major,
        ))
        .expect("blames a pair");
        assert_eq!(f.root_cause, "PathLoss");
        assert_eq!(f.instance.kind, crd::InstanceKind::NodePair);
        assert_eq!(f.instance.name, "a--b");
        assert_eq!(f.confidence, 1.0, "clamped to the schema's range");
        assert_eq!(f.severity, crd::Severity::Warning);
        assert_eq!(f.evidence[0].baseline, Some(0.01));
        assert_eq!(f.decision_path, vec!["retrans_ratio >= 0.05"]);
        assert!(to_crd(&finding(InstanceKind::None, "-", 0.5, Severity::Minor)).is_none());
    }

    #[test]
    fn merge_keeps_the_most_confident_and_the_worst_severity() {
        let wf = |c, s| WindowFinding {
            finding: finding(InstanceKind::Pod, "default/web-2", c, s),
            pods: BTreeSet::new(),
        };
        let merged = merge(&[
            wf(0.9, Severity::Minor),
            wf(0.5, Severity::Critical),
            WindowFinding {
                finding: finding(InstanceKind::Node, "node-1", 0.95, Severity::Minor),
                pods: BTreeSet::new(),
            },
        ]);
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[0].instance.name, "node-1");
        assert_eq!(merged[1].confidence, 0.9);
        assert_eq!(merged[1].severity, crd::Severity::Critical);
    }

    #[test]
    fn suspects_merge_at_their_strongest_without_what_findings_name() {
        let ws = |name: &str, share: f64, edges: usize| WindowSuspect {
            suspect: netdx_diagnosis::localize::Suspect {
                root_cause: RootCause::ServerAppSlow,
                instance: Instance {
                    kind: InstanceKind::Pod,
                    name: name.into(),
                },
                share,
                edges: vec!["e".into(); edges],
            },
            pods: BTreeSet::new(),
        };
        let named = to_crd(&finding(
            InstanceKind::Pod,
            "default/db",
            0.9,
            Severity::Major,
        ))
        .expect("a pod");
        let merged = merge_suspects(
            &[
                ws("default/web", 0.2, 1),
                ws("default/api", 0.1, 3),
                ws("default/web", 0.2, 2),
                ws("default/db", 0.5, 4),
            ],
            &[named],
        );
        let got: Vec<(&str, u32)> = merged
            .iter()
            .map(|s| (s.instance.name.as_str(), s.edges))
            .collect();
        // web at its strongest (2 x 0.2) over api (3 x 0.1); db is a finding already.
        assert_eq!(got, [("default/web", 2), ("default/api", 3)]);
        let many: Vec<WindowSuspect> = (0..MAX_SUSPECTS + 3)
            .map(|i| ws(&format!("default/p{i}"), 0.1, 1))
            .collect();
        assert_eq!(merge_suspects(&many, &[]).len(), MAX_SUSPECTS);
    }
}

//! Findings and suspects as DiagnosisReport custom-resource status entries (feature `crd`): the one
//! conversion the operator and the local demo share.

use netdx_api::crd;

use crate::{
    classes::InstanceKind,
    localize::{Finding, Instance, Severity, Suspect},
};

/// The root cause as the CRD names it (`path_loss` -> `PathLoss`).
pub fn crd_root_cause(c: crate::classes::RootCause) -> String {
    c.as_str()
        .split('_')
        .map(|w| {
            let mut ch = w.chars();
            ch.next()
                .map(|first| first.to_ascii_uppercase().to_string() + ch.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// The CRD's node-pair name ("nodeA--nodeB") for ours ("nodeA<->nodeB").
fn crd_instance_name(kind: InstanceKind, name: &str) -> String {
    match kind {
        InstanceKind::NodePair => name.replace("<->", "--"),
        _ => name.to_string(),
    }
}

/// A finding as it appears in `DiagnosisReport.status.findings`; `None` for kinds the CRD
/// cannot name (a finding never blames "none").
pub fn crd_finding(f: &Finding) -> Option<crd::Finding> {
    Some(crd::Finding {
        root_cause: crd_root_cause(f.root_cause),
        instance: crd_instance(&f.instance)?,
        confidence: f.confidence.clamp(0.0, 1.0),
        severity: match f.severity {
            Severity::Minor => crd::Severity::Info,
            Severity::Major => crd::Severity::Warning,
            Severity::Critical => crd::Severity::Critical,
        },
        evidence: f
            .evidence
            .iter()
            .map(|e| crd::Evidence {
                feature: e.feature.clone(),
                value: e.value,
                baseline: e.baseline,
            })
            .collect(),
        decision_path: f.decision_path.clone(),
    })
}

/// A suspect as it appears in `DiagnosisReport.status.suspects`; `None` for kinds the CRD
/// cannot name.
pub fn crd_suspect(s: &Suspect) -> Option<crd::Suspect> {
    Some(crd::Suspect {
        root_cause: crd_root_cause(s.root_cause),
        instance: crd_instance(&s.instance)?,
        share: s.share.clamp(0.0, 1.0),
        edges: u32::try_from(s.edges.len()).unwrap_or(u32::MAX),
    })
}

/// The CRD's form of an instance; `None` for "none", which nothing can be blamed on.
fn crd_instance(i: &Instance) -> Option<crd::Instance> {
    let kind = match i.kind {
        InstanceKind::Pod => crd::InstanceKind::Pod,
        InstanceKind::Node => crd::InstanceKind::Node,
        InstanceKind::NodePair => crd::InstanceKind::NodePair,
        InstanceKind::Service => crd::InstanceKind::Service,
        InstanceKind::None => return None,
    };
    Some(crd::Instance {
        kind,
        name: crd_instance_name(i.kind, &i.name),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{classes::RootCause, localize::Evidence};

    #[test]
    fn node_pairs_and_severities_map_to_crd_names() {
        let f = Finding {
            root_cause: RootCause::PathLoss,
            instance: Instance {
                kind: InstanceKind::NodePair,
                name: "node-0<->node-2".into(),
            },
            confidence: 1.5,
            severity: Severity::Major,
            evidence: vec![Evidence {
                feature: "retrans_s2c_per_exchange".into(),
                value: 0.2,
                baseline: None,
            }],
            decision_path: vec!["a > 1".into()],
            edges: vec![],
        };
        let c = crd_finding(&f).unwrap();
        assert_eq!(c.instance.name, "node-0--node-2");
        assert_eq!(
            (c.severity, c.confidence, c.root_cause.as_str()),
            (crd::Severity::Warning, 1.0, "PathLoss")
        );
        let none = Finding {
            instance: Instance {
                kind: InstanceKind::None,
                name: String::new(),
            },
            ..f
        };
        assert!(crd_finding(&none).is_none());
    }

    #[test]
    fn suspects_map_like_findings() {
        let s = Suspect {
            root_cause: RootCause::JitterReorder,
            instance: Instance {
                kind: InstanceKind::NodePair,
                name: "node-0<->node-2".into(),
            },
            share: 0.3,
            edges: vec!["a".into(), "b".into()],
        };
        let c = crd_suspect(&s).unwrap();
        assert_eq!(
            (c.root_cause.as_str(), c.instance.name.as_str(), c.edges),
            ("JitterReorder", "node-0--node-2", 2)
        );
        assert!((c.share - 0.3).abs() < 1e-12);
        let none = Suspect {
            instance: Instance {
                kind: InstanceKind::None,
                name: String::new(),
            },
            ..s
        };
        assert!(crd_suspect(&none).is_none());
    }
}

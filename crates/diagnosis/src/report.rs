//! Findings as DiagnosisReport custom-resource status entries (feature `crd`): the one
//! conversion the operator and the local demo share.

use netdx_api::crd;

use crate::{
    classes::InstanceKind,
    localize::{Finding, Severity},
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
    let kind = match f.instance.kind {
        InstanceKind::Pod => crd::InstanceKind::Pod,
        InstanceKind::Node => crd::InstanceKind::Node,
        InstanceKind::NodePair => crd::InstanceKind::NodePair,
        InstanceKind::Service => crd::InstanceKind::Service,
        InstanceKind::None => return None,
    };
    Some(crd::Finding {
        root_cause: crd_root_cause(f.root_cause),
        instance: crd::Instance {
            kind,
            name: crd_instance_name(f.instance.kind, &f.instance.name),
        },
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        classes::RootCause,
        localize::{Evidence, Instance},
    };

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
}

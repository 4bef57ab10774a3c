//! The CRDs' CEL rules evaluated locally (kube-cel), so a rule that does not compile or does
//! not reject what it should fails here instead of on a cluster.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use kube::core::cel::validate_cel;
use netdx_api::crd::{
    DiagnosisReport, DiagnosisReportSpec, DiagnosisTarget, NetworkObservation,
    NetworkObservationSpec, ReportPolicy,
};

fn labels(pairs: &[(&str, &str)]) -> LabelSelector {
    LabelSelector {
        match_labels: Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        ),
        match_expressions: None,
    }
}

fn obs(selector: LabelSelector, window: &str) -> NetworkObservation {
    NetworkObservation::new(
        "web",
        NetworkObservationSpec {
            pod_selector: selector,
            namespace_selector: None,
            window: window.into(),
            slo: None,
            report_policy: ReportPolicy::default(),
            payload_capture: Default::default(),
        },
    )
}

fn report(target: DiagnosisTarget, duration: Option<&str>) -> DiagnosisReport {
    DiagnosisReport::new(
        "r",
        DiagnosisReportSpec {
            target,
            duration: duration.map(String::from),
        },
    )
}

#[test]
fn window_rule_accepts_1s_to_10m() {
    for w in ["1s", "10s", "1m30s", "10m"] {
        validate_cel(&obs(labels(&[("app", "web")]), w))
            .unwrap_or_else(|e| panic!("{w} should pass: {e:?}"));
    }
}

#[test]
fn window_rule_rejects_outside_range() {
    for w in ["500ms", "11m", "1h"] {
        let err = validate_cel(&obs(labels(&[("app", "web")]), w)).expect_err(w);
        assert!(
            format!("{err:?}").contains("window must be between 1s and 10m"),
            "{w}: {err:?}"
        );
    }
}

#[test]
fn empty_pod_selector_is_rejected() {
    let err = validate_cel(&obs(LabelSelector::default(), "10s")).expect_err("empty selector");
    assert!(
        format!("{err:?}").contains("podSelector must not be empty"),
        "{err:?}"
    );
    let err = validate_cel(&obs(labels(&[]), "10s")).expect_err("empty matchLabels");
    assert!(
        format!("{err:?}").contains("podSelector must not be empty"),
        "{err:?}"
    );
    let expr = LabelSelector {
        match_labels: None,
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: "app".into(),
            operator: "Exists".into(),
            values: None,
        }]),
    };
    validate_cel(&obs(expr, "10s")).expect("matchExpressions alone is enough");
}

#[test]
fn report_target_needs_exactly_one_of_observation_and_selector() {
    validate_cel(&report(DiagnosisTarget::observation("web"), Some("5m")))
        .expect("observation only");
    let only_sel = DiagnosisTarget {
        observation: None,
        pod_selector: Some(labels(&[("app", "web")])),
    };
    validate_cel(&report(only_sel, None)).expect("selector only");
    let both = DiagnosisTarget {
        observation: Some("web".into()),
        pod_selector: Some(labels(&[("app", "web")])),
    };
    assert!(validate_cel(&report(both, None)).is_err());
    let neither = DiagnosisTarget {
        observation: None,
        pod_selector: None,
    };
    assert!(validate_cel(&report(neither, None)).is_err());
}

#[test]
fn report_duration_is_bounded() {
    assert!(validate_cel(&report(DiagnosisTarget::observation("web"), Some("2h"))).is_err());
    validate_cel(&report(DiagnosisTarget::observation("web"), Some("1h")))
        .expect("1h is the limit");
}

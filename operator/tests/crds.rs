//! The generated CRDs: no drift from the Rust types, and the schema carries the validation,
//! printer columns and descriptions users depend on.

use std::path::PathBuf;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, CustomResourceDefinitionVersion, JSONSchemaProps,
};
use netdx_operator::crdgen::{
    CRDS_FILE, REFERENCE_FILE, REGENERATE, REGENERATE_REFERENCE, reference, render,
};
use serde::Deserialize;

fn crds_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(CRDS_FILE)
}

fn committed() -> String {
    std::fs::read_to_string(crds_path())
        .unwrap_or_else(|e| panic!("reading {}: {e}; run `{REGENERATE}`", CRDS_FILE))
}

fn load() -> Vec<CustomResourceDefinition> {
    serde_yaml::Deserializer::from_str(&committed())
        .map(|doc| CustomResourceDefinition::deserialize(doc).expect("every document is a CRD"))
        .collect()
}

fn crd(name: &str) -> CustomResourceDefinition {
    load()
        .into_iter()
        .find(|c| c.metadata.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("{name} missing from {CRDS_FILE}"))
}

fn version(c: &CustomResourceDefinition) -> &CustomResourceDefinitionVersion {
    assert_eq!(c.spec.versions.len(), 1);
    &c.spec.versions[0]
}

fn schema(c: &CustomResourceDefinition) -> &JSONSchemaProps {
    version(c)
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .expect("schema")
}

/// Follows `properties` down a dotted path.
fn prop<'a>(root: &'a JSONSchemaProps, path: &str) -> &'a JSONSchemaProps {
    path.split('.').fold(root, |s, key| {
        s.properties
            .as_ref()
            .and_then(|p| p.get(key))
            .or_else(|| s.items.as_ref().and_then(|i| match i {
                k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaPropsOrArray::Schema(s) => {
                    s.properties.as_ref().and_then(|p| p.get(key))
                }
                _ => None,
            }))
            .unwrap_or_else(|| panic!("no property {key} on the way to {path}"))
    })
}

fn rules(s: &JSONSchemaProps) -> Vec<String> {
    s.x_kubernetes_validations
        .iter()
        .flatten()
        .map(|r| r.rule.clone())
        .collect()
}

fn columns(c: &CustomResourceDefinition) -> Vec<String> {
    version(c)
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|p| p.name.clone())
        .collect()
}

#[test]
fn committed_crds_match_the_rust_types() {
    let fresh = render().expect("CRDs render");
    assert!(
        fresh == committed(),
        "{CRDS_FILE} is out of date with the CRD types in crates/api/src/crd; regenerate it with:\n    {REGENERATE}"
    );
}

#[test]
fn committed_field_reference_matches_the_schemas() {
    let path = crds_path()
        .parent()
        .and_then(|p| p.parent())
        .map(|root| root.join(REFERENCE_FILE))
        .expect("workspace root");
    let committed = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {REFERENCE_FILE}: {e}; run `{REGENERATE_REFERENCE}`"));
    let fresh = reference();
    assert!(
        fresh == committed,
        "{REFERENCE_FILE} is out of date with the CRD schemas; regenerate it with:\n    {REGENERATE_REFERENCE}"
    );
    for field in [
        "spec.reportPolicy.confirmWindows",
        "status.findings[].rootCause",
    ] {
        assert!(fresh.contains(&format!("`{field}`")), "{field} listed");
    }
}

#[test]
fn network_observation_schema() {
    let c = crd("networkobservations.netdx.io");
    assert_eq!(c.spec.group, "netdx.io");
    assert_eq!(c.spec.scope, "Namespaced");
    assert_eq!(
        c.spec.names.short_names.as_deref(),
        Some(&["netobs".to_string()][..])
    );
    let v = version(&c);
    assert_eq!(v.name, "v1alpha1");
    assert!(
        v.subresources
            .as_ref()
            .and_then(|s| s.status.as_ref())
            .is_some(),
        "status subresource"
    );
    assert_eq!(columns(&c), ["Pods", "Nodes", "Ready", "Findings", "Age"]);

    let spec = prop(schema(&c), "spec");
    assert_eq!(
        spec.required.as_deref(),
        Some(&["podSelector".to_string()][..])
    );
    assert!(
        rules(prop(spec, "podSelector"))
            .iter()
            .any(|r| r.contains("size(self.matchLabels) > 0"))
    );
    let window = prop(spec, "window");
    assert!(
        rules(window)
            .iter()
            .any(|r| r.contains("duration('1s')") && r.contains("duration('10m')"))
    );
    assert!(window.pattern.is_some() && window.max_length.is_some());
    let retention = prop(spec, "reportPolicy.retention");
    assert_eq!(
        (retention.minimum, retention.maximum),
        (Some(1.0), Some(1000.0))
    );
    let ratio = prop(spec, "slo.errorRatio");
    assert_eq!((ratio.minimum, ratio.maximum), (Some(0.0), Some(1.0)));
    assert!(prop(spec, "slo.latencyP99Ms").minimum == Some(1.0));

    let conditions = prop(schema(&c), "status.conditions");
    assert_eq!(conditions.x_kubernetes_list_type.as_deref(), Some("map"));
    assert_eq!(
        conditions.x_kubernetes_list_map_keys.as_deref(),
        Some(&["type".to_string()][..])
    );
    for field in [
        "observedGeneration",
        "watchedPods",
        "watchedNodes",
        "lastWindow",
        "activeFindings",
    ] {
        prop(schema(&c), &format!("status.{field}"));
    }
}

#[test]
fn diagnosis_report_schema() {
    let c = crd("diagnosisreports.netdx.io");
    assert_eq!(
        c.spec.names.short_names.as_deref(),
        Some(&["dxr".to_string()][..])
    );
    assert!(
        version(&c)
            .subresources
            .as_ref()
            .and_then(|s| s.status.as_ref())
            .is_some()
    );
    assert_eq!(
        columns(&c),
        [
            "Target",
            "Phase",
            "Root Cause",
            "Instance",
            "Confidence",
            "Suspect",
            "Window",
            "Age"
        ]
    );
    let spec = prop(schema(&c), "spec");
    assert!(
        rules(prop(spec, "target"))
            .iter()
            .any(|r| r.contains("has(self.observation) != has(self.podSelector)"))
    );
    assert!(
        rules(prop(spec, "duration"))
            .iter()
            .any(|r| r.contains("duration('1h')"))
    );
    let status = prop(schema(&c), "status");
    let phases: Vec<String> = prop(status, "phase")
        .enum_
        .iter()
        .flatten()
        .filter_map(|v| v.0.as_str().map(String::from))
        .collect();
    assert_eq!(phases, ["Pending", "Running", "Completed", "Failed"]);
    let confidence = prop(status, "findings.confidence");
    assert_eq!(
        (confidence.minimum, confidence.maximum),
        (Some(0.0), Some(1.0))
    );
    let kinds: Vec<String> = prop(status, "findings.instance.kind")
        .enum_
        .iter()
        .flatten()
        .filter_map(|v| v.0.as_str().map(String::from))
        .collect();
    assert_eq!(kinds, ["Pod", "Node", "NodePair", "Service"]);
    for field in [
        "findings.rootCause",
        "findings.severity",
        "findings.evidence.feature",
        "findings.evidence.baseline",
        "findings.decisionPath",
        "modelVersion",
        "windowStart",
        "windowEnd",
        "lastSeen",
        "windows",
        "suspects.rootCause",
        "suspects.instance.name",
        "suspects.edges",
    ] {
        prop(status, field);
    }
    let share = prop(status, "suspects.share");
    assert_eq!((share.minimum, share.maximum), (Some(0.0), Some(1.0)));
}

/// `kubectl explain` shows descriptions; every field of ours must have one.
#[test]
fn every_field_is_described() {
    fn walk(s: &JSONSchemaProps, path: &str, missing: &mut Vec<String>) {
        for (k, v) in s.properties.iter().flatten() {
            let p = format!("{path}.{k}");
            if v.description.as_deref().is_none_or(str::is_empty)
                && !matches!(k.as_str(), "apiVersion" | "kind" | "metadata")
            {
                missing.push(p.clone());
            }
            walk(v, &p, missing);
        }
        if let Some(k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaPropsOrArray::Schema(items)) = &s.items {
            walk(items, &format!("{path}[]"), missing);
        }
    }
    let mut missing = Vec::new();
    for c in load() {
        walk(schema(&c), &c.spec.names.kind, &mut missing);
    }
    assert!(
        missing.is_empty(),
        "fields without a description: {missing:?}"
    );
}

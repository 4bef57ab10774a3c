//! The netdx.io/v1alpha1 custom resources, one file per kind.
//!
//! Doc comments on fields become the schema descriptions users read with `kubectl explain`,
//! so they are written for cluster users, not for Rust readers.

pub mod diagnosis_report;
pub mod network_observation;

pub use diagnosis_report::{
    DiagnosisPhase, DiagnosisReport, DiagnosisReportSpec, DiagnosisReportStatus, DiagnosisTarget,
    Evidence, Finding, Instance, InstanceKind, Severity, Suspect,
};
pub use network_observation::{
    LastWindow, NetworkObservation, NetworkObservationSpec, NetworkObservationStatus, ReportMode,
    ReportPolicy, Slo, WindowError,
};

/// API group of every netdx custom resource.
pub const GROUP: &str = "netdx.io";
/// The only served version so far.
pub const VERSION: &str = "v1alpha1";

/// Every CRD netdx installs, in a stable order (crdgen and the drift test rely on it).
pub fn all()
-> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>
{
    use kube::CustomResourceExt;
    vec![NetworkObservation::crd(), DiagnosisReport::crd()]
}

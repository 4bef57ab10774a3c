//! DiagnosisReport: what is wrong, where, how sure, and why (written by the operator per
//! incident, or requested by a user for a target and duration).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// A network diagnosis of some pods over a time span.
// Each printcolumn(...) repeats the same keys, which clippy mistakes for duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "netdx.io",
    version = "v1alpha1",
    kind = "DiagnosisReport",
    namespaced,
    shortname = "dxr",
    category = "netdx",
    status = "DiagnosisReportStatus",
    derive = "PartialEq",
    doc = "A network diagnosis: root cause, responsible instance, confidence and the evidence behind it.",
    printcolumn(
        name = "Target",
        type_ = "string",
        json_path = ".spec.target.observation",
        description = "NetworkObservation diagnosed"
    ),
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        priority = 1
    ),
    printcolumn(
        name = "Root Cause",
        type_ = "string",
        json_path = ".status.findings[0].rootCause",
        description = "Most likely root cause"
    ),
    printcolumn(
        name = "Instance",
        type_ = "string",
        json_path = ".status.findings[0].instance.name",
        description = "Pod, node, node pair or service responsible"
    ),
    printcolumn(
        name = "Confidence",
        type_ = "number",
        json_path = ".status.findings[0].confidence",
        description = "Model confidence of the top finding, 0 to 1"
    ),
    printcolumn(
        name = "Suspect",
        type_ = "string",
        json_path = ".status.suspects[0].instance.name",
        description = "Likeliest instance no finding names",
        priority = 1
    ),
    printcolumn(
        name = "Window",
        type_ = "date",
        json_path = ".status.windowStart",
        description = "Start of the diagnosed window"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct DiagnosisReportSpec {
    /// What to diagnose: a NetworkObservation by name, or pods by label.
    pub target: DiagnosisTarget,

    /// For on-demand reports: how long to observe before concluding, as a duration
    /// ("30s", "5m"); between 1s and 1h. Reports written by the operator leave it out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    // maxLength bounds the CEL cost estimate the API server checks when installing the CRD.
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"), length(max = 32))]
    #[x_kube(validation = kube::core::Rule::new(
        "duration(self) >= duration('1s') && duration(self) <= duration('1h')"
    ).message("duration must be between 1s and 1h"))]
    pub duration: Option<String>,
}

/// The subject of a diagnosis; exactly one of the two fields is set.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new(
    "has(self.observation) != has(self.podSelector)"
).message("set exactly one of observation and podSelector"))]
pub struct DiagnosisTarget {
    /// Name of a NetworkObservation in the report's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub observation: Option<String>,

    /// Pods in the report's namespace, by label (for a one-off diagnosis without an observation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<LabelSelector>,
}

/// Lifecycle of a report.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiagnosisPhase {
    /// Accepted, not started.
    Pending,
    /// Collecting windows.
    Running,
    /// Findings are final.
    Completed,
    /// Could not diagnose; the message says why.
    Failed,
}

impl DiagnosisPhase {
    /// The name as it appears in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            DiagnosisPhase::Pending => "Pending",
            DiagnosisPhase::Running => "Running",
            DiagnosisPhase::Completed => "Completed",
            DiagnosisPhase::Failed => "Failed",
        }
    }
}

/// Progress and findings of a diagnosis.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DiagnosisReportStatus {
    /// Pending, Running, Completed or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<DiagnosisPhase>,

    /// Human-readable detail on the phase (why it failed, what it waits for).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,

    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// What is wrong, most likely first.
    #[serde(default)]
    pub findings: Vec<Finding>,

    /// Version of the diagnosis model that produced the findings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_version: Option<String>,

    /// Start of the diagnosed span.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_start: Option<Time>,

    /// End of the diagnosed span (set when the report completes; for an incident, the end
    /// of the latest window that showed it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_end: Option<Time>,

    /// Incidents: end of the latest window that showed the problem.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<Time>,

    /// Incidents: how many windows showed the problem.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub windows: Option<u32>,
    /// Instances worth a look that no finding names, likeliest first: where the model's vote
    /// leaned to a fault without deciding for one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub suspects: Vec<Suspect>,
}

/// An instance the model leaned towards blaming without a finding.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Suspect {
    /// The root cause its edges lean to.
    #[schemars(length(min = 1, max = 128))]
    pub root_cause: String,
    /// The instance.
    pub instance: Instance,
    /// That root cause's share of the model's vote, averaged over the instance's edges, 0 to 1.
    #[schemars(range(min = 0.0, max = 1.0))]
    pub share: f64,
    /// How many of the instance's edges lean that way.
    pub edges: u32,
}

/// One diagnosed problem.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    /// Root cause class, e.g. PacketLoss, ServerOverload, ConnectionRefused, CpuThrottling.
    #[schemars(length(min = 1, max = 128))]
    pub root_cause: String,

    /// The instance responsible.
    pub instance: Instance,

    /// How sure the model is, from 0 to 1.
    #[schemars(range(min = 0.0, max = 1.0))]
    pub confidence: f64,

    /// How much it hurts: Info, Warning or Critical.
    pub severity: Severity,

    /// The measurements that decided it, against their baselines.
    #[serde(default)]
    pub evidence: Vec<Evidence>,

    /// The tests from root to leaf of the voting tree surest of this finding, readable by a person.
    #[serde(default)]
    pub decision_path: Vec<String>,
}

/// Kind of instance a finding blames.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum InstanceKind {
    /// A pod.
    Pod,
    /// A node.
    Node,
    /// The network path between two nodes.
    NodePair,
    /// A Service (all of its backends).
    Service,
}

/// The instance a finding blames.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Instance {
    /// Pod, Node, NodePair or Service.
    pub kind: InstanceKind,

    /// Name: "namespace/pod", node name, "nodeA--nodeB" for a node pair, "namespace/service".
    #[schemars(length(min = 1, max = 512))]
    pub name: String,
}

/// Severity of a finding.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord,
)]
pub enum Severity {
    /// Noticeable, within SLOs.
    Info,
    /// Degrading, close to or over an SLO.
    Warning,
    /// Failing requests or far over an SLO.
    Critical,
}

/// One measurement behind a finding.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Evidence {
    /// Feature name, e.g. serverP99Ms, retransClientToServer, connectRefused.
    #[schemars(length(min = 1, max = 128))]
    pub feature: String,

    /// Value in the diagnosed window.
    pub value: f64,

    /// The same feature's recent baseline for this edge, when one exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<f64>,
}

impl DiagnosisTarget {
    /// A target naming a NetworkObservation.
    pub fn observation(name: impl Into<String>) -> Self {
        DiagnosisTarget {
            observation: Some(name.into()),
            pod_selector: None,
        }
    }
}

//! NetworkObservation: which pods to watch, how, and what the operator found about them.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// Shortest window the probes can aggregate meaningfully (fewer exchanges make noisy quantiles).
pub const MIN_WINDOW: Duration = Duration::from_secs(1);
/// Longest window: longer ones delay findings past the point where they help.
pub const MAX_WINDOW: Duration = Duration::from_secs(600);
/// Window used when the spec leaves it out (design default).
pub const DEFAULT_WINDOW: &str = "10s";
/// Reports kept per observation when the spec does not say.
pub const DEFAULT_RETENTION: u32 = 20;

fn default_window() -> String {
    DEFAULT_WINDOW.to_string()
}

fn default_retention() -> u32 {
    DEFAULT_RETENTION
}

fn default_confirm_windows() -> u32 {
    crate::DEFAULT_CONFIRM_WINDOWS
}

/// Watch the network behaviour of selected pods without touching them.
// Each printcolumn(...) repeats the same keys, which clippy mistakes for duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "netdx.io",
    version = "v1alpha1",
    kind = "NetworkObservation",
    namespaced,
    shortname = "netobs",
    category = "netdx",
    status = "NetworkObservationStatus",
    derive = "PartialEq",
    doc = "Watches the network behaviour of selected pods with eBPF node probes and diagnoses anomalies.",
    printcolumn(
        name = "Pods",
        type_ = "integer",
        json_path = ".status.watchedPods",
        description = "Pods being watched"
    ),
    printcolumn(
        name = "Nodes",
        type_ = "integer",
        json_path = ".status.watchedNodes",
        description = "Nodes running a probe for this observation"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether the observation is active"
    ),
    printcolumn(
        name = "Findings",
        type_ = "integer",
        json_path = ".status.activeFindings",
        description = "Findings in the latest reports"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct NetworkObservationSpec {
    /// Pods to watch, by label. Must not be empty: an empty selector would watch every pod.
    #[x_kube(validation = kube::core::Rule::new(
        "(has(self.matchLabels) && size(self.matchLabels) > 0) || (has(self.matchExpressions) && size(self.matchExpressions) > 0)"
    ).message("podSelector must not be empty (it would select every pod)"))]
    pub pod_selector: LabelSelector,

    /// Namespaces to look for pods in, by label. When absent, only the observation's own
    /// namespace is searched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,

    /// Aggregation window as a duration ("10s", "1m30s"); between 1s and 10m. Default 10s.
    #[serde(default = "default_window")]
    // maxLength bounds the CEL cost estimate the API server checks when installing the CRD.
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"), length(max = 32))]
    #[x_kube(validation = kube::core::Rule::new(
        "duration(self) >= duration('1s') && duration(self) <= duration('10m')"
    ).message("window must be between 1s and 10m"))]
    pub window: String,

    /// Service level objectives; a window that breaks one is reported even without a model finding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slo: Option<Slo>,

    /// When to write DiagnosisReports and how many to keep.
    #[serde(default)]
    pub report_policy: ReportPolicy,

    /// Which message heads the probes copy. Both (default): protocol names and L7 errors at
    /// either end. Egress or Ingress: only what each pod sends or receives, half the payload
    /// program runs; the side that copies requests names the protocol, the side that copies
    /// responses sees their status (HTTP is named from a status line alone). Off: no payload
    /// programs; latency, bytes and TCP signals only, so L7 errors go undiagnosed. A pod
    /// selected by several observations copies every direction any of them asks for.
    #[serde(default)]
    pub payload_capture: crate::targets::PayloadCapture,
}

/// Service level objectives for the watched pods.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Slo {
    /// Highest acceptable 99th percentile request latency, in milliseconds (1 to 3600000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3_600_000))]
    pub latency_p99_ms: Option<u32>,

    /// Highest acceptable share of failed requests, from 0 to 1 (0.01 = 1%).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub error_ratio: Option<f64>,
}

/// When reports are written.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
pub enum ReportMode {
    /// Write a DiagnosisReport only when a window shows an anomaly or breaks an SLO.
    #[default]
    OnAnomaly,
    /// Write a DiagnosisReport for every window (noisy; for debugging and demos).
    Always,
}

/// When to write DiagnosisReports and how many to keep.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReportPolicy {
    /// OnAnomaly (default) or Always.
    #[serde(default)]
    pub mode: ReportMode,

    /// Most reports kept for this observation; older ones are deleted (1 to 1000, default 20).
    #[serde(default = "default_retention")]
    #[schemars(range(min = 1, max = 1000))]
    pub retention: u32,

    /// Consecutive windows a finding (root cause on one instance) must show in before a report
    /// opens (1 to 10, default 2): one-window blips are not reported, a real problem is
    /// reported one window later. Windows after it opens keep it open at once.
    #[serde(default = "default_confirm_windows")]
    #[schemars(range(min = 1, max = 10))]
    pub confirm_windows: u32,
}

impl Default for ReportPolicy {
    fn default() -> Self {
        ReportPolicy {
            mode: ReportMode::default(),
            retention: DEFAULT_RETENTION,
            confirm_windows: crate::DEFAULT_CONFIRM_WINDOWS,
        }
    }
}

/// What the operator last observed and decided about a NetworkObservation.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NetworkObservationStatus {
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Ready, ProbesScheduled and Degraded, in the standard Kubernetes condition shape.
    #[serde(default)]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// Number of pods that match the selectors and are being watched.
    #[serde(default)]
    pub watched_pods: u32,

    /// Number of nodes that run at least one watched pod (and therefore a busy probe).
    #[serde(default)]
    pub watched_nodes: u32,

    /// The most recent window the operator received from the probes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_window: Option<LastWindow>,

    /// Findings in the most recent window's reports.
    #[serde(default)]
    pub active_findings: u32,
}

/// Time span of one aggregation window.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LastWindow {
    /// Window start.
    pub start: Time,
    /// Window end.
    pub end: Time,
}

/// Why a window string is not usable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WindowError {
    /// Not a Go-style duration.
    #[error("window {value:?} is not a duration like \"10s\" or \"1m30s\": {reason}")]
    Unparsable {
        /// The rejected value.
        value: String,
        /// The parser's complaint.
        reason: String,
    },
    /// A duration outside 1s..=10m.
    #[error("window {value:?} must be between 1s and 10m")]
    OutOfRange {
        /// The rejected value.
        value: String,
    },
}

/// Parses a window like the API server's CEL `duration()` does and checks the allowed range.
///
/// The CRD schema already rejects bad windows; this repeats the check because the operator
/// must not trust that the installed CRD is the current one.
pub fn parse_window(value: &str) -> Result<Duration, WindowError> {
    let parsed: kube::core::Duration = value.parse().map_err(
        |e: kube::core::duration::ParseError| WindowError::Unparsable {
            value: value.to_string(),
            reason: e.to_string(),
        },
    )?;
    if parsed.is_negative() {
        return Err(WindowError::OutOfRange {
            value: value.to_string(),
        });
    }
    let d: Duration = parsed.into();
    if !(MIN_WINDOW..=MAX_WINDOW).contains(&d) {
        return Err(WindowError::OutOfRange {
            value: value.to_string(),
        });
    }
    Ok(d)
}

impl NetworkObservationSpec {
    /// The validated window length.
    pub fn window_duration(&self) -> Result<Duration, WindowError> {
        parse_window(&self.window)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_in_range_parse() {
        assert_eq!(parse_window("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_window("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_window("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_window("1m30s"), Ok(Duration::from_secs(90)));
    }

    #[test]
    fn windows_out_of_range_or_garbage_fail() {
        assert!(matches!(
            parse_window("999ms"),
            Err(WindowError::OutOfRange { .. })
        ));
        assert!(matches!(
            parse_window("10m1s"),
            Err(WindowError::OutOfRange { .. })
        ));
        assert!(matches!(
            parse_window("-5s"),
            Err(WindowError::OutOfRange { .. })
        ));
        assert!(matches!(
            parse_window("ten seconds"),
            Err(WindowError::Unparsable { .. })
        ));
        assert!(matches!(
            parse_window("10"),
            Err(WindowError::Unparsable { .. })
        ));
        assert!(parse_window("").is_err());
    }

    #[test]
    fn defaults_fill_a_minimal_spec() {
        let spec: NetworkObservationSpec =
            serde_json::from_str(r#"{"podSelector":{"matchLabels":{"app":"web"}}}"#)
                .expect("minimal spec");
        assert_eq!(spec.window, "10s");
        assert_eq!(spec.report_policy, ReportPolicy::default());
        assert_eq!(spec.report_policy.retention, 20);
        assert!(spec.slo.is_none());
    }
}

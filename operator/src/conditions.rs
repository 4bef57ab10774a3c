//! Condition types, reasons, and the merge that keeps `lastTransitionTime` stable.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// The observation is accepted and its pods are being watched.
pub const READY: &str = "Ready";
/// Every node running a matching pod has been handed its target set.
pub const PROBES_SCHEDULED: &str = "ProbesScheduled";
/// Something limits what the observation can see (unscheduled pods, unhealthy probes).
pub const DEGRADED: &str = "Degraded";

/// Reasons, CamelCase as Kubernetes expects.
pub mod reason {
    /// Spec accepted and pods are watched.
    pub const OBSERVING: &str = "Observing";
    /// The window string is unparsable or out of range.
    pub const INVALID_WINDOW: &str = "InvalidWindow";
    /// A selector is empty or has an unknown operator.
    pub const INVALID_SELECTOR: &str = "InvalidSelector";
    /// The spec is unusable, so nothing is scheduled.
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// No pod matches the selectors (yet).
    pub const NO_MATCHING_PODS: &str = "NoMatchingPods";
    /// Target sets were computed for every node with a watched pod.
    pub const TARGETS_ASSIGNED: &str = "TargetsAssigned";
    /// Some matching pods have no node yet.
    pub const PODS_UNSCHEDULED: &str = "PodsUnscheduled";
    /// A probe on a node with watched pods has not pushed a window for several windows.
    pub const PROBES_NOT_REPORTING: &str = "ProbesNotReporting";
    /// A probe's latest window lost records or socket state (ring buffer full, storage failed).
    pub const PROBE_DATA_LOSS: &str = "ProbeDataLoss";
    /// Nothing limits the observation.
    pub const AS_EXPECTED: &str = "AsExpected";
}

/// "True" / "False" as the API spells them.
pub fn status_str(ok: bool) -> &'static str {
    if ok { "True" } else { "False" }
}

/// Builds a condition stamped with `now` (the merge keeps the old time when the status did not flip).
pub fn new(
    type_: &str,
    ok: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    Condition {
        type_: type_.to_string(),
        status: status_str(ok).to_string(),
        reason: reason.to_string(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time: Time(now),
    }
}

/// Carries `lastTransitionTime` over from `old` for every condition whose status did not
/// change, so the time says when the state flipped, not when the operator last looked.
pub fn merge(old: &[Condition], new: Vec<Condition>) -> Vec<Condition> {
    new.into_iter()
        .map(|mut c| {
            if let Some(prev) = old.iter().find(|o| o.type_ == c.type_)
                && prev.status == c.status
            {
                c.last_transition_time = prev.last_transition_time.clone();
            }
            c
        })
        .collect()
}

/// Finds a condition by type.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).expect("valid timestamp")
    }

    #[test]
    fn transition_time_moves_only_on_flip() {
        let old = vec![
            new(READY, true, reason::OBSERVING, "a", Some(1), t(100)),
            new(DEGRADED, false, reason::AS_EXPECTED, "", Some(1), t(100)),
        ];
        let merged = merge(
            &old,
            vec![
                new(READY, true, reason::OBSERVING, "b", Some(2), t(200)),
                new(
                    DEGRADED,
                    true,
                    reason::PODS_UNSCHEDULED,
                    "x",
                    Some(2),
                    t(200),
                ),
            ],
        );
        assert_eq!(
            merged[0].last_transition_time,
            Time(t(100)),
            "Ready stayed True: time kept"
        );
        assert_eq!(merged[0].message, "b", "message still updates");
        assert_eq!(
            merged[1].last_transition_time,
            Time(t(200)),
            "Degraded flipped: time moves"
        );
    }
}

//! Prometheus metrics of the controllers (served on /metrics).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::time::Instant;

use crate::Error;

/// Which controller a sample belongs to.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    /// "networkobservation" or "diagnosisreport".
    pub controller: &'static str,
}

/// A failed reconcile, by controller and error kind.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// "networkobservation" or "diagnosisreport".
    pub controller: &'static str,
    /// [`Error::metric_label`].
    pub error: &'static str,
}

/// Why a posted window was refused.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectLabels {
    /// unauthenticated, forbidden, auth_unavailable, malformed, oversized, invalid or late.
    pub reason: &'static str,
}

type HistogramFamily = Family<ControllerLabels, Histogram, fn() -> Histogram>;

fn reconcile_histogram() -> Histogram {
    // 1 ms .. ~4 s: reconciles are a few API calls.
    Histogram::new(exponential_buckets(0.001, 2.0, 13))
}

/// The operator's metrics and the registry that serves them.
pub struct Metrics {
    /// Reconciles started.
    pub reconciliations: Family<ControllerLabels, Counter>,
    /// Reconciles that returned an error.
    pub failures: Family<ErrorLabels, Counter>,
    /// Reconcile duration in seconds.
    pub duration: HistogramFamily,
    /// Window reports accepted from node-probes.
    pub windows_received: Counter,
    /// Windows (all nodes joined) diagnosed.
    pub windows_diagnosed: Counter,
    /// Window uploads or reports refused, by reason.
    pub ingest_rejects: Family<RejectLabels, Counter>,
    /// Everything above, for encoding.
    pub registry: Registry,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("netdx_operator");
        let reconciliations = Family::<ControllerLabels, Counter>::default();
        let failures = Family::<ErrorLabels, Counter>::default();
        let duration: HistogramFamily = Family::new_with_constructor(reconcile_histogram);
        registry.register(
            "reconciliations",
            "Reconciles started",
            reconciliations.clone(),
        );
        registry.register(
            "reconcile_failures",
            "Reconciles that failed, by error kind",
            failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Reconcile duration",
            duration.clone(),
        );
        let windows_received = Counter::default();
        let windows_diagnosed = Counter::default();
        let ingest_rejects = Family::<RejectLabels, Counter>::default();
        registry.register(
            "windows_received",
            "Window reports accepted from node-probes",
            windows_received.clone(),
        );
        registry.register(
            "windows_diagnosed",
            "Windows joined over nodes and diagnosed",
            windows_diagnosed.clone(),
        );
        registry.register(
            "ingest_rejects",
            "Window uploads or reports refused, by reason",
            ingest_rejects.clone(),
        );
        Metrics {
            windows_received,
            windows_diagnosed,
            ingest_rejects,
            reconciliations,
            failures,
            duration,
            registry,
        }
    }
}

impl Metrics {
    /// Counts a reconcile and returns a guard that records its duration when dropped.
    pub fn start(&self, controller: &'static str) -> ReconcileTimer {
        self.reconciliations
            .get_or_create(&ControllerLabels { controller })
            .inc();
        ReconcileTimer {
            start: Instant::now(),
            metric: self
                .duration
                .get_or_create(&ControllerLabels { controller })
                .clone(),
        }
    }

    /// Counts a failed reconcile.
    pub fn failed(&self, controller: &'static str, error: &Error) {
        self.failures
            .get_or_create(&ErrorLabels {
                controller,
                error: error.metric_label(),
            })
            .inc();
    }

    /// Counts a refused window upload or report.
    pub fn ingest_rejected(&self, reason: &'static str) {
        self.ingest_rejects
            .get_or_create(&RejectLabels { reason })
            .inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// Records the reconcile duration on drop (so early returns are measured too).
pub struct ReconcileTimer {
    start: Instant,
    metric: Histogram,
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        self.metric.observe(self.start.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_counters_and_histograms() {
        let m = Metrics::default();
        drop(m.start("networkobservation"));
        m.failed(
            "networkobservation",
            &Error::MissingNamespace {
                kind: "NetworkObservation",
                name: "x".into(),
            },
        );
        let text = m.encode().expect("encodes");
        assert!(
            text.contains(
                "netdx_operator_reconciliations_total{controller=\"networkobservation\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains("error=\"missing_namespace\""), "{text}");
        assert!(
            text.contains("netdx_operator_reconcile_duration_seconds_count"),
            "{text}"
        );
    }
}

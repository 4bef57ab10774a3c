//! What every reconcile gets: API client, event recorder, metrics, shared state and a clock.

use std::sync::Arc;

use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::runtime::events::{Recorder, Reporter};
use tokio::sync::RwLock;

use crate::auth::ProbeAuth;
use crate::controller::Failures;
use crate::engine::WindowEngine;
use crate::incidents::Pending;
use crate::ingest::Ingest;
use crate::metrics::Metrics;
use crate::report::DiagnosisEngine;
use crate::targets::{CgroupLayout, SharedRegistry};

/// Name events are reported under.
pub const REPORTER: &str = "netdx-operator";

/// The last thing the controllers did (served on /healthz).
#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Diagnostics {
    /// When a reconcile last ran.
    pub last_event: Timestamp,
    /// Who we report events as.
    pub reporter: String,
}

impl Default for Diagnostics {
    fn default() -> Self {
        Diagnostics {
            last_event: Timestamp::now(),
            reporter: REPORTER.to_string(),
        }
    }
}

/// Long-lived state shared by the controllers and the HTTP server.
#[derive(Clone)]
pub struct State {
    /// Last activity, for health.
    pub diagnostics: Arc<RwLock<Diagnostics>>,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Per-node target sets that node-probes fetch.
    pub targets: SharedRegistry,
    /// How pod cgroups are named on nodes.
    pub cgroups: CgroupLayout,
    /// Whether this replica leads (runs the controllers); /readyz follows it so the Service
    /// only sends node-probes to the replica whose target sets are filled.
    pub leading: Arc<std::sync::atomic::AtomicBool>,
    /// Who may fetch target sets and post windows.
    pub probe_auth: Arc<ProbeAuth>,
    /// Posted windows, their diagnosis and the classifier.
    pub ingest: Arc<Ingest>,
}

impl Default for State {
    fn default() -> Self {
        State {
            diagnostics: Arc::default(),
            metrics: Arc::default(),
            targets: Arc::default(),
            cgroups: CgroupLayout::default(),
            leading: Arc::default(),
            probe_auth: Arc::new(ProbeAuth::disabled()),
            ingest: Arc::default(),
        }
    }
}

impl State {
    /// A context for the controllers built on this state.
    pub fn to_context(&self, client: Client) -> Arc<Context> {
        let reporter = Reporter {
            controller: REPORTER.to_string(),
            // The pod name distinguishes replicas in events; absent outside a cluster.
            instance: std::env::var("POD_NAME").ok(),
        };
        Arc::new(Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics: self.metrics.clone(),
            diagnostics: self.diagnostics.clone(),
            targets: self.targets.clone(),
            cgroups: self.cgroups.clone(),
            now: Timestamp::now,
            engine: Arc::new(WindowEngine {
                ingest: self.ingest.clone(),
                targets: self.targets.clone(),
            }),
            ingest: self.ingest.clone(),
            failures: Arc::default(),
            pending: Arc::default(),
        })
    }
}

/// Everything a reconcile needs.
pub struct Context {
    /// Kubernetes API client.
    pub client: Client,
    /// Publishes Events about the objects reconciled.
    pub recorder: Recorder,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Last activity, for health.
    pub diagnostics: Arc<RwLock<Diagnostics>>,
    /// Per-node target sets that node-probes fetch.
    pub targets: SharedRegistry,
    /// How pod cgroups are named on nodes.
    pub cgroups: CgroupLayout,
    /// The clock; a plain fn so tests can freeze time.
    pub now: fn() -> Timestamp,
    /// Turns collected windows into findings for on-demand reports.
    pub engine: Arc<dyn DiagnosisEngine>,
    /// Posted windows and their diagnosis.
    pub ingest: Arc<Ingest>,
    /// Consecutive failures per object, for the retry backoff.
    pub failures: Failures,
    /// Per observation, how many windows in a row each not yet reported problem has shown.
    pub pending: Pending,
}

impl Context {
    /// Counts a failure of the object `key` and returns how many came before it.
    pub fn note_failure(&self, key: String) -> u32 {
        // A poisoned lock only means another reconcile panicked; the counts are still usable.
        let mut f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let n = f.entry(key).or_insert(0);
        *n += 1;
        *n - 1
    }

    /// Forgets the failures of `key` after a successful reconcile.
    pub fn note_success(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }
}

/// The key failures are counted under.
pub fn failure_key<K: kube::Resource<DynamicType = ()>>(obj: &K) -> String {
    use kube::ResourceExt;
    format!(
        "{}/{}/{}",
        K::kind(&()),
        obj.namespace().unwrap_or_default(),
        obj.name_any()
    )
}

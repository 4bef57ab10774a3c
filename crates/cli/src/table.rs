//! One row per edge for a window, joining the client view and the server view that
//! different node-probes reported.

use std::collections::BTreeMap;

use netdx_api::windows::{EdgeKey, WindowReport};

/// What the live view shows for an edge.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EdgeRow {
    /// "client -> server:port".
    pub edge: String,
    /// Exchanges per second (client view, else server view).
    pub rate: f64,
    /// Client-side p99, ms (None when the client is not watched).
    pub client_p99_ms: Option<f64>,
    /// Server-side p99, ms.
    pub server_p99_ms: Option<f64>,
    /// Requests without answer, exchanges with resets, refused and timed-out connects.
    pub errors: u64,
    /// Retransmitted segments, both directions and SYNs.
    pub retransmits: u64,
}

/// Rows of one window across all nodes' reports of that window.
pub fn rows(reports: &[&WindowReport]) -> Vec<EdgeRow> {
    let mut by_edge: BTreeMap<EdgeKey, EdgeRow> = BTreeMap::new();
    for w in reports {
        let secs = (w.end_unix_ms.saturating_sub(w.start_unix_ms)).max(1) as f64 / 1000.0;
        for e in &w.edges {
            let row = by_edge.entry(e.key.clone()).or_insert_with(|| EdgeRow {
                edge: e.key.to_string(),
                ..Default::default()
            });
            if let Some(c) = &e.client {
                row.rate = c.exchanges as f64 / secs;
                row.client_p99_ms = Some(c.latency.p99_ms);
                row.errors += c.no_response + c.with_reset;
            }
            if let Some(s) = &e.server {
                if e.client.is_none() && row.client_p99_ms.is_none() {
                    row.rate = s.exchanges as f64 / secs;
                }
                row.server_p99_ms = Some(s.latency.p99_ms);
            }
            let l = &e.l4;
            row.errors += l.connect_refused + l.connect_timeout + l.connect_failed_other;
            row.retransmits +=
                l.retrans_client_to_server + l.retrans_server_to_client + l.syn_retrans;
        }
    }
    by_edge.into_values().collect()
}

/// Formats an optional latency.
pub fn ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.2}"))
}

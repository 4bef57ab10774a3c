//! Probe health as the operator sees it: when each node's probe last pushed a window, and
//! whether its latest window lost records or socket state. A NetworkObservation is Degraded
//! while a probe on one of its nodes is silent or losing data, because its windows (and so its
//! findings) are then missing or incomplete.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::jiff::Timestamp;
use netdx_api::windows::{ProbeHealth, WindowReport};

/// A probe is silent once this many of its window lengths passed without a push.
pub const STALE_WINDOWS: u64 = 3;

/// What the operator knows of one node's probe.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProbeRecord {
    /// When the operator first needed this node's windows, Unix ms: the reference for
    /// silence until the first push.
    pub expected_since_ms: u64,
    /// When its latest window arrived, Unix ms.
    pub last_push_ms: Option<u64>,
    /// Length of its latest window, ms.
    pub window_ms: Option<u64>,
    /// Records or socket state lost in its latest window, by kernel counter.
    pub losses: BTreeMap<String, u64>,
    /// Sequence number of its latest window.
    last_seq: Option<u64>,
    /// Its cumulative counters at that window.
    last_health: Option<ProbeHealth>,
}

/// Something that makes a scheduled node's windows missing or incomplete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeProblem {
    /// No window for more than [`STALE_WINDOWS`] window lengths.
    Silent {
        /// The node.
        node: String,
        /// The window length judged by, ms.
        window_ms: u64,
        /// When its last window arrived, Unix ms (none since the operator started).
        last_push_ms: Option<u64>,
    },
    /// Its latest window lost records or socket state.
    Lossy {
        /// The node.
        node: String,
        /// Lost, by kernel counter.
        losses: BTreeMap<String, u64>,
    },
}

impl ProbeProblem {
    /// One line for a condition message.
    pub fn describe(&self) -> String {
        match self {
            ProbeProblem::Silent {
                node,
                window_ms,
                last_push_ms,
            } => {
                let limit = STALE_WINDOWS * window_ms / 1000;
                let last = match last_push_ms
                    .and_then(|ms| Timestamp::from_second((ms / 1000) as i64).ok())
                {
                    Some(t) => format!("last at {t}"),
                    None => "none since the operator started".to_string(),
                };
                format!(
                    "probe on {node} sent no window for more than {STALE_WINDOWS} windows ({limit}s; {last})"
                )
            }
            ProbeProblem::Lossy { node, losses } => {
                let counts: Vec<String> = losses.iter().map(|(k, v)| format!("{k}={v}")).collect();
                format!(
                    "probe on {node} lost data in its latest window ({})",
                    counts.join(", ")
                )
            }
        }
    }
}

/// The problems of the probes on `nodes` at `now_ms`. A node without a record has none yet;
/// a probe's own window length is used once it reported one, else `default_window_ms`.
pub fn evaluate(
    nodes: &BTreeSet<String>,
    probes: &BTreeMap<String, ProbeRecord>,
    now_ms: u64,
    default_window_ms: u64,
) -> Vec<ProbeProblem> {
    let mut out = Vec::new();
    for node in nodes {
        let Some(r) = probes.get(node) else { continue };
        let window_ms = r.window_ms.unwrap_or(default_window_ms).max(1);
        let since = r.last_push_ms.unwrap_or(r.expected_since_ms);
        if now_ms.saturating_sub(since) > STALE_WINDOWS * window_ms {
            // Its loss counters are as old as its last window: silence is the news.
            out.push(ProbeProblem::Silent {
                node: node.clone(),
                window_ms,
                last_push_ms: r.last_push_ms,
            });
        } else if !r.losses.is_empty() {
            out.push(ProbeProblem::Lossy {
                node: node.clone(),
                losses: r.losses.clone(),
            });
        }
    }
    out
}

/// Every probe's record (one per node; nodes are few, so never pruned).
#[derive(Debug, Default)]
pub struct ProbeBook {
    probes: BTreeMap<String, ProbeRecord>,
}

impl ProbeBook {
    /// Notes that `report` arrived at `now_ms`.
    pub fn record(&mut self, report: &WindowReport, now_ms: u64) {
        let r = self
            .probes
            .entry(report.node.clone())
            .or_insert_with(|| ProbeRecord {
                expected_since_ms: now_ms,
                ..ProbeRecord::default()
            });
        r.last_push_ms = Some(r.last_push_ms.unwrap_or(0).max(now_ms));
        r.window_ms = Some(report.end_unix_ms.saturating_sub(report.start_unix_ms));
        let h = &report.health;
        match r.last_seq {
            // The same window again (a retried push): nothing new about losses.
            Some(last) if report.seq == last => return,
            Some(last) if report.seq > last => r.losses = h.losses_since(r.last_health.as_ref()),
            // A lower sequence number: the probe restarted and counts from zero again.
            Some(_) => r.losses = h.losses_since(None),
            // The probe's first window counts from its start; a later one, first seen after an
            // operator restart, covers an unknown stretch: wait for the next one.
            None if report.seq == 0 => r.losses = h.losses_since(None),
            None => r.losses.clear(),
        }
        r.last_seq = Some(report.seq);
        r.last_health = Some(h.clone());
    }

    /// The problems of the probes on `nodes` at `now_ms`; a node seen for the first time is
    /// expected from now on.
    pub fn check(
        &mut self,
        nodes: &BTreeSet<String>,
        now_ms: u64,
        default_window_ms: u64,
    ) -> Vec<ProbeProblem> {
        for n in nodes {
            self.probes.entry(n.clone()).or_insert_with(|| ProbeRecord {
                expected_since_ms: now_ms,
                ..ProbeRecord::default()
            });
        }
        evaluate(nodes, &self.probes, now_ms, default_window_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    /// An idle 10 s window number `seq` whose probe's ring buffer overflowed `ringbuf_full`
    /// times since it started.
    fn report(node: &str, seq: u64, ringbuf_full: u64) -> WindowReport {
        let mut r = crate::ingest::tests::report(node, seq * 10_000, 0);
        r.edges.clear();
        r.health.kernel = [
            ("ringbuf_full".to_string(), ringbuf_full),
            ("exchanges".to_string(), seq * 100),
        ]
        .into();
        r
    }

    #[test]
    fn silence_is_judged_against_three_of_the_probes_windows() {
        let mut probes = BTreeMap::new();
        probes.insert(
            "n1".to_string(),
            ProbeRecord {
                expected_since_ms: 0,
                last_push_ms: Some(100_000),
                window_ms: Some(10_000),
                ..Default::default()
            },
        );
        probes.insert(
            "n2".to_string(),
            ProbeRecord {
                expected_since_ms: 100_000,
                ..Default::default()
            },
        );
        let all = nodes(&["n1", "n2", "n3"]);
        assert_eq!(
            evaluate(&all, &probes, 130_000, 20_000),
            vec![],
            "exactly 3 windows is not more than 3; n2 waits for 3 default windows"
        );
        assert_eq!(
            evaluate(&all, &probes, 130_001, 20_000),
            vec![ProbeProblem::Silent {
                node: "n1".into(),
                window_ms: 10_000,
                last_push_ms: Some(100_000)
            }],
            "n1's own 10 s windows count, not the default"
        );
        let late = evaluate(&all, &probes, 160_001, 20_000);
        assert_eq!(late.len(), 2, "{late:?}");
        assert_eq!(
            late[1],
            ProbeProblem::Silent {
                node: "n2".into(),
                window_ms: 20_000,
                last_push_ms: None
            },
            "never pushed since it was expected"
        );
        assert_eq!(
            evaluate(&nodes(&["n3"]), &probes, 1_000_000, 10_000),
            vec![],
            "unknown nodes are not judged"
        );
        assert_eq!(
            late[1].describe(),
            "probe on n2 sent no window for more than 3 windows (60s; none since the operator started)"
        );
    }

    #[test]
    fn losses_come_from_the_latest_window_only() {
        let mut book = ProbeBook::default();
        let n1 = nodes(&["n1"]);
        book.record(&report("n1", 0, 0), 10_000);
        assert_eq!(book.check(&n1, 11_000, 10_000), vec![]);
        book.record(&report("n1", 1, 7), 20_000);
        let problems = book.check(&n1, 21_000, 10_000);
        assert_eq!(
            problems,
            vec![ProbeProblem::Lossy {
                node: "n1".into(),
                losses: [("ringbuf_full".to_string(), 7)].into()
            }]
        );
        assert_eq!(
            problems[0].describe(),
            "probe on n1 lost data in its latest window (ringbuf_full=7)"
        );
        // The same window pushed again changes nothing; the next clean one clears it.
        book.record(&report("n1", 1, 7), 21_000);
        assert_eq!(book.check(&n1, 22_000, 10_000).len(), 1);
        book.record(&report("n1", 2, 7), 30_000);
        assert_eq!(book.check(&n1, 31_000, 10_000), vec![]);
        // Restarted probe: counters from zero again.
        book.record(&report("n1", 0, 2), 40_000);
        assert_eq!(book.check(&n1, 41_000, 10_000).len(), 1);
        // First seen mid-life (operator restarted): its cumulative counters prove nothing yet.
        book.record(&report("n2", 50, 900), 40_000);
        assert_eq!(book.check(&nodes(&["n2"]), 41_000, 10_000), vec![]);
        // Silent wins over lossy: old losses are not news.
        book.record(&report("n1", 1, 9), 50_000);
        let silent = book.check(&n1, 90_000, 10_000);
        assert!(
            matches!(silent.as_slice(), [ProbeProblem::Silent { .. }]),
            "{silent:?}"
        );
    }

    #[test]
    fn nodes_are_expected_from_their_first_check() {
        let mut book = ProbeBook::default();
        let n = nodes(&["n1"]);
        assert_eq!(book.check(&n, 1_000_000, 10_000), vec![], "just scheduled");
        assert_eq!(book.check(&n, 1_030_000, 10_000), vec![]);
        assert_eq!(book.check(&n, 1_030_001, 10_000).len(), 1, "never pushed");
    }
}

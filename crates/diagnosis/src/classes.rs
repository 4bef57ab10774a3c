//! Root-cause classes (shared/fault-catalog.md) and the kind of instance each one blames.

use serde::{Deserialize, Serialize};

use crate::features::{Feature, FeatureVector};

/// What kind of instance a finding names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum InstanceKind {
    /// A pod (namespace/name, or an address when the pod is unknown).
    Pod,
    /// A node.
    Node,
    /// The path between two nodes (a link).
    NodePair,
    /// A service reached at server:port (DNS, a load-balanced backend set).
    Service,
    /// Nothing to blame (healthy).
    None,
}

/// A root cause the diagnosis can name; one per fault-catalog class.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RootCause {
    /// Nothing wrong; must not raise findings.
    Healthy,
    /// Random packet loss on the path.
    PathLoss,
    /// Added one-way delay on the path.
    PathDelay,
    /// Variable delay or reordering on the path.
    JitterReorder,
    /// A rate limit below demand on the path or a pod's egress.
    BandwidthLimit,
    /// Large packets silently dropped (PMTU discovery broken).
    MtuBlackhole,
    /// SYNs dropped by a firewall in front of the server.
    SynDroppedFirewall,
    /// No listener, or a reject rule: SYNs answered with RST.
    ConnectionRefused,
    /// The server application itself is slow.
    ServerAppSlow,
    /// The server's cgroup is CPU-throttled.
    ServerCpuThrottled,
    /// The server's accept queue overflows.
    ListenBacklogOverflow,
    /// A pod stops reading; its receive window closes.
    ReceiverZeroWindow,
    /// The server aborts connections with RST.
    ServerReset,
    /// The server answers with application-level errors.
    L7Errors,
    /// New connections refused or reset by a connection limit while existing ones work.
    ConnLimitExhausted,
    /// The node's conntrack table is full.
    ConntrackFull,
    /// Name resolution fails.
    DnsFailure,
}

impl RootCause {
    /// Every class, in the fixed order used for model class indices and confusion matrices.
    pub const ALL: [RootCause; 17] = [
        RootCause::Healthy,
        RootCause::PathLoss,
        RootCause::PathDelay,
        RootCause::JitterReorder,
        RootCause::BandwidthLimit,
        RootCause::MtuBlackhole,
        RootCause::SynDroppedFirewall,
        RootCause::ConnectionRefused,
        RootCause::ServerAppSlow,
        RootCause::ServerCpuThrottled,
        RootCause::ListenBacklogOverflow,
        RootCause::ReceiverZeroWindow,
        RootCause::ServerReset,
        RootCause::L7Errors,
        RootCause::ConnLimitExhausted,
        RootCause::ConntrackFull,
        RootCause::DnsFailure,
    ];

    /// The snake_case name, as in the fault catalog and serialised files.
    pub fn as_str(self) -> &'static str {
        match self {
            RootCause::Healthy => "healthy",
            RootCause::PathLoss => "path_loss",
            RootCause::PathDelay => "path_delay",
            RootCause::JitterReorder => "jitter_reorder",
            RootCause::BandwidthLimit => "bandwidth_limit",
            RootCause::MtuBlackhole => "mtu_blackhole",
            RootCause::SynDroppedFirewall => "syn_dropped_firewall",
            RootCause::ConnectionRefused => "connection_refused",
            RootCause::ServerAppSlow => "server_app_slow",
            RootCause::ServerCpuThrottled => "server_cpu_throttled",
            RootCause::ListenBacklogOverflow => "listen_backlog_overflow",
            RootCause::ReceiverZeroWindow => "receiver_zero_window",
            RootCause::ServerReset => "server_reset",
            RootCause::L7Errors => "l7_errors",
            RootCause::ConnLimitExhausted => "conn_limit_exhausted",
            RootCause::ConntrackFull => "conntrack_full",
            RootCause::DnsFailure => "dns_failure",
        }
    }

    /// Parses a snake_case name.
    pub fn from_name(name: &str) -> Option<RootCause> {
        RootCause::ALL.into_iter().find(|c| c.as_str() == name)
    }

    /// Position in [`RootCause::ALL`].
    pub fn index(self) -> usize {
        // ALL lists the variants in declaration order, so the discriminant is the index.
        self as usize
    }

    /// The kind of instance this class blames by default (the fault catalog's "instance" column).
    pub fn blames(self) -> InstanceKind {
        match self {
            RootCause::Healthy => InstanceKind::None,
            RootCause::PathLoss
            | RootCause::PathDelay
            | RootCause::JitterReorder
            | RootCause::BandwidthLimit
            | RootCause::MtuBlackhole => InstanceKind::NodePair,
            RootCause::SynDroppedFirewall
            | RootCause::ConnectionRefused
            | RootCause::ServerAppSlow
            | RootCause::ServerCpuThrottled
            | RootCause::ListenBacklogOverflow
            | RootCause::ReceiverZeroWindow
            | RootCause::ServerReset
            | RootCause::L7Errors
            | RootCause::ConnLimitExhausted => InstanceKind::Pod,
            RootCause::ConntrackFull => InstanceKind::Node,
            RootCause::DnsFailure => InstanceKind::Service,
        }
    }
}

impl std::fmt::Display for RootCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which side of a threshold a condition holds on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// value < threshold (the left branch of a linfa split).
    Below,
    /// value >= threshold (the right branch of a linfa split).
    AtLeast,
}

/// One test on a decision path, e.g. `server_p99_ratio >= 3.2`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Condition {
    /// The feature tested.
    pub feature: Feature,
    /// The comparison.
    pub op: Op,
    /// The threshold.
    pub threshold: f64,
}

impl Condition {
    /// Whether a vector satisfies the condition.
    pub fn holds(&self, v: &FeatureVector) -> bool {
        match self.op {
            Op::Below => v[self.feature] < self.threshold,
            Op::AtLeast => v[self.feature] >= self.threshold,
        }
    }

    /// The opposite test (the other branch of the same split).
    pub fn negate(self) -> Condition {
        let op = match self.op {
            Op::Below => Op::AtLeast,
            Op::AtLeast => Op::Below,
        };
        Condition { op, ..self }
    }
}

impl std::fmt::Display for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let op = match self.op {
            Op::Below => "<",
            Op::AtLeast => ">=",
        };
        // Four significant digits read well and still identify the split.
        let t = format!("{:.4}", self.threshold);
        let t = t.trim_end_matches('0').trim_end_matches('.');
        write!(f, "{} {op} {t}", self.feature)
    }
}

/// What a classifier says about one edge in one window.
#[derive(Clone, Debug, PartialEq)]
pub struct Classification {
    /// The class.
    pub root_cause: RootCause,
    /// 0..1; for the tree, the share of training rows in the leaf that had this class.
    pub confidence: f64,
    /// The conditions that led to the class, root first.
    pub path: Vec<Condition>,
    /// The likeliest fault class and its share of the vote, even when healthy wins (the
    /// suspects a window with no finding still ranks); None when no fault has any share.
    pub likeliest_fault: Option<(RootCause, f64)>,
}

impl Classification {
    /// A verdict of `root_cause` with nothing else known about the runner-up classes.
    pub fn plain(root_cause: RootCause, confidence: f64, path: Vec<Condition>) -> Classification {
        Classification {
            root_cause,
            confidence,
            path,
            likeliest_fault: (root_cause != RootCause::Healthy && confidence > 0.0)
                .then_some((root_cause, confidence)),
        }
    }
}

/// Anything that names a class for a feature vector (the rule tree, a trained model).
pub trait Classifier {
    /// Classifies one edge-window.
    fn classify(&self, v: &FeatureVector) -> Classification;
    /// Version string recorded in findings and reports.
    fn version(&self) -> String;
    /// Classifies an edge-window none of whose watched ends copies its responses' heads
    /// (payload capture off there): its L7 features read 0 however the exchanges were
    /// answered, so a classifier that has a model trained without them uses it.
    fn classify_without_payload(&self, v: &FeatureVector) -> Classification {
        self.classify(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_is_in_declaration_order_and_names_round_trip() {
        for (i, c) in RootCause::ALL.into_iter().enumerate() {
            assert_eq!(c.index(), i, "{c} out of order in ALL");
            assert_eq!(RootCause::from_name(c.as_str()), Some(c));
            let json = serde_json::to_string(&c).unwrap();
            assert_eq!(
                json,
                format!("\"{}\"", c.as_str()),
                "serde name differs from as_str"
            );
        }
        assert_eq!(RootCause::from_name("no_such_class"), None);
    }

    #[test]
    fn blame_kinds_follow_the_catalog() {
        assert_eq!(RootCause::Healthy.blames(), InstanceKind::None);
        assert_eq!(RootCause::PathDelay.blames(), InstanceKind::NodePair);
        assert_eq!(RootCause::ServerCpuThrottled.blames(), InstanceKind::Pod);
        assert_eq!(RootCause::ConntrackFull.blames(), InstanceKind::Node);
        assert_eq!(RootCause::DnsFailure.blames(), InstanceKind::Service);
    }

    #[test]
    fn conditions_read_and_split_like_linfa() {
        let c = Condition {
            feature: Feature::ServerP99Ratio,
            op: Op::AtLeast,
            threshold: 3.2,
        };
        assert_eq!(c.to_string(), "server_p99_ratio >= 3.2");
        assert_eq!(c.negate().to_string(), "server_p99_ratio < 3.2");
        let c2 = Condition {
            feature: Feature::GapShare,
            op: Op::Below,
            threshold: 0.123456,
        };
        assert_eq!(c2.to_string(), "gap_share < 0.1235");
        let mut v = FeatureVector::default();
        v.set(Feature::ServerP99Ratio, 3.2);
        assert!(
            c.holds(&v),
            "the threshold itself goes right (>=), as in linfa"
        );
        assert!(!c.negate().holds(&v));
    }
}

//! The hand-written rule tree: readable thresholds on the features, the baseline a trained
//! model must beat.
//!
//! Thresholds come from the fault catalog's distinguishing signals, not from data; failure
//! signals (refused, timeouts, resets) are checked before latency signals because a failing
//! connection also distorts latency, and the most specific evidence (listen overflows,
//! zero-window drops) before the generic one (retransmits, tail latency).

use crate::classes::{Classification, Classifier, Condition, Op, RootCause};
use crate::features::{Feature, FeatureVector};

/// Confidence the rule tree reports: its thresholds are not calibrated on data, so it claims
/// neither certainty nor doubt.
pub const RULE_CONFIDENCE: f64 = 0.6;

/// Version of the rule set, recorded in findings.
pub const RULES_VERSION: &str = "rules-1";

/// A node of the rule tree.
#[derive(Clone, Debug, PartialEq)]
enum Node {
    /// Go to `then` when the condition holds, else to `otherwise`.
    Test {
        cond: Condition,
        then: Box<Node>,
        otherwise: Box<Node>,
    },
    /// A class.
    Leaf(RootCause),
}

fn test(feature: Feature, op: Op, threshold: f64, then: Node, otherwise: Node) -> Node {
    Node::Test {
        cond: Condition {
            feature,
            op,
            threshold,
        },
        then: Box::new(then),
        otherwise: Box::new(otherwise),
    }
}

fn at_least(feature: Feature, threshold: f64, then: Node, otherwise: Node) -> Node {
    test(feature, Op::AtLeast, threshold, then, otherwise)
}

fn leaf(c: RootCause) -> Node {
    Node::Leaf(c)
}

/// The hand-written baseline classifier.
#[derive(Clone, Debug, PartialEq)]
pub struct RuleTree {
    root: Node,
}

impl Default for RuleTree {
    fn default() -> Self {
        RuleTree::new()
    }
}

impl RuleTree {
    /// The rule tree.
    pub fn new() -> Self {
        use Feature as F;
        use RootCause as C;
        // DNS edges fail as no answer (UDP timeout) or an error rcode; anything else on port 53
        // falls through to the general rules.
        let root = at_least(
            F::IsDns,
            0.5,
            at_least(
                F::NoResponseRatio,
                0.2,
                leaf(C::DnsFailure),
                at_least(F::L7ErrorRatio, 0.2, leaf(C::DnsFailure), general()),
            ),
            general(),
        );
        RuleTree { root }
    }
}

/// Rules for every non-DNS-specific class.
fn general() -> Node {
    use Feature as F;
    use RootCause as C;
    // Nearly every connect refused: nobody listens (or a reject rule). Only some: a limit.
    at_least(
        F::ConnectRefusedRatio,
        0.9,
        leaf(C::ConnectionRefused),
        at_least(
            F::ConnectRefusedRatio,
            0.05,
            leaf(C::ConnLimitExhausted),
            after_refused(),
        ),
    )
}

fn after_refused() -> Node {
    use Feature as F;
    use RootCause as C;
    // Overflowing accept queues also cause SYN retransmits, so they go before the SYN-drop rules.
    at_least(
        F::ServerListenOverflows,
        0.1,
        leaf(C::ListenBacklogOverflow),
        at_least(
            F::ServerListenDrops,
            0.1,
            leaf(C::ListenBacklogOverflow),
            unanswered_syns(),
        ),
    )
}

fn unanswered_syns() -> Node {
    use Feature as F;
    use RootCause as C;
    // SYNs that go unanswered: dropped by conntrack on a full node table, or by a firewall.
    let why = at_least(
        F::NodeDropsNetfilter,
        0.1,
        leaf(C::ConntrackFull),
        leaf(C::SynDroppedFirewall),
    );
    at_least(
        F::ConnectTimeoutRatio,
        0.05,
        why.clone(),
        at_least(F::SynRetransPerConnect, 0.2, why, resets()),
    )
}

fn resets() -> Node {
    use Feature as F;
    use RootCause as C;
    at_least(
        F::ServerResetRate,
        0.02,
        leaf(C::ServerReset),
        zero_window(),
    )
}

fn zero_window() -> Node {
    use Feature as F;
    use RootCause as C;
    at_least(
        F::ServerDropsZeroWindow,
        0.1,
        leaf(C::ReceiverZeroWindow),
        at_least(
            F::ClientDropsZeroWindow,
            0.1,
            leaf(C::ReceiverZeroWindow),
            l7(),
        ),
    )
}

fn l7() -> Node {
    use Feature as F;
    use RootCause as C;
    at_least(F::L7ErrorRatio, 0.05, leaf(C::L7Errors), retransmits())
}

fn retransmits() -> Node {
    use Feature as F;
    at_least(
        F::RetransC2sPerExchange,
        0.02,
        lossy_path(),
        at_least(F::RetransS2cPerExchange, 0.02, lossy_path(), throttled()),
    )
}

/// The path loses segments: tell loss, jitter, a rate limit and an MTU black hole apart.
fn lossy_path() -> Node {
    use Feature as F;
    use RootCause as C;
    let by_rtt = at_least(
        F::SrttSpread,
        4.0,
        leaf(C::JitterReorder),
        at_least(
            F::SrttMeanRatio,
            2.0,
            // Queueing behind a rate limit inflates RTT; random loss does not.
            leaf(C::BandwidthLimit),
            // Every full-size segment lost means several retransmits per exchange.
            at_least(
                F::RetransS2cPerExchange,
                1.0,
                leaf(C::MtuBlackhole),
                leaf(C::PathLoss),
            ),
        ),
    );
    // A shaper drops at its qdisc, which the kernel names; that beats any inference from RTT.
    at_least(
        F::ServerDropsQdisc,
        0.1,
        leaf(C::BandwidthLimit),
        at_least(F::ClientDropsQdisc, 0.1, leaf(C::BandwidthLimit), by_rtt),
    )
}

fn throttled() -> Node {
    use Feature as F;
    use RootCause as C;
    at_least(
        F::ServerThrottledRatio,
        0.2,
        at_least(F::ServerP99Ratio, 1.5, leaf(C::ServerCpuThrottled), slow()),
        slow(),
    )
}

fn slow() -> Node {
    use Feature as F;
    use RootCause as C;
    // With both views the gap says who is slow; without the server view only RTT can tell.
    let who = at_least(
        F::HasServerView,
        0.5,
        at_least(
            F::GapShare,
            0.5,
            at_least(
                F::SrttSpread,
                4.0,
                leaf(C::JitterReorder),
                leaf(C::PathDelay),
            ),
            leaf(C::ServerAppSlow),
        ),
        at_least(
            F::SrttMeanRatio,
            2.0,
            leaf(C::PathDelay),
            leaf(C::ServerAppSlow),
        ),
    );
    at_least(
        F::ClientP99Ratio,
        2.0,
        who.clone(),
        at_least(
            F::ServerP99Ratio,
            2.0,
            who,
            at_least(F::SrttMeanRatio, 2.0, leaf(C::PathDelay), leaf(C::Healthy)),
        ),
    )
}

impl Classifier for RuleTree {
    fn classify(&self, v: &FeatureVector) -> Classification {
        let mut path = Vec::new();
        let mut node = &self.root;
        loop {
            match node {
                Node::Leaf(c) => {
                    return Classification::plain(*c, RULE_CONFIDENCE, path);
                }
                Node::Test {
                    cond,
                    then,
                    otherwise,
                } => {
                    if cond.holds(v) {
                        path.push(*cond);
                        node = then;
                    } else {
                        path.push(cond.negate());
                        node = otherwise;
                    }
                }
            }
        }
    }

    fn version(&self) -> String {
        RULES_VERSION.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A healthy edge: both views, baseline ready, every ratio at 1.
    fn healthy() -> FeatureVector {
        let mut v = FeatureVector::default();
        for (f, x) in [
            (Feature::HasClientView, 1.0),
            (Feature::HasServerView, 1.0),
            (Feature::HasBaseline, 1.0),
            (Feature::ExchangeRate, 100.0),
            (Feature::ClientP99Ms, 5.0),
            (Feature::ServerP99Ms, 4.0),
            (Feature::P99GapMs, 1.0),
            (Feature::GapShare, 0.2),
            (Feature::SrttMeanMs, 0.1),
            (Feature::SrttMaxMs, 0.2),
            (Feature::SrttSpread, 2.0),
            (Feature::ExchangeRateRatio, 1.0),
            (Feature::ClientP99Ratio, 1.0),
            (Feature::ServerP99Ratio, 1.0),
            (Feature::SrttMeanRatio, 1.0),
        ] {
            v.set(f, x);
        }
        v
    }

    fn with(changes: &[(Feature, f64)]) -> FeatureVector {
        let mut v = healthy();
        for &(f, x) in changes {
            v.set(f, x);
        }
        v
    }

    fn class(v: &FeatureVector) -> RootCause {
        RuleTree::new().classify(v).root_cause
    }

    #[test]
    fn each_catalog_signature_maps_to_its_class() {
        use Feature as F;
        use RootCause as C;
        let cases: Vec<(C, Vec<(F, f64)>)> = vec![
            (C::Healthy, vec![]),
            (
                C::PathLoss,
                vec![(F::RetransC2sPerExchange, 0.1), (F::ClientP99Ratio, 3.0)],
            ),
            (
                C::PathDelay,
                vec![
                    (F::ClientP99Ratio, 4.0),
                    (F::GapShare, 0.8),
                    (F::SrttMeanRatio, 5.0),
                ],
            ),
            (
                C::JitterReorder,
                vec![(F::RetransS2cPerExchange, 0.05), (F::SrttSpread, 8.0)],
            ),
            (
                C::BandwidthLimit,
                vec![(F::RetransS2cPerExchange, 0.3), (F::SrttMeanRatio, 4.0)],
            ),
            (C::MtuBlackhole, vec![(F::RetransS2cPerExchange, 3.0)]),
            (
                C::SynDroppedFirewall,
                vec![
                    (F::ConnectTimeoutRatio, 0.5),
                    (F::SynRetransPerConnect, 2.0),
                ],
            ),
            (C::ConnectionRefused, vec![(F::ConnectRefusedRatio, 1.0)]),
            (
                C::ServerAppSlow,
                vec![
                    (F::ClientP99Ratio, 4.0),
                    (F::ServerP99Ratio, 4.0),
                    (F::GapShare, 0.05),
                ],
            ),
            (
                C::ServerCpuThrottled,
                vec![
                    (F::ServerThrottledRatio, 0.6),
                    (F::ServerP99Ratio, 3.0),
                    (F::ClientP99Ratio, 3.0),
                ],
            ),
            (
                C::ListenBacklogOverflow,
                vec![
                    (F::ServerListenOverflows, 5.0),
                    (F::SynRetransPerConnect, 1.0),
                ],
            ),
            (C::ReceiverZeroWindow, vec![(F::ClientDropsZeroWindow, 3.0)]),
            (
                C::ServerReset,
                vec![(F::ServerResetRate, 0.2), (F::ResetRatio, 0.2)],
            ),
            (C::L7Errors, vec![(F::L7ErrorRatio, 0.3)]),
            (C::ConnLimitExhausted, vec![(F::ConnectRefusedRatio, 0.3)]),
            (
                C::ConntrackFull,
                vec![(F::ConnectTimeoutRatio, 0.4), (F::NodeDropsNetfilter, 10.0)],
            ),
            (
                C::DnsFailure,
                vec![(F::IsDns, 1.0), (F::NoResponseRatio, 0.6)],
            ),
        ];
        assert_eq!(
            cases.len(),
            RootCause::ALL.len(),
            "every class needs a case"
        );
        let shaped = with(&[
            (F::RetransS2cPerExchange, 0.1),
            (F::ServerDropsQdisc, 4.0),
            (F::SrttSpread, 6.0),
        ]);
        assert_eq!(
            class(&shaped),
            C::BandwidthLimit,
            "qdisc drops name the shaper even with jittery RTT"
        );
        for (want, changes) in cases {
            assert_eq!(class(&with(&changes)), want, "signature {changes:?}");
        }
    }

    #[test]
    fn without_baseline_latency_alone_raises_nothing() {
        // Ratios are 1 without a baseline, so a naturally slow service is not "slow".
        let v = with(&[
            (Feature::HasBaseline, 0.0),
            (Feature::ClientP99Ms, 900.0),
            (Feature::ServerP99Ms, 890.0),
        ]);
        assert_eq!(class(&v), RootCause::Healthy);
    }

    #[test]
    fn path_explains_the_decision() {
        let c = RuleTree::new().classify(&with(&[(Feature::ConnectRefusedRatio, 0.3)]));
        let path: Vec<String> = c.path.iter().map(ToString::to_string).collect();
        assert_eq!(
            path,
            [
                "is_dns < 0.5",
                "connect_refused_ratio < 0.9",
                "connect_refused_ratio >= 0.05"
            ]
        );
        assert_eq!(c.confidence, RULE_CONFIDENCE);
        // Every condition on the path holds for the vector it explains.
        let v = with(&[
            (Feature::RetransC2sPerExchange, 0.5),
            (Feature::SrttMeanRatio, 3.0),
        ]);
        let c = RuleTree::new().classify(&v);
        assert!(c.path.iter().all(|cond| cond.holds(&v)));
        assert_eq!(c.root_cause, RootCause::BandwidthLimit);
    }
}

//! What a node-probe is asked to watch.

use compact_str::CompactString;
use serde::{Deserialize, Serialize};

/// A pod identity as Kubernetes names it. The names are kept inline when they fit (24 bytes,
/// most do): every edge key holds two pods, and the operator decodes thousands of keys a
/// window. They serialize as plain strings.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PodRef {
    /// Namespace.
    pub namespace: CompactString,
    /// Pod name.
    pub name: CompactString,
}

impl std::fmt::Display for PodRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// One pod a node-probe should know about (watched or not).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodTarget {
    /// The pod.
    pub pod: PodRef,
    /// Pod UID; lets a probe find the pod's cgroup itself when `cgroup_path` is empty.
    #[serde(default)]
    pub uid: Option<String>,
    /// Node that runs it.
    pub node: String,
    /// Pod IP (used to name the peer of a connection).
    pub ip: String,
    /// cgroup v2 directory of the pod (its containers are below it); empty to discover it
    /// from the UID under the node's cgroup root.
    #[serde(default)]
    pub cgroup_path: String,
    /// A path to the pod's network namespace (/run/netns/x or /proc/<pid>/ns/net); empty to
    /// use any process of the pod.
    #[serde(default)]
    pub netns_path: String,
    /// cgroup v1 cpu directory (CPU throttling), when known.
    #[serde(default)]
    pub cpu_cgroup_path: Option<String>,
    /// Whether the probe records this pod's traffic; others only name peers.
    #[serde(default = "yes")]
    pub watched: bool,
    /// Which message heads the probe copies for this pod (when watched).
    #[serde(default)]
    pub payload: PayloadCapture,
}

/// Which message heads a watched pod's probe copies for protocol names and L7 errors. Each
/// direction is one cgroup_skb program on the pod, run for every packet it sends or receives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "crd", derive(schemars::JsonSchema))]
pub enum PayloadCapture {
    /// No heads: exchanges, bytes, latency and TCP signals only; protocols are unnamed and
    /// L7 errors unseen. No cgroup_skb programs on the pod.
    Off,
    /// Heads of what the pod sends: a client's requests, a server's responses. A client sees
    /// no response status from a server that is not watched itself.
    Egress,
    /// Heads of what the pod receives: a client's responses, a server's requests. A server
    /// sees no status of its own answers to a client that is not watched itself.
    Ingress,
    /// Heads of both directions (default).
    #[default]
    Both,
}

impl PayloadCapture {
    /// Every mode, in declaration order (the binary wire form sends the index).
    pub const ALL: [PayloadCapture; 4] = [
        PayloadCapture::Off,
        PayloadCapture::Egress,
        PayloadCapture::Ingress,
        PayloadCapture::Both,
    ];

    /// The name the spec uses.
    pub fn name(self) -> &'static str {
        match self {
            PayloadCapture::Off => "Off",
            PayloadCapture::Egress => "Egress",
            PayloadCapture::Ingress => "Ingress",
            PayloadCapture::Both => "Both",
        }
    }

    /// Whether outgoing messages' heads are copied.
    pub fn egress(self) -> bool {
        matches!(self, PayloadCapture::Egress | PayloadCapture::Both)
    }

    /// Whether incoming messages' heads are copied.
    pub fn ingress(self) -> bool {
        matches!(self, PayloadCapture::Ingress | PayloadCapture::Both)
    }

    /// The capture that copies every direction either copies (a pod two observations select).
    pub fn union(self, other: PayloadCapture) -> PayloadCapture {
        match (
            self.egress() || other.egress(),
            self.ingress() || other.ingress(),
        ) {
            (true, true) => PayloadCapture::Both,
            (true, false) => PayloadCapture::Egress,
            (false, true) => PayloadCapture::Ingress,
            (false, false) => PayloadCapture::Off,
        }
    }
}

impl std::str::FromStr for PayloadCapture {
    type Err = String;

    /// A mode by its name, in any case.
    fn from_str(s: &str) -> Result<Self, String> {
        PayloadCapture::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                format!("unknown payload capture {s:?}: use Both, Egress, Ingress or Off")
            })
    }
}

#[cfg(test)]
mod tests {
    use super::PayloadCapture::{self, *};

    #[test]
    fn modes_parse_by_name_in_any_case() {
        assert_eq!("off".parse(), Ok(Off));
        assert_eq!("Both".parse(), Ok(Both));
        assert!("sometimes".parse::<PayloadCapture>().is_err());
    }

    #[test]
    fn names_are_the_serialized_forms() {
        for p in PayloadCapture::ALL {
            assert_eq!(serde_json::to_value(p).ok(), Some(p.name().into()));
        }
    }

    #[test]
    fn union_copies_every_direction_either_copies() {
        for a in PayloadCapture::ALL {
            for b in PayloadCapture::ALL {
                let u: PayloadCapture = a.union(b);
                assert_eq!(u.egress(), a.egress() || b.egress(), "{a:?} {b:?}");
                assert_eq!(u.ingress(), a.ingress() || b.ingress(), "{a:?} {b:?}");
            }
        }
        assert_eq!(Egress.union(Ingress), Both);
    }
}

fn yes() -> bool {
    true
}

/// The full set a probe works from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetSet {
    /// All known pods; a probe watches those on its node with `watched`.
    pub pods: Vec<PodTarget>,
}

//! Per-pod counters the kernel keeps outside the socket hooks: the pod network namespace's
//! TCP MIB counters (zero-window advertisements, listen overflows, receive-queue drops) and
//! the pod cgroup's CPU throttling. Sampled at window close; windows carry deltas.

use std::collections::{BTreeMap, HashMap};

use crate::pods::WatchedPod;

/// /proc/<pid>/net/netstat and /proc/<pid>/net/snmp counters kept per pod.
pub const NETSTAT_KEYS: [&str; 12] = [
    "TcpExt:TCPToZeroWindowAdv",
    "TcpExt:TCPWantZeroWindowAdv",
    "TcpExt:TCPZeroWindowDrop",
    "TcpExt:ListenOverflows",
    "TcpExt:ListenDrops",
    "TcpExt:TCPRcvQDrop",
    "TcpExt:TCPBacklogDrop",
    "TcpExt:PruneCalled",
    "TcpExt:TCPAbortOnData",
    "Tcp:OutRsts",
    "Tcp:RetransSegs",
    "Udp:RcvbufErrors",
];

/// Parses the two-line "Prefix: names / Prefix: values" format of /proc/net/{netstat,snmp}.
pub fn parse_mib(text: &str, out: &mut BTreeMap<String, u64>) {
    let mut lines = text.lines();
    while let (Some(names), Some(values)) = (lines.next(), lines.next()) {
        let (Some((p1, names)), Some((p2, values))) =
            (names.split_once(':'), values.split_once(':'))
        else {
            continue;
        };
        if p1 != p2 {
            continue;
        }
        for (n, v) in names.split_whitespace().zip(values.split_whitespace()) {
            let key = format!("{p1}:{n}");
            if NETSTAT_KEYS.contains(&key.as_str())
                && let Ok(v) = v.parse()
            {
                out.insert(key, v);
            }
        }
    }
}

/// Cumulative counters of one pod at one instant.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodSample {
    /// MIB counters by "Prefix:Name".
    pub mib: BTreeMap<String, u64>,
    /// cpu.stat nr_periods.
    pub nr_periods: u64,
    /// cpu.stat nr_throttled.
    pub nr_throttled: u64,
    /// cpu.stat throttled_time (ns).
    pub throttled_ns: u64,
}

/// Reads a pod's counters through one of its processes (any pid shares the pod netns).
pub fn sample(pod: &WatchedPod) -> Option<PodSample> {
    let pid = crate::pods::first_pid(std::path::Path::new(&pod.cgroup_path))?;
    let mut s = PodSample::default();
    for f in ["netstat", "snmp"] {
        if let Ok(t) = std::fs::read_to_string(format!("/proc/{pid}/net/{f}")) {
            parse_mib(&t, &mut s.mib);
        }
    }
    if let Some(cpu) = &pod.cpu_cgroup_path
        && let Ok(t) = std::fs::read_to_string(format!("{cpu}/cpu.stat"))
    {
        for l in t.lines() {
            let mut it = l.split_whitespace();
            let (Some(k), Some(Ok(v))) = (it.next(), it.next().map(str::parse::<u64>)) else {
                continue;
            };
            match k {
                "nr_periods" => s.nr_periods = v,
                "nr_throttled" => s.nr_throttled = v,
                "throttled_time" => s.throttled_ns = v,
                _ => {}
            }
        }
    }
    Some(s)
}

/// Keeps the previous sample per pod (by cgroup id) to report window deltas.
#[derive(Default)]
pub struct PodSampler {
    last: HashMap<u64, PodSample>,
}

impl PodSampler {
    /// Samples a pod and returns the change since its previous sample (zero on first sight).
    pub fn delta(&mut self, pod: &WatchedPod) -> PodSample {
        let Some(now) = sample(pod) else {
            return PodSample::default();
        };
        let prev = self
            .last
            .insert(pod.cgroup_id, now.clone())
            .unwrap_or_else(|| now.clone());
        PodSample {
            mib: now
                .mib
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.saturating_sub(prev.mib.get(k).copied().unwrap_or(*v)),
                    )
                })
                .collect(),
            nr_periods: now.nr_periods.saturating_sub(prev.nr_periods),
            nr_throttled: now.nr_throttled.saturating_sub(prev.nr_throttled),
            throttled_ns: now.throttled_ns.saturating_sub(prev.throttled_ns),
        }
    }

    /// Forgets pods no longer watched.
    pub fn retain(&mut self, ids: &[u64]) {
        self.last.retain(|k, _| ids.contains(k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mib_pairs_and_ignores_garbage() {
        let t = "TcpExt: SyncookiesSent ListenOverflows TCPToZeroWindowAdv\nTcpExt: 0 7 3\nIpExt: InNoRoutes\nIpExt: 1\nbroken line\n";
        let mut m = BTreeMap::new();
        parse_mib(t, &mut m);
        assert_eq!(m.get("TcpExt:ListenOverflows"), Some(&7));
        assert_eq!(m.get("TcpExt:TCPToZeroWindowAdv"), Some(&3));
        assert!(!m.contains_key("TcpExt:SyncookiesSent"));
    }

    #[test]
    fn reads_this_process_counters() {
        let mut m = BTreeMap::new();
        parse_mib(
            &std::fs::read_to_string("/proc/self/net/netstat").unwrap(),
            &mut m,
        );
        assert!(m.contains_key("TcpExt:ListenOverflows"));
    }
}

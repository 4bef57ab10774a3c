//! What a run measures and how long each part may take (full, `--quick`, or the tiny mode the
//! harness test uses).

use std::{fmt, str::FromStr};

/// A part of the benchmark that can be run alone (`--only`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Section {
    /// Application impact: none / netdx / bpftrace, several rounds.
    Impact,
    /// Per-hook kernel cost (bpf stats), real programs and no-op ones.
    Hooks,
    /// Userspace decode and aggregation of synthetic records.
    Pipeline,
    /// Real kernel path: a ping-pong flood with the probe attached.
    Kernel,
    /// Probe memory at many held connections.
    Scale,
    /// Operator ingest of window reports.
    Ingest,
}

impl Section {
    /// All sections, in run order.
    pub const ALL: [Section; 6] = [
        Section::Impact,
        Section::Hooks,
        Section::Kernel,
        Section::Scale,
        Section::Pipeline,
        Section::Ingest,
    ];

    /// Name on the command line and in the results.
    pub fn name(self) -> &'static str {
        match self {
            Section::Impact => "impact",
            Section::Hooks => "hooks",
            Section::Pipeline => "pipeline",
            Section::Kernel => "kernel",
            Section::Scale => "scale",
            Section::Ingest => "ingest",
        }
    }

    /// Whether it needs the testbed, root and eBPF.
    pub fn needs_kernel(self) -> bool {
        !matches!(self, Section::Pipeline | Section::Ingest)
    }
}

impl fmt::Display for Section {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Section {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Section::ALL
            .into_iter()
            .find(|x| x.name() == s.trim())
            .ok_or_else(|| {
                let names: Vec<&str> = Section::ALL.iter().map(|x| x.name()).collect();
                format!("unknown section {s:?} (one of {})", names.join(", "))
            })
    }
}

/// Sizes and durations of one run.
#[derive(Clone, Debug)]
pub struct Plan {
    /// "full", "quick" or "tiny".
    pub mode: &'static str,
    /// Rounds of the impact comparison.
    pub rounds: usize,
    /// Seconds per throughput run.
    pub run_secs: f64,
    /// Seconds per paced latency run.
    pub paced_secs: f64,
    /// Requests per test of the fixed redis workload behind the hook costs.
    pub hook_requests: u64,
    /// Seconds of synthetic records through the userspace pipeline.
    pub pipeline_secs: f64,
    /// Distinct synthetic records generated (then replayed).
    pub pipeline_records: usize,
    /// Seconds of the kernel-path flood.
    pub flood_secs: f64,
    /// Held connection counts.
    pub scale_conns: Vec<usize>,
    /// Pod counts of the ingest measurement.
    pub ingest_pods: Vec<usize>,
    /// Minimum seconds per ingest point.
    pub ingest_secs: f64,
}

impl Plan {
    /// The full benchmark (under 20 minutes on 2 cores).
    pub fn full() -> Self {
        Plan {
            mode: "full",
            rounds: 5,
            run_secs: 5.0,
            paced_secs: 5.0,
            hook_requests: 100_000,
            pipeline_secs: 3.0,
            pipeline_records: 1 << 18,
            flood_secs: 5.0,
            scale_conns: vec![1_000, 10_000, 50_000],
            ingest_pods: vec![10, 100, 1_000, 5_000],
            ingest_secs: 2.0,
        }
    }

    /// `--quick` (under 3 minutes): one round, short runs.
    pub fn quick() -> Self {
        Plan {
            mode: "quick",
            rounds: 1,
            run_secs: 2.0,
            paced_secs: 2.0,
            hook_requests: 30_000,
            pipeline_secs: 1.0,
            flood_secs: 2.0,
            ingest_pods: vec![10, 100, 1_000],
            ingest_secs: 0.5,
            ..Plan::full()
        }
    }

    /// `--tiny`: just enough input to check that the harness runs end to end.
    pub fn tiny() -> Self {
        Plan {
            mode: "tiny",
            pipeline_secs: 0.05,
            pipeline_records: 2_000,
            scale_conns: vec![10, 100],
            ingest_pods: vec![4, 16],
            ingest_secs: 0.05,
            ..Plan::quick()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_parse_by_name() {
        for s in Section::ALL {
            assert_eq!(s.name().parse::<Section>(), Ok(s));
        }
        assert!("nope".parse::<Section>().is_err());
    }
}

//! The conditions a workload runs under: nothing attached, the netdx node-probes (in the
//! accounting runs also with less payload capture), or bpftrace counting the same information.

use netdx_api::targets::PayloadCapture;

use crate::{
    Result,
    bpftrace::Bpftrace,
    probe::{self, ProbeProcess, Programs},
    procfs::ProgramStats,
    world::{WORKLOAD_PODS, World},
};

/// What is attached while a workload runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Condition {
    /// No probe.
    None,
    /// One node-probe per node with watched pods.
    Netdx,
    /// bpftrace with the equivalent counting script.
    Bpftrace,
    /// The node-probes copying only outgoing message heads (accounting runs only).
    NetdxEgress,
    /// The node-probes copying only incoming message heads (accounting runs only).
    NetdxIngress,
    /// The node-probes without payload programs (accounting runs only).
    NetdxOff,
}

impl Condition {
    /// Every condition, in the order of the first round.
    pub const ALL: [Condition; 3] = [Condition::None, Condition::Netdx, Condition::Bpftrace];

    /// Name used in the results.
    pub fn name(self) -> &'static str {
        match self {
            Condition::None => "none",
            Condition::Netdx => "netdx",
            Condition::Bpftrace => "bpftrace",
            Condition::NetdxEgress => "netdx_egress",
            Condition::NetdxIngress => "netdx_ingress",
            Condition::NetdxOff => "netdx_off",
        }
    }

    /// The payload capture of the node-probes' pods, None for conditions without them.
    fn payload(self) -> Option<PayloadCapture> {
        match self {
            Condition::Netdx => Some(PayloadCapture::Both),
            Condition::NetdxEgress => Some(PayloadCapture::Egress),
            Condition::NetdxIngress => Some(PayloadCapture::Ingress),
            Condition::NetdxOff => Some(PayloadCapture::Off),
            Condition::None | Condition::Bpftrace => None,
        }
    }

    /// The conditions of round `round`, rotated so each one runs first, second and last
    /// equally often (drift over a round does not favour one).
    pub fn order(round: usize) -> [Condition; 3] {
        let mut o = Self::ALL;
        o.rotate_left(round % Self::ALL.len());
        o
    }
}

/// Window length of the node-probes during the impact runs (the probe's default).
pub const WINDOW_SECS: u64 = 10;

/// A condition in force; dropping it detaches whatever was attached.
pub enum Active {
    /// Nothing attached.
    None,
    /// The node-probes.
    Netdx(Vec<ProbeProcess>),
    /// bpftrace.
    Bpftrace(Bpftrace),
}

impl Active {
    /// Attaches what `c` needs and waits until it is ready.
    pub fn start(c: Condition, world: &World) -> Result<Self> {
        if let Some(payload) = c.payload() {
            // Every netdx start sets its capture: the probes read the target set as they start.
            world.tb.write_targets_with(payload)?;
            return Ok(Active::Netdx(probe::start_for(
                &world.tb,
                &WORKLOAD_PODS,
                WINDOW_SECS,
                Programs::Real,
            )?));
        }
        Ok(match c {
            Condition::Bpftrace => Active::Bpftrace(Bpftrace::start(&world.watched_cgroup_ids()?)?),
            _ => Active::None,
        })
    }

    /// CPU time of the attached tool's processes so far, ns (0 with nothing attached).
    pub fn tool_cpu_ns(&self) -> Result<u64> {
        match self {
            Active::None => Ok(0),
            Active::Netdx(ps) => ps.iter().map(|p| p.cpu_ns()).sum(),
            Active::Bpftrace(b) => b.cpu_ns(),
        }
    }

    /// Run statistics of the attached tool's eBPF programs so far, by program name, counted
    /// while bpf stats are on (empty with nothing attached).
    pub fn program_stats(&self) -> Result<ProgramStats> {
        let mut out = ProgramStats::default();
        match self {
            Active::None => {}
            Active::Netdx(ps) => {
                for p in ps {
                    out.merge(p.program_stats()?);
                }
            }
            Active::Bpftrace(b) => out.merge(b.program_stats()?),
        }
        Ok(out)
    }

    /// Exchanges the node-probes' kernel programs have written so far (None without them).
    pub fn exchanges(&mut self) -> Result<Option<u64>> {
        match self {
            Active::Netdx(ps) => {
                let snaps = ps
                    .iter_mut()
                    .map(|p| p.counters())
                    .collect::<Result<Vec<_>>>()?;
                Ok(Some(probe::sum_counter(&snaps, "exchanges")))
            }
            _ => Ok(None),
        }
    }

    /// How the condition was set up, for the results.
    pub fn command(&self) -> String {
        match self {
            Active::None => String::new(),
            Active::Netdx(ps) => ps
                .iter()
                .map(|p| p.command.clone())
                .collect::<Vec<_>>()
                .join("; "),
            Active::Bpftrace(b) => b.command.clone(),
        }
    }

    /// Detaches (SIGTERM to the probes, SIGINT to bpftrace).
    pub fn stop(self) {
        if let Active::Bpftrace(b) = self {
            b.stop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_condition_takes_each_position_once_per_three_rounds() {
        for pos in 0..3 {
            let mut at: Vec<Condition> = (0..3).map(|r| Condition::order(r)[pos]).collect();
            at.sort();
            assert_eq!(at, Condition::ALL.to_vec());
        }
    }
}

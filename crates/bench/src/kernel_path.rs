//! The real kernel path at its limit: a ping-pong flood between two sockets of one watched pod
//! with the node-probe attached. Every send and receive is a hook event and every round trip
//! two exchanges; the probe's own counters say whether anything was lost on the way.

use std::time::Duration;

use crate::{
    Error, Result,
    pingpong::PingPongReport,
    probe::{self, ProbeProcess, Programs},
    progress::Progress,
    report::Results,
    world::{PINGPONG, World},
};

/// Workload name in the results.
pub const WORKLOAD: &str = "kernel_flood";
/// Connections of the flood: enough to keep both cores busy.
const CONNS: usize = 4;
/// Message size: small, so the syscalls (and hooks), not copying, set the pace.
const MSG: usize = 16;

/// Number of progress steps [`run`] takes.
pub const STEPS: u64 = 2;

fn flood(world: &World, secs: f64) -> Result<(PingPongReport, String)> {
    world.pingpong(CONNS, MSG, secs)
}

fn counter(c: &std::collections::BTreeMap<String, u64>, name: &str) -> u64 {
    c.get(name).copied().unwrap_or(0)
}

/// The first window the probe closed after the kernel had written `exchanges` exchanges: its
/// totals cover every record of the flood.
fn window_after(p: &ProbeProcess, exchanges: u64) -> Result<netdx_api::windows::WindowReport> {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut seq = p.next_seq()?;
    while std::time::Instant::now() < deadline {
        let w = p.wait_window(seq, Duration::from_secs(5))?;
        if counter(&w.health.kernel, "exchanges") >= exchanges {
            return Ok(w);
        }
        seq = w.seq + 1;
    }
    Err(Error::Process(format!(
        "node-probe {} closed no window covering the flood",
        p.node
    )))
}

/// Floods, then checks the probe's counters; a second, statistics-on flood says where the
/// CPU went.
pub fn run(world: &World, secs: f64, results: &mut Results, progress: &mut Progress) -> Result<()> {
    progress.step("kernel path: ping-pong flood with the probe attached");
    let bin = probe::binary()?;
    let pod = world.tb.pod(PINGPONG)?;
    let node = &world.tb.nodes[pod.node];
    // 1 s windows: the userspace totals are published with each window, so a short wait after
    // the flood shows whether every record was read.
    let mut p = ProbeProcess::start(&bin, &world.tb, node, 1, Programs::Real)?;
    let before = p.counters()?;
    let (cpu0, wait0) = p.sched_ns()?;
    let (r, cmd) = flood(world, secs)?;
    let (cpu1, wait1) = p.sched_ns()?;
    let (cpu, wait) = (cpu1.saturating_sub(cpu0), wait1.saturating_sub(wait0));
    let after = p.counters()?;
    let window = window_after(&p, counter(&after, "exchanges"))?;
    let command = format!("{cmd} (with {})", p.command);
    let d = |n: &str| counter(&after, n).saturating_sub(counter(&before, n));
    // Everything the kernel wrote since the probe started, against what user space read.
    let written: u64 = ["exchanges", "conn_events", "drop_events"]
        .iter()
        .map(|n| counter(&window.health.kernel, n))
        .sum();
    let unread = written.saturating_sub(window.health.records_read);
    results.add_all(
        WORKLOAD,
        "netdx",
        1,
        &command,
        &[
            ("round_trips_per_sec", r.rate),
            ("sock_events_per_sec", d("sock_events") as f64 / r.secs),
            ("exchanges_per_sec", d("exchanges") as f64 / r.secs),
            ("ringbuf_full", d("ringbuf_full") as f64),
            ("records_written", written as f64),
            ("records_read", window.health.records_read as f64),
            ("records_unread", unread as f64),
            ("probe_process_cpu_ms", cpu as f64 / 1e6),
            // Runnable but not running: a drain loop that waits for a CPU lets the ring fill.
            ("probe_runqueue_wait_ms", wait as f64 / 1e6),
        ],
    );
    results.key(
        "kernel_path_events_per_sec",
        d("sock_events") as f64 / r.secs,
        &command,
    );
    results.key(
        "kernel_path_exchanges_per_sec",
        d("exchanges") as f64 / r.secs,
        &command,
    );
    results.key(
        "kernel_path_lost_records",
        (d("ringbuf_full") + unread) as f64,
        &command,
    );
    if d("ringbuf_full") > 0 || unread > 0 {
        results.note(format!(
            "kernel path: records were lost: {} ring-buffer-full, {unread} written but not \
             read; the probe's threads used {:.0} ms of CPU and waited {:.0} ms for one during \
             the {:.0} s flood",
            d("ringbuf_full"),
            cpu as f64 / 1e6,
            wait as f64 / 1e6,
            r.secs
        ));
    }
    progress.done();

    crate::check_stop()?;
    progress.step("kernel path: where the time goes (bpf stats on)");
    let stats = probe::run_stats()?;
    let progs0 = p.program_stats()?;
    let cpu0 = p.cpu_ns()?;
    let (r2, _) = flood(world, secs)?;
    let progs1 = p.program_stats()?;
    let cpu1 = p.cpu_ns()?;
    drop(stats);
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1) as f64;
    let budget_ns = r2.secs * 1e9 * cpus;
    let bpf_ns: u64 = progs1.since(&progs0).iter().map(|(_, t, _)| t).sum();
    let command = format!("{cmd} (bpf stats on, with {})", p.command);
    results.add_all(
        WORKLOAD,
        "netdx+stats",
        1,
        &command,
        &[
            ("round_trips_per_sec", r2.rate),
            ("bpf_programs_cpu_pct", bpf_ns as f64 / budget_ns * 100.0),
            (
                "probe_process_cpu_pct",
                cpu1.saturating_sub(cpu0) as f64 / budget_ns * 100.0,
            ),
        ],
    );
    progress.done();
    Ok(())
}

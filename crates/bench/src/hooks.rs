//! Kernel cost of each hook: with eBPF run statistics on, a fixed redis workload runs under
//! the real programs and under no-op programs on the same hook points; each program's
//! run_time_ns / run_cnt is its cost per event. The probe's CPU per exchange (its process plus
//! its programs) comes from the same run.

use std::collections::BTreeMap;

use netdx_testbed::workloads::redis_benchmark;

use crate::{
    Result,
    impact::{redis_cmd, redis_rate},
    probe::{self, ProbeProcess, Programs},
    procfs::ProgramStats,
    progress::Progress,
    report::Results,
    world::{CLIENT, WORKLOAD_PODS, World},
};

/// redis-benchmark clients of the fixed workload.
const CLIENTS: u32 = 50;

/// Workload name in the results.
pub const WORKLOAD: &str = "redis_np_fixed";

/// Per-program (run_time_ns, run_cnt), counters and CPU of a set of probes at one instant.
struct Snapshot {
    programs: ProgramStats,
    cpu_ns: u64,
    exchanges: u64,
    sock_events: u64,
}

/// `counters`: read the kernel counters too (the no-op programs record nothing).
fn snapshot(probes: &mut [ProbeProcess], counters: bool) -> Result<Snapshot> {
    let mut programs = ProgramStats::default();
    let (mut cpu_ns, mut exchanges, mut sock_events) = (0, 0, 0);
    for p in probes.iter_mut() {
        programs.merge(p.program_stats()?);
        cpu_ns += p.cpu_ns()?;
        let c = if counters {
            p.counters()?
        } else {
            BTreeMap::new()
        };
        exchanges += c.get("exchanges").copied().unwrap_or(0);
        sock_events += c.get("sock_events").copied().unwrap_or(0);
    }
    Ok(Snapshot {
        programs,
        cpu_ns,
        exchanges,
        sock_events,
    })
}

/// What each real program costs beyond an empty program on the same hook.
fn above_noop(results: &mut Results) {
    let pairs: Vec<(String, f64, String)> = results
        .keys
        .iter()
        .filter_map(|(k, real)| {
            let hook = k.strip_prefix("hook_ns.")?;
            let noop = results.keys.get(&format!("hook_ns_noop.{hook}"))?;
            Some((
                hook.to_string(),
                real.value - noop.value,
                noop.command.clone(),
            ))
        })
        .collect();
    for (hook, ns, command) in pairs {
        results.key(&format!("hook_ns_above_noop.{hook}"), ns, &command);
    }
    // The programs' time beyond empty ones, as a share of what the workload itself spends
    // (its pods' CPU under the empty programs, less theirs): the floor of the throughput loss
    // of this CPU-bound workload, read from CPU accounting rather than from throughput.
    let v = |cond: &str, m: &str| results.value(WORKLOAD, cond, 1, m);
    if let (Some(real), Some(noop), Some(pods)) = (
        v("netdx", "bpf_run_time_ms"),
        v("noop", "bpf_run_time_ms"),
        v("noop", "workload_cpu_ms"),
    ) && pods > noop
    {
        results.key(
            "hook_cost_pct_of_workload_cpu",
            (real - noop) / (pods - noop) * 100.0,
            "derived: (netdx - noop program time) / (workload pods' CPU under noop - noop program time)",
        );
    }
}

/// Number of progress steps [`run`] takes.
pub const STEPS: u64 = 2;

/// Measures the real programs, then the no-op ones when this node-probe has them.
pub fn run(
    world: &World,
    requests: u64,
    results: &mut Results,
    progress: &mut Progress,
) -> Result<()> {
    let bin = probe::binary()?;
    for programs in [Programs::Real, Programs::Noop] {
        let cond = match programs {
            Programs::Real => "netdx",
            Programs::Noop => "noop",
        };
        crate::check_stop()?;
        progress.step(&format!("hooks: {cond} programs with bpf stats"));
        if programs == Programs::Noop && !probe::has_noop(&bin) {
            results.note(
                "hooks: the no-op baseline is unavailable: this node-probe has no `--programs noop` \
                 flag yet, so hook costs are not compared with empty programs",
            );
            progress.done();
            continue;
        }
        let outcome = measure(world, programs, cond, requests, results);
        if outcome.is_ok() && programs == Programs::Noop {
            above_noop(results);
        }
        if let Err(e) = outcome {
            results.note(format!("hooks: {cond} programs could not be measured: {e}"));
        }
        progress.done();
    }
    Ok(())
}

fn measure(
    world: &World,
    programs: Programs,
    cond: &str,
    requests: u64,
    results: &mut Results,
) -> Result<()> {
    let mut probes = probe::start_for(
        &world.tb,
        &WORKLOAD_PODS,
        crate::conditions::WINDOW_SECS,
        programs,
    )?;
    let stats = probe::run_stats()?;
    let real = programs == Programs::Real;
    let pods0 = world.workload_cpu_us()?;
    let before = snapshot(&mut probes, real)?;
    let bench = redis_benchmark(
        &world.tb,
        CLIENT,
        world.redis,
        "get,set",
        requests,
        CLIENTS,
        1,
    )?;
    let after = snapshot(&mut probes, real)?;
    let pods_us = world.workload_cpu_us()?.saturating_sub(pods0);
    drop(stats);
    let command = format!(
        "{} (bpf stats on, with {})",
        redis_cmd(world.redis, requests, CLIENTS, 1),
        probes
            .iter()
            .map(|p| p.command.clone())
            .collect::<Vec<_>>()
            .join("; ")
    );
    let rate = redis_rate(requests, &bench.rps);
    results.add(WORKLOAD, cond, 1, crate::impact::THROUGHPUT, rate, &command);
    let mut bpf_ns = 0u64;
    for (prog, dt, dn) in after.programs.since(&before.programs) {
        bpf_ns += dt;
        // The no-op programs are named noop_<hook>: file them under the real program's name
        // (on_<hook>) so the two line up.
        let name = match prog.strip_prefix("noop_") {
            Some(hook) => format!("on_{hook}"),
            None => prog.to_string(),
        };
        let mut values = vec![(format!("runs.{name}"), dn as f64)];
        if dn > 0 {
            let ns = dt as f64 / dn as f64;
            values.push((format!("ns_per_run.{name}"), ns));
            // The batch flush is the reader's, run on each CPU ten times a second, not a hook:
            // its time counts in the probe's CPU but not among the hooks.
            if name != node_probe::batches::PROGRAM {
                let key = if real { "hook_ns" } else { "hook_ns_noop" };
                results.key(&format!("{key}.{name}"), ns, &command);
            }
        }
        for (m, v) in values {
            results.add(WORKLOAD, cond, 1, &m, v, &command);
        }
    }
    let exchanges = after.exchanges.saturating_sub(before.exchanges);
    let events = after.sock_events.saturating_sub(before.sock_events);
    let cpu = after.cpu_ns.saturating_sub(before.cpu_ns);
    results.add_all(
        WORKLOAD,
        cond,
        1,
        &command,
        &[
            ("exchanges_recorded", exchanges as f64),
            ("sock_events", events as f64),
            ("probe_process_cpu_ms", cpu as f64 / 1e6),
            ("bpf_run_time_ms", bpf_ns as f64 / 1e6),
            ("workload_cpu_ms", pods_us as f64 / 1e3),
        ],
    );
    if real && exchanges > 0 {
        let per_exchange = |ns: u64| ns as f64 / exchanges as f64;
        let total = per_exchange(cpu + bpf_ns);
        results.add_all(
            WORKLOAD,
            cond,
            1,
            &command,
            &[
                ("probe_cpu_ns_per_exchange", total),
                ("probe_process_ns_per_exchange", per_exchange(cpu)),
                ("bpf_ns_per_exchange", per_exchange(bpf_ns)),
            ],
        );
        results.key("probe_cpu_ns_per_exchange", total, &command);
    }
    Ok(())
}

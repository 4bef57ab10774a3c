//! Application impact: each workload at saturation (and the latency ones at half of it) under
//! no probe, the netdx node-probes and bpftrace, the three alternating within every round;
//! losses are computed against the `none` run of the same round.

use std::net::SocketAddr;

use netdx_testbed::workloads::{pgbench, redis_benchmark, wrk};
use tracing::info;

use crate::{
    Error, Result,
    conditions::{Active, Condition},
    paced::{PacedReport, Proto},
    plan::Plan,
    probe,
    progress::Progress,
    report::Results,
    stats::{increase_pct, loss_pct},
    world::{CLIENT, World},
};

/// Throughput metric of the saturation workloads.
pub const THROUGHPUT: &str = "throughput_ops_per_sec";
/// Latency metric of the paced workloads.
pub const P99: &str = "p99_us";
/// CPU time per operation, µs: the workload's pods and the tool's processes.
pub const CPU_PER_OP: &str = "cpu_us_per_op";
/// The tool's CPU (programs and processes) as a share of the applications' own, percent.
pub const TOOL_CPU_SHARE: &str = "tool_cpu_share_pct";

/// redis-benchmark clients.
const REDIS_CLIENTS: u32 = 50;
/// wrk connections.
const WRK_CONNS: u32 = 32;
/// pgbench clients.
const PG_CLIENTS: u32 = 8;
/// Ping-pong connections and message size: small writes, both ends in one watched pod.
const PP_CONNS: usize = 2;
const PP_MSG: usize = 16;
/// Connections of the paced clients.
const PACED_CONNS: usize = 16;

/// A workload of the impact comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// redis-benchmark GET/SET, one request per syscall.
    RedisNp,
    /// redis-benchmark GET/SET, 16 requests per write.
    RedisP16,
    /// wrk against nginx, 1 KiB responses.
    Nginx1k,
    /// wrk against nginx, 64 KiB responses.
    Nginx64k,
    /// pgbench select-only.
    Pgbench,
    /// Small-write ping-pong over one pod's loopback.
    PingPong,
    /// Paced redis GETs at half the saturation throughput.
    RedisPaced,
    /// Paced nginx GETs (1 KiB) at half the saturation throughput.
    NginxPaced,
}

impl Workload {
    /// Every workload, in run order.
    pub const ALL: [Workload; 8] = [
        Workload::RedisNp,
        Workload::RedisP16,
        Workload::Nginx1k,
        Workload::Nginx64k,
        Workload::Pgbench,
        Workload::PingPong,
        Workload::RedisPaced,
        Workload::NginxPaced,
    ];

    /// Name in the results.
    pub fn id(self) -> &'static str {
        match self {
            Workload::RedisNp => "redis_np",
            Workload::RedisP16 => "redis_p16",
            Workload::Nginx1k => "nginx_1k",
            Workload::Nginx64k => "nginx_64k",
            Workload::Pgbench => "pgbench_select",
            Workload::PingPong => "syscall_pingpong",
            Workload::RedisPaced => "redis_paced_50pct",
            Workload::NginxPaced => "nginx_paced_50pct",
        }
    }

    /// Whether its headline metric is latency (else throughput).
    pub fn is_latency(self) -> bool {
        matches!(self, Workload::RedisPaced | Workload::NginxPaced)
    }
}

/// Request counts and rates derived from the calibration run, so every run lasts about
/// `run_secs` and the paced clients run at half of saturation.
#[derive(Clone, Debug, Default)]
pub struct Sizes {
    /// redis-benchmark -n (non-pipelined), per test.
    pub redis_np_n: u64,
    /// redis-benchmark -n (-P 16), per test.
    pub redis_p16_n: u64,
    /// pgbench -t per client.
    pub pg_tx: u64,
    /// Saturation throughput of redis without a probe, ops/s.
    pub redis_sat: f64,
    /// Saturation throughput of nginx (1 KiB) without a probe, req/s.
    pub nginx_sat: f64,
}

/// One run's values and the command behind them.
struct Run {
    values: Vec<(&'static str, f64)>,
    /// Requests (transactions, round trips) completed.
    ops: f64,
    command: String,
}

/// The redis-benchmark command line the testbed runs.
pub(crate) fn redis_cmd(server: SocketAddr, n: u64, clients: u32, pipeline: u32) -> String {
    format!(
        "redis-benchmark -h {} -p {} -n {n} -c {clients} -t get,set --csv -P {pipeline}",
        server.ip(),
        server.port()
    )
}

/// Requests per second over both tests (total requests over total time).
pub(crate) fn redis_rate(n: u64, rps: &[f64]) -> f64 {
    let secs: f64 = rps.iter().map(|r| n as f64 / r).sum();
    n as f64 * rps.len() as f64 / secs
}

fn run_redis(world: &World, n: u64, pipeline: u32) -> Result<Run> {
    let r = redis_benchmark(
        &world.tb,
        CLIENT,
        world.redis,
        "get,set",
        n,
        REDIS_CLIENTS,
        pipeline,
    )?;
    Ok(Run {
        values: vec![(THROUGHPUT, redis_rate(n, &r.rps))],
        ops: (r.requests_per_test * r.tests) as f64,
        command: redis_cmd(world.redis, n, REDIS_CLIENTS, pipeline),
    })
}

fn run_wrk(world: &World, target: SocketAddr, secs: f64) -> Result<Run> {
    let url = format!("http://{target}/");
    let secs = secs.ceil().max(1.0) as u32;
    let r = wrk(&world.tb, CLIENT, &url, WRK_CONNS, secs)?;
    if r.non_2xx > 0 {
        return Err(Error::Process(format!(
            "wrk: {} non-2xx responses",
            r.non_2xx
        )));
    }
    Ok(Run {
        values: vec![(THROUGHPUT, r.rps)],
        ops: r.requests as f64,
        command: format!("wrk -t 1 -c {WRK_CONNS} -d {secs}s {url}"),
    })
}

fn run_pgbench(world: &World, tx: u64) -> Result<Run> {
    let r = pgbench(&world.tb, CLIENT, world.pg, PG_CLIENTS, tx, true)?;
    Ok(Run {
        values: vec![(THROUGHPUT, r.tps)],
        ops: r.transactions as f64,
        command: format!(
            "pgbench -h {} -p {} -U postgres -c {PG_CLIENTS} -t {tx} -n -S postgres",
            world.pg.ip(),
            world.pg.port()
        ),
    })
}

fn run_pingpong(world: &World, secs: f64) -> Result<Run> {
    let (r, command) = world.pingpong(PP_CONNS, PP_MSG, secs)?;
    Ok(Run {
        values: vec![(THROUGHPUT, r.rate)],
        ops: r.exchanges as f64,
        command,
    })
}

fn run_paced(world: &World, proto: Proto, target: SocketAddr, rate: f64, secs: f64) -> Result<Run> {
    let args = [
        "paced".to_string(),
        "--proto".into(),
        format!("{proto:?}").to_lowercase(),
        "--target".into(),
        target.to_string(),
        "--rate".into(),
        format!("{rate:.0}"),
        "--secs".into(),
        secs.to_string(),
        "--conns".into(),
        PACED_CONNS.to_string(),
    ];
    let (r, command): (PacedReport, _) = world.run_tool(CLIENT, &args)?;
    if r.errors > 0 {
        return Err(Error::Process(format!(
            "paced {proto:?}: {} connections failed",
            r.errors
        )));
    }
    Ok(Run {
        values: vec![
            (P99, r.p99_us),
            ("p50_us", r.p50_us),
            ("p999_us", r.p999_us),
            ("achieved_rate", r.achieved_rate),
        ],
        ops: r.completed as f64,
        command,
    })
}

/// The testbed, the plan and the calibrated sizes: what every run of a workload needs.
struct Bench<'a> {
    world: &'a World,
    plan: &'a Plan,
    sizes: Sizes,
}

impl Bench<'_> {
    /// Runs workload `w` once.
    fn run(&self, w: Workload) -> Result<Run> {
        let Bench { world, plan, sizes } = self;
        match w {
            Workload::RedisNp => run_redis(world, sizes.redis_np_n, 1),
            Workload::RedisP16 => run_redis(world, sizes.redis_p16_n, 16),
            Workload::Nginx1k => run_wrk(world, world.web_1k, plan.run_secs),
            Workload::Nginx64k => run_wrk(world, world.web_64k, plan.run_secs),
            Workload::Pgbench => run_pgbench(world, sizes.pg_tx),
            Workload::PingPong => run_pingpong(world, plan.run_secs),
            Workload::RedisPaced => run_paced(
                world,
                Proto::Redis,
                world.redis,
                sizes.redis_sat / 2.0,
                plan.paced_secs,
            ),
            Workload::NginxPaced => run_paced(
                world,
                Proto::Http,
                world.web_1k,
                sizes.nginx_sat / 2.0,
                plan.paced_secs,
            ),
        }
    }
}

/// Measures each saturation workload once without a probe and sizes the runs from it.
pub fn calibrate(world: &World, plan: &Plan, results: &mut Results) -> Result<Sizes> {
    let record = |results: &mut Results, w: Workload, run: &Run| {
        results.add_all(w.id(), "calibration", 0, &run.command, &run.values)
    };
    let thr = |run: &Run| run.values.first().map(|(_, v)| *v).unwrap_or(0.0);
    // Warm-up sized runs, long enough to reach steady state, short enough to stay in budget.
    let np = run_redis(world, 20_000, 1)?;
    record(results, Workload::RedisNp, &np);
    let p16 = run_redis(world, 100_000, 16)?;
    record(results, Workload::RedisP16, &p16);
    let web = run_wrk(world, world.web_1k, 1.0)?;
    record(results, Workload::Nginx1k, &web);
    let pg = run_pgbench(world, 500)?;
    record(results, Workload::Pgbench, &pg);
    // Each redis-benchmark run has two tests (get, set): n per test is half the run.
    let per_test = |rate: f64| ((rate * plan.run_secs / 2.0) as u64).max(5_000);
    let sizes = Sizes {
        redis_np_n: per_test(thr(&np)),
        redis_p16_n: per_test(thr(&p16)),
        pg_tx: ((thr(&pg) * plan.run_secs / f64::from(PG_CLIENTS)) as u64).max(200),
        redis_sat: thr(&np),
        nginx_sat: thr(&web),
    };
    info!(?sizes, "calibrated");
    Ok(sizes)
}

/// Number of progress steps [`run`] takes.
pub fn steps(plan: &Plan) -> u64 {
    1 + (plan.rounds * Condition::ALL.len() * Workload::ALL.len()) as u64
        + (ACCOUNTED_TOOLS.len() * accounted().count()) as u64
}

/// Tools whose CPU is accounted with eBPF run statistics on: netdx with each payload capture.
const ACCOUNTED_TOOLS: [Condition; 5] = [
    Condition::Netdx,
    Condition::NetdxEgress,
    Condition::NetdxIngress,
    Condition::NetdxOff,
    Condition::Bpftrace,
];

/// Workloads whose tools' CPU is accounted: the saturation ones.
fn accounted() -> impl Iterator<Item = Workload> {
    Workload::ALL.into_iter().filter(|w| !w.is_latency())
}

/// Runs every round; failures of single runs are noted and the rest goes on.
pub fn run(
    world: &World,
    plan: &Plan,
    results: &mut Results,
    progress: &mut Progress,
) -> Result<()> {
    progress.step("impact: calibration without probe");
    let bench = Bench {
        world,
        plan,
        sizes: calibrate(world, plan, results)?,
    };
    progress.done();
    // Workload by workload, the three conditions back to back (the tool started for each run):
    // a run and the `none` run it is compared with are seconds apart, not the minute a block of
    // every workload under one condition took, so the machine's drift cancels in the ratio.
    for round in 1..=plan.rounds as u32 {
        for w in Workload::ALL {
            for cond in Condition::order(round as usize - 1) {
                crate::check_stop()?;
                progress.step(&format!(
                    "impact round {round}/{}: {} under {}",
                    plan.rounds,
                    w.id(),
                    cond.name()
                ));
                let what = format!("impact round {round}: {}", w.id());
                under(cond, world, results, &what, |a, results| {
                    measure(a, cond, round, w, &bench, results)
                });
                progress.done();
            }
        }
    }
    derive(results, plan.rounds as u32);
    account(&bench, results, progress)
}

/// Starts `cond`, runs `f` under it and stops it; a failure to start, or of `f`, is noted with
/// `what` (the run) and the rest of the benchmark goes on.
fn under(
    cond: Condition,
    world: &World,
    results: &mut Results,
    what: &str,
    f: impl FnOnce(&mut Active, &mut Results) -> Result<()>,
) {
    match Active::start(cond, world) {
        Ok(mut a) => {
            if let Err(e) = f(&mut a, results) {
                results.note(format!("{what} under {} failed: {e}", cond.name()));
            }
            a.stop();
        }
        Err(e) => results.note(format!("{what}: {} could not start: {e}", cond.name())),
    }
}

/// One run per saturation workload and tool with eBPF run statistics on: the tool's CPU (its
/// programs' run time and its processes) as a share of the CPU the applications themselves
/// spent in the same run. Numerator and denominator come from one run, so the machine's speed
/// drift between runs, which moves every throughput ratio by points, cancels.
fn account(bench: &Bench<'_>, results: &mut Results, progress: &mut Progress) -> Result<()> {
    for w in accounted() {
        for cond in ACCOUNTED_TOOLS {
            crate::check_stop()?;
            progress.step(&format!(
                "impact accounting: {} under {} with bpf stats",
                w.id(),
                cond.name()
            ));
            let what = format!("impact accounting: {}", w.id());
            under(cond, bench.world, results, &what, |a, results| {
                account_run(a, cond, w, bench, results)
            });
            progress.done();
        }
    }
    // Later sections start probes on the default capture.
    bench.world.tb.write_targets()?;
    Ok(())
}

/// One accounting run of `w` under `cond`, already started as `active`.
fn account_run(
    active: &Active,
    cond: Condition,
    w: Workload,
    bench: &Bench<'_>,
    results: &mut Results,
) -> Result<()> {
    let world = bench.world;
    let stats = probe::run_stats()?;
    let progs0 = active.program_stats()?;
    let cpu0 = active.tool_cpu_ns()?;
    let pods0 = world.workload_cpu_us()?;
    let run = bench.run(w)?;
    let pods_ns = world.workload_cpu_us()?.saturating_sub(pods0) * 1_000;
    let cpu = active.tool_cpu_ns()?.saturating_sub(cpu0);
    let progs1 = active.program_stats()?;
    drop(stats);
    let deltas = progs1.since(&progs0);
    let (prog, runs) = deltas
        .iter()
        .fold((0, 0), |(t, n), (_, dt, dn)| (t + dt, n + dn));
    // The programs run in the pods' context and are charged to them: the applications' own
    // CPU is the rest.
    let own = pods_ns.saturating_sub(prog);
    if own == 0 || run.ops <= 0.0 {
        return Err(Error::Process(format!(
            "no application CPU or no operations to account ({own} ns, {} ops)",
            run.ops
        )));
    }
    let share = |ns: u64| ns as f64 / own as f64 * 100.0;
    let per_op = |n: u64| n as f64 / run.ops;
    let command = format!("{} (with {}, bpf stats on)", run.command, active.command());
    let name = format!("{}+stats", cond.name());
    results.add_all(
        w.id(),
        &name,
        0,
        &command,
        &[
            ("program_runs_per_op", per_op(runs)),
            ("program_ns_per_op", per_op(prog)),
            ("tool_process_ns_per_op", per_op(cpu)),
            ("app_cpu_ns_per_op", per_op(own)),
            ("program_cpu_share_pct", share(prog)),
            (TOOL_CPU_SHARE, share(prog + cpu)),
        ],
    );
    // Where the programs' time goes: how often each ran per request and what a run cost.
    for (prog_name, dt, dn) in deltas.into_iter().filter(|d| d.2 > 0) {
        results.add_all(
            w.id(),
            &name,
            0,
            &command,
            &[
                (&format!("runs_per_op.{prog_name}"), per_op(dn)),
                (&format!("ns_per_run.{prog_name}"), dt as f64 / dn as f64),
            ],
        );
    }
    results.key(
        &format!("cpu_share.{}.{}_pct", w.id(), cond.name()),
        share(prog + cpu),
        &command,
    );
    Ok(())
}

fn measure(
    active: &mut Active,
    cond: Condition,
    round: u32,
    w: Workload,
    bench: &Bench<'_>,
    results: &mut Results,
) -> Result<()> {
    let world = bench.world;
    let cpu0 = active.tool_cpu_ns()?;
    let pods0 = world.workload_cpu_us()?;
    let ex0 = active.exchanges()?;
    let run = bench.run(w)?;
    let cpu = active.tool_cpu_ns()?.saturating_sub(cpu0);
    let pods = world.workload_cpu_us()?.saturating_sub(pods0);
    let ex1 = active.exchanges()?;
    let setup = active.command();
    let command = if setup.is_empty() {
        run.command.clone()
    } else {
        format!("{} (with {setup})", run.command)
    };
    results.add_all(w.id(), cond.name(), round, &command, &run.values);
    if run.ops > 0.0 {
        // The CPU an operation costs: the workload's pods (the probe's programs run in their
        // context) plus the tool's own processes.
        let us = pods as f64 + cpu as f64 / 1e3;
        results.add(
            w.id(),
            cond.name(),
            round,
            CPU_PER_OP,
            us / run.ops,
            &command,
        );
    }
    if cond != Condition::None {
        // utime+stime of the tool's processes (node-probes or bpftrace) during the run.
        results.add(
            w.id(),
            cond.name(),
            round,
            "tool_cpu_ms",
            cpu as f64 / 1e6,
            &command,
        );
    }
    if let (Some(a), Some(b)) = (ex0, ex1)
        && b > a
    {
        let exchanges = (b - a) as f64;
        results.add_all(
            w.id(),
            cond.name(),
            round,
            &command,
            &[
                ("exchanges_recorded", exchanges),
                ("probe_process_cpu_ns_per_exchange", cpu as f64 / exchanges),
            ],
        );
    }
    Ok(())
}

/// Per round: loss (throughput) or increase (latency) against that round's `none` run, then
/// the headline numbers as medians over rounds.
fn derive(results: &mut Results, rounds: u32) {
    for w in Workload::ALL {
        let (metric, derived, f): (&str, &str, fn(f64, f64) -> f64) = if w.is_latency() {
            (P99, "p99_increase_pct", increase_pct)
        } else {
            (THROUGHPUT, "throughput_loss_pct", loss_pct)
        };
        for round in 1..=rounds {
            for (metric, derived, f) in [
                (metric, derived, f),
                (CPU_PER_OP, "cpu_per_op_increase_pct", increase_pct),
            ] {
                let Some(base) = results.value(w.id(), "none", round, metric) else {
                    continue;
                };
                for cond in ["netdx", "bpftrace"] {
                    if let Some(v) = results.value(w.id(), cond, round, metric) {
                        let cmd = format!("derived from {metric}: {cond} vs none of round {round}");
                        results.add(w.id(), cond, round, derived, f(base, v), &cmd);
                    }
                }
            }
        }
        for cond in ["netdx", "bpftrace"] {
            results.key_from(
                &format!("impact.{}.{cond}_cpu_per_op_increase_pct", w.id()),
                w.id(),
                cond,
                "cpu_per_op_increase_pct",
            );
            let short = if w.is_latency() {
                "p99_increase_pct"
            } else {
                "loss_pct"
            };
            results.key_from(
                &format!("impact.{}.{cond}_{short}", w.id()),
                w.id(),
                cond,
                derived,
            );
        }
    }
    let copy = |results: &mut Results, to: &str, from: &[&str]| {
        // The worse (largest) of the candidates: the target must hold for each.
        let best = from
            .iter()
            .filter_map(|k| results.keys.get(*k).cloned())
            .max_by(|a, b| a.value.total_cmp(&b.value));
        if let Some(f) = best {
            results.keys.insert(to.to_string(), f);
        }
    };
    copy(
        results,
        "redis_throughput_loss_pct",
        &["impact.redis_np.netdx_loss_pct"],
    );
    copy(
        results,
        "redis_pipelined_throughput_loss_pct",
        &["impact.redis_p16.netdx_loss_pct"],
    );
    copy(
        results,
        "nginx_throughput_loss_pct",
        &[
            "impact.nginx_1k.netdx_loss_pct",
            "impact.nginx_64k.netdx_loss_pct",
        ],
    );
    copy(
        results,
        "pgbench_throughput_loss_pct",
        &["impact.pgbench_select.netdx_loss_pct"],
    );
    copy(
        results,
        "redis_p99_increase_pct",
        &["impact.redis_paced_50pct.netdx_p99_increase_pct"],
    );
    copy(
        results,
        "nginx_p99_increase_pct",
        &["impact.nginx_paced_50pct.netdx_p99_increase_pct"],
    );
    copy(
        results,
        "bpftrace_redis_throughput_loss_pct",
        &["impact.redis_np.bpftrace_loss_pct"],
    );
    copy(
        results,
        "bpftrace_nginx_throughput_loss_pct",
        &[
            "impact.nginx_1k.bpftrace_loss_pct",
            "impact.nginx_64k.bpftrace_loss_pct",
        ],
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_rate_is_total_requests_over_total_time() {
        // 1000 requests at 100/s and 1000 at 400/s: 2000 requests in 12.5 s.
        assert!((redis_rate(1000, &[100.0, 400.0]) - 160.0).abs() < 1e-9);
    }

    #[test]
    fn losses_are_taken_within_each_round() {
        let mut r = Results::default();
        for (round, none, netdx) in [(1, 100.0, 99.0), (2, 200.0, 190.0), (3, 100.0, 98.0)] {
            r.add("redis_np", "none", round, THROUGHPUT, none, "");
            r.add("redis_np", "netdx", round, THROUGHPUT, netdx, "");
        }
        derive(&mut r, 3);
        let mut losses = r.values("redis_np", "netdx", "throughput_loss_pct");
        losses.sort_by(f64::total_cmp);
        assert_eq!(losses.len(), 3);
        assert!((losses[0] - 1.0).abs() < 1e-9 && (losses[2] - 5.0).abs() < 1e-9);
        let k = &r.keys["redis_throughput_loss_pct"];
        assert!((k.value - 2.0).abs() < 1e-9, "median of 1, 5, 2");
        assert!(!r.keys.contains_key("bpftrace_redis_throughput_loss_pct"));
    }
}

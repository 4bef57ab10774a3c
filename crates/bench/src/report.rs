//! Results: one row per measurement (results.csv), the headline numbers (summary.json) and
//! the table with targets and commands (benchmarks.md).

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::{Path, PathBuf},
};

use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::{
    Result, io_err,
    machine::Machine,
    stats::{Summary, summarize},
};

/// One measured (or derived) value.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Measurement {
    /// What ran (e.g. `redis_np`, `pipeline`).
    pub workload: String,
    /// Under which condition (`none`, `netdx`, `bpftrace`, ...).
    pub condition: String,
    /// Round (1-based; 0 for calibration).
    pub round: u32,
    /// What was measured, with its unit in the name.
    pub metric: String,
    /// The value.
    pub value: f64,
    /// The command that produced it.
    pub command: String,
}

/// A headline number for summary.json.
#[derive(Clone, Debug, Serialize)]
pub struct KeyFact {
    /// Median (or the single value).
    pub value: f64,
    /// Spread over rounds, when there were several.
    pub spread: Option<Summary>,
    /// Where it comes from.
    pub command: String,
}

/// Keys summary.json always has (null when not measured in this run).
pub const REQUIRED_KEYS: [&str; 13] = [
    "redis_throughput_loss_pct",
    "redis_pipelined_throughput_loss_pct",
    "nginx_throughput_loss_pct",
    "pgbench_throughput_loss_pct",
    "redis_p99_increase_pct",
    "nginx_p99_increase_pct",
    "bpftrace_redis_throughput_loss_pct",
    "bpftrace_nginx_throughput_loss_pct",
    "probe_cpu_ns_per_exchange",
    "pipeline_events_per_sec_per_core",
    "kernel_path_events_per_sec",
    "hook_ns",
    "probe_rss_mib_10k_conns",
];

/// A target of issue 5 on one headline number.
pub struct Target {
    /// Key in summary.json.
    pub key: &'static str,
    /// The target as written.
    pub text: &'static str,
    /// Whether a value meets it.
    pub met: fn(f64) -> bool,
}

/// The targets checked in benchmarks.md.
pub const TARGETS: [Target; 16] = [
    Target {
        key: "redis_throughput_loss_pct",
        text: "<= 3 % (non-pipelined redis)",
        met: |v| v <= 3.0,
    },
    Target {
        key: "redis_pipelined_throughput_loss_pct",
        text: "<= 1 % (aim 0.5 %)",
        met: |v| v <= 1.0,
    },
    Target {
        key: "nginx_throughput_loss_pct",
        text: "<= 1 % (worse of 1 KiB and 64 KiB)",
        met: |v| v <= 1.0,
    },
    Target {
        key: "pgbench_throughput_loss_pct",
        text: "<= 1 %",
        met: |v| v <= 1.0,
    },
    Target {
        key: "redis_p99_increase_pct",
        text: "<= +2 % at 50 % load",
        met: |v| v <= 2.0,
    },
    Target {
        key: "nginx_p99_increase_pct",
        text: "<= +2 % at 50 % load",
        met: |v| v <= 2.0,
    },
    // The same targets read from CPU accounting within one run: the least a CPU-bound
    // workload loses, which the machine's drift between runs does not move.
    Target {
        key: "cpu_share.redis_np.netdx_pct",
        text: "<= 3 % (non-pipelined redis), by CPU accounting: a floor of the loss",
        met: |v| v <= 3.0,
    },
    Target {
        key: "cpu_share.redis_p16.netdx_pct",
        text: "<= 1 % (pipelined redis), by CPU accounting: a floor of the loss",
        met: |v| v <= 1.0,
    },
    Target {
        key: "cpu_share.nginx_1k.netdx_pct",
        text: "<= 1 % (nginx 1 KiB), by CPU accounting: a floor of the loss",
        met: |v| v <= 1.0,
    },
    Target {
        key: "cpu_share.nginx_64k.netdx_pct",
        text: "<= 1 % (nginx 64 KiB), by CPU accounting: a floor of the loss",
        met: |v| v <= 1.0,
    },
    Target {
        key: "cpu_share.pgbench_select.netdx_pct",
        text: "<= 1 % (pgbench), by CPU accounting: a floor of the loss",
        met: |v| v <= 1.0,
    },
    Target {
        key: "pipeline_events_per_sec_per_core",
        text: ">= 20M records/s on one core",
        met: |v| v >= 20e6,
    },
    Target {
        key: "hook_ns_above_noop.on_sock_send",
        text: "<= 150 ns per socket operation beyond a no-op program on the same hook",
        met: |v| v <= 150.0,
    },
    Target {
        key: "hook_ns_above_noop.on_sock_recv",
        text: "<= 150 ns per socket operation beyond a no-op program on the same hook",
        met: |v| v <= 150.0,
    },
    Target {
        key: "probe_rss_mib_10k_conns",
        text: "<= 64 MiB",
        met: |v| v <= 64.0,
    },
    Target {
        key: "operator_ingest_node_windows_per_sec",
        text: ">= 5k node-windows/s on one core (1000 pods)",
        met: |v| v >= 5e3,
    },
];

/// Every row and headline number of a run.
#[derive(Default)]
pub struct Results {
    /// Measurements in the order they were taken.
    pub rows: Vec<Measurement>,
    /// Headline numbers by key (`a.b` nests `b` under `a` in summary.json).
    pub keys: BTreeMap<String, KeyFact>,
    /// What could not be measured, and other remarks for the reader.
    pub notes: Vec<String>,
}

impl Results {
    /// Records one value.
    pub fn add(
        &mut self,
        workload: &str,
        condition: &str,
        round: u32,
        metric: &str,
        value: f64,
        command: &str,
    ) {
        self.rows.push(Measurement {
            workload: workload.into(),
            condition: condition.into(),
            round,
            metric: metric.into(),
            value,
            command: command.into(),
        });
    }

    /// Records several metrics of one run.
    pub fn add_all(
        &mut self,
        workload: &str,
        condition: &str,
        round: u32,
        command: &str,
        values: &[(&str, f64)],
    ) {
        for (metric, value) in values {
            self.add(workload, condition, round, metric, *value, command);
        }
    }

    /// Values of one (workload, condition, metric) over rounds.
    pub fn values(&self, workload: &str, condition: &str, metric: &str) -> Vec<f64> {
        self.rows
            .iter()
            .filter(|r| r.workload == workload && r.condition == condition && r.metric == metric)
            .map(|r| r.value)
            .collect()
    }

    /// Value of one (workload, condition, metric) in one round.
    pub fn value(&self, workload: &str, condition: &str, round: u32, metric: &str) -> Option<f64> {
        self.rows
            .iter()
            .find(|r| {
                r.workload == workload
                    && r.condition == condition
                    && r.round == round
                    && r.metric == metric
            })
            .map(|r| r.value)
    }

    /// Sets a headline number to the median of one (workload, condition, metric).
    pub fn key_from(&mut self, key: &str, workload: &str, condition: &str, metric: &str) {
        let values = self.values(workload, condition, metric);
        if let Some(s) = summarize(&values) {
            let command = self
                .rows
                .iter()
                .find(|r| r.workload == workload && r.condition == condition && r.metric == metric)
                .map(|r| r.command.clone())
                .unwrap_or_default();
            self.keys.insert(
                key.into(),
                KeyFact {
                    value: s.median,
                    spread: (s.n > 1).then_some(s),
                    command,
                },
            );
        }
    }

    /// Sets a headline number directly.
    pub fn key(&mut self, key: &str, value: f64, command: &str) {
        self.keys.insert(
            key.into(),
            KeyFact {
                value,
                spread: None,
                command: command.into(),
            },
        );
    }

    /// Adds a remark for the reader.
    pub fn note(&mut self, text: impl Into<String>) {
        let t = text.into();
        tracing::warn!("{t}");
        self.notes.push(t);
    }
}

/// Quotes a CSV field when it needs it (RFC 4180).
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The rows as CSV with a header.
pub fn to_csv(rows: &[Measurement]) -> String {
    let mut out = String::from("workload,condition,round,metric,value,command\n");
    for r in rows {
        let _ = writeln!(
            out,
            "{},{},{},{},{},{}",
            csv_field(&r.workload),
            csv_field(&r.condition),
            r.round,
            csv_field(&r.metric),
            r.value,
            csv_field(&r.command)
        );
    }
    out
}

fn insert_path(obj: &mut Map<String, Value>, key: &str, v: Value) {
    match key.split_once('.') {
        Some((head, rest)) => {
            let child = obj
                .entry(head.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            if !child.is_object() {
                *child = Value::Object(Map::new());
            }
            if let Value::Object(m) = child {
                insert_path(m, rest, v);
            }
        }
        None => {
            obj.insert(key.to_string(), v);
        }
    }
}

/// Run-level facts that go into summary.json and the page header.
pub struct RunInfo {
    /// "full", "quick" or "tiny".
    pub mode: String,
    /// Impact rounds.
    pub rounds: usize,
    /// Sections run.
    pub sections: Vec<String>,
    /// The command line of the run.
    pub command: String,
    /// UTC time the run finished, RFC 3339.
    pub measured_at: String,
    /// Machine description.
    pub machine: Machine,
}

/// summary.json: the required keys (null when not measured), every other headline number,
/// their spreads, and the run and machine description.
pub fn summary(results: &Results, info: &RunInfo) -> Value {
    let mut obj = Map::new();
    for k in REQUIRED_KEYS {
        obj.insert(k.to_string(), Value::Null);
    }
    let mut spreads = Map::new();
    for (k, f) in &results.keys {
        insert_path(&mut obj, k, json!(f.value));
        if let Some(s) = &f.spread {
            spreads.insert(k.clone(), json!(s));
        }
    }
    obj.insert("spread".into(), Value::Object(spreads));
    obj.insert("measured_at".into(), json!(info.measured_at));
    obj.insert("machine".into(), json!(info.machine));
    obj.insert("mode".into(), json!(info.mode));
    obj.insert("rounds".into(), json!(info.rounds));
    obj.insert("sections".into(), json!(info.sections));
    obj.insert("command".into(), json!(info.command));
    obj.insert("notes".into(), json!(results.notes));
    Value::Object(obj)
}

fn fmt_num(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.0}", v)
    } else if a >= 100.0 {
        format!("{:.1}", v)
    } else {
        format!("{:.2}", v)
    }
}

fn fmt_spread(s: &Summary) -> String {
    if s.n > 1 {
        format!("{} – {} (n={})", fmt_num(s.min), fmt_num(s.max), s.n)
    } else {
        "n=1".into()
    }
}

/// The CPU each workload spends per operation under each tool, against the same round's `none`.
fn cpu_per_op_table(md: &mut String, results: &Results) {
    let cell = |w: &str, c: &str| match results
        .keys
        .get(&format!("impact.{w}.{c}_cpu_per_op_increase_pct"))
    {
        Some(f) => format!(
            "{} % ({})",
            fmt_num(f.value),
            f.spread
                .as_ref()
                .map(fmt_spread)
                .unwrap_or_else(|| "n=1".into())
        ),
        None => "–".into(),
    };
    let workloads: Vec<&str> = results
        .keys
        .keys()
        .filter_map(|k| {
            k.strip_prefix("impact.")?
                .strip_suffix(".netdx_cpu_per_op_increase_pct")
        })
        .collect();
    let floor = results.keys.get("hook_cost_pct_of_workload_cpu");
    if workloads.is_empty() && floor.is_none() {
        return;
    }
    let _ = writeln!(md, "\n## CPU per operation\n");
    if let Some(f) = floor {
        let _ = writeln!(
            md,
            "In the hooks section's fixed non-pipelined redis workload, netdx's programs take \
             {} % of the workload's own CPU beyond what empty programs on the same hooks take \
             (`hook_cost_pct_of_workload_cpu`: bpf run statistics over the pods' cgroup CPU). \
             For a CPU-bound workload that is the least throughput it can lose, whatever the \
             noise of the throughput runs.\n",
            fmt_num(f.value)
        );
    }
    if workloads.is_empty() {
        return;
    }
    let _ = writeln!(
        md,
        "CPU time per request (transaction, round trip) of the workload's pods, where the \
         programs of either tool run, plus the tool's own processes; its increase over the \
         same round's `none` run, median (spread) over rounds. Unlike throughput at \
         saturation, it does not move with how client and server happen to be scheduled, \
         only with the work done per request and the CPU's speed.\n"
    );
    let _ = writeln!(md, "| Workload | netdx | bpftrace |\n|---|---|---|");
    for w in workloads {
        let _ = writeln!(
            md,
            "| `{w}` | {} | {} |",
            cell(w, "netdx"),
            cell(w, "bpftrace")
        );
    }
}

/// Target rows comparing netdx with bpftrace on every workload with both keys
/// `{prefix}{workload}.{tool}{suffix}`.
fn half_of_bpftrace_rows(
    md: &mut String,
    results: &Results,
    prefix: &str,
    suffix: &str,
    what: &str,
) {
    let netdx_suffix = format!(".netdx{suffix}");
    let workloads: Vec<&str> = results
        .keys
        .keys()
        .filter_map(|k| k.strip_prefix(prefix)?.strip_suffix(netdx_suffix.as_str()))
        .collect();
    for w in workloads {
        let get = |c: &str| {
            results
                .keys
                .get(&format!("{prefix}{w}.{c}{suffix}"))
                .map(|f| f.value)
        };
        if let (Some(n), Some(b)) = (get("netdx"), get("bpftrace")) {
            let met = if n <= b / 2.0 { "yes" } else { "**no**" };
            let _ = writeln!(
                md,
                "| `{w}`: netdx {what} vs bpftrace | {} % vs {} % | | netdx <= half of bpftrace | {met} |",
                fmt_num(n),
                fmt_num(b)
            );
        }
    }
}

/// Each tool's CPU as a share of the applications' own, from the accounting runs.
fn cpu_share_table(md: &mut String, results: &Results) {
    let workloads: Vec<&str> = results
        .keys
        .keys()
        .filter_map(|k| k.strip_prefix("cpu_share.")?.strip_suffix(".netdx_pct"))
        .collect();
    if workloads.is_empty() {
        return;
    }
    let _ = writeln!(md, "\n## Tool CPU by accounting\n");
    let _ = writeln!(
        md,
        "One run per workload and tool with eBPF run statistics on: the tool's programs' run \
         time plus its processes' CPU, as a share of the CPU the workload's pods spent \
         themselves in the same run (their cgroup CPU less the programs' run time). Both come \
         from one run, so it does not move with the machine's speed between runs as the \
         throughput ratios do. It is what a CPU-bound workload loses at least; it leaves out \
         the hooks' dispatch and the caches the programs disturb, and it counts the \
         statistics' own clock reads (about 55-60 ns per program run, see the hooks' no-op \
         programs). Program runs per operation: how many times a hook fired per request. \
         netdx runs with each payload capture (`spec.payloadCapture`): Both (the default), \
         Egress, Ingress and Off.\n"
    );
    let _ = writeln!(
        md,
        "| Workload | netdx | Egress | Ingress | Off | bpftrace | runs/op: netdx, Egress, \
         Ingress, Off, bpftrace | netdx / bpftrace | Off / bpftrace |\n\
         |---|---|---|---|---|---|---|---|---|"
    );
    let value = |w: &str, c: &str| {
        results
            .keys
            .get(&format!("cpu_share.{w}.{c}_pct"))
            .map(|f| f.value)
    };
    let share = |w: &str, c: &str| {
        value(w, c)
            .map(|v| format!("{} %", fmt_num(v)))
            .unwrap_or_else(|| "–".into())
    };
    let runs = |w: &str, c: &str| {
        results
            .value(w, &format!("{c}+stats"), 0, "program_runs_per_op")
            .map(fmt_num)
            .unwrap_or_else(|| "–".into())
    };
    let ratio = |w: &str, c: &str| match (value(w, c), value(w, "bpftrace")) {
        (Some(n), Some(b)) if b > 0.0 => format!("{:.2}", n / b),
        _ => "–".into(),
    };
    const TOOLS: [&str; 5] = [
        "netdx",
        "netdx_egress",
        "netdx_ingress",
        "netdx_off",
        "bpftrace",
    ];
    for w in workloads {
        let shares: Vec<String> = TOOLS.iter().map(|c| share(w, c)).collect();
        let runs: Vec<String> = TOOLS.iter().map(|c| runs(w, c)).collect();
        let _ = writeln!(
            md,
            "| `{w}` | {} | {} | {} | {} |",
            shares.join(" | "),
            runs.join(", "),
            ratio(w, "netdx"),
            ratio(w, "netdx_off"),
        );
    }
}

/// benchmarks.md: how to reproduce, the targets, every measurement with its command, notes.
pub fn markdown(results: &Results, info: &RunInfo, plots: &[PathBuf], doc_dir: &Path) -> String {
    let mut md = String::new();
    let m = &info.machine;
    let _ = writeln!(md, "# Benchmarks\n");
    let _ = writeln!(
        md,
        "Generated by `{}` at {} ({} mode, {} impact round{}). Do not edit by hand.\n",
        info.command,
        info.measured_at,
        info.mode,
        info.rounds,
        if info.rounds == 1 { "" } else { "s" }
    );
    if info.mode != "full" {
        let _ = writeln!(
            md,
            "> **{} mode:** one short round, possibly on a busy machine, so a ratio here can be \
             off by tens of percent. These numbers show that the harness works; they are not \
             results. Run `make bench` on a quiet machine for those.\n",
            info.mode
        );
    }
    let _ = writeln!(
        md,
        "Machine: {} × {} ({} MHz), {} MiB, `{}`.\n",
        m.cpus,
        m.cpu_model,
        m.cpu_mhz
            .map(|v| format!("{v:.0}"))
            .unwrap_or_else(|| "?".into()),
        m.mem_total_mib
            .map(|v| v.to_string())
            .unwrap_or_else(|| "?".into()),
        m.uname
    );
    let _ = writeln!(md, "## Reproduce\n");
    let _ = writeln!(
        md,
        "```sh\nmake bench        # full: {{none, netdx, bpftrace}} x 5 rounds and every section (< 20 min on 2 cores)\n\
         make bench-quick  # one round, short runs (< 3 min)\n\
         ./target/release/netdx-bench --only pipeline,ingest   # any subset: impact,hooks,kernel,scale,pipeline,ingest\n```\n"
    );
    let _ = writeln!(
        md,
        "Results: `results.csv` (one row per measurement: workload, condition, round, metric, \
         value, command), `summary.json` (headline numbers with their spread), and the plots \
         below, all in [`{0}`]({0}).\n",
        doc_dir.display()
    );
    md.push_str(&method());
    let _ = writeln!(md, "## Targets\n");
    let _ = writeln!(
        md,
        "| Number | Measured (median) | Spread (min – max) | Target | Met |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|");
    for t in &TARGETS {
        let (v, spread, met) = match results.keys.get(t.key) {
            Some(f) => (
                fmt_num(f.value),
                f.spread
                    .as_ref()
                    .map(fmt_spread)
                    .unwrap_or_else(|| "n=1".into()),
                if (t.met)(f.value) { "yes" } else { "**no**" }.to_string(),
            ),
            None => ("not measured".into(), String::new(), "–".into()),
        };
        let _ = writeln!(md, "| `{}` | {v} | {spread} | {} | {met} |", t.key, t.text);
    }
    // netdx at most half of bpftrace, workload by workload: by throughput loss, and by CPU
    // accounting.
    half_of_bpftrace_rows(&mut md, results, "impact.", "_loss_pct", "loss");
    half_of_bpftrace_rows(&mut md, results, "cpu_share.", "_pct", "CPU, by accounting");
    cpu_per_op_table(&mut md, results);
    cpu_share_table(&mut md, results);
    let _ = writeln!(md, "\n## Every measurement\n");
    let _ = writeln!(
        md,
        "Medians over rounds; ratios (`*_pct`) are computed within each round against the \
         `none` run of the same round, then the median is taken.\n"
    );
    let _ = writeln!(
        md,
        "| Workload | Condition | Metric | Median | Spread (min – max) | Command |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|");
    let mut groups: Vec<(String, String, String)> = Vec::new();
    for r in &results.rows {
        let g = (r.workload.clone(), r.condition.clone(), r.metric.clone());
        if !groups.contains(&g) {
            groups.push(g);
        }
    }
    for (w, c, metric) in groups {
        let rows: Vec<&Measurement> = results
            .rows
            .iter()
            .filter(|r| r.workload == w && r.condition == c && r.metric == metric)
            .collect();
        let values: Vec<f64> = rows.iter().map(|r| r.value).collect();
        let Some(s) = summarize(&values) else {
            continue;
        };
        let cmd = rows
            .first()
            .map(|r| r.command.replace('|', "\\|"))
            .unwrap_or_default();
        let _ = writeln!(
            md,
            "| {w} | {c} | {metric} | {} | {} | `{cmd}` |",
            fmt_num(s.median),
            fmt_spread(&s)
        );
    }
    if !plots.is_empty() {
        let _ = writeln!(md, "\n## Plots\n");
        for p in plots {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let _ = writeln!(md, "![{name}]({}/{name})\n", doc_dir.display());
        }
    }
    if !results.notes.is_empty() {
        let _ = writeln!(md, "## Notes from this run\n");
        for n in &results.notes {
            let _ = writeln!(md, "- {n}");
        }
    }
    md
}

/// How the numbers are taken.
fn method() -> String {
    let text = "## Method\n\n\
- **Cluster**: the testbed (`crates/testbed`): the load generators in pod `client` and the \
servers (redis-server, nginx with 1 KiB and 64 KiB bodies, PostgreSQL), each in its own pod and \
network namespace, on one simulated node; traffic between them crosses the node's bridge as between \
pods of one real node. Every pod is watched. One node because the simulated nodes share one \
kernel: a real node runs one node-probe, but with a probe per simulated node every socket hook \
would run each probe's program and the workload would pay the hook cost twice.\n\
- **Conditions**: `none`; `netdx`: the release `node-probe` binary of that node, \
`--window-secs 10`, started and healthy (/healthz) before the run and stopped (SIGTERM) after; \
`bpftrace`: one bpftrace 0.17 process on `tracepoint:sock:sock_send_length` and \
`sock_recv_length`, filtered on the watched pods' cgroup ids, counting per pod and socket the \
bytes each way and the exchanges (a new exchange when a send follows a receive), measured once it \
printed `Attaching 2 probes`. Within each round, workload by workload, the three conditions run \
back to back (the tool started before and stopped after each run), rotated from round to round so \
each is first, second and last equally often; every ratio is taken against the `none` run of the \
same workload and round, seconds away, and the table gives the median and the spread over rounds.\n\
- **Workloads**: redis-benchmark GET/SET with 50 clients, non-pipelined and `-P 16`; wrk (one \
thread, 32 keep-alive connections) against nginx; pgbench select-only with 8 clients; a ping-pong \
of 16-byte writes on two TCP connections over one pod's loopback (`netdx-bench pingpong`, both \
ends watched). Request counts come from a calibration run without a probe so each run lasts \
about the same time.\n\
- **Latency at 50 % load**: `netdx-bench paced`, an open-loop client (16 connections, requests \
dealt round-robin from one global schedule at half the calibrated saturation throughput); latency \
runs from each request's scheduled send time to its last reply byte, so a stall counts against \
every request that should have left meanwhile (no coordinated omission). It includes the \
client's timer wake-up, the same in every condition.\n\
- **CPU per operation**: in every impact run, the CPU time of the workload's pods (cgroup v2 \
`cpu.stat` `usage_usec`; the programs of either tool run in the pods' context and are charged to \
them) plus the tool's processes, divided by the requests the run completed; compared with the \
same round's `none` run.\n\
- **Tool CPU by accounting**: after the rounds, one more run of each saturation workload per \
tool with eBPF run statistics on; the tool's program run time and process CPU over the pods' own \
CPU in that run (section below).\n\
- **Probe CPU**: on-CPU time of the node-probe processes' threads (/proc/<pid>/task/*/schedstat, \
in ns) plus the run time of \
its programs from eBPF run statistics (BPF_ENABLE_STATS, held only during the measurement, so \
`kernel.bpf_stats_enabled` returns to what it was even if the harness dies), per exchange \
recorded (each request is recorded at both ends).\n\
- **Hooks**: the same fixed redis workload under the real programs and under `node-probe \
--programs noop` (same hook points, empty programs) when that build has it; run_time_ns / run_cnt \
per program from /proc/<pid>/fdinfo of the probe. Run time includes the statistics' own two \
clock reads per run, so the no-op programs' time is mostly that; `hook_ns_above_noop` is what a \
program costs beyond an empty one. Neither includes the tracepoint's dispatch, which the \
impact runs see.\n\
- **Collection**: `pipeline` feeds synthetic records, laid out as the kernel writes them \
(exchanges in batches of 16, other records one per ring item), through node-probe's \
`records::decode_each` and `windows::Aggregator` on one thread, closing a window every 2^20 \
records (the ring-buffer read itself, ~13 ns per item here, is not included), per second of \
that thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`, so time it spent descheduled does not \
count); `kernel_flood` \
floods ping-pong on 4 connections in a watched pod (the pod's node-probe at `--window-secs 1`, \
so its totals are published soon after) and compares the probe's kernel counters \
(`ringbuf_full`, records written) with the records its user space read; a second flood with \
run statistics on says how much CPU the programs and the probe process took.\n\
- **Scale**: a client pod on node-0 holds N connections (one exchange each) to a server pod on \
node-1 (one client and one server process per server port, to stay under the open-file \
limit); each node's probe (`--window-secs 2`, two windows after the last connection opened) \
reports VmRSS, VmHWM and the memlock of its map fds (socket-local storage is charged to the \
sockets, not to the map, so map memory does not grow with connections). Operator ingest: \
synthetic window reports of a cluster of N pods (30 per node, 2 calls per pod) decoded from \
the binary encoding node-probes push (`netdx_api::wire`) and passed, one node's report at a time, to the operator library's `Ingest::receive` (filing, \
join, diagnosis) on one thread, with the operator binary's allocator (mimalloc), per second \
of that thread's CPU time.\n\n";
    format!(
        "{text}The node-probe command of the `netdx` condition, per node: `node-probe --node <node> \
         --targets <testbed>/targets.json --listen 127.0.0.1:<free port> --node-netns \
         /run/netns/<node netns> --window-secs 10`. The bpftrace script (the filter lists the \
         watched pods' cgroup ids):\n\n```\n{}```\n\n",
        crate::bpftrace::script_with_filter("cgroup == <pod 1> || cgroup == <pod 2> || ...")
    )
}

/// Writes `text` to `path`, creating the directory.
pub fn write(path: &Path, text: &str) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io_err(dir.display().to_string()))?;
    }
    std::fs::write(path, text).map_err(io_err(path.display().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny run of one section.
    fn tiny_run(section: &str) -> RunInfo {
        RunInfo {
            mode: "tiny".into(),
            rounds: 1,
            sections: vec![section.into()],
            command: "netdx-bench".into(),
            measured_at: "2026-01-01T00:00:00Z".into(),
            machine: Machine::default(),
        }
    }

    #[test]
    fn csv_quotes_fields_that_need_it() {
        let rows = vec![Measurement {
            workload: "redis_np".into(),
            condition: "none".into(),
            round: 1,
            metric: "throughput_ops".into(),
            value: 1.5,
            command: "redis-benchmark -t get,set -e 'say \"hi\"'".into(),
        }];
        assert_eq!(
            to_csv(&rows),
            "workload,condition,round,metric,value,command\n\
             redis_np,none,1,throughput_ops,1.5,\"redis-benchmark -t get,set -e 'say \"\"hi\"\"'\"\n"
        );
    }

    #[test]
    fn summary_has_every_required_key_and_nests_dotted_ones() {
        let mut r = Results::default();
        r.key("hook_ns.on_sock_send", 120.0, "x");
        r.key("pipeline_events_per_sec_per_core", 1e6, "y");
        let info = tiny_run("pipeline");
        let s = summary(&r, &info);
        for k in REQUIRED_KEYS {
            assert!(s.get(k).is_some(), "{k}");
        }
        assert_eq!(s["hook_ns"]["on_sock_send"], json!(120.0));
        assert_eq!(s["redis_throughput_loss_pct"], Value::Null);
        assert!(
            markdown(&r, &info, &[], Path::new("docs/benchmarks"))
                .contains("| `pipeline_events_per_sec_per_core` | 1.00M |")
        );
    }

    #[test]
    fn cpu_share_table_lists_each_accounted_workload_with_its_runs_per_op() {
        let mut r = Results::default();
        r.key("cpu_share.redis_np.netdx_pct", 6.5, "x");
        r.key("cpu_share.redis_np.bpftrace_pct", 4.2, "y");
        r.key("cpu_share.redis_np.netdx_off_pct", 3.0, "z");
        r.add(
            "redis_np",
            "netdx+stats",
            0,
            "program_runs_per_op",
            8.0,
            "x",
        );
        let mut md = String::new();
        cpu_share_table(&mut md, &r);
        assert!(
            md.contains(
                "| `redis_np` | 6.50 % | – | – | 3.00 % | 4.20 % | 8.00, –, –, –, – | 1.55 | 0.71 |"
            ),
            "{md}"
        );
        let mut empty = String::new();
        cpu_share_table(&mut empty, &Results::default());
        assert!(empty.is_empty());
    }

    #[test]
    fn accounting_targets_and_bpftrace_comparison_are_listed() {
        let mut r = Results::default();
        r.key("cpu_share.redis_np.netdx_pct", 6.5, "x");
        r.key("cpu_share.redis_np.bpftrace_pct", 4.2, "y");
        let info = tiny_run("impact");
        let md = markdown(&r, &info, &[], Path::new("docs/benchmarks"));
        assert!(
            md.contains("| `cpu_share.redis_np.netdx_pct` | 6.50 | n=1 |"),
            "{md}"
        );
        assert!(md.contains(
            "| `redis_np`: netdx CPU, by accounting vs bpftrace | 6.50 % vs 4.20 % | | \
             netdx <= half of bpftrace | **no** |"
        ));
    }
}

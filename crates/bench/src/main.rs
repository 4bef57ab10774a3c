//! netdx-bench: runs the benchmark sections and writes results.csv, summary.json, the plots
//! and benchmarks.md. Hidden subcommands are the small tools it runs inside testbed pods.
use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use netdx_bench::{
    hold, hooks, impact, ingest, kernel_path, machine,
    paced::{self, PacedConfig, Proto},
    pingpong, pipeline,
    plan::{Plan, Section},
    plots, probe,
    progress::Progress,
    report::{self, Results, RunInfo},
    scale,
    world::World,
};
use tracing_subscriber::EnvFilter;

/// netdx benchmarks: application impact next to bpftrace, hook costs, collection throughput,
/// scale and memory.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    tool: Option<Tool>,
    /// One short round (under 3 minutes) instead of the full benchmark.
    #[arg(long)]
    quick: bool,
    /// Tiny inputs: only checks that the harness runs end to end.
    #[arg(long, hide = true)]
    tiny: bool,
    /// Sections to run, comma-separated: impact,hooks,kernel,scale,pipeline,ingest (all by default).
    #[arg(long, value_delimiter = ',')]
    only: Vec<Section>,
    /// Impact rounds (default: 5, or 1 with --quick).
    #[arg(long)]
    rounds: Option<usize>,
    /// Directory for results.csv, summary.json and the plots.
    #[arg(long, default_value = "docs/benchmarks")]
    out: PathBuf,
    /// The Markdown page with the results table.
    #[arg(long, default_value = "docs/benchmarks.md")]
    doc: PathBuf,
}

/// Tools run inside testbed pods (hidden).
#[derive(Debug, Subcommand)]
enum Tool {
    /// Open-loop paced client; prints a JSON report.
    #[command(hide = true)]
    Paced {
        #[arg(long, value_enum)]
        proto: Proto,
        #[arg(long)]
        target: SocketAddr,
        #[arg(long)]
        rate: f64,
        #[arg(long)]
        secs: f64,
        #[arg(long, default_value_t = 16)]
        conns: usize,
    },
    /// Echo server for fixed-size messages.
    #[command(hide = true)]
    PingpongServer {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long, default_value_t = 16)]
        msg: usize,
    },
    /// Ping-pong client; prints a JSON report.
    #[command(hide = true)]
    Pingpong {
        #[arg(long)]
        target: SocketAddr,
        #[arg(long, default_value_t = 1)]
        conns: usize,
        #[arg(long, default_value_t = 16)]
        msg: usize,
        #[arg(long)]
        secs: f64,
    },
    /// Accepts connections, answers one message on each and keeps them.
    #[command(hide = true)]
    HoldServer {
        #[arg(long)]
        ip: IpAddr,
        #[arg(long, value_delimiter = ',')]
        ports: Vec<u16>,
    },
    /// Opens connections, one exchange each, prints `held N` and keeps them until stopped.
    #[command(hide = true)]
    HoldClient {
        #[arg(long)]
        ip: IpAddr,
        #[arg(long, value_delimiter = ',')]
        ports: Vec<u16>,
        #[arg(long)]
        conns: usize,
    },
}

/// Open files a process holding 50k connections needs, with room to spare.
const NOFILE: u64 = 200_000;

fn run_tool(tool: Tool) -> anyhow::Result<()> {
    match tool {
        Tool::Paced {
            proto,
            target,
            rate,
            secs,
            conns,
        } => {
            let r = paced::run(&PacedConfig {
                proto,
                target,
                rate,
                secs,
                conns,
            })?;
            println!("{}", serde_json::to_string(&r)?);
        }
        Tool::PingpongServer { listen, msg } => pingpong::serve(listen, msg)?,
        Tool::Pingpong {
            target,
            conns,
            msg,
            secs,
        } => {
            let r = pingpong::client(target, conns, msg, secs)?;
            println!("{}", serde_json::to_string(&r)?);
        }
        Tool::HoldServer { ip, ports } => {
            netdx_bench::raise_nofile(NOFILE)?;
            hold::serve(ip, &ports)?;
        }
        Tool::HoldClient { ip, ports, conns } => {
            let limit = netdx_bench::raise_nofile(NOFILE)?;
            if conns as u64 + 64 > limit {
                bail!(
                    "{conns} connections need more open files than RLIMIT_NOFILE allows ({limit}); run several clients"
                );
            }
            hold::client_main(ip, &ports, conns)?;
        }
    }
    Ok(())
}

/// Notes what else is running: a busy machine or other tools' eBPF programs on the socket hooks
/// make every ratio unreliable.
fn preflight(needs_kernel: bool, results: &mut Results) {
    if let Some(busy) = machine::busy_pct(std::time::Duration::from_secs(1))
        && busy > 10.0
    {
        results.note(format!(
            "the machine was {busy:.0} % busy before the benchmark started: other work competes \
             with every measurement"
        ));
    }
    if needs_kernel {
        let mut others = probe::socket_hook_programs();
        if !others.is_empty() {
            others.sort();
            others.dedup();
            results.note(format!(
                "eBPF programs of other tools were attached before the benchmark started ({}): \
                 they run on socket calls in every condition, `none` included",
                others.join(", ")
            ));
        }
    }
}

/// `out` as seen from the directory of `doc` (for image links in the page).
fn relative_to_doc(out: &Path, doc: &Path) -> PathBuf {
    let base = doc.parent().unwrap_or(Path::new(""));
    match out.strip_prefix(base) {
        Ok(p) if p.as_os_str().is_empty() => PathBuf::from("."),
        Ok(p) => p.to_path_buf(),
        Err(_) => out.to_path_buf(),
    }
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    if let Some(tool) = cli.tool {
        return run_tool(tool);
    }
    let mut plan = if cli.tiny {
        Plan::tiny()
    } else if cli.quick {
        Plan::quick()
    } else {
        Plan::full()
    };
    if let Some(r) = cli.rounds {
        plan.rounds = r.max(1);
    }
    let sections: Vec<Section> = Section::ALL
        .into_iter()
        .filter(|s| cli.only.is_empty() || cli.only.contains(s))
        .collect();
    let needs_kernel = sections.iter().any(|s| s.needs_kernel());
    // SAFETY: geteuid has no preconditions.
    if needs_kernel && unsafe { libc::geteuid() } != 0 {
        bail!(
            "sections {:?} load eBPF and build namespaces: run as root (or use --only pipeline,ingest)",
            sections
        );
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command_line = std::iter::once("netdx-bench".to_string())
        .chain(args)
        .collect::<Vec<_>>()
        .join(" ");
    let harness = format!(
        "netdx-bench{}",
        match plan.mode {
            "full" => "",
            "quick" => " --quick",
            _ => " --tiny",
        }
    );
    // Ctrl-C reaches the tools in pods too (same process group), so the step in progress
    // fails; stopping between steps lets Drop remove the testbed and stop every process.
    ctrlc::set_handler(netdx_bench::request_stop).context("installing the Ctrl-C handler")?;
    let total: u64 = sections
        .iter()
        .map(|s| match s {
            Section::Impact => impact::steps(&plan),
            Section::Hooks => hooks::STEPS,
            Section::Kernel => kernel_path::STEPS,
            Section::Scale => scale::steps(&plan.scale_conns),
            Section::Pipeline | Section::Ingest => 1,
        })
        .sum::<u64>()
        + u64::from(needs_kernel);
    let mut results = Results::default();
    preflight(needs_kernel, &mut results);
    let mut progress = Progress::new(total);
    if needs_kernel {
        progress.step("building the testbed and starting servers");
        let world = World::up().context("building the benchmark testbed")?;
        progress.done();
        for s in sections.iter().filter(|s| s.needs_kernel()) {
            netdx_bench::check_stop()?;
            let r = match s {
                Section::Impact => impact::run(&world, &plan, &mut results, &mut progress),
                Section::Hooks => {
                    hooks::run(&world, plan.hook_requests, &mut results, &mut progress)
                }
                Section::Kernel => {
                    kernel_path::run(&world, plan.flood_secs, &mut results, &mut progress)
                }
                Section::Scale => {
                    scale::run(&world, &plan.scale_conns, &mut results, &mut progress)
                }
                Section::Pipeline | Section::Ingest => Ok(()),
            };
            match r {
                Err(netdx_bench::Error::Interrupted) => bail!("interrupted"),
                Err(e) => results.note(format!("section {s} stopped: {e}")),
                Ok(()) => {}
            }
        }
        // The world (testbed, servers, probes) is gone before the CPU-bound sections run.
    }
    for s in sections.iter().filter(|s| !s.needs_kernel()) {
        netdx_bench::check_stop()?;
        progress.step(&format!("{s}"));
        let command = format!("{harness} --only {s}");
        let r = match s {
            Section::Pipeline => pipeline::run(
                plan.pipeline_records,
                plan.pipeline_secs,
                &command,
                &mut results,
            )
            .map(|_| ()),
            Section::Ingest => {
                ingest::run(&plan.ingest_pods, plan.ingest_secs, &command, &mut results).map(|_| ())
            }
            _ => Ok(()),
        };
        if let Err(e) = r {
            results.note(format!("section {s} stopped: {e}"));
        }
        progress.done();
    }
    progress.finish();
    std::fs::create_dir_all(&cli.out).with_context(|| format!("creating {}", cli.out.display()))?;
    let info = RunInfo {
        mode: plan.mode.to_string(),
        rounds: plan.rounds,
        sections: sections.iter().map(|s| s.name().to_string()).collect(),
        command: command_line,
        measured_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        machine: machine::describe(),
    };
    report::write(&cli.out.join("results.csv"), &report::to_csv(&results.rows))?;
    let plots = match plots::draw_all(&results, &cli.out) {
        Ok(p) => p,
        Err(e) => {
            results.note(format!("plots: {e}"));
            Vec::new()
        }
    };
    report::write(
        &cli.out.join("summary.json"),
        &serde_json::to_string_pretty(&report::summary(&results, &info))?,
    )?;
    let md = report::markdown(
        &results,
        &info,
        &plots,
        &relative_to_doc(&cli.out, &cli.doc),
    );
    report::write(&cli.doc, &md)?;
    eprintln!(
        "wrote {} measurements to {}, summary.json, {} plots and {}",
        results.rows.len(),
        cli.out.join("results.csv").display(),
        plots.len(),
        cli.doc.display()
    );
    Ok(())
}

/// The operator binary's allocator, so the ingest section measures what the operator does
/// (window ingest allocates per edge). The pipeline section allocates only at window close.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

//! netdx command line.

use std::{
    path::PathBuf,
    sync::{Arc, atomic::AtomicBool},
    time::Duration,
};

use clap::{Parser, Subcommand};
use netdx_api::targets::PayloadCapture;
use tracing_subscriber::EnvFilter;

/// netdx: why is this pod's network slow or failing, and whose fault is it?
#[derive(Parser)]
#[command(version, about)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the local testbed end to end with live per-edge numbers (root, no cluster).
    Demo {
        /// Window length in seconds.
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=600))]
        window_secs: u64,
        /// Windows each fault stays in place.
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(2..=100))]
        fault_windows: u32,
        /// Workload: ndxe (a protocol no classifier knows), redis or http.
        #[arg(long, default_value = "ndxe")]
        workload: String,
        /// Diagnosis model (falls back to the rule baseline when missing).
        #[arg(long, default_value = "operator/model/model.json")]
        model: PathBuf,
        /// Output directory for windows and DiagnosisReports.
        #[arg(long, default_value = "out/demo")]
        out: PathBuf,
        /// Plain text output even on a terminal.
        #[arg(long)]
        plain: bool,
        /// Which message heads the probes copy: Both, Egress, Ingress or Off (as the
        /// NetworkObservation's spec.payloadCapture).
        #[arg(long, default_value = "Both")]
        payload_capture: PayloadCapture,
    },
    /// Run the labelled fault scenarios through the real probes into a dataset directory
    /// (resumable: scenarios already written are skipped).
    Dataset {
        /// Output directory (one JSON-lines file per scenario).
        #[arg(long, default_value = "data/dataset")]
        out: PathBuf,
        /// Only scenarios whose id contains this.
        #[arg(long)]
        only: Option<String>,
        /// Window length in seconds.
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=60))]
        window_secs: u64,
    },
    /// Diagnose saved window summaries (e.g. out/demo/windows.json) or running node-probes.
    Diagnose {
        /// A JSON file of window reports.
        #[arg(long, conflicts_with = "probe")]
        windows: Option<PathBuf>,
        /// node-probe API addresses (host:port), one per node; their /v1/windows are joined.
        #[arg(long)]
        probe: Vec<std::net::SocketAddr>,
        /// Diagnosis model (falls back to the rule baseline when missing).
        #[arg(long, default_value = "operator/model/model.json")]
        model: PathBuf,
    },
    /// Remove namespaces, cgroups and scratch files left by crashed testbeds.
    Cleanup,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .init();
    match Args::parse().cmd {
        Cmd::Demo {
            window_secs,
            fault_windows,
            workload,
            model,
            out,
            plain,
            payload_capture,
        } => {
            // The demo's fault sequence is for TCP workloads; DNS is a dataset workload only.
            let workload = netdx::scenarios::Workload::ALL
                .into_iter()
                .filter(|w| *w != netdx::scenarios::Workload::Dns)
                .find(|w| w.name() == workload)
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "unknown workload {workload:?}: use ndxe, redis, http or memcached"
                    )
                })?;
            let stop = Arc::new(AtomicBool::new(false));
            let s = stop.clone();
            ctrlc::set_handler(move || s.store(true, std::sync::atomic::Ordering::Release))?;
            netdx::demo::run(
                netdx::demo::DemoOpts {
                    window: Duration::from_secs(window_secs),
                    out_dir: out,
                    plain,
                    model,
                    workload,
                    fault_windows,
                    payload: payload_capture,
                },
                stop,
            )
        }
        Cmd::Dataset {
            out,
            only,
            window_secs,
        } => {
            let t = netdx::dataset::Timeline {
                window: Duration::from_secs(window_secs),
                ..Default::default()
            };
            netdx::dataset::run(&out, only.as_deref(), &t)
        }
        Cmd::Diagnose {
            windows,
            probe,
            model,
        } => {
            let reports = match (windows, probe.is_empty()) {
                (Some(path), _) => netdx::diagnose::from_file(&path)?,
                (None, false) => {
                    let mut all = Vec::new();
                    for p in probe {
                        all.extend(netdx::diagnose::from_probe(p)?);
                    }
                    all
                }
                (None, true) => anyhow::bail!("give --windows FILE or --probe ADDR"),
            };
            netdx::diagnose::run(reports, &model)
        }
        Cmd::Cleanup => {
            let r = netdx_testbed::cleanup::cleanup_all();
            println!(
                "removed {} namespaces, {} cgroups",
                r.namespaces.len(),
                r.cgroups.len()
            );
            for n in r.namespaces.iter().chain(&r.cgroups) {
                println!("  {n}");
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `netdx` command the Makefile runs parses (a flag the binary does not have once
    /// broke `make demo`, the first command a newcomer runs).
    #[test]
    fn makefile_commands_parse() {
        let makefile = include_str!("../../../Makefile");
        let commands: Vec<Vec<&str>> = makefile
            .lines()
            .filter_map(|l| {
                let l = l.trim();
                l.strip_prefix("./target/release/netdx ")
                    .or_else(|| l.strip_prefix("./target/debug/netdx "))
            })
            .map(|rest| {
                std::iter::once("netdx")
                    .chain(rest.split_whitespace().filter(|w| !w.starts_with("$(")))
                    .collect()
            })
            .collect();
        assert!(
            commands.iter().any(|c| c.get(1) == Some(&"demo")),
            "the Makefile runs `netdx demo`"
        );
        for c in commands {
            if let Err(e) = Args::try_parse_from(&c) {
                panic!("Makefile runs `{}`: {e}", c.join(" "));
            }
        }
    }
}

//! netdx command line.
mod demo;
mod live;
mod table;

use std::{
    path::PathBuf,
    sync::{Arc, atomic::AtomicBool},
    time::Duration,
};

use clap::{Parser, Subcommand};
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
        /// Run time in seconds.
        #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(5..=3600))]
        secs: u64,
        /// Window length in seconds.
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=600))]
        window_secs: u64,
        /// Output directory for window summaries.
        #[arg(long, default_value = "out/demo")]
        out: PathBuf,
        /// Plain text output even on a terminal.
        #[arg(long)]
        plain: bool,
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
            secs,
            window_secs,
            out,
            plain,
        } => {
            let stop = Arc::new(AtomicBool::new(false));
            let s = stop.clone();
            ctrlc::set_handler(move || s.store(true, std::sync::atomic::Ordering::Release))?;
            demo::run(
                demo::DemoOpts {
                    duration: Duration::from_secs(secs),
                    window: Duration::from_secs(window_secs),
                    out_dir: out,
                    plain,
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

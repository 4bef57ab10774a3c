//! The testbed's DNS server (with failure knobs) and bounded client.
use std::{net::SocketAddr, time::Duration};

use clap::{Parser, Subcommand};
use netdx_testbed::dns::{ClientOpts, ServerOpts, run_client, serve};

#[derive(Parser)]
#[command(about = "DNS (A over UDP) server with failure knobs, and a bounded client")]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve on an address.
    Server {
        #[arg(long, default_value = "0.0.0.0:53")]
        listen: SocketAddr,
        /// Share of queries answered SERVFAIL (0..=1).
        #[arg(long, default_value_t = 0.0)]
        servfail: f64,
        /// Share of queries answered NXDOMAIN (0..=1).
        #[arg(long, default_value_t = 0.0)]
        nxdomain: f64,
        /// Share of queries left unanswered (0..=1).
        #[arg(long, default_value_t = 0.0)]
        drop: f64,
    },
    /// Send a bounded number of queries and print a JSON report.
    Client {
        #[arg(long)]
        server: SocketAddr,
        #[arg(long, default_value_t = 100)]
        queries: u64,
        /// Queries per second (0 = back to back).
        #[arg(long, default_value_t = 0.0)]
        rate: f64,
        /// Answer timeout, ms.
        #[arg(long, default_value_t = 500)]
        timeout_ms: u64,
        /// Hard limit, s.
        #[arg(long, default_value_t = 30)]
        max_secs: u64,
    },
}

fn share(name: &str, v: f64) -> anyhow::Result<f64> {
    anyhow::ensure!(
        (0.0..=1.0).contains(&v),
        "--{name} must be in 0..=1, got {v}"
    );
    Ok(v)
}

fn main() -> anyhow::Result<()> {
    match Args::parse().cmd {
        Cmd::Server {
            listen,
            servfail,
            nxdomain,
            drop,
        } => {
            let o = ServerOpts {
                servfail: share("servfail", servfail)?,
                nxdomain: share("nxdomain", nxdomain)?,
                drop: share("drop", drop)?,
            };
            serve(listen, o)?;
        }
        Cmd::Client {
            server,
            queries,
            rate,
            timeout_ms,
            max_secs,
        } => {
            let r = run_client(&ClientOpts {
                server,
                queries,
                rate,
                timeout: Duration::from_millis(timeout_ms),
                max_time: Duration::from_secs(max_secs),
            })?;
            println!("{}", serde_json::to_string(&r)?);
        }
    }
    Ok(())
}

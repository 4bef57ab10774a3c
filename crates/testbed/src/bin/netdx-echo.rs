//! ndxe server and client (the testbed's protocol that no classifier knows).
use std::{net::SocketAddr, time::Duration};

use clap::{Parser, Subcommand};
use netdx_testbed::echo::{ClientOpts, ServerOpts, run_client, serve};

#[derive(Parser)]
#[command(about = "ndxe request/response server and bounded client")]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve on an address.
    Server {
        #[arg(long, default_value = "0.0.0.0:7000")]
        listen: SocketAddr,
        /// Processing delay per request, microseconds.
        #[arg(long, default_value_t = 0)]
        delay_us: u64,
        /// Fraction of requests answered with an error status.
        #[arg(long, default_value_t = 0.0)]
        error_ratio: f64,
        /// Reset each connection after this many requests (0 = never).
        #[arg(long, default_value_t = 0)]
        abort_after: u64,
        /// Never read requests (zero window at the client).
        #[arg(long)]
        stop_reading: bool,
        /// Delay before each accept, ms.
        #[arg(long, default_value_t = 0)]
        accept_delay_ms: u64,
        /// listen() backlog.
        #[arg(long, default_value_t = 1024)]
        backlog: i32,
    },
    /// Send a bounded number of requests and print a JSON report.
    Client {
        #[arg(long)]
        target: SocketAddr,
        #[arg(long, default_value_t = 4)]
        connections: usize,
        #[arg(long, default_value_t = 1000)]
        requests: u64,
        #[arg(long, default_value_t = 64)]
        req_size: usize,
        #[arg(long, default_value_t = 256)]
        resp_size: usize,
        /// Hard limit, seconds.
        #[arg(long, default_value_t = 60)]
        max_secs: u64,
        /// New connection per request.
        #[arg(long)]
        new_conn: bool,
        /// Total request rate per second (0 = unpaced).
        #[arg(long, default_value_t = 0.0)]
        rate: f64,
        /// Connect timeout, ms.
        #[arg(long, default_value_t = 3000)]
        connect_timeout_ms: u64,
    },
}

fn main() -> anyhow::Result<()> {
    match Args::parse().cmd {
        Cmd::Server {
            listen,
            delay_us,
            error_ratio,
            abort_after,
            stop_reading,
            accept_delay_ms,
            backlog,
        } => {
            if !(0.0..=1.0).contains(&error_ratio) {
                anyhow::bail!("--error-ratio must be within 0..=1");
            }
            serve(
                listen,
                ServerOpts {
                    delay: Duration::from_micros(delay_us),
                    error_ratio,
                    abort_after,
                    stop_reading,
                    accept_delay: Duration::from_millis(accept_delay_ms),
                    backlog,
                },
            )?;
        }
        Cmd::Client {
            target,
            connections,
            requests,
            req_size,
            resp_size,
            max_secs,
            new_conn,
            rate,
            connect_timeout_ms,
        } => {
            let report = run_client(&ClientOpts {
                target,
                connections,
                requests,
                req_size,
                resp_size,
                max_duration: Duration::from_secs(max_secs.min(3600)),
                new_conn_per_request: new_conn,
                rate,
                connect_timeout: Duration::from_millis(connect_timeout_ms),
            });
            println!("{}", serde_json::to_string(&report)?);
        }
    }
    Ok(())
}

//! netdx operator binary: controllers plus the HTTP server (health, metrics, targets).

use std::net::SocketAddr;

use anyhow::Context as _;
use clap::Parser;
use netdx_operator::State;
use netdx_operator::targets::{CgroupDriver, CgroupLayout};
use tracing_subscriber::EnvFilter;

/// Command line.
#[derive(Parser, Debug)]
#[command(about = "netdx Kubernetes operator")]
struct Args {
    /// Address for /healthz, /metrics and /v1/targets/{node}.
    #[arg(long, env = "NETDX_LISTEN", default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// Where node-probes see the cgroup2 hierarchy.
    #[arg(long, env = "NETDX_CGROUP_ROOT", default_value = "/sys/fs/cgroup")]
    cgroup_root: String,
    /// The kubelet's cgroup driver: systemd or cgroupfs.
    #[arg(long, env = "NETDX_CGROUP_DRIVER", default_value = "systemd")]
    cgroup_driver: CgroupDriver,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,kube=warn")),
        )
        .init();
    let args = Args::parse();
    let state = State {
        cgroups: CgroupLayout {
            root: args.cgroup_root,
            driver: args.cgroup_driver,
        },
        ..State::default()
    };
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API")?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let server = axum::serve(listener, netdx_operator::http::router(state.clone()));
    tracing::info!(listen = %args.listen, "serving health, metrics and targets");
    tokio::select! {
        res = netdx_operator::controller::run(state, client) => res.context("controllers (are the CRDs installed? kubectl apply -k manifests/base)")?,
        res = server => res.context("http server")?,
    }
    Ok(())
}

//! node-probe binary.
use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::Context as _;
use clap::Parser;
use node_probe::{
    http::router,
    ingest::{Agent, AgentConfig},
    loader::{ProbeConfig, ProgramSet},
    push::{DEFAULT_OUTBOX, Pusher},
    targets_client::{DEFAULT_CACHE, TargetsClient},
};
use tracing_subscriber::EnvFilter;

/// netdx node agent.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Node name this probe stands for.
    #[arg(long, env = "NODE_NAME")]
    node: String,
    /// JSON target set (pods to watch); re-read when it changes. With --targets-url it is
    /// where the fetched set is cached (default /var/run/netdx/targets.json).
    #[arg(long, env = "NETDX_TARGETS", required_unless_present = "targets_url")]
    targets: Option<PathBuf>,
    /// Cluster mode: fetch the target set from this operator (http://host:port) every few
    /// seconds instead of reading a file someone else writes.
    #[arg(long, env = "NETDX_TARGETS_URL")]
    targets_url: Option<String>,
    /// Address of the HTTP API.
    #[arg(long, default_value = "127.0.0.1:9464")]
    listen: SocketAddr,
    /// Window length in seconds.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=600))]
    window_secs: u64,
    /// Ring buffer size in bytes (power of two).
    #[arg(long, default_value_t = 8 << 20)]
    ring_bytes: u32,
    /// Programs to attach: `noop` attaches do-nothing programs on the hot path's hooks (the
    /// benchmarks' baseline) and records nothing.
    #[arg(long, value_enum, default_value_t = ProgramSet::Full)]
    programs: ProgramSet,
    /// The node's network namespace: drops there are reported as node-level.
    #[arg(long, default_value = "/proc/1/ns/net")]
    node_netns: PathBuf,
    /// Cluster mode: POST every closed window to this operator (http://host:port).
    #[arg(long, env = "NETDX_PUSH_TO")]
    push_to: Option<String>,
    /// ServiceAccount token presented to the operator (windows and targets).
    #[arg(
        long,
        env = "NETDX_TOKEN_FILE",
        default_value = "/var/run/secrets/kubernetes.io/serviceaccount/token"
    )]
    token_file: PathBuf,
    /// Windows kept while the operator is unreachable; older ones are dropped and counted.
    #[arg(long, default_value_t = DEFAULT_OUTBOX)]
    push_buffer: usize,
    /// SCHED_FIFO priority (1-99) of the thread that reads the ring buffer, so busy pods cannot
    /// starve it into losing records; 0 leaves it at normal priority. Needs CAP_SYS_NICE.
    #[arg(long, env = "NETDX_DRAIN_PRIORITY", default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=99))]
    drain_priority: u8,
    /// Push windows as JSON instead of the compact binary encoding (readable on the wire).
    #[arg(long, env = "NETDX_PUSH_JSON")]
    push_json: bool,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let targets_file = args
        .targets
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CACHE));
    let mut cfg = AgentConfig::new(&args.node, &targets_file);
    cfg.window = Duration::from_secs(args.window_secs);
    cfg.node_netns = Some(args.node_netns.clone());
    cfg.drain_priority = (args.drain_priority > 0).then_some(args.drain_priority);
    cfg.probe = ProbeConfig {
        ring_bytes: args.ring_bytes,
        programs: args.programs,
        ..ProbeConfig::default()
    };
    // Check the URL before loading anything, so a typo fails fast.
    let pusher = args
        .push_to
        .as_deref()
        .map(|url| {
            Pusher::new(url, args.token_file.clone(), args.push_buffer).map(|p| {
                if args.push_json {
                    p.with_encoding(netdx_api::wire::Encoding::Json)
                } else {
                    p
                }
            })
        })
        .transpose()
        .context("--push-to")?;
    let mut fetcher = args
        .targets_url
        .as_deref()
        .map(|url| {
            TargetsClient::new(
                url,
                &args.node,
                args.token_file.clone(),
                targets_file.clone(),
            )
        })
        .transpose()
        .context("--targets-url")?;
    // One fetch before the agent starts, so it begins with the operator's set; if the operator
    // is not there yet, a set cached by an earlier run (or an empty one) stands in.
    let mut first_failure = None;
    if let Some(f) = fetcher.as_mut()
        && let Err(e) = f.sync_once().await
    {
        tracing::warn!(error = %e, cache = %f.cache().display(), "first target fetch failed; starting from the cached set");
        first_failure = Some(e.metric_label());
        f.ensure_cache().context("writing the targets cache")?;
    }
    let agent = Agent::start(cfg).context("starting the probe")?;
    if let Some(f) = fetcher {
        tracing::info!(from = ?args.targets_url, cache = %f.cache().display(), "fetching targets from the operator");
        if let (Some(reason), Ok(mut m)) = (first_failure, agent.shared.metrics.lock()) {
            m.targets_fetch_failed(reason);
        }
        tokio::spawn(f.run(agent.shared.clone()));
    }
    if let Some(p) = pusher {
        tracing::info!(to = ?args.push_to, "pushing windows to the operator");
        tokio::spawn(p.run(agent.shared.clone()));
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    tracing::info!(listen = %args.listen, node = %args.node, "serving");
    axum::serve(listener, router(agent.shared.clone()))
        .with_graceful_shutdown(async {
            // Kubernetes stops pods with SIGTERM; Ctrl-C for people.
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut term) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = tokio::signal::ctrl_c() => {}
                    }
                }
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        })
        .await?;
    drop(agent);
    Ok(())
}

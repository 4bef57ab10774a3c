//! netdx operator binary: leader election, controllers, window ingest and diagnosis, and the
//! HTTP server (health, readiness, metrics, targets, windows).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use clap::Parser;
use netdx_operator::State;
use netdx_operator::auth::ProbeAuth;
use netdx_operator::classifier::{ClassifierSlot, ModelReloader};
use netdx_operator::ingest::Ingest;
use netdx_operator::leader::LeaseLock;
use netdx_operator::services::ServiceWatch;
use netdx_operator::targets::{CgroupDriver, CgroupLayout};
use tracing_subscriber::EnvFilter;

/// Window ingest allocates for every edge of every report (strings, sides, sketches): mimalloc
/// takes a third off its time compared with the system allocator (docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Command line.
#[derive(Parser, Debug)]
#[command(about = "netdx Kubernetes operator")]
struct Args {
    /// Address for /healthz, /readyz, /metrics, /v1/targets/{node} and /v1/windows.
    #[arg(long, env = "NETDX_LISTEN", default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// Where node-probes see the cgroup2 hierarchy.
    #[arg(long, env = "NETDX_CGROUP_ROOT", default_value = "/sys/fs/cgroup")]
    cgroup_root: String,
    /// The kubelet's cgroup driver: systemd or cgroupfs.
    #[arg(long, env = "NETDX_CGROUP_DRIVER", default_value = "systemd")]
    cgroup_driver: CgroupDriver,
    /// Compete for the Lease before reconciling (turn off only for a single local instance).
    #[arg(long, env = "NETDX_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    leader_election: bool,
    /// Namespace of the leader-election Lease (the operator's own).
    #[arg(long, env = "POD_NAMESPACE", default_value = "netdx-system")]
    namespace: String,
    /// This replica's identity in the Lease.
    #[arg(long, env = "POD_NAME", default_value = "netdx-operator-local")]
    identity: String,
    /// Require node-probes to present their ServiceAccount token (checked by TokenReview).
    #[arg(long, env = "NETDX_PROBE_AUTH", default_value_t = true, action = clap::ArgAction::Set)]
    probe_auth: bool,
    /// The node-probes' ServiceAccount, in the operator's namespace.
    #[arg(
        long,
        env = "NETDX_PROBE_SERVICE_ACCOUNT",
        default_value = "netdx-node-probe"
    )]
    probe_service_account: String,
    /// A retrained diagnosis model (e.g. mounted from a ConfigMap), re-read when it changes;
    /// without it the embedded model (or the rule tree) is used.
    #[arg(long, env = "NETDX_MODEL")]
    model: Option<PathBuf>,
    /// How long after a window ends the nodes that have not reported it are waited for.
    #[arg(long, env = "NETDX_INGEST_GRACE_SECS", default_value_t = 5)]
    ingest_grace_secs: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,kube=warn")),
        )
        .init();
    let args = Args::parse();
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API")?;
    let probe_auth = if args.probe_auth {
        let user = format!(
            "system:serviceaccount:{}:{}",
            args.namespace, args.probe_service_account
        );
        ProbeAuth::token_review(client.clone(), user)
    } else {
        tracing::warn!(
            "node-probe authentication is off: anyone reaching the service can read target sets"
        );
        ProbeAuth::disabled()
    };
    let classifier = Arc::new(ClassifierSlot::default());
    // Service and EndpointSlice caches, so client edges to a ClusterIP join their backends.
    let (services, watch_services) = ServiceWatch::new(client.clone());
    let (ingest, diagnosed) = Ingest::new(
        classifier.clone(),
        Duration::from_secs(args.ingest_grace_secs),
    );
    let ingest = ingest.with_services(services);
    let state = State {
        cgroups: CgroupLayout {
            root: args.cgroup_root,
            driver: args.cgroup_driver,
        },
        probe_auth: Arc::new(probe_auth),
        ingest: Arc::new(ingest),
        ..State::default()
    };
    tracing::info!(model = %classifier.version(), "built-in classifier");
    if let Some(path) = args.model.clone() {
        let regarding = k8s_openapi::api::core::v1::ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(args.identity.clone()),
            namespace: Some(args.namespace.clone()),
            ..Default::default()
        };
        let recorder = kube::runtime::events::Recorder::new(
            client.clone(),
            kube::runtime::events::Reporter {
                controller: netdx_operator::context::REPORTER.into(),
                instance: Some(args.identity.clone()),
            },
        );
        let mut reloader = ModelReloader::new(classifier.clone(), path, recorder, regarding);
        // Load before serving so the first windows already use the retrained model.
        reloader.check().await;
        tokio::spawn(reloader.run());
    }
    // Windows whose missing nodes never report are closed by this timer, not by a POST.
    let ticker = state.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(1));
        loop {
            every.tick().await;
            let expected = ticker.targets.read().await.nodes();
            ticker.ingest.close(&expected, &ticker.metrics);
        }
    });

    // Serve health first so the liveness probe passes while this replica waits as a standby.
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let app = netdx_operator::http::router(state.clone());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    tracing::info!(listen = %args.listen, "serving health, metrics and targets");

    let lock = args
        .leader_election
        .then(|| LeaseLock::new(client.clone(), &args.namespace, args.identity.clone()));
    if let Some(lock) = &lock {
        tokio::select! {
            res = lock.acquire() => res.context("leader election")?,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
    state.leading.store(true, Ordering::Relaxed);

    let hold = async {
        match &lock {
            Some(l) => l.hold().await,
            None => std::future::pending().await,
        }
    };
    // Only the leader joins windows (a standby's ingest is not fed by the Service), so only
    // it keeps the Service caches.
    tokio::spawn(watch_services);
    // Only the leader writes incident reports; a standby's ingest is not fed by the Service.
    tokio::spawn(netdx_operator::incidents::run(
        state.to_context(client.clone()),
        diagnosed,
    ));
    let result = tokio::select! {
        res = netdx_operator::controller::run(state.clone(), client) => {
            res.context("controllers (are the CRDs installed? kubectl apply -k manifests/base)")
        }
        () = hold => Err(anyhow!("lost leadership; exiting so the restart re-joins the election")),
        res = server => match res {
            Ok(Ok(())) => Err(anyhow!("http server stopped")),
            Ok(Err(e)) => Err(e).context("http server"),
            Err(e) => Err(e).context("http server task"),
        },
    };
    state.leading.store(false, Ordering::Relaxed);
    if let Some(lock) = &lock
        && let Err(e) = lock.release().await
    {
        tracing::warn!(error = %e, "releasing the lease");
    }
    result
}

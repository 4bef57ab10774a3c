//! The agent loop: keeps the kernel's target set in sync, drains the ring buffer on a timer
//! (records are written without wakeups), and closes windows.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime},
};

use netdx_api::{
    targets::{PayloadCapture, TargetSet},
    windows::WindowReport,
};
use netdx_common::{TARGET_NO_EGRESS_HEADS, TARGET_NO_INGRESS_HEADS, TARGET_WATCHED};
use tracing::{debug, info_span, warn};

use crate::{
    loader::{LoadError, LoadedProbe, PodLinks, ProbeConfig},
    metrics::Metrics,
    pods::PodIndex,
    podstats::PodSampler,
    records::decode_each,
    windows::{Aggregator, unix_ms},
};

/// Agent settings.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// Node name this probe stands for.
    pub node: String,
    /// JSON [`TargetSet`] to watch (re-read when it changes).
    pub targets_file: PathBuf,
    /// Window length.
    pub window: Duration,
    /// Ring buffer drain period.
    pub poll: Duration,
    /// Closed windows kept for the API.
    pub history: usize,
    /// Kernel-side sizing.
    pub probe: ProbeConfig,
    /// The node's network namespace (drops there count as node-level); the host's by default.
    pub node_netns: Option<PathBuf>,
    /// SCHED_FIFO priority of the ingest loop (1-99), None for normal scheduling.
    pub drain_priority: Option<u8>,
}

impl AgentConfig {
    /// Defaults for a node and a targets file: 10 s windows, 10 ms drain.
    pub fn new(node: impl Into<String>, targets_file: impl Into<PathBuf>) -> Self {
        AgentConfig {
            node: node.into(),
            targets_file: targets_file.into(),
            window: Duration::from_secs(10),
            poll: Duration::from_millis(10),
            history: 360,
            probe: ProbeConfig::default(),
            node_netns: Some(PathBuf::from("/proc/1/ns/net")),
            drain_priority: None,
        }
    }
}

/// State shared with the HTTP API.
pub struct Shared {
    /// Closed windows, oldest first.
    pub windows: Mutex<VecDeque<WindowReport>>,
    /// Prometheus metrics.
    pub metrics: Mutex<Metrics>,
    /// Set once the programs are attached and the first target sync ran.
    pub ready: AtomicBool,
    /// Unix ms of the ingest loop's last turn; a stale value means the loop is stuck or gone.
    pub heartbeat_ms: std::sync::atomic::AtomicU64,
    history: usize,
}

impl Shared {
    fn push(&self, w: WindowReport) {
        if let Ok(mut m) = self.metrics.lock() {
            m.observe(&w);
        }
        if let Ok(mut ws) = self.windows.lock() {
            ws.push_back(w);
            while ws.len() > self.history {
                ws.pop_front();
            }
        }
    }
}

/// Requests from the API or tests to the loop.
enum Command {
    /// Close the current window now (drain first) and return it.
    CloseWindow(mpsc::Sender<WindowReport>),
}

/// A running agent; dropping it stops the loop and detaches the programs.
pub struct Agent {
    /// State the API reads.
    pub shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    commands: mpsc::Sender<Command>,
    thread: Option<JoinHandle<()>>,
}

/// Errors starting the agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// eBPF load/attach failed.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The loop could not be started.
    #[error("starting agent thread: {0}")]
    Spawn(#[from] std::io::Error),
    /// The loop is gone.
    #[error("agent loop stopped")]
    Stopped,
}

impl Agent {
    /// Loads the probe and starts the loop.
    pub fn start(cfg: AgentConfig) -> Result<Self, AgentError> {
        let probe = LoadedProbe::load(&cfg.probe)?;
        let shared = Arc::new(Shared {
            windows: Mutex::new(VecDeque::new()),
            metrics: Mutex::new(Metrics::default()),
            ready: AtomicBool::new(false),
            heartbeat_ms: std::sync::atomic::AtomicU64::new(0),
            history: cfg.history.max(1),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let (sh, st) = (shared.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name(format!("ingest-{}", cfg.node))
            .spawn(move || run(probe, cfg, sh, st, rx))?;
        Ok(Agent {
            shared,
            stop,
            commands: tx,
            thread: Some(thread),
        })
    }

    /// Drains everything recorded so far, closes the current window and returns it.
    pub fn close_window(&self) -> Result<WindowReport, AgentError> {
        let (tx, rx) = mpsc::channel();
        self.commands
            .send(Command::CloseWindow(tx))
            .map_err(|_| AgentError::Stopped)?;
        rx.recv_timeout(Duration::from_secs(30))
            .map_err(|_| AgentError::Stopped)
    }

    /// Waits until the first target sync is done.
    pub fn wait_ready(&self, timeout: Duration) -> bool {
        let t0 = Instant::now();
        while t0.elapsed() < timeout {
            if self.shared.ready.load(Ordering::Acquire) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Keeps the kernel TARGETS map equal to the watched pods of the current index.
struct TargetSync {
    file: PathBuf,
    node: String,
    mtime: Option<SystemTime>,
    /// Watched cgroups installed in the kernel's TARGETS map, with their `TARGET_*` bits.
    installed: HashMap<u64, u8>,
    /// Network namespaces installed in the kernel's NETNS map.
    installed_netns: HashMap<u32, u8>,
    /// The node's own network namespace (drops there are node-level).
    node_netns: Option<u32>,
    /// Payload capture links by pod cgroup id, with the capture they were attached for.
    links: HashMap<u64, (PayloadCapture, PodLinks)>,
    /// Where pods given by UID are looked for.
    cgroup_root: PathBuf,
    /// Last rebuild: containers come and go without the target set changing.
    rebuilt: Instant,
}

/// How often the index is rebuilt even when the target set did not change.
const REBUILD_EVERY: Duration = Duration::from_secs(5);

impl TargetSync {
    /// Re-reads the targets file when it changed; returns a new index if it did.
    fn poll(&mut self, probe: &mut LoadedProbe, metrics: &Mutex<Metrics>) -> Option<Arc<PodIndex>> {
        let mtime = std::fs::metadata(&self.file)
            .and_then(|m| m.modified())
            .ok();
        if mtime.is_some() && mtime == self.mtime && self.rebuilt.elapsed() < REBUILD_EVERY {
            return None;
        }
        self.mtime = mtime;
        self.rebuilt = Instant::now();
        let set: TargetSet = match std::fs::read(&self.file)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
        {
            Ok(s) => s,
            Err(e) => {
                // Keep watching what we had: a half-written or bad file must not blind the probe.
                warn!(file = %self.file.display(), error = %e, "targets file unreadable; keeping previous targets");
                return None;
            }
        };
        let mut index = PodIndex::build(&set, &self.node, &self.cgroup_root);
        let wanted: HashMap<u64, u8> = index
            .watched
            .iter()
            .flat_map(|w| {
                let bits = target_bits(w.payload);
                w.cgroup_ids.iter().map(move |&id| (id, bits))
            })
            .collect();
        if sync_set(&mut probe.targets, &mut self.installed, &wanted, "cgroup") {
            // Sockets re-check their pod at their next call: those of pods no longer watched
            // stop being recorded, those remembered as unwatched may now be.
            probe.bump_targets_gen();
        }
        if let Err(e) = probe.set_active(!wanted.is_empty()) {
            warn!(error = %e, "tracepoints could not follow the target set");
        }
        // NETNS is a set: its values are unused.
        let mut netns: HashMap<u32, u8> = index.watched.iter().map(|w| (w.netns, 1)).collect();
        netns.extend(self.node_netns.map(|n| (n, 1)));
        sync_set(&mut probe.netns, &mut self.installed_netns, &netns, "netns");
        // Links of pods no longer watched, or attached for another payload capture.
        let capture: HashMap<u64, PayloadCapture> = index
            .watched
            .iter()
            .map(|w| (w.cgroup_id, w.payload))
            .collect();
        let stale: Vec<u64> = self
            .links
            .iter()
            .filter(|(id, (p, _))| capture.get(id) != Some(p))
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            if let Some((_, l)) = self.links.remove(&id) {
                probe.detach_pod(l);
            }
        }
        for w in &mut index.watched {
            if self.links.contains_key(&w.cgroup_id) {
                continue;
            }
            match probe.attach_pod(&w.cgroup_path, w.payload) {
                Ok(l) => {
                    self.links.insert(w.cgroup_id, (w.payload, l));
                }
                // Exchanges are still recorded, only without protocol names.
                Err(e) => {
                    warn!(pod = %w.pod, error = %e, "payload capture unavailable");
                    // The pod's windows say what is attached (nothing) until a sync attaches it.
                    w.payload = PayloadCapture::Off;
                    if let Ok(mut m) = metrics.lock() {
                        m.payload_attach_failed();
                    }
                }
            }
        }
        if let Ok(mut m) = metrics.lock() {
            m.payload_pods(self.links.values().map(|(p, _)| *p));
        }
        debug!(node = %self.node, watched = index.watched.len(), unresolved = index.unresolved.len(), "targets synced");
        Some(Arc::new(index))
    }
}

/// The next multiple of `window` on the wall clock: every probe closes its windows at the
/// same instants, so the operator can join the nodes' reports of one window.
fn next_boundary(window: Duration) -> Instant {
    let w = window.as_millis().max(1) as u64;
    Instant::now() + Duration::from_millis(w - unix_ms() % w)
}

/// Makes a kernel map hold exactly `wanted` (keys and values), touching only the differences;
/// entries that do not fit (map full) are logged and retried at the next sync. True when
/// anything changed.
fn sync_set<K: aya::Pod + Eq + std::hash::Hash + std::fmt::Debug>(
    map: &mut aya::maps::HashMap<aya::maps::MapData, K, u8>,
    installed: &mut HashMap<K, u8>,
    wanted: &HashMap<K, u8>,
    what: &str,
) -> bool {
    let mut changed = false;
    for k in installed.keys().filter(|k| !wanted.contains_key(k)) {
        changed = true;
        if let Err(e) = map.remove(k) {
            warn!(key = ?k, what, error = %e, "removing from kernel map");
        }
    }
    installed.retain(|k, _| wanted.contains_key(k));
    for (k, v) in wanted {
        if installed.get(k) == Some(v) {
            continue;
        }
        match map.insert(k, v, 0) {
            Ok(()) => {
                installed.insert(*k, *v);
                changed = true;
            }
            Err(e) => warn!(key = ?k, what, error = %e, "adding to kernel map (full?)"),
        }
    }
    changed
}

/// The kernel's TARGETS value for a watched pod: which payload programs it has.
fn target_bits(payload: PayloadCapture) -> u8 {
    let mut bits = TARGET_WATCHED;
    if !payload.egress() {
        bits |= TARGET_NO_EGRESS_HEADS;
    }
    if !payload.ingress() {
        bits |= TARGET_NO_INGRESS_HEADS;
    }
    bits
}

fn kernel_map(probe: &LoadedProbe) -> BTreeMap<String, u64> {
    probe
        .kernel_counters()
        .into_iter()
        .map(|(c, v)| (c.name().to_string(), v))
        .collect()
}

/// Closes the aggregator's window with the probe's kernel-side state.
fn close_window(
    agg: &mut Aggregator,
    probe: &LoadedProbe,
    sampler: &mut PodSampler,
) -> WindowReport {
    let mut w = agg.close_window(kernel_map(probe), sampler);
    w.health.tracepoints_attached = probe.is_active();
    w
}

/// How often the kernel's partial exchange batches are flushed between window closes (each
/// flush interrupts every CPU once); an exchange reaches its window at most this late, and
/// never late for the window's close, which flushes first.
const FLUSH_EVERY: Duration = Duration::from_millis(100);

fn drain(probe: &mut LoadedProbe, agg: &mut Aggregator) {
    while let Some(item) = probe.events.next() {
        decode_each(&item, |rec| match rec {
            Some(rec) => agg.add(&rec),
            None => agg.malformed(),
        });
    }
}

fn run(
    mut probe: LoadedProbe,
    cfg: AgentConfig,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    commands: mpsc::Receiver<Command>,
) {
    let _span = info_span!("ingest", node = %cfg.node).entered();
    if let Some(prio) = cfg.drain_priority {
        let on = match set_realtime(prio) {
            Ok(()) => true,
            Err(e) => {
                warn!(error = %e, priority = prio, "ring-buffer reader stays at normal priority (real-time needs CAP_SYS_NICE); busy pods can starve it and records are then lost (counted as ringbuf_full)");
                false
            }
        };
        if let Ok(mut m) = shared.metrics.lock() {
            m.drain_realtime(on);
        }
    }
    let reasons: Arc<HashMap<u32, String>> = Arc::new(std::mem::take(&mut probe.drop_reasons));
    let mut sync = TargetSync {
        file: cfg.targets_file.clone(),
        node: cfg.node.clone(),
        mtime: None,
        installed: HashMap::new(),
        installed_netns: HashMap::new(),
        node_netns: cfg
            .node_netns
            .as_ref()
            .and_then(|p| std::fs::metadata(p).ok())
            .map(|m| {
                use std::os::unix::fs::MetadataExt;
                m.ino() as u32
            }),
        links: HashMap::new(),
        cgroup_root: crate::pods::default_cgroup_root(),
        rebuilt: Instant::now(),
    };
    let index = sync.poll(&mut probe, &shared.metrics).unwrap_or_default();
    let waiter = RingWaiter::new(&probe);
    let mut agg = Aggregator::new(cfg.node.clone(), index, reasons);
    let mut sampler = PodSampler::default();
    shared.ready.store(true, Ordering::Release);
    let mut next_window = next_boundary(cfg.window);
    let mut next_sync = Instant::now() + Duration::from_secs(1);
    let mut next_flush = Instant::now();
    while !stop.load(Ordering::Acquire) {
        shared.heartbeat_ms.store(unix_ms(), Ordering::Release);
        let now = Instant::now();
        if now >= next_flush || now >= next_window {
            probe.flush_staged();
            next_flush = now + FLUSH_EVERY;
        }
        drain(&mut probe, &mut agg);
        if now >= next_sync {
            if let Some(idx) = sync.poll(&mut probe, &shared.metrics) {
                agg.set_index(idx);
            }
            next_sync = now + Duration::from_secs(1);
        }
        if now >= next_window {
            shared.push(close_window(&mut agg, &probe, &mut sampler));
            next_window = next_boundary(cfg.window);
        }
        while let Ok(cmd) = commands.try_recv() {
            match cmd {
                Command::CloseWindow(reply) => {
                    probe.flush_staged();
                    drain(&mut probe, &mut agg);
                    let w = close_window(&mut agg, &probe, &mut sampler);
                    shared.push(w.clone());
                    let _ = reply.send(w);
                    next_window = next_boundary(cfg.window);
                }
            }
        }
        waiter.wait(cfg.poll);
    }
}

/// Moves the calling thread to SCHED_FIFO at `prio`. On a node whose pods keep every CPU busy
/// in the kernel, the scheduler can leave a normal thread waiting for seconds (measured: 3-5 s
/// of a 5 s loopback flood in cgroup-v1 CPU groups), long enough to overflow the ring; a
/// real-time reader runs as soon as it wakes. Its work per turn is bounded (one ring's worth
/// of records, one window close), and the kernel's RT throttling caps it in any case.
fn set_realtime(prio: u8) -> std::io::Result<()> {
    let param = libc::sched_param {
        sched_priority: i32::from(prio),
    };
    // SAFETY: pid 0 is the calling thread; param is a valid struct.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Sleeps until the poll interval passed or the kernel woke the ring, which it does only when
/// the ring is filling up (edge-triggered epoll: records already waiting do not end the sleep,
/// so a steady trickle does not turn the loop into a spin).
struct RingWaiter(Option<std::os::fd::OwnedFd>);

impl RingWaiter {
    fn new(probe: &LoadedProbe) -> Self {
        use std::os::fd::{AsRawFd as _, FromRawFd as _};
        // SAFETY: plain syscalls; the new fd is owned right away.
        let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if ep < 0 {
            warn!("epoll unavailable; draining on the timer only");
            return RingWaiter(None);
        }
        // SAFETY: ep was just created and is owned here only.
        let ep = unsafe { std::os::fd::OwnedFd::from_raw_fd(ep) };
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLET) as u32,
            u64: 0,
        };
        let fd = probe.events.as_raw_fd();
        // SAFETY: valid fds and event.
        if unsafe { libc::epoll_ctl(ep.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) } != 0 {
            warn!("ring buffer not pollable; draining on the timer only");
            return RingWaiter(None);
        }
        RingWaiter(Some(ep))
    }

    fn wait(&self, timeout: Duration) {
        use std::os::fd::AsRawFd as _;
        let Some(ep) = &self.0 else {
            std::thread::sleep(timeout);
            return;
        };
        let mut ev = [libc::epoll_event { events: 0, u64: 0 }];
        let ms = timeout.as_millis().min(1000) as i32;
        // SAFETY: valid epoll fd and buffer; EINTR only shortens the sleep.
        unsafe { libc::epoll_wait(ep.as_raw_fd(), ev.as_mut_ptr(), 1, ms) };
    }
}

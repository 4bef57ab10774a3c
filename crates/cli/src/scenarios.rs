//! Labelled fault scenarios on the testbed: a fixed small cluster with real servers and
//! clients, one fault class at one intensity injected into one instance, and the label of
//! every edge derived from what was injected (never from a model).
//!
//! Cluster: node-0 runs client c1; node-1 runs client c2 and server s2; node-2 runs servers
//! s1 (the usual fault target) and s3. Edges: c1->s1, c2->s1, c1->s2, c2->s2, c2->s3. So a
//! server fault degrades both edges of s1, a node-0<->node-2 link fault only c1->s1, and a
//! node-2 fault c1->s1, c2->s1 and c2->s3: each instance kind leaves a different pattern.

use std::{
    net::{IpAddr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use netdx_api::windows::EdgeKey;
use netdx_diagnosis::classes::RootCause;
use netdx_testbed::{
    Testbed, TestbedSpec, faults, servers,
    servers::EchoServer,
    topology::PodSpec,
    workloads::{self, EchoClient},
};

/// A server program and the real clients that drive it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// The ndxe protocol no classifier knows (netdx-echo server and client).
    Ndxe,
    /// redis-server driven by redis-benchmark.
    Redis,
    /// nginx driven by wrk.
    Http,
    /// The testbed DNS server over UDP, driven by its client.
    Dns,
    /// memcached driven by memcaslap (libmemcached-tools).
    Memcached,
}

impl Workload {
    /// All workloads.
    pub const ALL: [Workload; 5] = [
        Workload::Ndxe,
        Workload::Redis,
        Workload::Http,
        Workload::Dns,
        Workload::Memcached,
    ];

    /// Name used in dataset rows.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Ndxe => "ndxe",
            Workload::Redis => "redis",
            Workload::Http => "http",
            Workload::Dns => "dns",
            Workload::Memcached => "memcached",
        }
    }

    /// Server port.
    pub fn port(self) -> u16 {
        match self {
            Workload::Ndxe => 7000,
            Workload::Redis => 6379,
            Workload::Http => 80,
            Workload::Dns => 53,
            Workload::Memcached => 11211,
        }
    }
}

/// Which instance a fault is injected into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// No fault.
    None,
    /// The server pod s1.
    ServerPod,
    /// The link between node-0 and node-2.
    Link,
    /// Node node-2.
    Node,
    /// The service s1 serves (DNS on port 53: its only backend is s1).
    Service,
}

/// One scenario: workload, fault class, intensity, load level.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// Stable id (also the dataset file name).
    pub id: String,
    /// Workload.
    pub workload: Workload,
    /// Injected class.
    pub fault: RootCause,
    /// Intensity label ("none" when healthy).
    pub intensity: &'static str,
    /// The knob value for that intensity (meaning depends on the class).
    pub param: u32,
    /// Request rate multiplier (1.0 = the workload's usual load).
    pub load: f64,
}

/// A class, its intensities (label, knob) and the workloads that can show it.
type CatalogEntry = (
    RootCause,
    &'static [(&'static str, u32)],
    &'static [Workload],
);

/// Classes, intensities (label, knob) and the workloads they apply to. Classes whose signal a
/// workload cannot show are left out for it (documented in the model card): l7_errors on ndxe
/// (an unknown protocol has no error signal, so its windows would be healthy-looking rows
/// labelled l7_errors), server_app_slow on memcached (no delay knob).
///
/// Every intensity must bite on every workload listed: a fault that changes nothing is a
/// healthy window with a fault label. Connection limits stay below the 4 concurrent connections
/// each workload keeps to s1 (2 clients x 2), conntrack limits below the 8 it forwards through
/// node-2. The classes the tree confused most (delay, jitter, bandwidth) get a third intensity;
/// classes with two or three get more so that the weaker and the stronger half of a class's
/// intensities are not one point each (the unseen-intensity score trains on one half).
fn catalog() -> Vec<CatalogEntry> {
    use RootCause::*;
    use Workload::*;
    const ALL: &[Workload] = &[Ndxe, Redis, Http, Memcached];
    vec![
        (
            PathLoss,
            &[("3pct", 3), ("10pct", 10), ("5pct", 5), ("7pct", 7)],
            ALL,
        ),
        (
            PathDelay,
            &[
                ("5ms", 5_000),
                ("20ms", 20_000),
                ("10ms", 10_000),
                ("15ms", 15_000),
                ("30ms", 30_000),
                ("25ms", 25_000),
            ],
            ALL,
        ),
        (
            JitterReorder,
            &[
                ("8ms", 8_000),
                ("25ms", 25_000),
                ("15ms", 15_000),
                ("20ms", 20_000),
                ("35ms", 35_000),
            ],
            ALL,
        ),
        (
            BandwidthLimit,
            &[
                ("2mbit", 2_000),
                ("500kbit", 500),
                ("1mbit", 1_000),
                ("750kbit", 750),
                ("1500kbit", 1_500),
            ],
            ALL,
        ),
        (
            MtuBlackhole,
            &[("1200B", 1200), ("600B", 600), ("900B", 900)],
            ALL,
        ),
        (
            SynDroppedFirewall,
            &[("50pct", 50), ("100pct", 100), ("75pct", 75), ("25pct", 25)],
            ALL,
        ),
        (
            ConnectionRefused,
            &[("50pct", 50), ("100pct", 100), ("75pct", 75), ("25pct", 25)],
            ALL,
        ),
        (
            ServerAppSlow,
            &[
                ("5ms", 5_000),
                ("30ms", 30_000),
                ("10ms", 10_000),
                ("15ms", 15_000),
                ("20ms", 20_000),
            ],
            &[Ndxe, Redis, Http],
        ),
        // CPU quota in us per 100 ms (below 1000: one 1 ms slice per 100_000/p ms).
        (
            ServerCpuThrottled,
            &[("2pct", 2_000), ("1pct", 1_000), ("0.5pct", 500)],
            ALL,
        ),
        (
            ListenBacklogOverflow,
            &[
                ("50ms", 50),
                ("200ms", 200),
                ("100ms", 100),
                ("400ms", 400),
                ("30ms", 30),
            ],
            &[Ndxe],
        ),
        (
            ReceiverZeroWindow,
            &[
                ("all", 1),
                ("all2", 1),
                ("all3", 1),
                ("all4", 1),
                ("all5", 1),
                ("all6", 1),
            ],
            &[Ndxe],
        ),
        (
            ServerReset,
            &[
                ("every5", 5),
                ("every1", 1),
                ("every2", 2),
                ("every10", 10),
                ("every3", 3),
                ("every20", 20),
            ],
            &[Ndxe],
        ),
        (
            L7Errors,
            &[("10pct", 10), ("50pct", 50), ("25pct", 25), ("100pct", 100)],
            &[Redis, Http],
        ),
        (
            ConnLimitExhausted,
            &[("limit2", 2), ("limit1", 1), ("limit3", 3)],
            ALL,
        ),
        (
            ConntrackFull,
            &[("max2", 2), ("max0", 0), ("max1", 1), ("max4", 4)],
            ALL,
        ),
        // Below 1000: share answered SERVFAIL (%); 1000..2000: share left unanswered
        // (% + 1000); from 2000: share answered NXDOMAIN (% + 2000).
        (
            DnsFailure,
            &[
                ("servfail30pct", 30),
                ("timeout50pct", 1050),
                ("servfail100pct", 100),
                ("nxdomain30pct", 2030),
                ("timeout20pct", 1020),
                ("servfail10pct", 10),
                ("nxdomain100pct", 2100),
                ("timeout100pct", 1100),
                ("timeout80pct", 1080),
                ("timeout90pct", 1090),
                ("nxdomain10pct", 2010),
                ("servfail20pct", 20),
            ],
            &[Dns],
        ),
    ]
}

/// Which scope each class is injected at.
pub fn scope_of(class: RootCause) -> Scope {
    use RootCause::*;
    match class {
        Healthy => Scope::None,
        PathLoss | PathDelay | JitterReorder | BandwidthLimit | MtuBlackhole => Scope::Link,
        ConntrackFull => Scope::Node,
        DnsFailure => Scope::Service,
        _ => Scope::ServerPod,
    }
}

/// Every scenario of the dataset, in a fixed order (the order is the seed).
pub fn all_scenarios() -> Vec<Scenario> {
    let mut out = Vec::new();
    for w in Workload::ALL {
        for (label, load) in [("low", 0.5), ("mid", 1.0), ("high", 2.0)] {
            out.push(Scenario {
                id: format!("{}-healthy-{label}", w.name()),
                workload: w,
                fault: RootCause::Healthy,
                intensity: "none",
                param: 0,
                load,
            });
        }
    }
    for (class, intensities, workloads) in catalog() {
        for w in workloads {
            for (i, (label, param)) in intensities.iter().enumerate() {
                // Alternate load levels so faults are not tied to one rate.
                let load = [1.0, 1.5, 0.75][i % 3];
                out.push(Scenario {
                    id: format!("{}-{}-{label}", w.name(), class.as_str()),
                    workload: *w,
                    fault: class,
                    intensity: label,
                    param: *param,
                    load,
                });
            }
        }
    }
    out
}

/// The running cluster of a scenario.
pub struct World {
    /// The testbed.
    pub tb: Arc<Testbed>,
    /// Workload.
    pub workload: Workload,
    /// Address of each server pod (s1, s2, s3).
    pub servers: Vec<(String, SocketAddr)>,
    /// pid of s1's server process (restarted by server-side faults).
    s1_pid: Option<u32>,
    stop: Arc<AtomicBool>,
    drivers: Vec<JoinHandle<()>>,
}

/// Size of the page the HTTP servers answer with.
const HTTP_BODY_BYTES: usize = 4096;

/// The client -> server pairs that carry traffic.
/// c1->s3 crosses the node-0/node-2 link too, so link faults degrade two edges (more rows,
/// a real vote) and a node-2 fault four.
pub const EDGES: [(&str, &str); 6] = [
    ("c1", "s1"),
    ("c2", "s1"),
    ("c1", "s2"),
    ("c2", "s2"),
    ("c2", "s3"),
    ("c1", "s3"),
];

fn start_server(
    tb: &Testbed,
    w: Workload,
    pod: &str,
    knobs: &EchoServer,
    dns: &netdx_testbed::dns::ServerOpts,
) -> netdx_testbed::Result<(SocketAddr, Option<u32>)> {
    Ok(match w {
        Workload::Dns => {
            let (a, pid) = servers::dns(tb, pod, dns)?;
            (a, Some(pid))
        }
        Workload::Ndxe => {
            let (a, pid) = servers::echo(tb, pod, w.port(), knobs)?;
            (a, Some(pid))
        }
        Workload::Redis => (servers::redis(tb, pod)?, None),
        Workload::Http => (servers::nginx(tb, pod, HTTP_BODY_BYTES)?, None),
        Workload::Memcached => (servers::memcached(tb, pod)?, None),
    })
}

impl World {
    /// Builds the cluster and starts the servers (not yet the clients).
    pub fn up(workload: Workload) -> netdx_testbed::Result<Self> {
        let tb = Testbed::up(&TestbedSpec {
            nodes: 3,
            pods: vec![
                PodSpec::new("c1", 0),
                PodSpec::new("c2", 1),
                PodSpec::new("s2", 1),
                PodSpec::new("s1", 2),
                PodSpec::new("s3", 2),
            ],
        })?;
        let mut servers_ = Vec::new();
        let mut s1_pid = None;
        for pod in ["s1", "s2", "s3"] {
            let (addr, pid) = start_server(
                &tb,
                workload,
                pod,
                &EchoServer::default(),
                &Default::default(),
            )?;
            if pod == "s1" {
                s1_pid = pid;
            }
            servers_.push((pod.to_string(), addr));
        }
        Ok(World {
            tb: Arc::new(tb),
            workload,
            servers: servers_,
            s1_pid,
            stop: Arc::new(AtomicBool::new(false)),
            drivers: Vec::new(),
        })
    }

    fn addr(&self, pod: &str) -> SocketAddr {
        self.servers
            .iter()
            .find(|(p, _)| p == pod)
            .map(|(_, a)| *a)
            .unwrap_or_else(|| self.servers[0].1)
    }

    /// Starts one client loop per edge at `load` times the usual rate; they run until drop.
    pub fn start_clients(&mut self, load: f64) {
        for (client, server) in EDGES {
            let (tb, stop, w, addr) = (
                self.tb.clone(),
                self.stop.clone(),
                self.workload,
                self.addr(server),
            );
            self.drivers.push(std::thread::spawn(move || {
                while !stop.load(Ordering::Acquire) {
                    // Each run is short and bounded: clients reconnect about once a second,
                    // like pooled clients recycling connections, so connect faults show.
                    let _ = drive_once(&tb, w, client, addr, load, "/");
                }
            }));
        }
    }

    /// Starts one long-lived pooled connection from c1 to s1 (about 20 requests a second for
    /// `secs`), like a client pool holding its connections: a connection limit then refuses
    /// the churning clients while established connections keep working, which is what tells
    /// it from a server refusing every connection.
    pub fn start_pool(&mut self, secs: u64) {
        let (tb, w, addr) = (self.tb.clone(), self.workload, self.addr("s1"));
        self.drivers.push(std::thread::spawn(move || {
            let _ = pooled_client(&tb, w, addr, secs);
        }));
    }

    /// Starts a bulk sender from c1 to s1 for the whole scenario (ndxe servers: 1 MiB uploads
    /// on two connections, I/O bounded at 1 s, so a stalled upload gives way to fresh
    /// connections every few seconds). A receiver that stops reading shows as zero windows
    /// only to a sender with more in flight than the receiver buffers; the usual 16 KiB
    /// request/response exchanges never fill a window, so without this the fault looked like
    /// a server that stopped answering.
    pub fn start_uploader(&mut self) {
        let addr = self.addr("s1");
        let c = EchoClient {
            connections: 2,
            requests: 2,
            req_size: 1 << 20,
            resp_size: 64,
            max_secs: 1,
            rate: 1.0,
            connect_timeout_ms: 1000,
            ..Default::default()
        };
        self.spawn_loop(move |tb| {
            let _ = workloads::echo_client(tb, "c1", addr, &c);
        });
    }

    /// Starts an extra client loop (e.g. error traffic) that stops with the world.
    fn spawn_loop(&mut self, f: impl Fn(&Testbed) + Send + 'static) {
        let (tb, stop) = (self.tb.clone(), self.stop.clone());
        self.drivers.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Acquire) {
                f(&tb);
            }
        }));
    }

    /// Node index of a pod.
    pub fn node_of(&self, pod: &str) -> Option<usize> {
        self.tb.pod(pod).ok().map(|p| p.node)
    }

    /// Whether the injected fault touches this edge (its label is then the fault's class).
    pub fn affected(&self, scope: Scope, key: &EdgeKey) -> bool {
        let name = |e: &netdx_api::windows::Endpoint| {
            e.pod.as_ref().map(|p| p.name.clone()).unwrap_or_default()
        };
        let (c, s) = (name(&key.client), name(&key.server));
        let (cn, sn) = (self.node_of(&c), self.node_of(&s));
        match scope {
            Scope::None => false,
            Scope::ServerPod | Scope::Service => s == "s1",
            Scope::Link => matches!((cn, sn), (Some(0), Some(2)) | (Some(2), Some(0))),
            Scope::Node => cn == Some(2) || sn == Some(2),
        }
    }

    /// The instance name a finding should carry for the scope.
    pub fn target(scope: Scope) -> &'static str {
        match scope {
            Scope::None => "",
            Scope::ServerPod => "pod:default/s1",
            Scope::Link => "link:node-0/node-2",
            Scope::Node => "node:node-2",
            Scope::Service => "service:default/s1:53",
        }
    }

    /// Restarts s1's server with knobs.
    fn restart_s1(
        &mut self,
        knobs: &EchoServer,
        dns: &netdx_testbed::dns::ServerOpts,
    ) -> netdx_testbed::Result<()> {
        if let Some(pid) = self.s1_pid.take() {
            servers::kill(pid);
            std::thread::sleep(Duration::from_millis(100));
        }
        let (_, pid) = start_server(&self.tb, self.workload, "s1", knobs, dns)?;
        self.s1_pid = pid;
        Ok(())
    }

    /// Injects `s`'s fault; it stays until the returned guard drops.
    pub fn inject(&mut self, s: &Scenario) -> netdx_testbed::Result<Injected> {
        use RootCause::*;
        let tb = self.tb.clone();
        let s1 = tb.pod("s1")?.clone();
        let port = self.workload.port();
        let fabric = tb.fabric.clone();
        let node2 = tb.nodes[2].netns.clone();
        let p = s.param;
        Ok(match s.fault {
            Healthy => Injected::Nothing,
            DnsFailure => {
                let dns = if p >= 2000 {
                    netdx_testbed::dns::ServerOpts {
                        nxdomain: f64::from(p - 2000) / 100.0,
                        ..Default::default()
                    }
                } else if p >= 1000 {
                    netdx_testbed::dns::ServerOpts {
                        drop: f64::from(p - 1000) / 100.0,
                        ..Default::default()
                    }
                } else {
                    netdx_testbed::dns::ServerOpts {
                        servfail: f64::from(p) / 100.0,
                        ..Default::default()
                    }
                };
                self.restart_s1(&EchoServer::default(), &dns)?;
                Injected::Nothing
            }
            // Responses flow node-2 -> node-0 (n2 -> n0 in the fabric): the heavy direction.
            PathLoss => Injected::Nft(faults::loss_path(&fabric, "n2", "n0", p)?),
            PathDelay => Injected::Delay(faults::delay(&fabric, "n2", "n0", 0, u64::from(p), 0)?),
            JitterReorder => {
                Injected::Delay(faults::delay(&fabric, "n2", "n0", 0, 500, u64::from(p))?)
            }
            BandwidthLimit => Injected::Tc(faults::bandwidth(&node2, "up0", "10.200.0.0/24", p)?),
            MtuBlackhole => Injected::Nft(faults::mtu_blackhole(&fabric, "n2", "n0", p)?),
            SynDroppedFirewall => Injected::Nft(faults::drop_syn(&s1.netns, port, p)?),
            ConnectionRefused => Injected::Nft(faults::reject_syn(&s1.netns, port, p)?),
            ConnLimitExhausted => Injected::Nft(faults::conn_limit(&s1.netns, port, p)?),
            ConntrackFull => Injected::Nft(faults::conntrack_full(&node2, p)?),
            ServerCpuThrottled => {
                // The kernel's smallest quota is 1 ms: lower shares stretch the period.
                let (quota, period) = if p < 1000 {
                    (1000, 100_000 * 1000 / u64::from(p.max(1)))
                } else {
                    (u64::from(p), 100_000)
                };
                s1.cgroups.set_cpu_quota(Some(quota), period)?;
                Injected::Quota(s1.cgroups.clone())
            }
            ServerAppSlow if self.workload == Workload::Http => {
                // Every page answered late: the shape redis's blocking command does not have.
                servers::nginx_set_delay(
                    &tb,
                    "s1",
                    HTTP_BODY_BYTES,
                    Duration::from_micros(p.into()),
                )?;
                Injected::Nothing
            }
            ServerAppSlow if self.workload == Workload::Redis => {
                // A slow command blocking redis's event loop for everyone.
                let addr = self.addr("s1");
                let ms = f64::from(p) / 1e6;
                self.spawn_loop(move |tb| {
                    let cmd = ["DEBUG", "SLEEP", &format!("{ms}")];
                    let _ = workloads::redis_cli_repeat(tb, "c2", addr, 20, &cmd);
                });
                Injected::Nothing
            }
            ServerAppSlow | ListenBacklogOverflow | ReceiverZeroWindow | ServerReset => {
                let knobs = match s.fault {
                    ServerAppSlow => EchoServer {
                        delay_us: u64::from(p),
                        ..Default::default()
                    },
                    ListenBacklogOverflow => EchoServer {
                        backlog: 1,
                        accept_delay_ms: u64::from(p),
                        ..Default::default()
                    },
                    ReceiverZeroWindow => EchoServer {
                        stop_reading: true,
                        ..Default::default()
                    },
                    _ => EchoServer {
                        abort_after: u64::from(p),
                        ..Default::default()
                    },
                };
                self.restart_s1(&knobs, &Default::default())?;
                match (s.fault, self.s1_pid) {
                    (ListenBacklogOverflow, Some(pid)) => Injected::ListenQueue(pid),
                    _ => Injected::Nothing,
                }
            }
            L7Errors => {
                let addr = self.addr("s1");
                let w = self.workload;
                let share = f64::from(p) / 100.0;
                let script = l7_script(p)?;
                for client in ["c1", "c2"] {
                    let script = script.clone();
                    self.spawn_loop(move |tb| match w {
                        Workload::Http => {
                            // A steady mix (p% of requests answered 500) in every window, not
                            // bursts that some windows miss (they were labelled l7_errors with
                            // no error in them).
                            let url = format!("http://{addr}/");
                            let _ = tb.run(
                                client,
                                "timeout",
                                &[
                                    "30", "wrk", "-t", "1", "-c", "1", "-d", "1s", "-s", &script,
                                    &url,
                                ],
                            );
                            std::thread::sleep(Duration::from_millis(500));
                        }
                        _ => {
                            let n = (200.0 * share).max(1.0) as u64;
                            let _ = workloads::redis_cli_repeat(
                                tb,
                                client,
                                addr,
                                n,
                                &["NOSUCHCOMMAND", "x"],
                            );
                            std::thread::sleep(Duration::from_millis(500));
                        }
                    });
                }
                Injected::Nothing
            }
        })
    }
}

/// A wrk script sending `percent`% of requests to nginx's erroring location, the rest to `/`.
fn l7_script(percent: u32) -> netdx_testbed::Result<String> {
    let path = std::env::temp_dir().join(format!("netdx-l7-{percent}.lua"));
    let body = format!(
        "math.randomseed({percent})\nrequest = function()\n  if math.random(100) <= {percent} then\n    return wrk.format(nil, \"/status/500\")\n  end\n  return wrk.format(nil, \"/\")\nend\n"
    );
    std::fs::write(&path, body).map_err(|e| netdx_testbed::Error::Io {
        what: "writing the wrk error-mix script".into(),
        source: e,
    })?;
    Ok(path.display().to_string())
}

/// One connection from c1 to `addr`, a request every 50 ms, ended after `secs` by `timeout`.
fn pooled_client(
    tb: &Testbed,
    w: Workload,
    addr: SocketAddr,
    secs: u64,
) -> netdx_testbed::Result<()> {
    let (ip, port) = (&addr.ip().to_string(), &addr.port().to_string());
    let t = &secs.to_string();
    let n = (secs * 20).to_string();
    match w {
        Workload::Ndxe => {
            let c = EchoClient {
                connections: 1,
                requests: secs * 20,
                rate: 20.0,
                max_secs: secs,
                ..Default::default()
            };
            workloads::echo_client(tb, "c1", addr, &c).map(|_| ())
        }
        Workload::Redis => tb
            .run(
                "c1",
                "timeout",
                &[
                    t,
                    "redis-cli",
                    "-h",
                    ip,
                    "-p",
                    port,
                    "-r",
                    &n,
                    "-i",
                    "0.05",
                    "PING",
                ],
            )
            .map(|_| ()),
        Workload::Http => {
            let script = std::env::temp_dir().join("netdx-pool-delay.lua");
            std::fs::write(&script, "function delay()\n  return 50\nend\n").map_err(|e| {
                netdx_testbed::Error::Io {
                    what: "writing the wrk pacing script".into(),
                    source: e,
                }
            })?;
            let url = format!("http://{addr}/");
            let d = format!("{secs}s");
            let script = script.display().to_string();
            tb.run(
                "c1",
                "timeout",
                &[
                    t, "wrk", "-t", "1", "-c", "1", "-d", &d, "-s", &script, &url,
                ],
            )
            .map(|_| ())
        }
        // memcached's text protocol from bash over one /dev/tcp connection.
        Workload::Memcached => {
            let script = format!(
                "exec 3<>/dev/tcp/{ip}/{port}; for i in $(seq {n}); do printf 'version\\r\\n' >&3; read -r l <&3; sleep 0.05; done"
            );
            tb.run("c1", "timeout", &[t, "bash", "-c", &script])
                .map(|_| ())
        }
        // Lookups have no connection to hold.
        Workload::Dns => Ok(()),
    }
}

/// One bounded client run (~1 s) on an edge.
fn drive_once(
    tb: &Testbed,
    w: Workload,
    client: &str,
    addr: SocketAddr,
    load: f64,
    path: &str,
) -> netdx_testbed::Result<()> {
    match w {
        Workload::Ndxe => {
            let c = EchoClient {
                connections: 2,
                requests: (200.0 * load) as u64,
                req_size: 16 << 10,
                resp_size: 3000,
                max_secs: 1,
                rate: 200.0 * load,
                connect_timeout_ms: 1000,
                ..Default::default()
            };
            workloads::echo_client(tb, client, addr, &c).map(|_| ())
        }
        Workload::Redis => {
            // 75 SET/GET pairs of 2000-byte values on each of two fresh connections at full
            // load, bounded at 3 s (a slowed path or server stretches a run, not the loop).
            let r = workloads::redis_set_get(tb, client, addr, (75.0 * load) as u64, 2, 2000, 3);
            // Pause even after a failed run: a client retrying in a tight loop would burn the
            // node's CPU and slow every other edge, which is not the fault being recorded.
            std::thread::sleep(Duration::from_millis(700));
            r
        }
        Workload::Memcached => {
            // Like redis: a short burst of gets and sets on two fresh connections, a pause.
            let _ = workloads::memcaslap(tb, client, addr, (150.0 * load) as u64, 2, 3);
            std::thread::sleep(Duration::from_millis(700));
            Ok(())
        }
        Workload::Dns => {
            // Like a service resolving its peers: a steady trickle of lookups, answers
            // awaited 200 ms (resolvers retry after about that long).
            let n = (100.0 * load) as u64;
            workloads::dns_client(tb, client, addr, n, n as f64, 200).map(|_| ())
        }
        Workload::Http => {
            // wrk has no rate limit: short runs with pauses keep the load moderate.
            // Two connections per client, like the other workloads (4 concurrent to s1), so
            // connection limits below 4 bite.
            let _ = workloads::wrk(tb, client, &format!("http://{addr}{path}"), 2, 1);
            std::thread::sleep(Duration::from_millis((1500.0 / load.max(0.1)) as u64));
            Ok(())
        }
    }
}

/// A fault in place; dropping it removes the fault.
pub enum Injected {
    /// Nothing to remove (server restarted with knobs, or extra client loops bound to the world).
    Nothing,
    /// nftables table.
    Nft(faults::NftGuard),
    /// tc qdisc.
    Tc(faults::TcGuard),
    /// Delay stage.
    Delay(faults::DelayGuard),
    /// CPU quota on a pod.
    Quota(netdx_testbed::cgroups::PodCgroups),
    /// A server restarted with a tiny, slowly drained accept queue (its pid).
    ListenQueue(u32),
}

/// What an injected fault has acted on so far, from the injector's own counters.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Acted {
    /// The fault acts on everything it is applied to (a link, a restarted server).
    #[default]
    Always,
    /// Packets refused or dropped per (source, destination) address pair.
    Flows(faults::ActedOn),
    /// A running count of the fault's effect: CFS periods a CPU quota throttled the pod in (it
    /// acts only while the pod needs the CPU), or connections the server's namespace turned
    /// away at a full accept queue (ListenOverflows + ListenDrops: a slow accept overflows the
    /// queue only when connections arrive meanwhile).
    Counted(u64),
}

impl Acted {
    /// Whether the fault acted on traffic between `client` and `server` (either direction)
    /// between `before` and `self`.
    pub fn since(&self, before: &Acted, client: &str, server: &str) -> bool {
        match (self, before) {
            (Acted::Flows(now), Acted::Flows(then)) => {
                // An end without an address (a peer-less UDP view) cannot be told apart.
                let (Ok(c), Ok(s)) = (client.parse::<IpAddr>(), server.parse::<IpAddr>()) else {
                    return true;
                };
                let count = |m: &faults::ActedOn| {
                    m.get(&(c, s)).copied().unwrap_or(0) + m.get(&(s, c)).copied().unwrap_or(0)
                };
                count(now) > count(then)
            }
            (Acted::Counted(now), Acted::Counted(then)) => now > then,
            _ => true,
        }
    }

    /// Whether the fault acted on anything at all between `before` and `self` (a node-wide
    /// fault is the node's, whichever flows it happened to hit).
    pub fn any_since(&self, before: &Acted) -> bool {
        match (self, before) {
            (Acted::Flows(now), Acted::Flows(then)) => {
                now.values().sum::<u64>() > then.values().sum::<u64>()
            }
            (Acted::Counted(now), Acted::Counted(then)) => now > then,
            _ => true,
        }
    }
}

impl Injected {
    /// The injector's record of what it acted on so far.
    pub fn acted(&self) -> netdx_testbed::Result<Acted> {
        Ok(match self {
            Injected::Nft(g) => Acted::Flows(g.acted_on()?),
            Injected::Quota(cg) => Acted::Counted(cg.throttling().map_or(0, |(n, _)| n)),
            Injected::ListenQueue(pid) => Acted::Counted(listen_overflows(*pid)?),
            _ => Acted::Always,
        })
    }
}

/// ListenOverflows + ListenDrops of the network namespace `pid` lives in.
fn listen_overflows(pid: u32) -> netdx_testbed::Result<u64> {
    let path = format!("/proc/{pid}/net/netstat");
    let text = std::fs::read_to_string(&path).map_err(|source| netdx_testbed::Error::Io {
        what: path.clone(),
        source,
    })?;
    let mut mib = std::collections::BTreeMap::new();
    node_probe::podstats::parse_mib(&text, &mut mib);
    Ok(["TcpExt:ListenOverflows", "TcpExt:ListenDrops"]
        .iter()
        .filter_map(|k| mib.get(*k))
        .sum())
}

impl Drop for Injected {
    fn drop(&mut self) {
        if let Injected::Quota(cg) = self {
            let _ = cg.set_cpu_quota(None, 100_000);
        }
    }
}

impl Drop for World {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        for d in self.drivers.drain(..) {
            let _ = d.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acted_labels_only_the_pairs_the_injector_hit() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let (c1, c2, s1) = ("10.200.0.2", "10.200.1.2", "10.200.2.2");
        let before = Acted::Flows([((ip(c1), ip(s1)), 3)].into());
        let now = Acted::Flows(
            [
                ((ip(c1), ip(s1)), 3),
                ((ip(c2), ip(s1)), 1),
                // A link fault drops the server's packets towards the client.
                ((ip(s1), ip(c1)), 2),
            ]
            .into(),
        );
        assert!(now.since(&before, c2, s1), "c2 was refused this window");
        assert!(
            now.since(&before, c1, s1),
            "s1's packets to c1 were dropped"
        );
        assert!(!now.since(&before, c2, "10.200.2.3"), "another server");
        let later = Acted::Flows([((ip(c1), ip(s1)), 4)].into());
        assert!(!later.since(&later.clone(), c1, s1), "nothing new");
        assert!(Acted::Counted(5).since(&Acted::Counted(4), "any", "any"));
        assert!(!Acted::Counted(4).since(&Acted::Counted(4), "any", "any"));
        assert!(Acted::Counted(3).since(&Acted::Counted(1), "any", "any"));
        assert!(!Acted::Counted(3).any_since(&Acted::Counted(3)));
        // Faults without counters act on everything they are applied to.
        assert!(Acted::Always.since(&Acted::Always, c1, s1));
        assert!(now.any_since(&before));
        assert!(!later.any_since(&later.clone()));
    }

    #[test]
    fn scenario_ids_are_unique() {
        let all = all_scenarios();
        let ids: std::collections::BTreeSet<_> = all.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids.len(), all.len());
    }
}

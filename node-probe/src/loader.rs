//! Loads probe-ebpf into the kernel, patches in this kernel's struct offsets, attaches every
//! program, and hands out the maps the agent uses.

use std::collections::HashMap as StdHashMap;

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, PerCpuArray, RingBuf},
    programs::{
        BtfTracePoint, CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, RawTracePoint,
        cgroup_skb::CgroupSkbLinkId, tp_btf::BtfTracePointLinkId,
    },
};
use netdx_api::targets::PayloadCapture;
use netdx_common::{Counter, KernelOffsets};
use tracing::{debug, info, warn};

use crate::{
    batches::BatchFlusher,
    btf::{Btf, BtfError},
};

/// The compiled eBPF object, built by build.rs with aya-build.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/probe-ebpf"));

/// (program function, tracepoint) pairs, all tp_btf.
const PROGRAMS: &[(&str, &str)] = &[
    ("on_sock_send", "sock_send_length"),
    ("on_sock_recv", "sock_recv_length"),
    ("on_state_change", "inet_sock_set_state"),
    ("on_retransmit", "tcp_retransmit_skb"),
    ("on_reset_rx", "tcp_receive_reset"),
    ("on_reset_tx", "tcp_send_reset"),
    ("on_kfree_skb", "kfree_skb"),
];

/// cgroup_skb programs attached per watched pod (payload heads for protocol classifiers).
const PAYLOAD_PROGRAMS: &[(&str, CgroupSkbAttachType)] = &[
    ("on_egress", CgroupSkbAttachType::Egress),
    ("on_ingress", CgroupSkbAttachType::Ingress),
];

/// The no-op baseline: the hot path's hook points with programs that return at once.
const NOOP_PROGRAMS: &[(&str, &str)] = &[
    ("noop_sock_send", "sock_send_length"),
    ("noop_sock_recv", "sock_recv_length"),
];

/// cgroup_skb no-op programs attached per watched pod in the baseline.
const NOOP_PAYLOAD_PROGRAMS: &[(&str, CgroupSkbAttachType)] = &[
    ("noop_egress", CgroupSkbAttachType::Egress),
    ("noop_ingress", CgroupSkbAttachType::Ingress),
];

/// Which programs to attach.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ProgramSet {
    /// Everything netdx records.
    #[default]
    Full,
    /// Programs that return at once on the hot path's hooks: the cost of the hooks alone,
    /// for benchmarks. Records nothing.
    Noop,
}

impl ProgramSet {
    fn tracepoints(self) -> &'static [(&'static str, &'static str)] {
        match self {
            ProgramSet::Full => PROGRAMS,
            ProgramSet::Noop => NOOP_PROGRAMS,
        }
    }

    fn payload(self) -> &'static [(&'static str, CgroupSkbAttachType)] {
        match self {
            ProgramSet::Full => PAYLOAD_PROGRAMS,
            ProgramSet::Noop => NOOP_PAYLOAD_PROGRAMS,
        }
    }
}

/// Links of the payload programs on one pod's cgroup.
#[derive(Debug)]
pub struct PodLinks(Vec<(&'static str, CgroupSkbLinkId)>);

/// Errors while loading or attaching.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Kernel BTF could not be read.
    #[error("reading kernel BTF: {0}")]
    Btf(#[from] BtfError),
    /// aya could not read kernel BTF.
    #[error("reading kernel BTF (aya): {0}")]
    AyaBtf(#[from] aya::BtfError),
    /// The object did not load (verifier, maps).
    #[error("loading eBPF object: {0}")]
    Load(#[from] Box<aya::EbpfError>),
    /// A program failed to load or attach.
    #[error("{action} {program} ({tracepoint}): {source}")]
    Program {
        /// "loading" or "attaching".
        action: &'static str,
        /// Program function name.
        program: &'static str,
        /// Tracepoint name.
        tracepoint: &'static str,
        /// Cause (boxed: aya's error is large and this path is cold).
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    /// A map is missing or of the wrong type.
    #[error("map {0}: {1}")]
    Map(&'static str, String),
    /// Attaching the payload programs to a pod's cgroup failed.
    #[error("attaching payload capture to {path}: {reason}")]
    Cgroup {
        /// cgroup directory.
        path: String,
        /// Cause.
        reason: String,
    },
    /// A configuration value cannot work.
    #[error("invalid probe configuration: {0}")]
    Config(String),
    /// The kernel would not run the batch flush program (`BPF_PROG_TEST_RUN` on each CPU);
    /// without it, exchanges of a quiet CPU would wait in its batch indefinitely.
    #[error("running the exchange-batch flush program (BPF_PROG_TEST_RUN): {0}")]
    Flush(#[source] std::io::Error),
}

/// Load-time sizing.
#[derive(Clone, Debug)]
pub struct ProbeConfig {
    /// Ring buffer size in bytes (power of two, multiple of the page size).
    pub ring_bytes: u32,
    /// Programs to attach.
    pub programs: ProgramSet,
    /// Let the kernel wake the reader once the ring is a quarter full (off: the reader drains
    /// on its timer only, as tests of the loss accounting need).
    pub wake_reader: bool,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        ProbeConfig {
            ring_bytes: 8 << 20,
            programs: ProgramSet::Full,
            wake_reader: true,
        }
    }
}

/// The loaded programs and the maps userspace talks to. Dropping it detaches everything.
pub struct LoadedProbe {
    /// Keeps programs and links alive; payload programs are attached per pod.
    ebpf: Ebpf,
    /// Watched cgroup ids.
    pub targets: HashMap<MapData, u64, u8>,
    /// Network namespaces whose drops are recorded.
    pub netns: HashMap<MapData, u32, u8>,
    /// The record stream.
    pub events: RingBuf<MapData>,
    /// Kernel-side health counters.
    pub counters: PerCpuArray<MapData, u64>,
    /// Generation of `targets`, bumped when pods are removed.
    targets_gen: Array<MapData, u32>,
    /// Which programs are attached.
    programs: ProgramSet,
    /// Links of the tracepoint programs while attached (see [`LoadedProbe::set_active`]).
    tracepoint_links: Vec<(&'static str, BtfTracePointLinkId)>,
    /// `enum skb_drop_reason` names of this kernel, without the SKB_DROP_REASON_ prefix.
    pub drop_reasons: StdHashMap<u32, String>,
    /// Writes the kernel's partial exchange batches (see [`LoadedProbe::flush_staged`]).
    flusher: BatchFlusher,
}

/// Resolves the fields the programs read. Without the socket's protocol and family nothing
/// can be tracked, so those are required; any other missing field only disables what
/// depends on it (and its reads are skipped).
pub fn resolve_offsets(btf: &Btf) -> Result<KernelOffsets, LoadError> {
    let mut o = KernelOffsets::MISSING;
    let fields: [(&mut u32, &str, &str); 20] = [
        (&mut o.sk_family, "sock", "__sk_common.skc_family"),
        (&mut o.sk_num, "sock", "__sk_common.skc_num"),
        (&mut o.sk_dport, "sock", "__sk_common.skc_dport"),
        (&mut o.sk_rcv_saddr, "sock", "__sk_common.skc_rcv_saddr"),
        (&mut o.sk_daddr, "sock", "__sk_common.skc_daddr"),
        (
            &mut o.sk_v6_rcv_saddr,
            "sock",
            "__sk_common.skc_v6_rcv_saddr",
        ),
        (&mut o.sk_v6_daddr, "sock", "__sk_common.skc_v6_daddr"),
        (&mut o.sk_protocol, "sock", "sk_protocol"),
        (&mut o.sk_err, "sock", "sk_err"),
        (&mut o.tcp_srtt_us, "tcp_sock", "srtt_us"),
        (&mut o.tcp_total_retrans, "tcp_sock", "total_retrans"),
        (&mut o.tcp_snd_wnd, "tcp_sock", "snd_wnd"),
        (&mut o.skb_sk, "sk_buff", "sk"),
        (&mut o.skb_dev, "sk_buff", "dev"),
        (&mut o.dev_nd_net, "net_device", "nd_net"),
        (&mut o.net_ns_inum, "net", "ns.inum"),
        (&mut o.sk_cookie, "sock", "__sk_common.skc_cookie"),
        (&mut o.sk_cgroup, "sock", "sk_cgrp_data.cgroup"),
        (&mut o.cgroup_kn, "cgroup", "kn"),
        (&mut o.kn_id, "kernfs_node", "id"),
    ];
    for (slot, ty, path) in fields {
        match btf.field_offset(ty, path) {
            Ok(off) => *slot = off,
            Err(e) if path == "sk_protocol" || path.ends_with("skc_family") => return Err(e.into()),
            Err(e) => warn!(error = %e, "field unavailable; dependent signal disabled"),
        }
    }
    Ok(o)
}

/// Raises RLIMIT_MEMLOCK for kernels that still charge BPF memory to it.
fn raise_memlock() {
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain syscall with a valid pointer.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) } != 0 {
        debug!("could not raise RLIMIT_MEMLOCK; fine on memcg-accounted kernels");
    }
}

impl LoadedProbe {
    /// Loads and attaches all programs.
    pub fn load(cfg: &ProbeConfig) -> Result<Self, LoadError> {
        let page = 4096u32;
        if !cfg.ring_bytes.is_power_of_two() || cfg.ring_bytes < page {
            return Err(LoadError::Config(format!(
                "ring buffer size {} must be a power of two >= {page}",
                cfg.ring_bytes
            )));
        }
        raise_memlock();
        let btf = Btf::from_sys_fs()?;
        let offsets = resolve_offsets(&btf)?;
        let drop_reasons = btf
            .enum_values("skb_drop_reason")
            .map(|v| {
                v.into_iter()
                    .map(|(n, v)| {
                        let short = n.strip_prefix("SKB_DROP_REASON_").unwrap_or(&n);
                        (v as u32, short.to_ascii_lowercase())
                    })
                    .collect()
            })
            .unwrap_or_default();
        let aya_btf = aya::Btf::from_sys_fs()?;
        let mut ebpf = EbpfLoader::new()
            .btf(&aya_btf)
            .override_global("OFFSETS", &offsets, true)
            .override_global(
                "RING_WAKE_BYTES",
                &if cfg.wake_reader {
                    u64::from(cfg.ring_bytes / 4)
                } else {
                    u64::MAX
                },
                true,
            )
            .map_max_entries("EVENTS", cfg.ring_bytes)
            .load(OBJECT)
            .map_err(Box::new)?;
        for &(program, tracepoint) in cfg.programs.tracepoints() {
            let err = |action| program_error(action, program, tracepoint);
            let prog: &mut BtfTracePoint = ebpf
                .program_mut(program)
                .ok_or_else(|| LoadError::Map("program", format!("{program} missing from object")))?
                .try_into()
                .map_err(err("loading"))?;
            prog.load(tracepoint, &aya_btf).map_err(err("loading"))?;
        }
        for &(program, _) in cfg.programs.payload() {
            let prog: &mut CgroupSkb = ebpf
                .program_mut(program)
                .ok_or_else(|| LoadError::Map("program", format!("{program} missing from object")))?
                .try_into()
                .map_err(program_error("loading", program, "cgroup_skb"))?;
            prog.load()
                .map_err(program_error("loading", program, "cgroup_skb"))?;
        }
        let flusher = {
            let program = crate::batches::PROGRAM;
            let err = || program_error("loading", program, "none: run by the reader");
            let prog: &mut RawTracePoint = ebpf
                .program_mut(program)
                .ok_or_else(|| LoadError::Map("program", format!("{program} missing from object")))?
                .try_into()
                .map_err(err())?;
            prog.load().map_err(err())?;
            let fd = prog
                .fd()
                .map_err(err())?
                .try_clone()
                .map_err(LoadError::Flush)?;
            BatchFlusher::new(fd).map_err(LoadError::Flush)?
        };
        let targets = take(&mut ebpf, "TARGETS", HashMap::try_from)?;
        let netns = take(&mut ebpf, "NETNS", HashMap::try_from)?;
        let events = take(&mut ebpf, "EVENTS", RingBuf::try_from)?;
        let counters = take(&mut ebpf, "COUNTERS", PerCpuArray::try_from)?;
        let targets_gen = take(&mut ebpf, "TARGETS_GEN", Array::try_from)?;
        info!(
            programs = ?cfg.programs,
            ring_bytes = cfg.ring_bytes,
            "eBPF programs attached"
        );
        Ok(LoadedProbe {
            ebpf,
            targets,
            netns,
            events,
            counters,
            targets_gen,
            programs: cfg.programs,
            tracepoint_links: Vec::new(),
            drop_reasons,
            flusher,
        })
        .and_then(|mut p| {
            // Attach once at load so a kernel that refuses fails here, with a clear error.
            p.set_active(true)?;
            Ok(p)
        })
    }

    /// Attaches the payload programs `payload` asks for to a pod's cgroup v2 directory.
    pub fn attach_pod(
        &mut self,
        cgroup_dir: &str,
        payload: PayloadCapture,
    ) -> Result<PodLinks, LoadError> {
        let err = |reason: String| LoadError::Cgroup {
            path: cgroup_dir.to_string(),
            reason,
        };
        let dir = std::fs::File::open(cgroup_dir).map_err(|e| err(e.to_string()))?;
        let mut links = PodLinks(Vec::new());
        let wanted = self.programs.payload().iter().filter(|(_, t)| match t {
            CgroupSkbAttachType::Egress => payload.egress(),
            CgroupSkbAttachType::Ingress => payload.ingress(),
        });
        for &(program, attach_type) in wanted {
            let prog: Result<&mut CgroupSkb, _> = match self.ebpf.program_mut(program) {
                Some(p) => p
                    .try_into()
                    .map_err(|e: aya::programs::ProgramError| err(e.to_string())),
                None => Err(err(format!("{program} missing"))),
            };
            // bpf_link attachments to cgroups always allow several programs.
            let attached = prog.and_then(|p| {
                p.attach(&dir, attach_type, CgroupAttachMode::Single)
                    .map_err(|e| err(e.to_string()))
            });
            match attached {
                Ok(id) => links.0.push((program, id)),
                Err(e) => {
                    self.detach_pod(links);
                    return Err(e);
                }
            }
        }
        Ok(links)
    }

    /// Detaches a pod's payload capture.
    pub fn detach_pod(&mut self, links: PodLinks) {
        for (program, id) in links.0 {
            if let Some(Ok(p)) = self
                .ebpf
                .program_mut(program)
                .map(<&mut CgroupSkb>::try_from)
                && let Err(e) = p.detach(id)
            {
                warn!(program, error = %e, "detaching payload capture");
            }
        }
    }

    /// Attaches (true) or detaches (false) the tracepoint programs. A node without watched
    /// pods detaches them, so its sockets pay nothing for the probe.
    pub fn set_active(&mut self, active: bool) -> Result<(), LoadError> {
        if active == !self.tracepoint_links.is_empty() {
            return Ok(());
        }
        if !active {
            for (program, id) in std::mem::take(&mut self.tracepoint_links) {
                if let Some(Ok(p)) = self
                    .ebpf
                    .program_mut(program)
                    .map(<&mut BtfTracePoint>::try_from)
                    && let Err(e) = p.detach(id)
                {
                    warn!(program, error = %e, "detaching tracepoint");
                }
            }
            info!("no watched pods on this node: tracepoints detached");
            return Ok(());
        }
        for &(program, tracepoint) in self.programs.tracepoints() {
            let attached = self
                .ebpf
                .program_mut(program)
                .ok_or_else(|| LoadError::Map("program", format!("{program} missing from object")))
                .and_then(|p| {
                    let err = || program_error("attaching", program, tracepoint);
                    let p: &mut BtfTracePoint = p.try_into().map_err(err())?;
                    p.attach().map_err(err())
                });
            match attached {
                Ok(id) => self.tracepoint_links.push((program, id)),
                Err(e) => {
                    // All or nothing: a half-attached probe would report half the story.
                    self.set_active(false)?;
                    return Err(e);
                }
            }
        }
        info!(
            programs = self.tracepoint_links.len(),
            "tracepoints attached"
        );
        Ok(())
    }

    /// Writes every CPU's partial exchange batch to the ring buffer, so a drain right after
    /// reads every exchange closed so far. A failure is logged; the batches then leave when
    /// full or at the next flush.
    pub fn flush_staged(&self) {
        if let Err(e) = self.flusher.flush() {
            warn!(error = %e, "flushing the exchange batches");
        }
    }

    /// Whether the tracepoint programs are attached.
    pub fn is_active(&self) -> bool {
        !self.tracepoint_links.is_empty()
    }

    /// Makes every tracked socket re-check that its pod is still watched.
    pub fn bump_targets_gen(&mut self) {
        let next = self.targets_gen.get(&0, 0).unwrap_or(0).wrapping_add(1);
        if let Err(e) = self.targets_gen.set(0, &next, 0) {
            warn!(error = %e, "bumping the targets generation");
        }
    }

    /// Sums the per-CPU kernel counters.
    pub fn kernel_counters(&self) -> Vec<(Counter, u64)> {
        Counter::ALL
            .iter()
            .map(|&c| {
                let v = self
                    .counters
                    .get(&(c as u32), 0)
                    .map(|per_cpu| per_cpu.iter().sum())
                    .unwrap_or(0);
                (c, v)
            })
            .collect()
    }
}

/// Maps a program's load or attach failure to a [`LoadError::Program`] naming it.
fn program_error(
    action: &'static str,
    program: &'static str,
    tracepoint: &'static str,
) -> impl FnOnce(aya::programs::ProgramError) -> LoadError {
    move |source| LoadError::Program {
        action,
        program,
        tracepoint,
        source: Box::new(source),
    }
}

fn take<T>(
    ebpf: &mut Ebpf,
    name: &'static str,
    conv: impl FnOnce(aya::maps::Map) -> Result<T, aya::maps::MapError>,
) -> Result<T, LoadError> {
    let map = ebpf
        .take_map(name)
        .ok_or_else(|| LoadError::Map(name, "missing".into()))?;
    conv(map).map_err(|e| LoadError::Map(name, e.to_string()))
}

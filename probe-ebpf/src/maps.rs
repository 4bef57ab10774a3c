//! Maps shared by all programs; every one is bounded (socket storage by the sockets of the
//! watched pods: the kernel frees an entry with its socket).

use aya_ebpf::{
    btf_maps::SkStorage,
    helpers::generated::bpf_sk_storage_get,
    macros::{btf_map, map},
    maps::{Array, HashMap, PerCpuArray, RingBuf},
};
use netdx_common::{
    COUNTER_COUNT, Counter, ExchangeBatch, Head, Heads, TARGET_NO_EGRESS_HEADS,
    TARGET_NO_INGRESS_HEADS,
};

/// Per-socket exchange state, kernel-only, laid out by who writes it. The kernel keeps the value
/// 8 bytes into a cache line, after the storage's map pointer that every lookup reads. So the
/// first line holds what rarely changes (every program reads it), the second what the socket
/// tracepoints write on every call, the third the heads the payload programs write: the ingress
/// program runs where a packet arrives, often on the peer's CPU, and a line both CPUs write
/// moves between them at every exchange.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SockState {
    /// Pod (cgroup v2 id) that owns the socket.
    pub cgroup_id: u64,
    /// Socket cookie.
    pub cookie: u64,
    /// When the SYN was sent (client sockets seen connecting), 0 once established.
    pub connect_start: u64,
    /// `TARGETS_GEN` when the pod was last confirmed watched.
    pub targets_gen: u32,
    /// TRACK_* state.
    pub tracked: u8,
    /// ROLE_CLIENT / ROLE_SERVER.
    pub role: u8,
    /// IP protocol.
    pub proto: u8,
    /// Address family.
    pub family: u8,
    /// Set at the CLOSE transition, so a close is reported once.
    pub closed: u8,
    /// The pod's TARGETS value (`TARGET_*` bits) when it was last checked.
    pub target: u8,
    /// Ends the first cache line.
    pub _line1: [u8; 22],
    /// First byte of the open request.
    pub req_start: u64,
    /// Last byte of the open request so far.
    pub req_last: u64,
    /// First byte of the response to it.
    pub resp_first: u64,
    /// Last byte of the response so far.
    pub resp_last: u64,
    /// Bytes of the open request.
    pub req_bytes: u32,
    /// Bytes of the response so far.
    pub resp_bytes: u32,
    /// First bytes of the open request (copied from `heads` when it opened).
    pub req_head: Head,
    /// PHASE_*.
    pub phase: u8,
    /// EXF_* bits collected during the open exchange.
    pub flags: u8,
    /// Valid bytes of `req_head`.
    pub req_head_len: u8,
    /// Valid bytes of `resp_head`.
    pub resp_head_len: u8,
    /// Ends the second cache line.
    pub _line2: [u8; 4],
    /// First bytes of an incoming response (copied from `heads` at its first receive, which
    /// reads this line anyway).
    pub resp_head: Head,
    /// Latest message heads, written by the cgroup_skb programs.
    pub heads: Heads,
}

// The groups start where the layout above wants them.
const _: () = assert!(
    core::mem::offset_of!(SockState, req_start) == 56
        && core::mem::offset_of!(SockState, resp_head) == 120
);

/// Storage exists but only the payload programs have written it (identity unknown).
pub const TRACK_NONE: u8 = 0;
/// A watched pod's TCP/UDP socket: exchanges are recorded.
pub const TRACK_ON: u8 = 1;
/// A watched pod's socket of another kind (unix, raw): ignored without further checks.
pub const TRACK_IGNORED: u8 = 2;
/// A socket of a pod that is not watched, as of `targets_gen`: ignored until the target set
/// changes (the cgroup check costs two helper calls; the storage lookup one).
pub const TRACK_UNWATCHED: u8 = 3;

/// No exchange open.
pub const PHASE_IDLE: u8 = 0;
/// Request bytes are flowing.
pub const PHASE_REQUEST: u8 = 1;
/// Response bytes are flowing.
pub const PHASE_RESPONSE: u8 = 2;

/// cgroup v2 ids of the watched pods, each with its `TARGET_*` bits, filled by the node-probe.
#[map(name = "TARGETS")]
pub static TARGETS: HashMap<u64, u8> = HashMap::with_max_entries(16384, 0);

/// Bumped by the node-probe whenever the targets change, so sockets re-check their pod.
#[map(name = "TARGETS_GEN")]
pub static TARGETS_GEN: Array<u32> = Array::with_max_entries(1, 0);

/// Network namespaces (inode numbers) whose drops are recorded: watched pods' and the node's.
#[map(name = "NETNS")]
pub static NETNS: HashMap<u32, u8> = HashMap::with_max_entries(16384, 0);

/// Exchange state per socket in socket-local storage: one pointer hop from the socket,
/// freed by the kernel with it (no stale entries, no address reuse to guard against).
#[btf_map]
pub static SOCKS: SkStorage<SockState> = SkStorage::new();

/// All records; the size is set by the loader (8 MiB by default).
#[map(name = "EVENTS")]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 23, 0);

/// A CPU's exchanges waiting to be written as one batch record.
#[repr(C)]
pub struct Staging {
    /// Set while a program on this CPU changes the batch: a program that interrupts it (a
    /// softirq, the reader's flush) must not touch the batch and writes directly instead.
    pub busy: u64,
    /// The batch; its `kind` is set at every write.
    pub batch: ExchangeBatch,
}

/// Per-CPU exchange batches (see [`ExchangeBatch`]).
#[map(name = "STAGING")]
pub static STAGING: PerCpuArray<Staging> = PerCpuArray::with_max_entries(1, 0);

/// Health counters, indexed by `netdx_common::Counter`.
#[map(name = "COUNTERS")]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_COUNT, 0);

/// Adds one to a health counter; returns its new value on this CPU.
#[inline(always)]
pub fn count(c: Counter) -> u64 {
    count_n(c, 1)
}

/// Adds `n` to a health counter; returns its new value on this CPU.
#[inline(always)]
pub fn count_n(c: Counter, n: u64) -> u64 {
    match COUNTERS.get_ptr_mut(c as u32) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU while the program runs.
        Some(p) => unsafe {
            *p += n;
            *p
        },
        None => 0,
    }
}

/// Takes back `n` [`count`]s (the counted things did not happen after all).
#[inline(always)]
pub fn uncount(c: Counter, n: u64) {
    if let Some(p) = COUNTERS.get_ptr_mut(c as u32) {
        // SAFETY: as in `count_n`.
        unsafe { *p = (*p).saturating_sub(n) };
    }
}

/// The `TARGET_*` bits of a watched pod's cgroup, None when it is not watched.
#[inline(always)]
pub fn target(cgroup_id: u64) -> Option<u8> {
    // SAFETY: a value of this map, read at once.
    TARGETS.get_ptr(&cgroup_id).map(|p| unsafe { *p })
}

/// Records a socket's pod TARGETS bits; heads of a direction no longer copied are dropped, so
/// a stale one is never reported as the current message's.
#[inline(always)]
pub fn set_target(st: &mut SockState, bits: u8) {
    st.target = bits;
    if bits & TARGET_NO_EGRESS_HEADS != 0 {
        st.heads.egress_len = 0;
    }
    if bits & TARGET_NO_INGRESS_HEADS != 0 {
        st.heads.ingress_len = 0;
    }
}

/// The current targets generation.
#[inline(always)]
pub fn targets_gen() -> u32 {
    TARGETS_GEN.get(0).copied().unwrap_or(0)
}

/// The socket's storage; created zeroed when `create` is set. `sk` must be a pointer the
/// verifier knows to be a socket (a typed tracepoint argument or a cgroup_skb `bpf_sock`).
#[inline(always)]
pub fn sock_state(sk: *mut core::ffi::c_void, create: bool) -> Option<&'static mut SockState> {
    let map = core::ptr::from_ref(&SOCKS).cast_mut().cast();
    let flags = if create {
        u64::from(aya_ebpf::bindings::BPF_SK_STORAGE_GET_F_CREATE)
    } else {
        0
    };
    // SAFETY: the helper checks the socket (NULL and non-full sockets give NULL); the returned
    // value lives as long as the socket, which outlives this program run.
    let p = unsafe { bpf_sk_storage_get(map, sk, core::ptr::null_mut(), flags) };
    // SAFETY: non-null storage of this map's value type.
    (!p.is_null()).then(|| unsafe { &mut *p.cast::<SockState>() })
}

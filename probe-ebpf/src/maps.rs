//! Maps shared by all programs; every one is bounded.

use aya_ebpf::{
    macros::map,
    maps::{HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use netdx_common::{COUNTER_COUNT, Counter, HEAD_LEN, Heads};

/// Per-socket exchange state, kernel-only.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SockState {
    /// Pod (cgroup v2 id) that owns the socket.
    pub cgroup_id: u64,
    /// Socket cookie.
    pub cookie: u64,
    /// First byte of the open request.
    pub req_start: u64,
    /// First byte of the response to it.
    pub resp_first: u64,
    /// Last byte of the response so far.
    pub resp_last: u64,
    /// When the SYN was sent (client sockets seen connecting), 0 once established.
    pub connect_start: u64,
    /// Bytes of the open request.
    pub req_bytes: u32,
    /// Bytes of the response so far.
    pub resp_bytes: u32,
    /// ROLE_CLIENT / ROLE_SERVER.
    pub role: u8,
    /// PHASE_*.
    pub phase: u8,
    /// IP protocol.
    pub proto: u8,
    /// EXF_* bits collected during the open exchange.
    pub flags: u8,
    /// Address family.
    pub family: u8,
    /// Set at the CLOSE transition; the entry stays until the socket is destroyed so that a
    /// reset sent while closing (SO_LINGER 0) is still attributed.
    pub closed: u8,
    /// Valid bytes of `req_head`.
    pub req_head_len: u8,
    /// Padding.
    pub _pad: u8,
    /// First bytes of the open request (copied from HEADS when it opened).
    pub req_head: [u8; HEAD_LEN],
}

impl SockState {
    /// A freshly tracked socket with no exchange open.
    #[inline(always)]
    pub fn new(
        cgroup_id: u64,
        cookie: u64,
        role: u8,
        proto: u8,
        family: u8,
        connect_start: u64,
    ) -> Self {
        SockState {
            cgroup_id,
            cookie,
            req_start: 0,
            resp_first: 0,
            resp_last: 0,
            connect_start,
            req_bytes: 0,
            resp_bytes: 0,
            role,
            phase: PHASE_IDLE,
            proto,
            flags: 0,
            family,
            closed: 0,
            req_head_len: 0,
            _pad: 0,
            req_head: [0; HEAD_LEN],
        }
    }
}

/// No exchange open.
pub const PHASE_IDLE: u8 = 0;
/// Request bytes are flowing.
pub const PHASE_REQUEST: u8 = 1;
/// Response bytes are flowing.
pub const PHASE_RESPONSE: u8 = 2;

/// cgroup v2 ids of the watched pods (value unused), filled by the node-probe.
#[map(name = "TARGETS")]
pub static TARGETS: HashMap<u64, u8> = HashMap::with_max_entries(16384, 0);

/// Network namespaces (inode numbers) whose drops are recorded: watched pods' and the node's.
#[map(name = "NETNS")]
pub static NETNS: HashMap<u32, u8> = HashMap::with_max_entries(16384, 0);

/// Exchange state per socket, keyed by the socket's kernel address.
/// LRU so that sockets closed without a CLOSE transition (UDP) age out.
#[map(name = "SOCKS")]
pub static SOCKS: LruHashMap<u64, SockState> = LruHashMap::with_max_entries(65536, 0);

/// Message heads per socket cookie, from the cgroup_skb programs of watched pods.
#[map(name = "HEADS")]
pub static HEADS: LruHashMap<u64, Heads> = LruHashMap::with_max_entries(65536, 0);

/// All records; the size is set by the loader (8 MiB by default).
#[map(name = "EVENTS")]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 23, 0);

/// Health counters, indexed by `netdx_common::Counter`.
#[map(name = "COUNTERS")]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_COUNT, 0);

/// Adds one to a health counter.
#[inline(always)]
pub fn count(c: Counter) {
    if let Some(p) = COUNTERS.get_ptr_mut(c as u32) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU while the program runs.
        unsafe { *p += 1 };
    }
}

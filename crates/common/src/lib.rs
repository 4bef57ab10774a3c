//! Records and configuration shared across the kernel/user boundary.
//!
//! Every struct is `#[repr(C)]`, `Copy`, and laid out without implicit padding so that the
//! eBPF programs and the node-probe agree byte for byte. The first byte of every ring-buffer
//! record is its [`RecordKind`], so userspace can dispatch on it.
#![no_std]

/// Kind tag stored in the first byte of every ring-buffer record.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordKind {
    /// A completed request/response exchange ([`Exchange`]).
    Exchange = 1,
    /// A connection-level L4 event ([`ConnEvent`]).
    Conn = 2,
    /// A packet dropped by the kernel with a drop reason ([`DropEvent`]).
    Drop = 3,
    /// Several exchanges of one CPU written at once ([`ExchangeBatch`]).
    Batch = 4,
}

impl RecordKind {
    /// Decodes the kind byte of a record.
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(Self::Exchange),
            2 => Some(Self::Conn),
            3 => Some(Self::Drop),
            4 => Some(Self::Batch),
            _ => None,
        }
    }
}

/// This socket initiated the connection (connect()).
pub const ROLE_CLIENT: u8 = 1;
/// This socket was accepted (or first seen receiving a request).
pub const ROLE_SERVER: u8 = 2;

/// TARGETS value bit: the pod is watched (always set).
pub const TARGET_WATCHED: u8 = 1 << 0;
/// TARGETS value bit: no egress payload program on the pod, outgoing heads are not copied.
pub const TARGET_NO_EGRESS_HEADS: u8 = 1 << 1;
/// TARGETS value bit: no ingress payload program on the pod, incoming heads are not copied.
pub const TARGET_NO_INGRESS_HEADS: u8 = 1 << 2;

/// Exchange flag: the exchange was closed by end of stream, not by a new request.
pub const EXF_EOF: u8 = 1 << 0;
/// Exchange flag: no response byte was seen before the exchange was closed.
pub const EXF_NO_RESPONSE: u8 = 1 << 1;
/// Exchange flag: a reset was received or sent on the socket during the exchange.
pub const EXF_RESET: u8 = 1 << 2;
/// Exchange flag: the socket was closed while the exchange was open.
pub const EXF_CLOSED: u8 = 1 << 3;
/// Exchange flag: a send failed while the peer advertised a zero receive window, which ended
/// the exchange (the receiver stopped reading: one per stalled send, unlike the receiver's
/// advertisements, which back off with the sender's persist timer).
pub const EXF_ZERO_WINDOW: u8 = 1 << 4;

/// One request/response exchange on one socket, seen from that socket's side.
///
/// On the client side the request is the run of sends and the response the run of receives
/// that follows; on the server side it is the reverse. Times are `bpf_ktime_get_ns`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Exchange {
    /// Always [`RecordKind::Exchange`].
    pub kind: u8,
    /// [`ROLE_CLIENT`] or [`ROLE_SERVER`].
    pub role: u8,
    /// `EXF_*` bits.
    pub flags: u8,
    /// IP protocol (6 TCP, 17 UDP).
    pub proto: u8,
    /// Smoothed RTT of the socket when the exchange closed, in microseconds (TCP only).
    pub srtt_us: u32,
    /// cgroup v2 id of the process that did the I/O (the pod).
    pub cgroup_id: u64,
    /// Socket cookie; joins exchanges to the socket's [`ConnEvent`]s.
    pub cookie: u64,
    /// Time of the first request byte.
    pub start_ns: u64,
    /// Delay from the first request byte to the first response byte.
    pub ttfb_ns: u64,
    /// Delay from the first request byte to the last response byte.
    pub ttlb_ns: u64,
    /// Request bytes.
    pub req_bytes: u32,
    /// Response bytes.
    pub resp_bytes: u32,
    /// Valid bytes in `req_head` (0 when payload capture is off for the pod).
    pub req_head_len: u8,
    /// Valid bytes in `resp_head`.
    pub resp_head_len: u8,
    /// Padding, zero.
    pub _pad: [u8; 2],
    /// Delay from the first to the last request byte (upload time), saturating.
    pub req_dur_ns: u32,
    /// First bytes of the request, for protocol classifiers.
    pub req_head: Head,
    /// First bytes of the response.
    pub resp_head: Head,
}

/// Most exchanges an [`ExchangeBatch`] holds.
pub const BATCH_LEN: usize = 16;

/// Exchanges one CPU staged and wrote to the ring buffer in one record: a ring-buffer write
/// (reserve lock, copy, commit) costs more than the rest of a socket hook, so the hooks stage
/// exchanges per CPU and write them [`BATCH_LEN`] at a time; the reader flushes partial
/// batches every 100 ms and before each window close. Only the first `len` records are valid.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ExchangeBatch {
    /// Always [`RecordKind::Batch`].
    pub kind: u8,
    /// Padding, zero.
    pub _pad: [u8; 3],
    /// Valid records.
    pub len: u32,
    /// The exchanges, oldest first.
    pub records: [Exchange; BATCH_LEN],
}

/// Bytes of an [`ExchangeBatch`] before its records.
pub const BATCH_HEADER_LEN: usize = 8;

/// Payload bytes kept from the start of each message.
pub const HEAD_LEN: usize = 16;

/// The first [`HEAD_LEN`] bytes of a message (only the recorded length is valid). 8-byte
/// aligned so the eBPF programs move it in two 8-byte words: as a plain byte array it was
/// zeroed by a byte-wise memset loop (a BPF-to-BPF call) and copied a byte at a time.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Head(pub [u8; HEAD_LEN]);

impl Head {
    /// All zero.
    pub const EMPTY: Head = Head([0; HEAD_LEN]);

    /// The valid part, `len` clamped to the buffer (the length comes from the kernel).
    pub fn bytes(&self, len: u8) -> &[u8] {
        &self.0[..usize::from(len).min(HEAD_LEN)]
    }
}

/// First bytes of the latest message in each direction of a socket, written by the
/// cgroup_skb programs and read when an exchange opens and closes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Heads {
    /// Start of the latest outgoing message.
    pub egress: Head,
    /// Start of the latest incoming message.
    pub ingress: Head,
    /// Valid bytes in `egress`.
    pub egress_len: u8,
    /// Valid bytes in `ingress`.
    pub ingress_len: u8,
    /// Direction of the last payload packet (1 egress, 2 ingress): a change starts a message.
    pub last_dir: u8,
    /// Padding, zero.
    pub _pad: u8,
    /// TCP acknowledgment number (network order) of the last incoming head copied (pods
    /// without an egress program: an incoming packet acknowledging more starts a message).
    pub last_ack: u32,
}

/// Kind of a [`ConnEvent`].
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnEventKind {
    /// A socket of a watched pod was seen for the first time (tuple and role known).
    Open = 1,
    /// An active open completed (`duration_ns` = connect latency).
    ConnectOk = 2,
    /// An active open failed (`err` = socket error, `flags` tell reset/timeout).
    ConnectFail = 3,
    /// The socket closed (final srtt and retransmit totals).
    Close = 4,
    /// A segment of this socket was retransmitted (this side is the sender).
    Retransmit = 5,
    /// A reset was received on this socket.
    ResetRx = 6,
    /// This socket sent a reset.
    ResetTx = 7,
}

impl ConnEventKind {
    /// Decodes the kind byte.
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(Self::Open),
            2 => Some(Self::ConnectOk),
            3 => Some(Self::ConnectFail),
            4 => Some(Self::Close),
            5 => Some(Self::Retransmit),
            6 => Some(Self::ResetRx),
            7 => Some(Self::ResetTx),
            _ => None,
        }
    }
}

/// Connection event flag: a reset was received before the connect failed.
pub const CF_RESET_SEEN: u8 = 1 << 0;
/// Connection event flag: the event concerns a socket that was still connecting (SYN_SENT).
pub const CF_CONNECTING: u8 = 1 << 1;

/// A connection-level event on a watched socket.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ConnEvent {
    /// Always [`RecordKind::Conn`].
    pub kind: u8,
    /// [`ConnEventKind`] as u8.
    pub event: u8,
    /// [`ROLE_CLIENT`] or [`ROLE_SERVER`] (0 when unknown).
    pub role: u8,
    /// Address family (2 AF_INET, 10 AF_INET6).
    pub family: u8,
    /// TCP state at the event (kernel numbering).
    pub state: u8,
    /// IP protocol.
    pub proto: u8,
    /// `CF_*` bits.
    pub flags: u8,
    /// Padding, zero.
    pub _pad: u8,
    /// Local port, host order.
    pub sport: u16,
    /// Remote port, host order.
    pub dport: u16,
    /// Socket error (positive errno) known at the event, 0 if none.
    pub err: u32,
    /// Smoothed RTT in microseconds (TCP).
    pub srtt_us: u32,
    /// Total retransmitted segments of the socket so far (TCP).
    pub total_retrans: u32,
    /// cgroup v2 id of the owning pod.
    pub cgroup_id: u64,
    /// Socket cookie.
    pub cookie: u64,
    /// Event time.
    pub ts_ns: u64,
    /// For connect events: time since the SYN was sent.
    pub duration_ns: u64,
    /// Local address (IPv4 in the first 4 bytes, network order).
    pub saddr: [u8; 16],
    /// Remote address (IPv4 in the first 4 bytes, network order).
    pub daddr: [u8; 16],
}

/// A packet freed with a drop reason (skb:kfree_skb).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct DropEvent {
    /// Always [`RecordKind::Drop`].
    pub kind: u8,
    /// Padding, zero.
    pub _pad: [u8; 3],
    /// `enum skb_drop_reason` value.
    pub reason: u32,
    /// Inode of the network namespace the packet was in (0 if unknown).
    pub netns: u32,
    /// Padding, zero.
    pub _pad2: u32,
    /// Cookie of the watched socket the packet belonged to (0 if none).
    pub cookie: u64,
    /// cgroup id of that socket's pod (0 if none).
    pub cgroup_id: u64,
    /// Event time.
    pub ts_ns: u64,
}

/// Indexes of the per-CPU counters array; every failure on the kernel side lands here.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Send/receive events of watched pods.
    SockEvents = 0,
    /// Exchanges recorded: written to the ring buffer or staged in a batch for it.
    Exchanges = 1,
    /// Records lost because the ring buffer was full.
    RingbufFull = 2,
    /// New sockets not tracked because their socket storage could not be created.
    SockStorageFailed = 3,
    /// bpf_probe_read_kernel failures.
    ProbeReadFailed = 4,
    /// Connection events written.
    ConnEvents = 5,
    /// Drop events written.
    DropEvents = 6,
    /// Sockets of watched pods seen for the first time.
    SocketsTracked = 7,
    /// Connecting sockets not tracked because their socket storage could not be created.
    ConnectStorageFailed = 8,
    /// Packets whose message head was not kept because socket storage could not be created.
    HeadsStorageFailed = 9,
    /// bpf_skb_load_bytes failures while capturing a message head.
    PayloadReadFailed = 10,
}

/// Number of counters in [`Counter`].
pub const COUNTER_COUNT: u32 = 11;

impl Counter {
    /// All counters, in index order.
    pub const ALL: [Counter; COUNTER_COUNT as usize] = [
        Counter::SockEvents,
        Counter::Exchanges,
        Counter::RingbufFull,
        Counter::SockStorageFailed,
        Counter::ProbeReadFailed,
        Counter::ConnEvents,
        Counter::DropEvents,
        Counter::SocketsTracked,
        Counter::ConnectStorageFailed,
        Counter::HeadsStorageFailed,
        Counter::PayloadReadFailed,
    ];

    /// Stable snake_case name used for metrics.
    pub fn name(self) -> &'static str {
        match self {
            Counter::SockEvents => "sock_events",
            Counter::Exchanges => "exchanges",
            Counter::RingbufFull => "ringbuf_full",
            Counter::SockStorageFailed => "sock_storage_failed",
            Counter::ProbeReadFailed => "probe_read_failed",
            Counter::ConnEvents => "conn_events",
            Counter::DropEvents => "drop_events",
            Counter::SocketsTracked => "sockets_tracked",
            Counter::ConnectStorageFailed => "connect_storage_failed",
            Counter::HeadsStorageFailed => "heads_storage_failed",
            Counter::PayloadReadFailed => "payload_read_failed",
        }
    }
}

/// Offset value meaning "field not found in this kernel's BTF"; readers skip it.
pub const OFFSET_MISSING: u32 = u32::MAX;

/// Kernel struct field offsets resolved from /sys/kernel/btf/vmlinux at load time.
///
/// Rust eBPF has no CO-RE relocations, so the loader reads the running kernel's BTF and
/// writes these into the program's read-only data before loading.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct KernelOffsets {
    /// sock.__sk_common.skc_family (u16).
    pub sk_family: u32,
    /// sock.__sk_common.skc_num (u16, local port, host order).
    pub sk_num: u32,
    /// sock.__sk_common.skc_dport (be16).
    pub sk_dport: u32,
    /// sock.__sk_common.skc_rcv_saddr (be32).
    pub sk_rcv_saddr: u32,
    /// sock.__sk_common.skc_daddr (be32).
    pub sk_daddr: u32,
    /// sock.__sk_common.skc_v6_rcv_saddr (16 bytes).
    pub sk_v6_rcv_saddr: u32,
    /// sock.__sk_common.skc_v6_daddr (16 bytes).
    pub sk_v6_daddr: u32,
    /// sock.sk_protocol (u16).
    pub sk_protocol: u32,
    /// sock.sk_err (int).
    pub sk_err: u32,
    /// tcp_sock.srtt_us (u32, <<3 scaled).
    pub tcp_srtt_us: u32,
    /// tcp_sock.total_retrans (u32).
    pub tcp_total_retrans: u32,
    /// tcp_sock.snd_wnd (u32, the peer's advertised receive window).
    pub tcp_snd_wnd: u32,
    /// sk_buff.sk (pointer).
    pub skb_sk: u32,
    /// sk_buff.dev (pointer).
    pub skb_dev: u32,
    /// net_device.nd_net (possible_net_t holding struct net *).
    pub dev_nd_net: u32,
    /// net.ns.inum (unsigned int).
    pub net_ns_inum: u32,
    /// sock.__sk_common.skc_cookie (u64, 0 until first asked for).
    pub sk_cookie: u32,
    /// sock.sk_cgrp_data.cgroup (the socket's cgroup v2, pointer).
    pub sk_cgroup: u32,
    /// cgroup.kn (pointer).
    pub cgroup_kn: u32,
    /// kernfs_node.id (u64, the cgroup id).
    pub kn_id: u32,
}

impl KernelOffsets {
    /// All offsets unknown; the programs then record only what needs no struct reads.
    pub const MISSING: KernelOffsets = KernelOffsets {
        sk_family: OFFSET_MISSING,
        sk_num: OFFSET_MISSING,
        sk_dport: OFFSET_MISSING,
        sk_rcv_saddr: OFFSET_MISSING,
        sk_daddr: OFFSET_MISSING,
        sk_v6_rcv_saddr: OFFSET_MISSING,
        sk_v6_daddr: OFFSET_MISSING,
        sk_protocol: OFFSET_MISSING,
        sk_err: OFFSET_MISSING,
        tcp_srtt_us: OFFSET_MISSING,
        tcp_total_retrans: OFFSET_MISSING,
        tcp_snd_wnd: OFFSET_MISSING,
        skb_sk: OFFSET_MISSING,
        skb_dev: OFFSET_MISSING,
        dev_nd_net: OFFSET_MISSING,
        net_ns_inum: OFFSET_MISSING,
        sk_cookie: OFFSET_MISSING,
        sk_cgroup: OFFSET_MISSING,
        cgroup_kn: OFFSET_MISSING,
        kn_id: OFFSET_MISSING,
    };
}

#[cfg(feature = "user")]
mod pod_impls {
    use super::*;
    // SAFETY: all are repr(C), Copy, without padding holes, valid for any bit pattern.
    unsafe impl aya::Pod for Exchange {}
    unsafe impl aya::Pod for ExchangeBatch {}
    unsafe impl aya::Pod for ConnEvent {}
    unsafe impl aya::Pod for DropEvent {}
    unsafe impl aya::Pod for KernelOffsets {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_have_no_surprises() {
        assert_eq!(size_of::<Exchange>(), 96);
        assert_eq!(
            core::mem::offset_of!(ExchangeBatch, records),
            BATCH_HEADER_LEN
        );
        assert_eq!(
            size_of::<ExchangeBatch>(),
            BATCH_HEADER_LEN + 96 * BATCH_LEN
        );
        assert_eq!(size_of::<Heads>(), 40);
        assert_eq!(core::mem::align_of::<Head>(), 8);
        assert_eq!(core::mem::offset_of!(Exchange, req_head), 64);
        assert_eq!(size_of::<ConnEvent>(), 88);
        assert_eq!(size_of::<DropEvent>(), 40);
        assert_eq!(size_of::<KernelOffsets>(), 20 * 4);
    }

    #[test]
    fn kinds_round_trip() {
        for k in [
            RecordKind::Exchange,
            RecordKind::Conn,
            RecordKind::Drop,
            RecordKind::Batch,
        ] {
            assert_eq!(RecordKind::from_u8(k as u8), Some(k));
        }
        for v in 1..=7u8 {
            assert_eq!(ConnEventKind::from_u8(v).map(|k| k as u8), Some(v));
        }
        assert_eq!(RecordKind::from_u8(0), None);
        assert_eq!(RecordKind::from_u8(5), None);
        assert_eq!(ConnEventKind::from_u8(8), None);
    }
}

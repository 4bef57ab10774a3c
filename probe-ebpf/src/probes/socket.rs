//! sock_send_length / sock_recv_length: the hot path.
//!
//! Both fire after every socket send/receive (write, send*, read, recv*, splice) with the
//! socket and the byte count. A change of direction on a socket closes one exchange. A
//! tracked socket costs one socket-storage lookup and one clock read per call; sockets of
//! other pods cost the cgroup check only.

use aya_ebpf::{
    helpers::{bpf_get_current_cgroup_id, bpf_get_socket_cookie, bpf_ktime_get_ns},
    macros::btf_tracepoint,
    programs::BtfTracePointContext,
};
use netdx_common::{
    ConnEventKind, Counter, EXF_EOF, EXF_ZERO_WINDOW, ROLE_CLIENT, ROLE_SERVER,
    TARGET_NO_INGRESS_HEADS,
};

use crate::{
    kernel::{offsets, read},
    maps::{
        PHASE_IDLE, PHASE_REQUEST, PHASE_RESPONSE, SockState, TRACK_IGNORED, TRACK_ON,
        TRACK_UNWATCHED, count, set_target, sock_state, target, targets_gen,
    },
    probes::payload::DIR_INGRESS,
    records::{conn_event, flush_exchange, message_head},
};

const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
/// A UDP request still unanswered this long when the next one leaves went unanswered (a DNS
/// query that timed out); request datagrams closer together are parts of one request.
const UDP_NO_ANSWER_NS: u64 = 100_000_000;

#[btf_tracepoint(function = "sock_send_length")]
pub fn on_sock_send(ctx: BtfTracePointContext) -> i32 {
    on_io(&ctx, true);
    0
}

#[btf_tracepoint(function = "sock_recv_length")]
pub fn on_sock_recv(ctx: BtfTracePointContext) -> i32 {
    on_io(&ctx, false);
    0
}

#[inline(always)]
fn on_io(ctx: &BtfTracePointContext, is_send: bool) {
    let sk: *mut core::ffi::c_void = ctx.arg(0);
    let ret: i32 = ctx.arg(1);
    if ret <= 0 {
        if ret == 0 && !is_send {
            on_eof(sk);
        } else if ret < 0 && is_send {
            on_send_failed(sk);
        }
        return;
    }
    let st = match sock_state(sk, false) {
        Some(st) if st.tracked == TRACK_ON => {
            if st.targets_gen != targets_gen() && !still_watched(st) {
                return;
            }
            st
        }
        Some(st) if st.tracked == TRACK_IGNORED => return,
        // Another pod's socket, and the targets have not changed since it was checked.
        Some(st) if st.tracked == TRACK_UNWATCHED && st.targets_gen == targets_gen() => return,
        _ => match track(sk, is_send) {
            Some(st) => st,
            None => return,
        },
    };
    if st.closed != 0 {
        return;
    }
    count(Counter::SockEvents);
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    if !is_send && st.target & TARGET_NO_INGRESS_HEADS != 0 {
        // No ingress program marks the change of direction: the next outgoing payload packet
        // starts a new message. A receive always comes before the answer to what it read.
        st.heads.last_dir = DIR_INGRESS;
    }
    let request_dir = (st.role == ROLE_CLIENT) == is_send;
    let bytes = ret as u32;
    if request_dir {
        if st.phase == PHASE_RESPONSE
            || (st.proto == IPPROTO_UDP
                && st.phase == PHASE_REQUEST
                && now.wrapping_sub(st.req_last) >= UDP_NO_ANSWER_NS)
        {
            flush_exchange(st, sk, 0);
        }
        if st.phase == PHASE_IDLE {
            st.phase = PHASE_REQUEST;
            st.req_start = now;
            st.req_bytes = 0;
            // The request's first packet has already passed the cgroup_skb hook.
            let (head, len) = message_head(st, st.role == ROLE_CLIENT);
            st.req_head = head;
            st.req_head_len = len;
        }
        st.req_last = now;
        st.req_bytes = st.req_bytes.wrapping_add(bytes);
    } else {
        if st.phase == PHASE_IDLE {
            // Data against the request direction with no request open (a server greeting,
            // a push): not part of a request/response exchange.
            return;
        }
        if st.phase == PHASE_REQUEST {
            st.phase = PHASE_RESPONSE;
            st.resp_first = now;
            st.resp_bytes = 0;
            if !is_send {
                // Kept now, not at the next send that closes the exchange: that send's
                // tracepoint fires after the send, and its answer can already have replaced
                // the ingress head.
                let (head, len) = message_head(st, false);
                st.resp_head = head;
                st.resp_head_len = len;
            }
        }
        st.resp_last = now;
        st.resp_bytes = st.resp_bytes.wrapping_add(bytes);
        // A datagram answers a datagram: close UDP exchanges at the first response.
        if st.proto == IPPROTO_UDP {
            flush_exchange(st, sk, 0);
        }
    }
}

/// The targets changed since this socket last checked: is its pod still watched?
#[inline(never)]
fn still_watched(st: &mut SockState) -> bool {
    if let Some(bits) = target(st.cgroup_id) {
        st.targets_gen = targets_gen();
        set_target(st, bits);
        true
    } else {
        // Forget the socket; if its pod is watched again, the next call tracks it afresh.
        st.tracked = crate::maps::TRACK_NONE;
        false
    }
}

/// End of stream on a tracked socket closes its open exchange.
#[inline(always)]
fn on_eof(sk: *mut core::ffi::c_void) {
    if let Some(st) = sock_state(sk, false)
        && st.tracked == TRACK_ON
    {
        flush_exchange(st, sk, EXF_EOF);
    }
}

/// A send that failed (timed out, would block) while the peer advertised a zero receive
/// window ends the open exchange, marked: the receiver stopped reading. Marked at the failed
/// send, not at close, because a socket closed with unsent data lingers in FIN_WAIT1 until
/// the peer reads or resets, long after the window that should show the stall. Only a send
/// that continues the open message counts: a client's request, a server's response (a
/// client's failed first send of a new request leaves the answered exchange alone).
#[inline(never)]
fn on_send_failed(sk: *mut core::ffi::c_void) {
    if let Some(st) = sock_state(sk, false)
        && st.tracked == TRACK_ON
        && st.proto == IPPROTO_TCP
        && st.phase
            == if st.role == ROLE_CLIENT {
                PHASE_REQUEST
            } else {
                PHASE_RESPONSE
            }
        && read::<u32>(sk as *const u8, offsets().tcp_snd_wnd) == Some(0)
    {
        flush_exchange(st, sk, EXF_ZERO_WINDOW);
    }
}

/// First sight of a socket of a watched pod: read its identity once and start tracking.
#[inline(never)]
fn track(sk: *mut core::ffi::c_void, is_send: bool) -> Option<&'static mut SockState> {
    // SAFETY: helper without arguments.
    let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    let gen_now = targets_gen();
    let Some(bits) = target(cgroup_id) else {
        // Remember the verdict so the next call on this socket costs one lookup. A failure to
        // create the storage only means the check runs again next time.
        if let Some(st) = sock_state(sk, true) {
            st.tracked = TRACK_UNWATCHED;
            st.targets_gen = gen_now;
        }
        return None;
    };
    let o = offsets();
    let base = sk as *const u8;
    let proto = read::<u16>(base, o.sk_protocol)? as u8;
    let Some(st) = sock_state(sk, true) else {
        count(Counter::SockStorageFailed);
        return None;
    };
    if proto != IPPROTO_TCP && proto != IPPROTO_UDP {
        st.tracked = TRACK_IGNORED;
        return None;
    }
    let family = read::<u16>(base, o.sk_family)? as u8;
    // Sockets that connected while watched were tracked at SYN_SENT; other TCP sockets were
    // accepted. UDP has no handshake: the first direction decides.
    let role = if proto == IPPROTO_TCP || !is_send {
        ROLE_SERVER
    } else {
        ROLE_CLIENT
    };
    // SAFETY: sk is the tracepoint's typed struct sock pointer.
    let cookie = unsafe { bpf_get_socket_cookie(sk) };
    start(st, cgroup_id, bits, cookie, role, proto, family, 0);
    count(Counter::SocketsTracked);
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    conn_event(ConnEventKind::Open, st, base, now, 0, 0, 0);
    Some(st)
}

/// (Re)starts tracking in a socket's storage; the message heads the payload programs may
/// already have written are kept.
#[inline(always)]
#[allow(clippy::too_many_arguments)] // one call per field group of a socket's identity
pub fn start(
    st: &mut SockState,
    cgroup_id: u64,
    target_bits: u8,
    cookie: u64,
    role: u8,
    proto: u8,
    family: u8,
    connect_start: u64,
) {
    st.cgroup_id = cgroup_id;
    st.cookie = cookie;
    st.req_start = 0;
    st.req_last = 0;
    st.resp_first = 0;
    st.resp_last = 0;
    st.connect_start = connect_start;
    st.req_bytes = 0;
    st.resp_bytes = 0;
    st.targets_gen = targets_gen();
    st.role = role;
    st.phase = PHASE_IDLE;
    st.proto = proto;
    st.flags = 0;
    st.family = family;
    st.closed = 0;
    st.req_head_len = 0;
    set_target(st, target_bits);
    st.tracked = TRACK_ON;
}

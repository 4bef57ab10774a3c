//! sock_send_length / sock_recv_length: the hot path.
//!
//! Both fire after every socket send/receive (write, send*, read, recv*, splice) with the
//! socket and the byte count. A change of direction on a socket closes one exchange.

use aya_ebpf::{
    helpers::{bpf_get_current_cgroup_id, bpf_get_socket_cookie, bpf_ktime_get_ns},
    macros::btf_tracepoint,
    programs::BtfTracePointContext,
};
use netdx_common::{ConnEventKind, Counter, EXF_EOF, ROLE_CLIENT, ROLE_SERVER};

use crate::{
    kernel::{offsets, read},
    maps::{PHASE_IDLE, PHASE_REQUEST, PHASE_RESPONSE, SOCKS, SockState, TARGETS, count},
    records::{conn_event, flush_exchange, message_head},
};

const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

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
    let sk: *const u8 = ctx.arg(0);
    let ret: i32 = ctx.arg(1);
    if ret <= 0 {
        if ret == 0 && !is_send {
            on_eof(sk);
        }
        return;
    }
    // SAFETY: helper without arguments.
    let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    if TARGETS.get_ptr(&cgroup_id).is_none() {
        return;
    }
    count(Counter::SockEvents);
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let key = sk as u64;
    let st = match SOCKS.get_ptr_mut(&key) {
        // SAFETY: map value pointer valid for the program's run.
        Some(p) if unsafe { (*p).closed } == 0 && !stale_udp(sk, unsafe { &*p }) => unsafe {
            &mut *p
        },
        // Unknown, a closed socket whose address was reused before it was destroyed, or a
        // UDP socket (no close event to clean up after) whose address was reused.
        _ => match track(sk, cgroup_id, is_send, now) {
            // SAFETY: as above.
            Some(p) => unsafe { &mut *p },
            None => return,
        },
    };
    let request_dir = (st.role == ROLE_CLIENT) == is_send;
    let bytes = ret as u32;
    if request_dir {
        if st.phase == PHASE_RESPONSE {
            flush_exchange(st, sk, 0);
        }
        if st.phase == PHASE_IDLE {
            st.phase = PHASE_REQUEST;
            st.req_start = now;
            st.req_bytes = 0;
            // The request's first packet has already passed the cgroup_skb hook.
            let (head, len) = message_head(st.cookie, st.role == ROLE_CLIENT);
            st.req_head = head;
            st.req_head_len = len;
        }
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
        }
        st.resp_last = now;
        st.resp_bytes = st.resp_bytes.wrapping_add(bytes);
        // A datagram answers a datagram: close UDP exchanges at the first response.
        if st.proto == IPPROTO_UDP {
            flush_exchange(st, sk, 0);
        }
    }
}

/// UDP sockets have no close tracepoint: their entry outlives them until LRU eviction, so a
/// new socket at the same address must be told apart by its cookie (only UDP pays for it).
#[inline(always)]
fn stale_udp(sk: *const u8, st: &SockState) -> bool {
    // SAFETY: sk is the tracepoint's typed socket pointer.
    st.proto == IPPROTO_UDP && unsafe { bpf_get_socket_cookie(sk as *mut _) } != st.cookie
}

/// End of stream on a tracked socket closes its open exchange.
#[inline(always)]
fn on_eof(sk: *const u8) {
    let key = sk as u64;
    if let Some(p) = SOCKS.get_ptr_mut(&key) {
        // SAFETY: map value pointer valid for the program's run.
        flush_exchange(unsafe { &mut *p }, sk, EXF_EOF);
    }
}

/// First sight of a socket of a watched pod: read its identity once and start tracking.
#[inline(never)]
fn track(sk: *const u8, cgroup_id: u64, is_send: bool, now: u64) -> Option<*mut SockState> {
    let o = offsets();
    let proto = read::<u16>(sk, o.sk_protocol)? as u8;
    if proto != IPPROTO_TCP && proto != IPPROTO_UDP {
        return None;
    }
    let family = read::<u16>(sk, o.sk_family)? as u8;
    // Sockets that connected while watched were tracked at SYN_SENT; other TCP sockets were
    // accepted. UDP has no handshake: the first direction decides.
    let role = if proto == IPPROTO_TCP || !is_send {
        ROLE_SERVER
    } else {
        ROLE_CLIENT
    };
    // SAFETY: sk is the tracepoint's typed struct sock pointer.
    let cookie = unsafe { bpf_get_socket_cookie(sk as *mut _) };
    let st = SockState::new(cgroup_id, cookie, role, proto, family, 0);
    let key = sk as u64;
    if SOCKS.insert(&key, &st, 0).is_err() {
        count(Counter::SockMapInsertFailed);
        return None;
    }
    count(Counter::SocketsTracked);
    conn_event(ConnEventKind::Open, &st, sk, now, 0, 0, 0);
    SOCKS.get_ptr_mut(&key)
}

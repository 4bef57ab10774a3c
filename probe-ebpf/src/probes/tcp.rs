//! TCP connection lifecycle: connect outcome and latency, close, retransmits, resets.

use aya_ebpf::{
    helpers::{bpf_get_current_cgroup_id, bpf_get_socket_cookie, bpf_ktime_get_ns},
    macros::btf_tracepoint,
    programs::BtfTracePointContext,
};
use netdx_common::{
    CF_CONNECTING, CF_RESET_SEEN, ConnEventKind, Counter, EXF_CLOSED, EXF_RESET, ROLE_CLIENT,
};

use crate::{
    kernel::{offsets, read},
    maps::{SockState, TRACK_ON, count, sock_state, target},
    probes::socket::start,
    records::{conn_event, flush_exchange},
};

const TCP_ESTABLISHED: i32 = 1;
const TCP_SYN_SENT: i32 = 2;
const TCP_CLOSE: i32 = 7;

/// The state of a tracked socket.
#[inline(always)]
fn tracked(sk: *mut core::ffi::c_void) -> Option<&'static mut SockState> {
    sock_state(sk, false).filter(|st| st.tracked == TRACK_ON)
}

#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn on_state_change(ctx: BtfTracePointContext) -> i32 {
    let sk: *mut core::ffi::c_void = ctx.arg(0);
    let old: i32 = ctx.arg(1);
    let new: i32 = ctx.arg(2);
    if new == TCP_SYN_SENT {
        on_connect_start(sk);
        return 0;
    }
    if new != TCP_ESTABLISHED && new != TCP_CLOSE {
        return 0;
    }
    let Some(st) = tracked(sk) else { return 0 };
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    if old == TCP_SYN_SENT {
        let dur = now.saturating_sub(st.connect_start);
        st.connect_start = 0;
        if new == TCP_ESTABLISHED {
            conn_event(
                ConnEventKind::ConnectOk,
                st,
                sk.cast(),
                now,
                dur,
                0,
                new as u8,
            );
        } else {
            let flags = CF_CONNECTING
                | if st.flags & EXF_RESET != 0 {
                    CF_RESET_SEEN
                } else {
                    0
                };
            conn_event(
                ConnEventKind::ConnectFail,
                st,
                sk.cast(),
                now,
                dur,
                flags,
                old as u8,
            );
            st.closed = 1;
        }
        return 0;
    }
    if new == TCP_CLOSE && st.closed == 0 {
        flush_exchange(st, sk, EXF_CLOSED);
        conn_event(ConnEventKind::Close, st, sk.cast(), now, 0, 0, old as u8);
        st.closed = 1;
    }
    0
}

/// connect() runs in the caller's context, so the cgroup filter applies here.
#[inline(always)]
fn on_connect_start(sk: *mut core::ffi::c_void) {
    // SAFETY: helper without arguments.
    let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    let Some(bits) = target(cgroup_id) else {
        return;
    };
    let family = read::<u16>(sk.cast(), offsets().sk_family).unwrap_or(0) as u8;
    let Some(st) = sock_state(sk, true) else {
        count(Counter::ConnectStorageFailed);
        return;
    };
    // SAFETY: helpers; sk is the tracepoint's typed socket pointer.
    let (now, cookie) = unsafe { (bpf_ktime_get_ns(), bpf_get_socket_cookie(sk)) };
    start(st, cgroup_id, bits, cookie, ROLE_CLIENT, 6, family, now);
    count(Counter::SocketsTracked);
}

#[btf_tracepoint(function = "tcp_retransmit_skb")]
pub fn on_retransmit(ctx: BtfTracePointContext) -> i32 {
    let sk: *mut core::ffi::c_void = ctx.arg(0);
    if let Some(st) = tracked(sk) {
        let flags = if st.connect_start != 0 {
            CF_CONNECTING
        } else {
            0
        };
        // SAFETY: helper without arguments.
        let now = unsafe { bpf_ktime_get_ns() };
        conn_event(ConnEventKind::Retransmit, st, sk.cast(), now, 0, flags, 0);
    }
    0
}

#[btf_tracepoint(function = "tcp_receive_reset")]
pub fn on_reset_rx(ctx: BtfTracePointContext) -> i32 {
    on_reset(ctx.arg(0), ConnEventKind::ResetRx);
    0
}

#[btf_tracepoint(function = "tcp_send_reset")]
pub fn on_reset_tx(ctx: BtfTracePointContext) -> i32 {
    on_reset(ctx.arg(0), ConnEventKind::ResetTx);
    0
}

#[inline(always)]
fn on_reset(sk: *mut core::ffi::c_void, kind: ConnEventKind) {
    // tcp_send_reset has no socket when answering a segment for an unknown connection.
    if sk.is_null() {
        return;
    }
    if let Some(st) = tracked(sk) {
        st.flags |= EXF_RESET;
        let flags = if st.connect_start != 0 {
            CF_CONNECTING
        } else {
            0
        };
        // SAFETY: helper without arguments.
        let now = unsafe { bpf_ktime_get_ns() };
        conn_event(kind, st, sk.cast(), now, 0, flags, 0);
    }
}

//! Writers of ring-buffer records; every failed reserve is counted as a lost record.

use aya_ebpf::bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP};
use netdx_common::{
    BATCH_LEN, ConnEvent, ConnEventKind, Counter, EXF_NO_RESPONSE, Exchange, ExchangeBatch, Head,
    ROLE_CLIENT, RecordKind,
};

use crate::{
    kernel::{offsets, read},
    maps::{
        EVENTS, PHASE_IDLE, PHASE_REQUEST, PHASE_RESPONSE, STAGING, SockState, count, count_n,
        uncount,
    },
};

const IPPROTO_TCP: u8 = 6;

/// Smoothed RTT in microseconds (tcp_sock.srtt_us is stored <<3), 0 for non-TCP.
#[inline(always)]
pub fn srtt_us(sk: *const u8, proto: u8) -> u32 {
    if proto != IPPROTO_TCP {
        return 0;
    }
    read::<u32>(sk, offsets().tcp_srtt_us).map_or(0, |v| v >> 3)
}

/// The latest message head of a socket in one direction (empty when not captured).
#[inline(always)]
pub fn message_head(st: &SockState, egress: bool) -> (Head, u8) {
    if egress {
        (st.heads.egress, st.heads.egress_len)
    } else {
        (st.heads.ingress, st.heads.ingress_len)
    }
}

/// Closes the open exchange of `st` (if any) and records it; resets the state to idle.
#[inline(always)]
pub fn flush_exchange(st: &mut SockState, sk: *mut core::ffi::c_void, extra_flags: u8) {
    let phase = st.phase;
    if phase == PHASE_IDLE {
        return;
    }
    st.phase = PHASE_IDLE;
    let mut flags = st.flags | extra_flags;
    let (ttfb, ttlb) = if phase == PHASE_RESPONSE {
        (st.resp_first - st.req_start, st.resp_last - st.req_start)
    } else {
        flags |= EXF_NO_RESPONSE;
        (0, 0)
    };
    st.flags = 0;
    // A request still open on the server side at close is the peer's half-sent data, not an exchange.
    if phase == PHASE_REQUEST && st.role == netdx_common::ROLE_SERVER {
        return;
    }
    // An incoming response's head was kept at its first receive; an outgoing one is the
    // latest outgoing message (the next cannot leave before the next request is read).
    let (resp_head, resp_head_len) = if phase != PHASE_RESPONSE {
        (Head::EMPTY, 0)
    } else if st.role == ROLE_CLIENT {
        (st.resp_head, st.resp_head_len)
    } else {
        message_head(st, true)
    };
    // Counted first: its value samples the srtt read below.
    let n = count(Counter::Exchanges);
    let record = Exchange {
        kind: RecordKind::Exchange as u8,
        role: st.role,
        flags,
        proto: st.proto,
        // Every 4th exchange per CPU: srtt moves slowly, and 0 means "not sampled".
        srtt_us: if n & 3 == 0 {
            srtt_us(sk as *const u8, st.proto)
        } else {
            0
        },
        cgroup_id: st.cgroup_id,
        cookie: st.cookie,
        start_ns: st.req_start,
        ttfb_ns: ttfb,
        ttlb_ns: ttlb,
        req_bytes: st.req_bytes,
        resp_bytes: st.resp_bytes,
        req_head_len: st.req_head_len,
        resp_head_len,
        _pad: [0; 2],
        req_dur_ns: st
            .req_last
            .saturating_sub(st.req_start)
            .min(u64::from(u32::MAX)) as u32,
        req_head: st.req_head,
        resp_head,
    };
    stage(&record, n);
}

/// Adds an exchange to this CPU's batch and writes the batch once it is full. While a program
/// this one interrupted holds the batch, the exchange is written on its own.
#[inline(always)]
fn stage(record: &Exchange, n: u64) {
    let Some(stg) = STAGING.get_ptr_mut(0) else {
        return write_one(record, n);
    };
    // SAFETY: this CPU's slot; a program that interrupts this one sees `busy` and keeps off.
    let stg = unsafe { &mut *stg };
    if stg.busy != 0 {
        return write_one(record, n);
    }
    stg.busy = 1;
    let i = stg.batch.len as usize;
    // Always below BATCH_LEN (a full batch is written at once); the check is for the verifier.
    if i < BATCH_LEN {
        stg.batch.records[i] = *record;
        stg.batch.len = i as u32 + 1;
        if i + 1 == BATCH_LEN {
            write_batch(&mut stg.batch);
        }
    } else {
        write_batch(&mut stg.batch);
        write_one(record, n);
    }
    stg.busy = 0;
}

/// Writes one exchange as its own record (one helper call: output, not reserve and submit).
#[inline(always)]
fn write_one(record: &Exchange, n: u64) {
    if EVENTS.output(record, submit_flags(n)).is_err() {
        uncount(Counter::Exchanges, 1);
        count(Counter::RingbufFull);
    }
}

/// Writes a CPU's staged exchanges as one record (the whole batch: a fixed size keeps the
/// verifier simple, and partial batches only leave at the reader's flush) and empties it.
/// The caller holds the batch (`Staging::busy`).
#[inline(always)]
pub fn write_batch(batch: &mut ExchangeBatch) {
    let len = u64::from(batch.len);
    if len == 0 {
        return;
    }
    batch.kind = RecordKind::Batch as u8;
    if EVENTS.output(batch, wake_flags()).is_err() {
        uncount(Counter::Exchanges, len);
        count_n(Counter::RingbufFull, len);
    }
    batch.len = 0;
}

/// Writes a connection event for a tracked socket; the tuple is read from `sk`.
#[inline(always)]
pub fn conn_event(
    kind: ConnEventKind,
    st: &SockState,
    sk: *const u8,
    now: u64,
    duration_ns: u64,
    flags: u8,
    state: u8,
) {
    let Some(mut entry) = EVENTS.reserve::<ConnEvent>(0) else {
        count(Counter::RingbufFull);
        return;
    };
    let o = offsets();
    let mut ev = ConnEvent {
        kind: RecordKind::Conn as u8,
        event: kind as u8,
        role: st.role,
        family: st.family,
        state,
        proto: st.proto,
        flags,
        sport: read::<u16>(sk, o.sk_num).unwrap_or(0),
        dport: u16::from_be(read::<u16>(sk, o.sk_dport).unwrap_or(0)),
        cgroup_id: st.cgroup_id,
        cookie: st.cookie,
        ts_ns: now,
        duration_ns,
        ..ConnEvent::default()
    };
    if st.proto == IPPROTO_TCP {
        ev.srtt_us = srtt_us(sk, st.proto);
        ev.total_retrans = read::<u32>(sk, o.tcp_total_retrans).unwrap_or(0);
    }
    ev.err = read::<i32>(sk, o.sk_err).unwrap_or(0) as u32;
    if st.family == AF_INET6 {
        ev.saddr = read::<[u8; 16]>(sk, o.sk_v6_rcv_saddr).unwrap_or([0; 16]);
        ev.daddr = read::<[u8; 16]>(sk, o.sk_v6_daddr).unwrap_or([0; 16]);
    } else {
        let s = read::<[u8; 4]>(sk, o.sk_rcv_saddr).unwrap_or([0; 4]);
        let d = read::<[u8; 4]>(sk, o.sk_daddr).unwrap_or([0; 4]);
        ev.saddr[..4].copy_from_slice(&s);
        ev.daddr[..4].copy_from_slice(&d);
    }
    entry.write(ev);
    entry.submit(submit_flags(count(Counter::ConnEvents)));
}

/// Ring bytes above which a record wakes the reader; patched by the loader (a quarter of the ring).
#[unsafe(no_mangle)]
static RING_WAKE_BYTES: u64 = u64::MAX;

/// Records normally wait for the reader's timer (a wakeup per record costs microseconds), but
/// once the ring is a quarter full a record wakes it: a reader starved of CPU by a busy node
/// must be woken before the ring overflows. Only every 16th record of a kind (per CPU, by its
/// counter `n`) looks at the fill level, to keep the check off most records.
#[inline(always)]
pub fn submit_flags(n: u64) -> u64 {
    if n & 15 != 0 {
        return BPF_RB_NO_WAKEUP.into();
    }
    wake_flags()
}

/// Wakes the reader if the ring is filling up (see [`submit_flags`]).
#[inline(always)]
pub fn wake_flags() -> u64 {
    // SAFETY: reading a static (volatile: the loader patches it in .rodata).
    let wake = unsafe { core::ptr::read_volatile(&RING_WAKE_BYTES) };
    if EVENTS.query(BPF_RB_AVAIL_DATA.into()) > wake {
        BPF_RB_FORCE_WAKEUP.into()
    } else {
        BPF_RB_NO_WAKEUP.into()
    }
}

/// AF_INET6.
pub const AF_INET6: u8 = 10;

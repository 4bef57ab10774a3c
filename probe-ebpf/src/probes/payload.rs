//! cgroup_skb on watched pods' cgroups: keeps the first bytes of each message per socket so
//! userspace can name the protocol and read its error signal. Never drops a packet.
//!
//! Only the first payload packet after a change of direction is copied; other payload packets
//! cost one socket-storage lookup, packets without payload none.

use aya_ebpf::{
    EbpfContext, bindings::__sk_buff, helpers::bpf_skb_load_bytes, macros::cgroup_skb,
    programs::SkBuffContext,
};
use netdx_common::{Counter, HEAD_LEN, TARGET_NO_EGRESS_HEADS};

use crate::maps::{count, sock_state};

/// `Heads::last_dir` after an outgoing payload packet.
pub const DIR_EGRESS: u8 = 1;
/// `Heads::last_dir` after an incoming payload packet (or, without an ingress program, a receive).
pub const DIR_INGRESS: u8 = 2;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
/// cgroup_skb verdict: let the packet through.
const PASS: i32 = 1;

#[cgroup_skb(egress)]
pub fn on_egress(ctx: SkBuffContext) -> i32 {
    capture(&ctx, DIR_EGRESS);
    PASS
}

#[cgroup_skb(ingress)]
pub fn on_ingress(ctx: SkBuffContext) -> i32 {
    capture(&ctx, DIR_INGRESS);
    PASS
}

/// Offset of the L4 payload and, for TCP, the acknowledgment number (network order); None for packets without
/// a payload we understand. Headers are read directly from the packet's linear part, where the
/// kernel keeps them.
#[inline(always)]
fn payload_offset(ctx: &SkBuffContext) -> Option<(usize, Option<u32>)> {
    let start = ctx.data();
    let end = ctx.data_end();
    // SAFETY: the context pointer is valid for the program's run.
    let skb = ctx.as_ptr() as *const __sk_buff;
    let proto = u16::from_be(unsafe { (*skb).protocol } as u16);
    let (l4, l4proto) = match proto {
        ETH_P_IP => {
            if start + 20 > end {
                return None;
            }
            // SAFETY: 20 bytes of packet checked above.
            let (vihl, p) = unsafe { (*(start as *const u8), *((start + 9) as *const u8)) };
            (usize::from(vihl & 0x0f) * 4, p)
        }
        // Extension headers are not followed: such packets are skipped.
        ETH_P_IPV6 => {
            if start + 40 > end {
                return None;
            }
            // SAFETY: 40 bytes of packet checked above.
            (40, unsafe { *((start + 6) as *const u8) })
        }
        _ => return None,
    };
    match l4proto {
        IPPROTO_TCP => {
            let tcp = start + l4;
            if tcp + 13 > end {
                return None;
            }
            // SAFETY: 13 bytes of TCP header checked above.
            let (ack, doff) = unsafe {
                (
                    // Only compared for equality, so left in network order.
                    core::ptr::read_unaligned((tcp + 8) as *const u32),
                    *((tcp + 12) as *const u8),
                )
            };
            Some((l4 + usize::from(doff >> 4) * 4, Some(ack)))
        }
        IPPROTO_UDP => Some((l4 + 8, None)),
        _ => None,
    }
}

#[inline(always)]
fn capture(ctx: &SkBuffContext, dir: u8) {
    // SAFETY: the context pointer is valid for the program's run.
    let sk = unsafe { (*(ctx.as_ptr() as *const __sk_buff)).__bindgen_anon_2.sk };
    if sk.is_null() {
        return;
    }
    // Headers first (direct packet reads): packets without payload (pure ACK, SYN, FIN) do not
    // change the direction and cost no storage lookup.
    let Some((off, ack)) = payload_offset(ctx) else {
        return;
    };
    let total = ctx.len() as usize;
    if off >= total {
        return;
    }
    // The storage helper itself refuses request and time-wait sockets (no full socket), so no
    // separate bpf_sk_fullsock call is needed.
    let Some(st) = sock_state(sk.cast(), true) else {
        count(Counter::HeadsStorageFailed);
        return;
    };
    // Without an egress program nothing marks that the socket sent: an incoming TCP packet
    // that acknowledges more than the last head's did answers something new, and every
    // datagram is a message. (The send tracepoint fires after the send, and an answer can
    // arrive before it.)
    let unmarked = dir == DIR_INGRESS && st.target & TARGET_NO_EGRESS_HEADS != 0;
    let h = &mut st.heads;
    if h.last_dir == dir && !(unmarked && ack.is_none_or(|a| a != h.last_ack)) {
        return; // continuation of the same message
    }
    h.last_ack = ack.unwrap_or(0);
    // In 1..=HEAD_LEN, written so the verifier can see it is never zero.
    let n = ((total - off - 1).min(HEAD_LEN - 1) & (HEAD_LEN - 1)) + 1;
    h.last_dir = dir;
    // Straight into the socket's storage: bytes past `n` are stale, and the length says so.
    let (buf, len) = if dir == DIR_EGRESS {
        (&mut h.egress, &mut h.egress_len)
    } else {
        (&mut h.ingress, &mut h.ingress_len)
    };
    // SAFETY: buf has HEAD_LEN bytes and n <= HEAD_LEN.
    let r = unsafe {
        bpf_skb_load_bytes(
            ctx.as_ptr(),
            off as u32,
            buf.0.as_mut_ptr().cast(),
            n as u32,
        )
    };
    *len = if r == 0 {
        n as u8
    } else {
        count(Counter::PayloadReadFailed);
        0
    };
}

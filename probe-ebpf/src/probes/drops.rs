//! skb:kfree_skb: packets the kernel dropped, with the reason and the namespace.

use aya_ebpf::{helpers::bpf_ktime_get_ns, macros::btf_tracepoint, programs::BtfTracePointContext};
use netdx_common::{Counter, DropEvent, RecordKind};

use crate::{
    kernel::{offsets, read},
    maps::{EVENTS, NETNS, TARGETS, count},
};

/// SKB_DROP_REASON_NOT_SPECIFIED: the first value that is a drop (0 and 1 are not drops).
const SKB_DROP_REASON_NOT_SPECIFIED: u32 = 2;

#[btf_tracepoint(function = "kfree_skb")]
pub fn on_kfree_skb(ctx: BtfTracePointContext) -> i32 {
    let skb: *const u8 = ctx.arg(0);
    let reason: u32 = ctx.arg(2);
    if reason < SKB_DROP_REASON_NOT_SPECIFIED {
        return 0;
    }
    let o = offsets();
    let dev = read::<*const u8>(skb, o.skb_dev).unwrap_or(core::ptr::null());
    let net = read::<*const u8>(dev, o.dev_nd_net).unwrap_or(core::ptr::null());
    let netns = read::<u32>(net, o.net_ns_inum).unwrap_or(0);
    let sk = read::<*const u8>(skb, o.skb_sk).unwrap_or(core::ptr::null());
    // The socket's pod: its cgroup v2 id, read through sk->sk_cgrp_data.cgroup->kn->id (a
    // packet keeps its socket until it leaves the pod's namespace).
    let cgroup = read::<*const u8>(sk, o.sk_cgroup).unwrap_or(core::ptr::null());
    let kn = read::<*const u8>(cgroup, o.cgroup_kn).unwrap_or(core::ptr::null());
    let mut cgroup_id = read::<u64>(kn, o.kn_id).unwrap_or(0);
    if cgroup_id != 0 && TARGETS.get_ptr(&cgroup_id).is_none() {
        cgroup_id = 0;
    }
    // Drops elsewhere on the host (other containers, unrelated namespaces) must not compete
    // with exchange records for ring space.
    if cgroup_id == 0 && NETNS.get_ptr(&netns).is_none() {
        return 0;
    }
    let cookie = if cgroup_id != 0 {
        read::<u64>(sk, o.sk_cookie).unwrap_or(0)
    } else {
        0
    };
    match EVENTS.reserve::<DropEvent>(0) {
        Some(mut entry) => {
            entry.write(DropEvent {
                kind: RecordKind::Drop as u8,
                reason,
                netns,
                cookie,
                cgroup_id,
                // SAFETY: helper without arguments.
                ts_ns: unsafe { bpf_ktime_get_ns() },
                ..DropEvent::default()
            });
            entry.submit(crate::records::submit_flags(count(Counter::DropEvents)));
        }
        None => {
            count(Counter::RingbufFull);
        }
    }
    0
}

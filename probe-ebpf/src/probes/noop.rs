//! Programs that return at once, on the hot path's hook points: the baseline the benchmarks
//! subtract (`node-probe --programs noop`). Never attached in normal operation.

use aya_ebpf::{
    macros::{btf_tracepoint, cgroup_skb},
    programs::{BtfTracePointContext, SkBuffContext},
};

#[btf_tracepoint(function = "sock_send_length")]
pub fn noop_sock_send(_ctx: BtfTracePointContext) -> i32 {
    0
}

#[btf_tracepoint(function = "sock_recv_length")]
pub fn noop_sock_recv(_ctx: BtfTracePointContext) -> i32 {
    0
}

#[cgroup_skb(egress)]
pub fn noop_egress(_ctx: SkBuffContext) -> i32 {
    1
}

#[cgroup_skb(ingress)]
pub fn noop_ingress(_ctx: SkBuffContext) -> i32 {
    1
}

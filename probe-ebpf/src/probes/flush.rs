//! The reader's flush of the per-CPU exchange batches.

use crate::{maps::STAGING, records::write_batch};

/// Writes this CPU's partial batch. Never attached: the node-probe runs it on every CPU every
/// 100 ms and before each window close (`BPF_PROG_TEST_RUN` with `BPF_F_TEST_RUN_ON_CPU`, in
/// an IPI on the other CPUs), so no exchange waits in a batch past its window. Written
/// by hand rather than with `#[raw_tracepoint]`, whose wrapper returns 0 whatever the body
/// does: the return value tells the reader 1 when the batch was held by a program this run
/// interrupted (it tries again), 0 otherwise.
#[unsafe(no_mangle)]
#[unsafe(link_section = "raw_tp")]
pub fn flush_staged(_ctx: *mut core::ffi::c_void) -> u32 {
    let Some(stg) = STAGING.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: this CPU's slot; see `records::stage`.
    let stg = unsafe { &mut *stg };
    if stg.busy != 0 {
        return 1;
    }
    stg.busy = 1;
    write_batch(&mut stg.batch);
    stg.busy = 0;
    0
}

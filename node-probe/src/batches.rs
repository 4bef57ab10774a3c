//! Flushing the kernel's per-CPU exchange batches before each drain.
//!
//! The socket hooks stage exchanges per CPU and write them to the ring buffer 16 at a time
//! (`netdx_common::ExchangeBatch`): one ring-buffer write per exchange was more than half of a
//! hook's cost. A batch that is not full waits until the reader runs the `flush_staged`
//! program on its CPU, which it does every 100 ms and before each window close, so an exchange
//! is late by at most that and never misses its window.

use std::{
    io,
    os::fd::{AsFd as _, AsRawFd as _},
};

use aya::programs::ProgramFd;

/// The flush program's name in the object.
pub const PROGRAM: &str = "flush_staged";

/// Tries per CPU when a program the flush interrupted holds the batch (it is released within
/// the program's run, so a second try almost always finds it free).
const TRIES: u32 = 3;

/// `BPF_PROG_TEST_RUN`.
const BPF_PROG_TEST_RUN: libc::c_long = 10;
/// Run on the CPU given in [`TestRunAttr::cpu`].
const BPF_F_TEST_RUN_ON_CPU: u32 = 1;

/// The `test` member of `union bpf_attr`, as far as `BPF_PROG_TEST_RUN` of a raw tracepoint
/// program reads it.
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

/// Runs the flush program on each online CPU.
pub struct BatchFlusher {
    prog: ProgramFd,
}

impl BatchFlusher {
    /// A flusher for the loaded `flush_staged` program; checks once that the kernel runs it.
    pub fn new(prog: ProgramFd) -> io::Result<Self> {
        let f = BatchFlusher { prog };
        f.flush()?;
        Ok(f)
    }

    /// Writes every online CPU's partial batch to the ring buffer. The online set is read
    /// each time (one small sysfs file), so a CPU brought online later is flushed too. A batch
    /// still held after [`TRIES`] tries stays staged for the next flush; nothing is lost. A
    /// CPU that fails (one just taken offline) does not keep the others from being flushed;
    /// the first error is returned.
    pub fn flush(&self) -> io::Result<()> {
        let cpus = aya::util::online_cpus()
            .map_err(|(what, e)| io::Error::new(e.kind(), format!("{what}: {e}")))?;
        let mut first_err = None;
        for cpu in cpus {
            for _ in 0..TRIES {
                match self.run_on(cpu) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) => {
                        first_err.get_or_insert(e);
                        break;
                    }
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Runs the program once on `cpu`; its return value (1: the batch was held).
    fn run_on(&self, cpu: u32) -> io::Result<u32> {
        let mut attr = TestRunAttr {
            prog_fd: self.prog.as_fd().as_raw_fd() as u32,
            flags: BPF_F_TEST_RUN_ON_CPU,
            cpu,
            ..TestRunAttr::default()
        };
        // SAFETY: a valid BPF_PROG_TEST_RUN attribute of the size passed; no buffers.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_PROG_TEST_RUN,
                &mut attr as *mut TestRunAttr,
                size_of::<TestRunAttr>() as libc::c_uint,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(attr.retval)
    }
}

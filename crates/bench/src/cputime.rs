//! The calling thread's CPU time. The one-core throughput sections (pipeline, ingest) divide by
//! it, not by wall time: time the thread spent descheduled (other processes on this shared
//! machine, the hypervisor's steal) is not the measured code's, and moved their wall-time rates
//! by up to 20 % within an hour.

use std::time::Duration;

use crate::{Error, Result};

/// CPU time (user and system) the calling thread has used so far.
pub fn thread_cpu() -> Result<Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a pointer to a timespec we own.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return Err(Error::Process(format!(
            "CLOCK_THREAD_CPUTIME_ID: {}",
            std::io::Error::last_os_error()
        )));
    }
    // Both fields are non-negative for this clock.
    Ok(Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_with_work_and_not_with_sleep() {
        let t0 = thread_cpu().unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let slept = thread_cpu().unwrap() - t0;
        assert!(
            slept < Duration::from_millis(20),
            "sleep counted: {slept:?}"
        );
        // Spin for 100 ms of wall time: the thread runs for much of it even on a busy machine.
        let (t1, wall) = (thread_cpu().unwrap(), std::time::Instant::now());
        let mut x = 0u64;
        while wall.elapsed() < Duration::from_millis(100) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let worked = thread_cpu().unwrap() - t1;
        assert!(
            worked > Duration::from_millis(10),
            "work not counted: {worked:?}"
        );
    }
}

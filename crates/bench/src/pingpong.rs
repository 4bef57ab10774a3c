//! Syscall-bound ping-pong over TCP: the client writes a small message and waits for the echo,
//! so every exchange is one send and one receive on each side and almost nothing else.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use tracing::debug;

use crate::{Error, Result, io_err};

/// Echoes fixed-size messages on every accepted connection, one thread each; never returns
/// unless the listener fails.
pub fn serve(listen: SocketAddr, msg: usize) -> Result<()> {
    let l = TcpListener::bind(listen).map_err(io_err(format!("binding {listen}")))?;
    for conn in l.incoming() {
        let Ok(mut c) = conn else { continue };
        std::thread::spawn(move || {
            let _ = c.set_nodelay(true);
            let mut buf = vec![0u8; msg];
            // Ends when the client goes away.
            while c.read_exact(&mut buf).is_ok() && c.write_all(&buf).is_ok() {}
        });
    }
    Ok(())
}

/// What a ping-pong run did.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PingPongReport {
    /// Connections.
    pub conns: usize,
    /// Message size, bytes.
    pub msg: usize,
    /// Measured duration, s.
    pub secs: f64,
    /// Round trips completed (one exchange on each side).
    pub exchanges: u64,
    /// Round trips per second.
    pub rate: f64,
}

/// Runs `conns` ping-pong connections against `target` for `secs` seconds.
pub fn client(target: SocketAddr, conns: usize, msg: usize, secs: f64) -> Result<PingPongReport> {
    let streams = (0..conns.max(1))
        .map(|_| {
            let s = TcpStream::connect_timeout(&target, Duration::from_secs(3))
                .map_err(io_err(format!("connecting to {target}")))?;
            s.set_nodelay(true).map_err(io_err("TCP_NODELAY"))?;
            s.set_read_timeout(Some(Duration::from_secs(10)))
                .map_err(io_err("read timeout"))?;
            Ok(s)
        })
        .collect::<Result<Vec<_>>>()?;
    let t0 = Instant::now();
    let end = t0 + Duration::from_secs_f64(secs);
    let counts = std::thread::scope(|s| {
        let handles: Vec<_> = streams
            .into_iter()
            .map(|mut c| {
                s.spawn(move || -> std::io::Result<u64> {
                    let mut buf = vec![b'p'; msg.max(1)];
                    let mut n = 0u64;
                    while Instant::now() < end {
                        c.write_all(&buf)?;
                        c.read_exact(&mut buf)?;
                        n += 1;
                    }
                    Ok(n)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| Error::Process("ping-pong thread panicked".into()))?
                    .map_err(io_err("ping-pong"))
            })
            .collect::<Result<Vec<u64>>>()
    })?;
    let secs = t0.elapsed().as_secs_f64();
    let exchanges = counts.iter().sum();
    debug!(exchanges, secs, "ping-pong done");
    Ok(PingPongReport {
        conns: conns.max(1),
        msg: msg.max(1),
        secs,
        exchanges,
        rate: exchanges as f64 / secs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_pong_on_loopback_counts_round_trips() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        std::thread::spawn(move || serve(addr, 8));
        std::thread::sleep(Duration::from_millis(50));
        let r = client(addr, 2, 8, 0.1).unwrap();
        assert!(r.exchanges > 0);
        assert_eq!(r.conns, 2);
    }
}

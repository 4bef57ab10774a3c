//! Many idle connections: a server that answers one message per connection and keeps the
//! socket, and a client that opens connections, does one exchange on each and holds them.

use std::{
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    time::Duration,
};

use crate::{Error, Result, io_err};

/// Bytes of the one request and the one response per connection.
const MSG: usize = 8;

/// Accepts on every port of `ports`, answers one message per connection and keeps it open.
/// Never returns unless a listener fails.
pub fn serve(ip: IpAddr, ports: &[u16]) -> Result<()> {
    let listeners = ports
        .iter()
        .map(|&p| TcpListener::bind((ip, p)).map_err(io_err(format!("binding {ip}:{p}"))))
        .collect::<Result<Vec<_>>>()?;
    std::thread::scope(|s| {
        for l in &listeners {
            s.spawn(move || {
                let mut held = Vec::new();
                for conn in l.incoming() {
                    let Ok(mut c) = conn else { continue };
                    let mut buf = [0u8; MSG];
                    if c.read_exact(&mut buf)
                        .and_then(|_| c.write_all(&buf))
                        .is_ok()
                    {
                        held.push(c);
                    }
                }
            });
        }
    });
    Ok(())
}

/// Opens `conns` connections spread over `ports` of `ip`, one exchange each, and returns them
/// open.
pub fn open(ip: IpAddr, ports: &[u16], conns: usize) -> Result<Vec<TcpStream>> {
    if ports.is_empty() {
        return Err(Error::Process(
            "no server ports to hold connections to".into(),
        ));
    }
    let per_port = conns.div_ceil(ports.len());
    let mut left = conns;
    let shares: Vec<(u16, usize)> = ports
        .iter()
        .map(|&p| {
            let n = per_port.min(left);
            left -= n;
            (p, n)
        })
        .collect();
    std::thread::scope(|s| {
        let handles: Vec<_> = shares
            .iter()
            .map(|&(port, n)| {
                s.spawn(move || -> Result<Vec<TcpStream>> {
                    let addr = SocketAddr::new(ip, port);
                    (0..n)
                        .map(|i| {
                            let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
                                .map_err(io_err(format!("connection {i} to {addr}")))?;
                            c.set_read_timeout(Some(Duration::from_secs(5)))
                                .map_err(io_err("read timeout"))?;
                            let mut buf = [b'h'; MSG];
                            c.write_all(&buf)
                                .and_then(|_| c.read_exact(&mut buf))
                                .map_err(io_err(format!("exchange on connection {i} to {addr}")))?;
                            Ok(c)
                        })
                        .collect()
                })
            })
            .collect();
        let mut all = Vec::with_capacity(conns);
        for h in handles {
            all.extend(
                h.join()
                    .map_err(|_| Error::Process("connection opener panicked".into()))??,
            );
        }
        Ok(all)
    })
}

/// Client side run as a process: opens the connections, prints `held <n>` and keeps them
/// until the harness stops the process.
pub fn client_main(ip: IpAddr, ports: &[u16], conns: usize) -> Result<()> {
    let held = open(ip, ports, conns)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "held {}", held.len()).map_err(io_err("stdout"))?;
    out.flush().map_err(io_err("stdout"))?;
    loop {
        // Spurious wake-ups just park again; the process ends on SIGTERM.
        std::thread::park();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_opened_and_held() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let ports: Vec<u16> = (0..2)
            .map(|_| {
                let l = TcpListener::bind((ip, 0)).unwrap();
                l.local_addr().unwrap().port()
            })
            .collect();
        let p = ports.clone();
        std::thread::spawn(move || serve(ip, &p));
        std::thread::sleep(Duration::from_millis(50));
        let held = open(ip, &ports, 5).unwrap();
        assert_eq!(held.len(), 5);
    }
}

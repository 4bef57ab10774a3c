//! A small DNS server and client for the testbed: A queries over UDP, with knobs for the
//! failures resolvers show (SERVFAIL, NXDOMAIN, no answer), and a bounded client.

use std::{
    net::{SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

/// Server behaviour: shares of queries answered SERVFAIL, NXDOMAIN, or not at all (the rest
/// get an A record). Shares are in 0..=1 and applied by query id, so they are deterministic.
#[derive(Clone, Copy, Debug, Default)]
pub struct ServerOpts {
    /// Share answered SERVFAIL (rcode 2).
    pub servfail: f64,
    /// Share answered NXDOMAIN (rcode 3).
    pub nxdomain: f64,
    /// Share left unanswered.
    pub drop: f64,
}

/// rcode of a SERVFAIL answer.
pub const RCODE_SERVFAIL: u8 = 2;
/// rcode of an NXDOMAIN answer.
pub const RCODE_NXDOMAIN: u8 = 3;

/// A query for `name` (type A, class IN, recursion desired).
pub fn query(id: u16, name: &str) -> Vec<u8> {
    let mut q = Vec::with_capacity(12 + name.len() + 6);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.').filter(|l| !l.is_empty()) {
        q.push(label.len().min(63) as u8);
        q.extend_from_slice(&label.as_bytes()[..label.len().min(63)]);
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// What the server does with a query id: Some(rcode) to answer, None to stay silent.
fn verdict(id: u16, o: &ServerOpts) -> Option<u8> {
    // Spread ids over [0, 1) so the shares hold over any run of consecutive ids.
    let x = f64::from(id.wrapping_mul(40503)) / 65536.0;
    if x < o.drop {
        None
    } else if x < o.drop + o.servfail {
        Some(RCODE_SERVFAIL)
    } else if x < o.drop + o.servfail + o.nxdomain {
        Some(RCODE_NXDOMAIN)
    } else {
        Some(0)
    }
}

/// The answer to `q` with `rcode` (an A record 10.0.0.1 when the rcode is 0); None when `q`
/// is not a query we understand.
pub fn answer(q: &[u8], rcode: u8) -> Option<Vec<u8>> {
    if q.len() < 17 || q[2] & 0x80 != 0 || q[4..6] != [0, 1] {
        return None;
    }
    // The question runs to the end of the name plus type and class.
    let mut end = 12;
    while *q.get(end)? != 0 {
        end += usize::from(q[end]) + 1;
    }
    let question = q.get(12..end + 5)?;
    let mut a = Vec::with_capacity(12 + question.len() + 16);
    a.extend_from_slice(&q[..2]);
    a.extend_from_slice(&[
        0x81,
        0x80 | rcode,
        0,
        1,
        0,
        u8::from(rcode == 0),
        0,
        0,
        0,
        0,
    ]);
    a.extend_from_slice(question);
    if rcode == 0 {
        a.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4, 10, 0, 0, 1]);
    }
    Some(a)
}

/// Serves forever on `addr`.
pub fn serve(addr: SocketAddr, o: ServerOpts) -> std::io::Result<()> {
    let sock = UdpSocket::bind(addr)?;
    let mut buf = [0u8; 512];
    loop {
        let (n, peer) = sock.recv_from(&mut buf)?;
        let q = &buf[..n];
        let Some(id) = q.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]])) else {
            continue;
        };
        if let Some(a) = verdict(id, &o).and_then(|rcode| answer(q, rcode)) {
            sock.send_to(&a, peer)?;
        }
    }
}

/// Client settings.
#[derive(Clone, Debug)]
pub struct ClientOpts {
    /// Server address.
    pub server: SocketAddr,
    /// Queries to send.
    pub queries: u64,
    /// Queries per second (0 = as fast as answers come).
    pub rate: f64,
    /// How long to wait for each answer.
    pub timeout: Duration,
    /// Hard limit on the run.
    pub max_time: Duration,
}

/// What the client saw.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientReport {
    /// Queries sent.
    pub sent: u64,
    /// Answers with rcode 0.
    pub ok: u64,
    /// Answers with another rcode.
    pub errors: u64,
    /// Queries without an answer in time.
    pub timeouts: u64,
}

/// Sends the queries one at a time on one connected socket (so the probe sees the peer).
pub fn run_client(o: &ClientOpts) -> std::io::Result<ClientReport> {
    let sock = UdpSocket::bind(if o.server.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    })?;
    sock.connect(o.server)?;
    sock.set_read_timeout(Some(o.timeout.max(Duration::from_millis(1))))?;
    let mut r = ClientReport::default();
    let t0 = Instant::now();
    let mut buf = [0u8; 512];
    for i in 0..o.queries {
        if t0.elapsed() > o.max_time {
            break;
        }
        if o.rate > 0.0 {
            let due = t0 + Duration::from_secs_f64(i as f64 / o.rate);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        let id = i as u16;
        sock.send(&query(id, &format!("svc-{}.netdx.test", i % 50)))?;
        r.sent += 1;
        loop {
            match sock.recv(&mut buf) {
                // An answer to an earlier, timed-out query: keep waiting for ours.
                Ok(n) if n >= 4 && buf[..2] != id.to_be_bytes() => continue,
                Ok(n) if n >= 4 && buf[3] & 0x0f == 0 => r.ok += 1,
                Ok(_) => r.errors += 1,
                Err(_) => r.timeouts += 1,
            }
            break;
        }
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_echo_the_question_with_the_rcode() {
        let q = query(7, "svc-1.netdx.test");
        let a = answer(&q, 0).unwrap();
        assert_eq!(&a[..2], &[0, 7]);
        assert_eq!(a[3] & 0x0f, 0);
        assert_eq!(&a[12..q.len()], &q[12..]);
        let e = answer(&q, RCODE_SERVFAIL).unwrap();
        assert_eq!(e[3] & 0x0f, RCODE_SERVFAIL);
        assert!(answer(&a, 0).is_none(), "answers are not queries");
        assert!(answer(&q[..10], 0).is_none());
    }

    #[test]
    fn shares_hold_over_consecutive_ids() {
        let o = ServerOpts {
            servfail: 0.3,
            nxdomain: 0.1,
            drop: 0.2,
        };
        let (mut fail, mut nx, mut dropped) = (0, 0, 0);
        for id in 0..1000u16 {
            match verdict(id, &o) {
                None => dropped += 1,
                Some(RCODE_SERVFAIL) => fail += 1,
                Some(RCODE_NXDOMAIN) => nx += 1,
                _ => {}
            }
        }
        assert!((280..=320).contains(&fail), "{fail}");
        assert!((80..=120).contains(&nx), "{nx}");
        assert!((180..=220).contains(&dropped), "{dropped}");
    }

    #[test]
    fn client_and_server_on_loopback() {
        let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = probe.local_addr().unwrap();
        drop(probe);
        let o = ServerOpts {
            servfail: 0.5,
            ..Default::default()
        };
        std::thread::spawn(move || serve(addr, o));
        std::thread::sleep(Duration::from_millis(100));
        let r = run_client(&ClientOpts {
            server: addr,
            queries: 200,
            rate: 0.0,
            timeout: Duration::from_millis(500),
            max_time: Duration::from_secs(10),
        })
        .unwrap();
        assert_eq!(r.sent, 200);
        assert_eq!(r.ok + r.errors, 200, "{r:?}");
        assert!((80..=120).contains(&r.errors), "{r:?}");
    }
}

//! Protocol classifiers over the first bytes of a request and its response.
//!
//! Exchanges are found without parsing (direction changes on a socket); these classifiers
//! only add a name and an error signal when a well-known protocol is recognised. Anything
//! unrecognised stays `Unknown` and is still counted. Inputs are untrusted packet bytes:
//! every access is bounds-checked and nothing here can panic (see the proptest).

use serde::{Deserialize, Serialize};

/// A recognised application protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// HTTP/1.x.
    Http,
    /// Redis RESP.
    Redis,
    /// PostgreSQL wire protocol.
    Postgres,
    /// MySQL client/server protocol.
    Mysql,
    /// memcached text or binary protocol.
    Memcached,
    /// DNS over UDP.
    Dns,
    /// Not recognised.
    Unknown,
}

impl Protocol {
    /// Every protocol, in discriminant order (`p as usize` indexes it).
    pub const ALL: [Protocol; 7] = [
        Protocol::Http,
        Protocol::Redis,
        Protocol::Postgres,
        Protocol::Mysql,
        Protocol::Memcached,
        Protocol::Dns,
        Protocol::Unknown,
    ];

    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Redis => "redis",
            Protocol::Postgres => "postgres",
            Protocol::Mysql => "mysql",
            Protocol::Memcached => "memcached",
            Protocol::Dns => "dns",
            Protocol::Unknown => "unknown",
        }
    }
}

/// What the classifier found for one exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct L7 {
    /// Protocol.
    pub protocol: Protocol,
    /// The response carries the protocol's error signal.
    pub error: bool,
    /// Protocol status when it has one (HTTP status, DNS rcode).
    pub status: Option<u16>,
}

const HTTP_METHODS: [&[u8]; 9] = [
    b"GET ",
    b"POST ",
    b"PUT ",
    b"DELETE ",
    b"HEAD ",
    b"OPTIONS ",
    b"PATCH ",
    b"CONNECT ",
    b"TRACE ",
];
const MEMCACHED_COMMANDS: [&[u8]; 18] = [
    b"get ",
    b"gets ",
    b"set ",
    b"add ",
    b"replace ",
    b"append ",
    b"prepend ",
    b"cas ",
    b"delete ",
    b"incr ",
    b"decr ",
    b"touch ",
    b"stats",
    b"version",
    b"flush_all",
    b"mg ",
    b"ms ",
    b"md ",
];
const MEMCACHED_ERRORS: [&[u8]; 3] = [b"ERROR", b"CLIENT_ERROR", b"SERVER_ERROR"];

fn starts_with_any(b: &[u8], prefixes: &[&[u8]]) -> bool {
    prefixes.iter().any(|p| b.starts_with(p))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at + 4)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

/// The number in an HTTP status field; three digits (every real status) are read directly,
/// which is most of the classifier's time, the rest as `u16::from_str` reads them.
fn status_code(d: &[u8]) -> Option<u16> {
    if let [a, b, c] = *d
        && [a, b, c].iter().all(u8::is_ascii_digit)
    {
        return Some(u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0'));
    }
    std::str::from_utf8(d).ok()?.parse().ok()
}

fn http(req: &[u8], resp: &[u8]) -> Option<L7> {
    // Without a request head (a server pod that copies only what it sends), the status line
    // alone names HTTP: it is unambiguous, unlike other protocols' replies.
    let status_line = req.is_empty() && resp.starts_with(b"HTTP/1.");
    if !starts_with_any(req, &HTTP_METHODS) && !status_line {
        return None;
    }
    let status = if resp.starts_with(b"HTTP/1.") && resp.get(8) == Some(&b' ') {
        resp.get(9..12).and_then(status_code)
    } else {
        None
    };
    Some(L7 {
        protocol: Protocol::Http,
        error: status.is_some_and(|s| s >= 500),
        status,
    })
}

fn redis(req: &[u8], resp: &[u8]) -> Option<L7> {
    // Clients send arrays of bulk strings: "*<n>\r\n$...".
    if req.first() != Some(&b'*') || !req.get(1).is_some_and(u8::is_ascii_digit) {
        return None;
    }
    Some(L7 {
        protocol: Protocol::Redis,
        error: matches!(resp.first(), Some(b'-' | b'!')),
        status: None,
    })
}

fn postgres(req: &[u8], resp: &[u8]) -> Option<L7> {
    let typed = |b: &[u8], types: &[u8]| {
        b.first().is_some_and(|t| types.contains(t))
            && be32(b, 1).is_some_and(|l| (4..1 << 24).contains(&l))
    };
    // Startup (protocol 3.0) or SSLRequest, or a typed frontend message.
    let startup = be32(req, 4).is_some_and(|v| v == 196_608 || v == 80_877_103);
    if !(startup || typed(req, b"QPBEDSCHFXdcf")) {
        return None;
    }
    // The backend must answer with a typed message (or 'S'/'N' to an SSLRequest).
    if !resp.is_empty()
        && !(typed(resp, b"RSKZTDCEIN123sntAGHWdcV") || resp == b"S" || resp == b"N")
    {
        return None;
    }
    Some(L7 {
        protocol: Protocol::Postgres,
        error: resp.first() == Some(&b'E'),
        status: None,
    })
}

fn mysql(req: &[u8], resp: &[u8]) -> Option<L7> {
    // 3-byte little-endian length, sequence 0, then a command byte.
    let len = usize::from(*req.first()?)
        | usize::from(*req.get(1)?) << 8
        | usize::from(*req.get(2)?) << 16;
    let cmd = *req.get(4)?;
    if req.get(3) != Some(&0) || len == 0 || !matches!(cmd, 0x01 | 0x03 | 0x0e | 0x16 | 0x17 | 0x19)
    {
        return None;
    }
    // Response sequence 1 with OK, ERR, EOF or a column count.
    if resp.get(3) != Some(&1) {
        return None;
    }
    Some(L7 {
        protocol: Protocol::Mysql,
        error: resp.get(4) == Some(&0xff),
        status: None,
    })
}

fn memcached(req: &[u8], resp: &[u8]) -> Option<L7> {
    if req.first() == Some(&0x80) && resp.first() == Some(&0x81) {
        // Binary protocol: status is bytes 6..8 of the response header.
        let status = resp.get(6..8).map(|s| u16::from_be_bytes([s[0], s[1]]));
        return Some(L7 {
            protocol: Protocol::Memcached,
            error: status.is_some_and(|s| s != 0),
            status,
        });
    }
    if !starts_with_any(req, &MEMCACHED_COMMANDS) {
        return None;
    }
    Some(L7 {
        protocol: Protocol::Memcached,
        error: starts_with_any(resp, &MEMCACHED_ERRORS),
        status: None,
    })
}

fn dns(req: &[u8], resp: &[u8]) -> Option<L7> {
    // Query: QR=0, opcode 0, one question; response: same id, QR=1.
    if req.len() < 12 || req[2] & 0xf8 != 0 || req[4..6] != [0, 1] {
        return None;
    }
    if resp.is_empty() {
        return Some(L7 {
            protocol: Protocol::Dns,
            error: false,
            status: None,
        });
    }
    if resp.len() < 4 || resp[..2] != req[..2] || resp[2] & 0x80 == 0 {
        return None;
    }
    let rcode = u16::from(resp[3] & 0x0f);
    Some(L7 {
        protocol: Protocol::Dns,
        error: rcode != 0,
        status: Some(rcode),
    })
}

/// Classifies one exchange from the first bytes of its request and response.
/// `udp` selects the datagram classifiers.
pub fn classify(udp: bool, req: &[u8], resp: &[u8]) -> L7 {
    classify_with_hint(None, udp, req, resp)
}

/// The parser of one protocol.
fn parse_as(p: Protocol, req: &[u8], resp: &[u8]) -> Option<L7> {
    match p {
        Protocol::Http => http(req, resp),
        Protocol::Redis => redis(req, resp),
        Protocol::Postgres => postgres(req, resp),
        Protocol::Mysql => mysql(req, resp),
        Protocol::Memcached => memcached(req, resp),
        Protocol::Dns => dns(req, resp),
        Protocol::Unknown => None,
    }
}

/// [`classify`], trying first the protocol the connection spoke last time: a connection
/// rarely changes protocol, so the other parsers seldom run.
pub fn classify_with_hint(hint: Option<Protocol>, udp: bool, req: &[u8], resp: &[u8]) -> L7 {
    if let Some(l7) = hint.and_then(|p| parse_as(p, req, resp)) {
        return l7;
    }
    let found = if udp {
        dns(req, resp)
    } else {
        http(req, resp)
            .or_else(|| redis(req, resp))
            .or_else(|| memcached(req, resp))
            .or_else(|| postgres(req, resp))
            .or_else(|| mysql(req, resp))
    };
    found.unwrap_or(L7 {
        protocol: Protocol::Unknown,
        error: false,
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn http_named_from_the_status_line_without_a_request_head() {
        let l = classify(false, b"", b"HTTP/1.1 502 Bad G");
        assert_eq!(
            (l.protocol, l.error, l.status),
            (Protocol::Http, true, Some(502))
        );
        let l = classify(false, b"", b"+OK\r\n");
        assert_eq!(
            l.protocol,
            Protocol::Unknown,
            "other replies alone are ambiguous"
        );
    }

    #[test]
    fn http_status_and_errors() {
        let l = classify(false, b"GET / HTTP/1.1\r\nHo", b"HTTP/1.1 503 Servi");
        assert_eq!(
            l,
            L7 {
                protocol: Protocol::Http,
                error: true,
                status: Some(503)
            }
        );
        let l = classify(false, b"POST /x HTTP/1.1\r\n", b"HTTP/1.1 404 Not F");
        assert_eq!(
            l,
            L7 {
                protocol: Protocol::Http,
                error: false,
                status: Some(404)
            }
        );
    }

    #[test]
    fn redis_errors() {
        assert!(classify(false, b"*2\r\n$3\r\nGET\r\n$3", b"-ERR unknown comm").error);
        assert_eq!(
            classify(false, b"*3\r\n$3\r\nSET\r\n$1", b"+OK\r\n"),
            L7 {
                protocol: Protocol::Redis,
                error: false,
                status: None
            }
        );
    }

    #[test]
    fn postgres_error_response() {
        let q = b"Q\x00\x00\x00\x0dSELECT 1\x00";
        assert_eq!(
            classify(false, q, b"E\x00\x00\x00\x60SERROR\x00"),
            L7 {
                protocol: Protocol::Postgres,
                error: true,
                status: None
            }
        );
        assert!(!classify(false, q, b"T\x00\x00\x00\x21\x00\x01").error);
    }

    #[test]
    fn memcached_text_and_binary() {
        assert!(classify(false, b"get foo\r\n", b"SERVER_ERROR out").error);
        assert_eq!(
            classify(false, b"set k 0 0 1\r\nx\r\n", b"STORED\r\n").protocol,
            Protocol::Memcached
        );
        let l = classify(
            false,
            b"\x80\x00\x00\x03",
            b"\x81\x00\x00\x00\x00\x00\x00\x01",
        );
        assert_eq!(
            l,
            L7 {
                protocol: Protocol::Memcached,
                error: true,
                status: Some(1)
            }
        );
    }

    #[test]
    fn mysql_err_packet() {
        let l = classify(
            false,
            b"\x09\x00\x00\x00\x03SELECT 1",
            b"\x17\x00\x00\x01\xff\x7a\x04#42",
        );
        assert_eq!(
            l,
            L7 {
                protocol: Protocol::Mysql,
                error: true,
                status: None
            }
        );
    }

    #[test]
    fn dns_rcodes() {
        let q = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03www";
        let servfail = b"\x12\x34\x81\x82\x00\x01\x00\x00";
        assert_eq!(
            classify(true, q, servfail),
            L7 {
                protocol: Protocol::Dns,
                error: true,
                status: Some(2)
            }
        );
        let ok = b"\x12\x34\x81\x80\x00\x01\x00\x01";
        assert!(!classify(true, q, ok).error);
        // A response with another id is not this query's answer.
        assert_eq!(
            classify(true, q, b"\x99\x99\x81\x80").protocol,
            Protocol::Unknown
        );
    }

    #[test]
    fn unknown_binary_protocol_stays_unknown() {
        // ndxe frames from the testbed: length-prefixed, no classifier may claim them.
        let req = b"\x00\x00\x00\x40\x00\x00\x01\x00\x01rrrrrrr";
        let resp = b"\x00\x00\x01\x00\x00xxxxxxxxxxx";
        assert_eq!(classify(false, req, resp).protocol, Protocol::Unknown);
    }

    #[test]
    fn status_codes_read_as_from_str_reads_them() {
        for field in [
            &b"200"[..],
            b"503",
            b"099",
            b"+42",
            b"2x0",
            b" 20",
            b"",
            b"\xff\xfe\xfd",
        ] {
            let expected = std::str::from_utf8(field)
                .ok()
                .and_then(|d| d.parse::<u16>().ok());
            assert_eq!(status_code(field), expected, "{field:?}");
        }
    }

    proptest! {
        #[test]
        fn never_panics(udp: bool, req in proptest::collection::vec(any::<u8>(), 0..16), resp in proptest::collection::vec(any::<u8>(), 0..16)) {
            let _ = classify(udp, &req, &resp);
        }
    }
}

//! How batches of window reports travel from node-probes to the operator (`POST /v1/windows`).
//!
//! Probes send a compact binary encoding (postcard, [`BINARY`]): decoding JSON was half of the
//! operator's ingest time. JSON ([`JSON`]: one report or an array of them) is still accepted,
//! for older probes and for people debugging with curl. The binary form has no field names, so
//! its content type carries a version: a change of the encoded bytes needs a new one.

mod read;

/// A shared request body, as HTTP servers hand it over ([`Encoding::decode_body`]).
pub use bytes::Bytes;
use serde::Serialize;

use crate::windows::WindowReport;

/// Content type of a JSON report or array of reports.
pub const JSON: &str = "application/json";
/// Content type of a postcard-encoded sequence of reports (version 4 of the encoding: pods
/// carry their payload capture). An older body is refused (415) and its probe falls back to
/// JSON, whose new fields default. (v2 added server fullness at stray drops, v3 zero-window
/// stalls and a 10th latency percentile; a side's protocol counts became `Protocols` after
/// v2 with the same bytes as the map before, so the version stayed.)
pub const BINARY: &str = "application/vnd.netdx.windows.v4+postcard";

/// Why a body is not a batch of window reports.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The content type names no encoding this side knows.
    #[error("unsupported content type {0:?}: expected {JSON} or {BINARY}")]
    UnsupportedType(String),
    /// Not JSON of a report or an array of them.
    #[error("not a WindowReport or an array of them: {0}")]
    Json(#[from] serde_json::Error),
    /// Not a binary batch of reports.
    #[error("not a binary batch of WindowReports: {0}")]
    Binary(#[from] postcard::Error),
    /// A binary batch followed by bytes that belong to nothing.
    #[error("{0} bytes after the binary batch of WindowReports")]
    Trailing(usize),
}

/// An encoding of report batches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// [`JSON`].
    Json,
    /// [`BINARY`].
    Binary,
}

impl Encoding {
    /// The content type that announces this encoding.
    pub fn content_type(self) -> &'static str {
        match self {
            Encoding::Json => JSON,
            Encoding::Binary => BINARY,
        }
    }

    /// The encoding a request's content type announces; no content type means JSON (what
    /// probes sent before the binary form existed, and what curl users expect).
    pub fn from_content_type(content_type: Option<&str>) -> Result<Self, WireError> {
        let Some(ct) = content_type else {
            return Ok(Encoding::Json);
        };
        // Parameters (`; charset=utf-8`) do not change the encoding.
        let essence = ct.split(';').next().unwrap_or_default().trim();
        if essence.eq_ignore_ascii_case(JSON) {
            Ok(Encoding::Json)
        } else if essence.eq_ignore_ascii_case(BINARY) {
            Ok(Encoding::Binary)
        } else {
            Err(WireError::UnsupportedType(ct.to_string()))
        }
    }

    /// Encodes a batch of reports.
    pub fn encode<R: std::borrow::Borrow<WindowReport>>(
        self,
        reports: &[R],
    ) -> Result<Vec<u8>, WireError> {
        let batch = Batch(reports);
        Ok(match self {
            Encoding::Json => serde_json::to_vec(&batch)?,
            Encoding::Binary => postcard::to_allocvec(&batch)?,
        })
    }

    /// [`Encoding::decode`] of a body the reports may keep a share of: the binary form's
    /// sketches are slices of it instead of copies (four allocations per edge).
    pub fn decode_body(self, body: &Bytes) -> Result<Vec<WindowReport>, WireError> {
        match self {
            Encoding::Json => self.decode(body),
            Encoding::Binary => Self::whole(read::batch_of(body)?),
        }
    }

    /// Decodes a batch; JSON may also be a single report (what `curl -d @window.json` sends).
    pub fn decode(self, bytes: &[u8]) -> Result<Vec<WindowReport>, WireError> {
        match self {
            Encoding::Json => {
                // The first byte decides, so serde's error names the field that is wrong.
                let batch = bytes
                    .iter()
                    .find(|b| !b.is_ascii_whitespace())
                    .is_some_and(|b| *b == b'[');
                if batch {
                    Ok(serde_json::from_slice(bytes)?)
                } else {
                    Ok(vec![serde_json::from_slice(bytes)?])
                }
            }
            Encoding::Binary => Self::whole(read::batch(bytes)?),
        }
    }

    /// A binary batch that was the whole body.
    fn whole((reports, rest): (Vec<WindowReport>, &[u8])) -> Result<Vec<WindowReport>, WireError> {
        if rest.is_empty() {
            Ok(reports)
        } else {
            Err(WireError::Trailing(rest.len()))
        }
    }
}

/// Serialises borrowed or owned reports as one sequence.
struct Batch<'a, R>(&'a [R]);

impl<R: std::borrow::Borrow<WindowReport>> Serialize for Batch<'_, R> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(std::borrow::Borrow::borrow))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use sketches_ddsketch::{Config, DDSketch};

    use super::*;
    use crate::targets::PodRef;
    use crate::windows::{EdgeKey, EdgeWindow, Endpoint, L4Stats, Latency, PodWindow, SideStats};

    fn report(node: &str, seq: u64) -> WindowReport {
        let mut sketch = DDSketch::new(Config::defaults());
        for i in 1..200 {
            sketch.add(f64::from(i) * 0.1);
        }
        let pod = |name: &str| PodRef {
            namespace: "default".into(),
            name: name.into(),
        };
        let side = SideStats {
            exchanges: 199,
            latency: Latency::from_sketch(sketch),
            srtt_us_min: 40,
            protocols: [("http".into(), 199)].into(),
            ..Default::default()
        };
        WindowReport {
            node: node.into(),
            seq,
            start_unix_ms: 10_000 * seq,
            end_unix_ms: 10_000 * (seq + 1),
            edges: vec![EdgeWindow {
                key: EdgeKey {
                    client: Endpoint {
                        pod: Some(pod("web-1")),
                        ip: "10.0.1.5".into(),
                    },
                    server: Endpoint {
                        pod: None,
                        ip: "10.0.2.7".into(),
                    },
                    port: 8080,
                    proto: "tcp".into(),
                },
                client: Some(Box::new(side.clone())),
                server: None,
                l4: L4Stats {
                    connects_ok: 3,
                    connect_ms_mean: 0.25,
                    ..Default::default()
                },
            }],
            pods: vec![PodWindow {
                pod: pod("web-1"),
                drops: [("netfilter_drop".to_string(), 2)].into(),
                cpu_throttled_ms: 1.5,
                payload: crate::targets::PayloadCapture::Egress,
                ..Default::default()
            }],
            node_drops: BTreeMap::from([("qdisc_drop".to_string(), 7)]),
            health: Default::default(),
        }
    }

    /// Reports compare equal through their binary form (exact, floats included; JSON text
    /// may move a float by one unit in the last place).
    fn same(a: &[WindowReport], b: &[WindowReport]) {
        assert_eq!(
            Encoding::Binary.encode(a).expect("binary"),
            Encoding::Binary.encode(b).expect("binary")
        );
    }

    #[test]
    fn both_encodings_round_trip_and_binary_is_smaller() {
        let batch = vec![report("node-1", 1), report("node-1", 2)];
        for enc in [Encoding::Json, Encoding::Binary] {
            let bytes = enc.encode(&batch).expect("encodes");
            let back = enc.decode(&bytes).expect("decodes");
            if enc == Encoding::Binary {
                same(&batch, &back);
            } else {
                let seqs: Vec<u64> = back.iter().map(|r| r.seq).collect();
                assert_eq!(seqs, vec![1, 2]);
                assert_eq!(back[1].edges[0].key, batch[1].edges[0].key);
            }
            let refs: Vec<&WindowReport> = batch.iter().collect();
            assert_eq!(
                enc.encode(&refs).expect("encodes"),
                bytes,
                "borrowed = owned"
            );
        }
        let json = Encoding::Json.encode(&batch).expect("json");
        let binary = Encoding::Binary.encode(&batch).expect("binary");
        assert!(
            binary.len() * 2 < json.len(),
            "{} vs {}",
            binary.len(),
            json.len()
        );
        // The sketch survives and still decodes to the same quantiles.
        let back = Encoding::Binary.decode(&binary).expect("decodes");
        let sketch = |r: &WindowReport| {
            let side = r.edges[0].client.as_ref().expect("client side");
            side.latency
                .sketch
                .as_ref()
                .expect("sketch")
                .decode()
                .expect("decodes")
        };
        assert_eq!(
            sketch(&back[0]).quantile(0.99).expect("q"),
            sketch(&batch[0]).quantile(0.99).expect("q")
        );
    }

    #[test]
    fn json_takes_one_report_or_an_array() {
        let one = serde_json::to_vec(&report("node-2", 3)).expect("json");
        let back = Encoding::Json.decode(&one).expect("decodes");
        assert_eq!((back.len(), back[0].node.as_str()), (1, "node-2"));
        let err = Encoding::Json.decode(br#"{"node": "n"}"#).unwrap_err();
        assert!(err.to_string().contains("missing field"), "{err}");
    }

    #[test]
    fn corrupt_binary_is_a_clear_error() {
        let bytes = Encoding::Binary
            .encode(&[report("node-1", 1)])
            .expect("binary");
        // Cut anywhere: never a panic, always an error.
        for cut in 0..bytes.len() {
            let err = Encoding::Binary.decode(&bytes[..cut]);
            assert!(err.is_err(), "cut at {cut} decoded");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(
            Encoding::Binary.decode(&longer),
            Err(WireError::Trailing(1))
        ));
        // A batch claiming far more reports than it holds.
        let err = Encoding::Binary
            .decode(&[0xff, 0xff, 0xff, 0xff, 0x0f, 1, 2, 3])
            .unwrap_err();
        assert!(err.to_string().contains("binary batch"), "{err}");
        // Flipped bytes may decode to other numbers, but never panic.
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0xa5;
            let _ = Encoding::Binary.decode(&b);
        }
    }

    /// A report with every field set, both sides and every kind of map filled.
    fn full_report() -> WindowReport {
        let mut r = report("node-3", 9);
        let latency = |scale: f64| {
            let mut sketch = DDSketch::new(Config::defaults());
            for i in 1..50 {
                sketch.add(f64::from(i) * scale);
            }
            Latency::from_sketch(sketch)
        };
        let side = |base: u64| SideStats {
            exchanges: base,
            no_response: base + 1,
            with_reset: base + 2,
            zero_window: base + 3,
            req_bytes: base * 300,
            resp_bytes: base * 70_000,
            latency: latency(0.3),
            ttfb: latency(0.2),
            wait: latency(0.1),
            srtt_us_mean: 81.5,
            srtt_us_max: 70_000,
            srtt_us_min: 12,
            l7_errors: base + 4,
            protocols: [("redis".into(), 3), ("http".into(), base)].into(),
        };
        let edge = &mut r.edges[0];
        edge.client = Some(Box::new(side(1_000)));
        edge.server = Some(Box::new(side(200)));
        edge.key.server.pod = Some(PodRef {
            namespace: "a-namespace-longer-than-24".into(),
            name: "db-0".into(),
        });
        edge.key.port = 65_535;
        edge.l4 = L4Stats {
            connects_ok: 1,
            connect_refused: 2,
            connect_timeout: 3,
            connect_failed_other: 4,
            connect_ms_mean: 0.5,
            connect_ms_max: f64::MAX,
            retrans_client_to_server: 5,
            retrans_server_to_client: 6,
            syn_retrans: 7,
            resets_by_client: 8,
            resets_by_server: 9,
            resets_to_client: 10,
            resets_to_server: 11,
            closes: u64::MAX,
        };
        r.edges.push(r.edges[0].clone());
        r.edges[1].key.client.pod = None;
        r.edges[1].client = None;
        let pod = &mut r.pods[0];
        pod.sockets_opened = 3;
        pod.netstat = [("TcpExt:ListenOverflows".to_string(), 4)].into();
        pod.cpu_periods = 100;
        pod.cpu_throttled_periods = 20;
        pod.server_conns_max = 64;
        pod.stray_drops = 2;
        pod.server_conns_at_stray_drops = 120;
        r.health = crate::windows::ProbeHealth {
            kernel: [
                ("ringbuf_full".to_string(), 1),
                ("exchanges".to_string(), 300),
            ]
            .into(),
            records_read: 1 << 40,
            records_malformed: 2,
            exchanges_unattributed: 3,
            tracepoints_attached: true,
        };
        r
    }

    /// What a decoder made of a body: the reports (as their encoding) and the bytes left.
    type Decoded = Result<(Vec<u8>, usize), postcard::Error>;

    fn decoded(d: Result<(Vec<WindowReport>, &[u8]), postcard::Error>) -> Decoded {
        d.map(|(reports, rest)| {
            (
                Encoding::Binary.encode(&reports).expect("binary"),
                rest.len(),
            )
        })
    }

    #[test]
    fn binary_decoder_agrees_with_serde_on_every_cut_and_changed_byte() {
        let bytes = Encoding::Binary
            .encode(&[full_report(), report("node-1", 2)])
            .expect("binary");
        let agree = |b: &[u8], what: &str| {
            let serde = decoded(postcard::take_from_bytes::<Vec<WindowReport>>(b));
            assert_eq!(decoded(read::batch(b)), serde, "{what}");
            let body = Bytes::copy_from_slice(b);
            assert_eq!(decoded(read::batch_of(&body)), serde, "{what}, shared body");
        };
        agree(&bytes, "whole");
        assert!(read::batch(&bytes).is_ok());
        for cut in 0..bytes.len() {
            agree(&bytes[..cut], &format!("cut at {cut}"));
        }
        for i in 0..bytes.len() {
            for flip in [0x01, 0x02, 0x80, 0xa5, 0xff] {
                let mut b = bytes.clone();
                b[i] ^= flip;
                agree(&b, &format!("byte {i} ^ {flip:#x}"));
            }
        }
        // Several bytes at once, to values of a small generator.
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..5_000 {
            let mut b = bytes.clone();
            for _ in 0..1 + next() % 3 {
                let at = (next() % b.len() as u64) as usize;
                b[at] = next() as u8;
            }
            agree(&b, "random bytes");
        }
        // Varints at their bounds: the port's three bytes, a length's ten.
        for tail in [
            &[0xff, 0xff, 0x03][..],
            &[0xff, 0xff, 0x04],
            &[0x80, 0x80, 0x80],
            &[0x80, 0x00],
        ] {
            let mut b = vec![1, 1, b'n', 0, 0, 2, 1];
            b.extend_from_slice(&[0, 1, b'a', 0, 1, b'b']);
            b.extend_from_slice(tail);
            agree(&b, &format!("port {tail:?}"));
        }
        for last in [0x00, 0x01, 0x02] {
            let mut b = vec![0xff; 9];
            b.push(last);
            agree(&b, &format!("length ending {last:#x}"));
        }
    }

    #[test]
    fn content_types_select_the_encoding() {
        assert_eq!(Encoding::from_content_type(None).ok(), Some(Encoding::Json));
        assert_eq!(
            Encoding::from_content_type(Some("application/json; charset=utf-8")).ok(),
            Some(Encoding::Json)
        );
        assert_eq!(
            Encoding::from_content_type(Some(BINARY)).ok(),
            Some(Encoding::Binary)
        );
        for enc in [Encoding::Json, Encoding::Binary] {
            assert_eq!(
                Encoding::from_content_type(Some(enc.content_type())).ok(),
                Some(enc)
            );
        }
        let err = Encoding::from_content_type(Some("application/vnd.netdx.windows.v9+postcard"))
            .unwrap_err();
        assert!(matches!(err, WireError::UnsupportedType(_)), "{err}");
    }
}

//! The binary form's decoder, written out for the report types.
//!
//! It reads postcard's encoding of the types' serde form (fields in declaration order,
//! LEB128 varints, little-endian floats, length-prefixed strings, bytes, sequences and maps,
//! a 0/1 byte before an option's value) and builds each value where it ends up. The derived
//! serde decoding passed every field up through nested `Result<Option<_>>`s and copied the
//! large structs between them, and was the largest part of the operator's ingest. It takes and
//! refuses exactly the bytes postcard's serde decoding does, with the same errors: the tests
//! compare the two on every cut and flipped byte of a batch.

use std::collections::BTreeMap;

use bytes::Bytes;
use compact_str::CompactString;
use postcard::Error;

use crate::targets::{PayloadCapture, PodRef};
use crate::windows::{
    EdgeKey, EdgeWindow, Endpoint, L4Stats, Latency, PodWindow, ProbeHealth, SideStats, Sketch,
    WindowReport,
};

type Result<T> = std::result::Result<T, Error>;

/// Reports decoded from the front of `bytes`, and the bytes after them.
pub(super) fn batch(bytes: &[u8]) -> Result<(Vec<WindowReport>, &[u8])> {
    Reader {
        rest: bytes,
        body: None,
    }
    .batch()
}

/// [`batch`] of a shared body, whose sketches are slices of it.
pub(super) fn batch_of(body: &Bytes) -> Result<(Vec<WindowReport>, &[u8])> {
    Reader {
        rest: body,
        body: Some(body),
    }
    .batch()
}

/// The bytes not read yet.
struct Reader<'a> {
    rest: &'a [u8],
    /// The body `rest` is a part of, when sketches may share it.
    body: Option<&'a Bytes>,
}

impl<'a> Reader<'a> {
    fn batch(mut self) -> Result<(Vec<WindowReport>, &'a [u8])> {
        let reports = self.seq(Self::report)?;
        Ok((reports, self.rest))
    }

    fn byte(&mut self) -> Result<u8> {
        let (&b, rest) = self
            .rest
            .split_first()
            .ok_or(Error::DeserializeUnexpectedEnd)?;
        self.rest = rest;
        Ok(b)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let (taken, rest) = self
            .rest
            .split_at_checked(n)
            .ok_or(Error::DeserializeUnexpectedEnd)?;
        self.rest = rest;
        Ok(taken)
    }

    /// A varint of at most `max_bytes` bytes whose last byte may be at most `last_max`
    /// (postcard's bounds for the type it encodes).
    fn varint(&mut self, max_bytes: u32, last_max: u8) -> Result<u64> {
        let mut out = 0u64;
        for i in 0..max_bytes {
            let b = self.byte()?;
            out |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                if i == max_bytes - 1 && b > last_max {
                    return Err(Error::DeserializeBadVarint);
                }
                return Ok(out);
            }
        }
        Err(Error::DeserializeBadVarint)
    }

    fn u64(&mut self) -> Result<u64> {
        self.varint(10, 0x01)
    }

    fn u32(&mut self) -> Result<u32> {
        // In range: the bounds leave 32 bits.
        self.varint(5, 0x0f).map(|v| v as u32)
    }

    fn u16(&mut self) -> Result<u16> {
        self.varint(3, 0x03).map(|v| v as u16)
    }

    /// A length (usize, encoded as u64 on 64-bit targets).
    fn len(&mut self) -> Result<usize> {
        usize::try_from(self.u64()?).map_err(|_| Error::DeserializeBadVarint)
    }

    fn f64(&mut self) -> Result<f64> {
        let b = self.take(8)?;
        let mut buf = [0u8; 8];
        buf.copy_from_slice(b);
        Ok(f64::from_le_bytes(buf))
    }

    fn bool(&mut self) -> Result<bool> {
        match self.byte()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(Error::DeserializeBadBool),
        }
    }

    /// Whether an option holds a value.
    fn some(&mut self) -> Result<bool> {
        match self.byte()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(Error::DeserializeBadOption),
        }
    }

    fn str(&mut self) -> Result<&'a str> {
        let n = self.len()?;
        std::str::from_utf8(self.take(n)?).map_err(|_| Error::DeserializeBadUtf8)
    }

    fn compact(&mut self) -> Result<CompactString> {
        self.str().map(CompactString::from)
    }

    fn string(&mut self) -> Result<String> {
        self.str().map(String::from)
    }

    fn seq<T>(&mut self, item: fn(&mut Self) -> Result<T>) -> Result<Vec<T>> {
        let n = self.len()?;
        // Every item takes a byte at least, so a length beyond the body reserves no more.
        let mut out = Vec::with_capacity(n.min(self.rest.len()));
        for _ in 0..n {
            out.push(item(self)?);
        }
        Ok(out)
    }

    /// A map of counts by name; a repeated name keeps its last count, as a map's insert does.
    fn counts(&mut self) -> Result<BTreeMap<String, u64>> {
        let n = self.len()?;
        let mut out = BTreeMap::new();
        for _ in 0..n {
            let name = self.string()?;
            out.insert(name, self.u64()?);
        }
        Ok(out)
    }

    fn report(&mut self) -> Result<WindowReport> {
        Ok(WindowReport {
            node: self.string()?,
            seq: self.u64()?,
            start_unix_ms: self.u64()?,
            end_unix_ms: self.u64()?,
            edges: self.seq(Self::edge)?,
            pods: self.seq(Self::pod_window)?,
            node_drops: self.counts()?,
            health: ProbeHealth {
                kernel: self.counts()?,
                records_read: self.u64()?,
                records_malformed: self.u64()?,
                exchanges_unattributed: self.u64()?,
                tracepoints_attached: self.bool()?,
            },
        })
    }

    fn edge(&mut self) -> Result<EdgeWindow> {
        Ok(EdgeWindow {
            key: EdgeKey {
                client: self.endpoint()?,
                server: self.endpoint()?,
                port: self.u16()?,
                proto: self.compact()?,
            },
            client: self.side()?,
            server: self.side()?,
            l4: self.l4()?,
        })
    }

    fn pod(&mut self) -> Result<PodRef> {
        Ok(PodRef {
            namespace: self.compact()?,
            name: self.compact()?,
        })
    }

    fn endpoint(&mut self) -> Result<Endpoint> {
        Ok(Endpoint {
            pod: if self.some()? {
                Some(self.pod()?)
            } else {
                None
            },
            ip: self.compact()?,
        })
    }

    fn side(&mut self) -> Result<Option<Box<SideStats>>> {
        if !self.some()? {
            return Ok(None);
        }
        // Filled in place: built on the stack, the side would be copied into its box.
        let mut s = Box::<SideStats>::default();
        s.exchanges = self.u64()?;
        s.no_response = self.u64()?;
        s.with_reset = self.u64()?;
        s.zero_window = self.u64()?;
        s.req_bytes = self.u64()?;
        s.resp_bytes = self.u64()?;
        self.latency(&mut s.latency)?;
        self.latency(&mut s.ttfb)?;
        self.latency(&mut s.wait)?;
        s.srtt_us_mean = self.f64()?;
        s.srtt_us_max = self.u32()?;
        s.srtt_us_min = self.u32()?;
        s.l7_errors = self.u64()?;
        let n = self.len()?;
        for _ in 0..n {
            let name = self.compact()?;
            s.protocols.set(name, self.u64()?);
        }
        Ok(Some(s))
    }

    fn latency(&mut self, l: &mut Latency) -> Result<()> {
        l.p10_ms = self.f64()?;
        l.p50_ms = self.f64()?;
        l.p90_ms = self.f64()?;
        l.p99_ms = self.f64()?;
        l.mean_ms = self.f64()?;
        l.max_ms = self.f64()?;
        l.sketch = if self.some()? {
            let n = self.len()?;
            let b = self.take(n)?;
            // A slice of the body is a reference count; a copy was an allocation per sketch.
            let b = match self.body {
                Some(body) => body.slice_ref(b),
                None => Bytes::copy_from_slice(b),
            };
            Some(Sketch::from_bytes(b).map_err(|_| Error::SerdeDeCustom)?)
        } else {
            None
        };
        Ok(())
    }

    fn l4(&mut self) -> Result<L4Stats> {
        Ok(L4Stats {
            connects_ok: self.u64()?,
            connect_refused: self.u64()?,
            connect_timeout: self.u64()?,
            connect_failed_other: self.u64()?,
            connect_ms_mean: self.f64()?,
            connect_ms_max: self.f64()?,
            retrans_client_to_server: self.u64()?,
            retrans_server_to_client: self.u64()?,
            syn_retrans: self.u64()?,
            resets_by_client: self.u64()?,
            resets_by_server: self.u64()?,
            resets_to_client: self.u64()?,
            resets_to_server: self.u64()?,
            closes: self.u64()?,
        })
    }

    fn pod_window(&mut self) -> Result<PodWindow> {
        Ok(PodWindow {
            pod: self.pod()?,
            drops: self.counts()?,
            sockets_opened: self.u64()?,
            netstat: self.counts()?,
            cpu_periods: self.u64()?,
            cpu_throttled_periods: self.u64()?,
            cpu_throttled_ms: self.f64()?,
            server_conns_max: self.u64()?,
            stray_drops: self.u64()?,
            server_conns_at_stray_drops: self.u64()?,
            payload: self.payload()?,
        })
    }

    /// A unit enum's variant index, as serde's derive refuses one out of range.
    fn payload(&mut self) -> Result<PayloadCapture> {
        let i = self.u32()?;
        PayloadCapture::ALL
            .get(i as usize)
            .copied()
            .ok_or(Error::SerdeDeCustom)
    }
}

//! Decoding of ring-buffer records: length-checked, never trusting the kernel blindly.

use netdx_common::{
    BATCH_HEADER_LEN, BATCH_LEN, ConnEvent, DropEvent, Exchange, ExchangeBatch, RecordKind,
};

/// One decoded record.
#[derive(Clone, Copy, Debug)]
pub enum Record {
    /// A completed exchange.
    Exchange(Exchange),
    /// A connection event.
    Conn(ConnEvent),
    /// A kernel drop.
    Drop(DropEvent),
}

fn read<T: Copy>(b: &[u8]) -> Option<T> {
    if b.len() < size_of::<T>() {
        return None;
    }
    // SAFETY: length checked; T is a plain repr(C) struct valid for any bytes.
    Some(unsafe { std::ptr::read_unaligned(b.as_ptr().cast::<T>()) })
}

/// Decodes one record; `None` for an unknown kind, a batch or a short record.
pub fn decode(b: &[u8]) -> Option<Record> {
    match RecordKind::from_u8(*b.first()?)? {
        RecordKind::Exchange => read(b).map(Record::Exchange),
        RecordKind::Conn => read(b).map(Record::Conn),
        RecordKind::Drop => read(b).map(Record::Drop),
        RecordKind::Batch => None,
    }
}

/// Calls `f` with each record of one ring-buffer item: a batch
/// ([`netdx_common::ExchangeBatch`]) holds up to [`BATCH_LEN`] exchanges, any other item one
/// record. `f(None)` once for an item that does not decode (a batch whose count is out of
/// range or whose records are cut short is rejected whole).
#[inline]
pub fn decode_each(b: &[u8], mut f: impl FnMut(Option<Record>)) {
    if b.first() != Some(&(RecordKind::Batch as u8)) {
        return f(decode(b));
    }
    let records = b
        .get(std::mem::offset_of!(ExchangeBatch, len)..BATCH_HEADER_LEN)
        .and_then(|l| l.try_into().ok())
        .map(|l| u32::from_ne_bytes(l) as usize)
        .filter(|&len| (1..=BATCH_LEN).contains(&len))
        .and_then(|len| b.get(BATCH_HEADER_LEN..BATCH_HEADER_LEN + len * size_of::<Exchange>()));
    match records {
        Some(r) => r
            .as_chunks::<{ size_of::<Exchange>() }>()
            .0
            .iter()
            .for_each(|c| f(read(c).map(Record::Exchange))),
        None => f(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_unknown_records_are_rejected() {
        assert!(decode(&[]).is_none());
        assert!(decode(&[9, 0, 0, 0]).is_none());
        assert!(decode(&[RecordKind::Exchange as u8; 10]).is_none());
    }

    fn bytes_of<T>(v: &T) -> &[u8] {
        // SAFETY: viewing a repr(C) struct as bytes.
        unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }
    }

    fn decoded(b: &[u8]) -> Vec<Option<Record>> {
        let mut out = Vec::new();
        decode_each(b, |r| out.push(r));
        out
    }

    #[test]
    fn batches_yield_their_valid_records_only() {
        let mut batch = ExchangeBatch {
            kind: RecordKind::Batch as u8,
            len: 3,
            ..Default::default()
        };
        for (i, r) in batch.records.iter_mut().enumerate() {
            *r = Exchange {
                kind: RecordKind::Exchange as u8,
                cookie: i as u64,
                ..Default::default()
            };
        }
        let cookies: Vec<u64> = decoded(bytes_of(&batch))
            .into_iter()
            .map(|r| match r {
                Some(Record::Exchange(e)) => e.cookie,
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(cookies, [0, 1, 2]);
        // A single decode does not take a batch for one record.
        assert!(decode(bytes_of(&batch)).is_none());
    }

    #[test]
    fn bad_batches_are_rejected_whole() {
        let mut batch = ExchangeBatch {
            kind: RecordKind::Batch as u8,
            ..Default::default()
        };
        for len in [0, BATCH_LEN as u32 + 1, u32::MAX] {
            batch.len = len;
            assert!(
                matches!(decoded(bytes_of(&batch)).as_slice(), [None]),
                "len {len}"
            );
        }
        batch.len = 2;
        let cut = &bytes_of(&batch)[..BATCH_HEADER_LEN + size_of::<Exchange>() + 10];
        assert!(matches!(decoded(cut).as_slice(), [None]));
        assert!(matches!(
            decoded(&[RecordKind::Batch as u8, 0, 0]).as_slice(),
            [None]
        ));
    }

    #[test]
    fn exchange_round_trips() {
        let ex = Exchange {
            kind: RecordKind::Exchange as u8,
            cookie: 42,
            req_bytes: 7,
            ..Default::default()
        };
        match decode(bytes_of(&ex)) {
            Some(Record::Exchange(e)) => assert_eq!((e.cookie, e.req_bytes), (42, 7)),
            other => panic!("unexpected {other:?}"),
        }
    }
}

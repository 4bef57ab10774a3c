//! Decoding of ring-buffer records: length-checked, never trusting the kernel blindly.

use netdx_common::{ConnEvent, DropEvent, Exchange, RecordKind};

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

/// Decodes one record; `None` for an unknown kind or a short record.
pub fn decode(b: &[u8]) -> Option<Record> {
    match RecordKind::from_u8(*b.first()?)? {
        RecordKind::Exchange => read(b).map(Record::Exchange),
        RecordKind::Conn => read(b).map(Record::Conn),
        RecordKind::Drop => read(b).map(Record::Drop),
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

    #[test]
    fn exchange_round_trips() {
        let ex = Exchange {
            kind: RecordKind::Exchange as u8,
            cookie: 42,
            req_bytes: 7,
            ..Default::default()
        };
        // SAFETY: viewing a repr(C) struct as bytes.
        let bytes = unsafe {
            std::slice::from_raw_parts((&ex as *const Exchange).cast::<u8>(), size_of::<Exchange>())
        };
        match decode(bytes) {
            Some(Record::Exchange(e)) => assert_eq!((e.cookie, e.req_bytes), (42, 7)),
            other => panic!("unexpected {other:?}"),
        }
    }
}

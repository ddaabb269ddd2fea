//! Named regression tests for defects the fuzz targets found in files other work also
//! changes (the reader, the SQL replay), kept here so they merge cleanly. Each runs with the
//! allocation limit armed: without its fix it aborts the test binary with the size it asked.

use crate::binlog::event::{self, Checksum, RawEvent, types};
use crate::binlog::reader::{EventReader, ReadError};
use crate::binlog::statements::SqlSink;
use crate::binlog::walk::Sink;

use super::alloc_limit::with_limit;

const LIMIT: usize = 16 << 20;

#[test]
fn format_description_claiming_gigabytes_is_a_bad_size_not_an_allocation() {
    let mut file = event::MAGIC.to_vec();
    let mut fde = event::build(
        types::FORMAT_DESCRIPTION,
        1,
        0,
        0,
        0,
        &[0; 80],
        Checksum::None,
    );
    fde[9..13].copy_from_slice(&2_684_362_753u32.to_le_bytes());
    file.extend_from_slice(&fde);
    let result = with_limit("reader test", LIMIT, &file, || {
        let mut reader = EventReader::new(&file[..]).map_err(|e| e.to_string())?;
        reader
            .next_event()
            .map(|_| ())
            .map_err(|e| format!("{e:?}"))
    });
    let err = result.unwrap_err();
    assert!(err.contains("BadSize"), "{err}");
    // The same file with a real size reads.
    let fde = event::build(
        types::FORMAT_DESCRIPTION,
        1,
        0,
        0,
        0,
        &[0; 80],
        Checksum::None,
    );
    let mut file = event::MAGIC.to_vec();
    file.extend_from_slice(&fde);
    let mut reader = EventReader::new(&file[..]).unwrap();
    assert!(!matches!(
        reader.next_event(),
        Err(ReadError::Event(event::EventError::BadSize { .. }))
    ));
}

/// A TRANSACTION_PAYLOAD body: compression field (2) then the events.
fn payload(compression: u8, events: &[u8]) -> Vec<u8> {
    let mut body = vec![2, 1, compression, 0];
    body.extend_from_slice(events);
    body
}

#[test]
fn payload_event_claiming_gigabytes_is_an_error_without_allocating_them() {
    // An inner event whose header says 3 GB, followed by a few bytes.
    let mut inner = event::build(types::XID, 1, 0, 0, 0, &[0; 8], Checksum::None);
    inner[9..13].copy_from_slice(&3_000_000_000u32.to_le_bytes());
    let body = payload(255, &inner);
    let ev = event::build(
        types::TRANSACTION_PAYLOAD,
        1,
        0,
        0,
        0,
        &body,
        Checksum::None,
    );
    let mut ran = Vec::new();
    let mut exec = |sql: &[u8]| {
        ran.push(sql.to_vec());
        Ok(())
    };
    let mut sink = SqlSink::new(&mut exec);
    let raw = RawEvent::frame(&ev, 4).unwrap();
    let result = with_limit("payload test", LIMIT, &ev, || {
        sink.event(&raw, Checksum::None)
    });
    let err = result.unwrap_err();
    assert!(err.to_string().contains("truncated event"), "{err}");
    // A whole inner event still runs.
    let xid = event::build(types::XID, 1, 0, 0, 0, &[0; 8], Checksum::None);
    let body = payload(255, &xid);
    let ev = event::build(
        types::TRANSACTION_PAYLOAD,
        1,
        0,
        0,
        0,
        &body,
        Checksum::None,
    );
    sink.event(&RawEvent::frame(&ev, 4).unwrap(), Checksum::None)
        .unwrap();
    drop(sink);
    assert_eq!(ran, vec![b"COMMIT".to_vec()]);
}

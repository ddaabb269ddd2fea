//! Scanning a binlog file: what it holds (GTIDs, times, transactions) and where its last
//! complete transaction ends.

use std::collections::BTreeSet;
use std::io::Read;

use super::event::{self, Checksum, EventError, FormatDescription, Header, RawEvent, types};
use super::reader::{EventReader, ReadError};
use super::transaction::{Step, Tracker, TxId};
use crate::mysql::gtid::{Gtid, GtidSet, MariaGtid, MariaGtidList};

/// One transaction found in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxInfo {
    /// Offset of its first event (the GTID event).
    pub start: u64,
    /// Offset just after its last event.
    pub end: u64,
    pub gtid: Option<Gtid>,
    pub maria_gtid: Option<MariaGtid>,
    /// Commit time in microseconds (immediate commit timestamp), or the event timestamp in
    /// seconds times a million where the server recorded no microseconds.
    pub commit_us: u64,
}

#[derive(Debug, Clone, Default)]
pub struct FileSummary {
    pub format: Option<FormatDescription>,
    pub previous_gtids: Option<GtidSet>,
    pub maria_gtid_list: Option<MariaGtidList>,
    /// Event timestamps (seconds) of the first and last event.
    pub first_event_time: Option<u32>,
    pub last_event_time: Option<u32>,
    pub first_commit_us: Option<u64>,
    pub last_commit_us: Option<u64>,
    pub gtids: GtidSet,
    pub maria_gtids: MariaGtidList,
    pub transactions: u64,
    /// Offset just after the last complete transaction (or outside event): where a file
    /// cut by a crash can be truncated to.
    pub complete_end: u64,
    /// Offset after the last event that could be read whole.
    pub end: u64,
    /// The file ends with ROTATE or STOP: the server closed it.
    pub sealed: bool,
    pub next_file: Option<String>,
    pub server_ids: BTreeSet<u32>,
    /// The server that wrote the file: its format description's server id.
    pub writer_server_id: Option<u32>,
    /// The file ends inside an event or transaction (still being written, or cut).
    pub partial_tail: bool,
    pub checksum: Checksum,
}

/// Builds a [`FileSummary`] one event at a time: used by [`scan`] for whole files and by the
/// spool while events arrive.
#[derive(Debug)]
pub struct SummaryBuilder {
    pub summary: FileSummary,
    tracker: Tracker,
    open: Option<TxInfo>,
}

impl Default for SummaryBuilder {
    fn default() -> Self {
        SummaryBuilder {
            summary: FileSummary {
                complete_end: 4,
                end: 4,
                ..Default::default()
            },
            tracker: Tracker::new(),
            open: None,
        }
    }
}

impl SummaryBuilder {
    pub fn new() -> SummaryBuilder {
        SummaryBuilder::default()
    }

    pub fn in_transaction(&self) -> bool {
        self.tracker.in_transaction()
    }

    /// Feeds the event at `offset` (`raw` when it was small enough to hold). Returns the
    /// transaction it completed, if any.
    pub fn feed(
        &mut self,
        offset: u64,
        header: &Header,
        raw: Option<&RawEvent<'_>>,
    ) -> Result<Option<TxInfo>, EventError> {
        let s = &mut self.summary;
        let end = offset + u64::from(header.event_size);
        if header.type_code == types::FORMAT_DESCRIPTION
            && let Some(raw) = raw
        {
            let f = FormatDescription::parse(raw, offset)?;
            s.checksum = f.checksum;
            s.format = Some(f);
            s.writer_server_id.get_or_insert(header.server_id);
        }
        let checksum = s.checksum;
        s.end = end;
        s.server_ids.insert(header.server_id);
        s.first_event_time.get_or_insert(header.timestamp);
        s.last_event_time = Some(header.timestamp);
        if let Some(raw) = raw {
            match header.type_code {
                types::PREVIOUS_GTIDS => {
                    s.previous_gtids = Some(event::parse_previous_gtids(raw, checksum, offset)?)
                }
                types::MARIA_GTID_LIST => {
                    s.maria_gtid_list = Some(parse_maria_gtid_list(raw, checksum))
                }
                types::ROTATE => {
                    s.sealed = true;
                    s.next_file = Some(event::parse_rotate(raw, checksum, offset)?.1);
                }
                types::STOP => s.sealed = true,
                _ => {}
            }
        }
        match self.tracker.feed(header.type_code, raw, checksum, offset)? {
            Step::Outside => {
                if !self.tracker.in_transaction() {
                    s.complete_end = end;
                }
                Ok(None)
            }
            Step::Begin(id) => {
                let (gtid, maria_gtid, commit_us) = match id {
                    TxId::Mysql(info) => {
                        let us = if info.immediate_commit_us > 0 {
                            info.immediate_commit_us
                        } else {
                            u64::from(header.timestamp) * 1_000_000
                        };
                        (info.gtid, None, us)
                    }
                    TxId::Mariadb(g) => (None, Some(g), u64::from(header.timestamp) * 1_000_000),
                };
                self.open = Some(TxInfo {
                    start: offset,
                    end,
                    gtid,
                    maria_gtid,
                    commit_us,
                });
                Ok(None)
            }
            Step::Inside => Ok(None),
            Step::Commit => {
                // A statement without a GTID event before it is a transaction of its own.
                let mut tx = self.open.take().unwrap_or(TxInfo {
                    start: offset,
                    end,
                    gtid: None,
                    maria_gtid: None,
                    commit_us: u64::from(header.timestamp) * 1_000_000,
                });
                tx.end = end;
                if let Some(g) = &tx.gtid {
                    s.gtids.add(g);
                }
                if let Some(g) = tx.maria_gtid {
                    s.maria_gtids.update(g);
                }
                s.transactions += 1;
                s.first_commit_us.get_or_insert(tx.commit_us);
                s.last_commit_us = Some(tx.commit_us);
                s.complete_end = end;
                Ok(Some(tx))
            }
        }
    }

    pub fn finish(mut self) -> FileSummary {
        if self.tracker.in_transaction() {
            self.summary.partial_tail = true;
        }
        self.summary
    }
}

/// Reads a whole file, calling `on_tx` for each complete transaction. A truncated tail is
/// not an error: it is reported in the summary (`partial_tail`, `complete_end`).
pub fn scan(input: impl Read, mut on_tx: impl FnMut(&TxInfo)) -> Result<FileSummary, ReadError> {
    let mut reader = EventReader::new(input)?;
    let mut b = SummaryBuilder::new();
    loop {
        match reader.next_event() {
            Ok(Some(item)) => {
                if let Some(tx) = b.feed(item.offset, &item.header, item.raw.as_ref())? {
                    on_tx(&tx);
                }
            }
            Ok(None) => break,
            Err(ReadError::TruncatedTail { .. }) => {
                b.summary.partial_tail = true;
                break;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(b.finish())
}

fn parse_maria_gtid_list(raw: &event::RawEvent<'_>, checksum: Checksum) -> MariaGtidList {
    let mut r = crate::mysql::decode::Reader::new(raw.body(checksum));
    let mut list = MariaGtidList::default();
    let count = r.u32().unwrap_or(0) & 0x0FFF_FFFF;
    for _ in 0..count {
        let (Ok(domain), Ok(server_id), Ok(seq)) = (r.u32(), r.u32(), r.u64()) else {
            break;
        };
        list.update(MariaGtid {
            domain,
            server_id,
            seq,
        });
    }
    list
}

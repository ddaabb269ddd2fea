//! Where transactions begin and end in a stream of events, so a writer can cut a file only
//! between transactions and an archive can say which transactions a file holds.

use super::event::{self, Checksum, EventError, GtidInfo, MariaGtidEvent, RawEvent, types};
use crate::mysql::gtid::MariaGtid;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxId {
    Mysql(GtidInfo),
    Mariadb(MariaGtid),
}

/// What one event means for transaction boundaries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Not part of a transaction (format description, previous GTIDs, rotate, stop,
    /// heartbeat): the position after it is a safe place to cut.
    Outside,
    /// A transaction starts here.
    Begin(TxId),
    /// Inside a transaction.
    Inside,
    /// The transaction ends with this event; the position after it is a safe place to cut.
    Commit,
}

#[derive(Debug, Default)]
pub struct Tracker {
    in_tx: bool,
    /// The transaction opened with a BEGIN query (so a later query does not end it).
    explicit_begin: bool,
    /// MariaDB FL_STANDALONE: the next event is the whole transaction.
    standalone: bool,
}

impl Tracker {
    pub fn new() -> Tracker {
        Tracker::default()
    }

    pub fn in_transaction(&self) -> bool {
        self.in_tx
    }

    /// Classifies one event. `raw` is `None` for events too large to hold, which are never
    /// the ones that start or end a transaction except a compressed transaction payload.
    pub fn feed(
        &mut self,
        type_code: u8,
        raw: Option<&RawEvent<'_>>,
        checksum: Checksum,
        offset: u64,
    ) -> Result<Step, EventError> {
        let bad = |what| EventError::Malformed { what, offset };
        let step = match type_code {
            types::FORMAT_DESCRIPTION
            | types::PREVIOUS_GTIDS
            | types::ROTATE
            | types::STOP
            | types::HEARTBEAT
            | types::HEARTBEAT_V2
            | types::INCIDENT
            | types::MARIA_GTID_LIST
            | types::MARIA_BINLOG_CHECKPOINT
            | types::MARIA_START_ENCRYPTION => return Ok(Step::Outside),
            types::GTID | types::ANONYMOUS_GTID => {
                let raw = raw.ok_or(bad("GTID"))?;
                let info = GtidInfo::parse_untagged(
                    raw.body(checksum),
                    type_code == types::ANONYMOUS_GTID,
                    offset,
                )?;
                self.open(false);
                Step::Begin(TxId::Mysql(info))
            }
            types::GTID_TAGGED => {
                let raw = raw.ok_or(bad("tagged GTID"))?;
                let info = GtidInfo::parse_tagged(raw.body(checksum), offset)?;
                self.open(false);
                Step::Begin(TxId::Mysql(info))
            }
            types::MARIA_GTID => {
                let raw = raw.ok_or(bad("MariaDB GTID"))?;
                let g = MariaGtidEvent::parse(raw, checksum, offset)?;
                self.open(g.standalone);
                Step::Begin(TxId::Mariadb(g.gtid))
            }
            types::XID | types::XA_PREPARE => self.close(),
            types::TRANSACTION_PAYLOAD if self.in_tx => self.close(),
            // A query too large to hold is a statement, never BEGIN or COMMIT.
            types::QUERY if raw.is_none() => {
                if self.in_tx && self.explicit_begin && !self.standalone {
                    Step::Inside
                } else {
                    self.close()
                }
            }
            types::QUERY => {
                let raw = raw.ok_or(bad("query"))?;
                let (_, sql) = event::parse_query(raw, checksum, offset)?;
                let head = sql
                    .trim_start()
                    .get(..8)
                    .unwrap_or(sql.trim_start())
                    .to_ascii_uppercase();
                if !self.in_tx || self.standalone {
                    // A statement with no GTID before it (very old servers), or MariaDB's
                    // standalone group: the event is the whole transaction.
                    self.close()
                } else if head.starts_with("BEGIN")
                    || head.starts_with("XA START")
                    || head.starts_with("XA END")
                {
                    self.explicit_begin = true;
                    Step::Inside
                } else if head.starts_with("COMMIT")
                    || head.starts_with("ROLLBACK")
                    || !self.explicit_begin
                {
                    // COMMIT of a non-transactional group, or DDL / XA COMMIT after its GTID.
                    self.close()
                } else {
                    Step::Inside
                }
            }
            _ if self.standalone => self.close(),
            _ => Step::Inside,
        };
        Ok(step)
    }

    fn open(&mut self, standalone: bool) {
        self.in_tx = true;
        self.explicit_begin = false;
        self.standalone = standalone;
    }

    fn close(&mut self) -> Step {
        self.in_tx = false;
        self.explicit_begin = false;
        self.standalone = false;
        Step::Commit
    }
}

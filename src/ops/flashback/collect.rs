//! Reading the chosen transactions out of the archive into a spill file: only their rows
//! events (payloads unpacked), each one's offset kept, so the inverse can be read back
//! newest first in bounded memory. Refusals (DDL, statement-based DML, partial images,
//! partial JSON) are found here, before the target is touched.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::binlog::event::{GtidInfo, types};
use crate::binlog::rows::tx_events::TxHandler;
use crate::binlog::rows::{RowsError, RowsEvent, RowsKind, TableMap};
use crate::error::{Error, Result};
use crate::mysql::gtid::{Gtid, GtidSet};
use crate::ops::binlog_search::{TableName, Window};

/// Which transactions to undo.
#[derive(Debug, Clone)]
pub enum Selection {
    /// These transactions, whole.
    Gtids(GtidSet),
    /// The changes to these tables by transactions committed in the window.
    Window {
        window: Window,
        tables: Vec<TableName>,
    },
}

/// One rows event in the spill file.
#[derive(Debug, Clone, Copy)]
pub struct Spilled {
    pub offset: u64,
    pub len: u32,
    pub type_code: u8,
    pub table_id: u64,
}

/// A transaction to invert: its identity and its rows events in the spill file.
#[derive(Debug, Clone)]
pub struct TxRecord {
    pub gtid: Option<Gtid>,
    pub commit_us: u64,
    pub position: String,
    pub maps: HashMap<u64, TableMap>,
    pub events: Vec<Spilled>,
    pub rows: u64,
}

impl TxRecord {
    /// `transaction UUID:N (file:pos)`, for messages.
    pub fn describe(&self) -> String {
        match &self.gtid {
            Some(g) => format!("transaction {g} ({})", self.position),
            None => format!("the transaction at {}", self.position),
        }
    }

    pub fn tables(&self) -> BTreeSet<String> {
        self.events
            .iter()
            .filter_map(|e| self.maps.get(&e.table_id).map(TableMap::name))
            .collect()
    }
}

/// The spill file: created in `dir`, unlinked at once (gone when closed, even after a kill),
/// readable by its owner only while it lives.
pub struct Spill {
    file: File,
    len: u64,
}

impl Spill {
    pub fn create(dir: &Path) -> Result<Spill> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = dir.join(format!(
            ".myvault-flashback-{}-{nanos}.spill",
            std::process::id()
        ));
        let ctx = || format!("creating the flashback spill file in {}", dir.display());
        let file = crate::private_fs::file_options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| Error::io(ctx(), e))?;
        std::fs::remove_file(&path).map_err(|e| Error::io(ctx(), e))?;
        Ok(Spill { file, len: 0 })
    }

    fn append(&mut self, bytes: &[u8]) -> std::io::Result<u64> {
        let at = self.len;
        self.file.write_all_at(bytes, at)?;
        self.len += bytes.len() as u64;
        Ok(at)
    }

    fn truncate(&mut self, to: u64) -> std::io::Result<()> {
        self.file.set_len(to)?;
        self.len = to;
        Ok(())
    }

    /// One spilled event's body.
    pub fn read(&self, e: &Spilled, buf: &mut Vec<u8>) -> Result<()> {
        buf.clear();
        buf.resize(e.len as usize, 0);
        self.file
            .read_exact_at(buf, e.offset)
            .map_err(|err| Error::io("reading the flashback spill file", err))
    }

    pub fn bytes(&self) -> u64 {
        self.len
    }
}

pub struct Collector<'a> {
    selection: &'a Selection,
    spill: &'a mut Spill,
    pub txs: Vec<TxRecord>,
    pub found: GtidSet,
    cur: Option<(TxRecord, u64)>,
    /// Why the selection cannot be flashed back, typed; the walk only carries text.
    pub refusal: Option<Error>,
}

impl<'a> Collector<'a> {
    pub fn new(selection: &'a Selection, spill: &'a mut Spill) -> Self {
        Collector {
            selection,
            spill,
            txs: Vec::new(),
            found: GtidSet::default(),
            cur: None,
            refusal: None,
        }
    }

    fn wants_table(&self, map: &TableMap) -> bool {
        match self.selection {
            Selection::Gtids(_) => true,
            Selection::Window { tables, .. } => {
                tables.iter().any(|t| t.is(&map.schema, &map.table))
            }
        }
    }

    fn refuse(&mut self, e: Error) -> std::io::Error {
        let text = e.to_string();
        self.refusal = Some(e);
        std::io::Error::other(text)
    }
}

fn io_err(e: impl ToString) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())
}

impl TxHandler for Collector<'_> {
    fn begin(&mut self, info: &GtidInfo, file: &str, pos: u64) -> std::io::Result<()> {
        let selected = match self.selection {
            Selection::Gtids(set) => info.gtid.as_ref().is_some_and(|g| set.contains(g)),
            Selection::Window { window, .. } => window.selects(info),
        };
        self.cur = selected.then(|| {
            (
                TxRecord {
                    gtid: info.gtid.clone(),
                    commit_us: info.immediate_commit_us,
                    position: format!("{file}:{pos}"),
                    maps: HashMap::new(),
                    events: Vec::new(),
                    rows: 0,
                },
                self.spill.len,
            )
        });
        Ok(())
    }

    fn statement(&mut self, db: &str, sql: &str) -> std::io::Result<()> {
        let Some((tx, _)) = &self.cur else {
            return Ok(());
        };
        let concerned = match self.selection {
            Selection::Gtids(_) => true,
            Selection::Window { tables, .. } => tables.iter().any(|t| t.named_by(db, sql)),
        };
        if !concerned {
            return Ok(());
        }
        let word = sql
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        let short: String = sql.chars().take(120).collect();
        let what = if matches!(word.as_str(), "INSERT" | "UPDATE" | "DELETE" | "REPLACE") {
            "a statement-based change (binlog_format=STATEMENT), which has no row images to invert"
        } else {
            "DDL, which flashback cannot undo (restore the table with `restore --tables` instead)"
        };
        let msg = format!("{} holds {what}: {short}", tx.describe());
        Err(self.refuse(Error::TargetRefused(msg)))
    }

    fn row_event(&mut self, type_code: u8, body: &[u8]) -> std::io::Result<()> {
        if self.cur.is_none() {
            return Ok(());
        }
        if type_code == types::TABLE_MAP {
            let map = TableMap::parse(body).map_err(io_err)?;
            if self.wants_table(&map)
                && let Some((tx, _)) = self.cur.as_mut()
            {
                tx.maps.insert(map.table_id, map);
            }
            return Ok(());
        }
        if RowsKind::of(type_code).is_none() {
            return Ok(());
        }
        let ev = RowsEvent::parse(type_code, body).map_err(io_err)?;
        let Some((tx, _)) = self.cur.as_ref() else {
            return Ok(());
        };
        let Some(map) = tx.maps.get(&ev.table_id) else {
            // A table not chosen (window mode), or a rows event without its map.
            return Ok(());
        };
        let refusal = if ev.partial_json {
            Some(format!(
                "{} updates {} with partial JSON images (binlog_row_value_options=PARTIAL_JSON): \
                 the values before the update are there, the ones after are not",
                tx.describe(),
                map.name()
            ))
        } else if !ev.is_full_image() {
            Some(format!(
                "{} has partial row images of {} (binlog_row_image is not FULL): flashback \
                 needs every column before and after",
                tx.describe(),
                map.name()
            ))
        } else {
            None
        };
        if let Some(msg) = refusal {
            return Err(self.refuse(Error::TargetRefused(msg)));
        }
        // Every row decoded once here, so a value flashback cannot write back is refused
        // before the target is touched.
        let decoded = ev
            .rows(map)
            .and_then(|mut rows| rows.try_fold(0u64, |n, row| row.map(|_| n + 1)));
        let rows = match decoded {
            Ok(n) => n,
            Err(RowsError::Unsupported(why)) => {
                let msg = format!("{} cannot be undone: {why}", tx.describe());
                return Err(self.refuse(Error::TargetRefused(msg)));
            }
            Err(e) => return Err(io_err(e)),
        };
        let offset = self.spill.append(body)?;
        let len = u32::try_from(body.len()).map_err(io_err)?;
        if let Some((tx, _)) = self.cur.as_mut() {
            tx.rows += rows;
            tx.events.push(Spilled {
                offset,
                len,
                type_code,
                table_id: ev.table_id,
            });
        }
        Ok(())
    }

    fn end(&mut self, committed: bool) -> std::io::Result<()> {
        let Some((tx, start)) = self.cur.take() else {
            return Ok(());
        };
        if let Some(g) = &tx.gtid {
            self.found.add(g);
        }
        if committed && !tx.events.is_empty() {
            self.txs.push(tx);
        } else {
            self.spill.truncate(start)?;
        }
        Ok(())
    }
}

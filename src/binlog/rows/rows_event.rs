//! WRITE/UPDATE/DELETE_ROWS events, v1 and v2: which columns each image holds, then the
//! rows, each a NULL bitmap over the columns present and their values. An UPDATE row is a
//! before image followed by an after image.

use super::RowsError;
use super::table_map::TableMap;
use super::value::{self, Value};
use crate::binlog::event::types;
use crate::mysql::decode::Reader;

const WRITE_ROWS_V1: u8 = 23;
const UPDATE_ROWS_V1: u8 = 24;
const DELETE_ROWS_V1: u8 = 25;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RowsKind {
    Insert,
    Update,
    Delete,
}

impl RowsKind {
    /// The kind of a rows event type; `None` for other events. PARTIAL_UPDATE_ROWS is an
    /// update whose after image may hold JSON diffs instead of values.
    pub fn of(type_code: u8) -> Option<RowsKind> {
        match type_code {
            types::WRITE_ROWS | WRITE_ROWS_V1 => Some(RowsKind::Insert),
            types::UPDATE_ROWS | UPDATE_ROWS_V1 | types::PARTIAL_UPDATE_ROWS => {
                Some(RowsKind::Update)
            }
            types::DELETE_ROWS | DELETE_ROWS_V1 => Some(RowsKind::Delete),
            _ => None,
        }
    }
}

/// One row image: a value per column of the table, `None` for a column the image does not
/// hold (`binlog_row_image` MINIMAL or NOBLOB).
pub type Image = Vec<Option<Value>>;

/// One changed row: INSERT has only `after`, DELETE only `before`, UPDATE both.
#[derive(Debug, Clone, PartialEq)]
pub struct RowChange {
    pub before: Option<Image>,
    pub after: Option<Image>,
}

#[derive(Debug, Clone)]
pub struct RowsEvent<'a> {
    pub kind: RowsKind,
    pub table_id: u64,
    pub flags: u16,
    /// The event is PARTIAL_UPDATE_ROWS (`binlog_row_value_options=PARTIAL_JSON`).
    pub partial_json: bool,
    pub columns: usize,
    present_before: Vec<bool>,
    present_after: Vec<bool>,
    rows: &'a [u8],
}

fn bitmap(r: &mut Reader<'_>, n: usize) -> Result<Vec<bool>, RowsError> {
    let bytes = r.take(n.div_ceil(8))?;
    Ok((0..n).map(|i| bytes[i / 8] & (1 << (i % 8)) != 0).collect())
}

impl<'a> RowsEvent<'a> {
    /// Only the table id: enough to decide whether the event is of interest.
    pub fn table_id_of(body: &[u8]) -> Result<u64, RowsError> {
        Ok(Reader::new(body).u48()?)
    }

    /// Parses a rows event body (without the checksum).
    pub fn parse(type_code: u8, body: &'a [u8]) -> Result<RowsEvent<'a>, RowsError> {
        let kind = RowsKind::of(type_code)
            .ok_or_else(|| RowsError::malformed(format!("rows event of type {type_code}")))?;
        let mut r = Reader::new(body);
        let table_id = r.u48()?;
        let flags = r.u16()?;
        let v1 = matches!(type_code, WRITE_ROWS_V1 | UPDATE_ROWS_V1 | DELETE_ROWS_V1);
        if !v1 {
            // The length counts its own two bytes.
            let extra = usize::from(r.u16()?);
            r.skip(
                extra
                    .checked_sub(2)
                    .ok_or_else(|| RowsError::malformed("rows event extra data length"))?,
            )?;
        }
        let columns = usize::try_from(r.lenenc_int()?)
            .ok()
            .filter(|n| *n <= 4096)
            .ok_or_else(|| RowsError::malformed("rows event column count"))?;
        let present_before = bitmap(&mut r, columns)?;
        let present_after = if kind == RowsKind::Update {
            bitmap(&mut r, columns)?
        } else {
            present_before.clone()
        };
        Ok(RowsEvent {
            kind,
            table_id,
            flags,
            partial_json: type_code == types::PARTIAL_UPDATE_ROWS,
            columns,
            present_before,
            present_after,
            rows: r.rest(),
        })
    }

    /// Every image holds every column (`binlog_row_image=FULL`).
    pub fn is_full_image(&self) -> bool {
        self.present_before.iter().all(|p| *p) && self.present_after.iter().all(|p| *p)
    }

    /// The rows, in the order the statement changed them.
    pub fn rows<'m>(&self, map: &'m TableMap) -> Result<RowIter<'a, 'm>, RowsError> {
        if self.partial_json {
            return Err(RowsError::Unsupported(format!(
                "{}: a partial JSON update (binlog_row_value_options=PARTIAL_JSON) holds JSON \
                 diffs, not the values after the update",
                map.name()
            )));
        }
        if map.columns.len() != self.columns || map.table_id != self.table_id {
            return Err(RowsError::malformed(format!(
                "rows event for table id {} with {} columns after the table map of {} (id {}, {} columns)",
                self.table_id,
                self.columns,
                map.name(),
                map.table_id,
                map.columns.len()
            )));
        }
        Ok(RowIter {
            r: Reader::new(self.rows),
            map,
            kind: self.kind,
            present_before: self.present_before.clone(),
            present_after: self.present_after.clone(),
        })
    }
}

pub struct RowIter<'a, 'm> {
    r: Reader<'a>,
    map: &'m TableMap,
    kind: RowsKind,
    present_before: Vec<bool>,
    present_after: Vec<bool>,
}

fn image(r: &mut Reader<'_>, map: &TableMap, present: &[bool]) -> Result<Image, RowsError> {
    // `column 3 `doc` (JSON)`: by position too, names are there only with FULL metadata.
    let where_ = |c: &super::Column, i: usize| match &c.name {
        Some(n) => format!("column {} `{n}` ({})", i + 1, c.type_name()),
        None => format!("column {} ({})", i + 1, c.type_name()),
    };
    let n = present.iter().filter(|p| **p).count();
    let nulls = r.take(n.div_ceil(8))?.to_vec();
    let mut nth = 0usize;
    let mut out = Vec::with_capacity(present.len());
    for (c, here) in map.columns.iter().zip(present) {
        if !here {
            out.push(None);
            continue;
        }
        let is_null = nulls[nth / 8] & (1 << (nth % 8)) != 0;
        nth += 1;
        out.push(Some(if is_null {
            Value::Null
        } else {
            value::decode(r, c).map_err(|e| match e {
                RowsError::Malformed { what } => RowsError::malformed(format!(
                    "{what} in {} of {}",
                    where_(c, out.len()),
                    map.name()
                )),
                RowsError::Unsupported(why) => RowsError::Unsupported(format!(
                    "{} of {}: {why}",
                    where_(c, out.len()),
                    map.name()
                )),
            })?
        }));
    }
    Ok(out)
}

impl Iterator for RowIter<'_, '_> {
    type Item = Result<RowChange, RowsError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.r.is_empty() {
            return None;
        }
        let left = self.r.remaining();
        let row = (|| {
            let first = image(&mut self.r, self.map, &self.present_before)?;
            Ok(match self.kind {
                RowsKind::Insert => RowChange {
                    before: None,
                    after: Some(first),
                },
                RowsKind::Delete => RowChange {
                    before: Some(first),
                    after: None,
                },
                RowsKind::Update => RowChange {
                    before: Some(first),
                    after: Some(image(&mut self.r, self.map, &self.present_after)?),
                },
            })
        })();
        // A row of no bytes (an event naming no columns) would repeat for ever.
        let row = row.and_then(|r| {
            if self.r.remaining() == left {
                Err(RowsError::malformed("rows event whose rows hold no bytes"))
            } else {
                Ok(r)
            }
        });
        if row.is_err() {
            // A broken row leaves no way to find the next one.
            self.r = Reader::new(&[]);
        }
        Some(row)
    }
}

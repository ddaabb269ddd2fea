//! The local spool: the binlog files of one server, written byte-for-byte as the server
//! wrote them, and made durable at transaction boundaries.
//!
//! Only complete transactions count: a file is fsynced once the events after the last
//! fsync end a transaction, at most every [`SYNC_EVERY`], so a committed transaction is
//! durable here within a second. After a crash, [`Spool::recover`] cuts each file back to
//! the end of its last complete transaction, and streaming resumes from there.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::event::{self, Checksum, EventError, HEADER_LEN, Header, MAGIC, RawEvent, types};
use super::index::{self, FileSummary, SummaryBuilder};
use super::reader::ReadError;
use crate::private_fs;

/// Longest time a complete transaction waits in the page cache before an fsync.
pub const SYNC_EVERY: Duration = Duration::from_millis(200);

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("the stream broke the binlog: {0}")]
    Event(#[from] EventError),
    #[error("spool file {path} is damaged: {source}")]
    Damaged { path: String, source: ReadError },
    /// The event does not continue the file where it stands: the source and the spool
    /// disagree (the source lost transactions it had sent, or sent another file).
    #[error("event for {file} ends at {log_pos}, but the spool file is {len} bytes long")]
    Discontinuity {
        file: String,
        log_pos: u32,
        len: u64,
    },
    #[error("received an event before any file was started")]
    NoFile,
}

fn io_err(path: &Path) -> impl Fn(io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// A file the spool holds, after recovery.
#[derive(Debug, Clone)]
pub struct SpooledFile {
    pub name: String,
    pub path: PathBuf,
    pub summary: FileSummary,
}

const SPOOL_BUFFER: usize = 256 << 10;

/// The file being written.
struct Current {
    name: String,
    path: PathBuf,
    /// Buffered: events are small and many, and a write per event cost more CPU than
    /// everything else the streamer does. Flushed before every fsync and upload.
    file: io::BufWriter<File>,
    len: u64,
    /// Length up to the end of the last complete transaction.
    complete: u64,
    /// `complete` as of the last fsync.
    synced: u64,
    last_sync: Instant,
    builder: SummaryBuilder,
    /// An event arriving in several pieces: its header, CRC so far and bytes still due.
    partial: Option<PartialEvent>,
}

struct PartialEvent {
    offset: u64,
    header: Header,
    crc: crc32fast::Hasher,
    left: usize,
    /// The last four bytes seen: the stored CRC once the event is complete.
    tail: Vec<u8>,
}

pub struct Spool {
    dir: PathBuf,
    current: Option<Current>,
    checksum: Checksum,
}

/// What writing an event did to the current file.
#[derive(Debug, Clone)]
pub enum Written {
    Nothing,
    /// The file is complete (ended by ROTATE or STOP) and closed.
    Sealed {
        name: String,
        path: PathBuf,
        len: u64,
        summary: Box<FileSummary>,
    },
}

impl Spool {
    /// Opens (creating) the spool directory for one server. It holds every row change of
    /// the database: only its owner may read it (0700, files 0600).
    pub fn open(dir: &Path) -> Result<Spool, SpoolError> {
        private_fs::own_dir(dir).map_err(io_err(dir))?;
        Ok(Spool {
            dir: dir.to_path_buf(),
            current: None,
            checksum: Checksum::None,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Files on disk, oldest first, each cut back to its last complete transaction.
    pub fn recover(&self) -> Result<Vec<SpooledFile>, SpoolError> {
        let mut names: Vec<String> = fs::read_dir(&self.dir)
            .map_err(io_err(&self.dir))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| {
                !n.starts_with('.')
                    && n.rsplit('.')
                        .next()
                        .is_some_and(|s| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit()))
            })
            .collect();
        names.sort_by_key(|n| super::file_sequence(n).unwrap_or(0));
        let mut out = Vec::new();
        for name in names {
            let path = self.dir.join(&name);
            // Files an older version spooled with the umask's mode.
            private_fs::restrict(&path, private_fs::FILE_MODE).map_err(io_err(&path))?;
            let f = File::open(&path).map_err(io_err(&path))?;
            let summary = match index::scan(io::BufReader::new(f), |_| {}) {
                Ok(s) => s,
                // Created but cut before its magic number was written: nothing to keep.
                Err(ReadError::TruncatedTail { offset: 0 }) => {
                    fs::remove_file(&path).map_err(io_err(&path))?;
                    continue;
                }
                Err(source) => {
                    return Err(SpoolError::Damaged {
                        path: path.display().to_string(),
                        source,
                    });
                }
            };
            let len = fs::metadata(&path).map_err(io_err(&path))?.len();
            if len > summary.complete_end {
                // The tail holds a transaction that never completed here: cut it away.
                let f = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(io_err(&path))?;
                f.set_len(summary.complete_end).map_err(io_err(&path))?;
                f.sync_all().map_err(io_err(&path))?;
            }
            out.push(SpooledFile {
                name,
                path,
                summary,
            });
        }
        Ok(out)
    }

    /// Starts (or reopens, to append) `name`. A new file gets the magic number.
    pub fn start_file(
        &mut self,
        name: &str,
        summary: Option<FileSummary>,
    ) -> Result<(), SpoolError> {
        self.close_current()?;
        let path = self.dir.join(name);
        let mut file = private_fs::file_options()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        let mut len = file.metadata().map_err(io_err(&path))?.len();
        if len == 0 {
            file.write_all(MAGIC).map_err(io_err(&path))?;
            len = 4;
        }
        let mut builder = SummaryBuilder::new();
        if let Some(s) = summary {
            self.checksum = s.checksum;
            builder.summary = s;
        }
        self.current = Some(Current {
            name: name.to_string(),
            path,
            file: io::BufWriter::with_capacity(SPOOL_BUFFER, file),
            len,
            complete: len,
            synced: len,
            last_sync: Instant::now(),
            builder,
            partial: None,
        });
        Ok(())
    }

    pub fn current_name(&self) -> Option<&str> {
        self.current.as_ref().map(|c| c.name.as_str())
    }

    pub fn current_len(&self) -> Option<u64> {
        self.current.as_ref().map(|c| c.len)
    }

    /// The current file's name, path, durable complete length and summary, for uploads.
    pub fn snapshot(&self) -> Option<(String, PathBuf, u64, FileSummary)> {
        self.current.as_ref().map(|c| {
            (
                c.name.clone(),
                c.path.clone(),
                c.synced,
                c.builder.summary.clone(),
            )
        })
    }

    pub fn in_transaction(&self) -> bool {
        self.current
            .as_ref()
            .is_some_and(|c| c.builder.in_transaction() || c.partial.is_some())
    }

    /// Writes one whole event. Events without a place in the file (heartbeats, the made-up
    /// first ROTATE, a format description re-sent on resume) are skipped.
    pub fn write_event(&mut self, bytes: &[u8]) -> Result<Written, SpoolError> {
        let header = Header::parse(bytes).map_err(|_| EventError::Truncated { offset: 0 })?;
        if !belongs_in_file(&header) {
            return Ok(Written::Nothing);
        }
        let cur = self.current.as_mut().ok_or(SpoolError::NoFile)?;
        let offset = check_continues(cur, &header)?;
        let ev = RawEvent::frame(bytes, offset)?;
        if header.type_code == types::FORMAT_DESCRIPTION {
            let fde = event::FormatDescription::parse(&ev, offset)?;
            self.checksum = fde.checksum;
            ev.verify(fde.checksum, offset)?;
        } else {
            ev.verify(self.checksum, offset)?;
        }
        cur.file.write_all(bytes).map_err(io_err(&cur.path))?;
        cur.len += bytes.len() as u64;
        cur.builder.feed(offset, &header, Some(&ev))?;
        self.after_event(&header)
    }

    /// Begins an event too large to hold: `first` holds its start (at least the header).
    pub fn begin_large_event(&mut self, first: &[u8], total: usize) -> Result<(), SpoolError> {
        let header = Header::parse(first).map_err(|_| EventError::Truncated { offset: 0 })?;
        let cur = self.current.as_mut().ok_or(SpoolError::NoFile)?;
        let offset = check_continues(cur, &header)?;
        cur.partial = Some(PartialEvent {
            offset,
            header,
            crc: crc32fast::Hasher::new(),
            left: total,
            tail: Vec::new(),
        });
        self.continue_large_event(first)?;
        Ok(())
    }

    /// Appends the next piece of a large event; returns what completing it did.
    pub fn continue_large_event(&mut self, piece: &[u8]) -> Result<Written, SpoolError> {
        let checksum = self.checksum;
        let cur = self.current.as_mut().ok_or(SpoolError::NoFile)?;
        let Some(p) = cur.partial.as_mut() else {
            return Err(SpoolError::NoFile);
        };
        let piece = &piece[..piece.len().min(p.left)];
        cur.file.write_all(piece).map_err(io_err(&cur.path))?;
        cur.len += piece.len() as u64;
        p.left -= piece.len();
        // Everything but the last four bytes goes into the CRC; those four are the CRC.
        p.tail.extend_from_slice(piece);
        if p.tail.len() > 4 {
            let cut = p.tail.len() - 4;
            p.crc.update(&p.tail[..cut]);
            p.tail.drain(..cut);
        }
        if p.left > 0 {
            return Ok(Written::Nothing);
        }
        let Some(p) = cur.partial.take() else {
            return Ok(Written::Nothing);
        };
        if checksum == Checksum::Crc32 {
            let stored = u32::from_le_bytes([p.tail[0], p.tail[1], p.tail[2], p.tail[3]]);
            let computed = p.crc.finalize();
            if stored != computed {
                return Err(EventError::Checksum {
                    offset: p.offset,
                    stored,
                    computed,
                }
                .into());
            }
        }
        cur.builder.feed(p.offset, &p.header, None)?;
        let header = p.header;
        self.after_event(&header)
    }

    fn after_event(&mut self, header: &Header) -> Result<Written, SpoolError> {
        let Some(cur) = self.current.as_mut() else {
            return Ok(Written::Nothing);
        };
        if !cur.builder.in_transaction() {
            cur.complete = cur.len;
        }
        if matches!(header.type_code, types::ROTATE | types::STOP) {
            self.sync()?;
            let Some(cur) = self.current.take() else {
                return Ok(Written::Nothing);
            };
            return Ok(Written::Sealed {
                name: cur.name,
                path: cur.path,
                len: cur.len,
                summary: Box::new(cur.builder.summary),
            });
        }
        if cur.complete > cur.synced && cur.last_sync.elapsed() >= SYNC_EVERY {
            self.sync()?;
        }
        Ok(Written::Nothing)
    }

    /// Makes every complete transaction durable. Called at least every [`SYNC_EVERY`].
    pub fn sync(&mut self) -> Result<(), SpoolError> {
        if let Some(cur) = self.current.as_mut() {
            cur.file.flush().map_err(io_err(&cur.path))?;
            if cur.complete > cur.synced {
                cur.file.get_ref().sync_data().map_err(io_err(&cur.path))?;
                cur.synced = cur.complete;
                crate::failpoint::hit("stream-after-spool-sync");
            }
            cur.last_sync = Instant::now();
        }
        Ok(())
    }

    /// Stops writing the current file, cutting away a transaction in progress.
    pub fn close_current(&mut self) -> Result<(), SpoolError> {
        if let Some(mut cur) = self.current.take() {
            cur.file.flush().map_err(io_err(&cur.path))?;
            let file = cur.file.get_ref();
            if cur.len > cur.complete {
                file.set_len(cur.complete).map_err(io_err(&cur.path))?;
            }
            file.sync_all().map_err(io_err(&cur.path))?;
        }
        Ok(())
    }

    /// Removes a file that is safely archived.
    pub fn remove(&self, name: &str) -> Result<(), SpoolError> {
        let path = self.dir.join(name);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    /// Total bytes of the files held.
    pub fn bytes(&self) -> u64 {
        fs::read_dir(&self.dir)
            .map(|it| {
                it.filter_map(|e| e.ok()?.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    }
}

/// Events the server sends that are not part of the file: heartbeats, the made-up ROTATE
/// that names the file, and (when resuming inside a file) the format description re-sent
/// with position 0.
pub fn belongs_in_file(h: &Header) -> bool {
    !(h.is_artificial()
        || h.log_pos == 0
        || matches!(h.type_code, types::HEARTBEAT | types::HEARTBEAT_V2))
}

fn check_continues(cur: &Current, h: &Header) -> Result<u64, SpoolError> {
    let offset = cur.len;
    if u64::from(h.log_pos) != offset + u64::from(h.event_size)
        || (h.event_size as usize) < HEADER_LEN
    {
        return Err(SpoolError::Discontinuity {
            file: cur.name.clone(),
            log_pos: h.log_pos,
            len: cur.len,
        });
    }
    Ok(offset)
}

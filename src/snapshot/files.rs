//! Plain files and directories as a snapshot source: how clone and cold snapshots enter the
//! repository, and a way to use the repository on its own (`backup --path`).

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use crate::repo::chunker::ChunkerConfig;
use crate::repo::manifest::{ChunkRefs, FileEntry, FileKind};
use crate::repo::writer::MultiWriter;
use crate::repo::{RepoError, Result};

/// Picks the chunker for a file by its name: InnoDB data files change in place, page by page.
pub type ChunkerChoice<'a> = &'a (dyn Fn(&str) -> ChunkerConfig + Sync);

/// Adds `root` (a file or a directory tree) to the writer. Paths in the snapshot are relative
/// to `root` (a single file keeps its own name). Files are read by two threads, largest
/// first, so compression keeps both cores busy. Returns the number of entries added.
pub fn add_tree(writer: &MultiWriter, root: &Path, choose: ChunkerChoice<'_>) -> Result<usize> {
    let meta = fs::symlink_metadata(root)
        .map_err(|e| RepoError::io(format!("cannot read {}", root.display()), e))?;
    if meta.is_file() {
        let name = root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "file".into());
        add_one(writer, root, &name, &meta, choose)?;
        return Ok(1);
    }
    let mut entries = Vec::new();
    walk(root, "", &mut entries)?;
    let count = entries.len();
    let mut regular = Vec::new();
    for (path, rel, meta) in entries {
        if meta.is_file() {
            regular.push((path, rel, meta));
        } else {
            add_one(writer, &path, &rel, &meta, choose)?;
        }
    }
    regular.sort_by_key(|(_, _, m)| m.size());
    let queue = std::sync::Mutex::new(regular);
    let first_error = crate::first_error::FirstError::new();
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                loop {
                    let next = queue.lock().unwrap_or_else(|e| e.into_inner()).pop();
                    let Some((path, rel, meta)) = next else { break };
                    if let Err(e) = add_one(writer, &path, &rel, &meta, choose) {
                        first_error.set(e);
                        break;
                    }
                }
            });
        }
    });
    first_error.into_result()?;
    Ok(count)
}

/// Every entry under `dir`, depth first, sorted by name.
fn walk(
    dir: &Path,
    rel: &str,
    out: &mut Vec<(std::path::PathBuf, String, fs::Metadata)>,
) -> Result<()> {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .map_err(|e| RepoError::io(format!("cannot list {}", dir.display()), e))?
        .collect::<std::io::Result<_>>()
        .map_err(|e| RepoError::io(format!("cannot list {}", dir.display()), e))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        let rel_path = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        let meta = fs::symlink_metadata(&path)
            .map_err(|e| RepoError::io(format!("cannot read {}", path.display()), e))?;
        let is_dir = meta.is_dir();
        out.push((path.clone(), rel_path.clone(), meta));
        if is_dir {
            walk(&path, &rel_path, out)?;
        }
    }
    Ok(())
}

fn add_one(
    writer: &MultiWriter,
    path: &Path,
    rel: &str,
    meta: &fs::Metadata,
    choose: ChunkerChoice<'_>,
) -> Result<()> {
    let mode = meta.permissions().mode() & 0o7777;
    let bare = |kind, target| FileEntry {
        path: rel.to_string(),
        kind,
        mode,
        size: 0,
        digest: crate::repo::manifest::ContentDigest::NONE,
        target,
        refs: ChunkRefs::default(),
    };
    if meta.is_dir() {
        writer.add_entry(bare(FileKind::Dir, None));
    } else if meta.file_type().is_symlink() {
        let target = fs::read_link(path)
            .map_err(|e| RepoError::io(format!("cannot read link {}", path.display()), e))?;
        writer.add_entry(bare(
            FileKind::Symlink,
            Some(target.to_string_lossy().into_owned()),
        ));
    } else if meta.is_file() {
        let file = fs::File::open(path)
            .map_err(|e| RepoError::io(format!("cannot open {}", path.display()), e))?;
        let entry = writer.add_file(rel, mode, file, choose(rel))?;
        // A file that changed while it was read is not a faithful copy of anything.
        if entry.size != meta.size() {
            return Err(RepoError::Invalid(format!(
                "{} changed size while it was read ({} -> {} bytes); back up stopped servers' files only",
                path.display(),
                meta.size(),
                entry.size
            )));
        }
    }
    // Sockets, fifos and devices have no content to keep.
    Ok(())
}

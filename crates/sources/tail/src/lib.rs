//! Follows a growing log file and hands out complete lines, each exactly once, across log
//! rotation (rename-and-reopen, and copytruncate) and restarts of the reader.
//!
//! The reader's `Position` is plain data: the caller persists it in the same transaction
//! as whatever it made of the lines, so after a crash it resumes exactly after the last line
//! whose results are on disk. This crate never decides what a line means, and never
//! consumes a partial line (one without its newline yet).

use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum TailError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: the file this reader stopped in (inode {inode}, at byte {offset}) is gone and no rotated copy of it was found; lines written to it after that point cannot be read")]
    Lost {
        path: PathBuf,
        inode: u64,
        offset: u64,
    },
}

/// Where the reader is: which file (by inode, since rotation renames it), how far, and
/// which line that is. `generation` counts the files read since following began, so that
/// `(generation, line)` names a line uniquely even when copytruncate reuses an inode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    pub inode: u64,
    pub offset: u64,
    /// Lines consumed from this file so far.
    pub line: u64,
    pub generation: u64,
    /// A hash of the file's first line, once read: inode numbers are reused and
    /// copytruncate keeps them, so the inode alone cannot tell one file from the next.
    #[serde(default)]
    pub fingerprint: Option<u64>,
}

/// One complete line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// The line without its newline; invalid UTF-8 is replaced, never dropped.
    pub text: String,
    /// 1-based line number within the file it came from.
    pub number: u64,
    /// Which file, counted from the first one followed (see `Position::generation`).
    pub generation: u64,
    /// The position just after this line: persist it with the results of this line.
    pub after: Position,
}

struct Open {
    file: File,
    /// Where the file was opened from (the followed path, or a rotated copy).
    from: PathBuf,
    pos: Position,
}

/// What the end of the current file means.
enum AtEnd {
    /// Nothing more yet; the writer may add lines.
    Wait,
    /// The current file is finished (renamed away, or it was a rotated copy): go on with the
    /// followed path from its start.
    NextFile,
    /// The followed path was truncated under us (copytruncate): the rest of what we were
    /// reading is in the copy, if one is found.
    Truncated,
}

pub struct Follower {
    path: PathBuf,
    current: Option<Open>,
    generation: u64,
}

/// FNV-1a: stable across builds and platforms, which a persisted value needs.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The fingerprint of a file's first complete line, if it has one.
fn first_line_fingerprint(path: &Path) -> Option<u64> {
    let mut buf = vec![0u8; 4096];
    let n = File::open(path).and_then(|mut f| f.read(&mut buf)).ok()?;
    let nl = buf[..n].iter().position(|b| *b == b'\n')?;
    Some(fnv1a(&buf[..nl]))
}

/// Whether `path` is (still) the file the position was taken in.
fn same_file(path: &Path, pos: &Position) -> bool {
    pos.fingerprint
        .is_none_or(|fp| first_line_fingerprint(path) == Some(fp))
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TailError + '_ {
    move |source| TailError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Uncompressed rotated copies next to `path` (`path.1`, `path.0`, `path-20261124`), most
/// recently modified first.
fn rotated_siblings(path: &Path) -> Vec<PathBuf> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Vec::new();
    };
    let name = name.to_string_lossy().to_string();
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let mut out: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name().is_some_and(|f| {
                        let f = f.to_string_lossy();
                        f.len() > name.len()
                            && f.starts_with(&name)
                            && matches!(f.as_bytes()[name.len()], b'.' | b'-')
                            && ![".gz", ".xz", ".zst", ".bz2"]
                                .iter()
                                .any(|z| f.ends_with(z))
                    })
                })
                .filter_map(|p| {
                    let modified = std::fs::metadata(&p).and_then(|m| m.modified()).ok()?;
                    Some((modified, p))
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort_by_key(|(modified, _)| std::cmp::Reverse(*modified));
    out.into_iter().map(|(_, p)| p).collect()
}

impl Follower {
    /// Starts following `path`: from `from` (a persisted position) when given, else from the
    /// beginning of the file. The file need not exist yet. `Err(Lost)` when the file the
    /// position belongs to can no longer be found: the caller must say so loudly, and may
    /// start again with `None`.
    pub fn open(path: &Path, from: Option<Position>) -> Result<Self, TailError> {
        let mut f = Follower {
            path: path.to_path_buf(),
            current: None,
            generation: from.as_ref().map_or(0, |p| p.generation),
        };
        if let Some(pos) = from {
            f.resume(pos)?;
        }
        Ok(f)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The position after the last line handed out (`None` before the file first exists).
    pub fn position(&self) -> Option<Position> {
        self.current.as_ref().map(|o| o.pos.clone())
    }

    fn open_at(path: &Path, pos: Position) -> Result<Open, TailError> {
        let mut file = File::open(path).map_err(io(path))?;
        file.seek(SeekFrom::Start(pos.offset)).map_err(io(path))?;
        Ok(Open {
            file,
            from: path.to_path_buf(),
            pos,
        })
    }

    /// A rotated copy that can hold what was being read at `pos`: the same inode (renamed),
    /// or, after copytruncate, any copy at least that long.
    fn find_copy(&self, pos: &Position, same_inode: bool) -> Option<PathBuf> {
        rotated_siblings(&self.path).into_iter().find(|s| {
            std::fs::metadata(s)
                .is_ok_and(|m| m.len() >= pos.offset && (!same_inode || m.ino() == pos.inode))
                && same_file(s, pos)
        })
    }

    fn resume(&mut self, pos: Position) -> Result<(), TailError> {
        let here = std::fs::metadata(&self.path).ok();
        let unchanged = same_file(&self.path, &pos);
        if let Some(meta) = &here {
            if meta.ino() == pos.inode && meta.len() >= pos.offset && unchanged {
                self.current = Some(Self::open_at(&self.path, pos)?);
                return Ok(());
            }
        }
        // Same inode but shorter or rewritten: truncated (copytruncate), so any copy long
        // enough with the same first line holds the rest; otherwise it was renamed away.
        let truncated = here.as_ref().is_some_and(|m| m.ino() == pos.inode);
        if let Some(copy) = self.find_copy(&pos, !truncated) {
            self.current = Some(Self::open_at(&copy, pos)?);
            return Ok(());
        }
        if pos.offset == 0 {
            return Ok(());
        }
        Err(TailError::Lost {
            path: self.path.clone(),
            inode: pos.inode,
            offset: pos.offset,
        })
    }

    fn at_end(&self) -> AtEnd {
        let Some(cur) = &self.current else {
            return AtEnd::NextFile;
        };
        if cur.from != self.path {
            return AtEnd::NextFile;
        }
        match std::fs::metadata(&self.path) {
            Err(_) => AtEnd::Wait,
            Ok(m) if m.ino() != cur.pos.inode => AtEnd::NextFile,
            Ok(m) if m.len() < cur.pos.offset => AtEnd::Truncated,
            // Truncated and refilled past our offset before we looked.
            Ok(_) if !same_file(&self.path, &cur.pos) => AtEnd::Truncated,
            Ok(_) => AtEnd::Wait,
        }
    }

    /// Goes on with the followed path from its start. False if it does not exist (yet).
    fn next_file(&mut self) -> Result<bool, TailError> {
        let Ok(meta) = std::fs::metadata(&self.path) else {
            return Ok(false);
        };
        if self.current.is_some() {
            self.generation += 1;
        }
        let pos = Position {
            inode: meta.ino(),
            offset: 0,
            line: 0,
            generation: self.generation,
            fingerprint: None,
        };
        self.current = Some(Self::open_at(&self.path, pos)?);
        Ok(true)
    }

    /// Complete lines available now, at most `max`. Empty means: nothing new yet.
    pub fn read_lines(&mut self, max: usize) -> Result<Vec<Line>, TailError> {
        let mut out = Vec::new();
        // Each turn finishes one file; a few turns cover a rotation found mid-read.
        for _ in 0..4 {
            if self.current.is_none() && !self.next_file()? {
                break;
            }
            self.read_available(max, &mut out)?;
            if out.len() >= max {
                break;
            }
            match self.at_end() {
                AtEnd::Wait => break,
                AtEnd::NextFile => {
                    if !self.next_file()? {
                        break;
                    }
                }
                AtEnd::Truncated => {
                    let pos = self.current.as_ref().map(|c| c.pos.clone());
                    match pos.and_then(|p| self.find_copy(&p, false).map(|c| (c, p))) {
                        Some((copy, p)) => self.current = Some(Self::open_at(&copy, p)?),
                        None => {
                            if !self.next_file()? {
                                break;
                            }
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    fn read_available(&mut self, max: usize, out: &mut Vec<Line>) -> Result<(), TailError> {
        let Some(cur) = self.current.as_mut() else {
            return Ok(());
        };
        let mut pending: Vec<u8> = Vec::new();
        let mut buf = [0u8; 64 * 1024];
        'reading: while out.len() < max {
            let n = cur.file.read(&mut buf).map_err(io(&cur.from))?;
            if n == 0 {
                break;
            }
            pending.extend_from_slice(&buf[..n]);
            let mut start = 0;
            while let Some(nl) = pending[start..].iter().position(|b| *b == b'\n') {
                let end = start + nl;
                let raw = &pending[start..end];
                let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
                if cur.pos.line == 0 {
                    cur.pos.fingerprint = Some(fnv1a(&pending[start..end]));
                }
                cur.pos.offset += (end + 1 - start) as u64;
                cur.pos.line += 1;
                out.push(Line {
                    text: String::from_utf8_lossy(raw).into_owned(),
                    number: cur.pos.line,
                    generation: cur.pos.generation,
                    after: cur.pos.clone(),
                });
                start = end + 1;
                if out.len() >= max {
                    break 'reading;
                }
            }
            pending.drain(..start);
        }
        // Bytes past the last line handed out (a partial line, or lines beyond `max`) are
        // read again next time from `pos.offset`: never consumed half, never lost.
        cur.file
            .seek(SeekFrom::Start(cur.pos.offset))
            .map_err(io(&cur.from))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;

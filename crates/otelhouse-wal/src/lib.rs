//! Write-ahead log: every acknowledged record is here, fsync'd, before the
//! client hears "OK".
//!
//! Layout: `<dir>/<first-seq:020>.wal` segment files. Each entry is a frame
//!
//! ```text
//! [len: u32 LE][crc32c: u32 LE][seq: u64 LE][kind: u8][payload: len bytes]
//! ```
//!
//! where the CRC covers seq, kind and payload. Sequence numbers increase by
//! one per entry across segments. On open, frames are read back in order; the
//! first frame that is short, fails its CRC, or breaks the sequence ends its
//! segment: the file is truncated there, so a torn write from a crash is
//! dropped, never replayed as garbage.
//!
//! [`Committer`] adds group commit on top: one writer thread takes every
//! entry queued while the previous fsync ran, writes them with one `write`
//! and one `fdatasync`, then hands each to an [`Apply`] sink in sequence
//! order and only then answers the waiting requests.

mod committer;

pub use committer::{Apply, Committer, CommitterOptions, FSYNC_BUCKETS, SubmitError, WalStats};

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

const HEADER: usize = 17;
/// A frame claiming more than this is corruption, not data.
const MAX_PAYLOAD: u32 = 1 << 30;

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("WAL I/O error on {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("the WAL failed earlier and refuses writes until restart: {0}")]
    Failed(String),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> WalError + '_ {
    move |source| WalError::Io {
        path: path.to_owned(),
        source,
    }
}

/// One replayed entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub seq: u64,
    pub kind: u8,
    pub payload: Vec<u8>,
}

#[derive(Debug, Clone)]
struct Segment {
    first_seq: u64,
    /// Last seq written into it; `first_seq - 1` while empty.
    last_seq: u64,
    path: PathBuf,
    bytes: u64,
}

#[derive(Debug, Clone)]
pub struct WalOptions {
    /// Start a new segment once the active one passes this size.
    pub segment_bytes: u64,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_bytes: 64 << 20,
        }
    }
}

/// What opening the WAL found.
#[derive(Debug, Default, Clone)]
pub struct Recovery {
    pub entries: u64,
    /// Bytes cut off segment ends (torn or corrupt frames).
    pub truncated_bytes: u64,
    /// Segments where a bad frame was found.
    pub damaged_segments: Vec<PathBuf>,
}

pub struct Wal {
    dir: PathBuf,
    opts: WalOptions,
    /// Sealed segments then the active one (last).
    segments: Vec<Segment>,
    active: File,
    next_seq: u64,
    buf: Vec<u8>,
}

fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}.wal"))
}

/// The first seqs of the segments in `dir` (their names), ascending.
fn segment_firsts(dir: &Path) -> Result<Vec<u64>, WalError> {
    let mut firsts: Vec<u64> = fs::read_dir(dir)
        .map_err(io_err(dir))?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(".wal")?.parse().ok())
        .collect();
    firsts.sort_unstable();
    Ok(firsts)
}

fn sync_dir(dir: &Path) -> Result<(), WalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

impl Wal {
    /// Opens (or creates) the WAL in `dir`, calling `replay` for every intact
    /// entry in sequence order. `min_next_seq` lets the caller guarantee new
    /// entries sort after everything it already made durable elsewhere (data
    /// flushed from entries whose segments are gone).
    pub fn open(
        dir: &Path,
        opts: WalOptions,
        min_next_seq: u64,
        mut replay: impl FnMut(Entry),
    ) -> Result<(Wal, Recovery), WalError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let firsts = segment_firsts(dir)?;
        let mut recovery = Recovery::default();
        let mut segments = Vec::new();
        let mut next_seq = min_next_seq.max(1);
        for first in firsts {
            let path = segment_path(dir, first);
            // Entries of a segment that starts before the expected seq were
            // already replayed (or superseded); sequence breaks are damage.
            let mut expect = first;
            let (good_len, total_len) = read_segment(&path, &mut |e: Entry| {
                if e.seq != expect {
                    return false;
                }
                expect += 1;
                recovery.entries += 1;
                replay(e);
                true
            })?;
            if good_len < total_len {
                tracing::warn!(
                    segment = %path.display(),
                    dropped_bytes = total_len - good_len,
                    "WAL segment ends in a torn or corrupt frame; dropping its tail"
                );
                let f = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(io_err(&path))?;
                f.set_len(good_len).map_err(io_err(&path))?;
                f.sync_all().map_err(io_err(&path))?;
                recovery.truncated_bytes += total_len - good_len;
                recovery.damaged_segments.push(path.clone());
            }
            next_seq = next_seq.max(expect);
            segments.push(Segment {
                first_seq: first,
                last_seq: expect - 1,
                path,
                bytes: good_len,
            });
        }
        // Always append to a fresh segment: never write after a repaired tail.
        let path = segment_path(dir, next_seq);
        let active = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        let existing = active.metadata().map_err(io_err(&path))?.len();
        if existing != 0 {
            // A leftover empty-named segment at next_seq that was not empty
            // would have advanced next_seq; anything here is stale.
            active.set_len(0).map_err(io_err(&path))?;
        }
        sync_dir(dir)?;
        segments.retain(|s| s.path != path);
        segments.push(Segment {
            first_seq: next_seq,
            last_seq: next_seq - 1,
            path,
            bytes: 0,
        });
        let wal = Wal {
            dir: dir.to_owned(),
            opts,
            segments,
            active,
            next_seq,
            buf: Vec::new(),
        };
        Ok((wal, recovery))
    }

    /// Writes entries (not yet durable: call [`Wal::sync`]); returns the
    /// seq of the first. They get consecutive seqs.
    pub fn append<'a>(
        &mut self,
        entries: impl IntoIterator<Item = (u8, &'a [u8])>,
    ) -> Result<u64, WalError> {
        let first = self.next_seq;
        self.buf.clear();
        for (kind, payload) in entries {
            let seq = self.next_seq;
            self.next_seq += 1;
            let len = u32::try_from(payload.len())
                .ok()
                .filter(|l| *l <= MAX_PAYLOAD)
                .expect("WAL entry over 1 GiB");
            let mut crc = crc32c::crc32c(&seq.to_le_bytes());
            crc = crc32c::crc32c_append(crc, &[kind]);
            crc = crc32c::crc32c_append(crc, payload);
            self.buf.extend_from_slice(&len.to_le_bytes());
            self.buf.extend_from_slice(&crc.to_le_bytes());
            self.buf.extend_from_slice(&seq.to_le_bytes());
            self.buf.push(kind);
            self.buf.extend_from_slice(payload);
        }
        let active = self.segments.last_mut().expect("active segment");
        self.active
            .write_all(&self.buf)
            .map_err(io_err(&active.path))?;
        active.bytes += self.buf.len() as u64;
        active.last_seq = self.next_seq - 1;
        Ok(first)
    }

    /// Makes everything appended durable, then rotates the segment if full.
    pub fn sync(&mut self) -> Result<(), WalError> {
        let path = &self.segments.last().expect("active segment").path;
        self.active.sync_data().map_err(io_err(path))?;
        if self
            .segments
            .last()
            .is_some_and(|s| s.bytes >= self.opts.segment_bytes)
        {
            self.rotate()?;
        }
        Ok(())
    }

    fn rotate(&mut self) -> Result<(), WalError> {
        let path = segment_path(&self.dir, self.next_seq);
        self.active = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        sync_dir(&self.dir)?;
        self.segments.push(Segment {
            first_seq: self.next_seq,
            last_seq: self.next_seq - 1,
            path,
            bytes: 0,
        });
        Ok(())
    }

    /// Deletes sealed segments whose entries are all `<= seq`: their data is
    /// durable elsewhere. The active segment is never deleted, so its name
    /// keeps the sequence going across restarts.
    pub fn remove_through(&mut self, seq: u64) -> Result<u64, WalError> {
        let sealed = self.segments.len() - 1;
        let n = self.segments[..sealed]
            .iter()
            .take_while(|s| s.last_seq <= seq)
            .count();
        let mut freed = 0;
        for s in self.segments.drain(..n) {
            fs::remove_file(&s.path).map_err(io_err(&s.path))?;
            freed += s.bytes;
        }
        if n > 0 {
            sync_dir(&self.dir)?;
        }
        Ok(freed)
    }

    /// Seals the active segment (if it holds anything) so that a following
    /// [`Wal::remove_through`] can delete it.
    pub fn seal(&mut self) -> Result<(), WalError> {
        if self.segments.last().is_some_and(|s| s.bytes > 0) {
            self.rotate()?;
        }
        Ok(())
    }

    pub fn disk_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum()
    }

    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    pub fn first_seq(&self) -> u64 {
        self.segments.first().map_or(self.next_seq, |s| s.first_seq)
    }
}

/// Reads entries `from..=through` of the WAL in `dir`, stopping early once
/// `max_bytes` of payload are read (always at least one entry), without
/// taking the writer's lock: a sink that keeps its backlog on disk (the
/// ClickHouse shipper) reads entries back long after they were applied.
/// Only entries already durable may be asked for; the segments holding
/// them must not be removed meanwhile (the caller decides removal).
pub fn read_entries(
    dir: &Path,
    from: u64,
    through: u64,
    max_bytes: usize,
) -> Result<Vec<Entry>, WalError> {
    let firsts = segment_firsts(dir)?;
    let start = firsts.partition_point(|f| *f <= from).saturating_sub(1);
    let mut out = Vec::new();
    let mut bytes = 0usize;
    for first in &firsts[start..] {
        if *first > through || (bytes >= max_bytes && !out.is_empty()) {
            break;
        }
        let path = segment_path(dir, *first);
        let mut f =
            io::BufReader::with_capacity(1 << 20, File::open(&path).map_err(io_err(&path))?);
        let mut header = [0u8; HEADER];
        loop {
            match f.read_exact(&mut header) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
                Err(e) => return Err(io_err(&path)(e)),
            }
            let len = u32::from_le_bytes(header[0..4].try_into().unwrap());
            let crc = u32::from_le_bytes(header[4..8].try_into().unwrap());
            let seq = u64::from_le_bytes(header[8..16].try_into().unwrap());
            if len > MAX_PAYLOAD || seq > through {
                break;
            }
            if seq < from {
                f.seek_relative(len as i64).map_err(io_err(&path))?;
                continue;
            }
            let mut payload = vec![0u8; len as usize];
            f.read_exact(&mut payload).map_err(io_err(&path))?;
            let actual = crc32c::crc32c_append(crc32c::crc32c(&header[8..17]), &payload);
            if actual != crc {
                return Err(io_err(&path)(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("entry {seq} fails its checksum"),
                )));
            }
            bytes += payload.len();
            out.push(Entry {
                seq,
                kind: header[16],
                payload,
            });
            if bytes >= max_bytes {
                return Ok(out);
            }
        }
    }
    Ok(out)
}

/// Reads frames until the first bad one; `accept` may refuse an entry (which
/// also ends the segment). Returns (length of the good prefix, file length).
fn read_segment(
    path: &Path,
    accept: &mut dyn FnMut(Entry) -> bool,
) -> Result<(u64, u64), WalError> {
    let mut data = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut data))
        .map_err(io_err(path))?;
    let mut pos = 0usize;
    while data.len() - pos >= HEADER {
        let h = &data[pos..pos + HEADER];
        let len = u32::from_le_bytes(h[0..4].try_into().unwrap());
        let crc = u32::from_le_bytes(h[4..8].try_into().unwrap());
        let seq = u64::from_le_bytes(h[8..16].try_into().unwrap());
        let kind = h[16];
        if len > MAX_PAYLOAD || data.len() - pos - HEADER < len as usize {
            break;
        }
        let payload = &data[pos + HEADER..pos + HEADER + len as usize];
        let mut actual = crc32c::crc32c(&h[8..17]);
        actual = crc32c::crc32c_append(actual, payload);
        if actual != crc
            || !accept(Entry {
                seq,
                kind,
                payload: payload.to_vec(),
            })
        {
            break;
        }
        pos += HEADER + len as usize;
    }
    Ok((pos as u64, data.len() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path) -> (Wal, Vec<Entry>, Recovery) {
        let mut got = Vec::new();
        let (wal, rec) =
            Wal::open(dir, WalOptions { segment_bytes: 200 }, 0, |e| got.push(e)).unwrap();
        (wal, got, rec)
    }

    #[test]
    fn entries_survive_reopen_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, got, _) = open(dir.path());
        assert!(got.is_empty());
        for i in 0..20u8 {
            wal.append([(i % 3, &[i; 40][..])]).unwrap();
            wal.sync().unwrap();
        }
        drop(wal);
        let (wal, got, rec) = open(dir.path());
        assert_eq!(got.len(), 20);
        assert_eq!(rec.truncated_bytes, 0);
        for (i, e) in got.iter().enumerate() {
            assert_eq!(e.seq, i as u64 + 1);
            assert_eq!(e.payload, vec![i as u8; 40]);
        }
        assert_eq!(wal.next_seq(), 21);
    }

    #[test]
    fn torn_and_corrupt_tails_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _, _) = open(dir.path());
        wal.append([(0, &b"one"[..]), (0, &b"two"[..]), (0, &b"three"[..])])
            .unwrap();
        wal.sync().unwrap();
        let path = wal.segments.last().unwrap().path.clone();
        drop(wal);
        // Flip a payload byte of the last frame, then append half a frame.
        let mut data = fs::read(&path).unwrap();
        let n = data.len();
        data[n - 1] ^= 0xff;
        data.extend_from_slice(&[9, 0, 0, 0, 1, 2]);
        fs::write(&path, &data).unwrap();
        let (mut wal, got, rec) = open(dir.path());
        assert_eq!(
            got.iter().map(|e| e.payload.clone()).collect::<Vec<_>>(),
            vec![b"one".to_vec(), b"two".to_vec()]
        );
        assert_eq!(rec.damaged_segments, vec![path]);
        // New writes continue after the last good seq and replay cleanly.
        assert_eq!(wal.append([(0, &b"four"[..])]).unwrap(), 3);
        wal.sync().unwrap();
        drop(wal);
        let (_, got, rec) = open(dir.path());
        assert_eq!(got.len(), 3);
        assert_eq!(got[2].seq, 3);
        assert_eq!(rec.truncated_bytes, 0);
    }

    #[test]
    fn remove_through_keeps_active_and_sequence() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _, _) = open(dir.path());
        for _ in 0..10 {
            wal.append([(0, &[0u8; 100][..])]).unwrap();
            wal.sync().unwrap();
        }
        wal.seal().unwrap();
        wal.remove_through(10).unwrap();
        assert_eq!(wal.disk_bytes(), 0);
        drop(wal);
        let (wal, got, _) = open(dir.path());
        assert!(got.is_empty());
        assert_eq!(wal.next_seq(), 11);
    }

    #[test]
    fn read_entries_finds_a_range_across_segments() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _, _) = open(dir.path());
        for i in 0..30u8 {
            wal.append([(1, &[i; 40][..])]).unwrap();
            wal.sync().unwrap();
        }
        assert!(wal.segments.len() > 3, "spans several segments");
        let got = read_entries(dir.path(), 7, 22, usize::MAX).unwrap();
        assert_eq!(
            got.iter().map(|e| e.seq).collect::<Vec<_>>(),
            (7..=22).collect::<Vec<_>>()
        );
        assert!(got.iter().all(|e| e.payload == vec![e.seq as u8 - 1; 40]));
        // A byte budget stops early, but never before the first entry.
        let got = read_entries(dir.path(), 3, 30, 100).unwrap();
        assert_eq!(got.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![3, 4, 5]);
        let got = read_entries(dir.path(), 3, 30, 1).unwrap();
        assert_eq!(got.len(), 1);
        // Entries already removed are simply not there.
        wal.remove_through(10).unwrap();
        let got = read_entries(dir.path(), 1, 30, usize::MAX).unwrap();
        assert!(got[0].seq > 1 && got.last().unwrap().seq == 30);
    }

    #[test]
    fn min_next_seq_is_honoured() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path(), WalOptions::default(), 500, |_| {}).unwrap();
        assert_eq!(wal.append([(0, &b"x"[..])]).unwrap(), 500);
    }
}

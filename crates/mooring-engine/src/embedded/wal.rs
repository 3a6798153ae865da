//! The write-ahead log in front of the redb file.
//!
//! A durable redb commit writes and syncs dozens of B-tree pages and its header; a batch's
//! changes are a few hundred bytes. So each batch is made durable as one record appended to a
//! log file and synced with one `fdatasync`, and redb commits without syncing. Every so often a
//! durable redb commit (a checkpoint) makes everything before it safe in the database file, and
//! the log space behind it is used again.
//!
//! The log is two segment files of fixed size, written full of zeros once when created: a
//! sync then flushes data only, never the file's size or block map. Records go one after
//! another from the segment's start: `[len u32][crc u32][lsn u64][payload]`, little-endian,
//! the checksum (CRC-32C) covering the lsn and the payload. Records carry consecutive log
//! sequence numbers (lsn); the database stores the lsn of the last batch it holds. When a
//! record does not fit in what is left of the current segment, that batch is committed to redb
//! durably instead (the checkpoint), and writing moves to the start of the other segment, all
//! of whose records the checkpoint covers.
//!
//! Recovery reads both segments. A segment's records end at the first one that is cut short,
//! fails its checksum or does not follow its predecessor's lsn (the rest of a segment used
//! again is older records). The records above the database's lsn must then run on from it
//! without a hole; they are replayed, and a hole means the log is damaged and the store refuses
//! to open rather than lose acknowledged writes silently.

use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
#[cfg(test)]
use std::path::PathBuf;

use mooring_core::store::StoreError;

/// The directory of the log inside the data directory.
pub const WAL_DIR: &str = "wal";

/// Segment files: two, used in turn.
const SEGMENTS: [&str; 2] = ["segment-0.log", "segment-1.log"];

/// Bytes before a record's payload.
const RECORD_HEADER: usize = 16;

/// Smallest segment worth having: a few records.
const MIN_SEGMENT_BYTES: u64 = 64 << 10;

/// How the log reaches the disk; tests put a failing one in place.
pub(crate) trait LogDisk: Send + Sync + Debug {
    fn write_at(&self, file: &File, offset: u64, data: &[u8]) -> io::Result<()> {
        file.write_all_at(data, offset)
    }

    fn sync(&self, file: &File) -> io::Result<()> {
        file.sync_data()
    }
}

/// The operating system's files, as they are.
#[derive(Debug)]
pub(crate) struct RealDisk;

impl LogDisk for RealDisk {}

/// A record found by recovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Recovered {
    pub(super) lsn: u64,
    pub(super) payload: Vec<u8>,
}

/// The log, open for appending.
#[derive(Debug)]
pub(super) struct Wal {
    segments: [File; 2],
    /// Index of the segment being written.
    current: usize,
    /// Where the next record goes in it.
    offset: u64,
    segment_bytes: u64,
    next_lsn: u64,
    disk: Box<dyn LogDisk>,
    /// Reused for each record, so appending allocates nothing once warm.
    buffer: Vec<u8>,
}

fn io_error(what: &str, path: &Path, error: io::Error) -> StoreError {
    StoreError::Io(format!("{what} {}: {error}", path.display()))
}

impl Wal {
    /// Opens the log in `dir`, creating its segments if missing, and returns it with every
    /// record it holds above `applied` (in lsn order, without holes). The log appends after the
    /// last of them; call [`Wal::restart`] once they are safe in the database.
    pub(super) fn open(
        dir: &Path,
        segment_bytes: u64,
        applied: u64,
        disk: Box<dyn LogDisk>,
    ) -> Result<(Self, Vec<Recovered>), StoreError> {
        let segment_bytes = segment_bytes.max(MIN_SEGMENT_BYTES);
        std::fs::create_dir_all(dir).map_err(|e| io_error("creating", dir, e))?;
        let mut found = Vec::new();
        let mut files = Vec::with_capacity(SEGMENTS.len());
        for name in SEGMENTS {
            let path = dir.join(name);
            let file = open_segment(&path, segment_bytes)?;
            found.extend(read_records(&file, &path, applied)?);
            files.push(file);
        }
        let recovered = above(found, applied, dir)?;
        let next_lsn = recovered.last().map_or(applied, |r| r.lsn) + 1;
        let [first, second]: [File; 2] = files
            .try_into()
            .map_err(|_| StoreError::Io("internal: segment count".into()))?;
        let wal = Self {
            segments: [first, second],
            current: 0,
            offset: 0,
            segment_bytes,
            next_lsn,
            disk,
            buffer: Vec::new(),
        };
        Ok((wal, recovered))
    }

    /// The lsn the next batch gets.
    pub(super) fn next_lsn(&self) -> u64 {
        self.next_lsn
    }

    /// Whether a record of `payload_len` bytes fits in what is left of the current segment.
    pub(super) fn fits(&self, payload_len: usize) -> bool {
        let need = (RECORD_HEADER + payload_len) as u64;
        self.offset.saturating_add(need) <= self.segment_bytes
    }

    /// Appends the record of the next lsn and syncs it. When this returns `Ok`, the record
    /// survives a crash. The caller checked [`Wal::fits`].
    pub(super) fn append(&mut self, payload: &[u8]) -> io::Result<u64> {
        let lsn = self.next_lsn;
        let len = u32::try_from(payload.len()).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidInput, "a batch of more than 4 GiB")
        })?;
        let mut crc = crc32c::crc32c(&lsn.to_le_bytes());
        crc = crc32c::crc32c_append(crc, payload);
        self.buffer.clear();
        self.buffer.extend_from_slice(&len.to_le_bytes());
        self.buffer.extend_from_slice(&crc.to_le_bytes());
        self.buffer.extend_from_slice(&lsn.to_le_bytes());
        self.buffer.extend_from_slice(payload);
        let file = &self.segments[self.current];
        self.disk.write_at(file, self.offset, &self.buffer)?;
        self.disk.sync(file)?;
        self.offset += self.buffer.len() as u64;
        self.next_lsn += 1;
        Ok(lsn)
    }

    /// Takes `lsn` for a batch committed to the database durably instead of to the log, and
    /// moves to the start of the other segment: the database now holds every record of both.
    pub(super) fn checkpointed(&mut self, lsn: u64) {
        self.next_lsn = lsn + 1;
        self.current = 1 - self.current;
        self.offset = 0;
    }

    /// Starts writing from the start of a segment again, once the database holds every record
    /// up to `applied` (after recovery).
    pub(super) fn restart(&mut self, applied: u64) {
        self.next_lsn = applied + 1;
        self.current = 0;
        self.offset = 0;
    }
}

/// Opens a segment, writing it full of zeros (and syncing it and its directory) if it is new
/// or shorter than `segment_bytes`.
fn open_segment(path: &Path, segment_bytes: u64) -> Result<File, StoreError> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| io_error("opening", path, e))?;
    let len = file
        .metadata()
        .map_err(|e| io_error("reading the size of", path, e))?
        .len();
    if len < segment_bytes {
        prewrite(&mut file, len, segment_bytes).map_err(|e| io_error("preparing", path, e))?;
        if let Some(dir) = path.parent() {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io_error("syncing", dir, e))?;
        }
    }
    Ok(file)
}

/// Fills `file` with zeros from `from` to `to` and syncs it, size included.
fn prewrite(file: &mut File, from: u64, to: u64) -> io::Result<()> {
    const CHUNK: usize = 1 << 20;
    let zeros = vec![0u8; CHUNK];
    let mut at = from;
    while at < to {
        let n = usize::try_from(to - at).map_or(CHUNK, |left| left.min(CHUNK));
        file.write_all_at(&zeros[..n], at)?;
        at += n as u64;
    }
    file.flush()?;
    file.sync_all()
}

/// The records at the start of a segment, in order, up to the first that is cut short,
/// damaged, or not the successor of the one before. A damaged record followed by a good
/// record above `applied` is not a torn tail but damage in the middle of the log: an error.
fn read_records(file: &File, path: &Path, applied: u64) -> Result<Vec<Recovered>, StoreError> {
    let mut bytes = Vec::new();
    let mut reader = file;
    reader
        .read_to_end(&mut bytes)
        .map_err(|e| io_error("reading", path, e))?;
    let (records, end) = parse_records(&bytes);
    if let Some(next) = end
        .and_then(|at| checked_record(&bytes, at))
        .map(|(next, _)| next)
    {
        let successor = records.last().map_or(next.lsn > applied, |last| {
            next.lsn == last.lsn + 2 && next.lsn > applied
        });
        if successor {
            return Err(StoreError::Corrupt(format!(
                "{} is damaged before batch {}: acknowledged writes would be lost; restore the \
                 data directory from a backup",
                path.display(),
                next.lsn
            )));
        }
    }
    Ok(records)
}

/// The header fields at `at`: payload length, checksum, lsn.
fn header_at(bytes: &[u8], at: usize) -> Option<(usize, u32, [u8; 8])> {
    let header = bytes.get(at..at.checked_add(RECORD_HEADER)?)?;
    let mut len = [0u8; 4];
    len.copy_from_slice(&header[0..4]);
    let mut crc = [0u8; 4];
    crc.copy_from_slice(&header[4..8]);
    let mut lsn = [0u8; 8];
    lsn.copy_from_slice(&header[8..16]);
    Some((
        u32::from_le_bytes(len) as usize,
        u32::from_le_bytes(crc),
        lsn,
    ))
}

/// A whole record with a good checksum at `at`, and where the next one starts.
fn checked_record(bytes: &[u8], at: usize) -> Option<(Recovered, usize)> {
    let (len, crc, lsn_bytes) = header_at(bytes, at)?;
    let start = at + RECORD_HEADER;
    let end = start.checked_add(len)?;
    let payload = bytes.get(start..end)?;
    let lsn = u64::from_le_bytes(lsn_bytes);
    let expected = crc32c::crc32c_append(crc32c::crc32c(&lsn_bytes), payload);
    (lsn != 0 && expected == crc).then(|| {
        (
            Recovered {
                lsn,
                payload: payload.to_vec(),
            },
            end,
        )
    })
}

/// The run of consecutive records from the start of `bytes`, and, if it ended at a record
/// whose header gives a length that fits, where the record after that one would start.
pub(super) fn parse_records(bytes: &[u8]) -> (Vec<Recovered>, Option<usize>) {
    let mut out: Vec<Recovered> = Vec::new();
    let mut at = 0usize;
    loop {
        match checked_record(bytes, at) {
            Some((record, end))
                if out
                    .last()
                    .is_none_or(|prev| prev.lsn.checked_add(1) == Some(record.lsn)) =>
            {
                out.push(record);
                at = end;
            }
            Some(_) => return (out, None),
            None => {
                let skip = header_at(bytes, at)
                    .filter(|(len, _, _)| *len > 0)
                    .and_then(|(len, _, _)| (at + RECORD_HEADER).checked_add(len))
                    .filter(|end| *end < bytes.len());
                return (out, skip);
            }
        }
    }
}

/// The records above `applied`, in lsn order; an error if they do not run on from it.
fn above(
    mut found: Vec<Recovered>,
    applied: u64,
    dir: &Path,
) -> Result<Vec<Recovered>, StoreError> {
    found.retain(|r| r.lsn > applied);
    found.sort_by_key(|r| r.lsn);
    for (expect, record) in (applied + 1..).zip(&found) {
        if record.lsn != expect {
            return Err(StoreError::Corrupt(format!(
                "the write-ahead log in {} jumps from batch {} to batch {}: records are missing; \
                 restore the data directory from a backup",
                dir.display(),
                expect - 1,
                record.lsn
            )));
        }
    }
    Ok(found)
}

/// Paths of the segment files, for tests that damage them.
#[cfg(test)]
pub(super) fn segment_paths(dir: &Path) -> Vec<PathBuf> {
    SEGMENTS.iter().map(|name| dir.join(name)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path, applied: u64) -> (Wal, Vec<Recovered>) {
        Wal::open(dir, MIN_SEGMENT_BYTES, applied, Box::new(RealDisk)).expect("opens")
    }

    fn lsns(records: &[Recovered]) -> Vec<u64> {
        records.iter().map(|r| r.lsn).collect()
    }

    #[test]
    fn records_come_back_after_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut wal, found) = open(dir.path(), 0);
        assert!(found.is_empty());
        for i in 0..5u8 {
            assert_eq!(wal.append(&[i; 10]).expect("append"), u64::from(i) + 1);
        }
        drop(wal);
        let (wal, found) = open(dir.path(), 2);
        assert_eq!(lsns(&found), [3, 4, 5]);
        assert_eq!(found[0].payload, [2u8; 10]);
        assert_eq!(wal.next_lsn(), 6);
    }

    #[test]
    fn a_cut_or_damaged_tail_ends_the_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut wal, _) = open(dir.path(), 0);
        for i in 0..3u8 {
            wal.append(&[i; 100]).expect("append");
        }
        drop(wal);
        let path = &segment_paths(dir.path())[0];
        let file = OpenOptions::new().write(true).open(path).expect("file");
        // Flip a byte of the third record's payload: it fails its checksum.
        let third = 2 * (RECORD_HEADER as u64 + 100) + RECORD_HEADER as u64 + 5;
        file.write_all_at(&[0xff], third).expect("damage");
        let (wal, found) = open(dir.path(), 0);
        assert_eq!(lsns(&found), [1, 2]);
        assert_eq!(wal.next_lsn(), 3);
    }

    #[test]
    fn a_reused_segment_ends_where_the_new_records_end() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut wal, _) = open(dir.path(), 0);
        for i in 0..4u8 {
            wal.append(&[i; 50]).expect("append");
        }
        // Batch 5 goes to the database durably; the log moves on to segment 1, then back to
        // segment 0, whose old records 1..4 stay behind the new ones.
        wal.checkpointed(5);
        wal.append(&[6; 50]).expect("append");
        wal.checkpointed(7);
        wal.append(&[8; 50]).expect("append");
        drop(wal);
        let (_, found) = open(dir.path(), 7);
        assert_eq!(lsns(&found), [8]);
    }

    #[test]
    fn damage_in_the_middle_of_the_log_refuses_to_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut wal, _) = open(dir.path(), 0);
        for i in 0..3u8 {
            wal.append(&[i; 10]).expect("append");
        }
        drop(wal);
        // Damage the first record's payload: a good record follows it, so this is not a torn
        // tail but lost acknowledged writes.
        let path = &segment_paths(dir.path())[0];
        let file = OpenOptions::new().write(true).open(path).expect("file");
        file.write_all_at(&[0xee], RECORD_HEADER as u64 + 1)
            .expect("damage");
        let refused = Wal::open(dir.path(), MIN_SEGMENT_BYTES, 0, Box::new(RealDisk));
        assert!(
            matches!(&refused, Err(StoreError::Corrupt(why)) if why.contains("before batch 2")),
            "{refused:?}"
        );
        // Once the database holds batch 2, the damage is behind it and harmless.
        let (_, found) = open(dir.path(), 2);
        assert!(found.is_empty(), "the segment ends at the damaged record");
    }

    #[test]
    fn records_that_skip_a_batch_refuse_to_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let found = vec![Recovered {
            lsn: 3,
            payload: vec![],
        }];
        let refused = above(found, 1, dir.path());
        assert!(
            matches!(&refused, Err(StoreError::Corrupt(why)) if why.contains("jumps from batch 1 to batch 3")),
            "{refused:?}"
        );
    }

    #[test]
    fn fits_tells_when_to_checkpoint() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut wal, _) = open(dir.path(), 0);
        let big = (MIN_SEGMENT_BYTES as usize) / 2;
        assert!(wal.fits(big));
        wal.append(&vec![1; big]).expect("append");
        assert!(!wal.fits(big));
        assert!(!Wal::fits(&wal, MIN_SEGMENT_BYTES as usize));
        wal.checkpointed(2);
        assert!(wal.fits(big));
        assert_eq!(wal.next_lsn(), 3);
    }
}

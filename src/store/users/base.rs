//! The user index's *base image*: the users table packed as the index packs it,
//! written beside the database by the imager thread (`store::imager`) while the
//! server runs, so that a start after a crash loads it and replays the events
//! after it instead of scanning the users table.
//!
//! **What it holds.** The thread reads, in one read transaction, the database's
//! writer id, its history epoch (`meta`, bumped by every rewrite of history: a
//! discarded tail) and its last event seq `S0`; then the users table in id order,
//! in chunks, each its own short read transaction (a long one would keep the
//! checkpointer from copying the WAL). Later chunks see later commits, so the
//! image is not the table at `S0`, but for every name:
//!
//! - a name no event after `S0` touches is the same in every state from `S0` on
//!   (each user change writes its event in the same transaction), so the image
//!   holds it as it was at `S0` and as it is now;
//! - a name events after `S0` touch may be held as of any state from `S0` on (or
//!   twice, under an old id read before its unregistration and a new one read
//!   after its registration again, or not at all); replaying every event after
//!   `S0` in seq order ends it as its last event says: a registration puts the
//!   user (id, creation time, fields) in place of whatever the name held, an
//!   unregistration removes it, an update gives the held user the event's fields
//!   (an update event carries the whole field set after it). An update finds no
//!   user only when the scan read the row after a later unregistration, which
//!   the replay then applies anyway.
//!
//! So the image and the events after `S0` rebuild exactly the index of the last
//! event, as long as every one of them is still in the log (retention trims the
//! oldest) and no history was rewritten since (the epoch, which the thread reads
//! again after the scan and which the start compares).
//!
//! Layout, integers little-endian; records in the order of the index's tables
//! and, within each, of its buckets (see `PARTS`):
//! ```text
//! MAGIC  key0 u64  key1 u64  check u64 (the hash of CHECK_NAME)
//! seq i64  epoch i64  users u64  writer (u32 length, bytes)
//! users × (record length u32, hash u64, record)
//! u32::MAX  END
//! ```

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use rusqlite::Connection;

use super::codec::{self, read_u64};
use super::{HEAD, MAX_REC_BYTES, NameHasher, Rec, SHARDS, Slot, Users, shard_of, slot_hash};

const MAGIC: &[u8; 16] = b"userbus-ubase-1\n";
const END: &[u8; 16] = b"userbus-ubase-1.";
/// A name hashed with the image's key: a different hash at reading means the
/// hash function changed since it was written.
const CHECK_NAME: &str = "userbus base image check";
/// The temporary files records are sorted into by their table while written;
/// each is then read back whole (about a 64th of the image: 27 MB at 22M users),
/// sorted by table and bucket, and appended to the image. Reading the image
/// then fills each table from start to end, as reading a clean stop's image
/// does, rather than all of them at random (six times slower at 20M users).
const PARTS: usize = 64;
/// The buffer of each of those files.
const PART_BUFFER_BYTES: usize = 64 << 10;
/// The record length that ends the records.
const LAST: u32 = u32::MAX;
/// How errors name the file.
const FILE: &str = "base image";
const BUFFER_BYTES: usize = 1 << 20;
/// A bound for reading the writer id (the comparison with the database checks it).
const MAX_WRITER_BYTES: usize = 256;

/// What the database says about its history; a base image serves only a
/// database with the same writer id and epoch, at or after its seq.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Basis {
    /// The database's writer id (`meta`).
    pub writer: String,
    /// The database's history epoch (`meta`; 0 before any rewrite).
    pub epoch: i64,
    /// The highest event seq ever assigned.
    pub seq: i64,
}

/// A base image's header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The database's writer, epoch and last seq when the image was begun.
    pub basis: Basis,
    /// Records that follow.
    pub users: u64,
    key: [u64; 2],
}

/// The base image's file for the database at `db`: `<db>-users-base`.
pub fn path_for(db: &Path) -> PathBuf {
    codec::suffixed(db, "-users-base")
}

/// An image being written. Records go first to `PARTS` temporary files by
/// their table (`shard_of`), then one after the other into the image's
/// temporary file, which takes the image's name once synced. Dropped
/// unfinished, it removes its temporary files.
#[derive(Debug)]
pub struct Writer {
    parts: Vec<BufWriter<File>>,
    hasher: NameHasher,
    basis: Basis,
    users: u64,
    tmp: PathBuf,
    path: PathBuf,
}

impl Writer {
    /// Begins the image at `path` of a database at `basis`, under a fresh hash key.
    pub fn create(path: &Path, basis: &Basis) -> io::Result<Writer> {
        let mut writer = Writer {
            parts: Vec::with_capacity(PARTS),
            hasher: NameHasher::random(),
            basis: basis.clone(),
            users: 0,
            tmp: super::image::tmp_path_for(path),
            path: path.to_path_buf(),
        };
        for part in 0..PARTS {
            // Read back by `finish`.
            let file = fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(writer.part_path(part))?;
            writer
                .parts
                .push(BufWriter::with_capacity(PART_BUFFER_BYTES, file));
        }
        Ok(writer)
    }

    fn part_path(&self, part: usize) -> PathBuf {
        part_path(&self.tmp, part)
    }

    /// Adds a user row: its fields as the users table stores them (a JSON
    /// object of strings). Fields that are not such an object are an error.
    pub fn push(&mut self, id: i64, name: &str, fields: &str, created_at: i64) -> io::Result<()> {
        let rec = match serde_json::from_str::<BTreeMap<&str, &str>>(fields) {
            Ok(map) => Rec::new(id, created_at, name, map.iter().map(|(k, v)| (*k, *v))),
            // Escapes in the JSON need owned strings.
            Err(_) => {
                let map: BTreeMap<String, String> = serde_json::from_str(fields)
                    .map_err(|e| corrupt_owned(format!("user {id} has unreadable fields: {e}")))?;
                let pairs = map.iter().map(|(k, v)| (k.as_str(), v.as_str()));
                Rec::new(id, created_at, name, pairs)
            }
        };
        if rec.0.len() > MAX_REC_BYTES {
            return Err(corrupt_owned(format!(
                "user {id} is larger than a user can be"
            )));
        }
        let hash = self.hasher.hash(name);
        let out = self
            .parts
            .get_mut(shard_of(hash) / (SHARDS / PARTS))
            .ok_or_else(|| corrupt("writer state"))?;
        write_len(out, rec.0.len())?;
        out.write_all(&hash.to_le_bytes())?;
        out.write_all(&rec.0)?;
        self.users += 1;
        Ok(())
    }

    /// Writes the header and the parts in table order into one file, syncs
    /// it and gives it the image's name; the number of users written, or
    /// `None` when `stopped` turned true between two parts (nothing written).
    pub fn finish(mut self, stopped: impl Fn() -> bool) -> io::Result<Option<u64>> {
        let mut out = BufWriter::with_capacity(BUFFER_BYTES, File::create(&self.tmp)?);
        out.write_all(MAGIC)?;
        out.write_all(&self.hasher.key[0].to_le_bytes())?;
        out.write_all(&self.hasher.key[1].to_le_bytes())?;
        out.write_all(&self.hasher.hash(CHECK_NAME).to_le_bytes())?;
        out.write_all(&self.basis.seq.to_le_bytes())?;
        out.write_all(&self.basis.epoch.to_le_bytes())?;
        out.write_all(&self.users.to_le_bytes())?;
        write_len(&mut out, self.basis.writer.len())?;
        out.write_all(self.basis.writer.as_bytes())?;
        let mask = bucket_mask(self.users);
        let parts = std::mem::take(&mut self.parts);
        let mut bytes = Vec::new();
        for (index, part) in parts.into_iter().enumerate() {
            if stopped() {
                return Ok(None);
            }
            let mut part = part.into_inner().map_err(io::IntoInnerError::into_error)?;
            part.seek(SeekFrom::Start(0))?;
            bytes.clear();
            part.read_to_end(&mut bytes)?;
            drop(part);
            for range in table_order(&bytes, mask)? {
                out.write_all(bytes.get(range).ok_or_else(|| corrupt("part"))?)?;
            }
            fs::remove_file(self.part_path(index))?;
        }
        out.write_all(&LAST.to_le_bytes())?;
        out.write_all(END)?;
        let file = out.into_inner().map_err(io::IntoInnerError::into_error)?;
        file.sync_all()?;
        fs::rename(&self.tmp, &self.path)?;
        Ok(Some(self.users))
    }
}

/// The bucket mask of the tables an index of `users` users gets (as
/// `Users::with_capacity` sizes them, in hashbrown's buckets: a power of two at
/// least 8/7 of the capacity). Near enough serves as well: a mask one bit longer
/// or shorter still fills a table in two sequential sweeps.
fn bucket_mask(users: u64) -> u64 {
    let per_shard = super::per_shard(usize::try_from(users).unwrap_or(usize::MAX)) as u64;
    let buckets = if per_shard < 8 {
        8
    } else {
        (per_shard.saturating_mul(8) / 7).next_power_of_two()
    };
    buckets - 1
}

/// The byte ranges of the records in `part`, in the order the reader's tables
/// hold them: by table, then by bucket (`hash & mask`).
fn table_order(part: &[u8], mask: u64) -> io::Result<Vec<std::ops::Range<usize>>> {
    let mut keyed = Vec::new();
    let mut at = 0;
    while at < part.len() {
        let head = part
            .get(at..at + 12)
            .ok_or_else(|| corrupt("part record"))?;
        let (len, hash) = head.split_at(4);
        let len = u32::from_le_bytes(len.try_into().map_err(|_| corrupt("part record"))?);
        let hash = u64::from_le_bytes(hash.try_into().map_err(|_| corrupt("part record"))?);
        let end = at + 12 + len as usize;
        keyed.push(((shard_of(hash), hash & mask), at..end));
        at = end;
    }
    keyed.sort_unstable_by_key(|(key, _)| *key);
    Ok(keyed.into_iter().map(|(_, range)| range).collect())
}

impl Drop for Writer {
    fn drop(&mut self) {
        // After `finish` only the renamed image is left; before, every
        // temporary file goes.
        self.parts.clear();
        for part in 0..PARTS {
            let _ = fs::remove_file(self.part_path(part));
        }
        let _ = fs::remove_file(&self.tmp);
    }
}

/// Removes the temporary files a writer killed mid-way (a crash) left beside
/// the image at `path`.
pub fn remove_temporary(path: &Path) {
    let tmp = super::image::tmp_path_for(path);
    for part in 0..PARTS {
        let _ = fs::remove_file(part_path(&tmp, part));
    }
    let _ = fs::remove_file(tmp);
}

/// The temporary file of part `part` beside the temporary file `tmp`.
fn part_path(tmp: &Path, part: usize) -> PathBuf {
    codec::suffixed(tmp, &format!(".{part}"))
}

/// An opened base image, its header read, positioned at its records.
#[derive(Debug)]
pub struct Opened {
    /// The header.
    pub header: Header,
    input: BufReader<File>,
}

/// Opens the base image at `path`: `Ok(None)` when there is none or its hash
/// function is not this build's; `Err` when its header is torn or corrupt.
pub fn open(path: &Path) -> io::Result<Option<Opened>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut input = BufReader::with_capacity(BUFFER_BYTES, file);
    let mut magic = [0u8; 16];
    input.read_exact(&mut magic)?;
    if &magic != MAGIC {
        return Err(corrupt("magic (not a base image of this version)"));
    }
    let key = [read_u64(&mut input)?, read_u64(&mut input)?];
    if read_u64(&mut input)? != NameHasher::new(key).hash(CHECK_NAME) {
        log::info!("user index: the name hash changed since the base image was written");
        return Ok(None);
    }
    let seq = read_u64(&mut input)? as i64;
    let epoch = read_u64(&mut input)? as i64;
    let users = read_u64(&mut input)?;
    let writer_len = read_len(&mut input, MAX_WRITER_BYTES)?;
    let mut writer = vec![0u8; writer_len];
    input.read_exact(&mut writer)?;
    let writer = String::from_utf8(writer).map_err(|_| corrupt("writer id"))?;
    Ok(Some(Opened {
        header: Header {
            basis: Basis { writer, epoch, seq },
            users,
            key,
        },
        input,
    }))
}

impl Opened {
    /// Reads the records into an index whose next id is `next_id` (the
    /// database's), its tables sized for `capacity` users. A name held twice
    /// keeps its first record: such a name is one events after the image's seq
    /// touch (see the module), and the replay puts it right.
    pub fn read(mut self, next_id: i64, capacity: usize) -> io::Result<Users> {
        let total = self.header.users;
        // Ids are unique and below the next id: a larger count is corrupt.
        if total >= next_id.max(1) as u64 {
            return Err(corrupt("users count"));
        }
        let mut users = Users {
            hasher: NameHasher::new(self.header.key),
            ..Users::with_capacity(next_id, capacity)
        };
        let input = &mut self.input;
        let mut seen = 0u64;
        loop {
            let mut len = [0u8; 4];
            input.read_exact(&mut len)?;
            let len = u32::from_le_bytes(len);
            if len == LAST {
                break;
            }
            let len = len as usize;
            if !(HEAD + 4..=MAX_REC_BYTES).contains(&len) {
                return Err(corrupt("record length"));
            }
            seen += 1;
            if seen > total {
                return Err(corrupt("users count (more records)"));
            }
            let hash = read_u64(input)?;
            let mut rec = vec![0u8; len];
            input.read_exact(&mut rec)?;
            let rec = Rec(rec.into_boxed_slice());
            if !well_formed(&rec) || rec.id() <= 0 || rec.id() >= next_id {
                return Err(corrupt("record"));
            }
            let shard = &mut users.shards[shard_of(hash)];
            let (name, _) = rec.split_bytes();
            if shard
                .find(hash, |s| s.rec.split_bytes().0 == name)
                .is_none()
            {
                shard.insert_unique(hash, Slot { hash, rec }, slot_hash);
                users.count += 1;
            }
        }
        let mut end = [0u8; 16];
        input.read_exact(&mut end)?;
        if seen != total || &end != END || input.read(&mut [0u8; 1])? != 0 {
            return Err(corrupt("end"));
        }
        Ok(users)
    }
}

/// True when `rec` is a name and field pairs, each a length and that many
/// bytes, with nothing left over. (Bytes that are not UTF-8 cannot panic the
/// index: it reads strings with `from_utf8`.)
fn well_formed(rec: &Rec) -> bool {
    let mut it = super::FieldIter {
        rest: rec.0.get(HEAD..).unwrap_or_default(),
    };
    if it.next_bytes().is_none() {
        return false;
    }
    while !it.rest.is_empty() {
        if it.next_bytes().is_none() || it.next_bytes().is_none() {
            return false;
        }
    }
    true
}

/// Replays into `users` the events after `after` up to `last`, in seq order (see
/// the module); the number replayed. A missing seq or an unreadable event is an
/// error.
pub fn replay(
    conn: &Connection,
    users: &mut Users,
    after: i64,
    last: i64,
) -> rusqlite::Result<u64> {
    use crate::store::event_log::{REGISTERED, UNREGISTERED, UPDATED};
    let mut stmt = conn.prepare(
        "SELECT seq, kind, user_id, name, fields, at FROM events \
         WHERE seq > ?1 AND seq <= ?2 ORDER BY seq",
    )?;
    let mut rows = stmt.query(rusqlite::params![after, last])?;
    let mut expect = after + 1;
    let misfit = |why: String| {
        rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
            Some(why),
        )
    };
    while let Some(row) = rows.next()? {
        let seq: i64 = row.get(0)?;
        if seq != expect {
            return Err(misfit(format!("event {expect} is missing (found {seq})")));
        }
        expect += 1;
        let kind = row.get_ref(1)?.as_str()?;
        let id: i64 = row.get(2)?;
        let name = row.get_ref(3)?.as_str()?;
        let fields: BTreeMap<String, String> = serde_json::from_str(row.get_ref(4)?.as_str()?)
            .map_err(|e| misfit(format!("event {seq} has unreadable fields: {e}")))?;
        let at: i64 = row.get(5)?;
        let pairs = fields.iter().map(|(k, v)| (k.as_str(), v.as_str()));
        let hash = users.hasher.hash(name);
        let shard = &mut users.shards[shard_of(hash)];
        if kind == REGISTERED {
            let rec = Rec::new(id, at, name, pairs);
            let slot = Slot { hash, rec };
            if shard
                .replace(hash, slot, |s, _| s.rec.has_name(name), slot_hash)
                .is_none()
            {
                users.count += 1;
            }
            users.next_id = users.next_id.max(id + 1);
        } else if kind == UNREGISTERED {
            if shard.remove(hash, |s| s.rec.has_name(name)).is_some() {
                users.count -= 1;
            }
        } else if kind == UPDATED {
            if let Some(held) = shard.find_mut(hash, |s| s.rec.has_name(name)) {
                let created_at = held.rec.created_at();
                held.rec = Rec::new(held.rec.id(), created_at, name, pairs);
            }
        } else {
            return Err(misfit(format!("event {seq} has the unknown kind '{kind}'")));
        }
    }
    if expect != last + 1 {
        return Err(misfit(format!("event {expect} is missing")));
    }
    users.committed_next_id = users.next_id;
    Ok((last - after) as u64)
}

fn corrupt(what: &str) -> io::Error {
    codec::corrupt(FILE, what)
}

fn corrupt_owned(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// Writes a record's or the writer id's length; `LAST` is the end marker, so
/// no length may be it.
fn write_len(out: &mut impl Write, len: usize) -> io::Result<()> {
    codec::write_len(out, len, LAST - 1, FILE)
}

fn read_len(input: &mut impl Read, max: usize) -> io::Result<usize> {
    codec::read_len(input, max, FILE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basis(seq: i64) -> Basis {
        Basis {
            writer: "w1".to_string(),
            epoch: 2,
            seq,
        }
    }

    /// `n0..n{count}` with ids 1.., every third with fields (one needing escapes
    /// in JSON), written as rows of the users table.
    fn write_sample(path: &Path, count: i64) -> u64 {
        let mut w = Writer::create(path, &basis(9)).expect("create");
        for i in 0..count {
            let fields = if i % 3 == 0 {
                format!(r#"{{"email":"{i}@example.com","q":"a\"b é"}}"#)
            } else {
                "{}".to_string()
            };
            w.push(i + 1, &format!("n{i}"), &fields, i * 10)
                .expect("push");
        }
        w.finish(|| false).expect("finish").expect("not stopped")
    }

    #[test]
    fn a_base_image_reads_back_every_row_and_stays() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = path_for(&dir.path().join("db"));
        assert_eq!(write_sample(&path, 3_000), 3_000);
        assert!(!super::super::image::tmp_path_for(&path).exists());
        let opened = open(&path).expect("open").expect("there");
        assert_eq!(opened.header.basis, basis(9));
        assert_eq!(opened.header.users, 3_000);
        let users = opened.read(3_001, 3_000).expect("read");
        assert!(path.exists(), "a base image serves more than one start");
        assert_eq!(users.len(), 3_000);
        let n3 = users.get("n3").expect("n3");
        assert_eq!((n3.id, n3.created_at), (4, 30));
        assert_eq!(
            n3.fields.to_map().get("q").map(String::as_str),
            Some("a\"b é")
        );
        assert_eq!(users.get("n4").map(|u| u.fields.len()), Some(0));
        let want: Vec<_> = (0..3_001)
            .map(|i| users.get(&format!("n{i}")).map(|u| u.id))
            .collect();
        let ids: Vec<_> = (0..3_001).map(|i| (i < 3_000).then_some(i + 1)).collect();
        assert_eq!(want, ids);
        // The next id is the database's, whatever the rows.
        let mut users = open(&path)
            .expect("open")
            .expect("there")
            .read(5_000, 10)
            .expect("read");
        assert_eq!(users.add("fresh", &BTreeMap::new(), 0), Some(5_000));
        assert_eq!(users.add("n1", &BTreeMap::new(), 0), None);
    }

    #[test]
    fn a_torn_or_altered_base_image_is_an_error_never_a_panic() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = path_for(&dir.path().join("db"));
        write_sample(&path, 500);
        let bytes = fs::read(&path).expect("image");
        let read = |b: &[u8]| -> io::Result<Option<Users>> {
            fs::write(&path, b).expect("write");
            open(&path)?.map(|o| o.read(501, 500)).transpose()
        };
        for cut in [
            0,
            10,
            60,
            bytes.len() / 3,
            bytes.len() - 17,
            bytes.len() - 1,
        ] {
            assert!(read(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(read(&longer).is_err(), "trailing bytes");
        // Ids at or above the database's next id: not this database.
        fs::write(&path, &bytes).expect("write");
        let o = open(&path).expect("open").expect("there");
        assert!(o.read(400, 500).is_err());
        for at in (0..bytes.len()).step_by(7) {
            let mut b = bytes.clone();
            b[at] ^= 0x41;
            let _ = read(&b);
        }
    }

    #[test]
    fn a_base_image_of_another_hash_function_is_ignored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = path_for(&dir.path().join("db"));
        write_sample(&path, 10);
        let mut bytes = fs::read(&path).expect("image");
        // The check value follows the magic and the key.
        bytes[32] ^= 1;
        fs::write(&path, &bytes).expect("write");
        assert!(open(&path).expect("no error").is_none());
    }

    #[test]
    fn an_unfinished_base_image_leaves_no_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = path_for(&dir.path().join("db"));
        let mut w = Writer::create(&path, &basis(1)).expect("create");
        w.push(1, "a", "{}", 0).expect("push");
        assert!(w.push(2, "b", "not json", 0).is_err());
        drop(w);
        assert!(!path.exists());
        assert!(!super::super::image::tmp_path_for(&path).exists());
        assert!(open(&path).expect("none").is_none());
    }

    #[test]
    fn a_crashed_writer_leaves_files_the_next_start_removes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = path_for(&dir.path().join("db"));
        let mut w = Writer::create(&path, &basis(1)).expect("create");
        w.push(1, "a", "{}", 0).expect("push");
        // A crash runs no destructor.
        std::mem::forget(w);
        let left = || fs::read_dir(dir.path()).expect("dir").count();
        assert_eq!(left(), PARTS);
        remove_temporary(&path);
        assert_eq!(left(), 0);
    }

    #[test]
    fn records_come_out_by_table_and_bucket() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = path_for(&dir.path().join("db"));
        write_sample(&path, 5_000);
        let mut o = open(&path).expect("open").expect("there");
        let mask = bucket_mask(5_000);
        let mut keys = Vec::new();
        loop {
            let mut len = [0u8; 4];
            o.input.read_exact(&mut len).expect("len");
            if u32::from_le_bytes(len) == LAST {
                break;
            }
            let hash = read_u64(&mut o.input).expect("hash");
            let mut rec = vec![0u8; u32::from_le_bytes(len) as usize];
            o.input.read_exact(&mut rec).expect("rec");
            keys.push((shard_of(hash), hash & mask));
        }
        assert_eq!(keys.len(), 5_000);
        assert!(keys.is_sorted());
    }

    #[test]
    fn a_name_read_twice_keeps_one_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = path_for(&dir.path().join("db"));
        let mut w = Writer::create(&path, &basis(1)).expect("create");
        w.push(1, "a", "{}", 0).expect("push");
        w.push(2, "b", "{}", 0).expect("push");
        w.push(3, "a", r#"{"k":"v"}"#, 0).expect("push");
        w.finish(|| false).expect("finish").expect("not stopped");
        let users = open(&path)
            .expect("open")
            .expect("there")
            .read(4, 3)
            .expect("read");
        assert_eq!(users.len(), 2);
        assert_eq!(users.get("a").map(|u| u.id), Some(1));
    }
}

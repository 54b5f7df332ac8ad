//! The user index's image: its tables written to a file beside the database at a
//! clean stop, and read back at the next start instead of scanning the users
//! table.
//!
//! Reading it costs a sequential read and one allocation per user: the records
//! come in the order of their tables' buckets and go into tables of the same size,
//! so the inserts walk each table from start to end, and no name is hashed again
//! (the image carries the hash key). Scanning the users table instead costs a
//! SQLite row, a JSON parse, a hash and an insert at a random place per user.
//!
//! An image serves only the database state it was written from: it names the
//! database's writer id, last event seq and next user id, which every user change
//! moves (each writes an event), and a start whose database differs ignores it. It
//! is removed when read, so it serves one start at most; after a crash there is
//! none and the start scans.
//!
//! Layout, integers little-endian:
//! ```text
//! MAGIC  key0 u64  key1 u64  check u64 (the hash of CHECK_NAME)
//! last_seq i64  next_id i64  writer (u32 length, bytes)  users u64  shards u32
//! per shard: capacity u64  len u64  len × (hash u64, record length u32, record)
//! END
//! ```

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use hashbrown::HashTable;

use super::codec::{self, read_u64};
use super::{MAX_REC_BYTES, NameHasher, Rec, SHARDS, Shard, Slot, Users, shard_of, slot_hash};

const MAGIC: &[u8; 16] = b"userbus-users-1\n";
const END: &[u8; 16] = b"userbus-users-1.";
/// A name hashed with the image's key: a different hash at reading means the
/// hash function changed (a new Rust release may change `DefaultHasher`).
const CHECK_NAME: &str = "userbus image check";
/// How errors name the file.
const FILE: &str = "user index image";
const BUFFER_BYTES: usize = 1 << 20;
/// A bound for reading the writer id (the stamp's comparison checks it).
const MAX_WRITER_BYTES: usize = 256;

/// What the database says about itself; an image serves only the same values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    /// The database's writer id (`meta`).
    pub writer: String,
    /// The highest event seq ever assigned.
    pub last_seq: i64,
    /// The id the next user gets.
    pub next_id: i64,
}

/// The image's file for the database at `db`: `<db>-users`.
pub fn path_for(db: &Path) -> PathBuf {
    codec::suffixed(db, "-users")
}

/// The temporary file `write` fills before renaming it to `path`.
pub fn tmp_path_for(path: &Path) -> PathBuf {
    codec::suffixed(path, ".tmp")
}

/// Writes `users` (committed: no tick open) with `stamp` to `path`, through a
/// temporary file synced before it takes the name, so a crash while writing
/// leaves no image rather than a torn one.
pub fn write(users: &Users, stamp: &Stamp, path: &Path) -> io::Result<()> {
    let tmp = tmp_path_for(path);
    let written = write_to(users, stamp, &tmp).and_then(|()| fs::rename(&tmp, path));
    if written.is_err() {
        // A full disk must not keep a partial copy.
        let _ = fs::remove_file(&tmp);
    }
    written
}

fn write_to(users: &Users, stamp: &Stamp, tmp: &Path) -> io::Result<()> {
    let file = File::create(tmp)?;
    let mut out = BufWriter::with_capacity(BUFFER_BYTES, file);
    out.write_all(MAGIC)?;
    out.write_all(&users.hasher.key[0].to_le_bytes())?;
    out.write_all(&users.hasher.key[1].to_le_bytes())?;
    out.write_all(&users.hasher.hash(CHECK_NAME).to_le_bytes())?;
    out.write_all(&stamp.last_seq.to_le_bytes())?;
    out.write_all(&stamp.next_id.to_le_bytes())?;
    write_len(&mut out, stamp.writer.len())?;
    out.write_all(stamp.writer.as_bytes())?;
    out.write_all(&(users.len() as u64).to_le_bytes())?;
    write_len(&mut out, SHARDS)?;
    for shard in &users.shards {
        out.write_all(&(shard.capacity() as u64).to_le_bytes())?;
        out.write_all(&(shard.len() as u64).to_le_bytes())?;
        // A table iterates in bucket order: the reader inserts in that order.
        // (Slots a growth has not moved yet come last, in their old table's order.)
        for slot in shard.iter() {
            out.write_all(&slot.hash.to_le_bytes())?;
            write_len(&mut out, slot.rec.0.len())?;
            out.write_all(&slot.rec.0)?;
        }
    }
    out.write_all(END)?;
    let file = out.into_inner().map_err(io::IntoInnerError::into_error)?;
    file.sync_all()
}

/// Reads the image at `path` and removes it. `Ok(None)` when there is none or it
/// was written from another database state than `stamp`; `Err` when it is torn
/// or corrupt.
pub fn read(path: &Path, stamp: &Stamp) -> io::Result<Option<Users>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    // Open files stay readable once unlinked.
    fs::remove_file(path)?;
    let mut input = BufReader::with_capacity(BUFFER_BYTES, file);
    let mut magic = [0u8; 16];
    input.read_exact(&mut magic)?;
    if &magic != MAGIC {
        return Err(corrupt("not a user index image of this version"));
    }
    let hasher = NameHasher::new([read_u64(&mut input)?, read_u64(&mut input)?]);
    if read_u64(&mut input)? != hasher.hash(CHECK_NAME) {
        log::info!("user index image: the name hash changed since it was written");
        return Ok(None);
    }
    let last_seq = read_u64(&mut input)? as i64;
    let next_id = read_u64(&mut input)? as i64;
    let writer_len = read_len(&mut input, MAX_WRITER_BYTES)?;
    let mut writer = vec![0u8; writer_len];
    input.read_exact(&mut writer)?;
    let found = Stamp {
        writer: String::from_utf8(writer).map_err(|_| corrupt("writer id"))?,
        last_seq,
        next_id,
    };
    if &found != stamp {
        log::info!(
            "user index image: written at {found:?}, the database is at {stamp:?}; not used"
        );
        return Ok(None);
    }
    let total = read_u64(&mut input)?;
    // Ids are unique and below the next id: a larger count is corrupt.
    if total >= next_id.max(1) as u64 || read_len(&mut input, SHARDS)? != SHARDS {
        return Err(corrupt("counts"));
    }
    let mut users = Users {
        hasher,
        shards: Vec::with_capacity(SHARDS),
        ..Users::new(next_id)
    };
    let mut seen = 0u64;
    for index in 0..SHARDS {
        let capacity = read_u64(&mut input)?;
        let len = read_u64(&mut input)?;
        seen += len;
        if seen > total {
            return Err(corrupt("a table's size"));
        }
        // The same size keeps the bucket order; a table that emptied a lot since
        // it grew gets a smaller one.
        let capacity = capacity.min(4 * len + 64) as usize;
        let mut shard = HashTable::with_capacity(capacity);
        for _ in 0..len {
            let hash = read_u64(&mut input)?;
            let size = read_len(&mut input, MAX_REC_BYTES)?;
            if shard_of(hash) != index {
                return Err(corrupt("a user in the wrong table"));
            }
            let mut rec = vec![0u8; size];
            input.read_exact(&mut rec)?;
            let rec = Rec(rec.into_boxed_slice());
            shard.insert_unique(hash, Slot { hash, rec }, slot_hash);
        }
        users.shards.push(Shard::from_table(shard));
    }
    let mut end = [0u8; 16];
    input.read_exact(&mut end)?;
    if seen != total || &end != END || input.read(&mut [0u8; 1])? != 0 {
        return Err(corrupt("its end"));
    }
    users.count = seen as usize;
    Ok(Some(users))
}

fn corrupt(what: &str) -> io::Error {
    codec::corrupt(FILE, what)
}

fn write_len(out: &mut impl Write, len: usize) -> io::Result<()> {
    codec::write_len(out, len, u32::MAX, FILE)
}

fn read_len(input: &mut impl Read, max: usize) -> io::Result<usize> {
    codec::read_len(input, max, FILE)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn stamp(last_seq: i64, users: &Users) -> Stamp {
        Stamp {
            writer: "w1".to_string(),
            last_seq,
            next_id: users.next_id(),
        }
    }

    /// A user as LOOKUP shows it: id, creation time, fields.
    type Answer = Option<(i64, i64, BTreeMap<String, String>)>;

    /// Every name's user, as the index answers them.
    fn answers(users: &Users, names: usize) -> Vec<Answer> {
        (0..names)
            .map(|i| {
                users
                    .get(&format!("n{i}"))
                    .map(|u| (u.id, u.created_at, u.fields.to_map()))
            })
            .collect()
    }

    fn sample() -> Users {
        let mut u = Users::new(1);
        for i in 0..5_000i64 {
            let mut f = BTreeMap::new();
            if i % 3 == 0 {
                f.insert("email".to_string(), format!("{i}@example.com"));
                f.insert("é".to_string(), String::new());
            }
            u.add(&format!("n{i}"), &f, i * 10);
        }
        for i in (0..5_000).step_by(5) {
            u.remove(&format!("n{i}"));
        }
        u.commit();
        u
    }

    #[test]
    fn an_image_reads_back_the_same_index_and_is_used_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = path_for(&dir.path().join("db"));
        let users = sample();
        let st = stamp(77, &users);
        write(&users, &st, &path).expect("write");
        let mut read_back = read(&path, &st).expect("read").expect("the stamp matches");
        assert_eq!(read_back.len(), users.len());
        assert_eq!(answers(&read_back, 5_001), answers(&users, 5_001));
        assert!(!path.exists(), "read removes the image");
        assert!(read(&path, &st).expect("no image").is_none());
        // The index goes on as one that was never saved.
        assert_eq!(read_back.add("n0", &BTreeMap::new(), 1), Some(5_001));
        assert_eq!(read_back.add("n1", &BTreeMap::new(), 1), None);
    }

    #[test]
    fn an_image_of_another_state_is_ignored_and_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = path_for(&dir.path().join("db"));
        let users = sample();
        write(&users, &stamp(77, &users), &path).expect("write");
        let later = stamp(78, &users);
        assert!(read(&path, &later).expect("read").is_none());
        assert!(!path.exists());
        let mut other = stamp(77, &users);
        other.writer = "w2".to_string();
        write(&users, &stamp(77, &users), &path).expect("write");
        assert!(read(&path, &other).expect("read").is_none());
    }

    #[test]
    fn a_torn_or_altered_image_is_an_error_never_a_panic() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = path_for(&dir.path().join("db"));
        let users = sample();
        let st = stamp(77, &users);
        write(&users, &st, &path).expect("write");
        let bytes = fs::read(&path).expect("image");
        for cut in [0, 10, 60, bytes.len() / 3, bytes.len() - 1] {
            fs::write(&path, &bytes[..cut]).expect("tear");
            assert!(read(&path, &st).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        fs::write(&path, &longer).expect("extend");
        assert!(read(&path, &st).is_err(), "trailing bytes");
        // Every byte of the header and the first records, flipped.
        for at in 0..200.min(bytes.len()) {
            let mut b = bytes.clone();
            b[at] ^= 0x41;
            fs::write(&path, &b).expect("flip");
            let _ = read(&path, &st);
        }
    }

    #[test]
    fn growths_in_progress_keep_every_user_through_a_rollback_and_an_image() {
        let growing = |u: &Users| u.shards.iter().filter(|s| s.is_growing()).count();
        let mut u = Users::new(1);
        // Tables that move 4 buckets an insert: 256 tables of 256 buckets fill at
        // about 57,000 users, and each growth then takes 64 inserts.
        for shard in &mut u.shards {
            *shard = Shard::with_step(4);
        }
        for i in 0..56_000 {
            u.add(&format!("n{i}"), &BTreeMap::new(), i);
        }
        u.commit();
        let committed = answers(&u, 60_000);
        for i in (0..56_000).step_by(7) {
            u.remove(&format!("n{i}"));
        }
        for i in 56_000..60_000 {
            u.add(&format!("n{i}"), &BTreeMap::new(), i);
        }
        assert!(growing(&u) > 0, "no table is growing");
        u.rollback();
        assert_eq!(u.len(), 56_000);
        assert_eq!(answers(&u, 60_000), committed);
        for i in 56_000..59_000 {
            u.add(&format!("n{i}"), &BTreeMap::new(), i);
        }
        u.commit();
        assert!(growing(&u) > 0, "no table is growing");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = path_for(&dir.path().join("db"));
        let st = stamp(5, &u);
        write(&u, &st, &path).expect("write");
        let mut back = read(&path, &st).expect("read").expect("the stamp matches");
        assert_eq!(back.len(), 59_000);
        assert_eq!(answers(&back, 60_000), answers(&u, 60_000));
        for i in 58_000..60_000 {
            let name = format!("n{i}");
            assert_eq!(
                back.add(&name, &BTreeMap::new(), i),
                u.add(&name, &BTreeMap::new(), i)
            );
        }
        assert_eq!(answers(&back, 60_000), answers(&u, 60_000));
    }

    /// One step of a random history of the index.
    #[derive(Debug, Clone)]
    enum Op {
        Add(u16, u8),
        Remove(u16),
        Commit,
        Rollback,
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            6 => (0u16..400, 0u8..3).prop_map(|(n, f)| Op::Add(n, f)),
            3 => (0u16..400).prop_map(Op::Remove),
            2 => Just(Op::Commit),
            1 => Just(Op::Rollback),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// After any history of adds, removes, commits and rollbacks, the image of
        /// the committed index reads back to one that answers every name alike and
        /// gives the same next ids.
        #[test]
        fn any_committed_index_round_trips(ops in proptest::collection::vec(op(), 0..600)) {
            let mut u = Users::new(1);
            for op in ops {
                match op {
                    Op::Add(n, f) => {
                        let fields: BTreeMap<String, String> =
                            (0..f).map(|k| (format!("f{k}"), format!("v{n}\"{k}"))).collect();
                        u.add(&format!("n{n}"), &fields, i64::from(n));
                    }
                    Op::Remove(n) => {
                        u.remove(&format!("n{n}"));
                    }
                    Op::Commit => u.commit(),
                    Op::Rollback => u.rollback(),
                }
            }
            u.commit();
            let counted: usize = u.shards.iter().map(Shard::len).sum();
            proptest::prop_assert_eq!(u.len(), counted);
            let dir = tempfile::tempdir().expect("tempdir");
            let path = path_for(&dir.path().join("db"));
            let st = stamp(1, &u);
            write(&u, &st, &path).expect("write");
            let mut back = read(&path, &st).expect("read").expect("same stamp");
            proptest::prop_assert_eq!(back.len(), u.len());
            proptest::prop_assert_eq!(answers(&back, 400), answers(&u, 400));
            proptest::prop_assert_eq!(
                back.add("fresh", &BTreeMap::new(), 0),
                u.add("fresh", &BTreeMap::new(), 0)
            );
        }
    }
}
